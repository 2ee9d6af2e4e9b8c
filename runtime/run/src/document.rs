//! The plan as one document: what `check --format json` prints, `check
//! --out` saves, `apply` re-reads and the daemon serves on `/v1/plan`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use engine_core::plan::{FailureKind, Plan, PlannedAction, PolicyPlan, Refusal, Summary};
use engine_core::{ActionKind, Finding, Mode, PolicyFailure, Rule};
use serde::{Deserialize, Serialize};

/// Version of the JSON document (`format_version`).
pub const FORMAT_VERSION: u32 = 1;

/// The JSON document `check --format json` prints and `--out` saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub format_version: u32,
    /// When the rules were evaluated.
    pub now: DateTime<Utc>,
    /// Where the credentials came from.
    pub source: Source,
    pub policies: Vec<PolicyEntry>,
    pub findings: Vec<Finding>,
    pub actions: Vec<ActionEntry>,
    pub refused: Vec<RefusalEntry>,
    pub errors: Vec<ErrorEntry>,
    pub summary: Summary,
    /// The AWS Config rules the policies declare, and what to do about each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_rules: Vec<crate::config_rules::ConfigRuleEntry>,
    /// Warnings about AWS Config (no recorder of IAM users, rules not compared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_warnings: Vec<String>,
    /// HMAC-SHA256 of the saved plan under the state directory's key: `apply
    /// PLAN` refuses an edited or foreign plan. Only in files saved with `--out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Source {
    /// The report file, when read from one.
    pub report: Option<String>,
    /// The account id, when read from a live account.
    pub account: Option<String>,
    /// The identity the engine ran as (ARN), when known.
    pub identity: Option<String>,
    /// The access key id the engine ran with, when known (never acted on).
    pub own_key_id: Option<String>,
    /// When AWS generated the credential report (live account).
    #[serde(default)]
    pub report_generated_at: Option<DateTime<Utc>>,
    /// The policy directory the plan was made from (absolute).
    #[serde(default)]
    pub policy_dir: Option<String>,
    /// sha256 over the engine version, the policy files and the plugins they
    /// use: `apply PLAN` refuses a plan whose policies or plugins changed.
    #[serde(default)]
    pub policy_digest: Option<String>,
    /// `--now` was given against a live account: a what-if, never saved or applied.
    #[serde(default)]
    pub what_if: bool,
    /// The one user evaluated from fresh IAM reads (`--user`) instead of
    /// the credential report; absent for a whole-account plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub name: String,
    pub rule: Rule,
    pub mode: Mode,
    pub plugin: String,
    pub failure: Option<PolicyFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionEntry {
    /// The account of the credential (a live account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Shared with the plan's action (and its finding), not copied.
    pub policy: Arc<str>,
    pub action: ActionKind,
    pub user: engine_core::Name,
    pub arn: engine_core::Name,
    pub credential: engine_core::Credential,
    pub key_id: Option<String>,
    /// Index into the document's `findings`.
    pub finding: usize,
    pub reason: Option<String>,
    /// The plugin's message for the credential's owner (contract 0.2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// False for `mode = "report"` policies, `none` actions and superseded ones: never applied.
    pub applies: bool,
    /// A deactivation of a key that another policy deletes in the same run.
    pub superseded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(flatten)]
    pub refusal: Refusal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub policy: String,
    pub kind: FailureKind,
    pub message: String,
}

impl Document {
    pub fn new(plan: &Plan, source: Source) -> Document {
        let mut findings = Vec::new();
        let mut actions = Vec::new();
        let mut refused = Vec::new();
        let mut errors = Vec::new();
        let mut policies = Vec::new();
        let superseded = plan.superseded();
        for (pi, p) in plan.policies.iter().enumerate() {
            let offset = findings.len();
            findings.extend(p.findings.iter().cloned());
            actions.extend(p.actions.iter().enumerate().map(|(ai, a)| {
                let sup = superseded.contains(&(pi, ai));
                ActionEntry {
                    account: source.account.clone(),
                    policy: a.policy.clone(),
                    action: a.action,
                    user: a.user.clone(),
                    arn: a.arn.clone(),
                    credential: a.credential,
                    key_id: a.key_id.clone(),
                    finding: offset + a.finding,
                    reason: a.reason.clone(),
                    notify: a.notify.clone(),
                    applies: p.mode == Mode::Enforce && a.action.mutates() && !sup,
                    superseded: sup,
                }
            }));
            refused.extend(p.refused.iter().map(|r| {
                let mut r = r.clone();
                r.finding += offset;
                RefusalEntry {
                    account: source.account.clone(),
                    refusal: r,
                }
            }));
            if let Some(f) = &p.failure {
                errors.push(ErrorEntry {
                    account: source.account.clone(),
                    policy: p.policy.clone(),
                    kind: f.kind,
                    message: f.message.clone(),
                });
            }
            policies.push(PolicyEntry {
                name: p.policy.clone(),
                rule: p.rule,
                mode: p.mode,
                plugin: p.plugin.clone(),
                failure: p.failure.clone(),
            });
        }
        Document {
            format_version: FORMAT_VERSION,
            now: plan.now,
            source,
            policies,
            findings,
            actions,
            refused,
            errors,
            summary: plan.summary(),
            config_rules: Vec::new(),
            config_warnings: Vec::new(),
            mac: None,
        }
    }

