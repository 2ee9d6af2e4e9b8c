//! The AWS Config adapter: the managed rules the policies declare, their
//! tags, and whether a configuration recorder records IAM users.
//!
//! Like `engine-aws`, credentials come from the SDK's default chain (or
//! `--profile`), and `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_CONFIG_SERVICE`)
//! is honoured, which is how the tests reach moto. The region is the one of
//! the `[aws_config]` table: Config rules are regional, IAM is not.
//!
//! Reads use the SDK's retries. The two writes are idempotent by nature:
//! `PutConfigRule` puts the whole rule, and a `DeleteConfigRule` of a rule
//! that is gone answers `NoSuchConfigRuleException`, which is what was wanted.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_config::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_config::types::{ConfigRule, Owner, ResourceType, Scope, Source, Tag};

/// The tag the engine puts on the rules it manages.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "engine");

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    /// A named profile, like `--profile`.
    pub profile: Option<String>,
    /// The region of the Config rules.
    pub region: String,
    /// An endpoint overriding `AWS_ENDPOINT_URL` (tests).
    pub endpoint_url: Option<String>,
    /// Attempts per read, the first included.
    pub max_attempts: u32,
}

/// A failed AWS Config call.
#[derive(Debug, thiserror::Error)]
#[error("AWS Config {operation} failed: {message}")]
pub struct ConfigError {
    pub operation: &'static str,
    /// The AWS error code, when there is one (`AccessDeniedException`, ...).
    pub code: Option<String>,
    pub message: String,
}

/// A Config rule as AWS Config has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRule {
    pub name: String,
    pub arn: String,
    /// `AWS` for managed rules, `CUSTOM_LAMBDA`, ...
    pub owner: String,
    pub source_identifier: String,
    /// `InputParameters`, each value as a string (numbers and booleans
    /// written as JSON text).
    pub parameters: BTreeMap<String, String>,
    /// Tagged `managed-by = engine`.
    pub tagged: bool,
}

/// A configuration recorder of the region and what it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorder {
    pub name: String,
    /// Its status says it is recording.
    pub recording: bool,
    /// Its recording group includes `AWS::IAM::User`.
    pub records_iam_users: bool,
}

/// A connection to AWS Config in one region.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    client: aws_sdk_config::Client,
    region: String,
}

