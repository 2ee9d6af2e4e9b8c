//! Many accounts in one run, against an AWS Organization in moto: accounts in
//! two organizational units, each with its own role and seeded users; one
//! account whose role is missing; an excluded unit. The real binary, the
//! real SDK, STS AssumeRole into each account.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use engine_testkit::{Moto, SeedUser, Span};
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
            // What STS answered, code and message.
            assert!(
                e.contains("AccessDenied: User is not authorized to perform: sts:AssumeRole"),
                "{e}"
            );
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
    for call in org.moto.assume_role_calls() {
        assert_eq!(call.external_id.as_deref(), Some("ext-1234"), "{call:?}");
        let session = call.session.clone().unwrap_or_default();
        assert!(
            session
                .strip_prefix("engine-apply-")
                .is_some_and(|t| t.parse::<i64>().is_ok()),
            "{call:?}"
        );
    }

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

/// A moto of its own with an organization (managed by its default account,
/// where the engine runs as `engine-bot` with a key `own_key_age` days old),
/// and a fresh policy directory; no member account yet.
fn small_org(name: &str, own_key_age: i64, more_own_users: &[SeedUser]) -> (Org, String) {
    let moto = Moto::start();
    let mut users =
        vec![SeedUser::new("engine-bot", days_ago(900)).key(days_ago(own_key_age), None, true)];
    users.extend_from_slice(more_own_users);
    let own = moto.seed(&users);
    let root = moto.create_organization();
    let dir = std::env::temp_dir().join(format!("engine-accounts-{name}-{}", std::process::id()));
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
    (org, root)
}

/// A member account `name` under the root, with the role (or not) and
/// `users`; its id and the seeded users' first keys, by user.
fn member(
    org: &Org,
    root: &str,
    name: &str,
    role: bool,
    users: &[SeedUser],
) -> (String, BTreeMap<String, String>) {
    let id = org.moto.create_account(name, root, root);
    if role {
        org.moto.create_role(&id, ROLE, None);
    }
    let keys = org
        .moto
        .seed_in(&id, users)
        .into_iter()
        .filter_map(|s| Some((s.name, s.keys.first()?.clone())))
        .collect();
    (id, keys)
}

/// A user with one active key `age` days old, used yesterday.
fn with_key(name: &str, age: i64) -> SeedUser {
    SeedUser::new(name, days_ago(900)).key(days_ago(age), Some(days_ago(1)), true)
}

/// Every `AssumeRole` since the last reset named its session
/// `engine-COMMAND-UNIXTIME`, UNIXTIME within `[from, to]` (the run's
/// start); the roles assumed, each once, are `roles`. Returns the session.
#[track_caller]
fn assert_sessions(
    org: &Org,
    command: &str,
    from: i64,
    to: i64,
    roles: &BTreeSet<String>,
) -> String {
    let calls = org.moto.assume_role_calls();
    let mut assumed: Vec<String> = calls
        .iter()
        .map(|c| c.role_arn.clone().unwrap_or_default())
        .collect();
    assumed.sort();
    assert_eq!(
        assumed,
        roles.iter().cloned().collect::<Vec<_>>(),
        "one AssumeRole per role: {calls:#?}"
    );
    let sessions: BTreeSet<String> = calls
        .iter()
        .map(|c| c.session.clone().unwrap_or_default())
        .collect();
    assert_eq!(sessions.len(), 1, "one session name per run: {calls:#?}");
    let session = sessions.into_iter().next().unwrap_or_default();
    let prefix = format!("engine-{command}-");
    let at: i64 = session
        .strip_prefix(&prefix)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("session {session:?} is not {prefix}UNIXTIME"));
    assert!(
        (from..=to).contains(&at),
        "session {session}: {at} not within the run [{from}, {to}]"
    );
    session
}

/// The lines of human output between the line starting with `start` and
/// the next line starting with any of `ends` (or the end).
fn block<'a>(lines: &[&'a str], start: &str, ends: &[&str]) -> Vec<&'a str> {
    let Some(i) = lines.iter().position(|l| l.starts_with(start)) else {
        panic!("no line starting with {start:?} in:\n{}", lines.join("\n"));
    };
    lines[i + 1..]
        .iter()
        .take_while(|l| !ends.iter().any(|e| l.starts_with(e)))
        .copied()
        .collect()
}

