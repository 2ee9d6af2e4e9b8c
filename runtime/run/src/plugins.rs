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
pub use engine_wasm::cache::Cache;
use engine_wasm::{Host, Invocation, Plugin, PluginError};

use crate::pipeline::Decider;

/// Told about every plugin call (the daemon's metrics).
pub trait PluginObserver: Send + Sync {
    /// A call for `policy` that returned a decision: how long it took and
    /// the most memory the plugin held.
    fn called(
        &self,
        policy: &str,
        plugin: &str,
        elapsed: std::time::Duration,
        peak_memory_bytes: usize,
    );
    /// A load or call that failed, by kind (`load`, `trap`, `timeout`, ...).
    fn failed(&self, plugin: &str, kind: &str);
}

/// The plugins of a policy set, compiled once: `check` and `apply` load
/// them per run; the daemon loads them when it (re)loads its configuration
/// and uses them for every run until the next reload.
pub struct Plugins {
    plugins: BTreeMap<String, Result<Plugin, PluginError>>,
}

impl Plugins {
    /// Compile the plugins of `set` (the builtins come precompiled; external
    /// ones from `cache` when it has them). A plugin that fails to load is
    /// kept as its error: it fails the policies that use it, not the others.
    pub fn load(set: &PolicySet, cache: Option<&Cache>) -> Result<Plugins, String> {
        let mut host = Host::new().map_err(|e| format!("cannot start the plugin runtime: {e}"))?;
        if let Some(cache) = cache {
            host = host.with_cache(cache.clone());
        }
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
        Ok(Plugins { plugins })
    }

    /// The plugins that failed to load.
    pub fn errors(&self) -> impl Iterator<Item = &PluginError> {
        self.plugins.values().filter_map(|p| p.as_ref().err())
    }

    /// A decider over these plugins for a run evaluated at `now`.
    pub fn decider(&self, now: DateTime<Utc>) -> WasmDecider<'_> {
        WasmDecider {
            plugins: self,
            now,
            observer: None,
        }
    }
}

/// Most findings handed to a plugin in one call; more are handed over in
/// consecutive slices, one call each.
pub const CHUNK: usize = 5_000;

/// The production decider: a run's view of the loaded plugins.
pub struct WasmDecider<'a> {
    plugins: &'a Plugins,
    now: DateTime<Utc>,
    observer: Option<&'a dyn PluginObserver>,
}

impl<'a> WasmDecider<'a> {
    /// Report every call to `observer`.
    pub fn observed(mut self, observer: &'a dyn PluginObserver) -> WasmDecider<'a> {
        self.observer = Some(observer);
        self
    }

    /// What a policy's plugin is given for `findings`: the same in every mode.
    fn invocation<'p>(&self, policy: &'p Policy, findings: &[Finding]) -> Invocation<'p> {
        Invocation::new(policy, self.now, findings)
    }
}

impl Decider for WasmDecider<'_> {
    fn decide(
        &self,
        policy: &Policy,
        findings: &[Finding],
    ) -> Result<Vec<Proposal>, PolicyFailure> {
        let failed = |kind: engine_core::FailureKind| {
            if let Some(o) = self.observer {
                o.failed(&policy.action, kind.as_str());
            }
        };
        let plugin = match self.plugins.plugins.get(&policy.action) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                failed(e.kind());
                return Err(e.to_failure());
            }
            None => {
                return Err(PolicyFailure {
                    kind: engine_core::FailureKind::Load,
                    message: format!("plugin {:?} is not loaded", policy.action),
                });
            }
        };
        // A plugin of a contract without stages (0.1.0) is given only the
        // findings that are due; its answer's indices are mapped back.
        let staged = plugin.sees_stages();
        let subset: Vec<Finding>;
        let mut positions: Vec<u32> = Vec::new();
        let given: &[Finding] = if staged {
            findings
        } else {
            subset = findings
                .iter()
                .zip(0u32..)
                .filter(|(f, _)| f.stage == engine_core::Stage::Due)
                .map(|(f, i)| {
                    positions.push(i);
                    f.clone()
                })
                .collect();
            &subset
        };
        // Large accounts: the findings are handed over in slices of at most
        // CHUNK, each its own call (a plugin decides per finding; its memory
        // holds one slice, not hundreds of thousands of findings).
        let mut proposals = Vec::new();
        for (n, slice) in given.chunks(CHUNK).enumerate() {
            let offset = u32::try_from(n * CHUNK).unwrap_or(u32::MAX);
            let inv = self.invocation(policy, slice);
            let decision = plugin.decide(&inv, slice).map_err(|e| {
                failed(e.kind());
                e.to_failure()
            })?;
            if let Some(o) = self.observer {
                o.called(
                    &policy.name,
                    &policy.action,
                    decision.elapsed,
                    decision.peak_memory_bytes,
                );
            }
            tracing::info!(
                invocation = %inv.invocation_id,
                plugin = %policy.action,
                findings = slice.len(),
                proposals = decision.proposals.len(),
                elapsed_us = decision.elapsed.as_micros() as u64,
                peak_memory_bytes = decision.peak_memory_bytes,
                "plugin decided"
            );
            proposals.extend(decision.proposals.into_iter().map(|mut p| {
                // Out of range stays out of range: the host check refuses it.
                let i = if (p.finding as usize) < slice.len() {
                    p.finding.saturating_add(offset)
                } else {
                    u32::MAX
                };
                p.finding = if staged {
                    i
                } else {
                    positions.get(i as usize).copied().unwrap_or(u32::MAX)
                };
                p
            }));
        }
        Ok(proposals)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::TimeZone;
    use engine_core::UserNames;
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
            account: None,
            policy: "old-keys".into(),
            rule: Rule::Cis14,
            names: UserNames::new(user, &format!("arn:aws:iam::123456789012:user/{user}")),
            credential: Credential::AccessKey1,
            key_id: None,
            timestamp: now - chrono::Duration::days(age_days),
            basis: Basis::KeyLastRotated,
            age_days,
            threshold_days: 90,
            exempt: false,
            protected: None,
            user_created: None,
            credential_created: None,
            stage: Default::default(),
            deactivated_at: None,
        }
    }

    #[test]
    fn check_and_apply_give_plugins_byte_identical_context() {
        let set = set();
        let now = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let check = Plugins::load(&set, None).expect("check plugins");
        let check = check.decider(now);
        // A later process (other pid, other clock) in apply mode.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let apply = Plugins::load(&set, None).expect("apply plugins");
        let apply = apply.decider(now);
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

    #[test]
    fn many_findings_are_handed_over_in_slices_and_mapped_back() {
        let set = set();
        let now = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let plugins = Plugins::load(&set, None).expect("plugins");
        let decider = plugins.decider(now);
        let policy = &set.policies[0];
        // Over two slices and a part, every third one exempt.
        let n = 2 * CHUNK + 1234;
        let findings: Vec<Finding> = (0..n)
            .map(|i| {
                let mut f = finding(&format!("user-{i}"), 120);
                f.exempt = i % 3 == 0;
                f
            })
            .collect();
        let proposals = decider.decide(policy, &findings).expect("decides");
        assert_eq!(proposals.len(), n);
        for (i, p) in proposals.iter().enumerate() {
            assert_eq!(p.finding as usize, i);
            let expected = if i % 3 == 0 {
                engine_core::ActionKind::None
            } else {
                engine_core::ActionKind::DeleteAccessKey
            };
            assert_eq!(p.kind, expected, "finding {i}");
        }
    }
}
