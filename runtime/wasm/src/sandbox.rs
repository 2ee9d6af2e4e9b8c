//! What a plugin can reach: the contract's `log` and a deny-all WASI stub.
//!
//! A Rust `wasm32-wasip2` component always imports a handful of WASI
//! interfaces, even when it never uses them, because the standard library
//! links them: `wasi:io/{poll,error,streams}`, `wasi:cli/{environment,exit,
//! stdin,stdout,stderr}` and `wasi:cli/terminal-*` (all `@0.2.x`). Pulling in
//! `wasmtime-wasi` for these would add an async runtime and a real
//! filesystem/socket implementation to the host, so this module defines them
//! itself, deny-all:
//!
//! - environment and arguments are empty, there is no working directory;
//! - stdin is closed; there are no terminals;
//! - stdout/stderr are captured (at most [`MAX_STDERR_BYTES`], looked at in
//!   place in the plugin's memory: only those bytes are copied), so a
//!   panicking plugin's message ends up in its `Trap` error;
//! - `exit` and every other function of those interfaces traps, naming the call.
//!
//! Every other import (filesystem, sockets, clocks, random, http...) is refused
//! at load with an error naming it, before any of the plugin's code runs.

use std::collections::BTreeSet;

use wasmtime::component::types::{Component as ComponentType, ComponentItem};
use wasmtime::component::{Linker, Resource, ResourceType, Val, WasmList, WasmStr};
use wasmtime::{Engine, ResourceLimiter, StoreContextMut};

use crate::limits::{self, MAX_STDERR_BYTES, MAX_TABLE_ELEMENTS, TABLE_ELEMENT_BYTES};
use crate::{
    CONTRACT_VERSION, CONTRACT_VERSIONS, Contract, DECIDE_INTERFACE, LogLevel, LogLine,
    PluginError, bindings, bindings_v0_1,
};

/// The WASI interfaces (without version) a plugin may import; deny-all stubs.
pub const STD_WASI_INTERFACES: &[&str] = &[
    "wasi:io/poll",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// The memory limiter of one store: one budget for all its memories and
/// tables together, which remembers that it said no.
///
/// wasmtime asks before creating a memory or table (from size 0) and before
/// every growth, so the running total is the size of everything the plugin's
/// instances hold. A growth granted here that wasmtime then fails still
/// counts (never less than the truth).
pub(crate) struct Limits {
    pub(crate) max_bytes: usize,
    /// A memory or table growth past `max_bytes` was refused.
    pub(crate) hit: bool,
    /// Bytes of all memories and tables now.
    pub(crate) total: usize,
    /// Largest `total` reached, in bytes.
    pub(crate) peak: usize,
}

impl Limits {
    pub(crate) fn new(max_bytes: usize) -> Limits {
        Limits {
            max_bytes,
            hit: false,
            total: 0,
            peak: 0,
        }
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.total.saturating_add(desired.saturating_sub(current));
        if total > self.max_bytes {
            self.hit = true;
            return false;
        }
        self.total = total;
        self.peak = self.peak.max(total);
        true
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Ok(false);
        }
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        limits::MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        limits::MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        limits::MAX_TABLES
    }
}

/// The data of one store: one plugin call.
pub(crate) struct State {
    pub(crate) limits: Limits,
    plugin: String,
    invocation_id: String,
    policy: String,
    logs: Vec<LogLine>,
    dropped_logs: usize,
    /// Bytes of log lines the host may still look at in this call.
    log_budget: usize,
    console: Vec<u8>,
    /// The first denied WASI call, for the trap message.
    pub(crate) denied: Option<String>,
}

impl State {
    pub(crate) fn new(plugin: &str, invocation_id: &str, policy: &str, max_bytes: usize) -> State {
        State {
            limits: Limits::new(max_bytes),
            plugin: plugin.to_string(),
            invocation_id: invocation_id.to_string(),
            policy: policy.to_string(),
            logs: Vec::new(),
            dropped_logs: 0,
            log_budget: max_bytes,
            console: Vec::new(),
            denied: None,
        }
    }

