//! `engine daemon` end to end: the real binary as a child process, against a
//! moto server of its own per test, watched through its stderr, its HTTP
//! endpoints, the journal (`engine history`) and moto's own record of the
//! calls it received.
//!
//! Each test has its own moto, policy directory and state directory, so the
//! tests run in parallel. Schedules are cron with seconds (`*/2 * * * * *`);
//! every wait polls with a deadline, none sleeps for a fixed time.
//!
//! Run through `scripts/test`, which installs moto into `.venv` (or set
//! `ENGINE_TEST_PYTHON`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use engine_testkit::{Moto, SeedUser, State};
use serde_json::Value;

/// Scheduled runs: what they do to the account, counted and journaled.
#[path = "daemon/run.rs"]
mod run;

/// Reloads: SIGHUP and edits, broken and fixed configurations.
#[path = "daemon/reload.rs"]
mod reload;

/// Stopping: SIGTERM mid-apply, shutdown timeout, kill -9 and restart.
#[path = "daemon/stop.rs"]
mod stop;

/// Many accounts: a scheduled run over an organization's accounts.
#[path = "daemon/accounts.rs"]
mod accounts;

/// AWS Config events from an SQS queue, and the Config rules the daemon keeps.
#[path = "daemon/events.rs"]
mod events;

/// Starting: invalid policies, the state lock, listening and the token.
#[path = "daemon/startup.rs"]
mod startup;

// Messages to owners from scheduled runs (staged removal, a webhook).
#[path = "daemon/notices.rs"]
mod notices;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");

/// The secret access key every engine here runs with: it must never be logged.
const SECRET: &str = "engine-daemon-test-secret-7Qx9Zk2WvL4p";

/// The IAM user the engine runs as (with its first key).
const OWN_USER: &str = "engine-bot";

/// How long any one wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(45);

/// How often waits poll.
const POLL: Duration = Duration::from_millis(100);

/// Detail of an action not started because the engine is stopping.
const STOPPING: &str = "not started: the engine is stopping";

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

/// The first whole second at least `lead` from now: a tick a test can wait for.
fn soon(lead: Duration) -> DateTime<Utc> {
    let at = Utc::now() + TimeDelta::from_std(lead).expect("a short lead");
    at.with_nanosecond(0).expect("a whole second") + TimeDelta::seconds(1)
}

/// A schedule due once an hour, at `at`'s minute and second: within a
/// test's window it fires exactly once, at `at`.
fn hourly_at(at: DateTime<Utc>) -> String {
    format!("{} {} * * * *", at.second(), at.minute())
}

/// A schedule due once a day, at `at`'s hour, minute and second.
fn daily_at(at: DateTime<Utc>) -> String {
    format!("{} {} {} * * *", at.second(), at.minute(), at.hour())
}

/// `[policy.rotate]`: cis-1.4 over `max_days`, break-glass-* exempt.
fn rotate_policy(max_days: u32, schedule: Option<&str>) -> String {
    let mut toml = format!(
        "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = {max_days}\n\
         exempt_users = [\"break-glass-*\"]\n"
    );
    if let Some(cron) = schedule {
        toml.push_str(&format!("schedule = \"{cron}\"\n"));
    }
    toml
}

