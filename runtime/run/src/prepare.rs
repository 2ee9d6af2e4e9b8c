//! From policies and a source to a plan: what `check`, `apply` and the
//! daemon share before anything is done.

use std::path::Path;

use chrono::{DateTime, Utc};
use engine_core::PolicySet;
use engine_core::plan::Plan;

use crate::accounts::{self, AccountTarget};
use crate::document::{Document, Source};
use crate::live::{self, Snapshot, SourceSpec};
use crate::plugins::{PluginObserver, Plugins};
use crate::{pipeline, saved};

/// Policies, snapshot and plan.
pub struct Prepared {
    pub snapshot: Snapshot,
    pub plan: Plan,
    pub doc: Document,
}

/// What to plan, from what.
pub struct Request<'a> {
    /// The policies (all of a directory, or the daemon's due ones).
    pub set: &'a PolicySet,
    /// Their plugins, compiled.
    pub plugins: &'a Plugins,
    /// The directory the policies were read from (recorded in the plan).
    pub dir: &'a Path,
    pub source: &'a SourceSpec,
    /// When the rules are evaluated.
    pub now: DateTime<Utc>,
    /// `now` was given by the user against a live account: a what-if whose
    /// plan is never saved or applied.
    pub what_if: bool,
    pub observer: Option<&'a dyn PluginObserver>,
}

/// Take the snapshot, evaluate, let the plugins decide and the host check.
pub async fn prepare(req: Request<'_>) -> Result<Prepared, String> {
    let snapshot = live::snapshot(req.set, req.source, req.now).await?;
    Ok(plan_snapshot(&req, snapshot))
}

/// Evaluate, decide and check a snapshot already taken.
pub fn plan_snapshot(req: &Request<'_>, mut snapshot: Snapshot) -> Prepared {
    let set = req.set;
    tracing::info!(
        policies = set.policies.len(),
        users = snapshot.report.rows.len(),
        source = %snapshot.source,
        "evaluated"
    );
    let mut decider = req.plugins.decider(req.now);
    if let Some(o) = req.observer {
        decider = decider.observed(o);
    }
    let live = snapshot.account.is_some();
    let evaluated = std::mem::take(&mut snapshot.evaluated);
    let plan = pipeline::plan(set, evaluated, req.now, &decider, live);
    let source = match &snapshot.account {
        None => Source {
            report: Some(snapshot.source.clone()),
            ..Source::default()
        },
        Some(a) => Source {
            report: None,
            account: Some(a.identity.account.clone()),
            identity: Some(a.identity.arn.clone()),
            own_key_id: Some(a.identity.access_key_id.clone()).filter(|k| !k.is_empty()),
            report_generated_at: snapshot.generated_at,
            what_if: req.what_if,
            // Only a plan of a live account can be applied: say what it was made from.
            policy_dir: Some(
                std::path::absolute(req.dir)
                    .unwrap_or_else(|_| req.dir.to_path_buf())
                    .display()
                    .to_string(),
            ),
            policy_digest: Some(saved::policy_digest(set)),
            user: snapshot.user.clone(),
        },
    };
    let doc = Document::new(&plan, source);
    Prepared {
        snapshot,
        plan,
        doc,
    }
}

/// One account of a run over many.
pub struct AccountPrepared {
    pub target: AccountTarget,
    /// Its plan, or why there is none (its role could not be assumed, its
    /// report failed, ...).
    pub result: Result<Prepared, String>,
}

/// The accounts of a run over many, each with its plan or its failure.
pub struct AccountsPrepared {
    pub accounts: Vec<AccountPrepared>,
    /// Accounts the organization has that the run leaves out, with why.
    pub skipped: Vec<(String, String)>,
    /// The identity the engine runs as, in its own account.
    pub identity: engine_aws::Identity,
    /// The engine's own connection, in its own account.
    pub base: engine_aws::Aws,
}

/// Plan every account `settings` names, at most `concurrency` at a time,
/// each from its own snapshot; `command` names the run in the STS session
/// name (`engine-COMMAND-TIME`), which CloudTrail shows in each account. An
/// error means no account could be planned (the engine's own credentials,
/// or the organization's listing, failed).
pub async fn prepare_accounts(
    req: Request<'_>,
    settings: &engine_core::policy::AccountsSettings,
    args: &live::AccountOptions,
    concurrency: usize,
    command: &str,
) -> Result<AccountsPrepared, String> {
    let base = live::connect(args).await?;
    let identity = base
        .identity()
        .await
        .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
    let (targets, skipped) = accounts::resolve(settings, &base, &identity).await?;
    for (id, why) in &skipped {
        tracing::info!(account = %id, "account left out: {why}");
    }
    tracing::info!(
        accounts = targets.len(),
        skipped = skipped.len(),
        concurrency,
        "planning every account"
    );
    let session = engine_core::accounts::session_name(command, req.now.timestamp());
    let req = &req;
    let base = &base;
    let session = session.as_str();
    let permits = tokio::sync::Semaphore::new(concurrency.max(1));
    let mut pending = Vec::with_capacity(targets.len());
    for target in targets {
        pending.push(accounts::bounded(
            &permits,
            prepare_account(req, target, base, settings, session, args),
        ));
    }
    let done = futures_util::future::join_all(pending).await;
    Ok(AccountsPrepared {
        accounts: done,
        skipped,
        identity,
        base: base.clone(),
    })
}

/// One account of [`prepare_accounts`]: reach it, take its snapshot, plan.
async fn prepare_account(
    req: &Request<'_>,
    target: AccountTarget,
    base: &engine_aws::Aws,
    settings: &engine_core::policy::AccountsSettings,
    session: &str,
    args: &live::AccountOptions,
) -> AccountPrepared {
    let result = async {
        let aws = accounts::connect(&target, base, settings, session, args.observer.clone()).await?;
        let assumed = target.role_arn.is_some();
        let snapshot = live::live(req.set, aws, req.now, args, assumed).await?;
        let answered = snapshot
            .account
            .as_ref()
            .map(|a| a.identity.account.clone())
            .unwrap_or_default();
        if answered != target.id {
            return Err(format!(
                "the credentials for account {} answered as account {answered}; nothing was planned there",
                target.id
            ));
        }
        Ok(plan_snapshot(req, snapshot))
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(account = %target.id, "account failed: {e}");
    }
    AccountPrepared { target, result }
}
