//! The daemon: the scheduler's decisions carried out, for weeks.
//!
//! One task owns everything that changes (the configuration, the scheduler,
//! what the status endpoint shows) and sleeps until the next tick, a signal,
//! a file change or the end of a run. Runs are spawned one at a time: the
//! scheduler is told a run is in progress, so ticks that come due meanwhile
//! are skipped and counted. A run uses the configuration it started with; a
//! reload swaps the configuration for the next run only.
//!
//! Stopping (SIGTERM, SIGINT): no new run starts, the run in progress starts
//! no new action (those not started are journaled as skipped), writes already
//! sent finish and are journaled. If that takes longer than the shutdown
//! timeout the daemon exits anyway, non-zero: the journal's unfinished-intent
//! handling reports what was cut off at the next start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use engine_run::execute;
use engine_run::{AccountOptions, PluginObserver, Request, SourceSpec};
use notify::Watcher;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, Shared};
use crate::metrics::Metrics;
use crate::{Decision, Scheduler};

/// The journal's name for a daemon run.
pub const COMMAND: &str = "scheduled";

/// Longest sleep between two looks at the wall clock: a clock stepped
/// forward (or a host that slept) is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How the daemon runs.
pub struct Options {
    /// The state directory (journal, plan key, lock).
    pub state: PathBuf,
    pub journal_retention: Duration,
    /// How to reach the account. Its observer is replaced by the metrics'.
    pub account: AccountOptions,
    pub shutdown_timeout: Duration,
    /// Quiet time after a file change before reloading.
    pub debounce: Duration,
    /// `/v1/*` needs this bearer token, when set.
    pub token: Option<String>,
    /// `--events-queue`: the SQS queue of AWS Config compliance events (wins
    /// over the configuration's `[aws_config] events_queue`).
    pub events_queue: Option<String>,
    /// How long a received event stays hidden from other consumers while it
    /// is handled (extended while its run lasts).
    pub events_visibility: Duration,
}

