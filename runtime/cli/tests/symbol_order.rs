//! The release link order of `engine` (runtime/cli/symbol-order.txt) and the
//! tracer that writes it (scripts/trace-functions.py, run by
//! scripts/symbol-order): the tracer must record exactly the functions a
//! run calls, and leave the run's behaviour alone.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn symbol_order_file_names_each_function_once() {
    let path = root().join("runtime/cli/symbol-order.txt");
    let text = std::fs::read_to_string(&path).expect("read runtime/cli/symbol-order.txt");
    let lines: Vec<&str> = text.lines().collect();
    // An empty or truncated file silently gives the memory back up.
    assert!(
        lines.len() > 1000,
        "{} functions only: regenerate with scripts/symbol-order",
        lines.len()
    );
    let mut seen = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        assert!(
            !line.is_empty() && !line.contains(char::is_whitespace),
            "line {}: {line:?} is not one symbol",
            i + 1
        );
        assert!(seen.insert(*line), "line {}: {line} twice", i + 1);
    }
    // The process entry comes first, and the engine's own code is in it.
    assert_eq!(lines[0], "_start");
    assert!(seen.contains("main"));
    for part in ["engine_core", "engine_run", "engine_daemon", "engine_aws"] {
        assert!(
            lines.iter().any(|l| l.contains(part)),
            "no function of {part} in the order"
        );
    }
}

#[cfg_attr(
    not(has_nm),
    ignore = "nm (binutils) not found: the tracer was NOT run"
)]
#[test]
fn tracer_records_the_functions_a_run_calls_and_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("engine-trace-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = dir.join("trace.txt");
    let args = [
        "check",
        "policies",
        "--report",
        "examples/credential-report.csv",
        "--now",
        "2026-12-01T00:00:00Z",
    ];
    let plain = Command::new(ENGINE)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run engine");
    let traced = Command::new("python3")
        .arg(root().join("scripts/trace-functions.py"))
        .arg(&out)
        .arg("--")
        .arg(ENGINE)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run scripts/trace-functions.py");
    // The same run: exit code (2: there is something to do) and output.
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    assert_eq!(traced.status.code(), plain.status.code(), "{traced:?}");
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(stderr.contains("functions run"), "{stderr}");

    let text = std::fs::read_to_string(&out).expect("read the trace");
    let called: Vec<&str> = text.lines().collect();
    let unique: HashSet<&str> = called.iter().copied().collect();
    assert_eq!(unique.len(), called.len(), "a function recorded twice");
    assert_eq!(called.first(), Some(&"_start"));
    // What this run calls (a debug build inlines none of these)...
    for f in [
        "engine_core5rules12evaluate_all",
        "engine_core6report16CredentialReport5parse",
        "engine_core6policy",
    ] {
        assert!(called.iter().any(|s| s.contains(f)), "{f} not recorded");
    }
    // ...and what it never does: no daemon loop, no AWS call, no journal
    // (functions defined in those crates; a drop of an empty `Option` of
    // one of their types may run).
    let nm = Command::new("nm")
        .args(["--defined-only", ENGINE])
        .output()
        .expect("run nm");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    for f in [
        "_ZN13engine_daemon7service",
        "_ZN10engine_aws",
        "_ZN14engine_journal",
    ] {
        // Not vacuous: the binary has such functions (the names are
        // rustc's legacy mangling; another scheme must change these).
        assert!(
            symbols
                .lines()
                .any(|l| l.split(' ').nth(2).is_some_and(|n| n.starts_with(f))),
            "no symbol of the engine starts with {f}"
        );
        let hits: Vec<&&str> = called.iter().filter(|s| s.starts_with(f)).collect();
        assert!(hits.is_empty(), "{f} recorded: {hits:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
