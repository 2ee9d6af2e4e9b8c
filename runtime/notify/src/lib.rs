//! Where the engine's messages to credential owners go.
//!
//! The channels a policy directory's `[notifications]` declares
//! ([`engine_core::policy::Channel`]): a webhook (a JSON POST, signed with
//! HMAC-SHA256 when a secret is set, or Slack's `{"text": ...}`), an SNS
//! topic, or an email through SES. [`Notifier::send`] sends one message to
//! one channel with the channel's attempts and timeout, and says how it
//! went; it never panics and never blocks longer than the channel allows.
//! Deciding what to send, to whom and only once is the caller's
//! (`engine-run`); this crate only delivers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{Region, SdkConfig};
use engine_core::policy::{Channel, NotificationSettings, sns_region};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying a webhook body's signature: `sha256=HEX`, the
/// HMAC-SHA256 of `TIMESTAMP.BODY` under the channel's secret.
pub const SIGNATURE_HEADER: &str = "x-engine-signature";
/// The header carrying the Unix time the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-engine-timestamp";

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// One line (an email's subject, SNS's subject).
    pub subject: String,
    /// The message itself.
    pub text: String,
    /// The owner it is for (a tag's value), if any.
    pub recipient: Option<String>,
    /// What it is about, for machines: policy, user, key id, stage...
    pub about: serde_json::Value,
}

/// How sending went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub attempts: u32,
    /// `Err`: every attempt failed, the last error.
    pub result: Result<(), String>,
}

/// The channels of one `[notifications]` table, ready to send.
pub struct Notifier {
    settings: NotificationSettings,
    http: ureq::Agent,
    sns: BTreeMap<String, aws_sdk_sns::Client>,
    ses: BTreeMap<String, aws_sdk_sesv2::Client>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self.settings.channels.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The TLS setup of webhook calls: the system's root certificates, the
/// same rustls provider the AWS SDK uses.
fn tls() -> ureq::tls::TlsConfig {
    let certs: Vec<ureq::tls::Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build()
}

impl Notifier {
    /// The channels of `settings`; SNS and SES with the credentials of
    /// `config` (the engine's own account), in each channel's region.
    pub fn new(settings: &NotificationSettings, config: &SdkConfig) -> Notifier {
        let http = ureq::Agent::config_builder()
            .tls_config(tls())
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut sns = BTreeMap::new();
        let mut ses = BTreeMap::new();
        for (name, c) in &settings.channels {
            match c {
                Channel::Sns { topic_arn } => {
                    let region = sns_region(topic_arn).unwrap_or("us-east-1").to_string();
                    let conf = aws_sdk_sns::config::Builder::from(config)
                        .region(Region::new(region))
                        .build();
                    sns.insert(name.clone(), aws_sdk_sns::Client::from_conf(conf));
                }
                Channel::Ses { region, .. } => {
                    let conf = aws_sdk_sesv2::config::Builder::from(config)
                        .region(Region::new(region.clone()))
                        .build();
                    ses.insert(name.clone(), aws_sdk_sesv2::Client::from_conf(conf));
                }
                Channel::Webhook { .. } => {}
            }
        }
        Notifier {
            settings: settings.clone(),
            http,
            sns,
            ses,
        }
    }

    pub fn settings(&self) -> &NotificationSettings {
        &self.settings
    }

