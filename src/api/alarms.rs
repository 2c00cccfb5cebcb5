//! CloudWatch alarms on the wire (same protocol as `cloudwatch.rs`): `PutMetricAlarm`,
//! `DescribeAlarms`, `DescribeAlarmsForMetric`, `DeleteAlarms`, `SetAlarmState`,
//! `DescribeAlarmHistory`, `EnableAlarmActions`, `DisableAlarmActions`. Requests are checked
//! here and become `control` commands; alarms are stored, evaluated and acted on by
//! `control::alarms`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::cloudwatch::{
    CloudWatchOp, Obj, bad_token, combination, invalid, missing, parse_queries_at, parse_stat, parse_token, token,
};
use crate::control::alarms::{self, Alarm, HistoryItem, Source, StoredQuery};
use crate::control::app::App;
use crate::control::{self, Command};
use crate::core::alarm::{Comparison, MissingData, StateValue};
use crate::core::iam::{Arns, Resource};
use crate::core::model::Tag;
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::query::{QueryKind, Selector};

/// The alarm a request names, as a resource (`arn:aws:cloudwatch:<region>:<account>:alarm:<name>`).
pub fn alarm_resource(input: &Map<String, Value>, arns: &Arns) -> Resource {
    match input.get("AlarmName").and_then(Value::as_str) {
        Some(name) => Resource::Arn(alarm_arn(arns, name)),
        None => Resource::Any,
    }
}

/// The first alarm of `AlarmNames` (the others are `also_on`: a caller must be allowed on each).
pub fn first_alarm(input: &Map<String, Value>, arns: &Arns) -> Resource {
    match alarm_names(input).first() {
        Some(name) => Resource::Arn(alarm_arn(arns, name)),
        None => Resource::Any,
    }
}

/// Every alarm of `AlarmNames` but the first.
pub fn other_alarms(input: &Map<String, Value>, arns: &Arns) -> Vec<Resource> {
    alarm_names(input)
        .iter()
        .skip(1)
        .map(|n| Resource::Arn(alarm_arn(arns, n)))
        .collect()
}

