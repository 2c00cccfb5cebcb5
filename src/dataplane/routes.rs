//! The data plane's view of the fleet: which instances of which variant serve traffic.
//!
//! The controller publishes a fresh [`EndpointRoutes`] whenever the serving set changes; the
//! invocation path only reads an `Arc` snapshot and never waits on the control plane or the
//! store. Outstanding-request counters live on [`RouteInstance`] and survive republishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::http::HeaderValue;
use std::time::Duration;

use crate::core::model::RoutingStrategy;
use crate::telemetry::metrics::SeriesHandle;

/// One instance that receives traffic.
#[derive(Debug)]
pub struct RouteInstance {
    /// Instance id.
    pub id: String,
    /// `host:port` (also the key of the thread-local connection pools in `upstream.rs`).
    pub address: Arc<str>,
    /// `Host` header for requests to the instance.
    pub host: HeaderValue,
    /// Instance type (returned as `X-Spillway-Instance-Type`).
    pub instance_type: String,
    /// Requests in flight.
    pub outstanding: AtomicUsize,
    /// Relative capacity of the instance type (for capacity-aware routing): total accelerator
    /// memory in GiB for accelerated types, vCPUs otherwise.
    pub capacity: f64,
    /// Mean model latency (µs) its instance type showed recently in this variant, 0 while
    /// unknown; kept up to date by the fleet sampler for capacity-aware routing.
    pub measured_latency_us: AtomicU64,
    /// Records this instance's invocations (created on the first one).
    pub metrics: OnceLock<SeriesHandle>,
}

impl RouteInstance {
    /// An instance with no request in flight.
    pub fn new(id: String, address: String, instance_type: String) -> Self {
        let capacity = crate::core::catalog::lookup(&instance_type)
            .map(|s| match &s.accelerator {
                Some(a) => a.count as f64 * a.memory_gib_per_device,
                None => s.vcpus as f64,
            })
            .filter(|c| *c > 0.0)
            .unwrap_or(1.0);
        Self {
            id,
            host: HeaderValue::from_str(&address).unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            address: address.into(),
            instance_type,
            outstanding: AtomicUsize::new(0),
            capacity,
            measured_latency_us: AtomicU64::new(0),
            metrics: OnceLock::new(),
        }
    }

    /// Counts one more request in flight unless that would pass `limit` (`0`: no limit). The
    /// check and the increment are one atomic step, so concurrent requests on different I/O
    /// threads cannot both take an instance's last slot.
    pub fn try_reserve(&self, limit: u32) -> bool {
        if limit == 0 {
            self.outstanding.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit as usize).then_some(n + 1)
            })
            .is_ok()
    }

    /// Requests in flight now.
    pub fn load(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// A variant's serving instances.
#[derive(Debug)]
pub struct VariantRoutes {
    /// Variant name.
    pub name: String,
    /// Traffic weight.
    pub weight: f64,
    /// How to pick an instance.
    pub strategy: RoutingStrategy,
    /// Instances in service.
    pub instances: Vec<Arc<RouteInstance>>,
}

/// An inference component's serving copies (docs/inference-components.md, "Routing").
#[derive(Debug)]
pub struct ComponentRoutes {
    /// Component name.
    pub name: String,
    /// The variant whose instances host it.
    pub variant: String,
    /// How to pick a copy (the variant's `RoutingConfig`).
    pub strategy: RoutingStrategy,
    /// Copies in service; a copy's `instance_type` is its hosting instance's type and its id
    /// the copy's id.
    pub copies: Vec<Arc<RouteInstance>>,
}

/// An endpoint's serving variants.
#[derive(Debug, Default)]
pub struct EndpointRoutes {
    /// Variants in configuration order.
    pub variants: Vec<VariantRoutes>,
    /// For an endpoint that hosts inference components: each component's copies, by name.
    /// Empty for an endpoint whose variants run models themselves.
    pub components: std::collections::BTreeMap<String, ComponentRoutes>,
    /// Whether the endpoint hosts inference components (its variants name no model): an
    /// invocation must then name one (`InferenceComponentName`).
    pub hosts_components: bool,
    /// The active deployment's `AsyncInferenceConfig`: set when the endpoint is asynchronous
    /// (it takes `InvokeEndpointAsync`, and `InvokeEndpoint` is refused).
    pub async_config: Option<Arc<crate::core::model::AsyncInferenceConfig>>,
}

/// Why no instance could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub enum PickError {
    /// `TargetVariant` names no variant of the endpoint.
    UnknownVariant(String),
    /// No instance is in service (for the target variant, or at all).
    NoInstance,
    /// Every candidate instance is at the concurrency limit.
    Saturated,
}

