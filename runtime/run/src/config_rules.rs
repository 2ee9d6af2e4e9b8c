//! AWS Config rules declared by the policies: planned against the region's
//! rules and carried out, Terraform-style.
//!
//! [`attach`] adds the rule changes to a plan's [`Document`]: from a report
//! file, the desired rules only ("not compared"); from the live account, the
//! [`engine_core::config_rule::diff`] of the declared rules, the rules AWS
//! Config has, and the rules the engine manages. [`apply`] carries the
//! changes out and records what the engine manages in
//! `<state>/config-rules.json` (written to a temporary file, then renamed).
//! The rules it creates are also tagged `managed-by = engine`; a rule is the
//! engine's when it is recorded or so tagged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use engine_awsconfig::{AwsConfig, ConfigOptions};
use engine_core::PolicySet;
use engine_core::config_rule::{self, ActualRule, ManagedRecord, RuleChange, desired_config_rules};
use serde::{Deserialize, Serialize};

use crate::document::Document;
use crate::live::SourceSpec;

/// The file in the state directory that records the engine's Config rules.
pub const STATE_FILE: &str = "config-rules.json";
const STATE_VERSION: u32 = 1;

/// One Config rule change of a plan, as the JSON document has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRuleEntry {
    pub region: String,
    #[serde(flatten)]
    pub change: RuleChange,
}

/// What the state directory records: per region, the engine's rules and
/// what it last put.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    regions: BTreeMap<String, BTreeMap<String, ManagedRecord>>,
}

