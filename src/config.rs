//! The server configuration file (TOML). Every member has a safe default, so an empty file
//! (or none) gives a loopback-only server with the local provider.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// A configuration file that could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (names the key).
        message: String,
    },
    /// A value is out of range or unknown.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on (`--listen` overrides). Default `127.0.0.1:7474`.
    pub listen: SocketAddr,
    /// Where state lives (`--data-dir` overrides). Default `./.spillway`.
    pub data_dir: PathBuf,
    /// Region used in ARNs.
    pub region: String,
    /// Account id used in ARNs and error messages.
    pub account_id: String,
    /// Provisioning knobs.
    pub provisioning: ProvisioningConfig,
    /// The capacity provider.
    pub provider: ProviderConfig,
    /// Returning fleets to preferred hardware.
    pub rebalance: RebalanceConfig,
    /// The in-process autoscaler.
    pub autoscaling: AutoscalingConfig,
    /// The data plane.
    pub router: RouterConfig,
    /// The in-process metrics store.
    pub metrics: MetricsConfig,
    /// The audit trail (`<data_dir>/audit.db`, read with CloudTrail's `LookupEvents`).
    pub audit: AuditConfig,
    /// Host names (besides `localhost` and IP addresses) this server answers for, e.g. the name
    /// of a proxy in front of it. A request naming another host in `Host` is refused: a web
    /// page that rebinds a name of its own to this address cannot reach it (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Who may call: request authentication.
    pub auth: AuthConfig,
    /// What models may run.
    pub models: ModelsConfig,
    /// Model logs (each instance's stdout and stderr, read as CloudWatch Logs).
    pub logs: LogsConfig,
    /// The fleet ledger behind `spillway cost` and `GET /_spillway/cost`.
    pub cost: CostConfig,
    /// Asynchronous endpoints' workers (docs/async.md).
    pub async_inference: AsyncInferenceSettings,
    /// SNS notifications of asynchronous inference, delivered to HTTP(S) subscribers.
    pub notifications: NotificationsConfig,
    /// Where asynchronous inference reads its input and writes its output (`docs/async.md`).
    pub storage: StorageConfig,
}

/// `[async_inference]`: what the workers of asynchronous endpoints may hold and keep.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsyncInferenceSettings {
    /// Largest input read and largest answer kept per request, bytes (default 1 GiB, AWS's
    /// asynchronous payload limit; each request in flight holds its input and its answer in
    /// memory). A larger input fails the request, as does a larger answer.
    pub max_payload_bytes: u64,
    /// Seconds a finished request's record is kept in the queue (default 7 days); its output
    /// or failure object is not affected.
    pub retention_seconds: u64,
}

impl Default for AsyncInferenceSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1 << 30,
            retention_seconds: 7 * 86_400,
        }
    }
}

/// `[notifications]`: where the notifications of asynchronous endpoints (`SuccessTopic`,
/// `ErrorTopic`) go. spillway is not SNS: each topic ARN is mapped here to the one HTTP URL that
/// subscribes to it (a topic mapped here stands for a confirmed subscription; nothing is sent
/// to confirm it). A notification is written to `<data_dir>/notifications.db` before it is
/// acknowledged, then POSTed in SNS's HTTP(S) notification format, retried with exponential
/// back-off, and kept as a dead letter after `max_attempts` (docs/async.md, "Notifications").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Topic ARN → `http://` URL of its subscriber. A topic not mapped is recorded as not
    /// delivered (an event and a dead letter), never an error of the request.
    pub topics: BTreeMap<String, String>,
    /// Delivery attempts before a notification becomes a dead letter, 1 to 100 (default 10).
    pub max_attempts: u32,
    /// Seconds after the first failed attempt, doubling per attempt (default 1, 0.01 to 3600).
    pub backoff_initial_seconds: f64,
    /// The longest wait between attempts (default 300, at least `backoff_initial_seconds`, at
    /// most 86400).
    pub backoff_max_seconds: f64,
    /// Seconds one POST may take, connection included (default 15; 0.1 to 300).
    pub timeout_seconds: f64,
    /// If set, every POST carries `x-spillway-signature: sha256=<hex HMAC-SHA256 of the body
    /// with this secret>`, so a subscriber can check the notification came from this server
    /// (spillway cannot sign as AWS). At least 16 characters.
    pub signing_secret: Option<String>,
    /// Days delivered notifications and dead letters are kept (default 14, 1 to 400).
    pub retention_days: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            topics: BTreeMap::new(),
            max_attempts: 10,
            backoff_initial_seconds: 1.0,
            backoff_max_seconds: 300.0,
            timeout_seconds: 15.0,
            signing_secret: None,
            retention_days: 14,
        }
    }
}

