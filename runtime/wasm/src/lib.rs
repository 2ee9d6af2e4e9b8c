//! The sandbox that runs remediation plugins.
//!
//! Plugins decide, the host acts. A plugin is a WebAssembly component built
//! against the contract in `plugins/wit/v0.1.0`; this crate compiles it once
//! ([`Host::load`]), then runs it in a fresh store for every decision
//! ([`Plugin::decide`]) with:
//!
//! - no filesystem, network, clock, environment, arguments or stdio: a plugin
//!   importing anything beyond the contract and the few WASI interfaces Rust's
//!   standard library always imports is refused at load (see [`sandbox`]);
//! - a wall-clock limit (`timeout_ms`, epoch interruption),
//! - a memory limit (`memory_mb`, store limits),
//! - caps on what it returns (see [`limits`]).
//!
//! A plugin that loops, allocates without end, traps or answers nonsense
//! fails with a typed [`PluginError`]; the caller turns it into the policy's
//! [`PolicyFailure`] and the other policies go on. The host checks of the
//! answer (granted kinds, exemptions, blast radius) are not done here but in
//! [`engine_core::plan::check_proposals`].

mod convert;
pub mod limits;
pub mod sandbox;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine_core::Finding;
use engine_core::plan::{FailureKind, PolicyFailure, Proposal};
use engine_core::policy::{PluginConfig, PluginSource, Policy};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

use crate::sandbox::State;

/// The contract version this host supports (`plugins/wit/v0.1.0`).
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The interface every plugin exports, without its version.
pub const DECIDE_INTERFACE: &str = "engine:plugin/decide";
/// How often the epoch ticker advances; the resolution of `timeout_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../plugins/wit/v0.1.0",
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
        _ => None,
    }
}

/// Why a plugin could not be loaded or did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Missing file, sha256 mismatch, not a component, or a forbidden import.
    #[error("plugin {plugin:?} could not be loaded: {reason}")]
    Load { plugin: String, reason: String },
    /// Built against a contract version this host does not support.
    #[error(
        "plugin {plugin:?} was built against contract engine:plugin@{found}, but this engine supports only engine:plugin@{supported}; rebuild it with engine-plugin-sdk {supported} (plugins/wit/v{supported})"
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
    /// Tried to grow its memory past `memory_mb` and was stopped.
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
            PluginError::Load { .. } => FailureKind::Load,
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
            | PluginError::Version { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::InvalidOutput { plugin, .. }
            | PluginError::Failed { plugin, .. } => plugin,
        }
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
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// Unique id of this run of this policy; tags the plugin's log lines.
    pub invocation_id: &'a str,
    pub policy: &'a Policy,
    /// True under `engine check`.
    pub dry_run: bool,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// A plugin's answer, not yet checked against the policy.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The raw requests; check them with [`engine_core::plan::check_proposals`].
    pub proposals: Vec<Proposal>,
    pub logs: Vec<LogLine>,
    /// Wall-clock time of instantiation plus the call.
    pub elapsed: Duration,
    /// The largest linear memory the plugin reached, in bytes.
    pub peak_memory_bytes: usize,
}

/// Stops the epoch ticker when the last [`Host`] or [`Plugin`] is dropped.
struct Ticker {
    _stop: mpsc::Sender<()>,
}

/// The plugin runtime of a process: one wasmtime engine and its epoch ticker.
pub struct Host {
    engine: Engine,
    ticker: Arc<Ticker>,
}

