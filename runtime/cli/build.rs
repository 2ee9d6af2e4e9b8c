//! Which optional tools the tests can use (docker, systemd-analyze), and
//! which plugin toolchains: `scripts/plugin-toolchains`
//! writes `.plugin-toolchains` at the workspace root (`python=PATH`,
//! `js=PATH`). Each one present sets `cfg(toolchain_python)` /
//! `cfg(toolchain_js)` and `ENGINE_TOOLCHAIN_PYTHON` / `_JS` (its directory)
//! for the tests, which are otherwise *ignored* with the reason (never
//! counted as passed).

use std::path::Path;

/// Whether `program ARGS` runs and succeeds here.
fn works(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(toolchain_python)");
    println!("cargo::rustc-check-cfg=cfg(toolchain_js)");
    println!("cargo::rustc-check-cfg=cfg(has_docker)");
    println!("cargo::rustc-check-cfg=cfg(has_systemd_analyze)");
    // The packaging tests that need a tool are ignored, with the reason,
    // where it is missing (looked for when this crate is built).
    if works("docker", &["info"]) {
        println!("cargo::rustc-cfg=has_docker");
    }
    if works("systemd-analyze", &["--version"]) {
        println!("cargo::rustc-cfg=has_systemd_analyze");
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../..");
    let file = root.join(".plugin-toolchains");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            println!("cargo::rerun-if-changed={}", file.display());
            for line in text.lines() {
                let Some((lang, path)) = line.split_once('=') else {
                    continue;
                };
                let dir = Path::new(path.trim()).parent().map(Path::to_path_buf);
                match (lang.trim(), dir) {
                    ("python", Some(dir)) if Path::new(path.trim()).exists() => {
                        println!("cargo::rustc-cfg=toolchain_python");
                        println!("cargo::rustc-env=ENGINE_TOOLCHAIN_PYTHON={}", dir.display());
                    }
                    ("js", Some(dir)) if Path::new(path.trim()).exists() => {
                        println!("cargo::rustc-cfg=toolchain_js");
                        println!("cargo::rustc-env=ENGINE_TOOLCHAIN_JS={}", dir.display());
                    }
                    _ => {}
                }
            }
        }
        // Not written yet: look again when the root's entries change.
        Err(_) => println!("cargo::rerun-if-changed={}", root.display()),
    }
}
