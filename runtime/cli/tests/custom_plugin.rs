//! An external plugin end to end through the binary: the example plugin in
//! examples/deactivate-then-delete, loaded from a path pinned by sha256.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn setup(name: &str, policy_extra: &str, sha_override: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-custom-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let wasm = Path::new(engine_wasm::BUILT_PLUGIN_DIR).join("deactivate_then_delete.wasm");
    let bytes =
        std::fs::read(&wasm).expect("the example plugin is built by engine-wasm's build script");
    std::fs::write(dir.join("plugin.wasm"), &bytes).expect("copy");
    let sha = sha_override.map(str::to_string).unwrap_or_else(|| {
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    std::fs::write(
        dir.join("policies.toml"),
        format!(
            "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"deactivate-then-delete\"\nexempt_users = [\"break-glass-*\"]\n{policy_extra}\n\n\
             [plugin.deactivate-then-delete]\nsource = \"plugin.wasm\"\nsha256 = \"{sha}\"\nallow = [\"deactivate-access-key\", \"delete-access-key\"]\n"
        ),
    )
    .expect("policy");
    dir
}

fn check(dir: &Path) -> Output {
    check_with(dir, &[])
}

/// `engine check` on the example report, with extra arguments; the plugin
/// cache is in the test's directory unless an argument names another.
fn check_with(dir: &Path, extra: &[&str]) -> Output {
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/credential-report.csv"
    );
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["check"])
        .arg(dir)
        .args([
            "--report",
            report,
            "--now",
            "2026-11-28T00:00:00Z",
            "--format",
            "json",
        ])
        .args(extra)
        .env("ENGINE_PLUGIN_CACHE", dir.join("cache"))
        .output()
        .expect("run engine")
}

fn planned(doc: &Value) -> Vec<(String, String)> {
    doc["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] != "none")
        .map(|a| {
            (
                a["user"].as_str().unwrap_or("").to_string(),
                a["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_example_plugin_deactivates_first_and_deletes_old_keys() {
    // delete_after_factor = 4: keys older than 360 days are deleted, younger ones deactivated.
    let dir = setup("factor", "params = { delete_after_factor = \"4\" }", None);
    let out = check(&dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        planned(&doc),
        [
            ("bob".to_string(), "delete-access-key".to_string()), // 530 days
            ("carol".to_string(), "deactivate-access-key".to_string()), // 321 days
            ("dave".to_string(), "delete-access-key".to_string()), // 726 days
            ("ci,deploy=bot".to_string(), "delete-access-key".to_string()), // 391 days
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_sha256_refuses_to_load() {
    let dir = setup("sha", "", Some(&"0".repeat(64)));
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["errors"][0]["kind"], "load");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("sha256"),
        "{doc}"
    );
    assert!(planned(&doc).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_parameter_fails_only_its_policy() {
    let dir = setup("param", "params = { delete_after_factor = \"soon\" }", None);
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["errors"][0]["kind"], "plugin-error");
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("delete_after_factor"),
        "{doc}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unchanged_plugin_is_compiled_by_the_first_run_only() {
    let dir = setup("cache", "", None);
    let origin = |out: &Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("plugin loaded") && l.contains("deactivate-then-delete"))
            .unwrap_or_else(|| panic!("no load line: {stderr}"))
            .to_string();
        (
            line,
            serde_json::from_slice::<Value>(&out.stdout).expect("json"),
        )
    };
    let verbose = ["-vv"];
    let (first, plan1) = origin(&check_with(&dir, &verbose));
    assert!(first.contains("origin=\"compiled\""), "{first}");
    let (second, plan2) = origin(&check_with(&dir, &verbose));
    assert!(second.contains("origin=\"cached\""), "{second}");
    assert_eq!(planned(&plan1), planned(&plan2));
    // The builtins never need the cache; `off` turns it off.
    let (third, _) = origin(&check_with(&dir, &["-vv", "--plugin-cache", "off"]));
    assert!(third.contains("origin=\"compiled\""), "{third}");
    let _ = std::fs::remove_dir_all(&dir);
}
