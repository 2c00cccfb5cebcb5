//! The real controller, autoscaler and API on a paused tokio clock, against an in-memory
//! provider whose capacity per instance type the test sets.
//!
//! Each test starts a real [`App`] (SQLite store in a temporary directory, one controller task
//! per endpoint, the autoscaler and samplers) with [`Fake`] as its provider, drives the
//! SageMaker API in-process, and lets tokio's paused clock auto-advance: minutes and hours of
//! simulated time (ICE back-off, provisioning deadlines, health-check windows, rebalancing's
//! minimum run time, rolling-update baking) pass in milliseconds of wall time. The assertions
//! read the endpoint's events (what `/_spillway/endpoints/{name}/events` serves), the instance
//! records, `DescribeEndpoint`, and the fake's launch/terminate log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use spillway::clock::Clock;
use spillway::config::Config;
use spillway::control::app::App;
use spillway::core::capacity::BackoffPolicy;
use spillway::core::endpoint::{Event, InstanceRecord};
use spillway::core::planner::InstancePhase;
use spillway::error::ApiError;
use spillway::provider::{
    BoxFuture, CapacityEntry, CapacityProvider, CopyLaunchRequest, Health, HealthCheck, LaunchError, LaunchRequest,
    Launched, Liveness, Recovery, TrackedInstance,
};
use spillway::telemetry::metrics::{Select, Statistic};

const P1: &str = "ml.g6e.2xlarge";
const P2: &str = "ml.g6.2xlarge";
const P3: &str = "ml.m5.xlarge";

// ------------------------------------------------------------------------------------------
// The fake provider
// ------------------------------------------------------------------------------------------

/// One thing the fake was asked to do.
#[derive(Debug, Clone, PartialEq)]
struct Op {
    /// Clock time.
    t: f64,
    /// `launch`, `ice` or `terminate`.
    what: &'static str,
    /// Instance type.
    ty: String,
    /// Instance id.
    id: String,
}

#[derive(Default)]
struct FakeState {
    /// Instances of a type that can run at once (absent: none).
    slots: HashMap<String, u32>,
    /// Running instances: id → (type, launched at).
    running: BTreeMap<String, (String, f64)>,
    /// Instances whose process died.
    dead: HashSet<String>,
    /// Types whose instances never pass the health check.
    sick: HashSet<String>,
    /// Types whose launch never finishes (model data that never arrives).
    hang: HashSet<String>,
    /// Seconds from launch until an instance answers its health check.
    boot_s: f64,
    log: Vec<Op>,
    /// Running copies of inference components: copy id → (host instance id, host type,
    /// device positions, started at).
    copies: BTreeMap<String, (String, String, Vec<u32>, f64)>,
}

/// An in-memory capacity provider: launches succeed while the type has free slots and answer
/// insufficient capacity otherwise; health checks are answered without sockets.
struct Fake {
    clock: Clock,
    s: Mutex<FakeState>,
}

impl Fake {
    fn new(slots: &[(&str, u32)]) -> Arc<Self> {
        let fake = Fake {
            clock: Clock::tokio(),
            s: Mutex::new(FakeState::default()),
        };
        for (ty, n) in slots {
            fake.set(ty, *n);
        }
        Arc::new(fake)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.s.lock().unwrap()
    }

    /// Sets the capacity of a type.
    fn set(&self, ty: &str, n: u32) {
        self.st().slots.insert(ty.to_string(), n);
    }

    /// Kills an instance's process.
    fn kill(&self, id: &str) {
        self.st().dead.insert(id.to_string());
    }

    fn log(&self) -> Vec<Op> {
        self.st().log.clone()
    }

    fn running(&self) -> Vec<(String, String)> {
        self.st()
            .running
            .iter()
            .map(|(id, (ty, _))| (id.clone(), ty.clone()))
            .collect()
    }

    /// Launch attempts (launches and insufficient-capacity answers) on `ty`, in order.
    fn attempts(&self, ty: &str) -> Vec<Op> {
        self.log()
            .into_iter()
            .filter(|o| o.ty == ty && o.what != "terminate")
            .collect()
    }
}

impl CapacityProvider for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        let t = self.clock.now();
        let ty = req.instance_type.name.clone();
        let mut s = self.st();
        if s.hang.contains(&ty) {
            s.log.push(Op {
                t,
                what: "hang",
                ty,
                id: req.instance_id.clone(),
            });
            return Box::pin(std::future::pending());
        }
        let used = s.running.values().filter(|(t, _)| *t == ty).count() as u32;
        let free = s.slots.get(&ty).copied().unwrap_or(0) > used;
        s.log.push(Op {
            t,
            what: if free { "launch" } else { "ice" },
            ty: ty.clone(),
            id: req.instance_id.clone(),
        });
        let result = if free {
            s.running.insert(req.instance_id.clone(), (ty, t));
            Ok(Launched {
                handle: json!({ "fake": req.instance_id }),
                address: format!("fake/{}", req.instance_id),
            })
        } else {
            Err(LaunchError::InsufficientCapacity(format!(
                "no free {ty} (test capacity)"
            )))
        };
        Box::pin(std::future::ready(result))
    }

    fn launch_copy(&self, req: CopyLaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        let t = self.clock.now();
        let mut s = self.st();
        let result = if !s.running.contains_key(&req.host_instance_id) {
            Err(LaunchError::Failed(format!(
                "host {} is not running",
                req.host_instance_id
            )))
        } else {
            // The share must be the host's and no other copy's.
            let taken: Vec<u32> = s
                .copies
                .values()
                .filter(|(h, ..)| *h == req.host_instance_id)
                .flat_map(|(_, _, d, _)| d.clone())
                .collect();
            assert!(
                req.accelerators
                    .iter()
                    .all(|d| *d < req.instance_type.accelerator_count() && !taken.contains(d)),
                "copy {} given devices {:?} on {} ({}), which has {} and gave {taken:?} away",
                req.copy_id,
                req.accelerators,
                req.host_instance_id,
                req.instance_type.name,
                req.instance_type.accelerator_count()
            );
            s.copies.insert(
                req.copy_id.clone(),
                (
                    req.host_instance_id.clone(),
                    req.instance_type.name.clone(),
                    req.accelerators.clone(),
                    t,
                ),
            );
            Ok(Launched {
                handle: json!({ "fake": req.copy_id }),
                address: format!("fake/{}", req.copy_id),
            })
        };
        Box::pin(std::future::ready(result))
    }

    fn terminate<'a>(&'a self, instance_id: &'a str, _handle: &'a Value, _grace: Duration) -> BoxFuture<'a, ()> {
        let t = self.clock.now();
        let mut s = self.st();
        s.copies.remove(instance_id);
        if let Some((ty, _)) = s.running.remove(instance_id) {
            s.dead.remove(instance_id);
            s.log.push(Op {
                t,
                what: "terminate",
                ty,
                id: instance_id.to_string(),
            });
        }
        Box::pin(std::future::ready(()))
    }

    fn liveness(&self, instance_id: &str, _handle: &Value) -> Liveness {
        let s = self.st();
        if s.dead.contains(instance_id) {
            Liveness::Exited("exited with status 137 (killed by the test)".into())
        } else if s.running.contains_key(instance_id) || s.copies.contains_key(instance_id) {
            Liveness::Running
        } else {
            Liveness::Exited("not running".into())
        }
    }

    fn health<'a>(&'a self, check: HealthCheck<'a>) -> BoxFuture<'a, Health> {
        let s = self.st();
        let ok = match (s.running.get(check.instance_id), s.copies.get(check.instance_id)) {
            (Some((ty, at)), _) => !s.sick.contains(ty) && self.clock.now() - at >= s.boot_s,
            (None, Some((host, ..))) => s.running.contains_key(host),
            (None, None) => false,
        };
        Box::pin(std::future::ready(if ok { Health::Passed } else { Health::Failed }))
    }

    fn recover<'a>(&'a self, tracked: &'a [TrackedInstance]) -> BoxFuture<'a, Recovery> {
        let s = self.st();
        let alive = tracked
            .iter()
            .filter(|t| s.running.contains_key(&t.instance_id))
            .map(|t| t.instance_id.clone())
            .collect();
        Box::pin(std::future::ready(Recovery {
            alive,
            stopped_untracked: vec![],
        }))
    }

    fn capacity(&self) -> Vec<CapacityEntry> {
        vec![]
    }

    fn set_slots(&self, instance_type: &str, slots: Option<u32>) {
        self.set(instance_type, slots.unwrap_or(0));
    }
}

