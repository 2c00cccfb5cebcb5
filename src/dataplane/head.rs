//! Message heads, read and written the same way by both servers: what an invocation takes from
//! its request's headers ([`RequestHeaders::read`], over raw header bytes), and the head of its
//! answer ([`AnswerHead`]: status and headers, an error's included), which the fast path writes
//! as bytes ([`AnswerHead::write`]) and hyper-served connections turn into an
//! `http::Response` ([`AnswerHead::response`]).

use axum::http::{HeaderName, HeaderValue, StatusCode};

use super::h1;
use super::op::{Mode, RuntimeOp};
use super::request_id::RequestId;
use crate::error::{ApiError, ErrorCode, Protocol};

/// The longest `X-Amzn-SageMaker-Custom-Attributes` an invocation may carry.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 1024;

/// The headers an invocation reads from its request, as `V`: header values (`&[u8]`) or where
/// they lie in the fast path's buffer (`Range<usize>`). A header sent more than once counts
/// with its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders<V> {
    /// `Content-Type`, passed to the model.
    pub content_type: Option<V>,
    /// `Accept`, passed to the model.
    pub accept: Option<V>,
    /// `X-Amzn-SageMaker-Custom-Attributes`, passed to the model.
    pub custom_attributes: Option<V>,
    /// `X-Amzn-SageMaker-Inference-Id`, passed to the model.
    pub inference_id: Option<V>,
    /// `X-Amzn-SageMaker-Target-Variant` (see [`RequestHeaders::target_variant`]).
    pub target_variant: Option<V>,
    /// `X-Amzn-SageMaker-Inference-Component` (see [`RequestHeaders::inference_component`]).
    pub inference_component: Option<V>,
    /// `Host`, checked against the server's names (DNS rebinding).
    pub host: Option<V>,
    /// `Origin`: a browser page's; only the server's own may invoke.
    pub origin: Option<V>,
    /// `X-Amzn-SageMaker-Content-Type`: `InvokeEndpointAsync`'s `ContentType`.
    pub sagemaker_content_type: Option<V>,
    /// `X-Amzn-SageMaker-Accept`: `InvokeEndpointAsync`'s `Accept`.
    pub sagemaker_accept: Option<V>,
    /// `X-Amzn-SageMaker-InputLocation` (`InvokeEndpointAsync`).
    pub input_location: Option<V>,
    /// `X-Amzn-SageMaker-S3OutputPathExtension` (`InvokeEndpointAsync`).
    pub output_path_extension: Option<V>,
    /// `X-Amzn-SageMaker-Filename` (`InvokeEndpointAsync`).
    pub filename: Option<V>,
    /// `X-Amzn-SageMaker-RequestTTLSeconds` (`InvokeEndpointAsync`).
    pub request_ttl_seconds: Option<V>,
    /// `X-Amzn-SageMaker-InvocationTimeoutSeconds` (`InvokeEndpointAsync`).
    pub invocation_timeout_seconds: Option<V>,
    /// `Connection` holds `close`.
    pub close: bool,
    /// `Expect` or `Upgrade` is present (the fast path leaves such requests to hyper, which
    /// answers a `100-continue` and refuses upgrades).
    pub expect_or_upgrade: bool,
}

