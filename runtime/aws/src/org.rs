//! Many accounts: the accounts of an AWS Organization, and the role the
//! engine assumes in each.
//!
//! An organization-wide run lists the organization's accounts
//! (`ListAccounts`), narrows them to organizational units by walking each
//! unit's subtree (`ListAccountsForParent`, `ListOrganizationalUnitsForParent`)
//! and reaches each account through a role of its own ([`Aws::assume_role`]),
//! whose credentials are renewed five minutes before they expire.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_iam::config::ProvideCredentials;

use crate::{Aws, AwsError, RequestObserver};

/// An account of the organization, as `ListAccounts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccount {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`.
    pub status: String,
}

impl Aws {
    /// Every account of the organization the credentials are in (all pages
    /// of `ListAccounts`). Needs the management account or a delegated
    /// administrator.
    pub async fn organization_accounts(&self) -> Result<Vec<OrgAccount>, AwsError> {
        const OP: &str = "ListAccounts";
        let mut pages = self.orgs.list_accounts().into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify(OP, e))?;
            for a in page.accounts() {
                out.push(OrgAccount {
                    id: a.id().unwrap_or_default().to_string(),
                    name: a.name().unwrap_or_default().to_string(),
                    status: a
                        .state()
                        .map(|s| s.as_str().to_string())
                        .or_else(|| a.status().map(|s| s.as_str().to_string()))
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// The ids of every account under `parent` (an organizational unit or
    /// the root), in its whole subtree.
    pub async fn accounts_under(&self, parent: &str) -> Result<BTreeSet<String>, AwsError> {
        let mut out = BTreeSet::new();
        let mut todo = vec![parent.to_string()];
        while let Some(p) = todo.pop() {
            let mut accounts = self
                .orgs
                .list_accounts_for_parent()
                .parent_id(&p)
                .into_paginator()
                .send();
            while let Some(page) = accounts.next().await {
                let page = page.map_err(|e| self.classify("ListAccountsForParent", e))?;
                out.extend(
                    page.accounts()
                        .iter()
                        .filter_map(|a| a.id())
                        .map(str::to_string),
                );
            }
            let mut units = self
                .orgs
                .list_organizational_units_for_parent()
                .parent_id(&p)
                .into_paginator()
                .send();
            while let Some(page) = units.next().await {
                let page =
                    page.map_err(|e| self.classify("ListOrganizationalUnitsForParent", e))?;
                todo.extend(
                    page.organizational_units()
                        .iter()
                        .filter_map(|u| u.id())
                        .map(str::to_string),
                );
            }
        }
        Ok(out)
    }

    /// A connection to another account through `role_arn`, assumed with
    /// this connection's credentials (`AssumeRole` through this connection's
    /// STS client, renewed before the session expires). Retries and timeouts
    /// as this one's; `observer` (if any) is told about the new connection's
    /// requests.
    /// Fails when the role cannot be assumed.
    pub async fn assume_role(
        &self,
        role_arn: &str,
        session_name: &str,
        external_id: Option<&str>,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Aws, AwsError> {
        // One AssumeRole per session: the SDK's clients cache credentials,
        // but the engine asks for them too (who it is, which key it uses).
        let provider = Reused::new(AssumeRole {
            sts: self.sts.clone(),
            role_arn: role_arn.to_string(),
            session_name: session_name.to_string(),
            external_id: external_id.map(str::to_string),
        });
        // Assume now: a role that cannot be assumed is this account's error.
        if let Err(e) = provider.provide_credentials().await {
            return Err(AwsError::AssumeRole {
                role_arn: role_arn.to_string(),
                message: sts_message(&e),
            });
        }
        let config = self
            .config
            .to_builder()
            .credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build();
        let mut opts = self.opts.clone();
        // Its requests are made in the role's account.
        let account = role_arn.split(':').nth(4).filter(|a| !a.is_empty());
        opts.observer = match (observer.or(opts.observer), account) {
            (Some(o), Some(account)) => Some(crate::in_account(o, account)),
            (o, _) => o,
        };
        Aws::from_sdk_config(&config, &opts).await
    }
}

/// What STS answered, from a credentials error: `Code: message` of the
/// `AssumeRole` error in its sources, else the innermost error's text.
fn sts_message(e: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_iam::error::ProvideErrorMetadata;
    type AssumeRoleSdkError = aws_sdk_sts::error::SdkError<
        aws_sdk_sts::operation::assume_role::AssumeRoleError,
        aws_sdk_iam::config::http::HttpResponse,
    >;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(err) = current {
        if let Some(sdk) = err.downcast_ref::<AssumeRoleSdkError>() {
            return match (sdk.code(), sdk.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => aws_sdk_iam::error::DisplayErrorContext(sdk).to_string(),
            };
        }
        last = err.to_string();
        current = err.source();
    }
    last
}

/// Credentials of a role, from `AssumeRole` made with this connection's STS
/// client: its retries and timeouts, and its request observer, so the call
/// is counted in the engine's own account like any other (aws-config's
/// `AssumeRoleProvider` makes it with an STS client of its own, which no
/// observer sees).
#[derive(Debug)]
struct AssumeRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session_name: String,
    external_id: Option<String>,
}

impl AssumeRole {
    async fn assume(&self) -> Result<aws_credential_types::Credentials, CredentialsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .send()
            .await
            .map_err(CredentialsError::provider_error)?;
        let c = out.credentials.ok_or_else(|| {
            CredentialsError::unhandled("STS answered AssumeRole without credentials")
        })?;
        let expiry = std::time::SystemTime::try_from(c.expiration).map_err(|e| {
            CredentialsError::unhandled(format!(
                "STS answered AssumeRole with an expiry out of range: {e}"
            ))
        })?;
        Ok(aws_credential_types::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expiry),
            "engine-assume-role",
        ))
    }
}

impl ProvideCredentials for AssumeRole {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(self.assume())
    }
}

/// Credentials asked for once and handed out again until five minutes
/// before they expire; then asked for again.
#[derive(Debug)]
struct Reused<P> {
    inner: P,
    cached: tokio::sync::Mutex<Option<aws_credential_types::Credentials>>,
}

impl<P> Reused<P> {
    fn new(inner: P) -> Self {
        Reused {
            inner,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

/// How long before expiry credentials are renewed.
const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(300);

impl<P: ProvideCredentials> ProvideCredentials for Reused<P> {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let mut cached = self.cached.lock().await;
            if let Some(c) = cached.as_ref() {
                let fresh = c.expiry().is_none_or(|at| {
                    at.duration_since(std::time::SystemTime::now())
                        .is_ok_and(|left| left > RENEW_BEFORE)
                });
                if fresh {
                    return Ok(c.clone());
                }
            }
            let c = self.inner.provide_credentials().await?;
            *cached = Some(c.clone());
            Ok(c)
        })
    }
}
