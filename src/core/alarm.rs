//! CloudWatch alarm evaluation and Application Auto Scaling step adjustments, as AWS documents
//! them: pure functions of the data points, the alarm's settings and its current state.
//!
//! An alarm looks at its last `EvaluationPeriods` (N) complete periods and goes to `ALARM` when
//! at least `DatapointsToAlarm` (M) of them breach the threshold. Missing periods are treated as
//! `TreatMissingData` says:
//! - `missing` (the default): they are not counted. No data point at all in the N periods is
//!   `INSUFFICIENT_DATA`; otherwise `ALARM` when M of the present points breach, else `OK`.
//! - `notBreaching` / `breaching`: they count as good / bad points.
//! - `ignore`: they are not counted, and an alarm without M present points keeps its state.
//!
//! (AWS's own algorithm looks further back than N periods for a `missing` alarm with some points
//! absent; spillway decides on the N periods alone, which is the same whenever data arrives
//! regularly, and is documented in `docs/api-compat.md`.)

use serde::{Deserialize, Serialize};

/// An alarm's state (`StateValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateValue {
    /// `OK`.
    Ok,
    /// `ALARM`.
    Alarm,
    /// `INSUFFICIENT_DATA`.
    InsufficientData,
}

impl StateValue {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Alarm => "ALARM",
            Self::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(Self::Ok),
            "ALARM" => Some(Self::Alarm),
            "INSUFFICIENT_DATA" => Some(Self::InsufficientData),
            _ => None,
        }
    }
}

/// `ComparisonOperator` (the static-threshold ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `GreaterThanOrEqualToThreshold`.
    GreaterThanOrEqualToThreshold,
    /// `GreaterThanThreshold`.
    GreaterThanThreshold,
    /// `LessThanThreshold`.
    LessThanThreshold,
    /// `LessThanOrEqualToThreshold`.
    LessThanOrEqualToThreshold,
}

impl Comparison {
    /// Every operator, as spelled on the wire.
    pub const NAMES: &'static [&'static str] = &[
        "GreaterThanOrEqualToThreshold",
        "GreaterThanThreshold",
        "LessThanThreshold",
        "LessThanOrEqualToThreshold",
    ];

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GreaterThanOrEqualToThreshold" => Some(Self::GreaterThanOrEqualToThreshold),
            "GreaterThanThreshold" => Some(Self::GreaterThanThreshold),
            "LessThanThreshold" => Some(Self::LessThanThreshold),
            "LessThanOrEqualToThreshold" => Some(Self::LessThanOrEqualToThreshold),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            Self::GreaterThanThreshold => "GreaterThanThreshold",
            Self::LessThanThreshold => "LessThanThreshold",
            Self::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::GreaterThanOrEqualToThreshold => value >= threshold,
            Self::GreaterThanThreshold => value > threshold,
            Self::LessThanThreshold => value < threshold,
            Self::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    /// The operator in words, as AWS's state reasons write it.
    fn words(self) -> &'static str {
        match self {
            Self::GreaterThanOrEqualToThreshold => "greater than or equal to",
            Self::GreaterThanThreshold => "greater than",
            Self::LessThanThreshold => "less than",
            Self::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// `TreatMissingData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MissingData {
    /// `missing` (the default).
    #[default]
    Missing,
    /// `notBreaching`.
    NotBreaching,
    /// `breaching`.
    Breaching,
    /// `ignore`.
    Ignore,
}

impl MissingData {
    /// Every value, as spelled on the wire.
    pub const NAMES: &'static [&'static str] = &["breaching", "notBreaching", "ignore", "missing"];

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "missing" => Some(Self::Missing),
            "notBreaching" => Some(Self::NotBreaching),
            "breaching" => Some(Self::Breaching),
            "ignore" => Some(Self::Ignore),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBreaching => "notBreaching",
            Self::Breaching => "breaching",
            Self::Ignore => "ignore",
        }
    }
}

