//! Reading the metrics store as CloudWatch's queries name it: a series by `{Namespace,
//! MetricName, Dimensions}` ([`Selector`]), and `MetricDataQuery` lists with metric math
//! ([`Query`], [`evaluate`]). `GetMetricData` answers from it, and alarms evaluate with it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::metrics::{
    BACKLOG_METRICS, COMPONENT_METRICS, COMPONENT_SERIES, ENDPOINT_SERIES, INSTANCE_METRICS, METRICS, Metrics, Select,
    Statistic,
};
use crate::core::model::Timestamp;
use crate::core::scaling::eval_expression;

/// The namespace of the invocation and fleet metrics ([`METRICS`]) and of asynchronous
/// endpoints' backlog metrics ([`BACKLOG_METRICS`]).
pub const NAMESPACE: &str = "AWS/SageMaker";

/// The namespace of the per-instance utilization metrics ([`INSTANCE_METRICS`]).
pub const INSTANCE_NAMESPACE: &str = "/aws/sagemaker/Endpoints";

/// The namespace a metric of the store is published in, `None` for a metric it does not have.
pub fn namespace_of(metric: &str) -> Option<&'static str> {
    if METRICS.contains(&metric) || BACKLOG_METRICS.contains(&metric) || COMPONENT_METRICS.contains(&metric) {
        Some(NAMESPACE)
    } else if INSTANCE_METRICS.contains(&metric) {
        Some(INSTANCE_NAMESPACE)
    } else {
        None
    }
}

/// One dimension of a request (`{Name, Value}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    /// `Name`.
    pub name: String,
    /// `Value` (`None` in a `ListMetrics` filter that names only the dimension).
    pub value: Option<String>,
}

/// One series of the store, as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric's name.
    pub metric: String,
    /// `EndpointName` ([`COMPONENT_SERIES`] for an inference component's metric, which names
    /// no endpoint).
    pub endpoint: String,
    /// `VariantName` ([`ENDPOINT_SERIES`] for a backlog metric, which has no variant; the
    /// `InferenceComponentName` for an inference component's metric).
    pub variant: String,
    /// `InstanceType`, if named.
    pub instance_type: Option<String>,
}

impl Selector {
    /// The series a `{Namespace, MetricName, Dimensions}` names, or `None` when the store has no
    /// such metric (other namespaces, other metric names, other dimension sets).
    pub fn of(namespace: Option<&str>, metric: &str, dims: &[Dimension]) -> Option<Self> {
        if namespace.is_none() || namespace != namespace_of(metric) {
            return None;
        }
        let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
        for d in dims {
            if by_name.insert(&d.name, d.value.as_deref()?).is_some() {
                return None;
            }
        }
        if let Some(component) = by_name.remove("InferenceComponentName") {
            // `{InferenceComponentName}` or `{InferenceComponentName, InstanceType}`.
            if !COMPONENT_METRICS.contains(&metric) {
                return None;
            }
            let instance_type = by_name.remove("InstanceType").map(str::to_string);
            return by_name
                .is_empty()
                .then(|| Self::component(metric, component, instance_type));
        }
        let endpoint = by_name.remove("EndpointName")?.to_string();
        if BACKLOG_METRICS.contains(&metric) {
            // Published with `EndpointName` only.
            return by_name.is_empty().then(|| Self {
                metric: metric.to_string(),
                endpoint,
                variant: ENDPOINT_SERIES.to_string(),
                instance_type: None,
            });
        }
        if !METRICS.contains(&metric) && !INSTANCE_METRICS.contains(&metric) {
            // A component-only metric (`InvocationsPerCopy`) by endpoint and variant.
            return None;
        }
        let variant = by_name.remove("VariantName")?.to_string();
        let instance_type = by_name.remove("InstanceType").map(str::to_string);
        by_name.is_empty().then(|| Self {
            metric: metric.to_string(),
            endpoint,
            variant,
            instance_type,
        })
    }

    /// The series of `metric` of inference component `component` (one instance type's, or all).
    pub fn component(metric: &str, component: &str, instance_type: Option<String>) -> Self {
        Self {
            metric: metric.to_string(),
            endpoint: COMPONENT_SERIES.to_string(),
            variant: component.to_string(),
            instance_type,
        }
    }

    /// The inference component this selector names, if it names one.
    pub fn component_name(&self) -> Option<&str> {
        (self.endpoint == COMPONENT_SERIES).then_some(self.variant.as_str())
    }

