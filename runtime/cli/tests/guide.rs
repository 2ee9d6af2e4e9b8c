//! Every code block of the plugin guide (`plugins/README.md`) is exercised.
//!
//! Each block is preceded by a `<!-- guide: KIND [ARG] -->` line saying how:
//!
//! - `run LANG`: a walkthrough, run as it is by bash in a scratch directory
//!   (with `engine` on the PATH and a credential report next to it); Python
//!   and JavaScript need their toolchains (`scripts/plugin-toolchains`),
//!   and without them their test is reported as *ignored*, never passed;
//! - `file PATH`: an excerpt, found verbatim in that file of the repository
//!   (templates with their placeholders filled in for `my-plugin`);
//! - `wit`: an excerpt of the contract;
//! - `policy`: a policy file, loaded by the engine's own validation.
//!
//! A block without a marker fails `every_block_is_checked`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fenced block of the guide and its marker.
#[derive(Debug)]
struct Block {
    line: usize,
    marker: Option<String>,
    text: String,
}

fn blocks() -> Vec<Block> {
    let guide = std::fs::read_to_string(root().join("plugins/README.md")).expect("guide");
    let mut out = Vec::new();
    let mut lines = guide.lines().enumerate().peekable();
    let mut last_marker: Option<String> = None;
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if let Some(m) = t
            .strip_prefix("<!-- guide:")
            .and_then(|m| m.strip_suffix("-->"))
        {
            last_marker = Some(m.trim().to_string());
            continue;
        }
        if t.starts_with("```") {
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            out.push(Block {
                line: n + 1,
                marker: last_marker.take(),
                text,
            });
            continue;
        }
        if !t.is_empty() {
            last_marker = None;
        }
    }
    out
}

/// A template's text as `engine plugin new my-plugin` writes it.
fn filled(text: &str) -> String {
    text.replace("{{name}}", "my-plugin")
        .replace("{{crate}}", "my_plugin")
}

#[test]
fn every_block_is_checked() {
    let blocks = blocks();
    assert!(blocks.len() >= 10, "{} blocks", blocks.len());
    let wit =
        std::fs::read_to_string(root().join("plugins/sdk/wit/v0.2.0/plugin.wit")).expect("wit");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for b in &blocks {
        // The directory tree at the top is a picture, not code.
        if b.text.starts_with("plugins/\n") {
            let missing: Vec<&str> = b
                .text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|p| p.contains('/') && !p.contains('{'))
                .filter(|p| {
                    !root().join(p.trim_end_matches('/')).exists()
                        && !root()
                            .join("plugins")
                            .join(p.trim_end_matches('/'))
                            .exists()
                })
                .collect();
            assert!(
                missing.is_empty(),
                "the tree names missing paths: {missing:?}"
            );
            continue;
        }
        let marker = b.marker.as_deref().unwrap_or_else(|| {
            panic!(
                "the block at plugins/README.md:{} has no <!-- guide: ... --> marker",
                b.line
            )
        });
        let (kind, arg) = marker.split_once(' ').unwrap_or((marker, ""));
        *kinds.entry(kind.to_string()).or_default() += 1;
        match kind {
            "run" => assert!(
                ["rust", "python", "js"].contains(&arg),
                "line {}: run {arg}",
                b.line
            ),
            "file" => {
                let text = std::fs::read_to_string(root().join(arg))
                    .unwrap_or_else(|e| panic!("line {}: {arg}: {e}", b.line));
                assert!(
                    filled(&text).contains(&b.text),
                    "line {}: this excerpt is not in {arg}:\n{}",
                    b.line,
                    b.text
                );
            }
            "wit" => assert!(
                wit.contains(b.text.trim()),
                "line {}: not in the contract:\n{}",
                b.line,
                b.text
            ),
            "policy" => {
                let text = b.text.replace("SHA256", &"ab".repeat(32));
                if let Err(e) =
                    engine_core::policy::validate(vec![engine_core::policy::PolicyFile {
                        path: PathBuf::from("guide.toml"),
                        text,
                    }])
                {
                    panic!(
                        "line {}: the policy does not load:\n{}",
                        b.line,
                        e.render_plain()
                    );
                }
            }
            other => panic!("line {}: unknown marker kind {other:?}", b.line),
        }
    }
    // The three walkthroughs are there (each is run by its own test).
    assert_eq!(kinds.get("run"), Some(&3), "{kinds:?}");
}

