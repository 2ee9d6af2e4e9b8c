//! Plugin costs: loading the default plugin (precompiled into the binary,
//! or compiled from its bytes), loading an external plugin (compiled, or
//! from the plugin cache), and a warm call with 0 (the fixed cost: a fresh
//! store and instance) and 1,000 findings (target: under 1 ms).
//!
//! Then, when `scripts/plugin-toolchains` has installed componentize-py and
//! componentize-js, the same for the Python and JavaScript examples: cold
//! compile, load from the cache, warm calls and the peak memory of a call
//! (printed; they take seconds each, so they are not divan samples).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{TimeZone, Utc};
use engine_core::UserNames;
use engine_core::finding::{Basis, Credential, Finding};
use engine_core::policy::{self, LoadBounds, PluginConfig, PluginSource, Rule};
use engine_wasm::cache::Cache;
use engine_wasm::{Host, Invocation, Origin};
use sha2::{Digest, Sha256};

fn main() {
    divan::main();
    if std::env::args().any(|a| a == "--bench") {
        interpreted();
    }
}

fn cfg() -> PluginConfig {
    PluginConfig {
        name: "delete-expired-keys".into(),
        source: PluginSource::Builtin,
        timeout_ms: 1000,
        memory_mb: 64,
        bounds: LoadBounds::DEFAULT,
        allow: Vec::new(),
        origin: None,
    }
}

fn findings(n: usize) -> Vec<Finding> {
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| Finding {
            account: None,
            policy: "bench".into(),
            rule: Rule::Cis14,
            names: UserNames::new(
                &format!("user-{i}"),
                &format!("arn:aws:iam::123456789012:user/user-{i}"),
            ),
            credential: if i % 3 == 0 {
                Credential::AccessKey2
            } else {
                Credential::AccessKey1
            },
            key_id: Some(format!("AKIA{i:016}")),
            timestamp: now - chrono::Duration::days(100 + (i % 300) as i64),
            basis: Basis::KeyLastRotated,
            age_days: 100 + (i % 300) as i64,
            threshold_days: 90,
            exempt: i % 50 == 0,
            protected: None,
            user_created: None,
            credential_created: None,
            stage: Default::default(),
            deactivated_at: None,
        })
        .collect()
}

#[divan::bench(sample_count = 10)]
fn load_default_plugin_precompiled(bencher: divan::Bencher) {
    let host = Host::new().unwrap();
    let cfg = cfg();
    bencher.bench_local(|| {
        let p = host.load(&cfg).unwrap();
        assert_eq!(p.origin(), Origin::Precompiled);
        p
    });
}

#[divan::bench(sample_count = 10)]
fn load_default_plugin_compiled(bencher: divan::Bencher) {
    let host = Host::new().unwrap();
    let cfg = cfg();
    let bytes = engine_wasm::builtin("delete-expired-keys").unwrap();
    bencher.bench_local(|| host.load_bytes(&cfg, bytes).unwrap());
}

