//! The sandbox that runs remediation plugins.
//!
//! Plugins decide, the host acts. A plugin is a WebAssembly component built
//! against the contract in `plugins/sdk/wit/v0.1.0`; this crate compiles it once
//! ([`Host::load`]), then runs it in a fresh store for every decision
//! ([`Plugin::decide`]) with:
//!
//! - no filesystem, network, clock, environment, arguments or stdio: a plugin
//!   importing anything beyond the contract and the few WASI interfaces Rust's
//!   standard library always imports is refused at load (see [`sandbox`]);
//! - a wall-clock limit (`timeout_ms`, epoch interruption),
//! - a memory limit (`memory_mb`) on all its memories and tables together,
//!   and small caps on how many instances, memories and tables it creates;
//! - caps on what it may cost before it runs: the file must be a regular file
//!   of bounded size, its function bodies and counts are bounded before
//!   compiling, and compiling has a deadline;
//! - caps on what the host copies out of it (its answer, its log lines);
//! - no wasm features a plugin does not need (multi-memory, memory64,
//!   threads, relaxed SIMD, GC, exceptions...).
//!
//! Every number, and the sizes of the shipped plugins they were chosen
//! against, is in [`limits`].
//!
//! A plugin that loops, allocates without end, traps or answers nonsense
//! fails with a typed [`PluginError`]; the caller turns it into the policy's
//! [`PolicyFailure`] and the other policies go on. The host checks of the
//! answer (granted kinds, exemptions, blast radius) are not done here but in
//! [`engine_core::plan::check_proposals`].

pub mod cache;
mod convert;
mod engine_config;
mod files;
pub mod inspect;
pub mod limits;
mod output;
pub mod sandbox;
pub mod scan;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine_core::Finding;
use engine_core::plan::{FailureKind, PolicyFailure, Proposal};
use engine_core::policy::{PluginConfig, PluginSource, Policy};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{Engine, Store};

use crate::sandbox::State;

/// The newest contract version this host supports (`plugins/sdk/wit/v0.2.0`).
pub const CONTRACT_VERSION: &str = "0.2.0";
/// Every contract version this host loads, oldest first.
pub const CONTRACT_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// The contract a plugin was built against (the version of its
/// `engine:plugin/decide` export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `engine:plugin@0.1.0`: given only due findings, sends no notices.
    V0_1,
    /// `engine:plugin@0.2.0`: finding stages, `deactivated-at`, `notify`.
    V0_2,
}

impl Contract {
    pub fn parse(version: &str) -> Option<Contract> {
        match version {
            "0.1.0" => Some(Contract::V0_1),
            "0.2.0" => Some(Contract::V0_2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// Whether its findings carry stages (upcoming, deactivated).
    pub fn has_stages(self) -> bool {
        self == Contract::V0_2
    }
}
/// The interface every plugin exports, without its version.
pub const DECIDE_INTERFACE: &str = "engine:plugin/decide";
/// How often the epoch ticker advances; the resolution of `timeout_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The newest contract (`engine:plugin@0.2.0`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../plugins/sdk/wit/v0.2.0",
    });
}

/// The first contract (`engine:plugin@0.1.0`), which plugins built against
/// it keep using.
pub(crate) mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../plugins/sdk/wit/v0.1.0",
    });
}

/// The plugins shipped inside the binary, as component bytes.
///
/// Built from `plugins/<name>` for `wasm32-wasip2` by this crate's build script.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    match name {
        "delete-expired-keys" => Some(include_bytes!(concat!(
            env!("ENGINE_PLUGIN_WASM_DIR"),
            "/delete_expired_keys.wasm"
        ))),
        "deactivate-unused-credentials" => Some(include_bytes!(concat!(
            env!("ENGINE_PLUGIN_WASM_DIR"),
            "/deactivate_unused_credentials.wasm"
        ))),
        "staged-key-removal" => Some(include_bytes!(concat!(
            env!("ENGINE_PLUGIN_WASM_DIR"),
            "/staged_key_removal.wasm"
        ))),
        _ => None,
    }
}