impl EndpointRoutes {
    /// Every instance and every component copy routed to.
    pub fn routed(&self) -> impl Iterator<Item = &Arc<RouteInstance>> {
        self.variants
            .iter()
            .flat_map(|v| &v.instances)
            .chain(self.components.values().flat_map(|c| &c.copies))
    }

    /// Picks a variant (by `target`, else by weight) and an instance within it with fewer than
    /// `limit` requests in flight (`0`: no limit), avoiding `avoid` when another instance
    /// exists. Returns the variant's index and the instance.
    pub fn pick(
        &self,
        target: Option<&str>,
        limit: u32,
        avoid: Option<&str>,
    ) -> Result<(usize, Arc<RouteInstance>), PickError> {
        let vi = match target {
            Some(t) => self
                .variants
                .iter()
                .position(|v| v.name == t)
                .ok_or_else(|| PickError::UnknownVariant(t.to_string()))?,
            None => {
                let usable = |v: &&VariantRoutes| v.weight > 0.0 && !v.instances.is_empty();
                let total: f64 = self.variants.iter().filter(usable).map(|v| v.weight).sum();
                let mut x = fastrand::f64() * total;
                let mut chosen = None;
                for (i, v) in self.variants.iter().enumerate().filter(|(_, v)| usable(v)) {
                    chosen = Some(i);
                    if x < v.weight {
                        break;
                    }
                    x -= v.weight;
                }
                chosen.ok_or(PickError::NoInstance)?
            }
        };
        let inst = self.variants[vi].pick_instance(limit, avoid)?;
        Ok((vi, inst))
    }
}

impl VariantRoutes {
    /// Picks an instance by the variant's strategy among those under the concurrency limit.
    /// Allocation-free: it runs on every invocation.
    pub fn pick_instance(&self, limit: u32, avoid: Option<&str>) -> Result<Arc<RouteInstance>, PickError> {
        pick_among(&self.instances, self.strategy, limit, avoid)
    }
}

impl ComponentRoutes {
    /// Picks a copy by the component's strategy among those under the per-copy concurrency
    /// limit (`0`: none), avoiding `avoid` when another copy is open: the same choice a
    /// variant makes among its instances ([`VariantRoutes::pick_instance`]).
    pub fn pick_copy(&self, limit: u32, avoid: Option<&str>) -> Result<Arc<RouteInstance>, PickError> {
        pick_among(&self.copies, self.strategy, limit, avoid)
    }

    /// Copies in service of `instance_type` (for `InvocationsPerCopy` per type).
    pub fn copies_of_type(&self, instance_type: &str) -> usize {
        self.copies.iter().filter(|c| c.instance_type == instance_type).count()
    }
}

