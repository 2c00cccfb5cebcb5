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

use std::collections::{BTreeMap, BTreeSet};

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
    /// For a surge instance started to move the variant to preferred hardware: the instance it
    /// replaces once it is in service.
    pub replaces: Option<String>,
    /// It hosts copies of inference components: scale-in takes instances without copies first.
    pub holds_copies: bool,
}

/// Per-variant memory of an in-flight provisioning operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisioningState {
    /// When the operation gives up (`None`: no operation in flight).
    pub deadline: Option<Timestamp>,
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

    /// Feeds back the outcome of a launch on `pool`. Insufficient capacity itself is
    /// remembered server-wide by [`super::capacity::IceMemory`], which the planner consults.
    pub fn record_launch(&mut self, pool: &PoolSpec, insufficient_capacity: bool) {
        self.tried.insert(pool.instance_type.clone());
        if insufficient_capacity {
            self.ice_count += 1;
        }
    }
}

/// Answers when an instance type may be tried again (`None`: now).
pub type Blocked<'a> = &'a dyn Fn(&str) -> Option<Timestamp>;

/// What to do next for one variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Launch one instance from this pool.
    Launch(PoolSpec),
    /// Stop these instances (scale-in), in this order.
    Terminate(Vec<String>),
    /// Every pool is inside its insufficient-capacity back-off; try again at this time.
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
/// (sorted by priority) and currently has `instances`. `blocked` says which instance types are
/// inside their insufficient-capacity back-off; no launch is planned on them.
///
/// Surge instances (those with `replaces`) do not count towards `desired`: they are extra until
/// they take over from the instance they replace.
pub fn plan_variant(
    pools: &[PoolSpec],
    desired: u32,
    instances: &[InstanceView],
    prov: &ProvisioningState,
    blocked: Blocked<'_>,
    now: Timestamp,
) -> Step {
    let live: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.phase != InstancePhase::Terminating && i.replaces.is_none())
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
        if let Some(pool) = pools.iter().find(|p| blocked(&p.instance_type).is_none()) {
            return Step::Launch(pool.clone());
        }
        let until = pools
            .iter()
            .filter_map(|p| blocked(&p.instance_type))
            .fold(f64::INFINITY, f64::min);
        return Step::Pause(until.min(prov.deadline.unwrap_or(f64::INFINITY)));
    }
    if live.iter().all(|i| i.phase == InstancePhase::InService) {
        Step::Satisfied
    } else {
        Step::WaitForHealth
    }
}

/// The endpoint tag that sets a cost ceiling: USD per hour, a positive decimal number.
pub const COST_CEILING_TAG: &str = "spillway:max-hourly-cost";

/// Parses the value of [`COST_CEILING_TAG`]: digits with at most one decimal point (`12`,
/// `12.5`, `0.75`), greater than zero. The error says what is wrong, naming the tag.
pub fn parse_cost_ceiling(value: &str) -> Result<f64, String> {
    let t = value.trim();
    let plain = !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes().filter(|b| *b == b'.').count() <= 1
        && t.bytes().any(|b| b.is_ascii_digit());
    plain
        .then(|| t.parse::<f64>().ok())
        .flatten()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            format!(
                "tag {COST_CEILING_TAG}: value {value:?} is not a positive decimal number of USD per hour (for example 12.5)"
            )
        })
}

/// The hourly cost of a fleet: the sum of its instances' on-demand prices (`None`: the catalog
/// has no price for that type; counted as 0, see [`CostCeiling::refusal`]).
pub fn hourly_cost(prices: impl IntoIterator<Item = Option<f64>>) -> f64 {
    prices.into_iter().flatten().sum()
}

/// An endpoint's cost ceiling ([`COST_CEILING_TAG`]) and what its fleet costs now (live and
/// launching instances).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostCeiling {
    /// The ceiling, USD per hour.
    pub max_usd_per_hour: f64,
    /// The fleet's current hourly cost, USD.
    pub current_usd_per_hour: f64,
}

