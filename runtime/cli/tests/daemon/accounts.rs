//! The daemon over many accounts: a scheduled run covers every account of
//! `[accounts]`, each its own journaled run; the metrics say per account.

use super::{Account, WAIT, days_ago, runs_total};
use engine_testkit::SeedUser;

const ROLE: &str = "EngineRemediation";

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
    assert_eq!(daemon.terminate(WAIT), Some(0), "{}", daemon.log());
}