    /// What the plugin wrote to stdout/stderr (a panic message), lossy UTF-8.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.console).trim().to_string()
    }

    /// The kept log lines, plus one saying how many were dropped.
    pub(crate) fn finish_logs(mut self) -> Vec<LogLine> {
        if self.dropped_logs > 0 {
            self.logs.push(LogLine {
                level: LogLevel::Warn,
                message: format!(
                    "{} more log line(s) dropped: a plugin may log at most {} lines, of at most memory_mb = {} MiB together, per call",
                    self.dropped_logs,
                    limits::MAX_LOG_LINES,
                    self.limits.max_bytes >> 20
                ),
            });
        }
        self.logs
    }
}

/// Define `engine:plugin/host.log`, taking the message in place.
///
/// The message is lifted as a [`WasmStr`] (a bounds-checked handle into the
/// plugin's memory): a line past [`limits::MAX_LOG_LINES`] is not looked at,
/// and of the others only the first [`limits::MAX_LOG_LINE_BYTES`] bytes are
/// copied, however long the string the plugin passes. The lines of one call
/// may add up to `memory_mb` bytes: past that (one line may cross it) the
/// rest are dropped unread, so a plugin cannot make the host scan more than
/// about twice its memory per call.
/// Define the contract's `types` and `host` interfaces, of the plugin's
/// contract version, in the linker.
pub(crate) fn link_host(
    plugin: &str,
    linker: &mut Linker<State>,
    contract: Contract,
) -> Result<(), PluginError> {
    let err = |e: wasmtime::Error| PluginError::Load {
        plugin: plugin.to_string(),
        reason: format!("cannot link the host interface: {e}"),
    };
    let version = contract.as_str();
    linker
        .instance(&format!("engine:plugin/types@{version}"))
        .map_err(err)?;
    let mut li = linker
        .instance(&format!("engine:plugin/host@{version}"))
        .map_err(err)?;
    match contract {
        Contract::V0_1 => link_log::<bindings_v0_1::engine::plugin::host::Level>(&mut li),
        Contract::V0_2 => link_log::<bindings::engine::plugin::host::Level>(&mut li),
    }
    .map_err(err)
}

/// The host's `log`, whose `level` enum is its contract version's type.
fn link_log<L>(li: &mut wasmtime::component::LinkerInstance<'_, State>) -> wasmtime::Result<()>
where
    L: wasmtime::component::ComponentType
        + wasmtime::component::Lift
        + Into<LogLevel>
        + Send
        + Sync
        + 'static,
{
    li.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, State>, (level, message): (L, WasmStr)| {
            let state = store.data();
            if state.logs.len() >= limits::MAX_LOG_LINES || state.log_budget == 0 {
                store.data_mut().dropped_logs += 1;
                return Ok(());
            }
            // Looked at in place (UTF-8 is checked, not copied); only the cut is copied.
            let (message, len) = match message.to_str(&store) {
                Ok(text) => (
                    limits::truncate_str(&text, limits::MAX_LOG_LINE_BYTES),
                    text.len(),
                ),
                Err(e) => (format!("(a log line that is not valid UTF-8: {e})"), 0),
            };
            let state = store.data_mut();
            state.log_budget = state.log_budget.saturating_sub(len);
            state.log(level.into(), message);
            Ok(())
        },
    )
}

macro_rules! levels {
    ($level:path) => {
        impl From<$level> for LogLevel {
            fn from(level: $level) -> LogLevel {
                use $level as L;
                match level {
                    L::Trace => LogLevel::Trace,
                    L::Debug => LogLevel::Debug,
                    L::Info => LogLevel::Info,
                    L::Warn => LogLevel::Warn,
                    L::Error => LogLevel::Error,
                }
            }
        }
    };
}
levels!(bindings::engine::plugin::host::Level);
levels!(bindings_v0_1::engine::plugin::host::Level);

