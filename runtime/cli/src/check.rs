//! `engine check`: evaluate, plan, render. Never changes anything.

use std::io::Write;
use std::path::Path;

use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use engine_core::plan::Plan;
use engine_core::policy::{self, PolicyErrors};

use engine_run::{Plugins, Prepared, Request, SourceSpec, saved};

use crate::render::{self, Document};
use crate::{CheckArgs, Format, SourceArgs, exit};

/// Load and validate the policies, and compile their plugins. On failure,
/// the error has been printed and the exit code is returned.
pub fn load(
    dir: &Path,
    cache: Option<&engine_run::plugins::Cache>,
) -> Result<(engine_core::PolicySet, Plugins), u8> {
    let set = match policy::load_dir(dir) {
        Ok(set) => set,
        Err(errors) => {
            print_policy_errors(&errors);
            return Err(exit::POLICY_ERROR);
        }
    };
    let plugins = Plugins::load(&set, cache).map_err(|e| {
        eprintln!("error: {}", engine_core::text::for_terminal(&e));
        exit::ERROR
    })?;
    Ok((set, plugins))
}

/// Take the snapshot and plan, with the policies and plugins loaded. On
/// failure, the error has been printed and the exit code is returned.
pub async fn prepare_loaded(
    dir: &Path,
    args: &SourceArgs,
    set: engine_core::PolicySet,
    plugins: &Plugins,
) -> Result<(Prepared, engine_core::PolicySet, SourceSpec), u8> {
    let fail = |e: String| {
        eprintln!("error: {}", engine_core::text::for_terminal(&e));
        exit::ERROR
    };
    let source = match (&args.report, &args.account.user) {
        (Some(path), _) => SourceSpec::File(path.clone()),
        (None, Some(user)) => SourceSpec::User {
            account: args.account.options(),
            user: user.clone(),
            user_id: None,
        },
        (None, None) => SourceSpec::Account(args.account.options()),
    };
    engine_run::prepare(Request {
        set: &set,
        plugins,
        dir,
        source: &source,
        now: args.now.unwrap_or_else(chrono::Utc::now),
        what_if: args.now.is_some(),
        observer: None,
    })
    .await
    .map(|p| (p, set.clone(), source.clone()))
    .map_err(fail)
}

pub async fn run(args: &CheckArgs) -> u8 {
    let (set, plugins) = match load(&args.dir, args.source.account.plugin_cache.cache().as_ref()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Many accounts: each its own snapshot and plan. A report file or one
    // user is about one account.
    if let Some(settings) = set.accounts.clone()
        && args.source.report.is_none()
        && args.user.is_none()
    {
        return crate::accounts::check(args, &set, &plugins, &settings).await;
    }
    let (mut prepared, set, source) =
        match prepare_loaded(&args.dir, &args.source, set, &plugins).await {
            Ok(p) => p,
            Err(code) => return code,
        };
    // The AWS Config rules the policies declare, against the account (or
    // "not compared" for a report file). A single user's check leaves them.
    if !matches!(source, SourceSpec::User { .. }) {
        let state = &args.source.account.state.state;
        engine_run::config_rules::attach(&mut prepared.doc, &set, &source, state).await;
    }
    let doc = &prepared.doc;
    if let Some(account) = &prepared.snapshot.account {
        tracing::info!(api_calls = account.api_calls, "live check done");
        journal_check(args, &[&prepared.doc]);
    }
    if let Some(out) = &args.out {
        if doc.source.what_if {
            eprintln!(
                "error: not saving {}: --now against a live account is a what-if, and its plan cannot be applied; drop --now to save a plan",
                out.display()
            );
            return exit::ERROR;
        }
        if let Err(e) = saved::save(out, doc, &args.source.account.state.state) {
            eprintln!("error: cannot save the plan to {}: {e}", out.display());
            return exit::ERROR;
        }
    }
    if let Err(e) = print(args.format, "check", doc, &prepared.plan) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write output: {e}");
        }
        return exit::ERROR;
    }
    exit_code(doc)
}

/// A live check is a run too: journal it with its findings, one run per
/// account of a run over many.
pub fn journal_check(args: &CheckArgs, docs: &[&Document]) {
    let state = &args.source.account.state.state;
    let result = args.source.account.state.open_journal().and_then(|mut j| {
        // Only the lock's holder takes over unfinished intents: another
        // process holding it (here or on another host) may be carrying them
        // out. Held only while taking over, so an apply is not kept waiting.
        match engine_journal::StateLock::try_acquire(state) {
            Ok(_lock) => {
                for a in j.take_unfinished()? {
                    tracing::warn!(
                        "run {} journaled {} on {} {} ({}) but recorded no result: the engine stopped mid-apply; check the account (recorded as unknown)",
                        a.run_id,
                        a.action,
                        a.user,
                        a.credential,
                        a.key_id.as_deref().unwrap_or("-")
                    );
                }
            }
            Err(e @ engine_journal::LockError::Held { .. }) => tracing::info!(
                "{e}: not taking over unfinished actions of earlier runs, which that process may be carrying out"
            ),
            Err(e) => tracing::warn!("not taking over unfinished actions of earlier runs: {e}"),
        }
        let dir = args.dir.display().to_string();
        for doc in docs {
            let source = match &doc.source.user {
                Some(_) => engine_run::execute::journal_source(&dir, doc),
                None => dir.clone(),
            };
            let run = j.start_account_run(
                doc.source.account.as_deref(),
                "check",
                &source,
                &doc.findings,
            )?;
            let summary = serde_json::to_string(&doc.summary).unwrap_or_default();
            j.finish_run(run, engine_journal::RunStatus::Ok, &summary)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        tracing::warn!("the check was not journaled: {e}");
    }
}

pub fn print(format: Format, command: &str, doc: &Document, plan: &Plan) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            render::write_json(&mut out, doc)
        }
        Format::Human => {
            let mut out = render::stdout();
            render::human(&mut out, command, doc, plan)?;
            out.flush()
        }
    }
}

/// 1 if any policy failed, else 2 if there are findings, else 0.
pub fn exit_code(doc: &Document) -> u8 {
    if doc.summary.failed_policies > 0 {
        exit::ERROR
    } else if doc.summary.findings > 0 {
        exit::FINDINGS
    } else {
        exit::CLEAN
    }
}

pub fn print_policy_errors(errors: &PolicyErrors) {
    let choice = if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none()
    {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    let config = codespan_reporting::term::Config::default();
    for d in &errors.diagnostics {
        let _ =
            codespan_reporting::term::emit_to_write_style(&mut stderr, &config, &errors.files, d);
    }
    let n = errors.diagnostics.len();
    let _ = writeln!(
        stderr,
        "error: the policy directory has {n} error{}; nothing was planned",
        if n == 1 { "" } else { "s" }
    );
}
