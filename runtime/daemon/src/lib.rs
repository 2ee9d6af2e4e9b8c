//! `engine daemon`: the scheduler, and the service around it.
//!
//! The crate root is the scheduler's pure core (below). Around it:
//! [`config`] loads and validates a policy directory whole, [`service`] is
//! the daemon's loop (runs, reload, signals, graceful stop), [`events`]
//! reads AWS Config compliance events from an SQS queue, [`http`] serves
//! the health, metrics, status and plan endpoints and [`metrics`] holds the
//! Prometheus registry.
//!
//! # Why the scheduler is pure
//!
//! A policy may carry `schedule = "<cron with seconds>"`. `engine daemon`
//! runs such policies on their schedules, for weeks, on hosts
//! whose clocks are stepped by NTP and which sleep and resume. Getting the
//! timing rules right is the hard part of a daemon, and it is hard to test
//! when it is tangled with tokio timers, AWS calls and the journal. So the
//! rules live here, apart: every decision is a plain function of
//! *(the schedules, the scheduler's state, the instant `now` it is given)*.
//! There is no tokio, no clock read and no I/O in the scheduler; the tests
//! drive it with explicit instants, never with sleeps. The loop around it only
//! sleeps until [`Scheduler::next_wake`], calls [`Scheduler::poll`] with the
//! current time, and starts the run the [`Decision`] asks for.
//!
//! # The rules
//!
//! * **UTC.** Cron expressions (six fields, or seven with a year; seconds
//!   first, as validated by `engine-core`) are evaluated in UTC. There are no
//!   daylight-saving gaps or repeats.
//! * **Policies due at the same instant share one run.** More generally, every
//!   policy with at least one tick in `(last poll, now]` is in the run
//!   [`Scheduler::poll`] returns: one run, one credential report, one plan.
//! * **Never two runs at once; overlap is skipped, not queued.** The caller
//!   says whether a run is in progress (`running`). A tick that comes due while
//!   one is in progress is *skipped*: counted (per policy in
//!   [`PolicyStatus::skipped`], per poll in [`Decision::skipped`]) and
//!   dropped. It does not start a run when the current one finishes. This holds
//!   across policies too: a policy whose tick falls inside another policy's
//!   run is skipped. For skips to be counted rather than collapsed, the daemon
//!   polls at every wake even while a run is in progress, and once more (still
//!   with `running = true`) at the instant the run finishes.
//! * **Missed ticks collapse into one run.** When the clock jumps forward, the
//!   host sleeps, or the daemon is late for any reason, the ticks that came due
//!   meanwhile make one run, not a burst. Each policy in the run reports how
//!   many of its ticks the run stands for ([`Due::ticks`]); the ticks beyond
//!   the first are counted as collapsed ([`Due::collapsed`],
//!   [`Decision::collapsed`], [`PolicyStatus::collapsed`]). Example: a `*/5`
//!   seconds schedule polled at 12:00:00, then a one-hour clock jump during
//!   the sleep, so the next poll reads 13:00:05: 721 ticks are due, the run
//!   stands for all of them and 720 are counted as collapsed.
//! * **A clock going backwards never fires a tick twice.** The scheduler keeps
//!   the latest instant it has accounted for ([`Scheduler::cursor`]); a poll
//!   at an earlier instant changes nothing and reports how far back the clock
//!   went ([`Decision::clock_went_back`]). Scheduling resumes when the clock
//!   passes the cursor again, so a backward step of `d` delays the next tick by
//!   at most `d`. If the daemon judges a large backward step to be a
//!   correction (the clock had been wrong in the future), it may call
//!   [`Scheduler::rebase`], accepting that ticks in between may fire again.
//! * **Schedules that end, end.** A seven-field expression whose years have all
//!   passed (or any expression past 2100, the `cron` crate's last year) has no
//!   next tick: [`PolicyStatus::next_tick`] is `None` and it never fires.
//! * **Nothing scheduled, nothing to wake for.** With no scheduled policy (or
//!   only ended ones) [`Scheduler::next_wake`] is `None`: the daemon waits
//!   for a signal (reload, shutdown), not a timer.
//!
//! Policies without `schedule` are listed as unscheduled
//! ([`Schedule::unscheduled`]), for the status endpoint to show; the daemon
//! never runs them.
//!
//! # Starting and restarting
//!
//! [`Scheduler::new`] takes the instant from which ticks count (`since`):
//! ticks at or before it are considered handled. A daemon starting fresh
//! passes its start time (the first run comes at the first tick after it); a
//! daemon resuming passes the instant of its last run as recorded in the
//! journal, and the ticks it missed while down collapse into one run at the
//! first poll.
//!
//! # Shape of the daemon loop
//!
//! ```
//! use chrono::{DateTime, TimeDelta, Utc};
//! use engine_daemon::{Schedule, Scheduler};
//!
//! let schedule = Schedule::from_expressions([("rotate", Some("*/5 * * * * *"))])?;
//! let start = DateTime::from_timestamp(1_795_824_000, 0).expect("valid instant");
//! let mut scheduler = Scheduler::new(schedule, start);
//!
//! // The daemon: sleep until `next_wake`, then poll with the wall clock.
//! let now = start + TimeDelta::seconds(5);
//! assert_eq!(scheduler.next_wake(start), Some(now));
//! let decision = scheduler.poll(now, false);
//! assert_eq!(decision.policies().collect::<Vec<_>>(), ["rotate"]);
//! // ... start the run of decision.policies() (one run) ...
//!
//! // 12 s later the run is still going: the tick at +10 s is skipped.
//! let decision = scheduler.poll(now + TimeDelta::seconds(5), true);
//! assert!(!decision.is_run());
//! assert_eq!(decision.skipped, 1);
//! # Ok::<(), engine_daemon::ScheduleError>(())
//! ```

pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod service;

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use engine_core::PolicySet;

/// The most ticks of one policy that one poll counts. Counting walks the
/// schedule tick by tick, so this bounds the work of a poll after a very long
/// jump (a one-second schedule and a clock off by years). Beyond it, counts
/// saturate at this value and the scheduler jumps straight to `now`.
pub const TICK_COUNT_LIMIT: u64 = 100_000;

/// Why a [`Schedule`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A `schedule` is not a cron expression the `cron` crate accepts.
    #[error("policy {policy:?}: invalid cron schedule {expression:?}: {source}")]
    InvalidCron {
        policy: String,
        expression: String,
        #[source]
        source: cron::error::Error,
    },
    /// Two entries share a name.
    #[error("policy {policy:?} is listed twice")]
    DuplicatePolicy { policy: String },
}

/// A policy with a parsed cron schedule.
#[derive(Debug, Clone)]
pub struct ScheduledPolicy {
    name: String,
    cron: cron::Schedule,
}

impl ScheduledPolicy {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression as written.
    pub fn expression(&self) -> &str {
        self.cron.source()
    }

    /// The parsed expression.
    pub fn cron(&self) -> &cron::Schedule {
        &self.cron
    }
}

/// The schedules of a policy set: what the scheduler runs, and what it never
/// runs because it has no `schedule`.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Sorted by name.
    scheduled: Vec<ScheduledPolicy>,
    /// Sorted by name.
    unscheduled: Vec<String>,
}

impl Schedule {
    /// The schedules of a validated policy set.
    ///
    /// `engine-core` has already checked every expression; an error here means
    /// the set was built some other way.
    pub fn from_policies(set: &PolicySet) -> Result<Schedule, ScheduleError> {
        Schedule::from_expressions(
            set.policies
                .iter()
                .map(|p| (p.name.as_str(), p.schedule.as_deref())),
        )
    }

    /// Schedules from `(policy name, optional cron expression)` pairs, in any
    /// order (for tests, benches and callers without a [`PolicySet`]).
    pub fn from_expressions<'a>(
        entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Schedule, ScheduleError> {
        let mut seen = BTreeSet::new();
        let mut scheduled = Vec::new();
        let mut unscheduled = Vec::new();
        for (name, expression) in entries {
            if !seen.insert(name) {
                return Err(ScheduleError::DuplicatePolicy {
                    policy: name.to_string(),
                });
            }
            match expression {
                None => unscheduled.push(name.to_string()),
                Some(expression) => {
                    let cron = cron::Schedule::from_str(expression).map_err(|source| {
                        ScheduleError::InvalidCron {
                            policy: name.to_string(),
                            expression: expression.to_string(),
                            source,
                        }
                    })?;
                    scheduled.push(ScheduledPolicy {
                        name: name.to_string(),
                        cron,
                    });
                }
            }
        }
        scheduled.sort_by(|a, b| a.name.cmp(&b.name));
        unscheduled.sort();
        Ok(Schedule {
            scheduled,
            unscheduled,
        })
    }

    /// The policies with a schedule, by name.
    pub fn scheduled(&self) -> &[ScheduledPolicy] {
        &self.scheduled
    }

    /// The policies without a schedule, by name: the daemon never runs them.
    pub fn unscheduled(&self) -> &[String] {
        &self.unscheduled
    }

    /// Whether no policy has a schedule.
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

/// What the status endpoint shows of one scheduled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    pub name: String,
    /// The cron expression as written.
    pub expression: String,
    /// The next tick after [`Scheduler::cursor`]; `None`: the schedule has
    /// ended (its years have passed) and the policy never fires again.
    pub next_tick: Option<DateTime<Utc>>,
    /// The latest tick that was part of a run.
    pub last_tick: Option<DateTime<Utc>>,
    /// When that run was decided (the `now` of the poll, at or after
    /// `last_tick`).
    pub last_run: Option<DateTime<Utc>>,
    /// Runs the policy was part of.
    pub runs: u64,
    /// Ticks skipped because a run was in progress.
    pub skipped: u64,
    /// Ticks folded into a run that also stood for a later tick.
    pub collapsed: u64,
}

