//! One user from fresh IAM reads: the report row, the slots, the key ids.

use chrono::{DateTime, Utc};
use engine_core::Finding;
use engine_core::finding::{Basis, Credential, Protection};
use engine_core::fresh::{FreshError, FreshKey, FreshReport, FreshUser};
use engine_core::policy::{self, PolicyFile, PolicySet, Rule};
use engine_core::report::{AccessKey, CredentialReport, Flag, Stamp};
use engine_core::rules;
use engine_core::snapshot::{self, AccessKeyMeta, Own};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

const NOW: &str = "2026-11-28T00:00:00Z";

fn policies() -> PolicySet {
    let toml = r#"
[policy.rotate]
rule = "cis-1.4"
max_key_age_days = 90
protect_access_keys = ["AKIADECLARED00000000"]

[policy.unused]
rule = "cis-1.3"
max_unused_days = 90
action = "deactivate-unused-credentials"
"#;
    policy::validate(vec![PolicyFile {
        path: "policies.toml".into(),
        text: toml.into(),
    }])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()))
}

fn key(id: &str, created: &str, last_used: Option<&str>, active: bool) -> FreshKey {
    FreshKey {
        id: id.into(),
        active,
        created: at(created),
        last_used: last_used.map(at),
    }
}

fn user(keys: Vec<FreshKey>) -> FreshUser {
    FreshUser {
        name: "alice".into(),
        arn: "arn:aws:iam::123456789012:user/alice".into(),
        created: at("2024-01-01T00:00:00Z"),
        password_last_used: None,
        login_profile_created: None,
        keys,
    }
}

fn findings(u: &FreshUser, own: &Own) -> Vec<Finding> {
    let set = policies();
    let fresh = FreshReport::new(u).unwrap_or_else(|e| panic!("{e}"));
    set.policies
        .iter()
        .flat_map(|p| fresh.findings(p, own, at(NOW)))
        .collect()
}

#[test]
fn the_row_is_what_a_report_would_say() {
    let mut u = user(vec![
        key("AKIANEWER00000000000", "2026-10-01T10:00:00Z", None, true),
        key(
            "AKIAOLDER00000000000",
            "2025-01-01T10:00:00Z",
            Some("2026-11-01T00:00:00Z"),
            false,
        ),
    ]);
    u.login_profile_created = Some(at("2025-02-02T00:00:00Z"));
    u.password_last_used = Some(at("2025-03-03T00:00:00Z"));
    let fresh = FreshReport::new(&u).unwrap_or_else(|e| panic!("{e}"));
    let [row] = fresh.report.rows.as_slice() else {
        panic!("one row: {:?}", fresh.report);
    };
    assert_eq!(row.user(), "alice");
    assert_eq!(
        row.user_creation_time,
        Stamp::At(at("2024-01-01T00:00:00Z"))
    );
    assert_eq!(row.password_enabled, Flag::True);
    assert_eq!(
        row.password_last_used,
        Stamp::At(at("2025-03-03T00:00:00Z"))
    );
    assert_eq!(
        row.password_last_changed,
        Stamp::At(at("2025-02-02T00:00:00Z"))
    );
    // Slot 1 is the older key, whatever order IAM listed them in.
    assert_eq!(
        row.access_keys[0],
        AccessKey {
            active: false,
            last_rotated: Stamp::At(at("2025-01-01T10:00:00Z")),
            last_used_date: Stamp::At(at("2026-11-01T00:00:00Z")),
        }
    );
    assert_eq!(
        row.access_keys[1],
        AccessKey {
            active: true,
            last_rotated: Stamp::At(at("2026-10-01T10:00:00Z")),
            last_used_date: Stamp::NotApplicable,
        }
    );
    assert_eq!(
        fresh.slots,
        [
            Some("AKIAOLDER00000000000".to_string()),
            Some("AKIANEWER00000000000".to_string())
        ]
    );
    // It survives a round trip through the report's own CSV.
    let reparsed =
        CredentialReport::parse(&fresh.report.to_csv()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reparsed.rows[0].access_keys, row.access_keys);
    assert_eq!(reparsed.rows[0].password_last_used, row.password_last_used);
}

#[test]
fn no_password_and_no_keys() {
    let fresh = FreshReport::new(&user(vec![])).unwrap_or_else(|e| panic!("{e}"));
    let row = &fresh.report.rows[0];
    assert_eq!(row.password_enabled, Flag::False);
    assert_eq!(row.password_last_used, Stamp::NotApplicable);
    assert_eq!(row.password_last_changed, Stamp::NotApplicable);
    assert!(row.access_keys.iter().all(|k| !k.active));
    assert_eq!(fresh.slots, [None, None]);
    assert!(findings(&user(vec![]), &Own::default()).is_empty());
}

