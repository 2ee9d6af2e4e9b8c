//! An organization of 20 accounts in one `engine check`: wall time at
//! `--account-concurrency` 1 and 8 with 50 ms of latency on every IAM/STS
//! call (AWS's round trip), API calls per account against the floor, and
//! peak memory of 20 accounts against one.
//!
//! Run: `ENGINE_TEST_PYTHON=$PWD/.venv/bin/python cargo bench -p engine-cli --bench accounts`
//! (after `scripts/test` has created .venv). Under `cargo test` it does
//! nothing. Linux only (peak memory from `wait4`).
//!
//! Each account holds 5 users with a 200-day-old key and 5 with a fresh
//! one, and every run generates a new credential report
//! (`--report-max-age 0s`, as a first run does). The floor per account:
//! `AssumeRole` (made from the management account), `GetCallerIdentity`,
//! the report's `GetCredentialReport` (is there a young enough one?),
//! `GenerateCredentialReport` until it says COMPLETE (twice, in moto) and
//! `GetCredentialReport`, and one `ListAccessKeys` per user with a key
//! finding: 11.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use engine_testkit::{Faults, Moto, SeedUser, measure};

const ACCOUNTS: usize = 20;
const STALE: usize = 5;
const FRESH: usize = 5;
const LATENCY: Duration = Duration::from_millis(50);
const ROLE: &str = "EngineRemediation";
/// Per account: AssumeRole, GetCallerIdentity, four report calls, and a
/// ListAccessKeys per stale user.
const FLOOR: usize = 2 + 4 + STALE;

/// Run `engine ARGS` in `dir`, with the wall time and the child's peak RSS.
fn run(dir: &Path, moto: &Moto, own_key: &str, args: &[&str]) -> measure::Measured {
    measure::run(
        Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", own_key)
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start();
    let old = Utc::now() - TimeDelta::days(200);
    let new = Utc::now() - TimeDelta::days(10);
    let own = moto.seed(&[SeedUser::new("engine-bot", old).key(new, None, true)]);
    let own_key = own[0].keys[0].clone();
    let root = moto.create_organization();
    let unit = moto.create_organizational_unit(&root, "workloads");
    let mut members = Vec::new();
    for i in 0..ACCOUNTS {
        let id = moto.create_account(&format!("member-{i:02}"), &root, &unit);
        moto.create_role(&id, ROLE, None);
        let mut users: Vec<SeedUser> = (0..STALE)
            .map(|u| SeedUser::new(&format!("stale-{u}"), old).key(old, Some(new), true))
            .collect();
        users.extend(
            (0..FRESH).map(|u| SeedUser::new(&format!("fresh-{u}"), old).key(new, Some(new), true)),
        );
        moto.seed_in(&id, &users);
        members.push(id);
    }
    let base = std::env::temp_dir().join(format!("engine-bench-accounts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let policies = |name: &str, table: &str| {
        let dir = base.join(name);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(
            dir.join("policies/p.toml"),
            format!("{table}\n[policy.rotate]\nrule = \"cis-1.4\"\n"),
        )
        .expect("policies");
        dir
    };
    let org_dir = policies(
        "org",
        &format!(
            "[accounts]\norganizational_units = [\"{unit}\"]\norganization = true\nrole = \"{ROLE}\"\n"
        ),
    );
    let one_dir = policies(
        "one",
        &format!(
            "[accounts]\nids = [\"{}\"]\nrole = \"{ROLE}\"\n",
            members[0]
        ),
    );
    moto.faults_with_latency(&Faults::default(), LATENCY);

    println!(
        "\n== engine check of an organization: {ACCOUNTS} accounts x {} users, {} ms per IAM/STS call ==",
        STALE + FRESH,
        LATENCY.as_millis()
    );
    let mut walls = BTreeMap::new();
    for concurrency in [1, 8] {
        moto.reset_calls();
        let c = concurrency.to_string();
        // A new report every time (as for a first run): the same calls at
        // every concurrency.
        let r = run(
            &org_dir,
            &moto,
            &own_key,
            &[
                "check",
                "policies",
                "--account-concurrency",
                &c,
                "--report-max-age",
                "0s",
            ],
        );
        assert_eq!(r.code, Some(2), "findings expected");
        let requests = moto.requests();
        if concurrency == 1 {
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for q in requests
                .iter()
                .filter(|q| q.account.as_deref() == Some(members[0].as_str()))
            {
                *ops.entry(q.action.as_str()).or_insert(0) += 1;
            }
            println!(
                "calls in account {} (besides its AssumeRole): {ops:?}",
                members[0]
            );
        }
        let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
        let mut assumes = 0;
        for q in &requests {
            if q.action == "AssumeRole" {
                assumes += 1;
            } else if let Some(a) = &q.account
                && members.contains(a)
            {
                *per_account.entry(a.clone()).or_insert(0) += 1;
            }
        }
        let min = per_account.values().min().copied().unwrap_or(0) + assumes / ACCOUNTS;
        let max = per_account.values().max().copied().unwrap_or(0) + assumes.div_ceil(ACCOUNTS);
        println!(
            "concurrency {concurrency}: wall {:>6.2} s, peak RSS {:>6.1} MB, API calls {} in all, per account {min}..{max} (floor {FLOOR}), AssumeRole {assumes}",
            r.wall.as_secs_f64(),
            r.peak_kb as f64 / 1024.0,
            requests.len()
        );
        walls.insert(concurrency, (r.wall, r.peak_kb));
    }
    moto.reset_calls();
    let one = run(
        &one_dir,
        &moto,
        &own_key,
        &["check", "policies", "--report-max-age", "0s"],
    );
    assert_eq!(one.code, Some(2));
    println!(
        "one account:   wall {:>6.2} s, peak RSS {:>6.1} MB, API calls {}",
        one.wall.as_secs_f64(),
        one.peak_kb as f64 / 1024.0,
        moto.requests().len()
    );
    let (w1, _) = walls[&1];
    let (w8, p8) = walls[&8];
    println!(
        "speed-up at 8: {:.1}x (goal at least 5x); peak RSS, 20 accounts at 8 / one account: {:.2} (goal under 2)",
        w1.as_secs_f64() / w8.as_secs_f64(),
        p8 as f64 / one.peak_kb as f64
    );
    moto.faults(&Faults::default());
    let _ = std::fs::remove_dir_all(&base);
    println!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}
