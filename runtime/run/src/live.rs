//! The snapshot: the credential report, from a file or the live account,
//! joined with key ids and the engine's own identity.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use engine_aws::{Aws, AwsOptions, Identity, ReportProgress};
use engine_core::fresh::{FreshKey, FreshReport, FreshUser};
use engine_core::report::CredentialReport;
use engine_core::snapshot::{self, AccessKeyMeta, Own};
use engine_core::{Finding, PolicySet};

use crate::pipeline;

/// Everything the plan is made from.
pub struct Snapshot {
    pub report: CredentialReport,
    /// Per policy (index into the set), its findings.
    pub evaluated: Vec<(usize, Vec<Finding>)>,
    /// The live account, when not read from a file.
    pub account: Option<Account>,
    /// Where the report came from, for people.
    pub source: String,
    /// When AWS generated the report (live account only).
    pub generated_at: Option<DateTime<Utc>>,
    /// The one user read fresh from IAM instead of the credential report
    /// ([`SourceSpec::User`]), as IAM spells the name.
    pub user: Option<String>,
}

pub struct Account {
    pub aws: Aws,
    pub identity: Identity,
    /// The engine's own credentials, never acted on.
    pub own: Own,
    /// IAM/STS operations made for this snapshot.
    pub api_calls: u32,
}

/// How to reach the account: what `--profile`, `--region` and friends say.
#[derive(Debug, Clone)]
pub struct AccountOptions {
    pub profile: Option<String>,
    pub region: Option<String>,
    /// Reuse the account's credential report if it is younger than this.
    pub report_max_age: std::time::Duration,
    /// AWS calls in flight at once (key lookups, re-checks, writes), per account.
    pub concurrency: u16,
    /// Accounts planned and carried out at once, with an `[accounts]` table.
    pub account_concurrency: u16,
    /// Attempts per AWS call, the first included.
    pub max_attempts: u32,
    /// Show the credential report's progress on a terminal stderr (the
    /// CLI); otherwise it is logged (the daemon).
    pub progress: bool,
    /// Told about every AWS request (the daemon's metrics).
    pub observer: Option<std::sync::Arc<dyn engine_aws::RequestObserver>>,
    /// The keys the engine deactivated (from its journal, [`deactivations`]):
    /// their findings carry `deactivated_at`, and a `follow_deactivated`
    /// policy sees those it deactivated again while they are inactive.
    pub deactivated: std::sync::Arc<snapshot::Deactivations>,
}

/// The keys the engine deactivated and did not delete since, from the
/// journal in `state` (none when there is no journal yet, or it cannot be
/// read: then no key is followed, which only delays a deletion).
pub fn deactivations(state: &std::path::Path) -> snapshot::Deactivations {
    if !state.join(engine_journal::FILE).exists() {
        return snapshot::Deactivations::new();
    }
    match engine_journal::Journal::open(state).and_then(|j| j.deactivated_keys(None)) {
        Ok(keys) => keys
            .into_iter()
            .map(|k| {
                (
                    k.key_id,
                    snapshot::Deactivation {
                        user: k.user,
                        policy: k.policy,
                        at: k.at,
                    },
                )
            })
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read the keys the engine deactivated from the journal: {e}");
            snapshot::Deactivations::new()
        }
    }
}

/// Where the credentials come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A credential report file: no account, nothing can be applied.
    File(std::path::PathBuf),
    /// The live account.
    Account(AccountOptions),
    /// One user of the live account, read fresh from IAM (`GetUser`,
    /// `GetLoginProfile`, `ListAccessKeys`, `GetAccessKeyLastUsed`) instead
    /// of the credential report.
    User {
        account: AccountOptions,
        user: String,
        /// The user's id (`AIDA...`) when it is known, e.g. from an AWS
        /// Config event: a user of that name with another id was deleted and
        /// created again since, and is not evaluated.
        user_id: Option<String>,
    },
}

pub fn aws_options(args: &AccountOptions) -> AwsOptions {
    AwsOptions {
        profile: args.profile.clone(),
        region: args.region.clone(),
        report_max_age: args.report_max_age,
        max_attempts: args.max_attempts,
        observer: args.observer.clone(),
        ..AwsOptions::default()
    }
}

