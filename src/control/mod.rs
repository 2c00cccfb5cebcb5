//! The command boundary. The HTTP edge (`api/`) parses each request into a typed operation,
//! turns the operations that change anything into a [`Command`] and hands it to [`apply`],
//! which returns an [`Outcome`] or a typed [`ControlError`]; the autoscaler uses the same
//! commands. Reads go through the query functions here too, so `api/` never touches the store.
//!
//! `control` changes the desired state under the endpoint lock, persists it before answering,
//! and wakes the endpoint's controller; it never launches or stops instances itself. Status
//! moves only through the core's lifecycle methods (`EndpointRecord::begin_deploy`, ...).

pub mod alarms;
pub mod app;
pub mod asyncq;
pub mod autoscaler;
pub mod backlog;
pub mod components;
pub mod controller;
pub mod explain;
pub mod identity;
pub mod ledger;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::app::{App, EndpointRuntime};
use crate::control::autoscaler::{Activity, ScalableTarget, ScalingPolicy};
use crate::core::endpoint::{DeployedVariant, Deployment, EndpointRecord, Event, LifecycleError};
use crate::core::model::{EndpointConfig, Model, Tag, Timestamp};
use crate::core::planner::{Operation, ProvisioningState, RollingUpdate};
use crate::core::validate::{self, ValidationError};
use crate::store::{Kind, StoreError};

/// Why a command or query was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such resource.
    #[error("Could not find {} \"{arn}\".", kind.noun())]
    NotFound {
        /// Its kind.
        kind: ResourceKind,
        /// Its ARN.
        arn: String,
    },
    /// A resource of that kind and name exists already.
    #[error("Cannot create already existing {} \"{arn}\".", kind.noun())]
    AlreadyExists {
        /// Its kind.
        kind: ResourceKind,
        /// Its ARN.
        arn: String,
    },
    /// The endpoint's state machine refused the move.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The command's input breaks a rule (the message names the member and the rule).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Application Auto Scaling: no such scalable target or policy (the message says which).
    #[error("{0}")]
    ObjectNotFound(String),
    /// CloudWatch: no such alarm (the message names them).
    #[error("{0}")]
    AlarmNotFound(String),
    /// CloudWatch: the alarm quota is reached.
    #[error("{0}")]
    AlarmLimitExceeded(String),
    /// The store failed; nothing was changed.
    #[error("spillway could not access its store: {0}")]
    Store(#[from] StoreError),
}

/// The SageMaker resources spillway keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// `CreateModel`.
    Model,
    /// `CreateEndpointConfig`.
    EndpointConfig,
    /// `CreateEndpoint`.
    Endpoint,
    /// `CreateInferenceComponent`.
    InferenceComponent,
}

impl ResourceKind {
    /// The kind as it appears in ARNs.
    pub fn arn_kind(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::EndpointConfig => "endpoint-config",
            Self::Endpoint => "endpoint",
            Self::InferenceComponent => "inference-component",
        }
    }

    /// The kind as AWS names it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::EndpointConfig => "endpoint configuration",
            Self::Endpoint => "endpoint",
            Self::InferenceComponent => "inference component",
        }
    }

    fn store_kind(self) -> Kind {
        match self {
            Self::Model => Kind::Model,
            Self::EndpointConfig => Kind::EndpointConfig,
            Self::Endpoint => Kind::Endpoint,
            Self::InferenceComponent => Kind::InferenceComponent,
        }
    }
}

/// A stored SageMaker resource whose whole description is its document (models, endpoint
/// configurations): created, described, listed and deleted the same way.
pub trait Document: serde::Serialize + DeserializeOwned {
    /// Which kind it is.
    const KIND: ResourceKind;
    /// Its name.
    fn name(&self) -> &str;
    /// Its ARN.
    fn arn(&self) -> &str;
    /// When it was created.
    fn creation_time(&self) -> Timestamp;
}

impl Document for Model {
    const KIND: ResourceKind = ResourceKind::Model;
    fn name(&self) -> &str {
        &self.model_name
    }
    fn arn(&self) -> &str {
        &self.model_arn
    }
    fn creation_time(&self) -> Timestamp {
        self.creation_time
    }
}

impl Document for EndpointConfig {
    const KIND: ResourceKind = ResourceKind::EndpointConfig;
    fn name(&self) -> &str {
        &self.endpoint_config_name
    }
    fn arn(&self) -> &str {
        &self.endpoint_config_arn
    }
    fn creation_time(&self) -> Timestamp {
        self.creation_time
    }
}

/// A change of one variant's desired weight and/or instance count.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantChange {
    /// Variant name.
    pub variant: String,
    /// New weight.
    pub weight: Option<f64>,
    /// New instance count.
    pub count: Option<u32>,
}

/// `MaximumBatchSize` of a rolling update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// A number of instances.
    Count(u32),
    /// A percentage of the fleet.
    Percent(u32),
}

impl BatchSize {
    fn resolve(self, fleet: u32) -> u32 {
        match self {
            BatchSize::Count(n) => n,
            BatchSize::Percent(p) => ((fleet as f64) * (p as f64) / 100.0).ceil().max(1.0) as u32,
        }
    }
}

