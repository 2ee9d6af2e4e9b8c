//! Joining the credential report with the account: key ids and the engine's own key.
//!
//! The credential report names access keys only by slot. Acting on a key
//! needs its id, so each slot is matched to the user's keys (`ListAccessKeys`)
//! by `CreateDate == last_rotated` to the second. Anything but exactly one
//! match leaves the key id unknown, and the host then refuses to act on it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::finding::{Finding, Protection, Stage};
use crate::report::{CredentialReport, ROOT_USER};

/// One access key as `ListAccessKeys` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyMeta {
    pub id: String,
    pub active: bool,
    pub created: DateTime<Utc>,
}

/// The users whose key ids must be looked up: every non-root user with an
/// access-key finding, each once, in order.
pub fn users_needing_key_ids(findings: &[Finding]) -> Vec<String> {
    let mut users: Vec<String> = findings
        .iter()
        .filter(|f| f.credential.is_access_key() && f.user() != ROOT_USER)
        .map(|f| f.user().to_string())
        .collect();
    users.sort();
    users.dedup();
    users
}

/// Fill in `key_id` of every access-key finding whose slot matches exactly
/// one of the user's keys. Returns one warning per key left unresolved.
pub fn resolve_key_ids(
    findings: &mut [Finding],
    report: &CredentialReport,
    keys: &BTreeMap<String, Vec<AccessKeyMeta>>,
) -> Vec<String> {
    let rows: BTreeMap<&str, &crate::report::CredentialRow> =
        report.rows.iter().map(|r| (r.user(), r)).collect();
    let mut warnings = Vec::new();
    for f in findings.iter_mut() {
        let Some(slot) = f.credential.slot() else {
            continue;
        };
        if f.user() == ROOT_USER {
            continue;
        }
        let Some(listed) = keys.get(f.user()) else {
            continue;
        };
        let rotated = rows
            .get(f.user())
            .and_then(|r| r.access_keys[usize::from(slot) - 1].last_rotated.time());
        let Some(rotated) = rotated else { continue };
        // Twin slots: both keys of the report share one `last_rotated` second.
        // Which listed key is which slot cannot be told, even when only one
        // is listed now (the other was deleted since): that one may be the
        // twin in daily use.
        let other = rows
            .get(f.user())
            .and_then(|r| r.access_keys[2 - usize::from(slot)].last_rotated.time());
        if other.is_some_and(|o| o.timestamp() == rotated.timestamp()) {
            warnings.push(format!(
                "{} {}: both access key slots of the report were created at {}, so which key is this slot cannot be told; neither is acted on",
                f.user(),
                f.credential,
                rotated.to_rfc3339()
            ));
            continue;
        }
        let matches: Vec<&AccessKeyMeta> = listed
            .iter()
            .filter(|k| k.created.timestamp() == rotated.timestamp())
            .collect();
        match matches.as_slice() {
            [one] => f.key_id = Some(one.id.clone()),
            [] => warnings.push(format!(
                "{} {}: no access key was created at {} (the report's last_rotated); it was rotated or deleted since the report, so it is left alone",
                f.user(),
                f.credential,
                rotated.to_rfc3339()
            )),
            many => warnings.push(format!(
                "{} {}: {} access keys were created at {}, cannot tell which is this slot; none is acted on",
                f.user(),
                f.credential,
                many.len(),
                rotated.to_rfc3339()
            )),
        }
    }
    warnings
}

/// The engine's own credentials, as far as it can tell who it runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Own {
    /// The access key id in use.
    pub key_id: Option<String>,
    /// The IAM user the engine runs as (`None` under an assumed role).
    pub user: Option<String>,
}

impl Own {
    /// From `GetCallerIdentity`'s ARN and the key in use. An IAM user's ARN is
    /// `arn:PARTITION:iam::ACCOUNT:user/PATH/NAME`; anything else (an assumed
    /// role, a federated user) has no IAM user whose keys could be told apart.
    pub fn from_arn(arn: &str, key_id: &str) -> Own {
        let user = arn
            .split(':')
            .nth(5)
            .filter(|_| arn.split(':').nth(2) == Some("iam"))
            .and_then(|resource| resource.strip_prefix("user/"))
            .and_then(|path| path.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_string);
        Own {
            key_id: Some(key_id.to_string()).filter(|k| !k.is_empty()),
            user,
        }
    }
}

/// Mark the findings the engine must never act on: every access key of the
/// user it runs as (IAM user names compare case-insensitively), the key it
/// runs with, and the keys the policy lists in `protect_access_keys`.
/// Returns how many findings were marked.
pub fn protect(findings: &mut [Finding], own: &Own, declared: &[String]) -> usize {
    let mut n = 0;
    for f in findings.iter_mut() {
        if !f.credential.is_access_key() || f.protected == Some(Protection::Root) {
            continue;
        }
        let own_user = own
            .user
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(f.user()));
        let own_key = f.key_id.is_some() && f.key_id == own.key_id;
        let listed = f
            .key_id
            .as_deref()
            .is_some_and(|k| declared.iter().any(|d| d.eq_ignore_ascii_case(k)));
        let protection = if own_user || own_key {
            Some(Protection::OwnKey)
        } else if listed {
            Some(Protection::Declared)
        } else {
            None
        };
        if protection.is_some() {
            f.protected = protection;
            n += 1;
        }
    }
    n
}

/// An access key the engine deactivated (from its journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    pub user: String,
    /// The policy it was deactivated under.
    pub policy: String,
    pub at: DateTime<Utc>,
}

/// The keys the engine deactivated and did not delete since, by key id.
pub type Deactivations = BTreeMap<String, Deactivation>;

/// The users whose inactive keys a `follow_deactivated` policy may see
/// again: those with a key the engine deactivated under it.
pub fn followed_users<'a>(deactivated: &'a Deactivations, policy: &str) -> BTreeSet<&'a str> {
    deactivated
        .values()
        .filter(|d| d.policy == policy)
        .map(|d| d.user.as_str())
        .collect()
}

/// After key-id resolution: keep the `deactivated` candidates whose key the
/// journal says the engine deactivated under `policy` (drop the others: an
/// inactive key someone else turned off is no finding), and give every
/// finding on such a key its `deactivated_at`.
pub fn follow_deactivated(findings: &mut Vec<Finding>, deactivated: &Deactivations, policy: &str) {
    findings.retain(|f| {
        f.stage != Stage::Deactivated
            || f.key_id
                .as_ref()
                .and_then(|k| deactivated.get(k))
                .is_some_and(|d| d.policy == policy)
    });
    for f in findings.iter_mut() {
        if let Some(d) = f.key_id.as_ref().and_then(|k| deactivated.get(k)) {
            f.deactivated_at = Some(d.at);
        }
    }
}
