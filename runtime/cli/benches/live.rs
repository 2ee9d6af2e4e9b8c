//! Wall time and API calls of `engine check` and `engine apply` on an
//! account of 2,000 seeded users in moto (the real binary, SDK and plugins).
//!
//! Run: `ENGINE_TEST_PYTHON=$PWD/.venv/bin/python cargo bench -p engine-cli --bench live`
//! (after `scripts/test` has created .venv). Under `cargo test` it does nothing.
//!
//! The floor of `check`: the time moto itself needs to answer the same calls
//! at the same concurrency, measured by replaying the calls the engine made
//! (from moto's request log) with a plain HTTP client, without the engine:
//! the report's calls one after another, then the `ListAccessKeys` calls
//! four at a time (`--concurrency 4`, the default). Best of three each.

use std::process::Command;
use std::time::Instant;

use engine_testkit::measure;

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
    let run = |args: &[&str]| -> std::time::Duration {
        moto.reset_calls();
        let m = measure::run(
            Command::new(env!("CARGO_BIN_EXE_engine"))
                .args(args)
                .current_dir(&dir)
                .env("AWS_ENDPOINT_URL", moto.endpoint())
                .env("AWS_ACCESS_KEY_ID", &own_key)
                .env("AWS_SECRET_ACCESS_KEY", "x")
                .env("AWS_REGION", "us-east-1"),
        );
        let calls = moto.calls();
        // Only `check` has a memory goal; `apply` also holds what it wrote.
        let goal = if args[0] == "check" {
            " (goal: under 20)"
        } else {
            ""
        };
        println!(
            "engine {}: exit {:?}, {:.2} s, peak RSS {:.1} MB{goal}, {} API calls {:?}",
            args[0],
            m.code,
            m.wall.as_secs_f64(),
            m.peak_mb(),
            calls.values().sum::<u64>(),
            calls
        );
        m.wall
    };
    println!("{USERS} users seeded");
    let mut checks = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..3 {
        checks.push(run(&["check", "policies"]));
        floors.push(replay(&moto, &moto.requests(), 4));
    }
    let best = |v: &[std::time::Duration]| v.iter().min().copied().unwrap_or_default();
    let (check, floor) = (best(&checks), best(&floors));
    println!(
        "check: {:.3} s, moto's floor for the same calls: {:.3} s, ratio {:.2} (goal within 1.2)",
        check.as_secs_f64(),
        floor.as_secs_f64(),
        check.as_secs_f64() / floor.as_secs_f64()
    );
    run(&["apply", "policies", "--auto-approve"]);
    run(&["apply", "policies", "--auto-approve"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Send `calls` again to moto with a plain HTTP client: every call but
/// `ListAccessKeys` in order, then those `concurrency` at a time. Their
/// wall time.
fn replay(
    moto: &Moto,
    calls: &[engine_testkit::Request],
    concurrency: usize,
) -> std::time::Duration {
    let url = format!("{}/", moto.endpoint());
    let send = |agent: &ureq::Agent, action: &str, user: Option<&str>| {
        let mut form = vec![("Action", action), ("Version", "2010-05-08")];
        if let Some(u) = user {
            form.push(("UserName", u));
        }
        let service = if action == "GetCallerIdentity" {
            "sts"
        } else {
            "iam"
        };
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIAREPLAY/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let _ = agent
            .post(&url)
            .header("Authorization", &auth)
            .send_form(form);
    };
    let agent = ureq::Agent::new_with_defaults();
    let started = Instant::now();
    for c in calls.iter().filter(|c| c.action != "ListAccessKeys") {
        send(&agent, &c.action, c.user.as_deref());
    }
    let users: Vec<&str> = calls
        .iter()
        .filter(|c| c.action == "ListAccessKeys")
        .filter_map(|c| c.user.as_deref())
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                let agent = ureq::Agent::new_with_defaults();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(user) = users.get(i) else { break };
                    send(&agent, "ListAccessKeys", Some(user));
                }
            });
        }
    });
    started.elapsed()
}
