//! Plugin costs: compiling the default plugin (once per process) and a warm
//! call with 0 (the fixed cost: a fresh store and instance) and 1,000
//! findings (target: under 1 ms).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use engine_core::finding::{Basis, Credential, Finding};
use engine_core::policy::{self, LoadBounds, PluginConfig, PluginSource, Rule};
use engine_wasm::{Host, Invocation};

fn main() {
    divan::main();
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
            user: format!("user-{i}").into(),
            arn: format!("arn:aws:iam::123456789012:user/user-{i}").into(),
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
        })
        .collect()
}

#[divan::bench(sample_count = 10)]
fn cold_load_default_plugin(bencher: divan::Bencher) {
    let host = Host::new().unwrap();
    let cfg = cfg();
    bencher.bench_local(|| host.load(&cfg).unwrap());
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
