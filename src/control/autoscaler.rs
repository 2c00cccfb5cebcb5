//! The in-process autoscaler: evaluates target-tracking policies against the metrics store and
//! changes variants' desired instance counts through the same path as
//! `UpdateEndpointWeightsAndCapacities`. Every decision becomes a scaling activity that
//! `DescribeScalingActivities` returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::app::App;
use crate::control::{self, Command, ControlError, VariantChange};
use crate::core::model::{EndpointStatus, Timestamp};
use crate::core::planner::InstancePhase;
use crate::core::scaling::{self, Bounds, History, TargetTracking};
use crate::core::validate::ValidationError;
use crate::store::Kind;
use crate::telemetry::metrics::{COMPONENT_SERIES, Select, Statistic};

/// A registered scalable target (wire shape of `ScalableTarget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalableTarget {
    /// `sagemaker`.
    pub service_namespace: String,
    /// `endpoint/<name>/variant/<variant>`.
    pub resource_id: String,
    /// `sagemaker:variant:DesiredInstanceCount`.
    pub scalable_dimension: String,
    /// MinCapacity.
    pub min_capacity: u32,
    /// MaxCapacity.
    pub max_capacity: u32,
    /// Role (echoed).
    #[serde(rename = "RoleARN", skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// When registered.
    pub creation_time: Timestamp,
    /// `SuspendedState` (DynamicScalingInSuspended / DynamicScalingOutSuspended honoured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_state: Option<Value>,
    /// ARN.
    #[serde(rename = "ScalableTargetARN")]
    pub scalable_target_arn: String,
}

/// A scaling policy (wire shape of `ScalingPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingPolicy {
    /// ARN.
    #[serde(rename = "PolicyARN")]
    pub policy_arn: String,
    /// Name.
    pub policy_name: String,
    /// `sagemaker`.
    pub service_namespace: String,
    /// Resource id.
    pub resource_id: String,
    /// Dimension.
    pub scalable_dimension: String,
    /// `TargetTrackingScaling` or `StepScaling`.
    pub policy_type: String,
    /// As given (target tracking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tracking_scaling_policy_configuration: Option<Value>,
    /// As given, with AWS's defaults filled in (step scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_scaling_policy_configuration: Option<Value>,
    /// The CloudWatch alarms of a target-tracking policy (`[{AlarmName, AlarmARN}]`): they
    /// decide when it acts. Empty for a step policy (alarms name it in their actions).
    pub alarms: Vec<Value>,
    /// When created.
    pub creation_time: Timestamp,
}

impl ScalingPolicy {
    /// Store key.
    pub fn key(&self) -> String {
        Self::key_of(&self.resource_id, &self.policy_name)
    }

    /// The store key of the policy `policy_name` of the target `resource_id`.
    pub fn key_of(resource_id: &str, policy_name: &str) -> String {
        format!("{resource_id}|{policy_name}")
    }
}

/// A scaling activity (wire shape of `ScalingActivity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activity {
    /// Id.
    pub activity_id: String,
    /// `sagemaker`.
    pub service_namespace: String,
    /// Resource id.
    pub resource_id: String,
    /// Dimension.
    pub scalable_dimension: String,
    /// "Setting desired instance count to N."
    pub description: String,
    /// Why.
    pub cause: String,
    /// When it started.
    pub start_time: Timestamp,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// `InProgress`, `Successful`, `Unfulfilled`, `Failed`.
    pub status_code: String,
    /// Detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

/// How a policy's metric is obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricSource {
    /// `SageMakerVariantInvocationsPerInstance`: invocations per instance per minute.
    InvocationsPerInstance,
    /// `SageMakerVariantConcurrentRequestsPerModelHighResolution`: average concurrency per instance.
    ConcurrentRequestsPerModel,
    /// `SageMakerInferenceComponentInvocationsPerCopy`: an inference component's invocations per
    /// copy per minute.
    InvocationsPerCopy,
    /// `SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution`: an inference
    /// component's average concurrency per copy.
    ConcurrentRequestsPerCopy,
    /// One metric of the store.
    Single(MetricStat),
    /// Metric math: queries by id, and the id whose value is returned.
    Math {
        /// `(id, query)` in order: a stat or an expression over earlier ids.
        queries: Vec<(String, Query)>,
        /// The `ReturnData` id.
        result: String,
    },
}

/// A metric math query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// A metric statistic.
    Stat(MetricStat),
    /// An expression.
    Expression(String),
}

/// A metric of namespace `AWS/SageMaker` with dimensions and a statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStat {
    /// Metric name.
    pub name: String,
    /// `InstanceType` dimension, if any.
    pub instance_type: Option<String>,
    /// Statistic.
    pub stat: Statistic,
    /// Named by `InferenceComponentName` (an inference component's metric, for a policy of an
    /// `inference-component/<name>` target).
    #[serde(default)]
    pub component_level: bool,
}

impl MetricStat {
    /// Whether it is one of an asynchronous endpoint's backlog metrics, published with the
    /// dimension `EndpointName` only.
    pub fn is_endpoint_level(&self) -> bool {
        crate::telemetry::metrics::BACKLOG_METRICS.contains(&self.name.as_str())
    }
}

/// A parsed target-tracking configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPolicy {
    /// Target and cooldowns.
    pub tracking: TargetTracking,
    /// The metric.
    pub metric: MetricSource,
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|v| !v.is_null())
}