// ------------------------------------------------------------------------------------------
// The server and the API (kept to these helpers so that the calls are easy to change)
// ------------------------------------------------------------------------------------------

struct Server {
    app: Arc<App>,
    fake: Arc<Fake>,
    /// Clock time when the server started.
    t0: f64,
    _dir: tempfile::TempDir,
}

/// How often the tests look (simulated time). Timing assertions read event and log times,
/// which the controller stamps, so they do not depend on it.
const POLL: Duration = Duration::from_secs(1);

/// ICE back-off of the tests: 5 s doubling up to 60 s.
const BACKOFF: BackoffPolicy = BackoffPolicy {
    initial_s: 5.0,
    max_s: 60.0,
};

async fn start(fake: Arc<Fake>, tune: impl FnOnce(&mut Config)) -> Server {
    // The store syncs every write to disk; on tmpfs (where there is one) that costs nothing.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    cfg.provisioning.ice_backoff_initial_ms = (BACKOFF.initial_s * 1000.0) as u64;
    cfg.provisioning.ice_backoff_max_ms = (BACKOFF.max_s * 1000.0) as u64;
    cfg.rebalance.min_runtime_seconds = 300;
    cfg.metrics.usage_interval_seconds = 0;
    tune(&mut cfg);
    // One clock for the server and the fake, so their times compare.
    let app = App::start_with_provider(cfg, fake.clone(), fake.clock).await.unwrap();
    let t0 = app.clock.now();
    Server {
        app,
        fake,
        t0,
        _dir: dir,
    }
}

impl Server {
    /// Seconds since the server started.
    fn elapsed(&self) -> f64 {
        self.app.clock.now() - self.t0
    }

    async fn call(&self, op: &str, body: Value) -> Result<Value, ApiError> {
        spillway::api::sagemaker::call(&self.app, op, body.to_string().as_bytes()).await
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        match self.call(op, body).await {
            Ok(v) => v,
            Err(e) => panic!("{op}: {} {}", e.code.as_str(), e.message),
        }
    }

    /// CreateModel, CreateEndpointConfig and CreateEndpoint of one variant `v` over `pools`.
    async fn deploy(&self, endpoint: &str, pools: &[&str], count: u32, variant: Value, tags: Value) {
        self.ok(
            "CreateModel",
            json!({"ModelName": "m", "PrimaryContainer": {"Image": "builtin:echo"}}),
        )
        .await;
        self.create_config(&format!("{endpoint}-cfg"), pools, count, variant)
            .await;
        self.ok(
            "CreateEndpoint",
            json!({"EndpointName": endpoint, "EndpointConfigName": format!("{endpoint}-cfg"), "Tags": tags}),
        )
        .await;
    }

