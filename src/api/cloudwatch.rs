//! CloudWatch metric reads, as botocore 1.44.8 speaks them: awsJson1_0 on `POST /` with
//! `X-Amz-Target: GraniteServiceVersion20100801.<Op>`, and query-compatible errors (`__type` plus
//! `x-amzn-query-error: <QueryCode>;Sender`, which botocore maps to the modelled exception
//! classes). `GetMetricStatistics`, `GetMetricData` (with `+ - * /` metric math over query ids)
//! and `ListMetrics` answer from the in-process store (`crate::metrics`) for the namespaces
//! `AWS/SageMaker` (invocation and fleet metrics) and `/aws/sagemaker/Endpoints` (per-instance
//! utilization), with the dimension sets `{EndpointName, VariantName}` (all instance types
//! together) and `{EndpointName, VariantName, InstanceType}`. Periods may be any whole number of
//! seconds, because the store keeps one-second buckets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::pagination;
use crate::core::model::Timestamp;
use crate::core::scaling::{eval_expression, expression_refs};
use crate::core::time::days_from_civil;
use crate::error::{ApiError, ErrorCode};
use crate::telemetry::metrics::{
    BACKLOG_METRICS, COMPONENT_METRICS, INSTANCE_METRICS, METRICS, Metrics, Statistic, period_start,
};
use crate::telemetry::query::{Dimension, Query, QueryKind, Selector, evaluate};
pub use crate::telemetry::query::{INSTANCE_NAMESPACE, NAMESPACE};

/// The `X-Amz-Target` service prefix of CloudWatch's JSON protocol.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

/// CloudWatch's limit on the data points of one `GetMetricStatistics` call.
const MAX_STATISTICS_DATAPOINTS: i64 = 1440;

/// `GetMetricData`'s default (and largest) page, in data points.
const DEFAULT_MAX_DATAPOINTS: usize = 100_800;

/// `GetMetricData` takes at most this many queries.
const MAX_QUERIES: usize = 500;

/// `ListMetrics` answers at most this many metrics per page.
const LIST_PAGE: usize = 500;

/// `ListMetrics` `RecentlyActive = PT3H`.
const RECENTLY_ACTIVE_S: f64 = 3.0 * 3600.0;

const STATISTICS: &str = "[Average, Sum, SampleCount, Maximum, Minimum]";

/// Every `StandardUnit` of the model.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

crate::operations! {
    /// The CloudWatch operations spillway implements (reads of its own metrics: AWS authorizes
    /// them on `*`).
    pub(crate) enum CloudWatchOp: "cloudwatch" {
        GetMetricStatistics(Map<String, Value>) => any,
        GetMetricData(Map<String, Value>) => any,
        ListMetrics(Map<String, Value>) => any,
        PutMetricAlarm(Map<String, Value>) => arn |i, a| super::alarms::alarm_resource(i, a),
        DescribeAlarms(Map<String, Value>) => any,
        DescribeAlarmsForMetric(Map<String, Value>) => any,
        DeleteAlarms(Map<String, Value>) => arn |i, a| super::alarms::first_alarm(i, a),
        SetAlarmState(Map<String, Value>) => arn |i, a| super::alarms::alarm_resource(i, a),
        DescribeAlarmHistory(Map<String, Value>) => any,
        EnableAlarmActions(Map<String, Value>) => arn |i, a| super::alarms::first_alarm(i, a),
        DisableAlarmActions(Map<String, Value>) => arn |i, a| super::alarms::first_alarm(i, a),
        TagResource(Map<String, Value>) => arn |i, _a| super::alarms::tagged_resource(i),
        UntagResource(Map<String, Value>) => arn |i, _a| super::alarms::tagged_resource(i),
        ListTagsForResource(Map<String, Value>) => arn |i, _a| super::alarms::tagged_resource(i),
    }
}

impl CloudWatchOp {
    /// Whether it is one of the alarm operations (`super::alarms` runs them).
    pub(crate) fn is_alarm(&self) -> bool {
        !matches!(
            self,
            Self::GetMetricStatistics(_) | Self::GetMetricData(_) | Self::ListMetrics(_)
        )
    }
}

/// The tags `PutMetricAlarm` and `TagResource` bring (`aws:RequestTag/<key>`, `aws:TagKeys`),
/// the keys `UntagResource` removes (`aws:TagKeys`); the operations on several alarms act on
/// each of them.
impl super::ops::Conditions for CloudWatchOp {
    fn request_conditions(&self, ctx: &mut crate::core::policy::Context) {
        match self {
            Self::PutMetricAlarm(i) | Self::TagResource(i) => {
                let tags: Vec<(&str, &str)> = i
                    .get("Tags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| Some((t.get("Key")?.as_str()?, t.get("Value")?.as_str().unwrap_or(""))))
                    .collect();
                if !tags.is_empty() || matches!(self, Self::TagResource(_)) {
                    super::ops::tag_conditions(ctx, tags);
                }
            }
            Self::UntagResource(i) => {
                let keys: Vec<&str> = i
                    .get("TagKeys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                ctx.insert("aws:TagKeys", keys);
            }
            _ => {}
        }
    }

    fn also_on(&self, arns: &super::ops::Arns) -> Vec<crate::core::iam::Resource> {
        match self {
            Self::DeleteAlarms(i) | Self::EnableAlarmActions(i) | Self::DisableAlarmActions(i) => {
                super::alarms::other_alarms(i, arns)
            }
            _ => vec![],
        }
    }
}

/// Runs one operation at time `now`.
pub(crate) fn dispatch(metrics: &Metrics, op: &CloudWatchOp, now: Timestamp) -> Result<Value, ApiError> {
    let obj = |map| Obj {
        map,
        path: String::new(),
    };
    match op {
        CloudWatchOp::GetMetricStatistics(input) => get_metric_statistics(metrics, &obj(input)),
        CloudWatchOp::GetMetricData(input) => get_metric_data(metrics, &obj(input), now),
        CloudWatchOp::ListMetrics(input) => list_metrics(metrics, &obj(input), now),
        _ => Err(ApiError::internal("alarm operations are run by api::alarms")),
    }
}

// ------------------------------------------------------------------------------------------------
// errors
// ------------------------------------------------------------------------------------------------

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameterValueException, message)
}

pub(super) fn missing(parameter: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MissingRequiredParameterException,
        format!("The parameter {parameter} is required."),
    )
}

pub(super) fn combination(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameterCombinationException, message)
}

pub(super) fn bad_token(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidNextToken, message)
}

// ------------------------------------------------------------------------------------------------
// reading the request
// ------------------------------------------------------------------------------------------------

/// A JSON object of the request and its query-style path (`MetricDataQueries.member.1`).
pub(super) struct Obj<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) path: String,
}