/// One policy in the run a [`Decision`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub policy: String,
    /// How many of the policy's ticks came due since the last poll (at least
    /// 1, at most [`TICK_COUNT_LIMIT`]); the run stands for all of them.
    pub ticks: u64,
    /// The latest of those ticks (at or before the poll's `now`).
    pub latest: DateTime<Utc>,
}

impl Due {
    /// The ticks beyond the first: missed, and collapsed into this run.
    pub fn collapsed(&self) -> u64 {
        self.ticks.saturating_sub(1)
    }
}

/// What one [`Scheduler::poll`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The policies to run now, by name, in one shared run. Empty: no run.
    pub run: Vec<Due>,
    /// Ticks that came due while a run was in progress: skipped, not queued.
    pub skipped: u64,
    /// Ticks collapsed into this run: the sum of [`Due::collapsed`].
    pub collapsed: u64,
    /// The clock read earlier than [`Scheduler::cursor`] by this much: nothing
    /// was decided.
    pub clock_went_back: Option<TimeDelta>,
}

impl Decision {
    /// Whether a run should start now.
    pub fn is_run(&self) -> bool {
        !self.run.is_empty()
    }

    /// The names of the policies to run, by name.
    pub fn policies(&self) -> impl Iterator<Item = &str> {
        self.run.iter().map(|d| d.policy.as_str())
    }
}

/// Totals since the scheduler was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Runs decided.
    pub runs: u64,
    /// Ticks skipped because a run was in progress (all policies).
    pub skipped: u64,
    /// Ticks collapsed into runs (all policies).
    pub collapsed: u64,
}

/// The scheduler: schedules plus what has been decided so far.
///
/// Every method is a pure function of the schedules, this state and the
/// instants passed in; nothing reads the clock.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Parallel to `status`.
    crons: Vec<cron::Schedule>,
    status: Vec<PolicyStatus>,
    unscheduled: Vec<String>,
    /// Every tick at or before this instant has been accounted for.
    cursor: DateTime<Utc>,
    totals: Totals,
}

impl Scheduler {
    /// A scheduler for which ticks at or before `since` are already handled:
    /// the daemon's start time, or the instant of its last recorded run.
    pub fn new(schedule: Schedule, since: DateTime<Utc>) -> Scheduler {
        let mut crons = Vec::with_capacity(schedule.scheduled.len());
        let mut status = Vec::with_capacity(schedule.scheduled.len());
        for p in schedule.scheduled {
            status.push(PolicyStatus {
                expression: p.cron.source().to_string(),
                next_tick: next_after(&p.cron, since),
                name: p.name,
                last_tick: None,
                last_run: None,
                runs: 0,
                skipped: 0,
                collapsed: 0,
            });
            crons.push(p.cron);
        }
        Scheduler {
            crons,
            status,
            unscheduled: schedule.unscheduled,
            cursor: since,
            totals: Totals::default(),
        }
    }

    /// When the daemon should poll next: the earliest next tick of any
    /// policy, or `now` if that tick is already due. `None`: no policy will
    /// ever fire (nothing scheduled, or every schedule has ended).
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.status
            .iter()
            .filter_map(|s| s.next_tick)
            .min()
            .map(|t| t.max(now))
    }

    /// Account for every tick in `(cursor, now]` and decide.
    ///
    /// With `running = false`, every policy with a due tick is in the returned
    /// run (one run, however many ticks each policy missed). With
    /// `running = true`, due ticks are skipped and counted and no run is
    /// returned. A `now` before the cursor changes nothing (see
    /// [`Decision::clock_went_back`]).
    pub fn poll(&mut self, now: DateTime<Utc>, running: bool) -> Decision {
        if now < self.cursor {
            return Decision {
                clock_went_back: Some(self.cursor - now),
                ..Decision::default()
            };
        }
        let mut decision = Decision::default();
        for (cron, status) in self.crons.iter().zip(self.status.iter_mut()) {
            let Some((ticks, latest, next)) = due_ticks(cron, status.next_tick, now) else {
                continue;
            };
            status.next_tick = next;
            if running {
                status.skipped = status.skipped.saturating_add(ticks);
                decision.skipped = decision.skipped.saturating_add(ticks);
            } else {
                let due = Due {
                    policy: status.name.clone(),
                    ticks,
                    latest,
                };
                status.runs = status.runs.saturating_add(1);
                status.collapsed = status.collapsed.saturating_add(due.collapsed());
                status.last_tick = Some(latest);
                status.last_run = Some(now);
                decision.collapsed = decision.collapsed.saturating_add(due.collapsed());
                decision.run.push(due);
            }
        }
        self.cursor = now;
        self.totals.skipped = self.totals.skipped.saturating_add(decision.skipped);
        self.totals.collapsed = self.totals.collapsed.saturating_add(decision.collapsed);
        if decision.is_run() {
            self.totals.runs = self.totals.runs.saturating_add(1);
        }
        decision
    }

    /// Move the cursor to `now`, forward or backward, dropping any due tick
    /// without a run or a count: for a daemon that judges a backward clock
    /// step to be a correction. Ticks after `now` may fire again, even if they
    /// were already accounted for.
    pub fn rebase(&mut self, now: DateTime<Utc>) {
        for (cron, status) in self.crons.iter().zip(self.status.iter_mut()) {
            status.next_tick = next_after(cron, now);
        }
        self.cursor = now;
    }

    /// Every tick at or before this instant has been accounted for.
    pub fn cursor(&self) -> DateTime<Utc> {
        self.cursor
    }

    /// The scheduled policies, by name.
    pub fn status(&self) -> &[PolicyStatus] {
        &self.status
    }

    /// The policies without a schedule, by name.
    pub fn unscheduled(&self) -> &[String] {
        &self.unscheduled
    }

    /// Runs, skipped and collapsed ticks since the scheduler was created.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

