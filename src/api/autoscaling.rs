//! Application Auto Scaling (awsJson1_1, `X-Amz-Target: AnyScaleFrontendService.<Op>`) for
//! SageMaker variants: `ResourceId = endpoint/<name>/variant/<variant>`,
//! `ScalableDimension = sagemaker:variant:DesiredInstanceCount`, target-tracking policies.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::pagination;
use crate::control::app::App;
use crate::control::autoscaler::{self, ScalableTarget, ScalingPolicy};
use crate::control::{self, Command};
use crate::core::validate::ValidationError;
use crate::error::{ApiError, ErrorCode};

pub use crate::control::autoscaler::DIMENSION;

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
    }
}

/// Application Auto Scaling's requests carry no condition keys of their own here.
impl super::ops::Conditions for AutoScalingOp {}

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
    }
}

/// spillway's rules for a target (the model checked that namespace and dimension are among
/// AWS's): the SageMaker namespace, its variant dimension and a variant's resource id; returns
/// (endpoint, variant).
fn check_resource(namespace: &str, resource_id: &str, dimension: &str) -> Result<(String, String), ApiError> {
    check_namespace(namespace)?;
    if dimension != DIMENSION {
        return Err(ApiError::validation(format!(
            "ScalableDimension {dimension} is not supported by spillway; use {DIMENSION}"
        )));
    }
    let parts: Vec<&str> = resource_id.split('/').collect();
    match parts.as_slice() {
        ["endpoint", e, "variant", v] if !e.is_empty() && !v.is_empty() => Ok((e.to_string(), v.to_string())),
        _ => Err(ApiError::validation(format!(
            "ResourceId '{resource_id}' must have the form endpoint/<endpoint name>/variant/<variant name>"
        ))),
    }
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
}

async fn register(app: &Arc<App>, input: RegisterInput) -> Result<Value, ApiError> {
    let (endpoint, variant) = check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    let Ok(found) = control::endpoint(app, &endpoint).await else {
        return Err(ApiError::validation(format!(
            "ResourceId: endpoint {endpoint} does not exist (Could not find endpoint \"{}\".)",
            app.arn("endpoint", &endpoint)
        )));
    };
    if !found.record.active.variants.iter().any(|v| v.spec.name == variant) {
        return Err(ApiError::validation(format!(
            "ResourceId: endpoint {endpoint} has no variant {variant}"
        )));
    }
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
    if min == 0 {
        return Err(ApiError::validation(
            "MinCapacity: spillway does not scale instance-based variants to zero; use at least 1",
        ));
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
    control::apply(app, Command::PutScalableTarget(target)).await?;
    Ok(json!({ "ScalableTargetARN": arn }))
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
    check_resource(&input.service_namespace, &input.resource_id, &input.scalable_dimension)?;
    // The model bounds its length and characters; ':' separates the parts of its ARN.
    if input.policy_name.contains(':') {
        return Err(ApiError::validation(format!(
            "PolicyName {:?}: a policy name may not contain ':' on spillway (it separates the parts of the policy's ARN)",
            input.policy_name
        )));
    }
    match input.policy_type.as_deref().unwrap_or("StepScaling") {
        "TargetTrackingScaling" => {}
        other => {
            return Err(ApiError::validation(format!(
                "PolicyType {other} is not supported by spillway; use TargetTrackingScaling"
            )));
        }
    }
    if input.step_scaling_policy_configuration.is_some() {
        return Err(ApiError::validation(
            "StepScalingPolicyConfiguration is not supported by spillway; use TargetTrackingScalingPolicyConfiguration",
        ));
    }
    let Some(config) = input.target_tracking_scaling_policy_configuration else {
        return Err(ValidationError::missing("TargetTrackingScalingPolicyConfiguration").into());
    };
    // Parses and checks the configuration the autoscaler will evaluate.
    autoscaler::parse_target_tracking(&config)?;
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
        policy_type: "TargetTrackingScaling".into(),
        target_tracking_scaling_policy_configuration: config,
        alarms: vec![],
        creation_time: existing.as_ref().map(|p| p.creation_time).unwrap_or(t),
    };
    let arn = policy.policy_arn.clone();
    control::apply(app, Command::PutScalingPolicy(policy)).await?;
    Ok(json!({ "PolicyARN": arn, "Alarms": [] }))
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
