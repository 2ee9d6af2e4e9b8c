//! Carry out exactly a plan: journaled, re-checked, with bounded concurrency.
//!
//! `engine apply` and the daemon's scheduled runs both end here. The rules:
//!
//! - only enforcing policies act, and only on remediable findings (never
//!   exempt users, root, the engine's own credentials or protected keys);
//! - just before each write, what may have changed since the report is read
//!   again and checked ([`engine_core::recheck`]): a key that is gone or not
//!   the one the report saw, a key or password used since the report (cis-1.3),
//!   a user re-created or a password set again since: skipped and said why.
//!   A re-check that cannot be made is a failure, never a skip;
//! - nothing is sent that is not first written to the journal;
//! - a deactivation superseded by another policy's delete of the same key
//!   still runs when that delete fails or is skipped;
//! - once stopping is asked for (the cancellation token), no new action
//!   starts: those not started are journaled as skipped, and a write already
//!   sent runs to its answer, which is journaled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use engine_aws::{Aws, WriteOutcome};
use engine_core::plan::{Grants, Plan, PlannedAction, Proposal, check_proposals};
use engine_core::recheck::{self, PasswordNow, Verdict};
use engine_core::report::ROOT_USER;
use engine_core::snapshot::{self, AccessKeyMeta, Own};
use engine_core::{ActionKind, Finding, Mode, PolicySet, Protection, Rule};
use engine_journal::{Journal, Outcome, RunStatus};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::document::Document;

/// Why an action that was not started was skipped.
pub const STOPPING: &str = "not started: the engine is stopping";

/// Where and how to carry out a plan.
pub struct Execution<'a> {
    pub aws: &'a Aws,
    /// The engine's own credentials, never acted on.
    pub own: &'a Own,
    /// Writes (and their re-checks) in flight at once.
    pub concurrency: usize,
    /// Cancelled: start nothing new.
    pub cancel: CancellationToken,
    /// Where owners' messages and the run's summary go (`[notifications]`;
    /// `None`: they are not sent).
    pub notifier: Option<&'a engine_notify::Notifier>,
}

/// A journaled run: its id, each action's result and the run's status.
#[derive(Debug)]
pub struct Applied {
    pub run: i64,
    pub journal: PathBuf,
    pub results: Vec<ActionResult>,
    /// How the owners' messages and the summary went.
    pub notices: crate::notices::Sent,
    pub status: RunStatus,
}

impl Applied {
    pub fn count(&self, outcome: &str) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }
}

