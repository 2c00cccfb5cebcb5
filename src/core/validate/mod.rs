//! Request validation, in the two steps AWS takes:
//!
//! 1. **The model's constraints** ([`model`]): every member of a request against what
//!    botocore's service model says of it (required members, lengths, patterns, enum values,
//!    ranges). Every violation is collected and all are reported together, in AWS's words:
//!    `2 validation errors detected: Value 'x' at 'productionVariants.1.member.variantName'
//!    failed to satisfy constraint: Member must …; Value …` ([`ValidationError::detected`]).
//! 2. **spillway's rules** (this module's functions, and the handlers'): what the model cannot
//!    say (instance pools, the models a variant names, duplicate names, members spillway does
//!    not support). They run on a request that passed step 1, and the first broken rule is
//!    the answer, named by its member in the request's own spelling
//!    (`ProductionVariants.1.InstancePools.2.Priority`).

pub mod model;

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use thiserror::Error;

use super::catalog;
use super::model::{PoolSpec, ProductionVariant, RoutingStrategy, VariantSpec, defaults};

/// A rejected request. Rendered as a `ValidationException` at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

/// How a violation shows the value it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// The member is missing: `Value null at …`.
    Null,
    /// AWS does not show it (a list of structures, a sensitive member): `Value at …`.
    Hidden,
    /// `Value '<text>' at …`.
    Text(String),
}

/// One broken constraint: `Value 'x' at 'path' failed to satisfy constraint: rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The value, as AWS shows it.
    pub value: Shown,
    /// The member, as AWS names it: `productionVariants.1.member.variantName`.
    pub path: String,
    /// The constraint, as AWS words it: `Member must have length less than or equal to 63`.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Shown::Null => write!(f, "Value null at '{}'", self.path)?,
            Shown::Hidden => write!(f, "Value at '{}'", self.path)?,
            Shown::Text(v) => write!(f, "Value '{v}' at '{}'", self.path)?,
        }
        write!(f, " failed to satisfy constraint: {}", self.rule)
    }
}

impl ValidationError {
    /// AWS's message for a request's violations: `1 validation error detected: …`, or `N
    /// validation errors detected: …; …`. `None` when there are none.
    pub fn detected(violations: &[Violation]) -> Option<Self> {
        let n = violations.len();
        let list = violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        match n {
            0 => None,
            1 => Some(Self(format!("1 validation error detected: {list}"))),
            n => Some(Self(format!("{n} validation errors detected: {list}"))),
        }
    }

    /// One constraint, in AWS's form: `1 validation error detected: Value 'v' at 'field' failed
    /// to satisfy constraint: rule`.
    pub fn constraint(value: impl fmt::Display, field: &str, rule: &str) -> Self {
        let v = Violation {
            value: Shown::Text(value.to_string()),
            path: field.to_string(),
            rule: rule.to_string(),
        };
        Self(format!("1 validation error detected: {v}"))
    }

    /// A required member is missing.
    pub fn missing(field: &str) -> Self {
        let v = Violation {
            value: Shown::Null,
            path: field.to_string(),
            rule: "Member must not be null".to_string(),
        };
        Self(format!("1 validation error detected: {v}"))
    }
}

/// Result alias for validation.
pub type Result<T> = std::result::Result<T, ValidationError>;

/// spillway's own bounds (what the model leaves open), in the model's wording.
fn int_range(value: i64, field: &str, lo: i64, hi: i64) -> Result<()> {
    if value < lo {
        return Err(ValidationError::constraint(
            value,
            field,
            &format!("Member must have value greater than or equal to {lo}"),
        ));
    }
    if value > hi {
        return Err(ValidationError::constraint(
            value,
            field,
            &format!("Member must have value less than or equal to {hi}"),
        ));
    }
    Ok(())
}

