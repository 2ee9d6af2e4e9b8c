//! Wall time and API calls of `engine check` and `engine apply` on an
//! account of 2,000 seeded users in moto (the real binary, SDK and plugins).
//!
//! Run: `ENGINE_TEST_PYTHON=$PWD/.venv/bin/python cargo bench -p engine-cli --bench live`
//! (after `scripts/test` has created .venv). Under `cargo test` it does nothing.

use std::process::Command;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser};

const USERS: usize = 2000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let days = |d: i64| Utc::now() - TimeDelta::days(d);
    let moto = Moto::start();
    let mut users = Vec::new();
    for i in 0..USERS {
        let u = SeedUser::new(&format!("user-{i:05}"), days(900));
        users.push(match i % 5 {
            0 => u.key(days(200), Some(days(1)), true),
            1 => u.password(days(300), Some(days(150))),
            2 => u.key(days(120), Some(days(100)), true),
            3 => u
                .key(days(10), Some(days(1)), true)
                .password(days(10), Some(days(1))),
            _ => u,
        });
    }
    users.push(SeedUser::new("engine-bot", days(900)).key(days(10), None, true));
    let seeded = moto.seed(&users);
    let own_key = seeded
        .last()
        .and_then(|s| s.keys.first().cloned())
        .expect("engine-bot key");
    let dir = std::env::temp_dir().join(format!("engine-bench-live-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("policies/p.toml"),
        "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 180\nmax_actions_per_run = 5000\n\n\
         [policy.unused]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\nmax_actions_per_run = 5000\n",
    )
    .expect("policies");
    let run = |args: &[&str]| {
        moto.reset_calls();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(args)
            .current_dir(&dir)
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &own_key)
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("run engine");
        let elapsed = started.elapsed();
        let calls = moto.calls();
        println!(
            "engine {}: exit {:?}, {:.2} s, {} API calls {:?}",
            args[0],
            out.status.code(),
            elapsed.as_secs_f64(),
            calls.values().sum::<u64>(),
            calls
        );
    };
    println!("{USERS} users seeded");
    run(&["check", "policies"]);
    run(&["apply", "policies", "--auto-approve"]);
    run(&["apply", "policies", "--auto-approve"]);
    let _ = std::fs::remove_dir_all(&dir);
}
