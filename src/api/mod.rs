//! The HTTP edge: one listener serving the SageMaker control plane (awsJson1_1 on `POST /`),
//! the runtime (`POST /endpoints/{name}/invocations`) and spillway's admin API (`/_spillway/`).
//!
//! Handlers parse wire requests into core types and map core errors to AWS errors; no
//! decision about fleets is made here.

pub mod admin;
pub mod autoscaling;
pub mod cloudwatch;
pub mod error;
pub mod sagemaker;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::app::App;
use error::ApiError;

/// The axum router for the whole server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(aws_json))
        .route("/_spillway/health", get(admin::health))
        .route("/metrics", get(admin::metrics))
        .route("/_spillway/capacity", get(admin::capacity))
        .route(
            "/_spillway/capacity/{instance_type}",
            put(admin::put_capacity).delete(admin::delete_capacity),
        )
        .route("/_spillway/instance-types", get(admin::instance_types))
        .route("/_spillway/endpoints/{name}/events", get(admin::events))
        .route("/_spillway/endpoints/{name}/instances", get(admin::instances))
        .with_state(app)
}

/// `POST /` with `X-Amz-Target: <Service>.<Operation>`.
async fn aws_json(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let result = match target.split_once('.') {
        Some(("SageMaker", op)) => sagemaker::dispatch(&app, op, &body).await,
        Some(("AnyScaleFrontendService", op)) => autoscaling::dispatch(&app, op, &body).await,
        Some((cloudwatch::TARGET_PREFIX, op)) => return cloudwatch::respond(&app, op, &body, &request_id),
        Some((service, op)) => Err(ApiError::unknown_operation(format!(
            "The operation {op} of service {service} is not supported by spillway; see docs/api-compat.md"
        ))),
        None => Err(ApiError::unknown_operation(
            "Missing or malformed X-Amz-Target header; expected SageMaker.<Operation>",
        )),
    };
    let mut resp = match result {
        Ok(v) => ([("content-type", "application/x-amz-json-1.1")], v.to_string()).into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(target = %target, error = %e, "request failed");
            } else {
                tracing::debug!(target = %target, error = %e, "request rejected");
            }
            e.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}