impl State {
    fn log(&mut self, level: LogLevel, message: String) {
        let (plugin, invocation, policy) = (&self.plugin, &self.invocation_id, &self.policy);
        // Whatever the subscriber, no control or bidi character of the plugin reaches a terminal.
        let shown = engine_core::text::for_terminal(&message);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, invocation, policy, "{shown}"),
            LogLevel::Debug => tracing::debug!(plugin, invocation, policy, "{shown}"),
            LogLevel::Info => tracing::info!(plugin, invocation, policy, "{shown}"),
            LogLevel::Warn => tracing::warn!(plugin, invocation, policy, "{shown}"),
            LogLevel::Error => tracing::error!(plugin, invocation, policy, "{shown}"),
        }
        self.logs.push(LogLine { level, message });
    }
}

/// Split `ns:pkg/iface@version` into its name and version.
pub(crate) fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

/// The contract version a plugin was built against, from its exports: one
/// this host supports, or a typed refusal.
pub(crate) fn check_exports(
    plugin: &str,
    engine: &Engine,
    ty: &ComponentType,
) -> Result<Contract, PluginError> {
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let ours = exports
        .iter()
        .map(|n| split_version(n))
        .find(|(n, _)| *n == DECIDE_INTERFACE)
        .or_else(|| {
            exports
                .iter()
                .map(|n| split_version(n))
                .find(|(n, _)| n.starts_with("engine:plugin/"))
        });
    match ours.map(|(_, v)| (v, v.and_then(Contract::parse))) {
        Some((_, Some(contract))) => Ok(contract),
        Some((found, None)) => Err(PluginError::Version {
            plugin: plugin.to_string(),
            found: found.unwrap_or("(unversioned)").to_string(),
            supported: CONTRACT_VERSIONS.join(", "),
        }),
        None => Err(PluginError::Load {
            plugin: plugin.to_string(),
            reason: format!(
                "it does not export {DECIDE_INTERFACE}@{CONTRACT_VERSION} (its exports: [{}]); is it an engine plugin built with engine-plugin-sdk and engine_plugin_sdk::export_plugin!?",
                exports.join(", ")
            ),
        }),
    }
}

fn why_denied(iface: &str) -> &'static str {
    match iface.split('/').next().unwrap_or("") {
        "wasi:filesystem" => "plugins get no filesystem (remove std::fs and file I/O)",
        "wasi:sockets" => "plugins get no network (remove std::net and network clients)",
        "wasi:clocks" => {
            "plugins get no clock (use the context's `now` instead of SystemTime/Instant)"
        }
        "wasi:random" => "plugins get no randomness (a decision must be deterministic)",
        "wasi:http" => "plugins get no network",
        _ => "the sandbox provides only engine:plugin/host and the WASI stubs Rust's std needs",
    }
}

/// What the sandbox makes of one import of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// `engine:plugin/host` or `engine:plugin/types` of a supported contract.
    Contract,
    /// `engine:plugin/...` of another contract version (the version found).
    OtherContract(String),
    /// A WASI 0.2.x interface Rust's std imports: a stub that denies every call.
    Stub,
    /// Anything else: the plugin is refused at load, for this reason.
    Refused(String),
}

/// How the sandbox treats an import named `name` (`ns:pkg/iface@version`).
pub fn judge_import(name: &str) -> Import {
    let (iface, version) = split_version(name);
    if iface.starts_with("engine:plugin/") {
        return match version {
            Some(v) if Contract::parse(v).is_some() => Import::Contract,
            other => Import::OtherContract(other.unwrap_or("(unversioned)").to_string()),
        };
    }
    match (STD_WASI_INTERFACES.contains(&iface), version) {
        (true, Some(v)) if v.starts_with("0.2.") => Import::Stub,
        (true, _) => Import::Refused(
            "only WASI 0.2.x is supported; build for the wasm32-wasip2 target".to_string(),
        ),
        (false, _) => Import::Refused(why_denied(iface).to_string()),
    }
}

