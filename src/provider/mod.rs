//! Capacity providers: where instances run.
//!
//! One trait, [`CapacityProvider`], covers "launch an instance of type T running model M /
//! terminate it / observe it / recover after a restart". Launch distinguishes
//! *insufficient capacity* ([`LaunchError::InsufficientCapacity`]), which makes the planner fall
//! back to the next pool, from every other failure. The local provider runs processes on this
//! host; a Slurm or Kubernetes provider maps the same calls onto jobs or pods (an unschedulable
//! job or pod is insufficient capacity), and a simulated provider can answer from a table.

pub mod local;
pub mod shim;
pub mod slurm;

use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::core::catalog::InstanceTypeSpec;
use crate::core::model::ContainerDefinition;
use crate::telemetry::usage::UsageTarget;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a provider needs to start one instance.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// The id spillway assigned.
    pub instance_id: String,
    /// Endpoint the instance serves.
    pub endpoint_name: String,
    /// Variant the instance serves.
    pub variant_name: String,
    /// The instance type from the catalog.
    pub instance_type: &'static InstanceTypeSpec,
    /// The model it runs.
    pub model_name: String,
    /// The model's container.
    pub container: ContainerDefinition,
    /// Bounds on preparing its model data.
    pub model_data: ModelDataLimits,
}

/// Everything a provider needs to start one copy of an inference component on an instance it
/// launched earlier (docs/inference-components.md, "Copies on providers").
#[derive(Debug, Clone)]
pub struct CopyLaunchRequest {
    /// The copy's id (`c-...`); carried as `SPILLWAY_INSTANCE_ID` so recovery knows the process.
    pub copy_id: String,
    /// Endpoint.
    pub endpoint_name: String,
    /// Variant.
    pub variant_name: String,
    /// The component.
    pub component: String,
    /// The hosting instance.
    pub host_instance_id: String,
    /// The hosting instance's stored handle (its devices, its allocation).
    pub host_handle: Value,
    /// The hosting instance's type.
    pub instance_type: &'static InstanceTypeSpec,
    /// Positions (0-based) among the host's accelerator devices the copy gets: the provider
    /// maps them to device ids and sets `CUDA_VISIBLE_DEVICES`.
    pub accelerators: Vec<u32>,
    /// Cores the copy gets.
    pub cpus: f64,
    /// Memory the copy gets, MiB.
    pub memory_mb: u64,
    /// The model it runs (`ModelName`, or the component's name for an inline container).
    pub model_name: String,
    /// Its container.
    pub container: ContainerDefinition,
    /// Bounds on preparing its model data.
    pub model_data: ModelDataLimits,
}

/// The devices a copy gets: the host's devices (`host_devices`, in the order the host has them)
/// at the copy's positions (`accelerators`), in the order of the positions. Fails, naming the
/// copy and the numbers, when a position is outside the host's devices or given twice.
pub fn copy_devices(copy_id: &str, host_devices: &[u32], accelerators: &[u32]) -> Result<Vec<u32>, LaunchError> {
    let mut seen = std::collections::BTreeSet::new();
    accelerators
        .iter()
        .map(|&p| {
            if !seen.insert(p) {
                return Err(LaunchError::Failed(format!(
                    "copy {copy_id}: accelerator position {p} is given twice"
                )));
            }
            host_devices.get(p as usize).copied().ok_or_else(|| {
                LaunchError::Failed(format!(
                    "copy {copy_id}: accelerator position {p} is outside its host's {} device{}",
                    host_devices.len(),
                    if host_devices.len() == 1 { "" } else { "s" }
                ))
            })
        })
        .collect()
}

