//! The in-process metrics store: one source of truth for the invocation and fleet metrics that
//! SageMaker publishes, kept per `{EndpointName, VariantName, InstanceType}` in one-second
//! buckets, from which every aggregate (per variant, per type, any window) is computed. The
//! autoscaler reads it; the CloudWatch-compatible API and `/metrics` build on it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::model::Timestamp;

/// Buckets kept per series: one hour of one-second buckets (the default of [`Metrics::default`];
/// the server uses `[metrics] retention_seconds` through [`Metrics::with_retention`]).
pub const RETENTION_S: i64 = 3600;

/// One second of one series.
#[derive(Debug, Clone, Default, PartialEq)]
struct Bucket {
    second: i64,
    invocations: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    model_errors: u64,
    /// Σ 1/instances of the variant's type at the time of each invocation (in a component's
    /// series: Σ 1/copies of the component on the series' instance type).
    invocations_per_instance: f64,
    /// In a component's series: Σ 1/copies of the component (all types) at the time of each
    /// invocation (`InvocationsPerCopy` over `{InferenceComponentName}`).
    per_copy_total: f64,
    /// `ModelLatency` of the second's invocations, µs.
    model_latency: Sampled,
    /// spillway's own time per request (`OverheadLatency`), µs.
    overhead_latency: Sampled,
    /// Concurrency samples: Σ (outstanding / instances) and their count.
    concurrency_sum: f64,
    concurrency_samples: u64,
    /// Instance-count samples.
    instances_sum: f64,
    instances_samples: u64,
    /// Per-instance utilization samples (only in the seconds a usage round recorded one).
    usage: Option<Box<UsageBucket>>,
    /// An asynchronous endpoint's backlog samples (only in its endpoint-level series, see
    /// [`ENDPOINT_SERIES`]).
    backlog: Option<Box<BacklogBucket>>,
}

/// The backlog samples of one second of an asynchronous endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
struct BacklogBucket {
    size: Sampled,
    per_instance: Sampled,
    oldest_age: Sampled,
    without_capacity: Sampled,
}

impl BacklogBucket {
    fn of(&self, metric: &str) -> Option<&Sampled> {
        match metric {
            "ApproximateBacklogSize" => Some(&self.size),
            "ApproximateBacklogSizePerInstance" => Some(&self.per_instance),
            "ApproximateAgeOfOldestRequest" => Some(&self.oldest_age),
            "HasBacklogWithoutCapacity" => Some(&self.without_capacity),
            _ => None,
        }
    }
}

/// One backlog sample of an asynchronous endpoint: its queue and the instances serving it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BacklogSample {
    /// Requests queued or being processed (`ApproximateBacklogSize`).
    pub size: u64,
    /// Age of the oldest of them, seconds (`ApproximateAgeOfOldestRequest`; 0 when none).
    pub oldest_age_seconds: f64,
    /// Instances in service behind the endpoint, all variants together.
    pub instances: usize,
}

impl BacklogSample {
    /// `ApproximateBacklogSizePerInstance`: the backlog divided by the instances in service, and
    /// the whole backlog when there is none. AWS documents the quotient ("number of items in the
    /// queue divided by the number of instances behind an endpoint") and says that without the
    /// optional scale-up-from-zero policy an endpoint at zero instances "only initiates scaling up
    /// from zero after the number of backlog requests exceeds the target tracking value": the
    /// metric at zero instances is the backlog itself (divided by one), which is what lets target
    /// tracking scale up from zero at all.
    pub fn per_instance(&self) -> f64 {
        self.size as f64 / self.instances.max(1) as f64
    }

    /// `HasBacklogWithoutCapacity`: 1 when requests wait and no instance is in service, else 0.
    pub fn without_capacity(&self) -> f64 {
        if self.size > 0 && self.instances == 0 { 1.0 } else { 0.0 }
    }
}

/// Σ, count and extremes of one gauge's samples within a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sampled {
    sum: f64,
    samples: u32,
    max: f64,
    min: f64,
}

impl Sampled {
    fn add(&mut self, v: f64) {
        if self.samples == 0 {
            (self.max, self.min) = (v, v);
        } else {
            self.max = self.max.max(v);
            self.min = self.min.min(v);
        }
        self.sum += v;
        self.samples += 1;
    }

    /// Pools `other`'s samples into these.
    fn merge(&mut self, other: &Sampled) {
        if other.samples == 0 {
            return;
        }
        if self.samples == 0 {
            (self.max, self.min) = (other.max, other.min);
        } else {
            self.max = self.max.max(other.max);
            self.min = self.min.min(other.min);
        }
        self.sum += other.sum;
        self.samples += other.samples;
    }
}

/// The utilization samples of one second: one sample per instance and usage round.
#[derive(Debug, Clone, Default, PartialEq)]
struct UsageBucket {
    cpu: Sampled,
    memory: Sampled,
    gpu: Sampled,
    gpu_memory: Sampled,
}

impl UsageBucket {
    fn of(&self, metric: &str) -> Option<&Sampled> {
        match metric {
            "CPUUtilization" => Some(&self.cpu),
            "MemoryUtilization" => Some(&self.memory),
            "GPUUtilization" => Some(&self.gpu),
            "GPUMemoryUtilization" => Some(&self.gpu_memory),
            _ => None,
        }
    }
}

/// One utilization sample of one instance (see `crate::usage`); `None` where the value is not
/// known (the first round has no CPU delta; an instance without GPUs has no GPU values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSample {
    /// CPU use of the instance's process tree, percent of one core (0–100 × cores).
    pub cpu_percent: Option<f64>,
    /// Resident memory of the process tree as a percentage of the host's memory.
    pub memory_percent: Option<f64>,
    /// Resident memory of the process tree, bytes.
    pub rss_bytes: Option<u64>,
    /// Σ `utilization.gpu` over the instance's GPUs (0–100 × GPUs).
    pub gpu_percent: Option<f64>,
    /// Σ used / total memory × 100 over the instance's GPUs (0–100 × GPUs).
    pub gpu_memory_percent: Option<f64>,
}

/// Series key: endpoint, variant, instance type.
type Key = (String, String, String);

/// Names one series: an endpoint's variant on one instance type.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Endpoint name.
    pub endpoint: &'a str,
    /// Variant name.
    pub variant: &'a str,
    /// Instance type.
    pub instance_type: &'a str,
}

/// How a request ended, for the error counters. As SageMaker counts them:
/// `Invocation4XXErrors` and `Invocation5XXErrors` by the status class of the answer (the
/// model's own status for a `ModelError`), `InvocationModelErrors` for every request the model
/// did not answer with 2xx (non-2xx, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx from the model.
    Success,
    /// Bad request (4xx) answered by spillway.
    ClientError,
    /// spillway could not complete the request (instance unreachable, broken response).
    ServerError,
    /// The model answered 4xx (the client gets a `ModelError`).
    ModelClientError,
    /// The model answered 5xx (the client gets a `ModelError`).
    ModelServerError,
    /// The model did not answer in time, or answered a status that is neither 2xx, 4xx nor 5xx.
    ModelOtherError,
    /// The client went away (closed or reset its connection) before it had the whole answer:
    /// counted in `Invocation4XXErrors`, as nginx logs such a request 499. It has no
    /// `ModelLatency` (the model never finished it).
    ClientClosed,
}

impl Outcome {
    /// The outcome of a model's non-2xx answer with `status`.
    pub fn of_model_status(status: u16) -> Self {
        match status {
            400..=499 => Outcome::ModelClientError,
            500..=599 => Outcome::ModelServerError,
            _ => Outcome::ModelOtherError,
        }
    }

    /// The `kind` label of `spillway_invocation_errors_total`, `None` for a success.
    fn error_kind(self) -> Option<&'static str> {
        match self {
            Outcome::Success => None,
            Outcome::ClientError => Some("4xx"),
            Outcome::ServerError => Some("5xx"),
            Outcome::ModelClientError => Some("model_4xx"),
            Outcome::ModelServerError => Some("model_5xx"),
            Outcome::ModelOtherError => Some("model_other"),
            Outcome::ClientClosed => Some("client_closed"),
        }
    }

    /// Every error outcome.
    const ERRORS: [Outcome; 6] = [
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::ModelClientError,
        Outcome::ModelServerError,
        Outcome::ModelOtherError,
        Outcome::ClientClosed,
    ];

    fn index(self) -> usize {
        match self {
            Outcome::Success => 0,
            Outcome::ClientError => 1,
            Outcome::ServerError => 2,
            Outcome::ModelClientError => 3,
            Outcome::ModelServerError => 4,
            Outcome::ModelOtherError => 5,
            Outcome::ClientClosed => 6,
        }
    }
}

