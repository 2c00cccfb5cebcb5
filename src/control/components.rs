//! Inference components: their commands, queries, and the controller's placement of their
//! copies on an endpoint's fleet (docs/inference-components.md).
//!
//! A component lives with its endpoint: its record and its copies are in the endpoint's
//! [`EndpointRuntime`] (and the store), changed only under the endpoint lock, so the endpoint's
//! controller sees one consistent picture. Each pass, [`reconcile`] checks the copies' health,
//! asks the pure planner (`core::component::plan`) what to place and remove and how many
//! instances the variant needs (managed instance scaling), and executes that outside the lock:
//! a copy is recorded (`Placing`) before its process starts, so a crash in between leaves a
//! record that the next start resolves, never an orphan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::app::{EndpointHandle, EndpointRuntime};
use super::{App, ControlError, Outcome, ResourceKind};
use crate::core::catalog;
use crate::core::component::{
    self, ComponentRecord, ComponentStatus, CopyPhase, CopyRecord, Demand, HostView, Share, SpecVersion,
};
use crate::core::endpoint::Event;
use crate::core::model::{ContainerDefinition, EndpointStatus, Model, Tag, Timestamp};
use crate::core::planner::InstancePhase;
use crate::core::validate::ValidationError;
use crate::provider::{CopyLaunchRequest, LaunchError, Liveness, ModelDataLimits};
use crate::store::Kind;

/// Consecutive failed pings before a serving copy is replaced.
const MAX_FAILED_PINGS: u32 = 3;
/// Consecutive failed copies of a component's current version after which creation fails or an
/// update rolls back.
const MAX_COPY_FAILURES: u32 = 3;
/// How long a component's placement pauses after one of its copies failed (no tight crash loop).
const FAILURE_PAUSE_S: f64 = 5.0;

/// The image of the agent every instance of a components-hosting variant runs.
pub const HOST_AGENT_IMAGE: &str = "builtin:host";

/// The container of a components-hosting variant's instances.
pub fn host_container() -> ContainerDefinition {
    ContainerDefinition {
        image: Some(HOST_AGENT_IMAGE.into()),
        ..Default::default()
    }
}

/// The component `name`, or `NotFound`.
pub fn component(app: &App, name: &str) -> Result<ComponentRecord, ControlError> {
    app.store
        .get::<ComponentRecord>(Kind::InferenceComponent, name)?
        .ok_or_else(|| not_found(app, name))
}

fn not_found(app: &App, name: &str) -> ControlError {
    ControlError::NotFound {
        kind: ResourceKind::InferenceComponent,
        arn: app.arn("inference-component", name),
    }
}

/// Every component, as stored.
pub fn components(app: &App) -> Result<Vec<ComponentRecord>, ControlError> {
    Ok(app.store.list::<ComponentRecord>(Kind::InferenceComponent)?)
}

/// `CreateInferenceComponent`, validated on the wire (`core::component::spec_version`).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateComponent {
    /// Name.
    pub name: String,
    /// The endpoint.
    pub endpoint: String,
    /// The variant (default: the endpoint's only components-hosting variant).
    pub variant: Option<String>,
    /// The specification.
    pub version: SpecVersion,
    /// `RuntimeConfig.CopyCount`.
    pub copies: u32,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// `UpdateInferenceComponent`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateComponent {
    /// Name.
    pub name: String,
    /// A new specification (a rolling update), validated on the wire.
    pub version: Option<SpecVersion>,
    /// A new `CopyCount`.
    pub copies: Option<u32>,
    /// `DeploymentConfig` as given.
    pub deployment_config: Option<Value>,
}

/// What a component's copies are given and run on one instance type.
pub struct Resolved {
    /// The model's name (`ModelName`, or the component's for an inline container).
    pub model_name: String,
    /// Its container.
    pub container: ContainerDefinition,
    /// The startup window, seconds.
    pub startup_s: f64,
    /// The model-data window, seconds.
    pub model_data_s: u64,
}

/// What copies of `rec` run on `instance_type`, or `None` when no entry covers it.
pub fn resolve(
    rec: &ComponentRecord,
    v: &SpecVersion,
    instance_type: &str,
    default_startup_s: u32,
) -> Option<Resolved> {
    let entry = component::entry_for(v, instance_type)?;
    let (model_name, container) = match (&entry.model_name, &entry.container) {
        (Some(m), _) => (m.clone(), v.models.get(m).cloned().unwrap_or_default()),
        (None, Some(c)) => (
            rec.name.clone(),
            ContainerDefinition {
                image: c.image.clone(),
                model_data_url: c.artifact_url.clone(),
                environment: c.environment.clone().map(|e| e.into_iter().collect()),
                ..Default::default()
            },
        ),
        (None, None) => return None,
    };
    let startup = entry.startup_parameters.clone().unwrap_or_default();
    Some(Resolved {
        model_name,
        container,
        startup_s: startup
            .container_startup_health_check_timeout_in_seconds
            .map_or(f64::from(default_startup_s), |s| s as f64),
        model_data_s: startup
            .model_data_download_timeout_in_seconds
            .map_or(u64::from(crate::core::model::defaults::MODEL_DATA_TIMEOUT_S), |s| {
                s.max(1) as u64
            }),
    })
}

/// Snapshots the models the entries name, so copies can be placed after `DeleteModel`.
fn snapshot_models(app: &App, v: &mut SpecVersion) -> Result<(), ControlError> {
    for entry in &v.specs {
        if let Some(m) = &entry.model_name
            && !v.models.contains_key(m)
        {
            let model: Model = super::document(app, m)?;
            v.models.insert(m.clone(), model.primary_container.unwrap_or_default());
        }
    }
    Ok(())
}

