//! The invocation core of SageMaker Runtime's `InvokeEndpoint` and
//! `InvokeEndpointWithResponseStream`: one [`Call`] (a [`RuntimeOp`] and the headers it reads),
//! whichever server read the request, routed and exchanged with a model by [`invoke_model`].
//!
//! The hot path reads only the routes snapshot the controller publishes; it never takes an
//! endpoint lock or touches the store. It runs on the I/O thread that owns the client connection
//! (`server.rs`) and sends to the model over that thread's pooled connections (`upstream.rs`).
//! Both bodies are streamed: the request goes to the model as the client sends it (capped at
//! 6 MB), the response comes back as the model produces it,  and for
//! `InvokeEndpointWithResponseStream` each chunk becomes an AWS event-stream `PayloadPart`
//! message (`eventstream.rs`). A refused connection is retried once on another instance: nothing of the request
//! has been read at that point.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use http_body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::DataPlane;
use super::h1;
use super::head::{AnswerHead, RequestHeaders};
use super::op::{Mode, RuntimeOp};
use super::request_id::RequestId;
use super::routes::{ComponentRoutes, EndpointRoutes, PickError, RouteInstance};
use super::upstream::{self, Conn, UpstreamBody, UpstreamError};
use crate::auth::sigv4::{AuthError, RequestParts};
use crate::auth::{Begun, Caller};
use crate::core::iam::{Operation, Resource};
use crate::error::{ApiError, AuthFamily, ErrorCode};
use crate::telemetry::metrics::{Outcome, Series};

/// Largest request payload SageMaker accepts (6 MB).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest model error body quoted back in a `ModelError`.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// An oversized request is read (and discarded) up to this many bytes before the error is sent,
/// so that a client still uploading it reads the answer instead of a reset connection.
pub const MAX_DRAIN: u64 = 2 * MAX_PAYLOAD as u64;

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

/// A request body as an invocation reads it, whichever server read the request.
pub trait Payload {
    /// The next piece of the body; `None` after the last.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>>;
}

/// What a request's signature covers, as it came off the wire, and who sent it.
#[derive(Debug, Default)]
pub struct Signed<'a> {
    /// The method.
    pub method: &'a str,
    /// The path as sent (not decoded).
    pub path: &'a str,
    /// The query as sent (without `?`).
    pub query: &'a str,
    /// Every header field, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The client's address.
    pub peer: Option<std::net::IpAddr>,
}

/// What an invocation takes from its request, whichever server parsed it.
#[derive(Debug)]
pub struct Call<'a> {
    /// What the signature covers.
    pub signed: Signed<'a>,
    /// The operation, from the method and path ([`RuntimeOp::parse`]).
    pub op: RuntimeOp<'a>,
    /// The headers it reads ([`RequestHeaders::read`]).
    pub headers: RequestHeaders<&'a [u8]>,
    /// The body's length when known in advance (`Content-Length`); `None` for a chunked body.
    pub length: Option<u64>,
    /// The id it is answered with (`x-amzn-RequestId`), logged and audited with it.
    pub request_id: RequestId,
}

/// A model's successful (2xx) answer: what to send back, and the body to stream.
pub struct Answer {
    /// The model's `Content-Type`.
    pub content_type: Option<Bytes>,
    /// The model's `X-Amzn-SageMaker-Custom-Attributes`.
    pub custom_attributes: Option<Bytes>,
    /// The body; records the invocation when it ends (or is dropped).
    pub body: Tracked,
    routes: Arc<EndpointRoutes>,
    served: Served,
    instance: Arc<RouteInstance>,
}

/// Where an invocation was routed: a variant's instance, or a copy of an inference component
/// (by its position in [`EndpointRoutes::components`]; a routes snapshot never changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// `routes.variants[i]` (32 bits keep [`Answer`], hence [`Reply`], small).
    Variant(u32),
    /// The `i`th component of `routes.components`.
    Component(u32),
}

impl Answer {
    /// The variant that served the invocation (for a component's copy, the variant whose
    /// instance hosts it).
    pub fn variant(&self) -> &str {
        match self.served {
            Served::Variant(i) => &self.routes.variants[i as usize].name,
            Served::Component(i) => self
                .routes
                .components
                .values()
                .nth(i as usize)
                .map_or("", |c| c.variant.as_str()),
        }
    }

    /// The inference component that served the invocation, if any.
    pub fn component(&self) -> Option<&str> {
        match self.served {
            Served::Variant(_) => None,
            Served::Component(i) => self.routes.components.keys().nth(i as usize).map(String::as_str),
        }
    }

    /// The instance type that served it.
    pub fn instance_type(&self) -> &str {
        &self.instance.instance_type
    }

