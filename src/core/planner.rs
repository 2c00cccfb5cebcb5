//! The fleet planner: desired state + observed fleet + capacity knowledge → the next step.
//!
//! The planner decides one step at a time for one variant of one deployment. The controller
//! executes the step (for example one launch), feeds the outcome back through
//! [`ProvisioningState::record_launch`], and asks again. Deciding instance by instance is what
//! lets a variant end up mixed: the first instance may land on Priority 1 and the next, after
//! an insufficient-capacity error, on Priority 2.
//!
//! Provisioning model (see `docs/api-compat.md`, "Provisioning"): try the highest-priority
//! pool; on insufficient capacity move to the next pool at once; when every pool has answered
//! insufficient capacity in the current cycle, pause briefly and start a new cycle at
//! Priority 1; keep going until the count is met or the single deadline of the operation
//! passes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::model::{EndpointStatus, PoolSpec, Timestamp};

/// Lifecycle of an instance as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstancePhase {
    /// Process started, `/ping` not yet answered 200.
    Launching,
    /// Passing health checks and receiving traffic.
    InService,
    /// Being drained and stopped; no longer counts towards the desired count.
    Terminating,
}

/// An instance of one variant, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    /// Instance id.
    pub id: String,
    /// Priority of the pool it was launched from.
    pub priority: u8,
    /// Current phase.
    pub phase: InstancePhase,
    /// When the launch succeeded.
    pub launched_at: Timestamp,
}

/// Per-variant memory of an in-flight provisioning operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisioningState {
    /// When the operation gives up (`None`: no operation in flight).
    pub deadline: Option<Timestamp>,
    /// Priorities that answered insufficient capacity in the current cycle.
    pub cycle_ice: BTreeSet<u8>,
    /// No launch before this time (set when a whole cycle answered insufficient capacity).
    pub pause_until: Option<Timestamp>,
    /// Every instance type attempted during the operation, for the failure reason.
    pub tried: BTreeSet<String>,
    /// Number of insufficient-capacity answers during the operation.
    pub ice_count: u32,
}

impl ProvisioningState {
    /// Starts a provisioning operation (if none is in flight) with a deadline `timeout_s` from `now`.
    pub fn begin(&mut self, now: Timestamp, timeout_s: f64) {
        if self.deadline.is_none() {
            *self = Self {
                deadline: Some(now + timeout_s),
                ..Self::default()
            };
        }
    }

    /// Ends the operation (count met, or given up).
    pub fn finish(&mut self) {
        *self = Self::default();
    }

    /// Feeds back the outcome of a launch on `pool`. `pools` is the variant's pool count;
    /// `pause_s` is how long to wait once every pool has answered insufficient capacity.
    pub fn record_launch(
        &mut self,
        pool: &PoolSpec,
        insufficient_capacity: bool,
        pools: &[PoolSpec],
        now: Timestamp,
        pause_s: f64,
    ) {
        self.tried.insert(pool.instance_type.clone());
        if !insufficient_capacity {
            return;
        }
        self.ice_count += 1;
        self.cycle_ice.insert(pool.priority);
        if pools.iter().all(|p| self.cycle_ice.contains(&p.priority)) {
            self.cycle_ice.clear();
            self.pause_until = Some(now + pause_s);
        }
    }
}

/// What to do next for one variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Launch one instance from this pool.
    Launch(PoolSpec),
    /// Stop these instances (scale-in), in this order.
    Terminate(Vec<String>),
    /// Every pool answered insufficient capacity this cycle; try again at this time.
    Pause(Timestamp),
    /// Enough instances exist; some are still starting.
    WaitForHealth,
    /// The desired count of instances is in service.
    Satisfied,
    /// The deadline passed before the count was met.
    DeadlineExceeded {
        /// Instances live now.
        have: u32,
        /// Instances wanted.
        want: u32,
        /// Instance types attempted, in priority order.
        tried: Vec<String>,
    },
}

