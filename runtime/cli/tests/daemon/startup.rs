//! Starting: invalid policies exit 78 naming every error, unscheduled
//! policies are said to be, the state lock refuses a second engine, and the
//! HTTP listener is loopback-only unless a token guards `/v1/*`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::{
    Account, WAIT, listening_addr, policy_status, rotate_policy, strip_ansi, text, user_with_key,
};

/// A schedule that does not fire during a test (once a year).
const YEARLY: &str = "0 0 0 1 1 *";

#[test]
fn invalid_policies_exit_78_with_every_diagnostic() {
    let account = Account::new("invalid", vec![]);
    account.write_policy("a-bad-rule.toml", "[policy.a]\nrule = \"cis-9.9\"\n");
    account.write_policy("b-bad-toml.toml", "[policy.b\nrule = \"cis-1.4\"\n");
    account.write_policy(
        "c-bad-schedule.toml",
        "[policy.c]\nrule = \"cis-1.4\"\nschedule = \"every day at noon\"\n",
    );
    account.write_policy("d-good.toml", &rotate_policy(90, Some(YEARLY)));
    let mut daemon = account.spawn_daemon(&[]);
    let status = daemon
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running:\n{}", daemon.log()));
    let log = daemon.log();
    assert_eq!(status.code(), Some(78), "{log}");
    for file in ["a-bad-rule.toml", "b-bad-toml.toml", "c-bad-schedule.toml"] {
        assert!(log.contains(file), "{file} not mentioned:\n{log}");
    }
    assert!(
        !daemon.lines().iter().any(|l| listening_addr(l).is_some()),
        "it listened:\n{log}"
    );
    if account.state_dir().join(engine_journal::FILE).exists() {
        assert!(account.history().is_empty(), "nothing runs");
    }
}

#[test]
fn policies_without_a_schedule_are_listed_as_not_scheduled() {
    let account = Account::new("unscheduled", vec![]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));
    account.write_policy(
        "manual.toml",
        "[policy.manual]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n",
    );
    let mut daemon = account.daemon(&[]);
    let line = daemon.wait_line("saying `manual` is not scheduled", |l| {
        l.contains("not scheduled") && l.contains("manual")
    });
    assert!(!line.contains("rotate"), "{line}");
    assert!(
        !daemon
            .lines()
            .iter()
            .any(|l| l.contains("not scheduled") && l.contains("rotate")),
        "{}",
        daemon.log()
    );

    // Listening means serving the status: not an empty document.
    let status = daemon.status();
    assert_eq!(
        status["config"]["policies"], 2,
        "/v1/status right after `listening`: {status:#}"
    );
    let manual = policy_status(&status, "manual");
    assert!(manual["schedule"].is_null(), "{status:#}");
    assert!(manual["next_run"].is_null(), "{status:#}");
    assert!(manual["last_run"].is_null(), "{status:#}");
    assert_eq!(manual["rule"], "cis-1.3");
    let rotate = policy_status(&status, "rotate");
    assert_eq!(rotate["schedule"], YEARLY);
    assert!(rotate["next_run"].is_string(), "{status:#}");
    assert!(status["current_run"].is_null(), "{status:#}");
    assert_eq!(status["state"], "idle", "{status:#}");

    let m = daemon.metrics();
    assert!(
        m.get(
            "engine_policy_next_run_timestamp_seconds",
            &[("policy", "rotate")]
        )
        .is_some(),
        "{}",
        m.text
    );
    assert!(
        m.get(
            "engine_policy_next_run_timestamp_seconds",
            &[("policy", "manual")]
        )
        .is_none(),
        "{}",
        m.text
    );
    // No run yet: no plan.
    assert_eq!(daemon.get("/v1/plan").status, 404);
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn a_second_engine_on_the_same_state_is_refused_by_the_lock() {
    let account = Account::new("lock", vec![user_with_key("stale", 200)]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));
    let first = account.daemon(&[]);
    let locked = format!("state is locked by pid {} on ", first.pid());

    // A second daemon.
    let mut second = account.spawn_daemon(&[]);
    let status = second
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("a second daemon runs:\n{}", second.log()));
    let log = second.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&locked) && log.contains(" since "),
        "expected {locked:?} in:\n{log}"
    );
    assert!(
        !second.lines().iter().any(|l| listening_addr(l).is_some()),
        "{log}"
    );

    // Another state, the same address: refused, exit 1.
    let addr = first.addr.expect("listening").to_string();
    let other = account.dir.join("other-state").display().to_string();
    let mut taken = account.spawn_daemon(&["--state", &other, "--listen", &addr]);
    let status = taken
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("a second daemon on {addr}:\n{}", taken.log()));
    assert_eq!(status.code(), Some(1), "{}", taken.log());

    // A one-shot apply.
    let policies = account.policies().display().to_string();
    let state = account.state_dir().display().to_string();
    let out = account.engine(&["apply", &policies, "--state", &state, "--auto-approve"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&locked),
        "expected {locked:?} in:\n{stderr}"
    );
    assert!(account.has_key("stale", &account.key("stale", 0)));
    assert!(!account.moto.calls().contains_key("DeleteAccessKey"));
}

