//! Every way the engine could act on a credential that is in use, re-created,
//! ambiguous or not in the plan, tried against moto with the real binary.
//!
//! Most scenarios freeze the credential report (moto serves the earlier
//! snapshot, as AWS serves one generated hours ago) and then change the
//! account behind the engine's back.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use engine_testkit::{Faults, Mutation, SeedUser};
use serde_json::Value;

use super::{Account, OWN_USER, assert_code, assert_contains, days_ago, json};

const ROTATE: &str = "[policy.rotate]\nrule = \"cis-1.4\"\n";
const UNUSED: &str =
    "[policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n";

fn apply(account: &Account, extra: &[&str]) -> (std::process::Output, Value) {
    let policies = account.policies();
    let mut args = vec![
        "apply",
        policies.as_str(),
        "--auto-approve",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = account.engine(&args);
    let v = json(&out);
    (out, v)
}

/// The result of the one action on `user` (panics unless exactly one).
fn result_of<'a>(report: &'a Value, user: &str) -> &'a Value {
    let all: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["user"] == user)
        .collect();
    assert_eq!(all.len(), 1, "one result for {user}: {report:#}");
    all[0]
}

fn key_status(account: &Account, user: &str, key: &str) -> Option<String> {
    account
        .state()
        .user(user)
        .and_then(|u| u.key(key))
        .map(|k| k.status.clone())
}

fn seeded_key(seeded: &[engine_testkit::SeededUser], user: &str, n: usize) -> String {
    seeded
        .iter()
        .find(|s| s.name == user)
        .and_then(|s| s.keys.get(n).cloned())
        .expect("seeded key")
}

/// The `protected` mark of the finding on key `key` in an apply report.
fn protection<'a>(report: &'a Value, key: &str) -> &'a Value {
    let found = report["plan"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["key_id"] == key)
        .unwrap_or_else(|| panic!("no finding on {key}: {report:#}"));
    &found["protected"]
}

fn stamp(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// Item 1: A credential used again after the report is not "unused".
#[test]
fn cis13_a_credential_used_since_the_report_is_left_alone() {
    let account = Account::new(0, UNUSED);
    let now = Utc::now();
    let almost = now - TimeDelta::days(90) - TimeDelta::hours(1);
    let seeded = account.moto.seed(&[
        SeedUser::new("sleeper", days_ago(400)).key(days_ago(300), Some(almost), true),
        SeedUser::new("signer", days_ago(400)).password(days_ago(300), Some(almost)),
        SeedUser::new("idle", days_ago(400)).key(days_ago(300), Some(days_ago(120)), true),
    ]);
    let generated = (now - TimeDelta::hours(2))
        .with_nanosecond(0)
        .expect("whole second");
    account.moto.freeze_report(Some(generated));
    // Used an hour after the report (here: a minute ago).
    let sleeper = seeded_key(&seeded, "sleeper", 0);
    account.moto.mutate(&[
        Mutation::TouchKey {
            key: sleeper.clone(),
            last_used: now - TimeDelta::minutes(1),
        },
        Mutation::TouchPassword {
            user: "signer".into(),
            last_used: now - TimeDelta::minutes(1),
        },
    ]);

    // The plan still shows them (the report says so), and says how old the report is.
    let out = account.engine(&["check", &account.policies()]);
    assert_code(&out, 2);
    assert_contains(&out.stdout, "credential report generated at");

    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    assert_eq!(
        stamp(&report["plan"]["source"]["report_generated_at"]),
        generated
    );
    for user in ["sleeper", "signer"] {
        let r = result_of(&report, user);
        assert_eq!(r["outcome"], "skipped", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("used since the report, at ")),
            "{r}"
        );
    }
    assert_eq!(result_of(&report, "idle")["outcome"], "done");
    assert_eq!(
        key_status(&account, "sleeper", &sleeper).as_deref(),
        Some("Active")
    );
    assert!(
        account
            .state()
            .user("signer")
            .expect("signer")
            .login_profile
    );
    assert_eq!(
        key_status(&account, "idle", &seeded_key(&seeded, "idle", 0)).as_deref(),
        Some("Inactive")
    );

    // The journal says so too, and when the report was generated.
    let history = json(&account.engine(&["history", "--format", "json", "--limit", "1"]));
    let run = &history[0];
    assert!(
        run["source"]
            .as_str()
            .is_some_and(|s| s.contains("report generated at")),
        "{run:#}"
    );
    let skipped: Vec<&Value> = run["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["outcome"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{run:#}");
    assert!(skipped.iter().all(|a| {
        a["detail"]
            .as_str()
            .is_some_and(|d| d.contains("used since the report"))
    }));
}