    /// The head of its answer to `op`, asked as `request_id`.
    pub fn head<'a>(&'a self, op: &RuntimeOp<'_>, request_id: &'a RequestId) -> AnswerHead<'a> {
        AnswerHead::success(
            op,
            request_id,
            self.content_type.as_deref(),
            self.custom_attributes.as_deref(),
            self.variant(),
            self.instance_type(),
        )
    }
}

/// What a runtime request is answered with, unless an error: a model's answer, or an
/// asynchronous request's acceptance.
// Boxing the model's answer would cost an allocation per invocation; a `Reply` lives only
// from the exchange to the write of its head.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// `InvokeEndpoint`, `InvokeEndpointWithResponseStream`: the model's answer to stream back.
    Model(Answer),
    /// `InvokeEndpointAsync`: the request is in the durable queue.
    Accepted(super::accept::Accepted),
}

pub(super) fn error(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(code, message)
}

/// `ValidationError` for a payload over [`MAX_PAYLOAD`].
pub fn too_large() -> ApiError {
    error(
        ErrorCode::ValidationError,
        format!("Body: the request payload exceeds the maximum of {MAX_PAYLOAD} bytes"),
    )
}

/// Where an invocation is to be routed.
#[derive(Debug, Clone, Copy)]
enum Route<'r> {
    /// Among the variants: the `TargetVariant`, else by weight.
    Variants(Option<&'r str>),
    /// Among the copies of an inference component (the `i`th of the endpoint's components).
    Component(usize, &'r ComponentRoutes),
}

/// Picks a variant and an instance (or a component's copy) under the per-instance concurrency
/// limit and reserves a slot on it (the caller wraps it in an [`Outstanding`] at once),
/// queueing for up to the configured time while every candidate is full.
#[allow(clippy::disallowed_methods)] // The queueing timeout is measured in real time.
async fn pick(
    dp: &DataPlane,
    routes: &EndpointRoutes,
    name: &str,
    route: Route<'_>,
    avoid: Option<&str>,
) -> Result<(Served, Arc<RouteInstance>), ApiError> {
    let limit = dp.router.max_concurrent_requests_per_instance;
    let mut deadline = None;
    let target = match route {
        Route::Variants(t) => t,
        Route::Component(..) => None,
    };
    loop {
        let freed = dp.freed.notified();
        let picked = match route {
            Route::Variants(target) => routes
                .pick(target, limit, avoid)
                .map(|(vi, inst)| (Served::Variant(vi as u32), inst)),
            Route::Component(ci, c) => c
                .pick_copy(limit, avoid)
                .map(|inst| (Served::Component(ci as u32), inst)),
        };
        match picked {
            Ok((served, inst)) if inst.try_reserve(limit) => return Ok((served, inst)),
            // Another request took its last slot since the pick: pick again.
            Ok(_) => continue,
            Err(PickError::UnknownVariant(v)) => {
                return Err(error(
                    ErrorCode::ValidationError,
                    format!("TargetVariant: variant {v} not found for endpoint {name}."),
                ));
            }
            Err(PickError::NoInstance) if let Route::Component(_, c) = route => {
                return Err(no_copy(&c.name));
            }
            Err(PickError::NoInstance) => {
                return Err(error(
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "Endpoint {name} has no instance in service{}.",
                        target.map(|t| format!(" for variant {t}")).unwrap_or_default()
                    ),
                ));
            }
            Err(PickError::Saturated) => {
                let deadline =
                    *deadline.get_or_insert_with(|| Instant::now() + Duration::from_millis(dp.router.queue_timeout_ms));
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                    if let Route::Component(_, c) = route {
                        return Err(error(
                            ErrorCode::ThrottlingException,
                            format!(
                                "Every copy of inference component {} has {limit} requests in flight; retry later or add copies.",
                                c.name
                            ),
                        ));
                    }
                    return Err(error(
                        ErrorCode::ThrottlingException,
                        format!(
                            "Every instance of endpoint {name} has {limit} requests in flight; retry later or scale out."
                        ),
                    ));
                }
            }
        }
    }
}

/// `ValidationError` for an endpoint that hosts inference components invoked without naming one:
/// AWS's wording.
pub fn component_required() -> ApiError {
    error(
        ErrorCode::ValidationError,
        "Inference Component Name header is required for endpoints to which you plan to deploy inference components. Please include Inference Component Name header or consider using SageMaker models.".into(),
    )
}

/// `ValidationError` for an inference component named on an endpoint whose variants run models
/// themselves (spillway's wording: AWS's is not documented).
pub fn component_not_hosted(endpoint: &str, component: &str) -> ApiError {
    error(
        ErrorCode::ValidationError,
        format!(
            "Inference Component Name header is not supported for endpoint {endpoint}: it hosts no inference components, so inference component {component} cannot be invoked on it. Remove the Inference Component Name header."
        ),
    )
}