impl Bucket {
    fn add_invocation(&mut self, instances: usize, outcome: Outcome, model_latency_us: u64, overhead_us: u64) {
        if outcome != Outcome::ClientClosed {
            self.model_latency.add(model_latency_us as f64);
        }
        self.overhead_latency.add(overhead_us as f64);
        self.invocations += 1;
        self.invocations_per_instance += 1.0 / instances.max(1) as f64;
        match outcome {
            Outcome::Success => {}
            Outcome::ClientError => self.errors_4xx += 1,
            Outcome::ServerError => self.errors_5xx += 1,
            Outcome::ModelClientError => {
                self.model_errors += 1;
                self.errors_4xx += 1;
            }
            Outcome::ModelServerError => {
                self.model_errors += 1;
                self.errors_5xx += 1;
            }
            Outcome::ModelOtherError => self.model_errors += 1,
            Outcome::ClientClosed => self.errors_4xx += 1,
        }
    }
}

/// The component part of a copy's [`SeriesHandle`]: its component series and Prometheus
/// handles.
struct ComponentHandle {
    key: Arc<Key>,
    invocations: Counter,
    model_latency: Histogram,
    /// Error counters by [`Outcome::index`] (index 0, success, unused).
    errors: [Option<Counter>; 7],
}

/// Records the invocations of one series (endpoint, variant, instance type) with its Prometheus
/// handles resolved once: recording is a few atomic increments and one short lock. A copy of an
/// inference component records into its component's series too, under the same lock.
pub struct SeriesHandle {
    key: Arc<Key>,
    labels: TypeSeries,
    invocations: Counter,
    model_latency: Histogram,
    overhead_latency: Histogram,
    /// Error counters by [`Outcome::index`], created on first use.
    errors: [OnceLock<Counter>; 7],
    /// For a copy of an inference component: its component's series.
    component: Option<ComponentHandle>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SeriesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeriesHandle({:?})", self.key)
    }
}

impl SeriesHandle {
    /// The error counter of `outcome` (`None` for a success).
    fn error_counter(&self, outcome: Outcome) -> Option<&Counter> {
        let kind = outcome.error_kind()?;
        Some(self.errors[outcome.index()].get_or_init(|| {
            let e = ErrorSeries {
                endpoint: self.labels.endpoint.clone(),
                variant: self.labels.variant.clone(),
                instance_type: self.labels.instance_type.clone(),
                kind: kind.into(),
            };
            self.metrics.prometheus.errors.get_or_create(&e).clone()
        }))
    }

    /// Records one invocation: `instances` serving instances of this type in the variant,
    /// `model_latency_us` from sending to the model until the end of its response,
    /// `overhead_us` spent by spillway before the request reached the model.
    pub fn record(&self, instances: usize, outcome: Outcome, model_latency_us: u64, overhead_us: u64, now: Timestamp) {
        self.record_units(instances, (0, 0), outcome, model_latency_us, overhead_us, now);
    }

    /// [`SeriesHandle::record`] for an invocation that may have been served by a copy of an
    /// inference component: `copies` is then (the component's copies in service, those of this
    /// handle's instance type), for `InvocationsPerCopy`; both series' buckets are updated under
    /// one lock.
    pub fn record_units(
        &self,
        instances: usize,
        copies: (usize, usize),
        outcome: Outcome,
        model_latency_us: u64,
        overhead_us: u64,
        now: Timestamp,
    ) {
        let m = &self.metrics;
        if !m.enabled {
            return;
        }
        if let Some(c) = &self.component {
            c.invocations.inc();
            if outcome != Outcome::ClientClosed {
                c.model_latency.observe(model_latency_us as f64 / 1e6);
            }
            if let Some(e) = &c.errors[outcome.index()] {
                e.inc();
            }
        }
        self.invocations.inc();
        if outcome != Outcome::ClientClosed {
            self.model_latency.observe(model_latency_us as f64 / 1e6);
        }
        self.overhead_latency.observe(overhead_us as f64 / 1e6);
        if let Some(c) = self.error_counter(outcome) {
            c.inc();
        }
        let second = now.floor() as i64;
        let mut series = m.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = m.bucket_in(&mut series, &self.key, second) {
            b.add_invocation(instances, outcome, model_latency_us, overhead_us);
        }
        if let Some(c) = &self.component
            && let Some(b) = m.bucket_in(&mut series, &c.key, second)
        {
            // Per type: 1/copies of the type; `per_copy_total`: 1/copies of the component.
            b.add_invocation(copies.1, outcome, model_latency_us, overhead_us);
            b.per_copy_total += 1.0 / copies.0.max(1) as f64;
        }
    }
}

/// The statistics CloudWatch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Statistic {
    /// Sum over the window.
    Sum,
    /// Mean of the samples.
    Average,
    /// Largest sample.
    Maximum,
    /// Number of samples.
    SampleCount,
    /// Smallest sample.
    Minimum,
}

impl Statistic {
    /// Parses the CloudWatch spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Sum" => Some(Self::Sum),
            "Average" => Some(Self::Average),
            "Maximum" => Some(Self::Maximum),
            "SampleCount" => Some(Self::SampleCount),
            "Minimum" => Some(Self::Minimum),
            _ => None,
        }
    }
}

/// Metric names (namespace `AWS/SageMaker`) the store can answer.
pub const METRICS: &[&str] = &[
    "Invocations",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "InvocationsPerInstance",
    "ModelLatency",
    "OverheadLatency",
    "ConcurrentRequestsPerModel",
    "InstanceCount",
];

/// The metrics of an asynchronous endpoint's queue (namespace `AWS/SageMaker`), published with
/// the one dimension `EndpointName`, as SageMaker publishes them. They are recorded once per
/// sampling tick ([`Metrics::record_backlog`]), so every statistic is over those samples.
pub const BACKLOG_METRICS: &[&str] = &[
    "ApproximateBacklogSize",
    "ApproximateBacklogSizePerInstance",
    "ApproximateAgeOfOldestRequest",
    "HasBacklogWithoutCapacity",
];

/// The variant and instance-type parts of an endpoint-level series' key: the backlog metrics
/// ([`BACKLOG_METRICS`]) of endpoint `e` live in the series `(e, "", "")` (no variant or type
/// is named by an empty string), and [`Select::endpoint`] selects it.
pub const ENDPOINT_SERIES: &str = "";

/// The first part of an inference component's series key: the series of component `c` on
/// instance type `t` is `(COMPONENT_SERIES, c, t)` (no endpoint is named by this string, which
/// holds a NUL). Component names are unique in an account, as CloudWatch's
/// `{InferenceComponentName}` dimension assumes.
pub const COMPONENT_SERIES: &str = "\u{0}inference-component";

/// The invocation metrics of an inference component (namespace `AWS/SageMaker`), published with
/// `{InferenceComponentName}` and `{InferenceComponentName, InstanceType}`.
pub const COMPONENT_METRICS: &[&str] = &[
    "Invocations",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "ModelLatency",
    "InvocationsPerCopy",
    "ConcurrentRequestsPerCopy",
];

/// The store's internal name of `InvocationsPerCopy` over all of a component's instance types
/// (Σ 1/copies of the component), which [`Metrics::aggregate`] reads when no type is selected.
const PER_COPY_TOTAL: &str = "\u{0}InvocationsPerCopyTotal";

/// Per-instance utilization metrics (namespace `/aws/sagemaker/Endpoints`, unit `Percent`): one
/// sample per instance and usage round, so over `{EndpointName, VariantName, InstanceType}` the
/// `Average` is the mean per-instance value.
pub const INSTANCE_METRICS: &[&str] = &[
    "CPUUtilization",
    "MemoryUtilization",
    "GPUUtilization",
    "GPUMemoryUtilization",
];

/// Labels of per-type invocation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Variant.
    pub variant: String,
    /// Instance type.
    pub instance_type: String,
}

/// Labels of error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Variant.
    pub variant: String,
    /// Instance type.
    pub instance_type: String,
    /// `4xx`, `5xx` or `model`.
    pub kind: String,
}

/// Labels of instance gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Variant.
    pub variant: String,
    /// Instance type.
    pub instance_type: String,
    /// `Launching`, `InService` or `Terminating`.
    pub state: String,
}

/// Labels of per-instance utilization gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Variant.
    pub variant: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance id.
    pub instance: String,
}

/// Labels of per-type capacity series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapacitySeries {
    /// Instance type.
    pub instance_type: String,
}

/// Labels of launch-attempt counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaunchSeries {
    /// Instance type.
    pub instance_type: String,
    /// `Launched`, `InsufficientCapacity` or `Failed`.
    pub result: String,
}

/// The series an aggregation reads: one variant's, over all its instance types (CloudWatch's
/// `{EndpointName, VariantName}`) or one (`{..., InstanceType}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Select<'a> {
    /// Endpoint.
    pub endpoint: &'a str,
    /// Variant.
    pub variant: &'a str,
    /// One instance type, or all of them.
    pub instance_type: Option<&'a str>,
}

impl<'a> Select<'a> {
    /// The series of `variant` of `endpoint`, one instance type's or all of them.
    pub fn new(endpoint: &'a str, variant: &'a str, instance_type: Option<&'a str>) -> Self {
        Self {
            endpoint,
            variant,
            instance_type,
        }
    }

