//! The asynchronous endpoints' workers: what happens to a request `InvokeEndpointAsync`
//! accepted into the durable queue (`crate::queue`).
//!
//! One dispatcher task, woken by every acceptance and every finished request, and every second
//! (the sweep):
//!
//! - it leases, per asynchronous endpoint, as many queued requests as the endpoint's instances
//!   have free slots (`MaxConcurrentInvocationsPerInstance` each, across every variant and
//!   instance type: queued work is shared by the whole fleet), oldest first, and hands each to
//!   an instance (the variant by weight, then the least loaded instance), counted in the
//!   instance's outstanding requests as a real-time invocation is, so draining and scale-in see
//!   it;
//! - each request's task reads the input (`InputLocation` through `crate::objects`, or the
//!   inline body), posts it to the instance's `/invocations` within `InvocationTimeoutSeconds`,
//!   writes the answer to the output location (or the failure to the failure location), sends
//!   the notification, and only then completes the request in the queue: a crash anywhere
//!   before completion leaves the request to be processed again (at least once), and the
//!   object is keyed by the request's id, so a repeat overwrites the same object (written
//!   once, as the client sees it);
//! - every second (the sweep), requests past their `RequestTTLSeconds` are leased to fail
//!   (`Queue::lease_expired`): the failure object first, then the completion as expired;
//!   requests of an endpoint that was deleted are failed the same way; leases past their
//!   deadline go back to the queue; and finished requests older than the retention are
//!   forgotten (a chunk at a time).
//!
//! A request whose instance could not be reached, or went away while it worked (scale-in, a
//! deployment, a crash), goes back to the queue after a pause and waits for an instance
//! (bounded by its TTL); so does one whose object cannot be stored while the store is down. A
//! model's error, a timeout or a missing input are the request's own failure and are not
//! retried. A request handed out again (after a crash or a shutdown) whose object already
//! exists ends as that object says, without running again: one object per request. A graceful
//! stop completes nothing that its stopping models broke; those leases go back at the next start.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;

use super::app::App;
use crate::core::model::{AsyncInferenceNotificationConfig, Timestamp};
use crate::core::notify;
use crate::dataplane::routes::{EndpointRoutes, RouteInstance};
use crate::notify::Notification;
use crate::objects::{ObjectError, ObjectRef};
use crate::queue::{Completion, Outcome, Queue, QueueError, Request};
use crate::telemetry::metrics::{Outcome as MetricOutcome, Series};

/// A lease outlasts the longest invocation timeout (1 hour) by this much (input and output
/// transfers): a worker alive keeps its request, a dead process's leases go back at start-up.
const LEASE_MARGIN_SECONDS: f64 = 600.0;
/// The longest `InvocationTimeoutSeconds`.
const MAX_TIMEOUT_SECONDS: f64 = 3600.0;
/// Most requests leased in one go (per endpoint, per dispatch).
const MAX_LEASE: usize = 256;

/// Runs the dispatcher until shutdown.
pub async fn run(app: Arc<App>) {
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let maintenance = tokio::select! {
            () = app.dataplane.async_wake.notified() => false,
            _ = tick.tick() => true,
            _ = shutdown.changed() => return,
        };
        if maintenance {
            let now = app.clock.now();
            let retention = app.cfg.async_inference.retention_seconds as f64;
            let q = app.queue.clone();
            let done = blocking(move || {
                let e = q.expire(now)?;
                // Up to a chunk a second: more than the queue accepts at its fastest.
                let purged = q.purge_done(now - retention)?;
                Ok((e.requeued, purged))
            })
            .await;
            match done {
                Ok((requeued, purged)) if requeued + purged > 0 => {
                    tracing::info!(requeued, purged, "asynchronous queue maintenance");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "asynchronous queue maintenance failed"),
            }
            if let Err(e) = sweep(&app).await {
                tracing::error!(error = %e, "asynchronous expiry sweep failed");
            }
        }
        if let Err(e) = dispatch(&app).await {
            tracing::error!(error = %e, "asynchronous dispatch failed");
        }
    }
}

/// Runs a blocking queue call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::Storage(format!("queue task failed: {e}")))?
}

/// Free slots of an asynchronous endpoint's fleet.
fn free_slots(routes: &EndpointRoutes, per_instance: u32) -> usize {
    routes
        .variants
        .iter()
        .flat_map(|v| &v.instances)
        .map(|i| (per_instance as usize).saturating_sub(i.load()))
        .sum()
}