fn metric_stat(metric: &Value, stat: &str, at: &str) -> Result<MetricStat, ValidationError> {
    let name = field(metric, "MetricName")
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::missing(&format!("{at}.MetricName")))?;
    use crate::telemetry::metrics::{BACKLOG_METRICS, COMPONENT_METRICS, METRICS};
    let endpoint_level = BACKLOG_METRICS.contains(&name);
    let dims: Vec<&Value> = field(metric, "Dimensions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let component_level = dims
        .iter()
        .any(|d| d.get("Name").and_then(Value::as_str) == Some("InferenceComponentName"));
    if component_level && !COMPONENT_METRICS.contains(&name) {
        return Err(ValidationError(format!(
            "{at}.MetricName: spillway has no inference component metric {name:?}; available: {}",
            COMPONENT_METRICS.join(", ")
        )));
    }
    if !component_level && !METRICS.contains(&name) && !endpoint_level {
        return Err(ValidationError(format!(
            "{at}.MetricName: spillway has no metric {name:?}; available: {}, {} (and, with the dimension InferenceComponentName, {})",
            METRICS.join(", "),
            BACKLOG_METRICS.join(", "),
            COMPONENT_METRICS.join(", ")
        )));
    }
    let ns = field(metric, "Namespace")
        .and_then(Value::as_str)
        .unwrap_or("AWS/SageMaker");
    if ns != "AWS/SageMaker" {
        return Err(ValidationError(format!(
            "{at}.Namespace: spillway serves only AWS/SageMaker, not {ns:?}"
        )));
    }
    let mut instance_type = None;
    for d in dims {
        match (
            d.get("Name").and_then(Value::as_str),
            d.get("Value").and_then(Value::as_str),
        ) {
            (Some("InferenceComponentName"), Some(_)) => {}
            (Some(d @ ("EndpointName" | "VariantName")), Some(_)) if component_level => {
                return Err(ValidationError(format!(
                    "{at}.Dimensions: an inference component's {name} is published with InferenceComponentName (and InstanceType), not {d}"
                )));
            }
            (Some("EndpointName"), Some(_)) => {}
            (Some(d @ ("VariantName" | "InstanceType")), Some(_)) if endpoint_level => {
                return Err(ValidationError(format!(
                    "{at}.Dimensions: {name} is published with the dimension EndpointName only, not {d}"
                )));
            }
            (Some("InstanceType"), Some(v)) => instance_type = Some(v.to_string()),
            (Some("VariantName"), Some(_)) => {}
            (Some(other), _) => {
                return Err(ValidationError(format!(
                    "{at}.Dimensions: unknown dimension {other:?}; use EndpointName, VariantName, InstanceType (or InferenceComponentName, InstanceType)"
                )));
            }
            _ => {
                return Err(ValidationError(format!("{at}.Dimensions: each needs Name and Value")));
            }
        }
    }
    let stat = Statistic::parse(stat).ok_or_else(|| {
        ValidationError(format!(
            "{at}: statistic {stat:?} must be Sum, Average, Maximum or SampleCount"
        ))
    })?;
    Ok(MetricStat {
        name: name.to_string(),
        instance_type,
        stat,
        component_level,
    })
}

/// Parses and validates a `TargetTrackingScalingPolicyConfiguration`.
pub fn parse_target_tracking(cfg: &Value) -> Result<ParsedPolicy, ValidationError> {
    const AT: &str = "TargetTrackingScalingPolicyConfiguration";
    let target = field(cfg, "TargetValue")
        .and_then(Value::as_f64)
        .ok_or_else(|| ValidationError::missing(&format!("{AT}.TargetValue")))?;
    if !(target.is_finite() && target > 0.0) {
        return Err(ValidationError::constraint(
            target,
            &format!("{AT}.TargetValue"),
            "Member must be greater than 0",
        ));
    }
    let cooldown = |name: &str| -> Result<f64, ValidationError> {
        match field(cfg, name) {
            None => Ok(300.0),
            Some(v) => v
                .as_i64()
                .filter(|c| (0..=86400).contains(c))
                .map(|c| c as f64)
                .ok_or_else(|| {
                    ValidationError::constraint(
                        v,
                        &format!("{AT}.{name}"),
                        "Member must be an integer between 0 and 86400",
                    )
                }),
        }
    };
    let tracking = TargetTracking {
        target,
        disable_scale_in: field(cfg, "DisableScaleIn").and_then(Value::as_bool).unwrap_or(false),
        scale_out_cooldown_s: cooldown("ScaleOutCooldown")?,
        scale_in_cooldown_s: cooldown("ScaleInCooldown")?,
    };
    let metric = match (
        field(cfg, "PredefinedMetricSpecification"),
        field(cfg, "CustomizedMetricSpecification"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ValidationError(format!(
                "{AT}: PredefinedMetricSpecification and CustomizedMetricSpecification are mutually exclusive"
            )));
        }
        (None, None) => {
            return Err(ValidationError(format!(
                "{AT}: one of PredefinedMetricSpecification or CustomizedMetricSpecification is required"
            )));
        }
        (Some(p), None) => match p.get("PredefinedMetricType").and_then(Value::as_str) {
            Some("SageMakerVariantInvocationsPerInstance") => MetricSource::InvocationsPerInstance,
            Some("SageMakerVariantConcurrentRequestsPerModelHighResolution") => {
                MetricSource::ConcurrentRequestsPerModel
            }
            Some("SageMakerInferenceComponentInvocationsPerCopy") => MetricSource::InvocationsPerCopy,
            Some("SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution") => {
                MetricSource::ConcurrentRequestsPerCopy
            }
            Some(other) => {
                return Err(ValidationError(format!(
                    "{AT}.PredefinedMetricSpecification.PredefinedMetricType {other:?} is not supported by spillway; use SageMakerVariantInvocationsPerInstance or SageMakerVariantConcurrentRequestsPerModelHighResolution (variants), SageMakerInferenceComponentInvocationsPerCopy or SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution (inference components)"
                )));
            }
            None => {
                return Err(ValidationError::missing(&format!(
                    "{AT}.PredefinedMetricSpecification.PredefinedMetricType"
                )));
            }
        },
        (None, Some(c)) => {
            let at = format!("{AT}.CustomizedMetricSpecification");
            match field(c, "Metrics").and_then(Value::as_array) {
                Some(items) => {
                    let mut queries = vec![];
                    let mut results = vec![];
                    for (i, m) in items.iter().enumerate() {
                        let at = format!("{at}.Metrics.{}", i + 1);
                        let id = m
                            .get("Id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ValidationError::missing(&format!("{at}.Id")))?
                            .to_string();
                        let q = match (field(m, "Expression"), field(m, "MetricStat")) {
                            (Some(e), None) => {
                                let e = e.as_str().unwrap_or("").to_string();
                                let known: HashMap<String, f64> = queries
                                    .iter()
                                    .map(|(id, _): &(String, Query)| (id.clone(), 1.0))
                                    .collect();
                                // Reject syntax errors and unknown ids now (division by zero is fine).
                                if let Err(err) = scaling::eval_expression(&e, &known)
                                    && err != "division by zero"
                                {
                                    return Err(ValidationError(format!("{at}.Expression: {err}")));
                                }
                                Query::Expression(e)
                            }
                            (None, Some(ms)) => {
                                let stat = ms.get("Stat").and_then(Value::as_str).unwrap_or("");
                                let metric = ms
                                    .get("Metric")
                                    .ok_or_else(|| ValidationError::missing(&format!("{at}.MetricStat.Metric")))?;
                                Query::Stat(metric_stat(metric, stat, &format!("{at}.MetricStat.Metric"))?)
                            }
                            _ => {
                                return Err(ValidationError(format!(
                                    "{at}: exactly one of Expression or MetricStat"
                                )));
                            }
                        };
                        if m.get("ReturnData").and_then(Value::as_bool).unwrap_or(true) {
                            results.push(id.clone());
                        }
                        queries.push((id, q));
                    }
                    if results.len() != 1 {
                        return Err(ValidationError(format!(
                            "{at}.Metrics: exactly one metric must have ReturnData true (found {})",
                            results.len()
                        )));
                    }
                    MetricSource::Math {
                        queries,
                        result: results.remove(0),
                    }
                }
                None => {
                    let stat = field(c, "Statistic").and_then(Value::as_str).unwrap_or("");
                    MetricSource::Single(metric_stat(c, stat, &at)?)
                }
            }
        }
    };
    Ok(ParsedPolicy { tracking, metric })
}

