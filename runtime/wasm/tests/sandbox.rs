//! Real components in the real sandbox: the shipped plugins, the example
//! plugin, and one tiny hostile plugin per limit (plugins/testdata/).
//!
//! Every hostile test also runs a well-behaved plugin in the same [`Host`]
//! afterwards, to show one policy's broken plugin does not affect the others.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use engine_core::UserNames;
use engine_core::finding::{Basis, Credential, Finding, Protection};
use engine_core::plan::{self, ActionKind, DenyReason, FailureKind, Grants, Proposal};
use engine_core::policy::{
    self, BUILTIN_PLUGINS, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS, EXTERNAL_DEFAULT_ALLOW,
    LoadBounds, PluginConfig, PluginSource, Policy, Rule,
};
use engine_wasm::cache::Cache;
use engine_wasm::{
    Decision, FileKind, Host, Invocation, LoadLimit, LogLevel, Origin, Plugin, PluginError, limits,
};
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
        bounds: LoadBounds::DEFAULT,
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
        bounds: LoadBounds::DEFAULT,
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
        account: None,
        policy: "test".into(),
        rule: if credential == Credential::Password {
            Rule::Cis13
        } else {
            Rule::Cis14
        },
        names: UserNames::new(user, &format!("arn:aws:iam::123456789012:user/{user}")),
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
        exempt: user == "vip",
        protected: (user == "<root_account>").then_some(Protection::Root),
        user_created: None,
        credential_created: None,
        stage: Default::default(),
        deactivated_at: None,
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
    let inv = Invocation::new(
        policy,
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        findings,
    );
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
        .map(|a| &*a.user)
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
            assert_eq!(found, "9.0.0");
            assert_eq!(supported, "0.1.0, 0.2.0");
        }
        other => panic!("expected Version, got {other:?}"),
    }
    assert!(err.to_string().contains("9.0.0") && err.to_string().contains("0.1.0, 0.2.0"));
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
    let acted: Vec<_> = actions.iter().map(|a| &*a.user).collect();
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

// ---- hand-written hostile components (tests/fixtures/) ------------------------

const TYPES_WAT: &str = include_str!("fixtures/types.wat");
const DECIDE_WAT: &str = include_str!("fixtures/decide.wat");

/// A fixture's component bytes: `;; @TYPES@`/`;; @DECIDE@` become the shared
/// fragments, `;; @REPEAT@ X` becomes `repeat` copies of X, `@NAME@` a value.
fn fixture(text: &str, vars: &[(&str, String)], repeat: usize) -> Vec<u8> {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if t == ";; @TYPES@" {
            out.push_str(TYPES_WAT);
        } else if t == ";; @DECIDE@" {
            out.push_str(DECIDE_WAT);
        } else if let Some(body) = t.strip_prefix(";; @REPEAT@") {
            for _ in 0..repeat {
                out.push_str(body);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    wat::parse_str(&out).unwrap_or_else(|e| panic!("fixture does not assemble: {e}"))
}

/// A fresh file under the temp dir, unique to this process and `tag`.
fn temp_path(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-wasm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(tag)
}

/// Write `bytes` to a file and load it the way a policy does (pinned by sha256).
fn load_file(tag: &str, bytes: &[u8], memory_mb: u64) -> Result<Plugin, PluginError> {
    let path = temp_path(&format!("{tag}.wasm"));
    std::fs::write(&path, bytes).expect("write fixture");
    let sha256 = sha256_of(&path);
    host().load(&PluginConfig {
        name: tag.to_string(),
        source: PluginSource::File { path, sha256 },
        timeout_ms: 5000,
        memory_mb,
        bounds: LoadBounds::DEFAULT,
        allow: EXTERNAL_DEFAULT_ALLOW.to_vec(),
        origin: None,
    })
}

/// `load` on a thread: a load that hangs fails the test instead of hanging it.
fn load_within(cfg: PluginConfig, limit: Duration) -> Result<Plugin, PluginError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(host().load(&cfg));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("loading did not return within {limit:?}"))
}

