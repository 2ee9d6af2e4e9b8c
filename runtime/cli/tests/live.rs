//! End to end against moto's IAM server: the real `engine` binary, the real
//! AWS SDK over HTTP, the real plugins. Each test has its own moto server.
//!
//! Run through `scripts/test`, which installs moto into `.venv`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Faults, Moto, SeedUser, State};
use serde_json::Value;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

/// The safety rails of apply, scenario by scenario.
#[path = "live/safety.rs"]
mod safety;

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

/// What the policies should do to a user's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// Everything recent: untouched.
    Fresh,
    /// Key older than 180 days, used yesterday: cis-1.4 only -> deleted.
    OldKeyInUse,
    /// Key older than 180 days, never used: both rules -> deleted (not also deactivated).
    OldKeyNeverUsed,
    /// Key 120 days old, last used 100 days ago: cis-1.3 only -> deactivated.
    UnusedKey,
    /// Key 50 days old, never used: neither rule.
    YoungUnusedKey,
    /// Inactive, very old key: not a finding.
    InactiveOldKey,
    /// Console password last used 150 days ago -> removed.
    StalePassword,
    /// Password never used, set 150 days ago -> removed.
    NeverUsedPassword,
    /// Password never used, set 10 days ago -> kept.
    NewPassword,
    /// Slot 1 young and used, slot 2 old (300 days): only slot 2 deleted.
    SlotTwoOlder,
    /// Two old keys: both deleted.
    TwoOldKeys,
    /// Stale password and an old key: both remediated.
    Everything,
    /// Exempt (break-glass-*): stale password and old key, untouched.
    Exempt,
}

const CASES: [Case; 13] = [
    Case::Fresh,
    Case::OldKeyInUse,
    Case::OldKeyNeverUsed,
    Case::UnusedKey,
    Case::YoungUnusedKey,
    Case::InactiveOldKey,
    Case::StalePassword,
    Case::NeverUsedPassword,
    Case::NewPassword,
    Case::SlotTwoOlder,
    Case::TwoOldKeys,
    Case::Everything,
    Case::Exempt,
];

fn seed_user(name: &str, case: Case) -> SeedUser {
    let u = SeedUser::new(name, days_ago(800));
    match case {
        Case::Fresh => {
            u.password(days_ago(30), Some(days_ago(1)))
                .key(days_ago(10), Some(days_ago(1)), true)
        }
        Case::OldKeyInUse => u.key(days_ago(200), Some(days_ago(1)), true),
        Case::OldKeyNeverUsed => u.key(days_ago(200), None, true),
        Case::UnusedKey => u.key(days_ago(120), Some(days_ago(100)), true),
        Case::YoungUnusedKey => u.key(days_ago(50), None, true),
        Case::InactiveOldKey => u.key(days_ago(500), Some(days_ago(400)), false),
        Case::StalePassword => u.password(days_ago(300), Some(days_ago(150))),
        Case::NeverUsedPassword => u.password(days_ago(150), None),
        Case::NewPassword => u.password(days_ago(10), None),
        Case::SlotTwoOlder => {
            u.key(days_ago(10), Some(days_ago(1)), true)
                .key(days_ago(300), Some(days_ago(2)), true)
        }
        Case::TwoOldKeys => u.key(days_ago(400), Some(days_ago(1)), true).key(
            days_ago(300),
            Some(days_ago(250)),
            true,
        ),
        Case::Everything => u.password(days_ago(400), Some(days_ago(200))).key(
            days_ago(250),
            Some(days_ago(200)),
            true,
        ),
        Case::Exempt => {
            u.password(days_ago(400), Some(days_ago(200)))
                .key(days_ago(250), None, true)
        }
    }
}

/// A seeded account: `n` users cycling through every case, plus the user
/// whose (old) key the engine itself runs with.
struct Account {
    moto: Moto,
    cases: BTreeMap<String, Case>,
    /// The access key id the engine runs with.
    own_key: String,
    dir: PathBuf,
}

const OWN_USER: &str = "engine-bot";

impl Account {
    fn new(n: usize, policies: &str) -> Account {
        Account::with_own(
            n,
            policies,
            SeedUser::new(OWN_USER, days_ago(900)).key(days_ago(400), None, true),
        )
    }

