//! The host's checks on plugin proposals: the last gate before anything is deleted.

use chrono::{DateTime, Utc};
use engine_core::UserNames;
use engine_core::finding::{Basis, Credential, Finding, Protection, Stage};
use engine_core::plan::{ActionKind, DenyReason, FailureKind, Grants, Proposal, check_proposals};
use engine_core::policy::Rule;

fn finding(user: &str, credential: Credential) -> Finding {
    let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    Finding {
        account: None,
        policy: "p".into(),
        rule: Rule::Cis14,
        names: UserNames::new(user, &format!("arn:aws:iam::1:user/{user}")),
        credential,
        key_id: Some(format!("AKIA{}", user.to_uppercase())),
        timestamp: t,
        basis: Basis::KeyLastRotated,
        age_days: 331,
        threshold_days: 90,
        exempt: false,
        protected: None,
        user_created: None,
        credential_created: None,
        stage: Default::default(),
        deactivated_at: None,
    }
}

fn propose(finding: u32, kind: ActionKind) -> Proposal {
    Proposal {
        finding,
        kind,
        reason: None,
        notify: None,
    }
}

const ALL: &[ActionKind] = &[
    ActionKind::DeleteAccessKey,
    ActionKind::DeactivateAccessKey,
    ActionKind::DeleteLoginProfile,
    ActionKind::None,
];

fn grants(allow: &[ActionKind], cap: Option<u32>) -> Grants<'_> {
    Grants {
        policy: "p",
        plugin: "plug",
        allow,
        max_actions: cap,
        require_key_id: false,
    }
}

#[test]
fn accepted_actions_carry_the_finding() {
    let f = vec![
        finding("alice", Credential::AccessKey1),
        finding("bob", Credential::Password),
    ];
    let (actions, refused) = check_proposals(
        &grants(ALL, None),
        &f,
        &[
            propose(0, ActionKind::DeleteAccessKey),
            propose(1, ActionKind::DeleteLoginProfile),
        ],
    )
    .unwrap();
    assert!(refused.is_empty());
    assert_eq!(actions.len(), 2);
    assert_eq!(&*actions[0].user, "alice");
    assert_eq!(actions[0].key_id.as_deref(), Some("AKIAALICE"));
    assert_eq!(actions[0].credential, Credential::AccessKey1);
    assert_eq!(actions[1].action, ActionKind::DeleteLoginProfile);
    assert_eq!(actions[1].finding, 1);
}

#[test]
fn out_of_range_index_fails_the_policy() {
    let f = vec![finding("alice", Credential::AccessKey1)];
    let err = check_proposals(
        &grants(ALL, None),
        &f,
        &[
            propose(0, ActionKind::DeleteAccessKey),
            propose(1, ActionKind::DeleteAccessKey),
        ],
    )
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidOutput);
    assert!(err.message.contains("finding 1"), "{}", err.message);
}

#[test]
fn two_actions_on_one_finding_fail_the_policy() {
    let f = vec![finding("alice", Credential::AccessKey1)];
    let err = check_proposals(
        &grants(ALL, None),
        &f,
        &[
            propose(0, ActionKind::DeactivateAccessKey),
            propose(0, ActionKind::DeleteAccessKey),
        ],
    )
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::InvalidOutput);
}

#[test]
fn kind_must_fit_the_credential() {
    let f = vec![
        finding("alice", Credential::AccessKey1),
        finding("bob", Credential::Password),
    ];
    let (actions, refused) = check_proposals(
        &grants(ALL, None),
        &f,
        &[
            propose(0, ActionKind::DeleteLoginProfile),
            propose(1, ActionKind::DeleteAccessKey),
        ],
    )
    .unwrap();
    assert!(actions.is_empty());
    assert_eq!(
        refused.iter().map(|r| r.reason).collect::<Vec<_>>(),
        [DenyReason::KindMismatch; 2]
    );
}

#[test]
fn kind_must_be_granted() {
    let f = vec![
        finding("alice", Credential::AccessKey1),
        finding("bob", Credential::AccessKey2),
    ];
    let (actions, refused) = check_proposals(
        &grants(&[ActionKind::DeactivateAccessKey], None),
        &f,
        &[
            propose(0, ActionKind::DeleteAccessKey),
            propose(1, ActionKind::DeactivateAccessKey),
        ],
    )
    .unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(&*actions[0].user, "bob");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason, DenyReason::NotGranted);
    assert_eq!(refused[0].user, "alice");
    assert!(
        refused[0].message.contains("plug"),
        "{}",
        refused[0].message
    );
}

