//! SageMaker Runtime (rest-json): `InvokeEndpoint` and `InvokeEndpointWithResponseStream`.
//!
//! The hot path reads only the routes snapshot the controller publishes; it never takes an
//! endpoint lock or touches the store. It runs on the I/O thread that owns the client connection
//! (`server.rs`) and sends to the model over that thread's pooled connections (`upstream.rs`).
//! Both bodies are streamed: the request goes to the model as the client sends it (capped at
//! 6 MB), the response comes back as the model produces it, and for
//! `InvokeEndpointWithResponseStream` each chunk becomes an AWS event-stream `PayloadPart`
//! message. A refused connection is retried once on another instance: nothing of the request
//! has been read at that point.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use tokio::sync::Notify;

use super::error::ApiError;
use crate::app::{App, now};
use crate::metrics::{Outcome, Series};
use crate::routes::{EndpointRoutes, PickError, RouteInstance};
use crate::upstream::{self, Lease, SendError};

/// Largest request payload SageMaker accepts (6 MB).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest model error body quoted back in a `ModelError`.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// An oversized request is read (and discarded) up to this many bytes before the error is sent,
/// so that a client still uploading it reads the answer instead of a reset connection.
const MAX_DRAIN: u64 = 2 * MAX_PAYLOAD as u64;

/// Request headers passed to the model.
const FORWARD: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::HeaderName::from_static("x-amzn-sagemaker-custom-attributes"),
    header::HeaderName::from_static("x-amzn-sagemaker-inference-id"),
];

/// Counts a request against its instance while it runs (until the response body ends), and
/// wakes queued requests when it finishes (only when a concurrency limit makes requests queue:
/// waking is a lock shared by every I/O thread).
struct Outstanding {
    instance: Arc<RouteInstance>,
    freed: Option<Arc<Notify>>,
}

impl Outstanding {
    /// Takes over a slot reserved by [`RouteInstance::try_reserve`].
    fn reserved(instance: Arc<RouteInstance>, freed: Option<Arc<Notify>>) -> Self {
        Self { instance, freed }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.instance.outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(freed) = &self.freed {
            freed.notify_waiters();
        }
    }
}

/// How the response goes back to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `InvokeEndpoint`: the model's body as it is.
    Plain,
    /// `InvokeEndpointWithResponseStream`: event-stream `PayloadPart` messages.
    EventStream,
}

/// The endpoint name and mode of an invocation path (`/endpoints/{name}/invocations` or
/// `/endpoints/{name}/invocations-response-stream`); `None` for any other path, and for names
/// that would need percent-decoding (the general router handles those).
pub fn invocation_path(path: &str) -> Option<(&str, Mode)> {
    let rest = path.strip_prefix("/endpoints/")?;
    let (name, mode) = if let Some(n) = rest.strip_suffix("/invocations") {
        (n, Mode::Plain)
    } else {
        (rest.strip_suffix("/invocations-response-stream")?, Mode::EventStream)
    };
    (!name.is_empty() && !name.contains(['/', '%'])).then_some((name, mode))
}

/// `POST /endpoints/{name}/invocations`.
pub async fn invoke(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    invoke_inner(&app, &name, &headers, body, Mode::Plain).await
}

/// `POST /endpoints/{name}/invocations-response-stream`.
pub async fn invoke_stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    invoke_inner(&app, &name, &headers, body, Mode::EventStream).await
}

/// Serves `req` straight from the connection if it is an invocation (the I/O threads' fast
/// path, no router); hands any other request back untouched.
pub async fn invoke_incoming(
    app: &App,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, hyper::Request<hyper::body::Incoming>> {
    if req.method() != hyper::Method::POST {
        return Err(req);
    }
    let (parts, body) = req.into_parts();
    match invocation_path(parts.uri.path()) {
        Some((name, mode)) => Ok(invoke_inner(app, name, &parts.headers, Body::new(body), mode).await),
        None => Err(hyper::Request::from_parts(parts, body)),
    }
}

fn error(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError::new(status, code, message)
}

fn too_large() -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "ValidationError",
        format!("Body: the request payload exceeds the maximum of {MAX_PAYLOAD} bytes"),
    )
}

