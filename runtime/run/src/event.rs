//! One AWS Config compliance event, handled: the daemon's queue consumer and
//! `engine handle-event` are thin callers of [`handle`].
//!
//! An event never says what to do, only whom to look at: a NON_COMPLIANT IAM
//! user under a Config rule a policy declares is a run of that policy for
//! that user alone, from fresh IAM reads ([`SourceSpec::User`]): the same
//! rules, plugins, host checks, re-checks before each write and journal as
//! any run, journaled with the command [`COMMAND`]. Anything else is
//! [`Handled::Ignored`], with why. A duplicate event is harmless: its run
//! finds the credentials already dealt with.
//!
//! The event names the user by id (`AIDA...`); [`UserDirectory`] maps ids to
//! names from `ListUsers` (kept between events, listed again when an id is
//! not in it), and the run refuses a user of that name whose id changed
//! (deleted and created again since).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use engine_aws::Aws;
use engine_core::PolicySet;
use engine_core::event::{self, Event, Ignored, Verdict};
use engine_core::plan::Plan;
use tokio_util::sync::CancellationToken;

use crate::document::Document;
use crate::execute::{self, Applied, Execution};
use crate::live::{self, AccountOptions, SourceSpec};
use crate::plugins::{PluginObserver, Plugins};
use crate::prepare::{Request, prepare};

/// The journal's name for a run made for an event.
pub const COMMAND: &str = "event";

/// An id missing from the directory lists the users again, at most this
/// often: a burst of events for ids that are not users costs one listing.
const MIN_RELIST: Duration = Duration::from_secs(5);

/// User ids to names, from `ListUsers`, with the account they are in.
#[derive(Default)]
pub struct UserDirectory {
    aws: Option<(Aws, String)>,
    names: HashMap<String, String>,
    listed_at: Option<Instant>,
}

impl UserDirectory {
    pub fn new() -> UserDirectory {
        UserDirectory::default()
    }

    /// The connection and the account it is in (`GetCallerIdentity`, once).
    async fn connect(&mut self, account: &AccountOptions) -> Result<(Aws, String), String> {
        if let Some(c) = &self.aws {
            return Ok(c.clone());
        }
        let aws = live::connect(account).await?;
        let identity = aws
            .identity()
            .await
            .map_err(|e| format!("cannot tell who the engine runs as (GetCallerIdentity): {e}"))?;
        self.aws = Some((aws.clone(), identity.account.clone()));
        Ok((aws, identity.account))
    }

    /// The account the engine runs in.
    pub async fn account(&mut self, account: &AccountOptions) -> Result<String, String> {
        self.connect(account).await.map(|(_, a)| a)
    }

    /// The name of the user with id `id`; `None` when no user has it.
    pub async fn name_of(
        &mut self,
        account: &AccountOptions,
        id: &str,
    ) -> Result<Option<String>, String> {
        if let Some(name) = self.names.get(id) {
            return Ok(Some(name.clone()));
        }
        if self.listed_at.is_some_and(|t| t.elapsed() < MIN_RELIST) {
            return Ok(None);
        }
        let (aws, _) = self.connect(account).await?;
        let users = aws
            .list_users()
            .await
            .map_err(|e| format!("cannot list the IAM users (ListUsers): {e}"))?;
        self.names = users.into_iter().collect();
        self.listed_at = Some(Instant::now());
        tracing::debug!(users = self.names.len(), "listed the IAM users");
        Ok(self.names.get(id).cloned())
    }

    /// Drop what is known of `id` (its run failed: the name may be stale).
    pub fn forget(&mut self, id: &str) {
        self.names.remove(id);
        self.listed_at = None;
    }
}

/// What handling an event needs.
pub struct EventContext<'a> {
    /// Every policy of the directory: the event picks its own.
    pub set: &'a PolicySet,
    pub plugins: &'a Plugins,
    pub dir: &'a Path,
    pub account: &'a AccountOptions,
    pub state: &'a Path,
    pub retention: Duration,
    pub observer: Option<&'a dyn PluginObserver>,
    /// Cancelled: start no new action.
    pub cancel: CancellationToken,
    /// Where the event came from (`message ID`, a file), for the journal.
    pub origin: &'a str,
    /// Plan only: nothing is journaled or carried out.
    pub dry_run: bool,
}

/// A run made for an event.
pub struct EventRun {
    /// The user, as IAM spells the name, and its id.
    pub user: String,
    pub user_id: String,
    /// The policies that declare the event's Config rule.
    pub policies: Vec<String>,
    pub doc: Document,
    pub plan: Plan,
    /// What was carried out; `None` for a dry run.
    pub applied: Option<Applied>,
}

/// What came of an event.
pub enum Handled {
    /// Nothing to do, and why.
    Ignored(Ignored),
    /// A run of the policies for the user.
    Ran(Box<EventRun>),
}

