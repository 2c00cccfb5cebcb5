//! ICE memory: what spillway has learned about instance types that answered *insufficient
//! capacity*.
//!
//! After an insufficient-capacity error a type is unavailable for an exponentially growing
//! interval (`initial`, doubling per consecutive error, capped at `max`). When the interval
//! ends the next launch attempt on the type is the probe; a success forgets the type. No
//! launch is attempted on a type inside its interval, so a short type is not hammered by every
//! variant and every instance that lists it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::Timestamp;

/// Back-off intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// First interval after an insufficient-capacity error, seconds.
    pub initial_s: f64,
    /// Longest interval, seconds.
    pub max_s: f64,
}

impl BackoffPolicy {
    /// The interval after `failures` consecutive errors (1-based).
    pub fn interval(&self, failures: u32) -> f64 {
        let exp = failures.saturating_sub(1).min(40) as i32;
        (self.initial_s * 2f64.powi(exp)).min(self.max_s)
    }
}

/// What is known about one unavailable type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IceEntry {
    /// Instance type.
    pub instance_type: String,
    /// The provider's last explanation.
    pub reason: String,
    /// First error of the current streak.
    pub first_seen: Timestamp,
    /// Latest error.
    pub last_seen: Timestamp,
    /// Consecutive errors.
    pub failures: u32,
    /// No launch before this time.
    pub next_probe: Timestamp,
}

/// ICE memory for every instance type.
#[derive(Debug, Clone, Default)]
pub struct IceMemory {
    entries: BTreeMap<String, IceEntry>,
}

impl IceMemory {
    /// Records an insufficient-capacity error; returns the updated entry.
    pub fn record_ice(&mut self, instance_type: &str, reason: &str, now: Timestamp, policy: BackoffPolicy) -> IceEntry {
        let e = self
            .entries
            .entry(instance_type.to_string())
            .or_insert_with(|| IceEntry {
                instance_type: instance_type.to_string(),
                reason: String::new(),
                first_seen: now,
                last_seen: now,
                failures: 0,
                next_probe: now,
            });
        e.failures += 1;
        e.last_seen = now;
        e.reason = reason.to_string();
        e.next_probe = now + policy.interval(e.failures);
        e.clone()
    }

    /// Records a successful launch: the type is forgotten. Returns what was known, if anything.
    pub fn record_success(&mut self, instance_type: &str) -> Option<IceEntry> {
        self.entries.remove(instance_type)
    }

    /// Forgets a type (an operator gave capacity back).
    pub fn forget(&mut self, instance_type: &str) {
        self.entries.remove(instance_type);
    }

    /// `Some(next_probe)` while the type is inside its back-off interval.
    pub fn blocked_until(&self, instance_type: &str, now: Timestamp) -> Option<Timestamp> {
        self.entries
            .get(instance_type)
            .map(|e| e.next_probe)
            .filter(|t| now < *t)
    }

    /// Everything known, by type.
    pub fn entries(&self) -> impl Iterator<Item = &IceEntry> {
        self.entries.values()
    }

    /// The entry of one type.
    pub fn get(&self, instance_type: &str) -> Option<&IceEntry> {
        self.entries.get(instance_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy {
        initial_s: 5.0,
        max_s: 60.0,
    };

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let got: Vec<f64> = (1..=6).map(|n| P.interval(n)).collect();
        assert_eq!(got, [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]);
        assert_eq!(P.interval(1000), 60.0);
    }

    #[test]
    fn blocks_inside_the_interval_and_forgets_on_success() {
        let mut m = IceMemory::default();
        let e = m.record_ice("ml.g6e.2xlarge", "busy", 100.0, P);
        assert_eq!(e.next_probe, 105.0);
        assert_eq!(m.blocked_until("ml.g6e.2xlarge", 104.9), Some(105.0));
        assert_eq!(m.blocked_until("ml.g6e.2xlarge", 105.0), None);
        let e = m.record_ice("ml.g6e.2xlarge", "still busy", 105.0, P);
        assert_eq!((e.failures, e.first_seen, e.next_probe), (2, 100.0, 115.0));
        assert!(m.record_success("ml.g6e.2xlarge").is_some());
        assert_eq!(m.blocked_until("ml.g6e.2xlarge", 105.0), None);
        assert!(m.get("ml.g6e.2xlarge").is_none());
    }
}
