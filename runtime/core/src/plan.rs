//! The plan: what the plugins asked for, after the host checked every request.
//!
//! Plugins decide, the host acts. A plugin answers with [`Proposal`]s that name
//! a finding by index; [`check_proposals`] turns them into a [`PolicyPlan`]
//! that holds only actions the policy allows, and says why it refused the rest.
//! This is the last gate before anything is deleted, so it is pure and small.

use serde::{Deserialize, Serialize};

use crate::finding::{Credential, Finding, Protection, Stage};
use crate::policy::{Mode, Rule};

/// What a plugin may ask the host to do about one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    DeleteAccessKey,
    DeactivateAccessKey,
    DeleteLoginProfile,
    /// Deliberately do nothing (with a reason).
    None,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::DeleteAccessKey,
        ActionKind::DeactivateAccessKey,
        ActionKind::DeleteLoginProfile,
        ActionKind::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::DeleteAccessKey => "delete-access-key",
            ActionKind::DeactivateAccessKey => "deactivate-access-key",
            ActionKind::DeleteLoginProfile => "delete-login-profile",
            ActionKind::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind changes the account.
    pub fn mutates(self) -> bool {
        !matches!(self, ActionKind::None)
    }

    /// Whether this kind can be applied to that credential.
    pub fn fits(self, credential: Credential) -> bool {
        match self {
            ActionKind::DeleteAccessKey | ActionKind::DeactivateAccessKey => {
                credential.is_access_key()
            }
            ActionKind::DeleteLoginProfile => credential == Credential::Password,
            ActionKind::None => true,
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request of a plugin, before the host checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Index into the findings the plugin was given.
    pub finding: u32,
    pub kind: ActionKind,
    /// Why (required for `none`, optional otherwise).
    pub reason: Option<String>,
    /// A message for the credential's owner (contract 0.2.0).
    pub notify: Option<String>,
}

/// An action the host accepted into the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub policy: std::sync::Arc<str>,
    pub action: ActionKind,
    pub user: crate::name::Name,
    pub arn: crate::name::Name,
    pub credential: Credential,
    pub key_id: Option<String>,
    /// Index of the finding in the policy's findings.
    pub finding: usize,
    pub reason: Option<String>,
    /// The plugin's message for the credential's owner, sent when the plan
    /// is carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

/// Why the host refused a plugin's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyReason {
    /// The action kind does not apply to the credential (e.g. a login profile on a key).
    KindMismatch,
    /// The policy's plugin was not granted that action kind (`[plugin.NAME] allow`).
    NotGranted,
    /// The user is exempt under the policy.
    Exempt,
    /// The root account is never remediated.
    Root,
    /// The engine never acts on its own credentials.
    OwnKey,
    /// The key is listed in the policy's `protect_access_keys`.
    Declared,
    /// An access-key action whose key id could not be resolved unambiguously.
    UnresolvedKey,
    /// The finding is upcoming (within `warn_before_days` of its
    /// threshold): only reported, never acted on.
    Upcoming,
    /// A deactivation of a key the engine already deactivated.
    AlreadyDeactivated,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::KindMismatch => "kind-mismatch",
            DenyReason::NotGranted => "not-granted",
            DenyReason::Exempt => "exempt",
            DenyReason::Root => "root",
            DenyReason::OwnKey => "own-key",
            DenyReason::Declared => "declared",
            DenyReason::UnresolvedKey => "unresolved-key",
            DenyReason::Upcoming => "upcoming",
            DenyReason::AlreadyDeactivated => "already-deactivated",
        }
    }
}

/// A request the host refused, kept visible in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub policy: String,
    pub action: ActionKind,
    pub user: String,
    pub credential: Credential,
    pub key_id: Option<String>,
    pub finding: usize,
    pub reason: DenyReason,
    pub message: String,
}

/// The typed reason a whole policy produced no plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The plugin could not be loaded: missing, bad sha256, not a component, unknown imports.
    Load,
    /// The plugin was built against a contract version this host does not support.
    Version,
    /// The plugin ran past its `timeout_ms`.
    Timeout,
    /// The plugin tried to grow its memory past `memory_mb`.
    MemoryLimit,
    /// The plugin trapped (panic, unreachable, stack overflow...).
    Trap,
    /// The plugin returned something the host cannot accept (bad index, too many actions...).
    InvalidOutput,
    /// The plugin returned an error of its own.
    PluginError,
    /// The plan is larger than `max_actions_per_run`: refused whole.
    BlastRadius,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Load => "load",
            FailureKind::Version => "version",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::Trap => "trap",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::PluginError => "plugin-error",
            FailureKind::BlastRadius => "blast-radius",
        }
    }
}

/// Why a policy's run failed; the other policies still run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// The plan of one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyPlan {
    pub policy: String,
    pub rule: Rule,
    pub mode: Mode,
    /// The plugin that decided (the policy's `action`).
    pub plugin: String,
    pub findings: Vec<Finding>,
    pub actions: Vec<PlannedAction>,
    pub refused: Vec<Refusal>,
    pub failure: Option<PolicyFailure>,
}

