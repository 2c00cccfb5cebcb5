//! The data plane's view of the fleet: which instances of which variant serve traffic.
//!
//! The controller publishes a fresh [`EndpointRoutes`] whenever the serving set changes; the
//! invocation path only reads an `Arc` snapshot and never waits on the control plane or the
//! store. Outstanding-request counters live on [`RouteInstance`] and survive republishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::core::model::RoutingStrategy;

/// One instance that receives traffic.
#[derive(Debug)]
pub struct RouteInstance {
    /// Instance id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Instance type (returned as `X-Spillway-Instance-Type`).
    pub instance_type: String,
    /// Requests in flight.
    pub outstanding: AtomicUsize,
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

/// An endpoint's serving variants.
#[derive(Debug, Default)]
pub struct EndpointRoutes {
    /// Variants in configuration order.
    pub variants: Vec<VariantRoutes>,
}

/// Why no instance could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub enum PickError {
    /// `TargetVariant` names no variant of the endpoint.
    UnknownVariant(String),
    /// No instance is in service (for the target variant, or at all).
    NoInstance,
}

impl EndpointRoutes {
    /// Picks a variant (by `target`, else by weight) and an instance within it.
    pub fn pick(&self, target: Option<&str>) -> Result<(&VariantRoutes, Arc<RouteInstance>), PickError> {
        let variant = match target {
            Some(t) => self
                .variants
                .iter()
                .find(|v| v.name == t)
                .ok_or_else(|| PickError::UnknownVariant(t.to_string()))?,
            None => {
                let candidates: Vec<&VariantRoutes> = self
                    .variants
                    .iter()
                    .filter(|v| v.weight > 0.0 && !v.instances.is_empty())
                    .collect();
                let total: f64 = candidates.iter().map(|v| v.weight).sum();
                if candidates.is_empty() {
                    return Err(PickError::NoInstance);
                }
                let mut x = fastrand::f64() * total;
                let mut chosen = candidates[candidates.len() - 1];
                for v in &candidates {
                    if x < v.weight {
                        chosen = v;
                        break;
                    }
                    x -= v.weight;
                }
                chosen
            }
        };
        let inst = variant.pick_instance().ok_or(PickError::NoInstance)?;
        Ok((variant, inst))
    }
}

impl VariantRoutes {
    /// Picks an instance by the variant's strategy.
    pub fn pick_instance(&self) -> Option<Arc<RouteInstance>> {
        if self.instances.is_empty() {
            return None;
        }
        match self.strategy {
            RoutingStrategy::Random => Some(self.instances[fastrand::usize(..self.instances.len())].clone()),
            RoutingStrategy::LeastOutstandingRequests => {
                let min = self
                    .instances
                    .iter()
                    .map(|i| i.outstanding.load(Ordering::Relaxed))
                    .min()?;
                let ties: Vec<&Arc<RouteInstance>> = self
                    .instances
                    .iter()
                    .filter(|i| i.outstanding.load(Ordering::Relaxed) == min)
                    .collect();
                Some(ties[fastrand::usize(..ties.len())].clone())
            }
        }
    }
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
            for v in &mut routes.variants {
                for i in &mut v.instances {
                    if let Some(prev) = existing.get(i.id.as_str()) {
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
        let kept = |id: &str| new.is_some_and(|n| n.variants.iter().flat_map(|v| &v.instances).any(|i| i.id == id));
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        for i in old.variants.iter().flat_map(|v| &v.instances) {
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
            if !routes
                .variants
                .iter()
                .any(|v| v.instances.iter().any(|i| i.id == instance_id))
            {
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
            *routes = Arc::new(EndpointRoutes { variants });
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
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = {
                let draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
                draining
                    .get(instance_id)
                    .map(|i| i.outstanding.load(Ordering::Relaxed))
                    .unwrap_or(0)
            };
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                self.draining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(instance_id);
                return busy == 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, outstanding: usize) -> Arc<RouteInstance> {
        Arc::new(RouteInstance {
            id: id.into(),
            address: "x".into(),
            instance_type: "t".into(),
            outstanding: AtomicUsize::new(outstanding),
        })
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
            assert_eq!(v.pick_instance().unwrap().id, "idle");
        }
    }

    #[test]
    fn zero_weight_variants_get_traffic_only_when_targeted() {
        let r = EndpointRoutes {
            variants: vec![
                variant("a", 1.0, vec![inst("a1", 0)]),
                variant("b", 0.0, vec![inst("b1", 0)]),
            ],
        };
        for _ in 0..50 {
            assert_eq!(r.pick(None).unwrap().0.name, "a");
        }
        assert_eq!(r.pick(Some("b")).unwrap().1.id, "b1");
        assert_eq!(r.pick(Some("c")).unwrap_err(), PickError::UnknownVariant("c".into()));
    }

    #[test]
    fn republishing_keeps_counters() {
        let t = RouteTable::default();
        t.publish(
            "e",
            EndpointRoutes {
                variants: vec![variant("a", 1.0, vec![inst("x", 0)])],
            },
        );
        t.get("e").unwrap().variants[0].instances[0]
            .outstanding
            .store(5, Ordering::Relaxed);
        t.publish(
            "e",
            EndpointRoutes {
                variants: vec![variant("a", 1.0, vec![inst("x", 0), inst("y", 0)])],
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
}
