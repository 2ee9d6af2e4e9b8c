//! The daemon's numbers: its idle footprint (memory, CPU, wakeups), and one
//! scheduled run against `engine apply --auto-approve` on an account of 2,000
//! seeded users in moto (the real binary, SDK and plugins).
//!
//! Run: `ENGINE_TEST_PYTHON=$PWD/.venv/bin/python cargo bench -p engine-cli --bench daemon`
//! (after `scripts/test` has created .venv). Linux only (it reads /proc).
//! Under `cargo test` it does nothing. `ENGINE_BENCH_SAMPLES` (default 3)
//! sets how many apply/daemon pairs are compared; pairs stop early when the
//! next one would take the bench past about 5 minutes.
//!
//! 1. Idle: `engine daemon policies` on the shipped policies (daily
//!    schedules, so it idles), against an empty moto for its start-up
//!    GetCallerIdentity. Once /healthz answers, 2 s to settle, then
//!    /proc/PID is read, 10 s of idling, and read again.
//! 2. Run: two moto servers seeded alike (apply changes the account, so each
//!    side starts from the same state). On A, `engine apply --auto-approve`;
//!    on B, a daemon whose two policies are both scheduled for one second a
//!    few seconds after its start, so they share one run. B's call counts are
//!    reset once the daemon is ready (after its start-up probe), before the
//!    tick. The daemon's run time is the run's `started_at`..`finished_at`
//!    from /v1/status; apply's is the process's wall time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use engine_testkit::{Moto, SeedUser, SeededUser, State};
use serde_json::Value;

