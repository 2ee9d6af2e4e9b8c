//! One poll of 100 scheduled policies, on time and after a one-hour jump.
//!
//! Run: `cargo bench -p engine-daemon --bench poll`

use chrono::{DateTime, TimeDelta, Utc};
use engine_daemon::{Schedule, Scheduler};

fn main() {
    divan::main();
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_824_000, 0).expect("valid instant") // 2026-11-28
}

fn scheduler() -> Scheduler {
    let names: Vec<String> = (0..100).map(|i| format!("policy-{i:03}")).collect();
    let exprs: Vec<String> = (0..100)
        .map(|i| format!("{} */{} * * * *", i % 60, 1 + i % 5))
        .collect();
    let schedule = Schedule::from_expressions(
        names
            .iter()
            .zip(&exprs)
            .map(|(n, e)| (n.as_str(), Some(e.as_str()))),
    )
    .expect("valid schedules");
    Scheduler::new(schedule, start())
}

#[divan::bench]
fn on_time(bencher: divan::Bencher) {
    bencher
        .with_inputs(scheduler)
        .bench_local_values(|mut s| s.poll(start() + TimeDelta::minutes(1), false));
}

#[divan::bench]
fn after_one_hour_jump(bencher: divan::Bencher) {
    bencher
        .with_inputs(scheduler)
        .bench_local_values(|mut s| s.poll(start() + TimeDelta::hours(1), false));
}
