//! CIS rules 1.3 and 1.4, evaluated over a credential report.
//!
//! The semantics (README, "Rule semantics"): times in UTC, age is
//! `now - timestamp`, cis-1.4 flags keys *more than* N days old, cis-1.3 flags
//! credentials unused for *at least* N days. `now` is a parameter, so the
//! clock is injected and tests are exact to the second.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Utc};

use crate::finding::{Basis, Control, Credential, Finding, Protection, Stage};
use crate::policy::{Policy, Rule};
use crate::report::{CredentialReport, CredentialRow, Flag, Stamp};

const CIS_1_3: &[Control] = &[
    Control {
        framework: Cow::Borrowed("CIS v1.2"),
        id: Cow::Borrowed("1.3"),
    },
    Control {
        framework: Cow::Borrowed("CIS v1.4-v4.0"),
        id: Cow::Borrowed("1.12"),
    },
    Control {
        framework: Cow::Borrowed("CIS v5.0"),
        id: Cow::Borrowed("1.11"),
    },
    Control {
        framework: Cow::Borrowed("Security Hub"),
        id: Cow::Borrowed("IAM.8"),
    },
    Control {
        framework: Cow::Borrowed("Security Hub"),
        id: Cow::Borrowed("IAM.22"),
    },
];

const CIS_1_4: &[Control] = &[
    Control {
        framework: Cow::Borrowed("CIS v1.2"),
        id: Cow::Borrowed("1.4"),
    },
    Control {
        framework: Cow::Borrowed("CIS v1.4-v4.0"),
        id: Cow::Borrowed("1.14"),
    },
    Control {
        framework: Cow::Borrowed("CIS v5.0"),
        id: Cow::Borrowed("1.13"),
    },
    Control {
        framework: Cow::Borrowed("Security Hub"),
        id: Cow::Borrowed("IAM.3"),
    },
];

/// The benchmark controls a rule maps to.
pub fn controls(rule: Rule) -> &'static [Control] {
    match rule {
        Rule::Cis13 => CIS_1_3,
        Rule::Cis14 => CIS_1_4,
    }
}

/// A finding's one line for humans, from its fields.
pub fn reason(f: &Finding) -> String {
    let what = match f.credential {
        Credential::Password => "password",
        Credential::AccessKey1 => "access key 1",
        Credential::AccessKey2 => "access key 2",
    };
    let (verb, bound) = match (f.rule, f.basis) {
        (Rule::Cis14, _) => ("last rotated", "more than"),
        (_, Basis::PasswordLastUsed | Basis::KeyLastUsed) => ("last used", "at least"),
        (_, Basis::PasswordLastChanged) => ("never used, set", "at least"),
        (_, Basis::UserCreationTime) => ("never used, user created", "at least"),
        (_, Basis::KeyLastRotated) => ("never used, created", "at least"),
    };
    let mut reason = String::with_capacity(96);
    let _ = write!(
        reason,
        "{what} {verb} {}, {} days ago",
        f.timestamp.date_naive(),
        f.age_days,
    );
    let _ = match f.stage {
        Stage::Due => write!(reason, " ({bound} {})", f.threshold_days),
        Stage::Upcoming => write!(
            reason,
            " ({bound} {} on {})",
            f.threshold_days,
            f.due_at().date_naive()
        ),
        Stage::Deactivated => write!(
            reason,
            " ({bound} {}; deactivated by the engine{})",
            f.threshold_days,
            f.deactivated_at
                .map(|t| format!(" on {}", t.date_naive()))
                .unwrap_or_default()
        ),
    };
    reason
}

/// Evaluate one policy over a report.
pub fn evaluate(policy: &Policy, report: &CredentialReport, now: DateTime<Utc>) -> Vec<Finding> {
    evaluate_all(std::slice::from_ref(policy), report, now)
        .pop()
        .unwrap_or_default()
}

/// Evaluate every policy over a report, in one pass over its rows: the
/// findings of `policies[i]` are the `i`th list.
pub fn evaluate_all(
    policies: &[Policy],
    report: &CredentialReport,
    now: DateTime<Utc>,
) -> Vec<Vec<Finding>> {
    let cutoffs: Vec<Cutoffs> = policies.iter().map(|p| Cutoffs::new(p, now)).collect();
    // Room for every credential a rule looks at, so a report where most
    // are findings never copies them as the lists grow. Pages never written
    // are never touched; the room left is returned to the allocator below.
    // (IAM allows 5,000 users per account: a few MB of address space; a
    // generated 100,000-user report asks for 46 MB per cis-1.3 policy.)
    let mut out: Vec<Vec<Finding>> = policies
        .iter()
        .map(|p| crate::memory::with_capacity(report.rows.len() * p.rule.slots()))
        .collect();
    for row in &report.rows {
        for ((policy, cutoffs), out) in policies.iter().zip(&cutoffs).zip(&mut out) {
            evaluate_with(policy, cutoffs, row, now, out);
        }
    }
    for findings in &mut out {
        findings.shrink_to_fit();
    }
    out
}

/// Evaluate one policy over one row, appending its findings.
pub fn evaluate_row(
    policy: &Policy,
    row: &CredentialRow,
    now: DateTime<Utc>,
    out: &mut Vec<Finding>,
) {
    evaluate_with(policy, &Cutoffs::new(policy, now), row, now, out);
}

/// A policy's thresholds as instants: a credential whose timestamp is
/// before (cis-1.4) or at or before (cis-1.3) `due` is due, the same
/// comparison against `upcoming` makes it upcoming. Comparing instants is
/// the same as comparing `now - timestamp` with the threshold, without
/// computing an age for every credential that is not a finding.
struct Cutoffs {
    due: Option<DateTime<Utc>>,
    upcoming: Option<DateTime<Utc>>,
}

