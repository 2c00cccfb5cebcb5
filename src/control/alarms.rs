//! CloudWatch alarms over spillway's metrics: stored, evaluated by the autoscaler's loop, their
//! state changes recorded as alarm history and endpoint events, and their actions run.
//!
//! Two kinds of alarm live here: the ones users create with `PutMetricAlarm`, and the two that
//! every target-tracking scaling policy owns (`TargetTracking-<resource>-AlarmHigh-<id>` and
//! `…-AlarmLow-<id>`), created and deleted with the policy, as Application Auto Scaling does.
//! Alarm actions that name a scaling policy's ARN invoke it (step scaling acts; a
//! target-tracking policy reads its own alarms' states); other actions (SNS topics) are recorded
//! in the alarm's history as not delivered: spillway sends no SNS notifications.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::control::ControlError;
use crate::control::app::App;
use crate::control::autoscaler::{self, MetricSource, ScalingPolicy};
use crate::core::alarm::{self, Comparison, MissingData, Rule, StateValue, Verdict};
use crate::core::endpoint::Event;
use crate::core::model::Timestamp;
use crate::store::Kind;
use crate::telemetry::metrics::{Select, Statistic, period_start};
use crate::telemetry::query::{Query, QueryKind};

/// Where an alarm's data points come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Source {
    /// `MetricName`/`Namespace`/`Dimensions`/`Statistic`/`Period`, or `Metrics` (metric math):
    /// the queries, the id whose series is the alarm's, and the period.
    Queries {
        /// The queries (one for a single metric).
        queries: Vec<StoredQuery>,
        /// The id of the series the alarm watches.
        result: String,
        /// Seconds per period.
        period: i64,
    },
    /// A target-tracking policy's metric, per period and as the policy means it (sums per
    /// minute), on one variant.
    TargetTracking {
        /// The endpoint.
        endpoint: String,
        /// The variant.
        variant: String,
        /// The metric.
        metric: MetricSource,
        /// Seconds per period.
        period: i64,
    },
}

/// A query as stored (the parsed form of a `MetricDataQuery`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredQuery {
    /// `Id`.
    pub id: String,
    /// A statistic of a series: `(metric, endpoint, variant, instance type, statistic,
    /// period)`; `None` when the store has no such series.
    pub stat: Option<(String, String, String, Option<String>, String, i64)>,
    /// An expression.
    pub expression: Option<String>,
}

impl StoredQuery {
    fn to_query(&self) -> Query {
        let kind = match (&self.stat, &self.expression) {
            (_, Some(e)) => QueryKind::Expression {
                expression: e.clone(),
                refs: crate::core::scaling::expression_refs(e).unwrap_or_default(),
            },
            (Some((metric, endpoint, variant, instance_type, stat, period)), None) => QueryKind::Stat {
                selector: Some(crate::telemetry::query::Selector {
                    metric: metric.clone(),
                    endpoint: endpoint.clone(),
                    variant: variant.clone(),
                    instance_type: instance_type.clone(),
                }),
                metric: metric.clone(),
                stat: Statistic::parse(stat).unwrap_or(Statistic::Average),
                period: *period,
            },
            (None, None) => QueryKind::Stat {
                selector: None,
                metric: String::new(),
                stat: Statistic::Average,
                period: 60,
            },
        };
        Query {
            id: self.id.clone(),
            label: None,
            return_data: true,
            kind,
        }
    }
}

