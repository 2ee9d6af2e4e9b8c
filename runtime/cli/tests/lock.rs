//! The state lock through the real binary, against moto: one process acts
//! on a state directory at a time (`apply` holds `<state>/engine.lock`), and
//! a live `check` takes over unfinished intents only when it can take the lock.
//!
//! The test process holds the lock itself, through the journal crate's
//! `StateLock`, as another engine would. Run through `scripts/test`, which
//! installs moto into `.venv`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use engine_journal::{Journal, StateLock};
use engine_testkit::{Moto, SeedUser};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

const POLICIES: &str = "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 180\n";

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

/// A moto account with one user ("alice") whose old key `rotate` deletes,
/// and the engine's own user.
struct Account {
    moto: Moto,
    own_key: String,
    dir: PathBuf,
}

impl Account {
    fn new(name: &str) -> Account {
        let moto = Moto::start();
        let seeded = moto.seed(&[
            SeedUser::new("alice", days_ago(800)).key(days_ago(400), Some(days_ago(1)), true),
            SeedUser::new("engine-bot", days_ago(800)).key(days_ago(10), None, true),
        ]);
        let own_key = seeded
            .iter()
            .find(|s| s.name == "engine-bot")
            .and_then(|s| s.keys.first().cloned())
            .expect("engine-bot has a key");
        let dir = std::env::temp_dir().join(format!("engine-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(dir.join("policies/policies.toml"), POLICIES).expect("write policies");
        Account { moto, own_key, dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn policies(&self) -> String {
        self.dir.join("policies").display().to_string()
    }

    /// The engine in the account's directory, with only the environment it
    /// needs to reach this moto as its own user.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ENGINE);
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ENGINE_STATE", self.state())
            .env("RUST_LOG", "warn")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn engine(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run engine")
    }

    fn alice_keys(&self) -> usize {
        self.moto
            .state()
            .user("alice")
            .map(|u| u.keys.len())
            .expect("alice")
    }

    /// (command, status) of every journaled run, oldest first.
    fn runs(&self) -> Vec<(String, String)> {
        if !self.state().join(engine_journal::FILE).exists() {
            return Vec::new();
        }
        let journal = Journal::open(&self.state()).expect("journal");
        let mut runs: Vec<_> = journal
            .recent_runs(1000)
            .expect("runs")
            .into_iter()
            .map(|r| (r.command, r.status))
            .collect();
        runs.reverse();
        runs
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The error line of an engine refused by `lock`.
fn locked_by(lock: &StateLock) -> String {
    let h = lock.holder();
    format!(
        "error: state is locked by pid {} on {} since {}",
        h.pid,
        h.host.as_deref().unwrap_or("an unknown host"),
        h.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

#[track_caller]
fn assert_refused_by(out: &Output, lock: &StateLock) {
    assert_code(out, 1);
    let stderr = text(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(first, locked_by(lock), "stderr:\n{stderr}");
    assert!(stderr.contains("--lock-timeout"), "a hint: {stderr}");
}

#[test]
fn apply_on_a_locked_state_exits_1_having_done_nothing() {
    let account = Account::new("refused");
    let plan = account.dir.join("plan.json").display().to_string();
    let out = account.engine(&["check", &account.policies(), "--out", &plan]);
    assert_code(&out, 2);
    let runs = account.runs();
    assert_eq!(runs, [("check".to_string(), "ok".to_string())]);

    let lock = StateLock::try_acquire(&account.state()).expect("the lock is free");
    assert_eq!(lock.holder().pid, std::process::id());
    account.moto.reset_calls();
    for target in [account.policies(), plan.clone()] {
        let out = account.engine(&["apply", &target, "--auto-approve"]);
        assert_refused_by(&out, &lock);
        assert!(
            out.stdout.is_empty(),
            "no plan shown: {}",
            text(&out.stdout)
        );
    }
    // Nothing was done: not one AWS call (not even a read), no journal run.
    assert_eq!(account.moto.calls(), Default::default());
    assert_eq!(account.alice_keys(), 1);
    assert_eq!(account.runs(), runs);

    // The lock was all that stood in the way: released, the same saved plan applies.
    drop(lock);
    let out = account.engine(&["apply", &plan, "--auto-approve"]);
    assert_code(&out, 0);
    assert_eq!(account.alice_keys(), 0);
    assert_eq!(
        account.runs().last(),
        Some(&("apply".to_string(), "ok".to_string()))
    );
}

#[test]
fn apply_waits_for_the_lock_with_lock_timeout() {
    let account = Account::new("timeout");
    let lock = StateLock::try_acquire(&account.state()).expect("the lock is free");

    // Held for longer than it waits: refused the same way, after waiting.
    let t0 = Instant::now();
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--auto-approve",
        "--lock-timeout",
        "500ms",
    ]);
    let waited = t0.elapsed();
    assert_refused_by(&out, &lock);
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(account.alice_keys(), 1);
    assert!(account.runs().is_empty(), "{:?}", account.runs());

    // Released after 1 s while it waits up to 3 s: it proceeds and applies.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(lock);
    });
    let t0 = Instant::now();
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--auto-approve",
        "--lock-timeout",
        "3s",
    ]);
    let waited = t0.elapsed();
    release.join().expect("release");
    assert_code(&out, 0);
    assert!(
        !text(&out.stderr).contains("state is locked"),
        "{}",
        text(&out.stderr)
    );
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert_eq!(account.alice_keys(), 0);
    assert_eq!(account.runs(), [("apply".to_string(), "ok".to_string())]);

    // Its lock is released when it exits: the next apply takes it at once.
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 0);
}

/// A crash mid-apply, in this account's journal. Returns the run's id.
fn crashed_run(account: &Account) -> i64 {
    engine_testkit::crashed_run(&account.state(), "alice", "AKIACRASHED")
}

#[test]
fn a_live_check_takes_over_unfinished_intents_only_with_the_lock() {
    let account = Account::new("check");
    let crashed = crashed_run(&account);
    let journal = || Journal::open(&account.state()).expect("journal");
    let status_of = |run: i64| {
        journal()
            .recent_runs(1000)
            .expect("runs")
            .into_iter()
            .find(|r| r.id == run)
            .map(|r| r.status)
            .expect("the crashed run")
    };

    // Another process holds the lock: the intent may be its own, in flight.
    let lock = StateLock::try_acquire(&account.state()).expect("the lock is free");
    let out = account
        .command(&["check", &account.policies()])
        .env("RUST_LOG", "info")
        .output()
        .expect("run engine");
    assert_code(&out, 2);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("recorded no result"), "{stderr}");
    assert!(
        stderr.contains("not taking over unfinished actions")
            && stderr.contains(&locked_by(&lock)["error: ".len()..]),
        "{stderr}"
    );
    let open = journal().unfinished().expect("unfinished");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key_id.as_deref(), Some("AKIACRASHED"));
    assert_eq!(status_of(crashed), "running");
    // The check itself is journaled all the same.
    assert_eq!(
        account.runs().last(),
        Some(&("check".to_string(), "ok".to_string()))
    );
    drop(lock);

    // The lock is free: the check takes the intent over, once.
    let out = account.engine(&["check", &account.policies()]);
    assert_code(&out, 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("AKIACRASHED") && stderr.contains("recorded no result"),
        "{stderr}"
    );
    assert!(journal().unfinished().expect("unfinished").is_empty());
    assert_eq!(status_of(crashed), "interrupted");
    let actions = journal().actions_of(crashed).expect("actions");
    assert_eq!(actions[0].outcome.as_deref(), Some("unknown"));
    assert_eq!(
        account.runs().last(),
        Some(&("check".to_string(), "ok".to_string()))
    );
    // Its lock was only held while taking over: free again.
    drop(StateLock::try_acquire(&account.state()).expect("released by check"));
}