/// Refuse forbidden imports; define the deny-all WASI stubs the plugin imports.
pub(crate) fn link_imports(
    plugin: &str,
    engine: &Engine,
    ty: &ComponentType,
    linker: &mut Linker<State>,
) -> Result<(), PluginError> {
    let mut refused = Vec::new();
    let mut stubs = Vec::new();
    for (name, item) in ty.imports(engine) {
        match judge_import(name) {
            Import::Contract => {}
            Import::OtherContract(found) => {
                return Err(PluginError::Version {
                    plugin: plugin.to_string(),
                    found,
                    supported: CONTRACT_VERSIONS.join(", "),
                });
            }
            Import::Stub => stubs.push((name.to_string(), item)),
            Import::Refused(why) => refused.push(format!("{name}: {why}")),
        }
    }
    if !refused.is_empty() {
        return Err(PluginError::Load {
            plugin: plugin.to_string(),
            reason: format!(
                "it imports what the sandbox does not provide: {}",
                refused.join("; ")
            ),
        });
    }
    let err = |name: &str, e: wasmtime::Error| PluginError::Load {
        plugin: plugin.to_string(),
        reason: format!("cannot define the sandbox stub of {name}: {e}"),
    };
    let mut resources = BTreeSet::new();
    for (name, item) in stubs {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(PluginError::Load {
                plugin: plugin.to_string(),
                reason: format!("it imports {name} as something other than an interface"),
            });
        };
        let iface = split_version(&name).0.to_string();
        let mut li = linker.instance(&name).map_err(|e| err(&name, e))?;
        for (fname, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::Resource(_) => {
                    resources.insert(format!("{iface}#{fname}"));
                    let ty = resource_type(fname);
                    li.resource(fname, ty, |_, _| Ok(()))
                        .map_err(|e| err(&name, e))?;
                }
                ComponentItem::ComponentFunc(_)
                    if iface == "wasi:io/streams"
                        && matches!(
                            fname,
                            "[method]output-stream.write"
                                | "[method]output-stream.blocking-write-and-flush"
                        ) =>
                {
                    // Typed, so the bytes are looked at in place: a dynamic
                    // function would lift a 48 MiB write as 48 Mi `Val`s.
                    li.func_wrap(
                        fname,
                        |mut store: StoreContextMut<'_, State>,
                         (_stream, bytes): (Resource<OutputStream>, WasmList<u8>)| {
                            let room = MAX_STDERR_BYTES.saturating_sub(store.data().console.len());
                            if room > 0 {
                                let data = bytes.as_le_slice(&store);
                                let kept = data[..data.len().min(room)].to_vec();
                                store.data_mut().console.extend_from_slice(&kept);
                            }
                            Ok((Ok::<(), StreamError>(()),))
                        },
                    )
                    .map_err(|e| err(&name, e))?;
                }
                ComponentItem::ComponentFunc(_) => {
                    let (iface, fname) = (iface.clone(), fname.to_string());
                    let full = fname.clone();
                    li.func_new(&full, move |store, _ty, params, results| {
                        stub(store, &iface, &fname, params, results)
                    })
                    .map_err(|e| err(&name, e))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `wasi:io/streams.stream-error`, as the typed write stub returns it.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(variant)]
enum StreamError {
    #[component(name = "last-operation-failed")]
    #[allow(dead_code, reason = "the stubs never fail a write")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    #[allow(dead_code, reason = "the stubs never close a stream")]
    Closed,
}

// Host-side marker types of the WASI resources; never instantiated.
struct InputStream;
struct OutputStream;
struct IoError;
struct Pollable;
struct TerminalInput;
struct TerminalOutput;
struct OtherResource;

fn resource_type(name: &str) -> ResourceType {
    match name {
        "input-stream" => ResourceType::host::<InputStream>(),
        "output-stream" => ResourceType::host::<OutputStream>(),
        "error" => ResourceType::host::<IoError>(),
        "pollable" => ResourceType::host::<Pollable>(),
        "terminal-input" => ResourceType::host::<TerminalInput>(),
        "terminal-output" => ResourceType::host::<TerminalOutput>(),
        _ => ResourceType::host::<OtherResource>(),
    }
}

/// The behaviour of one deny-all WASI function.
fn stub(
    mut store: StoreContextMut<'_, State>,
    iface: &str,
    fname: &str,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    // Borrowed handles (`self` of a method) must be released before returning.
    for p in params {
        if let Val::Resource(r) = p
            && !r.owned()
        {
            r.resource_drop(&mut store)?;
        }
    }
    let ok_unit = || Val::Result(Ok(None));
    let value = match (iface, fname) {
        ("wasi:cli/environment", "get-environment" | "get-arguments") => Val::List(Vec::new()),
        ("wasi:cli/environment", "initial-cwd") => Val::Option(None),
        (
            "wasi:cli/terminal-stdin" | "wasi:cli/terminal-stdout" | "wasi:cli/terminal-stderr",
            _,
        ) => Val::Option(None),
        ("wasi:cli/stdin", "get-stdin") => {
            Val::Resource(Resource::<InputStream>::new_own(0).try_into_resource_any(&mut store)?)
        }
        ("wasi:cli/stdout", "get-stdout") => {
            Val::Resource(Resource::<OutputStream>::new_own(1).try_into_resource_any(&mut store)?)
        }
        ("wasi:cli/stderr", "get-stderr") => {
            Val::Resource(Resource::<OutputStream>::new_own(2).try_into_resource_any(&mut store)?)
        }
        ("wasi:io/streams", "[method]output-stream.check-write") => {
            Val::Result(Ok(Some(Box::new(Val::U64(MAX_STDERR_BYTES as u64)))))
        }
        (
            "wasi:io/streams",
            "[method]output-stream.write" | "[method]output-stream.blocking-write-and-flush",
        ) => {
            if let Some(Val::List(bytes)) = params.get(1) {
                let console = &mut store.data_mut().console;
                for b in bytes {
                    if console.len() >= MAX_STDERR_BYTES {
                        break;
                    }
                    if let Val::U8(b) = b {
                        console.push(*b);
                    }
                }
            }
            ok_unit()
        }
        (
            "wasi:io/streams",
            "[method]output-stream.flush" | "[method]output-stream.blocking-flush",
        ) => ok_unit(),
        ("wasi:io/streams", "[method]output-stream.subscribe") => {
            Val::Resource(Resource::<Pollable>::new_own(0).try_into_resource_any(&mut store)?)
        }
        // Every pollable is always ready: output is never blocked, input is closed.
        ("wasi:io/poll", "[method]pollable.ready") => Val::Bool(true),
        ("wasi:io/poll", "[method]pollable.block") => return Ok(()),
        ("wasi:io/poll", "poll") => match params.first() {
            Some(Val::List(items)) => Val::List((0..items.len() as u32).map(Val::U32).collect()),
            _ => Val::List(Vec::new()),
        },
        ("wasi:io/streams", f) if f.starts_with("[method]input-stream.") => {
            // stream-error::closed
            Val::Result(Err(Some(Box::new(Val::Variant(
                "closed".to_string(),
                None,
            )))))
        }
        _ => {
            let what = format!(
                "the plugin called {iface}#{fname}, which the sandbox denies ({})",
                if iface == "wasi:cli/exit" {
                    "a plugin must return, not exit"
                } else {
                    "plugins get no I/O"
                }
            );
            store.data_mut().denied.get_or_insert(what.clone());
            return Err(wasmtime::format_err!("{what}"));
        }
    };
    match results.first_mut() {
        Some(slot) => *slot = value,
        None => {
            return Err(wasmtime::format_err!(
                "sandbox stub {iface}#{fname} has no result slot"
            ));
        }
    }
    Ok(())
}