/// A list of structures of `lo..=hi` members, in the model's wording.
fn list_length(n: usize, field: &str, lo: usize, hi: usize) -> Result<()> {
    let rule = if n < lo {
        format!("Member must have length greater than or equal to {lo}")
    } else if n > hi {
        format!("Member must have length less than or equal to {hi}")
    } else {
        return Ok(());
    };
    let value = if n == 0 {
        Shown::Text("[]".into())
    } else {
        Shown::Hidden
    };
    let v = Violation {
        value,
        path: field.to_string(),
        rule,
    };
    Err(ValidationError(format!("1 validation error detected: {v}")))
}

/// Checks `InstanceType` values against the catalog (the model's
/// `ProductionVariantInstanceType` enum, which a unit test keeps equal to it).
pub fn instance_type(value: &str, field: &str) -> Result<()> {
    if catalog::lookup(value).is_none() {
        let values = model::enum_values("sagemaker", "ProductionVariantInstanceType").unwrap_or_default();
        return Err(ValidationError::constraint(
            value,
            field,
            &format!("Member must satisfy enum value set: [{}]", values.join(", ")),
        ));
    }
    Ok(())
}

/// Members of `ProductionVariant` that spillway refuses rather than silently ignores,
/// because accepting them would promise behaviour spillway does not deliver.
/// (`ManagedInstanceScaling` is accepted on a variant that hosts inference components only,
/// [`MANAGED_SCALING`].)
pub const REJECTED_VARIANT_MEMBERS: &[&str] = &[
    "ServerlessConfig",
    "CapacityReservationConfig",
    "AcceleratorPartitionLayouts",
    "CoreDumpConfig",
];

/// Applies spillway's rules to the variants of a `CreateEndpointConfig` (which passed the
/// model's constraints) and turns them into planner specs. Also run again on a stored
/// configuration when an endpoint is created or updated from it (its models may be gone).
///
/// `model_exists` answers whether a model of that name exists (for `ModelName` and
/// `ModelNameOverride`); `model_arn` renders the ARN for the "Could not find model" message.
pub fn production_variants(
    variants: &[ProductionVariant],
    model_exists: &dyn Fn(&str) -> bool,
    model_arn: &dyn Fn(&str) -> String,
) -> Result<Vec<VariantSpec>> {
    // The model's 1..10; checked again because a stored configuration is read back.
    list_length(variants.len(), "productionVariants", 1, 10)?;
    // Inference-component mode: a variant without ModelName hosts components, and then every
    // variant does (an endpoint either runs one model per variant or hosts components).
    if let Some(ic) = variants.iter().position(|v| v.model_name.is_none())
        && let Some(m) = variants.iter().position(|v| v.model_name.is_some())
    {
        return Err(ValidationError(format!(
            "ProductionVariants.{}.ModelName: ProductionVariants.{} has no ModelName, so the endpoint configuration hosts inference components and no variant may name a model",
            m + 1,
            ic + 1
        )));
    }
    let mut seen_names = HashSet::new();
    let mut specs = Vec::with_capacity(variants.len());
    for (i, v) in variants.iter().enumerate() {
        let at = format!("ProductionVariants.{}", i + 1);
        specs.push(variant(v, i, &at, model_exists, model_arn)?);
        if !seen_names.insert(v.variant_name.to_ascii_lowercase()) {
            return Err(ValidationError(format!(
                "{at}.VariantName: the variant name '{}' is used more than once; variant names must be unique within an endpoint configuration",
                v.variant_name
            )));
        }
    }
    Ok(specs)
}

