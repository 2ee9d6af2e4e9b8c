//! `engine plugin new | inspect | test`: writing a plugin without a policy directory.
//!
//! `new` writes a project that builds as it is (Rust, Python or
//! JavaScript); `inspect` says what a `.wasm` file holds and what this
//! engine makes of it, with the `[plugin.NAME]` table to paste; `test` runs
//! it in the real sandbox on a report's findings and shows the plan the
//! engine would make of its answer, with the host's verdict on each action.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use engine_core::policy::{self, LoadBounds, PluginConfig, PluginSource, PolicyFile, PolicySet};
use engine_core::text::for_terminal as t;
use engine_run::{PluginObserver, Plugins, Request, SourceSpec};
use engine_wasm::inspect::{Inspection, inspect};
use engine_wasm::sandbox::Import;
use serde_json::json;

use crate::{Format, PluginCacheArgs, check, exit};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project that builds as it is.
    ///
    /// Rust (the engine-plugin-sdk crate), Python (componentize-py) or
    /// JavaScript (componentize-js). The project has the contract, a
    /// `decide` that deactivates expired access keys, a native test, a build
    /// script and a README with the commands and the policy snippet.
    New(NewArgs),
    /// Show what a plugin file holds and whether this engine would load it.
    ///
    /// The contract version it exports, every import and what the sandbox
    /// makes of it, its size, sha256 and structure, and a ready
    /// `[plugin.NAME]` table (with the load bounds it needs). Nothing of the
    /// plugin is compiled or run. Exit 0 if the sandbox would accept it, 1 if
    /// not.
    Inspect(InspectArgs),
    /// Run a plugin on a credential report's findings, in the real sandbox.
    ///
    /// Prints the plan the engine would make of its answer: each action and
    /// the host's verdict (accepted, or refused and why), with the call's
    /// time and peak memory. Nothing is journaled and no AWS call is made.
    Test(TestArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and `-`, starting with a
    /// letter (the name of its `[plugin.NAME]` table).
    pub name: String,

    /// The language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,

    /// Where to write it (default: ./NAME). It must not exist, or be empty.
    pub dir: Option<PathBuf>,

    /// Rust only: how the project depends on engine-plugin-sdk: a version
    /// from crates.io (default: the one for this engine's newest contract),
    /// `git=URL[#REV]` or `path=DIR` (a checkout of the engine's plugins/sdk).
    #[arg(long, value_name = "VERSION|git=URL|path=DIR")]
    pub sdk: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plugin: a WebAssembly component (.wasm).
    pub file: PathBuf,

    /// The name for the `[plugin.NAME]` snippet (default: from the file name).
    #[arg(long)]
    pub name: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin: a WebAssembly component (.wasm).
    pub file: PathBuf,

    /// The credential report to take findings from (CSV, as `aws iam
    /// get-credential-report` gives it, base64-decoded).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,

    /// Policies to run the plugin under (a policy file or directory): each
    /// of its policies runs with this plugin, with its rule, thresholds,
    /// exemptions and params; a `[plugin.NAME]` table of the plugin's name
    /// there gives its grants and limits. Default: one policy `test` of
    /// --rule with the default thresholds.
    #[arg(long, value_name = "FILE|DIR")]
    pub policy: Option<PathBuf>,

    /// The rule of the default policy (without --policy).
    #[arg(long, value_name = "RULE", default_value = "cis-1.4", value_parser = ["cis-1.3", "cis-1.4"])]
    pub rule: String,

    /// A policy parameter for the plugin, KEY=VALUE (repeatable; overrides
    /// the policy's params).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,

    /// The action kinds granted to the plugin (default: those of its
    /// `[plugin.NAME]` table, else what an external plugin gets:
    /// deactivate-access-key).
    #[arg(long, value_name = "KIND,...", value_delimiter = ',')]
    pub allow: Vec<String>,

    /// The plugin's name (default: from the file name).
    #[arg(long)]
    pub name: Option<String>,

    /// Evaluate as of this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = crate::parse_now)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    #[command(flatten)]
    pub plugin_cache: PluginCacheArgs,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

pub async fn run(cmd: &PluginCommand) -> u8 {
    match cmd {
        PluginCommand::New(args) => new(args),
        PluginCommand::Inspect(args) => run_inspect(args),
        PluginCommand::Test(args) => test(args).await,
    }
}

// ---- new ----------------------------------------------------------------

/// The contract copied into Python and JavaScript projects: the newest,
/// which their glue is written for.
const WIT: &str = include_str!("../../../plugins/sdk/wit/v0.2.0/plugin.wit");

/// A template file: its path in the project and its text.
type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../plugins/templates/rust/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/templates/rust/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../../plugins/templates/rust/.gitignore"),
    ),
];

