//! The journal keeps intents durable before results, across crashes.

use engine_core::{ActionKind, Credential, PlannedAction};
use engine_journal::{Journal, Outcome, RunStatus};

fn action(user: &str) -> PlannedAction {
    PlannedAction {
        policy: "rotate".into(),
        action: ActionKind::DeleteAccessKey,
        user: user.into(),
        arn: format!("arn:aws:iam::1:user/{user}"),
        credential: Credential::AccessKey1,
        key_id: Some(format!("AKIA{user}")),
        finding: 0,
        reason: None,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("engine-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn intents_results_and_history() {
    let dir = temp_dir("history");
    let mut j = Journal::open(&dir).unwrap();
    let run = j.start_run("apply", "policies", &[]).unwrap();
    let a = j.intent(run, &action("alice")).unwrap();
    j.result(a, Outcome::Done, "deleted").unwrap();
    let b = j.intent(run, &action("bob")).unwrap();
    j.result(b, Outcome::AlreadyGone, "NoSuchEntity").unwrap();
    j.skipped(run, &action("carol"), "key recreated since the plan")
        .unwrap();
    j.finish_run(run, RunStatus::Ok, "{}").unwrap();

    let runs = j.recent_runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "ok");
    assert!(runs[0].finished_at.is_some());
    let acts = j.actions_of(run).unwrap();
    let outcomes: Vec<_> = acts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("done"), Some("already-gone"), Some("skipped")]
    );
    assert_eq!(acts[0].key_id.as_deref(), Some("AKIAalice"));
    assert!(j.unfinished().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_intent_without_result_survives_a_crash() {
    let dir = temp_dir("crash");
    {
        let mut j = Journal::open(&dir).unwrap();
        let run = j.start_run("apply", "policies", &[]).unwrap();
        let a = j.intent(run, &action("alice")).unwrap();
        j.result(a, Outcome::Done, "deleted").unwrap();
        j.intent(run, &action("bob")).unwrap();
        // No result, no finish, no clean close: as if the process died here.
        std::mem::forget(j);
    }
    let mut j = Journal::open(&dir).unwrap();
    let open = j.unfinished().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].user, "bob");
    assert_eq!(open[0].outcome, None);
    assert_eq!(j.recent_runs(1).unwrap()[0].status, "running");
    // The next run takes them: reported once, then recorded as unknown.
    let taken = j.take_unfinished().unwrap();
    assert_eq!(taken, open);
    assert!(j.unfinished().unwrap().is_empty());
    assert!(j.take_unfinished().unwrap().is_empty());
    let run = j.recent_runs(1).unwrap().remove(0);
    assert_eq!(run.status, "interrupted");
    let acts = j.actions_of(run.id).unwrap();
    assert_eq!(acts[1].outcome.as_deref(), Some("unknown"));
    assert_eq!(acts[0].outcome.as_deref(), Some("done"));
    std::fs::remove_dir_all(&dir).unwrap();
}
