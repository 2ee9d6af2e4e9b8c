//! From a validated policy set and a snapshot to a [`Plan`].
//!
//! `check`, `apply` and the daemon share this: evaluate the rules,
//! hand each policy's findings to its plugin, and let the host check every
//! request. They differ only in what they do with the plan.

use chrono::{DateTime, Utc};
use engine_core::plan::{Grants, Plan, PolicyFailure, PolicyPlan, Proposal, check_proposals};
use engine_core::policy::{Policy, PolicySet};
use engine_core::report::CredentialReport;
use engine_core::{Finding, rules};

/// Something that decides what to do about a policy's findings: the wasm
/// plugin runtime in production, anything in tests.
pub trait Decider {
    fn decide(&self, policy: &Policy, findings: &[Finding])
    -> Result<Vec<Proposal>, PolicyFailure>;
}

/// Evaluate every policy over the report.
pub fn findings(
    set: &PolicySet,
    report: &CredentialReport,
    now: DateTime<Utc>,
) -> Vec<(usize, Vec<Finding>)> {
    rules::evaluate_all(&set.policies, report, now)
        .into_iter()
        .enumerate()
        .collect()
}

/// Decide and check: one [`PolicyPlan`] per policy. A failing plugin fails
/// its own policy only.
pub fn plan(
    set: &PolicySet,
    evaluated: Vec<(usize, Vec<Finding>)>,
    now: DateTime<Utc>,
    decider: &dyn Decider,
    require_key_id: bool,
) -> Plan {
    let mut policies = Vec::with_capacity(evaluated.len());
    for (i, findings) in evaluated {
        let policy = &set.policies[i];
        let mut pp = PolicyPlan {
            policy: policy.name.clone(),
            rule: policy.rule,
            mode: policy.mode,
            plugin: policy.action.clone(),
            findings,
            actions: Vec::new(),
            refused: Vec::new(),
            failure: None,
        };
        if !pp.findings.is_empty() {
            let grants = Grants::of(set, policy, require_key_id);
            let result = decider
                .decide(policy, &pp.findings)
                .and_then(|proposals| check_proposals(&grants, &pp.findings, &proposals));
            match result {
                Ok((actions, refused)) => {
                    pp.actions = actions;
                    pp.refused = refused;
                }
                Err(failure) => {
                    tracing::error!(policy = %policy.name, plugin = %policy.action, "{failure}");
                    pp.failure = Some(failure);
                }
            }
        }
        policies.push(pp);
    }
    Plan { now, policies }
}
