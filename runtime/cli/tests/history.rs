//! `engine history` through the real binary: retention (`--prune`,
//! `--journal-retention`) and what reaches the terminal.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Utc};
use engine_core::{ActionKind, Credential, PlannedAction};
use engine_journal::{Journal, Outcome, RunStatus};

fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn engine(state: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("history")
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("ENGINE_STATE")
        .env_remove("ENGINE_JOURNAL_RETENTION")
        .env_remove("RUST_LOG")
        .output()
        .expect("run engine")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn action(user: &str) -> PlannedAction {
    PlannedAction {
        policy: "rotate".into(),
        action: ActionKind::DeleteAccessKey,
        user: user.into(),
        arn: format!("arn:aws:iam::123456789012:user/{user}").into(),
        credential: Credential::AccessKey1,
        key_id: Some(format!("AKIA{}", user.len())),
        finding: 0,
        reason: None,
        notify: None,
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Runs {
    done: i64,
    running: i64,
    in_flight: i64,
    open: i64,
    recent: i64,
    boundary: DateTime<Utc>,
}

/// Three runs before `boundary` (one finished, one still running in this
/// process, one finished with an intent that has no result), one after.
fn journal_with_old_and_new_runs(state: &Path) -> Runs {
    let mut j = Journal::open(state).expect("journal");
    let done = j.start_run("apply", "policies", &[]).expect("run");
    for user in ["alice", "bob"] {
        let a = j.intent(done, &action(user)).expect("intent");
        j.result(a, Outcome::Done, "deleted").expect("result");
    }
    j.finish_run(done, RunStatus::Ok, "{}").expect("finish");
    let running = j.start_run("apply", "policies", &[]).expect("run");
    let in_flight = j.intent(running, &action("carol")).expect("intent");
    let open = j.start_run("apply", "policies", &[]).expect("run");
    j.intent(open, &action("dave")).expect("intent");
    j.finish_run(open, RunStatus::Failed, "{}").expect("finish");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let boundary = Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let recent = j.start_run("apply", "policies", &[]).expect("run");
    j.finish_run(recent, RunStatus::Ok, "{}").expect("finish");
    Runs {
        done,
        running,
        in_flight,
        open,
        recent,
        boundary,
    }
}

fn run_ids(state: &Path) -> Vec<i64> {
    let o = engine(state, &["--format", "json", "--limit", "100"]);
    assert_ok(&o);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let mut ids: Vec<i64> = runs
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    ids.sort();
    ids
}

#[test]
fn history_prune_removes_old_finished_runs_and_keeps_unfinished_ones() {
    let state = state_dir("prune");
    let runs = journal_with_old_and_new_runs(&state);
    // 30 days after the boundary, with a 30-day retention: the cutoff is the boundary.
    let now = stamp(runs.boundary + chrono::Duration::days(30));
    let o = engine(
        &state,
        &["--prune", "--journal-retention", "30d", "--now", &now],
    );
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        format!(
            "Pruned 1 run, 2 actions and 0 findings: runs that finished before {}.\n\
             Kept 2 runs older: still running, or with an action that has no recorded result.\n",
            stamp(runs.boundary)
        )
    );
    assert_eq!(run_ids(&state), [runs.running, runs.open, runs.recent]);
    assert!(!run_ids(&state).contains(&runs.done));
    // The live run's intent was not touched: it still awaits its result.
    let j = Journal::open(&state).expect("journal");
    let acts = j.actions_of(runs.running).expect("actions");
    assert_eq!(acts.len(), 1);
    assert_eq!(
        (acts[0].id, acts[0].outcome.as_deref()),
        (runs.in_flight, None)
    );
    drop(j);

    // Again: nothing left to remove; as JSON.
    let o = engine(
        &state,
        &[
            "--prune",
            "--journal-retention",
            "30d",
            "--now",
            &now,
            "--format",
            "json",
        ],
    );
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "before": stamp(runs.boundary),
            "runs": 0,
            "actions": 0,
            "findings": 0,
            "kept_unfinished": 2,
        })
    );
    std::fs::remove_dir_all(&state).expect("cleanup");
}

#[test]
fn history_prune_keeps_recent_runs_and_everything_when_retention_is_off() {
    let state = state_dir("retention");
    let runs = journal_with_old_and_new_runs(&state);
    let all = vec![runs.done, runs.running, runs.open, runs.recent];
    // The default retention (90 days) keeps runs of today.
    let o = engine(&state, &["--prune"]);
    assert_ok(&o);
    assert!(stdout(&o).starts_with("Pruned 0 runs, 0 actions and 0 findings"));
    assert_eq!(run_ids(&state), all);
    // Off keeps everything, however old.
    let far = stamp(runs.boundary + chrono::Duration::days(10_000));
    for off in ["off", "0"] {
        let o = engine(
            &state,
            &["--prune", "--journal-retention", off, "--now", &far],
        );
        assert_ok(&o);
        assert_eq!(
            stdout(&o),
            "Journal retention is off (--journal-retention 0): nothing was pruned.\n"
        );
        assert_eq!(run_ids(&state), all);
    }
    std::fs::remove_dir_all(&state).expect("cleanup");
}

#[test]
fn history_escapes_control_characters_from_the_journal() {
    let state = state_dir("escape");
    {
        let mut j = Journal::open(&state).expect("journal");
        let run = j.start_run("apply", "policies\x1b[31m", &[]).expect("run");
        let a = j
            .intent(run, &action("evil\x1b[2K\rroot\u{202e}"))
            .expect("intent");
        j.result(a, Outcome::Failed, "AccessDenied\x1b]0;pwned\x07")
            .expect("result");
        j.finish_run(run, RunStatus::Failed, "{}").expect("finish");
    }
    let o = engine(&state, &[]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        !out.contains(['\x1b', '\r', '\x07', '\u{202e}']),
        "raw control characters reached the terminal: {out:?}"
    );
    assert!(out.contains("evil\\x1b[2K\\x0droot\\u{202e}"), "{out}");
    assert!(out.contains("AccessDenied\\x1b]0;pwned\\x07"), "{out}");
    assert!(out.contains("policies\\x1b[31m"), "{out}");
    // JSON is data, escaped by JSON itself: the names are kept exactly.
    let o = engine(&state, &["--format", "json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["actions"][0]["user"], "evil\x1b[2K\rroot\u{202e}");
    std::fs::remove_dir_all(&state).expect("cleanup");
}

#[test]
fn history_says_which_process_runs_a_running_run() {
    let state = state_dir("owner");
    {
        let mut j = Journal::open(&state).expect("journal");
        j.start_run("apply", "policies", &[]).expect("run");
    }
    let o = engine(&state, &[]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("(running, pid {}", std::process::id())),
        "{out}"
    );
    std::fs::remove_dir_all(&state).expect("cleanup");
}
