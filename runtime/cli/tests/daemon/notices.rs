//! A daemon running every two seconds with the staged plugin and a webhook:
//! each message once, to the tagged owner, signed; the key deactivated when
//! it crosses the threshold and deleted after the grace period.

use std::time::Duration;

use engine_testkit::webhook::Receiver;
use engine_testkit::{Mutation, SeedUser};

use super::{Account, days_ago, poll_until, runs_total};

const HOOK_SECRET: &str = "daemon-webhook-secret";

fn stages(receiver: &Receiver) -> Vec<String> {
    receiver
        .to("/owners")
        .iter()
        .map(|r| {
            r.json()["about"]["stage"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn every_two_seconds_each_warning_once_then_deactivated_then_deleted() {
    let receiver = Receiver::start();
    // Unused for 85 days: upcoming under 90 days warned 7 ahead.
    let account = Account::new(
        "notices",
        vec![
            SeedUser::new("alice", days_ago(900))
                .key(days_ago(400), Some(days_ago(85)), true)
                .tag("owner", "alice@example.com"),
        ],
    );
    let key = account.key("alice", 0);
    account.write_policy(
        "unused.toml",
        &format!(
            "[policy.unused]\nrule = \"cis-1.3\"\nmax_unused_days = 90\nwarn_before_days = 7\n\
             schedule = \"*/2 * * * * *\"\naction = \"staged-key-removal\"\nfollow_deactivated = true\n\
             params = {{ grace_days = \"0.00005\" }}\n\n\
             [notifications]\nowner_channel = \"owners\"\nfallback_channel = \"security\"\n\n\
             [notifications.channels.owners]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"ENGINE_TEST_WEBHOOK_SECRET\"\n\n\
             [notifications.channels.security]\ntype = \"webhook\"\nurl = \"{}\"\n",
            receiver.url("/owners"),
            receiver.url("/security")
        ),
    );
    let mut daemon = super::Daemon::spawn(
        account
            .command()
            .env("ENGINE_TEST_WEBHOOK_SECRET", HOOK_SECRET)
            .args([
                "daemon",
                &account.policies().display().to_string(),
                "--state",
                &account.state_dir().display().to_string(),
                "--listen",
                "127.0.0.1:0",
                "--report-max-age",
                "0s",
            ]),
    );
    daemon.wait_listening();

    // Three runs: one warning, however many runs see it upcoming.
    daemon.wait_status("three runs", |s| runs_total(s) >= 3);
    assert_eq!(stages(&receiver), vec!["upcoming"], "{}", daemon.log());
    assert!(account.has_key("alice", &key));
    // Counted: sent once, then recognised as sent by the later runs.
    let m = daemon.metrics();
    let messages =
        |m: &super::Metrics, result: &str| m.get("engine_messages_total", &[("result", result)]);
    assert_eq!(messages(&m, "sent"), Some(1.0), "{}", m.text);
    assert!(messages(&m, "already-sent") >= Some(2.0), "{}", m.text);
    assert_eq!(messages(&m, "failed"), Some(0.0), "{}", m.text);

    // It crosses the threshold: deactivated at the next run, told once.
    account.moto.mutate(&[Mutation::TouchKey {
        key: key.clone(),
        last_used: days_ago(91),
    }]);
    let inactive = poll_until(Duration::from_secs(30), || {
        account
            .moto
            .state()
            .user("alice")
            .and_then(|u| u.key(&key).map(|k| k.status.clone()))
            .filter(|s| s == "Inactive")
    });
    assert!(inactive.is_some(), "not deactivated:\n{}", daemon.log());
    // After the grace period (4.3 s), deleted at a run, told once.
    let gone = poll_until(Duration::from_secs(30), || {
        (!account.has_key("alice", &key)).then_some(())
    });
    assert!(gone.is_some(), "not deleted:\n{}", daemon.log());
    let runs = runs_total(&daemon.status());
    daemon.wait_status("two more runs", |s| runs_total(s) >= runs + 2);
    assert_eq!(
        stages(&receiver),
        vec![
            "upcoming",
            "done:deactivate-access-key",
            "done:delete-access-key"
        ],
        "{}",
        daemon.log()
    );
    let owners = receiver.to("/owners");
    assert!(
        owners.iter().all(|r| r.signed_with(HOOK_SECRET)),
        "{owners:?}"
    );
    assert!(
        owners
            .iter()
            .all(|r| r.json()["recipient"] == "alice@example.com")
    );
    // One summary per run that did something: the deactivation, the deletion.
    assert_eq!(receiver.to("/security").len(), 2, "{}", daemon.log());
    let m = daemon.metrics();
    assert_eq!(messages(&m, "sent"), Some(3.0), "{}", m.text);
    assert_eq!(messages(&m, "failed"), Some(0.0), "{}", m.text);
    // Exactly one write of each kind reached the key.
    let writes: Vec<String> = account
        .moto
        .requests()
        .into_iter()
        .filter(|r| r.key_id.as_deref() == Some(key.as_str()))
        .filter(|r| matches!(r.action.as_str(), "UpdateAccessKey" | "DeleteAccessKey"))
        .map(|r| r.action)
        .collect();
    assert_eq!(writes, vec!["UpdateAccessKey", "DeleteAccessKey"]);
    assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
}
