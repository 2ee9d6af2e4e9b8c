//! Counting every HTTP attempt the SDK makes, by operation and outcome.
//!
//! An SDK interceptor registered on every client this crate builds reads each
//! attempt after it ends (`read_after_attempt`, which the SDK calls once per
//! attempt, retries included) and tells the [`RequestObserver`] of
//! [`AwsOptions`](crate::AwsOptions) its operation name and [`RequestOutcome`],
//! and the account the attempt was made in when the connection knows it: the
//! account of an assumed role ([`in_account`]), else the one its own
//! `GetCallerIdentity` answered.

use std::sync::{Arc, OnceLock};

use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};

use crate::error;

/// Told about every HTTP attempt to AWS: its operation name (the API action,
/// e.g. `"ListAccessKeys"`, `"GetCallerIdentity"`) and how it ended.
///
/// Every attempt counts, so one SDK call that was throttled once and then
/// succeeded is reported twice (`Throttled`, then `Ok`). Attempts that fail
/// before a request is sent (no credentials, a signing error) are not
/// reported; requests that credential providers make on their own (SSO, a
/// profile's role assumption) are not seen.
///
/// Called synchronously on the task that makes the request: keep it cheap
/// (increment a counter) and never block.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    fn request(&self, operation: &str, outcome: RequestOutcome);

    /// As [`RequestObserver::request`], with the account the attempt was
    /// made in (whose credentials signed it), when the connection knows it:
    /// the account of a role assumed with [`crate::Aws::assume_role`], of a
    /// Security Hub import, or the one the connection's own
    /// `GetCallerIdentity` answered (that call included). Observers that do
    /// not care about accounts need not implement it: by default it calls
    /// `request`.
    fn request_in(&self, account: Option<&str>, operation: &str, outcome: RequestOutcome) {
        let _ = account;
        self.request(operation, outcome);
    }
}

/// `observer`, told that the attempts reported to it were made in `account`
/// (for a connection that reaches that account), unless the connection
/// names the account itself (what its `GetCallerIdentity` answered, or a
/// scope added closer to it).
pub fn in_account(observer: Arc<dyn RequestObserver>, account: &str) -> Arc<dyn RequestObserver> {
    Arc::new(InAccount {
        inner: observer,
        account: account.to_string(),
    })
}

#[derive(Debug)]
struct InAccount {
    inner: Arc<dyn RequestObserver>,
    account: String,
}

impl RequestObserver for InAccount {
    fn request(&self, operation: &str, outcome: RequestOutcome) {
        self.inner
            .request_in(Some(&self.account), operation, outcome);
    }

    fn request_in(&self, account: Option<&str>, operation: &str, outcome: RequestOutcome) {
        let account = account.unwrap_or(&self.account);
        self.inner.request_in(Some(account), operation, outcome);
    }
}

/// How one HTTP attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// A success status (2xx) whose answer was read.
    Ok,
    /// AWS asked to slow down: HTTP 429, or a throttling error code
    /// (`Throttling`, `ThrottlingException`, `RequestLimitExceeded`, ...),
    /// whatever the status.
    Throttled,
    /// Any other 4xx (`NoSuchEntity`, `AccessDenied`, ...).
    ClientError,
    /// Any other 5xx.
    ServerError,
    /// No complete answer: a timeout, a failed or dropped connection, or a
    /// success status whose body could not be read.
    Unanswered,
}

impl RequestOutcome {
    /// The metric label: `ok`, `throttled`, `client-error`, `server-error`, `unanswered`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Throttled => "throttled",
            RequestOutcome::ClientError => "client-error",
            RequestOutcome::ServerError => "server-error",
            RequestOutcome::Unanswered => "unanswered",
        }
    }
}

impl std::fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SDK interceptor that reports attempts to an observer. Its clones
/// (one per client of a connection) share the account they learn.
#[derive(Debug, Clone)]
pub(crate) struct ObserveRequests {
    observer: Arc<dyn RequestObserver>,
    /// The account the connection's `GetCallerIdentity` answered.
    account: Arc<OnceLock<String>>,
}

impl ObserveRequests {
    pub(crate) fn new(observer: Arc<dyn RequestObserver>) -> ObserveRequests {
        ObserveRequests {
            observer,
            account: Arc::new(OnceLock::new()),
        }
    }
}

