//! `engine apply`: carry out exactly the plan, journaled, with bounded concurrency.
//!
//! `check` and `apply` share everything up to the plan; this is the other
//! executor. Its rules:
//!
//! - only enforcing policies act, and only on remediable findings (never
//!   exempt users, root, the engine's own credentials or protected keys);
//! - a saved plan is sealed, fresh and made from the current policies, and
//!   its actions are re-derived by the host checks before anything runs
//!   (see [`crate::saved`]);
//! - just before each write, what may have changed since the report is read
//!   again and checked ([`engine_core::recheck`]): a key that is gone or not
//!   the one the report saw, a key or password used since the report (cis-1.3),
//!   a user re-created or a password set again since: skipped and said why.
//!   A re-check that cannot be made is a failure, never a skip;
//! - nothing is sent that is not first written to the journal;
//! - a deactivation superseded by another policy's delete of the same key
//!   still runs when that delete fails or is skipped.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
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

use crate::check::{self, Prepared};
use crate::render::Document;
use crate::{ApplyArgs, Format, SourceArgs, exit, live, saved};

/// The result of one planned action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub policy: String,
    pub action: ActionKind,
    pub user: String,
    pub credential: engine_core::Credential,
    pub key_id: Option<String>,
    /// `done`, `done-on-retry`, `already-gone`, `skipped` or `failed`.
    pub outcome: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
struct ApplyReport<'a> {
    run: Option<i64>,
    journal: String,
    plan: &'a Document,
    results: Vec<ActionResult>,
    done: usize,
    done_on_retry: usize,
    already_gone: usize,
    skipped: usize,
    failed: usize,
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

