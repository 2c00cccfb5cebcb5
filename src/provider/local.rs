//! The local provider: each instance is a process (group) on this host.
//!
//! Capacity is real: a GPU type fits only if this host has that many free GPUs (detected with
//! `nvidia-smi`), Inferentia and Trainium types never fit, and CPU types fit within the
//! configured CPU and memory overcommit. A pinned slot count (config file or admin API)
//! overrides the hardware fit, which is how shortages are simulated.
//!
//! Each instance is a shim (`spillway instance-shim`, see [`super::shim`]) that runs the model in
//! its own process group as a child subreaper: the handle's `pid` is the shim's. The shim and the
//! model get `SPILLWAY_DATA_DIR` and `SPILLWAY_INSTANCE_ID` in their environment, which is how
//! [`CapacityProvider::recover`] recognises processes this server started even when the server
//! was killed between spawning one and recording it.
//!
//! With [`LocalProvider::with_logs`] every shim captures its model's stdout and stderr into the
//! instance's log stream (`crate::logs`; the shim's own output goes to `shim.log` in the
//! instance directory); without, the model writes to `stdout.log` and `stderr.log` there.
//!
//! Stopping an instance: `SIGTERM` to the shim (which forwards it to the model's group), a
//! second `SIGTERM` after the grace (the shim SIGKILLs the model's group and every process
//! reparented to it), `SIGKILL` to the shim's group if it is still there, and then, as a second
//! net, every process that still carries the instance's identity in its environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::{
    BoxFuture, CapacityEntry, CapacityProvider, CopyLaunchRequest, LaunchError, LaunchRequest, Launched, Liveness,
    Recovery, TrackedInstance,
};
use crate::config::LocalProviderConfig;
use crate::core::catalog::{self, AcceleratorKind, InstanceTypeSpec};
use crate::telemetry::usage::{UsageTarget, run_nvidia_smi};

/// A GPU of this host.
#[derive(Debug, Clone)]
pub struct Gpu {
    /// Index as CUDA numbers it.
    pub index: u32,
    /// Product name.
    pub name: String,
}

#[derive(Debug, Clone)]
struct Usage {
    instance_type: String,
    vcpus: f64,
    memory_gib: f64,
    gpus: Vec<u32>,
}

#[derive(Default)]
struct State {
    config_pins: BTreeMap<String, u32>,
    runtime_pins: BTreeMap<String, u32>,
    in_use: HashMap<String, Usage>,
    exited: HashMap<String, String>,
}

impl State {
    /// The slots a type is pinned to (a run-time pin wins over the config's).
    fn pin(&self, instance_type: &str) -> Option<u32> {
        self.runtime_pins
            .get(instance_type)
            .or_else(|| self.config_pins.get(instance_type))
            .copied()
    }

    /// Whether instances of `instance_type` consume the CPU and memory allowance: unpinned
    /// CPU-only types (unknown types are treated as CPU-only).
    fn in_allowance(&self, instance_type: &str) -> bool {
        self.pin(instance_type).is_none() && catalog::lookup(instance_type).is_none_or(|s| s.accelerator.is_none())
    }

    /// The instances whose type matches, by id.
    fn holders(&self, of_type: impl Fn(&str) -> bool) -> Vec<(&str, &Usage)> {
        let mut v: Vec<(&str, &Usage)> = self
            .in_use
            .iter()
            .filter(|(_, u)| of_type(&u.instance_type))
            .map(|(id, u)| (id.as_str(), u))
            .collect();
        v.sort_by(|a, b| a.1.instance_type.cmp(&b.1.instance_type).then(a.0.cmp(b.0)));
        v
    }
}

/// `"s"` unless there is one.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A number without a needless `.0`.
fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.2}")
    }
}

/// The refusal of a pinned type whose slots are all taken (or that has none).
pub(crate) fn pin_full(instance_type: &str, slots: u32, holders: &[&str]) -> String {
    match slots {
        0 => format!("{instance_type} has no capacity here: pinned to 0 slots"),
        1 => format!(
            "{instance_type} has no free slot: pinned to 1 slot, used by {}",
            holders.join(", ")
        ),
        n => format!(
            "{instance_type} has no free slot: pinned to {n} slots, all in use ({})",
            holders.join(", ")
        ),
    }
}

/// Who holds the CPU and memory allowance: `"by 2 unpinned CPU instances: ml.m5.xlarge x2 (i-a, i-b)"`.
fn describe_holders(holders: &[(&str, &Usage)]) -> String {
    if holders.is_empty() {
        return "by no instance".into();
    }
    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, u) in holders {
        by_type.entry(u.instance_type.as_str()).or_default().push(id);
    }
    let parts: Vec<String> = by_type
        .iter()
        .map(|(t, ids)| format!("{t} x{} ({})", ids.len(), ids.join(", ")))
        .collect();
    format!(
        "by {} unpinned CPU instance{}: {}",
        holders.len(),
        plural(holders.len()),
        parts.join(", ")
    )
}

/// Host resources the fit is computed against.
#[derive(Debug, Clone)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: f64,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// GPUs.
    pub gpus: Vec<Gpu>,
}

impl Host {
    /// Reads this machine's CPUs, memory and GPUs (`gpus` overrides detection).
    pub fn detect(gpus: Option<u32>) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| crate::telemetry::usage::parse_mem_total(&s))
            .map(|bytes| bytes as f64 / (1u64 << 30) as f64)
            .unwrap_or(1.0);
        let gpus = match gpus {
            Some(n) => (0..n)
                .map(|i| Gpu {
                    index: i,
                    name: "declared".into(),
                })
                .collect(),
            None => detect_nvidia_gpus(),
        };
        Self { cpus, memory_gib, gpus }
    }
}

/// Lists NVIDIA GPUs with `nvidia-smi`; none when it is absent or fails.
pub fn detect_nvidia_gpus() -> Vec<Gpu> {
    match run_nvidia_smi(&["--query-gpu=index,name", "--format=csv,noheader"]) {
        Ok(out) => out
            .lines()
            .filter_map(|l| {
                let (i, n) = l.split_once(',')?;
                Some(Gpu {
                    index: i.trim().parse().ok()?,
                    name: n.trim().to_string(),
                })
            })
            .collect(),
        Err(_) => vec![],
    }
}