/// `UpdateEndpoint`, validated at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateEndpoint {
    /// The endpoint.
    pub name: String,
    /// The new endpoint configuration.
    pub config_name: String,
    /// Keep the variants' current counts and weights.
    pub retain_all_variant_properties: bool,
    /// Properties not retained (`DesiredInstanceCount`, `DesiredWeight`, `DataCaptureConfig`).
    pub excluded: Vec<String>,
    /// `Some((batch, wait seconds))` for a rolling update, `None` for blue/green.
    pub rolling: Option<(BatchSize, f64)>,
    /// `DeploymentConfig` as given.
    pub deployment_config: Option<Value>,
    /// Keep the current `DeploymentConfig` instead.
    pub retain_deployment_config: bool,
}

/// Every change a client, the operator or the autoscaler can ask of spillway.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `CreateModel`.
    CreateModel {
        /// The model, validated.
        model: Model,
        /// Its tags.
        tags: Vec<Tag>,
    },
    /// `CreateEndpointConfig`.
    CreateEndpointConfig {
        /// The configuration, validated against the models that exist.
        config: EndpointConfig,
        /// Its tags.
        tags: Vec<Tag>,
    },
    /// `DeleteModel` or `DeleteEndpointConfig`.
    DeleteDocument {
        /// `Model` or `EndpointConfig`.
        kind: ResourceKind,
        /// Its name.
        name: String,
    },
    /// `CreateEndpoint`.
    CreateEndpoint {
        /// The endpoint's name.
        name: String,
        /// The configuration it is built from.
        config_name: String,
        /// `DeploymentConfig` as given.
        deployment_config: Option<Value>,
        /// Its tags.
        tags: Vec<Tag>,
    },
    /// `UpdateEndpoint`.
    UpdateEndpoint(UpdateEndpoint),
    /// `DeleteEndpoint`.
    DeleteEndpoint {
        /// The endpoint.
        name: String,
    },
    /// `UpdateEndpointWeightsAndCapacities`, and the autoscaler's scaling.
    SetVariants {
        /// The endpoint.
        endpoint: String,
        /// The changes, one per variant.
        changes: Vec<VariantChange>,
    },
    /// `CreateInferenceComponent`.
    CreateComponent(components::CreateComponent),
    /// `UpdateInferenceComponent`.
    UpdateComponent(components::UpdateComponent),
    /// `DeleteInferenceComponent`.
    DeleteComponent {
        /// The component.
        name: String,
    },
    /// `UpdateInferenceComponentRuntimeConfig`, and the autoscaler's scaling of copies.
    SetComponentCopies {
        /// The component.
        name: String,
        /// `CopyCount`.
        copies: u32,
    },
    /// `AddTags`.
    AddTags {
        /// The resource.
        arn: String,
        /// Tags to add or overwrite.
        tags: Vec<Tag>,
    },
    /// `DeleteTags`.
    DeleteTags {
        /// The resource.
        arn: String,
        /// Keys to remove.
        keys: Vec<String>,
    },
    /// `RegisterScalableTarget`: registers or updates a target (validated at the edge), with
    /// the tags a new one is registered with, written together.
    PutScalableTarget {
        /// The target.
        target: ScalableTarget,
        /// Its tags (empty on an update).
        tags: Vec<Tag>,
    },
    /// `DeregisterScalableTarget`: the target and its policies, in one transaction.
    DeregisterScalableTarget {
        /// `endpoint/<name>/variant/<variant>`.
        resource_id: String,
    },
    /// `PutMetricAlarm`: creates or replaces an alarm (validated at the edge) and adds its
    /// tags. A replaced alarm keeps its state.
    PutAlarm(Box<alarms::Alarm>, Vec<Tag>),
    /// `DeleteAlarms`: the named alarms that exist go, in one transaction; unknown names are
    /// ignored, as AWS does ("the alarms you specify with correct names are still deleted").
    DeleteAlarms(Vec<String>),
    /// `SetAlarmState`.
    SetAlarmState {
        /// The alarm.
        name: String,
        /// The state.
        state: crate::core::alarm::StateValue,
        /// `StateReason`.
        reason: String,
        /// `StateReasonData`.
        data: Option<String>,
    },
    /// `EnableAlarmActions` / `DisableAlarmActions` (unknown names are ignored, as AWS does).
    SetAlarmActions {
        /// The alarms.
        names: Vec<String>,
        /// Enabled or not.
        enabled: bool,
    },
    /// `PutScalingPolicy`: creates or replaces a policy of a registered target.
    PutScalingPolicy(ScalingPolicy),
    /// `DeleteScalingPolicy`.
    DeleteScalingPolicy {
        /// `endpoint/<name>/variant/<variant>`.
        resource_id: String,
        /// The policy's name.
        policy_name: String,
    },
    /// `PUT`/`DELETE /_spillway/capacity/{type}`: pin a type's slots at run time, or unpin.
    SetCapacity {
        /// A catalog instance type.
        instance_type: String,
        /// The pin, `None` to remove it.
        slots: Option<u32>,
        /// Who asked (an IAM ARN), for the `CapacityPinChanged` events; `None`: unknown
        /// (authentication off).
        by: Option<String>,
    },
    /// `POST /_spillway/capacity/{type}/reclaim`: every instance of the type is taken away
    /// (stopped and replaced through the pools), as when a provider reclaims capacity.
    ReclaimCapacity {
        /// A catalog instance type.
        instance_type: String,
        /// Only this endpoint's instances (else every endpoint's).
        endpoint: Option<String>,
    },
}

