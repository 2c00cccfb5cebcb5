//! Inference components (ICs) on pooled endpoints: the wire shapes of
//! `CreateInferenceComponent` and `DescribeInferenceComponent`, the durable records of a
//! component and of each of its copies, and **placement**: which copies go on which instance of
//! the endpoint's fleet, with which share of its accelerators, cores and memory, and how many
//! instances managed instance scaling needs (docs/inference-components.md).
//!
//! Pure: no IO, no clock; the controller hands in what it observed and executes the plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalog::InstanceTypeSpec;
use super::model::{PoolSpec, Timestamp};
use super::validate::ValidationError;

/// `InferenceComponentComputeResourceRequirements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputeResourceRequirements {
    /// Cores one copy needs (AWS: float, at least 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_cpu_cores_required: Option<f64>,
    /// Accelerator devices one copy needs (AWS: float, at least 1; spillway requires a whole
    /// number, since a device is given whole through `CUDA_VISIBLE_DEVICES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_accelerator_devices_required: Option<f64>,
    /// Memory one copy needs, MiB (required, at least 128).
    pub min_memory_required_in_mb: i64,
    /// The most memory a copy may use, MiB (echoed; at least `MinMemoryRequiredInMb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_required_in_mb: Option<i64>,
    /// Members spillway does not act on (`AcceleratorPartitionType`, MIG partitions): refused at
    /// the edge, so no copy is placed with less than it asked for.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `InferenceComponentContainerSpecification`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ComponentContainer {
    /// The image (`builtin:echo`, an executable path, ... as `PrimaryContainer.Image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Model data, as `ModelDataUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_url: Option<String>,
    /// Environment of the copy's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
}

/// `InferenceComponentStartupParameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StartupParameters {
    /// 60..3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_data_download_timeout_in_seconds: Option<i64>,
    /// 60..3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_startup_health_check_timeout_in_seconds: Option<i64>,
}

/// `InferenceComponentSpecification`, as given (the singular form has no `InstanceType`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ComponentSpecification {
    /// The instance type this entry is for (plural form only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// A model created with `CreateModel` (or `Container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// A container given inline (or `ModelName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ComponentContainer>,
    /// Startup windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_parameters: Option<StartupParameters>,
    /// What one copy needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_resource_requirements: Option<ComputeResourceRequirements>,
    /// Adapter components (refused: spillway does not run adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_inference_component_name: Option<String>,
    /// Members accepted and echoed without acting on them (`DataCacheConfig`, `SchedulingConfig`).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `InferenceComponentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentStatus {
    /// Copies are being placed for the first time.
    Creating,
    /// Serving (copies may still be added or removed).
    InService,
    /// A specification change is rolling out.
    Updating,
    /// Creation failed.
    Failed,
    /// Being deleted.
    Deleting,
}

impl ComponentStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::InService => "InService",
            Self::Updating => "Updating",
            Self::Failed => "Failed",
            Self::Deleting => "Deleting",
        }
    }
}

/// One version of a component's specification: what its copies run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecVersion {
    /// Increases with every `UpdateInferenceComponent` that changes the specification.
    pub version: u32,
    /// Whether it was given as `Specifications` (Describe answers the plural form then).
    pub plural: bool,
    /// The entries as given (one for the singular form).
    pub specs: Vec<ComponentSpecification>,
    /// Snapshot of the models the entries name (`ModelName`), so copies can be placed after
    /// `DeleteModel`: model name → primary container.
    #[serde(default)]
    pub models: BTreeMap<String, super::model::ContainerDefinition>,
}

/// A durable inference component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// The endpoint it is placed on.
    pub endpoint_name: String,
    /// The endpoint's ARN.
    pub endpoint_arn: String,
    /// The variant whose fleet hosts its copies.
    pub variant_name: String,
    /// Status.
    pub status: ComponentStatus,
    /// Why it failed, or why the last update rolled back.
    pub failure_reason: Option<String>,
    /// Created.
    pub creation_time: Timestamp,
    /// Last change.
    pub last_modified_time: Timestamp,
    /// What its copies run now (during an update: the target).
    pub current: SpecVersion,
    /// During a rolling update: the version being replaced, restored on rollback.
    pub previous: Option<SpecVersion>,
    /// `RuntimeConfig.CopyCount`.
    pub desired_copies: u32,
    /// The highest specification version ever issued (versions are never reused).
    #[serde(default)]
    pub last_version: u32,
    /// When the update in flight began (its `MaximumExecutionTimeoutInSeconds` counts from it).
    #[serde(default)]
    pub update_started: Option<Timestamp>,
    /// The update's `DeploymentConfig` as given (echoed as `LastDeploymentConfig`).
    pub deployment_config: Option<Value>,
}

/// Lifecycle of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyPhase {
    /// Recorded, its process being started (written before the launch, so a crash in between
    /// leaves a record that recovery resolves, never an orphan).
    Placing,
    /// Started, `/ping` not yet answered 200.
    Launching,
    /// Passing health checks and receiving its component's traffic.
    InService,
    /// Being drained and stopped.
    Terminating,
}

/// A share of one instance: what a copy is given, or what an instance has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Share {
    /// Accelerator devices.
    pub accelerators: u32,
    /// Cores.
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
}

impl Share {
    /// All of an instance type (spillway keeps nothing back for itself).
    pub fn of_type(spec: &InstanceTypeSpec) -> Self {
        Self {
            accelerators: spec.accelerator_count(),
            cpus: f64::from(spec.vcpus),
            memory_mb: (spec.memory_gib * 1024.0).round() as u64,
        }
    }
}

/// A durable copy record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyRecord {
    /// Copy id (`c-` + 17 hex characters).
    pub copy_id: String,
    /// Its component.
    pub component: String,
    /// The component's endpoint.
    pub endpoint_name: String,
    /// The variant whose instance hosts it.
    pub variant_name: String,
    /// The hosting instance.
    pub host_instance_id: String,
    /// The hosting instance's type.
    pub instance_type: String,
    /// The hosting instance's pool priority.
    pub priority: u8,
    /// The specification version it runs.
    pub version: u32,
    /// Positions (0-based) among the hosting instance's accelerator devices it was given.
    pub accelerators: Vec<u32>,
    /// Cores it was given.
    pub cpus: f64,
    /// Memory it was given, MiB.
    pub memory_mb: u64,
    /// Lifecycle.
    pub state: CopyPhase,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// Provider handle (`Value::Null` while `Placing`).
    pub handle: Value,
    /// `host:port` of its model server (empty while `Placing`).
    pub address: String,
    /// Consecutive failed pings while in service.
    #[serde(default)]
    pub failed_pings: u32,
}

/// A hosting instance as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// Instance id.
    pub instance_id: String,
    /// Type.
    pub instance_type: String,
    /// Pool priority it came from.
    pub priority: u8,
    /// Whether it is in service (copies are placed only on serving instances; launching ones
    /// count as capacity on the way).
    pub serving: bool,
    /// When it was launched.
    pub launched_at: Timestamp,
    /// What it has in all (`Share::of_type`).
    pub capacity: Share,
}

/// What one component wants, as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// Component name.
    pub component: String,
    /// Copies wanted of `version`.
    pub desired: u32,
    /// The version new copies run; copies of other versions are replaced (rolling update).
    pub version: u32,
    /// During a rolling update: at most this many copies of `version` not yet in service at
    /// once (the batch); old copies go only as new ones enter service. `0`: no limit.
    pub batch: u32,
    /// What a copy needs on each instance type it may run on (types without an entry get none).
    pub needs: BTreeMap<String, Share>,
}

/// A copy placement decided (not yet started).
#[derive(Debug, Clone, PartialEq)]
pub struct NewCopy {
    /// Component.
    pub component: String,
    /// Hosting instance.
    pub host_instance_id: String,
    /// Its type.
    pub instance_type: String,
    /// Version it runs.
    pub version: u32,
    /// Device positions on the host.
    pub accelerators: Vec<u32>,
    /// Cores.
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
}

/// What the controller should do next about a variant's copies and fleet size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlacementPlan {
    /// Copies to start now, on serving instances.
    pub place: Vec<NewCopy>,
    /// Copies to stop (scale-in: fallback types first; superseded versions).
    pub remove: Vec<String>,
    /// How many instances the variant needs so that every wanted copy has room (before
    /// managed instance scaling's Min/Max clamp).
    pub instances_needed: u32,
    /// Instances holding no copy and not needed, in the order they should go (fallback types
    /// first, then the most recently launched).
    pub idle: Vec<String>,
    /// Copies that fit no instance there is or could be, per component, with the reason.
    pub unplaceable: Vec<(String, u32, String)>,
}

