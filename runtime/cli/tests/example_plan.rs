//! The plan for the shipped example, read from `check --format json`: the
//! actions match the findings exactly.

use std::process::Command;

use serde_json::Value;

fn check_json(dir: &str) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(root)
        .args([
            "check",
            dir,
            "--report",
            "examples/credential-report.csv",
            "--now",
            "2026-11-28T00:00:00Z",
            "--format",
            "json",
        ])
        .output()
        .expect("run engine");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn actions_match_the_findings_exactly() {
    let doc = check_json("policies");
    let findings = doc["findings"].as_array().expect("findings");
    let actions = doc["actions"].as_array().expect("actions");
    assert!(doc["refused"].as_array().expect("refused").is_empty());
    assert!(doc["errors"].as_array().expect("errors").is_empty());

    let mut expected = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        let remediable = f["exempt"] == false && f["protected"].is_null();
        let key = f["credential"] != "password";
        let kind = match (f["policy"].as_str(), key, remediable) {
            (_, _, false) => "none",
            (Some("rotate-access-keys"), true, true) => "delete-access-key",
            (Some("disable-unused-credentials"), true, true) => "deactivate-access-key",
            (Some("disable-unused-credentials"), false, true) => "delete-login-profile",
            other => panic!("unexpected finding {other:?}: {f}"),
        };
        expected.push((i, kind));
    }
    let mut actual: Vec<(usize, &str)> = actions
        .iter()
        .map(|a| {
            let i = a["finding"].as_u64().expect("index") as usize;
            let f = &findings[i];
            assert_eq!(a["user"], f["user"]);
            assert_eq!(a["credential"], f["credential"]);
            assert_eq!(a["policy"], f["policy"]);
            (i, a["action"].as_str().expect("kind"))
        })
        .collect();
    actual.sort();
    assert_eq!(actual, expected);

    // Root and exempt users get nothing that changes anything.
    for a in actions.iter().filter(|a| a["action"] != "none") {
        assert_ne!(a["user"], "<root_account>");
        assert!(!a["user"].as_str().unwrap_or("").starts_with("break-glass-"));
        assert_eq!(a["applies"], a["superseded"] == false);
    }
    // One delete per cis-1.4 key finding that is remediable.
    let deletes = actions
        .iter()
        .filter(|a| a["action"] == "delete-access-key")
        .count();
    assert_eq!(deletes, 4);
    assert_eq!(doc["summary"]["delete_access_key"], 4);
    assert_eq!(doc["summary"]["deactivate_access_key"], 1);
    assert_eq!(doc["summary"]["delete_login_profile"], 4);
    assert_eq!(doc["summary"]["superseded"], 3);
}

#[test]
fn refusals_are_listed_with_reasons() {
    let doc = check_json("runtime/cli/tests/data/refusals");
    let refused = doc["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 4);
    assert!(
        refused
            .iter()
            .all(|r| r["reason"] == "not-granted" && r["action"] == "delete-login-profile")
    );
    assert!(
        doc["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .all(|a| a["action"] != "delete-login-profile")
    );
}
