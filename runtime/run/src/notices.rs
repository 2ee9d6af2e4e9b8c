//! Messages to credential owners, once the plan was carried out.
//!
//! A plugin of contract 0.2.0 attaches a message (`notify`) to its answer
//! about a finding. After a run's actions ([`crate::execute::apply`]):
//!
//! - a message with `none` (an upcoming or due finding the plugin leaves
//!   alone) is sent as it is, at the finding's stage (`upcoming`, `due`,
//!   `deactivated`);
//! - a message with a change is sent once the change is done (stage
//!   `done:KIND`); when the change failed, the host's own message says so
//!   instead (stage `failed:KIND`); a skipped change sends nothing;
//! - each (account, policy, credential, stage) is sent at most once: the
//!   journal records every message before it goes (`sending`) and how it
//!   went; one recorded `sending` or `sent` (or cut off by a crash) is never
//!   sent again, one that `failed` may be sent by a later run;
//! - the recipient is the value of the user's first `owner_tags` tag
//!   (`ListUserTags`, once per user), sent to `owner_channel`; a user with
//!   none goes to `fallback_channel`;
//! - a run that did or tried something sends one summary to each
//!   `summary_channels`.
//!
//! Sending never changes what was done: it comes after the actions, a
//! failed message is journaled and counted, and the run's result is the
//! actions'.

use std::collections::BTreeMap;
use std::sync::Mutex;

use engine_aws::Aws;
use engine_core::{ActionKind, Credential, Mode};
use engine_journal::{Journal, NoticeRecord};
use engine_notify::{Message, Notifier};

use crate::document::Document;
use crate::execute::{ActionResult, ResultsByAction};

/// The notifier of `set`'s `[notifications]`, sending with the credentials
/// of `aws` (the engine's own account), if the policies declare one.
pub fn notifier(set: &engine_core::PolicySet, aws: &Aws) -> Option<Notifier> {
    set.notifications
        .as_ref()
        .map(|n| Notifier::new(n, aws.sdk_config()))
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub account: Option<String>,
    pub policy: String,
    pub user: String,
    pub credential: Credential,
    /// What it is about: the key id, or `password@USER_CREATED`.
    pub subject: String,
    pub stage: String,
    pub message: String,
}

/// How the messages of a run went.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    pub sent: usize,
    pub failed: usize,
    /// Sent (or cut off) by an earlier run: not sent again.
    pub already: usize,
    /// No channel for it (no owner tag and no fallback channel).
    pub nowhere: usize,
    pub summaries: usize,
}

fn what(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::DeleteAccessKey => "delete",
        ActionKind::DeactivateAccessKey => "deactivate",
        ActionKind::DeleteLoginProfile => "remove",
        ActionKind::None => "leave",
    }
}