impl AwsConfig {
    /// Resolve credentials from the default chain (or the profile) for `opts.region`.
    pub async fn connect(opts: &ConfigOptions) -> Result<AwsConfig, ConfigError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(profile) = &opts.profile {
            let credentials = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build();
            loader = loader
                .profile_name(profile)
                .credentials_provider(credentials);
        }
        if let Some(endpoint) = &opts.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        Ok(AwsConfig {
            client: aws_sdk_config::Client::new(&config),
            region: opts.region.clone(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The rules among `names` that exist (`DescribeConfigRules`, one name a
    /// call, since one missing name fails the whole call), each with its tags
    /// (`ListTagsForResource`).
    pub async fn rules(&self, names: &[String]) -> Result<Vec<RemoteRule>, ConfigError> {
        let mut out = Vec::new();
        for name in names {
            const OP: &str = "DescribeConfigRules";
            let answer = self
                .client
                .describe_config_rules()
                .config_rule_names(name)
                .send()
                .await;
            let rules = match answer {
                Ok(a) => a.config_rules.unwrap_or_default(),
                Err(e) if e.code() == Some("NoSuchConfigRuleException") => continue,
                Err(e) => return Err(error(OP, e)),
            };
            for rule in rules
                .into_iter()
                .filter(|r| r.config_rule_name() == Some(name))
            {
                out.push(self.remote(rule).await?);
            }
        }
        Ok(out)
    }

    async fn remote(&self, rule: ConfigRule) -> Result<RemoteRule, ConfigError> {
        let arn = rule.config_rule_arn().unwrap_or_default().to_string();
        let tagged = if arn.is_empty() {
            false
        } else {
            self.tagged(&arn).await?
        };
        let source = rule.source();
        Ok(RemoteRule {
            name: rule.config_rule_name().unwrap_or_default().to_string(),
            arn,
            owner: source
                .map(|s| s.owner().as_str().to_string())
                .unwrap_or_default(),
            source_identifier: source
                .and_then(|s| s.source_identifier())
                .unwrap_or_default()
                .to_string(),
            parameters: parse_parameters(rule.input_parameters().unwrap_or_default()),
            tagged,
        })
    }

    async fn tagged(&self, arn: &str) -> Result<bool, ConfigError> {
        const OP: &str = "ListTagsForResource";
        let mut token = None;
        loop {
            let answer = self
                .client
                .list_tags_for_resource()
                .resource_arn(arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| error(OP, e))?;
            if answer
                .tags()
                .iter()
                .any(|t| t.key() == Some(MANAGED_TAG.0) && t.value() == Some(MANAGED_TAG.1))
            {
                return Ok(true);
            }
            match answer.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(false),
            }
        }
    }

    /// The region's configuration recorders and their status
    /// (`DescribeConfigurationRecorders`, `DescribeConfigurationRecorderStatus`).
    pub async fn recorders(&self) -> Result<Vec<Recorder>, ConfigError> {
        let recorders = self
            .client
            .describe_configuration_recorders()
            .send()
            .await
            .map_err(|e| error("DescribeConfigurationRecorders", e))?;
        let status = self
            .client
            .describe_configuration_recorder_status()
            .send()
            .await
            .map_err(|e| error("DescribeConfigurationRecorderStatus", e))?;
        Ok(recorders
            .configuration_recorders()
            .iter()
            .map(|r| {
                let name = r.name().unwrap_or_default().to_string();
                let recording = status
                    .configuration_recorders_status()
                    .iter()
                    .any(|s| s.name() == Some(name.as_str()) && s.recording());
                let records_iam_users = r.recording_group().is_some_and(|g| {
                    let excluded = g
                        .exclusion_by_resource_types()
                        .is_some_and(|x| x.resource_types().contains(&ResourceType::User));
                    let listed = g.resource_types().contains(&ResourceType::User);
                    let exclusion = g
                        .recording_strategy()
                        .and_then(|s| s.use_only())
                        .is_some_and(|u| u.as_str() == "EXCLUSION_BY_RESOURCE_TYPES");
                    (g.all_supported() && g.include_global_resource_types())
                        || listed
                        || (exclusion && !excluded)
                });
                Recorder {
                    name,
                    recording,
                    records_iam_users,
                }
            })
            .collect())
    }

    /// `PutConfigRule`: the AWS managed rule `source_identifier` with
    /// `parameters`, scoped to IAM users, tagged `managed-by = engine`.
    pub async fn put_rule(
        &self,
        name: &str,
        source_identifier: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        const OP: &str = "PutConfigRule";
        let build = |m: String| ConfigError {
            operation: OP,
            code: None,
            message: m,
        };
        let source = Source::builder()
            .owner(Owner::Aws)
            .source_identifier(source_identifier)
            .build()
            .map_err(|e| build(e.to_string()))?;
        let input = serde_json::to_string(parameters).map_err(|e| build(e.to_string()))?;
        let rule = ConfigRule::builder()
            .config_rule_name(name)
            .description("Managed by engine: mirrors the threshold its policy enforces.")
            .source(source)
            .input_parameters(input)
            .scope(
                Scope::builder()
                    .compliance_resource_types("AWS::IAM::User")
                    .build(),
            )
            .build();
        let tag = Tag::builder()
            .key(MANAGED_TAG.0)
            .value(MANAGED_TAG.1)
            .build();
        self.client
            .put_config_rule()
            .config_rule(rule)
            .tags(tag)
            .send()
            .await
            .map_err(|e| error(OP, e))?;
        Ok(())
    }

    /// `DeleteConfigRule`; `false` when the rule was already gone.
    pub async fn delete_rule(&self, name: &str) -> Result<bool, ConfigError> {
        match self
            .client
            .delete_config_rule()
            .config_rule_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("NoSuchConfigRuleException") => Ok(false),
            Err(e) => Err(error("DeleteConfigRule", e)),
        }
    }
}

/// `InputParameters` (a JSON object) as name -> value text; anything else is empty.
pub fn parse_parameters(input: &str) -> BTreeMap<String, String> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn error<E, R>(operation: &'static str, e: SdkError<E, R>) -> ConfigError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ConfigError {
        operation,
        code: e.code().map(str::to_string),
        message: DisplayErrorContext(&e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_text() {
        let p = parse_parameters(r#"{"maxAccessKeyAge":"90","n":3,"b":true}"#);
        assert_eq!(p.get("maxAccessKeyAge").map(String::as_str), Some("90"));
        assert_eq!(p.get("n").map(String::as_str), Some("3"));
        assert_eq!(p.get("b").map(String::as_str), Some("true"));
        assert!(parse_parameters("").is_empty());
        assert!(parse_parameters("[1]").is_empty());
    }
}
