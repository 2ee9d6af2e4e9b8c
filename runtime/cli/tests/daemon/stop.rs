//! Stopping mid-apply: SIGTERM lets the write in flight finish and skips
//! the rest, within `--shutdown-timeout`; past it the daemon exits 1; after
//! kill -9 a restart reports the cut-off write once and finishes the job
//! without writing any key twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engine_testkit::Faults;

use super::{
    Account, Daemon, STOPPING, WAIT, journaled, poll_until, rotate_policy, runs_total,
    user_with_key,
};

const STALE: [&str; 4] = ["stale-1", "stale-2", "stale-3", "stale-4"];

fn stale_account(name: &str, users: &[&str]) -> Account {
    let account = Account::new(name, users.iter().map(|u| user_with_key(u, 200)).collect());
    account.write_policy("rotate.toml", &rotate_policy(90, Some("*/2 * * * * *")));
    account
}

/// Slow every `DeleteAccessKey` answer by `latency` (moto deletes first).
fn slow_deletes(account: &Account, latency: Duration) {
    account.moto.faults_with_latency(
        &Faults {
            actions: Some(vec!["DeleteAccessKey".into()]),
            ..Faults::default()
        },
        latency,
    );
}

/// Wait until moto has received a `DeleteAccessKey`; returns its key id.
#[track_caller]
fn wait_first_delete(daemon: &mut Daemon, account: &Account) -> String {
    daemon.wait_for("a DeleteAccessKey sent", || {
        account
            .moto
            .requests()
            .into_iter()
            .find(|r| r.action == "DeleteAccessKey")
            .and_then(|r| r.key_id)
    })
}

#[test]
fn sigterm_mid_apply_finishes_the_write_in_flight_and_skips_the_rest() {
    let account = stale_account("sigterm", &STALE);
    slow_deletes(&account, Duration::from_secs(3));
    let mut daemon = account.daemon(&["--concurrency", "1", "--shutdown-timeout", "30s"]);
    wait_first_delete(&mut daemon, &account);

    let t0 = Instant::now();
    daemon.signal("TERM");
    // While the write in flight finishes, the status says so.
    let stopping = poll_until(Duration::from_millis(2500), || {
        let s = daemon.status();
        (s["state"] == "stopping").then_some(s)
    })
    .unwrap_or_else(|| panic!("no state \"stopping\":\n{}", daemon.log()));
    assert!(!stopping["current_run"].is_null(), "{stopping:#}");
    let code = daemon
        .wait_exit(Duration::from_secs(35))
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", daemon.log()))
        .code();
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(30), "took {took:?}");

    let runs = account.scheduled_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    let actions = run["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), STALE.len(), "{run:#}");
    // Every intent has a result.
    assert!(actions.iter().all(|a| a["outcome"].is_string()), "{run:#}");
    let done: Vec<&str> = actions
        .iter()
        .filter(|a| a["outcome"] == "done" || a["outcome"] == "done-on-retry")
        .filter_map(|a| a["key_id"].as_str())
        .collect();
    let skipped: Vec<_> = actions
        .iter()
        .filter(|a| a["outcome"] == "skipped")
        .collect();
    assert!(!done.is_empty(), "the write in flight finished: {run:#}");
    assert!(!skipped.is_empty(), "the rest were not started: {run:#}");
    assert_eq!(done.len() + skipped.len(), STALE.len(), "{run:#}");
    assert!(skipped.iter().all(|a| a["detail"] == STOPPING), "{run:#}");
    // moto's writes are the journal's done actions, no more.
    let writes = account.deletes_per_key();
    let mut written: Vec<&str> = writes.keys().map(String::as_str).collect();
    let mut done_sorted = done.clone();
    written.sort();
    done_sorted.sort();
    assert_eq!(written, done_sorted, "{writes:?} vs {run:#}");
    assert!(writes.values().all(|n| *n == 1), "{writes:?}");
    for user in STALE {
        let key = account.key(user, 0);
        assert_eq!(
            account.has_key(user, &key),
            !done.contains(&key.as_str()),
            "{user}"
        );
    }
    println!(
        "sigterm: exit after {took:?}, {} done, {} skipped, run status {}",
        done.len(),
        skipped.len(),
        run["status"]
    );
}

#[test]
fn past_the_shutdown_timeout_the_daemon_exits_1() {
    let account = stale_account("timeout", &STALE[..2]);
    slow_deletes(&account, Duration::from_secs(8));
    let mut daemon = account.daemon(&["--concurrency", "1", "--shutdown-timeout", "1s"]);
    wait_first_delete(&mut daemon, &account);

    let t0 = Instant::now();
    let code = daemon.terminate(Duration::from_secs(20));
    let took = t0.elapsed();
    assert_eq!(code, Some(1), "{}", daemon.log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM with --shutdown-timeout 1s"
    );
}

#[test]
fn after_kill_9_mid_apply_a_restart_reports_the_cut_off_write_once_and_finishes() {
    let users = &STALE[..3];
    let account = stale_account("kill9", users);
    slow_deletes(&account, Duration::from_secs(4));
    let mut daemon = account.daemon(&["--concurrency", "1"]);
    let cut = wait_first_delete(&mut daemon, &account);
    let cut_user = users
        .iter()
        .find(|u| account.key(u, 0) == cut)
        .copied()
        .expect("a stale user's key");
    // moto has deleted it; the daemon is still waiting for the answer.
    daemon.wait_for("moto to delete the first key", || {
        (!account.has_key(cut_user, &cut)).then_some(())
    });
    daemon.kill9();
    let runs = account.scheduled_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "running", "{:#}", runs[0]);
    let cut_action = runs[0]["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["key_id"] == cut.as_str()).cloned())
        .unwrap_or_else(|| panic!("the intent is journaled: {:#}", runs[0]));
    assert!(cut_action["outcome"].is_null(), "{cut_action}");

    // Restart on the same state, at full speed.
    account.moto.faults(&Faults::default());
    let mut daemon = account.daemon(&["--concurrency", "1"]);
    let warning = daemon.wait_line("about the write without a result", |l| {
        l.contains("recorded no result")
    });
    assert!(warning.contains(&cut), "{warning}");
    assert!(
        warning.contains("WARN") || warning.to_lowercase().contains("warn"),
        "a warning: {warning}"
    );
    daemon.wait_status("two runs after the restart", |s| {
        runs_total(s) >= 2 && s["runs"]["failed"] == 0
    });
    for user in users {
        assert!(!account.has_key(user, &account.key(user, 0)), "{user}");
    }
    // Reported once.
    let reported = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("recorded no result"))
        .count();
    assert_eq!(reported, 1, "{}", daemon.log());
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());

    // No key was written twice.
    let writes = account.deletes_per_key();
    let expected: BTreeMap<String, usize> = users.iter().map(|u| (account.key(u, 0), 1)).collect();
    assert_eq!(writes, expected);

    // The journal: the cut-off run interrupted, its intent unknown; the rest done.
    let runs = account.scheduled_runs();
    assert_eq!(runs[0]["status"], "interrupted", "{:#}", runs[0]);
    let cut_row = journaled(&runs[0])
        .into_iter()
        .find(|r| r.1 == cut)
        .expect("the cut-off action");
    assert_eq!(cut_row.3, "unknown", "{:#}", runs[0]);
    let done: Vec<String> = runs
        .iter()
        .flat_map(journaled)
        .filter(|r| r.3 == "done")
        .map(|r| r.1)
        .collect();
    assert_eq!(done.len(), users.len() - 1, "{runs:#?}");
    assert!(!done.contains(&cut), "{runs:#?}");
}