/// What a scalable target's `ResourceId` scales, as `(endpoint, variant)`: a variant's
/// `endpoint/<endpoint>/variant/<variant>`, or an inference component's
/// `inference-component/<name>` as `(COMPONENT_SERIES, name)`, the way the metrics store keys a
/// component's series (so the metric readers serve both).
pub fn scaled_of(resource_id: &str) -> Option<(String, String)> {
    match resource_id.split('/').collect::<Vec<_>>().as_slice() {
        ["endpoint", e, "variant", v] if !e.is_empty() && !v.is_empty() => Some((e.to_string(), v.to_string())),
        ["inference-component", c] if !c.is_empty() => Some((COMPONENT_SERIES.to_string(), c.to_string())),
        _ => None,
    }
}

/// Whether a policy's metric can drive a target of an inference component (`component`) or a
/// variant: the predefined metrics and `InferenceComponentName` dimensions belong to
/// components, the others to variants.
pub fn check_metric_fits(metric: &MetricSource, component: bool) -> Result<(), ValidationError> {
    const AT: &str = "TargetTrackingScalingPolicyConfiguration";
    let fits = |level: bool| level == component;
    let ok = match metric {
        MetricSource::InvocationsPerInstance | MetricSource::ConcurrentRequestsPerModel => fits(false),
        MetricSource::InvocationsPerCopy | MetricSource::ConcurrentRequestsPerCopy => fits(true),
        MetricSource::Single(m) => fits(m.component_level),
        MetricSource::Math { queries, .. } => queries.iter().all(|(_, q)| match q {
            Query::Stat(m) => fits(m.component_level),
            Query::Expression(_) => true,
        }),
    };
    if ok {
        return Ok(());
    }
    Err(ValidationError(if component {
        format!(
            "{AT}: an inference component's target (ScalableDimension {COMPONENT_DIMENSION}) scales on SageMakerInferenceComponentInvocationsPerCopy, SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution or metrics with the dimension InferenceComponentName"
        )
    } else {
        format!(
            "{AT}: a variant's target (ScalableDimension {DIMENSION}) scales on its variant's metrics, not on an inference component's"
        )
    }))
}

/// Evaluates a policy's metric over the last `window_s` seconds. Sums are per minute, the
/// period CloudWatch alarms use, so target values mean what they mean on AWS.
pub fn evaluate(
    app: &App,
    endpoint: &str,
    variant: &str,
    metric: &MetricSource,
    now: Timestamp,
    window_s: f64,
) -> Option<f64> {
    let stat = |m: &MetricStat| {
        // A component's metric is read only for a component's target and the other way round:
        // `(COMPONENT_SERIES, name)` is how a component target is named here (`scaled_of`).
        if m.component_level != (endpoint == COMPONENT_SERIES) {
            return None;
        }
        // An asynchronous endpoint's backlog metrics are the endpoint's, whichever variant scales.
        let select = if m.is_endpoint_level() {
            Select::endpoint(endpoint)
        } else {
            Select::new(endpoint, variant, m.instance_type.as_deref())
        };
        let v = app.metrics.aggregate(select, &m.name, m.stat, now - window_s, now)?;
        Some(if m.stat == Statistic::Sum {
            v * 60.0 / window_s
        } else {
            v
        })
    };
    match metric {
        MetricSource::InvocationsPerInstance => stat(&MetricStat {
            name: "InvocationsPerInstance".into(),
            instance_type: None,
            stat: Statistic::Sum,
            component_level: false,
        }),
        MetricSource::ConcurrentRequestsPerModel => stat(&MetricStat {
            name: "ConcurrentRequestsPerModel".into(),
            instance_type: None,
            stat: Statistic::Average,
            component_level: false,
        }),
        MetricSource::InvocationsPerCopy => stat(&MetricStat {
            name: "InvocationsPerCopy".into(),
            instance_type: None,
            stat: Statistic::Sum,
            component_level: true,
        }),
        MetricSource::ConcurrentRequestsPerCopy => stat(&MetricStat {
            name: "ConcurrentRequestsPerCopy".into(),
            instance_type: None,
            stat: Statistic::Average,
            component_level: true,
        }),
        MetricSource::Single(m) => stat(m),
        MetricSource::Math { queries, result } => {
            let mut vars = HashMap::new();
            for (id, q) in queries {
                let v = match q {
                    // A type without data (no instance of it) contributes 0.
                    Query::Stat(m) => stat(m).unwrap_or(0.0),
                    Query::Expression(e) => scaling::eval_expression(e, &vars).ok()?,
                };
                vars.insert(id.clone(), v);
            }
            vars.get(result).copied()
        }
    }
}