impl NotificationsConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("notifications.{m}")));
        for (topic, url) in &self.topics {
            if let Err(e) = crate::core::notify::check_topic_arn(topic) {
                return bad(format!("topics: {e}"));
            }
            if let Err(e) = check_webhook_url(url) {
                return bad(format!("topics.{topic:?}: {e}"));
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return bad(format!("max_attempts = {}: expected 1 to 100", self.max_attempts));
        }
        let (initial, max) = (self.backoff_initial_seconds, self.backoff_max_seconds);
        if !(0.01..=3600.0).contains(&initial) {
            return bad(format!("backoff_initial_seconds = {initial}: expected 0.01 to 3600"));
        }
        if !(initial..=86400.0).contains(&max) {
            return bad(format!(
                "backoff_max_seconds = {max}: expected backoff_initial_seconds ({initial}) to 86400"
            ));
        }
        if !(0.1..=300.0).contains(&self.timeout_seconds) {
            return bad(format!(
                "timeout_seconds = {}: expected 0.1 to 300",
                self.timeout_seconds
            ));
        }
        if self.signing_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return bad("signing_secret: expected at least 16 characters".into());
        }
        if !(1..=400).contains(&self.retention_days) {
            return bad(format!("retention_days = {}: expected 1 to 400", self.retention_days));
        }
        Ok(())
    }
}

/// Whether `url` is a URL spillway can POST notifications to: `http://host[:port][/path]`.
/// `https://` is refused for now: this build has no TLS client (put a TLS-terminating proxy on
/// the loopback in front of an HTTPS subscriber).
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported by this build (no TLS client); use http://, e.g. a TLS-terminating proxy on the loopback"
            ));
        }
        _ => return Err(format!("{url:?}: expected an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: the URL names no host"));
    }
    Ok(())
}

/// `[storage]`: the object store behind `s3://` URIs (asynchronous inference's input and
/// output). `backend = "embedded"` (the default) keeps objects under `<data_dir>/objects` and
/// serves the S3 API for them on `listen`; `backend = "s3"` uses an S3-compatible server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `"embedded"` or `"s3"`.
    pub backend: StorageBackend,
    /// The embedded store's S3 API listener (`serve --storage-listen`,
    /// `SPILLWAY_STORAGE_LISTEN`), default `127.0.0.1:7475`; port 0 picks a free port (the
    /// bound address is printed). Not started with `backend = "s3"`.
    pub listen: SocketAddr,
    /// `backend = "s3"`: the server's URL, e.g. `http://127.0.0.1:9000`; absent: AWS's
    /// regional endpoint.
    pub s3_endpoint: Option<String>,
    /// `backend = "s3"`: the region requests are signed for (default: the top-level `region`).
    pub region: Option<String>,
    /// `backend = "s3"`: allow a plain `http://` endpoint (default false).
    pub allow_http: bool,
    /// The largest object the embedded store accepts in one `PutObject` or upload part, in
    /// bytes (default 5 GiB, S3's own limit for one `PutObject`).
    pub max_object_bytes: u64,
}

/// `[storage] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `<data_dir>/objects`, served over S3's API by spillway itself.
    Embedded,
    /// Any S3-compatible server (AWS S3, MinIO, moto, ...).
    S3,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            listen: "127.0.0.1:7475".parse().expect("static address"),
            s3_endpoint: None,
            region: None,
            allow_http: false,
            max_object_bytes: 5 << 30,
        }
    }
}

/// `[cost]`: the fleet ledger. Every `sample_seconds`, what each endpoint holds (instances per
/// variant and type) is written to the store; `spillway cost` prices it with the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Seconds between two samples, 1 to 3600 (default 60). An instance is billed for every
    /// sample that sees it, so a fleet change is accounted within this granularity.
    pub sample_seconds: u64,
    /// Days of samples kept, 1 to 400 (default 35).
    pub retention_days: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            sample_seconds: 60,
            retention_days: 35,
        }
    }
}

/// `[logs]`: the capture of every instance's stdout and stderr (`<data_dir>/logs`, read with
/// CloudWatch Logs' `DescribeLogGroups`, `DescribeLogStreams`, `GetLogEvents`,
/// `FilterLogEvents`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// The most bytes one instance's log stream keeps on disk (default 16 MiB, at least 64 KiB):
    /// four segments of a quarter each, the oldest deleted when a new one starts.
    pub max_bytes_per_instance: u64,
    /// Seconds a stream is kept after its instance is gone (default 259200, three days; 1 to
    /// 31536000). The streams of running instances are never deleted.
    pub retention_seconds: u64,
}

/// `[logs] max_bytes_per_instance` by default: 16 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 16 << 20;

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_instance: DEFAULT_LOG_MAX_BYTES,
            retention_seconds: 3 * 86_400,
        }
    }
}

/// `[auth]`: how requests are authenticated (see `docs/security.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `"sigv4"` (the default): every request carries an AWS Signature Version 4 by a key of
    /// this server's IAM, and is allowed by its policies. `"none"`: no authentication, every
    /// caller is the administrator; only on a loopback listener, and logged as a warning.
    pub mode: AuthMode,
    /// Actions anyone may call without signing, e.g. `"spillway:Metrics"` for a Prometheus
    /// scraper. Default: `["spillway:Health"]` (liveness probes; it tells nothing).
    pub anonymous_actions: Vec<String>,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// AWS Signature Version 4 and IAM policies.
    Sigv4,
    /// No authentication (loopback only).
    None,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Sigv4,
            anonymous_actions: vec!["spillway:Health".into()],
        }
    }
}

/// `[models]`: what a model's `Image` may be. An `Image` is a command line run on this host,
/// so `CreateModel` is checked against this list before any policy matters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Globs (`*` any run of characters, `?` one character) over the whole `Image` command
    /// line. Default `["builtin:*"]`: only the model servers built into spillway.
    pub allowed_images: Vec<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            allowed_images: vec!["builtin:*".into()],
        }
    }
}

