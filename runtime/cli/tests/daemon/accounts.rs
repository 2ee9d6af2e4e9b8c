//! The daemon over many accounts: a scheduled run covers every account of
//! `[accounts]`, each its own journaled run; the metrics say per account,
//! AWS requests included; Security Hub gets the findings.

use std::collections::{BTreeMap, BTreeSet};

use super::{Account, Metrics, WAIT, days_ago, runs_total};
use chrono::Utc;
use engine_testkit::SeedUser;

const ROLE: &str = "EngineRemediation";

/// moto's default account: the engine's own.
const ENGINE_ACCOUNT: &str = "123456789012";

/// `engine_aws_requests_total` by its `account` label.
fn requests_by_account(m: &Metrics) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in m.matching("engine_aws_requests_total", &[]) {
        let account = s.labels.get("account").cloned().unwrap_or_default();
        *out.entry(account).or_default() += s.value;
    }
    out
}

/// moto's IAM/STS calls, by the account whose credentials made them
/// (`AssumeRole` included: made with the engine's own).
fn moto_calls_by_account(account: &Account) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in account.moto.requests() {
        *out.entry(r.account.unwrap_or_default()).or_default() += 1.0;
    }
    out
}

#[test]
fn a_scheduled_run_covers_every_account_and_the_metrics_name_them() {
    let account = Account::new("daemon-accounts", vec![]);
    let moto = &account.moto;
    let root = moto.create_organization();
    let unit = moto.create_organizational_unit(&root, "workloads");
    let mut members = Vec::new();
    for i in 0..3 {
        let id = moto.create_account(&format!("member-{i}"), &root, &unit);
        if i < 2 {
            moto.create_role(&id, ROLE, Some("engine-ext"));
        }
        let seeded = moto.seed_in(
            &id,
            &[SeedUser::new("stale", days_ago(900)).key(days_ago(200), Some(days_ago(1)), true)],
        );
        members.push((id, seeded[0].keys[0].clone()));
    }
    let ids: Vec<String> = members.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    account.write_policy(
        "rotate.toml",
        &format!(
            "[accounts]\nids = [{}]\nrole = \"{ROLE}\"\nexternal_id = \"engine-ext\"\n\n\
             [policy.rotate]\nrule = \"cis-1.4\"\nschedule = \"*/2 * * * * *\"\n",
            ids.join(", ")
        ),
    );
    let started = Utc::now().timestamp();
    let mut daemon = account.daemon(&[]);
    let s = daemon.wait_status("the first run", |s| runs_total(s) >= 1);
    // Two accounts acted on, the third (no role) failed and said so.
    for (id, key) in &members[..2] {
        let keys: Vec<String> = moto
            .state_in(id)
            .users
            .iter()
            .flat_map(|u| u.keys.iter().map(|k| k.id.clone()))
            .collect();
        assert!(!keys.contains(key), "{id}: {keys:?}");
    }
    let (broken, broken_key) = &members[2];
    assert!(
        moto.state_in(broken)
            .users
            .iter()
            .any(|u| u.keys.iter().any(|k| &k.id == broken_key))
    );
    assert_eq!(
        s["runs"]["failed"], 1,
        "the run with a failed account failed: {s:#}"
    );
    let error = s["policies"][0]["last_run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(broken.as_str()) && error.contains("cannot assume role"),
        "{error}"
    );
    let plan = daemon.plan().expect("a plan");
    let sections = plan["accounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(sections.len(), 3, "{plan:#}");
    let m = daemon.metrics();
    for (id, _) in &members[..2] {
        assert_eq!(
            m.get(
                "engine_actions_total",
                &[
                    ("account", id),
                    ("policy", "rotate"),
                    ("kind", "delete-access-key"),
                    ("outcome", "done")
                ]
            ),
            Some(1.0),
            "{id}: {}",
            m.text
        );
        assert!(
            m.get(
                "engine_account_runs_total",
                &[("account", id), ("result", "ok")]
            ) >= Some(1.0)
        );
    }
    assert!(
        m.get(
            "engine_account_runs_total",
            &[("account", broken), ("result", "failed")]
        ) >= Some(1.0),
        "{}",
        m.text
    );
    // Each account is its own journaled run, naming it.
    let runs = account.scheduled_runs();
    let accounts: std::collections::BTreeSet<&str> =
        runs.iter().filter_map(|r| r["account"].as_str()).collect();
    for (id, _) in &members {
        assert!(accounts.contains(id.as_str()), "{id} in {runs:#?}");
    }
    // AWS requests carry the account they were made in: each member's
    // through its role, the engine's own (GetCallerIdentity, at start and
    // per run) with its own credentials; nothing without an account.
    for (id, _) in &members[..2] {
        assert_eq!(
            m.get(
                "engine_aws_requests_total",
                &[
                    ("account", id),
                    ("operation", "DeleteAccessKey"),
                    ("outcome", "ok")
                ]
            ),
            Some(1.0),
            "{id}: {}",
            m.text
        );
    }
    assert!(
        m.sum(
            "engine_aws_requests_total",
            &[
                ("account", ENGINE_ACCOUNT),
                ("operation", "GetCallerIdentity"),
                ("outcome", "ok")
            ]
        ) >= 2.0,
        "{}",
        m.text
    );
    // Assuming the members' roles is the engine's own call, counted too.
    assert!(
        m.sum(
            "engine_aws_requests_total",
            &[
                ("account", ENGINE_ACCOUNT),
                ("operation", "AssumeRole"),
                ("outcome", "ok")
            ]
        ) >= 2.0,
        "{}",
        m.text
    );
    // Per account, exactly moto's count of the calls made with its
    // credentials, at a moment no run is between two scrapes (a run every
    // 2 s leaves such moments; a wrong label never matches).
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let quiet = (0..40).find_map(|_| {
        let m1 = daemon.metrics();
        let calls = moto_calls_by_account(&account);
        let m2 = daemon.metrics();
        let counted = requests_by_account(&m1);
        let still = counted == requests_by_account(&m2);
        if still && counted == calls {
            return Some(counted);
        }
        last = (counted, calls);
        std::thread::sleep(std::time::Duration::from_millis(100));
        None
    });
    let counted = quiet.unwrap_or_else(|| {
        panic!(
            "engine_aws_requests_total by account {:?} never matched moto's calls {:?}",
            last.0, last.1
        )
    });
    let labelled: BTreeSet<&str> = counted.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [ENGINE_ACCOUNT, members[0].0.as_str(), members[1].0.as_str()]
        .into_iter()
        .collect();
    assert_eq!(labelled, expected, "{counted:?}");
    // Each run assumed the roles as its own session, engine-scheduled-UNIXTIME.
    let now = Utc::now().timestamp();
    let calls = moto.assume_role_calls();
    assert!(calls.len() >= 3, "{calls:#?}");
    for c in &calls {
        let at: i64 = c
            .session
            .as_deref()
            .and_then(|s| s.strip_prefix("engine-scheduled-"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{c:?}"));
        assert!(
            (started..=now).contains(&at),
            "{c:?} within [{started}, {now}]"
        );
        assert_eq!(c.external_id.as_deref(), Some("engine-ext"), "{c:?}");
    }
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}

/// With `[security_hub]`, a scheduled run over the accounts imports each
/// account's findings (here into each account's own Security Hub), and the
/// next resolves those fixed; `engine_security_hub_findings_total{result}`
/// counts what was sent, and the imports are AWS requests of the account
/// that imported.
#[test]
fn scheduled_runs_export_findings_to_security_hub_and_count_them() {
    let account = Account::new("daemon-accounts-hub", vec![]);
    let moto = &account.moto;
    let root = moto.create_organization();
    let mut members = Vec::new();
    for i in 0..2 {
        let id = moto.create_account(&format!("hub-{i}"), &root, &root);
        moto.create_role(&id, ROLE, None);
        let seeded = moto.seed_in(
            &id,
            &[SeedUser::new("stale", days_ago(900)).key(days_ago(200), Some(days_ago(1)), true)],
        );
        members.push((id, seeded[0].keys[0].clone()));
    }
    let ids: Vec<String> = members.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    account.write_policy(
        "rotate.toml",
        &format!(
            "[accounts]\nids = [{}]\nrole = \"{ROLE}\"\n\n\
             [security_hub]\nregion = \"eu-west-1\"\nimport_into = \"each-account\"\n\n\
             [policy.rotate]\nrule = \"cis-1.4\"\nschedule = \"*/2 * * * * *\"\n",
            ids.join(", ")
        ),
    );
    let mut daemon = account.daemon(&[]);
    let sent = |m: &Metrics, result: &str| {
        m.get("engine_security_hub_findings_total", &[("result", result)])
    };
    // The first run imports the two findings (the keys deleted), the
    // second resolves both; later runs have nothing to send.
    let m = daemon.wait_metrics("the findings resolved by a second run", |m| {
        sent(m, "resolved") >= Some(2.0)
    });
    assert_eq!(sent(&m, "imported"), Some(2.0), "{}", m.text);
    assert_eq!(sent(&m, "resolved"), Some(2.0), "{}", m.text);
    assert_eq!(sent(&m, "failed"), Some(0.0), "{}", m.text);
    for (id, key) in &members {
        let held = moto.securityhub_findings(id, "eu-west-1");
        assert_eq!(held.len(), 1, "{id}: {held:#?}");
        let f = &held[0];
        assert_eq!(f["Id"], format!("engine/{id}/cis-1.4/stale/{key}"), "{f:#}");
        assert_eq!(f["AwsAccountId"], id.as_str());
        assert_eq!(f["Compliance"]["SecurityControlId"], "IAM.3", "{f:#}");
        assert_eq!(f["Compliance"]["Status"], "PASSED", "{f:#}");
        assert_eq!(f["RecordState"], "ARCHIVED", "{f:#}");
        // One import per run that had something to send, as that account.
        assert_eq!(
            m.get(
                "engine_aws_requests_total",
                &[
                    ("account", id),
                    ("operation", "BatchImportFindings"),
                    ("outcome", "ok")
                ]
            ),
            Some(2.0),
            "{id}: {}",
            m.text
        );
        let imports = moto
            .api_requests()
            .into_iter()
            .filter(|r| r.path == "/findings/import" && r.account.as_deref() == Some(id.as_str()))
            .count();
        assert_eq!(imports, 2, "{id}");
    }
    assert!(
        m.get(
            "engine_aws_requests_total",
            &[
                ("account", ENGINE_ACCOUNT),
                ("operation", "BatchImportFindings"),
                ("outcome", "ok")
            ]
        )
        .is_none(),
        "nothing imported into the engine's own account: {}",
        m.text
    );
    // Still nothing more once resolved (a run later).
    let runs = runs_total(&daemon.status());
    daemon.wait_status("another run", |s| runs_total(s) > runs);
    let m = daemon.metrics();
    assert_eq!(sent(&m, "imported"), Some(2.0), "{}", m.text);
    assert_eq!(sent(&m, "resolved"), Some(2.0), "{}", m.text);
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}
