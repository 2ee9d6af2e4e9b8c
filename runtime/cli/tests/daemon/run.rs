//! Scheduled runs: the account ends up exactly as the plan said, the metrics
//! count what moto saw, runs never overlap, and JSON logs name every action
//! but never the secret.

use std::time::Duration;

use engine_testkit::{Faults, SeedUser};
use serde_json::{Value, json};

use super::{
    Account, OWN_USER, SECRET, WAIT, applying, assert_status_shape, days_ago, journaled,
    policy_status, poll_until, rotate_policy, runs_total, stamp, user_with_key,
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
    account.write_policy("rotate.toml", &rotate_policy(90, Some("*/2 * * * * *")));
    let before = account.state();
    account.moto.reset_calls();
    let mut daemon = account.daemon(&[]);

    let health = daemon.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    // The first run, and its plan, read before the next run can replace it.
    let first = daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    let plan = daemon.plan().expect("/v1/plan after the first run");
    let again = daemon.status();
    let plan_is_the_first = runs_total(&first) == 1 && runs_total(&again) == 1;

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
    if plan_is_the_first {
        assert_eq!(applying(&plan), expected, "{plan:#}");
        let last = &policy_status(&first, "rotate")["last_run"];
        assert_eq!(last["result"], "ok", "{first:#}");
        assert_eq!(last["actions"]["done"], 3, "{first:#}");
        assert_eq!(last["actions"]["failed"], 0, "{first:#}");
        let findings = plan["findings"].as_array().expect("findings").len();
        // 3 stale, the exempt one and the engine's own key.
        assert_eq!(findings, 5, "{plan:#}");
        assert_eq!(last["findings"], findings, "{first:#}");
    } else {
        // A later run's plan: the deleted keys are gone from the report.
        assert!(applying(&plan).is_empty(), "{plan:#}");
        println!("note: a second run finished before /v1/plan was read");
    }
    assert_eq!(plan["policies"][0]["name"], "rotate", "{plan:#}");

    // The journal: a `scheduled` run that did exactly that.
    let runs = account.scheduled_runs();
    let run = runs.first().expect("a scheduled run in the journal");
    assert_eq!(run["status"], "ok", "{run:#}");
    let done: Vec<_> = expected
        .iter()
        .map(|(u, k, a)| (u.clone(), k.clone(), a.clone(), "done".to_string()))
        .collect();
    assert_eq!(journaled(run), done, "{run:#}");
    assert!(
        runs[1..].iter().all(|r| journaled(r).is_empty()),
        "later runs have nothing to do: {runs:#?}"
    );

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
    assert!(metrics.get("engine_runs_total", &[("result", "ok")]) >= Some(1.0));
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
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        next > now - 5.0 && next < now + 5.0,
        "next run {next}, now {now}"
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
    assert_eq!(rotate["schedule"], "*/2 * * * * *");
    assert!(rotate["next_run"].is_string(), "{status:#}");
    assert!(rotate["runs"].as_u64() >= Some(1), "{status:#}");
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