    /// Rebuild the plan this document was made from.
    pub fn to_plan(&self) -> Result<Plan, String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "plan format_version {} is not supported (this engine reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let mut policies = Vec::new();
        for entry in &self.policies {
            let idx: Vec<usize> = (0..self.findings.len())
                .filter(|&i| *self.findings[i].policy == *entry.name)
                .collect();
            // `idx` is ascending: a finding's place in its policy by binary
            // search, not a scan per action (a plan can hold a million).
            let local = |global: usize| idx.binary_search(&global).ok();
            let mut actions = Vec::new();
            for a in self.actions.iter().filter(|a| *a.policy == *entry.name) {
                let finding = local(a.finding).ok_or_else(|| {
                    format!(
                        "action on {} {} names finding {} of another policy",
                        a.user, a.credential, a.finding
                    )
                })?;
                let f = &self.findings[a.finding];
                if *f.user() != *a.user || f.credential != a.credential || f.key_id != a.key_id {
                    return Err(format!(
                        "action on {} {} does not match its finding {}",
                        a.user, a.credential, a.finding
                    ));
                }
                actions.push(PlannedAction {
                    policy: a.policy.clone(),
                    action: a.action,
                    user: a.user.clone(),
                    arn: a.arn.clone(),
                    credential: a.credential,
                    key_id: a.key_id.clone(),
                    finding,
                    reason: a.reason.clone(),
                    notify: a.notify.clone(),
                });
            }
            let refused = self
                .refused
                .iter()
                .filter(|r| r.refusal.policy == entry.name)
                .map(|r| {
                    let mut r = r.refusal.clone();
                    r.finding = local(r.finding).unwrap_or(r.finding);
                    r
                })
                .collect();
            policies.push(PolicyPlan {
                policy: entry.name.clone(),
                rule: entry.rule,
                mode: entry.mode,
                plugin: entry.plugin.clone(),
                findings: idx.iter().map(|&i| self.findings[i].clone()).collect(),
                actions,
                refused,
                failure: entry.failure.clone(),
            });
        }
        Ok(Plan {
            now: self.now,
            policies,
        })
    }
}

/// The plan of a run over many accounts (an `[accounts]` table): one section
/// per account, each the [`Document`] of that account, or why it has none.
/// What `check --format json` prints, `check --out` saves and the daemon
/// serves on `/v1/plan` when the policies name accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountsDocument {
    pub format_version: u32,
    pub now: DateTime<Utc>,
    /// The engine's own identity (ARN) and account.
    pub identity: String,
    pub engine_account: String,
    /// The role assumed in each account.
    pub role: String,
    pub accounts: Vec<AccountSection>,
    /// Accounts of the organization left out, with why (`excluded`, `not active (SUSPENDED)`).
    pub skipped: Vec<SkippedAccount>,
    pub summary: AccountsSummary,
    /// As [`Document::mac`], over the whole document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountSection {
    pub account: String,
    /// Its name in the organization, when listed.
    pub name: Option<String>,
    /// The role assumed in it; `None` for the engine's own account.
    pub role_arn: Option<String>,
    /// Why the account has no plan (its role could not be assumed, its
    /// credential report failed, ...).
    pub error: Option<String>,
    pub plan: Option<Document>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedAccount {
    pub account: String,
    pub reason: String,
}

/// The sums over every account's [`Summary`], and the accounts' count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsSummary {
    pub accounts: usize,
    pub failed_accounts: usize,
    pub skipped_accounts: usize,
    pub findings: usize,
    pub exempt: usize,
    pub protected: usize,
    pub changes: usize,
    pub delete_access_key: usize,
    pub deactivate_access_key: usize,
    pub delete_login_profile: usize,
    pub report_only: usize,
    pub superseded: usize,
    pub refused: usize,
    pub failed_policies: usize,
}

impl AccountsSummary {
    pub fn of(sections: &[AccountSection], skipped: usize) -> AccountsSummary {
        let mut t = AccountsSummary {
            accounts: sections.len(),
            skipped_accounts: skipped,
            ..AccountsSummary::default()
        };
        for s in sections {
            let Some(doc) = &s.plan else {
                t.failed_accounts += 1;
                continue;
            };
            let p = &doc.summary;
            t.findings += p.findings;
            t.exempt += p.exempt;
            t.protected += p.protected;
            t.changes += p.changes;
            t.delete_access_key += p.delete_access_key;
            t.deactivate_access_key += p.deactivate_access_key;
            t.delete_login_profile += p.delete_login_profile;
            t.report_only += p.report_only;
            t.superseded += p.superseded;
            t.refused += p.refused;
            t.failed_policies += p.failed_policies;
        }
        t
    }
}

impl AccountsDocument {
    /// The document of a run over many accounts, from each account's section.
    pub fn from_parts(
        now: DateTime<Utc>,
        identity: &engine_aws::Identity,
        role: &str,
        accounts: Vec<AccountSection>,
        skipped: &[(String, String)],
    ) -> AccountsDocument {
        let skipped: Vec<SkippedAccount> = skipped
            .iter()
            .map(|(account, reason)| SkippedAccount {
                account: account.clone(),
                reason: reason.clone(),
            })
            .collect();
        AccountsDocument {
            format_version: FORMAT_VERSION,
            now,
            identity: identity.arn.clone(),
            engine_account: identity.account.clone(),
            role: role.to_string(),
            summary: AccountsSummary::of(&accounts, skipped.len()),
            accounts,
            skipped,
            mac: None,
        }
    }
}
