//! Real components in the real sandbox: the shipped plugins, the example
//! plugin, and one tiny hostile plugin per limit (plugins/testdata/).
//!
//! Every hostile test also runs a well-behaved plugin in the same [`Host`]
//! afterwards, to show one policy's broken plugin does not affect the others.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use engine_core::finding::{Basis, Credential, Finding, Protection};
use engine_core::plan::{self, ActionKind, DenyReason, FailureKind, Grants, Proposal};
use engine_core::policy::{
    self, BUILTIN_PLUGINS, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS, EXTERNAL_DEFAULT_ALLOW,
    PluginConfig, PluginSource, Policy, Rule,
};
use engine_wasm::{Decision, Host, Invocation, LogLevel, Plugin, PluginError, limits};
use sha2::{Digest, Sha256};

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("host"))
}

fn wasm_path(file: &str) -> PathBuf {
    PathBuf::from(env!("ENGINE_PLUGIN_WASM_DIR")).join(format!("{file}.wasm"))
}

fn sha256_of(path: &PathBuf) -> String {
    let bytes = std::fs::read(path).expect("plugin built by build.rs");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An external plugin from the build output, pinned by its real sha256.
fn external(file: &str, timeout_ms: u64, memory_mb: u64) -> PluginConfig {
    let path = wasm_path(file);
    let sha256 = sha256_of(&path);
    PluginConfig {
        name: file.replace('_', "-"),
        source: PluginSource::File { path, sha256 },
        timeout_ms,
        memory_mb,
        allow: EXTERNAL_DEFAULT_ALLOW.to_vec(),
        origin: None,
    }
}

fn builtin(name: &str) -> PluginConfig {
    let allow = BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a.to_vec())
        .expect("builtin");
    PluginConfig {
        name: name.to_string(),
        source: PluginSource::Builtin,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        memory_mb: DEFAULT_MEMORY_MB,
        allow,
        origin: None,
    }
}

fn load(cfg: &PluginConfig) -> Plugin {
    host()
        .load(cfg)
        .unwrap_or_else(|e| panic!("load {}: {e}", cfg.name))
}

fn policy(params: &str) -> Policy {
    let text = format!(
        "[policy.test]\nrule = \"cis-1.4\"\nexempt_users = [\"vip\"]\nparams = {{ {params} }}\n"
    );
    let set = policy::validate(vec![policy::PolicyFile {
        path: PathBuf::from("test.toml"),
        text,
    }])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()));
    set.policies.into_iter().next().expect("one policy")
}

fn finding(user: &str, credential: Credential, age_days: i64) -> Finding {
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    Finding {
        policy: "test".into(),
        rule: if credential == Credential::Password {
            Rule::Cis13
        } else {
            Rule::Cis14
        },
        user: user.into(),
        arn: format!("arn:aws:iam::123456789012:user/{user}").into(),
        credential,
        key_id: credential
            .is_access_key()
            .then(|| format!("AKIA{:0>16}", user.len())),
        timestamp: now - chrono::Duration::days(age_days),
        basis: if credential == Credential::Password {
            Basis::PasswordLastUsed
        } else {
            Basis::KeyLastRotated
        },
        age_days,
        threshold_days: 90,
        reason: format!("{age_days} days old"),
        controls: Default::default(),
        exempt: user == "vip",
        protected: (user == "<root_account>").then_some(Protection::Root),
    }
}

/// alice key (120d), vip key (exempt, 300d), carol password, root key, dave slot 2 (200d).
fn findings() -> Vec<Finding> {
    vec![
        finding("alice", Credential::AccessKey1, 120),
        finding("vip", Credential::AccessKey1, 300),
        finding("carol", Credential::Password, 100),
        finding("<root_account>", Credential::AccessKey1, 500),
        finding("dave", Credential::AccessKey2, 200),
    ]
}

fn decide(plugin: &Plugin, policy: &Policy, findings: &[Finding]) -> Result<Decision, PluginError> {
    let inv = Invocation {
        invocation_id: "inv-test",
        policy,
        dry_run: true,
        now: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
    };
    plugin.decide(&inv, findings)
}

