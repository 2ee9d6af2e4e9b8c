//! The events queue: AWS Config compliance events, within seconds.
//!
//! EventBridge routes `Config Rules Compliance Change` events to an SQS
//! queue (`--events-queue`, or `events_queue` in `[aws_config]`); this task
//! long-polls it and hands each event to [`engine_run::event::handle`]: a
//! NON_COMPLIANT user under a rule a policy declares gets a run of that
//! policy for that user alone, from fresh IAM reads, with every safety rail.
//!
//! Delivery is at least once, and the rules are:
//!
//! - a message is deleted only once its run is journaled and finished;
//!   a duplicate is harmless (its run finds nothing left to do);
//! - COMPLIANT events, other rules, accounts and resources are deleted and
//!   counted as ignored;
//! - a malformed message, or one whose run failed, is left on the queue,
//!   hidden for longer each time it comes back (the visibility timeout,
//!   doubled per receive, at most 12 h), so the queue's redrive policy moves
//!   it to its dead-letter queue; never retried in a hot loop;
//! - while a run is waiting (for a scheduled run to end) or running, the
//!   message's visibility is extended, so no other consumer takes it;
//! - runs never overlap: an event's run and a scheduled run take the same
//!   lock; on stop, the run in progress starts no new action and its message
//!   is left for later.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use engine_core::event::{self, Verdict};
use engine_run::AccountOptions;
use engine_run::event::{EventContext, Handled, UserDirectory};
use engine_sqs::{Message, Queue, QueueOptions};
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::Shared;

/// Longest wait between two attempts to reach a queue that fails.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// What the status endpoint shows of the events queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsStatus {
    /// The queue being read, if any.
    pub queue: Option<String>,
    pub received: u64,
    pub acted: u64,
    pub ignored: u64,
    pub failed: u64,
    pub malformed: u64,
    /// The last error reading the queue, cleared by the next success.
    pub queue_error: Option<String>,
    pub last: Option<LastEvent>,
}

/// The last event handled.
#[derive(Debug, Clone, Serialize)]
pub struct LastEvent {
    pub at: String,
    pub message: String,
    /// `acted`, `ignored`, `failed` or `malformed`.
    pub outcome: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
}

/// How the consumer runs.
pub struct Consumer {
    /// The current configuration; a reload sends the new one.
    pub config: watch::Receiver<Arc<Config>>,
    /// `--events-queue`: wins over the configuration's `events_queue`.
    pub queue_flag: Option<String>,
    /// How long a received message stays hidden while it is handled.
    pub visibility: Duration,
    pub account: AccountOptions,
    pub state: std::path::PathBuf,
    pub retention: Duration,
    pub shared: Arc<Shared>,
    /// Held by whoever acts on the account: one run at a time.
    pub act: Arc<Mutex<()>>,
    pub stop: CancellationToken,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// How long to hide a message that could not be handled, by how many times
/// it was received: the visibility timeout doubled per receive, at most
/// SQS's 12 hours.
pub fn backoff(visibility: Duration, receive_count: u32) -> Duration {
    let doublings = receive_count.saturating_sub(1).min(16);
    visibility
        .saturating_mul(1 << doublings)
        .min(engine_sqs::MAX_VISIBILITY)
}

impl Consumer {
    fn status(&self, f: impl FnOnce(&mut EventsStatus)) {
        {
            let mut s = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
        }
        self.shared.events_changed.notify_one();
    }

    fn queue_url(&self, config: &Config) -> Option<String> {
        self.queue_flag.clone().or_else(|| {
            config
                .set
                .aws_config
                .as_ref()
                .and_then(|a| a.events_queue.clone())
        })
    }