/// The signals the daemon answers. Take them first thing, inside the
/// runtime, before loading anything: from then on a SIGHUP (systemd's
/// `ExecReload`) or SIGTERM arriving during start-up is held for the loop
/// instead of killing the process.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called within a tokio runtime.
    pub fn take() -> Result<Signals, String> {
        let take = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot handle {name}: {e}"))
        };
        Ok(Signals {
            hup: take(SignalKind::hangup(), "SIGHUP")?,
            term: take(SignalKind::terminate(), "SIGTERM")?,
            int: take(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop, and everything in flight finished in time.
    Clean,
    /// The run in progress did not finish within the shutdown timeout.
    TimedOut,
}

/// Counts the metrics want from AWS requests, by the account they were made
/// in: the one their connection names (an assumed role's, what its
/// `GetCallerIdentity` answered), else the engine's own once known.
#[derive(Debug)]
struct AwsMetrics {
    shared: Arc<Shared>,
    /// The engine's own account, from the start-up `GetCallerIdentity`.
    own: Arc<std::sync::OnceLock<String>>,
}

impl engine_aws::RequestObserver for AwsMetrics {
    fn request(&self, operation: &str, outcome: engine_aws::RequestOutcome) {
        self.request_in(None, operation, outcome);
    }

    fn request_in(
        &self,
        account: Option<&str>,
        operation: &str,
        outcome: engine_aws::RequestOutcome,
    ) {
        let account = account
            .or_else(|| self.own.get().map(String::as_str))
            .unwrap_or_default();
        self.shared
            .metrics
            .aws_request(account, operation, outcome.as_str());
    }
}

pub(crate) struct PluginMetrics(pub(crate) Arc<Shared>);

impl PluginObserver for PluginMetrics {
    fn called(&self, _policy: &str, plugin: &str, elapsed: Duration, _peak_memory_bytes: usize) {
        self.0.metrics.plugin_call(plugin, elapsed);
    }
    fn failed(&self, plugin: &str, kind: &str) {
        self.0.metrics.plugin_failure(plugin, kind);
    }
}

/// Tell systemd (when it started us with a notify socket; a no-op otherwise).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The last run a policy was part of, as the status endpoint shows it.
#[derive(Debug, Clone)]
struct LastRun {
    run: Option<i64>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    ok: bool,
    findings: usize,
    actions: BTreeMap<&'static str, usize>,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    runs: u64,
    skipped: u64,
    collapsed: u64,
}

/// What a finished run reports back to the loop.
struct RunReport {
    policies: Vec<String>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    run: Option<i64>,
    ok: bool,
    error: Option<String>,
    /// Per (account, policy): (rule, findings).
    findings: BTreeMap<(String, String), (String, usize)>,
    results: Vec<execute::ActionResult>,
}

struct Reload {
    at: DateTime<Utc>,
    ok: bool,
    trigger: &'static str,
    diagnostics: Vec<String>,
}

/// Everything the loop owns.
struct Daemon {
    opts: Options,
    shared: Arc<Shared>,
    config: Arc<Config>,
    scheduler: Scheduler,
    started_at: DateTime<Utc>,
    last_reload: Reload,
    last_runs: BTreeMap<String, LastRun>,
    /// Per (account, policy): its open findings by rule, from its last run.
    open_findings: BTreeMap<(String, String), (String, usize)>,
    /// Per policy: skipped ticks already counted in the metrics.
    skipped_seen: BTreeMap<String, u64>,
    /// Per policy: runs, skipped and collapsed ticks since start (the
    /// scheduler's own counts start again at each reload).
    counts: BTreeMap<String, Counts>,
    runs_ok: u64,
    runs_failed: u64,
    skipped_total: u64,
    current: Option<(DateTime<Utc>, Vec<String>)>,
    stopping: bool,
    /// Held by whoever acts on the account (a scheduled run, an event's run,
    /// the AWS Config rules): one at a time.
    act: Arc<tokio::sync::Mutex<()>>,
    /// The configuration, for the events consumer.
    config_tx: tokio::sync::watch::Sender<Arc<Config>>,
}

/// Run the daemon until SIGTERM or SIGINT. `config` was loaded and the state
/// lock taken by the caller; `listener` is bound.
pub async fn run(
    opts: Options,
    config: Arc<Config>,
    listener: tokio::net::TcpListener,
    signals: Signals,
) -> Result<Stopped, String> {
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;

    let shared = Arc::new(Shared::new(Metrics::new()));
    let mut opts = opts;
    opts.account.progress = false;
    let own_account = Arc::new(std::sync::OnceLock::new());
    opts.account.observer = Some(Arc::new(AwsMetrics {
        shared: shared.clone(),
        own: own_account.clone(),
    }));
    let now = Utc::now();
    shared.metrics.reload(true, now);
    shared.config_loaded.store(true, Ordering::SeqCst);

    // Ticks since the last scheduled run the journal knows of collapse into
    // one run at the first poll; a first start counts from now.
    let since = last_scheduled_run(&opts)
        .filter(|t| *t < now)
        .unwrap_or(now);
    let scheduler = Scheduler::new(config.schedule.clone(), since);
    let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
    if since < now {
        tracing::info!(
            since = %stamp(since),
            "resuming after the last scheduled run in the journal: ticks missed since then make one run"
        );
    }
    let mut d = Daemon {
        opts,
        shared: shared.clone(),
        config,
        scheduler,
        started_at: now,
        last_reload: Reload {
            at: now,
            ok: true,
            trigger: "start",
            diagnostics: Vec::new(),
        },
        last_runs: BTreeMap::new(),
        open_findings: BTreeMap::new(),
        skipped_seen: BTreeMap::new(),
        counts: BTreeMap::new(),
        runs_ok: 0,
        runs_failed: 0,
        skipped_total: 0,
        current: None,
        stopping: false,
        act: Arc::new(tokio::sync::Mutex::new(())),
        config_tx,
    };
    d.log_schedule();
    // The endpoints answer with a full status from their first request.
    d.publish();
    // Watch before saying we listen; a change made between the load and
    // now is caught by comparing the files with what was read.
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = watch(&d.config, fs_tx.clone());
    let mut reload_at: Option<tokio::time::Instant> = None;
    if d.config.changed_on_disk() {
        reload_at = Some(tokio::time::Instant::now() + d.opts.debounce);
    }

    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        shared.clone(),
        d.opts.token.clone(),
        http_stop.clone(),
    ));
    tracing::info!(addr = %addr, "listening");
    // Under systemd (Type=notify): started. `systemctl reload` waits for it.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);

    // Readiness needs one AWS contact: ask who we are, without waiting for it.
    let probe = {
        let account = d.opts.account.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = async {
                let aws = engine_run::live::connect(&account).await?;
                aws.identity().await.map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(id) => {
                    let _ = own_account.set(id.account.clone());
                    shared.aws_ok.store(true, Ordering::SeqCst);
                    tracing::info!(account = %id.account, arn = %id.arn, "connected to AWS");
                }
                Err(e) => tracing::error!("cannot reach AWS (GetCallerIdentity): {e}"),
            }
        })
    };

    let stop = CancellationToken::new();
    let mut running: Option<JoinHandle<RunReport>> = None;
    // Tasks that act beside the scheduled runs: the events consumer and the
    // AWS Config rules; waited for on stop like a run.
    let background = tokio_util::task::TaskTracker::new();
    background.spawn(
        crate::events::Consumer {
            config: config_rx,
            queue_flag: d.opts.events_queue.clone(),
            visibility: d.opts.events_visibility,
            account: d.opts.account.clone(),
            state: d.opts.state.clone(),
            retention: d.opts.journal_retention,
            shared: shared.clone(),
            act: d.act.clone(),
            stop: stop.clone(),
        }
        .run(),
    );
    // The AWS Config rules the policies declare, made so now.
    d.reconcile_config_rules(&background, &stop);

    loop {
        let decision = d.scheduler.poll(Utc::now(), running.is_some());
        d.account_ticks(&decision);
        if decision.is_run() {
            let due: Vec<String> = decision.policies().map(str::to_string).collect();
            running = Some(d.start_run(due, stop.clone()));
        }
        d.publish();
        let sleep = d
            .scheduler
            .next_wake(Utc::now())
            .and_then(|w| (w - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        // A timer's millisecond rounding must not wake us just before a tick.
        let sleep = if d.scheduler.next_wake(Utc::now()).is_some() {
            sleep + Duration::from_millis(1)
        } else {
            MAX_SLEEP
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                reload_at = None;
                if d.reload("signal", &mut watcher, &fs_tx).await {
                    d.reconcile_config_rules(&background, &stop);
                }
            }
            Some(path) = fs_rx.recv() => {
                if d.config.concerns(&path) {
                    tracing::debug!(path = %path.display(), "changed");
                    reload_at = Some(tokio::time::Instant::now() + d.opts.debounce);
                }
            }
            _ = async { if let Some(at) = reload_at { tokio::time::sleep_until(at).await } }, if reload_at.is_some() => {
                reload_at = None;
                tracing::info!("policy files changed: reloading the configuration");
                if d.reload("file-change", &mut watcher, &fs_tx).await {
                    d.reconcile_config_rules(&background, &stop);
                }
            }
            report = async { match running.as_mut() { Some(h) => h.await, None => std::future::pending().await } }, if running.is_some() => {
                running = None;
                // Ticks that came due during the run are skipped, not queued.
                let decision = d.scheduler.poll(Utc::now(), true);
                d.account_ticks(&decision);
                match report {
                    Ok(report) => d.finish_run(report),
                    Err(e) => {
                        tracing::error!("the run task failed: {e}");
                        d.current = None;
                        d.runs_failed += 1;
                        d.shared.metrics.run_finished(false, Duration::ZERO);
                    }
                }
            }
            _ = shared.events_changed.notified() => {}
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }

    d.stopping = true;
    notify(&[sd_notify::NotifyState::Stopping]);
    d.publish();
    stop.cancel();
    probe.abort();
    drop(watcher);
    let mut stopped = Stopped::Clean;
    let deadline = tokio::time::Instant::now() + d.opts.shutdown_timeout;
    if let Some(handle) = running {
        tracing::info!(
            timeout = %humantime::format_duration(d.opts.shutdown_timeout),
            "waiting for the run in progress: no new action starts, writes already sent finish"
        );
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(report)) => d.finish_run(report),
            Ok(Err(e)) => tracing::error!("the run task failed: {e}"),
            Err(_) => {
                tracing::error!(
                    "the run in progress did not finish within the shutdown timeout: exiting; the next start reports any action it cut off"
                );
                stopped = Stopped::TimedOut;
            }
        }
    }
    background.close();
    if tokio::time::timeout_at(deadline, background.wait())
        .await
        .is_err()
    {
        tracing::error!(
            "an event's run (or an AWS Config rule write) did not finish within the shutdown timeout: exiting; the next start reports any action it cut off"
        );
        stopped = Stopped::TimedOut;
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(http::SHUTDOWN_GRACE, http_task).await;
    tracing::info!("stopped");
    Ok(stopped)
}