/// What an alarm compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// `Threshold`.
    pub threshold: f64,
    /// `ComparisonOperator`.
    pub comparison: Comparison,
    /// `EvaluationPeriods` (N).
    pub evaluation_periods: u32,
    /// `DatapointsToAlarm` (M, at most N).
    pub datapoints_to_alarm: u32,
    /// `TreatMissingData`.
    pub missing: MissingData,
}

/// The outcome of one evaluation: the state the alarm should be in, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The state.
    pub state: StateValue,
    /// `StateReason`, in AWS's words.
    pub reason: String,
    /// The points the decision looked at, newest last (`None`: missing).
    pub points: Vec<Option<f64>>,
}

/// Evaluates `rule` over the last N periods' points (`points`, oldest first, `None` for a
/// period without data) for an alarm now in `current`.
pub fn evaluate(rule: &Rule, points: &[Option<f64>], current: StateValue) -> Verdict {
    let n = rule.evaluation_periods as usize;
    let m = (rule.datapoints_to_alarm.max(1) as usize).min(n.max(1));
    let window = &points[points.len().saturating_sub(n)..];
    let present: Vec<f64> = window.iter().flatten().copied().collect();
    let absent = window.len() - present.len() + n.saturating_sub(window.len());
    let breaching_present = present
        .iter()
        .filter(|v| rule.comparison.breaches(**v, rule.threshold))
        .count();
    let (breaching, counted) = match rule.missing {
        MissingData::Breaching => (breaching_present + absent, n),
        MissingData::NotBreaching => (breaching_present, n),
        MissingData::Missing | MissingData::Ignore => (breaching_present, present.len()),
    };
    let shown: Vec<String> = present.iter().map(|v| format_point(*v)).collect();
    let threshold = format_point(rule.threshold);
    let state = if rule.missing == MissingData::Missing && present.is_empty() {
        StateValue::InsufficientData
    } else if breaching >= m {
        StateValue::Alarm
    } else if rule.missing == MissingData::Ignore && counted < m {
        current
    } else {
        StateValue::Ok
    };
    let reason = match state {
        StateValue::InsufficientData => format!(
            "Insufficient Data: {n} datapoint{} {} unknown.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "was" } else { "were" }
        ),
        StateValue::Alarm => format!(
            "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} {} the threshold ({threshold}) (minimum {m} datapoint{} for OK -> ALARM transition).",
            shown.join(", "),
            if breaching == 1 { "was" } else { "were" },
            rule.comparison.words(),
            if m == 1 { "" } else { "s" },
        ),
        _ if state == current && rule.missing == MissingData::Ignore && counted < m => format!(
            "Too few datapoints ({counted} of {m}) in the last {n} periods; missing data is ignored, so the state stays {}.",
            current.as_str()
        ),
        _ => format!(
            "Threshold Crossed: no more than {} of the last {n} datapoints [{}] {} {} the threshold ({threshold}) (minimum {m} datapoint{} for ALARM -> OK transition).",
            m - 1,
            shown.join(", "),
            if m == 2 { "was" } else { "were" },
            rule.comparison.words(),
            if m == 1 { "" } else { "s" },
        ),
    };
    Verdict {
        state,
        reason,
        points: window.to_vec(),
    }
}

/// A data point as AWS's reasons print it: up to 6 significant decimals, no trailing zeros.
pub fn format_point(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// `AdjustmentType` of a step scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustmentType {
    /// Add (or remove) this many instances.
    ChangeInCapacity,
    /// Add (or remove) this percentage of the current capacity.
    PercentChangeInCapacity,
    /// Set the capacity to this.
    ExactCapacity,
}

impl AdjustmentType {
    /// Every type, as spelled on the wire.
    pub const NAMES: &'static [&'static str] = &["ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity"];

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ChangeInCapacity" => Some(Self::ChangeInCapacity),
            "PercentChangeInCapacity" => Some(Self::PercentChangeInCapacity),
            "ExactCapacity" => Some(Self::ExactCapacity),
            _ => None,
        }
    }
}