    async fn create_config(&self, name: &str, pools: &[&str], count: u32, variant: Value) {
        let pools: Vec<Value> = pools
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"InstanceType": t, "Priority": i + 1}))
            .collect();
        let mut v = json!({
            "VariantName": "AllTraffic",
            "ModelName": "m",
            "InitialInstanceCount": count,
            "InstancePools": pools,
            "VariantInstanceProvisionTimeoutInSeconds": 600,
        });
        for (k, x) in variant.as_object().unwrap() {
            v[k] = x.clone();
        }
        self.ok(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": name, "ProductionVariants": [v]}),
        )
        .await;
    }

    async fn set_count(&self, endpoint: &str, n: u32) {
        self.ok(
            "UpdateEndpointWeightsAndCapacities",
            json!({"EndpointName": endpoint, "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "DesiredInstanceCount": n}
            ]}),
        )
        .await;
    }

    async fn describe(&self, endpoint: &str) -> Result<Value, ApiError> {
        self.call("DescribeEndpoint", json!({"EndpointName": endpoint})).await
    }

    async fn status(&self, endpoint: &str) -> String {
        self.describe(endpoint).await.unwrap()["EndpointStatus"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Lets simulated time pass until `endpoint` shows `status`, failing after `max_s`.
    async fn wait_status(&self, endpoint: &str, status: &str, max_s: f64) -> Value {
        let start = self.elapsed();
        loop {
            let d = self.describe(endpoint).await.unwrap();
            if d["EndpointStatus"] == status {
                return d;
            }
            assert!(
                self.elapsed() - start < max_s,
                "{endpoint} not {status} after {max_s}s: {d:#}\nevents: {:#?}",
                self.events(endpoint)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lets simulated time pass until `cond` holds, failing after `max_s`.
    async fn wait_until(&self, what: &str, max_s: f64, mut cond: impl FnMut(&Self) -> bool) {
        let start = self.elapsed();
        while !cond(self) {
            assert!(self.elapsed() - start < max_s, "{what}: not within {max_s}s");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lets `s` seconds of simulated time pass.
    async fn pass(&self, s: f64) {
        tokio::time::sleep(Duration::from_secs_f64(s)).await;
    }

    fn events(&self, endpoint: &str) -> Vec<Event> {
        self.app.store.events(endpoint).unwrap()
    }

    fn events_of(&self, endpoint: &str, kind: &str) -> Vec<Event> {
        self.events(endpoint).into_iter().filter(|e| e.kind == kind).collect()
    }

    /// `(type, priority, result)` of every `LaunchAttempt` event.
    fn launch_attempts(&self, endpoint: &str) -> Vec<(String, u8, String)> {
        self.events_of(endpoint, "LaunchAttempt")
            .into_iter()
            .map(|e| (e.instance_type.unwrap(), e.priority.unwrap(), e.result.unwrap()))
            .collect()
    }

    fn instances(&self) -> Vec<InstanceRecord> {
        self.app.store.instances().unwrap()
    }

    /// Types of the in-service instances that are not surges, sorted.
    fn serving_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .instances()
            .into_iter()
            .filter(|i| i.state == InstancePhase::InService && i.replaces.is_none())
            .map(|i| i.instance_type)
            .collect();
        v.sort();
        v
    }
}

fn owned(v: &[(&str, u8, &str)]) -> Vec<(String, u8, String)> {
    v.iter().map(|(t, p, r)| (t.to_string(), *p, r.to_string())).collect()
}

/// `(type, in service)` per pool of DescribeEndpoint's variant.
fn pool_counts(d: &Value) -> Vec<(String, u64)> {
    d["ProductionVariants"][0]["InstancePools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["InstanceType"].as_str().unwrap().to_string(),
                p["CurrentInstanceCount"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// No launch attempt on a type inside its insufficient-capacity back-off: after the n-th
/// consecutive insufficient-capacity answer at `t`, the next attempt on the type comes no
/// earlier than `t + interval(n)`. Returns the gaps between consecutive attempts after an ICE.
fn assert_backoff_respected(log: &[Op]) -> Vec<f64> {
    let mut streak: HashMap<&str, (u32, f64)> = HashMap::new();
    let mut gaps = vec![];
    for op in log.iter().filter(|o| o.what != "terminate") {
        if let Some((n, at)) = streak.get(op.ty.as_str()).copied()
            && n > 0
        {
            let gap = op.t - at;
            assert!(
                gap >= BACKOFF.interval(n) - 1e-6,
                "{} attempted {gap:.2}s after its ICE answer #{n}, inside the {}s back-off",
                op.ty,
                BACKOFF.interval(n)
            );
            gaps.push(gap);
        }
        let e = streak.entry(op.ty.as_str()).or_insert((0, 0.0));
        *e = if op.what == "ice" { (e.0 + 1, op.t) } else { (0, op.t) };
    }
    gaps
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// The whole story on one endpoint: fallback at creation, scale-out hitting ICE on the
/// next type, scale-in removing fallback instances first, rebalancing back to the preferred
/// type surge-first after the minimum run time without thrashing, a dead instance replaced,
/// and DeleteEndpoint stopping everything.
#[tokio::test(start_paused = true)]
async fn pools_fall_back_scale_rebalance_replace_and_delete() {
    let s = start(Fake::new(&[(P1, 0), (P2, 2), (P3, 4)]), |_| {}).await;
    let ep = "story";

    // CreateEndpoint: priority 1 has no capacity → ICE, fallback to priority 2.
    s.deploy(
        ep,
        &[P1, P2, P3],
        2,
        json!({}),
        json!([{"Key": "spillway:rebalance", "Value": "enabled"}]),
    )
    .await;
    assert_eq!(s.status(ep).await, "Creating");
    let d = s.wait_status(ep, "InService", 30.0).await;
    assert_eq!(
        s.launch_attempts(ep),
        owned(&[
            (P1, 1, "InsufficientCapacity"),
            (P2, 2, "Launched"),
            (P2, 2, "Launched")
        ])
    );
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 2);
    assert_eq!(pool_counts(&d), [(P1.into(), 0), (P2.into(), 2), (P3.into(), 0)]);
    assert!(s.events(ep).iter().any(|e| e.kind == "EndpointInService"));

    // Scale-out to 4 once P1's back-off ended: P1 is probed (ICE), P2 is full (ICE), P3 serves.
    s.pass(10.0).await;
    s.set_count(ep, 4).await;
    assert_eq!(s.status(ep).await, "Updating");
    let d = s.wait_status(ep, "InService", 30.0).await;
    assert_eq!(
        s.launch_attempts(ep)[3..],
        owned(&[
            (P1, 1, "InsufficientCapacity"),
            (P2, 2, "InsufficientCapacity"),
            (P3, 3, "Launched"),
            (P3, 3, "Launched")
        ])
    );
    assert_eq!(pool_counts(&d), [(P1.into(), 0), (P2.into(), 2), (P3.into(), 2)]);

    // Scale-in to 2: the fallback (priority 3) instances go first.
    let p3_ids: HashSet<String> = s
        .instances()
        .into_iter()
        .filter(|i| i.instance_type == P3)
        .map(|i| i.instance_id)
        .collect();
    s.set_count(ep, 2).await;
    s.wait_until("scale-in", 60.0, |s| s.instances().len() == 2).await;
    let d = s.wait_status(ep, "InService", 30.0).await;
    assert_eq!(s.serving_types(), [P2, P2]);
    let scaled_in: HashSet<String> = s
        .events_of(ep, "ScaleIn")
        .into_iter()
        .map(|e| e.instance_id.unwrap())
        .collect();
    assert_eq!(scaled_in, p3_ids);
    let terminated: HashSet<String> = s
        .fake
        .log()
        .into_iter()
        .filter(|o| o.what == "terminate")
        .map(|o| o.id)
        .collect();
    assert_eq!(terminated, p3_ids);
    assert_eq!(pool_counts(&d), [(P1.into(), 0), (P2.into(), 2), (P3.into(), 0)]);

    // Rebalancing while P1 still has no capacity: after the minimum run time, surge attempts on
    // P1 come only when its back-off ends (intervals doubling to the cap), and the serving fleet
    // is never touched.
    let launched_at = s.instances().iter().map(|i| i.launched_at).fold(f64::MAX, f64::min);
    s.wait_until("first migration attempt", 400.0, |s| {
        !s.events_of(ep, "MigrationLaunch").is_empty()
    })
    .await;
    let first = s.events_of(ep, "MigrationLaunch")[0].clone();
    assert!(
        first.time - launched_at >= 300.0,
        "migrated after {:.0}s, before min_runtime_seconds",
        first.time - launched_at
    );
    assert!(first.time - launched_at < 301.0);
    assert_eq!(first.result.as_deref(), Some("InsufficientCapacity"));
    assert_eq!(first.instance_type.as_deref(), Some(P1));
    s.pass(300.0).await;
    let tries = s.events_of(ep, "MigrationLaunch");
    assert!(
        tries
            .iter()
            .all(|e| e.result.as_deref() == Some("InsufficientCapacity"))
    );
    let gaps: Vec<f64> = tries.windows(2).map(|w| w[1].time - w[0].time).collect();
    // P1's streak continues from the scale-out: answers 3, 4, 5, ... → 20 s, 40 s, 60 s, 60 s.
    assert!(gaps.len() >= 4, "{gaps:?}");
    for (g, want) in gaps.iter().zip([20.0, 40.0, 60.0, 60.0]) {
        assert!((g - want).abs() < 0.3, "back-off gaps {gaps:?}");
    }
    assert_eq!(s.serving_types(), [P2, P2]);
    assert!(s.events_of(ep, "MigrationShift").is_empty());

    // Capacity returns on P1: the next probe succeeds, and the fleet moves back surge-first.
    s.fake.set(P1, 2);
    let returned = s.elapsed();
    s.wait_until("fleet back on priority 1", 400.0, |s| {
        s.serving_types() == [P1, P1] && s.instances().len() == 2
    })
    .await;
    let moved = s.events_of(ep, "MigrationLaunch");
    let launched: Vec<&Event> = moved
        .iter()
        .filter(|e| e.result.as_deref() == Some("Launched"))
        .collect();
    assert_eq!(launched.len(), 2, "one surge per instance, no thrash: {moved:#?}");
    assert!(
        launched[0].time - s.t0 - returned <= 60.0 + 0.3,
        "waited for the probe only"
    );
    // Surge first: each old instance stops only after its replacement passed its health check.
    let events = s.events(ep);
    for shift in events.iter().filter(|e| e.kind == "MigrationShift") {
        let surge = shift.instance_id.as_deref().unwrap();
        let healthy = events
            .iter()
            .position(|e| e.kind == "InstanceHealthy" && e.instance_id.as_deref() == Some(surge))
            .expect("surge became healthy");
        let old = drained_by(shift);
        let stopped = events
            .iter()
            .position(|e| e.kind == "InstanceTerminated" && e.instance_id.as_deref() == Some(old))
            .expect("old instance stopped");
        assert!(healthy < stopped, "{old} stopped before {surge} was healthy");
    }
    assert_eq!(s.events_of(ep, "MigrationShift").len(), 2);
    assert_eq!(s.status(ep).await, "InService");
    // Once on priority 1 nothing moves any more.
    let ops = s.fake.log().len();
    s.pass(300.0).await;
    assert_eq!(
        s.fake.log().len(),
        ops,
        "the fleet thrashes: {:#?}",
        &s.fake.log()[ops..]
    );

    // An instance that dies is replaced.
    let victim = s.instances()[0].instance_id.clone();
    s.fake.kill(&victim);
    s.wait_until("replacement in service", 60.0, |s| {
        s.serving_types() == [P1, P1] && s.instances().iter().all(|i| i.instance_id != victim)
    })
    .await;
    assert!(
        s.events_of(ep, "InstanceExited")
            .iter()
            .any(|e| e.instance_id.as_deref() == Some(victim.as_str()))
    );
    assert!(!s.fake.running().iter().any(|(id, _)| *id == victim));
    let d = s.wait_status(ep, "InService", 30.0).await;
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 2);

    // DeleteEndpoint stops every instance.
    s.ok("DeleteEndpoint", json!({"EndpointName": ep})).await;
    s.wait_until("endpoint deleted", 120.0, |s| {
        s.events(ep).iter().any(|e| e.kind == "EndpointDeleted")
    })
    .await;
    assert!(s.fake.running().is_empty(), "{:?}", s.fake.running());
    assert!(s.instances().is_empty());
    let err = s.describe(ep).await.unwrap_err();
    assert!(err.message.contains("Could not find endpoint"), "{}", err.message);
    assert_backoff_respected(&s.fake.log());
    assert!(s.elapsed() > 900.0, "covered {:.0}s of simulated time", s.elapsed());
}

/// Every pool out of capacity until the deadline: the creation fails at
/// `VariantInstanceProvisionTimeoutInSeconds` with a FailureReason naming the types tried.
#[tokio::test(start_paused = true)]
async fn provisioning_deadline_fails_creation_naming_the_types() {
    let s = start(Fake::new(&[(P1, 0), (P2, 0)]), |_| {}).await;
    s.deploy(
        "short",
        &[P1, P2],
        1,
        json!({"VariantInstanceProvisionTimeoutInSeconds": 300}),
        json!([]),
    )
    .await;
    let d = s.wait_status("short", "Failed", 400.0).await;
    let failed_at = s.events_of("short", "EndpointFailed")[0].time - s.t0;
    assert!((300.0..301.0).contains(&failed_at), "failed at {failed_at:.1}s");
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(reason.contains(&format!("{P1}, {P2}")), "{reason}");
    assert!(reason.contains("VariantInstanceProvisionTimeoutInSeconds"), "{reason}");
    assert!(s.fake.running().is_empty());
    // Every attempt was an ICE answer, none inside a back-off.
    assert!(s.fake.log().iter().all(|o| o.what == "ice"));
    assert_backoff_respected(&s.fake.log());
}

/// A launch that never finishes (model data from a stuck mount) cannot hold an endpoint in
/// `Creating`: it is cut off at the provisioning deadline, and creation fails with a reason.
#[tokio::test(start_paused = true)]
async fn a_launch_that_never_finishes_fails_creation_at_the_deadline() {
    let fake = Fake::new(&[(P1, 1)]);
    fake.st().hang.insert(P1.to_string());
    let s = start(fake, |_| {}).await;
    s.deploy(
        "stuck",
        &[P1],
        1,
        json!({"VariantInstanceProvisionTimeoutInSeconds": 300}),
        json!([]),
    )
    .await;
    let d = s.wait_status("stuck", "Failed", 400.0).await;
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(reason.contains("did not finish within 300 s"), "{reason}");
    let failed_at = s.events_of("stuck", "EndpointFailed")[0].time - s.t0;
    assert!((299.0..302.0).contains(&failed_at), "failed at {failed_at:.1}s");
    let attempts = s.launch_attempts("stuck");
    assert!(attempts.iter().any(|(_, _, r)| r == "Failed"), "{attempts:?}");
    // DeleteEndpoint works once it failed.
    s.ok("DeleteEndpoint", json!({"EndpointName": "stuck"})).await;
    s.wait_until("deleted", 60.0, |s| s.instances().is_empty()).await;
}

/// ICE back-off doubles per consecutive answer up to the cap, and the first attempt after an
/// interval ends is the probe that finds returned capacity.
#[tokio::test(start_paused = true)]
async fn backoff_doubles_and_the_probe_finds_capacity() {
    let s = start(Fake::new(&[(P1, 0)]), |_| {}).await;
    s.deploy("probe", &[P1], 1, json!({}), json!([])).await;
    s.wait_until("six ICE answers", 400.0, |s| s.fake.attempts(P1).len() >= 6)
        .await;
    let gaps = assert_backoff_respected(&s.fake.log());
    for (g, want) in gaps.iter().zip([5.0, 10.0, 20.0, 40.0, 60.0]) {
        assert!((g - want).abs() < 0.3, "gaps {gaps:?}");
    }
    assert_eq!(s.status("probe").await, "Creating");
    // Capacity returns between probes: nothing happens before the back-off ends.
    let last_ice = s.fake.attempts(P1).last().unwrap().t;
    s.pass(1.0).await;
    s.fake.set(P1, 1);
    s.wait_status("probe", "InService", 120.0).await;
    let launch = s.fake.attempts(P1).into_iter().find(|o| o.what == "launch").unwrap();
    assert!(
        (launch.t - last_ice - 60.0).abs() < 0.3,
        "probe {:.2}s after the last ICE answer",
        launch.t - last_ice
    );
    let recovered = s.events_of("probe", "CapacityRecovered");
    assert_eq!(recovered.len(), 1);
    assert!(
        recovered[0].message.contains("6 insufficient-capacity answers"),
        "{}",
        recovered[0].message
    );
}

/// A launching instance that never answers its health check fails the creation once
/// `ContainerStartupHealthCheckTimeoutInSeconds` has passed, and is stopped.
#[tokio::test(start_paused = true)]
async fn health_check_timeout_fails_a_launching_instance() {
    let fake = Fake::new(&[(P1, 1)]);
    fake.st().sick.insert(P1.to_string());
    let s = start(fake, |_| {}).await;
    s.deploy(
        "sick",
        &[P1],
        1,
        json!({"ContainerStartupHealthCheckTimeoutInSeconds": 120}),
        json!([]),
    )
    .await;
    s.pass(100.0).await;
    assert_eq!(s.status("sick").await, "Creating");
    let d = s.wait_status("sick", "Failed", 60.0).await;
    let failed = s.events_of("sick", "HealthCheckFailed");
    assert_eq!(failed.len(), 1);
    let after = failed[0].time - s.t0;
    assert!((120.0..121.0).contains(&after), "failed {after:.1}s after launch");
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(
        reason.contains("did not pass the ping health check within 120 seconds"),
        "{reason}"
    );
    // ICE never moved it to another pool: a failed health check is not a capacity signal.
    assert_eq!(s.launch_attempts("sick"), owned(&[(P1, 1, "Launched")]));
    s.wait_until("sick instance stopped", 60.0, |s| s.fake.running().is_empty())
        .await;
}

/// A rolling update bakes `WaitIntervalInSeconds` after each healthy batch before the next.
#[tokio::test(start_paused = true)]
async fn rolling_update_bakes_between_batches() {
    let fake = Fake::new(&[(P2, 6)]);
    fake.st().boot_s = 30.0;
    let s = start(fake, |_| {}).await;
    s.deploy("roll", &[P2], 3, json!({}), json!([])).await;
    s.wait_status("roll", "InService", 60.0).await;
    s.create_config("roll-v2", &[P2], 3, json!({})).await;
    let started = s.elapsed();
    s.ok(
        "UpdateEndpoint",
        json!({"EndpointName": "roll", "EndpointConfigName": "roll-v2", "DeploymentConfig": {
            "RollingUpdatePolicy": {
                "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
                "WaitIntervalInSeconds": 120
            }
        }}),
    )
    .await;
    let d = s.wait_status("roll", "InService", 1200.0).await;
    assert_eq!(d["EndpointConfigName"], "roll-v2");
    // Three new instances, one per batch: each batch boots (30 s), then bakes 120 s.
    let launches: Vec<f64> = s
        .fake
        .log()
        .iter()
        .filter(|o| o.what == "launch")
        .skip(3)
        .map(|o| o.t - s.t0 - started)
        .collect();
    assert_eq!(launches.len(), 3, "{launches:?}");
    for w in launches.windows(2) {
        let gap = w[1] - w[0];
        assert!((150.0..151.0).contains(&gap), "batches {launches:?}");
    }
    assert_eq!(s.events_of("roll", "RollingBatch").len(), 2);
    // The old fleet is gone.
    assert_eq!(s.fake.running().len(), 3);
    assert_eq!(s.instances().len(), 3);
}

/// Random capacity timelines (what `core::planner`'s test-side fleet simulation used to
/// check, now on the real controller): never more regular instances than desired nor more
/// surges than allowed, no launch inside a back-off, no instance replaced before its minimum
/// run time, and once capacity returns everywhere the fleet ends on the preferred pool.
#[tokio::test(start_paused = true)]
async fn random_capacity_timelines_keep_the_fleet_invariants() {
    for seed in 0..8u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let types = [P1, P2, P3];
        let fake = Fake::new(&[(P1, rng.u32(0..3)), (P2, rng.u32(0..3)), (P3, rng.u32(0..3))]);
        let s = start(fake, |c| c.rebalance.min_runtime_seconds = 20).await;
        let desired = rng.u32(1..4);
        let ep = format!("random-{seed}");
        s.deploy(
            &ep,
            &types,
            desired,
            json!({}),
            json!([{"Key": "spillway:rebalance", "Value": "enabled"}]),
        )
        .await;
        let check = |s: &Server| {
            let live: Vec<InstanceRecord> = s
                .instances()
                .into_iter()
                .filter(|i| i.state != InstancePhase::Terminating)
                .collect();
            let surges = live.iter().filter(|i| i.replaces.is_some()).count() as u32;
            assert!(live.len() as u32 - surges <= desired, "seed {seed}: {live:#?}");
            assert!(surges <= 1, "seed {seed}: {surges} surges");
        };
        for _ in 0..30 {
            s.fake.set(types[rng.usize(0..3)], rng.u32(0..4));
            for _ in 0..5 {
                s.pass(1.0).await;
                check(&s);
            }
        }
        for t in types {
            s.fake.set(t, 8);
        }
        s.wait_until("converged on priority 1", 600.0, |s| {
            check(s);
            s.serving_types() == vec![P1; desired as usize] && s.instances().len() as u32 == desired
        })
        .await;
        assert_backoff_respected(&s.fake.log());
        let events = s.events(&ep);
        let launched: HashMap<String, f64> = events
            .iter()
            .filter(|e| e.result.as_deref() == Some("Launched"))
            .filter_map(|e| Some((e.instance_id.clone()?, e.time)))
            .collect();
        for shift in events.iter().filter(|e| e.kind == "MigrationShift") {
            let old = drained_by(shift);
            let ran = shift.time - launched[old];
            assert!(ran >= 20.0, "seed {seed}: {old} replaced after {ran:.1}s");
        }
        // Stop this seed's server before its data dir goes.
        s.app.stop_all_instances().await;
    }
}

/// The instance a `MigrationShift` event drains ("... draining i-... (type, priority n)").
fn drained_by(shift: &Event) -> &str {
    shift
        .message
        .split("draining ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("a MigrationShift message names the instance it drains")
}

// ------------------------------------------------------------------------------------------
// Asynchronous endpoints: scaling to and from zero (issue 16). The tests put requests into the
// queue themselves (`App::queue`), as `InvokeEndpointAsync` does; nothing processes them, so
// the backlog stays until a test drains it.
// ------------------------------------------------------------------------------------------

const DIMENSION: &str = "sagemaker:variant:DesiredInstanceCount";

impl Server {
    /// CreateModel, CreateEndpointConfig with `AsyncInferenceConfig`, CreateEndpoint.
    async fn deploy_async(&self, endpoint: &str, pools: &[&str], count: u32) {
        let pools: Vec<Value> = pools
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"InstanceType": t, "Priority": i + 1}))
            .collect();
        self.ok(
            "CreateModel",
            json!({"ModelName": format!("{endpoint}-m"), "PrimaryContainer": {"Image": "builtin:echo"}}),
        )
        .await;
        self.ok(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": format!("{endpoint}-cfg"),
                   "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": format!("{endpoint}-m"),
                       "InitialInstanceCount": count, "InstancePools": pools,
                       "VariantInstanceProvisionTimeoutInSeconds": 600}],
                   "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://bucket/out"}}}),
        )
        .await;
        self.ok(
            "CreateEndpoint",
            json!({"EndpointName": endpoint, "EndpointConfigName": format!("{endpoint}-cfg")}),
        )
        .await;
    }

    async fn autoscaling(&self, op: &str, body: Value) -> Result<Value, ApiError> {
        spillway::api::autoscaling::call(&self.app, op, body.to_string().as_bytes()).await
    }

    async fn cloudwatch(&self, op: &str, body: Value) -> Result<Value, ApiError> {
        spillway::api::alarms::call(&self.app, op, body.to_string().as_bytes()).await
    }

    /// Accepts `n` requests for `endpoint` into the queue, as `InvokeEndpointAsync` does.
    async fn enqueue(&self, endpoint: &str, n: usize) {
        let now = self.app.clock.now();
        for _ in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let inv = spillway::queue::Invocation {
                id: id.clone(),
                inference_id: id.clone(),
                endpoint: endpoint.to_string(),
                input_location: "s3://bucket/in/x".into(),
                inline_body: None,
                output_location: format!("s3://bucket/out/{id}.out"),
                failure_location: None,
                content_type: None,
                accept: None,
                custom_attributes: None,
                created: now,
                ttl_deadline: now + 6.0 * 3600.0,
                invocation_timeout_seconds: 900,
            };
            self.app.queue.enqueue_async(&inv).await.unwrap();
        }
    }

    /// Processes every queued request of `endpoint` at once, as workers would.
    async fn drain(&self, endpoint: &str) {
        let now = self.app.clock.now();
        let (queue, endpoint) = (self.app.queue.clone(), endpoint.to_string());
        tokio::task::spawn_blocking(move || {
            for r in queue.lease(&endpoint, 1000, now, 60.0).unwrap() {
                queue
                    .complete(&r.invocation.id, spillway::queue::Outcome::Succeeded, now)
                    .unwrap();
            }
        })
        .await
        .unwrap();
    }

    /// A backlog metric's statistic over the last `window_s` seconds.
    fn backlog_metric(&self, endpoint: &str, metric: &str, stat: Statistic, window_s: f64) -> Option<f64> {
        let now = self.app.clock.now();
        self.app
            .metrics
            .aggregate(Select::endpoint(endpoint), metric, stat, now - window_s, now)
    }

    async fn register(&self, endpoint: &str, min: u32, max: u32) -> Result<Value, ApiError> {
        self.autoscaling(
            "RegisterScalableTarget",
            json!({"ServiceNamespace": "sagemaker", "ResourceId": format!("endpoint/{endpoint}/variant/AllTraffic"),
                   "ScalableDimension": DIMENSION, "MinCapacity": min, "MaxCapacity": max}),
        )
        .await
    }

    /// Non-terminate operations of the fake after the first `from` of its log: `(what, type)`.
    fn attempts_since(&self, from: usize) -> Vec<(&'static str, String)> {
        self.fake.log()[from..]
            .iter()
            .filter(|o| o.what != "terminate")
            .map(|o| (o.what, o.ty.clone()))
            .collect()
    }
}

