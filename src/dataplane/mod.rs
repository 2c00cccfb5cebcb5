//! The data plane: everything an invocation passes through, from the client's socket to the
//! model's and back.
//!
//! `server` (the listener and its I/O threads) → `fastpath` (the lean HTTP/1.1 path) and the
//! hyper-served connections → `invoke` (the invocation core) → `routes` (the in-memory route
//! table) and `upstream` (pooled model connections), with `h1` (HTTP/1.1 pieces) underneath.
//! Arrows point one way, and out of the data plane only downwards: it knows [`DataPlane`] (what
//! the control plane publishes for it), the configuration, the error table, the metrics store
//! and the clock; never the control plane itself.

pub mod accept;
pub mod eventstream;
pub mod fastpath;
pub mod h1;
pub mod head;
pub mod hyperpath;
pub mod invoke;
pub mod op;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod stop;
pub mod upstream;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::audit::AuditLog;
use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{HostPolicy, RouterConfig};
use crate::telemetry::metrics::Metrics;

/// What the data plane reads: its configuration, the routes the controllers publish, the
/// metrics store it records into, and the clock. The control plane holds it (`App::dataplane`)
/// and writes only `routes`.
#[derive(Debug)]
pub struct DataPlane {
    /// `[router]` configuration.
    pub router: RouterConfig,
    /// The account named in "endpoint not found" answers.
    pub account_id: String,
    /// Serving instances per endpoint, published by the controllers.
    pub routes: routes::RouteTable,
    /// Invocation metrics.
    pub metrics: Arc<Metrics>,
    /// Notified whenever an invocation ends, for requests queued at the concurrency limit.
    pub freed: Arc<Notify>,
    /// The server's clock (metric timestamps).
    pub clock: Clock,
    /// Which `Host` and `Origin` requests may carry.
    pub hosts: HostPolicy,
    /// Authentication and authorization, for invocations and (through `App`) every other API.
    pub auth: Arc<Auth>,
    /// The audit trail (`None`: `[audit] enabled = false`), for every API.
    pub audit: Option<Arc<AuditLog>>,
    /// The ids invocations are answered with (`x-amzn-RequestId`).
    pub request_ids: request_id::RequestIds,
    /// Asynchronous endpoints' durable queue: `InvokeEndpointAsync` accepts into it.
    pub queue: Arc<crate::queue::Queue>,
    /// Notified when a request was accepted into `queue`, to wake the asynchronous workers.
    pub async_wake: Arc<Notify>,
}
