//! `engine handle-event DIR FILE|-`: one AWS Config compliance event, as the
//! daemon handles the messages of its queue ([`engine_run::event::handle`]).
//!
//! Glue: read the event, load the policies and plugins, take the state lock
//! (unless `--dry-run`), hand over, print what came of it.

use std::io::Read;
use std::path::Path;

use engine_core::event;
use engine_run::event::{EventContext, Handled, UserDirectory};
use engine_run::{ActionResult, Document, Plugins};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{Format, HandleEventArgs, apply, check, exit};

/// The JSON answer (`--format json`).
#[derive(Serialize)]
struct EventReport<'a> {
    /// `acted` (a run for the user, journaled), `planned` (`--dry-run`),
    /// `ignored` or `failed`.
    outcome: &'static str,
    /// Why an event was ignored (`unknown-rule`, `not-non-compliant`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Why, in words; or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    policies: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a Document>,
    #[serde(skip_serializing_if = "<[ActionResult]>::is_empty")]
    results: &'a [ActionResult],
}

impl EventReport<'_> {
    fn new(outcome: &'static str) -> Self {
        EventReport {
            outcome,
            reason: None,
            detail: None,
            user: None,
            user_id: None,
            policies: &[],
            run: None,
            plan: None,
            results: &[],
        }
    }
}

fn read_event(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_EVENT_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read the event from standard input: {e}"))?;
        if buf.len() as u64 > MAX_EVENT_BYTES {
            return Err(format!(
                "the event on standard input is larger than {MAX_EVENT_BYTES} bytes: EventBridge events are at most 256 KiB"
            ));
        }
        return Ok(buf);
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read event {}: {e}", path.display()))?;
    if meta.len() > MAX_EVENT_BYTES {
        return Err(format!(
            "event {} is larger than {MAX_EVENT_BYTES} bytes: EventBridge events are at most 256 KiB",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read event {}: {e}", path.display()))
}

/// EventBridge events are at most 256 KiB; allow some slack for an SNS envelope.
const MAX_EVENT_BYTES: u64 = 1 << 20;

fn print_json(report: &EventReport<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = crate::render::write_json(&mut out, report)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {e}");
    }
}

pub async fn run(args: &HandleEventArgs) -> u8 {
    let t = engine_core::text::for_terminal;
    let body = match read_event(&args.event) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let ev = match event::parse(&body) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!(
                "error: the event is malformed, nothing was done: {}",
                t(&e.to_string())
            );
            return exit::ERROR;
        }
    };
    let set = match engine_core::policy::load_dir(&args.dir) {
        Ok(set) => set,
        Err(errors) => {
            check::print_policy_errors(&errors);
            return exit::POLICY_ERROR;
        }
    };
    // Decided before anything is loaded or locked: an event for nobody
    // needs neither the plugins nor AWS.
    if let event::Verdict::Ignore(why) = event::classify(&ev, &set) {
        return ignored(args, &why);
    }
    let plugins = match Plugins::load(&set, args.account.plugin_cache.cache().as_ref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", t(&e));
            return exit::ERROR;
        }
    };
    let state = &args.account.state.state;
    let _lock = if args.dry_run {
        None
    } else {
        match engine_journal::StateLock::acquire(state, args.lock_timeout) {
            Ok(lock) => Some(lock),
            Err(e) => {
                eprintln!("error: {}; nothing was done", t(&e.to_string()));
                return exit::ERROR;
            }
        }
    };
    if !args.dry_run {
        let took = args
            .account
            .state
            .open_journal()
            .and_then(|mut j| apply::take_over_unfinished(&mut j));
        if let Err(e) = took {
            eprintln!("error: cannot read the journal, nothing was done: {e}");
            return exit::ERROR;
        }
    }
    let account = args.account.options();
    let origin = format!("event {}", args.event.display());
    let ctx = EventContext {
        set: &set,
        plugins: &plugins,
        dir: &args.dir,
        account: &account,
        state,
        retention: args.account.state.journal_retention,
        observer: None,
        cancel: CancellationToken::new(),
        origin: &origin,
        dry_run: args.dry_run,
    };
    let mut users = UserDirectory::new();
    match engine_run::event::handle(&ev, &ctx, &mut users).await {
        Ok(Handled::Ignored(why)) => ignored(args, &why),
        Err(f) => {
            if args.format == Format::Json {
                let mut r = EventReport::new("failed");
                r.detail = Some(f.error.clone());
                r.run = f.run;
                print_json(&r);
            }
            eprintln!("error: {}", t(&f.error));
            exit::ERROR
        }
        Ok(Handled::Ran(run)) => {
            let Some(applied) = &run.applied else {
                // --dry-run: the plan, as `check --user` shows it.
                if args.format == Format::Json {
                    let mut r = EventReport::new("planned");
                    r.user = Some(&run.user);
                    r.user_id = Some(&run.user_id);
                    r.policies = &run.policies;
                    r.plan = Some(&run.doc);
                    print_json(&r);
                } else {
                    eprintln!(
                        "event: {} NON_COMPLIANT under {}; the plan for this user (dry run, nothing done):",
                        t(&run.user),
                        t(&run.policies.join(", "))
                    );
                    let _ = check::print(Format::Human, "check", &run.doc, &run.plan);
                }
                return check::exit_code(&run.doc);
            };
            let ok = applied.status == engine_journal::RunStatus::Ok;
            if args.format == Format::Json {
                let mut r = EventReport::new(if ok { "acted" } else { "failed" });
                r.user = Some(&run.user);
                r.user_id = Some(&run.user_id);
                r.policies = &run.policies;
                r.run = Some(applied.run);
                r.plan = Some(&run.doc);
                r.results = &applied.results;
                print_json(&r);
            } else {
                eprintln!(
                    "event: {} ({}) NON_COMPLIANT under {}: run {}",
                    t(&run.user),
                    t(&run.user_id),
                    t(&run.policies.join(", ")),
                    applied.run
                );
                let _ = check::print(Format::Human, "apply", &run.doc, &run.plan);
                let _ = apply::print_report(
                    Format::Human,
                    Some(applied.run),
                    &applied.journal,
                    &run.doc,
                    &applied.results,
                    &[],
                    &[],
                );
            }
            if ok { exit::CLEAN } else { exit::ERROR }
        }
    }
}

fn ignored(args: &HandleEventArgs, why: &event::Ignored) -> u8 {
    let detail = why.to_string();
    if args.format == Format::Json {
        let mut r = EventReport::new("ignored");
        r.reason = Some(why.label());
        r.detail = Some(detail.clone());
        print_json(&r);
    }
    eprintln!(
        "event ignored, nothing to do: {}",
        engine_core::text::for_terminal(&detail)
    );
    exit::CLEAN
}
