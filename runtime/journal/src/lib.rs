//! The journal: what every run found and did, in a crash-safe store.
//!
//! SQLite (bundled, WAL, `synchronous = FULL`) under the state directory.
//! Every action is written as an *intent* and committed **before** it is sent
//! to AWS, then updated with its result. A crash between the two leaves an
//! intent without a result, which the next run reports: nothing the engine
//! did to an account goes unrecorded.

use std::path::{Path, PathBuf};

use chrono::Utc;
use engine_core::{Finding, PlannedAction};
use rusqlite::{Connection, params};

/// File name of the journal inside the state directory.
pub const FILE: &str = "journal.sqlite3";

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

/// The result of one action, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Done,
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
            Outcome::AlreadyGone => "already-gone",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
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
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
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

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
        let j = Journal { conn, path };
        j.sql(|c| {
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.execute_batch(SCHEMA)
        })?;
        Ok(j)
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

    /// Start a run; its findings are stored in the same transaction.
    pub fn start_run(&mut self, command: &str, source: &str, findings: &[Finding]) -> Result<i64> {
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        tx.execute(
            "INSERT INTO runs (command, source, started_at, status) VALUES (?1, ?2, ?3, ?4)",
            params![command, source, now(), RunStatus::Running.as_str()],
        )
        .map_err(wrap)?;
        let run = tx.last_insert_rowid();
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO findings (run_id, policy, user, credential, key_id, age_days, finding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(wrap)?;
            for f in findings {
                let json = serde_json::to_string(f).unwrap_or_default();
                stmt.execute(params![
                    run,
                    f.policy,
                    f.user,
                    f.credential.as_str(),
                    f.key_id,
                    f.age_days,
                    json
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
                "INSERT INTO actions (run_id, policy, action, user, credential, key_id, intent_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    run,
                    a.policy,
                    a.action.as_str(),
                    a.user,
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

    /// Take the intents left without a result by earlier runs: return them
    /// for reporting and, in the same transaction, record them as
    /// `unknown` and their runs as `interrupted`, so they are reported once.
    pub fn take_unfinished(&mut self) -> Result<Vec<ActionRecord>> {
        let open = self.unfinished()?;
        if open.is_empty() {
            return Ok(open);
        }
        let path = self.path.clone();
        let wrap = |source| JournalError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let at = now();
        for a in &open {
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
            tx.execute(
                "UPDATE runs SET status = 'interrupted' WHERE id = ?1 AND status = 'running'",
                params![a.run_id],
            )
            .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(open)
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        self.sql(|c| {
            let mut stmt = c.prepare(
                "SELECT r.id, r.command, r.source, r.started_at, r.finished_at, r.status, r.summary,
                        (SELECT COUNT(*) FROM findings f WHERE f.run_id = r.id)
                 FROM runs r ORDER BY r.id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    source: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    status: r.get(5)?,
                    summary: r.get(6)?,
                    findings: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The actions of one run, in the order they were recorded.
    pub fn actions_of(&self, run: i64) -> Result<Vec<ActionRecord>> {
        self.actions_where("run_id = ?1", params![run])
    }

    fn actions_where(&self, cond: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<ActionRecord>> {
        self.sql(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT id, run_id, policy, action, user, credential, key_id, intent_at, outcome, detail, result_at
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
                })
            })?;
            rows.collect()
        })
    }
}
