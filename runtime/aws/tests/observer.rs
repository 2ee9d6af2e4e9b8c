//! The request observer sees every HTTP attempt the SDK makes, by operation
//! and outcome, through the real SDK over HTTP: against moto (with its
//! injected throttling and dropped connections), and against a canned HTTP
//! server for the statuses moto never answers with.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;
use chrono::{TimeZone, Utc};
use engine_aws::{Aws, AwsOptions, RequestObserver, RequestOutcome, WriteOutcome};
use engine_testkit::{Faults, Injected, Moto, SeedUser};

use RequestOutcome::{ClientError, Ok as Answered, ServerError, Throttled, Unanswered};

/// Records what it is told, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, RequestOutcome)>>);

impl RequestObserver for Recorder {
    fn request(&self, operation: &str, outcome: RequestOutcome) {
        self.0
            .lock()
            .expect("recorder lock")
            .push((operation.to_string(), outcome));
    }
}

impl Recorder {
    /// What was recorded since the last take.
    fn take(&self) -> Vec<(String, RequestOutcome)> {
        std::mem::take(&mut *self.0.lock().expect("recorder lock"))
    }
}

fn seen(list: &[(&str, RequestOutcome)]) -> Vec<(String, RequestOutcome)> {
    list.iter().map(|(op, o)| (op.to_string(), *o)).collect()
}

async fn connect(endpoint: &str, recorder: &Arc<Recorder>, max_attempts: u32) -> Aws {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            engine_testkit::ACCESS_KEY_ID,
            engine_testkit::SECRET_ACCESS_KEY,
            None,
            None,
            "engine-test",
        ))
        .region(Region::new(engine_testkit::REGION))
        .endpoint_url(endpoint)
        .load()
        .await;
    let observer: Arc<dyn RequestObserver> = recorder.clone();
    let opts = AwsOptions {
        initial_backoff: Duration::from_millis(5),
        max_attempts,
        observer: Some(observer),
        ..AwsOptions::default()
    };
    Aws::from_sdk_config(&config, &opts)
        .await
        .expect("static credentials resolve")
}

#[tokio::test]
async fn every_attempt_is_seen_with_its_outcome() {
    let moto = Moto::start();
    let created = Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap();
    let seeded = moto.seed(&[SeedUser::new("alice", created)
        .key(created, None, true)
        .key(created, None, true)]);
    let keys = &seeded[0].keys;
    let recorder = Arc::new(Recorder::default());
    let aws = connect(&moto.endpoint(), &recorder, 8).await;

    // STS, and the IAM read client: one attempt each.
    aws.identity().await.expect("identity");
    assert_eq!(aws.list_access_keys("alice").await.unwrap().len(), 2);
    let missing = aws.list_access_keys("nobody").await.unwrap_err();
    assert_eq!(missing.code(), Some("NoSuchEntity"));
    assert_eq!(
        recorder.take(),
        seen(&[
            ("GetCallerIdentity", Answered),
            ("ListAccessKeys", Answered),
            ("ListAccessKeys", ClientError),
        ])
    );

    // The SDK's retries are seen one by one: throttled once, then answered.
    moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["ListAccessKeys".into()]),
        max: Some(1),
        ..Faults::default()
    });
    assert_eq!(aws.list_access_keys("alice").await.unwrap().len(), 2);
    assert_eq!(
        moto.injected(),
        Injected {
            throttled: 1,
            dropped: 0
        }
    );
    assert_eq!(
        recorder.take(),
        seen(&[("ListAccessKeys", Throttled), ("ListAccessKeys", Answered)])
    );

    // A dropped connection, retried by the SDK.
    moto.faults(&Faults {
        drop: 1.0,
        actions: Some(vec!["GetUser".into()]),
        max: Some(1),
        ..Faults::default()
    });
    assert!(aws.get_user("alice").await.unwrap().is_some());
    assert_eq!(
        recorder.take(),
        seen(&[("GetUser", Unanswered), ("GetUser", Answered)])
    );

    // The write client (no SDK retries; the adapter retries itself): a
    // dropped delete, whose retry finds the key gone...
    moto.faults(&Faults {
        drop: 1.0,
        actions: Some(vec!["DeleteAccessKey".into()]),
        max: Some(1),
        ..Faults::default()
    });
    assert_eq!(
        aws.delete_access_key("alice", &keys[0]).await.unwrap(),
        WriteOutcome::DoneOnRetry
    );
    // ... and a throttled deactivation.
    moto.faults(&Faults {
        throttle: 1.0,
        actions: Some(vec!["UpdateAccessKey".into()]),
        max: Some(1),
        ..Faults::default()
    });
    assert_eq!(
        aws.deactivate_access_key("alice", &keys[1]).await.unwrap(),
        WriteOutcome::Done
    );
    moto.faults(&Faults::default());
    assert_eq!(
        recorder.take(),
        seen(&[
            ("DeleteAccessKey", Unanswered),
            ("DeleteAccessKey", ClientError),
            ("UpdateAccessKey", Throttled),
            ("UpdateAccessKey", Answered),
        ])
    );

    // Every attempt above reached moto's front door, which counts them all
    // (throttled and dropped ones too): the counts agree per operation.
    let mut expected = BTreeMap::new();
    for (op, n) in [
        ("GetCallerIdentity", 1),
        ("ListAccessKeys", 4),
        ("GetUser", 2),
        ("DeleteAccessKey", 2),
        ("UpdateAccessKey", 2),
    ] {
        expected.insert(op.to_string(), n);
    }
    assert_eq!(moto.calls(), expected);
}

