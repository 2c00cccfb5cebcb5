//! The per-endpoint controller: observes instances, asks the planner for the next step,
//! executes it through the capacity provider, and moves the endpoint through its states.
//!
//! One task per endpoint. It holds the endpoint lock only to read and update records, never
//! across a launch, a health check or a termination, so the API stays responsive while an
//! instance starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::control::app::{App, EndpointHandle, EndpointRuntime};
use crate::core::catalog;
use crate::core::endpoint::{Deployment, Event, InstanceRecord, rollback_message};
use crate::core::model::{EndpointStatus, PoolSpec, Timestamp};
use crate::core::planner::{
    self, EndpointDecision, InstancePhase, InstanceView, Operation, RebalancePolicy, RollingProgress, Step,
    VariantOutcome,
};
use crate::dataplane::routes::{EndpointRoutes, RouteInstance, VariantRoutes};
use crate::provider::{Health, HealthCheck, LaunchError, LaunchRequest, Launched, Liveness, ModelDataLimits};
use crate::store::Kind;

/// How often a controller looks at its endpoint when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// How long an instance has to answer one health check.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive failed pings before a serving instance is replaced.
const MAX_FAILED_PINGS: u32 = 3;
/// Consecutive failed health checks after which replacement stops (crash loop).
const MAX_HEALTH_FAILURES: u32 = 3;

