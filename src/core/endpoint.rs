//! The durable records of an endpoint, its deployments, instances and events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{ContainerDefinition, EndpointStatus, Timestamp, VariantSpec};
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
    /// Status: written only by the lifecycle methods below.
    status: EndpointStatus,
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
    /// The operation in flight, if any: written only by the lifecycle methods below.
    operation: Option<Operation>,
    /// `DeploymentConfig` as given (echoed).
    pub deployment_config: Option<Value>,
    /// Set while a rolling deployment is in flight.
    #[serde(default)]
    pub rolling: Option<RollingUpdate>,
}

/// A move the endpoint state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// An operation is in flight (`Creating`, `Updating`, `Deleting`, ...).
    #[error("Cannot update in-progress endpoint \"{arn}\".")]
    InProgress {
        /// The endpoint's ARN.
        arn: String,
    },
    /// The endpoint failed; only deleting it is possible.
    #[error("Cannot update failed endpoint \"{arn}\".{}", if *.deploy { "; delete it and create it again." } else { "" })]
    Failed {
        /// The endpoint's ARN.
        arn: String,
        /// Whether the refused move was an `UpdateEndpoint` (its message says what to do).
        deploy: bool,
    },
}

/// The longest `FailureReason` kept (AWS's limit is 1024 characters).
const MAX_FAILURE_REASON: usize = 1024;

/// Cuts a reason to [`MAX_FAILURE_REASON`] bytes on a character boundary, ending it with `...`.
pub fn truncate_reason(mut s: String) -> String {
    if s.len() > MAX_FAILURE_REASON {
        let mut cut = MAX_FAILURE_REASON - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// The endpoint state machine. These methods are the only writers of `status` and
/// `operation`; each refuses a move that is illegal from the current state.
impl EndpointRecord {
    /// A new endpoint, `Creating` its first deployment.
    pub fn create(
        name: String,
        arn: String,
        active: Deployment,
        deployment_config: Option<Value>,
        now: Timestamp,
    ) -> Self {
        Self {
            name,
            arn,
            status: EndpointStatus::Creating,
            failure_reason: None,
            creation_time: now,
            last_modified_time: now,
            active,
            pending: None,
            operation: Some(Operation::Create),
            deployment_config,
            rolling: None,
        }
    }

    /// The endpoint's status.
    pub fn status(&self) -> EndpointStatus {
        self.status
    }

    /// The operation in flight.
    pub fn operation(&self) -> Option<Operation> {
        self.operation
    }

    /// Whether `op` may begin now: never while an operation is in flight or the endpoint is
    /// deleting, and only `DeleteEndpoint` once it failed.
    pub fn check_begin(&self, op: Operation) -> Result<(), LifecycleError> {
        if self.status.in_progress() || self.operation.is_some() {
            return Err(LifecycleError::InProgress { arn: self.arn.clone() });
        }
        if self.status == EndpointStatus::Failed {
            return Err(LifecycleError::Failed {
                arn: self.arn.clone(),
                deploy: op == Operation::Deploy,
            });
        }
        Ok(())
    }

    /// Begins an `UpdateEndpoint` (`Deploy`) or a scaling (`Scale`): the endpoint goes
    /// `Updating`. A deployment also clears the last failure. `Create` begins only with
    /// [`EndpointRecord::create`].
    pub fn begin(&mut self, op: Operation, now: Timestamp) -> Result<(), LifecycleError> {
        self.check_begin(op)?;
        if op == Operation::Create {
            return Err(LifecycleError::InProgress { arn: self.arn.clone() });
        }
        self.status = super::planner::status_during(op);
        self.operation = Some(op);
        self.last_modified_time = now;
        if op == Operation::Deploy {
            self.failure_reason = None;
        }
        Ok(())
    }

    /// Begins deleting: refused while an operation is in flight (a failed endpoint can be
    /// deleted).
    pub fn begin_delete(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        if self.status.in_progress() {
            return Err(LifecycleError::InProgress { arn: self.arn.clone() });
        }
        self.status = EndpointStatus::Deleting;
        self.operation = None;
        self.last_modified_time = now;
        Ok(())
    }

    /// The operation in flight ended and the endpoint serves (`InService`): provisioning state,
    /// health verdicts and status messages of every variant are cleared.
    pub fn finish(&mut self, now: Timestamp) {
        self.rolling = None;
        self.status = EndpointStatus::InService;
        self.operation = None;
        self.last_modified_time = now;
        for dep in std::iter::once(&mut self.active).chain(self.pending.iter_mut()) {
            for v in dep.variants.iter_mut() {
                v.provisioning.finish();
                v.unhealthy = None;
                v.status_message = None;
            }
        }
    }

    /// Creation failed: the endpoint is `Failed` with `reason` (cut to AWS's length).
    pub fn fail(&mut self, reason: String, now: Timestamp) {
        self.finish(now);
        self.status = EndpointStatus::Failed;
        self.failure_reason = Some(truncate_reason(reason));
    }

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