/// A user with one active access key `age` days old, used yesterday.
fn user_with_key(name: &str, age: i64) -> SeedUser {
    SeedUser::new(name, days_ago(900)).key(days_ago(age), Some(days_ago(1)), true)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-daemon-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn stamp(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 timestamp: {v}"))
}

/// Poll `f` every [`POLL`] until it answers, for at most `timeout`.
fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A moto account with the engine's own user, a policy directory and a state
/// directory.
struct Account {
    moto: Moto,
    /// The access key id the engine runs with (its own user's first key, old:
    /// a cis-1.4 finding that must never be acted on).
    own_key: String,
    /// Seeded users' key ids, in the order given.
    keys: BTreeMap<String, Vec<String>>,
    dir: PathBuf,
}

impl Account {
    fn new(name: &str, users: Vec<SeedUser>) -> Account {
        let moto = Moto::start();
        let mut users = users;
        users.push(SeedUser::new(OWN_USER, days_ago(900)).key(days_ago(400), None, true));
        let seeded = moto.seed(&users);
        let keys: BTreeMap<String, Vec<String>> =
            seeded.into_iter().map(|s| (s.name, s.keys)).collect();
        let own_key = keys[OWN_USER][0].clone();
        let dir = tempdir(name);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir policies");
        Account {
            moto,
            own_key,
            keys,
            dir,
        }
    }

    /// Key `n` of `user`, as seeded.
    fn key(&self, user: &str, n: usize) -> String {
        self.keys[user][n].clone()
    }

    fn policies(&self) -> PathBuf {
        self.dir.join("policies")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Write (or overwrite, in place) `policies/<file>`.
    fn write_policy(&self, file: &str, toml: &str) {
        std::fs::write(self.policies().join(file), toml).expect("write policy");
    }

    /// A command in the account's directory with only the environment the
    /// engine needs to reach this moto as its own user.
    fn command(&self) -> Command {
        let mut cmd = Command::new(ENGINE);
        cmd.current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        cmd
    }

    /// Run a one-shot engine command to the end.
    fn engine(&self, args: &[&str]) -> Output {
        self.command()
            .env("RUST_LOG", "warn")
            .args(args)
            .output()
            .expect("run engine")
    }

    /// `engine daemon POLICIES --state STATE --listen 127.0.0.1:0 EXTRA...`
    /// (no `--state` or `--listen` of its own if `extra` has one), not waited for.
    fn spawn_daemon(&self, extra: &[&str]) -> Daemon {
        let policies = self.policies().display().to_string();
        let state = self.state_dir().display().to_string();
        let mut args = vec!["daemon", policies.as_str()];
        if !extra.contains(&"--state") {
            args.extend(["--state", state.as_str()]);
        }
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        Daemon::spawn(self.command().args(&args))
    }

    /// A daemon that is listening.
    fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut daemon = self.spawn_daemon(extra);
        daemon.wait_listening();
        daemon
    }

    /// The account's IAM state, without the last-used date of the engine's
    /// own key (every call signed with it moves it).
    fn state(&self) -> State {
        let mut state = self.moto.state();
        for u in &mut state.users {
            for k in &mut u.keys {
                if k.id == self.own_key {
                    k.last_used = None;
                }
            }
        }
        state
    }

    /// Whether `user`'s key `key` still exists in moto.
    fn has_key(&self, user: &str, key: &str) -> bool {
        self.moto
            .state()
            .user(user)
            .is_some_and(|u| u.key(key).is_some())
    }

    /// Every journaled run, oldest first (`engine history --format json`).
    fn history(&self) -> Vec<Value> {
        let state = self.state_dir().display().to_string();
        let out = self.engine(&[
            "history", "--state", &state, "--format", "json", "--limit", "10000",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "engine history\n--- stdout\n{}\n--- stderr\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let runs: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("history is not JSON ({e}): {}", text(&out.stdout)));
        let mut runs = runs.as_array().cloned().expect("an array of runs");
        runs.reverse();
        runs
    }

    /// The journaled runs of command `scheduled`, oldest first.
    fn scheduled_runs(&self) -> Vec<Value> {
        self.history()
            .into_iter()
            .filter(|r| r["command"] == "scheduled")
            .collect()
    }

    /// `DeleteAccessKey` calls moto received per key id (answered or not).
    fn deletes_per_key(&self) -> BTreeMap<String, usize> {
        let mut per_key = BTreeMap::new();
        for r in self.moto.requests() {
            if r.action == "DeleteAccessKey" {
                *per_key
                    .entry(r.key_id.unwrap_or_default())
                    .or_insert(0usize) += 1;
            }
        }
        per_key
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines of a child's output stream, collected by a thread.
#[derive(Default)]
struct Lines {
    /// The lines so far, and whether the stream has ended.
    inner: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut raw = Vec::new();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = text(&raw).trim_end_matches(['\n', '\r']).to_string();
                        let mut inner = sink.inner.lock().unwrap_or_else(|e| e.into_inner());
                        inner.0.push(line);
                        sink.changed.notify_all();
                    }
                }
            }
            let mut inner = sink.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.1 = true;
            sink.changed.notify_all();
        });
        lines
    }

    fn all(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The first line (from the start) matching `pred`, waiting up to
    /// `timeout`; `None` on timeout or when the stream ends without one.
    fn wait(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(line) = inner.0.iter().find(|l| pred(&strip_ansi(l))) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if inner.1 || now >= deadline {
                return None;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Wait until the stream has ended (the process exited and the pipe is drained).
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while !inner.1 && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Remove ANSI escape sequences (CSI ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `addr` of a `listening` log line, text (`addr=127.0.0.1:PORT`) or JSON.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    if let Ok(v) = serde_json::from_str::<Value>(&line) {
        let message = v["message"]
            .as_str()
            .or_else(|| v["fields"]["message"].as_str());
        if message != Some("listening") {
            return None;
        }
        let addr = v["addr"]
            .as_str()
            .or_else(|| v["fields"]["addr"].as_str())?;
        return addr.parse().ok();
    }
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let addr: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// An HTTP answer.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `GET path` over plain HTTP/1.1 (`Connection: close`).
fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> std::io::Result<Http> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = text(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("chunk size"))?;
            let size_text = text(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size).ok_or_else(|| bad("short chunk"))?);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
        body = decoded;
    }
    Ok(Http {
        status,
        headers,
        body: text(&body),
    })
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug)]
struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("bad metrics line {l:?}")))
            .collect();
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples named `name` whose labels include every `(label, value)` of `filter`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples [`Metrics::matching`] (0 if none).
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(name, filter).map(|s| s.value).sum()
    }

    /// The one sample named `name` with exactly the labels `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Panics if any label value names one of `secrets` (user names, key ids).
    #[track_caller]
    fn assert_no_label_value_in(&self, secrets: &[String]) {
        for s in &self.samples {
            for (label, value) in &s.labels {
                assert!(
                    !secrets
                        .iter()
                        .any(|x| value == x || value.contains(x.as_str())),
                    "label {label}={value:?} of {} names a user or key:\n{}",
                    s.name,
                    self.text
                );
            }
        }
    }
}