impl ModelsConfig {
    /// The first glob of `allowed_images` that `image` matches.
    pub fn allowing(&self, image: &str) -> Option<&str> {
        self.allowed_images
            .iter()
            .find(|g| crate::core::iam::glob_match(g.as_bytes(), image.as_bytes()))
            .map(String::as_str)
    }
}

/// Which `Host` and `Origin` a request may carry (see `docs/security.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// `allowed_hosts`, lower-cased, without ports or a trailing dot.
    names: Vec<String>,
    /// `allowed_hosts` holds `*`: every host name passes (behind a proxy that checks them).
    any: bool,
}

impl HostPolicy {
    /// The policy of `allowed_hosts`.
    pub fn new(allowed_hosts: &[String]) -> Self {
        Self {
            names: allowed_hosts
                .iter()
                .map(|h| host_name(h.trim()).trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            any: allowed_hosts.iter().any(|h| h.trim() == "*"),
        }
    }

    /// Whether a `Host` value names this server: an IP address (a literal cannot be rebound),
    /// `localhost`, or an allowed name, with or without a port. No `Host` at all (HTTP/1.0,
    /// clients that are not browsers) is not a rebinding and passes.
    pub fn allows_host(&self, host: Option<&[u8]>) -> bool {
        let Some(host) = host else { return true };
        let Ok(host) = std::str::from_utf8(host) else {
            return false;
        };
        let Some(name) = strict_host_name(host) else {
            return false;
        };
        // `localhost` and its subdomains resolve to loopback in browsers themselves (RFC 6761).
        let local = name.eq_ignore_ascii_case("localhost")
            || name.len() > 10 && name[name.len() - 10..].eq_ignore_ascii_case(".localhost");
        if self.any || local || name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether a request with this `Origin` may change anything: no `Origin` (not a browser),
    /// or a browser page of this very server (the `Origin`'s host and port are the request's
    /// `Host`). Any other page is a cross-origin request and is refused.
    pub fn allows_origin(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else { return true };
        let authority = origin
            .strip_prefix(b"http://")
            .or_else(|| origin.strip_prefix(b"https://"))
            .unwrap_or(b"");
        host.is_some_and(|h| !authority.is_empty() && authority.eq_ignore_ascii_case(h.trim_ascii()))
    }
}

impl HostPolicy {
    /// Refuses a request whose `Host` this server does not answer for, or, when it may change
    /// something (any method but `GET` and `HEAD`, every invocation), one a web page of another
    /// origin sent. The refusal says why; it is answered as `AccessDeniedException` (403).
    pub fn check(&self, host: Option<&[u8]>, origin: Option<&[u8]>, mutation: bool) -> Result<(), String> {
        if !self.allows_host(host) {
            return Err(format!(
                "Host {:?} is not a name this server answers for (an IP address, localhost, or a name in allowed_hosts)",
                String::from_utf8_lossy(host.unwrap_or_default())
            ));
        }
        if mutation && !self.allows_origin(origin, host) {
            return Err(format!(
                "Cross-origin request from {:?} refused: only this server's own pages may change it",
                String::from_utf8_lossy(origin.unwrap_or_default())
            ));
        }
        Ok(())
    }
}

/// The host of a `Host` value (RFC 9110: `host [ ":" port ]`), without its port, a trailing
/// dot or the brackets of an IPv6 literal; `None` for anything else (junk after `]`, a port
/// that is not digits, characters no host name has).
fn strict_host_name(host: &str) -> Option<&str> {
    let host = host.trim_matches([' ', '\t']);
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(digits)) {
            return None;
        }
        return ip.parse::<std::net::Ipv6Addr>().is_ok().then_some(ip);
    }
    let name = match host.split_once(':') {
        Some((name, port)) if digits(port) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then_some(name)
}

/// The host part of a configured name: without its port, and without the brackets of an IPv6
/// literal.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7474".parse().expect("static address"),
            data_dir: PathBuf::from(".spillway"),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            provisioning: ProvisioningConfig::default(),
            provider: ProviderConfig::default(),
            rebalance: RebalanceConfig::default(),
            autoscaling: AutoscalingConfig::default(),
            router: RouterConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            allowed_hosts: vec![],
            auth: AuthConfig::default(),
            models: ModelsConfig::default(),
            logs: LogsConfig::default(),
            cost: CostConfig::default(),
            async_inference: AsyncInferenceSettings::default(),
            notifications: NotificationsConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

/// `[metrics]`: the in-process store behind the CloudWatch API, `/metrics` and the autoscaler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Seconds of one-second buckets kept per `{endpoint, variant, instance type}` series
    /// (about 150 bytes a second, so the default of 3 hours is about 1.6 MiB per series).
    pub retention_seconds: u64,
    /// Seconds between two samples of every instance's CPU, memory and GPU use
    /// (`CPUUtilization`, `MemoryUtilization`, `GPUUtilization`, `GPUMemoryUtilization`);
    /// 1 to 300, or 0 to sample nothing.
    pub usage_interval_seconds: u64,
    /// Record invocation metrics (on by default). Off, the invocation path records nothing:
    /// `/metrics` and the CloudWatch API have no invocation series and target-tracking policies
    /// on invocation metrics see no data. Meant for measuring what recording costs.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            retention_seconds: 3 * 3600,
            usage_interval_seconds: 5,
            enabled: true,
        }
    }
}

