//! `[accounts]`: validated, and turned into the accounts of a run from what
//! the organization lists.

use std::collections::{BTreeMap, BTreeSet};

use engine_core::accounts::{self, Listed, Organization, Target};
use engine_core::policy::{self, AccountSelect, PolicyFile};

fn load(text: &str) -> Result<engine_core::PolicySet, String> {
    policy::validate(vec![PolicyFile {
        path: "p.toml".into(),
        text: format!("{text}\n[policy.rotate]\nrule = \"cis-1.4\"\n"),
    }])
    .map_err(|e| e.render_plain())
}

#[test]
fn accounts_are_a_list_or_the_organization_with_a_role() {
    let set = load(
        "[accounts]\nids = [\"111111111111\", \"222222222222\", \"111111111111\"]\nrole = \"security/EngineRemediation\"\nexternal_id = \"engine-42\"\n",
    )
    .expect("valid");
    let a = set.accounts.expect("accounts");
    assert_eq!(
        a.select,
        AccountSelect::Ids(vec!["111111111111".into(), "222222222222".into()]),
        "duplicates dropped"
    );
    assert_eq!(
        a.role_arn("111111111111"),
        "arn:aws:iam::111111111111:role/security/EngineRemediation"
    );
    assert_eq!(a.external_id.as_deref(), Some("engine-42"));
    let org = load(
        "[accounts]\norganization = true\norganizational_units = [\"ou-ab12-34cd56ef\"]\nexclude = [\"333333333333\", \"ou-ab12-99999999\"]\nrole = \"EngineRemediation\"\n",
    )
    .expect("valid")
    .accounts
    .expect("accounts");
    assert_eq!(
        org.select,
        AccountSelect::Organization {
            units: vec!["ou-ab12-34cd56ef".into()]
        }
    );
    assert_eq!(org.exclude, ["333333333333", "ou-ab12-99999999"]);
    // Without the table: the account of the engine's credentials.
    assert!(load("").expect("valid").accounts.is_none());
}

#[test]
fn every_mistake_in_accounts_is_reported_at_once() {
    let cases = [
        ("[accounts]\nrole = \"R\"\n", "neither which accounts"),
        ("[accounts]\nids = [\"111111111111\"]\n", "has no `role`"),
        (
            "[accounts]\nids = [\"111111111111\"]\norganization = true\nrole = \"R\"\n",
            "both `ids` and `organization = true`",
        ),
        (
            "[accounts]\nids = [\"12345\"]\nrole = \"R\"\n",
            "not an AWS account id",
        ),
        ("[accounts]\nids = []\nrole = \"R\"\n", "lists no account"),
        (
            "[accounts]\norganization = true\norganizational_units = [\"sandbox\"]\nrole = \"R\"\n",
            "not an organizational unit id",
        ),
        (
            "[accounts]\nids = [\"111111111111\"]\norganizational_units = [\"ou-ab12-34cd56ef\"]\nrole = \"R\"\n",
            "narrows `organization = true`",
        ),
        (
            "[accounts]\nids = [\"111111111111\"]\nrole = \"bad role!\"\n",
            "not an IAM role name",
        ),
        (
            "[accounts]\nids = [\"111111111111\"]\nrole = \"R\"\nexternal_id = \"x\"\n",
            "2 to 1224",
        ),
        (
            "[accounts]\nids = [\"111111111111\"]\nrole = \"R\"\nexclude = [\"prod\"]\n",
            "neither an account id",
        ),
        (
            "[accounts]\nids = [\"111111111111\"]\nrole = \"R\"\nroles = 1\n",
            "did you mean `role`",
        ),
    ];
    for (text, want) in cases {
        let err = load(text).expect_err(text);
        assert!(err.contains(want), "{text}\n--- got:\n{err}");
        assert!(err.contains("p.toml:"), "{err}");
    }
    let two = policy::validate(vec![
        PolicyFile {
            path: "a.toml".into(),
            text: "[accounts]\nids = [\"111111111111\"]\nrole = \"R\"\n[policy.a]\nrule = \"cis-1.4\"\n".into(),
        },
        PolicyFile {
            path: "b.toml".into(),
            text: "[accounts]\nids = [\"222222222222\"]\nrole = \"R\"\n".into(),
        },
    ])
    .expect_err("two tables")
    .render_plain();
    assert!(
        two.contains("[accounts] is defined more than once"),
        "{two}"
    );
    assert!(two.contains("a.toml") && two.contains("b.toml"), "{two}");
}

