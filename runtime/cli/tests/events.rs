//! `engine handle-event DIR FILE|-`: one AWS Config compliance event, with
//! the real binary against moto. The event only says whom to look at; what
//! is done comes from fresh IAM reads of that user, and anything else is
//! ignored before any AWS call.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Faults, Moto, Mutation, SeedUser, SeededUser};
use serde_json::{Value, json};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");
const OWN_USER: &str = "engine-bot";
const ACCOUNT: &str = "123456789012";
const RULE: &str = "engine-rotate";

const POLICIES: &str = r#"
[aws_config]
region = "eu-west-1"

[policy.rotate]
rule = "cis-1.4"
max_key_age_days = 90
aws_config_rule = "access-keys-rotated"
"#;

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

struct Account {
    moto: Moto,
    seeded: Vec<SeededUser>,
    own_key: String,
    dir: PathBuf,
}

impl Account {
    /// alice and bob, each with a 200-day-old key; the engine's own user.
    fn new(name: &str) -> Account {
        let moto = Moto::start();
        let stale =
            |n: &str| SeedUser::new(n, days_ago(900)).key(days_ago(200), Some(days_ago(1)), true);
        let seeded = moto.seed(&[
            stale("alice"),
            stale("bob"),
            SeedUser::new(OWN_USER, days_ago(900)).key(days_ago(400), None, true),
        ]);
        let own_key = seeded[2].keys[0].clone();
        let dir = std::env::temp_dir().join(format!("engine-events-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(dir.join("policies/policies.toml"), POLICIES).expect("policies");
        Account {
            moto,
            seeded,
            own_key,
            dir,
        }
    }

    fn key(&self, user: &str) -> String {
        self.seeded
            .iter()
            .find(|s| s.name == user)
            .map(|s| s.keys[0].clone())
            .unwrap_or_else(|| panic!("{user} was not seeded"))
    }

    fn has_key(&self, user: &str, key: &str) -> bool {
        self.moto
            .state()
            .user(user)
            .is_some_and(|u| u.key(key).is_some())
    }

    fn id(&self, user: &str) -> String {
        self.moto.state().user(user).expect("user").id.clone()
    }

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
            .env("RUST_LOG", "warn")
            .args(args);
        cmd
    }

    /// `engine handle-event policies EVENT ARGS...`, the event in a file.
    fn handle(&self, event: &Value, args: &[&str]) -> Output {
        let file = self.dir.join("event.json");
        std::fs::write(&file, event.to_string()).expect("write event");
        let file = file.display().to_string();
        let mut all = vec!["handle-event", "policies", file.as_str()];
        all.extend_from_slice(args);
        self.command(&all)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    /// The same, the event on standard input (`-`).
    fn handle_stdin(&self, body: &str, args: &[&str]) -> Output {
        let mut all = vec!["handle-event", "policies", "-"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run engine");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write the event");
        child.wait_with_output().expect("wait")
    }

    fn history(&self) -> Vec<Value> {
        let out = self
            .command(&["history", "--format", "json"])
            .output()
            .expect("history");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("history JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
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

/// An EventBridge event as AWS Config sends it.
fn event(rule: &str, user_id: &str, compliance: &str) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "source": "aws.config",
        "detail-type": "Config Rules Compliance Change",
        "account": ACCOUNT,
        "time": "2026-12-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "configRuleName": rule,
            "messageType": "ComplianceChangeNotification",
            "resourceType": "AWS::IAM::User",
            "resourceId": user_id,
            "awsAccountId": ACCOUNT,
            "awsRegion": "eu-west-1",
            "newEvaluationResult": {"complianceType": compliance}
        }
    })
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn an_event_acts_on_its_user_only_and_is_journaled() {
    let account = Account::new("acts");
    let (alice, bob) = (account.key("alice"), account.key("bob"));
    let out = account.handle(
        &event(RULE, &account.id("alice"), "NON_COMPLIANT"),
        &["--format", "json"],
    );
    assert_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(doc["outcome"], "acted", "{doc:#}");
    assert_eq!(doc["user"], "alice");
    assert_eq!(doc["policies"], json!(["rotate"]));
    assert_eq!(doc["results"].as_array().map(Vec::len), Some(1), "{doc:#}");
    assert_eq!(doc["results"][0]["key_id"], alice.as_str());
    assert_eq!(doc["results"][0]["outcome"], "done");
    assert_eq!(doc["plan"]["source"]["user"], "alice");
    assert!(!account.has_key("alice", &alice));
    assert!(account.has_key("bob", &bob), "only the event's user");
    let calls = account.moto.calls();
    assert!(!calls.contains_key("GetCredentialReport"), "{calls:?}");
    let history = account.history();
    let run = history
        .iter()
        .find(|r| r["command"] == "event")
        .expect("an event run");
    assert_eq!(run["status"], "ok");
    assert!(
        run["source"].as_str().is_some_and(|s| s.contains("alice")),
        "{run:#}"
    );

    // Delivered twice: the second run has nothing left to do.
    let again = account.handle(&event(RULE, &account.id("alice"), "NON_COMPLIANT"), &[]);
    assert_code(&again, 0);
    let deletes = account
        .moto
        .requests()
        .iter()
        .filter(|r| r.action == "DeleteAccessKey")
        .count();
    assert_eq!(deletes, 1);
    assert!(
        text(&again.stderr).contains("alice"),
        "{}",
        text(&again.stderr)
    );

    // --dry-run plans bob's delete and does nothing.
    let dry = account.handle(
        &event(RULE, &account.id("bob"), "NON_COMPLIANT"),
        &["--dry-run", "--format", "json"],
    );
    assert_code(&dry, 2);
    let doc: Value = serde_json::from_slice(&dry.stdout).expect("JSON answer");
    assert_eq!(doc["outcome"], "planned", "{doc:#}");
    assert_eq!(doc["plan"]["actions"][0]["key_id"], bob.as_str(), "{doc:#}");
    assert!(account.has_key("bob", &bob));
}

#[test]
fn events_that_are_not_for_the_engine_are_ignored_without_a_call() {
    let account = Account::new("ignored");
    let bob = account.id("bob");
    account.moto.reset_calls();
    let cases = [
        (event(RULE, &bob, "COMPLIANT"), "not-non-compliant"),
        (event("another-rule", &bob, "NON_COMPLIANT"), "unknown-rule"),
        (
            json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}),
            "not-compliance-change",
        ),
    ];
    for (ev, reason) in cases {
        let out = account.handle_stdin(&ev.to_string(), &["--format", "json"]);
        assert_code(&out, 0);
        let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
        assert_eq!(doc["outcome"], "ignored", "{doc:#}");
        assert_eq!(doc["reason"], reason, "{doc:#}");
    }
    assert_eq!(account.moto.total_calls(), 0, "{:?}", account.moto.calls());
    // Another account: known only once the engine asks who it is.
    let mut other = event(RULE, &bob, "NON_COMPLIANT");
    other["detail"]["awsAccountId"] = json!("210987654321");
    let out = account.handle(&other, &["--format", "json"]);
    assert_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(doc["reason"], "other-account", "{doc:#}");
    assert!(account.has_key("bob", &account.key("bob")));
    let calls = account.moto.calls();
    assert_eq!(
        calls.keys().collect::<Vec<_>>(),
        ["GetCallerIdentity"],
        "{calls:?}"
    );
}