/// `[audit]`: the audit trail, one CloudTrail record per call in `<data_dir>/audit.db`,
/// chained by hash (`spillway audit verify`), read with CloudTrail's `LookupEvents` and
/// exported with `spillway audit export`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record calls (on by default). Off, nothing is recorded and `LookupEvents` is refused;
    /// meant only for a single-user loopback server.
    pub enabled: bool,
    /// Days a record is kept (default 90, as CloudTrail's event history; 1 to 36500). Older
    /// records are deleted oldest first; the chain stays verifiable from the last deleted one.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
        }
    }
}

impl AuditConfig {
    /// How long a record is kept.
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }
}

/// `[router]`: the invocation path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Seconds the model may take to start answering (the container contract says 60), and
    /// may then go without sending any more of its answer (nginx's `proxy_read_timeout`).
    pub model_timeout_seconds: f64,
    /// Requests in flight per instance beyond which new requests queue (0: no limit).
    pub max_concurrent_requests_per_instance: u32,
    /// How long a request may queue for a free instance before `ThrottlingException` (429).
    pub queue_timeout_ms: u64,
    /// Threads that serve client connections, each with its own event loop and its own pool of
    /// connections to model instances (0: one per CPU).
    pub io_threads: usize,
    /// What `CAPACITY_AWARE` routing believes an instance type can carry.
    pub capacity_source: CapacitySource,
    /// Seconds a client may take to send a request's headers, may stay idle on a kept-alive
    /// connection, may go without sending any of a request body, and may go without accepting
    /// any of an answer being written to it, before the connection is closed (nginx's
    /// `client_header_timeout`, `keepalive_timeout`, `client_body_timeout` and `send_timeout`).
    pub client_timeout_seconds: f64,
    /// Whether client connections start on the lean invocation path (`dataplane/fastpath.rs`,
    /// the default). `false` serves every request through hyper, invocations included: the same
    /// answers, at a higher CPU cost per request (for comparing the two, or ruling the fast
    /// path out).
    pub fast_path: bool,
    /// Client connections served at once; a connection beyond them is closed as it arrives
    /// (nginx's `worker_connections`), so a flood of idle connections cannot take the
    /// descriptors the control plane, model connections and instances need. 0: derived from
    /// the open-file limit (raised to its hard limit at start): half of what remains after
    /// 256 descriptors are kept back, since every client connection may hold one model
    /// connection too.
    pub max_client_connections: usize,
}

/// `[router] capacity_source`: where capacity-aware routing gets each instance type's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CapacitySource {
    /// The type's mean model latency over the last 30 s in its variant (from the metrics store),
    /// with the catalog for types not measured yet, calibrated by those that are.
    #[default]
    Measured,
    /// The catalog only: accelerator memory for accelerated types, vCPUs otherwise.
    Catalog,
}

impl RouterConfig {
    /// `client_timeout_seconds` as a duration.
    pub fn client_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.client_timeout_seconds)
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            model_timeout_seconds: 60.0,
            max_concurrent_requests_per_instance: 0,
            queue_timeout_ms: 1000,
            io_threads: 0,
            capacity_source: CapacitySource::Measured,
            client_timeout_seconds: 30.0,
            fast_path: true,
            max_client_connections: 0,
        }
    }
}

/// `[autoscaling]`: how often target-tracking policies are evaluated and over what window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalingConfig {
    /// Seconds between evaluations (AWS alarms evaluate every minute).
    pub evaluation_interval_seconds: f64,
    /// Seconds of metrics each evaluation looks at. Sums are scaled to per-minute values.
    pub metric_window_seconds: f64,
    /// Seconds per period of the alarms target tracking creates (AWS: 60; AlarmHigh acts after
    /// 3 periods over the target, AlarmLow after 15 under 90 % of it). Tests shorten it.
    pub target_tracking_period_seconds: u64,
    /// The most CloudWatch alarms the server keeps (AWS's default quota: 5,000 per region);
    /// each is evaluated every `evaluation_interval_seconds`.
    pub max_alarms: usize,
}

impl Default for AutoscalingConfig {
    fn default() -> Self {
        Self {
            evaluation_interval_seconds: 60.0,
            metric_window_seconds: 60.0,
            target_tracking_period_seconds: 60,
            max_alarms: 5000,
        }
    }
}

/// `[rebalance]`: moving a running fleet back to higher-priority pools when capacity returns.
/// Per endpoint, the tag `spillway:rebalance` = `enabled` | `disabled` overrides `enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebalanceConfig {
    /// Server-wide default.
    pub enabled: bool,
    /// An instance must have run this long before it is replaced.
    pub min_runtime_seconds: u64,
    /// Surge instances in flight per variant.
    pub max_in_flight: u32,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_runtime_seconds: 300,
            max_in_flight: 1,
        }
    }
}