#[divan::bench(sample_count = 10)]
fn load_external_plugin_from_cache(bencher: divan::Bencher) {
    let dir = std::env::temp_dir().join(format!("engine-bench-cache-{}", std::process::id()));
    let cfg = file_cfg(
        &PathBuf::from(engine_wasm::BUILT_PLUGIN_DIR).join("deactivate_then_delete.wasm"),
        LoadBounds::DEFAULT,
    );
    let host = || Host::new().unwrap().with_cache(Cache::new(&dir));
    host().load(&cfg).unwrap();
    bencher.bench_local(|| {
        let p = host().load(&cfg).unwrap();
        assert_eq!(p.origin(), Origin::Cached);
        p
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn file_cfg(path: &Path, bounds: LoadBounds) -> PluginConfig {
    let bytes = std::fs::read(path).unwrap();
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PluginConfig {
        name: "bench".into(),
        source: PluginSource::File {
            path: path.to_path_buf(),
            sha256,
        },
        timeout_ms: 10_000,
        memory_mb: 64,
        bounds,
        allow: Vec::new(),
        origin: None,
    }
}

/// The Python and JavaScript examples, built with their build scripts.
fn interpreted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(tools) = std::fs::read_to_string(root.join(".plugin-toolchains")) else {
        println!("\nPython and JavaScript plugins: not measured (run scripts/plugin-toolchains)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("engine-bench-langs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = policy::validate(vec![policy::PolicyFile {
        path: PathBuf::from("bench.toml"),
        text: "[policy.bench]\nrule = \"cis-1.4\"\n".into(),
    }])
    .map_err(|e| e.render_plain())
    .unwrap();
    let policy = &set.policies[0];
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    println!("\n== interpreted plugins (release host) ==");
    for (lang, example, var) in [
        ("python", "python-plugin", "ENGINE_PY_TOOLCHAIN"),
        ("js", "js-plugin", "ENGINE_JS_TOOLCHAIN"),
    ] {
        let Some(tool) = tools
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{lang}=")))
        else {
            println!("{lang}: not measured (its toolchain is not installed)");
            continue;
        };
        let wasm = dir.join(format!("{lang}.wasm"));
        let built =
            std::process::Command::new(root.join("examples").join(example).join("build.sh"))
                .arg("-o")
                .arg(&wasm)
                .env(var, Path::new(tool).parent().unwrap())
                .output()
                .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let bounds = engine_wasm::inspect::inspect(&std::fs::read(&wasm).unwrap())
            .unwrap()
            .needed;
        let cfg = file_cfg(&wasm, bounds);
        let cache = dir.join(format!("cache-{lang}"));
        let t = Instant::now();
        let plugin = Host::new()
            .unwrap()
            .with_cache(Cache::new(&cache))
            .load(&cfg)
            .unwrap();
        let cold = t.elapsed();
        let mut cached = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let p = Host::new()
                .unwrap()
                .with_cache(Cache::new(&cache))
                .load(&cfg)
                .unwrap();
            assert_eq!(p.origin(), Origin::Cached);
            cached.push(t.elapsed());
        }
        cached.sort();
        for n in [0, 1000] {
            let fs = findings(n);
            let inv = Invocation::new(policy, now, &fs);
            let mut times = Vec::new();
            let mut peak = 0;
            for _ in 0..10 {
                let d = plugin.decide(&inv, &fs).unwrap();
                assert_eq!(d.proposals.len(), n);
                times.push(d.elapsed);
                peak = peak.max(d.peak_memory_bytes);
            }
            times.sort();
            println!(
                "{lang}: {:.1} MB, compile {:.2} s, from the cache {:.1} ms (median of 5), warm call with {n} findings {:.1} ms (median of 10), peak memory {:.1} MiB",
                std::fs::metadata(&wasm).unwrap().len() as f64 / 1e6,
                cold.as_secs_f64(),
                cached[2].as_secs_f64() * 1e3,
                times[5].as_secs_f64() * 1e3,
                peak as f64 / f64::from(1 << 20)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[divan::bench(args = [0, 1000])]
fn warm_call(bencher: divan::Bencher, n: usize) {
    let host = Host::new().unwrap();
    let plugin = host.load(&cfg()).unwrap();
    let set = policy::validate(vec![policy::PolicyFile {
        path: PathBuf::from("bench.toml"),
        text: "[policy.bench]\nrule = \"cis-1.4\"\n".into(),
    }])
    .map_err(|e| e.render_plain())
    .unwrap();
    let policy = &set.policies[0];
    let findings = findings(n);
    let inv = Invocation::new(
        policy,
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        &findings,
    );
    bencher.bench_local(|| {
        let d = plugin.decide(&inv, &findings).unwrap();
        assert_eq!(d.proposals.len(), n);
        d
    });
}
