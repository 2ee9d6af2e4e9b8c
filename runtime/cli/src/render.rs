//! Rendering a plan: a `terraform plan`-like text for people, one JSON
//! document for machines. Both come from the same [`Document`].

use std::io::Write;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use engine_core::plan::{FailureKind, Plan, PlannedAction, PolicyPlan, Refusal, Summary};
use engine_core::{ActionKind, Finding, Mode, PolicyFailure, Protection, Rule};
use serde::{Deserialize, Serialize};

/// Version of the JSON document (`format_version`).
pub const FORMAT_VERSION: u32 = 1;

/// The JSON document `check --format json` prints and `--out` saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub format_version: u32,
    /// When the rules were evaluated.
    pub now: DateTime<Utc>,
    /// Where the credentials came from.
    pub source: Source,
    pub policies: Vec<PolicyEntry>,
    pub findings: Vec<Finding>,
    pub actions: Vec<ActionEntry>,
    pub refused: Vec<RefusalEntry>,
    pub errors: Vec<ErrorEntry>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Source {
    /// The report file, when read from one.
    pub report: Option<String>,
    /// The account id, when read from a live account.
    pub account: Option<String>,
    /// The identity the engine ran as (ARN), when known.
    pub identity: Option<String>,
    /// The access key id the engine ran with, when known (never acted on).
    pub own_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub name: String,
    pub rule: Rule,
    pub mode: Mode,
    pub plugin: String,
    pub failure: Option<PolicyFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionEntry {
    pub policy: String,
    pub action: ActionKind,
    pub user: String,
    pub arn: String,
    pub credential: engine_core::Credential,
    pub key_id: Option<String>,
    /// Index into the document's `findings`.
    pub finding: usize,
    pub reason: Option<String>,
    /// False for `mode = "report"` policies, `none` actions and superseded ones: never applied.
    pub applies: bool,
    /// A deactivation of a key that another policy deletes in the same run.
    pub superseded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalEntry {
    #[serde(flatten)]
    pub refusal: Refusal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEntry {
    pub policy: String,
    pub kind: FailureKind,
    pub message: String,
}

impl Document {
    pub fn new(plan: &Plan, source: Source) -> Document {
        let mut findings = Vec::new();
        let mut actions = Vec::new();
        let mut refused = Vec::new();
        let mut errors = Vec::new();
        let mut policies = Vec::new();
        let superseded = plan.superseded();
        for (pi, p) in plan.policies.iter().enumerate() {
            let offset = findings.len();
            findings.extend(p.findings.iter().cloned());
            actions.extend(p.actions.iter().enumerate().map(|(ai, a)| {
                let sup = superseded.contains(&(pi, ai));
                ActionEntry {
                    policy: a.policy.clone(),
                    action: a.action,
                    user: a.user.clone(),
                    arn: a.arn.clone(),
                    credential: a.credential,
                    key_id: a.key_id.clone(),
                    finding: offset + a.finding,
                    reason: a.reason.clone(),
                    applies: p.mode == Mode::Enforce && a.action.mutates() && !sup,
                    superseded: sup,
                }
            }));
            refused.extend(p.refused.iter().map(|r| {
                let mut r = r.clone();
                r.finding += offset;
                RefusalEntry { refusal: r }
            }));
            if let Some(f) = &p.failure {
                errors.push(ErrorEntry {
                    policy: p.policy.clone(),
                    kind: f.kind,
                    message: f.message.clone(),
                });
            }
            policies.push(PolicyEntry {
                name: p.policy.clone(),
                rule: p.rule,
                mode: p.mode,
                plugin: p.plugin.clone(),
                failure: p.failure.clone(),
            });
        }
        Document {
            format_version: FORMAT_VERSION,
            now: plan.now,
            source,
            policies,
            findings,
            actions,
            refused,
            errors,
            summary: plan.summary(),
        }
    }

    /// Rebuild the plan this document was made from.
    pub fn to_plan(&self) -> Result<Plan, String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "plan format_version {} is not supported (this engine reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let mut policies = Vec::new();
        for entry in &self.policies {
            let idx: Vec<usize> = (0..self.findings.len())
                .filter(|&i| *self.findings[i].policy == *entry.name)
                .collect();
            let local = |global: usize| idx.iter().position(|&i| i == global);
            let mut actions = Vec::new();
            for a in self.actions.iter().filter(|a| a.policy == entry.name) {
                let finding = local(a.finding).ok_or_else(|| {
                    format!(
                        "action on {} {} names finding {} of another policy",
                        a.user, a.credential, a.finding
                    )
                })?;
                let f = &self.findings[a.finding];
                if *f.user != *a.user || f.credential != a.credential || f.key_id != a.key_id {
                    return Err(format!(
                        "action on {} {} does not match its finding {}",
                        a.user, a.credential, a.finding
                    ));
                }
                actions.push(PlannedAction {
                    policy: a.policy.clone(),
                    action: a.action,
                    user: a.user.clone(),
                    arn: a.arn.clone(),
                    credential: a.credential,
                    key_id: a.key_id.clone(),
                    finding,
                    reason: a.reason.clone(),
                });
            }
            let refused = self
                .refused
                .iter()
                .filter(|r| r.refusal.policy == entry.name)
                .map(|r| {
                    let mut r = r.refusal.clone();
                    r.finding = local(r.finding).unwrap_or(r.finding);
                    r
                })
                .collect();
            policies.push(PolicyPlan {
                policy: entry.name.clone(),
                rule: entry.rule,
                mode: entry.mode,
                plugin: entry.plugin.clone(),
                findings: idx.iter().map(|&i| self.findings[i].clone()).collect(),
                actions,
                refused,
                failure: entry.failure.clone(),
            });
        }
        Ok(Plan {
            now: self.now,
            policies,
        })
    }
}

const BOLD: Style = Style::new().bold();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const GREEN: Style = AnsiColor::Green.on_default();
const DIM: Style = Style::new().dimmed();

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// What the host will do (or not) about one finding.
fn verdict(
    p: &PolicyPlan,
    idx: usize,
    f: &Finding,
    superseded: Option<&str>,
) -> (char, Style, String) {
    match f.protected {
        Some(Protection::Root) => return ('!', YELLOW, "never remediated: root account".into()),
        Some(Protection::OwnKey) => {
            return ('!', YELLOW, "never remediated: the engine's own key".into());
        }
        None => {}
    }
    if f.exempt {
        return ('=', DIM, "exempt: no action".into());
    }
    if let Some(fail) = &p.failure {
        return (
            'x',
            RED,
            format!("nothing: policy failed ({})", fail.kind.as_str()),
        );
    }
    if let Some(r) = p.refused.iter().find(|r| r.finding == idx) {
        return (
            'x',
            RED,
            format!(
                "refused {} ({}): {}",
                r.action,
                r.reason.as_str(),
                r.message
            ),
        );
    }
    let Some(a) = p.actions.iter().find(|a| a.finding == idx) else {
        return ('.', DIM, "no action requested by the plugin".into());
    };
    let what = match a.action {
        ActionKind::DeleteAccessKey => "delete access key",
        ActionKind::DeactivateAccessKey => "deactivate access key",
        ActionKind::DeleteLoginProfile => "remove console password",
        ActionKind::None => {
            let why = a.reason.as_deref().unwrap_or("plugin chose no action");
            return ('.', DIM, format!("no action: {why}"));
        }
    };
    if let Some(by) = superseded {
        return ('.', DIM, format!("no need to {what}: deleted under {by:?}"));
    }
    if p.mode == Mode::Report {
        return (
            '~',
            YELLOW,
            format!("would {what} (mode = report: never applied)"),
        );
    }
    if a.action == ActionKind::DeactivateAccessKey {
        ('~', YELLOW, format!("will {what}"))
    } else {
        ('-', RED, format!("will {what}"))
    }
}

/// The `terraform plan`-like text: one line per finding, grouped by policy.
pub fn human(
    out: &mut dyn Write,
    command: &str,
    doc: &Document,
    plan: &Plan,
) -> std::io::Result<()> {
    let s = &doc.summary;
    let from = match (&doc.source.report, &doc.source.account) {
        (Some(r), _) => format!("credential report {r}"),
        (None, Some(a)) => format!("account {a}"),
        (None, None) => "credential report".to_string(),
    };
    writeln!(
        out,
        "{} {} against {from} at {}",
        paint(BOLD, &format!("engine {command}:")),
        plural(s.policies, "policy", "policies"),
        doc.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    if let Some(k) = &doc.source.own_key_id {
        writeln!(
            out,
            "running as {} with access key {k} (never acted on)",
            doc.source
                .identity
                .as_deref()
                .unwrap_or("an unknown identity")
        )?;
    }
    let superseded = plan.superseded();
    for (pi, p) in plan.policies.iter().enumerate() {
        writeln!(out)?;
        let threshold = match p.rule {
            Rule::Cis13 => "max_unused_days",
            Rule::Cis14 => "max_key_age_days",
        };
        let mut head = format!("policy {:?} ({}", p.policy, p.rule);
        if let Some(f) = p.findings.first() {
            head.push_str(&format!(", {threshold} = {}", f.threshold_days));
        }
        head.push_str(&format!(", {}, plugin {})", p.mode.as_str(), p.plugin));
        writeln!(out, "{}", paint(BOLD, &head))?;
        if let Some(fail) = &p.failure {
            writeln!(out, "  {} {fail}", paint(RED, "error:"))?;
        }
        if p.findings.is_empty() {
            writeln!(out, "  {}", paint(GREEN, "no findings"))?;
            continue;
        }
        let cred = |f: &Finding| match &f.key_id {
            Some(k) => format!("{} {k}", f.credential),
            None => f.credential.to_string(),
        };
        let rows: Vec<(char, Style, String, &Finding)> = p
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let by = p
                    .actions
                    .iter()
                    .position(|a| a.finding == i)
                    .filter(|ai| superseded.contains(&(pi, *ai)))
                    .and_then(|_| deleting_policy(plan, f));
                let (sym, style, what) = verdict(p, i, f, by);
                (sym, style, what, f)
            })
            .collect();
        let wu = rows
            .iter()
            .map(|r| r.3.user.chars().count())
            .max()
            .unwrap_or(0);
        let wc = rows.iter().map(|r| cred(r.3).len()).max().unwrap_or(0);
        let ww = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
        for (sym, style, what, f) in &rows {
            let pad = ww.saturating_sub(what.chars().count());
            writeln!(
                out,
                "  {} {:wu$}  {:wc$}  {}{:pad$}  {}",
                paint(*style, &sym.to_string()),
                f.user,
                cred(f),
                paint(*style, what),
                "",
                paint(DIM, &f.reason),
            )?;
        }
    }
    writeln!(out)?;
    let mut line = format!(
        "Plan: {} to delete, {} to deactivate, {} console password{} to remove.",
        s.delete_access_key,
        s.deactivate_access_key,
        s.delete_login_profile,
        if s.delete_login_profile == 1 { "" } else { "s" }
    );
    line.push_str(&format!(
        " {} in {}: {} exempt, {} protected, {} refused",
        plural(s.findings, "finding", "findings"),
        plural(s.policies, "policy", "policies"),
        s.exempt,
        s.protected,
        s.refused
    ));
    if s.superseded > 0 {
        line.push_str(&format!(", {} superseded", s.superseded));
    }
    if s.report_only > 0 {
        line.push_str(&format!(", {} report-only", s.report_only));
    }
    if s.failed_policies > 0 {
        line.push_str(&format!(
            ", {}",
            paint(
                RED,
                &format!("{} failed", plural(s.failed_policies, "policy", "policies"))
            )
        ));
    }
    line.push('.');
    writeln!(out, "{}", paint(BOLD, &line))?;
    Ok(())
}

/// The enforcing policy that deletes the key of `f`, if any.
fn deleting_policy<'p>(plan: &'p Plan, f: &Finding) -> Option<&'p str> {
    plan.policies
        .iter()
        .filter(|p| p.mode == Mode::Enforce)
        .find(|p| {
            p.actions.iter().any(|a| {
                a.action == ActionKind::DeleteAccessKey
                    && *a.user == *f.user
                    && a.credential == f.credential
            })
        })
        .map(|p| p.policy.as_str())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
