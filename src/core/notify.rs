//! Notifications, pure: the asynchronous-inference messages SageMaker publishes to its
//! `SuccessTopic` / `ErrorTopic`, the SNS HTTP(S) envelope that carries a message to a
//! subscriber, and the delivery back-off. No IO: every time is handed in.
//!
//! **The async-inference message** (the `Message` of the SNS notification) is a JSON object with
//! AWS's field names and order, as AWS's guide ("Check prediction results") and messages captured
//! from SageMaker show them:
//!
//! ```json
//! {"awsRegion":"us-east-1","eventTime":"2022-01-25T22:46:00.608Z",
//!  "receivedTime":"2022-01-25T22:46:00.455Z","invocationStatus":"Completed",
//!  "requestParameters":{"accept":"application/json","contentType":"text/csv",
//!    "customAttributes":"...","endpointName":"e","inputLocation":"s3://b/in.csv"},
//!  "responseParameters":{"contentType":"text/csv; charset=utf-8","outputLocation":"s3://b/o.out"},
//!  "responseBody":{"content":"<base64>","message":"...","encoding":"BASE64"},
//!  "inferenceId":"...","eventVersion":"1.0","eventSource":"aws:sagemaker","eventName":"InferenceResult"}
//! ```
//!
//! A failure has `"invocationStatus":"Failed"` and `failureReason` after it. Where AWS is silent
//! spillway chooses, and says so: `requestParameters` members the request did not carry are left
//! out (AWS's captured messages do the same); an error message carries
//! `responseParameters: {"failureLocation": ...}` only when a failure object was written
//! (`S3FailurePath`; AWS's documented error example predates it and has no
//! `responseParameters`); `responseBody` appears only when `IncludeInferenceResponseIn` names the
//! topic, and its `content` only when the response is at most 128 KB
//! ([`MAX_INCLUDED_RESPONSE`]), as AWS documents.

use serde::Serialize;

use crate::core::model::Timestamp;

/// `eventVersion` of every async-inference notification.
pub const EVENT_VERSION: &str = "1.0";
/// `eventSource`.
pub const EVENT_SOURCE: &str = "aws:sagemaker";
/// `eventName`.
pub const EVENT_NAME: &str = "InferenceResult";
/// The largest inference response a notification includes (AWS: "less than or equal to 128
/// KB"; spillway reads KB as KiB).
pub const MAX_INCLUDED_RESPONSE: usize = 128 * 1024;
/// `responseBody.message`, the sentence AWS's messages carry.
pub const RESPONSE_BODY_MESSAGE: &str = "Check S3 path location(if configured) or Cloudwatch for additional details.";
/// `IncludeInferenceResponseIn` value naming the success topic.
pub const SUCCESS_NOTIFICATION_TOPIC: &str = "SUCCESS_NOTIFICATION_TOPIC";
/// `IncludeInferenceResponseIn` value naming the error topic.
pub const ERROR_NOTIFICATION_TOPIC: &str = "ERROR_NOTIFICATION_TOPIC";

/// What the client asked for: the request half of every async-inference notification.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncRequest<'a> {
    /// The server's region (`awsRegion`).
    pub region: &'a str,
    /// `EndpointName`.
    pub endpoint_name: &'a str,
    /// The request's `InferenceId` (given or generated).
    pub inference_id: &'a str,
    /// `InputLocation`.
    pub input_location: &'a str,
    /// `ContentType`, if the request gave one.
    pub content_type: Option<&'a str>,
    /// `Accept`, if given.
    pub accept: Option<&'a str>,
    /// `CustomAttributes`, if given.
    pub custom_attributes: Option<&'a str>,
    /// When the request was accepted (`receivedTime`), epoch seconds.
    pub received_time: Timestamp,
}

/// A request that ended with an output object.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncSuccess<'a> {
    /// When it ended (`eventTime`), epoch seconds.
    pub event_time: Timestamp,
    /// Where the output was written (`responseParameters.outputLocation`).
    pub output_location: &'a str,
    /// The model's answer's content type (`responseParameters.contentType`), if it gave one.
    pub content_type: Option<&'a str>,
    /// The model's answer, when `IncludeInferenceResponseIn` names the success topic
    /// (see [`includes_response`]); `None` otherwise.
    pub response: Option<&'a [u8]>,
}