fn alarm_names(input: &Map<String, Value>) -> Vec<&str> {
    input
        .get("AlarmNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The resource of a tagging operation: its `ResourceARN`.
pub fn tagged_resource(input: &Map<String, Value>) -> Resource {
    match input.get("ResourceARN").and_then(Value::as_str) {
        Some(arn) => Resource::Arn(arn.to_string()),
        None => Resource::Any,
    }
}

fn alarm_arn(arns: &Arns, name: &str) -> String {
    format!("arn:aws:cloudwatch:{}:{}:alarm:{name}", arns.region, arns.account_id)
}

/// Parses and runs the CloudWatch operation `name` in process (tests): what `POST /` does
/// with `X-Amz-Target: GraniteServiceVersion20100801.<name>`, without HTTP; the metric reads
/// (`GetMetricStatistics`, `GetMetricData`, `ListMetrics`) as well as the alarm operations.
pub async fn call(app: &Arc<App>, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    let op = CloudWatchOp::parse(name, body).ok_or_else(|| {
        ApiError::unknown_operation(format!("The CloudWatch operation {name} is not supported by spillway"))
    })??;
    if op.is_alarm() {
        dispatch(app, op).await
    } else {
        super::cloudwatch::dispatch(&app.metrics, &op, app.clock.now())
    }
}

/// Runs one alarm operation.
pub(crate) async fn dispatch(app: &Arc<App>, op: CloudWatchOp) -> Result<Value, ApiError> {
    let obj = |map| Obj {
        map,
        path: String::new(),
    };
    match &op {
        CloudWatchOp::PutMetricAlarm(i) => put_metric_alarm(app, &obj(i)).await,
        CloudWatchOp::DescribeAlarms(i) => describe_alarms(app, &obj(i)),
        CloudWatchOp::DescribeAlarmsForMetric(i) => describe_alarms_for_metric(app, &obj(i)),
        CloudWatchOp::DeleteAlarms(i) => {
            let names = names(&obj(i), true)?;
            control::apply(app, Command::DeleteAlarms(names)).await?;
            Ok(json!({}))
        }
        CloudWatchOp::SetAlarmState(i) => set_alarm_state(app, &obj(i)).await,
        CloudWatchOp::DescribeAlarmHistory(i) => describe_alarm_history(app, &obj(i)),
        CloudWatchOp::EnableAlarmActions(i) | CloudWatchOp::DisableAlarmActions(i) => {
            let enabled = matches!(op, CloudWatchOp::EnableAlarmActions(_));
            let names = names(&obj(i), true)?;
            control::apply(app, Command::SetAlarmActions { names, enabled }).await?;
            Ok(json!({}))
        }
        CloudWatchOp::TagResource(i) => {
            let input = obj(i);
            let arn = resource_arn(&input)?;
            let tags = tags(&input)?;
            if input.get("Tags").is_none() {
                return Err(missing("Tags"));
            }
            control::apply(app, Command::AddTags { arn, tags })
                .await
                .map_err(tag_error)?;
            Ok(json!({}))
        }
        CloudWatchOp::UntagResource(i) => {
            let input = obj(i);
            let arn = resource_arn(&input)?;
            let keys = match input.list_opt("TagKeys")? {
                None => return Err(missing("TagKeys")),
                Some(l) => l
                    .iter()
                    .map(|k| k.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| invalid("The parameter TagKeys must be a list of strings."))?,
            };
            control::apply(app, Command::DeleteTags { arn, keys })
                .await
                .map_err(tag_error)?;
            Ok(json!({}))
        }
        CloudWatchOp::ListTagsForResource(i) => {
            let arn = resource_arn(&obj(i))?;
            let tags: Vec<Value> = control::tags(app, &arn)
                .await
                .map_err(tag_error)?
                .into_iter()
                .map(|t| json!({"Key": t.key, "Value": t.value}))
                .collect();
            Ok(json!({ "Tags": tags }))
        }
        CloudWatchOp::GetMetricStatistics(_) | CloudWatchOp::GetMetricData(_) | CloudWatchOp::ListMetrics(_) => {
            Err(ApiError::internal("not an alarm operation"))
        }
    }
}

/// The tagging operations' "no such resource" (`ResourceNotFoundException`, 404); an ARN that is
/// not an alarm's of this server is one too.
fn tag_error(e: control::ControlError) -> ApiError {
    match e {
        control::ControlError::AlarmNotFound(m) => ApiError::new(ErrorCode::CloudWatchResourceNotFound, m),
        e => e.into(),
    }
}

/// `ResourceARN` of the tagging operations: an alarm's ARN (spillway has no other CloudWatch
/// resource).
fn resource_arn(input: &Obj<'_>) -> Result<String, ApiError> {
    let arn = bounded(input, "ResourceARN", 1, 1024)?.ok_or_else(|| missing("ResourceARN"))?;
    if !arn.starts_with("arn:aws:cloudwatch:") {
        return Err(ApiError::new(
            ErrorCode::CloudWatchResourceNotFound,
            format!("The resource {arn} does not exist."),
        ));
    }
    Ok(arn.to_string())
}

/// A string within `min..=max` characters.
fn bounded<'a>(input: &Obj<'a>, key: &str, min: usize, max: usize) -> Result<Option<&'a str>, ApiError> {
    let v = match input.get(key) {
        Some(Value::String(s)) => Some(s.as_str()),
        None => None,
        Some(_) => return Err(invalid(format!("The parameter {} must be a string.", input.name(key)))),
    };
    if let Some(s) = v {
        let n = s.chars().count();
        if n < min || n > max {
            return Err(invalid(format!(
                "The parameter {} must be between {min} and {max} characters long (got {n}).",
                input.name(key)
            )));
        }
    }
    Ok(v)
}

