//! "Why does it run there?": the evidence about one endpoint's fleet, gathered by
//! `control::explain`, and the plain sentences an operator reads first (`spillway explain`,
//! the console, `GET /_spillway/endpoints/{name}/explain`).
//!
//! The [`Snapshot`] is the evidence (serialized as the JSON answer); [`sentences`] turns it into
//! text, per variant: where its instances run and why not on the preferred type, what each
//! type answered when last tried, its back-off and next probe, what rebalancing and scaling
//! wait for, and what the fleet costs.

use serde::Serialize;

use super::model::Timestamp;

/// Everything known about one endpoint's placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Endpoint name.
    pub endpoint_name: String,
    /// `EndpointStatus`.
    pub status: String,
    /// Why it failed or rolled back, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// When the evidence was gathered (epoch seconds).
    pub generated_at: Timestamp,
    /// Its variants (the serving deployment's).
    pub variants: Vec<VariantEvidence>,
    /// Whether rebalancing is on for it, and why.
    pub rebalance: RebalanceEvidence,
    /// Its cost per hour now.
    pub cost: CostEvidence,
    /// An asynchronous endpoint's queue: requests queued or running, and the age of the oldest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogEvidence>,
    /// The inference components placed on it (empty for an endpoint whose variants run models).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub components: Vec<ComponentEvidence>,
}

/// One inference component and where its copies run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentEvidence {
    /// Name.
    pub name: String,
    /// `InferenceComponentStatus`.
    pub status: String,
    /// `DesiredCopyCount`.
    pub desired_copies: u32,
    /// Copies in service.
    pub current_copies: u32,
    /// Copies in service per instance type.
    pub placement: Vec<(String, u32)>,
    /// Why copies wait, when they do (the last `CopiesUnplaceable` message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unplaceable: Option<String>,
    /// Why it failed or its last update rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// An asynchronous endpoint's backlog (`ApproximateBacklogSize`, `ApproximateAgeOfOldestRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BacklogEvidence {
    /// Requests queued or running.
    pub size: u64,
    /// Seconds since the oldest of them was accepted (0 when there is none).
    pub oldest_age_seconds: f64,
}

/// One variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantEvidence {
    /// Variant name.
    pub variant_name: String,
    /// Instances wanted.
    pub desired_count: u32,
    /// Instances in service.
    pub in_service: u32,
    /// Instances launching (not yet healthy).
    pub launching: u32,
    /// What provisioning says it is doing (`VariantStatus.StatusMessage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// When the provisioning in flight gives up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_deadline: Option<Timestamp>,
    /// Why replacement launches gave up, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// The pools, by priority.
    pub pools: Vec<PoolEvidence>,
    /// Instances that rebalancing would replace, and when they may be.
    pub rebalance_waits: Vec<RebalanceWait>,
    /// Its scalable target and policies, if registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingEvidence>,
}

/// One pool of a variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolEvidence {
    /// 1 is preferred.
    pub priority: u8,
    /// Instance type.
    pub instance_type: String,
    /// The model its instances run.
    pub model_name: String,
    /// Instances of the variant on this pool now (any phase).
    pub current: u32,
    /// Of those, the ones in service.
    pub in_service: u32,
    /// The type's pinned slots on this host (`None`: decided by what the hardware fits).
    pub slots: Option<u32>,
    /// Where the pin comes from (`config` or `runtime`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<String>,
    /// Instances of the type running now, all endpoints.
    pub in_use: u32,
    /// `Available`, `BackingOff` or `ProbeDue`.
    pub availability: String,
    /// While backing off or due: the last insufficient-capacity answer, its streak and the
    /// next probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The last launch attempt on this type for this endpoint's variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Attempt>,
    /// The catalog's hardware for the type.
    pub hardware: Hardware,
    /// What the pool's model declares it needs (`SPILLWAY_MIN_ACCELERATORS`,
    /// `SPILLWAY_MIN_ACCELERATOR_MEMORY_GB`) against the type's hardware, if it declares
    /// anything (the fit check refused every pool that cannot hold it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<String>,
    /// On-demand price, USD per hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_usd_per_hour: Option<f64>,
}

