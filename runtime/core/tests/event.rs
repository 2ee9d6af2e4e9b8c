//! AWS Config compliance events: parsed from a message body, classified
//! against the policies before any AWS call; and `events_queue`.

use engine_core::event::{self, Compliance, Event, Ignored, Verdict};
use engine_core::policy::{self, PolicyFile, PolicySet};
use serde_json::{Value, json};

fn set(text: &str) -> PolicySet {
    policy::validate(vec![PolicyFile {
        path: "p.toml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{}", e.render_plain()))
}

const POLICIES: &str = r#"
[aws_config]
region = "eu-west-1"

[policy.rotate]
rule = "cis-1.4"
aws_config_rule = "access-keys-rotated"

[policy.unused]
rule = "cis-1.3"
aws_config_rule = "iam-user-unused-credentials-check"
aws_config_rule_name = "audit-unused"

[policy.plain]
rule = "cis-1.4"
"#;

/// An event as AWS Config sends it (the abridged one of AWS's docs).
fn event(rule: &str, compliance: &str) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "source": "aws.config",
        "detail-type": "Config Rules Compliance Change",
        "account": "123456789012",
        "region": "eu-west-1",
        "detail": {
            "configRuleName": rule,
            "messageType": "ComplianceChangeNotification",
            "resourceType": "AWS::IAM::User",
            "resourceId": "AIDAEXAMPLEUSERID",
            "awsAccountId": "123456789012",
            "newEvaluationResult": {"complianceType": compliance}
        }
    })
}

fn parse(v: &Value) -> Event {
    event::parse(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

#[test]
fn a_compliance_change_is_read_field_by_field() {
    let Event::Compliance(c) = parse(&event("engine-rotate", "NON_COMPLIANT")) else {
        panic!("not a compliance change");
    };
    assert_eq!(c.rule_name, "engine-rotate");
    assert_eq!(c.resource_type, "AWS::IAM::User");
    assert_eq!(c.resource_id, "AIDAEXAMPLEUSERID");
    assert_eq!(c.account, "123456789012");
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.compliance, Compliance::NonCompliant);
    assert_eq!(
        c.id.as_deref(),
        Some("6a7e8feb-b491-4cf7-a9f1-bf3703467718")
    );
}

#[test]
fn non_compliant_users_under_a_declared_rule_are_runs_of_that_policy() {
    let set = set(POLICIES);
    let run = |rule: &str| event::classify(&parse(&event(rule, "NON_COMPLIANT")), &set);
    assert_eq!(
        run("engine-rotate"),
        Verdict::Run {
            policies: vec!["rotate".into()],
            user_id: "AIDAEXAMPLEUSERID".into()
        }
    );
    // The rule's name, not the policy's: `aws_config_rule_name` counts.
    assert_eq!(
        run("audit-unused"),
        Verdict::Run {
            policies: vec!["unused".into()],
            user_id: "AIDAEXAMPLEUSERID".into()
        }
    );
    assert_eq!(
        run("engine-unused"),
        Verdict::Ignore(Ignored::UnknownRule("engine-unused".into()))
    );
    assert_eq!(
        run("engine-plain"),
        Verdict::Ignore(Ignored::UnknownRule("engine-plain".into())),
        "a policy without aws_config_rule declares no rule"
    );
}

#[test]
fn everything_else_is_ignored_with_a_reason() {
    let set = set(POLICIES);
    for c in [
        "COMPLIANT",
        "NOT_APPLICABLE",
        "INSUFFICIENT_DATA",
        "SOMETHING_NEW",
    ] {
        let v = event::classify(&parse(&event("engine-rotate", c)), &set);
        let Verdict::Ignore(why @ Ignored::NotNonCompliant(_)) = v else {
            panic!("{c}: {v:?}");
        };
        assert_eq!(why.label(), "not-non-compliant");
        assert!(why.to_string().contains(c), "{why}");
    }
    let mut bucket = event("engine-rotate", "NON_COMPLIANT");
    bucket["detail"]["resourceType"] = json!("AWS::S3::Bucket");
    assert_eq!(
        event::classify(&parse(&bucket), &set),
        Verdict::Ignore(Ignored::NotAUser("AWS::S3::Bucket".into()))
    );
    let other = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}});
    let v = event::classify(&parse(&other), &set);
    assert!(
        matches!(v, Verdict::Ignore(Ignored::NotCompliance { .. })),
        "{v:?}"
    );
}

