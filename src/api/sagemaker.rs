//! SageMaker control-plane operations (awsJson1_1, `X-Amz-Target: SageMaker.<Op>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::app::{App, EndpointRuntime};
use crate::core::endpoint::{DeployedVariant, Deployment, EndpointRecord};
use crate::core::model::{
    ContainerDefinition, EndpointConfig, EndpointStatus, Model, ProductionVariant, Tag, Timestamp,
};
use crate::core::planner::{InstancePhase, Operation, ProvisioningState, RollingUpdate};
use crate::core::validate::{self, ValidationError};
use crate::store::Kind;

/// The operations spillway implements, in the order `docs/api-compat.md` lists them.
pub const OPERATIONS: &[&str] = &[
    "CreateModel",
    "DescribeModel",
    "DeleteModel",
    "ListModels",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "DeleteEndpointConfig",
    "ListEndpointConfigs",
    "CreateEndpoint",
    "DescribeEndpoint",
    "UpdateEndpoint",
    "DeleteEndpoint",
    "ListEndpoints",
    "UpdateEndpointWeightsAndCapacities",
    "AddTags",
    "ListTags",
    "DeleteTags",
];

/// Runs one operation on a JSON body.
pub async fn dispatch(app: &Arc<App>, op: &str, body: &[u8]) -> Result<Value, ApiError> {
    match op {
        "CreateModel" => create_model(app, parse(body)?),
        "DescribeModel" => describe_model(app, parse(body)?),
        "DeleteModel" => delete_model(app, parse(body)?),
        "ListModels" => list_models(app, parse(body)?),
        "CreateEndpointConfig" => create_endpoint_config(app, parse(body)?),
        "DescribeEndpointConfig" => describe_endpoint_config(app, parse(body)?),
        "DeleteEndpointConfig" => delete_endpoint_config(app, parse(body)?),
        "ListEndpointConfigs" => list_endpoint_configs(app, parse(body)?),
        "CreateEndpoint" => create_endpoint(app, parse(body)?),
        "DescribeEndpoint" => describe_endpoint(app, parse(body)?).await,
        "UpdateEndpoint" => update_endpoint(app, parse(body)?).await,
        "DeleteEndpoint" => delete_endpoint(app, parse(body)?).await,
        "ListEndpoints" => list_endpoints(app, parse(body)?).await,
        "UpdateEndpointWeightsAndCapacities" => update_weights_and_capacities(app, parse(body)?).await,
        "AddTags" => add_tags(app, parse(body)?).await,
        "ListTags" => list_tags(app, parse(body)?).await,
        "DeleteTags" => delete_tags(app, parse(body)?).await,
        other => Err(ApiError::unknown_operation(format!(
            "The SageMaker operation {other} is not supported by spillway; supported operations are listed in docs/api-compat.md"
        ))),
    }
}

/// Renders a serde path the way AWS names members: dotted, 1-based list indices.
fn aws_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        let part = match seg {
            Segment::Seq { index } => (index + 1).to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&part);
    }
    out
}

/// Parses an awsJson request body: malformed JSON and wrong member types are `SerializationException`,
/// a missing required member is a `ValidationException` naming it.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::serialization(format!("The request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::serialization("The request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = aws_path(e.path());
        let inner = e.into_inner().to_string();
        if let Some(field) = inner.strip_prefix("missing field `").and_then(|s| s.split('`').next()) {
            let full = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            ApiError::from(ValidationError::missing(&full))
        } else {
            let at = if path.is_empty() {
                "the request".to_string()
            } else {
                format!("'{path}'")
            };
            ApiError::serialization(format!("Cannot deserialize {at}: {inner}"))
        }
    })
}

fn store_get<T: DeserializeOwned>(app: &App, kind: Kind, name: &str) -> Result<Option<T>, ApiError> {
    Ok(app.store.get(kind, name)?)
}

fn not_found_model(app: &App, name: &str) -> ApiError {
    ApiError::validation(format!("Could not find model \"{}\".", app.arn("model", name)))
}

fn not_found_config(app: &App, name: &str) -> ApiError {
    ApiError::validation(format!(
        "Could not find endpoint configuration \"{}\".",
        app.arn("endpoint-config", name)
    ))
}

fn not_found_endpoint(app: &App, name: &str) -> ApiError {
    ApiError::validation(format!("Could not find endpoint \"{}\".", app.arn("endpoint", name)))
}

