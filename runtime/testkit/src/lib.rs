//! Test support: a moto IAM/STS server per test.
//!
//! Tests run the real AWS SDK over HTTP against moto (`tests/moto/server.py`),
//! one server process per [`Moto`], so tests have isolated state and run in
//! parallel. The server adds test-only endpoints that this module wraps:
//! seeding users with backdated dates, the IAM state for before/after
//! comparisons, API call counts and a log of each call ([`Moto::requests`]),
//! fault injection (throttling, dropped connections) and slow answers
//! ([`Moto::faults_with_latency`]).
//!
//! The Python comes from `ENGINE_TEST_PYTHON`, which `scripts/test` sets after
//! installing moto into `.venv`. Without it the test fails with a message that
//! says so: a missing moto is never a silent skip.

pub mod measure;
pub mod report;
pub mod webhook;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The account moto puts everything in when the credentials are not its own.
pub const ACCOUNT_ID: &str = "123456789012";
/// Static credentials for the SDK; moto accepts any.
pub const ACCESS_KEY_ID: &str = "AKIAENGINETESTKEY000";
pub const SECRET_ACCESS_KEY: &str = "engine-test-secret-access-key-not-real";
pub const REGION: &str = "us-east-1";

const HINT: &str = "run the tests with scripts/test, which installs moto into .venv \
                    and sets ENGINE_TEST_PYTHON (or set ENGINE_TEST_PYTHON to a python \
                    that has `moto[server]` from tests/moto/requirements.txt)";

/// A user to create, with backdated dates.
#[derive(Debug, Clone, Serialize)]
pub struct SeedUser {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub created: DateTime<Utc>,
    pub password: Option<SeedPassword>,
    pub keys: Vec<SeedKey>,
    /// The user's IAM tags.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A console password.
#[derive(Debug, Clone, Serialize)]
pub struct SeedPassword {
    pub changed: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

/// A change made to the account behind the engine's back, after a snapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    /// The access key was used at `last_used`.
    TouchKey {
        key: String,
        last_used: DateTime<Utc>,
    },
    /// The user signed in to the console at `last_used`.
    TouchPassword {
        user: String,
        last_used: DateTime<Utc>,
    },
    /// The access key was deleted.
    DeleteKey { user: String, key: String },
    /// The user was deleted and created again now, with a new console password.
    RecreateUser { user: String },
    /// The console password was removed and set again now.
    RecreateLoginProfile { user: String },
    /// A console password was set now (the user had none).
    CreateLoginProfile { user: String },
}

/// An access key.
#[derive(Debug, Clone, Serialize)]
pub struct SeedKey {
    pub created: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
    pub active: bool,
}

impl SeedUser {
    /// A user without password or keys.
    pub fn new(name: &str, created: DateTime<Utc>) -> SeedUser {
        SeedUser {
            name: name.to_string(),
            path: None,
            created,
            password: None,
            keys: Vec::new(),
            tags: Default::default(),
        }
    }

    /// With the IAM tag `key` = `value`.
    pub fn tag(mut self, key: &str, value: &str) -> SeedUser {
        self.tags.insert(key.to_string(), value.to_string());
        self
    }

    pub fn path(mut self, path: &str) -> SeedUser {
        self.path = Some(path.to_string());
        self
    }

    pub fn password(
        mut self,
        changed: DateTime<Utc>,
        last_used: Option<DateTime<Utc>>,
    ) -> SeedUser {
        self.password = Some(SeedPassword { changed, last_used });
        self
    }

    /// Add an access key (a user has at most two).
    pub fn key(
        mut self,
        created: DateTime<Utc>,
        last_used: Option<DateTime<Utc>>,
        active: bool,
    ) -> SeedUser {
        self.keys.push(SeedKey {
            created,
            last_used,
            active,
        });
        self
    }
}

/// A seeded user's access key ids, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SeededUser {
    pub name: String,
    pub keys: Vec<String>,
}

/// Moto's IAM state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct State {
    pub users: Vec<UserState>,
}