/// Decides the next step for a variant that wants `desired` instances from `pools`
/// (sorted by priority) and currently has `instances`.
pub fn plan_variant(
    pools: &[PoolSpec],
    desired: u32,
    instances: &[InstanceView],
    prov: &ProvisioningState,
    now: Timestamp,
) -> Step {
    let live: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.phase != InstancePhase::Terminating)
        .collect();
    let n = live.len() as u32;
    if n > desired {
        return Step::Terminate(scale_in_order(&live, (n - desired) as usize));
    }
    if n < desired {
        if let Some(deadline) = prov.deadline
            && now >= deadline
        {
            let tried = pools
                .iter()
                .filter(|p| prov.tried.contains(&p.instance_type))
                .map(|p| p.instance_type.clone())
                .collect();
            return Step::DeadlineExceeded {
                have: n,
                want: desired,
                tried,
            };
        }
        if let Some(until) = prov.pause_until
            && now < until
        {
            return Step::Pause(until);
        }
        let next = pools
            .iter()
            .find(|p| !prov.cycle_ice.contains(&p.priority))
            .or_else(|| pools.first());
        if let Some(pool) = next {
            return Step::Launch(pool.clone());
        }
    }
    if live.iter().all(|i| i.phase == InstancePhase::InService) {
        Step::Satisfied
    } else {
        Step::WaitForHealth
    }
}

/// Chooses `k` instances to remove on scale-in: lowest-priority pool (highest number) first;
/// within a pool, instances still launching before serving ones, then the most recently
/// launched first (it has warmed the fewest caches); the id breaks remaining ties.
pub fn scale_in_order(live: &[&InstanceView], k: usize) -> Vec<String> {
    let mut order: Vec<&&InstanceView> = live.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| (a.phase == InstancePhase::InService).cmp(&(b.phase == InstancePhase::InService)))
            .then_with(|| b.launched_at.total_cmp(&a.launched_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    order.into_iter().take(k).map(|i| i.id.clone()).collect()
}

/// The kind of control-plane operation an endpoint is going through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `CreateEndpoint`: the first fleet.
    Create,
    /// `UpdateEndpoint`: a new fleet replaces the old one (blue/green).
    Deploy,
    /// `UpdateEndpointWeightsAndCapacities`, or replacing lost instances.
    Scale,
}

/// How one variant's provisioning ended up, summarised for the endpoint state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum VariantOutcome {
    /// All desired instances in service.
    Ready,
    /// Still provisioning.
    InProgress,
    /// The deadline passed with fewer instances than desired.
    Shortfall(String),
    /// An instance never passed its health check.
    Unhealthy(String),
}

/// What the endpoint does given its variants' outcomes.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointDecision {
    /// Keep going.
    Continue,
    /// The operation succeeded: the endpoint is (back) in service.
    InService,
    /// Creation failed: stop every instance and mark the endpoint `Failed` with this reason.
    Fail(String),
    /// The new fleet of an update failed: stop it, keep serving the old one, report the reason.
    RollBack(String),
    /// A scale-out could not be fully met: keep what was provisioned, return to service,
    /// record the shortfall.
    AcceptShortfall(String),
}

/// The endpoint state machine's transition on the outcomes of its variants.
pub fn decide(op: Operation, outcomes: &[VariantOutcome]) -> EndpointDecision {
    let problem = outcomes.iter().find_map(|o| match o {
        VariantOutcome::Unhealthy(r) => Some((true, r.clone())),
        VariantOutcome::Shortfall(r) => Some((false, r.clone())),
        _ => None,
    });
    if let Some((unhealthy, reason)) = problem {
        return match op {
            Operation::Create => EndpointDecision::Fail(reason),
            Operation::Deploy => EndpointDecision::RollBack(reason),
            Operation::Scale if unhealthy => EndpointDecision::AcceptShortfall(reason),
            Operation::Scale => EndpointDecision::AcceptShortfall(reason),
        };
    }
    if outcomes.iter().all(|o| *o == VariantOutcome::Ready) {
        EndpointDecision::InService
    } else {
        EndpointDecision::Continue
    }
}

/// The status an endpoint shows while `op` is in flight.
pub fn status_during(op: Operation) -> EndpointStatus {
    match op {
        Operation::Create => EndpointStatus::Creating,
        Operation::Deploy | Operation::Scale => EndpointStatus::Updating,
    }
}

