//! Policy validation: defaults, every error at once, shipped files valid.

use std::path::Path;

use engine_core::ActionKind;
use engine_core::policy::{self, Mode, PluginSource, PolicyFile, Rule};

fn file(name: &str, text: &str) -> PolicyFile {
    PolicyFile {
        path: name.into(),
        text: text.into(),
    }
}

#[test]
fn defaults() {
    let set = policy::validate(vec![file("a.toml", "[policy.p]\nrule = \"cis-1.4\"\n")]).unwrap();
    let p = &set.policies[0];
    assert_eq!(p.rule, Rule::Cis14);
    assert_eq!(p.max_key_age_days, 90);
    assert_eq!(p.max_unused_days, 90);
    assert_eq!(p.action, "delete-expired-keys");
    assert_eq!(p.mode, Mode::Enforce);
    assert!(p.exempt_users.is_empty());
    assert_eq!(p.max_actions_per_run, None);
    assert_eq!(p.schedule, None);
    let plugin = set.plugin("delete-expired-keys").unwrap();
    assert_eq!(plugin.source, PluginSource::Builtin);
    assert_eq!(plugin.timeout_ms, 1000);
    assert_eq!(plugin.memory_mb, 64);
    assert_eq!(
        plugin.allow,
        vec![ActionKind::DeleteAccessKey, ActionKind::None]
    );
}

#[test]
fn every_error_of_a_directory_is_reported_at_once() {
    let a = r#"
[policy.one]
rule = "cis-1.5"
max_key_age_days = "ninety"
colour = "blue"

[policy.two]
rule = "cis-1.3"
max_key_age_days = 30
schedule = "every day"
exempt_users = ["ok", 3, "[unclosed"]
mode = "dry-run"
"#;
    let b = "[policy.three]\nmax_actions_per_run = -1\naction = \"no-such-plugin\"\n\n[policy.four]\nrule = \"cis-1.4\"\naction = \"no-such-plugin\"\n";
    let err = policy::validate(vec![file("a.toml", a), file("b.toml", b)]).unwrap_err();
    let codes = err.codes();
    assert_eq!(
        codes,
        vec![
            "invalid-value",    // rule cis-1.5
            "wrong-type",       // max_key_age_days string
            "unknown-key",      // colour
            "invalid-key",      // max_key_age_days on cis-1.3
            "invalid-schedule", // schedule
            "wrong-type",       // 3 in exempt_users
            "invalid-value",    // [unclosed
            "invalid-value",    // mode
            "missing-key",      // three has no rule
            "invalid-value",    // max_actions_per_run -1
            "unknown-plugin",   // four
        ],
        "{}",
        err.render_plain()
    );
    let text = err.render_plain();
    assert!(text.contains("a.toml:3:8"), "{text}");
    assert!(text.contains("b.toml:"), "{text}");
}

#[test]
fn duplicate_policy_names_both_places() {
    let err = policy::validate(vec![
        file("a.toml", "[policy.same]\nrule = \"cis-1.4\"\n"),
        file("b.toml", "# other\n[policy.same]\nrule = \"cis-1.3\"\n"),
    ])
    .unwrap_err();
    assert_eq!(err.codes(), vec!["duplicate-policy"]);
    let text = err.render_plain();
    assert!(text.contains("a.toml:1:9"), "{text}");
    assert!(text.contains("b.toml:2:9"), "{text}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let err = policy::validate(vec![file(
        "bad.toml",
        "[policy.p]\nrule = \"cis-1.4\nx = 1\n",
    )])
    .unwrap_err();
    assert_eq!(err.codes()[0], "toml-syntax");
    assert!(
        err.render_plain().contains("bad.toml:2:"),
        "{}",
        err.render_plain()
    );
}

#[test]
fn external_plugins_need_a_pinned_source() {
    let err = policy::validate(vec![file(
        "p.toml",
        "[policy.p]\nrule = \"cis-1.4\"\naction = \"mine\"\n\n[plugin.mine]\nsource = \"mine.wasm\"\n",
    )])
    .unwrap_err();
    assert_eq!(err.codes(), vec!["missing-key"]);
    let set = policy::validate(vec![file(
        "dir/p.toml",
        &format!(
            "[policy.p]\nrule = \"cis-1.4\"\naction = \"mine\"\n\n[plugin.mine]\nsource = \"mine.wasm\"\nsha256 = \"{}\"\ntimeout_ms = 50\n",
            "AB".repeat(32)
        ),
    )])
    .unwrap();
    let plugin = set.plugin("mine").unwrap();
    assert_eq!(
        plugin.source,
        PluginSource::File {
            path: Path::new("dir/mine.wasm").into(),
            sha256: "ab".repeat(32)
        }
    );
    assert_eq!(plugin.timeout_ms, 50);
    // External plugins are granted only the reversible action by default.
    assert_eq!(
        plugin.allow,
        vec![ActionKind::DeactivateAccessKey, ActionKind::None]
    );
}