fn listed(id: &str, status: &str) -> Listed {
    Listed {
        id: id.into(),
        name: format!("name-{id}"),
        status: status.into(),
    }
}

fn settings(text: &str) -> policy::AccountsSettings {
    load(text).expect("valid").accounts.expect("accounts")
}

fn ids(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.id.as_str()).collect()
}

#[test]
fn the_organization_is_narrowed_by_units_and_exclusions() {
    let org = Organization {
        accounts: vec![
            listed("111111111111", "ACTIVE"),
            listed("222222222222", "ACTIVE"),
            listed("333333333333", "SUSPENDED"),
            listed("444444444444", "ACTIVE"),
            listed("555555555555", "ACTIVE"),
        ],
        under: BTreeMap::from([
            (
                "ou-ab12-aaaaaaaa".to_string(),
                BTreeSet::from([
                    "111111111111".into(),
                    "222222222222".into(),
                    "333333333333".into(),
                ]),
            ),
            (
                "ou-ab12-bbbbbbbb".to_string(),
                BTreeSet::from(["222222222222".into()]),
            ),
        ]),
    };
    let all = settings("[accounts]\norganization = true\nrole = \"R\"\n");
    let sel = accounts::select(&all, &org);
    assert_eq!(
        ids(&sel.targets),
        [
            "111111111111",
            "222222222222",
            "444444444444",
            "555555555555"
        ]
    );
    assert_eq!(
        sel.skipped,
        [("333333333333".into(), "not active (SUSPENDED)".into())]
    );
    assert_eq!(sel.targets[0].name.as_deref(), Some("name-111111111111"));

    let narrowed = settings(
        "[accounts]\norganization = true\norganizational_units = [\"ou-ab12-aaaaaaaa\"]\nexclude = [\"ou-ab12-bbbbbbbb\", \"111111111111\"]\nrole = \"R\"\n",
    );
    assert_eq!(
        accounts::units_to_list(&narrowed),
        ["ou-ab12-aaaaaaaa", "ou-ab12-bbbbbbbb"]
    );
    let sel = accounts::select(&narrowed, &org);
    assert!(sel.targets.is_empty(), "{sel:?}");
    let skipped: Vec<&str> = sel.skipped.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(skipped, ["111111111111", "222222222222", "333333333333"]);
}

#[test]
fn listed_ids_are_taken_as_given_minus_exclusions() {
    let s = settings(
        "[accounts]\nids = [\"222222222222\", \"111111111111\", \"333333333333\"]\nexclude = [\"333333333333\"]\nrole = \"R\"\n",
    );
    assert!(!accounts::needs_organization(&s), "no listing needed");
    let sel = accounts::select(&s, &Organization::default());
    assert_eq!(ids(&sel.targets), ["111111111111", "222222222222"]);
    assert_eq!(sel.targets[0].name, None);
    assert_eq!(sel.skipped, [("333333333333".into(), "excluded".into())]);
    // An excluded unit needs the listing, even for a list of ids.
    let s = settings(
        "[accounts]\nids = [\"111111111111\"]\nexclude = [\"ou-ab12-aaaaaaaa\"]\nrole = \"R\"\n",
    );
    assert!(accounts::needs_organization(&s));
}

#[test]
fn session_names_fit_sts() {
    let name = accounts::session_name("apply", 1_796_354_698);
    assert_eq!(name, "engine-apply-1796354698");
    let odd = accounts::session_name("a b/c", 1);
    assert_eq!(odd, "engine-a-b-c-1");
    let long = accounts::session_name(&"x".repeat(200), i64::MAX);
    assert!(long.len() <= 64, "{long}");
}
