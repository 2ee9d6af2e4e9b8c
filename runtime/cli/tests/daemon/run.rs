//! Scheduled runs: the account ends up exactly as the plan said, the metrics
//! count what moto saw, runs never overlap, and JSON logs name every action
//! but never the secret.

use std::collections::BTreeMap;
use std::time::Duration;

use engine_testkit::{Faults, SeedUser};
use serde_json::{Value, json};

use super::{
    Account, OWN_USER, SECRET, WAIT, applying, assert_status_shape, daily_at, days_ago, hourly_at,
    journaled, policy_status, poll_until, rotate_policy, runs_total, soon, stamp, user_with_key,
};

#[test]
fn the_first_scheduled_run_does_exactly_its_plan_and_the_metrics_count_it() {
    let account = Account::new(
        "first",
        vec![
            user_with_key("stale-a", 200),
            // Slot 1 old, slot 2 fresh: only slot 1 goes.
            SeedUser::new("stale-b", days_ago(900))
                .key(days_ago(300), None, true)
                .key(days_ago(10), Some(days_ago(1)), true),
            SeedUser::new("stale-c", days_ago(900)).key(days_ago(120), Some(days_ago(100)), true),
            user_with_key("fresh", 10),
            SeedUser::new("break-glass-admin", days_ago(900)).key(days_ago(400), None, true),
            SeedUser::new("retired", days_ago(900)).key(days_ago(500), Some(days_ago(400)), false),
        ],
    );
    let before = account.state();
    account.moto.reset_calls();
    // Due once in the test's window (next: an hour later), so the run, its
    // plan and what the metrics count are those of the first run alone.
    let tick = soon(Duration::from_secs(4));
    let schedule = hourly_at(tick);
    account.write_policy("rotate.toml", &rotate_policy(90, Some(&schedule)));
    let mut daemon = account.daemon(&[]);

    let health = daemon.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    let first = daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    let plan = daemon.plan().expect("/v1/plan after the first run");
    assert_eq!(runs_total(&first), 1, "one run: {first:#}");
    let started = stamp(&policy_status(&first, "rotate")["last_run"]["started_at"]);
    assert!(
        started >= tick,
        "the run started at {started}, before its tick {tick}"
    );

    let expected: Vec<(String, String, String)> = ["stale-a", "stale-b", "stale-c"]
        .iter()
        .map(|u| {
            (
                u.to_string(),
                account.key(u, 0),
                "delete-access-key".to_string(),
            )
        })
        .collect();

    // The account: exactly those keys gone, nothing else changed (not the
    // exempt user's, not the inactive one, not the engine's own old key).
    let mut after = before.clone();
    for user in &mut after.users {
        user.keys
            .retain(|k| !expected.iter().any(|(_, key, _)| *key == k.id));
    }
    assert_eq!(account.state(), after, "the account after the first run");

    // The plan said so.
    assert_eq!(applying(&plan), expected, "{plan:#}");
    let last = &policy_status(&first, "rotate")["last_run"];
    assert_eq!(last["result"], "ok", "{first:#}");
    assert_eq!(last["actions"]["done"], 3, "{first:#}");
    assert_eq!(last["actions"]["failed"], 0, "{first:#}");
    let findings = plan["findings"].as_array().expect("findings").len();
    // 3 stale, the exempt one and the engine's own key.
    assert_eq!(findings, 5, "{plan:#}");
    assert_eq!(last["findings"], findings, "{first:#}");
    assert_eq!(plan["policies"][0]["name"], "rotate", "{plan:#}");

    // The journal: a `scheduled` run that did exactly that.
    let runs = account.scheduled_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run["status"], "ok", "{run:#}");
    assert_eq!(run["id"], last["run"], "{run:#}");
    let done: Vec<_> = expected
        .iter()
        .map(|(u, k, a)| (u.clone(), k.clone(), a.clone(), "done".to_string()))
        .collect();
    assert_eq!(journaled(run), done, "{run:#}");

    // Metrics: the action counters are what moto saw.
    let metrics = daemon.metrics();
    let calls = account.moto.calls();
    let deletes = calls.get("DeleteAccessKey").copied().unwrap_or(0);
    assert_eq!(deletes, 3, "{calls:?}");
    assert_eq!(
        metrics.sum("engine_actions_total", &[("outcome", "done")]),
        deletes as f64,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get(
            "engine_actions_total",
            &[
                ("account", "123456789012"),
                ("policy", "rotate"),
                ("kind", "delete-access-key"),
                ("outcome", "done")
            ]
        ),
        Some(3.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.sum(
            "engine_aws_requests_total",
            &[("operation", "DeleteAccessKey")]
        ),
        deletes as f64,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get("engine_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("engine_reloads_total", &[("result", "success")]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get("engine_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert_eq!(
        metrics.get("engine_runs_total", &[("result", "ok")]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get("engine_runs_total", &[("result", "failed")]),
        Some(0.0)
    );
    let next = metrics
        .get(
            "engine_policy_next_run_timestamp_seconds",
            &[("policy", "rotate")],
        )
        .unwrap_or_else(|| panic!("no next run for rotate:\n{}", metrics.text));
    // An hour after the tick it ran at.
    assert_eq!(
        next,
        (tick + chrono::TimeDelta::hours(1)).timestamp() as f64,
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .get(
                "engine_open_findings",
                &[
                    ("account", "123456789012"),
                    ("policy", "rotate"),
                    ("rule", "cis-1.4")
                ]
            )
            .is_some(),
        "{}",
        metrics.text
    );
    assert!(
        metrics.sum(
            "engine_plugin_call_duration_seconds_count",
            &[("plugin", "delete-expired-keys")]
        ) >= 1.0,
        "{}",
        metrics.text
    );
    // Every AWS request is counted, when no run is between two scrapes.
    let quiet = (0..20).find_map(|_| {
        let m1 = daemon.metrics();
        let total = account.moto.total_calls();
        let m2 = daemon.metrics();
        let counted = m1.sum("engine_aws_requests_total", &[]);
        (counted == m2.sum("engine_aws_requests_total", &[])).then_some((counted, total, m1))
    });
    let (counted, total, m) = quiet.expect("two scrapes without a run in between");
    assert_eq!(
        counted,
        total as f64,
        "engine_aws_requests_total vs moto's calls {:?}:\n{}",
        account.moto.calls(),
        m.text
    );
    // No label value names a user or a key.
    let mut secret_labels: Vec<String> = account.keys.keys().cloned().collect();
    secret_labels.extend(account.keys.values().flatten().cloned());
    metrics.assert_no_label_value_in(&secret_labels);

    // Ready: configuration loaded, AWS answered.
    let ready = daemon.get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));

    // The status document.
    let status = daemon.status();
    assert_status_shape(&status, daemon.pid(), &account.policies());
    assert_eq!(status["config"]["policies"], 1, "{status:#}");
    assert_eq!(status["last_reload"]["result"], "success", "{status:#}");
    assert_eq!(status["last_reload"]["trigger"], "start", "{status:#}");
    let rotate = policy_status(&status, "rotate");
    assert_eq!(rotate["rule"], "cis-1.4");
    assert_eq!(rotate["mode"], "enforce");
    assert_eq!(rotate["schedule"], schedule.as_str());
    assert_eq!(
        stamp(&rotate["next_run"]),
        tick + chrono::TimeDelta::hours(1),
        "{status:#}"
    );
    assert_eq!(rotate["runs"], 1, "{status:#}");
    assert_eq!(status["runs"]["failed"], 0, "{status:#}");
    assert!(
        !status.to_string().contains(SECRET),
        "the secret in the status"
    );

    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
    assert!(
        account.has_key(OWN_USER, &account.own_key),
        "the engine's own key"
    );

    // /v1/plan is the document of `engine check --format json`.
    let policies = account.policies().display().to_string();
    let state = account.state_dir().display().to_string();
    let out = account.engine(&["check", &policies, "--state", &state, "--format", "json"]);
    let check: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --format json ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let keys = |v: &Value| {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    for part in ["", "source", "summary"] {
        let (a, b) = if part.is_empty() {
            (&plan, &check)
        } else {
            (&plan[part], &check[part])
        };
        assert_eq!(
            keys(a),
            keys(b),
            "fields of {part:?}: {plan:#} vs {check:#}"
        );
    }
    for list in ["findings", "actions", "policies"] {
        assert_eq!(
            keys(&plan[list][0]),
            keys(&check[list][0]),
            "fields of {list}[]"
        );
    }
    assert_eq!(plan["format_version"], check["format_version"]);
    assert_eq!(
        plan["source"]["policy_digest"], status["config"]["digest"],
        "{plan:#}"
    );
    assert_eq!(
        plan["source"]["policy_digest"], check["source"]["policy_digest"],
        "{check:#}"
    );
}

#[test]
fn a_run_longer_than_its_period_skips_ticks_and_never_overlaps() {
    let account = Account::new("overlap", vec![user_with_key("stale", 200)]);
    // Every second, while every run takes more than 1.5 s.
    account.write_policy("rotate.toml", &rotate_policy(90, Some("* * * * * *")));
    account.moto.faults_with_latency(
        &Faults {
            actions: Some(vec!["GetCredentialReport".into()]),
            ..Faults::default()
        },
        Duration::from_millis(1500),
    );
    let mut daemon = account.daemon(&["--shutdown-timeout", "30s"]);

    let running = daemon.wait_status("a run in progress", |s| {
        s["state"] == "running" && !s["current_run"].is_null()
    });
    assert_eq!(
        running["current_run"]["policies"],
        json!(["rotate"]),
        "{running:#}"
    );

    let status = daemon.wait_status("two runs and a skipped tick", |s| {
        runs_total(s) >= 2 && s["runs"]["skipped_ticks"].as_u64() > Some(0)
    });
    let rotate = policy_status(&status, "rotate");
    assert!(rotate["skipped_ticks"].as_u64() > Some(0), "{status:#}");
    let metrics = daemon.metrics();
    assert!(
        metrics.get("engine_ticks_skipped_total", &[("policy", "rotate")]) > Some(0.0),
        "{}",
        metrics.text
    );

    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());

    // Never two runs at once: each starts after the previous one finished.
    let runs = account.scheduled_runs();
    assert!(runs.len() >= 2, "{runs:#?}");
    let spans: Vec<_> = runs
        .iter()
        .map(|r| {
            assert!(!r["finished_at"].is_null(), "unfinished run {r:#}");
            (stamp(&r["started_at"]), stamp(&r["finished_at"]))
        })
        .collect();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "overlapping runs: {:?} started before {:?} finished\n{runs:#?}",
            pair[1].0,
            pair[0].1
        );
    }
    assert!(!account.has_key("stale", &account.key("stale", 0)));
}

