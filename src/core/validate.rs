//! Request validation that botocore leaves to the server: lengths, ranges, patterns, enum
//! membership and the instance-pool rules. Every message names the member it is about, in
//! the dotted, 1-based form AWS uses (`ProductionVariants.1.InstancePools.2.Priority`).

use std::collections::{BTreeSet, HashSet};

use thiserror::Error;

use super::catalog;
use super::model::{PoolSpec, ProductionVariant, RoutingStrategy, VariantSpec, defaults};

/// A rejected request. Rendered as a `ValidationException` at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    /// The AWS constraint form: `1 validation error detected: Value 'v' at 'field' failed to
    /// satisfy constraint: rule`.
    pub fn constraint(value: impl std::fmt::Display, field: &str, rule: &str) -> Self {
        Self(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
        ))
    }

    /// A required member is missing.
    pub fn missing(field: &str) -> Self {
        Self(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

/// Result alias for validation.
pub type Result<T> = std::result::Result<T, ValidationError>;

/// The modelled pattern for endpoint, config, model and variant names:
/// `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`, 1..63 characters.
pub fn name(value: &str, field: &str) -> Result<()> {
    if value.is_empty() || value.len() > 63 {
        return Err(ValidationError::constraint(
            value,
            field,
            "Member must have length between 1 and 63",
        ));
    }
    let ok = value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(ValidationError::constraint(
            value,
            field,
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
        ));
    }
    Ok(())
}

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

/// Checks `InstanceType` values against the catalog (the botocore enum).
pub fn instance_type(value: &str, field: &str) -> Result<()> {
    if catalog::lookup(value).is_none() {
        return Err(ValidationError::constraint(
            value,
            field,
            "Member must satisfy enum value set: a SageMaker ProductionVariantInstanceType such as ml.m5.xlarge or ml.g6.2xlarge (see GET /_spillway/instance-types)",
        ));
    }
    Ok(())
}

/// Members of `ProductionVariant` that spillway refuses rather than silently ignores,
/// because accepting them would promise behaviour spillway does not deliver.
pub const REJECTED_VARIANT_MEMBERS: &[&str] = &[
    "ServerlessConfig",
    "ManagedInstanceScaling",
    "CapacityReservationConfig",
    "AcceleratorPartitionLayouts",
    "CoreDumpConfig",
];

/// Validates the variants of a `CreateEndpointConfig` and turns them into planner specs.
///
/// `model_exists` answers whether a model of that name exists (for `ModelName` and
/// `ModelNameOverride`); `model_arn` renders the ARN for the "Could not find model" message.
pub fn production_variants(
    variants: &[ProductionVariant],
    model_exists: &dyn Fn(&str) -> bool,
    model_arn: &dyn Fn(&str) -> String,
) -> Result<Vec<VariantSpec>> {
    if variants.is_empty() {
        return Err(ValidationError::constraint(
            "[]",
            "ProductionVariants",
            "Member must have length greater than or equal to 1",
        ));
    }
    if variants.len() > 10 {
        return Err(ValidationError::constraint(
            variants.len(),
            "ProductionVariants",
            "Member must have length less than or equal to 10",
        ));
    }
    let mut seen_names = HashSet::new();
    let mut specs = Vec::with_capacity(variants.len());
    for (i, v) in variants.iter().enumerate() {
        let at = format!("ProductionVariants.{}", i + 1);
        specs.push(variant(v, &at, model_exists, model_arn)?);
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
    at: &str,
    model_exists: &dyn Fn(&str) -> bool,
    model_arn: &dyn Fn(&str) -> String,
) -> Result<VariantSpec> {
    name(&v.variant_name, &format!("{at}.VariantName"))?;
    for member in REJECTED_VARIANT_MEMBERS {
        if v.other.contains_key(*member) {
            return Err(ValidationError(format!(
                "{at}.{member} is not supported by spillway; see docs/api-compat.md"
            )));
        }
    }
    let model_name = match &v.model_name {
        None => {
            return Err(ValidationError(format!(
                "{at}.ModelName is required: spillway runs one model per variant (inference components are not supported)"
            )));
        }
        Some(m) => m.clone(),
    };
    name(&model_name, &format!("{at}.ModelName"))?;
    if !model_exists(&model_name) {
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
            instance_type(t, &format!("{at}.InstanceType"))?;
            vec![PoolSpec {
                priority: 1,
                instance_type: t.clone(),
                model_name: model_name.clone(),
            }]
        }
        (None, Some(pools)) => {
            let pat = format!("{at}.InstancePools");
            if pools.is_empty() {
                return Err(ValidationError::constraint(
                    "[]",
                    &pat,
                    "Member must have length greater than or equal to 1",
                ));
            }
            if pools.len() > 5 {
                return Err(ValidationError::constraint(
                    pools.len(),
                    &pat,
                    "Member must have length less than or equal to 5",
                ));
            }
            let mut priorities = BTreeSet::new();
            let mut types = HashSet::new();
            let mut out = Vec::with_capacity(pools.len());
            for (j, p) in pools.iter().enumerate() {
                let pat = format!("{pat}.{}", j + 1);
                int_range(p.priority, &format!("{pat}.Priority"), 1, 5)?;
                instance_type(&p.instance_type, &format!("{pat}.InstanceType"))?;
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
                    Some(o) => {
                        name(o, &format!("{pat}.ModelNameOverride"))?;
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
            int_range(c, &format!("{at}.InitialInstanceCount"), 1, 1000)?;
            c as u32
        }
    };
    let provision_timeout_s = match v.variant_instance_provision_timeout_in_seconds {
        None => defaults::PROVISION_TIMEOUT_S,
        Some(t) => {
            int_range(t, &format!("{at}.VariantInstanceProvisionTimeoutInSeconds"), 300, 3600)?;
            t as u32
        }
    };
    let startup_health_timeout_s = match v.container_startup_health_check_timeout_in_seconds {
        None => defaults::STARTUP_HEALTH_TIMEOUT_S,
        Some(t) => {
            int_range(
                t,
                &format!("{at}.ContainerStartupHealthCheckTimeoutInSeconds"),
                60,
                3600,
            )?;
            t as u32
        }
    };
    let model_data_timeout_s = match v.model_data_download_timeout_in_seconds {
        None => defaults::MODEL_DATA_TIMEOUT_S,
        Some(t) => {
            int_range(t, &format!("{at}.ModelDataDownloadTimeoutInSeconds"), 60, 3600)?;
            t as u32
        }
    };
    let initial_weight = v.initial_variant_weight.unwrap_or(1.0);
    if !(initial_weight.is_finite() && initial_weight >= 0.0) {
        return Err(ValidationError::constraint(
            initial_weight,
            &format!("{at}.InitialVariantWeight"),
            "Member must have value greater than or equal to 0",
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
    })
}

fn routing_strategy(value: &str, field: &str) -> Result<RoutingStrategy> {
    match value {
        "LEAST_OUTSTANDING_REQUESTS" => Ok(RoutingStrategy::LeastOutstandingRequests),
        "RANDOM" => Ok(RoutingStrategy::Random),
        "CAPACITY_AWARE" => Ok(RoutingStrategy::CapacityAware),
        "PREFIX_AWARE" | "KV_AWARE" => Err(ValidationError(format!(
            "{field}: routing strategy {value} is not supported by spillway; use LEAST_OUTSTANDING_REQUESTS or RANDOM"
        ))),
        other => Err(ValidationError::constraint(
            other,
            field,
            "Member must satisfy enum value set: [LEAST_OUTSTANDING_REQUESTS, RANDOM, PREFIX_AWARE, KV_AWARE] (or spillway's CAPACITY_AWARE)",
        )),
    }
}

/// Validates `MaxResults` (1..100).
pub fn max_results(value: Option<i64>) -> Result<usize> {
    match value {
        None => Ok(100),
        Some(v) => {
            int_range(v, "MaxResults", 1, 100)?;
            Ok(v as usize)
        }
    }
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
    fn names_follow_the_modelled_pattern() {
        assert!(name("a", "X").is_ok());
        assert!(name("my-endpoint-1", "X").is_ok());
        assert!(name("a--b", "X").is_ok());
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            let e = name(bad, "EndpointName").unwrap_err();
            assert!(e.0.contains("EndpointName"), "{e}");
        }
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
            assert!(e.0.contains(needle), "{needle:?} not in {e}");
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
                assert!(e.0.contains("VariantInstanceProvisionTimeoutInSeconds"));
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

    #[test]
    fn unsupported_members_are_refused_by_name() {
        let mut v = pv(None, Some("ml.m5.xlarge"));
        v.other
            .insert("ServerlessConfig".into(), serde_json::json!({"MemorySizeInMB": 1024}));
        assert!(check(v).unwrap_err().0.contains("ServerlessConfig"));
    }
}
