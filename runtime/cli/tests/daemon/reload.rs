//! Reloads: a broken configuration, by edit or SIGHUP, leaves the old one
//! running and says so; a fixed one takes over and the next run uses it.

use std::time::Duration;

use engine_testkit::Faults;
use serde_json::Value;

use super::{
    Account, Daemon, Metrics, WAIT, journaled, policy_status, rotate_policy, runs_total,
    user_with_key,
};

const SCHEDULE: &str = "*/2 * * * * *";

/// A schedule that does not fire during a test (once a year).
const YEARLY: &str = "0 0 0 1 1 *";

fn reloads(m: &Metrics, result: &str) -> f64 {
    m.get("engine_reloads_total", &[("result", result)])
        .unwrap_or(-1.0)
}

/// Wait for a reload after `after` (a `last_reload.at`) with `trigger`.
#[track_caller]
fn wait_reload(daemon: &mut Daemon, after: &Value, trigger: &str, result: &str) -> Value {
    daemon.wait_status(&format!("a {result} reload by {trigger}"), |s| {
        s["last_reload"]["at"] != *after
            && s["last_reload"]["trigger"] == trigger
            && s["last_reload"]["result"] == result
    })
}

#[test]
fn a_broken_reload_keeps_the_old_config_and_a_fixed_one_takes_over() {
    let account = Account::new(
        "reload",
        vec![user_with_key("old", 200), user_with_key("aging", 50)],
    );
    account.write_policy("rotate.toml", &rotate_policy(90, Some(SCHEDULE)));
    let old = account.key("old", 0);
    let aging = account.key("aging", 0);
    let mut daemon = account.daemon(&[]);

    let first = daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    assert!(!account.has_key("old", &old));
    assert!(account.has_key("aging", &aging));
    let digest = first["config"]["digest"].clone();
    let at = first["last_reload"]["at"].clone();

    // An edit that breaks the file: reloaded on the change, refused.
    account.write_policy("rotate.toml", "[policy.rotate\nrule = \"cis-1.4\"\n");
    let broken = wait_reload(&mut daemon, &at, "file-change", "failure");
    let diagnostics = broken["last_reload"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !diagnostics.is_empty()
            && diagnostics
                .iter()
                .all(|d| d.as_str().is_some_and(|d| !d.is_empty())),
        "{broken:#}"
    );
    assert!(
        diagnostics
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains("rotate.toml"))),
        "the diagnostics name the file: {broken:#}"
    );
    assert_eq!(broken["config"]["digest"], digest, "{broken:#}");
    assert_eq!(broken["config"]["policies"], 1, "{broken:#}");
    assert_eq!(
        policy_status(&broken, "rotate")["schedule"],
        SCHEDULE,
        "{broken:#}"
    );
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_config_last_reload_successful", &[]),
        Some(0.0),
        "{}",
        m.text
    );
    assert_eq!(reloads(&m, "failure"), 1.0, "{}", m.text);
    assert_eq!(reloads(&m, "success"), 1.0, "{}", m.text);
    let log = daemon.log();
    assert!(log.contains("rotate.toml"), "the error is logged:\n{log}");

    // The old configuration keeps running.
    let total = runs_total(&broken);
    daemon.wait_status("a run under the old configuration", |s| {
        runs_total(s) > total && s["runs"]["failed"] == 0
    });
    assert!(account.has_key("aging", &aging), "still 90 days");

    // SIGHUP with the file still broken: refused again.
    let at = daemon.status()["last_reload"]["at"].clone();
    daemon.signal("HUP");
    let refused = wait_reload(&mut daemon, &at, "signal", "failure");
    assert_eq!(refused["config"]["digest"], digest, "{refused:#}");
    let m = daemon.metrics();
    assert_eq!(reloads(&m, "failure"), 2.0, "{}", m.text);
    assert_eq!(
        m.get("engine_config_last_reload_successful", &[]),
        Some(0.0)
    );

    // Fixed, with a new threshold: the edit is picked up.
    let runs_before = policy_status(&refused, "rotate")["runs"].clone();
    let at = refused["last_reload"]["at"].clone();
    account.write_policy("rotate.toml", &rotate_policy(30, Some(SCHEDULE)));
    let fixed = wait_reload(&mut daemon, &at, "file-change", "success");
    assert_ne!(fixed["config"]["digest"], digest, "{fixed:#}");
    assert_eq!(
        fixed["last_reload"]["diagnostics"].as_array().map(Vec::len),
        Some(0),
        "{fixed:#}"
    );
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(reloads(&m, "success"), 2.0, "{}", m.text);

    // SIGHUP on a good configuration: a successful reload by signal.
    let at = fixed["last_reload"]["at"].clone();
    daemon.signal("HUP");
    let hup = wait_reload(&mut daemon, &at, "signal", "success");
    assert_eq!(hup["config"]["digest"], fixed["config"]["digest"]);
    let m = daemon.wait_metrics("3 successful reloads", |m| reloads(m, "success") == 3.0);
    assert_eq!(reloads(&m, "failure"), 2.0, "{}", m.text);

    // The next run acts with the new threshold: the 50-day key is stale now.
    daemon.wait_for("the 50-day key deleted under max_key_age_days = 30", || {
        (!account.has_key("aging", &aging)).then_some(())
    });
    let runs = account.scheduled_runs();
    let deleted: Vec<_> = runs
        .iter()
        .flat_map(|r| r["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["key_id"] == aging.as_str())
        .collect();
    assert_eq!(deleted.len(), 1, "{runs:#?}");
    assert_eq!(deleted[0]["outcome"], "done");
    assert_eq!(account.deletes_per_key().get(&aging), Some(&1));

    // The policy's counters are since the daemon started, not since the
    // last reload.
    let end = daemon.status();
    let runs_after = policy_status(&end, "rotate")["runs"].clone();
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
    assert!(
        runs_after.as_u64() >= runs_before.as_u64(),
        "policies[rotate].runs went from {runs_before} to {runs_after} over reloads \
         (runs.total {} -> {}):\n{end:#}",
        runs_total(&refused),
        runs_total(&end)
    );
}

/// A plugin file a policy names, outside the policy directory: changing it
/// reloads too, and a file that no longer matches its sha256 is refused
/// while the old configuration (and its compiled plugin) keeps running.
#[test]
fn a_changed_plugin_file_reloads_and_a_wrong_sha256_is_refused() {
    use sha2::{Digest, Sha256};

    let account = Account::new("plugin-file", vec![]);
    let plugins = account.policies().with_file_name("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir plugins");
    let wasm =
        std::path::Path::new(engine_wasm::BUILT_PLUGIN_DIR).join("deactivate_then_delete.wasm");
    let bytes = std::fs::read(&wasm).expect("the example plugin is built by engine-wasm");
    let plugin = plugins.join("custom.wasm");
    std::fs::write(&plugin, &bytes).expect("copy the plugin");
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    account.write_policy(
        "rotate.toml",
        &format!(
            "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"custom\"\nschedule = \"0 0 0 1 1 *\"\n\n\
             [plugin.custom]\nsource = \"../plugins/custom.wasm\"\nsha256 = \"{sha}\"\n\
             allow = [\"deactivate-access-key\", \"delete-access-key\"]\n"
        ),
    );
    let mut daemon = account.daemon(&[]);
    let start = daemon.wait_status("a status document", |s| s["config"].is_object());
    let digest = start["config"]["digest"].clone();

    // Other bytes under the same name: the policies did not change, the
    // plugin did, and its sha256 no longer matches.
    let mut tampered = bytes.clone();
    tampered.extend_from_slice(b"\0tampered");
    std::fs::write(&plugin, &tampered).expect("tamper");
    let refused = wait_reload(
        &mut daemon,
        &start["last_reload"]["at"],
        "file-change",
        "failure",
    );
    let diagnostics = refused["last_reload"]["diagnostics"].to_string();
    assert!(diagnostics.contains("sha256"), "{refused:#}");
    assert_eq!(
        refused["config"]["digest"], digest,
        "still the old configuration"
    );
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_config_last_reload_successful", &[]),
        Some(0.0),
        "{}",
        m.text
    );

    // The right bytes again: reloaded, accepted.
    std::fs::write(&plugin, &bytes).expect("restore");
    let back = wait_reload(
        &mut daemon,
        &refused["last_reload"]["at"],
        "file-change",
        "success",
    );
    assert_eq!(back["config"]["policies"], 1, "{back:#}");
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// A reload while a run waits for AWS: the run goes on with the
/// configuration it started with, and the next run uses the new one.
#[test]
fn a_run_in_progress_finishes_with_the_configuration_it_started_with() {
    let account = Account::new(
        "reload-mid-run",
        vec![user_with_key("old", 200), user_with_key("aging", 50)],
    );
    let (old, aging) = (account.key("old", 0), account.key("aging", 0));
    account.write_policy("rotate.toml", &rotate_policy(90, Some(SCHEDULE)));
    // The run's first call (who am I) takes 4 s: it is still making its
    // snapshot when the configuration changes.
    account.moto.faults_with_latency(
        &Faults {
            actions: Some(vec!["GetCallerIdentity".into()]),
            ..Faults::default()
        },
        Duration::from_secs(4),
    );
    let mut daemon = account.daemon(&[]);
    let running = daemon.wait_status("the first run in progress", |s| !s["current_run"].is_null());
    let started = running["current_run"]["started_at"].clone();
    let digest = running["config"]["digest"].clone();
    assert_eq!(runs_total(&running), 0, "{running:#}");

    // 30 days now: `aging` is stale under the new configuration.
    account.write_policy("rotate.toml", &rotate_policy(30, Some(SCHEDULE)));
    daemon.signal("HUP");
    let reloaded = daemon.wait_status("the new configuration", |s| {
        s["last_reload"]["result"] == "success" && s["config"]["digest"] != digest
    });
    // Reloaded while the first run was still in progress.
    assert_eq!(
        reloaded["current_run"]["started_at"], started,
        "the run must still be in progress when the reload is done: {reloaded:#}"
    );
    assert_eq!(runs_total(&reloaded), 0, "{reloaded:#}");
    account.moto.faults(&Faults::default());

    let after = daemon.wait_status("the next run", |s| runs_total(s) >= 2);
    assert_eq!(after["runs"]["failed"], 0, "{after:#}");
    daemon.wait_for("the 50-day key deleted", || {
        (!account.has_key("aging", &aging)).then_some(())
    });
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());

    let runs = account.scheduled_runs();
    assert!(runs.len() >= 2, "{runs:#?}");
    let row = |user: &str, key: &str| {
        vec![(
            user.to_string(),
            key.to_string(),
            "delete-access-key".to_string(),
            "done".to_string(),
        )]
    };
    // The run in progress: 90 days, as when it started (only `old`).
    assert_eq!(journaled(&runs[0]), row("old", &old), "{runs:#?}");
    // The next run: 30 days (`aging` too).
    assert_eq!(journaled(&runs[1]), row("aging", &aging), "{runs:#?}");
    assert!(
        runs[2..].iter().all(|r| journaled(r).is_empty()),
        "{runs:#?}"
    );
    let deletes = account.deletes_per_key();
    assert_eq!(
        deletes,
        [(old, 1), (aging, 1)].into_iter().collect(),
        "{deletes:?}"
    );
}