/// `ValidationError` for an inference component the endpoint does not host (spillway's wording).
pub fn unknown_component(endpoint: &str, component: &str) -> ApiError {
    error(
        ErrorCode::ValidationError,
        format!("Inference component {component} not found for endpoint {endpoint}."),
    )
}

/// `ValidationError` for an inference component with no copy in service (still starting, or
/// scaled to zero copies), in the words of AWS's scale-to-zero answer.
pub fn no_copy(component: &str) -> ApiError {
    error(
        ErrorCode::ValidationError,
        format!(
            "Inference Component {component} has no capacity to process this request. ApplicationAutoScaling may be in-progress (if configured) or try to increase the capacity by invoking UpdateInferenceComponentRuntimeConfig API."
        ),
    )
}

/// Where an invocation with these headers goes on an endpoint with `routes`: among the variants
/// (`TargetVariant`, else by weight) or among one component's copies; or why it cannot be
/// routed. `TargetVariant` with a component is accepted only when it names the variant that
/// hosts the component (AWS does not document the combination).
fn route_of<'r>(
    routes: &'r EndpointRoutes,
    endpoint: &str,
    target: Option<&'r str>,
    component: Option<&str>,
) -> Result<Route<'r>, ApiError> {
    match (component, routes.hosts_components) {
        (None, false) => Ok(Route::Variants(target)),
        (None, true) => Err(component_required()),
        (Some(c), false) => Err(component_not_hosted(endpoint, c)),
        (Some(c), true) => {
            let Some((i, (_, routes))) = routes.components.iter().enumerate().find(|(_, (n, _))| n.as_str() == c)
            else {
                return Err(unknown_component(endpoint, c));
            };
            if let Some(t) = target.filter(|t| *t != routes.variant) {
                return Err(error(
                    ErrorCode::ValidationError,
                    format!(
                        "TargetVariant: inference component {c} is hosted by variant {}, not {t}; leave TargetVariant out when invoking an inference component.",
                        routes.variant
                    ),
                ));
            }
            Ok(Route::Component(i, routes))
        }
    }
}

/// Reads and discards up to `limit` bytes of a request body; whether it ended.
pub async fn drain(payload: &mut impl Payload, limit: u64) -> bool {
    let mut seen = 0u64;
    while seen <= limit {
        match std::future::poll_fn(|cx| payload.poll_data(cx)).await {
            Some(Ok(d)) => seen += d.len() as u64,
            None => return true,
            Some(Err(_)) => return false,
        }
    }
    false
}

/// Why an exchange with a model instance failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The connection was refused: nothing of the request was read or sent.
    #[error("cannot connect: {0}")]
    Refused(io::Error),
    /// The request body passed [`MAX_PAYLOAD`].
    #[error("the request payload exceeds {MAX_PAYLOAD} bytes")]
    TooLarge,
    /// The client's body broke off or was malformed.
    #[error("{0}")]
    Client(io::Error),
    /// Writing to or reading from the model failed.
    #[error("{0}")]
    Model(#[from] UpstreamError),
}

/// Writes the request to the model: its head, then the body as the client sends it.
async fn send_request(
    conn: &mut Conn,
    call: &Call<'_>,
    inst: &RouteInstance,
    payload: &mut impl Payload,
) -> Result<(), Failure> {
    let io = |e: io::Error| Failure::Model(e.into());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"POST /invocations HTTP/1.1\r\n");
    h1::put_header(&mut out, b"host", inst.host.as_bytes());
    let h = &call.headers;
    let forwarded: [(&[u8], _); 4] = [
        (b"content-type", h.content_type),
        (b"accept", h.accept),
        (b"x-amzn-sagemaker-custom-attributes", h.custom_attributes),
        (b"x-amzn-sagemaker-inference-id", h.inference_id),
    ];
    for (name, value) in forwarded {
        if let Some(v) = value {
            h1::put_header(&mut out, name, v);
        }
    }
    h1::put_length(&mut out, call.length);
    out.extend_from_slice(b"\r\n");
    let chunked = call.length.is_none();
    let mut seen = 0;
    while let Some(data) = std::future::poll_fn(|cx| payload.poll_data(cx)).await {
        let data = data.map_err(Failure::Client)?;
        seen += data.len();
        if seen > MAX_PAYLOAD {
            return Err(Failure::TooLarge);
        }
        h1::put_body(conn.stream(), &mut out, &data, chunked)
            .await
            .map_err(io)?;
    }
    if chunked {
        out.extend_from_slice(h1::LAST_CHUNK);
    }
    conn.stream().write_all(&out).await.map_err(io)
}