/// Read the report file, or the live account when there is none.
pub async fn snapshot(
    set: &PolicySet,
    source: &SourceSpec,
    now: DateTime<Utc>,
) -> Result<Snapshot, String> {
    let args = match source {
        SourceSpec::Account(args) => args,
        SourceSpec::User {
            account,
            user,
            user_id,
        } => {
            let aws = connect(account).await?;
            return fresh_user(set, aws, now, user, user_id.as_deref()).await;
        }
        SourceSpec::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read credential report {}: {e}", path.display()))?;
            let report = CredentialReport::parse(&bytes).map_err(|e| {
                format!(
                    "credential report {} rejected, nothing evaluated: {e}",
                    path.display()
                )
            })?;
            let evaluated = pipeline::findings(set, &report, now);
            return Ok(Snapshot {
                report,
                evaluated,
                account: None,
                source: path.display().to_string(),
                generated_at: None,
                user: None,
            });
        }
    };
    let aws = connect(args).await?;
    live(set, aws, now, args, false).await
}

pub async fn connect(args: &AccountOptions) -> Result<Aws, String> {
    Aws::connect(&aws_options(args))
        .await
        .map_err(|e| format!("cannot connect to AWS: {e}"))
}

/// The snapshot of the account `aws` is connected to: who the engine is
/// there, the credential report, key ids, protections. `assumed`: the
/// engine reached the account through a role it assumed itself (its own
/// keys are in another account).
pub async fn live(
    set: &PolicySet,
    aws: Aws,
    now: DateTime<Utc>,
    args: &AccountOptions,
    assumed: bool,
) -> Result<Snapshot, String> {
    let concurrency = usize::from(args.concurrency);
    let identity = aws
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    tracing::info!(account = %identity.account, arn = %identity.arn, key = %identity.access_key_id, "connected");
    let own = if assumed {
        Own::from_arn(&identity.arn, &identity.access_key_id)
    } else {
        own_credentials(&identity)
    };
    let tty = args.progress && std::io::stderr().is_terminal();
    let progress = move |p: ReportProgress| {
        let line = match p {
            ReportProgress::Generating => "asking AWS to generate a credential report".to_string(),
            ReportProgress::Waiting {
                attempt,
                state,
                next_poll,
            } => format!(
                "waiting for the credential report ({state}, poll {attempt}, next in {:.1}s)",
                next_poll.as_secs_f64()
            ),
            ReportProgress::Downloading => "downloading the credential report".to_string(),
        };
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            tracing::info!("{line}");
        }
    };
    let fetched = aws.credential_report(&progress).await;
    if tty {
        eprint!("\r\x1b[2K");
    }
    let fetched = fetched.map_err(|e| format!("cannot get the credential report: {e}"))?;
    check_clock(fetched.generated_at, Utc::now(), args.report_max_age)?;
    tracing::info!(
        generated_at = %fetched.generated_at,
        reused = fetched.reused,
        calls = fetched.api_calls,
        bytes = fetched.bytes.len(),
        "credential report"
    );
    let report = CredentialReport::parse(&fetched.bytes).map_err(|e| {
        format!("the account's credential report was rejected, nothing evaluated: {e}")
    })?;
    let mut evaluated = pipeline::findings(set, &report, now);
    // Keys a `follow_deactivated` policy deactivated: their users' inactive
    // keys are candidates (kept below when the journal names their key id).
    for (i, findings) in &mut evaluated {
        let policy = &set.policies[*i];
        if !policy.follow_deactivated {
            continue;
        }
        let users = snapshot::followed_users(&args.deactivated, &policy.name);
        for row in report.rows.iter().filter(|r| users.contains(r.user())) {
            findings.extend(engine_core::rules::inactive_keys(policy, row, now));
        }
    }
    let all: Vec<Finding> = evaluated
        .iter()
        .flat_map(|(_, f)| f.iter().cloned())
        .collect();
    let users = snapshot::users_needing_key_ids(&all);
    let api_calls = 1 + fetched.api_calls + users.len() as u32;
    let keys = list_keys(&aws, users, concurrency).await?;
    let mut warnings = std::collections::BTreeSet::new();
    let account: std::sync::Arc<str> = identity.account.as_str().into();
    for (i, findings) in &mut evaluated {
        warnings.extend(snapshot::resolve_key_ids(findings, &report, &keys));
        snapshot::follow_deactivated(findings, &args.deactivated, &set.policies[*i].name);
        snapshot::protect(findings, &own, &set.policies[*i].protect_access_keys);
        for f in findings.iter_mut() {
            f.account = Some(account.clone());
        }
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(Snapshot {
        report,
        evaluated,
        source: format!("account {}", identity.account),
        generated_at: Some(fetched.generated_at),
        user: None,
        account: Some(Account {
            aws,
            identity,
            own,
            api_calls,
        }),
    })
}