/// The scalable dimension of a variant (`endpoint/<endpoint>/variant/<variant>`).
pub const DIMENSION: &str = "sagemaker:variant:DesiredInstanceCount";

/// The scalable dimension of an inference component (`inference-component/<name>`).
pub const COMPONENT_DIMENSION: &str = "sagemaker:inference-component:DesiredCopyCount";

/// Autoscaler state kept in memory: cooldown history per resource.
#[derive(Default)]
pub struct AutoscalerState {
    pub(crate) history: Mutex<HashMap<String, History>>,
    wake: tokio::sync::Notify,
    /// Held by the commands that change targets and policies, so that a check ("the target is
    /// registered") and the write that depends on it are one step.
    config: tokio::sync::Mutex<()>,
}

impl AutoscalerState {
    /// Serializes changes of scalable targets and scaling policies.
    pub(crate) async fn config_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.config.lock().await
    }
}

/// Asks the autoscaler to evaluate now (a target or policy changed).
pub fn wake(app: &App) {
    app.autoscaler.wake.notify_one();
}

/// Runs the autoscaler until shutdown.
pub async fn run(app: Arc<App>) {
    let mut shutdown = app.shutdown.subscribe();
    let interval = Duration::from_secs_f64(app.cfg.autoscaling.evaluation_interval_seconds.max(0.1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = app.autoscaler.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = evaluate_all(&app).await {
            tracing::error!(error = %e, "autoscaler evaluation failed");
        }
    }
}

fn suspended(target: &ScalableTarget, key: &str) -> bool {
    target
        .suspended_state
        .as_ref()
        .and_then(|s| s.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

async fn evaluate_all(app: &Arc<App>) -> Result<(), ControlError> {
    let t = app.clock.now();
    finish_activities(app, t).await?;
    ensure_target_tracking_alarms(app).await?;
    // Alarms first: their states gate target tracking, and their actions run step policies.
    crate::control::alarms::evaluate_all(app).await?;
    let policies: Vec<ScalingPolicy> = app
        .store
        .list::<ScalingPolicy>(Kind::ScalingPolicy)?
        .into_iter()
        .filter(|p| p.policy_type == "TargetTrackingScaling")
        .collect();
    let alarms = crate::control::alarms::all(app)?;
    for target in app.store.list::<ScalableTarget>(Kind::ScalableTarget)? {
        let Some((endpoint, variant)) = scaled_of(&target.resource_id) else {
            continue;
        };
        let Some(current) = current_capacity(app, &endpoint, &variant).await else {
            continue;
        };
        let bounds = Bounds {
            min: target.min_capacity,
            max: target.max_capacity,
        };
        let hist = app
            .autoscaler
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.resource_id)
            .copied()
            .unwrap_or_default();
        // Scale out if any policy wants out (the largest wins); scale in only if all agree.
        let mut outs = vec![];
        let mut ins = vec![];
        let mine: Vec<&ScalingPolicy> = policies
            .iter()
            .filter(|p| p.resource_id == target.resource_id)
            .collect();
        let mut decisions = vec![];
        if mine.is_empty() {
            decisions.push((
                None,
                scaling::decide(
                    current,
                    None,
                    &TargetTracking {
                        target: 1.0,
                        disable_scale_in: true,
                        scale_out_cooldown_s: 0.0,
                        scale_in_cooldown_s: 0.0,
                    },
                    bounds,
                    hist,
                    t,
                ),
            ));
        }
        for p in &mine {
            let Some(Ok(parsed)) = p
                .target_tracking_scaling_policy_configuration
                .as_ref()
                .map(parse_target_tracking)
            else {
                continue;
            };
            // AWS's target tracking acts only through its alarms: out while AlarmHigh is in
            // ALARM, in while AlarmLow is; an alarm without data (INSUFFICIENT_DATA) never acts.
            // Which is which by the whole prefix (the resource id holds the endpoint's name).
            let (high_prefix, low_prefix) = crate::control::alarms::target_tracking_names(&p.resource_id, "");
            let in_alarm = |prefix: &str| {
                alarms.iter().any(|a| {
                    a.owner_policy.as_deref() == Some(p.policy_arn.as_str())
                        && a.name.starts_with(prefix)
                        && a.state == crate::core::alarm::StateValue::Alarm
                })
            };
            let (high, low) = (in_alarm(&high_prefix), in_alarm(&low_prefix));
            let value = evaluate(
                app,
                &endpoint,
                &variant,
                &parsed.metric,
                t,
                app.cfg.autoscaling.metric_window_seconds,
            );
            let decision = scaling::decide(current, value, &parsed.tracking, bounds, hist, t)
                .filter(|d| if d.scale_out { high } else { low });
            decisions.push((Some(p.policy_name.clone()), decision));
        }
        let mut wanted_in = 0;
        for (name, d) in decisions {
            match d {
                Some(d) if d.scale_out => outs.push((name, d)),
                Some(d) => {
                    wanted_in += 1;
                    ins.push((name, d));
                }
                None => {}
            }
        }
        let all_policies = mine.len().max(1);
        let chosen = if let Some(best) = outs.into_iter().max_by_key(|(_, d)| d.desired) {
            (!suspended(&target, "DynamicScalingOutSuspended")).then_some(best)
        } else if wanted_in == all_policies {
            ins.into_iter()
                .max_by_key(|(_, d)| d.desired)
                .filter(|_| !suspended(&target, "DynamicScalingInSuspended"))
        } else {
            None
        };
        let Some((policy, decision)) = chosen else { continue };
        let cause = match &policy {
            Some(name) => format!(
                "monitor alarm {} in state ALARM triggered policy {name}: {}",
                alarms
                    .iter()
                    .find(|a| {
                        let (high, low) = crate::control::alarms::target_tracking_names(&target.resource_id, "");
                        a.owner_policy.is_some()
                            && mine.iter().any(|p| {
                                &p.policy_name == name && a.owner_policy.as_deref() == Some(p.policy_arn.as_str())
                            })
                            && a.name.starts_with(if decision.scale_out { &high } else { &low })
                    })
                    .map_or("(target tracking)", |a| a.name.as_str()),
                decision.cause
            ),
            None => format!("scalable target bounds: {}", decision.cause),
        };
        scale(app, &target, &endpoint, &variant, current, decision.desired, cause, t).await?;
    }
    Ok(())
}

/// The current capacity of a target that may scale now: a variant's desired instance count
/// while its endpoint is `InService`, an inference component's desired copy count while it is
/// `InService`; `None` otherwise (or when it is gone).
async fn current_capacity(app: &Arc<App>, endpoint: &str, variant: &str) -> Option<u32> {
    if endpoint == COMPONENT_SERIES {
        let c = control::components::component(app, variant).ok()?;
        return (c.status == crate::core::component::ComponentStatus::InService).then_some(c.desired_copies);
    }
    let h = app.endpoint(endpoint)?;
    let rt = h.state.lock().await;
    let v = rt.record.active.variants.iter().find(|v| v.spec.name == variant)?;
    (rt.record.status() == EndpointStatus::InService).then_some(v.desired_count)
}

/// Completes an inference component's in-progress activity once as many copies serve as it
/// wants (`Successful`), or fails it when the component is gone; it stays `InProgress` while
/// copies are still being placed. Whether it changed.
fn finish_component_activity(app: &App, a: &mut Activity, component: &str, t: Timestamp) -> bool {
    let Ok(c) = control::components::component(app, component) else {
        a.status_code = "Failed".into();
        a.status_message = Some("the inference component was deleted".into());
        a.end_time = Some(t);
        return true;
    };
    let serving = app
        .dataplane
        .routes
        .get(&c.endpoint_name)
        .and_then(|r| r.components.get(component).map(|c| c.copies.len()))
        .unwrap_or(0) as u32;
    if c.status != crate::core::component::ComponentStatus::InService || serving < c.desired_copies {
        return false;
    }
    a.status_code = "Successful".into();
    a.status_message = Some(format!(
        "Successfully set desired copy count to {}. Change successfully fulfilled by sagemaker.",
        c.desired_copies
    ));
    a.end_time = Some(t);
    true
}

/// Completes in-progress activities once their endpoint is back in service.
async fn finish_activities(app: &Arc<App>, t: Timestamp) -> Result<(), ControlError> {
    for mut a in app.store.list::<Activity>(Kind::ScalingActivity)? {
        if a.status_code != "InProgress" {
            continue;
        }
        let Some((endpoint, variant)) = scaled_of(&a.resource_id) else {
            continue;
        };
        if endpoint == COMPONENT_SERIES {
            if finish_component_activity(app, &mut a, &variant, t) {
                app.store.put(Kind::ScalingActivity, &a.activity_id, a.start_time, &a)?;
            }
            continue;
        }
        let Some(h) = app.endpoint(&endpoint) else {
            a.status_code = "Failed".into();
            a.status_message = Some("the endpoint was deleted".into());
            a.end_time = Some(t);
            app.store.put(Kind::ScalingActivity, &a.activity_id, a.start_time, &a)?;
            continue;
        };
        let rt = h.state.lock().await;
        if rt.record.status() != EndpointStatus::InService {
            continue;
        }
        let desired = rt
            .record
            .active
            .variants
            .iter()
            .find(|v| v.spec.name == variant)
            .map(|v| v.desired_count)
            .unwrap_or(0);
        let serving = rt
            .instances
            .iter()
            .filter(|i| {
                i.deployment_id == rt.record.active.id
                    && i.variant_name == variant
                    && i.state == InstancePhase::InService
                    && i.replaces.is_none()
            })
            .count() as u32;
        drop(rt);
        a.end_time = Some(t);
        if serving >= desired {
            a.status_code = "Successful".into();
            a.status_message = Some(format!(
                "Successfully set desired instance count to {desired}. Change successfully fulfilled by sagemaker."
            ));
        } else {
            a.status_code = "Unfulfilled".into();
            a.status_message = Some(format!(
                "Set desired instance count to {desired}, but only {} could be provisioned through the instance pools; see the endpoint's events.",
                crate::core::planner::count_of(serving as usize, "instance")
            ));
        }
        app.store.put(Kind::ScalingActivity, &a.activity_id, a.start_time, &a)?;
    }
    Ok(())
}

/// The metric members of a target-tracking alarm (`DescribeAlarms` shows them): the policy's
/// metric on its variant, in periods of `period` seconds.
pub fn metric_wire(
    metric: &MetricSource,
    endpoint: &str,
    variant: &str,
    period: i64,
) -> serde_json::Map<String, Value> {
    let dims = |name: &str, instance_type: &Option<String>| {
        if endpoint == COMPONENT_SERIES {
            let mut d = vec![serde_json::json!({"Name": "InferenceComponentName", "Value": variant})];
            if let Some(t) = instance_type {
                d.push(serde_json::json!({"Name": "InstanceType", "Value": t}));
            }
            return d;
        }
        if crate::telemetry::metrics::BACKLOG_METRICS.contains(&name) {
            return vec![serde_json::json!({"Name": "EndpointName", "Value": endpoint})];
        }
        let mut d = vec![
            serde_json::json!({"Name": "EndpointName", "Value": endpoint}),
            serde_json::json!({"Name": "VariantName", "Value": variant}),
        ];
        if let Some(t) = instance_type {
            d.push(serde_json::json!({"Name": "InstanceType", "Value": t}));
        }
        d
    };
    let single = |name: &str, instance_type: &Option<String>, stat: Statistic| {
        let mut m = serde_json::Map::new();
        m.insert("MetricName".into(), Value::from(name));
        m.insert("Namespace".into(), Value::from("AWS/SageMaker"));
        m.insert("Statistic".into(), serde_json::to_value(stat).unwrap_or(Value::Null));
        m.insert("Dimensions".into(), Value::from(dims(name, instance_type)));
        m.insert("Period".into(), Value::from(period));
        m
    };
    match metric {
        MetricSource::InvocationsPerInstance => single("InvocationsPerInstance", &None, Statistic::Sum),
        MetricSource::ConcurrentRequestsPerModel => single("ConcurrentRequestsPerModel", &None, Statistic::Average),
        MetricSource::InvocationsPerCopy => single("InvocationsPerCopy", &None, Statistic::Sum),
        MetricSource::ConcurrentRequestsPerCopy => single("ConcurrentRequestsPerCopy", &None, Statistic::Average),
        MetricSource::Single(m) => single(&m.name, &m.instance_type, m.stat),
        MetricSource::Math { queries, result } => {
            let metrics: Vec<Value> = queries
                .iter()
                .map(|(id, q)| match q {
                    Query::Stat(m) => serde_json::json!({
                        "Id": id,
                        "MetricStat": {
                            "Metric": {"Namespace": "AWS/SageMaker", "MetricName": m.name, "Dimensions": dims(&m.name, &m.instance_type)},
                            "Period": period,
                            "Stat": serde_json::to_value(m.stat).unwrap_or(Value::Null),
                        },
                        "ReturnData": id == result,
                    }),
                    Query::Expression(e) => serde_json::json!({"Id": id, "Expression": e, "ReturnData": id == result}),
                })
                .collect();
            let mut m = serde_json::Map::new();
            m.insert("Metrics".into(), Value::from(metrics));
            m
        }
    }
}

/// A parsed `StepScalingPolicyConfiguration`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPolicy {
    /// `AdjustmentType`.
    pub adjustment_type: crate::core::alarm::AdjustmentType,
    /// `StepAdjustments`, lowest interval first.
    pub steps: Vec<crate::core::alarm::Step>,
    /// `MinAdjustmentMagnitude`.
    pub min_adjustment_magnitude: Option<i64>,
    /// `Cooldown` (seconds).
    pub cooldown_s: f64,
    /// `MetricAggregationType`: `Average`, `Minimum` or `Maximum`.
    pub aggregation: String,
}

/// Parses and validates a `StepScalingPolicyConfiguration`.
pub fn parse_step_scaling(cfg: &Value) -> Result<StepPolicy, ValidationError> {
    use crate::core::alarm::{AdjustmentType, Step, check_steps};
    const AT: &str = "StepScalingPolicyConfiguration";
    let adjustment_type = match field(cfg, "AdjustmentType").and_then(Value::as_str) {
        None => return Err(ValidationError::missing(&format!("{AT}.AdjustmentType"))),
        Some(s) => AdjustmentType::parse(s).ok_or_else(|| {
            ValidationError::constraint(
                s,
                &format!("{AT}.AdjustmentType"),
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    AdjustmentType::NAMES.join(", ")
                ),
            )
        })?,
    };
    let Some(items) = field(cfg, "StepAdjustments").and_then(Value::as_array) else {
        return Err(ValidationError::missing(&format!("{AT}.StepAdjustments")));
    };
    let bound = |v: &Value, name: &str, at: &str| -> Result<Option<f64>, ValidationError> {
        match field(v, name) {
            None => Ok(None),
            Some(b) => b
                .as_f64()
                .filter(|b| b.is_finite())
                .map(Some)
                .ok_or_else(|| ValidationError(format!("{at}.{name}: must be a number"))),
        }
    };
    let mut steps = vec![];
    for (i, s) in items.iter().enumerate() {
        let at = format!("{AT}.StepAdjustments.{}", i + 1);
        let adjustment = field(s, "ScalingAdjustment")
            .and_then(Value::as_i64)
            .ok_or_else(|| ValidationError::missing(&format!("{at}.ScalingAdjustment")))?;
        steps.push(Step {
            lower: bound(s, "MetricIntervalLowerBound", &at)?,
            upper: bound(s, "MetricIntervalUpperBound", &at)?,
            adjustment,
        });
    }
    let steps = check_steps(&steps).map_err(ValidationError)?;
    if adjustment_type == AdjustmentType::ExactCapacity && steps.iter().any(|s| s.adjustment < 0) {
        return Err(ValidationError(format!(
            "{AT}.StepAdjustments: an ExactCapacity adjustment must not be negative"
        )));
    }
    let min_adjustment_magnitude = field(cfg, "MinAdjustmentMagnitude").and_then(Value::as_i64);
    if min_adjustment_magnitude.is_some() && adjustment_type != AdjustmentType::PercentChangeInCapacity {
        return Err(ValidationError(format!(
            "{AT}.MinAdjustmentMagnitude: only valid with AdjustmentType PercentChangeInCapacity"
        )));
    }
    let cooldown_s = match field(cfg, "Cooldown") {
        None => 300.0,
        Some(v) => v.as_i64().filter(|c| (0..=86400).contains(c)).ok_or_else(|| {
            ValidationError::constraint(
                v,
                &format!("{AT}.Cooldown"),
                "Member must be an integer between 0 and 86400",
            )
        })? as f64,
    };
    let aggregation = match field(cfg, "MetricAggregationType").and_then(Value::as_str) {
        None => "Average".to_string(),
        Some(a @ ("Average" | "Minimum" | "Maximum")) => a.to_string(),
        Some(other) => {
            return Err(ValidationError::constraint(
                other,
                &format!("{AT}.MetricAggregationType"),
                "Member must satisfy enum value set: [Average, Minimum, Maximum]",
            ));
        }
    };
    Ok(StepPolicy {
        adjustment_type,
        steps,
        min_adjustment_magnitude,
        cooldown_s,
        aggregation,
    })
}