    /// The statistic per period of `[start, end)`, by period start (periods without data left out).
    pub fn periods(
        &self,
        m: &Metrics,
        stat: Statistic,
        start: Timestamp,
        end: Timestamp,
        period: i64,
    ) -> Vec<(i64, f64)> {
        let select = if self.variant == ENDPOINT_SERIES {
            Select::endpoint(&self.endpoint)
        } else {
            Select::new(&self.endpoint, &self.variant, self.instance_type.as_deref())
        };
        m.aggregate_periods(select, &self.metric, stat, start, end, period)
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

/// One `MetricDataQuery`.
#[derive(Debug)]
pub struct Query {
    /// `Id`.
    pub id: String,
    /// `Label`.
    pub label: Option<String>,
    /// `ReturnData`.
    pub return_data: bool,
    /// What it computes.
    pub kind: QueryKind,
}

/// What a query computes.
#[derive(Debug)]
pub enum QueryKind {
    /// `MetricStat`; `None` when the store has no such series (no data, not an error).
    Stat {
        /// The series (`None`: the store has no such series).
        selector: Option<Selector>,
        /// The metric's name.
        metric: String,
        /// The statistic.
        stat: Statistic,
        /// Seconds per period.
        period: i64,
    },
    /// `Expression` and the query ids it refers to.
    Expression {
        /// The expression.
        expression: String,
        /// The query ids it uses.
        refs: Vec<String>,
    },
}

/// Every query's series (ascending by timestamp), expressions evaluated point by point at the
/// timestamps that all their inputs have; a point whose value is undefined (division by zero)
/// is left out.
pub fn evaluate(
    m: &Metrics,
    queries: &[Query],
    start: Timestamp,
    end: Timestamp,
) -> Result<HashMap<String, BTreeMap<i64, f64>>, String> {
    fn eval_one(
        id: &str,
        ctx: &Ctx<'_>,
        done: &mut HashMap<String, BTreeMap<i64, f64>>,
        visiting: &mut HashSet<String>,
    ) -> Result<(), String> {
        if done.contains_key(id) {
            return Ok(());
        }
        let Some(q) = ctx.queries.iter().find(|q| q.id == id) else {
            return Ok(());
        };
        let series = match &q.kind {
            QueryKind::Stat {
                selector, stat, period, ..
            } => selector
                .as_ref()
                .map(|s| s.periods(ctx.m, *stat, ctx.start, ctx.end, *period))
                .unwrap_or_default()
                .into_iter()
                .collect(),
            QueryKind::Expression { expression, refs } => {
                if !visiting.insert(id.to_string()) {
                    return Err(format!(
                        "The expression {expression:?} of query {id} depends on itself through other expressions."
                    ));
                }
                for r in refs {
                    eval_one(r, ctx, done, visiting)?;
                }
                visiting.remove(id);
                let inputs: Vec<(&String, &BTreeMap<i64, f64>)> =
                    refs.iter().filter_map(|r| done.get(r).map(|s| (r, s))).collect();
                let times: BTreeSet<i64> = inputs.iter().flat_map(|(_, s)| s.keys().copied()).collect();
                let mut out = BTreeMap::new();
                for t in times {
                    let vars: HashMap<String, f64> = inputs
                        .iter()
                        .filter_map(|(r, s)| s.get(&t).map(|v| ((*r).clone(), *v)))
                        .collect();
                    if vars.len() < inputs.len() {
                        continue;
                    }
                    if let Ok(v) = eval_expression(expression, &vars)
                        && v.is_finite()
                    {
                        out.insert(t, v);
                    }
                }
                out
            }
        };
        done.insert(id.to_string(), series);
        Ok(())
    }
    struct Ctx<'a> {
        m: &'a Metrics,
        queries: &'a [Query],
        start: Timestamp,
        end: Timestamp,
    }
    let ctx = Ctx { m, queries, start, end };
    let mut done = HashMap::new();
    let mut visiting = HashSet::new();
    for q in queries {
        eval_one(&q.id, &ctx, &mut done, &mut visiting)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(d: &[(&str, &str)]) -> Vec<Dimension> {
        d.iter()
            .map(|(n, v)| Dimension {
                name: n.to_string(),
                value: Some(v.to_string()),
            })
            .collect()
    }

    #[test]
    fn inference_component_metrics_are_named_by_component() {
        let ns = Some(NAMESPACE);
        let s = Selector::of(ns, "InvocationsPerCopy", &dims(&[("InferenceComponentName", "ic")])).unwrap();
        assert_eq!(s.component_name(), Some("ic"));
        assert_eq!(s.instance_type, None);
        let s = Selector::of(
            ns,
            "ModelLatency",
            &dims(&[("InferenceComponentName", "ic"), ("InstanceType", "ml.g5.xlarge")]),
        )
        .unwrap();
        assert_eq!(
            (s.component_name(), s.instance_type.as_deref()),
            (Some("ic"), Some("ml.g5.xlarge"))
        );
        // Not with the endpoint's dimensions, and not the variant-only metrics.
        let mixed = dims(&[("InferenceComponentName", "ic"), ("EndpointName", "e")]);
        assert_eq!(Selector::of(ns, "Invocations", &mixed), None);
        assert_eq!(
            Selector::of(ns, "InstanceCount", &dims(&[("InferenceComponentName", "ic")])),
            None
        );
        assert_eq!(
            Selector::of(
                ns,
                "InvocationsPerCopy",
                &dims(&[("EndpointName", "e"), ("VariantName", "v")])
            ),
            None
        );
        // The variants' selectors are unchanged.
        let v = Selector::of(ns, "Invocations", &dims(&[("EndpointName", "e"), ("VariantName", "v")])).unwrap();
        assert_eq!((v.component_name(), v.variant.as_str()), (None, "v"));
    }

    #[test]
    fn a_component_selector_reads_its_series() {
        let m = std::sync::Arc::new(Metrics::default());
        let series = crate::telemetry::metrics::Series {
            endpoint: "e",
            variant: "v",
            instance_type: "ml.g5.xlarge",
        };
        let h = m.handle_of(series, Some("ic"));
        h.record_units(1, (4, 4), crate::telemetry::metrics::Outcome::Success, 5, 0, 120.0);
        let s = Selector::of(
            Some(NAMESPACE),
            "InvocationsPerCopy",
            &dims(&[("InferenceComponentName", "ic")]),
        )
        .unwrap();
        assert_eq!(s.periods(&m, Statistic::Sum, 60.0, 180.0, 60), vec![(120, 0.25)]);
    }
}
