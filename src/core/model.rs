//! Domain types. The resource types mirror the SageMaker wire shapes (PascalCase members, as
//! botocore models them) so that what a client sent is what Describe* echoes back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Seconds since the Unix epoch, the unit SageMaker JSON timestamps use.
pub type Timestamp = f64;

/// `Tag` as modelled: a key and a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// Tag key, 1..128 characters.
    pub key: String,
    /// Tag value, 0..256 characters.
    #[serde(default)]
    pub value: String,
}

/// `ContainerDefinition`: what an instance runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerDefinition {
    /// For spillway's local provider: the command line to run (`builtin:echo` for the built-in
    /// echo model server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Model artifacts: a `file://` directory or `.tar.gz`, unpacked into `SM_MODEL_DIR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_data_url: Option<String>,
    /// Environment variables for the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Members spillway accepts and echoes without acting on them.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The variable naming the keys of the model's `Environment` (comma-separated), so that a model
/// server (`builtin:echo`) can tell the model's variables from anything else.
pub const MODEL_ENV_KEYS: &str = "SPILLWAY_MODEL_ENV_KEYS";

impl ContainerDefinition {
    /// The value of [`MODEL_ENV_KEYS`] for this container: its `Environment`'s keys.
    pub fn environment_keys(&self) -> String {
        self.environment
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A stored model (`CreateModel` input plus server-assigned members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Model {
    /// Model name.
    pub model_name: String,
    /// Model ARN.
    pub model_arn: String,
    /// Creation time.
    pub creation_time: Timestamp,
    /// The container the model runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_container: Option<ContainerDefinition>,
    /// IAM role (accepted, unused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// Members spillway accepts and echoes without acting on them.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `InstancePool`: one ranked instance type of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstancePool {
    /// Instance type, e.g. `ml.g6.2xlarge`.
    pub instance_type: String,
    /// 1 is tried first.
    pub priority: i64,
    /// Model to run on this pool instead of the variant's `ModelName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name_override: Option<String>,
}

/// `ProductionVariantRoutingConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingConfig {
    /// `LEAST_OUTSTANDING_REQUESTS` or `RANDOM` (others are rejected).
    pub routing_strategy: String,
}

/// `ProductionVariant` as given to `CreateEndpointConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductionVariant {
    /// Variant name.
    pub variant_name: String,
    /// The model the variant runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Number of instances to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_instance_count: Option<i64>,
    /// A single instance type (mutually exclusive with `InstancePools`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Ranked instance pools (mutually exclusive with `InstanceType`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_pools: Option<Vec<InstancePool>>,
    /// Capacity-procurement deadline, 300..3600 seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_instance_provision_timeout_in_seconds: Option<i64>,
    /// Traffic weight, default 1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_variant_weight: Option<f64>,
    /// Window for a new instance to pass `/ping`, 60..3600 seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_startup_health_check_timeout_in_seconds: Option<i64>,
    /// Window to fetch model data, 60..3600 seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_data_download_timeout_in_seconds: Option<i64>,
    /// Routing strategy within the variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<RoutingConfig>,
    /// Members spillway accepts and echoes without acting on them.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A stored endpoint configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointConfig {
    /// Config name.
    pub endpoint_config_name: String,
    /// Config ARN.
    pub endpoint_config_arn: String,
    /// Variants.
    pub production_variants: Vec<ProductionVariant>,
    /// Creation time.
    pub creation_time: Timestamp,
    /// `AsyncInferenceConfig`: the endpoint takes `InvokeEndpointAsync` requests into its
    /// durable queue (docs/async.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_inference_config: Option<AsyncInferenceConfig>,
    /// Members spillway accepts and echoes without acting on them.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `AsyncInferenceConfig` of an endpoint configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsyncInferenceConfig {
    /// Where answers and failures go, and who hears about them.
    pub output_config: AsyncInferenceOutputConfig,
    /// How the queue feeds each instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_config: Option<AsyncInferenceClientConfig>,
}

/// `AsyncInferenceOutputConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AsyncInferenceOutputConfig {
    /// `S3OutputPath`: the prefix answers are written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_output_path: Option<String>,
    /// `S3FailurePath`: the prefix failures are written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_failure_path: Option<String>,
    /// `KmsKeyId`: echoed; spillway does not encrypt objects (docs/async.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// `NotificationConfig`: SNS topics told of successes and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_config: Option<AsyncInferenceNotificationConfig>,
}

/// `AsyncInferenceNotificationConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AsyncInferenceNotificationConfig {
    /// `SuccessTopic`: an SNS topic ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_topic: Option<String>,
    /// `ErrorTopic`: an SNS topic ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_topic: Option<String>,
    /// `IncludeInferenceResponseIn`: `SUCCESS_NOTIFICATION_TOPIC`, `ERROR_NOTIFICATION_TOPIC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_inference_response_in: Option<Vec<String>>,
}

/// `AsyncInferenceClientConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AsyncInferenceClientConfig {
    /// `MaxConcurrentInvocationsPerInstance` (1..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_invocations_per_instance: Option<u32>,
}