/// Serves one runtime request, whichever server read it: an invocation is routed to a model
/// instance (a 2xx answer to stream back; a refused connection is retried once on another
/// instance, nothing of the request having been read at that point), an asynchronous one is
/// accepted into the durable queue; or the AWS error to send. Both pass the same host check,
/// authentication, authorization and data-event audit first.
#[allow(clippy::disallowed_methods)] // Latency metrics measure elapsed real time.
pub async fn invoke_model(dp: &DataPlane, call: &Call<'_>, payload: &mut impl Payload) -> Result<Reply, ApiError> {
    let received = Instant::now();
    // Before anything about an endpoint is told: a page of another origin, or one that
    // rebound a name of its own to this address, learns nothing.
    dp.hosts
        .check(call.headers.host, call.headers.origin, true)
        .map_err(|why| error(ErrorCode::AccessDeniedException, why))?;
    // Then who calls, and whether they may: an unknown or refused caller learns nothing about
    // endpoints either. A signature that covers the body holds the body until it is checked.
    let resource = call.op.resource(dp.auth.arns());
    let tags = match &resource {
        Resource::Arn(arn) => dp.auth.tags.get(arn),
        Resource::Any => None,
    };
    // Data events: an endpoint tagged `spillway:audit-invocations = enabled` has each
    // invocation recorded (who, from where, how it ended; never the bodies) before its answer
    // leaves, refused ones included. A record that cannot be written fails the invocation.
    let data_events = tags.as_deref().is_some_and(|t| {
        t.iter()
            .any(|(k, v)| k == DATA_EVENTS_TAG && v.eq_ignore_ascii_case("enabled"))
    });
    let (caller, buffered) = match authenticate(dp, call, payload).await {
        Ok(c) => c,
        Err(Refused { error, summary }) => {
            if let (Some(log), true) = (&dp.audit, data_events)
                && dp.auth.refusals.take(call.signed.peer, dp.clock.now() as u64).is_ok()
            {
                let kept = Err(ApiError {
                    message: summary,
                    ..error.clone()
                });
                let mut record = invocation_record(dp, &Caller::Anonymous, call, &resource, &kept);
                let key = call
                    .signed
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                    .and_then(|(_, v)| crate::auth::sigv4::presented_key_id(v));
                record.user_identity = Caller::Anonymous.user_identity(&dp.auth.arns().account_id, key);
                if let Err(err) = log.append_async(&record).await {
                    tracing::error!(error = %err, "audit record of a refused invocation not written");
                }
            }
            return Err(error);
        }
    };
    let result = match authorize(dp, &caller, call, &resource, tags.as_deref()) {
        Ok(()) if call.op.mode() == Mode::Async => super::accept::accept(dp, &caller, call, buffered, payload)
            .await
            .map(Reply::Accepted),
        Ok(()) => {
            let mut buffered = buffered.map(|b| Buffered(Some(b)));
            match &mut buffered {
                Some(body) => exchange(dp, call, body, received).await,
                None => exchange(dp, call, payload, received).await,
            }
            .map(Reply::Model)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::debug!(
            request_id = %call.request_id,
            endpoint = call.op.endpoint_name(),
            code = e.code.as_str(),
            error = %e.message,
            "invocation failed"
        );
    }
    match (&dp.audit, data_events) {
        (Some(log), true) => {
            let record = invocation_record(dp, &caller, call, &resource, &result);
            match log.append_async(&record).await {
                Ok(()) => result,
                Err(e) => {
                    tracing::error!(error = %e, "audit record of an invocation not written: invocation failed");
                    Err(error(
                        ErrorCode::InternalFailure,
                        format!("spillway could not write the audit record of this invocation: {e}"),
                    ))
                }
            }
        }
        _ => result,
    }
}

/// The tag that turns an endpoint's invocation records (CloudTrail data events) on.
pub const DATA_EVENTS_TAG: &str = "spillway:audit-invocations";

/// The audit record of an invocation (a CloudTrail data event): the caller, the endpoint, the
/// headers that name what was asked (never the bodies), and how it ended.
fn invocation_record(
    dp: &DataPlane,
    caller: &Caller,
    call: &Call<'_>,
    resource: &Resource,
    result: &Result<Reply, ApiError>,
) -> crate::audit::Record {
    let arns = dp.auth.arns();
    let mut r = crate::audit::Record::api_call(
        "sagemaker",
        call.op.name(),
        dp.clock.now(),
        &arns.region,
        &arns.account_id,
        caller.user_identity(&arns.account_id, None),
    );
    r.request_id = call.request_id.to_string();
    r.event_category = "Data".into();
    r.management_event = false;
    r.source_ip_address = call.signed.peer.map_or_else(|| "unknown".into(), |ip| ip.to_string());
    let text = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
    r.user_agent = call
        .signed
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        .map(|(_, v)| crate::audit::bounded(&String::from_utf8_lossy(v)))
        .unwrap_or_default();
    r.request_parameters = Some(serde_json::json!({
        "endpointName": call.op.endpoint_name(),
        "contentType": text(call.headers.content_type),
        "accept": text(call.headers.accept),
        "targetVariant": text(call.headers.target_variant),
        "inferenceComponentName": text(call.headers.inference_component),
        "inferenceId": text(call.headers.inference_id),
    }));
    if let Resource::Arn(arn) = resource {
        r.resources.push(crate::audit::RecordResource::of_arn(arn));
    }
    match result {
        Ok(Reply::Model(answer)) => {
            r.response_elements = Some(serde_json::json!({
                "invokedProductionVariant": answer.variant(),
                "instanceType": answer.instance_type(),
            }));
        }
        Ok(Reply::Accepted(a)) => {
            r.response_elements = Some(serde_json::json!({
                "inferenceId": a.inference_id,
                "outputLocation": a.output_location,
                "failureLocation": a.failure_location,
            }));
        }
        Err(e) => {
            r.error_code = Some(e.code.as_str().to_string());
            r.error_message = Some(e.message.clone());
        }
    }
    r
}

/// A request body read whole (its signature covered it).
struct Buffered(Option<Bytes>);

impl Payload for Buffered {
    fn poll_data(&mut self, _: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// Steps 1 and 2 of `crate::auth` for an invocation: the caller, and the body when the
/// signature covered it (read whole, within [`MAX_PAYLOAD`]).
/// An invocation refused before its caller was known: the answer, and what the audit trail
/// keeps of it (a signature refusal without the canonical request its answer quotes).
struct Refused {
    error: ApiError,
    summary: String,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        let summary = error.message.clone();
        Self { error, summary }
    }
}

async fn authenticate(
    dp: &DataPlane,
    call: &Call<'_>,
    payload: &mut impl Payload,
) -> Result<(Caller, Option<Bytes>), Refused> {
    let s = &call.signed;
    let parts = RequestParts {
        method: s.method,
        path: s.path,
        query: s.query,
        headers: &s.headers,
    };
    let refused = |e: AuthError| {
        tracing::info!(
            request_id = %call.request_id,
            endpoint = call.op.endpoint_name(),
            error = %e.summary(),
            "invocation not authenticated"
        );
        Refused {
            error: e.to_api(AuthFamily::Runtime),
            summary: e.summary(),
        }
    };
    let pending = match dp
        .auth
        .begin(&parts, &["sagemaker"], None, true, dp.clock.system_time())
    {
        Ok(Begun::Known(caller)) => return Ok((caller, None)),
        Ok(Begun::Signed(p)) => p,
        Err(e) => return Err(refused(e)),
    };
    if !pending.needs_body() {
        return dp.auth.finish(pending, None).map(|c| (c, None)).map_err(refused);
    }
    if call.length.is_some_and(|n| n > MAX_PAYLOAD as u64) {
        drain(payload, MAX_DRAIN).await;
        return Err(too_large().into());
    }
    let mut body = bytes::BytesMut::with_capacity(call.length.unwrap_or(0) as usize);
    while let Some(piece) = std::future::poll_fn(|cx| payload.poll_data(cx)).await {
        let piece = piece.map_err(|e| {
            Refused::from(error(
                ErrorCode::ValidationError,
                format!("The request body could not be read: {e}"),
            ))
        })?;
        if body.len() + piece.len() > MAX_PAYLOAD {
            drain(payload, MAX_DRAIN).await;
            return Err(too_large().into());
        }
        body.extend_from_slice(&piece);
    }
    let body = body.freeze();
    let caller = dp.auth.finish(pending, Some(&body)).map_err(refused)?;
    Ok((caller, Some(body)))
}

/// Step 3 for an invocation: the caller's policies on `sagemaker:InvokeEndpoint` and the
/// endpoint, with its tags.
fn authorize(
    dp: &DataPlane,
    caller: &Caller,
    call: &Call<'_>,
    resource: &Resource,
    tags: Option<&Vec<(String, String)>>,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Unauthenticated) {
        return Ok(());
    }
    let ctx = if dp.auth.needs_context(caller) {
        dp.auth.context(
            caller,
            call.op.action(),
            resource,
            tags.map_or(&[], Vec::as_slice),
            call.signed.peer,
            dp.clock.system_time(),
        )
    } else {
        crate::core::policy::Context::new(call.op.action().to_string(), resource.to_string())
    };
    dp.auth.authorize(caller, &ctx).map_err(|d| {
        tracing::info!(
            request_id = %call.request_id,
            caller = %d.caller,
            action = %d.action,
            resource = %d.resource,
            "invocation denied"
        );
        error(ErrorCode::AccessDeniedException, d.to_string())
    })
}

/// Authorizes `caller` for another action than the invocation's own, on `resource` (what an
/// asynchronous invocation makes spillway read on the caller's behalf: `s3:GetObject` on its
/// input).
pub(super) fn authorize_other(
    dp: &DataPlane,
    caller: &Caller,
    call: &Call<'_>,
    action: crate::core::iam::Action,
    resource: &Resource,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Unauthenticated) {
        return Ok(());
    }
    let ctx = if dp.auth.needs_context(caller) {
        dp.auth
            .context(caller, action, resource, &[], call.signed.peer, dp.clock.system_time())
    } else {
        crate::core::policy::Context::new(action.to_string(), resource.to_string())
    };
    dp.auth.authorize(caller, &ctx).map_err(|d| {
        tracing::info!(request_id = %call.request_id, caller = %d.caller, action = %d.action, resource = %d.resource, "asynchronous invocation's input denied");
        error(ErrorCode::AccessDeniedException, d.to_string())
    })
}

