//! Rule semantics at the boundaries: one hour either side of every threshold.

use chrono::{DateTime, TimeDelta, Utc};
use engine_core::UserNames;
use engine_core::finding::{Basis, Credential, Protection};
use engine_core::policy::{self, PolicyFile, PolicySet};
use engine_core::report::{AccessKey, CredentialReport, CredentialRow, Flag, Stamp};
use engine_core::rules::evaluate;
use engine_core::{Finding, Policy, Stage};

fn now() -> DateTime<Utc> {
    "2026-11-28T00:00:00Z".parse().unwrap()
}

fn policies(toml: &str) -> PolicySet {
    policy::validate(vec![PolicyFile {
        path: "test.toml".into(),
        text: toml.into(),
    }])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()))
}

fn cis13(days: u32) -> Policy {
    policies(&format!(
        "[policy.unused]\nrule = \"cis-1.3\"\nmax_unused_days = {days}\nexempt_users = [\"svc-*\"]\n"
    ))
    .policies
    .remove(0)
}

fn cis14(days: u32) -> Policy {
    policies(&format!(
        "[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = {days}\nexempt_users = [\"svc-*\"]\n"
    ))
    .policies
    .remove(0)
}

const NO_KEY: AccessKey = AccessKey {
    active: false,
    last_rotated: Stamp::NotApplicable,
    last_used_date: Stamp::NotApplicable,
};

fn at(days_ago: i64, plus_hours: i64) -> Stamp {
    Stamp::At(now() - TimeDelta::days(days_ago) + TimeDelta::hours(plus_hours))
}

fn user(name: &str) -> CredentialRow {
    CredentialRow {
        line: 2,
        names: UserNames::new(name, &format!("arn:aws:iam::123456789012:user/{name}")),
        user_creation_time: at(1000, 0),
        password_enabled: Flag::False,
        password_last_used: Stamp::NotApplicable,
        password_last_changed: Stamp::NotApplicable,
        access_keys: [NO_KEY, NO_KEY],
    }
}

fn key(active: bool, rotated: Stamp, used: Stamp) -> AccessKey {
    AccessKey {
        active,
        last_rotated: rotated,
        last_used_date: used,
    }
}

fn run(p: &Policy, rows: Vec<CredentialRow>) -> Vec<Finding> {
    evaluate(p, &CredentialReport { rows }, now())
}

fn creds(f: &[Finding]) -> Vec<(String, Credential)> {
    f.iter()
        .map(|f| (f.user().to_string(), f.credential))
        .collect()
}

#[test]
fn cis14_one_hour_either_side_for_both_slots() {
    let p = cis14(90);
    for slot in 0..2 {
        let cred = [Credential::AccessKey1, Credential::AccessKey2][slot];
        // 90 days + 1 hour old: more than 90 days -> finding.
        let mut over = user("over");
        over.access_keys[slot] = key(true, at(90, -1), at(1, 0));
        // 90 days - 1 hour old: not more than 90 days -> no finding.
        let mut under = user("under");
        under.access_keys[slot] = key(true, at(90, 1), at(1, 0));
        // exactly 90 days: "more than" is strict.
        let mut exact = user("exact");
        exact.access_keys[slot] = key(true, at(90, 0), at(1, 0));
        let f = run(&p, vec![over, under, exact]);
        assert_eq!(creds(&f), vec![("over".to_string(), cred)]);
        assert_eq!(f[0].age_days, 90);
        assert_eq!(f[0].threshold_days, 90);
        assert_eq!(f[0].basis, Basis::KeyLastRotated);
    }
}

#[test]
fn cis14_ignores_inactive_keys_and_passwords() {
    let p = cis14(90);
    let mut u = user("old");
    u.access_keys[0] = key(false, at(500, 0), at(400, 0));
    u.password_enabled = Flag::True;
    u.password_last_used = at(500, 0);
    assert!(run(&p, vec![u]).is_empty());
}

#[test]
fn cis14_slot_2_older_than_slot_1() {
    let p = cis14(90);
    let mut u = user("dave");
    u.access_keys[0] = key(true, at(10, 0), at(1, 0));
    u.access_keys[1] = key(true, at(400, 0), at(300, 0));
    let f = run(&p, vec![u]);
    assert_eq!(
        creds(&f),
        vec![("dave".to_string(), Credential::AccessKey2)]
    );
    assert_eq!(f[0].age_days, 400);
}