/// What the journal records as a run's source: the policies or plan file,
/// and when the report it was made from was generated (or the user read
/// fresh from IAM).
pub fn journal_source(target: &str, doc: &Document) -> String {
    match (&doc.source.user, doc.source.report_generated_at) {
        (Some(user), _) => format!("{target} (fresh reads of user {user})"),
        (None, Some(at)) => format!(
            "{target} (report generated at {})",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (None, None) => target.to_string(),
    }
}

/// Journal a run of `command` (`apply`, `scheduled`) over `plan`, carry out
/// its writes, journal every result and the run's end. `claim` is a saved
/// plan's seal: claimed under the run, so a plan is applied at most once.
/// An error means nothing was sent.
pub async fn apply(
    mut journal: Journal,
    command: &str,
    target: &str,
    doc: &Document,
    plan: &Plan,
    claim: Option<&str>,
    exec: &Execution<'_>,
) -> Result<Applied, String> {
    let run = journal
        .start_account_run(
            doc.source.account.as_deref(),
            command,
            &journal_source(target, doc),
            &doc.findings,
        )
        .map_err(|e| format!("cannot write the journal, nothing was done: {e}"))?;
    if let Some(mac) = claim {
        // Claimed under the run: a second apply of the same plan, even one
        // racing this one, finds it taken and sends nothing.
        let claimed = journal.claim_plan(mac, run);
        if !matches!(claimed, Ok(true)) {
            let why = match claimed {
                Err(e) => format!("cannot write the journal: {e}"),
                _ => "another run applied it first".to_string(),
            };
            let _ = journal.finish_run(run, RunStatus::Failed, "{\"actions\":0}");
            return Err(format!("nothing was done: {why}"));
        }
    }
    let path = journal.path().to_path_buf();
    let policy_failed = doc.summary.failed_policies > 0;
    let targets = targets(plan);
    let journal = Arc::new(Mutex::new(journal));
    let mut results = if targets.is_empty() {
        Vec::new()
    } else {
        execute_all(exec, &journal, run, &targets).await
    };
    for r in &mut results {
        r.account.clone_from(&doc.source.account);
    }
    // Messages after the actions: they never change what was done.
    let notices = match exec.notifier {
        Some(notifier) if !exec.cancel.is_cancelled() => {
            let wanted = crate::notices::notices(doc, &results);
            crate::notices::send(&wanted, &results, doc, notifier, exec.aws, &journal, run).await
        }
        _ => crate::notices::Sent::default(),
    };
    let failed = results.iter().filter(|r| r.outcome == "failed").count();
    let stopped = results.iter().any(|r| r.detail == STOPPING);
    let status = if failed > 0 || policy_failed || stopped {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    let summary = serde_json::json!({
        "actions": results.len(),
        "failed": failed,
        "stopped": stopped,
        "report_generated_at": doc.source.report_generated_at,
        "plan": doc.summary,
        "notices": notices,
    });
    if let Err(e) = lock(&journal).finish_run(run, status, &summary.to_string()) {
        tracing::warn!("journal: {e}");
    }
    Ok(Applied {
        run,
        journal: path,
        results,
        status,
        notices,
    })
}

/// The result of one planned action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    /// The account of the credential (a live account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub policy: String,
    pub action: ActionKind,
    pub user: String,
    pub credential: engine_core::Credential,
    pub key_id: Option<String>,
    /// `done`, `done-on-retry`, `already-gone`, `skipped` or `failed`.
    pub outcome: &'static str,
    pub detail: String,
}

/// The results of a run by the action they are about (policy, user,
/// credential, action, key id), the first for each: looking up the result of
/// each of a plan's actions costs a hash, not a scan of every result.
pub struct ResultsByAction<'a>(
    HashMap<
        (
            &'a str,
            &'a str,
            engine_core::Credential,
            ActionKind,
            Option<&'a str>,
        ),
        &'a ActionResult,
    >,
);

impl<'a> ResultsByAction<'a> {
    pub fn new(results: &'a [ActionResult]) -> Self {
        let mut map = HashMap::with_capacity(results.len());
        for r in results {
            map.entry((
                r.policy.as_str(),
                r.user.as_str(),
                r.credential,
                r.action,
                r.key_id.as_deref(),
            ))
            .or_insert(r);
        }
        ResultsByAction(map)
    }

    /// The result of the plan's action `a` (matched by policy, user,
    /// credential, kind and key id), if it ran.
    pub fn get(&self, a: &crate::document::ActionEntry) -> Option<&'a ActionResult> {
        self.0
            .get(&(
                &*a.policy,
                &*a.user,
                a.credential,
                a.action,
                a.key_id.as_deref(),
            ))
            .copied()
    }
}