    /// The endpoint-level series of `endpoint` (its backlog metrics, dimension `EndpointName`).
    pub fn endpoint(endpoint: &'a str) -> Self {
        Self::new(endpoint, ENDPOINT_SERIES, Some(ENDPOINT_SERIES))
    }

    /// The series of inference component `component`, one instance type's or all of them
    /// (`{InferenceComponentName[, InstanceType]}`).
    pub fn component(component: &'a str, instance_type: Option<&'a str>) -> Self {
        Self::new(COMPONENT_SERIES, component, instance_type)
    }

    /// `metric` as the store keeps it for this selection: `InvocationsPerCopy` over all of a
    /// component's types is its own sum.
    fn stored_metric<'m>(&self, metric: &'m str) -> &'m str {
        if metric == "InvocationsPerCopy" && self.instance_type.is_none() && self.endpoint == COMPONENT_SERIES {
            PER_COPY_TOTAL
        } else {
            metric
        }
    }
}

/// Labels of an inference component's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Inference component.
    pub component: String,
    /// Instance type of the copies' hosts.
    pub instance_type: String,
}

/// Labels of an inference component's error counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentErrorSeries {
    /// Endpoint.
    pub endpoint: String,
    /// Inference component.
    pub component: String,
    /// Instance type of the copies' hosts.
    pub instance_type: String,
    /// As [`ErrorSeries::kind`].
    pub kind: String,
}

/// Labels of an endpoint's gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointSeries {
    /// Endpoint.
    pub endpoint: String,
}

/// Labels of API request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiSeries {
    /// The operation's wire name (`CreateEndpoint`), or `unknown` when none was recognised.
    pub operation: &'static str,
    /// `ok` or the AWS error code answered.
    pub code: &'static str,
}

/// Labels of API request latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationSeries {
    /// The operation's wire name.
    pub operation: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~100 s.
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

fn overhead_histogram() -> Histogram {
    // 10 µs .. ~1.5 s.
    Histogram::new(exponential_buckets(0.00001, 2.5, 14))
}

/// The Prometheus families served at `/metrics`.
pub struct Prometheus {
    registry: Registry,
    /// Invocations.
    pub invocations: Family<TypeSeries, Counter>,
    /// Errors by kind.
    pub errors: Family<ErrorSeries, Counter>,
    /// Model latency in seconds.
    pub model_latency: Family<TypeSeries, Histogram, fn() -> Histogram>,
    /// spillway's own time per request in seconds (routing, queueing, connecting).
    pub overhead_latency: Family<TypeSeries, Histogram, fn() -> Histogram>,
    /// Requests in flight per instance (refreshed at scrape time).
    pub concurrency: Family<TypeSeries, Gauge<f64, AtomicU64>>,
    /// Instances by state (refreshed at scrape time).
    pub instances: Family<InstanceSeries, Gauge>,
    /// 1 when the type is not backing off after insufficient capacity (refreshed at scrape time).
    pub type_available: Family<CapacitySeries, Gauge>,
    /// Seconds until the next probe of a type that is backing off (refreshed at scrape time).
    pub type_backoff_seconds: Family<CapacitySeries, Gauge<f64, AtomicU64>>,
    /// Launch attempts by result.
    pub launches: Family<LaunchSeries, Counter>,
    /// CPU use per instance, percent of one core (set every usage round).
    pub cpu_utilization: Family<UsageSeries, Gauge<f64, AtomicU64>>,
    /// Resident memory per instance, percent of the host's memory.
    pub memory_utilization: Family<UsageSeries, Gauge<f64, AtomicU64>>,
    /// Resident memory per instance, bytes.
    pub memory_rss_bytes: Family<UsageSeries, Gauge>,
    /// GPU use per instance with GPUs, Σ percent over its GPUs.
    pub gpu_utilization: Family<UsageSeries, Gauge<f64, AtomicU64>>,
    /// GPU memory use per instance with GPUs, Σ percent over its GPUs.
    pub gpu_memory_utilization: Family<UsageSeries, Gauge<f64, AtomicU64>>,
    /// Client connections closed on arrival because `[router] max_client_connections` were open.
    pub connections_shed: Counter,
    /// Control-plane and admin requests by operation and answer.
    pub api_requests: Family<ApiSeries, Counter>,
    /// Control-plane and admin request latency by operation, seconds.
    pub api_latency: Family<OperationSeries, Histogram, fn() -> Histogram>,
    /// Asynchronous endpoints' requests queued or being processed (`ApproximateBacklogSize`).
    pub backlog_size: Family<EndpointSeries, Gauge>,
    /// `ApproximateBacklogSizePerInstance`.
    pub backlog_per_instance: Family<EndpointSeries, Gauge<f64, AtomicU64>>,
    /// `ApproximateAgeOfOldestRequest`, seconds.
    pub backlog_oldest_age: Family<EndpointSeries, Gauge<f64, AtomicU64>>,
    /// `HasBacklogWithoutCapacity` (0 or 1).
    pub backlog_without_capacity: Family<EndpointSeries, Gauge>,
    /// Invocations served by an inference component's copies.
    pub component_invocations: Family<ComponentSeries, Counter>,
    /// Failed invocations of an inference component, by kind.
    pub component_errors: Family<ComponentErrorSeries, Counter>,
    /// Model latency of an inference component's copies, seconds.
    pub component_model_latency: Family<ComponentSeries, Histogram, fn() -> Histogram>,
    /// Requests in flight per copy of an inference component (`ConcurrentRequestsPerCopy`, set
    /// every fleet sample).
    pub component_concurrency: Family<ComponentSeries, Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prometheus { .. }")
    }
}

impl Default for Prometheus {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spillway");
        let p = Self {
            invocations: Family::default(),
            errors: Family::default(),
            model_latency: Family::new_with_constructor(latency_histogram),
            overhead_latency: Family::new_with_constructor(overhead_histogram),
            concurrency: Family::default(),
            instances: Family::default(),
            type_available: Family::default(),
            type_backoff_seconds: Family::default(),
            launches: Family::default(),
            cpu_utilization: Family::default(),
            memory_utilization: Family::default(),
            memory_rss_bytes: Family::default(),
            gpu_utilization: Family::default(),
            gpu_memory_utilization: Family::default(),
            connections_shed: Counter::default(),
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(overhead_histogram),
            backlog_size: Family::default(),
            backlog_per_instance: Family::default(),
            backlog_oldest_age: Family::default(),
            backlog_without_capacity: Family::default(),
            component_invocations: Family::default(),
            component_errors: Family::default(),
            component_model_latency: Family::new_with_constructor(latency_histogram),
            component_concurrency: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "invocations",
            "Invocations answered, per instance type",
            p.invocations.clone(),
        );
        registry.register(
            "invocation_errors",
            "Failed invocations by kind (4xx, 5xx, model)",
            p.errors.clone(),
        );
        registry.register(
            "model_latency_seconds",
            "Time the model took to answer",
            p.model_latency.clone(),
        );
        registry.register(
            "overhead_latency_seconds",
            "Time spillway added before the request reached the model (routing, queueing, connecting)",
            p.overhead_latency.clone(),
        );
        registry.register(
            "concurrent_requests_per_model",
            "Requests in flight per serving instance",
            p.concurrency.clone(),
        );
        registry.register("instances", "Instances by state", p.instances.clone());
        registry.register(
            "instance_type_available",
            "1 unless the type is backing off after an insufficient-capacity answer",
            p.type_available.clone(),
        );
        registry.register(
            "instance_type_backoff_seconds",
            "Seconds until the next launch attempt on a type that is backing off",
            p.type_backoff_seconds.clone(),
        );
        registry.register(
            "launch_attempts",
            "Launch attempts by instance type and result",
            p.launches.clone(),
        );
        registry.register(
            "instance_cpu_utilization_percent",
            "CPU use of the instance's processes, percent of one core (0-100 x vCPUs)",
            p.cpu_utilization.clone(),
        );
        registry.register(
            "instance_memory_utilization_percent",
            "Resident memory of the instance's processes, percent of the host's memory",
            p.memory_utilization.clone(),
        );
        registry.register(
            "instance_memory_rss_bytes",
            "Resident memory of the instance's processes",
            p.memory_rss_bytes.clone(),
        );
        registry.register(
            "instance_gpu_utilization_percent",
            "GPU use summed over the instance's GPUs (0-100 x GPUs)",
            p.gpu_utilization.clone(),
        );
        registry.register(
            "instance_gpu_memory_utilization_percent",
            "GPU memory use summed over the instance's GPUs (0-100 x GPUs)",
            p.gpu_memory_utilization.clone(),
        );
        registry.register(
            "connections_shed",
            "Client connections closed on arrival because [router] max_client_connections were open",
            p.connections_shed.clone(),
        );
        registry.register(
            "api_requests",
            "Control-plane and admin requests by operation and answer (ok or the AWS error code)",
            p.api_requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time to answer a control-plane or admin request, by operation",
            p.api_latency.clone(),
        );
        registry.register(
            "async_backlog_size",
            "Asynchronous requests queued or being processed (ApproximateBacklogSize)",
            p.backlog_size.clone(),
        );
        registry.register(
            "async_backlog_size_per_instance",
            "Backlog per instance in service, the whole backlog at zero instances (ApproximateBacklogSizePerInstance)",
            p.backlog_per_instance.clone(),
        );
        registry.register(
            "async_oldest_request_age_seconds",
            "Age of the oldest queued or processing asynchronous request (ApproximateAgeOfOldestRequest)",
            p.backlog_oldest_age.clone(),
        );
        registry.register(
            "async_backlog_without_capacity",
            "1 when asynchronous requests wait and no instance is in service (HasBacklogWithoutCapacity)",
            p.backlog_without_capacity.clone(),
        );
        registry.register(
            "component_invocations",
            "Invocations answered by an inference component's copies, per instance type",
            p.component_invocations.clone(),
        );
        registry.register(
            "component_invocation_errors",
            "Failed invocations of an inference component by kind",
            p.component_errors.clone(),
        );
        registry.register(
            "component_model_latency_seconds",
            "Time an inference component's copy took to answer",
            p.component_model_latency.clone(),
        );
        registry.register(
            "component_concurrent_requests_per_copy",
            "Requests in flight per copy of an inference component (ConcurrentRequestsPerCopy)",
            p.component_concurrency.clone(),
        );
        Self { registry, ..p }
    }
}

