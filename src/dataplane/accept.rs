//! `InvokeEndpointAsync`: an asynchronous request, checked as SageMaker Runtime checks it,
//! accepted into the durable queue (`crate::queue`) and answered 202 with where its output and
//! its failure will be written. The answer leaves only once the request is on disk (the queue's
//! group commit), so a 202 survives a crash; the workers (`control::asyncq`) do the rest.
//!
//! Where the objects go (docs/async.md): `<S3OutputPath>[/<S3OutputPathExtension>]/<Filename
//! or id.out>` and `<S3FailurePath or S3OutputPath>[/<S3OutputPathExtension>]/<id>-error.out`,
//! `id` a uuid generated here (the `InferenceId` is the client's, or that uuid). AWS names the
//! failure only with an `S3FailurePath`; spillway always names one, under the output path when
//! the configuration has no failure path, so every accepted request ends in exactly one object.

use bytes::{Bytes, BytesMut};

use super::DataPlane;
use super::invoke::{Call, MAX_DRAIN, Payload, drain, error};
use crate::error::{ApiError, ErrorCode};
use crate::queue::{Invocation, QueueError};

/// Largest inline payload of an asynchronous request (the runtime model's `Body` maximum).
pub const MAX_INLINE_BODY: usize = 128_000;
/// `RequestTTLSeconds`: bounds and default (6 hours).
pub const TTL_SECONDS: (u32, u32, u32) = (60, 21_600, 21_600);
/// `InvocationTimeoutSeconds`: bounds and default (15 minutes).
pub const TIMEOUT_SECONDS: (u32, u32, u32) = (1, 3_600, 900);

/// An accepted request: what its 202 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `InferenceId`.
    pub inference_id: String,
    /// `X-Amzn-SageMaker-OutputLocation`.
    pub output_location: String,
    /// `X-Amzn-SageMaker-FailureLocation`.
    pub failure_location: String,
    /// The JSON body, `{"InferenceId": ...}`.
    pub body: Bytes,
}

/// A `ValidationError` in the runtime model's words: `1 validation error detected: Value ... at
/// 'member' failed to satisfy constraint: ...`.
fn invalid(member: &str, value: Option<&str>, constraint: &str) -> ApiError {
    let value = value.map(|v| format!(" '{v}'")).unwrap_or_default();
    error(
        ErrorCode::ValidationError,
        format!("1 validation error detected: Value{value} at '{member}' failed to satisfy constraint: {constraint}"),
    )
}