/// Runs instances as local processes.
pub struct LocalProvider {
    data_dir: PathBuf,
    host: Host,
    cpu_overcommit: f64,
    memory_overcommit: f64,
    /// Variables of spillway's environment a model process also gets.
    pass_env: Vec<String>,
    /// The spillway binary that runs the shim (`None`: this process's executable).
    spillway: Option<PathBuf>,
    /// How long a shim waits after a stop signal before it kills the model when spillway does
    /// not tell it sooner (spillway went away during a stop).
    stop_grace: Duration,
    /// Where instances' output is captured (`None`: into files of the instance directory).
    logs: Option<crate::logs::Settings>,
    state: Arc<Mutex<State>>,
}

/// What [`LocalProvider::start`] runs: an instance, or a copy of an inference component.
struct Start<'a> {
    /// The instance's (copy's) id: `SPILLWAY_INSTANCE_ID`, its directory and log stream.
    instance_id: &'a str,
    endpoint_name: &'a str,
    variant_name: &'a str,
    /// `SPILLWAY_INSTANCE_TYPE` (a copy's is its host's).
    instance_type: &'a str,
    model_name: &'a str,
    container: &'a crate::core::model::ContainerDefinition,
    model_data: super::ModelDataLimits,
    /// `CUDA_VISIBLE_DEVICES`, in order.
    devices: Vec<u32>,
    /// The GPUs of this host the process has (recorded in the handle for usage sampling).
    gpus: Vec<u32>,
    /// More variables (a copy's `SPILLWAY_*`).
    extra_env: Vec<(&'static str, String)>,
}

/// The file in an instance directory where the shim writes the model's exit status.
const STATUS_FILE: &str = "exit-status";

/// How long spillway waits for a shim to kill its model's processes after the second stop
/// signal (the shim gives up on unkillable ones after 10 s).
const SHIM_SWEEP: Duration = Duration::from_secs(11);