/// The ticks of `cron` from `next` (its first tick not yet accounted for)
/// to `now`: `(count, latest, the first tick after now)`, or `None` if no
/// tick is due.
fn due_ticks(
    cron: &cron::Schedule,
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(u64, DateTime<Utc>, Option<DateTime<Utc>>)> {
    let first = next.filter(|t| *t <= now)?;
    let mut ticks = 1;
    let mut latest = first;
    loop {
        match next_after(cron, latest) {
            Some(t) if t <= now => {
                ticks += 1;
                latest = t;
                if ticks >= TICK_COUNT_LIMIT {
                    // Stop walking: jump to the last tick at or before now.
                    latest = last_at_or_before(cron, now).unwrap_or(latest).max(latest);
                    return Some((ticks, latest, next_after(cron, now)));
                }
            }
            later => return Some((ticks, latest, later)),
        }
    }
}

/// The first year after the `cron` crate's range (it stops at 2100).
const CRON_END_YEAR: i32 = 2101;

fn cron_end() -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(CRON_END_YEAR, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The first tick strictly after `t`.
///
/// Guards the `cron` crate's edges: it adds a second to `t` (which would
/// overflow at `DateTime::MAX_UTC`) and reads years as unsigned (a negative
/// year would look like a huge one), so instants outside 1970..=2100 are
/// clamped first.
fn next_after(cron: &cron::Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let end = cron_end()?;
    if t >= end {
        return None;
    }
    let t = t.max(DateTime::UNIX_EPOCH - TimeDelta::seconds(1));
    cron.after(&t).next()
}

/// The last tick at or before `t` (`None` before 1970).
fn last_at_or_before(cron: &cron::Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let end = cron_end()?;
    if t < DateTime::UNIX_EPOCH {
        return None;
    }
    let t = t.min(end - TimeDelta::nanoseconds(1));
    // `after(x).next_back()` is the last tick strictly before x, at the
    // granularity of whole seconds; one nanosecond more includes `t` itself.
    let x = t.checked_add_signed(TimeDelta::nanoseconds(1))?;
    cron.after(&x).next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_after_is_strict_and_clamped() {
        let cron = cron::Schedule::from_str("*/5 * * * * *").expect("valid expression");
        let t = DateTime::from_timestamp(1_795_824_000, 0).expect("valid instant");
        assert_eq!(next_after(&cron, t), Some(t + TimeDelta::seconds(5)));
        let half = t + TimeDelta::milliseconds(4_500);
        assert_eq!(next_after(&cron, half), Some(t + TimeDelta::seconds(5)));
        assert_eq!(next_after(&cron, DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(
            next_after(&cron, DateTime::<Utc>::MIN_UTC),
            Some(DateTime::UNIX_EPOCH)
        );
    }

    #[test]
    fn last_at_or_before_includes_t() {
        let cron = cron::Schedule::from_str("*/5 * * * * *").expect("valid expression");
        let t = DateTime::from_timestamp(1_795_824_000, 0).expect("valid instant");
        assert_eq!(last_at_or_before(&cron, t), Some(t));
        assert_eq!(
            last_at_or_before(&cron, t + TimeDelta::milliseconds(4_999)),
            Some(t)
        );
        assert_eq!(
            last_at_or_before(&cron, t - TimeDelta::milliseconds(1)),
            Some(t - TimeDelta::seconds(5))
        );
    }
}