/// What the host needs to know about a policy to check its plugin's answer.
#[derive(Debug, Clone)]
pub struct Grants<'a> {
    pub policy: &'a str,
    /// The plugin's name, for messages.
    pub plugin: &'a str,
    /// Action kinds the plugin may use (`none` is always allowed).
    pub allow: &'a [ActionKind],
    /// `max_actions_per_run`; `None` means no cap.
    pub max_actions: Option<u32>,
    /// Whether access-key actions need a resolved key id (true against a live account).
    pub require_key_id: bool,
}

impl<'a> Grants<'a> {
    /// What `policy` of `set` grants its plugin.
    pub fn of(
        set: &'a crate::policy::PolicySet,
        policy: &'a crate::policy::Policy,
        require_key_id: bool,
    ) -> Grants<'a> {
        Grants {
            policy: &policy.name,
            plugin: &policy.action,
            allow: set
                .plugin(&policy.action)
                .map(|p| p.allow.as_slice())
                .unwrap_or_default(),
            max_actions: policy.max_actions_per_run,
            require_key_id,
        }
    }
}

/// Check a plugin's proposals against the policy and its findings.
///
/// Structural problems (an index out of range, two actions for one finding)
/// mean the plugin is broken: the whole policy fails with `InvalidOutput`.
/// Requests the policy does not allow are refused one by one and kept visible.
/// If the accepted actions that change something exceed the blast-radius cap,
/// nothing is planned for the policy at all.
pub fn check_proposals(
    grants: &Grants<'_>,
    findings: &[Finding],
    proposals: &[Proposal],
) -> Result<(Vec<PlannedAction>, Vec<Refusal>), PolicyFailure> {
    let mut seen = vec![false; findings.len()];
    // At most one action per finding: reserved once, not grown.
    let mut actions = Vec::with_capacity(proposals.len().min(findings.len()));
    let mut refused = Vec::new();
    for (n, p) in proposals.iter().enumerate() {
        let idx = p.finding as usize;
        let Some(finding) = findings.get(idx) else {
            return Err(PolicyFailure {
                kind: FailureKind::InvalidOutput,
                message: format!(
                    "action #{n} names finding {idx}, but the plugin was given {} finding(s)",
                    findings.len()
                ),
            });
        };
        if std::mem::replace(&mut seen[idx], true) {
            return Err(PolicyFailure {
                kind: FailureKind::InvalidOutput,
                message: format!("action #{n} names finding {idx} a second time"),
            });
        }
        if p.kind == ActionKind::None {
            actions.push(planned(grants.policy, finding, idx, p));
            continue;
        }
        let deny = if !p.kind.fits(finding.credential) {
            Some((
                DenyReason::KindMismatch,
                format!("{} does not apply to {}", p.kind, finding.credential),
            ))
        } else if !grants.allow.contains(&p.kind) {
            Some((
                DenyReason::NotGranted,
                format!(
                    "{} is not granted to plugin {:?} (allow = [{}])",
                    p.kind,
                    grants.plugin,
                    grants
                        .allow
                        .iter()
                        .map(|k| format!("{:?}", k.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        } else if finding.stage == Stage::Upcoming {
            Some((
                DenyReason::Upcoming,
                format!(
                    "not due yet: it crosses the policy's threshold on {}",
                    finding.due_at().date_naive()
                ),
            ))
        } else if finding.stage == Stage::Deactivated && p.kind == ActionKind::DeactivateAccessKey {
            Some((
                DenyReason::AlreadyDeactivated,
                "the engine deactivated this key already".to_string(),
            ))
        } else if finding.protected == Some(Protection::Root) {
            Some((
                DenyReason::Root,
                "the root account is never remediated".to_string(),
            ))
        } else if finding.protected == Some(Protection::OwnKey) {
            Some((
                DenyReason::OwnKey,
                "this is the engine's own credential (the key it runs with, or a key of the user it runs as)"
                    .to_string(),
            ))
        } else if finding.protected == Some(Protection::Declared) {
            Some((
                DenyReason::Declared,
                "the key is listed in the policy's protect_access_keys".to_string(),
            ))
        } else if finding.exempt {
            Some((
                DenyReason::Exempt,
                format!("user {:?} is exempt under this policy", finding.user()),
            ))
        } else if grants.require_key_id
            && finding.credential.is_access_key()
            && finding.key_id.is_none()
        {
            Some((
                DenyReason::UnresolvedKey,
                "the key id of this slot could not be resolved".to_string(),
            ))
        } else {
            None
        };
        match deny {
            Some((reason, message)) => refused.push(Refusal {
                policy: grants.policy.to_string(),
                action: p.kind,
                user: finding.user().to_string(),
                credential: finding.credential,
                key_id: finding.key_id.clone(),
                finding: idx,
                reason,
                message,
            }),
            None => actions.push(planned(grants.policy, finding, idx, p)),
        }
    }
    let mutating = actions.iter().filter(|a| a.action.mutates()).count();
    if let Some(cap) = grants.max_actions
        && mutating > cap as usize
    {
        return Err(PolicyFailure {
            kind: FailureKind::BlastRadius,
            message: format!(
                "the plan has {mutating} actions, more than max_actions_per_run = {cap}; \
                 nothing will be done for this policy (raise the cap or narrow the policy)"
            ),
        });
    }
    Ok((actions, refused))
}

fn planned(policy: &str, f: &Finding, idx: usize, p: &Proposal) -> PlannedAction {
    PlannedAction {
        // Shared with the finding, not copied: a plan can hold a million.
        policy: if *f.policy == *policy {
            f.policy.clone()
        } else {
            policy.into()
        },
        action: p.kind,
        user: f.names.user_name(),
        arn: f.names.arn_name(),
        credential: f.credential,
        key_id: f.key_id.clone(),
        finding: idx,
        reason: p.reason.clone(),
        notify: p.notify.clone(),
    }
}

/// The whole plan of a run: one [`PolicyPlan`] per policy, in policy-name order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The instant the rules were evaluated at.
    pub now: chrono::DateTime<chrono::Utc>,
    pub policies: Vec<PolicyPlan>,
}

/// Counts over a plan, for summaries and exit codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub policies: usize,
    /// Findings past their threshold (what the rules count; exit code 2).
    pub findings: usize,
    /// Credentials that cross their threshold within `warn_before_days`:
    /// reported, never acted on, not counted in `findings`.
    #[serde(default)]
    pub upcoming: usize,
    /// Keys the engine deactivated earlier, still inactive, pending deletion:
    /// not counted in `findings` (an inactive key breaks no rule).
    #[serde(default)]
    pub deactivated: usize,
    pub exempt: usize,
    pub protected: usize,
    /// Accepted actions that change the account.
    pub changes: usize,
    pub delete_access_key: usize,
    pub deactivate_access_key: usize,
    pub delete_login_profile: usize,
    /// Accepted actions of `mode = "report"` policies: shown, never applied.
    pub report_only: usize,
    /// Deactivations of keys another policy deletes in the same run.
    pub superseded: usize,
    pub refused: usize,
    pub failed_policies: usize,
}

impl Plan {
    /// The accepted actions made redundant by a stronger action on the same
    /// credential under another policy: a key that one policy deletes is not
    /// also deactivated by another. Returns `(policy index, action index)` pairs.
    ///
    /// Only actions that will be applied count as the stronger one: a
    /// `mode = "report"` policy's delete supersedes nothing.
    pub fn superseded(&self) -> std::collections::HashSet<(usize, usize)> {
        let deleted: std::collections::HashSet<(&str, Credential)> = self
            .policies
            .iter()
            .filter(|p| p.mode == Mode::Enforce)
            .flat_map(|p| &p.actions)
            .filter(|a| a.action == ActionKind::DeleteAccessKey)
            .map(|a| (&*a.user, a.credential))
            .collect();
        let mut out = std::collections::HashSet::new();
        for (pi, p) in self.policies.iter().enumerate() {
            for (ai, a) in p.actions.iter().enumerate() {
                if a.action == ActionKind::DeactivateAccessKey
                    && deleted.contains(&(&*a.user, a.credential))
                {
                    out.insert((pi, ai));
                }
            }
        }
        out
    }

    pub fn summary(&self) -> Summary {
        let superseded = self.superseded();
        let mut s = Summary {
            policies: self.policies.len(),
            ..Summary::default()
        };
        for (pi, p) in self.policies.iter().enumerate() {
            for f in &p.findings {
                match f.stage {
                    Stage::Due => s.findings += 1,
                    Stage::Upcoming => s.upcoming += 1,
                    Stage::Deactivated => s.deactivated += 1,
                }
                s.exempt += usize::from(f.exempt);
                s.protected += usize::from(f.protected.is_some());
            }
            s.refused += p.refused.len();
            s.failed_policies += usize::from(p.failure.is_some());
            for (ai, a) in p.actions.iter().enumerate() {
                if !a.action.mutates() {
                    continue;
                }
                if superseded.contains(&(pi, ai)) {
                    s.superseded += 1;
                    continue;
                }
                if p.mode == Mode::Report {
                    s.report_only += 1;
                    continue;
                }
                s.changes += 1;
                match a.action {
                    ActionKind::DeleteAccessKey => s.delete_access_key += 1,
                    ActionKind::DeactivateAccessKey => s.deactivate_access_key += 1,
                    ActionKind::DeleteLoginProfile => s.delete_login_profile += 1,
                    ActionKind::None => {}
                }
            }
        }
        s
    }
}