/// A metric alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// `AlarmName`.
    pub name: String,
    /// `AlarmArn`.
    pub arn: String,
    /// `AlarmDescription`.
    pub description: Option<String>,
    /// `AlarmConfigurationUpdatedTimestamp`.
    pub updated: Timestamp,
    /// `ActionsEnabled`.
    pub actions_enabled: bool,
    /// `OKActions`.
    pub ok_actions: Vec<String>,
    /// `AlarmActions`.
    pub alarm_actions: Vec<String>,
    /// `InsufficientDataActions`.
    pub insufficient_data_actions: Vec<String>,
    /// The metric as the request gave it (echoed by `DescribeAlarms`): `MetricName`,
    /// `Namespace`, `Statistic`, `Dimensions`, `Period`, `Unit` or `Metrics`.
    pub metric_wire: serde_json::Map<String, Value>,
    /// Where its data points come from.
    pub source: Source,
    /// `Threshold`.
    pub threshold: f64,
    /// `ComparisonOperator`.
    pub comparison: Comparison,
    /// `EvaluationPeriods`.
    pub evaluation_periods: u32,
    /// `DatapointsToAlarm`, if given.
    pub datapoints_to_alarm: Option<u32>,
    /// `TreatMissingData`, if given.
    pub treat_missing_data: Option<MissingData>,
    /// `StateValue`.
    pub state: StateValue,
    /// `StateReason`.
    pub state_reason: String,
    /// `StateReasonData`.
    pub state_reason_data: Option<String>,
    /// `StateUpdatedTimestamp`.
    pub state_updated: Timestamp,
    /// `StateTransitionedTimestamp`.
    pub state_transitioned: Timestamp,
    /// The target-tracking policy that owns it (its ARN), if any.
    pub owner_policy: Option<String>,
    /// When its Auto Scaling actions last ran (they run again each period the alarm stays in
    /// its state, as AWS runs them each minute).
    #[serde(default)]
    pub actions_ran: Option<Timestamp>,
}

impl Alarm {
    /// The evaluation rule.
    pub fn rule(&self) -> Rule {
        Rule {
            threshold: self.threshold,
            comparison: self.comparison,
            evaluation_periods: self.evaluation_periods,
            datapoints_to_alarm: self.datapoints_to_alarm.unwrap_or(self.evaluation_periods),
            missing: self.treat_missing_data.unwrap_or_default(),
        }
    }

    /// Seconds per period.
    pub fn period(&self) -> i64 {
        match &self.source {
            Source::Queries { period, .. } | Source::TargetTracking { period, .. } => (*period).max(1),
        }
    }

    /// The endpoint its metric is about, if one (its events go there).
    pub fn endpoint(&self) -> Option<String> {
        match &self.source {
            // An inference component's policy (`COMPONENT_SERIES`) has no endpoint of its own.
            Source::TargetTracking { endpoint, .. } => {
                (endpoint != crate::telemetry::metrics::COMPONENT_SERIES).then(|| endpoint.clone())
            }
            Source::Queries { queries, .. } => queries.iter().find_map(|q| q.stat.as_ref().map(|s| s.1.clone())),
        }
    }

    /// The actions of a state.
    pub fn actions_of(&self, state: StateValue) -> &[String] {
        match state {
            StateValue::Ok => &self.ok_actions,
            StateValue::Alarm => &self.alarm_actions,
            StateValue::InsufficientData => &self.insufficient_data_actions,
        }
    }

    /// The `MetricAlarm` shape.
    pub fn to_wire(&self) -> Value {
        let mut out = json!({
            "AlarmName": self.name,
            "AlarmArn": self.arn,
            "AlarmConfigurationUpdatedTimestamp": self.updated,
            "ActionsEnabled": self.actions_enabled,
            "OKActions": self.ok_actions,
            "AlarmActions": self.alarm_actions,
            "InsufficientDataActions": self.insufficient_data_actions,
            "StateValue": self.state.as_str(),
            "StateReason": self.state_reason,
            "StateUpdatedTimestamp": self.state_updated,
            "StateTransitionedTimestamp": self.state_transitioned,
            "EvaluationPeriods": self.evaluation_periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison.as_str(),
        });
        let o = out.as_object_mut().expect("an object");
        if let Some(d) = &self.description {
            o.insert("AlarmDescription".into(), json!(d));
        }
        if let Some(d) = &self.state_reason_data {
            o.insert("StateReasonData".into(), json!(d));
        }
        if let Some(m) = self.datapoints_to_alarm {
            o.insert("DatapointsToAlarm".into(), json!(m));
        }
        if let Some(t) = self.treat_missing_data {
            o.insert("TreatMissingData".into(), json!(t.as_str()));
        }
        for (k, v) in &self.metric_wire {
            o.insert(k.clone(), v.clone());
        }
        if !o.contains_key("Metrics") && !o.contains_key("Dimensions") {
            o.insert("Dimensions".into(), json!([]));
        }
        out
    }
}