#[test]
fn a_password_never_used_is_measured_from_the_login_profile() {
    let mut u = user(vec![]);
    u.login_profile_created = Some(at("2026-01-01T00:00:00Z"));
    let f = findings(&u, &Own::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].credential, Credential::Password);
    assert_eq!(f[0].basis, Basis::PasswordLastChanged);
    assert_eq!(f[0].credential_created, Some(at("2026-01-01T00:00:00Z")));
    assert_eq!(f[0].user_created, Some(at("2024-01-01T00:00:00Z")));
    assert_eq!(f[0].key_id, None);
    // Used recently: no finding.
    u.password_last_used = Some(at("2026-11-27T00:00:00Z"));
    assert!(findings(&u, &Own::default()).is_empty());
}

#[test]
fn key_ids_come_from_the_slots() {
    let u = user(vec![
        key("AKIAYOUNG00000000000", "2026-11-01T00:00:00Z", None, true),
        key(
            "AKIAOLD0000000000000",
            "2025-06-15T12:00:00Z",
            Some("2026-11-27T00:00:00Z"),
            true,
        ),
    ]);
    let f = findings(&u, &Own::default());
    // Only the old key breaks cis-1.4; it is in use, so not cis-1.3.
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].credential, Credential::AccessKey1);
    assert_eq!(f[0].key_id.as_deref(), Some("AKIAOLD0000000000000"));
    assert_eq!(f[0].credential_created, Some(at("2025-06-15T12:00:00Z")));
}

#[test]
fn two_keys_created_in_the_same_second_each_get_their_own_id() {
    let same = "2025-03-01T08:00:00Z";
    let u = user(vec![
        key(
            "AKIATWINA0000000000A",
            same,
            Some("2026-11-27T00:00:00Z"),
            true,
        ),
        key("AKIATWINB0000000000B", same, None, true),
    ]);
    let f = findings(&u, &Own::default());
    // cis-1.4: both too old. cis-1.3: only B, never used since creation.
    let ids = |rule: crate::policy::Rule| -> Vec<(Credential, Option<&str>)> {
        f.iter()
            .filter(|x| x.rule == rule)
            .map(|x| (x.credential, x.key_id.as_deref()))
            .collect()
    };
    assert_eq!(
        ids(Rule::Cis14),
        vec![
            (Credential::AccessKey1, Some("AKIATWINA0000000000A")),
            (Credential::AccessKey2, Some("AKIATWINB0000000000B")),
        ]
    );
    assert_eq!(
        ids(Rule::Cis13),
        vec![(Credential::AccessKey2, Some("AKIATWINB0000000000B"))]
    );
    // The report path would refuse them: its slots cannot be told apart by date.
    let fresh = FreshReport::new(&u).unwrap_or_else(|e| panic!("{e}"));
    let mut from_report = rules::evaluate(&policies().policies[0], &fresh.report, at(NOW));
    let listed = std::collections::BTreeMap::from([(
        "alice".to_string(),
        u.keys
            .iter()
            .map(|k| AccessKeyMeta {
                id: k.id.clone(),
                active: k.active,
                created: k.created,
            })
            .collect(),
    )]);
    let warnings = snapshot::resolve_key_ids(&mut from_report, &fresh.report, &listed);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(from_report.iter().all(|f| f.key_id.is_none()));
}

#[test]
fn the_engines_own_and_declared_keys_are_protected() {
    let u = user(vec![
        key("AKIAOWN0000000000000", "2025-01-01T00:00:00Z", None, true),
        key("AKIADECLARED00000000", "2025-02-01T00:00:00Z", None, true),
    ]);
    let own = Own {
        key_id: Some("AKIAOWN0000000000000".into()),
        user: None,
    };
    let f = findings(&u, &own);
    for x in &f {
        let expected = match (x.key_id.as_deref(), x.rule) {
            (Some("AKIAOWN0000000000000"), _) => Some(Protection::OwnKey),
            // Only the cis-1.4 policy declares it.
            (Some("AKIADECLARED00000000"), Rule::Cis14) => Some(Protection::Declared),
            _ => None,
        };
        assert_eq!(x.protected, expected, "{x:?}");
    }
    // Running as the user itself: every key of it is the engine's own.
    let own = Own::from_arn("arn:aws:iam::123456789012:user/Alice", "AKIAOTHER");
    let f = findings(&u, &own);
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f.iter().all(|x| x.protected == Some(Protection::OwnKey)));
}

#[test]
fn more_than_two_keys_is_an_error() {
    let t = "2025-01-01T00:00:00Z";
    let u = user(vec![
        key("A", t, None, true),
        key("B", t, None, true),
        key("C", t, None, true),
    ]);
    assert_eq!(
        FreshReport::new(&u),
        Err(FreshError::TooManyKeys {
            user: "alice".into(),
            count: 3
        })
    );
}
