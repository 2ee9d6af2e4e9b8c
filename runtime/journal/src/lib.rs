//! The journal: what every run found and did, in a crash-safe store.
//!
//! SQLite (bundled, WAL, `synchronous = FULL`) under the state directory.
//! Every action is written as an *intent* and committed **before** it is sent
//! to AWS, then updated with its result. A crash between the two leaves an
//! intent without a result, which the next run reports: nothing the engine
//! did to an account goes unrecorded.
//!
//! The schema is versioned (`PRAGMA user_version`, [`SCHEMA_VERSION`]): an
//! older journal is migrated in place, in one transaction, when it is opened;
//! a journal written by a newer engine is refused and left untouched. A
//! second process waits for the first ([`BUSY_TIMEOUT`]) instead of failing
//! with "database is locked".
//!
//! Each run records the process that owns it ([`RunOwner`]). [`Journal::recover`]
//! closes runs left `running` by a process that is gone, and never touches a
//! run another live process is still carrying out. [`Journal::prune`] keeps
//! the journal bounded.
//!
//! [`StateLock`] makes one process at a time act on a state directory
//! (`<state>/engine.lock`, held with `flock` for the whole run).

mod lock;
mod owner;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use engine_core::{Finding, PlannedAction};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use lock::{LOCK_FILE, LockError, LockHolder, POLL_INTERVAL, StateLock};
pub use owner::RunOwner;
use owner::{Liveness, liveness};

/// File name of the journal inside the state directory.
pub const FILE: &str = "journal.sqlite3";

/// The schema version this engine writes (`PRAGMA user_version`).
/// 0: the first schema, without a version; 1: runs record their owner;
/// 2: `applied_plans`, the saved plans already applied (each applies once).
pub const SCHEMA_VERSION: i64 = 4;

/// How long a connection waits for another process's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "journal {path} has schema version {found}, but this engine knows versions 0 to \
         {known}: it was written by a newer engine; use that engine, or another --state \
         directory (the journal was not modified)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Ok,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
        }
    }
}

/// The status of a run closed by recovery: its process stopped without finishing it.
pub const INTERRUPTED: &str = "interrupted";

/// The result of one action, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Done,
    /// An attempt went unanswered (dropped connection, timeout) and its retry
    /// found the target gone: the lost attempt most likely made the change.
    DoneOnRetry,
    /// The target was already gone (`NoSuchEntity`): nothing left to do.
    AlreadyGone,
    /// Not sent: the target no longer matched the plan, or was superseded.
    Skipped,
    /// Sent and failed after retries.
    Failed,
    /// Written as an intent, but the engine stopped before recording a
    /// result: whether it happened is unknown (the next report shows it).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::DoneOnRetry => "done-on-retry",
            Outcome::AlreadyGone => "already-gone",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One message to an owner, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoticeRecord {
    pub account: Option<String>,
    pub policy: String,
    pub user: String,
    pub credential: String,
    /// What it is about: the key id, or `password@USER_CREATED`.
    pub subject: String,
    /// `upcoming`, `due`, `deactivated`, `done:KIND` or `failed:KIND`.
    pub stage: String,
    pub channel: String,
    pub recipient: Option<String>,
    /// `sending`, `sent`, `failed` (or `unknown`).
    pub status: String,
    pub attempts: u32,
    /// What the channel answered, when it failed (read back only: not
    /// written by [`Journal::notice_intent`]).
    pub detail: Option<String>,
}

/// An access key the engine deactivated and has not deleted since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeactivatedKey {
    pub key_id: String,
    pub user: String,
    /// The policy that deactivated it.
    pub policy: String,
    /// When the deactivation was recorded done.
    pub at: DateTime<Utc>,
    pub account: Option<String>,
}

/// A run as listed by `engine history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub command: String,
    pub source: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub findings: i64,
    pub summary: Option<String>,
    /// The process that started the run; `None` for runs journaled before
    /// owners were recorded.
    pub owner_pid: Option<i64>,
    pub owner_host: Option<String>,
    /// The AWS account the run was about; `None` for a report file or a
    /// run journaled before accounts were recorded.
    pub account: Option<String>,
}