/// When the last scheduled run in the journal started.
fn last_scheduled_run(opts: &Options) -> Option<DateTime<Utc>> {
    let journal = engine_journal::Journal::open(&opts.state).ok()?;
    let runs = journal.recent_runs(200).ok()?;
    runs.iter()
        .find(|r| r.command == COMMAND)
        .and_then(|r| DateTime::parse_from_rfc3339(&r.started_at).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Watch the policy directory and the plugin files' directories. A watcher
/// that cannot start is logged: SIGHUP still reloads.
fn watch(
    config: &Config,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the policy files ({e}): reload with SIGHUP");
            return None;
        }
    };
    let mut dirs = vec![config.dir.clone()];
    for f in &config.plugin_files {
        if let Some(parent) = f.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            dirs.push(parent.to_path_buf());
        }
    }
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), "cannot watch ({e}): reload with SIGHUP");
        }
    }
    Some(watcher)
}

impl Daemon {
    fn log_schedule(&self) {
        let now = Utc::now();
        for p in self.scheduler.status() {
            tracing::info!(
                policy = %p.name,
                schedule = %p.expression,
                next_run = %p.next_tick.map(stamp).unwrap_or_else(|| "never (the schedule has ended)".into()),
                "scheduled (cron, UTC)"
            );
        }
        for name in self.scheduler.unscheduled() {
            tracing::info!(
                policy = %name,
                "not scheduled: the policy has no `schedule`; the daemon never runs it (engine check / apply do)"
            );
        }
        if self.scheduler.next_wake(now).is_none() {
            tracing::warn!("no policy will ever run: none has a schedule with a next tick");
        }
    }

