//! AWS Config compliance events, as EventBridge delivers them.
//!
//! The pipeline the engine replaces reacts to `Config Rules Compliance
//! Change` events; the engine can too, without trusting them. An event only
//! says *which* user to look at and under which Config rule: what is done
//! comes from fresh IAM reads and the same rules, plugins and host checks as
//! any run. This module is the pure part: [`parse`] reads a message body
//! (the event itself, or the event inside an SNS envelope) and [`classify`]
//! decides, from the policies, whether it calls for a run and of which
//! policies.
//!
//! For `AWS::IAM::User` the event's `resourceId` is the user's *id*
//! (`AIDA...`), not its name: the caller resolves it, and checks that the user
//! it reads still has that id.

use serde_json::Value;

use crate::config_rule::IAM_USER;
use crate::policy::PolicySet;

/// The `detail-type` of a Config rule compliance change.
pub const COMPLIANCE_CHANGE: &str = "Config Rules Compliance Change";
/// The `source` of events AWS Config sends.
pub const CONFIG_SOURCE: &str = "aws.config";

/// How AWS Config judged a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compliance {
    NonCompliant,
    Compliant,
    NotApplicable,
    InsufficientData,
    /// A value this engine does not know, as sent.
    Other(String),
}

impl Compliance {
    fn parse(s: &str) -> Compliance {
        match s {
            "NON_COMPLIANT" => Compliance::NonCompliant,
            "COMPLIANT" => Compliance::Compliant,
            "NOT_APPLICABLE" => Compliance::NotApplicable,
            "INSUFFICIENT_DATA" => Compliance::InsufficientData,
            other => Compliance::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Compliance::NonCompliant => "NON_COMPLIANT",
            Compliance::Compliant => "COMPLIANT",
            Compliance::NotApplicable => "NOT_APPLICABLE",
            Compliance::InsufficientData => "INSUFFICIENT_DATA",
            Compliance::Other(s) => s,
        }
    }
}

/// A `Config Rules Compliance Change` event, the fields the engine reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceChange {
    /// The event's `id`, when it has one (for logs and the journal).
    pub id: Option<String>,
    /// `detail.configRuleName`.
    pub rule_name: String,
    /// `detail.resourceType`, e.g. `AWS::IAM::User`.
    pub resource_type: String,
    /// `detail.resourceId`: for an IAM user, its id (`AIDA...`).
    pub resource_id: String,
    /// `detail.awsAccountId`, else the event's `account`.
    pub account: String,
    /// The event's `region`, when given.
    pub region: Option<String>,
    /// `detail.newEvaluationResult.complianceType`.
    pub compliance: Compliance,
}

/// What a message body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A Config rule compliance change.
    Compliance(ComplianceChange),
    /// A well-formed EventBridge event of another kind (another
    /// `detail-type` or `source`): nothing for the engine.
    Other { source: String, detail_type: String },
}

/// Why a message body is not an event the engine can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Read a message body: an EventBridge event, or one wrapped in an SNS
/// notification (`{"Type": "Notification", "Message": "<event>"}`), as a
/// queue subscribed to an SNS topic receives it.
pub fn parse(body: &[u8]) -> Result<Event, Malformed> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("the message is not JSON: {e}")))?;
    let value = match unwrap_sns(&value)? {
        Some(inner) => inner,
        None => value,
    };
    let Value::Object(event) = &value else {
        return Err(Malformed("the message is not a JSON object".into()));
    };
    let text = |v: Option<&Value>, what: &str| -> Result<String, Malformed> {
        match v {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(Malformed(format!("{what} is empty"))),
            Some(_) => Err(Malformed(format!("{what} is not a string"))),
            None => Err(Malformed(format!("the event has no {what}"))),
        }
    };
    let source = text(event.get("source"), "`source`")?;
    let detail_type = text(event.get("detail-type"), "`detail-type`")?;
    if source != CONFIG_SOURCE || detail_type != COMPLIANCE_CHANGE {
        return Ok(Event::Other {
            source,
            detail_type,
        });
    }
    let Some(Value::Object(detail)) = event.get("detail") else {
        return Err(Malformed(
            "a Config Rules Compliance Change event without a `detail` object".into(),
        ));
    };
    let rule_name = text(detail.get("configRuleName"), "`detail.configRuleName`")?;
    let resource_type = text(detail.get("resourceType"), "`detail.resourceType`")?;
    let resource_id = text(detail.get("resourceId"), "`detail.resourceId`")?;
    let account = match detail.get("awsAccountId") {
        Some(v) => text(Some(v), "`detail.awsAccountId`")?,
        None => text(event.get("account"), "`account`")?,
    };
    let compliance = detail
        .get("newEvaluationResult")
        .and_then(|r| r.get("complianceType"));
    let compliance = Compliance::parse(&text(
        compliance,
        "`detail.newEvaluationResult.complianceType`",
    )?);
    let optional = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    Ok(Event::Compliance(ComplianceChange {
        id: optional(event.get("id")),
        rule_name,
        resource_type,
        resource_id,
        account,
        region: optional(event.get("region")),
        compliance,
    }))
}

