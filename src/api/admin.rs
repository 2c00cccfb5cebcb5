//! spillway's own admin API under `/_spillway/`: capacity, events, instances, the catalog.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Requester;
use super::ops::{Action, Arns, Operation, Resource};
use crate::control::app::App;
use crate::control::{self, Command};
use crate::core::catalog;
use crate::error::{ApiError, ErrorCode};

/// The admin API's operations, each authorized as the action `spillway:<Name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// `GET /_spillway/` (or `/_spillway`): the index of this API.
    ListApis,
    /// `GET /_spillway/health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /_spillway/capacity`.
    ListCapacity,
    /// `PUT /_spillway/capacity/{instanceType}`.
    PutCapacity {
        /// The instance type.
        instance_type: String,
        /// The request body (`{"slots": N}`).
        body: Vec<u8>,
    },
    /// `DELETE /_spillway/capacity/{instanceType}`.
    DeleteCapacity {
        /// The instance type.
        instance_type: String,
    },
    /// `GET /_spillway/instance-types`.
    ListInstanceTypes,
    /// `GET /_spillway/endpoints/{name}/events`.
    ListEvents {
        /// The endpoint.
        endpoint: String,
    },
    /// `GET /_spillway/endpoints/{name}/instances`.
    ListInstances {
        /// The endpoint.
        endpoint: String,
    },
    /// `GET /_spillway/endpoints/{name}/explain`: why the fleet runs where it runs.
    ExplainEndpoint {
        /// The endpoint.
        endpoint: String,
    },
    /// `GET /_spillway/cost?since=7d&endpoint=NAME`: instance-hours and cost per type.
    GetCost {
        /// `endpoint=`, if given.
        endpoint: Option<String>,
        /// `since=` as given (a duration back from now; default 7d).
        since: Option<String>,
        /// Query parameters it does not take (refused, after authorization, so audited).
        unknown: Vec<String>,
    },
    /// `POST /_spillway/capacity/{instanceType}/reclaim`: takes the type's instances away.
    ReclaimCapacity {
        /// The instance type.
        instance_type: String,
        /// `?endpoint=NAME`: only that endpoint's instances (else every endpoint's).
        endpoint: Option<String>,
    },
    /// `GET /_spillway/notifications?state=dead&endpoint=NAME&limit=N`: stored notifications
    /// (dead letters with `state=dead`), newest first.
    ListNotifications {
        /// `state=` as given (`pending`, `delivered` or `dead`).
        state: Option<String>,
        /// `endpoint=`, if given.
        endpoint: Option<String>,
        /// `limit=` as given (1 to 1000, default 100).
        limit: Option<String>,
        /// Query parameters it does not take (refused after authorization, so audited).
        unknown: Vec<String>,
    },
    /// `POST /_spillway/notifications/test` with `{"TopicArn", "Message", "Subject"?,
    /// "EndpointName"?}`: publishes a message to a topic as `aws sns publish` would, through
    /// the same outbox and delivery as asynchronous inference's notifications.
    PublishTestNotification {
        /// The request body.
        body: Vec<u8>,
    },
}

impl AdminOp {
    /// The operation a method and path name, without its body: what an unsigned request for an
    /// anonymous action is checked by.
    pub fn from_head(method: &str, path: &str) -> Option<AdminOp> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Some(match (method, segments.as_slice()) {
            ("GET", ["_spillway"] | ["_spillway", ""]) => AdminOp::ListApis,
            ("GET", ["_spillway", "health"]) => AdminOp::Health,
            ("GET", ["metrics"]) => AdminOp::Metrics,
            ("GET", ["_spillway", "capacity"]) => AdminOp::ListCapacity,
            ("PUT", ["_spillway", "capacity", t]) => AdminOp::PutCapacity {
                instance_type: (*t).to_string(),
                body: vec![],
            },
            ("DELETE", ["_spillway", "capacity", t]) => AdminOp::DeleteCapacity {
                instance_type: (*t).to_string(),
            },
            ("GET", ["_spillway", "instance-types"]) => AdminOp::ListInstanceTypes,
            ("GET", ["_spillway", "endpoints", e, "events"]) => AdminOp::ListEvents {
                endpoint: (*e).to_string(),
            },
            ("GET", ["_spillway", "endpoints", e, "instances"]) => AdminOp::ListInstances {
                endpoint: (*e).to_string(),
            },
            ("GET", ["_spillway", "endpoints", e, "explain"]) => AdminOp::ExplainEndpoint {
                endpoint: (*e).to_string(),
            },
            ("GET", ["_spillway", "cost"]) => AdminOp::GetCost {
                endpoint: None,
                since: None,
                unknown: vec![],
            },
            ("POST", ["_spillway", "capacity", t, "reclaim"]) => AdminOp::ReclaimCapacity {
                instance_type: (*t).to_string(),
                endpoint: None,
            },
            ("GET", ["_spillway", "notifications"]) => AdminOp::ListNotifications {
                state: None,
                endpoint: None,
                limit: None,
                unknown: vec![],
            },
            ("POST", ["_spillway", "notifications", "test"]) => AdminOp::PublishTestNotification { body: vec![] },
            _ => return None,
        })
    }
}