/// The variables every provider gives a copy besides an instance's (whose
/// `SPILLWAY_INSTANCE_ID` is the copy's id and `SPILLWAY_INSTANCE_TYPE` the host's type):
/// `SPILLWAY_HOST_INSTANCE_ID`, `SPILLWAY_INFERENCE_COMPONENT`, `SPILLWAY_COPY_CPUS` and
/// `SPILLWAY_COPY_MEMORY_MB` (its share).
pub fn copy_environment(req: &CopyLaunchRequest) -> Vec<(&'static str, String)> {
    vec![
        ("SPILLWAY_HOST_INSTANCE_ID", req.host_instance_id.clone()),
        ("SPILLWAY_INFERENCE_COMPONENT", req.component.clone()),
        ("SPILLWAY_COPY_CPUS", format_cpus(req.cpus)),
        ("SPILLWAY_COPY_MEMORY_MB", req.memory_mb.to_string()),
    ]
}

/// Cores as a short decimal: `2`, `0.5`.
fn format_cpus(c: f64) -> String {
    if c.fract() == 0.0 && c.abs() < 1e15 {
        format!("{}", c as i64)
    } else {
        let s = format!("{c:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Bounds on preparing an instance's model data (`ModelDataUrl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDataLimits {
    /// How long it may take (`ModelDataDownloadTimeoutInSeconds`).
    pub timeout: Duration,
    /// The most bytes an archive may unpack to (`[provisioning] model_data_max_bytes`).
    pub max_bytes: u64,
    /// The most entries an archive may hold (`[provisioning] model_data_max_entries`).
    pub max_entries: u64,
}

impl Default for ModelDataLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(crate::core::model::defaults::MODEL_DATA_TIMEOUT_S.into()),
            max_bytes: crate::config::DEFAULT_MODEL_DATA_MAX_BYTES,
            max_entries: crate::config::DEFAULT_MODEL_DATA_MAX_ENTRIES,
        }
    }
}

/// A started instance.
#[derive(Debug, Clone)]
pub struct Launched {
    /// Provider-specific handle, stored durably and handed back to terminate/observe/recover.
    pub handle: Value,
    /// `host:port` that serves `/ping` and `/invocations`.
    pub address: String,
}

/// Why a launch did not start an instance.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LaunchError {
    /// No capacity for this instance type now. The planner moves to the next pool.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// Anything else (bad command line, unreadable model data, ...). Not a capacity signal.
    #[error("{0}")]
    Failed(String),
}

/// Whether an instance's process (job, pod) is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Running.
    Running,
    /// Gone, with a description (exit status).
    Exited(String),
}

/// An instance the store knows about, handed to [`CapacityProvider::recover`].
#[derive(Debug, Clone)]
pub struct TrackedInstance {
    /// Instance id.
    pub instance_id: String,
    /// Instance type.
    pub instance_type: String,
    /// The stored handle.
    pub handle: Value,
    /// For a copy of an inference component: its hosting instance (whose capacity it uses;
    /// recovery reserves none for it).
    pub host: Option<String>,
}

/// What recovery found after a restart.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Tracked instances still running; the provider has re-reserved their capacity.
    pub alive: Vec<String>,
    /// Descriptions of processes found running that no record tracks; they were stopped.
    pub stopped_untracked: Vec<String>,
}

/// One row of the capacity view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityEntry {
    /// Instance type.
    pub instance_type: String,
    /// Pinned slot count (`None`: decided by hardware fit).
    pub slots: Option<u32>,
    /// Where the pin comes from: `config` or `runtime` (admin API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_by: Option<&'static str>,
    /// Instances of this type running now.
    pub in_use: u32,
    /// What its instances count against: `slots` (its pin), `gpus` (this host's free GPUs),
    /// `cpuAllowance` (the local provider's CPU and memory allowance), `never` (a type this host
    /// cannot run unpinned), `partition` (Slurm decides).
    pub accounted_against: &'static str,
}

/// The local provider's CPU and memory allowance, which only unpinned CPU-only instances use
/// (`docs/runbook.md`, "Capacity accounting").
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Allowance {
    /// Host CPUs × `cpu_overcommit`.
    pub vcpus: f64,
    /// vCPUs promised to the holders.
    pub vcpus_promised: f64,
    /// Host memory × `memory_overcommit`, GiB.
    pub memory_gib: f64,
    /// GiB promised to the holders.
    pub memory_gib_promised: f64,
    /// The host's logical CPUs.
    pub host_cpus: f64,
    /// The host's memory, GiB.
    pub host_memory_gib: f64,
    /// `[provider.local] cpu_overcommit`.
    pub cpu_overcommit: f64,
    /// `[provider.local] memory_overcommit`.
    pub memory_overcommit: f64,
    /// The instances that hold it.
    pub holders: Vec<AllowanceHolder>,
}

