//! The daemon's HTTP server, served for real on 127.0.0.1 and queried with a
//! real HTTP client.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engine_daemon::http::{self, Shared};
use engine_daemon::metrics::Metrics;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token_1";

struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(token: Option<&str>) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::new(Metrics::with_version("9.9.9")));
        let shutdown = CancellationToken::new();
        let task = {
            let _guard = rt.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            rt.spawn(http::serve(
                listener,
                shared.clone(),
                token.map(str::to_owned),
                shutdown.clone(),
            ))
        };
        Server {
            rt,
            addr,
            shared,
            shutdown,
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Cancels the token and waits (at most `limit`) for `serve` to return.
    fn stop_within(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(limit, task).await })
            .expect("serve returned in time")
            .expect("serve task did not panic");
        result.expect("serve returned Ok");
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    };
    let content_type = header("content-type");
    let www_authenticate = header("www-authenticate");
    Answer {
        status: response.status().as_u16(),
        content_type,
        www_authenticate,
        body: response.body_mut().read_to_string().expect("body"),
    }
}

fn get(server: &Server, path: &str, bearer: Option<&str>) -> Answer {
    let mut request = agent().get(server.url(path));
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    answer(request.call().expect("request"))
}

#[test]
fn healthz_is_ok() {
    let server = Server::start(None);
    let a = get(&server, "/healthz", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(a.body, "ok");
}

#[test]
fn readyz_flips_with_config_and_aws() {
    let server = Server::start(None);
    let a = get(&server, "/readyz", None);
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        "not ready: configuration not loaded; last AWS contact failed"
    );

    server.shared.config_loaded.store(true, Ordering::Release);
    let a = get(&server, "/readyz", None);
    assert_eq!(a.status, 503);
    assert_eq!(a.body, "not ready: last AWS contact failed");
    assert!(!a.body.contains('\n'));

    server.shared.aws_ok.store(true, Ordering::Release);
    let a = get(&server, "/readyz", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(a.body, "ready");

    server.shared.config_loaded.store(false, Ordering::Release);
    let a = get(&server, "/readyz", None);
    assert_eq!(a.status, 503);
    assert_eq!(a.body, "not ready: configuration not loaded");

    server.shared.config_loaded.store(true, Ordering::Release);
    server.shared.aws_ok.store(false, Ordering::Release);
    assert_eq!(get(&server, "/readyz", None).status, 503);
}

#[test]
fn metrics_are_prometheus_text() {
    let server = Server::start(None);
    server
        .shared
        .metrics
        .run_finished(true, Duration::from_secs(3));
    server
        .shared
        .metrics
        .action("123456789012", "rotate", "delete-access-key", "done");
    let a = get(&server, "/metrics", None);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines: Vec<&str> = a.body.lines().collect();
    for line in [
        r#"engine_build_info{version="9.9.9"} 1"#,
        r#"engine_runs_total{result="ok"} 1"#,
        r#"engine_actions_total{account="123456789012",policy="rotate",kind="delete-access-key",outcome="done"} 1"#,
        "engine_run_duration_seconds_count 1",
    ] {
        assert!(lines.contains(&line), "missing {line:?} in\n{}", a.body);
    }
    assert!(a.body.ends_with('\n'));
}

#[test]
fn status_and_plan_without_token() {
    let server = Server::start(None);
    let a = get(&server, "/v1/status", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(a.body, "{}");

    server
        .shared
        .set_status(r#"{"state":"idle","policies":["rotate"]}"#.to_owned());
    let a = get(&server, "/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("status json");
    assert_eq!(v["state"], "idle");
    assert_eq!(v["policies"][0], "rotate");

    let a = get(&server, "/v1/plan", None);
    assert_eq!(a.status, 404);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("error json");
    assert_eq!(v, serde_json::json!({"error": "no run yet"}));

    server
        .shared
        .set_plan(r#"{"policies":[],"summary":{}}"#.to_owned());
    let a = get(&server, "/v1/plan", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(a.body, r#"{"policies":[],"summary":{}}"#);
}

#[test]
fn v1_requires_the_token_when_one_is_set() {
    let server = Server::start(Some(TOKEN));
    server.shared.set_plan(r#"{"plan":1}"#.to_owned());
    for path in ["/v1/status", "/v1/plan"] {
        let a = get(&server, path, None);
        assert_eq!(a.status, 401, "{path} without a token");
        assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
        assert!(!a.body.contains("plan\":1"));

        for wrong in ["wrong", "s3cret-token_", "s3cret-token_12", ""] {
            let a = get(&server, path, Some(wrong));
            assert_eq!(a.status, 401, "{path} with {wrong:?}");
            let challenge = a.www_authenticate.expect("challenge");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }

        let basic = answer(
            agent()
                .get(server.url(path))
                .header("Authorization", format!("Basic {TOKEN}"))
                .call()
                .expect("request"),
        );
        assert_eq!(basic.status, 401);

        let a = get(&server, path, Some(TOKEN));
        assert_eq!(a.status, 200, "{path} with the token");
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(get(&server, "/v1/plan", Some(TOKEN)).body, r#"{"plan":1}"#);

    // The scheme is case-insensitive.
    let a = answer(
        agent()
            .get(server.url("/v1/status"))
            .header("Authorization", format!("bearer {TOKEN}"))
            .call()
            .expect("request"),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn probes_and_metrics_stay_open_with_a_token() {
    let server = Server::start(Some(TOKEN));
    server.shared.config_loaded.store(true, Ordering::Release);
    server.shared.aws_ok.store(true, Ordering::Release);
    assert_eq!(get(&server, "/healthz", None).status, 200);
    assert_eq!(get(&server, "/readyz", None).status, 200);
    let a = get(&server, "/metrics", None);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("engine_build_info"));
    // A wrong token on an open route changes nothing.
    assert_eq!(get(&server, "/healthz", Some("wrong")).status, 200);
}

#[test]
fn unknown_paths_are_404() {
    let server = Server::start(Some(TOKEN));
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/unknown",
        "/metrics/x",
        "/healthz/",
        "/status",
    ] {
        assert_eq!(get(&server, path, Some(TOKEN)).status, 404, "{path}");
    }
}

#[test]
fn only_get_is_served() {
    let server = Server::start(None);
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status", "/v1/plan"] {
        let a = answer(agent().post(server.url(path)).send_empty().expect("post"));
        assert_eq!(a.status, 405, "POST {path}");
        let a = answer(agent().delete(server.url(path)).call().expect("delete"));
        assert_eq!(a.status, 405, "DELETE {path}");
    }
    let a = answer(
        agent()
            .post(server.url("/nope"))
            .send_empty()
            .expect("post"),
    );
    assert_eq!(a.status, 404);
}

#[test]
fn serve_returns_promptly_after_cancel() {
    let mut server = Server::start(None);
    // Leave a kept-alive connection in the client's pool.
    let client = agent();
    let a = answer(client.get(server.url("/healthz")).call().expect("request"));
    assert_eq!(a.status, 200);
    let took = server.stop_within(Duration::from_secs(3));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Nothing listens any more.
    assert!(
        agent()
            .get(server.url("/healthz"))
            .config()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .call()
            .is_err()
    );
}

#[test]
fn serve_returns_after_the_grace_period_despite_a_stuck_client() {
    let mut server = Server::start(None);
    // A client that sends half a request and then nothing.
    let mut stuck = std::net::TcpStream::connect(server.addr).expect("connect");
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    stuck.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(100));
    let took = server.stop_within(http::SHUTDOWN_GRACE + Duration::from_secs(3));
    assert!(
        took < http::SHUTDOWN_GRACE + Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn is_loopback_addresses() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    assert!(http::is_loopback(&addr("127.0.0.1:9090")));
    assert!(http::is_loopback(&addr("127.1.2.3:9090")));
    assert!(http::is_loopback(&addr("[::1]:9090")));
    assert!(http::is_loopback(&addr("[::ffff:127.0.0.1]:9090")));
    assert!(!http::is_loopback(&addr("0.0.0.0:9090")));
    assert!(!http::is_loopback(&addr("[::]:9090")));
    assert!(!http::is_loopback(&addr("10.0.0.1:9090")));
    assert!(!http::is_loopback(&addr("192.168.1.1:9090")));
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("engine-daemon-http-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        set_mode(&path, mode);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[cfg(not(unix))]
fn set_mode(_: &std::path::Path, _: u32) {}

#[test]
fn read_token_file_reads_a_private_file() {
    let dir = TempDir::new("ok");
    let path = dir.file("token", "  s3cret-token_1\n", 0o600);
    assert_eq!(http::read_token_file(&path).as_deref(), Ok(TOKEN));
    let path = dir.file("token-ro", "abc", 0o400);
    assert_eq!(http::read_token_file(&path).as_deref(), Ok("abc"));
}

#[test]
fn read_token_file_refusals() {
    let dir = TempDir::new("refusals");

    let missing = dir.0.join("missing");
    let err = http::read_token_file(&missing).expect_err("missing");
    assert!(err.contains("cannot open token file"), "{err}");
    assert!(err.contains("missing"), "{err}");

    let empty = dir.file("empty", " \n\t\n", 0o600);
    let err = http::read_token_file(&empty).expect_err("empty");
    assert!(err.contains("is empty"), "{err}");

    let spaced = dir.file("spaced", "two words", 0o600);
    let err = http::read_token_file(&spaced).expect_err("spaced");
    assert!(err.contains("without spaces"), "{err}");

    let big = dir.file("big", &"x".repeat(5000), 0o600);
    let err = http::read_token_file(&big).expect_err("big");
    assert!(err.contains("larger than"), "{err}");

    let err = http::read_token_file(&dir.0).expect_err("directory");
    assert!(err.contains("not a regular file"), "{err}");

    #[cfg(unix)]
    for mode in [0o644, 0o640, 0o604, 0o620] {
        let path = dir.file(&format!("open-{mode:o}"), TOKEN, mode);
        let err = http::read_token_file(&path).expect_err("group/other access");
        assert!(err.contains("by group or others"), "{err}");
        assert!(err.contains(&format!("mode 0{mode:o}")), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }
}
