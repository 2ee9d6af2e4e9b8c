//! Conversions between the domain types of `engine-core` and the WIT types.
//!
//! They live in the host, not in the SDK, so the contract can stay small and
//! stable while the domain types evolve.

use engine_core::finding::Credential;
use engine_core::plan::{ActionKind, Proposal};
use engine_core::Finding;

use crate::bindings::engine::plugin::types as wit;
use crate::limits;
use crate::Invocation;

pub(crate) fn context(inv: &Invocation<'_>) -> wit::Context {
    wit::Context {
        invocation_id: inv.invocation_id.to_string(),
        policy: inv.policy.name.clone(),
        rule: inv.policy.rule.as_str().to_string(),
        dry_run: inv.dry_run,
        now: inv.now.to_rfc3339(),
        params: inv
            .policy
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub(crate) fn finding(f: &Finding) -> wit::Finding {
    wit::Finding {
        user: f.user.clone(),
        arn: f.arn.clone(),
        credential: match f.credential {
            Credential::Password => wit::Credential::Password,
            Credential::AccessKey1 => wit::Credential::AccessKey1,
            Credential::AccessKey2 => wit::Credential::AccessKey2,
        },
        key_id: f.key_id.clone(),
        rule: f.rule.as_str().to_string(),
        timestamp: f.timestamp.to_rfc3339(),
        basis: f.basis.as_str().to_string(),
        age_days: f.age_days,
        threshold_days: f.threshold_days,
        reason: f.reason.clone(),
        exempt: f.exempt,
        protected: f.protected.is_some(),
    }
}

pub(crate) fn proposal(a: wit::Action) -> Proposal {
    let (kind, reason) = match a.kind {
        wit::ActionKind::DeleteAccessKey => (ActionKind::DeleteAccessKey, a.reason),
        wit::ActionKind::DeactivateAccessKey => (ActionKind::DeactivateAccessKey, a.reason),
        wit::ActionKind::DeleteLoginProfile => (ActionKind::DeleteLoginProfile, a.reason),
        wit::ActionKind::None(reason) => (ActionKind::None, Some(reason)),
    };
    Proposal {
        finding: a.finding,
        kind,
        reason: reason.map(|r| limits::truncate(r, limits::MAX_REASON_BYTES)),
    }
}