impl CostCeiling {
    /// Why one more instance of `instance_type` at `price` (USD per hour; `None`: unknown) may
    /// not be launched under this ceiling; `None` when it may. A type whose price the catalog
    /// does not know is never launched under a ceiling (spillway cannot show it stays under).
    pub fn refusal(&self, instance_type: &str, price: Option<f64>) -> Option<String> {
        let (max, now) = (self.max_usd_per_hour, self.current_usd_per_hour);
        match price {
            None => Some(format!(
                "{instance_type} has no price in the catalog, and under a cost ceiling ({COST_CEILING_TAG} = {}) \
                 only types with a known price are launched",
                usd(max)
            )),
            // A cent's millionth of slack for sums of decimal prices.
            Some(p) if now + p > max + 1e-9 => Some(format!(
                "{instance_type} costs {} per hour: the endpoint would go from {} to {} per hour, over its ceiling of {} \
                 ({COST_CEILING_TAG})",
                usd(p),
                usd(now),
                usd(now + p),
                usd(max)
            )),
            Some(_) => None,
        }
    }
}

/// `$1.222`: dollars with up to four decimals, trailing zeros dropped.
fn usd(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("${s}")
}

/// Guard rails for moving a fleet back to preferred hardware.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebalancePolicy {
    /// An instance must have run this long before it is replaced.
    pub min_runtime_s: f64,
    /// At most this many surge instances in flight per variant.
    pub max_in_flight: u32,
}

/// A migration step: start a surge instance from `pool` that replaces `replaces` once healthy.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// The better pool.
    pub pool: PoolSpec,
    /// The instance it will replace.
    pub replaces: String,
}

/// Plans the next move back to preferred hardware for a variant that has its desired count in
/// service: replace the lowest-priority instance that has run long enough with one from the
/// best higher-priority pool that is not inside its back-off. Surge first: the old instance is
/// stopped only after the new one passes its health check, so the variant never has fewer
/// healthy instances than desired.
pub fn plan_rebalance(
    pools: &[PoolSpec],
    instances: &[InstanceView],
    blocked: Blocked<'_>,
    policy: RebalancePolicy,
    now: Timestamp,
) -> Option<Migration> {
    let surges: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.replaces.is_some() && i.phase != InstancePhase::Terminating)
        .collect();
    if surges.len() as u32 >= policy.max_in_flight {
        return None;
    }
    let mut candidates: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| {
            i.replaces.is_none()
                && i.phase == InstancePhase::InService
                && now - i.launched_at >= policy.min_runtime_s
                && !surges.iter().any(|s| s.replaces.as_deref() == Some(i.id.as_str()))
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.launched_at.total_cmp(&b.launched_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    candidates.into_iter().find_map(|victim| {
        pools
            .iter()
            .find(|p| p.priority < victim.priority && blocked(&p.instance_type).is_none())
            .map(|p| Migration {
                pool: p.clone(),
                replaces: victim.id.clone(),
            })
    })
}

/// Why [`plan_rebalance`] found nothing to move although a lower-priority instance could move
/// up: it has not run `min_runtime_s` yet. The earliest such instance, the pool it would move
/// to, and when it may.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceWait {
    /// The instance that will be replaced first.
    pub instance: String,
    /// Its pool's priority.
    pub priority: u8,
    /// The better pool it would move to (not backing off now).
    pub pool: PoolSpec,
    /// When it has run `min_runtime_s`.
    pub until: Timestamp,
}

/// When [`plan_rebalance`] returns `None` only because every instance that could move to a
/// better pool is younger than `min_runtime_s`: which one moves first, and when. `None` when
/// nothing waits on the minimum runtime (nothing to move, every better pool backing off, or
/// the surge limit reached).
pub fn rebalance_wait(
    pools: &[PoolSpec],
    instances: &[InstanceView],
    blocked: Blocked<'_>,
    policy: RebalancePolicy,
    now: Timestamp,
) -> Option<RebalanceWait> {
    let surges = instances
        .iter()
        .filter(|i| i.replaces.is_some() && i.phase != InstancePhase::Terminating)
        .count() as u32;
    if surges >= policy.max_in_flight || plan_rebalance(pools, instances, blocked, policy, now).is_some() {
        return None;
    }
    instances
        .iter()
        .filter(|i| {
            i.replaces.is_none() && i.phase == InstancePhase::InService && now - i.launched_at < policy.min_runtime_s
        })
        .filter_map(|i| {
            let pool = pools
                .iter()
                .find(|p| p.priority < i.priority && blocked(&p.instance_type).is_none())?;
            Some(RebalanceWait {
                instance: i.id.clone(),
                priority: i.priority,
                pool: pool.clone(),
                until: i.launched_at + policy.min_runtime_s,
            })
        })
        .min_by(|a, b| a.until.total_cmp(&b.until).then_with(|| a.instance.cmp(&b.instance)))
}