    /// Read the queue until stopped.
    pub async fn run(mut self) {
        let mut queue: Option<Queue> = None;
        let mut users = UserDirectory::new();
        let mut retry = Duration::from_secs(1);
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let config = self.config.borrow_and_update().clone();
            let Some(url) = self.queue_url(&config) else {
                if queue.take().is_some() {
                    tracing::info!("no events queue is configured any more: not reading events");
                }
                self.status(|s| s.queue = None);
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    changed = self.config.changed() => if changed.is_err() { break },
                }
                continue;
            };
            if queue.as_ref().is_none_or(|q| q.url() != url) {
                let opts = QueueOptions {
                    profile: self.account.profile.clone(),
                    region: config
                        .set
                        .aws_config
                        .as_ref()
                        .map(|a| a.region.clone())
                        .or_else(|| self.account.region.clone()),
                    max_attempts: self.account.max_attempts,
                    observer: self.account.observer.clone(),
                };
                match Queue::connect(&url, &opts).await {
                    Ok(q) => {
                        tracing::info!(queue = %url, region = q.region(), "reading AWS Config events from the queue");
                        self.status(|s| s.queue = Some(url.clone()));
                        queue = Some(q);
                    }
                    Err(e) => {
                        tracing::error!(queue = %url, "cannot read the events queue: {e}");
                        self.status(|s| s.queue_error = Some(e.to_string()));
                        if !self.pause(&mut retry).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(q) = queue.clone() else { continue };
            let received = tokio::select! {
                _ = self.stop.cancelled() => break,
                r = q.receive(engine_sqs::MAX_BATCH, engine_sqs::MAX_WAIT, self.visibility) => r,
            };
            match received {
                Err(e) => {
                    tracing::error!(queue = %url, "cannot receive from the events queue: {e}");
                    self.status(|s| s.queue_error = Some(e.to_string()));
                    if !self.pause(&mut retry).await {
                        break;
                    }
                }
                Ok(messages) => {
                    retry = Duration::from_secs(1);
                    self.status(|s| s.queue_error = None);
                    for m in messages {
                        if self.stop.is_cancelled() {
                            // Left hidden; it comes back after its visibility timeout.
                            break;
                        }
                        let config = self.config.borrow().clone();
                        self.message(&q, &config, &m, &mut users).await;
                    }
                }
            }
        }
        tracing::debug!("the events consumer stopped");
    }

    /// Wait `retry` (then twice as long next time, up to [`MAX_RETRY`]);
    /// false when stopped meanwhile.
    async fn pause(&self, retry: &mut Duration) -> bool {
        let wait = *retry;
        *retry = (*retry * 2).min(MAX_RETRY);
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    fn done(
        &self,
        m: &Message,
        outcome: &'static str,
        detail: String,
        user: Option<String>,
        run: Option<i64>,
    ) {
        self.shared.metrics.event_handled(outcome);
        self.status(|s| {
            match outcome {
                "acted" => s.acted += 1,
                "ignored" => s.ignored += 1,
                "failed" => s.failed += 1,
                _ => s.malformed += 1,
            }
            s.last = Some(LastEvent {
                at: stamp(Utc::now()),
                message: m.id.clone(),
                outcome,
                detail,
                user,
                run,
            });
        });
    }

    async fn delete(&self, q: &Queue, m: &Message) {
        if let Err(e) = q.delete(m).await {
            tracing::warn!(message = %m.id, "the message was not deleted ({e}): it will come back, and its second run finds nothing to do");
        }
    }

    /// Hide `m` for longer: it comes back later, or goes to the dead-letter queue.
    async fn later(&self, q: &Queue, m: &Message) -> Duration {
        let wait = backoff(self.visibility, m.receive_count);
        if let Err(e) = q.set_visibility(m, wait).await {
            tracing::warn!(message = %m.id, "cannot hide the message for later ({e}): it comes back after the queue's visibility timeout");
        }
        wait
    }

    async fn message(
        &self,
        q: &Queue,
        config: &Arc<Config>,
        m: &Message,
        users: &mut UserDirectory,
    ) {
        self.shared.metrics.event_received();
        self.status(|s| s.received += 1);
        let ev = match event::parse(m.body.as_bytes()) {
            Ok(ev) => ev,
            Err(e) => {
                let wait = self.later(q, m).await;
                tracing::warn!(
                    message = %m.id,
                    receive_count = m.receive_count,
                    "malformed event, left on the queue (back in {}; the queue's redrive policy moves it to its dead-letter queue): {e}",
                    humantime::format_duration(wait)
                );
                self.done(m, "malformed", e.to_string(), None, None);
                return;
            }
        };
        if let Verdict::Ignore(why) = event::classify(&ev, &config.set) {
            tracing::info!(message = %m.id, reason = why.label(), "event ignored: {why}");
            self.delete(q, m).await;
            self.done(m, "ignored", why.to_string(), None, None);
            return;
        }
        // Keep the message while waiting for a scheduled run, and while running.
        let keep = CancellationToken::new();
        let heartbeat = tokio::spawn(extend(q.clone(), m.clone(), self.visibility, keep.clone()));
        let handled = {
            let guard = tokio::select! {
                g = self.act.lock() => Some(g),
                _ = self.stop.cancelled() => None,
            };
            match guard {
                None => None,
                Some(_guard) => {
                    let origin = format!("event message {}", m.id);
                    let ctx = EventContext {
                        set: &config.set,
                        plugins: &config.plugins,
                        dir: &config.dir,
                        account: &self.account,
                        state: &self.state,
                        retention: self.retention,
                        observer: Some(&crate::service::PluginMetrics(self.shared.clone())),
                        cancel: self.stop.clone(),
                        origin: &origin,
                        dry_run: false,
                    };
                    Some(engine_run::event::handle(&ev, &ctx, users).await)
                }
            }
        };
        keep.cancel();
        let _ = heartbeat.await;
        let Some(handled) = handled else {
            tracing::info!(message = %m.id, "stopping: the event is left on the queue for the next start");
            return;
        };
        match handled {
            Ok(Handled::Ignored(why)) => {
                tracing::info!(message = %m.id, reason = why.label(), "event ignored: {why}");
                self.delete(q, m).await;
                self.done(m, "ignored", why.to_string(), None, None);
            }
            Ok(Handled::Ran(run)) => {
                self.shared.aws_ok.store(true, Ordering::SeqCst);
                let Some(applied) = run.applied.as_ref() else {
                    return;
                };
                self.shared.metrics.messages(&applied.notices);
                for r in &applied.results {
                    self.shared.metrics.action(
                        r.account.as_deref().unwrap_or_default(),
                        &r.policy,
                        r.action.as_str(),
                        r.outcome,
                    );
                    tracing::info!(
                        run = applied.run,
                        policy = %r.policy,
                        user = %r.user,
                        key_id = r.key_id.as_deref().unwrap_or("-"),
                        action = r.action.as_str(),
                        outcome = r.outcome,
                        "{}", if r.detail.is_empty() { "action" } else { r.detail.as_str() }
                    );
                }
                let stopped = applied
                    .results
                    .iter()
                    .any(|r| r.detail == engine_run::execute::STOPPING);
                let summary = format!(
                    "run {}: {} for {}: {} actions ({} done)",
                    applied.run,
                    run.policies.join(","),
                    run.user,
                    applied.results.len(),
                    applied.count("done") + applied.count("done-on-retry")
                );
                if stopped {
                    tracing::info!(message = %m.id, "stopping: {summary}; the event is left on the queue for the next start");
                } else if applied.status == engine_journal::RunStatus::Ok {
                    self.delete(q, m).await;
                    tracing::info!(message = %m.id, user = %run.user, "event handled: {summary}");
                    self.done(
                        m,
                        "acted",
                        summary,
                        Some(run.user.clone()),
                        Some(applied.run),
                    );
                } else {
                    let wait = self.later(q, m).await;
                    tracing::error!(message = %m.id, user = %run.user, "event run failed: {summary}; tried again in {}", humantime::format_duration(wait));
                    self.done(
                        m,
                        "failed",
                        summary,
                        Some(run.user.clone()),
                        Some(applied.run),
                    );
                }
            }
            Err(f) => {
                if self.stop.is_cancelled() {
                    tracing::info!(message = %m.id, "stopping: {}; the event is left on the queue", f.error);
                    return;
                }
                self.shared.aws_ok.store(false, Ordering::SeqCst);
                let wait = self.later(q, m).await;
                tracing::error!(message = %m.id, run = f.run, "event failed: {}; tried again in {}", f.error, humantime::format_duration(wait));
                self.done(m, "failed", f.error, None, f.run);
            }
        }
    }
}

/// Extend `m`'s visibility every third of `visibility` until `keep` is cancelled.
async fn extend(q: Queue, m: Message, visibility: Duration, keep: CancellationToken) {
    let every = (visibility / 3).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = keep.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match q.set_visibility(&m, visibility).await {
            Ok(()) => tracing::debug!(message = %m.id, "visibility extended"),
            Err(e) => {
                tracing::warn!(message = %m.id, "cannot extend the message's visibility: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn a_message_that_comes_back_is_hidden_longer_each_time() {
        let v = Duration::from_secs(60);
        assert_eq!(backoff(v, 0), v);
        assert_eq!(backoff(v, 1), v);
        assert_eq!(backoff(v, 2), v * 2);
        assert_eq!(backoff(v, 5), v * 16);
        assert_eq!(backoff(v, 20), engine_sqs::MAX_VISIBILITY);
        assert_eq!(backoff(v, u32::MAX), engine_sqs::MAX_VISIBILITY);
    }
}
