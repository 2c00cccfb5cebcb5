//! What a fleet costs: instance-hours per instance type from the fleet ledger, priced with the
//! catalog's on-demand prices, and the *fallback cost*: the difference against the same
//! instance-hours on each variant's preferred (Priority 1) type.
//!
//! The ledger (`control::ledger`) samples every endpoint's instances every
//! `[cost] sample_seconds`; each sample is one [`UsageRow`]: `count` instances of a type held for
//! `seconds`. Everything here is arithmetic over those rows; prices come from a function the
//! caller hands in (the catalog's), so an unknown price is `None` and its hours are reported as
//! unpriced rather than counted as free.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Timestamp;

/// One sample of the ledger: `count` instances of `instance_type`, held by a variant for
/// `seconds` from `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// Endpoint name.
    pub endpoint: String,
    /// Variant name.
    pub variant: String,
    /// The instances' type.
    pub instance_type: String,
    /// The variant's Priority 1 type when sampled (what an all-preferred fleet would run).
    pub preferred_type: String,
    /// Start of the sampled interval (epoch seconds).
    pub start: Timestamp,
    /// Length of the sampled interval, seconds.
    pub seconds: f64,
    /// Instances held (launching, in service or stopping: every instance a provider holds is
    /// paid for, as AWS bills an instance from launch to termination).
    pub count: u32,
}

/// Instance-hours and cost of one instance type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeCost {
    /// Instance type.
    pub instance_type: String,
    /// Instance-hours in the window.
    pub instance_hours: f64,
    /// The catalog's on-demand price, USD per hour (`None`: not known).
    pub price_usd_per_hour: Option<f64>,
    /// `instance_hours × price` (0 when the price is not known).
    pub cost_usd: f64,
    /// Instances of the type the endpoint holds now.
    pub current: u32,
}

/// Cost of one endpoint over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCost {
    /// Endpoint name.
    pub endpoint_name: String,
    /// Per type, most expensive first.
    pub types: Vec<TypeCost>,
    /// Instance-hours in the window, all types.
    pub instance_hours: f64,
    /// Σ cost of the types with a known price (the sum of `types[].cost_usd`).
    pub cost_usd: f64,
    /// The instance-hours whose type and preferred type both have a known price, each on its
    /// variant's preferred type.
    pub all_preferred_cost_usd: f64,
    /// What those same instance-hours cost on the types they ran on, minus
    /// `all_preferred_cost_usd`: what falling back cost (negative when the fallback types are
    /// cheaper than the preferred one). Equal to `cost_usd − all_preferred_cost_usd` when every
    /// price is known.
    pub fallback_cost_usd: f64,
    /// Instance-hours whose own type has no known price: left out of `cost_usd`.
    pub unpriced_instance_hours: f64,
    /// Instance-hours left out of the comparison with the preferred types because one of the
    /// two prices is not known.
    pub uncompared_instance_hours: f64,
    /// What the current fleet costs per hour.
    pub hourly_cost_usd: f64,
    /// The endpoint's ceiling (tag `spillway:max-hourly-cost`), if any.
    pub max_hourly_cost_usd: Option<f64>,
}

/// What an endpoint holds now: per instance type, how many instances.
pub type Fleet = BTreeMap<String, u32>;

/// What `fleet` costs per hour; types without a known price count 0.
pub fn hourly_cost(fleet: &Fleet, price: &dyn Fn(&str) -> Option<f64>) -> f64 {
    fleet.iter().map(|(t, n)| price(t).unwrap_or(0.0) * f64::from(*n)).sum()
}