    /// Send `msg` to the channel named `channel`, with its attempts (the
    /// waits between them double from 1 s, but never past its timeout).
    pub async fn send(&self, channel: &str, msg: &Message) -> Sent {
        let Some(c) = self.settings.channels.get(channel) else {
            return Sent {
                attempts: 0,
                result: Err(format!("there is no channel {channel:?}")),
            };
        };
        let attempts = match c {
            Channel::Webhook { attempts, .. } => *attempts,
            _ => 3,
        };
        let mut last = String::new();
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=attempts {
            let result = match c {
                Channel::Webhook {
                    url,
                    secret_env,
                    slack,
                    timeout_ms,
                    ..
                } => {
                    let secret = secret_env.as_ref().and_then(|v| std::env::var(v).ok());
                    let (url, slack, timeout) =
                        (url.clone(), *slack, Duration::from_millis(*timeout_ms));
                    let http = self.http.clone();
                    let msg = msg.clone();
                    tokio::task::spawn_blocking(move || {
                        post(&http, &url, slack, secret.as_deref(), timeout, &msg)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("the webhook call panicked: {e}")))
                }
                Channel::Sns { topic_arn } => match self.sns.get(channel) {
                    Some(client) => publish(client, topic_arn, msg).await,
                    None => Err("no SNS client".to_string()),
                },
                Channel::Ses { from, to, .. } => match self.ses.get(channel) {
                    Some(client) => email(client, from, to, msg).await,
                    None => Err("no SES client".to_string()),
                },
            };
            match result {
                Ok(()) => {
                    return Sent {
                        attempts: attempt,
                        result: Ok(()),
                    };
                }
                Err(e) => {
                    tracing::warn!(channel, attempt, error = %e, "a message could not be sent");
                    last = e;
                }
            }
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Sent {
            attempts,
            result: Err(last),
        }
    }
}

/// The HMAC-SHA256 signature of a webhook body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The JSON a webhook receives.
pub fn webhook_body(msg: &Message, slack: bool) -> serde_json::Value {
    if slack {
        let to = msg
            .recipient
            .as_ref()
            .map(|r| format!(" (for {r})"))
            .unwrap_or_default();
        return serde_json::json!({ "text": format!("*{}*{to}\n{}", msg.subject, msg.text) });
    }
    serde_json::json!({
        "subject": msg.subject,
        "text": msg.text,
        "recipient": msg.recipient,
        "about": msg.about,
    })
}

fn post(
    http: &ureq::Agent,
    url: &str,
    slack: bool,
    secret: Option<&str>,
    timeout: Duration,
    msg: &Message,
) -> Result<(), String> {
    let body = serde_json::to_vec(&webhook_body(msg, slack)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut req = http
        .post(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        req = req
            .header(TIMESTAMP_HEADER, &now.to_string())
            .header(SIGNATURE_HEADER, &signature(secret, now, &body));
    }
    match req.send(&body[..]) {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("{url} answered {}", resp.status())),
        Err(e) => Err(format!(
            "{url}: {e} (after {} ms)",
            started.elapsed().as_millis()
        )),
    }
}

async fn publish(client: &aws_sdk_sns::Client, topic: &str, msg: &Message) -> Result<(), String> {
    let mut req = client
        .publish()
        .topic_arn(topic)
        .subject(msg.subject.chars().take(100).collect::<String>())
        .message(&msg.text);
    if let Some(r) = &msg.recipient {
        req = req.message_attributes(
            "recipient",
            aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(r)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    req.send().await.map(|_| ()).map_err(|e| {
        format!(
            "SNS Publish to {topic}: {}",
            aws_sdk_sns::error::DisplayErrorContext(e)
        )
    })
}

async fn email(
    client: &aws_sdk_sesv2::Client,
    from: &str,
    to: &[String],
    msg: &Message,
) -> Result<(), String> {
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};
    // The owner when the message has one that is an address, else the
    // channel's own recipients.
    let recipients: Vec<String> = match &msg.recipient {
        Some(r) if r.contains('@') => vec![r.clone()],
        _ => to.to_vec(),
    };
    if recipients.is_empty() {
        return Err("no recipient: the user has no owner address and the channel no `to`".into());
    }
    let content = |s: &str| Content::builder().data(s).charset("UTF-8").build();
    let message = SesMessage::builder()
        .subject(content(&msg.subject).map_err(|e| e.to_string())?)
        .body(
            Body::builder()
                .text(content(&msg.text).map_err(|e| e.to_string())?)
                .build(),
        )
        .build();
    client
        .send_email()
        .from_email_address(from)
        .destination(
            Destination::builder()
                .set_to_addresses(Some(recipients))
                .build(),
        )
        .content(EmailContent::builder().simple(message).build())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "SES SendEmail from {from}: {}",
                aws_sdk_sesv2::error::DisplayErrorContext(e)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hmac_of_timestamp_dot_body() {
        // RFC 4231 style check against an independent computation.
        let sig = signature("key", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
        mac.update(b"1700000000.{}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("sha256={want}"));
        assert_ne!(signature("other", 1_700_000_000, b"{}"), sig);
    }

    #[test]
    fn slack_bodies_are_text_only() {
        let m = Message {
            subject: "s".into(),
            text: "t".into(),
            recipient: Some("alice@example.com".into()),
            about: serde_json::json!({"user": "alice"}),
        };
        assert_eq!(
            webhook_body(&m, true),
            serde_json::json!({"text": "*s* (for alice@example.com)\nt"})
        );
        assert_eq!(webhook_body(&m, false)["about"]["user"], "alice");
    }
}