#[test]
fn json_logs_are_json_name_every_action_and_never_the_secret() {
    let account = Account::new(
        "json",
        vec![user_with_key("stale-a", 200), user_with_key("stale-b", 300)],
    );
    account.write_policy("rotate.toml", &rotate_policy(90, Some("*/2 * * * * *")));
    let mut daemon = account.daemon(&["--log-format", "json"]);
    daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());

    let lines = daemon.lines();
    let objects: Vec<Value> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect();
    assert!(!objects.is_empty());

    // Fields are flattened at the top level.
    let listening = objects
        .iter()
        .find(|o| o["message"] == "listening")
        .unwrap_or_else(|| panic!("no top-level message \"listening\":\n{}", lines.join("\n")));
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(listening["timestamp"].is_string(), "{listening}");
    assert!(
        listening["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listening}"
    );

    // Every action of the run is logged with its run, policy, user, key,
    // action and outcome.
    let runs = account.scheduled_runs();
    let run = runs.first().expect("a scheduled run");
    let actions = run["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{run:#}");
    let run_id = run["id"].as_i64().expect("run id");
    let same_run =
        |v: &Value| v.as_i64() == Some(run_id) || v.as_str() == Some(&run_id.to_string());
    for a in actions {
        let found = objects.iter().any(|o| {
            same_run(&o["run"])
                && o["policy"] == a["policy"]
                && o["user"] == a["user"]
                && o["key_id"] == a["key_id"]
                && o["action"] == a["action"]
                && o["outcome"] == a["outcome"]
        });
        assert!(found, "no log line for action {a}:\n{}", lines.join("\n"));
    }
    for o in &objects {
        if o.get("outcome").is_some() && o.get("user").is_some() {
            for field in ["run", "policy", "user", "key_id", "action", "outcome"] {
                assert!(o.get(field).is_some(), "action line without {field}: {o}");
            }
        }
    }

    // The secret access key appears nowhere.
    for line in lines.iter().chain(daemon.stdout.all().iter()) {
        assert!(!line.contains(SECRET), "the secret is logged: {line}");
    }
}

