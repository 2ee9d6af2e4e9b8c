//! `Aws::connect` resolves credentials, region and endpoint the way the AWS
//! CLI does: from the environment, profiles and `AWS_ENDPOINT_URL`.
//!
//! This changes the process environment, so it is its own test binary with a
//! single test whose phases run one after another.

use std::time::Duration;

use engine_aws::{Aws, AwsError, AwsOptions};
use engine_testkit::Moto;

const ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_IAM",
    "AWS_ENDPOINT_URL_STS",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

fn set(name: &str, value: &str) {
    // SAFETY: this binary has one test, and nothing else runs while it changes the environment.
    unsafe { std::env::set_var(name, value) }
}

fn unset(name: &str) {
    // SAFETY: as above.
    unsafe { std::env::remove_var(name) }
}

fn options() -> AwsOptions {
    AwsOptions {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(5),
        ..AwsOptions::default()
    }
}

#[tokio::test]
async fn connect_follows_the_environment_and_profiles() {
    let moto = Moto::start();
    let dir = std::env::temp_dir().join(format!("engine-aws-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        "[profile engine-test]\n\
         region = eu-west-1\n\
         aws_access_key_id = AKIAPROFILEKEY000001\n\
         aws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    for name in ENV {
        unset(name);
    }
    set("AWS_CONFIG_FILE", config.to_str().unwrap());
    set(
        "AWS_SHARED_CREDENTIALS_FILE",
        dir.join("none").to_str().unwrap(),
    );
    set("AWS_EC2_METADATA_DISABLED", "true");

    // 1. Credentials and endpoint from the environment; no region anywhere
    //    falls back to us-east-1.
    set("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01");
    set("AWS_SECRET_ACCESS_KEY", "env-secret");
    set("AWS_ENDPOINT_URL", &moto.endpoint());
    let aws = Aws::connect(&options()).await.unwrap();
    assert_eq!(aws.region(), Some("us-east-1"));
    let me = aws.identity().await.unwrap();
    assert_eq!(me.access_key_id, "AKIAENVIRONMENTKEY01");
    assert_eq!(moto.calls().get("GetCallerIdentity"), Some(&1));

    // 2. --profile wins over AWS_ACCESS_KEY_ID, and brings its region;
    //    --region wins over the profile's.
    let opts = AwsOptions {
        profile: Some("engine-test".into()),
        ..options()
    };
    let aws = Aws::connect(&opts).await.unwrap();
    assert_eq!(aws.region(), Some("eu-west-1"));
    assert_eq!(
        aws.identity().await.unwrap().access_key_id,
        "AKIAPROFILEKEY000001"
    );
    let opts = AwsOptions {
        region: Some("us-west-2".into()),
        ..opts
    };
    assert_eq!(
        Aws::connect(&opts).await.unwrap().region(),
        Some("us-west-2")
    );

    // 3. A per-service endpoint wins over the general one: IAM reaches moto,
    //    STS the dead general endpoint, and says so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    set("AWS_ENDPOINT_URL", &dead_endpoint);
    set("AWS_ENDPOINT_URL_IAM", &moto.endpoint());
    let aws = Aws::connect(&options()).await.unwrap();
    assert!(aws.login_profile_created("nobody").await.is_ok());
    let err = aws.identity().await.unwrap_err();
    assert!(matches!(err, AwsError::Network { .. }), "{err:?}");
    assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");

    // 4. No credentials anywhere: a clear error at connect, not at the first call.
    unset("AWS_ACCESS_KEY_ID");
    unset("AWS_SECRET_ACCESS_KEY");
    let err = Aws::connect(&options()).await.unwrap_err();
    assert!(matches!(err, AwsError::Credentials { .. }), "{err:?}");
    assert!(err.to_string().contains("configure credentials"), "{err}");

    let _ = std::fs::remove_dir_all(&dir);
}