/// A shipped plugin precompiled by the build script for the target this
/// binary was built for, with this host's configuration (empty when the
/// build could not precompile it).
fn builtin_precompiled(name: &str) -> Option<&'static [u8]> {
    let code: &'static [u8] = match name {
        "delete-expired-keys" => {
            include_bytes!(concat!(env!("OUT_DIR"), "/delete-expired-keys.cwasm"))
        }
        "deactivate-unused-credentials" => include_bytes!(concat!(
            env!("OUT_DIR"),
            "/deactivate-unused-credentials.cwasm"
        )),
        "staged-key-removal" => {
            include_bytes!(concat!(env!("OUT_DIR"), "/staged-key-removal.cwasm"))
        }
        _ => return None,
    };
    Some(code).filter(|b| !b.is_empty())
}

/// The target triple the host's wasmtime configuration names (the one this
/// binary was built for; see `engine_config`).
pub const TARGET: &str = env!("ENGINE_WASM_TARGET");

/// Where a loaded plugin's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A builtin, compiled when the engine was built.
    Precompiled,
    /// An external plugin compiled by an earlier process, from the cache.
    Cached,
    /// Compiled by this process (then stored in the cache, if there is one).
    Compiled,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Precompiled => "precompiled",
            Origin::Cached => "cached",
            Origin::Compiled => "compiled",
        }
    }
}

/// Why a plugin could not be loaded or did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Missing file, sha256 mismatch, not a component, or a forbidden import.
    #[error("plugin {plugin:?} could not be loaded: {reason}")]
    Load { plugin: String, reason: String },
    /// The plugin's source is not a regular file (a FIFO, a device, a
    /// directory...); it was not read.
    #[error(
        "plugin {plugin:?} could not be loaded: {} is {found}, not a regular file; point source in [plugin.{plugin}] at the plugin's .wasm file", .path.display()
    )]
    NotAFile {
        plugin: String,
        path: PathBuf,
        found: FileKind,
    },
    /// Over one of the bounds checked before compiling (see [`limits`]).
    #[error(
        "plugin {plugin:?} was refused before compiling: its {what} is {actual}, over the limit of {limit}{}", what.hint(plugin)
    )]
    TooLarge {
        plugin: String,
        what: LoadLimit,
        actual: u64,
        limit: u64,
    },
    /// Compiling took longer than [`limits::COMPILE_TIMEOUT`]; it was abandoned.
    #[error("plugin {plugin:?} was refused: compiling it took longer than {limit_ms} ms")]
    CompileTimeout { plugin: String, limit_ms: u64 },
    /// Built against a contract version this host does not support.
    #[error(
        "plugin {plugin:?} was built against contract engine:plugin@{found}, but this engine supports engine:plugin@{supported}; rebuild it with engine-plugin-sdk {CONTRACT_VERSION} (plugins/sdk/wit/v{CONTRACT_VERSION})"
    )]
    Version {
        plugin: String,
        found: String,
        supported: String,
    },
    /// Ran past `timeout_ms` and was stopped.
    #[error(
        "plugin {plugin:?} was stopped after {elapsed_ms} ms: it ran past timeout_ms = {limit_ms}; fix the plugin or raise timeout_ms in [plugin.{plugin}]"
    )]
    Timeout {
        plugin: String,
        limit_ms: u64,
        elapsed_ms: u64,
    },
    /// Tried to hold more than `memory_mb` in all its memories and tables
    /// together (or a table past [`limits::MAX_TABLE_ELEMENTS`]) and was stopped.
    #[error(
        "plugin {plugin:?} was stopped: it tried to use more than memory_mb = {limit_mb} MiB; fix the plugin or raise memory_mb in [plugin.{plugin}]"
    )]
    MemoryLimit { plugin: String, limit_mb: u64 },
    /// Trapped: panic, `unreachable`, stack overflow, a denied WASI call...
    #[error(
        "plugin {plugin:?} crashed (trap): {message}; this is a bug in the plugin, report it to its author"
    )]
    Trap { plugin: String, message: String },
    /// Returned something the host does not accept.
    #[error("plugin {plugin:?} returned an invalid answer: {reason}")]
    InvalidOutput { plugin: String, reason: String },
    /// Returned an error of its own (`Err(message)`).
    #[error("plugin {plugin:?} refused to decide: {message}")]
    Failed { plugin: String, message: String },
}