impl State {
    pub fn user(&self, name: &str) -> Option<&UserState> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserState {
    pub name: String,
    /// The user's unique id (`AIDA...`), what AWS Config events name.
    pub id: String,
    pub path: String,
    pub arn: String,
    pub created: DateTime<Utc>,
    pub login_profile: bool,
    pub password_last_used: Option<DateTime<Utc>>,
    pub keys: Vec<KeyState>,
}

impl UserState {
    pub fn key(&self, id: &str) -> Option<&KeyState> {
        self.keys.iter().find(|k| k.id == id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyState {
    pub id: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

/// Faults to inject into API calls from now on. The default is none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    /// Share of calls answered with a `Throttling` error, without reaching moto.
    pub throttle: f64,
    /// Share of calls that moto processes, and whose connection is then
    /// closed without a response.
    pub drop: f64,
    /// Seed of the draws: the same calls in the same order get the same faults.
    pub seed: u64,
    /// Only these actions (`DeleteAccessKey`, ...); all when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    /// Inject at most this many faults, then none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Mutations made once, right after the first dropped call was processed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_drop: Vec<Mutation>,
}

/// One IAM/STS API call the server received ([`Moto::requests`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Request {
    /// The account whose credentials signed the call.
    #[serde(default)]
    pub account: Option<String>,
    /// The action: `DeleteAccessKey`, `ListAccessKeys`, ...
    pub action: String,
    /// The call's `UserName` parameter, if it had one.
    pub user: Option<String>,
    /// The call's `AccessKeyId` parameter, if it had one.
    pub key_id: Option<String>,
    /// The HTTP status answered: moto's, 400 for an injected throttle, and 0
    /// when no answer was sent: a dropped call, or one still in flight (being
    /// delayed by latency) when the log was read.
    pub status: u16,
    /// When the server received it, in seconds since the Unix epoch.
    #[serde(default)]
    pub at: f64,
}

/// When one IAM/STS call was in flight at the server ([`Moto::request_spans`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Span {
    /// The account whose credentials signed the call.
    #[serde(default)]
    pub account: Option<String>,
    pub action: String,
    /// When the server received it, in seconds since the Unix epoch.
    pub at: f64,
    /// When it sent the answer (after any latency); `None` for a dropped
    /// call, or one still in flight when the log was read.
    #[serde(default)]
    pub done: Option<f64>,
}

/// One STS `AssumeRole` call the server received ([`Moto::assume_role_calls`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssumeRoleCall {
    /// The account whose credentials made the call.
    #[serde(default)]
    pub account: Option<String>,
    pub role_arn: Option<String>,
    /// The `RoleSessionName`.
    pub session: Option<String>,
    pub external_id: Option<String>,
    pub status: u16,
    pub at: f64,
}

/// One call of a JSON or REST-JSON API (Security Hub, SQS, Config, ...),
/// which [`Moto::requests`] leaves out ([`Moto::api_requests`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiRequest {
    /// The account whose credentials signed it (or its `x-moto-account-id`).
    pub account: Option<String>,
    pub method: String,
    /// The URL path: `/findings/import` for Security Hub's BatchImportFindings.
    pub path: String,
    /// The `X-Amz-Target` header (JSON protocols), `None` for REST.
    pub target: Option<String>,
    /// How many findings the body's `Findings` list held, if it had one.
    pub findings: Option<usize>,
    /// The HTTP status answered, 0 while none was.
    pub status: u16,
    pub at: f64,
    pub done: Option<f64>,
}

/// Which calls [`Moto::faults_in`] applies to, and faults [`Faults`] has not.
#[derive(Debug, Clone, Default)]
pub struct FaultScope {
    /// Only calls signed by these accounts; every account when empty.
    pub accounts: Vec<String>,
    /// Share of the (matching) calls answered with IAM's `AccessDenied`
    /// (HTTP 403) without reaching moto: an error no retry helps with.
    pub deny: f64,
    /// Latency, as [`Moto::faults_with_latency`] has it.
    pub latency: Option<Duration>,
}

/// Temporary credentials of an assumed role.
#[derive(Debug, Clone, Deserialize)]
pub struct AssumedRole {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

/// How many faults were injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Injected {
    pub throttled: u64,
    pub dropped: u64,
}

/// A moto server of its own, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    agent: ureq::Agent,
    stderr: Arc<Mutex<String>>,
}