#[test]
fn cis13_password_one_hour_either_side() {
    let p = cis13(90);
    let mut over = user("over");
    over.password_enabled = Flag::True;
    over.password_last_used = at(90, 1); // 89 days 23 hours: not yet
    let mut exact = user("exact");
    exact.password_enabled = Flag::True;
    exact.password_last_used = at(90, 0); // exactly 90 days: "at least" -> finding
    let mut past = user("past");
    past.password_enabled = Flag::True;
    past.password_last_used = at(90, -1);
    let f = run(&p, vec![over, exact, past]);
    assert_eq!(
        creds(&f),
        vec![
            ("exact".to_string(), Credential::Password),
            ("past".to_string(), Credential::Password)
        ]
    );
    assert!(f.iter().all(|f| f.basis == Basis::PasswordLastUsed));
}

#[test]
fn cis13_password_disabled_is_never_a_finding() {
    let p = cis13(90);
    let mut u = user("nopw");
    u.password_enabled = Flag::False;
    u.password_last_used = at(500, 0);
    assert!(run(&p, vec![u]).is_empty());
}

#[test]
fn cis13_never_used_password_falls_back_to_last_changed_then_creation() {
    let p = cis13(90);
    let mut changed = user("changed");
    changed.password_enabled = Flag::True;
    changed.password_last_used = Stamp::NoInformation;
    changed.password_last_changed = at(90, -1);
    let mut changed_recent = user("changed-recent");
    changed_recent.password_enabled = Flag::True;
    changed_recent.password_last_used = Stamp::NoInformation;
    changed_recent.password_last_changed = at(90, 1);
    let mut created = user("created");
    created.password_enabled = Flag::True;
    created.password_last_used = Stamp::NoInformation;
    created.password_last_changed = Stamp::NotApplicable;
    created.user_creation_time = at(90, -1);
    let mut created_recent = user("created-recent");
    created_recent.password_enabled = Flag::True;
    created_recent.password_last_used = Stamp::NoInformation;
    created_recent.password_last_changed = Stamp::NotApplicable;
    created_recent.user_creation_time = at(90, 1);
    let f = run(&p, vec![changed, changed_recent, created, created_recent]);
    assert_eq!(
        creds(&f),
        vec![
            ("changed".to_string(), Credential::Password),
            ("created".to_string(), Credential::Password)
        ]
    );
    assert_eq!(f[0].basis, Basis::PasswordLastChanged);
    assert_eq!(f[1].basis, Basis::UserCreationTime);
    assert!(f[1].reason().contains("never used"), "{}", f[1].reason());
}

#[test]
fn cis13_keys_one_hour_either_side_for_both_slots() {
    let p = cis13(90);
    for slot in 0..2 {
        let cred = [Credential::AccessKey1, Credential::AccessKey2][slot];
        let mut over = user("over");
        over.access_keys[slot] = key(true, at(500, 0), at(90, -1));
        let mut under = user("under");
        under.access_keys[slot] = key(true, at(500, 0), at(90, 1));
        let f = run(&p, vec![over, under]);
        assert_eq!(creds(&f), vec![("over".to_string(), cred)]);
        assert_eq!(f[0].basis, Basis::KeyLastUsed);
    }
}

#[test]
fn cis13_never_used_key_falls_back_to_last_rotated() {
    let p = cis13(90);
    let mut old = user("old");
    old.access_keys[1] = key(true, at(90, -1), Stamp::NotApplicable);
    let mut young = user("young");
    young.access_keys[1] = key(true, at(90, 1), Stamp::NotApplicable);
    let f = run(&p, vec![old, young]);
    assert_eq!(creds(&f), vec![("old".to_string(), Credential::AccessKey2)]);
    assert_eq!(f[0].basis, Basis::KeyLastRotated);
    assert!(f[0].reason().contains("never used"));
}

#[test]
fn cis13_inactive_keys_are_not_findings() {
    let p = cis13(90);
    let mut u = user("inactive");
    u.access_keys[0] = key(false, at(900, 0), at(800, 0));
    u.access_keys[1] = key(false, at(900, 0), Stamp::NotApplicable);
    assert!(run(&p, vec![u]).is_empty());
}

#[test]
fn thresholds_are_per_policy() {
    let mut u = user("u");
    u.access_keys[0] = key(true, at(31, 0), at(31, 0));
    assert_eq!(run(&cis14(30), vec![u.clone()]).len(), 1);
    assert_eq!(run(&cis14(31), vec![u.clone()]).len(), 0);
    assert_eq!(run(&cis13(31), vec![u.clone()]).len(), 1);
    assert_eq!(run(&cis13(32), vec![u]).len(), 0);
}

#[test]
fn root_is_reported_and_protected() {
    let mut root = user("<root_account>");
    root.names = UserNames::new("<root_account>", "arn:aws:iam::123456789012:root");
    root.password_enabled = Flag::NotSupported;
    root.password_last_used = at(200, 0);
    root.password_last_changed = Stamp::NotSupported;
    root.access_keys[0] = key(true, at(400, 0), at(300, 0));
    let f13 = run(&cis13(90), vec![root.clone()]);
    let f14 = run(&cis14(90), vec![root]);
    assert_eq!(f13.len(), 2, "password and key");
    assert_eq!(f14.len(), 1);
    for f in f13.iter().chain(&f14) {
        assert_eq!(f.protected, Some(Protection::Root));
        assert!(!f.remediable());
        assert!(!f.exempt);
    }
}

