//! Joining the credential report with the account: key ids and the engine's own key.
//!
//! The credential report names access keys only by slot. Acting on a key
//! needs its id, so each slot is matched to the user's keys (`ListAccessKeys`)
//! by `CreateDate == last_rotated` to the second. Anything but exactly one
//! match leaves the key id unknown, and the host then refuses to act on it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::finding::{Credential, Finding, Protection};
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
        .filter(|f| f.credential.is_access_key() && &*f.user != ROOT_USER)
        .map(|f| f.user.to_string())
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
        report.rows.iter().map(|r| (&*r.user, r)).collect();
    let mut warnings = Vec::new();
    for f in findings.iter_mut() {
        let Some(slot) = f.credential.slot() else {
            continue;
        };
        if &*f.user == ROOT_USER {
            continue;
        }
        let Some(listed) = keys.get(&*f.user) else {
            continue;
        };
        let rotated = rows
            .get(&*f.user)
            .and_then(|r| r.access_keys[usize::from(slot) - 1].last_rotated.time());
        let Some(rotated) = rotated else { continue };
        let matches: Vec<&AccessKeyMeta> = listed
            .iter()
            .filter(|k| k.created.timestamp() == rotated.timestamp())
            .collect();
        match matches.as_slice() {
            [one] => f.key_id = Some(one.id.clone()),
            [] => warnings.push(format!(
                "{} {}: no access key was created at {} (the report's last_rotated); it was rotated or deleted since the report, so it is left alone",
                f.user,
                f.credential,
                rotated.to_rfc3339()
            )),
            many => warnings.push(format!(
                "{} {}: {} access keys were created at {}, cannot tell which is this slot; none is acted on",
                f.user,
                f.credential,
                many.len(),
                rotated.to_rfc3339()
            )),
        }
    }
    warnings
}

/// Mark the findings on the access key the engine runs with: reported, never acted on.
pub fn protect_own_key(findings: &mut [Finding], own_key_id: &str) -> usize {
    let mut n = 0;
    for f in findings.iter_mut() {
        if f.credential != Credential::Password && f.key_id.as_deref() == Some(own_key_id) {
            f.protected = Some(Protection::OwnKey);
            n += 1;
        }
    }
    n
}
