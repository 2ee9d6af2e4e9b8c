//! Many accounts in one run: an `[accounts]` table names them (a list, or
//! the organization narrowed by organizational units), and each is its own
//! snapshot, plan and journaled execution, reached through its own role.
//!
//! The guarantees of a single account hold per account: its own credentials
//! (assumed), credential report, key-id resolution, own-key protection and
//! blast-radius cap per policy. A failing account (its role cannot be
//! assumed, its report fails) is reported and the others go on.

use std::sync::Arc;

use engine_aws::{Aws, Identity};
use engine_core::accounts::{self, Organization, Selection};
use engine_core::policy::AccountsSettings;

/// An account a run covers, and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTarget {
    pub id: String,
    /// Its name in the organization, when it was listed.
    pub name: Option<String>,
    /// The role assumed in it; `None` for the account the engine runs in,
    /// reached with its own credentials.
    pub role_arn: Option<String>,
}

impl AccountTarget {
    /// `111111111111 (name)`, for people.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => format!("{} ({n})", self.id),
            _ => self.id.clone(),
        }
    }
}

/// The accounts of a run, resolved with the engine's own connection `base`
/// (in the management account or a delegated administrator when the
/// organization is listed), and those left out with why.
pub async fn resolve(
    settings: &AccountsSettings,
    base: &Aws,
    own: &Identity,
) -> Result<(Vec<AccountTarget>, Vec<(String, String)>), String> {
    let mut org = Organization::default();
    if accounts::needs_organization(settings) {
        let listed = base
            .organization_accounts()
            .await
            .map_err(|e| format!("cannot list the accounts of the organization: {e}"))?;
        org.accounts = listed
            .into_iter()
            .map(|a| accounts::Listed {
                id: a.id,
                name: a.name,
                status: a.status,
            })
            .collect();
        for unit in accounts::units_to_list(settings) {
            let under = base
                .accounts_under(&unit)
                .await
                .map_err(|e| format!("cannot list the accounts under {unit}: {e}"))?;
            org.under.insert(unit, under);
        }
    }
    let Selection { targets, skipped } = accounts::select(settings, &org);
    let targets = targets
        .into_iter()
        .map(|t| AccountTarget {
            role_arn: (t.id != own.account).then(|| settings.role_arn(&t.id)),
            id: t.id,
            name: t.name,
        })
        .collect();
    Ok((targets, skipped))
}

/// Reach `target`: `base` itself for the engine's own account, else the
/// target's role assumed from `base`, which must answer as that account.
pub async fn connect(
    target: &AccountTarget,
    base: &Aws,
    settings: &AccountsSettings,
    session_name: &str,
    observer: Option<Arc<dyn engine_aws::RequestObserver>>,
) -> Result<Aws, String> {
    let Some(role) = &target.role_arn else {
        return Ok(base.clone());
    };
    base.assume_role(
        role,
        session_name,
        settings.external_id.as_deref(),
        observer,
    )
    .await
    .map_err(|e| e.to_string())
}

/// One account's share of a run over many, ready to carry out.
pub struct AccountWork<'a> {
    pub account: &'a str,
    pub doc: &'a crate::document::Document,
    pub plan: &'a engine_core::plan::Plan,
    pub aws: &'a Aws,
    pub own: &'a engine_core::snapshot::Own,
}

/// What carrying out one account's plan did.
pub struct AccountApplied {
    pub account: String,
    /// The journaled run, or why nothing was sent (the journal, the claim).
    pub result: Result<crate::execute::Applied, String>,
}

/// How to carry out a run over many accounts.
pub struct ExecuteAccounts<'a> {
    pub state: &'a std::path::Path,
    pub retention: std::time::Duration,
    /// `apply`, `scheduled`, ...
    pub command: &'a str,
    /// The policies or plan file, for the journal.
    pub target: &'a str,
    /// A saved plan's seal: claimed by the first account's run, before any
    /// other account starts, so that the plan is applied at most once.
    pub claim: Option<&'a str>,
    /// Accounts carried out at once.
    pub accounts_at_once: usize,
    /// Writes in flight at once, per account (IAM's limits are per account).
    pub per_account: usize,
    pub cancel: tokio_util::sync::CancellationToken,
    /// Where owners' messages go (`[notifications]`), from the engine's own account.
    pub notifier: Option<&'a engine_notify::Notifier>,
}

/// Carry out each account's plan as [`crate::execute::apply`] does for one:
/// its own journaled run (which records the account), its own re-checks and
/// writes. Accounts fail alone. Results in the order of `work`.
pub async fn execute_all(
    work: &[AccountWork<'_>],
    how: &ExecuteAccounts<'_>,
) -> Vec<AccountApplied> {
    let mut out = Vec::with_capacity(work.len());
    let mut rest = work;
    if let (Some(mac), Some((first, others))) = (how.claim, work.split_first()) {
        let applied = apply_one(first, how, Some(mac)).await;
        let refused = applied.result.is_err();
        out.push(applied);
        if refused {
            // Not claimed: nothing may be sent anywhere.
            out.extend(others.iter().map(|w| AccountApplied {
                account: w.account.to_string(),
                result: Err("nothing was done: the plan was not claimed".to_string()),
            }));
            return out;
        }
        rest = others;
    }
    let permits = tokio::sync::Semaphore::new(how.accounts_at_once.max(1));
    let mut pending = Vec::with_capacity(rest.len());
    for w in rest {
        pending.push(bounded(&permits, apply_one(w, how, None)));
    }
    out.extend(futures_util::future::join_all(pending).await);
    out
}

/// Run `f` once one of `permits` is free: at most that many at once.
pub(crate) async fn bounded<T>(permits: &tokio::sync::Semaphore, f: impl Future<Output = T>) -> T {
    let _permit = permits.acquire().await;
    f.await
}

async fn apply_one(
    w: &AccountWork<'_>,
    how: &ExecuteAccounts<'_>,
    claim: Option<&str>,
) -> AccountApplied {
    let exec = crate::execute::Execution {
        aws: w.aws,
        own: w.own,
        concurrency: how.per_account,
        cancel: how.cancel.clone(),
        notifier: how.notifier,
    };
    let result = match crate::open_journal(how.state, how.retention) {
        Ok(journal) => {
            crate::execute::apply(
                journal,
                how.command,
                how.target,
                w.doc,
                w.plan,
                claim,
                &exec,
            )
            .await
        }
        Err(e) => Err(format!("cannot open the journal, nothing was done: {e}")),
    };
    if let Err(e) = &result {
        tracing::error!(account = %w.account, "account not carried out: {e}");
    }
    AccountApplied {
        account: w.account.to_string(),
        result,
    }
}