impl Host {
    /// Create the engine (epoch interruption on) and start the ticker thread.
    pub fn new() -> Result<Host, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Load {
            plugin: String::new(),
            reason: format!("cannot create the wasm engine: {e}"),
        })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("engine-wasm-epoch".to_string())
            .spawn(move || {
                // Ends when every Sender (held by the Host and its Plugins) is gone.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Load {
                plugin: String::new(),
                reason: format!("cannot start the plugin timer thread: {e}"),
            })?;
        Ok(Host {
            engine,
            ticker: Arc::new(Ticker { _stop: stop }),
        })
    }

    /// Read, verify and compile a plugin, and link it against the sandbox.
    ///
    /// The contract version and the imports are checked before anything of
    /// the plugin runs. Compile once, then call [`Plugin::decide`] many times.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Plugin, PluginError> {
        let load_err = |reason: String| PluginError::Load {
            plugin: cfg.name.clone(),
            reason,
        };
        let owned;
        let bytes: &[u8] = match &cfg.source {
            PluginSource::Builtin => builtin(&cfg.name).ok_or_else(|| {
                load_err(format!(
                    "there is no builtin plugin of that name (builtin: delete-expired-keys, deactivate-unused-credentials); give [plugin.{}] a source = \"path.wasm\" and its sha256",
                    cfg.name
                ))
            })?,
            PluginSource::File { path, sha256 } => {
                owned = std::fs::read(path).map_err(|e| {
                    load_err(format!(
                        "cannot read {}: {e}; check [plugin.{}] source",
                        path.display(),
                        cfg.name
                    ))
                })?;
                let actual = hex(&Sha256::digest(&owned));
                if !actual.eq_ignore_ascii_case(sha256) {
                    return Err(load_err(format!(
                        "sha256 mismatch for {}: expected {sha256}, actual {actual}; if you rebuilt the plugin on purpose, update sha256 in [plugin.{}]",
                        path.display(),
                        cfg.name
                    )));
                }
                &owned
            }
        };
        self.load_bytes(cfg, bytes)
    }

    /// [`Host::load`] from bytes already in memory (the source in `cfg` is ignored).
    pub fn load_bytes(&self, cfg: &PluginConfig, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let name = cfg.name.clone();
        let load_err = |reason: String| PluginError::Load {
            plugin: name.clone(),
            reason,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(load_err(
                "not a WebAssembly file; build the plugin with `cargo build --release --target wasm32-wasip2`".to_string(),
            ));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            load_err(format!(
                "not a valid WebAssembly component ({}); build it for the wasm32-wasip2 target with engine-plugin-sdk",
                e.root_cause()
            ))
        })?;
        let ty = component.component_type();
        sandbox::check_exports(&name, &self.engine, &ty)?;
        let mut linker: Linker<State> = Linker::new(&self.engine);
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| load_err(format!("cannot link the host interface: {e}")))?;
        sandbox::link_imports(&name, &self.engine, &ty, &mut linker)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "its imports do not match what the sandbox provides: {}",
                e.root_cause()
            ))
        })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| {
            load_err(format!(
                "its {DECIDE_INTERFACE}@{CONTRACT_VERSION} export does not match the contract: {}; rebuild it with engine-plugin-sdk {CONTRACT_VERSION}",
                e.root_cause()
            ))
        })?;
        Ok(Plugin {
            name: cfg.name.clone(),
            timeout_ms: cfg.timeout_ms,
            memory_mb: cfg.memory_mb,
            engine: self.engine.clone(),
            pre,
            _ticker: self.ticker.clone(),
        })
    }
}

/// A compiled, linked plugin. Cheap to call many times, from many threads.
pub struct Plugin {
    name: String,
    timeout_ms: u64,
    memory_mb: u64,
    engine: Engine,
    pre: bindings::PluginPre<State>,
    _ticker: Arc<Ticker>,
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

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
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
                inv.invocation_id,
                inv.policy.name.as_str(),
                limit_bytes,
            ),
        );
        store.limiter(|s| &mut s.limits);
        let tick_ms = EPOCH_TICK.as_millis().max(1) as u64;
        // The next tick may come at once: one tick more guarantees the plugin
        // gets at least `timeout_ms` (and at most one tick past it).
        store.set_epoch_deadline(self.timeout_ms.div_ceil(tick_ms) + 1);
        store.epoch_deadline_trap();

        let ctx = convert::context(inv);
        let wit_findings: Vec<_> = findings.iter().map(convert::finding).collect();

        let start = Instant::now();
        let result = self.pre.instantiate(&mut store).and_then(|p| {
            p.engine_plugin_decide()
                .call_decide(&mut store, &ctx, &wit_findings)
        });
        let elapsed = start.elapsed();
        let state = store.into_data();
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => return Err(self.classify(e, &state, elapsed)),
        };
        let actions = match answer {
            Ok(actions) => actions,
            Err(message) => {
                return Err(PluginError::Failed {
                    plugin: self.name.clone(),
                    message: limits::truncate(message, limits::MAX_ERROR_BYTES),
                });
            }
        };
        if actions.len() > findings.len() {
            return Err(PluginError::InvalidOutput {
                plugin: self.name.clone(),
                reason: format!(
                    "{} actions for {} finding(s); at most one action per finding is allowed",
                    actions.len(),
                    findings.len()
                ),
            });
        }
        let proposals = actions.into_iter().map(convert::proposal).collect();
        let peak_memory_bytes = state.limits.peak;
        Ok(Decision {
            proposals,
            logs: state.finish_logs(),
            elapsed,
            peak_memory_bytes,
        })
    }

    fn classify(&self, e: wasmtime::Error, state: &State, elapsed: Duration) -> PluginError {
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