/// What [`Journal::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Intents left without a result by a process that is gone (or by a run
    /// that finished without recording them): now recorded as `unknown`.
    /// Report them: this is the only time they are returned.
    pub unknown: Vec<ActionRecord>,
    /// Runs left `running` by a process that is gone: now `interrupted`.
    pub interrupted: Vec<RunRecord>,
    /// Runs still being carried out by a live process on this host: left alone.
    pub live: Vec<RunRecord>,
    /// Runs marked `running` by a process on another host: left alone, since
    /// nothing here can tell whether it is still there.
    pub other_host: Vec<RunRecord>,
}

/// What [`Journal::prune`] removed, and what it kept although it was old.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub runs: u64,
    pub actions: u64,
    pub findings: u64,
    /// Runs older than the cutoff (finished, or if never finished started,
    /// before it) but kept: still running, or with an action intent that
    /// has no result.
    pub kept_unfinished: u64,
}

/// An action as recorded: the intent, and its result once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub id: i64,
    pub run_id: i64,
    pub policy: String,
    pub action: String,
    pub user: String,
    pub credential: String,
    pub key_id: Option<String>,
    pub intent_at: String,
    /// `None`: the intent was written but no result ever came (a crash).
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub result_at: Option<String>,
    /// The AWS account of the credential (its run's).
    pub account: Option<String>,
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

/// Version 0, the schema before versions: kept as the first step, so that a
/// fresh journal and an old one are brought to the current schema the same way.
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

/// `MIGRATIONS[v]` brings a journal from version `v` to `v + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 -> 1: each run records the process that owns it.
    "
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs ADD COLUMN owner_host TEXT;
ALTER TABLE runs ADD COLUMN owner_start TEXT;
",
    // 1 -> 2: saved plans are applied at most once.
    "
CREATE TABLE IF NOT EXISTS applied_plans (
    mac         TEXT PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    applied_at  TEXT NOT NULL
);
",
    // 2 -> 3: many accounts: every run, finding and action names its account
    // (NULL: a report file, or a run journaled before accounts were recorded).
    "
ALTER TABLE runs ADD COLUMN account TEXT;
ALTER TABLE findings ADD COLUMN account TEXT;
ALTER TABLE actions ADD COLUMN account TEXT;
CREATE INDEX IF NOT EXISTS runs_account ON runs(account);
",
    // 3 -> 4: the messages sent to owners, once per credential and stage.
    "
CREATE TABLE IF NOT EXISTS notices (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    account     TEXT,
    policy      TEXT NOT NULL,
    user        TEXT NOT NULL,
    credential  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    stage       TEXT NOT NULL,
    channel     TEXT NOT NULL,
    recipient   TEXT,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS notices_subject ON notices(subject, stage, policy);
",
];

fn now() -> String {
    stamp(Utc::now())
}

