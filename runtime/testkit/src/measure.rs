//! Running a command for a benchmark: its wall time, exit code and peak
//! resident memory, output discarded.
//!
//! The peak is the process's own high-water mark (`VmHWM` of
//! `/proc/PID/status`), read until it exits. `wait4`'s `ru_maxrss` is not
//! used: it also counts the memory of the process that spawned the child
//! (the benchmark itself), which the child shared until its `exec`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one run of a command cost.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    /// Peak resident set size of the process, in KiB.
    pub peak_kb: i64,
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
}

impl Measured {
    pub fn peak_mb(&self) -> f64 {
        self.peak_kb as f64 / 1024.0
    }
}

fn hwm_kb(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Run `cmd` to its end with stdout and stderr discarded.
pub fn run(cmd: &mut Command) -> Measured {
    // Until the child has exec'ed, /proc shows the memory it shares with
    // this process: readings count only once it runs the program.
    let program = std::fs::canonicalize(cmd.get_program()).ok();
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the command");
    let pid = child.id();
    let mut peak_kb = 0;
    let status = loop {
        // Read before asking whether it exited: the last reading is taken
        // while it is still alive.
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok() == program;
        if let (true, Some(kb)) = (running, hwm_kb(pid)) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Measured {
        wall: t0.elapsed(),
        peak_kb,
        code: status.code(),
    }
}
