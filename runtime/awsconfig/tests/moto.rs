//! The adapter against moto: put, describe with tags, update, delete, recorders.

use std::collections::BTreeMap;

use engine_awsconfig::{AwsConfig, ConfigOptions};
use engine_testkit::Moto;

async fn connect(moto: &Moto) -> AwsConfig {
    // SAFETY: this file has one test, so no other thread reads the
    // environment meanwhile; the SDK takes the static credentials from it.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", engine_testkit::ACCESS_KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", engine_testkit::SECRET_ACCESS_KEY);
    }
    AwsConfig::connect(&ConfigOptions {
        profile: None,
        region: "eu-west-1".into(),
        endpoint_url: Some(moto.endpoint()),
        max_attempts: 2,
    })
    .await
    .expect("connect")
}

#[tokio::test(flavor = "current_thread")]
async fn rules_round_trip() {
    let moto = Moto::start();
    let config = connect(&moto).await;
    let names = vec!["engine-rotate".to_string(), "absent".to_string()];
    assert!(config.rules(&names).await.expect("rules").is_empty());

    let params = BTreeMap::from([("maxAccessKeyAge".to_string(), "90".to_string())]);
    config
        .put_rule("engine-rotate", "ACCESS_KEYS_ROTATED", &params)
        .await
        .expect("put");
    let rules = config.rules(&names).await.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].name, "engine-rotate");
    assert_eq!(rules[0].owner, "AWS");
    assert_eq!(rules[0].source_identifier, "ACCESS_KEYS_ROTATED");
    assert_eq!(rules[0].parameters, params);
    assert!(rules[0].tagged);

    let params = BTreeMap::from([("maxAccessKeyAge".to_string(), "60".to_string())]);
    config
        .put_rule("engine-rotate", "ACCESS_KEYS_ROTATED", &params)
        .await
        .expect("update");
    let rules = config.rules(&names).await.expect("rules");
    assert_eq!(rules[0].parameters, params);
    assert!(rules[0].tagged, "an update keeps the tag");

    assert!(config.delete_rule("engine-rotate").await.expect("delete"));
    assert!(
        !config
            .delete_rule("engine-rotate")
            .await
            .expect("delete again")
    );
    assert!(config.rules(&names).await.expect("rules").is_empty());

    assert!(config.recorders().await.expect("recorders").is_empty());
}