/// An instance that holds part of the [`Allowance`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowanceHolder {
    /// Instance id.
    pub instance_id: String,
    /// Its type.
    pub instance_type: String,
    /// vCPUs it holds (its type's).
    pub vcpus: f64,
    /// GiB it holds (its type's).
    pub memory_gib: f64,
}

/// One health check of one instance, handed to [`CapacityProvider::health`].
pub struct HealthCheck<'a> {
    /// Instance id.
    pub instance_id: &'a str,
    /// The stored handle.
    pub handle: &'a Value,
    /// `host:port` the instance serves on.
    pub address: &'a str,
    /// The server's HTTP client to instances.
    pub http: &'a Client<HttpConnector, Body>,
    /// How long the instance has to answer.
    pub timeout: Duration,
}

/// The answer of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The instance answered healthy.
    Passed,
    /// The instance did not answer healthy in time.
    Failed,
    /// spillway could not ask (it is out of file descriptors, sockets or memory itself): no
    /// verdict about the instance, which must not be held against it.
    Unknown(String),
}

/// Whether an error, or any error it was caused by, is the host running out of descriptors,
/// buffers or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, `EAGAIN`): spillway's trouble,
/// never the instance's.
pub fn host_exhausted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && is_exhaustion(io)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether an IO error is the host running out of descriptors, buffers, memory or processes.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|code| {
        [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::ENOMEM,
            Errno::EAGAIN,
        ]
        .iter()
        .any(|n| *n as i32 == code)
    })
}

/// The container contract's health check: `GET http://{address}/ping` answers 2xx within
/// `timeout`. What [`CapacityProvider::health`] does unless a provider knows better.
pub async fn http_ping(http: &Client<HttpConnector, Body>, address: &str, timeout: Duration) -> Health {
    let Ok(req) = hyper::Request::get(format!("http://{address}/ping")).body(Body::empty()) else {
        return Health::Failed;
    };
    let fut = async {
        let resp = match http.request(req).await {
            Ok(resp) => resp,
            Err(e) if host_exhausted(&e) => return Health::Unknown(format!("cannot connect: {e}")),
            Err(_) => return Health::Failed,
        };
        let ok = resp.status().is_success();
        let _ = resp.into_body().collect().await;
        if ok { Health::Passed } else { Health::Failed }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(Health::Failed)
}

/// A place instances run.
pub trait CapacityProvider: Send + Sync {
    /// Short name (`local`).
    fn kind(&self) -> &'static str;

    /// Starts one instance. Must answer [`LaunchError::InsufficientCapacity`] promptly when
    /// the type cannot be had now, never queue behind spillway's back.
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>>;

    /// Starts one copy of an inference component on a running instance of this provider, with
    /// the share it was given. Answers with the copy's handle and address; `terminate`,
    /// `liveness`, `health` and `usage_target` then take the copy's id and handle as they take
    /// an instance's. The default refuses: a provider that cannot place copies.
    fn launch_copy(&self, req: CopyLaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move {
            Err(LaunchError::Failed(format!(
                "the {} provider cannot place copies of inference components (copy {})",
                self.kind(),
                req.copy_id
            )))
        })
    }

    /// Stops an instance: a polite signal, then a forced stop after `grace`. Idempotent.
    fn terminate<'a>(&'a self, instance_id: &'a str, handle: &'a Value, grace: Duration) -> BoxFuture<'a, ()>;

    /// Cheap check whether the instance still runs.
    fn liveness(&self, instance_id: &str, handle: &Value) -> Liveness;

    /// Whether a running instance passes its health check. The default is the HTTP `/ping` of
    /// the container contract ([`http_ping`]), which the local and Slurm providers use; a
    /// provider whose instances are not reachable over HTTP (a simulation) answers itself.
    fn health<'a>(&'a self, check: HealthCheck<'a>) -> BoxFuture<'a, Health> {
        Box::pin(http_ping(check.http, check.address, check.timeout))
    }

    /// After a restart: re-attach to tracked instances that survived and stop anything this
    /// provider started that no record tracks.
    fn recover<'a>(&'a self, tracked: &'a [TrackedInstance]) -> BoxFuture<'a, Recovery>;

    /// The capacity view for the admin API.
    fn capacity(&self) -> Vec<CapacityEntry>;

    /// Pins (`Some`) or unpins (`None`) the number of instances of a type at run time.
    fn set_slots(&self, instance_type: &str, slots: Option<u32>);

    /// The CPU and memory allowance unpinned CPU-only instances share, for the capacity view;
    /// `None` (the default) for a provider without one.
    fn allowance(&self) -> Option<Allowance> {
        None
    }

    /// Where the instance's resource use can be sampled on this host (see `crate::usage`): the
    /// root of the model's process tree and the GPUs it was given. `None` (the default) when the
    /// model does not run as a process tree on this host; such instances have no utilization
    /// metrics.
    fn usage_target(&self, _handle: &Value) -> Option<UsageTarget> {
        None
    }
}

