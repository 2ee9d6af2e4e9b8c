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

/// A small deterministic generator (xorshift), so every run reads the same bytes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn ts(days: u64) -> String {
    (now() - TimeDelta::days(days as i64) - TimeDelta::seconds(days as i64 * 37 % 86_400))
        .to_rfc3339()
}

/// A deterministic report shaped like a real account: most credentials in
/// use and rotated, a minority stale (about 20% of users have a finding).
fn generate(users: usize) -> Vec<u8> {
    generate_with(users, false)
}

/// The worst case: every credential stale, so every one is a finding.
fn generate_all_stale(users: usize) -> Vec<u8> {
    generate_with(users, true)
}

fn generate_with(users: usize, all_stale: bool) -> Vec<u8> {
    let mut out = String::from(
        "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n",
    );
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..users {
        let stale = all_stale || r.chance(10);
        let (pw, pw_used, pw_changed) = if !all_stale && r.chance(40) {
            ("false", "N/A".to_string(), "N/A".to_string())
        } else if r.chance(10) {
            (
                "true",
                "no_information".to_string(),
                ts(if stale {
                    100 + r.below(300)
                } else {
                    r.below(80)
                }),
            )
        } else {
            let used = if stale {
                100 + r.below(300)
            } else {
                r.below(60)
            };
            ("true", ts(used), ts(used + r.below(200)))
        };
        let key = |r: &mut Rng| {
            let stale = all_stale || r.chance(15);
            let rotated = if stale {
                100 + r.below(900)
            } else {
                r.below(85)
            };
            if !stale && r.chance(5) {
                return format!("true,{},N/A,N/A,N/A", ts(rotated));
            }
            let used = if stale {
                95 + r.below(5)
            } else {
                r.below(rotated + 1).min(20)
            };
            format!("true,{},{},us-east-1,s3", ts(rotated), ts(used))
        };
        let keys = if all_stale {
            2
        } else {
            [0, 1, 1, 2][r.below(4) as usize]
        };
        let k1 = if keys >= 1 {
            key(&mut r)
        } else {
            "false,N/A,N/A,N/A,N/A".to_string()
        };
        let k2 = if keys >= 2 {
            key(&mut r)
        } else {
            "false,N/A,N/A,N/A,N/A".to_string()
        };
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

fn findings(bytes: &[u8]) -> usize {
    let set = policies();
    let report = CredentialReport::parse(bytes).expect("valid report");
    set.policies
        .iter()
        .map(|p| rules::evaluate(p, &report, now()).len())
        .sum()
}

fn bench_evaluate(bencher: divan::Bencher, bytes: &[u8]) {
    let set = policies();
    bencher.bench(|| {
        let report = CredentialReport::parse(divan::black_box(bytes)).expect("valid report");
        let findings: usize = set
            .policies
            .iter()
            .map(|p| rules::evaluate(p, &report, now()).len())
            .sum();
        divan::black_box(findings)
    });
}

#[divan::bench(sample_count = 10)]
fn parse_and_evaluate(bencher: divan::Bencher) {
    let bytes = generate(USERS);
    eprintln!(
        "typical report: {} findings in {USERS} users",
        findings(&bytes)
    );
    bench_evaluate(bencher, &bytes);
}

#[divan::bench(sample_count = 10)]
fn parse_and_evaluate_all_stale(bencher: divan::Bencher) {
    let bytes = generate_all_stale(USERS);
    eprintln!(
        "all-stale report: {} findings in {USERS} users",
        findings(&bytes)
    );
    bench_evaluate(bencher, &bytes);
}
