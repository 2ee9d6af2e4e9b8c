//! Findings: what a rule says about one credential of one user.
//!
//! A finding is the unit everything downstream works on: plugins see a list
//! of them and answer by index, the plan refers to them, the journal stores them.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::name::UserNames;
use crate::policy::Rule;

/// Which credential of a user a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// The console password (login profile).
    Password,
    /// Access key slot 1 of the credential report.
    #[serde(rename = "access_key_1")]
    AccessKey1,
    /// Access key slot 2 of the credential report.
    #[serde(rename = "access_key_2")]
    AccessKey2,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::AccessKey1 => "access_key_1",
            Credential::AccessKey2 => "access_key_2",
        }
    }

    pub fn is_access_key(self) -> bool {
        !matches!(self, Credential::Password)
    }

    /// The key slot (1 or 2), if this is an access key.
    pub fn slot(self) -> Option<u8> {
        match self {
            Credential::Password => None,
            Credential::AccessKey1 => Some(1),
            Credential::AccessKey2 => Some(2),
        }
    }
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which report field the finding's timestamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    PasswordLastUsed,
    PasswordLastChanged,
    UserCreationTime,
    KeyLastUsed,
    KeyLastRotated,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::PasswordLastUsed => "password_last_used",
            Basis::PasswordLastChanged => "password_last_changed",
            Basis::UserCreationTime => "user_creation_time",
            Basis::KeyLastUsed => "last_used_date",
            Basis::KeyLastRotated => "last_rotated",
        }
    }
}

/// One control id of a benchmark that a finding maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The framework and version, e.g. `"CIS v1.2"` or `"Security Hub"`.
    pub framework: Cow<'static, str>,
    /// The control id inside it, e.g. `"1.4"` or `"IAM.3"`.
    pub id: Cow<'static, str>,
}

/// Why a finding can never be acted on, whatever a plugin asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    /// The `<root_account>` row: reported, never remediated.
    Root,
    /// The engine's own credentials: the access key it runs with, or any key
    /// of the IAM user it runs as.
    OwnKey,
    /// A key id listed in the policy's `protect_access_keys`.
    Declared,
}

/// Where a finding stands against its policy's threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Past the threshold: the rule's finding.
    #[default]
    Due,
    /// Crosses the threshold within the policy's `warn_before_days`: shown
    /// and given to plugins (so they can warn its owner), never acted on.
    Upcoming,
    /// An access key the engine deactivated earlier and still inactive: no
    /// longer counted by the rule, kept before the policy that deactivated
    /// it so its plugin can delete it after a grace period.
    Deactivated,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Due => "due",
            Stage::Upcoming => "upcoming",
            Stage::Deactivated => "deactivated",
        }
    }
}

/// A credential that breaks a rule of a policy.
///
/// Its `reason` and `controls` follow from the other fields, so they are
/// made when asked for ([`Finding::reason`], [`Finding::controls`]) and
/// when written out, not stored: a report of 100,000 users has hundreds of
/// thousands of findings, most of which nobody reads one by one. Read back,
/// the JSON's `reason` and `controls` are ignored and derived again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FindingIn")]
pub struct Finding {
    /// The account the credential is in (a live account); absent for a
    /// report file.
    pub account: Option<Arc<str>>,
    pub policy: Arc<str>,
    pub rule: Rule,
    /// The user's name and ARN ([`Finding::user`], [`Finding::arn`]),
    /// shared with the report row: a finding costs no copy of them.
    pub names: UserNames,
    pub credential: Credential,
    /// The access key id, once resolved against the account (`None` from a report file).
    pub key_id: Option<String>,
    /// The timestamp the age was computed from.
    pub timestamp: DateTime<Utc>,
    /// The report field that timestamp came from.
    pub basis: Basis,
    /// Whole days between `timestamp` and `now`.
    pub age_days: i64,
    pub threshold_days: u32,
    /// The user matches the policy's `exempt_users`: visible, never acted on.
    pub exempt: bool,
    /// Set when the finding may never be remediated (root, the engine's own key).
    pub protected: Option<Protection>,
    /// The report's `user_creation_time`: the user's identity. Before a write,
    /// the user must still have been created then (not deleted and re-created).
    pub user_created: Option<DateTime<Utc>>,
    /// When the report says the credential was created: a key's
    /// `last_rotated`, a password's `password_last_changed`. Before a write,
    /// the credential must not be newer than this (not replaced since).
    pub credential_created: Option<DateTime<Utc>>,
    /// Where it stands: due (past the threshold), upcoming, or deactivated
    /// by the engine and pending deletion.
    pub stage: Stage,
    /// When the engine deactivated this access key (from its journal), if
    /// it did; the key may have been reactivated since.
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// A finding as read back from JSON: its names as strings (`reason`,
/// `controls` and `due_at` are derived, so ignored).
#[derive(Deserialize)]
struct FindingIn {
    #[serde(default)]
    account: Option<Arc<str>>,
    policy: Arc<str>,
    rule: Rule,
    user: String,
    arn: String,
    credential: Credential,
    key_id: Option<String>,
    timestamp: DateTime<Utc>,
    basis: Basis,
    age_days: i64,
    threshold_days: u32,
    exempt: bool,
    protected: Option<Protection>,
    #[serde(default)]
    user_created: Option<DateTime<Utc>>,
    #[serde(default)]
    credential_created: Option<DateTime<Utc>>,
    #[serde(default)]
    stage: Stage,
    #[serde(default)]
    deactivated_at: Option<DateTime<Utc>>,
}

impl TryFrom<FindingIn> for Finding {
    type Error = &'static str;
    fn try_from(f: FindingIn) -> Result<Finding, &'static str> {
        Ok(Finding {
            names: UserNames::try_new(&f.user, &f.arn)
                .ok_or("a user name and ARN that reach 4 GiB")?,
            account: f.account,
            policy: f.policy,
            rule: f.rule,
            credential: f.credential,
            key_id: f.key_id,
            timestamp: f.timestamp,
            basis: f.basis,
            age_days: f.age_days,
            threshold_days: f.threshold_days,
            exempt: f.exempt,
            protected: f.protected,
            user_created: f.user_created,
            credential_created: f.credential_created,
            stage: f.stage,
            deactivated_at: f.deactivated_at,
        })
    }
}

