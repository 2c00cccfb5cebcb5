//! SageMaker Runtime (rest-json): `InvokeEndpoint` and `InvokeEndpointWithResponseStream`.
//!
//! The hot path reads only the routes snapshot the controller publishes; it never takes an
//! endpoint lock or touches the store. The request payload (at most 6 MB) is read before it is
//! sent so that a refused connection can be retried once on another instance; the response is
//! streamed back as the model produces it, and for `InvokeEndpointWithResponseStream` each
//! chunk becomes an AWS event-stream `PayloadPart` message.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use tokio::sync::Notify;

use super::error::ApiError;
use crate::app::{App, now};
use crate::metrics::{Outcome, Series};
use crate::routes::{EndpointRoutes, PickError, RouteInstance, VariantRoutes};

/// Largest request payload SageMaker accepts (6 MB).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest model error body quoted back in a `ModelError`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Request headers passed to the model.
const FORWARD: &[&str] = &[
    "content-type",
    "accept",
    "x-amzn-sagemaker-custom-attributes",
    "x-amzn-sagemaker-inference-id",
];

/// Counts a request against its instance while it runs (until the response body ends), and
/// wakes queued requests when it finishes.
struct Outstanding {
    instance: Arc<RouteInstance>,
    freed: Arc<Notify>,
}

impl Outstanding {
    fn new(instance: Arc<RouteInstance>, freed: Arc<Notify>) -> Self {
        instance.outstanding.fetch_add(1, Ordering::Relaxed);
        Self { instance, freed }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.instance.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_waiters();
    }
}

/// How the response goes back to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `InvokeEndpoint`: the model's body as it is.
    Plain,
    /// `InvokeEndpointWithResponseStream`: event-stream `PayloadPart` messages.
    EventStream,
}

/// `POST /endpoints/{name}/invocations`.
pub async fn invoke(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    invoke_inner(&app, &name, &headers, body, Mode::Plain)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /endpoints/{name}/invocations-response-stream`.
pub async fn invoke_stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    invoke_inner(&app, &name, &headers, body, Mode::EventStream)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn error(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError::new(status, code, message)
}

/// Picks a variant and an instance under the per-instance concurrency limit, queueing for up to
/// the configured time while every candidate is full.
async fn pick(
    app: &App,
    routes: &EndpointRoutes,
    name: &str,
    target: Option<&str>,
    avoid: Option<&str>,
) -> Result<(usize, Arc<RouteInstance>), ApiError> {
    let limit = app.cfg.router.max_concurrent_requests_per_instance;
    let deadline = Instant::now() + Duration::from_millis(app.cfg.router.queue_timeout_ms);
    loop {
        let freed = app.router_freed.notified();
        match routes.pick(target, limit, avoid) {
            Ok(found) => return Ok(found),
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

async fn invoke_inner(
    app: &App,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
) -> Result<Response, ApiError> {
    let routes = app.routes.get(name).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Endpoint {name} of account {} not found.", app.cfg.account_id),
        )
    })?;
    let payload = Limited::new(body, MAX_PAYLOAD)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                format!("Body: the request payload exceeds the maximum of {MAX_PAYLOAD} bytes"),
            )
        })?
        .to_bytes();
    let target = headers
        .get("x-amzn-sagemaker-target-variant")
        .and_then(|v| v.to_str().ok());
    let timeout = Duration::from_secs_f64(app.cfg.router.model_timeout_seconds);
    let mut refused: Option<String> = None;
    for attempt in 0..2 {
        let (vi, inst) = pick(app, &routes, name, target, refused.as_deref()).await?;
        let variant: &VariantRoutes = &routes.variants[vi];
        let guard = Outstanding::new(inst.clone(), app.router_freed.clone());
        let started = Instant::now();
        let serving_of_type = variant
            .instances
            .iter()
            .filter(|i| i.instance_type == inst.instance_type)
            .count();
        let endpoint = name.to_string();
        let variant_name = variant.name.clone();
        let instance_type = inst.instance_type.clone();
        let metrics_app = app.metrics.clone();
        let record = move |outcome: Outcome| {
            metrics_app.record_invocation(
                Series {
                    endpoint: &endpoint,
                    variant: &variant_name,
                    instance_type: &instance_type,
                },
                serving_of_type,
                outcome,
                started.elapsed().as_micros() as u64,
                now(),
            );
        };
        let mut req = hyper::Request::post(format!("http://{}/invocations", inst.address));
        for h in FORWARD {
            if let Some(v) = headers.get(*h) {
                req = req.header(*h, v);
            }
        }
        let req = req
            .body(Body::from(payload.clone()))
            .map_err(|e| ApiError::internal(format!("cannot build the model request: {e}")))?;
        let resp = match tokio::time::timeout(timeout, app.http.request(req)).await {
            Err(_) => {
                record(Outcome::ModelError);
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
            Ok(Err(e)) if e.is_connect() && attempt == 0 => {
                tracing::warn!(instance = %inst.id, error = %e, "connection refused; retrying on another instance");
                refused = Some(inst.id.clone());
                continue;
            }
            Ok(Err(e)) => {
                record(Outcome::ServerError);
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
            let bytes = Limited::new(incoming, MAX_ERROR_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            drop(guard);
            record(Outcome::ModelError);
            return Err(model_error(
                parts.status,
                String::from_utf8_lossy(&bytes).into_owned(),
                &variant.name,
            ));
        }
        let on_end: Box<dyn FnOnce(bool) + Send> =
            Box::new(move |ok| record(if ok { Outcome::Success } else { Outcome::ServerError }));
        let tracked = Tracked {
            inner: incoming,
            guard: Some(guard),
            on_end: Some(on_end),
        };
        let (body, content_type) = match mode {
            Mode::Plain => (Body::new(tracked), parts.headers.get("content-type").cloned()),
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
            h.insert("content-type", ct);
        }
        if mode == Mode::EventStream
            && let Some(ct) = parts.headers.get("content-type")
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

/// A response body that keeps its request counted until it ends, then records the outcome.
struct Tracked<B: http_body::Body> {
    inner: B,
    guard: Option<Outstanding>,
    on_end: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl<B: http_body::Body> Tracked<B> {
    fn finish(&mut self, ok: bool) {
        if let Some(f) = self.on_end.take() {
            f(ok);
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