/// Picks a variant and an instance under the per-instance concurrency limit and reserves a slot
/// on it (the caller wraps it in an [`Outstanding`] at once), queueing for up to the configured
/// time while every candidate is full.
async fn pick(
    app: &App,
    routes: &EndpointRoutes,
    name: &str,
    target: Option<&str>,
    avoid: Option<&str>,
) -> Result<(usize, Arc<RouteInstance>), ApiError> {
    let limit = app.cfg.router.max_concurrent_requests_per_instance;
    let mut deadline = None;
    loop {
        let freed = app.router_freed.notified();
        match routes.pick(target, limit, avoid) {
            Ok((vi, inst)) if inst.try_reserve(limit) => return Ok((vi, inst)),
            // Another request took its last slot since the pick: pick again.
            Ok(_) => continue,
            Err(PickError::UnknownVariant(v)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "ValidationError",
                    format!("TargetVariant: variant {v} not found for endpoint {name}."),
                ));
            }
            Err(PickError::NoInstance) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!(
                        "Endpoint {name} has no instance in service{}.",
                        target.map(|t| format!(" for variant {t}")).unwrap_or_default()
                    ),
                ));
            }
            Err(PickError::Saturated) => {
                let deadline = *deadline
                    .get_or_insert_with(|| Instant::now() + Duration::from_millis(app.cfg.router.queue_timeout_ms));
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                    return Err(error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "ThrottlingException",
                        format!(
                            "Every instance of endpoint {name} has {limit} requests in flight; retry later or scale out."
                        ),
                    ));
                }
            }
        }
    }
}

/// The request body as sent to the model: the client's body, failing with [`TooLarge`] once it
/// passes [`MAX_PAYLOAD`].
struct Capped {
    inner: Body,
    seen: usize,
}