/// ICE memory of one type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The provider's last explanation.
    pub reason: String,
    /// Consecutive insufficient-capacity answers.
    pub consecutive_failures: u32,
    /// First answer of the streak.
    pub first_seen: Timestamp,
    /// No launch before this time.
    pub next_probe: Timestamp,
}

/// One launch attempt, from the event history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When.
    pub time: Timestamp,
    /// `Launched`, `InsufficientCapacity`, `Failed`, ...
    pub result: String,
    /// The event's message.
    pub message: String,
}

/// What the catalog says a type has.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Accelerators.
    pub accelerators: u32,
    /// Memory per accelerator, GiB.
    pub accelerator_memory_gib: f64,
}

/// An instance that rebalancing would move to a preferred type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceWait {
    /// The instance.
    pub instance_id: String,
    /// Its type.
    pub instance_type: String,
    /// Its pool priority.
    pub priority: u8,
    /// When it has run `min_runtime_seconds` and may be replaced.
    pub eligible_at: Timestamp,
}

/// Rebalancing of the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceEvidence {
    /// On or off.
    pub enabled: bool,
    /// `tag` (spillway:rebalance) or `config` ([rebalance] enabled).
    pub source: String,
    /// `[rebalance] min_runtime_seconds`.
    pub min_runtime_seconds: u64,
}

/// A variant's autoscaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingEvidence {
    /// MinCapacity.
    pub min_capacity: u32,
    /// MaxCapacity.
    pub max_capacity: u32,
    /// Its policies.
    pub policies: Vec<PolicyEvidence>,
    /// Its latest scaling activity, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<ActivityEvidence>,
}

/// One scaling activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEvidence {
    /// When it started.
    pub time: Timestamp,
    /// "Setting desired instance count to N."
    pub description: String,
    /// Why.
    pub cause: String,
}

/// One scaling policy and the alarms that drive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEvidence {
    /// Policy name.
    pub policy_name: String,
    /// `TargetTrackingScaling` or `StepScaling`.
    pub policy_type: String,
    /// Alarms: name, state and reason.
    pub alarms: Vec<AlarmEvidence>,
}