/// `name{a="1",b="2"} value [timestamp]` or `name value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || *c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let (i, c) = chars.next()?;
            if c == '}' {
                end = i + 1;
                break;
            }
            let mut label = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                label.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(label.trim().to_string(), value);
        }
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `engine daemon` as a child process: stderr and stdout collected line by
/// line by threads; killed (SIGKILL) on drop if still running.
struct Daemon {
    child: Child,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
    addr: Option<SocketAddr>,
    /// The bearer token sent to `/v1/*`.
    token: Option<String>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    fn spawn(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start engine daemon");
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        Daemon {
            child,
            stderr,
            stdout,
            addr: None,
            token: None,
            exited: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.all()
    }

    /// Everything it printed so far, for failure messages.
    fn log(&self) -> String {
        let mut log = self.stderr.all().join("\n");
        let out = self.stdout.all();
        if !out.is_empty() {
            log.push_str("\n--- stdout\n");
            log.push_str(&out.join("\n"));
        }
        log
    }

    /// The first stderr line matching `pred` (ANSI codes stripped), within [`WAIT`].
    #[track_caller]
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.stderr.wait(WAIT, pred) {
            Some(line) => line,
            None => panic!(
                "no log line {what} (daemon {}):\n{}",
                self.describe(),
                self.log()
            ),
        }
    }

    fn describe(&mut self) -> String {
        // Its output may end a moment before it can be reaped.
        if self.stderr.closed() {
            self.wait_exit(Duration::from_secs(2));
        }
        match self.exit_status() {
            Some(s) => format!("exited: {s}"),
            None => "still running".into(),
        }
    }

    /// Wait for the `listening` line; remembers and returns the address.
    #[track_caller]
    fn wait_listening(&mut self) -> SocketAddr {
        let line = self.wait_line("`listening addr=...`", |l| listening_addr(l).is_some());
        let addr = listening_addr(&line).expect("address");
        self.addr = Some(addr);
        addr
    }

