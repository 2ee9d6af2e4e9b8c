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

    fn engine(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
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