// ---------------------------------------------------------------------------------------------
// Placement

/// Tolerance when summing fractional cores (`NumberOfCpuCoresRequired` is a float).
const CPU_EPSILON: f64 = 1e-9;

/// The prefix of the ids of hypothetical hosts in the managed-scaling simulation. Never a real
/// instance id (those are `i-…`), never returned to the caller.
const HYPOTHETICAL: &str = "~new-";

/// One host during planning: what it has, what is taken.
#[derive(Debug, Clone)]
struct Slot {
    id: String,
    instance_type: String,
    priority: u8,
    serving: bool,
    launched_at: Timestamp,
    capacity: Share,
    used_accelerators: Vec<bool>,
    used_cpus: f64,
    used_memory_mb: u64,
    /// Copies that hold it now or will (not being removed), plus those planned.
    copies: u32,
}

impl Slot {
    fn new(h: &HostView) -> Self {
        Self {
            id: h.instance_id.clone(),
            instance_type: h.instance_type.clone(),
            priority: h.priority,
            serving: h.serving,
            launched_at: h.launched_at,
            capacity: h.capacity,
            used_accelerators: vec![false; h.capacity.accelerators as usize],
            used_cpus: 0.0,
            used_memory_mb: 0,
            copies: 0,
        }
    }

    /// Takes what a recorded copy holds (positions outside the host's are ignored: the
    /// provider could not have given them).
    fn occupy(&mut self, c: &CopyRecord) {
        self.mark(&c.accelerators, c.cpus, c.memory_mb);
    }

    fn mark(&mut self, accelerators: &[u32], cpus: f64, memory_mb: u64) {
        for &a in accelerators {
            if let Some(u) = self.used_accelerators.get_mut(a as usize) {
                *u = true;
            }
        }
        self.used_cpus += cpus;
        self.used_memory_mb += memory_mb;
    }

    /// Takes exactly these positions and amounts for one more copy (a placement decided on the
    /// fleet as it is now, carried into the fleet as it will be).
    fn hold(&mut self, accelerators: &[u32], cpus: f64, memory_mb: u64) {
        self.mark(accelerators, cpus, memory_mb);
        self.copies += 1;
    }

    fn free_accelerators(&self) -> u32 {
        self.used_accelerators.iter().filter(|u| !**u).count() as u32
    }

    /// Whether `need` fits in what is left.
    fn fits(&self, need: &Share) -> bool {
        self.free_accelerators() >= need.accelerators
            && self.used_cpus + need.cpus <= self.capacity.cpus + CPU_EPSILON
            && self.used_memory_mb + need.memory_mb <= self.capacity.memory_mb
    }

    /// Takes `need`: the lowest free accelerator positions.
    fn take(&mut self, need: &Share) -> Vec<u32> {
        let mut got = Vec::with_capacity(need.accelerators as usize);
        for (i, u) in self.used_accelerators.iter_mut().enumerate() {
            if got.len() == need.accelerators as usize {
                break;
            }
            if !*u {
                *u = true;
                got.push(i as u32);
            }
        }
        self.used_cpus += need.cpus;
        self.used_memory_mb += need.memory_mb;
        self.copies += 1;
        got
    }

    /// Best-fit order among hosts that fit `need`: preferred types first (lower priority
    /// number), then the fullest host (the least left over after placing: accelerator devices,
    /// then memory, then cores), then the instance id.
    fn rank(&self, need: &Share) -> (u8, u32, u64, u64, String) {
        let free_acc = self.free_accelerators() - need.accelerators;
        let free_mem = self.capacity.memory_mb - self.used_memory_mb - need.memory_mb;
        // Milli-cores, so that the key is totally ordered.
        let free_cpu = ((self.capacity.cpus - self.used_cpus - need.cpus).max(0.0) * 1000.0).round() as u64;
        (self.priority, free_acc, free_mem, free_cpu, self.id.clone())
    }
}

/// Picks the host for one copy among `slots`: the best-ranked one whose type the component may
/// run on and that fits its share there. `serving_only` restricts to serving hosts.
fn pick(slots: &[Slot], needs: &BTreeMap<String, Share>, serving_only: bool) -> Option<(usize, Share)> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !serving_only || s.serving)
        .filter_map(|(i, s)| needs.get(&s.instance_type).filter(|n| s.fits(n)).map(|n| (i, *n)))
        .min_by_key(|(i, n)| slots[*i].rank(n))
}

/// Scale-in order of a component's copies: fallback types first (highest priority number),
/// then the host with the fewest copies, then the most recently placed, then the copy id.
fn scale_in_order(victims: &mut [&CopyRecord], copies_per_host: &BTreeMap<&str, u32>) {
    victims.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| {
                let ca = copies_per_host.get(a.host_instance_id.as_str()).copied().unwrap_or(0);
                let cb = copies_per_host.get(b.host_instance_id.as_str()).copied().unwrap_or(0);
                ca.cmp(&cb)
            })
            .then_with(|| b.placed_at.total_cmp(&a.placed_at))
            .then_with(|| a.copy_id.cmp(&b.copy_id))
    });
}

/// "a copy needs 1 accelerator devices, 4 cores and 65536 MiB" — the fit check's wording.
pub fn describe_need(need: &Share) -> String {
    format!(
        "a copy needs {} accelerator devices, {} cores and {} MiB",
        need.accelerators, need.cpus, need.memory_mb
    )
}

/// "ml.g5.12xlarge has 4 accelerator devices, 48 cores and 196608 MiB".
fn describe_type(instance_type: &str, cap: &Share) -> String {
    format!(
        "{instance_type} has {} accelerator devices, {} cores and {} MiB",
        cap.accelerators, cap.cpus, cap.memory_mb
    )
}

/// Whether `need` fits an empty instance with `cap`.
pub fn fits_empty(need: &Share, cap: &Share) -> bool {
    need.accelerators <= cap.accelerators && need.cpus <= cap.cpus + CPU_EPSILON && need.memory_mb <= cap.memory_mb
}

/// What [`plan`] decided plus the managed-scaling simulation behind `instances_needed` (the
/// property tests check it).
#[derive(Debug, Clone, PartialEq, Default)]
struct Detailed {
    plan: PlacementPlan,
    /// Copies the simulation put on launching hosts or on hypothetical new ones (`~new-N`).
    simulated: Vec<NewCopy>,
    /// Hypothetical hosts: (id, type, capacity).
    hypothetical: Vec<(String, String, Share)>,
}

/// Plans one variant's copies. See docs/inference-components.md, "Placement", for the policy.
///
/// `hosts` are the variant's instances (serving or launching; terminating ones are left out by
/// the caller), `copies` every copy recorded on the variant (any phase), `demands` one entry
/// per component of the variant (a component with copies and no demand was deleted), `pools`
/// the variant's pools (for the types managed instance scaling may add).
///
/// The rules, in the order they run:
/// 1. A copy whose host is not among `hosts` is removed (its host is gone). A copy of a
///    component without a demand is removed. Copies already `Terminating` are never listed
///    again, but hold their share of the host until they are gone.
/// 2. Per component: copies of `Demand.version` beyond `desired` are removed in
///    [`scale_in_order`]. Copies of another version are superseded: while any remain, at most
///    `batch` (0: no limit) copies of `version` may be not yet in service at once, and old copies
///    are removed as new ones enter service (old + new in service ≤ desired), those not in
///    service first, then in scale-in order.
/// 3. Missing copies are placed on serving hosts whose type has an entry in `Demand.needs`,
///    components in name order, each copy on the best-ranked host that fits ([`Slot::rank`]):
///    preferred types, then the fullest, then the instance id. Accelerators are whole device
///    positions no other copy on that host holds, the lowest free ones. Nothing is placed into
///    the share of a copy still on the host, even one being removed.
/// 4. Managed instance scaling: the copies still missing (within the batch) are simulated onto
///    the hosts as they will be (removed copies gone): serving and launching hosts first, then
///    hypothetical new hosts of the highest-priority pool type whose empty instance fits the
///    copy. `instances_needed` = hosts that hold or will hold a copy + hypothetical hosts. A copy
///    that fits no pool type is `unplaceable`, with the types and the numbers.
/// 5. `idle`: hosts that hold no copy and get none, fallback types first, then the most recently
///    launched.
pub fn plan(hosts: &[HostView], copies: &[CopyRecord], demands: &[Demand], pools: &[PoolSpec]) -> PlacementPlan {
    plan_detailed(hosts, copies, demands, pools).plan
}