impl AsyncInferenceConfig {
    /// Requests one instance works on at once when the config does not say:
    /// `MaxConcurrentInvocationsPerInstance`'s default (AWS "chooses an optimal value"; spillway
    /// chooses one at a time, what a GPU model serving one batch expects).
    pub const DEFAULT_CONCURRENCY: u32 = 1;

    /// `MaxConcurrentInvocationsPerInstance`, or its default.
    pub fn concurrency(&self) -> u32 {
        self.client_config
            .as_ref()
            .and_then(|c| c.max_concurrent_invocations_per_instance)
            .unwrap_or(Self::DEFAULT_CONCURRENCY)
            .max(1)
    }
}

/// `EndpointStatus` as modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointStatus {
    /// Out of service.
    OutOfService,
    /// First fleet being provisioned.
    Creating,
    /// A deployment or capacity change in flight.
    Updating,
    /// System update.
    SystemUpdating,
    /// Rolling back.
    RollingBack,
    /// Serving.
    InService,
    /// Instances being stopped before the endpoint disappears.
    Deleting,
    /// Creation failed.
    Failed,
    /// Rollback failed.
    UpdateRollbackFailed,
}

impl EndpointStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfService => "OutOfService",
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::SystemUpdating => "SystemUpdating",
            Self::RollingBack => "RollingBack",
            Self::InService => "InService",
            Self::Deleting => "Deleting",
            Self::Failed => "Failed",
            Self::UpdateRollbackFailed => "UpdateRollbackFailed",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::OutOfService,
            Self::Creating,
            Self::Updating,
            Self::SystemUpdating,
            Self::RollingBack,
            Self::InService,
            Self::Deleting,
            Self::Failed,
            Self::UpdateRollbackFailed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Whether a control-plane operation is in flight (update and delete are refused).
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Updating | Self::SystemUpdating | Self::RollingBack | Self::Deleting
        )
    }
}

/// One pool of a validated variant, ready for the planner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// 1..5, 1 is preferred.
    pub priority: u8,
    /// Instance type.
    pub instance_type: String,
    /// The model that instances of this pool run (override or the variant's model).
    pub model_name: String,
}

/// How requests are spread over a variant's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RoutingStrategy {
    /// Fewest in-flight requests wins.
    LeastOutstandingRequests,
    /// Uniformly random (SageMaker's default).
    #[default]
    Random,
    /// spillway extension (`CAPACITY_AWARE`): fewest in-flight requests relative to what the
    /// instance type can carry, so large and small instances of a mixed fleet are loaded fairly.
    CapacityAware,
}

impl RoutingStrategy {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastOutstandingRequests => "LEAST_OUTSTANDING_REQUESTS",
            Self::Random => "RANDOM",
            Self::CapacityAware => "CAPACITY_AWARE",
        }
    }
}

/// A validated variant: what the planner and controller work from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSpec {
    /// Variant name.
    pub name: String,
    /// Pools sorted by priority (a single `InstanceType` is one pool of priority 1).
    pub pools: Vec<PoolSpec>,
    /// Whether the variant was configured with `InstancePools` (DescribeEndpoint lists them).
    pub pooled: bool,
    /// Initial instance count.
    pub initial_instance_count: u32,
    /// Initial weight.
    pub initial_weight: f64,
    /// Provisioning deadline in seconds.
    pub provision_timeout_s: u32,
    /// Health-check window in seconds.
    pub startup_health_timeout_s: u32,
    /// How long an instance's model data may take to be ready (`ModelDataDownloadTimeoutInSeconds`).
    #[serde(default = "defaults::model_data_timeout_s")]
    pub model_data_timeout_s: u32,
    /// Routing strategy.
    pub routing: RoutingStrategy,
    /// The variant has no `ModelName`: its instances host inference components (they run the
    /// built-in host agent, and copies are placed on them; `PoolSpec::model_name` is "").
    #[serde(default)]
    pub hosts_components: bool,
    /// `ManagedInstanceScaling` with `Status` `ENABLED` (components' variants only): the bounds
    /// of the instance count placement may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_scaling: Option<ManagedScaling>,
}

/// `ManagedInstanceScaling` when `ENABLED`: the variant's instance count follows what its
/// components' copies need, within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedScaling {
    /// `MinInstanceCount` (0 allowed).
    pub min: u32,
    /// `MaxInstanceCount` (at least 1).
    pub max: u32,
}

/// Endpoint-level provisioning defaults where the API leaves a member unset.
pub mod defaults {
    /// `VariantInstanceProvisionTimeoutInSeconds` when omitted (AWS's sample README says 3600).
    pub const PROVISION_TIMEOUT_S: u32 = 3600;
    /// `ContainerStartupHealthCheckTimeoutInSeconds` when omitted (the container contract's 4 minutes).
    pub const STARTUP_HEALTH_TIMEOUT_S: u32 = 240;
    /// `ModelDataDownloadTimeoutInSeconds` when omitted (its largest value).
    pub const MODEL_DATA_TIMEOUT_S: u32 = 3600;

    /// [`MODEL_DATA_TIMEOUT_S`], for records written before the member was kept.
    pub fn model_data_timeout_s() -> u32 {
        MODEL_DATA_TIMEOUT_S
    }
}