/// Human output over a small organization: `check` and `apply` group by
/// account (`== account ID (name) ==`, each with its own summary line), end
/// with a total, show a failed account's error and the accounts left out;
/// `apply` then reports the results per account. Each AssumeRole names the
/// engine, the command and the run's start (`engine-COMMAND-UNIXTIME`).
#[test]
fn human_output_groups_by_account_with_summaries_errors_and_totals() {
    let (org, root) = small_org("human", 5, &[]);
    let (prod, prod_keys) = member(
        &org,
        &root,
        "prod",
        true,
        &[with_key("stale", 200), with_key("fresh", 10)],
    );
    let (dev, dev_keys) = member(&org, &root, "dev", true, &[with_key("old-ci", 300)]);
    let (broken, _) = member(&org, &root, "broken", false, &[with_key("stale", 200)]);
    let (excluded, excluded_keys) =
        member(&org, &root, "excluded", true, &[with_key("stale", 200)]);
    let closed = org.moto.create_account("closed", &root, &root);
    org.moto.close_account(&closed);
    org.write_policies(
        &format!(
            "[accounts]\norganization = true\nexclude = [\"{excluded}\"]\nrole = \"{ROLE}\"\n"
        ),
        "",
    );
    let roles: BTreeSet<String> = [&prod, &dev, &broken]
        .iter()
        .map(|id| format!("arn:aws:iam::{id}:role/{ROLE}"))
        .collect();
    let mut targets = vec![
        MANAGEMENT.to_string(),
        prod.clone(),
        dev.clone(),
        broken.clone(),
    ];
    targets.sort();

    // check
    org.moto.reset_calls();
    let from = Utc::now().timestamp();
    let out = org.engine(&["check", "policies"]);
    let to = Utc::now().timestamp();
    assert_code(&out, 1);
    let session = assert_sessions(&org, "check", from, to, &roles);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "no colour on a pipe: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "engine check: 4 accounts as arn:aws:iam::{MANAGEMENT}:user/engine-bot (role {ROLE}) at "
        )),
        "{stdout}"
    );
    // The accounts left out, with why.
    let left_out: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l.starts_with("  left out account "))
        .copied()
        .collect();
    let closed_line = left_out
        .iter()
        .find(|l| l.contains(closed.as_str()))
        .unwrap_or_else(|| panic!("the closed account is left out: {stdout}"));
    assert!(closed_line.contains(": not active ("), "{closed_line}");
    assert!(
        left_out.contains(format!("  left out account {excluded}: excluded").as_str()),
        "{stdout}"
    );
    assert_eq!(left_out.len(), 2, "{stdout}");
    // One section per account, by id, named as the organization names it.
    let headers: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("== account "))
        .copied()
        .collect();
    let names: BTreeMap<&str, &str> = [
        (prod.as_str(), "prod"),
        (dev.as_str(), "dev"),
        (broken.as_str(), "broken"),
    ]
    .into_iter()
    .collect();
    assert_eq!(headers.len(), 4, "{stdout}");
    for (header, id) in headers.iter().zip(&targets) {
        match names.get(id.as_str()) {
            Some(name) => assert_eq!(*header, format!("== account {id} ({name}) =="), "{stdout}"),
            None => assert!(
                header.starts_with(&format!("== account {id}")) && header.ends_with(" =="),
                "{stdout}"
            ),
        }
    }
    let ends = ["== account ", "Total: "];
    let section = |id: &str| block(&lines, &format!("== account {id}"), &ends);
    let one_delete = "Plan: 1 to delete, 0 to deactivate, 0 console passwords to remove. 1 finding in 1 policy: 0 exempt, 0 protected, 0 refused.";
    for (id, user, key) in [
        (&prod, "stale", &prod_keys["stale"]),
        (&dev, "old-ci", &dev_keys["old-ci"]),
    ] {
        let s = section(id);
        let body = s.join("\n");
        assert!(
            s.iter().any(|l| l.starts_with(&format!(
                "engine check: 1 policy against account {id} at "
            ))),
            "{body}"
        );
        // Reached as the session: what CloudTrail shows there.
        assert!(
            s.iter().any(|l| l.starts_with(&format!(
                "running as arn:aws:sts::{id}:assumed-role/{ROLE}/{session} with access key "
            ))),
            "{body}"
        );
        let row = s
            .iter()
            .find(|l| l.contains(key.as_str()))
            .unwrap_or_else(|| panic!("{id}: no line for {key}:\n{body}"));
        assert!(
            row.trim_start().starts_with(&format!("- {user} "))
                && row.contains("will delete access key"),
            "{row}"
        );
        // Its own summary line, last of its section.
        assert_eq!(
            s.iter().rev().find(|l| !l.is_empty()).copied(),
            Some(one_delete),
            "{body}"
        );
        // Nothing of another account in this section.
        for other in [
            &prod_keys["stale"],
            &prod_keys["fresh"],
            &dev_keys["old-ci"],
        ] {
            assert!(other == key || !body.contains(other.as_str()), "{body}");
        }
    }
    let b = section(&broken);
    assert_eq!(
        b.iter().filter(|l| !l.is_empty()).count(),
        1,
        "only the error: {b:#?}"
    );
    assert!(
        b[0].starts_with(&format!(
            "  error: cannot assume role arn:aws:iam::{broken}:role/{ROLE}"
        )) && b[0].contains("AccessDenied"),
        "{b:#?}"
    );
    let m = section(MANAGEMENT);
    assert!(m.iter().any(|l| l.trim() == "no findings"), "{m:#?}");
    assert_eq!(
        m.iter().rev().find(|l| !l.is_empty()).copied(),
        Some(
            "Plan: 0 to delete, 0 to deactivate, 0 console passwords to remove. 0 findings in 1 policy: 0 exempt, 0 protected, 0 refused."
        ),
        "{m:#?}"
    );
    assert!(!stdout.contains(&excluded_keys["stale"]), "{stdout}");
    let total = "Total: 4 accounts (1 failed): 2 to delete, 0 to deactivate, 0 console passwords to remove. 2 findings: 0 exempt, 0 protected, 0 refused, 2 accounts left out.";
    assert_eq!(lines.last().copied(), Some(total), "{stdout}");

    // apply: the same plan, then the results per account, then a total.
    org.moto.reset_calls();
    let from = Utc::now().timestamp();
    let out = org.engine(&["apply", "policies", "--auto-approve"]);
    let to = Utc::now().timestamp();
    assert_code(&out, 1);
    assert_sessions(&org, "apply", from, to, &roles);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&total), "the plan first: {stdout}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("== account "))
            .count(),
        4,
        "{stdout}"
    );
    let results_at = lines.iter().position(|l| *l == total).unwrap_or_default();
    let results = &lines[results_at + 1..];
    let headers: Vec<&str> = results
        .iter()
        .filter(|l| l.starts_with("account "))
        .copied()
        .collect();
    assert_eq!(headers.len(), 4, "{stdout}");
    for (header, id) in headers.iter().zip(&targets) {
        match names.get(id.as_str()) {
            Some(name) => assert_eq!(*header, format!("account {id} ({name}):"), "{stdout}"),
            None => assert!(header.starts_with(&format!("account {id}")), "{stdout}"),
        }
    }
    let ends = ["account ", "Applied in "];
    let result = |id: &str| -> Vec<&str> {
        block(results, &format!("account {id}"), &ends)
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect()
    };
    for (id, user, key) in [
        (&prod, "stale", &prod_keys["stale"]),
        (&dev, "old-ci", &dev_keys["old-ci"]),
    ] {
        let r = result(id);
        assert_eq!(r.len(), 1, "{id}: one result: {r:#?}");
        let words: Vec<&str> = r[0].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "done",
                "delete-access-key",
                user,
                "access_key_1",
                key.as_str(),
                "rotate"
            ],
            "{r:#?}"
        );
    }
    let r = result(&broken);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert!(
        r[0].starts_with("  error: cannot assume role") && r[0].contains(broken.as_str()),
        "{r:#?}"
    );
    assert!(result(MANAGEMENT).is_empty(), "nothing to do there");
    assert_eq!(
        lines.last().copied(),
        Some(
            "Applied in 4 accounts (1 failed): 2 done, 0 done on retry, 0 already gone, 0 skipped, 0 failed."
        ),
        "{stdout}"
    );
    // As reported: the stale keys are gone, nothing else was touched.
    assert!(!org.keys(&prod).contains(&prod_keys["stale"]));
    assert!(org.keys(&prod).contains(&prod_keys["fresh"]));
    assert!(!org.keys(&dev).contains(&dev_keys["old-ci"]));
    assert!(org.keys(&excluded).contains(&excluded_keys["stale"]));
    assert_eq!(org.keys(&broken).len(), 1);
}