/// AWS's scale-from-zero pattern end to end: an asynchronous endpoint goes to zero instances
/// and stays `InService`; requests wait in its queue; `HasBacklogWithoutCapacity` turns 1, the
/// alarm on it (`>= 1`, two periods of 60 s) invokes a `StepScaling` policy (+1), which provisions
/// from the Priority 1 pool; with an instance in service the flag is 0 again and the alarm
/// returns to OK without adding more.
#[tokio::test(start_paused = true)]
async fn async_endpoint_scales_to_zero_and_back_through_the_backlog_alarm() {
    let s = start(Fake::new(&[(P1, 2), (P2, 2)]), |_| {}).await;
    let ep = "queue";
    let rid = format!("endpoint/{ep}/variant/AllTraffic");
    s.deploy_async(ep, &[P1, P2], 1).await;
    s.wait_status(ep, "InService", 60.0).await;
    s.register(ep, 0, 2).await.unwrap();

    // To zero: no instance, still InService, DescribeEndpoint says 0.
    s.set_count(ep, 0).await;
    let d = s.wait_status(ep, "InService", 120.0).await;
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 0, "{d:#}");
    assert_eq!(d["ProductionVariants"][0]["DesiredInstanceCount"], 0, "{d:#}");
    s.wait_until("every instance stopped", 120.0, |s| s.fake.running().is_empty())
        .await;

    let policy = s
        .autoscaling(
            "PutScalingPolicy",
            json!({"PolicyName": "HasBacklogWithoutCapacity-ScalingPolicy", "ServiceNamespace": "sagemaker",
                   "ResourceId": rid, "ScalableDimension": DIMENSION, "PolicyType": "StepScaling",
                   "StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity",
                       "MetricAggregationType": "Average", "Cooldown": 300,
                       "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}}),
        )
        .await
        .unwrap()["PolicyARN"]
        .as_str()
        .unwrap()
        .to_string();
    s.cloudwatch(
        "PutMetricAlarm",
        json!({"AlarmName": "scale-from-zero", "MetricName": "HasBacklogWithoutCapacity",
               "Namespace": "AWS/SageMaker", "Statistic": "Average", "EvaluationPeriods": 2,
               "DatapointsToAlarm": 2, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
               "TreatMissingData": "missing", "Dimensions": [{"Name": "EndpointName", "Value": ep}],
               "Period": 60, "AlarmActions": [policy]}),
    )
    .await
    .unwrap();

    // An empty queue: zeros are published, nothing scales.
    s.pass(300.0).await;
    for metric in [
        "ApproximateBacklogSize",
        "ApproximateBacklogSizePerInstance",
        "ApproximateAgeOfOldestRequest",
        "HasBacklogWithoutCapacity",
    ] {
        assert_eq!(
            s.backlog_metric(ep, metric, Statistic::Maximum, 240.0),
            Some(0.0),
            "{metric}"
        );
    }
    assert!(s.fake.running().is_empty());
    let alarm = &s
        .cloudwatch("DescribeAlarms", json!({"AlarmNames": ["scale-from-zero"]}))
        .await
        .unwrap()["MetricAlarms"][0];
    assert_eq!(alarm["StateValue"], "OK", "{alarm:#}");
    let mark = s.fake.log().len();

    // Three requests arrive: they wait without capacity until the alarm scales the variant up.
    s.enqueue(ep, 3).await;
    s.pass(5.0).await;
    assert_eq!(
        s.backlog_metric(ep, "HasBacklogWithoutCapacity", Statistic::Maximum, 3.0),
        Some(1.0)
    );
    assert_eq!(
        s.backlog_metric(ep, "ApproximateBacklogSize", Statistic::Maximum, 3.0),
        Some(3.0)
    );
    assert_eq!(
        s.backlog_metric(ep, "ApproximateBacklogSizePerInstance", Statistic::Maximum, 3.0),
        Some(3.0)
    );
    s.wait_until("an instance in service", 600.0, |s| s.serving_types().len() == 1)
        .await;
    assert_eq!(s.serving_types(), vec![P1.to_string()]);
    assert_eq!(s.attempts_since(mark), vec![("launch", P1.to_string())]);
    let d = s.wait_status(ep, "InService", 60.0).await;
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 1, "{d:#}");
    let activities = s
        .autoscaling(
            "DescribeScalingActivities",
            json!({"ServiceNamespace": "sagemaker", "ResourceId": rid}),
        )
        .await
        .unwrap();
    assert!(
        activities["ScalingActivities"].as_array().unwrap().iter().any(|a| {
            a["Description"] == "Setting desired instance count to 1."
                && a["Cause"].as_str().unwrap().contains("monitor alarm scale-from-zero")
        }),
        "{activities:#}"
    );

    // Capacity is there: the backlog is per instance, the flag is down, the alarm goes back to
    // OK and adds nothing more (the queue is still full: nothing processes it here).
    s.pass(5.0).await;
    assert_eq!(
        s.backlog_metric(ep, "HasBacklogWithoutCapacity", Statistic::Maximum, 3.0),
        Some(0.0)
    );
    assert_eq!(
        s.backlog_metric(ep, "ApproximateBacklogSizePerInstance", Statistic::Average, 3.0),
        Some(3.0)
    );
    s.pass(900.0).await;
    assert_eq!(s.fake.running().len(), 1);
    let alarm = &s
        .cloudwatch("DescribeAlarms", json!({"AlarmNames": ["scale-from-zero"]}))
        .await
        .unwrap()["MetricAlarms"][0];
    assert_eq!(alarm["StateValue"], "OK", "{alarm:#}");
    // CloudWatch's reads see the same series.
    let listed = s
        .cloudwatch(
            "ListMetrics",
            json!({"Namespace": "AWS/SageMaker", "MetricName": "HasBacklogWithoutCapacity"}),
        )
        .await
        .unwrap();
    assert_eq!(
        listed["Metrics"],
        json!([{"Namespace": "AWS/SageMaker", "MetricName": "HasBacklogWithoutCapacity",
                "Dimensions": [{"Name": "EndpointName", "Value": ep}]}])
    );
    s.app.stop_all_instances().await;
}

