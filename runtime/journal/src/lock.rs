//! The state lock: one process acts on a state directory at a time.
//!
//! `<state>/engine.lock` is locked exclusively with `flock(2)` (the standard
//! library's [`File::try_lock`]) for as long as a [`StateLock`] lives. The
//! operating system releases it when the process exits, however it exits, so
//! a crash never leaves a stale lock behind. On Linux an NFS mount turns
//! `flock` into a lock the server sees (unless mounted with `local_lock`),
//! so processes on other hosts sharing the state directory are held off too.
//!
//! The holder writes who it is into the file (pid, host name, when it took
//! the lock) for people and for the error of whoever is refused. The file is
//! never deleted: deleting a lock file while another process waits for it
//! would let two processes hold "the" lock at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::RunOwner;

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "engine.lock";

/// How often [`StateLock::acquire`] tries again while it waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Who holds the lock, as its holder wrote it into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    /// Host name; `None` when the holder could not read its own.
    pub host: Option<String>,
    /// When the holder took the lock (to the second).
    pub since: DateTime<Utc>,
}

impl LockHolder {
    /// This process, now.
    fn current() -> LockHolder {
        let me = RunOwner::current();
        let now = Utc::now();
        LockHolder {
            pid: me.pid,
            host: me.host,
            // Whole seconds: what the file says is what the holder reports.
            since: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        }
    }

    /// The lock file's contents: one `key: value` per line.
    fn to_file(&self) -> String {
        format!(
            "pid: {}\nhost: {}\nsince: {}\n",
            self.pid,
            self.host.as_deref().unwrap_or("unknown"),
            stamp(self.since)
        )
    }

    /// Read back what [`to_file`](LockHolder::to_file) wrote; `None` if the
    /// file is empty (not written yet, or released) or not in that format.
    fn parse(text: &str) -> Option<LockHolder> {
        let mut pid = None;
        let mut host = None;
        let mut since = None;
        for line in text.lines() {
            match line.split_once(": ") {
                Some(("pid", v)) => pid = v.trim().parse().ok(),
                Some(("host", v)) => host = Some(v.trim().to_owned()),
                Some(("since", v)) => {
                    since = DateTime::parse_from_rfc3339(v.trim())
                        .ok()
                        .map(|t| t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        Some(LockHolder {
            pid: pid?,
            host: host.filter(|h| h != "unknown"),
            since: since?,
        })
    }
}

impl std::fmt::Display for LockHolder {
    /// `pid N on HOST since T`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {}",
            self.pid,
            self.host.as_deref().unwrap_or("an unknown host"),
            stamp(self.since)
        )
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock (after waiting, if asked to wait).
    #[error("state is locked by {}", held_by(.holder))]
    Held {
        path: PathBuf,
        /// `None` when the lock file does not say (a holder that has only
        /// just taken the lock, or an engine that wrote no holder).
        holder: Option<LockHolder>,
    },
    #[error("cannot lock the state directory ({path}): {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn held_by(holder: &Option<LockHolder>) -> String {
    match holder {
        Some(h) => h.to_string(),
        None => "another process (the lock file does not say which)".to_owned(),
    }
}

/// An exclusive lock on a state directory, held until dropped (or the
/// process ends).
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    holder: LockHolder,
}

impl StateLock {
    /// Take the lock of `state_dir` (created if needed) if it is free, else
    /// fail at once with who holds it.
    pub fn try_acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        StateLock::acquire(state_dir, Duration::ZERO)
    }

    /// Take the lock of `state_dir` (created if needed), waiting up to
    /// `timeout` for its holder to release it (polling every
    /// [`POLL_INTERVAL`]); `Duration::ZERO` does not wait. Blocks the
    /// calling thread while it waits.
    pub fn acquire(state_dir: &Path, timeout: Duration) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // Never truncate on open: the file tells whoever is refused who holds it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let holder = read_holder(&mut file);
                        return Err(LockError::Held { path, holder });
                    }
                    std::thread::sleep(POLL_INTERVAL.min(deadline - now));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let holder = LockHolder::current();
        // Ours now: say who holds it. Released with the file if this fails.
        write_holder(&mut file, &holder).map_err(io)?;
        Ok(StateLock { file, path, holder })
    }

    /// The lock file, `<state>/engine.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This process, as written into the lock file.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Leave no holder behind, then let go (closing the file unlocks it).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn write_holder(file: &mut File, holder: &LockHolder) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(holder.to_file().as_bytes())?;
    file.flush()
}

/// The holder as written in the lock file. Its holder may have taken the
/// lock an instant ago and not written yet: look a few times.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| Read::take(&mut *file, 4096).read_to_string(&mut text));
        if read.is_ok()
            && let Some(holder) = LockHolder::parse(&text)
        {
            return Some(holder);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_reads_back() {
        let h = LockHolder {
            pid: 42,
            host: Some("build-1".into()),
            since: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        };
        assert_eq!(LockHolder::parse(&h.to_file()), Some(h.clone()));
        assert_eq!(
            h.to_string(),
            "pid 42 on build-1 since 2027-01-15T08:00:00Z"
        );
        let anon = LockHolder { host: None, ..h };
        assert_eq!(LockHolder::parse(&anon.to_file()), Some(anon));
        assert_eq!(LockHolder::parse(""), None);
        assert_eq!(LockHolder::parse("pid: x\nsince: now\n"), None);
    }
}