/// A credential report that fails in one account (its role may not read it)
/// is that account's error: the others are carried out, the command exits
/// 1, the failure is journaled for that account. The engine's own account,
/// a target like the others, is reached with its own credentials, and its
/// own key is protected there, however old.
#[test]
fn a_failing_report_is_its_accounts_error_and_the_engines_own_key_is_protected_in_its_account() {
    let (org, root) = small_org("failures", 400, &[with_key("old-admin", 200)]);
    let own_state = org.moto.state();
    let old_admin_key = own_state
        .user("old-admin")
        .and_then(|u| u.keys.first())
        .map(|k| k.id.clone())
        .expect("old-admin's key");
    let (ok, ok_keys) = member(&org, &root, "ok", true, &[with_key("stale", 200)]);
    let (denied, denied_keys) = member(&org, &root, "denied", true, &[with_key("stale", 200)]);
    org.write_policies(
        &format!("[accounts]\norganization = true\nrole = \"{ROLE}\"\n"),
        "",
    );
    // The report calls of that account only are refused, as AWS refuses a
    // role without iam:GenerateCredentialReport / iam:GetCredentialReport.
    org.moto.faults_in(
        &engine_testkit::Faults {
            actions: Some(vec![
                "GenerateCredentialReport".into(),
                "GetCredentialReport".into(),
            ]),
            ..engine_testkit::Faults::default()
        },
        &engine_testkit::FaultScope {
            accounts: vec![denied.clone()],
            deny: 1.0,
            latency: None,
        },
    );
    org.moto.reset_calls();
    let from = Utc::now().timestamp();
    let out = org.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
    let to = Utc::now().timestamp();
    assert_code(&out, 1);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let sections = report["plan"]["accounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let section = |id: &str| -> Value {
        sections
            .iter()
            .find(|s| s["account"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no section {id}: {report:#}"))
    };
    assert_eq!(sections.len(), 3, "{report:#}");
    // The account whose report failed: its error, no plan.
    let d = section(&denied);
    assert!(d["plan"].is_null(), "{d:#}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot get the credential report: GetCredentialReport: access denied"),
        "{error}"
    );
    assert_eq!(report["failed_accounts"], 1, "{report:#}");
    assert_eq!(report["plan"]["summary"]["failed_accounts"], 1);
    let row = report["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["account"] == denied.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["error"], d["error"], "{row:#}");
    assert!(
        row["results"].as_array().is_some_and(Vec::is_empty),
        "{row:#}"
    );
    // The others were carried out: the member's stale key and the engine's
    // account's old-admin key, nothing in the failed account.
    assert_eq!(report["done"], 2, "{report:#}");
    assert!(!org.keys(&ok).contains(&ok_keys["stale"]));
    assert!(org.keys(&denied).contains(&denied_keys["stale"]));
    let requests = org.moto.requests();
    let deletes: BTreeSet<(String, String)> = requests
        .iter()
        .filter(|r| r.action == "DeleteAccessKey")
        .map(|r| {
            (
                r.account.clone().unwrap_or_default(),
                r.key_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (ok.clone(), ok_keys["stale"].clone()),
        (MANAGEMENT.to_string(), old_admin_key.clone()),
    ]
    .into_iter()
    .collect();
    assert_eq!(deletes, expected);
    // The fault was that account's alone: the others read their reports.
    for r in requests
        .iter()
        .filter(|r| r.action == "GetCredentialReport")
    {
        let in_denied = r.account.as_deref() == Some(denied.as_str());
        assert_eq!(r.status == 403, in_denied, "{r:?}");
    }
    // The engine's own account: reached with its own credentials (no
    // AssumeRole there), its own key found stale and protected, never acted on.
    let m = section(MANAGEMENT);
    assert!(m["role_arn"].is_null(), "{m:#}");
    let roles: BTreeSet<String> = [&ok, &denied]
        .iter()
        .map(|id| format!("arn:aws:iam::{id}:role/{ROLE}"))
        .collect();
    let session = assert_sessions(&org, "apply", from, to, &roles);
    assert_eq!(
        m["plan"]["source"]["own_key_id"],
        org.own_key.as_str(),
        "{m:#}"
    );
    let own = m["plan"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["user"] == "engine-bot")
        .cloned()
        .unwrap_or_else(|| panic!("the own key's finding: {m:#}"));
    assert_eq!(own["key_id"], org.own_key.as_str(), "{own:#}");
    assert_eq!(own["protected"], "own-key", "{own:#}");
    assert!(
        !m["plan"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["key_id"] == org.own_key.as_str() && a["applies"] == true),
        "{m:#}"
    );
    assert!(
        org.moto
            .state()
            .user("engine-bot")
            .is_some_and(|u| u.key(&org.own_key).is_some_and(|k| k.status == "Active")),
        "the engine's own key is untouched"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.key_id.as_deref() == Some(org.own_key.as_str())
                && r.action != "GetAccessKeyLastUsed"
                && r.action != "ListAccessKeys"),
        "no write names the engine's own key"
    );
    // A member is reached as the run's session.
    let o = section(&ok);
    assert_eq!(
        o["plan"]["source"]["identity"],
        format!("arn:aws:sts::{ok}:assumed-role/{ROLE}/{session}"),
        "{o:#}"
    );
    // The failure is journaled for its account.
    let history = org.engine(&["history", "--format", "json", "--account", &denied]);
    assert_code(&history, 0);
    let runs: Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    let runs = runs.as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["command"], "apply");
    assert_eq!(runs[0]["account"], denied.as_str());
    assert_eq!(runs[0]["status"], "failed", "{:#}", runs[0]);
    assert!(runs[0]["actions"].as_array().is_some_and(Vec::is_empty));
}

/// The most calls in flight at once at the server, over the spans `group`
/// names (the others are left out): how many groups had calls in flight at
/// the same instant, and how many calls one group had. The most overlap
/// begins when some call arrives, so those instants are enough.
fn in_flight(spans: &[Span], group: impl Fn(&Span) -> Option<String>) -> (usize, usize) {
    let counted: Vec<(String, f64, f64)> = spans
        .iter()
        .filter_map(|s| {
            let g = group(s)?;
            let done = s
                .done
                .unwrap_or_else(|| panic!("a call was never answered: {s:?}"));
            Some((g, s.at, done))
        })
        .collect();
    let (mut groups, mut calls) = (0, 0);
    for (_, t, _) in &counted {
        let mut now: BTreeMap<&str, usize> = BTreeMap::new();
        for (g, at, done) in &counted {
            if at <= t && t < done {
                *now.entry(g.as_str()).or_default() += 1;
            }
        }
        groups = groups.max(now.len());
        calls = calls.max(now.values().copied().max().unwrap_or(0));
    }
    (groups, calls)
}

/// `--account-concurrency N` accounts are worked on at once, each with
/// `--concurrency M` calls of its own, at most: with 60 ms a call, moto's
/// log of when each call arrived and was answered shows the overlaps.
#[test]
fn at_most_account_concurrency_accounts_and_concurrency_calls_each_are_in_flight() {
    let (org, root) = small_org("concurrency", 5, &[]);
    let mut members = Vec::new();
    for i in 0..4 {
        let users: Vec<SeedUser> = (0..3)
            .map(|u| with_key(&format!("stale-{u}"), 200))
            .collect();
        members.push(member(&org, &root, &format!("member-{i}"), true, &users));
    }
    let ids: Vec<String> = members.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    org.write_policies(
        &format!(
            "[accounts]\nids = [{}]\nrole = \"{ROLE}\"\n",
            ids.join(", ")
        ),
        "",
    );
    org.moto.faults_with_latency(
        &engine_testkit::Faults::default(),
        Duration::from_millis(60),
    );
    org.moto.reset_calls();
    let out = org.engine(&[
        "apply",
        "policies",
        "--auto-approve",
        "--format",
        "json",
        "--account-concurrency",
        "2",
        "--concurrency",
        "2",
    ]);
    assert_code(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["done"], 12, "{report:#}");
    for (id, keys) in &members {
        for key in keys.values() {
            assert!(!org.keys(id).contains(key), "{id}: {key}");
        }
    }
    let spans = org.moto.request_spans();
    let member_ids: BTreeSet<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    // The members' own calls (signed with their roles' credentials).
    let (accounts, calls) = in_flight(&spans, |s| {
        s.account
            .as_deref()
            .filter(|a| member_ids.contains(a))
            .map(str::to_string)
    });
    assert_eq!(
        accounts, 2,
        "at most 2 accounts at once, and 2 indeed: {spans:#?}"
    );
    assert_eq!(
        calls, 2,
        "at most 2 calls at once in an account, and 2 indeed: {spans:#?}"
    );
    // Every member was worked on, and each made several calls.
    for id in &member_ids {
        let n = spans
            .iter()
            .filter(|s| s.account.as_deref() == Some(*id))
            .count();
        assert!(n >= 9, "{id}: {n} calls");
    }
}

/// Security Hub takes 100 findings a call: 130 findings of one account are
/// imported in two `BatchImportFindings` calls (100, then 30), and every one
/// is in Security Hub; the next run resolves those gone and updates the
/// others, again in two calls.
#[test]
fn security_hub_imports_more_than_100_findings_100_a_call() {
    let (org, root) = small_org("hub-batches", 5, &[]);
    let users: Vec<SeedUser> = (0..130)
        .map(|u| with_key(&format!("stale-{u:03}"), 200))
        .collect();
    let (id, keys) = member(&org, &root, "many", true, &users);
    org.write_policies(
        &format!(
            "[accounts]\nids = [\"{id}\"]\nrole = \"{ROLE}\"\n\n[security_hub]\nregion = \"eu-west-1\"\n"
        ),
        "mode = \"report\"",
    );
    let imports = |org: &Org| -> Vec<(usize, u16, String)> {
        org.moto
            .api_requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/findings/import")
            .map(|r| {
                (
                    r.findings.unwrap_or_default(),
                    r.status,
                    r.account.unwrap_or_default(),
                )
            })
            .collect()
    };
    let expected_ids: BTreeSet<String> = keys
        .iter()
        .map(|(user, key)| format!("engine/{id}/cis-1.4/{user}/{key}"))
        .collect();
    assert_eq!(expected_ids.len(), 130);

    org.moto.reset_calls();
    let out = org.engine(&["apply", "policies", "--auto-approve", "--format", "json"]);
    assert_code(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        report["security_hub"],
        serde_json::json!([{"account": id, "imported": 130, "resolved": 0, "failed": [], "error": null}]),
        "{:#}",
        report["security_hub"]
    );
    let management = MANAGEMENT.to_string();
    assert_eq!(
        imports(&org),
        [
            (100, 200, management.clone()),
            (30, 200, management.clone())
        ],
        "ceil(130 / 100) = 2 calls, the second with the rest"
    );
    let held: BTreeMap<String, Value> = org
        .moto
        .securityhub_findings(MANAGEMENT, "eu-west-1")
        .into_iter()
        .map(|f| (f["Id"].as_str().unwrap_or_default().to_string(), f))
        .collect();
    assert_eq!(
        held.keys().cloned().collect::<BTreeSet<_>>(),
        expected_ids,
        "every finding was imported"
    );
    assert!(
        held.values()
            .all(|f| f["Compliance"]["Status"] == "FAILED" && f["AwsAccountId"] == id.as_str()),
        "{held:#?}"
    );

    // 31 keys deleted behind the engine's back: 99 findings again and 31
    // resolved, 130 updates in two calls.
    let gone: Vec<(&String, &String)> = keys.iter().take(31).collect();
    org.moto.mutate_in(
        &id,
        &gone
            .iter()
            .map(|(user, key)| engine_testkit::Mutation::DeleteKey {
                user: user.to_string(),
                key: key.to_string(),
            })
            .collect::<Vec<_>>(),
    );
    org.moto.reset_calls();
    let out = org.engine(&["apply", "policies", "--auto-approve"]);
    assert_code(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("Security Hub, account {id}: 99 findings imported, 31 resolved")),
        "{stdout}"
    );
    let calls = imports(&org);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), 130, "{calls:?}");
    assert!(calls.iter().all(|c| c.0 <= 100 && c.1 == 200), "{calls:?}");
    let held = org.moto.securityhub_findings(MANAGEMENT, "eu-west-1");
    assert_eq!(held.len(), 130);
    let resolved: BTreeSet<String> = held
        .iter()
        .filter(|f| f["Compliance"]["Status"] == "PASSED" && f["RecordState"] == "ARCHIVED")
        .map(|f| f["Id"].as_str().unwrap_or_default().to_string())
        .collect();
    let want: BTreeSet<String> = gone
        .iter()
        .map(|(user, key)| format!("engine/{id}/cis-1.4/{user}/{key}"))
        .collect();
    assert_eq!(resolved, want);
}