/// Several quick edits (an editor saving, a `git pull`) make one reload,
/// of the last version.
#[test]
fn a_burst_of_edits_makes_one_reload() {
    let account = Account::new("reload-burst", vec![]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(YEARLY)));
    let mut daemon = account.daemon(&[]);
    let start = daemon.wait_status("a status document", |s| s["config"].is_object());
    let at = start["last_reload"]["at"].clone();
    assert_eq!(reloads(&daemon.metrics(), "success"), 1.0);

    // Five versions, 100 ms apart (the debounce is 0.5 s).
    for n in 1..=5 {
        account.write_policy(
            "rotate.toml",
            &rotate_policy(90, Some(YEARLY)).replace("[policy.rotate]", &format!("[policy.v{n}]")),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reloaded = wait_reload(&mut daemon, &at, "file-change", "success");
    let names: Vec<&str> = reloaded["policies"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["v5"], "the last version: {reloaded:#}");
    // Well past the debounce: still that one reload.
    std::thread::sleep(Duration::from_millis(1500));
    let m = daemon.metrics();
    assert_eq!(reloads(&m, "success"), 2.0, "{}", m.text);
    assert_eq!(reloads(&m, "failure"), 0.0, "{}", m.text);
    let later = daemon.status();
    assert_eq!(
        later["last_reload"]["at"], reloaded["last_reload"]["at"],
        "{later:#}"
    );
    let lines = daemon
        .lines()
        .iter()
        .filter(|l| l.contains("policy files changed: reloading"))
        .count();
    assert_eq!(lines, 1, "{}", daemon.log());
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}