#[test]
fn exempt_root_and_own_key_are_never_acted_on() {
    let mut exempt = finding("break-glass", Credential::AccessKey1);
    exempt.exempt = true;
    let mut root = finding("<root_account>", Credential::AccessKey1);
    root.protected = Some(Protection::Root);
    let mut own = finding("engine", Credential::AccessKey2);
    own.protected = Some(Protection::OwnKey);
    let f = vec![exempt, root, own];
    for kind in [ActionKind::DeleteAccessKey, ActionKind::DeactivateAccessKey] {
        let (actions, refused) = check_proposals(
            &grants(ALL, None),
            &f,
            &[propose(0, kind), propose(1, kind), propose(2, kind)],
        )
        .unwrap();
        assert!(actions.is_empty());
        assert_eq!(
            refused.iter().map(|r| r.reason).collect::<Vec<_>>(),
            [DenyReason::Exempt, DenyReason::Root, DenyReason::OwnKey]
        );
    }
}

#[test]
fn unresolved_key_ids_are_refused_when_required() {
    let mut f = finding("alice", Credential::AccessKey1);
    f.key_id = None;
    let mut g = grants(ALL, None);
    g.require_key_id = true;
    let (actions, refused) =
        check_proposals(&g, &[f], &[propose(0, ActionKind::DeleteAccessKey)]).unwrap();
    assert!(actions.is_empty());
    assert_eq!(refused[0].reason, DenyReason::UnresolvedKey);
}

#[test]
fn none_is_always_allowed_and_not_counted_for_blast_radius() {
    let f: Vec<Finding> = (0..5)
        .map(|i| finding(&format!("u{i}"), Credential::AccessKey1))
        .collect();
    let proposals: Vec<Proposal> = (0..5)
        .map(|i| Proposal {
            finding: i,
            kind: ActionKind::None,
            reason: Some("no".into()),
            notify: None,
        })
        .collect();
    let (actions, refused) = check_proposals(&grants(&[], Some(0)), &f, &proposals).unwrap();
    assert_eq!(actions.len(), 5);
    assert!(refused.is_empty());
}

#[test]
fn blast_radius_refuses_the_whole_plan() {
    let f: Vec<Finding> = (0..4)
        .map(|i| finding(&format!("u{i}"), Credential::AccessKey1))
        .collect();
    let proposals: Vec<Proposal> = (0..4)
        .map(|i| propose(i, ActionKind::DeleteAccessKey))
        .collect();
    // At the cap: accepted.
    let (actions, _) = check_proposals(&grants(ALL, Some(4)), &f, &proposals).unwrap();
    assert_eq!(actions.len(), 4);
    // One over: nothing, with a message that says so.
    let err = check_proposals(&grants(ALL, Some(3)), &f, &proposals).unwrap_err();
    assert_eq!(err.kind, FailureKind::BlastRadius);
    assert!(
        err.message.contains("max_actions_per_run = 3"),
        "{}",
        err.message
    );
}

#[test]
fn upcoming_findings_are_never_acted_on_and_deactivated_keys_not_twice() {
    let mut upcoming = finding("soon", Credential::AccessKey1);
    upcoming.stage = Stage::Upcoming;
    let mut deactivated = finding("off", Credential::AccessKey1);
    deactivated.stage = Stage::Deactivated;
    let mut earlier = finding("again", Credential::AccessKey1);
    earlier.stage = Stage::Deactivated;
    let f = vec![upcoming.clone(), deactivated, earlier, upcoming];
    let (actions, refused) = check_proposals(
        &grants(ALL, None),
        &f,
        &[
            propose(0, ActionKind::DeleteAccessKey),
            propose(1, ActionKind::DeleteAccessKey),
            propose(2, ActionKind::DeactivateAccessKey),
            propose(3, ActionKind::None),
        ],
    )
    .unwrap();
    let reasons: Vec<(usize, DenyReason)> = refused.iter().map(|r| (r.finding, r.reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (0, DenyReason::Upcoming),
            (2, DenyReason::AlreadyDeactivated)
        ]
    );
    assert!(
        refused[0]
            .message
            .contains("not due yet: it crosses the policy's threshold on 2026-04-01"),
        "{}",
        refused[0].message
    );
    // Deleting a key the engine deactivated, and `none` on an upcoming one, stand.
    let kinds: Vec<(usize, ActionKind)> = actions.iter().map(|a| (a.finding, a.action)).collect();
    assert_eq!(
        kinds,
        vec![(1, ActionKind::DeleteAccessKey), (3, ActionKind::None)]
    );
}
