//! `engine history`: recent runs and their actions, from the journal.

use std::io::Write;

use engine_journal::Journal;
use serde::Serialize;

use crate::{Format, HistoryArgs, exit};

#[derive(Serialize)]
struct RunView {
    id: i64,
    command: String,
    source: String,
    started_at: String,
    finished_at: Option<String>,
    status: String,
    findings: i64,
    actions: Vec<ActionView>,
}

#[derive(Serialize)]
struct ActionView {
    policy: String,
    action: String,
    user: String,
    credential: String,
    key_id: Option<String>,
    intent_at: String,
    /// null: journaled as an intent, no result recorded (the engine stopped mid-apply).
    outcome: Option<String>,
    detail: Option<String>,
}

pub fn run(args: &HistoryArgs) -> u8 {
    if !args.state.state.join(engine_journal::FILE).exists() {
        eprintln!(
            "error: no journal in {} (nothing has run with this --state yet)",
            args.state.state.display()
        );
        return exit::ERROR;
    }
    let journal = match Journal::open(&args.state.state) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let runs = match journal.recent_runs(args.limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let mut views = Vec::new();
    for r in runs {
        let actions = match journal.actions_of(r.id) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        views.push(RunView {
            id: r.id,
            command: r.command,
            source: r.source,
            started_at: r.started_at,
            finished_at: r.finished_at,
            status: r.status,
            findings: r.findings,
            actions: actions
                .into_iter()
                .map(|a| ActionView {
                    policy: a.policy,
                    action: a.action,
                    user: a.user,
                    credential: a.credential,
                    key_id: a.key_id,
                    intent_at: a.intent_at,
                    outcome: a.outcome,
                    detail: a.detail,
                })
                .collect(),
        });
    }
    let mut out = std::io::stdout().lock();
    let written = if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &views)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        human(&mut out, &views)
    };
    match written {
        Ok(()) => exit::CLEAN,
        Err(_) => exit::ERROR,
    }
}

fn human(out: &mut dyn Write, runs: &[RunView]) -> std::io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs journaled yet");
    }
    for r in runs {
        writeln!(
            out,
            "run {} {} {} at {} ({}): {} findings, {} actions",
            r.id,
            r.command,
            r.source,
            r.started_at,
            r.status,
            r.findings,
            r.actions.len()
        )?;
        for a in &r.actions {
            let outcome = a.outcome.as_deref().unwrap_or("no result yet");
            writeln!(
                out,
                "  {:24} {:21} {} {} {} [{}]{}",
                outcome,
                a.action,
                a.user,
                a.credential,
                a.key_id.as_deref().unwrap_or("-"),
                a.policy,
                a.detail
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}