/// The variant of `rt`'s active deployment that `wanted` names (or the only one hosting
/// components), checked to host components.
fn hosting_variant(
    rt: &EndpointRuntime,
    wanted: Option<&str>,
) -> Result<crate::core::model::VariantSpec, ControlError> {
    let dep = &rt.record.active;
    let hosting: Vec<_> = dep.variants.iter().filter(|v| v.spec.hosts_components).collect();
    let invalid = |m: String| ControlError::Invalid(ValidationError(m));
    match wanted {
        Some(w) => match dep.variants.iter().find(|v| v.spec.name == w) {
            None => Err(invalid(format!(
                "VariantName: the endpoint {} has no variant named {w}",
                rt.record.name
            ))),
            Some(v) if !v.spec.hosts_components => Err(invalid(format!(
                "VariantName: the variant {w} of endpoint {} runs a model (its ModelName); inference components need \
                 a variant created without ModelName",
                rt.record.name
            ))),
            Some(v) => Ok(v.spec.clone()),
        },
        None => match hosting.as_slice() {
            [] => Err(invalid(format!(
                "EndpointName: the endpoint {} does not host inference components: its variants run models (ModelName). \
                 Create an endpoint configuration whose variants have no ModelName",
                rt.record.name
            ))),
            [v] => Ok(v.spec.clone()),
            _ => Err(invalid(format!(
                "VariantName is required: the endpoint {} has {} variants that host inference components",
                rt.record.name,
                hosting.len()
            ))),
        },
    }
}

/// `CreateInferenceComponent`.
pub(super) async fn create(app: &Arc<App>, mut c: CreateComponent) -> Result<Outcome, ControlError> {
    let h = app
        .endpoint(&c.endpoint)
        .ok_or_else(|| super::not_found(app, ResourceKind::Endpoint, &c.endpoint))?;
    snapshot_models(app, &mut c.version)?;
    let mut rt = h.state.lock().await;
    if rt.deleted {
        return Err(super::not_found(app, ResourceKind::Endpoint, &c.endpoint));
    }
    // Not while the fleet is being replaced (UpdateEndpoint) or removed: a component binds to
    // the active deployment's variant.
    if !matches!(rt.record.status(), EndpointStatus::Creating | EndpointStatus::InService)
        || rt.record.pending.is_some()
    {
        return Err(ControlError::Invalid(ValidationError(format!(
            "EndpointName: the endpoint {} is {}; inference components can be created on an endpoint that is \
             Creating or InService",
            c.endpoint,
            rt.record.status().as_str()
        ))));
    }
    let variant = hosting_variant(&rt, c.variant.as_deref())?;
    // The fit check: a copy that fits no type of the variant is refused here, naming the numbers.
    component::needs(&c.version, &variant.pools)?;
    let t = app.clock.now();
    let arn = app.arn("inference-component", &c.name);
    let rec = ComponentRecord {
        name: c.name.clone(),
        arn: arn.clone(),
        endpoint_name: rt.record.name.clone(),
        endpoint_arn: rt.record.arn.clone(),
        variant_name: variant.name.clone(),
        status: ComponentStatus::Creating,
        failure_reason: None,
        creation_time: t,
        last_modified_time: t,
        current: c.version,
        previous: None,
        desired_copies: c.copies,
        last_version: 1,
        update_started: None,
        deployment_config: None,
    };
    if !app
        .store
        .insert_tagged(Kind::InferenceComponent, &c.name, t, &rec, &arn, &c.tags)?
    {
        return Err(ControlError::AlreadyExists {
            kind: ResourceKind::InferenceComponent,
            arn,
        });
    }
    app.event(component_event(
        app,
        &rec,
        "ComponentCreated",
        format!(
            "inference component {} created on variant {} with {} cop{} wanted",
            rec.name,
            rec.variant_name,
            rec.desired_copies,
            if rec.desired_copies == 1 { "y" } else { "ies" }
        ),
    ));
    rt.components.insert(c.name, rec);
    drop(rt);
    h.notify.notify_one();
    Ok(Outcome::Arn(arn))
}

/// Runs `f` on the component `name` under its endpoint's lock, persists it, wakes the
/// controller.
async fn change<F>(app: &Arc<App>, name: &str, f: F) -> Result<Outcome, ControlError>
where
    F: FnOnce(
        &mut ComponentRecord,
        Result<crate::core::model::VariantSpec, ControlError>,
        Timestamp,
    ) -> Result<(), ControlError>,
{
    let rec = component(app, name)?;
    let h = app.endpoint(&rec.endpoint_name).ok_or_else(|| not_found(app, name))?;
    let mut rt = h.state.lock().await;
    let variant = hosting_variant(&rt, Some(&rec.variant_name));
    let Some(cur) = rt.components.get(name) else {
        return Err(not_found(app, name));
    };
    let mut next = cur.clone();
    f(&mut next, variant, app.clock.now())?;
    app.store
        .put(Kind::InferenceComponent, name, next.creation_time, &next)?;
    let arn = next.arn.clone();
    rt.components.insert(name.to_string(), next);
    drop(rt);
    h.notify.notify_one();
    Ok(Outcome::Arn(arn))
}

fn refuse_unless_settled(rec: &ComponentRecord, what: &str) -> Result<(), ControlError> {
    match rec.status {
        // The copy count may change during creation and during an update (autoscaling goes on).
        ComponentStatus::InService | ComponentStatus::Creating | ComponentStatus::Updating if what == "copies" => {
            Ok(())
        }
        ComponentStatus::InService => Ok(()),
        s => Err(ControlError::Invalid(ValidationError(format!(
            "Inference component {} is {}; it can be updated when it is InService",
            rec.name,
            s.as_str()
        )))),
    }
}