/// Backlog-driven target tracking (`ApproximateBacklogSizePerInstance`, customized metric,
/// MinCapacity 0): an idle queue scales the variant in to zero; a backlog above the target scales
/// it up from zero, and provisioning starts again from the Priority 1 pool although the
/// variant's earlier scale-out had fallen back to Priority 2, falling back again when Priority 1
/// runs out.
#[tokio::test(start_paused = true)]
async fn backlog_target_tracking_scales_to_zero_and_from_zero_starting_at_priority_one() {
    let s = start(Fake::new(&[(P1, 1), (P2, 2)]), |c| {
        c.autoscaling.evaluation_interval_seconds = 10.0;
    })
    .await;
    let ep = "tracked";
    let rid = format!("endpoint/{ep}/variant/AllTraffic");
    s.deploy_async(ep, &[P1, P2], 1).await;
    s.wait_status(ep, "InService", 60.0).await;
    // An earlier scale-out fell back: Priority 1 has one slot.
    s.set_count(ep, 2).await;
    s.wait_status(ep, "InService", 120.0).await;
    let mut both = vec![P1.to_string(), P2.to_string()];
    both.sort();
    assert_eq!(s.serving_types(), both);

    s.register(ep, 0, 2).await.unwrap();
    s.autoscaling(
        "PutScalingPolicy",
        json!({"PolicyName": "backlog", "ServiceNamespace": "sagemaker", "ResourceId": rid,
               "ScalableDimension": DIMENSION, "PolicyType": "TargetTrackingScaling",
               "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 2.0,
                   "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                       "Namespace": "AWS/SageMaker", "Dimensions": [{"Name": "EndpointName", "Value": ep}],
                       "Statistic": "Average"},
                   "ScaleInCooldown": 60, "ScaleOutCooldown": 60}}),
    )
    .await
    .unwrap();
    // Its alarms watch the endpoint-level metric.
    let alarms = s.cloudwatch("DescribeAlarms", json!({})).await.unwrap();
    for a in alarms["MetricAlarms"].as_array().unwrap() {
        assert_eq!(a["Dimensions"], json!([{"Name": "EndpointName", "Value": ep}]), "{a:#}");
    }

    // Nothing queued: AlarmLow (15 periods below 90 % of the target) scales in, to zero.
    s.wait_until("the variant scaled in to zero", 3600.0, |s| s.fake.running().is_empty())
        .await;
    let d = s.wait_status(ep, "InService", 60.0).await;
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 0, "{d:#}");
    let mark = s.fake.log().len();

    // Five requests: 5 per instance at zero instances, over the target of 2: AlarmHigh scales
    // out to ceil(5 / 2) = 3, capped at MaxCapacity 2.
    s.enqueue(ep, 5).await;
    s.wait_until("two instances in service", 1200.0, |s| s.serving_types().len() == 2)
        .await;
    assert_eq!(
        s.attempts_since(mark),
        vec![
            ("launch", P1.to_string()),
            ("ice", P1.to_string()),
            ("launch", P2.to_string())
        ]
    );
    assert_backoff_respected(&s.fake.log());

    // Drained (as workers would): back to zero.
    s.drain(ep).await;
    s.wait_until("back to zero", 3600.0, |s| s.fake.running().is_empty())
        .await;
    assert_eq!(s.status(ep).await, "InService");
    s.app.stop_all_instances().await;
}