fn kinds(proposals: &[Proposal]) -> Vec<(u32, ActionKind)> {
    proposals.iter().map(|p| (p.finding, p.kind)).collect()
}

fn grants<'a>(plugin: &'a str, allow: &'a [ActionKind]) -> Grants<'a> {
    Grants {
        policy: "test",
        plugin,
        allow,
        max_actions: None,
        require_key_id: false,
    }
}

/// The well-behaved default plugin still answers correctly.
fn assert_default_plugin_still_works() {
    let plugin = default_plugin();
    let d = decide(plugin, &policy(""), &findings()).expect("default plugin");
    assert_eq!(d.proposals[0].kind, ActionKind::DeleteAccessKey);
    assert_eq!(d.proposals.len(), 5);
}

fn default_plugin() -> &'static Plugin {
    static P: OnceLock<Plugin> = OnceLock::new();
    P.get_or_init(|| load(&builtin("delete-expired-keys")))
}

// ---- shipped plugins -------------------------------------------------------

#[test]
fn delete_expired_keys_deletes_remediable_keys_and_explains_the_rest() {
    let d = decide(default_plugin(), &policy(""), &findings()).unwrap();
    assert_eq!(
        kinds(&d.proposals),
        vec![
            (0, ActionKind::DeleteAccessKey),
            (1, ActionKind::None),
            (2, ActionKind::None),
            (3, ActionKind::None),
            (4, ActionKind::DeleteAccessKey),
        ]
    );
    let reason = d.proposals[2].reason.as_deref().unwrap();
    assert!(reason.contains("passwords are not handled"), "{reason}");
    assert!(d.peak_memory_bytes > 0 && d.peak_memory_bytes <= 64 << 20);

    let allow = &builtin("delete-expired-keys").allow;
    let (actions, refused) = plan::check_proposals(
        &grants("delete-expired-keys", allow),
        &findings(),
        &d.proposals,
    )
    .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let users: Vec<_> = actions
        .iter()
        .filter(|a| a.action.mutates())
        .map(|a| a.user.as_str())
        .collect();
    assert_eq!(users, ["alice", "dave"]);
}

#[test]
fn deactivate_unused_credentials_deactivates_keys_and_removes_passwords() {
    let plugin = load(&builtin("deactivate-unused-credentials"));
    let d = decide(&plugin, &policy(""), &findings()).unwrap();
    assert_eq!(
        kinds(&d.proposals),
        vec![
            (0, ActionKind::DeactivateAccessKey),
            (1, ActionKind::None),
            (2, ActionKind::DeleteLoginProfile),
            (3, ActionKind::None),
            (4, ActionKind::DeactivateAccessKey),
        ]
    );
    let allow = &builtin("deactivate-unused-credentials").allow;
    let (_, refused) =
        plan::check_proposals(&grants("x", allow), &findings(), &d.proposals).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn builtin_bytes_are_components() {
    for (name, _) in BUILTIN_PLUGINS {
        let bytes = engine_wasm::builtin(name).unwrap_or_else(|| panic!("{name} not embedded"));
        assert!(bytes.starts_with(b"\0asm"));
    }
    assert!(engine_wasm::builtin("nope").is_none());
}

#[test]
fn no_findings_no_proposals() {
    let d = decide(default_plugin(), &policy(""), &[]).unwrap();
    assert!(d.proposals.is_empty());
}

#[test]
fn a_plugin_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Plugin>();
    send_sync::<Host>();
    let plugin = default_plugin();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    let d = decide(plugin, &policy(""), &findings()).unwrap();
                    assert_eq!(d.proposals.len(), 5);
                }
            });
        }
    });
}

// ---- the example custom plugin ----------------------------------------------