#[test]
fn a_report_policy_only_plans() {
    let account = Account::new("report", vec![user_with_key("stale", 200)]);
    account.write_policy(
        "audit.toml",
        "[policy.audit]\nrule = \"cis-1.4\"\nmode = \"report\"\nschedule = \"*/2 * * * * *\"\n",
    );
    let mut daemon = account.daemon(&[]);
    let status = daemon.wait_status("two runs", |s| runs_total(s) >= 2);
    assert_eq!(status["runs"]["failed"], 0, "{status:#}");
    let audit = policy_status(&status, "audit");
    assert_eq!(audit["mode"], "report");
    assert_eq!(audit["last_run"]["actions"]["done"], 0, "{status:#}");

    // The plan shows the deletion, not applying.
    let plan = daemon.plan().expect("a plan");
    assert!(applying(&plan).is_empty(), "{plan:#}");
    let stale = account.key("stale", 0);
    assert!(
        plan["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["key_id"] == stale.as_str()
                && a["action"] == "delete-access-key"
                && a["applies"] == false),
        "{plan:#}"
    );

    // Nothing written, nothing journaled as an action, nothing counted.
    let calls = account.moto.calls();
    for write in ["DeleteAccessKey", "UpdateAccessKey", "DeleteLoginProfile"] {
        assert!(!calls.contains_key(write), "{calls:?}");
    }
    assert!(account.has_key("stale", &stale));
    let runs = account.scheduled_runs();
    assert!(runs.len() >= 2, "{runs:#?}");
    assert!(runs.iter().all(|r| journaled(r).is_empty()), "{runs:#?}");
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.sum("engine_actions_total", &[]),
        0.0,
        "{}",
        metrics.text
    );
    // stale and the engine's own key.
    assert_eq!(
        metrics.get(
            "engine_open_findings",
            &[
                ("account", "123456789012"),
                ("policy", "audit"),
                ("rule", "cis-1.4")
            ]
        ),
        Some(2.0),
        "{}",
        metrics.text
    );
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn readiness_follows_the_last_aws_contact() {
    let account = Account::new("ready", vec![user_with_key("stale", 200)]);
    account.write_policy("rotate.toml", &rotate_policy(90, Some("*/2 * * * * *")));
    // STS throttles everything, and the engine does not retry.
    account.moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["GetCallerIdentity".into()]),
        ..Faults::default()
    });
    let mut daemon = account.daemon(&["--max-attempts", "1"]);

    let failed = daemon.wait_status("a failed run", |s| s["runs"]["failed"].as_u64() >= Some(1));
    let last = &policy_status(&failed, "rotate")["last_run"];
    assert_eq!(last["result"], "failed", "{failed:#}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("GetCallerIdentity")),
        "{failed:#}"
    );
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("AWS"), "{ready:?}");
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200, "alive all the same");
    let metrics = daemon.metrics();
    assert!(
        metrics.get("engine_runs_total", &[("result", "failed")]) >= Some(1.0),
        "{}",
        metrics.text
    );
    let sts = metrics.sum(
        "engine_aws_requests_total",
        &[("operation", "GetCallerIdentity")],
    );
    let sts_ok = metrics.sum(
        "engine_aws_requests_total",
        &[("operation", "GetCallerIdentity"), ("outcome", "ok")],
    );
    assert!(
        sts > sts_ok,
        "failed STS calls are counted:\n{}",
        metrics.text
    );
    assert!(account.has_key("stale", &account.key("stale", 0)));

    // AWS answers again: the next run succeeds and the daemon is ready.
    account.moto.faults(&Faults::default());
    poll_until(WAIT, || (daemon.get("/readyz").status == 200).then_some(()))
        .unwrap_or_else(|| panic!("not ready after AWS recovered:\n{}", daemon.log()));
    let ok = daemon.wait_status("a successful run", |s| {
        policy_status(s, "rotate")["last_run"]["result"] == "ok"
    });
    assert!(ok["runs"]["ok"].as_u64() >= Some(1), "{ok:#}");
    assert!(!account.has_key("stale", &account.key("stale", 0)));

    // SIGINT stops it as SIGTERM does.
    daemon.signal("INT");
    let status = daemon.wait_exit(WAIT).expect("exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

/// `[policy.unused]`: cis-1.3 over 90 days, deactivating, on `schedule`.
fn unused_policy(schedule: &str) -> String {
    format!(
        "[policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n\
         max_unused_days = 90\nschedule = \"{schedule}\"\n"
    )
}

/// `ListAccessKeys` calls moto received per user.
fn list_access_keys_per_user(account: &Account) -> BTreeMap<String, usize> {
    let mut per_user = BTreeMap::new();
    for r in account.moto.requests() {
        if r.action == "ListAccessKeys" {
            *per_user.entry(r.user.unwrap_or_default()).or_insert(0) += 1;
        }
    }
    per_user
}

#[test]
fn policies_due_at_the_same_instant_share_one_run() {
    // `both` has a key for each policy: 400 days old and used yesterday
    // (cis-1.4 over 365 days only), 200 days old and unused for 150 days
    // (cis-1.3 over 90 days only). `fresh` has nothing to find.
    let account = Account::new(
        "shared",
        vec![
            SeedUser::new("both", days_ago(900))
                .key(days_ago(400), Some(days_ago(1)), true)
                .key(days_ago(200), Some(days_ago(150)), true),
            user_with_key("fresh", 10),
        ],
    );
    let (rotated, unused) = (account.key("both", 0), account.key("both", 1));
    // Two schedules, hourly and daily, both due at `tick` (once in the test).
    let tick = soon(Duration::from_secs(4));
    account.write_policy("rotate.toml", &rotate_policy(365, Some(&hourly_at(tick))));
    account.write_policy("unused.toml", &unused_policy(&daily_at(tick)));
    account.moto.reset_calls();
    let mut daemon = account.daemon(&[]);

    let status = daemon.wait_status("the run", |s| runs_total(s) >= 1);
    assert_eq!(runs_total(&status), 1, "{status:#}");
    let (r, u) = (
        &policy_status(&status, "rotate")["last_run"],
        &policy_status(&status, "unused")["last_run"],
    );
    assert!(r["run"].is_i64(), "{status:#}");
    assert_eq!(r["run"], u["run"], "one run for both policies: {status:#}");
    assert_eq!(r["started_at"], u["started_at"], "{status:#}");
    assert_eq!(
        (r["result"].as_str(), u["result"].as_str()),
        (Some("ok"), Some("ok"))
    );
    assert_eq!(policy_status(&status, "rotate")["runs"], 1, "{status:#}");
    assert_eq!(policy_status(&status, "unused")["runs"], 1, "{status:#}");

    // The journal: one scheduled run that acted for both policies.
    let runs = account.scheduled_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "ok", "{runs:#?}");
    let mut acted: Vec<(String, String, String, String)> = runs[0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let s = |f: &str| a[f].as_str().unwrap_or_default().to_string();
            (s("policy"), s("key_id"), s("action"), s("outcome"))
        })
        .collect();
    acted.sort();
    let row = |p: &str, k: &str, a: &str| (p.into(), k.into(), a.into(), "done".into());
    assert_eq!(
        acted,
        [
            row("rotate", &rotated, "delete-access-key"),
            row("unused", &unused, "deactivate-access-key"),
        ],
        "{runs:#?}"
    );
    let both = account.moto.state();
    let both = both.user("both").expect("both");
    assert!(both.key(&rotated).is_none(), "{both:?}");
    assert_eq!(
        both.key(&unused).map(|k| k.status.as_str()),
        Some("Inactive")
    );

    // One credential report for the two policies: downloaded once.
    let requests = account.moto.requests();
    let downloads = requests
        .iter()
        .filter(|r| r.action == "GetCredentialReport" && r.status == 200)
        .count();
    assert_eq!(downloads, 1, "{:?}", account.moto.calls());
    let generated = requests
        .iter()
        .filter(|r| r.action == "GenerateCredentialReport")
        .count();
    assert!((1..=3).contains(&generated), "{:?}", account.moto.calls());
    // One ListAccessKeys for `both` in the snapshot, shared by the two
    // policies' findings, and one re-check before each of its two writes;
    // none for a user without a key finding.
    let listed = list_access_keys_per_user(&account);
    assert_eq!(listed.get("both"), Some(&3), "{listed:?}");
    assert_eq!(listed.get("fresh"), None, "{listed:?}");
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn over_its_blast_radius_cap_a_policy_does_nothing_in_a_scheduled_run() {
    // Three keys over 180 days for `rotate`, capped at 2 actions; `idle`'s
    // key is younger than that but unused for 100 days: `unused` acts on it
    // in the same run.
    let account = Account::new(
        "blast",
        vec![
            user_with_key("stale-a", 200),
            user_with_key("stale-b", 250),
            user_with_key("stale-c", 300),
            SeedUser::new("idle", days_ago(900)).key(days_ago(120), Some(days_ago(100)), true),
        ],
    );
    let tick = soon(Duration::from_secs(4));
    account.write_policy(
        "rotate.toml",
        &format!(
            "{}max_actions_per_run = 2\n",
            rotate_policy(180, Some(&hourly_at(tick)))
        ),
    );
    account.write_policy("unused.toml", &unused_policy(&hourly_at(tick)));
    let idle = account.key("idle", 0);
    let before = account.state();
    let mut daemon = account.daemon(&[]);

    let status = daemon.wait_status("the run", |s| runs_total(s) >= 1);
    assert_eq!(runs_total(&status), 1, "{status:#}");
    assert_eq!(status["runs"]["failed"], 1, "{status:#}");
    let rotate = &policy_status(&status, "rotate")["last_run"];
    assert_eq!(rotate["result"], "failed", "{status:#}");
    assert_eq!(rotate["actions"]["done"], 0, "{status:#}");
    let error = rotate["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("rotate: the plan has 3 actions, more than max_actions_per_run = 2")
            && error.contains("nothing will be done for this policy"),
        "{status:#}"
    );
    assert_eq!(
        policy_status(&status, "unused")["last_run"]["actions"]["done"],
        1,
        "{status:#}"
    );

    // The account: the capped policy wrote nothing; the other one acted.
    let mut expected = before.clone();
    for u in &mut expected.users {
        for k in &mut u.keys {
            if k.id == idle {
                k.status = "Inactive".into();
            }
        }
    }
    assert_eq!(account.state(), expected);
    let calls = account.moto.calls();
    assert!(!calls.contains_key("DeleteAccessKey"), "{calls:?}");
    assert_eq!(calls.get("UpdateAccessKey"), Some(&1), "{calls:?}");

    // The plan says why; the journal has only the other policy's action.
    let plan = daemon.plan().expect("a plan");
    let errors = plan["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{plan:#}");
    assert_eq!(
        (&errors[0]["policy"], &errors[0]["kind"]),
        (&json!("rotate"), &json!("blast-radius")),
        "{plan:#}"
    );
    assert!(
        applying(&plan).iter().all(|(u, _, _)| u == "idle"),
        "{plan:#}"
    );
    let runs = account.scheduled_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "failed", "{runs:#?}");
    assert_eq!(
        journaled(&runs[0]),
        [(
            "idle".to_string(),
            idle.clone(),
            "deactivate-access-key".to_string(),
            "done".to_string()
        )],
        "{runs:#?}"
    );
    let m = daemon.metrics();
    assert_eq!(
        m.sum("engine_actions_total", &[("policy", "rotate")]),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum(
            "engine_actions_total",
            &[
                ("policy", "unused"),
                ("kind", "deactivate-access-key"),
                ("outcome", "done")
            ]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get("engine_runs_total", &[("result", "failed")]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn metrics_time_each_run_stamp_each_policy_and_count_plugin_failures() {
    use sha2::{Digest, Sha256};

    let account = Account::new("metrics", vec![user_with_key("mid", 200)]);
    let mid = account.key("mid", 0);
    // A plugin that traps, pinned by its sha256.
    let plugins = account.dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir plugins");
    let wasm = std::path::Path::new(engine_wasm::BUILT_PLUGIN_DIR).join("testdata_trap.wasm");
    let bytes = std::fs::read(&wasm).expect("the trap plugin is built by engine-wasm");
    std::fs::write(plugins.join("trap.wasm"), &bytes).expect("copy the plugin");
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // Run 1: `rotate` alone (nothing over 365 days but the engine's own key).
    let tick = soon(Duration::from_secs(4));
    account.write_policy("rotate.toml", &rotate_policy(365, Some(&hourly_at(tick))));
    let mut daemon = account.daemon(&[]);
    let first = daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_run_duration_seconds_count", &[]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.sum("engine_plugin_failures_total", &[]),
        0.0,
        "{}",
        m.text
    );

    // Run 2: a policy whose plugin traps, added by an edit, due soon after.
    let tick2 = soon(Duration::from_secs(2));
    account.write_policy(
        "trapped.toml",
        &format!(
            "[policy.trapped]\nrule = \"cis-1.4\"\nmax_key_age_days = 90\naction = \"trap\"\n\
             schedule = \"{}\"\n\n[plugin.trap]\nsource = \"../plugins/trap.wasm\"\n\
             sha256 = \"{sha}\"\nallow = [\"delete-access-key\"]\n",
            hourly_at(tick2)
        ),
    );
    let second = daemon.wait_status("the trapped policy's run", |s| runs_total(s) >= 2);
    assert_eq!(runs_total(&second), 2, "{second:#}");
    assert_eq!(second["runs"]["failed"], 1, "{second:#}");
    let trapped = &policy_status(&second, "trapped")["last_run"];
    assert_eq!(trapped["result"], "failed", "{second:#}");
    assert!(
        trapped["error"]
            .as_str()
            .is_some_and(|e| e.contains("trap")),
        "{second:#}"
    );
    let rotate = &policy_status(&second, "rotate")["last_run"];
    assert_eq!(
        *rotate,
        policy_status(&first, "rotate")["last_run"],
        "{second:#}"
    );
    assert_eq!(rotate["result"], "ok", "{second:#}");
    // The trapping plugin did nothing.
    assert!(account.has_key("mid", &mid));
    assert!(!account.moto.calls().contains_key("DeleteAccessKey"));

    let m = daemon.metrics();
    let epoch = |v: &Value| stamp(v).timestamp_millis() as f64 / 1000.0;
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 0.002);
    // One observation per run, summing their durations.
    assert_eq!(
        m.get("engine_run_duration_seconds_count", &[]),
        Some(2.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.get("engine_run_duration_seconds_bucket", &[("le", "+Inf")]),
        Some(2.0),
        "{}",
        m.text
    );
    let took = |r: &Value| epoch(&r["finished_at"]) - epoch(&r["started_at"]);
    let sum = m
        .get("engine_run_duration_seconds_sum", &[])
        .unwrap_or(-1.0);
    assert!(
        (sum - (took(rotate) + took(trapped))).abs() < 0.01 && sum > 0.0,
        "sum {sum}, runs {} + {}:\n{}",
        took(rotate),
        took(trapped),
        m.text
    );
    assert_eq!(
        m.get("engine_runs_total", &[("result", "ok")]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.get("engine_runs_total", &[("result", "failed")]),
        Some(1.0),
        "{}",
        m.text
    );
    // Last run and last success per policy: when its run finished.
    let rotate_end = epoch(&rotate["finished_at"]);
    let trapped_end = epoch(&trapped["finished_at"]);
    assert!(trapped_end > rotate_end, "{second:#}");
    let last_run = |p: &str| m.get("engine_policy_last_run_timestamp_seconds", &[("policy", p)]);
    let last_ok = |p: &str| {
        m.get(
            "engine_policy_last_success_timestamp_seconds",
            &[("policy", p)],
        )
    };
    assert!(close(last_run("rotate"), rotate_end), "{}", m.text);
    assert!(close(last_ok("rotate"), rotate_end), "{}", m.text);
    assert!(close(last_run("trapped"), trapped_end), "{}", m.text);
    assert_eq!(last_ok("trapped"), None, "never succeeded:\n{}", m.text);
    // The plugin's failure, by plugin and kind.
    assert_eq!(
        m.get(
            "engine_plugin_failures_total",
            &[("plugin", "trap"), ("kind", "trap")]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.sum("engine_plugin_failures_total", &[]),
        1.0,
        "{}",
        m.text
    );
    assert!(
        m.sum(
            "engine_plugin_call_duration_seconds_count",
            &[("plugin", "delete-expired-keys")]
        ) == 1.0,
        "{}",
        m.text
    );
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}
