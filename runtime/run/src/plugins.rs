//! The production [`Decider`]: each policy's plugin, run in the wasm sandbox.
//!
//! Every plugin a policy set uses is compiled once, up front; a plugin that
//! fails to load fails only the policies that use it.
//!
//! A plugin is given exactly the same invocation under `engine check` and
//! `engine apply`: its context does not say which (its `dry-run` is always
//! false) and its invocation id is derived from what it is given (policy,
//! `now`, findings), not from the clock, the process or the mode. So `check`
//! shows what the plugin will ask for under `apply`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engine_core::Finding;
use engine_core::plan::{PolicyFailure, Proposal};
use engine_core::policy::{Policy, PolicySet};
use engine_wasm::{Host, Invocation, Plugin, PluginError};

use crate::pipeline::Decider;

pub struct WasmDecider {
    plugins: BTreeMap<String, Result<Plugin, PluginError>>,
    now: DateTime<Utc>,
}

impl WasmDecider {
    /// Compile the plugins of `set`. `_dry_run` (check or apply) is not
    /// passed to the plugins: they must decide the same way in both.
    pub fn new(set: &PolicySet, now: DateTime<Utc>, _dry_run: bool) -> Result<WasmDecider, String> {
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
        Ok(WasmDecider { plugins, now })
    }

    /// What a policy's plugin is given for `findings`: the same in every mode.
    fn invocation<'a>(&self, policy: &'a Policy, findings: &[Finding]) -> Invocation<'a> {
        Invocation::new(policy, self.now, findings)
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
        let inv = self.invocation(policy, findings);
        let decision = plugin.decide(&inv, findings).map_err(|e| e.to_failure())?;
        tracing::info!(
            invocation = %inv.invocation_id,
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::TimeZone;
    use engine_core::finding::{Basis, Credential};
    use engine_core::policy::{self, Rule};

    use super::*;

    fn set() -> PolicySet {
        policy::validate(vec![policy::PolicyFile {
            path: PathBuf::from("test.toml"),
            text: "[policy.old-keys]\nrule = \"cis-1.4\"\nparams = { k = \"v\" }\n".into(),
        }])
        .unwrap_or_else(|e| panic!("{}", e.render_plain()))
    }

    fn finding(user: &str, age_days: i64) -> Finding {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single();
        let now = now.unwrap_or_default();
        Finding {
            policy: "old-keys".into(),
            rule: Rule::Cis14,
            user: user.into(),
            arn: format!("arn:aws:iam::123456789012:user/{user}").into(),
            credential: Credential::AccessKey1,
            key_id: None,
            timestamp: now - chrono::Duration::days(age_days),
            basis: Basis::KeyLastRotated,
            age_days,
            threshold_days: 90,
            reason: format!("{age_days} days old"),
            controls: Default::default(),
            exempt: false,
            protected: None,
            user_created: None,
            credential_created: None,
        }
    }

    #[test]
    fn check_and_apply_give_plugins_byte_identical_context() {
        let set = set();
        let now = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let check = WasmDecider::new(&set, now, true).expect("check decider");
        // A later process (other pid, other clock) in apply mode.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let apply = WasmDecider::new(&set, now, false).expect("apply decider");
        let policy = &set.policies[0];
        let findings = [finding("alice", 120), finding("bob", 200)];
        let (c, a) = (
            check.invocation(policy, &findings),
            apply.invocation(policy, &findings),
        );
        assert_eq!(c.invocation_id, a.invocation_id);
        let (ct, at) = (engine_wasm::context_text(&c), engine_wasm::context_text(&a));
        assert_eq!(ct, at);
        assert!(ct.contains("dry-run: false"), "{ct}");
        assert!(ct.contains(&c.invocation_id), "{ct}");
        // The id follows what the plugin is given.
        let other = check.invocation(policy, &findings[..1]);
        assert_ne!(other.invocation_id, c.invocation_id);
        assert!(
            c.invocation_id.starts_with("old-keys/"),
            "{}",
            c.invocation_id
        );
    }
}