#[test]
fn example_deactivates_first_and_deletes_past_twice_the_threshold() {
    let cfg = external("deactivate_then_delete", 1000, 64);
    let plugin = load(&cfg);
    let fs = findings();
    let d = decide(&plugin, &policy(""), &fs).unwrap();
    assert_eq!(
        kinds(&d.proposals),
        vec![
            (0, ActionKind::DeactivateAccessKey),
            (1, ActionKind::None),
            (2, ActionKind::None),
            (3, ActionKind::None),
            (4, ActionKind::DeleteAccessKey),
        ]
    );
    assert_eq!(d.logs.len(), 1, "{:?}", d.logs);
    assert_eq!(d.logs[0].level, LogLevel::Info);
    assert!(d.logs[0].message.contains("1 to delete"), "{:?}", d.logs);

    // External plugins may only deactivate unless the operator grants deletion.
    let (actions, refused) =
        plan::check_proposals(&grants(&cfg.name, &cfg.allow), &fs, &d.proposals).unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason, DenyReason::NotGranted);
    assert_eq!(refused[0].user, "dave");
    assert!(
        actions
            .iter()
            .any(|a| a.action == ActionKind::DeactivateAccessKey)
    );
    let allow = [
        ActionKind::DeactivateAccessKey,
        ActionKind::DeleteAccessKey,
        ActionKind::None,
    ];
    let (_, refused) =
        plan::check_proposals(&grants(&cfg.name, &allow), &fs, &d.proposals).unwrap();
    assert!(refused.is_empty());
}

#[test]
fn example_factor_is_a_policy_parameter() {
    let plugin = load(&external("deactivate_then_delete", 1000, 64));
    let d = decide(&plugin, &policy("delete_after_factor = \"3\""), &findings()).unwrap();
    assert_eq!(d.proposals[4].kind, ActionKind::DeactivateAccessKey);
    let d = decide(&plugin, &policy("delete_after_factor = \"1\""), &findings()).unwrap();
    assert_eq!(d.proposals[0].kind, ActionKind::DeleteAccessKey);
}

