//! The AWS Security Hub adapter: the engine's findings imported in ASFF
//! (`BatchImportFindings`, 100 a call) into the Security Hub of one account
//! and region, as a custom integration (`product/ACCOUNT/default`).
//!
//! What is imported is decided in `engine_core::asff` (ids, controls,
//! resolution); this crate only turns an [`Export`] into the SDK's types and
//! sends it. `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_SECURITYHUB`) is
//! honoured, which is how the tests reach moto.

use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use aws_sdk_securityhub::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_securityhub::types::{
    AwsSecurityFinding, Compliance, ComplianceStatus, Partition, Recommendation, RecordState,
    Remediation, Resource, Severity, SeverityLabel, Workflow, WorkflowStatus,
};
use engine_core::asff::{Export, FINDING_TYPE, Status};

/// The most findings one `BatchImportFindings` takes.
pub const BATCH: usize = 100;

/// A failed Security Hub call.
#[derive(Debug, thiserror::Error)]
#[error("Security Hub {operation} failed: {message}")]
pub struct HubError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Ids Security Hub took.
    pub ok: Vec<String>,
    /// Ids it refused, with why.
    pub failed: Vec<(String, String)>,
}

/// The Security Hub of one account and region.
#[derive(Debug, Clone)]
pub struct SecurityHub {
    client: aws_sdk_securityhub::Client,
    region: String,
    /// The account that imports (whose product ARN the findings carry).
    account: String,
}

impl SecurityHub {
    /// With the credentials of `config` (the account `account` is in), in `region`.
    pub fn new(
        config: &SdkConfig,
        region: &str,
        account: &str,
        observer: Option<Arc<dyn engine_aws::RequestObserver>>,
    ) -> SecurityHub {
        let mut builder = aws_sdk_securityhub::config::Builder::from(config)
            .region(Region::new(region.to_string()));
        if let Some(o) = observer {
            // Its requests are made in the importing account.
            builder.push_interceptor(engine_aws::interceptor(engine_aws::in_account(o, account)));
        }
        SecurityHub {
            client: aws_sdk_securityhub::Client::from_conf(builder.build()),
            region: region.to_string(),
            account: account.to_string(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The ASFF of one finding.
    pub fn finding(&self, e: &Export) -> AwsSecurityFinding {
        let product = format!(
            "arn:aws:securityhub:{}:{}:product/{}/default",
            self.region, self.account, self.account
        );
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let mut resources = vec![
            Resource::builder()
                .r#type("AwsIamUser")
                .id(&e.user_arn)
                .partition(Partition::Aws)
                .region(&self.region)
                .build(),
        ];
        if let Some(k) = &e.key_id {
            resources.push(
                Resource::builder()
                    .r#type("AwsIamAccessKey")
                    .id(k)
                    .partition(Partition::Aws)
                    .region(&self.region)
                    .build(),
            );
        }
        let (status, record, workflow) = match e.status {
            Status::Failed => (
                ComplianceStatus::Failed,
                RecordState::Active,
                WorkflowStatus::New,
            ),
            Status::Passed => (
                ComplianceStatus::Passed,
                RecordState::Archived,
                WorkflowStatus::Resolved,
            ),
        };
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        AwsSecurityFinding::builder()
            .schema_version("2018-10-08")
            .id(&e.id)
            .product_arn(product)
            .generator_id(&e.generator)
            .aws_account_id(&e.account)
            .types(FINDING_TYPE)
            .created_at(stamp(e.first_seen))
            .first_observed_at(stamp(e.first_seen))
            .updated_at(stamp(e.updated_at))
            .last_observed_at(stamp(e.updated_at))
            .severity(Severity::builder().label(SeverityLabel::Medium).build())
            .title(cut(&e.title, 256))
            .description(cut(&e.description, 1024))
            .set_resources(Some(resources))
            .compliance(
                Compliance::builder()
                    .status(status)
                    .security_control_id(&e.control)
                    .set_related_requirements(Some(e.requirements.clone()))
                    .build(),
            )
            .remediation(
                Remediation::builder()
                    .recommendation(
                        Recommendation::builder()
                            .text(cut(&e.remediation, 512))
                            .build(),
                    )
                    .build(),
            )
            .set_product_fields(Some(e.fields.clone().into_iter().collect()))
            .record_state(record)
            .workflow(Workflow::builder().status(workflow).build())
            .build()
    }

    /// Import `findings`, [`BATCH`] a call. A call that fails stops the
    /// import: what was taken before is in the answer's `ok`.
    pub async fn import(&self, findings: &[Export]) -> Result<Imported, (Imported, HubError)> {
        const OP: &str = "BatchImportFindings";
        let mut done = Imported::default();
        for batch in findings.chunks(BATCH) {
            let sent = self
                .client
                .batch_import_findings()
                .set_findings(Some(batch.iter().map(|e| self.finding(e)).collect()))
                .send()
                .await;
            let answer = match sent {
                Ok(a) => a,
                Err(e) => {
                    let err = HubError {
                        operation: OP,
                        code: e.code().map(str::to_string),
                        message: DisplayErrorContext(&e).to_string(),
                    };
                    return Err((done, err));
                }
            };
            let failed: Vec<(String, String)> = answer
                .failed_findings()
                .iter()
                .map(|f| {
                    (
                        f.id().unwrap_or_default().to_string(),
                        format!(
                            "{}: {}",
                            f.error_code().unwrap_or("error"),
                            f.error_message().unwrap_or_default()
                        ),
                    )
                })
                .collect();
            for e in batch {
                if !failed.iter().any(|(id, _)| id == &e.id) {
                    done.ok.push(e.id.clone());
                }
            }
            done.failed.extend(failed);
        }
        Ok(done)
    }
}