    /// An account whose engine user (`own`, named OWN_USER) runs with its first key.
    fn with_own(n: usize, policies: &str, own: SeedUser) -> Account {
        let moto = Moto::start();
        let mut users = Vec::new();
        let mut cases = BTreeMap::new();
        for i in 0..n {
            let case = CASES[i % CASES.len()];
            let name = match case {
                Case::Exempt => format!("break-glass-{i}"),
                _ => format!("user-{i:04}"),
            };
            users.push(seed_user(&name, case));
            cases.insert(name, case);
        }
        // The engine's own key is old: a cis-1.4 finding that must never be acted on.
        users.push(own);
        let seeded = moto.seed(&users);
        let own_key = seeded
            .iter()
            .find(|s| s.name == OWN_USER)
            .and_then(|s| s.keys.first().cloned())
            .expect("engine-bot has a key");
        let dir = tempdir("account");
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(dir.join("policies/policies.toml"), policies).expect("write policies");
        Account {
            moto,
            cases,
            own_key,
            dir,
        }
    }

    fn engine(&self, args: &[&str]) -> Output {
        self.command(ENGINE)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    /// Run the engine with other credentials (an assumed role's).
    fn engine_as(&self, role: &engine_testkit::AssumedRole, args: &[&str]) -> Output {
        self.command(ENGINE)
            .env("AWS_ACCESS_KEY_ID", &role.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &role.secret_access_key)
            .env("AWS_SESSION_TOKEN", &role.session_token)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    /// A command in the account's directory, with only the environment the
    /// engine needs to reach this moto as the engine's own user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// The account's IAM state. The engine's own key is used to sign every
    /// call, so moto moves its last-used date; that is not a change the
    /// engine made, so it is left out.
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

    /// Run the engine with a pseudo-terminal as stdin/stdout (`script`), typing `input`.
    fn engine_on_terminal(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let command = std::iter::once(ENGINE)
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = self
            .command("script")
            .args(["-qec", &command, "/dev/null"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run engine under script(1)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("type the answer");
        child.wait_with_output().expect("engine under script(1)")
    }

    /// The number of keys the current policies would delete (from a JSON check).
    fn planned_deletes(&self) -> usize {
        let out = self.engine(&["check", &self.policies(), "--format", "json"]);
        let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
        doc["summary"]["delete_access_key"].as_u64().expect("count") as usize
    }

    fn set_policies(&self, toml: &str) {
        std::fs::write(self.dir.join("policies/policies.toml"), toml).expect("write policies");
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

fn tempdir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "engine-live-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const POLICIES: &str = r#"
[policy.rotate]
rule = "cis-1.4"
max_key_age_days = 180
exempt_users = ["break-glass-*"]
max_actions_per_run = 1000

[policy.unused]
rule = "cis-1.3"
max_unused_days = 90
action = "deactivate-unused-credentials"
exempt_users = ["break-glass-*"]
max_actions_per_run = 1000
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_contains(stream: &[u8], needle: &str) {
    let text = text(stream);
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The state the account must be in after applying POLICIES to `before`.
fn expected_after(before: &State, cases: &BTreeMap<String, Case>, own_key: &str) -> State {
    let mut after = before.clone();
    for user in &mut after.users {
        let Some(case) = cases.get(&user.name) else {
            assert_eq!(user.name, OWN_USER);
            assert!(user.keys.iter().any(|k| k.id == own_key));
            continue;
        };
        match case {
            Case::OldKeyInUse | Case::OldKeyNeverUsed | Case::TwoOldKeys => user.keys.clear(),
            Case::UnusedKey => user.keys[0].status = "Inactive".into(),
            Case::StalePassword | Case::NeverUsedPassword => user.login_profile = false,
            Case::SlotTwoOlder => {
                user.keys.retain(|k| k.created > days_ago(100));
            }
            Case::Everything => {
                user.login_profile = false;
                user.keys.clear();
            }
            Case::Fresh
            | Case::YoungUnusedKey
            | Case::InactiveOldKey
            | Case::NewPassword
            | Case::Exempt => {}
        }
    }
    after
}

/// Assert two states are equal, showing only the users that differ.
#[track_caller]
fn assert_state(actual: &State, expected: &State, what: &str) {
    if actual == expected {
        return;
    }
    let mut diff = String::new();
    for e in &expected.users {
        match actual.user(&e.name) {
            Some(a) if a == e => {}
            Some(a) => diff.push_str(&format!("\n  actual   {a:?}\n  expected {e:?}")),
            None => diff.push_str(&format!("\n  missing  {e:?}")),
        }
    }
    for a in &actual.users {
        if expected.user(&a.name).is_none() {
            diff.push_str(&format!("\n  extra    {a:?}"));
        }
    }
    panic!("{what}: the account differs from what was expected:{diff}");
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[test]
fn check_counts_calls_and_apply_does_exactly_the_plan() {
    let account = Account::new(208, POLICIES);
    let before = account.state();
    account.moto.reset_calls();

    // check: a dry run. Exit 2 (findings), nothing changes.
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--format",
        "json",
        "--out",
        "plan.json",
    ]);
    assert_code(&out, 2);
    let doc = json(&out);
    assert_state(&account.state(), &before, "check changed the account");

    // API calls: identity + report calls + one ListAccessKeys per user with a key finding.
    let calls = account.moto.calls();
    let findings = doc["findings"].as_array().expect("findings");
    let mut key_users: Vec<&str> = findings
        .iter()
        .filter(|f| f["credential"] != "password")
        .filter_map(|f| f["user"].as_str())
        .collect();
    key_users.sort();
    key_users.dedup();
    let expected_key_users = account
        .cases
        .iter()
        .filter(|(_, c)| {
            matches!(
                c,
                Case::OldKeyInUse
                    | Case::OldKeyNeverUsed
                    | Case::UnusedKey
                    | Case::SlotTwoOlder
                    | Case::TwoOldKeys
                    | Case::Everything
                    | Case::Exempt
            )
        })
        .count()
        + 1; // engine-bot
    assert_eq!(key_users.len(), expected_key_users);
    assert_eq!(
        calls.get("ListAccessKeys").copied(),
        Some(key_users.len() as u64),
        "{calls:?}"
    );
    assert_eq!(
        calls.get("GetCallerIdentity").copied(),
        Some(1),
        "{calls:?}"
    );
    // The report: one Get that finds none, Generate + polls (moto answers
    // STARTED once, then COMPLETE), one Get that downloads it.
    assert_eq!(
        calls.get("GenerateCredentialReport").copied(),
        Some(2),
        "{calls:?}"
    );
    assert_eq!(
        calls.get("GetCredentialReport").copied(),
        Some(2),
        "{calls:?}"
    );
    let other: Vec<_> = calls
        .keys()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "ListAccessKeys"
                    | "GetCallerIdentity"
                    | "GenerateCredentialReport"
                    | "GetCredentialReport"
            )
        })
        .collect();
    assert!(other.is_empty(), "unexpected calls during check: {calls:?}");

    // Every key finding has its key id; the engine's own key is protected, never an action.
    assert!(
        findings
            .iter()
            .filter(|f| f["credential"] != "password")
            .all(|f| f["key_id"].is_string())
    );
    assert_eq!(doc["source"]["own_key_id"], account.own_key.as_str());
    let own: Vec<&Value> = findings
        .iter()
        .filter(|f| f["key_id"] == account.own_key.as_str())
        .collect();
    // The key signs every call, so moto records it as just used: a cis-1.4 finding only.
    assert_eq!(own.len(), 1, "the cis-1.4 finding on the engine's key");
    assert!(own.iter().all(|f| f["protected"] == "own-key"));
    // Plugins may answer `none` for them; nothing that changes anything is planned.
    let actions = doc["actions"].as_array().expect("actions");
    let changing: Vec<&Value> = actions.iter().filter(|a| a["action"] != "none").collect();
    assert!(!changing.is_empty());
    assert!(
        changing
            .iter()
            .all(|a| a["key_id"] != account.own_key.as_str())
    );
    assert!(
        changing
            .iter()
            .all(|a| !a["user"].as_str().unwrap_or("").starts_with("break-glass-"))
    );
    assert!(
        actions
            .iter()
            .filter(|a| a["action"] == "none")
            .all(|a| a["applies"] == false)
    );

    // apply: exactly the expected changes, nothing else.
    account.moto.reset_calls();
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--auto-approve",
        "--format",
        "json",
    ]);
    assert_code(&out, 0);
    let report = json(&out);
    let after = account.state();
    assert_state(
        &after,
        &expected_after(&before, &account.cases, &account.own_key),
        "after apply",
    );
    let results = report["results"].as_array().expect("results");
    assert!(
        results.iter().all(|r| r["outcome"] == "done"),
        "{results:?}"
    );
    let writes: u64 = ["DeleteAccessKey", "UpdateAccessKey", "DeleteLoginProfile"]
        .iter()
        .map(|op| account.moto.calls().get(*op).copied().unwrap_or(0))
        .sum();
    assert_eq!(writes, results.len() as u64, "one call per action");
    // And the re-checks before them, nothing more: a ListAccessKeys per key
    // action (on top of the snapshot's one per user), GetAccessKeyLastUsed per
    // cis-1.3 key action, GetUser and GetLoginProfile per password action.
    let calls = account.moto.calls();
    let call = |op: &str| calls.get(op).copied().unwrap_or(0);
    let count = |pred: &dyn Fn(&Value) -> bool| results.iter().filter(|r| pred(r)).count() as u64;
    let key_actions = count(&|r| r["credential"] != "password");
    let passwords = count(&|r| r["credential"] == "password");
    let unused_keys = count(&|r| r["credential"] != "password" && r["policy"] == "unused");
    assert_eq!(
        call("ListAccessKeys"),
        expected_key_users as u64 + key_actions
    );
    assert_eq!(call("GetAccessKeyLastUsed"), unused_keys);
    assert_eq!(call("GetUser"), passwords);
    assert_eq!(call("GetLoginProfile"), passwords);
    println!(
        "apply: {} writes, {} re-check reads, {} calls in all",
        writes,
        key_actions + unused_keys + 2 * passwords,
        calls.values().sum::<u64>()
    );

    // The journal has every action with its result.
    let out = account.engine(&["history", "--format", "json", "--limit", "1"]);
    assert_code(&out, 0);
    let history = json(&out);
    let run = &history[0];
    assert_eq!(run["command"], "apply");
    assert_eq!(run["status"], "ok");
    let journaled = run["actions"].as_array().expect("actions");
    assert_eq!(journaled.len(), results.len());
    assert!(journaled.iter().all(|a| a["outcome"] == "done"));

    // A second apply changes nothing.
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, "No changes to apply");
    assert_state(&account.state(), &after, "after a second apply");