fn variant(
    v: &ProductionVariant,
    index: usize,
    at: &str,
    model_exists: &dyn Fn(&str) -> bool,
    model_arn: &dyn Fn(&str) -> String,
) -> Result<VariantSpec> {
    // The model's path of this variant, for spillway's bounds in the model's wording.
    let aws = format!("productionVariants.{}.member", index + 1);
    for member in REJECTED_VARIANT_MEMBERS {
        if v.other.contains_key(*member) {
            return Err(ValidationError(format!(
                "{at}.{member} is not supported by spillway; see docs/api-compat.md"
            )));
        }
    }
    // No ModelName: the variant hosts inference components (its pools' model is "").
    let hosts_components = v.model_name.is_none();
    let managed_scaling = match (v.other.get(MANAGED_SCALING), hosts_components) {
        (None, _) => None,
        (Some(_), false) => {
            // Today's rule for a variant that runs a model: managed instance scaling follows
            // components' copies, which such a variant has none of.
            return Err(ValidationError(format!(
                "{at}.{MANAGED_SCALING} is supported by spillway only on variants that host inference components (no ModelName); see docs/api-compat.md"
            )));
        }
        (Some(m), true) => managed_instance_scaling(m, &format!("{at}.{MANAGED_SCALING}"))?,
    };
    let model_name = v.model_name.clone().unwrap_or_default();
    if !hosts_components && !model_exists(&model_name) {
        return Err(ValidationError(format!(
            "Could not find model \"{}\".",
            model_arn(&model_name)
        )));
    }

    let pools = match (&v.instance_type, &v.instance_pools) {
        (Some(_), Some(_)) => {
            return Err(ValidationError(format!(
                "{at}: InstanceType and InstancePools are mutually exclusive; specify exactly one of them"
            )));
        }
        (None, None) => {
            return Err(ValidationError(format!(
                "{at}: one of InstanceType or InstancePools must be specified"
            )));
        }
        (Some(t), None) => {
            instance_type(t, &format!("{aws}.instanceType"))?;
            vec![PoolSpec {
                priority: 1,
                instance_type: t.clone(),
                model_name: model_name.clone(),
            }]
        }
        (None, Some(pools)) => {
            list_length(pools.len(), &format!("{aws}.instancePools"), 1, 5)?;
            let mut priorities = BTreeSet::new();
            let mut types = HashSet::new();
            let mut out = Vec::with_capacity(pools.len());
            for (j, p) in pools.iter().enumerate() {
                let pat = format!("{at}.InstancePools.{}", j + 1);
                let aws_pool = format!("{aws}.instancePools.{}.member", j + 1);
                int_range(p.priority, &format!("{aws_pool}.priority"), 1, 5)?;
                instance_type(&p.instance_type, &format!("{aws_pool}.instanceType"))?;
                if !priorities.insert(p.priority) {
                    return Err(ValidationError(format!(
                        "{pat}.Priority: priority {} is used by more than one instance pool; each pool needs a distinct Priority",
                        p.priority
                    )));
                }
                if !types.insert(p.instance_type.as_str()) {
                    return Err(ValidationError(format!(
                        "{pat}.InstanceType: instance type {} appears in more than one instance pool; each pool needs a distinct InstanceType",
                        p.instance_type
                    )));
                }
                let pool_model = match &p.model_name_override {
                    Some(o) if hosts_components => {
                        return Err(ValidationError(format!(
                            "{pat}.ModelNameOverride ('{o}') is not accepted on a variant that hosts inference components: its components name their models"
                        )));
                    }
                    Some(o) => {
                        if !model_exists(o) {
                            return Err(ValidationError(format!(
                                "Could not find model \"{}\" (named by {pat}.ModelNameOverride).",
                                model_arn(o)
                            )));
                        }
                        o.clone()
                    }
                    None => model_name.clone(),
                };
                out.push(PoolSpec {
                    priority: p.priority as u8,
                    instance_type: p.instance_type.clone(),
                    model_name: pool_model,
                });
            }
            out.sort_by_key(|p| p.priority);
            out
        }
    };

    let count = match v.initial_instance_count {
        None => {
            return Err(ValidationError(format!(
                "{at}.InitialInstanceCount is required for instance-based variants"
            )));
        }
        Some(c) => {
            // The model says at least 1; 1000 is spillway's ceiling.
            int_range(c, &format!("{aws}.initialInstanceCount"), 1, 1000)?;
            c as u32
        }
    };
    if let Some(m) = managed_scaling
        && !(m.min..=m.max).contains(&count)
    {
        return Err(ValidationError(format!(
            "{at}.InitialInstanceCount: {count} is outside ManagedInstanceScaling's MinInstanceCount..MaxInstanceCount ({}..{})",
            m.min, m.max
        )));
    }
    // The model's ranges; checked again here because a stored configuration is read back.
    let timeout = |value: Option<i64>, member: &str, lo: i64, default: u32| -> Result<u32> {
        match value {
            None => Ok(default),
            Some(t) => {
                int_range(t, &format!("{aws}.{member}"), lo, 3600)?;
                Ok(t as u32)
            }
        }
    };
    let provision_timeout_s = timeout(
        v.variant_instance_provision_timeout_in_seconds,
        "variantInstanceProvisionTimeoutInSeconds",
        300,
        defaults::PROVISION_TIMEOUT_S,
    )?;
    let startup_health_timeout_s = timeout(
        v.container_startup_health_check_timeout_in_seconds,
        "containerStartupHealthCheckTimeoutInSeconds",
        60,
        defaults::STARTUP_HEALTH_TIMEOUT_S,
    )?;
    let model_data_timeout_s = timeout(
        v.model_data_download_timeout_in_seconds,
        "modelDataDownloadTimeoutInSeconds",
        60,
        defaults::MODEL_DATA_TIMEOUT_S,
    )?;
    let initial_weight = v.initial_variant_weight.unwrap_or(1.0);
    if !(initial_weight.is_finite() && initial_weight >= 0.0) {
        return Err(ValidationError::constraint(
            initial_weight,
            &format!("{aws}.initialVariantWeight"),
            "Member must have value greater than or equal to 0.0",
        ));
    }
    let routing = match &v.routing_config {
        None => RoutingStrategy::default(),
        Some(rc) => routing_strategy(&rc.routing_strategy, &format!("{at}.RoutingConfig.RoutingStrategy"))?,
    };
    Ok(VariantSpec {
        name: v.variant_name.clone(),
        pooled: v.instance_pools.is_some(),
        pools,
        initial_instance_count: count,
        initial_weight,
        provision_timeout_s,
        startup_health_timeout_s,
        model_data_timeout_s,
        routing,
        hosts_components,
        managed_scaling,
    })
}