/// `[provisioning]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Replaces every variant's provisioning deadline (tests and game days). The API still
    /// validates `VariantInstanceProvisionTimeoutInSeconds` as 300..3600.
    pub deadline_override_seconds: Option<u64>,
    /// Replaces every variant's container health-check window.
    pub health_check_timeout_override_seconds: Option<u64>,
    /// First back-off interval of an instance type after an insufficient-capacity error.
    pub ice_backoff_initial_ms: u64,
    /// Longest back-off interval (the interval doubles per consecutive error up to this).
    pub ice_backoff_max_ms: u64,
    /// SIGTERM → SIGKILL grace when stopping an instance (the container contract says 30 s).
    pub termination_grace_seconds: u64,
    /// The most bytes a `ModelDataUrl` archive may unpack to (or a plain file may have).
    pub model_data_max_bytes: u64,
    /// The most entries a `ModelDataUrl` archive may hold.
    pub model_data_max_entries: u64,
}

/// `[provisioning] model_data_max_bytes` by default: 256 GiB, room for a 70B-parameter model in
/// 16-bit weights (about 140 GB) with its tokenizer and configuration.
pub const DEFAULT_MODEL_DATA_MAX_BYTES: u64 = 256 << 30;

/// `[provisioning] model_data_max_entries` by default.
pub const DEFAULT_MODEL_DATA_MAX_ENTRIES: u64 = 100_000;

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            deadline_override_seconds: None,
            health_check_timeout_override_seconds: None,
            ice_backoff_initial_ms: 5_000,
            ice_backoff_max_ms: 300_000,
            termination_grace_seconds: 30,
            model_data_max_bytes: DEFAULT_MODEL_DATA_MAX_BYTES,
            model_data_max_entries: DEFAULT_MODEL_DATA_MAX_ENTRIES,
        }
    }
}

/// `[provider]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Which provider runs instances: `local` (processes on this host) or `slurm` (Slurm jobs).
    pub kind: String,
    /// `[provider.local]`.
    pub local: LocalProviderConfig,
    /// `[provider.slurm]`.
    pub slurm: SlurmProviderConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            local: LocalProviderConfig::default(),
            slurm: SlurmProviderConfig::default(),
        }
    }
}

/// `[provider.local]`: instances are processes on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalProviderConfig {
    /// Host vCPUs may be promised this many times over to CPU instance types.
    pub cpu_overcommit: f64,
    /// Host memory may be promised this many times over.
    pub memory_overcommit: f64,
    /// GPUs: `None` detects with `nvidia-smi`; `Some(n)` declares n GPUs (0 disables).
    pub gpus: Option<u32>,
    /// Pinned number of instances a type may run at once; overrides the hardware fit.
    pub capacity: BTreeMap<String, u32>,
    /// Names of spillway's own environment variables a model process also gets (`HOME`,
    /// `HF_HOME`, a proxy, ...). A model process starts with a clean environment otherwise: the
    /// SageMaker contract, the model's `Environment`, `PATH` and the locale.
    pub pass_env: Vec<String>,
}

impl Default for LocalProviderConfig {
    fn default() -> Self {
        Self {
            cpu_overcommit: 8.0,
            memory_overcommit: 4.0,
            gpus: None,
            capacity: BTreeMap::new(),
            pass_env: vec![],
        }
    }
}

/// `[provider.slurm]`: instances are Slurm jobs (see `docs/slurm.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmProviderConfig {
    /// `SLURM_CONF` for every Slurm command (unset: spillway's own environment decides).
    pub slurm_conf: Option<PathBuf>,
    /// Folder holding `salloc`, `srun`, `squeue`, `sinfo`, `scontrol`, `scancel` (unset: `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// Every job is named `<job_name_prefix><instance id>`.
    pub job_name_prefix: String,
    /// `salloc --immediate` seconds: how long Slurm may look for resources before the launch
    /// answers insufficient capacity.
    pub immediate_seconds: u32,
    /// Upper bound for any one Slurm command (and for a model step to start).
    pub command_timeout_seconds: u64,
    /// How often job states are polled while instances run.
    pub poll_interval_ms: u64,
    /// Instance ports. Unset: Slurm reserves one per instance (`srun --resv-ports`, needs
    /// `MpiParams=ports=...` in slurm.conf). `"30000-30999"`: a port of that range derived from
    /// the job id, never one of spillway's other instances on the node.
    pub port_range: Option<String>,
    /// Folder for instance files (model directories); the nodes must see it at the same path.
    /// Unset: `<data_dir>/slurm`.
    pub work_dir: Option<PathBuf>,
    /// Extra `salloc` arguments for every instance (`--account=...`, `--qos=...`).
    pub salloc_args: Vec<String>,
    /// How Slurm expresses each instance type; a type not listed is never available.
    pub instance_types: BTreeMap<String, SlurmInstanceType>,
    /// Names of spillway's own environment variables a job's model also gets (as
    /// `[provider.local] pass_env`; Slurm's own `SLURM_*` variables of the job are set by Slurm).
    pub pass_env: Vec<String>,
}

impl Default for SlurmProviderConfig {
    fn default() -> Self {
        Self {
            slurm_conf: None,
            bin_dir: None,
            job_name_prefix: "spillway-".into(),
            immediate_seconds: 1,
            command_timeout_seconds: 30,
            poll_interval_ms: 500,
            port_range: None,
            work_dir: None,
            salloc_args: vec![],
            instance_types: BTreeMap::new(),
            pass_env: vec![],
        }
    }
}

