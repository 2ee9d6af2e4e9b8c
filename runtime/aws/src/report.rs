//! Fetching the IAM credential report: reuse, generate, poll, download.
//!
//! AWS builds the report asynchronously and lets each account have only one at
//! a time, so fetching is a small state machine: reuse a recent report, or ask
//! for a new one and poll it with capped exponential backoff until it is ready,
//! riding out `ReportInProgress`, `LimitExceeded` and throttling, and giving up
//! with a clear error after a configured wait. The decisions are pure functions
//! ([`should_reuse`], [`Backoff`]) so they are tested without AWS.

use std::time::{Duration, Instant};

use aws_sdk_iam::types::ReportStateType;
use chrono::{DateTime, Utc};

use crate::{Aws, AwsError, to_chrono};

/// A credential report as fetched from AWS.
#[derive(Debug, Clone)]
pub struct FetchedReport {
    /// The CSV, as AWS sent it.
    pub bytes: Vec<u8>,
    /// When AWS generated it (`GeneratedTime`).
    pub generated_at: DateTime<Utc>,
    /// True if an existing report younger than the maximum age was used
    /// without asking AWS to generate one.
    pub reused: bool,
    /// IAM operations made to fetch it (SDK-level retries of one operation count once).
    pub api_calls: u32,
}

/// Where fetching the report is, for a progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportProgress {
    /// Asking AWS to generate a new report.
    Generating,
    /// Waiting before polling again; `state` is AWS's last answer
    /// (`STARTED`, `INPROGRESS`, `LimitExceeded`, `Throttling`...).
    Waiting {
        attempt: u32,
        state: String,
        next_poll: Duration,
    },
    /// The report is ready and being downloaded.
    Downloading,
}

/// Whether a report generated at `generated_at` is recent enough to use as it is at `now`.
///
/// A zero `max_age` never reuses. A report stamped slightly in the future
/// (clock skew) counts as fresh.
pub fn should_reuse(generated_at: DateTime<Utc>, now: DateTime<Utc>, max_age: Duration) -> bool {
    if max_age.is_zero() {
        return false;
    }
    let max_age = chrono::TimeDelta::from_std(max_age).unwrap_or(chrono::TimeDelta::MAX);
    now.signed_duration_since(generated_at) < max_age
}

/// Capped exponential backoff: `initial`, doubling, never above `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            next: initial.min(cap),
            cap,
        }
    }

    /// The report poll schedule: 250 ms, doubling, capped at 5 s.
    pub fn report_poll() -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        delay
    }
}

/// What to ask AWS next.
enum Step {
    /// `GetCredentialReport`; `first` is the check for a reusable report.
    Get { first: bool },
    /// `GenerateCredentialReport`, which also reports the generation state.
    Generate,
}

