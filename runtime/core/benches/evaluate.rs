//! Parse + evaluate a generated 100,000-user credential report, next to the
//! floor: the `csv` crate alone reading the same bytes.
//!
//! Run: `cargo bench -p engine-core --bench evaluate`

use chrono::{DateTime, Utc};
use engine_core::policy::{self, PolicyFile};
use engine_core::report::CredentialReport;
use engine_core::rules;

const USERS: usize = 100_000;

fn main() {
    divan::main();
}

fn now() -> DateTime<Utc> {
    engine_testkit::report::now()
}

/// The generated reports are the test kit's, shared with the end-to-end
/// `engine check` benchmark of engine-cli.
fn generate(users: usize) -> Vec<u8> {
    engine_testkit::report::generate(users, false)
}

fn generate_all_stale(users: usize) -> Vec<u8> {
    engine_testkit::report::generate(users, true)
}

fn policies() -> engine_core::PolicySet {
    policy::validate(vec![PolicyFile {
        path: "bench.toml".into(),
        text: "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"user-1?\"]\n[policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n".into(),
    }])
    .expect("valid bench policies")
}

/// The `csv` crate alone reading every record of `bytes`: the floor.
fn bench_floor(bencher: divan::Bencher, bytes: &[u8]) {
    bencher.bench(|| {
        let mut reader = csv::Reader::from_reader(divan::black_box(bytes));
        let mut record = csv::ByteRecord::new();
        let mut fields = 0usize;
        while reader.read_byte_record(&mut record).expect("valid csv") {
            fields += record.len();
        }
        divan::black_box(fields)
    });
}

/// The floor of the typical report.
#[divan::bench(sample_count = 10)]
fn csv_crate_floor(bencher: divan::Bencher) {
    bench_floor(bencher, &generate(USERS));
}

/// The floor of the all-stale report: every key slot and timestamp filled,
/// so a larger file than the typical one (its own floor).
#[divan::bench(sample_count = 10)]
fn csv_crate_floor_all_stale(bencher: divan::Bencher) {
    bench_floor(bencher, &generate_all_stale(USERS));
}

#[divan::bench(sample_count = 10)]
fn parse_report(bencher: divan::Bencher) {
    let bytes = generate(USERS);
    bencher.bench(|| CredentialReport::parse(divan::black_box(&bytes)).expect("valid report"));
}

fn findings(bytes: &[u8]) -> usize {
    let set = policies();
    let report = CredentialReport::parse(bytes).expect("valid report");
    rules::evaluate_all(&set.policies, &report, now())
        .iter()
        .map(Vec::len)
        .sum()
}

fn bench_evaluate(bencher: divan::Bencher, bytes: &[u8]) {
    let set = policies();
    bencher.bench(|| {
        let report = CredentialReport::parse(divan::black_box(bytes)).expect("valid report");
        let findings: usize = rules::evaluate_all(&set.policies, &report, now())
            .iter()
            .map(Vec::len)
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