    // The plan saved before the first apply is now stale: everything in it is skipped.
    let out = account.engine(&["apply", "plan.json", "--auto-approve", "--format", "json"]);
    assert_code(&out, 0);
    let stale = json(&out);
    assert!(
        stale["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["outcome"] == "skipped"),
        "{stale}"
    );
    assert_state(&account.state(), &after, "after a second apply");
}

#[test]
fn a_stale_saved_plan_touches_nothing_it_should_not() {
    let policies = "[policy.rotate]\nrule = \"cis-1.4\"\n\n[policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n";
    let account = Account::new(0, policies);
    let seeded = account.moto.seed(&[
        SeedUser::new("gone", days_ago(900)).key(days_ago(400), Some(days_ago(1)), true),
        SeedUser::new("recreated", days_ago(900)).key(days_ago(400), Some(days_ago(1)), true),
        SeedUser::new("stays", days_ago(900)).key(days_ago(400), Some(days_ago(1)), true),
        SeedUser::new("pw-gone", days_ago(900)).password(days_ago(300), Some(days_ago(200))),
    ]);
    let out = account.engine(&["check", &account.policies(), "--out", "plan.json"]);
    assert_code(&out, 2);

    // Between check and apply someone else deletes one key, rotates another
    // (delete + create) and removes a console password.
    let key = |name: &str| {
        seeded
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.keys.first().cloned())
            .expect("seeded key")
    };
    let iam = Iam::new(&account.moto);
    iam.delete_key("gone", &key("gone"));
    iam.delete_key("recreated", &key("recreated"));
    let new_key = iam.create_key("recreated");
    iam.delete_login_profile("pw-gone");
    let before = account.state();

