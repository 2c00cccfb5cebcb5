//! The HTTP edge of the control plane: one listener serving the SageMaker control plane,
//! Application Auto Scaling, CloudWatch reads and CloudTrail's `LookupEvents` (awsJson on `POST /`, dispatched by the
//! `X-Amz-Target` service prefix), the runtime's hyper-served invocations, and spillway's admin
//! API (`/_spillway/`, `/metrics`).
//!
//! Every request is parsed once into a typed operation (`ops.rs`); operations that change
//! anything become `control::Command`s. Handlers map inner errors to AWS errors through the one
//! table in `error.rs`; no decision about fleets is made here.

pub mod admin;
pub mod autoscaling;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod ops;
pub mod sagemaker;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use serde_json::Value;

use crate::audit::{AuditLog, Record, RecordResource, UserIdentity, redact};
use crate::control::ControlError;
use crate::control::app::App;
use crate::error::{ApiError, ErrorCode, Protocol};
use autoscaling::AutoScalingOp;
use cloudtrail::CloudTrailOp;
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

/// The axum router for the whole server, recording every awsJson call in `audit` (see
/// `audit_call`) and answering CloudTrail's `LookupEvents` from it; `None` records nothing
/// and refuses `LookupEvents` (`[audit] enabled = false`).
pub fn router_with_audit(app: Arc<App>, audit: Option<Arc<AuditLog>>) -> Router {
    match audit {
        Some(log) => router(app).layer(Extension(log)),
        None => router(app),
    }
}

/// The axum router for the whole server, without an audit log.
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
    /// `X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Op>`.
    CloudTrail(CloudTrailOp),
}

impl Operation for AwsOp {
    fn name(&self) -> &'static str {
        match self {
            AwsOp::SageMaker(op) => op.name(),
            AwsOp::AutoScaling(op) => op.name(),
            AwsOp::CloudWatch(op) => op.name(),
            AwsOp::CloudTrail(op) => op.name(),
        }
    }

    fn action(&self) -> Action {
        match self {
            AwsOp::SageMaker(op) => op.action(),
            AwsOp::AutoScaling(op) => op.action(),
            AwsOp::CloudWatch(op) => op.action(),
            AwsOp::CloudTrail(op) => op.action(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        match self {
            AwsOp::SageMaker(op) => op.resource(arns),
            AwsOp::AutoScaling(op) => op.resource(arns),
            AwsOp::CloudWatch(op) => op.resource(arns),
            AwsOp::CloudTrail(op) => op.resource(arns),
        }
    }
}

/// Parses an operation of one API by name from its JSON body; `None` for a name it lacks.
type Parse = fn(&str, &[u8]) -> Option<Result<AwsOp, ApiError>>;

/// The API a target names, its protocol, its operation names and the `parse` of its enum.
struct Api {
    protocol: Protocol,
    /// The service prefix of its IAM actions (`sagemaker`, …).
    service: &'static str,
    names: &'static [&'static str],
    parse: Parse,
    label: &'static str,
}

/// The API of an `X-Amz-Target` service prefix.
fn api_of(service: &str) -> Option<Api> {
    Some(match service {
        "SageMaker" => Api {
            protocol: Protocol::AwsJson11,
            service: "sagemaker",
            names: SageMakerOp::NAMES,
            parse: |n, b| SageMakerOp::parse(n, b).map(|r| r.map(AwsOp::SageMaker)),
            label: "SageMaker",
        },
        autoscaling::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            service: "application-autoscaling",
            names: AutoScalingOp::NAMES,
            parse: |n, b| AutoScalingOp::parse(n, b).map(|r| r.map(AwsOp::AutoScaling)),
            label: "Application Auto Scaling",
        },
        cloudwatch::TARGET_PREFIX => Api {
            protocol: Protocol::CloudWatch,
            service: "cloudwatch",
            names: CloudWatchOp::NAMES,
            parse: |n, b| CloudWatchOp::parse(n, b).map(|r| r.map(AwsOp::CloudWatch)),
            label: "CloudWatch",
        },
        cloudtrail::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            service: "cloudtrail",
            names: CloudTrailOp::NAMES,
            parse: |n, b| CloudTrailOp::parse(n, b).map(|r| r.map(AwsOp::CloudTrail)),
            label: "CloudTrail",
        },
        _ => return None,
    })
}

