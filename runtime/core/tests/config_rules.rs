//! `aws_config_rule` and `[aws_config]`: parsed, validated, turned into desired rules.

use std::collections::BTreeMap;

use engine_core::config_rule::{ManagedRule, desired_config_rules};
use engine_core::policy::{self, PolicyFile};

fn file(name: &str, text: &str) -> PolicyFile {
    PolicyFile {
        path: name.into(),
        text: text.into(),
    }
}

const REGION: &str = "[aws_config]\nregion = \"eu-west-1\"\n";

#[test]
fn declared_rules_mirror_the_thresholds() {
    let text = format!(
        "{REGION}
[policy.rotate]
rule = \"cis-1.4\"
max_key_age_days = 60
aws_config_rule = \"access-keys-rotated\"

[policy.unused]
rule = \"cis-1.3\"
max_unused_days = 45
aws_config_rule = \"iam-user-unused-credentials-check\"
aws_config_rule_name = \"my-unused\"
adopt_aws_config_rule = true

[policy.plain]
rule = \"cis-1.4\"
"
    );
    let set = policy::validate(vec![file("a.toml", &text)])
        .unwrap_or_else(|e| panic!("{}", e.render_plain()));
    assert_eq!(
        set.aws_config.as_ref().map(|c| c.region.as_str()),
        Some("eu-west-1")
    );
    let rotate = set.policies.iter().find(|p| p.name == "rotate");
    let decl = rotate.and_then(|p| p.aws_config_rule.as_ref());
    assert_eq!(decl.map(|d| d.rule), Some(ManagedRule::AccessKeysRotated));
    let desired = desired_config_rules(&set);
    assert_eq!(desired.len(), 2);
    assert_eq!(desired[0].name, "engine-rotate");
    assert_eq!(desired[0].policy, "rotate");
    assert_eq!(desired[0].source_identifier, "ACCESS_KEYS_ROTATED");
    assert_eq!(
        desired[0].parameters,
        BTreeMap::from([("maxAccessKeyAge".to_string(), "60".to_string())])
    );
    assert!(!desired[0].adopt);
    assert_eq!(desired[1].name, "my-unused");
    assert_eq!(
        desired[1].source_identifier,
        "IAM_USER_UNUSED_CREDENTIALS_CHECK"
    );
    assert_eq!(
        desired[1].parameters,
        BTreeMap::from([("maxCredentialUsageAge".to_string(), "45".to_string())])
    );
    assert!(desired[1].adopt);
}

#[test]
fn aws_config_table_may_live_in_its_own_file() {
    let set = policy::validate(vec![
        file("a.toml", REGION),
        file(
            "b.toml",
            "[policy.p]\nrule = \"cis-1.4\"\naws_config_rule = \"access-keys-rotated\"\n",
        ),
    ])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()));
    assert_eq!(desired_config_rules(&set).len(), 1);
}

#[test]
fn the_keys_change_the_digest() {
    let a = policy::validate(vec![file("a.toml", "[policy.p]\nrule = \"cis-1.4\"\n")]);
    let b = policy::validate(vec![file(
        "a.toml",
        &format!(
            "{REGION}[policy.p]\nrule = \"cis-1.4\"\naws_config_rule = \"access-keys-rotated\"\n"
        ),
    )]);
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("both valid")
    };
    assert_ne!(a.digest, b.digest);
}

#[test]
fn errors() {
    let text = r#"
[aws_config]
region = "Europe"
colour = "blue"

[policy.wrong-rule]
rule = "cis-1.3"
aws_config_rule = "access-keys-rotated"

[policy.unknown]
rule = "cis-1.4"
aws_config_rule = "root-account-mfa"

[policy.bad-name]
rule = "cis-1.4"
aws_config_rule = "access-keys-rotated"
aws_config_rule_name = "has space"
adopt_aws_config_rule = "yes"

[policy.orphan]
rule = "cis-1.4"
adopt_aws_config_rule = true
"#;
    let err = policy::validate(vec![file("a.toml", text)]).unwrap_err();
    assert_eq!(
        err.codes(),
        vec![
            "invalid-value", // region
            "unknown-key",   // colour
            "invalid-value", // access-keys-rotated under cis-1.3
            "invalid-value", // unknown Config rule
            "invalid-value", // rule name
            "wrong-type",    // adopt "yes"
            "invalid-key",   // adopt without aws_config_rule
        ],
        "{}",
        err.render_plain()
    );
    let text = err.render_plain();
    assert!(
        text.contains("expected \"access-keys-rotated\" or \"iam-user-unused-credentials-check\""),
        "{text}"
    );
    assert!(
        text.contains("mirrors cis-1.4, but policy \"wrong-rule\" is cis-1.3"),
        "{text}"
    );
    assert!(
        text.contains("use \"iam-user-unused-credentials-check\" for cis-1.3"),
        "{text}"
    );
}

#[test]
fn a_declared_rule_needs_a_region_and_a_unique_name() {
    let text = r#"
[policy.a]
rule = "cis-1.4"
aws_config_rule = "access-keys-rotated"
aws_config_rule_name = "same"

[policy.b]
rule = "cis-1.4"
aws_config_rule = "access-keys-rotated"
aws_config_rule_name = "same"
"#;
    let err = policy::validate(vec![file("a.toml", text)]).unwrap_err();
    assert_eq!(
        err.codes(),
        vec!["missing-aws-config", "duplicate-aws-config-rule"],
        "{}",
        err.render_plain()
    );
    let rendered = err.render_plain();
    assert!(
        rendered.contains("[aws_config] region = \"eu-west-1\""),
        "{rendered}"
    );
    let twice = policy::validate(vec![file("a.toml", REGION), file("b.toml", REGION)]).unwrap_err();
    assert!(
        twice.codes().contains(&"duplicate-aws-config"),
        "{}",
        twice.render_plain()
    );
}