/// The event inside an SNS notification, if `value` is one.
fn unwrap_sns(value: &Value) -> Result<Option<Value>, Malformed> {
    let (Some(Value::String(kind)), Some(message)) = (value.get("Type"), value.get("Message"))
    else {
        return Ok(None);
    };
    if kind != "Notification" {
        return Ok(None);
    }
    let Value::String(message) = message else {
        return Err(Malformed(
            "the SNS notification's Message is not a string".into(),
        ));
    };
    serde_json::from_str(message)
        .map(Some)
        .map_err(|e| Malformed(format!("the SNS notification's Message is not JSON: {e}")))
}

/// Why an event calls for nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Not a Config rule compliance change.
    NotCompliance { source: String, detail_type: String },
    /// The resource became compliant (or not applicable, ...): nothing to do.
    NotNonCompliant(Compliance),
    /// No policy declares this Config rule.
    UnknownRule(String),
    /// Not an IAM user.
    NotAUser(String),
    /// For an account the engine does not run in.
    OtherAccount { event: String, engine: String },
    /// No IAM user of the account has this id (any more).
    UserGone(String),
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::NotCompliance {
                source,
                detail_type,
            } => write!(
                f,
                "not a Config rule compliance change (source {source:?}, detail-type {detail_type:?})"
            ),
            Ignored::NotNonCompliant(c) => write!(f, "the resource is now {}", c.as_str()),
            Ignored::UnknownRule(r) => write!(f, "no policy declares the AWS Config rule {r:?}"),
            Ignored::NotAUser(t) => write!(f, "the resource is a {t}, not an IAM user"),
            Ignored::OtherAccount { event, engine } => write!(
                f,
                "the event is for account {event}, and the engine runs in account {engine}"
            ),
            Ignored::UserGone(id) => {
                write!(f, "no IAM user has id {id}: it was deleted since the event")
            }
        }
    }
}

impl Ignored {
    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Ignored::NotCompliance { .. } => "not-compliance-change",
            Ignored::NotNonCompliant(_) => "not-non-compliant",
            Ignored::UnknownRule(_) => "unknown-rule",
            Ignored::NotAUser(_) => "not-iam-user",
            Ignored::OtherAccount { .. } => "other-account",
            Ignored::UserGone(_) => "user-gone",
        }
    }
}

/// What an event calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run these policies (by name, sorted) for the user with this id.
    Run {
        policies: Vec<String>,
        user_id: String,
    },
    Ignore(Ignored),
}

/// Decide what `event` calls for under `set`, before any AWS call: a
/// NON_COMPLIANT IAM user under a Config rule a policy declares is a run of
/// that policy for that user. The account is checked by the caller once it
/// knows who it runs as ([`check_account`]).
pub fn classify(event: &Event, set: &PolicySet) -> Verdict {
    let change = match event {
        Event::Other {
            source,
            detail_type,
        } => {
            return Verdict::Ignore(Ignored::NotCompliance {
                source: source.clone(),
                detail_type: detail_type.clone(),
            });
        }
        Event::Compliance(c) => c,
    };
    if change.compliance != Compliance::NonCompliant {
        return Verdict::Ignore(Ignored::NotNonCompliant(change.compliance.clone()));
    }
    let policies: Vec<String> = set
        .policies
        .iter()
        .filter(|p| {
            p.aws_config_rule
                .as_ref()
                .is_some_and(|d| d.name == change.rule_name)
        })
        .map(|p| p.name.clone())
        .collect();
    if policies.is_empty() {
        return Verdict::Ignore(Ignored::UnknownRule(change.rule_name.clone()));
    }
    if change.resource_type != IAM_USER {
        return Verdict::Ignore(Ignored::NotAUser(change.resource_type.clone()));
    }
    Verdict::Run {
        policies,
        user_id: change.resource_id.clone(),
    }
}

/// The event's account must be the one the engine runs in.
pub fn check_account(change: &ComplianceChange, engine_account: &str) -> Result<(), Ignored> {
    if change.account == engine_account {
        Ok(())
    } else {
        Err(Ignored::OtherAccount {
            event: change.account.clone(),
            engine: engine_account.to_string(),
        })
    }
}