impl SlurmProviderConfig {
    /// The port range, when one is configured: `(first, last)`.
    pub fn ports(&self) -> Result<Option<(u16, u16)>, ConfigError> {
        let Some(r) = &self.port_range else { return Ok(None) };
        let bad = || ConfigError::Invalid(format!("provider.slurm.port_range = {r:?}: expected \"first-last\""));
        let (a, b) = r.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok(Some((a, b)))
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.ports()?;
        for (t, m) in &self.instance_types {
            if crate::core::catalog::lookup(t).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "provider.slurm.instance_types: {t:?} is not a SageMaker instance type"
                )));
            }
            if m.partition.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "provider.slurm.instance_types.{t:?}.partition must not be empty"
                )));
            }
        }
        if self.job_name_prefix.is_empty() || self.job_name_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid(
                "provider.slurm.job_name_prefix must be non-empty without spaces".into(),
            ));
        }
        if self.command_timeout_seconds == 0 || self.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "provider.slurm.command_timeout_seconds and poll_interval_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// `[provider.slurm.instance_types."<type>"]`: the Slurm request for one instance type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmInstanceType {
    /// Partition (`-p`).
    pub partition: String,
    /// Generic resources (`--gres`), e.g. `gpu:h100:8`.
    pub gres: Option<String>,
    /// Node features (`--constraint`).
    pub constraint: Option<String>,
    /// CPUs (`--cpus-per-task`).
    pub cpus: Option<u32>,
    /// Memory (`--mem`), e.g. `64G`.
    pub mem: Option<String>,
}

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses config text and checks its values.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.notifications.check()?;
        if self.storage.max_object_bytes == 0 {
            return Err(ConfigError::Invalid("storage.max_object_bytes must be positive".into()));
        }
        if let Some(url) = &self.storage.s3_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "storage.s3_endpoint = {url:?}: expected an http:// or https:// URL"
            )));
        }
        if self
            .storage
            .s3_endpoint
            .as_deref()
            .is_some_and(|u| u.starts_with("http://"))
            && !self.storage.allow_http
        {
            return Err(ConfigError::Invalid(
                "storage.s3_endpoint is a plain http:// URL: set storage.allow_http = true to allow it".into(),
            ));
        }
        if !matches!(self.provider.kind.as_str(), "local" | "slurm") {
            return Err(ConfigError::Invalid(format!(
                "provider.kind = {:?}: \"local\" and \"slurm\" are available",
                self.provider.kind
            )));
        }
        self.provider.slurm.check()?;
        for t in self.provider.local.capacity.keys() {
            if crate::core::catalog::lookup(t).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "provider.local.capacity: {t:?} is not a SageMaker instance type"
                )));
            }
        }
        if self.provider.local.cpu_overcommit <= 0.0 || self.provider.local.memory_overcommit <= 0.0 {
            return Err(ConfigError::Invalid(
                "provider.local.cpu_overcommit and memory_overcommit must be positive".into(),
            ));
        }
        if self.provisioning.ice_backoff_initial_ms == 0
            || self.provisioning.ice_backoff_max_ms < self.provisioning.ice_backoff_initial_ms
        {
            return Err(ConfigError::Invalid(
                "provisioning.ice_backoff_initial_ms must be positive and at most ice_backoff_max_ms".into(),
            ));
        }
        if !(self.autoscaling.evaluation_interval_seconds > 0.0 && self.autoscaling.metric_window_seconds >= 1.0) {
            return Err(ConfigError::Invalid(
                "autoscaling.evaluation_interval_seconds must be positive and metric_window_seconds at least 1".into(),
            ));
        }
        if !(1..=3600).contains(&self.autoscaling.target_tracking_period_seconds) {
            return Err(ConfigError::Invalid(format!(
                "autoscaling.target_tracking_period_seconds = {}: expected 1 to 3600 (AWS: 60)",
                self.autoscaling.target_tracking_period_seconds
            )));
        }
        if !(60..=15 * 86400).contains(&self.metrics.retention_seconds) {
            return Err(ConfigError::Invalid(format!(
                "metrics.retention_seconds = {}: expected 60 to 1296000 (15 days)",
                self.metrics.retention_seconds
            )));
        }
        if !(1..=3600).contains(&self.cost.sample_seconds) {
            return Err(ConfigError::Invalid(format!(
                "cost.sample_seconds = {}: expected 1 to 3600",
                self.cost.sample_seconds
            )));
        }
        if !(1..=(16u64 << 30)).contains(&self.async_inference.max_payload_bytes) {
            return Err(ConfigError::Invalid(format!(
                "async_inference.max_payload_bytes = {}: expected 1 to 17179869184 (16 GiB)",
                self.async_inference.max_payload_bytes
            )));
        }
        if !(60..=400 * 86_400).contains(&self.async_inference.retention_seconds) {
            return Err(ConfigError::Invalid(format!(
                "async_inference.retention_seconds = {}: expected 60 to 34560000 (400 days)",
                self.async_inference.retention_seconds
            )));
        }
        if !(1..=400).contains(&self.cost.retention_days) {
            return Err(ConfigError::Invalid(format!(
                "cost.retention_days = {}: expected 1 to 400",
                self.cost.retention_days
            )));
        }
        if self.metrics.usage_interval_seconds > 300 {
            return Err(ConfigError::Invalid(format!(
                "metrics.usage_interval_seconds = {}: expected 1 to 300 seconds, or 0 to disable utilization sampling",
                self.metrics.usage_interval_seconds
            )));
        }
        if self.router.model_timeout_seconds.is_nan() || self.router.model_timeout_seconds <= 0.0 {
            return Err(ConfigError::Invalid(
                "router.model_timeout_seconds must be positive".into(),
            ));
        }
        let client = self.router.client_timeout_seconds;
        if !(0.1..=3600.0).contains(&client) {
            return Err(ConfigError::Invalid(format!(
                "router.client_timeout_seconds = {client}: expected 0.1 to 3600 seconds"
            )));
        }
        if self.router.io_threads > 1024 {
            return Err(ConfigError::Invalid(format!(
                "router.io_threads = {}: expected 0 (one per CPU) to 1024",
                self.router.io_threads
            )));
        }
        if self.rebalance.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "rebalance.max_in_flight must be at least 1".into(),
            ));
        }
        if !(1..=36_500).contains(&self.audit.retention_days) {
            return Err(ConfigError::Invalid(format!(
                "audit.retention_days = {}: expected 1 to 36500 days",
                self.audit.retention_days
            )));
        }
        if !(64 << 10..=1 << 40).contains(&self.logs.max_bytes_per_instance) {
            return Err(ConfigError::Invalid(format!(
                "logs.max_bytes_per_instance = {}: expected 65536 (64 KiB) to 1099511627776 (1 TiB)",
                self.logs.max_bytes_per_instance
            )));
        }
        if !(1..=365 * 86_400).contains(&self.logs.retention_seconds) {
            return Err(ConfigError::Invalid(format!(
                "logs.retention_seconds = {}: expected 1 to 31536000 (365 days)",
                self.logs.retention_seconds
            )));
        }
        if self.account_id.len() != 12 || !self.account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::Invalid(format!(
                "account_id = {:?}: must be 12 digits",
                self.account_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_checked_field_by_field() {
        let c = Config::parse("").unwrap();
        assert!(c.notifications.topics.is_empty());
        assert_eq!(c.notifications.max_attempts, 10);
        let ok = "[notifications]\nmax_attempts = 3\n[notifications.topics]\n\"arn:aws:sns:us-east-1:123456789012:t\" = \"http://127.0.0.1:9/hook\"\n";
        let c = Config::parse(ok).unwrap();
        assert_eq!(
            c.notifications.topics["arn:aws:sns:us-east-1:123456789012:t"],
            "http://127.0.0.1:9/hook"
        );
        for (text, names) in [
            (
                "[notifications.topics]\n\"arn:aws:sqs:us-east-1:123456789012:t\" = \"http://h/\"\n",
                "notifications.topics",
            ),
            (
                "[notifications.topics]\n\"arn:aws:sns:us-east-1:123456789012:t\" = \"https://h/\"\n",
                "https is not supported",
            ),
            (
                "[notifications.topics]\n\"arn:aws:sns:us-east-1:123456789012:t\" = \"ftp://h/\"\n",
                "expected an http:// URL",
            ),
            (
                "[notifications.topics]\n\"arn:aws:sns:us-east-1:123456789012:t\" = \"not a url\"\n",
                "is not a URL",
            ),
            ("[notifications]\nmax_attempts = 0\n", "notifications.max_attempts"),
            (
                "[notifications]\nbackoff_initial_seconds = 0\n",
                "notifications.backoff_initial_seconds",
            ),
            (
                "[notifications]\nbackoff_max_seconds = 0.5\n",
                "notifications.backoff_max_seconds",
            ),
            (
                "[notifications]\ntimeout_seconds = 0\n",
                "notifications.timeout_seconds",
            ),
            (
                "[notifications]\nsigning_secret = \"short\"\n",
                "notifications.signing_secret",
            ),
            ("[notifications]\nretention_days = 0\n", "notifications.retention_days"),
        ] {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(names), "{text}: {e}");
        }
        assert!(Config::parse("[notifications]\nbogus = 1\n").is_err());
    }

    #[test]
    fn empty_config_is_safe() {
        let c = Config::parse("").unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.provider.kind, "local");
    }

    #[test]
    fn log_bounds_and_retention_are_checked() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            (c.logs.max_bytes_per_instance, c.logs.retention_seconds),
            (16 << 20, 259_200)
        );
        let c = Config::parse("[logs]\nmax_bytes_per_instance = 65536\nretention_seconds = 2\n").unwrap();
        assert_eq!((c.logs.max_bytes_per_instance, c.logs.retention_seconds), (65536, 2));
        for bad in [
            "[logs]\nmax_bytes_per_instance = 1000\n",
            "[logs]\nretention_seconds = 0\n",
            "[logs]\nretention_seconds = 40000000\n",
            "[logs]\nkeep = 1\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_and_unknown_keys() {
        let c = Config::parse("[provider.local.capacity]\n\"ml.g6e.2xlarge\" = 0\n").unwrap();
        assert_eq!(c.provider.local.capacity["ml.g6e.2xlarge"], 0);
        assert!(Config::parse("[provider.local.capacity]\n\"ml.nope\" = 1\n").is_err());
        let e = Config::parse("listn = \"x\"").unwrap_err().to_string();
        assert!(e.contains("listn"), "{e}");
    }

    #[test]
    fn metrics_retention() {
        assert_eq!(Config::parse("").unwrap().metrics.retention_seconds, 10_800);
        let c = Config::parse("[metrics]\nretention_seconds = 7200\n").unwrap();
        assert_eq!(c.metrics.retention_seconds, 7200);
        assert!(Config::parse("[metrics]\nretention_seconds = 10\n").is_err());
        assert!(Config::parse("[metrics]\nretention = 10\n").is_err());
    }

    #[test]
    fn audit_retention() {
        let c = Config::parse("").unwrap();
        assert!(c.audit.enabled);
        assert_eq!(c.audit.retention(), std::time::Duration::from_secs(90 * 86_400));
        let c = Config::parse("[audit]\nretention_days = 7\nenabled = false\n").unwrap();
        assert_eq!((c.audit.retention_days, c.audit.enabled), (7, false));
        let e = Config::parse("[audit]\nretention_days = 0\n").unwrap_err().to_string();
        assert!(e.contains("audit.retention_days"), "{e}");
        assert!(Config::parse("[audit]\nretention = 7\n").is_err());
    }

    #[test]
    fn metrics_usage_interval() {
        assert_eq!(Config::parse("").unwrap().metrics.usage_interval_seconds, 5);
        for ok in [0, 1, 300] {
            let c = Config::parse(&format!("[metrics]\nusage_interval_seconds = {ok}\n")).unwrap();
            assert_eq!(c.metrics.usage_interval_seconds, ok);
        }
        let e = Config::parse("[metrics]\nusage_interval_seconds = 301\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("usage_interval_seconds = 301") && e.contains("0 to disable"),
            "{e}"
        );
        assert!(Config::parse("[metrics]\nusage_interval_seconds = -1\n").is_err());
    }

    #[test]
    fn client_timeout() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.router.client_timeout(), std::time::Duration::from_secs(30));
        let c = Config::parse("[router]\nclient_timeout_seconds = 2.5\n").unwrap();
        assert_eq!(c.router.client_timeout(), std::time::Duration::from_millis(2500));
        for bad in ["0", "-1", "nan", "4000"] {
            let e = Config::parse(&format!("[router]\nclient_timeout_seconds = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("client_timeout_seconds"), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_that_cannot_be_rebound_or_are_named_pass() {
        let p = HostPolicy::new(&["Proxy.example".into()]);
        for ok in [
            "127.0.0.1:7474",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:7474",
            "localhost",
            "LOCALHOST:7474",
            "proxy.example",
            "proxy.example:443",
        ] {
            assert!(p.allows_host(Some(ok.as_bytes())), "{ok}");
        }
        assert!(p.allows_host(None), "no Host is no browser");
        for ok in ["localhost.", "proxy.example.:80", "app.localhost:3000", "[::1]"] {
            assert!(p.allows_host(Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "[::1]junk",
            "[::1]:",
            "127.0.0.1:80x",
            "a b",
            "evil.example.",
            "x.localhost.evil.example",
        ] {
            assert!(!p.allows_host(Some(bad.as_bytes())), "{bad}");
        }
        let ported = HostPolicy::new(&["proxy.internal:443".into()]);
        assert!(
            ported.allows_host(Some(b"proxy.internal:443")),
            "a configured port is ignored, not fatal"
        );
        let any = HostPolicy::new(&["*".into()]);
        assert!(any.allows_host(Some(b"whatever.example")));
        for bad in [
            "evil.example",
            "evil.example:7474",
            "localhost.evil.example",
            "",
            "evil:notaport",
        ] {
            assert!(!p.allows_host(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!p.allows_host(Some(&[0xff, 0xfe])));
    }

    #[test]
    fn only_the_servers_own_pages_are_same_origin() {
        let p = HostPolicy::new(&[]);
        let h = Some(&b"127.0.0.1:7474"[..]);
        assert!(p.allows_origin(None, h));
        assert!(p.allows_origin(Some(b"http://127.0.0.1:7474"), h));
        assert!(!p.allows_origin(Some(b"http://127.0.0.1:3000"), h));
        assert!(!p.allows_origin(Some(b"https://evil.example"), h));
        assert!(!p.allows_origin(Some(b"null"), h));
        assert!(!p.allows_origin(Some(b"http://127.0.0.1:7474"), None));
    }

    proptest::proptest! {
        /// A `Host` the policy reads a name from is one `http`'s URI authority parser reads the
        /// same host from (differential: hyper parses authorities with it), and one it refuses
        /// is never taken for an allowed name.
        #[test]
        fn host_names_are_read_as_the_http_crate_reads_them(host in "[a-zA-Z0-9.:\\[\\]_@% -]{0,24}") {
            if let Some(name) = strict_host_name(&host) {
                let authority: axum::http::uri::Authority = host.trim().parse().map_err(|e| {
                    proptest::test_runner::TestCaseError::fail(format!("{host:?}: http refuses it ({e}) but we read {name:?}"))
                })?;
                let theirs = authority.host().trim_start_matches('[').trim_end_matches(']');
                let theirs = theirs.strip_suffix('.').unwrap_or(theirs);
                proptest::prop_assert_eq!(theirs, name);
            } else {
                let p = HostPolicy::new(&["proxy.example".into()]);
                proptest::prop_assert!(!p.allows_host(Some(host.as_bytes())), "{:?} refused by the parser but allowed", host);
            }
        }
    }
}
