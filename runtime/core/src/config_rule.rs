//! AWS Config rules, Terraform-style: the managed rule each policy declares
//! (`aws_config_rule`), what the account has, and the changes between them.
//!
//! Everything here is pure: [`desired_config_rules`] reads the policy set,
//! [`diff`] compares it with the rules read from AWS Config and the rules the
//! engine manages (recorded in its state directory, or tagged
//! `managed-by = engine`). The engine changes or deletes only rules it
//! manages; a rule of the same name it did not create is left alone unless
//! the policy adopts it (`adopt_aws_config_rule = true`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::policy::{PolicySet, Rule};

/// The tag the engine puts on the rules it creates.
pub const MANAGED_TAG_KEY: &str = "managed-by";
pub const MANAGED_TAG_VALUE: &str = "engine";
/// The owner of AWS managed rules.
pub const AWS_OWNER: &str = "AWS";
/// The resource type both rules evaluate.
pub const IAM_USER: &str = "AWS::IAM::User";

/// An AWS Config managed rule that mirrors one of the engine's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManagedRule {
    /// `ACCESS_KEYS_ROTATED`, mirrors cis-1.4.
    AccessKeysRotated,
    /// `IAM_USER_UNUSED_CREDENTIALS_CHECK`, mirrors cis-1.3.
    IamUserUnusedCredentialsCheck,
}

impl ManagedRule {
    pub const ALL: [ManagedRule; 2] = [
        ManagedRule::AccessKeysRotated,
        ManagedRule::IamUserUnusedCredentialsCheck,
    ];

    /// The value of `aws_config_rule`.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedRule::AccessKeysRotated => "access-keys-rotated",
            ManagedRule::IamUserUnusedCredentialsCheck => "iam-user-unused-credentials-check",
        }
    }

    pub fn parse(s: &str) -> Option<ManagedRule> {
        ManagedRule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The rule's `SourceIdentifier`.
    pub fn source_identifier(self) -> &'static str {
        match self {
            ManagedRule::AccessKeysRotated => "ACCESS_KEYS_ROTATED",
            ManagedRule::IamUserUnusedCredentialsCheck => "IAM_USER_UNUSED_CREDENTIALS_CHECK",
        }
    }

    /// The input parameter that carries the threshold in days.
    pub fn parameter(self) -> &'static str {
        match self {
            ManagedRule::AccessKeysRotated => "maxAccessKeyAge",
            ManagedRule::IamUserUnusedCredentialsCheck => "maxCredentialUsageAge",
        }
    }

    /// The engine rule this Config rule mirrors.
    pub fn mirrors(self) -> Rule {
        match self {
            ManagedRule::AccessKeysRotated => Rule::Cis14,
            ManagedRule::IamUserUnusedCredentialsCheck => Rule::Cis13,
        }
    }
}

/// What a policy says about its Config rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRuleDecl {
    pub rule: ManagedRule,
    /// The rule's `ConfigRuleName` (default `engine-<policy name>`).
    pub name: String,
    /// `adopt_aws_config_rule`: take over an existing rule of that name.
    pub adopt: bool,
}

/// A Config rule as the policies want it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRule {
    pub name: String,
    /// The policy that declares it.
    pub policy: String,
    pub source_identifier: String,
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub adopt: bool,
}

/// A Config rule as AWS Config has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualRule {
    pub name: String,
    pub arn: String,
    /// `AWS` for managed rules.
    pub owner: String,
    pub source_identifier: String,
    /// `InputParameters`, every value as a string.
    pub parameters: BTreeMap<String, String>,
    /// Tagged `managed-by = engine`.
    pub tagged: bool,
}

/// What the engine recorded about a rule it manages: what it last put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedRecord {
    pub source_identifier: String,
    pub parameters: BTreeMap<String, String>,
}

impl From<&DesiredRule> for ManagedRecord {
    fn from(d: &DesiredRule) -> ManagedRecord {
        ManagedRecord {
            source_identifier: d.source_identifier.clone(),
            parameters: d.parameters.clone(),
        }
    }
}