#[test]
fn exempt_users_produce_exempt_findings() {
    let mut u = user("svc-backup");
    u.access_keys[0] = key(true, at(400, 0), at(300, 0));
    let mut other = user("svcbackup");
    other.access_keys[0] = key(true, at(400, 0), at(300, 0));
    let f = run(&cis14(90), vec![u, other]);
    assert_eq!(f.len(), 2);
    assert!(f[0].exempt && !f[0].remediable());
    assert!(!f[1].exempt && f[1].remediable());
}

#[test]
fn findings_carry_controls_and_identity() {
    let mut u = user("alice");
    u.access_keys[0] = key(true, at(100, 0), at(99, 0));
    let f14 = run(&cis14(90), vec![u.clone()]);
    let ids: Vec<String> = f14[0]
        .controls()
        .iter()
        .map(|c| format!("{} {}", c.framework, c.id))
        .collect();
    assert_eq!(
        ids,
        [
            "CIS v1.2 1.4",
            "CIS v1.4-v4.0 1.14",
            "CIS v5.0 1.13",
            "Security Hub IAM.3"
        ]
    );
    let f13 = run(&cis13(90), vec![u]);
    let ids: Vec<String> = f13[0]
        .controls()
        .iter()
        .map(|c| format!("{} {}", c.framework, c.id))
        .collect();
    assert_eq!(
        ids,
        [
            "CIS v1.2 1.3",
            "CIS v1.4-v4.0 1.12",
            "CIS v5.0 1.11",
            "Security Hub IAM.8",
            "Security Hub IAM.22"
        ]
    );
    let f = &f14[0];
    assert_eq!(&*f.policy, "rotate");
    assert_eq!(f.arn(), "arn:aws:iam::123456789012:user/alice");
    assert_eq!(f.key_id, None);
    assert_eq!(Stamp::At(f.timestamp), at(100, 0));
    assert_eq!(f.age_days, 100);
    assert!(f.reason().contains("more than 90"), "{}", f.reason());
}

#[test]
fn future_timestamps_are_not_findings() {
    let mut u = user("skewed");
    u.access_keys[0] = key(true, at(-5, 0), at(-5, 0));
    assert!(run(&cis14(1), vec![u.clone()]).is_empty());
    assert!(run(&cis13(1), vec![u]).is_empty());
}

fn warned(rule: &str, days: u32, warn: u32) -> Policy {
    let key = if rule == "cis-1.3" {
        "max_unused_days"
    } else {
        "max_key_age_days"
    };
    policies(&format!(
        "[policy.p]\nrule = \"{rule}\"\n{key} = {days}\nwarn_before_days = {warn}\n"
    ))
    .policies
    .remove(0)
}

fn stages(f: &[Finding]) -> Vec<(String, Stage)> {
    f.iter().map(|f| (f.user().to_string(), f.stage)).collect()
}

#[test]
fn cis14_upcoming_one_hour_either_side_of_threshold_minus_warning() {
    // 90-day threshold, warned 7 days ahead: 83 days is where it starts.
    let p = warned("cis-1.4", 90, 7);
    let with_key = |name: &str, rotated: Stamp| {
        let mut u = user(name);
        u.access_keys[0] = key(true, rotated, at(1, 0));
        u
    };
    let f = run(
        &p,
        vec![
            with_key("early", at(83, 1)),   // 82 days 23 hours: not yet warned
            with_key("exact", at(83, 0)),   // exactly 83: "more than" is strict
            with_key("warned", at(83, -1)), // 83 days 1 hour: upcoming
            with_key("last", at(90, 1)),    // 89 days 23 hours: still upcoming
            with_key("due", at(90, -1)),    // 90 days 1 hour: due
        ],
    );
    assert_eq!(
        stages(&f),
        vec![
            ("warned".to_string(), Stage::Upcoming),
            ("last".to_string(), Stage::Upcoming),
            ("due".to_string(), Stage::Due),
        ]
    );
    // It says when it will be due, and nothing may be done about it.
    assert_eq!(
        f[0].due_at(),
        now() - TimeDelta::days(83) - TimeDelta::hours(1) + TimeDelta::days(90)
    );
    assert!(
        f[0].reason().ends_with("(more than 90 on 2026-12-04)"),
        "{}",
        f[0].reason()
    );
    assert!(!f[0].remediable());
    assert!(f[2].remediable());
    // Without warn_before_days, only the due one.
    assert_eq!(
        stages(&run(
            &cis14(90),
            vec![with_key("warned", at(83, -1)), with_key("due", at(90, -1))]
        )),
        vec![("due".to_string(), Stage::Due)]
    );
}