/// Runs a scaling policy because `alarm` is in its state: a step policy scales by the step
/// its breach falls in (and records the activity); a target-tracking policy acts through its
/// own loop (its alarms gate it). Returns what was done, in words.
pub async fn invoke_policy(
    app: &Arc<App>,
    policy: &ScalingPolicy,
    alarm: &crate::control::alarms::Alarm,
    t: Timestamp,
) -> Result<String, ControlError> {
    if policy.policy_type != "StepScaling" {
        return Ok(format!(
            "target-tracking policy {} scales on its next evaluation",
            policy.policy_name
        ));
    }
    let Some(cfg) = &policy.step_scaling_policy_configuration else {
        return Err(ControlError::Invalid(ValidationError(
            "the step policy has no configuration".into(),
        )));
    };
    let step = parse_step_scaling(cfg)?;
    let Some(target) = control::scalable_target(app, &policy.resource_id)? else {
        return Err(ControlError::ObjectNotFound(format!(
            "no scalable target {}",
            policy.resource_id
        )));
    };
    let Some((endpoint, variant)) = scaled_of(&policy.resource_id) else {
        return Err(ControlError::Invalid(ValidationError("bad resource id".into())));
    };
    let Some(current) = current_capacity(app, &endpoint, &variant).await else {
        return Ok(format!("{} is not in service; no scaling now", policy.resource_id));
    };
    let last = {
        let hist = app.autoscaler.history.lock().unwrap_or_else(|p| p.into_inner());
        hist.get(&policy.resource_id).map(|h| {
            h.last_scale_in
                .into_iter()
                .chain(h.last_scale_out)
                .fold(f64::NEG_INFINITY, f64::max)
        })
    };
    if last.is_some_and(|l| t - l < step.cooldown_s) {
        return Ok(format!(
            "policy {} is cooling down ({} s)",
            policy.policy_name, step.cooldown_s
        ));
    }
    let points: Vec<f64> = crate::control::alarms::points(app, alarm, t)
        .into_iter()
        .flatten()
        .collect();
    // No data (an alarm set by hand, or one of breaching missing data): the threshold itself.
    let value = match step.aggregation.as_str() {
        _ if points.is_empty() => alarm.threshold,
        "Minimum" => points.iter().copied().fold(f64::INFINITY, f64::min),
        "Maximum" => points.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => points.iter().sum::<f64>() / points.len() as f64,
    };
    let breach = value - alarm.threshold;
    let Some(s) = crate::core::alarm::step_for(&step.steps, breach) else {
        return Ok(format!(
            "no step adjustment covers {} ({} of the threshold)",
            crate::core::alarm::format_point(value),
            crate::core::alarm::format_point(breach)
        ));
    };
    let desired = crate::core::alarm::adjusted_capacity(
        step.adjustment_type,
        s.adjustment,
        step.min_adjustment_magnitude,
        current,
        target.min_capacity,
        target.max_capacity,
    );
    if desired == current
        || (desired > current && suspended(&target, "DynamicScalingOutSuspended"))
        || (desired < current && suspended(&target, "DynamicScalingInSuspended"))
    {
        return Ok(format!("capacity stays {current}"));
    }
    let cause = format!(
        "monitor alarm {} in state {} triggered policy {} (metric {}, step adjustment {})",
        alarm.name,
        alarm.state.as_str(),
        policy.policy_name,
        crate::core::alarm::format_point(value),
        s.adjustment
    );
    scale(app, &target, &endpoint, &variant, current, desired, cause, t).await?;
    let unit = if endpoint == COMPONENT_SERIES {
        "copy"
    } else {
        "instance"
    };
    Ok(format!("desired {unit} count {current} -> {desired}"))
}