impl LocalProvider {
    /// A provider storing instance files under `data_dir/instances`.
    pub fn new(data_dir: &Path, cfg: &LocalProviderConfig, host: Host) -> Self {
        let state = State {
            config_pins: cfg.capacity.clone(),
            ..State::default()
        };
        Self {
            data_dir: data_dir.to_path_buf(),
            host,
            cpu_overcommit: cfg.cpu_overcommit,
            memory_overcommit: cfg.memory_overcommit,
            pass_env: cfg.pass_env.clone(),
            spillway: None,
            stop_grace: Duration::from_secs(30),
            logs: None,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Captures every instance's stdout and stderr into its log stream (`[logs]`).
    pub fn with_logs(mut self, logs: crate::logs::Settings) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Runs shims with this spillway binary rather than the running executable (tests, whose
    /// executable is a test harness).
    pub fn with_spillway_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.spillway = Some(path.into());
        self
    }

    /// The grace a shim gives its model on its own when a stop signal is not followed by a
    /// second one (`[provisioning] termination_grace_seconds`; 30 s by default).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The host resources in use for fit decisions.
    pub fn host(&self) -> &Host {
        &self.host
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether `spec` fits now and reserves it for `instance_id`.
    ///
    /// Every instance is accounted against exactly one budget (`docs/runbook.md`, "Capacity
    /// accounting"): a pinned type against its pin's slots only; an unpinned NVIDIA GPU type
    /// against this host's free GPUs; an unpinned CPU-only type against the CPU and memory
    /// allowance (host CPUs × `cpu_overcommit`, host memory × `memory_overcommit`), which only
    /// unpinned CPU-only instances consume. Which budget an instance is in follows its type's
    /// pin now, so pinning a type takes its running instances out of the allowance at once.
    fn reserve(&self, instance_id: &str, spec: &InstanceTypeSpec) -> Result<Usage, LaunchError> {
        let mut st = self.lock();
        let used_gpus: Vec<u32> = st.in_use.values().flat_map(|u| u.gpus.iter().copied()).collect();
        let free_gpus: Vec<u32> = self
            .host
            .gpus
            .iter()
            .map(|g| g.index)
            .filter(|i| !used_gpus.contains(i))
            .collect();
        let want_gpus = match &spec.accelerator {
            Some(a) if a.kind == AcceleratorKind::NvidiaGpu => a.count as usize,
            _ => 0,
        };
        let gpus = match st.pin(&spec.name) {
            Some(slots) => {
                let holders: Vec<&str> = st.holders(|t| t == spec.name).into_iter().map(|(id, _)| id).collect();
                if holders.len() as u32 >= slots {
                    return Err(LaunchError::InsufficientCapacity(pin_full(&spec.name, slots, &holders)));
                }
                // A pinned GPU type gets real GPUs when there are enough free, otherwise none
                // (a simulated instance of that type on this host).
                if want_gpus > 0 && free_gpus.len() >= want_gpus {
                    free_gpus[..want_gpus].to_vec()
                } else {
                    vec![]
                }
            }
            None => match &spec.accelerator {
                Some(a) if a.kind == AcceleratorKind::NvidiaGpu => {
                    if free_gpus.len() < want_gpus {
                        return Err(LaunchError::InsufficientCapacity(format!(
                            "{} needs {want_gpus} free GPU{}; this host has {} of {} free \
                             (an unpinned GPU type runs only on this host's GPUs; pin it to simulate it)",
                            spec.name,
                            plural(want_gpus),
                            free_gpus.len(),
                            self.host.gpus.len()
                        )));
                    }
                    free_gpus[..want_gpus].to_vec()
                }
                Some(a) => {
                    return Err(LaunchError::InsufficientCapacity(format!(
                        "{} needs {} {:?} device{}; this host has none (pin the type to simulate it)",
                        spec.name,
                        a.count,
                        a.kind,
                        plural(a.count as usize)
                    )));
                }
                None => {
                    self.fits_allowance(&st, spec)?;
                    vec![]
                }
            },
        };
        let usage = Usage {
            instance_type: spec.name.clone(),
            vcpus: spec.vcpus as f64,
            memory_gib: spec.memory_gib,
            gpus,
        };
        st.in_use.insert(instance_id.to_string(), usage.clone());
        Ok(usage)
    }

    /// Whether one more instance of the unpinned CPU-only type `spec` fits the CPU and memory
    /// allowance; the refusal names the instances that hold it.
    fn fits_allowance(&self, st: &State, spec: &InstanceTypeSpec) -> Result<(), LaunchError> {
        let holders = st.holders(|t| st.in_allowance(t));
        let cpu_used: f64 = holders.iter().map(|(_, u)| u.vcpus).sum();
        let mem_used: f64 = holders.iter().map(|(_, u)| u.memory_gib).sum();
        let cpu_cap = self.host.cpus * self.cpu_overcommit;
        let mem_cap = self.host.memory_gib * self.memory_overcommit;
        let refusal = if cpu_used + spec.vcpus as f64 > cpu_cap {
            format!(
                "{} needs {} vCPUs; {} of {} vCPUs of the CPU allowance ({} host CPUs x cpu_overcommit {}) are promised",
                spec.name,
                spec.vcpus,
                fmt_num(cpu_used),
                fmt_num(cpu_cap),
                fmt_num(self.host.cpus),
                fmt_num(self.cpu_overcommit)
            )
        } else if mem_used + spec.memory_gib > mem_cap {
            format!(
                "{} needs {} GiB of memory; {:.1} of {:.1} GiB of the memory allowance ({:.1} GiB host memory x memory_overcommit {}) are promised",
                spec.name,
                fmt_num(spec.memory_gib),
                mem_used,
                mem_cap,
                self.host.memory_gib,
                fmt_num(self.memory_overcommit)
            )
        } else {
            return Ok(());
        };
        Err(LaunchError::InsufficientCapacity(format!(
            "{refusal} {}; pinned types and GPU types do not count against it",
            describe_holders(&holders)
        )))
    }

    fn release(&self, instance_id: &str) {
        self.lock().in_use.remove(instance_id);
    }

    fn instance_dir(&self, instance_id: &str) -> PathBuf {
        self.data_dir.join("instances").join(instance_id)
    }

    async fn start(&self, req: &Start<'_>) -> Result<Launched, LaunchError> {
        let dir = self.instance_dir(req.instance_id);
        let model_dir =
            super::prepare_model_dir(&dir, req.container.model_data_url.as_deref(), "local", req.model_data).await?;
        let image =
            req.container.image.as_deref().ok_or_else(|| {
                LaunchError::Failed(format!("model {} has no PrimaryContainer.Image", req.model_name))
            })?;
        let argv = command_line(image, false)?;
        let port = free_port().map_err(|e| host_error(e, "no free port"))?;
        let log = |name: &str| {
            std::fs::File::create(dir.join(name))
                .map_err(|e| host_error(e, &format!("cannot create {name} in {}", dir.display())))
        };
        let mut env = super::inherited_environment(&self.pass_env);
        env.extend(
            req.container
                .environment
                .iter()
                .flatten()
                .map(|(k, v)| (k.into(), v.into())),
        );
        let gpus = req.devices.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        let port_s = port.to_string();
        let keys = req.container.environment_keys();
        for (k, v) in [
            (crate::core::model::MODEL_ENV_KEYS, keys.as_str()),
            ("SAGEMAKER_BIND_TO_PORT", &port_s),
            ("SPILLWAY_INSTANCE_TYPE", req.instance_type),
            ("SPILLWAY_INSTANCE_ID", req.instance_id),
            ("SPILLWAY_MODEL_NAME", req.model_name),
            ("SPILLWAY_ENDPOINT_NAME", req.endpoint_name),
            ("SPILLWAY_VARIANT_NAME", req.variant_name),
            ("CUDA_VISIBLE_DEVICES", &gpus),
        ] {
            env.push((k.into(), v.into()));
        }
        env.extend(req.extra_env.iter().map(|(k, v)| ((*k).into(), v.into())));
        env.push(("SM_MODEL_DIR".into(), model_dir.into()));
        env.push(("SPILLWAY_DATA_DIR".into(), self.data_dir.clone().into()));
        // A command that cannot start fails the launch now, as when spillway started it itself,
        // not later as an instance that exited.
        let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        find_program(&argv[0], path.as_deref(), &dir)
            .map_err(|why| LaunchError::Failed(format!("cannot start {:?}: {why}", argv[0])))?;
        let status_file = dir.join(STATUS_FILE);
        let _ = std::fs::remove_file(&status_file);
        let log_dir = self.logs.as_ref().and_then(|l| {
            l.create_stream(req.endpoint_name, req.variant_name, req.instance_id)
                .map_err(|e| {
                    tracing::warn!(instance = %req.instance_id, error = %e, "cannot create the instance's log stream; its output goes to files of the instance directory");
                })
                .ok()
        });
        let shim = super::shim::ShimOptions {
            nofile: super::shim::model_nofile(),
            status_file: Some(status_file),
            grace_seconds: self.stop_grace.as_secs(),
            log_dir: log_dir.clone(),
            log_max_bytes: self
                .logs
                .as_ref()
                .map_or(crate::config::DEFAULT_LOG_MAX_BYTES, |l| l.max_bytes_per_instance),
            exec: false,
            argv: argv.iter().map(Into::into).collect(),
        };
        let (stdout, stderr) = if log_dir.is_some() {
            let f = log("shim.log")?;
            let g = f.try_clone().map_err(|e| host_error(e, "cannot open shim.log twice"))?;
            (f, g)
        } else {
            (log("stdout.log")?, log("stderr.log")?)
        };
        let spillway = match &self.spillway {
            Some(p) => p.clone(),
            None => spillway_exe()?,
        };
        let mut cmd = tokio::process::Command::new(&spillway);
        cmd.arg(super::shim::SUBCOMMAND)
            .args(shim.to_args())
            .env_clear()
            .envs(env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| host_error(e, &format!("cannot start {:?}", spillway.display())))?;
        let pid = child.id().unwrap_or(0);
        let state = self.state.clone();
        let id = req.instance_id.to_string();
        tokio::spawn(async move {
            // The shim exits as its model did (the same code, or killed by the same signal).
            let status = match child.wait().await {
                Ok(s) => format!("process exited with {s}"),
                Err(e) => format!("process wait failed: {e}"),
            };
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .exited
                .insert(id, status);
        });
        Ok(Launched {
            handle: json!({ "pid": pid, "port": port, "gpus": req.gpus, "dir": dir, "shim": true }),
            address: format!("127.0.0.1:{port}"),
        })
    }
}

/// The GPU indices recorded in a handle (the `CUDA_VISIBLE_DEVICES` the process was given).
fn gpus_of(handle: &Value) -> Vec<u32> {
    handle
        .get("gpus")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_u64().and_then(|g| u32::try_from(g).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the handle's pid is a shim's (instances started before shims were not).
fn is_shim(handle: &Value) -> bool {
    handle.get("shim").and_then(Value::as_bool).unwrap_or(false)
}

fn pid_of(handle: &Value) -> Option<i32> {
    handle
        .get("pid")
        .and_then(Value::as_i64)
        .map(|p| p as i32)
        .filter(|p| *p > 0)
}

/// A launch step that failed: when the host ran out of descriptors, memory or processes it is
/// the host's doing, not the model's, and answered as insufficient capacity (the type rests and
/// provisioning falls back; it never counts towards a crash loop, and it clears itself once the
/// host recovers). Anything else fails the launch.
fn host_error(e: std::io::Error, what: &str) -> LaunchError {
    if super::is_exhaustion(&e) {
        LaunchError::InsufficientCapacity(format!("this host cannot start an instance now ({what}: {e})"))
    } else {
        LaunchError::Failed(format!("{what}: {e}"))
    }
}

/// Whether a pid is a live (non-zombie) process. Only proof of absence counts as death: when
/// `/proc` cannot be read for another reason (spillway is out of file descriptors, say), the
/// process is asked with signal 0, which needs no descriptor, and an error there that is not
/// "no such process" still leaves it alive.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => !matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        ),
    }
}

/// Reads `KEY=value` pairs from a process's environment.
fn process_env(pid: i32) -> Option<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let s = String::from_utf8_lossy(kv);
                let (k, v) = s.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// The running spillway binary, as a path that stays valid when its file is replaced or removed
/// (an upgrade in place, a rebuild): `/proc/self/exe`, which names the running binary itself.
/// `current_exe()` would name the file, and fail (`… (deleted)`) once it was replaced.
pub(crate) fn spillway_exe() -> Result<PathBuf, LaunchError> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().map_err(|e| LaunchError::Failed(format!("cannot locate the spillway binary: {e}")))
}

/// Splits an image string into argv. `builtin:<name>` runs a model server built into spillway:
/// the running binary on this host (`/proc/self/exe`, valid through an in-place upgrade), and
/// the binary's file for the Slurm provider, whose nodes start it from the shared filesystem.
pub fn command_line(image: &str, remote: bool) -> Result<Vec<String>, LaunchError> {
    if let Some(name) = image.strip_prefix("builtin:") {
        let exe = if remote {
            std::env::current_exe()
                .map_err(|e| LaunchError::Failed(format!("cannot locate the spillway binary: {e}")))?
        } else {
            spillway_exe()?
        };
        return Ok(vec![
            exe.to_string_lossy().into_owned(),
            "builtin-model".into(),
            name.to_string(),
        ]);
    }
    match shlex::split(image) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        _ => Err(LaunchError::Failed(format!(
            "PrimaryContainer.Image {image:?} is not a command line (empty or unbalanced quotes)"
        ))),
    }
}

/// A port for a model to listen on. Not one of the kernel's ephemeral ports (`bind(0)` would
/// hand one out, and between our check and the model's `bind` an outgoing connection of this
/// host, which draws its local port from the same range, may take it: the model then dies with
/// `Address already in use`). Instead the ports just below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`) are handed out in turn, each checked free with a
/// `bind`, from a random starting point per process; the rotation keeps a port a stopped
/// instance just released from being reused at once.
/// Only when every one of them is taken does it fall back to an ephemeral port.
fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each process starts its turn at a random place, so servers (and test processes) sharing
    // the host do not walk the same ports in step.
    static NEXT: std::sync::LazyLock<AtomicU32> = std::sync::LazyLock::new(|| AtomicU32::new(fastrand::u32(..)));
    let (low, high) =
        model_port_range(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default());
    let span = u32::from(high - low);
    for _ in 0..span.min(512) {
        let port = low + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The model ports `[low, high)`: the 8,192 ports below the start of the ephemeral range
/// (`ip_local_port_range`'s first number; 32768 when it cannot be read), never below 10000.
fn model_port_range(ip_local_port_range: &str) -> (u16, u16) {
    let start = ip_local_port_range
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u16>().ok())
        .filter(|n| *n > 10_000 + 1024)
        .unwrap_or(32768);
    (start.saturating_sub(8192).max(10_000), start)
}

/// Where `program` is found when started from `dir` with `path` as `PATH`, by the rules of
/// `execvp`: a name with a `/` is a path (relative to `dir`), a bare name is looked for in each
/// directory of `PATH` (glibc's default when there is none). The error says why it cannot run.
fn find_program(program: &str, path: Option<&std::ffi::OsStr>, dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let check = |p: &Path| match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err("not an executable file".to_string()),
        Err(e) => Err(e.to_string()),
    };
    if program.contains('/') {
        let p = dir.join(program);
        return check(&p).map(|()| p);
    }
    let path = path.map_or_else(|| "/bin:/usr/bin".into(), std::ffi::OsStr::to_os_string);
    std::env::split_paths(&path)
        .map(|d| dir.join(d).join(program))
        .find(|p| check(p).is_ok())
        .ok_or_else(|| format!("not found in PATH ({})", path.to_string_lossy()))
}