/// One difference between the policies and AWS Config, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum RuleChange {
    /// `PutConfigRule`, tagged. `recreate`: the engine had created it and it
    /// was deleted outside the engine.
    Create { rule: DesiredRule, recreate: bool },
    /// `PutConfigRule` over an existing rule. `drift`: it was changed outside
    /// the engine since the engine last put it; `adopt`: it was not the
    /// engine's, and the policy adopts it.
    Update {
        rule: DesiredRule,
        from_source_identifier: String,
        from_parameters: BTreeMap<String, String>,
        drift: bool,
        adopt: bool,
    },
    /// `DeleteConfigRule`: the engine's rule, no longer declared.
    Delete {
        name: String,
        source_identifier: String,
        parameters: BTreeMap<String, String>,
    },
    /// As declared: nothing to do.
    Unchanged { rule: DesiredRule },
    /// A rule of that name exists and is not the engine's: left alone.
    Unmanaged {
        rule: DesiredRule,
        source_identifier: String,
        parameters: BTreeMap<String, String>,
    },
    /// Recorded as the engine's, no longer declared and already gone: the
    /// record is dropped, nothing is sent.
    Forget { name: String },
    /// Not compared with AWS Config (the plan was made from a report file).
    NotCompared { rule: DesiredRule },
}

impl RuleChange {
    /// The rule's name.
    pub fn name(&self) -> &str {
        match self {
            RuleChange::Create { rule, .. }
            | RuleChange::Update { rule, .. }
            | RuleChange::Unchanged { rule }
            | RuleChange::Unmanaged { rule, .. }
            | RuleChange::NotCompared { rule } => &rule.name,
            RuleChange::Delete { name, .. } | RuleChange::Forget { name } => name,
        }
    }

    /// Whether applying it sends a write to AWS Config.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            RuleChange::Create { .. } | RuleChange::Update { .. } | RuleChange::Delete { .. }
        )
    }

    /// The kind, as in the JSON document.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleChange::Create { .. } => "create",
            RuleChange::Update { .. } => "update",
            RuleChange::Delete { .. } => "delete",
            RuleChange::Unchanged { .. } => "unchanged",
            RuleChange::Unmanaged { .. } => "unmanaged",
            RuleChange::Forget { .. } => "forget",
            RuleChange::NotCompared { .. } => "not-compared",
        }
    }
}