fn check_tags(tags: &[Tag], field: &str) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(
            ValidationError::constraint(tags.len(), field, "Member must have length less than or equal to 50").into(),
        );
    }
    for (i, t) in tags.iter().enumerate() {
        let at = format!("{field}.{}", i + 1);
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(ValidationError::constraint(
                &t.key,
                &format!("{at}.Key"),
                "Member must have length between 1 and 128",
            )
            .into());
        }
        if t.value.chars().count() > 256 {
            return Err(ValidationError::constraint(
                &t.value,
                &format!("{at}.Value"),
                "Member must have length less than or equal to 256",
            )
            .into());
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::validation(format!(
                "{at}.Key: keys beginning with 'aws:' are reserved"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    sort_by: Option<String>,
    sort_order: Option<String>,
    name_contains: Option<String>,
    creation_time_before: Option<f64>,
    creation_time_after: Option<f64>,
    last_modified_time_before: Option<f64>,
    last_modified_time_after: Option<f64>,
    status_equals: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

/// One listable item.
struct Row {
    name: String,
    created: Timestamp,
    modified: Timestamp,
    status: &'static str,
    summary: Value,
}

fn list_page(input: &ListInput, mut rows: Vec<Row>, sort_keys: &[&str], key: &str) -> Result<Value, ApiError> {
    let max = validate::max_results(input.max_results)?;
    let sort_by = input.sort_by.as_deref().unwrap_or("CreationTime");
    if !sort_keys.contains(&sort_by) {
        return Err(ValidationError::constraint(
            sort_by,
            "SortBy",
            &format!("Member must satisfy enum value set: [{}]", sort_keys.join(", ")),
        )
        .into());
    }
    let descending = match input.sort_order.as_deref().unwrap_or("Descending") {
        "Ascending" => false,
        "Descending" => true,
        other => {
            return Err(ValidationError::constraint(
                other,
                "SortOrder",
                "Member must satisfy enum value set: [Ascending, Descending]",
            )
            .into());
        }
    };
    if let Some(n) = &input.name_contains
        && (n.is_empty() || n.len() > 63)
    {
        return Err(ValidationError::constraint(n, "NameContains", "Member must have length between 1 and 63").into());
    }
    rows.retain(|r| {
        input
            .name_contains
            .as_ref()
            .is_none_or(|n| r.name.to_lowercase().contains(&n.to_lowercase()))
            && input.creation_time_before.is_none_or(|t| r.created < t)
            && input.creation_time_after.is_none_or(|t| r.created > t)
            && input.last_modified_time_before.is_none_or(|t| r.modified < t)
            && input.last_modified_time_after.is_none_or(|t| r.modified > t)
            && input.status_equals.as_deref().is_none_or(|s| r.status == s)
    });
    rows.sort_by(|a, b| {
        let ord = match sort_by {
            "Name" => a.name.cmp(&b.name),
            "Status" => a.status.cmp(b.status).then_with(|| a.name.cmp(&b.name)),
            _ => a.created.total_cmp(&b.created).then_with(|| a.name.cmp(&b.name)),
        };
        if descending { ord.reverse() } else { ord }
    });
    let start = match &input.next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= rows.len())
            .ok_or_else(|| ApiError::validation(format!("NextToken '{t}' is not a token this list returned")))?,
    };
    let end = (start + max).min(rows.len());
    let items: Vec<Value> = rows[start..end].iter().map(|r| r.summary.clone()).collect();
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items));
    if end < rows.len() {
        out.insert("NextToken".into(), Value::String(end.to_string()));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Models

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateModelInput {
    model_name: String,
    primary_container: Option<ContainerDefinition>,
    containers: Option<Vec<ContainerDefinition>>,
    execution_role_arn: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

fn create_model(app: &App, input: CreateModelInput) -> Result<Value, ApiError> {
    validate::name(&input.model_name, "ModelName")?;
    check_tags(&input.tags, "Tags")?;
    let container = match (input.primary_container, input.containers) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "PrimaryContainer and Containers are mutually exclusive; specify one",
            ));
        }
        (Some(c), None) => c,
        (None, Some(mut cs)) if cs.len() == 1 => cs.remove(0),
        (None, Some(cs)) => {
            return Err(ApiError::validation(format!(
                "Containers: {} containers given; spillway runs single-container models only (see docs/api-compat.md)",
                cs.len()
            )));
        }
        (None, None) => {
            return Err(ApiError::validation(
                "PrimaryContainer is required: spillway needs the container (command line) to run",
            ));
        }
    };
    match container.image.as_deref() {
        None | Some("") => {
            return Err(ApiError::validation(
                "PrimaryContainer.Image is required: for spillway's local provider it is the command line to run (or builtin:echo)",
            ));
        }
        Some(image) if image.len() > 255 => {
            return Err(ValidationError::constraint(
                image,
                "PrimaryContainer.Image",
                "Member must have length less than or equal to 255",
            )
            .into());
        }
        Some(image) if image.starts_with("builtin:") && !crate::builtin::BUILTINS.contains(&&image[8..]) => {
            return Err(ApiError::validation(format!(
                "PrimaryContainer.Image: unknown built-in model server {image:?}; available: {}",
                crate::builtin::BUILTINS
                    .iter()
                    .map(|b| format!("builtin:{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some(image) if shlex::split(image).is_none_or(|v| v.is_empty()) => {
            return Err(ApiError::validation(format!(
                "PrimaryContainer.Image {image:?} is not a valid command line (unbalanced quotes)"
            )));
        }
        Some(_) => {}
    }
    if let Some(url) = &container.model_data_url
        && !url.starts_with("file://")
    {
        return Err(ApiError::validation(format!(
            "PrimaryContainer.ModelDataUrl {url:?}: spillway's local provider supports file:// URLs (a directory or a .tar.gz)"
        )));
    }
    if let Some(env) = &container.environment {
        if env.len() > 100 {
            return Err(ValidationError::constraint(
                env.len(),
                "PrimaryContainer.Environment",
                "Map must have at most 100 entries",
            )
            .into());
        }
        for (k, v) in env {
            if k.is_empty() || k.len() > 1024 || v.len() > 1024 {
                return Err(ApiError::validation(format!(
                    "PrimaryContainer.Environment: key {k:?} or its value breaks the 1..1024 length limit"
                )));
            }
        }
    }
    let t = app.clock.now();
    let model = Model {
        model_name: input.model_name.clone(),
        model_arn: app.arn("model", &input.model_name),
        creation_time: t,
        primary_container: Some(container),
        execution_role_arn: input.execution_role_arn,
        other: input.other,
    };
    if !app.store.insert(Kind::Model, &model.model_name, t, &model)? {
        return Err(ApiError::validation(format!(
            "Cannot create already existing model \"{}\".",
            model.model_arn
        )));
    }
    if !input.tags.is_empty() {
        app.store.add_tags(&model.model_arn, &input.tags)?;
    }
    Ok(json!({ "ModelArn": model.model_arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModelNameInput {
    model_name: String,
}

fn describe_model(app: &App, input: ModelNameInput) -> Result<Value, ApiError> {
    let m: Model =
        store_get(app, Kind::Model, &input.model_name)?.ok_or_else(|| not_found_model(app, &input.model_name))?;
    serde_json::to_value(m).map_err(|e| ApiError::internal(e.to_string()))
}

fn delete_model(app: &App, input: ModelNameInput) -> Result<Value, ApiError> {
    let arn = app.arn("model", &input.model_name);
    if !app.store.delete(Kind::Model, &input.model_name, &arn)? {
        return Err(not_found_model(app, &input.model_name));
    }
    Ok(json!({}))
}

fn list_models(app: &App, input: ListInput) -> Result<Value, ApiError> {
    let rows = app
        .store
        .list::<Model>(Kind::Model)?
        .into_iter()
        .map(|m| Row {
            summary: json!({"ModelName": m.model_name, "ModelArn": m.model_arn, "CreationTime": m.creation_time}),
            name: m.model_name,
            created: m.creation_time,
            modified: m.creation_time,
            status: "",
        })
        .collect();
    list_page(&input, rows, &["Name", "CreationTime"], "Models")
}

// ---------------------------------------------------------------------------------------------
// Endpoint configurations

/// Top-level `CreateEndpointConfig` members that spillway refuses: accepting them would
/// promise behaviour (data capture, async inference, shadow traffic, explanations) it lacks.
const REJECTED_CONFIG_MEMBERS: &[&str] = &[
    "DataCaptureConfig",
    "AsyncInferenceConfig",
    "ShadowProductionVariants",
    "ExplainerConfig",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    production_variants: Vec<ProductionVariant>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

fn model_checks(app: &App) -> (impl Fn(&str) -> bool + '_, impl Fn(&str) -> String + '_) {
    (
        move |n: &str| app.store.exists(Kind::Model, n).unwrap_or(false),
        move |n: &str| app.arn("model", n),
    )
}

fn create_endpoint_config(app: &App, input: CreateEndpointConfigInput) -> Result<Value, ApiError> {
    validate::name(&input.endpoint_config_name, "EndpointConfigName")?;
    for member in REJECTED_CONFIG_MEMBERS {
        if input.other.contains_key(*member) {
            return Err(ApiError::validation(format!(
                "{member} is not supported by spillway; see docs/api-compat.md"
            )));
        }
    }
    check_tags(&input.tags, "Tags")?;
    let (exists, arn) = model_checks(app);
    validate::production_variants(&input.production_variants, &exists, &arn)?;
    let t = app.clock.now();
    let cfg = EndpointConfig {
        endpoint_config_arn: app.arn("endpoint-config", &input.endpoint_config_name),
        endpoint_config_name: input.endpoint_config_name,
        production_variants: input.production_variants,
        creation_time: t,
        other: input.other,
    };
    if !app
        .store
        .insert(Kind::EndpointConfig, &cfg.endpoint_config_name, t, &cfg)?
    {
        return Err(ApiError::validation(format!(
            "Cannot create already existing endpoint configuration \"{}\".",
            cfg.endpoint_config_arn
        )));
    }
    if !input.tags.is_empty() {
        app.store.add_tags(&cfg.endpoint_config_arn, &input.tags)?;
    }
    Ok(json!({ "EndpointConfigArn": cfg.endpoint_config_arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigNameInput {
    endpoint_config_name: String,
}

fn describe_endpoint_config(app: &App, input: ConfigNameInput) -> Result<Value, ApiError> {
    let c: EndpointConfig = store_get(app, Kind::EndpointConfig, &input.endpoint_config_name)?
        .ok_or_else(|| not_found_config(app, &input.endpoint_config_name))?;
    serde_json::to_value(c).map_err(|e| ApiError::internal(e.to_string()))
}

fn delete_endpoint_config(app: &App, input: ConfigNameInput) -> Result<Value, ApiError> {
    let arn = app.arn("endpoint-config", &input.endpoint_config_name);
    if !app
        .store
        .delete(Kind::EndpointConfig, &input.endpoint_config_name, &arn)?
    {
        return Err(not_found_config(app, &input.endpoint_config_name));
    }
    Ok(json!({}))
}

fn list_endpoint_configs(app: &App, input: ListInput) -> Result<Value, ApiError> {
    let rows = app
        .store
        .list::<EndpointConfig>(Kind::EndpointConfig)?
        .into_iter()
        .map(|c| Row {
            summary: json!({
                "EndpointConfigName": c.endpoint_config_name,
                "EndpointConfigArn": c.endpoint_config_arn,
                "CreationTime": c.creation_time,
            }),
            name: c.endpoint_config_name,
            created: c.creation_time,
            modified: c.creation_time,
            status: "",
        })
        .collect();
    list_page(&input, rows, &["Name", "CreationTime"], "EndpointConfigs")
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// Builds a deployment from a stored configuration: validates it again (models may have been
/// deleted since) and snapshots the models it runs.
fn build_deployment(app: &App, config_name: &str, t: Timestamp) -> Result<Deployment, ApiError> {
    validate::name(config_name, "EndpointConfigName")?;
    let cfg: EndpointConfig =
        store_get(app, Kind::EndpointConfig, config_name)?.ok_or_else(|| not_found_config(app, config_name))?;
    let (exists, arn) = model_checks(app);
    let specs = validate::production_variants(&cfg.production_variants, &exists, &arn)?;
    let mut models = BTreeMap::new();
    for spec in &specs {
        for pool in &spec.pools {
            if models.contains_key(&pool.model_name) {
                continue;
            }
            let m: Model =
                store_get(app, Kind::Model, &pool.model_name)?.ok_or_else(|| not_found_model(app, &pool.model_name))?;
            models.insert(pool.model_name.clone(), m.primary_container.unwrap_or_default());
        }
    }
    Ok(Deployment {
        id: uuid::Uuid::new_v4().simple().to_string(),
        config_name: config_name.to_string(),
        start_time: t,
        variants: specs
            .into_iter()
            .map(|spec| DeployedVariant {
                desired_count: spec.initial_instance_count,
                desired_weight: spec.initial_weight,
                spec,
                provisioning: ProvisioningState::default(),
                stalled: None,
                health_failures: 0,
                unhealthy: None,
                status_message: None,
            })
            .collect(),
        models,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
    deployment_config: Option<Value>,
    #[serde(default)]
    tags: Vec<Tag>,
}

fn create_endpoint(app: &Arc<App>, input: CreateEndpointInput) -> Result<Value, ApiError> {
    validate::name(&input.endpoint_name, "EndpointName")?;
    check_tags(&input.tags, "Tags")?;
    let arn = app.arn("endpoint", &input.endpoint_name);
    if app.endpoint(&input.endpoint_name).is_some() || app.store.exists(Kind::Endpoint, &input.endpoint_name)? {
        return Err(ApiError::validation(format!(
            "Cannot create already existing endpoint \"{arn}\"."
        )));
    }
    let t = app.clock.now();
    let deployment = build_deployment(app, &input.endpoint_config_name, t)?;
    let record = EndpointRecord {
        name: input.endpoint_name.clone(),
        arn: arn.clone(),
        status: EndpointStatus::Creating,
        failure_reason: None,
        creation_time: t,
        last_modified_time: t,
        active: deployment,
        pending: None,
        operation: Some(Operation::Create),
        deployment_config: input.deployment_config,
        rolling: None,
        tags: input.tags.clone(),
    };
    if !app.store.insert(Kind::Endpoint, &record.name, t, &record)? {
        return Err(ApiError::validation(format!(
            "Cannot create already existing endpoint \"{arn}\"."
        )));
    }
    if !input.tags.is_empty() {
        app.store.add_tags(&arn, &input.tags)?;
    }
    app.register(record, vec![]);
    Ok(json!({ "EndpointArn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointNameInput {
    endpoint_name: String,
}

fn variant_summaries(rt: &EndpointRuntime, dep: &Deployment, pending: bool, status: &str) -> Vec<Value> {
    dep.variants
        .iter()
        .map(|v| {
            let serving: Vec<_> = rt
                .instances
                .iter()
                .filter(|i| {
                    i.deployment_id == dep.id && i.variant_name == v.spec.name && i.state == InstancePhase::InService
                })
                .collect();
            let mut s = Map::new();
            s.insert("VariantName".into(), json!(v.spec.name));
            let images: Vec<Value> = v
                .spec
                .pools
                .iter()
                .filter_map(|p| dep.models.get(&p.model_name).and_then(|c| c.image.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|img| json!({"SpecifiedImage": img, "ResolvedImage": img, "ResolutionTime": dep.start_time}))
                .collect();
            s.insert("DeployedImages".into(), Value::Array(images));
            s.insert("CurrentWeight".into(), json!(v.desired_weight));
            s.insert("DesiredWeight".into(), json!(v.desired_weight));
            s.insert("CurrentInstanceCount".into(), json!(serving.len()));
            s.insert("DesiredInstanceCount".into(), json!(v.desired_count));
            if v.spec.pooled {
                let pools: Vec<Value> = v
                    .spec
                    .pools
                    .iter()
                    .map(|p| {
                        json!({
                            "InstanceType": p.instance_type,
                            "CurrentInstanceCount": serving.iter().filter(|i| i.priority == p.priority).count(),
                        })
                    })
                    .collect();
                s.insert("InstancePools".into(), Value::Array(pools));
            } else if pending {
                s.insert("InstanceType".into(), json!(v.spec.pools[0].instance_type));
            }
            if let Some(msg) = &v.status_message {
                let start = v
                    .provisioning
                    .deadline
                    .map(|_| dep.start_time)
                    .unwrap_or(rt.record.last_modified_time);
                s.insert(
                    "VariantStatus".into(),
                    json!([{ "Status": status, "StatusMessage": msg, "StartTime": start }]),
                );
            }
            s.insert(
                "RoutingConfig".into(),
                json!({ "RoutingStrategy": v.spec.routing.as_str() }),
            );
            Value::Object(s)
        })
        .collect()
}

fn describe(rt: &EndpointRuntime) -> Value {
    let r = &rt.record;
    let variant_status = match r.operation {
        Some(Operation::Scale) => "Updating",
        _ => "Creating",
    };
    let mut out = Map::new();
    out.insert("EndpointName".into(), json!(r.name));
    out.insert("EndpointArn".into(), json!(r.arn));
    out.insert("EndpointConfigName".into(), json!(r.active.config_name));
    out.insert(
        "ProductionVariants".into(),
        Value::Array(variant_summaries(rt, &r.active, false, variant_status)),
    );
    out.insert("EndpointStatus".into(), json!(r.status.as_str()));
    if let Some(f) = &r.failure_reason {
        out.insert("FailureReason".into(), json!(f));
    }
    out.insert("CreationTime".into(), json!(r.creation_time));
    out.insert("LastModifiedTime".into(), json!(r.last_modified_time));
    if let Some(dc) = &r.deployment_config {
        out.insert("LastDeploymentConfig".into(), dc.clone());
    }
    let pending = match r.operation {
        Some(Operation::Create) => Some(&r.active),
        Some(Operation::Deploy) => r.pending.as_ref(),
        _ => None,
    };
    if let Some(p) = pending {
        out.insert(
            "PendingDeploymentSummary".into(),
            json!({
                "EndpointConfigName": p.config_name,
                "StartTime": p.start_time,
                "ProductionVariants": variant_summaries(rt, p, true, "Creating"),
            }),
        );
    }
    Value::Object(out)
}

async fn describe_endpoint(app: &Arc<App>, input: EndpointNameInput) -> Result<Value, ApiError> {
    let h = app
        .endpoint(&input.endpoint_name)
        .ok_or_else(|| not_found_endpoint(app, &input.endpoint_name))?;
    let rt = h.state.lock().await;
    if rt.deleted {
        return Err(not_found_endpoint(app, &input.endpoint_name));
    }
    Ok(describe(&rt))
}

fn in_progress(app: &App, rt: &EndpointRuntime) -> Result<(), ApiError> {
    if rt.deleted {
        return Err(not_found_endpoint(app, &rt.record.name));
    }
    if rt.record.status.in_progress() {
        return Err(ApiError::validation(format!(
            "Cannot update in-progress endpoint \"{}\".",
            rt.record.arn
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
    #[serde(default)]
    retain_all_variant_properties: bool,
    #[serde(default)]
    exclude_retained_variant_properties: Vec<VariantPropertyInput>,
    deployment_config: Option<Value>,
    #[serde(default)]
    retain_deployment_config: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VariantPropertyInput {
    variant_property_type: String,
}

async fn update_endpoint(app: &Arc<App>, input: UpdateEndpointInput) -> Result<Value, ApiError> {
    let h = app
        .endpoint(&input.endpoint_name)
        .ok_or_else(|| not_found_endpoint(app, &input.endpoint_name))?;
    let mut excluded = vec![];
    for (i, p) in input.exclude_retained_variant_properties.iter().enumerate() {
        match p.variant_property_type.as_str() {
            "DesiredInstanceCount" | "DesiredWeight" | "DataCaptureConfig" => {
                excluded.push(p.variant_property_type.clone())
            }
            other => {
                return Err(ValidationError::constraint(
                    other,
                    &format!("ExcludeRetainedVariantProperties.{}.VariantPropertyType", i + 1),
                    "Member must satisfy enum value set: [DesiredInstanceCount, DesiredWeight, DataCaptureConfig]",
                )
                .into());
            }
        }
    }
    let rolling_policy = rolling_policy(input.deployment_config.as_ref())?;
    let t = app.clock.now();
    let mut deployment = build_deployment(app, &input.endpoint_config_name, t)?;
    let mut rt = h.state.lock().await;
    in_progress(app, &rt)?;
    if rt.record.status == EndpointStatus::Failed {
        return Err(ApiError::validation(format!(
            "Cannot update failed endpoint \"{}\"; delete it and create it again.",
            rt.record.arn
        )));
    }
    if rt.record.active.config_name == input.endpoint_config_name {
        return Err(ApiError::validation(format!(
            "EndpointConfigName: endpoint \"{}\" already uses endpoint configuration {}; update it to a new configuration",
            rt.record.arn, input.endpoint_config_name
        )));
    }
    if input.retain_all_variant_properties {
        for v in deployment.variants.iter_mut() {
            if let Some(old) = rt.record.active.variants.iter().find(|o| o.spec.name == v.spec.name) {
                if !excluded.iter().any(|e| e == "DesiredInstanceCount") {
                    v.desired_count = old.desired_count;
                }
                if !excluded.iter().any(|e| e == "DesiredWeight") {
                    v.desired_weight = old.desired_weight;
                }
            }
        }
    }
    let before = rt.record.clone();
    rt.record.rolling = None;
    if let Some((batch, wait_s)) = rolling_policy {
        let old: BTreeMap<String, u32> = rt
            .record
            .active
            .variants
            .iter()
            .map(|v| (v.spec.name.clone(), v.desired_count))
            .collect();
        let new: BTreeMap<String, u32> = deployment
            .variants
            .iter()
            .map(|v| (v.spec.name.clone(), v.desired_count))
            .collect();
        if old.keys().ne(new.keys()) {
            return Err(ApiError::validation(format!(
                "DeploymentConfig.RollingUpdatePolicy: a rolling update needs the same variant names in the old and new endpoint configurations (old: {:?}, new: {:?}); use a blue/green update instead",
                old.keys().collect::<Vec<_>>(),
                new.keys().collect::<Vec<_>>()
            )));
        }
        let batch = batch.resolve(new.values().copied().max().unwrap_or(1));
        let (rolling, first) = RollingUpdate::start(batch, wait_s, old, new);
        for v in deployment.variants.iter_mut() {
            v.desired_count = first.get(&v.spec.name).copied().unwrap_or(0);
        }
        rt.record.rolling = Some(rolling);
    }
    rt.record.pending = Some(deployment);
    rt.record.operation = Some(Operation::Deploy);
    rt.record.status = EndpointStatus::Updating;
    rt.record.last_modified_time = t;
    rt.record.failure_reason = None;
    if !input.retain_deployment_config {
        rt.record.deployment_config = input.deployment_config;
    }
    if let Err(e) = app
        .store
        .put(Kind::Endpoint, &rt.record.name, rt.record.creation_time, &rt.record)
    {
        rt.record = before;
        return Err(e.into());
    }
    let arn = rt.record.arn.clone();
    drop(rt);
    h.notify.notify_one();
    Ok(json!({ "EndpointArn": arn }))
}

/// `MaximumBatchSize` of a rolling update.
enum BatchSize {
    Count(u32),
    Percent(u32),
}

impl BatchSize {
    fn resolve(&self, fleet: u32) -> u32 {
        match self {
            BatchSize::Count(n) => *n,
            BatchSize::Percent(p) => ((fleet as f64) * (*p as f64) / 100.0).ceil().max(1.0) as u32,
        }
    }
}

/// Reads `DeploymentConfig`: `Some((batch, wait))` for a rolling update, `None` for blue/green.
fn rolling_policy(dc: Option<&Value>) -> Result<Option<(BatchSize, f64)>, ApiError> {
    let Some(dc) = dc else { return Ok(None) };
    let rolling = dc.get("RollingUpdatePolicy").filter(|v| !v.is_null());
    if rolling.is_some() && dc.get("BlueGreenUpdatePolicy").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::validation(
            "DeploymentConfig: BlueGreenUpdatePolicy and RollingUpdatePolicy are mutually exclusive",
        ));
    }
    let Some(r) = rolling else { return Ok(None) };
    const AT: &str = "DeploymentConfig.RollingUpdatePolicy";
    let size = r
        .get("MaximumBatchSize")
        .ok_or_else(|| ValidationError::missing(&format!("{AT}.MaximumBatchSize")))?;
    let value = size
        .get("Value")
        .and_then(Value::as_i64)
        .ok_or_else(|| ValidationError::missing(&format!("{AT}.MaximumBatchSize.Value")))?;
    let batch = match size.get("Type").and_then(Value::as_str) {
        Some("INSTANCE_COUNT") if value >= 1 => BatchSize::Count(value as u32),
        Some("CAPACITY_PERCENT") if (1..=100).contains(&value) => BatchSize::Percent(value as u32),
        Some(t @ ("INSTANCE_COUNT" | "CAPACITY_PERCENT")) => {
            return Err(ValidationError::constraint(
                value,
                &format!("{AT}.MaximumBatchSize.Value"),
                &format!("out of range for {t}"),
            )
            .into());
        }
        other => {
            return Err(ValidationError::constraint(
                other.unwrap_or("null"),
                &format!("{AT}.MaximumBatchSize.Type"),
                "Member must satisfy enum value set: [INSTANCE_COUNT, CAPACITY_PERCENT]",
            )
            .into());
        }
    };
    let wait = r
        .get("WaitIntervalInSeconds")
        .and_then(Value::as_i64)
        .ok_or_else(|| ValidationError::missing(&format!("{AT}.WaitIntervalInSeconds")))?;
    if !(0..=3600).contains(&wait) {
        return Err(ValidationError::constraint(
            wait,
            &format!("{AT}.WaitIntervalInSeconds"),
            "Member must have value between 0 and 3600",
        )
        .into());
    }
    Ok(Some((batch, wait as f64)))
}

async fn delete_endpoint(app: &Arc<App>, input: EndpointNameInput) -> Result<Value, ApiError> {
    let h = app
        .endpoint(&input.endpoint_name)
        .ok_or_else(|| not_found_endpoint(app, &input.endpoint_name))?;
    let mut rt = h.state.lock().await;
    in_progress(app, &rt)?;
    let before = rt.record.clone();
    rt.record.status = EndpointStatus::Deleting;
    rt.record.operation = None;
    rt.record.last_modified_time = app.clock.now();
    if let Err(e) = app
        .store
        .put(Kind::Endpoint, &rt.record.name, rt.record.creation_time, &rt.record)
    {
        rt.record = before;
        return Err(e.into());
    }
    drop(rt);
    app.routes.remove(&input.endpoint_name);
    h.notify.notify_one();
    Ok(json!({}))
}

async fn list_endpoints(app: &Arc<App>, input: ListInput) -> Result<Value, ApiError> {
    if let Some(s) = &input.status_equals
        && EndpointStatus::parse(s).is_none()
    {
        return Err(ValidationError::constraint(s, "StatusEquals", "Member must satisfy enum value set: [OutOfService, Creating, Updating, SystemUpdating, RollingBack, InService, Deleting, Failed, UpdateRollbackFailed]").into());
    }
    let mut rows = vec![];
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        let r = &rt.record;
        rows.push(Row {
            summary: json!({
                "EndpointName": r.name,
                "EndpointArn": r.arn,
                "CreationTime": r.creation_time,
                "LastModifiedTime": r.last_modified_time,
                "EndpointStatus": r.status.as_str(),
            }),
            name: r.name.clone(),
            created: r.creation_time,
            modified: r.last_modified_time,
            status: r.status.as_str(),
        });
    }
    list_page(&input, rows, &["Name", "CreationTime", "Status"], "Endpoints")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateWeightsInput {
    endpoint_name: String,
    desired_weights_and_capacities: Vec<DesiredWeightAndCapacity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DesiredWeightAndCapacity {
    variant_name: String,
    desired_weight: Option<f64>,
    desired_instance_count: Option<i64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

async fn update_weights_and_capacities(app: &Arc<App>, input: UpdateWeightsInput) -> Result<Value, ApiError> {
    let items = &input.desired_weights_and_capacities;
    if items.is_empty() || items.len() > 10 {
        return Err(ValidationError::constraint(
            items.len(),
            "DesiredWeightsAndCapacities",
            "Member must have length between 1 and 10",
        )
        .into());
    }
    for (i, d) in items.iter().enumerate() {
        let at = format!("DesiredWeightsAndCapacities.{}", i + 1);
        validate::name(&d.variant_name, &format!("{at}.VariantName"))?;
        if d.other.contains_key("ServerlessUpdateConfig") {
            return Err(ApiError::validation(format!(
                "{at}.ServerlessUpdateConfig is not supported by spillway"
            )));
        }
        if let Some(w) = d.desired_weight
            && !(w.is_finite() && w >= 0.0)
        {
            return Err(ValidationError::constraint(
                w,
                &format!("{at}.DesiredWeight"),
                "Member must have value greater than or equal to 0",
            )
            .into());
        }
        if let Some(c) = d.desired_instance_count
            && !(1..=1000).contains(&c)
        {
            return Err(ValidationError::constraint(
                c,
                &format!("{at}.DesiredInstanceCount"),
                "Member must have value between 1 and 1000 (spillway does not scale instance-based variants to zero)",
            )
            .into());
        }
        if d.desired_weight.is_none() && d.desired_instance_count.is_none() {
            return Err(ApiError::validation(format!(
                "{at}: specify DesiredWeight, DesiredInstanceCount or both"
            )));
        }
    }
    let changes: Vec<VariantChange> = items
        .iter()
        .map(|d| VariantChange {
            variant: d.variant_name.clone(),
            weight: d.desired_weight,
            count: d.desired_instance_count.map(|c| c as u32),
        })
        .collect();
    let arn = apply_variant_changes(app, &input.endpoint_name, &changes).await?;
    Ok(json!({ "EndpointArn": arn }))
}

/// A change of one variant's desired weight and/or instance count.
#[derive(Debug, Clone)]
pub struct VariantChange {
    /// Variant name.
    pub variant: String,
    /// New weight.
    pub weight: Option<f64>,
    /// New instance count.
    pub count: Option<u32>,
}

/// Applies desired weights and counts to an endpoint (UpdateEndpointWeightsAndCapacities and the
/// autoscaler): refused while an operation is in flight; the endpoint goes `Updating` and its
/// controller provisions through the pools or scales in, fallback first. Returns the ARN.
pub async fn apply_variant_changes(
    app: &Arc<App>,
    endpoint: &str,
    changes: &[VariantChange],
) -> Result<String, ApiError> {
    let h = app
        .endpoint(endpoint)
        .ok_or_else(|| not_found_endpoint(app, endpoint))?;
    let mut rt = h.state.lock().await;
    in_progress(app, &rt)?;
    if rt.record.status == EndpointStatus::Failed {
        return Err(ApiError::validation(format!(
            "Cannot update failed endpoint \"{}\".",
            rt.record.arn
        )));
    }
    let missing: Vec<&str> = changes
        .iter()
        .filter(|d| !rt.record.active.variants.iter().any(|v| v.spec.name == d.variant))
        .map(|d| d.variant.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::validation(format!(
            "DesiredWeightsAndCapacities.VariantName: the variant(s) \"[{}]\" are not present in endpoint \"{}\".",
            missing.join(", "),
            rt.record.arn
        )));
    }
    let before = rt.record.clone();
    let t = app.clock.now();
    for d in changes {
        let v = rt
            .record
            .active
            .variants
            .iter_mut()
            .find(|v| v.spec.name == d.variant)
            .expect("checked above");
        if let Some(w) = d.weight {
            v.desired_weight = w;
        }
        if let Some(c) = d.count {
            v.desired_count = c;
            v.stalled = None;
            v.health_failures = 0;
            v.provisioning.finish();
        }
    }
    rt.record.status = EndpointStatus::Updating;
    rt.record.operation = Some(Operation::Scale);
    rt.record.last_modified_time = t;
    if let Err(e) = app
        .store
        .put(Kind::Endpoint, &rt.record.name, rt.record.creation_time, &rt.record)
    {
        rt.record = before;
        return Err(e.into());
    }
    let arn = rt.record.arn.clone();
    drop(rt);
    h.notify.notify_one();
    Ok(arn)
}

// ---------------------------------------------------------------------------------------------
// Tags

/// Checks that an ARN names an existing resource of this server.
async fn resolve_arn(app: &Arc<App>, arn: &str) -> Result<(), ApiError> {
    let prefix = format!("arn:aws:sagemaker:{}:{}:", app.cfg.region, app.cfg.account_id);
    let unknown = || ApiError::validation(format!("ResourceArn: resource \"{arn}\" does not exist"));
    let rest = arn.strip_prefix(&prefix).ok_or_else(|| {
        ApiError::validation(format!(
            "ResourceArn \"{arn}\" is not an ARN of this server (expected {prefix}<model|endpoint-config|endpoint>/<name>)"
        ))
    })?;
    let (kind, name) = rest.split_once('/').ok_or_else(unknown)?;
    let exists = match kind {
        "model" => app.store.list::<Model>(Kind::Model)?.iter().any(|m| m.model_arn == arn),
        "endpoint-config" => app
            .store
            .list::<EndpointConfig>(Kind::EndpointConfig)?
            .iter()
            .any(|c| c.endpoint_config_arn == arn),
        "endpoint" => {
            let mut found = false;
            for h in app.all_endpoints() {
                let rt = h.state.lock().await;
                found |= !rt.deleted && rt.record.arn == arn && !name.is_empty();
            }
            found
        }
        _ => false,
    };
    if exists { Ok(()) } else { Err(unknown()) }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddTagsInput {
    resource_arn: String,
    tags: Vec<Tag>,
}

async fn add_tags(app: &Arc<App>, input: AddTagsInput) -> Result<Value, ApiError> {
    check_tags(&input.tags, "Tags")?;
    resolve_arn(app, &input.resource_arn).await?;
    app.store.add_tags(&input.resource_arn, &input.tags)?;
    Ok(json!({ "Tags": input.tags }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagsInput {
    resource_arn: String,
    max_results: Option<i64>,
    next_token: Option<String>,
}

async fn list_tags(app: &Arc<App>, input: ListTagsInput) -> Result<Value, ApiError> {
    resolve_arn(app, &input.resource_arn).await?;
    let tags = app.store.tags(&input.resource_arn)?;
    let max = match input.max_results {
        None => 50,
        Some(m) if m >= 50 => m as usize,
        Some(m) => {
            return Err(ValidationError::constraint(
                m,
                "MaxResults",
                "Member must have value greater than or equal to 50",
            )
            .into());
        }
    };
    let start = match &input.next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= tags.len())
            .ok_or_else(|| ApiError::validation(format!("NextToken '{t}' is not a token this list returned")))?,
    };
    let end = (start + max).min(tags.len());
    let mut out = json!({ "Tags": &tags[start..end] });
    if end < tags.len() {
        out["NextToken"] = json!(end.to_string());
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteTagsInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

async fn delete_tags(app: &Arc<App>, input: DeleteTagsInput) -> Result<Value, ApiError> {
    if input.tag_keys.is_empty() || input.tag_keys.len() > 50 {
        return Err(ValidationError::constraint(
            input.tag_keys.len(),
            "TagKeys",
            "Member must have length between 1 and 50",
        )
        .into());
    }
    resolve_arn(app, &input.resource_arn).await?;
    app.store.delete_tags(&input.resource_arn, &input.tag_keys)?;
    Ok(json!({}))
}
