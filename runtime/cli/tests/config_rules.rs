//! AWS Config rules declared by the policies, planned and applied by the real
//! `engine` binary against moto's AWS Config (and IAM for the rest of the run).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use aws_sdk_config::types::{
    ConfigRule, ConfigurationRecorder, DeliveryChannel, Owner, RecordingGroup, ResourceType, Source,
};
use chrono::{TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");
const REGION: &str = "eu-west-1";

fn policies(rotate_days: u32, unused_rule: bool, extra: &str) -> String {
    format!(
        r#"[aws_config]
region = "{REGION}"

[policy.rotate]
rule = "cis-1.4"
max_key_age_days = {rotate_days}
aws_config_rule = "access-keys-rotated"
{extra}

[policy.unused]
rule = "cis-1.3"
action = "deactivate-unused-credentials"
{}
"#,
        if unused_rule {
            "aws_config_rule = \"iam-user-unused-credentials-check\""
        } else {
            ""
        }
    )
}

struct Account {
    moto: Moto,
    own_key: String,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    config: aws_sdk_config::Client,
}

impl Account {
    fn new(policies: &str) -> Account {
        let moto = Moto::start();
        let now = Utc::now();
        let seeded = moto.seed(
            &[SeedUser::new("engine-bot", now - TimeDelta::days(30)).key(
                now - TimeDelta::days(10),
                Some(now - TimeDelta::days(1)),
                true,
            )],
        );
        let own_key = seeded[0].keys[0].clone();
        let dir = std::env::temp_dir().join(format!(
            "engine-config-rules-{}-{}",
            std::process::id(),
            moto.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = rt.block_on(async {
            let creds = aws_sdk_config::config::Credentials::new("AKIATEST", "x", None, None, "t");
            let conf = aws_sdk_config::Config::builder()
                .behavior_version(aws_sdk_config::config::BehaviorVersion::latest())
                .region(aws_sdk_config::config::Region::new(REGION))
                .credentials_provider(creds)
                .endpoint_url(moto.endpoint())
                .build();
            aws_sdk_config::Client::from_conf(conf)
        });
        let account = Account {
            moto,
            own_key,
            dir,
            rt,
            config,
        };
        account.write_policies(policies);
        account
    }

    fn write_policies(&self, text: &str) {
        std::fs::write(self.dir.join("policies/policies.toml"), text).expect("write policies");
    }

    fn engine(&self, args: &[&str]) -> Output {
        Command::new(ENGINE)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    fn apply(&self) -> String {
        let out = self.engine(&["apply", "policies", "--auto-approve"]);
        let text = text(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        text
    }

    /// The rule's parameters and whether it is tagged `managed-by = engine`;
    /// `None` when there is no such rule.
    fn rule(&self, name: &str) -> Option<(String, bool)> {
        self.rt.block_on(async {
            let rules = match self
                .config
                .describe_config_rules()
                .config_rule_names(name)
                .send()
                .await
            {
                Ok(a) => a.config_rules.unwrap_or_default(),
                Err(_) => return None,
            };
            let rule = rules.first()?;
            let tags = self
                .config
                .list_tags_for_resource()
                .resource_arn(rule.config_rule_arn().unwrap_or_default())
                .send()
                .await
                .expect("tags");
            let tagged = tags
                .tags()
                .iter()
                .any(|t| t.key() == Some("managed-by") && t.value() == Some("engine"));
            Some((
                rule.input_parameters().unwrap_or_default().to_string(),
                tagged,
            ))
        })
    }

    /// Put a rule behind the engine's back, untagged.
    fn put_foreign(&self, name: &str, max_age: u32) {
        self.rt.block_on(async {
            let rule = ConfigRule::builder()
                .config_rule_name(name)
                .source(
                    Source::builder()
                        .owner(Owner::Aws)
                        .source_identifier("ACCESS_KEYS_ROTATED")
                        .build()
                        .expect("source"),
                )
                .input_parameters(format!("{{\"maxAccessKeyAge\":\"{max_age}\"}}"))
                .build();
            self.config
                .put_config_rule()
                .config_rule(rule)
                .send()
                .await
                .expect("put foreign rule");
        });
    }

    fn start_recorder(&self, iam_users: bool) {
        self.rt.block_on(async {
            let group = if iam_users {
                RecordingGroup::builder()
                    .all_supported(false)
                    .include_global_resource_types(false)
                    .resource_types(ResourceType::User)
                    .build()
            } else {
                RecordingGroup::builder()
                    .all_supported(false)
                    .include_global_resource_types(false)
                    .resource_types(ResourceType::Bucket)
                    .build()
            };
            self.config
                .put_configuration_recorder()
                .configuration_recorder(
                    ConfigurationRecorder::builder()
                        .name("default")
                        .role_arn("arn:aws:iam::123456789012:role/config")
                        .recording_group(group)
                        .build(),
                )
                .send()
                .await
                .expect("recorder");
            self.config
                .put_delivery_channel()
                .delivery_channel(
                    DeliveryChannel::builder()
                        .name("default")
                        .s3_bucket_name("config-bucket")
                        .build(),
                )
                .send()
                .await
                .expect("delivery channel");
            self.config
                .start_configuration_recorder()
                .configuration_recorder_name("default")
                .send()
                .await
                .expect("start recorder");
        });
    }

    fn state_file(&self) -> serde_json::Value {
        let path = self.dir.join(".engine/config-rules.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).expect("json")
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn params(days: u32) -> String {
    format!("{{\"maxAccessKeyAge\":\"{days}\"}}")
}

#[test]
fn create_update_repair_drift_and_delete_only_the_engines_rules() {
    let account = Account::new(&policies(90, true, ""));
    // A rule someone else made, never declared: never touched.
    account.put_foreign("theirs", 45);

    let out = account.apply();
    assert!(
        out.contains(&format!("AWS Config rules (region {REGION})")),
        "{out}"
    );
    assert!(
        out.contains("+ engine-rotate (ACCESS_KEYS_ROTATED maxAccessKeyAge=90)"),
        "{out}"
    );
    assert!(
        out.contains(
            "+ engine-unused (IAM_USER_UNUSED_CREDENTIALS_CHECK maxCredentialUsageAge=90)"
        ),
        "{out}"
    );
    assert!(out.contains("AWS Config rules: 2 done"), "{out}");
    assert_eq!(account.rule("engine-rotate"), Some((params(90), true)));
    assert_eq!(
        account.rule("engine-unused"),
        Some(("{\"maxCredentialUsageAge\":\"90\"}".to_string(), true))
    );
    let state = account.state_file();
    assert!(
        state["regions"][REGION]["engine-rotate"].is_object(),
        "{state}"
    );

    // Nothing changed: nothing to do.
    let out = account.apply();
    assert!(
        out.contains(". engine-rotate (ACCESS_KEYS_ROTATED maxAccessKeyAge=90) up to date"),
        "{out}"
    );
    assert!(out.contains("No changes to apply."), "{out}");

    // A new threshold in the policy: updated, and not called drift.
    account.write_policies(&policies(60, true, ""));
    let out = account.apply();
    assert!(
        out.contains("~ engine-rotate maxAccessKeyAge 90 -> 60\n"),
        "{out}"
    );
    assert_eq!(account.rule("engine-rotate"), Some((params(60), true)));

    // Changed in the console behind the engine's back: drift, repaired.
    account.put_foreign("engine-rotate", 365);
    let check = account.engine(&["apply", "policies"]);
    let shown = text(&check);
    assert!(
        shown.contains(
            "~ engine-rotate maxAccessKeyAge 365 -> 60 (drift: changed outside the engine)"
        ),
        "{shown}"
    );
    assert_eq!(
        check.status.code(),
        Some(1),
        "no terminal, no --auto-approve: {shown}"
    );
    assert_eq!(
        account.rule("engine-rotate").map(|r| r.0),
        Some(params(365))
    );
    let out = account.apply();
    assert!(out.contains("(drift"), "{out}");
    assert_eq!(account.rule("engine-rotate"), Some((params(60), true)));

    // The declaration removed: the engine's rule is deleted, the other one stays.
    account.write_policies(&policies(60, false, ""));
    let out = account.apply();
    assert!(
        out.contains("- engine-unused (IAM_USER_UNUSED_CREDENTIALS_CHECK maxCredentialUsageAge=90): no longer declared"),
        "{out}"
    );
    assert_eq!(account.rule("engine-unused"), None);
    assert_eq!(account.rule("engine-rotate"), Some((params(60), true)));
    assert_eq!(account.rule("theirs"), Some((params(45), false)));
    let state = account.state_file();
    assert!(
        state["regions"][REGION]["engine-unused"].is_null(),
        "{state}"
    );
}

#[test]
fn a_rule_the_engine_did_not_make_is_left_alone_unless_adopted() {
    let account = Account::new(&policies(90, false, ""));
    account.put_foreign("engine-rotate", 30);
    let out = account.apply();
    assert!(
        out.contains("! engine-rotate exists and is not managed by the engine: left alone (adopt_aws_config_rule = true to manage it)"),
        "{out}"
    );
    assert!(out.contains("1 not managed by the engine"), "{out}");
    assert_eq!(account.rule("engine-rotate"), Some((params(30), false)));

    // Still not the engine's once its declaration is removed: not deleted.
    account.write_policies(
        &policies(90, false, "").replace("aws_config_rule = \"access-keys-rotated\"", ""),
    );
    account.apply();
    assert_eq!(account.rule("engine-rotate"), Some((params(30), false)));

    // Adopted: put as declared and tagged, then managed like any other.
    account.write_policies(&policies(90, false, "adopt_aws_config_rule = true"));
    let out = account.apply();
    assert!(
        out.contains(
            "~ engine-rotate maxAccessKeyAge 30 -> 90 (adopted: tagged managed-by = engine)"
        ),
        "{out}"
    );
    assert_eq!(account.rule("engine-rotate"), Some((params(90), true)));
    account.write_policies(
        &policies(90, false, "").replace("aws_config_rule = \"access-keys-rotated\"", ""),
    );
    let out = account.apply();
    assert!(out.contains("- engine-rotate"), "{out}");
    assert_eq!(account.rule("engine-rotate"), None);
}

#[test]
fn the_plan_warns_when_no_recorder_records_iam_users() {
    let account = Account::new(&policies(90, false, ""));
    let warning = "the AWS Config rules there evaluate nothing until one records AWS::IAM::User";
    let out = account.apply();
    assert!(
        out.contains("warning: there is no configuration recorder in eu-west-1"),
        "{out}"
    );
    account.start_recorder(false);
    let out = account.apply();
    assert!(
        out.contains("no configuration recorder records IAM users (default: recording, without AWS::IAM::User)"),
        "{out}"
    );
    account.start_recorder(true);
    let out = account.apply();
    assert!(!out.contains(warning), "{out}");
}

#[test]
fn a_declared_rule_without_a_region_is_a_policy_error() {
    let account = Account::new(
        &policies(90, false, "").replace(&format!("[aws_config]\nregion = \"{REGION}\"\n"), ""),
    );
    let out = account.engine(&["check", "policies"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(78), "{shown}");
    assert!(
        shown.contains("no [aws_config] table says in which region"),
        "{shown}"
    );
}

#[test]
fn apply_json_reports_the_rule_changes() {
    let account = Account::new(&policies(90, false, ""));
    let out = account.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rules = &report["plan"]["config_rules"];
    assert_eq!(rules[0]["change"], "create", "{report}");
    assert_eq!(rules[0]["region"], REGION);
    assert_eq!(rules[0]["rule"]["name"], "engine-rotate");
    assert_eq!(rules[0]["rule"]["parameters"]["maxAccessKeyAge"], "90");
    assert_eq!(report["config_rules"][0]["outcome"], "done", "{report}");
}

/// Every Config rule of the region, by name: (parameters, tagged
/// `managed-by = engine`).
fn all_rules(account: &Account) -> std::collections::BTreeMap<String, (String, bool)> {
    let names: Vec<String> = account.rt.block_on(async {
        account
            .config
            .describe_config_rules()
            .send()
            .await
            .expect("DescribeConfigRules")
            .config_rules()
            .iter()
            .filter_map(|r| r.config_rule_name().map(str::to_string))
            .collect()
    });
    names
        .into_iter()
        .filter_map(|n| account.rule(&n).map(|r| (n, r)))
        .collect()
}

/// `engine check` against the live account (no `--report`) shows the rule
/// changes of the plan, in both formats, and makes none of them.
#[test]
fn a_live_check_shows_the_rule_changes_and_changes_nothing() {
    let account = Account::new(&policies(90, true, ""));
    // A rule someone else made, never declared.
    account.put_foreign("theirs", 45);
    let check = |format: &str| {
        let out = account.engine(&["check", "policies", "--format", format]);
        // No finding in the account: exit 0, rule changes or not.
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };
    let json = |out: &Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
    };
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();

    // Nothing declared exists yet: two creations.
    let before = all_rules(&account);
    assert_eq!(before.len(), 1, "{before:?}");
    let human = stdout(&check("human"));
    assert!(
        human.contains(&format!("AWS Config rules (region {REGION})\n"))
            && human.contains("  + engine-rotate (ACCESS_KEYS_ROTATED maxAccessKeyAge=90)\n")
            && human.contains(
                "  + engine-unused (IAM_USER_UNUSED_CREDENTIALS_CHECK maxCredentialUsageAge=90)\n"
            )
            && human.contains("AWS Config rules: 2 to create, 0 to update, 0 to delete."),
        "{human}"
    );
    assert!(!human.contains("theirs"), "{human}");
    let doc = json(&check("json"));
    let rules = doc["config_rules"].as_array().cloned().unwrap_or_default();
    let creates: Vec<(&str, &str, &serde_json::Value)> = rules
        .iter()
        .map(|r| {
            (
                r["change"].as_str().unwrap_or_default(),
                r["rule"]["name"].as_str().unwrap_or_default(),
                &r["rule"]["parameters"],
            )
        })
        .collect();
    assert_eq!(
        creates,
        [
            (
                "create",
                "engine-rotate",
                &serde_json::json!({"maxAccessKeyAge": "90"})
            ),
            (
                "create",
                "engine-unused",
                &serde_json::json!({"maxCredentialUsageAge": "90"})
            ),
        ],
        "{doc:#}"
    );
    assert!(rules.iter().all(|r| r["region"] == REGION), "{doc:#}");
    // Nothing was made, and nothing recorded as the engine's.
    assert_eq!(all_rules(&account), before);
    assert!(!account.dir.join(".engine/config-rules.json").exists());

    // Made; then the threshold changes and a declaration goes.
    account.apply();
    let made = all_rules(&account);
    assert_eq!(made.len(), 3, "{made:?}");
    let state = account.state_file();
    account.write_policies(&policies(60, false, ""));
    let human = stdout(&check("human"));
    assert!(
        human.contains("  ~ engine-rotate maxAccessKeyAge 90 -> 60\n")
            && human.contains(
                "  - engine-unused (IAM_USER_UNUSED_CREDENTIALS_CHECK maxCredentialUsageAge=90): no longer declared\n"
            )
            && human.contains("AWS Config rules: 0 to create, 1 to update, 1 to delete."),
        "{human}"
    );
    assert!(
        !human.contains("drift"),
        "a policy edit, not drift: {human}"
    );
    assert!(!human.contains("theirs"), "{human}");
    let doc = json(&check("json"));
    let rules = doc["config_rules"].as_array().cloned().unwrap_or_default();
    assert_eq!(rules.len(), 2, "{doc:#}");
    let update = &rules[0];
    assert_eq!(update["change"], "update", "{doc:#}");
    assert_eq!(update["rule"]["name"], "engine-rotate", "{doc:#}");
    assert_eq!(
        update["from_parameters"]["maxAccessKeyAge"], "90",
        "{doc:#}"
    );
    assert_eq!(
        update["rule"]["parameters"]["maxAccessKeyAge"], "60",
        "{doc:#}"
    );
    assert_eq!(update["drift"], false, "{doc:#}");
    let delete = &rules[1];
    assert_eq!(delete["change"], "delete", "{doc:#}");
    assert_eq!(delete["name"], "engine-unused", "{doc:#}");
    assert_eq!(
        delete["parameters"]["maxCredentialUsageAge"], "90",
        "{doc:#}"
    );
    // Still as they were: the check changed no rule and no record.
    assert_eq!(all_rules(&account), made);
    assert_eq!(account.state_file(), state);
    assert_eq!(account.rule("engine-rotate"), Some((params(90), true)));
    assert_eq!(account.rule("theirs"), Some((params(45), false)));
}
