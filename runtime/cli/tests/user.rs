//! `check --user` and `apply --user`: one user from fresh IAM reads, against
//! moto, with the real binary. No credential report is generated or read;
//! key ids come straight from `ListAccessKeys`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser, SeededUser, State};
use serde_json::Value;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

const OWN_USER: &str = "engine-bot";

const POLICIES: &str = r#"
[policy.rotate]
rule = "cis-1.4"
max_key_age_days = 180
max_actions_per_run = 1000

[policy.unused]
rule = "cis-1.3"
max_unused_days = 90
action = "deactivate-unused-credentials"
max_actions_per_run = 1000
"#;

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

/// A moto account with the engine's own user (an old key it runs with).
struct Account {
    moto: Moto,
    seeded: Vec<SeededUser>,
    own_key: String,
    dir: PathBuf,
}

impl Account {
    fn new(users: Vec<SeedUser>) -> Account {
        Account::with_own(
            users,
            SeedUser::new(OWN_USER, days_ago(900)).key(days_ago(400), None, true),
        )
    }

    /// The engine runs as `own` (named OWN_USER) with its first key.
    fn with_own(users: Vec<SeedUser>, own: SeedUser) -> Account {
        let moto = Moto::start();
        let mut users = users;
        users.push(own);
        let seeded = moto.seed(&users);
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(dir.join("policies/policies.toml"), POLICIES).expect("write policies");
        let mut account = Account {
            moto,
            seeded,
            own_key: String::new(),
            dir,
        };
        account.own_key = account.keys(OWN_USER)[0].clone();
        account
    }

    /// The seeded key ids of `user`, in seeding order.
    fn keys(&self, user: &str) -> Vec<String> {
        self.seeded
            .iter()
            .find(|s| s.name == user)
            .map(|s| s.keys.clone())
            .unwrap_or_else(|| panic!("{user} was not seeded"))
    }