/// An interceptor that tells `observer` about every attempt of the SDK
/// client it is registered on, for the engine's other AWS adapters (SQS,
/// Config) to report their requests like IAM's.
pub fn interceptor(observer: Arc<dyn RequestObserver>) -> aws_sdk_iam::config::SharedInterceptor {
    aws_sdk_iam::config::SharedInterceptor::new(ObserveRequests::new(observer))
}

impl Intercept for ObserveRequests {
    fn name(&self) -> &'static str {
        "engine-aws::ObserveRequests"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(outcome) = attempt_outcome(context) {
            let operation = cfg
                .load::<Metadata>()
                .map(Metadata::name)
                .unwrap_or("unknown");
            if let Some(account) = caller_account(context) {
                let _ = self.account.set(account.to_string());
            }
            let account = self.account.get().map(String::as_str);
            self.observer.request_in(account, operation, outcome);
        }
        Ok(())
    }
}

/// The account a successful `GetCallerIdentity` answered.
fn caller_account<'a>(context: &'a FinalizerInterceptorContextRef<'_>) -> Option<&'a str> {
    let output = context.output_or_error()?.ok()?;
    output
        .downcast_ref::<aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput>()?
        .account()
        .filter(|a| !a.is_empty())
}

/// How an attempt ended, or `None` when it ended before a request was sent.
fn attempt_outcome(context: &FinalizerInterceptorContextRef<'_>) -> Option<RequestOutcome> {
    let result = context.output_or_error();
    let Some(response) = context.response() else {
        // Without a response, only a connection failure or a timeout means a
        // request went out (or was on its way); other errors (credentials,
        // signing, endpoint resolution) come before anything is sent.
        return match result {
            Some(Err(e)) if e.is_connector_error() || e.is_timeout_error() => {
                Some(RequestOutcome::Unanswered)
            }
            _ => None,
        };
    };
    let status = response.status();
    if status.as_u16() == 429 || error_code(response).is_some_and(error::is_throttling) {
        return Some(RequestOutcome::Throttled);
    }
    if status.is_server_error() {
        return Some(RequestOutcome::ServerError);
    }
    if status.is_client_error() {
        return Some(RequestOutcome::ClientError);
    }
    // A success status: it counts as answered once the body was read and
    // parsed. A body cut off by a dropped connection or the attempt timeout
    // is no answer (as the adapter's writes treat it: it may have been applied).
    match result {
        Some(Err(e)) if e.is_response_error() || e.is_timeout_error() || e.is_connector_error() => {
            Some(RequestOutcome::Unanswered)
        }
        _ => Some(RequestOutcome::Ok),
    }
}

/// The AWS error code of an error response: from the `x-amzn-query-error`
/// header (`Code;Sender`), the `x-amzn-ErrorType` header (JSON protocols,
/// `Code:uri` or `namespace#Code`), or the first `<Code>` of an XML body
/// (IAM's and STS's query protocol). `None` for success statuses.
fn error_code(response: &HttpResponse) -> Option<&str> {
    if response.status().is_success() {
        return None;
    }
    let headers = response.headers();
    if let Some(value) = headers.get("x-amzn-query-error") {
        return value
            .split(';')
            .next()
            .map(str::trim)
            .filter(|c| !c.is_empty());
    }
    if let Some(value) = headers.get("x-amzn-errortype") {
        let code = value.split(':').next().unwrap_or(value);
        let code = code.rsplit('#').next().unwrap_or(code).trim();
        return (!code.is_empty()).then_some(code);
    }
    response.body().bytes().and_then(xml_error_code)
}

