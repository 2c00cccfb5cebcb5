//! The HTTP edge of the control plane: one listener serving the SageMaker control plane,
//! Application Auto Scaling, CloudWatch reads, CloudWatch Logs reads of the model logs and
//! CloudTrail's `LookupEvents` (awsJson on
//! `POST /`, dispatched by the `X-Amz-Target` service prefix), IAM and STS (awsQuery: a
//! form-encoded `POST /`, dispatched by its `Version`), the runtime's hyper-served invocations,
//! and spillway's admin
//! API (`/_spillway/`, `/metrics`).
//!
//! Every request is parsed once into a typed operation (`ops.rs`); operations that change
//! anything become `control::Command`s. Handlers map inner errors to AWS errors through the one
//! table in `error.rs`; no decision about fleets is made here.

pub mod admin;
pub mod alarms;
pub mod autoscaling;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod components;
pub mod iam;
pub mod logs;
pub mod ops;
pub mod pagination;
pub mod sagemaker;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use serde_json::Value;

use crate::audit::{Record, RecordResource, redact};
use crate::auth::sigv4::RequestParts;
use crate::auth::{Begun, Caller, ClientAddr};
use crate::control::app::App;

use crate::console;
use crate::control::{self, ControlError};
use crate::error::{ApiError, AuthFamily, ErrorCode, Protocol};
use autoscaling::AutoScalingOp;
use cloudtrail::CloudTrailOp;
use cloudwatch::CloudWatchOp;
use logs::LogsOp;
use ops::{Action, Arns, Operation, Resource};
use sagemaker::SageMakerOp;

/// A refused command is a `ValidationException` naming the rule; a store failure is
/// `InternalFailure`.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Store(e) => e.into(),
            ControlError::ObjectNotFound(m) => Self::new(ErrorCode::ObjectNotFoundException, m),
            ControlError::AlarmNotFound(m) => Self::new(ErrorCode::AlarmNotFound, m),
            ControlError::AlarmLimitExceeded(m) => Self::new(ErrorCode::AlarmLimitExceeded, m),
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
        // `GET /` is the console's page, served without a signature (`crate::console`).
        .route("/", post(aws_json).get(console::serve))
        .route("/console/{*file}", get(console::serve))
        .route("/_spillway/", get(admin::list_apis))
        .route("/_spillway", get(admin::list_apis))
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
        .route("/_spillway/endpoints/{name}/explain", get(admin::explain))
        .route("/_spillway/cost", get(admin::cost))
        .route("/_spillway/notifications", get(admin::notifications))
        .route("/_spillway/notifications/test", post(admin::publish_test_notification))
        .route(
            "/_spillway/capacity/{instance_type}/reclaim",
            post(admin::reclaim_capacity),
        )
        .fallback(no_such_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(app.clone(), same_origin))
        .layer(axum::middleware::map_response(ensure_request_id))
        .with_state(app)
}