/// Item 2: A user deleted and re-created, or a password set again, is not the
/// password the report saw.
#[test]
fn a_recreated_user_or_a_new_password_is_not_removed() {
    let account = Account::new(0, UNUSED);
    account.moto.seed(&[
        SeedUser::new("phoenix", days_ago(400)).password(days_ago(300), Some(days_ago(200))),
        SeedUser::new("reset", days_ago(400)).password(days_ago(300), Some(days_ago(200))),
        SeedUser::new("stale", days_ago(400)).password(days_ago(300), Some(days_ago(200))),
    ]);
    account.moto.freeze_report(None);
    account.moto.mutate(&[
        Mutation::RecreateUser {
            user: "phoenix".into(),
        },
        Mutation::RecreateLoginProfile {
            user: "reset".into(),
        },
    ]);
    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    let phoenix = result_of(&report, "phoenix");
    assert_eq!(phoenix["outcome"], "skipped");
    assert_contains(
        phoenix["detail"].as_str().unwrap_or_default().as_bytes(),
        "deleted and re-created since",
    );
    let reset = result_of(&report, "reset");
    assert_eq!(reset["outcome"], "skipped");
    assert_contains(
        reset["detail"].as_str().unwrap_or_default().as_bytes(),
        "it is a new password",
    );
    assert_eq!(result_of(&report, "stale")["outcome"], "done");
    let state = account.state();
    assert!(state.user("phoenix").expect("phoenix").login_profile);
    assert!(state.user("reset").expect("reset").login_profile);
    assert!(!state.user("stale").expect("stale").login_profile);
}

