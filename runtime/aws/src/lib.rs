//! The live-AWS adapter: IAM and STS through the official AWS SDK for Rust.
//!
//! This crate is the only place that talks to AWS. It resolves credentials and
//! region the way the AWS CLI does (default chain, `--profile`, `--region`,
//! `AWS_ENDPOINT_URL` and its per-service variants), fetches the credential
//! report, and makes the few writes remediation needs. Every call goes through
//! a retry strategy (throttling, 5xx and dropped connections are retried with
//! backoff: the SDK's for reads, [`Aws::write`]'s own for writes, which looks
//! before resending a write whose answer was lost), and writes are idempotent: `NoSuchEntity` on a
//! delete means the thing is already gone, which is what was wanted.
//!
//! An optional [`RequestObserver`] is told about every HTTP attempt, retries
//! included, by operation and [`RequestOutcome`], for request metrics.

mod error;
mod observe;
mod org;
mod report;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::config::{ProvideCredentials, SharedInterceptor};
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::StatusType;
use chrono::{DateTime, Utc};

pub use error::AwsError;
pub use observe::{RequestObserver, RequestOutcome, in_account, interceptor};
pub use org::OrgAccount;
pub use report::{Backoff, FetchedReport, ReportProgress, should_reuse};

/// How to connect: which credentials and region, and how patient to be.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// A named profile from the shared config files, like `--profile`.
    pub profile: Option<String>,
    /// The region, like `--region`. IAM is global; this picks the partition
    /// and the STS endpoint. Without one anywhere, `us-east-1` is used.
    pub region: Option<String>,
    /// An endpoint for every service, overriding `AWS_ENDPOINT_URL`. For
    /// tests and private endpoints; leave unset in production.
    pub endpoint_url: Option<String>,
    /// Reuse an existing credential report younger than this (default 4 h).
    pub report_max_age: Duration,
    /// Give up waiting for a credential report after this (default 5 min).
    pub report_max_wait: Duration,
    /// Attempts per API call, retries included, for throttling, 5xx and
    /// connection errors (default 8).
    pub max_attempts: u32,
    /// The first retry delay of an API call; it doubles per attempt, with
    /// jitter, up to 20 s (default 1 s).
    pub initial_backoff: Duration,
    /// Told about every HTTP attempt: operation name (e.g. `"ListAccessKeys"`)
    /// and outcome. Every attempt counts, retries included (the SDK's and the
    /// adapter's own): a call throttled once and then answered is reported as
    /// `Throttled`, then `Ok`. None by default.
    pub observer: Option<std::sync::Arc<dyn RequestObserver>>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            profile: None,
            region: None,
            endpoint_url: None,
            report_max_age: Duration::from_secs(4 * 3600),
            report_max_wait: Duration::from_secs(5 * 60),
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            observer: None,
        }
    }
}

/// The region used when none is configured: IAM is global, and its endpoint
/// for the `aws` partition is signed for `us-east-1`.
const FALLBACK_REGION: &str = "us-east-1";

/// Connect and read timeouts for one attempt: a hung connection fails and is
/// retried instead of stalling a run. Generous, because a credential report
/// of a large account is tens of megabytes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Who the credentials in use belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
    /// The access key id of the credentials in use (never the secret).
    pub access_key_id: String,
}

/// One access key of a user, as `ListAccessKeys` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyMeta {
    pub id: String,
    pub active: bool,
    pub create_date: DateTime<Utc>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// AWS made the change.
    Done,
    /// An earlier attempt got no answer (dropped connection, timeout) and the
    /// retry found the credential gone (`NoSuchEntity`): the lost attempt made
    /// the change, most likely, not someone else.
    DoneOnRetry,
    /// The credential was already gone (`NoSuchEntity`) at the first answer:
    /// nothing to do, someone or something removed it since the plan.
    AlreadyGone,
    /// A console password delete went unanswered, and the user now has a
    /// password created at this time, after the one the plan saw: a new
    /// password, left alone.
    Replaced(DateTime<Utc>),
}

/// An IAM user as `GetUser` returns it: what identifies it, and its last sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMeta {
    /// The user name as IAM spells it (names compare case-insensitively).
    pub name: String,
    /// The user's unique id (`AIDA...`): a user deleted and created again
    /// under the same name has a new one.
    pub id: String,
    pub arn: String,
    pub created: DateTime<Utc>,
    /// `PasswordLastUsed`; `None` when never used (or not tracked).
    pub password_last_used: Option<DateTime<Utc>>,
}

/// A connection to one AWS account.
#[derive(Debug, Clone)]
pub struct Aws {
    iam: aws_sdk_iam::Client,
    /// The same client without the SDK's retries: writes retry in
    /// [`Aws::write`], which knows whether an earlier attempt went unanswered.
    iam_writes: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    orgs: aws_sdk_organizations::Client,
    config: SdkConfig,
    opts: AwsOptions,
}

