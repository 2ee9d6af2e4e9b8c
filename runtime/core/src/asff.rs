//! Findings as AWS Security Hub sees them (ASFF), and which ones a later run
//! resolves: pure, so what is imported is tested without AWS.
//!
//! Each finding gets an id stable across runs (account, rule, user and the
//! credential: the key id when known), so importing it again updates it. It
//! is FAILED with the control ids of the CIS benchmark versions and Security
//! Hub's own control (IAM.3 for rotation; IAM.8, or IAM.22 at 45 days or
//! less, for unused credentials), carries what the engine did about it, and
//! when a later run no longer finds it, an update resolves it: compliance
//! PASSED, record state ARCHIVED, workflow RESOLVED.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::finding::{Credential, Finding, Protection};
use crate::policy::Rule;

/// The ASFF `Types` of every finding: CIS checks.
pub const FINDING_TYPE: &str = "Software and Configuration Checks/Industry and Regulatory Standards/CIS AWS Foundations Benchmark";

/// Whether a finding still fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Failed,
    Passed,
}

/// One finding, ready to import (the adapter turns it into ASFF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// Stable: `engine/ACCOUNT/RULE/USER/CREDENTIAL`.
    pub id: String,
    pub account: String,
    /// `engine/POLICY`.
    pub generator: String,
    pub title: String,
    pub description: String,
    /// Security Hub's control: `IAM.3`, `IAM.8`, `IAM.22`.
    pub control: String,
    /// `CIS AWS Foundations Benchmark v1.2.0/1.4`, ...
    pub requirements: Vec<String>,
    /// The user's ARN.
    pub user_arn: String,
    /// The access key, for a key.
    pub key_id: Option<String>,
    /// What the engine did or would do.
    pub remediation: String,
    /// `engine/...` fields: policy, credential, action, outcome, exempt, protected.
    pub fields: BTreeMap<String, String>,
    pub status: Status,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Export {
    /// The update that resolves a finding no longer seen.
    pub fn resolved(&self, now: DateTime<Utc>) -> Export {
        let mut e = self.clone();
        e.status = Status::Passed;
        e.updated_at = now;
        e.remediation = format!(
            "{} Resolved: no longer found at {}.",
            self.remediation,
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        e
    }
}

/// Security Hub's control for a rule at a threshold.
pub fn control(rule: Rule, threshold_days: u32) -> &'static str {
    match rule {
        Rule::Cis14 => "IAM.3",
        Rule::Cis13 if threshold_days <= 45 => "IAM.22",
        Rule::Cis13 => "IAM.8",
    }
}

fn requirements(f: &Finding) -> Vec<String> {
    // The versions Security Hub has standards of, for each framework.
    f.controls()
        .iter()
        .flat_map(|c| {
            let versions: &[&str] = match c.framework.as_ref() {
                "CIS v1.2" => &["v1.2.0"],
                "CIS v1.4-v4.0" => &["v1.4.0", "v3.0.0"],
                "CIS v5.0" => &["v5.0.0"],
                _ => &[],
            };
            versions
                .iter()
                .map(move |v| format!("CIS AWS Foundations Benchmark {v}/{}", c.id))
        })
        .collect()
}

/// The stable id of a finding in `account`.
pub fn finding_id(account: &str, f: &Finding) -> String {
    let credential = match (&f.key_id, f.credential) {
        (Some(k), _) => k.clone(),
        (None, c) => c.as_str().to_string(),
    };
    format!(
        "engine/{account}/{}/{}/{credential}",
        f.rule.as_str(),
        f.user()
    )
}

/// What was done about a finding, for the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// `delete-access-key`, `deactivate-access-key`, `delete-login-profile`, `none`.
    pub action: String,
    /// `done`, `skipped`, `failed`, ... or `planned` (`mode = "report"`).
    pub outcome: String,
    pub detail: String,
}