const USERS: usize = 2000;
/// Wall-clock budget of the whole bench: no new pair starts past it.
const BUDGET: Duration = Duration::from_secs(290);
const IDLE_SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// How long after the daemon is spawned its run is scheduled (at least).
const TICK_LEAD: Duration = Duration::from_secs(4);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    assert!(
        Path::new("/proc/self/status").exists(),
        "this bench reads /proc: Linux only"
    );
    let started = Instant::now();
    let base = std::env::temp_dir().join(format!("engine-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("mkdir");

    idle(&base);

    let samples: usize = std::env::var("ENGINE_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut pairs = Vec::new();
    for i in 0..samples {
        let t = Instant::now();
        pairs.push(pair(&base, i));
        let one = t.elapsed();
        if i + 1 < samples && started.elapsed() + one > BUDGET {
            println!(
                "(stopping after {} pair(s): another would pass the {} s budget)",
                i + 1,
                BUDGET.as_secs()
            );
            break;
        }
    }
    report_pairs(&pairs);
    println!(
        "\ntotal bench time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------- idle

fn idle(base: &Path) {
    let moto = Moto::start();
    let state = base.join("idle-state");
    let policies = engine_testkit::workspace_root().join("policies");
    let mut daemon = Daemon::spawn(
        &policies,
        &state,
        &moto.endpoint(),
        engine_testkit::ACCESS_KEY_ID,
    );
    daemon.wait_healthy(Duration::from_secs(30));
    std::thread::sleep(IDLE_SETTLE);
    let clk = clock_ticks();
    let before = ProcSample::read(daemon.pid());
    let t0 = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let after = ProcSample::read(daemon.pid());
    let window = t0.elapsed();
    let ready = daemon.get("/readyz").map(|r| r.0).unwrap_or(0);
    daemon.stop();

    let stat_ms = (after.ticks.saturating_sub(before.ticks)) as f64 * 1000.0 / clk as f64;
    let common: BTreeSet<u32> = before
        .threads
        .keys()
        .filter(|t| after.threads.contains_key(t))
        .copied()
        .collect();
    let delta = |f: fn(&ThreadSample) -> Option<u64>| -> Option<u64> {
        let mut sum = 0u64;
        for (tid, a) in &after.threads {
            let b = before.threads.get(tid);
            let now = f(a)?;
            let then = b.map(f).unwrap_or(Some(0))?;
            sum += now.saturating_sub(then);
        }
        Some(sum)
    };
    let sched_ns = delta(|t| t.sched_ns);
    let voluntary = delta(|t| Some(t.voluntary)).unwrap_or(0);
    let involuntary = delta(|t| Some(t.involuntary)).unwrap_or(0);
    let gone = before.threads.len() - common.len();
    let new = after.threads.len() - common.len();
    let mb = |kb: u64| kb as f64 / 1024.0;
    let secs = window.as_secs_f64();

    println!("\n== Idle footprint: engine daemon policies (shipped, daily at 06:00 UTC) ==");
    println!(
        "pid {}, threads {} -> {} ({} exited, {} started in the window), /readyz {}",
        daemon.pid(),
        before.threads.len(),
        after.threads.len(),
        gone,
        new,
        ready
    );
    println!("{:<34} {:>12} {:>10}", "metric", "value", "target");
    println!(
        "{:<34} {:>9.1} MB {:>10}",
        "RSS (VmRSS) after idling",
        mb(after.rss_kb),
        "< 20 MB"
    );
    println!(
        "{:<34} {:>9.1} MB {:>10}",
        "peak RSS (VmHWM)",
        mb(after.hwm_kb),
        ""
    );
    println!(
        "{:<34} {:>9.1} MB {:>10}",
        "  RSS anonymous (RssAnon)",
        mb(after.anon_kb),
        ""
    );
    println!(
        "{:<34} {:>9.1} MB {:>10}",
        "  RSS file-backed (RssFile+Shmem)",
        mb(after.file_kb),
        ""
    );
    println!(
        "{:<34} {:>9.1} ms {:>10}",
        format!("CPU over {secs:.1} s, utime+stime"),
        stat_ms,
        "< 50 ms"
    );
    match sched_ns {
        Some(ns) => println!(
            "{:<34} {:>9.3} ms {:>10}",
            "CPU over the window, schedstat",
            ns as f64 / 1e6,
            "< 50 ms"
        ),
        None => println!("{:<34} {:>12}", "CPU over the window, schedstat", "n/a"),
    }
    println!(
        "{:<34} {:>12} {:>10}",
        "wakeups (voluntary ctx switches)", voluntary, ""
    );
    println!(
        "{:<34} {:>12} {:>10}",
        "involuntary ctx switches", involuntary, ""
    );
    println!(
        "(clock tick {} ms; schedstat is per thread, summed over threads alive at the second read;\n wakeups: {:.1}/s)",
        1000 / clk.max(1),
        voluntary as f64 / secs
    );
    let per_thread: Vec<String> = after
        .threads
        .iter()
        .map(|(tid, t)| {
            let b = before.threads.get(tid);
            format!(
                "{}:{}",
                t.name,
                t.voluntary
                    .saturating_sub(b.map(|b| b.voluntary).unwrap_or(0))
            )
        })
        .collect();
    println!("wakeups by thread: {}", per_thread.join(" "));
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[derive(Debug, Clone)]
struct ThreadSample {
    name: String,
    sched_ns: Option<u64>,
    voluntary: u64,
    involuntary: u64,
}

#[derive(Debug, Clone)]
struct ProcSample {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    /// utime + stime of the whole process, in clock ticks.
    ticks: u64,
    threads: BTreeMap<u32, ThreadSample>,
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl ProcSample {
    fn read(pid: u32) -> ProcSample {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(dir.join("status")).expect("/proc/PID/status");
        let stat = std::fs::read_to_string(dir.join("stat")).expect("/proc/PID/stat");
        // Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
        let rest: Vec<&str> = stat[stat.rfind(')').expect("stat") + 1..]
            .split_whitespace()
            .collect();
        let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut threads = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir.join("task")) {
            for e in entries.flatten() {
                let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(ts) = std::fs::read_to_string(e.path().join("status")) else {
                    continue;
                };
                let sched_ns = std::fs::read_to_string(e.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                let name = ts
                    .lines()
                    .find_map(|l| l.strip_prefix("Name:"))
                    .unwrap_or("?")
                    .trim()
                    .to_string();
                threads.insert(
                    tid,
                    ThreadSample {
                        name,
                        sched_ns,
                        voluntary: status_field(&ts, "voluntary_ctxt_switches"),
                        involuntary: status_field(&ts, "nonvoluntary_ctxt_switches"),
                    },
                );
            }
        }
        ProcSample {
            rss_kb: status_field(&status, "VmRSS"),
            hwm_kb: status_field(&status, "VmHWM"),
            anon_kb: status_field(&status, "RssAnon"),
            file_kb: status_field(&status, "RssFile") + status_field(&status, "RssShmem"),
            ticks: field(11) + field(12),
            threads,
        }
    }
}

// ---------------------------------------------------------------- one pair

/// One apply/daemon comparison.
struct Pair {
    apply_wall: Duration,
    apply_exit: Option<i32>,
    apply_calls: BTreeMap<String, u64>,
    daemon_run: Duration,
    daemon_result: String,
    daemon_actions: Value,
    daemon_calls: BTreeMap<String, u64>,
    /// Calls B saw between the daemon's readiness and the tick (should be 0).
    daemon_before_tick: u64,
    seed_time: Duration,
    /// Both accounts end alike (same users, key statuses, passwords).
    same_end_state: bool,
}

fn seed_users() -> Vec<SeedUser> {
    let days = |d: i64| Utc::now() - TimeDelta::days(d);
    let mut users = Vec::new();
    for i in 0..USERS {
        let u = SeedUser::new(&format!("user-{i:05}"), days(900));
        users.push(match i % 5 {
            0 => u.key(days(200), Some(days(1)), true),
            1 => u.password(days(300), Some(days(150))),
            2 => u.key(days(120), Some(days(100)), true),
            3 => u
                .key(days(10), Some(days(1)), true)
                .password(days(10), Some(days(1))),
            _ => u,
        });
    }
    users.push(SeedUser::new("engine-bot", days(900)).key(days(10), None, true));
    users
}

fn own_key(seeded: &[SeededUser]) -> String {
    seeded
        .iter()
        .find(|s| s.name == "engine-bot")
        .and_then(|s| s.keys.first().cloned())
        .expect("engine-bot key")
}

/// The policies of benches/live.rs, both with `schedule`.
fn write_policies(dir: &Path, schedule: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("p.toml"),
        format!(
            "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 180\nmax_actions_per_run = 5000\nschedule = \"{schedule}\"\n\n\
             [policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\nmax_actions_per_run = 5000\nschedule = \"{schedule}\"\n"
        ),
    )
    .expect("policies");
}

/// A cron expression (with seconds, UTC) that fires at `t` only.
fn cron_at(t: DateTime<Utc>) -> String {
    format!(
        "{} {} {} {} {} *",
        t.second(),
        t.minute(),
        t.hour(),
        t.day(),
        t.month()
    )
}

/// The account as a comparable summary: per user, password or not, and the
/// statuses of its keys (ids differ between servers).
fn shape(state: &State) -> BTreeMap<String, (bool, Vec<String>)> {
    state
        .users
        .iter()
        .map(|u| {
            let mut keys: Vec<String> = u.keys.iter().map(|k| k.status.clone()).collect();
            keys.sort();
            (u.name.clone(), (u.login_profile, keys))
        })
        .collect()
}

fn pair(base: &Path, i: usize) -> Pair {
    let dir = base.join(format!("pair-{i}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let users = seed_users();
    let seeding = Instant::now();
    let ((moto_a, seeded_a), (moto_b, seeded_b)) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let m = Moto::start();
            let seeded = m.seed(&users);
            (m, seeded)
        });
        let b = s.spawn(|| {
            let m = Moto::start();
            let seeded = m.seed(&users);
            (m, seeded)
        });
        (a.join().expect("seed A"), b.join().expect("seed B"))
    });
    let seed_time = seeding.elapsed();

    // A: engine apply.
    let apply_dir = dir.join("apply");
    write_policies(&apply_dir.join("policies"), "0 0 6 * * *");
    moto_a.reset_calls();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["apply", "policies", "--auto-approve"])
        .current_dir(&apply_dir)
        .env("AWS_ENDPOINT_URL", moto_a.endpoint())
        .env("AWS_ACCESS_KEY_ID", own_key(&seeded_a))
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("ENGINE_STATE")
        .output()
        .expect("run engine apply");
    let apply_wall = t.elapsed();
    let apply_calls = moto_a.calls();
    if !out.status.success() {
        eprintln!(
            "engine apply exited {:?}:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // B: the daemon, both policies due at one second a few seconds from now.
    let tick = {
        let t = Utc::now() + TimeDelta::from_std(TICK_LEAD).expect("lead");
        t.with_nanosecond(0).expect("second") + TimeDelta::seconds(1)
    };
    let daemon_dir = dir.join("daemon");
    write_policies(&daemon_dir.join("policies"), &cron_at(tick));
    let mut daemon = Daemon::spawn(
        &daemon_dir.join("policies"),
        &daemon_dir.join("state"),
        &moto_b.endpoint(),
        &own_key(&seeded_b),
    );
    daemon.wait_healthy(Duration::from_secs(30));
    daemon.wait_ready(Duration::from_secs(30));
    if Utc::now() >= tick {
        eprintln!(
            "warning: the daemon was ready only after its tick; B's counts include its start-up probe"
        );
    }
    moto_b.reset_calls();
    let before_tick = loop {
        // Calls between readiness and the tick: none expected.
        if Utc::now() >= tick - TimeDelta::milliseconds(50) {
            break moto_b.total_calls();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = daemon.status()
            && s["runs"]["total"].as_u64().unwrap_or(0) >= 1
            && s["current_run"].is_null()
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's run did not finish within 240 s:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let daemon_calls = moto_b.calls();
    daemon.stop();
    let last = &status["policies"][0]["last_run"];
    let at = |k: &str| {
        DateTime::parse_from_rfc3339(last[k].as_str().unwrap_or_default())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("last_run.{k}: {e}: {status}"))
    };
    let daemon_run = (at("finished_at") - at("started_at"))
        .to_std()
        .unwrap_or_default();
    let runs: BTreeSet<String> = status["policies"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["last_run"]["run"].to_string())
                .collect()
        })
        .unwrap_or_default();
    if runs.len() != 1 {
        eprintln!("warning: the policies ran in different runs: {runs:?}");
    }
    let mut actions = serde_json::Map::new();
    for p in status["policies"].as_array().into_iter().flatten() {
        actions.insert(
            p["name"].as_str().unwrap_or("?").to_string(),
            p["last_run"]["actions"].clone(),
        );
    }
    let same_end_state = shape(&moto_a.state()) == shape(&moto_b.state());
    Pair {
        apply_wall,
        apply_exit: out.status.code(),
        apply_calls,
        daemon_run,
        daemon_result: last["result"].as_str().unwrap_or("?").to_string(),
        daemon_actions: Value::Object(actions),
        daemon_calls,
        daemon_before_tick: before_tick,
        seed_time,
        same_end_state,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report_pairs(pairs: &[Pair]) {
    println!(
        "\n== Scheduled run vs engine apply --auto-approve: {USERS} users, policies rotate (cis-1.4) + unused (cis-1.3) =="
    );
    println!(
        "{:<6} {:>8} {:>10} {:>12} {:>12} {:>8} {:>11} {:>12} {:>8}",
        "pair",
        "seed s",
        "apply exit",
        "apply wall s",
        "daemon run s",
        "ratio",
        "apply calls",
        "daemon calls",
        "same end"
    );
    for (i, p) in pairs.iter().enumerate() {
        let ratio = p.daemon_run.as_secs_f64() / p.apply_wall.as_secs_f64();
        println!(
            "{:<6} {:>8.1} {:>10} {:>12.2} {:>12.2} {:>8.3} {:>11} {:>12} {:>8}",
            i + 1,
            p.seed_time.as_secs_f64(),
            p.apply_exit.map_or("-".into(), |c| c.to_string()),
            p.apply_wall.as_secs_f64(),
            p.daemon_run.as_secs_f64(),
            ratio,
            p.apply_calls.values().sum::<u64>(),
            p.daemon_calls.values().sum::<u64>(),
            if p.same_end_state { "yes" } else { "NO" }
        );
    }
    let apply = median(pairs.iter().map(|p| p.apply_wall.as_secs_f64()).collect());
    let daemon = median(pairs.iter().map(|p| p.daemon_run.as_secs_f64()).collect());
    println!(
        "{:<6} {:>8} {:>10} {:>12.2} {:>12.2} {:>8.3}   (target: ratio within 0.9..1.1, or below)",
        "median",
        "",
        "",
        apply,
        daemon,
        daemon / apply
    );
    for (i, p) in pairs.iter().enumerate() {
        println!(
            "pair {}: daemon run {}, actions {}, calls between readiness and tick {}",
            i + 1,
            p.daemon_result,
            p.daemon_actions,
            p.daemon_before_tick
        );
    }

    println!("\nAPI calls per operation (pair 1; '!' marks pairs whose counts differ)");
    let ops: BTreeSet<&String> = pairs
        .iter()
        .flat_map(|p| p.apply_calls.keys().chain(p.daemon_calls.keys()))
        .collect();
    println!(
        "{:<32} {:>8} {:>8} {:>8}",
        "operation", "apply", "daemon", "diff"
    );
    let first = &pairs[0];
    let get = |m: &BTreeMap<String, u64>, op: &str| m.get(op).copied().unwrap_or(0);
    for op in &ops {
        let a = get(&first.apply_calls, op);
        let d = get(&first.daemon_calls, op);
        let differs: Vec<String> = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| get(&p.apply_calls, op) != get(&p.daemon_calls, op))
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        println!(
            "{:<32} {:>8} {:>8} {:>+8}{}",
            op,
            a,
            d,
            d as i64 - a as i64,
            if differs.is_empty() {
                String::new()
            } else {
                format!("  ! pairs {}", differs.join(","))
            }
        );
    }
    println!(
        "{:<32} {:>8} {:>8} {:>+8}",
        "total",
        first.apply_calls.values().sum::<u64>(),
        first.daemon_calls.values().sum::<u64>(),
        first.daemon_calls.values().sum::<u64>() as i64
            - first.apply_calls.values().sum::<u64>() as i64
    );
    println!(
        "(apply wall: the whole process, start-up included; daemon run: the run's started_at..finished_at\n in /v1/status, from the tick to the last action. The daemon's start-up GetCallerIdentity is\n before the reset and not counted.)"
    );
}

// ---------------------------------------------------------------- the daemon process

struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    addr: Option<SocketAddr>,
}

impl Daemon {
    fn spawn(policies: &Path, state: &Path, endpoint: &str, key: &str) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
            .arg("daemon")
            .arg(policies)
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0"])
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run engine daemon");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    if let Ok(mut s) = sink.lock()
                        && s.len() < 256 * 1024
                    {
                        s.push_str(&line);
                    }
                    line.clear();
                }
            });
        }
        Daemon {
            child,
            stderr,
            addr: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The address of the `INFO listening addr=127.0.0.1:PORT` line.
    fn listening(&self) -> Option<SocketAddr> {
        let text = self.stderr();
        let line = text.lines().find(|l| l.contains("listening"))?;
        let rest = &line[line.find("addr=")? + "addr=".len()..];
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':'))
            .collect();
        addr.parse().ok()
    }

    fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.addr.is_none() {
                self.addr = self.listening();
            }
            if self.addr.is_some() && matches!(self.get("/healthz"), Some((200, _))) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer /healthz:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !matches!(self.get("/readyz"), Some((200, _))) {
            assert!(
                Instant::now() < deadline,
                "the daemon did not become ready:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn status(&self) -> Option<Value> {
        match self.get("/v1/status")? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// `GET path`: status code and body (`Connection: close`, no chunking).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = self.addr?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    /// SIGTERM, then wait (killed after 30 s).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