/// Every answer carries `x-amzn-RequestId`: the handlers set the one their audit record and
/// logs name; an answer given before any handler (an unknown path, a refused origin, a body
/// over the limit) gets a fresh one here.
async fn ensure_request_id(mut resp: Response) -> Response {
    if !resp.headers().contains_key("x-amzn-requestid")
        && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
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
    if admin::is_admin_path(path) {
        let action = admin::AdminOp::from_head(parts.method.as_str(), path).map(|op| op.action().to_string());
        return Scope {
            services: &["spillway"],
            protocol: Protocol::AwsJson11,
            action,
        };
    }
    let target = header("x-amz-target");
    if target.is_empty() && iam::is_query(&parts.headers) {
        // IAM or STS, told apart by the body's `Version` after authentication.
        return Scope {
            services: &["iam", "sts"],
            protocol: Protocol::Query,
            action: None,
        };
    }
    let (services, protocol) = match api_of(target.rsplit_once('.').map_or("", |(s, _)| s)) {
        Some(api) => (api.signing, api.protocol),
        None => (&["sagemaker"][..], Protocol::AwsJson11),
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
    // The console's static files (no data) load without a signature: a browser cannot sign
    // the request for a page. They are no API call, so they are neither authenticated nor
    // audited; `same_origin` has already checked their `Host`. Only the console's handler
    // serves these paths (`GET /` and `GET /console/...`), so nothing else runs unsigned.
    if console::is_console_request(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
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
    let mut signed_for = None;
    let caller = match auth.begin(&request, scope.services, scope.action.as_deref(), false, now) {
        Ok(Begun::Known(caller)) => Ok(caller),
        Ok(Begun::Signed(pending)) => {
            signed_for = Some(pending.service().to_string());
            auth.finish(pending, Some(&body))
        }
        Err(e) => Err(e),
    };
    let source = parts.extensions.get::<ClientAddr>().map(|a| a.0);
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(path = %parts.uri.path(), error = %e.summary(), "request not authenticated");
            let family = match scope.protocol {
                Protocol::Query => AuthFamily::Query,
                _ => AuthFamily::AwsJson,
            };
            let error = e.to_api(family);
            let request_id = uuid::Uuid::new_v4().to_string();
            let (service, name) = event_of(&parts, &body);
            let call = Call {
                service,
                name,
                request: Value::Null,
                request_id: &request_id,
                user_agent: parts
                    .headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                read_only: crate::audit::is_read_only(name),
            };
            let presented = parts
                .headers
                .get("authorization")
                .and_then(|v| crate::auth::sigv4::presented_key_id(v.as_bytes()));
            let audited = ApiError {
                message: e.summary(),
                ..error.clone()
            };
            let mut resp = match audit_refusal(&app, call, source, presented, &audited).await {
                Ok(()) => error.into_response_for(scope.protocol),
                Err(e) => e.into_response_for(scope.protocol),
            };
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            return resp;
        }
    };
    drop(headers);
    let user_agent = crate::audit::bounded(
        parts
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    parts.extensions.insert(Requester {
        caller,
        source,
        signed_for,
        user_agent,
    });
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
    /// The SigV4 service its credential scope names (`None`: not signed).
    pub signed_for: Option<String>,
    /// Its `User-Agent` (bounded).
    pub user_agent: String,
}

/// The IAM service prefix and operation name of a request the router serves, from its head and
/// body, for the audit record of a refusal; names come from the APIs' tables only (`unknown`).
fn event_of(parts: &axum::http::request::Parts, body: &[u8]) -> (&'static str, &'static str) {
    let path = parts.uri.path();
    if admin::is_admin_path(path) {
        return (
            "spillway",
            admin::AdminOp::from_head(parts.method.as_str(), path).map_or("unknown", |op| op.name()),
        );
    }
    if iam::is_query(&parts.headers) {
        let params = iam::Params::parse(body);
        return match iam::QueryOp::parse(&params) {
            Ok(op) => (op.action().service, op.name()),
            Err(_) => ("iam", "unknown"),
        };
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (service, name) = target.rsplit_once('.').unwrap_or(("", ""));
    match api_of(service) {
        Some(api) => (
            api.service,
            api.names.iter().find(|n| **n == name).copied().unwrap_or("unknown"),
        ),
        None => ("sagemaker", "unknown"),
    }
}

/// Whether `caller` may run `op`: the caller's policies on its action, resource and condition
/// keys. A refusal is `AccessDeniedException` with AWS's wording.
pub(crate) fn authorize(app: &App, requester: &Requester, op: &impl Operation) -> Result<(), ApiError> {
    authorize_on(app, requester, op, op.resource(&app.arns()))?;
    // Some operations also act on a second resource (`CreateEndpoint` deploys a configuration):
    // the caller must be allowed on each.
    for also in op.also_on(&app.arns()) {
        authorize_on(app, requester, op, also)?;
    }
    Ok(())
}

/// Whether `requester` may run `op` on `resource`.
pub(crate) fn authorize_on(
    app: &App,
    requester: &Requester,
    op: &impl Operation,
    resource: Resource,
) -> Result<(), ApiError> {
    let Requester { caller, source, .. } = requester;
    if matches!(caller, Caller::Unauthenticated) {
        return Ok(());
    }
    let auth = &app.dataplane.auth;
    let ctx = if auth.needs_context(caller) {
        let tags = match &resource {
            // A store that cannot say what a resource's tags are fails the call: a Deny keyed
            // on them must not silently stop applying.
            Resource::Arn(arn) => control::resource_tags(app, arn)
                .map_err(ApiError::from)?
                .into_iter()
                .map(|t| (t.key, t.value))
                .collect(),
            Resource::Any => vec![],
        };
        let mut ctx = auth.context(caller, op.action(), &resource, &tags, *source, app.clock.system_time());
        op.conditions(&mut ctx);
        ctx
    } else {
        crate::core::policy::Context::new(op.action().to_string(), resource.to_string())
    };
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
    /// `X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Op>`.
    CloudTrail(CloudTrailOp),
    /// `X-Amz-Target: Logs_20140328.<Op>`.
    Logs(LogsOp),
}

impl Operation for AwsOp {
    fn name(&self) -> &'static str {
        match self {
            AwsOp::SageMaker(op) => op.name(),
            AwsOp::AutoScaling(op) => op.name(),
            AwsOp::CloudWatch(op) => op.name(),
            AwsOp::CloudTrail(op) => op.name(),
            AwsOp::Logs(op) => op.name(),
        }
    }

    fn action(&self) -> Action {
        match self {
            AwsOp::SageMaker(op) => op.action(),
            AwsOp::AutoScaling(op) => op.action(),
            AwsOp::CloudWatch(op) => op.action(),
            AwsOp::CloudTrail(op) => op.action(),
            AwsOp::Logs(op) => op.action(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        match self {
            AwsOp::SageMaker(op) => op.resource(arns),
            AwsOp::AutoScaling(op) => op.resource(arns),
            AwsOp::CloudWatch(op) => op.resource(arns),
            AwsOp::CloudTrail(op) => op.resource(arns),
            AwsOp::Logs(op) => op.resource(arns),
        }
    }

    fn conditions(&self, ctx: &mut crate::core::policy::Context) {
        match self {
            AwsOp::SageMaker(op) => op.conditions(ctx),
            AwsOp::AutoScaling(op) => op.conditions(ctx),
            AwsOp::CloudWatch(op) => op.conditions(ctx),
            AwsOp::CloudTrail(op) => op.conditions(ctx),
            AwsOp::Logs(op) => op.conditions(ctx),
        }
    }

    fn also_on(&self, arns: &Arns) -> Vec<Resource> {
        match self {
            AwsOp::SageMaker(op) => op.also_on(arns),
            AwsOp::AutoScaling(op) => op.also_on(arns),
            AwsOp::CloudWatch(op) => op.also_on(arns),
            AwsOp::CloudTrail(op) => op.also_on(arns),
            AwsOp::Logs(op) => op.also_on(arns),
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
    /// The SigV4 service name its requests are signed for (CloudWatch's is `monitoring`).
    signing: &'static [&'static str],
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
            signing: &["sagemaker"],
            names: SageMakerOp::NAMES,
            parse: |n, b| SageMakerOp::parse(n, b).map(|r| r.map(AwsOp::SageMaker)),
            label: "SageMaker",
        },
        autoscaling::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            service: "application-autoscaling",
            signing: &["application-autoscaling"],
            names: AutoScalingOp::NAMES,
            parse: |n, b| AutoScalingOp::parse(n, b).map(|r| r.map(AwsOp::AutoScaling)),
            label: "Application Auto Scaling",
        },
        cloudwatch::TARGET_PREFIX => Api {
            protocol: Protocol::CloudWatch,
            service: "cloudwatch",
            signing: &["monitoring"],
            names: CloudWatchOp::NAMES,
            parse: |n, b| CloudWatchOp::parse(n, b).map(|r| r.map(AwsOp::CloudWatch)),
            label: "CloudWatch",
        },
        cloudtrail::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            service: "cloudtrail",
            signing: &["cloudtrail"],
            names: CloudTrailOp::NAMES,
            parse: |n, b| CloudTrailOp::parse(n, b).map(|r| r.map(AwsOp::CloudTrail)),
            label: "CloudTrail",
        },
        logs::TARGET_PREFIX => Api {
            protocol: Protocol::AwsJson11,
            service: "logs",
            signing: &["logs"],
            names: LogsOp::NAMES,
            parse: |n, b| LogsOp::parse(n, b).map(|r| r.map(AwsOp::Logs).map_err(logs::parse_error)),
            label: "CloudWatch Logs",
        },
        _ => return None,
    })
}

