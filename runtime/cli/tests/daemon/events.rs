//! AWS Config compliance events: EventBridge routes them to an SQS queue in
//! moto, the running daemon reads the queue and acts on that user only.

use super::{Account, Daemon, WAIT, user_with_key};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The region of the Config rules, the event bus and the queue.
const REGION: &str = "eu-west-1";
/// moto's account.
const ACCOUNT: &str = "123456789012";
/// The Config rule `[policy.rotate]` declares (the default name).
const RULE: &str = "engine-rotate";
/// Never due during a test: events are what acts.
const YEARLY: &str = "0 0 0 1 1 *";

/// The policies: cis-1.4 over 90 days mirrored by a Config rule, with the
/// events queue; `extra` goes into `[policy.rotate]`.
fn policies(queue: &str, extra: &str) -> String {
    format!(
        "[aws_config]\nregion = \"{REGION}\"\nevents_queue = \"{queue}\"\n\n\
         [policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 90\n\
         aws_config_rule = \"access-keys-rotated\"\nschedule = \"{YEARLY}\"\n{extra}\n"
    )
}

/// A queue in moto that EventBridge's default bus feeds with Config
/// compliance changes, as the README tells users to set up.
fn queue(account: &Account, name: &str, attributes: &[(&str, String)]) -> String {
    let (url, arn) = account.moto.create_queue(REGION, name, attributes);
    account.moto.route_events_to_queue(
        REGION,
        "engine-config-events",
        &json!({
            "source": ["aws.config"],
            "detail-type": ["Config Rules Compliance Change"]
        }),
        &arn,
    );
    url
}

/// The `detail` of a compliance change of `user_id` under `rule`.
fn change(rule: &str, user_id: &str, compliance: &str) -> Value {
    json!({
        "configRuleName": rule,
        "messageType": "ComplianceChangeNotification",
        "resourceType": "AWS::IAM::User",
        "resourceId": user_id,
        "awsAccountId": ACCOUNT,
        "awsRegion": REGION,
        "newEvaluationResult": {"complianceType": compliance}
    })
}

fn put(account: &Account, detail: Value) {
    account.moto.put_events(
        REGION,
        &[("aws.config", "Config Rules Compliance Change", detail)],
    );
}

fn user_id(account: &Account, name: &str) -> String {
    account
        .moto
        .state()
        .user(name)
        .unwrap_or_else(|| panic!("no user {name}"))
        .id
        .clone()
}

fn events(status: &Value, field: &str) -> u64 {
    status["events"][field].as_u64().unwrap_or(0)
}

/// IAM calls about `user` (by `UserName`), by action.
fn calls_about(account: &Account, user: &str) -> Vec<String> {
    account
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some(user))
        .map(|r| r.action)
        .collect()
}

fn event_runs(account: &Account) -> Vec<Value> {
    account
        .history()
        .into_iter()
        .filter(|r| r["command"] == "event")
        .collect()
}

#[track_caller]
fn wait_queue_empty(daemon: &mut Daemon, account: &Account, url: &str) {
    daemon.wait_for("the queue to be empty (every message deleted)", || {
        (account.moto.queue_depth(REGION, url) == (0, 0)).then_some(())
    });
}