fn plan_detailed(hosts: &[HostView], copies: &[CopyRecord], demands: &[Demand], pools: &[PoolSpec]) -> Detailed {
    // Deterministic whatever the input order.
    let mut hosts: Vec<&HostView> = hosts.iter().collect();
    hosts.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    hosts.dedup_by(|a, b| a.instance_id == b.instance_id);
    let mut copies: Vec<&CopyRecord> = copies.iter().collect();
    copies.sort_by(|a, b| a.copy_id.cmp(&b.copy_id));
    let mut demands: Vec<&Demand> = demands.iter().collect();
    demands.sort_by(|a, b| a.component.cmp(&b.component));
    let by_name: BTreeMap<&str, &Demand> = demands.iter().map(|d| (d.component.as_str(), *d)).collect();
    let host_index: BTreeMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.instance_id.as_str(), i))
        .collect();

    let mut out = PlacementPlan::default();
    let mut removed: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();

    // 1. Copies on vanished hosts, of deleted components.
    for c in &copies {
        if c.state == CopyPhase::Terminating {
            continue;
        }
        if !host_index.contains_key(c.host_instance_id.as_str()) || !by_name.contains_key(c.component.as_str()) {
            removed.insert(c.copy_id.as_str());
        }
    }
    let alive = |c: &&CopyRecord, removed: &std::collections::BTreeSet<&str>| {
        c.state != CopyPhase::Terminating && !removed.contains(c.copy_id.as_str())
    };

    // Copies per host (alive ones), for the scale-in order.
    let mut copies_per_host: BTreeMap<&str, u32> = BTreeMap::new();
    for c in copies.iter().filter(|c| alive(c, &removed)) {
        *copies_per_host.entry(c.host_instance_id.as_str()).or_default() += 1;
    }

    // 2. Scale-in and superseded versions; how many copies each component still needs.
    let mut to_place: Vec<(&Demand, u32)> = Vec::new();
    for d in &demands {
        let mine: Vec<&CopyRecord> = copies
            .iter()
            .copied()
            .filter(|c| c.component == d.component && alive(c, &removed))
            .collect();
        let (mut new, old): (Vec<&CopyRecord>, Vec<&CopyRecord>) =
            mine.into_iter().partition(|c| c.version == d.version);
        let desired = d.desired as usize;
        if new.len() > desired {
            scale_in_order(&mut new, &copies_per_host);
            let extra = new.len() - desired;
            for c in new.drain(..extra) {
                removed.insert(c.copy_id.as_str());
            }
        }
        let in_service = new.iter().filter(|c| c.state == CopyPhase::InService).count();
        let pending = new.len() - in_service;
        let mut missing = (desired - new.len()) as u32;
        if !old.is_empty() {
            // Old copies go as new ones serve: old + new in service <= desired.
            let go = (old.len() + in_service).saturating_sub(desired);
            // Not in service first, then in scale-in order within each group.
            let (mut idle_old, mut serving_old): (Vec<&CopyRecord>, Vec<&CopyRecord>) =
                old.into_iter().partition(|c| c.state != CopyPhase::InService);
            scale_in_order(&mut idle_old, &copies_per_host);
            scale_in_order(&mut serving_old, &copies_per_host);
            for c in idle_old.into_iter().chain(serving_old).take(go) {
                removed.insert(c.copy_id.as_str());
            }
            if d.batch > 0 {
                missing = missing.min(d.batch.saturating_sub(pending as u32));
            }
        }
        if missing > 0 {
            to_place.push((d, missing));
        }
    }
    for c in &copies {
        if removed.contains(c.copy_id.as_str()) {
            out.remove.push(c.copy_id.clone());
        }
    }

    // 3. Placement on serving hosts: every copy still on a host holds its share.
    let mut now_slots: Vec<Slot> = hosts.iter().map(|h| Slot::new(h)).collect();
    for c in &copies {
        if let Some(&i) = host_index.get(c.host_instance_id.as_str()) {
            now_slots[i].occupy(c);
        }
    }
    let mut still: Vec<(&Demand, u32)> = Vec::new();
    for (d, n) in &to_place {
        let mut left = *n;
        while left > 0 {
            let Some((i, need)) = pick(&now_slots, &d.needs, true) else {
                break;
            };
            let accelerators = now_slots[i].take(&need);
            out.place.push(NewCopy {
                component: d.component.clone(),
                host_instance_id: now_slots[i].id.clone(),
                instance_type: now_slots[i].instance_type.clone(),
                version: d.version,
                accelerators,
                cpus: need.cpus,
                memory_mb: need.memory_mb,
            });
            left -= 1;
        }
        if left > 0 {
            still.push((d, left));
        }
    }

    // 4. Managed instance scaling: the fleet as it will be (removed copies gone).
    let mut future: Vec<Slot> = hosts.iter().map(|h| Slot::new(h)).collect();
    for c in copies.iter().filter(|c| alive(c, &removed)) {
        if let Some(&i) = host_index.get(c.host_instance_id.as_str()) {
            future[i].occupy(c);
            future[i].copies += 1;
        }
    }
    for p in &out.place {
        let i = host_index[p.host_instance_id.as_str()];
        future[i].hold(&p.accelerators, p.cpus, p.memory_mb);
    }
    let mut pools_sorted: Vec<&PoolSpec> = pools.iter().collect();
    pools_sorted.sort_by_key(|p| (p.priority, p.instance_type.clone()));
    let mut detailed = Detailed::default();
    for (d, n) in still {
        let mut left = n;
        while left > 0 {
            if let Some((i, need)) = pick(&future, &d.needs, false) {
                let accelerators = future[i].take(&need);
                detailed.simulated.push(NewCopy {
                    component: d.component.clone(),
                    host_instance_id: future[i].id.clone(),
                    instance_type: future[i].instance_type.clone(),
                    version: d.version,
                    accelerators,
                    cpus: need.cpus,
                    memory_mb: need.memory_mb,
                });
                left -= 1;
                continue;
            }
            // A new host: the highest-priority pool type an empty instance of which fits.
            let new_type = pools_sorted.iter().find_map(|p| {
                let need = d.needs.get(&p.instance_type)?;
                let cap = Share::of_type(super::catalog::lookup(&p.instance_type)?);
                fits_empty(need, &cap).then_some((*p, cap))
            });
            let Some((pool, cap)) = new_type else {
                out.unplaceable
                    .push((d.component.clone(), left, unplaceable_reason(d, pools)));
                break;
            };
            let id = format!("{HYPOTHETICAL}{}", detailed.hypothetical.len() + 1);
            detailed
                .hypothetical
                .push((id.clone(), pool.instance_type.clone(), cap));
            future.push(Slot {
                id,
                instance_type: pool.instance_type.clone(),
                priority: pool.priority,
                serving: false,
                launched_at: f64::INFINITY,
                capacity: cap,
                used_accelerators: vec![false; cap.accelerators as usize],
                used_cpus: 0.0,
                used_memory_mb: 0,
                copies: 0,
            });
        }
    }
    out.instances_needed = future.iter().filter(|s| s.copies > 0).count() as u32;

    // 5. Idle hosts: fallback types first, then the newest.
    let mut idle: Vec<&Slot> = future
        .iter()
        .filter(|s| s.copies == 0 && !s.id.starts_with(HYPOTHETICAL))
        .collect();
    idle.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| b.launched_at.total_cmp(&a.launched_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    out.idle = idle.into_iter().map(|s| s.id.clone()).collect();
    detailed.plan = out;
    detailed
}

/// Why a copy of `d` fits no instance the variant has or could have: every pool type with its
/// numbers against what a copy needs there, and the types the component names that no pool has.
fn unplaceable_reason(d: &Demand, pools: &[PoolSpec]) -> String {
    let mut parts = Vec::new();
    let mut pools_sorted: Vec<&PoolSpec> = pools.iter().collect();
    pools_sorted.sort_by_key(|p| p.priority);
    for p in &pools_sorted {
        match (d.needs.get(&p.instance_type), super::catalog::lookup(&p.instance_type)) {
            (Some(need), Some(spec)) => parts.push(format!(
                "{}, but {}",
                describe_need(need),
                describe_type(&p.instance_type, &Share::of_type(spec))
            )),
            (None, _) => parts.push(format!("{} has no specification of the component", p.instance_type)),
            (Some(_), None) => parts.push(format!("{} is not in the catalog", p.instance_type)),
        }
    }
    if parts.is_empty() {
        return "the variant has no instance pools".into();
    }
    format!("no instance type of the variant can hold a copy: {}", parts.join("; "))
}