/// Item 3: Twin slots: the surviving twin is never taken for either slot.
#[test]
fn twin_slots_stay_ambiguous_after_one_twin_is_deleted() {
    let account = Account::new(0, ROTATE);
    let same = days_ago(300);
    let seeded = account.moto.seed(&[SeedUser::new("twins", days_ago(900))
        .key(same, Some(days_ago(1)), true)
        .key(same, Some(days_ago(2)), true)]);
    account.moto.freeze_report(None);
    let (survivor, gone) = (
        seeded_key(&seeded, "twins", 0),
        seeded_key(&seeded, "twins", 1),
    );
    account.moto.mutate(&[Mutation::DeleteKey {
        user: "twins".into(),
        key: gone,
    }]);
    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    assert_contains(
        &out.stderr,
        "both access key slots of the report were created at",
    );
    assert_eq!(
        report["results"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    let refused = report["plan"]["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r["reason"] == "unresolved-key"));
    assert_eq!(
        key_status(&account, "twins", &survivor).as_deref(),
        Some("Active")
    );
}

/// Item 4: `--now` against a live account is a what-if: shown, never saved.
#[test]
fn now_against_a_live_account_is_a_what_if() {
    let account = Account::new(0, ROTATE);
    account
        .moto
        .seed(&[SeedUser::new("young", days_ago(900)).key(days_ago(10), Some(days_ago(1)), true)]);
    let plan = account.dir.join("what-if.json");
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--now",
        "2030-01-01T00:00:00Z",
        "--out",
        &plan.display().to_string(),
    ]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "what-if");
    assert!(!plan.exists(), "a what-if plan must not be saved");
    let out = account.engine(&[
        "check",
        &account.policies(),
        "--now",
        "2030-01-01T00:00:00Z",
    ]);
    assert_code(&out, 2);
    assert_contains(&out.stdout, "what-if");
    assert_contains(&out.stdout, "young");
}

/// Seal a plan document as the engine does, with the state directory's key:
/// what someone with write access to the state directory could forge.
fn forge(account: &Account, mut doc: Value) -> Value {
    use hmac::{Hmac, Mac};
    let key = std::fs::read(account.dir.join(".engine/plan.key")).expect("plan key");
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("mac");
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(&serde_json::to_vec(&doc).expect("json"));
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    doc["mac"] = Value::String(hex);
    doc
}

/// Item 5: A saved plan is a record, not an order.
#[test]
fn a_saved_plan_is_sealed_fresh_current_and_rederived() {
    let policies = "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"vip\"]\n";
    let account = Account::new(0, policies);
    let seeded = account.moto.seed(&[
        SeedUser::new("old", days_ago(900)).key(days_ago(300), Some(days_ago(1)), true),
        SeedUser::new("vip", days_ago(900)).key(days_ago(300), Some(days_ago(1)), true),
    ]);
    let before = account.state();
    let path = account.dir.join("plan.json");
    let plan_arg = path.display().to_string();
    let out = account.engine(&["check", &account.policies(), "--out", &plan_arg]);
    assert_code(&out, 2);
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).expect("plan")).expect("json");
    assert!(doc["mac"].is_string(), "a saved plan is sealed");
    let vip = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .position(|f| f["user"] == "vip")
        .expect("vip finding");
    let old = doc["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["user"] == "old")
        .cloned()
        .expect("old's action");
    // Edited: vip no longer exempt, with an action of its own.
    let mut edited = doc.clone();
    edited["findings"][vip]["exempt"] = Value::Bool(false);
    let mut on_vip = old.clone();
    on_vip["user"] = "vip".into();
    on_vip["arn"] = doc["findings"][vip]["arn"].clone();
    on_vip["key_id"] = doc["findings"][vip]["key_id"].clone();
    on_vip["finding"] = vip.into();
    // The plugin answered `none` for the exempt finding: make it a delete.
    if let Some(actions) = edited["actions"].as_array_mut() {
        actions.retain(|a| a["finding"] != vip);
        actions.push(on_vip);
    }
    let write = |name: &str, v: &Value| {
        let p = account.dir.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(v).expect("json")).expect("write");
        p.display().to_string()
    };
    let apply_plan = |p: &str, extra: &[&str]| {
        let mut args = vec!["apply", p, "--auto-approve"];
        args.extend_from_slice(extra);
        account.engine(&args)
    };

    let out = apply_plan(&write("edited.json", &edited), &[]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "seal does not match");
    assert_eq!(account.state(), before, "an edited plan changes nothing");

    // Sealed again with the state's own key, the edit still cannot name
    // anything outside its findings...
    let mut stranger = doc.clone();
    stranger["actions"][0]["user"] = "someone-else".into();
    let out = apply_plan(&write("stranger.json", &forge(&account, stranger)), &[]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "does not match its finding");
    assert_eq!(account.state(), before);

    // ...too old a plan is refused...
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = apply_plan(&plan_arg, &["--plan-max-age", "2s"]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "--plan-max-age");
    assert_eq!(account.state(), before);

    // ...so is one whose policies changed since...
    account.set_policies(&format!("{policies}# edited\n"));
    let out = apply_plan(&plan_arg, &[]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "changed since it was made");
    assert_eq!(account.state(), before);
    account.set_policies(policies);

    // ...and a forged exemption does nothing: the host checks run again
    // against the current policies, so vip stays exempt and only old's key goes.
    let forged = write("forged.json", &forge(&account, edited));
    let out = apply_plan(&forged, &["--format", "json"]);
    assert_code(&out, 0);
    let report = json(&out);
    assert_eq!(result_of(&report, "old")["outcome"], "done");
    assert!(
        report["plan"]["refused"]
            .as_array()
            .expect("refused")
            .iter()
            .any(|r| r["user"] == "vip" && r["reason"] == "exempt"),
        "{report:#}"
    );
    assert_eq!(
        key_status(&account, "vip", &seeded_key(&seeded, "vip", 0)).as_deref(),
        Some("Active")
    );
    assert_eq!(
        key_status(&account, "old", &seeded_key(&seeded, "old", 0)),
        None
    );
    // A saved plan is applied once: the same plan again is refused.
    let after = account.state();
    let out = apply_plan(&forged, &[]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "already applied");
    assert_eq!(account.state(), after);
}