/// Sums `rows` per endpoint and type. `current` gives each endpoint's fleet now (endpoints
/// with a fleet but no rows yet are listed too, with zero hours) and `ceiling` its tag.
pub fn summarize(
    rows: &[UsageRow],
    current: &BTreeMap<String, Fleet>,
    ceiling: &dyn Fn(&str) -> Option<f64>,
    price: &dyn Fn(&str) -> Option<f64>,
) -> Vec<EndpointCost> {
    #[derive(Default)]
    struct Acc {
        hours: BTreeMap<String, f64>,
        cost: f64,
        compared: f64,
        preferred: f64,
        unpriced: f64,
        uncompared: f64,
    }
    let mut by_endpoint: BTreeMap<&str, Acc> = BTreeMap::new();
    for name in current.keys() {
        by_endpoint.entry(name).or_default();
    }
    for r in rows {
        let hours = f64::from(r.count) * r.seconds.max(0.0) / 3600.0;
        let acc = by_endpoint.entry(&r.endpoint).or_default();
        *acc.hours.entry(r.instance_type.clone()).or_default() += hours;
        let own = price(&r.instance_type);
        match own {
            Some(p) => acc.cost += hours * p,
            None => acc.unpriced += hours,
        }
        match (own, price(&r.preferred_type)) {
            (Some(p), Some(q)) => {
                acc.compared += hours * p;
                acc.preferred += hours * q;
            }
            _ => acc.uncompared += hours,
        }
    }
    by_endpoint
        .into_iter()
        .map(|(name, acc)| {
            let empty = Fleet::new();
            let fleet = current.get(name).unwrap_or(&empty);
            let mut types: Vec<TypeCost> = acc
                .hours
                .iter()
                .map(|(t, h)| (t.clone(), *h))
                .chain(
                    fleet
                        .keys()
                        .filter(|t| !acc.hours.contains_key(*t))
                        .map(|t| (t.clone(), 0.0)),
                )
                .map(|(t, h)| {
                    let p = price(&t);
                    TypeCost {
                        current: fleet.get(&t).copied().unwrap_or(0),
                        cost_usd: h * p.unwrap_or(0.0),
                        price_usd_per_hour: p,
                        instance_hours: h,
                        instance_type: t,
                    }
                })
                .collect();
            types.sort_by(|a, b| {
                b.cost_usd
                    .total_cmp(&a.cost_usd)
                    .then_with(|| a.instance_type.cmp(&b.instance_type))
            });
            EndpointCost {
                endpoint_name: name.to_string(),
                instance_hours: types.iter().map(|t| t.instance_hours).sum(),
                types,
                cost_usd: acc.cost,
                all_preferred_cost_usd: acc.preferred,
                fallback_cost_usd: acc.compared - acc.preferred,
                unpriced_instance_hours: acc.unpriced,
                uncompared_instance_hours: acc.uncompared,
                hourly_cost_usd: hourly_cost(fleet, price),
                max_hourly_cost_usd: ceiling(name),
            }
        })
        .collect()
}

/// Parses a duration such as `7d`, `12h`, `30m`, `90s` or `3600` (seconds) into seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = digits
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a duration: expected a number and one of s, m, h, d (e.g. 7d, 90m)"))?;
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration: unit {unit:?} is not one of s, m, h, d, w"
            ));
        }
    };
    let seconds = n * scale;
    if seconds > MAX_DURATION_S {
        return Err(format!("{s:?} is longer than 3650 days"));
    }
    Ok(seconds)
}

