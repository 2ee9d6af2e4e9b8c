//! Many accounts in one run, against an AWS Organization in moto: accounts in
//! two organizational units, each with its own role and seeded users; one
//! account whose role is missing; an excluded unit. The real binary, the
//! real SDK, STS AssumeRole into each account.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser};
use serde_json::Value;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine");
/// moto's default account: the organization's management account, where the engine runs.
const MANAGEMENT: &str = "123456789012";
const ROLE: &str = "EngineRemediation";

fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// An account of the test organization and what was seeded there.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    unit: &'static str,
    /// The stale user's key (200 days) and the fresh user's (10 days).
    stale_key: String,
    fresh_key: String,
}

struct Org {
    moto: Moto,
    own_key: String,
    dir: PathBuf,
    members: Vec<Member>,
    /// The account whose role was never created.
    broken: String,
    units: BTreeMap<&'static str, String>,
}

impl Org {
    /// `per_unit` accounts in each of the units `workloads` and `sandbox`,
    /// plus one more in `sandbox` without the role, and two in `retired`.
    fn new(name: &str, per_unit: usize) -> Org {
        let moto = Moto::start();
        let own =
            moto.seed(&[SeedUser::new("engine-bot", days_ago(900)).key(days_ago(5), None, true)]);
        let own_key = own[0].keys[0].clone();
        let root = moto.create_organization();
        let mut units = BTreeMap::new();
        for unit in ["workloads", "sandbox", "retired"] {
            units.insert(unit, moto.create_organizational_unit(&root, unit));
        }
        let mut members = Vec::new();
        let mut add = |unit: &'static str, i: usize, role: bool| -> String {
            let id = moto.create_account(&format!("{unit}-{i}"), &root, &units[unit]);
            if role {
                moto.create_role(&id, ROLE, None);
            }
            let seeded = moto.seed_in(
                &id,
                &[
                    SeedUser::new("stale", days_ago(900)).key(
                        days_ago(200),
                        Some(days_ago(1)),
                        true,
                    ),
                    SeedUser::new("fresh", days_ago(900)).key(
                        days_ago(10),
                        Some(days_ago(1)),
                        true,
                    ),
                ],
            );
            members.push(Member {
                id: id.clone(),
                unit,
                stale_key: seeded[0].keys[0].clone(),
                fresh_key: seeded[1].keys[0].clone(),
            });
            id
        };
        for i in 0..per_unit {
            add("workloads", i, true);
            add("sandbox", i, true);
        }
        let broken = add("sandbox", per_unit, false);
        add("retired", 0, true);
        add("retired", 1, true);
        let dir =
            std::env::temp_dir().join(format!("engine-accounts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        Org {
            moto,
            own_key,
            dir,
            members,
            broken,
            units,
        }
    }

    fn write_policies(&self, accounts_table: &str, extra: &str) {
        std::fs::write(
            self.dir.join("policies/policies.toml"),
            format!(
                "{accounts_table}\n[policy.rotate]\nrule = \"cis-1.4\"\nmax_key_age_days = 90\n{extra}\n"
            ),
        )
        .expect("policies");
    }