/// Stops the process group led by `pid`: SIGTERM, and after `grace` SIGKILL. When `pid` is a
/// shim, a second SIGTERM comes first after the grace: the shim then kills its model and every
/// process reparented to it, which SIGKILL to the shim would prevent.
async fn stop_group(pid: i32, shim: bool, grace: Duration) {
    let pgid = Pid::from_raw(pid);
    if killpg(pgid, Signal::SIGTERM).is_err() {
        return;
    }
    let leader_gone = || async {
        while process_alive(pid) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    // Whether the leader left within the grace or not, nothing else of the group may linger.
    if tokio::time::timeout(grace, leader_gone()).await.is_err() && shim && killpg(pgid, Signal::SIGTERM).is_ok() {
        let _ = tokio::time::timeout(SHIM_SWEEP, leader_gone()).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// Every live process (but spillway itself) whose environment says it belongs to `instance_id`
/// of `data_dir`: the model process and every descendant that kept the environment, including
/// ones that left its process group or session (`setsid`, a double fork).
fn instance_processes(data_dir: &str, instance_id: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            process_env(*pid).is_some_and(|env| {
                env.get("SPILLWAY_INSTANCE_ID").map(String::as_str) == Some(instance_id)
                    && env.get("SPILLWAY_DATA_DIR").map(String::as_str) == Some(data_dir)
            })
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// Stops an instance: its shim's (or, for an instance started without one, its model's) process
/// group, then every process that still carries its identity (descendants that escaped a shim
/// killed with SIGKILL), SIGTERM first and SIGKILL after `grace`. Processes forked while it
/// stops are looked for again before giving up.
async fn stop_instance(pid: Option<i32>, shim: bool, data_dir: &str, instance_id: &str, grace: Duration) {
    if let Some(pid) = pid {
        stop_group(pid, shim, grace).await;
    }
    let mut signal = Signal::SIGTERM;
    for round in 0..5 {
        let left = instance_processes(data_dir, instance_id);
        if left.is_empty() {
            return;
        }
        if round == 0 {
            tracing::info!(instance = %instance_id, pids = ?left, "stopping processes that left the instance's process group");
        }
        for p in &left {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), signal);
        }
        let gone = async {
            while left.iter().any(|p| process_alive(*p)) {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        let wait = if signal == Signal::SIGTERM {
            grace
        } else {
            Duration::from_secs(1)
        };
        let _ = tokio::time::timeout(wait, gone).await;
        signal = Signal::SIGKILL;
    }
    let left = instance_processes(data_dir, instance_id);
    if !left.is_empty() {
        tracing::error!(instance = %instance_id, pids = ?left, "processes of a stopped instance survive SIGKILL");
    }
}

/// A reserved slot, given back on drop unless the launch kept it.
struct Reservation<'a> {
    provider: &'a LocalProvider,
    instance_id: &'a str,
    keep: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.provider.release(self.instance_id);
        }
    }
}

impl CapacityProvider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let usage = self.reserve(&req.instance_id, req.instance_type)?;
            // Released unless the launch succeeds, also when the launch is dropped half-way
            // (the controller cuts a launch off at the provisioning deadline).
            let mut reservation = Reservation {
                provider: self,
                instance_id: &req.instance_id,
                keep: false,
            };
            let launched = self
                .start(&Start {
                    instance_id: &req.instance_id,
                    endpoint_name: &req.endpoint_name,
                    variant_name: &req.variant_name,
                    instance_type: &req.instance_type.name,
                    model_name: &req.model_name,
                    container: &req.container,
                    model_data: req.model_data,
                    devices: usage.gpus.clone(),
                    gpus: usage.gpus.clone(),
                    extra_env: vec![],
                })
                .await?;
            reservation.keep = true;
            Ok(launched)
        })
    }

    /// A copy is a process (a shim and its model, as an instance's) on this host, started
    /// without reserving capacity: its host instance holds the capacity. `CUDA_VISIBLE_DEVICES`
    /// is the host's GPUs at the copy's positions; a host that got no GPUs (a pinned GPU type)
    /// on a machine without GPUs counts logical devices `0..N`, and on a machine with GPUs it
    /// gets none (`""`), as the simulated host itself (never another instance's GPU).
    fn launch_copy(&self, req: CopyLaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let host = &req.host_instance_id;
            let unusable = |why: String| {
                LaunchError::Failed(format!("cannot start copy {} on instance {host}: {why}", req.copy_id))
            };
            let pid = pid_of(&req.host_handle).ok_or_else(|| unusable("its handle has no process id".into()))?;
            if !process_alive(pid) {
                return Err(unusable(format!("its process {pid} is not running")));
            }
            // Not a reused pid: the process carries the host's identity (when it can be read).
            if let Some(env) = process_env(pid)
                && env.get("SPILLWAY_INSTANCE_ID") != Some(host)
            {
                return Err(unusable(format!("process {pid} is not that instance")));
            }
            let host_gpus = gpus_of(&req.host_handle);
            let count = req.instance_type.accelerator.as_ref().map_or(0, |a| a.count);
            let (devices, gpus) = if !host_gpus.is_empty() {
                let d = super::copy_devices(&req.copy_id, &host_gpus, &req.accelerators)?;
                (d.clone(), d)
            } else {
                let logical = super::copy_devices(&req.copy_id, &(0..count).collect::<Vec<_>>(), &req.accelerators)?;
                if self.host.gpus.is_empty() {
                    (logical, vec![])
                } else {
                    (vec![], vec![])
                }
            };
            self.start(&Start {
                instance_id: &req.copy_id,
                endpoint_name: &req.endpoint_name,
                variant_name: &req.variant_name,
                instance_type: &req.instance_type.name,
                model_name: &req.model_name,
                container: &req.container,
                model_data: req.model_data,
                devices,
                gpus,
                extra_env: super::copy_environment(&req),
            })
            .await
        })
    }

    fn terminate<'a>(&'a self, instance_id: &'a str, handle: &'a Value, grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let data_dir = self.data_dir.to_string_lossy();
            stop_instance(pid_of(handle), is_shim(handle), &data_dir, instance_id, grace).await;
            self.release(instance_id);
            self.lock().exited.remove(instance_id);
            let dir = self.instance_dir(instance_id);
            let _ = tokio::fs::remove_dir_all(dir.join("model")).await;
        })
    }

    fn liveness(&self, instance_id: &str, handle: &Value) -> Liveness {
        if let Some(status) = self.lock().exited.get(instance_id) {
            return Liveness::Exited(status.clone());
        }
        match pid_of(handle) {
            Some(pid) if process_alive(pid) => Liveness::Running,
            // Adopted after a restart: the shim wrote how the model ended.
            _ => Liveness::Exited(
                handle
                    .get("dir")
                    .and_then(Value::as_str)
                    .and_then(|d| std::fs::read_to_string(Path::new(d).join(STATUS_FILE)).ok())
                    .map_or_else(
                        || "process is gone".into(),
                        |s| format!("process exited with {}", s.trim()),
                    ),
            ),
        }
    }

    fn recover<'a>(&'a self, tracked: &'a [TrackedInstance]) -> BoxFuture<'a, Recovery> {
        Box::pin(async move {
            let mut report = Recovery::default();
            let ours = self.data_dir.to_string_lossy().into_owned();
            for t in tracked {
                let Some(pid) = pid_of(&t.handle) else { continue };
                let env = process_env(pid);
                let same = env.as_ref().is_some_and(|e| {
                    e.get("SPILLWAY_INSTANCE_ID") == Some(&t.instance_id) && e.get("SPILLWAY_DATA_DIR") == Some(&ours)
                });
                if same && process_alive(pid) && t.host.is_some() {
                    // A copy: its host holds the capacity.
                    report.alive.push(t.instance_id.clone());
                } else if same && process_alive(pid) {
                    let spec = catalog::lookup(&t.instance_type);
                    let gpus = gpus_of(&t.handle);
                    self.lock().in_use.insert(
                        t.instance_id.clone(),
                        Usage {
                            instance_type: t.instance_type.clone(),
                            vcpus: spec.map(|s| s.vcpus as f64).unwrap_or(0.0),
                            memory_gib: spec.map(|s| s.memory_gib).unwrap_or(0.0),
                            gpus,
                        },
                    );
                    report.alive.push(t.instance_id.clone());
                }
            }
            // Anything else carrying our data dir is a process we started but do not track:
            // every one of them goes, group leader or not (a child that left its group).
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return report;
            };
            let mut untracked: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if pid == std::process::id() as i32 {
                    continue;
                }
                let Some(env) = process_env(pid) else { continue };
                if env.get("SPILLWAY_DATA_DIR") != Some(&ours) {
                    continue;
                }
                // Only what spillway started carries an instance (or copy) id with the data
                // dir; a process that merely inherited SPILLWAY_DATA_DIR (an operator's shell,
                // a tool started next to the server) is none of spillway's.
                let Some(id) = env.get("SPILLWAY_INSTANCE_ID").filter(|id| !id.is_empty()).cloned() else {
                    continue;
                };
                if !report.alive.contains(&id) {
                    untracked.entry(id).or_default().push(pid);
                }
            }
            for (id, pids) in untracked {
                // The top of the instance's tree first (the shim: a group leader whose parent is
                // not of the instance), then whatever of the instance is left.
                let parent = |p: i32| {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .ok()
                        .and_then(|s| crate::telemetry::usage::parse_stat(&s).ok())
                        .map(|s| s.ppid)
                };
                let leader = pids.iter().copied().find(|p| {
                    nix::unistd::getpgid(Some(Pid::from_raw(*p))).ok() == Some(Pid::from_raw(*p))
                        && parent(*p).is_none_or(|pp| !pids.contains(&pp))
                });
                let shim = leader.is_some_and(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(super::shim::SUBCOMMAND.as_bytes()))
                });
                stop_instance(leader, shim, &ours, &id, Duration::from_secs(2)).await;
                report.stopped_untracked.push(format!("pids {pids:?} (instance {id})"));
            }
            report
        })
    }

    fn capacity(&self) -> Vec<CapacityEntry> {
        let st = self.lock();
        let mut types: Vec<String> = st
            .config_pins
            .keys()
            .chain(st.runtime_pins.keys())
            .cloned()
            .chain(st.in_use.values().map(|u| u.instance_type.clone()))
            .collect();
        types.sort();
        types.dedup();
        types
            .into_iter()
            .map(|t| {
                let (slots, pinned_by) = match (st.runtime_pins.get(&t), st.config_pins.get(&t)) {
                    (Some(s), _) => (Some(*s), Some("runtime")),
                    (None, Some(s)) => (Some(*s), Some("config")),
                    (None, None) => (None, None),
                };
                let accounted_against = match catalog::lookup(&t).and_then(|s| s.accelerator.as_ref()) {
                    _ if slots.is_some() => "slots",
                    Some(a) if a.kind == AcceleratorKind::NvidiaGpu => "gpus",
                    Some(_) => "never",
                    None => "cpuAllowance",
                };
                CapacityEntry {
                    in_use: st.in_use.values().filter(|u| u.instance_type == t).count() as u32,
                    instance_type: t,
                    slots,
                    pinned_by,
                    accounted_against,
                }
            })
            .collect()
    }

    fn allowance(&self) -> Option<super::Allowance> {
        let st = self.lock();
        let holders = st.holders(|t| st.in_allowance(t));
        Some(super::Allowance {
            vcpus: self.host.cpus * self.cpu_overcommit,
            vcpus_promised: holders.iter().map(|(_, u)| u.vcpus).sum(),
            memory_gib: self.host.memory_gib * self.memory_overcommit,
            memory_gib_promised: holders.iter().map(|(_, u)| u.memory_gib).sum(),
            host_cpus: self.host.cpus,
            host_memory_gib: self.host.memory_gib,
            cpu_overcommit: self.cpu_overcommit,
            memory_overcommit: self.memory_overcommit,
            holders: holders
                .iter()
                .map(|(id, u)| super::AllowanceHolder {
                    instance_id: id.to_string(),
                    instance_type: u.instance_type.clone(),
                    vcpus: u.vcpus,
                    memory_gib: u.memory_gib,
                })
                .collect(),
        })
    }

    fn set_slots(&self, instance_type: &str, slots: Option<u32>) {
        let mut st = self.lock();
        match slots {
            Some(s) => st.runtime_pins.insert(instance_type.to_string(), s),
            None => st.runtime_pins.remove(instance_type),
        };
    }

    /// The instance's shim, whose process tree is the model's (and every process reparented to
    /// it; the shim's own few MiB of memory count too), and the GPUs of its
    /// `CUDA_VISIBLE_DEVICES`.
    fn usage_target(&self, handle: &Value) -> Option<UsageTarget> {
        Some(UsageTarget {
            pid: pid_of(handle)?,
            gpus: gpus_of(handle),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn model_ports_stay_below_the_ephemeral_range() {
        assert_eq!(super::model_port_range("32768\t60999\n"), (24576, 32768));
        assert_eq!(super::model_port_range("15000 20000"), (10_000, 15000));
        assert_eq!(super::model_port_range(""), (24576, 32768));
        assert_eq!(super::model_port_range("1024 65000"), (24576, 32768));
        let (low, high) = super::model_port_range(
            &std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default(),
        );
        let a = super::free_port().unwrap();
        let b = super::free_port().unwrap();
        assert!(
            (low..high).contains(&a) && (low..high).contains(&b),
            "{a} {b} not in {low}..{high}"
        );
        assert_ne!(a, b, "handed out in turn");
    }

    use super::*;

    fn provider(pins: &[(&str, u32)], gpus: u32) -> LocalProvider {
        let cfg = LocalProviderConfig {
            capacity: pins.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            ..LocalProviderConfig::default()
        };
        let host = Host {
            cpus: 2.0,
            memory_gib: 8.0,
            gpus: (0..gpus)
                .map(|i| Gpu {
                    index: i,
                    name: "t".into(),
                })
                .collect(),
        };
        LocalProvider::new(Path::new("/nonexistent"), &cfg, host)
    }

    fn spec(t: &str) -> &'static InstanceTypeSpec {
        catalog::lookup(t).unwrap()
    }

    #[test]
    fn pinned_slots_are_enforced_and_released() {
        let p = provider(&[("ml.g6.2xlarge", 1), ("ml.g6e.2xlarge", 0)], 0);
        assert!(matches!(
            p.reserve("a", spec("ml.g6e.2xlarge")),
            Err(LaunchError::InsufficientCapacity(_))
        ));
        assert!(p.reserve("a", spec("ml.g6.2xlarge")).is_ok());
        assert!(matches!(
            p.reserve("b", spec("ml.g6.2xlarge")),
            Err(LaunchError::InsufficientCapacity(_))
        ));
        p.release("a");
        assert!(p.reserve("b", spec("ml.g6.2xlarge")).is_ok());
        p.set_slots("ml.g6e.2xlarge", Some(1));
        assert!(p.reserve("c", spec("ml.g6e.2xlarge")).is_ok());
    }

    #[test]
    fn gpu_types_need_free_gpus_unless_pinned() {
        let p = provider(&[], 1);
        let u = p.reserve("a", spec("ml.g6.2xlarge")).unwrap();
        assert_eq!(u.gpus, vec![0]);
        assert!(matches!(
            p.reserve("b", spec("ml.g6.2xlarge")),
            Err(LaunchError::InsufficientCapacity(_))
        ));
        assert!(matches!(
            p.reserve("c", spec("ml.inf2.xlarge")),
            Err(LaunchError::InsufficientCapacity(_))
        ));
        let cpu_only = provider(&[], 0);
        assert!(matches!(
            cpu_only.reserve("a", spec("ml.g5.xlarge")),
            Err(LaunchError::InsufficientCapacity(_))
        ));
    }

    #[test]
    fn cpu_types_fit_within_overcommit() {
        // 2 CPUs x 8 = 16 vCPUs; ml.m5.xlarge has 4, memory 8 GiB x 4 = 32 GiB; m5.xlarge has 16.
        let p = provider(&[], 0);
        assert!(p.reserve("a", spec("ml.m5.xlarge")).is_ok());
        assert!(p.reserve("b", spec("ml.m5.xlarge")).is_ok());
        let third = p.reserve("c", spec("ml.m5.xlarge"));
        assert!(
            matches!(third, Err(LaunchError::InsufficientCapacity(ref m)) if m.contains("GiB")),
            "{third:?}"
        );
    }

    #[test]
    fn pinned_and_gpu_instances_do_not_consume_the_cpu_allowance() {
        // The scenario: two GPU types given slots on a host without GPUs, then the CPU
        // last resort. 2 CPUs x 8 = 16 vCPUs; 8 GiB x 4 = 32 GiB of memory.
        let p = provider(&[("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2)], 0);
        for (id, t) in [
            ("g1", "ml.g6e.2xlarge"),
            ("g2", "ml.g6.2xlarge"),
            ("g3", "ml.g6.2xlarge"),
        ] {
            let u = p.reserve(id, spec(t)).unwrap();
            assert!(u.gpus.is_empty(), "simulated");
        }
        assert!(
            p.reserve("c1", spec("ml.m5.xlarge")).is_ok(),
            "24 vCPUs of pinned GPU types do not count"
        );
        assert!(p.reserve("c2", spec("ml.m5.xlarge")).is_ok());
        let third = p.reserve("c3", spec("ml.m5.xlarge"));
        let Err(LaunchError::InsufficientCapacity(m)) = third else {
            panic!("{third:?}")
        };
        assert_eq!(
            m,
            "ml.m5.xlarge needs 16 GiB of memory; 32.0 of 32.0 GiB of the memory allowance (8.0 GiB host memory x \
             memory_overcommit 4) are promised by 2 unpinned CPU instances: ml.m5.xlarge x2 (c1, c2); \
             pinned types and GPU types do not count against it"
        );
        // Pinning the CPU type takes its instances out of the allowance at once.
        p.set_slots("ml.m5.xlarge", Some(3));
        assert!(p.reserve("c3", spec("ml.m5.xlarge")).is_ok());
        assert!(
            p.reserve("t1", spec("ml.c5.xlarge")).is_ok(),
            "the allowance is free again"
        );
    }

    #[test]
    fn the_cpu_refusal_names_its_numbers_and_holders() {
        let p = provider(&[], 0);
        let mut st = State::default();
        for (i, t) in ["ml.c5.xlarge", "ml.c5.xlarge", "ml.m5.large", "ml.c5.xlarge"]
            .iter()
            .enumerate()
        {
            st.in_use.insert(
                format!("i-{i}"),
                Usage {
                    instance_type: t.to_string(),
                    vcpus: spec(t).vcpus as f64,
                    memory_gib: 0.0,
                    gpus: vec![],
                },
            );
        }
        let Err(LaunchError::InsufficientCapacity(m)) = p.fits_allowance(&st, spec("ml.m5.xlarge")) else {
            panic!("14 + 4 > 16")
        };
        assert_eq!(
            m,
            "ml.m5.xlarge needs 4 vCPUs; 14 of 16 vCPUs of the CPU allowance (2 host CPUs x cpu_overcommit 8) \
             are promised by 4 unpinned CPU instances: ml.c5.xlarge x3 (i-0, i-1, i-3), ml.m5.large x1 (i-2); \
             pinned types and GPU types do not count against it"
        );
    }

    #[test]
    fn pin_refusals_read_well() {
        let p = provider(&[("ml.g6e.2xlarge", 0), ("ml.g6.2xlarge", 1), ("ml.g5.xlarge", 2)], 0);
        let msg = |id: &str, t: &str| match p.reserve(id, spec(t)) {
            Err(LaunchError::InsufficientCapacity(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg("a", "ml.g6e.2xlarge"),
            "ml.g6e.2xlarge has no capacity here: pinned to 0 slots"
        );
        p.reserve("b", spec("ml.g6.2xlarge")).unwrap();
        assert_eq!(
            msg("c", "ml.g6.2xlarge"),
            "ml.g6.2xlarge has no free slot: pinned to 1 slot, used by b"
        );
        p.reserve("d", spec("ml.g5.xlarge")).unwrap();
        p.reserve("e", spec("ml.g5.xlarge")).unwrap();
        assert_eq!(
            msg("f", "ml.g5.xlarge"),
            "ml.g5.xlarge has no free slot: pinned to 2 slots, all in use (d, e)"
        );
        let no_gpus = provider(&[], 0);
        assert_eq!(
            match no_gpus.reserve("a", spec("ml.g6.12xlarge")) {
                Err(LaunchError::InsufficientCapacity(m)) => m,
                other => panic!("{other:?}"),
            },
            "ml.g6.12xlarge needs 4 free GPUs; this host has 0 of 0 free (an unpinned GPU type runs only on \
             this host's GPUs; pin it to simulate it)"
        );
    }

    proptest::proptest! {
        /// Whatever launches and stops happen, with whatever pins: the CPU and memory allowance
        /// holds only unpinned CPU-only instances and never exceeds its size; a pinned type never
        /// runs more instances than its slots; and whether a CPU type fits does not depend on
        /// any pinned or GPU instance.
        #[test]
        fn every_instance_is_in_exactly_one_budget(
            pins in proptest::collection::vec(proptest::option::of(0u32..4), 4),
            ops in proptest::collection::vec((0usize..6, proptest::bool::ANY), 1..60),
        ) {
            const TYPES: [&str; 6] = [
                "ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge", "ml.c5.xlarge", "ml.m5.large", "ml.g5.xlarge",
            ];
            let pinned: Vec<(&str, u32)> = TYPES[..4]
                .iter()
                .zip(&pins)
                .filter_map(|(t, p)| p.map(|p| (*t, p)))
                .collect();
            let p = provider(&pinned, 1);
            let mut live: Vec<String> = vec![];
            for (n, (ty, launch)) in ops.into_iter().enumerate() {
                if launch || live.is_empty() {
                    let t = TYPES[ty];
                    let id = format!("i-{n}");
                    let alone = {
                        // The same host with only the allowance's holders on it.
                        let st = p.lock();
                        let only = State {
                            in_use: st.in_use.iter().filter(|(_, u)| st.in_allowance(&u.instance_type)).map(|(k, v)| (k.clone(), v.clone())).collect(),
                            config_pins: st.config_pins.clone(),
                            ..State::default()
                        };
                        only.in_allowance(t).then(|| p.fits_allowance(&only, spec(t)).is_ok())
                    };
                    let got = p.reserve(&id, spec(t));
                    if let Some(fits) = alone {
                        proptest::prop_assert_eq!(fits, got.is_ok(), "{} decided by instances outside the allowance", t);
                    }
                    if got.is_ok() {
                        live.push(id);
                    }
                } else {
                    let id = live.remove(ty % live.len());
                    p.release(&id);
                }
                let st = p.lock();
                let holders = st.holders(|t| st.in_allowance(t));
                let cpu: f64 = holders.iter().map(|(_, u)| u.vcpus).sum();
                let mem: f64 = holders.iter().map(|(_, u)| u.memory_gib).sum();
                proptest::prop_assert!(cpu <= p.host.cpus * p.cpu_overcommit);
                proptest::prop_assert!(mem <= p.host.memory_gib * p.memory_overcommit);
                for (t, slots) in &pinned {
                    proptest::prop_assert!(st.holders(|x| x == *t).len() as u32 <= *slots);
                }
                let gpus: Vec<u32> = st.in_use.values().flat_map(|u| u.gpus.clone()).collect();
                proptest::prop_assert!(gpus.len() <= 1, "one GPU on this host: {:?}", gpus);
            }
        }
    }

    #[test]
    fn command_lines_split_like_a_shell() {
        assert_eq!(
            command_line("python3 -m 'my server'", false).unwrap(),
            ["python3", "-m", "my server"]
        );
        assert!(command_line("", false).is_err());
        assert!(command_line("a 'b", false).is_err());
        assert_eq!(
            command_line("builtin:echo", false).unwrap(),
            ["/proc/self/exe", "builtin-model", "echo"]
        );
        let remote = command_line("builtin:echo", true).unwrap();
        assert_ne!(remote[0], "/proc/self/exe", "a Slurm node starts the binary's file");
        assert_eq!(remote[1..], ["builtin-model", "echo"]);
    }

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let (bin, dir) = (t.path().join("bin"), t.path().join("instance"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for (path, mode) in [
            (bin.join("model"), 0o755),
            (bin.join("data"), 0o644),
            (dir.join("sub/run"), 0o700),
        ] {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let path = std::env::join_paths(["/nonexistent".as_ref(), bin.as_path()]).unwrap();
        let find = |p: &str| find_program(p, Some(&path), &dir);
        assert_eq!(find("model"), Ok(bin.join("model")));
        assert!(find("data").unwrap_err().contains("not found in PATH"));
        assert!(find("nosuch").unwrap_err().contains("not found in PATH"));
        assert_eq!(
            find("sub/run"),
            Ok(dir.join("sub/run")),
            "relative to the instance directory"
        );
        let abs = bin.join("model").display().to_string();
        assert_eq!(find(&abs), Ok(bin.join("model")));
        assert_eq!(
            find(&bin.join("data").display().to_string()).unwrap_err(),
            "not an executable file"
        );
        assert!(find("/no/such/model-server").unwrap_err().contains("No such file"));
        assert!(find_program("sh", None, &dir).is_ok(), "glibc's default PATH");
    }

    #[test]
    fn usage_targets_come_from_the_handle() {
        let p = provider(&[], 0);
        assert_eq!(
            p.usage_target(&json!({"pid": 42, "port": 1, "gpus": [2, 3], "dir": "/x"})),
            Some(UsageTarget {
                pid: 42,
                gpus: vec![2, 3]
            })
        );
        assert_eq!(
            p.usage_target(&json!({"pid": 42, "gpus": []})),
            Some(UsageTarget { pid: 42, gpus: vec![] })
        );
        assert_eq!(p.usage_target(&json!({"pid": 0})), None);
        assert_eq!(p.usage_target(&json!({})), None);
    }
}