#[test]
fn an_event_acts_on_that_user_only_and_what_is_not_for_it_is_deleted() {
    let account = Account::new(
        "events",
        vec![user_with_key("alice", 200), user_with_key("bob", 200)],
    );
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let alice_key = account.key("alice", 0);
    let bob_key = account.key("bob", 0);
    let alice = user_id(&account, "alice");
    let bob = user_id(&account, "bob");
    let mut daemon = account.daemon(&[]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);
    account.moto.reset_calls();

    // NON_COMPLIANT alice: her stale key goes, bob's stays until his schedule.
    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    let s = daemon.wait_status("the event acted on", |s| events(s, "acted") == 1);
    assert!(!account.has_key("alice", &alice_key));
    assert!(
        account.has_key("bob", &bob_key),
        "bob is not the event's user"
    );
    assert_eq!(s["events"]["last"]["user"], "alice", "{s:#}");
    assert_eq!(s["runs"]["total"], 0, "no scheduled run: {s:#}");
    wait_queue_empty(&mut daemon, &account, &url);
    // Fresh reads of alice only: no credential report, nobody else.
    let calls = account.moto.calls();
    assert!(
        !calls.contains_key("GenerateCredentialReport")
            && !calls.contains_key("GetCredentialReport"),
        "{calls:?}"
    );
    assert!(calls_about(&account, "bob").is_empty(), "{calls:?}");
    for op in ["GetUser", "GetLoginProfile", "ListAccessKeys"] {
        assert!(
            calls_about(&account, "alice").iter().any(|a| a == op),
            "{op} of alice: {calls:?}"
        );
    }
    assert!(calls.contains_key("GetAccessKeyLastUsed"), "{calls:?}");
    assert_eq!(account.deletes_per_key().get(&alice_key), Some(&1));
    let runs = event_runs(&account);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "ok", "{runs:#?}");
    let source = runs[0]["source"].as_str().unwrap_or_default();
    assert!(
        source.contains("alice") && source.contains(&alice) && source.contains(RULE),
        "the journal says whom and why: {source}"
    );
    let actions = runs[0]["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions.len(), 1, "{runs:#?}");
    assert_eq!(actions[0]["key_id"], alice_key.as_str());
    assert_eq!(actions[0]["outcome"], "done");

    // The same event again (at-least-once delivery): its run finds nothing.
    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    daemon.wait_status("the duplicate handled", |s| events(s, "acted") == 2);
    wait_queue_empty(&mut daemon, &account, &url);
    assert_eq!(account.deletes_per_key().get(&alice_key), Some(&1));
    let runs = event_runs(&account);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(
        runs[1]["actions"].as_array().map(Vec::len),
        Some(0),
        "{runs:#?}"
    );

    // COMPLIANT, another rule, another account, another resource type: deleted, ignored.
    account.moto.reset_calls();
    put(&account, change(RULE, &bob, "COMPLIANT"));
    put(
        &account,
        change("someone-elses-rule", &bob, "NON_COMPLIANT"),
    );
    let mut other_account = change(RULE, &bob, "NON_COMPLIANT");
    other_account["awsAccountId"] = json!("210987654321");
    put(&account, other_account);
    let mut bucket = change(RULE, "my-bucket", "NON_COMPLIANT");
    bucket["resourceType"] = json!("AWS::S3::Bucket");
    put(&account, bucket);
    let s = daemon.wait_status("four events ignored", |s| events(s, "ignored") == 4);
    wait_queue_empty(&mut daemon, &account, &url);
    assert!(account.has_key("bob", &bob_key));
    assert!(
        calls_about(&account, "bob").is_empty(),
        "{:?}",
        account.moto.calls()
    );
    assert_eq!(event_runs(&account).len(), 2, "ignored events make no run");
    assert_eq!(events(&s, "failed"), 0, "{s:#}");
    assert_eq!(events(&s, "malformed"), 0, "{s:#}");

    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_events_received_total", &[]),
        Some(6.0),
        "{}",
        m.text
    );
    for (outcome, n) in [
        ("acted", 2.0),
        ("ignored", 4.0),
        ("failed", 0.0),
        ("malformed", 0.0),
    ] {
        assert_eq!(
            m.get("engine_events_total", &[("outcome", outcome)]),
            Some(n),
            "{outcome}: {}",
            m.text
        );
    }
    assert_eq!(
        m.get(
            "engine_actions_total",
            &[
                ("account", "123456789012"),
                ("policy", "rotate"),
                ("kind", "delete-access-key"),
                ("outcome", "done")
            ]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn an_events_run_sends_its_messages_once_and_counts_them() {
    let receiver = engine_testkit::webhook::Receiver::start();
    let account = Account::new("events-messages", vec![user_with_key("alice", 200)]);
    let url = queue(&account, "engine-events-messages", &[]);
    // The staged plugin deactivates first and tells the owner; alice has no
    // owner tag, so the message goes to the fallback channel.
    account.write_policy(
        "rotate.toml",
        &format!(
            "{}\n[notifications]\nfallback_channel = \"fallback\"\n\n\
             [notifications.channels.fallback]\ntype = \"webhook\"\nurl = \"{}\"\n",
            policies(&url, "action = \"staged-key-removal\""),
            receiver.url("/fallback")
        ),
    );
    let key = account.key("alice", 0);
    let alice = user_id(&account, "alice");
    let mut daemon = account.daemon(&[]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);

    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    daemon.wait_status("the event acted on", |s| events(s, "acted") == 1);
    wait_queue_empty(&mut daemon, &account, &url);
    let status = account
        .moto
        .state()
        .user("alice")
        .and_then(|u| u.key(&key).map(|k| k.status.clone()));
    assert_eq!(status.as_deref(), Some("Inactive"), "{}", daemon.log());
    // The same event again: the key is no longer a finding, nothing is sent.
    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    daemon.wait_status("the duplicate handled", |s| events(s, "acted") == 2);
    wait_queue_empty(&mut daemon, &account, &url);

    // One message about the key, then the run's summary, both to the
    // fallback channel; only the message is counted as one.
    let about: Vec<String> = receiver
        .to("/fallback")
        .iter()
        .filter_map(|r| r.json()["about"]["stage"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        about,
        vec!["done:deactivate-access-key"],
        "{}",
        daemon.log()
    );
    let m = daemon.metrics();
    let messages = |result: &str| m.get("engine_messages_total", &[("result", result)]);
    assert_eq!(messages("sent"), Some(1.0), "{}", m.text);
    assert_eq!(messages("failed"), Some(0.0), "{}", m.text);
    assert_eq!(messages("no-channel"), Some(0.0), "{}", m.text);
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn a_malformed_event_goes_to_the_dead_letter_queue_without_a_hot_loop() {
    let account = Account::new("events-malformed", vec![user_with_key("alice", 200)]);
    let (dlq, dlq_arn) = account.moto.create_queue(REGION, "engine-events-dlq", &[]);
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string();
    let url = queue(&account, "engine-events", &[("RedrivePolicy", redrive)]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let alice_key = account.key("alice", 0);
    let mut daemon = account.daemon(&["--events-visibility", "1s"]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);

    account.moto.send_message(REGION, &url, "this is not JSON");
    let mut no_user = change(RULE, "x", "NON_COMPLIANT");
    if let Some(d) = no_user.as_object_mut() {
        d.remove("resourceId");
    }
    account.moto.put_events(
        REGION,
        &[("aws.config", "Config Rules Compliance Change", no_user)],
    );
    // Each comes back later each time (1 s, then 2 s), and the redrive
    // policy moves it to the dead-letter queue on its third receive.
    daemon.wait_for("both messages in the dead-letter queue", || {
        (account.moto.queue_depth(REGION, &dlq).0 == 2).then_some(())
    });
    assert_eq!(account.moto.queue_depth(REGION, &url), (0, 0));
    let s = daemon.status();
    let malformed = events(&s, "malformed");
    assert!(
        (2..=4).contains(&malformed),
        "each message is received at most twice before the dead-letter queue, not in a loop: {s:#}"
    );
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_events_total", &[("outcome", "malformed")]),
        Some(malformed as f64),
        "{}",
        m.text
    );
    // Nothing was done for them.
    assert!(account.has_key("alice", &alice_key));
    assert!(event_runs(&account).is_empty());
    let log = daemon.log();
    assert!(
        log.contains("malformed event") && log.contains("resourceId"),
        "the log says why:\n{log}"
    );
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn a_run_longer_than_the_visibility_timeout_keeps_its_message() {
    let account = Account::new("events-slow", vec![user_with_key("alice", 200)]);
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let alice_key = account.key("alice", 0);
    let alice = user_id(&account, "alice");
    let mut daemon = account.daemon(&["--events-visibility", "1s"]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);
    // Every fresh read and the write take 1.5 s: the run lasts several
    // visibility timeouts.
    account.moto.faults_with_latency(
        &engine_testkit::Faults {
            actions: Some(vec![
                "GetUser".into(),
                "ListAccessKeys".into(),
                "DeleteAccessKey".into(),
            ]),
            ..engine_testkit::Faults::default()
        },
        Duration::from_millis(1500),
    );
    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    daemon.wait_status("the event received", |s| events(s, "received") == 1);
    // While its run lasts (several visibility timeouts), no other consumer
    // can take the message.
    let mut looks = 0;
    while events(&daemon.status(), "acted") == 0 {
        assert!(
            !account.moto.peek_message(REGION, &url) || events(&daemon.status(), "acted") == 1,
            "the message became visible to other consumers during its run ({looks} looks)\n{}",
            daemon.log()
        );
        looks += 1;
        assert!(looks < 200, "the run did not end:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        looks >= 20,
        "the run was slow enough to outlast the visibility timeout ({looks} looks)"
    );
    assert!(!account.has_key("alice", &alice_key));
    let s2 = daemon.status();
    assert_eq!(events(&s2, "received"), 1, "{s2:#}");
    assert_eq!(event_runs(&account).len(), 1);
    assert_eq!(account.deletes_per_key().get(&alice_key), Some(&1));
    assert_eq!(account.moto.queue_depth(REGION, &url), (0, 0));
    account.moto.faults(&engine_testkit::Faults::default());
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn the_daemon_creates_and_updates_the_declared_config_rule() {
    let account = Account::new("events-config-rule", vec![user_with_key("alice", 20)]);
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let mut daemon = account.daemon(&[]);
    let rule = |moto: &engine_testkit::Moto| -> Option<Value> {
        let rules = moto.aws_json(
            "config",
            REGION,
            "StarlingDoveService.DescribeConfigRules",
            &json!({}),
        );
        rules["ConfigRules"]
            .as_array()?
            .iter()
            .find(|r| r["ConfigRuleName"] == RULE)
            .cloned()
    };
    let created = daemon.wait_for("the Config rule created at start", || rule(&account.moto));
    assert_eq!(created["Source"]["SourceIdentifier"], "ACCESS_KEYS_ROTATED");
    let params: Value = serde_json::from_str(created["InputParameters"].as_str().unwrap_or("{}"))
        .unwrap_or_default();
    assert_eq!(params["maxAccessKeyAge"], "90", "{created:#}");

    // A new threshold: the reload puts it, without waiting for a schedule.
    account.write_policy(
        "rotate.toml",
        &policies(&url, "").replace("max_key_age_days = 90", "max_key_age_days = 30"),
    );
    let updated = daemon.wait_for("the Config rule updated after the reload", || {
        let r = rule(&account.moto)?;
        let p: Value = serde_json::from_str(r["InputParameters"].as_str()?).ok()?;
        (p["maxAccessKeyAge"] == "30").then_some(r)
    });
    assert_eq!(updated["ConfigRuleName"], RULE);
    let writes: Vec<Value> = account
        .history()
        .into_iter()
        .filter(|r| r["command"] == "apply-config-rules")
        .collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    let m = daemon.wait_metrics("two rule writes counted", |m| {
        m.get(
            "engine_config_rule_changes_total",
            &[("change", "create"), ("outcome", "done")],
        ) == Some(1.0)
            && m.get(
                "engine_config_rule_changes_total",
                &[("change", "update"), ("outcome", "done")],
            ) == Some(1.0)
    });
    assert!(m.text.contains("engine_config_rule_changes_total"));
    // Nothing else was touched: the 20-day key is within both thresholds.
    assert!(account.has_key("alice", &account.key("alice", 0)));
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

#[test]
fn a_malformed_event_comes_back_later_each_time() {
    let account = Account::new("events-backoff", vec![user_with_key("alice", 200)]);
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let mut daemon = account.daemon(&["--events-visibility", "1s"]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);
    account
        .moto
        .send_message(REGION, &url, "{\"source\": \"aws.config\"}");
    daemon.wait_status("the malformed event seen", |s| events(s, "malformed") == 1);
    // Hidden 1 s, then 2 s, then 4 s, then 8 s: about 4 receives in 10 s
    // where a fixed 1 s would give 7 or more. Never deleted.
    std::thread::sleep(Duration::from_secs(10));
    let s = daemon.status();
    let seen = events(&s, "malformed");
    assert!(
        (3..=4).contains(&seen),
        "received {seen} times in about 10 s: {s:#}"
    );
    let (visible, hidden) = account.moto.queue_depth(REGION, &url);
    assert_eq!(visible + hidden, 1, "the message stays on the queue");
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// SIGTERM while an event's run is writing: the write in flight finishes,
/// the rest is journaled as not started, and the message stays on the
/// queue; the next start handles it again and finishes the job, no key
/// written twice.
#[test]
fn a_stop_mid_event_leaves_the_message_for_the_next_start() {
    use super::SeedUser;
    let two_keys = SeedUser::new("alice", super::days_ago(900))
        .key(super::days_ago(200), Some(super::days_ago(1)), true)
        .key(super::days_ago(150), Some(super::days_ago(1)), true);
    let account = Account::new("events-stop", vec![two_keys]);
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let keys = [account.key("alice", 0), account.key("alice", 1)];
    let alice = user_id(&account, "alice");
    account.moto.faults_with_latency(
        &engine_testkit::Faults {
            actions: Some(vec!["DeleteAccessKey".into()]),
            ..engine_testkit::Faults::default()
        },
        Duration::from_secs(2),
    );
    let flags = ["--concurrency", "1", "--events-visibility", "2s"];
    let mut daemon = account.daemon(&flags);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);
    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    daemon.wait_for("a DeleteAccessKey sent", || {
        account
            .moto
            .requests()
            .iter()
            .any(|r| r.action == "DeleteAccessKey")
            .then_some(())
    });
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
    let runs = event_runs(&account);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let outcomes: Vec<&str> = runs[0]["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(|a| a["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "done").count(),
        1,
        "{runs:#?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "skipped").count(),
        1,
        "{runs:#?}"
    );
    let (visible, hidden) = account.moto.queue_depth(REGION, &url);
    assert_eq!(visible + hidden, 1, "the message stays on the queue");

    // The next start takes it again (once hidden no more) and finishes.
    account.moto.faults(&engine_testkit::Faults::default());
    let mut daemon = account.daemon(&flags);
    daemon.wait_for("both keys gone", || {
        keys.iter()
            .all(|k| !account.has_key("alice", k))
            .then_some(())
    });
    wait_queue_empty(&mut daemon, &account, &url);
    let deletes = account.deletes_per_key();
    assert!(
        keys.iter().all(|k| deletes.get(k) == Some(&1)),
        "each key written once: {deletes:?}"
    );
    assert_eq!(event_runs(&account).len(), 2);
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// An event whose run fails (every DeleteAccessKey throttled, no retry):
/// counted failed, left on the queue, back later each time (not in a hot
/// loop); once AWS answers again, the next delivery acts and deletes it.
#[test]
fn an_event_whose_run_fails_stays_on_the_queue_and_comes_back_later() {
    let account = Account::new("events-failed", vec![user_with_key("alice", 200)]);
    let url = queue(&account, "engine-events", &[]);
    account.write_policy("rotate.toml", &policies(&url, ""));
    let alice_key = account.key("alice", 0);
    let alice = user_id(&account, "alice");
    account.moto.faults(&engine_testkit::Faults {
        throttle: 1.0,
        actions: Some(vec!["DeleteAccessKey".into()]),
        ..engine_testkit::Faults::default()
    });
    let mut daemon = account.daemon(&["--events-visibility", "1s", "--max-attempts", "1"]);
    daemon.wait_status("the queue being read", |s| s["events"]["queue"] == url);

    put(&account, change(RULE, &alice, "NON_COMPLIANT"));
    let failed = daemon.wait_status("two failed runs", |s| events(s, "failed") >= 2);
    // Back on: the next delivery (2 s after the second) succeeds.
    account.moto.faults(&engine_testkit::Faults::default());
    assert_eq!(events(&failed, "failed"), 2, "{failed:#}");
    assert_eq!(events(&failed, "acted"), 0, "{failed:#}");
    assert_eq!(failed["events"]["last"]["outcome"], "failed", "{failed:#}");
    assert_eq!(failed["events"]["last"]["user"], "alice", "{failed:#}");
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_events_total", &[("outcome", "failed")]),
        Some(2.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.get(
            "engine_actions_total",
            &[
                ("account", ACCOUNT),
                ("policy", "rotate"),
                ("kind", "delete-access-key"),
                ("outcome", "failed")
            ]
        ),
        Some(2.0),
        "{}",
        m.text
    );
    assert!(account.has_key("alice", &alice_key));

    let acted = daemon.wait_status("the event acted on", |s| events(s, "acted") == 1);
    wait_queue_empty(&mut daemon, &account, &url);
    assert!(!account.has_key("alice", &alice_key));
    assert_eq!(events(&acted, "failed"), 2, "{acted:#}");
    assert_eq!(events(&acted, "received"), 3, "{acted:#}");
    let m = daemon.metrics();
    assert_eq!(
        m.get("engine_events_received_total", &[]),
        Some(3.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.get("engine_events_total", &[("outcome", "acted")]),
        Some(1.0),
        "{}",
        m.text
    );

    // Three deliveries, each one write: two throttled, then done; hidden
    // 1 s, then 2 s, between them (not retried at once).
    let writes: Vec<_> = account
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action == "DeleteAccessKey")
        .collect();
    let statuses: Vec<u16> = writes.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 200], "{writes:?}");
    assert!(
        writes
            .iter()
            .all(|r| r.key_id.as_deref() == Some(alice_key.as_str())),
        "{writes:?}"
    );
    let (gap1, gap2) = (writes[1].at - writes[0].at, writes[2].at - writes[1].at);
    assert!(
        gap1 >= 0.9,
        "back after {gap1:.2} s, hidden for 1 s: {writes:?}"
    );
    assert!(
        gap2 >= 1.9,
        "back after {gap2:.2} s, hidden for 2 s: {writes:?}"
    );
    // The journal: two failed runs, then the one that did it.
    let runs = event_runs(&account);
    let statuses: Vec<&str> = runs.iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, ["failed", "failed", "ok"], "{runs:#?}");
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// The declared rule changed in the console is put back by the next
/// scheduled run; a declaration removed by an edit deletes the engine's
/// rule, and a rule of another name it never managed stays.
#[test]
fn the_daemon_repairs_drift_of_its_rule_and_deletes_only_its_own_when_undeclared() {
    let account = Account::new("events-rule-drift", vec![]);
    let declared = |extra: &str| {
        format!(
            "[aws_config]\nregion = \"{REGION}\"\n\n[policy.rotate]\nrule = \"cis-1.4\"\n\
             max_key_age_days = 90\nschedule = \"*/3 * * * * *\"\n{extra}\n"
        )
    };
    let rules = |moto: &engine_testkit::Moto| -> BTreeMap<String, String> {
        let rules = moto.aws_json(
            "config",
            REGION,
            "StarlingDoveService.DescribeConfigRules",
            &json!({}),
        );
        rules["ConfigRules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r["ConfigRuleName"].as_str().unwrap_or_default().to_string(),
                    r["InputParameters"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let put_rule = |name: &str, days: u32| {
        account.moto.aws_json(
            "config",
            REGION,
            "StarlingDoveService.PutConfigRule",
            &json!({"ConfigRule": {
                "ConfigRuleName": name,
                "Source": {"Owner": "AWS", "SourceIdentifier": "ACCESS_KEYS_ROTATED"},
                "InputParameters": json!({"maxAccessKeyAge": days.to_string()}).to_string()
            }}),
        );
    };
    let params = |days: u32| json!({"maxAccessKeyAge": days.to_string()});
    let parsed = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    // Someone else's rule, never declared.
    put_rule("theirs", 45);
    account.write_policy(
        "rotate.toml",
        &declared("aws_config_rule = \"access-keys-rotated\""),
    );
    let mut daemon = account.daemon(&[]);
    daemon.wait_for("the rule created at start", || {
        rules(&account.moto)
            .get(RULE)
            .filter(|p| parsed(p) == params(90))
            .map(|_| ())
    });

    // Changed behind the engine's back (no reload, no restart): a
    // scheduled run puts it back.
    let drifted_at = chrono::Utc::now();
    put_rule(RULE, 365);
    daemon.wait_for("the drift repaired", || {
        rules(&account.moto)
            .get(RULE)
            .filter(|p| parsed(p) == params(90))
            .map(|_| ())
    });
    let status = daemon.status();
    assert_eq!(
        status["last_reload"]["trigger"], "start",
        "no reload: {status:#}"
    );
    let history = account.history();
    let repaired = history
        .iter()
        .find(|r| {
            r["command"] == "apply-config-rules" && super::stamp(&r["started_at"]) > drifted_at
        })
        .unwrap_or_else(|| panic!("the repair is journaled: {history:#?}"));
    assert_eq!(repaired["status"], "ok", "{repaired:#}");
    assert!(
        history.iter().any(|r| r["command"] == "scheduled"
            && super::stamp(&r["started_at"]) < super::stamp(&repaired["started_at"])),
        "made by a scheduled run: {history:#?}"
    );
    // One write put it back (the drift was there), one made it at start.
    let m = daemon.wait_metrics("the repair counted", |m| {
        m.get(
            "engine_config_rule_changes_total",
            &[("change", "update"), ("outcome", "done")],
        ) == Some(1.0)
    });
    assert_eq!(
        m.get(
            "engine_config_rule_changes_total",
            &[("change", "create"), ("outcome", "done")]
        ),
        Some(1.0),
        "{}",
        m.text
    );

    // The declaration removed: the reload deletes the engine's rule only.
    account.write_policy("rotate.toml", &declared(""));
    daemon.wait_for("the engine's rule deleted", || {
        (!rules(&account.moto).contains_key(RULE)).then_some(())
    });
    let left = rules(&account.moto);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(parsed(&left["theirs"]), params(45), "{left:?}");
    daemon.wait_metrics("the delete counted", |m| {
        m.get(
            "engine_config_rule_changes_total",
            &[("change", "delete"), ("outcome", "done")],
        ) == Some(1.0)
    });
    // Runs under the new configuration leave `theirs` alone too.
    let deleted_at = chrono::Utc::now();
    daemon.wait_status("a scheduled run started since", |s| {
        let last = &super::policy_status(s, "rotate")["last_run"];
        !last.is_null() && super::stamp(&last["started_at"]) > deleted_at
    });
    assert_eq!(rules(&account.moto).len(), 1);
    assert_eq!(parsed(&rules(&account.moto)["theirs"]), params(45));
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}
