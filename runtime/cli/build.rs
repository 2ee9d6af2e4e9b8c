//! Which optional tools the tests can use (docker, systemd-analyze, nm), and
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
    symbol_order();
    println!("cargo::rustc-check-cfg=cfg(toolchain_python)");
    println!("cargo::rustc-check-cfg=cfg(toolchain_js)");
    println!("cargo::rustc-check-cfg=cfg(has_docker)");
    println!("cargo::rustc-check-cfg=cfg(has_systemd_analyze)");
    println!("cargo::rustc-check-cfg=cfg(has_nm)");
    // The packaging tests that need a tool are ignored, with the reason,
    // where it is missing (looked for when this crate is built).
    if works("docker", &["info"]) {
        println!("cargo::rustc-cfg=has_docker");
    }
    if works("systemd-analyze", &["--version"]) {
        println!("cargo::rustc-cfg=has_systemd_analyze");
    }
    // scripts/trace-functions.py reads symbols with binutils' nm.
    if works("nm", &["--version"]) {
        println!("cargo::rustc-cfg=has_nm");
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

/// Release builds of `engine` on x86-64 Linux lay out the functions that
/// run at start-up and in a usual run (`check`, `apply`, the daemon's start
/// and idle) together, in the order they first run, from
/// `runtime/cli/symbol-order.txt` (written by `scripts/symbol-order`).
///
/// Why: the kernel maps a binary's code in 64 KiB blocks around each page
/// touched, and without an order those few MB of code are spread over the
/// whole 30 MB `.text`, so every engine process held about 19 MB of code
/// pages; laid out together, about 5 MB (an idle daemon: 28.5 MB -> 13.8 MB
/// resident). The file names symbols: those it names that a build does not
/// have (renamed, a dependency upgraded) are skipped, so a stale file costs
/// memory, never correctness; `scripts/symbol-order --check` says how stale.
///
/// The flag is lld's (Rust's default linker there since 1.90; mold has it
/// too). Skipped for other profiles, targets, a linker chosen through
/// RUSTFLAGS, or `ENGINE_SYMBOL_ORDER=off`.
fn symbol_order() {
    println!("cargo::rerun-if-env-changed=ENGINE_SYMBOL_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    let other_linker = rustflags.split('\x1f').any(|flag| {
        flag.contains("linker-features")
            || flag.contains("link-self-contained")
            || (flag.contains("fuse-ld=")
                && !flag.contains("fuse-ld=lld")
                && !flag.contains("fuse-ld=mold"))
    });
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("ENGINE_SYMBOL_ORDER") == "off"
        || other_linker
    {
        return;
    }
    let manifest = var("CARGO_MANIFEST_DIR");
    let file = Path::new(&manifest).join("symbol-order.txt");
    println!("cargo::rerun-if-changed={}", file.display());
    if !file.exists() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=engine=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    println!("cargo::rustc-link-arg-bin=engine=-Wl,--no-warn-symbol-ordering");
}