/// One alarm's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmEvidence {
    /// Name.
    pub alarm_name: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`.
    pub state: String,
    /// Why.
    pub reason: String,
}

/// What the fleet costs per hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostEvidence {
    /// The current fleet, USD per hour (types without a price count 0).
    pub hourly_cost_usd: f64,
    /// The same instance counts on each variant's preferred type.
    pub all_preferred_hourly_cost_usd: f64,
    /// The ceiling (tag `spillway:max-hourly-cost`), if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hourly_cost_usd: Option<f64>,
    /// Types the endpoint holds whose price is not known.
    pub unpriced_types: Vec<String>,
}

/// Seconds as an operator reads them: `42s`, `3m 20s`, `2h 5m`.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The plain sentences that answer "why does it run there?", most important first.
pub fn sentences(s: &Snapshot) -> Vec<String> {
    let now = s.generated_at;
    let mut out = vec![];
    let total: u32 = s.variants.iter().map(|v| v.in_service).sum();
    let wanted: u32 = s.variants.iter().map(|v| v.desired_count).sum();
    out.push(format!(
        "Endpoint {} is {} with {total} of {} in service.",
        s.endpoint_name,
        s.status,
        plural(wanted, "instance", "instances")
    ));
    if let Some(b) = &s.backlog {
        out.push(match b.size {
            0 => "It is asynchronous; its queue is empty.".to_string(),
            n => format!(
                "It is asynchronous: {} queued or running, the oldest accepted {} ago.",
                plural(u32::try_from(n).unwrap_or(u32::MAX), "request", "requests"),
                human_seconds(b.oldest_age_seconds)
            ),
        });
    }
    if let Some(r) = &s.failure_reason {
        out.push(format!("Its last failure: {r}"));
    }
    for c in &s.components {
        let placed: Vec<String> = c.placement.iter().map(|(t, n)| format!("{n} on {t}")).collect();
        let mut line = format!(
            "Inference component {} is {} with {} of {} in service{}.",
            c.name,
            c.status,
            c.current_copies,
            plural(c.desired_copies, "copy", "copies"),
            if placed.is_empty() {
                String::new()
            } else {
                format!(" ({})", placed.join(", "))
            }
        );
        if let Some(u) = &c.unplaceable
            && c.current_copies < c.desired_copies
        {
            line.push_str(&format!(" Waiting: {u}."));
        }
        if let Some(r) = &c.failure_reason {
            line.push_str(&format!(" Last failure: {r}"));
        }
        out.push(line);
    }
    for v in &s.variants {
        let placed: Vec<String> = v
            .pools
            .iter()
            .filter(|p| p.current > 0)
            .map(|p| format!("{} on {} (priority {})", p.current, p.instance_type, p.priority))
            .collect();
        let where_ = if placed.is_empty() && v.desired_count == 0 {
            "none".to_string()
        } else if placed.is_empty() {
            "no instances yet".to_string()
        } else {
            placed.join(", ")
        };
        out.push(format!(
            "Variant {} wants {}: {where_}.",
            v.variant_name,
            plural(v.desired_count, "instance", "instances")
        ));
        let Some(preferred) = v.pools.first() else {
            continue;
        };
        if v.desired_count == 0 && placed.is_empty() {
            // Only an asynchronous endpoint's variant gets here (zero is refused for real-time).
            out.push(format!(
                "Variant {} is scaled to zero: its requests wait in the endpoint's queue, and scaling up starts again at priority 1 ({}) unless that type is backing off.",
                v.variant_name, preferred.instance_type
            ));
        }
        let on_fallback: u32 = v.pools.iter().skip(1).map(|p| p.current).sum();
        if on_fallback == 0 && preferred.current >= v.desired_count && v.desired_count > 0 {
            out.push(format!(
                "Every instance runs on its preferred type {}: nothing to explain.",
                preferred.instance_type
            ));
        }
        for p in &v.pools {
            let mut line = format!("{} (priority {}): ", p.instance_type, p.priority);
            match &p.last_attempt {
                Some(a) => line.push_str(&format!(
                    "last tried {} ago, answered {} ({}).",
                    human_seconds(now - a.time),
                    a.result,
                    a.message
                )),
                None => line.push_str("not tried for this endpoint."),
            }
            match (&p.availability[..], &p.backoff) {
                ("BackingOff", Some(b)) => line.push_str(&format!(
                    " Backing off after {} in a row; next probe in {}.",
                    plural(
                        b.consecutive_failures,
                        "insufficient-capacity answer",
                        "insufficient-capacity answers"
                    ),
                    human_seconds(b.next_probe - now)
                )),
                ("ProbeDue", Some(_)) => {
                    line.push_str(" Its back-off is over: the next launch that needs it probes it.")
                }
                _ => {}
            }
            match p.slots {
                Some(0) => line.push_str(&format!(
                    " This host has no capacity for it: pinned to 0 slots ({}).",
                    p.pinned_by.as_deref().unwrap_or("config")
                )),
                Some(n) => line.push_str(&format!(
                    " Pinned to {} here ({}), {} in use.",
                    plural(n, "slot", "slots"),
                    p.pinned_by.as_deref().unwrap_or("config"),
                    p.in_use
                )),
                None => {}
            }
            if let Some(f) = &p.fit {
                line.push_str(&format!(" Fit: {f}."));
            }
            out.push(line);
        }
        if on_fallback > 0 {
            if !s.rebalance.enabled {
                out.push(format!(
                    "{} on fallback pools stay there: rebalancing is off ({}); tag the endpoint spillway:rebalance=enabled to move back to {} when it has capacity.",
                    plural(on_fallback, "instance", "instances"),
                    if s.rebalance.source == "tag" { "tag spillway:rebalance" } else { "[rebalance] enabled = false" },
                    preferred.instance_type
                ));
            } else if preferred.availability == "BackingOff" {
                out.push(format!(
                    "Rebalancing is on: {} back to {} once it has capacity (next probe in {}).",
                    plural(on_fallback, "fallback instance moves", "fallback instances move"),
                    preferred.instance_type,
                    preferred
                        .backoff
                        .as_ref()
                        .map_or_else(|| "0s".into(), |b| human_seconds(b.next_probe - now))
                ));
            } else if let (Some(ceiling), Some(price)) = (s.cost.max_hourly_cost_usd, preferred.price_usd_per_hour)
                && s.cost.hourly_cost_usd + price > ceiling + 1e-9
            {
                out.push(format!(
                    "Rebalancing is held by the cost ceiling: a surge instance on {} (${price:.2}/h) would take the endpoint from ${:.2}/h to ${:.2}/h, over its ceiling ${ceiling:.2}/h (tag spillway:max-hourly-cost).",
                    preferred.instance_type,
                    s.cost.hourly_cost_usd,
                    s.cost.hourly_cost_usd + price
                ));
            } else if let Some(w) = v
                .rebalance_waits
                .iter()
                .filter(|w| w.eligible_at > now)
                .min_by(|a, b| a.eligible_at.total_cmp(&b.eligible_at))
            {
                out.push(format!(
                    "Rebalancing is on: {} on {} is replaced once it has run {}s, in {}.",
                    w.instance_id,
                    w.instance_type,
                    s.rebalance.min_runtime_seconds,
                    human_seconds(w.eligible_at - now)
                ));
            } else {
                out.push(format!(
                    "Rebalancing is on: fallback instances are being replaced on higher-priority pools (one surge at a time); the preferred type {} is {}.",
                    preferred.instance_type,
                    preferred.availability
                ));
            }
        }
        if let Some(m) = &v.status_message {
            out.push(format!("Provisioning: {m}."));
        }
        if let Some(d) = v.provisioning_deadline {
            out.push(format!(
                "It gives up in {} if it cannot reach {}.",
                human_seconds(d - now),
                plural(v.desired_count, "instance", "instances")
            ));
        }
        if let Some(st) = &v.stalled {
            out.push(format!("Replacement launches gave up: {st}"));
        }
        if let Some(sc) = &v.scaling {
            let mut line = format!(
                "Autoscaling keeps it between {} and {}",
                sc.min_capacity,
                plural(sc.max_capacity, "instance", "instances")
            );
            if sc.policies.is_empty() {
                line.push_str(" with no policy.");
            } else {
                let ps: Vec<String> = sc
                    .policies
                    .iter()
                    .map(|p| {
                        let alarms: Vec<String> = p
                            .alarms
                            .iter()
                            .map(|a| format!("{} {}", a.alarm_name, a.state))
                            .collect();
                        if alarms.is_empty() {
                            format!("{} ({})", p.policy_name, p.policy_type)
                        } else {
                            format!("{} ({}; {})", p.policy_name, p.policy_type, alarms.join(", "))
                        }
                    })
                    .collect();
                line.push_str(&format!(": {}.", ps.join("; ")));
            }
            if let Some(a) = &sc.last_activity {
                line.push_str(&format!(
                    " Last scaling {} ago: {} ({})",
                    human_seconds(now - a.time),
                    a.description,
                    a.cause
                ));
            }
            out.push(line);
        }
    }
    let c = &s.cost;
    let mut line = format!("It costs ${:.2}/h now", c.hourly_cost_usd);
    if (c.hourly_cost_usd - c.all_preferred_hourly_cost_usd).abs() > 0.005 {
        line.push_str(&format!(
            " (${:.2}/h on preferred types only)",
            c.all_preferred_hourly_cost_usd
        ));
    }
    match c.max_hourly_cost_usd {
        Some(m) => line.push_str(&format!("; ceiling ${m:.2}/h (tag spillway:max-hourly-cost).")),
        None => line.push('.'),
    }
    if !c.unpriced_types.is_empty() {
        line.push_str(&format!(" No price is known for {}.", c.unpriced_types.join(", ")));
    }
    out.push(line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(priority: u8, t: &str, current: u32) -> PoolEvidence {
        PoolEvidence {
            priority,
            instance_type: t.into(),
            model_name: "m".into(),
            current,
            in_service: current,
            slots: None,
            pinned_by: None,
            in_use: current,
            availability: "Available".into(),
            backoff: None,
            last_attempt: None,
            hardware: Hardware {
                vcpus: 8,
                memory_gib: 32.0,
                accelerators: 1,
                accelerator_memory_gib: 24.0,
            },
            fit: None,
            price_usd_per_hour: Some(1.0),
        }
    }

    fn snapshot(pools: Vec<PoolEvidence>, rebalance: bool) -> Snapshot {
        Snapshot {
            endpoint_name: "e".into(),
            status: "InService".into(),
            failure_reason: None,
            generated_at: 1000.0,
            variants: vec![VariantEvidence {
                variant_name: "v".into(),
                desired_count: 2,
                in_service: 2,
                launching: 0,
                status_message: None,
                provisioning_deadline: None,
                stalled: None,
                pools,
                rebalance_waits: vec![],
                scaling: None,
            }],
            rebalance: RebalanceEvidence {
                enabled: rebalance,
                source: "config".into(),
                min_runtime_seconds: 300,
            },
            cost: CostEvidence {
                hourly_cost_usd: 2.0,
                all_preferred_hourly_cost_usd: 2.0,
                max_hourly_cost_usd: None,
                unpriced_types: vec![],
            },
            backlog: None,
            components: vec![],
        }
    }

    #[test]
    fn a_fallback_says_what_the_preferred_type_answered_and_when_it_is_probed() {
        let mut p1 = pool(1, "big", 0);
        p1.slots = Some(0);
        p1.pinned_by = Some("runtime".into());
        p1.availability = "BackingOff".into();
        p1.backoff = Some(Backoff {
            reason: "no slot".into(),
            consecutive_failures: 3,
            first_seen: 900.0,
            next_probe: 1042.0,
        });
        p1.last_attempt = Some(Attempt {
            time: 990.0,
            result: "InsufficientCapacity".into(),
            message: "no slot".into(),
        });
        let s = snapshot(vec![p1, pool(2, "small", 2)], false);
        let text = sentences(&s).join("\n");
        assert!(text.contains("2 on small (priority 2)"), "{text}");
        assert!(
            text.contains("last tried 10s ago, answered InsufficientCapacity"),
            "{text}"
        );
        assert!(
            text.contains("3 insufficient-capacity answers in a row; next probe in 42s"),
            "{text}"
        );
        assert!(text.contains("pinned to 0 slots (runtime)"), "{text}");
        assert!(text.contains("rebalancing is off"), "{text}");
        assert!(!text.contains("nothing to explain"), "{text}");
    }

    #[test]
    fn rebalancing_that_waits_out_the_minimum_runtime_says_until_when() {
        let mut s = snapshot(vec![pool(1, "big", 1), pool(2, "small", 1)], true);
        s.variants[0].rebalance_waits = vec![RebalanceWait {
            instance_id: "i-1".into(),
            instance_type: "small".into(),
            priority: 2,
            eligible_at: 1200.0,
        }];
        let text = sentences(&s).join("\n");
        assert!(
            text.contains("i-1 on small is replaced once it has run 300s, in 3m 20s"),
            "{text}"
        );
    }

    #[test]
    fn an_all_preferred_fleet_has_nothing_to_explain() {
        let s = snapshot(vec![pool(1, "big", 2), pool(2, "small", 0)], false);
        let text = sentences(&s).join("\n");
        assert!(text.contains("nothing to explain"), "{text}");
        assert!(!text.contains("rebalancing"), "{text}");
        assert!(text.contains("$2.00/h now."), "{text}");
    }

    #[test]
    fn rebalancing_held_by_the_cost_ceiling_says_so() {
        let mut big = pool(1, "big", 0);
        big.price_usd_per_hour = Some(2.8);
        let mut s = snapshot(vec![big, pool(2, "small", 2)], true);
        s.cost.max_hourly_cost_usd = Some(3.0);
        let text = sentences(&s).join("\n");
        assert!(text.contains("held by the cost ceiling"), "{text}");
        assert!(
            text.contains("from $2.00/h to $4.80/h, over its ceiling $3.00/h"),
            "{text}"
        );
        assert!(!text.contains("being replaced"), "{text}");
    }

    #[test]
    fn components_say_where_their_copies_run_and_why_some_wait() {
        let mut s = snapshot(vec![pool(1, "big", 1)], false);
        assert!(!sentences(&s).join("\n").contains("Inference component"));
        s.components = vec![
            ComponentEvidence {
                name: "llm".into(),
                status: "InService".into(),
                desired_copies: 3,
                current_copies: 2,
                placement: vec![("ml.g5.12xlarge".into(), 1), ("ml.g6.12xlarge".into(), 1)],
                unplaceable: Some("1 copy of llm cannot be placed: no room".into()),
                failure_reason: None,
            },
            ComponentEvidence {
                name: "one".into(),
                status: "Creating".into(),
                desired_copies: 1,
                current_copies: 0,
                placement: vec![],
                unplaceable: None,
                failure_reason: None,
            },
        ];
        let text = sentences(&s).join("\n");
        assert!(
            text.contains(
                "Inference component llm is InService with 2 of 3 copies in service (1 on ml.g5.12xlarge, 1 on \
                 ml.g6.12xlarge). Waiting: 1 copy of llm cannot be placed: no room."
            ),
            "{text}"
        );
        assert!(
            text.contains("Inference component one is Creating with 0 of 1 copy in service."),
            "{text}"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_seconds(-3.0), "0s");
        assert_eq!(human_seconds(59.4), "59s");
        assert_eq!(human_seconds(200.0), "3m 20s");
        assert_eq!(human_seconds(7500.0), "2h 05m");
    }

    #[test]
    fn a_variant_at_zero_says_where_scaling_up_starts() {
        let mut s = snapshot(vec![pool(1, "big", 0), pool(2, "small", 0)], false);
        s.variants[0].desired_count = 0;
        s.variants[0].in_service = 0;
        let text = sentences(&s).join("\n");
        assert!(text.contains("with 0 of 0 instances in service"), "{text}");
        assert!(text.contains("is scaled to zero"), "{text}");
        assert!(text.contains("priority 1 (big)"), "{text}");
        assert!(!text.contains("nothing to explain"), "{text}");
        assert!(text.contains("Variant v wants 0 instances: none."), "{text}");
        assert!(
            !text.contains("asynchronous"),
            "no backlog evidence, no sentence: {text}"
        );
        s.backlog = Some(BacklogEvidence {
            size: 3,
            oldest_age_seconds: 125.0,
        });
        let text = sentences(&s).join("\n");
        assert!(
            text.contains("It is asynchronous: 3 requests queued or running, the oldest accepted 2m 05s ago."),
            "{text}"
        );
        s.backlog = Some(BacklogEvidence {
            size: 0,
            oldest_age_seconds: 0.0,
        });
        assert!(sentences(&s).join("\n").contains("its queue is empty"));
    }
}
