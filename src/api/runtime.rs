//! SageMaker Runtime `InvokeEndpoint` (rest-json): pick a serving instance and proxy to it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use super::error::ApiError;
use crate::app::{App, now};
use crate::metrics::{Outcome, Series};
use crate::routes::{PickError, RouteInstance};

/// Largest request payload SageMaker accepts (6 MB).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// How long the model may take to answer.
pub const MODEL_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers passed to the model.
const FORWARD: &[&str] = &[
    "content-type",
    "accept",
    "x-amzn-sagemaker-custom-attributes",
    "x-amzn-sagemaker-inference-id",
];

/// Decrements an instance's in-flight counter when the request ends, however it ends.
struct Outstanding(Arc<RouteInstance>);

impl Outstanding {
    fn new(i: Arc<RouteInstance>) -> Self {
        i.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(i)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `POST /endpoints/{name}/invocations`.
pub async fn invoke(State(app): State<Arc<App>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    match invoke_inner(&app, &name, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn invoke_inner(app: &App, name: &str, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Endpoint {name} of account {} not found.", app.cfg.account_id),
        )
    };
    let routes = app.routes.get(name).ok_or_else(not_found)?;
    let payload = Limited::new(body, MAX_PAYLOAD).collect().await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            format!("Body: the request payload exceeds the maximum of {MAX_PAYLOAD} bytes"),
        )
    })?;
    let payload = payload.to_bytes();
    let target = headers
        .get("x-amzn-sagemaker-target-variant")
        .and_then(|v| v.to_str().ok());
    let mut tried: Option<String> = None;
    for attempt in 0..2 {
        let (variant, inst) = match routes.pick(target) {
            Ok(p) => p,
            Err(PickError::UnknownVariant(v)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ValidationError",
                    format!("TargetVariant: variant {v} not found for endpoint {name}."),
                ));
            }
            Err(PickError::NoInstance) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!(
                        "Endpoint {name} has no instance in service{}.",
                        target.map(|t| format!(" for variant {t}")).unwrap_or_default()
                    ),
                ));
            }
        };
        // On the retry, prefer an instance other than the one that refused the connection.
        let inst = match (&tried, variant.instances.len()) {
            (Some(prev), n) if n > 1 && inst.id == *prev => variant
                .instances
                .iter()
                .find(|i| i.id != *prev)
                .cloned()
                .unwrap_or(inst),
            _ => inst,
        };
        let guard = Outstanding::new(inst.clone());
        let started = std::time::Instant::now();
        let serving_of_type = variant
            .instances
            .iter()
            .filter(|i| i.instance_type == inst.instance_type)
            .count();
        let record = |outcome: Outcome| {
            app.metrics.record_invocation(
                Series {
                    endpoint: name,
                    variant: &variant.name,
                    instance_type: &inst.instance_type,
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
        let resp = match tokio::time::timeout(MODEL_TIMEOUT, app.http.request(req)).await {
            Err(_) => {
                record(Outcome::ModelError);
                return Err(model_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "Your invocation timed out while waiting for a response from the model on instance {}",
                        inst.id
                    ),
                    &variant.name,
                ));
            }
            Ok(Err(e)) if e.is_connect() && attempt == 0 => {
                tracing::warn!(instance = %inst.id, error = %e, "connection refused; retrying on another instance");
                tried = Some(inst.id.clone());
                continue;
            }
            Ok(Err(e)) => {
                record(Outcome::ServerError);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("The model on instance {} could not be reached: {e}", inst.id),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| {
                record(Outcome::ServerError);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("the model's response broke off: {e}"),
                )
            })?
            .to_bytes();
        drop(guard);
        if !parts.status.is_success() {
            record(Outcome::ModelError);
            let original = String::from_utf8_lossy(&bytes).into_owned();
            return Err(model_error(parts.status, original, &variant.name));
        }
        record(Outcome::Success);
        let mut out = Response::new(Body::from(bytes));
        let h = out.headers_mut();
        if let Some(ct) = parts.headers.get("content-type") {
            h.insert("content-type", ct.clone());
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
    Err(ApiError::new(
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
    e.extra.insert("ErrorCode".into(), json!(code));
    e.extra.insert("OriginalStatusCode".into(), json!(status.as_u16()));
    e.extra.insert("OriginalMessage".into(), json!(original));
    e
}