/// The Config rules the policies declare, sorted by name.
pub fn desired_config_rules(set: &PolicySet) -> Vec<DesiredRule> {
    let mut out: Vec<DesiredRule> = set
        .policies
        .iter()
        .filter_map(|p| {
            let decl = p.aws_config_rule.as_ref()?;
            let days = match decl.rule.mirrors() {
                Rule::Cis13 => p.max_unused_days,
                Rule::Cis14 => p.max_key_age_days,
            };
            Some(DesiredRule {
                name: decl.name.clone(),
                policy: p.name.clone(),
                source_identifier: decl.rule.source_identifier().to_string(),
                parameters: BTreeMap::from([(decl.rule.parameter().to_string(), days.to_string())]),
                adopt: decl.adopt,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The changes that make AWS Config match `desired`: the declared rules
/// first (by name), then the engine's rules no longer declared (by name).
///
/// `actual` holds the rules AWS Config has among the names that matter (the
/// declared ones and the managed ones); `managed` what the engine recorded.
/// A rule is the engine's when it is recorded or tagged `managed-by = engine`.
pub fn diff(
    desired: &[DesiredRule],
    actual: &[ActualRule],
    managed: &BTreeMap<String, ManagedRecord>,
) -> Vec<RuleChange> {
    let by_name: BTreeMap<&str, &ActualRule> =
        actual.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut changes = Vec::new();
    let mut declared = BTreeSet::new();
    let mut desired: Vec<&DesiredRule> = desired.iter().collect();
    desired.sort_by(|a, b| a.name.cmp(&b.name));
    for d in desired {
        declared.insert(d.name.as_str());
        let Some(a) = by_name.get(d.name.as_str()) else {
            changes.push(RuleChange::Create {
                rule: d.clone(),
                recreate: managed.contains_key(&d.name),
            });
            continue;
        };
        let record = managed.get(&d.name);
        let ours = record.is_some() || a.tagged;
        let differs = a.owner != AWS_OWNER
            || a.source_identifier != d.source_identifier
            || a.parameters != d.parameters;
        let update = |drift: bool, adopt: bool| RuleChange::Update {
            rule: d.clone(),
            from_source_identifier: a.source_identifier.clone(),
            from_parameters: a.parameters.clone(),
            drift,
            adopt,
        };
        if !ours && !d.adopt {
            changes.push(RuleChange::Unmanaged {
                rule: d.clone(),
                source_identifier: a.source_identifier.clone(),
                parameters: a.parameters.clone(),
            });
        } else if !ours {
            // Adopted: put as declared and tagged, even if it already matches.
            changes.push(update(false, true));
        } else if differs {
            let drift = record.is_some_and(|r| {
                r.source_identifier != a.source_identifier || r.parameters != a.parameters
            });
            changes.push(update(drift, false));
        } else {
            changes.push(RuleChange::Unchanged { rule: d.clone() });
        }
    }
    let mut gone: BTreeSet<&str> = managed.keys().map(String::as_str).collect();
    gone.extend(actual.iter().filter(|a| a.tagged).map(|a| a.name.as_str()));
    for name in gone.into_iter().filter(|n| !declared.contains(n)) {
        changes.push(match by_name.get(name) {
            Some(a) => RuleChange::Delete {
                name: name.to_string(),
                source_identifier: a.source_identifier.clone(),
                parameters: a.parameters.clone(),
            },
            None => RuleChange::Forget {
                name: name.to_string(),
            },
        });
    }
    changes
}

/// The names whose rules [`diff`] needs to see: the declared and the managed ones.
pub fn names_to_read(
    desired: &[DesiredRule],
    managed: &BTreeMap<String, ManagedRecord>,
) -> Vec<String> {
    let mut names: BTreeSet<String> = desired.iter().map(|d| d.name.clone()).collect();
    names.extend(managed.keys().cloned());
    names.into_iter().collect()
}

/// The records after `changes` were applied, given which of them succeeded
/// (same order as `changes`).
pub fn record_applied(
    mut managed: BTreeMap<String, ManagedRecord>,
    changes: &[RuleChange],
    succeeded: &[bool],
) -> BTreeMap<String, ManagedRecord> {
    for (c, ok) in changes.iter().zip(succeeded) {
        if !ok {
            continue;
        }
        match c {
            RuleChange::Create { rule, .. } | RuleChange::Update { rule, .. } => {
                managed.insert(rule.name.clone(), ManagedRecord::from(rule));
            }
            RuleChange::Delete { name, .. } | RuleChange::Forget { name } => {
                managed.remove(name);
            }
            RuleChange::Unchanged { rule } => {
                // Tagged but not recorded (e.g. a lost state directory): record it.
                managed
                    .entry(rule.name.clone())
                    .or_insert_with(|| ManagedRecord::from(rule));
            }
            RuleChange::Unmanaged { .. } | RuleChange::NotCompared { .. } => {}
        }
    }
    managed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(key: &str, v: u32) -> BTreeMap<String, String> {
        BTreeMap::from([(key.to_string(), v.to_string())])
    }

    fn desired(name: &str, days: u32, adopt: bool) -> DesiredRule {
        DesiredRule {
            name: name.into(),
            policy: "p".into(),
            source_identifier: "ACCESS_KEYS_ROTATED".into(),
            parameters: params("maxAccessKeyAge", days),
            adopt,
        }
    }

    fn actual(name: &str, days: u32, tagged: bool) -> ActualRule {
        ActualRule {
            name: name.into(),
            arn: format!("arn:aws:config:eu-west-1:123456789012:config-rule/{name}"),
            owner: AWS_OWNER.into(),
            source_identifier: "ACCESS_KEYS_ROTATED".into(),
            parameters: params("maxAccessKeyAge", days),
            tagged,
        }
    }

    fn record(days: u32) -> ManagedRecord {
        ManagedRecord {
            source_identifier: "ACCESS_KEYS_ROTATED".into(),
            parameters: params("maxAccessKeyAge", days),
        }
    }

    #[test]
    fn create_when_absent() {
        let changes = diff(&[desired("r", 90, false)], &[], &BTreeMap::new());
        assert_eq!(
            changes,
            vec![RuleChange::Create {
                rule: desired("r", 90, false),
                recreate: false
            }]
        );
        // Recorded but gone: deleted behind the engine's back, made again.
        let managed = BTreeMap::from([("r".to_string(), record(90))]);
        let changes = diff(&[desired("r", 90, false)], &[], &managed);
        assert!(matches!(
            changes[0],
            RuleChange::Create { recreate: true, .. }
        ));
    }

    #[test]
    fn update_threshold_is_not_drift() {
        let managed = BTreeMap::from([("r".to_string(), record(120))]);
        let changes = diff(
            &[desired("r", 90, false)],
            &[actual("r", 120, true)],
            &managed,
        );
        assert_eq!(
            changes,
            vec![RuleChange::Update {
                rule: desired("r", 90, false),
                from_source_identifier: "ACCESS_KEYS_ROTATED".into(),
                from_parameters: params("maxAccessKeyAge", 120),
                drift: false,
                adopt: false,
            }]
        );
    }

    #[test]
    fn drift_is_repaired() {
        let managed = BTreeMap::from([("r".to_string(), record(90))]);
        let changes = diff(
            &[desired("r", 90, false)],
            &[actual("r", 365, true)],
            &managed,
        );
        assert!(matches!(
            &changes[..],
            [RuleChange::Update { drift: true, adopt: false, from_parameters, .. }]
                if from_parameters == &params("maxAccessKeyAge", 365)
        ));
        // Tagged but not recorded: the engine's, but nothing says what it put.
        let changes = diff(
            &[desired("r", 90, false)],
            &[actual("r", 365, true)],
            &BTreeMap::new(),
        );
        assert!(matches!(
            &changes[..],
            [RuleChange::Update {
                drift: false,
                adopt: false,
                ..
            }]
        ));
    }

    #[test]
    fn unchanged() {
        let managed = BTreeMap::from([("r".to_string(), record(90))]);
        let changes = diff(
            &[desired("r", 90, false)],
            &[actual("r", 90, false)],
            &managed,
        );
        assert_eq!(
            changes,
            vec![RuleChange::Unchanged {
                rule: desired("r", 90, false)
            }]
        );
    }

    #[test]
    fn delete_only_managed_rules() {
        let managed = BTreeMap::from([("old".to_string(), record(90))]);
        let actual = [
            actual("old", 90, true),
            actual("tagged", 90, true),
            actual("theirs", 90, false),
        ];
        let changes = diff(&[], &actual, &managed);
        let names: Vec<(&str, &str)> = changes.iter().map(|c| (c.kind(), c.name())).collect();
        assert_eq!(names, vec![("delete", "old"), ("delete", "tagged")]);
        // Recorded, no longer declared, already gone: forgotten, nothing sent.
        let changes = diff(&[], &[], &managed);
        assert_eq!(changes, vec![RuleChange::Forget { name: "old".into() }]);
        assert!(!changes[0].writes());
    }

    #[test]
    fn unmanaged_rule_is_left_alone() {
        let changes = diff(
            &[desired("r", 90, false)],
            &[actual("r", 30, false)],
            &BTreeMap::new(),
        );
        assert_eq!(
            changes,
            vec![RuleChange::Unmanaged {
                rule: desired("r", 90, false),
                source_identifier: "ACCESS_KEYS_ROTATED".into(),
                parameters: params("maxAccessKeyAge", 30),
            }]
        );
        assert!(!changes[0].writes());
    }

    #[test]
    fn adopt_takes_over_even_when_it_matches() {
        for days in [30, 90] {
            let changes = diff(
                &[desired("r", 90, true)],
                &[actual("r", days, false)],
                &BTreeMap::new(),
            );
            assert!(matches!(
                &changes[..],
                [RuleChange::Update {
                    adopt: true,
                    drift: false,
                    ..
                }]
            ));
        }
        // Once adopted (recorded), it is the engine's like any other.
        let managed = BTreeMap::from([("r".to_string(), record(90))]);
        let changes = diff(
            &[desired("r", 90, true)],
            &[actual("r", 90, true)],
            &managed,
        );
        assert!(matches!(&changes[..], [RuleChange::Unchanged { .. }]));
    }

    #[test]
    fn records_follow_successful_changes_only() {
        let managed = BTreeMap::from([
            ("gone".to_string(), record(90)),
            ("old".to_string(), record(90)),
        ]);
        let changes = vec![
            RuleChange::Create {
                rule: desired("new", 60, false),
                recreate: false,
            },
            RuleChange::Delete {
                name: "old".into(),
                source_identifier: "ACCESS_KEYS_ROTATED".into(),
                parameters: params("maxAccessKeyAge", 90),
            },
            RuleChange::Forget {
                name: "gone".into(),
            },
        ];
        let after = record_applied(managed.clone(), &changes, &[true, false, true]);
        let names: Vec<&str> = after.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["new", "old"]);
        assert_eq!(after["new"], record_with(60));
        fn record_with(days: u32) -> ManagedRecord {
            ManagedRecord {
                source_identifier: "ACCESS_KEYS_ROTATED".into(),
                parameters: params("maxAccessKeyAge", days),
            }
        }
    }
}