/// Picks an instance with a free slot and reserves it: the variant by weight and the least
/// loaded instance within it, else any instance with room.
fn reserve(routes: &EndpointRoutes, per_instance: u32) -> Option<(usize, Arc<RouteInstance>)> {
    if let Ok((vi, inst)) = routes.pick(None, per_instance, None)
        && inst.try_reserve(per_instance)
    {
        return Some((vi, inst));
    }
    routes.variants.iter().enumerate().find_map(|(vi, v)| {
        v.instances
            .iter()
            .find(|i| i.try_reserve(per_instance))
            .map(|i| (vi, i.clone()))
    })
}

/// The once-a-second part of a dispatch: requests past their TTL to fail, and the requests of
/// endpoints that no longer exist (the only ones the routes cannot name) to fail.
async fn sweep(app: &Arc<App>) -> Result<(), QueueError> {
    let now = app.clock.now();
    let q = app.queue.clone();
    let expired = blocking(move || q.lease_expired(MAX_LEASE, now, LEASE_MARGIN_SECONDS)).await?;
    for req in expired {
        let ttl = (req.invocation.ttl_deadline - req.invocation.created).round();
        let why = Failure::new(
            FailureKind::Expired,
            format!(
                "Request {} expired: it waited in the queue longer than its RequestTTLSeconds ({ttl} s) without an instance to run it.",
                req.invocation.inference_id
            ),
        );
        tokio::spawn(fail(app.clone(), req, why));
    }
    let q = app.queue.clone();
    for name in blocking(move || q.endpoints_with_backlog()).await? {
        if app.dataplane.routes.get(&name).is_none() && app.endpoint(&name).is_none() {
            fail_all(app, &name, now).await?;
        }
    }
    Ok(())
}

/// One dispatch: as many requests as each asynchronous endpoint has free slots to run. It reads
/// the published routes, never scans the queue: a wake-up per accepted request stays cheap
/// whatever the backlog.
async fn dispatch(app: &Arc<App>) -> Result<(), QueueError> {
    let now = app.clock.now();
    for (name, routes) in app.dataplane.routes.asynchronous() {
        let Some(config) = routes.async_config.clone() else {
            continue;
        };
        let per_instance = config.concurrency();
        let free = free_slots(&routes, per_instance).min(MAX_LEASE);
        if free == 0 {
            continue;
        }
        let q = app.queue.clone();
        let n = name.clone();
        let leased = blocking(move || q.lease(&n, free, now, MAX_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)).await?;
        for req in leased {
            match reserve(&routes, per_instance) {
                Some((vi, inst)) => {
                    let variant = routes.variants[vi].name.clone();
                    let of_type = routes.variants[vi]
                        .instances
                        .iter()
                        .filter(|i| i.instance_type == inst.instance_type)
                        .count();
                    let slot = Slot {
                        inst,
                        wake: app.dataplane.async_wake.clone(),
                    };
                    tokio::spawn(process(app.clone(), req, slot, variant, of_type));
                }
                // Every slot was taken since the count (instances left): back it goes.
                None => release(app, &req.invocation.id).await,
            }
        }
    }
    Ok(())
}

/// Fails every queued request of an endpoint that no longer exists.
async fn fail_all(app: &Arc<App>, name: &str, now: Timestamp) -> Result<(), QueueError> {
    let q = app.queue.clone();
    let n = name.to_string();
    let leased = blocking(move || q.lease(&n, MAX_LEASE, now, LEASE_MARGIN_SECONDS)).await?;
    for req in leased {
        let why = Failure::new(
            FailureKind::EndpointDeleted,
            format!(
                "Endpoint {name} was deleted before request {} ran.",
                req.invocation.inference_id
            ),
        );
        tokio::spawn(fail(app.clone(), req, why));
    }
    Ok(())
}

/// A reserved slot on an instance: counts the request in the instance's outstanding requests
/// until dropped, then wakes the dispatcher for the next request.
struct Slot {
    inst: Arc<RouteInstance>,
    wake: Arc<tokio::sync::Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inst.outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The input could not be read (missing object or bucket, too large).
    Input,
    /// The model answered an error status.
    ModelError,
    /// The model did not answer within `InvocationTimeoutSeconds`.
    Timeout,
    /// An earlier run wrote the failure (found when the request was handed out again).
    Earlier,
    /// It waited past `RequestTTLSeconds`.
    Expired,
    /// Its endpoint was deleted first.
    EndpointDeleted,
    /// The answer could not be stored.
    Output,
}