/// Item 6: A re-check that cannot be made fails the run; it is never a skip.
#[test]
fn a_recheck_error_is_a_failure() {
    let account = Account::new(0, ROTATE);
    let seeded =
        account
            .moto
            .seed(&[SeedUser::new("old", days_ago(900)).key(days_ago(300), None, true)]);
    let plan = account.dir.join("plan.json").display().to_string();
    assert_code(
        &account.engine(&["check", &account.policies(), "--out", &plan]),
        2,
    );
    account.moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["ListAccessKeys".into()]),
        ..Faults::default()
    });
    let out = account.engine(&[
        "apply",
        &plan,
        "--auto-approve",
        "--max-attempts",
        "1",
        "--format",
        "json",
    ]);
    assert_code(&out, 1);
    let r = result_of(&json(&out), "old").clone();
    assert_eq!(r["outcome"], "failed", "{r}");
    assert_contains(
        r["detail"].as_str().unwrap_or_default().as_bytes(),
        "cannot re-check",
    );
    account.moto.faults(&Faults::default());
    assert_eq!(
        key_status(&account, "old", &seeded_key(&seeded, "old", 0)).as_deref(),
        Some("Active")
    );
}

/// Item 7: When the delete that superseded a deactivation fails, the key is still
/// deactivated.
#[test]
fn a_superseded_deactivation_runs_when_the_delete_fails() {
    let account = Account::new(0, &format!("{ROTATE}{UNUSED}"));
    let seeded = account
        .moto
        .seed(&[SeedUser::new("both", days_ago(900)).key(days_ago(300), None, true)]);
    account.moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["DeleteAccessKey".into()]),
        ..Faults::default()
    });
    let (out, report) = apply(&account, &["--max-attempts", "1"]);
    assert_code(&out, 1);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{results:#?}");
    assert!(
        results
            .iter()
            .any(|r| r["action"] == "delete-access-key" && r["outcome"] == "failed")
    );
    assert!(
        results
            .iter()
            .any(|r| r["action"] == "deactivate-access-key" && r["outcome"] == "done")
    );
    account.moto.faults(&Faults::default());
    assert_eq!(
        key_status(&account, "both", &seeded_key(&seeded, "both", 0)).as_deref(),
        Some("Inactive")
    );
}