/// Runs a parsed operation.
async fn dispatch(app: &Arc<App>, audit: Option<&Arc<AuditLog>>, op: AwsOp) -> Result<Value, ApiError> {
    match op {
        AwsOp::SageMaker(op) => sagemaker::dispatch(app, op).await,
        AwsOp::AutoScaling(op) => autoscaling::dispatch(app, op).await,
        AwsOp::CloudWatch(op) => cloudwatch::dispatch(&app.metrics, &op, app.clock.now()),
        AwsOp::CloudTrail(op) => cloudtrail::dispatch(audit, op).await,
    }
}

/// One awsJson call, as the audit record needs it.
struct Call<'a> {
    /// The service prefix of its IAM action.
    service: &'static str,
    /// The operation (a name of the API's table).
    name: &'static str,
    /// The request body.
    body: &'a [u8],
    /// The `x-amzn-RequestId` it is answered with.
    request_id: &'a str,
    /// Its `User-Agent`.
    user_agent: &'a str,
    /// The client's address (`unknown` until the listener hands it to handlers).
    source_ip: String,
}

/// Runs one awsJson call (`op`, or the error its body was refused with) and records it in the
/// audit log, durably, before the answer leaves: a mutating call's intent before it runs (a log
/// that cannot take it refuses the call with `InternalFailure`) and its final record after; a
/// read's or a refusal's one record after. A record that cannot be written fails the call.
/// Without a log it just runs the call.
///
/// Interim: every caller is anonymous until authentication lands; the integrator moves this
/// to where the caller's identity is known and gives it the principal.
async fn audit_call(
    app: &Arc<App>,
    audit: Option<&Arc<AuditLog>>,
    call: Call<'_>,
    op: Result<AwsOp, ApiError>,
) -> Result<Value, ApiError> {
    let Some(log) = audit else {
        return match op {
            Ok(op) => dispatch(app, audit, op).await,
            Err(e) => Err(e),
        };
    };
    let arns = app.arns();
    let mut record = Record::api_call(
        call.service,
        call.name,
        app.clock.now(),
        &arns.region,
        &arns.account_id,
        UserIdentity::anonymous(None),
    );
    record.source_ip_address = call.source_ip;
    record.user_agent = call.user_agent.to_string();
    record.request_id = call.request_id.to_string();
    let request = serde_json::from_slice(call.body).unwrap_or(Value::Null);
    record.request_parameters = redact(call.name, &request, &Value::Null).0;
    let unwritable = |e: crate::audit::AuditError| {
        tracing::error!(error = %e, "audit record not written: call refused");
        ApiError::internal(format!("spillway could not write the audit record of this call: {e}"))
    };
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            record.error_code = Some(e.code.as_str().to_string());
            record.error_message = Some(e.message.clone());
            log.append_async(&record).await.map_err(unwritable)?;
            return Err(e);
        }
    };
    if let Resource::Arn(arn) = op.resource(&arns) {
        record.resources.push(RecordResource::of_arn(&arn));
    }
    let ticket = match record.read_only {
        true => None,
        false => Some(log.begin_async(&record).await.map_err(unwritable)?),
    };
    let result = dispatch(app, audit, op).await;
    match &result {
        // CloudTrail records no answer of a read.
        Ok(v) if !record.read_only => record.response_elements = redact(call.name, &Value::Null, v).1,
        Ok(_) => {}
        Err(e) => {
            record.error_code = Some(e.code.as_str().to_string());
            record.error_message = Some(e.message.clone());
        }
    }
    match ticket {
        Some(t) => log.complete_async(t, &record).await,
        None => log.append_async(&record).await,
    }
    .map_err(unwritable)?;
    result
}

/// `POST /` with `X-Amz-Target: <Service>.<Operation>`.
async fn aws_json(
    State(app): State<Arc<App>>,
    audit: Option<Extension<Arc<AuditLog>>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let audit = audit.map(|Extension(a)| a);
    let started = app.clock.instant();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    // The operation follows the last dot: CloudTrail's prefix has dots of its own.
    let (service, name) = target.rsplit_once('.').unwrap_or(("", ""));
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
            Some(op) => {
                if let Ok(op) = &op {
                    // The action and resource an IAM policy is evaluated on.
                    tracing::debug!(action = %op.action(), resource = %op.resource(&app.arns()), "request");
                }
                let call = Call {
                    service: api.service,
                    name: operation,
                    body: &body,
                    request_id: &request_id,
                    user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
                    source_ip: peer
                        .map_or_else(|| "unknown".to_string(), |Extension(ConnectInfo(a))| a.ip().to_string()),
                };
                audit_call(&app, audit.as_ref(), call, op).await
            }
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
