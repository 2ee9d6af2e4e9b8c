//! `engine plugin new | inspect | test` through the binary, on real components.
//!
//! A project made by `plugin new` is built and tried by the guide's
//! walkthroughs (`guide.rs`); the Python and JavaScript examples by
//! `plugin_langs.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn engine(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("ENGINE_PLUGIN_CACHE", "off")
        .output()
        .expect("run engine")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-plugin-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn built(file: &str) -> PathBuf {
    Path::new(engine_wasm::BUILT_PLUGIN_DIR).join(format!("{file}.wasm"))
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).expect("read"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn report() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/credential-report.csv"
    )
    .to_string()
}

#[test]
fn inspect_shows_contract_imports_and_a_snippet_that_a_policy_loads() {
    let dir = scratch("inspect-ok");
    let wasm = dir.join("deactivate_then_delete.wasm");
    std::fs::copy(built("deactivate_then_delete"), &wasm).expect("copy");
    let out = engine(&["plugin", "inspect", "deactivate_then_delete.wasm"], &dir);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let sha = sha256(&wasm);
    for want in [
        format!("sha256     {sha}"),
        "contract   engine:plugin@0.2.0 (supported)".to_string(),
        "engine:plugin/host@0.2.0".to_string(),
        "wasi:cli/environment@0.2".to_string(),
        "stub: provided as a stub that denies every call".to_string(),
        "bounds     within the defaults".to_string(),
        "verdict    this engine accepts it".to_string(),
        "[plugin.deactivate-then-delete]".to_string(),
        format!("sha256 = \"{sha}\""),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
    // JSON: the same facts, machine-readable.
    let out = engine(
        &[
            "plugin",
            "inspect",
            "deactivate_then_delete.wasm",
            "--format",
            "json",
        ],
        &dir,
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["sha256"], sha.as_str());
    assert_eq!(doc["contract"]["version"], "0.2.0");
    assert_eq!(doc["loads"], true);
    assert_eq!(doc["bytes"], std::fs::metadata(&wasm).expect("meta").len());
    let imports = doc["imports"].as_array().expect("imports");
    assert!(
        imports.iter().all(|i| i["verdict"] != "refused"),
        "{imports:?}"
    );
    assert!(
        imports
            .iter()
            .any(|i| i["name"] == "engine:plugin/host@0.2.0" && i["verdict"] == "provided")
    );

    // The snippet, pasted into a policy directory as it is, loads.
    let snippet = doc["snippet"].as_str().expect("snippet").replace(
        "allow = [\"deactivate-access-key\"]",
        "allow = [\"deactivate-access-key\", \"delete-access-key\"]",
    );
    std::fs::write(
        dir.join("p.toml"),
        format!(
            "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"deactivate-then-delete\"\n\n{snippet}"
        ),
    )
    .expect("policy");
    let out = engine(
        &[
            "check",
            ".",
            "--report",
            &report(),
            "--now",
            "2026-11-28T00:00:00Z",
            "--format",
            "json",
        ],
        &dir,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let plan: Value = serde_json::from_str(&stdout).expect("plan");
    assert_eq!(plan["summary"]["failed_policies"], 0, "{stdout}");
    assert!(
        plan["summary"]["changes"].as_u64().unwrap_or(0) > 0,
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_says_why_this_engine_refuses_a_plugin() {
    let dir = scratch("inspect-refused");
    // A filesystem import: refused, named, exit 1.
    let out = engine(
        &[
            "plugin",
            "inspect",
            built("testdata_wasi_filesystem").to_str().expect("path"),
        ],
        &dir,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("verdict    REFUSED by this engine:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("wasi:filesystem/")
            && stdout.contains("refused: plugins get no filesystem"),
        "{stdout}"
    );
    // Another contract version.
    let out = engine(
        &[
            "plugin",
            "inspect",
            built("testdata_future_contract").to_str().expect("path"),
            "--format",
            "json",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["loads"], false);
    assert_eq!(doc["contract"]["version"], "9.0.0");
    assert!(
        doc["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p
                .as_str()
                .unwrap_or("")
                .contains("this engine supports @0.1.0, @0.2.0")),
        "{doc}"
    );
    // Not WebAssembly at all.
    std::fs::write(dir.join("notes.wasm"), "hello").expect("write");
    let out = engine(&["plugin", "inspect", "notes.wasm"], &dir);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("notes.wasm: not a WebAssembly file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plugin_test_shows_what_the_host_accepts_and_refuses() {
    let dir = scratch("test");
    let wasm = built("delete_expired_keys");
    let wasm = wasm.to_str().expect("path");
    let base = [
        "plugin",
        "test",
        wasm,
        "--report",
        &report(),
        "--now",
        "2026-11-28T00:00:00Z",
    ];
    // As an external plugin, deleting is not granted by default: refused.
    let out = engine(&base, &dir);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.starts_with("engine plugin test:"), "{stdout}");
    assert!(
        stdout.contains("refused delete-access-key (not-granted)"),
        "{stdout}"
    );
    assert!(stdout.contains("Plan: 0 to delete"), "{stdout}");
    assert!(
        stderr.contains("plugin delete-expired-keys: loaded in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("policy test: decide took") && stderr.contains("peak memory"),
        "{stderr}"
    );
    // Granted, and under a policy file with an exemption: accepted, and
    // the exempt user gets none.
    std::fs::write(
        dir.join("p.toml"),
        "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"bob\"]\n",
    )
    .expect("policy");
    let mut args = base.to_vec();
    args.extend([
        "--policy",
        "p.toml",
        "--allow",
        "delete-access-key",
        "--format",
        "json",
    ]);
    let out = engine(&args, &dir);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let plan: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(plan["policies"][0]["name"], "rotate");
    assert_eq!(plan["policies"][0]["plugin"], "delete-expired-keys");
    let deleted: Vec<&str> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "delete-access-key")
        .map(|a| a["user"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !deleted.is_empty() && !deleted.contains(&"bob"),
        "{deleted:?}"
    );
    assert_eq!(plan["summary"]["refused"], 0, "{stdout}");
    // A plugin that traps fails its policy, exit 1, and says so.
    let trap = built("testdata_trap");
    let out = engine(
        &[
            "plugin",
            "test",
            trap.to_str().expect("path"),
            "--report",
            &report(),
            "--now",
            "2026-11-28T00:00:00Z",
        ],
        &dir,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("trap"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plugin of contract 0.1.0 has no stages: under a policy that warns
/// ahead, it is given only the due findings, and its answer's indices (into
/// what it was given) are mapped back to the right findings of the plan.
#[test]
fn a_plugin_of_the_first_contract_is_given_only_due_findings() {
    let dir = scratch("contract-0-1");
    let wasm = built("testdata_contract_0_1");
    let wasm = wasm.to_str().expect("path");
    let out = engine(&["plugin", "inspect", wasm, "--format", "json"], &dir);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["contract"]["version"], "0.1.0", "{doc}");
    std::fs::write(
        dir.join("warned.toml"),
        "[policy.rotate]\nrule = \"cis-1.4\"\nwarn_before_days = 7\n",
    )
    .expect("policy");
    let out = engine(
        &[
            "plugin",
            "test",
            wasm,
            "--report",
            &report(),
            "--policy",
            "warned.toml",
            "--now",
            "2026-11-28T00:00:00Z",
            "--format",
            "json",
        ],
        &dir,
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("json");
    let findings = doc["findings"].as_array().expect("findings");
    let stage = |i: usize| findings[i]["stage"].as_str().unwrap_or("");
    let due: Vec<usize> = (0..findings.len()).filter(|&i| stage(i) == "due").collect();
    let upcoming = (0..findings.len())
        .filter(|&i| stage(i) == "upcoming")
        .count();
    assert!(due.len() >= 2 && upcoming >= 2, "{doc}");
    assert_eq!(due.len() + upcoming, findings.len(), "{doc}");
    // Everything it answered, accepted or refused: one per due finding.
    // An accepted action keeps the plugin's reason, which names the very
    // finding its index points to (a refused one carries the host's reason).
    let mut indices = Vec::new();
    for (key, accepted) in [("actions", true), ("refused", false)] {
        for a in doc[key].as_array().into_iter().flatten() {
            let i = a["finding"].as_u64().expect("index") as usize;
            if accepted {
                let f = &findings[i];
                // The plan writes access_key_1, the contract access-key-1.
                let said = format!(
                    "given {} {}",
                    f["user"].as_str().unwrap_or(""),
                    f["credential"].as_str().unwrap_or("").replace('_', "-")
                );
                assert_eq!(a["reason"].as_str(), Some(said.as_str()), "{a}");
            }
            indices.push(i);
        }
    }
    indices.sort_unstable();
    assert_eq!(indices, due, "{doc}");
    assert!(
        doc["actions"].as_array().is_some_and(
            |a| !a.is_empty() && a.iter().all(|a| a["action"] == "deactivate-access-key")
        ),
        "{doc}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn new_refuses_bad_names_used_directories_and_misplaced_options() {
    let dir = scratch("new-errors");
    let cases: &[(&[&str], &str)] = &[
        (&["plugin", "new", "My_Plugin"], "is not a plugin name"),
        (
            &["plugin", "new", "ok", "--lang", "python", "--sdk", "0.1.0"],
            "--sdk is for Rust",
        ),
        (
            &["plugin", "new", "ok", "--sdk", "git="],
            "expected git=URL",
        ),
        (
            &["plugin", "new", "ok", "--sdk", "path=/nonexistent"],
            "has no Cargo.toml",
        ),
    ];
    for (args, want) in cases {
        let out = engine(args, &dir);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    std::fs::create_dir_all(dir.join("taken")).expect("mkdir");
    std::fs::write(dir.join("taken/file"), "x").expect("write");
    let out = engine(&["plugin", "new", "taken"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("exists and is not empty"));
    // Nothing was written by the refused calls.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("taken")]);
    let _ = std::fs::remove_dir_all(&dir);
}
