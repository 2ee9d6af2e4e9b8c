//! The whole `engine check --report` on generated accounts of 10,000,
//! 100,000 and 1,000,000 users: wall time and peak memory of the process,
//! JSON and human output included (written to /dev/null), so that growth
//! with the number of users shows.
//!
//! Run: `cargo bench -p engine-cli --bench scale` (Linux: peak memory from
//! `wait4`). Under `cargo test` it does nothing. `ENGINE_BENCH_SCALE`
//! (e.g. `10000,100000`) picks the sizes.

use std::path::Path;
use std::process::Command;

use engine_testkit::measure;

/// `engine ARGS` in `dir`: wall time, peak memory, exit code.
fn run(dir: &Path, args: &[&str]) -> measure::Measured {
    measure::run(
        Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1"),
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("ENGINE_BENCH_SCALE")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let dir = std::env::temp_dir().join(format!("engine-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("policies/p.toml"),
        "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"user-1?\"]\n\n\
         [policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n",
    )
    .expect("policies");
    let now = engine_testkit::report::now().to_rfc3339();
    println!("\n== engine check --report, whole process, output to /dev/null ==");
    println!(
        "{:>9} {:>10} {:>6} {:>10} {:>9} {:>11} {:>9} {:>11}",
        "users", "report MB", "", "json s", "json MB", "json us/user", "human s", "human MB"
    );
    for users in sizes {
        for all_stale in [false, true] {
            let bytes = engine_testkit::report::generate(users, all_stale);
            let file = dir.join(format!("report-{users}-{all_stale}.csv"));
            std::fs::write(&file, &bytes).expect("report");
            let report = file.display().to_string();
            let args = |format: &'static str| {
                vec![
                    "check".to_string(),
                    "policies".into(),
                    "--report".into(),
                    report.clone(),
                    "--now".into(),
                    now.clone(),
                    "--format".into(),
                    format.into(),
                ]
            };
            let json_args = args("json");
            let human_args = args("human");
            let json = run(
                &dir,
                &json_args.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            let human = run(
                &dir,
                &human_args.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            for (r, a) in [(&json, &json_args), (&human, &human_args)] {
                if r.code != Some(2) {
                    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
                        .args(a)
                        .current_dir(&dir)
                        .output()
                        .expect("run engine");
                    let err = String::from_utf8_lossy(&out.stderr);
                    panic!(
                        "exit {:?} (findings expected, 2) for {users} users:\n{}",
                        r.code,
                        err.chars()
                            .rev()
                            .take(2000)
                            .collect::<String>()
                            .chars()
                            .rev()
                            .collect::<String>()
                    );
                }
            }
            println!(
                "{users:>9} {:>10.1} {:>6} {:>10.3} {:>9.1} {:>11.2} {:>9.3} {:>11.1}",
                bytes.len() as f64 / 1e6,
                if all_stale { "stale" } else { "mixed" },
                json.wall.as_secs_f64(),
                json.peak_mb(),
                json.wall.as_secs_f64() * 1e6 / users as f64,
                human.wall.as_secs_f64(),
                human.peak_mb()
            );
            let _ = std::fs::remove_file(&file);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