/// One write the plan asks for, with the finding it is about.
#[derive(Debug, Clone)]
pub struct Target {
    pub action: PlannedAction,
    pub finding: Finding,
    /// A deactivation superseded by another policy's delete of the same key:
    /// the index of that delete. It runs only if the delete did not succeed.
    pub fallback_for: Option<usize>,
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writes of a plan: enforcing policies that did not fail, mutating
/// kinds, remediable findings. A deactivation of a key another policy deletes
/// is kept as that delete's fallback.
pub fn targets(plan: &Plan) -> Vec<Target> {
    let superseded = plan.superseded();
    let mut out = Vec::new();
    let mut fallbacks = Vec::new();
    for (pi, p) in plan.policies.iter().enumerate() {
        if p.mode != Mode::Enforce || p.failure.is_some() {
            continue;
        }
        for (ai, a) in p.actions.iter().enumerate() {
            // The host checks already refused these; make sure nothing brings them back.
            let Some(f) = p.findings.get(a.finding).filter(|f| f.remediable()) else {
                continue;
            };
            if !a.action.mutates() {
                continue;
            }
            let target = Target {
                action: a.clone(),
                finding: f.clone(),
                fallback_for: None,
            };
            if superseded.contains(&(pi, ai)) {
                fallbacks.push(target);
            } else {
                out.push(target);
            }
        }
    }
    // The first delete of each key, by user and credential.
    let mut deletes: HashMap<(engine_core::Name, engine_core::Credential), usize> = HashMap::new();
    for (i, d) in out.iter().enumerate() {
        if d.action.action == ActionKind::DeleteAccessKey {
            deletes
                .entry((d.action.user.clone(), d.action.credential))
                .or_insert(i);
        }
    }
    for mut t in fallbacks {
        t.fallback_for = deletes
            .get(&(t.action.user.clone(), t.action.credential))
            .copied();
        out.push(t);
    }
    out
}

fn result(a: &PlannedAction, outcome: Outcome, detail: String) -> ActionResult {
    ActionResult {
        account: None,
        policy: a.policy.to_string(),
        action: a.action,
        user: a.user.to_string(),
        credential: a.credential,
        key_id: a.key_id.clone(),
        outcome: outcome.as_str(),
        detail,
    }
}

/// Whether an outcome means the credential is gone or changed as planned.
fn succeeded(outcome: &str) -> bool {
    matches!(outcome, "done" | "done-on-retry" | "already-gone")
}

/// Run every target: first the planned writes, then the fallbacks whose
/// delete did not succeed. A fallback whose delete succeeded is not reported.
async fn execute_all(
    exec: &Execution<'_>,
    journal: &Arc<Mutex<Journal>>,
    run: i64,
    targets: &[Target],
) -> Vec<ActionResult> {
    let mut results: Vec<Option<ActionResult>> = vec![None; targets.len()];
    let first: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].fallback_for.is_none())
        .collect();
    execute_batch(exec, journal, run, targets, &first, &mut results).await;
    let second: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            targets[i]
                .fallback_for
                .is_some_and(|d| !results[d].as_ref().is_some_and(|r| succeeded(r.outcome)))
        })
        .collect();
    for &i in &second {
        tracing::info!(
            user = %targets[i].action.user,
            key = ?targets[i].action.key_id,
            "the delete that superseded this deactivation did not succeed: deactivating instead"
        );
    }
    execute_batch(exec, journal, run, targets, &second, &mut results).await;
    let mut in_second = vec![false; targets.len()];
    for &i in &second {
        in_second[i] = true;
    }
    results
        .into_iter()
        .zip(targets)
        .enumerate()
        .filter_map(|(i, (r, t))| match r {
            Some(r) => Some(r),
            // Not needed: the delete that superseded it succeeded.
            None if t.fallback_for.is_some() && !in_second[i] => None,
            None => Some(result(
                &t.action,
                Outcome::Failed,
                "the action's task ended without a result".into(),
            )),
        })
        .collect()
}