/// A server that answers each connection with the next canned response,
/// then closes it.
struct Canned {
    endpoint: String,
    thread: std::thread::JoinHandle<()>,
}

impl Canned {
    fn start(responses: Vec<Vec<u8>>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let thread = std::thread::spawn(move || {
            for response in responses {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                read_request(&mut stream);
                let _ = stream.write_all(&response);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Canned { endpoint, thread }
    }

    /// Wait until every response was sent; the port is closed after.
    fn join(self) {
        self.thread.join().expect("the canned server ran");
    }
}

/// Read one request (headers, then a `Content-Length` body) so that closing
/// the connection does not reset it under the client.
fn read_request(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return;
            }
        }
    }
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error_body(code: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
         <Message>canned</Message></Error><RequestId>1</RequestId></ErrorResponse>"
    )
}

#[tokio::test]
async fn statuses_codes_and_lost_answers_are_classified() {
    let canned = Canned::start(vec![
        http("500 Internal Server Error", ""),
        http("429 Too Many Requests", ""),
        http("400 Bad Request", &error_body("ThrottlingException")),
        http(
            "503 Service Unavailable",
            &error_body("RequestLimitExceeded"),
        ),
        http("403 Forbidden", &error_body("AccessDenied")),
        // A success whose body is cut off: no complete answer.
        b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\
          Connection: close\r\n\r\n<GetCallerIdentityResponse>"
            .to_vec(),
    ]);
    let recorder = Arc::new(Recorder::default());
    // One attempt per call, so each canned response is one call's answer.
    let aws = connect(&canned.endpoint, &recorder, 1).await;
    for _ in 0..6 {
        assert!(aws.identity().await.is_err());
    }
    // Nobody listens any more: the connection is refused.
    canned.join();
    assert!(aws.identity().await.is_err());
    assert_eq!(
        recorder.take(),
        seen(&[
            ("GetCallerIdentity", ServerError),
            ("GetCallerIdentity", Throttled),
            ("GetCallerIdentity", Throttled),
            ("GetCallerIdentity", Throttled),
            ("GetCallerIdentity", ClientError),
            ("GetCallerIdentity", Unanswered),
            ("GetCallerIdentity", Unanswered),
        ])
    );
}