/// Routes an authorized invocation and exchanges it with a model.
#[allow(clippy::disallowed_methods)] // Latency metrics measure elapsed real time.
async fn exchange(
    dp: &DataPlane,
    call: &Call<'_>,
    payload: &mut impl Payload,
    received: Instant,
) -> Result<Answer, ApiError> {
    let name = call.op.endpoint_name();
    let Some(routes) = dp.routes.get(name) else {
        return Err(error(
            ErrorCode::ValidationError,
            format!("Endpoint {name} of account {} not found.", dp.account_id),
        ));
    };
    if routes.async_config.is_some() {
        return Err(error(
            ErrorCode::ValidationError,
            format!(
                "Endpoint {name} is an asynchronous endpoint (it has an AsyncInferenceConfig); invoke it with InvokeEndpointAsync."
            ),
        ));
    }
    let target = call.headers.target_variant()?;
    let component = call.headers.inference_component()?;
    let route = route_of(&routes, name, target, component)?;
    call.headers.check_custom_attributes()?;
    if call.length.is_some_and(|n| n > MAX_PAYLOAD as u64) {
        drain(payload, MAX_DRAIN).await;
        return Err(too_large());
    }
    let timeout = Duration::from_secs_f64(dp.router.model_timeout_seconds);
    let mut refused: Option<String> = None;
    for attempt in 0..2 {
        let (served, inst) = pick(dp, &routes, name, route, refused.as_deref()).await?;
        // The variant that serves it; for a copy, the one hosting its component (its hosts'
        // variant, when published among the variants).
        let (variant_name, component) = match route {
            Route::Component(_, c) => (c.variant.as_str(), Some(c)),
            Route::Variants(_) => match served {
                Served::Variant(vi) => (routes.variants[vi as usize].name.as_str(), None),
                Served::Component(_) => unreachable!("variants' routing picks no copy"),
            },
        };
        let variant = routes.variants.iter().find(|v| v.name == variant_name);
        let queueing = dp.router.max_concurrent_requests_per_instance > 0;
        let guard = Outstanding::reserved(inst.clone(), queueing.then(|| dp.freed.clone()));
        let sent = Instant::now();
        // Records how the invocation ended; if this future is dropped first (the client went
        // away while the model worked), it records `ClientClosed`.
        let mut record = Unfinished {
            dp,
            inst: &inst,
            series: Series {
                endpoint: name,
                variant: variant_name,
                instance_type: &inst.instance_type,
            },
            component: component.map(|c| c.name.as_str()),
            record: Some(Record {
                serving_of_type: variant.map_or(0, |v| {
                    v.instances
                        .iter()
                        .filter(|i| i.instance_type == inst.instance_type)
                        .count()
                }),
                copies: component.map_or((0, 0), |c| (c.copies.len(), c.copies_of_type(&inst.instance_type))),
                overhead_us: sent.duration_since(received).as_micros() as u64,
                sent,
            }),
        };
        let exchange = async {
            let mut conn = upstream::connect(&inst.address).await.map_err(Failure::Refused)?;
            send_request(&mut conn, call, &inst, payload).await?;
            let head = conn.read_head().await?;
            Ok::<_, Failure>((conn, head))
        };
        let (conn, head) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                record.finish(Outcome::ModelOtherError);
                tracing::warn!(
                    request_id = %call.request_id,
                    instance = %inst.id,
                    "the model did not answer in time"
                );
                return Err(model_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "Your invocation timed out while waiting for a response from the model on instance {} after {:.0} seconds",
                        inst.id,
                        timeout.as_secs_f64()
                    ),
                    variant_name,
                ));
            }
            Ok(Err(Failure::Refused(e))) if attempt == 0 => {
                record.forget(); // nothing was sent: the retry is the invocation
                tracing::warn!(
                    request_id = %call.request_id,
                    instance = %inst.id,
                    error = %e,
                    "connection refused; retrying on another instance"
                );
                refused = Some(inst.id.clone());
                continue;
            }
            Ok(Err(Failure::TooLarge)) => {
                record.forget(); // refused as a whole, like a declared oversized payload
                return Err(too_large());
            }
            Ok(Err(Failure::Client(e))) => {
                record.finish(Outcome::ClientError);
                return Err(error(
                    ErrorCode::ValidationError,
                    format!("Body: the request body could not be read: {e}"),
                ));
            }
            Ok(Err(e)) => {
                record.finish(Outcome::ServerError);
                return Err(error(
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "The model on instance {} ({}) could not be reached: {e}",
                        inst.id, inst.address
                    ),
                ));
            }
            Ok(Ok(r)) => r,
        };
        if !(200..300).contains(&head.status) {
            let bytes = conn
                .into_body(&head)
                .read_to_end(MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            drop(guard);
            record.finish(Outcome::of_model_status(head.status));
            let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
            return Err(model_error(
                status,
                String::from_utf8_lossy(&bytes).into_owned(),
                variant_name,
            ));
        }
        // The series handle is made on the instance's first invocation, then reused.
        if dp.metrics.enabled() {
            inst.metrics
                .get_or_init(|| dp.metrics.handle_of(record.series, record.component));
        }
        let pending = record.record.take(); // the body records it when it ends
        drop(record);
        return Ok(Answer {
            content_type: head.content_type.clone(),
            custom_attributes: head.custom_attributes.clone(),
            body: Tracked {
                body: conn.into_body(&head),
                guard: Some(guard),
                record: pending,
                stall: h1::Stall::new(timeout),
                clock: dp.clock,
            },
            routes: routes.clone(),
            served,
            instance: inst,
        });
    }
    Err(error(
        ErrorCode::ServiceUnavailable,
        format!("No instance of endpoint {name} accepted the connection."),
    ))
}