async fn execute_batch(
    exec: &Execution<'_>,
    journal: &Arc<Mutex<Journal>>,
    run: i64,
    targets: &[Target],
    which: &[usize],
    results: &mut [Option<ActionResult>],
) {
    let sem = Arc::new(tokio::sync::Semaphore::new(exec.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for &i in which {
        let t = targets[i].clone();
        let aws = exec.aws.clone();
        let journal = journal.clone();
        let sem = sem.clone();
        let own = exec.own.clone();
        let cancel = exec.cancel.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, execute(&aws, &journal, run, &t, &own, &cancel).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => tracing::error!("an action task failed: {e}"),
        }
    }
}

/// Journal an action that is not started because the engine is stopping.
fn not_started(journal: &Mutex<Journal>, run: i64, a: &PlannedAction) -> ActionResult {
    tracing::info!(run, policy = %a.policy, user = %a.user, key_id = a.key_id.as_deref().unwrap_or("-"), action = %a.action, outcome = "skipped", "{STOPPING}");
    if let Err(e) = lock(journal).skipped(run, a, STOPPING) {
        tracing::warn!("journal: {e}");
    }
    result(a, Outcome::Skipped, STOPPING.into())
}

/// Re-check, journal the intent, send, journal the result.
async fn execute(
    aws: &Aws,
    journal: &Mutex<Journal>,
    run: i64,
    t: &Target,
    own: &Own,
    cancel: &CancellationToken,
) -> ActionResult {
    let a = &t.action;
    if cancel.is_cancelled() {
        return not_started(journal, run, a);
    }
    let verdict = if a.key_id.is_some() && a.key_id == own.key_id {
        Ok(Verdict::Skip(
            "this is the access key the engine is running with".into(),
        ))
    } else {
        guard(aws, t).await
    };
    match verdict {
        Ok(Verdict::Go) => {}
        Ok(Verdict::Skip(why)) => {
            tracing::info!(run, policy = %a.policy, user = %a.user, key_id = a.key_id.as_deref().unwrap_or("-"), action = %a.action, outcome = "skipped", "{why}");
            if let Err(e) = lock(journal).skipped(run, a, &why) {
                tracing::warn!("journal: {e}");
            }
            return result(a, Outcome::Skipped, why);
        }
        Err(e) => {
            let detail = format!("not sent: cannot re-check it against the account: {e}");
            tracing::error!(run, policy = %a.policy, user = %a.user, key_id = a.key_id.as_deref().unwrap_or("-"), action = %a.action, outcome = "failed", "{detail}");
            let recorded = {
                let j = lock(journal);
                j.intent(run, a)
                    .and_then(|id| j.result(id, Outcome::Failed, &detail))
            };
            if let Err(e) = recorded {
                tracing::warn!("journal: {e}");
            }
            return result(a, Outcome::Failed, detail);
        }
    }
    // The re-check took a while: stopping may have been asked for since.
    if cancel.is_cancelled() {
        return not_started(journal, run, a);
    }
    let id = match lock(journal).intent(run, a) {
        Ok(id) => id,
        Err(e) => {
            return result(
                a,
                Outcome::Failed,
                format!("not sent: the journal could not record it: {e}"),
            );
        }
    };
    let sent = match (a.action, &a.key_id) {
        (ActionKind::DeleteAccessKey, Some(k)) => aws.delete_access_key(&a.user, k).await,
        (ActionKind::DeactivateAccessKey, Some(k)) => aws.deactivate_access_key(&a.user, k).await,
        (ActionKind::DeleteLoginProfile, _) => {
            // The password the re-check saw; any newer one is left alone.
            let created_by = t
                .finding
                .credential_created
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
            aws.delete_login_profile(&a.user, created_by).await
        }
        _ => {
            let r = result(a, Outcome::Skipped, "nothing to send".into());
            let _ = lock(journal).result(id, Outcome::Skipped, &r.detail);
            return r;
        }
    };
    let (outcome, detail) = match sent {
        Ok(WriteOutcome::Done) => (Outcome::Done, String::new()),
        Ok(WriteOutcome::DoneOnRetry) => (
            Outcome::DoneOnRetry,
            "an attempt went unanswered and its retry found it gone (NoSuchEntity): done by that attempt".to_string(),
        ),
        Ok(WriteOutcome::AlreadyGone) => (
            Outcome::AlreadyGone,
            "NoSuchEntity: already gone".to_string(),
        ),
        Ok(WriteOutcome::Replaced(at)) => (
            Outcome::Skipped,
            format!(
                "the delete went unanswered, and a new console password was set at {} since: left alone",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    tracing::info!(run, policy = %a.policy, user = %a.user, key_id = a.key_id.as_deref().unwrap_or("-"), action = %a.action, outcome = outcome.as_str(), "{}", if detail.is_empty() { "sent" } else { detail.as_str() });
    if let Err(e) = lock(journal).result(id, outcome, &detail) {
        tracing::warn!("journal: {e}");
    }
    result(a, outcome, detail)
}

/// Read again what may have changed since the report, and decide.
async fn guard(aws: &Aws, t: &Target) -> Result<Verdict, String> {
    let (a, f) = (&t.action, &t.finding);
    let now = Utc::now();
    if a.credential.is_access_key() {
        let Some(key_id) = a.key_id.as_deref() else {
            return Ok(Verdict::Skip("the plan has no key id for this key".into()));
        };
        let listed = aws
            .list_access_keys(&a.user)
            .await
            .map_err(|e| e.to_string())?;
        let listed = listed
            .into_iter()
            .find(|k| k.id == key_id)
            .map(|k| AccessKeyMeta {
                id: k.id,
                active: k.active,
                created: k.create_date,
            });
        let last_used = if f.rule == Rule::Cis13 && listed.is_some() {
            match aws
                .access_key_last_used(key_id)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(used) => Some(used),
                None => {
                    return Ok(Verdict::Skip(format!(
                        "key {key_id} no longer exists (deleted since the plan)"
                    )));
                }
            }
        } else {
            None
        };
        Ok(recheck::access_key(
            a.action,
            f,
            listed.as_ref(),
            last_used,
            now,
        ))
    } else {
        let user = aws.get_user(&a.user).await.map_err(|e| e.to_string())?;
        let profile_created = match user {
            Some(_) => aws
                .login_profile_created(&a.user)
                .await
                .map_err(|e| e.to_string())?,
            None => None,
        };
        let seen = PasswordNow {
            user_created: user.as_ref().map(|u| u.created),
            last_used: user.as_ref().and_then(|u| u.password_last_used),
            profile_created,
        };
        Ok(recheck::password(f, &seen, now))
    }
}

/// Re-derive a saved plan's actions from its findings and the plugins'
/// proposals, as if the plan were made now: exemptions, root, the engine's
/// own credentials, protected keys, grants, kinds and blast radius all come
/// from the current policies and identity, not from the file. An action acts
/// on the finding it names, so it cannot name anything else.
pub fn rederive(plan: Plan, set: &PolicySet, own: &Own) -> Result<Plan, String> {
    let mut out = Vec::with_capacity(plan.policies.len());
    for mut pp in plan.policies {
        let policy = set
            .policies
            .iter()
            .find(|p| p.name == pp.policy)
            .ok_or_else(|| format!("policy {:?} is not in the policies any more", pp.policy))?;
        if policy.rule != pp.rule {
            return Err(format!("policy {:?} has another rule now", pp.policy));
        }
        pp.mode = policy.mode;
        pp.plugin = policy.action.clone();
        for f in &mut pp.findings {
            let root = f.user() == ROOT_USER;
            f.exempt = !root && policy.is_exempt(f.user());
            f.protected = root.then_some(Protection::Root);
        }
        snapshot::protect(&mut pp.findings, own, &policy.protect_access_keys);
        if pp.failure.is_some() {
            pp.actions.clear();
            pp.refused.clear();
            out.push(pp);
            continue;
        }
        let proposals: Vec<Proposal> = pp
            .actions
            .iter()
            .map(|a| Proposal {
                finding: u32::try_from(a.finding).unwrap_or(u32::MAX),
                kind: a.action,
                reason: a.reason.clone(),
                notify: a.notify.clone(),
            })
            .collect();
        match check_proposals(&Grants::of(set, policy, true), &pp.findings, &proposals) {
            // What the plan refused stays refused; what it accepted can
            // only lose actions here, never gain any.
            Ok((actions, refused)) => {
                pp.actions = actions;
                pp.refused.extend(refused);
            }
            Err(failure) => {
                pp.actions.clear();
                pp.refused.clear();
                pp.failure = Some(failure);
            }
        }
        out.push(pp);
    }
    Ok(Plan {
        now: plan.now,
        policies: out,
    })
}