/// What a model process inherits from spillway's own environment: `PATH`, the locale (`LANG`,
/// `LANGUAGE`, `LC_*`) and the variables the operator names in `pass_env`; nothing else (no
/// credentials, tokens or `HOME` that spillway happens to run with). The SageMaker contract and
/// the model's `Environment` are added by the provider.
pub fn inherited_environment(pass_env: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            matches!(&*k, "PATH" | "LANG" | "LANGUAGE") || k.starts_with("LC_") || pass_env.iter().any(|p| *p == k)
        })
        .collect()
}

/// Creates an instance directory and makes `ModelDataUrl` available as a directory: a `file://`
/// directory is used as it is, a `.tar.gz` is unpacked into `<dir>/model`, another regular file
/// copied there. The hosts that run the model must see these paths.
///
/// Bounded: it fails after `limits.timeout` (a source that never delivers: a stuck network
/// mount), an archive may unpack to at most `limits.max_bytes` in `limits.max_entries` entries
/// (a gzip bomb), and a source that is neither a directory nor a regular file (a FIFO, a device)
/// is refused before it is opened.
pub(crate) async fn prepare_model_dir(
    dir: &Path,
    url: Option<&str>,
    provider: &'static str,
    limits: ModelDataLimits,
) -> Result<PathBuf, LaunchError> {
    let (dir, url2) = (dir.to_path_buf(), url.map(str::to_string));
    // Set when this future ends, however it ends (a timeout here, or the controller dropping
    // the launch at the provisioning deadline): the blocking work stops at its next read.
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop = CancelOnDrop(cancel.clone());
    let work = tokio::task::spawn_blocking(move || prepare_blocking(&dir, url2.as_deref(), provider, limits, &cancel));
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(LaunchError::Failed(format!("model preparation panicked: {e}"))),
        Err(_) => Err(LaunchError::Failed(format!(
            "ModelDataUrl {}: the model data was not ready within {} s (ModelDataDownloadTimeoutInSeconds)",
            url.unwrap_or(""),
            limits.timeout.as_secs()
        ))),
    }
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn prepare_blocking(
    dir: &Path,
    url: Option<&str>,
    provider: &'static str,
    limits: ModelDataLimits,
    cancel: &AtomicBool,
) -> Result<PathBuf, LaunchError> {
    let io = |what: &str, e: std::io::Error| LaunchError::Failed(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create instance directory", e))?;
    let Some(url) = url else {
        let m = dir.join("model");
        std::fs::create_dir_all(&m).map_err(|e| io("cannot create model directory", e))?;
        return Ok(m);
    };
    let Some(path) = url.strip_prefix("file://") else {
        return Err(LaunchError::Failed(format!(
            "ModelDataUrl {url:?}: only file:// URLs are supported by the {provider} provider"
        )));
    };
    let src = PathBuf::from(path);
    if std::fs::metadata(&src)
        .map_err(|e| io(&format!("ModelDataUrl {url}"), e))?
        .is_dir()
    {
        return Ok(src);
    }
    // Opened without blocking (a FIFO swapped in after a check cannot hang the open), then
    // judged by what was opened: only a regular file is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&src)
        .map_err(|e| io(&format!("ModelDataUrl {url}"), e))?;
    let meta = file.metadata().map_err(|e| io(&format!("ModelDataUrl {url}"), e))?;
    if !meta.is_file() {
        return Err(LaunchError::Failed(format!(
            "ModelDataUrl {url}: not a directory or a regular file (a FIFO, socket or device is never read)"
        )));
    }
    let m = dir.join("model");
    std::fs::create_dir_all(&m).map_err(|e| io("cannot create model directory", e))?;
    let bounded = Bounded {
        inner: file,
        left: u64::MAX,
        cancel,
    };
    let result = if path.ends_with(".tar.gz") || path.ends_with(".tgz") {
        unpack_bounded(bounded, &m, limits).map_err(|e| LaunchError::Failed(format!("cannot unpack {url}: {e}")))
    } else if meta.len() > limits.max_bytes {
        Err(LaunchError::Failed(format!(
            "ModelDataUrl {url}: {} bytes, more than the limit of {} ([provisioning] model_data_max_bytes)",
            meta.len(),
            limits.max_bytes
        )))
    } else {
        let name = src.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        std::fs::File::create(m.join(name))
            .and_then(|mut out| {
                let mut bounded = Bounded {
                    left: limits.max_bytes,
                    ..bounded
                };
                std::io::copy(&mut bounded, &mut out)
            })
            .map(drop)
            .map_err(|e| io(&format!("cannot copy {url}"), e))
    };
    if result.is_err() {
        // Nothing half-written stays behind (a cut-off unpack can be large).
        let _ = std::fs::remove_dir_all(&m);
    }
    result.map(|()| m)
}

/// A reader that stops when its caller has gone (`cancel`) and after `left` more bytes.
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    cancel: &'a AtomicBool,
}