/// Sets a variant's desired count for a scaling policy and records the activity (and the
/// cooldown history).
#[allow(clippy::too_many_arguments)]
async fn scale(
    app: &Arc<App>,
    target: &ScalableTarget,
    endpoint: &str,
    variant: &str,
    current: u32,
    desired: u32,
    cause: String,
    t: Timestamp,
) -> Result<(), ControlError> {
    let scale_out = desired > current;
    let component = endpoint == COMPONENT_SERIES;
    let unit = if component { "copy" } else { "instance" };
    let mut activity = Activity {
        activity_id: uuid::Uuid::new_v4().to_string(),
        service_namespace: "sagemaker".into(),
        resource_id: target.resource_id.clone(),
        scalable_dimension: target.scalable_dimension.clone(),
        description: format!("Setting desired {unit} count to {desired}."),
        cause,
        start_time: t,
        end_time: None,
        status_code: "InProgress".into(),
        status_message: None,
    };
    let command = if component {
        // The component's copies; which copy goes on scale-in is the placement's choice.
        Command::SetComponentCopies {
            name: variant.to_string(),
            copies: desired,
        }
    } else {
        Command::SetVariants {
            endpoint: endpoint.to_string(),
            changes: vec![VariantChange {
                variant: variant.to_string(),
                weight: None,
                count: Some(desired),
            }],
        }
    };
    // Boxed: an alarm's action can get here from inside `control::apply` (`SetAlarmState`).
    match Box::pin(control::apply(app, command)).await {
        Ok(_) => {
            let mut hist_map = app.autoscaler.history.lock().unwrap_or_else(|p| p.into_inner());
            let h = hist_map.entry(target.resource_id.clone()).or_default();
            if scale_out {
                h.last_scale_out = Some(t);
            } else {
                h.last_scale_in = Some(t);
            }
            drop(hist_map);
            // Scale-in shows as a `ScaleIn` event per instance the controller stops; a
            // scale-out's launches need the reason they happen.
            if scale_out && !component {
                app.event(crate::core::endpoint::Event {
                    time: t,
                    endpoint_name: endpoint.to_string(),
                    variant_name: Some(variant.to_string()),
                    kind: "ScaleOut".into(),
                    instance_type: None,
                    priority: None,
                    instance_id: None,
                    result: Some("AutoScaling".into()),
                    message: format!(
                        "autoscaling: desired instance count {current} -> {desired}; {}",
                        activity.cause
                    ),
                });
            }
        }
        Err(e) => {
            tracing::warn!(resource = %target.resource_id, error = %e, "scaling activity failed");
            activity.status_code = "Failed".into();
            activity.end_time = Some(t);
            activity.status_message = Some(format!("Failed to set desired {unit} count to {desired}. {e}"));
        }
    }
    tracing::info!(resource = %target.resource_id, desired, cause = %activity.cause, "scaling activity");
    app.store
        .put(Kind::ScalingActivity, &activity.activity_id, t, &activity)?;
    Ok(())
}

