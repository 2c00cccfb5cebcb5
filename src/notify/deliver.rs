//! One delivery attempt: the POST of an SNS HTTP(S) notification to a subscriber's URL.
//!
//! What a subscriber receives (AWS's "HTTP/HTTPS notification JSON format", less what only AWS
//! can produce):
//!
//! - `POST <url>` with `Content-Type: text/plain; charset=UTF-8` (as SNS sends it),
//!   `x-amz-sns-message-type: Notification`, `x-amz-sns-message-id: <MessageId>`,
//!   `x-amz-sns-topic-arn: <topic>`, `x-amz-sns-subscription-arn: <topic>:<id>` (a stable id
//!   spillway derives from the topic and the URL: the mapping stands for a confirmed
//!   subscription) and `User-Agent: spillway/<version>`;
//! - the body `{"Type":"Notification","MessageId":..,"TopicArn":..,["Subject":..,]"Message":..,
//!   "Timestamp":..}` (`core::notify::SnsEnvelope`). `SignatureVersion`, `Signature`,
//!   `SigningCertURL` and `UnsubscribeURL` are absent: spillway cannot sign as AWS.
//! - With `[notifications] signing_secret`, `x-spillway-signature: sha256=<hex>`, the
//!   HMAC-SHA256 of the exact body bytes with that secret.
//!
//! Any 2xx delivers; any other status, a connection failure or the timeout fails the attempt.
//! Redirects are not followed (a 3xx fails the attempt, naming where it pointed).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Digest;

use crate::core::model::Timestamp;
use crate::core::notify::SnsEnvelope;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer, with its status.
    Delivered(u16),
    /// Why it failed (a status, a connection error, the timeout).
    Failed(String),
}

/// One notification as POSTed.
pub(super) struct Post<'a> {
    pub message_id: &'a str,
    pub topic_arn: &'a str,
    pub subject: Option<&'a str>,
    pub message: &'a str,
    pub published: Timestamp,
    pub signing_secret: Option<&'a str>,
}

/// The HTTP client of the delivery task.
pub(super) struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// Lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// The subscription ARN spillway reports for a topic mapped to a URL: the topic ARN and a
/// UUID-shaped id from SHA-256 of the URL, stable across restarts.
pub(super) fn subscription_arn(topic_arn: &str, url: &str) -> String {
    let h = hex(&sha2::Sha256::digest(url.as_bytes()));
    format!(
        "{topic_arn}:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Client {
    pub(super) fn new(timeout_seconds: f64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let timeout = Duration::from_secs_f64(timeout_seconds);
        connector.set_connect_timeout(Some(timeout));
        Self {
            http: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            timeout,
        }
    }

    /// POSTs one notification to `url`.
    pub(super) async fn post(&self, url: &str, p: &Post<'_>) -> Attempt {
        let body = SnsEnvelope::new(p.message_id, p.topic_arn, p.subject, p.message, p.published).body();
        let mut req = hyper::Request::post(url)
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .header("x-amz-sns-message-id", p.message_id)
            .header("x-amz-sns-topic-arn", p.topic_arn)
            .header("x-amz-sns-subscription-arn", subscription_arn(p.topic_arn, url))
            .header("user-agent", concat!("spillway/", env!("CARGO_PKG_VERSION")));
        if let Some(secret) = p.signing_secret {
            req = req.header("x-spillway-signature", signature(secret, body.as_bytes()));
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(format!("cannot build the request: {e}")),
        };
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                use std::error::Error;
                let mut why = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    why = format!("{why}: {s}");
                    src = s.source();
                }
                why
            })?;
            let status = resp.status();
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read (and drop) the answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok::<_, String>((status, location))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Attempt::Failed(format!("no answer within {} s", self.timeout.as_secs_f64())),
            Ok(Err(why)) => Attempt::Failed(why),
            Ok(Ok((status, _))) if status.is_success() => Attempt::Delivered(status.as_u16()),
            Ok(Ok((status, Some(location)))) if status.is_redirection() => {
                Attempt::Failed(format!("HTTP {status} to {location} (redirects are not followed)"))
            }
            Ok(Ok((status, _))) => Attempt::Failed(format!("HTTP {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn subscription_arns_are_stable_and_per_url() {
        let a = subscription_arn("arn:aws:sns:us-east-1:123456789012:t", "http://h/a");
        assert_eq!(
            a,
            subscription_arn("arn:aws:sns:us-east-1:123456789012:t", "http://h/a")
        );
        assert_ne!(
            a,
            subscription_arn("arn:aws:sns:us-east-1:123456789012:t", "http://h/b")
        );
        let id = a.rsplit(':').next().expect("an id");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