impl FailureKind {
    /// The name the failure's queue record and notification carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "InputError",
            Self::ModelError => "ModelError",
            Self::Timeout => "ModelTimeout",
            Self::Earlier => "WrittenEarlier",
            Self::Expired => "RequestExpired",
            Self::EndpointDeleted => "EndpointDeleted",
            Self::Output => "OutputError",
        }
    }
}

/// A request's failure: its kind and the text of its failure object.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// The failure object's body (what `AsyncInferenceResponse.get_result` raises with).
    pub message: String,
    /// The model's error answer, for a notification that includes it.
    pub response: Option<Bytes>,
}

impl Failure {
    fn new(kind: FailureKind, message: String) -> Self {
        Self {
            kind,
            message,
            response: None,
        }
    }
}

/// What one attempt came to.
enum Attempt {
    /// The model answered 2xx.
    Answer { body: Bytes, content_type: Option<String> },
    /// The request failed for good.
    Failed(Failure),
    /// The instance could not be reached: another may be.
    Unreachable(String),
}

/// Runs one leased request on its instance and records how it ended.
async fn process(app: Arc<App>, req: Request, slot: Slot, variant: String, serving_of_type: usize) {
    let inv = &req.invocation;
    // A request handed out before (a crash or a shutdown cut its run short) may have its
    // object already: it ends as that object says, without running again, so the client never
    // sees a second, different object.
    if req.attempts > 1 && finish_from_existing_object(&app, &req).await {
        return;
    }
    let (attempt, latency_us) = run_model(&app, &req, &slot.inst).await;
    let metric = match &attempt {
        Attempt::Answer { .. } => Some(MetricOutcome::Success),
        Attempt::Failed(f) if f.kind == FailureKind::ModelError => Some(MetricOutcome::ModelServerError),
        Attempt::Failed(f) if f.kind == FailureKind::Timeout => Some(MetricOutcome::ModelOtherError),
        Attempt::Failed(_) => None,
        Attempt::Unreachable(_) => Some(MetricOutcome::ServerError),
    };
    if let Some(outcome) = metric
        && app.metrics.enabled()
    {
        let series = Series {
            endpoint: &inv.endpoint,
            variant: &variant,
            instance_type: &slot.inst.instance_type,
        };
        slot.inst.metrics.get_or_init(|| app.metrics.handle(series)).record(
            serving_of_type,
            outcome,
            latency_us,
            0,
            app.clock.now(),
        );
    }
    // The connection broke before any answer: the instance left the routes while it worked
    // (scale-in, a deployment, a reclaim) or its process died (the health check has not seen
    // it yet). That is the fleet's doing, not the request's: it runs again elsewhere. A model
    // that dies on this very request every time ends it as a ModelError at the
    // BROKEN_RETRIES-th such run (a poison request must not crash-loop the fleet until its
    // TTL).
    let attempt = match attempt {
        Attempt::Failed(f)
            if f.kind == FailureKind::ModelError
                && f.response.is_none()
                && (!routed(&app, inv, &slot.inst) || req.attempts < BROKEN_RETRIES) =>
        {
            Attempt::Unreachable(f.message)
        }
        a => a,
    };
    drop(slot);
    // spillway is stopping: its models are being stopped under the running requests. Nothing
    // that failed now is the request's fault; its lease goes back at the next start.
    if *app.shutdown.borrow() && !matches!(attempt, Attempt::Answer { .. }) {
        return;
    }
    match attempt {
        Attempt::Answer { body, content_type } => succeed(&app, &req, body, content_type).await,
        Attempt::Failed(why) => fail(app.clone(), req, why).await,
        Attempt::Unreachable(why) => {
            // Not the request's failure: it waits for an instance (bounded by its TTL). The
            // pause keeps a dead instance still in the routes from spinning through it.
            tracing::info!(request = %inv.id, endpoint = %inv.endpoint, attempt = req.attempts, %why, "asynchronous request goes back to the queue");
            tokio::time::sleep(UNREACHABLE_PAUSE).await;
            release(&app, &inv.id).await;
        }
    }
}

/// Whether `inst` still serves `inv`'s endpoint.
fn routed(app: &App, inv: &crate::queue::Invocation, inst: &RouteInstance) -> bool {
    app.dataplane
        .routes
        .get(&inv.endpoint)
        .is_some_and(|r| r.variants.iter().flat_map(|v| &v.instances).any(|i| i.id == inst.id))
}

