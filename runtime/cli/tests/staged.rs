//! Staged removal end to end (`staged-key-removal`, contract 0.2.0): warned
//! before, deactivated at the threshold, deleted only after the grace period
//! since the engine deactivated it, as the journal recorded; through the
//! real binary against moto.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser};

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

struct Account {
    moto: Moto,
    own_key: String,
    dir: PathBuf,
}

impl Account {
    fn new(policies: &str, users: Vec<SeedUser>) -> Account {
        let moto = Moto::start();
        let mut all = users;
        all.push(SeedUser::new("engine-bot", days_ago(900)).key(days_ago(10), None, true));
        let seeded = moto.seed(&all);
        let own_key = seeded
            .iter()
            .find(|s| s.name == "engine-bot")
            .and_then(|s| s.keys.first().cloned())
            .expect("engine-bot has a key");
        let dir = std::env::temp_dir().join(format!(
            "engine-staged-{}-{}",
            std::process::id(),
            moto.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(dir.join("policies/p.toml"), policies).expect("policies");
        Account { moto, own_key, dir }
    }

    /// `engine ARGS` with only the environment that reaches this moto as
    /// the engine's own user.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine"));
        cmd.args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn engine(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run engine")
    }

    fn apply(&self) -> String {
        let out = self.engine(&[
            "apply",
            "policies",
            "--auto-approve",
            "--report-max-age",
            "0s",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{text}");
        text
    }

    /// `user`'s keys as (id, status).
    fn keys(&self, user: &str) -> Vec<(String, String)> {
        self.moto
            .state()
            .user(user)
            .map(|u| {
                u.keys
                    .iter()
                    .map(|k| (k.id.clone(), k.status.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

#[test]
fn warned_then_deactivated_then_deleted_after_the_grace_period() {
    // A grace of 0.00003 days (2.6 s): the stages happen within the test.
    let account = Account::new(
        "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 90\nwarn_before_days = 7\n\
         action = \"staged-key-removal\"\nfollow_deactivated = true\nparams = { grace_days = \"0.00003\" }\n",
        vec![
            SeedUser::new("soon", days_ago(500)).key(days_ago(85), Some(days_ago(1)), true),
            SeedUser::new("old", days_ago(500)).key(days_ago(120), Some(days_ago(1)), true),
            SeedUser::new("fresh", days_ago(500)).key(days_ago(10), Some(days_ago(1)), true),
        ],
    );
    let old_key = account.keys("old")[0].0.clone();
    let soon_key = account.keys("soon")[0].0.clone();

    // First run: the due key is deactivated, the upcoming one only warned.
    let first = account.apply();
    assert_eq!(
        account.keys("old"),
        vec![(old_key.clone(), "Inactive".to_string())]
    );
    assert_eq!(
        account.keys("soon"),
        vec![(soon_key.clone(), "Active".to_string())]
    );
    assert!(
        first.contains(&format!(
            "notify: The access key {soon_key} of soon was last rotated on"
        )),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "notify: The access key {old_key} of old was deactivated"
        )),
        "{first}"
    );
    assert!(first.contains("--status Active"), "{first}");

    // Right after, within the grace period: the deactivated key is seen
    // again (stage deactivated) and left alone.
    let out = account.engine(&[
        "check",
        "policies",
        "--report-max-age",
        "0s",
        "--format",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let f = plan["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["key_id"] == old_key.as_str())
        .cloned()
        .expect("the deactivated key is a finding again");
    assert_eq!(f["stage"], "deactivated", "{f}");
    assert!(f["deactivated_at"].is_string(), "{f}");
    assert_eq!(plan["summary"]["deactivated"], 1, "{plan}");

    // After the grace period: deleted, and only that key.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let second = account.apply();
    assert!(account.keys("old").is_empty(), "{second}");
    assert_eq!(account.keys("soon"), vec![(soon_key, "Active".to_string())]);
    assert_eq!(account.keys("fresh").len(), 1);
    assert!(
        second.contains(&format!(
            "notify: The access key {old_key} of old was deleted"
        )),
        "{second}"
    );
    // Each key got exactly the writes of its stages.
    let writes: Vec<(String, Option<String>)> = account
        .moto
        .requests()
        .into_iter()
        .filter(|r| matches!(r.action.as_str(), "UpdateAccessKey" | "DeleteAccessKey"))
        .map(|r| (r.action, r.key_id))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("UpdateAccessKey".to_string(), Some(old_key.clone())),
            ("DeleteAccessKey".to_string(), Some(old_key)),
        ]
    );
    // Nothing more to do.
    let third = account.apply();
    assert!(
        third.contains("Plan: 0 to delete, 0 to deactivate"),
        "{third}"
    );
    let _ = std::fs::remove_dir_all(account.dir());
}

// ---- messages to owners -------------------------------------------------

use engine_testkit::webhook::{Received, Receiver};

const SECRET: &str = "webhook-secret-for-tests";

fn notifying(receiver: &Receiver, owner_attempts: u32) -> String {
    format!(
        "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 90\nwarn_before_days = 7\n\
         action = \"staged-key-removal\"\nfollow_deactivated = true\nparams = {{ grace_days = \"0.00003\" }}\n\n\
         [notifications]\nowner_tags = [\"owner\"]\nowner_channel = \"owners\"\nfallback_channel = \"security\"\n\n\
         [notifications.channels.owners]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"ENGINE_TEST_WEBHOOK_SECRET\"\nattempts = {owner_attempts}\ntimeout_ms = 2000\n\n\
         [notifications.channels.security]\ntype = \"webhook\"\nurl = \"{}\"\nformat = \"slack\"\n",
        receiver.url("/owners"),
        receiver.url("/security")
    )
}

impl Account {
    fn apply_with(&self, env: &[(&str, &str)]) -> (Option<i32>, String) {
        self.apply_args(env, &[])
    }

    fn apply_args(&self, env: &[(&str, &str)], extra: &[&str]) -> (Option<i32>, String) {
        let mut cmd = self.command(&[
            "apply",
            "policies",
            "--auto-approve",
            "--report-max-age",
            "0s",
        ]);
        cmd.args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run engine");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

#[test]
fn each_owner_gets_each_message_once_signed_and_the_security_channel_a_summary() {
    let receiver = Receiver::start();
    let account = Account::new(
        &notifying(&receiver, 3),
        vec![
            SeedUser::new("soon", days_ago(500))
                .key(days_ago(85), Some(days_ago(1)), true)
                .tag("owner", "alice@example.com"),
            SeedUser::new("old", days_ago(500))
                .key(days_ago(120), Some(days_ago(1)), true)
                .tag("owner", "bob@example.com"),
            SeedUser::new("untagged", days_ago(500)).key(days_ago(200), Some(days_ago(1)), true),
        ],
    );
    let env = [("ENGINE_TEST_WEBHOOK_SECRET", SECRET)];
    let (old_key, soon_key) = (
        account.keys("old")[0].0.clone(),
        account.keys("soon")[0].0.clone(),
    );

    let (code, out) = account.apply_with(&env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("messages to owners: 3 sent, 0 failed"),
        "{out}"
    );
    // The owners' channel: the upcoming warning and the deactivation, each
    // to its tagged owner, signed.
    let owners = receiver.to("/owners");
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(
        owners.iter().all(|r| r.signed_with(SECRET)),
        "unsigned or badly signed: {owners:?}"
    );
    let about = |r: &Received| {
        let j = r.json();
        (
            j["recipient"].as_str().unwrap_or("").to_string(),
            j["about"]["subject"].as_str().unwrap_or("").to_string(),
            j["about"]["stage"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut got: Vec<_> = owners.iter().map(about).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "alice@example.com".to_string(),
                soon_key.clone(),
                "upcoming".to_string()
            ),
            (
                "bob@example.com".to_string(),
                old_key.clone(),
                "done:deactivate-access-key".to_string()
            ),
        ]
    );
    assert!(owners.iter().any(|r| {
        r.json()["text"]
            .as_str()
            .unwrap_or("")
            .contains("--status Active")
    }));
    // The security channel (Slack format): the untagged user's message and
    // one summary of the run.
    let security = receiver.to("/security");
    assert_eq!(security.len(), 2, "{security:?}");
    assert!(
        security
            .iter()
            .all(|r| r.json()["text"].is_string() && r.json().get("about").is_none())
    );
    assert!(security.iter().any(|r| {
        r.json()["text"]
            .as_str()
            .unwrap_or("")
            .contains("of untagged was deactivated")
    }));
    assert!(security.iter().any(|r| {
        r.json()["text"]
            .as_str()
            .unwrap_or("")
            .contains("2 done, 0 failed, 0 skipped")
    }));

    // Again at once: nothing new happened and nothing is sent twice.
    let (code, out) = account.apply_with(&env);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(receiver.received().len(), 4, "{out}");

    // After the grace period: the deletions, each owner told once.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, out) = account.apply_with(&env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        account.keys("old").is_empty() && account.keys("untagged").is_empty(),
        "{out}"
    );
    let owners = receiver.to("/owners");
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert_eq!(
        about(&owners[2]),
        (
            "bob@example.com".to_string(),
            old_key,
            "done:delete-access-key".to_string()
        )
    );
    assert_eq!(receiver.to("/security").len(), 4);
    let _ = std::fs::remove_dir_all(account.dir());
}

#[test]
fn a_failing_webhook_is_retried_recorded_failed_and_never_stops_the_remediation() {
    let receiver = Receiver::start();
    receiver.answer("/owners", 500);
    let account = Account::new(
        &notifying(&receiver, 2),
        vec![
            SeedUser::new("old", days_ago(500))
                .key(days_ago(120), Some(days_ago(1)), true)
                .tag("owner", "bob@example.com"),
        ],
    );
    let old_key = account.keys("old")[0].0.clone();
    let (code, out) = account.apply_with(&[("ENGINE_TEST_WEBHOOK_SECRET", SECRET)]);
    // The key is deactivated, once, whatever the channel does.
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        account.keys("old"),
        vec![(old_key.clone(), "Inactive".to_string())]
    );
    let writes = account
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action == "UpdateAccessKey")
        .count();
    assert_eq!(writes, 1);
    // Tried twice (its attempts), then recorded failed.
    assert_eq!(receiver.to("/owners").len(), 2, "{out}");
    assert!(
        out.contains("messages to owners: 0 sent, 1 failed"),
        "{out}"
    );
    // The journal says so: the message is recorded failed after 2 attempts.
    let journal = engine_journal::Journal::open(&account.dir().join(".engine")).expect("journal");
    let run = journal.recent_runs(1).expect("runs")[0].id;
    let notices = journal.notices_of(run).expect("notices");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        (
            notices[0].status.as_str(),
            notices[0].attempts,
            notices[0].stage.as_str()
        ),
        ("failed", 2, "done:deactivate-access-key")
    );
    assert_eq!(notices[0].recipient.as_deref(), Some("bob@example.com"));
    drop(journal);
    // `engine history` shows it, with what the channel answered.
    let out = account.engine(&["history", "--limit", "1", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let messages = runs[0]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{runs:#}");
    let m = &messages[0];
    assert_eq!(
        (&m["status"], &m["attempts"], &m["stage"], &m["channel"]),
        (
            &serde_json::json!("failed"),
            &serde_json::json!(2),
            &serde_json::json!("done:deactivate-access-key"),
            &serde_json::json!("owners")
        ),
        "{m:#}"
    );
    assert_eq!(m["user"], "old", "{m:#}");
    assert_eq!(m["subject"], old_key.as_str(), "{m:#}");
    assert!(
        m["detail"].as_str().is_some_and(|d| d.contains("500")),
        "{m:#}"
    );
    let out = account.engine(&["history", "--limit", "1"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains(", 1 message\n"), "{human}");
    assert!(
        human.contains("  message failed") && human.contains(&old_key),
        "{human}"
    );
    assert!(human.contains("via owners to bob@example.com: "), "{human}");
    let _ = std::fs::remove_dir_all(account.dir());
}

#[test]
fn owners_are_emailed_with_ses_and_the_rest_published_to_sns() {
    let account = Account::new(
        "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"staged-key-removal\"\n",
        vec![
            SeedUser::new("old", days_ago(500))
                .key(days_ago(120), Some(days_ago(1)), true)
                .tag("email", "bob@example.com"),
            SeedUser::new("untagged", days_ago(500)).key(days_ago(200), Some(days_ago(1)), true),
        ],
    );
    let topic = account
        .moto
        .outbox_setup("us-east-1", "engine-notices", "engine@example.com");
    std::fs::write(
        account.dir().join("policies/notify.toml"),
        format!(
            "[notifications]\nowner_channel = \"mail\"\nfallback_channel = \"ops\"\nsummary_channels = []\n\n\
             [notifications.channels.mail]\ntype = \"ses\"\nregion = \"us-east-1\"\nfrom = \"engine@example.com\"\n\n\
             [notifications.channels.ops]\ntype = \"sns\"\ntopic_arn = \"{topic}\"\n"
        ),
    )
    .expect("notifications");
    let (code, out) = account.apply_with(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("messages to owners: 2 sent, 0 failed"),
        "{out}"
    );
    let outbox = account.moto.outbox("us-east-1");
    let ses = outbox["ses"].as_array().cloned().unwrap_or_default();
    assert_eq!(ses.len(), 1, "{outbox}");
    assert_eq!(ses[0]["source"], "engine@example.com");
    assert!(
        ses[0]["destinations"]
            .to_string()
            .contains("bob@example.com"),
        "{outbox}"
    );
    assert!(
        ses[0]["body"]
            .as_str()
            .unwrap_or("")
            .contains("of old was deactivated"),
        "{outbox}"
    );
    let sns = outbox["sns"].as_array().cloned().unwrap_or_default();
    assert_eq!(sns.len(), 1, "{outbox}");
    assert_eq!(sns[0]["topic"], topic.as_str());
    assert!(
        sns[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("of untagged was deactivated"),
        "{outbox}"
    );
    let _ = std::fs::remove_dir_all(account.dir());
}

#[test]
fn a_change_that_fails_sends_the_engines_own_message_instead() {
    let receiver = Receiver::start();
    let account = Account::new(
        &notifying(&receiver, 1),
        vec![
            SeedUser::new("old", days_ago(500))
                .key(days_ago(120), Some(days_ago(1)), true)
                .tag("owner", "bob@example.com"),
        ],
    );
    let old_key = account.keys("old")[0].0.clone();
    account.moto.faults(&engine_testkit::Faults {
        throttle: 1.0,
        actions: Some(vec!["UpdateAccessKey".to_string()]),
        ..Default::default()
    });
    let (code, out) = account.apply_args(
        &[("ENGINE_TEST_WEBHOOK_SECRET", SECRET)],
        &["--max-attempts", "1"],
    );
    // The run failed (exit 1), the key is as it was, the owner is told.
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        account.keys("old"),
        vec![(old_key.clone(), "Active".to_string())]
    );
    let owners = receiver.to("/owners");
    assert_eq!(owners.len(), 1, "{out}");
    let j = owners[0].json();
    assert_eq!(j["about"]["stage"], "failed:deactivate-access-key");
    let text = j["text"].as_str().unwrap_or("");
    assert!(
        text.contains(&format!(
            "tried to deactivate the access key {old_key} of old"
        )) && text.contains("try again"),
        "{text}"
    );
    // The summary says it failed.
    assert!(receiver.to("/security").iter().any(|r| {
        r.json()["text"]
            .as_str()
            .unwrap_or("")
            .contains("0 done, 1 failed")
    }));
    let _ = std::fs::remove_dir_all(account.dir());
}