/// A header as text of printable ASCII within `max` bytes (`\p{ASCII}*` with the length
/// bound), or the error naming `member`.
fn ascii<'a>(v: Option<&'a [u8]>, member: &str, max: usize) -> Result<Option<&'a str>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    if v.len() > max {
        return Err(invalid(
            member,
            None,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    match std::str::from_utf8(v) {
        Ok(s) if s.bytes().all(|b| b == b'\t' || (b.is_ascii() && !b.is_ascii_control())) => Ok(Some(s)),
        _ => Err(invalid(
            member,
            None,
            "Member must satisfy regular expression pattern: \\p{ASCII}*",
        )),
    }
}

/// An integer header within `(min, max, default)`.
fn seconds(v: Option<&[u8]>, member: &str, (min, max, default): (u32, u32, u32)) -> Result<u32, ApiError> {
    let Some(v) = v else { return Ok(default) };
    let text = String::from_utf8_lossy(v);
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(member, Some(&text), "Member must be an integer"))?;
    if n < i64::from(min) {
        return Err(invalid(
            member,
            Some(&text),
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if n > i64::from(max) {
        return Err(invalid(
            member,
            Some(&text),
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(n as u32)
}

/// `InputLocation`: `s3://bucket/key` (the model's pattern also admits `https://`, which
/// spillway does not read: it is refused by name).
pub fn input_location(v: &str) -> Result<(), ApiError> {
    const M: &str = "inputLocation";
    if v.is_empty() || v.len() > 1024 {
        return Err(invalid(
            M,
            None,
            "Member must have length greater than or equal to 1 and less than or equal to 1024",
        ));
    }
    if v.starts_with("https://") {
        return Err(error(
            ErrorCode::ValidationError,
            format!("InputLocation: '{v}' is an https:// URL; spillway reads s3://bucket/key locations only"),
        ));
    }
    let Some(rest) = v.strip_prefix("s3://") else {
        return Err(invalid(
            M,
            Some(v),
            "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
        ));
    };
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => crate::core::s3uri::parse_object(v)
            .map(drop)
            .map_err(|e| error(ErrorCode::ValidationError, format!("InputLocation: {e}"))),
        _ => Err(error(
            ErrorCode::ValidationError,
            format!("InputLocation: '{v}' names no object; expected s3://bucket/key"),
        )),
    }
}

/// `InferenceId`: 1 to 64 printable characters, the first not white space
/// (`\A\S[\p{Print}]*\z`).
pub fn inference_id(v: &str) -> Result<(), ApiError> {
    const M: &str = "inferenceId";
    if v.is_empty() || v.chars().count() > 64 {
        return Err(invalid(
            M,
            Some(v),
            "Member must have length greater than or equal to 1 and less than or equal to 64",
        ));
    }
    let printable = |c: char| !c.is_control();
    if v.starts_with(char::is_whitespace) || !v.chars().all(printable) {
        return Err(invalid(
            M,
            Some(v),
            "Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z",
        ));
    }
    Ok(())
}

/// `S3OutputPathExtension`: `^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$`, 1 to 512 characters, and
/// (spillway's rule, so that it stays under the configured prefix) no `.` or `..` segment.
pub fn output_path_extension(v: &str) -> Result<(), ApiError> {
    const M: &str = "s3OutputPathExtension";
    const PATTERN: &str = "Member must satisfy regular expression pattern: ^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$";
    if v.is_empty() || v.len() > 512 {
        return Err(invalid(
            M,
            Some(v),
            "Member must have length greater than or equal to 1 and less than or equal to 512",
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!_.*'()/-".contains(c);
    if v.starts_with("s3:") || v.starts_with("https:") || !v.chars().all(allowed) {
        return Err(invalid(M, Some(v), PATTERN));
    }
    if v.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(error(
            ErrorCode::ValidationError,
            format!("S3OutputPathExtension: '{v}' has a '.' or '..' segment; it must stay under S3OutputPath"),
        ));
    }
    Ok(())
}

/// `Filename`: `^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$`, 1 to 32 characters (at most one
/// dot).
pub fn filename(v: &str) -> Result<(), ApiError> {
    const M: &str = "filename";
    if v.is_empty() || v.len() > 32 {
        return Err(invalid(
            M,
            Some(v),
            "Member must have length greater than or equal to 1 and less than or equal to 32",
        ));
    }
    let mut chars = v.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !first_ok || !rest_ok || v.matches('.').count() > 1 {
        return Err(invalid(
            M,
            Some(v),
            "Member must satisfy regular expression pattern: ^(?!.*\\..*\\.)[a-zA-Z0-9][a-zA-Z0-9-_\\.]*$",
        ));
    }
    Ok(())
}

/// `base` (an `s3://bucket/prefix` of the configuration), then `extension`, then `name`, joined
/// by single slashes.
pub fn join(base: &str, extension: Option<&str>, name: &str) -> String {
    let mut out = base.trim_end_matches('/').to_string();
    for part in extension.into_iter().chain([name]) {
        let part = part.trim_matches('/');
        if !part.is_empty() {
            out.push('/');
            out.push_str(part);
        }
    }
    out
}

/// Reads the inline body of an asynchronous request (at most [`MAX_INLINE_BODY`] bytes).
async fn read_inline(payload: &mut impl Payload, length: Option<u64>) -> Result<Bytes, ApiError> {
    let too_large = || {
        invalid(
            "body",
            None,
            &format!("Member must have length less than or equal to {MAX_INLINE_BODY}"),
        )
    };
    if length.is_some_and(|n| n > MAX_INLINE_BODY as u64) {
        drain(payload, MAX_DRAIN).await;
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(piece) = std::future::poll_fn(|cx| payload.poll_data(cx)).await {
        let piece = piece.map_err(|e| {
            error(
                ErrorCode::ValidationError,
                format!("The request body could not be read: {e}"),
            )
        })?;
        if body.len() + piece.len() > MAX_INLINE_BODY {
            drain(payload, MAX_DRAIN).await;
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// Checks an authorized `InvokeEndpointAsync`, accepts it into the queue (durably) and wakes
/// the workers. `buffered` is the body when the signature covered it (already read).
pub(super) async fn accept(
    dp: &DataPlane,
    caller: &crate::auth::Caller,
    call: &Call<'_>,
    buffered: Option<Bytes>,
    payload: &mut impl Payload,
) -> Result<Accepted, ApiError> {
    let name = call.op.endpoint_name();
    let Some(routes) = dp.routes.get(name) else {
        drain(payload, MAX_DRAIN).await;
        return Err(error(
            ErrorCode::ValidationError,
            format!("Endpoint {name} of account {} not found.", dp.account_id),
        ));
    };
    let Some(config) = routes.async_config.clone() else {
        drain(payload, MAX_DRAIN).await;
        return Err(error(
            ErrorCode::ValidationError,
            format!(
                "Endpoint {name} is not an asynchronous endpoint: its configuration has no AsyncInferenceConfig. Invoke it with InvokeEndpoint."
            ),
        ));
    };
    let h = &call.headers;
    if h.inference_component.is_some() {
        // The runtime model's InvokeEndpointAsync has no InferenceComponentName, and an
        // asynchronous endpoint cannot host inference components.
        drain(payload, MAX_DRAIN).await;
        return Err(error(
            ErrorCode::ValidationError,
            format!(
                "Endpoint {name} is an asynchronous endpoint, which cannot host inference components: InvokeEndpointAsync takes no Inference Component Name header."
            ),
        ));
    }
    h.check_custom_attributes()?;
    // The runtime model carries them in SageMaker's own headers (`Content-Type` is the
    // request's, here empty or the inline body's).
    let content_type = ascii(h.sagemaker_content_type, "contentType", 1024)?;
    let accept = ascii(h.sagemaker_accept, "accept", 1024)?;
    let custom_attributes = ascii(h.custom_attributes, "customAttributes", 1024)?;
    let location = ascii(h.input_location, "inputLocation", 1024)?;
    if let Some(l) = location {
        input_location(l)?;
        // The workers read the input with spillway's own rights: the caller must hold
        // s3:GetObject on it, or InvokeEndpointAsync would read what its caller may not.
        let (bucket, key) = crate::core::s3uri::parse_object(l)
            .map_err(|e| error(ErrorCode::ValidationError, format!("InputLocation: {e}")))?;
        super::invoke::authorize_other(
            dp,
            caller,
            call,
            crate::core::iam::Action {
                service: "s3",
                name: "GetObject",
            },
            &crate::core::iam::Resource::Arn(format!("arn:aws:s3:::{bucket}/{key}")),
        )?;
    }
    let client_id = ascii(h.inference_id, "inferenceId", 256)?;
    if let Some(id) = client_id {
        inference_id(id)?;
    }
    let extension = ascii(h.output_path_extension, "s3OutputPathExtension", 512)?;
    if let Some(e) = extension {
        output_path_extension(e)?;
    }
    let file = ascii(h.filename, "filename", 32)?;
    if let Some(f) = file {
        filename(f)?;
    }
    let ttl = seconds(h.request_ttl_seconds, "requestTTLSeconds", TTL_SECONDS)?;
    let timeout = seconds(
        h.invocation_timeout_seconds,
        "invocationTimeoutSeconds",
        TIMEOUT_SECONDS,
    )?;
    let body = match buffered {
        Some(b) if b.len() > MAX_INLINE_BODY => {
            return Err(invalid(
                "body",
                None,
                &format!("Member must have length less than or equal to {MAX_INLINE_BODY}"),
            ));
        }
        Some(b) => b,
        None => read_inline(payload, call.length).await?,
    };
    let inline_body = match (location, body.is_empty()) {
        (Some(_), true) => None,
        (None, false) => Some(body.to_vec()),
        (Some(_), false) => {
            return Err(error(
                ErrorCode::ValidationError,
                "InputLocation and an inline request body are mutually exclusive; send exactly one of them".into(),
            ));
        }
        (None, true) => {
            return Err(error(
                ErrorCode::ValidationError,
                "InputLocation is required when the request has no inline body; send exactly one of them".into(),
            ));
        }
    };
    let out = &config.output_config;
    let Some(output_path) = out.s3_output_path.as_deref() else {
        // CreateEndpointConfig refuses an AsyncInferenceConfig without it.
        return Err(error(
            ErrorCode::InternalFailure,
            format!("Endpoint {name} has no S3OutputPath"),
        ));
    };
    let id = uuid::Uuid::new_v4().to_string();
    let output_location = join(
        output_path,
        extension,
        &file.map_or_else(|| format!("{id}.out"), str::to_string),
    );
    let failure_location = join(
        out.s3_failure_path.as_deref().unwrap_or(output_path),
        extension,
        &format!("{id}-error.out"),
    );
    // Both must be objects S3 can hold (a long prefix and extension can pass 1024 bytes): a
    // request is accepted only if its answer can be written.
    for (member, l) in [
        ("S3OutputPathExtension", &output_location),
        ("S3OutputPathExtension", &failure_location),
    ] {
        crate::core::s3uri::parse_object(l).map_err(|e| {
            error(
                ErrorCode::ValidationError,
                format!("{member}: the object it names cannot be written: {e}"),
            )
        })?;
    }
    let now = dp.clock.now();
    let inv = Invocation {
        inference_id: client_id.map_or_else(|| id.clone(), str::to_string),
        id,
        endpoint: name.to_string(),
        input_location: location.unwrap_or_default().to_string(),
        inline_body,
        output_location,
        failure_location: Some(failure_location),
        content_type: content_type.map(str::to_string),
        accept: accept.map(str::to_string),
        custom_attributes: custom_attributes.map(str::to_string),
        created: now,
        ttl_deadline: now + f64::from(ttl),
        invocation_timeout_seconds: timeout,
    };
    if let Err(e) = dp.queue.enqueue_async(&inv).await {
        tracing::error!(error = %e, endpoint = name, "asynchronous request not accepted");
        let code = match e {
            QueueError::Invalid(_) => ErrorCode::ValidationError,
            _ => ErrorCode::ServiceUnavailable,
        };
        return Err(error(code, format!("The request could not be queued: {e}")));
    }
    dp.async_wake.notify_one();
    let body = serde_json::to_vec(&serde_json::json!({ "InferenceId": inv.inference_id }))
        .map(Bytes::from)
        .unwrap_or_default();
    Ok(Accepted {
        inference_id: inv.inference_id,
        output_location: inv.output_location,
        failure_location: inv.failure_location.unwrap_or_default(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn locations_join_with_single_slashes() {
        assert_eq!(join("s3://b/out/", Some("/x/y/"), "id.out"), "s3://b/out/x/y/id.out");
        assert_eq!(join("s3://b", None, "id.out"), "s3://b/id.out");
        assert_eq!(join("s3://b/p", Some("a"), "f"), "s3://b/p/a/f");
    }

    #[test]
    fn headers_are_checked_as_the_runtime_model_says() {
        assert!(input_location("s3://bkt/k").is_ok());
        for bad in [
            "",
            "s3://b",
            "s3://b/",
            "s3:///k",
            "file:///etc/passwd",
            "https://b.s3.amazonaws.com/k",
        ] {
            let e = input_location(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationError, "{bad}");
            assert!(
                e.message.to_lowercase().contains("inputlocation"),
                "{bad}: {}",
                e.message
            );
        }
        assert!(inference_id("my id 1").is_ok());
        for bad in ["", " lead", "a\u{7}b", &"x".repeat(65)] {
            assert!(inference_id(bad).is_err(), "{bad:?}");
        }
        assert!(output_path_extension("run-1/part_2").is_ok());
        for bad in ["s3:x", "https:x", "a b", "../up", "a/./b", ""] {
            assert!(output_path_extension(bad).is_err(), "{bad:?}");
        }
        assert!(filename("result.json").is_ok());
        for bad in ["a.b.c", ".hidden", "-x", "a/b", "", &"f".repeat(33)] {
            assert!(filename(bad).is_err(), "{bad:?}");
        }
        assert_eq!(seconds(None, "requestTTLSeconds", TTL_SECONDS).unwrap(), 21_600);
        assert_eq!(seconds(Some(b"60"), "requestTTLSeconds", TTL_SECONDS).unwrap(), 60);
        let e = seconds(Some(b"59"), "requestTTLSeconds", TTL_SECONDS).unwrap_err();
        assert!(e.message.contains("'requestTTLSeconds'") && e.message.contains("greater than or equal to 60"));
        let e = seconds(Some(b"3601"), "invocationTimeoutSeconds", TIMEOUT_SECONDS).unwrap_err();
        assert!(e.message.contains("less than or equal to 3600"), "{}", e.message);
        assert!(seconds(Some(b"ten"), "invocationTimeoutSeconds", TIMEOUT_SECONDS).is_err());
    }

    proptest! {
        /// An output never leaves its configured prefix: whatever extension and file name pass
        /// the checks, the joined location starts with the prefix and has no `.`/`..` segment.
        #[test]
        fn accepted_names_stay_under_the_prefix(ext in "[a-zA-Z0-9!_.*'()/-]{1,40}", file in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,31}") {
            let ext_ok = output_path_extension(&ext).is_ok();
            let file_ok = filename(&file).is_ok();
            prop_assume!(ext_ok && file_ok);
            let joined = join("s3://bucket/out", Some(&ext), &file);
            prop_assert!(joined.starts_with("s3://bucket/out/"));
            let key = &joined["s3://bucket/".len()..];
            prop_assert!(!key.split('/').any(|s| s == "." || s == ".."), "{}", joined);
        }

        /// Every integer in range is taken, every one outside refused.
        #[test]
        fn seconds_bounds(n in -100_000i64..100_000) {
            let got = seconds(Some(n.to_string().as_bytes()), "requestTTLSeconds", TTL_SECONDS);
            prop_assert_eq!(got.is_ok(), (60..=21_600).contains(&n));
        }
    }
}