/// Puts a leased request back in the queue (logged when it cannot: its lease then runs out).
async fn release(app: &App, id: &str) {
    let q = app.queue.clone();
    let id = id.to_string();
    if let Err(e) = blocking(move || q.release(&id)).await {
        tracing::error!(error = %e, "asynchronous request not released; its lease will run out");
    }
}

/// For a request run before: when its output (or failure) object exists, completes it as that
/// object says (notifying again; the notifier keeps one notification per request) and says so.
async fn finish_from_existing_object(app: &Arc<App>, req: &Request) -> bool {
    let inv = &req.invocation;
    if let Ok(obj) = ObjectRef::parse_object(&inv.output_location)
        && let Ok(Some(meta)) = app.objects.head(&obj).await
    {
        tracing::info!(request = %inv.id, "its output was written by an earlier run: completed without running again");
        notify_success(app, req, &Bytes::new(), meta.content_type.as_deref()).await;
        complete(app, inv.id.clone(), Outcome::Succeeded).await;
        return true;
    }
    let Some(location) = &inv.failure_location else {
        return false;
    };
    if let Ok(obj) = ObjectRef::parse_object(location)
        && let Ok(o) = app.objects.get(&obj, 64 * 1024).await
    {
        let message = String::from_utf8_lossy(&o.body).into_owned();
        tracing::info!(request = %inv.id, "its failure was written by an earlier run: completed without running again");
        let why = Failure::new(FailureKind::Earlier, message);
        notify_error(app, req, &why, true).await;
        complete(app, inv.id.clone(), Outcome::Failed { reason: why.message }).await;
        return true;
    }
    false
}

/// Runs whose connection broke before any answer, with the instance still routed, after which
/// the request ends as a `ModelError`.
pub const BROKEN_RETRIES: u32 = 3;

/// How long a request whose instance could not be reached waits before it goes back.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(2);