/// The text of the first `<Code>` element of an XML error body.
fn xml_error_code(body: &[u8]) -> Option<&str> {
    // Error bodies are small; the code comes early. Don't scan a huge body.
    let body = &body[..body.len().min(64 * 1024)];
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        // Cut off inside a character by the limit: the valid prefix will do.
        Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).ok()?,
    };
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = text[start..start + len].trim();
    (!code.is_empty()).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;

    fn response(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> HttpResponse {
        let status = StatusCode::try_from(status).expect("a valid status");
        let mut response = HttpResponse::new(status, body.to_string().into());
        for (name, value) in headers {
            response.headers_mut().insert(*name, *value);
        }
        response
    }

    #[test]
    fn error_codes_from_query_xml_and_headers() {
        let throttled = response(
            400,
            &[],
            "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
             <Error><Type>Sender</Type><Code>Throttling</Code>\
             <Message>Rate exceeded</Message></Error></ErrorResponse>",
        );
        assert_eq!(error_code(&throttled), Some("Throttling"));
        let json = response(
            400,
            &[(
                "x-amzn-ErrorType",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/",
            )],
            "{}",
        );
        assert_eq!(error_code(&json), Some("ThrottlingException"));
        let namespaced = response(
            400,
            &[("x-amzn-errortype", "com.amazonaws.iam#NoSuchEntity")],
            "",
        );
        assert_eq!(error_code(&namespaced), Some("NoSuchEntity"));
        let query = response(
            400,
            &[("x-amzn-query-error", "RequestLimitExceeded;Sender")],
            "",
        );
        assert_eq!(error_code(&query), Some("RequestLimitExceeded"));
        assert_eq!(error_code(&response(500, &[], "oops")), None);
        assert_eq!(error_code(&response(400, &[], "<Code></Code>")), None);
        assert_eq!(error_code(&response(400, &[], "<Code>Unclosed")), None);
        // A success never has an error code, whatever its body says.
        assert_eq!(
            error_code(&response(200, &[], "<Code>Throttling</Code>")),
            None
        );
        // Invalid UTF-8 after the code does not hide it.
        assert_eq!(
            xml_error_code(b"<Code>SlowDown</Code>\xff\xfe"),
            Some("SlowDown")
        );
    }

    #[derive(Debug, Default)]
    struct Seen(std::sync::Mutex<Vec<(Option<String>, String)>>);

    impl RequestObserver for Seen {
        fn request(&self, operation: &str, outcome: RequestOutcome) {
            self.request_in(None, operation, outcome);
        }
        fn request_in(&self, account: Option<&str>, operation: &str, _outcome: RequestOutcome) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((account.map(str::to_string), operation.to_string()));
            }
        }
    }

    #[derive(Debug, Default)]
    struct Plain(std::sync::Mutex<Vec<String>>);

    impl RequestObserver for Plain {
        fn request(&self, operation: &str, _outcome: RequestOutcome) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(operation.to_string());
            }
        }
    }

    #[test]
    fn in_account_names_its_account_unless_the_connection_does() {
        let seen = Arc::new(Seen::default());
        let scoped = in_account(seen.clone(), "111111111111");
        scoped.request("ListAccessKeys", RequestOutcome::Ok);
        scoped.request_in(None, "GetUser", RequestOutcome::Ok);
        // What the connection learned itself wins.
        scoped.request_in(
            Some("999999999999"),
            "GetCallerIdentity",
            RequestOutcome::Ok,
        );
        // So does a scope closer to the connection.
        let twice = in_account(scoped, "222222222222");
        twice.request("GetLoginProfile", RequestOutcome::ClientError);
        let got = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
        let expected = [
            ("111111111111", "ListAccessKeys"),
            ("111111111111", "GetUser"),
            ("999999999999", "GetCallerIdentity"),
            ("222222222222", "GetLoginProfile"),
        ]
        .map(|(a, o)| (Some(a.to_string()), o.to_string()));
        assert_eq!(got, expected);
        // An observer without accounts is told as before.
        let plain = Arc::new(Plain::default());
        in_account(plain.clone(), "111111111111").request("ListUsers", RequestOutcome::Ok);
        let got = plain.0.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(got, ["ListUsers"]);
    }

    #[test]
    fn labels() {
        let all = [
            RequestOutcome::Ok,
            RequestOutcome::Throttled,
            RequestOutcome::ClientError,
            RequestOutcome::ServerError,
            RequestOutcome::Unanswered,
        ];
        assert_eq!(
            all.map(RequestOutcome::as_str),
            [
                "ok",
                "throttled",
                "client-error",
                "server-error",
                "unanswered"
            ]
        );
        assert_eq!(RequestOutcome::Throttled.to_string(), "throttled");
    }
}