impl Cutoffs {
    fn new(policy: &Policy, now: DateTime<Utc>) -> Cutoffs {
        let limit = TimeDelta::days(i64::from(policy.threshold_days()));
        // Upcoming: due within warn_before_days (the same comparison, that
        // much earlier); nothing when it is 0.
        let warn = (policy.warn_before_days > 0)
            .then(|| limit - TimeDelta::days(i64::from(policy.warn_before_days)));
        Cutoffs {
            due: now.checked_sub_signed(limit),
            upcoming: warn.and_then(|w| now.checked_sub_signed(w)),
        }
    }
}

fn evaluate_with(
    policy: &Policy,
    cutoffs: &Cutoffs,
    row: &CredentialRow,
    now: DateTime<Utc>,
    out: &mut Vec<Finding>,
) {
    // age > limit is at < now - limit; age >= limit is at <= now - limit.
    // A cutoff before the first representable instant is never reached.
    let past = |at: DateTime<Utc>, cutoff: Option<DateTime<Utc>>| {
        cutoff.is_some_and(|c| match policy.rule {
            Rule::Cis14 => at < c,
            Rule::Cis13 => at <= c,
        })
    };
    // Exemption is a property of the row: match the patterns at most once.
    let mut exempt = None;
    let mut hit = |credential: Credential, at: DateTime<Utc>, basis: Basis| {
        let stage = if past(at, cutoffs.due) {
            Stage::Due
        } else if past(at, cutoffs.upcoming) {
            Stage::Upcoming
        } else {
            return;
        };
        let exempt = *exempt.get_or_insert_with(|| !row.is_root() && policy.is_exempt(row.user()));
        let mut f = finding(policy, row, credential, at, basis, now - at, exempt);
        f.stage = stage;
        out.push(f);
    };
    match policy.rule {
        Rule::Cis14 => {
            for (credential, key) in key_slots(row) {
                if let (true, Some(at)) = (key.active, key.last_rotated.time()) {
                    hit(credential, at, Basis::KeyLastRotated);
                }
            }
        }
        Rule::Cis13 => {
            if let Some((at, basis)) = password_reference(row) {
                hit(Credential::Password, at, basis);
            }
            for (credential, key) in key_slots(row) {
                if !key.active {
                    continue;
                }
                let reference = match key.last_used_date {
                    Stamp::At(t) => Some((t, Basis::KeyLastUsed)),
                    _ => key.last_rotated.time().map(|t| (t, Basis::KeyLastRotated)),
                };
                if let Some((at, basis)) = reference {
                    hit(credential, at, basis);
                }
            }
        }
    }
}

/// The inactive access keys of `row`, as findings of stage `deactivated`
/// for `policy` (age from `last_rotated`), their key ids not yet known:
/// candidates for the keys the engine deactivated under the policy
/// (`follow_deactivated`); [`crate::snapshot::follow_deactivated`] keeps
/// those its journal names.
pub fn inactive_keys(policy: &Policy, row: &CredentialRow, now: DateTime<Utc>) -> Vec<Finding> {
    let exempt = !row.is_root() && policy.is_exempt(row.user());
    key_slots(row)
        .into_iter()
        .filter(|(_, key)| !key.active)
        .filter_map(|(credential, key)| {
            let at = key.last_rotated.time()?;
            let mut f = finding(
                policy,
                row,
                credential,
                at,
                Basis::KeyLastRotated,
                now - at,
                exempt,
            );
            f.stage = Stage::Deactivated;
            Some(f)
        })
        .collect()
}

fn key_slots(row: &CredentialRow) -> [(Credential, &crate::report::AccessKey); 2] {
    [
        (Credential::AccessKey1, &row.access_keys[0]),
        (Credential::AccessKey2, &row.access_keys[1]),
    ]
}

/// The time a password's disuse is measured from, if the password is enabled.
///
/// `password_last_used`, or when it was never used, `password_last_changed`,
/// or when that is absent too, `user_creation_time`. The root row says
/// `not_supported` for `password_enabled`: root always has a password.
fn password_reference(row: &CredentialRow) -> Option<(DateTime<Utc>, Basis)> {
    let enabled = match row.password_enabled {
        Flag::True => true,
        Flag::False => false,
        Flag::NotSupported => row.is_root(),
    };
    if !enabled {
        return None;
    }
    if let Stamp::At(t) = row.password_last_used {
        return Some((t, Basis::PasswordLastUsed));
    }
    if let Stamp::At(t) = row.password_last_changed {
        return Some((t, Basis::PasswordLastChanged));
    }
    row.user_creation_time
        .time()
        .map(|t| (t, Basis::UserCreationTime))
}

fn finding(
    policy: &Policy,
    row: &CredentialRow,
    credential: Credential,
    at: DateTime<Utc>,
    basis: Basis,
    age: TimeDelta,
    exempt: bool,
) -> Finding {
    let threshold = policy.threshold_days();
    let age_days = age.num_days();
    Finding {
        account: None,
        policy: policy.shared_name(),
        rule: policy.rule,
        names: row.names.clone(),
        credential,
        key_id: None,
        timestamp: at,
        basis,
        age_days,
        threshold_days: threshold,
        exempt,
        protected: row.is_root().then_some(Protection::Root),
        user_created: row.user_creation_time.time(),
        credential_created: match credential.slot() {
            None => row.password_last_changed.time(),
            Some(slot) => row.access_keys[usize::from(slot) - 1].last_rotated.time(),
        },
        stage: Stage::Due,
        deactivated_at: None,
    }
}