    fn engine(&self, args: &[&str]) -> Output {
        Command::new(ENGINE)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    /// The IAM state, without the last use of the engine's own key (every
    /// call moves it).
    fn state(&self) -> State {
        let mut state = self.moto.state();
        for u in &mut state.users {
            for k in &mut u.keys {
                if k.id == self.own_key {
                    k.last_used = None;
                }
            }
        }
        state
    }

    fn policies(&self) -> String {
        self.dir.join("policies").display().to_string()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-user-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
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

#[track_caller]
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// `(policy, credential, key_id)` of every finding, sorted.
fn findings(doc: &Value) -> Vec<(String, String, Option<String>)> {
    let mut rows: Vec<_> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["policy"].as_str().unwrap_or_default().to_string(),
                f["credential"].as_str().unwrap_or_default().to_string(),
                f["key_id"].as_str().map(str::to_string),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(policy: &str, credential: &str, key: Option<&str>) -> (String, String, Option<String>) {
    (
        policy.to_string(),
        credential.to_string(),
        key.map(str::to_string),
    )
}

/// Alice: an old key never used and a stale password. Bob: as stale, and must be ignored.
fn stale(name: &str) -> SeedUser {
    SeedUser::new(name, days_ago(800))
        .password(days_ago(300), Some(days_ago(150)))
        .key(days_ago(200), None, true)
        .key(days_ago(10), Some(days_ago(1)), true)
}

#[test]
fn check_user_reads_only_that_user() {
    let account = Account::new(vec![stale("alice"), stale("bob")]);
    let before = account.state();
    account.moto.reset_calls();

    let out = account.engine(&[
        "check",
        &account.policies(),
        "--user",
        "alice",
        "--format",
        "json",
    ]);
    assert_code(&out, 2);
    let doc = json(&out);
    let old = account.keys("alice")[0].clone();
    assert_eq!(
        findings(&doc),
        vec![
            row("rotate", "access_key_1", Some(&old)),
            row("unused", "access_key_1", Some(&old)),
            row("unused", "password", None),
        ],
        "{doc:#}"
    );
    assert!(
        doc["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["user"] == "alice")
    );
    assert_eq!(doc["source"]["user"], "alice");
    assert_eq!(doc["source"]["account"], engine_testkit::ACCOUNT_ID);
    assert_eq!(doc["source"]["report_generated_at"], Value::Null);
    // The old key is deleted (not also deactivated), the password removed.
    assert_eq!(
        doc["summary"]["delete_access_key"], 1,
        "{:#}",
        doc["summary"]
    );
    assert_eq!(doc["summary"]["delete_login_profile"], 1);

    // Only the per-user reads: no credential report, nothing about bob.
    let calls = account.moto.calls();
    let expected: std::collections::BTreeMap<String, u64> = [
        ("GetCallerIdentity", 1),
        ("GetUser", 1),
        ("GetLoginProfile", 1),
        ("ListAccessKeys", 1),
        ("GetAccessKeyLastUsed", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(calls, expected);
    for r in account.moto.requests() {
        assert!(
            r.user.as_deref().is_none_or(|u| u == "alice"),
            "a call about another user: {r:?}"
        );
    }
    assert_eq!(account.state(), before, "check changed the account");

    // The human plan says the same.
    let out = account.engine(&["check", &account.policies(), "--user", "alice"]);
    assert_code(&out, 2);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&old), "{stdout}");
    assert!(!stdout.contains("bob"), "{stdout}");
    assert!(stdout.contains("(fresh reads of user alice)"), "{stdout}");
}

#[test]
fn twin_keys_created_in_the_same_second_get_their_own_ids() {
    let created = days_ago(200);
    let twins = SeedUser::new("twins", days_ago(800))
        .key(created, Some(days_ago(1)), true)
        .key(created, None, true);
    let account = Account::new(vec![twins]);
    let [used, unused] = <[String; 2]>::try_from(account.keys("twins")).expect("two keys");

    // From the credential report, the twins cannot be told apart.
    let out = account.engine(&["check", &account.policies(), "--format", "json"]);
    assert_code(&out, 2);
    let doc = json(&out);
    assert!(
        doc["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["user"] == "twins")
            .all(|f| f["key_id"].is_null()),
        "{doc:#}"
    );

    // From fresh reads, each has its id: cis-1.4 flags both, cis-1.3 only
    // the one never used.
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--user",
        "twins",
        "--format",
        "json",
    ]);
    assert_code(&out, 2);
    let doc = json(&out);
    let rows = findings(&doc);
    let rotated: std::collections::BTreeSet<Option<String>> = rows
        .iter()
        .filter(|(p, _, _)| p == "rotate")
        .map(|(_, _, k)| k.clone())
        .collect();
    assert_eq!(
        rotated,
        [Some(used.clone()), Some(unused.clone())].into(),
        "{doc:#}"
    );
    let unused_rows: Vec<_> = rows.iter().filter(|(p, _, _)| p == "unused").collect();
    assert_eq!(unused_rows.len(), 1, "{doc:#}");
    assert_eq!(unused_rows[0].2.as_deref(), Some(unused.as_str()));
    // The slot of each finding holds the key it names, in both policies.
    for f in doc["findings"].as_array().expect("findings") {
        if f["policy"] == "unused" {
            let slot = &f["credential"];
            let same = doc["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .find(|g| g["policy"] == "rotate" && g["credential"] == *slot)
                .expect("the rotate finding of the same slot");
            assert_eq!(same["key_id"], f["key_id"], "{doc:#}");
        }
    }

    // And both are deleted by apply --user.
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--user",
        "twins",
        "--auto-approve",
        "--format",
        "json",
    ]);
    assert_code(&out, 0);
    let state = account.state();
    assert_eq!(
        state.user("twins").map(|u| u.keys.len()),
        Some(0),
        "{state:?}"
    );
}

#[test]
fn apply_user_changes_only_that_user_and_is_journaled() {
    let account = Account::new(vec![stale("alice"), stale("bob")]);
    let before = account.state();
    let [old, young] = <[String; 2]>::try_from(account.keys("alice")).expect("two keys");
    account.moto.reset_calls();

    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--user",
        "alice",
        "--auto-approve",
        "--format",
        "json",
    ]);
    assert_code(&out, 0);
    let report = json(&out);
    let mut results: Vec<(String, String)> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                format!("{} {}", r["action"], r["key_id"]),
                r["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        vec![
            (
                format!("\"delete-access-key\" \"{old}\""),
                "done".to_string()
            ),
            (
                "\"delete-login-profile\" null".to_string(),
                "done".to_string()
            ),
        ],
        "{report:#}"
    );
    let calls = account.moto.calls();
    assert!(!calls.contains_key("GenerateCredentialReport"), "{calls:?}");
    assert!(!calls.contains_key("GetCredentialReport"), "{calls:?}");