#[test]
fn example_bad_parameter_is_the_plugins_own_error() {
    let plugin = load(&external("deactivate_then_delete", 1000, 64));
    let err = decide(
        &plugin,
        &policy("delete_after_factor = \"soon\""),
        &findings(),
    )
    .unwrap_err();
    match &err {
        PluginError::Failed { message, .. } => {
            assert!(message.contains("delete_after_factor"), "{message}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::PluginError);
    assert_eq!(err.to_failure().kind, FailureKind::PluginError);
}

// ---- loading ----------------------------------------------------------------

#[test]
fn sha256_mismatch_shows_expected_and_actual() {
    let mut cfg = external("delete_expired_keys", 1000, 64);
    let actual = match &cfg.source {
        PluginSource::File { sha256, .. } => sha256.clone(),
        PluginSource::Builtin => unreachable!(),
    };
    let wrong = "0".repeat(64);
    if let PluginSource::File { sha256, .. } = &mut cfg.source {
        *sha256 = wrong.clone();
    }
    match host().load(&cfg).unwrap_err() {
        PluginError::Load { reason, .. } => {
            assert!(reason.contains(&wrong), "{reason}");
            assert!(reason.contains(&actual), "{reason}");
            assert!(reason.contains("sha256"), "{reason}");
        }
        other => panic!("expected Load, got {other:?}"),
    }
}

#[test]
fn missing_file_and_non_wasm_are_load_errors() {
    let mut cfg = external("delete_expired_keys", 1000, 64);
    cfg.source = PluginSource::File {
        path: PathBuf::from("/nonexistent/plugin.wasm"),
        sha256: "0".repeat(64),
    };
    assert!(matches!(host().load(&cfg), Err(PluginError::Load { .. })));
    let err = host().load_bytes(&cfg, b"not wasm at all").unwrap_err();
    assert!(matches!(err, PluginError::Load { .. }), "{err}");
    assert_eq!(err.kind(), FailureKind::Load);
}

#[test]
fn unknown_builtin_is_a_load_error() {
    let mut cfg = builtin("delete-expired-keys");
    cfg.name = "no-such-plugin".into();
    assert!(matches!(host().load(&cfg), Err(PluginError::Load { .. })));
}

#[test]
fn wasi_filesystem_import_is_refused_at_load() {
    match host().load(&external("testdata_wasi_filesystem", 1000, 64)) {
        Err(PluginError::Load { reason, .. }) => {
            assert!(reason.contains("wasi:filesystem"), "{reason}");
            assert!(reason.contains("no filesystem"), "{reason}");
        }
        other => panic!("expected Load, got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn wasi_sockets_import_is_refused_at_load() {
    match host().load(&external("testdata_wasi_sockets", 1000, 64)) {
        Err(PluginError::Load { reason, .. }) => {
            assert!(reason.contains("wasi:sockets"), "{reason}");
            assert!(reason.contains("no network"), "{reason}");
        }
        other => panic!("expected Load, got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn other_contract_version_is_a_version_error() {
    let err = host()
        .load(&external("testdata_future_contract", 1000, 64))
        .unwrap_err();
    match &err {
        PluginError::Version {
            found, supported, ..
        } => {
            assert_eq!(found, "0.2.0");
            assert_eq!(supported, "0.1.0");
        }
        other => panic!("expected Version, got {other:?}"),
    }
    assert!(err.to_string().contains("0.2.0") && err.to_string().contains("0.1.0"));
    assert_eq!(err.kind(), FailureKind::Version);
    assert_default_plugin_still_works();
}

// ---- limits -----------------------------------------------------------------

#[test]
fn infinite_loop_is_stopped_within_twice_its_timeout() {
    let plugin = load(&external("testdata_infinite_loop", 200, 64));
    let start = Instant::now();
    let err = decide(&plugin, &policy(""), &findings()).unwrap_err();
    let took = start.elapsed();
    match &err {
        PluginError::Timeout {
            limit_ms,
            elapsed_ms,
            ..
        } => {
            assert_eq!(*limit_ms, 200);
            assert!(*elapsed_ms >= 200, "stopped too early: {elapsed_ms} ms");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(took < Duration::from_millis(400), "took {took:?}");
    assert_eq!(err.kind(), FailureKind::Timeout);
    assert!(err.to_string().contains("timeout_ms"), "{err}");
    // The same plugin times out again (a fresh store each call), and others work.
    assert!(matches!(
        decide(&plugin, &policy(""), &[]),
        Err(PluginError::Timeout { .. })
    ));
    assert_default_plugin_still_works();
}

#[test]
fn memory_bomb_reports_memory_limit() {
    let plugin = load(&external("testdata_memory_bomb", 5000, 16));
    let err = decide(&plugin, &policy(""), &findings()).unwrap_err();
    match &err {
        PluginError::MemoryLimit { limit_mb, .. } => assert_eq!(*limit_mb, 16),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::MemoryLimit);
    assert!(err.to_string().contains("memory_mb = 16"), "{err}");
    assert_default_plugin_still_works();
}

#[test]
fn panic_is_a_trap_with_the_panic_message() {
    let plugin = load(&external("testdata_trap", 1000, 64));
    let err = decide(&plugin, &policy(""), &findings()).unwrap_err();
    match &err {
        PluginError::Trap { message, .. } => {
            assert!(
                message.contains("panics on purpose with 5 findings"),
                "{message}"
            )
        }
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::Trap);
    let err = decide(&plugin, &policy("mode = \"unreachable\""), &findings()).unwrap_err();
    match &err {
        PluginError::Trap { message, .. } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected Trap, got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn millions_of_actions_are_invalid_output() {
    let plugin = load(&external("testdata_huge_output", 5000, 256));
    let err = decide(&plugin, &policy(""), &findings()).unwrap_err();
    match &err {
        PluginError::InvalidOutput { reason, .. } => {
            assert!(
                reason.contains("2000000 actions for 5 finding(s)"),
                "{reason}"
            )
        }
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::InvalidOutput);
    assert_default_plugin_still_works();
}

#[test]
fn giant_reason_is_truncated() {
    let plugin = load(&external("testdata_huge_output", 5000, 64));
    let d = decide(&plugin, &policy("mode = \"giant-reason\""), &findings()).unwrap();
    let reason = d.proposals[0].reason.as_deref().unwrap();
    assert!(reason.len() <= limits::MAX_REASON_BYTES, "{}", reason.len());
    assert!(reason.ends_with('…'));
}

#[test]
fn giant_error_is_truncated() {
    let plugin = load(&external("testdata_huge_output", 5000, 64));
    match decide(&plugin, &policy("mode = \"giant-error\""), &findings()).unwrap_err() {
        PluginError::Failed { message, .. } => {
            assert!(
                message.len() <= limits::MAX_ERROR_BYTES,
                "{}",
                message.len()
            )
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn log_flood_is_capped() {
    let plugin = load(&external("testdata_huge_output", 10_000, 64));
    let d = decide(&plugin, &policy("mode = \"log-flood\""), &findings()).unwrap();
    assert_eq!(d.logs.len(), limits::MAX_LOG_LINES + 1);
    assert!(
        d.logs[..limits::MAX_LOG_LINES]
            .iter()
            .all(|l| l.message.len() <= limits::MAX_LOG_LINE_BYTES)
    );
    let last = d.logs.last().unwrap();
    assert!(
        last.message.contains("9744 more log line(s) dropped"),
        "{}",
        last.message
    );
    assert_eq!(d.proposals.len(), 5);
}

// ---- answers the host checks refuse (engine_core::plan::check_proposals) -----

#[test]
fn out_of_range_index_fails_the_policy() {
    let plugin = load(&external("testdata_bad_index", 1000, 64));
    let fs = findings();
    let d = decide(&plugin, &policy(""), &fs).unwrap();
    assert_eq!(d.proposals[0].finding, 10);
    let failure = plan::check_proposals(
        &grants("bad-index", EXTERNAL_DEFAULT_ALLOW),
        &fs,
        &d.proposals,
    )
    .unwrap_err();
    assert_eq!(failure.kind, FailureKind::InvalidOutput);
    assert!(
        failure.message.contains("finding 10"),
        "{}",
        failure.message
    );
    assert_default_plugin_still_works();
}

#[test]
fn ungranted_and_mismatched_kinds_are_refused() {
    let plugin = load(&external("testdata_denied_kind", 1000, 64));
    let fs = findings();
    let d = decide(&plugin, &policy(""), &fs).unwrap();
    let (actions, refused) = plan::check_proposals(
        &grants("denied-kind", EXTERNAL_DEFAULT_ALLOW),
        &fs,
        &d.proposals,
    )
    .unwrap();
    assert!(actions.iter().all(|a| !a.action.mutates()), "{actions:?}");
    // alice and dave: not granted; carol's password: a key action does not fit.
    let reasons: Vec<_> = refused.iter().map(|r| (r.finding, r.reason)).collect();
    assert!(
        reasons.contains(&(0, DenyReason::NotGranted)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(4, DenyReason::NotGranted)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(2, DenyReason::KindMismatch)),
        "{reasons:?}"
    );

    let d = decide(&plugin, &policy("mode = \"mismatch\""), &fs).unwrap();
    let allow = ActionKind::ALL;
    let (_, refused) =
        plan::check_proposals(&grants("denied-kind", &allow), &fs, &d.proposals).unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r.finding == 0 && r.reason == DenyReason::KindMismatch)
    );
    assert_default_plugin_still_works();
}

#[test]
fn actions_on_exempt_and_root_are_refused() {
    let plugin = load(&external("testdata_exempt_action", 1000, 64));
    let fs = findings();
    let d = decide(&plugin, &policy(""), &fs).unwrap();
    let (actions, refused) = plan::check_proposals(
        &grants("exempt-action", EXTERNAL_DEFAULT_ALLOW),
        &fs,
        &d.proposals,
    )
    .unwrap();
    let acted: Vec<_> = actions.iter().map(|a| a.user.as_str()).collect();
    assert_eq!(acted, ["alice", "dave"]);
    let reasons: Vec<_> = refused
        .iter()
        .map(|r| (r.user.as_str(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("vip", DenyReason::Exempt),
            ("<root_account>", DenyReason::Root)
        ]
    );
    assert_default_plugin_still_works();
}