impl Aws {
    /// Fetch the account's credential report: reuse one younger than
    /// `report_max_age`, or generate one and wait for it (at most
    /// `report_max_wait`).
    ///
    /// AWS generates a new report at most every four hours; asking within
    /// that window returns the latest one.
    pub async fn credential_report(
        &self,
        progress: &(dyn Fn(ReportProgress) + Sync),
    ) -> Result<FetchedReport, AwsError> {
        let started = Instant::now();
        let mut api_calls = 0u32;
        let mut backoff = Backoff::report_poll();
        let mut attempt = 0u32;
        let mut step = Step::Get { first: true };
        loop {
            // What to wait for before the next step, if anything.
            let waiting_on: String = match step {
                Step::Get { first } => {
                    if !first {
                        progress(ReportProgress::Downloading);
                    }
                    api_calls += 1;
                    match self.get_report().await {
                        Ok((bytes, generated_at)) => {
                            let reusable = generated_at.is_some_and(|at| {
                                should_reuse(at, Utc::now(), self.opts.report_max_age)
                            });
                            if !first || reusable {
                                return Ok(FetchedReport {
                                    bytes,
                                    generated_at: generated_at.unwrap_or_else(Utc::now),
                                    reused: first,
                                    api_calls,
                                });
                            }
                            progress(ReportProgress::Generating);
                            step = Step::Generate;
                            continue;
                        }
                        Err(e) => match e.code() {
                            Some("ReportNotPresent" | "ReportExpired") => {
                                progress(ReportProgress::Generating);
                                step = Step::Generate;
                                continue;
                            }
                            Some("ReportInProgress") => {
                                step = Step::Generate;
                                "INPROGRESS".to_string()
                            }
                            Some(code) if e.is_transient() => code.to_string(),
                            _ if e.is_transient() => "network error".to_string(),
                            _ => return Err(e),
                        },
                    }
                }
                Step::Generate => {
                    api_calls += 1;
                    match self.generate_report().await {
                        Ok(ReportStateType::Complete) => {
                            step = Step::Get { first: false };
                            continue;
                        }
                        Ok(state) => state.as_str().to_string(),
                        Err(e) => match e.code() {
                            Some(code) if e.is_transient() => code.to_string(),
                            _ if e.is_transient() => "network error".to_string(),
                            _ => return Err(e),
                        },
                    }
                }
            };
            let waited = started.elapsed();
            let Some(remaining) = self.opts.report_max_wait.checked_sub(waited) else {
                return Err(AwsError::ReportTimeout {
                    waited,
                    last_state: waiting_on,
                });
            };
            if remaining.is_zero() {
                return Err(AwsError::ReportTimeout {
                    waited,
                    last_state: waiting_on,
                });
            }
            attempt += 1;
            let delay = backoff.next_delay().min(remaining);
            progress(ReportProgress::Waiting {
                attempt,
                state: waiting_on,
                next_poll: delay,
            });
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_report(&self) -> Result<(Vec<u8>, Option<DateTime<Utc>>), AwsError> {
        const OP: &str = "GetCredentialReport";
        let out = self
            .iam
            .get_credential_report()
            .send()
            .await
            .map_err(|e| self.classify(OP, e))?;
        let generated_at = out.generated_time().and_then(to_chrono);
        let Some(content) = out.content else {
            return Err(AwsError::Response {
                operation: OP,
                message: "the answer has no report content".into(),
            });
        };
        Ok((content.into_inner(), generated_at))
    }

    async fn generate_report(&self) -> Result<ReportStateType, AwsError> {
        let out = self
            .iam
            .generate_credential_report()
            .send()
            .await
            .map_err(|e| self.classify("GenerateCredentialReport", e))?;
        // No state at all is read as "still working": the next poll will tell.
        Ok(out.state.unwrap_or(ReportStateType::Inprogress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap()
    }

    const FOUR_HOURS: Duration = Duration::from_secs(4 * 3600);

    #[test]
    fn reuses_a_report_younger_than_the_max_age() {
        assert!(should_reuse(at(8, 0), at(11, 59), FOUR_HOURS));
        assert!(should_reuse(at(8, 0), at(8, 0), FOUR_HOURS));
    }

    #[test]
    fn does_not_reuse_a_report_at_or_past_the_max_age() {
        assert!(!should_reuse(at(8, 0), at(12, 0), FOUR_HOURS));
        assert!(!should_reuse(at(8, 0), at(23, 0), FOUR_HOURS));
    }

    #[test]
    fn zero_max_age_never_reuses() {
        assert!(!should_reuse(at(8, 0), at(8, 0), Duration::ZERO));
    }

    #[test]
    fn a_report_from_the_future_is_fresh() {
        assert!(should_reuse(at(8, 5), at(8, 0), FOUR_HOURS));
    }

    #[test]
    fn a_huge_max_age_reuses_anything() {
        let old = Utc.with_ymd_and_hms(2015, 2, 2, 20, 2, 2).unwrap();
        assert!(should_reuse(old, at(8, 0), Duration::MAX));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::report_poll();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn backoff_starts_at_most_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
