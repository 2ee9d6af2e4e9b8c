//! Conversions between the domain types of `engine-core` and the WIT types.
//!
//! They live in the host, not in the SDK, so the contract can stay small and
//! stable while the domain types evolve.

use engine_core::Finding;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use engine_core::finding::{Basis, Credential};
use engine_core::plan::{ActionKind, Proposal};
use engine_core::policy::Rule;

use crate::Invocation;
use crate::bindings::engine::plugin::types as wit;
use crate::limits;

pub(crate) fn context(inv: &Invocation<'_>) -> wit::Context {
    wit::Context {
        invocation_id: inv.invocation_id.to_string(),
        policy: inv.policy.name.clone(),
        rule: rule(inv.policy.rule),
        dry_run: inv.dry_run,
        now: rfc3339(&inv.now),
        params: inv
            .policy
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn rule(r: Rule) -> wit::Rule {
    match r {
        Rule::Cis13 => wit::Rule::Cis13,
        Rule::Cis14 => wit::Rule::Cis14,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, as in the credential report); a
/// hand-rolled writer because this runs once per finding per call.
pub(crate) fn rfc3339(t: &DateTime<Utc>) -> String {
    let mut s = String::with_capacity(20);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    s
}

pub(crate) fn finding(f: &Finding) -> wit::Finding {
    wit::Finding {
        user: f.user.to_string(),
        arn: f.arn.to_string(),
        credential: match f.credential {
            Credential::Password => wit::Credential::Password,
            Credential::AccessKey1 => wit::Credential::AccessKey1,
            Credential::AccessKey2 => wit::Credential::AccessKey2,
        },
        key_id: f.key_id.clone(),
        rule: rule(f.rule),
        timestamp: rfc3339(&f.timestamp),
        basis: match f.basis {
            Basis::PasswordLastUsed => wit::Basis::PasswordLastUsed,
            Basis::PasswordLastChanged => wit::Basis::PasswordLastChanged,
            Basis::UserCreationTime => wit::Basis::UserCreationTime,
            Basis::KeyLastUsed => wit::Basis::KeyLastUsed,
            Basis::KeyLastRotated => wit::Basis::KeyLastRotated,
        },
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