    /// Count the skipped ticks of a poll into the metrics, per policy.
    fn account_ticks(&mut self, decision: &Decision) {
        if let Some(back) = decision.clock_went_back {
            tracing::warn!(
                by_ms = back.num_milliseconds(),
                "the clock went back: no tick fires twice; scheduling resumes when the clock passes the last instant handled"
            );
        }
        if decision.collapsed > 0 {
            tracing::warn!(
                collapsed = decision.collapsed,
                "ticks were missed (clock jump, sleep or a late wake): they make one run"
            );
        }
        for due in &decision.run {
            let c = self.counts.entry(due.policy.clone()).or_default();
            c.runs += 1;
            c.collapsed += due.collapsed();
        }
        if decision.skipped == 0 {
            return;
        }
        for p in self.scheduler.status() {
            let seen = self.skipped_seen.entry(p.name.clone()).or_insert(0);
            if p.skipped > *seen {
                let n = p.skipped - *seen;
                self.counts.entry(p.name.clone()).or_default().skipped += n;
                self.shared.metrics.ticks_skipped(&p.name, n);
                tracing::warn!(policy = %p.name, skipped = n, "a tick came due while a run was in progress: skipped");
                *seen = p.skipped;
            }
        }
        self.skipped_total += decision.skipped;
    }

    fn start_run(&mut self, due: Vec<String>, stop: CancellationToken) -> JoinHandle<RunReport> {
        let started_at = Utc::now();
        tracing::info!(policies = %due.join(","), "run starting");
        self.current = Some((started_at, due.clone()));
        let ctx = RunContext {
            config: self.config.clone(),
            due,
            account: self.opts.account.clone(),
            state: self.opts.state.clone(),
            retention: self.opts.journal_retention,
            shared: self.shared.clone(),
            stop,
            started_at,
            act: self.act.clone(),
        };
        tokio::spawn(scheduled_run(ctx))
    }