impl Aws {
    /// Resolve credentials and region from the default chain (environment,
    /// shared config and credentials files, SSO, container and instance
    /// roles), as adjusted by `opts`, and check that credentials exist.
    pub async fn connect(opts: &AwsOptions) -> Result<Aws, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &opts.profile {
            // The default chain reads AWS_ACCESS_KEY_ID before any profile; an
            // explicit profile wins over the environment, as in the AWS CLI.
            let credentials = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build();
            loader = loader
                .profile_name(profile)
                .credentials_provider(credentials);
        }
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &opts.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        Aws::from_sdk_config(&config, opts).await
    }

    /// Use an already loaded SDK configuration (for callers that build their
    /// own, e.g. with assumed-role credentials). Retry and timeout settings
    /// and the request observer come from `opts`; `opts.profile`, `region`
    /// and `endpoint_url` are ignored.
    pub async fn from_sdk_config(config: &SdkConfig, opts: &AwsOptions) -> Result<Aws, AwsError> {
        let Some(provider) = config.credentials_provider() else {
            return Err(AwsError::Credentials {
                message: "no credentials provider is configured".into(),
            });
        };
        if let Err(e) = provider.provide_credentials().await {
            return Err(AwsError::Credentials {
                message: aws_sdk_iam::error::DisplayErrorContext(&e).to_string(),
            });
        }
        let mut builder = config.to_builder();
        builder.set_retry_config(Some(
            RetryConfig::standard()
                .with_max_attempts(opts.max_attempts.max(1))
                .with_initial_backoff(opts.initial_backoff),
        ));
        builder.set_timeout_config(Some(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        ));
        if config.region().is_none() {
            builder.set_region(Some(Region::from_static(FALLBACK_REGION)));
        }
        let config = builder.build();
        // The observer is registered on every client: it is per service
        // config, not part of the shared `SdkConfig`.
        let observe = opts.observer.clone().map(observe::ObserveRequests::new);
        let mut iam = aws_sdk_iam::config::Builder::from(&config);
        let mut sts = aws_sdk_sts::config::Builder::from(&config);
        let mut orgs = aws_sdk_organizations::config::Builder::from(&config);
        if let Some(observe) = &observe {
            iam.push_interceptor(SharedInterceptor::new(observe.clone()));
            sts.push_interceptor(SharedInterceptor::new(observe.clone()));
            orgs.push_interceptor(SharedInterceptor::new(observe.clone()));
        }
        let writes = iam.clone().retry_config(RetryConfig::disabled()).build();
        Ok(Aws {
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            iam_writes: aws_sdk_iam::Client::from_conf(writes),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            orgs: aws_sdk_organizations::Client::from_conf(orgs.build()),
            config,
            opts: opts.clone(),
        })
    }

    /// The SDK configuration of this connection (credentials, region,
    /// retries), for the engine's other adapters (Security Hub).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// The region in use.
    pub fn region(&self) -> Option<&str> {
        self.config.region().map(|r| r.as_ref())
    }

    /// Who the credentials in use belong to (`GetCallerIdentity`).
    pub async fn identity(&self) -> Result<Identity, AwsError> {
        const OP: &str = "GetCallerIdentity";
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.classify(OP, e))?;
        let access_key_id = match self.config.credentials_provider() {
            Some(provider) => provider
                .provide_credentials()
                .await
                .map_err(|e| AwsError::Credentials {
                    message: aws_sdk_iam::error::DisplayErrorContext(&e).to_string(),
                })?
                .access_key_id()
                .to_string(),
            None => String::new(),
        };
        let field = |value: Option<&str>, name: &str| {
            value.map(str::to_string).ok_or_else(|| AwsError::Response {
                operation: OP,
                message: format!("the answer has no {name}"),
            })
        };
        Ok(Identity {
            account: field(out.account(), "account")?,
            arn: field(out.arn(), "arn")?,
            user_id: field(out.user_id(), "user id")?,
            access_key_id,
        })
    }

    /// A user's access keys (all pages of `ListAccessKeys`).
    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKeyMeta>, AwsError> {
        const OP: &str = "ListAccessKeys";
        let mut pages = self
            .iam
            .list_access_keys()
            .user_name(user)
            .into_paginator()
            .items()
            .send();
        let mut keys = Vec::new();
        while let Some(item) = pages.next().await {
            let meta = item.map_err(|e| self.classify(OP, e))?;
            let create_date =
                meta.create_date()
                    .and_then(to_chrono)
                    .ok_or_else(|| AwsError::Response {
                        operation: OP,
                        message: format!(
                            "access key {:?} has no valid create date",
                            meta.access_key_id()
                        ),
                    })?;
            keys.push(AccessKeyMeta {
                id: meta.access_key_id().unwrap_or_default().to_string(),
                active: meta.status() == Some(&StatusType::Active),
                create_date,
            });
        }
        Ok(keys)
    }

    /// Delete an access key. An already deleted key (or user) is [`WriteOutcome::AlreadyGone`].
    pub async fn delete_access_key(
        &self,
        user: &str,
        key_id: &str,
    ) -> Result<WriteOutcome, AwsError> {
        self.write("DeleteAccessKey", true, true, || {
            self.iam_writes
                .delete_access_key()
                .user_name(user)
                .access_key_id(key_id)
                .send()
        })
        .await
    }

    /// Make an access key inactive (`UpdateAccessKey`). A missing key is
    /// [`WriteOutcome::AlreadyGone`]; an already inactive one is `Done`.
    pub async fn deactivate_access_key(
        &self,
        user: &str,
        key_id: &str,
    ) -> Result<WriteOutcome, AwsError> {
        self.write("UpdateAccessKey", false, true, || {
            self.iam_writes
                .update_access_key()
                .user_name(user)
                .access_key_id(key_id)
                .status(StatusType::Inactive)
                .send()
        })
        .await
    }

    /// Delete a user's console password, the one created at or before
    /// `created_by`. No password is [`WriteOutcome::AlreadyGone`].
    ///
    /// A password has no id, so a blind retry after a lost answer could
    /// delete a password set in between. After an unanswered attempt it looks
    /// first (`GetLoginProfile`): gone is [`WriteOutcome::DoneOnRetry`], a
    /// newer password is [`WriteOutcome::Replaced`], the same one is sent again.
    pub async fn delete_login_profile(
        &self,
        user: &str,
        created_by: DateTime<Utc>,
    ) -> Result<WriteOutcome, AwsError> {
        let mut looks = 0;
        loop {
            let sent = self
                .write("DeleteLoginProfile", true, false, || {
                    self.iam_writes
                        .delete_login_profile()
                        .user_name(user)
                        .send()
                })
                .await;
            match sent {
                Err(AwsError::Unanswered { .. }) if looks < self.opts.max_attempts => {
                    looks += 1;
                    match self.login_profile_created(user).await? {
                        None => return Ok(WriteOutcome::DoneOnRetry),
                        Some(c) if c.timestamp() <= created_by.timestamp() => {}
                        Some(c) => return Ok(WriteOutcome::Replaced(c)),
                    }
                }
                Err(AwsError::Unanswered {
                    operation,
                    attempts,
                }) => {
                    return Err(AwsError::Network {
                        operation,
                        message: format!("no answer after {attempts} attempts"),
                    });
                }
                other => return other,
            }
        }
    }

    /// When the user's console password was created (`GetLoginProfile`'s
    /// `CreateDate`); `None` when the user has none (or no longer exists).
    pub async fn login_profile_created(
        &self,
        user: &str,
    ) -> Result<Option<DateTime<Utc>>, AwsError> {
        const OP: &str = "GetLoginProfile";
        match self.iam.get_login_profile().user_name(user).send().await {
            Ok(out) => out
                .login_profile()
                .map(|p| p.create_date())
                .and_then(to_chrono)
                .map(Some)
                .ok_or_else(|| AwsError::Response {
                    operation: OP,
                    message: format!("the login profile of {user:?} has no valid create date"),
                }),
            Err(e) if is_no_such_entity(&e) => Ok(None),
            Err(e) => Err(self.classify(OP, e)),
        }
    }

    /// A user's name, ARN, creation date and last console sign-in
    /// (`GetUser`); `None` when there is no such user.
    /// The user's IAM tags (`ListUserTags`), key to value; a user that is
    /// gone has none.
    pub async fn user_tags(
        &self,
        user: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, AwsError> {
        const OP: &str = "ListUserTags";
        let mut pages = self
            .iam
            .list_user_tags()
            .user_name(user)
            .into_paginator()
            .items()
            .send();
        let mut tags = std::collections::BTreeMap::new();
        while let Some(item) = pages.next().await {
            match item {
                Ok(t) => {
                    tags.insert(t.key().to_string(), t.value().to_string());
                }
                Err(e) if is_no_such_entity(&e) => return Ok(tags),
                Err(e) => return Err(self.classify(OP, e)),
            }
        }
        Ok(tags)
    }

    pub async fn get_user(&self, user: &str) -> Result<Option<UserMeta>, AwsError> {
        const OP: &str = "GetUser";
        match self.iam.get_user().user_name(user).send().await {
            Ok(out) => {
                let u = out.user().ok_or_else(|| AwsError::Response {
                    operation: OP,
                    message: "the answer has no user".into(),
                })?;
                let created = to_chrono(u.create_date()).ok_or_else(|| AwsError::Response {
                    operation: OP,
                    message: format!("user {user:?} has no valid create date"),
                })?;
                Ok(Some(UserMeta {
                    name: u.user_name().to_string(),
                    id: u.user_id().to_string(),
                    arn: u.arn().to_string(),
                    created,
                    password_last_used: u.password_last_used().and_then(to_chrono),
                }))
            }
            Err(e) if is_no_such_entity(&e) => Ok(None),
            Err(e) => Err(self.classify(OP, e)),
        }
    }

    /// Every IAM user of the account as (user id, user name), all pages of
    /// `ListUsers` (1,000 a page).
    pub async fn list_users(&self) -> Result<Vec<(String, String)>, AwsError> {
        const OP: &str = "ListUsers";
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_users()
                .max_items(1000)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| self.classify(OP, e))?;
            out.extend(
                page.users()
                    .iter()
                    .map(|u| (u.user_id().to_string(), u.user_name().to_string())),
            );
            match page.marker {
                Some(m) if page.is_truncated && !m.is_empty() => marker = Some(m),
                _ => return Ok(out),
            }
        }
    }

    /// When an access key was last used (`GetAccessKeyLastUsed`): `Ok(None)`
    /// when the key does not exist, `Ok(Some(None))` when it was never used.
    pub async fn access_key_last_used(
        &self,
        key_id: &str,
    ) -> Result<Option<Option<DateTime<Utc>>>, AwsError> {
        const OP: &str = "GetAccessKeyLastUsed";
        match self
            .iam
            .get_access_key_last_used()
            .access_key_id(key_id)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.access_key_last_used()
                    .and_then(|l| l.last_used_date())
                    .and_then(to_chrono),
            )),
            Err(e) if is_no_such_entity(&e) => Ok(None),
            Err(e) => Err(self.classify(OP, e)),
        }
    }

    /// Send a write with retries of its own, so that it knows what a
    /// `NoSuchEntity` means: at the first answer, the credential was already
    /// gone; after an attempt that may have been applied without an answer
    /// (dropped connection, timeout, unreadable response, a 5xx), a delete
    /// (`removes`) most likely made the change itself. A deactivation cannot
    /// make a key disappear: its `NoSuchEntity` is always `AlreadyGone`.
    /// Throttling, 5xx and network errors are retried with capped exponential
    /// backoff, up to `max_attempts` attempts; without `retry_unanswered`, an
    /// attempt that may have been applied without an answer ends it with
    /// [`AwsError::Unanswered`], for the caller to look before sending again.
    async fn write<T, E, F, Fut>(
        &self,
        operation: &'static str,
        removes: bool,
        retry_unanswered: bool,
        send: F,
    ) -> Result<WriteOutcome, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let attempts = self.opts.max_attempts.max(1);
        let mut backoff = Backoff::new(self.opts.initial_backoff, Duration::from_secs(20));
        let mut unanswered = false;
        let mut attempt = 1;
        loop {
            let err = match send().await {
                Ok(_) => return Ok(WriteOutcome::Done),
                Err(e) if is_no_such_entity(&e) => {
                    return Ok(if unanswered && removes {
                        WriteOutcome::DoneOnRetry
                    } else {
                        WriteOutcome::AlreadyGone
                    });
                }
                Err(e) => e,
            };
            let lost = matches!(
                err,
                SdkError::DispatchFailure(_)
                    | SdkError::TimeoutError(_)
                    | SdkError::ResponseError(_)
            );
            let server_error =
                matches!(&err, SdkError::ServiceError(s) if s.raw().status().is_server_error());
            let throttled = matches!(&err, SdkError::ServiceError(s)
                if s.err().code().is_some_and(error::is_throttling));
            if (lost || server_error) && !retry_unanswered {
                return Err(AwsError::Unanswered {
                    operation,
                    attempts: attempt,
                });
            }
            if attempt >= attempts || !(lost || server_error || throttled) {
                return Err(error::classify(operation, attempt, err));
            }
            // A 5xx may come after the change was made, like a lost answer.
            unanswered |= lost || server_error;
            tokio::time::sleep(backoff.next_delay()).await;
            attempt += 1;
        }
    }

    fn classify<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        error::classify(operation, self.opts.max_attempts, err)
    }
}

fn is_no_such_entity<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(err, SdkError::ServiceError(s) if s.err().code() == Some("NoSuchEntity"))
}

/// An SDK timestamp as a chrono one (`None` if out of chrono's range).
fn to_chrono(t: &aws_sdk_iam::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