/// Runs a parsed operation.
async fn dispatch(app: &Arc<App>, op: AwsOp) -> Result<Value, ApiError> {
    match op {
        AwsOp::SageMaker(op) => sagemaker::dispatch(app, op).await,
        AwsOp::AutoScaling(op) => autoscaling::dispatch(app, op).await,
        AwsOp::CloudWatch(op) if op.is_alarm() => alarms::dispatch(app, op).await,
        AwsOp::CloudWatch(op) => cloudwatch::dispatch(&app.metrics, &op, app.clock.now()),
        AwsOp::CloudTrail(op) => cloudtrail::dispatch(app.dataplane.audit.as_ref(), op).await,
        AwsOp::Logs(op) => logs::dispatch(app, op).await,
    }
}

/// One call, as its audit record needs it.
pub(crate) struct Call<'a> {
    /// The service prefix of its IAM action (`sagemaker`, `iam`, `spillway`, ...).
    pub service: &'static str,
    /// The operation (a name of the API's table).
    pub name: &'static str,
    /// The request's parameters (redacted before they are written).
    pub request: Value,
    /// The `x-amzn-RequestId` it is answered with.
    pub request_id: &'a str,
    /// Its `User-Agent`.
    pub user_agent: &'a str,
    /// Whether it only reads (CloudTrail's `readOnly`): no intent is written before it runs.
    pub read_only: bool,
}