/// What an accepted command produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The ARN of the resource created or changed.
    Arn(String),
    /// Done; nothing to report.
    Done,
    /// The scaling policy as stored (with its alarms).
    Policy(Box<ScalingPolicy>),
    /// How many things the command acted on (instances reclaimed).
    Count(usize),
}

/// Applies one command. Every accepted change is durable before this returns.
pub async fn apply(app: &Arc<App>, command: Command) -> Result<Outcome, ControlError> {
    // An endpoint whose tags the command may change: invocations' `aws:ResourceTag/<key>`
    // reads the published copy.
    let tagged = match &command {
        Command::AddTags { arn, .. } | Command::DeleteTags { arn, .. } => Some(arn.clone()),
        Command::CreateEndpoint { name, .. } | Command::DeleteEndpoint { name } => Some(app.arn("endpoint", name)),
        _ => None,
    };
    let outcome = apply_inner(app, command).await;
    if let Some(arn) = tagged.filter(|a| a.contains(":endpoint/")) {
        publish_tags(app, &arn)?;
    }
    outcome
}

/// Publishes the stored tags of `arn` to the data plane's copy.
pub(crate) fn publish_tags(app: &App, arn: &str) -> Result<(), crate::store::StoreError> {
    let tags = app.store.tags(arn)?.into_iter().map(|t| (t.key, t.value)).collect();
    app.dataplane.auth.tags.set(arn, tags);
    Ok(())
}