/// The `ProductionVariant` member spillway reads for managed instance scaling (kept in
/// `ProductionVariant::other`, so it is echoed as given).
pub const MANAGED_SCALING: &str = "ManagedInstanceScaling";

/// `ManagedInstanceScaling` of a variant that hosts components (the model's constraints ran
/// before: `Status` ENABLED|DISABLED, `MinInstanceCount` >= 0, `MaxInstanceCount` >= 1).
/// spillway's rules: `Status` is required; when ENABLED, `MinInstanceCount` and
/// `MaxInstanceCount` are required and Min <= Max; `MinInstanceCount` 0 only when ENABLED;
/// `ScaleInPolicy.Strategy` `CONSOLIDATION` is refused (spillway releases idle instances, it
/// does not move copies). `Some` only when ENABLED.
pub fn managed_instance_scaling(
    value: &serde_json::Value,
    at: &str,
) -> Result<Option<crate::core::model::ManagedScaling>> {
    let int = |member: &str| -> Result<Option<i64>> {
        match value.get(member) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ValidationError(format!("{at}.{member}: {v} is not an integer"))),
        }
    };
    let status = value.get("Status").and_then(|s| s.as_str());
    let min = int("MinInstanceCount")?;
    let max = int("MaxInstanceCount")?;
    if let Some(m) = min {
        int_range(m, &format!("{at}.MinInstanceCount"), 0, 1000)?;
    }
    if let Some(m) = max {
        int_range(m, &format!("{at}.MaxInstanceCount"), 1, 1000)?;
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(ValidationError(format!(
            "{at}: MinInstanceCount ({lo}) is greater than MaxInstanceCount ({hi})"
        )));
    }
    if let Some(s) = value.pointer("/ScaleInPolicy/Strategy").and_then(|s| s.as_str())
        && s != "IDLE_RELEASE"
    {
        return Err(ValidationError(format!(
            "{at}.ScaleInPolicy.Strategy: {s} is not supported by spillway; it releases idle instances (IDLE_RELEASE) and does not move copies between instances"
        )));
    }
    match status {
        Some("ENABLED") => {
            let (Some(lo), Some(hi)) = (min, max) else {
                return Err(ValidationError(format!(
                    "{at}: MinInstanceCount and MaxInstanceCount are required when Status is ENABLED"
                )));
            };
            Ok(Some(crate::core::model::ManagedScaling {
                min: lo as u32,
                max: hi as u32,
            }))
        }
        Some("DISABLED") => {
            if min == Some(0) {
                return Err(ValidationError(format!(
                    "{at}.MinInstanceCount: 0 is allowed only when Status is ENABLED"
                )));
            }
            Ok(None)
        }
        Some(other) => Err(ValidationError(format!(
            "{at}.Status: '{other}' is not one of ENABLED, DISABLED"
        ))),
        None => Err(ValidationError(format!(
            "{at}.Status is required (ENABLED or DISABLED)"
        ))),
    }
}

