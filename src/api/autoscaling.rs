//! Application Auto Scaling (awsJson1_1, `X-Amz-Target: AnyScaleFrontendService.<Op>`) for
//! SageMaker variants (`ResourceId = endpoint/<name>/variant/<variant>`,
//! `ScalableDimension = sagemaker:variant:DesiredInstanceCount`) and inference components
//! (`ResourceId = inference-component/<name>`,
//! `ScalableDimension = sagemaker:inference-component:DesiredCopyCount`): target-tracking and
//! step-scaling policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::pagination;
use crate::api::ops::Resource;
use crate::control::app::App;
use crate::control::autoscaler::{self, ScalableTarget, ScalingPolicy};
use crate::control::{self, Command};
use crate::core::model::Tag;
use crate::core::validate::ValidationError;
use crate::error::{ApiError, ErrorCode};

pub use crate::control::autoscaler::{COMPONENT_DIMENSION, DIMENSION};
use crate::telemetry::metrics::COMPONENT_SERIES;

/// The `X-Amz-Target` service prefix of Application Auto Scaling.
pub const TARGET_PREFIX: &str = "AnyScaleFrontendService";

crate::operations! {
    /// The Application Auto Scaling operations spillway implements. AWS authorizes the ones
    /// that act on a target against the target's ARN, a random id known only after
    /// registration; spillway authorizes all of them on `*`, as real policies for them do.
    pub(crate) enum AutoScalingOp: "application-autoscaling" {
        RegisterScalableTarget(RegisterInput) => any,
        DescribeScalableTargets(DescribeTargetsInput) => any,
        DeregisterScalableTarget(TargetKeyInput) => any,
        PutScalingPolicy(PutPolicyInput) => any,
        DescribeScalingPolicies(DescribePoliciesInput) => any,
        DeleteScalingPolicy(DeletePolicyInput) => any,
        DescribeScalingActivities(DescribeActivitiesInput) => any,
        TagResource(TagResourceInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
        UntagResource(UntagResourceInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
        ListTagsForResource(ListTagsInput) => arn |i, _a| Resource::Arn(i.resource_arn.clone()),
    }
}

/// The tags `RegisterScalableTarget` and `TagResource` bring (`aws:RequestTag/<key>`,
/// `aws:TagKeys`), and the keys `UntagResource` removes (`aws:TagKeys`).
impl super::ops::Conditions for AutoScalingOp {
    fn request_conditions(&self, ctx: &mut crate::core::policy::Context) {
        let tags = match self {
            AutoScalingOp::RegisterScalableTarget(i) => i.tags.as_ref(),
            AutoScalingOp::TagResource(i) => Some(&i.tags),
            AutoScalingOp::UntagResource(i) => {
                ctx.insert("aws:TagKeys", i.tag_keys.iter().map(String::as_str));
                return;
            }
            _ => None,
        };
        if let Some(tags) = tags {
            super::ops::tag_conditions(ctx, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
    }
}

/// Parses and runs the operation `name` in process (tests): what `POST /` does with
/// `X-Amz-Target: AnyScaleFrontendService.<name>`, without HTTP.
pub async fn call(app: &Arc<App>, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    let op = AutoScalingOp::parse(name, body).ok_or_else(|| {
        ApiError::unknown_operation(format!(
            "The Application Auto Scaling operation {name} is not supported by spillway"
        ))
    })??;
    dispatch(app, op).await
}

/// Runs one operation.
pub(crate) async fn dispatch(app: &Arc<App>, op: AutoScalingOp) -> Result<Value, ApiError> {
    use AutoScalingOp as Op;
    match op {
        Op::RegisterScalableTarget(i) => register(app, i).await,
        Op::DescribeScalableTargets(i) => describe_targets(app, i),
        Op::DeregisterScalableTarget(i) => deregister(app, i).await,
        Op::PutScalingPolicy(i) => put_policy(app, i).await,
        Op::DescribeScalingPolicies(i) => describe_policies(app, i),
        Op::DeleteScalingPolicy(i) => delete_policy(app, i).await,
        Op::DescribeScalingActivities(i) => describe_activities(app, i),
        Op::TagResource(i) => tag_resource(app, i).await,
        Op::UntagResource(i) => untag_resource(app, i).await,
        Op::ListTagsForResource(i) => list_tags(app, i),
    }
}

/// What a target scales.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scaled {
    /// A variant's instances: (endpoint, variant).
    Variant(String, String),
    /// An inference component's copies.
    Component(String),
}

/// spillway's rules for a target (the model checked that namespace and dimension are among
/// AWS's): the SageMaker namespace, and a dimension with its resource id: a variant's
/// `endpoint/<endpoint>/variant/<variant>` with `sagemaker:variant:DesiredInstanceCount`, an
/// inference component's `inference-component/<name>` with
/// `sagemaker:inference-component:DesiredCopyCount`.
fn check_resource(namespace: &str, resource_id: &str, dimension: &str) -> Result<Scaled, ApiError> {
    check_namespace(namespace)?;
    let scaled = match crate::control::autoscaler::scaled_of(resource_id) {
        Some((e, c)) if e == COMPONENT_SERIES => Scaled::Component(c),
        Some((e, v)) => Scaled::Variant(e, v),
        None => {
            return Err(ApiError::validation(format!(
                "ResourceId '{resource_id}' must have the form endpoint/<endpoint name>/variant/<variant name> or inference-component/<inference component name>"
            )));
        }
    };
    let wanted = match scaled {
        Scaled::Variant(..) => DIMENSION,
        Scaled::Component(_) => COMPONENT_DIMENSION,
    };
    if dimension != wanted {
        let supported = if [DIMENSION, COMPONENT_DIMENSION].contains(&dimension) {
            String::new()
        } else {
            format!("ScalableDimension {dimension} is not supported by spillway. ")
        };
        return Err(ApiError::validation(format!(
            "{supported}ResourceId '{resource_id}' is scaled by ScalableDimension {wanted}, not {dimension}"
        )));
    }
    Ok(scaled)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterInput {
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    min_capacity: Option<i64>,
    max_capacity: Option<i64>,
    #[serde(rename = "RoleARN")]
    role_arn: Option<String>,
    suspended_state: Option<Value>,
    /// Taken when the target is registered; ignored when it is updated (as AWS: tag an existing
    /// target with `TagResource`).
    tags: Option<BTreeMap<String, String>>,
}

async fn register(app: &Arc<App>, input: RegisterInput) -> Result<Value, ApiError> {
    let scaled = check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    // Whether the target may scale to zero: an asynchronous endpoint's variant (its queue holds
    // the requests), or an inference component (AWS's scale-to-zero of copies).
    let may_reach_zero = match &scaled {
        Scaled::Variant(endpoint, variant) => {
            let Ok(found) = control::endpoint(app, endpoint).await else {
                return Err(ApiError::validation(format!(
                    "ResourceId: endpoint {endpoint} does not exist (Could not find endpoint \"{}\".)",
                    app.arn("endpoint", endpoint)
                )));
            };
            if !found.record.active.variants.iter().any(|v| v.spec.name == *variant) {
                return Err(ApiError::validation(format!(
                    "ResourceId: endpoint {endpoint} has no variant {variant}"
                )));
            }
            found.record.active.async_config.is_some()
        }
        Scaled::Component(name) => {
            // As for an endpoint: AWS's "Could not find" wording inside a ValidationException.
            if let Err(e) = crate::control::components::component(app, name) {
                return Err(ApiError::validation(format!(
                    "ResourceId: inference component {name} does not exist ({e})"
                )));
            }
            true
        }
    };
    // The model leaves capacities unbounded; AWS refuses negative ones, spillway also those
    // over 1000 (a variant's most instances).
    for (field, v) in [("minCapacity", input.min_capacity), ("maxCapacity", input.max_capacity)] {
        match v {
            Some(v) if v < 0 => {
                let rule = "Member must have value greater than or equal to 0";
                return Err(ValidationError::constraint(v, field, rule).into());
            }
            Some(v) if v > 1000 => {
                let rule = "Member must have value less than or equal to 1000";
                return Err(ValidationError::constraint(v, field, rule).into());
            }
            _ => {}
        }
    }
    let existing = control::scalable_target(app, &input.resource_id)?;
    let (min, max) = match (&existing, input.min_capacity, input.max_capacity) {
        (_, Some(min), Some(max)) => (min as u32, max as u32),
        (Some(t), min, max) => (
            min.map(|m| m as u32).unwrap_or(t.min_capacity),
            max.map(|m| m as u32).unwrap_or(t.max_capacity),
        ),
        (None, _, _) => {
            return Err(ApiError::validation(
                "MinCapacity and MaxCapacity are required when registering a new scalable target",
            ));
        }
    };
    if min > max {
        return Err(ApiError::validation(format!(
            "MinCapacity ({min}) must not be greater than MaxCapacity ({max})"
        )));
    }
    // Only an asynchronous endpoint's variant may scale to zero (its queue holds the requests).
    // AWS's server-side wording for the refusal is not published; its guide says of
    // `--min-capacity` for a real-time variant "This value must be set to at least 1", and this
    // message says so, naming the resource and the way to zero.
    if min == 0 && !may_reach_zero {
        return Err(ApiError::validation(min_capacity_zero_refusal(&input.resource_id)));
    }
    let t = app.clock.now();
    let target = ScalableTarget {
        service_namespace: input.service_namespace,
        resource_id: input.resource_id.clone(),
        scalable_dimension: input.scalable_dimension,
        min_capacity: min,
        max_capacity: max,
        role_arn: input
            .role_arn
            .or(existing.as_ref().and_then(|e| e.role_arn.clone()))
            .or_else(|| Some(format!("arn:aws:iam::{}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint", app.cfg.account_id))),
        creation_time: existing.as_ref().map(|e| e.creation_time).unwrap_or(t),
        suspended_state: input.suspended_state.or(existing.as_ref().and_then(|e| e.suspended_state.clone())),
        scalable_target_arn: existing.as_ref().map(|e| e.scalable_target_arn.clone()).unwrap_or_else(|| {
            format!(
                "arn:aws:application-autoscaling:{}:{}:scalable-target/{}",
                app.cfg.region,
                app.cfg.account_id,
                uuid::Uuid::new_v4().simple()
            )
        }),
    };
    let arn = target.scalable_target_arn.clone();
    let tags = match (&existing, input.tags) {
        (None, Some(tags)) => check_tags(&tags)?,
        _ => vec![],
    };
    control::apply(app, Command::PutScalableTarget { target, tags }).await?;
    Ok(json!({ "ScalableTargetARN": arn }))
}

/// The refusal of `MinCapacity` 0 for the variant `resource_id` of a real-time endpoint.
pub fn min_capacity_zero_refusal(resource_id: &str) -> String {
    format!(
        "MinCapacity: the minimum capacity of {resource_id} must be set to at least 1. Only a variant of an \
         asynchronous endpoint (an endpoint configuration with AsyncInferenceConfig) can scale to 0 instances."
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeTargetsInput {
    service_namespace: String,
    resource_ids: Option<Vec<String>>,
    scalable_dimension: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

/// One page of a `Describe*` answer under `key`. `MaxResults` is between 1 and `limit`, which is
/// also the default (AWS's: 50 scalable targets or activities, 10 policies); the model leaves it
/// unbounded, so the bound is checked here in the model's words. A `NextToken` must be one
/// `operation` handed out (`InvalidNextTokenException`).
fn page(
    operation: &str,
    items: Vec<Value>,
    key: &str,
    max_results: Option<i64>,
    next_token: Option<&str>,
    limit: i64,
) -> Result<Value, ApiError> {
    let max = match max_results {
        None => limit as usize,
        Some(m) if (1..=limit).contains(&m) => m as usize,
        Some(m) => {
            let rule = if m < 1 {
                "Member must have value greater than or equal to 1".to_string()
            } else {
                format!("Member must have value less than or equal to {limit}")
            };
            return Err(ValidationError::constraint(m, "maxResults", &rule).into());
        }
    };
    let start = pagination::offset(operation, next_token, items.len()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidNextTokenException,
            format!(
                "Invalid NextToken: '{}' was not returned by {operation} (or by this server process)",
                next_token.unwrap_or_default()
            ),
        )
    })?;
    let (range, next) = pagination::page(operation, start, max, items.len());
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items[range].to_vec()));
    if let Some(next) = next {
        out.insert("NextToken".into(), json!(next));
    }
    Ok(Value::Object(out))
}

fn check_namespace(ns: &str) -> Result<(), ApiError> {
    if ns != "sagemaker" {
        return Err(ApiError::validation(format!(
            "ServiceNamespace {ns} is not supported by spillway, which scales SageMaker endpoint variants (sagemaker)"
        )));
    }
    Ok(())
}

fn describe_targets(app: &Arc<App>, input: DescribeTargetsInput) -> Result<Value, ApiError> {
    check_namespace(&input.service_namespace)?;
    let items: Vec<Value> = control::scalable_targets(app)?
        .into_iter()
        .filter(|t| {
            input
                .resource_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&t.resource_id))
        })
        .filter(|t| {
            input
                .scalable_dimension
                .as_ref()
                .is_none_or(|d| *d == t.scalable_dimension)
        })
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    page(
        "DescribeScalableTargets",
        items,
        "ScalableTargets",
        input.max_results,
        input.next_token.as_deref(),
        50,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TargetKeyInput {
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
}

async fn deregister(app: &Arc<App>, input: TargetKeyInput) -> Result<Value, ApiError> {
    check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    let resource_id = input.resource_id;
    control::apply(app, Command::DeregisterScalableTarget { resource_id }).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutPolicyInput {
    policy_name: String,
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    policy_type: Option<String>,
    target_tracking_scaling_policy_configuration: Option<Value>,
    step_scaling_policy_configuration: Option<Value>,
}

async fn put_policy(app: &Arc<App>, input: PutPolicyInput) -> Result<Value, ApiError> {
    let scaled = check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    let component = matches!(scaled, Scaled::Component(_));
    // The model bounds its length and characters; ':' separates the parts of its ARN.
    if input.policy_name.contains(':') {
        return Err(ApiError::validation(format!(
            "PolicyName {:?}: a policy name may not contain ':' on spillway (it separates the parts of the policy's ARN)",
            input.policy_name
        )));
    }
    // AWS's default type is StepScaling.
    let policy_type = input.policy_type.as_deref().unwrap_or("StepScaling").to_string();
    let (target_tracking, step_scaling) = match policy_type.as_str() {
        "TargetTrackingScaling" => {
            if input.step_scaling_policy_configuration.is_some() {
                return Err(ApiError::validation(
                    "StepScalingPolicyConfiguration must not be given for a TargetTrackingScaling policy",
                ));
            }
            let Some(config) = input.target_tracking_scaling_policy_configuration else {
                return Err(ValidationError::missing("TargetTrackingScalingPolicyConfiguration").into());
            };
            // Parses and checks the configuration the autoscaler will evaluate.
            let parsed = autoscaler::parse_target_tracking(&config)?;
            autoscaler::check_metric_fits(&parsed.metric, component)?;
            (Some(config), None)
        }
        "StepScaling" => {
            if input.target_tracking_scaling_policy_configuration.is_some() {
                return Err(ApiError::validation(
                    "TargetTrackingScalingPolicyConfiguration must not be given for a StepScaling policy",
                ));
            }
            let Some(mut config) = input.step_scaling_policy_configuration else {
                return Err(ValidationError::missing("StepScalingPolicyConfiguration").into());
            };
            autoscaler::parse_step_scaling(&config)?;
            // Echoed with AWS's defaults.
            if let Some(o) = config.as_object_mut() {
                o.entry("MetricAggregationType").or_insert(json!("Average"));
            }
            (None, Some(config))
        }
        other => {
            return Err(ValidationError::constraint(
                other,
                "PolicyType",
                "Member must satisfy enum value set: [StepScaling, TargetTrackingScaling]",
            )
            .into());
        }
    };
    let existing = control::scaling_policy(app, &ScalingPolicy::key_of(&input.resource_id, &input.policy_name))?;
    let t = app.clock.now();
    let policy = ScalingPolicy {
        policy_arn: existing.as_ref().map(|p| p.policy_arn.clone()).unwrap_or_else(|| {
            format!(
                "arn:aws:autoscaling:{}:{}:scalingPolicy:{}:resource/sagemaker/{}:policyName/{}",
                app.cfg.region,
                app.cfg.account_id,
                uuid::Uuid::new_v4(),
                input.resource_id,
                input.policy_name
            )
        }),
        policy_name: input.policy_name,
        service_namespace: input.service_namespace,
        resource_id: input.resource_id,
        scalable_dimension: input.scalable_dimension,
        policy_type,
        target_tracking_scaling_policy_configuration: target_tracking,
        step_scaling_policy_configuration: step_scaling,
        alarms: vec![],
        creation_time: existing.as_ref().map(|p| p.creation_time).unwrap_or(t),
    };
    let stored = match control::apply(app, Command::PutScalingPolicy(policy)).await? {
        control::Outcome::Policy(p) => p,
        _ => return Err(ApiError::internal("PutScalingPolicy answered no policy")),
    };
    Ok(json!({ "PolicyARN": stored.policy_arn, "Alarms": stored.alarms }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribePoliciesInput {
    service_namespace: String,
    policy_names: Option<Vec<String>>,
    resource_id: Option<String>,
    scalable_dimension: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

fn describe_policies(app: &Arc<App>, input: DescribePoliciesInput) -> Result<Value, ApiError> {
    check_namespace(&input.service_namespace)?;
    let items: Vec<Value> = control::scaling_policies(app)?
        .into_iter()
        .filter(|p| input.policy_names.as_ref().is_none_or(|n| n.contains(&p.policy_name)))
        .filter(|p| input.resource_id.as_ref().is_none_or(|r| *r == p.resource_id))
        .filter(|p| {
            input
                .scalable_dimension
                .as_ref()
                .is_none_or(|d| *d == p.scalable_dimension)
        })
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    page(
        "DescribeScalingPolicies",
        items,
        "ScalingPolicies",
        input.max_results,
        input.next_token.as_deref(),
        10,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeletePolicyInput {
    policy_name: String,
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
}

async fn delete_policy(app: &Arc<App>, input: DeletePolicyInput) -> Result<Value, ApiError> {
    check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    let command = Command::DeleteScalingPolicy {
        resource_id: input.resource_id,
        policy_name: input.policy_name,
    };
    control::apply(app, command).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeActivitiesInput {
    service_namespace: String,
    resource_id: Option<String>,
    scalable_dimension: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    #[serde(default)]
    include_not_scaled_activities: bool,
}

fn describe_activities(app: &Arc<App>, input: DescribeActivitiesInput) -> Result<Value, ApiError> {
    check_namespace(&input.service_namespace)?;
    let mut acts = control::scaling_activities(app)?;
    acts.retain(|a| {
        input.resource_id.as_ref().is_none_or(|r| *r == a.resource_id)
            && input
                .scalable_dimension
                .as_ref()
                .is_none_or(|d| *d == a.scalable_dimension)
            && (input.include_not_scaled_activities || a.status_code != "NotScaled")
    });
    acts.sort_by(|a, b| {
        b.start_time
            .total_cmp(&a.start_time)
            .then_with(|| b.activity_id.cmp(&a.activity_id))
    });
    let items = acts
        .into_iter()
        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
        .collect();
    page(
        "DescribeScalingActivities",
        items,
        "ScalingActivities",
        input.max_results,
        input.next_token.as_deref(),
        50,
    )
}

// ------------------------------------------------------------------------------------------
// tags
// ------------------------------------------------------------------------------------------

/// Tags per scalable target, as Application Auto Scaling allows.
const MAX_TAGS: usize = 50;

/// Checks tags against the service's constraints (key 1–128, value 0–256 characters).
fn check_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, ApiError> {
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(
                ValidationError::constraint(k, "Tags", "Member must have a key of length between 1 and 128").into(),
            );
        }
        if v.chars().count() > 256 {
            return Err(
                ValidationError::constraint(v, "Tags", "Member must have a value of length at most 256").into(),
            );
        }
    }
    Ok(tags
        .iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect())
}

/// The scalable target an ARN names, or AWS's `ResourceNotFoundException`.
fn tagged_target(app: &App, arn: &str) -> Result<ScalableTarget, ApiError> {
    control::scalable_targets(app)?
        .into_iter()
        .find(|t| t.scalable_target_arn == arn)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ResourceNotFoundException,
                format!("No scalable target found for the ARN {arn}"),
            )
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagResourceInput {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    tags: BTreeMap<String, String>,
}

async fn tag_resource(app: &Arc<App>, input: TagResourceInput) -> Result<Value, ApiError> {
    let tags = check_tags(&input.tags)?;
    tagged_target(app, &input.resource_arn)?;
    let held = app.store.tags(&input.resource_arn)?;
    let after = held
        .iter()
        .map(|t| t.key.as_str())
        .chain(tags.iter().map(|t| t.key.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if after > MAX_TAGS {
        return Err(ApiError::new(
            ErrorCode::TooManyTagsException,
            format!("A scalable target can have at most {MAX_TAGS} tags; this request would leave {after}"),
        ));
    }
    let arn = input.resource_arn;
    control::apply(app, Command::AddTags { arn, tags }).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UntagResourceInput {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(app: &Arc<App>, input: UntagResourceInput) -> Result<Value, ApiError> {
    tagged_target(app, &input.resource_arn)?;
    let command = Command::DeleteTags {
        arn: input.resource_arn,
        keys: input.tag_keys,
    };
    control::apply(app, command).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListTagsInput {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
}

fn list_tags(app: &Arc<App>, input: ListTagsInput) -> Result<Value, ApiError> {
    tagged_target(app, &input.resource_arn)?;
    let tags: Map<String, Value> = app
        .store
        .tags(&input.resource_arn)?
        .into_iter()
        .map(|t| (t.key, Value::String(t.value)))
        .collect();
    Ok(json!({ "Tags": tags }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_variants_or_inference_components_each_with_its_dimension() {
        assert_eq!(
            check_resource("sagemaker", "inference-component/ic", COMPONENT_DIMENSION),
            Ok(Scaled::Component("ic".into()))
        );
        assert_eq!(
            check_resource("sagemaker", "endpoint/e/variant/v", DIMENSION),
            Ok(Scaled::Variant("e".into(), "v".into()))
        );
        let e = check_resource("sagemaker", "inference-component/ic", DIMENSION).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationException);
        assert!(e.message.contains(COMPONENT_DIMENSION), "{}", e.message);
        let e = check_resource("sagemaker", "endpoint/e/variant/v", COMPONENT_DIMENSION).unwrap_err();
        assert!(e.message.contains(DIMENSION), "{}", e.message);
        let e = check_resource("sagemaker", "inference-component/a/b", COMPONENT_DIMENSION).unwrap_err();
        assert!(
            e.message.contains("inference-component/<inference component name>"),
            "{}",
            e.message
        );
        let e = check_resource("sagemaker", "inference-component/ic", "sagemaker:variant:Other").unwrap_err();
        assert!(e.message.contains("is not supported by spillway"), "{}", e.message);
    }
}
