//! From policies and a source to a plan: what `check`, `apply` and the
//! daemon share before anything is done.

use std::path::Path;

use chrono::{DateTime, Utc};
use engine_core::PolicySet;
use engine_core::plan::Plan;

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
    let set = req.set;
    let mut snapshot = live::snapshot(set, req.source, req.now).await?;
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
    Ok(Prepared {
        snapshot,
        plan,
        doc,
    })
}