fn many_memories(count: usize, pages: u32) -> Vec<u8> {
    fixture(
        include_str!("fixtures/many-memories.wat"),
        &[("PAGES", pages.to_string()), ("COUNT", count.to_string())],
        count,
    )
}

fn many_tables(count: usize, elements: u32) -> Vec<u8> {
    fixture(
        include_str!("fixtures/many-tables.wat"),
        &[
            ("ELEMENTS", elements.to_string()),
            ("COUNT", count.to_string()),
        ],
        count,
    )
}

// Item 11: memory across many memories, tables and instances.

#[test]
fn twenty_memories_of_64_mib_are_refused_at_load() {
    let err = load_file("many-memories-20", &many_memories(20, 1024), 64).unwrap_err();
    match &err {
        PluginError::TooLarge {
            what: LoadLimit::Memories,
            actual,
            limit,
            ..
        } => {
            assert_eq!(*actual, 21, "20 + the main memory");
            assert_eq!(*limit, limits::MAX_MEMORIES as u64);
        }
        other => panic!("expected TooLarge(Memories), got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::Load);
    assert_default_plugin_still_works();
}

#[test]
fn memories_each_under_memory_mb_but_not_together_are_a_memory_limit() {
    // 3 x 24 MiB: each under memory_mb = 64, together 72 MiB.
    let plugin = load_file("many-memories-3x24", &many_memories(3, 384), 64).expect("loads");
    match decide(&plugin, &policy(""), &findings()).unwrap_err() {
        PluginError::MemoryLimit { limit_mb, .. } => assert_eq!(limit_mb, 64),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn peak_memory_is_the_total_of_all_memories() {
    // 3 x 8 MiB + the 64 KiB main memory, under memory_mb = 64.
    let plugin = load_file("many-memories-3x8", &many_memories(3, 128), 64).expect("loads");
    let d = decide(&plugin, &policy(""), &findings()).expect("answers");
    assert!(d.proposals.is_empty());
    assert_eq!(d.peak_memory_bytes, 3 * (8 << 20) + (64 << 10));
}

#[test]
fn eighty_instances_are_refused_at_load() {
    match load_file("many-instances-80", &many_memories(80, 0), 64).unwrap_err() {
        PluginError::TooLarge {
            what: LoadLimit::Instances,
            actual,
            limit,
            ..
        } => {
            // Counted up to where the scan stopped, past the cap.
            assert!(actual > limits::MAX_INSTANCES as u64, "{actual}");
            assert_eq!(limit, limits::MAX_INSTANCES as u64);
        }
        other => panic!("expected TooLarge(Instances), got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn many_tables_are_refused_at_load() {
    match load_file("many-tables-20", &many_tables(20, 10), 64).unwrap_err() {
        PluginError::TooLarge {
            what: LoadLimit::Tables,
            actual,
            ..
        } => assert_eq!(actual, 20),
        other => panic!("expected TooLarge(Tables), got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn tables_count_against_memory_mb() {
    // 8 tables of 100,000 elements: 6.4 MB of host memory, over memory_mb = 4.
    let plugin = load_file("many-tables-8", &many_tables(8, 100_000), 4).expect("loads");
    match decide(&plugin, &policy(""), &findings()).unwrap_err() {
        PluginError::MemoryLimit { limit_mb, .. } => assert_eq!(limit_mb, 4),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    // Within memory_mb, the tables count in the peak.
    let plugin = load_file("many-tables-2", &many_tables(2, 1000), 4).expect("loads");
    let d = decide(&plugin, &policy(""), &findings()).expect("answers");
    assert_eq!(
        d.peak_memory_bytes,
        (64 << 10) + 2 * 1000 * limits::TABLE_ELEMENT_BYTES
    );
    assert_default_plugin_still_works();
}

#[test]
fn unneeded_wasm_features_are_refused_at_load() {
    // multi-memory: two memories in one module.
    let two = wat::parse_str("(component (core module (memory 1) (memory 1)))").unwrap();
    // memory64
    let m64 = wat::parse_str("(component (core module (memory i64 1)))").unwrap();
    // threads: a shared memory
    let shared = wat::parse_str("(component (core module (memory 1 1 shared)))").unwrap();
    for (tag, bytes) in [
        ("multi-memory", two),
        ("memory64", m64),
        ("threads", shared),
    ] {
        match load_file(tag, &bytes, 64) {
            Err(PluginError::Load { reason, .. }) => {
                assert!(
                    reason.contains("not a valid WebAssembly component"),
                    "{tag}: {reason}"
                )
            }
            other => panic!("{tag}: expected Load, got {other:?}"),
        }
    }
    assert_default_plugin_still_works();
}

// Item 12: compile bombs.

#[test]
fn compile_bomb_is_refused_before_compiling() {
    let bomb = fixture(
        include_str!("fixtures/fill-bomb.wat"),
        &[("COUNT", "200000".to_string())],
        200_000,
    );
    assert!(bomb.len() > 1_800_000, "{}", bomb.len());
    let start = Instant::now();
    let err = load_file("fill-bomb", &bomb, 64).unwrap_err();
    let took = start.elapsed();
    match &err {
        PluginError::TooLarge {
            what: LoadLimit::FunctionBodyBytes,
            actual,
            limit,
            ..
        } => {
            assert!(*actual > 1_800_000, "{actual}");
            assert_eq!(*limit, limits::MAX_FUNCTION_BODY_BYTES as u64);
        }
        other => panic!("expected TooLarge(FunctionBodyBytes), got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::Load);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_default_plugin_still_works();
}

#[test]
fn a_compile_past_its_deadline_is_abandoned_with_a_typed_error() {
    let impatient = Host::new()
        .expect("host")
        .with_compile_timeout(Duration::from_millis(1));
    let start = Instant::now();
    // From its file: the builtin itself comes precompiled and is not compiled.
    let cfg = external("delete_expired_keys", DEFAULT_TIMEOUT_MS, DEFAULT_MEMORY_MB);
    match impatient.load(&cfg) {
        Err(PluginError::CompileTimeout { limit_ms, .. }) => assert_eq!(limit_ms, 1),
        other => panic!("expected CompileTimeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_default_plugin_still_works();
}

#[test]
fn shipped_plugins_are_well_within_the_load_limits() {
    for (name, _) in BUILTIN_PLUGINS {
        let bytes = engine_wasm::builtin(name).expect("embedded");
        let stats = engine_wasm::scan::scan(bytes, &Default::default())
            .unwrap_or_else(|_| panic!("{name} refused"));
        println!("{name}: {stats:?}");
        assert!(
            stats.bytes * 8 <= limits::MAX_PLUGIN_FILE_BYTES as u64,
            "{stats:?}"
        );
        assert!(
            stats.max_function_body_bytes * 8 <= limits::MAX_FUNCTION_BODY_BYTES as u64,
            "{stats:?}"
        );
        assert!(
            stats.functions * 8 <= limits::MAX_FUNCTIONS as u64,
            "{stats:?}"
        );
        assert!(
            stats.core_instantiations * 4 <= limits::MAX_INSTANCES as u64,
            "{stats:?}"
        );
        assert!(
            stats.memories * 4 <= limits::MAX_MEMORIES as u64,
            "{stats:?}"
        );
        assert!(stats.tables * 4 <= limits::MAX_TABLES as u64, "{stats:?}");
    }
}

// Item 13: plugin files that are not files.

fn file_cfg(tag: &str, path: PathBuf) -> PluginConfig {
    PluginConfig {
        name: tag.to_string(),
        source: PluginSource::File {
            path,
            sha256: "0".repeat(64),
        },
        timeout_ms: 1000,
        memory_mb: 64,
        bounds: LoadBounds::DEFAULT,
        allow: EXTERNAL_DEFAULT_ALLOW.to_vec(),
        origin: None,
    }
}

fn assert_not_a_file(tag: &str, path: PathBuf, expected: FileKind) {
    match load_within(file_cfg(tag, path), Duration::from_secs(10)) {
        Err(PluginError::NotAFile { found, .. }) => assert_eq!(found, expected, "{tag}"),
        other => panic!("{tag}: expected NotAFile, got {other:?}"),
    }
}

#[test]
fn dev_zero_is_not_read() {
    assert_not_a_file("dev-zero", PathBuf::from("/dev/zero"), FileKind::CharDevice);
    assert_default_plugin_still_works();
}

#[test]
fn a_fifo_is_not_read() {
    let path = temp_path("plugin.fifo");
    let _ = std::fs::remove_file(&path);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    assert_not_a_file("fifo", path.clone(), FileKind::Fifo);
    let _ = std::fs::remove_file(&path);
    assert_default_plugin_still_works();
}

#[test]
fn a_directory_is_not_read() {
    let dir = temp_path("plugin-dir.wasm");
    std::fs::create_dir_all(&dir).expect("dir");
    assert_not_a_file("directory", dir, FileKind::Directory);
    assert_default_plugin_still_works();
}

#[test]
fn an_oversized_file_is_refused_unread() {
    // Sparse: 1 GiB on paper, nothing on disk; refused from its size alone.
    let path = temp_path("huge.wasm");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(1 << 30).expect("set_len");
    drop(file);
    let start = Instant::now();
    match load_within(file_cfg("huge", path.clone()), Duration::from_secs(10)) {
        Err(PluginError::TooLarge {
            what: LoadLimit::FileBytes,
            actual,
            limit,
            ..
        }) => {
            assert_eq!(actual, 1 << 30);
            assert_eq!(limit, limits::MAX_PLUGIN_FILE_BYTES as u64);
        }
        other => panic!("expected TooLarge(FileBytes), got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    let _ = std::fs::remove_file(&path);
    assert_default_plugin_still_works();
}

// Item 14: what the host copies out of a plugin.

fn aliased_reasons() -> Vec<u8> {
    fixture(include_str!("fixtures/aliased-reasons.wat"), &[], 0)
}

fn log_flood(count: u32) -> Vec<u8> {
    fixture(
        include_str!("fixtures/log-flood.wat"),
        &[("COUNT", count.to_string())],
        0,
    )
}

fn many_findings(n: usize) -> Vec<Finding> {
    (0..n)
        .map(|i| finding(&format!("user{i}"), Credential::AccessKey1, 120))
        .collect()
}

#[test]
fn one_string_aliased_by_every_action_is_invalid_output() {
    let plugin = load_file("aliased-reasons", &aliased_reasons(), 64).expect("loads");
    // One action (one 60 MiB reason, cut to MAX_REASON_BYTES) is fine...
    let d = decide(&plugin, &policy(""), &many_findings(1)).expect("one action");
    let reason = d.proposals[0].reason.as_deref().unwrap_or_default();
    assert!(reason.len() <= limits::MAX_REASON_BYTES);
    // ...1,000 of them pointing at the same 60 MiB are not copied 1,000 times.
    match decide(&plugin, &policy(""), &many_findings(1000)).unwrap_err() {
        PluginError::InvalidOutput { .. } => {}
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
    assert_default_plugin_still_works();
}

#[test]
fn giant_log_lines_are_not_copied() {
    let plugin = load_file("log-flood", &log_flood(300), 64).expect("loads");
    let d = decide(&plugin, &policy(""), &findings()).expect("answers");
    // 48 MiB lines: the first two are looked at (the second crosses the
    // memory_mb budget), cut to 4 KiB; the other 298 are dropped unread.
    assert_eq!(d.logs.len(), 3, "{:?}", d.logs.len());
    assert!(
        d.logs[..2]
            .iter()
            .all(|l| l.message.len() <= limits::MAX_LOG_LINE_BYTES)
    );
    let last = &d.logs[2].message;
    assert!(last.contains("298 more log line(s) dropped"), "{last}");
    assert_default_plugin_still_works();
}

/// Run `scenario` in a child process (this test binary, `rss_child`) and
/// return how much its peak RSS (VmHWM) grew during the one call, in KiB.
fn hwm_growth_kib(scenario: &str) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "rss_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ENGINE_WASM_RSS_SCENARIO", scenario)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("hwm-growth-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no measurement in: {stdout}"))
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmHWM in /proc/self/status")
}

#[test]
#[ignore = "run by the RSS tests in a child process"]
fn rss_child() {
    let Ok(scenario) = std::env::var("ENGINE_WASM_RSS_SCENARIO") else {
        return;
    };
    let control = scenario == "control";
    let (bytes, fs) = match scenario.as_str() {
        "aliased-reasons" => (aliased_reasons(), many_findings(1000)),
        "log-flood" | "control" => (log_flood(300), findings()),
        other => panic!("unknown scenario {other}"),
    };
    let plugin = load_file(&scenario, &bytes, 64).expect("loads");
    let p = policy("");
    let before = vm_hwm_kib();
    let result = decide(&plugin, &p, &fs);
    if control {
        // What the host did before: one 48 MiB copy of a line out of the plugin.
        let copy = vec![1u8; 48 << 20];
        std::hint::black_box(&copy);
    }
    let after = vm_hwm_kib();
    println!(
        "result={:?}",
        result.as_ref().map(|d| d.logs.len()).map_err(|e| e.kind())
    );
    println!("hwm-growth-kib={}", after.saturating_sub(before));
}

#[test]
fn answer_and_log_copies_stay_small_in_host_memory() {
    // The plugin's own memory pages it never writes are not resident; what the
    // host would copy out (60 MiB per action, 48 MiB per line) would be.
    // The measurement sees a single 48 MiB host copy (so the bound below can fail).
    let control = hwm_growth_kib("control");
    assert!(control >= 40 << 10, "control grew only {control} KiB");
    for scenario in ["aliased-reasons", "log-flood"] {
        let grew = hwm_growth_kib(scenario);
        println!("{scenario}: peak RSS grew {grew} KiB");
        assert!(
            grew < 24 << 10,
            "{scenario}: peak RSS grew {grew} KiB during the call"
        );
    }
}

// Item 17: a plugin cannot tell a dry run from a real one.

#[test]
fn plugin_context_depends_only_on_what_the_plugin_is_given() {
    let bytes = fixture(include_str!("fixtures/echo.wat"), &[], 0);
    let plugin = load_file("echo", &bytes, 64).expect("loads");
    let fs = findings();
    let first = decide(&plugin, &policy(""), &fs).expect("answers");
    std::thread::sleep(Duration::from_millis(5));
    let again = decide(&plugin, &policy(""), &fs).expect("answers");
    let reasons = |d: &Decision| -> Vec<String> {
        d.proposals
            .iter()
            .map(|p| p.reason.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(reasons(&first), reasons(&again));
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let pol = policy("");
    let id = engine_wasm::invocation_id(&pol, now, &fs);
    assert_eq!(reasons(&first), [id.clone(), "false".to_string()]);
    assert!(id.starts_with("test/"), "{id}");
    // Other findings, other id.
    let other = decide(&plugin, &policy(""), &fs[..2]).expect("answers");
    assert_ne!(reasons(&other)[0], id);
    assert_default_plugin_still_works();
}

#[test]
fn a_function_just_under_the_body_cap_compiles_within_the_deadline() {
    let fills = limits::MAX_FUNCTION_BODY_BYTES / 9 - 100;
    let bytes = fixture(
        include_str!("fixtures/fill-bomb.wat"),
        &[("COUNT", fills.to_string())],
        fills,
    );
    let start = Instant::now();
    let plugin = load_file("fill-under-cap", &bytes, 64);
    let took = start.elapsed();
    println!(
        "{fills} memory.fills: {} bytes, compiled in {took:?}",
        bytes.len()
    );
    let plugin = plugin.unwrap_or_else(|e| panic!("refused: {e}"));
    assert!(took < limits::COMPILE_TIMEOUT);
    assert!(decide(&plugin, &policy(""), &findings()).is_ok());
}

// ---- machine code made before the run: precompiled builtins, the cache ----

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-wasm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn proposals_of(plugin: &Plugin) -> Vec<(u32, ActionKind)> {
    kinds(
        &decide(plugin, &policy(""), &findings())
            .expect("decides")
            .proposals,
    )
}

#[test]
fn builtins_are_precompiled_and_decide_as_compiled_ones() {
    for name in ["delete-expired-keys", "deactivate-unused-credentials"] {
        let pre = load(&builtin(name));
        assert_eq!(pre.origin(), Origin::Precompiled, "{name}");
        // The same component compiled here answers the same.
        let bytes = engine_wasm::builtin(name).expect("builtin");
        let compiled = host().load_bytes(&builtin(name), bytes).expect("compiles");
        assert_eq!(compiled.origin(), Origin::Compiled);
        assert_eq!(proposals_of(&pre), proposals_of(&compiled), "{name}");
    }
}

#[test]
fn machine_code_this_engine_cannot_use_is_compiled_instead() {
    let cfg = builtin("delete-expired-keys");
    let bytes = engine_wasm::builtin("delete-expired-keys").expect("builtin");
    // Made by an engine with other settings (no epoch interruption: its
    // code would not stop at the timeout).
    let mut other = wasmtime::Config::new();
    other.wasm_component_model(true);
    let other = wasmtime::Engine::new(&other).expect("engine");
    let foreign = other.precompile_component(bytes).expect("precompiles");
    // The same bytes as this host makes them: accepted.
    let ours = host()
        .engine()
        .precompile_component(bytes)
        .expect("precompiles");
    for (code, expect) in [
        (&foreign[..], Origin::Compiled),
        (b"not machine code".as_slice(), Origin::Compiled),
        (&ours[..], Origin::Precompiled),
    ] {
        let plugin = host()
            .load_precompiled(&cfg, bytes, code)
            .expect("loads either way");
        assert_eq!(plugin.origin(), expect);
        assert_eq!(proposals_of(&plugin), proposals_of(default_plugin()));
    }
}

#[test]
fn an_external_plugin_is_compiled_once_then_taken_from_the_cache() {
    let dir = scratch("cache");
    let cfg = external(
        "deactivate_then_delete",
        DEFAULT_TIMEOUT_MS,
        DEFAULT_MEMORY_MB,
    );
    let cached_host = || Host::new().expect("host").with_cache(Cache::new(&dir));

    let first = cached_host().load(&cfg).expect("loads");
    assert_eq!(first.origin(), Origin::Compiled);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("cache dir made")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let PluginSource::File { sha256, .. } = &cfg.source else {
        unreachable!()
    };
    let name = entries[0]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    assert!(
        name.starts_with(&format!("{sha256}-")) && name.ends_with(".cwasm"),
        "{name}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&entries[0]), 0o600);
    }

    // Another process (another host) finds it; the answer is the same.
    let second = cached_host().load(&cfg).expect("loads");
    assert_eq!(second.origin(), Origin::Cached);
    assert_eq!(proposals_of(&second), proposals_of(&first));

    // Without the cache, the same file is compiled.
    assert_eq!(host().load(&cfg).expect("loads").origin(), Origin::Compiled);

    // A damaged entry is compiled anew (and replaced).
    std::fs::write(&entries[0], b"garbage").expect("damage");
    let third = cached_host().load(&cfg).expect("loads");
    assert_eq!(third.origin(), Origin::Compiled);
    assert_eq!(proposals_of(&third), proposals_of(&first));
    assert_eq!(
        cached_host().load(&cfg).expect("loads").origin(),
        Origin::Cached
    );

    // Another plugin file is another entry.
    let other = external(
        "testdata_denied_kind",
        DEFAULT_TIMEOUT_MS,
        DEFAULT_MEMORY_MB,
    );
    assert_eq!(
        cached_host().load(&other).expect("loads").origin(),
        Origin::Compiled
    );
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn a_cache_others_can_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("cache-open");
    let cfg = external(
        "deactivate_then_delete",
        DEFAULT_TIMEOUT_MS,
        DEFAULT_MEMORY_MB,
    );
    let cached_host = || Host::new().expect("host").with_cache(Cache::new(&dir));
    assert_eq!(
        cached_host().load(&cfg).expect("loads").origin(),
        Origin::Compiled
    );
    assert_eq!(
        cached_host().load(&cfg).expect("loads").origin(),
        Origin::Cached
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // Anyone could have put machine code there: compiled, never loaded.
    let plugin = cached_host().load(&cfg).expect("loads");
    assert_eq!(plugin.origin(), Origin::Compiled);
    // A cache path that is a file is no cache either, and no error.
    let file = scratch("cache-file");
    std::fs::write(&file, b"x").expect("file");
    let plugin = Host::new()
        .expect("host")
        .with_cache(Cache::new(&file))
        .load(&cfg)
        .expect("loads");
    assert_eq!(plugin.origin(), Origin::Compiled);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_plugins_own_bounds_are_what_the_scan_checks() {
    // The default plugin, loaded from its file: 217 functions, its largest
    // body 5.8 KB. Bounds below those refuse it, naming the key to raise.
    let base = external("delete_expired_keys", DEFAULT_TIMEOUT_MS, DEFAULT_MEMORY_MB);
    let with = |bounds: LoadBounds| PluginConfig {
        bounds,
        ..base.clone()
    };
    let tight_body = LoadBounds {
        max_function_kb: 4,
        ..LoadBounds::DEFAULT
    };
    match host().load(&with(tight_body)).unwrap_err() {
        e @ PluginError::TooLarge {
            what: LoadLimit::FunctionBodyBytes,
            limit: 4096,
            ..
        } => assert!(
            e.to_string()
                .contains("raise max_function_kb in [plugin.delete-expired-keys]"),
            "{e}"
        ),
        other => panic!("expected TooLarge(FunctionBodyBytes), got {other:?}"),
    }
    let few_functions = LoadBounds {
        max_functions: 100,
        ..LoadBounds::DEFAULT
    };
    assert!(matches!(
        host().load(&with(few_functions)).unwrap_err(),
        PluginError::TooLarge {
            what: LoadLimit::Functions,
            limit: 100,
            ..
        }
    ));
    // Raised (or just enough), it loads and decides.
    let enough = LoadBounds {
        max_function_kb: 8,
        max_functions: 300,
        max_file_mb: 1,
    };
    let plugin = host().load(&with(enough)).expect("loads");
    assert_eq!(proposals_of(&plugin), proposals_of(default_plugin()));
}

#[test]
fn the_answer_is_read_before_the_plugin_frees_it() {
    // wasmtime calls the plugin's post-return (where it frees its answer)
    // as soon as the call returns; what the host keeps must already be
    // copied by then, whatever the plugin does to that memory afterwards.
    let bytes = fixture(include_str!("fixtures/post-return-clobbers.wat"), &[], 0);
    let plugin = load_file("post-return-clobbers", &bytes, 64).expect("loads");
    let d = decide(&plugin, &policy(""), &findings()).expect("answers");
    assert_eq!(kinds(&d.proposals), vec![(0, ActionKind::DeleteAccessKey)]);
    assert_eq!(d.proposals[0].reason.as_deref(), Some("kept"));
}
