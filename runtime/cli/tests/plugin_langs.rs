//! The Python and JavaScript examples (`examples/python-plugin`,
//! `examples/js-plugin`) are built with their own build scripts and run
//! through the real binary in the real sandbox: on the same report and
//! parameters they must decide exactly as the Rust example
//! (`examples/deactivate-then-delete`), reasons and errors included.
//!
//! They need componentize-py and componentize-js (`scripts/plugin-toolchains`,
//! which `scripts/test` runs). Without one, its test is reported as
//! *ignored* with the reason, never as passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One build and engine compile at a time (each takes most of a core).
static SERIAL: Mutex<()> = Mutex::new(());

type Decisions = Result<Vec<(String, String, String, String)>, String>;

/// What `engine plugin test` decides with `wasm` on the example report for
/// `delete_after_factor = factor`: its actions as (user, credential,
/// action, reason), or the policy's error.
fn decide(wasm: &Path, factor: &str, cache: &Path) -> Decisions {
    let report = root().join("examples/credential-report.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["plugin", "test"])
        .arg(wasm)
        .arg("--report")
        .arg(&report)
        .args([
            "--now",
            "2026-11-28T00:00:00Z",
            "--name",
            "deactivate-then-delete",
            "--allow",
            "deactivate-access-key,delete-access-key",
            "--format",
            "json",
            "--param",
        ])
        .arg(format!("delete_after_factor={factor}"))
        .env("ENGINE_PLUGIN_CACHE", cache)
        .output()
        .expect("run engine");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: {e}\n{stderr}", wasm.display()));
    if let Some(e) = doc["errors"].as_array().and_then(|e| e.first()) {
        return Err(e["message"].as_str().unwrap_or("").to_string());
    }
    Ok(doc["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
            (s("user"), s("credential"), s("action"), s("reason"))
        })
        .collect())
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{o}\n{e}");
    format!("{o}{e}")
}

/// Build `example` with its build.sh, run its native tests, then compare
/// its decisions with the Rust example's.
fn same_decisions_as_the_rust_example(example: &str, native: &[&str], env: (&str, &str)) {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::temp_dir().join(format!("engine-langs-{example}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = root().join("examples").join(example);
    let tests = run(
        Command::new(native[0])
            .args(&native[1..])
            .current_dir(&src)
            .env(env.0, env.1),
        &format!("{example}: native tests"),
    );
    println!("{example} native tests:\n{tests}");
    let wasm = dir.join("plugin.wasm");
    run(
        Command::new(src.join("build.sh"))
            .arg("-o")
            .arg(&wasm)
            .env(env.0, env.1),
        &format!("{example}: build.sh"),
    );
    let rust = Path::new(engine_wasm::BUILT_PLUGIN_DIR).join("deactivate_then_delete.wasm");
    let cache = dir.join("cache");
    let mut compared = 0;
    for factor in ["2", "4", "1.5", "1", "zero", "0.5"] {
        let theirs = decide(&wasm, factor, &cache);
        let ours = decide(&rust, factor, &cache);
        assert_eq!(theirs, ours, "{example}, delete_after_factor = {factor:?}");
        compared += 1;
    }
    // The comparisons were not all failures or all empty.
    let deletes = decide(&wasm, "4", &cache).expect("decides");
    assert!(
        deletes.iter().any(|d| d.2 == "delete-access-key"),
        "{deletes:?}"
    );
    assert!(
        deletes.iter().any(|d| d.2 == "deactivate-access-key"),
        "{deletes:?}"
    );
    let err = decide(&wasm, "zero", &cache).expect_err("a bad factor fails");
    assert!(err.contains("delete_after_factor"), "{err}");
    assert_eq!(compared, 6);
    // Contract 0.2.0: under a policy warned 7 days ahead, the upcoming
    // findings are handed over too, and both answer them `none`.
    std::fs::write(
        dir.join("warned.toml"),
        "[policy.rotate]\nrule = \"cis-1.4\"\nwarn_before_days = 7\n",
    )
    .expect("policy");
    let warned = |wasm: &Path| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(["plugin", "test"])
            .arg(wasm)
            .arg("--report")
            .arg(root().join("examples/credential-report.csv"))
            .arg("--policy")
            .arg(dir.join("warned.toml"))
            .args(["--now", "2026-11-28T00:00:00Z", "--format", "json"])
            .args(["--name", "deactivate-then-delete"])
            .env("ENGINE_PLUGIN_CACHE", &cache)
            .output()
            .expect("run engine");
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let (theirs, ours) = (warned(&wasm), warned(&rust));
    for key in ["findings", "actions", "refused"] {
        assert_eq!(theirs[key], ours[key], "{example}, warned policy: {key}");
    }
    let findings = theirs["findings"].as_array().expect("findings");
    let upcoming: Vec<u64> = (0..findings.len() as u64)
        .filter(|&i| findings[i as usize]["stage"] == "upcoming")
        .collect();
    assert_eq!(upcoming.len(), 3, "{theirs}");
    let none: Vec<u64> = theirs["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "none")
        .filter_map(|a| a["finding"].as_u64())
        .collect();
    assert!(upcoming.iter().all(|i| none.contains(i)), "{theirs}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg_attr(
    not(toolchain_python),
    ignore = "componentize-py is not installed (scripts/plugin-toolchains could not install it): the Python example was NOT built or tested"
)]
#[test]
fn the_python_example_decides_as_the_rust_example() {
    let bin = option_env!("ENGINE_TOOLCHAIN_PYTHON").unwrap_or_default();
    same_decisions_as_the_rust_example(
        "python-plugin",
        &["python3", "-m", "unittest", "-v", "test_app.py"],
        ("ENGINE_PY_TOOLCHAIN", bin),
    );
}

#[cfg_attr(
    not(toolchain_js),
    ignore = "componentize-js is not installed (scripts/plugin-toolchains could not install it): the JavaScript example was NOT built or tested"
)]
#[test]
fn the_js_example_decides_as_the_rust_example() {
    let bin = option_env!("ENGINE_TOOLCHAIN_JS").unwrap_or_default();
    same_decisions_as_the_rust_example(
        "js-plugin",
        &["node", "--test"],
        ("ENGINE_JS_TOOLCHAIN", bin),
    );
}