impl PluginError {
    /// The typed failure kind of the policy whose plugin failed.
    pub fn kind(&self) -> FailureKind {
        match self {
            PluginError::Load { .. }
            | PluginError::NotAFile { .. }
            | PluginError::TooLarge { .. }
            | PluginError::CompileTimeout { .. } => FailureKind::Load,
            PluginError::Version { .. } => FailureKind::Version,
            PluginError::Timeout { .. } => FailureKind::Timeout,
            PluginError::MemoryLimit { .. } => FailureKind::MemoryLimit,
            PluginError::Trap { .. } => FailureKind::Trap,
            PluginError::InvalidOutput { .. } => FailureKind::InvalidOutput,
            PluginError::Failed { .. } => FailureKind::PluginError,
        }
    }

    /// The failure to record in the policy's plan.
    pub fn to_failure(&self) -> PolicyFailure {
        PolicyFailure {
            kind: self.kind(),
            message: self.to_string(),
        }
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Load { plugin, .. }
            | PluginError::NotAFile { plugin, .. }
            | PluginError::TooLarge { plugin, .. }
            | PluginError::CompileTimeout { plugin, .. }
            | PluginError::Version { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::InvalidOutput { plugin, .. }
            | PluginError::Failed { plugin, .. } => plugin,
        }
    }
}

/// A bound checked before a plugin is compiled (see [`limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadLimit {
    /// [`limits::MAX_PLUGIN_FILE_BYTES`]
    FileBytes,
    /// [`limits::MAX_FUNCTION_BODY_BYTES`]
    FunctionBodyBytes,
    /// [`limits::MAX_FUNCTION_LOCALS`]
    FunctionLocals,
    /// [`limits::MAX_FUNCTIONS`]
    Functions,
    /// [`limits::MAX_MODULES`]
    Modules,
    /// [`limits::MAX_NESTED_COMPONENTS`]
    Components,
    /// [`limits::MAX_INSTANCES`]
    Instances,
    /// [`limits::MAX_MEMORIES`]
    Memories,
    /// [`limits::MAX_TABLES`]
    Tables,
}

impl LoadLimit {
    /// The `[plugin.NAME]` key that raises this limit, if a policy may.
    pub fn key(self) -> Option<&'static str> {
        match self {
            LoadLimit::FileBytes => Some("max_file_mb"),
            LoadLimit::FunctionBodyBytes => Some("max_function_kb"),
            LoadLimit::Functions => Some("max_functions"),
            _ => None,
        }
    }

    fn hint(self, plugin: &str) -> String {
        match self.key() {
            Some(key) => format!(
                "; if you trust this plugin, raise {key} in [plugin.{plugin}] (`engine plugin inspect FILE` prints the values it needs)"
            ),
            None => String::new(),
        }
    }
}

impl std::fmt::Display for LoadLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoadLimit::FileBytes => "size in bytes",
            LoadLimit::FunctionBodyBytes => "largest function body in bytes",
            LoadLimit::FunctionLocals => "largest number of locals of one function",
            LoadLimit::Functions => "number of functions",
            LoadLimit::Modules => "number of core modules",
            LoadLimit::Components => "number of nested components",
            LoadLimit::Instances => "number of core instances",
            LoadLimit::Memories => "number of memories",
            LoadLimit::Tables => "number of tables",
        })
    }
}

/// What a plugin source that is not a regular file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A character device, e.g. `/dev/zero`.
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a regular file",
        })
    }
}

/// Severity of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A line a plugin logged during one call (already forwarded to `tracing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// What a plugin is asked to decide for.
///
/// Nothing in it tells a dry run (`engine check`) from a real one (`engine
/// apply`): the same policy, findings and `now` give the same invocation, and
/// so the same context handed to the plugin, byte for byte. A plugin cannot
/// behave one way when watched and another when acting. The contract's
/// `dry-run` field is kept for compatibility and is always `false`.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// Derived from what the plugin is given (see [`invocation_id`]); tags
    /// the plugin's log lines.
    pub invocation_id: String,
    pub policy: &'a Policy,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl<'a> Invocation<'a> {
    /// The invocation of `policy`'s plugin on `findings` at `now`.
    pub fn new(
        policy: &'a Policy,
        now: chrono::DateTime<chrono::Utc>,
        findings: &[Finding],
    ) -> Invocation<'a> {
        Invocation {
            invocation_id: invocation_id(policy, now, findings),
            policy,
            now,
        }
    }
}

/// The value of the contract's `context.dry-run`, in every mode.
pub const CONTEXT_DRY_RUN: bool = false;

