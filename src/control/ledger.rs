//! The fleet ledger: every `[cost] sample_seconds`, what each endpoint holds (instances per
//! variant and type, in any phase a provider holds them) is appended to the store, where
//! `spillway cost` and `GET /_spillway/cost` price it (`core::cost`). Samples older than
//! `[cost] retention_days` are deleted once an hour.
//!
//! Each sample covers the interval that follows it: an instance is accounted from the first
//! sample that sees it to the last, so a fleet change is accounted within one interval, and a
//! server that stops stops accounting (with the local provider its instances stop with it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::control::app::App;
use crate::core::cost::{EndpointCost, Fleet, UsageRow};
use crate::core::model::Timestamp;
use crate::store::StoreError;

/// Runs the ledger until the server stops.
pub async fn run(app: Arc<App>) {
    let interval = app.cfg.cost.sample_seconds.max(1);
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<Timestamp> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = app.clock.now();
        let rows = sample(&app, now, interval as f64).await;
        if !rows.is_empty() {
            let store_app = app.clone();
            match tokio::task::spawn_blocking(move || store_app.store.append_usage(&rows)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "fleet ledger: cannot record a sample"),
                Err(e) => tracing::error!(error = %e, "fleet ledger: the sample's writer failed"),
            }
        }
        if last_prune.is_none_or(|t| now - t >= 3600.0) {
            last_prune = Some(now);
            let before = now - app.cfg.cost.retention_days as f64 * 86400.0;
            match app.store.delete_usage_before(before) {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "fleet ledger: deleted samples past their retention"),
                Err(e) => tracing::error!(error = %e, "fleet ledger: cannot delete old samples"),
            }
        }
    }
}

/// One sample of every live endpoint: a row per variant and instance type it holds.
async fn sample(app: &App, now: Timestamp, seconds: f64) -> Vec<UsageRow> {
    let mut rows = vec![];
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        let mut counts: BTreeMap<(String, String), (u32, String)> = BTreeMap::new();
        for i in &rt.instances {
            let preferred = rt
                .record
                .deployments()
                .find(|d| d.id == i.deployment_id)
                .and_then(|d| d.variants.iter().find(|v| v.spec.name == i.variant_name))
                .and_then(|v| v.spec.pools.first())
                .map_or_else(|| i.instance_type.clone(), |p| p.instance_type.clone());
            let e = counts
                .entry((i.variant_name.clone(), i.instance_type.clone()))
                .or_insert((0, preferred));
            e.0 += 1;
        }
        for ((variant, instance_type), (count, preferred_type)) in counts {
            rows.push(UsageRow {
                endpoint: rt.record.name.clone(),
                variant,
                instance_type,
                preferred_type,
                start: now,
                seconds,
                count,
            });
        }
    }
    rows
}

/// What each live endpoint holds now, per instance type.
pub async fn fleets(app: &App) -> BTreeMap<String, Fleet> {
    let mut out = BTreeMap::new();
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        let fleet: &mut Fleet = out.entry(rt.record.name.clone()).or_default();
        for i in &rt.instances {
            *fleet.entry(i.instance_type.clone()).or_default() += 1;
        }
    }
    out
}

/// The ceiling an endpoint's tag `spillway:max-hourly-cost` sets, if any (tags are validated
/// when set; the planner reads the same tag).
pub fn ceiling_of(app: &App, endpoint: &str) -> Option<f64> {
    let arn = app.arn("endpoint", endpoint);
    app.store
        .tags(&arn)
        .ok()?
        .into_iter()
        .find(|t| t.key == crate::core::planner::COST_CEILING_TAG)
        .and_then(|t| crate::core::planner::parse_cost_ceiling(&t.value).ok())
}

/// The cost of every endpoint (or one) since `since`.
pub async fn cost(app: &App, since: Timestamp, endpoint: Option<&str>) -> Result<Vec<EndpointCost>, StoreError> {
    let rows = app.store.usage_since(since, endpoint)?;
    let mut current = fleets(app).await;
    if let Some(name) = endpoint {
        current.retain(|k, _| k == name);
    }
    let price = |t: &str| crate::core::catalog::lookup(t).and_then(|s| s.price_usd_per_hour);
    Ok(crate::core::cost::summarize(
        &rows,
        &current,
        &|e| ceiling_of(app, e),
        &price,
    ))
}