    let out = account.engine(&["apply", "plan.json", "--auto-approve", "--format", "json"]);
    assert_code(&out, 0);
    let results = json(&out)["results"].as_array().cloned().expect("results");
    let outcome = |user: &str| {
        results
            .iter()
            .filter(|r| r["user"] == user)
            .map(|r| r["outcome"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(outcome("gone"), ["skipped"]);
    assert_eq!(outcome("recreated"), ["skipped"]);
    assert_eq!(outcome("pw-gone"), ["skipped"]);
    assert_eq!(outcome("stays"), ["done"]);
    assert_eq!(outcome(OWN_USER), Vec::<String>::new());

    // Only "stays" lost its key; the recreated key and the engine's own key are untouched.
    let mut expected = before.clone();
    for u in &mut expected.users {
        if u.name == "stays" {
            u.keys.clear();
        }
    }
    let after = account.state();
    assert_state(&after, &expected, "after the stale plan");
    assert!(
        after
            .user("recreated")
            .and_then(|u| u.key(&new_key))
            .is_some()
    );
    assert!(
        after
            .user(OWN_USER)
            .and_then(|u| u.key(&account.own_key))
            .is_some()
    );
}

#[test]
fn safety_nothing_changes_over_the_cap_or_without_approval() {
    let capped = "[policy.rotate]\nrule = \"cis-1.4\"\nmax_actions_per_run = 3\n";
    let account = Account::new(52, capped);
    let before = account.state();

    // Over the blast-radius cap: the policy's plan is refused whole, exit 1.
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 1);
    assert_contains(&out.stdout, "max_actions_per_run = 3");
    assert_state(&account.state(), &before, "nothing may change");

    // Without a terminal and without --auto-approve: refused, nothing done.
    account
        .set_policies("[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"break-glass-*\"]\n");
    let out = account.engine(&["apply", &account.policies()]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "--auto-approve");
    assert_state(&account.state(), &before, "nothing may change");

    // On a terminal it asks; anything but "yes" cancels, "yes" applies.
    let single = account.planned_deletes();
    let out = account.engine_on_terminal(&["apply", &account.policies()], "no\n");
    assert_code(&out, 1);
    assert_contains(&out.stdout, "Only 'yes' will be accepted");
    assert_contains(&out.stdout, "apply cancelled");
    assert_state(&account.state(), &before, "nothing may change");
    let out = account.engine_on_terminal(&["apply", &account.policies()], "yes\n");
    assert_code(&out, 0);
    let after = account.state();
    assert_ne!(after, before);
    assert_eq!(
        after.users.iter().map(|u| u.keys.len()).sum::<usize>() + single,
        before.users.iter().map(|u| u.keys.len()).sum::<usize>()
    );
    let before = after;

    // mode = "report" never acts, even under apply.
    account.set_policies("[policy.rotate]\nrule = \"cis-1.4\"\nmode = \"report\"\n");
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 0);
    assert_state(&account.state(), &before, "nothing may change");

    // A crash mid-apply leaves an intent without a result; the next run reports it.
    engine_testkit::crashed_run(&account.dir.join(".engine"), "user-0001", "AKIACRASHED");
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 0);
    assert!(
        text(&out.stderr).contains("AKIACRASHED")
            && text(&out.stderr).contains("recorded no result"),
        "{}",
        text(&out.stderr)
    );
    // Reported once, then recorded as unknown: the next run does not repeat it.
    let out = account.engine(&["history"]);
    assert_contains(&out.stdout, "unknown");
    assert_contains(&out.stdout, "(interrupted)");
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 0);
    assert!(
        !text(&out.stderr).contains("AKIACRASHED"),
        "{}",
        text(&out.stderr)
    );
    assert_state(&account.state(), &before, "nothing may change");

    // A plan made from a report file has no key ids: it cannot be applied.
    let report = account.dir.join("report.csv");
    std::fs::copy(
        engine_testkit::workspace_root().join("examples/credential-report.csv"),
        &report,
    )
    .expect("copy");
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--report",
        "report.csv",
        "--out",
        "file-plan.json",
    ]);
    assert_code(&out, 2);
    let out = account.engine(&["apply", "file-plan.json", "--auto-approve"]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "has no key ids");
    assert_state(&account.state(), &before, "nothing may change");
}