/// `POLICY/HASH`: the first 16 hex digits of the sha256 of everything the
/// plugin is given (its context without the id, and the findings), so it
/// depends on nothing else: not the clock, the process or the mode.
pub fn invocation_id(
    policy: &Policy,
    now: chrono::DateTime<chrono::Utc>,
    findings: &[Finding],
) -> String {
    let inv = Invocation {
        invocation_id: String::new(),
        policy,
        now,
    };
    let ctx = convert::context(&inv);
    let findings: Vec<_> = findings.iter().map(convert::finding).collect();
    let digest = Sha256::digest(format!("{ctx:?}\n{findings:?}").as_bytes());
    let mut id = hex(&digest);
    id.truncate(16);
    format!("{}/{id}", policy.name)
}

/// The context record handed to the plugin for `inv`, as text (tests compare
/// it across modes).
#[doc(hidden)]
pub fn context_text(inv: &Invocation<'_>) -> String {
    format!("{:?}", convert::context(inv))
}

/// A plugin's answer, not yet checked against the policy.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The raw requests; check them with [`engine_core::plan::check_proposals`].
    pub proposals: Vec<Proposal>,
    pub logs: Vec<LogLine>,
    /// Wall-clock time of instantiation plus the call.
    pub elapsed: Duration,
    /// The most memory the plugin held at once, in bytes: all its linear
    /// memories and tables together (tables at their host cost per element).
    pub peak_memory_bytes: usize,
}

/// The epoch ticker's shared state.
#[derive(Default)]
struct TickState {
    /// Plugin calls in flight: the ticker ticks only while there is one, so
    /// an idle process (a daemon between runs) has no timer waking it.
    active: usize,
    /// The last [`Host`] and [`Plugin`] are gone: the thread ends.
    stopped: bool,
}

type TickShared = Arc<(std::sync::Mutex<TickState>, std::sync::Condvar)>;

/// Holds the epoch ticker thread; stops it when the last [`Host`] or
/// [`Plugin`] is dropped.
struct Ticker {
    shared: TickShared,
}

impl Ticker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickState> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A plugin call is in flight until the guard is dropped.
    fn active(&self) -> Active<'_> {
        self.lock().active += 1;
        self.shared.1.notify_all();
        Active(self)
    }

    /// The thread: while a call is in flight, advance the epoch every
    /// [`EPOCH_TICK`] (on the tick's schedule, whatever wakes it); otherwise
    /// sleep until a call starts or the ticker stops.
    fn run(shared: &TickShared, engine: &Engine) {
        let (lock, wake) = &**shared;
        let mut state = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Option<Instant> = None;
        loop {
            if state.stopped {
                return;
            }
            if state.active == 0 {
                next = None;
                state = wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            let now = Instant::now();
            let due = *next.get_or_insert(now + EPOCH_TICK);
            if now >= due {
                engine.increment_epoch();
                next = Some(due + EPOCH_TICK);
                continue;
            }
            state = wake
                .wait_timeout(state, due - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.lock().stopped = true;
        self.shared.1.notify_all();
    }
}

/// A plugin call in flight (see [`Ticker::active`]).
struct Active<'a>(&'a Ticker);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.active = state.active.saturating_sub(1);
    }
}

/// The plugin runtime of a process: one wasmtime engine and its epoch ticker.
pub struct Host {
    engine: Engine,
    ticker: Arc<Ticker>,
    compile_timeout: Duration,
    cache: Option<cache::Cache>,
}

impl Host {
    /// Create the engine (epoch interruption on, unneeded wasm features off)
    /// and start the ticker thread.
    pub fn new() -> Result<Host, PluginError> {
        let engine = engine_config::config(TARGET)
            .and_then(|config| Engine::new(&config))
            .map_err(|e| PluginError::Load {
                plugin: String::new(),
                reason: format!("cannot create the wasm engine: {e}"),
            })?;
        let shared: TickShared = Arc::default();
        let ticking = engine.clone();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("engine-wasm-epoch".to_string())
            // Ends when the last Host and Plugin are gone (Ticker's drop).
            .spawn(move || Ticker::run(&thread_shared, &ticking))
            .map_err(|e| PluginError::Load {
                plugin: String::new(),
                reason: format!("cannot start the plugin timer thread: {e}"),
            })?;
        Ok(Host {
            engine,
            ticker: Arc::new(Ticker { shared }),
            compile_timeout: limits::COMPILE_TIMEOUT,
            cache: None,
        })
    }

