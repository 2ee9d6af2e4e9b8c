//! From an AWS Config event to the IAM write: how long an idle daemon takes.
//!
//! Run: `ENGINE_TEST_PYTHON=$PWD/.venv/bin/python cargo bench -p engine-cli --bench events`
//! (after `scripts/test` has created .venv). Under `cargo test` it does nothing.
//!
//! One moto server holds IAM (users with a 200-day-old key each), an SQS
//! queue and an EventBridge rule routing `Config Rules Compliance Change`
//! events to it. `engine daemon` reads the queue (its policies' schedule is
//! yearly: it is idle). For each user, one `PutEvents` of a NON_COMPLIANT
//! change; the figure is the time from just before `PutEvents` to the
//! arrival of that user's `DeleteAccessKey` at moto (moto's own request log,
//! on the same clock), and to the message's deletion from the queue. The
//! events are put one at a time, each after the previous one was handled.
//!
//! The pipeline this replaces needs AWS Config's evaluation (minutes) and a
//! Lambda cold start before its first write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser};
use serde_json::json;

const USERS: usize = 20;
const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let moto = Moto::start();
    let old = Utc::now() - TimeDelta::days(200);
    let mut users: Vec<SeedUser> = (0..USERS)
        .map(|i| SeedUser::new(&format!("user-{i:02}"), old).key(old, Some(old), true))
        .collect();
    users.push(SeedUser::new("engine-bot", old).key(Utc::now(), None, true));
    let seeded = moto.seed(&users);
    let own = seeded[USERS].keys[0].clone();
    let state = moto.state();

    let (url, arn) = moto.create_queue(REGION, "engine-events", &[]);
    moto.route_events_to_queue(
        REGION,
        "engine-config-events",
        &json!({"source": ["aws.config"], "detail-type": ["Config Rules Compliance Change"]}),
        &arn,
    );
    let dir = std::env::temp_dir().join(format!("engine-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(
        dir.join("policies/rotate.toml"),
        format!(
            "[aws_config]\nregion = \"{REGION}\"\nevents_queue = \"{url}\"\n\n\
             [policy.rotate]\nrule = \"cis-1.4\"\naws_config_rule = \"access-keys-rotated\"\n\
             schedule = \"0 0 0 1 1 *\"\n"
        ),
    )
    .expect("policy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["daemon", "policies", "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", &own)
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the daemon reads the queue within 60 s");
        if line.contains("reading AWS Config events from the queue") {
            break;
        }
    }
    // Let the start-up calls (identity probe, Config rule) settle: idle.
    std::thread::sleep(Duration::from_secs(2));

    let mut to_write = Vec::new();
    let mut to_delete = Vec::new();
    for (i, user) in seeded.iter().take(USERS).enumerate() {
        let id = state
            .user(&user.name)
            .map(|u| u.id.clone())
            .expect("seeded user");
        let key = user.keys[0].clone();
        let t0 = now_epoch();
        moto.put_events(
            REGION,
            &[(
                "aws.config",
                "Config Rules Compliance Change",
                json!({
                    "configRuleName": "engine-rotate",
                    "messageType": "ComplianceChangeNotification",
                    "resourceType": "AWS::IAM::User",
                    "resourceId": id,
                    "awsAccountId": ACCOUNT,
                    "newEvaluationResult": {"complianceType": "NON_COMPLIANT"}
                }),
            )],
        );
        let wait = Instant::now() + Duration::from_secs(30);
        let written = loop {
            if let Some(r) = moto.requests().into_iter().find(|r| {
                r.action == "DeleteAccessKey" && r.key_id.as_deref() == Some(key.as_str())
            }) {
                break r.at;
            }
            assert!(
                Instant::now() < wait,
                "no DeleteAccessKey for {} within 30 s",
                user.name
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        loop {
            if moto.queue_depth(REGION, &url) == (0, 0) {
                break;
            }
            assert!(
                Instant::now() < wait,
                "the message of {} was not deleted",
                user.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let deleted = now_epoch();
        to_write.push(written - t0);
        to_delete.push(deleted - t0);
        if i == 0 {
            println!(
                "first event (cold: the user directory is listed): {:.0} ms to the write",
                (written - t0) * 1000.0
            );
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        let median = v[v.len() / 2];
        (v[0] * 1000.0, median * 1000.0, v[v.len() - 1] * 1000.0)
    };
    let (wmin, wmed, wmax) = stats(&mut to_write);
    let (dmin, dmed, dmax) = stats(&mut to_delete);
    println!(
        "\n== From PutEvents to the IAM write, idle daemon, {USERS} events one at a time (goal < 2000 ms) =="
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "", "min", "median", "max");
    println!(
        "{:<44} {:>6.0} ms {:>6.0} ms {:>6.0} ms",
        "PutEvents -> DeleteAccessKey at moto", wmin, wmed, wmax
    );
    println!(
        "{:<44} {:>6.0} ms {:>6.0} ms {:>6.0} ms",
        "PutEvents -> message deleted (run journaled)", dmin, dmed, dmax
    );
}