const PYTHON: &[Template] = &[
    (
        "app.py",
        include_str!("../../../plugins/templates/python/app.py"),
    ),
    (
        "test_app.py",
        include_str!("../../../plugins/templates/python/test_app.py"),
    ),
    (
        "build.sh",
        include_str!("../../../plugins/templates/python/build.sh"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/templates/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../../plugins/templates/python/.gitignore"),
    ),
    ("wit/plugin.wit", WIT),
];

const JS: &[Template] = &[
    (
        "decide.js",
        include_str!("../../../plugins/templates/js/decide.js"),
    ),
    (
        "app.js",
        include_str!("../../../plugins/templates/js/app.js"),
    ),
    (
        "test.mjs",
        include_str!("../../../plugins/templates/js/test.mjs"),
    ),
    (
        "package.json",
        include_str!("../../../plugins/templates/js/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../plugins/templates/js/package-lock.json"),
    ),
    (
        "build.sh",
        include_str!("../../../plugins/templates/js/build.sh"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/templates/js/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../../plugins/templates/js/.gitignore"),
    ),
    ("wit/plugin.wit", WIT),
];

/// The name rules of `new` (a Rust package name, a policy's plugin name and
/// a file name at once).
fn valid_new_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// The version of engine-plugin-sdk (`plugins/sdk`) that builds plugins of
/// this engine's newest contract.
pub const SDK_VERSION: &str = "0.2.0";

/// The `engine-plugin-sdk = ...` line of a Rust project.
fn sdk_dependency(spec: Option<&str>) -> Result<String, String> {
    let version = SDK_VERSION;
    Ok(match spec {
        None => format!("engine-plugin-sdk = \"{version}\""),
        Some(s) if s.starts_with("git=") => {
            let url = &s["git=".len()..];
            match url.split_once('#') {
                Some((url, rev)) if !url.is_empty() && !rev.is_empty() => {
                    format!(
                        "engine-plugin-sdk = {{ git = {}, rev = {} }}",
                        quote(url),
                        quote(rev)
                    )
                }
                None if !url.is_empty() => {
                    format!("engine-plugin-sdk = {{ git = {} }}", quote(url))
                }
                _ => return Err(format!("--sdk {s:?}: expected git=URL or git=URL#REV")),
            }
        }
        Some(s) if s.starts_with("path=") => {
            let dir = Path::new(&s["path=".len()..]);
            let abs = std::path::absolute(dir).map_err(|e| format!("--sdk {s:?}: {e}"))?;
            if !abs.join("Cargo.toml").is_file() {
                return Err(format!(
                    "--sdk {s:?}: {} has no Cargo.toml; point it at the engine's plugins/sdk",
                    abs.display()
                ));
            }
            format!(
                "engine-plugin-sdk = {{ path = {} }}",
                quote(&abs.display().to_string())
            )
        }
        Some(v)
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".^~=<>*-+ ,".contains(c)) =>
        {
            format!("engine-plugin-sdk = {}", quote(v))
        }
        Some(s) => {
            return Err(format!(
                "--sdk {s:?}: expected a version (e.g. {version}), git=URL[#REV] or path=DIR"
            ));
        }
    })
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn new(args: &NewArgs) -> u8 {
    let name = &args.name;
    if !valid_new_name(name) {
        eprintln!(
            "error: {:?} is not a plugin name for `plugin new`: use lowercase letters, digits and `-`, starting with a letter (e.g. deactivate-old-keys)",
            t(name)
        );
        return exit::ERROR;
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if let Ok(mut entries) = std::fs::read_dir(&dir)
        && entries.next().is_some()
    {
        eprintln!(
            "error: {} exists and is not empty; choose another directory",
            t(&dir.display().to_string())
        );
        return exit::ERROR;
    }
    if dir.exists() && !dir.is_dir() {
        eprintln!(
            "error: {} exists and is not a directory",
            t(&dir.display().to_string())
        );
        return exit::ERROR;
    }
    let (files, sdk) = match args.lang {
        Lang::Rust => match sdk_dependency(args.sdk.as_deref()) {
            Ok(line) => (RUST, line),
            Err(e) => {
                eprintln!("error: {}", t(&e));
                return exit::ERROR;
            }
        },
        Lang::Python | Lang::Js if args.sdk.is_some() => {
            eprintln!(
                "error: --sdk is for Rust projects; Python and JavaScript ones carry the contract in wit/"
            );
            return exit::ERROR;
        }
        Lang::Python => (PYTHON, String::new()),
        Lang::Js => (JS, String::new()),
    };
    let vars = [
        ("{{name}}", name.as_str()),
        ("{{crate}}", &name.replace('-', "_")),
        ("{{sdk_dependency}}", sdk.as_str()),
    ];
    let written = (|| -> std::io::Result<()> {
        for (path, text) in files {
            let mut text = text.to_string();
            for (k, v) in &vars {
                text = text.replace(k, v);
            }
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, text)?;
            #[cfg(unix)]
            if path.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = written {
        eprintln!(
            "error: cannot write the project to {}: {e}",
            t(&dir.display().to_string())
        );
        return exit::ERROR;
    }
    let shown = t(&dir.display().to_string()).into_owned();
    println!("wrote {} plugin {name} to {shown}", lang_name(args.lang));
    let next = match args.lang {
        Lang::Rust => format!(
            "  cd {shown}\n  cargo test                                      # native tests\n  cargo build --release --target wasm32-wasip2    # target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Lang::Python => format!(
            "  cd {shown}\n  python3 -m unittest                             # native tests\n  ./build.sh                                      # {name}.wasm (needs componentize-py)"
        ),
        Lang::Js => format!(
            "  cd {shown}\n  node --test                                     # native tests\n  ./build.sh                                      # {name}.wasm (npm ci, componentize-js)"
        ),
    };
    println!(
        "next:\n{next}\nthen `engine plugin inspect` and `engine plugin test` on the .wasm; see README.md"
    );
    exit::CLEAN
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "a Rust",
        Lang::Python => "a Python",
        Lang::Js => "a JavaScript",
    }
}

// ---- inspect --------------------------------------------------------------

/// The plugin name a file suggests: its stem, as a policy name allows.
fn name_of(file: &Path, given: Option<&str>) -> String {
    if let Some(n) = given {
        return n.to_string();
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    if cleaned.is_empty() {
        "my-plugin".to_string()
    } else {
        cleaned
    }
}

/// The plugin at `file` inspected, and the name it goes by; an error is
/// printed and becomes the exit code.
fn read_plugin(file: &Path, given: Option<&str>) -> Result<(String, Inspection), u8> {
    let found = std::fs::read(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
        .and_then(|bytes| inspect(&bytes).map_err(|e| format!("{}: {e}", file.display())));
    match found {
        Ok(found) => Ok((name_of(file, given), found)),
        Err(e) => {
            eprintln!("error: {}", t(&e));
            Err(exit::ERROR)
        }
    }
}

fn verdict(import: &Import) -> (&'static str, String) {
    match import {
        Import::Contract => ("provided", "the plugin contract".to_string()),
        Import::Stub => (
            "stub",
            "provided as a stub that denies every call".to_string(),
        ),
        Import::OtherContract(v) => (
            "refused",
            format!(
                "another contract version ({v}); this engine supports {}",
                engine_wasm::CONTRACT_VERSIONS.join(", ")
            ),
        ),
        Import::Refused(why) => ("refused", why.clone()),
    }
}

fn run_inspect(args: &InspectArgs) -> u8 {
    let (name, found) = match read_plugin(&args.file, args.name.as_deref()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let source = args.file.display().to_string();
    let snippet = found.snippet(&name, &source);
    let s = &found.stats;
    let result = match args.format {
        Format::Json => {
            let doc = json!({
                "file": source,
                "bytes": found.bytes,
                "sha256": found.sha256,
                "contract": {
                    "version": found.contract,
                    "supported": engine_wasm::CONTRACT_VERSIONS,
                },
                "exports": found.exports,
                "imports": found.imports.iter().map(|i| {
                    let (v, why) = verdict(&i.verdict);
                    json!({"name": i.name, "verdict": v, "detail": why})
                }).collect::<Vec<_>>(),
                "structure": {
                    "modules": s.modules, "components": s.components,
                    "instances": s.core_instantiations, "functions": s.functions,
                    "largest_function_bytes": s.max_function_body_bytes,
                    "memories": s.memories, "tables": s.tables,
                },
                "bounds": {
                    "max_file_mb": found.needed.max_file_mb,
                    "max_function_kb": found.needed.max_function_kb,
                    "max_functions": found.needed.max_functions,
                },
                "loads": found.problems.is_empty(),
                "problems": found.problems,
                "snippet": snippet,
            });
            let mut out = std::io::stdout().lock();
            crate::render::write_json(&mut out, &doc)
        }
        Format::Human => {
            let mut out = crate::render::stdout();
            write_inspection(&mut out, &source, &found, &snippet).and_then(|()| out.flush())
        }
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {e}");
        return exit::ERROR;
    }
    if found.problems.is_empty() {
        exit::CLEAN
    } else {
        exit::ERROR
    }
}

fn write_inspection(
    out: &mut impl Write,
    source: &str,
    found: &Inspection,
    snippet: &str,
) -> std::io::Result<()> {
    let s = &found.stats;
    writeln!(out, "{}", t(source))?;
    writeln!(
        out,
        "  size       {} bytes ({:.1} MiB)",
        found.bytes,
        found.bytes as f64 / f64::from(1 << 20)
    )?;
    writeln!(out, "  sha256     {}", found.sha256)?;
    let contract = match &found.contract {
        Some(v) if engine_wasm::Contract::parse(v).is_some() => {
            format!("engine:plugin@{v} (supported)")
        }
        Some(v) => format!(
            "engine:plugin@{} (NOT supported: this engine supports {})",
            t(v),
            engine_wasm::CONTRACT_VERSIONS.join(", ")
        ),
        None => "none: it does not export engine:plugin/decide".to_string(),
    };
    writeln!(out, "  contract   {contract}")?;
    writeln!(out, "  imports")?;
    let width = found
        .imports
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    if found.imports.is_empty() {
        writeln!(out, "    (none)")?;
    }
    for i in &found.imports {
        let (v, why) = verdict(&i.verdict);
        writeln!(
            out,
            "    {:width$}  {v}: {}",
            t(&i.name),
            t(&why),
            width = width
        )?;
    }
    writeln!(
        out,
        "  structure  {} core modules, {} nested components, {} core instances, {} functions (largest {} bytes), {} memories, {} tables",
        s.modules,
        s.components,
        s.core_instantiations,
        s.functions,
        s.max_function_body_bytes,
        s.memories,
        s.tables
    )?;
    if found.needs_raised_bounds() {
        writeln!(
            out,
            "  bounds     over the defaults (file {} MiB, function {} KiB, {} functions): the snippet raises them",
            LoadBounds::DEFAULT.max_file_mb,
            LoadBounds::DEFAULT.max_function_kb,
            LoadBounds::DEFAULT.max_functions
        )?;
    } else {
        writeln!(out, "  bounds     within the defaults")?;
    }
    if found.problems.is_empty() {
        writeln!(
            out,
            "  verdict    this engine accepts it (compiling it is the last check: `engine plugin test` does)"
        )?;
    } else {
        writeln!(out, "  verdict    REFUSED by this engine:")?;
        for p in &found.problems {
            writeln!(out, "    - {}", t(p))?;
        }
    }
    writeln!(out)?;
    for line in snippet.lines() {
        writeln!(out, "{}", t(line))?;
    }
    Ok(())
}

// ---- test ------------------------------------------------------------------

/// What each plugin call cost, by policy.
#[derive(Default)]
struct Calls(Mutex<BTreeMap<String, (Duration, usize)>>);

impl PluginObserver for Calls {
    fn called(&self, policy: &str, _plugin: &str, elapsed: Duration, peak: usize) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(policy.to_string(), (elapsed, peak));
        }
    }
    fn failed(&self, _plugin: &str, _kind: &str) {}
}

/// The policies to test under: `--policy`'s with this plugin in place of
/// theirs, or one default policy; the plugin's config from a table of its
/// name there, else an external plugin's defaults with the bounds it needs.
fn policies(args: &TestArgs, name: &str, found: &Inspection) -> Result<PolicySet, u8> {
    let file = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let mut set = match &args.policy {
        Some(p) => {
            let loaded = if p.is_dir() {
                policy::load_dir(p)
            } else {
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        eprintln!("error: cannot read {}: {e}", t(&p.display().to_string()));
                        exit::ERROR
                    })
                    .map(|text| {
                        policy::validate(vec![PolicyFile {
                            path: p.clone(),
                            text,
                        }])
                    })?
            };
            loaded.map_err(|errors| {
                check::print_policy_errors(&errors);
                exit::POLICY_ERROR
            })?
        }
        None => policy::validate(vec![PolicyFile {
            path: PathBuf::from("plugin-test.toml"),
            text: format!("[policy.test]\nrule = \"{}\"\n", args.rule),
        }])
        .map_err(|errors| {
            check::print_policy_errors(&errors);
            exit::POLICY_ERROR
        })?,
    };
    if set.policies.is_empty() {
        eprintln!("error: the policy file has no [policy.NAME] to run the plugin under");
        return Err(exit::ERROR);
    }
    // Only a table that loads a file speaks for this plugin: a builtin of
    // the same name (what a policy without `action` uses) grants what the
    // builtin is granted, not what this file would be.
    let declared = set
        .plugins
        .get(name)
        .filter(|c| matches!(c.source, PluginSource::File { .. }))
        .cloned();
    let mut cfg = declared.unwrap_or(PluginConfig {
        name: name.to_string(),
        source: PluginSource::Builtin,
        timeout_ms: policy::DEFAULT_TIMEOUT_MS,
        memory_mb: policy::DEFAULT_MEMORY_MB,
        bounds: found.needed,
        allow: policy::EXTERNAL_DEFAULT_ALLOW.to_vec(),
        origin: None,
    });
    cfg.source = PluginSource::File {
        path: file,
        sha256: found.sha256.clone(),
    };
    if !args.allow.is_empty() {
        let mut kinds = Vec::new();
        for k in &args.allow {
            match engine_core::ActionKind::parse(k.trim()) {
                Some(kind) => kinds.push(kind),
                None => {
                    eprintln!(
                        "error: --allow {:?}: expected delete-access-key, deactivate-access-key, delete-login-profile or none",
                        t(k)
                    );
                    return Err(exit::ERROR);
                }
            }
        }
        if !kinds.contains(&engine_core::ActionKind::None) {
            kinds.push(engine_core::ActionKind::None);
        }
        cfg.allow = kinds;
    }
    for p in &mut set.policies {
        p.action = name.to_string();
        for (k, v) in &args.params {
            p.params.insert(k.clone(), v.clone());
        }
    }
    set.plugins = BTreeMap::from([(name.to_string(), cfg)]);
    set.aws_config = None;
    set.accounts = None;
    set.security_hub = None;
    Ok(set)
}

/// The reasons the plugin gave with the actions the host accepted (the
/// plan shows the refused ones with the host's reason).
fn write_answer(
    out: &mut impl Write,
    plugin: &str,
    doc: &engine_run::Document,
) -> std::io::Result<()> {
    if doc.actions.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Reasons {plugin} gave:")?;
    for a in &doc.actions {
        writeln!(
            out,
            "  {}  {}  {}  {}: {}",
            t(&a.policy),
            t(&a.user),
            a.credential.as_str(),
            a.action.as_str(),
            t(a.reason.as_deref().unwrap_or("(none given)"))
        )?;
    }
    out.flush()
}

async fn test(args: &TestArgs) -> u8 {
    let (name, found) = match read_plugin(&args.file, args.name.as_deref()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let set = match policies(args, &name, &found) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cfg = &set.plugins[&name];
    eprintln!(
        "plugin {name}: timeout_ms = {}, memory_mb = {}, max_file_mb = {}, max_function_kb = {}, allow = [{}]",
        cfg.timeout_ms,
        cfg.memory_mb,
        cfg.bounds.max_file_mb,
        cfg.bounds.max_function_kb,
        cfg.allow
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let load_start = std::time::Instant::now();
    let plugins = match Plugins::load(&set, args.plugin_cache.cache().as_ref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let load_time = load_start.elapsed();
    let calls = Calls::default();
    let dir = args
        .policy
        .clone()
        .unwrap_or_else(|| PathBuf::from("(plugin test)"));
    let prepared = engine_run::prepare(Request {
        set: &set,
        plugins: &plugins,
        dir: &dir,
        source: &SourceSpec::File(args.report.clone()),
        now: args.now.unwrap_or_else(chrono::Utc::now),
        what_if: false,
        observer: Some(&calls),
    })
    .await;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let calls = calls.0.into_inner().unwrap_or_default();
    let printed =
        check::print(args.format, "plugin test", &prepared.doc, &prepared.plan).and_then(|()| {
            match args.format {
                Format::Human => write_answer(&mut crate::render::stdout(), &name, &prepared.doc),
                Format::Json => Ok(()),
            }
        });
    if let Err(e) = printed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write output: {e}");
        }
        return exit::ERROR;
    }
    let loaded = plugins
        .errors()
        .next()
        .map(|e| format!("failed to load: {e}"))
        .unwrap_or_else(|| format!("loaded in {} ms", load_time.as_millis()));
    eprintln!("plugin {name}: {}", t(&loaded));
    for p in &set.policies {
        match calls.get(&p.name) {
            Some((elapsed, peak)) => eprintln!(
                "policy {}: decide took {:.1} ms, peak memory {:.1} MiB (memory_mb = {}, timeout_ms = {})",
                t(&p.name),
                elapsed.as_secs_f64() * 1000.0,
                *peak as f64 / f64::from(1 << 20),
                cfg.memory_mb,
                cfg.timeout_ms
            ),
            None => eprintln!(
                "policy {}: the plugin was not called (no findings, or it failed: see the plan)",
                t(&p.name)
            ),
        }
    }
    check::exit_code(&prepared.doc)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdk_version_is_the_sdk_crates() {
        let manifest = include_str!("../../../plugins/sdk/Cargo.toml");
        assert!(
            manifest.contains(&format!("\nversion = \"{}\"\n", super::SDK_VERSION)),
            "plugins/sdk/Cargo.toml is not version {}",
            super::SDK_VERSION
        );
    }
}