impl<'a> Obj<'a> {
    pub(super) fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, expected: &str) -> ApiError {
        invalid(format!("The parameter {} must be {expected}.", self.name(key)))
    }

    pub(super) fn str_opt(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                Err(invalid(format!("The parameter {} must not be empty.", self.name(key))))
            }
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    pub(super) fn str_req(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str_opt(key)?.ok_or_else(|| missing(&self.name(key)))
    }

    pub(super) fn int_opt(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a whole number")),
            Some(_) => Err(self.wrong_type(key, "a whole number")),
        }
    }

    pub(super) fn bool_opt(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "true or false")),
        }
    }

    pub(super) fn list_opt(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong_type(key, "a list")),
        }
    }

    pub(super) fn obj_opt(&self, key: &str) -> Result<Option<Obj<'a>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj {
                map: m,
                path: self.name(key),
            })),
            Some(_) => Err(self.wrong_type(key, "a structure")),
        }
    }

    /// The `i`th (0-based) member of the list `key`, as an object.
    pub(super) fn member(&self, key: &str, i: usize, v: &'a Value) -> Result<Obj<'a>, ApiError> {
        let path = format!("{}.member.{}", self.name(key), i + 1);
        match v {
            Value::Object(m) => Ok(Obj { map: m, path }),
            _ => Err(invalid(format!("The parameter {path} must be a structure."))),
        }
    }

    /// A timestamp: epoch seconds (what botocore sends) or an ISO 8601 string.
    pub(super) fn time_req(&self, key: &str) -> Result<Timestamp, ApiError> {
        let t = match self.get(key) {
            None => return Err(missing(&self.name(key))),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok().or_else(|| parse_iso8601(s)),
            Some(_) => None,
        };
        t.filter(|t| t.is_finite()).ok_or_else(|| {
            invalid(format!(
                "The parameter {} must be a timestamp: seconds since the epoch or an ISO 8601 date and time.",
                self.name(key)
            ))
        })
    }

    pub(super) fn period_req(&self, key: &str) -> Result<i64, ApiError> {
        match self.int_opt(key)? {
            None => Err(missing(&self.name(key))),
            Some(p) if p >= 1 => Ok(p),
            Some(p) => Err(invalid(format!(
                "The parameter {} must be a whole number of seconds of at least 1 (got {p}).",
                self.name(key)
            ))),
        }
    }

    pub(super) fn unit_opt(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        let unit = self.str_opt(key)?;
        if let Some(u) = unit
            && !UNITS.contains(&u)
        {
            return Err(invalid(format!(
                "The parameter {} must be a value in the set [ {} ].",
                self.name(key),
                UNITS.join(", ")
            )));
        }
        Ok(unit)
    }

    /// `Dimensions`: `[{Name, Value}]`; `Value` may be left out in `ListMetrics` filters.
    pub(super) fn dimensions(&self, key: &str, value_required: bool, max: usize) -> Result<Vec<Dimension>, ApiError> {
        let Some(list) = self.list_opt(key)? else {
            return Ok(vec![]);
        };
        if list.len() > max {
            return Err(invalid(format!(
                "The collection {} must not have a size greater than {max}.",
                self.name(key)
            )));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let d = self.member(key, i, v)?;
            let name = d.str_req("Name")?.to_string();
            let value = if value_required {
                Some(d.str_req("Value")?.to_string())
            } else {
                d.str_opt("Value")?.map(str::to_string)
            };
            out.push(Dimension { name, value });
        }
        Ok(out)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space may stand for `T`; no zone means UTC).
fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, rest) = s.split_at_checked(10)?;
    let mut dp = date.split('-');
    let (y, m, d): (i64, i64, i64) = (
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) as f64 * 86_400.0;
    if rest.is_empty() {
        return Some(secs);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))?;
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut cp = clock.split(':');
    let h: f64 = cp.next()?.parse().ok()?;
    let mi: f64 = cp.next()?.parse().ok()?;
    let sec: f64 = cp.next().map_or(Some(0.0), |x| x.parse().ok())?;
    if cp.next().is_some() || !(0.0..24.0).contains(&h) || !(0.0..60.0).contains(&mi) || !(0.0..61.0).contains(&sec) {
        return None;
    }
    secs += h * 3600.0 + mi * 60.0 + sec;
    match offset {
        "" | "Z" | "z" => {}
        o => {
            let sign = if o.starts_with('-') { 1.0 } else { -1.0 };
            let o = &o[1..];
            let (oh, om) = o.split_once(':').unwrap_or((o.get(..2)?, o.get(2..).unwrap_or("0")));
            let (oh, om): (f64, f64) = (oh.parse().ok()?, if om.is_empty() { 0.0 } else { om.parse().ok()? });
            secs += sign * (oh * 3600.0 + om * 60.0);
        }
    }
    Some(secs)
}

fn check_window(start: Timestamp, end: Timestamp) -> Result<(), ApiError> {
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    Ok(())
}

fn stat_name(s: Statistic) -> &'static str {
    match s {
        Statistic::Sum => "Sum",
        Statistic::Average => "Average",
        Statistic::Maximum => "Maximum",
        Statistic::Minimum => "Minimum",
        Statistic::SampleCount => "SampleCount",
    }
}

/// `p99`, `p99.9`, `tm90`, `TM(10%:90%)`, `IQM`, … : statistics CloudWatch knows that spillway's
/// store cannot answer (it keeps sums, counts and extremes per second, no distributions).
fn is_extended_statistic(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if lower == "iqm" {
        return true;
    }
    let body = ["tm", "wm", "tc", "ts", "pr", "p"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or("");
    !body.is_empty()
        && (body.starts_with('(') && body.ends_with(')')
            || body.parse::<f64>().is_ok_and(|v| (0.0..=100.0).contains(&v)))
}

fn unsupported_percentile(stat: &str, parameter: &str) -> ApiError {
    invalid(format!(
        "The statistic {stat:?} in {parameter} is not supported by spillway: its metrics store keeps sums, \
         counts, minima and maxima per second but no distributions, so percentiles and trimmed statistics \
         cannot be computed. Use one of {STATISTICS}."
    ))
}

// ------------------------------------------------------------------------------------------------
// metrics and their series
// ------------------------------------------------------------------------------------------------

/// The CloudWatch unit SageMaker publishes a metric with.
fn unit_of(metric: &str) -> &'static str {
    match metric {
        "ModelLatency" | "OverheadLatency" => "Microseconds",
        "ApproximateAgeOfOldestRequest" => "Seconds",
        "ApproximateBacklogSize" | "ApproximateBacklogSizePerInstance" | "HasBacklogWithoutCapacity" => "Count",
        "CPUUtilization" | "MemoryUtilization" | "GPUUtilization" | "GPUMemoryUtilization" | "DiskUtilization" => {
            "Percent"
        }
        _ => "None",
    }
}

/// Whether a requested `Unit` selects the metric (CloudWatch answers no data otherwise). The
/// count metrics are published with unit `None`; `Count` is accepted for them too.
fn unit_matches(metric: &str, requested: Option<&str>) -> bool {
    match requested {
        None => true,
        Some(u) => u == unit_of(metric) || (u == "Count" && unit_of(metric) == "None"),
    }
}

/// A page token of `operation`'s listing, back to its offset.
pub(super) fn parse_token(
    operation: &str,
    token: Option<&str>,
    bad: impl Fn(String) -> ApiError,
) -> Result<usize, ApiError> {
    match token {
        None => Ok(0),
        Some(t) => pagination::open(operation, t)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(format!("The NextToken {t:?} is not one spillway handed out."))),
    }
}

/// The page token of `operation`'s listing for `offset`.
pub(super) fn token(operation: &str, offset: usize) -> String {
    pagination::issue(operation, &offset.to_string())
}

// ------------------------------------------------------------------------------------------------
// GetMetricStatistics
// ------------------------------------------------------------------------------------------------