/// Gives every target-tracking policy its alarms again when one is missing (a policy stored
/// before spillway kept alarms, or an alarm a user deleted: without it the policy could never
/// act), as `PutScalingPolicy` makes them.
async fn ensure_target_tracking_alarms(app: &Arc<App>) -> Result<(), ControlError> {
    let names: std::collections::HashSet<String> =
        crate::control::alarms::all(app)?.into_iter().map(|a| a.name).collect();
    for p in app.store.list::<ScalingPolicy>(Kind::ScalingPolicy)? {
        let missing = p.alarms.is_empty()
            || p.alarms.iter().any(|a| {
                a.get("AlarmName")
                    .and_then(Value::as_str)
                    .is_none_or(|n| !names.contains(n))
            });
        if p.policy_type == "TargetTrackingScaling" && missing {
            tracing::warn!(policy = %p.policy_name, resource = %p.resource_id, "a target-tracking alarm was missing: the policy's alarms are made again");
            control::apply(app, Command::PutScalingPolicy(p)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn customized(metric: &str, dims: Value) -> Result<ParsedPolicy, ValidationError> {
        parse_target_tracking(&json!({
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {"MetricName": metric, "Namespace": "AWS/SageMaker",
                                              "Dimensions": dims, "Statistic": "Average"}
        }))
    }

    #[test]
    fn backlog_metrics_are_tracked_by_endpoint_name_only() {
        let by_endpoint = json!([{"Name": "EndpointName", "Value": "e"}]);
        for metric in crate::telemetry::metrics::BACKLOG_METRICS {
            let p = customized(metric, by_endpoint.clone()).unwrap();
            let MetricSource::Single(m) = &p.metric else {
                panic!("{metric}: {p:?}")
            };
            assert!(m.is_endpoint_level(), "{metric}");
            // Its alarms name the endpoint only.
            let wire = metric_wire(&p.metric, "e", "v", 60);
            assert_eq!(wire["Dimensions"], by_endpoint, "{metric}");
        }
        let with_variant = json!([{"Name": "EndpointName", "Value": "e"}, {"Name": "VariantName", "Value": "v"}]);
        let err = customized("ApproximateBacklogSizePerInstance", with_variant).unwrap_err();
        assert!(err.0.contains("EndpointName only, not VariantName"), "{err:?}");
        // The invocation metrics keep their variant dimensions.
        let p = customized("Invocations", json!([])).unwrap();
        let MetricSource::Single(m) = &p.metric else {
            panic!("{p:?}")
        };
        assert!(!m.is_endpoint_level());
        assert_eq!(
            metric_wire(&p.metric, "e", "v", 60)["Dimensions"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(
            customized("NoSuchMetric", json!([]))
                .unwrap_err()
                .0
                .contains("ApproximateBacklogSize")
        );
    }

    #[test]
    fn inference_components_scale_on_their_per_copy_metrics() {
        let predefined = |t: &str| {
            parse_target_tracking(
                &json!({"TargetValue": 4.0, "PredefinedMetricSpecification": {"PredefinedMetricType": t}}),
            )
            .unwrap()
            .metric
        };
        let per_copy = predefined("SageMakerInferenceComponentInvocationsPerCopy");
        assert_eq!(per_copy, MetricSource::InvocationsPerCopy);
        let concurrency = predefined("SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution");
        assert_eq!(concurrency, MetricSource::ConcurrentRequestsPerCopy);
        // A component's target takes only components' metrics, a variant's only variants'.
        assert!(check_metric_fits(&per_copy, true).is_ok());
        assert!(check_metric_fits(&concurrency, true).is_ok());
        let err = check_metric_fits(&per_copy, false).unwrap_err();
        assert!(err.0.contains("not on an inference component's"), "{err:?}");
        let variant = predefined("SageMakerVariantInvocationsPerInstance");
        let err = check_metric_fits(&variant, true).unwrap_err();
        assert!(err.0.contains(COMPONENT_DIMENSION), "{err:?}");
        // Customized: the InferenceComponentName dimension (with InstanceType).
        let dims = json!([{"Name": "InferenceComponentName", "Value": "ic"}, {"Name": "InstanceType", "Value": "ml.g5.xlarge"}]);
        let p = customized("ModelLatency", dims.clone()).unwrap();
        let MetricSource::Single(m) = &p.metric else {
            panic!("{p:?}")
        };
        assert!(m.component_level && m.instance_type.as_deref() == Some("ml.g5.xlarge"));
        assert!(check_metric_fits(&p.metric, true).is_ok() && check_metric_fits(&p.metric, false).is_err());
        // Its alarms name the component.
        let wire = metric_wire(&p.metric, COMPONENT_SERIES, "ic", 60);
        assert_eq!(wire["Dimensions"], dims);
        let wire = metric_wire(&per_copy, COMPONENT_SERIES, "ic", 60);
        assert_eq!(wire["MetricName"], "InvocationsPerCopy");
        assert_eq!(
            wire["Dimensions"],
            json!([{"Name": "InferenceComponentName", "Value": "ic"}])
        );
        // A variant-only metric by component, and a component's with an endpoint, are refused.
        let err = customized(
            "InstanceCount",
            json!([{"Name": "InferenceComponentName", "Value": "ic"}]),
        )
        .unwrap_err();
        assert!(err.0.contains("no inference component metric"), "{err:?}");
        let mixed = json!([{"Name": "InferenceComponentName", "Value": "ic"}, {"Name": "EndpointName", "Value": "e"}]);
        assert!(customized("Invocations", mixed).is_err());
    }

    #[test]
    fn resource_ids_name_a_variant_or_a_component() {
        assert_eq!(scaled_of("endpoint/e/variant/v"), Some(("e".into(), "v".into())));
        assert_eq!(
            scaled_of("inference-component/ic-1"),
            Some((COMPONENT_SERIES.into(), "ic-1".into()))
        );
        for bad in [
            "inference-component/",
            "inference-component/a/b",
            "endpoint/e",
            "endpoint//variant/v",
            "",
        ] {
            assert_eq!(scaled_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_component_policy_reads_the_component_series_only() {
        // `evaluate`'s metric selection, without an App: the per-copy metric through the store.
        let m = std::sync::Arc::new(crate::telemetry::metrics::Metrics::default());
        let series = crate::telemetry::metrics::Series {
            endpoint: "e",
            variant: "v",
            instance_type: "ml.g5.xlarge",
        };
        let h = m.handle_of(series, Some("ic"));
        for k in 0..6 {
            h.record_units(
                1,
                (2, 2),
                crate::telemetry::metrics::Outcome::Success,
                10,
                0,
                100.0 + k as f64,
            );
        }
        let v = m.aggregate(
            Select::component("ic", None),
            "InvocationsPerCopy",
            Statistic::Sum,
            60.0,
            160.0,
        );
        assert_eq!(v, Some(3.0), "6 invocations over 2 copies");
    }
}