async fn apply_inner(app: &Arc<App>, command: Command) -> Result<Outcome, ControlError> {
    match command {
        Command::CreateModel { model, tags } => create_document(app, &model, &tags),
        Command::CreateEndpointConfig { config, tags } => create_document(app, &config, &tags),
        Command::DeleteDocument { kind, name } => {
            let arn = app.arn(kind.arn_kind(), &name);
            if !app.store.delete(kind.store_kind(), &name, &arn)? {
                return Err(not_found(app, kind, &name));
            }
            Ok(Outcome::Done)
        }
        Command::CreateEndpoint {
            name,
            config_name,
            deployment_config,
            tags,
        } => create_endpoint(app, name, &config_name, deployment_config, &tags),
        Command::UpdateEndpoint(u) => update_endpoint(app, u).await,
        Command::DeleteEndpoint { name } => delete_endpoint(app, &name).await,
        Command::SetComponentCopies { name, copies } => components::set_copies(app, &name, copies).await,
        Command::CreateComponent(c) => components::create(app, c).await,
        Command::UpdateComponent(u) => components::update(app, u).await,
        Command::DeleteComponent { name } => components::delete(app, &name).await,
        Command::SetVariants { endpoint, changes } => set_variants(app, &endpoint, &changes).await,
        Command::AddTags { arn, tags } => {
            resolve_arn(app, &arn).await?;
            app.store.add_tags(&arn, &tags)?;
            Ok(Outcome::Done)
        }
        Command::DeleteTags { arn, keys } => {
            resolve_arn(app, &arn).await?;
            app.store.delete_tags(&arn, &keys)?;
            Ok(Outcome::Done)
        }
        Command::PutScalableTarget { target, tags } => {
            let _config = app.autoscaler.config_lock().await;
            app.store.put_tagged(
                Kind::ScalableTarget,
                &target.resource_id,
                target.creation_time,
                &target,
                &target.scalable_target_arn,
                &tags,
            )?;
            autoscaler::wake(app);
            Ok(Outcome::Arn(target.scalable_target_arn))
        }
        Command::DeregisterScalableTarget { resource_id } => {
            let _config = app.autoscaler.config_lock().await;
            let Some(target) = scalable_target(app, &resource_id)? else {
                return Err(target_missing(&resource_id));
            };
            let policies: Vec<ScalingPolicy> = scaling_policies(app)?
                .into_iter()
                .filter(|p| p.resource_id == resource_id)
                .collect();
            let keys: Vec<String> = policies.iter().map(ScalingPolicy::key).collect();
            let mut gone: Vec<(Kind, &str, &str)> = policies
                .iter()
                .zip(&keys)
                .map(|(p, k)| (Kind::ScalingPolicy, k.as_str(), p.policy_arn.as_str()))
                .collect();
            gone.push((Kind::ScalableTarget, &resource_id, &target.scalable_target_arn));
            app.store.delete_all(&gone)?;
            for p in &policies {
                alarms::delete(app, &owned_alarms(app, &p.policy_arn)?)?;
            }
            Ok(Outcome::Done)
        }
        Command::PutScalingPolicy(mut policy) => {
            let _config = app.autoscaler.config_lock().await;
            if scalable_target(app, &policy.resource_id)?.is_none() {
                return Err(target_missing(&policy.resource_id));
            }
            // A target-tracking policy owns two alarms (replaced when the policy is); a step
            // policy owns none.
            let owned = owned_alarms(app, &policy.policy_arn)?;
            let mut alarms = vec![];
            if let Some(cfg) = &policy.target_tracking_scaling_policy_configuration {
                let parsed = autoscaler::parse_target_tracking(cfg)?;
                let period = app.cfg.autoscaling.target_tracking_period_seconds as i64;
                alarms = alarms::target_tracking_alarms(app, &policy, &parsed, period, app.clock.now());
            }
            policy.alarms = alarms
                .iter()
                .map(|a| serde_json::json!({"AlarmName": a.name, "AlarmARN": a.arn}))
                .collect();
            alarms::delete(app, &owned)?;
            for a in &alarms {
                alarms::put(app, a, true)?;
            }
            app.store
                .put(Kind::ScalingPolicy, &policy.key(), policy.creation_time, &policy)?;
            autoscaler::wake(app);
            Ok(Outcome::Policy(Box::new(policy)))
        }
        Command::DeleteScalingPolicy {
            resource_id,
            policy_name,
        } => {
            let _config = app.autoscaler.config_lock().await;
            let key = ScalingPolicy::key_of(&resource_id, &policy_name);
            let Some(p) = scaling_policy(app, &key)? else {
                return Err(ControlError::ObjectNotFound(format!(
                    "No scaling policy found for service namespace: sagemaker, resource ID: {resource_id}, scalable dimension: {}, policy name: {policy_name}",
                    autoscaler::DIMENSION
                )));
            };
            app.store.delete(Kind::ScalingPolicy, &key, &p.policy_arn)?;
            alarms::delete(app, &owned_alarms(app, &p.policy_arn)?)?;
            Ok(Outcome::Done)
        }
        Command::PutAlarm(alarm, tags) => {
            let _config = app.autoscaler.config_lock().await;
            let mut alarm = *alarm;
            let existing = alarms::get(app, &alarm.name)?;
            if let Some(old) = &existing {
                if old.owner_policy.is_some() {
                    return Err(ControlError::Invalid(ValidationError(format!(
                        "AlarmName: {} belongs to a target-tracking scaling policy; change the policy instead",
                        old.name
                    ))));
                }
                alarm.state = old.state;
                alarm.state_reason = old.state_reason.clone();
                alarm.state_reason_data = old.state_reason_data.clone();
                alarm.state_updated = old.state_updated;
                alarm.state_transitioned = old.state_transitioned;
                alarm.actions_ran = old.actions_ran;
            }
            let quota = app.cfg.autoscaling.max_alarms;
            if existing.is_none() && alarms::all(app)?.len() >= quota {
                return Err(ControlError::AlarmLimitExceeded(format!(
                    "The maximum number of alarms ({quota}) is reached; delete alarms or raise [autoscaling] max_alarms."
                )));
            }
            alarms::put(app, &alarm, existing.is_none())?;
            if !tags.is_empty() {
                app.store.add_tags(&alarm.arn, &tags)?;
            }
            autoscaler::wake(app);
            Ok(Outcome::Arn(alarm.arn))
        }
        Command::DeleteAlarms(names) => {
            let _config = app.autoscaler.config_lock().await;
            let mut found = vec![];
            for n in &names {
                if let Some(a) = alarms::get(app, n)? {
                    found.push(a);
                }
            }
            alarms::delete(app, &found)?;
            Ok(Outcome::Done)
        }
        Command::SetAlarmState {
            name,
            state,
            reason,
            data,
        } => {
            let _config = app.autoscaler.config_lock().await;
            let Some(alarm) = alarms::get(app, &name)? else {
                return Err(ControlError::AlarmNotFound(format!("Alarm {name} not found")));
            };
            alarms::transition(app, alarm, state, reason, data).await?;
            Ok(Outcome::Done)
        }
        Command::SetAlarmActions { names, enabled } => {
            let _config = app.autoscaler.config_lock().await;
            for n in &names {
                if let Some(mut a) = alarms::get(app, n)? {
                    a.actions_enabled = enabled;
                    a.updated = app.clock.now();
                    alarms::put(app, &a, false)?;
                }
            }
            Ok(Outcome::Done)
        }
        Command::SetCapacity {
            instance_type,
            slots,
            by,
        } => {
            let pin_of = |app: &App| {
                app.provider
                    .capacity()
                    .into_iter()
                    .find(|e| e.instance_type == instance_type)
                    .and_then(|e| e.slots.map(|s| (s, e.pinned_by)))
            };
            let before = pin_of(app);
            app.store.set_capacity_override(&instance_type, slots)?;
            app.provider.set_slots(&instance_type, slots);
            let after = pin_of(app);
            let message = crate::core::endpoint::pin_change_message(
                &instance_type,
                before.map(|(s, b)| (s, b.unwrap_or("config"))),
                after.map(|(s, b)| (s, b.unwrap_or("config"))),
                by.as_deref(),
            );
            // Setting the pin it already has changes nothing the events should explain.
            if before != after {
                pin_changed_events(app, &instance_type, &message).await;
            }
            match slots {
                Some(slots) => tracing::info!(%instance_type, slots, "capacity pinned at run time"),
                None => tracing::info!(%instance_type, "run-time capacity pin removed"),
            }
            capacity_changed(app, &instance_type).await;
            Ok(Outcome::Done)
        }
        Command::ReclaimCapacity {
            instance_type,
            endpoint,
        } => {
            if let Some(name) = &endpoint
                && app.endpoint(name).is_none()
            {
                return Err(not_found(app, ResourceKind::Endpoint, name));
            }
            let n = controller::reclaim(
                app,
                &instance_type,
                endpoint.as_deref(),
                "ReclaimCapacity through the admin API",
            )
            .await;
            tracing::info!(%instance_type, instances = n, "capacity reclaimed");
            Ok(Outcome::Count(n))
        }
    }
}