    fn finish_run(&mut self, report: RunReport) {
        self.current = None;
        let duration = (report.finished_at - report.started_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.shared.metrics.run_finished(report.ok, duration);
        if report.ok {
            self.runs_ok += 1;
        } else {
            self.runs_failed += 1;
        }
        for r in &report.results {
            self.shared.metrics.action(
                r.account.as_deref().unwrap_or_default(),
                &r.policy,
                r.action.as_str(),
                r.outcome,
            );
        }
        // A policy a reload removed during the run is not shown again.
        let current = self.config.policy_names();
        for policy in report
            .policies
            .iter()
            .filter(|p| current.contains(&p.as_str()))
        {
            self.shared
                .metrics
                .policy_run(policy, report.finished_at, report.ok);
            let mut actions: BTreeMap<&'static str, usize> =
                ["done", "done-on-retry", "already-gone", "skipped", "failed"]
                    .into_iter()
                    .map(|o| (o, 0))
                    .collect();
            for r in report.results.iter().filter(|r| &r.policy == policy) {
                *actions.entry(r.outcome).or_insert(0) += 1;
            }
            let findings = report
                .findings
                .iter()
                .filter(|((_, p), _)| p == policy)
                .map(|(_, (_, n))| *n)
                .sum();
            self.last_runs.insert(
                policy.clone(),
                LastRun {
                    run: report.run,
                    started_at: report.started_at,
                    finished_at: report.finished_at,
                    ok: report.ok,
                    findings,
                    actions,
                    error: report.error.clone(),
                },
            );
        }
        // The run's policies' findings replace theirs, in every account (an
        // account no longer covered drops out).
        self.open_findings
            .retain(|(_, p), _| !report.policies.contains(p));
        for (key, found) in &report.findings {
            self.open_findings.insert(key.clone(), found.clone());
        }
        self.publish_findings();
        let secs = duration.as_secs_f64();
        match &report.error {
            None => tracing::info!(
                run = report.run,
                result = if report.ok { "ok" } else { "failed" },
                duration_s = secs,
                actions = report.results.len(),
                "run finished"
            ),
            Some(e) => tracing::error!(run = report.run, duration_s = secs, "run failed: {e}"),
        }
    }

    fn publish_findings(&self) {
        let names = self.config.policy_names();
        let open: Vec<(String, String, String, u64)> = self
            .open_findings
            .iter()
            .filter(|((_, p), _)| names.contains(&p.as_str()))
            .map(|((a, p), (rule, n))| (a.clone(), p.clone(), rule.clone(), *n as u64))
            .collect();
        self.shared.metrics.set_open_findings(&open);
    }

    async fn reload(
        &mut self,
        trigger: &'static str,
        watcher: &mut Option<notify::RecommendedWatcher>,
        fs_tx: &mpsc::UnboundedSender<PathBuf>,
    ) -> bool {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let dir = self.config.dir.clone();
        let cache = self.config.cache.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&dir, cache)).await;
        notify(&[sd_notify::NotifyState::Ready]);
        let at = Utc::now();
        match loaded {
            Ok(Ok(config)) => {
                let changed = config.digest != self.config.digest;
                self.scheduler = Scheduler::new(config.schedule.clone(), self.scheduler.cursor());
                self.skipped_seen.clear();
                self.config = config;
                self.config_tx.send_replace(self.config.clone());
                *watcher = watch(&self.config, fs_tx.clone());
                self.shared.metrics.reload(true, at);
                let names: Vec<String> = self
                    .config
                    .set
                    .policies
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                self.shared.metrics.retain_policies(&names);
                self.last_runs.retain(|p, _| names.contains(p));
                self.counts.retain(|p, _| names.contains(p));
                self.open_findings.retain(|(_, p), _| names.contains(p));
                self.publish_findings();
                self.last_reload = Reload {
                    at,
                    ok: true,
                    trigger,
                    diagnostics: Vec::new(),
                };
                tracing::info!(
                    trigger,
                    policies = names.len(),
                    changed,
                    "configuration reloaded: the next run uses it"
                );
                self.log_schedule();
                true
            }
            Ok(Err(errors)) => {
                let diagnostics = errors.diagnostics();
                for d in &diagnostics {
                    tracing::error!("{}", d.trim_end());
                }
                tracing::error!(
                    trigger,
                    errors = diagnostics.len(),
                    "reload failed: the previous configuration keeps running"
                );
                self.shared.metrics.reload(false, at);
                self.last_reload = Reload {
                    at,
                    ok: false,
                    trigger,
                    diagnostics,
                };
                false
            }
            Err(e) => {
                tracing::error!("reload failed: the loading task failed: {e}");
                self.shared.metrics.reload(false, at);
                self.last_reload = Reload {
                    at,
                    ok: false,
                    trigger,
                    diagnostics: vec![e.to_string()],
                };
                false
            }
        }
    }

    /// Make the AWS Config rules match the configuration's declarations
    /// (at start and after a reload), beside the scheduled runs: it takes the
    /// lock a run takes. Nothing is read when no rule is declared or recorded.
    fn reconcile_config_rules(
        &self,
        background: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) {
        let config = self.config.clone();
        let account = self.opts.account.clone();
        let state = self.opts.state.clone();
        let retention = self.opts.journal_retention;
        let shared = self.shared.clone();
        let act = self.act.clone();
        let stop = stop.clone();
        background.spawn(async move {
            let _guard = tokio::select! {
                g = act.lock() => g,
                _ = stop.cancelled() => return,
            };
            config_rules(&config, &account, &state, retention, &shared).await;
        });
    }

    /// Refresh what `/v1/status` and the per-policy gauges show.
    fn publish(&self) {
        let next: Vec<(String, DateTime<Utc>)> = self
            .scheduler
            .status()
            .iter()
            .filter_map(|p| p.next_tick.map(|t| (p.name.clone(), t)))
            .collect();
        self.shared.metrics.set_next_runs(&next);
        self.shared.set_status(self.status().to_string());
    }

    fn status(&self) -> Value {
        let sched: BTreeMap<&str, &crate::PolicyStatus> = self
            .scheduler
            .status()
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        let policies: Vec<Value> = self
            .config
            .set
            .policies
            .iter()
            .map(|p| {
                let s = sched.get(p.name.as_str());
                let c = self.counts.get(&p.name).copied().unwrap_or_default();
                json!({
                    "name": p.name,
                    "rule": p.rule,
                    "mode": p.mode,
                    "schedule": p.schedule,
                    "next_run": s.and_then(|s| s.next_tick).map(stamp),
                    "last_run": self.last_runs.get(&p.name).map(|r| json!({
                        "run": r.run,
                        "started_at": stamp(r.started_at),
                        "finished_at": stamp(r.finished_at),
                        "result": if r.ok { "ok" } else { "failed" },
                        "findings": r.findings,
                        "actions": r.actions,
                        "error": r.error,
                    })),
                    "runs": c.runs,
                    "skipped_ticks": c.skipped,
                    "collapsed_ticks": c.collapsed,
                })
            })
            .collect();
        let state = if self.stopping {
            "stopping"
        } else if self.current.is_some() {
            "running"
        } else {
            "idle"
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_at": stamp(self.started_at),
            "state": state,
            "policy_dir": self.config.dir.display().to_string(),
            "config": {
                "loaded_at": stamp(self.config.loaded_at),
                "digest": self.config.digest,
                "policies": self.config.set.policies.len(),
            },
            "last_reload": {
                "at": stamp(self.last_reload.at),
                "result": if self.last_reload.ok { "success" } else { "failure" },
                "trigger": self.last_reload.trigger,
                "diagnostics": self.last_reload.diagnostics,
            },
            "policies": policies,
            "runs": {
                "total": self.runs_ok + self.runs_failed,
                "ok": self.runs_ok,
                "failed": self.runs_failed,
                "skipped_ticks": self.skipped_total,
            },
            "current_run": self.current.as_ref().map(|(at, policies)| json!({
                "started_at": stamp(*at),
                "policies": policies,
            })),
            "events": serde_json::to_value(
                &*self.shared.events.lock().unwrap_or_else(|e| e.into_inner())
            ).unwrap_or(Value::Null),
        })
    }
}