/// What an invocation records when it ends.
struct Record {
    /// Serving instances of the instance's type in the variant (for `InvocationsPerInstance`).
    serving_of_type: usize,
    /// For a component's copy: the component's copies in service, and those of the copy's
    /// instance type (for `InvocationsPerCopy`); `(0, 0)` otherwise.
    copies: (usize, usize),
    /// spillway's time before the request was handed to the model.
    overhead_us: u64,
    /// When it was handed to the model.
    sent: Instant,
}

impl Record {
    fn latency_us(&self) -> u64 {
        self.sent.elapsed().as_micros() as u64
    }
}

/// An invocation handed to an instance whose outcome is not recorded yet. Dropped unrecorded
/// (the future serving it was dropped because the client went away), it records
/// [`Outcome::ClientClosed`].
struct Unfinished<'a> {
    dp: &'a DataPlane,
    inst: &'a RouteInstance,
    series: Series<'a>,
    /// The inference component, for a copy.
    component: Option<&'a str>,
    record: Option<Record>,
}

impl Unfinished<'_> {
    /// Records an invocation that ended before a response body was streamed.
    fn finish(&mut self, outcome: Outcome) {
        let Some(record) = self.record.take() else {
            return;
        };
        if !self.dp.metrics.enabled() {
            return;
        }
        self.inst
            .metrics
            .get_or_init(|| self.dp.metrics.handle_of(self.series, self.component))
            .record_units(
                record.serving_of_type,
                record.copies,
                outcome,
                record.latency_us(),
                record.overhead_us,
                self.dp.clock.now(),
            );
    }

    /// Records nothing for this attempt.
    fn forget(&mut self) {
        self.record = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::ClientClosed);
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
        ErrorCode::ModelError,
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