/// `AlarmNames`: 1 to 100 names (required for the operations that act on alarms).
fn names(input: &Obj<'_>, required: bool) -> Result<Vec<String>, ApiError> {
    let Some(list) = input.list_opt("AlarmNames")? else {
        return if required {
            Err(missing("AlarmNames"))
        } else {
            Ok(vec![])
        };
    };
    if list.len() > 100 {
        return Err(invalid(
            "The collection AlarmNames must not have a size greater than 100.",
        ));
    }
    list.iter()
        .map(|v| match v.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 255 => Ok(s.to_string()),
            _ => Err(invalid(
                "Each member of AlarmNames must be a string of 1 to 255 characters.",
            )),
        })
        .collect()
}

/// An action list: at most 5 well-formed ARNs; an SNS topic or scaling policy in this region.
fn actions(input: &Obj<'_>, key: &str, region: &str) -> Result<Vec<String>, ApiError> {
    let Some(list) = input.list_opt(key)? else {
        return Ok(vec![]);
    };
    if list.len() > 5 {
        return Err(invalid(format!(
            "The collection {key} must not have a size greater than 5."
        )));
    }
    list.iter()
        .map(|v| {
            let s = v.as_str().unwrap_or("");
            let parts: Vec<&str> = s.splitn(6, ':').collect();
            let well_formed = s.len() <= 1024
                && parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && !parts[2].is_empty()
                && parts.iter().all(|p| p.chars().all(|c| !c.is_whitespace() && c != '$'));
            if !well_formed {
                return Err(invalid(format!("Invalid arn syntax: {s}")));
            }
            if matches!(parts[2], "sns" | "autoscaling") && parts[3] != region {
                return Err(invalid(format!(
                    "Invalid region {} specified. Only {region} is supported.",
                    parts[3]
                )));
            }
            Ok(s.to_string())
        })
        .collect()
}

/// CloudWatch's valid periods: 10, 20, 30, or a multiple of 60.
fn check_period(period: i64, name: &str) -> Result<(), ApiError> {
    if matches!(period, 10 | 20 | 30) || (period >= 60 && period % 60 == 0) {
        Ok(())
    } else {
        Err(invalid(format!(
            "The parameter {name} must be 10, 20, 30 or a multiple of 60 (got {period})."
        )))
    }
}