/// A request that ended in failure.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncFailure<'a> {
    /// When it ended (`eventTime`), epoch seconds.
    pub event_time: Timestamp,
    /// Why (`failureReason`), as the failure object says, e.g. `ClientError: Received server
    /// error (500) from model. ...`.
    pub failure_reason: &'a str,
    /// Where the failure object was written, if it was (`responseParameters.failureLocation`).
    pub failure_location: Option<&'a str>,
    /// The model's error answer, when `IncludeInferenceResponseIn` names the error topic and
    /// the model answered; `None` otherwise.
    pub response: Option<&'a [u8]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accept: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_attributes: Option<&'a str>,
    endpoint_name: &'a str,
    input_location: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_location: Option<&'a str>,
}

#[derive(Serialize)]
struct ResponseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    message: &'static str,
    encoding: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    aws_region: &'a str,
    event_time: String,
    received_time: String,
    invocation_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    request_parameters: RequestParameters<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_parameters: Option<ResponseParameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<ResponseBody>,
    inference_id: &'a str,
    event_version: &'static str,
    event_source: &'static str,
    event_name: &'static str,
}

fn request_parameters<'a>(req: &AsyncRequest<'a>) -> RequestParameters<'a> {
    RequestParameters {
        accept: req.accept,
        content_type: req.content_type,
        custom_attributes: req.custom_attributes,
        endpoint_name: req.endpoint_name,
        input_location: req.input_location,
    }
}

fn response_body(response: Option<&[u8]>) -> Option<ResponseBody> {
    response.map(|body| ResponseBody {
        content: (body.len() <= MAX_INCLUDED_RESPONSE).then(|| base64(body)),
        message: RESPONSE_BODY_MESSAGE,
        encoding: "BASE64",
    })
}

fn render(m: &Message<'_>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

/// The success message (`invocationStatus: Completed`) as JSON text: the SNS `Message`.
pub fn async_success_message(req: &AsyncRequest<'_>, done: &AsyncSuccess<'_>) -> String {
    render(&Message {
        aws_region: req.region,
        event_time: iso8601_millis(done.event_time),
        received_time: iso8601_millis(req.received_time),
        invocation_status: "Completed",
        failure_reason: None,
        request_parameters: request_parameters(req),
        response_parameters: Some(ResponseParameters {
            content_type: done.content_type,
            output_location: Some(done.output_location),
            failure_location: None,
        }),
        response_body: response_body(done.response),
        inference_id: req.inference_id,
        event_version: EVENT_VERSION,
        event_source: EVENT_SOURCE,
        event_name: EVENT_NAME,
    })
}

/// The error message (`invocationStatus: Failed`, `failureReason`) as JSON text.
pub fn async_error_message(req: &AsyncRequest<'_>, failed: &AsyncFailure<'_>) -> String {
    render(&Message {
        aws_region: req.region,
        event_time: iso8601_millis(failed.event_time),
        received_time: iso8601_millis(req.received_time),
        invocation_status: "Failed",
        failure_reason: Some(failed.failure_reason),
        request_parameters: request_parameters(req),
        response_parameters: failed.failure_location.map(|l| ResponseParameters {
            content_type: None,
            output_location: None,
            failure_location: Some(l),
        }),
        response_body: response_body(failed.response),
        inference_id: req.inference_id,
        event_version: EVENT_VERSION,
        event_source: EVENT_SOURCE,
        event_name: EVENT_NAME,
    })
}

/// Whether `IncludeInferenceResponseIn` asks for the response in the success (`success =
/// true`) or the error topic's notifications.
pub fn includes_response(include_in: &[String], success: bool) -> bool {
    let want = if success {
        SUCCESS_NOTIFICATION_TOPIC
    } else {
        ERROR_NOTIFICATION_TOPIC
    };
    include_in.iter().any(|t| t == want)
}

/// `2022-01-25T22:46:00.608Z`: an epoch time with milliseconds, as SNS and SageMaker write
/// times in notifications.
pub fn iso8601_millis(t: Timestamp) -> String {
    let t = if t.is_finite() { t } else { 0.0 };
    let ms = (t * 1000.0).floor() as i64;
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let whole = crate::core::time::iso8601(secs);
    format!("{}.{millis:03}Z", whole.trim_end_matches('Z'))
}

/// Standard base64 (RFC 4648 §4, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The SNS HTTP(S) notification body (AWS's "HTTP/HTTPS notification JSON format"), in AWS's
/// member order. spillway cannot sign as AWS, so `SignatureVersion`, `Signature`,
/// `SigningCertURL` and `UnsubscribeURL` are absent (a subscriber that verifies SNS signatures
/// must be told to skip that for spillway; spillway offers its own HMAC header instead, see
/// `docs/async.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsEnvelope<'a> {
    /// Always `Notification`.
    #[serde(rename = "Type")]
    pub kind: &'static str,
    /// The message id `publish` returned; the same on every retry.
    pub message_id: &'a str,
    /// The topic published to.
    pub topic_arn: &'a str,
    /// The `Subject`, left out when none was given (as SNS does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// The message text.
    pub message: &'a str,
    /// When it was published (`2022-01-25T22:46:00.608Z`).
    pub timestamp: String,
}