/// A model's response body that keeps its request counted until it ends, then records the
/// outcome (the model connection goes back to its pool at the body's end, `upstream.rs`).
pub struct Tracked {
    body: UpstreamBody,
    guard: Option<Outstanding>,
    record: Option<Record>,
    /// A model that sends nothing more of its body for `model_timeout_seconds` ends it
    /// (nginx's `proxy_read_timeout`).
    stall: h1::Stall,
    /// Stamps the recorded outcome.
    clock: crate::clock::Clock,
}

impl Tracked {
    /// Bytes still to come when the model sent a `Content-Length`.
    pub fn remaining(&self) -> Option<u64> {
        self.body.remaining()
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let r = self.body.poll_next(cx);
        if self.stall.exceeded(cx, r.is_ready()) {
            // Dropped mid-body, the connection is closed, never pooled.
            self.finish(Outcome::ModelOtherError);
            return Poll::Ready(Some(Err(self.stall.error("the model sent"))));
        }
        match &r {
            Poll::Ready(None) => self.finish(Outcome::Success),
            Poll::Ready(Some(Err(_))) => self.finish(Outcome::ServerError),
            _ => {}
        }
        r
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(record) = self.record.take()
            && let Some(guard) = &self.guard
            && let Some(handle) = guard.instance.metrics.get()
        {
            handle.record_units(
                record.serving_of_type,
                record.copies,
                outcome,
                record.latency_us(),
                record.overhead_us,
                self.clock.now(),
            );
        }
        self.guard.take();
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // hyper stops polling once Content-Length bytes were sent, so a body dropped at its end
        // is a success; dropped earlier, the client went away (a model's broken body was
        // recorded as it broke).
        let outcome = if self.body.is_end() {
            Outcome::Success
        } else {
            Outcome::ClientClosed
        };
        self.finish(outcome);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.poll_next(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.remaining()
            .map_or_else(http_body::SizeHint::default, http_body::SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::RoutingStrategy;
    use crate::dataplane::routes::VariantRoutes;

    fn inst(id: &str) -> Arc<RouteInstance> {
        Arc::new(RouteInstance::new(id.into(), "x".into(), "ml.g5.xlarge".into()))
    }

    /// An endpoint that hosts components `a` (two copies) and `b` (none yet) on variant `v`.
    fn hosting() -> EndpointRoutes {
        let component = |name: &str, copies| ComponentRoutes {
            name: name.into(),
            variant: "v".into(),
            strategy: RoutingStrategy::LeastOutstandingRequests,
            copies,
        };
        let mut components = std::collections::BTreeMap::new();
        components.insert("a".to_string(), component("a", vec![inst("a1"), inst("a2")]));
        components.insert("b".to_string(), component("b", vec![]));
        EndpointRoutes {
            variants: vec![VariantRoutes {
                name: "v".into(),
                weight: 1.0,
                strategy: RoutingStrategy::LeastOutstandingRequests,
                instances: vec![inst("host")],
            }],
            components,
            hosts_components: true,
            async_config: None,
        }
    }

    fn plain() -> EndpointRoutes {
        EndpointRoutes {
            variants: vec![VariantRoutes {
                name: "v".into(),
                weight: 1.0,
                strategy: RoutingStrategy::LeastOutstandingRequests,
                instances: vec![inst("i")],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_invocation_naming_a_component_goes_to_its_copies() {
        let r = hosting();
        let Ok(Route::Component(i, c)) = route_of(&r, "e", None, Some("a")) else {
            panic!("not routed to the component")
        };
        assert_eq!((i, c.name.as_str()), (0, "a"));
        let picked = c.pick_copy(0, None).unwrap();
        assert!(["a1", "a2"].contains(&picked.id.as_str()));
        // Naming the hosting variant as TargetVariant is allowed; another one is not.
        assert!(matches!(
            route_of(&r, "e", Some("v"), Some("a")),
            Ok(Route::Component(0, _))
        ));
        let e = route_of(&r, "e", Some("w"), Some("a")).err().unwrap();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(
            e.message.contains("TargetVariant") && e.message.contains("variant v"),
            "{}",
            e.message
        );
        // The second component by position (answers name it).
        assert!(matches!(route_of(&r, "e", None, Some("b")), Ok(Route::Component(1, _))));
    }

    #[test]
    fn refusals_are_worded_as_aws_words_them() {
        let r = hosting();
        let e = route_of(&r, "e", None, None).err().unwrap();
        assert_eq!(
            (e.status(), e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::ValidationError)
        );
        assert_eq!(
            e.message,
            "Inference Component Name header is required for endpoints to which you plan to deploy inference components. Please include Inference Component Name header or consider using SageMaker models."
        );
        let e = route_of(&r, "e", None, Some("zz")).err().unwrap();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert_eq!(e.message, "Inference component zz not found for endpoint e.");
        let e = route_of(&plain(), "e", None, Some("a")).err().unwrap();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.message.contains("hosts no inference components"), "{}", e.message);
        // No copy in service: the scale-to-zero answer.
        let Ok(Route::Component(_, b)) = route_of(&r, "e", None, Some("b")) else {
            panic!()
        };
        assert_eq!(b.pick_copy(0, None).unwrap_err(), PickError::NoInstance);
        let e = no_copy("b");
        assert_eq!(
            (e.status(), e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::ValidationError)
        );
        assert!(
            e.message
                .starts_with("Inference Component b has no capacity to process this request.")
        );
        // A plain endpoint routes among its variants as before.
        assert!(matches!(
            route_of(&plain(), "e", Some("v"), None),
            Ok(Route::Variants(Some("v")))
        ));
    }
}