/// An event that could not be handled now (AWS unreachable, a write
/// failed, ...): worth trying again later.
#[derive(Debug)]
pub struct EventFailure {
    /// The journaled run, when one was started.
    pub run: Option<i64>,
    pub error: String,
}

/// The policies named in `names`, with every plugin.
pub fn subset(set: &PolicySet, names: &[String]) -> PolicySet {
    PolicySet {
        policies: set
            .policies
            .iter()
            .filter(|p| names.contains(&p.name))
            .cloned()
            .collect(),
        plugins: set.plugins.clone(),
        digest: set.digest.clone(),
        aws_config: set.aws_config.clone(),
        accounts: set.accounts.clone(),
        security_hub: set.security_hub.clone(),
        notifications: set.notifications.clone(),
    }
}

/// Handle one event. Classified first, without any AWS call; then the
/// account is checked, the user id resolved, and the declaring policies run
/// for that user alone, journaled as [`COMMAND`].
pub async fn handle(
    ev: &Event,
    ctx: &EventContext<'_>,
    users: &mut UserDirectory,
) -> Result<Handled, EventFailure> {
    let (policies, user_id) = match event::classify(ev, ctx.set) {
        Verdict::Ignore(why) => return Ok(Handled::Ignored(why)),
        Verdict::Run { policies, user_id } => (policies, user_id),
    };
    let Event::Compliance(change) = ev else {
        // classify runs only compliance changes.
        return Err(EventFailure {
            run: None,
            error: "not a compliance change".into(),
        });
    };
    let fail = |error: String| EventFailure { run: None, error };
    let account = users.account(ctx.account).await.map_err(fail)?;
    if let Err(why) = event::check_account(change, &account) {
        return Ok(Handled::Ignored(why));
    }
    let Some(user) = users.name_of(ctx.account, &user_id).await.map_err(fail)? else {
        return Ok(Handled::Ignored(Ignored::UserGone(user_id)));
    };
    let result = run(ctx, &policies, &user, &user_id, &change.rule_name).await;
    if result.is_err() {
        users.forget(&user_id);
    }
    result.map(|r| Handled::Ran(Box::new(r)))
}

async fn run(
    ctx: &EventContext<'_>,
    policies: &[String],
    user: &str,
    user_id: &str,
    rule: &str,
) -> Result<EventRun, EventFailure> {
    let set = subset(ctx.set, policies);
    let source = SourceSpec::User {
        account: ctx.account.clone(),
        user: user.to_string(),
        user_id: Some(user_id.to_string()),
    };
    let target = format!(
        "{} ({}: AWS Config rule {rule} NON_COMPLIANT for {user} {user_id})",
        ctx.dir.display(),
        ctx.origin
    );
    tracing::info!(user, user_id, rule, policies = %policies.join(","), origin = ctx.origin, "event: running for one user");
    let prepared = tokio::select! {
        p = prepare(Request {
            set: &set,
            plugins: ctx.plugins,
            dir: ctx.dir,
            source: &source,
            now: Utc::now(),
            what_if: false,
            observer: ctx.observer,
        }) => p,
        _ = ctx.cancel.cancelled() => Err("stopped before the plan was made: nothing was done".to_string()),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(error) => {
            let run = if ctx.dry_run {
                None
            } else {
                crate::journal_failed_run(ctx.state, ctx.retention, None, COMMAND, &target, &error)
            };
            return Err(EventFailure { run, error });
        }
    };
    let mut out = EventRun {
        user: prepared
            .snapshot
            .user
            .clone()
            .unwrap_or_else(|| user.to_string()),
        user_id: user_id.to_string(),
        policies: policies.to_vec(),
        doc: prepared.doc,
        plan: prepared.plan,
        applied: None,
    };
    if ctx.dry_run {
        return Ok(out);
    }
    let Some(account) = prepared.snapshot.account.as_ref() else {
        return Err(EventFailure {
            run: None,
            error: "the snapshot has no account".into(),
        });
    };
    let journal = crate::open_journal(ctx.state, ctx.retention).map_err(|e| EventFailure {
        run: None,
        error: format!("cannot open the journal, nothing was done: {e}"),
    })?;
    // Owners' messages (`[notifications]`), with the engine's own credentials.
    let notifier = crate::notices::notifier(ctx.set, &account.aws);
    let exec = Execution {
        aws: &account.aws,
        own: &account.own,
        concurrency: usize::from(ctx.account.concurrency),
        cancel: ctx.cancel.clone(),
        notifier: notifier.as_ref(),
    };
    let applied = execute::apply(journal, COMMAND, &target, &out.doc, &out.plan, None, &exec)
        .await
        .map_err(|error| EventFailure { run: None, error })?;
    out.applied = Some(applied);
    Ok(out)
}