async fn put_metric_alarm(app: &Arc<App>, input: &Obj<'_>) -> Result<Value, ApiError> {
    let name = bounded(input, "AlarmName", 1, 255)?.ok_or_else(|| missing("AlarmName"))?;
    let description = bounded(input, "AlarmDescription", 0, 1024)?.map(str::to_string);
    if input.get("ThresholdMetricId").is_some() {
        return Err(invalid(
            "ThresholdMetricId: spillway has no anomaly detection; give a static Threshold.",
        ));
    }
    for unsupported in [
        "EvaluationCriteria",
        "EvaluationInterval",
        "EvaluationWindow",
        "WarmUpConfiguration",
    ] {
        if input.get(unsupported).is_some() {
            return Err(invalid(format!(
                "{unsupported}: spillway supports metric alarms with a static threshold only."
            )));
        }
    }
    let comparison = match input.str_opt("ComparisonOperator")? {
        None => return Err(missing("ComparisonOperator")),
        Some(c) => Comparison::parse(c).ok_or_else(|| {
            invalid(format!(
                "The parameter ComparisonOperator must be a value in the set [ {} ] (got {c}); anomaly-detection operators need a band spillway does not compute.",
                Comparison::NAMES.join(", ")
            ))
        })?,
    };
    let threshold = match input.get("Threshold") {
        None => return Err(missing("Threshold")),
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite())
            .ok_or_else(|| invalid("The parameter Threshold must be a number."))?,
    };
    let evaluation_periods = match input.int_opt("EvaluationPeriods")? {
        None => return Err(missing("EvaluationPeriods")),
        Some(n) if (1..=i32::MAX as i64).contains(&n) => n as u32,
        Some(n) => {
            return Err(invalid(format!(
                "The parameter EvaluationPeriods must be at least 1 (got {n})."
            )));
        }
    };
    let datapoints_to_alarm = match input.int_opt("DatapointsToAlarm")? {
        None => None,
        Some(m) if m >= 1 && m <= evaluation_periods as i64 => Some(m as u32),
        Some(m) => {
            return Err(invalid(format!(
                "DatapointsToAlarm ({m}) must be between 1 and EvaluationPeriods ({evaluation_periods})."
            )));
        }
    };
    let treat_missing_data = match input.str_opt("TreatMissingData")? {
        None => None,
        Some(t) => Some(MissingData::parse(t).ok_or_else(|| {
            invalid(format!(
                "The parameter TreatMissingData must be a value in the set [ {} ] (got {t}).",
                MissingData::NAMES.join(", ")
            ))
        })?),
    };
    if let Some(e) = input.str_opt("EvaluateLowSampleCountPercentile")?
        && !matches!(e, "evaluate" | "ignore")
    {
        return Err(ApiError::validation(format!(
            "Option {e} is not supported. Supported options for parameter EvaluateLowSampleCountPercentile are evaluate and ignore."
        )));
    }
    let (metric_wire, source) = alarm_metric(input)?;
    let period = match &source {
        Source::Queries { period, .. } | Source::TargetTracking { period, .. } => *period,
    };
    let limit = if period >= 3600 { 7 * 86400 } else { 86400 };
    if evaluation_periods as i64 * period > limit {
        return Err(invalid(format!(
            "The evaluation period (EvaluationPeriods {evaluation_periods} x Period {period} s) must not exceed {limit} seconds."
        )));
    }
    let tags = tags(input)?;
    let arns = app.arns();
    let now = app.clock.now();
    let alarm = Alarm {
        name: name.to_string(),
        arn: alarm_arn(&arns, name),
        description,
        updated: now,
        actions_enabled: input.bool_opt("ActionsEnabled")?.unwrap_or(true),
        ok_actions: actions(input, "OKActions", &arns.region)?,
        alarm_actions: actions(input, "AlarmActions", &arns.region)?,
        insufficient_data_actions: actions(input, "InsufficientDataActions", &arns.region)?,
        metric_wire,
        source,
        threshold,
        comparison,
        evaluation_periods,
        datapoints_to_alarm,
        treat_missing_data,
        state: StateValue::InsufficientData,
        state_reason: "Unchecked: Initial alarm creation".into(),
        state_reason_data: None,
        state_updated: now,
        state_transitioned: now,
        owner_policy: None,
        actions_ran: None,
    };
    control::apply(app, Command::PutAlarm(Box::new(alarm), tags)).await?;
    Ok(json!({}))
}

/// `Tags`: at most 50 `{Key, Value}`.
fn tags(input: &Obj<'_>) -> Result<Vec<Tag>, ApiError> {
    let Some(list) = input.list_opt("Tags")? else {
        return Ok(vec![]);
    };
    if list.len() > 50 {
        return Err(invalid("The collection Tags must not have a size greater than 50."));
    }
    let mut out = vec![];
    for (i, v) in list.iter().enumerate() {
        let t = input.member("Tags", i, v)?;
        out.push(Tag {
            key: t.str_req("Key")?.to_string(),
            value: t.get("Value").and_then(Value::as_str).unwrap_or("").to_string(),
        });
    }
    Ok(out)
}

