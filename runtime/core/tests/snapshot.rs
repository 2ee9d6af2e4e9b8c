//! Slot -> key id resolution and the engine's own key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engine_core::policy::{self, PolicyFile};
use engine_core::report::CredentialReport;
use engine_core::rules::evaluate;
use engine_core::snapshot::{AccessKeyMeta, Own, protect, resolve_key_ids, users_needing_key_ids};
use engine_core::{Credential, Protection};

const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date";

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn setup() -> (Vec<engine_core::Finding>, CredentialReport) {
    let csv = format!(
        "{HEADER}\n\
         <root_account>,arn:r,2019-01-01T00:00:00+00:00,not_supported,N/A,not_supported,true,2020-01-01T00:00:00+00:00,N/A,false,N/A,N/A\n\
         alice,arn:a,2019-01-01T00:00:00+00:00,false,N/A,N/A,true,2025-01-01T10:00:00+00:00,N/A,true,2024-06-01T10:00:00+00:00,N/A\n\
         bob,arn:b,2019-01-01T00:00:00+00:00,true,2020-01-01T00:00:00+00:00,N/A,true,2025-02-01T10:00:00+00:00,N/A,false,N/A,N/A\n\
         carol,arn:c,2019-01-01T00:00:00+00:00,false,N/A,N/A,true,2025-03-01T10:00:00+00:00,N/A,true,2025-03-01T10:00:00+00:00,N/A\n\
         dave,arn:d,2019-01-01T00:00:00+00:00,true,2020-01-01T00:00:00+00:00,N/A,false,N/A,N/A,false,N/A,N/A\n"
    );
    let report = CredentialReport::parse(csv.as_bytes()).unwrap();
    let set = policy::validate(vec![PolicyFile {
        path: "p.toml".into(),
        text: "[policy.rotate]\nrule = \"cis-1.4\"\n[policy.unused]\nrule = \"cis-1.3\"\n".into(),
    }])
    .unwrap();
    let now = t("2026-11-28T00:00:00Z");
    let findings = set
        .policies
        .iter()
        .flat_map(|p| evaluate(p, &report, now))
        .collect();
    (findings, report)
}

fn key(id: &str, created: &str) -> AccessKeyMeta {
    AccessKeyMeta {
        id: id.into(),
        active: true,
        created: t(created),
    }
}

#[test]
fn only_users_with_key_findings_are_listed() {
    let (findings, _) = setup();
    // dave has only a password finding; root is never listed.
    assert_eq!(users_needing_key_ids(&findings), ["alice", "bob", "carol"]);
}

#[test]
fn slots_match_by_create_date_to_the_second() {
    let (mut findings, report) = setup();
    let mut keys = BTreeMap::new();
    // alice: slot 2 is the older key; listed in the other order, with sub-second create dates.
    keys.insert(
        "alice".to_string(),
        vec![
            key("AKIAALICE2", "2024-06-01T10:00:00.400Z"),
            key("AKIAALICE1", "2025-01-01T10:00:00Z"),
        ],
    );
    // bob's key was rotated after the report: no match.
    keys.insert(
        "bob".to_string(),
        vec![key("AKIABOBNEW", "2026-11-27T00:00:00Z")],
    );
    // carol's two keys were created in the same second: ambiguous.
    keys.insert(
        "carol".to_string(),
        vec![
            key("AKIACAROL1", "2025-03-01T10:00:00Z"),
            key("AKIACAROL2", "2025-03-01T10:00:00Z"),
        ],
    );
    let warnings = resolve_key_ids(&mut findings, &report, &keys);
    let id = |user: &str, c: Credential| {
        findings
            .iter()
            .filter(|f| f.user() == user && f.credential == c)
            .map(|f| f.key_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        id("alice", Credential::AccessKey1),
        [Some("AKIAALICE1".into()), Some("AKIAALICE1".into())]
    );
    assert_eq!(
        id("alice", Credential::AccessKey2),
        [Some("AKIAALICE2".into()), Some("AKIAALICE2".into())]
    );
    assert!(
        id("bob", Credential::AccessKey1)
            .iter()
            .all(Option::is_none)
    );
    assert!(
        id("carol", Credential::AccessKey1)
            .iter()
            .all(Option::is_none)
    );
    assert!(
        id("carol", Credential::AccessKey2)
            .iter()
            .all(Option::is_none)
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("bob access_key_1: no access key")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("carol access_key_1: both access key slots")),
        "{warnings:?}"
    );
    // Root keeps no key id.
    assert!(
        findings
            .iter()
            .filter(|f| f.user() == "<root_account>")
            .all(|f| f.key_id.is_none())
    );
}