impl<R: std::io::Read> std::io::Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped: the launch was cut off"));
        }
        if self.left == 0 {
            return Err(std::io::Error::other(
                "more data than the limit ([provisioning] model_data_max_bytes)",
            ));
        }
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// Bytes of archive data allowed besides the entries' contents: headers, padding and extension
/// records (long names, PAX), which the tar reader keeps in memory.
const ARCHIVE_OVERHEAD: u64 = 1 << 20;

/// Unpacks a `.tar.gz` into `into`, entry by entry, refusing it once it holds more than
/// `limits.max_entries` entries or unpacks to more than `limits.max_bytes`. The decompressed
/// stream itself is bounded too: between two entries at most [`ARCHIVE_OVERHEAD`] bytes of
/// headers and extension records (so a long-name or PAX record cannot fill memory), and an
/// entry's contents count with the larger of its header's and its PAX record's size.
/// Directories are made writable while unpacking and get their own mode at the end, so a
/// read-only directory can hold files. Entries that would land outside `into` are refused.
fn unpack_bounded(file: Bounded<'_, std::fs::File>, into: &Path, limits: ModelDataLimits) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let budget = std::rc::Rc::new(std::cell::Cell::new(ARCHIVE_OVERHEAD));
    let stream = Counted {
        inner: flate2::read::GzDecoder::new(file),
        budget: budget.clone(),
    };
    let mut archive = tar::Archive::new(stream);
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut dirs = vec![];
    for entry in archive.entries()? {
        let mut entry = entry?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(std::io::Error::other(format!(
                "more than {} entries ([provisioning] model_data_max_entries)",
                limits.max_entries
            )));
        }
        let size = entry.size().max(entry.header().size()?);
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_bytes {
            return Err(std::io::Error::other(format!(
                "it unpacks to more than {} bytes ([provisioning] model_data_max_bytes)",
                limits.max_bytes
            )));
        }
        // This entry's contents, then the next headers.
        budget.set(size.saturating_add(ARCHIVE_OVERHEAD));
        let dir_mode =
            (entry.header().entry_type() == tar::EntryType::Directory).then(|| entry.header().mode().unwrap_or(0o755));
        let path = into.join(entry.path()?);
        if !entry.unpack_in(into)? {
            return Err(std::io::Error::other(format!(
                "entry {:?} would land outside the model directory",
                entry.path()?
            )));
        }
        if let Some(mode) = dir_mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o700))?;
            dirs.push((path, mode));
        }
    }
    for (path, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The decompressed archive stream, allowed `budget` more bytes (reset per entry).
struct Counted<R> {
    inner: R,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(std::io::Error::other(
                "an archive record is larger than its entry says (or a header record over 1 MiB)",
            ));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.budget.set(left - got as u64);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_devices_map_positions_and_refuse_bad_ones() {
        assert_eq!(copy_devices("c-1", &[4, 5, 6, 7], &[1, 3]), Ok(vec![5, 7]));
        assert_eq!(copy_devices("c-1", &[4, 5], &[]), Ok(vec![]));
        let out = copy_devices("c-1", &[4, 5], &[2]).unwrap_err().to_string();
        assert_eq!(out, "copy c-1: accelerator position 2 is outside its host's 2 devices");
        let twice = copy_devices("c-1", &[4, 5], &[1, 1]).unwrap_err().to_string();
        assert_eq!(twice, "copy c-1: accelerator position 1 is given twice");
        assert_eq!(format_cpus(2.0), "2");
        assert_eq!(format_cpus(0.5), "0.5");
        assert_eq!(format_cpus(1.25), "1.25");
    }

    proptest::proptest! {
        /// Whatever the host's devices and the positions: the copy gets exactly the devices at
        /// its positions, never one twice, or an error when a position is bad.
        #[test]
        fn copy_devices_are_the_hosts_at_the_positions(
            n in 0usize..9,
            positions in proptest::collection::vec(0u32..10, 0..6),
        ) {
            let host: Vec<u32> = (0..n as u32).map(|i| 10 + 3 * i).collect();
            let mut uniq = positions.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let valid = uniq.len() == positions.len() && positions.iter().all(|p| (*p as usize) < n);
            match copy_devices("c", &host, &positions) {
                Ok(d) => {
                    proptest::prop_assert!(valid);
                    proptest::prop_assert_eq!(d.len(), positions.len());
                    for (dev, p) in d.iter().zip(&positions) {
                        proptest::prop_assert_eq!(*dev, host[*p as usize]);
                    }
                }
                Err(_) => proptest::prop_assert!(!valid),
            }
        }
    }

    type Archive = tar::Builder<flate2::write::GzEncoder<std::fs::File>>;

    /// A `.tar.gz` being written at `path`.
    fn archive(path: &Path) -> Archive {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        tar::Builder::new(gz)
    }

    fn finish(b: Archive) {
        b.into_inner().unwrap().finish().unwrap();
    }

    fn tarball(dir: &Path, files: &[(&str, usize)]) -> PathBuf {
        let path = dir.join("m.tar.gz");
        let mut b = archive(&path);
        for (name, size) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, std::io::repeat(0).take(*size as u64))
                .unwrap();
        }
        finish(b);
        path
    }

    fn limits(max_bytes: u64, max_entries: u64) -> ModelDataLimits {
        ModelDataLimits {
            timeout: Duration::from_secs(60),
            max_bytes,
            max_entries,
        }
    }

    use std::io::Read;

    #[tokio::test]
    async fn archives_are_unpacked_within_their_limits() {
        let t = tempfile::tempdir().unwrap();
        let src = tarball(t.path(), &[("a.bin", 1000), ("dir/b.bin", 2000)]);
        let url = format!("file://{}", src.display());
        let m = prepare_model_dir(&t.path().join("i1"), Some(&url), "local", limits(3000, 2))
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(m.join("dir/b.bin")).unwrap().len(), 2000);
        let err = |r: Result<PathBuf, LaunchError>| match r {
            Err(LaunchError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        let big = err(prepare_model_dir(&t.path().join("i2"), Some(&url), "local", limits(2999, 2)).await);
        assert!(big.contains("more than 2999 bytes"), "{big}");
        let many = err(prepare_model_dir(&t.path().join("i3"), Some(&url), "local", limits(1 << 20, 1)).await);
        assert!(many.contains("more than 1 entries"), "{many}");
    }

    #[tokio::test]
    async fn a_gzip_bomb_stops_at_the_limit_without_writing_it_out() {
        let t = tempfile::tempdir().unwrap();
        // 64 MiB of zeros compress to a few dozen KiB.
        let src = tarball(t.path(), &[("zeros", 64 << 20)]);
        assert!(std::fs::metadata(&src).unwrap().len() < 1 << 20);
        let url = format!("file://{}", src.display());
        let r = prepare_model_dir(&t.path().join("i"), Some(&url), "local", limits(1 << 20, 10)).await;
        assert!(
            matches!(&r, Err(LaunchError::Failed(m)) if m.contains("model_data_max_bytes")),
            "{r:?}"
        );
        assert!(!t.path().join("i/model").exists(), "nothing of the bomb stays behind");
    }

    #[tokio::test]
    async fn a_pax_size_larger_than_the_header_counts() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("pax.tar.gz");
        let mut b = archive(&path);
        let size = 8u64 << 20;
        b.append_pax_extensions([("size", size.to_string().as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(0); // the header says nothing; the PAX record says 8 MiB
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, std::io::repeat(0).take(size)).unwrap();
        finish(b);
        let url = format!("file://{}", path.display());
        let r = prepare_model_dir(&t.path().join("i"), Some(&url), "local", limits(1 << 20, 10)).await;
        assert!(
            matches!(&r, Err(LaunchError::Failed(m)) if m.contains("model_data_max_bytes")),
            "{r:?}"
        );
        assert!(!t.path().join("i/model/zeros").exists(), "nothing of it was written");
    }

    #[tokio::test]
    async fn a_long_name_record_cannot_fill_memory() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("long.tar.gz");
        let mut b = archive(&path);
        // A PAX record of 4 MiB, which the tar reader would hold in memory whole.
        let huge = vec![b'a'; 4 << 20];
        b.append_pax_extensions([("comment", huge.as_slice())]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("small").unwrap();
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        finish(b);
        let url = format!("file://{}", path.display());
        let r = prepare_model_dir(&t.path().join("i"), Some(&url), "local", limits(1 << 30, 10)).await;
        assert!(
            matches!(&r, Err(LaunchError::Failed(m)) if m.contains("header record over 1 MiB")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_read_only_directory_can_hold_files() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("ro.tar.gz");
        let mut b = archive(&path);
        let mut d = tar::Header::new_gnu();
        d.set_path("snapshot/").unwrap();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o555);
        d.set_size(0);
        d.set_cksum();
        b.append(&d, std::io::empty()).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_path("snapshot/config.json").unwrap();
        f.set_size(2);
        f.set_mode(0o444);
        f.set_cksum();
        b.append(&f, &b"{}"[..]).unwrap();
        finish(b);
        let url = format!("file://{}", path.display());
        let m = prepare_model_dir(&t.path().join("i"), Some(&url), "local", limits(1 << 20, 10))
            .await
            .unwrap();
        assert_eq!(std::fs::read(m.join("snapshot/config.json")).unwrap(), b"{}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(m.join("snapshot")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o555, "the directory keeps its own mode");
        // The test's temporary directory must be removable.
        std::fs::set_permissions(m.join("snapshot"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn a_fifo_is_refused_without_being_opened() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("weights.tar.gz");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo");
        let url = format!("file://{}", fifo.display());
        let r = prepare_model_dir(&t.path().join("i"), Some(&url), "local", limits(1 << 20, 10)).await;
        assert!(
            matches!(&r, Err(LaunchError::Failed(m)) if m.contains("not a directory or a regular file")),
            "{r:?}"
        );
    }
}
