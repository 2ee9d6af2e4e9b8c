//! `engine apply`: show the plan, ask, carry it out ([`engine_run::execute`]).
//!
//! This is glue: the state lock, the confirmation, saved plans (sealed, fresh,
//! made from the current policies, and re-derived by the host checks before
//! anything runs: see [`engine_run::saved`]) and the rendering of results.
//! The executor's rules are in [`engine_run::execute`].

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use chrono::Utc;
use engine_aws::Aws;
use engine_core::plan::Plan;
use engine_core::snapshot::Own;
use engine_run::config_rules::{self, RuleResult};
use engine_run::execute::{self, ActionResult, Execution, rederive, targets};
use engine_run::{Prepared, SourceSpec, live, saved};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::check;
use crate::render::Document;
use crate::{ApplyArgs, Format, SourceArgs, exit};

#[derive(Debug, Serialize)]
struct ApplyReport<'a> {
    run: Option<i64>,
    journal: String,
    plan: &'a Document,
    results: Vec<ActionResult>,
    /// What each AWS Config rule write did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config_rules: Vec<RuleResult>,
    /// What was exported to Security Hub (with `[security_hub]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    security_hub: Vec<engine_run::securityhub::Exported>,
    done: usize,
    done_on_retry: usize,
    already_gone: usize,
    skipped: usize,
    failed: usize,
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
    // Many accounts: a saved plan over many, or policies that name them.
    if saved {
        match read_accounts_plan(&args.target) {
            Ok(Some(doc)) => return crate::accounts::apply_saved(args, doc).await,
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {}", engine_core::text::for_terminal(&e));
                return exit::ERROR;
            }
        }
    }
    let loaded_set = if saved {
        None
    } else {
        match check::load(&args.target, args.account.plugin_cache.cache().as_ref()) {
            Ok(l) => Some(l),
            Err(code) => return code,
        }
    };
    if let Some((set, plugins)) = &loaded_set
        && args.user.is_none()
        && let Some(settings) = set.accounts.clone()
    {
        return crate::accounts::apply(args, set, plugins, &settings).await;
    }
    // Security Hub: whole-account runs only (one user's run would make
    // every other finding look resolved).
    let mut security_hub = loaded_set
        .as_ref()
        .and_then(|(set, _)| set.security_hub.clone())
        .filter(|_| args.user.is_none());
    // Owners' messages: `[notifications]` of the policies (the plan's own
    // directory for a saved plan).
    let mut notifications = loaded_set
        .as_ref()
        .and_then(|(set, _)| set.notifications.clone());
    let loaded = if saved {
        load_saved(&args.target, args)
            .await
            .map(|(plan, doc, aws, own, sealed, (hub, notify))| {
                security_hub = hub;
                notifications = notify;
                (plan, doc, aws, own, sealed, None)
            })
            .map_err(|e| {
                eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
                exit::ERROR
            })
    } else {
        let source = SourceArgs {
            report: None,
            now: None,
            account: args.account.clone(),
        };
        let Some((set, plugins)) = loaded_set else {
            return exit::ERROR;
        };
        match check::prepare_loaded(&args.target, &source, set, &plugins)
            .await
            .map(|(p, _, _)| p)
        {
            Ok(Prepared {
                plan,
                mut doc,
                snapshot,
            }) => match snapshot.account {
                Some(account) => match plan_config_rules(&mut doc, args).await {
                    Ok(conn) => Ok((plan, doc, account.aws, account.own, None, conn)),
                    Err(e) => {
                        eprintln!("error: {}", engine_core::text::for_terminal(&e));
                        Err(exit::ERROR)
                    }
                },
                None => Err(exit::ERROR),
            },
            Err(code) => Err(code),
        }
    };
    let (plan, doc, aws, own, sealed, config) = match loaded {
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
    if let Err(e) = take_over_unfinished(&mut journal) {
        eprintln!("error: cannot read the journal, nothing will be done: {e}");
        return exit::ERROR;
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
    let planned = targets(&plan)
        .iter()
        .filter(|t| t.fallback_for.is_none())
        .count();
    if args.format == Format::Human {
        let _ = check::print(Format::Human, "apply", &doc, &plan);
    }
    let policy_failed = doc.summary.failed_policies > 0;
    let rule_writes = if config.is_some() {
        doc.config_rules
            .iter()
            .filter(|e| e.change.writes())
            .count()
    } else {
        0
    };
    let state = args.account.state.state.clone();
    if planned == 0 && rule_writes == 0 {
        // Nothing to send; records of rules already gone are still dropped.
        let rules = match &config {
            Some(conn) => config_rules::apply(conn, &doc.config_rules, &state).await,
            None => Vec::new(),
        };
        record_empty_run(&mut journal, &args.target, &doc);
        let exported = export(security_hub.as_ref(), &doc, &[], &aws, args).await;
        if args.format == Format::Human {
            println!("\nNo changes to apply.");
            let _ = write_exported(&mut std::io::stdout(), &exported);
        } else {
            let _ = print_report(
                args.format,
                None,
                journal.path(),
                &doc,
                &[],
                &rules,
                &exported,
            );
        }
        return if policy_failed
            || rules.iter().any(|r| r.outcome == "failed")
            || export_failed(&exported)
        {
            exit::ERROR
        } else {
            exit::CLEAN
        };
    }
    if !args.auto_approve {
        match confirm(planned + rule_writes) {
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

    let notifier = notifications
        .as_ref()
        .map(|n| engine_notify::Notifier::new(n, aws.sdk_config()));
    let exec = Execution {
        aws: &aws,
        own: &own,
        concurrency: usize::from(args.account.concurrency),
        cancel: CancellationToken::new(),
        notifier: notifier.as_ref(),
    };
    let target = args.target.display().to_string();
    if planned == 0 {
        // Only AWS Config rules to change.
        let rules = match &config {
            Some(conn) => config_rules::apply(conn, &doc.config_rules, &state).await,
            None => Vec::new(),
        };
        let failed = rules.iter().any(|r| r.outcome == "failed");
        journal_config_run(&mut journal, &target, &doc, &rules);
        let exported = export(security_hub.as_ref(), &doc, &[], &aws, args).await;
        let _ = print_report(
            args.format,
            None,
            journal.path(),
            &doc,
            &[],
            &rules,
            &exported,
        );
        return if failed || policy_failed || export_failed(&exported) {
            exit::ERROR
        } else {
            exit::CLEAN
        };
    }
    let applied = match execute::apply(
        journal,
        "apply",
        &target,
        &doc,
        &plan,
        sealed.as_deref(),
        &exec,
    )
    .await
    {
        Ok(applied) => applied,
        Err(e) => {
            let e = engine_core::text::for_terminal(&e);
            match sealed {
                Some(_) => eprintln!("error: plan {} refused, {e}", args.target.display()),
                None => eprintln!("error: {e}"),
            }
            return exit::ERROR;
        }
    };
    let status = applied.status;
    let rules = match &config {
        Some(conn) => config_rules::apply(conn, &doc.config_rules, &state).await,
        None => Vec::new(),
    };
    if !rules.is_empty()
        && let Ok(mut j) = args.account.state.open_journal()
    {
        journal_config_run(&mut j, &target, &doc, &rules);
    }
    let exported = export(security_hub.as_ref(), &doc, &applied.results, &aws, args).await;
    let _ = print_report(
        args.format,
        Some(applied.run),
        &applied.journal,
        &doc,
        &applied.results,
        &rules,
        &exported,
    );
    if notifier.is_some() {
        eprintln!("{}", notices_line(&applied.notices));
    }
    if status == engine_journal::RunStatus::Ok
        && !rules.iter().any(|r| r.outcome == "failed")
        && !export_failed(&exported)
    {
        exit::CLEAN
    } else {
        exit::ERROR
    }
}

/// What happened to the owners' messages of a run, in one line.
pub(crate) fn notices_line(n: &engine_run::notices::Sent) -> String {
    format!(
        "messages to owners: {} sent, {} failed, {} sent by an earlier run (not again), {} with no channel; {} run summar{} sent",
        n.sent,
        n.failed,
        n.already,
        n.nowhere,
        n.summaries,
        if n.summaries == 1 { "y" } else { "ies" }
    )
}

/// A saved plan over many accounts (it has an `accounts` array); `None`
/// for a plan of one account.
fn read_accounts_plan(
    path: &Path,
) -> Result<Option<engine_run::document::AccountsDocument>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read plan {shown}: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{shown} is not a plan saved by `engine check --out`: {e}"))?;
    if value.get("accounts").is_none_or(|a| !a.is_array()) {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("{shown} is not a plan saved by `engine check --out`: {e}"))
}

/// Load a saved plan: sealed by this state directory, fresh, not a what-if,
/// made from the current policies, for the account we are connected to. Its
/// actions are then re-derived against the current policies and identity.
/// The last element is the plan's seal, which the journal claims so that it
/// is applied at most once.
#[allow(clippy::type_complexity)]
async fn load_saved(
    path: &Path,
    args: &ApplyArgs,
) -> Result<
    (
        Plan,
        Document,
        Aws,
        Own,
        Option<String>,
        (
            Option<engine_core::policy::SecurityHubSettings>,
            Option<engine_core::policy::NotificationSettings>,
        ),
    ),
    String,
> {
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
    let aws = live::connect(&args.account.options()).await?;
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
    Ok((
        plan,
        doc,
        aws,
        own,
        sealed,
        (set.security_hub.clone(), set.notifications.clone()),
    ))
}

pub(crate) fn confirm(n: usize) -> Result<bool, String> {
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

fn record_empty_run(j: &mut engine_journal::Journal, target: &Path, doc: &Document) {
    let recorded = j
        .start_account_run(
            doc.source.account.as_deref(),
            "apply",
            &target.display().to_string(),
            &doc.findings,
        )
        .and_then(|run| {
            let status = if doc.summary.failed_policies > 0 {
                engine_journal::RunStatus::Failed
            } else {
                engine_journal::RunStatus::Ok
            };
            j.finish_run(run, status, "{\"actions\":0}")
        });
    if let Err(e) = recorded {
        eprintln!("warning: journal: {e}");
    }
}

/// Plan the AWS Config rules of the policy directory against the account
/// (read again: `check::prepare` keeps its set to itself), into `doc`.
async fn plan_config_rules(
    doc: &mut Document,
    args: &ApplyArgs,
) -> Result<Option<engine_awsconfig::AwsConfig>, String> {
    let set = engine_core::policy::load_dir(&args.target).map_err(|errors| {
        check::print_policy_errors(&errors);
        "the policies changed while planning; nothing was done".to_string()
    })?;
    if doc.source.policy_digest.as_deref() != Some(saved::policy_digest(&set).as_str()) {
        return Err("the policies changed while planning; nothing was done".into());
    }
    let source = SourceSpec::Account(args.account.options());
    Ok(config_rules::attach(doc, &set, &source, &args.account.state.state).await)
}

/// The AWS Config rule writes, journaled as a run of their own
/// (`apply-config-rules`) whose summary lists each result.
fn journal_config_run(
    j: &mut engine_journal::Journal,
    target: &str,
    doc: &Document,
    rules: &[RuleResult],
) {
    if let Err(e) = config_rules::journal(j, target, rules, doc.summary.failed_policies > 0) {
        eprintln!("warning: journal: {e}");
    }
}

/// Close the runs a crashed engine left and report, once, the intents they
/// left without a result (recorded as unknown). Only for the lock's holder.
pub(crate) fn take_over_unfinished(
    journal: &mut engine_journal::Journal,
) -> Result<(), engine_journal::JournalError> {
    for a in journal.take_unfinished()? {
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
    Ok(())
}

/// What was exported to Security Hub, one line per account.
pub(crate) fn write_exported(
    out: &mut dyn Write,
    exported: &[engine_run::securityhub::Exported],
) -> std::io::Result<()> {
    let t = engine_core::text::for_terminal;
    for e in exported {
        writeln!(
            out,
            "Security Hub, account {}: {} findings imported, {} resolved{}{}",
            t(&e.account),
            e.imported,
            e.resolved,
            if e.failed.is_empty() {
                String::new()
            } else {
                format!(", {} refused", e.failed.len())
            },
            e.error
                .as_deref()
                .map(|err| format!("; error: {}", t(err)))
                .unwrap_or_default()
        )?;
        for (id, why) in &e.failed {
            writeln!(out, "  refused {}: {}", t(id), t(why))?;
        }
    }
    Ok(())
}

/// One line per action result.
pub(crate) fn write_results(out: &mut dyn Write, results: &[ActionResult]) -> std::io::Result<()> {
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
    Ok(())
}

/// Export the findings of a whole-account run to Security Hub, when the
/// policies say so (`security_hub`); nothing otherwise.
async fn export(
    security_hub: Option<&engine_core::policy::SecurityHubSettings>,
    doc: &Document,
    results: &[ActionResult],
    aws: &Aws,
    args: &ApplyArgs,
) -> Vec<engine_run::securityhub::Exported> {
    let (Some(hub), Some(account)) = (security_hub, doc.source.account.as_deref()) else {
        return Vec::new();
    };
    let runs = [engine_run::securityhub::AccountRun {
        account,
        doc,
        results,
        aws,
    }];
    engine_run::securityhub::export(
        hub,
        aws,
        account,
        &runs,
        &args.account.state.state,
        Utc::now(),
        None,
    )
    .await
}

fn export_failed(exported: &[engine_run::securityhub::Exported]) -> bool {
    exported
        .iter()
        .any(|e| e.error.is_some() || !e.failed.is_empty())
}

pub(crate) fn print_report(
    format: Format,
    run: Option<i64>,
    journal: &Path,
    doc: &Document,
    results: &[ActionResult],
    rules: &[RuleResult],
    exported: &[engine_run::securityhub::Exported],
) -> std::io::Result<()> {
    let count = |o: &str| results.iter().filter(|r| r.outcome == o).count();
    let report = ApplyReport {
        run,
        journal: journal.display().to_string(),
        plan: doc,
        results: results.to_vec(),
        config_rules: rules.to_vec(),
        security_hub: exported.to_vec(),
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
    write_results(&mut out, results)?;
    let t = engine_core::text::for_terminal;
    for r in rules {
        writeln!(
            out,
            "  {:12}  {:6} AWS Config rule {} ({}){}",
            r.outcome,
            r.change,
            t(&r.name),
            t(&r.region),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", t(&r.detail))
            }
        )?;
    }
    if !rules.is_empty() {
        let n = |o: &str| rules.iter().filter(|r| r.outcome == o).count();
        writeln!(
            out,
            "\nAWS Config rules: {} done, {} already gone, {} failed.",
            n("done"),
            n("already-gone"),
            n("failed")
        )?;
    }
    write_exported(&mut out, exported)?;
    if run.is_none() && results.is_empty() {
        return Ok(());
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