impl Finding {
    pub fn user(&self) -> &str {
        self.names.user()
    }

    pub fn arn(&self) -> &str {
        self.names.arn()
    }

    /// When it crosses (or crossed) the threshold: `timestamp` plus the
    /// threshold.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.timestamp + chrono::TimeDelta::days(i64::from(self.threshold_days))
    }

    /// Whether the host may act on this finding at all (upcoming findings
    /// are only reported).
    pub fn remediable(&self) -> bool {
        !self.exempt && self.protected.is_none() && self.stage != Stage::Upcoming
    }

    /// One line, for humans: "access key 1 last rotated 2025-06-15, 530 days
    /// ago (more than 90)".
    pub fn reason(&self) -> String {
        crate::rules::reason(self)
    }

    /// The benchmark controls its rule maps to.
    pub fn controls(&self) -> &'static [Control] {
        crate::rules::controls(self.rule)
    }
}

fn is_none<T>(v: &&Option<T>) -> bool {
    v.is_none()
}

/// The JSON of a finding: every field, with `reason` and `controls`
/// derived, in the order the documents have always had.
impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "is_none")]
            account: &'a Option<Arc<str>>,
            policy: &'a str,
            rule: Rule,
            user: &'a str,
            arn: &'a str,
            credential: Credential,
            key_id: &'a Option<String>,
            timestamp: DateTime<Utc>,
            basis: Basis,
            age_days: i64,
            threshold_days: u32,
            reason: String,
            controls: &'static [Control],
            exempt: bool,
            protected: Option<Protection>,
            user_created: Option<DateTime<Utc>>,
            credential_created: Option<DateTime<Utc>>,
            stage: Stage,
            due_at: DateTime<Utc>,
            #[serde(skip_serializing_if = "is_none")]
            deactivated_at: &'a Option<DateTime<Utc>>,
        }
        Out {
            account: &self.account,
            policy: &self.policy,
            rule: self.rule,
            user: self.user(),
            arn: self.arn(),
            credential: self.credential,
            key_id: &self.key_id,
            timestamp: self.timestamp,
            basis: self.basis,
            age_days: self.age_days,
            threshold_days: self.threshold_days,
            reason: self.reason(),
            controls: self.controls(),
            exempt: self.exempt,
            protected: self.protected,
            user_created: self.user_created,
            credential_created: self.credential_created,
            stage: self.stage,
            due_at: self.due_at(),
            deactivated_at: &self.deactivated_at,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 8, 30, 0)
            .single()
            .expect("valid date")
    }

    fn full() -> Finding {
        Finding {
            account: Some("123456789012".into()),
            policy: "rotate".into(),
            rule: Rule::Cis14,
            names: UserNames::new("alice", "arn:aws:iam::123456789012:user/alice"),
            credential: Credential::AccessKey2,
            key_id: Some("AKIAEXAMPLE".into()),
            timestamp: at(1),
            basis: Basis::KeyLastRotated,
            age_days: 120,
            threshold_days: 90,
            exempt: true,
            protected: Some(Protection::Root),
            user_created: Some(at(2)),
            credential_created: Some(at(3)),
            stage: Stage::Deactivated,
            deactivated_at: Some(at(4)),
        }
    }

    #[test]
    fn a_finding_reads_back_as_it_was_written() {
        let f = full();
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(json["user"], "alice");
        assert_eq!(json["arn"], "arn:aws:iam::123456789012:user/alice");
        assert!(json.get("names").is_none(), "names are two fields");
        let back: Finding = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, f);
    }

    #[test]
    fn an_older_finding_reads_with_its_defaults_and_derived_fields_ignored() {
        let mut json = serde_json::to_value(full()).expect("json");
        let obj = json.as_object_mut().expect("an object");
        for key in [
            "account",
            "user_created",
            "credential_created",
            "stage",
            "deactivated_at",
        ] {
            obj.remove(key);
        }
        obj.insert("reason".into(), "anything".into());
        obj.insert("due_at".into(), "not even a time".into());
        let back: Finding = serde_json::from_value(json).expect("reads");
        assert_eq!(
            back,
            Finding {
                account: None,
                user_created: None,
                credential_created: None,
                stage: Stage::Due,
                deactivated_at: None,
                ..full()
            }
        );
    }
}