    /// The same host, keeping the machine code of external plugins in
    /// `cache` so that the next process loading the same file (same sha256,
    /// same engine) does not compile it again. See [`cache`].
    pub fn with_cache(mut self, cache: cache::Cache) -> Host {
        self.cache = Some(cache);
        self
    }

    /// The wasmtime engine (tests make artifacts with it).
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The same host with another compile deadline (tests).
    #[doc(hidden)]
    pub fn with_compile_timeout(mut self, timeout: Duration) -> Host {
        self.compile_timeout = timeout;
        self
    }

    /// Read, verify and compile a plugin, and link it against the sandbox.
    ///
    /// The file must be a regular file of at most
    /// [`limits::MAX_PLUGIN_FILE_BYTES`]; the contract version, the imports
    /// and the bounds of [`limits`] are checked before anything of the plugin
    /// runs. Compile once, then call [`Plugin::decide`] many times.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Plugin, PluginError> {
        let load_err = |reason: String| PluginError::Load {
            plugin: cfg.name.clone(),
            reason,
        };
        let owned;
        let (bytes, machine_code): (&[u8], MachineCode) = match &cfg.source {
            PluginSource::Builtin => (
                builtin(&cfg.name).ok_or_else(|| {
                    load_err(format!(
                        "there is no builtin plugin of that name (builtin: delete-expired-keys, deactivate-unused-credentials, staged-key-removal); give [plugin.{}] a source = \"path.wasm\" and its sha256",
                        cfg.name
                    ))
                })?,
                builtin_precompiled(&cfg.name).map_or(MachineCode::None, MachineCode::Precompiled),
            ),
            PluginSource::File { path, sha256 } => {
                let max_bytes = usize::try_from(scan::Caps::of(&cfg.bounds).file_bytes)
                    .unwrap_or(usize::MAX);
                owned = files::read_bounded(path, max_bytes).map_err(
                    |e| match e {
                        files::ReadError::NotAFile(found) => PluginError::NotAFile {
                            plugin: cfg.name.clone(),
                            path: path.clone(),
                            found,
                        },
                        files::ReadError::TooLarge(actual) => PluginError::TooLarge {
                            plugin: cfg.name.clone(),
                            what: LoadLimit::FileBytes,
                            actual,
                            limit: max_bytes as u64,
                        },
                        files::ReadError::Io(e) => load_err(format!(
                            "cannot read {}: {e}; check [plugin.{}] source",
                            path.display(),
                            cfg.name
                        )),
                    },
                )?;
                let actual = hex(&Sha256::digest(&owned));
                if !actual.eq_ignore_ascii_case(sha256) {
                    return Err(load_err(format!(
                        "sha256 mismatch for {}: expected {sha256}, actual {actual}; if you rebuilt the plugin on purpose, update sha256 in [plugin.{}]",
                        path.display(),
                        cfg.name
                    )));
                }
                (&owned[..], MachineCode::Cache(actual))
            }
        };
        self.load_with(cfg, bytes, machine_code)
    }

    /// [`Host::load`] from bytes already in memory (the source in `cfg` is
    /// ignored), compiled here.
    pub fn load_bytes(&self, cfg: &PluginConfig, bytes: &[u8]) -> Result<Plugin, PluginError> {
        self.load_with(cfg, bytes, MachineCode::None)
    }

    /// [`Host::load_bytes`], with machine code made earlier for `bytes`
    /// (`Component::serialize` or `Engine::precompile_component`): used if
    /// wasmtime accepts it for this engine, else `bytes` are compiled.
    #[doc(hidden)]
    pub fn load_precompiled(
        &self,
        cfg: &PluginConfig,
        bytes: &[u8],
        machine_code: &[u8],
    ) -> Result<Plugin, PluginError> {
        self.load_with(cfg, bytes, MachineCode::Precompiled(machine_code))
    }

    fn load_with(
        &self,
        cfg: &PluginConfig,
        bytes: &[u8],
        machine_code: MachineCode<'_>,
    ) -> Result<Plugin, PluginError> {
        let name = cfg.name.clone();
        let load_err = |reason: String| PluginError::Load {
            plugin: name.clone(),
            reason,
        };
        let too_large = |e: scan::Exceeded| PluginError::TooLarge {
            plugin: name.clone(),
            what: e.what,
            actual: e.actual,
            limit: e.limit,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(load_err(
                "not a WebAssembly file; build the plugin with `cargo build --release --target wasm32-wasip2`".to_string(),
            ));
        }
        let not_a_component = |e: &dyn std::fmt::Display| {
            load_err(format!(
                "not a valid WebAssembly component ({e}); build it for the wasm32-wasip2 target with engine-plugin-sdk"
            ))
        };
        match scan::scan(bytes, &scan::Caps::of(&cfg.bounds)) {
            Ok(_) => {}
            Err(scan::ScanError::Exceeded(e)) => return Err(too_large(e)),
            Err(scan::ScanError::Malformed(e)) => return Err(not_a_component(&e)),
        }
        let (component, origin) = match self.reuse(&name, &machine_code) {
            Some(found) => found,
            None => {
                let component = self
                    .compile(&name, bytes)?
                    .map_err(|e| not_a_component(&e.root_cause()))?;
                if let (MachineCode::Cache(sha256), Some(cache)) = (&machine_code, &self.cache) {
                    cache.put(&self.engine, sha256, &component);
                }
                (component, Origin::Compiled)
            }
        };
        // The memories and tables of every instance the component creates,
        // nested components instantiated several times included.
        let required = component.resources_required().ok_or_else(|| {
            load_err("it imports a core module, which the sandbox does not provide".to_string())
        })?;
        for (what, actual, limit) in [
            (
                LoadLimit::Memories,
                required.num_memories,
                limits::MAX_MEMORIES,
            ),
            (LoadLimit::Tables, required.num_tables, limits::MAX_TABLES),
        ] {
            if actual as usize > limit {
                return Err(too_large(scan::Exceeded {
                    what,
                    actual: u64::from(actual),
                    limit: limit as u64,
                }));
            }
        }
        let ty = component.component_type();
        let contract = sandbox::check_exports(&name, &self.engine, &ty)?;
        let mut linker: Linker<State> = Linker::new(&self.engine);
        sandbox::link_host(&name, &mut linker, contract)?;
        sandbox::link_imports(&name, &self.engine, &ty, &mut linker)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "its imports do not match what the sandbox provides: {}",
                e.root_cause()
            ))
        })?;
        let version = contract.as_str();
        let mismatch = |e: wasmtime::Error| {
            load_err(format!(
                "its {DECIDE_INTERFACE}@{version} export does not match the contract: {}; rebuild it with engine-plugin-sdk {version}",
                e.root_cause()
            ))
        };
        // The typed check of the export, for the plugin's contract.
        let pre = match contract {
            Contract::V0_1 => bindings_v0_1::PluginPre::new(pre)
                .map_err(mismatch)?
                .instance_pre()
                .clone(),
            Contract::V0_2 => bindings::PluginPre::new(pre)
                .map_err(mismatch)?
                .instance_pre()
                .clone(),
        };
        let decide = component
            .get_export_index(None, format!("{DECIDE_INTERFACE}@{version}").as_str())
            .and_then(|i| component.get_export_index(Some(&i), "decide"))
            .ok_or_else(|| {
                load_err(format!(
                    "it does not export {DECIDE_INTERFACE}@{version}#decide"
                ))
            })?;
        tracing::debug!(plugin = %name, origin = origin.as_str(), "plugin loaded");
        Ok(Plugin {
            name: cfg.name.clone(),
            timeout_ms: cfg.timeout_ms,
            memory_mb: cfg.memory_mb,
            engine: self.engine.clone(),
            pre,
            decide,
            ticker: self.ticker.clone(),
            origin,
            contract,
        })
    }

    /// Machine code made earlier for the plugin, if wasmtime accepts it for
    /// this engine (same wasmtime version, compatible configuration).
    fn reuse(&self, plugin: &str, machine_code: &MachineCode<'_>) -> Option<(Component, Origin)> {
        match machine_code {
            MachineCode::None => None,
            MachineCode::Precompiled(code) => {
                // SAFETY: the bytes were made by `Engine::precompile_component`
                // (the build script, from the shipped plugin, embedded in
                // this binary) or by `Component::serialize` (tests); wasmtime
                // checks its version and the engine's configuration against
                // the artifact's and refuses it on any mismatch.
                match unsafe { Component::deserialize(&self.engine, code) } {
                    Ok(c) => Some((c, Origin::Precompiled)),
                    Err(e) => {
                        tracing::debug!(plugin, error = %e, "precompiled plugin not usable by this engine; compiling it");
                        None
                    }
                }
            }
            MachineCode::Cache(sha256) => self
                .cache
                .as_ref()
                .and_then(|cache| cache.get(&self.engine, sha256))
                .map(|c| (c, Origin::Cached)),
        }
    }

    /// Compile on a thread of its own, waiting at most the compile deadline.
    ///
    /// cranelift cannot be interrupted: a compile past the deadline is
    /// abandoned (the load fails with `CompileTimeout` at once) and runs on in
    /// the background until it ends, when its result is dropped. The bounds
    /// checked by [`scan::scan`] bound that time and memory.
    fn compile(
        &self,
        plugin: &str,
        bytes: &[u8],
    ) -> Result<wasmtime::Result<Component>, PluginError> {
        let (done, result) = mpsc::sync_channel(1);
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("engine-wasm-compile".to_string())
            .spawn(move || {
                // The receiver is gone when the compile was abandoned.
                let _ = done.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| PluginError::Load {
                plugin: plugin.to_string(),
                reason: format!("cannot start the compiler thread: {e}"),
            })?;
        match result.recv_timeout(self.compile_timeout) {
            Ok(component) => Ok(component),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(PluginError::CompileTimeout {
                plugin: plugin.to_string(),
                limit_ms: u64::try_from(self.compile_timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(PluginError::Load {
                plugin: plugin.to_string(),
                reason: "the compiler thread failed".to_string(),
            }),
        }
    }
}

/// A compiled, linked plugin. Cheap to call many times, from many threads.
pub struct Plugin {
    name: String,
    timeout_ms: u64,
    memory_mb: u64,
    engine: Engine,
    pre: wasmtime::component::InstancePre<State>,
    /// `engine:plugin/decide@0.1.0#decide`.
    decide: ComponentExportIndex,
    ticker: Arc<Ticker>,
    origin: Origin,
    contract: Contract,
}

/// Machine code that may spare compiling a plugin.
enum MachineCode<'a> {
    None,
    /// Made for this plugin by the build script (or a test).
    Precompiled(&'a [u8]),
    /// Look in the host's cache under the plugin's sha256.
    Cache(String),
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("timeout_ms", &self.timeout_ms)
            .field("memory_mb", &self.memory_mb)
            .finish_non_exhaustive()
    }
}

/// Where a call failed, to tell the plugin's traps from the host's refusals.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Instantiate,
    Typecheck,
    Call,
}

/// The parameters of `decide`, lowered by wasmtime from the bindgen types.
type DecideParams<'a> = (
    &'a bindings::engine::plugin::types::Context,
    &'a [bindings::engine::plugin::types::Finding],
);