pub async fn run(args: &ApplyArgs) -> u8 {
    // One process acts on a state directory at a time: before anything is
    // read or written, held until this returns (or the process dies).
    let state = &args.account.state.state;
    let _lock = match engine_journal::StateLock::acquire(state, args.lock_timeout) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
            if matches!(e, engine_journal::LockError::Held { .. }) {
                eprintln!(
                    "hint: another engine is acting on {}; nothing was done. Wait for it to finish, or pass --lock-timeout (e.g. --lock-timeout 10m) to wait for the lock",
                    state.display()
                );
            }
            return exit::ERROR;
        }
    };
    let saved = args.target.is_file();
    let loaded = if saved {
        load_saved(&args.target, args).await.map_err(|e| {
            eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
            exit::ERROR
        })
    } else {
        let source = SourceArgs {
            report: None,
            now: None,
            account: args.account.clone(),
        };
        match check::prepare(&args.target, &source, false).await {
            Ok(Prepared {
                plan,
                doc,
                snapshot,
            }) => match snapshot.account {
                Some(account) => Ok((plan, doc, account.aws, account.own, None)),
                None => Err(exit::ERROR),
            },
            Err(code) => Err(code),
        }
    };
    let (plan, doc, aws, own, sealed) = match loaded {
        Ok(v) => v,
        Err(code) => return code,
    };

    let mut journal = match args.account.state.open_journal() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot open the journal, nothing will be done: {e}");
            return exit::ERROR;
        }
    };
    match journal.take_unfinished() {
        Ok(open) => {
            for a in open {
                // The journal holds what a plan said: names from a report or a plan file.
                let t = engine_core::text::for_terminal;
                eprintln!(
                    "warning: run {} journaled {} on {} {} ({}) at {} but recorded no result: the engine stopped mid-apply; the next credential report shows what happened (recorded as unknown)",
                    a.run_id,
                    t(&a.action),
                    t(&a.user),
                    t(&a.credential),
                    t(a.key_id.as_deref().unwrap_or("-")),
                    t(&a.intent_at)
                );
            }
        }
        Err(e) => {
            eprintln!("error: cannot read the journal, nothing will be done: {e}");
            return exit::ERROR;
        }
    }

    if let Some(mac) = &sealed {
        match journal.plan_applied_by(mac) {
            Ok(None) => {}
            Ok(Some(run)) => {
                eprintln!(
                    "error: plan {} refused, nothing will be done: it was already applied (run {run}); a saved plan is applied once: run `engine check --out` again",
                    args.target.display()
                );
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: cannot read the journal, nothing will be done: {e}");
                return exit::ERROR;
            }
        }
    }
    let targets = targets(&plan);
    let planned = targets.iter().filter(|t| t.fallback_for.is_none()).count();
    if args.format == Format::Human {
        let _ = check::print(Format::Human, "apply", &doc, &plan);
    }
    let policy_failed = doc.summary.failed_policies > 0;
    if planned == 0 {
        if args.format == Format::Human {
            println!("\nNo changes to apply.");
        } else {
            let _ = print_report(args.format, None, &journal, &doc, &[]);
        }
        record_empty_run(&mut journal, &args.target, &doc);
        return if policy_failed {
            exit::ERROR
        } else {
            exit::CLEAN
        };
    }
    if !args.auto_approve {
        match confirm(planned) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("apply cancelled: nothing was changed");
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
                return exit::ERROR;
            }
        }
    }

    let run = match journal.start_run("apply", &journal_source(&args.target, &doc), &doc.findings) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: cannot write the journal, nothing was done: {e}");
            return exit::ERROR;
        }
    };
    if let Some(mac) = &sealed {
        // Claimed under the run: a second apply of the same plan, even one
        // racing this one, finds it taken and sends nothing.
        let claimed = journal.claim_plan(mac, run);
        if !matches!(claimed, Ok(true)) {
            let why = match claimed {
                Err(e) => format!("cannot write the journal: {e}"),
                _ => "another run applied it first".to_string(),
            };
            eprintln!(
                "error: plan {} refused, nothing was done: {why}",
                args.target.display()
            );
            let _ = journal.finish_run(run, RunStatus::Failed, "{\"actions\":0}");
            return exit::ERROR;
        }
    }
    let journal = Arc::new(Mutex::new(journal));
    let results = execute_all(
        &aws,
        &journal,
        run,
        &targets,
        &own,
        usize::from(args.account.concurrency),
    )
    .await;
    let failed = results.iter().filter(|r| r.outcome == "failed").count();
    let status = if failed > 0 || policy_failed {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    let summary = serde_json::json!({
        "actions": results.len(),
        "failed": failed,
        "report_generated_at": doc.source.report_generated_at,
        "plan": doc.summary,
    });
    let j = lock(&journal);
    if let Err(e) = j.finish_run(run, status, &summary.to_string()) {
        eprintln!("warning: journal: {e}");
    }
    let _ = print_report(args.format, Some(run), &j, &doc, &results);
    if status == RunStatus::Ok {
        exit::CLEAN
    } else {
        exit::ERROR
    }
}