/// The alarms a target-tracking policy owns.
fn owned_alarms(app: &App, policy_arn: &str) -> Result<Vec<alarms::Alarm>, ControlError> {
    Ok(alarms::all(app)?
        .into_iter()
        .filter(|a| a.owner_policy.as_deref() == Some(policy_arn))
        .collect())
}

/// No scalable target for `resource_id` (spillway's only namespace and dimension).
fn target_missing(resource_id: &str) -> ControlError {
    ControlError::ObjectNotFound(format!(
        "No scalable target registered for service namespace: sagemaker, resource ID: {resource_id}, scalable dimension: {}",
        autoscaler::DIMENSION
    ))
}

fn not_found(app: &App, kind: ResourceKind, name: &str) -> ControlError {
    ControlError::NotFound {
        kind,
        arn: app.arn(kind.arn_kind(), name),
    }
}

fn create_document<T: Document>(app: &App, doc: &T, tags: &[Tag]) -> Result<Outcome, ControlError> {
    let kind = T::KIND;
    if !app
        .store
        .insert_tagged(kind.store_kind(), doc.name(), doc.creation_time(), doc, doc.arn(), tags)?
    {
        return Err(ControlError::AlreadyExists {
            kind,
            arn: doc.arn().to_string(),
        });
    }
    Ok(Outcome::Arn(doc.arn().to_string()))
}

// ---------------------------------------------------------------------------------------------
// Queries

/// A model or endpoint configuration by name.
pub fn document<T: Document>(app: &App, name: &str) -> Result<T, ControlError> {
    app.store
        .get(T::KIND.store_kind(), name)?
        .ok_or_else(|| not_found(app, T::KIND, name))
}

/// Every model or every endpoint configuration.
pub fn documents<T: Document>(app: &App) -> Result<Vec<T>, ControlError> {
    Ok(app.store.list(T::KIND.store_kind())?)
}

/// Whether a model of that name exists (for validating configurations).
pub fn model_exists(app: &App, name: &str) -> bool {
    app.store.exists(Kind::Model, name).unwrap_or(false)
}

/// A model's container `Environment` (empty when the model or its environment is absent).
pub fn model_environment(app: &App, name: &str) -> Result<BTreeMap<String, String>, ControlError> {
    Ok(app
        .store
        .get::<crate::core::model::Model>(Kind::Model, name)?
        .and_then(|m| m.primary_container)
        .and_then(|c| c.environment)
        .unwrap_or_default())
}

/// A copy of an endpoint's record and instances, as `DescribeEndpoint` shows them.
pub async fn endpoint(app: &App, name: &str) -> Result<EndpointRuntime, ControlError> {
    let h = app
        .endpoint(name)
        .ok_or_else(|| not_found(app, ResourceKind::Endpoint, name))?;
    let rt = h.state.lock().await;
    if rt.deleted {
        return Err(not_found(app, ResourceKind::Endpoint, name));
    }
    Ok(EndpointRuntime {
        record: rt.record.clone(),
        instances: rt.instances.clone(),
        deleted: false,
        reported: Default::default(),
        components: rt.components.clone(),
        copies: rt.copies.clone(),
        copy_failures: Default::default(),
        launch_types: Default::default(),
    })
}

/// `Ok` if the endpoint exists (and is not deleted), without copying it.
pub async fn require_endpoint(app: &App, name: &str) -> Result<(), ControlError> {
    match app.endpoint(name) {
        Some(h) if !h.state.lock().await.deleted => Ok(()),
        _ => Err(not_found(app, ResourceKind::Endpoint, name)),
    }
}

/// Every live endpoint's record.
pub async fn endpoints(app: &App) -> Vec<EndpointRecord> {
    let mut out = vec![];
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if !rt.deleted {
            out.push(rt.record.clone());
        }
    }
    out
}

/// A registered scalable target.
pub fn scalable_target(app: &App, resource_id: &str) -> Result<Option<ScalableTarget>, ControlError> {
    Ok(app.store.get(Kind::ScalableTarget, resource_id)?)
}

/// A scaling policy by key (`<resource id>|<policy name>`).
pub fn scaling_policy(app: &App, key: &str) -> Result<Option<ScalingPolicy>, ControlError> {
    Ok(app.store.get(Kind::ScalingPolicy, key)?)
}

/// Every registered scalable target.
pub fn scalable_targets(app: &App) -> Result<Vec<ScalableTarget>, ControlError> {
    Ok(app.store.list(Kind::ScalableTarget)?)
}

