//! The production [`Decider`]: each policy's plugin, run in the wasm sandbox.
//!
//! Every plugin a policy set uses is compiled once, up front; a plugin that
//! fails to load fails only the policies that use it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engine_core::Finding;
use engine_core::plan::{PolicyFailure, Proposal};
use engine_core::policy::{Policy, PolicySet};
use engine_wasm::{Host, Invocation, Plugin, PluginError};

use crate::pipeline::Decider;

pub struct WasmDecider {
    plugins: BTreeMap<String, Result<Plugin, PluginError>>,
    run_id: String,
    now: DateTime<Utc>,
    dry_run: bool,
}

impl WasmDecider {
    pub fn new(set: &PolicySet, now: DateTime<Utc>, dry_run: bool) -> Result<WasmDecider, String> {
        let host = Host::new().map_err(|e| format!("cannot start the plugin runtime: {e}"))?;
        // Compile the plugins side by side: compilation is most of a small
        // check's time. A load failure is reported by each policy that uses it.
        let plugins: BTreeMap<String, Result<Plugin, PluginError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = set
                .plugins
                .iter()
                .map(|(name, cfg)| (name, scope.spawn(|| host.load(cfg))))
                .collect();
            handles
                .into_iter()
                .map(|(name, handle)| {
                    let loaded = handle.join().unwrap_or_else(|_| {
                        Err(PluginError::Load {
                            plugin: name.clone(),
                            reason: "the compiler thread panicked".into(),
                        })
                    });
                    (name.clone(), loaded)
                })
                .collect()
        });
        let run_id = format!(
            "{:x}-{:x}",
            Utc::now().timestamp_millis(),
            std::process::id()
        );
        Ok(WasmDecider {
            plugins,
            run_id,
            now,
            dry_run,
        })
    }
}

impl Decider for WasmDecider {
    fn decide(
        &self,
        policy: &Policy,
        findings: &[Finding],
    ) -> Result<Vec<Proposal>, PolicyFailure> {
        let plugin = match self.plugins.get(&policy.action) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(e.to_failure()),
            None => {
                return Err(PolicyFailure {
                    kind: engine_core::FailureKind::Load,
                    message: format!("plugin {:?} is not loaded", policy.action),
                });
            }
        };
        let invocation_id = format!("{}/{}", self.run_id, policy.name);
        let inv = Invocation {
            invocation_id: &invocation_id,
            policy,
            dry_run: self.dry_run,
            now: self.now,
        };
        let decision = plugin.decide(&inv, findings).map_err(|e| e.to_failure())?;
        tracing::info!(
            invocation = %invocation_id,
            plugin = %policy.action,
            findings = findings.len(),
            proposals = decision.proposals.len(),
            elapsed_us = decision.elapsed.as_micros() as u64,
            peak_memory_bytes = decision.peak_memory_bytes,
            "plugin decided"
        );
        Ok(decision.proposals)
    }
}