/// Chooses `k` instances to remove on scale-in: instances holding no inference-component copy
/// first; then the lowest-priority pool (highest number) first; within a pool, instances still
/// launching before serving ones, then the most recently launched first (it has warmed the
/// fewest caches); the id breaks remaining ties.
pub fn scale_in_order(live: &[&InstanceView], k: usize) -> Vec<String> {
    let mut order: Vec<&&InstanceView> = live.iter().collect();
    order.sort_by(|a, b| {
        a.holds_copies
            .cmp(&b.holds_copies)
            .then_with(|| b.priority.cmp(&a.priority))
            .then_with(|| (a.phase == InstancePhase::InService).cmp(&(b.phase == InstancePhase::InService)))
            .then_with(|| b.launched_at.total_cmp(&a.launched_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    order.into_iter().take(k).map(|i| i.id.clone()).collect()
}

/// A rolling deployment (`DeploymentConfig.RollingUpdatePolicy`): the new fleet grows batch by
/// batch through its pools while the old one shrinks by what the new one has in service, with a
/// baking wait after each batch. The counts are per variant name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingUpdate {
    /// Instances per batch.
    pub batch: u32,
    /// Wait after each healthy batch before the next one.
    pub wait_s: f64,
    /// End of the current baking wait.
    pub baking_until: Option<Timestamp>,
    /// The old fleet's desired counts when the update started (restored on rollback).
    pub original: BTreeMap<String, u32>,
    /// The new fleet's final desired counts.
    pub target: BTreeMap<String, u32>,
}

/// Where a rolling deployment stands after [`RollingUpdate::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingProgress {
    /// Waiting after a healthy batch.
    Baking,
    /// The next batch was requested.
    NextBatch,
    /// Every new instance is in place; old instances are still stopping.
    Draining,
    /// Finished: the new fleet is complete and the old one gone.
    Done,
}

impl RollingUpdate {
    /// Starts a rolling deployment from the old counts to the new targets; returns the new
    /// fleet's desired counts for the first batch.
    pub fn start(
        batch: u32,
        wait_s: f64,
        original: BTreeMap<String, u32>,
        target: BTreeMap<String, u32>,
    ) -> (Self, BTreeMap<String, u32>) {
        let batch = batch.max(1);
        let first = target.iter().map(|(v, t)| (v.clone(), (*t).min(batch))).collect();
        (
            Self {
                batch,
                wait_s,
                baking_until: None,
                original,
                target,
            },
            first,
        )
    }

    /// Called while the current batch of the new fleet is in service: shrinks the old fleet by
    /// what the new one serves, bakes, then asks for the next batch.
    pub fn advance(
        &mut self,
        new_desired: &mut BTreeMap<String, u32>,
        old_desired: &mut BTreeMap<String, u32>,
        old_live: u32,
        now: Timestamp,
    ) -> RollingProgress {
        for (v, old) in old_desired.iter_mut() {
            let serving_new = new_desired.get(v).copied().unwrap_or(0);
            *old = self.original.get(v).copied().unwrap_or(0).saturating_sub(serving_new);
        }
        let complete = self
            .target
            .iter()
            .all(|(v, t)| new_desired.get(v).copied().unwrap_or(0) >= *t);
        if complete {
            return if old_live == 0 {
                RollingProgress::Done
            } else {
                RollingProgress::Draining
            };
        }
        let until = *self.baking_until.get_or_insert(now + self.wait_s);
        if now < until {
            return RollingProgress::Baking;
        }
        for (v, t) in &self.target {
            let n = new_desired.entry(v.clone()).or_insert(0);
            *n = (*n + self.batch).min(*t);
        }
        self.baking_until = None;
        RollingProgress::NextBatch
    }
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

/// The words AWS's `FailureReason` begins with when it cannot get instances. The SageMaker
/// Python SDK raises `sagemaker.exceptions.CapacityError` (not `UnexpectedStatusException`) for a
/// reason that contains `CapacityError`, so spillway's own detail follows this prefix.
pub const CAPACITY_ERROR_PREFIX: &str = "CapacityError: Unable to provision requested ML compute capacity. \
     Please retry using a different ML instance type.";

/// The `FailureReason` for a variant whose pools could not supply its instances in time: AWS's
/// sentence ([`CAPACITY_ERROR_PREFIX`]), then which pools were tried.
pub fn capacity_failure_reason(variant: &str, have: u32, want: u32, tried: &[String]) -> String {
    format!(
        "{CAPACITY_ERROR_PREFIX} Production variant {variant} has {have} of {want} instances: \
         InsufficientInstanceCapacity in every instance pool tried before \
         VariantInstanceProvisionTimeoutInSeconds expired: {}. \
         Retry after some time or add instance types to InstancePools.",
        if tried.is_empty() {
            "no pool could be tried".to_string()
        } else {
            tried.join(", ")
        }
    )
}

/// The `VariantStatus` message of a variant whose every pool is inside its insufficient-capacity
/// back-off or over the endpoint's cost ceiling: how far it got, why each pool said no (the provider's last answer, from
/// [`super::capacity::IceMemory`]; `reason` gives it per instance type), when the next probe is
/// and when the operation gives up. So an operator reads *what* is wrong, not only that
/// spillway is waiting.
pub fn backing_off_message(
    pools: &[PoolSpec],
    have: u32,
    want: u32,
    reason: &dyn Fn(&str) -> Option<String>,
    next_probe: Timestamp,
    deadline: Option<Timestamp>,
    now: Timestamp,
) -> String {
    let why: Vec<String> = pools
        .iter()
        .map(|p| {
            let r = reason(&p.instance_type).unwrap_or_else(|| "no answer recorded".into());
            format!("priority {} {}: {r}", p.priority, p.instance_type)
        })
        .collect();
    let give_up = match deadline {
        Some(d) => format!(
            "; gives up in {:.0}s (VariantInstanceProvisionTimeoutInSeconds)",
            (d - now).max(0.0)
        ),
        None => String::new(),
    };
    format!(
        "{have} of {want} instances: no instance pool can launch now. {}. Next probe in {:.1}s{give_up}",
        why.join("; "),
        (next_probe - now).max(0.0)
    )
}

/// `"1 instance"`, `"3 instances"`: a count with its noun in the right number.
pub fn count_of(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What each pool last answered, for the end of a capacity `FailureReason`:
/// ` Last answers: priority 1 ml.g6e.2xlarge: ...; priority 3 ...` (pools without an answer are
/// left out; empty when none has one).
pub fn last_answers(pools: &[PoolSpec], reason: &dyn Fn(&str) -> Option<String>) -> String {
    let answers: Vec<String> = pools
        .iter()
        .filter_map(|p| reason(&p.instance_type).map(|r| format!("priority {} {}: {r}", p.priority, p.instance_type)))
        .collect();
    if answers.is_empty() {
        String::new()
    } else {
        format!(" Last answers: {}.", answers.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::capacity::{BackoffPolicy, IceMemory};
    use proptest::prelude::*;

    const BACKOFF: BackoffPolicy = BackoffPolicy {
        initial_s: 1.0,
        max_s: 8.0,
    };
    const NEVER: &dyn Fn(&str) -> Option<Timestamp> = &|_| None;

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
            replaces: None,
            holds_copies: false,
        }
    }

    #[test]
    fn a_rebalance_waits_for_the_youngest_instance_to_be_old_enough() {
        let ps = pools(&["a", "b", "c"]);
        let policy = RebalancePolicy {
            min_runtime_s: 300.0,
            max_in_flight: 1,
        };
        let fleet = vec![
            inst("x", 1, InstancePhase::InService, 0.0),
            inst("y", 3, InstancePhase::InService, 50.0),
            inst("z", 2, InstancePhase::InService, 20.0),
        ];
        let w = rebalance_wait(&ps, &fleet, NEVER, policy, 100.0).expect("waits");
        assert_eq!((w.instance.as_str(), w.priority, w.until), ("z", 2, 320.0));
        assert_eq!(w.pool.instance_type, "a");
        // Once one is old enough, it is a migration, not a wait.
        assert_eq!(rebalance_wait(&ps, &fleet, NEVER, policy, 320.0), None);
        assert!(plan_rebalance(&ps, &fleet, NEVER, policy, 320.0).is_some());
        // Every better pool backing off: not a wait on the minimum runtime.
        let only_a_better = vec![inst("z", 2, InstancePhase::InService, 20.0)];
        let a_blocked = |t: &str| (t == "a").then_some(500.0);
        assert_eq!(rebalance_wait(&ps, &only_a_better, &a_blocked, policy, 100.0), None);
        // Nothing to move.
        assert_eq!(
            rebalance_wait(
                &ps,
                &[inst("x", 1, InstancePhase::InService, 99.0)],
                NEVER,
                policy,
                100.0
            ),
            None
        );
    }

    #[test]
    fn cost_ceilings_parse_and_refuse_what_would_go_over() {
        assert_eq!(parse_cost_ceiling("12.5"), Ok(12.5));
        assert_eq!(parse_cost_ceiling(" 3 "), Ok(3.0));
        assert_eq!(parse_cost_ceiling(".5"), Ok(0.5));
        for bad in ["0", "0.0", "-1", "abc", "", "1e3", "inf", "NaN", "1.2.3", "$5", "5 USD"] {
            let e = parse_cost_ceiling(bad).unwrap_err();
            assert!(e.starts_with("tag spillway:max-hourly-cost: value"), "{bad:?}: {e}");
        }
        let c = CostCeiling {
            max_usd_per_hour: 3.0,
            current_usd_per_hour: hourly_cost([Some(1.222), None]),
        };
        assert_eq!(c.refusal("ml.m5.xlarge", Some(0.23)), None);
        assert_eq!(
            c.refusal("ml.g6.2xlarge", Some(1.778)),
            None,
            "exactly at the ceiling is allowed"
        );
        assert_eq!(
            c.refusal("ml.g6e.2xlarge", Some(2.8026)).unwrap(),
            "ml.g6e.2xlarge costs $2.8026 per hour: the endpoint would go from $1.222 to $4.0246 per hour, over its \
             ceiling of $3 (spillway:max-hourly-cost)"
        );
        assert_eq!(
            c.refusal("ml.m4.xlarge", None).unwrap(),
            "ml.m4.xlarge has no price in the catalog, and under a cost ceiling (spillway:max-hourly-cost = $3) only \
             types with a known price are launched"
        );
    }

    proptest! {
        /// Launching one instance at a time while the ceiling allows it never takes the fleet's
        /// cost over the ceiling, and stops only when the next one would.
        #[test]
        fn a_ceiling_is_never_exceeded_by_the_launches_it_allows(
            max_cents in 1u32..100_000,
            prices in proptest::collection::vec(proptest::option::of(1u32..2_000), 1..30),
        ) {
            let max = max_cents as f64 / 100.0;
            let mut fleet: Vec<Option<f64>> = vec![];
            for p in prices.iter().map(|p| p.map(|c| c as f64 / 100.0)) {
                let c = CostCeiling { max_usd_per_hour: max, current_usd_per_hour: hourly_cost(fleet.clone()) };
                match c.refusal("t", p) {
                    None => fleet.push(p),
                    Some(_) => prop_assert!(p.is_none_or(|p| c.current_usd_per_hour + p > max)),
                }
                prop_assert!(hourly_cost(fleet.clone()) <= max + 1e-6);
            }
        }
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count_of(0, "instance"), "0 instances");
        assert_eq!(count_of(1, "instance"), "1 instance");
        assert_eq!(
            count_of(6, "insufficient-capacity answer"),
            "6 insufficient-capacity answers"
        );
    }

    #[test]
    fn last_answers_list_the_pools_that_answered() {
        let ps = pools(&["a", "b", "c"]);
        let reason = |t: &str| (t != "b").then(|| format!("{t} is full"));
        assert_eq!(
            last_answers(&ps, &reason),
            " Last answers: priority 1 a: a is full; priority 3 c: c is full."
        );
        assert_eq!(last_answers(&ps, &|_: &str| None), "");
    }

    #[test]
    fn the_backing_off_message_says_why_per_pool() {
        let ps = pools(&["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge"]);
        let reason = |t: &str| match t {
            "ml.g6e.2xlarge" => Some("ml.g6e.2xlarge has no capacity here: pinned to 0 slots".to_string()),
            "ml.m5.xlarge" => Some("ml.m5.xlarge needs 4 vCPUs; 16 of 16 are promised".to_string()),
            _ => None,
        };
        let m = backing_off_message(&ps, 3, 4, &reason, 102.5, Some(3700.0), 100.0);
        assert_eq!(
            m,
            "3 of 4 instances: no instance pool can launch now. \
             priority 1 ml.g6e.2xlarge: ml.g6e.2xlarge has no capacity here: pinned to 0 slots; \
             priority 2 ml.g6.2xlarge: no answer recorded; \
             priority 3 ml.m5.xlarge: ml.m5.xlarge needs 4 vCPUs; 16 of 16 are promised. \
             Next probe in 2.5s; gives up in 3600s (VariantInstanceProvisionTimeoutInSeconds)"
        );
        let none = |_: &str| None;
        assert!(backing_off_message(&ps, 0, 1, &none, 90.0, None, 100.0).ends_with("Next probe in 0.0s"));
    }

    /// Drives the planner against a fixed capacity table the way the controller does, with
    /// launched instances healthy at once. Returns the instance types launched, in order.
    fn simulate(ps: &[PoolSpec], desired: u32, slots: &mut [u32], deadline_s: f64) -> (Vec<String>, Step) {
        let mut prov = ProvisioningState::default();
        let mut ice = IceMemory::default();
        let mut now = 0.0;
        prov.begin(now, deadline_s);
        let mut fleet: Vec<InstanceView> = vec![];
        let mut launched = vec![];
        for _ in 0..10_000 {
            let step = {
                let blocked = |t: &str| ice.blocked_until(t, now);
                plan_variant(ps, desired, &fleet, &prov, &blocked, now)
            };
            match step {
                Step::Launch(pool) => {
                    assert!(
                        ice.blocked_until(&pool.instance_type, now).is_none(),
                        "launch inside back-off"
                    );
                    let idx = (pool.priority - 1) as usize;
                    let short = slots[idx] == 0;
                    if short {
                        ice.record_ice(&pool.instance_type, "busy", now, BACKOFF);
                    } else {
                        slots[idx] -= 1;
                        ice.record_success(&pool.instance_type);
                        fleet.push(inst(
                            &format!("i{}", fleet.len()),
                            pool.priority,
                            InstancePhase::InService,
                            now,
                        ));
                        launched.push(pool.instance_type.clone());
                    }
                    prov.record_launch(&pool, short);
                }
                Step::Pause(until) => {
                    assert!(until > now, "pause must move time forward");
                    now = until;
                }
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
    fn types_in_back_off_are_skipped_and_probed_when_it_ends() {
        let ps = pools(&["a", "b"]);
        let mut prov = ProvisioningState::default();
        prov.begin(0.0, 100.0);
        let blocked_a = |t: &str| (t == "a").then_some(2.0);
        assert_eq!(
            plan_variant(&ps, 1, &[], &prov, &blocked_a, 0.0),
            Step::Launch(ps[1].clone())
        );
        let blocked_both = |t: &str| Some(if t == "a" { 2.0 } else { 3.0 });
        assert_eq!(plan_variant(&ps, 1, &[], &prov, &blocked_both, 1.0), Step::Pause(2.0));
        assert_eq!(
            plan_variant(&ps, 1, &[], &prov, NEVER, 2.0),
            Step::Launch(ps[0].clone())
        );
    }

    #[test]
    fn waits_for_launching_instances() {
        let ps = pools(&["a"]);
        let fleet = [inst("x", 1, InstancePhase::Launching, 0.0)];
        let step = plan_variant(&ps, 1, &fleet, &ProvisioningState::default(), NEVER, 1.0);
        assert_eq!(step, Step::WaitForHealth);
    }

    #[test]
    fn scale_in_takes_instances_without_copies_first() {
        let mut busy = inst("busy-fallback", 3, InstancePhase::InService, 5.0);
        busy.holds_copies = true;
        let idle = inst("idle-preferred", 1, InstancePhase::InService, 1.0);
        let live = [&busy, &idle];
        assert_eq!(scale_in_order(&live, 1), ["idle-preferred"]);
        assert_eq!(scale_in_order(&live, 2), ["idle-preferred", "busy-fallback"]);
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
        let step = plan_variant(&ps, 2, &fleet, &ProvisioningState::default(), NEVER, 5.0);
        assert_eq!(
            step,
            Step::Terminate(vec!["p3".into(), "p2-new".into(), "p2-old".into()])
        );
    }

    #[test]
    fn terminating_and_surge_instances_do_not_count() {
        let ps = pools(&["a"]);
        let mut surge = inst("s", 1, InstancePhase::InService, 0.0);
        surge.replaces = Some("gone".into());
        let fleet = [inst("x", 1, InstancePhase::Terminating, 0.0), surge];
        let mut prov = ProvisioningState::default();
        prov.begin(0.0, 10.0);
        assert_eq!(
            plan_variant(&ps, 1, &fleet, &prov, NEVER, 1.0),
            Step::Launch(ps[0].clone())
        );
    }

    #[test]
    fn rebalance_replaces_the_worst_old_enough_instance() {
        let ps = pools(&["a", "b", "c"]);
        let policy = RebalancePolicy {
            min_runtime_s: 10.0,
            max_in_flight: 1,
        };
        let fleet = [
            inst("p1", 1, InstancePhase::InService, 0.0),
            inst("p3-young", 3, InstancePhase::InService, 95.0),
            inst("p3-old", 3, InstancePhase::InService, 50.0),
            inst("p2", 2, InstancePhase::InService, 0.0),
        ];
        let m = plan_rebalance(&ps, &fleet, NEVER, policy, 100.0).unwrap();
        assert_eq!((m.pool.priority, m.replaces.as_str()), (1, "p3-old"));
        // Priority 1 backing off: priority 2 is still better than 3.
        let blocked = |t: &str| (t == "a").then_some(200.0);
        let m = plan_rebalance(&ps, &fleet, &blocked, policy, 100.0).unwrap();
        assert_eq!((m.pool.priority, m.replaces.as_str()), (2, "p3-old"));
        // One surge in flight is the limit.
        let mut with_surge = fleet.to_vec();
        let mut s = inst("s", 1, InstancePhase::Launching, 99.0);
        s.replaces = Some("p3-old".into());
        with_surge.push(s);
        assert_eq!(plan_rebalance(&ps, &with_surge, NEVER, policy, 100.0), None);
        // Nothing to gain when everything runs on priority 1.
        let best = [inst("x", 1, InstancePhase::InService, 0.0)];
        assert_eq!(plan_rebalance(&ps, &best, NEVER, policy, 100.0), None);
    }

    #[test]
    fn rolling_update_moves_batch_by_batch_with_baking() {
        let m = |pairs: &[(&str, u32)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        let (mut r, mut new) = RollingUpdate::start(2, 10.0, m(&[("v", 5)]), m(&[("v", 5)]));
        assert_eq!(new, m(&[("v", 2)]));
        let mut old = m(&[("v", 5)]);
        // Batch 1 healthy: the old fleet shrinks by 2, baking starts.
        assert_eq!(r.advance(&mut new, &mut old, 5, 0.0), RollingProgress::Baking);
        assert_eq!(old, m(&[("v", 3)]));
        assert_eq!(r.advance(&mut new, &mut old, 3, 5.0), RollingProgress::Baking);
        assert_eq!(r.advance(&mut new, &mut old, 3, 10.0), RollingProgress::NextBatch);
        assert_eq!(new, m(&[("v", 4)]));
        assert_eq!(r.advance(&mut new, &mut old, 3, 11.0), RollingProgress::Baking);
        assert_eq!(old, m(&[("v", 1)]));
        assert_eq!(r.advance(&mut new, &mut old, 1, 21.0), RollingProgress::NextBatch);
        assert_eq!(new, m(&[("v", 5)]));
        assert_eq!(r.advance(&mut new, &mut old, 1, 22.0), RollingProgress::Draining);
        assert_eq!(old, m(&[("v", 0)]));
        assert_eq!(r.advance(&mut new, &mut old, 0, 23.0), RollingProgress::Done);
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