#[test]
fn beyond_loopback_the_status_needs_the_token() {
    let account = Account::new("token", vec![]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));

    // Without a token: refused, nothing listens.
    let mut open = account.spawn_daemon(&["--listen", "0.0.0.0:0"]);
    let status = open
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("listens on 0.0.0.0 without a token:\n{}", open.log()));
    assert_eq!(status.code(), Some(1), "{}", open.log());
    assert!(
        !open.lines().iter().any(|l| listening_addr(l).is_some()),
        "{}",
        open.log()
    );
    assert!(
        open.log().to_lowercase().contains("token"),
        "says why: {}",
        open.log()
    );

    // A token file others may read: refused.
    let token = "s3cr3t-daemon-token";
    let file = account.dir.join("token");
    std::fs::write(&file, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file_arg = file.display().to_string();
    let mut loose = account.spawn_daemon(&["--listen", "0.0.0.0:0", "--token-file", &file_arg]);
    let status = loose
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("accepted a 0644 token file:\n{}", loose.log()));
    assert_eq!(status.code(), Some(1), "{}", loose.log());
    assert!(
        !loose.lines().iter().any(|l| listening_addr(l).is_some()),
        "{}",
        loose.log()
    );

    // With a 0600 token file.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut daemon = account.daemon(&["--listen", "0.0.0.0:0", "--token-file", &file_arg]);
    let addr = daemon.addr.expect("listening");
    assert!(addr.ip().is_unspecified(), "{addr}");
    for path in ["/v1/status", "/v1/plan"] {
        let none = daemon.get_with(path, None);
        assert_eq!(none.status, 401, "{path}: {none:?}");
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{none:?}"
        );
        let wrong = daemon.get_with(path, Some("Bearer not-the-token"));
        assert_eq!(wrong.status, 401, "{path}: {wrong:?}");
        assert!(!none.body.contains(token) && !wrong.body.contains(token));
    }
    let authorized = format!("Bearer {token}");
    let status = daemon.get_with("/v1/status", Some(&authorized));
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.json()["pid"], daemon.pid());
    assert_eq!(
        daemon.get_with("/v1/plan", Some(&authorized)).status,
        404,
        "no run yet"
    );
    let health = daemon.get_with("/healthz", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let metrics = daemon.get_with("/metrics", None);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.body.contains("engine_build_info"), "{metrics:?}");
    assert!(
        daemon
            .lines()
            .iter()
            .all(|l| !strip_ansi(l).contains(token)),
        "the token is logged:\n{}",
        daemon.log()
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_sighup_while_starting_does_not_kill_it() {
    let account = Account::new("early-hup", vec![]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));
    // `systemctl reload` right after `start`: the signal arrives while the
    // policies load, before the daemon is listening.
    let mut daemon = account.spawn_daemon(&[]);
    // Its first line comes once it handles signals, before the policies
    // load (under systemd, Type=notify makes `reload` wait for READY=1).
    daemon.wait_line("the first log line", |l| {
        l.contains("loading the configuration")
    });
    daemon.signal("HUP");
    daemon.wait_listening();
    let status = daemon.wait_status("a status document", |s| s["config"].is_object());
    assert_eq!(status["config"]["policies"], 1, "{status:#}");
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// `--lock-timeout`: a daemon waits for another engine's lock on the state
/// directory, and starts once it is released; without it (or when the wait
/// runs out) it is refused with the lock message, having done nothing.
#[test]
fn with_lock_timeout_a_daemon_waits_for_the_lock_and_starts_once_it_is_released() {
    let account = Account::new("lock-timeout", vec![user_with_key("stale", 200)]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));
    let mut holder = account.daemon(&[]);
    let locked = format!("state is locked by pid {} on ", holder.pid());

    // Without --lock-timeout: refused at once.
    let t0 = Instant::now();
    let mut refused = account.spawn_daemon(&[]);
    let status = refused
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("a second daemon runs:\n{}", refused.log()));
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    assert!(refused.log().contains(&locked), "{}", refused.log());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A wait shorter than the hold: refused the same way, after waiting.
    let t0 = Instant::now();
    let mut short = account.spawn_daemon(&["--lock-timeout", "700ms"]);
    let status = short
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running:\n{}", short.log()));
    let waited = t0.elapsed();
    assert_eq!(status.code(), Some(1), "{}", short.log());
    assert!(short.log().contains(&locked), "{}", short.log());
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(
        !short.lines().iter().any(|l| listening_addr(l).is_some()),
        "{}",
        short.log()
    );

    // SIGTERM while it waits: it stops at once (not when the wait ends),
    // having started nothing.
    let mut stopped = account.spawn_daemon(&["--lock-timeout", "30s"]);
    let waiting_line = stopped.wait_line("saying it waits for the lock", |l| {
        l.contains(&locked) && l.contains("waiting up to 30s")
    });
    assert!(waiting_line.contains("INFO"), "{waiting_line}");
    assert!(stopped.exit_status().is_none(), "{}", stopped.log());
    let t0 = Instant::now();
    assert_eq!(stopped.terminate(WAIT), Some(0), "{}", stopped.log());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stopped {:?} after SIGTERM while waiting for the lock:\n{}",
        t0.elapsed(),
        stopped.log()
    );
    assert!(
        stopped
            .log()
            .contains("stopped while waiting for the state lock"),
        "{}",
        stopped.log()
    );
    assert!(
        !stopped.lines().iter().any(|l| listening_addr(l).is_some()),
        "{}",
        stopped.log()
    );

    // A long enough wait: it waits while the lock is held...
    let mut waiting = account.spawn_daemon(&["--lock-timeout", "30s"]);
    waiting.wait_line("saying it waits for the lock", |l| {
        l.contains(&locked) && l.contains("waiting up to 30s")
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        waiting.exit_status().is_none(),
        "it gave up while waiting:\n{}",
        waiting.log()
    );
    assert!(
        !waiting.lines().iter().any(|l| listening_addr(l).is_some()),
        "it started while the lock was held:\n{}",
        waiting.log()
    );
    // ...and starts once it is released.
    assert_eq!(holder.terminate(WAIT), Some(0), "{}", holder.log());
    let released = Instant::now();
    waiting.wait_listening();
    assert!(released.elapsed() < Duration::from_secs(10));
    let status = waiting.status();
    assert_eq!(status["pid"], waiting.pid(), "{status:#}");
    assert_eq!(status["config"]["policies"], 1, "{status:#}");
    assert!(
        !waiting.log().contains("nothing was started"),
        "{}",
        waiting.log()
    );
    // It holds the lock now: an apply is refused by it.
    let policies = account.policies().display().to_string();
    let state = account.state_dir().display().to_string();
    let out = account.engine(&["apply", &policies, "--state", &state, "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let now_locked = format!("state is locked by pid {} on ", waiting.pid());
    assert!(
        text(&out.stderr).contains(&now_locked),
        "{}",
        text(&out.stderr)
    );
    assert!(account.has_key("stale", &account.key("stale", 0)));
    assert_eq!(waiting.terminate(WAIT), Some(0), "{}", waiting.log());
}