/// The `FailureReason` for a variant whose pools could not supply its instances in time.
pub fn capacity_failure_reason(variant: &str, have: u32, want: u32, tried: &[String]) -> String {
    format!(
        "Unable to provision requested ML compute capacity for production variant {variant} \
         ({have} of {want} instances) due to InsufficientInstanceCapacity error in every \
         instance pool tried before VariantInstanceProvisionTimeoutInSeconds expired: {}. \
         Please retry after some time or add instance types to InstancePools.",
        if tried.is_empty() {
            "no pool could be tried".to_string()
        } else {
            tried.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pools(types: &[&str]) -> Vec<PoolSpec> {
        types
            .iter()
            .enumerate()
            .map(|(i, t)| PoolSpec {
                priority: i as u8 + 1,
                instance_type: t.to_string(),
                model_name: "m".into(),
            })
            .collect()
    }

    fn inst(id: &str, priority: u8, phase: InstancePhase, at: f64) -> InstanceView {
        InstanceView {
            id: id.into(),
            priority,
            phase,
            launched_at: at,
        }
    }

    /// Drives the planner against a capacity table the way the controller does, with launched
    /// instances becoming healthy at once. Returns the instance types launched, in order.
    fn simulate(ps: &[PoolSpec], desired: u32, slots: &mut [u32], deadline_s: f64) -> (Vec<String>, Step) {
        let mut prov = ProvisioningState::default();
        let mut now = 0.0;
        prov.begin(now, deadline_s);
        let mut fleet: Vec<InstanceView> = vec![];
        let mut launched = vec![];
        for _ in 0..10_000 {
            match plan_variant(ps, desired, &fleet, &prov, now) {
                Step::Launch(pool) => {
                    let idx = (pool.priority - 1) as usize;
                    let ice = slots[idx] == 0;
                    if !ice {
                        slots[idx] -= 1;
                        fleet.push(inst(
                            &format!("i{}", fleet.len()),
                            pool.priority,
                            InstancePhase::InService,
                            now,
                        ));
                        launched.push(pool.instance_type.clone());
                    }
                    prov.record_launch(&pool, ice, ps, now, 1.0);
                }
                Step::Pause(until) => now = until,
                other => return (launched, other),
            }
        }
        panic!("planner did not converge");
    }

    #[test]
    fn falls_back_to_the_second_pool() {
        let ps = pools(&["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge"]);
        let (launched, end) = simulate(&ps, 2, &mut [0, 5, 5], 300.0);
        assert_eq!(launched, ["ml.g6.2xlarge", "ml.g6.2xlarge"]);
        assert_eq!(end, Step::Satisfied);
    }

    #[test]
    fn falls_back_to_the_third_pool_and_mixes() {
        let ps = pools(&["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge"]);
        let (launched, end) = simulate(&ps, 4, &mut [1, 1, 5], 300.0);
        assert_eq!(
            launched,
            ["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge", "ml.m5.xlarge"]
        );
        assert_eq!(end, Step::Satisfied);
    }

    #[test]
    fn exhausted_pools_fail_at_the_deadline_naming_the_types() {
        let ps = pools(&["ml.g6e.2xlarge", "ml.g6.2xlarge"]);
        let (launched, end) = simulate(&ps, 1, &mut [0, 0], 10.0);
        assert!(launched.is_empty());
        match end {
            Step::DeadlineExceeded { have, want, tried } => {
                assert_eq!((have, want), (0, 1));
                assert_eq!(tried, ["ml.g6e.2xlarge", "ml.g6.2xlarge"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_cycle_starts_at_priority_one_after_a_pause() {
        let ps = pools(&["a", "b"]);
        let mut prov = ProvisioningState::default();
        prov.begin(0.0, 100.0);
        prov.record_launch(&ps[0], true, &ps, 0.0, 2.0);
        assert_eq!(plan_variant(&ps, 1, &[], &prov, 0.0), Step::Launch(ps[1].clone()));
        prov.record_launch(&ps[1], true, &ps, 0.5, 2.0);
        assert_eq!(plan_variant(&ps, 1, &[], &prov, 1.0), Step::Pause(2.5));
        assert_eq!(plan_variant(&ps, 1, &[], &prov, 2.5), Step::Launch(ps[0].clone()));
    }

    #[test]
    fn waits_for_launching_instances() {
        let ps = pools(&["a"]);
        let fleet = [inst("x", 1, InstancePhase::Launching, 0.0)];
        assert_eq!(
            plan_variant(&ps, 1, &fleet, &ProvisioningState::default(), 1.0),
            Step::WaitForHealth
        );
    }

    #[test]
    fn scale_in_removes_fallback_instances_first() {
        let ps = pools(&["a", "b", "c"]);
        let fleet = [
            inst("p1-old", 1, InstancePhase::InService, 0.0),
            inst("p3", 3, InstancePhase::InService, 1.0),
            inst("p2-old", 2, InstancePhase::InService, 2.0),
            inst("p2-new", 2, InstancePhase::InService, 3.0),
            inst("p1-new", 1, InstancePhase::InService, 4.0),
        ];
        let step = plan_variant(&ps, 2, &fleet, &ProvisioningState::default(), 5.0);
        assert_eq!(
            step,
            Step::Terminate(vec!["p3".into(), "p2-new".into(), "p2-old".into()])
        );
    }

    #[test]
    fn terminating_instances_do_not_count() {
        let ps = pools(&["a"]);
        let fleet = [inst("x", 1, InstancePhase::Terminating, 0.0)];
        let mut prov = ProvisioningState::default();
        prov.begin(0.0, 10.0);
        assert_eq!(plan_variant(&ps, 1, &fleet, &prov, 1.0), Step::Launch(ps[0].clone()));
    }

    #[test]
    fn endpoint_decisions_per_operation() {
        use VariantOutcome::*;
        assert_eq!(decide(Operation::Create, &[Ready, Ready]), EndpointDecision::InService);
        assert_eq!(
            decide(Operation::Create, &[Ready, InProgress]),
            EndpointDecision::Continue
        );
        assert_eq!(
            decide(Operation::Create, &[Shortfall("x".into())]),
            EndpointDecision::Fail("x".into())
        );
        assert_eq!(
            decide(Operation::Create, &[Unhealthy("h".into())]),
            EndpointDecision::Fail("h".into())
        );
        assert_eq!(
            decide(Operation::Deploy, &[Shortfall("x".into())]),
            EndpointDecision::RollBack("x".into())
        );
        assert_eq!(
            decide(Operation::Scale, &[Shortfall("x".into())]),
            EndpointDecision::AcceptShortfall("x".into())
        );
        assert_eq!(status_during(Operation::Scale), EndpointStatus::Updating);
    }

    proptest! {
        /// Whatever the capacity, the planner never provisions more than desired, fills the
        /// desired count when total capacity allows, and otherwise fails at the deadline.
        #[test]
        fn provisioning_respects_count_and_capacity(
            desired in 1u32..8,
            slots in proptest::collection::vec(0u32..4, 1..=5),
        ) {
            let names: Vec<String> = (0..slots.len()).map(|i| format!("t{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let ps = pools(&refs);
            let total: u32 = slots.iter().sum();
            let mut s = slots.clone();
            let (launched, end) = simulate(&ps, desired, &mut s, 60.0);
            prop_assert!(launched.len() as u32 <= desired);
            if total >= desired {
                prop_assert_eq!(end, Step::Satisfied);
                // Higher-priority pools are used up before lower ones are touched.
                for (i, n) in names.iter().enumerate() {
                    let used = launched.iter().filter(|l| *l == n).count() as u32;
                    let lower_used = launched.iter().any(|l| names[i + 1..].contains(l));
                    if lower_used { prop_assert_eq!(used, slots[i]); }
                }
            } else {
                let is_deadline = matches!(end, Step::DeadlineExceeded { .. });
                prop_assert!(is_deadline);
                prop_assert_eq!(launched.len() as u32, total);
            }
        }

        /// Scale-in never removes an instance while one from a lower-priority pool stays.
        #[test]
        fn scale_in_keeps_preferred_instances(
            prios in proptest::collection::vec(1u8..=5, 1..12),
            keep in 0usize..12,
        ) {
            let fleet: Vec<InstanceView> = prios.iter().enumerate()
                .map(|(i, p)| inst(&format!("i{i}"), *p, InstancePhase::InService, i as f64)).collect();
            let refs: Vec<&InstanceView> = fleet.iter().collect();
            let k = fleet.len().saturating_sub(keep);
            let removed = scale_in_order(&refs, k);
            prop_assert_eq!(removed.len(), k);
            let max_kept = fleet.iter().filter(|i| !removed.contains(&i.id)).map(|i| i.priority).max();
            let min_removed = fleet.iter().filter(|i| removed.contains(&i.id)).map(|i| i.priority).min();
            if let (Some(kept), Some(rm)) = (max_kept, min_removed) {
                prop_assert!(kept <= rm, "kept priority {} while removing {}", kept, rm);
            }
        }
    }
}