/// The messages a carried-out plan sends: from its actions' `notify` and
/// the results of its changes.
pub fn notices(doc: &Document, results: &[ActionResult]) -> Vec<Notice> {
    let enforcing: Vec<&str> = doc
        .policies
        .iter()
        .filter(|p| p.mode == Mode::Enforce && p.failure.is_none())
        .map(|p| p.name.as_str())
        .collect();
    let by_action = ResultsByAction::new(results);
    let mut out = Vec::new();
    for a in &doc.actions {
        let Some(message) = &a.notify else { continue };
        if !enforcing.contains(&&*a.policy) || a.superseded {
            continue;
        }
        let Some(f) = doc.findings.get(a.finding) else {
            continue;
        };
        let subject = match (&a.key_id, f.credential) {
            (Some(k), _) => k.clone(),
            (None, Credential::Password) => format!(
                "password@{}",
                f.user_created
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "unknown".into())
            ),
            // A key without its id (a report file): nothing to tell apart.
            (None, _) => continue,
        };
        let (stage, message) = if a.action == ActionKind::None {
            (f.stage.as_str().to_string(), message.clone())
        } else {
            let result = by_action.get(a);
            match result.map(|r| (r.outcome, r.detail.as_str())) {
                Some(("done" | "done-on-retry", _)) => {
                    (format!("done:{}", a.action.as_str()), message.clone())
                }
                Some(("failed", detail)) => (
                    format!("failed:{}", a.action.as_str()),
                    format!(
                        "The engine tried to {} the {} of {} under policy {} and failed: {detail}. It will try again on its next run.",
                        what(a.action),
                        match &a.key_id {
                            Some(k) => format!("access key {k}"),
                            None => a.credential.to_string(),
                        },
                        a.user,
                        a.policy
                    ),
                ),
                _ => continue,
            }
        };
        out.push(Notice {
            account: a.account.clone().or_else(|| doc.source.account.clone()),
            policy: a.policy.to_string(),
            user: a.user.to_string(),
            credential: a.credential,
            subject,
            stage,
            message,
        });
    }
    out
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Send `notices` (skipping those sent before), then the run's summary.
pub async fn send(
    notices: &[Notice],
    results: &[ActionResult],
    doc: &Document,
    notifier: &Notifier,
    aws: &Aws,
    journal: &Mutex<Journal>,
    run: i64,
) -> Sent {
    let settings = notifier.settings();
    let mut out = Sent::default();
    let mut owners: BTreeMap<String, Option<String>> = BTreeMap::new();
    for n in notices {
        let sent = lock(journal).notice_sent(n.account.as_deref(), &n.policy, &n.subject, &n.stage);
        match sent {
            Ok(true) => {
                out.already += 1;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                // Not knowing whether it went means not sending it twice.
                tracing::warn!(
                    "journal: cannot tell whether a message was sent, not sending it: {e}"
                );
                out.failed += 1;
                continue;
            }
        }
        if !owners.contains_key(&n.user) {
            let owner = match aws.user_tags(&n.user).await {
                Ok(tags) => settings
                    .owner_tags
                    .iter()
                    .find_map(|t| tags.get(t).filter(|v| !v.is_empty()).cloned()),
                Err(e) => {
                    tracing::warn!(user = %n.user, "cannot read the user's tags, its messages go to the fallback channel: {e}");
                    None
                }
            };
            owners.insert(n.user.clone(), owner);
        }
        let owner = owners.get(&n.user).cloned().flatten();
        let channel = match (&owner, &settings.owner_channel, &settings.fallback_channel) {
            (Some(_), Some(c), _) => c.clone(),
            (_, _, Some(c)) => c.clone(),
            _ => {
                out.nowhere += 1;
                continue;
            }
        };
        // Only the owner channel has a recipient to address.
        let recipient = owner.filter(|_| settings.owner_channel.as_ref() == Some(&channel));
        let record = NoticeRecord {
            account: n.account.clone(),
            policy: n.policy.clone(),
            user: n.user.clone(),
            credential: n.credential.as_str().to_string(),
            subject: n.subject.clone(),
            stage: n.stage.clone(),
            channel: channel.clone(),
            recipient: recipient.clone(),
            ..NoticeRecord::default()
        };
        let id = match lock(journal).notice_intent(run, &record) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("journal: not sending a message that cannot be recorded: {e}");
                out.failed += 1;
                continue;
            }
        };
        let msg = Message {
            subject: format!("engine: {} of {} ({})", n.credential, n.user, n.stage),
            text: n.message.clone(),
            recipient,
            about: serde_json::json!({
                "account": n.account, "policy": n.policy, "user": n.user,
                "credential": n.credential.as_str(), "subject": n.subject, "stage": n.stage,
            }),
        };
        let result = notifier.send(&channel, &msg).await;
        let detail = result.result.as_ref().err().cloned().unwrap_or_default();
        if let Err(e) =
            lock(journal).notice_result(id, result.result.is_ok(), result.attempts, &detail)
        {
            tracing::warn!("journal: {e}");
        }
        tracing::info!(
            channel = %channel, user = %n.user, subject = %n.subject, stage = %n.stage,
            attempts = result.attempts, ok = result.result.is_ok(), "message"
        );
        if result.result.is_ok() {
            out.sent += 1;
        } else {
            out.failed += 1;
        }
    }
    if !results.is_empty() {
        let text = summary_text(doc, results);
        let account = doc.source.account.clone().unwrap_or_default();
        for channel in &settings.summary_channels {
            let msg = Message {
                subject: format!(
                    "engine: run {run}{}: {} done, {} failed, {} skipped",
                    if account.is_empty() {
                        String::new()
                    } else {
                        format!(" in account {account}")
                    },
                    count(results, &["done", "done-on-retry", "already-gone"]),
                    count(results, &["failed"]),
                    count(results, &["skipped"]),
                ),
                text: text.clone(),
                recipient: None,
                about: serde_json::json!({ "run": run, "account": doc.source.account }),
            };
            let result = notifier.send(channel, &msg).await;
            if result.result.is_ok() {
                out.summaries += 1;
            } else {
                out.failed += 1;
            }
        }
    }
    out
}

fn count(results: &[ActionResult], outcomes: &[&str]) -> usize {
    results
        .iter()
        .filter(|r| outcomes.contains(&r.outcome))
        .count()
}

/// One line per result: what was done, what failed, what was skipped and why.
pub fn summary_text(doc: &Document, results: &[ActionResult]) -> String {
    let mut lines = Vec::new();
    for (title, outcomes) in [
        ("Done", &["done", "done-on-retry", "already-gone"][..]),
        ("Failed", &["failed"][..]),
        ("Skipped", &["skipped"][..]),
    ] {
        let these: Vec<&ActionResult> = results
            .iter()
            .filter(|r| outcomes.contains(&r.outcome))
            .collect();
        if these.is_empty() {
            continue;
        }
        lines.push(format!("{title}:"));
        for r in these {
            lines.push(format!(
                "  {} {} {} {}{}",
                r.action.as_str(),
                r.user,
                r.credential,
                r.key_id.as_deref().unwrap_or(""),
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.detail)
                }
            ));
        }
    }
    let upcoming = doc.summary.upcoming;
    if upcoming > 0 {
        lines.push(format!(
            "{upcoming} credential(s) will cross their threshold soon (upcoming)."
        ));
    }
    lines.join("\n")
}
