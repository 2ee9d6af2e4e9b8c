//! The SQS adapter: the queue EventBridge delivers AWS Config compliance
//! events to, read by the daemon.
//!
//! A self-hosted engine behind NAT cannot be an EventBridge target itself;
//! EventBridge puts the events on an SQS queue, and the daemon long-polls it.
//! Delivery is at least once: a message is received, handled, and deleted
//! only once its run is journaled; one that cannot be handled now is left on
//! the queue with a longer visibility timeout, so it comes back later (or
//! goes to the queue's dead-letter queue after its redrive policy's
//! `maxReceiveCount`), never in a hot loop.
//!
//! Credentials and region come from the SDK's default chain (or `--profile`);
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_SQS`) is honoured, which is how
//! the tests reach moto. The region is the queue's: read from an AWS queue
//! URL (`https://sqs.REGION.amazonaws.com/...`), else the one given.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::MessageSystemAttributeName;

/// The longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The longest visibility timeout SQS allows (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// The most messages one `ReceiveMessage` returns.
pub const MAX_BATCH: i32 = 10;

/// How to connect.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// A named profile, like `--profile`.
    pub profile: Option<String>,
    /// The region when the URL does not tell it (a custom endpoint).
    pub region: Option<String>,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Told about every HTTP attempt (the daemon's metrics).
    pub observer: Option<Arc<dyn engine_aws::RequestObserver>>,
}

/// A failed SQS call.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    /// The AWS error code, when there is one.
    pub code: Option<String>,
    pub message: String,
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// What deletes it or changes its visibility, for this receive only.
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed it out, this time included.
    pub receive_count: u32,
}

/// A connection to one queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
    region: String,
}

/// The region of an AWS queue URL: `https://sqs.REGION.amazonaws.com/...`
/// (or `.amazonaws.com.cn`), or the legacy `https://REGION.queue.amazonaws.com/...`.
pub fn region_of(url: &str) -> Option<String> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?
        .split('/')
        .next()?;
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => Some(region.to_string()),
        [region, "queue", "amazonaws", ..] => Some(region.to_string()),
        _ => None,
    }
}

impl Queue {
    /// Resolve credentials for the queue at `url`; nothing is sent yet.
    pub async fn connect(url: &str, opts: &QueueOptions) -> Result<Queue, QueueError> {
        let region = region_of(url)
            .or_else(|| opts.region.clone())
            .ok_or_else(|| QueueError {
                operation: "connect",
                code: None,
                message: format!(
                    "cannot tell the region of queue {url}: set --region (or AWS_REGION)"
                ),
            })?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    // A long poll holds the request for up to 20 s.
                    .operation_attempt_timeout(MAX_WAIT + Duration::from_secs(15))
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
        let config = loader.load().await;
        let mut builder = aws_sdk_sqs::config::Builder::from(&config);
        if let Some(observer) = &opts.observer {
            builder.push_interceptor(engine_aws::interceptor(observer.clone()));
        }
        Ok(Queue {
            client: aws_sdk_sqs::Client::from_conf(builder.build()),
            url: url.to_string(),
            region,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Long-poll for up to `wait` (at most 20 s) and take up to `max`
    /// messages (at most 10), each hidden from other consumers for
    /// `visibility`.
    pub async fn receive(
        &self,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        const OP: &str = "ReceiveMessage";
        let answer = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH))
            .wait_time_seconds(secs(wait.min(MAX_WAIT)))
            .visibility_timeout(secs(visibility.min(MAX_VISIBILITY)).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| error(OP, e))?;
        Ok(answer
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Message {
                    id: m.message_id?,
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Delete a handled message.
    pub async fn delete(&self, message: &Message) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("DeleteMessage", e))
    }

    /// Hide a message for `timeout` from now (at most 12 hours): to extend
    /// the time to handle it, or to have it come back later.
    pub async fn set_visibility(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(secs(timeout.min(MAX_VISIBILITY)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("ChangeMessageVisibility", e))
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn error<E, R>(operation: &'static str, e: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let message = match e.message() {
        Some(m) => format!("{}: {m}", code.as_deref().unwrap_or("error")),
        None => DisplayErrorContext(&e).to_string(),
    };
    QueueError {
        operation,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn the_region_comes_from_an_aws_queue_url() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region_of("https://us-east-2.queue.amazonaws.com/123456789012/q").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(region_of("http://127.0.0.1:4566/123456789012/q"), None);
        assert_eq!(region_of("not a url"), None);
    }
}