/// Picks one of `instances` by `strategy` among those with fewer than `limit` requests in
/// flight (`0`: no limit), avoiding `avoid` unless it is the only open one. Allocation-free.
fn pick_among(
    instances: &[Arc<RouteInstance>],
    strategy: RoutingStrategy,
    limit: u32,
    avoid: Option<&str>,
) -> Result<Arc<RouteInstance>, PickError> {
    if instances.is_empty() {
        return Err(PickError::NoInstance);
    }
    let open = |i: &RouteInstance| limit == 0 || i.load() < limit as usize;
    let n_open = instances.iter().filter(|i| open(i)).count();
    if n_open == 0 {
        return Err(PickError::Saturated);
    }
    // Avoid the instance that just refused a connection, unless it is the only candidate.
    let avoided = avoid.filter(|a| n_open > 1 && instances.iter().any(|i| open(i) && i.id == *a));
    let eligible = |i: &&Arc<RouteInstance>| open(i) && avoided.is_none_or(|a| i.id != a);
    let chosen = match strategy {
        RoutingStrategy::Random => {
            let n = instances.iter().filter(eligible).count();
            instances.iter().filter(eligible).nth(fastrand::usize(..n.max(1)))
        }
        RoutingStrategy::LeastOutstandingRequests => least_by(instances.iter().filter(eligible), |i| i.load() as f64),
        RoutingStrategy::CapacityAware => {
            let unit = work_unit(instances);
            least_by(instances.iter().filter(eligible), |i| {
                (i.load() as f64 + 1.0) * i.expected_latency(unit)
            })
        }
    };
    // Counters move under concurrent requests; any eligible instance is a fine fallback.
    chosen
        .or_else(|| instances.iter().find(eligible))
        .cloned()
        .ok_or(PickError::Saturated)
}

impl VariantRoutes {
    /// For capacity-aware routing: [`work_unit`] over the variant's instances.
    #[cfg(test)]
    fn work_unit(&self) -> Option<Calibration> {
        work_unit(&self.instances)
    }
}

/// For capacity-aware routing, over the instances whose type has a measured latency: the
/// mean of latency × catalog capacity (it calibrates the catalog) and the smallest latency
/// (`None` when nothing is measured).
fn work_unit(instances: &[Arc<RouteInstance>]) -> Option<Calibration> {
    let (sum, n, fastest) = instances
        .iter()
        .fold((0.0, 0u32, f64::INFINITY), |(sum, n, fastest), i| {
            match i.measured_latency_us.load(Ordering::Relaxed) {
                0 => (sum, n, fastest),
                t => (sum + t as f64 * i.capacity, n + 1, fastest.min(t as f64)),
            }
        });
    (n > 0).then(|| Calibration {
        unit: sum / n as f64,
        fastest,
    })
}

/// What the measured instance types of a variant say about the unmeasured ones.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Calibration {
    /// Mean measured latency × catalog capacity.
    unit: f64,
    /// The smallest measured latency.
    fastest: f64,
}

impl RouteInstance {
    /// What one request is expected to take here: the measured latency of its type; for a type
    /// not measured yet, the calibrated catalog estimate (`unit / capacity`) but never more than
    /// the fastest measured type, so that it gets traffic and a measurement of its own; with
    /// nothing measured, 1 / catalog capacity.
    fn expected_latency(&self, calibration: Option<Calibration>) -> f64 {
        match (self.measured_latency_us.load(Ordering::Relaxed), calibration) {
            (0, Some(c)) => (c.unit / self.capacity).min(c.fastest),
            (0, None) => 1.0 / self.capacity,
            (t, _) => t as f64,
        }
    }
}

/// The candidate with the smallest score; ties broken at random (reservoir sampling, so no
/// allocation).
fn least_by<'a>(
    candidates: impl Iterator<Item = &'a Arc<RouteInstance>>,
    score: impl Fn(&RouteInstance) -> f64,
) -> Option<&'a Arc<RouteInstance>> {
    let mut best: Option<(&Arc<RouteInstance>, f64)> = None;
    let mut ties = 0usize;
    for c in candidates {
        let s = score(c);
        match best {
            Some((_, b)) if s > b => {}
            Some((_, b)) if s == b => {
                ties += 1;
                if fastrand::usize(..ties) == 0 {
                    best = Some((c, s));
                }
            }
            _ => {
                best = Some((c, s));
                ties = 1;
            }
        }
    }
    best.map(|(c, _)| c)
}