/// The configuration-level rules of an endpoint configuration whose variants host inference
/// components (run after [`production_variants`]; nothing to check when none does):
/// `ExecutionRoleArn` is required (AWS requires it in this mode; spillway records it), and
/// `AsyncInferenceConfig` is refused (asynchronous inference runs one model per variant).
pub fn components_endpoint_config(
    specs: &[VariantSpec],
    execution_role_arn: Option<&str>,
    has_async_inference_config: bool,
) -> Result<()> {
    if !specs.iter().any(|s| s.hosts_components) {
        return Ok(());
    }
    if execution_role_arn.is_none_or(str::is_empty) {
        return Err(ValidationError(
            "ExecutionRoleArn is required when the production variants host inference components (no ModelName)".into(),
        ));
    }
    if has_async_inference_config {
        return Err(ValidationError(
            "AsyncInferenceConfig is not supported on an endpoint configuration whose variants host inference components (no ModelName)".into(),
        ));
    }
    Ok(())
}

fn routing_strategy(value: &str, field: &str) -> Result<RoutingStrategy> {
    match value {
        "LEAST_OUTSTANDING_REQUESTS" => Ok(RoutingStrategy::LeastOutstandingRequests),
        "RANDOM" => Ok(RoutingStrategy::Random),
        "CAPACITY_AWARE" => Ok(RoutingStrategy::CapacityAware),
        // PREFIX_AWARE, KV_AWARE (the model's enum, with spillway's CAPACITY_AWARE, is checked
        // before this runs)
        other => Err(ValidationError(format!(
            "{field}: routing strategy {other} is not supported by spillway; use LEAST_OUTSTANDING_REQUESTS, RANDOM or CAPACITY_AWARE"
        ))),
    }
}

/// The page size of SageMaker's `List*` operations: `MaxResults` (the model bounds it to
/// 1..100), by default 10 as AWS's.
pub fn max_results(value: Option<i64>) -> usize {
    value.map_or(10, |v| v.clamp(1, 100) as usize)
}

