//! The adapter against moto's IAM/STS server, through the real SDK over HTTP.
//!
//! Each test starts its own server (see `engine-testkit`), seeds it through
//! moto's Python API where dates must be backdated, and checks both what the
//! adapter returns and what moto ends up holding.

use std::sync::Mutex;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;
use chrono::{DateTime, TimeZone, Utc};
use engine_aws::{Aws, AwsError, AwsOptions, ReportProgress, WriteOutcome};
use engine_core::report::{CredentialReport, Flag, Stamp};
use engine_testkit::{Faults, Moto, SeedUser};

fn date(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// Options for tests: fast retries, so fault tests stay quick.
fn options() -> AwsOptions {
    AwsOptions {
        initial_backoff: Duration::from_millis(5),
        report_max_wait: Duration::from_secs(30),
        ..AwsOptions::default()
    }
}

async fn connect(moto: &Moto, opts: AwsOptions) -> Aws {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            engine_testkit::ACCESS_KEY_ID,
            engine_testkit::SECRET_ACCESS_KEY,
            None,
            None,
            "engine-test",
        ))
        .region(Region::new(engine_testkit::REGION))
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    Aws::from_sdk_config(&config, &opts)
        .await
        .expect("static credentials resolve")
}

/// The users most tests start from.
fn people() -> Vec<SeedUser> {
    vec![
        SeedUser::new("alice", date(2019, 1, 2, 3, 4, 5))
            .password(date(2019, 2, 1, 0, 0, 0), Some(date(2019, 3, 1, 12, 30, 0)))
            .key(
                date(2019, 1, 3, 0, 0, 0),
                Some(date(2019, 5, 5, 5, 5, 5)),
                true,
            )
            .key(date(2019, 1, 4, 8, 9, 10), None, false),
        SeedUser::new("bob", date(2020, 6, 1, 0, 0, 0)),
        SeedUser::new("carol", date(2021, 7, 8, 9, 10, 11))
            .path("/engineering/")
            .password(date(2021, 7, 9, 0, 0, 0), None)
            .key(date(2021, 7, 10, 11, 12, 13), None, true),
    ]
}

async fn fetch(aws: &Aws) -> (engine_aws::FetchedReport, Vec<ReportProgress>) {
    let seen = Mutex::new(Vec::new());
    let report = aws
        .credential_report(&|p| seen.lock().unwrap().push(p))
        .await
        .expect("credential report");
    (report, seen.into_inner().unwrap())
}

#[tokio::test]
async fn credential_report_carries_seeded_backdated_dates() {
    let moto = Moto::start();
    moto.seed(&people());
    let aws = connect(&moto, options()).await;

    let (fetched, progress) = fetch(&aws).await;
    assert!(!fetched.reused);
    // GetCredentialReport (not present), GenerateCredentialReport (STARTED),
    // GenerateCredentialReport (COMPLETE), GetCredentialReport.
    assert_eq!(fetched.api_calls, 4);
    assert_eq!(
        moto.calls().into_iter().collect::<Vec<_>>(),
        [
            ("GenerateCredentialReport".to_string(), 2),
            ("GetCredentialReport".to_string(), 2)
        ]
    );
    assert_eq!(
        progress,
        [
            ReportProgress::Generating,
            ReportProgress::Waiting {
                attempt: 1,
                state: "STARTED".into(),
                next_poll: Duration::from_millis(250)
            },
            ReportProgress::Downloading,
        ]
    );
    // Stamped with the time it was generated, as AWS does.
    let age = chrono::Utc::now() - fetched.generated_at;
    assert!(
        age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(1),
        "{}",
        fetched.generated_at
    );

    let report = CredentialReport::parse(&fetched.bytes).expect("moto's report parses");
    let row = |name: &str| report.rows.iter().find(|r| r.user() == name).unwrap();

    let alice = row("alice");
    assert_eq!(alice.arn(), "arn:aws:iam::123456789012:user/alice");
    assert_eq!(
        alice.user_creation_time,
        Stamp::At(date(2019, 1, 2, 3, 4, 5))
    );
    assert_eq!(alice.password_enabled, Flag::True);
    assert_eq!(
        alice.password_last_used,
        Stamp::At(date(2019, 3, 1, 12, 30, 0))
    );
    assert_eq!(
        alice.password_last_changed,
        Stamp::At(date(2019, 2, 1, 0, 0, 0))
    );
    assert!(alice.access_keys[0].active);
    assert_eq!(
        alice.access_keys[0].last_rotated,
        Stamp::At(date(2019, 1, 3, 0, 0, 0))
    );
    assert_eq!(
        alice.access_keys[0].last_used_date,
        Stamp::At(date(2019, 5, 5, 5, 5, 5))
    );
    assert!(!alice.access_keys[1].active);
    assert_eq!(
        alice.access_keys[1].last_rotated,
        Stamp::At(date(2019, 1, 4, 8, 9, 10))
    );
    assert_eq!(alice.access_keys[1].last_used_date, Stamp::NotApplicable);

    let bob = row("bob");
    assert_eq!(bob.password_enabled, Flag::False);
    assert_eq!(bob.password_last_used, Stamp::NotApplicable);
    assert_eq!(bob.password_last_changed, Stamp::NotApplicable);
    assert!(!bob.access_keys[0].active);
    assert_eq!(bob.access_keys[0].last_rotated, Stamp::NotApplicable);

    let carol = row("carol");
    assert_eq!(
        carol.arn(),
        "arn:aws:iam::123456789012:user/engineering/carol"
    );
    assert_eq!(carol.password_last_used, Stamp::NoInformation);
    assert_eq!(carol.access_keys[0].last_used_date, Stamp::NotApplicable);
}

