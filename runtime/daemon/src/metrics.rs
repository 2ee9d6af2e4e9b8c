//! The daemon's Prometheus metrics.
//!
//! [`Metrics`] owns a `prometheus-client` registry and offers one plain
//! `&self` method per event the daemon reports. It is `Send + Sync`; share it
//! behind an `Arc` (for instance inside [`crate::http::Shared`]).
//!
//! Every metric name starts with `engine_`. Label values are bounded by
//! construction: policy names, plugin names, rule ids, action kinds,
//! outcomes, AWS operation names and account ids (those of the
//! configuration's `[accounts]`, and the engine's own). A user name, an
//! access key id or any other per-credential value is never a label.
//!
//! [`Metrics::encode`] renders the Prometheus text exposition format, version
//! 0.0.4; serve it with [`CONTENT_TYPE`].

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `Content-Type` of the text [`Metrics::encode`] returns (Prometheus text
/// exposition format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of `engine_run_duration_seconds`: 0.1 s to 30 min.
const RUN_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// Upper bounds (seconds) of `engine_plugin_call_duration_seconds`: 100 µs to 10 s.
const PLUGIN_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The results of `engine_messages_total`: the counts `sent`, `failed`,
/// `already` and `nowhere` of a run's messages.
const MESSAGE_RESULTS: [&str; 4] = ["sent", "failed", "already-sent", "no-channel"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleChangeLabels {
    change: String,
    outcome: String,
}

/// What became of a received event: `engine_events_total{outcome}`.
pub const EVENT_OUTCOMES: [&str; 4] = ["acted", "ignored", "failed", "malformed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyRuleLabels {
    account: String,
    policy: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    account: String,
    policy: String,
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountResultLabels {
    account: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsLabels {
    account: String,
    operation: String,
    outcome: String,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

fn plugin_histogram() -> Histogram {
    Histogram::new(PLUGIN_BUCKETS)
}

/// Seconds since the Unix epoch, with millisecond precision.
fn epoch_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

fn policy_label(policy: &str) -> PolicyLabel {
    PolicyLabel {
        policy: policy.to_owned(),
    }
}

/// The daemon's metrics. See the module documentation.
pub struct Metrics {
    registry: Registry,
    /// Held while a whole label set is replaced and while encoding, so that a
    /// scrape never sees a half-replaced set.
    replace: Mutex<()>,
    /// Policies that have per-policy timestamp series, for
    /// [`Metrics::retain_policies`].
    known_policies: Mutex<BTreeSet<String>>,

    reloads: Family<ResultLabel, Counter>,
    last_reload_ok: Gauge,
    last_reload_success: FloatGauge,
    runs: Family<ResultLabel, Counter>,
    run_duration: Histogram,
    ticks_skipped: Family<PolicyLabel, Counter>,
    open_findings: Family<PolicyRuleLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
    plugin_call_duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    aws_requests: Family<AwsLabels, Counter>,
    policy_last_run: Family<PolicyLabel, FloatGauge>,
    policy_last_success: Family<PolicyLabel, FloatGauge>,
    policy_next_run: Family<PolicyLabel, FloatGauge>,
    events_received: Counter,
    events: Family<OutcomeLabel, Counter>,
    config_rule_changes: Family<RuleChangeLabels, Counter>,
    account_runs: Family<AccountResultLabels, Counter>,
    security_hub: Family<ResultLabel, Counter>,
    messages: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric registered; `engine_build_info` carries
    /// this crate's version.
    pub fn new() -> Self {
        Self::with_version(env!("CARGO_PKG_VERSION"))
    }

    /// Like [`Metrics::new`] with an explicit `engine_build_info{version}`.
    pub fn with_version(version: &'static str) -> Self {
        let mut registry = Registry::with_prefix("engine");

        // Names are given without `_total`; the encoder adds it to counters.
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info.get_or_create(&VersionLabel { version }).set(1);
        registry.register(
            "build_info",
            "Always 1; the label `version` is the engine's version",
            build_info,
        );

        let reloads = Family::<ResultLabel, Counter>::default();
        for result in ["success", "failure"] {
            // Present at 0 from the start, so that rate() and alerts work.
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "reloads",
            "Configuration reloads, by result (success or failure)",
            reloads.clone(),
        );
        let last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, 0 if it failed",
            last_reload_ok.clone(),
        );
        let last_reload_success = FloatGauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration load or reload, in seconds since the Unix epoch",
            last_reload_success.clone(),
        );

        let runs = Family::<ResultLabel, Counter>::default();
        for result in ["ok", "failed"] {
            let _ = runs.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "runs",
            "Finished runs (one credential report, one plan, its actions), by result (ok or failed)",
            runs.clone(),
        );
        let run_duration = run_histogram();
        registry.register(
            "run_duration_seconds",
            "Duration of finished runs, in seconds",
            run_duration.clone(),
        );
        let ticks_skipped = Family::default();
        registry.register(
            "ticks_skipped",
            "Scheduled ticks of a policy skipped because a run was already in progress",
            ticks_skipped.clone(),
        );

        let open_findings = Family::default();
        registry.register(
            "open_findings",
            "Findings of the last run, by account, policy and rule; replaced as a whole after each run",
            open_findings.clone(),
        );
        let actions = Family::default();
        registry.register(
            "actions",
            "Remediation actions by account, policy, kind (e.g. delete-access-key) and outcome \
             (done, done-on-retry, already-gone, skipped, failed)",
            actions.clone(),
        );

        let plugin_call_duration =
            Family::<PluginLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                plugin_histogram,
            );
        registry.register(
            "plugin_call_duration_seconds",
            "Duration of calls into a WebAssembly plugin, in seconds",
            plugin_call_duration.clone(),
        );
        let plugin_failures = Family::default();
        registry.register(
            "plugin_failures",
            "Failed plugin calls by plugin and failure kind (load, trap, timeout, memory, invalid-output, ...)",
            plugin_failures.clone(),
        );

        let aws_requests = Family::default();
        registry.register(
            "aws_requests",
            "Requests to AWS by account (where it was made), operation (e.g. GetCredentialReport) and outcome",
            aws_requests.clone(),
        );

        let policy_last_run = Family::default();
        registry.register(
            "policy_last_run_timestamp_seconds",
            "Time the last run of a policy finished, in seconds since the Unix epoch",
            policy_last_run.clone(),
        );
        let policy_last_success = Family::default();
        registry.register(
            "policy_last_success_timestamp_seconds",
            "Time the last successful run of a policy finished, in seconds since the Unix epoch",
            policy_last_success.clone(),
        );
        let policy_next_run = Family::default();
        registry.register(
            "policy_next_run_timestamp_seconds",
            "Time of the next scheduled run of a policy, in seconds since the Unix epoch",
            policy_next_run.clone(),
        );

        let events_received = Counter::default();
        registry.register(
            "events_received",
            "AWS Config compliance events received from the events queue",
            events_received.clone(),
        );
        let events = Family::<OutcomeLabel, Counter>::default();
        for outcome in EVENT_OUTCOMES {
            let _ = events.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "events",
            "Received events by outcome: acted (a run for the user, journaled), ignored \
             (compliant, another rule, account or resource; deleted), failed (left on the \
             queue to be tried again), malformed (left for the queue's redrive policy)",
            events.clone(),
        );
        let config_rule_changes = Family::default();
        registry.register(
            "config_rule_changes",
            "Writes to AWS Config rules by change (create, update, delete) and outcome \
             (done, already-gone, failed)",
            config_rule_changes.clone(),
        );

        let account_runs = Family::default();
        registry.register(
            "account_runs",
            "Accounts planned and carried out by scheduled runs, by account and result (ok or failed)",
            account_runs.clone(),
        );

        let security_hub = Family::<ResultLabel, Counter>::default();
        registry.register(
            "security_hub_findings",
            "Findings sent to AWS Security Hub, by result: imported (new or updated), resolved (gone since), failed (refused)",
            security_hub.clone(),
        );

        let messages = Family::<ResultLabel, Counter>::default();
        for result in MESSAGE_RESULTS {
            // Present at 0 from the start, so that an alert on failures works.
            let _ = messages.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "messages",
            "Messages to credential owners by result: sent, failed (may be sent by a later run), \
             already-sent (by an earlier run: not sent twice), no-channel (neither the owner's \
             channel nor a fallback channel to send it to)",
            messages.clone(),
        );

        Metrics {
            registry,
            replace: Mutex::new(()),
            known_policies: Mutex::new(BTreeSet::new()),
            reloads,
            last_reload_ok,
            last_reload_success,
            runs,
            run_duration,
            ticks_skipped,
            open_findings,
            actions,
            plugin_call_duration,
            plugin_failures,
            aws_requests,
            policy_last_run,
            policy_last_success,
            policy_next_run,
            events_received,
            events,
            config_rule_changes,
            account_runs,
            security_hub,
            messages,
        }
    }

    fn lock_replace(&self) -> std::sync::MutexGuard<'_, ()> {
        self.replace.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_policy(&self, policy: &str) {
        let mut known = self
            .known_policies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !known.contains(policy) {
            known.insert(policy.to_owned());
        }
    }

    /// A configuration load or reload finished at `at`: counts
    /// `engine_reloads_total{result}`, sets
    /// `engine_config_last_reload_successful` and, on success,
    /// `engine_config_last_reload_success_timestamp_seconds`.
    pub fn reload(&self, ok: bool, at: DateTime<Utc>) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.last_reload_ok.set(i64::from(ok));
        if ok {
            self.last_reload_success.set(epoch_seconds(at));
        }
    }

    /// A run finished: counts `engine_runs_total{result="ok"|"failed"}` and
    /// observes `engine_run_duration_seconds`.
    pub fn run_finished(&self, ok: bool, duration: Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.runs.get_or_create(&ResultLabel { result }).inc();
        self.run_duration.observe(duration.as_secs_f64());
    }

    /// `n` ticks of `policy` were skipped because a run was in progress
    /// (`engine_ticks_skipped_total{policy}`).
    pub fn ticks_skipped(&self, policy: &str, n: u64) {
        if n > 0 {
            self.ticks_skipped
                .get_or_create(&policy_label(policy))
                .inc_by(n);
        }
    }

    /// Replaces the whole `engine_open_findings{account,policy,rule}` set
    /// with `(account, policy, rule, count)` entries: label sets not listed
    /// disappear (a policy removed by a reload, a rule with no findings left
    /// unless listed with 0). Entries repeating a label set are added up.
    pub fn set_open_findings(&self, findings: &[(String, String, String, u64)]) {
        let _guard = self.lock_replace();
        self.open_findings.clear();
        for (account, policy, rule, n) in findings {
            let labels = PolicyRuleLabels {
                account: account.clone(),
                policy: policy.clone(),
                rule: rule.clone(),
            };
            self.open_findings
                .get_or_create(&labels)
                .inc_by(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// One remediation action of `policy` in `account` ended:
    /// `engine_actions_total{account,policy,kind,outcome}`. `kind` is the
    /// action kind (e.g. `delete-access-key`), `outcome` one of `done`,
    /// `done-on-retry`, `already-gone`, `skipped`, `failed`.
    pub fn action(&self, account: &str, policy: &str, kind: &str, outcome: &str) {
        let labels = ActionLabels {
            account: account.to_owned(),
            policy: policy.to_owned(),
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.actions.get_or_create(&labels).inc();
    }

    /// One call into `plugin` took `duration`
    /// (`engine_plugin_call_duration_seconds{plugin}`).
    pub fn plugin_call(&self, plugin: &str, duration: Duration) {
        let labels = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.plugin_call_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// A call into `plugin` failed with failure kind `kind` (`load`, `trap`,
    /// `timeout`, `memory`, `invalid-output`, ...):
    /// `engine_plugin_failures_total{plugin,kind}`.
    pub fn plugin_failure(&self, plugin: &str, kind: &str) {
        let labels = PluginFailureLabels {
            plugin: plugin.to_owned(),
            kind: kind.to_owned(),
        };
        self.plugin_failures.get_or_create(&labels).inc();
    }

    /// One AWS request `operation` (e.g. `GetCredentialReport`) made in
    /// `account` (empty when not known) ended with `outcome`:
    /// `engine_aws_requests_total{account,operation,outcome}`.
    pub fn aws_request(&self, account: &str, operation: &str, outcome: &str) {
        let labels = AwsLabels {
            account: account.to_owned(),
            operation: operation.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.aws_requests.get_or_create(&labels).inc();
    }

    /// A run including `policy` finished at `at`: sets
    /// `engine_policy_last_run_timestamp_seconds{policy}` and, if `ok`,
    /// `engine_policy_last_success_timestamp_seconds{policy}`.
    pub fn policy_run(&self, policy: &str, at: DateTime<Utc>, ok: bool) {
        self.remember_policy(policy);
        let labels = policy_label(policy);
        let t = epoch_seconds(at);
        self.policy_last_run.get_or_create(&labels).set(t);
        if ok {
            self.policy_last_success.get_or_create(&labels).set(t);
        }
    }

    /// Replaces the whole `engine_policy_next_run_timestamp_seconds{policy}`
    /// set: policies not listed (unscheduled, or removed by a reload)
    /// disappear.
    pub fn set_next_runs(&self, next: &[(String, DateTime<Utc>)]) {
        let _guard = self.lock_replace();
        self.policy_next_run.clear();
        for (policy, at) in next {
            self.remember_policy(policy);
            self.policy_next_run
                .get_or_create(&policy_label(policy))
                .set(epoch_seconds(*at));
        }
    }

    /// After a reload: drops the per-policy timestamp gauges
    /// (`engine_policy_last_run_timestamp_seconds`,
    /// `engine_policy_last_success_timestamp_seconds`,
    /// `engine_policy_next_run_timestamp_seconds`) of every policy not in
    /// `policies`, so that a removed policy does not look stale forever.
    /// Counters keep their totals.
    pub fn retain_policies(&self, policies: &[String]) {
        let _guard = self.lock_replace();
        let keep: BTreeSet<&str> = policies.iter().map(String::as_str).collect();
        let mut known = self
            .known_policies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        known.retain(|policy| {
            if keep.contains(policy.as_str()) {
                return true;
            }
            let labels = policy_label(policy);
            self.policy_last_run.remove(&labels);
            self.policy_last_success.remove(&labels);
            self.policy_next_run.remove(&labels);
            false
        });
    }

    /// One account of a scheduled run was planned and carried out (`ok`), or
    /// failed: `engine_account_runs_total{account,result}`.
    pub fn account_run(&self, account: &str, ok: bool) {
        let labels = AccountResultLabels {
            account: account.to_owned(),
            result: if ok { "ok" } else { "failed" },
        };
        self.account_runs.get_or_create(&labels).inc();
    }

    /// Findings sent to Security Hub by one account's export
    /// (`engine_security_hub_findings_total{result}`).
    pub fn security_hub(&self, imported: u64, resolved: u64, failed: u64) {
        for (result, n) in [
            ("imported", imported),
            ("resolved", resolved),
            ("failed", failed),
        ] {
            self.security_hub
                .get_or_create(&ResultLabel { result })
                .inc_by(n);
        }
    }

    /// How one account's messages to owners went, per result of
    /// [`MESSAGE_RESULTS`] (`engine_messages_total{result}`).
    pub fn messages(&self, sent: &engine_run::notices::Sent) {
        let counts = [sent.sent, sent.failed, sent.already, sent.nowhere];
        for (result, n) in MESSAGE_RESULTS.into_iter().zip(counts) {
            self.messages
                .get_or_create(&ResultLabel { result })
                .inc_by(n as u64);
        }
    }

    /// An event was received from the queue (`engine_events_received_total`).
    pub fn event_received(&self) {
        self.events_received.inc();
    }

    /// What became of a received event (`engine_events_total{outcome}`), one
    /// of [`EVENT_OUTCOMES`].
    pub fn event_handled(&self, outcome: &'static str) {
        self.events.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// One write to an AWS Config rule ended
    /// (`engine_config_rule_changes_total{change,outcome}`).
    pub fn config_rule_change(&self, change: &str, outcome: &str) {
        let labels = RuleChangeLabels {
            change: change.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.config_rule_changes.get_or_create(&labels).inc();
    }

    /// Every metric in the Prometheus text exposition format 0.0.4 (serve it
    /// with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let _guard = self.lock_replace();
        let mut out = String::new();
        // Writing into a String cannot fail; an Err would come from a metric's
        // own encoder, and then the partial text is still the best answer.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(has(text, line), "missing line {line:?} in:\n{text}");
        }
    }

    /// Label names of a sample line such as `a_b{x="1",y="2"} 3`.
    fn label_names(line: &str) -> Vec<String> {
        let Some(start) = line.find('{') else {
            return Vec::new();
        };
        let end = line.rfind('}').expect("closing brace");
        let mut names = Vec::new();
        let mut rest = &line[start + 1..end];
        while !rest.is_empty() {
            let eq = rest.find("=\"").expect("label =");
            names.push(rest[..eq].to_owned());
            // Skip the quoted value (label values here hold no escaped quote).
            let after = &rest[eq + 2..];
            let close = after.find('"').expect("closing quote");
            rest = after[close + 1..].trim_start_matches(',');
        }
        names
    }

    fn exercised() -> Metrics {
        let m = Metrics::with_version("1.2.3");
        m.reload(true, at("2026-11-28T00:00:00.5Z"));
        m.reload(false, at("2026-11-28T00:01:00Z"));
        m.run_finished(true, Duration::from_millis(1500));
        m.run_finished(false, Duration::from_secs(4000));
        m.ticks_skipped("rotate", 2);
        m.ticks_skipped("rotate", 0);
        m.set_open_findings(&[
            ("111111111111".into(), "rotate".into(), "cis-1.4".into(), 3),
            ("111111111111".into(), "unused".into(), "cis-1.3".into(), 0),
        ]);
        m.action("111111111111", "rotate", "delete-access-key", "done");
        m.action("111111111111", "rotate", "delete-access-key", "done");
        m.action(
            "111111111111",
            "unused",
            "deactivate-access-key",
            "already-gone",
        );
        m.account_run("111111111111", true);
        m.plugin_call("delete-expired-keys", Duration::from_micros(300));
        m.plugin_failure("delete-expired-keys", "timeout");
        m.aws_request("111111111111", "GetCredentialReport", "ok");
        m.aws_request("222222222222", "GetCredentialReport", "ok");
        m.aws_request("111111111111", "DeleteAccessKey", "error");
        m.aws_request("", "ReceiveMessage", "ok");
        m.policy_run("rotate", at("2026-11-28T00:00:00Z"), true);
        m.policy_run("rotate", at("2026-11-28T01:00:00Z"), false);
        m.set_next_runs(&[
            ("rotate".into(), at("2026-11-28T02:00:00Z")),
            ("unused".into(), at("2026-11-29T00:00:00Z")),
        ]);
        m.event_received();
        m.event_received();
        m.event_handled("acted");
        m.event_handled("malformed");
        m.config_rule_change("create", "done");
        m.security_hub(130, 2, 0);
        m.security_hub(1, 0, 1);
        let sent = |sent, failed, already, nowhere| engine_run::notices::Sent {
            sent,
            failed,
            already,
            nowhere,
            summaries: 0,
        };
        m.messages(&sent(2, 1, 0, 0));
        m.messages(&sent(1, 0, 3, 1));
        m
    }

    #[test]
    fn encodes_every_metric() {
        let text = exercised().encode();
        assert_lines(
            &text,
            &[
                "# TYPE engine_build_info gauge",
                r#"engine_build_info{version="1.2.3"} 1"#,
                "# TYPE engine_reloads_total counter",
                r#"engine_reloads_total{result="success"} 1"#,
                r#"engine_reloads_total{result="failure"} 1"#,
                "engine_config_last_reload_successful 0",
                "engine_config_last_reload_success_timestamp_seconds 1795824000.5",
                r#"engine_runs_total{result="ok"} 1"#,
                r#"engine_runs_total{result="failed"} 1"#,
                "# TYPE engine_run_duration_seconds histogram",
                r#"engine_run_duration_seconds_bucket{le="1"} 0"#,
                r#"engine_run_duration_seconds_bucket{le="2.5"} 1"#,
                r#"engine_run_duration_seconds_bucket{le="1800"} 1"#,
                r#"engine_run_duration_seconds_bucket{le="+Inf"} 2"#,
                "engine_run_duration_seconds_sum 4001.5",
                "engine_run_duration_seconds_count 2",
                r#"engine_ticks_skipped_total{policy="rotate"} 2"#,
                "# TYPE engine_open_findings gauge",
                r#"engine_open_findings{account="111111111111",policy="rotate",rule="cis-1.4"} 3"#,
                r#"engine_open_findings{account="111111111111",policy="unused",rule="cis-1.3"} 0"#,
                r#"engine_actions_total{account="111111111111",policy="rotate",kind="delete-access-key",outcome="done"} 2"#,
                r#"engine_actions_total{account="111111111111",policy="unused",kind="deactivate-access-key",outcome="already-gone"} 1"#,
                r#"engine_account_runs_total{account="111111111111",result="ok"} 1"#,
                r#"engine_plugin_call_duration_seconds_bucket{plugin="delete-expired-keys",le="0.0001"} 0"#,
                r#"engine_plugin_call_duration_seconds_bucket{plugin="delete-expired-keys",le="0.0005"} 1"#,
                r#"engine_plugin_call_duration_seconds_bucket{plugin="delete-expired-keys",le="10"} 1"#,
                r#"engine_plugin_call_duration_seconds_count{plugin="delete-expired-keys"} 1"#,
                r#"engine_plugin_failures_total{plugin="delete-expired-keys",kind="timeout"} 1"#,
                r#"engine_aws_requests_total{account="111111111111",operation="GetCredentialReport",outcome="ok"} 1"#,
                r#"engine_aws_requests_total{account="222222222222",operation="GetCredentialReport",outcome="ok"} 1"#,
                r#"engine_aws_requests_total{account="111111111111",operation="DeleteAccessKey",outcome="error"} 1"#,
                r#"engine_aws_requests_total{account="",operation="ReceiveMessage",outcome="ok"} 1"#,
                r#"engine_policy_last_run_timestamp_seconds{policy="rotate"} 1795827600.0"#,
                r#"engine_policy_last_success_timestamp_seconds{policy="rotate"} 1795824000.0"#,
                r#"engine_policy_next_run_timestamp_seconds{policy="rotate"} 1795831200.0"#,
                r#"engine_policy_next_run_timestamp_seconds{policy="unused"} 1795910400.0"#,
                "engine_events_received_total 2",
                r#"engine_events_total{outcome="acted"} 1"#,
                r#"engine_events_total{outcome="ignored"} 0"#,
                r#"engine_events_total{outcome="failed"} 0"#,
                r#"engine_events_total{outcome="malformed"} 1"#,
                r#"engine_config_rule_changes_total{change="create",outcome="done"} 1"#,
                r#"engine_security_hub_findings_total{result="imported"} 131"#,
                r#"engine_security_hub_findings_total{result="resolved"} 2"#,
                r#"engine_security_hub_findings_total{result="failed"} 1"#,
                "# TYPE engine_messages_total counter",
                r#"engine_messages_total{result="sent"} 3"#,
                r#"engine_messages_total{result="failed"} 1"#,
                r#"engine_messages_total{result="already-sent"} 3"#,
                r#"engine_messages_total{result="no-channel"} 1"#,
            ],
        );
        // A skipped count of 0 creates no series of its own.
        assert_eq!(
            samples(&text)
                .iter()
                .filter(|l| l.starts_with("engine_ticks_skipped_total"))
                .count(),
            1
        );
    }

    #[test]
    fn fresh_metrics_show_zeroed_results() {
        let text = Metrics::with_version("0.0.0").encode();
        assert_lines(
            &text,
            &[
                r#"engine_reloads_total{result="success"} 0"#,
                r#"engine_reloads_total{result="failure"} 0"#,
                r#"engine_runs_total{result="ok"} 0"#,
                r#"engine_runs_total{result="failed"} 0"#,
                "engine_config_last_reload_successful 0",
                "engine_run_duration_seconds_count 0",
                r#"engine_messages_total{result="sent"} 0"#,
                r#"engine_messages_total{result="failed"} 0"#,
            ],
        );
    }

    #[test]
    fn reload_success_sets_gauges() {
        let m = Metrics::new();
        m.reload(true, at("2026-01-01T00:00:00Z"));
        let text = m.encode();
        assert_lines(
            &text,
            &[
                "engine_config_last_reload_successful 1",
                "engine_config_last_reload_success_timestamp_seconds 1767225600.0",
                &format!(
                    r#"engine_build_info{{version="{}"}} 1"#,
                    env!("CARGO_PKG_VERSION")
                ),
            ],
        );
    }

    #[test]
    fn replaced_sets_drop_old_label_sets() {
        let m = exercised();
        m.set_open_findings(&[("111111111111".into(), "rotate".into(), "cis-1.4".into(), 1)]);
        m.set_next_runs(&[("rotate".into(), at("2026-11-28T03:00:00Z"))]);
        let text = m.encode();
        assert_lines(
            &text,
            &[
                r#"engine_open_findings{account="111111111111",policy="rotate",rule="cis-1.4"} 1"#,
                r#"engine_policy_next_run_timestamp_seconds{policy="rotate"} 1795834800.0"#,
            ],
        );
        assert!(
            !text.contains(r#"engine_open_findings{policy="unused""#),
            "{text}"
        );
        assert!(
            !text.contains(r#"engine_policy_next_run_timestamp_seconds{policy="unused""#),
            "{text}"
        );

        m.set_open_findings(&[]);
        m.set_next_runs(&[]);
        let text = m.encode();
        assert!(!text.contains("engine_open_findings{"), "{text}");
        assert!(
            !text.contains("engine_policy_next_run_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn repeated_findings_pairs_add_up() {
        let m = Metrics::new();
        m.set_open_findings(&[
            ("1".into(), "p".into(), "cis-1.3".into(), 2),
            ("1".into(), "p".into(), "cis-1.3".into(), 5),
        ]);
        assert_lines(
            &m.encode(),
            &[r#"engine_open_findings{account="1",policy="p",rule="cis-1.3"} 7"#],
        );
    }

    #[test]
    fn retain_policies_drops_timestamps_of_removed_policies() {
        let m = exercised();
        m.policy_run("gone", at("2026-11-28T00:00:00Z"), true);
        m.retain_policies(&["rotate".to_owned()]);
        let text = m.encode();
        assert!(!text.contains(r#"policy="gone""#), "{text}");
        assert!(
            !text.contains(r#"engine_policy_next_run_timestamp_seconds{policy="unused""#),
            "{text}"
        );
        assert_lines(
            &text,
            &[
                r#"engine_policy_last_run_timestamp_seconds{policy="rotate"} 1795827600.0"#,
                r#"engine_policy_next_run_timestamp_seconds{policy="rotate"} 1795831200.0"#,
                // Counters keep their totals.
                r#"engine_actions_total{account="111111111111",policy="unused",kind="deactivate-access-key",outcome="already-gone"} 1"#,
            ],
        );
    }

    #[test]
    fn only_bounded_labels_exist() {
        const ALLOWED: &[&str] = &[
            "version",
            "result",
            "policy",
            "rule",
            "kind",
            "outcome",
            "plugin",
            "operation",
            "change",
            "account",
            "le",
        ];
        let text = exercised().encode();
        let lines = samples(&text);
        assert!(lines.len() > 40);
        for line in lines {
            assert!(line.starts_with("engine_"), "{line}");
            for name in label_names(line) {
                assert!(ALLOWED.contains(&name.as_str()), "label {name} in {line}");
            }
        }
        assert_eq!(
            label_names(r#"x{policy="a",rule="b"} 1"#),
            ["policy", "rule"]
        );
    }

    #[test]
    fn metrics_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }
}