impl Prometheus {
    /// Records one answered API request.
    pub fn record_api(&self, operation: &'static str, code: &'static str, seconds: f64) {
        self.api_requests.get_or_create(&ApiSeries { operation, code }).inc();
        self.api_latency
            .get_or_create(&OperationSeries { operation })
            .observe(seconds);
    }

    /// Renders the OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The store.
#[derive(Debug)]
pub struct Metrics {
    /// Keys are shared with the [`SeriesHandle`]s that record into them, so recording needs no
    /// allocation.
    series: Mutex<BTreeMap<Arc<Key>, VecDeque<Bucket>>>,
    /// Whether invocations are recorded at all (`[metrics] enabled`).
    enabled: bool,
    /// Seconds of buckets kept per series.
    retention_s: i64,
    /// The Prometheus view of the same events.
    pub prometheus: Prometheus,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_retention(RETENTION_S)
    }
}

impl Metrics {
    /// A store that keeps `retention_s` seconds (at least 1) of one-second buckets per series.
    pub fn with_retention(retention_s: i64) -> Self {
        Self {
            series: Mutex::default(),
            enabled: true,
            retention_s: retention_s.max(1),
            prometheus: Prometheus::default(),
        }
    }

    /// Seconds of data kept per series.
    pub fn retention_seconds(&self) -> i64 {
        self.retention_s
    }

    /// A store that records nothing per invocation (`[metrics] enabled = false`); fleet samples
    /// are still kept.
    pub fn disabled(retention_s: i64) -> Self {
        Self {
            enabled: false,
            ..Self::with_retention(retention_s)
        }
    }

    /// Whether invocations are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A handle that records invocations of one series without looking anything up by name:
    /// the invocation path keeps one per routed instance.
    pub fn handle(self: &Arc<Self>, series: Series<'_>) -> SeriesHandle {
        self.handle_of(series, None)
    }

    /// [`Metrics::handle`] for an instance, or for a copy of inference component `component`:
    /// its handle records into the component's series `(COMPONENT_SERIES, component, instance
    /// type)` and its Prometheus families as well.
    pub fn handle_of(self: &Arc<Self>, series: Series<'_>, component: Option<&str>) -> SeriesHandle {
        let labels = TypeSeries {
            endpoint: series.endpoint.to_string(),
            variant: series.variant.to_string(),
            instance_type: series.instance_type.to_string(),
        };
        let handle = SeriesHandle {
            key: Arc::new((
                labels.endpoint.clone(),
                labels.variant.clone(),
                labels.instance_type.clone(),
            )),
            invocations: self.prometheus.invocations.get_or_create(&labels).clone(),
            model_latency: self.prometheus.model_latency.get_or_create(&labels).clone(),
            overhead_latency: self.prometheus.overhead_latency.get_or_create(&labels).clone(),
            errors: Default::default(),
            component: component.map(|c| self.component_handle(series, c)),
            labels,
            metrics: self.clone(),
        };
        // Error counters start at 0 with the series, so `rate()` sees their first increment.
        for outcome in Outcome::ERRORS {
            handle.error_counter(outcome);
        }
        handle
    }

    fn component_handle(&self, series: Series<'_>, component: &str) -> ComponentHandle {
        let labels = ComponentSeries {
            endpoint: series.endpoint.to_string(),
            component: component.to_string(),
            instance_type: series.instance_type.to_string(),
        };
        let p = &self.prometheus;
        let mut errors: [Option<Counter>; 7] = Default::default();
        for outcome in Outcome::ERRORS {
            let e = ComponentErrorSeries {
                endpoint: labels.endpoint.clone(),
                component: labels.component.clone(),
                instance_type: labels.instance_type.clone(),
                kind: outcome.error_kind().unwrap_or("").into(),
            };
            errors[outcome.index()] = Some(p.component_errors.get_or_create(&e).clone());
        }
        ComponentHandle {
            key: Arc::new((
                COMPONENT_SERIES.to_string(),
                component.to_string(),
                series.instance_type.to_string(),
            )),
            invocations: p.component_invocations.get_or_create(&labels).clone(),
            model_latency: p.component_model_latency.get_or_create(&labels).clone(),
            errors,
        }
    }

    /// Records a fleet sample of inference component `component` of `endpoint`: `copies` copies
    /// in service on hosts of `instance_type` with `outstanding` requests in flight between them
    /// (`ConcurrentRequestsPerCopy`, its series and its Prometheus gauge). Recorded whether or
    /// not invocations are, as fleet samples are: autoscaling reads them.
    pub fn record_component_fleet(
        &self,
        endpoint: &str,
        component: &str,
        instance_type: &str,
        copies: usize,
        outstanding: usize,
        now: Timestamp,
    ) {
        let per_copy = if copies > 0 {
            outstanding as f64 / copies as f64
        } else {
            0.0
        };
        self.prometheus
            .component_concurrency
            .get_or_create(&ComponentSeries {
                endpoint: endpoint.to_string(),
                component: component.to_string(),
                instance_type: instance_type.to_string(),
            })
            .set(per_copy);
        let key = (
            COMPONENT_SERIES.to_string(),
            component.to_string(),
            instance_type.to_string(),
        );
        self.with_bucket_of(&key, now, |b| {
            b.instances_sum += copies as f64;
            b.instances_samples += 1;
            if copies > 0 {
                b.concurrency_sum += per_copy;
                b.concurrency_samples += 1;
            }
        });
    }