#[tokio::test]
async fn a_recent_report_is_reused_and_an_old_one_regenerated() {
    let moto = Moto::start();
    moto.seed(&people());

    // A max age of a century reuses anything.
    let patient = connect(
        &moto,
        AwsOptions {
            report_max_age: Duration::from_secs(100 * 365 * 24 * 3600),
            ..options()
        },
    )
    .await;
    let (first, _) = fetch(&patient).await;
    assert!(!first.reused, "nothing to reuse on a fresh server");

    moto.reset_calls();
    let (second, progress) = fetch(&patient).await;
    assert!(second.reused);
    assert_eq!(second.api_calls, 1);
    assert!(progress.is_empty());
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(moto.total_calls(), 1);

    // With the default 4 hours, a report generated 5 hours ago is too old:
    // generate again (the frozen test server answers COMPLETE at once).
    moto.freeze_report(Some(chrono::Utc::now() - chrono::TimeDelta::hours(5)));
    let strict = connect(&moto, options()).await;
    moto.reset_calls();
    let (third, progress) = fetch(&strict).await;
    assert!(!third.reused);
    assert_eq!(third.api_calls, 3);
    assert_eq!(
        progress,
        [ReportProgress::Generating, ReportProgress::Downloading]
    );
}

#[tokio::test]
async fn report_gives_up_after_the_max_wait() {
    let moto = Moto::start();
    let aws = connect(
        &moto,
        AwsOptions {
            report_max_wait: Duration::from_millis(1500),
            max_attempts: 1,
            ..options()
        },
    )
    .await;
    moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["GenerateCredentialReport".into()]),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let err = aws.credential_report(&|_| {}).await.unwrap_err();
    assert!(
        matches!(&err, AwsError::ReportTimeout { last_state, .. } if last_state == "Throttling"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("run again later"), "{err}");
}

#[tokio::test]
async fn listed_key_dates_match_the_report_to_the_second() {
    let moto = Moto::start();
    let seeded = moto.seed(&people());
    let aws = connect(&moto, options()).await;

    let (fetched, _) = fetch(&aws).await;
    let report = CredentialReport::parse(&fetched.bytes).unwrap();
    for user in &seeded {
        let keys = aws.list_access_keys(&user.name).await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            user.keys,
            "{}",
            user.name
        );
        let row = report
            .rows
            .iter()
            .find(|r| *r.user() == *user.name)
            .unwrap();
        for (key, slot) in keys.iter().zip(&row.access_keys) {
            assert_eq!(
                Stamp::At(key.create_date),
                slot.last_rotated,
                "{}",
                user.name
            );
            assert_eq!(key.active, slot.active, "{}", user.name);
        }
    }
    let missing = aws.list_access_keys("nobody").await.unwrap_err();
    assert_eq!(missing.code(), Some("NoSuchEntity"), "{missing:?}");
}