impl<'a> SnsEnvelope<'a> {
    /// The envelope of a message published at `published` (epoch seconds).
    pub fn new(
        message_id: &'a str,
        topic_arn: &'a str,
        subject: Option<&'a str>,
        message: &'a str,
        published: Timestamp,
    ) -> Self {
        Self {
            kind: "Notification",
            message_id,
            topic_arn,
            subject,
            message,
            timestamp: iso8601_millis(published),
        }
    }

    /// The POST body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Whether `arn` is an SNS topic ARN as SageMaker's `SuccessTopic`/`ErrorTopic` pattern
/// accepts it: `arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+`. Returns a message
/// naming the rule broken.
pub fn check_topic_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let bad = |why: &str| Err(format!("{arn:?} is not an SNS topic ARN ({why})"));
    if parts.len() != 6 || parts[0] != "arn" {
        return bad("expected arn:aws:sns:<region>:<12-digit account>:<topic name>");
    }
    let partition_ok = parts[1]
        .strip_prefix("aws")
        .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
    if !partition_ok {
        return bad("the partition must be aws, aws-cn, aws-us-gov, ...");
    }
    if parts[2] != "sns" {
        return bad("the service must be sns");
    }
    if !parts[3]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("the region may hold only a-z, 0-9 and -");
    }
    if parts[4].len() != 12 || !parts[4].bytes().all(|b| b.is_ascii_digit()) {
        return bad("the account must be 12 digits");
    }
    if parts[5].is_empty()
        || !parts[5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("the topic name must be 1 or more of a-z, A-Z, 0-9, _ . -");
    }
    Ok(())
}

