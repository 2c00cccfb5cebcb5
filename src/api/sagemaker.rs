//! SageMaker control-plane operations (awsJson1_1, `X-Amz-Target: SageMaker.<Op>`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::components::{
    self, ComponentNameInput, CreateInferenceComponentInput, ListComponentsInput, UpdateInferenceComponentInput,
    UpdateRuntimeConfigInput,
};
use super::ops::Resource;
use super::pagination;
use crate::control::app::{App, EndpointRuntime};
use crate::control::{self, BatchSize, Command, Document, Outcome, UpdateEndpoint, VariantChange};
use crate::core::endpoint::Deployment;
use crate::core::model::{ContainerDefinition, EndpointConfig, Model, ProductionVariant, Tag, Timestamp};
use crate::core::planner::{InstancePhase, Operation};
use crate::core::{catalog, validate};
use crate::error::ApiError;

crate::operations! {
    /// The SageMaker control-plane operations spillway implements, in the order
    /// `docs/api-compat.md` lists them, with the resource each acts on.
    pub(crate) enum SageMakerOp: "sagemaker" {
        CreateModel(CreateModelInput) => arn |i, a| a.resource("model", &i.model_name),
        DescribeModel(ModelNameInput) => arn |i, a| a.resource("model", &i.model_name),
        DeleteModel(ModelNameInput) => arn |i, a| a.resource("model", &i.model_name),
        ListModels(ListInput) => any,
        CreateEndpointConfig(CreateEndpointConfigInput) => arn |i, a| a.resource("endpoint-config", &i.endpoint_config_name),
        DescribeEndpointConfig(ConfigNameInput) => arn |i, a| a.resource("endpoint-config", &i.endpoint_config_name),
        DeleteEndpointConfig(ConfigNameInput) => arn |i, a| a.resource("endpoint-config", &i.endpoint_config_name),
        ListEndpointConfigs(ListInput) => any,
        CreateEndpoint(CreateEndpointInput) => arn |i, a| a.resource("endpoint", &i.endpoint_name),
        DescribeEndpoint(EndpointNameInput) => arn |i, a| a.resource("endpoint", &i.endpoint_name),
        UpdateEndpoint(UpdateEndpointInput) => arn |i, a| a.resource("endpoint", &i.endpoint_name),
        DeleteEndpoint(EndpointNameInput) => arn |i, a| a.resource("endpoint", &i.endpoint_name),
        ListEndpoints(ListInput) => any,
        UpdateEndpointWeightsAndCapacities(UpdateWeightsInput) => arn |i, a| a.resource("endpoint", &i.endpoint_name),
        AddTags(AddTagsInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
        ListTags(ListTagsInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
        DeleteTags(DeleteTagsInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
        CreateInferenceComponent(Box<CreateInferenceComponentInput>) => arn |i, a| a.resource("inference-component", &i.inference_component_name),
        DescribeInferenceComponent(ComponentNameInput) => arn |i, a| a.resource("inference-component", &i.inference_component_name),
        ListInferenceComponents(ListComponentsInput) => any,
        UpdateInferenceComponent(Box<UpdateInferenceComponentInput>) => arn |i, a| a.resource("inference-component", &i.inference_component_name),
        UpdateInferenceComponentRuntimeConfig(UpdateRuntimeConfigInput) => arn |i, a| a.resource("inference-component", &i.inference_component_name),
        DeleteInferenceComponent(ComponentNameInput) => arn |i, a| a.resource("inference-component", &i.inference_component_name),
    }
}

/// The condition keys of SageMaker requests: the tags a create or `AddTags` brings
/// (`aws:RequestTag/<key>`, `aws:TagKeys`), the keys `DeleteTags` removes (`aws:TagKeys`), and
/// every instance type a new configuration's variants name, in `InstanceType` and
/// `InstancePools` (`sagemaker:InstanceTypes`).
impl super::ops::Conditions for SageMakerOp {
    fn also_on(&self, arns: &super::ops::Arns) -> Vec<Resource> {
        match self {
            SageMakerOp::CreateEndpoint(i) => vec![arns.resource("endpoint-config", &i.endpoint_config_name)],
            SageMakerOp::UpdateEndpoint(i) => vec![arns.resource("endpoint-config", &i.endpoint_config_name)],
            SageMakerOp::CreateInferenceComponent(i) => vec![arns.resource("endpoint", &i.endpoint_name)],
            _ => vec![],
        }
    }

    fn request_conditions(&self, ctx: &mut crate::core::policy::Context) {
        let pairs = |tags: &'_ [Tag]| -> Vec<(String, String)> {
            tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
        };
        let tags = match self {
            SageMakerOp::CreateModel(i) => pairs(&i.tags),
            SageMakerOp::CreateEndpoint(i) => pairs(&i.tags),
            SageMakerOp::AddTags(i) => pairs(&i.tags),
            SageMakerOp::CreateInferenceComponent(i) => pairs(&i.tags),
            SageMakerOp::CreateEndpointConfig(i) => {
                let types: Vec<&str> = i
                    .production_variants
                    .iter()
                    .flat_map(|v| {
                        v.instance_type
                            .iter()
                            .map(String::as_str)
                            .chain(v.instance_pools.iter().flatten().map(|p| p.instance_type.as_str()))
                    })
                    .collect();
                ctx.insert("sagemaker:InstanceTypes", types);
                pairs(&i.tags)
            }
            SageMakerOp::DeleteTags(i) => {
                ctx.insert("aws:TagKeys", i.tag_keys.iter().map(String::as_str));
                return;
            }
            _ => return,
        };
        super::ops::tag_conditions(ctx, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
}

/// Runs one operation.
pub(crate) async fn dispatch(app: &Arc<App>, op: SageMakerOp) -> Result<Value, ApiError> {
    use SageMakerOp as Op;
    match op {
        Op::CreateModel(i) => create_model(app, i).await,
        Op::DescribeModel(i) => describe::<Model>(app, &i.model_name),
        Op::DeleteModel(i) => delete::<Model>(app, i.model_name).await,
        Op::ListModels(i) => list::<Model>(app, &i),
        Op::CreateEndpointConfig(i) => create_endpoint_config(app, i).await,
        Op::DescribeEndpointConfig(i) => describe::<EndpointConfig>(app, &i.endpoint_config_name),
        Op::DeleteEndpointConfig(i) => delete::<EndpointConfig>(app, i.endpoint_config_name).await,
        Op::ListEndpointConfigs(i) => list::<EndpointConfig>(app, &i),
        Op::CreateEndpoint(i) => create_endpoint(app, i).await,
        Op::DescribeEndpoint(i) => describe_endpoint(app, i).await,
        Op::UpdateEndpoint(i) => update_endpoint(app, i).await,
        Op::DeleteEndpoint(i) => delete_endpoint(app, i).await,
        Op::ListEndpoints(i) => list_endpoints(app, i).await,
        Op::UpdateEndpointWeightsAndCapacities(i) => update_weights_and_capacities(app, i).await,
        Op::AddTags(i) => add_tags(app, i).await,
        Op::ListTags(i) => list_tags(app, i).await,
        Op::DeleteTags(i) => delete_tags(app, i).await,
        Op::CreateInferenceComponent(i) => components::create(app, *i).await,
        Op::DescribeInferenceComponent(i) => components::describe(app, i).await,
        Op::ListInferenceComponents(i) => components::list(app, i).await,
        Op::UpdateInferenceComponent(i) => components::update(app, *i).await,
        Op::UpdateInferenceComponentRuntimeConfig(i) => components::update_runtime_config(app, i).await,
        Op::DeleteInferenceComponent(i) => components::delete(app, i).await,
    }
}

/// Parses and runs the operation `name` in process (the demo, tests): what `POST /` does
/// with `X-Amz-Target: SageMaker.<name>`, without HTTP.
pub async fn call(app: &Arc<App>, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    let op = SageMakerOp::parse(name, body).ok_or_else(|| {
        ApiError::unknown_operation(format!("The SageMaker operation {name} is not supported by spillway"))
    })??;
    dispatch(app, op).await
}

/// Applies a command and answers `{ "<key>": <ARN> }`, or `{}` when no key is given.
pub(super) async fn command(app: &Arc<App>, command: Command, key: Option<&str>) -> Result<Value, ApiError> {
    let outcome = control::apply(app, command).await?;
    Ok(match (key, outcome) {
        (Some(key), Outcome::Arn(arn)) => json!({ key: arn }),
        _ => json!({}),
    })
}

/// spillway's rules for the tags of a request (their number, lengths and characters are the
/// model's): keys beginning with `aws:` are reserved, and a key may be given once, since one of
/// two values would be lost.
pub(super) fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for (i, t) in tags.iter().enumerate() {
        let at = format!("Tags.{}.Key", i + 1);
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::validation(format!(
                "{at}: keys beginning with 'aws:' are reserved"
            )));
        }
        if t.key == crate::core::planner::COST_CEILING_TAG
            && let Err(e) = crate::core::planner::parse_cost_ceiling(&t.value)
        {
            return Err(ApiError::validation(format!("Tags.{}.Value: {e}", i + 1)));
        }
        if !seen.insert(t.key.as_str()) {
            return Err(ApiError::validation(format!(
                "{at}: the tag key '{}' is given more than once; each key may appear once in a request",
                t.key
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListInput {
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
pub(super) struct Row {
    /// Its name (`NameContains`, `SortBy=Name`).
    pub(super) name: String,
    /// Created.
    pub(super) created: Timestamp,
    /// Last modified.
    pub(super) modified: Timestamp,
    /// Status (`StatusEquals`, `SortBy=Status`).
    pub(super) status: &'static str,
    /// What the list shows of it.
    pub(super) summary: Value,
}

/// One page of a `List*` answer under `key`: filtered, sorted (`SortBy`, `SortOrder` and
/// `NameContains` were checked against the model's enums and pattern), cut at `MaxResults`
/// (default 10) from the position a token of `operation` carries.
pub(super) fn list_page(operation: &str, input: &ListInput, mut rows: Vec<Row>, key: &str) -> Result<Value, ApiError> {
    let max = validate::max_results(input.max_results);
    let sort_by = input.sort_by.as_deref().unwrap_or("CreationTime");
    let descending = input.sort_order.as_deref() != Some("Ascending");
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
    let start = start_of(operation, input.next_token.as_deref(), rows.len())?;
    let (range, next) = pagination::page(operation, start, max, rows.len());
    let items: Vec<Value> = rows[range].iter().map(|r| r.summary.clone()).collect();
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items));
    if let Some(next) = next {
        out.insert("NextToken".into(), Value::String(next));
    }
    Ok(Value::Object(out))
}

/// Where a page starts: 0, or the position a token of `operation` carries. Any other token is
/// refused.
fn start_of(operation: &str, token: Option<&str>, len: usize) -> Result<usize, ApiError> {
    pagination::offset(operation, token, len).ok_or_else(|| {
        ApiError::validation(format!(
            "Invalid pagination token: the NextToken '{}' was not returned by {operation} (or by this server process)",
            token.unwrap_or_default()
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Models

/// spillway's rules for a container's `Image` at `at`: given, a known built-in, a command line,
/// and one the operator allows (`[models] allowed_images`).
pub(super) fn check_image(app: &App, image: Option<&str>, at: &str) -> Result<(), ApiError> {
    match image {
        None | Some("") => {
            return Err(ApiError::validation(format!(
                "{at} is required: for spillway's local provider it is the command line to run (or builtin:echo)"
            )));
        }
        Some(image) if image.starts_with("builtin:") && !crate::builtin::BUILTINS.contains(&&image[8..]) => {
            return Err(ApiError::validation(format!(
                "{at}: unknown built-in model server {image:?}; available: {}",
                crate::builtin::BUILTINS
                    .iter()
                    .map(|b| format!("builtin:{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some(image) if shlex::split(image).is_none_or(|v| v.is_empty()) => {
            return Err(ApiError::validation(format!(
                "{at} {image:?} is not a valid command line (unbalanced quotes)"
            )));
        }
        // An Image is a command line run on this host: only what the operator allows, before
        // any policy can matter.
        Some(image) if app.cfg.models.allowing(image).is_none() => {
            return Err(ApiError::validation(format!(
                "{at} {image:?} is not allowed on this server: it matches none of [models] allowed_images {:?} \
                 (an Image is a command line run on the host; the operator lists what may run)",
                app.cfg.models.allowed_images
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateModelInput {
    model_name: String,
    primary_container: Option<ContainerDefinition>,
    containers: Option<Vec<ContainerDefinition>>,
    execution_role_arn: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

async fn create_model(app: &Arc<App>, input: CreateModelInput) -> Result<Value, ApiError> {
    check_tags(&input.tags)?;
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
    check_image(app, container.image.as_deref(), "PrimaryContainer.Image")?;
    // A malformed fit declaration is refused where it is written (CreateEndpointConfig checks
    // it against the pools).
    catalog::ModelNeeds::from_environment(
        container
            .environment
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| ApiError::validation(format!("PrimaryContainer.{e}")))?;
    if let Some(url) = &container.model_data_url
        && !url.starts_with("file://")
    {
        return Err(ApiError::validation(format!(
            "PrimaryContainer.ModelDataUrl {url:?}: spillway's local provider supports file:// URLs (a directory or a .tar.gz)"
        )));
    }
    let model = Model {
        model_name: input.model_name.clone(),
        model_arn: app.arn("model", &input.model_name),
        creation_time: app.clock.now(),
        primary_container: Some(container),
        execution_role_arn: input.execution_role_arn,
        other: input.other,
    };
    command(
        app,
        Command::CreateModel {
            model,
            tags: input.tags,
        },
        Some("ModelArn"),
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModelNameInput {
    model_name: String,
}

/// A model or configuration, rendered as stored.
fn describe<T: Document>(app: &App, name: &str) -> Result<Value, ApiError> {
    let doc: T = control::document(app, name)?;
    serde_json::to_value(doc).map_err(|e| ApiError::internal(e.to_string()))
}

async fn delete<T: Document>(app: &Arc<App>, name: String) -> Result<Value, ApiError> {
    command(app, Command::DeleteDocument { kind: T::KIND, name }, None).await
}

/// A document that a `List*` operation lists.
trait Listed: Document {
    /// The summary's name and ARN members, and the list's member.
    const LIST_KEYS: (&'static str, &'static str, &'static str);
    /// The operation that lists it (its tokens are its own).
    const LIST_OPERATION: &'static str;
}

impl Listed for Model {
    const LIST_KEYS: (&'static str, &'static str, &'static str) = ("ModelName", "ModelArn", "Models");
    const LIST_OPERATION: &'static str = "ListModels";
}

impl Listed for EndpointConfig {
    const LIST_KEYS: (&'static str, &'static str, &'static str) =
        ("EndpointConfigName", "EndpointConfigArn", "EndpointConfigs");
    const LIST_OPERATION: &'static str = "ListEndpointConfigs";
}

/// `ListModels`, `ListEndpointConfigs`: name, ARN and creation time of each.
fn list<T: Listed>(app: &App, input: &ListInput) -> Result<Value, ApiError> {
    let (name_key, arn_key, list_key) = T::LIST_KEYS;
    let rows = control::documents::<T>(app)?
        .into_iter()
        .map(|d| Row {
            summary: json!({name_key: d.name(), arn_key: d.arn(), "CreationTime": d.creation_time()}),
            name: d.name().to_string(),
            created: d.creation_time(),
            modified: d.creation_time(),
            status: "",
        })
        .collect();
    list_page(T::LIST_OPERATION, input, rows, list_key)
}

// ---------------------------------------------------------------------------------------------
// Endpoint configurations

/// Top-level `CreateEndpointConfig` members that spillway refuses: accepting them would
/// promise behaviour (data capture, shadow traffic, explanations) it lacks.
const REJECTED_CONFIG_MEMBERS: &[&str] = &["DataCaptureConfig", "ShadowProductionVariants", "ExplainerConfig"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    production_variants: Vec<ProductionVariant>,
    #[serde(default)]
    tags: Vec<Tag>,
    async_inference_config: Option<crate::core::model::AsyncInferenceConfig>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

async fn create_endpoint_config(app: &Arc<App>, input: CreateEndpointConfigInput) -> Result<Value, ApiError> {
    for member in REJECTED_CONFIG_MEMBERS {
        if input.other.contains_key(*member) {
            return Err(ApiError::validation(format!(
                "{member} is not supported by spillway; see docs/api-compat.md"
            )));
        }
    }
    check_tags(&input.tags)?;
    let specs = validate::production_variants(
        &input.production_variants,
        &|n: &str| control::model_exists(app, n),
        &|n: &str| app.arn("model", n),
    )?;
    // A configuration whose variants host inference components has its own rules.
    validate::components_endpoint_config(
        &specs,
        input.other.get("ExecutionRoleArn").and_then(Value::as_str),
        input.async_inference_config.is_some(),
    )?;
    fit_check(app, &input.production_variants)?;
    if let Some(a) = &input.async_inference_config {
        validate::async_inference_config(a)?;
    }
    let config = EndpointConfig {
        async_inference_config: input.async_inference_config,
        endpoint_config_arn: app.arn("endpoint-config", &input.endpoint_config_name),
        endpoint_config_name: input.endpoint_config_name,
        production_variants: input.production_variants,
        creation_time: app.clock.now(),
        other: input.other,
    };
    let tags = input.tags;
    command(
        app,
        Command::CreateEndpointConfig { config, tags },
        Some("EndpointConfigArn"),
    )
    .await
}

/// The fit check: every pool (an `InstancePools` entry, or the variant's `InstanceType`) whose
/// catalog type cannot hold what its model declares (`SPILLWAY_MIN_ACCELERATORS`,
/// `SPILLWAY_MIN_ACCELERATOR_MEMORY_GB` in the model's `Environment`, `ModelNameOverride`
/// models per pool) is refused, each named with the numbers, so a fallback can never land
/// where the model does not fit.
fn fit_check(app: &App, variants: &[crate::core::model::ProductionVariant]) -> Result<(), ApiError> {
    let mut refused = vec![];
    for v in variants {
        let pools: Vec<(i64, &str, Option<&str>)> = match (&v.instance_pools, &v.instance_type) {
            (Some(pools), _) => pools
                .iter()
                .map(|p| (p.priority, p.instance_type.as_str(), p.model_name_override.as_deref()))
                .collect(),
            (None, Some(t)) => vec![(1, t.as_str(), None)],
            (None, None) => vec![],
        };
        for (priority, ty, model_override) in pools {
            let Some(model) = model_override.or(v.model_name.as_deref()) else {
                continue;
            };
            let env = control::model_environment(app, model)?;
            let needs = catalog::ModelNeeds::from_environment(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| ApiError::validation(format!("Model {model}: {e}")))?;
            let Some(spec) = catalog::lookup(ty) else { continue };
            if let Some(why) = needs.shortfall(spec) {
                let pool = if v.instance_pools.is_some() {
                    format!("instance pool priority {priority} ({ty})")
                } else {
                    format!("InstanceType {ty}")
                };
                refused.push(format!(
                    "production variant {}: {pool} cannot hold model {model}: {why}",
                    v.variant_name
                ));
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(ApiError::validation(format!(
        "The fit check refused {} instance pool{}: {}. Remove the pool or change the model's declaration \
         (docs/api-compat.md, \"Fit check\").",
        refused.len(),
        if refused.len() == 1 { "" } else { "s" },
        refused.join("; ")
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ConfigNameInput {
    endpoint_config_name: String,
}

// ---------------------------------------------------------------------------------------------
// Endpoints

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
    deployment_config: Option<Value>,
    #[serde(default)]
    tags: Vec<Tag>,
}

async fn create_endpoint(app: &Arc<App>, input: CreateEndpointInput) -> Result<Value, ApiError> {
    check_tags(&input.tags)?;
    let cmd = Command::CreateEndpoint {
        name: input.endpoint_name,
        config_name: input.endpoint_config_name,
        deployment_config: input.deployment_config,
        tags: input.tags,
    };
    command(app, cmd, Some("EndpointArn")).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EndpointNameInput {
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
            if let Some(ms) = v.spec.managed_scaling {
                s.insert(
                    "ManagedInstanceScaling".into(),
                    json!({ "Status": "ENABLED", "MinInstanceCount": ms.min, "MaxInstanceCount": ms.max }),
                );
            }
            Value::Object(s)
        })
        .collect()
}

fn describe_endpoint_view(rt: &EndpointRuntime) -> Value {
    let r = &rt.record;
    let variant_status = match r.operation() {
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
    out.insert("EndpointStatus".into(), json!(r.status().as_str()));
    if let Some(f) = &r.failure_reason {
        out.insert("FailureReason".into(), json!(f));
    }
    out.insert("CreationTime".into(), json!(r.creation_time));
    out.insert("LastModifiedTime".into(), json!(r.last_modified_time));
    if let Some(dc) = &r.deployment_config {
        out.insert("LastDeploymentConfig".into(), dc.clone());
    }
    if let Some(a) = &r.active.async_config {
        out.insert("AsyncInferenceConfig".into(), json!(a));
    }
    let pending = match r.operation() {
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
    Ok(describe_endpoint_view(
        &control::endpoint(app, &input.endpoint_name).await?,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateEndpointInput {
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
pub(crate) struct VariantPropertyInput {
    variant_property_type: String,
}

async fn update_endpoint(app: &Arc<App>, input: UpdateEndpointInput) -> Result<Value, ApiError> {
    control::require_endpoint(app, &input.endpoint_name).await?;
    // Each is one of the model's enum: DesiredInstanceCount, DesiredWeight, DataCaptureConfig.
    let excluded = input
        .exclude_retained_variant_properties
        .iter()
        .map(|p| p.variant_property_type.clone())
        .collect();
    let update = UpdateEndpoint {
        rolling: rolling_policy(input.deployment_config.as_ref())?,
        name: input.endpoint_name,
        config_name: input.endpoint_config_name,
        retain_all_variant_properties: input.retain_all_variant_properties,
        excluded,
        deployment_config: input.deployment_config,
        retain_deployment_config: input.retain_deployment_config,
    };
    command(app, Command::UpdateEndpoint(update), Some("EndpointArn")).await
}

/// Reads `DeploymentConfig` (its members' presence, types, enum and ranges are the model's):
/// `Some((batch, wait))` for a rolling update, `None` for blue/green.
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
    let size = &r["MaximumBatchSize"];
    let value = size["Value"].as_i64().unwrap_or(1).max(1);
    let batch = match size["Type"].as_str() {
        Some("CAPACITY_PERCENT") if value > 100 => {
            return Err(ApiError::validation(format!(
                "{AT}.MaximumBatchSize.Value: a CAPACITY_PERCENT batch is at most 100 (got {value})"
            )));
        }
        Some("CAPACITY_PERCENT") => BatchSize::Percent(value as u32),
        _ => BatchSize::Count(u32::try_from(value).unwrap_or(u32::MAX)),
    };
    let wait = r["WaitIntervalInSeconds"].as_i64().unwrap_or(0).clamp(0, 3600);
    Ok(Some((batch, wait as f64)))
}

async fn delete_endpoint(app: &Arc<App>, input: EndpointNameInput) -> Result<Value, ApiError> {
    command(
        app,
        Command::DeleteEndpoint {
            name: input.endpoint_name,
        },
        None,
    )
    .await
}

async fn list_endpoints(app: &Arc<App>, input: ListInput) -> Result<Value, ApiError> {
    let rows = control::endpoints(app)
        .await
        .into_iter()
        .map(|r| Row {
            summary: json!({
                "EndpointName": r.name,
                "EndpointArn": r.arn,
                "CreationTime": r.creation_time,
                "LastModifiedTime": r.last_modified_time,
                "EndpointStatus": r.status().as_str(),
            }),
            name: r.name.clone(),
            created: r.creation_time,
            modified: r.last_modified_time,
            status: r.status().as_str(),
        })
        .collect();
    list_page("ListEndpoints", &input, rows, "Endpoints")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateWeightsInput {
    endpoint_name: String,
    desired_weights_and_capacities: Vec<DesiredWeightAndCapacity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DesiredWeightAndCapacity {
    variant_name: String,
    desired_weight: Option<f64>,
    desired_instance_count: Option<i64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

async fn update_weights_and_capacities(app: &Arc<App>, input: UpdateWeightsInput) -> Result<Value, ApiError> {
    let items = &input.desired_weights_and_capacities;
    let mut seen = std::collections::HashSet::new();
    for (i, d) in items.iter().enumerate() {
        let at = format!("DesiredWeightsAndCapacities.{}", i + 1);
        if d.other.contains_key("ServerlessUpdateConfig") {
            return Err(ApiError::validation(format!(
                "{at}.ServerlessUpdateConfig is not supported by spillway"
            )));
        }
        if !seen.insert(d.variant_name.to_ascii_lowercase()) {
            return Err(ApiError::validation(format!(
                "{at}.VariantName: the variant '{}' is named more than once; each variant may appear once in DesiredWeightsAndCapacities",
                d.variant_name
            )));
        }
        // 0 only for an asynchronous endpoint (`control::set_variants` checks which it is).
        if let Some(c) = d.desired_instance_count
            && !(0..=1000).contains(&c)
        {
            return Err(ApiError::validation(format!(
                "{at}.DesiredInstanceCount: {c} is outside 0 to 1000 (0 only for an asynchronous endpoint)"
            )));
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
    let cmd = Command::SetVariants {
        endpoint: input.endpoint_name,
        changes,
    };
    command(app, cmd, Some("EndpointArn")).await
}

// ---------------------------------------------------------------------------------------------
// Tags

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AddTagsInput {
    resource_arn: String,
    tags: Vec<Tag>,
}

async fn add_tags(app: &Arc<App>, input: AddTagsInput) -> Result<Value, ApiError> {
    check_tags(&input.tags)?;
    let tags = input.tags.clone();
    control::apply(
        app,
        Command::AddTags {
            arn: input.resource_arn,
            tags,
        },
    )
    .await?;
    Ok(json!({ "Tags": input.tags }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListTagsInput {
    resource_arn: String,
    max_results: Option<i64>,
    next_token: Option<String>,
}

async fn list_tags(app: &Arc<App>, input: ListTagsInput) -> Result<Value, ApiError> {
    let tags = control::tags(app, &input.resource_arn).await?;
    // The model: at least 50; AWS's default page is 50.
    let max = input
        .max_results
        .map_or(50, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let start = start_of("ListTags", input.next_token.as_deref(), tags.len())?;
    let (range, next) = pagination::page("ListTags", start, max, tags.len());
    let mut out = json!({ "Tags": &tags[range] });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteTagsInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

async fn delete_tags(app: &Arc<App>, input: DeleteTagsInput) -> Result<Value, ApiError> {
    let cmd = Command::DeleteTags {
        arn: input.resource_arn,
        keys: input.tag_keys,
    };
    command(app, cmd, None).await
}