/// The alarm's metric: one `MetricName`/`Namespace`/`Statistic`/`Dimensions`/`Period`, or
/// `Metrics` (metric math, exactly one query returning data). Returns the members to echo and
/// where the data points come from.
fn alarm_metric(input: &Obj<'_>) -> Result<(Map<String, Value>, Source), ApiError> {
    let single = [
        "MetricName",
        "Namespace",
        "Statistic",
        "ExtendedStatistic",
        "Dimensions",
        "Period",
        "Unit",
    ];
    let mut wire = Map::new();
    match (input.get("Metrics"), input.get("MetricName")) {
        (Some(_), Some(_)) => Err(combination(
            "Metrics cannot be used with MetricName, Namespace, Statistic, Dimensions or Period.",
        )),
        (None, None) => Err(missing("MetricName")),
        (Some(m), None) => {
            if let Some(k) = single.iter().find(|k| input.get(k).is_some()) {
                return Err(combination(format!("Metrics cannot be used with {k}.")));
            }
            let queries = parse_queries_at(input, "Metrics")?;
            // A cycle through expressions (which GetMetricData refuses) is refused now, not
            // found at every evaluation.
            crate::telemetry::query::evaluate(&crate::telemetry::metrics::Metrics::disabled(60), &queries, 0.0, 0.0)
                .map_err(invalid)?;
            let returning: Vec<&str> = queries
                .iter()
                .filter(|q| q.return_data)
                .map(|q| q.id.as_str())
                .collect();
            let [result] = returning.as_slice() else {
                return Err(invalid(format!(
                    "Exactly one element of the Metrics list must return data (found {}).",
                    returning.len()
                )));
            };
            let mut period = 0;
            let mut stored = vec![];
            for q in &queries {
                stored.push(match &q.kind {
                    QueryKind::Stat {
                        selector,
                        metric,
                        stat,
                        period: p,
                    } => {
                        check_period(*p, "Metrics.member.N.MetricStat.Period")?;
                        period = period.max(*p);
                        StoredQuery {
                            id: q.id.clone(),
                            stat: selector.as_ref().map(|s| stat_tuple(s, metric, *stat, *p)),
                            expression: None,
                        }
                    }
                    QueryKind::Expression { expression, .. } => StoredQuery {
                        id: q.id.clone(),
                        stat: None,
                        expression: Some(expression.clone()),
                    },
                });
            }
            if period == 0 {
                return Err(invalid("The Metrics list must contain at least one MetricStat."));
            }
            wire.insert("Metrics".into(), m.clone());
            Ok((
                wire,
                Source::Queries {
                    queries: stored,
                    result: result.to_string(),
                    period,
                },
            ))
        }
        (None, Some(_)) => {
            let metric = input.str_req("MetricName")?;
            let namespace = input.str_req("Namespace")?;
            if input.get("ExtendedStatistic").is_some() {
                let stat = input.str_req("ExtendedStatistic")?;
                return Err(invalid(format!(
                    "The value {stat} for parameter ExtendedStatistic is not supported by spillway, which keeps no percentiles; use Statistic (Average, Sum, SampleCount, Maximum, Minimum)."
                )));
            }
            let stat = parse_stat(input.str_req("Statistic")?, "Statistic")?;
            let period = input.period_req("Period")?;
            check_period(period, "Period")?;
            let dims = input.dimensions("Dimensions", true, 30)?;
            input.unit_opt("Unit")?;
            for k in single {
                if let Some(v) = input.get(k) {
                    wire.insert(k.into(), v.clone());
                }
            }
            wire.entry("Dimensions").or_insert_with(|| json!([]));
            let selector = Selector::of(Some(namespace), metric, &dims);
            Ok((
                wire,
                Source::Queries {
                    queries: vec![StoredQuery {
                        id: "m1".into(),
                        stat: selector.as_ref().map(|s| stat_tuple(s, metric, stat, period)),
                        expression: None,
                    }],
                    result: "m1".into(),
                    period,
                },
            ))
        }
    }
}

fn stat_tuple(
    s: &Selector,
    metric: &str,
    stat: crate::telemetry::metrics::Statistic,
    period: i64,
) -> (String, String, String, Option<String>, String, i64) {
    (
        metric.to_string(),
        s.endpoint.clone(),
        s.variant.clone(),
        s.instance_type.clone(),
        serde_json::to_value(stat)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        period,
    )
}