/// A new audit record of `call` by `requester`.
pub(crate) fn record_of(app: &App, requester: &Requester, call: &Call<'_>) -> Record {
    let arns = app.arns();
    let mut record = Record::api_call(
        call.service,
        call.name,
        app.clock.now(),
        &arns.region,
        &arns.account_id,
        requester.caller.user_identity(&app.cfg.account_id, None),
    );
    record.source_ip_address = requester.source.map_or_else(|| "unknown".into(), |ip| ip.to_string());
    record.user_agent = crate::audit::bounded(call.user_agent);
    record.request_id = call.request_id.to_string();
    record.request_parameters = redact(call.name, &call.request, &Value::Null).0;
    record
}

/// The error a call fails with when its audit record cannot be written.
fn unwritable(e: crate::audit::AuditError) -> ApiError {
    tracing::error!(error = %e, "audit record not written: call refused");
    ApiError::internal(format!("spillway could not write the audit record of this call: {e}"))
}

/// Runs one call (`run`: authorization, then the operation) and records it in the audit trail,
/// durably, before the answer leaves: a mutating call's intent before it runs (a log that cannot
/// take it refuses the call with `InternalFailure`, so nothing changes unaudited) and its final
/// record after; a read's one record after. A record that cannot be written fails the call.
/// Without an audit log (`[audit] enabled = false`) it just runs the call.
pub(crate) async fn audited(
    app: &App,
    requester: &Requester,
    call: Call<'_>,
    resource: Option<Resource>,
    run: impl std::future::Future<Output = Result<Value, ApiError>>,
) -> Result<Value, ApiError> {
    // An unsigned call of an anonymous action (the liveness probe) is neither authenticated nor
    // refused: probes every few seconds would bury the trail.
    let anonymous = matches!(requester.caller, Caller::Anonymous);
    let Some(log) = app.dataplane.audit.as_ref().filter(|_| !anonymous) else {
        return run.await;
    };
    let mut record = record_of(app, requester, &call);
    record.read_only = call.read_only;
    if let Some(Resource::Arn(arn)) = &resource {
        record.resources.push(RecordResource::of_arn(arn));
    }
    let ticket = match record.read_only {
        true => None,
        false => Some(log.begin_async(&record).await.map_err(unwritable)?),
    };
    let result = run.await;
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

/// Records a request refused before it was known who sent it (authentication failed).
pub(crate) async fn audit_refusal(
    app: &App,
    call: Call<'_>,
    source: Option<std::net::IpAddr>,
    presented: Option<&str>,
    e: &ApiError,
) -> Result<(), ApiError> {
    let Some(log) = app.dataplane.audit.as_ref() else {
        return Ok(());
    };
    if let Err(n) = app.dataplane.auth.refusals.take(source, app.clock.now() as u64) {
        if n == 1 {
            tracing::warn!(
                ?source,
                "refused requests from this source beyond {}/s are not written to the audit trail",
                crate::auth::REFUSALS_RECORDED_PER_SECOND
            );
        }
        return Ok(());
    }
    let requester = Requester {
        caller: Caller::Anonymous,
        source,
        signed_for: None,
        user_agent: String::new(),
    };
    let mut record = record_of(app, &requester, &call);
    record.user_identity = Caller::Anonymous.user_identity(&app.cfg.account_id, presented);
    record.error_code = Some(e.code.as_str().to_string());
    record.error_message = Some(e.message.clone());
    log.append_async(&record).await.map_err(unwritable)
}

/// `POST /` with `X-Amz-Target: <Service>.<Operation>`.
/// A form-encoded `POST /` without `X-Amz-Target` is an awsQuery call (IAM, STS: `iam.rs`).
async fn aws_json(
    State(app): State<Arc<App>>,
    Extension(requester): Extension<Requester>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if iam::is_query(&headers) {
        return iam::handle(app, &requester, &headers, body_or_error(body)).await;
    }
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
                    request: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    request_id: &request_id,
                    user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
                    read_only: crate::audit::is_read_only(operation),
                };
                let resource = op.as_ref().ok().map(|op| op.resource(&app.arns()));
                audited(&app, &requester, call, resource, async {
                    let op = op?;
                    authorize(&app, &requester, &op)?;
                    dispatch(&app, op).await
                })
                .await
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
