//! What a plugin file holds, before any policy loads it (`engine plugin inspect`).
//!
//! Reads the component's structure with `wasmparser` (nothing is compiled or
//! run): the contract version it exports, every import and what the sandbox
//! makes of it, its size and sha256, the counts the load bounds are about,
//! and the `[plugin.NAME]` bounds it needs. The verdict is the one
//! [`Host::load`](crate::Host::load) would reach on imports, contract and
//! bounds; only the compiler can tell more (invalid code, unneeded wasm
//! features).

use engine_core::policy::LoadBounds;
use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

use crate::sandbox::{self, Import};
use crate::scan::{self, Stats};
use crate::{CONTRACT_VERSION, CONTRACT_VERSIONS, DECIDE_INTERFACE, limits};

/// One import and the sandbox's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInfo {
    pub name: String,
    pub verdict: Import,
}

/// Everything `inspect` found.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub bytes: u64,
    pub sha256: String,
    /// The version of its `engine:plugin/decide` export, if it has one.
    pub contract: Option<String>,
    /// The component's own exports, by name.
    pub exports: Vec<String>,
    pub imports: Vec<ImportInfo>,
    pub stats: Stats,
    /// The smallest bounds (rounded up, with a margin) that admit it.
    pub needed: LoadBounds,
    /// Why the sandbox would refuse it (empty: it would load, if it compiles).
    pub problems: Vec<String>,
}

impl Inspection {
    /// Whether `needed` is over the defaults (the snippet must say so).
    pub fn needs_raised_bounds(&self) -> bool {
        self.needed != LoadBounds::DEFAULT
    }