/// Whether a path belongs to the admin API (`/_spillway`, `/_spillway/...`, `/metrics`).
pub fn is_admin_path(path: &str) -> bool {
    path == "/metrics" || path == "/_spillway" || path.starts_with("/_spillway/")
}

impl AdminOp {
    /// Whether it only reads (every `GET`).
    pub fn read_only(&self) -> bool {
        !matches!(
            self,
            AdminOp::PutCapacity { .. }
                | AdminOp::DeleteCapacity { .. }
                | AdminOp::ReclaimCapacity { .. }
                | AdminOp::PublishTestNotification { .. }
        )
    }

    /// Its parameters, as the audit trail records them.
    pub fn parameters(&self) -> Value {
        match self {
            AdminOp::PutCapacity { instance_type, body } => json!({
                "instanceType": instance_type,
                "body": serde_json::from_slice::<Value>(body).unwrap_or(Value::Null),
            }),
            AdminOp::DeleteCapacity { instance_type } => json!({ "instanceType": instance_type }),
            AdminOp::ReclaimCapacity {
                instance_type,
                endpoint,
            } => {
                json!({ "instanceType": instance_type, "endpointName": endpoint })
            }
            AdminOp::ListEvents { endpoint }
            | AdminOp::ListInstances { endpoint }
            | AdminOp::ExplainEndpoint { endpoint } => {
                json!({ "endpointName": endpoint })
            }
            AdminOp::GetCost { endpoint, since, .. } => json!({ "endpointName": endpoint, "since": since }),
            AdminOp::ListNotifications {
                state, endpoint, limit, ..
            } => json!({ "state": state, "endpointName": endpoint, "limit": limit }),
            AdminOp::PublishTestNotification { body } => {
                // The message itself may carry anything; the trail records where it went.
                match serde_json::from_slice::<TestNotificationInput>(body) {
                    Ok(i) => json!({ "topicArn": i.topic_arn, "endpointName": i.endpoint_name, "subject": i.subject }),
                    Err(_) => json!({ "body": "not a valid request body" }),
                }
            }
            _ => Value::Null,
        }
    }
}