/// Every scaling policy.
pub fn scaling_policies(app: &App) -> Result<Vec<ScalingPolicy>, ControlError> {
    Ok(app.store.list(Kind::ScalingPolicy)?)
}

/// Every recorded scaling activity.
pub fn scaling_activities(app: &App) -> Result<Vec<Activity>, ControlError> {
    Ok(app.store.list(Kind::ScalingActivity)?)
}

/// An endpoint's event history, oldest first; `None` for an endpoint that never existed
/// (events outlive a deleted endpoint).
pub fn events(app: &App, name: &str) -> Result<Option<Vec<Event>>, ControlError> {
    let events = app.store.events(name)?;
    let known = app.endpoint(name).is_some() || app.store.exists(Kind::Endpoint, name)? || !events.is_empty();
    Ok(known.then_some(events))
}

/// The tags of a resource for `aws:ResourceTag/<key>`: none for one that does not exist (yet).
pub fn resource_tags(app: &App, arn: &str) -> Result<Vec<Tag>, ControlError> {
    Ok(app.store.tags(arn)?)
}

/// The tags of an existing resource.
pub async fn tags(app: &Arc<App>, arn: &str) -> Result<Vec<Tag>, ControlError> {
    resolve_arn(app, arn).await?;
    Ok(app.store.tags(arn)?)
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// Builds a deployment from a stored configuration: validates it again (models may have been
/// deleted since) and snapshots the models it runs.
fn build_deployment(app: &App, config_name: &str, t: Timestamp) -> Result<Deployment, ControlError> {
    let cfg: EndpointConfig = document(app, config_name)?;
    let specs =
        validate::production_variants(&cfg.production_variants, &|n: &str| model_exists(app, n), &|n: &str| {
            app.arn("model", n)
        })?;
    let mut models = BTreeMap::new();
    for spec in &specs {
        if spec.hosts_components {
            // Its instances run the host agent; the components' copies run the models.
            models.insert(String::new(), components::host_container());
            continue;
        }
        for pool in &spec.pools {
            if models.contains_key(&pool.model_name) {
                continue;
            }
            let m: Model = document(app, &pool.model_name)?;
            models.insert(pool.model_name.clone(), m.primary_container.unwrap_or_default());
        }
    }
    Ok(Deployment {
        id: uuid::Uuid::new_v4().simple().to_string(),
        config_name: config_name.to_string(),
        start_time: t,
        variants: specs
            .into_iter()
            .map(|spec| DeployedVariant {
                desired_count: spec.initial_instance_count,
                desired_weight: spec.initial_weight,
                spec,
                provisioning: ProvisioningState::default(),
                stalled: None,
                health_failures: 0,
                unhealthy: None,
                status_message: None,
            })
            .collect(),
        models,
        async_config: cfg.async_inference_config,
    })
}

fn create_endpoint(
    app: &Arc<App>,
    name: String,
    config_name: &str,
    deployment_config: Option<Value>,
    tags: &[Tag],
) -> Result<Outcome, ControlError> {
    let arn = app.arn("endpoint", &name);
    let exists = || ControlError::AlreadyExists {
        kind: ResourceKind::Endpoint,
        arn: arn.clone(),
    };
    if app.endpoint(&name).is_some() || app.store.exists(Kind::Endpoint, &name)? {
        return Err(exists());
    }
    let t = app.clock.now();
    let deployment = build_deployment(app, config_name, t)?;
    let record = EndpointRecord::create(name, arn.clone(), deployment, deployment_config, t);
    if !app
        .store
        .insert_tagged(Kind::Endpoint, &record.name, t, &record, &arn, tags)?
    {
        return Err(exists());
    }
    app.register(record, vec![]);
    Ok(Outcome::Arn(arn))
}

/// Runs `change` on an endpoint's record under its lock, persists the result and wakes its
/// controller; a refused change or a failed write leaves the record as it was. Only the record
/// is handed over: instances are the controller's.
/// An endpoint that hosts inference components keeps its fleet while they exist (AWS refuses
/// the same): checked under the lock that changes the record, so no component is created in
/// between.
fn keeps_components_fleet(rec: &EndpointRecord, components: &[String]) -> Result<(), ControlError> {
    let deleting = rec.status() == crate::core::model::EndpointStatus::Deleting;
    if components.is_empty() || !(deleting || matches!(rec.operation(), Some(Operation::Deploy))) {
        return Ok(());
    }
    Err(ControlError::Invalid(ValidationError(format!(
        "EndpointName: the endpoint {} hosts inference components ({}); delete them with DeleteInferenceComponent \
         before the endpoint can be {}",
        rec.name,
        components.join(", "),
        if deleting { "deleted" } else { "updated" }
    ))))
}

async fn change_endpoint(
    app: &App,
    name: &str,
    change: impl FnOnce(&mut EndpointRecord) -> Result<(), ControlError>,
) -> Result<Outcome, ControlError> {
    let h = app
        .endpoint(name)
        .ok_or_else(|| not_found(app, ResourceKind::Endpoint, name))?;
    let mut rt = h.state.lock().await;
    if rt.deleted {
        return Err(not_found(app, ResourceKind::Endpoint, name));
    }
    let components = components::on_endpoint(&rt);
    let before = rt.record.clone();
    let stored = change(&mut rt.record)
        .and_then(|()| keeps_components_fleet(&rt.record, &components))
        .and_then(|()| {
            Ok(app
                .store
                .put(Kind::Endpoint, &rt.record.name, rt.record.creation_time, &rt.record)?)
        });
    if let Err(e) = stored {
        rt.record = before;
        return Err(e);
    }
    let arn = rt.record.arn.clone();
    drop(rt);
    h.notify.notify_one();
    Ok(Outcome::Arn(arn))
}

async fn update_endpoint(app: &Arc<App>, u: UpdateEndpoint) -> Result<Outcome, ControlError> {
    require_endpoint(app, &u.name).await?;
    let t = app.clock.now();
    let mut deployment = build_deployment(app, &u.config_name, t)?;
    change_endpoint(app, &u.name, |rec| {
        rec.check_begin(Operation::Deploy)?;
        if rec.active.config_name == u.config_name {
            return Err(ValidationError(format!(
                "EndpointConfigName: endpoint \"{}\" already uses endpoint configuration {}; update it to a new configuration",
                rec.arn, u.config_name
            ))
            .into());
        }
        // Switching between real-time and asynchronous would strand queued requests or take
        // real-time callers onto a queue; AWS refuses the switch too.
        if rec.active.async_config.is_some() != deployment.async_config.is_some() {
            let (from, to) = if rec.active.async_config.is_some() {
                ("asynchronous", "real-time")
            } else {
                ("real-time", "asynchronous")
            };
            return Err(ValidationError(format!(
                "EndpointConfigName: endpoint \"{}\" is {from} and endpoint configuration {} is {to}; \
                 an endpoint cannot change between real-time and asynchronous inference, create a new endpoint",
                rec.arn, u.config_name
            ))
            .into());
        }
        if u.retain_all_variant_properties {
            for v in deployment.variants.iter_mut() {
                if let Some(old) = rec.active.variants.iter().find(|o| o.spec.name == v.spec.name) {
                    if !u.excluded.iter().any(|e| e == "DesiredInstanceCount") {
                        v.desired_count = old.desired_count;
                    }
                    if !u.excluded.iter().any(|e| e == "DesiredWeight") {
                        v.desired_weight = old.desired_weight;
                    }
                }
            }
        }
        rec.rolling = None;
        if let Some((batch, wait_s)) = u.rolling {
            let counts = |d: &Deployment| -> BTreeMap<String, u32> {
                d.variants
                    .iter()
                    .map(|v| (v.spec.name.clone(), v.desired_count))
                    .collect()
            };
            let (old, new) = (counts(&rec.active), counts(&deployment));
            if old.keys().ne(new.keys()) {
                return Err(ValidationError(format!(
                    "DeploymentConfig.RollingUpdatePolicy: a rolling update needs the same variant names in the old and new endpoint configurations (old: {:?}, new: {:?}); use a blue/green update instead",
                    old.keys().collect::<Vec<_>>(),
                    new.keys().collect::<Vec<_>>()
                ))
                .into());
            }
            let batch = batch.resolve(new.values().copied().max().unwrap_or(1));
            let (rolling, first) = RollingUpdate::start(batch, wait_s, old, new);
            for v in deployment.variants.iter_mut() {
                v.desired_count = first.get(&v.spec.name).copied().unwrap_or(0);
            }
            rec.rolling = Some(rolling);
        }
        rec.pending = Some(deployment);
        rec.begin_deploy(t)?;
        if !u.retain_deployment_config {
            rec.deployment_config = u.deployment_config;
        }
        Ok(())
    })
    .await
}

async fn delete_endpoint(app: &Arc<App>, name: &str) -> Result<Outcome, ControlError> {
    change_endpoint(app, name, |rec| Ok(rec.begin_delete(app.clock.now())?)).await?;
    app.dataplane.routes.remove(name);
    Ok(Outcome::Done)
}

/// Applies desired weights and counts (UpdateEndpointWeightsAndCapacities and the autoscaler):
/// refused while an operation is in flight or once the endpoint failed; the endpoint goes
/// `Updating` and its controller provisions through the pools or scales in, fallback first.
async fn set_variants(app: &App, endpoint: &str, changes: &[VariantChange]) -> Result<Outcome, ControlError> {
    change_endpoint(app, endpoint, |rec| {
        rec.check_begin(Operation::Scale)?;
        let missing: Vec<&str> = changes
            .iter()
            .filter(|d| !rec.active.variants.iter().any(|v| v.spec.name == d.variant))
            .map(|d| d.variant.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(ValidationError(format!(
                "DesiredWeightsAndCapacities.VariantName: the variant(s) \"[{}]\" are not present in endpoint \"{}\".",
                missing.join(", "),
                rec.arn
            ))
            .into());
        }
        // Managed instance scaling owns the instance count of a components-hosting variant.
        if let Some(d) = changes.iter().find(|d| {
            d.count.is_some()
                && rec
                    .active
                    .variants
                    .iter()
                    .any(|v| v.spec.name == d.variant && v.spec.managed_scaling.is_some())
        }) {
            return Err(ValidationError(format!(
                "DesiredWeightsAndCapacities.DesiredInstanceCount: the variant {} of endpoint {} has \
                 ManagedInstanceScaling enabled; its instance count follows its inference components' copies \
                 (scale the components instead)",
                d.variant, rec.name
            ))
            .into());
        }
        // Zero instances only where a queue holds the requests meanwhile: an asynchronous
        // endpoint (AWS accepts DesiredInstanceCount 0 only there; its wording for the refusal
        // is not published).
        if rec.active.async_config.is_none()
            && let Some(d) = changes.iter().find(|d| d.count == Some(0))
        {
            return Err(ValidationError(format!(
                "DesiredWeightsAndCapacities.DesiredInstanceCount: variant \"{}\" of endpoint \"{}\" cannot have 0 instances: \
                 only an asynchronous endpoint (AsyncInferenceConfig) can scale to 0; use at least 1.",
                d.variant, rec.arn
            ))
            .into());
        }
        for d in changes {
            let Some(v) = rec.active.variants.iter_mut().find(|v| v.spec.name == d.variant) else {
                continue;
            };
            if let Some(w) = d.weight {
                v.desired_weight = w;
            }
            if let Some(c) = d.count {
                v.desired_count = c;
                v.stalled = None;
                v.health_failures = 0;
                v.provisioning.finish();
            }
        }
        Ok(rec.begin_scale(app.clock.now())?)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Tags and capacity

/// Checks that an ARN names an existing resource of this server.
async fn resolve_arn(app: &App, arn: &str) -> Result<(), ControlError> {
    let targets = format!(
        "arn:aws:application-autoscaling:{}:{}:scalable-target/",
        app.cfg.region, app.cfg.account_id
    );
    if arn.starts_with(&targets) {
        return match scalable_targets(app)?.iter().any(|t| t.scalable_target_arn == arn) {
            true => Ok(()),
            false => Err(ControlError::ObjectNotFound(format!(
                "No scalable target found for the ARN {arn}"
            ))),
        };
    }
    let alarms = format!("arn:aws:cloudwatch:{}:{}:alarm:", app.cfg.region, app.cfg.account_id);
    if let Some(name) = arn.strip_prefix(&alarms) {
        return match alarms::get(app, name)? {
            Some(_) => Ok(()),
            None => Err(ControlError::AlarmNotFound(format!(
                "The resource {arn} does not exist."
            ))),
        };
    }
    let prefix = format!("arn:aws:sagemaker:{}:{}:", app.cfg.region, app.cfg.account_id);
    let unknown = || ValidationError(format!("ResourceArn: resource \"{arn}\" does not exist"));
    let rest = arn.strip_prefix(&prefix).ok_or_else(|| {
        ValidationError(format!(
            "ResourceArn \"{arn}\" is not an ARN of this server (expected {prefix}<model|endpoint-config|endpoint|inference-component>/<name>)"
        ))
    })?;
    let (kind, name) = rest.split_once('/').ok_or_else(unknown)?;
    let exists = match kind {
        "model" => documents::<Model>(app)?.iter().any(|m| m.model_arn == arn),
        "inference-component" => components::components(app)?.iter().any(|c| c.arn == arn),
        "endpoint-config" => documents::<EndpointConfig>(app)?
            .iter()
            .any(|c| c.endpoint_config_arn == arn),
        "endpoint" => {
            let mut found = false;
            for h in app.all_endpoints() {
                let rt = h.state.lock().await;
                if !rt.deleted && rt.record.arn == arn {
                    found = true;
                    break;
                }
            }
            found && !name.is_empty()
        }
        _ => false,
    };
    if exists { Ok(()) } else { Err(unknown().into()) }
}

/// A `CapacityPinChanged` event on every live endpoint that lists `instance_type` in a pool
/// of any of its deployments.
async fn pin_changed_events(app: &App, instance_type: &str, message: &str) {
    let t = app.clock.now();
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        let lists = rt
            .record
            .deployments()
            .flat_map(|d| d.variants.iter())
            .any(|v| v.spec.pools.iter().any(|p| p.instance_type == instance_type));
        if lists {
            app.event(crate::core::endpoint::Event {
                time: t,
                endpoint_name: rt.record.name.clone(),
                variant_name: None,
                kind: "CapacityPinChanged".into(),
                instance_type: Some(instance_type.to_string()),
                priority: None,
                instance_id: None,
                result: None,
                message: message.to_string(),
            });
        }
    }
}

/// Capacity of `instance_type` changed by an operator: forget its back-off and wake every
/// controller so stalled variants may make progress.
async fn capacity_changed(app: &App, instance_type: &str) {
    app.ice().forget(instance_type);
    for h in app.all_endpoints() {
        let mut rt = h.state.lock().await;
        let rec = &mut rt.record;
        for d in std::iter::once(&mut rec.active).chain(rec.pending.iter_mut()) {
            for v in d.variants.iter_mut() {
                v.stalled = None;
            }
        }
        drop(rt);
        h.notify.notify_one();
    }
}
