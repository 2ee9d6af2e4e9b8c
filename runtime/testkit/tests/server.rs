//! The test server's call log and latency, driven with plain IAM query calls
//! over HTTP (what the SDK sends, minus a real signature: moto checks none).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use engine_testkit::{Faults, Moto, Request, SeedUser};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// An IAM query call: the HTTP status, or `None` when the connection was
/// closed without an answer.
fn iam(endpoint: &str, action: &str, params: &[(&str, &str)]) -> Option<u16> {
    let mut form = vec![("Action", action), ("Version", "2010-05-08")];
    form.extend_from_slice(params);
    // moto routes on the signature's credential scope; it checks no signature.
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20240101/{}/iam/aws4_request, \
         SignedHeaders=host, Signature=0000",
        engine_testkit::ACCESS_KEY_ID,
        engine_testkit::REGION
    );
    match agent()
        .post(format!("{endpoint}/"))
        .header("Authorization", auth)
        .send_form(form)
    {
        Ok(mut response) => {
            let _ = response.body_mut().read_to_string();
            Some(response.status().as_u16())
        }
        Err(_) => None,
    }
}

fn alice(moto: &Moto) -> Vec<String> {
    let created = Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap();
    let seeded = moto.seed(&[SeedUser::new("alice", created)
        .key(created, None, true)
        .key(created, None, true)]);
    seeded[0].keys.clone()
}

fn request(action: &str, user: Option<&str>, key_id: Option<&str>, status: u16) -> Request {
    Request {
        account: Some("123456789012".into()),
        action: action.into(),
        user: user.map(Into::into),
        key_id: key_id.map(Into::into),
        status,
        at: 0.0,
    }
}

/// The log without arrival times, to compare with [`request`]s.
fn untimed(log: Vec<Request>) -> Vec<Request> {
    log.into_iter().map(|r| Request { at: 0.0, ..r }).collect()
}

#[test]
fn the_request_log_records_each_call_with_its_user_key_and_status() {
    let moto = Moto::start();
    let keys = alice(&moto);
    let (k1, k2) = (keys[0].as_str(), keys[1].as_str());
    let ep = moto.endpoint();
    assert_eq!(moto.requests(), vec![], "seeding is not an API call");

    assert_eq!(
        iam(&ep, "ListAccessKeys", &[("UserName", "alice")]),
        Some(200)
    );
    let update = [
        ("UserName", "alice"),
        ("AccessKeyId", k1),
        ("Status", "Inactive"),
    ];
    assert_eq!(iam(&ep, "UpdateAccessKey", &update), Some(200));
    let delete1 = [("UserName", "alice"), ("AccessKeyId", k1)];
    assert_eq!(iam(&ep, "DeleteAccessKey", &delete1), Some(200));
    assert_eq!(iam(&ep, "DeleteAccessKey", &delete1), Some(404));
    assert_eq!(iam(&ep, "GetUser", &[]), Some(200));

    // Injected faults are logged too: a throttle with its 400, a drop with 0.
    let delete2 = [("UserName", "alice"), ("AccessKeyId", k2)];
    moto.faults(&Faults {
        throttle: 1.0,
        max: Some(1),
        actions: Some(vec!["DeleteAccessKey".into()]),
        ..Faults::default()
    });
    assert_eq!(iam(&ep, "DeleteAccessKey", &delete2), Some(400));
    moto.faults(&Faults {
        drop: 1.0,
        max: Some(1),
        actions: Some(vec!["UpdateAccessKey".into()]),
        ..Faults::default()
    });
    let update2 = [
        ("UserName", "alice"),
        ("AccessKeyId", k2),
        ("Status", "Inactive"),
    ];
    assert_eq!(iam(&ep, "UpdateAccessKey", &update2), None);
    moto.faults(&Faults::default());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let log = moto.requests();
    // Arrival times, in order, from this test's own few seconds.
    assert!(
        log.windows(2).all(|w| w[0].at <= w[1].at)
            && log
                .iter()
                .all(|r| r.at > before - 60.0 && r.at <= before + 1.0),
        "{log:?}"
    );
    let log = untimed(log);
    assert_eq!(
        log,
        vec![
            request("ListAccessKeys", Some("alice"), None, 200),
            request("UpdateAccessKey", Some("alice"), Some(k1), 200),
            request("DeleteAccessKey", Some("alice"), Some(k1), 200),
            request("DeleteAccessKey", Some("alice"), Some(k1), 404),
            request("GetUser", None, None, 200),
            request("DeleteAccessKey", Some("alice"), Some(k2), 400),
            request("UpdateAccessKey", Some("alice"), Some(k2), 0),
        ]
    );
    // What a test asks of it: how many deletes each key received.
    let deletes = |key: &str| {
        log.iter()
            .filter(|r| r.action == "DeleteAccessKey" && r.key_id.as_deref() == Some(key))
            .count()
    };
    assert_eq!((deletes(k1), deletes(k2)), (2, 1));
    // The dropped update did reach moto.
    let state = moto.state();
    assert_eq!(
        state.user("alice").unwrap().key(k2).unwrap().status,
        "Inactive"
    );
    // The counts agree with the log.
    assert_eq!(moto.total_calls(), log.len() as u64);

    moto.reset_calls();
    assert_eq!(moto.requests(), vec![]);
    assert_eq!(moto.total_calls(), 0);
    assert_eq!(
        iam(&ep, "ListAccessKeys", &[("UserName", "alice")]),
        Some(200)
    );
    assert_eq!(
        untimed(moto.requests()),
        vec![request("ListAccessKeys", Some("alice"), None, 200)]
    );
}

