//! `check` and `apply` over many accounts (an `[accounts]` table): glue
//! around [`engine_run::prepare_accounts`] and
//! [`engine_run::accounts::execute_all`].
//!
//! Each account is planned from its own snapshot and carried out as its own
//! journaled run; a failing account is shown with its error and the others
//! go on. The output groups by account, with a total.

use std::io::Write;
use std::path::Path;

use chrono::Utc;
use engine_core::PolicySet;
use engine_core::plan::Plan;
use engine_core::policy::AccountsSettings;
use engine_run::accounts::{AccountApplied, AccountTarget, AccountWork, ExecuteAccounts};
use engine_run::document::AccountsDocument;
use engine_run::execute::{ActionResult, rederive, targets};
use engine_run::{AccountsPrepared, Document, Plugins, Request, SourceSpec, live, saved};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{ApplyArgs, CheckArgs, Format, apply, check, exit, render};

/// One account's plan in a run over many, with its live connection.
struct Planned {
    target: AccountTarget,
    /// The plan, its document, and how to act on it; or why there is none.
    result: Result<(Plan, Document, engine_aws::Aws, engine_core::snapshot::Own), String>,
}

/// A run over many accounts, planned: each account, who the engine is, its
/// own connection, the accounts left out.
struct PlannedRun {
    accounts: Vec<Planned>,
    identity: engine_aws::Identity,
    base: engine_aws::Aws,
    skipped: Vec<(String, String)>,
    now: chrono::DateTime<Utc>,
}

fn planned(prepared: AccountsPrepared, now: chrono::DateTime<Utc>) -> PlannedRun {
    let accounts = prepared
        .accounts
        .into_iter()
        .map(|a| Planned {
            target: a.target,
            result: a.result.and_then(|p| {
                let account = p
                    .snapshot
                    .account
                    .ok_or_else(|| "the snapshot has no account".to_string())?;
                Ok((p.plan, p.doc, account.aws, account.own))
            }),
        })
        .collect();
    PlannedRun {
        accounts,
        identity: prepared.identity,
        base: prepared.base,
        skipped: prepared.skipped,
        now,
    }
}

/// The document of a run over many accounts.
fn document(
    now: chrono::DateTime<Utc>,
    accounts: &[Planned],
    identity: &engine_aws::Identity,
    skipped: &[(String, String)],
    role: &str,
) -> AccountsDocument {
    let sections = accounts
        .iter()
        .map(|a| engine_run::document::AccountSection {
            account: a.target.id.clone(),
            name: a.target.name.clone(),
            role_arn: a.target.role_arn.clone(),
            error: a.result.as_ref().err().cloned(),
            plan: a.result.as_ref().ok().map(|(_, d, _, _)| d.clone()),
        })
        .collect();
    AccountsDocument::from_parts(now, identity, role, sections, skipped)
}

fn print_plan(
    format: Format,
    command: &str,
    doc: &AccountsDocument,
    plans: &[Option<&Plan>],
) -> std::io::Result<()> {
    match format {
        Format::Json => render::write_json(&mut std::io::stdout().lock(), doc),
        Format::Human => {
            let mut out = render::stdout();
            render::human_accounts(&mut out, command, doc, plans)?;
            out.flush()
        }
    }
}

/// 1 if an account or a policy failed, else 2 with findings, else 0.
fn exit_code(doc: &AccountsDocument) -> u8 {
    let s = &doc.summary;
    if s.failed_accounts > 0 || s.failed_policies > 0 {
        exit::ERROR
    } else if s.findings > 0 {
        exit::FINDINGS
    } else {
        exit::CLEAN
    }
}

