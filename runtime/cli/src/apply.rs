//! `engine apply`: carry out exactly the plan, journaled, with bounded concurrency.
//!
//! `check` and `apply` share everything up to the plan; this is the other
//! executor. Its rules: only enforcing policies act; nothing is sent that is
//! not first written to the journal; a saved plan is re-checked against the
//! account and any target that no longer is as planned is skipped, not touched;
//! the engine's own key and the root account are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use engine_aws::{Aws, WriteOutcome};
use engine_core::plan::{Plan, PlannedAction};
use engine_core::{ActionKind, Mode};
use engine_journal::{Journal, Outcome, RunStatus};
use serde::Serialize;

use crate::check::{self, Prepared};
use crate::render::Document;
use crate::{ApplyArgs, Format, SourceArgs, exit, live};

/// The result of one planned action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub policy: String,
    pub action: ActionKind,
    pub user: String,
    pub credential: engine_core::Credential,
    pub key_id: Option<String>,
    /// `done`, `already-gone`, `skipped` or `failed`.
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
    already_gone: usize,
    skipped: usize,
    failed: usize,
}

pub async fn run(args: &ApplyArgs) -> u8 {
    let saved = args.target.is_file();
    let (plan, doc, aws) = if saved {
        match load_saved(&args.target, args).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
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
                ..
            }) => match snapshot.account {
                Some(account) => (plan, doc, account.aws),
                None => return exit::ERROR,
            },
            Err(code) => return code,
        }
    };

    let mut journal = match Journal::open(&args.account.state.state) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot open the journal, nothing will be done: {e}");
            return exit::ERROR;
        }
    };
    match journal.take_unfinished() {
        Ok(open) => {
            for a in open {
                eprintln!(
                    "warning: run {} journaled {} on {} {} ({}) at {} but recorded no result: the engine stopped mid-apply; the next credential report shows what happened (recorded as unknown)",
                    a.run_id,
                    a.action,
                    a.user,
                    a.credential,
                    a.key_id.as_deref().unwrap_or("-"),
                    a.intent_at
                );
            }
        }
        Err(e) => {
            eprintln!("error: cannot read the journal, nothing will be done: {e}");
            return exit::ERROR;
        }
    }

    let targets = targets(&plan);
    if args.format == Format::Human {
        let _ = check::print(Format::Human, "apply", &doc, &plan);
    }
    let policy_failed = doc.summary.failed_policies > 0;
    if targets.is_empty() {
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
        match confirm(targets.len()) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("apply cancelled: nothing was changed");
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    }

    let source = args.target.display().to_string();
    let run = match journal.start_run("apply", &source, &doc.findings) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: cannot write the journal, nothing was done: {e}");
            return exit::ERROR;
        }
    };
    let journal = Arc::new(Mutex::new(journal));

    // Decide, before sending anything, which targets are still as planned.
    let mut results: Vec<Option<ActionResult>> = vec![None; targets.len()];
    let mut go = Vec::new();
    let own_key = doc.source.own_key_id.clone();
    let skips = if saved {
        recheck(&aws, &targets).await
    } else {
        BTreeMap::new()
    };
    for (i, a) in targets.iter().enumerate() {
        let skip = if a.key_id.is_some() && a.key_id == own_key {
            Some("this is the access key the engine is running with".to_string())
        } else if a.credential.is_access_key() && a.key_id.is_none() {
            Some("the plan has no key id for this key".to_string())
        } else {
            skips.get(&i).cloned()
        };
        match skip {
            Some(why) => {
                let recorded = lock(&journal).skipped(run, a, &why);
                if let Err(e) = recorded {
                    eprintln!("warning: journal: {e}");
                }
                results[i] = Some(result(a, Outcome::Skipped, why));
            }
            None => go.push(i),
        }
    }

    let sem = Arc::new(tokio::sync::Semaphore::new(usize::from(
        args.account.concurrency,
    )));
    let mut tasks = tokio::task::JoinSet::new();
    for i in go {
        let a = targets[i].clone();
        let aws = aws.clone();
        let journal = journal.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (i, execute(&aws, &journal, run, &a).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => eprintln!("error: an action task failed: {e}"),
        }
    }
    let results: Vec<ActionResult> = results
        .into_iter()
        .zip(&targets)
        .map(|(r, a)| {
            r.unwrap_or_else(|| {
                result(
                    a,
                    Outcome::Failed,
                    "the action's task ended without a result".into(),
                )
            })
        })
        .collect();
    let failed = results.iter().filter(|r| r.outcome == "failed").count();
    let status = if failed > 0 || policy_failed {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    let summary = serde_json::json!({
        "actions": results.len(),
        "failed": failed,
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

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The actions that change the account: enforcing policies that did not
/// fail, mutating kinds, not superseded by a delete of the same key.
pub fn targets(plan: &Plan) -> Vec<PlannedAction> {
    let superseded: BTreeSet<(usize, usize)> = plan.superseded().into_iter().collect();
    let mut out = Vec::new();
    for (pi, p) in plan.policies.iter().enumerate() {
        if p.mode != Mode::Enforce || p.failure.is_some() {
            continue;
        }
        for (ai, a) in p.actions.iter().enumerate() {
            // The host checks already refused these; a hand-edited plan file
            // must not bring them back.
            let remediable = p.findings.get(a.finding).is_some_and(|f| f.remediable());
            if a.action.mutates() && remediable && !superseded.contains(&(pi, ai)) {
                out.push(a.clone());
            }
        }
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

/// Journal the intent, send, journal the result.
async fn execute(aws: &Aws, journal: &Mutex<Journal>, run: i64, a: &PlannedAction) -> ActionResult {
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
        (ActionKind::DeleteLoginProfile, _) => aws.delete_login_profile(&a.user).await,
        _ => {
            let r = result(a, Outcome::Skipped, "nothing to send".into());
            let _ = lock(journal).result(id, Outcome::Skipped, &r.detail);
            return r;
        }
    };
    let (outcome, detail) = match sent {
        Ok(WriteOutcome::Done) => (Outcome::Done, String::new()),
        Ok(WriteOutcome::AlreadyGone) => (
            Outcome::AlreadyGone,
            "NoSuchEntity: already gone".to_string(),
        ),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    tracing::info!(user = %a.user, action = %a.action, key = ?a.key_id, outcome = outcome.as_str(), "{detail}");
    if let Err(e) = lock(journal).result(id, outcome, &detail) {
        eprintln!("warning: journal: {e}");
    }
    result(a, outcome, detail)
}

/// Load a saved plan and check it belongs to the account we are connected to.
async fn load_saved(path: &Path, args: &ApplyArgs) -> Result<(Plan, Document, Aws), String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read plan {}: {e}", path.display()))?;
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a plan saved by `engine check --out`: {e}",
            path.display()
        )
    })?;
    let plan = doc.to_plan().map_err(|e| {
        format!(
            "plan {} is inconsistent, nothing will be done: {e}",
            path.display()
        )
    })?;
    let Some(account) = doc.source.account.clone() else {
        return Err(format!(
            "plan {} was made from a credential report file, not an account: it has no key ids and cannot be applied",
            path.display()
        ));
    };
    let aws = live::connect(&args.account).await?;
    let identity = aws
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    if identity.account != account {
        return Err(format!(
            "plan {} is for account {account}, but the credentials in use are for account {}; nothing will be done",
            path.display(),
            identity.account
        ));
    }
    let mut doc = doc;
    doc.source.own_key_id = Some(identity.access_key_id.clone()).filter(|k| !k.is_empty());
    doc.source.identity = Some(identity.arn);
    Ok((plan, doc, aws))
}

/// Re-check a saved plan's targets against the account: index -> why it is skipped.
async fn recheck(aws: &Aws, targets: &[PlannedAction]) -> BTreeMap<usize, String> {
    let mut skips = BTreeMap::new();
    // user -> key id -> active
    let mut keys: BTreeMap<&str, Result<BTreeMap<String, bool>, String>> = BTreeMap::new();
    for a in targets.iter().filter(|a| a.credential.is_access_key()) {
        if !keys.contains_key(a.user.as_str()) {
            let listed = aws
                .list_access_keys(&a.user)
                .await
                .map(|ks| ks.into_iter().map(|k| (k.id, k.active)).collect())
                .map_err(|e| e.to_string());
            keys.insert(&a.user, listed);
        }
    }
    for (i, a) in targets.iter().enumerate() {
        let skip = if a.credential.is_access_key() {
            match (keys.get(a.user.as_str()), &a.key_id) {
                (Some(Ok(ids)), Some(k)) => match ids.get(k) {
                    None => Some(format!(
                        "key {k} no longer exists (deleted or rotated since the plan)"
                    )),
                    Some(false) if a.action == ActionKind::DeactivateAccessKey => {
                        Some(format!("key {k} is already inactive"))
                    }
                    Some(_) => None,
                },
                (Some(Err(e)), _) => Some(format!("cannot re-check the user's keys: {e}")),
                _ => Some("the plan has no key id for this key".to_string()),
            }
        } else {
            match aws.login_profile_exists(&a.user).await {
                Ok(true) => None,
                Ok(false) => Some("the user has no console password any more".to_string()),
                Err(e) => Some(format!("cannot re-check the console password: {e}")),
            }
        };
        if let Some(why) = skip {
            skips.insert(i, why);
        }
    }
    skips
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
        already_gone: count("already-gone"),
        skipped: count("skipped"),
        failed: count("failed"),
    };
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        return writeln!(out);
    }
    writeln!(out)?;
    let wu = results
        .iter()
        .map(|r| r.user.chars().count())
        .max()
        .unwrap_or(0);
    for r in results {
        writeln!(
            out,
            "  {:12}  {:21}  {:wu$}  {:12}  {:20}  {}{}",
            r.outcome,
            r.action.as_str(),
            r.user,
            r.credential.as_str(),
            r.key_id.as_deref().unwrap_or("-"),
            r.policy,
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            }
        )?;
    }
    writeln!(
        out,
        "\nApply complete: {} done, {} already gone, {} skipped, {} failed. Journal: {}{}",
        report.done,
        report.already_gone,
        report.skipped,
        report.failed,
        report.journal,
        run.map(|r| format!(" (run {r})")).unwrap_or_default()
    )
}