fn get_metric_statistics(m: &Metrics, input: &Obj<'_>) -> Result<Value, ApiError> {
    let namespace = input.str_req("Namespace")?;
    let metric = input.str_req("MetricName")?;
    let dims = input.dimensions("Dimensions", true, 30)?;
    let start = input.time_req("StartTime")?;
    let end = input.time_req("EndTime")?;
    let period = input.period_req("Period")?;
    let unit = input.unit_opt("Unit")?;
    let stats = match (input.list_opt("Statistics")?, input.list_opt("ExtendedStatistics")?) {
        (None, None) => {
            return Err(missing("Statistics or ExtendedStatistics"));
        }
        (Some(_), Some(_)) => {
            return Err(combination(
                "The parameters Statistics and ExtendedStatistics are mutually exclusive; specify one of them.",
            ));
        }
        (None, Some(ext)) => {
            let name = "ExtendedStatistics.member.1";
            let Some(first) = ext.first() else {
                return Err(invalid("The collection ExtendedStatistics must not be empty."));
            };
            let s = first
                .as_str()
                .ok_or_else(|| invalid(format!("The parameter {name} must be a string.")))?;
            if is_extended_statistic(s) && s.starts_with('p') {
                return Err(unsupported_percentile(s, name));
            }
            return Err(invalid(format!(
                "The parameter {name} must be a percentile such as p99 or p99.9 (got {s:?})."
            )));
        }
        (Some(list), None) => {
            if list.is_empty() || list.len() > 5 {
                return Err(invalid("The collection Statistics must have 1 to 5 members."));
            }
            let mut stats = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let name = format!("Statistics.member.{}", i + 1);
                let parsed = s
                    .as_str()
                    .and_then(Statistic::parse)
                    .ok_or_else(|| invalid(format!("The parameter {name} must be a value in the set {STATISTICS}.")))?;
                if !stats.contains(&parsed) {
                    stats.push(parsed);
                }
            }
            stats
        }
    };
    check_window(start, end)?;
    let first = period_start(start.floor() as i64, period);
    let requested = ((end - first as f64) / period as f64).ceil() as i64;
    if requested > MAX_STATISTICS_DATAPOINTS {
        return Err(combination(format!(
            "You have requested up to {requested} datapoints, which exceeds the limit of {MAX_STATISTICS_DATAPOINTS}. \
             You may reduce the datapoints requested by increasing Period, or decreasing the time range."
        )));
    }
    let mut points: BTreeMap<i64, Map<String, Value>> = BTreeMap::new();
    if let Some(sel) = Selector::of(Some(namespace), metric, &dims).filter(|_| unit_matches(metric, unit)) {
        for stat in stats {
            for (t, v) in sel.periods(m, stat, start, end, period) {
                points.entry(t).or_default().insert(stat_name(stat).into(), json!(v));
            }
        }
    }
    let datapoints: Vec<Value> = points
        .into_iter()
        .map(|(t, mut p)| {
            p.insert("Timestamp".into(), json!(t));
            p.insert("Unit".into(), json!(unit_of(metric)));
            Value::Object(p)
        })
        .collect();
    Ok(json!({ "Label": metric, "Datapoints": datapoints }))
}

// ------------------------------------------------------------------------------------------------
// GetMetricData
// ------------------------------------------------------------------------------------------------

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks an expression's syntax with every referenced id set to 1.
fn check_expression(expr: &str, refs: &[String]) -> Result<(), String> {
    let vars: HashMap<String, f64> = refs.iter().map(|r| (r.clone(), 1.0)).collect();
    match eval_expression(expr, &vars) {
        Ok(_) => Ok(()),
        Err(e) if e == "division by zero" => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn parse_stat(stat: &str, parameter: &str) -> Result<Statistic, ApiError> {
    if let Some(s) = Statistic::parse(stat) {
        return Ok(s);
    }
    if is_extended_statistic(stat) {
        return Err(unsupported_percentile(stat, parameter));
    }
    Err(invalid(format!(
        "The parameter {parameter} must be a value in the set {STATISTICS} (got {stat:?})."
    )))
}

pub(super) fn parse_queries(input: &Obj<'_>) -> Result<Vec<Query>, ApiError> {
    parse_queries_at(input, "MetricDataQueries")
}

/// The `MetricDataQuery` list `key` of `input` (`MetricDataQueries`, or an alarm's `Metrics`).
pub(super) fn parse_queries_at(input: &Obj<'_>, key: &str) -> Result<Vec<Query>, ApiError> {
    let Some(list) = input.list_opt(key)? else {
        return Err(missing(key));
    };
    if list.is_empty() {
        return Err(missing(key));
    }
    if list.len() > MAX_QUERIES {
        return Err(invalid(format!(
            "The collection {key} must not have a size greater than {MAX_QUERIES}."
        )));
    }
    let mut queries: Vec<Query> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let q = input.member(key, i, v)?;
        let id = q.str_req("Id")?.to_string();
        if !valid_id(&id) {
            return Err(invalid(format!(
                "The value {id} for parameter {} is not valid: an Id must start with a lowercase letter and \
                 contain only letters, numbers and underscores.",
                q.name("Id")
            )));
        }
        if queries.iter().any(|o| o.id == id) {
            return Err(invalid(format!(
                "The value {id} for parameter {key}.member.N.Id is not unique."
            )));
        }
        let kind = match (q.obj_opt("MetricStat")?, q.str_opt("Expression")?) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(combination(format!(
                    "Exactly one of MetricStat and Expression must be specified in {}.",
                    q.path
                )));
            }
            (Some(ms), None) => {
                let Some(metric) = ms.obj_opt("Metric")? else {
                    return Err(missing(&ms.name("Metric")));
                };
                let namespace = metric.str_opt("Namespace")?;
                let name = metric.str_req("MetricName")?;
                let dims = metric.dimensions("Dimensions", true, 30)?;
                let period = ms.period_req("Period")?;
                let stat = parse_stat(ms.str_req("Stat")?, &ms.name("Stat"))?;
                let unit = ms.unit_opt("Unit")?;
                QueryKind::Stat {
                    selector: Selector::of(namespace, name, &dims).filter(|_| unit_matches(name, unit)),
                    metric: name.to_string(),
                    stat,
                    period,
                }
            }
            (None, Some(expr)) => {
                let refs = expression_refs(expr)
                    .and_then(|refs| check_expression(expr, &refs).map(|_| refs))
                    .map_err(|e| invalid(format!("The expression {expr:?} in {} is not valid: {e}.", q.path)))?;
                QueryKind::Expression {
                    expression: expr.to_string(),
                    refs,
                }
            }
        };
        queries.push(Query {
            id,
            label: q.str_opt("Label")?.map(str::to_string),
            return_data: q.bool_opt("ReturnData")?.unwrap_or(true),
            kind,
        });
    }
    // Every id an expression uses must be another query's.
    for q in &queries {
        if let QueryKind::Expression { expression, refs } = &q.kind {
            for r in refs {
                if r == &q.id || !queries.iter().any(|o| &o.id == r) {
                    return Err(invalid(format!(
                        "The expression {expression:?} of query {} refers to {r:?}, which is not the Id of another query.",
                        q.id
                    )));
                }
            }
        }
    }
    Ok(queries)
}

/// Each returned query with its points in scan order.
type Scanned<'q> = Vec<(&'q Query, Vec<(i64, f64)>)>;