async fn prepare(
    dir: &Path,
    set: &PolicySet,
    plugins: &Plugins,
    settings: &AccountsSettings,
    account: &crate::AccountArgs,
    now: Option<chrono::DateTime<Utc>>,
    command: &str,
) -> Result<PlannedRun, String> {
    let opts = account.options();
    let at = now.unwrap_or_else(Utc::now);
    let source = SourceSpec::Account(opts.clone());
    let prepared = engine_run::prepare_accounts(
        Request {
            set,
            plugins,
            dir,
            source: &source,
            now: at,
            what_if: now.is_some(),
            observer: None,
        },
        settings,
        &opts,
        usize::from(opts.account_concurrency),
        command,
    )
    .await?;
    Ok(planned(prepared, at))
}

/// `engine check DIR` when DIR names many accounts.
pub async fn check(
    args: &CheckArgs,
    set: &PolicySet,
    plugins: &Plugins,
    settings: &AccountsSettings,
) -> u8 {
    let t = engine_core::text::for_terminal;
    let PlannedRun {
        accounts,
        identity,
        skipped,
        now,
        ..
    } = match prepare(
        &args.dir,
        set,
        plugins,
        settings,
        &args.source.account,
        args.source.now,
        "check",
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let doc = document(now, &accounts, &identity, &skipped, &settings.role);
    let docs: Vec<&Document> = accounts
        .iter()
        .filter_map(|a| a.result.as_ref().ok().map(|(_, d, _, _)| d))
        .collect();
    check::journal_check(args, &docs);
    if let Some(out) = &args.out {
        if args.source.now.is_some() {
            eprintln!(
                "error: not saving {}: --now against a live account is a what-if, and its plan cannot be applied; drop --now to save a plan",
                out.display()
            );
            return exit::ERROR;
        }
        if let Err(e) = saved::save(out, &doc, &args.source.account.state.state) {
            eprintln!("error: cannot save the plan to {}: {e}", out.display());
            return exit::ERROR;
        }
    }
    let plans: Vec<Option<&Plan>> = accounts
        .iter()
        .map(|a| a.result.as_ref().ok().map(|(p, _, _, _)| p))
        .collect();
    if let Err(e) = print_plan(args.format, "check", &doc, &plans) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write output: {e}");
        }
        return exit::ERROR;
    }
    exit_code(&doc)
}

/// What `apply --format json` prints for many accounts.
#[derive(Serialize)]
struct AccountsApplyReport<'a> {
    plan: &'a AccountsDocument,
    accounts: Vec<AccountResult>,
    done: usize,
    done_on_retry: usize,
    already_gone: usize,
    skipped: usize,
    failed: usize,
    failed_accounts: usize,
    /// What was exported to Security Hub, per account (with `[security_hub]`).
    #[serde(skip_serializing_if = "<[engine_run::securityhub::Exported]>::is_empty")]
    security_hub: &'a [engine_run::securityhub::Exported],
}

#[derive(Serialize)]
struct AccountResult {
    account: String,
    run: Option<i64>,
    /// Why the account was not planned or carried out.
    error: Option<String>,
    results: Vec<ActionResult>,
}