#[test]
fn allow_narrows_a_builtin() {
    let set = policy::validate(vec![file(
        "p.toml",
        "[policy.p]\nrule = \"cis-1.3\"\naction = \"deactivate-unused-credentials\"\n[plugin.deactivate-unused-credentials]\nallow = [\"deactivate-access-key\"]\n",
    )])
    .unwrap();
    assert_eq!(
        set.plugin("deactivate-unused-credentials").unwrap().allow,
        vec![ActionKind::DeactivateAccessKey, ActionKind::None]
    );
}

#[test]
fn exempt_globs_match() {
    let set = policy::validate(vec![file(
        "p.toml",
        "[policy.p]\nrule = \"cis-1.4\"\nexempt_users = [\"break-glass-*\", \"ci,deploy=bot\", \"svc-?\"]\n",
    )])
    .unwrap();
    let p = &set.policies[0];
    assert!(p.is_exempt("break-glass-admin"));
    assert!(p.is_exempt("ci,deploy=bot"));
    assert!(p.is_exempt("svc-1"));
    assert!(!p.is_exempt("svc-10"));
    assert!(!p.is_exempt("alice"));
    // IAM user names are unique case-insensitively: so is exemption.
    assert!(p.is_exempt("Break-Glass-Admin"));
    assert!(p.is_exempt("SVC-1"));
}

#[test]
fn an_external_file_under_a_builtins_name_gets_the_external_grants() {
    let sha = "0".repeat(64);
    let set = policy::validate(vec![file(
        "a.toml",
        &format!(
            "[policy.p]\nrule = \"cis-1.4\"\n[plugin.delete-expired-keys]\nsource = \"x.wasm\"\nsha256 = \"{sha}\"\n"
        ),
    )])
    .unwrap();
    let plugin = set.plugin("delete-expired-keys").unwrap();
    assert!(matches!(plugin.source, PluginSource::File { .. }));
    assert_eq!(plugin.allow, policy::EXTERNAL_DEFAULT_ALLOW);
    assert!(!plugin.allow.contains(&ActionKind::DeleteAccessKey));
    // The builtin itself keeps its grant.
    let set = policy::validate(vec![file("a.toml", "[policy.p]\nrule = \"cis-1.4\"\n")]).unwrap();
    assert!(
        set.plugin("delete-expired-keys")
            .unwrap()
            .allow
            .contains(&ActionKind::DeleteAccessKey)
    );
}

#[test]
fn protect_access_keys_takes_key_ids() {
    let set = policy::validate(vec![file(
        "a.toml",
        "[policy.p]\nrule = \"cis-1.4\"\nprotect_access_keys = [\"akiaiosfodnn7example\"]\n",
    )])
    .unwrap();
    assert_eq!(
        set.policies[0].protect_access_keys,
        ["AKIAIOSFODNN7EXAMPLE"]
    );
    let err = policy::validate(vec![file(
        "a.toml",
        "[policy.p]\nrule = \"cis-1.4\"\nprotect_access_keys = [\"alice\", \"AKIA-NOT/AKEY\"]\n",
    )])
    .unwrap_err();
    assert_eq!(err.codes(), vec!["invalid-value", "invalid-value"]);
}