/// One user from fresh reads: who the engine runs as, then the user's
/// `GetUser`, `GetLoginProfile`, `ListAccessKeys` and one
/// `GetAccessKeyLastUsed` per key, made into a one-row report
/// ([`FreshReport`]). Key ids come from the slots, not from dates; the
/// engine's own credentials are protected as for the whole account. A user that does
/// not exist is an error, and so is one whose id is not `user_id` (when given).
pub async fn fresh_user(
    set: &PolicySet,
    aws: Aws,
    now: DateTime<Utc>,
    name: &str,
    user_id: Option<&str>,
) -> Result<Snapshot, String> {
    let identity = aws
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    tracing::info!(account = %identity.account, arn = %identity.arn, key = %identity.access_key_id, "connected");
    let own = own_credentials(&identity);
    let meta = aws
        .get_user(name)
        .await
        .map_err(|e| format!("cannot read user {name} (GetUser): {e}"))?
        .ok_or_else(|| {
            format!(
                "there is no IAM user named {name:?} in account {}; nothing evaluated",
                identity.account
            )
        })?;
    if let Some(id) = user_id
        && meta.id != id
    {
        return Err(format!(
            "IAM user {} now has id {}, not {id}: it was deleted and created again since; nothing evaluated",
            meta.name, meta.id
        ));
    }
    let (profile, listed) = tokio::join!(
        aws.login_profile_created(&meta.name),
        aws.list_access_keys(&meta.name)
    );
    let login_profile_created = profile.map_err(|e| {
        format!(
            "cannot read the console password of {} (GetLoginProfile): {e}",
            meta.name
        )
    })?;
    let listed = listed.map_err(|e| {
        format!(
            "cannot list the access keys of {} (ListAccessKeys): {e}",
            meta.name
        )
    })?;
    // GetCallerIdentity, GetUser, GetLoginProfile, ListAccessKeys, one GetAccessKeyLastUsed per key.
    let api_calls = 4 + listed.len() as u32;
    let used = last_used_of(&aws, &listed).await;
    let mut keys = Vec::with_capacity(listed.len());
    for (k, used) in listed.into_iter().zip(used) {
        match used.map_err(|e| {
            format!(
                "cannot read when access key {} of {} was last used (GetAccessKeyLastUsed): {e}",
                k.id, meta.name
            )
        })? {
            Some(last_used) => keys.push(FreshKey {
                id: k.id,
                active: k.active,
                created: k.create_date,
                last_used,
            }),
            // Deleted between the two reads: it is gone, nothing to act on.
            None => tracing::info!(
                "access key {} of {} was deleted while it was being read",
                k.id,
                meta.name
            ),
        }
    }
    let user = FreshUser {
        name: meta.name,
        arn: meta.arn,
        created: meta.created,
        password_last_used: meta.password_last_used,
        login_profile_created,
        keys,
    };
    check_fresh_clock(&user, Utc::now())?;
    let fresh = FreshReport::new(&user).map_err(|e| format!("{e}; nothing evaluated"))?;
    let account: std::sync::Arc<str> = identity.account.as_str().into();
    let evaluated = set
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut findings = fresh.findings(p, &own, now);
            for f in &mut findings {
                f.account = Some(account.clone());
            }
            (i, findings)
        })
        .collect();
    tracing::info!(user = %user.name, keys = user.keys.len(), calls = api_calls, "fresh reads");
    Ok(Snapshot {
        report: fresh.report,
        evaluated,
        source: format!(
            "account {} (fresh reads of user {})",
            identity.account, user.name
        ),
        generated_at: None,
        user: Some(user.name),
        account: Some(Account {
            aws,
            identity,
            own,
            api_calls,
        }),
    })
}

/// `GetAccessKeyLastUsed` for each key, at once (a user has at most two).
async fn last_used_of(
    aws: &Aws,
    keys: &[engine_aws::AccessKeyMeta],
) -> Vec<Result<Option<Option<DateTime<Utc>>>, engine_aws::AwsError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, k) in keys.iter().enumerate() {
        let aws = aws.clone();
        let id = k.id.clone();
        tasks.spawn(async move { (i, aws.access_key_last_used(&id).await) });
    }
    let mut out: Vec<_> = (0..keys.len()).map(|_| Ok(None)).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => out[i] = r,
            Err(e) => {
                return keys
                    .iter()
                    .map(|_| {
                        Err(engine_aws::AwsError::Response {
                            operation: "GetAccessKeyLastUsed",
                            message: format!("the lookup task failed: {e}"),
                        })
                    })
                    .collect();
            }
        }
    }
    out
}