#[test]
fn latency_delays_matching_calls_after_moto_processed_them() {
    let moto = Moto::start();
    let keys = alice(&moto);
    let ep = moto.endpoint();
    let latency = Duration::from_millis(600);
    // Warm moto up, so its first-call set-up is not measured.
    assert_eq!(iam(&ep, "GetUser", &[]), Some(200));

    moto.faults_with_latency(
        &Faults {
            actions: Some(vec!["ListAccessKeys".into(), "DeleteAccessKey".into()]),
            ..Faults::default()
        },
        latency,
    );

    let started = Instant::now();
    assert_eq!(
        iam(&ep, "ListAccessKeys", &[("UserName", "alice")]),
        Some(200)
    );
    let one = started.elapsed();
    assert!(one >= latency, "a delayed call took {one:?}");

    // Other actions are not delayed.
    let started = Instant::now();
    assert_eq!(iam(&ep, "GetUser", &[]), Some(200));
    let other = started.elapsed();
    assert!(other < latency, "an undelayed call took {other:?}");

    // Two delayed calls at once wait side by side, not one after the other.
    let started = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let ep = ep.clone();
            std::thread::spawn(move || iam(&ep, "ListAccessKeys", &[("UserName", "alice")]))
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().unwrap(), Some(200));
    }
    let both = started.elapsed();
    assert!(both >= latency, "two delayed calls took {both:?}");
    assert!(
        both < latency * 3 / 2,
        "two concurrent delayed calls took {both:?}: the server serialized them"
    );

    // The write is done while its caller still waits for the answer.
    let (done_tx, done_rx) = mpsc::channel();
    let key = keys[0].clone();
    let delete = {
        let (ep, key) = (ep.clone(), key.clone());
        std::thread::spawn(move || {
            let status = iam(
                &ep,
                "DeleteAccessKey",
                &[("UserName", "alice"), ("AccessKeyId", &key)],
            );
            let _ = done_tx.send(());
            status
        })
    };
    let deadline = Instant::now() + latency;
    loop {
        let state = moto.state();
        if state.user("alice").unwrap().key(&key).is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto did not delete the key before the answer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        done_rx.try_recv().is_err(),
        "the delete was answered before the latency"
    );
    // In flight: logged, not yet answered.
    let in_flight = untimed(moto.requests());
    assert_eq!(
        in_flight.last(),
        Some(&request("DeleteAccessKey", Some("alice"), Some(&key), 0))
    );
    assert_eq!(delete.join().unwrap(), Some(200));
    assert_eq!(
        untimed(moto.requests()).last(),
        Some(&request("DeleteAccessKey", Some("alice"), Some(&key), 200))
    );

    // Latency is not a fault, and `faults` without it turns it off.
    assert_eq!(
        moto.injected(),
        engine_testkit::Injected {
            throttled: 0,
            dropped: 0
        }
    );
    moto.faults(&Faults::default());
    let started = Instant::now();
    assert_eq!(
        iam(&ep, "ListAccessKeys", &[("UserName", "alice")]),
        Some(200)
    );
    let off = started.elapsed();
    assert!(off < latency, "latency still on: {off:?}");
}

#[test]
fn latency_applies_to_every_matching_call_regardless_of_max_and_delays_faults() {
    let moto = Moto::start();
    let ep = moto.endpoint();
    alice(&moto);
    let latency = Duration::from_millis(300);
    assert_eq!(iam(&ep, "GetUser", &[]), Some(200));

    // One throttle (max 1), latency on every call: the throttled one too.
    moto.faults_with_latency(
        &Faults {
            throttle: 1.0,
            max: Some(1),
            ..Faults::default()
        },
        latency,
    );
    for expected in [400, 200, 200] {
        let started = Instant::now();
        assert_eq!(
            iam(&ep, "ListAccessKeys", &[("UserName", "alice")]),
            Some(expected)
        );
        let took = started.elapsed();
        assert!(took >= latency, "a {expected} call took {took:?}");
    }
    assert_eq!(moto.injected().throttled, 1);
}
