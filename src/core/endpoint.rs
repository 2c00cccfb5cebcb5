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
    /// The configuration's `AsyncInferenceConfig`: set for an asynchronous endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_config: Option<crate::core::model::AsyncInferenceConfig>,
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
    #[error("Cannot update failed endpoint \"{arn}\"{}", if *.deploy { "; delete it and create it again." } else { "." })]
    Failed {
        /// The endpoint's ARN.
        arn: String,
        /// Whether the refused move was an `UpdateEndpoint` (its message says what to do).
        deploy: bool,
    },
    /// An operation cannot end as asked: none is in flight, or another one (only a creation
    /// fails, only a deployment rolls back). A bug in the caller, never a client's doing.
    #[error("endpoint \"{arn}\" has no {wanted} in flight (in flight: {actual:?})")]
    NotInFlight {
        /// The endpoint's ARN.
        arn: String,
        /// What the refused move ends.
        wanted: &'static str,
        /// The operation in flight.
        actual: Option<Operation>,
    },
}

/// What an endpoint whose deployment rolled back says about it.
pub fn rollback_message(reason: &str) -> String {
    format!("Update rolled back; the endpoint keeps serving its previous configuration. {reason}")
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

    /// Every deployment, active first.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        std::iter::once(&self.active).chain(self.pending.iter())
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
    /// deleting, and only `DeleteEndpoint` once it failed. `Create` never begins on an existing
    /// record (see [`EndpointRecord::create`]).
    pub fn check_begin(&self, op: Operation) -> Result<(), LifecycleError> {
        if self.status.in_progress() || self.operation.is_some() || op == Operation::Create {
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

    fn begin(&mut self, op: Operation, now: Timestamp) -> Result<(), LifecycleError> {
        self.check_begin(op)?;
        self.status = super::planner::status_during(op);
        self.operation = Some(op);
        self.last_modified_time = now;
        Ok(())
    }

    /// Begins an `UpdateEndpoint` (blue/green or rolling): the endpoint goes `Updating` and the
    /// last failure is cleared.
    pub fn begin_deploy(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.begin(Operation::Deploy, now)?;
        self.failure_reason = None;
        Ok(())
    }

    /// Begins a change of desired counts or weights (`UpdateEndpointWeightsAndCapacities`, the
    /// autoscaler): the endpoint goes `Updating`.
    pub fn begin_scale(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.begin(Operation::Scale, now)
    }

    /// Begins deleting: refused while an operation is in flight (a failed endpoint can be
    /// deleted).
    pub fn begin_delete(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        if self.status.in_progress() || self.operation.is_some() {
            return Err(LifecycleError::InProgress { arn: self.arn.clone() });
        }
        self.status = EndpointStatus::Deleting;
        self.last_modified_time = now;
        Ok(())
    }

    /// Ends the operation in flight if it is one of `allowed`: the endpoint serves
    /// (`InService`); provisioning state, health verdicts and status messages of every variant
    /// are cleared.
    fn end(&mut self, allowed: &[Operation], wanted: &'static str, now: Timestamp) -> Result<(), LifecycleError> {
        if !self.operation.is_some_and(|op| allowed.contains(&op)) {
            return Err(LifecycleError::NotInFlight {
                arn: self.arn.clone(),
                wanted,
                actual: self.operation,
            });
        }
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
        Ok(())
    }

    /// The operation in flight succeeded (or, for a scaling, ended with what it could get):
    /// `InService`.
    pub fn finish(&mut self, now: Timestamp) -> Result<(), LifecycleError> {
        self.end(
            &[Operation::Create, Operation::Deploy, Operation::Scale],
            "operation",
            now,
        )
    }

    /// The creation in flight failed: `Failed` with `reason` (cut to AWS's length).
    pub fn fail(&mut self, reason: String, now: Timestamp) -> Result<(), LifecycleError> {
        self.end(&[Operation::Create], "creation", now)?;
        self.status = EndpointStatus::Failed;
        self.failure_reason = Some(truncate_reason(reason));
        Ok(())
    }

    /// The deployment in flight failed: back `InService` on the previous fleet, a rolling
    /// deployment's old variants back to their original counts, and `reason` kept as the
    /// `FailureReason`. The caller stops the pending fleet's instances.
    pub fn roll_back(&mut self, reason: &str, now: Timestamp) -> Result<(), LifecycleError> {
        let rolling = self.rolling.take();
        if let Err(e) = self.end(&[Operation::Deploy], "deployment", now) {
            self.rolling = rolling;
            return Err(e);
        }
        if let Some(r) = rolling {
            for v in self.active.variants.iter_mut() {
                if let Some(n) = r.original.get(&v.spec.name) {
                    v.desired_count = *n;
                }
            }
        }
        self.failure_reason = Some(truncate_reason(rollback_message(reason)));
        Ok(())
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

/// The message of a `CapacityPinChanged` event: the type, its pin before and after (slots and
/// where the pin comes from: `config` or `runtime`; `None`: not pinned, fitted to the host),
/// and who changed it when known.
pub fn pin_change_message(
    instance_type: &str,
    before: Option<(u32, &str)>,
    after: Option<(u32, &str)>,
    by: Option<&str>,
) -> String {
    let pin = |p: Option<(u32, &str)>| match p {
        None => "not pinned (fitted to the host)".to_string(),
        Some((1, from)) => format!("1 slot ({from} pin)"),
        Some((n, from)) => format!("{n} slots ({from} pin)"),
    };
    let who = by.map_or_else(|| "by an operator (caller unknown)".to_string(), |b| format!("by {b}"));
    format!(
        "capacity of {instance_type} changed {who}: {} -> {}",
        pin(before),
        pin(after)
    )
}

/// The message of a `ServerStarted` event: what a starting server found of an endpoint's fleet,
/// so the launches that follow a restart are explained (`pid` is the new server's).
pub fn server_started_message(
    pid: u32,
    adopted: &[String],
    lost: &[String],
    desired: u32,
    untracked_stopped: usize,
) -> String {
    let list = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!(" ({})", ids.join(", "))
        }
    };
    let relaunch = desired.saturating_sub(adopted.len() as u32);
    let mut m = format!(
        "spillway started (pid {pid}): adopted {} running instance{}{} without restarting {}; \
         {} instance{} gone{}; {} of the {desired} desired instance{} {} launched through the pools",
        adopted.len(),
        if adopted.len() == 1 { "" } else { "s" },
        list(adopted),
        if adopted.len() == 1 { "it" } else { "them" },
        lost.len(),
        if lost.len() == 1 { " was" } else { "s were" },
        list(lost),
        relaunch,
        if desired == 1 { "" } else { "s" },
        if relaunch == 1 { "is" } else { "are" },
    );
    if untracked_stopped > 0 {
        m.push_str(&format!(
            "; stopped {untracked_stopped} model process group{} no record tracked (server-wide)",
            if untracked_stopped == 1 { "" } else { "s" }
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_started_messages_say_what_was_adopted_and_what_is_relaunched() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            server_started_message(7, &ids(&["i-a"]), &ids(&["i-b", "i-c"]), 3, 0),
            "spillway started (pid 7): adopted 1 running instance (i-a) without restarting it; \
             2 instances were gone (i-b, i-c); 2 of the 3 desired instances are launched through the pools"
        );
        assert_eq!(
            server_started_message(7, &[], &[], 1, 2),
            "spillway started (pid 7): adopted 0 running instances without restarting them; \
             0 instances were gone; 1 of the 1 desired instance is launched through the pools; \
             stopped 2 model process groups no record tracked (server-wide)"
        );
    }

    #[test]
    fn pin_change_messages_name_both_pins_and_the_caller() {
        assert_eq!(
            pin_change_message(
                "ml.g6e.2xlarge",
                Some((0, "config")),
                Some((1, "runtime")),
                Some("arn:aws:iam::1:user/ops")
            ),
            "capacity of ml.g6e.2xlarge changed by arn:aws:iam::1:user/ops: 0 slots (config pin) -> 1 slot (runtime pin)"
        );
        assert_eq!(
            pin_change_message("ml.m5.xlarge", Some((2, "runtime")), None, None),
            "capacity of ml.m5.xlarge changed by an operator (caller unknown): 2 slots (runtime pin) -> not pinned (fitted to the host)"
        );
    }

    fn deployment() -> Deployment {
        Deployment {
            id: "d1".into(),
            config_name: "c".into(),
            start_time: 0.0,
            variants: vec![],
            models: BTreeMap::new(),
            async_config: None,
        }
    }

    fn creating() -> EndpointRecord {
        EndpointRecord::create("e".into(), "arn:e".into(), deployment(), None, 1.0)
    }

    /// Every state the lifecycle methods can reach, with how it was reached.
    fn states() -> Vec<(&'static str, EndpointRecord)> {
        let c = creating();
        let mut in_service = creating();
        in_service.finish(2.0).unwrap();
        let mut updating = in_service.clone();
        updating.begin_deploy(3.0).unwrap();
        let mut scaling = in_service.clone();
        scaling.begin_scale(3.0).unwrap();
        let mut failed = creating();
        failed.fail("no capacity".into(), 2.0).unwrap();
        let mut deleting = in_service.clone();
        deleting.begin_delete(3.0).unwrap();
        vec![
            ("creating", c),
            ("in service", in_service),
            ("updating", updating),
            ("scaling", scaling),
            ("failed", failed),
            ("deleting", deleting),
        ]
    }

    #[test]
    fn every_move_from_every_state() {
        use EndpointStatus::*;
        for (name, rec) in states() {
            for op in [Operation::Create, Operation::Deploy, Operation::Scale] {
                let mut r = rec.clone();
                let result = match op {
                    Operation::Create => r.check_begin(op),
                    Operation::Deploy => r.begin_deploy(10.0),
                    Operation::Scale => r.begin_scale(10.0),
                };
                let legal = rec.status() == InService && op != Operation::Create;
                assert_eq!(result.is_ok(), legal, "{name}: begin {op:?} -> {result:?}");
                if legal {
                    assert_eq!(r.status(), Updating, "{name}: {op:?}");
                    assert_eq!(r.operation(), Some(op));
                    assert_eq!(r.last_modified_time, 10.0);
                } else {
                    assert_eq!(r, rec, "{name}: a refused {op:?} changes nothing");
                }
            }
            for (end, allowed) in [
                (
                    "finish",
                    [Operation::Create, Operation::Deploy, Operation::Scale].as_slice(),
                ),
                ("fail", &[Operation::Create]),
                ("roll back", &[Operation::Deploy]),
            ] {
                let mut r = rec.clone();
                let result = match end {
                    "finish" => r.finish(10.0),
                    "fail" => r.fail("why".into(), 10.0),
                    _ => r.roll_back("why", 10.0),
                };
                let legal = rec.operation().is_some_and(|op| allowed.contains(&op));
                assert_eq!(result.is_ok(), legal, "{name}: {end} -> {result:?}");
                if legal {
                    let want = if end == "fail" { Failed } else { InService };
                    assert_eq!((r.status(), r.operation()), (want, None), "{name}: {end}");
                } else {
                    assert_eq!(r, rec, "{name}: a refused {end} changes nothing");
                }
            }
            let mut r = rec.clone();
            let result = r.begin_delete(10.0);
            let legal = matches!(rec.status(), InService | Failed);
            assert_eq!(result.is_ok(), legal, "{name}: delete -> {result:?}");
            if legal {
                assert_eq!((r.status(), r.operation()), (Deleting, None));
            } else {
                assert_eq!(r, rec, "{name}: a refused delete changes nothing");
            }
        }
    }

    #[test]
    fn refusals_name_the_endpoint_and_what_to_do() {
        let mut failed = creating();
        failed.fail("x".into(), 2.0).unwrap();
        assert_eq!(
            failed.begin_scale(3.0).unwrap_err().to_string(),
            "Cannot update failed endpoint \"arn:e\"."
        );
        assert_eq!(
            failed.begin_deploy(3.0).unwrap_err().to_string(),
            "Cannot update failed endpoint \"arn:e\"; delete it and create it again."
        );
        assert_eq!(
            creating().begin_scale(3.0).unwrap_err().to_string(),
            "Cannot update in-progress endpoint \"arn:e\"."
        );
    }

    #[test]
    fn finishing_clears_the_operation_and_failing_keeps_the_reason_short() {
        let mut r = creating();
        r.fail("é".repeat(2000), 5.0).unwrap();
        assert_eq!((r.status(), r.operation()), (EndpointStatus::Failed, None));
        let reason = r.failure_reason.clone().unwrap();
        assert!(reason.len() <= 1024 && reason.ends_with("..."), "{}", reason.len());
        let mut r = creating();
        r.finish(5.0).unwrap();
        r.begin_deploy(6.0).unwrap();
        r.finish(7.0).unwrap();
        assert_eq!(
            (r.status(), r.operation(), r.rolling.clone()),
            (EndpointStatus::InService, None, None)
        );
        assert_eq!(r.last_modified_time, 7.0);
    }

    #[test]
    fn a_deployment_clears_the_last_failure_and_a_scale_keeps_it() {
        let mut r = creating();
        r.finish(2.0).unwrap();
        r.failure_reason = Some("Update rolled back".into());
        let mut scaled = r.clone();
        scaled.begin_scale(3.0).unwrap();
        assert!(scaled.failure_reason.is_some());
        r.begin_deploy(3.0).unwrap();
        assert!(r.failure_reason.is_none());
        r.roll_back("the new fleet failed", 4.0).unwrap();
        assert!(
            r.failure_reason
                .as_deref()
                .is_some_and(|f| f.starts_with("Update rolled back") && f.ends_with("the new fleet failed"))
        );
    }
}