    // Alice lost the old key and the password; bob and the engine are as they were.
    let mut expected = before.clone();
    for u in &mut expected.users {
        if u.name == "alice" {
            u.login_profile = false;
            u.keys.retain(|k| k.id == young);
        }
    }
    let after = account.state();
    assert_eq!(after, expected);

    // Journaled like any apply, with where the facts came from.
    let out = account.engine(&["history", "--format", "json", "--limit", "1"]);
    assert_code(&out, 0);
    let history = json(&out);
    let run = &history[0];
    assert_eq!(run["command"], "apply");
    assert_eq!(run["status"], "ok");
    assert!(
        run["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("(fresh reads of user alice)")),
        "{run:#}"
    );
    let actions = run["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{run:#}");
    assert!(
        actions
            .iter()
            .all(|a| a["user"] == "alice" && a["outcome"] == "done")
    );

    // A second apply for alice finds nothing to do.
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--user",
        "alice",
        "--auto-approve",
    ]);
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains("No changes to apply"));
    assert_eq!(account.state(), after);
}

#[test]
fn an_unknown_user_is_an_error() {
    let account = Account::new(vec![stale("alice")]);
    let before = account.state();
    for args in [
        vec!["check", "--user", "nobody"],
        vec!["apply", "--user", "nobody", "--auto-approve"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_string).collect();
        args.insert(1, account.policies());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = account.engine(&args);
        assert_code(&out, 1);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("there is no IAM user named \"nobody\" in account 123456789012"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    assert_eq!(account.state(), before);

    // --user does not go with a report file, nor with a saved plan.
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--user",
        "alice",
        "--report",
        "report.csv",
    ]);
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("cannot be used with"));
    std::fs::write(account.dir.join("plan.json"), "{}").expect("write");
    let out = account.engine(&["apply", "plan.json", "--user", "alice", "--auto-approve"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("--user cannot be used with a saved plan"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_engines_own_keys_are_protected() {
    // The key it runs with, and another old, never used key of its user.
    let own = SeedUser::new(OWN_USER, days_ago(900))
        .key(days_ago(400), None, true)
        .key(days_ago(300), None, true);
    let account = Account::with_own(vec![], own);
    let other = account.keys(OWN_USER)[1].clone();
    let before = account.state();
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--user",
        OWN_USER,
        "--format",
        "json",
    ]);
    assert_code(&out, 2);
    let doc = json(&out);
    // cis-1.4 flags both keys, cis-1.3 the one never used (every call uses
    // the key in use); each with its id, each protected.
    assert_eq!(
        findings(&doc),
        vec![
            row("rotate", "access_key_1", Some(&account.own_key)),
            row("rotate", "access_key_2", Some(&other)),
            row("unused", "access_key_2", Some(&other)),
        ],
        "{doc:#}"
    );
    for f in doc["findings"].as_array().expect("findings") {
        assert_eq!(f["protected"], "own-key", "{f:#}");
    }
    assert_eq!(doc["source"]["own_key_id"], account.own_key.as_str());
    assert_eq!(doc["summary"]["changes"], 0, "{:#}", doc["summary"]);

    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--user",
        OWN_USER,
        "--auto-approve",
    ]);
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains("No changes to apply"));
    assert_eq!(account.state(), before);
}
