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

/// Plans one variant's copies. See docs/inference-components.md, "Placement", for the policy.
pub fn plan(hosts: &[HostView], copies: &[CopyRecord], demands: &[Demand], pools: &[PoolSpec]) -> PlacementPlan {
    let _ = (hosts, copies, demands, pools);
    unimplemented!("core::component::plan: built by the core helper")
}

// ---- integrator's temporary stubs; replaced by the core helper's functions at merge ----

/// Stub.
pub fn spec_version(
    specification: Option<ComponentSpecification>,
    specifications: Option<Vec<ComponentSpecification>>,
    version: u32,
) -> Result<SpecVersion, super::validate::ValidationError> {
    let (plural, specs) = match (specification, specifications) {
        (Some(s), None) => (false, vec![s]),
        (None, Some(v)) => (true, v),
        _ => return Err(super::validate::ValidationError("stub".into())),
    };
    Ok(SpecVersion {
        version,
        plural,
        specs,
        models: BTreeMap::new(),
    })
}

/// Stub.
pub fn needs(v: &SpecVersion, pools: &[PoolSpec]) -> Result<BTreeMap<String, Share>, super::validate::ValidationError> {
    let _ = (v, pools);
    Ok(BTreeMap::new())
}

/// Stub.
pub fn entry_for<'a>(v: &'a SpecVersion, instance_type: &str) -> Option<&'a ComponentSpecification> {
    v.specs
        .iter()
        .find(|s| s.instance_type.as_deref().is_none_or(|t| t == instance_type))
}

/// Stub.
pub fn copy_count(n: i64, at: &str) -> Result<u32, super::validate::ValidationError> {
    u32::try_from(n).map_err(|_| super::validate::ValidationError(format!("{at}: stub")))
}