/// The longest duration [`parse_duration`] takes: ten years.
pub const MAX_DURATION_S: f64 = 3650.0 * 86400.0;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn price(t: &str) -> Option<f64> {
        match t {
            "big" => Some(4.0),
            "small" => Some(1.0),
            _ => None,
        }
    }

    fn row(e: &str, t: &str, pref: &str, seconds: f64, count: u32) -> UsageRow {
        UsageRow {
            endpoint: e.into(),
            variant: "v".into(),
            instance_type: t.into(),
            preferred_type: pref.into(),
            start: 0.0,
            seconds,
            count,
        }
    }

    #[test]
    fn a_fallback_fleet_costs_its_own_types_and_compares_with_the_preferred() {
        // One hour of 2 "small" (fallback), half an hour of 1 "big" (preferred).
        let rows = vec![row("e", "small", "big", 3600.0, 2), row("e", "big", "big", 1800.0, 1)];
        let current = BTreeMap::from([("e".to_string(), Fleet::from([("big".to_string(), 1)]))]);
        let out = summarize(&rows, &current, &|_| Some(10.0), &price);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert!((e.instance_hours - 2.5).abs() < 1e-9);
        assert!((e.cost_usd - (2.0 + 2.0)).abs() < 1e-9);
        assert!((e.all_preferred_cost_usd - 10.0).abs() < 1e-9);
        assert!((e.fallback_cost_usd - -6.0).abs() < 1e-9);
        assert_eq!(e.hourly_cost_usd, 4.0);
        assert_eq!(e.max_hourly_cost_usd, Some(10.0));
        assert_eq!(e.types[0].instance_type, "big");
        assert_eq!(e.types[0].current, 1);
        assert_eq!(e.types[1].current, 0);
    }

    #[test]
    fn unknown_prices_are_reported_not_counted_as_free() {
        // An hour on an unpriced type, and an hour on a priced fallback of an unpriced
        // preferred type: the second counts in the cost, neither in the comparison.
        let rows = vec![
            row("e", "mystery", "big", 3600.0, 1),
            row("e", "small", "mystery", 3600.0, 1),
        ];
        let out = summarize(&rows, &BTreeMap::new(), &|_| None, &price);
        let e = &out[0];
        assert_eq!(e.cost_usd, 1.0);
        assert_eq!(e.types.iter().map(|t| t.cost_usd).sum::<f64>(), e.cost_usd);
        assert!((e.unpriced_instance_hours - 1.0).abs() < 1e-9);
        assert!((e.uncompared_instance_hours - 2.0).abs() < 1e-9);
        assert_eq!((e.all_preferred_cost_usd, e.fallback_cost_usd), (0.0, 0.0));
        let mystery = e.types.iter().find(|t| t.instance_type == "mystery").unwrap();
        assert_eq!(mystery.price_usd_per_hour, None);
    }

    #[test]
    fn an_endpoint_with_a_fleet_but_no_samples_is_listed() {
        let current = BTreeMap::from([("new".to_string(), Fleet::from([("small".to_string(), 3)]))]);
        let out = summarize(&[], &current, &|_| None, &price);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hourly_cost_usd, 3.0);
        assert_eq!(out[0].types[0].current, 3);
        assert_eq!(out[0].instance_hours, 0.0);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7.0 * 86400.0));
        assert_eq!(parse_duration("90m"), Ok(5400.0));
        assert_eq!(parse_duration("3600"), Ok(3600.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert!(parse_duration("7 days").unwrap_err().contains("unit"));
        assert!(parse_duration("-1d").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("d").is_err());
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION_S));
        assert!(parse_duration("3651d").unwrap_err().contains("3650 days"));
        assert!(parse_duration("300000000000000d").is_err());
    }

    proptest! {
        /// Cost and instance-hours add up whatever the rows: the per-type costs sum to the
        /// endpoint's cost when every price is known, and the fallback cost is exactly the
        /// difference against the preferred fleet.
        #[test]
        fn sums_are_consistent(rows in proptest::collection::vec(
            (0..3usize, 0..3usize, 0..3usize, 0.0..7200.0f64, 0..5u32), 0..40)) {
            let names = ["a", "b", "c"];
            let types = ["big", "small", "mystery"];
            let rows: Vec<UsageRow> = rows.into_iter()
                .map(|(e, t, p, s, n)| row(names[e], types[t], types[p], s, n)).collect();
            let out = summarize(&rows, &BTreeMap::new(), &|_| None, &price);
            let total_hours: f64 = rows.iter().map(|r| f64::from(r.count) * r.seconds / 3600.0).sum();
            let got_hours: f64 = out.iter().map(|e| e.instance_hours).sum();
            prop_assert!((total_hours - got_hours).abs() < 1e-6);
            for e in &out {
                let by_type: f64 = e.types.iter().map(|t| t.cost_usd).sum();
                prop_assert!((by_type - e.cost_usd).abs() < 1e-6);
                let unpriced: f64 = e.types.iter().filter(|t| t.price_usd_per_hour.is_none()).map(|t| t.instance_hours).sum();
                prop_assert!((unpriced - e.unpriced_instance_hours).abs() < 1e-6);
                if e.uncompared_instance_hours == 0.0 {
                    prop_assert!((e.cost_usd - e.all_preferred_cost_usd - e.fallback_cost_usd).abs() < 1e-9);
                }
                prop_assert!(e.uncompared_instance_hours + 1e-9 >= e.unpriced_instance_hours);
            }
        }

        #[test]
        fn durations_never_panic(s in ".{0,12}") {
            if let Ok(d) = parse_duration(&s) {
                // Every accepted duration makes a std Duration (what the CLI sleeps for).
                prop_assert!(std::time::Duration::try_from_secs_f64(d).is_ok());
            }
        }
    }
}
