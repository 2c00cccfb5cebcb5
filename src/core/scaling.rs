//! Target-tracking scaling decisions (Application Auto Scaling semantics) and the small metric
//! math language of `CustomizedMetricSpecification.Metrics[].Expression`.

use std::collections::HashMap;

use super::model::Timestamp;

/// A target-tracking policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetTracking {
    /// The metric value to hold.
    pub target: f64,
    /// Never scale in.
    pub disable_scale_in: bool,
    /// Seconds after a scale-out before the next scale-out.
    pub scale_out_cooldown_s: f64,
    /// Seconds after any scaling before a scale-in.
    pub scale_in_cooldown_s: f64,
}

/// Capacity bounds of a scalable target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// MinCapacity.
    pub min: u32,
    /// MaxCapacity.
    pub max: u32,
}

/// When the policy last scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct History {
    /// Last scale-out.
    pub last_scale_out: Option<Timestamp>,
    /// Last scale-in.
    pub last_scale_in: Option<Timestamp>,
}

/// Scale-in happens only when the metric is this far below target (hysteresis against flapping).
pub const SCALE_IN_MARGIN: f64 = 0.9;

/// A scaling decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// New desired capacity.
    pub desired: u32,
    /// Out or in.
    pub scale_out: bool,
    /// Why, in words (becomes the activity's cause).
    pub cause: String,
}

/// Decides whether to change `current` capacity given the policy's metric value.
pub fn decide(
    current: u32,
    metric: Option<f64>,
    tt: &TargetTracking,
    bounds: Bounds,
    hist: History,
    now: Timestamp,
) -> Option<Decision> {
    if current < bounds.min {
        return Some(Decision {
            desired: bounds.min,
            scale_out: true,
            cause: format!("current capacity {current} is below MinCapacity {}", bounds.min),
        });
    }
    if current > bounds.max {
        return Some(Decision {
            desired: bounds.max,
            scale_out: false,
            cause: format!("current capacity {current} is above MaxCapacity {}", bounds.max),
        });
    }
    let metric = metric.filter(|m| m.is_finite())?;
    if tt.target <= 0.0 {
        return None;
    }
    let ideal = ((current.max(1) as f64) * metric / tt.target).ceil().max(0.0) as u32;
    if metric > tt.target && ideal > current {
        if hist.last_scale_out.is_some_and(|t| now - t < tt.scale_out_cooldown_s) {
            return None;
        }
        let desired = ideal.min(bounds.max);
        return (desired > current).then(|| Decision {
            desired,
            scale_out: true,
            cause: format!(
                "metric {metric:.3} above target {} (capacity {current} -> {desired})",
                tt.target
            ),
        });
    }
    if metric < tt.target * SCALE_IN_MARGIN && ideal < current && !tt.disable_scale_in {
        let last = hist
            .last_scale_in
            .into_iter()
            .chain(hist.last_scale_out)
            .fold(f64::NEG_INFINITY, f64::max);
        if now - last < tt.scale_in_cooldown_s {
            return None;
        }
        // Down to MinCapacity; to zero only where MinCapacity is 0 (an asynchronous endpoint's
        // variant: RegisterScalableTarget refuses 0 for real-time ones) and the metric is 0.
        let desired = ideal.max(bounds.min);
        return (desired < current).then(|| Decision {
            desired,
            scale_out: false,
            cause: format!(
                "metric {metric:.3} below target {} (capacity {current} -> {desired})",
                tt.target
            ),
        });
    }
    None
}

/// Evaluates a metric math expression: numbers, metric ids, `+ - * /`, unary minus and
/// parentheses. Division by zero yields no value (`Err`), as CloudWatch drops such points.
pub fn eval_expression(expr: &str, vars: &HashMap<String, f64>) -> Result<f64, String> {
    let tokens = tokenize(expr)?;
    let mut p = Parser { tokens, pos: 0, vars };
    let v = p.sum()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected {:?} in expression {expr:?}", p.tokens[p.pos]));
    }
    Ok(v)
}

