//! The durable records of an endpoint, its deployments, instances and events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{ContainerDefinition, EndpointStatus, Tag, Timestamp, VariantSpec};
use super::planner::{InstancePhase, Operation, ProvisioningState, RollingUpdate};

/// One variant of a deployment, with its mutable desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedVariant {
    /// The validated configuration.
    pub spec: VariantSpec,
    /// Desired instances.
    pub desired_count: u32,
    /// Desired traffic weight.
    pub desired_weight: f64,
    /// In-flight provisioning of this variant.
    #[serde(default)]
    pub provisioning: ProvisioningState,
    /// Set when replacement launches gave up (crash loop or capacity shortfall) until the
    /// desired state changes.
    #[serde(default)]
    pub stalled: Option<String>,
    /// Consecutive instances that failed their health check.
    #[serde(default)]
    pub health_failures: u32,
    /// Why the current operation cannot succeed for this variant (an instance never passed
    /// its health check or could not be started). Not a capacity signal: no fallback.
    #[serde(default)]
    pub unhealthy: Option<String>,
    /// What provisioning is doing now, for `VariantStatus.StatusMessage`.
    #[serde(default)]
    pub status_message: Option<String>,
}

/// A fleet built from one endpoint configuration. An endpoint has one active deployment and,
/// during `UpdateEndpoint`, a pending one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Unique id; instances point at it.
    pub id: String,
    /// The endpoint configuration it was built from.
    pub config_name: String,
    /// When the deployment started.
    pub start_time: Timestamp,
    /// Variants in configuration order.
    pub variants: Vec<DeployedVariant>,
    /// Snapshot of every model the variants run (by name), so instances can be launched or
    /// replaced even after `DeleteModel`.
    pub models: BTreeMap<String, ContainerDefinition>,
}

/// The endpoint record the controller and the API share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Endpoint name.
    pub name: String,
    /// Endpoint ARN.
    pub arn: String,
    /// Status.
    pub status: EndpointStatus,
    /// Why the endpoint failed or the last update rolled back.
    pub failure_reason: Option<String>,
    /// Creation time.
    pub creation_time: Timestamp,
    /// Last change.
    pub last_modified_time: Timestamp,
    /// The serving deployment (during creation: the one being created).
    pub active: Deployment,
    /// The deployment replacing `active` during `UpdateEndpoint`.
    pub pending: Option<Deployment>,
    /// The operation in flight, if any.
    pub operation: Option<Operation>,
    /// `DeploymentConfig` as given (echoed).
    pub deployment_config: Option<Value>,
    /// Set while a rolling deployment is in flight.
    #[serde(default)]
    pub rolling: Option<RollingUpdate>,
    /// Tags given at creation (also stored in the tag table).
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl EndpointRecord {
    /// Every deployment, active first.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        std::iter::once(&self.active).chain(self.pending.iter())
    }
}

/// A durable instance record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Instance id (`i-` + 17 hex characters).
    pub instance_id: String,
    /// Endpoint it belongs to.
    pub endpoint_name: String,
    /// Deployment it belongs to.
    pub deployment_id: String,
    /// Variant it belongs to.
    pub variant_name: String,
    /// Instance type.
    pub instance_type: String,
    /// Pool priority it was launched from.
    pub priority: u8,
    /// The model it runs.
    pub model_name: String,
    /// Lifecycle phase.
    pub state: InstancePhase,
    /// When the launch succeeded.
    pub launched_at: Timestamp,
    /// Provider-specific handle (for the local provider: pid, port).
    pub handle: Value,
    /// Address that serves `/ping` and `/invocations`, `host:port`.
    pub address: String,
    /// Consecutive failed pings while in service.
    #[serde(default)]
    pub failed_pings: u32,
    /// For a surge instance moving the variant to preferred hardware: the instance it replaces
    /// once it passes its health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// One entry of the endpoint's event history: the evidence an operator reads after an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When.
    pub time: Timestamp,
    /// Endpoint.
    pub endpoint_name: String,
    /// Variant, where the event is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_name: Option<String>,
    /// What happened: `LaunchAttempt`, `InstanceHealthy`, `HealthCheckFailed`, ...
    pub kind: String,
    /// Instance type involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Pool priority involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Instance involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Outcome: `Launched`, `InsufficientCapacity`, `Failed`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Human-readable detail.
    pub message: String,
}