// ---------------------------------------------------------------------------------------------
// Validation (spillway's rules; the botocore model's constraints run before, in
// `validate::model`)

/// The most copies one component may ask for: spillway's ceiling, as `InitialInstanceCount`'s
/// (AWS documents no upper bound on `CopyCount`).
pub const MAX_COPY_COUNT: i64 = 1000;

/// `RuntimeConfig.CopyCount` / `DesiredRuntimeConfig.CopyCount` at `at` (the model's path,
/// e.g. `runtimeConfig.copyCount`): at least 0 (AWS allows 0, scale to zero), at most
/// [`MAX_COPY_COUNT`].
pub fn copy_count(n: i64, at: &str) -> Result<u32, ValidationError> {
    if n < 0 {
        return Err(ValidationError::constraint(
            n,
            at,
            "Member must have value greater than or equal to 0",
        ));
    }
    if n > MAX_COPY_COUNT {
        return Err(ValidationError::constraint(
            n,
            at,
            &format!("Member must have value less than or equal to {MAX_COPY_COUNT}"),
        ));
    }
    Ok(n as u32)
}

/// Checks a `CreateInferenceComponent` / `UpdateInferenceComponent` specification (exactly one
/// of `specification` and `specifications`) and makes it version `version`. `models` is left
/// empty: the caller snapshots the models the entries name.
///
/// Rules (each refusal names the member): the plural form has 1..5 entries, each with a
/// distinct `InstanceType`; the singular form has none; no entry names a
/// `BaseInferenceComponentName` (spillway runs no adapter components); each entry has exactly
/// one of `ModelName` and `Container` (with its `Image`); `ComputeResourceRequirements` is
/// required (spillway places copies by it), its `NumberOfAcceleratorDevicesRequired` a whole
/// number of at least 1 when given, `MaxMemoryRequiredInMb` at least `MinMemoryRequiredInMb`;
/// the startup windows are 60..3600 seconds.
pub fn spec_version(
    specification: Option<ComponentSpecification>,
    specifications: Option<Vec<ComponentSpecification>>,
    version: u32,
) -> Result<SpecVersion, ValidationError> {
    let (plural, specs) = match (specification, specifications) {
        (Some(_), Some(_)) => {
            return Err(ValidationError(
                "Specification and Specifications are mutually exclusive; specify exactly one of them".into(),
            ));
        }
        (None, None) => {
            return Err(ValidationError(
                "One of Specification or Specifications must be specified".into(),
            ));
        }
        (Some(s), None) => (false, vec![s]),
        (None, Some(list)) => (true, list),
    };
    if plural && !(1..=5).contains(&specs.len()) {
        let rule = if specs.is_empty() {
            "Member must have length greater than or equal to 1"
        } else {
            "Member must have length less than or equal to 5"
        };
        let shown = if specs.is_empty() { "'[]' " } else { "" };
        return Err(ValidationError(format!(
            "1 validation error detected: Value {shown}at 'specifications' failed to satisfy constraint: {rule}"
        )));
    }
    let mut types = std::collections::BTreeSet::new();
    for (i, s) in specs.iter().enumerate() {
        let (at, aws) = if plural {
            (
                format!("Specifications.{}", i + 1),
                format!("specifications.{}.member", i + 1),
            )
        } else {
            ("Specification".to_string(), "specification".to_string())
        };
        match (&s.instance_type, plural) {
            (Some(t), false) => {
                return Err(ValidationError(format!(
                    "{at}.InstanceType: '{t}' is not accepted in the singular Specification, which applies to every instance type of the endpoint; use Specifications with one entry per InstanceType"
                )));
            }
            (None, true) => {
                return Err(ValidationError(format!(
                    "{at}.InstanceType is required: each entry of Specifications is for one instance type"
                )));
            }
            (Some(t), true) => {
                super::validate::instance_type(t, &format!("{aws}.instanceType"))?;
                if !types.insert(t.as_str()) {
                    return Err(ValidationError(format!(
                        "{at}.InstanceType: instance type {t} appears in more than one entry of Specifications; each entry needs a distinct InstanceType"
                    )));
                }
            }
            (None, false) => {}
        }
        if let Some(b) = &s.base_inference_component_name {
            return Err(ValidationError(format!(
                "{at}.BaseInferenceComponentName ('{b}') is not supported by spillway: it runs no adapter inference components"
            )));
        }
        let image = s.container.as_ref().and_then(|c| c.image.as_ref());
        match (&s.model_name, &s.container, image) {
            (Some(_), Some(_), _) => {
                return Err(ValidationError(format!(
                    "{at}: ModelName and Container are mutually exclusive; specify exactly one of them"
                )));
            }
            (None, None, _) => {
                return Err(ValidationError(format!(
                    "{at}: one of ModelName or Container must be specified"
                )));
            }
            (None, Some(_), None) => {
                return Err(ValidationError(format!(
                    "{at}.Container.Image is required: spillway runs the image a Container names"
                )));
            }
            _ => {}
        }
        let Some(r) = &s.compute_resource_requirements else {
            return Err(ValidationError(format!(
                "{at}.ComputeResourceRequirements is required: spillway places copies by what they need"
            )));
        };
        let rat = format!("{aws}.computeResourceRequirements");
        if let Some(a) = r.number_of_accelerator_devices_required
            && !(a.is_finite() && a >= 1.0 && a.fract() == 0.0 && a <= f64::from(u16::MAX))
        {
            return Err(ValidationError(format!(
                "{at}.ComputeResourceRequirements.NumberOfAcceleratorDevicesRequired: {a} is not a whole number of at least 1; spillway gives a copy whole accelerator devices"
            )));
        }
        if let Some(c) = r.number_of_cpu_cores_required
            && !(c.is_finite() && c >= 0.25)
        {
            return Err(ValidationError::constraint(
                c,
                &format!("{rat}.numberOfCpuCoresRequired"),
                "Member must have value greater than or equal to 0.25",
            ));
        }
        if r.min_memory_required_in_mb < 128 {
            return Err(ValidationError::constraint(
                r.min_memory_required_in_mb,
                &format!("{rat}.minMemoryRequiredInMb"),
                "Member must have value greater than or equal to 128",
            ));
        }
        if let Some(max) = r.max_memory_required_in_mb
            && max < r.min_memory_required_in_mb
        {
            return Err(ValidationError(format!(
                "{at}.ComputeResourceRequirements.MaxMemoryRequiredInMb: {max} is less than MinMemoryRequiredInMb ({})",
                r.min_memory_required_in_mb
            )));
        }
        if let Some(p) = &s.startup_parameters {
            for (value, member) in [
                (
                    p.model_data_download_timeout_in_seconds,
                    "modelDataDownloadTimeoutInSeconds",
                ),
                (
                    p.container_startup_health_check_timeout_in_seconds,
                    "containerStartupHealthCheckTimeoutInSeconds",
                ),
            ] {
                let Some(v) = value else { continue };
                let field = format!("{aws}.startupParameters.{member}");
                if v < 60 {
                    return Err(ValidationError::constraint(
                        v,
                        &field,
                        "Member must have value greater than or equal to 60",
                    ));
                }
                if v > 3600 {
                    return Err(ValidationError::constraint(
                        v,
                        &field,
                        "Member must have value less than or equal to 3600",
                    ));
                }
            }
        }
    }
    Ok(SpecVersion {
        version,
        plural,
        specs,
        models: BTreeMap::new(),
    })
}

/// What one copy of an entry needs: its accelerators (0 when not given), cores (0 when not
/// given: no cores are reserved for it) and `MinMemoryRequiredInMb`.
pub fn share_of(spec: &ComponentSpecification) -> Share {
    let r = spec.compute_resource_requirements.as_ref();
    Share {
        accelerators: r
            .and_then(|r| r.number_of_accelerator_devices_required)
            .map_or(0, |a| a.max(0.0) as u32),
        cpus: r.and_then(|r| r.number_of_cpu_cores_required).unwrap_or(0.0).max(0.0),
        memory_mb: r.map_or(0, |r| r.min_memory_required_in_mb.max(0) as u64),
    }
}