    /// Every inference component series `(component, instance type)` with data at or after
    /// `since`, in order.
    pub fn component_keys(&self, since: Timestamp) -> Vec<(String, String)> {
        let since = since.floor() as i64;
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, q)| k.0 == COMPONENT_SERIES && q.back().is_some_and(|b| b.second >= since))
            .map(|(k, _)| (k.1.clone(), k.2.clone()))
            .collect()
    }

    /// Forgets inference component `component` of `endpoint`: its series and its Prometheus
    /// families (after DeleteInferenceComponent).
    pub fn forget_component(&self, endpoint: &str, component: &str) {
        let mut types = vec![];
        self.series.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| {
            let mine = k.0 == COMPONENT_SERIES && k.1 == component;
            if mine {
                types.push(k.2.clone());
            }
            !mine
        });
        let p = &self.prometheus;
        for instance_type in types {
            let labels = ComponentSeries {
                endpoint: endpoint.to_string(),
                component: component.to_string(),
                instance_type,
            };
            p.component_invocations.remove(&labels);
            p.component_model_latency.remove(&labels);
            p.component_concurrency.remove(&labels);
            for outcome in Outcome::ERRORS {
                p.component_errors.remove(&ComponentErrorSeries {
                    endpoint: labels.endpoint.clone(),
                    component: labels.component.clone(),
                    instance_type: labels.instance_type.clone(),
                    kind: outcome.error_kind().unwrap_or("").into(),
                });
            }
        }
    }

    fn with_bucket(&self, series_of: Series<'_>, now: Timestamp, f: impl FnOnce(&mut Bucket)) {
        let Series {
            endpoint,
            variant,
            instance_type,
        } = series_of;
        let key = (endpoint.to_string(), variant.to_string(), instance_type.to_string());
        self.with_bucket_of(&key, now, f);
    }

    /// Applies `f` to the bucket of `now`'s second in the series `key`, creating both as needed
    /// and dropping buckets older than the retention.
    fn with_bucket_of(&self, key: &Key, now: Timestamp, f: impl FnOnce(&mut Bucket)) {
        let second = now.floor() as i64;
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = self.bucket_in(&mut series, key, second) {
            f(b);
        }
    }

    /// The bucket of `second` in the series `key` of the locked store, creating both as needed
    /// and dropping buckets older than the retention (`None` for a second older than the
    /// series' last bucket that it no longer holds).
    fn bucket_in<'s>(
        &self,
        series: &'s mut BTreeMap<Arc<Key>, VecDeque<Bucket>>,
        key: &Key,
        second: i64,
    ) -> Option<&'s mut Bucket> {
        if !series.contains_key(key) {
            series.insert(Arc::new(key.clone()), VecDeque::new());
        }
        let q = series.get_mut(key)?;
        if q.back().is_none_or(|b| b.second < second) {
            q.push_back(Bucket {
                second,
                ..Bucket::default()
            });
            while q.front().is_some_and(|b| b.second <= second - self.retention_s) {
                q.pop_front();
            }
        }
        q.iter_mut().rev().find(|b| b.second == second)
    }

    /// Records one invocation answered by an instance of `instance_type`, which has
    /// `instances` serving instances in the variant, through a one-off [`SeriesHandle`] (the
    /// invocation path keeps one per instance).
    #[cfg(test)]
    pub(crate) fn record_invocation(
        self: &Arc<Self>,
        series: Series<'_>,
        instances: usize,
        outcome: Outcome,
        model_latency_us: u64,
        now: Timestamp,
    ) {
        self.handle(series).record(instances, outcome, model_latency_us, 0, now);
    }

    /// Records a fleet sample: `instances` serving instances of a type with `outstanding`
    /// requests in flight between them.
    pub fn record_fleet(&self, series: Series<'_>, instances: usize, outstanding: usize, now: Timestamp) {
        self.with_bucket(series, now, |b| {
            b.instances_sum += instances as f64;
            b.instances_samples += 1;
            if instances > 0 {
                b.concurrency_sum += outstanding as f64 / instances as f64;
                b.concurrency_samples += 1;
            }
        });
    }

    /// Records one utilization sample of an instance: into the buckets of its
    /// `{endpoint, variant, instance type}` series (one sample per known value) and the
    /// instance's Prometheus gauges (a value that is not known removes its gauge).
    pub fn record_usage(&self, instance: &UsageSeries, sample: &UsageSample, now: Timestamp) {
        let p = &self.prometheus;
        let gauges = [
            (&p.cpu_utilization, sample.cpu_percent),
            (&p.memory_utilization, sample.memory_percent),
            (&p.gpu_utilization, sample.gpu_percent),
            (&p.gpu_memory_utilization, sample.gpu_memory_percent),
        ];
        for (family, value) in gauges {
            match value {
                Some(v) => {
                    family.get_or_create(instance).set(v);
                }
                None => {
                    family.remove(instance);
                }
            }
        }
        match sample.rss_bytes {
            Some(b) => {
                p.memory_rss_bytes
                    .get_or_create(instance)
                    .set(i64::try_from(b).unwrap_or(i64::MAX));
            }
            None => {
                p.memory_rss_bytes.remove(instance);
            }
        }
        let series = Series {
            endpoint: &instance.endpoint,
            variant: &instance.variant,
            instance_type: &instance.instance_type,
        };
        self.with_bucket(series, now, |b| {
            let u = b.usage.get_or_insert_with(Box::default);
            let values = [
                (&mut u.cpu, sample.cpu_percent),
                (&mut u.memory, sample.memory_percent),
                (&mut u.gpu, sample.gpu_percent),
                (&mut u.gpu_memory, sample.gpu_memory_percent),
            ];
            for (s, v) in values {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    s.add(v);
                }
            }
        });
    }

    /// Removes an instance's utilization gauges (it went away). Its samples stay in the series.
    pub fn forget_usage(&self, instance: &UsageSeries) {
        let p = &self.prometheus;
        p.cpu_utilization.remove(instance);
        p.memory_utilization.remove(instance);
        p.memory_rss_bytes.remove(instance);
        p.gpu_utilization.remove(instance);
        p.gpu_memory_utilization.remove(instance);
    }

    /// Records one backlog sample of the asynchronous endpoint `endpoint` into its endpoint-level
    /// series ([`BACKLOG_METRICS`]) and its Prometheus gauges. Recorded whether or not
    /// invocations are (`[metrics] enabled`), as fleet samples are: autoscaling reads them.
    pub fn record_backlog(&self, endpoint: &str, sample: &BacklogSample, now: Timestamp) {
        let p = &self.prometheus;
        let labels = EndpointSeries {
            endpoint: endpoint.to_string(),
        };
        p.backlog_size
            .get_or_create(&labels)
            .set(i64::try_from(sample.size).unwrap_or(i64::MAX));
        p.backlog_per_instance.get_or_create(&labels).set(sample.per_instance());
        p.backlog_oldest_age
            .get_or_create(&labels)
            .set(sample.oldest_age_seconds);
        p.backlog_without_capacity
            .get_or_create(&labels)
            .set(sample.without_capacity() as i64);
        let key = (
            endpoint.to_string(),
            ENDPOINT_SERIES.to_string(),
            ENDPOINT_SERIES.to_string(),
        );
        self.with_bucket_of(&key, now, |b| {
            let q = b.backlog.get_or_insert_with(Box::default);
            q.size.add(sample.size as f64);
            q.per_instance.add(sample.per_instance());
            q.oldest_age.add(sample.oldest_age_seconds.max(0.0));
            q.without_capacity.add(sample.without_capacity());
        });
    }

    /// Removes an endpoint's backlog gauges (it is gone, or no longer asynchronous). Its samples
    /// stay in the series until they age out (or [`Metrics::forget`]).
    pub fn forget_backlog(&self, endpoint: &str) {
        let labels = EndpointSeries {
            endpoint: endpoint.to_string(),
        };
        let p = &self.prometheus;
        p.backlog_size.remove(&labels);
        p.backlog_per_instance.remove(&labels);
        p.backlog_oldest_age.remove(&labels);
        p.backlog_without_capacity.remove(&labels);
    }

    /// Aggregates `metric` over `[from, to)` for the series `select` names. `None` when there is
    /// no data point in the window.
    pub fn aggregate(
        &self,
        select: Select<'_>,
        metric: &str,
        stat: Statistic,
        from: Timestamp,
        to: Timestamp,
    ) -> Option<f64> {
        let (from, to) = (from.floor() as i64, to.ceil() as i64);
        let metric = select.stored_metric(metric);
        self.with_seconds(select, from, to, |seconds| stat_of(&seconds, metric, stat))
    }

    /// Aggregates `metric` per period of `period` seconds (at least 1) over `[from, to)`: the
    /// periods are aligned to multiples of `period` since the epoch, the first one is the one
    /// holding `from` (so `from` is rounded down to a period boundary, as CloudWatch does) and data
    /// at or after `to` is left out. Returns `(period start, value)` in ascending order, only for
    /// periods with a value.
    pub fn aggregate_periods(
        &self,
        select: Select<'_>,
        metric: &str,
        stat: Statistic,
        from: Timestamp,
        to: Timestamp,
        period: i64,
    ) -> Vec<(i64, f64)> {
        let period = period.max(1);
        let (from, to) = (period_start(from.floor() as i64, period), to.ceil() as i64);
        let metric = select.stored_metric(metric);
        self.with_seconds(select, from, to, |seconds| {
            // Period start -> second -> buckets.
            let mut periods: BTreeMap<i64, BTreeMap<i64, Vec<&Bucket>>> = BTreeMap::new();
            for (second, buckets) in seconds {
                periods
                    .entry(period_start(second, period))
                    .or_default()
                    .insert(second, buckets);
            }
            periods
                .iter()
                .filter_map(|(start, seconds)| stat_of(seconds, metric, stat).map(|v| (*start, v)))
                .collect()
        })
    }

    /// Runs `f` on the buckets of one variant's series (one instance type's, or all of them)
    /// in the seconds `[from, to)`, grouped by second, under the store's lock: the one place
    /// both aggregations select their data.
    fn with_seconds<R>(
        &self,
        Select {
            endpoint,
            variant,
            instance_type,
        }: Select<'_>,
        from: i64,
        to: i64,
        f: impl FnOnce(BTreeMap<i64, Vec<&Bucket>>) -> R,
    ) -> R {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut seconds: BTreeMap<i64, Vec<&Bucket>> = BTreeMap::new();
        for (k, q) in series.iter() {
            let (e, v, t) = &**k;
            if e != endpoint || v != variant || instance_type.is_some_and(|it| it != t) {
                continue;
            }
            let first = q.partition_point(|b| b.second < from);
            for b in q.range(first..).take_while(|b| b.second < to) {
                seconds.entry(b.second).or_default().push(b);
            }
        }
        f(seconds)
    }

    /// Every series `(endpoint, variant, instance type)` of a variant with data at or after
    /// `since`, in order (endpoint-level series are [`Metrics::backlog_endpoints`]').
    pub fn series_keys(&self, since: Timestamp) -> Vec<(String, String, String)> {
        let since = since.floor() as i64;
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, q)| {
                k.1 != ENDPOINT_SERIES && k.0 != COMPONENT_SERIES && q.back().is_some_and(|b| b.second >= since)
            })
            .map(|(k, _)| (**k).clone())
            .collect()
    }

    /// Every endpoint with a backlog sample at or after `since`, in order.
    pub fn backlog_endpoints(&self, since: Timestamp) -> Vec<String> {
        let since = since.floor() as i64;
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, q)| {
                k.1 == ENDPOINT_SERIES
                    && q.iter()
                        .rev()
                        .take_while(|b| b.second >= since)
                        .any(|b| b.backlog.is_some())
            })
            .map(|(k, _)| k.0.clone())
            .collect()
    }

    /// Every series `(endpoint, variant, instance type)` with a sample of the utilization
    /// `metric` (one of [`INSTANCE_METRICS`]) at or after `since`, in order.
    pub fn series_keys_with(&self, since: Timestamp, metric: &str) -> Vec<(String, String, String)> {
        let since = since.floor() as i64;
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, q)| {
                k.0 != COMPONENT_SERIES
                    && q.iter().rev().take_while(|b| b.second >= since).any(|b| {
                        b.usage
                            .as_ref()
                            .and_then(|u| u.of(metric))
                            .is_some_and(|s| s.samples > 0)
                    })
            })
            .map(|(k, _)| (**k).clone())
            .collect()
    }

    /// Forgets an endpoint's series (after DeleteEndpoint).
    pub fn forget(&self, endpoint: &str) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| k.0 != endpoint);
        self.forget_backlog(endpoint);
    }
}