/// `UpdateInferenceComponent`.
pub(super) async fn update(app: &Arc<App>, mut u: UpdateComponent) -> Result<Outcome, ControlError> {
    if let Some(v) = u.version.as_mut() {
        snapshot_models(app, v)?;
    }
    change(app, &u.name.clone(), move |rec, variant, t| {
        refuse_unless_settled(rec, if u.version.is_some() { "spec" } else { "copies" })?;
        if let Some(mut v) = u.version {
            component::needs(&v, &variant?.pools)?;
            let same = v.plural == rec.current.plural && v.specs == rec.current.specs;
            if !same {
                // Versions are never reused, so the copies of a version that rolled back are
                // never mistaken for a later one's.
                v.version = rec.last_version.max(rec.current.version) + 1;
                rec.last_version = v.version;
                rec.previous = Some(std::mem::replace(&mut rec.current, v));
                rec.status = ComponentStatus::Updating;
                rec.update_started = Some(t);
                rec.failure_reason = None;
            }
        }
        if let Some(n) = u.copies {
            rec.desired_copies = n;
        }
        if u.deployment_config.is_some() {
            rec.deployment_config = u.deployment_config;
        }
        rec.last_modified_time = t;
        Ok(())
    })
    .await
}

/// `SetComponentCopies`: a new desired copy count (`UpdateInferenceComponentRuntimeConfig`,
/// Application Auto Scaling).
pub(super) async fn set_copies(app: &Arc<App>, name: &str, copies: u32) -> Result<Outcome, ControlError> {
    change(app, name, move |rec, _variant, t| {
        refuse_unless_settled(rec, "copies")?;
        rec.desired_copies = copies;
        rec.last_modified_time = t;
        Ok(())
    })
    .await
}

/// `DeleteInferenceComponent`: its copies stop, then the record goes.
pub(super) async fn delete(app: &Arc<App>, name: &str) -> Result<Outcome, ControlError> {
    change(app, name, |rec, _variant, t| {
        if rec.status == ComponentStatus::Deleting {
            return Ok(());
        }
        rec.status = ComponentStatus::Deleting;
        rec.last_modified_time = t;
        Ok(())
    })
    .await
}

/// The copies of a component, with the endpoint's lock held briefly.
pub async fn copies_of(app: &App, rec: &ComponentRecord) -> Vec<CopyRecord> {
    match app.endpoint(&rec.endpoint_name) {
        Some(h) => h
            .state
            .lock()
            .await
            .copies
            .iter()
            .filter(|c| c.component == rec.name)
            .cloned()
            .collect(),
        None => vec![],
    }
}

/// The components placed on an endpoint (DeleteEndpoint refuses while there are any).
pub fn on_endpoint(rt: &EndpointRuntime) -> Vec<String> {
    rt.components.keys().cloned().collect()
}