#[test]
fn twin_slots_stay_ambiguous_when_one_twin_is_gone() {
    // carol's two report slots share one last_rotated second. Her second key
    // was deleted since: the survivor must not be taken for either slot, since
    // it may be the twin in daily use.
    let (mut findings, report) = setup();
    let mut keys = BTreeMap::new();
    keys.insert(
        "carol".to_string(),
        vec![key("AKIACAROL1", "2025-03-01T10:00:00Z")],
    );
    let warnings = resolve_key_ids(&mut findings, &report, &keys);
    let carol: Vec<_> = findings.iter().filter(|f| f.user() == "carol").collect();
    assert_eq!(carol.len(), 4, "two rules x two slots");
    assert!(carol.iter().all(|f| f.key_id.is_none()), "{carol:?}");
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.starts_with("carol ") && w.contains("both access key slots"))
            .count(),
        4,
        "{warnings:?}"
    );
}

fn resolved() -> Vec<engine_core::Finding> {
    let (mut findings, report) = setup();
    let mut keys = BTreeMap::new();
    keys.insert(
        "alice".to_string(),
        vec![
            key("AKIAALICE1", "2025-01-01T10:00:00Z"),
            key("AKIAALICE2", "2024-06-01T10:00:00Z"),
        ],
    );
    keys.insert(
        "bob".to_string(),
        vec![key("AKIABOB1", "2025-02-01T10:00:00Z")],
    );
    resolve_key_ids(&mut findings, &report, &keys);
    findings
}

#[test]
fn the_engines_own_key_is_protected() {
    let mut findings = resolved();
    let own = Own::from_arn(
        "arn:aws:sts::123456789012:assumed-role/engine/run",
        "AKIAALICE2",
    );
    assert_eq!(own.user, None, "an assumed role is no IAM user");
    let n = protect(&mut findings, &own, &[]);
    assert_eq!(n, 2, "cis-1.3 and cis-1.4 findings on that key");
    for f in &findings {
        let own = f.key_id.as_deref() == Some("AKIAALICE2");
        assert_eq!(f.protected == Some(Protection::OwnKey), own);
    }
}

#[test]
fn every_key_of_the_user_the_engine_runs_as_is_protected() {
    // Running as IAM user Alice (any case, any path) with her key 2: her key 1
    // is hers too, and never acted on.
    let mut findings = resolved();
    let own = Own::from_arn("arn:aws:iam::123456789012:user/ops/ALICE", "AKIAALICE2");
    assert_eq!(own.user.as_deref(), Some("ALICE"));
    protect(&mut findings, &own, &[]);
    for f in &findings {
        let alice_key = f.user() == "alice" && f.credential.is_access_key();
        assert_eq!(
            f.protected == Some(Protection::OwnKey),
            alice_key,
            "{} {}",
            f.user(),
            f.credential
        );
    }
    assert!(
        findings
            .iter()
            .any(|f| f.user() == "alice" && f.key_id.as_deref() == Some("AKIAALICE1"))
    );
}

#[test]
fn keys_listed_in_protect_access_keys_are_protected() {
    let mut findings = resolved();
    let own = Own::from_arn(
        "arn:aws:sts::123456789012:assumed-role/engine/run",
        "ASIATEMPORARY",
    );
    let n = protect(&mut findings, &own, &["akiabob1".to_string()]);
    assert_eq!(n, 2);
    for f in &findings {
        let listed = f.key_id.as_deref() == Some("AKIABOB1");
        assert_eq!(f.protected == Some(Protection::Declared), listed);
    }
    // Root stays root.
    assert!(
        findings
            .iter()
            .filter(|f| f.user() == "<root_account>")
            .all(|f| f.protected == Some(Protection::Root))
    );
}
