//! `engine history`: recent runs and their actions, from the journal; and
//! the journal's retention (`--journal-retention`, `engine history --prune`).

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use engine_core::text::for_terminal;
use engine_journal::{Journal, JournalError, PruneStats};
use serde::Serialize;

use crate::{Format, HistoryArgs, StateArgs, exit};

/// `--journal-retention`: a duration (humantime), `0` or `off` for forever.
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{e} (expected a duration such as 90d or 26w, or 0 / off to keep everything)")
    })
}

impl StateArgs {
    /// The retention cutoff as of `now`: runs that finished before it may be
    /// pruned. `None` when retention is off (or reaches before the calendar).
    pub fn retention_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        engine_run::retention_cutoff(self.journal_retention, now)
    }

    /// Open the journal in `--state`, then prune it per `--journal-retention`.
    pub fn open_journal(&self) -> Result<Journal, JournalError> {
        engine_run::open_journal(&self.state, self.journal_retention)
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
struct PruneView {
    /// Runs that finished before this were removed; null: retention is off.
    before: Option<String>,
    runs: u64,
    actions: u64,
    findings: u64,
    /// Older runs kept: still running, or with an action without a result.
    kept_unfinished: u64,
}

#[derive(Serialize)]
struct RunView {
    id: i64,
    /// The AWS account of the run (null: a report file, or a run journaled
    /// before accounts were recorded).
    account: Option<String>,
    command: String,
    source: String,
    started_at: String,
    finished_at: Option<String>,
    status: String,
    /// Which process runs it, while it is `running`.
    #[serde(skip)]
    owner: Option<String>,
    findings: i64,
    actions: Vec<ActionView>,
    /// The messages to owners the run sent or tried to send.
    messages: Vec<MessageView>,
}

#[derive(Serialize)]
struct MessageView {
    account: Option<String>,
    policy: String,
    user: String,
    credential: String,
    /// What it is about: the key id, or `password@USER_CREATED`.
    subject: String,
    /// `upcoming`, `due`, `deactivated`, `done:KIND` or `failed:KIND`.
    stage: String,
    channel: String,
    recipient: Option<String>,
    /// `sent`, `failed`, or `sending`/`unknown` (cut off mid-send: counted as
    /// sent, never sent twice).
    status: String,
    attempts: u32,
    detail: Option<String>,
}

#[derive(Serialize)]
struct ActionView {
    account: Option<String>,
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
            eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
            return exit::ERROR;
        }
    };
    if args.prune {
        return prune(args, journal);
    }
    let runs = match journal.recent_runs_of(args.limit, args.account.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
            return exit::ERROR;
        }
    };
    let mut views = Vec::new();
    for r in runs {
        let (actions, messages) = match journal
            .actions_of(r.id)
            .and_then(|a| Ok((a, journal.notices_of(r.id)?)))
        {
            Ok(both) => both,
            Err(e) => {
                eprintln!("error: {}", engine_core::text::for_terminal(&e.to_string()));
                return exit::ERROR;
            }
        };
        views.push(RunView {
            id: r.id,
            account: r.account,
            command: r.command,
            source: r.source,
            started_at: r.started_at,
            finished_at: r.finished_at,
            owner: (r.status == "running").then(|| owner(r.owner_pid, r.owner_host.as_deref())),
            status: r.status,
            findings: r.findings,
            actions: actions
                .into_iter()
                .map(|a| ActionView {
                    account: a.account,
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
            messages: messages
                .into_iter()
                .map(|n| MessageView {
                    account: n.account,
                    policy: n.policy,
                    user: n.user,
                    credential: n.credential,
                    subject: n.subject,
                    stage: n.stage,
                    channel: n.channel,
                    recipient: n.recipient,
                    status: n.status,
                    attempts: n.attempts,
                    // A sent message is recorded with an empty detail.
                    detail: n.detail.filter(|d| !d.is_empty()),
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

fn owner(pid: Option<i64>, host: Option<&str>) -> String {
    match (pid, host) {
        (Some(pid), Some(host)) => format!("pid {pid} on {host}"),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => "owner not recorded".to_owned(),
    }
}

fn prune(args: &HistoryArgs, mut journal: Journal) -> u8 {
    let now = args.now.unwrap_or_else(Utc::now);
    let cutoff = args.state.retention_cutoff(now);
    let stats = match cutoff {
        None => PruneStats::default(),
        Some(before) => match journal.prune(before) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: nothing was pruned: {e}");
                return exit::ERROR;
            }
        },
    };
    let mut out = std::io::stdout().lock();
    let written = if args.format == Format::Json {
        let view = PruneView {
            before: cutoff.map(stamp),
            runs: stats.runs,
            actions: stats.actions,
            findings: stats.findings,
            kept_unfinished: stats.kept_unfinished,
        };
        serde_json::to_writer_pretty(&mut out, &view)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        human_prune(&mut out, cutoff, &stats)
    };
    match written {
        Ok(()) => exit::CLEAN,
        Err(_) => exit::ERROR,
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn human_prune(
    out: &mut dyn Write,
    cutoff: Option<DateTime<Utc>>,
    s: &PruneStats,
) -> std::io::Result<()> {
    let Some(cutoff) = cutoff else {
        return writeln!(
            out,
            "Journal retention is off (--journal-retention 0): nothing was pruned."
        );
    };
    writeln!(
        out,
        "Pruned {}, {} and {}: runs that finished before {}.",
        plural(s.runs, "run", "runs"),
        plural(s.actions, "action", "actions"),
        plural(s.findings, "finding", "findings"),
        stamp(cutoff)
    )?;
    if s.kept_unfinished > 0 {
        writeln!(
            out,
            "Kept {} older: still running, or with an action that has no recorded result.",
            plural(s.kept_unfinished, "run", "runs")
        )?;
    }
    Ok(())
}

fn human(out: &mut dyn Write, runs: &[RunView]) -> std::io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs journaled yet");
    }
    for r in runs {
        // Everything in the journal came from outside (user names, AWS
        // errors, paths): escaped before it reaches a terminal.
        writeln!(
            out,
            "run {} {}{} {} at {} ({}{}): {} findings, {} actions{}",
            r.id,
            r.account
                .as_deref()
                .map(|a| format!("account {} ", for_terminal(a)))
                .unwrap_or_default(),
            for_terminal(&r.command),
            for_terminal(&r.source),
            for_terminal(&r.started_at),
            for_terminal(&r.status),
            r.owner
                .as_deref()
                .map(|o| format!(", {}", for_terminal(o)))
                .unwrap_or_default(),
            r.findings,
            r.actions.len(),
            match r.messages.len() {
                0 => String::new(),
                1 => ", 1 message".to_string(),
                n => format!(", {n} messages"),
            }
        )?;
        for a in &r.actions {
            let outcome = a.outcome.as_deref().unwrap_or("no result yet");
            writeln!(
                out,
                "  {:24} {:21} {} {} {} [{}]{}",
                for_terminal(outcome),
                for_terminal(&a.action),
                for_terminal(&a.user),
                for_terminal(&a.credential),
                for_terminal(a.key_id.as_deref().unwrap_or("-")),
                for_terminal(&a.policy),
                after(": ", a.detail.as_deref())
            )?;
        }
        for m in &r.messages {
            writeln!(
                out,
                "  message {:16} {:26} {} {} {} [{}] via {}{}{}",
                for_terminal(&m.status),
                for_terminal(&m.stage),
                for_terminal(&m.user),
                for_terminal(&m.credential),
                for_terminal(&m.subject),
                for_terminal(&m.policy),
                for_terminal(&m.channel),
                after(" to ", m.recipient.as_deref()),
                after(": ", m.detail.as_deref())
            )?;
        }
    }
    Ok(())
}

/// `value` escaped for a terminal after `prefix`; nothing when it is absent
/// or empty.
fn after(prefix: &str, value: Option<&str>) -> String {
    value
        .filter(|v| !v.is_empty())
        .map(|v| format!("{prefix}{}", for_terminal(v)))
        .unwrap_or_default()
}