    /// A `[plugin.NAME]` table that loads this file from `source`.
    pub fn snippet(&self, name: &str, source: &str) -> String {
        let mut out = format!(
            "[plugin.{name}]\nsource = {}\nsha256 = \"{}\"\n",
            toml_string(source),
            self.sha256
        );
        let d = LoadBounds::DEFAULT;
        let n = self.needed;
        if n.max_file_mb != d.max_file_mb {
            out.push_str(&format!(
                "max_file_mb = {}        # the file is {:.1} MiB (default {})\n",
                n.max_file_mb,
                self.bytes as f64 / f64::from(1 << 20),
                d.max_file_mb
            ));
        }
        if n.max_function_kb != d.max_function_kb {
            out.push_str(&format!(
                "max_function_kb = {}   # its largest function is {} KiB (default {})\n",
                n.max_function_kb,
                self.stats.max_function_body_bytes.div_ceil(1024),
                d.max_function_kb
            ));
        }
        if n.max_functions != d.max_functions {
            out.push_str(&format!(
                "max_functions = {}  # it has {} functions (default {})\n",
                n.max_functions, self.stats.functions, d.max_functions
            ));
        }
        out.push_str(
            "allow = [\"deactivate-access-key\"]   # the kinds it may ask for (delete-access-key, delete-login-profile: grant them explicitly)\n",
        );
        out
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Round `actual` up with a quarter's margin to a whole `unit`, at least the
/// default and at most the ceiling.
fn needed(actual: u64, unit: u64, default: u64, ceiling: u64) -> u64 {
    let with_margin = actual.saturating_add(actual / 4);
    with_margin
        .div_ceil(unit)
        .clamp(default, ceiling.max(default))
}

/// Inspect a plugin's bytes. `Err` when they are not a component at all.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file".to_string());
    }
    let unbounded = scan::Caps {
        file_bytes: u64::MAX,
        function_body_bytes: u64::MAX,
        functions: u64::MAX,
    };
    let stats = match scan::scan(bytes, &unbounded) {
        Ok(s) => s,
        Err(scan::ScanError::Malformed(e)) => return Err(format!("not a valid component: {e}")),
        // Only the fixed caps can still be exceeded: count on to report them.
        Err(scan::ScanError::Exceeded(_)) => count_all(bytes),
    };
    let (imports, exports) = top_level_names(bytes)?;
    let contract = exports
        .iter()
        .map(|n| sandbox::split_version(n))
        .find(|(n, _)| *n == DECIDE_INTERFACE)
        .map(|(_, v)| v.unwrap_or("(unversioned)").to_string());
    let imports: Vec<ImportInfo> = imports
        .into_iter()
        .map(|name| ImportInfo {
            verdict: sandbox::judge_import(&name),
            name,
        })
        .collect();
    let d = LoadBounds::DEFAULT;
    let c = LoadBounds::CEILING;
    let need = LoadBounds {
        max_file_mb: needed(stats.bytes, 1 << 20, d.max_file_mb, c.max_file_mb),
        max_function_kb: needed(
            stats.max_function_body_bytes,
            1 << 10,
            d.max_function_kb,
            c.max_function_kb,
        ),
        max_functions: needed(
            stats.functions,
            1000,
            d.max_functions / 1000,
            c.max_functions / 1000,
        ) * 1000,
    };
    let mut problems = Vec::new();
    match &contract {
        Some(v) if crate::Contract::parse(v).is_some() => {}
        Some(v) => problems.push(format!(
            "it exports {DECIDE_INTERFACE}@{v}; this engine supports @{}",
            CONTRACT_VERSIONS.join(", @")
        )),
        None => problems.push(format!(
            "it does not export {DECIDE_INTERFACE}@{CONTRACT_VERSION}: it is not an engine plugin"
        )),
    }
    for i in &imports {
        match &i.verdict {
            Import::Refused(why) => problems.push(format!("it imports {}: {why}", i.name)),
            Import::OtherContract(v) => problems.push(format!(
                "it imports {} (contract {v}); this engine supports {}",
                i.name,
                CONTRACT_VERSIONS.join(", ")
            )),
            Import::Contract | Import::Stub => {}
        }
    }
    for (what, actual, cap) in [
        ("core modules", stats.modules, limits::MAX_MODULES),
        (
            "nested components",
            stats.components,
            limits::MAX_NESTED_COMPONENTS,
        ),
        (
            "core instances",
            stats.core_instantiations,
            limits::MAX_INSTANCES,
        ),
        ("memories", stats.memories, limits::MAX_MEMORIES),
        ("tables", stats.tables, limits::MAX_TABLES),
        (
            "locals in one function",
            stats.max_function_locals,
            limits::MAX_FUNCTION_LOCALS,
        ),
    ] {
        if actual > cap as u64 {
            problems.push(format!("it has {actual} {what}; the sandbox allows {cap}"));
        }
    }
    let over_ceiling = |actual: u64, unit: u64, ceiling: u64| actual > ceiling.saturating_mul(unit);
    if over_ceiling(stats.bytes, 1 << 20, c.max_file_mb)
        || over_ceiling(stats.max_function_body_bytes, 1 << 10, c.max_function_kb)
        || stats.functions > c.max_functions
    {
        problems.push(format!(
            "it is larger than any policy may allow (max_file_mb {}, max_function_kb {}, max_functions {})",
            c.max_file_mb, c.max_function_kb, c.max_functions
        ));
    }
    Ok(Inspection {
        bytes: stats.bytes,
        sha256: Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        contract,
        exports,
        imports,
        stats,
        needed: need,
        problems,
    })
}

/// The stats of a component over the fixed caps (scan stops at the first).
fn count_all(bytes: &[u8]) -> Stats {
    let mut s = Stats {
        bytes: bytes.len() as u64,
        ..Stats::default()
    };
    for payload in Parser::new(0).parse_all(bytes).flatten() {
        match payload {
            Payload::ModuleSection { .. } => s.modules += 1,
            Payload::ComponentSection { .. } => s.components += 1,
            Payload::InstanceSection(reader) => {
                s.core_instantiations += reader
                    .into_iter()
                    .flatten()
                    .filter(|i| matches!(i, wasmparser::Instance::Instantiate { .. }))
                    .count() as u64;
            }
            Payload::MemorySection(reader) => s.memories += u64::from(reader.count()),
            Payload::TableSection(reader) => s.tables += u64::from(reader.count()),
            Payload::CodeSectionStart { count, .. } => s.functions += u64::from(count),
            Payload::CodeSectionEntry(body) => {
                s.max_function_body_bytes =
                    s.max_function_body_bytes.max(body.range().len() as u64);
            }
            _ => {}
        }
    }
    s
}

type Names = (Vec<String>, Vec<String>);

/// The import and export names of the outermost component.
fn top_level_names(bytes: &[u8]) -> Result<Names, String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid component: {e}"))?;
        match payload {
            Payload::Version { encoding, .. }
                if depth == 0 && encoding != wasmparser::Encoding::Component =>
            {
                return Err(
                    "a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                        .to_string(),
                );
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| format!("not a valid component: {e}"))?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}