#[test]
fn cis13_upcoming_one_hour_either_side_of_threshold_minus_warning() {
    let p = warned("cis-1.3", 90, 7);
    let with_password = |name: &str, used: Stamp| {
        let mut u = user(name);
        u.password_enabled = Flag::True;
        u.password_last_used = used;
        u
    };
    let f = run(
        &p,
        vec![
            with_password("early", at(83, 1)), // 82 days 23 hours
            with_password("exact", at(83, 0)), // exactly 83: "at least" -> upcoming
            with_password("late", at(90, 1)),  // 89 days 23 hours: upcoming
            with_password("due", at(90, 0)),   // exactly 90: due
        ],
    );
    assert_eq!(
        stages(&f),
        vec![
            ("exact".to_string(), Stage::Upcoming),
            ("late".to_string(), Stage::Upcoming),
            ("due".to_string(), Stage::Due),
        ]
    );
}

#[test]
fn warn_before_days_must_be_under_the_threshold() {
    let err = policy::validate(vec![PolicyFile {
        path: "w.toml".into(),
        text: "[policy.p]\nrule = \"cis-1.4\"\nmax_key_age_days = 30\nwarn_before_days = 30\n"
            .into(),
    }])
    .unwrap_err();
    assert!(
        err.render_plain()
            .contains("`warn_before_days` (30) must be less than the policy's threshold (30 days)"),
        "{}",
        err.render_plain()
    );
}

#[test]
fn thresholds_are_exact_to_the_second() {
    let second = TimeDelta::seconds(1);
    let stamp = |days: i64, shift: TimeDelta| Stamp::At(now() - TimeDelta::days(days) + shift);
    // cis-1.4: more than 90 days; warned from more than 83.
    let p = warned("cis-1.4", 90, 7);
    let rows = [
        ("due", stamp(90, -second)),
        ("at-90", stamp(90, TimeDelta::zero())),
        ("upcoming", stamp(83, -second)),
        ("at-83", stamp(83, TimeDelta::zero())),
    ]
    .map(|(name, rotated)| {
        let mut u = user(name);
        u.access_keys[1] = key(true, rotated, Stamp::NotApplicable);
        u
    });
    assert_eq!(
        stages(&run(&p, rows.to_vec())),
        vec![
            ("due".to_string(), Stage::Due),
            ("at-90".to_string(), Stage::Upcoming),
            ("upcoming".to_string(), Stage::Upcoming),
        ]
    );
    // cis-1.3: at least 90 days; warned from at least 83.
    let p = warned("cis-1.3", 90, 7);
    let rows = [
        ("at-90", stamp(90, TimeDelta::zero())),
        ("under-90", stamp(90, second)),
        ("at-83", stamp(83, TimeDelta::zero())),
        ("under-83", stamp(83, second)),
    ]
    .map(|(name, used)| {
        let mut u = user(name);
        u.access_keys[0] = key(true, at(400, 0), used);
        u
    });
    assert_eq!(
        stages(&run(&p, rows.to_vec())),
        vec![
            ("at-90".to_string(), Stage::Due),
            ("under-90".to_string(), Stage::Upcoming),
            ("at-83".to_string(), Stage::Upcoming),
        ]
    );
}

#[test]
fn all_policies_in_one_pass_find_what_each_finds_alone() {
    let set = policies(
        "[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"svc-*\"]\nwarn_before_days = 10\n\
         [policy.unused]\nrule = \"cis-1.3\"\nmax_unused_days = 45\n\
         [policy.strict]\nrule = \"cis-1.4\"\nmax_key_age_days = 30\n",
    );
    let mut rows = vec![];
    for (i, days) in [10, 29, 31, 44, 45, 46, 80, 85, 90, 91, 400]
        .into_iter()
        .enumerate()
    {
        let mut u = user(&format!("{}-{i}", if i % 3 == 0 { "svc" } else { "user" }));
        u.access_keys[i % 2] = key(true, at(days, 0), at(days / 2, 0));
        u.access_keys[(i + 1) % 2] = key(i % 4 == 0, at(days + 3, 0), Stamp::NoInformation);
        if i % 2 == 0 {
            u.password_enabled = Flag::True;
            u.password_last_used = at(days, 1);
        }
        rows.push(u);
    }
    let report = CredentialReport { rows };
    let all = engine_core::rules::evaluate_all(&set.policies, &report, now());
    assert_eq!(all.len(), 3);
    for (p, found) in set.policies.iter().zip(&all) {
        assert_eq!(found, &evaluate(p, &report, now()), "policy {}", p.name);
        assert!(!found.is_empty(), "policy {} finds something", p.name);
    }
    assert_ne!(all[0], all[2], "the thresholds differ");
}