/// `MaxRecords` (1 to 100, default `default`).
fn max_records(input: &Obj<'_>, default: usize) -> Result<usize, ApiError> {
    match input.int_opt("MaxRecords")? {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "The parameter MaxRecords must be between 1 and 100 (got {n})."
        ))),
    }
}

/// A page of `items` from `NextToken` on.
fn page(
    operation: &str,
    items: Vec<Value>,
    input: &Obj<'_>,
    max: usize,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start = parse_token(operation, input.str_opt("NextToken")?, bad_token)?;
    if start > items.len() {
        return Err(bad_token(format!(
            "The NextToken {:?} is not one spillway handed out.",
            input.str_opt("NextToken")?.unwrap_or("")
        )));
    }
    let end = (start + max).min(items.len());
    Ok((
        items[start..end].to_vec(),
        (end < items.len()).then(|| token(operation, end)),
    ))
}

fn state_filter(input: &Obj<'_>) -> Result<Option<StateValue>, ApiError> {
    input
        .str_opt("StateValue")?
        .map(|s| {
            StateValue::parse(s).ok_or_else(|| {
                invalid(format!(
                    "The parameter StateValue must be a value in the set [ OK, ALARM, INSUFFICIENT_DATA ] (got {s})."
                ))
            })
        })
        .transpose()
}

/// Whether the request's `AlarmTypes` (if any) include metric alarms (spillway has no
/// composite alarms).
fn wants_metric_alarms(input: &Obj<'_>) -> Result<bool, ApiError> {
    let Some(types) = input.list_opt("AlarmTypes")? else {
        return Ok(true);
    };
    let mut metric = false;
    for t in types {
        match t.as_str() {
            Some("MetricAlarm") => metric = true,
            Some("CompositeAlarm") => {}
            _ => {
                return Err(invalid(format!(
                    "The parameter AlarmTypes must contain values in the set [ CompositeAlarm, MetricAlarm ] (got {t})."
                )));
            }
        }
    }
    Ok(metric)
}

fn describe_alarms(app: &Arc<App>, input: &Obj<'_>) -> Result<Value, ApiError> {
    let names = names(input, false)?;
    let prefix = input.str_opt("AlarmNamePrefix")?;
    if !names.is_empty() && prefix.is_some() {
        return Err(combination("AlarmNames and AlarmNamePrefix cannot be used together."));
    }
    if input.get("ChildrenOfAlarmName").is_some() || input.get("ParentsOfAlarmName").is_some() {
        return Err(invalid(
            "ChildrenOfAlarmName and ParentsOfAlarmName name composite alarms, which spillway does not have.",
        ));
    }
    let state = state_filter(input)?;
    let action_prefix = input.str_opt("ActionPrefix")?;
    let max = max_records(input, 50)?;
    let metric = wants_metric_alarms(input)?;
    let items: Vec<Value> = alarms::all(app)?
        .into_iter()
        .filter(|_| metric)
        .filter(|a| names.is_empty() || names.contains(&a.name))
        .filter(|a| prefix.is_none_or(|p| a.name.starts_with(p)))
        .filter(|a| state.is_none_or(|s| a.state == s))
        .filter(|a| {
            action_prefix.is_none_or(|p| {
                a.ok_actions
                    .iter()
                    .chain(&a.alarm_actions)
                    .chain(&a.insufficient_data_actions)
                    .any(|x| x.starts_with(p))
            })
        })
        .map(|a| a.to_wire())
        .collect();
    let (items, next) = page("DescribeAlarms", items, input, max)?;
    let mut out = json!({"MetricAlarms": items, "CompositeAlarms": []});
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Ok(out)
}