/// With no credential report there is no generation time to check the
/// clock against; a credential IAM says was created in the future of this
/// machine's clock shows a clock that is behind, and every age with it.
fn check_fresh_clock(user: &FreshUser, now: DateTime<Utc>) -> Result<(), String> {
    let newest = user
        .keys
        .iter()
        .map(|k| k.created)
        .chain(user.login_profile_created)
        .chain([user.created])
        .max()
        .unwrap_or(user.created);
    if newest - now > MAX_CLOCK_SKEW {
        return Err(format!(
            "IAM says a credential of {} was created at {}, {} ahead of this machine's clock ({}); nothing evaluated: fix the clock (NTP) and run again",
            user.name,
            newest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(std::time::Duration::from_secs(
                (newest - now).num_seconds().unsigned_abs()
            )),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    Ok(())
}

/// How far in the future of the local clock a credential report may be
/// stamped before the clock (or the report) is not trusted.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// AWS regenerates a credential report at most every 4 hours: a report it
/// hands out is never older than that (plus the time to generate it).
pub const AWS_REPORT_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(4);

/// Refuse a report whose generation time does not fit the local clock: every
/// age the rules compute would be wrong by as much. Generated in the future:
/// the clock is behind. Older than AWS ever serves one (the larger of 4 hours
/// and `--report-max-age`, plus the skew): the clock is ahead, which would
/// make every credential look older than it is.
pub fn check_clock(
    generated_at: DateTime<Utc>,
    now: DateTime<Utc>,
    report_max_age: std::time::Duration,
) -> Result<(), String> {
    let max_age = chrono::TimeDelta::from_std(report_max_age)
        .unwrap_or(chrono::TimeDelta::MAX)
        .max(AWS_REPORT_MAX_AGE)
        .checked_add(&MAX_CLOCK_SKEW)
        .unwrap_or(chrono::TimeDelta::MAX);
    if now - generated_at > max_age {
        return Err(format!(
            "the credential report was generated at {}, {} before this machine's clock ({}), longer ago than AWS serves a report: is the clock ahead? Nothing evaluated: fix the clock (NTP) and run again",
            generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(std::time::Duration::from_secs(
                (now - generated_at).num_seconds().unsigned_abs()
            )),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    if generated_at - now > MAX_CLOCK_SKEW {
        return Err(format!(
            "the credential report was generated at {}, {} ahead of this machine's clock ({}); nothing evaluated: fix the clock (NTP) and run again",
            generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(std::time::Duration::from_secs(
                (generated_at - now).num_seconds().unsigned_abs()
            )),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    Ok(())
}

/// The engine's own credentials; under an assumed role the source user is
/// unknown, and the operator is told how to protect it.
pub fn own_credentials(identity: &Identity) -> Own {
    let own = Own::from_arn(&identity.arn, &identity.access_key_id);
    // Said once per process: a daemon makes a snapshot per run.
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if own.user.is_none() && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "running as {}, not as an IAM user: the engine protects the key it runs with, but cannot tell which user's keys the role is assumed from; list them in the policies' protect_access_keys (or exempt_users)",
            identity.arn
        );
    }
    own
}

/// One `ListAccessKeys` per user, at most `concurrency` at a time.
async fn list_keys(
    aws: &Aws,
    users: Vec<String>,
    concurrency: usize,
) -> Result<BTreeMap<String, Vec<AccessKeyMeta>>, String> {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for user in users {
        let aws = aws.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let listed = aws.list_access_keys(&user).await;
            (user, listed)
        });
    }
    let mut keys = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (user, listed) = joined.map_err(|e| format!("a key lookup task failed: {e}"))?;
        let listed = listed.map_err(|e| format!("cannot list the access keys of {user}: {e}"))?;
        keys.insert(
            user,
            listed
                .into_iter()
                .map(|k| AccessKeyMeta {
                    id: k.id,
                    active: k.active,
                    created: k.create_date,
                })
                .collect(),
        );
    }
    Ok(keys)
}