fn new_copy_id() -> String {
    format!("c-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
}

fn component_event(app: &App, rec: &ComponentRecord, kind: &str, message: String) -> Event {
    Event {
        time: app.clock.now(),
        endpoint_name: rec.endpoint_name.clone(),
        variant_name: Some(rec.variant_name.clone()),
        kind: kind.into(),
        instance_type: None,
        priority: None,
        instance_id: None,
        result: Some(rec.name.clone()),
        message,
    }
}

fn copy_event(app: &App, c: &CopyRecord, kind: &str, message: String) -> Event {
    Event {
        time: app.clock.now(),
        endpoint_name: c.endpoint_name.clone(),
        variant_name: Some(c.variant_name.clone()),
        kind: kind.into(),
        instance_type: Some(c.instance_type.clone()),
        priority: Some(c.priority),
        instance_id: Some(c.copy_id.clone()),
        result: Some(c.component.clone()),
        message,
    }
}

fn persist_copy(app: &App, c: &CopyRecord) {
    if let Err(err) = app.store.put(Kind::ComponentCopy, &c.copy_id, c.placed_at, c) {
        tracing::error!(%err, copy = %c.copy_id, "cannot persist a copy");
    }
}

fn forget_copy(app: &App, id: &str) {
    if let Err(err) = app.store.delete(Kind::ComponentCopy, id, "") {
        tracing::error!(%err, copy = %id, "cannot forget a copy");
    }
}

fn persist_component(app: &App, rec: &ComponentRecord) {
    if let Err(err) = app
        .store
        .put(Kind::InferenceComponent, &rec.name, rec.creation_time, rec)
    {
        tracing::error!(%err, component = %rec.name, "cannot persist an inference component");
    }
}

/// A copy's health, as one check saw it.
struct Observed {
    copy_id: String,
    live: Liveness,
    ok: Option<bool>,
}

/// Checks every launching and serving copy: process alive, `/ping` answering.
async fn observe(app: &Arc<App>, h: &EndpointHandle) {
    let snapshot: Vec<CopyRecord> = {
        let rt = h.state.lock().await;
        rt.copies
            .iter()
            .filter(|c| matches!(c.state, CopyPhase::Launching | CopyPhase::InService))
            .cloned()
            .collect()
    };
    if snapshot.is_empty() {
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for c in snapshot {
        let app = app.clone();
        set.spawn(async move {
            let (live, ok) = super::controller::check(&app, &c.copy_id, &c.handle, &c.address).await;
            Observed {
                copy_id: c.copy_id,
                live,
                ok,
            }
        });
    }
    let mut results = vec![];
    while let Some(Ok(r)) = set.join_next().await {
        results.push(r);
    }
    let t = app.clock.now();
    let mut rt = h.state.lock().await;
    let default_startup = |rt: &EndpointRuntime, variant: &str| {
        rt.record
            .active
            .variants
            .iter()
            .find(|v| v.spec.name == variant)
            .map_or(crate::core::model::defaults::STARTUP_HEALTH_TIMEOUT_S, |v| {
                v.spec.startup_health_timeout_s
            })
    };
    for o in results {
        let Some(idx) = rt.copies.iter().position(|c| c.copy_id == o.copy_id) else {
            continue;
        };
        let c = rt.copies[idx].clone();
        let Some(ok) = o.ok.or((c.state == CopyPhase::Launching).then_some(false)) else {
            continue;
        };
        let window = rt
            .components
            .get(&c.component)
            .and_then(|rec| {
                let v = if rec.current.version == c.version {
                    &rec.current
                } else {
                    rec.previous.as_ref()?
                };
                resolve(rec, v, &c.instance_type, default_startup(&rt, &c.variant_name))
            })
            .map_or(f64::from(crate::core::model::defaults::STARTUP_HEALTH_TIMEOUT_S), |r| {
                r.startup_s
            });
        let window = app
            .cfg
            .provisioning
            .health_check_timeout_override_seconds
            .map_or(window, |s| s as f64);
        let failure = match (c.state, &o.live, ok) {
            (CopyPhase::Launching, _, true) => {
                rt.copies[idx].state = CopyPhase::InService;
                rt.copy_failures.remove(&c.component);
                app.event(copy_event(
                    app,
                    &c,
                    "CopyInService",
                    format!(
                        "copy {} of {} on {} ({}) passed the /ping health check {:.1}s after placement",
                        c.copy_id,
                        c.component,
                        c.host_instance_id,
                        c.instance_type,
                        t - c.placed_at
                    ),
                ));
                persist_copy(app, &rt.copies[idx]);
                None
            }
            (CopyPhase::Launching, Liveness::Exited(status), _) => Some(format!(
                "the copy's container {status} before passing the ping health check"
            )),
            (CopyPhase::Launching, _, false) => (t - c.placed_at > window)
                .then(|| format!("the copy did not pass the ping health check within {window:.0} seconds")),
            (CopyPhase::InService, Liveness::Exited(status), _) => {
                rt.copies[idx].state = CopyPhase::Terminating;
                app.event(copy_event(
                    app,
                    &c,
                    "CopyExited",
                    format!(
                        "copy {} of {}: the container {status}; replacing it",
                        c.copy_id, c.component
                    ),
                ));
                None
            }
            (CopyPhase::InService, _, false) => {
                rt.copies[idx].failed_pings += 1;
                if rt.copies[idx].failed_pings >= MAX_FAILED_PINGS {
                    rt.copies[idx].state = CopyPhase::Terminating;
                    app.event(copy_event(
                        app,
                        &c,
                        "CopyUnhealthy",
                        format!(
                            "copy {} of {}: {MAX_FAILED_PINGS} consecutive /ping failures; replacing it",
                            c.copy_id, c.component
                        ),
                    ));
                }
                None
            }
            (CopyPhase::InService, _, true) => {
                rt.copies[idx].failed_pings = 0;
                None
            }
            _ => None,
        };
        if let Some(detail) = failure {
            rt.copies[idx].state = CopyPhase::Terminating;
            app.event(copy_event(
                app,
                &c,
                "CopyFailed",
                format!(
                    "copy {} of {} on {} ({}): {detail}; see the copy's log stream {}/{}",
                    c.copy_id, c.component, c.host_instance_id, c.instance_type, c.variant_name, c.copy_id
                ),
            ));
            note_failure(app, &mut rt, &c.component, c.version, detail, t);
        }
    }
}

/// A copy of `component`'s version `version` failed to start or to pass its health check.
fn note_failure(app: &App, rt: &mut EndpointRuntime, component: &str, version: u32, detail: String, t: Timestamp) {
    let Some(rec) = rt.components.get(component).cloned() else {
        return;
    };
    if rec.current.version != version {
        return;
    }
    let n = {
        let e = rt.copy_failures.entry(component.to_string()).or_insert((0, t));
        e.0 += 1;
        e.1 = t;
        e.0
    };
    if n < MAX_COPY_FAILURES {
        return;
    }
    let mut next = rec.clone();
    match rec.status {
        ComponentStatus::Creating => {
            next.status = ComponentStatus::Failed;
            next.failure_reason = Some(format!(
                "{MAX_COPY_FAILURES} consecutive copies of inference component {} failed: {detail}",
                rec.name
            ));
            app.event(component_event(
                app,
                &next,
                "ComponentFailed",
                next.failure_reason.clone().unwrap_or_default(),
            ));
        }
        ComponentStatus::Updating => {
            let why =
                format!("{MAX_COPY_FAILURES} consecutive copies of specification version {version} failed: {detail}");
            roll_back(app, &mut next, &why);
        }
        _ => return,
    }
    rt.copy_failures.remove(component);
    next.last_modified_time = t;
    persist_component(app, &next);
    rt.components.insert(component.to_string(), next);
}

/// Ends an update by restoring the previous specification (its copies still serving are kept;
/// the new version's are removed by the next plan).
fn roll_back(app: &App, next: &mut ComponentRecord, why: &str) {
    if let Some(prev) = next.previous.take() {
        next.current = prev;
        next.status = ComponentStatus::InService;
        next.update_started = None;
        next.failure_reason = Some(format!("Update rolled back: {why}"));
        app.event(component_event(
            app,
            next,
            "ComponentRolledBack",
            next.failure_reason.clone().unwrap_or_default(),
        ));
    }
}

/// How long an update may take (`RollingUpdatePolicy.MaximumExecutionTimeoutInSeconds`,
/// default an hour) before it rolls back.
fn update_deadline_s(rec: &ComponentRecord) -> f64 {
    rec.deployment_config
        .as_ref()
        .and_then(|d| d.get("RollingUpdatePolicy"))
        .and_then(|r| r.get("MaximumExecutionTimeoutInSeconds"))
        .and_then(Value::as_f64)
        .unwrap_or(3600.0)
}

/// The rolling batch of a component's update (`DeploymentConfig.RollingUpdatePolicy
/// .MaximumBatchSize`): `0` (no limit) without one.
fn batch_of(rec: &ComponentRecord) -> u32 {
    let Some(size) = rec
        .deployment_config
        .as_ref()
        .and_then(|d| d.get("RollingUpdatePolicy"))
        .and_then(|r| r.get("MaximumBatchSize"))
    else {
        return 0;
    };
    let value = size.get("Value").and_then(Value::as_u64).unwrap_or(1);
    let copies = u64::from(rec.desired_copies.max(1));
    let batch = match size.get("Type").and_then(Value::as_str) {
        Some("CAPACITY_PERCENT") => copies.saturating_mul(value).div_ceil(100),
        _ => value,
    };
    // At least one copy at a time, at most all of them.
    batch.clamp(1, copies) as u32
}

/// A placement decided under the lock, started outside it.
struct Start {
    copy: CopyRecord,
    request: CopyLaunchRequest,
}

/// One reconciliation of an endpoint's components: health, placement, managed instance scaling,
/// then the copies started and stopped outside the lock. Returns whether anything changed.
pub(super) async fn reconcile(app: &Arc<App>, h: &EndpointHandle) -> bool {
    {
        let rt = h.state.lock().await;
        if rt.components.is_empty() && rt.copies.is_empty() {
            return false;
        }
    }
    observe(app, h).await;
    let (starts, stops) = {
        let mut rt = h.state.lock().await;
        let before = rt.record.clone();
        let plan = plan_locked(app, &mut rt);
        if rt.record != before {
            super::controller::persist(app, &mut rt);
        }
        plan
    };
    let changed = !starts.is_empty() || !stops.is_empty();
    stop_copies(app, h, stops).await;
    start_copies(app, h, starts).await;
    changed
}

/// Stops copies (they left the routes when marked): drain, terminate, forget.
async fn stop_copies(app: &Arc<App>, h: &EndpointHandle, stops: Vec<CopyRecord>) {
    if stops.is_empty() {
        return;
    }
    let grace = Duration::from_secs(app.cfg.provisioning.termination_grace_seconds);
    let mut set = tokio::task::JoinSet::new();
    for c in stops {
        let app = app.clone();
        set.spawn(async move {
            if !c.address.is_empty() {
                app.dataplane.routes.wait_drained(&c.copy_id, grace).await;
            }
            if !c.handle.is_null() {
                app.provider.terminate(&c.copy_id, &c.handle, grace).await;
            }
            c
        });
    }
    while let Some(Ok(c)) = set.join_next().await {
        forget_copy(app, &c.copy_id);
        let mut rt = h.state.lock().await;
        rt.copies.retain(|x| x.copy_id != c.copy_id);
        app.event(copy_event(
            app,
            &c,
            "CopyStopped",
            format!(
                "copy {} of {} on {} ({}) stopped",
                c.copy_id, c.component, c.host_instance_id, c.instance_type
            ),
        ));
    }
}

/// Starts placed copies, concurrently, and records what became of each.
async fn start_copies(app: &Arc<App>, h: &EndpointHandle, starts: Vec<Start>) {
    if starts.is_empty() {
        return;
    }
    let mut set = tokio::task::JoinSet::new();
    for s in starts {
        let app = app.clone();
        set.spawn(async move {
            let budget = s.request.model_data.timeout + Duration::from_secs(60);
            let result = tokio::time::timeout(budget, app.provider.launch_copy(s.request))
                .await
                .unwrap_or_else(|_| Err(LaunchError::Failed("the copy did not start in time".into())));
            (s.copy, result)
        });
    }
    while let Some(Ok((c, result))) = set.join_next().await {
        let t = app.clock.now();
        let mut rt = h.state.lock().await;
        let Some(idx) = rt.copies.iter().position(|x| x.copy_id == c.copy_id) else {
            // Forgotten while it started (a graceful stop): it must not run on.
            if let Ok(launched) = result {
                let grace = Duration::from_secs(app.cfg.provisioning.termination_grace_seconds);
                drop(rt);
                app.provider.terminate(&c.copy_id, &launched.handle, grace).await;
            }
            continue;
        };
        match result {
            Ok(launched) => {
                let cur = &mut rt.copies[idx];
                cur.handle = launched.handle;
                cur.address = launched.address;
                if cur.state == CopyPhase::Placing {
                    cur.state = CopyPhase::Launching;
                }
                let cur = cur.clone();
                persist_copy(app, &cur);
                app.event(copy_event(
                    app,
                    &cur,
                    "CopyPlaced",
                    format!(
                        "copy {} of {} (version {}) started on {} ({}, priority {}) with accelerators {:?}, {} cores, {} MiB",
                        cur.copy_id,
                        cur.component,
                        cur.version,
                        cur.host_instance_id,
                        cur.instance_type,
                        cur.priority,
                        cur.accelerators,
                        cur.cpus,
                        cur.memory_mb
                    ),
                ));
            }
            Err(e) => {
                rt.copies.remove(idx);
                forget_copy(app, &c.copy_id);
                app.event(copy_event(
                    app,
                    &c,
                    "CopyFailed",
                    format!(
                        "copy {} of {} could not start on {}: {e}",
                        c.copy_id, c.component, c.host_instance_id
                    ),
                ));
                note_failure(app, &mut rt, &c.component, c.version, e.to_string(), t);
            }
        }
    }
}

/// Under the endpoint lock: decides, per components-hosting variant, what to start and stop,
/// adjusts the instance count (managed instance scaling), and settles components' statuses.
fn plan_locked(app: &App, rt: &mut EndpointRuntime) -> (Vec<Start>, Vec<CopyRecord>) {
    let t = app.clock.now();
    let mut starts = vec![];
    let deleting = rt.record.status() == EndpointStatus::Deleting || rt.deleted;
    let dep = rt.record.active.clone();
    // Hosts of the active deployment (a components endpoint is never updated in place: its
    // fleet is the active deployment's).
    let live_hosts: BTreeMap<String, crate::core::endpoint::InstanceRecord> = rt
        .instances
        .iter()
        .filter(|i| i.deployment_id == dep.id && i.state != InstancePhase::Terminating)
        .map(|i| (i.instance_id.clone(), i.clone()))
        .collect();
    // Copies whose host went away, and every copy of a deleted endpoint, stop.
    for c in rt.copies.iter_mut() {
        if c.state != CopyPhase::Terminating && (deleting || !live_hosts.contains_key(&c.host_instance_id)) {
            c.state = CopyPhase::Terminating;
        }
    }
    if !deleting {
        for v in dep.variants.iter().filter(|v| v.spec.hosts_components) {
            plan_variant(app, rt, v, &live_hosts, t, &mut starts);
        }
    }
    settle(app, rt, t);
    let stops: Vec<CopyRecord> = rt
        .copies
        .iter()
        .filter(|c| c.state == CopyPhase::Terminating)
        .cloned()
        .collect();
    // Marked copies leave the routes now; `stop_copies` forgets them once stopped.
    for c in &stops {
        persist_copy(app, c);
    }
    (starts, stops)
}

fn plan_variant(
    app: &App,
    rt: &mut EndpointRuntime,
    v: &crate::core::endpoint::DeployedVariant,
    live_hosts: &BTreeMap<String, crate::core::endpoint::InstanceRecord>,
    t: Timestamp,
    starts: &mut Vec<Start>,
) {
    let hosts: Vec<HostView> = live_hosts
        .values()
        .filter(|i| i.variant_name == v.spec.name)
        .filter_map(|i| {
            Some(HostView {
                instance_id: i.instance_id.clone(),
                instance_type: i.instance_type.clone(),
                priority: i.priority,
                serving: i.state == InstancePhase::InService,
                launched_at: i.launched_at,
                capacity: Share::of_type(catalog::lookup(&i.instance_type)?),
            })
        })
        .collect();
    // Every copy, stopping ones included: a copy keeps its devices until it is gone.
    let copies: Vec<CopyRecord> = rt
        .copies
        .iter()
        .filter(|c| c.variant_name == v.spec.name)
        .cloned()
        .collect();
    let mut demands = vec![];
    // After a failed copy, placement of that component pauses briefly (no tight crash loop).
    // Its demand stays whole, so managed instance scaling neither releases the instance the
    // failed copy was on nor asks for another meanwhile.
    let mut paused = std::collections::BTreeSet::new();
    for rec in rt.components.values().filter(|r| r.variant_name == v.spec.name) {
        if matches!(rec.status, ComponentStatus::Deleting | ComponentStatus::Failed) {
            continue;
        }
        let Ok(needs) = component::needs(&rec.current, &v.spec.pools) else {
            continue;
        };
        if rt
            .copy_failures
            .get(&rec.name)
            .is_some_and(|(_, at)| t - at < FAILURE_PAUSE_S)
        {
            paused.insert(rec.name.clone());
        }
        demands.push(Demand {
            component: rec.name.clone(),
            desired: rec.desired_copies,
            version: rec.current.version,
            batch: if rec.status == ComponentStatus::Updating {
                batch_of(rec)
            } else {
                0
            },
            needs,
        });
    }
    let plan = component::plan(&hosts, &copies, &demands, &v.spec.pools);
    for id in &plan.remove {
        if let Some(c) = rt
            .copies
            .iter_mut()
            .find(|c| &c.copy_id == id && c.state != CopyPhase::Terminating)
        {
            c.state = CopyPhase::Terminating;
            let c = c.clone();
            app.event(copy_event(
                app,
                &c,
                "CopyRemoved",
                format!(
                    "copy {} of {} on {} ({}, priority {}) is no longer wanted",
                    c.copy_id, c.component, c.host_instance_id, c.instance_type, c.priority
                ),
            ));
        }
    }
    for (comp, n, why) in &plan.unplaceable {
        let key = format!("unplaceable|{comp}");
        let msg = format!(
            "{n} cop{} of {comp} cannot be placed: {why}",
            if *n == 1 { "y" } else { "ies" }
        );
        if rt.reported.get(&key) != Some(&msg) {
            rt.reported.insert(key, msg.clone());
            if let Some(rec) = rt.components.get(comp) {
                app.event(component_event(app, rec, "CopiesUnplaceable", msg));
            }
        }
    }
    // Components whose copies still wait for room (what a new instance must be able to hold).
    let waiting: Vec<&Demand> = demands
        .iter()
        .filter(|d| {
            let kept = copies
                .iter()
                .filter(|c| {
                    c.component == d.component
                        && c.version == d.version
                        && c.state != CopyPhase::Terminating
                        && !plan.remove.contains(&c.copy_id)
                })
                .count();
            let placed = plan.place.iter().filter(|p| p.component == d.component).count();
            ((kept + placed) as u32) < d.desired
        })
        .collect();
    let waiting_types: std::collections::BTreeSet<String> =
        waiting.iter().flat_map(|d| d.needs.keys().cloned()).collect();
    for p in plan.place.iter().filter(|p| !paused.contains(&p.component)).cloned() {
        let Some(host) = live_hosts.get(&p.host_instance_id) else {
            continue;
        };
        let Some(rec) = rt.components.get(&p.component) else {
            continue;
        };
        let v_spec = if rec.current.version == p.version {
            &rec.current
        } else if let Some(prev) = rec.previous.as_ref().filter(|x| x.version == p.version) {
            prev
        } else {
            continue;
        };
        let Some(resolved) = resolve(rec, v_spec, &p.instance_type, v.spec.startup_health_timeout_s) else {
            continue;
        };
        let Some(type_spec) = catalog::lookup(&p.instance_type) else {
            continue;
        };
        let copy = CopyRecord {
            copy_id: new_copy_id(),
            component: p.component.clone(),
            endpoint_name: rt.record.name.clone(),
            variant_name: v.spec.name.clone(),
            host_instance_id: p.host_instance_id.clone(),
            instance_type: p.instance_type.clone(),
            priority: host.priority,
            version: p.version,
            accelerators: p.accelerators.clone(),
            cpus: p.cpus,
            memory_mb: p.memory_mb,
            state: CopyPhase::Placing,
            placed_at: t,
            handle: Value::Null,
            address: String::new(),
            failed_pings: 0,
        };
        // Durable before the process exists: a crash in between leaves a record, which the next
        // start resolves (its process, if any, is stopped as untracked).
        persist_copy(app, &copy);
        rt.copies.push(copy.clone());
        starts.push(Start {
            request: CopyLaunchRequest {
                copy_id: copy.copy_id.clone(),
                endpoint_name: copy.endpoint_name.clone(),
                variant_name: copy.variant_name.clone(),
                component: copy.component.clone(),
                host_instance_id: host.instance_id.clone(),
                host_handle: host.handle.clone(),
                instance_type: type_spec,
                accelerators: copy.accelerators.clone(),
                cpus: copy.cpus,
                memory_mb: copy.memory_mb,
                model_name: resolved.model_name,
                container: resolved.container,
                model_data: ModelDataLimits {
                    timeout: Duration::from_secs(resolved.model_data_s),
                    max_bytes: app.cfg.provisioning.model_data_max_bytes,
                    max_entries: app.cfg.provisioning.model_data_max_entries,
                },
            },
            copy,
        });
    }
    managed_scaling(app, rt, v, &hosts, &plan, waiting_types, t);
}

/// Managed instance scaling of one components-hosting variant: its instance count follows what
/// the copies need (`PlacementPlan::instances_needed`), within `[MinInstanceCount,
/// MaxInstanceCount]`.
///
/// - Instances that hold no copy and get none (`plan.idle`, fallback types first) cannot hold
///   any copy that waits (placement would have used them), so they count only towards
///   `MinInstanceCount`; the others are released, but only while the endpoint is `InService`.
/// - New instances are asked for when copies wait, and only of the pool types a copy that waits
///   fits (`EndpointRuntime::launch_types`, which the fleet planner honours as it honours a
///   type backing off), so a fallback type that cannot hold them is never launched for them.
fn managed_scaling(
    app: &App,
    rt: &mut EndpointRuntime,
    v: &crate::core::endpoint::DeployedVariant,
    hosts: &[HostView],
    plan: &component::PlacementPlan,
    waiting_types: std::collections::BTreeSet<String>,
    t: Timestamp,
) {
    let Some(ms) = v.spec.managed_scaling else {
        rt.launch_types.remove(&v.spec.name);
        return;
    };
    let live = hosts.len() as u32;
    let idle = plan.idle.len() as u32;
    let useful = live - idle;
    // New instances the waiting copies need, up to MaxInstanceCount.
    let new = plan
        .instances_needed
        .saturating_sub(useful)
        .min(ms.max.saturating_sub(useful));
    // Idle instances kept: only what MinInstanceCount asks for beyond the others.
    let keep_idle = ms.min.saturating_sub(useful + new).min(idle);
    let extra_for_min = ms.min.saturating_sub(useful + new + keep_idle);
    let in_service = rt.record.status() == EndpointStatus::InService;
    let release: Vec<String> = if in_service {
        plan.idle.iter().take((idle - keep_idle) as usize).cloned().collect()
    } else {
        vec![]
    };
    let target = live - release.len() as u32 + new + extra_for_min;
    let from = rt
        .record
        .active
        .variants
        .iter()
        .find(|x| x.spec.name == v.spec.name)
        .map_or(target, |x| x.desired_count);
    // While the endpoint is being created its initial instances are not taken back.
    let target = if in_service { target } else { target.max(from) };
    if new > 0 && !waiting_types.is_empty() {
        rt.launch_types.insert(v.spec.name.clone(), waiting_types);
    } else {
        rt.launch_types.remove(&v.spec.name);
    }
    let name = rt.record.name.clone();
    let Some(vm) = rt
        .record
        .active
        .variants
        .iter_mut()
        .find(|x| x.spec.name == v.spec.name)
    else {
        return;
    };
    // A shortfall that stalled provisioning (every pool short until the deadline) is tried
    // again once a pool type's insufficient-capacity back-off has run out: copies still
    // wait, and capacity may have come back. (A crash loop stays stalled.)
    if new > 0
        && vm.stalled.is_some()
        && vm.health_failures == 0
        && vm
            .spec
            .pools
            .iter()
            .any(|p| app.ice().blocked_until(&p.instance_type, t).is_none())
    {
        vm.stalled = None;
    }
    if target == from && release.is_empty() {
        return;
    }
    vm.desired_count = target;
    if target > from {
        vm.stalled = None;
    }
    let scaling_event = |kind: &str, message: String| Event {
        time: t,
        endpoint_name: name.clone(),
        variant_name: Some(v.spec.name.clone()),
        kind: kind.into(),
        instance_type: None,
        priority: None,
        instance_id: None,
        result: Some("ManagedInstanceScaling".into()),
        message,
    };
    if !release.is_empty() {
        // Durable before the fleet planner sees the lower count: after a crash, the instances
        // that go are these idle ones, never one that holds copies.
        for i in rt.instances.iter_mut().filter(|i| release.contains(&i.instance_id)) {
            i.state = InstancePhase::Terminating;
            if let Err(err) = app.store.put_instance(i) {
                tracing::error!(%err, "cannot persist instance state");
            }
        }
        app.event(scaling_event(
            "ManagedScaleIn",
            format!(
                "managed instance scaling: releasing idle instance{} {} (fallback types first; min {}); desired instance count {from} -> {target}",
                if release.len() == 1 { "" } else { "s" },
                release.join(", "),
                ms.min
            ),
        ));
    }
    if target > from {
        app.event(scaling_event(
            "ManagedScaleOut",
            format!(
                "managed instance scaling: {} new instance{} needed for the copies that wait (max {}; types that fit them: {}); desired instance count {from} -> {target}",
                new + extra_for_min,
                if new + extra_for_min == 1 { "" } else { "s" },
                ms.max,
                rt.launch_types.get(&v.spec.name).map(|s| s.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_else(|| "any".into())
            ),
        ));
    }
}

/// Moves components' statuses: Creating/Updating → InService once their copies are in service,
/// a Deleting one away once its copies are gone.
fn settle(app: &App, rt: &mut EndpointRuntime, t: Timestamp) {
    let names: Vec<String> = rt.components.keys().cloned().collect();
    for name in names {
        let rec = rt.components[&name].clone();
        let mine = rt.copies.iter().filter(|c| c.component == name);
        let serving_current = mine
            .clone()
            .filter(|c| c.version == rec.current.version && c.state == CopyPhase::InService)
            .count() as u32;
        let others = mine.clone().filter(|c| c.version != rec.current.version).count();
        let any = mine.count();
        let mut next = rec.clone();
        match rec.status {
            ComponentStatus::Creating if serving_current >= rec.desired_copies => {
                next.status = ComponentStatus::InService;
            }
            ComponentStatus::Updating if others == 0 && serving_current >= rec.desired_copies => {
                next.status = ComponentStatus::InService;
                next.previous = None;
                next.update_started = None;
            }
            ComponentStatus::Updating if rec.update_started.is_some_and(|s| t - s > update_deadline_s(&rec)) => {
                // Copies of the new version could not all be placed or pass in time (a full
                // fleet, capacity that never came): the previous version serves on.
                let why = format!(
                    "the update did not finish within MaximumExecutionTimeoutInSeconds ({:.0} s): {serving_current} of {} copies of version {} in service",
                    update_deadline_s(&rec),
                    rec.desired_copies,
                    rec.current.version
                );
                roll_back(app, &mut next, &why);
                next.last_modified_time = t;
                persist_component(app, &next);
                rt.components.insert(name, next);
                continue;
            }
            ComponentStatus::Deleting if any == 0 => {
                if let Err(err) = app.store.delete(Kind::InferenceComponent, &name, &rec.arn) {
                    tracing::error!(%err, component = %name, "cannot delete an inference component");
                    continue;
                }
                rt.components.remove(&name);
                rt.copy_failures.remove(&name);
                app.metrics.forget_component(&rec.endpoint_name, &name);
                app.event(component_event(
                    app,
                    &rec,
                    "ComponentDeleted",
                    format!("every copy of {name} stopped; inference component deleted"),
                ));
                continue;
            }
            _ => continue,
        }
        next.last_modified_time = t;
        app.event(component_event(
            app,
            &next,
            "ComponentInService",
            format!(
                "inference component {name} is InService with {serving_current} cop{} of version {}",
                if serving_current == 1 { "y" } else { "ies" },
                next.current.version
            ),
        ));
        persist_component(app, &next);
        rt.components.insert(name, next);
    }
}

/// The serving copies of an endpoint's components, for the routes.
pub fn routes(rt: &EndpointRuntime) -> BTreeMap<String, crate::dataplane::routes::ComponentRoutes> {
    use crate::dataplane::routes::{ComponentRoutes, RouteInstance};
    rt.components
        .values()
        .filter(|r| r.status != ComponentStatus::Deleting)
        .map(|r| {
            let strategy = rt
                .record
                .active
                .variants
                .iter()
                .find(|v| v.spec.name == r.variant_name)
                .map(|v| v.spec.routing)
                .unwrap_or_default();
            let copies = rt
                .copies
                .iter()
                .filter(|c| c.component == r.name && c.state == CopyPhase::InService)
                .map(|c| {
                    Arc::new(RouteInstance::new(
                        c.copy_id.clone(),
                        c.address.clone(),
                        c.instance_type.clone(),
                    ))
                })
                .collect();
            (
                r.name.clone(),
                ComponentRoutes {
                    name: r.name.clone(),
                    variant: r.variant_name.clone(),
                    strategy,
                    copies,
                },
            )
        })
        .collect()
}

/// What `DescribeInferenceComponent` shows of the copies: in-service copies in all, and per
/// instance type.
pub fn placement_status(copies: &[CopyRecord]) -> (u32, Vec<(String, u32)>) {
    let mut per_type: BTreeMap<String, u32> = BTreeMap::new();
    let mut n = 0;
    for c in copies.iter().filter(|c| c.state == CopyPhase::InService) {
        n += 1;
        *per_type.entry(c.instance_type.clone()).or_default() += 1;
    }
    (n, per_type.into_iter().collect())
}