fn describe_alarms_for_metric(app: &Arc<App>, input: &Obj<'_>) -> Result<Value, ApiError> {
    let metric = input.str_req("MetricName")?;
    let namespace = input.str_req("Namespace")?;
    let dims = input.dimensions("Dimensions", true, 30)?;
    let statistic = input.str_opt("Statistic")?;
    let period = input.int_opt("Period")?;
    let unit = input.unit_opt("Unit")?;
    let want_dims: Vec<Value> = dims.iter().map(|d| json!({"Name": d.name, "Value": d.value})).collect();
    let same_dims = |v: Option<&Value>| {
        let have: Vec<&Value> = v.and_then(Value::as_array).into_iter().flatten().collect();
        have.len() == want_dims.len() && want_dims.iter().all(|d| have.contains(&d))
    };
    let items: Vec<Value> = alarms::all(app)?
        .into_iter()
        .filter(|a| {
            let w = &a.metric_wire;
            w.get("MetricName").and_then(Value::as_str) == Some(metric)
                && w.get("Namespace").and_then(Value::as_str) == Some(namespace)
                && (input.get("Dimensions").is_none() || same_dims(w.get("Dimensions")))
                && statistic.is_none_or(|s| w.get("Statistic").and_then(Value::as_str) == Some(s))
                && period.is_none_or(|p| w.get("Period").and_then(Value::as_i64) == Some(p))
                && unit.is_none_or(|u| w.get("Unit").and_then(Value::as_str) == Some(u))
        })
        .map(|a| a.to_wire())
        .collect();
    Ok(json!({ "MetricAlarms": items }))
}

async fn set_alarm_state(app: &Arc<App>, input: &Obj<'_>) -> Result<Value, ApiError> {
    let name = input.str_req("AlarmName")?.to_string();
    let state = match state_filter(input)? {
        Some(s) => s,
        None => return Err(missing("StateValue")),
    };
    let reason = bounded(input, "StateReason", 0, 1023)?
        .ok_or_else(|| missing("StateReason"))?
        .to_string();
    let data = bounded(input, "StateReasonData", 0, 4000)?.map(str::to_string);
    if let Some(d) = &data
        && serde_json::from_str::<Value>(d).is_err()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidFormat,
            "StateReasonData must be valid JSON.",
        ));
    }
    control::apply(
        app,
        Command::SetAlarmState {
            name,
            state,
            reason,
            data,
        },
    )
    .await?;
    Ok(json!({}))
}

fn describe_alarm_history(app: &Arc<App>, input: &Obj<'_>) -> Result<Value, ApiError> {
    let name = input.str_opt("AlarmName")?;
    let kind = input.str_opt("HistoryItemType")?;
    if let Some(k) = kind
        && !["ConfigurationUpdate", "StateUpdate", "Action"].contains(&k)
    {
        return Err(invalid(format!(
            "The parameter HistoryItemType must be a value in the set [ ConfigurationUpdate, StateUpdate, Action ] (got {k})."
        )));
    }
    let start = input
        .get("StartDate")
        .map(|_| input.time_req("StartDate"))
        .transpose()?;
    let end = input.get("EndDate").map(|_| input.time_req("EndDate")).transpose()?;
    let ascending = match input.str_opt("ScanBy")? {
        None | Some("TimestampDescending") => false,
        Some("TimestampAscending") => true,
        Some(other) => {
            return Err(invalid(format!(
                "The parameter ScanBy must be a value in the set [ TimestampDescending, TimestampAscending ] (got {other})."
            )));
        }
    };
    let max = max_records(input, 100)?;
    let metric = wants_metric_alarms(input)?;
    let mut items: Vec<HistoryItem> = alarms::history(app)?
        .into_iter()
        .filter(|_| metric)
        .filter(|h| name.is_none_or(|n| h.alarm_name == n))
        .filter(|h| kind.is_none_or(|k| h.kind == k))
        .filter(|h| start.is_none_or(|s| h.time >= s) && end.is_none_or(|e| h.time <= e))
        .collect();
    if !ascending {
        items.reverse();
    }
    let (items, next) = page(
        "DescribeAlarmHistory",
        items.iter().map(HistoryItem::to_wire).collect(),
        input,
        max,
    )?;
    let mut out = json!({ "AlarmHistoryItems": items });
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Ok(out)
}