    fn engine(&self, args: &[&str]) -> Output {
        Command::new(ENGINE)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", &self.own_key)
            .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    fn keys(&self, account: &str) -> BTreeSet<String> {
        self.moto
            .state_in(account)
            .users
            .iter()
            .flat_map(|u| u.keys.iter().map(|k| k.id.clone()))
            .collect()
    }

    fn in_unit(&self, unit: &str) -> Vec<&Member> {
        self.members.iter().filter(|m| m.unit == unit).collect()
    }
}

impl Drop for Org {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(account, key id)` of every action of an accounts plan that applies.
fn applying(doc: &Value) -> BTreeSet<(String, String)> {
    doc["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["plan"]["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["applies"] == true)
        .map(|a| {
            (
                a["account"].as_str().unwrap_or_default().to_string(),
                a["key_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn one_apply_leaves_every_account_of_the_organization_as_its_plan_said() {
    let org = Org::new("org", 10);
    org.write_policies(
        &format!(
            "[accounts]\norganization = true\nexclude = [\"{}\"]\nrole = \"{ROLE}\"\n",
            org.units["retired"]
        ),
        "",
    );
    assert!(
        org.members.len() > 20,
        "at least 20 accounts besides the excluded"
    );
    let check = org.engine(&[
        "check",
        "policies",
        "--format",
        "json",
        "--out",
        "plan.json",
    ]);
    assert_code(&check, 1);
    let doc: Value = serde_json::from_slice(&check.stdout).expect("JSON plan");
    let sections = doc["accounts"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<&str> = sections
        .iter()
        .filter_map(|s| s["account"].as_str())
        .collect();
    // The management account and both units, not the retired one.
    let mut want: BTreeSet<&str> = org
        .members
        .iter()
        .filter(|m| m.unit != "retired")
        .map(|m| m.id.as_str())
        .collect();
    want.insert(MANAGEMENT);
    assert_eq!(ids, want, "{doc:#}");
    let skipped: BTreeSet<&str> = doc["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["account"].as_str())
        .collect();
    let retired: BTreeSet<&str> = org
        .in_unit("retired")
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(skipped, retired, "{doc:#}");
    // The broken account is reported, with why; the others have plans.
    for s in &sections {
        if s["account"] == org.broken.as_str() {
            assert!(s["plan"].is_null(), "{s:#}");
            let e = s["error"].as_str().unwrap_or_default();
            assert!(e.contains("cannot assume role") && e.contains(ROLE), "{e}");
        } else {
            assert!(s["error"].is_null(), "{s:#}");
            assert_eq!(s["plan"]["source"]["account"], s["account"], "{s:#}");
        }
    }
    assert_eq!(doc["summary"]["failed_accounts"], 1, "{:#}", doc["summary"]);
    // Exactly the stale key of each reachable member account.
    let planned = applying(&doc);
    let expected: BTreeSet<(String, String)> = org
        .members
        .iter()
        .filter(|m| m.unit != "retired" && m.id != org.broken)
        .map(|m| (m.id.clone(), m.stale_key.clone()))
        .collect();
    assert_eq!(planned, expected);
    // Every finding and action carries its account.
    for s in sections.iter().filter(|s| !s["plan"].is_null()) {
        for f in s["plan"]["findings"].as_array().into_iter().flatten() {
            assert_eq!(f["account"], s["account"], "{f:#}");
        }
    }

    org.moto.reset_calls();
    let apply = org.engine(&["apply", "plan.json", "--auto-approve", "--format", "json"]);
    assert_code(&apply, 1);
    let report: Value = serde_json::from_slice(&apply.stdout).expect("JSON report");
    assert_eq!(report["failed_accounts"], 1, "{report:#}");
    assert_eq!(report["done"], expected.len(), "{report:#}");
    for m in &org.members {
        let keys = org.keys(&m.id);
        let acted = m.unit != "retired" && m.id != org.broken;
        assert_eq!(!keys.contains(&m.stale_key), acted, "{m:?}: {keys:?}");
        assert!(keys.contains(&m.fresh_key), "{m:?}");
    }
    // moto's writes, per account, are the plan's.
    let writes: BTreeSet<(String, String)> = org
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action == "DeleteAccessKey" && r.status == 200)
        .map(|r| (r.account.unwrap_or_default(), r.key_id.unwrap_or_default()))
        .collect();
    assert_eq!(writes, expected);
    let touched: BTreeSet<String> = org
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action != "AssumeRole")
        .filter_map(|r| r.account)
        .collect();
    for m in org.in_unit("retired") {
        assert!(
            !touched.contains(&m.id),
            "the excluded unit is not even read: {m:?}"
        );
    }
    // The journal: one run per account, each naming it.
    let history = org.engine(&[
        "history",
        "--format",
        "json",
        "--limit",
        "100",
        "--account",
        &org.members[0].id,
    ]);
    assert_code(&history, 0);
    let runs: Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    let runs = runs.as_array().cloned().unwrap_or_default();
    assert!(!runs.is_empty());
    assert!(
        runs.iter()
            .all(|r| r["account"] == org.members[0].id.as_str()),
        "{runs:#?}"
    );
    let apply_run = runs
        .iter()
        .find(|r| r["command"] == "apply")
        .expect("its apply run");
    let acts = apply_run["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(acts.len(), 1, "{apply_run:#}");
    assert_eq!(acts[0]["account"], org.members[0].id.as_str());
    assert_eq!(acts[0]["outcome"], "done");
}

/// The blast-radius cap is per account and policy: an account over it is
/// refused whole, the others act; listed ids, an external id.
#[test]
fn the_cap_holds_per_account_and_listed_ids_are_reached_with_the_external_id() {
    let moto = Moto::start();
    let own = moto.seed(&[SeedUser::new("engine-bot", days_ago(900)).key(days_ago(5), None, true)]);
    let root = moto.create_organization();
    let mut accounts = Vec::new();
    for (i, stale) in [1usize, 3].into_iter().enumerate() {
        let id = moto.create_account(&format!("listed-{i}"), &root, &root);
        moto.create_role(&id, ROLE, Some("ext-1234"));
        let users: Vec<SeedUser> = (0..stale)
            .map(|n| {
                SeedUser::new(&format!("stale-{n}"), days_ago(900)).key(
                    days_ago(200),
                    Some(days_ago(1)),
                    true,
                )
            })
            .collect();
        moto.seed_in(&id, &users);
        accounts.push(id);
    }
    let dir = std::env::temp_dir().join(format!("engine-accounts-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let org = Org {
        moto,
        own_key: own[0].keys[0].clone(),
        dir,
        members: Vec::new(),
        broken: String::new(),
        units: BTreeMap::new(),
    };
    org.write_policies(
        &format!(
            "[accounts]\nids = [\"{}\", \"{}\"]\nrole = \"{ROLE}\"\nexternal_id = \"ext-1234\"\n",
            accounts[0], accounts[1]
        ),
        "max_actions_per_run = 2",
    );
    let out = org.engine(&[
        "apply",
        "policies",
        "--auto-approve",
        "--format",
        "json",
        "--account-concurrency",
        "1",
    ]);
    // A policy over its cap fails its account's plan: exit 1.
    assert_code(&out, 1);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let sections = report["plan"]["accounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let small = sections
        .iter()
        .find(|s| s["account"] == accounts[0].as_str())
        .expect("small");
    let big = sections
        .iter()
        .find(|s| s["account"] == accounts[1].as_str())
        .expect("big");
    assert_eq!(
        small["plan"]["summary"]["delete_access_key"], 1,
        "{small:#}"
    );
    let errors = big["plan"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{big:#}");
    assert_eq!(errors[0]["kind"], "blast-radius");
    assert_eq!(errors[0]["account"], accounts[1].as_str());
    // The small account acted; nothing was written in the big one.
    assert!(
        org.keys(&accounts[0]).is_empty(),
        "{:?}",
        org.keys(&accounts[0])
    );
    assert_eq!(org.keys(&accounts[1]).len(), 3);
    let writes: Vec<_> = org
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action == "DeleteAccessKey")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].account.as_deref(), Some(accounts[0].as_str()));
    // Each AssumeRole names the engine and its run in the session name.
    let assumed: Vec<_> = org
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.action == "AssumeRole")
        .collect();
    assert_eq!(assumed.len(), 2, "one AssumeRole per account: {assumed:?}");

    // A wrong external id: every account fails, nothing is written.
    org.write_policies(
        &format!(
            "[accounts]\nids = [\"{}\"]\nrole = \"{ROLE}\"\nexternal_id = \"wrong-id\"\n",
            accounts[1]
        ),
        "",
    );
    org.moto.reset_calls();
    let out = org.engine(&["apply", "policies", "--auto-approve"]);
    assert_code(&out, 1);
    assert!(
        text(&out.stdout).contains("cannot assume role"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !org.moto
            .requests()
            .iter()
            .any(|r| r.action == "DeleteAccessKey")
    );
}

/// Findings go to Security Hub with what was done; a fixed finding is
/// resolved on the next run; an exempt one stays open.
#[test]
fn security_hub_gets_the_plans_findings_and_resolves_fixed_ones() {
    for import_into in ["engine-account", "each-account"] {
        let moto = Moto::start();
        let own =
            moto.seed(&[SeedUser::new("engine-bot", days_ago(900)).key(days_ago(5), None, true)]);
        let root = moto.create_organization();
        let mut members = Vec::new();
        for i in 0..2 {
            let id = moto.create_account(&format!("hub-{i}"), &root, &root);
            moto.create_role(&id, ROLE, None);
            let seeded = moto.seed_in(
                &id,
                &[
                    SeedUser::new("stale", days_ago(900)).key(
                        days_ago(200),
                        Some(days_ago(1)),
                        true,
                    ),
                    SeedUser::new("break-glass", days_ago(900)).key(
                        days_ago(300),
                        Some(days_ago(1)),
                        true,
                    ),
                    SeedUser::new("fresh", days_ago(900)).key(
                        days_ago(10),
                        Some(days_ago(1)),
                        true,
                    ),
                ],
            );
            members.push((id, seeded[0].keys[0].clone(), seeded[1].keys[0].clone()));
        }
        let dir = std::env::temp_dir().join(format!(
            "engine-accounts-hub-{import_into}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        let org = Org {
            moto,
            own_key: own[0].keys[0].clone(),
            dir,
            members: Vec::new(),
            broken: String::new(),
            units: BTreeMap::new(),
        };
        org.write_policies(
            &format!(
                "[accounts]\nids = [\"{}\", \"{}\"]\nrole = \"{ROLE}\"\n\n[security_hub]\nregion = \"eu-west-1\"\nimport_into = \"{import_into}\"\n",
                members[0].0, members[1].0
            ),
            "exempt_users = [\"break-glass\"]",
        );
        let hub = |account: &str| -> BTreeMap<String, Value> {
            let holder = if import_into == "engine-account" {
                MANAGEMENT
            } else {
                account
            };
            org.moto
                .securityhub_findings(holder, "eu-west-1")
                .into_iter()
                .filter(|f| f["AwsAccountId"] == account)
                .map(|f| (f["Id"].as_str().unwrap_or_default().to_string(), f))
                .collect()
        };
        let first = org.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
        assert_code(&first, 0);
        let report: Value = serde_json::from_slice(&first.stdout).expect("JSON report");
        assert_eq!(
            report["security_hub"].as_array().map(Vec::len),
            Some(2),
            "{report:#}"
        );
        for (account, stale_key, exempt_key) in &members {
            let found = hub(account);
            assert_eq!(found.len(), 2, "{import_into}, {account}: {found:#?}");
            let stale = &found[&format!("engine/{account}/cis-1.4/stale/{stale_key}")];
            assert_eq!(stale["Compliance"]["Status"], "FAILED", "{stale:#}");
            assert_eq!(stale["Compliance"]["SecurityControlId"], "IAM.3");
            assert!(
                stale["Compliance"]["RelatedRequirements"]
                    .as_array()
                    .is_some_and(|r| r
                        .iter()
                        .any(|x| x == "CIS AWS Foundations Benchmark v1.2.0/1.4")),
                "{stale:#}"
            );
            assert_eq!(stale["ProductFields"]["engine/action"], "delete-access-key");
            assert_eq!(stale["ProductFields"]["engine/outcome"], "done");
            assert_eq!(stale["RecordState"], "ACTIVE");
            let holder = if import_into == "engine-account" {
                MANAGEMENT
            } else {
                account.as_str()
            };
            assert_eq!(
                stale["ProductArn"],
                format!("arn:aws:securityhub:eu-west-1:{holder}:product/{holder}/default")
            );
            let exempt = &found[&format!("engine/{account}/cis-1.4/break-glass/{exempt_key}")];
            assert_eq!(exempt["ProductFields"]["engine/exempt"], "true");
        }
        // Fixed (the stale key was deleted): resolved on the next run.
        let second = org.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
        assert_code(&second, 0);
        let report: Value = serde_json::from_slice(&second.stdout).expect("JSON report");
        for e in report["security_hub"].as_array().into_iter().flatten() {
            assert_eq!(
                (e["imported"].as_u64(), e["resolved"].as_u64()),
                (Some(1), Some(1)),
                "{e:#}"
            );
        }
        for (account, stale_key, exempt_key) in &members {
            let found = hub(account);
            let stale = &found[&format!("engine/{account}/cis-1.4/stale/{stale_key}")];
            assert_eq!(stale["Compliance"]["Status"], "PASSED", "{stale:#}");
            assert_eq!(stale["RecordState"], "ARCHIVED");
            assert_eq!(stale["Workflow"]["Status"], "RESOLVED");
            let exempt = &found[&format!("engine/{account}/cis-1.4/break-glass/{exempt_key}")];
            assert_eq!(exempt["Compliance"]["Status"], "FAILED");
            assert_eq!(exempt["RecordState"], "ACTIVE");
        }
        // A third run resolves nothing twice.
        let third = org.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
        assert_code(&third, 0);
        let report: Value = serde_json::from_slice(&third.stdout).expect("JSON report");
        for e in report["security_hub"].as_array().into_iter().flatten() {
            assert_eq!(e["resolved"], 0, "{e:#}");
        }
    }
}