/// The identifiers an expression refers to, in order of first use. Fails where the expression
/// cannot be read: function calls (`SUM(...)`, `METRICS()`, `SEARCH(...)`), which this metric
/// math does not have, and characters it does not know.
pub fn expression_refs(expr: &str) -> Result<Vec<String>, String> {
    let mut refs: Vec<String> = vec![];
    for t in tokenize(expr)? {
        if let Tok::Id(id) = t
            && !refs.contains(&id)
        {
            refs.push(id);
        }
    }
    Ok(refs)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Id(String),
    Op(char),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = vec![];
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Num(text.parse().map_err(|_| format!("bad number {text:?}"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let id: String = chars[start..i].iter().collect();
            if chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'(') {
                return Err(format!(
                    "the function {id}() is not supported; spillway's metric math has numbers, query ids, \
                     + - * / and parentheses"
                ));
            }
            out.push(Tok::Id(id));
        } else if "+-*/()".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!("unsupported character {c:?} in expression {s:?}"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Tok>,
    pos: usize,
    vars: &'a HashMap<String, f64>,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<char> {
        match self.tokens.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let r = self.product()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        while let Some(op @ ('*' | '/')) = self.peek_op() {
            self.pos += 1;
            let r = self.unary()?;
            if op == '/' && r == 0.0 {
                return Err("division by zero".into());
            }
            v = if op == '*' { v * r } else { v / r };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.peek_op() == Some('-') {
            self.pos += 1;
            return Ok(-self.unary()?);
        }
        match self.tokens.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Id(id)) => {
                self.pos += 1;
                self.vars
                    .get(&id)
                    .copied()
                    .ok_or_else(|| format!("no data for metric id {id:?}"))
            }
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let v = self.sum()?;
                if self.peek_op() != Some(')') {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(v)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TT: TargetTracking = TargetTracking {
        target: 10.0,
        disable_scale_in: false,
        scale_out_cooldown_s: 60.0,
        scale_in_cooldown_s: 120.0,
    };
    const B: Bounds = Bounds { min: 1, max: 6 };

    #[test]
    fn scales_out_proportionally_within_max() {
        let d = decide(2, Some(25.0), &TT, B, History::default(), 0.0).unwrap();
        assert_eq!((d.desired, d.scale_out), (5, true));
        let d = decide(2, Some(100.0), &TT, B, History::default(), 0.0).unwrap();
        assert_eq!(d.desired, 6);
        assert_eq!(decide(6, Some(100.0), &TT, B, History::default(), 0.0), None);
    }

    #[test]
    fn cooldowns_and_hysteresis() {
        let h = History {
            last_scale_out: Some(100.0),
            last_scale_in: None,
        };
        assert_eq!(decide(2, Some(25.0), &TT, B, h, 130.0), None);
        assert!(decide(2, Some(25.0), &TT, B, h, 161.0).is_some());
        // Just under target: no scale-in (margin).
        assert_eq!(decide(4, Some(9.5), &TT, B, History::default(), 0.0), None);
        // Scale-in waits for the scale-in cooldown after the last scale-out too.
        assert_eq!(decide(4, Some(2.0), &TT, B, h, 200.0), None);
        let d = decide(4, Some(2.0), &TT, B, h, 221.0).unwrap();
        assert_eq!((d.desired, d.scale_out), (1, false));
        let no_in = TargetTracking {
            disable_scale_in: true,
            ..TT
        };
        assert_eq!(decide(4, Some(2.0), &no_in, B, History::default(), 0.0), None);
    }

    #[test]
    fn bounds_are_enforced_first() {
        assert_eq!(decide(0, None, &TT, B, History::default(), 0.0).unwrap().desired, 1);
        assert_eq!(decide(9, None, &TT, B, History::default(), 0.0).unwrap().desired, 6);
        assert_eq!(decide(3, None, &TT, B, History::default(), 0.0), None);
    }

    #[test]
    fn metric_math() {
        let vars: HashMap<String, f64> = [("cr_g6".to_string(), 8.0), ("cr_g6e".to_string(), 12.0)].into();
        assert_eq!(eval_expression("0.5*cr_g6 + 0.5*cr_g6e", &vars).unwrap(), 10.0);
        assert_eq!(eval_expression("(cr_g6/8 + cr_g6e/20)/2", &vars).unwrap(), 0.8);
        assert_eq!(eval_expression("-cr_g6 + 10", &vars).unwrap(), 2.0);
        assert!(eval_expression("cr_g6 / 0", &vars).is_err());
        assert!(eval_expression("nope * 2", &vars).is_err());
        assert!(eval_expression("1 +", &vars).is_err());
        assert!(
            eval_expression("SUM(m1)", &vars)
                .unwrap_err()
                .contains("SUM() is not supported")
        );
        assert_eq!(expression_refs("a1 + b_2*(a1 - 3.5)").unwrap(), vec!["a1", "b_2"]);
        assert!(
            expression_refs("SEARCH('{AWS/SageMaker} x', 'Sum', 60)")
                .unwrap_err()
                .contains("SEARCH()")
        );
    }

    /// A variant with MinCapacity 0 (an asynchronous endpoint's): target tracking on the backlog
    /// per instance scales in to zero once the backlog is gone, and from zero once the backlog
    /// (the metric's value at zero instances) exceeds the target.
    #[test]
    fn scales_to_and_from_zero_where_min_capacity_is_zero() {
        let zero = Bounds { min: 0, max: 6 };
        let d = decide(3, Some(0.0), &TT, zero, History::default(), 0.0).unwrap();
        assert_eq!((d.desired, d.scale_out), (0, false));
        // Not below MinCapacity 1.
        assert_eq!(
            decide(3, Some(0.0), &TT, B, History::default(), 0.0).unwrap().desired,
            1
        );
        // At zero: a backlog of 25 over a target of 10 asks for 3 instances.
        let d = decide(0, Some(25.0), &TT, zero, History::default(), 0.0).unwrap();
        assert_eq!((d.desired, d.scale_out), (3, true));
        // A backlog under the target leaves the variant at zero (the step policy's job).
        assert_eq!(decide(0, Some(5.0), &TT, zero, History::default(), 0.0), None);
        assert_eq!(decide(0, Some(0.0), &TT, zero, History::default(), 0.0), None);
    }

    proptest::proptest! {
        /// Whatever the metric, a decision stays within the bounds, goes the way it says, and
        /// reaches zero only where MinCapacity is zero.
        #[test]
        fn decisions_stay_within_bounds(
            current in 0u32..12,
            metric in 0.0f64..200.0,
            min in 0u32..4,
            span in 0u32..8,
        ) {
            let bounds = Bounds { min, max: min + span };
            if let Some(d) = decide(current, Some(metric), &TT, bounds, History::default(), 1e6) {
                proptest::prop_assert!(d.desired >= bounds.min && d.desired <= bounds.max);
                proptest::prop_assert_eq!(d.scale_out, d.desired > current);
                proptest::prop_assert!(d.desired != current);
                proptest::prop_assert!(d.desired > 0 || bounds.min == 0);
            }
        }
    }
}
