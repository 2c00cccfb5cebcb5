//! The HTTP edge of the control plane: one listener serving the SageMaker control plane,
//! Application Auto Scaling and CloudWatch reads (awsJson on `POST /`, dispatched by the
//! `X-Amz-Target` service prefix), IAM and STS (awsQuery: a form-encoded `POST /`, dispatched by
//! its `Version`), the runtime's hyper-served invocations, and spillway's admin
//! API (`/_spillway/`, `/metrics`).
//!
//! Every request is parsed once into a typed operation (`ops.rs`); operations that change
//! anything become `control::Command`s. Handlers map inner errors to AWS errors through the one
//! table in `error.rs`; no decision about fleets is made here.

pub mod admin;
pub mod autoscaling;
pub mod cloudwatch;
pub mod iam;
pub mod ops;
pub mod sagemaker;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::Value;

use crate::auth::sigv4::RequestParts;
use crate::auth::{Begun, Caller, ClientAddr};
use crate::control::app::App;

use crate::control::{self, ControlError};
use crate::error::{ApiError, ErrorCode, Protocol};
use autoscaling::AutoScalingOp;
use cloudwatch::CloudWatchOp;
use ops::{Action, Arns, Operation, Resource};
use sagemaker::SageMakerOp;

/// A refused command is a `ValidationException` naming the rule; a store failure is
/// `InternalFailure`.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Store(e) => e.into(),
            ControlError::ObjectNotFound(m) => Self::new(ErrorCode::ObjectNotFoundException, m),
            ControlError::NotFound { .. }
            | ControlError::AlreadyExists { .. }
            | ControlError::Lifecycle(_)
            | ControlError::Invalid(_) => Self::validation(e.to_string()),
        }
    }
}

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
        .fallback(no_such_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(app.clone(), same_origin))
        .with_state(app)
}

/// Refuses, before any handler, a request naming a host this server does not answer for (DNS
/// rebinding) and a browser's cross-origin request that would change something.
async fn same_origin(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let mutation = !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let host = h.get(axum::http::header::HOST).map(HeaderValue::as_bytes);
    let origin = h.get(axum::http::header::ORIGIN).map(HeaderValue::as_bytes);
    match app.dataplane.hosts.check(host, origin, mutation) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::warn!(%why, "request refused");
            ApiError::new(ErrorCode::AccessDeniedException, why).into_response()
        }
    }
}

/// What the router's requests are signed for, and how their refusals are rendered.
struct Scope {
    /// The SigV4 service names the credential scope may name.
    services: &'static [&'static str],
    /// The error protocol of the API.
    protocol: Protocol,
    /// The action, when the head alone tells it (admin paths; `anonymous_actions`).
    action: Option<String>,
}

/// The API a request of the router is for, from its head.
fn scope_of(parts: &axum::http::request::Parts) -> Scope {
    let path = parts.uri.path();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if path == "/metrics" || path.starts_with("/_spillway/") {
        let action = admin::AdminOp::from_head(parts.method.as_str(), path).map(|op| op.action().to_string());
        return Scope {
            services: &["spillway"],
            protocol: Protocol::AwsJson11,
            action,
        };
    }
    let target = header("x-amz-target");
    let (services, protocol): (&'static [&'static str], _) = match target.split_once('.').map_or("", |(s, _)| s) {
        "SageMaker" => (&["sagemaker"], Protocol::AwsJson11),
        autoscaling::TARGET_PREFIX => (&["application-autoscaling"], Protocol::AwsJson11),
        cloudwatch::TARGET_PREFIX => (&["monitoring"], Protocol::CloudWatch),
        _ if target.is_empty() && header("content-type").starts_with("application/x-www-form-urlencoded") => {
            (&["iam", "sts"], Protocol::AwsJson11)
        }
        _ => (&["sagemaker"], Protocol::AwsJson11),
    };
    Scope {
        services,
        protocol,
        action: None,
    }
}

