//! The backlog sampler of asynchronous endpoints: every fleet-sampling tick (once a second), for
//! each endpoint whose active deployment is asynchronous, reads its queue's backlog
//! (`Queue::backlog`, a SQLite read, on a blocking thread) and the instances in service behind it
//! (the published routes), and records `ApproximateBacklogSize`,
//! `ApproximateBacklogSizePerInstance`, `ApproximateAgeOfOldestRequest` and
//! `HasBacklogWithoutCapacity` (namespace `AWS/SageMaker`, dimension `EndpointName`) into the one
//! metrics store. CloudWatch reads, alarms, target tracking and Prometheus all read them there.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::control::app::App;
use crate::core::model::Timestamp;
use crate::telemetry::metrics::BacklogSample;

/// The asynchronous endpoints and their instances in service, from the published routes.
fn async_endpoints(app: &App) -> Vec<(String, usize)> {
    app.endpoint_names()
        .into_iter()
        .filter_map(|name| {
            let routes = app.dataplane.routes.get(&name)?;
            routes.async_config.as_ref()?;
            let instances = routes.variants.iter().map(|v| v.instances.len()).sum();
            Some((name, instances))
        })
        .collect()
}

/// Samples every asynchronous endpoint's backlog at `now` and records it. `previous` holds the
/// endpoints sampled last time: one no longer sampled (deleted, or updated to a real-time
/// configuration) loses its Prometheus gauges. Returns the samples recorded (for tests).
pub async fn sample(app: &Arc<App>, now: Timestamp, previous: &mut BTreeSet<String>) -> Vec<(String, BacklogSample)> {
    let endpoints = async_endpoints(app);
    let queue = app.queue.clone();
    let read = tokio::task::spawn_blocking(move || {
        endpoints
            .into_iter()
            .filter_map(|(name, instances)| match queue.backlog(&name, now) {
                Ok(b) => Some((
                    name,
                    BacklogSample {
                        size: b.size,
                        oldest_age_seconds: b.oldest_age_seconds,
                        instances,
                    },
                )),
                Err(err) => {
                    tracing::warn!(%err, endpoint = %name, "cannot read the backlog; no sample this tick");
                    None
                }
            })
            .collect::<Vec<_>>()
    })
    .await;
    let samples = match read {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "backlog sampling failed");
            return vec![];
        }
    };
    let now_sampled: BTreeSet<String> = samples.iter().map(|(n, _)| n.clone()).collect();
    for gone in previous.difference(&now_sampled) {
        app.metrics.forget_backlog(gone);
    }
    for (name, s) in &samples {
        app.metrics.record_backlog(name, s, now);
    }
    *previous = now_sampled;
    samples
}