/// The export of one account's findings at `now`. `taken` says, per
/// finding index, what was done; `first_seen` keeps an earlier import's
/// first sighting. Findings with the same id (two policies of one rule)
/// are exported once, the first with an action winning.
pub fn exports(
    account: &str,
    findings: &[Finding],
    taken: &BTreeMap<usize, Taken>,
    first_seen: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Export> {
    let mut out: BTreeMap<String, Export> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        // Only what breaks the rule now: an upcoming credential has not
        // failed yet, a key the engine deactivated passes (and an earlier
        // import of it is resolved).
        if f.stage != crate::finding::Stage::Due {
            continue;
        }
        let id = finding_id(account, f);
        let t = taken.get(&i);
        if out
            .get(&id)
            .is_some_and(|e| t.is_none() || e.fields.contains_key("engine/action"))
        {
            continue;
        }
        let what = match f.credential {
            Credential::Password => "console password".to_string(),
            c => format!(
                "access key {}",
                f.key_id.as_deref().unwrap_or(match c {
                    Credential::AccessKey1 => "1",
                    _ => "2",
                })
            ),
        };
        let title = match f.rule {
            Rule::Cis14 => format!(
                "IAM access key not rotated in {} days ({})",
                f.threshold_days,
                f.user()
            ),
            Rule::Cis13 => format!(
                "IAM credentials unused for {} days or more ({})",
                f.threshold_days,
                f.user()
            ),
        };
        let mut fields = BTreeMap::from([
            ("engine/policy".to_string(), f.policy.to_string()),
            ("engine/rule".to_string(), f.rule.as_str().to_string()),
            (
                "engine/credential".to_string(),
                f.credential.as_str().to_string(),
            ),
            ("engine/age_days".to_string(), f.age_days.to_string()),
        ]);
        if f.exempt {
            fields.insert("engine/exempt".into(), "true".into());
        }
        if let Some(p) = f.protected {
            fields.insert(
                "engine/protected".into(),
                match p {
                    Protection::Root => "root",
                    Protection::OwnKey => "own-key",
                    Protection::Declared => "declared",
                }
                .into(),
            );
        }
        let remediation = match (t, f.exempt, f.protected) {
            (Some(t), _, _) => {
                fields.insert("engine/action".into(), t.action.clone());
                fields.insert("engine/outcome".into(), t.outcome.clone());
                let mut s = format!(
                    "engine policy {}: {} of {what}: {}",
                    f.policy, t.action, t.outcome
                );
                if !t.detail.is_empty() {
                    s.push_str(&format!(" ({})", t.detail));
                }
                s.push('.');
                s
            }
            (None, true, _) => format!("engine policy {}: exempt, left alone.", f.policy),
            (None, _, Some(_)) => {
                format!("engine policy {}: protected, never remediated.", f.policy)
            }
            (None, _, None) => format!("engine policy {}: no action.", f.policy),
        };
        out.insert(
            id.clone(),
            Export {
                first_seen: first_seen.get(&id).copied().unwrap_or(now),
                id,
                account: account.to_string(),
                generator: format!("engine/{}", f.policy),
                title,
                description: f.reason(),
                control: control(f.rule, f.threshold_days).to_string(),
                requirements: requirements(f),
                user_arn: f.arn().to_string(),
                key_id: f.key_id.clone(),
                remediation,
                fields,
                status: Status::Failed,
                updated_at: now,
            },
        );
    }
    out.into_values().collect()
}

/// The findings imported before (`previous`, by id) that `current` no
/// longer has: their resolving updates.
pub fn gone(
    previous: &BTreeMap<String, Export>,
    current: &[Export],
    now: DateTime<Utc>,
) -> Vec<Export> {
    previous
        .iter()
        .filter(|(id, e)| e.status == Status::Failed && !current.iter().any(|c| &c.id == *id))
        .map(|(_, e)| e.resolved(now))
        .collect()
}