/// `engine apply DIR` (the state lock held by the caller) when DIR names
/// many accounts.
pub async fn apply(
    args: &ApplyArgs,
    set: &PolicySet,
    plugins: &Plugins,
    settings: &AccountsSettings,
) -> u8 {
    let t = engine_core::text::for_terminal;
    let run = match prepare(
        &args.target,
        set,
        plugins,
        settings,
        &args.account,
        None,
        "apply",
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let doc = document(
        run.now,
        &run.accounts,
        &run.identity,
        &run.skipped,
        &settings.role,
    );
    carry_out(args, &doc, &run, None, set).await
}

/// Show, confirm, carry out, report: the rest of `apply` over many accounts.
async fn carry_out(
    args: &ApplyArgs,
    doc: &AccountsDocument,
    run: &PlannedRun,
    sealed: Option<&str>,
    set: &PolicySet,
) -> u8 {
    let security_hub = set.security_hub.as_ref();
    let accounts = &run.accounts;
    let mut journal = match args.account.state.open_journal() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot open the journal, nothing will be done: {e}");
            return exit::ERROR;
        }
    };
    if let Err(e) = apply::take_over_unfinished(&mut journal) {
        eprintln!("error: cannot read the journal, nothing will be done: {e}");
        return exit::ERROR;
    }
    if let Some(mac) = sealed {
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
    drop(journal);
    let plans: Vec<Option<&Plan>> = accounts
        .iter()
        .map(|a| a.result.as_ref().ok().map(|(p, _, _, _)| p))
        .collect();
    if args.format == Format::Human {
        let _ = print_plan(Format::Human, "apply", doc, &plans);
    }
    let planned: usize = plans
        .iter()
        .flatten()
        .map(|p| {
            targets(p)
                .iter()
                .filter(|t| t.fallback_for.is_none())
                .count()
        })
        .sum();
    if planned > 0 && !args.auto_approve {
        match apply::confirm(planned) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("apply cancelled: nothing was changed");
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("error: {}", engine_core::text::for_terminal(&e));
                return exit::ERROR;
            }
        }
    }
    let work: Vec<AccountWork<'_>> = accounts
        .iter()
        .filter_map(|a| {
            let (plan, d, aws, own) = a.result.as_ref().ok()?;
            Some(AccountWork {
                account: &a.target.id,
                doc: d,
                plan,
                aws,
                own,
            })
        })
        .collect();
    let target = args.target.display().to_string();
    let notifier = set
        .notifications
        .as_ref()
        .map(|n| engine_notify::Notifier::new(n, run.base.sdk_config()));
    let applied = engine_run::accounts::execute_all(
        &work,
        &ExecuteAccounts {
            state: &args.account.state.state,
            retention: args.account.state.journal_retention,
            command: "apply",
            target: &target,
            claim: sealed,
            accounts_at_once: usize::from(args.account.account_concurrency),
            per_account: usize::from(args.account.concurrency),
            cancel: CancellationToken::new(),
            notifier: notifier.as_ref(),
        },
    )
    .await;
    // An account that could not be planned is a failed run of its own.
    for a in accounts {
        if let Err(e) = &a.result {
            engine_run::journal_failed_run(
                &args.account.state.state,
                args.account.state.journal_retention,
                Some(&a.target.id),
                "apply",
                &target,
                e,
            );
        }
    }
    let exported = match security_hub {
        Some(hub) => {
            let empty = Vec::new();
            let runs: Vec<engine_run::securityhub::AccountRun<'_>> = accounts
                .iter()
                .filter_map(|a| {
                    let (_, d, aws, _) = a.result.as_ref().ok()?;
                    let results = applied
                        .iter()
                        .find(|x| x.account == a.target.id)
                        .and_then(|x| x.result.as_ref().ok())
                        .map(|x| &x.results)
                        .unwrap_or(&empty);
                    Some(engine_run::securityhub::AccountRun {
                        account: &a.target.id,
                        doc: d,
                        results,
                        aws,
                    })
                })
                .collect();
            engine_run::securityhub::export(
                hub,
                &run.base,
                &run.identity.account,
                &runs,
                &args.account.state.state,
                Utc::now(),
                None,
            )
            .await
        }
        None => Vec::new(),
    };
    report(args, doc, accounts, &applied, &exported)
}