/// Item 8a: Every key of the IAM user the engine runs as is its own.
#[test]
fn every_key_of_the_engines_user_is_protected() {
    let own = SeedUser::new(OWN_USER, days_ago(900))
        .key(days_ago(400), None, true)
        .key(days_ago(300), None, true);
    let account = Account::with_own(0, ROTATE, own);
    let other = account
        .moto
        .state()
        .user(OWN_USER)
        .and_then(|u| u.keys.iter().find(|k| k.id != account.own_key).cloned())
        .expect("the engine user's second key");
    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    assert_eq!(
        report["results"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    assert_eq!(
        protection(&report, &other.id),
        "own-key",
        "the second key of the engine's user"
    );
    assert_eq!(
        key_status(&account, OWN_USER, &other.id).as_deref(),
        Some("Active")
    );
}

/// Item 8b: Under an assumed role, say so, and protect the keys a policy lists.
#[test]
fn under_an_assumed_role_listed_keys_are_protected() {
    let account = Account::new(0, ROTATE);
    let seeded = account.moto.seed(&[
        SeedUser::new("source", days_ago(900)).key(days_ago(300), Some(days_ago(1)), true),
        SeedUser::new("old", days_ago(900)).key(days_ago(300), Some(days_ago(1)), true),
    ]);
    let source_key = seeded_key(&seeded, "source", 0);
    account.set_policies(&format!(
        "{ROTATE}exempt_users = [\"{OWN_USER}\"]\nprotect_access_keys = [\"{source_key}\"]\n"
    ));
    let role = account
        .moto
        .assume_role("arn:aws:iam::123456789012:role/engine");
    let policies = account.policies();
    let out = account.engine_as(
        &role,
        &["apply", &policies, "--auto-approve", "--format", "json"],
    );
    assert_code(&out, 0);
    assert_contains(&out.stderr, "assumed-role");
    assert_contains(&out.stderr, "not as an IAM user");
    let report = json(&out);
    assert_eq!(protection(&report, &source_key), "declared");
    assert_eq!(result_of(&report, "old")["outcome"], "done");
    assert_eq!(
        key_status(&account, "source", &source_key).as_deref(),
        Some("Active")
    );
}

/// Item 9: A report that does not fit the local clock is refused.
#[test]
fn a_report_that_does_not_fit_the_clock_is_refused() {
    let account = Account::new(0, ROTATE);
    account
        .moto
        .seed(&[SeedUser::new("old", days_ago(900)).key(days_ago(300), None, true)]);
    account
        .moto
        .freeze_report(Some(Utc::now() + TimeDelta::minutes(10)));
    let before = account.state();
    let out = account.engine(&["check", &account.policies()]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "ahead of this machine's clock");
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 1);
    assert_eq!(account.state(), before);

    // Older than AWS ever serves a report: the local clock is ahead, and
    // every credential would look older than it is.
    account
        .moto
        .freeze_report(Some(Utc::now() - TimeDelta::hours(5)));
    let out = account.engine(&["apply", &account.policies(), "--auto-approve"]);
    assert_code(&out, 1);
    assert_contains(&out.stderr, "is the clock ahead?");
    assert_eq!(account.state(), before);
}

/// Item 10: A delete whose answer was lost and whose retry finds the key gone was
/// done by the engine, and is journaled so.
#[test]
fn a_retried_write_answered_no_such_entity_is_done_on_retry() {
    let account = Account::new(0, ROTATE);
    let seeded =
        account
            .moto
            .seed(&[SeedUser::new("old", days_ago(900)).key(days_ago(300), None, true)]);
    account.moto.faults(&Faults {
        drop: 1.0,
        max: Some(1),
        actions: Some(vec!["DeleteAccessKey".into()]),
        ..Faults::default()
    });
    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    assert_eq!(account.moto.injected().dropped, 1);
    assert_eq!(result_of(&report, "old")["outcome"], "done-on-retry");
    assert_eq!(
        key_status(&account, "old", &seeded_key(&seeded, "old", 0)),
        None
    );
    let history = json(&account.engine(&["history", "--format", "json", "--limit", "1"]));
    assert_eq!(
        history[0]["actions"][0]["outcome"], "done-on-retry",
        "{history:#}"
    );
}

/// Item 10, for passwords: a console password has no id, so a delete whose
/// answer was lost is not sent blindly again: a password set meanwhile is new.
#[test]
fn a_password_set_while_its_delete_went_unanswered_is_left_alone() {
    let account = Account::new(0, UNUSED);
    account.moto.seed(&[
        SeedUser::new("stale", days_ago(400)).password(days_ago(300), Some(days_ago(200)))
    ]);
    account.moto.faults(&Faults {
        drop: 1.0,
        max: Some(1),
        actions: Some(vec!["DeleteLoginProfile".into()]),
        after_drop: vec![Mutation::CreateLoginProfile {
            user: "stale".into(),
        }],
        ..Faults::default()
    });
    let (out, report) = apply(&account, &[]);
    assert_code(&out, 0);
    assert_eq!(account.moto.injected().dropped, 1);
    let r = result_of(&report, "stale");
    assert_eq!(r["outcome"], "skipped", "{r}");
    assert_contains(
        r["detail"].as_str().unwrap_or_default().as_bytes(),
        "a new console password was set at",
    );
    assert!(account.state().user("stale").expect("stale").login_profile);
}