/// How long to wait before the `attempt`-th retry of a store that cannot be reached: 1, 2, 4,
/// ... seconds, at most a minute.
fn store_pause(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

/// Puts an object, retrying a store that cannot be reached a few times in place.
async fn put_retrying(app: &App, location: &str, body: Bytes, content_type: Option<&str>) -> Result<(), ObjectError> {
    let obj = ObjectRef::parse_object(location)?;
    let mut tries = 0;
    loop {
        match app.objects.put(&obj, body.clone(), content_type).await {
            Err(ObjectError::Unavailable(e)) if tries < 3 && !*app.shutdown.borrow() => {
                tracing::warn!(location, error = %e, "the object store cannot be reached; trying again");
                tokio::time::sleep(store_pause(tries)).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Reads the input, posts it to the instance and reads the answer, within the request's
/// `InvocationTimeoutSeconds` (the input read is not counted against it). With the model's
/// latency (µs, from the request sent to the answer read).
#[allow(clippy::disallowed_methods)] // Model latency is measured in real elapsed time.
async fn run_model(app: &App, req: &Request, inst: &RouteInstance) -> (Attempt, u64) {
    let inv = &req.invocation;
    let max = app.cfg.async_inference.max_payload_bytes;
    let input = match &inv.inline_body {
        Some(b) => Bytes::from(b.clone()),
        None => match read_input(app, &inv.input_location, max).await {
            Ok(b) => b,
            Err(f) => return (Attempt::Failed(f), 0),
        },
    };
    let mut request = hyper::Request::post(format!("http://{}/invocations", inst.address));
    let headers = [
        ("content-type", inv.content_type.as_deref()),
        ("accept", inv.accept.as_deref()),
        ("x-amzn-sagemaker-custom-attributes", inv.custom_attributes.as_deref()),
        ("x-amzn-sagemaker-inference-id", Some(inv.inference_id.as_str())),
    ];
    for (name, value) in headers {
        if let Some(v) = value {
            request = request.header(name, v);
        }
    }
    let request = match request.body(Body::from(input)) {
        Ok(r) => r,
        Err(e) => {
            let f = Failure::new(
                FailureKind::Input,
                format!("The request could not be sent to the model: {e}"),
            );
            return (Attempt::Failed(f), 0);
        }
    };
    let timeout = Duration::from_secs(u64::from(inv.invocation_timeout_seconds.max(1)));
    let exchange = async {
        let resp = app.http.request(request).await.map_err(|e| {
            if e.is_connect() {
                Err(e.to_string())
            } else {
                Ok(Failure::new(
                    FailureKind::ModelError,
                    format!("The model's connection failed before it answered: {e}"),
                ))
            }
        })?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = http_body_util::Limited::new(resp.into_body(), max as usize)
            .collect()
            .await
            .map_err(|e| {
                Ok(Failure::new(
                    FailureKind::ModelError,
                    format!("The model's answer could not be read (at most {max} bytes are kept): {e}"),
                ))
            })?
            .to_bytes();
        Ok::<_, Result<Failure, String>>((status, content_type, body))
    };
    let sent = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, exchange).await;
    let latency_us = sent.elapsed().as_micros() as u64;
    let attempt = match result {
        Err(_) => Attempt::Failed(Failure::new(
            FailureKind::Timeout,
            format!(
                "Model invocation timed out: the model did not answer request {} within its InvocationTimeoutSeconds ({} s).",
                inv.inference_id, inv.invocation_timeout_seconds
            ),
        )),
        Ok(Err(Err(unreachable))) => Attempt::Unreachable(unreachable),
        Ok(Err(Ok(failure))) => Attempt::Failed(failure),
        Ok(Ok((status, content_type, body))) if status.is_success() => Attempt::Answer { body, content_type },
        Ok(Ok((status, _, body))) => {
            let kind = if status.is_client_error() { "client" } else { "server" };
            let original = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned();
            let mut f = Failure::new(
                FailureKind::ModelError,
                format!(
                    "Received {kind} error ({}) from primary with message \"{original}\". See the instance logs of endpoint {} (instance {}).",
                    status.as_u16(),
                    inv.endpoint,
                    inst.id
                ),
            );
            f.response = Some(body);
            Attempt::Failed(f)
        }
    };
    (attempt, latency_us)
}

/// Reads an input object, or says why it cannot be read.
async fn read_input(app: &App, location: &str, max: u64) -> Result<Bytes, Failure> {
    let input = |message: String| Failure::new(FailureKind::Input, message);
    let obj = ObjectRef::parse_object(location)
        .map_err(|e| input(format!("InputLocation {location} cannot be read: {e}")))?;
    match app.objects.get(&obj, max).await {
        Ok(o) => Ok(o.body),
        Err(ObjectError::NotFound { .. }) => Err(input(format!(
            "Failed to download the input from {location}: the object does not exist (NoSuchKey)."
        ))),
        Err(ObjectError::NoSuchBucket { bucket }) => Err(input(format!(
            "Failed to download the input from {location}: the bucket {bucket} does not exist (NoSuchBucket)."
        ))),
        Err(e) => Err(input(format!("Failed to download the input from {location}: {e}"))),
    }
}

/// Writes the answer, notifies, completes.
async fn succeed(app: &Arc<App>, req: &Request, body: Bytes, content_type: Option<String>) {
    let inv = &req.invocation;
    match put_retrying(app, &inv.output_location, body.clone(), content_type.as_deref()).await {
        Ok(()) => {
            notify_success(app, req, &body, content_type.as_deref()).await;
            complete(app, inv.id.clone(), Outcome::Succeeded).await;
        }
        Err(e @ ObjectError::Unavailable(_)) => {
            // Still unreachable: the request waits in the queue for the store (it runs again;
            // no answer is ever lost, none completed without its object).
            tracing::warn!(request = %inv.id, error = %e, "the answer could not be stored; the request goes back to the queue");
            tokio::time::sleep(store_pause(req.attempts)).await;
            release(app, &inv.id).await;
        }
        Err(e) => {
            let why = Failure::new(
                FailureKind::Output,
                format!(
                    "The model answered, but its answer could not be written to {}: {e}",
                    inv.output_location
                ),
            );
            fail(app.clone(), req.clone(), why).await;
        }
    }
}

/// Writes the failure object, notifies, completes.
async fn fail(app: Arc<App>, req: Request, why: Failure) {
    let inv = &req.invocation;
    let location = inv.failure_location.clone().unwrap_or_default();
    let written = put_retrying(&app, &location, Bytes::from(why.message.clone()), Some("text/plain")).await;
    if let Err(e) = &written {
        if matches!(e, ObjectError::Unavailable(_)) {
            // The store may come back: the request waits in the queue for it, and is never
            // completed without its object.
            tracing::warn!(request = %inv.id, error = %e, "the failure object could not be stored; the request goes back to the queue");
            tokio::time::sleep(store_pause(req.attempts)).await;
            release(&app, &inv.id).await;
            return;
        }
        // No object can be written there (a bucket that does not exist, a store refusing it):
        // that will not change by itself, so the request ends now, and the event says where
        // its failure went missing.
        tracing::error!(request = %inv.id, endpoint = %inv.endpoint, location, error = %e, "the failure object could not be written");
        app.event(crate::core::endpoint::Event {
            time: app.clock.now(),
            endpoint_name: inv.endpoint.clone(),
            variant_name: None,
            kind: "AsyncFailureNotWritten".into(),
            instance_type: None,
            priority: None,
            instance_id: None,
            result: Some(why.kind.as_str().into()),
            message: format!(
                "Request {} failed ({}) and its failure object could not be written to {location}: {e}",
                inv.inference_id, why.message
            ),
        });
    }
    notify_error(&app, &req, &why, written.is_ok()).await;
    let outcome = match why.kind {
        FailureKind::Expired => Outcome::Expired,
        k => Outcome::Failed {
            reason: format!("{}: {}", k.as_str(), why.message),
        },
    };
    complete(&app, inv.id.clone(), outcome).await;
}

/// Records the outcome (once: a repeat after a crash changes nothing).
async fn complete(app: &App, id: String, outcome: Outcome) {
    let q: Arc<Queue> = app.queue.clone();
    let now = app.clock.now();
    match blocking(move || q.complete(&id, outcome, now)).await {
        Ok(Completion::Completed | Completion::AlreadyDone(_)) => {}
        Err(e) => tracing::error!(error = %e, "asynchronous request not completed; it will run again"),
    }
}

/// The endpoint's notification settings, while it exists.
fn notification_config(app: &App, endpoint: &str) -> Option<AsyncInferenceNotificationConfig> {
    app.dataplane
        .routes
        .get(endpoint)?
        .async_config
        .as_ref()?
        .output_config
        .notification_config
        .clone()
}

/// What every notification says of the request.
fn request_of<'a>(app: &'a App, req: &'a Request) -> notify::AsyncRequest<'a> {
    let inv = &req.invocation;
    notify::AsyncRequest {
        region: &app.cfg.region,
        endpoint_name: &inv.endpoint,
        inference_id: &inv.inference_id,
        input_location: &inv.input_location,
        content_type: inv.content_type.as_deref(),
        accept: inv.accept.as_deref(),
        custom_attributes: inv.custom_attributes.as_deref(),
        received_time: inv.created,
    }
}

/// Publishes `message` to `topic` (durably; the notifier delivers it and records the outcome
/// as the endpoint's event). A repeat after a crash is recognised by the notifier (same topic,
/// endpoint and inference id) and sends nothing twice.
async fn publish(app: &App, req: &Request, topic: String, message: String) {
    // Keyed by the request's own id (the notifier keeps one notification per topic, endpoint
    // and this id): clients may reuse an InferenceId, and each request is notified.
    let n = Notification {
        topic_arn: topic,
        endpoint: req.invocation.endpoint.clone(),
        inference_id: req.invocation.id.clone(),
        message,
    };
    if let Err(e) = app.notifier.publish(n).await {
        tracing::error!(error = %e, request = %req.invocation.id, "the notification of an asynchronous request could not be recorded");
    }
}

/// The success notification, when the endpoint has a `SuccessTopic`.
async fn notify_success(app: &Arc<App>, req: &Request, body: &Bytes, content_type: Option<&str>) {
    let Some(n) = notification_config(app, &req.invocation.endpoint) else {
        return;
    };
    let Some(topic) = n.success_topic.clone() else { return };
    let include = notify::includes_response(n.include_inference_response_in.as_deref().unwrap_or_default(), true);
    let message = notify::async_success_message(
        &request_of(app, req),
        &notify::AsyncSuccess {
            event_time: app.clock.now(),
            output_location: &req.invocation.output_location,
            content_type,
            response: include.then_some(&body[..]),
        },
    );
    publish(app, req, topic, message).await;
}

/// The error notification, when the endpoint has an `ErrorTopic`.
async fn notify_error(app: &Arc<App>, req: &Request, why: &Failure, written: bool) {
    let Some(n) = notification_config(app, &req.invocation.endpoint) else {
        return;
    };
    let Some(topic) = n.error_topic.clone() else { return };
    let include = notify::includes_response(n.include_inference_response_in.as_deref().unwrap_or_default(), false);
    let reason = format!("{}: {}", why.kind.as_str(), why.message);
    let message = notify::async_error_message(
        &request_of(app, req),
        &notify::AsyncFailure {
            event_time: app.clock.now(),
            failure_reason: &reason,
            failure_location: written.then_some(req.invocation.failure_location.as_deref()).flatten(),
            response: why.response.as_deref().filter(|_| include),
        },
    );
    publish(app, req, topic, message).await;
}