fn report(
    args: &ApplyArgs,
    doc: &AccountsDocument,
    accounts: &[Planned],
    applied: &[AccountApplied],
    exported: &[engine_run::securityhub::Exported],
) -> u8 {
    let t = engine_core::text::for_terminal;
    let mut rows = Vec::new();
    for a in accounts {
        let mut row = AccountResult {
            account: a.target.id.clone(),
            run: None,
            error: a.result.as_ref().err().cloned(),
            results: Vec::new(),
        };
        if let Some(done) = applied.iter().find(|d| d.account == a.target.id) {
            match &done.result {
                Ok(run) => {
                    row.run = Some(run.run);
                    row.results = run.results.clone();
                    if run.status != engine_journal::RunStatus::Ok && row.error.is_none() {
                        row.error = Some(format!("run {} failed", run.run));
                    }
                }
                Err(e) => row.error = Some(e.clone()),
            }
        }
        rows.push(row);
    }
    let count = |o: &str| {
        rows.iter()
            .flat_map(|r| &r.results)
            .filter(|r| r.outcome == o)
            .count()
    };
    let failed_accounts = rows.iter().filter(|r| r.error.is_some()).count();
    let out = AccountsApplyReport {
        plan: doc,
        done: count("done"),
        done_on_retry: count("done-on-retry"),
        already_gone: count("already-gone"),
        skipped: count("skipped"),
        failed: count("failed"),
        failed_accounts,
        accounts: rows,
        security_hub: exported,
    };
    let mut stdout = std::io::stdout().lock();
    let printed = if args.format == Format::Json {
        render::write_json(&mut stdout, &out)
    } else {
        (|| -> std::io::Result<()> {
            for (r, a) in out.accounts.iter().zip(accounts) {
                writeln!(stdout)?;
                writeln!(stdout, "account {}:", t(&a.target.label()))?;
                if let Some(e) = &r.error {
                    writeln!(stdout, "  error: {}", t(e))?;
                }
                apply::write_results(&mut stdout, &r.results)?;
            }
            apply::write_exported(&mut stdout, exported)?;
            writeln!(
                stdout,
                "\nApplied in {} accounts ({} failed): {} done, {} done on retry, {} already gone, {} skipped, {} failed.",
                out.accounts.len(),
                failed_accounts,
                out.done,
                out.done_on_retry,
                out.already_gone,
                out.skipped,
                out.failed
            )
        })()
    };
    if let Err(e) = printed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {e}");
    }
    let export_failed = exported
        .iter()
        .any(|e| e.error.is_some() || !e.failed.is_empty());
    if failed_accounts == 0 && out.failed == 0 && !export_failed {
        exit::CLEAN
    } else {
        exit::ERROR
    }
}

/// `engine apply plan.json` for a plan over many accounts: sealed, fresh,
/// made from the current policies (which still name these accounts and
/// this role), for the engine's own account; each account reached again
/// through its role and its actions re-derived against the current
/// policies and the identity there.
pub async fn apply_saved(args: &ApplyArgs, doc: AccountsDocument) -> u8 {
    let shown = args.target.display().to_string();
    let loaded = load_saved(args, &doc, &shown).await;
    let (accounts, set, base) = match loaded {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", engine_core::text::for_terminal(&e));
            return exit::ERROR;
        }
    };
    let mac = doc.mac.clone();
    let identity = engine_aws::Identity {
        account: doc.engine_account.clone(),
        arn: doc.identity.clone(),
        user_id: String::new(),
        access_key_id: String::new(),
    };
    let skipped: Vec<(String, String)> = doc
        .skipped
        .iter()
        .map(|s| (s.account.clone(), s.reason.clone()))
        .collect();
    let shown_doc = document(doc.now, &accounts, &identity, &skipped, &doc.role);
    let run = PlannedRun {
        accounts,
        identity,
        base,
        skipped,
        now: doc.now,
    };
    carry_out(args, &shown_doc, &run, mac.as_deref(), &set).await
}