/// The same, for a plugin of contract 0.1.0.
type DecideParamsV01<'a> = (
    &'a bindings_v0_1::engine::plugin::types::Context,
    &'a [bindings_v0_1::engine::plugin::types::Finding],
);

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its machine code came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether its contract has finding stages (upcoming, deactivated):
    /// a plugin of an earlier contract is given only due findings.
    pub fn sees_stages(&self) -> bool {
        self.contract.has_stages()
    }

    /// The contract it was built against.
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// Run the plugin on a policy's findings, in a fresh store.
    pub fn decide(
        &self,
        inv: &Invocation<'_>,
        findings: &[Finding],
    ) -> Result<Decision, PluginError> {
        let limit_bytes =
            usize::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine,
            State::new(
                &self.name,
                &inv.invocation_id,
                inv.policy.name.as_str(),
                limit_bytes,
            ),
        );
        store.limiter(|s| &mut s.limits);
        // The epoch advances while this guard lives (instantiate and call).
        let _ticking = self.ticker.active();
        let tick_ms = EPOCH_TICK.as_millis().max(1) as u64;
        // The next tick may come at once: one tick more guarantees the plugin
        // gets at least `timeout_ms` (and at most one tick past it).
        store.set_epoch_deadline(self.timeout_ms.div_ceil(tick_ms) + 1);
        store.epoch_deadline_trap();

        // Each call may lift at most memory_mb bytes out of the plugin
        // (wasmtime's own count, per host call and for the answer).
        store.set_hostcall_fuel(limit_bytes);
        let start = Instant::now();
        let mut phase = Phase::Instantiate;
        let instance = self.pre.instantiate(&mut store);
        // Instantiate, find `decide` with the plugin's contract's types, call
        // it: each contract has its own WIT types, the answer is the same.
        let result: wasmtime::Result<output::RawAnswer> = match self.contract {
            Contract::V0_1 => {
                let ctx = convert::v0_1::context(inv);
                let fs: Vec<_> = findings.iter().map(convert::v0_1::finding).collect();
                instance
                    .and_then(|instance| {
                        phase = Phase::Typecheck;
                        instance.get_typed_func::<DecideParamsV01<'_>, (output::RawAnswerV01,)>(
                            &mut store,
                            &self.decide,
                        )
                    })
                    .and_then(|func| {
                        phase = Phase::Call;
                        func.call(&mut store, (&ctx, &fs))
                    })
                    .map(|(answer,)| answer.map(output::upgrade))
            }
            Contract::V0_2 => {
                let ctx = convert::context(inv);
                let fs: Vec<_> = findings.iter().map(convert::finding).collect();
                instance
                    .and_then(|instance| {
                        phase = Phase::Typecheck;
                        instance.get_typed_func::<DecideParams<'_>, (output::RawAnswer,)>(
                            &mut store,
                            &self.decide,
                        )
                    })
                    .and_then(|func| {
                        phase = Phase::Call;
                        func.call(&mut store, (&ctx, &fs))
                    })
                    .map(|(answer,)| answer)
            }
        };
        let elapsed = start.elapsed();
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => return Err(self.classify(e, store.data(), phase, elapsed)),
        };
        let invalid = |output::Invalid(reason)| PluginError::InvalidOutput {
            plugin: self.name.clone(),
            reason,
        };
        let proposals = match answer {
            Ok(list) => output::actions(list, findings.len()).map_err(invalid)?,
            Err(output::Capped(message)) => {
                return Err(PluginError::Failed {
                    plugin: self.name.clone(),
                    message,
                });
            }
        };
        let state = store.into_data();
        let peak_memory_bytes = state.limits.peak;
        Ok(Decision {
            proposals,
            logs: state.finish_logs(),
            elapsed,
            peak_memory_bytes,
        })
    }

    fn classify(
        &self,
        e: wasmtime::Error,
        state: &State,
        phase: Phase,
        elapsed: Duration,
    ) -> PluginError {
        if state.limits.hit {
            return PluginError::MemoryLimit {
                plugin: self.name.clone(),
                limit_mb: self.memory_mb,
            };
        }
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return PluginError::Timeout {
                plugin: self.name.clone(),
                limit_ms: self.timeout_ms,
                elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            };
        }
        let mut message = match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            // Not a trap of the plugin's code nor a denied call: the host
            // refused something of the plugin's.
            None if state.denied.is_none() => {
                let reason = e.root_cause().to_string();
                return match phase {
                    Phase::Instantiate => PluginError::Load {
                        plugin: self.name.clone(),
                        reason: format!("it could not be instantiated: {reason}"),
                    },
                    Phase::Typecheck => PluginError::Load {
                        plugin: self.name.clone(),
                        reason: format!(
                            "its {DECIDE_INTERFACE}@{} export does not match the contract: {reason}",
                            self.contract.as_str()
                        ),
                    },
                    // Lowering its arguments (its realloc) or lifting its
                    // answer (out of bounds, malformed, too large to read).
                    Phase::Call if reason.contains("fuel allocated for hostcalls") => {
                        PluginError::InvalidOutput {
                            plugin: self.name.clone(),
                            reason: format!(
                                "its answer is larger than memory_mb = {} MiB (its actions and strings, each counted whole; an answer may not repeat a large string)",
                                self.memory_mb
                            ),
                        }
                    }
                    Phase::Call => PluginError::InvalidOutput {
                        plugin: self.name.clone(),
                        reason: format!("its answer could not be read: {reason}"),
                    },
                };
            }
            None => e.root_cause().to_string(),
        };
        if let Some(denied) = state
            .denied
            .as_ref()
            .filter(|d| !message.contains(d.as_str()))
        {
            message = format!("{message} ({denied})");
        }
        let stderr = state.stderr_text();
        if !stderr.is_empty() {
            message = format!("{message}; its stderr: {stderr}");
        }
        PluginError::Trap {
            plugin: self.name.clone(),
            message,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the build script put the components it built (shipped, example and
/// test plugins), for tests that load them as external plugins.
#[doc(hidden)]
pub const BUILT_PLUGIN_DIR: &str = env!("ENGINE_PLUGIN_WASM_DIR");