/// One walkthrough at a time: each builds a plugin and has the engine
/// compile it, which is most of a core for seconds.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run the `run LANG` block with bash in a fresh scratch directory; the
/// project it makes is `<scratch>/my-plugin`.
fn walkthrough(lang: &str, env: &[(&str, String)], setup: impl FnOnce(&Path)) -> (PathBuf, String) {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let block = blocks()
        .into_iter()
        .find(|b| b.marker.as_deref() == Some(&format!("run {lang}")))
        .unwrap_or_else(|| panic!("no `run {lang}` block"));
    let dir = std::env::temp_dir().join(format!("engine-guide-{lang}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        root().join("examples/credential-report.csv"),
        dir.join("credential-report.csv"),
    )
    .expect("report");
    setup(&dir);
    let bin = Path::new(env!("CARGO_BIN_EXE_engine"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        // `engine plugin test` exits 2 when there are findings (as `check`).
        .arg(format!(
            "set -euxo pipefail\nengine() {{ command engine \"$@\" || [ $? -eq 2 ]; }}\n{}",
            block.text
        ))
        .current_dir(&dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("ENGINE_PLUGIN_CACHE", dir.join("cache"))
        .env_remove("CARGO_TARGET_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the {lang} walkthrough of plugins/README.md:{} failed ({:?}):\n{stdout}\n{stderr}",
        block.line,
        out.status.code()
    );
    (dir, stdout)
}

/// What every walkthrough ends with: `engine plugin test` on the example
/// report (as of now: the ages move, the shape does not), where every
/// finding but the root's is an access key the plugin deactivates and the
/// host accepts.
fn assert_tested_in_the_sandbox(stdout: &str) {
    assert!(stdout.contains("engine plugin test: 1 policy"), "{stdout}");
    assert!(
        stdout.contains("verdict    this engine accepts it"),
        "{stdout}"
    );
    let plan = stdout
        .lines()
        .find(|l| l.starts_with("Plan: "))
        .unwrap_or_else(|| panic!("no plan line:\n{stdout}"));
    let number = |after: &str| -> usize {
        let rest = plan.split(after).next().unwrap_or("");
        rest.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (deactivate, findings) = (number(" to deactivate"), number(" findings in"));
    assert!(
        plan.starts_with("Plan: 0 to delete, ")
            && plan.contains(", 1 protected, 0 refused.")
            && deactivate >= 5
            && deactivate + 1 == findings,
        "{plan}"
    );
}

#[test]
fn the_rust_walkthrough_runs() {
    // The project depends on engine-plugin-sdk by version, as a published
    // crate is used. No registry this test reaches holds it: a cargo config
    // above the project (not in it) patches it to this checkout's SDK.
    let sdk = std::fs::canonicalize(root().join("plugins/sdk")).expect("sdk");
    let (dir, stdout) = walkthrough("rust", &[], |dir| {
        std::fs::create_dir_all(dir.join(".cargo")).expect("mkdir");
        std::fs::write(
            dir.join(".cargo/config.toml"),
            format!(
                "[patch.crates-io]\nengine-plugin-sdk = {{ path = {:?} }}\n",
                sdk.display().to_string()
            ),
        )
        .expect("cargo config");
    });
    assert_tested_in_the_sandbox(&stdout);
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    let manifest = std::fs::read_to_string(dir.join("my-plugin/Cargo.toml")).expect("Cargo.toml");
    let sdk_manifest = std::fs::read_to_string(root().join("plugins/sdk/Cargo.toml")).expect("sdk");
    let version = sdk_manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the SDK's version");
    assert!(
        manifest.contains(&format!("engine-plugin-sdk = \"{version}\"")),
        "{manifest}"
    );
    assert!(!manifest.contains("path ="), "{manifest}");
    assert!(
        stdout.contains(" days old: expired; reactivate it if you still need it"),
        "{stdout}"
    );
    // The project is written as `cargo fmt` would write it (rustfmt of this
    // checkout's toolchain, run from the checkout).
    let fmt = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .arg(dir.join("my-plugin/src/lib.rs"))
        .current_dir(root())
        .output()
        .expect("run rustfmt");
    assert!(
        fmt.status.success(),
        "the generated lib.rs is not rustfmt-clean:\n{}{}",
        String::from_utf8_lossy(&fmt.stdout),
        String::from_utf8_lossy(&fmt.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn toolchain(var: Option<&'static str>) -> String {
    var.map(str::to_string).unwrap_or_default()
}

#[cfg_attr(
    not(toolchain_python),
    ignore = "componentize-py is not installed (scripts/plugin-toolchains could not install it): the Python walkthrough was NOT run"
)]
#[test]
fn the_python_walkthrough_runs() {
    let bin = toolchain(option_env!("ENGINE_TOOLCHAIN_PYTHON"));
    let (dir, stdout) = walkthrough("python", &[("ENGINE_PY_TOOLCHAIN", bin)], |_| {});
    assert_tested_in_the_sandbox(&stdout);
    assert!(stdout.contains("max_file_mb = 2"), "{stdout}");
    assert!(dir.join("my-plugin/my-plugin.wasm").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg_attr(
    not(toolchain_js),
    ignore = "componentize-js is not installed (scripts/plugin-toolchains could not install it): the JavaScript walkthrough was NOT run"
)]
#[test]
fn the_js_walkthrough_runs() {
    let bin = toolchain(option_env!("ENGINE_TOOLCHAIN_JS"));
    let (dir, stdout) = walkthrough("js", &[("ENGINE_JS_TOOLCHAIN", bin)], |_| {});
    assert_tested_in_the_sandbox(&stdout);
    assert!(stdout.contains("max_file_mb = 1"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