/// All endpoints' routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    endpoints: RwLock<HashMap<String, Arc<EndpointRoutes>>>,
    /// Instances taken out of routing whose in-flight requests may still be running.
    draining: Mutex<HashMap<String, Arc<RouteInstance>>>,
}

impl RouteTable {
    /// The current routes of an endpoint.
    pub fn get(&self, endpoint: &str) -> Option<Arc<EndpointRoutes>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned()
    }

    /// The routes of every asynchronous endpoint (those with an `async_config`).
    pub fn asynchronous(&self) -> Vec<(String, Arc<EndpointRoutes>)> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.async_config.is_some())
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// Publishes new routes, keeping the counters of instances that stay.
    pub fn publish(&self, endpoint: &str, mut routes: EndpointRoutes) {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = map.get(endpoint) {
            let existing: HashMap<&str, &Arc<RouteInstance>> = old
                .variants
                .iter()
                .flat_map(|v| v.instances.iter())
                .map(|i| (i.id.as_str(), i))
                .collect();
            let copies: HashMap<&str, &Arc<RouteInstance>> = old
                .components
                .values()
                .flat_map(|c| c.copies.iter())
                .map(|i| (i.id.as_str(), i))
                .collect();
            for v in &mut routes.variants {
                for i in &mut v.instances {
                    if let Some(prev) = existing.get(i.id.as_str()) {
                        *i = Arc::clone(prev);
                    }
                }
            }
            // A copy keeps its counter (and its metrics handle) across republishing too.
            for c in routes.components.values_mut() {
                for i in &mut c.copies {
                    if let Some(prev) = copies.get(i.id.as_str()) {
                        *i = Arc::clone(prev);
                    }
                }
            }
        }
        let old = map.insert(endpoint.to_string(), Arc::new(routes));
        let new = map.get(endpoint).cloned();
        drop(map);
        if let Some(old) = old {
            self.retire(&old, new.as_deref());
        }
    }

    /// Removes an endpoint.
    pub fn remove(&self, endpoint: &str) {
        let old = self
            .endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(endpoint);
        if let Some(old) = old {
            self.retire(&old, None);
        }
    }

    /// Remembers instances of `old` that `new` no longer routes to, for draining.
    fn retire(&self, old: &EndpointRoutes, new: Option<&EndpointRoutes>) {
        let kept = |id: &str| new.is_some_and(|n| n.routed().any(|i| i.id == id));
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        for i in old.routed() {
            if !kept(&i.id) {
                // The first retirement holds the live counter; never replace it with a copy.
                draining.entry(i.id.clone()).or_insert_with(|| i.clone());
            }
        }
    }

    /// Takes an instance out of routing at once (wherever it is routed).
    pub fn withdraw(&self, instance_id: &str) {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        let mut retired = vec![];
        for routes in map.values_mut() {
            if !routes.routed().any(|i| i.id == instance_id) {
                continue;
            }
            let variants = routes
                .variants
                .iter()
                .map(|v| VariantRoutes {
                    name: v.name.clone(),
                    weight: v.weight,
                    strategy: v.strategy,
                    instances: v.instances.iter().filter(|i| i.id != instance_id).cloned().collect(),
                })
                .collect();
            retired.extend(
                routes
                    .variants
                    .iter()
                    .flat_map(|v| &v.instances)
                    .filter(|i| i.id == instance_id)
                    .cloned(),
            );
            let components = routes
                .components
                .iter()
                .map(|(name, c)| {
                    let copies = c.copies.iter().filter(|i| i.id != instance_id).cloned().collect();
                    let kept = ComponentRoutes {
                        name: c.name.clone(),
                        variant: c.variant.clone(),
                        strategy: c.strategy,
                        copies,
                    };
                    (name.clone(), kept)
                })
                .collect();
            retired.extend(
                routes
                    .components
                    .values()
                    .flat_map(|c| &c.copies)
                    .filter(|i| i.id == instance_id)
                    .cloned(),
            );
            *routes = Arc::new(EndpointRoutes {
                variants,
                components,
                hosts_components: routes.hosts_components,
                async_config: routes.async_config.clone(),
            });
        }
        drop(map);
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        for i in retired {
            draining.entry(i.id.clone()).or_insert(i);
        }
    }

    /// Withdraws an instance from routing and waits until its in-flight requests finish or
    /// `grace` passes. Returns whether it drained.
    pub async fn wait_drained(&self, instance_id: &str, grace: Duration) -> bool {
        self.withdraw(instance_id);
        let busy = || {
            let draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            draining
                .get(instance_id)
                .map(|i| i.outstanding.load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        let quiet = async {
            while busy() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let drained = tokio::time::timeout(grace, quiet).await.is_ok() || busy() == 0;
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance_id);
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, outstanding: usize) -> Arc<RouteInstance> {
        let i = RouteInstance::new(id.into(), "x".into(), "ml.m5.xlarge".into());
        i.outstanding.store(outstanding, Ordering::Relaxed);
        Arc::new(i)
    }

    fn variant(name: &str, weight: f64, insts: Vec<Arc<RouteInstance>>) -> VariantRoutes {
        VariantRoutes {
            name: name.into(),
            weight,
            strategy: RoutingStrategy::LeastOutstandingRequests,
            instances: insts,
        }
    }

    #[test]
    fn least_outstanding_wins() {
        let v = variant("a", 1.0, vec![inst("busy", 3), inst("idle", 0)]);
        for _ in 0..20 {
            assert_eq!(v.pick_instance(0, None).unwrap().id, "idle");
        }
    }

    #[test]
    fn concurrency_limit_and_avoidance() {
        let v = variant("a", 1.0, vec![inst("busy", 2), inst("idle", 0)]);
        assert_eq!(v.pick_instance(2, None).unwrap().id, "idle");
        assert_eq!(v.pick_instance(0, Some("idle")).unwrap().id, "busy");
        let full = variant("a", 1.0, vec![inst("x", 2), inst("y", 2)]);
        assert_eq!(full.pick_instance(2, None).unwrap_err(), PickError::Saturated);
        // Avoiding the only instance is not possible: it is still picked.
        let one = variant("a", 1.0, vec![inst("only", 0)]);
        assert_eq!(one.pick_instance(0, Some("only")).unwrap().id, "only");
    }

    /// A capacity-aware variant of an ml.g6e.12xlarge (4 x 48 GiB: capacity 192) and an
    /// ml.g6.2xlarge (1 x 24 GiB: capacity 24).
    fn big_and_small() -> (Arc<RouteInstance>, Arc<RouteInstance>, VariantRoutes) {
        let big = Arc::new(RouteInstance::new("big".into(), "x".into(), "ml.g6e.12xlarge".into()));
        let small = Arc::new(RouteInstance::new("small".into(), "x".into(), "ml.g6.2xlarge".into()));
        let v = VariantRoutes {
            name: "a".into(),
            weight: 1.0,
            strategy: RoutingStrategy::CapacityAware,
            instances: vec![big.clone(), small.clone()],
        };
        (big, small, v)
    }

    #[test]
    fn capacity_aware_weighs_load_by_capacity() {
        let (big, small, v) = big_and_small();
        big.outstanding.store(4, Ordering::Relaxed);
        small.outstanding.store(1, Ordering::Relaxed);
        // (4+1)/192 < (1+1)/24: the big instance takes the next request despite more in flight.
        assert_eq!(v.pick_instance(0, None).unwrap().id, "big");
    }

    #[test]
    fn capacity_aware_prefers_measurements_over_the_catalog() {
        // The catalog says big carries 8x more; measured, it answers 10x slower.
        let (big, small, v) = big_and_small();
        big.outstanding.store(1, Ordering::Relaxed);
        assert_eq!(
            v.pick_instance(0, None).unwrap().id,
            "big",
            "catalog only: (1+1)/192 < 1/24"
        );
        big.measured_latency_us.store(10_000, Ordering::Relaxed);
        small.measured_latency_us.store(1_000, Ordering::Relaxed);
        // 2 x 10 ms > 1 x 1 ms, and still with 5 in flight on small (6 x 1 ms < 2 x 10 ms).
        assert_eq!(v.pick_instance(0, None).unwrap().id, "small");
        small.outstanding.store(5, Ordering::Relaxed);
        assert_eq!(v.pick_instance(0, None).unwrap().id, "small");
        small.outstanding.store(20, Ordering::Relaxed);
        assert_eq!(v.pick_instance(0, None).unwrap().id, "big");
    }

    #[test]
    fn capacity_aware_calibrates_unmeasured_types_with_measured_ones() {
        // small measured at 1 ms with capacity 24 => unit 24,000; big (capacity 192) is
        // expected at 125 µs until measured.
        let (big, small, v) = big_and_small();
        small.measured_latency_us.store(1_000, Ordering::Relaxed);
        assert_eq!(v.work_unit().map(|c| c.unit), Some(24_000.0));
        assert_eq!(big.expected_latency(v.work_unit()), 125.0);
        big.outstanding.store(7, Ordering::Relaxed); // 8 x 125 µs = 1 ms = small's (0+1) x 1 ms
        small.outstanding.store(1, Ordering::Relaxed); // now small: 2 ms
        assert_eq!(v.pick_instance(0, None).unwrap().id, "big");
    }

    #[test]
    fn capacity_aware_tries_an_unmeasured_type_the_catalog_calls_weaker() {
        // big (capacity 192) measured at 10 ms; small (24) unmeasured: the catalog would expect
        // 80 ms, but it is expected no slower than the fastest measured type, so it gets the next
        // request as soon as big has one in flight, and with it a measurement.
        let (big, small, v) = big_and_small();
        big.measured_latency_us.store(10_000, Ordering::Relaxed);
        assert_eq!(small.expected_latency(v.work_unit()), 10_000.0);
        big.outstanding.store(1, Ordering::Relaxed);
        assert_eq!(v.pick_instance(0, None).unwrap().id, "small");
    }

    #[test]
    fn reservations_never_pass_the_limit_under_concurrency() {
        let i = Arc::new(RouteInstance::new("i".into(), "x".into(), "ml.m5.xlarge".into()));
        let won: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let i = i.clone();
                    s.spawn(move || (0..1000).filter(|_| i.try_reserve(3)).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 3);
        assert_eq!(i.load(), 3);
        assert!(i.try_reserve(0), "no limit: always");
        assert_eq!(i.load(), 4);
    }

    #[test]
    fn zero_weight_variants_get_traffic_only_when_targeted() {
        let r = EndpointRoutes {
            variants: vec![
                variant("a", 1.0, vec![inst("a1", 0)]),
                variant("b", 0.0, vec![inst("b1", 0)]),
            ],
            async_config: None,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(r.pick(None, 0, None).unwrap().0, 0);
        }
        assert_eq!(r.pick(Some("b"), 0, None).unwrap().1.id, "b1");
        assert_eq!(
            r.pick(Some("c"), 0, None).unwrap_err(),
            PickError::UnknownVariant("c".into())
        );
    }

    #[test]
    fn republishing_keeps_counters() {
        let t = RouteTable::default();
        t.publish(
            "e",
            EndpointRoutes {
                variants: vec![variant("a", 1.0, vec![inst("x", 0)])],
                async_config: None,
                ..Default::default()
            },
        );
        t.get("e").unwrap().variants[0].instances[0]
            .outstanding
            .store(5, Ordering::Relaxed);
        t.publish(
            "e",
            EndpointRoutes {
                variants: vec![variant("a", 1.0, vec![inst("x", 0), inst("y", 0)])],
                async_config: None,
                ..Default::default()
            },
        );
        let r = t.get("e").unwrap();
        assert_eq!(r.variants[0].instances[0].outstanding.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_waits_for_in_flight_requests() {
        let t = RouteTable::default();
        t.publish(
            "e",
            EndpointRoutes {
                variants: vec![variant("a", 1.0, vec![inst("x", 0), inst("y", 0)])],
                async_config: None,
                ..Default::default()
            },
        );
        let x = t.get("e").unwrap().variants[0].instances[0].clone();
        x.outstanding.store(1, Ordering::Relaxed);
        let waiter = {
            let x = x.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                x.outstanding.store(0, Ordering::Relaxed);
            })
        };
        assert!(t.wait_drained("x", Duration::from_secs(5)).await);
        waiter.await.unwrap();
        // It left routing at once.
        assert!(t.get("e").unwrap().variants[0].instances.iter().all(|i| i.id != "x"));
        // A request that never ends is cut off after the grace period.
        let y = t.get("e").unwrap().variants[0].instances[0].clone();
        y.outstanding.store(1, Ordering::Relaxed);
        assert!(!t.wait_drained("y", Duration::from_secs(1)).await);
    }

    fn component(name: &str, variant: &str, copies: Vec<Arc<RouteInstance>>) -> ComponentRoutes {
        ComponentRoutes {
            name: name.into(),
            variant: variant.into(),
            strategy: RoutingStrategy::LeastOutstandingRequests,
            copies,
        }
    }

    #[test]
    fn a_component_picks_among_its_copies_as_a_variant_does() {
        let c = component("ic", "v", vec![inst("busy", 3), inst("idle", 0)]);
        for _ in 0..20 {
            assert_eq!(c.pick_copy(0, None).unwrap().id, "idle");
        }
        assert_eq!(c.pick_copy(0, Some("idle")).unwrap().id, "busy");
        let full = component("ic", "v", vec![inst("x", 2), inst("y", 2)]);
        assert_eq!(full.pick_copy(2, None).unwrap_err(), PickError::Saturated);
        let none = component("ic", "v", vec![]);
        assert_eq!(none.pick_copy(0, None).unwrap_err(), PickError::NoInstance);
        let mut random = component("ic", "v", vec![inst("a", 5), inst("b", 0)]);
        random.strategy = RoutingStrategy::Random;
        let picked: std::collections::BTreeSet<String> = (0..200)
            .map(|_| random.pick_copy(0, None).unwrap().id.clone())
            .collect();
        assert_eq!(picked.len(), 2, "random routing reaches every copy");
        assert_eq!(c.copies_of_type("ml.m5.xlarge"), 2);
        assert_eq!(c.copies_of_type("ml.g5.xlarge"), 0);
    }

    fn with_components(copies: Vec<Arc<RouteInstance>>) -> EndpointRoutes {
        let mut components = std::collections::BTreeMap::new();
        components.insert("ic".to_string(), component("ic", "v", copies));
        EndpointRoutes {
            variants: vec![variant("v", 1.0, vec![inst("host", 0)])],
            components,
            hosts_components: true,
            async_config: None,
        }
    }

    #[test]
    fn republishing_keeps_copy_counters_and_withdrawing_a_copy_drains_it() {
        let t = RouteTable::default();
        t.publish("e", with_components(vec![inst("c1", 0)]));
        t.get("e").unwrap().components["ic"].copies[0]
            .outstanding
            .store(4, Ordering::Relaxed);
        t.publish("e", with_components(vec![inst("c1", 0), inst("c2", 0)]));
        let r = t.get("e").unwrap();
        assert_eq!(r.components["ic"].copies[0].load(), 4, "the copy's counter survives");
        assert_eq!(r.routed().count(), 3, "the host and two copies");
        t.withdraw("c1");
        let r = t.get("e").unwrap();
        assert_eq!(r.components["ic"].copies.len(), 1);
        assert!(r.hosts_components);
        // The withdrawn copy drains with its live counter.
        assert_eq!(t.draining.lock().unwrap()["c1"].load(), 4);
        // Republishing without a copy retires it too.
        t.publish("e", with_components(vec![]));
        assert!(t.draining.lock().unwrap().contains_key("c2"));
    }
}