/// What a run needs, owned: it outlives reloads.
struct RunContext {
    config: Arc<Config>,
    due: Vec<String>,
    account: AccountOptions,
    state: PathBuf,
    retention: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
    started_at: DateTime<Utc>,
    act: Arc<tokio::sync::Mutex<()>>,
}

/// Carry out the AWS Config rule changes of `config`'s whole policy set;
/// metrics and logs say what was done. The changes, for the plan document.
async fn config_rules(
    config: &Config,
    account: &AccountOptions,
    state: &std::path::Path,
    retention: Duration,
    shared: &Shared,
) -> Vec<engine_run::config_rules::ConfigRuleEntry> {
    let target = config.dir.display().to_string();
    let Some(done) =
        engine_run::config_rules::reconcile(&config.set, account, state, retention, &target).await
    else {
        return Vec::new();
    };
    for r in &done.results {
        shared.metrics.config_rule_change(&r.change, &r.outcome);
        if r.outcome == "failed" {
            tracing::error!(region = %r.region, rule = %r.name, change = %r.change, "AWS Config rule write failed: {}", r.detail);
        }
    }
    if done.results.is_empty() {
        tracing::debug!(rules = done.entries.len(), "AWS Config rules: no changes");
    } else {
        tracing::info!(
            run = done.run,
            writes = done.results.len(),
            "AWS Config rules changed"
        );
    }
    done.entries
}

/// One account of a run: its id, and its plan or why it has none.
type AccountPlan = (String, Result<engine_run::Prepared, String>);

/// What a scheduled run planned: each account, the plan document as JSON,
/// and the engine's own connection and account (for Security Hub).
type Planned = (Vec<AccountPlan>, String, Option<(engine_aws::Aws, String)>);