impl<'h> RequestHeaders<&'h [u8]> {
    /// Reads them from a request's header fields, as `(name, value)` bytes in the order they
    /// were sent.
    pub fn read(fields: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) -> Self {
        let mut r = Self::default();
        let first = |slot: &mut Option<&'h [u8]>, v| {
            if slot.is_none() {
                *slot = Some(v);
            }
        };
        for (name, value) in fields {
            if name.eq_ignore_ascii_case(b"content-type") {
                first(&mut r.content_type, value);
            } else if name.eq_ignore_ascii_case(b"accept") {
                first(&mut r.accept, value);
            } else if name.eq_ignore_ascii_case(b"x-amzn-sagemaker-custom-attributes") {
                first(&mut r.custom_attributes, value);
            } else if name.eq_ignore_ascii_case(b"x-amzn-sagemaker-inference-id") {
                first(&mut r.inference_id, value);
            } else if name.eq_ignore_ascii_case(b"x-amzn-sagemaker-target-variant") {
                first(&mut r.target_variant, value);
            } else if name.eq_ignore_ascii_case(b"host") {
                first(&mut r.host, value);
            } else if name.eq_ignore_ascii_case(b"origin") {
                first(&mut r.origin, value);
            } else if name.len() > 22 && name[..16].eq_ignore_ascii_case(b"x-amzn-sagemaker") {
                // The asynchronous invocation's headers and the inference component's, behind
                // one prefix test so that a plain invocation's other headers pay one comparison
                // for all eight.
                let rest = &name[16..];
                if rest.eq_ignore_ascii_case(b"-inference-component") {
                    first(&mut r.inference_component, value);
                } else if rest.eq_ignore_ascii_case(b"-content-type") {
                    first(&mut r.sagemaker_content_type, value);
                } else if rest.eq_ignore_ascii_case(b"-accept") {
                    first(&mut r.sagemaker_accept, value);
                } else if rest.eq_ignore_ascii_case(b"-inputlocation") {
                    first(&mut r.input_location, value);
                } else if rest.eq_ignore_ascii_case(b"-s3outputpathextension") {
                    first(&mut r.output_path_extension, value);
                } else if rest.eq_ignore_ascii_case(b"-filename") {
                    first(&mut r.filename, value);
                } else if rest.eq_ignore_ascii_case(b"-requestttlseconds") {
                    first(&mut r.request_ttl_seconds, value);
                } else if rest.eq_ignore_ascii_case(b"-invocationtimeoutseconds") {
                    first(&mut r.invocation_timeout_seconds, value);
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                r.close |= h1::has_close_token(value);
            } else if name.eq_ignore_ascii_case(b"expect") || name.eq_ignore_ascii_case(b"upgrade") {
                r.expect_or_upgrade = true;
            }
        }
        r
    }

    /// `CustomAttributes` as the model gets it: at most 1,024 characters of printable ASCII
    /// (the runtime API's constraint); anything else is refused with a 400 `ValidationError`
    /// before the request reaches a model.
    pub fn check_custom_attributes(&self) -> Result<(), ApiError> {
        let Some(v) = self.custom_attributes else { return Ok(()) };
        if v.len() > MAX_CUSTOM_ATTRIBUTES {
            return Err(ApiError::new(
                ErrorCode::ValidationError,
                format!(
                    "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: Member must have length less than or equal to {MAX_CUSTOM_ATTRIBUTES} (it has {})",
                    v.len()
                ),
            ));
        }
        if !v.iter().all(|b| b.is_ascii() && (*b == b'\t' || !b.is_ascii_control())) {
            return Err(ApiError::new(
                ErrorCode::ValidationError,
                "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: Member must satisfy regular expression pattern: \\p{ASCII}*",
            ));
        }
        Ok(())
    }

    /// `TargetVariant`: a variant name is text, so a value that is not UTF-8 is refused
    /// (400 `ValidationError`).
    pub fn target_variant(&self) -> Result<Option<&'h str>, ApiError> {
        self.target_variant
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| {
                    ApiError::new(
                        ErrorCode::ValidationError,
                        "TargetVariant: the X-Amzn-SageMaker-Target-Variant header is not valid UTF-8.",
                    )
                })
            })
            .transpose()
    }
}

/// The longest `InferenceComponentName` (the runtime model's `InferenceComponentHeader`).
pub const MAX_INFERENCE_COMPONENT: usize = 63;