impl Moto {
    /// Start a server. Panics, saying how to fix it, if moto cannot be run.
    pub fn start() -> Moto {
        let python = match std::env::var_os("ENGINE_TEST_PYTHON") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => panic!("ENGINE_TEST_PYTHON is not set, so moto cannot be started: {HINT}"),
        };
        let script = workspace_root().join("tests/moto/server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run {} {}: {e}; {HINT}",
                    python.display(),
                    script.display()
                )
            });

        // Keep stderr drained (a full pipe would block the server) and at hand for panics.
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock()
                        && s.len() < 64 * 1024
                    {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }

        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            // Give the stderr thread a moment to collect the traceback.
            std::thread::sleep(Duration::from_millis(200));
            let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
            panic!(
                "the moto server did not start (first line {line:?}); {HINT}\n--- server stderr ---\n{err}"
            );
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Moto {
            child,
            port,
            agent,
            stderr,
        }
    }

    /// The endpoint for the SDK: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create users with backdated dates; returns their key ids, in order.
    pub fn seed(&self, users: &[SeedUser]) -> Vec<SeededUser> {
        self.post("seed", &users)
    }

    /// Moto's IAM state now.
    pub fn state(&self) -> State {
        self.get("state")
    }

    /// [`Moto::seed`] in another account than moto's default one.
    pub fn seed_in(&self, account: &str, users: &[SeedUser]) -> Vec<SeededUser> {
        self.post(&format!("seed?account={account}"), &users)
    }

    /// [`Moto::state`] of another account.
    pub fn state_in(&self, account: &str) -> State {
        self.get(&format!("state?account={account}"))
    }

    /// Create role `name` in `account`, which STS `AssumeRole` then lets the
    /// default account assume (with `external_id`, when given: this server
    /// refuses a role that does not exist or a wrong external id, as AWS does).
    pub fn create_role(&self, account: &str, name: &str, external_id: Option<&str>) -> String {
        let v: serde_json::Value = self.post(
            "role",
            &serde_json::json!({"account": account, "name": name, "external_id": external_id}),
        );
        v["arn"].as_str().unwrap_or_default().to_string()
    }

    /// An AWS Organization managed by moto's default account; its root id.
    pub fn create_organization(&self) -> String {
        self.organizations(
            "CreateOrganization",
            &serde_json::json!({"FeatureSet": "ALL"}),
        );
        let roots = self.organizations("ListRoots", &serde_json::json!({}));
        roots["Roots"][0]["Id"]
            .as_str()
            .unwrap_or_else(|| panic!("no root: {roots}"))
            .to_string()
    }

    /// An organizational unit under `parent`; its id.
    pub fn create_organizational_unit(&self, parent: &str, name: &str) -> String {
        let ou = self.organizations(
            "CreateOrganizationalUnit",
            &serde_json::json!({"ParentId": parent, "Name": name}),
        );
        ou["OrganizationalUnit"]["Id"]
            .as_str()
            .unwrap_or_else(|| panic!("no OU id: {ou}"))
            .to_string()
    }

    /// A new account of the organization, moved under `parent` (from the
    /// root `root`); its id.
    pub fn create_account(&self, name: &str, root: &str, parent: &str) -> String {
        let made = self.organizations(
            "CreateAccount",
            &serde_json::json!({"AccountName": name, "Email": format!("{name}@example.com")}),
        );
        let id = made["CreateAccountStatus"]["AccountId"]
            .as_str()
            .unwrap_or_else(|| panic!("no account id: {made}"))
            .to_string();
        if parent != root {
            self.organizations(
                "MoveAccount",
                &serde_json::json!({"AccountId": id, "SourceParentId": root, "DestinationParentId": parent}),
            );
        }
        id
    }

    /// Close an account of the organization (it is no longer ACTIVE).
    pub fn close_account(&self, id: &str) {
        self.organizations("CloseAccount", &serde_json::json!({"AccountId": id}));
    }

    fn organizations(&self, action: &str, body: &serde_json::Value) -> serde_json::Value {
        self.aws_json(
            "organizations",
            "us-east-1",
            &format!("AWSOrganizationsV20161128.{action}"),
            body,
        )
    }

    /// Every finding Security Hub holds in `account` and `region` (`GetFindings`).
    pub fn securityhub_findings(&self, account: &str, region: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = serde_json::json!({"MaxResults": 100});
            if let Some(t) = &token {
                body["NextToken"] = t.clone().into();
            }
            let page = self.aws_rest("securityhub", account, region, "/findings", &body);
            out.extend(page["Findings"].as_array().cloned().unwrap_or_default());
            match page["NextToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return out,
            }
        }
    }

    /// `POST path` of an AWS REST-JSON API of this moto (Security Hub), as
    /// `account` (moto's `x-moto-account-id`) in `region`.
    pub fn aws_rest(
        &self,
        service: &str,
        account: &str,
        region: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("{}{path}", self.endpoint());
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIATESTKIT/20260101/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0"
        );
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Authorization", &auth)
            .header("X-Amz-Date", "20260101T000000Z")
            .header("x-moto-account-id", account)
            .send(body.to_string().as_bytes());
        self.read(&url, response)
    }

    /// IAM/STS calls by action name since start or the last reset.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.get("calls")
    }

    /// Total IAM/STS calls since start or the last reset.
    pub fn total_calls(&self) -> u64 {
        self.calls().values().sum()
    }

    /// Every IAM/STS call since start or the last [`Moto::reset_calls`], in
    /// the order the server received them, injected faults included.
    pub fn requests(&self) -> Vec<Request> {
        self.get("requests")
    }

    /// Clears the call counts and the request logs ([`Moto::requests`], [`Moto::api_requests`]).
    pub fn reset_calls(&self) {
        let _: serde_json::Value = self.post("calls/reset", &serde_json::json!({}));
    }

    /// Inject faults from now on; `Faults::default()` turns them off (and
    /// any latency).
    pub fn faults(&self, faults: &Faults) {
        let _: serde_json::Value = self.post("faults", faults);
    }

    /// As [`Moto::faults`], and also hold back the answer to every call that
    /// matches `faults.actions` (every call when `None`) by `latency`, *after*
    /// moto processed it: the write has happened while the caller still
    /// waits, so an apply can be interrupted with writes in flight. A
    /// throttled call waits before its error, a dropped one before the
    /// hang-up. Latency is not a fault: it draws nothing from the seeded
    /// sequence and `faults.max` neither counts nor limits it. The server
    /// answers each call on its own thread, so concurrent delayed calls wait
    /// side by side, not one after another.
    ///
    /// `Moto::faults_with_latency(&Faults::default(), latency)` slows every
    /// call without faults; [`Moto::faults`] turns the latency off again.
    pub fn faults_with_latency(&self, faults: &Faults, latency: Duration) {
        let mut body = serde_json::to_value(faults).expect("faults serialize");
        if let Some(fields) = body.as_object_mut() {
            let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
            fields.insert("latency_ms".into(), ms.into());
        }
        let _: serde_json::Value = self.post("faults", &body);
    }

    /// As [`Moto::faults`], for the calls `scope` names only (signed by its
    /// accounts), with its `deny` share and latency besides. The throttle,
    /// drop and deny draws come from one seeded sequence, drawn only for
    /// matching calls; [`Moto::faults`] turns it all off again.
    pub fn faults_in(&self, faults: &Faults, scope: &FaultScope) {
        let mut body = serde_json::to_value(faults).expect("faults serialize");
        if let Some(fields) = body.as_object_mut() {
            if !scope.accounts.is_empty() {
                fields.insert("accounts".into(), scope.accounts.clone().into());
            }
            fields.insert("deny".into(), scope.deny.into());
            if let Some(latency) = scope.latency {
                let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
                fields.insert("latency_ms".into(), ms.into());
            }
        }
        let _: serde_json::Value = self.post("faults", &body);
    }

    /// When each IAM/STS call since start or the last [`Moto::reset_calls`]
    /// was in flight at the server, in the order they arrived: to measure
    /// how many were at once (with [`Moto::faults_with_latency`] to make
    /// each last).
    pub fn request_spans(&self) -> Vec<Span> {
        self.get("requests")
    }

    /// Every STS `AssumeRole` call since start or the last
    /// [`Moto::reset_calls`], with its role, session name and external id.
    pub fn assume_role_calls(&self) -> Vec<AssumeRoleCall> {
        let all: Vec<serde_json::Value> = self.get("requests");
        all.into_iter()
            .filter(|r| r["action"] == "AssumeRole")
            .map(|r| {
                serde_json::from_value(r.clone())
                    .unwrap_or_else(|e| panic!("AssumeRole entry {r}: {e}"))
            })
            .collect()
    }

    /// Every call of a JSON or REST-JSON API (Security Hub, SQS, Config,
    /// ...) since start or the last [`Moto::reset_calls`], in the order they
    /// arrived, this testkit's own included.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.get("api_requests")
    }

    /// Serve the credential report as it is now, stamped `generated` (default
    /// now), to every `GetCredentialReport` until [`Moto::thaw_report`], as
    /// AWS serves a report generated hours ago while the account moves on.
    pub fn freeze_report(&self, generated: Option<DateTime<Utc>>) {
        let _: serde_json::Value = self.post(
            "report",
            &serde_json::json!({"freeze": true, "generated": generated}),
        );
    }

    /// Serve the live report again.
    pub fn thaw_report(&self) {
        let _: serde_json::Value = self.post("report", &serde_json::json!({"freeze": false}));
    }

    /// Change the account behind the engine's back.
    pub fn mutate(&self, ops: &[Mutation]) {
        let _: serde_json::Value = self.post("mutate", &ops);
    }

    /// An SNS topic named `topic` and a verified SES sender `sender` in
    /// `region`; the topic's ARN.
    pub fn outbox_setup(&self, region: &str, topic: &str, sender: &str) -> String {
        let v: serde_json::Value = self.post(
            "outbox",
            &serde_json::json!({"region": region, "sns_topic": topic, "ses_identity": sender}),
        );
        v["topic_arn"].as_str().unwrap_or_default().to_string()
    }

    /// What SNS published and SES sent in `region`:
    /// `{sns: [{topic, subject, message, attributes}], ses: [{source, destinations, subject, body}]}`.
    pub fn outbox(&self, region: &str) -> serde_json::Value {
        self.get(&format!("outbox?region={region}"))
    }

    /// [`Moto::mutate`] in another account than moto's default one.
    pub fn mutate_in(&self, account: &str, ops: &[Mutation]) {
        let _: serde_json::Value = self.post(&format!("mutate?account={account}"), &ops);
    }

    /// Credentials of an assumed role (STS `AssumeRole`).
    pub fn assume_role(&self, role_arn: &str) -> AssumedRole {
        self.post(
            "assume",
            &serde_json::json!({"role_arn": role_arn, "session": "engine-test"}),
        )
    }

    /// Faults injected since the last [`Moto::faults`].
    pub fn injected(&self) -> Injected {
        self.get("faults")
    }

    /// Call an AWS JSON-protocol API of this moto (SQS, EventBridge, Config)
    /// the way the SDKs do: `POST /` with `X-Amz-Target: TARGET` and an
    /// Authorization header whose credential scope names `service` and
    /// `region` (moto reads them from it; it checks no signature). Panics on
    /// an error answer; an empty answer (`PutConfigRule`) is `null`.
    pub fn aws_json(
        &self,
        service: &str,
        region: &str,
        target: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("{}/", self.endpoint());
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIATESTKIT/20260101/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0"
        );
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", target)
            .header("Authorization", &auth)
            .header("X-Amz-Date", "20260101T000000Z")
            .send(body.to_string().as_bytes());
        self.read(&format!("{url} ({target})"), response)
    }

    /// Create an SQS queue in `region` (attributes as SQS names them, e.g.
    /// `VisibilityTimeout`, `RedrivePolicy`); its URL and ARN.
    pub fn create_queue(
        &self,
        region: &str,
        name: &str,
        attributes: &[(&str, String)],
    ) -> (String, String) {
        let attrs: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect();
        let created = self.aws_json(
            "sqs",
            region,
            "AmazonSQS.CreateQueue",
            &serde_json::json!({"QueueName": name, "Attributes": attrs}),
        );
        let url = created["QueueUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("CreateQueue answered {created}"))
            .to_string();
        let arn = self.queue_attributes(region, &url)["QueueArn"]
            .as_str()
            .unwrap_or_else(|| panic!("no QueueArn for {url}"))
            .to_string();
        (url, arn)
    }

    /// Every attribute of a queue (`ApproximateNumberOfMessages`,
    /// `ApproximateNumberOfMessagesNotVisible`, `QueueArn`, ...), as strings.
    pub fn queue_attributes(&self, region: &str, url: &str) -> serde_json::Value {
        self.aws_json(
            "sqs",
            region,
            "AmazonSQS.GetQueueAttributes",
            &serde_json::json!({"QueueUrl": url, "AttributeNames": ["All"]}),
        )["Attributes"]
            .clone()
    }

    /// Messages of a queue, visible and in flight: (visible, not visible).
    pub fn queue_depth(&self, region: &str, url: &str) -> (u64, u64) {
        let a = self.queue_attributes(region, url);
        let n = |k: &str| {
            a[k].as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {a}"))
        };
        (
            n("ApproximateNumberOfMessages"),
            n("ApproximateNumberOfMessagesNotVisible"),
        )
    }

    /// An EventBridge rule on the default bus of `region` that sends the
    /// events matching `pattern` to the SQS queue `queue_arn`.
    pub fn route_events_to_queue(
        &self,
        region: &str,
        rule: &str,
        pattern: &serde_json::Value,
        queue_arn: &str,
    ) {
        self.aws_json(
            "events",
            region,
            "AWSEvents.PutRule",
            &serde_json::json!({"Name": rule, "EventPattern": pattern.to_string(), "State": "ENABLED"}),
        );
        let put = self.aws_json(
            "events",
            region,
            "AWSEvents.PutTargets",
            &serde_json::json!({"Rule": rule, "Targets": [{"Id": "engine", "Arn": queue_arn}]}),
        );
        assert_eq!(put["FailedEntryCount"], 0, "PutTargets: {put}");
    }

    /// Put events on the default bus of `region` (EventBridge `PutEvents`):
    /// each `(source, detail-type, detail)`.
    pub fn put_events(&self, region: &str, events: &[(&str, &str, serde_json::Value)]) {
        let entries: Vec<serde_json::Value> = events
            .iter()
            .map(|(source, detail_type, detail)| {
                serde_json::json!({
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": detail.to_string(),
                })
            })
            .collect();
        let put = self.aws_json(
            "events",
            region,
            "AWSEvents.PutEvents",
            &serde_json::json!({ "Entries": entries }),
        );
        assert_eq!(put["FailedEntryCount"], 0, "PutEvents: {put}");
    }

    /// Whether another consumer could take a message now: a receive that
    /// leaves what it gets visible (`VisibilityTimeout` 0) and does not wait.
    pub fn peek_message(&self, region: &str, url: &str) -> bool {
        let got = self.aws_json(
            "sqs",
            region,
            "AmazonSQS.ReceiveMessage",
            &serde_json::json!({"QueueUrl": url, "VisibilityTimeout": 0, "WaitTimeSeconds": 0}),
        );
        got["Messages"].as_array().is_some_and(|m| !m.is_empty())
    }

    /// Send a raw message body to a queue (what a broken producer sends).
    pub fn send_message(&self, region: &str, url: &str, body: &str) {
        self.aws_json(
            "sqs",
            region,
            "AmazonSQS.SendMessage",
            &serde_json::json!({"QueueUrl": url, "MessageBody": body}),
        );
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let url = format!("{}/_engine/{path}", self.endpoint());
        let response = self.agent.get(&url).call();
        self.read(&url, response)
    }

    fn post<B: Serialize + ?Sized, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> T {
        let url = format!("{}/_engine/{path}", self.endpoint());
        let response = self.agent.post(&url).send_json(body);
        self.read(&url, response)
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> T {
        let mut response = response.unwrap_or_else(|e| panic!("{url}: {e}{}", self.stderr_tail()));
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{url}: reading the answer: {e}"));
        if !status.is_success() {
            panic!("{url}: {status}: {text}{}", self.stderr_tail());
        }
        // Some AWS actions answer nothing at all (Config's PutConfigRule,
        // DeleteConfigRule): read as JSON `null`.
        let text = if text.trim().is_empty() {
            "null".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e} in {text}"))
    }

    fn stderr_tail(&self) -> String {
        let err = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        if err.is_empty() {
            String::new()
        } else {
            format!("\n--- server stderr ---\n{err}")
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run left `running` in the journal under `state` by a process that is
/// gone, with a delete of `user`'s key `key_id` journaled as an intent and no
/// result: what a crash mid-apply leaves. Returns the run's id.
pub fn crashed_run(state: &std::path::Path, user: &str, key_id: &str) -> i64 {
    let mut journal = engine_journal::Journal::open(state).expect("journal");
    let dead = engine_journal::RunOwner {
        pid: i32::MAX as u32,
        ..engine_journal::RunOwner::current()
    };
    let run = journal
        .start_run_owned_by("apply", "policies", &[], &dead)
        .expect("run");
    let action = engine_core::PlannedAction {
        policy: "rotate".into(),
        action: engine_core::ActionKind::DeleteAccessKey,
        user: user.into(),
        arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/{user}").into(),
        credential: engine_core::Credential::AccessKey1,
        key_id: Some(key_id.into()),
        finding: 0,
        reason: None,
        notify: None,
    };
    journal.intent(run, &action).expect("intent");
    run
}

/// The workspace root: this crate lives in `runtime/testkit`.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(manifest)
}