#[test]
fn a_malformed_event_is_an_error_and_does_nothing() {
    let account = Account::new("malformed");
    account.moto.reset_calls();
    for body in [
        "not json".to_string(),
        json!({"source": "aws.config", "detail-type": "Config Rules Compliance Change", "detail": {"configRuleName": RULE}}).to_string(),
    ] {
        let out = account.handle_stdin(&body, &[]);
        assert_code(&out, 1);
        let err = text(&out.stderr);
        assert!(err.contains("malformed"), "{err}");
    }
    assert_eq!(account.moto.total_calls(), 0);
    assert!(
        !account.dir.join(".engine").exists(),
        "no journal, no lock: nothing was started"
    );
}

#[test]
fn an_event_for_a_user_created_again_since_does_nothing() {
    let account = Account::new("recreated");
    let old_id = account.id("alice");
    account.moto.mutate(&[Mutation::RecreateUser {
        user: "alice".into(),
    }]);
    assert_ne!(account.id("alice"), old_id);
    let out = account.handle(
        &event(RULE, &old_id, "NON_COMPLIANT"),
        &["--format", "json"],
    );
    assert_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(doc["reason"], "user-gone", "{doc:#}");
    let writes: Vec<_> = account
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action.starts_with("Delete") || r.action.starts_with("Update"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

/// Created again between the id lookup (`ListUsers`) and the fresh reads:
/// `GetUser` answers another id, and the run refuses it.
#[test]
fn a_user_created_again_while_the_event_is_handled_is_refused() {
    let account = Account::new("race");
    let id = account.id("bob");
    account.moto.faults_with_latency(
        &Faults {
            actions: Some(vec!["GetCallerIdentity".into()]),
            ..Faults::default()
        },
        Duration::from_millis(1500),
    );
    let file = account.dir.join("event.json");
    std::fs::write(&file, event(RULE, &id, "NON_COMPLIANT").to_string()).expect("event");
    let file = file.display().to_string();
    let child = account
        .command(&["handle-event", "policies", &file])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run engine");
    // ListUsers answered: the name is known; the next call is held back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !account
        .moto
        .requests()
        .iter()
        .any(|r| r.action == "ListUsers" && r.status == 200)
    {
        assert!(Instant::now() < deadline, "no ListUsers");
        std::thread::sleep(Duration::from_millis(20));
    }
    account
        .moto
        .mutate(&[Mutation::RecreateUser { user: "bob".into() }]);
    let out = child.wait_with_output().expect("wait");
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(err.contains("deleted and created again"), "{err}");
    assert!(
        !account
            .moto
            .requests()
            .iter()
            .any(|r| r.action.starts_with("Delete")),
        "nothing is written"
    );
}

/// An event's run keeps every safety rail of a scheduled one: for an
/// exempt user, under a `mode = "report"` policy, and over the blast-radius
/// cap, nothing is written to IAM, and the output says why.
#[test]
fn an_events_run_writes_nothing_for_an_exempt_user_a_report_policy_or_over_the_cap() {
    let account = Account::new("rails");
    // carol: two stale keys, two actions.
    let carol = account.moto.seed(&[SeedUser::new("carol", days_ago(900))
        .key(days_ago(300), Some(days_ago(1)), true)
        .key(days_ago(200), Some(days_ago(1)), true)]);
    let carol_keys = carol[0].keys.clone();
    let alice = account.key("alice");
    // IAM as it is, but for the last use of the engine's own key (every call moves it).
    let iam = || {
        let mut state = account.moto.state();
        for u in &mut state.users {
            for k in &mut u.keys {
                if k.id == account.own_key {
                    k.last_used = None;
                }
            }
        }
        state
    };
    let with = |extra: &str| {
        POLICIES.replace(
            "max_key_age_days = 90\n",
            &format!("max_key_age_days = 90\n{extra}\n"),
        )
    };
    let cases = [
        (
            "exempt",
            with("exempt_users = [\"alice\"]"),
            "alice",
            0,
            vec![format!("= alice access_key_1 {alice} exempt: no action")],
        ),
        (
            "report",
            with("mode = \"report\""),
            "alice",
            0,
            vec![format!(
                "~ alice access_key_1 {alice} would delete access key (mode = report: never applied)"
            )],
        ),
        (
            "blast-radius",
            with("max_actions_per_run = 1"),
            "carol",
            1,
            vec![
                "error: blast-radius: the plan has 2 actions, more than max_actions_per_run = 1; nothing will be done for this policy".to_string(),
                format!(
                    "x carol access_key_1 {} nothing: policy failed (blast-radius)",
                    carol_keys[0]
                ),
            ],
        ),
    ];
    for (case, policies, user, code, why) in cases {
        std::fs::write(account.dir.join("policies/policies.toml"), &policies).expect("policies");
        let before = iam();
        account.moto.reset_calls();
        let ev = event(RULE, &account.id(user), "NON_COMPLIANT");

        let out = account.handle(&ev, &[]);
        assert_code(&out, code);
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let squeezed = squeeze(&shown);
        for line in &why {
            assert!(
                squeezed.contains(&squeeze(line)),
                "{case}: expected {line:?} in:\n{shown}"
            );
        }
        // Fresh reads of that user, and not one write.
        let requests = account.moto.requests();
        assert!(
            requests
                .iter()
                .any(|r| r.action == "GetUser" && r.user.as_deref() == Some(user)),
            "{case}: {requests:?}"
        );
        let writes: Vec<_> = requests
            .iter()
            .filter(|r| {
                ["DeleteAccessKey", "UpdateAccessKey", "DeleteLoginProfile"]
                    .contains(&r.action.as_str())
            })
            .collect();
        assert!(writes.is_empty(), "{case}: {writes:?}");
        assert_eq!(iam(), before, "{case}: IAM changed");

        // The JSON answer says the same.
        let out = account.handle(&ev, &["--format", "json"]);
        assert_code(&out, code);
        let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
        assert_eq!(doc["user"], user, "{case}: {doc:#}");
        assert_eq!(
            doc["results"].as_array().map(Vec::len).unwrap_or(0),
            0,
            "{case}: {doc:#}"
        );
        let plan = &doc["plan"];
        match case {
            "exempt" => {
                assert_eq!(doc["outcome"], "acted", "{doc:#}");
                assert_eq!(plan["findings"][0]["user"], "alice", "{doc:#}");
                assert_eq!(plan["findings"][0]["exempt"], true, "{doc:#}");
                assert_eq!(
                    (
                        &plan["actions"][0]["action"],
                        &plan["actions"][0]["applies"]
                    ),
                    (&json!("none"), &json!(false)),
                    "{doc:#}"
                );
                assert_eq!(
                    plan["actions"][0]["reason"], "user is exempt under this policy",
                    "{doc:#}"
                );
            }
            "report" => {
                assert_eq!(doc["outcome"], "acted", "{doc:#}");
                assert_eq!(plan["actions"][0]["key_id"], alice.as_str(), "{doc:#}");
                assert_eq!(plan["actions"][0]["applies"], false, "{doc:#}");
                assert_eq!(plan["summary"]["report_only"], 1, "{doc:#}");
            }
            _ => {
                assert_eq!(doc["outcome"], "failed", "{doc:#}");
                assert_eq!(plan["errors"][0]["kind"], "blast-radius", "{doc:#}");
                assert_eq!(plan["summary"]["failed_policies"], 1, "{doc:#}");
            }
        }
        assert_eq!(iam(), before, "{case}: IAM changed");
    }
    // Every key is still there, and each run is journaled.
    assert!(account.has_key("alice", &alice));
    for k in &carol_keys {
        assert!(account.has_key("carol", k));
    }
    let runs: Vec<Value> = account
        .history()
        .into_iter()
        .filter(|r| r["command"] == "event")
        .collect();
    assert_eq!(runs.len(), 6, "{runs:#?}");
    assert!(
        runs.iter()
            .all(|r| r["actions"].as_array().is_some_and(Vec::is_empty)),
        "{runs:#?}"
    );
}

/// Runs of spaces squeezed to one (the plan's columns vary with the names).
fn squeeze(s: &str) -> String {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