#[test]
fn the_account_must_be_the_engines() {
    let Event::Compliance(c) = parse(&event("engine-rotate", "NON_COMPLIANT")) else {
        panic!("not a compliance change");
    };
    assert_eq!(event::check_account(&c, "123456789012"), Ok(()));
    let e = event::check_account(&c, "210987654321").expect_err("another account");
    assert_eq!(e.label(), "other-account");
    // Without detail.awsAccountId, the envelope's account.
    let mut v = event("engine-rotate", "NON_COMPLIANT");
    v["detail"]
        .as_object_mut()
        .map(|d| d.remove("awsAccountId"));
    v["account"] = json!("111122223333");
    let Event::Compliance(c) = parse(&v) else {
        panic!("not a compliance change");
    };
    assert_eq!(c.account, "111122223333");
}

#[test]
fn an_event_inside_an_sns_notification_is_unwrapped() {
    let inner = event("engine-rotate", "NON_COMPLIANT");
    let sns = json!({
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:config",
        "Message": inner.to_string()
    });
    assert_eq!(parse(&sns), parse(&inner));
}

#[test]
fn malformed_bodies_say_what_is_wrong() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not JSON"),
        (b"[1, 2]".to_vec(), "not a JSON object"),
        (b"{}".to_vec(), "`source`"),
        (br#"{"source": "aws.config"}"#.to_vec(), "`detail-type`"),
        (
            br#"{"source": "aws.config", "detail-type": "Config Rules Compliance Change"}"#
                .to_vec(),
            "`detail`",
        ),
        (
            br#"{"Type": "Notification", "Message": "{oops"}"#.to_vec(),
            "SNS",
        ),
    ];
    for (body, what) in cases {
        let e = event::parse(&body).expect_err("malformed");
        assert!(e.to_string().contains(what), "{e} should name {what}");
    }
    for field in ["configRuleName", "resourceType", "resourceId"] {
        let mut v = event("engine-rotate", "NON_COMPLIANT");
        v["detail"].as_object_mut().map(|d| d.remove(field));
        let e = event::parse(v.to_string().as_bytes()).expect_err(field);
        assert!(e.to_string().contains(field), "{e}");
        v["detail"][field] = json!(42);
        let e = event::parse(v.to_string().as_bytes()).expect_err(field);
        assert!(e.to_string().contains("not a string"), "{e}");
    }
    let mut v = event("engine-rotate", "NON_COMPLIANT");
    v["detail"]["newEvaluationResult"] = json!({});
    let e = event::parse(v.to_string().as_bytes()).expect_err("no complianceType");
    assert!(e.to_string().contains("complianceType"), "{e}");
}

#[test]
fn events_queue_takes_an_sqs_queue_url() {
    let ok = set(
        "[aws_config]\nregion = \"eu-west-1\"\nevents_queue = \"https://sqs.eu-west-1.amazonaws.com/123456789012/engine-events\"\n",
    );
    assert_eq!(
        ok.aws_config.and_then(|a| a.events_queue).as_deref(),
        Some("https://sqs.eu-west-1.amazonaws.com/123456789012/engine-events")
    );
    for (bad, why) in [
        ("engine-events", "https://"),
        (
            "https://sqs.eu-west-1.amazonaws.com/engine-events",
            "HOST/ACCOUNT/QUEUE-NAME",
        ),
        (
            "https://sqs.eu-west-1.amazonaws.com/12345/engine-events",
            "12-digit",
        ),
        (
            "https://sqs.eu-west-1.amazonaws.com/123456789012/bad name",
            "queue name",
        ),
    ] {
        let errors = policy::validate(vec![PolicyFile {
            path: "p.toml".into(),
            text: format!("[aws_config]\nregion = \"eu-west-1\"\nevents_queue = \"{bad}\"\n"),
        }])
        .expect_err(bad);
        let text = errors.render_plain();
        assert!(
            text.contains("not an SQS queue URL") && text.contains(why),
            "{bad}: {text}"
        );
        assert!(text.contains("p.toml:3:"), "{text}");
    }
}
