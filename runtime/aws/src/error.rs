//! What can go wrong talking to AWS, sorted by what the operator does next.
//!
//! The SDK's errors are generic over each operation; they are turned into one
//! enum here, once, so callers match on a few meaningful cases (credentials,
//! throttling, permissions, network) instead of on error codes.

use std::time::Duration;

use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// An error from the AWS adapter. Messages are lowercase and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No credentials, or AWS rejected the ones in use.
    #[error(
        "aws credentials: {message}; configure credentials (AWS_PROFILE or --profile, \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO login, or an instance role) and retry"
    )]
    Credentials { message: String },
    /// Still throttled after the SDK's retries.
    #[error(
        "{operation}: throttled by AWS after {attempts} attempts; run again later, \
         or raise the retry attempts"
    )]
    Throttled {
        operation: &'static str,
        attempts: u32,
    },
    /// The credential report was not ready in time.
    #[error(
        "the credential report was not ready after {}s (last state: {last_state}); \
         run again later, or raise the report wait",
        waited.as_secs()
    )]
    ReportTimeout {
        waited: Duration,
        last_state: String,
    },
    /// The credentials in use may not call this operation.
    #[error(
        "{operation}: access denied ({message}); grant the credentials in use {}, \
         or use a profile that has it",
        permission(operation)
    )]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    /// AWS could not be reached, or the connection failed, after the SDK's retries.
    #[error(
        "{operation}: could not reach aws: {message}; check the network, proxies, \
         and the endpoint (AWS_ENDPOINT_URL)"
    )]
    Network {
        operation: &'static str,
        message: String,
    },
    /// A write was sent and may have been applied, but no answer came (a
    /// dropped connection, a timeout, a 5xx); not retried blindly.
    #[error(
        "{operation}: no answer after {attempts} attempt(s); it may or may not have been applied"
    )]
    Unanswered {
        operation: &'static str,
        attempts: u32,
    },
    /// A role of another account could not be assumed.
    #[error(
        "cannot assume role {role_arn}: {message}; check that the role exists in that account, \
         trusts the engine's identity (and the external id, if one is set), and that the \
         engine may call sts:AssumeRole on it"
    )]
    AssumeRole { role_arn: String, message: String },
    /// Any other error AWS answered with.
    #[error("{operation}: aws answered {code}: {message}")]
    Api {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// AWS answered something the SDK or this adapter could not read.
    #[error("{operation}: unexpected response from aws: {message}")]
    Response {
        operation: &'static str,
        message: String,
    },
}

impl AwsError {
    /// The AWS error code, for errors AWS answered with.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            AwsError::Throttled { .. } => Some("Throttling"),
            AwsError::AccessDenied { .. } => Some("AccessDenied"),
            _ => None,
        }
    }

    /// Whether waiting and trying again may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Throttled { .. } | AwsError::Network { .. })
            || self.code() == Some("LimitExceeded")
            || self.code() == Some("ServiceFailure")
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
];

const CREDENTIAL_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// The IAM permission an operation needs, as a policy names it.
pub(crate) fn permission(operation: &str) -> String {
    let service = match operation {
        "GetCallerIdentity" | "AssumeRole" => "sts",
        "ListAccounts"
        | "ListAccountsForParent"
        | "ListOrganizationalUnitsForParent"
        | "DescribeOrganization" => "organizations",
        _ => "iam",
    };
    format!("{service}:{operation}")
}

/// Whether an AWS error code means "slow down".
pub(crate) fn is_throttling(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// Sort an SDK error into an [`AwsError`].
pub(crate) fn classify<E, R>(
    operation: &'static str,
    attempts: u32,
    err: SdkError<E, R>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let text = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let message = e.message().unwrap_or("no message").to_string();
            if THROTTLING_CODES.contains(&code.as_str()) {
                AwsError::Throttled {
                    operation,
                    attempts,
                }
            } else if CREDENTIAL_CODES.contains(&code.as_str()) {
                AwsError::Credentials {
                    message: format!("{operation}: {code}: {message}"),
                }
            } else if code == "AccessDenied" || code == "AccessDeniedException" {
                AwsError::AccessDenied { operation, message }
            } else {
                AwsError::Api {
                    operation,
                    code,
                    message,
                }
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            // Failing to resolve credentials surfaces here too, before any request is sent.
            if text.contains("credentials") && !text.contains("connect") {
                AwsError::Credentials { message: text }
            } else {
                AwsError::Network {
                    operation,
                    message: text,
                }
            }
        }
        SdkError::ConstructionFailure(_) => {
            if text.contains("credentials") || text.contains("identity") {
                AwsError::Credentials { message: text }
            } else {
                AwsError::Response {
                    operation,
                    message: text,
                }
            }
        }
        _ => AwsError::Response {
            operation,
            message: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(
            AwsError::Throttled {
                operation: "GetCredentialReport",
                attempts: 8
            }
            .is_transient()
        );
        let limit = AwsError::Api {
            operation: "GenerateCredentialReport",
            code: "LimitExceeded".into(),
            message: "slow down".into(),
        };
        assert!(limit.is_transient());
        let gone = AwsError::Api {
            operation: "DeleteAccessKey",
            code: "NoSuchEntity".into(),
            message: "gone".into(),
        };
        assert!(!gone.is_transient());
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = AwsError::ReportTimeout {
            waited: Duration::from_secs(300),
            last_state: "INPROGRESS".into(),
        };
        assert_eq!(
            e.to_string(),
            "the credential report was not ready after 300s (last state: INPROGRESS); \
             run again later, or raise the report wait"
        );
    }
}