/// Whether `name` matches the runtime model's `InferenceComponentHeader` pattern,
/// `^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$` (length is checked apart).
pub fn is_component_name(name: &[u8]) -> bool {
    match (name.first(), name.last()) {
        (Some(a), Some(z)) => {
            a.is_ascii_alphanumeric()
                && z.is_ascii_alphanumeric()
                && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

impl<'h> RequestHeaders<&'h [u8]> {
    /// `InferenceComponentName`: at most 63 characters matching
    /// `^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$` (the runtime model's constraints, refused in
    /// AWS's validation wording with a 400 `ValidationError`); `None` when the header is absent.
    pub fn inference_component(&self) -> Result<Option<&'h str>, ApiError> {
        let Some(v) = self.inference_component else {
            return Ok(None);
        };
        let shown = String::from_utf8_lossy(v);
        if v.len() > MAX_INFERENCE_COMPONENT {
            return Err(ApiError::new(
                ErrorCode::ValidationError,
                format!(
                    "1 validation error detected: Value '{shown}' at 'inferenceComponentName' failed to satisfy constraint: Member must have length less than or equal to {MAX_INFERENCE_COMPONENT}"
                ),
            ));
        }
        if !is_component_name(v) {
            return Err(ApiError::new(
                ErrorCode::ValidationError,
                format!(
                    "1 validation error detected: Value '{shown}' at 'inferenceComponentName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
                ),
            ));
        }
        // Checked to be ASCII above.
        Ok(std::str::from_utf8(v).ok())
    }
}

impl<V> RequestHeaders<V> {
    /// The same headers with each value turned into a `W`.
    pub fn map<W>(&self, mut f: impl FnMut(&V) -> W) -> RequestHeaders<W> {
        RequestHeaders {
            content_type: self.content_type.as_ref().map(&mut f),
            accept: self.accept.as_ref().map(&mut f),
            custom_attributes: self.custom_attributes.as_ref().map(&mut f),
            inference_id: self.inference_id.as_ref().map(&mut f),
            target_variant: self.target_variant.as_ref().map(&mut f),
            inference_component: self.inference_component.as_ref().map(&mut f),
            host: self.host.as_ref().map(&mut f),
            origin: self.origin.as_ref().map(&mut f),
            sagemaker_content_type: self.sagemaker_content_type.as_ref().map(&mut f),
            sagemaker_accept: self.sagemaker_accept.as_ref().map(&mut f),
            input_location: self.input_location.as_ref().map(&mut f),
            output_path_extension: self.output_path_extension.as_ref().map(&mut f),
            filename: self.filename.as_ref().map(&mut f),
            request_ttl_seconds: self.request_ttl_seconds.as_ref().map(&mut f),
            invocation_timeout_seconds: self.invocation_timeout_seconds.as_ref().map(&mut f),
            close: self.close,
            expect_or_upgrade: self.expect_or_upgrade,
        }
    }
}

/// Most headers an answer carries besides `date` and framing.
const MAX_ANSWER_HEADERS: usize = 6;

/// The head of an answer to a runtime request: its status and headers, except `date` and the
/// framing headers, which each server adds as its connection needs them.
#[derive(Debug, Clone)]
pub struct AnswerHead<'a> {
    /// The status.
    pub status: StatusCode,
    headers: [Option<(&'static str, &'a [u8])>; MAX_ANSWER_HEADERS],
}

impl<'a> AnswerHead<'a> {
    /// A model's successful answer to `op`: the request id, the model's content type (for a
    /// stream, the event-stream type, the model's in `x-amzn-sagemaker-content-type`), its
    /// custom attributes, the variant and the instance type that served it.
    pub fn success(
        op: &RuntimeOp<'_>,
        request_id: &'a RequestId,
        model_content_type: Option<&'a [u8]>,
        custom_attributes: Option<&'a [u8]>,
        variant: &'a str,
        instance_type: &'a str,
    ) -> Self {
        let (content_type, model_content_type) = match op.mode() {
            Mode::Plain | Mode::Async => (model_content_type, None),
            Mode::EventStream => (Some(&b"application/vnd.amazon.eventstream"[..]), model_content_type),
        };
        Self {
            status: StatusCode::OK,
            headers: [
                Some(("x-amzn-requestid", request_id.as_str().as_bytes())),
                content_type.map(|v| ("content-type", v)),
                model_content_type.map(|v| ("x-amzn-sagemaker-content-type", v)),
                custom_attributes.map(|v| ("x-amzn-sagemaker-custom-attributes", v)),
                Some(("x-amzn-invoked-production-variant", variant.as_bytes())),
                Some(("x-spillway-instance-type", instance_type.as_bytes())),
            ],
        }
    }

    /// An AWS error, as the error table renders it for the runtime's protocol (awsJson 1.1),
    /// answering the request `request_id`; its body is [`ApiError::body`].
    pub fn error(e: &'a ApiError, request_id: &'a RequestId) -> Self {
        let mut headers = [None; MAX_ANSWER_HEADERS];
        headers[0] = Some(("x-amzn-requestid", request_id.as_str().as_bytes()));
        for (slot, (name, value)) in headers[1..].iter_mut().zip(e.headers(Protocol::AwsJson11)) {
            *slot = Some((name, value.as_bytes()));
        }
        Self {
            status: e.status(),
            headers,
        }
    }

    /// `InvokeEndpointAsync`'s answer: 202, where the output and a failure will be written,
    /// and a JSON body (`{"InferenceId": ...}`) of type `application/json`.
    pub fn accepted(request_id: &'a RequestId, output_location: &'a str, failure_location: &'a str) -> Self {
        AnswerHead {
            status: StatusCode::ACCEPTED,
            headers: [
                Some(("x-amzn-requestid", request_id.as_str().as_bytes())),
                Some(("content-type", b"application/json")),
                Some(("x-amzn-sagemaker-outputlocation", output_location.as_bytes())),
                Some(("x-amzn-sagemaker-failurelocation", failure_location.as_bytes())),
                None,
                None,
            ],
        }
    }

    /// An invocation path asked with another method than `POST`: 405, `Allow: POST`, no body.
    pub fn method_not_allowed(request_id: &'a RequestId) -> Self {
        AnswerHead {
            status: StatusCode::METHOD_NOT_ALLOWED,
            headers: [
                Some(("x-amzn-requestid", request_id.as_str().as_bytes())),
                Some(("allow", b"POST")),
                None,
                None,
                None,
                None,
            ],
        }
    }

    /// The headers, in the order they are written.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'a [u8])> + '_ {
        self.headers.iter().flatten().copied()
    }

    /// Writes the head as HTTP/1.1 into `out`: status line, headers, `date`, `content-length`
    /// when `length` is known (`transfer-encoding: chunked` otherwise), `connection: close`
    /// unless `keep`, and the blank line.
    pub fn write(&self, out: &mut Vec<u8>, length: Option<u64>, keep: bool) {
        if self.status == StatusCode::OK {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(self.status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(self.status.canonical_reason().unwrap_or("Error").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in self.headers() {
            h1::put_header(out, name.as_bytes(), value);
        }
        h1::put_date(out);
        h1::put_length(out, length);
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The head as an `http::Response` carrying `body` (hyper adds `date` and framing). A
    /// header value hyper cannot carry is left out.
    pub fn response<B>(&self, body: B) -> axum::http::Response<B> {
        let mut resp = axum::http::Response::new(body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        for (name, value) in self.headers() {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_read_case_insensitively_first_value_first() {
        let fields: [(&[u8], &[u8]); 8] = [
            (b"Content-Type", b"text/csv"),
            (b"content-type", b"text/plain"),
            (b"ACCEPT", b"application/json"),
            (b"X-Amzn-SageMaker-Custom-Attributes", b"a=1"),
            (b"x-amzn-sagemaker-inference-id", b"id-1"),
            (b"X-Amzn-SageMaker-Target-Variant", b"blue"),
            (b"Connection", b"keep-alive, Close"),
            (b"Expect", b"100-continue"),
        ];
        let h = RequestHeaders::read(fields);
        assert_eq!(h.content_type, Some(&b"text/csv"[..]));
        assert_eq!(h.accept, Some(&b"application/json"[..]));
        assert_eq!(h.custom_attributes, Some(&b"a=1"[..]));
        assert_eq!(h.inference_id, Some(&b"id-1"[..]));
        assert_eq!(h.target_variant(), Ok(Some("blue")));
        assert!(h.close && h.expect_or_upgrade);
        let plain = RequestHeaders::read([(&b"upgrade"[..], &b"h2c"[..])]);
        assert!(plain.expect_or_upgrade && !plain.close && plain.content_type.is_none());
        assert_eq!(plain.target_variant(), Ok(None));
    }

    #[test]
    fn a_target_variant_that_is_not_utf8_is_a_validation_error() {
        let h = RequestHeaders::read([(&b"x-amzn-sagemaker-target-variant"[..], &b"bl\xffue"[..])]);
        let e = h.target_variant().unwrap_err();
        assert_eq!(
            (e.status(), e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::ValidationError)
        );
        assert!(e.message.contains("TargetVariant"), "{}", e.message);
    }

    #[test]
    fn an_error_head_is_the_same_bytes_and_the_same_response() {
        let e = ApiError::new(ErrorCode::ThrottlingException, "slow down");
        let id = super::super::request_id::RequestIds::seeded(7, 7).next();
        let head = AnswerHead::error(&e, &id);
        let mut out = Vec::new();
        head.write(&mut out, Some(7), false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 429 Too Many Requests\r\nx-amzn-requestid: {id}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-errortype: ThrottlingException\r\ndate: ")), "{text}");
        assert!(
            text.ends_with("content-length: 7\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        let resp = head.response(());
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let names: Vec<_> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("x-amzn-requestid", id.as_str()),
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amzn-errortype", "ThrottlingException")
            ]
        );
        let mut out = Vec::new();
        AnswerHead::method_not_allowed(&id).write(&mut out, Some(0), true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!(
                "HTTP/1.1 405 Method Not Allowed\r\nx-amzn-requestid: {id}\r\nallow: POST\r\ndate: "
            )),
            "{text}"
        );
    }

    #[test]
    fn the_inference_component_header_is_read_and_checked_as_the_runtime_model_says() {
        let h = RequestHeaders::read([(&b"X-Amzn-SageMaker-Inference-Component"[..], &b"ic-1"[..])]);
        assert_eq!(h.inference_component(), Ok(Some("ic-1")));
        assert_eq!(RequestHeaders::read([]).inference_component(), Ok(None));
        for bad in [&b"-ic"[..], b"ic-", b"i_c", b"", b"\xff"] {
            let h = RequestHeaders::read([(&b"x-amzn-sagemaker-inference-component"[..], bad)]);
            let e = h.inference_component().unwrap_err();
            assert_eq!(
                (e.status(), e.code),
                (StatusCode::BAD_REQUEST, ErrorCode::ValidationError)
            );
            assert!(
                e.message.starts_with("1 validation error detected: Value '"),
                "{}",
                e.message
            );
            assert!(e.message.contains("at 'inferenceComponentName' failed to satisfy constraint: Member must satisfy regular expression pattern"), "{}", e.message);
        }
        let long = [b'a'; 64];
        let h = RequestHeaders::read([(&b"x-amzn-sagemaker-inference-component"[..], &long[..])]);
        assert!(
            h.inference_component()
                .unwrap_err()
                .message
                .contains("Member must have length less than or equal to 63")
        );
    }

    proptest::proptest! {
        /// The hand-written check agrees with the model's pattern on generated names.
        #[test]
        fn component_names_match_the_model_pattern(name in "[a-zA-Z0-9_ -]{0,8}") {
            let re = regex_automata::meta::Regex::new(r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$").unwrap();
            proptest::prop_assert_eq!(is_component_name(name.as_bytes()), re.is_match(&name));
            let h = RequestHeaders::read([(&b"x-amzn-sagemaker-inference-component"[..], name.as_bytes())]);
            proptest::prop_assert_eq!(h.inference_component().is_ok(), re.is_match(&name));
        }
    }
}
