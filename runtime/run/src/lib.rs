//! One executor for every way the engine runs.
//!
//! `engine check`, `engine apply` and the daemon's scheduled runs are thin
//! callers of this crate:
//!
//! 1. [`live::snapshot`]: the credential report (a file, or the account's,
//!    with key ids from `ListAccessKeys` and the engine's own identity);
//! 2. [`prepare::prepare`]: evaluate the rules, let each policy's plugin
//!    ([`plugins::Plugins`]) decide, let the host check every request, and
//!    make the [`document::Document`] everyone renders or saves;
//! 3. [`execute::apply`]: journal the run, re-check and carry out exactly
//!    the plan's writes, journal every result.
//!
//! [`saved`] seals and verifies plans saved by `check --out`.

pub mod accounts;
pub mod config_rules;
pub mod document;
pub mod event;
pub mod execute;
pub mod live;
pub mod notices;
pub mod pipeline;
pub mod plugins;
pub mod prepare;
pub mod saved;
pub mod securityhub;

pub use document::{Document, Source};

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The retention cutoff as of `now`: runs that finished before it may be
/// pruned. `None` when retention is off (zero) or reaches before the calendar.
pub fn retention_cutoff(retention: Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if retention.is_zero() {
        return None;
    }
    let keep = chrono::Duration::from_std(retention).ok()?;
    now.checked_sub_signed(keep)
}

/// Open the journal in the state directory, then prune runs older than
/// `retention`. A failed prune is logged as a warning, not an error: the
/// journal is still usable, and the next run prunes again.
pub fn open_journal(
    state: &Path,
    retention: Duration,
) -> Result<engine_journal::Journal, engine_journal::JournalError> {
    let mut journal = engine_journal::Journal::open(state)?;
    if let Some(cutoff) = retention_cutoff(retention, Utc::now()) {
        match journal.prune(cutoff) {
            Ok(s) if s.runs > 0 => tracing::info!(
                "journal: pruned {} runs finished before {} ({} actions, {} findings)",
                s.runs,
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                s.actions,
                s.findings
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("the journal was not pruned: {e}"),
        }
    }
    Ok(journal)
}
/// A run that failed before it had a plan is journaled too: started and
/// finished at once as failed, with the error as its summary. Returns the
/// run's id, or `None` (logged) when the journal cannot be written.
pub fn journal_failed_run(
    state: &Path,
    retention: Duration,
    account: Option<&str>,
    command: &str,
    target: &str,
    error: &str,
) -> Option<i64> {
    let recorded = open_journal(state, retention).and_then(|mut j| {
        let run = j.start_account_run(account, command, target, &[])?;
        let summary = serde_json::json!({ "actions": 0, "error": error }).to_string();
        j.finish_run(run, engine_journal::RunStatus::Failed, &summary)?;
        Ok(run)
    });
    match recorded {
        Ok(run) => Some(run),
        Err(e) => {
            tracing::warn!("the failed run was not journaled: {e}");
            None
        }
    }
}

pub use execute::{ActionResult, Applied, Execution};
pub use live::{AccountOptions, SourceSpec};
pub use plugins::{PluginObserver, Plugins};
pub use prepare::{
    AccountPrepared, AccountsPrepared, Prepared, Request, prepare, prepare_accounts,
};