/// One `StepAdjustment`: bounds relative to the alarm's threshold (lower inclusive, upper
/// exclusive; `None` is infinity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `MetricIntervalLowerBound`.
    pub lower: Option<f64>,
    /// `MetricIntervalUpperBound`.
    pub upper: Option<f64>,
    /// `ScalingAdjustment`.
    pub adjustment: i64,
}

/// Checks step adjustments as Application Auto Scaling does: at least one; no two overlap; no
/// gap between them; only the lowest may have no lower bound and only the highest no upper bound;
/// a step's lower bound is below its upper bound. Returns AWS-style messages.
pub fn check_steps(steps: &[Step]) -> Result<Vec<Step>, String> {
    if steps.is_empty() {
        return Err("StepAdjustments: at least one step adjustment is required".into());
    }
    let key = |s: &Step| s.lower.unwrap_or(f64::NEG_INFINITY);
    let mut sorted = steps.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    for (i, s) in sorted.iter().enumerate() {
        if s.lower.is_none() && s.upper.is_none() && sorted.len() > 1 {
            return Err("StepAdjustments: a step without either bound must be the only one".into());
        }
        if let (Some(l), Some(u)) = (s.lower, s.upper)
            && l >= u
        {
            return Err(format!(
                "StepAdjustments: the lower bound ({}) must be less than the upper bound ({})",
                format_point(l),
                format_point(u)
            ));
        }
        if i > 0 && s.lower.is_none() {
            return Err("StepAdjustments: only one step may have no lower bound".into());
        }
        if i + 1 < sorted.len() {
            let next = sorted[i + 1];
            match (s.upper, next.lower) {
                (None, _) => return Err("StepAdjustments: only the highest step may have no upper bound".into()),
                (Some(u), Some(l)) if u > l => {
                    return Err(format!(
                        "StepAdjustments: step intervals overlap ({} is above the next step's lower bound {})",
                        format_point(u),
                        format_point(l)
                    ));
                }
                (Some(u), Some(l)) if u < l => {
                    return Err(format!(
                        "StepAdjustments: there is a gap between step intervals ({} to {})",
                        format_point(u),
                        format_point(l)
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(sorted)
}

/// The step whose interval holds `breach` (the aggregated metric value minus the threshold).
pub fn step_for(steps: &[Step], breach: f64) -> Option<&Step> {
    steps
        .iter()
        .find(|s| s.lower.is_none_or(|l| breach >= l) && s.upper.is_none_or(|u| breach < u))
}

/// The capacity a step scaling policy asks for: `adjustment` of `kind` applied to `current`,
/// at least `min_magnitude` instances for a percentage change, within `[min, max]`.
pub fn adjusted_capacity(
    kind: AdjustmentType,
    adjustment: i64,
    min_magnitude: Option<i64>,
    current: u32,
    min: u32,
    max: u32,
) -> u32 {
    let current = current as i64;
    let wanted = match kind {
        AdjustmentType::ExactCapacity => adjustment,
        AdjustmentType::ChangeInCapacity => current.saturating_add(adjustment),
        AdjustmentType::PercentChangeInCapacity => {
            // Rounded toward zero, as AWS does for values above 1 or below -1.
            let raw = current as f64 * adjustment as f64 / 100.0;
            let mut change = raw.trunc() as i64;
            if change == 0 && adjustment != 0 {
                change = adjustment.signum();
            }
            if let Some(mm) = min_magnitude
                && change.saturating_abs() < mm
            {
                change = mm.saturating_mul(change.signum());
            }
            current.saturating_add(change)
        }
    };
    wanted.clamp(min as i64, max as i64).max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(m: u32, n: u32, missing: MissingData) -> Rule {
        Rule {
            threshold: 10.0,
            comparison: Comparison::GreaterThanThreshold,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            missing,
        }
    }

    #[test]
    fn m_of_n_breaching_points_alarm() {
        let r = rule(2, 3, MissingData::Missing);
        let v = evaluate(&r, &[Some(11.0), Some(5.0), Some(12.0)], StateValue::Ok);
        assert_eq!(v.state, StateValue::Alarm);
        assert_eq!(
            v.reason,
            "Threshold Crossed: 2 out of the last 3 datapoints [11, 5, 12] were greater than the threshold (10) (minimum 2 datapoints for OK -> ALARM transition)."
        );
        let v = evaluate(&r, &[Some(11.0), Some(5.0), Some(2.0)], StateValue::Alarm);
        assert_eq!(v.state, StateValue::Ok);
        // Only the last N periods count.
        let v = evaluate(
            &r,
            &[Some(99.0), Some(99.0), Some(1.0), Some(1.0), Some(99.0)],
            StateValue::Ok,
        );
        assert_eq!(v.state, StateValue::Ok);
    }

    #[test]
    fn missing_data_is_treated_as_configured() {
        let none = [None, None, None];
        assert_eq!(
            evaluate(&rule(1, 3, MissingData::Missing), &none, StateValue::Ok).state,
            StateValue::InsufficientData
        );
        assert_eq!(
            evaluate(&rule(1, 3, MissingData::Missing), &none, StateValue::Ok).reason,
            "Insufficient Data: 3 datapoints were unknown."
        );
        assert_eq!(
            evaluate(&rule(1, 3, MissingData::NotBreaching), &none, StateValue::Alarm).state,
            StateValue::Ok
        );
        assert_eq!(
            evaluate(&rule(3, 3, MissingData::Breaching), &none, StateValue::Ok).state,
            StateValue::Alarm
        );
        assert_eq!(
            evaluate(&rule(1, 3, MissingData::Ignore), &none, StateValue::Alarm).state,
            StateValue::Alarm
        );
        // Fewer periods of history than N: the rest are missing.
        assert_eq!(
            evaluate(&rule(3, 3, MissingData::Breaching), &[Some(11.0)], StateValue::Ok).state,
            StateValue::Alarm
        );
        assert_eq!(
            evaluate(
                &rule(2, 3, MissingData::Missing),
                &[Some(11.0), None, Some(1.0)],
                StateValue::Alarm
            )
            .state,
            StateValue::Ok
        );
    }

    /// A reference model, written differently: count breaches per treatment directly.
    fn model(r: &Rule, points: &[Option<f64>], current: StateValue) -> StateValue {
        let n = r.evaluation_periods as usize;
        let mut window: Vec<Option<f64>> = points.iter().rev().take(n).copied().collect();
        while window.len() < n {
            window.push(None);
        }
        let m = (r.datapoints_to_alarm as usize).clamp(1, n);
        let bad = |p: &Option<f64>| match p {
            Some(v) => Some(r.comparison.breaches(*v, r.threshold)),
            None => match r.missing {
                MissingData::Breaching => Some(true),
                MissingData::NotBreaching => Some(false),
                _ => None,
            },
        };
        let judged: Vec<bool> = window.iter().filter_map(bad).collect();
        if r.missing == MissingData::Missing && window.iter().all(Option::is_none) {
            return StateValue::InsufficientData;
        }
        let breaches = judged.iter().filter(|b| **b).count();
        if breaches >= m {
            StateValue::Alarm
        } else if r.missing == MissingData::Ignore && judged.len() < m {
            current
        } else {
            StateValue::Ok
        }
    }

    fn missing_data() -> impl Strategy<Value = MissingData> {
        prop_oneof![
            Just(MissingData::Missing),
            Just(MissingData::NotBreaching),
            Just(MissingData::Breaching),
            Just(MissingData::Ignore)
        ]
    }

    fn state() -> impl Strategy<Value = StateValue> {
        prop_oneof![
            Just(StateValue::Ok),
            Just(StateValue::Alarm),
            Just(StateValue::InsufficientData)
        ]
    }

    proptest! {
        #[test]
        fn evaluation_agrees_with_the_reference_model(
            n in 1u32..8,
            m in 1u32..8,
            missing in missing_data(),
            cmp in 0usize..4,
            points in proptest::collection::vec(proptest::option::of(0.0f64..20.0), 0..12),
            current in state(),
        ) {
            let r = Rule {
                threshold: 10.0,
                comparison: Comparison::parse(Comparison::NAMES[cmp]).unwrap(),
                evaluation_periods: n,
                datapoints_to_alarm: m.min(n),
                missing,
            };
            prop_assert_eq!(evaluate(&r, &points, current).state, model(&r, &points, current));
        }
    }

    #[test]
    fn step_intervals_are_checked_and_found() {
        let s = |lower, upper, adjustment| Step {
            lower,
            upper,
            adjustment,
        };
        let steps = check_steps(&[s(Some(10.0), None, 3), s(Some(0.0), Some(10.0), 1)]).unwrap();
        assert_eq!(step_for(&steps, 0.0).unwrap().adjustment, 1);
        assert_eq!(step_for(&steps, 9.99).unwrap().adjustment, 1);
        assert_eq!(step_for(&steps, 10.0).unwrap().adjustment, 3);
        assert!(step_for(&steps, -1.0).is_none());
        assert!(check_steps(&[]).is_err());
        assert!(
            check_steps(&[s(Some(0.0), Some(10.0), 1), s(Some(5.0), None, 2)])
                .unwrap_err()
                .contains("overlap")
        );
        assert!(
            check_steps(&[s(Some(0.0), Some(10.0), 1), s(Some(15.0), None, 2)])
                .unwrap_err()
                .contains("gap")
        );
        assert!(
            check_steps(&[s(Some(0.0), None, 1), s(Some(15.0), None, 2)])
                .unwrap_err()
                .contains("upper")
        );
        assert!(
            check_steps(&[s(Some(5.0), Some(1.0), 1)])
                .unwrap_err()
                .contains("less than")
        );
        assert!(check_steps(&[s(None, None, 1)]).is_ok());
    }

    #[test]
    fn adjustments_are_applied_within_bounds() {
        use AdjustmentType::*;
        assert_eq!(adjusted_capacity(ChangeInCapacity, 2, None, 1, 1, 10), 3);
        assert_eq!(adjusted_capacity(ChangeInCapacity, -5, None, 3, 1, 10), 1);
        assert_eq!(adjusted_capacity(ExactCapacity, 4, None, 1, 0, 3), 3);
        assert_eq!(adjusted_capacity(ExactCapacity, 1, None, 0, 0, 3), 1);
        assert_eq!(adjusted_capacity(PercentChangeInCapacity, 50, None, 4, 1, 10), 6);
        // A change of less than one instance is one instance.
        assert_eq!(adjusted_capacity(PercentChangeInCapacity, 10, None, 2, 1, 10), 3);
        assert_eq!(adjusted_capacity(PercentChangeInCapacity, 10, Some(2), 2, 1, 10), 4);
        assert_eq!(adjusted_capacity(PercentChangeInCapacity, -50, None, 4, 1, 10), 2);
    }

    proptest! {
        /// Whatever the numbers, the capacity is within the bounds and no arithmetic overflows.
        #[test]
        fn adjustments_never_overflow_and_stay_within_bounds(
            kind in 0usize..3,
            adjustment in any::<i64>(),
            min_magnitude in proptest::option::of(any::<i64>()),
            current in any::<u32>(),
            min in 0u32..1000,
            span in 0u32..1000,
        ) {
            let kind = AdjustmentType::parse(AdjustmentType::NAMES[kind]).unwrap();
            let got = adjusted_capacity(kind, adjustment, min_magnitude, current, min, min + span);
            prop_assert!((min..=min + span).contains(&got));
        }
    }
}