/// The one format of every timestamp in the journal: comparable as text.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn user_version(c: &Connection) -> rusqlite::Result<i64> {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Refuse a journal this engine does not know how to read or write.
fn check_version(path: &Path, found: i64) -> Result<()> {
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(JournalError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

impl Journal {
    /// Open (creating if needed) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE);
        let conn = Connection::open(&path).map_err(|source| JournalError::Sql {
            path: path.clone(),
            source,
        })?;
        let mut j = Journal { conn, path };
        // First of all: wait for another process's lock rather than fail.
        j.sql(|c| c.busy_timeout(BUSY_TIMEOUT))?;
        // Refuse a newer journal before anything could write to it.
        check_version(&j.path, j.sql(user_version)?)?;
        j.sql(|c| {
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.pragma_update(None, "foreign_keys", "ON")
        })?;
        j.migrate()?;
        Ok(j)
    }

    /// Bring the schema to [`SCHEMA_VERSION`], all steps in one transaction.
    fn migrate(&mut self) -> Result<()> {
        if self.sql(user_version)? == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        // Read again under the write lock: another process may have migrated.
        let found = user_version(&tx).map_err(wrap)?;
        check_version(&self.path, found)?;
        if found == 0 {
            tx.execute_batch(SCHEMA_V0).map_err(wrap)?;
        }
        for step in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
            tx.execute_batch(step).map_err(wrap)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(wrap)?;
        tx.commit().map_err(wrap)
    }

    /// The schema version of the journal as opened: [`SCHEMA_VERSION`].
    pub fn schema_version(&self) -> Result<i64> {
        self.sql(user_version)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|source| JournalError::Sql {
            path: self.path.clone(),
            source,
        })
    }

    /// Start a run, owned by this process; its findings are stored in the same transaction.
    pub fn start_run(&mut self, command: &str, source: &str, findings: &[Finding]) -> Result<i64> {
        self.start_run_owned_by(command, source, findings, &RunOwner::current())
    }

    /// [`start_run`](Journal::start_run) about one AWS account: the run, its
    /// findings and its actions record `account`.
    pub fn start_account_run(
        &mut self,
        account: Option<&str>,
        command: &str,
        source: &str,
        findings: &[Finding],
    ) -> Result<i64> {
        self.start(account, command, source, findings, &RunOwner::current())
    }

    /// [`start_run`](Journal::start_run) on behalf of another process: for
    /// tests and tools that journal what another process did.
    pub fn start_run_owned_by(
        &mut self,
        command: &str,
        source: &str,
        findings: &[Finding],
        owner: &RunOwner,
    ) -> Result<i64> {
        self.start(None, command, source, findings, owner)
    }

    fn start(
        &mut self,
        account: Option<&str>,
        command: &str,
        source: &str,
        findings: &[Finding],
        owner: &RunOwner,
    ) -> Result<i64> {
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        tx.execute(
            "INSERT INTO runs (command, source, started_at, status, owner_pid, owner_host, owner_start, account)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                command,
                source,
                now(),
                RunStatus::Running.as_str(),
                owner.pid,
                owner.host,
                owner.start,
                account
            ],
        )
        .map_err(wrap)?;
        let run = tx.last_insert_rowid();
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO findings (run_id, policy, user, credential, key_id, age_days, finding, account)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(wrap)?;
            for f in findings {
                let json = serde_json::to_string(f).unwrap_or_default();
                stmt.execute(params![
                    run,
                    f.policy,
                    f.user(),
                    f.credential.as_str(),
                    f.key_id,
                    f.age_days,
                    json,
                    f.account.as_deref().or(account)
                ])
                .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(run)
    }

    /// Record that an action is about to be sent. Durable when this returns.
    pub fn intent(&self, run: i64, a: &PlannedAction) -> Result<i64> {
        self.sql(|c| {
            c.execute(
                "INSERT INTO actions (run_id, policy, action, user, credential, key_id, intent_at, account)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT account FROM runs WHERE id = ?1))",
                params![
                    run,
                    a.policy,
                    a.action.as_str(),
                    a.user.as_str(),
                    a.credential.as_str(),
                    a.key_id,
                    now()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record an action's result.
    pub fn result(&self, action: i64, outcome: Outcome, detail: &str) -> Result<()> {
        self.sql(|c| {
            c.execute(
                "UPDATE actions SET outcome = ?1, detail = ?2, result_at = ?3 WHERE id = ?4",
                params![outcome.as_str(), detail, now(), action],
            )
            .map(|_| ())
        })
    }

    /// The run that applied the saved plan sealed with `mac`, if any.
    pub fn plan_applied_by(&self, mac: &str) -> Result<Option<i64>> {
        self.sql(|c| {
            c.query_row(
                "SELECT run_id FROM applied_plans WHERE mac = ?1",
                params![mac],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Record that `run` applies the saved plan sealed with `mac`. False when
    /// another run already did (or does): a saved plan is applied at most once.
    pub fn claim_plan(&self, mac: &str, run: i64) -> Result<bool> {
        self.sql(|c| {
            c.execute(
                "INSERT OR IGNORE INTO applied_plans (mac, run_id, applied_at) VALUES (?1, ?2, ?3)",
                params![mac, run, now()],
            )
        })
        .map(|n| n == 1)
    }

    /// Record an action that was decided against before sending (one row, with its result).
    pub fn skipped(&self, run: i64, a: &PlannedAction, detail: &str) -> Result<i64> {
        let id = self.intent(run, a)?;
        self.result(id, Outcome::Skipped, detail)?;
        Ok(id)
    }

    pub fn finish_run(&self, run: i64, status: RunStatus, summary: &str) -> Result<()> {
        self.sql(|c| {
            c.execute(
                "UPDATE runs SET finished_at = ?1, status = ?2, summary = ?3 WHERE id = ?4",
                params![now(), status.as_str(), summary, run],
            )
            .map(|_| ())
        })
    }

    /// Actions of earlier runs written as intents that never got a result:
    /// the engine stopped between sending and recording. Their effect on the
    /// account is unknown until the next credential report shows it.
    pub fn unfinished(&self) -> Result<Vec<ActionRecord>> {
        self.actions_where("outcome IS NULL", params![])
    }

    /// Take the intents left without a result by earlier runs whose process
    /// is gone: return them for reporting and, in the same transaction,
    /// record them as `unknown` and their runs as `interrupted`, so they are
    /// reported once. Runs another live process is carrying out are left
    /// alone; [`recover`](Journal::recover) tells which.
    pub fn take_unfinished(&mut self) -> Result<Vec<ActionRecord>> {
        self.recover().map(|r| r.unknown)
    }

    /// Close what crashed processes left behind, in one transaction: every
    /// run left `running` by a process that is gone (same host, pid not
    /// alive or reused) becomes `interrupted`, and every intent without a
    /// result of such a run, or of a run that is not running any more,
    /// becomes `unknown`. Runs of live processes on this host and runs from
    /// other hosts are not touched, only returned.
    pub fn recover(&mut self) -> Result<Recovery> {
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let me = RunOwner::current();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let mut recovery = Recovery::default();
        let mut untouchable = HashSet::new();
        let running = query_runs(
            &tx,
            "WHERE r.status = ?1 ORDER BY r.id",
            params![RunStatus::Running.as_str()],
        )
        .map_err(wrap)?;
        for (run, start) in running {
            match liveness(
                run.owner_pid,
                run.owner_host.as_deref(),
                start.as_deref(),
                &me,
            ) {
                Liveness::Alive => {
                    untouchable.insert(run.id);
                    recovery.live.push(run);
                }
                Liveness::OtherHost => {
                    untouchable.insert(run.id);
                    recovery.other_host.push(run);
                }
                Liveness::Gone => recovery.interrupted.push(run),
            }
        }
        recovery.unknown = query_actions(&tx, "outcome IS NULL", params![])
            .map_err(wrap)?
            .into_iter()
            .filter(|a| !untouchable.contains(&a.run_id))
            .collect();
        let at = now();
        for a in &recovery.unknown {
            tx.execute(
                "UPDATE actions SET outcome = ?1, detail = ?2, result_at = ?3 WHERE id = ?4",
                params![
                    Outcome::Unknown.as_str(),
                    "no result was recorded: the engine stopped between sending and recording",
                    at,
                    a.id
                ],
            )
            .map_err(wrap)?;
        }
        for run in &mut recovery.interrupted {
            tx.execute(
                "UPDATE runs SET status = ?1 WHERE id = ?2 AND status = ?3",
                params![INTERRUPTED, run.id, RunStatus::Running.as_str()],
            )
            .map_err(wrap)?;
            run.status = INTERRUPTED.to_owned();
        }
        tx.commit().map_err(wrap)?;
        Ok(recovery)
    }

    /// Delete the runs that finished before `before`, with their findings and
    /// actions, in one transaction. A run still `running`, or with an action
    /// intent that has no result, is never deleted, however old. A run closed
    /// by recovery (`interrupted`) counts from when it started.
    pub fn prune(&mut self, before: DateTime<Utc>) -> Result<PruneStats> {
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let cutoff = stamp(before);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let mut stats = PruneStats::default();
        let old: Vec<(i64, bool)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT r.id,
                            r.status <> ?2 AND NOT EXISTS
                              (SELECT 1 FROM actions a WHERE a.run_id = r.id AND a.outcome IS NULL)
                     FROM runs r WHERE COALESCE(r.finished_at, r.started_at) < ?1",
                )
                .map_err(wrap)?;
            let rows = stmt
                .query_map(params![cutoff, RunStatus::Running.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(wrap)?;
            rows.collect::<rusqlite::Result<_>>().map_err(wrap)?
        };
        {
            let mut findings = tx
                .prepare("DELETE FROM findings WHERE run_id = ?1")
                .map_err(wrap)?;
            let mut actions = tx
                .prepare("DELETE FROM actions WHERE run_id = ?1")
                .map_err(wrap)?;
            let mut plans = tx
                .prepare("DELETE FROM applied_plans WHERE run_id = ?1")
                .map_err(wrap)?;
            let mut notices = tx
                .prepare("DELETE FROM notices WHERE run_id = ?1")
                .map_err(wrap)?;
            let mut runs = tx.prepare("DELETE FROM runs WHERE id = ?1").map_err(wrap)?;
            for (id, finished) in old {
                if !finished {
                    stats.kept_unfinished += 1;
                    continue;
                }
                stats.findings += findings.execute(params![id]).map_err(wrap)? as u64;
                stats.actions += actions.execute(params![id]).map_err(wrap)? as u64;
                plans.execute(params![id]).map_err(wrap)?;
                notices.execute(params![id]).map_err(wrap)?;
                stats.runs += runs.execute(params![id]).map_err(wrap)? as u64;
            }
        }
        tx.commit().map_err(wrap)?;
        Ok(stats)
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        self.recent_runs_of(limit, None)
    }

    /// The most recent runs about `account` (all runs when `None`), newest first.
    pub fn recent_runs_of(&self, limit: usize, account: Option<&str>) -> Result<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.sql(|c| match account {
            None => query_runs(c, "ORDER BY r.id DESC LIMIT ?1", params![limit]),
            Some(a) => query_runs(
                c,
                "WHERE r.account = ?2 ORDER BY r.id DESC LIMIT ?1",
                params![limit, a],
            ),
        })
        .map(|runs| runs.into_iter().map(|(run, _)| run).collect())
    }

    /// Whether the message of `stage` about `subject` (a key id, or a
    /// password's identity) under `policy` in `account` was sent, or may have
    /// been (its sending was cut off): then it is not sent again. A message
    /// that failed may be sent again.
    pub fn notice_sent(
        &self,
        account: Option<&str>,
        policy: &str,
        subject: &str,
        stage: &str,
    ) -> Result<bool> {
        self.sql(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM notices
                 WHERE subject = ?1 AND stage = ?2 AND policy = ?3
                   AND account IS ?4 AND status IN ('sending', 'sent', 'unknown'))",
                params![subject, stage, policy, account],
                |r| r.get(0),
            )
        })
    }

    /// Record that a message is about to be sent (status `sending`).
    /// Durable when this returns: a crash before [`Journal::notice_result`]
    /// leaves it `sending`, which counts as sent (never sent twice).
    pub fn notice_intent(&self, run: i64, n: &NoticeRecord) -> Result<i64> {
        self.sql(|c| {
            c.execute(
                "INSERT INTO notices (run_id, account, policy, user, credential, subject, stage, channel, recipient, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'sending', ?10)",
                params![
                    run,
                    n.account,
                    n.policy,
                    n.user,
                    n.credential,
                    n.subject,
                    n.stage,
                    n.channel,
                    n.recipient,
                    now()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record how sending a message went.
    pub fn notice_result(
        &self,
        notice: i64,
        sent: bool,
        attempts: u32,
        detail: &str,
    ) -> Result<()> {
        self.sql(|c| {
            c.execute(
                "UPDATE notices SET status = ?1, attempts = ?2, detail = ?3, finished_at = ?4 WHERE id = ?5",
                params![if sent { "sent" } else { "failed" }, attempts, detail, now(), notice],
            )
            .map(|_| ())
        })
    }

    /// The messages recorded under `run`, in order.
    pub fn notices_of(&self, run: i64) -> Result<Vec<NoticeRecord>> {
        self.sql(|c| {
            let mut stmt = c.prepare(
                "SELECT account, policy, user, credential, subject, stage, channel, recipient, status, attempts, detail
                 FROM notices WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![run], |r| {
                Ok(NoticeRecord {
                    account: r.get(0)?,
                    policy: r.get(1)?,
                    user: r.get(2)?,
                    credential: r.get(3)?,
                    subject: r.get(4)?,
                    stage: r.get(5)?,
                    channel: r.get(6)?,
                    recipient: r.get(7)?,
                    status: r.get(8)?,
                    attempts: r.get(9)?,
                    detail: r.get(10)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The access keys the engine deactivated (a `deactivate-access-key`
    /// recorded `done` or `done-on-retry`) and did not delete since: the
    /// latest deactivation of each key id, in `account` (every account when
    /// `None`). What a policy with `follow_deactivated` sees again.
    pub fn deactivated_keys(&self, account: Option<&str>) -> Result<Vec<DeactivatedKey>> {
        self.sql(|c| {
            let mut stmt = c.prepare(
                "SELECT a.key_id, a.user, a.policy, MAX(a.result_at), a.account
                 FROM actions a
                 WHERE a.action = 'deactivate-access-key'
                   AND a.outcome IN ('done', 'done-on-retry')
                   AND a.key_id IS NOT NULL
                   AND (?1 IS NULL OR a.account = ?1)
                   AND NOT EXISTS (
                       SELECT 1 FROM actions d
                       WHERE d.key_id = a.key_id
                         AND d.action = 'delete-access-key'
                         AND d.outcome IN ('done', 'done-on-retry', 'already-gone'))
                 GROUP BY a.key_id",
            )?;
            let rows = stmt.query_map(params![account], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(key_id, user, policy, at, account)| {
                    let at = DateTime::parse_from_rfc3339(&at).ok()?.with_timezone(&Utc);
                    Some(DeactivatedKey {
                        key_id,
                        user,
                        policy,
                        at,
                        account,
                    })
                })
                .collect()
        })
    }

    /// The actions of one run, in the order they were recorded.
    pub fn actions_of(&self, run: i64) -> Result<Vec<ActionRecord>> {
        self.actions_where("run_id = ?1", params![run])
    }

    fn actions_where(&self, cond: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<ActionRecord>> {
        self.sql(|c| query_actions(c, cond, p))
    }
}

/// Runs with their owner's recorded start.
fn query_runs(
    c: &Connection,
    tail: &str,
    p: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<(RunRecord, Option<String>)>> {
    let mut stmt = c.prepare(&format!(
        "SELECT r.id, r.command, r.source, r.started_at, r.finished_at, r.status, r.summary,
                (SELECT COUNT(*) FROM findings f WHERE f.run_id = r.id),
                r.owner_pid, r.owner_host, r.owner_start, r.account
         FROM runs r {tail}"
    ))?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            RunRecord {
                id: r.get(0)?,
                command: r.get(1)?,
                source: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                status: r.get(5)?,
                summary: r.get(6)?,
                findings: r.get(7)?,
                owner_pid: r.get(8)?,
                owner_host: r.get(9)?,
                account: r.get(11)?,
            },
            r.get(10)?,
        ))
    })?;
    rows.collect()
}

fn query_actions(
    c: &Connection,
    cond: &str,
    p: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<ActionRecord>> {
    let mut stmt = c.prepare(&format!(
        "SELECT id, run_id, policy, action, user, credential, key_id, intent_at, outcome, detail, result_at, account
         FROM actions WHERE {cond} ORDER BY id"
    ))?;
    let rows = stmt.query_map(p, |r| {
        Ok(ActionRecord {
            id: r.get(0)?,
            run_id: r.get(1)?,
            policy: r.get(2)?,
            action: r.get(3)?,
            user: r.get(4)?,
            credential: r.get(5)?,
            key_id: r.get(6)?,
            intent_at: r.get(7)?,
            outcome: r.get(8)?,
            detail: r.get(9)?,
            result_at: r.get(10)?,
            account: r.get(11)?,
        })
    })?;
    rows.collect()
}