    /// The address to connect to: the listening one, 127.0.0.1 for an unspecified IP.
    fn connect_addr(&self) -> SocketAddr {
        let mut addr = self.addr.expect("the daemon is listening");
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr
    }

    /// `kill -s SIG pid`.
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {}", self.pid());
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Wait up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = poll_until(timeout, || self.exit_status());
        if status.is_some() {
            self.stderr.wait_closed(Duration::from_secs(5));
            self.stdout.wait_closed(Duration::from_secs(5));
        }
        status
    }

    /// Exit code after SIGTERM, waiting up to `timeout`; panics if it does not exit.
    #[track_caller]
    fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "still running {timeout:?} after SIGTERM:\n{}",
                self.stderr.all().join("\n")
            )
        });
        status.code()
    }

    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        self.exited = Some(self.child.wait().expect("wait"));
        self.stderr.wait_closed(Duration::from_secs(5));
    }

    /// GET `path` with the daemon's token, if any.
    #[track_caller]
    fn get(&self, path: &str) -> Http {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        self.get_with(path, auth.as_deref())
    }

    #[track_caller]
    fn get_with(&self, path: &str, auth: Option<&str>) -> Http {
        http_get(self.connect_addr(), path, auth)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    #[track_caller]
    fn status(&self) -> Value {
        let answer = self.get("/v1/status");
        assert_eq!(answer.status, 200, "/v1/status: {answer:?}");
        answer.json()
    }

    #[track_caller]
    fn metrics(&self) -> Metrics {
        let answer = self.get("/metrics");
        assert_eq!(answer.status, 200, "/metrics: {answer:?}");
        Metrics::parse(&answer.body)
    }

    /// `/v1/plan`: `None` while it answers 404.
    #[track_caller]
    fn plan(&self) -> Option<Value> {
        let answer = self.get("/v1/plan");
        match answer.status {
            200 => Some(answer.json()),
            404 => None,
            _ => panic!("/v1/plan: {answer:?}"),
        }
    }

    /// Poll `/v1/status` until `pred` holds, within [`WAIT`].
    #[track_caller]
    fn wait_status(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = poll_until(WAIT, || {
            if self.exit_status().is_some() {
                return Some(None);
            }
            last = self.status();
            pred(&last).then(|| Some(last.clone()))
        });
        match found {
            Some(Some(status)) => status,
            _ => panic!(
                "waiting for {what} (daemon {}); last status:\n{last:#}\nlog:\n{}",
                self.describe(),
                self.log()
            ),
        }
    }

    /// Poll `/metrics` until `pred` holds, within [`WAIT`].
    #[track_caller]
    fn wait_metrics(&mut self, what: &str, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let found = poll_until(WAIT, || {
            let m = self.metrics();
            pred(&m).then_some(m)
        });
        found.unwrap_or_else(|| {
            panic!(
                "waiting for {what}; metrics:\n{}\nlog:\n{}",
                self.metrics().text,
                self.log()
            )
        })
    }

    /// Poll `f` until it answers, within [`WAIT`]; panics with the log.
    #[track_caller]
    fn wait_for<T>(&mut self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        poll_until(WAIT, f).unwrap_or_else(|| {
            panic!(
                "waiting for {what} (daemon {}):\n{}",
                self.describe(),
                self.log()
            )
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `runs.total` of a status document.
fn runs_total(status: &Value) -> u64 {
    status["runs"]["total"].as_u64().unwrap_or(0)
}

/// The status entry of policy `name`.
fn policy_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no policy {name} in status {status:#}"))
}

/// Checks the shape of a `/v1/status` document against the interface.
#[track_caller]
fn assert_status_shape(s: &Value, pid: u32, policy_dir: &Path) {
    let ts = |v: &Value, what: &str| {
        assert!(
            v.as_str()
                .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok()),
            "{what} is not RFC 3339: {v} in {s:#}"
        );
    };
    assert!(s["version"].is_string(), "version: {s:#}");
    assert_eq!(s["pid"].as_u64(), Some(u64::from(pid)), "pid: {s:#}");
    ts(&s["started_at"], "started_at");
    assert!(
        ["idle", "running", "stopping"].contains(&s["state"].as_str().unwrap_or("")),
        "state: {s:#}"
    );
    let dir = policy_dir.canonicalize().expect("canonical policy dir");
    assert!(
        s["policy_dir"] == dir.display().to_string()
            || s["policy_dir"] == policy_dir.display().to_string(),
        "policy_dir {} is not {}",
        s["policy_dir"],
        dir.display()
    );
    ts(&s["config"]["loaded_at"], "config.loaded_at");
    assert!(s["config"]["digest"].is_string(), "config.digest: {s:#}");
    assert!(s["config"]["policies"].is_u64(), "config.policies: {s:#}");
    ts(&s["last_reload"]["at"], "last_reload.at");
    assert!(
        ["success", "failure"].contains(&s["last_reload"]["result"].as_str().unwrap_or("")),
        "last_reload.result: {s:#}"
    );
    assert!(
        ["start", "signal", "file-change"]
            .contains(&s["last_reload"]["trigger"].as_str().unwrap_or("")),
        "last_reload.trigger: {s:#}"
    );
    assert!(
        s["last_reload"]["diagnostics"].is_array(),
        "last_reload.diagnostics: {s:#}"
    );
    for p in s["policies"].as_array().expect("policies") {
        for field in ["name", "rule", "mode"] {
            assert!(p[field].is_string(), "policies[].{field}: {p:#}");
        }
        assert!(
            p["schedule"].is_string() || p["schedule"].is_null(),
            "{p:#}"
        );
        if !p["next_run"].is_null() {
            ts(&p["next_run"], "next_run");
        }
        for field in ["runs", "skipped_ticks", "collapsed_ticks"] {
            assert!(p[field].is_u64(), "policies[].{field}: {p:#}");
        }
        let last = &p["last_run"];
        if !last.is_null() {
            assert!(last["run"].is_i64(), "last_run.run: {p:#}");
            ts(&last["started_at"], "last_run.started_at");
            ts(&last["finished_at"], "last_run.finished_at");
            assert!(
                ["ok", "failed"].contains(&last["result"].as_str().unwrap_or("")),
                "last_run.result: {p:#}"
            );
            assert!(last["findings"].is_u64(), "last_run.findings: {p:#}");
            for outcome in ["done", "done-on-retry", "already-gone", "skipped", "failed"] {
                assert!(
                    last["actions"][outcome].is_u64(),
                    "last_run.actions.{outcome}: {p:#}"
                );
            }
            assert!(
                last["error"].is_null() || last["error"].is_string(),
                "{p:#}"
            );
        }
    }
    for field in ["total", "ok", "failed", "skipped_ticks"] {
        assert!(s["runs"][field].is_u64(), "runs.{field}: {s:#}");
    }
    let current = &s["current_run"];
    if !current.is_null() {
        ts(&current["started_at"], "current_run.started_at");
        assert!(current["policies"].is_array(), "current_run: {s:#}");
    }
    let events = &s["events"];
    assert!(
        events["queue"].is_null() || events["queue"].is_string(),
        "events.queue: {s:#}"
    );
    for field in ["received", "acted", "ignored", "failed", "malformed"] {
        assert!(events[field].is_u64(), "events.{field}: {s:#}");
    }
}

/// `(user, key_id, action)` of every action of a plan (`/v1/plan`) that applies.
fn applying(plan: &Value) -> Vec<(String, String, String)> {
    let mut rows: Vec<_> = plan["actions"]
        .as_array()
        .expect("plan actions")
        .iter()
        .filter(|a| a["applies"] == true)
        .map(|a| {
            (
                a["user"].as_str().unwrap_or("").to_string(),
                a["key_id"].as_str().unwrap_or("").to_string(),
                a["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `(user, key_id, action, outcome)` of a journaled run's actions.
fn journaled(run: &Value) -> Vec<(String, String, String, String)> {
    let mut rows: Vec<_> = run["actions"]
        .as_array()
        .expect("journaled actions")
        .iter()
        .map(|a| {
            (
                a["user"].as_str().unwrap_or("").to_string(),
                a["key_id"].as_str().unwrap_or("").to_string(),
                a["action"].as_str().unwrap_or("").to_string(),
                a["outcome"].as_str().unwrap_or("<none>").to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}
