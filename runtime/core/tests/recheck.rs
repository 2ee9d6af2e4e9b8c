//! The last look before a write: every reason to hold back, and the one to go.

use chrono::{DateTime, TimeDelta, Utc};
use engine_core::UserNames;
use engine_core::plan::ActionKind;
use engine_core::policy::Rule;
use engine_core::recheck::{self, PasswordNow, Verdict};
use engine_core::snapshot::AccessKeyMeta;
use engine_core::{Basis, Credential, Finding};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-28T12:00:00Z";

fn key_finding(rule: Rule) -> Finding {
    Finding {
        account: None,
        policy: "p".into(),
        rule,
        names: UserNames::new("alice", "arn:aws:iam::1:user/alice"),
        credential: Credential::AccessKey1,
        key_id: Some("AKIAALICE1".into()),
        timestamp: t("2026-08-30T14:00:00Z"),
        basis: Basis::KeyLastUsed,
        age_days: 89,
        threshold_days: 90,
        exempt: false,
        protected: None,
        user_created: Some(t("2020-01-01T00:00:00Z")),
        credential_created: Some(t("2025-01-01T10:00:00Z")),
        stage: Default::default(),
        deactivated_at: None,
    }
}

fn listed(active: bool, created: &str) -> AccessKeyMeta {
    AccessKeyMeta {
        id: "AKIAALICE1".into(),
        active,
        created: t(created),
    }
}

fn skipped(v: Verdict, needle: &str) {
    match v {
        Verdict::Skip(why) => assert!(why.contains(needle), "{why:?} lacks {needle:?}"),
        Verdict::Go => panic!("expected a skip ({needle})"),
    }
}

#[test]
fn a_key_used_since_the_report_is_left_alone() {
    let f = key_finding(Rule::Cis13);
    let key = listed(true, "2025-01-01T10:00:00.300Z");
    // Used an hour ago: no longer unused.
    let used = Some(Some(t(NOW) - TimeDelta::hours(1)));
    skipped(
        recheck::access_key(
            ActionKind::DeactivateAccessKey,
            &f,
            Some(&key),
            used,
            t(NOW),
        ),
        "used since the report, at 2026-11-28T11:00:00Z",
    );
    // Last use unchanged, or newer but still at least the threshold ago: go.
    let old = Some(Some(t(NOW) - TimeDelta::days(90)));
    assert_eq!(
        recheck::access_key(ActionKind::DeactivateAccessKey, &f, Some(&key), old, t(NOW)),
        Verdict::Go
    );
    assert_eq!(
        recheck::access_key(
            ActionKind::DeleteAccessKey,
            &f,
            Some(&key),
            Some(None),
            t(NOW)
        ),
        Verdict::Go
    );
    // A cis-1.3 write without the re-read never goes.
    skipped(
        recheck::access_key(ActionKind::DeleteAccessKey, &f, Some(&key), None, t(NOW)),
        "not re-read",
    );
    // cis-1.4 is about age, not use: no re-read needed.
    let f = key_finding(Rule::Cis14);
    assert_eq!(
        recheck::access_key(ActionKind::DeleteAccessKey, &f, Some(&key), None, t(NOW)),
        Verdict::Go
    );
}

#[test]
fn a_key_that_is_gone_replaced_or_already_inactive_is_left_alone() {
    let f = key_finding(Rule::Cis14);
    skipped(
        recheck::access_key(ActionKind::DeleteAccessKey, &f, None, None, t(NOW)),
        "no longer exists",
    );
    let other = listed(true, "2026-11-01T00:00:00Z");
    skipped(
        recheck::access_key(ActionKind::DeleteAccessKey, &f, Some(&other), None, t(NOW)),
        "not the key the plan saw",
    );
    let inactive = listed(false, "2025-01-01T10:00:00Z");
    skipped(
        recheck::access_key(
            ActionKind::DeactivateAccessKey,
            &f,
            Some(&inactive),
            None,
            t(NOW),
        ),
        "already inactive",
    );
    let mut unknown = f.clone();
    unknown.credential_created = None;
    skipped(
        recheck::access_key(
            ActionKind::DeleteAccessKey,
            &unknown,
            Some(&listed(true, "2025-01-01T10:00:00Z")),
            None,
            t(NOW),
        ),
        "cannot be told apart",
    );
}

fn password_finding() -> Finding {
    Finding {
        credential: Credential::Password,
        key_id: None,
        basis: Basis::PasswordLastUsed,
        credential_created: Some(t("2024-05-01T00:00:00Z")),
        stage: Default::default(),
        deactivated_at: None,
        ..key_finding(Rule::Cis13)
    }
}

fn seen() -> PasswordNow {
    PasswordNow {
        user_created: Some(t("2020-01-01T00:00:00.500Z")),
        last_used: Some(t("2026-06-01T00:00:00Z")),
        profile_created: Some(t("2024-05-01T00:00:00Z")),
    }
}

#[test]
fn the_stale_password_of_the_same_user_goes() {
    assert_eq!(
        recheck::password(&password_finding(), &seen(), t(NOW)),
        Verdict::Go
    );
}

#[test]
fn a_recreated_user_or_a_new_password_is_left_alone() {
    let f = password_finding();
    let recreated = PasswordNow {
        user_created: Some(t("2026-11-28T11:00:00Z")),
        ..seen()
    };
    skipped(
        recheck::password(&f, &recreated, t(NOW)),
        "deleted and re-created",
    );
    let new_password = PasswordNow {
        profile_created: Some(t("2026-11-28T11:00:00Z")),
        ..seen()
    };
    skipped(
        recheck::password(&f, &new_password, t(NOW)),
        "it is a new password",
    );
    let gone = PasswordNow {
        profile_created: None,
        ..seen()
    };
    skipped(recheck::password(&f, &gone, t(NOW)), "no console password");
    let no_user = PasswordNow {
        user_created: None,
        ..seen()
    };
    skipped(recheck::password(&f, &no_user, t(NOW)), "no longer exists");
    let signed_in = PasswordNow {
        last_used: Some(t(NOW) - TimeDelta::minutes(5)),
        ..seen()
    };
    skipped(
        recheck::password(&f, &signed_in, t(NOW)),
        "used since the report",
    );
}