/// Starts the controller task of an endpoint.
pub fn spawn(app: Arc<App>, name: String, handle: Arc<EndpointHandle>) {
    tokio::spawn(async move {
        let mut shutdown = app.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if pass(&app, &handle).await {
                tracing::debug!(endpoint = %name, "controller finished");
                return;
            }
            tokio::select! {
                _ = handle.notify.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// What the controller does outside the lock.
enum Next {
    Launch {
        deployment_id: String,
        variant: String,
        pool: PoolSpec,
        request: Box<LaunchRequest>,
        replaces: Option<String>,
        /// How long the launch may take: what is left of the operation's deadline.
        budget: Duration,
    },
    Terminate(Vec<InstanceRecord>),
    Idle,
    Deleted,
}

/// One reconciliation pass. Returns `true` once the endpoint is deleted.
async fn pass(app: &Arc<App>, h: &EndpointHandle) -> bool {
    observe_health(app, h).await;
    loop {
        let next = {
            let mut rt = h.state.lock().await;
            let before = rt.record.clone();
            let next = decide_next(app, &mut rt);
            if !rt.deleted && rt.record != before {
                persist(app, &mut rt);
            }
            next
        };
        match next {
            Next::Idle => break,
            Next::Deleted => return true,
            Next::Launch {
                deployment_id,
                variant,
                pool,
                request,
                replaces,
                budget,
            } => {
                let instance_id = request.instance_id.clone();
                let began = app.clock.now();
                let result = tokio::time::timeout(budget, app.provider.launch(*request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LaunchError::Failed(format!(
                            "the launch did not finish within {:.0} s, the variant's provisioning deadline",
                            budget.as_secs_f64()
                        )))
                    });
                let mut rt = h.state.lock().await;
                let before = rt.record.clone();
                let launch = Launch {
                    deployment_id: &deployment_id,
                    variant: &variant,
                    pool: &pool,
                    instance_id,
                    replaces,
                    began,
                };
                record_launch(app, &mut rt, launch, result);
                if rt.record != before {
                    persist(app, &mut rt);
                }
            }
            Next::Terminate(instances) => {
                let grace = Duration::from_secs(app.cfg.provisioning.termination_grace_seconds);
                let mut set = tokio::task::JoinSet::new();
                for inst in instances {
                    let app = app.clone();
                    set.spawn(async move {
                        // Drain: no new requests reach it (it left the routes); let those in
                        // flight finish within the grace period, then stop it.
                        let drained = app.dataplane.routes.wait_drained(&inst.instance_id, grace).await;
                        if !drained {
                            tracing::warn!(instance = %inst.instance_id, "requests still in flight after the grace period");
                        }
                        app.provider.terminate(&inst.instance_id, &inst.handle, grace).await;
                        inst
                    });
                }
                while let Some(Ok(inst)) = set.join_next().await {
                    if let Err(err) = app.store.delete_instance(&inst.instance_id) {
                        tracing::error!(%err, "cannot forget a stopped instance");
                    }
                    let mut rt = h.state.lock().await;
                    rt.instances.retain(|i| i.instance_id != inst.instance_id);
                    app.event(event(
                        app,
                        &rt.record.name,
                        &inst,
                        "InstanceTerminated",
                        None,
                        "instance stopped".into(),
                    ));
                }
            }
        }
    }
    // Inference components: their copies on the fleet just reconciled.
    super::components::reconcile(app, h).await;
    let rt = h.state.lock().await;
    if serves_traffic(&rt) {
        app.dataplane.routes.publish(&rt.record.name, routes_of(&rt));
    }
    false
}

pub(super) fn persist(app: &App, rt: &mut EndpointRuntime) {
    if let Err(err) = app
        .store
        .put(Kind::Endpoint, &rt.record.name, rt.record.creation_time, &rt.record)
    {
        tracing::error!(%err, endpoint = %rt.record.name, "cannot persist endpoint");
    }
}

fn event(app: &App, endpoint: &str, inst: &InstanceRecord, kind: &str, result: Option<&str>, message: String) -> Event {
    Event {
        time: app.clock.now(),
        endpoint_name: endpoint.to_string(),
        variant_name: Some(inst.variant_name.clone()),
        kind: kind.into(),
        instance_type: Some(inst.instance_type.clone()),
        priority: Some(inst.priority),
        instance_id: Some(inst.instance_id.clone()),
        result: result.map(Into::into),
        message,
    }
}

fn endpoint_event(app: &App, endpoint: &str, kind: &str, message: String) -> Event {
    Event {
        time: app.clock.now(),
        endpoint_name: endpoint.to_string(),
        variant_name: None,
        kind: kind.into(),
        instance_type: None,
        priority: None,
        instance_id: None,
        result: None,
        message,
    }
}

/// Health-check window of an instance's variant (with the server override).
fn startup_timeout(app: &App, rt: &EndpointRuntime, inst: &InstanceRecord) -> f64 {
    if let Some(s) = app.cfg.provisioning.health_check_timeout_override_seconds {
        return s as f64;
    }
    rt.record
        .deployments()
        .find(|d| d.id == inst.deployment_id)
        .and_then(|d| d.variants.iter().find(|v| v.spec.name == inst.variant_name))
        .map(|v| v.spec.startup_health_timeout_s as f64)
        .unwrap_or(crate::core::model::defaults::STARTUP_HEALTH_TIMEOUT_S as f64)
}

/// The last lines an instance wrote to its log stream (read on a blocking thread).
async fn log_tail(app: &Arc<App>, inst: &InstanceRecord) -> Vec<String> {
    let (logs, endpoint, id) = (app.logs.clone(), inst.endpoint_name.clone(), inst.instance_id.clone());
    tokio::task::spawn_blocking(move || {
        logs.tail(&endpoint, &id, crate::core::logs::QUOTED_LINES)
            .into_iter()
            .map(|e| e.message)
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Where an instance's log is and its last lines, for the message of its failure.
fn quote_log(inst: &InstanceRecord, tail: &[String]) -> String {
    crate::core::logs::quote_tail(&inst.endpoint_name, &inst.variant_name, &inst.instance_id, tail)
}

/// One health check of an instance or a copy: whether its process runs, and whether it answered
/// `/ping` (`None`: spillway could not ask, no verdict this round; a process that is gone has
/// failed).
pub(super) async fn check(app: &App, id: &str, handle: &serde_json::Value, address: &str) -> (Liveness, Option<bool>) {
    let live = app.provider.liveness(id, handle);
    if live != Liveness::Running {
        return (live, Some(false));
    }
    let check = HealthCheck {
        instance_id: id,
        handle,
        address,
        http: &app.http,
        timeout: PING_TIMEOUT,
    };
    let ok = match app.provider.health(check).await {
        Health::Passed => Some(true),
        Health::Failed => Some(false),
        Health::Unknown(why) => {
            tracing::warn!(instance = %id, %why, "health check not made; no verdict this round");
            None
        }
    };
    (live, ok)
}

/// Checks every launching and serving instance: process alive, `/ping` answering. An instance
/// that exited, or that is past its health-check window, has its last log lines read for the
/// message of its failure.
async fn observe_health(app: &Arc<App>, h: &EndpointHandle) {
    let snapshot: Vec<(InstanceRecord, f64)> = {
        let rt = h.state.lock().await;
        rt.instances
            .iter()
            .filter(|i| i.state != InstancePhase::Terminating)
            .map(|i| (i.clone(), startup_timeout(app, &rt, i)))
            .collect()
    };
    if snapshot.is_empty() {
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for (inst, window) in snapshot {
        let app = app.clone();
        set.spawn(async move {
            let (live, ok) = check(&app, &inst.instance_id, &inst.handle, &inst.address).await;
            let exited = matches!(live, Liveness::Exited(_));
            let overdue = inst.state == InstancePhase::Launching
                && ok == Some(false)
                && app.clock.now() - inst.launched_at > window;
            let tail = if exited || overdue {
                log_tail(&app, &inst).await
            } else {
                vec![]
            };
            (inst.instance_id, live, ok, tail)
        });
    }
    let mut results = vec![];
    while let Some(Ok(r)) = set.join_next().await {
        results.push(r);
    }
    let t = app.clock.now();
    let mut rt = h.state.lock().await;
    let before = rt.record.clone();
    let before_instances = rt.instances.clone();
    for (id, live, ok, tail) in results {
        let Some(idx) = rt.instances.iter().position(|i| i.instance_id == id) else {
            continue;
        };
        // spillway could not ask: nothing is held against a serving instance, and a launching
        // one has not passed yet (its startup window still runs out).
        let Some(ok) = ok.or((rt.instances[idx].state == InstancePhase::Launching).then_some(false)) else {
            continue;
        };
        let inst = rt.instances[idx].clone();
        let endpoint = rt.record.name.clone();
        let failure = match (inst.state, &live, ok) {
            (InstancePhase::Launching, _, true) => {
                rt.instances[idx].state = InstancePhase::InService;
                if let Some(old) = rt.instances[idx].replaces.take()
                    && let Some(o) = rt.instances.iter_mut().find(|o| o.instance_id == old)
                {
                    o.state = InstancePhase::Terminating;
                    let (old_type, old_prio) = (o.instance_type.clone(), o.priority);
                    app.event(event(
                        app,
                        &endpoint,
                        &inst,
                        "MigrationShift",
                        Some("TrafficShifted"),
                        format!(
                            "traffic moves to {} ({}, priority {}); draining {old} ({old_type}, priority {old_prio})",
                            inst.instance_id, inst.instance_type, inst.priority
                        ),
                    ));
                }
                app.event(event(
                    app,
                    &endpoint,
                    &inst,
                    "InstanceHealthy",
                    Some("InService"),
                    format!(
                        "passed the /ping health check {:.1}s after launch",
                        t - inst.launched_at
                    ),
                ));
                if let Some(v) = variant_mut(&mut rt, &inst.deployment_id, &inst.variant_name) {
                    v.health_failures = 0;
                }
                None
            }
            (InstancePhase::Launching, Liveness::Exited(status), _) => {
                Some(format!("the container {status} before passing the ping health check"))
            }
            (InstancePhase::Launching, _, false) => {
                let timeout = startup_timeout(app, &rt, &inst);
                (t - inst.launched_at > timeout)
                    .then(|| format!("the container did not pass the ping health check within {timeout:.0} seconds"))
            }
            (InstancePhase::InService, Liveness::Exited(status), _) => {
                rt.instances[idx].state = InstancePhase::Terminating;
                app.event(event(
                    app,
                    &endpoint,
                    &inst,
                    "InstanceExited",
                    Some("Replacing"),
                    format!("the container {status}. {}", quote_log(&inst, &tail)),
                ));
                None
            }
            (InstancePhase::InService, _, false) => {
                rt.instances[idx].failed_pings += 1;
                if rt.instances[idx].failed_pings >= MAX_FAILED_PINGS {
                    rt.instances[idx].state = InstancePhase::Terminating;
                    app.event(event(
                        app,
                        &endpoint,
                        &inst,
                        "InstanceUnhealthy",
                        Some("Replacing"),
                        format!("{MAX_FAILED_PINGS} consecutive /ping failures"),
                    ));
                }
                None
            }
            (InstancePhase::InService, _, true) => {
                rt.instances[idx].failed_pings = 0;
                None
            }
            (InstancePhase::Terminating, _, _) => None,
        };
        if let Some(detail) = failure {
            rt.instances[idx].state = InstancePhase::Terminating;
            // Where an operator looks: the log stream, named, and its last lines, quoted.
            let logs = quote_log(&inst, &tail);
            let reason = format!(
                "The primary container for production variant {} did not pass the ping health check: {detail} (instance {} of type {}). {logs}",
                inst.variant_name, inst.instance_id, inst.instance_type
            );
            app.event(event(
                app,
                &endpoint,
                &inst,
                "HealthCheckFailed",
                Some("Failed"),
                format!("{detail}. {logs}"),
            ));
            note_health_failure(app, &mut rt, &inst, reason);
        }
    }
    if rt.record != before {
        persist(app, &mut rt);
    }
    // Phase changes are durable, so a restart knows which instances were serving.
    for inst in rt.instances.iter().filter(|i| !before_instances.contains(i)) {
        if let Err(err) = app.store.put_instance(inst) {
            tracing::error!(%err, "cannot persist instance state");
        }
    }
    if serves_traffic(&rt) {
        let routes = routes_of(&rt);
        app.dataplane.routes.publish(&rt.record.name, routes);
    }
}

/// Whether the endpoint's routes should be published (a deleting endpoint takes no new requests).
fn serves_traffic(rt: &EndpointRuntime) -> bool {
    !rt.deleted && rt.record.status() != EndpointStatus::Deleting
}

/// A health failure (or a failed start) of `inst`: fails the operation that launched it, or
/// counts towards a crash loop when the endpoint is merely keeping its fleet alive.
fn note_health_failure(app: &App, rt: &mut EndpointRuntime, inst: &InstanceRecord, reason: String) {
    if inst.replaces.is_some() {
        // A failed migration does not touch the serving fleet; the type rests like after an
        // insufficient-capacity answer so the next attempt does not come at once.
        let t = app.clock.now();
        let entry = app.ice().record_ice(
            &inst.instance_type,
            "a surge instance failed its health check",
            t,
            app.backoff(),
        );
        app.event(event(
            app,
            &rt.record.name,
            inst,
            "MigrationFailed",
            Some("Failed"),
            format!(
                "{reason}; no migration to {} for {:.0}s",
                inst.instance_type,
                entry.next_probe - t
            ),
        ));
        return;
    }
    let op = rt.record.operation();
    let in_op = match op {
        Some(Operation::Create) => true,
        Some(Operation::Deploy) => rt.record.pending.as_ref().is_some_and(|p| p.id == inst.deployment_id),
        _ => false,
    };
    let endpoint = rt.record.name.clone();
    let Some(v) = variant_mut(rt, &inst.deployment_id, &inst.variant_name) else {
        return;
    };
    v.health_failures += 1;
    if in_op {
        v.unhealthy = Some(reason);
    } else if v.health_failures >= MAX_HEALTH_FAILURES && v.stalled.is_none() {
        let msg = format!(
            "stopped replacing instances of variant {} after {} consecutive health-check failures (crash loop): {reason}",
            inst.variant_name, v.health_failures
        );
        v.stalled = Some(msg.clone());
        app.event(endpoint_event(app, &endpoint, "CrashLoop", msg));
    }
}

fn variant_mut<'a>(
    rt: &'a mut EndpointRuntime,
    deployment_id: &str,
    variant: &str,
) -> Option<&'a mut crate::core::endpoint::DeployedVariant> {
    let rec = &mut rt.record;
    let dep = if rec.active.id == deployment_id {
        Some(&mut rec.active)
    } else {
        rec.pending.as_mut().filter(|p| p.id == deployment_id)
    }?;
    dep.variants.iter_mut().find(|v| v.spec.name == variant)
}

fn views(rt: &EndpointRuntime, deployment_id: &str, variant: &str) -> Vec<InstanceView> {
    rt.instances
        .iter()
        .filter(|i| i.deployment_id == deployment_id && i.variant_name == variant)
        .map(|i| InstanceView {
            id: i.instance_id.clone(),
            priority: i.priority,
            phase: i.state,
            launched_at: i.launched_at,
            replaces: i.replaces.clone(),
            holds_copies: rt.copies.iter().any(|c| c.host_instance_id == i.instance_id),
        })
        .collect()
}

fn new_instance_id() -> String {
    format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
}

/// The provisioning deadline of a variant, with the server override.
fn timeout_of(app: &App, provision_timeout_s: u32) -> f64 {
    app.cfg
        .provisioning
        .deadline_override_seconds
        .map(|s| s as f64)
        .unwrap_or(provision_timeout_s as f64)
}

/// Marks every instance of a deployment for termination; how many there were.
fn stop_deployment(rt: &mut EndpointRuntime, deployment_id: &str) -> usize {
    let ids: Vec<String> = rt
        .instances
        .iter()
        .filter(|i| i.deployment_id == deployment_id)
        .map(|i| i.instance_id.clone())
        .collect();
    mark_terminating(rt, &ids).len()
}

fn mark_terminating(rt: &mut EndpointRuntime, ids: &[String]) -> Vec<InstanceRecord> {
    let mut out = vec![];
    for inst in rt.instances.iter_mut() {
        if ids.contains(&inst.instance_id) {
            inst.state = InstancePhase::Terminating;
            out.push(inst.clone());
        }
    }
    out
}

/// Decides what to do next, under the endpoint lock.
fn decide_next(app: &Arc<App>, rt: &mut EndpointRuntime) -> Next {
    let t = app.clock.now();
    let name = rt.record.name.clone();
    // Stopping instances comes first: they are out of routing already.
    let stopping: Vec<InstanceRecord> = rt
        .instances
        .iter()
        .filter(|i| i.state == InstancePhase::Terminating)
        .cloned()
        .collect();
    if !stopping.is_empty() {
        for inst in &stopping {
            if let Err(err) = app.store.put_instance(inst) {
                tracing::error!(%err, "cannot persist instance state");
            }
        }
        return Next::Terminate(stopping);
    }
    match rt.record.status() {
        EndpointStatus::Deleting => {
            if !rt.instances.is_empty() {
                let ids: Vec<String> = rt.instances.iter().map(|i| i.instance_id.clone()).collect();
                let all = mark_terminating(rt, &ids);
                app.dataplane.routes.remove(&name);
                return Next::Terminate(all);
            }
            let arn = rt.record.arn.clone();
            if let Err(err) = app.store.delete(Kind::Endpoint, &name, &arn) {
                tracing::error!(%err, "cannot delete endpoint record");
                return Next::Idle;
            }
            rt.deleted = true;
            app.unregister(&name);
            app.event(endpoint_event(
                app,
                &name,
                "EndpointDeleted",
                "every instance stopped; endpoint deleted".into(),
            ));
            return Next::Deleted;
        }
        EndpointStatus::Failed => return Next::Idle,
        _ => {}
    }

    let op = rt.record.operation();
    // Which deployment the operation is about, and which are merely maintained.
    let op_deployment = match op {
        Some(Operation::Deploy) => rt.record.pending.as_ref().map(|p| p.id.clone()),
        Some(_) => Some(rt.record.active.id.clone()),
        None => None,
    };
    let mut outcomes = vec![];
    let ceiling = cost_ceiling(app, rt);
    let deployments: Vec<Deployment> = rt.record.deployments().cloned().collect();
    for dep in &deployments {
        let in_op = op_deployment.as_deref() == Some(dep.id.as_str());
        for v in &dep.variants {
            let instances = views(rt, &dep.id, &v.spec.name);
            if in_op && let Some(reason) = &v.unhealthy {
                outcomes.push(VariantOutcome::Unhealthy(reason.clone()));
                continue;
            }
            let stalled = !in_op && v.stalled.is_some();
            // Pools over the endpoint's cost ceiling are passed over like pools backing off.
            let over_ceiling: BTreeMap<String, String> = ceiling
                .map(|c| {
                    v.spec
                        .pools
                        .iter()
                        .filter_map(|p| {
                            let price = catalog::lookup(&p.instance_type).and_then(|s| s.price_usd_per_hour);
                            c.refusal(&p.instance_type, price).map(|r| (p.instance_type.clone(), r))
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Copies of inference components that wait for an instance name the types that can
            // hold them; the others are passed over like pools backing off, looked at again
            // each pass.
            let launch_types = rt.launch_types.get(&v.spec.name).cloned();
            let blocked_at = |ice: &crate::core::capacity::IceMemory, ty: &str| {
                ice.blocked_until(ty, t)
                    .or_else(|| over_ceiling.contains_key(ty).then_some(t + COST_RECHECK_S))
                    .or_else(|| {
                        launch_types
                            .as_ref()
                            .is_some_and(|allowed| !allowed.contains(ty))
                            .then_some(t + 1.0)
                    })
            };
            let mut step = {
                let ice = app.ice();
                let blocked = |ty: &str| blocked_at(&ice, ty);
                planner::plan_variant(&v.spec.pools, v.desired_count, &instances, &v.provisioning, &blocked, t)
            };
            let mut replaces = None;
            let steady =
                op.is_none() && rt.record.status() == EndpointStatus::InService && dep.id == rt.record.active.id;
            if step == Step::Satisfied
                && steady
                && instances.iter().any(|i| i.priority > 1)
                && rebalance_enabled(app, &rt.record.arn)
            {
                let policy = RebalancePolicy {
                    min_runtime_s: app.cfg.rebalance.min_runtime_seconds as f64,
                    max_in_flight: app.cfg.rebalance.max_in_flight,
                };
                let ice = app.ice();
                let blocked = |ty: &str| blocked_at(&ice, ty);
                if let Some(m) = planner::plan_rebalance(&v.spec.pools, &instances, &blocked, policy, t) {
                    replaces = Some(m.replaces);
                    step = Step::Launch(m.pool);
                    rt.reported.remove(&format!("rebalance/{}", v.spec.name));
                } else if let Some(w) = planner::rebalance_wait(&v.spec.pools, &instances, &blocked, policy, t) {
                    // Once per wait: recorded again only when the instance or its time changes.
                    let key = format!("rebalance/{}", v.spec.name);
                    let what = format!("{}@{}", w.instance, w.until);
                    if rt.reported.get(&key) != Some(&what) {
                        rt.reported.insert(key, what);
                        app.event(Event {
                            time: t,
                            endpoint_name: name.clone(),
                            variant_name: Some(v.spec.name.clone()),
                            kind: "RebalanceWaiting".into(),
                            instance_type: Some(w.pool.instance_type.clone()),
                            priority: Some(w.pool.priority),
                            instance_id: Some(w.instance.clone()),
                            result: Some("Waiting".into()),
                            message: format!(
                                "{} (priority {}) moves to {} (priority {}) at {} ({:.0}s after this event), once it has run \
                                 [rebalance] min_runtime_seconds = {}",
                                w.instance,
                                w.priority,
                                w.pool.instance_type,
                                w.pool.priority,
                                crate::core::time::iso8601(w.until.ceil() as i64),
                                (w.until - t).max(0.0),
                                app.cfg.rebalance.min_runtime_seconds
                            ),
                        });
                    }
                }
            }
            report_cost_ceiling(app, rt, &v.spec.name, &v.spec.pools, &over_ceiling, &step, t);
            let outcome = match step {
                Step::Launch(_) if stalled => VariantOutcome::Ready,
                Step::Launch(pool) => {
                    let timeout = timeout_of(app, v.spec.provision_timeout_s);
                    let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                    if replaces.is_none() {
                        vm.provisioning.begin(t, timeout);
                    }
                    let container = dep.models.get(&pool.model_name).cloned().unwrap_or_default();
                    let Some(spec) = catalog::lookup(&pool.instance_type) else {
                        // Validated at creation; a catalog that lost a type is a bug, not capacity.
                        vm.unhealthy = Some(format!("instance type {} is not in the catalog", pool.instance_type));
                        continue;
                    };
                    // A launch (model data included) never outlasts the operation's deadline.
                    let budget = vm.provisioning.deadline.map_or(timeout, |d| d - t).max(1.0);
                    return Next::Launch {
                        deployment_id: dep.id.clone(),
                        variant: v.spec.name.clone(),
                        request: Box::new(LaunchRequest {
                            instance_id: new_instance_id(),
                            endpoint_name: name.clone(),
                            variant_name: v.spec.name.clone(),
                            instance_type: spec,
                            model_name: pool.model_name.clone(),
                            container,
                            model_data: ModelDataLimits {
                                timeout: Duration::from_secs(v.spec.model_data_timeout_s.into()),
                                max_bytes: app.cfg.provisioning.model_data_max_bytes,
                                max_entries: app.cfg.provisioning.model_data_max_entries,
                            },
                        }),
                        pool,
                        replaces,
                        budget: Duration::from_secs_f64(budget),
                    };
                }
                Step::Terminate(ids) => {
                    let victims = mark_terminating(rt, &ids);
                    for inst in &victims {
                        app.event(event(
                            app,
                            &name,
                            inst,
                            "ScaleIn",
                            Some("Terminating"),
                            format!(
                                "scale-in to {}: lowest-priority pool first",
                                planner::count_of(v.desired_count as usize, "instance")
                            ),
                        ));
                    }
                    return Next::Terminate(victims);
                }
                Step::Pause(until) => {
                    // The operation's deadline runs from the first step that wanted an
                    // instance, even when no launch could be made (every pool over the cost
                    // ceiling), so a variant never waits forever. (A stalled variant is not
                    // provisioning: it waits for capacity or a new count.)
                    let timeout = timeout_of(app, v.spec.provision_timeout_s);
                    let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                    if !stalled {
                        vm.provisioning.begin(t, timeout);
                    }
                    let deadline = vm.provisioning.deadline;
                    let have = instances
                        .iter()
                        .filter(|i| i.phase != InstancePhase::Terminating && i.replaces.is_none())
                        .count() as u32;
                    let msg = {
                        let ice = app.ice();
                        let reason = |ty: &str| match ice.blocked_until(ty, t) {
                            Some(_) => ice.get(ty).map(|e| e.reason.clone()),
                            None => over_ceiling.get(ty).cloned(),
                        };
                        planner::backing_off_message(&v.spec.pools, have, v.desired_count, &reason, until, deadline, t)
                    };
                    let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                    vm.status_message = Some(msg);
                    VariantOutcome::InProgress
                }
                Step::WaitForHealth => {
                    let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                    let starting = instances.iter().filter(|i| i.phase == InstancePhase::Launching).count();
                    vm.status_message = Some(format!(
                        "Waiting for {} to pass the ping health check ({} of {} in service)",
                        planner::count_of(starting, "instance"),
                        instances.len() - starting,
                        v.desired_count
                    ));
                    VariantOutcome::InProgress
                }
                Step::Satisfied => {
                    if v.provisioning.deadline.is_some() || v.status_message.is_some() {
                        let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                        if !in_op {
                            vm.provisioning.finish();
                        }
                        vm.status_message = None;
                    }
                    VariantOutcome::Ready
                }
                Step::DeadlineExceeded { have, want, tried } => {
                    let answers = {
                        let ice = app.ice();
                        let reason = |ty: &str| {
                            over_ceiling
                                .get(ty)
                                .cloned()
                                .or_else(|| ice.get(ty).map(|e| e.reason.clone()))
                        };
                        planner::last_answers(&v.spec.pools, &reason)
                    };
                    let reason = format!(
                        "{}{answers}",
                        planner::capacity_failure_reason(&v.spec.name, have, want, &tried)
                    );
                    if !in_op {
                        let vm = variant_mut(rt, &dep.id, &v.spec.name).expect("variant exists");
                        vm.provisioning.finish();
                        vm.stalled = Some(reason.clone());
                        app.event(endpoint_event(app, &name, "ReplacementShortfall", reason));
                        VariantOutcome::Ready
                    } else {
                        VariantOutcome::Shortfall(reason)
                    }
                }
            };
            if in_op {
                outcomes.push(outcome);
            }
        }
    }
    let Some(op) = op else { return Next::Idle };
    let decision = planner::decide(op, &outcomes);
    if decision == EndpointDecision::InService && op == Operation::Deploy && rt.record.rolling.is_some() {
        let progress = advance_rolling(rt, t);
        if progress != RollingProgress::Done {
            if progress == RollingProgress::NextBatch {
                app.event(endpoint_event(
                    app,
                    &name,
                    "RollingBatch",
                    "batch in service and baked; provisioning the next batch through the pools".into(),
                ));
            }
            return Next::Idle;
        }
    }
    let moved = match &decision {
        EndpointDecision::Continue => return Next::Idle,
        EndpointDecision::InService | EndpointDecision::AcceptShortfall(_) => rt.record.finish(t),
        EndpointDecision::Fail(reason) => rt.record.fail(reason.clone(), t),
        EndpointDecision::RollBack(reason) => rt.record.roll_back(reason, t),
    };
    if let Err(err) = moved {
        // The planner decided for the operation in flight; a refusal is a bug, never a client's doing.
        tracing::error!(endpoint = %name, %err, "the endpoint state machine refused the controller's move");
        return Next::Idle;
    }
    match decision {
        EndpointDecision::Continue => Next::Idle,
        EndpointDecision::InService => {
            if op == Operation::Deploy
                && let Some(new) = rt.record.pending.take()
            {
                let old = std::mem::replace(&mut rt.record.active, new);
                let stopping = stop_deployment(rt, &old.id);
                app.event(endpoint_event(
                    app,
                    &name,
                    "DeploymentComplete",
                    format!(
                        "traffic switched to endpoint configuration {}; stopping {} of {}",
                        rt.record.active.config_name,
                        planner::count_of(stopping, "instance"),
                        old.config_name
                    ),
                ));
            }
            rt.record.failure_reason = None;
            app.event(endpoint_event(
                app,
                &name,
                "EndpointInService",
                "every variant has its desired instances in service".into(),
            ));
            Next::Idle
        }
        EndpointDecision::Fail(reason) => {
            let ids: Vec<String> = rt.instances.iter().map(|i| i.instance_id.clone()).collect();
            mark_terminating(rt, &ids);
            app.event(endpoint_event(app, &name, "EndpointFailed", reason));
            Next::Idle
        }
        EndpointDecision::RollBack(reason) => {
            if let Some(p) = rt.record.pending.take() {
                stop_deployment(rt, &p.id);
            }
            app.event(endpoint_event(
                app,
                &name,
                "UpdateRolledBack",
                rollback_message(&reason),
            ));
            Next::Idle
        }
        EndpointDecision::AcceptShortfall(reason) => {
            for v in rt.record.active.variants.iter_mut() {
                if v.provisioning.deadline.is_none() {
                    continue;
                }
                v.provisioning.finish();
            }
            app.event(endpoint_event(app, &name, "ScaleOutShortfall", reason));
            Next::Idle
        }
    }
}

/// Moves a rolling deployment on once its current batch is in service.
fn advance_rolling(rt: &mut EndpointRuntime, t: Timestamp) -> RollingProgress {
    let old_id = rt.record.active.id.clone();
    let old_live = rt
        .instances
        .iter()
        .filter(|i| i.deployment_id == old_id && i.state != InstancePhase::Terminating)
        .count() as u32;
    let rec = &mut rt.record;
    let (Some(pending), Some(rolling)) = (rec.pending.as_mut(), rec.rolling.as_mut()) else {
        return RollingProgress::Done;
    };
    let mut new: BTreeMap<String, u32> = pending
        .variants
        .iter()
        .map(|v| (v.spec.name.clone(), v.desired_count))
        .collect();
    let mut old: BTreeMap<String, u32> = rec
        .active
        .variants
        .iter()
        .map(|v| (v.spec.name.clone(), v.desired_count))
        .collect();
    let progress = rolling.advance(&mut new, &mut old, old_live, t);
    let wait = rolling.baking_until.map(|u| (u - t).max(0.0)).unwrap_or(0.0);
    for v in pending.variants.iter_mut() {
        let n = new.get(&v.spec.name).copied().unwrap_or(v.desired_count);
        if n != v.desired_count {
            // Each batch provisions through the pools with its own deadline.
            v.provisioning.finish();
            v.desired_count = n;
        }
        v.status_message = Some(match progress {
            RollingProgress::Baking => format!(
                "Baking: {} of {} new instances in service; next batch in {wait:.0}s",
                v.desired_count,
                rolling.target.get(&v.spec.name).copied().unwrap_or(0)
            ),
            RollingProgress::NextBatch => format!(
                "Provisioning the next batch: {} wanted",
                planner::count_of(v.desired_count as usize, "new instance")
            ),
            RollingProgress::Draining => "Every new instance is in service; stopping the old ones".to_string(),
            RollingProgress::Done => "Rolling deployment complete".to_string(),
        });
    }
    for v in rec.active.variants.iter_mut() {
        if let Some(n) = old.get(&v.spec.name) {
            v.desired_count = *n;
        }
    }
    progress
}

/// The launch being recorded.
struct Launch<'a> {
    deployment_id: &'a str,
    variant: &'a str,
    pool: &'a PoolSpec,
    instance_id: String,
    replaces: Option<String>,
    /// When the launch began.
    began: Timestamp,
}

/// Applies the outcome of a launch.
fn record_launch(app: &App, rt: &mut EndpointRuntime, l: Launch<'_>, result: Result<Launched, LaunchError>) {
    let t = app.clock.now();
    let name = rt.record.name.clone();
    let pool = l.pool;
    let record = |state: InstancePhase, launched: &Launched| InstanceRecord {
        instance_id: l.instance_id.clone(),
        endpoint_name: name.clone(),
        deployment_id: l.deployment_id.to_string(),
        variant_name: l.variant.to_string(),
        instance_type: pool.instance_type.clone(),
        priority: pool.priority,
        model_name: pool.model_name.clone(),
        state,
        launched_at: t,
        handle: launched.handle.clone(),
        address: launched.address.clone(),
        failed_pings: 0,
        replaces: l.replaces.clone(),
    };
    let mut ev = Event {
        time: t,
        endpoint_name: name.clone(),
        variant_name: Some(l.variant.to_string()),
        kind: if l.replaces.is_some() {
            "MigrationLaunch"
        } else {
            "LaunchAttempt"
        }
        .into(),
        instance_type: Some(pool.instance_type.clone()),
        priority: Some(pool.priority),
        instance_id: None,
        result: None,
        message: String::new(),
    };
    let result_label = match &result {
        Ok(_) => "Launched",
        Err(LaunchError::InsufficientCapacity(_)) => "InsufficientCapacity",
        Err(LaunchError::Failed(_)) => "Failed",
    };
    app.metrics
        .prometheus
        .launches
        .get_or_create(&crate::telemetry::metrics::LaunchSeries {
            instance_type: pool.instance_type.clone(),
            result: result_label.into(),
        })
        .inc();
    if variant_mut(rt, l.deployment_id, l.variant).is_none() {
        // The deployment went away (rolled back, deleted) while launching.
        if let Ok(launched) = &result {
            let inst = record(InstancePhase::Terminating, launched);
            let _ = app.store.put_instance(&inst);
            rt.instances.push(inst);
        }
        return;
    }
    let reclaimed = {
        let reclaims = app.reclaimed.lock().unwrap_or_else(|p| p.into_inner());
        [None, Some(name.as_str())]
            .into_iter()
            .filter_map(|e| reclaims.get(&reclaim_key(&pool.instance_type, e)))
            .any(|at| *at >= l.began)
    };
    if let (true, Ok(launched)) = (reclaimed, &result) {
        // Its type was taken away while it launched: it goes the way of the others.
        let inst = record(InstancePhase::Terminating, launched);
        let _ = app.store.put_instance(&inst);
        app.event(event(
            app,
            &name,
            &inst,
            "CapacityReclaimed",
            Some("Terminating"),
            format!(
                "{} capacity was reclaimed while this instance launched; it is stopped and replaced through the pools",
                pool.instance_type
            ),
        ));
        rt.instances.push(inst);
        return;
    }
    match result {
        Ok(launched) => {
            if let Some(known) = app.ice().record_success(&pool.instance_type) {
                app.event(Event {
                    kind: "CapacityRecovered".into(),
                    result: Some("Available".into()),
                    message: format!(
                        "{} has capacity again after {} since {:.0}s ago",
                        pool.instance_type,
                        planner::count_of(known.failures as usize, "insufficient-capacity answer"),
                        t - known.first_seen
                    ),
                    ..ev.clone()
                });
            }
            let inst = record(InstancePhase::Launching, &launched);
            if let Err(err) = app.store.put_instance(&inst) {
                tracing::error!(%err, "cannot persist instance");
            }
            rt.instances.push(inst);
            let v = variant_mut(rt, l.deployment_id, l.variant).expect("checked above");
            v.provisioning.record_launch(pool, false);
            v.status_message = Some(format!(
                "Launched an instance of {} (priority {}); waiting for its health check",
                pool.instance_type, pool.priority
            ));
            ev.instance_id = Some(l.instance_id);
            ev.result = Some("Launched".into());
            ev.message = match &l.replaces {
                Some(old) => format!(
                    "surge instance from pool priority {} to replace {old} once healthy (returning to preferred hardware)",
                    pool.priority
                ),
                None if pool.model_name.is_empty() => format!(
                    "launched from pool priority {} to host inference components (the host agent runs on it)",
                    pool.priority
                ),
                None => format!(
                    "launched from pool priority {} running model {}",
                    pool.priority, pool.model_name
                ),
            };
        }
        Err(LaunchError::InsufficientCapacity(detail)) => {
            let entry = app.ice().record_ice(&pool.instance_type, &detail, t, app.backoff());
            let ice = app.ice();
            let v = variant_mut(rt, l.deployment_id, l.variant).expect("checked above");
            v.provisioning.record_launch(pool, true);
            let next = v
                .spec
                .pools
                .iter()
                .find(|p| ice.blocked_until(&p.instance_type, t).is_none());
            v.status_message = Some(match next {
                Some(p) => format!(
                    "Insufficient capacity for {} (priority {}); falling back to {} (priority {})",
                    pool.instance_type, pool.priority, p.instance_type, p.priority
                ),
                None => format!(
                    "Insufficient capacity for {} (priority {}): {detail}; every pool is backing off, retrying from priority 1",
                    pool.instance_type, pool.priority
                ),
            });
            ev.result = Some("InsufficientCapacity".into());
            ev.message = format!(
                "{detail}; {} unavailable for {:.1}s (insufficient-capacity answer {} in a row)",
                pool.instance_type,
                entry.next_probe - t,
                entry.failures
            );
        }
        Err(LaunchError::Failed(detail)) => {
            let v = variant_mut(rt, l.deployment_id, l.variant).expect("checked above");
            v.provisioning.record_launch(pool, false);
            ev.result = Some("Failed".into());
            ev.message = detail.clone();
            let never_started = record(
                InstancePhase::Terminating,
                &Launched {
                    handle: Value::Null,
                    address: String::new(),
                },
            );
            app.event(ev);
            let reason = format!(
                "Failed to start an instance of {} for production variant {}: {detail}",
                pool.instance_type, l.variant
            );
            note_health_failure(app, rt, &never_started, reason);
            return;
        }
    }
    app.event(ev);
}

/// Whether the endpoint moves its fleet back to preferred hardware: its tag
/// `spillway:rebalance` (`enabled`/`disabled`), else the server default.
fn rebalance_enabled(app: &App, arn: &str) -> bool {
    rebalance_setting(app, arn).0
}

/// Whether the endpoint rebalances, and where that comes from: `tag` or `config`.
pub(crate) fn rebalance_setting(app: &App, arn: &str) -> (bool, &'static str) {
    let tags = app.store.tags(arn).unwrap_or_default();
    match tags.iter().find(|t| t.key == REBALANCE_TAG).map(|t| t.value.as_str()) {
        Some("enabled") | Some("true") => (true, "tag"),
        Some("disabled") | Some("false") => (false, "tag"),
        _ => (app.cfg.rebalance.enabled, "config"),
    }
}

/// How often a pool passed over for the cost ceiling is looked at again (the ceiling or the
/// fleet may have changed).
const COST_RECHECK_S: f64 = 5.0;

/// The endpoint's cost ceiling (tag `spillway:max-hourly-cost`) with what its live and launching
/// instances cost per hour now; `None` without the tag (or with a value that is no longer valid,
/// which the API refuses).
fn cost_ceiling(app: &App, rt: &EndpointRuntime) -> Option<planner::CostCeiling> {
    let tags = app.store.tags(&rt.record.arn).unwrap_or_default();
    let value = tags.iter().find(|t| t.key == planner::COST_CEILING_TAG)?;
    let max = planner::parse_cost_ceiling(&value.value).ok()?;
    let current = planner::hourly_cost(
        rt.instances
            .iter()
            .filter(|i| i.state != InstancePhase::Terminating)
            .map(|i| catalog::lookup(&i.instance_type).and_then(|s| s.price_usd_per_hour)),
    );
    Some(planner::CostCeiling {
        max_usd_per_hour: max,
        current_usd_per_hour: current,
    })
}

/// A `CostCeilingReached` event for each pool the ceiling made the planner pass over (a pool
/// ahead of the one launched, or any when the variant waits), once per streak: again only after
/// the type was affordable or the variant satisfied in between.
fn report_cost_ceiling(
    app: &App,
    rt: &mut EndpointRuntime,
    variant: &str,
    pools: &[PoolSpec],
    over_ceiling: &BTreeMap<String, String>,
    step: &Step,
    t: Timestamp,
) {
    let prefix = format!("cost/{variant}/");
    let bites = |p: &PoolSpec| match step {
        Step::Launch(chosen) => p.priority < chosen.priority,
        Step::Pause(_) => true,
        _ => false,
    };
    if matches!(step, Step::Satisfied) {
        rt.reported.retain(|k, _| !k.starts_with(&prefix));
        return;
    }
    for p in pools {
        let key = format!("{prefix}{}", p.instance_type);
        let Some(why) = over_ceiling.get(&p.instance_type) else {
            rt.reported.remove(&key);
            continue;
        };
        if !bites(p) || app.ice().blocked_until(&p.instance_type, t).is_some() || rt.reported.contains_key(&key) {
            continue;
        }
        rt.reported.insert(key, why.clone());
        let then = match step {
            Step::Launch(chosen) => format!(
                "falling back to {} (priority {})",
                chosen.instance_type, chosen.priority
            ),
            _ => "the variant waits".to_string(),
        };
        app.event(Event {
            time: t,
            endpoint_name: rt.record.name.clone(),
            variant_name: Some(variant.to_string()),
            kind: "CostCeilingReached".into(),
            instance_type: Some(p.instance_type.clone()),
            priority: Some(p.priority),
            instance_id: None,
            result: Some("Skipped".into()),
            message: format!("{why}; {then}"),
        });
    }
}

/// The tag that opts an endpoint in or out of rebalancing.
pub const REBALANCE_TAG: &str = "spillway:rebalance";

/// The serving instances of the active deployment (and, during a rolling deployment, of the new one).
fn routes_of(rt: &EndpointRuntime) -> EndpointRoutes {
    let dep = &rt.record.active;
    // During a rolling deployment both fleets serve the variant.
    let rolling_id = rt
        .record
        .rolling
        .as_ref()
        .and(rt.record.pending.as_ref())
        .map(|p| p.id.as_str());
    EndpointRoutes {
        variants: dep
            .variants
            .iter()
            .map(|v| VariantRoutes {
                name: v.spec.name.clone(),
                weight: v.desired_weight,
                strategy: v.spec.routing,
                instances: rt
                    .instances
                    .iter()
                    .filter(|i| {
                        (i.deployment_id == dep.id || Some(i.deployment_id.as_str()) == rolling_id)
                            && i.variant_name == v.spec.name
                            && i.state == InstancePhase::InService
                    })
                    .map(|i| {
                        Arc::new(RouteInstance::new(
                            i.instance_id.clone(),
                            i.address.clone(),
                            i.instance_type.clone(),
                        ))
                    })
                    .collect(),
            })
            .collect(),
        async_config: dep.async_config.clone().map(Arc::new),
        components: super::components::routes(rt),
        hosts_components: dep.variants.iter().any(|v| v.spec.hosts_components),
    }
}

/// The key of [`App::reclaimed`]: a type, on one endpoint or on all.
fn reclaim_key(instance_type: &str, endpoint: Option<&str>) -> String {
    format!("{}|{instance_type}", endpoint.unwrap_or("*"))
}

/// Takes every instance of `instance_type` away from one endpoint or every endpoint, as a provider reclaiming
/// its capacity would (a game day's "the type is gone"): each is marked for termination with a
/// `CapacityReclaimed` event, leaves the routes at once and is drained and stopped by its
/// endpoint's controller, which then replaces it through the pools. Returns how many.
pub async fn reclaim(app: &App, instance_type: &str, endpoint: Option<&str>, why: &str) -> usize {
    app.reclaimed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(reclaim_key(instance_type, endpoint), app.clock.now());
    let mut total = 0;
    for h in app.all_endpoints() {
        let mut rt = h.state.lock().await;
        if rt.deleted || endpoint.is_some_and(|e| e != rt.record.name) {
            continue;
        }
        let ids: Vec<String> = rt
            .instances
            .iter()
            .filter(|i| i.instance_type == instance_type && i.state != InstancePhase::Terminating)
            .map(|i| i.instance_id.clone())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let name = rt.record.name.clone();
        for inst in mark_terminating(&mut rt, &ids) {
            // Durable before the answer: a restart stops it rather than adopting it.
            if let Err(err) = app.store.put_instance(&inst) {
                tracing::error!(%err, "cannot persist a reclaimed instance");
            }
            app.event(event(
                app,
                &name,
                &inst,
                "CapacityReclaimed",
                Some("Terminating"),
                format!("{instance_type} capacity reclaimed ({why}); the instance is drained, stopped and replaced through the pools"),
            ));
        }
        total += ids.len();
        if serves_traffic(&rt) {
            app.dataplane.routes.publish(&name, routes_of(&rt));
        }
        drop(rt);
        h.notify.notify_one();
    }
    total
}