#[test]
fn ambiguous_key_slots_are_left_alone() {
    let policies = "[policy.rotate]\nrule = \"cis-1.4\"\n";
    let account = Account::new(0, policies);
    // Two keys created in the same second: the report's slots cannot be told apart.
    let same = days_ago(300);
    account.moto.seed(&[
        SeedUser::new("twins", days_ago(900))
            .key(same, Some(days_ago(1)), true)
            .key(same, Some(days_ago(2)), true),
        SeedUser::new("single", days_ago(900)).key(days_ago(300), Some(days_ago(1)), true),
    ]);
    let before = account.state();
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--auto-approve",
        "--format",
        "json",
    ]);
    assert_code(&out, 0);
    assert_contains(
        &out.stderr,
        "both access key slots of the report were created at",
    );
    let report = json(&out);
    let refused = report["plan"]["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r["user"] == "twins" && r["reason"] == "unresolved-key")
    );
    let mut expected = before.clone();
    for u in &mut expected.users {
        if u.name == "single" {
            u.keys.clear();
        }
    }
    assert_state(
        &account.state(),
        &expected,
        "only the unambiguous key is deleted",
    );
}

#[test]
fn apply_survives_throttling_and_dropped_connections() {
    let account = Account::new(104, POLICIES);
    let before = account.state();
    account.moto.faults(&Faults {
        throttle: 0.2,
        drop: 0.1,
        seed: 7,
        actions: None,
        max: None,
        after_drop: Vec::new(),
    });
    // Three calls in ten fail: with the default 8 attempts one call of the
    // run fails all of them about once in a hundred runs (0.3^8 per call),
    // and the engine then rightly reports a failed action. 14 attempts make
    // that 0.3^14 (5e-8): the test is about surviving faults, not about
    // where the attempts run out.
    let out = account.engine(&[
        "apply",
        &account.policies(),
        "--auto-approve",
        "--max-attempts",
        "14",
        "--format",
        "json",
    ]);
    let injected = account.moto.injected();
    account.moto.faults(&Faults::default());
    assert_code(&out, 0);
    assert!(
        injected.throttled > 0 && injected.dropped > 0,
        "{injected:?}"
    );
    assert_state(
        &account.state(),
        &expected_after(&before, &account.cases, &account.own_key),
        "after apply with faults",
    );

    // The journal is honest: every action has a result, and a write whose
    // response was dropped after it happened is recorded as done on retry.
    let report = json(&out);
    let results = report["results"].as_array().expect("results");
    assert!(
        results
            .iter()
            .all(|r| r["outcome"] == "done" || r["outcome"] == "done-on-retry"),
        "{results:?}"
    );
    let out = account.engine(&["history", "--format", "json", "--limit", "1"]);
    let history = json(&out);
    let journaled = history[0]["actions"].as_array().expect("actions");
    // Intents are journaled in the order the writes start, not plan order.
    let rows = |v: &[Value]| {
        let mut rows: Vec<String> = v
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {}",
                    r["user"], r["action"], r["credential"], r["key_id"], r["outcome"]
                )
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(rows(journaled), rows(results));
}

/// A second actor on the account, through the real SDK.
struct Iam {
    client: aws_sdk_iam::Client,
    rt: tokio::runtime::Runtime,
}

impl Iam {
    fn new(moto: &Moto) -> Iam {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(moto.endpoint())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_iam::config::Credentials::new(
                    "AKIAOTHERACTOR",
                    "secret",
                    None,
                    None,
                    "test",
                ))
                .load(),
        );
        Iam {
            client: aws_sdk_iam::Client::new(&config),
            rt,
        }
    }

    fn delete_key(&self, user: &str, key: &str) {
        self.rt
            .block_on(
                self.client
                    .delete_access_key()
                    .user_name(user)
                    .access_key_id(key)
                    .send(),
            )
            .expect("delete key");
    }

    fn create_key(&self, user: &str) -> String {
        let out = self
            .rt
            .block_on(self.client.create_access_key().user_name(user).send())
            .expect("create key");
        out.access_key()
            .map(|k| k.access_key_id().to_string())
            .expect("key")
    }

    fn delete_login_profile(&self, user: &str) {
        self.rt
            .block_on(self.client.delete_login_profile().user_name(user).send())
            .expect("delete login profile");
    }
}
