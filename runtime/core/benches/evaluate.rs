//! Parse + evaluate a generated 100,000-user credential report, next to the
//! floor: the `csv` crate alone reading the same bytes.
//!
//! Run: `cargo bench -p engine-core --bench evaluate`

use chrono::{DateTime, TimeDelta, Utc};
use engine_core::policy::{self, PolicyFile};
use engine_core::report::CredentialReport;
use engine_core::rules;

const USERS: usize = 100_000;

fn main() {
    divan::main();
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_824_000, 0).expect("valid") // 2026-11-28
}

/// A deterministic report with a realistic mix: passwords, 0/1/2 keys, never-used values.
fn generate(users: usize) -> Vec<u8> {
    let mut out = String::from(
        "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n",
    );
    let ts = |days: u64| (now() - TimeDelta::days(days as i64)).to_rfc3339();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for i in 0..users {
        let (pw, pw_used, pw_changed) = match rnd(3) {
            0 => ("false", "N/A".to_string(), "N/A".to_string()),
            1 => ("true", "no_information".to_string(), ts(rnd(400))),
            _ => ("true", ts(rnd(400)), ts(rnd(800))),
        };
        let mut key = || match rnd(3) {
            0 => "false,N/A,N/A,N/A,N/A".to_string(),
            1 => format!("true,{},N/A,N/A,N/A", ts(rnd(400))),
            _ => format!(
                "{},{},{},us-east-1,s3",
                rnd(4) != 0,
                ts(rnd(600)),
                ts(rnd(300))
            ),
        };
        let k1 = key();
        let k2 = key();
        out.push_str(&format!(
            "user-{i},arn:aws:iam::123456789012:user/user-{i},{},{pw},{pw_used},{pw_changed},N/A,false,{k1},{k2},false,N/A,false,N/A\n",
            ts(1000)
        ));
    }
    out.into_bytes()
}

fn policies() -> engine_core::PolicySet {
    policy::validate(vec![PolicyFile {
        path: "bench.toml".into(),
        text: "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"user-1?\"]\n[policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n".into(),
    }])
    .expect("valid bench policies")
}

#[divan::bench(sample_count = 10)]
fn csv_crate_floor(bencher: divan::Bencher) {
    let bytes = generate(USERS);
    bencher.bench(|| {
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let mut record = csv::ByteRecord::new();
        let mut fields = 0usize;
        while reader.read_byte_record(&mut record).expect("valid csv") {
            fields += record.len();
        }
        divan::black_box(fields)
    });
}

#[divan::bench(sample_count = 10)]
fn parse_report(bencher: divan::Bencher) {
    let bytes = generate(USERS);
    bencher.bench(|| CredentialReport::parse(divan::black_box(&bytes)).expect("valid report"));
}

#[divan::bench(sample_count = 10)]
fn parse_and_evaluate(bencher: divan::Bencher) {
    let bytes = generate(USERS);
    let set = policies();
    bencher.bench(|| {
        let report = CredentialReport::parse(divan::black_box(&bytes)).expect("valid report");
        let findings: usize = set
            .policies
            .iter()
            .map(|p| rules::evaluate(p, &report, now()).len())
            .sum();
        divan::black_box(findings)
    });
}