/// A `GetMetricData` page token: where the next page starts, and the end of the window all pages
/// are computed over. The first page that needs a successor freezes the window's end at the last
/// complete second, so that seconds still being recorded cannot shift later pages.
fn data_token(offset: usize, frozen_end: i64) -> String {
    pagination::issue("GetMetricData", &format!("{offset}@{frozen_end}"))
}

fn parse_data_token(token: Option<&str>) -> Result<Option<(usize, i64)>, ApiError> {
    let Some(t) = token else { return Ok(None) };
    pagination::open("GetMetricData", t)
        .and_then(|rest| rest.split_once('@'))
        .and_then(|(o, e)| Some((o.parse().ok()?, e.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| bad_token(format!("The NextToken {t:?} is not one spillway handed out.")))
}

fn get_metric_data(m: &Metrics, input: &Obj<'_>, now: Timestamp) -> Result<Value, ApiError> {
    let queries = parse_queries(input)?;
    let start = input.time_req("StartTime")?;
    let end = input.time_req("EndTime")?;
    check_window(start, end)?;
    let descending = match input.str_opt("ScanBy")? {
        None | Some("TimestampDescending") => true,
        Some("TimestampAscending") => false,
        Some(other) => {
            return Err(invalid(format!(
                "The parameter ScanBy must be a value in the set [ TimestampDescending, TimestampAscending ] (got {other:?})."
            )));
        }
    };
    let max = match input.int_opt("MaxDatapoints")? {
        None => DEFAULT_MAX_DATAPOINTS,
        Some(n) if n >= 1 => (n as usize).min(DEFAULT_MAX_DATAPOINTS),
        Some(n) => {
            return Err(invalid(format!(
                "The parameter MaxDatapoints must be at least 1 (got {n})."
            )));
        }
    };
    let token = parse_data_token(input.str_opt("NextToken")?)?;
    let offset = token.map_or(0, |(o, _)| o);
    // The returned results, each with its points in scan order.
    let results = |end: Timestamp| -> Result<Scanned<'_>, ApiError> {
        let series = evaluate(m, &queries, start, end).map_err(invalid)?;
        Ok(queries
            .iter()
            .filter(|q| q.return_data)
            .map(|q| {
                let mut points: Vec<(i64, f64)> = series
                    .get(&q.id)
                    .map(|s| s.iter().map(|(t, v)| (*t, *v)).collect())
                    .unwrap_or_default();
                if descending {
                    points.reverse();
                }
                (q, points)
            })
            .collect())
    };
    let count = |r: &[(&Query, Vec<(i64, f64)>)]| r.iter().map(|(_, p)| p.len()).sum::<usize>();
    let (results, frozen_end) = match token {
        Some((_, frozen)) => (results((frozen as Timestamp).min(end))?, frozen),
        None => {
            let frozen = (now.floor() as i64).min(end.ceil() as i64);
            let first = results(end)?;
            if count(&first) <= max {
                (first, frozen)
            } else {
                (results((frozen as Timestamp).min(end))?, frozen)
            }
        }
    };
    let total = count(&results);
    if offset > total {
        return Err(bad_token(format!(
            "The NextToken {} is past the end of the results.",
            data_token(offset, frozen_end)
        )));
    }
    let page_end = offset.saturating_add(max).min(total);
    let mut out = Vec::new();
    let mut seen = 0usize;
    for (q, points) in &results {
        let (first, last) = (seen, seen + points.len());
        seen = last;
        let (from, to) = (first.max(offset), last.min(page_end));
        // A result is answered on the page that holds its first remaining point; one without
        // points on the first page.
        let on_page = if points.is_empty() { offset == 0 } else { from < to };
        if !on_page {
            continue;
        }
        let slice = &points[from - first..to - first];
        let label = q.label.clone().unwrap_or_else(|| match &q.kind {
            QueryKind::Stat { metric, .. } => metric.clone(),
            QueryKind::Expression { .. } => q.id.clone(),
        });
        out.push(json!({
            "Id": q.id,
            "Label": label,
            "Timestamps": slice.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            "Values": slice.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "StatusCode": if to < last { "PartialData" } else { "Complete" },
            "Messages": [],
        }));
    }
    let mut resp = json!({ "MetricDataResults": out, "Messages": [] });
    if page_end < total {
        resp["NextToken"] = json!(data_token(page_end, frozen_end));
    }
    Ok(resp)
}

// ------------------------------------------------------------------------------------------------
// ListMetrics
// ------------------------------------------------------------------------------------------------

fn list_metrics(m: &Metrics, input: &Obj<'_>, now: Timestamp) -> Result<Value, ApiError> {
    let namespace = input.str_opt("Namespace")?;
    let metric_name = input.str_opt("MetricName")?;
    let filters = input.dimensions("Dimensions", false, 10)?;
    let offset = parse_token("ListMetrics", input.str_opt("NextToken")?, invalid)?;
    let since = match input.str_opt("RecentlyActive")? {
        None => now - m.retention_seconds() as f64,
        Some("PT3H") => now - RECENTLY_ACTIVE_S,
        Some(other) => {
            return Err(invalid(format!(
                "The parameter RecentlyActive must be a value in the set [ PT3H ] (got {other:?})."
            )));
        }
    };
    let mut all: Vec<Value> = vec![];
    let matches = |dims: &[(&str, &str)]| {
        filters.iter().all(|f| {
            dims.iter()
                .any(|(n, v)| *n == f.name && f.value.as_deref().is_none_or(|fv| fv == *v))
        })
    };
    let mut list = |ns: &str, metric: &str, keys: &[(String, String, String)]| {
        for dims in dimension_sets(keys).iter().filter(|d| matches(d)) {
            all.push(json!({
                "Namespace": ns,
                "MetricName": metric,
                "Dimensions": dims.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
            }));
        }
    };
    if namespace.is_none_or(|n| n == NAMESPACE) {
        let keys = m.series_keys(since);
        for metric in METRICS.iter().filter(|n| metric_name.is_none_or(|m| m == **n)) {
            list(NAMESPACE, metric, &keys);
        }
    }
    if namespace.is_none_or(|n| n == INSTANCE_NAMESPACE) {
        // A utilization metric is listed for the series that have samples of it (no GPU
        // metrics for instance types without GPUs).
        for metric in INSTANCE_METRICS.iter().filter(|n| metric_name.is_none_or(|m| m == **n)) {
            list(INSTANCE_NAMESPACE, metric, &m.series_keys_with(since, metric));
        }
    }
    if namespace.is_none_or(|n| n == NAMESPACE) {
        // An asynchronous endpoint's backlog metrics: dimension `EndpointName` only.
        let endpoints = m.backlog_endpoints(since);
        for metric in BACKLOG_METRICS.iter().filter(|n| metric_name.is_none_or(|m| m == **n)) {
            for e in &endpoints {
                if matches(&[("EndpointName", e.as_str())]) {
                    all.push(json!({
                                            "Namespace": NAMESPACE,
                                            "MetricName": metric,
                                            "Dimensions": [{"Name": "EndpointName", "Value": e}],
                                        }
                    ));
                }
            }
        }
    }
    if namespace.is_none_or(|n| n == NAMESPACE) {
        // Inference components' metrics: `{InferenceComponentName}` and
        // `{InferenceComponentName, InstanceType}`.
        let keys = m.component_keys(since);
        let mut components: Vec<&str> = keys.iter().map(|(c, _)| c.as_str()).collect();
        components.dedup();
        for metric in COMPONENT_METRICS
            .iter()
            .filter(|n| metric_name.is_none_or(|m| m == **n))
        {
            let sets = components.iter().map(|c| vec![("InferenceComponentName", *c)]).chain(
                keys.iter()
                    .map(|(c, t)| vec![("InferenceComponentName", c.as_str()), ("InstanceType", t.as_str())]),
            );
            for dims in sets.filter(|d| matches(d)) {
                all.push(json!({
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": dims.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
                }));
            }
        }
    }
    if offset > all.len() {
        return Err(invalid(format!(
            "The NextToken {} is past the end of the list.",
            token("ListMetrics", offset)
        )));
    }
    let page_end = (offset + LIST_PAGE).min(all.len());
    let mut resp = json!({ "Metrics": all[offset..page_end] });
    if page_end < all.len() {
        resp["NextToken"] = json!(token("ListMetrics", page_end));
    }
    Ok(resp)
}

/// The dimension sets of some series: `{EndpointName, VariantName}` per variant, then
/// `{EndpointName, VariantName, InstanceType}` per type of that variant.
fn dimension_sets(keys: &[(String, String, String)]) -> Vec<Vec<(&str, &str)>> {
    let variants: BTreeSet<(&str, &str)> = keys.iter().map(|(e, v, _)| (e.as_str(), v.as_str())).collect();
    let mut sets: Vec<Vec<(&str, &str)>> = vec![];
    for (e, v) in variants {
        sets.push(vec![("EndpointName", e), ("VariantName", v)]);
        for (_, _, t) in keys.iter().filter(|(ke, kv, _)| ke == e && kv == v) {
            sets.push(vec![("EndpointName", e), ("VariantName", v), ("InstanceType", t)]);
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{Outcome, Series};
    use std::sync::Arc;

    const E: &str = "ep";
    const V: &str = "AllTraffic";
    const A: &str = "ml.g6.2xlarge";
    const B: &str = "ml.m5.xlarge";

    fn series(t: &'static str) -> Series<'static> {
        Series {
            endpoint: E,
            variant: V,
            instance_type: t,
        }
    }

    /// 1000..1030: 2 requests a second on A (latency 100 µs), 1 a second on B (latency 300 µs).
    fn store() -> Arc<Metrics> {
        let m = Arc::new(Metrics::default());
        for s in 1000..1030 {
            for k in 0..2 {
                m.record_invocation(series(A), 1, Outcome::Success, 100, s as f64 + 0.1 * k as f64);
            }
            m.record_invocation(series(B), 1, Outcome::Success, 300, s as f64 + 0.5);
        }
        m
    }

    fn call(m: &Metrics, op: &str, input: Value) -> Result<Value, ApiError> {
        let op = CloudWatchOp::parse(op, input.to_string().as_bytes()).expect("an operation of the table")?;
        dispatch(m, &op, 1100.0)
    }

    fn dims(t: Option<&str>) -> Value {
        let mut d = vec![
            json!({"Name": "EndpointName", "Value": E}),
            json!({"Name": "VariantName", "Value": V}),
        ];
        if let Some(t) = t {
            d.push(json!({"Name": "InstanceType", "Value": t}));
        }
        Value::Array(d)
    }

    fn stats(m: &Metrics, t: Option<&str>, start: f64, end: f64, period: i64, stats: &[&str]) -> Vec<Value> {
        let r = call(
            m,
            "GetMetricStatistics",
            json!({"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": dims(t),
                   "StartTime": start, "EndTime": end, "Period": period, "Statistics": stats}),
        )
        .unwrap();
        r["Datapoints"].as_array().unwrap().clone()
    }

    #[test]
    fn periods_are_aligned_to_their_boundaries() {
        let m = store();
        // StartTime 1003 rounds down to 1000; periods 1000, 1010, 1020; EndTime 1025 exclusive.
        let dps = stats(&m, Some(A), 1003.0, 1025.0, 10, &["Sum"]);
        let got: Vec<(i64, f64)> = dps
            .iter()
            .map(|d| (d["Timestamp"].as_i64().unwrap(), d["Sum"].as_f64().unwrap()))
            .collect();
        assert_eq!(got, vec![(1000, 20.0), (1010, 20.0), (1020, 10.0)]);
        // Period 7: boundaries are multiples of 7 since the epoch (994, 1001, ...).
        let dps = stats(&m, None, 1000.0, 1014.0, 7, &["Sum", "SampleCount"]);
        let got: Vec<(i64, f64, f64)> = dps
            .iter()
            .map(|d| {
                let t = d["Timestamp"].as_i64().unwrap();
                (t, d["Sum"].as_f64().unwrap(), d["SampleCount"].as_f64().unwrap())
            })
            .collect();
        assert_eq!(got, vec![(994, 3.0, 3.0), (1001, 21.0, 21.0), (1008, 18.0, 18.0)]);
        assert!(got.iter().all(|(t, _, _)| t % 7 == 0));
        // One-second periods are allowed.
        assert_eq!(stats(&m, Some(B), 1000.0, 1005.0, 1, &["Sum"]).len(), 5);
    }

    #[test]
    fn variant_series_is_the_sum_of_the_types() {
        let m = store();
        let total = |t| {
            stats(&m, t, 1000.0, 1030.0, 30, &["Sum"])
                .iter()
                .map(|d| d["Sum"].as_f64().unwrap())
                .sum::<f64>()
        };
        assert_eq!(total(Some(A)), 60.0);
        assert_eq!(total(Some(B)), 30.0);
        assert_eq!(total(None), 90.0);
    }

    #[test]
    fn latency_statistics_and_unit() {
        let m = store();
        let r = call(
            &m,
            "GetMetricStatistics",
            json!({"Namespace": NAMESPACE, "MetricName": "ModelLatency", "Dimensions": dims(None),
                   "StartTime": 1000, "EndTime": 1030, "Period": 60,
                   "Statistics": ["Minimum", "Maximum", "Average"]}),
        )
        .unwrap();
        let d = &r["Datapoints"][0];
        assert_eq!(d["Minimum"], json!(100.0));
        assert_eq!(d["Maximum"], json!(300.0));
        assert!((d["Average"].as_f64().unwrap() - 500.0 / 3.0).abs() < 1e-9);
        assert_eq!(d["Unit"], "Microseconds");
        assert_eq!(r["Label"], "ModelLatency");
        // A different unit selects nothing, as in CloudWatch.
        let r = call(
            &m,
            "GetMetricStatistics",
            json!({"Namespace": NAMESPACE, "MetricName": "ModelLatency", "Dimensions": dims(None),
                   "StartTime": 1000, "EndTime": 1030, "Period": 60, "Statistics": ["Sum"], "Unit": "Seconds"}),
        )
        .unwrap();
        assert_eq!(r["Datapoints"], json!([]));
    }

    #[test]
    fn unknown_namespaces_metrics_and_dimension_sets_have_no_data() {
        let m = store();
        for (ns, name, d) in [
            ("AWS/EC2", "Invocations", dims(None)),
            (NAMESPACE, "NoSuchMetric", dims(None)),
            (NAMESPACE, "Invocations", json!([{"Name": "EndpointName", "Value": E}])),
            (
                NAMESPACE,
                "Invocations",
                json!([{"Name": "EndpointName", "Value": "other"}, {"Name": "VariantName", "Value": V}]),
            ),
        ] {
            let r = call(
                &m,
                "GetMetricStatistics",
                json!({"Namespace": ns, "MetricName": name, "Dimensions": d,
                       "StartTime": 1000, "EndTime": 1030, "Period": 60, "Statistics": ["Sum"]}),
            )
            .unwrap();
            assert_eq!(r["Datapoints"], json!([]), "{ns} {name}");
        }
    }

    #[test]
    fn statistics_errors_have_modelled_codes() {
        let m = store();
        let base = json!({"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": dims(None),
                          "StartTime": 1000, "EndTime": 1030, "Period": 60, "Statistics": ["Sum"]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v;
            }
            call(&m, "GetMetricStatistics", b).unwrap_err().code
        };
        // The model's range (Period at least 1): the model check's ValidationError.
        assert_eq!(with("Period", json!(0)), ErrorCode::ValidationException);
        assert_eq!(
            with("Period", Value::Null),
            ErrorCode::MissingRequiredParameterException
        );
        assert_eq!(
            with("Statistics", json!(["Median"])),
            ErrorCode::InvalidParameterValueException
        );
        assert_eq!(with("EndTime", json!(900)), ErrorCode::InvalidParameterValueException);
        assert_eq!(
            with("ExtendedStatistics", json!(["p99"])),
            ErrorCode::InvalidParameterCombinationException
        );
        // At most 1440 datapoints: 1441 one-second periods are too many.
        let mut many = base.clone();
        many["Period"] = json!(1);
        many["EndTime"] = json!(2441);
        assert_eq!(
            call(&m, "GetMetricStatistics", many.clone()).unwrap_err().code,
            ErrorCode::InvalidParameterCombinationException
        );
        many["EndTime"] = json!(2440);
        assert!(call(&m, "GetMetricStatistics", many).is_ok());
        let mut ext = base.clone();
        ext.as_object_mut().unwrap().remove("Statistics");
        ext["ExtendedStatistics"] = json!(["p99"]);
        let e = call(&m, "GetMetricStatistics", ext).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameterValueException);
        assert!(e.message.contains("not supported by spillway"), "{}", e.message);
        assert!(CloudWatchOp::parse("PutMetricData", b"{}").is_none());
    }

    #[test]
    fn error_response_carries_the_query_code() {
        use crate::error::Protocol;
        let resp = invalid("bad").into_response_for(Protocol::CloudWatch);
        assert_eq!(resp.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["x-amzn-query-error"], "InvalidParameterValue;Sender");
        assert_eq!(resp.headers()["content-type"], "application/x-amz-json-1.0");
        let resp = ApiError::unknown_operation("no").into_response_for(Protocol::CloudWatch);
        assert!(resp.headers().get("x-amzn-query-error").is_none());
    }

    fn stat_query(id: &str, t: Option<&str>, period: i64, ret: bool) -> Value {
        json!({"Id": id, "ReturnData": ret, "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": dims(t)},
            "Period": period, "Stat": "Sum"}})
    }

    fn data(m: &Metrics, queries: Value, extra: Value) -> Result<Value, ApiError> {
        let mut input = json!({"MetricDataQueries": queries, "StartTime": 1000, "EndTime": 1030});
        for (k, v) in extra.as_object().unwrap() {
            input[k] = v.clone();
        }
        call(m, "GetMetricData", input)
    }

    fn result<'a>(r: &'a Value, id: &str) -> &'a Value {
        r["MetricDataResults"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["Id"] == id)
            .unwrap()
    }

    #[test]
    fn metric_math_over_two_types() {
        let m = store();
        let r = data(
            &m,
            json!([
                stat_query("a", Some(A), 10, false),
                stat_query("b", Some(B), 10, false),
                {"Id": "total", "Expression": "a + b", "Label": "Both"},
                {"Id": "share", "Expression": "100 * a / (a + b)"},
                {"Id": "twice", "Expression": "total * 2"},
                stat_query("v", None, 10, true),
            ]),
            json!({"ScanBy": "TimestampAscending"}),
        )
        .unwrap();
        assert_eq!(r["MetricDataResults"].as_array().unwrap().len(), 4, "{r}");
        let total = result(&r, "total");
        assert_eq!(total["Label"], "Both");
        assert_eq!(total["Timestamps"], json!([1000, 1010, 1020]));
        assert_eq!(total["Values"], json!([30.0, 30.0, 30.0]));
        assert_eq!(total["StatusCode"], "Complete");
        assert_eq!(result(&r, "v")["Values"], total["Values"]);
        assert_eq!(result(&r, "v")["Label"], "Invocations");
        let share = result(&r, "share")["Values"].as_array().unwrap().clone();
        assert!(share.iter().all(|v| (v.as_f64().unwrap() - 200.0 / 3.0).abs() < 1e-9));
        assert_eq!(result(&r, "twice")["Values"], json!([60.0, 60.0, 60.0]));
        // Default scan order is descending.
        let r = data(&m, json!([stat_query("a", Some(A), 10, true)]), json!({})).unwrap();
        assert_eq!(result(&r, "a")["Timestamps"], json!([1020, 1010, 1000]));
    }

    #[test]
    fn expressions_join_on_common_timestamps_and_drop_undefined_points() {
        let m = store();
        m.record_invocation(series(A), 1, Outcome::Success, 100, 1050.0);
        let r = data(
            &m,
            json!([
                stat_query("a", Some(A), 10, false),
                stat_query("b", Some(B), 10, false),
                {"Id": "d", "Expression": "a / (b - b)"},
                {"Id": "s", "Expression": "a + b"},
            ]),
            json!({"EndTime": 1060, "ScanBy": "TimestampAscending"}),
        )
        .unwrap();
        assert_eq!(result(&r, "d")["Values"], json!([]));
        // 1050 has only `a`: no point.
        assert_eq!(result(&r, "s")["Timestamps"], json!([1000, 1010, 1020]));
    }

    #[test]
    fn expression_errors() {
        let m = store();
        let bad = |expr: &str| {
            data(
                &m,
                json!([stat_query("a", Some(A), 10, false), {"Id": "e", "Expression": expr}]),
                json!({}),
            )
            .unwrap_err()
        };
        for expr in ["a +", "SUM(METRICS())", "a + zz", "e + 1", "a $ 2", "(a"] {
            assert_eq!(bad(expr).code, ErrorCode::InvalidParameterValueException, "{expr}");
        }
        assert!(bad("SUM(METRICS())").message.contains("not supported"));
        let cyc = data(
            &m,
            json!([{"Id": "x", "Expression": "y + 1"}, {"Id": "y", "Expression": "x + 1"}]),
            json!({}),
        )
        .unwrap_err();
        assert_eq!(cyc.code, ErrorCode::InvalidParameterValueException);
        let both = data(
            &m,
            json!([{"Id": "a", "Expression": "1", "MetricStat": {"Metric": {"MetricName": "Invocations"}, "Period": 60, "Stat": "Sum"}}]),
            json!({}),
        )
        .unwrap_err();
        assert_eq!(both.code, ErrorCode::InvalidParameterCombinationException);
        let dup = data(
            &m,
            json!([stat_query("a", None, 10, true), stat_query("a", None, 10, true)]),
            json!({}),
        );
        assert_eq!(dup.unwrap_err().code, ErrorCode::InvalidParameterValueException);
        let upper = data(&m, json!([stat_query("A", None, 10, true)]), json!({}));
        assert_eq!(upper.unwrap_err().code, ErrorCode::InvalidParameterValueException);
        let mut p99 = stat_query("a", None, 10, true);
        p99["MetricStat"]["Stat"] = json!("p99");
        let e = data(&m, json!([p99]), json!({})).unwrap_err();
        assert!(e.message.contains("not supported by spillway"));
    }

    #[test]
    fn pages_do_not_shift_while_new_seconds_are_recorded() {
        // Pagination newest first while invocations keep arriving: the first page freezes the
        // window's end at the last complete second, so later pages neither repeat nor skip.
        let m = Arc::new(Metrics::default());
        for s in 1000..1010 {
            m.record_invocation(series(A), 1, Outcome::Success, 100, s as f64 + 0.5);
        }
        let queries = json!([stat_query("a", Some(A), 1, true)]);
        let mut input = json!({"MetricDataQueries": queries, "StartTime": 900, "EndTime": 2000, "MaxDatapoints": 3});
        let mut seen = Vec::new();
        let mut now = 1010.2;
        loop {
            // A new second of data arrives before every page.
            m.record_invocation(series(A), 1, Outcome::Success, 100, now);
            let r = dispatch(
                &m,
                &CloudWatchOp::GetMetricData(input.as_object().unwrap().clone()),
                now,
            )
            .unwrap();
            for x in r["MetricDataResults"].as_array().unwrap() {
                seen.extend(x["Timestamps"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()));
            }
            match r.get("NextToken") {
                Some(t) => input["NextToken"] = t.clone(),
                None => break,
            }
            now += 1.0;
        }
        assert_eq!(seen, (1000..1010).rev().collect::<Vec<_>>());
    }

    #[test]
    fn get_metric_data_pages() {
        let m = store();
        let queries = json!([stat_query("a", Some(A), 1, true), stat_query("b", Some(B), 1, true)]);
        let mut token: Option<String> = None;
        let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut pages = 0;
        loop {
            let mut extra = json!({"MaxDatapoints": 25, "ScanBy": "TimestampAscending"});
            if let Some(t) = &token {
                extra["NextToken"] = json!(t);
            }
            let r = data(&m, queries.clone(), extra).unwrap();
            pages += 1;
            let mut n = 0;
            for x in r["MetricDataResults"].as_array().unwrap() {
                let ts: Vec<i64> = x["Timestamps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_i64().unwrap())
                    .collect();
                n += ts.len();
                got.entry(x["Id"].as_str().unwrap().into()).or_default().extend(ts);
            }
            assert!(n <= 25);
            match r.get("NextToken") {
                Some(t) => token = Some(t.as_str().unwrap().into()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<i64> = (1000..1030).collect();
        assert_eq!(got["a"], expected);
        assert_eq!(got["b"], expected);
        let e = data(&m, queries, json!({"NextToken": "nope"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidNextToken);
    }

    #[test]
    fn list_metrics_lists_both_dimension_sets() {
        let m = store();
        let r = call(&m, "ListMetrics", json!({"MetricName": "Invocations"})).unwrap();
        let sets: Vec<Vec<String>> = r["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                x["Dimensions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| format!("{}={}", d["Name"].as_str().unwrap(), d["Value"].as_str().unwrap()))
                    .collect()
            })
            .collect();
        assert_eq!(
            sets,
            vec![
                vec![format!("EndpointName={E}"), format!("VariantName={V}")],
                vec![
                    format!("EndpointName={E}"),
                    format!("VariantName={V}"),
                    format!("InstanceType={A}")
                ],
                vec![
                    format!("EndpointName={E}"),
                    format!("VariantName={V}"),
                    format!("InstanceType={B}")
                ],
            ]
        );
        let all = call(&m, "ListMetrics", json!({"Namespace": NAMESPACE})).unwrap();
        assert_eq!(all["Metrics"].as_array().unwrap().len(), 3 * METRICS.len());
        let typed = call(
            &m,
            "ListMetrics",
            json!({"Dimensions": [{"Name": "InstanceType", "Value": B}]}),
        )
        .unwrap();
        assert_eq!(typed["Metrics"].as_array().unwrap().len(), METRICS.len());
        let any_type = call(&m, "ListMetrics", json!({"Dimensions": [{"Name": "InstanceType"}]})).unwrap();
        assert_eq!(any_type["Metrics"].as_array().unwrap().len(), 2 * METRICS.len());
        let other = call(&m, "ListMetrics", json!({"Namespace": "AWS/EC2"})).unwrap();
        assert_eq!(other["Metrics"], json!([]));
        // Older than the retention: not listed.
        let later = dispatch(&m, &CloudWatchOp::ListMetrics(Map::new()), 1030.0 + RETENTION_LATER).unwrap();
        assert_eq!(later["Metrics"], json!([]));
    }

    const RETENTION_LATER: f64 = crate::telemetry::metrics::RETENTION_S as f64 + 10.0;

    #[test]
    fn utilization_is_answered_in_the_instance_namespace_only() {
        use crate::telemetry::metrics::{UsageSample, UsageSeries};
        let m = store();
        for (i, (t, cpu)) in [(A, 150.0), (A, 50.0), (B, 30.0)].into_iter().enumerate() {
            let instance = UsageSeries {
                endpoint: E.into(),
                variant: V.into(),
                instance_type: t.into(),
                instance: format!("i-{i}"),
            };
            let sample = UsageSample {
                cpu_percent: Some(cpu),
                memory_percent: Some(1.5),
                rss_bytes: Some(1 << 20),
                gpu_percent: (t == A).then_some(90.0),
                gpu_memory_percent: (t == A).then_some(10.0),
            };
            m.record_usage(&instance, &sample, 1010.0);
        }
        let get = |ns: &str, metric: &str, t: Option<&str>, unit: Option<&str>| {
            let mut req = json!({"Namespace": ns, "MetricName": metric, "Dimensions": dims(t),
                                 "StartTime": 1000, "EndTime": 1030, "Period": 60,
                                 "Statistics": ["Average", "Maximum", "SampleCount"]});
            if let Some(u) = unit {
                req["Unit"] = json!(u);
            }
            call(&m, "GetMetricStatistics", req).unwrap()["Datapoints"].clone()
        };
        let d = get(INSTANCE_NAMESPACE, "CPUUtilization", Some(A), Some("Percent"));
        assert_eq!(
            d,
            json!([{"Timestamp": 960, "Average": 100.0, "Maximum": 150.0, "SampleCount": 2.0, "Unit": "Percent"}])
        );
        assert_eq!(
            get(INSTANCE_NAMESPACE, "CPUUtilization", None, None)[0]["SampleCount"],
            json!(3.0)
        );
        assert_eq!(
            get(INSTANCE_NAMESPACE, "GPUUtilization", Some(A), None)[0]["Average"],
            json!(90.0)
        );
        // No GPUs on B: no data points. The wrong namespace or unit: none either.
        assert_eq!(get(INSTANCE_NAMESPACE, "GPUUtilization", Some(B), None), json!([]));
        assert_eq!(get(NAMESPACE, "CPUUtilization", Some(A), None), json!([]));
        assert_eq!(get(INSTANCE_NAMESPACE, "Invocations", Some(A), None), json!([]));
        assert_eq!(
            get(INSTANCE_NAMESPACE, "CPUUtilization", Some(A), Some("Count")),
            json!([])
        );

        let q = json!([{"Id": "c", "MetricStat": {"Metric": {"Namespace": INSTANCE_NAMESPACE,
                        "MetricName": "MemoryUtilization", "Dimensions": dims(Some(B))}, "Period": 60, "Stat": "Average"}}]);
        let r = data(&m, q, json!({})).unwrap();
        assert_eq!(result(&r, "c")["Values"], json!([1.5]));

        let listed = |input: Value| -> Vec<String> {
            call(&m, "ListMetrics", input).unwrap()["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    format!(
                        "{} {} {}",
                        x["Namespace"].as_str().unwrap(),
                        x["MetricName"].as_str().unwrap(),
                        x["Dimensions"].as_array().unwrap().len()
                    )
                })
                .collect()
        };
        let gpu = listed(json!({"Namespace": INSTANCE_NAMESPACE, "MetricName": "GPUUtilization"}));
        assert_eq!(
            gpu,
            [
                format!("{INSTANCE_NAMESPACE} GPUUtilization 2"),
                format!("{INSTANCE_NAMESPACE} GPUUtilization 3")
            ]
        );
        // CPU and memory for the variant and both types; GPU for the variant and A.
        assert_eq!(listed(json!({"Namespace": INSTANCE_NAMESPACE})).len(), 3 + 3 + 2 + 2);
        assert_eq!(listed(json!({})).len(), 3 * METRICS.len() + 10);
        assert_eq!(listed(json!({"Namespace": NAMESPACE})).len(), 3 * METRICS.len());
    }

    #[test]
    fn timestamps_parse_as_epoch_seconds_or_iso8601() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_iso8601("2024-01-01T00:00:00Z"), Some(1_704_067_200.0));
        assert_eq!(
            parse_iso8601("2024-01-01T01:30:00.5+01:00"),
            Some(1_704_067_200.0 + 1800.5)
        );
        assert_eq!(parse_iso8601("2024-02-29 12:00:00"), Some(1_709_208_000.0));
        assert_eq!(parse_iso8601("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
        let m = store();
        let r = call(
            &m,
            "GetMetricStatistics",
            json!({"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": dims(None),
                   "StartTime": "1970-01-01T00:16:40Z", "EndTime": "1030", "Period": 50, "Statistics": ["Sum"]}),
        )
        .unwrap();
        assert_eq!(
            r["Datapoints"],
            json!([{"Timestamp": 1000, "Sum": 90.0, "Unit": "None"}])
        );
    }

    #[test]
    fn backlog_metrics_are_listed_and_read_by_endpoint_name() {
        use crate::telemetry::metrics::BacklogSample;
        let m = Arc::new(Metrics::default());
        for (t, size, instances) in [(1000.0, 3, 0), (1001.0, 3, 0), (1030.0, 4, 2)] {
            let s = BacklogSample {
                size,
                oldest_age_seconds: t - 990.0,
                instances,
            };
            m.record_backlog(E, &s, t);
        }
        let names: Vec<Value> = call(&m, "ListMetrics", json!({"Namespace": NAMESPACE})).unwrap()["Metrics"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(names.len(), BACKLOG_METRICS.len());
        for n in &names {
            assert_eq!(n["Dimensions"], json!([{"Name": "EndpointName", "Value": E}]));
        }
        // A filter on another endpoint, or on a variant, lists none of them.
        let other = call(
            &m,
            "ListMetrics",
            json!({"Dimensions": [{"Name": "EndpointName", "Value": "x"}]}),
        )
        .unwrap();
        assert_eq!(other["Metrics"], json!([]));
        let stats = |metric: &str, dims: Value| {
            call(
                &m,
                "GetMetricStatistics",
                json!({"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims,
                       "StartTime": 960, "EndTime": 1080, "Period": 60, "Statistics": ["Maximum", "Average"]}),
            )
            .unwrap()["Datapoints"]
                .clone()
        };
        let by_endpoint = json!([{"Name": "EndpointName", "Value": E}]);
        assert_eq!(
            stats("HasBacklogWithoutCapacity", by_endpoint.clone()),
            json!([{"Timestamp": 960, "Maximum": 1.0, "Average": 1.0, "Unit": "Count"},
                   {"Timestamp": 1020, "Maximum": 0.0, "Average": 0.0, "Unit": "Count"}])
        );
        assert_eq!(
            stats("ApproximateBacklogSizePerInstance", by_endpoint.clone()),
            json!([{"Timestamp": 960, "Maximum": 3.0, "Average": 3.0, "Unit": "Count"},
                   {"Timestamp": 1020, "Maximum": 2.0, "Average": 2.0, "Unit": "Count"}])
        );
        assert_eq!(
            stats("ApproximateAgeOfOldestRequest", by_endpoint)[1]["Unit"],
            json!("Seconds")
        );
        // With a VariantName the series is not SageMaker's: no data.
        assert_eq!(stats("ApproximateBacklogSize", dims(None)), json!([]));
    }

    #[test]
    fn inference_components_metrics_are_listed_and_read_by_component() {
        let m = Arc::new(Metrics::default());
        let series = crate::telemetry::metrics::Series {
            endpoint: "e",
            variant: "v",
            instance_type: "ml.g5.xlarge",
        };
        let h = m.handle_of(series, Some("ic"));
        h.record_units(1, (2, 2), crate::telemetry::metrics::Outcome::Success, 700, 0, 1010.0);
        h.record_units(1, (2, 2), crate::telemetry::metrics::Outcome::Success, 900, 0, 1011.0);
        let by_component = json!([{"Name": "InferenceComponentName", "Value": "ic"}]);
        let listed = call(
            &m,
            "ListMetrics",
            json!({"Dimensions": [{"Name": "InferenceComponentName"}]}),
        )
        .unwrap();
        let listed = listed["Metrics"].as_array().unwrap();
        // Every component metric, by component and by component and type.
        assert_eq!(listed.len(), 2 * COMPONENT_METRICS.len(), "{listed:?}");
        assert!(
            listed
                .iter()
                .any(|x| x["MetricName"] == "InvocationsPerCopy" && x["Dimensions"] == by_component)
        );
        let q = json!([
            {"Id": "n", "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": "Invocations", "Dimensions": by_component}, "Period": 60, "Stat": "Sum"}},
            {"Id": "p", "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": "InvocationsPerCopy", "Dimensions": by_component}, "Period": 60, "Stat": "Sum"}},
            {"Id": "l", "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": "ModelLatency", "Dimensions": by_component}, "Period": 60, "Stat": "Average"}},
        ]);
        let r = data(&m, q, json!({})).unwrap();
        assert_eq!(result(&r, "n")["Values"], json!([2.0]));
        assert_eq!(result(&r, "p")["Values"], json!([1.0]));
        assert_eq!(result(&r, "l")["Values"], json!([800.0]));
        let stats = call(
            &m,
            "GetMetricStatistics",
            json!({"Namespace": NAMESPACE, "MetricName": "Invocations",
            "Dimensions": by_component, "StartTime": 1000, "EndTime": 1030, "Period": 60, "Statistics": ["Sum"]}),
        )
        .unwrap();
        assert_eq!(stats["Datapoints"][0]["Sum"], json!(2.0));
    }
}