/// One scheduled run: snapshot, plan, journaled execution of the due
/// policies, as `engine apply --auto-approve` would.
async fn scheduled_run(ctx: RunContext) -> RunReport {
    let clock = Instant::now();
    let mut report = RunReport {
        policies: ctx.due.clone(),
        started_at: ctx.started_at,
        finished_at: ctx.started_at,
        run: None,
        ok: false,
        error: None,
        findings: BTreeMap::new(),
        results: Vec::new(),
    };
    // One run at a time: wait for an event's run (or a Config rule write).
    let _guard = tokio::select! {
        g = ctx.act.lock() => g,
        _ = ctx.stop.cancelled() => {
            report.error = Some("stopped before the run started: nothing was done".into());
            report.finished_at = Utc::now();
            return report;
        }
    };
    let set = ctx.config.subset(&ctx.due);
    let observer = PluginMetrics(ctx.shared.clone());
    let target = ctx.config.dir.display().to_string();
    // The keys deactivated up to the last run (a staged policy deletes them
    // after its grace period), read again for every run.
    let mut account = ctx.account.clone();
    account.deactivated = std::sync::Arc::new(engine_run::live::deactivations(&ctx.state));
    let request = Request {
        set: &set,
        plugins: &ctx.config.plugins,
        dir: &ctx.config.dir,
        source: &SourceSpec::Account(account.clone()),
        now: Utc::now(),
        what_if: false,
        observer: Some(&observer),
    };
    // One account, or every account of `[accounts]`: each its own plan.
    let planned: Result<Planned, String> = match set.accounts.clone() {
        None => tokio::select! {
            p = engine_run::prepare(request) => p.map(|p| {
                let account = p.doc.source.account.clone().unwrap_or_default();
                let json = serde_json::to_string(&p.doc).unwrap_or_default();
                let base = p
                    .snapshot
                    .account
                    .as_ref()
                    .map(|a| (a.aws.clone(), account.clone()));
                (vec![(account, Ok(p))], json, base)
            }),
            _ = ctx.stop.cancelled() => Err("stopped before the plan was made: nothing was done".to_string()),
        },
        Some(settings) => {
            let now = request.now;
            tokio::select! {
                p = engine_run::prepare_accounts(
                    request,
                    &settings,
                    &account,
                    usize::from(ctx.account.account_concurrency),
                    COMMAND,
                ) => p.map(|p| {
                    let sections = p
                        .accounts
                        .iter()
                        .map(|a| engine_run::document::AccountSection {
                            account: a.target.id.clone(),
                            name: a.target.name.clone(),
                            role_arn: a.target.role_arn.clone(),
                            error: a.result.as_ref().err().cloned(),
                            plan: a.result.as_ref().ok().map(|p| p.doc.clone()),
                        })
                        .collect();
                    let doc = engine_run::document::AccountsDocument::from_parts(
                        now,
                        &p.identity,
                        &settings.role,
                        sections,
                        &p.skipped,
                    );
                    let json = serde_json::to_string(&doc).unwrap_or_default();
                    let base = Some((p.base.clone(), p.identity.account.clone()));
                    let accounts = p
                        .accounts
                        .into_iter()
                        .map(|a| (a.target.id, a.result))
                        .collect();
                    (accounts, json, base)
                }),
                _ = ctx.stop.cancelled() => Err("stopped before the plan was made: nothing was done".to_string()),
            }
        }
    };
    let (accounts, plan_json, base) = match planned {
        Ok(p) => p,
        Err(e) => {
            if !ctx.stop.is_cancelled() {
                ctx.shared.aws_ok.store(false, Ordering::SeqCst);
            }
            report.run = engine_run::journal_failed_run(
                &ctx.state,
                ctx.retention,
                None,
                COMMAND,
                &target,
                &e,
            );
            report.error = Some(e);
            report.finished_at = Utc::now();
            return report;
        }
    };
    ctx.shared.aws_ok.store(true, Ordering::SeqCst);
    ctx.shared.set_plan(plan_json);
    let mut errors = Vec::new();
    let mut work = Vec::new();
    for (account, result) in &accounts {
        match result {
            Ok(p) => {
                for pp in &p.plan.policies {
                    report.findings.insert(
                        (account.clone(), pp.policy.clone()),
                        // Open: past the threshold (not upcoming, not a key
                        // deactivated earlier).
                        (
                            pp.rule.as_str().to_string(),
                            pp.findings
                                .iter()
                                .filter(|f| f.stage == engine_core::Stage::Due)
                                .count(),
                        ),
                    );
                }
                if p.doc.summary.failed_policies > 0 {
                    errors.push(format!(
                        "{}{} policies failed: {}",
                        if accounts.len() > 1 {
                            format!("account {account}: ")
                        } else {
                            String::new()
                        },
                        p.doc.summary.failed_policies,
                        p.doc
                            .errors
                            .iter()
                            .map(|e| format!("{}: {}", e.policy, e.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                if let Some(live) = &p.snapshot.account {
                    work.push(engine_run::accounts::AccountWork {
                        account,
                        doc: &p.doc,
                        plan: &p.plan,
                        aws: &live.aws,
                        own: &live.own,
                    });
                }
            }
            Err(e) => {
                ctx.shared.metrics.account_run(account, false);
                engine_run::journal_failed_run(
                    &ctx.state,
                    ctx.retention,
                    Some(account),
                    COMMAND,
                    &target,
                    e,
                );
                errors.push(format!("account {account}: {e}"));
            }
        }
    }
    // Owners' messages, sent with the engine's own credentials.
    let notifier = base
        .as_ref()
        .and_then(|(aws, _)| engine_run::notices::notifier(&ctx.config.set, aws));
    let applied = engine_run::accounts::execute_all(
        &work,
        &engine_run::accounts::ExecuteAccounts {
            state: &ctx.state,
            retention: ctx.retention,
            command: COMMAND,
            target: &target,
            claim: None,
            accounts_at_once: usize::from(ctx.account.account_concurrency),
            per_account: usize::from(ctx.account.concurrency),
            cancel: ctx.stop.clone(),
            notifier: notifier.as_ref(),
        },
    )
    .await;
    // Security Hub: every account's findings, with what was done.
    if let (Some(hub), Some((base, engine_account))) = (&ctx.config.set.security_hub, &base)
        && !ctx.stop.is_cancelled()
    {
        let empty = Vec::new();
        let runs: Vec<engine_run::securityhub::AccountRun<'_>> = work
            .iter()
            .map(|w| engine_run::securityhub::AccountRun {
                account: w.account,
                doc: w.doc,
                results: applied
                    .iter()
                    .find(|a| a.account == w.account)
                    .and_then(|a| a.result.as_ref().ok())
                    .map(|a| &a.results)
                    .unwrap_or(&empty),
                aws: w.aws,
            })
            .collect();
        let exported = engine_run::securityhub::export(
            hub,
            base,
            engine_account,
            &runs,
            &ctx.state,
            Utc::now(),
            ctx.account.observer.clone(),
        )
        .await;
        for e in &exported {
            ctx.shared.metrics.security_hub(
                e.imported as u64,
                e.resolved as u64,
                e.failed.len() as u64,
            );
            if let Some(err) = &e.error {
                errors.push(format!("Security Hub, account {}: {err}", e.account));
            }
        }
    }
    let mut all_ok = errors.is_empty();
    let mut stopped = 0;
    for a in applied {
        match a.result {
            Ok(run) => {
                let ok = run.status == engine_journal::RunStatus::Ok;
                all_ok &= ok;
                if accounts.len() > 1 {
                    ctx.shared.metrics.account_run(&a.account, ok);
                }
                report.run.get_or_insert(run.run);
                ctx.shared.metrics.messages(&run.notices);
                stopped += run
                    .results
                    .iter()
                    .filter(|r| r.detail == execute::STOPPING)
                    .count();
                report.results.extend(run.results);
            }
            Err(e) => {
                all_ok = false;
                if accounts.len() > 1 {
                    ctx.shared.metrics.account_run(&a.account, false);
                }
                errors.push(format!("account {}: {e}", a.account));
            }
        }
    }
    report.ok = all_ok;
    if stopped > 0 {
        errors.push(format!(
            "stopped: {stopped} actions not started (journaled as skipped)"
        ));
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    // The AWS Config rules of the whole directory (drift repaired), as
    // `engine apply DIR` does after the credentials: in the engine's own
    // account (a single-account plan shows them).
    if !ctx.stop.is_cancelled() {
        let entries = config_rules(
            &ctx.config,
            &ctx.account,
            &ctx.state,
            ctx.retention,
            &ctx.shared,
        )
        .await;
        if let (false, [(_, Ok(p))]) = (entries.is_empty(), accounts.as_slice()) {
            let mut doc = p.doc.clone();
            doc.config_rules = entries;
            if let Ok(json) = serde_json::to_string(&doc) {
                ctx.shared.set_plan(json);
            }
        }
    }
    tracing::debug!(elapsed_ms = clock.elapsed().as_millis() as u64, "run done");
    report.finished_at = Utc::now();
    report
}