/// One `AlarmHistoryItem`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryItem {
    /// `AlarmName`.
    pub alarm_name: String,
    /// `Timestamp`.
    pub time: Timestamp,
    /// `ConfigurationUpdate`, `StateUpdate` or `Action`.
    pub kind: String,
    /// `HistorySummary`.
    pub summary: String,
    /// `HistoryData` (JSON text).
    pub data: String,
}

impl HistoryItem {
    /// The `AlarmHistoryItem` shape.
    pub fn to_wire(&self) -> Value {
        json!({
            "AlarmName": self.alarm_name,
            "AlarmType": "MetricAlarm",
            "Timestamp": self.time,
            "HistoryItemType": self.kind,
            "HistorySummary": self.summary,
            "HistoryData": self.data,
        })
    }
}

/// How long alarm history items are kept (CloudWatch: two weeks).
pub const HISTORY_RETENTION_S: f64 = 14.0 * 86400.0;

/// Every alarm, by name.
pub fn all(app: &App) -> Result<Vec<Alarm>, ControlError> {
    let mut v: Vec<Alarm> = app.store.list(Kind::Alarm)?;
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// One alarm.
pub fn get(app: &App, name: &str) -> Result<Option<Alarm>, ControlError> {
    Ok(app.store.get(Kind::Alarm, name)?)
}

/// An alarm's history, oldest first.
pub fn history(app: &App) -> Result<Vec<HistoryItem>, ControlError> {
    let mut v: Vec<HistoryItem> = app.store.list(Kind::AlarmHistory)?;
    v.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(v)
}

/// Appends a history item (its key keeps items of one instant apart).
pub fn record(app: &App, item: &HistoryItem) -> Result<(), ControlError> {
    let key = format!(
        "{}|{:020.6}|{}",
        item.alarm_name,
        item.time,
        uuid::Uuid::new_v4().simple()
    );
    app.store.put(Kind::AlarmHistory, &key, item.time, item)?;
    Ok(())
}

/// Writes an alarm (created or updated), with a `ConfigurationUpdate` history item.
pub fn put(app: &App, alarm: &Alarm, created: bool) -> Result<(), ControlError> {
    app.store.put(Kind::Alarm, &alarm.name, alarm.updated, alarm)?;
    record(
        app,
        &HistoryItem {
            alarm_name: alarm.name.clone(),
            time: alarm.updated,
            kind: "ConfigurationUpdate".into(),
            summary: format!(
                "Alarm \"{}\" {}",
                alarm.name,
                if created { "created" } else { "updated" }
            ),
            data: json!({
                "version": "1.0",
                "type": if created { "Create" } else { "Update" },
                "createdAlarm": alarm.to_wire(),
            })
            .to_string(),
        },
    )
}

/// Deletes alarms (and their tags); their history stays until it ages out.
pub fn delete(app: &App, alarms: &[Alarm]) -> Result<(), ControlError> {
    let gone: Vec<(Kind, &str, &str)> = alarms
        .iter()
        .map(|a| (Kind::Alarm, a.name.as_str(), a.arn.as_str()))
        .collect();
    app.store.delete_all(&gone)?;
    let t = app.clock.now();
    for a in alarms {
        record(
            app,
            &HistoryItem {
                alarm_name: a.name.clone(),
                time: t,
                kind: "ConfigurationUpdate".into(),
                summary: format!("Alarm \"{}\" deleted", a.name),
                data: json!({"version": "1.0", "type": "Delete", "deletedAlarm": a.to_wire()}).to_string(),
            },
        )?;
    }
    Ok(())
}

/// The data points of the last `n` complete periods before `now`, oldest first.
pub fn points(app: &App, alarm: &Alarm, now: Timestamp) -> Vec<Option<f64>> {
    let p = alarm.period();
    let n = alarm.evaluation_periods.max(1) as i64;
    let end = period_start(now.floor() as i64, p);
    let start = end - n * p;
    let at = |k: i64| start + k * p;
    match &alarm.source {
        Source::Queries { queries, result, .. } => {
            let qs: Vec<Query> = queries.iter().map(StoredQuery::to_query).collect();
            let Ok(series) = crate::telemetry::query::evaluate(&app.metrics, &qs, start as f64, end as f64) else {
                return vec![None; n as usize];
            };
            let empty = BTreeMap::new();
            let s = series.get(result).unwrap_or(&empty);
            // Invocation metrics of a single series: a period without invocations has no data
            // point, as SageMaker publishes them only for periods with invocations.
            let busy = match queries.as_slice() {
                [q] => q
                    .stat
                    .as_ref()
                    .filter(|(metric, ..)| INVOCATION_METRICS.contains(&metric.as_str()))
                    .map(|(_, e, v, it, _, _)| busy_periods(app, e, v, it.as_deref(), start, end, p)),
                _ => None,
            };
            (0..n)
                .map(|k| {
                    s.get(&at(k))
                        .copied()
                        .filter(|_| busy.as_ref().is_none_or(|b| b.contains_key(&at(k))))
                })
                .collect()
        }
        Source::TargetTracking {
            endpoint,
            variant,
            metric,
            ..
        } => {
            let busy = matches!(metric, MetricSource::InvocationsPerInstance)
                .then(|| busy_periods(app, endpoint, variant, None, start, end, p));
            (0..n)
                .map(|k| {
                    if busy.as_ref().is_some_and(|b| !b.contains_key(&at(k))) {
                        return None;
                    }
                    autoscaler::evaluate(app, endpoint, variant, metric, (at(k) + p) as f64, p as f64)
                })
                .collect()
        }
    }
}

/// The metrics SageMaker publishes only for periods with invocations.
const INVOCATION_METRICS: &[&str] = &[
    "Invocations",
    "InvocationsPerInstance",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "ModelLatency",
    "OverheadLatency",
];

/// The periods of `[start, end)` with at least one invocation (one scan of the store).
fn busy_periods(
    app: &App,
    endpoint: &str,
    variant: &str,
    itype: Option<&str>,
    start: i64,
    end: i64,
    period: i64,
) -> BTreeMap<i64, f64> {
    app.metrics
        .aggregate_periods(
            Select::new(endpoint, variant, itype),
            "Invocations",
            Statistic::SampleCount,
            start as f64,
            end as f64,
            period,
        )
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// AWS's `StateReasonData` for a verdict.
fn reason_data(alarm: &Alarm, verdict: &Verdict, now: Timestamp) -> String {
    let p = alarm.period();
    let end = period_start(now.floor() as i64, p);
    let start = end - alarm.evaluation_periods.max(1) as i64 * p;
    let mut data = json!({
        "version": "1.0",
        "queryDate": crate::core::time::iso8601(now.floor() as i64),
        "startDate": crate::core::time::iso8601(start),
        "period": p,
        "recentDatapoints": verdict.points.iter().rev().flatten().collect::<Vec<_>>(),
        "threshold": alarm.threshold,
        "evaluatedDatapoints": verdict.points.iter().enumerate().rev().filter_map(|(k, v)| v.map(|v| json!({
            "timestamp": crate::core::time::iso8601(start + k as i64 * p),
            "value": v,
        }))).collect::<Vec<_>>(),
    });
    if let Some(s) = alarm.metric_wire.get("Statistic") {
        data["statistic"] = s.clone();
    }
    data.to_string()
}

/// Sets an alarm's state (an evaluation or `SetAlarmState`), records the change, and runs its
/// actions for the new state. Returns the alarm as it now is.
pub async fn transition(
    app: &Arc<App>,
    mut alarm: Alarm,
    state: StateValue,
    reason: String,
    data: Option<String>,
) -> Result<Alarm, ControlError> {
    let t = app.clock.now();
    let old = (alarm.state, alarm.state_reason.clone());
    alarm.state = state;
    alarm.state_reason = reason;
    alarm.state_reason_data = data;
    alarm.state_updated = t;
    alarm.state_transitioned = t;
    alarm.actions_ran = None;
    app.store.put(Kind::Alarm, &alarm.name, alarm.updated, &alarm)?;
    record(
        app,
        &HistoryItem {
            alarm_name: alarm.name.clone(),
            time: t,
            kind: "StateUpdate".into(),
            summary: format!("Alarm updated from {} to {}", old.0.as_str(), state.as_str()),
            data: json!({
                "version": "1.0",
                "oldState": {"stateValue": old.0.as_str(), "stateReason": old.1},
                "newState": {"stateValue": state.as_str(), "stateReason": alarm.state_reason,
                             "stateReasonData": alarm.state_reason_data},
            })
            .to_string(),
        },
    )?;
    if let Some(endpoint) = alarm.endpoint() {
        app.event(Event {
            time: t,
            endpoint_name: endpoint,
            variant_name: None,
            kind: "AlarmStateChanged".into(),
            instance_type: None,
            priority: None,
            instance_id: None,
            result: Some(state.as_str().into()),
            message: format!(
                "Alarm {} changed from {} to {}: {}",
                alarm.name,
                old.0.as_str(),
                state.as_str(),
                alarm.state_reason
            ),
        });
    }
    run_actions(app, &mut alarm, t, false).await?;
    Ok(alarm)
}

/// Whether an action ARN names an Application Auto Scaling policy.
fn is_scaling_action(arn: &str) -> bool {
    arn.starts_with("arn:aws:autoscaling:")
}

/// Runs the actions of the alarm's current state (if its actions are enabled; `repeat`: only
/// the Auto Scaling ones), and notes when.
async fn run_actions(app: &Arc<App>, alarm: &mut Alarm, t: Timestamp, repeat: bool) -> Result<(), ControlError> {
    if !alarm.actions_enabled {
        return Ok(());
    }
    let actions: Vec<String> = alarm
        .actions_of(alarm.state)
        .iter()
        .filter(|a| !repeat || is_scaling_action(a))
        .cloned()
        .collect();
    if actions.is_empty() {
        return Ok(());
    }
    let policies: Vec<ScalingPolicy> = app.store.list(Kind::ScalingPolicy)?;
    for action in actions {
        let (summary, ok) = match policies.iter().find(|p| p.policy_arn == action) {
            Some(p) => match autoscaler::invoke_policy(app, p, alarm, t).await {
                Ok(done) => (format!("Successfully executed action {action}: {done}"), true),
                Err(e) => (format!("Failed to execute action {action}: {e}"), false),
            },
            None if action.starts_with("arn:aws:sns:") => (
                format!("Failed to execute action {action}: spillway delivers no SNS notifications"),
                false,
            ),
            None => (
                format!("Failed to execute action {action}: no scaling policy has this ARN"),
                false,
            ),
        };
        record(
            app,
            &HistoryItem {
                alarm_name: alarm.name.clone(),
                time: t,
                kind: "Action".into(),
                summary: summary.clone(),
                data: json!({"actionState": if ok { "Succeeded" } else { "Failed" }, "notificationResource": action,
                             "stateUpdateTimestamp": alarm.state_updated})
                .to_string(),
            },
        )?;
    }
    alarm.actions_ran = Some(t);
    app.store.put(Kind::Alarm, &alarm.name, alarm.updated, &*alarm)?;
    Ok(())
}

/// Evaluates every alarm at the current time: state changes are recorded and acted on; an
/// alarm that stays in a state whose actions name scaling policies runs them again once a
/// period.
pub async fn evaluate_all(app: &Arc<App>) -> Result<(), ControlError> {
    let now = app.clock.now();
    // Alarm history is kept two weeks, as CloudWatch keeps it.
    app.store.delete_older(Kind::AlarmHistory, now - HISTORY_RETENTION_S)?;
    for seen in all(app)? {
        let verdict = alarm::evaluate(&seen.rule(), &points(app, &seen, now), seen.state);
        tracing::debug!(alarm = %seen.name, points = ?verdict.points, state = verdict.state.as_str(), "alarm evaluated");
        // Written under the lock the alarm commands take, and only if the alarm is still the
        // one evaluated: a concurrent DeleteAlarms, PutMetricAlarm or SetAlarmState wins.
        let _config = app.autoscaler.config_lock().await;
        let Some(alarm) = get(app, &seen.name)? else { continue };
        if alarm != seen {
            continue;
        }
        if verdict.state != alarm.state {
            let data = reason_data(&alarm, &verdict, now);
            transition(app, alarm, verdict.state, verdict.reason, Some(data)).await?;
        } else {
            // AWS repeats only Auto Scaling actions while an alarm stays in its state, once a
            // period (a minute on AWS).
            let mut alarm = alarm;
            let due = alarm.actions_ran.is_some_and(|t| now - t >= alarm.period() as f64);
            if due && alarm.actions_of(alarm.state).iter().any(|a| is_scaling_action(a)) {
                run_actions(app, &mut alarm, now, true).await?;
            }
        }
    }
    Ok(())
}

/// The names of the two alarms of a target-tracking policy.
pub fn target_tracking_names(resource_id: &str, id: &str) -> (String, String) {
    (
        format!("TargetTracking-{resource_id}-AlarmHigh-{id}"),
        format!("TargetTracking-{resource_id}-AlarmLow-{id}"),
    )
}

/// What AWS's target-tracking alarms are: AlarmHigh after 3 periods above the target, AlarmLow
/// after 15 periods below 90 % of it (none when scale-in is disabled), periods of
/// `period` seconds (60 on AWS; `[autoscaling] target_tracking_period_seconds`).
pub fn target_tracking_alarms(
    app: &App,
    policy: &ScalingPolicy,
    parsed: &autoscaler::ParsedPolicy,
    period: i64,
    now: Timestamp,
) -> Vec<Alarm> {
    // A variant's, or an inference component's as `(COMPONENT_SERIES, name)`.
    let Some((endpoint, variant)) = autoscaler::scaled_of(&policy.resource_id) else {
        return vec![];
    };
    let id = uuid::Uuid::new_v4().to_string();
    let (high, low) = target_tracking_names(&policy.resource_id, &id);
    let target = parsed.tracking.target;
    let wire = autoscaler::metric_wire(&parsed.metric, &endpoint, &variant, period);
    let make = |name: String, comparison, threshold: f64, periods: u32| Alarm {
        arn: format!(
            "arn:aws:cloudwatch:{}:{}:alarm:{name}",
            app.cfg.region, app.cfg.account_id
        ),
        description: Some(format!(
            "DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {}.",
            policy.policy_arn
        )),
        name,
        updated: now,
        actions_enabled: true,
        ok_actions: vec![],
        alarm_actions: vec![policy.policy_arn.clone()],
        insufficient_data_actions: vec![],
        metric_wire: wire.clone(),
        source: Source::TargetTracking {
            endpoint: endpoint.clone(),
            variant: variant.clone(),
            metric: parsed.metric.clone(),
            period,
        },
        threshold,
        comparison,
        evaluation_periods: periods,
        datapoints_to_alarm: Some(periods),
        treat_missing_data: None,
        state: StateValue::InsufficientData,
        state_reason: "Unchecked: Initial alarm creation".into(),
        state_reason_data: None,
        state_updated: now,
        state_transitioned: now,
        owner_policy: Some(policy.policy_arn.clone()),
        actions_ran: None,
    };
    let mut out = vec![make(high, Comparison::GreaterThanThreshold, target, 3)];
    if !parsed.tracking.disable_scale_in {
        out.push(make(
            low,
            Comparison::LessThanThreshold,
            target * crate::core::scaling::SCALE_IN_MARGIN,
            15,
        ));
    }
    out
}