/// The request body passed [`MAX_PAYLOAD`].
#[derive(Debug, thiserror::Error)]
#[error("the request payload exceeds {MAX_PAYLOAD} bytes")]
struct TooLarge;

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.seen += d.len();
                    if self.seen > MAX_PAYLOAD {
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a failed send was caused by the request body passing [`MAX_PAYLOAD`].
fn caused_by_too_large(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<TooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads and discards up to [`MAX_DRAIN`] bytes of a body.
async fn drain(mut body: Body) {
    let mut seen = 0u64;
    while seen < MAX_DRAIN {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

async fn invoke_inner(app: &App, name: &str, headers: &HeaderMap, body: Body, mode: Mode) -> Response {
    let received = Instant::now();
    invoke_routed(app, name, headers, body, mode, received)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn invoke_routed(
    app: &App,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
    received: Instant,
) -> Result<Response, ApiError> {
    let Some(routes) = app.routes.get(name) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Endpoint {name} of account {} not found.", app.cfg.account_id),
        ));
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PAYLOAD as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let target = headers
        .get("x-amzn-sagemaker-target-variant")
        .and_then(|v| v.to_str().ok());
    let timeout = Duration::from_secs_f64(app.cfg.router.model_timeout_seconds);
    let mut req = hyper::Request::new(Body::new(Capped { inner: body, seen: 0 }));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = Uri::from_static("/invocations");
    for h in &FORWARD {
        if let Some(v) = headers.get(h) {
            req.headers_mut().insert(h.clone(), v.clone());
        }
    }
    if let Some(n) = declared {
        req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut refused: Option<String> = None;
    for attempt in 0..2 {
        let (vi, inst) = pick(app, &routes, name, target, refused.as_deref()).await?;
        let variant = &routes.variants[vi];
        let queueing = app.cfg.router.max_concurrent_requests_per_instance > 0;
        let guard = Outstanding::reserved(inst.clone(), queueing.then(|| app.router_freed.clone()));
        let sent = Instant::now();
        let record = Record {
            serving_of_type: variant
                .instances
                .iter()
                .filter(|i| i.instance_type == inst.instance_type)
                .count(),
            overhead_us: sent.duration_since(received).as_micros() as u64,
            sent,
        };
        let series = || Series {
            endpoint: name,
            variant: &variant.name,
            instance_type: &inst.instance_type,
        };
        req.headers_mut().insert(header::HOST, inst.host.clone());
        let (resp, lease) = match tokio::time::timeout(timeout, upstream::send(&inst.address, req)).await {
            Err(_) => {
                record.finish(app, &inst, series(), Outcome::ModelOtherError);
                return Err(model_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "Your invocation timed out while waiting for a response from the model on instance {} after {:.0} seconds",
                        inst.id,
                        timeout.as_secs_f64()
                    ),
                    &variant.name,
                ));
            }
            Ok(Err(SendError::Connect { error, request, .. })) if attempt == 0 => {
                tracing::warn!(instance = %inst.id, %error, "connection refused; retrying on another instance");
                refused = Some(inst.id.clone());
                req = *request;
                continue;
            }
            Ok(Err(SendError::Http(e))) if caused_by_too_large(&e) => return Err(too_large()),
            Ok(Err(e)) => {
                record.finish(app, &inst, series(), Outcome::ServerError);
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("The model on instance {} could not be reached: {e}", inst.id),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let (parts, incoming) = resp.into_parts();
        if !parts.status.is_success() {
            let bytes = match Limited::new(incoming, MAX_ERROR_BODY).collect().await {
                Ok(b) => {
                    lease.release();
                    b.to_bytes()
                }
                Err(_) => Bytes::new(),
            };
            drop(guard);
            record.finish(app, &inst, series(), Outcome::of_model_status(parts.status.as_u16()));
            return Err(model_error(
                parts.status,
                String::from_utf8_lossy(&bytes).into_owned(),
                &variant.name,
            ));
        }
        // The series handle is made on the instance's first invocation, then reused.
        if app.metrics.enabled() {
            inst.metrics.get_or_init(|| app.metrics.handle(series()));
        }
        let tracked = Tracked {
            inner: incoming,
            guard: Some(guard),
            lease: Some(lease),
            record: Some(record),
        };
        let (body, content_type) = match mode {
            Mode::Plain => (Body::new(tracked), parts.headers.get(header::CONTENT_TYPE).cloned()),
            Mode::EventStream => (
                Body::new(EventStream {
                    inner: tracked,
                    done: false,
                }),
                Some(HeaderValue::from_static("application/vnd.amazon.eventstream")),
            ),
        };
        let mut out = Response::new(body);
        let h = out.headers_mut();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, ct);
        }
        if mode == Mode::EventStream
            && let Some(ct) = parts.headers.get(header::CONTENT_TYPE)
        {
            h.insert("x-amzn-sagemaker-content-type", ct.clone());
        }
        if let Some(ca) = parts.headers.get("x-amzn-sagemaker-custom-attributes") {
            h.insert("x-amzn-sagemaker-custom-attributes", ca.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&variant.name) {
            h.insert("x-amzn-invoked-production-variant", v);
        }
        if let Ok(v) = HeaderValue::from_str(&inst.instance_type) {
            h.insert("x-spillway-instance-type", v);
        }
        return Ok(out);
    }
    Err(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("No instance of endpoint {name} accepted the connection."),
    ))
}

/// What an invocation records when it ends.
struct Record {
    /// Serving instances of the instance's type in the variant (for `InvocationsPerInstance`).
    serving_of_type: usize,
    /// spillway's time before the request was handed to the model.
    overhead_us: u64,
    /// When it was handed to the model.
    sent: Instant,
}

impl Record {
    /// Records an invocation that ended before a response body was streamed.
    fn finish(self, app: &App, inst: &RouteInstance, series: Series<'_>, outcome: Outcome) {
        if !app.metrics.enabled() {
            return;
        }
        inst.metrics.get_or_init(|| app.metrics.handle(series)).record(
            self.serving_of_type,
            outcome,
            self.latency_us(),
            self.overhead_us,
            now(),
        );
    }

    fn latency_us(&self) -> u64 {
        self.sent.elapsed().as_micros() as u64
    }
}

/// `ModelError` (424) carrying the model's own status and message.
fn model_error(status: StatusCode, original: String, variant: &str) -> ApiError {
    let (kind, code) = if status.is_client_error() {
        ("client", "CLIENT_ERROR_FROM_MODEL")
    } else {
        ("server", "SERVER_ERROR_FROM_MODEL")
    };
    let mut e = ApiError::new(
        StatusCode::FAILED_DEPENDENCY,
        "ModelError",
        format!(
            "Received {kind} error ({}) from primary with message \"{original}\". See the instance logs of variant {variant}.",
            status.as_u16()
        ),
    );
    e.extra.insert("ErrorCode".into(), serde_json::json!(code));
    e.extra
        .insert("OriginalStatusCode".into(), serde_json::json!(status.as_u16()));
    e.extra.insert("OriginalMessage".into(), serde_json::json!(original));
    e
}

/// A response body that keeps its request counted until it ends, then records the outcome and
/// returns the model connection to the pool.
struct Tracked<B: http_body::Body> {
    inner: B,
    guard: Option<Outstanding>,
    lease: Option<Lease>,
    record: Option<Record>,
}

impl<B: http_body::Body> Tracked<B> {
    fn finish(&mut self, ok: bool) {
        if let Some(record) = self.record.take()
            && let Some(guard) = &self.guard
            && let Some(handle) = guard.instance.metrics.get()
        {
            let outcome = if ok { Outcome::Success } else { Outcome::ServerError };
            handle.record(
                record.serving_of_type,
                outcome,
                record.latency_us(),
                record.overhead_us,
                now(),
            );
        }
        if let Some(lease) = self.lease.take()
            && ok
        {
            lease.release();
        }
        self.guard.take();
    }
}

impl<B: http_body::Body> Drop for Tracked<B> {
    fn drop(&mut self) {
        // hyper stops polling once Content-Length bytes were sent, so a body dropped at its end
        // is a success; dropped earlier, the client went away.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(false);
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| std::io::Error::other(e.to_string())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps each chunk of the model's response in an event-stream `PayloadPart` message; a failure
/// mid-stream becomes a `ModelStreamError` exception message.
struct EventStream<B> {
    inner: B,
    done: bool,
}

impl<B> http_body::Body for EventStream<B>
where
    B: http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            return match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(payload_part(&data))))),
                    Err(_) => continue, // trailers: nothing to forward
                },
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    Poll::Ready(Some(Ok(Frame::data(model_stream_error(&e.to_string())))))
                }
            };
        }
    }
}

/// One AWS event-stream message: prelude (total length, headers length, CRC32), string
/// headers, payload, message CRC32.
pub fn event_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(total as u32).to_be_bytes());
    buf.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&prelude_crc.to_be_bytes());
    buf.extend_from_slice(&h);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(buf)
}

fn payload_part(data: &[u8]) -> Bytes {
    event_message(
        &[
            (":event-type", "PayloadPart"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ],
        data,
    )
}

fn model_stream_error(message: &str) -> Bytes {
    let body = serde_json::json!({ "Message": message, "ErrorCode": "ModelStreamError" }).to_string();
    event_message(
        &[
            (":exception-type", "ModelStreamError"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_messages_have_valid_lengths_and_checksums() {
        let m = payload_part(b"hello");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[0..8])
        );
        assert_eq!(&m[12 + headers..total - 4], b"hello");
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().unwrap()),
            crc32fast::hash(&m[..total - 4])
        );
        // First header: ":event-type" as a string of "PayloadPart".
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
        assert_eq!(m[24], 7);
    }
}