async fn load_saved(
    args: &ApplyArgs,
    doc: &AccountsDocument,
    shown: &str,
) -> Result<(Vec<Planned>, PolicySet, engine_aws::Aws), String> {
    let refuse = |why: String| format!("plan {shown} refused, nothing will be done: {why}");
    saved::verify(doc, &args.account.state.state).map_err(refuse)?;
    let age = Utc::now().signed_duration_since(doc.now);
    let max_age = chrono::TimeDelta::from_std(args.plan_max_age).unwrap_or(chrono::TimeDelta::MAX);
    if age > max_age || age < -live::MAX_CLOCK_SKEW {
        return Err(refuse(format!(
            "it was made at {}, more than --plan-max-age {} ago (or in the future); run `engine check --out` again",
            doc.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(args.plan_max_age)
        )));
    }
    let plans: Vec<&Document> = doc
        .accounts
        .iter()
        .filter_map(|a| a.plan.as_ref())
        .collect();
    if plans.iter().any(|p| p.source.what_if) {
        return Err(refuse(
            "it was made with --now, a what-if that is never applied".into(),
        ));
    }
    let Some(dir) = plans.first().and_then(|p| p.source.policy_dir.clone()) else {
        return Err(refuse("it has no account with a plan".into()));
    };
    let set = engine_core::policy::load_dir(Path::new(&dir)).map_err(|errors| {
        check::print_policy_errors(&errors);
        refuse(format!(
            "the policies it was made from ({dir}) no longer load"
        ))
    })?;
    let digest = saved::policy_digest(&set);
    if plans.iter().any(|p| {
        p.source.policy_digest.as_deref() != Some(digest.as_str())
            || p.source.policy_dir.as_deref() != Some(dir.as_str())
    }) {
        return Err(refuse(format!(
            "the policies or plugins in {dir} (or the engine) changed since it was made; run `engine check --out` again"
        )));
    }
    let Some(settings) = set.accounts.clone() else {
        return Err(refuse(format!(
            "the policies in {dir} no longer name accounts"
        )));
    };
    if settings.role != doc.role {
        return Err(refuse(format!(
            "it assumes role {}, and the policies now say {}",
            doc.role, settings.role
        )));
    }
    let base = live::connect(&args.account.options()).await?;
    let identity = base
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    if identity.account != doc.engine_account {
        return Err(refuse(format!(
            "it was made from account {}, but the credentials in use are for account {}",
            doc.engine_account, identity.account
        )));
    }
    let session = engine_core::accounts::session_name("apply", Utc::now().timestamp());
    let mut out = Vec::new();
    for section in &doc.accounts {
        let role_arn =
            (section.account != identity.account).then(|| settings.role_arn(&section.account));
        if role_arn != section.role_arn {
            return Err(refuse(format!(
                "account {} is reached through {:?} in the plan, not {:?}",
                section.account, section.role_arn, role_arn
            )));
        }
        let target = AccountTarget {
            id: section.account.clone(),
            name: section.name.clone(),
            role_arn,
        };
        let Some(saved_doc) = &section.plan else {
            out.push(Planned {
                target,
                result: Err(section
                    .error
                    .clone()
                    .unwrap_or_else(|| "it had no plan".into())),
            });
            continue;
        };
        if saved_doc.source.account.as_deref() != Some(section.account.as_str()) {
            return Err(refuse(format!(
                "the section of account {} holds a plan of account {:?}",
                section.account, saved_doc.source.account
            )));
        }
        let plan = saved_doc.to_plan().map_err(|e| {
            refuse(format!(
                "account {}: it is inconsistent: {e}",
                section.account
            ))
        })?;
        let result = async {
            let aws =
                engine_run::accounts::connect(&target, &base, &settings, &session, None).await?;
            let there = aws.identity().await.map_err(|e| {
                format!(
                    "cannot tell who the engine is in account {} (GetCallerIdentity): {e}",
                    target.id
                )
            })?;
            if there.account != target.id {
                return Err(format!(
                    "the credentials for account {} answered as account {}",
                    target.id, there.account
                ));
            }
            let own = live::own_credentials(&there);
            let plan = rederive(plan, &set, &own)?;
            let mut source = saved_doc.source.clone();
            source.own_key_id = own.key_id.clone();
            source.identity = Some(there.arn);
            let d = Document::new(&plan, source);
            Ok((plan, d, aws, own))
        }
        .await;
        out.push(Planned { target, result });
    }
    Ok((out, set, base))
}