#[tokio::test]
async fn writes_are_done_once_then_already_gone() {
    let moto = Moto::start();
    let seeded = moto.seed(&people());
    let aws = connect(&moto, options()).await;
    let alice_keys = &seeded[0].keys;
    let carol_key = &seeded[2].keys[0];

    assert_eq!(
        aws.delete_access_key("alice", &alice_keys[0])
            .await
            .unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(
        aws.delete_access_key("alice", &alice_keys[0])
            .await
            .unwrap(),
        WriteOutcome::AlreadyGone
    );
    assert_eq!(
        aws.delete_access_key("nobody", &alice_keys[0])
            .await
            .unwrap(),
        WriteOutcome::AlreadyGone
    );

    assert_eq!(
        aws.deactivate_access_key("carol", carol_key).await.unwrap(),
        WriteOutcome::Done
    );
    // Deactivating an inactive key is still a success: the state is what was asked.
    assert_eq!(
        aws.deactivate_access_key("carol", carol_key).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(
        aws.deactivate_access_key("carol", &alice_keys[0])
            .await
            .unwrap(),
        WriteOutcome::AlreadyGone
    );

    assert!(aws.login_profile_created("alice").await.unwrap().is_some());
    assert!(aws.login_profile_created("bob").await.unwrap().is_none());
    assert_eq!(
        aws.delete_login_profile("alice", chrono::Utc::now())
            .await
            .unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(
        aws.delete_login_profile("alice", chrono::Utc::now())
            .await
            .unwrap(),
        WriteOutcome::AlreadyGone
    );
    assert!(aws.login_profile_created("alice").await.unwrap().is_none());

    let state = moto.state();
    let alice = state.user("alice").unwrap();
    assert!(!alice.login_profile);
    assert_eq!(alice.keys.len(), 1);
    assert_eq!(alice.keys[0].id, alice_keys[1]);
    let carol = state.user("carol").unwrap();
    assert!(carol.login_profile);
    assert_eq!(carol.key(carol_key).unwrap().status, "Inactive");
    assert_eq!(
        carol.key(carol_key).unwrap().created,
        date(2021, 7, 10, 11, 12, 13)
    );
}

#[tokio::test]
async fn identity_names_the_key_in_use() {
    let moto = Moto::start();
    let aws = connect(&moto, options()).await;
    let me = aws.identity().await.unwrap();
    assert_eq!(me.account, engine_testkit::ACCOUNT_ID);
    assert_eq!(me.access_key_id, engine_testkit::ACCESS_KEY_ID);
    assert!(
        me.arn.starts_with("arn:aws:sts::123456789012:"),
        "{}",
        me.arn
    );
    assert_eq!(moto.calls().get("GetCallerIdentity"), Some(&1));
}

#[tokio::test]
async fn writes_end_in_the_right_state_despite_throttling_and_dropped_connections() {
    let moto = Moto::start();
    let users: Vec<SeedUser> = (0..12)
        .map(|i| {
            SeedUser::new(&format!("user{i:02}"), date(2018, 1, 1, 0, 0, 0))
                .password(date(2018, 1, 2, 0, 0, 0), None)
                .key(date(2018, 1, 3, 0, 0, 0), None, true)
                .key(date(2018, 1, 4, 0, 0, 0), None, true)
        })
        .collect();
    let seeded = moto.seed(&users);
    let aws = connect(&moto, options()).await;
    moto.faults(&Faults {
        throttle: 0.3,
        drop: 0.1,
        seed: 42,
        actions: None,
        max: None,
        after_drop: Vec::new(),
    });

    let mut operations = 0u64;
    let mut done_on_retry = 0;
    for user in &seeded {
        let outcomes = [
            aws.deactivate_access_key(&user.name, &user.keys[0]).await,
            aws.delete_access_key(&user.name, &user.keys[1]).await,
            aws.delete_login_profile(&user.name, chrono::Utc::now())
                .await,
        ];
        operations += 3;
        for outcome in outcomes {
            // A dropped connection after the write makes the retry find it
            // gone: that is the engine's own write, not someone else's.
            match outcome.expect("writes succeed through faults") {
                WriteOutcome::Done => {}
                WriteOutcome::DoneOnRetry => done_on_retry += 1,
                WriteOutcome::AlreadyGone | WriteOutcome::Replaced(_) => {
                    panic!("nobody else changes anything here")
                }
            }
        }
    }
    let (fetched, _) = fetch(&aws).await;
    operations += u64::from(fetched.api_calls);
    let report = CredentialReport::parse(&fetched.bytes).unwrap();

    let injected = moto.injected();
    moto.faults(&Faults::default());
    let calls = moto.calls();
    let total: u64 = calls.values().sum();
    println!(
        "{operations} operations took {total} API calls ({injected:?}; \
         {done_on_retry} writes done on retry): {calls:?}"
    );
    assert!(
        injected.throttled > 0 && injected.dropped > 0,
        "{injected:?}"
    );
    assert_eq!(total, operations + injected.throttled + injected.dropped);
    // Seed 42 drops at least one write after moto made it: its retry finds it gone.
    assert!(done_on_retry > 0);

    let state = moto.state();
    for user in &seeded {
        let now = state.user(&user.name).unwrap();
        assert!(!now.login_profile, "{}", user.name);
        assert_eq!(now.keys.len(), 1, "{}", user.name);
        assert_eq!(now.keys[0].id, user.keys[0]);
        assert_eq!(now.keys[0].status, "Inactive", "{}", user.name);
        let row = report
            .rows
            .iter()
            .find(|r| *r.user() == *user.name)
            .unwrap();
        assert_eq!(row.password_enabled, Flag::False);
        assert!(!row.access_keys[0].active);
    }
}