fn read_state(state: &Path) -> Result<StateFile, String> {
    let path = state.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not readable: {e}", path.display()))?;
            if file.version > STATE_VERSION {
                return Err(format!(
                    "{} was written by a newer engine (version {}); this one reads {STATE_VERSION}",
                    path.display(),
                    file.version
                ));
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile {
            version: STATE_VERSION,
            regions: BTreeMap::new(),
        }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The rules the engine manages in `region`, as recorded in `state`.
pub fn managed(state: &Path, region: &str) -> Result<BTreeMap<String, ManagedRecord>, String> {
    Ok(read_state(state)?
        .regions
        .remove(region)
        .unwrap_or_default())
}

/// Record the rules the engine manages in `region`: written to a temporary
/// file in `state`, flushed, then renamed over the old one.
pub fn record(
    state: &Path,
    region: &str,
    rules: &BTreeMap<String, ManagedRecord>,
) -> Result<(), String> {
    let mut file = read_state(state)?;
    file.version = STATE_VERSION;
    if rules.is_empty() {
        file.regions.remove(region);
    } else {
        file.regions.insert(region.to_string(), rules.clone());
    }
    std::fs::create_dir_all(state)
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    let path = state.join(STATE_FILE);
    let tmp = state.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}

/// The region of the Config rules: the policies' `[aws_config]`, else the
/// only region the state records (the policies dropped the table, and with
/// it every rule: those the engine made are deleted there).
fn region(set: &PolicySet, state: &Path) -> Result<Option<String>, String> {
    if let Some(c) = &set.aws_config {
        return Ok(Some(c.region.clone()));
    }
    let file = read_state(state)?;
    Ok(file.regions.keys().next().cloned())
}

/// The Config rule changes of a policy set, and how to carry them out.
#[derive(Default)]
pub struct RulesPlan {
    pub entries: Vec<ConfigRuleEntry>,
    pub warnings: Vec<String>,
    /// The connection to AWS Config, when the account was compared.
    pub conn: Option<AwsConfig>,
}

/// Plan the Config rules of `set`: against the account's rules when the
/// source is the whole account, else the declared rules only ("not
/// compared"). A Config error does not fail the plan: its rules are shown as
/// not compared, with the error as a warning. Nothing is read when no rule
/// is declared and the state records none.
pub async fn plan_rules(set: &PolicySet, source: &SourceSpec, state: &Path) -> RulesPlan {
    let desired = desired_config_rules(set);
    let region = match region(set, state) {
        Ok(Some(r)) => r,
        Ok(None) => return RulesPlan::default(),
        Err(e) => {
            return RulesPlan {
                warnings: vec![e],
                ..RulesPlan::default()
            };
        }
    };
    let not_compared = || -> Vec<ConfigRuleEntry> {
        desired
            .iter()
            .map(|d| ConfigRuleEntry {
                region: region.clone(),
                change: RuleChange::NotCompared { rule: d.clone() },
            })
            .collect()
    };
    let SourceSpec::Account(args) = source else {
        return RulesPlan {
            entries: not_compared(),
            ..RulesPlan::default()
        };
    };
    match compare(&desired, &region, args, state).await {
        Ok((changes, warnings, conn)) => RulesPlan {
            entries: changes
                .into_iter()
                .map(|change| ConfigRuleEntry {
                    region: region.clone(),
                    change,
                })
                .collect(),
            warnings,
            conn: Some(conn),
        },
        Err(e) => RulesPlan {
            entries: not_compared(),
            warnings: vec![format!("AWS Config rules not compared: {e}")],
            conn: None,
        },
    }
}

/// Plan the Config rules and put them in `doc` (`config_rules`, and
/// `config_warnings`). Returns the connection to AWS Config when the account
/// was compared, for [`apply`].
pub async fn attach(
    doc: &mut Document,
    set: &PolicySet,
    source: &SourceSpec,
    state: &Path,
) -> Option<AwsConfig> {
    let plan = plan_rules(set, source, state).await;
    doc.config_rules = plan.entries;
    doc.config_warnings.extend(plan.warnings);
    plan.conn
}

/// Journal the Config rule writes as a run of their own
/// (`apply-config-rules`) whose summary lists each result; failed if a write
/// failed or `also_failed`. Nothing is journaled without results.
pub fn journal(
    j: &mut engine_journal::Journal,
    target: &str,
    rules: &[RuleResult],
    also_failed: bool,
) -> Result<Option<i64>, engine_journal::JournalError> {
    if rules.is_empty() {
        return Ok(None);
    }
    let failed = also_failed || rules.iter().any(|r| r.outcome == "failed");
    let summary = serde_json::json!({ "config_rules": rules }).to_string();
    let run = j.start_run(JOURNAL_COMMAND, target, &[])?;
    let status = if failed {
        engine_journal::RunStatus::Failed
    } else {
        engine_journal::RunStatus::Ok
    };
    j.finish_run(run, status, &summary)?;
    Ok(Some(run))
}

/// The journal's name for a run of Config rule writes.
pub const JOURNAL_COMMAND: &str = "apply-config-rules";

/// What [`reconcile`] did.
pub struct Reconciled {
    pub entries: Vec<ConfigRuleEntry>,
    pub warnings: Vec<String>,
    pub results: Vec<RuleResult>,
    /// The journaled run of the writes, if any.
    pub run: Option<i64>,
}

/// Make AWS Config match the rules `set` declares, as `engine apply DIR`
/// does: plan against the account, carry out the writes, record what the
/// engine manages, journal the writes. For the daemon (at start, after a
/// reload, and with each scheduled run). `None` when there is nothing to
/// compare (no declared or recorded rule).
pub async fn reconcile(
    set: &PolicySet,
    account: &crate::live::AccountOptions,
    state: &Path,
    retention: std::time::Duration,
    target: &str,
) -> Option<Reconciled> {
    let plan = plan_rules(set, &SourceSpec::Account(account.clone()), state).await;
    if plan.entries.is_empty() && plan.warnings.is_empty() && plan.conn.is_none() {
        return None;
    }
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let results = match &plan.conn {
        Some(conn) => apply(conn, &plan.entries, state).await,
        None => Vec::new(),
    };
    let run = if results.is_empty() {
        None
    } else {
        match crate::open_journal(state, retention)
            .and_then(|mut j| journal(&mut j, target, &results, false))
        {
            Ok(run) => run,
            Err(e) => {
                tracing::warn!("the AWS Config rule writes were not journaled: {e}");
                None
            }
        }
    };
    Some(Reconciled {
        entries: plan.entries,
        warnings: plan.warnings,
        results,
        run,
    })
}

async fn compare(
    desired: &[config_rule::DesiredRule],
    region: &str,
    args: &crate::live::AccountOptions,
    state: &Path,
) -> Result<(Vec<RuleChange>, Vec<String>, AwsConfig), String> {
    let managed = managed(state, region)?;
    let conn = AwsConfig::connect(&ConfigOptions {
        profile: args.profile.clone(),
        region: region.to_string(),
        endpoint_url: None,
        max_attempts: args.max_attempts,
    })
    .await
    .map_err(|e| e.to_string())?;
    let names = config_rule::names_to_read(desired, &managed);
    let actual: Vec<ActualRule> = conn
        .rules(&names)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| ActualRule {
            name: r.name,
            arn: r.arn,
            owner: r.owner,
            source_identifier: r.source_identifier,
            parameters: r.parameters,
            tagged: r.tagged,
        })
        .collect();
    let changes = config_rule::diff(desired, &actual, &managed);
    let mut warnings = Vec::new();
    if !desired.is_empty() {
        match conn.recorders().await {
            Ok(recorders) => {
                if !recorders.iter().any(|r| r.recording && r.records_iam_users) {
                    let why = if recorders.is_empty() {
                        "there is no configuration recorder".to_string()
                    } else {
                        format!(
                            "no configuration recorder records IAM users ({})",
                            recorders
                                .iter()
                                .map(|r| format!(
                                    "{}: {}{}",
                                    r.name,
                                    if r.recording { "recording" } else { "stopped" },
                                    if r.records_iam_users {
                                        ""
                                    } else {
                                        ", without AWS::IAM::User"
                                    }
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    };
                    warnings.push(format!(
                        "{why} in {region}: the AWS Config rules there evaluate nothing until one records AWS::IAM::User"
                    ));
                }
            }
            Err(e) => warnings.push(format!("cannot tell whether IAM users are recorded: {e}")),
        }
    }
    Ok((changes, warnings, conn))
}

/// What applying one Config rule change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleResult {
    pub region: String,
    pub name: String,
    /// `create`, `update`, `delete`.
    pub change: String,
    /// `done`, `already-gone` (a delete of a rule someone removed) or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Carry out the writes among `entries` (one region's), one at a time, and
/// record what the engine manages afterwards. Results of the writes only.
pub async fn apply(conn: &AwsConfig, entries: &[ConfigRuleEntry], state: &Path) -> Vec<RuleResult> {
    let region = conn.region().to_string();
    let changes: Vec<RuleChange> = entries
        .iter()
        .filter(|e| e.region == region)
        .map(|e| e.change.clone())
        .collect();
    let mut ok = Vec::with_capacity(changes.len());
    let mut results = Vec::new();
    for c in &changes {
        let outcome = match c {
            RuleChange::Create { rule, .. } | RuleChange::Update { rule, .. } => conn
                .put_rule(&rule.name, &rule.source_identifier, &rule.parameters)
                .await
                .map(|()| "done"),
            RuleChange::Delete { name, .. } => conn
                .delete_rule(name)
                .await
                .map(|existed| if existed { "done" } else { "already-gone" }),
            _ => {
                ok.push(true);
                continue;
            }
        };
        let (outcome, detail) = match outcome {
            Ok(o) => (o, String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        tracing::info!(
            region = %region,
            rule = %c.name(),
            change = c.kind(),
            outcome,
            "AWS Config rule"
        );
        ok.push(outcome != "failed");
        results.push(RuleResult {
            region: region.clone(),
            name: c.name().to_string(),
            change: c.kind().to_string(),
            outcome: outcome.to_string(),
            detail,
        });
    }
    let recorded = managed(state, &region)
        .map(|m| config_rule::record_applied(m, &changes, &ok))
        .and_then(|m| record(state, &region, &m));
    if let Err(e) = recorded {
        tracing::error!("the engine's AWS Config rules were not recorded: {e}");
        results.push(RuleResult {
            region,
            name: STATE_FILE.to_string(),
            change: "record".into(),
            outcome: "failed".into(),
            detail: e,
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(days: u32) -> ManagedRecord {
        ManagedRecord {
            source_identifier: "ACCESS_KEYS_ROTATED".into(),
            parameters: BTreeMap::from([("maxAccessKeyAge".into(), days.to_string())]),
        }
    }

    #[test]
    fn records_round_trip_per_region() {
        let dir = std::env::temp_dir().join(format!("engine-config-rules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(managed(&dir, "eu-west-1").is_ok_and(|m| m.is_empty()));
        let eu = BTreeMap::from([("a".to_string(), rec(90))]);
        let us = BTreeMap::from([("b".to_string(), rec(30))]);
        assert_eq!(record(&dir, "eu-west-1", &eu), Ok(()));
        assert_eq!(record(&dir, "us-east-1", &us), Ok(()));
        assert_eq!(managed(&dir, "eu-west-1"), Ok(eu));
        assert_eq!(managed(&dir, "us-east-1"), Ok(us));
        assert_eq!(record(&dir, "us-east-1", &BTreeMap::new()), Ok(()));
        let file = read_state(&dir).map(|f| f.regions.into_keys().collect::<Vec<_>>());
        assert_eq!(file, Ok(vec!["eu-west-1".to_string()]));
        let leftovers = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "no temporary file left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
