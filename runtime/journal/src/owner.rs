//! Which process a run belongs to, and whether that process is still there.
//!
//! Every run records its owner: pid, host name and the process's start
//! (on Linux the boot id and the start time in clock ticks from
//! `/proc/PID/stat`, so a pid reused after a crash or a reboot is told
//! apart). Recovery closes a run left `running` only when its owner is gone:
//! same host, and the pid is not alive (`kill(pid, 0)` fails with `ESRCH`,
//! or the process is a zombie) or now belongs to another process.

use std::sync::OnceLock;

/// The process that started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    pub pid: u32,
    /// Host name; `None` when it could not be read.
    pub host: Option<String>,
    /// What identifies this start of the process (see the module docs);
    /// `None` where the platform does not tell.
    pub start: Option<String>,
}

impl RunOwner {
    /// This process.
    pub fn current() -> RunOwner {
        static CURRENT: OnceLock<RunOwner> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let pid = std::process::id();
                RunOwner {
                    pid,
                    host: host_name(),
                    start: process_start(pid),
                }
            })
            .clone()
    }
}

/// Whether a run's owner may still be running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// On this host, and the process is there: leave its run alone.
    Alive,
    /// Gone: its run was interrupted.
    Gone,
    /// Started on another host: nothing here can tell.
    OtherHost,
}

/// The owner as recorded in a row: all `None` for runs journaled before
/// owners were recorded (schema version 0), which are taken as gone.
pub(crate) fn liveness(
    pid: Option<i64>,
    host: Option<&str>,
    start: Option<&str>,
    me: &RunOwner,
) -> Liveness {
    let Some(pid) = pid else {
        return Liveness::Gone;
    };
    if let (Some(theirs), Some(ours)) = (host, me.host.as_deref())
        && theirs != ours
    {
        return Liveness::OtherHost;
    }
    let Ok(pid) = u32::try_from(pid) else {
        return Liveness::Gone;
    };
    if pid == me.pid {
        return if start.is_some() && start != me.start.as_deref() {
            Liveness::Gone
        } else {
            Liveness::Alive
        };
    }
    if !pid_alive(pid) {
        return Liveness::Gone;
    }
    match (start, process_start(pid)) {
        // The pid was reused (or the host rebooted) since the run started.
        (Some(recorded), Some(now)) if recorded != now => Liveness::Gone,
        _ => Liveness::Alive,
    }
}

#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    let Some(id) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Signal 0 sends nothing; it only checks that the process exists.
    match rustix::process::test_kill_process(id) {
        Ok(()) => !is_zombie(id.as_raw_nonzero().get()),
        // EPERM: it exists, under another user.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(not(unix))]
fn pid_alive(_pid: u32) -> bool {
    // No portable check: take it as gone, as before owners were recorded.
    false
}

#[cfg(target_os = "linux")]
fn proc_stat_fields(pid: impl std::fmt::Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

#[cfg(all(unix, target_os = "linux"))]
fn is_zombie(pid: i32) -> bool {
    proc_stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state == "Z" || state == "X")
}

#[cfg(all(unix, not(target_os = "linux")))]
fn is_zombie(_pid: i32) -> bool {
    false
}

/// `BOOT_ID/STARTTIME` on Linux: unique to one start of one process.
#[cfg(target_os = "linux")]
fn process_start(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // Field 22 of stat, the 20th after "(comm)".
    let ticks = proc_stat_fields(pid)?.get(19)?.clone();
    Some(format!("{}/{ticks}", boot.trim()))
}

#[cfg(not(target_os = "linux"))]
fn process_start(_pid: u32) -> Option<String> {
    None
}

#[cfg(unix)]
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(not(unix))]
fn host_name() -> Option<String> {
    std::env::var("COMPUTERNAME").ok().filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_impossible_pid_is_gone() {
        let me = RunOwner::current();
        let host = me.host.as_deref();
        let start = me.start.as_deref();
        assert_eq!(
            liveness(Some(me.pid.into()), host, start, &me),
            Liveness::Alive
        );
        assert_eq!(
            liveness(Some(i64::from(i32::MAX)), host, None, &me),
            Liveness::Gone
        );
        assert_eq!(liveness(Some(-1), host, None, &me), Liveness::Gone);
        assert_eq!(liveness(Some(0), host, None, &me), Liveness::Gone);
        assert_eq!(liveness(None, None, None, &me), Liveness::Gone);
        assert_eq!(
            liveness(
                Some(me.pid.into()),
                Some("not-this-host.invalid"),
                None,
                &me
            ),
            Liveness::OtherHost
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_reused_pid_is_gone() {
        let me = RunOwner::current();
        assert!(me.start.is_some());
        // pid 1 is alive, but not the process that started the run.
        assert_eq!(
            liveness(Some(1), me.host.as_deref(), Some("other-boot/1"), &me),
            Liveness::Gone
        );
        assert_eq!(
            liveness(
                Some(1),
                me.host.as_deref(),
                process_start(1).as_deref(),
                &me
            ),
            Liveness::Alive
        );
    }
}
