//! Gathers the evidence of `core::explain` for one endpoint from the live state: its record and
//! instances, the provider's capacity and pins, the ICE memory, the event history, its scaling
//! targets, policies and alarms, its tags and the catalog.

use std::collections::BTreeMap;

use crate::control::app::App;
use crate::control::autoscaler::{Activity, ScalableTarget, ScalingPolicy};
use crate::control::{ControlError, alarms, controller, ledger};
use crate::core::catalog;
use crate::core::explain::{
    ActivityEvidence, AlarmEvidence, Attempt, BacklogEvidence, Backoff, ComponentEvidence, CostEvidence, Hardware,
    PolicyEvidence, PoolEvidence, RebalanceEvidence, RebalanceWait, ScalingEvidence, Snapshot, VariantEvidence,
};
use crate::core::planner::InstancePhase;
use crate::store::Kind;

/// The evidence about `name`, or `None` when there is no such endpoint.
pub async fn snapshot(app: &App, name: &str) -> Result<Option<Snapshot>, ControlError> {
    let Some(h) = app.endpoint(name) else {
        return Ok(None);
    };
    let rt = h.state.lock().await;
    if rt.deleted {
        return Ok(None);
    }
    let now = app.clock.now();
    let record = rt.record.clone();
    let instances = rt.instances.clone();
    let components: Vec<ComponentEvidence> = rt
        .components
        .values()
        .map(|c| {
            let (current, placement) = super::components::placement_status(
                &rt.copies
                    .iter()
                    .filter(|x| x.component == c.name)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            ComponentEvidence {
                name: c.name.clone(),
                status: c.status.as_str().to_string(),
                desired_copies: c.desired_copies,
                current_copies: current,
                placement,
                unplaceable: rt.reported.get(&format!("unplaceable|{}", c.name)).cloned(),
                failure_reason: c.failure_reason.clone(),
            }
        })
        .collect();
    drop(rt);

    let capacity: BTreeMap<String, crate::provider::CapacityEntry> = app
        .provider
        .capacity()
        .into_iter()
        .map(|e| (e.instance_type.clone(), e))
        .collect();
    let events = app.store.events(name)?;
    let (rebalance_enabled, rebalance_source) = controller::rebalance_setting(app, &record.arn);
    let min_runtime = app.cfg.rebalance.min_runtime_seconds;
    let policies: Vec<ScalingPolicy> = app.store.list(Kind::ScalingPolicy)?;
    let all_alarms = alarms::all(app)?;
    let activities: Vec<Activity> = app.store.list(Kind::ScalingActivity)?;
    let price = |t: &str| catalog::lookup(t).and_then(|s| s.price_usd_per_hour);

    let mut variants = vec![];
    let mut fleet_cost = 0.0;
    let mut preferred_cost = 0.0;
    let mut unpriced = std::collections::BTreeSet::new();
    for v in &record.active.variants {
        let mine: Vec<_> = instances
            .iter()
            .filter(|i| i.variant_name == v.spec.name && i.deployment_id == record.active.id)
            .collect();
        let preferred_type = v.spec.pools.first().map(|p| p.instance_type.clone());
        let mut pools = vec![];
        for p in &v.spec.pools {
            let current = mine.iter().filter(|i| i.instance_type == p.instance_type).count() as u32;
            let cap = capacity.get(&p.instance_type);
            let (availability, backoff) = {
                let ice = app.ice();
                match ice.get(&p.instance_type) {
                    Some(e) => (
                        if now < e.next_probe { "BackingOff" } else { "ProbeDue" },
                        Some(Backoff {
                            reason: e.reason.clone(),
                            consecutive_failures: e.failures,
                            first_seen: e.first_seen,
                            next_probe: e.next_probe,
                        }),
                    ),
                    None => ("Available", None),
                }
            };
            let last_attempt = events
                .iter()
                .rev()
                .find(|e| {
                    matches!(
                        e.kind.as_str(),
                        "LaunchAttempt" | "MigrationLaunch" | "CostCeilingReached"
                    ) && e.instance_type.as_deref() == Some(p.instance_type.as_str())
                        && e.variant_name.as_deref().is_none_or(|n| n == v.spec.name)
                })
                .map(|e| Attempt {
                    time: e.time,
                    result: e.result.clone().unwrap_or_default(),
                    message: e.message.clone(),
                });
            let spec = catalog::lookup(&p.instance_type);
            let fit = record
                .active
                .models
                .get(&p.model_name)
                .and_then(|c| c.environment.as_ref())
                .and_then(|env| {
                    catalog::ModelNeeds::from_environment(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()
                })
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let mut need = vec![];
                    if let Some(a) = n.min_accelerators {
                        need.push(format!("at least {a} accelerator(s)"));
                    }
                    if let Some(m) = n.min_accelerator_memory_gib {
                        need.push(format!("{m} GiB on each"));
                    }
                    let has = spec.and_then(|s| s.accelerator.as_ref()).map_or_else(
                        || "no accelerator".to_string(),
                        |a| format!("{} x {} GiB ({})", a.count, a.memory_gib_per_device, a.model),
                    );
                    format!(
                        "{} needs {}; {} has {has}",
                        p.model_name,
                        need.join(" with "),
                        p.instance_type
                    )
                });
            let type_price = price(&p.instance_type);
            if current > 0 {
                match type_price {
                    Some(a) => fleet_cost += a * f64::from(current),
                    None => {
                        unpriced.insert(p.instance_type.clone());
                    }
                }
                match preferred_type.as_deref().map(|t| (t, price(t))) {
                    Some((_, Some(b))) => preferred_cost += b * f64::from(current),
                    Some((t, None)) => {
                        unpriced.insert(t.to_string());
                    }
                    None => {}
                }
            }
            pools.push(PoolEvidence {
                priority: p.priority,
                instance_type: p.instance_type.clone(),
                model_name: p.model_name.clone(),
                current,
                in_service: mine
                    .iter()
                    .filter(|i| i.instance_type == p.instance_type && i.state == InstancePhase::InService)
                    .count() as u32,
                slots: cap.and_then(|c| c.slots),
                pinned_by: cap.and_then(|c| c.pinned_by).map(str::to_string),
                in_use: cap.map_or(0, |c| c.in_use),
                availability: availability.to_string(),
                backoff,
                last_attempt,
                hardware: Hardware {
                    vcpus: spec.map_or(0, |s| s.vcpus),
                    memory_gib: spec.map_or(0.0, |s| s.memory_gib),
                    accelerators: spec.map_or(0, |s| s.accelerator_count()),
                    accelerator_memory_gib: spec
                        .and_then(|s| s.accelerator.as_ref())
                        .map_or(0.0, |a| a.memory_gib_per_device),
                },
                fit,
                price_usd_per_hour: type_price,
            });
        }
        let rebalance_waits = mine
            .iter()
            .filter(|i| i.priority > 1 && i.state == InstancePhase::InService)
            .map(|i| RebalanceWait {
                instance_id: i.instance_id.clone(),
                instance_type: i.instance_type.clone(),
                priority: i.priority,
                eligible_at: i.launched_at + min_runtime as f64,
            })
            .collect();
        let resource_id = format!("endpoint/{name}/variant/{}", v.spec.name);
        let scaling = app
            .store
            .get::<ScalableTarget>(Kind::ScalableTarget, &resource_id)?
            .map(|t| ScalingEvidence {
                min_capacity: t.min_capacity,
                max_capacity: t.max_capacity,
                policies: policies
                    .iter()
                    .filter(|p| p.resource_id == resource_id)
                    .map(|p| PolicyEvidence {
                        policy_name: p.policy_name.clone(),
                        policy_type: p.policy_type.clone(),
                        alarms: all_alarms
                            .iter()
                            .filter(|a| {
                                a.owner_policy.as_deref() == Some(p.policy_arn.as_str())
                                    || a.alarm_actions.contains(&p.policy_arn)
                            })
                            .map(|a| AlarmEvidence {
                                alarm_name: a.name.clone(),
                                state: a.state.as_str().to_string(),
                                reason: a.state_reason.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
                last_activity: activities
                    .iter()
                    .filter(|a| a.resource_id == resource_id)
                    .max_by(|a, b| a.start_time.total_cmp(&b.start_time))
                    .map(|a| ActivityEvidence {
                        time: a.start_time,
                        description: a.description.clone(),
                        cause: a.cause.clone(),
                    }),
            });
        variants.push(VariantEvidence {
            variant_name: v.spec.name.clone(),
            desired_count: v.desired_count,
            in_service: mine.iter().filter(|i| i.state == InstancePhase::InService).count() as u32,
            launching: mine.iter().filter(|i| i.state == InstancePhase::Launching).count() as u32,
            status_message: v.status_message.clone(),
            provisioning_deadline: v.provisioning.deadline,
            stalled: v.stalled.clone(),
            pools,
            rebalance_waits,
            scaling,
        });
    }
    let backlog = if record.active.async_config.is_some() {
        let (q, n) = (app.queue.clone(), name.to_string());
        tokio::task::spawn_blocking(move || q.backlog(&n, now))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| BacklogEvidence {
                size: b.size,
                oldest_age_seconds: b.oldest_age_seconds,
            })
    } else {
        None
    };
    Ok(Some(Snapshot {
        endpoint_name: name.to_string(),
        status: record.status().as_str().to_string(),
        failure_reason: record.failure_reason.clone(),
        generated_at: now,
        variants,
        rebalance: RebalanceEvidence {
            enabled: rebalance_enabled,
            source: rebalance_source.to_string(),
            min_runtime_seconds: min_runtime,
        },
        cost: CostEvidence {
            hourly_cost_usd: fleet_cost,
            all_preferred_hourly_cost_usd: preferred_cost,
            max_hourly_cost_usd: ledger::ceiling_of(app, name),
            unpriced_types: unpriced.into_iter().collect(),
        },
        backlog,
        components,
    }))
}