impl Operation for AdminOp {
    fn name(&self) -> &'static str {
        match self {
            AdminOp::ListApis => "ListApis",
            AdminOp::Health => "Health",
            AdminOp::Metrics => "Metrics",
            AdminOp::ListCapacity => "ListCapacity",
            AdminOp::PutCapacity { .. } => "PutCapacity",
            AdminOp::DeleteCapacity { .. } => "DeleteCapacity",
            AdminOp::ListInstanceTypes => "ListInstanceTypes",
            AdminOp::ListEvents { .. } => "ListEvents",
            AdminOp::ListInstances { .. } => "ListInstances",
            AdminOp::ExplainEndpoint { .. } => "ExplainEndpoint",
            AdminOp::GetCost { .. } => "GetCost",
            AdminOp::ReclaimCapacity { .. } => "ReclaimCapacity",
            AdminOp::ListNotifications { .. } => "ListNotifications",
            AdminOp::PublishTestNotification { .. } => "PublishTestNotification",
        }
    }

    fn action(&self) -> Action {
        Action {
            service: "spillway",
            name: self.name(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        match self {
            AdminOp::ListEvents { endpoint }
            | AdminOp::ListInstances { endpoint }
            | AdminOp::ExplainEndpoint { endpoint }
            | AdminOp::GetCost {
                endpoint: Some(endpoint),
                ..
            }
            | AdminOp::ReclaimCapacity {
                endpoint: Some(endpoint),
                ..
            }
            | AdminOp::ListNotifications {
                endpoint: Some(endpoint),
                ..
            } => arns.resource("endpoint", endpoint),
            // Authorized on the topic, as SNS authorizes `sns:Publish`.
            AdminOp::PublishTestNotification { body } => serde_json::from_slice::<TestNotificationInput>(body)
                .ok()
                .filter(|i| crate::core::notify::check_topic_arn(&i.topic_arn).is_ok())
                .map_or(Resource::Any, |i| Resource::Arn(i.topic_arn)),
            _ => Resource::Any,
        }
    }
}

/// Runs one admin operation: authorizes it, records it in the audit trail and the
/// per-operation metrics.
async fn run(app: &Arc<App>, requester: &Requester, op: AdminOp) -> Response {
    let started = app.clock.instant();
    let name = op.name();
    tracing::debug!(action = %op.action(), resource = %op.resource(&app.arns()), "request");
    let request_id = uuid::Uuid::new_v4().to_string();
    let call = super::Call {
        service: "spillway",
        name,
        request: op.parameters(),
        request_id: &request_id,
        user_agent: &requester.user_agent,
        read_only: op.read_only(),
    };
    let resource = Some(op.resource(&app.arns()));
    let mut answer = None;
    let result = super::audited(app, requester, call, resource, async {
        super::authorize(app, requester, &op)?;
        answer = Some(match op {
            AdminOp::ListApis => index(app),
            AdminOp::Health => Json(json!({ "status": "ok" })).into_response(),
            AdminOp::Metrics => render_metrics(app).await,
            AdminOp::ListCapacity => Json(capacity_view(app)).into_response(),
            AdminOp::PutCapacity { instance_type, body } => {
                set_capacity(app, requester, instance_type, Some(&body)).await?
            }
            AdminOp::DeleteCapacity { instance_type } => set_capacity(app, requester, instance_type, None).await?,
            AdminOp::ListInstanceTypes => Json(instance_types_view()).into_response(),
            AdminOp::ListEvents { endpoint } => events_of(app, &endpoint)?,
            AdminOp::ListInstances { endpoint } => instances_of(app, &endpoint).await?,
            AdminOp::ExplainEndpoint { endpoint } => explain_of(app, &endpoint).await?,
            AdminOp::GetCost { endpoint, since, unknown } => {
                if let Some(k) = unknown.first() {
                    return Err(ApiError::validation(format!(
                        "query: {k:?} is not a parameter of GET /_spillway/cost; it takes since=<duration such as 7d, 12h, 30m> and endpoint=<name>"
                    )));
                }
                cost_of(app, endpoint.as_deref(), since.as_deref()).await?
            }
            AdminOp::ReclaimCapacity { instance_type, endpoint } => {
                known_type(&instance_type)?;
                let n = match control::apply(
                    app,
                    Command::ReclaimCapacity {
                        instance_type: instance_type.clone(),
                        endpoint: endpoint.clone(),
                    },
                )
                .await?
                {
                    control::Outcome::Count(n) => n,
                    _ => 0,
                };
                Json(json!({ "instanceType": instance_type, "endpointName": endpoint, "reclaimed": n })).into_response()
            }
            AdminOp::ListNotifications {
                state,
                endpoint,
                limit,
                unknown,
            } => {
                if let Some(k) = unknown.first() {
                    return Err(ApiError::validation(format!(
                        "query: {k:?} is not a parameter of GET /_spillway/notifications; it takes state=pending|delivered|dead, endpoint=<name> and limit=<1 to 1000>"
                    )));
                }
                notifications_of(app, state.as_deref(), endpoint.as_deref(), limit.as_deref()).await?
            }
            AdminOp::PublishTestNotification { body } => publish_test(app, &body).await?,
        });
        Ok(Value::Null)
    })
    .await;
    let code = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
    app.metrics
        .prometheus
        .record_api(name, code, app.clock.since(started).as_secs_f64());
    let mut resp = match (result, answer) {
        (Ok(_), Some(answer)) => answer,
        (Err(e), _) => e.into_response(),
        (Ok(_), None) => ApiError::internal("the admin operation gave no answer").into_response(),
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// One row of the admin API's index: method, path, the operation's name (its IAM action is
/// `spillway:<name>`), and what it does. Add a row with every new [`AdminOp`]; a unit test checks
/// that each row's method and path parse to the operation it names.
pub const INDEX: &[(&str, &str, &str, &str)] = &[
    ("GET", "/_spillway/", "ListApis", "this index"),
    (
        "GET",
        "/_spillway/health",
        "Health",
        "the server is up (unsigned calls allowed by default)",
    ),
    (
        "GET",
        "/metrics",
        "Metrics",
        "Prometheus (OpenMetrics) text; docs/metrics.md",
    ),
    (
        "GET",
        "/_spillway/capacity",
        "ListCapacity",
        "per instance type: pinned slots (and by whom), instances in use, insufficient-capacity back-off",
    ),
    (
        "PUT",
        "/_spillway/capacity/{instanceType}",
        "PutCapacity",
        "pin a type's slots at run time, body {\"slots\": N}; durable across restarts until DELETE",
    ),
    (
        "DELETE",
        "/_spillway/capacity/{instanceType}",
        "DeleteCapacity",
        "remove the run-time pin; the config file's pin (or the host's real capacity) applies again",
    ),
    (
        "GET",
        "/_spillway/instance-types",
        "ListInstanceTypes",
        "the instance-type catalog: vCPUs, memory, accelerators, on-demand price",
    ),
    (
        "GET",
        "/_spillway/endpoints/{name}/events",
        "ListEvents",
        "every launch attempt, health change and transition of endpoints of that name, oldest first",
    ),
    (
        "GET",
        "/_spillway/endpoints/{name}/instances",
        "ListInstances",
        "the endpoint's fleet: instance, variant, type, priority, state, pid, port",
    ),
    (
        "GET",
        "/_spillway/endpoints/{name}/explain",
        "ExplainEndpoint",
        "why the fleet runs where it runs: sentences (summary) and their evidence; spillway explain",
    ),
    (
        "GET",
        "/_spillway/cost",
        "GetCost",
        "?since=7d&endpoint=NAME: instance-hours and cost per instance type, and the fallback cost; spillway cost",
    ),
    (
        "POST",
        "/_spillway/capacity/{instanceType}/reclaim",
        "ReclaimCapacity",
        "take every instance of the type away; each is replaced through its pools (game days)",
    ),
    (
        "GET",
        "/_spillway/notifications",
        "ListNotifications",
        "?state=pending|delivered|dead&endpoint=NAME&limit=N: SNS notifications and their delivery, dead letters with state=dead; docs/async.md",
    ),
    (
        "POST",
        "/_spillway/notifications/test",
        "PublishTestNotification",
        "body {\"TopicArn\", \"Message\", \"Subject\"?, \"EndpointName\"?}: publish to a topic's mapped URL as aws sns publish would (check a webhook)",
    ),
];

/// `GET /_spillway/`: the index, one API per line, and how to sign a call.
fn index(app: &App) -> Response {
    let rows: Vec<String> = INDEX
        .iter()
        .map(|(method, path, name, summary)| {
            json!({"method": method, "path": path, "action": format!("spillway:{name}"), "description": summary})
                .to_string()
        })
        .collect();
    let signing = format!(
        "every call is signed with AWS Signature Version 4 for service \"spillway\", region \"{}\" (curl --aws-sigv4 \"aws:amz:{}:spillway\" --user KEY:SECRET); IAM policies allow or deny the actions",
        app.cfg.region, app.cfg.region
    );
    let others = [
        "POST / with X-Amz-Target: SageMaker, Application Auto Scaling, CloudWatch, CloudWatch Logs, CloudTrail (boto3, aws CLI)",
        "POST / with a form body: IAM and STS",
        "POST /endpoints/{name}/invocations and /invocations-response-stream: the SageMaker runtime",
    ];
    let body = format!(
        "{{\n  \"apis\": [\n    {}\n  ],\n  \"signing\": {},\n  \"otherApis\": [\n    {}\n  ],\n  \"docs\": \"docs/runbook.md, docs/api-compat.md\"\n}}\n",
        rows.join(",\n    "),
        Value::from(signing),
        others
            .iter()
            .map(|o| Value::from(*o).to_string())
            .collect::<Vec<_>>()
            .join(",\n    "),
    );
    ([("content-type", "application/json")], body).into_response()
}

/// `GET /_spillway/` and `GET /_spillway`: the index of the admin API.
pub async fn list_apis(State(app): State<Arc<App>>, Extension(caller): Extension<Requester>) -> Response {
    run(&app, &caller, AdminOp::ListApis).await
}

/// The catalog as `GET /_spillway/instance-types` answers it: each type named by
/// `instanceType`, as in every other answer of spillway (the catalog's own field is `name`).
fn instance_types_view() -> Value {
    let types: Vec<Value> = catalog::all()
        .iter()
        .map(|spec| {
            let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v
                && let Some(name) = m.remove("name")
            {
                m.insert("instanceType".into(), name);
            }
            v
        })
        .collect();
    json!({ "instanceTypes": types })
}

/// `GET /_spillway/health`: the server is up.
pub async fn health(State(app): State<Arc<App>>, Extension(caller): Extension<Requester>) -> Response {
    run(&app, &caller, AdminOp::Health).await
}

/// `GET /_spillway/capacity`: per instance type, the provider's view (pinned slots, usage)
/// and spillway's ICE memory (available, or backing off with reason, first and last seen,
/// consecutive answers, next probe).
pub async fn capacity(State(app): State<Arc<App>>, Extension(caller): Extension<Requester>) -> Response {
    run(&app, &caller, AdminOp::ListCapacity).await
}

fn capacity_view(app: &App) -> Value {
    let now = app.clock.now();
    let mut rows: std::collections::BTreeMap<String, Value> = app
        .provider
        .capacity()
        .into_iter()
        .map(|e| (e.instance_type.clone(), serde_json::to_value(e).unwrap_or(Value::Null)))
        .collect();
    let ice = app.ice();
    for e in ice.entries() {
        rows.entry(e.instance_type.clone())
            .or_insert_with(|| json!({ "instanceType": e.instance_type, "slots": null, "inUse": 0 }));
    }
    let list: Vec<Value> = rows
        .into_iter()
        .map(|(t, mut row)| {
            let state = match ice.get(&t) {
                Some(e) if now < e.next_probe => json!({
                    "availability": "BackingOff",
                    "reason": e.reason,
                    "firstSeen": e.first_seen,
                    "lastSeen": e.last_seen,
                    "consecutiveFailures": e.failures,
                    "nextProbe": e.next_probe,
                }),
                Some(e) => json!({
                    "availability": "ProbeDue",
                    "reason": e.reason,
                    "firstSeen": e.first_seen,
                    "lastSeen": e.last_seen,
                    "consecutiveFailures": e.failures,
                    "nextProbe": e.next_probe,
                }),
                None => json!({ "availability": "Available" }),
            };
            if let (Value::Object(r), Value::Object(s)) = (&mut row, state) {
                r.extend(s);
            }
            row
        })
        .collect();
    json!({
        "provider": app.provider.kind(),
        "instanceTypes": list,
        "cpuAllowance": app.provider.allowance(),
    })
}

/// Body of `PUT /_spillway/capacity/{instanceType}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsInput {
    slots: u32,
}

fn known_type(t: &str) -> Result<(), ApiError> {
    if catalog::lookup(t).is_none() {
        return Err(ApiError::validation(format!(
            "instanceType: {t:?} is not a SageMaker instance type (see GET /_spillway/instance-types)"
        )));
    }
    Ok(())
}

fn entry(app: &App, t: &str) -> Value {
    app.provider
        .capacity()
        .into_iter()
        .find(|e| e.instance_type == t)
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .unwrap_or_else(|| json!({ "instanceType": t, "slots": null, "inUse": 0 }))
}

/// `PUT /_spillway/capacity/{instanceType}` with `{"slots": N}`: pins the type at run time.
/// The pin is durable and outlives restarts until deleted.
pub async fn put_capacity(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(instance_type): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match super::body_or_error(body) {
        Ok(body) => {
            let body = body.to_vec();
            run(&app, &caller, AdminOp::PutCapacity { instance_type, body }).await
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /_spillway/capacity/{instanceType}`: removes the run-time pin (the config file's
/// pin, if any, applies again).
pub async fn delete_capacity(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(instance_type): Path<String>,
) -> Response {
    run(&app, &caller, AdminOp::DeleteCapacity { instance_type }).await
}

/// Pins (`body` given) or unpins a type; answers the type's capacity entry.
async fn set_capacity(
    app: &Arc<App>,
    requester: &Requester,
    instance_type: String,
    body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    known_type(&instance_type)?;
    let slots = match body {
        Some(body) => Some(
            serde_json::from_slice::<SlotsInput>(body)
                .map_err(|e| ApiError::validation(format!("body must be {{\"slots\": <non-negative integer>}}: {e}")))?
                .slots,
        ),
        None => None,
    };
    let command = Command::SetCapacity {
        instance_type: instance_type.clone(),
        slots,
        by: requester.caller.principal().map(|p| p.arn.clone()),
    };
    control::apply(app, command).await?;
    Ok(Json(entry(app, &instance_type)).into_response())
}

/// `GET /_spillway/instance-types`: the catalog.
pub async fn instance_types(State(app): State<Arc<App>>, Extension(caller): Extension<Requester>) -> Response {
    run(&app, &caller, AdminOp::ListInstanceTypes).await
}

/// `GET /_spillway/endpoints/{name}/events`: every provisioning attempt and its outcome.
pub async fn events(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(endpoint): Path<String>,
) -> Response {
    run(&app, &caller, AdminOp::ListEvents { endpoint }).await
}

fn events_of(app: &App, name: &str) -> Result<Response, ApiError> {
    let events = control::events(app, name)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::AdminNotFound,
            format!("Could not find endpoint \"{}\".", app.arn("endpoint", name)),
        )
    })?;
    Ok(Json(json!({ "events": events })).into_response())
}

/// `GET /_spillway/endpoints/{name}/explain`: why the endpoint's fleet runs where it runs, in
/// sentences (`summary`) and the evidence they come from (`core::explain::Snapshot`).
pub async fn explain(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(endpoint): Path<String>,
) -> Response {
    run(&app, &caller, AdminOp::ExplainEndpoint { endpoint }).await
}

async fn explain_of(app: &App, name: &str) -> Result<Response, ApiError> {
    let snapshot = crate::control::explain::snapshot(app, name).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::AdminNotFound,
            format!("Could not find endpoint \"{}\".", app.arn("endpoint", name)),
        )
    })?;
    let summary = crate::core::explain::sentences(&snapshot);
    let mut body = serde_json::to_value(&snapshot).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut body {
        m.insert("summary".into(), json!(summary));
    }
    Ok(Json(body).into_response())
}

/// The `endpoint=` and `since=` of a query string (the last of each wins), and the names of
/// any other parameters. Never fails: a malformed query is refused by the operation, after
/// authorization, so the refusal is in the audit trail like any other.
fn admin_query(query: Option<&str>) -> (Option<String>, Option<String>, Vec<String>) {
    let (mut endpoint, mut since, mut unknown) = (None, None, vec![]);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "endpoint" => endpoint = Some(v.into_owned()),
            "since" => since = Some(v.into_owned()),
            _ => unknown.push(k.into_owned()),
        }
    }
    (endpoint, since, unknown)
}

/// `GET /_spillway/cost?since=7d&endpoint=NAME`: per endpoint and instance type, the
/// instance-hours of the window (from the fleet ledger), their on-demand cost, the cost of the
/// same hours on the preferred types and the difference (the fallback cost).
pub async fn cost(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let (endpoint, since, unknown) = admin_query(query.as_deref());
    run(
        &app,
        &caller,
        AdminOp::GetCost {
            endpoint,
            since,
            unknown,
        },
    )
    .await
}

async fn cost_of(app: &App, endpoint: Option<&str>, since: Option<&str>) -> Result<Response, ApiError> {
    let window = match since {
        None => 7.0 * 86400.0,
        Some(s) => crate::core::cost::parse_duration(s).map_err(|e| ApiError::validation(format!("since: {e}")))?,
    };
    let now = app.clock.now();
    let from = now - window;
    let endpoints = crate::control::ledger::cost(app, from, endpoint).await?;
    if let Some(name) = endpoint
        && endpoints.is_empty()
    {
        return Err(ApiError::new(
            ErrorCode::AdminNotFound,
            format!(
                "Could not find endpoint \"{}\" (no live endpoint and no fleet record since then).",
                app.arn("endpoint", name)
            ),
        ));
    }
    Ok(Json(json!({
        "since": from,
        "until": now,
        "sampleSeconds": app.cfg.cost.sample_seconds,
        "endpoints": endpoints,
    }))
    .into_response())
}

/// `POST /_spillway/capacity/{instanceType}/reclaim[?endpoint=NAME]`: takes every instance of
/// the type away (of one endpoint, or of all): each is drained, stopped and replaced through
/// its variant's pools (game days).
pub async fn reclaim_capacity(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(instance_type): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let (endpoint, since, mut unknown) = admin_query(query.as_deref());
    if since.is_some() {
        unknown.push("since".into());
    }
    if let Some(k) = unknown.first() {
        return ApiError::validation(format!(
            "query: {k:?} is not a parameter of POST /_spillway/capacity/{{type}}/reclaim; it takes endpoint=<name>"
        ))
        .into_response();
    }
    run(
        &app,
        &caller,
        AdminOp::ReclaimCapacity {
            instance_type,
            endpoint,
        },
    )
    .await
}

/// `GET /_spillway/notifications?state=dead&endpoint=NAME&limit=N`: stored notifications,
/// newest first; `state=dead` lists the dead letters.
pub async fn notifications(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let (mut state, mut endpoint, mut limit, mut unknown) = (None, None, None, vec![]);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "state" => state = Some(v.into_owned()),
            "endpoint" => endpoint = Some(v.into_owned()),
            "limit" => limit = Some(v.into_owned()),
            _ => unknown.push(k.into_owned()),
        }
    }
    run(
        &app,
        &caller,
        AdminOp::ListNotifications {
            state,
            endpoint,
            limit,
            unknown,
        },
    )
    .await
}

async fn notifications_of(
    app: &Arc<App>,
    state: Option<&str>,
    endpoint: Option<&str>,
    limit: Option<&str>,
) -> Result<Response, ApiError> {
    let state = match state {
        None => None,
        Some(s) => Some(crate::notify::State::parse(s).ok_or_else(|| {
            ApiError::validation(format!(
                "state: {s:?} is not a notification state; expected pending, delivered or dead"
            ))
        })?),
    };
    let limit = match limit {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::validation(format!("limit: {l:?} is not a number from 1 to 1000")))?,
    };
    let notifier = app.notifier.clone();
    let endpoint = endpoint.map(str::to_string);
    let list = tokio::task::spawn_blocking(move || notifier.list(state, endpoint.as_deref(), limit))
        .await
        .map_err(|e| ApiError::internal(format!("listing notifications failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "notifications": list })).into_response())
}

/// Body of `POST /_spillway/notifications/test`: SNS `Publish`'s members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct TestNotificationInput {
    topic_arn: String,
    message: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    endpoint_name: Option<String>,
}

/// `POST /_spillway/notifications/test`: publishes a message to a topic (`aws sns publish`).
pub async fn publish_test_notification(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match super::body_or_error(body) {
        Ok(body) => {
            let body = body.to_vec();
            run(&app, &caller, AdminOp::PublishTestNotification { body }).await
        }
        Err(e) => e.into_response(),
    }
}

async fn publish_test(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let input: TestNotificationInput = serde_json::from_slice(body).map_err(|e| {
        ApiError::validation(format!(
            "body must be {{\"TopicArn\": \"arn:aws:sns:...\", \"Message\": \"...\", \"Subject\"?: \"...\", \"EndpointName\"?: \"...\"}}: {e}"
        ))
    })?;
    crate::core::notify::check_topic_arn(&input.topic_arn)
        .map_err(|e| ApiError::validation(format!("TopicArn: {e}")))?;
    if input.message.is_empty() || input.message.len() > 256 * 1024 {
        return Err(ApiError::validation(
            "Message: expected 1 to 262144 bytes (SNS's limit)".to_string(),
        ));
    }
    if input.subject.as_ref().is_some_and(|s| s.is_empty() || s.len() > 100) {
        return Err(ApiError::validation(
            "Subject: expected 1 to 100 characters (SNS's limit)".to_string(),
        ));
    }
    if app.notifier.url_of(&input.topic_arn).is_none() {
        return Err(ApiError::new(
            ErrorCode::AdminNotFound,
            format!(
                "Topic does not exist: no URL is mapped to {} in [notifications] topics",
                input.topic_arn
            ),
        ));
    }
    let n = crate::notify::Notification {
        topic_arn: input.topic_arn,
        endpoint: input.endpoint_name.unwrap_or_default(),
        inference_id: String::new(),
        message: input.message,
    };
    let id = app
        .notifier
        .publish_with_subject(n, input.subject)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "MessageId": id })).into_response())
}

/// `GET /_spillway/endpoints/{name}/instances`: the fleet as spillway tracks it, and the
/// inference components' copies on it.
pub async fn instances(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Requester>,
    Path(endpoint): Path<String>,
) -> Response {
    run(&app, &caller, AdminOp::ListInstances { endpoint }).await
}

async fn instances_of(app: &App, name: &str) -> Result<Response, ApiError> {
    let rt = control::endpoint(app, name).await.map_err(|_| {
        ApiError::new(
            ErrorCode::AdminNotFound,
            format!("Could not find endpoint \"{}\".", app.arn("endpoint", name)),
        )
    })?;
    let list: Vec<Value> = rt
        .instances
        .iter()
        .map(|i| {
            json!({
                "instanceId": i.instance_id,
                "variantName": i.variant_name,
                "deploymentId": i.deployment_id,
                "instanceType": i.instance_type,
                "priority": i.priority,
                "modelName": i.model_name,
                "state": i.state,
                "launchedAt": i.launched_at,
                "address": i.address,
                "pid": i.handle.get("pid"),
                "port": i.handle.get("port"),
            })
        })
        .collect();
    // Inference components' copies, each on one of the instances above.
    let copies: Vec<Value> = rt
        .copies
        .iter()
        .map(|c| {
            json!({
                "copyId": c.copy_id,
                "inferenceComponentName": c.component,
                "hostInstanceId": c.host_instance_id,
                "instanceType": c.instance_type,
                "priority": c.priority,
                "version": c.version,
                "accelerators": c.accelerators,
                "cpus": c.cpus,
                "memoryMb": c.memory_mb,
                "state": c.state,
                "placedAt": c.placed_at,
                "address": c.address,
                "pid": c.handle.get("pid"),
            })
        })
        .collect();
    Ok(Json(json!({ "instances": list, "copies": copies })).into_response())
}

/// `GET /metrics`: Prometheus (OpenMetrics) text. Counters and histograms are kept as requests
/// happen; gauges (instances, concurrency, capacity back-off) are refreshed here.
pub async fn metrics(State(app): State<Arc<App>>, Extension(caller): Extension<Requester>) -> Response {
    run(&app, &caller, AdminOp::Metrics).await
}

async fn render_metrics(app: &App) -> Response {
    use crate::telemetry::metrics::{CapacitySeries, InstanceSeries, TypeSeries};
    let prom = &app.metrics.prometheus;
    prom.instances.clear();
    prom.concurrency.clear();
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        for i in &rt.instances {
            let state = serde_json::to_value(i.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            prom.instances
                .get_or_create(&InstanceSeries {
                    endpoint: i.endpoint_name.clone(),
                    variant: i.variant_name.clone(),
                    instance_type: i.instance_type.clone(),
                    state,
                })
                .inc();
        }
        let name = rt.record.name.clone();
        drop(rt);
        let Some(routes) = app.dataplane.routes.get(&name) else {
            continue;
        };
        for v in &routes.variants {
            let mut by_type: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
            for i in &v.instances {
                let e = by_type.entry(i.instance_type.as_str()).or_default();
                e.0 += 1;
                e.1 += i.outstanding.load(std::sync::atomic::Ordering::Relaxed);
            }
            for (ty, (n, outstanding)) in by_type {
                prom.concurrency
                    .get_or_create(&TypeSeries {
                        endpoint: name.clone(),
                        variant: v.name.clone(),
                        instance_type: ty.to_string(),
                    })
                    .set(outstanding as f64 / n as f64);
            }
        }
    }
    let now = app.clock.now();
    prom.type_available.clear();
    prom.type_backoff_seconds.clear();
    let ice = app.ice();
    let types: std::collections::BTreeSet<String> = app
        .provider
        .capacity()
        .into_iter()
        .map(|e| e.instance_type)
        .chain(ice.entries().map(|e| e.instance_type.clone()))
        .collect();
    for t in types {
        let label = CapacitySeries {
            instance_type: t.clone(),
        };
        let blocked = ice.blocked_until(&t, now);
        prom.type_available
            .get_or_create(&label)
            .set(i64::from(blocked.is_none()));
        prom.type_backoff_seconds
            .get_or_create(&label)
            .set(blocked.map(|b| b - now).unwrap_or(0.0));
    }
    drop(ice);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        prom.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path of the index with its `{placeholders}` filled in.
    fn sample(path: &str) -> String {
        path.replace("{instanceType}", "ml.m5.xlarge").replace("{name}", "e")
    }

    #[test]
    fn every_row_of_the_index_is_the_operation_it_names() {
        for (method, path, name, summary) in INDEX {
            let op =
                AdminOp::from_head(method, &sample(path)).unwrap_or_else(|| panic!("{method} {path} is no operation"));
            assert_eq!(op.name(), *name, "{method} {path}");
            assert_eq!(op.action().to_string(), format!("spillway:{name}"));
            assert!(is_admin_path(&sample(path)), "{path}");
            assert!(!summary.is_empty() && !summary.contains('\n'), "{path}: one line");
        }
        let mut names: Vec<&str> = INDEX.iter().map(|r| r.2).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INDEX.len(), "one row per operation");
    }

    #[test]
    fn the_index_answers_with_and_without_the_slash() {
        assert_eq!(AdminOp::from_head("GET", "/_spillway"), Some(AdminOp::ListApis));
        assert_eq!(AdminOp::from_head("GET", "/_spillway/"), Some(AdminOp::ListApis));
        assert_eq!(AdminOp::from_head("POST", "/_spillway/"), None);
        assert!(is_admin_path("/_spillway") && !is_admin_path("/_spillwayx") && !is_admin_path("/"));
    }

    #[test]
    fn instance_types_are_named_by_instance_type() {
        let view = instance_types_view();
        let types = view["instanceTypes"].as_array().expect("a list");
        assert_eq!(types.len(), catalog::all().len());
        for (v, spec) in types.iter().zip(catalog::all()) {
            assert_eq!(v["instanceType"], spec.name.as_str());
            assert!(v.get("name").is_none(), "{v}");
            assert_eq!(v["vcpus"], spec.vcpus);
        }
    }
}
