//! Findings as Security Hub sees them: stable ids, controls that line up
//! with AWS's own CIS standard, what was done, and resolution when gone.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use engine_core::asff::{self, Status, Taken};
use engine_core::policy::{self, PolicyFile};
use engine_core::report::CredentialReport;
use engine_core::rules;

const REPORT: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated
alice,arn:aws:iam::111111111111:user/alice,2020-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,true,2026-01-01T00:00:00+00:00,2026-11-01T00:00:00+00:00,us-east-1,iam,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A
bob,arn:aws:iam::111111111111:user/bob,2020-01-01T00:00:00+00:00,true,2026-01-01T00:00:00+00:00,2020-01-01T00:00:00+00:00,N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A
";

fn findings(policies: &str) -> Vec<engine_core::Finding> {
    let set = policy::validate(vec![PolicyFile {
        path: "p.toml".into(),
        text: policies.into(),
    }])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()));
    let report = CredentialReport::parse(REPORT.as_bytes()).expect("report");
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    set.policies
        .iter()
        .flat_map(|p| rules::evaluate(p, &report, now))
        .collect()
}

#[test]
fn exports_carry_stable_ids_controls_and_what_was_done() {
    let mut f = findings(
        "[policy.rotate]\nrule = \"cis-1.4\"\n[policy.unused]\nrule = \"cis-1.3\"\nmax_unused_days = 45\n",
    );
    f[0].key_id = Some("AKIAALICE".into());
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let taken = BTreeMap::from([(
        0,
        Taken {
            action: "delete-access-key".into(),
            outcome: "done".into(),
            detail: String::new(),
        },
    )]);
    let out = asff::exports("111111111111", &f, &taken, &BTreeMap::new(), now);
    let rotate = out
        .iter()
        .find(|e| e.id == "engine/111111111111/cis-1.4/alice/AKIAALICE")
        .expect("alice's key by its id");
    assert_eq!(rotate.control, "IAM.3");
    assert_eq!(rotate.status, Status::Failed);
    assert_eq!(rotate.account, "111111111111");
    assert_eq!(rotate.key_id.as_deref(), Some("AKIAALICE"));
    assert!(
        rotate
            .requirements
            .contains(&"CIS AWS Foundations Benchmark v1.2.0/1.4".to_string())
    );
    assert!(
        rotate
            .requirements
            .contains(&"CIS AWS Foundations Benchmark v1.4.0/1.14".to_string())
    );
    assert_eq!(rotate.fields["engine/outcome"], "done");
    assert!(
        rotate.remediation.contains("delete-access-key") && rotate.remediation.contains("done")
    );
    assert_eq!(rotate.first_seen, now);
    // cis-1.3 at 45 days is IAM.22; a password has no key id.
    let pw = out
        .iter()
        .find(|e| e.id == "engine/111111111111/cis-1.3/bob/password")
        .expect("bob's password");
    assert_eq!(pw.control, "IAM.22");
    assert!(pw.remediation.contains("no action"), "{}", pw.remediation);
    assert_eq!(asff::control(engine_core::Rule::Cis13, 90), "IAM.8");
}

#[test]
fn a_finding_gone_since_the_last_import_is_resolved() {
    let f = findings("[policy.rotate]\nrule = \"cis-1.4\"\nexempt_users = [\"alice\"]\n");
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let t1 = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
    let first = asff::exports("1", &f, &BTreeMap::new(), &BTreeMap::new(), t0);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].fields["engine/exempt"], "true");
    let previous: BTreeMap<String, asff::Export> =
        first.iter().map(|e| (e.id.clone(), e.clone())).collect();
    // Still there: updated, first seen kept, nothing resolved.
    let seen = previous
        .iter()
        .map(|(id, e)| (id.clone(), e.first_seen))
        .collect();
    let again = asff::exports("1", &f, &BTreeMap::new(), &seen, t1);
    assert_eq!(again[0].first_seen, t0);
    assert_eq!(again[0].updated_at, t1);
    assert!(asff::gone(&previous, &again, t1).is_empty());
    // Gone: one update that passes and archives it.
    let resolved = asff::gone(&previous, &[], t1);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, first[0].id);
    assert_eq!(resolved[0].status, Status::Passed);
    assert_eq!(resolved[0].updated_at, t1);
    // An already resolved one is not resolved again.
    let archived: BTreeMap<String, asff::Export> =
        resolved.iter().map(|e| (e.id.clone(), e.clone())).collect();
    assert!(asff::gone(&archived, &[], t1).is_empty());
}

#[test]
fn two_policies_of_one_rule_export_one_finding() {
    let f = findings(
        "[policy.a]\nrule = \"cis-1.4\"\n[policy.b]\nrule = \"cis-1.4\"\nmax_key_age_days = 30\n",
    );
    assert_eq!(f.len(), 2);
    let taken = BTreeMap::from([(
        1,
        Taken {
            action: "delete-access-key".into(),
            outcome: "done".into(),
            detail: String::new(),
        },
    )]);
    let out = asff::exports("1", &f, &taken, &BTreeMap::new(), Utc::now());
    assert_eq!(
        out.len(),
        1,
        "one id per account, rule, user and credential"
    );
    assert_eq!(
        out[0].fields["engine/policy"], "b",
        "the one with an action"
    );
}

#[test]
fn upcoming_and_deactivated_findings_are_not_exported() {
    // alice's key is 334 days old: due under 90 days, upcoming under 340
    // days with a 7-day warning.
    let mut f = findings(
        "[policy.rotate]\nrule = \"cis-1.4\"\n[policy.later]\nrule = \"cis-1.4\"\nmax_key_age_days = 340\nwarn_before_days = 7\n",
    );
    let stages: Vec<_> = f.iter().map(|f| (f.policy.to_string(), f.stage)).collect();
    assert_eq!(
        stages,
        vec![
            ("later".to_string(), engine_core::Stage::Upcoming),
            ("rotate".to_string(), engine_core::Stage::Due)
        ]
    );
    // Without the stages, the due one is exported...
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert_eq!(
        asff::exports("111111111111", &f, &BTreeMap::new(), &BTreeMap::new(), now).len(),
        1
    );
    // ...and once the engine deactivated that key, nothing is.
    f[1].stage = engine_core::Stage::Deactivated;
    let out = asff::exports("111111111111", &f, &BTreeMap::new(), &BTreeMap::new(), now);
    assert!(out.is_empty(), "{out:?}");
}
