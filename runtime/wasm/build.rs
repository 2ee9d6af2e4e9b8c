//! Builds every plugin of the workspace for `wasm32-wasip2`, once.
//!
//! One nested `cargo build --release --target wasm32-wasip2` builds the
//! shipped plugins (embedded with `include_bytes!`), the example plugin and
//! the hostile test plugins, in a separate target directory so it never waits
//! on the outer build's lock. The output directory is exposed to the crate
//! and its tests as `ENGINE_PLUGIN_WASM_DIR` (a copy under `OUT_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
#[path = "src/engine_config.rs"]
mod engine_config;

/// The shipped plugins: embedded in the binary, and precompiled here.
const BUILTINS: &[&str] = &[
    "delete-expired-keys",
    "deactivate-unused-credentials",
    "staged-key-removal",
];

/// Plugin crates outside `plugins/testdata/`.
const PLUGINS: &[&str] = &[
    "delete-expired-keys",
    "deactivate-unused-credentials",
    "staged-key-removal",
    "deactivate-then-delete",
];

const TARGET: &str = "wasm32-wasip2";

/// The plugins need the wasm32-wasip2 target: install it with rustup for the
/// toolchain in use, or fail with the exact command to run.
fn install_target(sysroot: &str) {
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build the plugins)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(t) = &toolchain {
        cmd.args(["--toolchain", t]);
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    if !ok || !Path::new(sysroot).join("lib/rustlib").join(TARGET).exists() {
        panic!(
            "the {TARGET} target is not installed (needed to build the plugins) and rustup could not install it; run `rustup target add {TARGET}` and build again"
        );
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("runtime/wasm is two levels below the workspace root")
        .to_path_buf();
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("src/engine_config.rs").display()
    );
    for p in [
        "plugins",
        "examples/deactivate-then-delete",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    if let Ok(out) = Command::new(&rustc).args(["--print", "sysroot"]).output() {
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !sysroot.is_empty()
            && !Path::new(&sysroot)
                .join("lib/rustlib")
                .join(TARGET)
                .exists()
        {
            install_target(&sysroot);
        }
    }

    let mut packages: Vec<String> = PLUGINS.iter().map(|s| s.to_string()).collect();
    packages.extend(testdata_packages(&root.join("plugins/testdata")));

    // <target>/<profile>/build/engine-wasm-<hash>/out -> <target>/wasm-plugins, so a
    // CARGO_TARGET_DIR (and CI's cache of it) covers the plugins too.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| root.join("target/wasm-plugins"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_LLVM_COV",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_CFG_")
        {
            cmd.env_remove(k);
        }
    }
    // Small components: plugins are embedded in the binary and compiled at load.
    cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");

    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\n\nthe {TARGET} target is missing: run `rustup target add {TARGET}`")
        } else {
            String::new()
        };
        panic!("building the plugins failed ({:?}):\n{stderr}{hint}", cmd);
    }
    let wasm_dir = target_dir.join(TARGET).join("release");
    for p in PLUGINS {
        let file = wasm_dir.join(format!("{}.wasm", p.replace('-', "_")));
        assert!(
            file.exists(),
            "the plugin build did not produce {}",
            file.display()
        );
    }
    println!(
        "cargo:rustc-env=ENGINE_PLUGIN_WASM_DIR={}",
        wasm_dir.display()
    );
    precompile_builtins(&wasm_dir, &out_dir);
}

/// Compile the shipped plugins to machine code for the target the binary is
/// built for, with the sandbox's own configuration, so that no run of the
/// engine compiles them: `<OUT_DIR>/<name>.cwasm`, embedded by the crate
/// (`ENGINE_WASM_TARGET` names the target the configuration was made for).
/// A target cranelift cannot compile for here gets empty files: the engine
/// then compiles the builtins when it loads them, as it does any plugin.
fn precompile_builtins(wasm_dir: &Path, out_dir: &Path) {
    let target = std::env::var("TARGET").expect("TARGET");
    println!("cargo:rustc-env=ENGINE_WASM_TARGET={target}");
    let engine = engine_config::config(&target).and_then(|c| wasmtime::Engine::new(&c));
    for name in BUILTINS {
        let wasm = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        let out = out_dir.join(format!("{name}.cwasm"));
        let compiled = engine
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|engine| {
                let bytes = std::fs::read(&wasm).map_err(|e| e.to_string())?;
                engine
                    .precompile_component(&bytes)
                    .map_err(|e| e.to_string())
            });
        let bytes = compiled.unwrap_or_else(|e| {
            println!(
                "cargo:warning=the builtin plugin {name} could not be precompiled for {target} ({e}); the engine will compile it when it loads it"
            );
            Vec::new()
        });
        std::fs::write(&out, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
}

/// The package names of `plugins/testdata/*/Cargo.toml`.
fn testdata_packages(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = text.lines().find_map(|l| {
            let l = l.trim();
            l.strip_prefix("name")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .map(|r| r.trim().trim_matches('"').to_string())
        }) {
            names.push(name);
        }
    }
    names.sort();
    names
}