/// A real-time endpoint cannot go to zero: `MinCapacity` 0 and `DesiredInstanceCount` 0 are
/// refused with a `ValidationException` saying so, and it publishes no backlog metrics.
#[tokio::test(start_paused = true)]
async fn real_time_endpoints_refuse_zero_instances() {
    let s = start(Fake::new(&[(P1, 2)]), |_| {}).await;
    let ep = "realtime";
    s.deploy(ep, &[P1], 1, json!({}), json!([])).await;
    s.wait_status(ep, "InService", 60.0).await;
    let e = s.register(ep, 0, 2).await.unwrap_err();
    assert_eq!(e.code.as_str(), "ValidationException");
    assert!(e.message.contains("must be set to at least 1"), "{}", e.message);
    s.register(ep, 1, 2).await.unwrap();
    let e = s
        .call(
            "UpdateEndpointWeightsAndCapacities",
            json!({"EndpointName": ep, "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "ValidationException");
    assert!(e.message.contains("only an asynchronous endpoint"), "{}", e.message);
    assert_eq!(s.status(ep).await, "InService");
    s.pass(5.0).await;
    assert_eq!(s.fake.running().len(), 1);
    assert!(s.app.metrics.backlog_endpoints(0.0).is_empty());
    s.app.stop_all_instances().await;
}

/// Scaling up from zero and the ICE memory: the memory is the server's, not the variant's, so
/// a Priority 1 type still inside its insufficient-capacity back-off is passed over (the first
/// launch goes to the next pool without an attempt on it), and once its back-off has ended the
/// next scale-up from zero starts at Priority 1 again.
#[tokio::test(start_paused = true)]
async fn scale_from_zero_honours_the_ice_back_off_then_starts_at_priority_one() {
    let s = start(Fake::new(&[(P1, 0), (P2, 2)]), |c| {
        c.provisioning.ice_backoff_initial_ms = 600_000;
        c.provisioning.ice_backoff_max_ms = 600_000;
    })
    .await;
    let ep = "backoff";
    s.deploy_async(ep, &[P1, P2], 1).await;
    s.wait_status(ep, "InService", 60.0).await;
    assert_eq!(
        s.attempts_since(0),
        vec![("ice", P1.to_string()), ("launch", P2.to_string())]
    );
    let ice_at = s.elapsed();
    s.set_count(ep, 0).await;
    s.wait_until("at zero", 120.0, |s| s.fake.running().is_empty()).await;

    // Within P1's back-off: from zero onto P2, P1 not attempted.
    s.fake.set(P1, 1);
    let mark = s.fake.log().len();
    s.set_count(ep, 1).await;
    s.wait_status(ep, "InService", 120.0).await;
    assert!(s.elapsed() - ice_at < 600.0);
    assert_eq!(s.attempts_since(mark), vec![("launch", P2.to_string())]);

    // After it: from zero onto P1.
    s.set_count(ep, 0).await;
    s.wait_until("at zero", 120.0, |s| s.fake.running().is_empty()).await;
    s.pass(600.0).await;
    let mark = s.fake.log().len();
    s.set_count(ep, 1).await;
    s.wait_status(ep, "InService", 120.0).await;
    assert_eq!(s.attempts_since(mark), vec![("launch", P1.to_string())]);
    assert_eq!(s.serving_types(), vec![P1.to_string()]);
    s.app.stop_all_instances().await;
}

// ------------------------------------------------------------------------------------------
// Inference components
// ------------------------------------------------------------------------------------------

impl Server {
    /// An endpoint whose one variant hosts inference components over `pools`, with managed
    /// instance scaling between `min` and `max`.
    async fn deploy_components(&self, endpoint: &str, pools: &[&str], count: u32, min: u32, max: u32) {
        let pools: Vec<Value> = pools
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"InstanceType": t, "Priority": i + 1}))
            .collect();
        self.ok(
            "CreateEndpointConfig",
            json!({
                "EndpointConfigName": format!("{endpoint}-cfg"),
                "ExecutionRoleArn": "arn:aws:iam::123456789012:role/spillway",
                "ProductionVariants": [{
                    "VariantName": "AllTraffic",
                    "InitialInstanceCount": count,
                    "InstancePools": pools,
                    "VariantInstanceProvisionTimeoutInSeconds": 600,
                    "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": min, "MaxInstanceCount": max},
                }],
            }),
        )
        .await;
        self.ok(
            "CreateEndpoint",
            json!({"EndpointName": endpoint, "EndpointConfigName": format!("{endpoint}-cfg")}),
        )
        .await;
    }

    async fn component(&self, name: &str) -> Value {
        self.ok("DescribeInferenceComponent", json!({"InferenceComponentName": name}))
            .await
    }

    /// `(InstanceType, CurrentCopyCount)` of a component's placement, sorted.
    async fn placement(&self, name: &str) -> Vec<(String, u64)> {
        let d = self.component(name).await;
        let mut v: Vec<(String, u64)> = d["RuntimeConfig"]["PlacementStatus"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["InstanceType"].as_str().unwrap().to_string(),
                            p["CurrentCopyCount"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Lets time pass until `name` is InService with exactly `want` placed.
    async fn wait_placement(&self, name: &str, want: &[(&str, u64)], max_s: f64) {
        let mut want: Vec<(String, u64)> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        want.sort();
        let start = self.elapsed();
        loop {
            let d = self.component(name).await;
            let placed = self.placement(name).await;
            if d["InferenceComponentStatus"] == "InService" && placed == want {
                return;
            }
            assert!(
                self.elapsed() - start < max_s,
                "{name} not placed as {want:?} within {max_s}s: {d:#}\nevents: {:#?}",
                self.events(d["EndpointName"].as_str().unwrap())
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn set_copies(&self, name: &str, n: u32) {
        self.ok(
            "UpdateInferenceComponentRuntimeConfig",
            json!({"InferenceComponentName": name, "DesiredRuntimeConfig": {"CopyCount": n}}),
        )
        .await;
    }

    /// Types of the running (non-terminated) hosts, sorted.
    fn host_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fake.running().into_iter().map(|(_, t)| t).collect();
        v.sort();
        v
    }
}

fn per_type_specs(builds: &[(&str, &str, u32)]) -> Value {
    builds
        .iter()
        .map(|(ty, build, devices)| {
            json!({
                "InstanceType": ty,
                "Container": {"Image": "builtin:echo", "Environment": {"MODEL_BUILD": build}},
                "ComputeResourceRequirements": {
                    "NumberOfAcceleratorDevicesRequired": devices,
                    "MinMemoryRequiredInMb": 1024,
                },
            })
        })
        .collect()
}

const G8: &str = "ml.p4d.24xlarge";
const G4A: &str = "ml.g5.12xlarge";
const G4B: &str = "ml.g6.12xlarge";

/// Managed instance scaling through the pools: copies that do not fit add instances, Priority 1
/// first and falling back on insufficient capacity; scaling copies in removes fallback copies
/// first and then the instances left idle, until the fleet is back on the preferred type; no
/// device is ever given twice (the fake asserts it on every copy it starts).
#[tokio::test(start_paused = true)]
async fn components_scale_through_the_pools_and_back() {
    let fake = Fake::new(&[(G8, 0), (G4A, 1), (G4B, 2)]);
    let srv = start(fake.clone(), |_| {}).await;
    srv.deploy_components("ic", &[G8, G4A, G4B], 1, 1, 4).await;
    srv.wait_status("ic", "InService", 120.0).await;
    assert_eq!(srv.host_types(), [G4A]);
    srv.ok(
        "CreateInferenceComponent",
        json!({
            "InferenceComponentName": "llm", "EndpointName": "ic",
            "Specifications": per_type_specs(&[(G8, "tp8", 8), (G4A, "tp4", 4), (G4B, "tp4-l4", 4)]),
            "RuntimeConfig": {"CopyCount": 1},
        }),
    )
    .await;
    srv.wait_placement("llm", &[(G4A, 1)], 120.0).await;
    srv.ok(
        "CreateInferenceComponent",
        json!({
            "InferenceComponentName": "small", "EndpointName": "ic",
            "Specifications": per_type_specs(&[(G8, "s8", 1), (G4A, "s4", 1), (G4B, "s4-l4", 1)]),
            "RuntimeConfig": {"CopyCount": 2},
        }),
    )
    .await;
    srv.wait_placement("small", &[(G4B, 2)], 300.0).await;
    assert_eq!(srv.host_types(), [G4A, G4B]);
    srv.set_copies("llm", 2).await;
    srv.wait_placement("llm", &[(G4A, 1), (G4B, 1)], 300.0).await;
    assert_eq!(srv.host_types(), [G4A, G4B, G4B]);
    assert!(!srv.events_of("ic", "ManagedScaleOut").is_empty());
    // The preferred type comes back: a new copy goes to Priority 1.
    fake.set(G8, 1);
    srv.set_copies("llm", 3).await;
    srv.wait_placement("llm", &[(G8, 1), (G4A, 1), (G4B, 1)], 600.0).await;
    // In: fallback copies first, then the idle instances, fallback types first.
    srv.set_copies("llm", 1).await;
    srv.wait_placement("llm", &[(G8, 1)], 300.0).await;
    srv.set_copies("small", 0).await;
    srv.wait_until("the fleet back on the preferred type", 300.0, |s| {
        s.host_types() == [G8]
    })
    .await;
    srv.wait_placement("small", &[], 60.0).await;
    assert!(!srv.events_of("ic", "ManagedScaleIn").is_empty());
    assert_eq!(fake.st().copies.len(), 1, "one copy left: llm's on {G8}");
    // Deleting the components stops their copies; the endpoint can then go.
    let err = srv
        .call("DeleteEndpoint", json!({"EndpointName": "ic"}))
        .await
        .unwrap_err();
    assert!(err.message.contains("llm"), "{}", err.message);
    for c in ["llm", "small"] {
        srv.ok("DeleteInferenceComponent", json!({"InferenceComponentName": c}))
            .await;
    }
    srv.wait_until("components gone", 120.0, |s| s.fake.st().copies.is_empty())
        .await;
    srv.wait_until("records gone", 60.0, |s| {
        s.app
            .store
            .list::<Value>(spillway::store::Kind::InferenceComponent)
            .unwrap()
            .is_empty()
    })
    .await;
    srv.ok("DeleteEndpoint", json!({"EndpointName": "ic"})).await;
    srv.wait_until("fleet gone", 120.0, |s| s.fake.running().is_empty())
        .await;
}

/// Random copy counts over random capacity: every copy fits its instance, no device is given
/// twice (the fake asserts), and the fleet never exceeds MaxInstanceCount.
#[tokio::test(start_paused = true)]
async fn random_copy_counts_keep_the_placement_invariants() {
    let fake = Fake::new(&[(G8, 1), (G4A, 2), (G4B, 2)]);
    let srv = start(fake.clone(), |_| {}).await;
    srv.deploy_components("rnd", &[G8, G4A, G4B], 1, 0, 3).await;
    srv.wait_status("rnd", "InService", 120.0).await;
    srv.ok(
        "CreateInferenceComponent",
        json!({
            "InferenceComponentName": "a", "EndpointName": "rnd",
            "Specifications": per_type_specs(&[(G8, "a8", 2), (G4A, "a4", 2), (G4B, "a4b", 1)]),
            "RuntimeConfig": {"CopyCount": 1},
        }),
    )
    .await;
    srv.ok(
        "CreateInferenceComponent",
        json!({
            "InferenceComponentName": "b", "EndpointName": "rnd",
            "Specifications": per_type_specs(&[(G8, "b8", 3), (G4A, "b4", 3), (G4B, "b4b", 3)]),
            "RuntimeConfig": {"CopyCount": 1},
        }),
    )
    .await;
    let mut seed: u64 = 0x5eed;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..12 {
        srv.set_copies("a", next(6) as u32).await;
        srv.set_copies("b", next(4) as u32).await;
        for _ in 0..40 {
            srv.pass(1.0).await;
            assert!(
                fake.running().len() <= 3,
                "MaxInstanceCount exceeded: {:?}",
                fake.running()
            );
        }
    }
}

/// An inference component's target tracking on `InvocationsPerCopy` (the autoscaler's decision
/// side; the copies themselves are the controller's): a busy component's AlarmHigh fires and
/// the autoscaler asks for more copies through `SetComponentCopies`, recording "Setting desired
/// copy count to N." with the alarm as its cause. The component record is written straight
/// into the store (its API is built elsewhere).
#[tokio::test(start_paused = true)]
async fn a_busy_inference_component_is_scaled_out_by_copies() {
    let s = start(Fake::new(&[(P1, 1)]), |c| {
        c.autoscaling.evaluation_interval_seconds = 5.0;
        c.autoscaling.target_tracking_period_seconds = 10;
        c.autoscaling.metric_window_seconds = 30.0;
    })
    .await;
    let t = s.app.clock.now();
    let record: spillway::core::component::ComponentRecord = serde_json::from_value(json!({
        "name": "ic", "arn": "arn:aws:sagemaker:us-east-1:123456789012:inference-component/ic",
        "endpoint_name": "e", "endpoint_arn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
        "variant_name": "AllTraffic", "status": "InService", "failure_reason": null,
        "creation_time": t, "last_modified_time": t,
        "current": {"version": 1, "plural": false, "specs": []}, "previous": null,
        "desired_copies": 2, "deployment_config": null
    }))
    .unwrap();
    s.app
        .store
        .put(spillway::store::Kind::InferenceComponent, "ic", t, &record)
        .unwrap();
    let rid = "inference-component/ic";
    let dim = "sagemaker:inference-component:DesiredCopyCount";
    s.autoscaling(
        "RegisterScalableTarget",
        json!({"ServiceNamespace": "sagemaker", "ResourceId": rid, "ScalableDimension": dim,
               "MinCapacity": 0, "MaxCapacity": 6}),
    )
    .await
    .unwrap();
    s.autoscaling(
        "PutScalingPolicy",
        json!({"PolicyName": "per-copy", "ServiceNamespace": "sagemaker", "ResourceId": rid,
               "ScalableDimension": dim, "PolicyType": "TargetTrackingScaling",
               "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 60.0,
                   "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"},
                   "ScaleOutCooldown": 60, "ScaleInCooldown": 60}}),
    )
    .await
    .unwrap();
    // Its alarms watch the component's metric.
    let alarms = s.cloudwatch("DescribeAlarms", json!({})).await.unwrap();
    let alarms = alarms["MetricAlarms"].as_array().unwrap();
    assert!(!alarms.is_empty());
    for a in alarms {
        assert_eq!(a["MetricName"], "InvocationsPerCopy", "{a:#}");
        assert_eq!(
            a["Dimensions"],
            json!([{"Name": "InferenceComponentName", "Value": "ic"}]),
            "{a:#}"
        );
    }
    // Two copies answering 4 invocations a second between them: 120 per copy per minute,
    // twice the target of 60.
    let handle = s.app.metrics.handle_of(
        spillway::telemetry::metrics::Series {
            endpoint: "e",
            variant: "AllTraffic",
            instance_type: P1,
        },
        Some("ic"),
    );
    let outcome = spillway::telemetry::metrics::Outcome::Success;
    let activity = loop {
        assert!(s.elapsed() < 600.0, "no scaling activity within 600 s");
        for _ in 0..4 {
            handle.record_units(1, (2, 2), outcome, 1000, 0, s.app.clock.now());
        }
        let a = s
            .autoscaling(
                "DescribeScalingActivities",
                json!({"ServiceNamespace": "sagemaker", "ResourceId": rid}),
            )
            .await
            .unwrap();
        if let Some(a) = a["ScalingActivities"].as_array().and_then(|v| v.first()).cloned() {
            break a;
        }
        tokio::time::sleep(POLL).await;
    };
    // About 120 / 60 = 2 x the copies: 4 (a little more where the window's edge adds a
    // second of invocations), at most MaxCapacity.
    let description = activity["Description"].as_str().unwrap();
    let desired: u32 = description
        .strip_prefix("Setting desired copy count to ")
        .and_then(|d| d.strip_suffix('.'))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{activity:#}"));
    assert!((4..=6).contains(&desired), "{activity:#}");
    assert_eq!(activity["ScalableDimension"], dim);
    let cause = activity["Cause"].as_str().unwrap();
    assert!(cause.contains("AlarmHigh") && cause.contains("per-copy"), "{cause}");
    assert!(cause.contains(&format!("capacity 2 -> {desired}")), "{cause}");
    // Until the controller side is merged SetComponentCopies fails and the activity says so;
    // afterwards it is in progress or done. Either way it names the copy count.
    let status = activity["StatusCode"].as_str().unwrap();
    assert!(["Failed", "InProgress", "Successful"].contains(&status), "{activity:#}");
    if status == "Failed" {
        let message = activity["StatusMessage"].as_str().unwrap();
        let expected = format!("Failed to set desired copy count to {desired}.");
        assert!(message.starts_with(&expected), "{message}");
    }
    s.app.stop_all_instances().await;
}

/// A fallback type that cannot hold the copies that wait is never launched for them: the idle
/// instance of that type is released, and the copies wait for the type that fits, which is
/// retried after its back-off until capacity comes.
#[tokio::test(start_paused = true)]
async fn copies_wait_for_a_type_that_fits_instead_of_buying_one_that_does_not() {
    let fake = Fake::new(&[(G8, 0), (G4A, 2)]);
    let srv = start(fake.clone(), |_| {}).await;
    srv.deploy_components("fit", &[G8, G4A], 1, 0, 2).await;
    srv.wait_status("fit", "InService", 120.0).await;
    assert_eq!(srv.host_types(), [G4A], "the first instance fell back");
    // One copy needs all 8 devices: only G8 can hold it.
    srv.ok(
        "CreateInferenceComponent",
        json!({
            "InferenceComponentName": "big", "EndpointName": "fit",
            "Specification": {
                "Container": {"Image": "builtin:echo"},
                "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 8, "MinMemoryRequiredInMb": 1024},
            },
            "RuntimeConfig": {"CopyCount": 1},
        }),
    )
    .await;
    let created = fake.log().len();
    srv.wait_until("the idle G4A instance released", 120.0, |s| s.host_types().is_empty())
        .await;
    srv.pass(300.0).await;
    assert!(
        fake.log()[created..]
            .iter()
            .all(|o| o.ty == G8 || o.what == "terminate"),
        "only G8 was tried for the copy: {:?}",
        &fake.log()[created..]
    );
    assert!(fake.attempts(G8).len() >= 2, "G8 was retried: {:?}", fake.attempts(G8));
    fake.set(G8, 1);
    srv.wait_placement("big", &[(G8, 1)], 600.0).await;
    assert_eq!(srv.host_types(), [G8]);
}
