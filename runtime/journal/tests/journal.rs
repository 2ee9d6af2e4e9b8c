//! The journal keeps intents durable before results, across crashes.

use engine_core::{ActionKind, Credential, PlannedAction};
use engine_journal::{Journal, JournalError, Outcome, RunOwner, RunStatus};

fn action(user: &str) -> PlannedAction {
    PlannedAction {
        policy: "rotate".into(),
        action: ActionKind::DeleteAccessKey,
        user: user.into(),
        arn: format!("arn:aws:iam::1:user/{user}").into(),
        credential: Credential::AccessKey1,
        key_id: Some(format!("AKIA{user}")),
        finding: 0,
        reason: None,
        notify: None,
    }
}

/// A process on this host that cannot exist (pids are at most 2^22 on Linux).
fn gone() -> RunOwner {
    RunOwner {
        pid: i32::MAX as u32,
        ..RunOwner::current()
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("engine-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn intents_results_and_history() {
    let dir = temp_dir("history");
    let mut j = Journal::open(&dir).unwrap();
    let run = j.start_run("apply", "policies", &[]).unwrap();
    let a = j.intent(run, &action("alice")).unwrap();
    j.result(a, Outcome::Done, "deleted").unwrap();
    let b = j.intent(run, &action("bob")).unwrap();
    j.result(b, Outcome::AlreadyGone, "NoSuchEntity").unwrap();
    j.skipped(run, &action("carol"), "key recreated since the plan")
        .unwrap();
    j.finish_run(run, RunStatus::Ok, "{}").unwrap();

    let runs = j.recent_runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "ok");
    assert!(runs[0].finished_at.is_some());
    let acts = j.actions_of(run).unwrap();
    let outcomes: Vec<_> = acts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("done"), Some("already-gone"), Some("skipped")]
    );
    assert_eq!(acts[0].key_id.as_deref(), Some("AKIAalice"));
    assert!(j.unfinished().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runs_findings_and_actions_name_their_account() {
    let dir = temp_dir("accounts");
    let mut j = Journal::open(&dir).unwrap();
    let finding: engine_core::Finding = serde_json::from_value(serde_json::json!({
        "policy": "rotate", "rule": "cis-1.4", "user": "alice",
        "arn": "arn:aws:iam::111111111111:user/alice", "credential": "access_key_1",
        "key_id": "AKIAalice", "timestamp": "2026-01-01T00:00:00Z", "basis": "key_last_rotated",
        "age_days": 200, "threshold_days": 90, "reason": "old", "controls": [],
        "exempt": false, "protected": null
    }))
    .unwrap();
    let a = j
        .start_account_run(Some("111111111111"), "apply", "policies", &[finding])
        .unwrap();
    let intent = j.intent(a, &action("alice")).unwrap();
    j.result(intent, Outcome::Done, "").unwrap();
    j.finish_run(a, RunStatus::Ok, "{}").unwrap();
    let b = j
        .start_account_run(Some("222222222222"), "apply", "policies", &[])
        .unwrap();
    j.finish_run(b, RunStatus::Ok, "{}").unwrap();
    let c = j.start_run("check", "policies", &[]).unwrap();
    j.finish_run(c, RunStatus::Ok, "{}").unwrap();

    let all = j.recent_runs(10).unwrap();
    let accounts: Vec<Option<&str>> = all.iter().map(|r| r.account.as_deref()).collect();
    assert_eq!(accounts, [None, Some("222222222222"), Some("111111111111")]);
    let one = j.recent_runs_of(10, Some("111111111111")).unwrap();
    assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);
    assert!(
        j.recent_runs_of(10, Some("333333333333"))
            .unwrap()
            .is_empty()
    );
    let acts = j.actions_of(a).unwrap();
    assert_eq!(acts[0].account.as_deref(), Some("111111111111"));
    drop(j);
    let raw = raw(&dir);
    let finding_account: Option<String> = raw
        .query_row("SELECT account FROM findings WHERE run_id = ?1", [a], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(finding_account.as_deref(), Some("111111111111"));
    drop(raw);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_intent_without_result_survives_a_crash() {
    let dir = temp_dir("crash");
    {
        let mut j = Journal::open(&dir).unwrap();
        // Started by a process that is gone by the time the next run looks.
        let run = j
            .start_run_owned_by("apply", "policies", &[], &gone())
            .unwrap();
        let a = j.intent(run, &action("alice")).unwrap();
        j.result(a, Outcome::Done, "deleted").unwrap();
        j.intent(run, &action("bob")).unwrap();
        // No result, no finish, no clean close: as if the process died here.
        std::mem::forget(j);
    }
    let mut j = Journal::open(&dir).unwrap();
    let open = j.unfinished().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].user, "bob");
    assert_eq!(open[0].outcome, None);
    assert_eq!(j.recent_runs(1).unwrap()[0].status, "running");
    // The next run takes them: reported once, then recorded as unknown.
    let taken = j.take_unfinished().unwrap();
    assert_eq!(taken, open);
    assert!(j.unfinished().unwrap().is_empty());
    assert!(j.take_unfinished().unwrap().is_empty());
    let run = j.recent_runs(1).unwrap().remove(0);
    assert_eq!(run.status, "interrupted");
    let acts = j.actions_of(run.id).unwrap();
    assert_eq!(acts[1].outcome.as_deref(), Some("unknown"));
    assert_eq!(acts[0].outcome.as_deref(), Some("done"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The schema as the first journal wrote it, before `user_version`: a copy,
/// so that a change to the migrations cannot change what "old" means.
const SCHEMA_V0: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    source      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,
    summary     TEXT
);
CREATE TABLE IF NOT EXISTS findings (
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    policy      TEXT NOT NULL,
    user        TEXT NOT NULL,
    credential  TEXT NOT NULL,
    key_id      TEXT,
    age_days    INTEGER NOT NULL,
    finding     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_run ON findings(run_id);
CREATE TABLE IF NOT EXISTS actions (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    policy      TEXT NOT NULL,
    action      TEXT NOT NULL,
    user        TEXT NOT NULL,
    credential  TEXT NOT NULL,
    key_id      TEXT,
    intent_at   TEXT NOT NULL,
    outcome     TEXT,
    detail      TEXT,
    result_at   TEXT
);
CREATE INDEX IF NOT EXISTS actions_run ON actions(run_id);
";

/// A version-0 journal, as the first engine left it: one finished run with a
/// finding and an action, one run that crashed with an intent in flight.
fn old_journal(dir: &std::path::Path, schema: &str) -> rusqlite::Connection {
    std::fs::create_dir_all(dir).unwrap();
    let c = rusqlite::Connection::open(dir.join(engine_journal::FILE)).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch(schema).unwrap();
    c.execute_batch(
        "INSERT INTO runs (id, command, source, started_at, finished_at, status, summary)
           VALUES (1, 'apply', 'policies', '2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z', 'ok', '{}');
         INSERT INTO findings VALUES (1, 'rotate', 'alice', 'access_key_1', 'AKIAalice', 120, '{}');
         INSERT INTO actions (run_id, policy, action, user, credential, key_id, intent_at, outcome, detail, result_at)
           VALUES (1, 'rotate', 'delete-access-key', 'alice', 'access_key_1', 'AKIAalice',
                   '2026-01-01T00:00:30.000Z', 'done', 'deleted', '2026-01-01T00:00:31.000Z');
         INSERT INTO runs (id, command, source, started_at, status)
           VALUES (2, 'apply', 'policies', '2026-01-02T00:00:00.000Z', 'running');
         INSERT INTO actions (run_id, policy, action, user, credential, key_id, intent_at)
           VALUES (2, 'rotate', 'delete-access-key', 'bob', 'access_key_1', 'AKIAbob', '2026-01-02T00:00:30.000Z');",
    )
    .unwrap();
    c
}

fn user_version(c: &rusqlite::Connection) -> i64 {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn columns(c: &rusqlite::Connection, table: &str) -> Vec<String> {
    let mut stmt = c
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_journal_without_a_version_is_migrated_in_place() {
    let dir = temp_dir("migrate");
    let raw = old_journal(&dir, SCHEMA_V0);
    assert_eq!(user_version(&raw), 0);

    let mut j = Journal::open(&dir).unwrap();
    assert_eq!(j.schema_version().unwrap(), engine_journal::SCHEMA_VERSION);
    assert_eq!(user_version(&raw), engine_journal::SCHEMA_VERSION);
    assert!(columns(&raw, "runs").contains(&"owner_pid".to_owned()));
    for table in ["runs", "findings", "actions"] {
        assert!(
            columns(&raw, table).contains(&"account".to_owned()),
            "{table}"
        );
    }
    // Nothing journaled before is lost.
    let runs = j.recent_runs(10).unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(runs[1].status, "ok");
    assert_eq!(runs[1].findings, 1);
    assert_eq!(
        (runs[0].owner_pid, runs[1].owner_host.as_deref()),
        (None, None)
    );
    assert_eq!(j.actions_of(1).unwrap()[0].outcome.as_deref(), Some("done"));
    // A run from before owners were recorded is taken as crashed, as before.
    let taken = j.take_unfinished().unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].user, "bob");
    assert_eq!(j.recent_runs(10).unwrap()[0].status, "interrupted");
    // New runs record their owner.
    let run = j.start_run("check", "policies", &[]).unwrap();
    let rec = j.recent_runs(1).unwrap().remove(0);
    assert_eq!(rec.id, run);
    assert_eq!(rec.owner_pid, Some(i64::from(std::process::id())));
    drop(j);
    // Opening again is a no-op.
    let j = Journal::open(&dir).unwrap();
    assert_eq!(j.recent_runs(10).unwrap().len(), 3);
    drop((j, raw));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_migration_leaves_the_journal_as_it_was() {
    let dir = temp_dir("migrate-fails");
    // The last step of the migration (adding owner_start) cannot succeed.
    let schema = SCHEMA_V0.replacen("summary     TEXT", "summary TEXT, owner_start TEXT", 1);
    let raw = old_journal(&dir, &schema);
    let err = Journal::open(&dir).err().expect("the migration must fail");
    assert!(err.to_string().contains("owner_start"), "{err}");
    // One transaction: the steps before the failing one were rolled back.
    assert_eq!(user_version(&raw), 0);
    assert!(!columns(&raw, "runs").contains(&"owner_pid".to_owned()));
    drop(raw);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_journal_from_a_newer_engine_is_refused_and_not_written() {
    let dir = temp_dir("newer");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(engine_journal::FILE);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V0).unwrap();
        c.execute_batch(
            "CREATE TABLE from_the_future (x); INSERT INTO from_the_future VALUES (1);",
        )
        .unwrap();
        c.pragma_update(None, "user_version", engine_journal::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    match Journal::open(&dir) {
        Err(e @ JournalError::TooNew { found, known, .. }) => {
            assert_eq!(found, engine_journal::SCHEMA_VERSION + 1);
            assert_eq!(known, engine_journal::SCHEMA_VERSION);
            let msg = e.to_string();
            assert!(
                msg.contains("newer engine") && msg.contains("not modified"),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a journal from a newer engine was opened"),
    }
    // Not a byte changed, not even switched to WAL.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.join(format!("{}-wal", engine_journal::FILE)).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_process_waits_for_the_lock_instead_of_failing() {
    let dir = temp_dir("busy");
    std::fs::create_dir_all(&dir).unwrap();
    let holder = rusqlite::Connection::open(dir.join(engine_journal::FILE)).unwrap();
    // Another process is in the middle of a write, holding every lock.
    holder
        .execute_batch("BEGIN EXCLUSIVE; CREATE TABLE other_process (x);")
        .unwrap();
    // Longer than rusqlite's own default wait (5 s), shorter than ours.
    let hold = std::time::Duration::from_secs(6);
    assert!(hold < engine_journal::BUSY_TIMEOUT);
    let started = std::time::Instant::now();
    let other = std::thread::spawn(move || {
        std::thread::sleep(hold);
        holder.execute_batch("COMMIT").unwrap();
    });
    let opened = Journal::open(&dir);
    let waited = started.elapsed();
    other.join().unwrap();
    let mut j = opened.expect("the journal waits for the lock, then opens");
    assert!(
        waited >= hold,
        "it cannot have opened while the lock was held"
    );
    j.start_run("check", "policies", &[]).unwrap();
    drop(j);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(engine_journal::FILE)).unwrap()
}

fn count(c: &rusqlite::Connection, sql: &str, run: i64) -> i64 {
    c.query_row(sql, [run], |r| r.get(0)).unwrap()
}

#[test]
fn prune_removes_old_finished_runs_with_their_rows_and_keeps_unfinished_ones() {
    let dir = temp_dir("prune");
    let mut j = Journal::open(&dir).unwrap();
    let db = raw(&dir);
    let finding = |run: i64| {
        db.execute(
            "INSERT INTO findings (run_id, policy, user, credential, key_id, age_days, finding)
             VALUES (?1, 'rotate', 'alice', 'access_key_1', 'AKIAalice', 120, '{}')",
            [run],
        )
        .unwrap();
    };
    // Old and finished: removed, with its findings and actions.
    let done = j.start_run("apply", "policies", &[]).unwrap();
    finding(done);
    finding(done);
    for user in ["alice", "bob"] {
        let a = j.intent(done, &action(user)).unwrap();
        j.result(a, Outcome::Done, "deleted").unwrap();
    }
    j.finish_run(done, RunStatus::Ok, "{}").unwrap();
    // Old, crashed and closed by recovery: removed.
    let crashed = j
        .start_run_owned_by("apply", "policies", &[], &gone())
        .unwrap();
    j.intent(crashed, &action("carol")).unwrap();
    assert_eq!(j.take_unfinished().unwrap().len(), 1);
    // Old but still running in a live process: kept.
    let running = j.start_run("apply", "policies", &[]).unwrap();
    finding(running);
    let in_flight = j.intent(running, &action("dave")).unwrap();
    // Old and finished, but an intent has no result: kept.
    let open = j.start_run("apply", "policies", &[]).unwrap();
    j.intent(open, &action("erin")).unwrap();
    j.finish_run(open, RunStatus::Failed, "{}").unwrap();

    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Recent: kept.
    let recent = j.start_run("check", "policies", &[]).unwrap();
    j.finish_run(recent, RunStatus::Ok, "{}").unwrap();

    let stats = j.prune(cutoff).unwrap();
    assert_eq!(
        stats,
        engine_journal::PruneStats {
            runs: 2,
            actions: 3,
            findings: 2,
            kept_unfinished: 2,
        }
    );
    let mut left: Vec<i64> = j.recent_runs(10).unwrap().iter().map(|r| r.id).collect();
    left.sort();
    assert_eq!(left, [running, open, recent]);
    for gone in [done, crashed] {
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM findings WHERE run_id = ?1", gone),
            0
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM actions WHERE run_id = ?1", gone),
            0
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM findings WHERE run_id = ?1",
            running
        ),
        1
    );
    // The live run carries on as if nothing happened.
    j.result(in_flight, Outcome::Done, "deleted").unwrap();
    j.finish_run(running, RunStatus::Ok, "{}").unwrap();
    assert_eq!(
        j.actions_of(running).unwrap()[0].outcome.as_deref(),
        Some("done")
    );
    // Nothing more to remove at the same cutoff.
    assert_eq!(j.prune(cutoff).unwrap().runs, 0);
    drop((j, db));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recovery_closes_runs_of_gone_processes_and_leaves_live_ones_alone() {
    let dir = temp_dir("recover");
    let mut j = Journal::open(&dir).unwrap();
    // This test process is alive: its run and its intent in flight are untouchable.
    let live = j.start_run("apply", "policies", &[]).unwrap();
    let in_flight = j.intent(live, &action("alice")).unwrap();
    // A process that is gone, mid-apply.
    let dead = j
        .start_run_owned_by("apply", "policies", &[], &gone())
        .unwrap();
    let sent = j.intent(dead, &action("bob")).unwrap();
    j.result(sent, Outcome::Done, "deleted").unwrap();
    let lost = j.intent(dead, &action("carol")).unwrap();
    // A process that is gone, mid-check (no intents at all).
    let dead_check = j
        .start_run_owned_by("check", "policies", &[], &gone())
        .unwrap();
    // A process on another host: nothing here can tell.
    let elsewhere_owner = RunOwner {
        host: Some("another-host.invalid".into()),
        ..RunOwner::current()
    };
    let elsewhere = j
        .start_run_owned_by("apply", "policies", &[], &elsewhere_owner)
        .unwrap();
    let theirs = j.intent(elsewhere, &action("dave")).unwrap();

    let r = j.recover().unwrap();
    assert_eq!(r.unknown.iter().map(|a| a.id).collect::<Vec<_>>(), [lost]);
    let ids = |runs: &[engine_journal::RunRecord]| runs.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&r.interrupted), [dead, dead_check]);
    assert_eq!(ids(&r.live), [live]);
    assert_eq!(ids(&r.other_host), [elsewhere]);
    assert_eq!(
        r.other_host[0].owner_host.as_deref(),
        Some("another-host.invalid")
    );

    let status = |j: &Journal, id: i64| {
        j.recent_runs(10)
            .unwrap()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap()
            .status
    };
    assert_eq!(status(&j, dead), "interrupted");
    assert_eq!(status(&j, dead_check), "interrupted");
    assert_eq!(status(&j, live), "running");
    assert_eq!(status(&j, elsewhere), "running");
    let outcome = |j: &Journal, run: i64, id: i64| {
        j.actions_of(run)
            .unwrap()
            .into_iter()
            .find(|a| a.id == id)
            .unwrap()
            .outcome
    };
    assert_eq!(outcome(&j, dead, lost).as_deref(), Some("unknown"));
    assert_eq!(outcome(&j, dead, sent).as_deref(), Some("done"));
    assert_eq!(outcome(&j, live, in_flight), None);
    assert_eq!(outcome(&j, elsewhere, theirs), None);
    // Reported once; the live run's intent is never taken.
    assert!(j.take_unfinished().unwrap().is_empty());
    assert_eq!(outcome(&j, live, in_flight), None);
    // ...and the live process records its result as usual.
    j.result(in_flight, Outcome::Done, "deleted").unwrap();
    j.finish_run(live, RunStatus::Ok, "{}").unwrap();
    assert_eq!(status(&j, live), "ok");
    assert_eq!(outcome(&j, live, in_flight).as_deref(), Some("done"));
    drop(j);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Another journal handle (another process, as far as SQLite is concerned)
/// recovering while this process's run is in flight leaves it alone.
#[test]
fn a_concurrent_recovery_does_not_take_a_live_runs_intents() {
    let dir = temp_dir("concurrent");
    let mut ours = Journal::open(&dir).unwrap();
    let run = ours.start_run("apply", "policies", &[]).unwrap();
    let a = ours.intent(run, &action("alice")).unwrap();
    let mut theirs = Journal::open(&dir).unwrap();
    assert!(theirs.take_unfinished().unwrap().is_empty());
    ours.result(a, Outcome::Done, "deleted").unwrap();
    ours.finish_run(run, RunStatus::Ok, "{}").unwrap();
    assert_eq!(
        theirs.actions_of(run).unwrap()[0].outcome.as_deref(),
        Some("done")
    );
    drop((ours, theirs));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_message_is_sent_once_per_stage_even_when_its_sending_was_cut_off() {
    let dir = temp_dir("notices");
    let mut j = Journal::open(&dir).unwrap();
    let run = j.start_run("apply", "policies", &[]).unwrap();
    let n = |stage: &str| engine_journal::NoticeRecord {
        account: Some("123456789012".into()),
        policy: "rotate".into(),
        user: "alice".into(),
        credential: "access_key_1".into(),
        subject: "AKIAALICE".into(),
        stage: stage.into(),
        channel: "owners".into(),
        recipient: Some("alice@example.com".into()),
        ..Default::default()
    };
    let sent = |j: &Journal, stage: &str| {
        j.notice_sent(Some("123456789012"), "rotate", "AKIAALICE", stage)
            .unwrap()
    };
    assert!(!sent(&j, "upcoming"));
    // Sent: not again.
    let id = j.notice_intent(run, &n("upcoming")).unwrap();
    j.notice_result(id, true, 1, "").unwrap();
    assert!(sent(&j, "upcoming"));
    // Failed: a later run may send it.
    let id = j
        .notice_intent(run, &n("done:deactivate-access-key"))
        .unwrap();
    j.notice_result(id, false, 3, "500").unwrap();
    assert!(!sent(&j, "done:deactivate-access-key"));
    // Cut off between recording and knowing (a crash): counts as sent.
    j.notice_intent(run, &n("done:delete-access-key")).unwrap();
    assert!(sent(&j, "done:delete-access-key"));
    // Another account, policy or stage is another message.
    assert!(
        !j.notice_sent(None, "rotate", "AKIAALICE", "upcoming")
            .unwrap()
    );
    assert!(
        !j.notice_sent(Some("123456789012"), "other", "AKIAALICE", "upcoming")
            .unwrap()
    );
    let recorded: Vec<(String, String, u32)> = j
        .notices_of(run)
        .unwrap()
        .into_iter()
        .map(|r| (r.stage, r.status, r.attempts))
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("upcoming".to_string(), "sent".to_string(), 1),
            (
                "done:deactivate-access-key".to_string(),
                "failed".to_string(),
                3
            ),
            (
                "done:delete-access-key".to_string(),
                "sending".to_string(),
                0
            ),
        ]
    );
    j.finish_run(run, RunStatus::Ok, "{}").unwrap();
    // Pruned with its run.
    let stats = j
        .prune(chrono::Utc::now() + chrono::Duration::days(1))
        .unwrap();
    assert_eq!(stats.runs, 1);
    assert!(j.notices_of(run).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