/// What the journal records as a run's source: the policies or plan file,
/// and when the report it was made from was generated.
fn journal_source(target: &Path, doc: &Document) -> String {
    match doc.source.report_generated_at {
        Some(at) => format!(
            "{} (report generated at {})",
            target.display(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => target.display().to_string(),
    }
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writes of a plan: enforcing policies that did not fail, mutating
/// kinds, remediable findings. A deactivation of a key another policy deletes
/// is kept as that delete's fallback.
pub fn targets(plan: &Plan) -> Vec<Target> {
    let superseded: BTreeSet<(usize, usize)> = plan.superseded().into_iter().collect();
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
    for mut t in fallbacks {
        t.fallback_for = out.iter().position(|d| {
            d.action.action == ActionKind::DeleteAccessKey
                && d.action.user == t.action.user
                && d.action.credential == t.action.credential
        });
        out.push(t);
    }
    out
}

fn result(a: &PlannedAction, outcome: Outcome, detail: String) -> ActionResult {
    ActionResult {
        policy: a.policy.clone(),
        action: a.action,
        user: a.user.clone(),
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
    aws: &Aws,
    journal: &Arc<Mutex<Journal>>,
    run: i64,
    targets: &[Target],
    own: &Own,
    concurrency: usize,
) -> Vec<ActionResult> {
    let mut results: Vec<Option<ActionResult>> = vec![None; targets.len()];
    let first: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].fallback_for.is_none())
        .collect();
    execute_batch(
        aws,
        journal,
        run,
        targets,
        &first,
        own,
        concurrency,
        &mut results,
    )
    .await;
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
    execute_batch(
        aws,
        journal,
        run,
        targets,
        &second,
        own,
        concurrency,
        &mut results,
    )
    .await;
    results
        .into_iter()
        .zip(targets)
        .enumerate()
        .filter_map(|(i, (r, t))| match r {
            Some(r) => Some(r),
            // Not needed: the delete that superseded it succeeded.
            None if t.fallback_for.is_some() && !second.contains(&i) => None,
            None => Some(result(
                &t.action,
                Outcome::Failed,
                "the action's task ended without a result".into(),
            )),
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn execute_batch(
    aws: &Aws,
    journal: &Arc<Mutex<Journal>>,
    run: i64,
    targets: &[Target],
    which: &[usize],
    own: &Own,
    concurrency: usize,
    results: &mut [Option<ActionResult>],
) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for &i in which {
        let t = targets[i].clone();
        let aws = aws.clone();
        let journal = journal.clone();
        let sem = sem.clone();
        let own = own.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, execute(&aws, &journal, run, &t, &own).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => eprintln!("error: an action task failed: {e}"),
        }
    }
}

/// Re-check, journal the intent, send, journal the result.
async fn execute(
    aws: &Aws,
    journal: &Mutex<Journal>,
    run: i64,
    t: &Target,
    own: &Own,
) -> ActionResult {
    let a = &t.action;
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
            tracing::info!(user = %a.user, action = %a.action, key = ?a.key_id, outcome = "skipped", "{why}");
            if let Err(e) = lock(journal).skipped(run, a, &why) {
                eprintln!("warning: journal: {e}");
            }
            return result(a, Outcome::Skipped, why);
        }
        Err(e) => {
            let detail = format!("not sent: cannot re-check it against the account: {e}");
            tracing::error!(user = %a.user, action = %a.action, key = ?a.key_id, outcome = "failed", "{detail}");
            let recorded = {
                let j = lock(journal);
                j.intent(run, a)
                    .and_then(|id| j.result(id, Outcome::Failed, &detail))
            };
            if let Err(e) = recorded {
                eprintln!("warning: journal: {e}");
            }
            return result(a, Outcome::Failed, detail);
        }
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
    tracing::info!(user = %a.user, action = %a.action, key = ?a.key_id, outcome = outcome.as_str(), "{detail}");
    if let Err(e) = lock(journal).result(id, outcome, &detail) {
        eprintln!("warning: journal: {e}");
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

/// Load a saved plan: sealed by this state directory, fresh, not a what-if,
/// made from the current policies, for the account we are connected to. Its
/// actions are then re-derived against the current policies and identity.
/// The last element is the plan's seal, which the journal claims so that it
/// is applied at most once.
async fn load_saved(
    path: &Path,
    args: &ApplyArgs,
) -> Result<(Plan, Document, Aws, Own, Option<String>), String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read plan {shown}: {e}"))?;
    let doc: Document = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{shown} is not a plan saved by `engine check --out`: {e}"))?;
    let refuse = |why: String| format!("plan {shown} refused, nothing will be done: {why}");
    saved::verify(&doc, &args.account.state.state).map_err(refuse)?;
    let Some(account) = doc.source.account.clone() else {
        return Err(refuse(
            "it was made from a credential report file, not an account: it has no key ids and cannot be applied".into(),
        ));
    };
    if doc.source.what_if {
        return Err(refuse(
            "it was made with --now, a what-if that is never applied".into(),
        ));
    }
    let age = Utc::now().signed_duration_since(doc.now);
    let max_age = chrono::TimeDelta::from_std(args.plan_max_age).unwrap_or(chrono::TimeDelta::MAX);
    if age > max_age || age < -live::MAX_CLOCK_SKEW {
        return Err(refuse(format!(
            "it was made at {}, more than --plan-max-age {} ago (or in the future); run `engine check --out` again",
            doc.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(args.plan_max_age)
        )));
    }
    let dir = doc
        .source
        .policy_dir
        .clone()
        .ok_or_else(|| refuse("it does not say which policies it was made from".into()))?;
    let set = engine_core::policy::load_dir(Path::new(&dir)).map_err(|errors| {
        check::print_policy_errors(&errors);
        refuse(format!(
            "the policies it was made from ({dir}) no longer load"
        ))
    })?;
    if doc.source.policy_digest.as_deref() != Some(saved::policy_digest(&set).as_str()) {
        return Err(refuse(format!(
            "the policies or plugins in {dir} (or the engine) changed since it was made; run `engine check --out` again"
        )));
    }
    let plan = doc
        .to_plan()
        .map_err(|e| refuse(format!("it is inconsistent: {e}")))?;
    let aws = live::connect(&args.account).await?;
    let identity = aws
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    if identity.account != account {
        return Err(refuse(format!(
            "it is for account {account}, but the credentials in use are for account {}",
            identity.account
        )));
    }
    let own = live::own_credentials(&identity);
    let plan = rederive(plan, &set, &own).map_err(refuse)?;
    let mut source = doc.source.clone();
    source.own_key_id = own.key_id.clone();
    source.identity = Some(identity.arn);
    let sealed = doc.mac.clone();
    let doc = Document::new(&plan, source);
    Ok((plan, doc, aws, own, sealed))
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
            let root = &*f.user == ROOT_USER;
            f.exempt = !root && policy.is_exempt(&f.user);
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

fn confirm(n: usize) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "refusing to apply without confirmation: stdin is not a terminal; review the plan and pass --auto-approve".into(),
        );
    }
    print!(
        "\nDo you want to perform these {n} action{}? Only 'yes' will be accepted: ",
        if n == 1 { "" } else { "s" }
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(line.trim() == "yes")
}

fn record_empty_run(j: &mut Journal, target: &Path, doc: &Document) {
    let recorded = j
        .start_run("apply", &target.display().to_string(), &doc.findings)
        .and_then(|run| {
            let status = if doc.summary.failed_policies > 0 {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            };
            j.finish_run(run, status, "{\"actions\":0}")
        });
    if let Err(e) = recorded {
        eprintln!("warning: journal: {e}");
    }
}

fn print_report(
    format: Format,
    run: Option<i64>,
    journal: &Journal,
    doc: &Document,
    results: &[ActionResult],
) -> std::io::Result<()> {
    let count = |o: &str| results.iter().filter(|r| r.outcome == o).count();
    let report = ApplyReport {
        run,
        journal: journal.path().display().to_string(),
        plan: doc,
        results: results.to_vec(),
        done: count("done"),
        done_on_retry: count("done-on-retry"),
        already_gone: count("already-gone"),
        skipped: count("skipped"),
        failed: count("failed"),
    };
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        return crate::render::write_json(&mut out, &report);
    }
    writeln!(out)?;
    // User names and key ids come from the plan, details from AWS errors.
    let t = engine_core::text::for_terminal;
    let wu = results
        .iter()
        .map(|r| t(&r.user).chars().count())
        .max()
        .unwrap_or(0);
    for r in results {
        writeln!(
            out,
            "  {:12}  {:21}  {:wu$}  {:12}  {:20}  {}{}",
            r.outcome,
            r.action.as_str(),
            t(&r.user),
            r.credential.as_str(),
            t(r.key_id.as_deref().unwrap_or("-")),
            t(&r.policy),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", t(&r.detail))
            }
        )?;
    }
    writeln!(
        out,
        "\nApply complete: {} done, {} done on retry, {} already gone, {} skipped, {} failed. Journal: {}{}",
        report.done,
        report.done_on_retry,
        report.already_gone,
        report.skipped,
        report.failed,
        t(&report.journal),
        run.map(|r| format!(" (run {r})")).unwrap_or_default()
    )
}