/// Authenticates every request the router serves (SigV4 and the key; `crate::auth`), before any
/// handler reads it, and hands the handler its [`Caller`] as a request extension; the handler
/// authorizes its typed operation ([`authorize`]). The body is read here, within [`MAX_BODY`],
/// because the signature covers it.
async fn authenticate(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let scope = scope_of(&parts);
    let auth = &app.dataplane.auth;
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let err = if too_large {
                ApiError::new(
                    ErrorCode::RequestEntityTooLarge,
                    format!("The request body exceeds the limit of {MAX_BODY} bytes"),
                )
            } else {
                ApiError::serialization(format!("The request body could not be read: {e}"))
            };
            return err.into_response_for(scope.protocol);
        }
    };
    let headers: Vec<(&str, &[u8])> = parts.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
    };
    let now = app.clock.system_time();
    let caller = match auth.begin(&request, scope.services, scope.action.as_deref(), now) {
        Ok(Begun::Known(caller)) => Ok(caller),
        Ok(Begun::Signed(pending)) => auth.finish(pending, Some(&body)),
        Err(e) => Err(e),
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(path = %parts.uri.path(), error = %e, "request not authenticated");
            return ApiError::from_auth(&e, scope.protocol).into_response_for(scope.protocol);
        }
    };
    drop(headers);
    let source = parts.extensions.get::<ClientAddr>().map(|a| a.0);
    parts.extensions.insert(Requester { caller, source });
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

/// Who sent a request the router serves: the authenticated caller and the client's address.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Who signed it.
    pub caller: Caller,
    /// The client's address.
    pub source: Option<std::net::IpAddr>,
}

/// Whether `caller` may run `op`: the caller's policies on its action, resource and condition
/// keys. A refusal is `AccessDeniedException` with AWS's wording.
pub(crate) fn authorize(app: &App, requester: &Requester, op: &impl Operation) -> Result<(), ApiError> {
    let Requester { caller, source } = requester;
    if matches!(caller, Caller::Unauthenticated) {
        return Ok(());
    }
    let auth = &app.dataplane.auth;
    let resource = op.resource(&app.arns());
    let tags = match &resource {
        Resource::Arn(arn) if matches!(caller, Caller::Principal(_)) => control::resource_tags(app, arn)
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect(),
        _ => vec![],
    };
    let mut ctx = auth.context(caller, op.action(), &resource, &tags, *source, app.clock.system_time());
    op.conditions(&mut ctx);
    auth.authorize(caller, &ctx).map_err(|d| {
        tracing::info!(caller = %d.caller, action = %d.action, resource = %d.resource, "request denied");
        ApiError::new(ErrorCode::AccessDeniedException, d.to_string())
    })
}

/// The largest control-plane or admin request body (a SageMaker request is a few KiB).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// A request body, or the AWS error that refuses it: over [`MAX_BODY`] is
/// `RequestEntityTooLargeException` (413), a body that could not be read a
/// `SerializationException`.
pub(crate) fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::RequestEntityTooLarge,
                format!("The request body exceeds the limit of {MAX_BODY} bytes"),
            )
        } else {
            ApiError::serialization(format!("The request body could not be read: {e}"))
        }
    })
}

/// Any path no API serves: an AWS-shaped 404.
async fn no_such_path(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorCode::NoSuchPath,
        format!("No API of spillway is served at {}; see docs/api-compat.md", uri.path()),
    )
    .into_response()
}

/// A method a path does not take: an AWS-shaped 405.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not a method {} takes", uri.path()),
    )
    .into_response()
}

/// An operation of one of the awsJson APIs served on `POST /`.
pub(crate) enum AwsOp {
    /// `X-Amz-Target: SageMaker.<Op>`.
    SageMaker(SageMakerOp),
    /// `X-Amz-Target: AnyScaleFrontendService.<Op>`.
    AutoScaling(AutoScalingOp),
    /// `X-Amz-Target: GraniteServiceVersion20100801.<Op>`.
    CloudWatch(CloudWatchOp),
}

impl Operation for AwsOp {
    fn name(&self) -> &'static str {
        match self {
            AwsOp::SageMaker(op) => op.name(),
            AwsOp::AutoScaling(op) => op.name(),
            AwsOp::CloudWatch(op) => op.name(),
        }
    }

    fn action(&self) -> Action {
        match self {
            AwsOp::SageMaker(op) => op.action(),
            AwsOp::AutoScaling(op) => op.action(),
            AwsOp::CloudWatch(op) => op.action(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        match self {
            AwsOp::SageMaker(op) => op.resource(arns),
            AwsOp::AutoScaling(op) => op.resource(arns),
            AwsOp::CloudWatch(op) => op.resource(arns),
        }
    }

    fn conditions(&self, ctx: &mut crate::core::policy::Context) {
        match self {
            AwsOp::SageMaker(op) => op.conditions(ctx),
            AwsOp::AutoScaling(op) => op.conditions(ctx),
            AwsOp::CloudWatch(op) => op.conditions(ctx),
        }
    }
}

/// Parses an operation of one API by name from its JSON body; `None` for a name it lacks.
type Parse = fn(&str, &[u8]) -> Option<Result<AwsOp, ApiError>>;

/// The API a target names, its protocol, its operation names and the `parse` of its enum.
struct Api {
    protocol: Protocol,
    names: &'static [&'static str],
    parse: Parse,
    label: &'static str,
}