/// The start of the `period`-second period (aligned to the epoch) that holds `second`.
pub fn period_start(second: i64, period: i64) -> i64 {
    second.div_euclid(period.max(1)) * period.max(1)
}

/// The samples of several seconds and series pooled into one.
fn pooled<'a>(samples: impl Iterator<Item = &'a Sampled>) -> Sampled {
    samples.fold(Sampled::default(), |mut p, s| {
        p.merge(s);
        p
    })
}

/// One statistic of one metric over the buckets of some seconds (several instance types each).
fn stat_of(seconds: &BTreeMap<i64, Vec<&Bucket>>, metric: &str, stat: Statistic) -> Option<f64> {
    if seconds.is_empty() {
        return None;
    }
    let all = || seconds.values().flatten();
    let count = |f: fn(&Bucket) -> u64| all().map(|b| f(b)).sum::<u64>() as f64;
    let by_stat = |sum: f64, samples: f64, max: f64, min: f64| match stat {
        Statistic::Sum => Some(sum),
        Statistic::SampleCount => Some(samples),
        Statistic::Average => (samples > 0.0).then(|| sum / samples),
        Statistic::Maximum => (samples > 0.0).then_some(max),
        Statistic::Minimum => (samples > 0.0).then_some(min),
    };
    match metric {
        "Invocations" | "Invocation4XXErrors" | "Invocation5XXErrors" | "InvocationModelErrors" => {
            let f: fn(&Bucket) -> u64 = match metric {
                "Invocations" => |b| b.invocations,
                "Invocation4XXErrors" => |b| b.errors_4xx,
                "Invocation5XXErrors" => |b| b.errors_5xx,
                _ => |b| b.model_errors,
            };
            let n = count(|b| b.invocations);
            let sum = count(f);
            match stat {
                // SageMaker publishes 1 or 0 per request for the error metrics.
                Statistic::Average => (n > 0.0).then(|| sum / n),
                Statistic::Maximum => Some(if sum > 0.0 { 1.0 } else { 0.0 }),
                Statistic::Minimum => Some(if n > 0.0 && sum >= n { 1.0 } else { 0.0 }),
                Statistic::SampleCount => Some(n),
                Statistic::Sum => Some(sum),
            }
        }
        "InvocationsPerInstance" | "InvocationsPerCopy" => {
            let sum: f64 = all().map(|b| b.invocations_per_instance).sum();
            // Per request 1/instances; the smallest per-second mean stands in for the minimum.
            let min = all()
                .filter(|b| b.invocations > 0)
                .map(|b| b.invocations_per_instance / b.invocations as f64)
                .fold(f64::INFINITY, f64::min);
            by_stat(sum, count(|b| b.invocations), sum, min)
        }
        "ModelLatency" | "OverheadLatency" => {
            let of: fn(&Bucket) -> &Sampled = if metric == "ModelLatency" {
                |b| &b.model_latency
            } else {
                |b| &b.overhead_latency
            };
            let p = pooled(all().map(|b| of(b)));
            by_stat(p.sum, p.samples as f64, p.max, p.min)
        }
        PER_COPY_TOTAL => {
            let sum: f64 = all().map(|b| b.per_copy_total).sum();
            let min = all()
                .filter(|b| b.invocations > 0)
                .map(|b| b.per_copy_total / b.invocations as f64)
                .fold(f64::INFINITY, f64::min);
            by_stat(sum, count(|b| b.invocations), sum, min)
        }
        "ConcurrentRequestsPerModel" | "ConcurrentRequestsPerCopy" => {
            // Per second: the mean over the types present; then the statistic over seconds.
            let per_second: Vec<f64> = seconds
                .values()
                .filter_map(|bs| {
                    let (s, n) = bs.iter().fold((0.0, 0u64), |(s, n), b| {
                        (s + b.concurrency_sum, n + b.concurrency_samples)
                    });
                    (n > 0).then(|| s / n as f64)
                })
                .collect();
            let max = per_second.iter().copied().fold(f64::NAN, f64::max);
            let min = per_second.iter().copied().fold(f64::NAN, f64::min);
            by_stat(per_second.iter().sum(), per_second.len() as f64, max, min)
        }
        "InstanceCount" => {
            let per_second: Vec<f64> = seconds
                .values()
                .filter_map(|bs| {
                    let samples: u64 = bs.iter().map(|b| b.instances_samples).max().unwrap_or(0);
                    (samples > 0).then(|| {
                        bs.iter()
                            .map(|b| b.instances_sum / b.instances_samples.max(1) as f64)
                            .sum()
                    })
                })
                .collect();
            let max = per_second.iter().copied().fold(f64::NAN, f64::max);
            let min = per_second.iter().copied().fold(f64::NAN, f64::min);
            by_stat(per_second.iter().sum(), per_second.len() as f64, max, min)
        }
        "ApproximateBacklogSize"
        | "ApproximateBacklogSizePerInstance"
        | "ApproximateAgeOfOldestRequest"
        | "HasBacklogWithoutCapacity" => {
            // One sample per sampling tick; no sample in the window: no data point.
            let p = pooled(all().filter_map(|b| b.backlog.as_ref()?.of(metric)));
            (p.samples > 0)
                .then(|| by_stat(p.sum, p.samples as f64, p.max, p.min))
                .flatten()
        }
        "CPUUtilization" | "MemoryUtilization" | "GPUUtilization" | "GPUMemoryUtilization" => {
            // Every instance's sample counts once: pooled over instances, types and seconds.
            let p = pooled(all().filter_map(|b| b.usage.as_ref()?.of(metric)));
            // No sample (an instance without GPUs): no data point at all, not a zero.
            (p.samples > 0)
                .then(|| by_stat(p.sum, p.samples as f64, p.max, p.min))
                .flatten()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(non_snake_case)]
    fn S<'a>(endpoint: &'a str, variant: &'a str, instance_type: &'a str) -> Series<'a> {
        Series {
            endpoint,
            variant,
            instance_type,
        }
    }

    #[test]
    fn error_metrics_follow_the_status_class_of_the_answer() {
        let m = Arc::new(Metrics::default());
        let one = |outcome| m.record_invocation(S("e", "v", "t"), 1, outcome, 10, 100.5);
        one(Outcome::of_model_status(503));
        one(Outcome::of_model_status(500));
        one(Outcome::of_model_status(418));
        one(Outcome::of_model_status(302));
        one(Outcome::ModelOtherError); // timed out
        one(Outcome::ServerError); // instance unreachable
        one(Outcome::Success);
        let sum = |metric| m.aggregate(Select::new("e", "v", None), metric, Statistic::Sum, 100.0, 101.0);
        assert_eq!(sum("Invocations"), Some(7.0));
        assert_eq!(sum("Invocation5XXErrors"), Some(3.0));
        assert_eq!(sum("Invocation4XXErrors"), Some(1.0));
        assert_eq!(sum("InvocationModelErrors"), Some(5.0));
        let kinds: Vec<String> = m
            .prometheus
            .encode()
            .lines()
            .filter(|l| l.starts_with("spillway_invocation_errors_total"))
            .map(str::to_string)
            .collect();
        for (kind, n) in [("5xx", 1), ("model_5xx", 2), ("model_4xx", 1), ("model_other", 2)] {
            assert!(
                kinds
                    .iter()
                    .any(|l| l.contains(&format!("kind=\"{kind}\"")) && l.ends_with(&format!(" {n}"))),
                "{kind} = {n} in {kinds:?}"
            );
        }
    }

    #[test]
    fn a_client_that_left_counts_as_4xx_without_model_latency() {
        let m = Arc::new(Metrics::default());
        m.record_invocation(S("e", "v", "t"), 1, Outcome::Success, 1000, 100.5);
        m.record_invocation(S("e", "v", "t"), 1, Outcome::ClientClosed, 60_000_000, 100.5);
        let get = |metric, stat| m.aggregate(Select::new("e", "v", None), metric, stat, 100.0, 101.0);
        assert_eq!(get("Invocations", Statistic::Sum), Some(2.0));
        assert_eq!(get("Invocation4XXErrors", Statistic::Sum), Some(1.0));
        assert_eq!(get("Invocation5XXErrors", Statistic::Sum), Some(0.0));
        assert_eq!(get("InvocationModelErrors", Statistic::Sum), Some(0.0));
        // Only the finished invocation has a model latency.
        assert_eq!(get("ModelLatency", Statistic::SampleCount), Some(1.0));
        assert_eq!(get("ModelLatency", Statistic::Maximum), Some(1000.0));
        let text = m.prometheus.encode();
        assert!(
            text.lines().any(|l| l.starts_with("spillway_invocation_errors_total")
                && l.contains("kind=\"client_closed\"")
                && l.ends_with(" 1")),
            "{text}"
        );
        assert!(
            text.contains("spillway_model_latency_seconds_count{endpoint=\"e\",variant=\"v\",instance_type=\"t\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn invocations_aggregate_per_type_and_variant() {
        let m = Arc::new(Metrics::default());
        for i in 0..10 {
            let t = 100.0 + i as f64 * 0.5;
            m.record_invocation(S("e", "v", "ml.g6.2xlarge"), 2, Outcome::Success, 1000, t);
        }
        m.record_invocation(S("e", "v", "ml.m5.xlarge"), 1, Outcome::ModelServerError, 3000, 101.0);
        let agg = |it, metric, stat| m.aggregate(Select::new("e", "v", it), metric, stat, 100.0, 110.0);
        assert_eq!(agg(None, "Invocations", Statistic::Sum), Some(11.0));
        assert_eq!(agg(Some("ml.g6.2xlarge"), "Invocations", Statistic::Sum), Some(10.0));
        assert_eq!(
            agg(Some("ml.g6.2xlarge"), "InvocationsPerInstance", Statistic::Sum),
            Some(5.0)
        );
        assert_eq!(
            agg(Some("ml.m5.xlarge"), "InvocationModelErrors", Statistic::Sum),
            Some(1.0)
        );
        assert_eq!(agg(None, "ModelLatency", Statistic::Maximum), Some(3000.0));
        assert_eq!(agg(None, "ModelLatency", Statistic::Average), Some(13000.0 / 11.0));
        assert_eq!(
            m.aggregate(Select::new("e", "v", None), "Invocations", Statistic::Sum, 200.0, 210.0),
            None
        );
    }

    #[test]
    fn concurrency_is_per_instance() {
        let m = Arc::new(Metrics::default());
        m.record_fleet(S("e", "v", "a"), 2, 6, 10.0);
        m.record_fleet(S("e", "v", "a"), 2, 2, 11.0);
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", Some("a")),
                "ConcurrentRequestsPerModel",
                Statistic::Average,
                10.0,
                12.0
            ),
            Some(2.0)
        );
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", Some("a")),
                "ConcurrentRequestsPerModel",
                Statistic::Maximum,
                10.0,
                12.0
            ),
            Some(3.0)
        );
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", None),
                "InstanceCount",
                Statistic::Average,
                10.0,
                12.0
            ),
            Some(2.0)
        );
    }

    #[test]
    fn periods_are_epoch_aligned_and_end_is_exclusive() {
        let m = Arc::new(Metrics::default());
        for s in 100..130 {
            m.record_invocation(S("e", "v", "a"), 1, Outcome::Success, 10 + s as u64, s as f64 + 0.5);
        }
        let periods =
            |stat, from, to, p| m.aggregate_periods(Select::new("e", "v", None), "Invocations", stat, from, to, p);
        // 103 rounds down to 100; 125 excludes 125..129.
        assert_eq!(
            periods(Statistic::Sum, 103.0, 125.0, 10),
            vec![(100, 10.0), (110, 10.0), (120, 5.0)]
        );
        assert_eq!(
            periods(Statistic::Sum, 100.0, 130.0, 7),
            vec![(98, 5.0), (105, 7.0), (112, 7.0), (119, 7.0), (126, 4.0)]
        );
        assert_eq!(
            periods(Statistic::Sum, 100.0, 103.0, 1),
            vec![(100, 1.0), (101, 1.0), (102, 1.0)]
        );
        let lat = m.aggregate_periods(
            Select::new("e", "v", Some("a")),
            "ModelLatency",
            Statistic::Minimum,
            100.0,
            130.0,
            10,
        );
        assert_eq!(lat, vec![(100, 110.0), (110, 120.0), (120, 130.0)]);
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", None),
                "ModelLatency",
                Statistic::Minimum,
                100.0,
                130.0
            ),
            Some(110.0)
        );
        assert!(periods(Statistic::Sum, 200.0, 300.0, 10).is_empty());
    }

    #[test]
    fn retention_and_series_keys() {
        let m = Arc::new(Metrics::with_retention(10));
        m.record_invocation(S("e", "v", "a"), 1, Outcome::Success, 1, 100.0);
        m.record_invocation(S("e", "v", "b"), 1, Outcome::Success, 1, 105.0);
        assert_eq!(m.series_keys(0.0).len(), 2);
        assert_eq!(m.series_keys(101.0), vec![("e".into(), "v".into(), "b".into())]);
        m.record_invocation(S("e", "v", "a"), 1, Outcome::Success, 1, 120.0);
        // The bucket of 100 is older than 10 s when 120 is recorded.
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", Some("a")),
                "Invocations",
                Statistic::Sum,
                0.0,
                200.0
            ),
            Some(1.0)
        );
        assert_eq!(m.retention_seconds(), 10);
        assert_eq!(Metrics::default().retention_seconds(), RETENTION_S);
    }

    fn usage_series(t: &str, instance: &str) -> UsageSeries {
        UsageSeries {
            endpoint: "e".into(),
            variant: "v".into(),
            instance_type: t.into(),
            instance: instance.into(),
        }
    }

    fn cpu(cpu: f64, gpu: Option<f64>) -> UsageSample {
        UsageSample {
            cpu_percent: Some(cpu),
            memory_percent: Some(cpu / 10.0),
            rss_bytes: Some(1 << 20),
            gpu_percent: gpu,
            gpu_memory_percent: gpu.map(|g| g / 2.0),
        }
    }

    #[test]
    fn utilization_is_the_mean_over_instances_and_samples() {
        let m = Arc::new(Metrics::default());
        let (a1, a2, b1) = (
            usage_series("a", "i-1"),
            usage_series("a", "i-2"),
            usage_series("b", "i-3"),
        );
        m.record_usage(&a1, &cpu(100.0, Some(80.0)), 10.0);
        m.record_usage(&a2, &cpu(20.0, None), 10.2);
        m.record_usage(&a1, &cpu(60.0, Some(40.0)), 15.0);
        m.record_usage(&b1, &cpu(300.0, None), 15.0);
        let agg = |t, metric, stat| m.aggregate(Select::new("e", "v", t), metric, stat, 0.0, 100.0);
        assert_eq!(agg(Some("a"), "CPUUtilization", Statistic::Average), Some(60.0));
        assert_eq!(agg(Some("a"), "CPUUtilization", Statistic::Maximum), Some(100.0));
        assert_eq!(agg(Some("a"), "CPUUtilization", Statistic::Minimum), Some(20.0));
        assert_eq!(agg(Some("a"), "CPUUtilization", Statistic::SampleCount), Some(3.0));
        assert_eq!(agg(None, "CPUUtilization", Statistic::Average), Some(120.0));
        assert_eq!(agg(Some("a"), "MemoryUtilization", Statistic::Average), Some(6.0));
        // GPU values only from the instance that has GPUs; none at all for type b.
        assert_eq!(agg(Some("a"), "GPUUtilization", Statistic::Average), Some(60.0));
        assert_eq!(agg(Some("a"), "GPUUtilization", Statistic::SampleCount), Some(2.0));
        assert_eq!(agg(Some("a"), "GPUMemoryUtilization", Statistic::Maximum), Some(40.0));
        assert_eq!(agg(Some("b"), "GPUUtilization", Statistic::Sum), None);
        assert_eq!(agg(Some("b"), "GPUUtilization", Statistic::SampleCount), None);
        // Periods: only periods with a sample have a value.
        let p = m.aggregate_periods(
            Select::new("e", "v", Some("a")),
            "CPUUtilization",
            Statistic::Average,
            0.0,
            100.0,
            5,
        );
        assert_eq!(p, vec![(10, 60.0), (15, 60.0)]);
        // Seconds with invocations but no usage sample add nothing.
        m.record_invocation(S("e", "v", "a"), 1, Outcome::Success, 1, 30.0);
        assert_eq!(agg(Some("a"), "CPUUtilization", Statistic::SampleCount), Some(3.0));

        assert_eq!(
            m.series_keys_with(0.0, "GPUUtilization"),
            vec![("e".into(), "v".into(), "a".into())]
        );
        assert_eq!(m.series_keys_with(0.0, "CPUUtilization").len(), 2);
        assert!(m.series_keys_with(16.0, "CPUUtilization").is_empty());

        // Gauges per instance; a value that is not known removes its gauge; forgetting removes all.
        let text = m.prometheus.encode();
        assert!(text.contains(r#"spillway_instance_cpu_utilization_percent{endpoint="e",variant="v",instance_type="a",instance="i-1"} 60.0"#), "{text}");
        assert!(text.contains(r#"spillway_instance_gpu_utilization_percent{endpoint="e",variant="v",instance_type="a",instance="i-1"} 40.0"#), "{text}");
        assert!(!text.contains(
            r#"spillway_instance_gpu_utilization_percent{endpoint="e",variant="v",instance_type="a",instance="i-2"}"#
        ));
        assert!(text.contains(r#"spillway_instance_memory_rss_bytes{endpoint="e",variant="v",instance_type="b",instance="i-3"} 1048576"#), "{text}");
        m.record_usage(&a1, &cpu(10.0, None), 20.0);
        assert!(
            !m.prometheus
                .encode()
                .contains(r#"gpu_utilization_percent{endpoint="e",variant="v",instance_type="a",instance="i-1"}"#)
        );
        m.forget_usage(&b1);
        assert!(!m.prometheus.encode().contains("i-3"));
    }

    fn backlog(size: u64, age: f64, instances: usize) -> BacklogSample {
        BacklogSample {
            size,
            oldest_age_seconds: age,
            instances,
        }
    }

    #[test]
    fn backlog_metrics_are_endpoint_level_samples() {
        let m = Metrics::default();
        m.record_backlog("e", &backlog(6, 12.0, 0), 100.0);
        m.record_backlog("e", &backlog(6, 13.0, 3), 101.0);
        m.record_backlog("e", &backlog(0, 0.0, 3), 102.0);
        let get = |metric, stat| m.aggregate(Select::endpoint("e"), metric, stat, 100.0, 103.0);
        assert_eq!(get("ApproximateBacklogSize", Statistic::Maximum), Some(6.0));
        assert_eq!(get("ApproximateBacklogSize", Statistic::Average), Some(4.0));
        // 6 at zero instances counts whole; 6 over 3 instances is 2.
        assert_eq!(get("ApproximateBacklogSizePerInstance", Statistic::Maximum), Some(6.0));
        assert_eq!(get("ApproximateBacklogSizePerInstance", Statistic::Minimum), Some(0.0));
        assert_eq!(get("HasBacklogWithoutCapacity", Statistic::Sum), Some(1.0));
        assert_eq!(get("HasBacklogWithoutCapacity", Statistic::SampleCount), Some(3.0));
        assert_eq!(get("ApproximateAgeOfOldestRequest", Statistic::Maximum), Some(13.0));
        // Not a variant's series, and no other endpoint's.
        assert_eq!(
            m.aggregate(
                Select::new("e", "v", None),
                "ApproximateBacklogSize",
                Statistic::Sum,
                100.0,
                103.0
            ),
            None
        );
        assert_eq!(
            m.aggregate(
                Select::endpoint("f"),
                "ApproximateBacklogSize",
                Statistic::Sum,
                100.0,
                103.0
            ),
            None
        );
        assert!(m.series_keys(0.0).is_empty());
        assert_eq!(m.backlog_endpoints(0.0), vec!["e".to_string()]);
        assert!(m.backlog_endpoints(103.0).is_empty());
        let text = m.prometheus.encode();
        assert!(text.contains("spillway_async_backlog_size{endpoint=\"e\"} 0"), "{text}");
        assert!(
            text.contains("spillway_async_backlog_without_capacity{endpoint=\"e\"} 0"),
            "{text}"
        );
        m.forget("e");
        assert!(!m.prometheus.encode().contains("endpoint=\"e\""));
    }

    proptest::proptest! {
        /// Per instance is the backlog over the instances (the backlog itself at none), and the
        /// flag is set exactly when requests wait without an instance.
        #[test]
        fn backlog_per_instance_and_flag(size in 0u64..10_000, instances in 0usize..200) {
            let s = backlog(size, 1.0, instances);
            proptest::prop_assert!((s.per_instance() * instances.max(1) as f64 - size as f64).abs() < 1e-6);
            proptest::prop_assert_eq!(s.without_capacity() == 1.0, size > 0 && instances == 0);
            proptest::prop_assert!(s.per_instance() <= size as f64);
        }
    }

    #[test]
    fn a_copy_records_into_its_variant_and_its_component() {
        let m = Arc::new(Metrics::default());
        let g5 = m.handle_of(S("e", "v", "ml.g5.xlarge"), Some("ic"));
        let g6 = m.handle_of(S("e", "v", "ml.g6.xlarge"), Some("ic"));
        // Three copies: two on g5 hosts, one on a g6 host.
        g5.record_units(1, (3, 2), Outcome::Success, 1000, 10, 10.0);
        g5.record_units(1, (3, 2), Outcome::ModelServerError, 3000, 10, 10.5);
        g6.record_units(1, (3, 1), Outcome::Success, 2000, 10, 11.0);
        let at = |select: Select<'_>, metric: &str, stat| m.aggregate(select, metric, stat, 0.0, 60.0);
        // The variant's series see every invocation.
        assert_eq!(
            at(Select::new("e", "v", None), "Invocations", Statistic::Sum),
            Some(3.0)
        );
        // The component's, whole and per type.
        let ic = Select::component("ic", None);
        assert_eq!(at(ic, "Invocations", Statistic::Sum), Some(3.0));
        assert_eq!(at(ic, "Invocation5XXErrors", Statistic::Sum), Some(1.0));
        assert_eq!(at(ic, "InvocationModelErrors", Statistic::Sum), Some(1.0));
        assert_eq!(at(ic, "ModelLatency", Statistic::Average), Some(2000.0));
        assert_eq!(at(ic, "ModelLatency", Statistic::Maximum), Some(3000.0));
        // InvocationsPerCopy: 1/3 per invocation over the component; per type 1/copies of it.
        assert!((at(ic, "InvocationsPerCopy", Statistic::Sum).unwrap() - 1.0).abs() < 1e-9);
        let of_g5 = Select::component("ic", Some("ml.g5.xlarge"));
        assert_eq!(at(of_g5, "InvocationsPerCopy", Statistic::Sum), Some(1.0));
        assert_eq!(at(of_g5, "Invocations", Statistic::Sum), Some(2.0));
        // Listed apart from the variants' series.
        assert_eq!(
            m.component_keys(0.0),
            vec![
                ("ic".into(), "ml.g5.xlarge".into()),
                ("ic".into(), "ml.g6.xlarge".into())
            ]
        );
        assert!(m.series_keys(0.0).iter().all(|k| k.0 == "e"));
        // Prometheus: the component label.
        let text = m.prometheus.encode();
        assert!(
            text.contains(
                r#"spillway_component_invocations_total{endpoint="e",component="ic",instance_type="ml.g5.xlarge"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"spillway_component_invocation_errors_total{endpoint="e",component="ic",instance_type="ml.g5.xlarge",kind="model_5xx"} 1"#), "{text}");
        m.forget_component("e", "ic");
        assert!(m.component_keys(0.0).is_empty());
        assert!(!m.prometheus.encode().contains("component=\"ic\""));
    }

    #[test]
    fn concurrent_requests_per_copy_come_from_fleet_samples() {
        let m = Metrics::default();
        m.record_component_fleet("e", "ic", "ml.g5.xlarge", 2, 6, 10.0);
        m.record_component_fleet("e", "ic", "ml.g5.xlarge", 2, 2, 11.0);
        let ic = Select::component("ic", None);
        let avg = m.aggregate(ic, "ConcurrentRequestsPerCopy", Statistic::Average, 0.0, 60.0);
        assert_eq!(avg, Some(2.0), "(3 + 1) / 2");
        assert_eq!(
            m.aggregate(ic, "ConcurrentRequestsPerCopy", Statistic::Maximum, 0.0, 60.0),
            Some(3.0)
        );
        // High resolution: 1-second periods.
        let points = m.aggregate_periods(ic, "ConcurrentRequestsPerCopy", Statistic::Average, 10.0, 12.0, 1);
        assert_eq!(points, vec![(10, 3.0), (11, 1.0)]);
        assert!(m.prometheus.encode().contains(r#"spillway_component_concurrent_requests_per_copy{endpoint="e",component="ic",instance_type="ml.g5.xlarge"} 1.0"#));
    }
}
