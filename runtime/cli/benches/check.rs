//! The whole `engine check` on the shipped example: process start, policy
//! load, plugin compile, parse, rules, plugin calls, rendering.
//!
//! Run: `cargo bench -p engine-cli --bench check`

use std::process::Command;

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 20)]
fn check_example(bencher: divan::Bencher) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    bencher.bench(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .current_dir(root)
            .args([
                "check",
                "policies",
                "--report",
                "examples/credential-report.csv",
                "--now",
                "2026-11-28T00:00:00Z",
            ])
            .output()
            .expect("run engine");
        assert_eq!(out.status.code(), Some(2));
        divan::black_box(out.stdout.len())
    });
}