/// Delivery back-off: the wait after failed attempt `attempt` (1 for the first), `initial_s`
/// doubling per attempt and capped at `max_s`. Deterministic (no jitter): one subscriber per
/// topic, so there is no herd to spread.
pub fn backoff_seconds(attempt: u32, initial_s: f64, max_s: f64) -> f64 {
    let exp = attempt.saturating_sub(1).min(62);
    (initial_s * (1u64 << exp) as f64).min(max_s)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request() -> AsyncRequest<'static> {
        AsyncRequest {
            region: "us-east-1",
            endpoint_name: "e",
            inference_id: "11111111-2222-3333-4444-555555555555",
            input_location: "s3://b/in/input-data.csv",
            content_type: Some("text/csv"),
            accept: None,
            custom_attributes: None,
            received_time: 1_643_150_760.455,
        }
    }

    #[test]
    fn success_message_is_aws_documented_shape() {
        let m = async_success_message(
            &request(),
            &AsyncSuccess {
                event_time: 1_643_150_760.608,
                output_location: "s3://b/out/prediction.out",
                content_type: Some("text/csv; charset=utf-8"),
                response: None,
            },
        );
        // AWS's guide's example, byte for byte (its placeholders filled in).
        assert_eq!(
            m,
            r#"{"awsRegion":"us-east-1","eventTime":"2022-01-25T22:46:00.608Z","receivedTime":"2022-01-25T22:46:00.455Z","invocationStatus":"Completed","requestParameters":{"contentType":"text/csv","endpointName":"e","inputLocation":"s3://b/in/input-data.csv"},"responseParameters":{"contentType":"text/csv; charset=utf-8","outputLocation":"s3://b/out/prediction.out"},"inferenceId":"11111111-2222-3333-4444-555555555555","eventVersion":"1.0","eventSource":"aws:sagemaker","eventName":"InferenceResult"}"#
        );
    }

    #[test]
    fn error_message_carries_the_reason_and_the_failure_location() {
        let reason = "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs in your account for more information.";
        let plain = async_error_message(
            &request(),
            &AsyncFailure {
                event_time: 1_643_150_760.608,
                failure_reason: reason,
                failure_location: None,
                response: None,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&plain).expect("json");
        assert_eq!(v["invocationStatus"], "Failed");
        assert_eq!(v["failureReason"], reason);
        assert!(v.get("responseParameters").is_none() && v.get("responseBody").is_none());
        let keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        assert!(plain.find("\"invocationStatus\"") < plain.find("\"failureReason\""));
        assert!(keys.contains(&"eventName"));
        let with = async_error_message(
            &request(),
            &AsyncFailure {
                event_time: 1.0,
                failure_reason: reason,
                failure_location: Some("s3://b/failures/x.out"),
                response: Some(b"boom"),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&with).expect("json");
        assert_eq!(v["responseParameters"]["failureLocation"], "s3://b/failures/x.out");
        assert_eq!(v["responseBody"]["content"], "Ym9vbQ==");
        assert_eq!(v["responseBody"]["encoding"], "BASE64");
    }

    #[test]
    fn a_response_over_128_kib_is_announced_without_its_content() {
        let big = vec![b'x'; MAX_INCLUDED_RESPONSE + 1];
        let done = |r: &'static [u8]| AsyncSuccess {
            event_time: 2.0,
            output_location: "s3://b/o",
            content_type: None,
            response: Some(r),
        };
        let v: serde_json::Value =
            serde_json::from_str(&async_success_message(&request(), &done(big.leak()))).expect("json");
        assert!(v["responseBody"].get("content").is_none());
        assert_eq!(v["responseBody"]["message"], RESPONSE_BODY_MESSAGE);
        let exact = vec![b'y'; MAX_INCLUDED_RESPONSE];
        let v: serde_json::Value =
            serde_json::from_str(&async_success_message(&request(), &done(exact.leak()))).expect("json");
        assert_eq!(
            v["responseBody"]["content"].as_str().map(str::len),
            Some(MAX_INCLUDED_RESPONSE.div_ceil(3) * 4)
        );
    }

    #[test]
    fn include_response_reads_aws_values() {
        let both = vec![
            SUCCESS_NOTIFICATION_TOPIC.to_string(),
            ERROR_NOTIFICATION_TOPIC.to_string(),
        ];
        assert!(includes_response(&both, true) && includes_response(&both, false));
        let err = vec![ERROR_NOTIFICATION_TOPIC.to_string()];
        assert!(!includes_response(&err, true) && includes_response(&err, false));
        assert!(!includes_response(&[], true));
    }

    #[test]
    fn sns_envelope_matches_the_http_notification_format() {
        let e = SnsEnvelope::new("m-1", "arn:aws:sns:us-east-1:123456789012:t", None, "{\"a\":1}", 1.5);
        assert_eq!(
            e.body(),
            r#"{"Type":"Notification","MessageId":"m-1","TopicArn":"arn:aws:sns:us-east-1:123456789012:t","Message":"{\"a\":1}","Timestamp":"1970-01-01T00:00:01.500Z"}"#
        );
        let s = SnsEnvelope::new("m", "t", Some("hi"), "x", 0.0).body();
        assert!(s.contains(r#""TopicArn":"t","Subject":"hi","Message":"x""#), "{s}");
    }

    #[test]
    fn base64_known_vectors() {
        // RFC 4648 §10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn topic_arns_follow_sagemakers_pattern() {
        assert!(check_topic_arn("arn:aws:sns:us-east-1:123456789012:my_topic.v-1").is_ok());
        assert!(check_topic_arn("arn:aws-cn:sns:cn-north-1:123456789012:t").is_ok());
        for (bad, why) in [
            ("arn:aws:sqs:us-east-1:123456789012:t", "service"),
            ("arn:aws:sns:us-east-1:12345678901:t", "12 digits"),
            ("arn:aws:sns:us-east-1:123456789012:", "topic name"),
            ("arn:aws:sns:us-east-1:123456789012:a/b", "topic name"),
            ("arn:gcp:sns:us-east-1:123456789012:t", "partition"),
            ("sns:t", "expected arn"),
        ] {
            let e = check_topic_arn(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn decode64(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = vec![];
        for chunk in s.as_bytes().chunks(4) {
            let pad = chunk.iter().filter(|c| **c == b'=').count();
            let n = chunk
                .iter()
                .take(4 - pad)
                .enumerate()
                .fold(0u32, |n, (i, c)| n | (u32::from(val(*c)) << (18 - 6 * i)));
            for i in 0..(3 - pad) {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let e = base64(&bytes);
            prop_assert_eq!(e.len(), bytes.len().div_ceil(3) * 4);
            prop_assert_eq!(decode64(&e), bytes);
        }

        #[test]
        fn backoff_doubles_then_caps(initial in 0.01f64..10.0, factor in 1.0f64..1000.0, attempt in 1u32..100) {
            let max = initial * factor;
            let d = backoff_seconds(attempt, initial, max);
            prop_assert!(d >= initial.min(max) && d <= max);
            let next = backoff_seconds(attempt + 1, initial, max);
            prop_assert!(next >= d);
            if d < max {
                prop_assert!((next - (2.0 * d).min(max)).abs() < 1e-9 * max);
            }
            prop_assert_eq!(backoff_seconds(1, initial, max), initial);
        }

        #[test]
        fn messages_are_json_with_every_field_given(
            endpoint in "[a-zA-Z0-9-]{1,20}",
            id in "[ -~]{1,40}",
            input in "s3://[a-z]{3,10}/[ -~]{0,30}",
            ct in proptest::option::of("[ -~]{1,20}"),
            attrs in proptest::option::of("[ -~]{0,20}"),
            reason in "\\PC{0,60}",
            received in 0.0f64..4e9,
            body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let req = AsyncRequest {
                region: "eu-west-1", endpoint_name: &endpoint, inference_id: &id, input_location: &input,
                content_type: ct.as_deref(), accept: None, custom_attributes: attrs.as_deref(), received_time: received,
            };
            let ok: serde_json::Value = serde_json::from_str(&async_success_message(&req, &AsyncSuccess {
                event_time: received + 1.0, output_location: "s3://o/k", content_type: ct.as_deref(), response: body.as_deref(),
            })).expect("json");
            prop_assert_eq!(&ok["invocationStatus"], "Completed");
            prop_assert_eq!(&ok["inferenceId"], id.as_str());
            prop_assert_eq!(&ok["requestParameters"]["endpointName"], endpoint.as_str());
            prop_assert_eq!(&ok["requestParameters"]["inputLocation"], input.as_str());
            prop_assert_eq!(ok["requestParameters"].get("contentType").and_then(|v| v.as_str()), ct.as_deref());
            prop_assert_eq!(ok["requestParameters"].get("customAttributes").and_then(|v| v.as_str()), attrs.as_deref());
            prop_assert_eq!(ok.get("responseBody").is_some(), body.is_some());
            if let Some(b) = &body {
                prop_assert_eq!(decode64(ok["responseBody"]["content"].as_str().expect("content")), b.clone());
            }
            let err: serde_json::Value = serde_json::from_str(&async_error_message(&req, &AsyncFailure {
                event_time: received, failure_reason: &reason, failure_location: None, response: None,
            })).expect("json");
            prop_assert_eq!(&err["invocationStatus"], "Failed");
            prop_assert_eq!(&err["failureReason"], reason.as_str());
            let received_text = iso8601_millis(received);
            prop_assert_eq!(err["receivedTime"].as_str(), Some(received_text.as_str()));
        }

        #[test]
        fn millisecond_times_parse_back(t in 0.0f64..4e9) {
            let s = iso8601_millis(t);
            prop_assert_eq!(s.len(), 24);
            let whole = format!("{}Z", &s[..19]);
            let secs = crate::core::time::parse_iso8601(&whole).expect("parses");
            let ms: i64 = s[20..23].parse().expect("millis");
            prop_assert_eq!(secs * 1000 + ms, (t * 1000.0).floor() as i64);
        }
    }
}