/// The API of an `X-Amz-Target` service prefix.
fn api_of(service: &str) -> Option<Api> {
    Some(match service {
        "SageMaker" => Api {
            protocol: Protocol::AwsJson11,
            names: SageMakerOp::NAMES,
            parse: |n, b| SageMakerOp::parse(n, b).map(|r| r.map(AwsOp::SageMaker)),
            label: "SageMaker",
        },
        autoscaling::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            names: AutoScalingOp::NAMES,
            parse: |n, b| AutoScalingOp::parse(n, b).map(|r| r.map(AwsOp::AutoScaling)),
            label: "Application Auto Scaling",
        },
        cloudwatch::TARGET_PREFIX => Api {
            protocol: Protocol::CloudWatch,
            names: CloudWatchOp::NAMES,
            parse: |n, b| CloudWatchOp::parse(n, b).map(|r| r.map(AwsOp::CloudWatch)),
            label: "CloudWatch",
        },
        _ => return None,
    })
}

/// Runs a parsed operation.
async fn dispatch(app: &Arc<App>, op: AwsOp) -> Result<Value, ApiError> {
    match op {
        AwsOp::SageMaker(op) => sagemaker::dispatch(app, op).await,
        AwsOp::AutoScaling(op) => autoscaling::dispatch(app, op).await,
        AwsOp::CloudWatch(op) => cloudwatch::dispatch(&app.metrics, &op, app.clock.now()),
    }
}

/// `POST /` with `X-Amz-Target: <Service>.<Operation>`.
/// A form-encoded `POST /` without `X-Amz-Target` is an awsQuery call (IAM, STS: `iam.rs`).
async fn aws_json(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if iam::is_query(&headers) {
        return iam::handle(app, &caller, body_or_error(body)).await;
    }
    let started = app.clock.instant();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let (service, name) = target.split_once('.').unwrap_or(("", ""));
    let api = api_of(service);
    let protocol = api.as_ref().map_or(Protocol::AwsJson11, |a| a.protocol);
    // The label of the per-operation metrics: only names of the table, never client input.
    let operation = api
        .as_ref()
        .and_then(|a| a.names.iter().find(|n| **n == name).copied())
        .unwrap_or("unknown");
    let result = match (&api, body_or_error(body)) {
        (_, Err(e)) => Err(e),
        (Some(api), Ok(body)) => match (api.parse)(name, &body) {
            Some(Ok(op)) => {
                // The action and resource an IAM policy is evaluated on.
                tracing::debug!(action = %op.action(), resource = %op.resource(&app.arns()), "request");
                match authorize(&app, &caller, &op) {
                    Ok(()) => dispatch(&app, op).await,
                    Err(e) => Err(e),
                }
            }
            Some(Err(e)) => Err(e),
            None => Err(ApiError::unknown_operation(format!(
                "The {} operation {name} is not supported by spillway, which implements {}; see docs/api-compat.md",
                api.label,
                api.names.join(", ")
            ))),
        },
        (None, _) if target.contains('.') => Err(ApiError::unknown_operation(format!(
            "The operation {name} of service {service} is not supported by spillway; see docs/api-compat.md"
        ))),
        (None, _) => Err(ApiError::unknown_operation(
            "Missing or malformed X-Amz-Target header; expected SageMaker.<Operation>",
        )),
    };
    let code = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
    app.metrics
        .prometheus
        .record_api(operation, code, app.clock.since(started).as_secs_f64());
    let mut resp = match result {
        Ok(v) => ([("content-type", protocol.content_type())], v.to_string()).into_response(),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(target = %target, error = %e, "request failed");
            } else {
                tracing::debug!(target = %target, error = %e, "request rejected");
            }
            e.into_response_for(protocol)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}