/// spillway's rules for an `AsyncInferenceConfig` that passed the model's constraints (the
/// S3 URI and SNS ARN patterns, the 1..1000 of `MaxConcurrentInvocationsPerInstance`, the enum
/// of `IncludeInferenceResponseIn`): an answer needs somewhere to go, spillway reads and writes
/// `s3://` URIs (the embedded object store or an S3-compatible server, docs/async.md), and a
/// response can only be included in a topic that is configured.
pub fn async_inference_config(cfg: &crate::core::model::AsyncInferenceConfig) -> Result<()> {
    const AT: &str = "AsyncInferenceConfig.OutputConfig";
    let out = &cfg.output_config;
    let Some(output) = &out.s3_output_path else {
        return Err(ValidationError(format!(
            "{AT}.S3OutputPath is required: an asynchronous endpoint writes every answer under it"
        )));
    };
    for (member, uri) in [
        ("S3OutputPath", Some(output)),
        ("S3FailurePath", out.s3_failure_path.as_ref()),
    ] {
        let Some(uri) = uri else { continue };
        if !uri.starts_with("s3://") {
            return Err(ValidationError(format!(
                "{AT}.{member}: '{uri}' is not an s3:// URI; spillway writes to s3://bucket/prefix locations only"
            )));
        }
        // The bucket's and the key's rules now, not at the first answer: a location no object
        // can be written under would leave every accepted request without one.
        crate::core::s3uri::parse_prefix(uri)
            .map_err(|e| ValidationError(format!("{AT}.{member}: '{uri}' is not a usable location: {e}")))?;
    }
    if let Some(n) = &out.notification_config {
        for include in n.include_inference_response_in.iter().flatten() {
            let (topic, member) = match include.as_str() {
                "SUCCESS_NOTIFICATION_TOPIC" => (&n.success_topic, "SuccessTopic"),
                "ERROR_NOTIFICATION_TOPIC" => (&n.error_topic, "ErrorTopic"),
                other => {
                    return Err(ValidationError(format!(
                        "{AT}.NotificationConfig.IncludeInferenceResponseIn: '{other}' is not one of SUCCESS_NOTIFICATION_TOPIC, ERROR_NOTIFICATION_TOPIC"
                    )));
                }
            };
            if topic.is_none() {
                return Err(ValidationError(format!(
                    "{AT}.NotificationConfig.IncludeInferenceResponseIn names {include} but {member} is not set"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::InstancePool;
    use serde_json::Map;

    fn pv(pools: Option<Vec<(&str, i64)>>, itype: Option<&str>) -> ProductionVariant {
        ProductionVariant {
            variant_name: "AllTraffic".into(),
            model_name: Some("m".into()),
            initial_instance_count: Some(2),
            instance_type: itype.map(Into::into),
            instance_pools: pools.map(|ps| {
                ps.into_iter()
                    .map(|(t, p)| InstancePool {
                        instance_type: t.into(),
                        priority: p,
                        model_name_override: None,
                    })
                    .collect()
            }),
            variant_instance_provision_timeout_in_seconds: None,
            initial_variant_weight: None,
            container_startup_health_check_timeout_in_seconds: None,
            model_data_download_timeout_in_seconds: None,
            routing_config: None,
            other: Map::new(),
        }
    }

    fn check(v: ProductionVariant) -> Result<Vec<VariantSpec>> {
        production_variants(&[v], &|n| n == "m" || n == "m2", &|n| format!("arn:model/{n}"))
    }

    #[test]
    fn pools_are_sorted_by_priority() {
        let specs = check(pv(
            Some(vec![("ml.m5.xlarge", 3), ("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2)]),
            None,
        ))
        .unwrap();
        let order: Vec<_> = specs[0].pools.iter().map(|p| p.instance_type.as_str()).collect();
        assert_eq!(order, ["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge"]);
        assert!(specs[0].pooled);
    }

    #[test]
    fn single_instance_type_is_a_pool_of_one() {
        let specs = check(pv(None, Some("ml.m5.xlarge"))).unwrap();
        assert_eq!(specs[0].pools.len(), 1);
        assert!(!specs[0].pooled);
    }

    #[test]
    fn pool_rules_name_the_field() {
        let cases: Vec<(ProductionVariant, &str)> = vec![
            (
                pv(Some(vec![("ml.m5.xlarge", 1)]), Some("ml.m5.xlarge")),
                "InstancePools",
            ),
            (pv(None, None), "InstanceType"),
            (
                pv(
                    Some(vec![
                        ("ml.m5.xlarge", 1),
                        ("ml.m5.2xlarge", 2),
                        ("ml.m5.4xlarge", 3),
                        ("ml.c5.xlarge", 4),
                        ("ml.c5.2xlarge", 5),
                        ("ml.c5.4xlarge", 5),
                    ]),
                    None,
                ),
                "less than or equal to 5",
            ),
            (pv(Some(vec![("ml.m5.xlarge", 0)]), None), "Priority"),
            (pv(Some(vec![("ml.m5.xlarge", 6)]), None), "Priority"),
            (
                pv(Some(vec![("ml.m5.xlarge", 1), ("ml.c5.xlarge", 1)]), None),
                "Priority",
            ),
            (
                pv(Some(vec![("ml.m5.xlarge", 1), ("ml.m5.xlarge", 2)]), None),
                "InstanceType",
            ),
            (pv(Some(vec![("ml.foo.bar", 1)]), None), "InstanceType"),
            (pv(None, Some("m5.xlarge")), "InstanceType"),
        ];
        for (v, needle) in cases {
            let e = check(v.clone()).unwrap_err();
            assert!(
                e.0.to_lowercase().contains(&needle.to_lowercase()),
                "{needle:?} not in {e}"
            );
        }
    }

    #[test]
    fn timeouts_are_range_checked() {
        for (t, ok) in [(299, false), (300, true), (3600, true), (3601, false)] {
            let mut v = pv(Some(vec![("ml.m5.xlarge", 1)]), None);
            v.variant_instance_provision_timeout_in_seconds = Some(t);
            let r = check(v);
            assert_eq!(r.is_ok(), ok, "{t}: {r:?}");
            if let Err(e) = r {
                assert!(e.0.contains("variantInstanceProvisionTimeoutInSeconds"), "{e}");
            }
        }
    }

    #[test]
    fn missing_models_and_overrides_are_reported() {
        let mut v = pv(Some(vec![("ml.m5.xlarge", 1)]), None);
        v.model_name = Some("nope".into());
        assert!(
            check(v)
                .unwrap_err()
                .0
                .contains("Could not find model \"arn:model/nope\"")
        );
        let mut v = pv(Some(vec![("ml.m5.xlarge", 1)]), None);
        v.instance_pools.as_mut().unwrap()[0].model_name_override = Some("gone".into());
        let e = check(v).unwrap_err();
        assert!(e.0.contains("ModelNameOverride") && e.0.contains("gone"), "{e}");
        let mut v = pv(Some(vec![("ml.m5.xlarge", 1), ("ml.c5.xlarge", 2)]), None);
        v.instance_pools.as_mut().unwrap()[1].model_name_override = Some("m2".into());
        let spec = check(v).unwrap();
        assert_eq!(spec[0].pools[1].model_name, "m2");
        assert_eq!(spec[0].pools[0].model_name, "m");
    }

    fn ic(pools: Vec<(&str, i64)>) -> ProductionVariant {
        let mut v = pv(Some(pools), None);
        v.model_name = None;
        v
    }

    fn mis(v: serde_json::Value) -> Result<Option<crate::core::model::ManagedScaling>> {
        managed_instance_scaling(&v, "ProductionVariants.1.ManagedInstanceScaling")
    }

    #[test]
    fn a_variant_without_model_hosts_components() {
        let mut v = ic(vec![("ml.g5.12xlarge", 1), ("ml.g5.2xlarge", 2)]);
        v.other.insert(
            MANAGED_SCALING.into(),
            serde_json::json!({"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 4}),
        );
        let specs = check(v.clone()).unwrap();
        assert!(specs[0].hosts_components);
        assert_eq!(
            specs[0].managed_scaling,
            Some(crate::core::model::ManagedScaling { min: 0, max: 4 })
        );
        assert!(specs[0].pools.iter().all(|p| p.model_name.is_empty()));
        // Config-level rules of the mode.
        assert!(components_endpoint_config(&specs, Some("arn:aws:iam::123456789012:role/r"), false).is_ok());
        let e = components_endpoint_config(&specs, None, false).unwrap_err();
        assert!(e.0.contains("ExecutionRoleArn is required"), "{e}");
        let e = components_endpoint_config(&specs, Some("arn:aws:iam::123456789012:role/r"), true).unwrap_err();
        assert!(e.0.contains("AsyncInferenceConfig"), "{e}");
        let model_specs = check(pv(None, Some("ml.m5.xlarge"))).unwrap();
        assert!(!model_specs[0].hosts_components && model_specs[0].managed_scaling.is_none());
        assert!(components_endpoint_config(&model_specs, None, true).is_ok());

        // Every variant or none.
        let mut second = pv(None, Some("ml.m5.xlarge"));
        second.variant_name = "B".into();
        let e = production_variants(&[v.clone(), second], &|n| n == "m", &|n| n.into()).unwrap_err();
        assert!(
            e.0.starts_with("ProductionVariants.2.ModelName: ProductionVariants.1 has no ModelName"),
            "{e}"
        );
        // No ModelNameOverride, InitialInstanceCount within Min..Max.
        let mut o = v.clone();
        o.instance_pools.as_mut().unwrap()[1].model_name_override = Some("m".into());
        assert!(check(o).unwrap_err().0.contains("InstancePools.2.ModelNameOverride"));
        let mut o = v.clone();
        o.initial_instance_count = Some(5);
        assert!(check(o).unwrap_err().0.contains("InitialInstanceCount: 5 is outside"));
        // A variant running a model keeps refusing ManagedInstanceScaling.
        let mut m = pv(None, Some("ml.m5.xlarge"));
        m.other
            .insert(MANAGED_SCALING.into(), serde_json::json!({"Status": "DISABLED"}));
        assert!(
            check(m)
                .unwrap_err()
                .0
                .contains("ManagedInstanceScaling is supported by spillway only")
        );
    }

    #[test]
    fn managed_instance_scaling_rules() {
        use serde_json::json;
        assert_eq!(mis(json!({"Status": "DISABLED"})), Ok(None));
        assert_eq!(
            mis(json!({"Status": "DISABLED", "MinInstanceCount": 1, "MaxInstanceCount": 3})),
            Ok(None)
        );
        let cases = [
            (json!({}), "Status is required"),
            (json!({"Status": "ON"}), "'ON' is not one of ENABLED, DISABLED"),
            (
                json!({"Status": "ENABLED", "MaxInstanceCount": 2}),
                "required when Status is ENABLED",
            ),
            (
                json!({"Status": "ENABLED", "MinInstanceCount": 3, "MaxInstanceCount": 2}),
                "MinInstanceCount (3) is greater than MaxInstanceCount (2)",
            ),
            (
                json!({"Status": "ENABLED", "MinInstanceCount": -1, "MaxInstanceCount": 2}),
                "greater than or equal to 0",
            ),
            (
                json!({"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 0}),
                "greater than or equal to 1",
            ),
            (
                json!({"Status": "DISABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}),
                "0 is allowed only when Status is ENABLED",
            ),
            (
                json!({"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 2, "ScaleInPolicy": {"Strategy": "CONSOLIDATION"}}),
                "CONSOLIDATION",
            ),
            (
                json!({"Status": "ENABLED", "MinInstanceCount": "1", "MaxInstanceCount": 2}),
                "not an integer",
            ),
        ];
        for (v, needle) in cases {
            let e = mis(v.clone()).unwrap_err();
            assert!(e.0.contains(needle), "{v}: {needle:?} not in {e}");
        }
    }

    #[test]
    fn unsupported_members_are_refused_by_name() {
        let mut v = pv(None, Some("ml.m5.xlarge"));
        v.other
            .insert("ServerlessConfig".into(), serde_json::json!({"MemorySizeInMB": 1024}));
        assert!(check(v).unwrap_err().0.contains("ServerlessConfig"));
    }
}