/// The entry of `v` copies on `instance_type` run: the singular specification for every type,
/// or the plural entry for that type (`None`: the component does not run there).
pub fn entry_for<'a>(v: &'a SpecVersion, instance_type: &str) -> Option<&'a ComponentSpecification> {
    if v.plural {
        v.specs
            .iter()
            .find(|s| s.instance_type.as_deref() == Some(instance_type))
    } else {
        v.specs.first()
    }
}

/// The fit check: what a copy needs on each pool type it may run on ([`Demand::needs`]).
///
/// Singular specification: every pool type an empty instance of which holds a copy; refused
/// when none does, naming every type with its numbers. Plural: each entry's `InstanceType`
/// must be one of the pools' (refused otherwise, naming it and the pools), and a copy must fit
/// an empty instance of it.
pub fn needs(v: &SpecVersion, pools: &[PoolSpec]) -> Result<BTreeMap<String, Share>, ValidationError> {
    let capacity = |t: &str| super::catalog::lookup(t).map(Share::of_type);
    let mut out = BTreeMap::new();
    if v.plural {
        let names: Vec<&str> = pools.iter().map(|p| p.instance_type.as_str()).collect();
        for (i, s) in v.specs.iter().enumerate() {
            let at = format!("Specifications.{}", i + 1);
            let t = s.instance_type.as_deref().unwrap_or_default();
            if !names.contains(&t) {
                return Err(ValidationError(format!(
                    "{at}.InstanceType: {t} is not an instance type of the endpoint variant's pools ({})",
                    names.join(", ")
                )));
            }
            let need = share_of(s);
            let Some(cap) = capacity(t) else {
                return Err(ValidationError(format!(
                    "{at}.InstanceType: {t} is not in spillway's catalog"
                )));
            };
            if !fits_empty(&need, &cap) {
                return Err(ValidationError(format!(
                    "{at}.ComputeResourceRequirements: {}, but {}",
                    describe_need(&need),
                    describe_type(t, &cap)
                )));
            }
            out.insert(t.to_string(), need);
        }
        return Ok(out);
    }
    let Some(s) = v.specs.first() else {
        return Err(ValidationError("Specification is required".into()));
    };
    let need = share_of(s);
    let mut refused = Vec::new();
    for p in pools {
        match capacity(&p.instance_type) {
            Some(cap) if fits_empty(&need, &cap) => {
                out.insert(p.instance_type.clone(), need);
            }
            Some(cap) => refused.push(describe_type(&p.instance_type, &cap)),
            None => refused.push(format!("{} is not in spillway's catalog", p.instance_type)),
        }
    }
    if out.is_empty() {
        return Err(ValidationError(format!(
            "Specification.ComputeResourceRequirements: {}, but {}",
            describe_need(&need),
            if refused.is_empty() {
                "the variant has no instance pools".to_string()
            } else {
                refused.join(", and ")
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    const BIG: &str = "ml.g5.12xlarge"; // 4 devices, 48 cores, 196608 MiB
    const SMALL: &str = "ml.g5.2xlarge"; // 1 device, 8 cores, 32768 MiB
    const CPU: &str = "ml.m5.xlarge"; // 0 devices, 4 cores, 16384 MiB

    fn cap(t: &str) -> Share {
        Share::of_type(crate::core::catalog::lookup(t).unwrap())
    }

    fn host(id: &str, t: &str, priority: u8, serving: bool, launched_at: f64) -> HostView {
        HostView {
            instance_id: id.into(),
            instance_type: t.into(),
            priority,
            serving,
            launched_at,
            capacity: cap(t),
        }
    }

    fn pool(t: &str, priority: u8) -> PoolSpec {
        PoolSpec {
            priority,
            instance_type: t.into(),
            model_name: String::new(),
        }
    }

    fn share(accelerators: u32, cpus: f64, memory_mb: u64) -> Share {
        Share {
            accelerators,
            cpus,
            memory_mb,
        }
    }

    fn demand(name: &str, desired: u32, needs: &[(&str, Share)]) -> Demand {
        Demand {
            component: name.into(),
            desired,
            version: 1,
            batch: 0,
            needs: needs.iter().map(|(t, s)| (t.to_string(), *s)).collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        id: &str,
        component: &str,
        h: &HostView,
        version: u32,
        accelerators: Vec<u32>,
        need: Share,
        state: CopyPhase,
        placed_at: f64,
    ) -> CopyRecord {
        CopyRecord {
            copy_id: id.into(),
            component: component.into(),
            endpoint_name: "e".into(),
            variant_name: "v".into(),
            host_instance_id: h.instance_id.clone(),
            instance_type: h.instance_type.clone(),
            priority: h.priority,
            version,
            accelerators,
            cpus: need.cpus,
            memory_mb: need.memory_mb,
            state,
            placed_at,
            handle: Value::Null,
            address: String::new(),
            failed_pings: 0,
        }
    }

    #[test]
    fn packs_the_fullest_preferred_host_with_the_lowest_free_devices() {
        let hosts = [
            host("i-a", BIG, 1, true, 1.0),
            host("i-b", BIG, 1, true, 2.0),
            host("i-c", SMALL, 2, true, 3.0),
        ];
        let one = share(1, 2.0, 4096);
        // i-b already holds a copy on device 0: it is the fullest, so both new copies go there.
        let copies = [copy("c-1", "x", &hosts[1], 1, vec![0], one, CopyPhase::InService, 0.0)];
        let p = plan(
            &hosts,
            &copies,
            &[demand("x", 3, &[(BIG, one), (SMALL, one)])],
            &[pool(BIG, 1), pool(SMALL, 2)],
        );
        let placed: Vec<_> = p
            .place
            .iter()
            .map(|c| (c.host_instance_id.as_str(), c.accelerators.clone()))
            .collect();
        assert_eq!(placed, [("i-b", vec![1]), ("i-b", vec![2])]);
        assert!(p.remove.is_empty());
        assert_eq!(p.instances_needed, 1);
        // Idle: the fallback type first, then the newest.
        assert_eq!(p.idle, ["i-c", "i-a"]);
        assert!(p.unplaceable.is_empty());
    }

    #[test]
    fn copies_only_go_on_types_the_component_names() {
        let hosts = [host("i-a", BIG, 1, true, 1.0), host("i-c", SMALL, 2, true, 3.0)];
        let one = share(1, 2.0, 4096);
        let p = plan(
            &hosts,
            &[],
            &[demand("x", 1, &[(SMALL, one)])],
            &[pool(BIG, 1), pool(SMALL, 2)],
        );
        assert_eq!(p.place.len(), 1);
        assert_eq!(p.place[0].host_instance_id, "i-c");
        assert_eq!(p.idle, ["i-a"]);
    }

    #[test]
    fn managed_scaling_counts_hosts_to_add_on_the_preferred_type_that_fits() {
        // No hosts: 6 copies of 2 devices each; BIG holds 2 per host, SMALL none.
        let two = share(2, 4.0, 8192);
        let p = plan(
            &[],
            &[],
            &[demand("x", 6, &[(BIG, two), (SMALL, two)])],
            &[pool(SMALL, 1), pool(BIG, 2)],
        );
        assert!(p.place.is_empty());
        assert_eq!(p.instances_needed, 3);
        assert!(p.unplaceable.is_empty());
        // A launching host counts: it will take two of them.
        let hosts = [host("i-l", BIG, 2, false, 5.0)];
        let p = plan(&hosts, &[], &[demand("x", 6, &[(BIG, two)])], &[pool(BIG, 2)]);
        assert!(p.place.is_empty(), "nothing is placed on a launching host");
        assert_eq!(p.instances_needed, 3);
        assert!(p.idle.is_empty());
    }

    #[test]
    fn a_copy_that_fits_no_type_is_unplaceable_with_the_numbers() {
        let eight = share(8, 4.0, 65536);
        let p = plan(&[], &[], &[demand("x", 2, &[(BIG, eight)])], &[pool(BIG, 1)]);
        assert_eq!(p.instances_needed, 0);
        assert_eq!(p.unplaceable.len(), 1);
        let (name, n, why) = &p.unplaceable[0];
        assert_eq!((name.as_str(), *n), ("x", 2));
        assert!(
            why.contains("a copy needs 8 accelerator devices, 4 cores and 65536 MiB, but ml.g5.12xlarge has 4 accelerator devices, 48 cores and 196608 MiB"),
            "{why}"
        );
    }

    #[test]
    fn scale_in_removes_fallback_copies_first_then_the_emptiest_host_then_the_newest() {
        let hosts = [
            host("i-a", BIG, 1, true, 1.0),
            host("i-b", BIG, 1, true, 2.0),
            host("i-f", SMALL, 2, true, 3.0),
        ];
        let one = share(1, 1.0, 1024);
        let copies = [
            copy("c-1", "x", &hosts[0], 1, vec![0], one, CopyPhase::InService, 1.0),
            copy("c-2", "x", &hosts[0], 1, vec![1], one, CopyPhase::InService, 2.0),
            copy("c-3", "x", &hosts[1], 1, vec![0], one, CopyPhase::InService, 3.0),
            copy("c-4", "x", &hosts[2], 1, vec![0], one, CopyPhase::InService, 0.5),
        ];
        let pools = [pool(BIG, 1), pool(SMALL, 2)];
        let needs = [(BIG, one), (SMALL, one)];
        let p = plan(&hosts, &copies, &[demand("x", 3, &needs)], &pools);
        assert_eq!(p.remove, ["c-4"]);
        assert_eq!(p.idle, ["i-f"]);
        assert_eq!(p.instances_needed, 2);
        let p = plan(&hosts, &copies, &[demand("x", 2, &needs)], &pools);
        assert_eq!(p.remove, ["c-3", "c-4"], "then the host with fewest copies");
        let p = plan(&hosts, &copies, &[demand("x", 1, &needs)], &pools);
        assert_eq!(p.remove, ["c-2", "c-3", "c-4"], "then the newest");
        assert_eq!(p.idle, ["i-f", "i-b"]);
        // Deleted component: everything goes, Terminating copies are not listed again.
        let mut cs = copies.to_vec();
        cs[0].state = CopyPhase::Terminating;
        let p = plan(&hosts, &cs, &[], &pools);
        assert_eq!(p.remove, ["c-2", "c-3", "c-4"]);
        assert_eq!(p.instances_needed, 0);
    }

    #[test]
    fn terminating_copies_hold_their_devices_until_gone() {
        let hosts = [host("i-a", SMALL, 1, true, 1.0)];
        let one = share(1, 1.0, 1024);
        let copies = [copy(
            "c-1",
            "x",
            &hosts[0],
            1,
            vec![0],
            one,
            CopyPhase::Terminating,
            1.0,
        )];
        let p = plan(&hosts, &copies, &[demand("x", 1, &[(SMALL, one)])], &[pool(SMALL, 1)]);
        assert!(p.place.is_empty());
        // ... but the host will have room once it is gone.
        assert_eq!(p.instances_needed, 1);
        assert!(p.idle.is_empty());
    }

    #[test]
    fn rolling_update_places_a_batch_and_removes_old_copies_as_new_ones_serve() {
        let hosts = [host("i-a", BIG, 1, true, 1.0), host("i-b", BIG, 1, true, 2.0)];
        let one = share(1, 1.0, 1024);
        let old = |id: &str, h: &HostView, dev: u32| copy(id, "x", h, 1, vec![dev], one, CopyPhase::InService, 1.0);
        let copies = vec![
            old("c-1", &hosts[0], 0),
            old("c-2", &hosts[0], 1),
            old("c-3", &hosts[1], 0),
        ];
        let mut d = demand("x", 3, &[(BIG, one)]);
        d.version = 2;
        d.batch = 1;
        let p = plan(&hosts, &copies, std::slice::from_ref(&d), &[pool(BIG, 1)]);
        assert_eq!(p.place.len(), 1, "one batch");
        assert_eq!(p.place[0].version, 2);
        assert!(p.remove.is_empty(), "nothing new serves yet");
        // The new copy serves: one old copy goes, the next batch is placed.
        let mut cs = copies.clone();
        cs.push(copy("c-9", "x", &hosts[0], 2, vec![2], one, CopyPhase::InService, 5.0));
        let p = plan(&hosts, &cs, std::slice::from_ref(&d), &[pool(BIG, 1)]);
        assert_eq!(p.remove.len(), 1);
        assert_eq!(p.place.len(), 1);
        // A new copy still launching blocks the next batch.
        cs.last_mut().unwrap().state = CopyPhase::Launching;
        let p = plan(&hosts, &cs, std::slice::from_ref(&d), &[pool(BIG, 1)]);
        assert!(p.place.is_empty() && p.remove.is_empty());
    }

    #[test]
    fn copies_on_vanished_hosts_are_removed() {
        let gone = host("i-gone", SMALL, 1, true, 1.0);
        let one = share(1, 1.0, 1024);
        let copies = [copy("c-1", "x", &gone, 1, vec![0], one, CopyPhase::InService, 1.0)];
        let hosts = [host("i-a", SMALL, 1, true, 2.0)];
        let p = plan(&hosts, &copies, &[demand("x", 1, &[(SMALL, one)])], &[pool(SMALL, 1)]);
        assert_eq!(p.remove, ["c-1"]);
        assert_eq!(p.place.len(), 1);
    }

    #[test]
    fn copy_count_bounds() {
        assert_eq!(copy_count(0, "runtimeConfig.copyCount"), Ok(0));
        assert_eq!(copy_count(7, "runtimeConfig.copyCount"), Ok(7));
        let e = copy_count(-1, "runtimeConfig.copyCount").unwrap_err();
        assert_eq!(
            e.0,
            "1 validation error detected: Value '-1' at 'runtimeConfig.copyCount' failed to satisfy constraint: Member must have value greater than or equal to 0"
        );
        assert!(copy_count(MAX_COPY_COUNT + 1, "x").is_err());
    }

    fn spec(itype: Option<&str>, acc: Option<f64>, mem: i64) -> ComponentSpecification {
        ComponentSpecification {
            instance_type: itype.map(Into::into),
            model_name: Some("m".into()),
            compute_resource_requirements: Some(ComputeResourceRequirements {
                number_of_cpu_cores_required: Some(4.0),
                number_of_accelerator_devices_required: acc,
                min_memory_required_in_mb: mem,
                max_memory_required_in_mb: None,
                other: Map::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn spec_version_rules_name_the_member() {
        let ok = spec_version(Some(spec(None, Some(1.0), 1024)), None, 3).unwrap();
        assert!(!ok.plural && ok.version == 3 && ok.models.is_empty());
        let ok = spec_version(
            None,
            Some(vec![
                spec(Some(BIG), Some(4.0), 1024),
                spec(Some(SMALL), Some(1.0), 1024),
            ]),
            1,
        )
        .unwrap();
        assert!(ok.plural);
        assert_eq!(entry_for(&ok, SMALL).unwrap().instance_type.as_deref(), Some(SMALL));
        assert!(entry_for(&ok, CPU).is_none());

        let mut no_model = spec(None, None, 1024);
        no_model.model_name = None;
        let mut both = spec(None, None, 1024);
        both.container = Some(ComponentContainer {
            image: Some("builtin:echo".into()),
            ..Default::default()
        });
        let mut no_image = no_model.clone();
        no_image.container = Some(ComponentContainer::default());
        let mut adapter = spec(None, None, 1024);
        adapter.base_inference_component_name = Some("base".into());
        let mut no_req = spec(None, None, 1024);
        no_req.compute_resource_requirements = None;
        let mut max_lt_min = spec(None, None, 1024);
        max_lt_min
            .compute_resource_requirements
            .as_mut()
            .unwrap()
            .max_memory_required_in_mb = Some(512);
        let mut startup = spec(None, None, 1024);
        startup.startup_parameters = Some(StartupParameters {
            model_data_download_timeout_in_seconds: Some(59),
            container_startup_health_check_timeout_in_seconds: None,
        });
        type Case = (
            Option<ComponentSpecification>,
            Option<Vec<ComponentSpecification>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (None, None, "One of Specification or Specifications"),
            (Some(spec(None, None, 1024)), Some(vec![]), "mutually exclusive"),
            (
                None,
                Some(vec![]),
                "at 'specifications' failed to satisfy constraint: Member must have length greater than or equal to 1",
            ),
            (
                None,
                Some(vec![spec(Some(BIG), None, 1024); 6]),
                "less than or equal to 5",
            ),
            (Some(spec(Some(BIG), None, 1024)), None, "Specification.InstanceType"),
            (
                None,
                Some(vec![spec(None, None, 1024)]),
                "Specifications.1.InstanceType is required",
            ),
            (
                None,
                Some(vec![spec(Some(BIG), None, 1024), spec(Some(BIG), None, 1024)]),
                "Specifications.2.InstanceType",
            ),
            (
                None,
                Some(vec![spec(Some("ml.nope"), None, 1024)]),
                "specifications.1.member.instanceType",
            ),
            (Some(no_model), None, "one of ModelName or Container"),
            (Some(both), None, "ModelName and Container are mutually exclusive"),
            (Some(no_image), None, "Specification.Container.Image is required"),
            (Some(adapter), None, "BaseInferenceComponentName"),
            (
                Some(no_req),
                None,
                "Specification.ComputeResourceRequirements is required",
            ),
            (
                Some(spec(None, Some(1.5), 1024)),
                None,
                "NumberOfAcceleratorDevicesRequired",
            ),
            (
                Some(spec(None, Some(0.0), 1024)),
                None,
                "NumberOfAcceleratorDevicesRequired",
            ),
            (
                Some(spec(None, None, 64)),
                None,
                "specification.computeResourceRequirements.minMemoryRequiredInMb",
            ),
            (Some(max_lt_min), None, "MaxMemoryRequiredInMb"),
            (
                Some(startup),
                None,
                "Value '59' at 'specification.startupParameters.modelDataDownloadTimeoutInSeconds'",
            ),
        ];
        for (one, many, needle) in cases {
            let e = spec_version(one.clone(), many.clone(), 1).unwrap_err();
            assert!(e.0.contains(needle), "{needle:?} not in {e}");
        }
    }

    #[test]
    fn needs_is_the_fit_check() {
        let pools = [pool(BIG, 1), pool(SMALL, 2), pool(CPU, 3)];
        let v = spec_version(Some(spec(None, Some(1.0), 1024)), None, 1).unwrap();
        let n = needs(&v, &pools).unwrap();
        assert_eq!(n.keys().collect::<Vec<_>>(), [BIG, SMALL], "a CPU type has no device");
        let v = spec_version(Some(spec(None, Some(8.0), 65536)), None, 1).unwrap();
        let e = needs(&v, &pools).unwrap_err();
        assert_eq!(
            e.0,
            "Specification.ComputeResourceRequirements: a copy needs 8 accelerator devices, 4 cores and 65536 MiB, but \
             ml.g5.12xlarge has 4 accelerator devices, 48 cores and 196608 MiB, and ml.g5.2xlarge has 1 accelerator devices, \
             8 cores and 32768 MiB, and ml.m5.xlarge has 0 accelerator devices, 4 cores and 16384 MiB"
        );
        let v = spec_version(
            None,
            Some(vec![
                spec(Some(BIG), Some(4.0), 1024),
                spec(Some(SMALL), Some(1.0), 1024),
            ]),
            1,
        )
        .unwrap();
        let n = needs(&v, &pools).unwrap();
        assert_eq!(n[BIG].accelerators, 4);
        assert_eq!(n[SMALL].accelerators, 1);
        let e = needs(&v, &pools[..1]).unwrap_err();
        assert!(
            e.0.contains("Specifications.2.InstanceType: ml.g5.2xlarge is not an instance type")
                && e.0.contains("(ml.g5.12xlarge)"),
            "{e}"
        );
        let v = spec_version(None, Some(vec![spec(Some(SMALL), Some(2.0), 1024)]), 1).unwrap();
        let e = needs(&v, &pools).unwrap_err();
        assert!(
            e.0.starts_with("Specifications.1.ComputeResourceRequirements: a copy needs 2 accelerator devices"),
            "{e}"
        );
    }

    // ---- properties, against a simple reference checker ----

    const TYPES: [&str; 3] = [BIG, SMALL, CPU];

    #[derive(Debug, Clone)]
    struct World {
        hosts: Vec<HostView>,
        copies: Vec<CopyRecord>,
        demands: Vec<Demand>,
        pools: Vec<PoolSpec>,
    }

    fn phase(i: u8) -> CopyPhase {
        [
            CopyPhase::Placing,
            CopyPhase::Launching,
            CopyPhase::InService,
            CopyPhase::Terminating,
        ][i as usize % 4]
    }

    prop_compose! {
        fn world()(
            pool_perm in Just(()).prop_perturb(|_, mut rng| {
                let mut t = TYPES.to_vec();
                for i in (1..t.len()).rev() { t.swap(i, rng.random_range(0..=i)); }
                let n = rng.random_range(1..=3);
                t.truncate(n);
                t
            }),
            host_specs in proptest::collection::vec((0usize..3, any::<bool>(), 0u32..100), 0..7),
            comps in proptest::collection::vec(
                (0u32..8, 1u32..3, 0u32..3, proptest::collection::vec((0u32..3, 0u32..5, 1u64..40_000), 3)),
                1..4),
            existing in proptest::collection::vec((0usize..8, 0usize..3, 1u32..3, 0u8..4, 0u32..100), 0..16),
            deleted in any::<bool>(),
        ) -> World {
            let pools: Vec<PoolSpec> = pool_perm.iter().enumerate().map(|(i, t)| pool(t, i as u8 + 1)).collect();
            let hosts: Vec<HostView> = host_specs.iter().enumerate().map(|(i, (p, serving, at))| {
                let p = &pools[p % pools.len()];
                host(&format!("i-{i:02}"), &p.instance_type, p.priority, *serving, f64::from(*at))
            }).collect();
            let demands: Vec<Demand> = comps.iter().enumerate().map(|(i, (desired, version, batch, ns))| {
                let needs = TYPES.iter().zip(ns).filter(|(_, (a, _, _))| *a != 2 || i % 2 == 0)
                    .map(|(t, (a, c, m))| (t.to_string(), share(*a, f64::from(*c) * 0.75, *m))).collect();
                Demand { component: format!("ic-{i}"), desired: *desired, version: *version, batch: *batch, needs }
            }).collect();
            // Existing copies: placed validly (first fit on the lowest positions), so the world
            // is one placement could have produced; a deleted component's copies too.
            let mut used: HashMap<String, (BTreeSet<u32>, f64, u64)> = HashMap::new();
            let mut copies = vec![];
            for (n, (h, d, version, ph, at)) in existing.iter().enumerate() {
                if hosts.is_empty() { break; }
                let h = &hosts[h % hosts.len()];
                let (name, need) = match demands.get(*d) {
                    Some(dm) if !(deleted && *d == 0) => match dm.needs.get(&h.instance_type) {
                        Some(s) => (dm.component.clone(), *s),
                        None => continue,
                    },
                    _ => ("gone".to_string(), share(0, 0.5, 512)),
                };
                let u = used.entry(h.instance_id.clone()).or_default();
                let free: Vec<u32> = (0..h.capacity.accelerators).filter(|a| !u.0.contains(a)).take(need.accelerators as usize).collect();
                if free.len() < need.accelerators as usize || u.1 + need.cpus > h.capacity.cpus || u.2 + need.memory_mb > h.capacity.memory_mb {
                    continue;
                }
                u.0.extend(&free);
                u.1 += need.cpus;
                u.2 += need.memory_mb;
                copies.push(copy(&format!("c-{n:02}"), &name, h, *version, free, need, phase(*ph), f64::from(*at)));
            }
            let demands = demands.into_iter().enumerate().filter(|(i, _)| !(deleted && *i == 0)).map(|(_, d)| d).collect();
            World { hosts, copies, demands, pools }
        }
    }

    /// The reference: per host, every copy (existing ones, planned ones) holds distinct device
    /// positions within the host's, and cores and memory sum to no more than it has.
    fn check_capacity(
        hosts: &[(String, String, Share)],
        copies: &[(String, Vec<u32>, f64, u64)],
    ) -> Result<(), String> {
        for (id, _, cap) in hosts {
            let mine: Vec<_> = copies.iter().filter(|c| &c.0 == id).collect();
            let mut devices = BTreeSet::new();
            for c in &mine {
                for a in &c.1 {
                    if *a >= cap.accelerators || !devices.insert(*a) {
                        return Err(format!("{id}: device {a} given twice or out of range"));
                    }
                }
            }
            let cpus: f64 = mine.iter().map(|c| c.2).sum();
            let mem: u64 = mine.iter().map(|c| c.3).sum();
            if cpus > cap.cpus + 1e-6 || mem > cap.memory_mb {
                return Err(format!("{id}: {cpus} cores / {mem} MiB over {cap:?}"));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn placement_never_overcommits_and_accounts_for_every_copy(w in world()) {
            let d = plan_detailed(&w.hosts, &w.copies, &w.demands, &w.pools);
            let p = &d.plan;
            let hosts: Vec<(String, String, Share)> = w.hosts.iter()
                .map(|h| (h.instance_id.clone(), h.instance_type.clone(), h.capacity))
                .chain(d.hypothetical.iter().cloned()).collect();
            let types: HashMap<&str, &str> = hosts.iter().map(|h| (h.0.as_str(), h.1.as_str())).collect();
            let serving: BTreeSet<&str> = w.hosts.iter().filter(|h| h.serving).map(|h| h.instance_id.as_str()).collect();
            let removed: BTreeSet<&str> = p.remove.iter().map(String::as_str).collect();
            prop_assert_eq!(removed.len(), p.remove.len(), "a copy removed twice");
            let by_name: HashMap<&str, &Demand> = w.demands.iter().map(|d| (d.component.as_str(), d)).collect();

            // Now: every recorded copy still holds its share; placements only on serving hosts.
            let mut now: Vec<(String, Vec<u32>, f64, u64)> = w.copies.iter()
                .map(|c| (c.host_instance_id.clone(), c.accelerators.clone(), c.cpus, c.memory_mb)).collect();
            for c in &p.place {
                prop_assert!(serving.contains(c.host_instance_id.as_str()));
                let dm = by_name[c.component.as_str()];
                let need = dm.needs.get(&c.instance_type);
                prop_assert!(need.is_some(), "placed on a type without an entry");
                let need = need.unwrap();
                prop_assert_eq!(types[c.host_instance_id.as_str()], c.instance_type.as_str());
                prop_assert_eq!(c.accelerators.len() as u32, need.accelerators);
                prop_assert_eq!((c.cpus, c.memory_mb, c.version), (need.cpus, need.memory_mb, dm.version));
                now.push((c.host_instance_id.clone(), c.accelerators.clone(), c.cpus, c.memory_mb));
            }
            prop_assert_eq!(check_capacity(&hosts, &now), Ok(()));

            // Future: removed and terminating copies gone, placed and simulated ones there.
            let future_copies: Vec<&CopyRecord> = w.copies.iter()
                .filter(|c| c.state != CopyPhase::Terminating && !removed.contains(c.copy_id.as_str())).collect();
            let mut future: Vec<(String, Vec<u32>, f64, u64)> = future_copies.iter()
                .map(|c| (c.host_instance_id.clone(), c.accelerators.clone(), c.cpus, c.memory_mb)).collect();
            for c in p.place.iter().chain(&d.simulated) {
                let need = by_name[c.component.as_str()].needs[&c.instance_type];
                prop_assert_eq!(c.accelerators.len() as u32, need.accelerators);
                future.push((c.host_instance_id.clone(), c.accelerators.clone(), c.cpus, c.memory_mb));
            }
            prop_assert_eq!(check_capacity(&hosts, &future), Ok(()));
            for c in &future_copies {
                prop_assert!(types.contains_key(c.host_instance_id.as_str()), "a copy on a vanished host is kept");
                prop_assert!(by_name.contains_key(c.component.as_str()), "a deleted component's copy is kept");
            }

            // Every wanted copy: there, placed, simulated or unplaceable (within the batch while
            // old versions remain).
            for dm in &w.demands {
                let new = future_copies.iter().filter(|c| c.component == dm.component && c.version == dm.version).count() as u32;
                let old = future_copies.iter().filter(|c| c.component == dm.component && c.version != dm.version).count() as u32;
                let pending = future_copies.iter().filter(|c| c.component == dm.component && c.version == dm.version && c.state != CopyPhase::InService).count() as u32;
                let placed = p.place.iter().chain(&d.simulated).filter(|c| c.component == dm.component).count() as u32;
                let lost: u32 = p.unplaceable.iter().filter(|u| u.0 == dm.component).map(|u| u.1).sum();
                prop_assert!(new <= dm.desired, "scale-in left {} > {}", new, dm.desired);
                let want = dm.desired - new;
                let want = if old > 0 && dm.batch > 0 { want.min(dm.batch.saturating_sub(pending)) } else { want };
                prop_assert_eq!(placed + lost, want, "component {}", dm.component);
                let in_service = future_copies.iter().filter(|c| c.component == dm.component && c.version == dm.version && c.state == CopyPhase::InService).count() as u32;
                prop_assert!(old + in_service <= dm.desired.max(in_service), "old copies linger");
            }

            // instances_needed and idle partition the hosts as the copies say.
            let holding: BTreeSet<&str> = future.iter().map(|c| c.0.as_str()).collect();
            prop_assert_eq!(p.instances_needed as usize, holding.len());
            for id in &p.idle {
                prop_assert!(!holding.contains(id.as_str()));
            }
            prop_assert_eq!(p.idle.len() + holding.iter().filter(|h| !h.starts_with(HYPOTHETICAL)).count(), w.hosts.len());
        }

        /// Generated specifications: validation never panics, and `needs` is exactly the fit
        /// check: a type is in it iff its entry's copy fits an empty instance of it.
        #[test]
        fn needs_is_exactly_the_types_a_copy_fits(
            entries in proptest::collection::vec(
                (proptest::option::of(0usize..4), proptest::option::of(-1.0f64..10.0), proptest::option::of(0.0f64..64.0), 0i64..300_000, any::<bool>()),
                0..7),
            plural in any::<bool>(),
            npools in 1usize..4,
        ) {
            let names = [BIG, SMALL, CPU, "ml.p4d.24xlarge"];
            let specs: Vec<ComponentSpecification> = entries.iter().map(|(t, acc, cpu, mem, model)| ComponentSpecification {
                instance_type: t.map(|i| names[i].to_string()),
                model_name: model.then(|| "m".to_string()),
                container: (!model).then(|| ComponentContainer { image: Some("builtin:echo".into()), ..Default::default() }),
                compute_resource_requirements: Some(ComputeResourceRequirements {
                    number_of_cpu_cores_required: *cpu,
                    number_of_accelerator_devices_required: acc.map(f64::round),
                    min_memory_required_in_mb: *mem,
                    max_memory_required_in_mb: None,
                    other: Map::new(),
                }),
                ..Default::default()
            }).collect();
            let v = if plural {
                spec_version(None, Some(specs), 1)
            } else {
                spec_version(specs.into_iter().next(), None, 1)
            };
            let Ok(v) = v else { return Ok(()) };
            let pools: Vec<PoolSpec> = names[..npools].iter().enumerate().map(|(i, t)| pool(t, i as u8 + 1)).collect();
            match needs(&v, &pools) {
                Ok(n) => {
                    prop_assert!(!n.is_empty());
                    for p in &pools {
                        let fits = entry_for(&v, &p.instance_type).is_some_and(|e| fits_empty(&share_of(e), &cap(&p.instance_type)));
                        prop_assert_eq!(n.contains_key(&p.instance_type), fits, "{}", p.instance_type);
                    }
                }
                Err(e) => prop_assert!(e.0.contains("InstanceType") || e.0.contains("a copy needs"), "{}", e),
            }
        }

        /// Generated `ManagedInstanceScaling` members: never a panic; ENABLED gives bounds with
        /// min <= max and max >= 1.
        #[test]
        fn managed_scaling_bounds_are_consistent(
            status in proptest::option::of(prop_oneof![Just("ENABLED"), Just("DISABLED"), Just("on")]),
            min in proptest::option::of(-2i64..5),
            max in proptest::option::of(-1i64..5),
        ) {
            let mut m = serde_json::Map::new();
            if let Some(s) = status { m.insert("Status".into(), s.into()); }
            if let Some(x) = min { m.insert("MinInstanceCount".into(), x.into()); }
            if let Some(x) = max { m.insert("MaxInstanceCount".into(), x.into()); }
            match crate::core::validate::managed_instance_scaling(&Value::Object(m), "ManagedInstanceScaling") {
                Ok(Some(b)) => prop_assert!(status == Some("ENABLED") && b.min <= b.max && b.max >= 1),
                Ok(None) => prop_assert!(status == Some("DISABLED") && min != Some(0)),
                Err(e) => prop_assert!(e.0.contains("ManagedInstanceScaling"), "{}", e),
            }
        }

        #[test]
        fn placement_does_not_depend_on_input_order(w in world(), seed in any::<u64>()) {
            let p = plan(&w.hosts, &w.copies, &w.demands, &w.pools);
            let mut hosts = w.hosts.clone();
            let mut copies = w.copies.clone();
            let mut demands = w.demands.clone();
            let n = hosts.len().max(1);
            hosts.rotate_left((seed as usize) % n);
            hosts.reverse();
            copies.reverse();
            let m = copies.len().max(1);
            copies.rotate_left((seed as usize) % m);
            demands.reverse();
            prop_assert_eq!(p, plan(&hosts, &copies, &demands, &w.pools));
        }
    }
}