#[test]
fn empty_directory_is_an_error() {
    let dir = std::env::temp_dir().join(format!("engine-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = policy::load_dir(&dir).unwrap_err();
    assert_eq!(err.codes(), vec!["no-policies"]);
    let err = policy::load_dir(&dir.join("missing")).unwrap_err();
    assert_eq!(err.codes(), vec!["unreadable"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every file shipped in policies/ and examples/ validates.
#[test]
fn shipped_policies_and_examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let set =
        policy::load_dir(&root.join("policies")).unwrap_or_else(|e| panic!("{}", e.render_plain()));
    let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["disable-unused-credentials", "rotate-access-keys"]);
    let mut checked = 0;
    for entry in walk(&root.join("examples")) {
        match entry.extension().and_then(|e| e.to_str()) {
            Some("toml") if entry.file_name().is_some_and(|n| n != "Cargo.toml") => {
                let dir = entry.parent().unwrap();
                policy::load_dir(dir)
                    .unwrap_or_else(|e| panic!("{}: {}", dir.display(), e.render_plain()));
                checked += 1;
            }
            Some("csv") => {
                let bytes = std::fs::read(&entry).unwrap();
                engine_core::CredentialReport::parse(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(checked >= 1);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                out.extend(walk(&p));
            }
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_plugin_table_may_raise_its_load_bounds_up_to_the_ceiling() {
    let sha = "a".repeat(64);
    let text = format!(
        "[policy.p]\nrule = \"cis-1.4\"\naction = \"py\"\n\n[plugin.py]\nsource = \"py.wasm\"\nsha256 = \"{sha}\"\nmax_file_mb = 24\nmax_function_kb = 512\nmax_functions = 60000\n"
    );
    let set = policy::validate(vec![file("a.toml", &text)]).unwrap();
    let bounds = set.plugin("py").unwrap().bounds;
    assert_eq!(
        bounds,
        policy::LoadBounds {
            max_file_mb: 24,
            max_function_kb: 512,
            max_functions: 60_000
        }
    );
    // Defaults when absent; the builtin keeps them too.
    let set = policy::validate(vec![file("b.toml", "[policy.p]\nrule = \"cis-1.4\"\n")]).unwrap();
    assert_eq!(
        set.plugin("delete-expired-keys").unwrap().bounds,
        policy::LoadBounds::DEFAULT
    );
    // Past the ceiling, zero, or not a number: each is reported.
    let bad = format!(
        "[policy.p]\nrule = \"cis-1.4\"\naction = \"py\"\n\n[plugin.py]\nsource = \"py.wasm\"\nsha256 = \"{sha}\"\nmax_file_mb = 257\nmax_function_kb = 0\nmax_functions = \"many\"\n"
    );
    let err = policy::validate(vec![file("c.toml", &bad)]).unwrap_err();
    assert_eq!(
        err.codes(),
        vec!["invalid-value", "invalid-value", "wrong-type"],
        "{}",
        err.render_plain()
    );
}

#[test]
fn notifications_declare_channels_and_where_messages_go() {
    let text = r#"
[policy.p]
rule = "cis-1.4"

[notifications]
owner_tags = ["owner", "email"]
owner_channel = "owners"
fallback_channel = "security"

[notifications.channels.owners]
type = "webhook"
url = "https://hooks.example.com/engine"
secret_env = "ENGINE_WEBHOOK_SECRET"
attempts = 5

[notifications.channels.security]
type = "sns"
topic_arn = "arn:aws:sns:eu-west-1:111111111111:engine"

[notifications.channels.mail]
type = "ses"
region = "eu-west-1"
from = "engine@example.com"
to = ["security@example.com"]
"#;
    let set = policy::validate(vec![file("n.toml", text)])
        .unwrap_or_else(|e| panic!("{}", e.render_plain()));
    let n = set.notifications.expect("notifications");
    assert_eq!(n.owner_tags, vec!["owner", "email"]);
    assert_eq!(n.owner_channel.as_deref(), Some("owners"));
    // The summary goes to the fallback channel unless said otherwise.
    assert_eq!(n.summary_channels, vec!["security"]);
    assert_eq!(
        n.channels["owners"],
        policy::Channel::Webhook {
            url: "https://hooks.example.com/engine".into(),
            secret_env: Some("ENGINE_WEBHOOK_SECRET".into()),
            slack: false,
            timeout_ms: 5000,
            attempts: 5
        }
    );
    assert_eq!(n.channels["security"].kind(), "sns");
    assert_eq!(n.channels["mail"].kind(), "ses");
}

#[test]
fn a_bad_notifications_table_names_every_problem() {
    let text = r#"
[policy.p]
rule = "cis-1.4"

[notifications]
owner_channel = "nowhere"
colour = "blue"

[notifications.channels.plain]
type = "webhook"
url = "http://hooks.example.com/engine"

[notifications.channels.topic]
type = "sns"
topic_arn = "not-an-arn"

[notifications.channels.pigeon]
type = "carrier"
"#;
    let err = policy::validate(vec![file("n.toml", text)]).unwrap_err();
    let all = err.render_plain();
    for want in [
        "unknown key \"colour\" in [notifications]",
        "there is no channel \"nowhere\"",
        "must be https://",
        "\"not-an-arn\" is not an SNS topic ARN",
        "channel type \"carrier\" is not known",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}
