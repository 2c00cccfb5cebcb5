//! The Slurm provider: each instance is a Slurm job running the model's command on some node.
//!
//! spillway talks to Slurm through its command-line tools, as any user on a login node would:
//!
//! - **Launch**: `salloc --immediate --no-shell` asks for the instance type's partition, GRES,
//!   constraint, CPUs and memory. Slurm answers synchronously (milliseconds): granted, or a
//!   reason why not now (busy, drained, down, never fits), which becomes
//!   [`LaunchError::InsufficientCapacity`]; nothing is ever left pending in the queue. Anything
//!   else (controller unreachable, authentication, an unknown partition) is
//!   [`LaunchError::Failed`]. The model then runs as step 0 of the allocation, `srun --jobid`,
//!   started in its own session on spillway's host so that it outlives spillway; when the step
//!   ends, the allocation is cancelled, so the job's life is the model's life.
//! - **Port**: by default Slurm reserves one (`srun --resv-ports=1`, from `MpiParams=ports`), so
//!   no other step on that node, of any job, gets it; a small wrapper on the node hands it to the
//!   model as `SAGEMAKER_BIND_TO_PORT`. With `port_range` set, the port is derived from the job
//!   id instead.
//! - **Identity**: job name `<prefix><instance id>` and comment
//!   `spillway instance=<id> data_dir=<data dir>`; the handle stores the job id. That is how a
//!   restarted spillway finds its jobs ([`CapacityProvider::recover`]); it only ever looks at
//!   jobs of its own user carrying its own data dir.
//! - **Liveness**: a background thread polls `squeue` while instances exist; a job that left
//!   `RUNNING` (cancelled, `NODE_FAIL`, ...) or whose model step is gone is reported exited with
//!   Slurm's state and reason.
//! - **Terminate**: `scancel --signal=TERM`, then `scancel` after the grace; the call returns
//!   once Slurm has released the job's resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use super::{
    BoxFuture, CapacityEntry, CapacityProvider, CopyLaunchRequest, LaunchError, LaunchRequest, Launched, Liveness,
    Recovery, TrackedInstance,
};
use crate::config::{SlurmInstanceType, SlurmProviderConfig};

/// Separator of the `squeue --format` fields (the comment comes last, so it may contain it).
const SEP: char = '|';
/// `squeue` fields: job id, state, node list, reason, name, comment.
const JOB_FORMAT: &str = "%i|%T|%N|%r|%j|%k";
/// A job that is running but has had no model step for this long is considered gone.
const STEPLESS_GRACE: Duration = Duration::from_secs(10);
/// How long `terminate` waits for Slurm to release a cancelled job's resources.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// A Slurm command that did not give an answer.
#[derive(Debug, Error)]
pub enum SlurmError {
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program ran longer than `command_timeout_seconds`.
    #[error("{program} did not answer within {seconds} s (is slurmctld reachable?)")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        seconds: u64,
    },
    /// The program exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// One row of `squeue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Job id.
    pub job_id: u64,
    /// `RUNNING`, `PENDING`, `CANCELLED`, `NODE_FAIL`, ...
    pub state: String,
    /// Node list (empty while pending).
    pub nodes: String,
    /// Reason (`None`, `NodeDown`, ...).
    pub reason: String,
    /// Job name.
    pub name: String,
    /// Job comment.
    pub comment: String,
}

impl JobRow {
    /// Parses one line of `squeue -h -o "%i|%T|%N|%r|%j|%k"`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.splitn(6, SEP);
        let job_id = f.next()?.trim().parse().ok()?;
        Some(Self {
            job_id,
            state: f.next()?.trim().to_string(),
            nodes: f.next()?.trim().to_string(),
            reason: f.next()?.trim().to_string(),
            name: f.next()?.trim().to_string(),
            comment: f.next().unwrap_or("").trim().to_string(),
        })
    }

    /// Still holding (or about to hold) resources.
    fn active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "RUNNING" | "PENDING" | "CONFIGURING" | "SUSPENDED" | "COMPLETING" | "REQUEUED" | "RESIZING" | "STOPPED"
        )
    }

    fn describe(&self) -> String {
        let mut s = format!("Slurm job {} is {}", self.job_id, self.state);
        if !self.reason.is_empty() && self.reason != "None" {
            s.push_str(&format!(" ({})", self.reason));
        }
        if !self.nodes.is_empty() {
            s.push_str(&format!(" on node {}", self.nodes));
        }
        s
    }
}

/// The job comment that marks an instance of this spillway (`data_dir`) as `instance_id`.
pub fn job_comment(instance_id: &str, data_dir: &Path) -> String {
    format!("spillway instance={instance_id} data_dir={}", data_dir.display())
}

/// Reads a comment written by [`job_comment`]: `(instance id, data dir)`.
pub fn parse_comment(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("spillway instance=")?;
    let (id, dir) = rest.split_once(" data_dir=")?;
    Some((id, dir))
}

/// Turns `salloc`'s refusal into a launch error: capacity answers (busy, drained, down, never
/// fits, policy limits) are [`LaunchError::InsufficientCapacity`], everything else is a
/// [`LaunchError::Failed`].
pub fn classify_refusal(instance_type: &str, partition: &str, stderr: &str) -> LaunchError {
    let text: String = stderr
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("salloc: error: ")
                .trim_start_matches("salloc: ")
        })
        .filter(|l| !l.is_empty() && !l.contains("PMIx"))
        .collect::<Vec<_>>()
        .join("; ");
    let low = text.to_ascii_lowercase();
    const CAPACITY: &[&str] = &[
        "requested nodes are busy",
        "immediate execution impossible",
        "required node not available",
        "requested node configuration is not available",
        "nodes required for job are down",
        "partition_down",
        "partition is down",
        "partition is inactive",
        "resources temporarily unavailable",
        "qosmax",
        "assocmax",
        "job violates accounting/qos policy",
        "unable to allocate resources: resources",
    ];
    if CAPACITY.iter().any(|p| low.contains(p)) {
        LaunchError::InsufficientCapacity(format!("Slurm partition {partition} for {instance_type}: {text}"))
    } else if text.is_empty() {
        LaunchError::Failed(format!(
            "salloc for {instance_type} (partition {partition}) failed without a message"
        ))
    } else {
        LaunchError::Failed(format!("Slurm refused {instance_type} (partition {partition}): {text}"))
    }
}

/// The job id in `salloc`'s "Granted job allocation N".
pub fn granted_job_id(stderr: &str) -> Option<u64> {
    let rest = stderr.split("Granted job allocation ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The first reserved port of `scontrol show step` output (`ResvPorts=20001` or `20001-20002`).
pub fn resv_port(step: &str) -> Option<u16> {
    let rest = step.split("ResvPorts=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Picks a port of `[first, last]` for job `job_id`, avoiding `used`.
pub fn derived_port(job_id: u64, (first, last): (u16, u16), used: &HashSet<u16>) -> Option<u16> {
    let n = (last - first) as u64 + 1;
    (0..n)
        .map(|k| first + ((job_id + k) % n) as u16)
        .find(|p| !used.contains(p))
}

fn job_id_of(handle: &Value) -> Option<u64> {
    handle.get("jobId").and_then(Value::as_u64)
}

/// A copy's step id (an instance's handle has none).
fn step_id_of(handle: &Value) -> Option<u32> {
    handle
        .get("stepId")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
}

#[derive(Debug, Clone)]
struct Usage {
    instance_type: String,
    job_id: u64,
    node: String,
    port: u16,
    since: Instant,
    /// A task waits on this instance's `srun` and records how its job ended (its final state,
    /// past the transient `COMPLETING`); false for an adopted instance and a held port.
    watched: bool,
}

#[derive(Debug, Clone)]
struct Snapshot {
    taken_at: Instant,
    jobs: HashMap<u64, JobRow>,
    /// Jobs that have at least one step.
    with_steps: HashSet<u64>,
    /// Every step (`job`, `step`) with its name.
    steps: HashMap<(u64, u32), String>,
}

/// A copy of an inference component: a job step in its host's allocation.
#[derive(Debug, Clone)]
struct CopyUsage {
    job_id: u64,
    step_id: u32,
    node: String,
    port: u16,
    since: Instant,
}

#[derive(Default)]
struct State {
    runtime_pins: BTreeMap<String, u32>,
    in_use: HashMap<String, Usage>,
    /// Copies by copy id (they hold no capacity of their own).
    copies: HashMap<String, CopyUsage>,
    exited: HashMap<String, String>,
    snapshot: Option<Snapshot>,
    node_addrs: HashMap<String, String>,
    poller: bool,
}

struct Inner {
    cfg: SlurmProviderConfig,
    data_dir: PathBuf,
    work_dir: PathBuf,
    ports: Option<(u16, u16)>,
    uid: String,
    /// Where instances' output is captured (`None`: into files of the instance directory).
    logs: Option<crate::logs::Settings>,
    /// The spillway binary that runs the shim (`None`: this process's executable).
    spillway: Option<PathBuf>,
    state: Mutex<State>,
}

/// A launch between `salloc` and its end. Dropped while armed (the launch future was dropped
/// mid-way, or `salloc` itself failed after Slurm may have granted the job), it gives the
/// instance's port back and cancels the job: by id when `salloc` said it, else by name (the
/// name is unique to the instance). `scancel` runs on a thread of its own: `Drop` cannot wait,
/// and it may run where no runtime is (a runtime shutting down drops its tasks).
struct LaunchGuard {
    inner: Arc<Inner>,
    instance_id: String,
    job_name: String,
    job_id: Option<u64>,
    armed: bool,
}

impl LaunchGuard {
    /// The `scancel` arguments that cancel the job this launch may have created.
    fn scancel_args(&self) -> Vec<String> {
        let mut args = vec!["--quiet".to_string()];
        match self.job_id {
            Some(j) => args.push(j.to_string()),
            None => args.extend([
                format!("--name={}", self.job_name),
                format!("--user={}", self.inner.uid),
            ]),
        }
        args
    }
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.inner.release(&self.instance_id);
        let args = self.scancel_args();
        tracing::info!(instance = %self.instance_id, job_id = ?self.job_id, job_name = %self.job_name, "launch cut off: cancelling its Slurm job");
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new().name("slurm-scancel".into()).spawn(move || {
            if let Err(e) = inner.run_blocking("scancel", &args) {
                tracing::warn!(error = %e, ?args, "cannot cancel the Slurm job of a launch that was cut off");
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread to cancel the Slurm job of a launch that was cut off");
        }
    }
}

/// On the node, a copy's step: hands the reserved (or derived) port to the model as
/// `SAGEMAKER_BIND_TO_PORT`, sets `CUDA_VISIBLE_DEVICES` to the devices at the copy's positions
/// (`SPILLWAY_COPY_ACCELERATORS`) among the ones Slurm gave the step (all of the job's, from
/// its GRES), or to the positions themselves when Slurm gave none (a type mapped without GRES),
/// then becomes the model.
const COPY_NODE_WRAPPER: &str = "p=${SAGEMAKER_BIND_TO_PORT:-${SLURM_STEP_RESV_PORTS%%[-,]*}}; \
     if [ -z \"$p\" ]; then echo 'spillway: Slurm reserved no port for this step: set MpiParams=ports=... in slurm.conf or provider.slurm.port_range' >&2; exit 98; fi; \
     SAGEMAKER_BIND_TO_PORT=$p; export SAGEMAKER_BIND_TO_PORT; \
     all=${CUDA_VISIBLE_DEVICES:-}; out=; \
     for i in $(echo \"$SPILLWAY_COPY_ACCELERATORS\" | tr , ' '); do \
       if [ -n \"$all\" ]; then d=; j=0; \
         for x in $(echo \"$all\" | tr , ' '); do [ \"$j\" = \"$i\" ] && d=$x; j=$((j+1)); done; \
         if [ -z \"$d\" ]; then echo \"spillway: accelerator position $i is outside the job's devices ($all)\" >&2; exit 97; fi; \
       else d=$i; fi; \
       out=${out:+$out,}$d; \
     done; \
     CUDA_VISIBLE_DEVICES=$out; export CUDA_VISIBLE_DEVICES; exec \"$@\"";

/// The `srun` arguments of a copy's step in job `job_id`: `--overlap` (it shares the
/// allocation with the host agent's step 0 and the other copies), named `step_name`, with the
/// copy's cores (rounded up, at least 1) and memory (`--mem`, left out for 0: the step may use
/// the job's), its own reserved port unless ports are derived.
pub fn copy_step_args(
    job_id: u64,
    step_name: &str,
    cpus: f64,
    memory_mb: u64,
    dir: &Path,
    resv_port: bool,
) -> Vec<String> {
    let cores = if cpus.is_finite() && cpus > 1.0 {
        cpus.ceil() as u64
    } else {
        1
    };
    let mut a = vec![
        format!("--jobid={job_id}"),
        "--overlap".into(),
        format!("--job-name={step_name}"),
        "--nodes=1".into(),
        "--ntasks=1".into(),
        format!("--cpus-per-task={cores}"),
    ];
    if memory_mb > 0 {
        a.push(format!("--mem={memory_mb}M"));
    }
    a.extend([
        "--input=none".into(),
        "--export=ALL".into(),
        format!("--chdir={}", dir.display()),
    ]);
    if resv_port {
        a.push("--resv-ports=1".into());
    }
    a
}

/// A copy launch between `srun` and its record. Dropped while armed (the launch was cut off or
/// failed), it stops the step (by id when known, else its `srun`, whose SIGTERM ends the step)
/// and frees the copy's port.
struct CopyGuard {
    inner: Arc<Inner>,
    copy_id: String,
    job_id: u64,
    step_id: Option<u32>,
    pgid: Option<i32>,
    armed: bool,
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.inner.lock().copies.remove(&self.copy_id);
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGTERM);
        }
        if let Some(step) = self.step_id {
            let args = vec!["--quiet".to_string(), format!("{}.{step}", self.job_id)];
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new().name("slurm-scancel".into()).spawn(move || {
                if let Err(e) = inner.run_blocking("scancel", &args) {
                    tracing::warn!(error = %e, ?args, "cannot cancel the step of a copy launch that was cut off");
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread to cancel a copy's step");
            }
        }
    }
}

/// Runs instances as Slurm jobs.
pub struct SlurmProvider {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The local command that runs `argv` (an `srun` invocation, maybe wrapped), and the log
    /// stream it captures into, if any: under an
    /// instance shim capturing its output into the log stream of `id` when logs are on, with a
    /// clean environment (no `SLURM_*` of spillway's own allocation, no `CUDA_VISIBLE_DEVICES`,
    /// no credentials: srun hands its environment to the job) and `SLURM_CONF` kept.
    fn srun_command(
        &self,
        argv: Vec<std::ffi::OsString>,
        endpoint: &str,
        variant: &str,
        id: &str,
    ) -> Result<(tokio::process::Command, Option<PathBuf>), LaunchError> {
        let log_dir = self.logs.as_ref().and_then(|l| {
            l.create_stream(endpoint, variant, id)
                .map_err(|e| {
                    tracing::warn!(id, error = %e, "cannot create the log stream; its output goes to files of its directory");
                })
                .ok()
        });
        let mut cmd = match (&log_dir, &self.logs) {
            (Some(d), Some(l)) => {
                let shim = super::shim::ShimOptions {
                    nofile: None,
                    status_file: None,
                    // Nobody signals this shim: the job or step is stopped through Slurm.
                    grace_seconds: 30,
                    log_dir: Some(d.clone()),
                    log_max_bytes: l.max_bytes_per_instance,
                    exec: false,
                    argv,
                };
                let spillway = match &self.spillway {
                    Some(p) => p.clone(),
                    None => super::local::spillway_exe()?,
                };
                let mut c = tokio::process::Command::new(spillway);
                c.arg(super::shim::SUBCOMMAND).args(shim.to_args());
                c
            }
            _ => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.env_clear()
            .envs(super::inherited_environment(&self.cfg.pass_env))
            .envs(std::env::var_os("SLURM_CONF").map(|c| ("SLURM_CONF", c)));
        if let Some(conf) = &self.cfg.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        Ok((cmd, log_dir))
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.cfg.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.command_timeout_seconds)
    }

    fn command(&self, name: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.program(name));
        if let Some(conf) = &self.cfg.slurm_conf {
            c.env("SLURM_CONF", conf);
        }
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Runs a Slurm command to completion; `Ok` carries (success, stdout, stderr).
    async fn run(&self, name: &str, args: &[String]) -> Result<(bool, String, String), SlurmError> {
        let mut c = self.command(name);
        c.args(args);
        let out = tokio::time::timeout(self.timeout(), c.output()).await;
        match out {
            Err(_) => Err(SlurmError::Timeout {
                program: name.into(),
                seconds: self.cfg.command_timeout_seconds,
            }),
            Ok(Err(source)) => Err(SlurmError::Spawn {
                program: self.program(name).display().to_string(),
                source,
            }),
            Ok(Ok(o)) => Ok((
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )),
        }
    }

    /// Runs a Slurm command that must succeed; returns stdout.
    async fn run_ok(&self, name: &str, args: &[String]) -> Result<String, SlurmError> {
        let mut c = self.command(name);
        c.args(args);
        let out = tokio::time::timeout(self.timeout(), c.output()).await;
        let o = match out {
            Err(_) => {
                return Err(SlurmError::Timeout {
                    program: name.into(),
                    seconds: self.cfg.command_timeout_seconds,
                });
            }
            Ok(Err(source)) => {
                return Err(SlurmError::Spawn {
                    program: self.program(name).display().to_string(),
                    source,
                });
            }
            Ok(Ok(o)) => o,
        };
        if !o.status.success() {
            return Err(SlurmError::Failed {
                program: name.into(),
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn job_args(&self) -> Vec<String> {
        vec![
            "--noheader".into(),
            "--states=all".into(),
            format!("--user={}", self.uid),
            format!("--format={JOB_FORMAT}"),
        ]
    }

    /// This user's jobs whose name carries the prefix (every state squeue still knows).
    async fn jobs(&self) -> Result<HashMap<u64, JobRow>, SlurmError> {
        let out = self.run_ok("squeue", &self.job_args()).await?;
        Ok(self.parse_jobs(&out))
    }

    fn parse_jobs(&self, out: &str) -> HashMap<u64, JobRow> {
        out.lines()
            .filter_map(JobRow::parse)
            .filter(|r| r.name.starts_with(&self.cfg.job_name_prefix))
            .map(|r| (r.job_id, r))
            .collect()
    }

    fn step_args(&self) -> Vec<String> {
        vec![
            "--noheader".into(),
            "--steps".into(),
            format!("--user={}", self.uid),
            "--format=%i|%j".into(),
        ]
    }

    /// Steps of `squeue --steps --format=%i|%j` output: `(job, step)` → step name.
    fn parse_step_ids(out: &str) -> HashMap<(u64, u32), String> {
        out.lines()
            .filter_map(|l| {
                let (id, name) = l.trim().split_once(SEP).unwrap_or((l.trim(), ""));
                let (job, step) = id.split_once('.')?;
                Some(((job.parse().ok()?, step.parse().ok()?), name.trim().to_string()))
            })
            .collect()
    }

    fn parse_steps(out: &str) -> HashSet<u64> {
        out.lines()
            .filter_map(|l| l.trim().split('.').next()?.parse().ok())
            .collect()
    }

    #[allow(clippy::disallowed_methods)] // Slurm's answers age in real time (the squeue snapshot cache).
    async fn snapshot(&self) -> Result<Snapshot, SlurmError> {
        let taken_at = Instant::now();
        let jobs = self.jobs().await?;
        let steps = self.run_ok("squeue", &self.step_args()).await?;
        Ok(Snapshot {
            taken_at,
            jobs,
            with_steps: Self::parse_steps(&steps),
            steps: Self::parse_step_ids(&steps),
        })
    }

    /// The state of one job, `None` once slurmctld has forgotten it.
    async fn job_state(&self, job_id: u64) -> Option<JobRow> {
        let args = vec![
            "--noheader".into(),
            "--states=all".into(),
            format!("--jobs={job_id}"),
            format!("--format={JOB_FORMAT}"),
        ];
        match self.run("squeue", &args).await {
            Ok((true, out, _)) => out.lines().filter_map(JobRow::parse).find(|r| r.job_id == job_id),
            _ => None,
        }
    }

    async fn node_addr(&self, node: &str) -> String {
        if let Some(a) = self.lock().node_addrs.get(node) {
            return a.clone();
        }
        let args = vec![
            "--noheader".into(),
            "--Node".into(),
            format!("--nodes={node}"),
            "--format=%o".into(),
        ];
        let addr = match self.run_ok("sinfo", &args).await {
            Ok(out) => out
                .lines()
                .next()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            Err(_) => None,
        }
        .unwrap_or_else(|| node.to_string());
        self.lock().node_addrs.insert(node.to_string(), addr.clone());
        addr
    }

    async fn cancel(&self, job_id: u64, signal: Option<&str>) {
        let mut args = vec!["--quiet".to_string()];
        if let Some(s) = signal {
            args.push(format!("--signal={s}"));
        }
        args.push(job_id.to_string());
        if let Err(e) = self.run("scancel", &args).await {
            tracing::warn!(job_id, error = %e, "scancel failed");
        }
    }

    /// Waits until the job holds no resources (or `limit` passes). `true` when it is released.
    #[allow(clippy::disallowed_methods)] // Waits on Slurm, an outside system, in real time.
    async fn wait_released(&self, job_id: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.job_state(job_id).await {
                Some(r) if r.active() => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job's model step has gone (or `limit` passes).
    #[allow(clippy::disallowed_methods)] // Waits on Slurm, an outside system, in real time.
    async fn wait_step_gone(&self, job_id: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let args = vec![
                "--noheader".into(),
                "--steps".into(),
                format!("--jobs={job_id}"),
                "--format=%i".into(),
            ];
            match self.run("squeue", &args).await {
                Ok((true, out, _)) if !Self::parse_steps(&out).contains(&job_id) => return,
                Ok((false, _, _)) | Err(_) => return,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn instance_dir(&self, instance_id: &str) -> PathBuf {
        self.work_dir.join("instances").join(instance_id)
    }

    fn release(&self, instance_id: &str) {
        let mut st = self.lock();
        st.in_use.remove(instance_id);
        st.exited.remove(instance_id);
    }

    /// The `salloc` arguments for one instance.
    fn salloc_args(&self, job_name: &str, comment: &str, m: &SlurmInstanceType) -> Vec<String> {
        let mut a = vec![
            format!("--immediate={}", self.cfg.immediate_seconds.max(1)),
            "--no-shell".into(),
            format!("--job-name={job_name}"),
            format!("--comment={comment}"),
            format!("--partition={}", m.partition),
            "--nodes=1".into(),
            "--ntasks=1".into(),
        ];
        if let Some(g) = &m.gres {
            a.push(format!("--gres={g}"));
        }
        if let Some(c) = &m.constraint {
            a.push(format!("--constraint={c}"));
        }
        if let Some(c) = m.cpus {
            a.push(format!("--cpus-per-task={c}"));
        }
        if let Some(m) = &m.mem {
            a.push(format!("--mem={m}"));
        }
        a.extend(self.cfg.salloc_args.iter().cloned());
        a
    }

    async fn launch(self: &Arc<Self>, req: &LaunchRequest) -> Result<Launched, LaunchError> {
        let itype = req.instance_type.name.clone();
        let Some(mapping) = self.cfg.instance_types.get(&itype).cloned() else {
            return Err(LaunchError::InsufficientCapacity(format!(
                "{itype} has no Slurm mapping ([provider.slurm.instance_types.\"{itype}\"]); it is never available"
            )));
        };
        {
            let st = self.lock();
            if let Some(pin) = st.runtime_pins.get(&itype) {
                let mut holders: Vec<&str> = st
                    .in_use
                    .iter()
                    .filter(|(_, u)| u.instance_type == itype)
                    .map(|(id, _)| id.as_str())
                    .collect();
                holders.sort_unstable();
                if holders.len() as u32 >= *pin {
                    return Err(LaunchError::InsufficientCapacity(super::local::pin_full(
                        &itype, *pin, &holders,
                    )));
                }
            }
        }
        let image =
            req.container.image.as_deref().ok_or_else(|| {
                LaunchError::Failed(format!("model {} has no PrimaryContainer.Image", req.model_name))
            })?;
        let argv = super::local::command_line(image, true)?;
        let dir = self.instance_dir(&req.instance_id);
        let model_dir =
            super::prepare_model_dir(&dir, req.container.model_data_url.as_deref(), "Slurm", req.model_data).await?;

        let job_name = format!("{}{}", self.cfg.job_name_prefix, req.instance_id);
        let comment = job_comment(&req.instance_id, &self.data_dir);
        let failed = |e: SlurmError| LaunchError::Failed(format!("Slurm: {e}"));
        // From here on a job may exist: if this future is dropped (the controller cuts a launch
        // off at the provisioning deadline) or salloc fails half-way (killed at its timeout
        // after the grant), the guard cancels it and gives its port back.
        let mut guard = LaunchGuard {
            inner: self.clone(),
            instance_id: req.instance_id.clone(),
            job_name: job_name.clone(),
            job_id: None,
            armed: true,
        };
        let (ok, _, stderr) = self
            .run("salloc", &self.salloc_args(&job_name, &comment, &mapping))
            .await
            .map_err(failed)?;
        let granted = granted_job_id(&stderr);
        guard.job_id = granted;
        let Some(job_id) = granted.filter(|_| ok) else {
            if let Some(j) = granted {
                self.cancel(j, None).await;
            }
            guard.armed = false;
            return Err(classify_refusal(&itype, &mapping.partition, &stderr));
        };
        let result = self
            .start_step(req, &argv, &dir, &model_dir, job_id, &job_name, &mapping)
            .await;
        guard.armed = false;
        if result.is_err() {
            self.cancel(job_id, None).await;
            self.release(&req.instance_id);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::disallowed_methods)] // Waits on Slurm, an outside system, in real time; usage ages.
    async fn start_step(
        self: &Arc<Self>,
        req: &LaunchRequest,
        argv: &[String],
        dir: &Path,
        model_dir: &Path,
        job_id: u64,
        job_name: &str,
        mapping: &SlurmInstanceType,
    ) -> Result<Launched, LaunchError> {
        let failed = |what: &str, e: SlurmError| LaunchError::Failed(format!("Slurm job {job_id}: {what}: {e}"));
        let row = self
            .job_state(job_id)
            .await
            .ok_or_else(|| LaunchError::Failed(format!("Slurm job {job_id} vanished right after its allocation")))?;
        let node = row.nodes.clone();
        if node.is_empty() || row.state != "RUNNING" {
            return Err(LaunchError::Failed(format!(
                "Slurm granted job {job_id} but it is {}",
                row.describe()
            )));
        }
        let addr = self.node_addr(&node).await;
        let derived = match self.ports {
            Some(range) => {
                let used: HashSet<u16> = self
                    .lock()
                    .in_use
                    .values()
                    .filter(|u| u.node == node)
                    .map(|u| u.port)
                    .collect();
                let port = derived_port(job_id, range, &used).ok_or_else(|| {
                    LaunchError::InsufficientCapacity(format!(
                        "every port of provider.slurm.port_range is used by spillway on node {node}"
                    ))
                })?;
                // Hold the port at once, so that a concurrent launch on this node picks another.
                self.lock().in_use.insert(
                    req.instance_id.clone(),
                    Usage {
                        instance_type: req.instance_type.name.clone(),
                        job_id,
                        node: node.clone(),
                        port,
                        since: Instant::now(),
                        watched: false,
                    },
                );
                Some(port)
            }
            None => None,
        };
        let log = |name: &str| {
            std::fs::File::create(dir.join(name))
                .map_err(|e| LaunchError::Failed(format!("cannot create {name} in {}: {e}", dir.display())))
        };
        // On the node: hand the reserved (or derived) port to the model, then become it.
        let node_wrapper = "p=${SAGEMAKER_BIND_TO_PORT:-${SLURM_STEP_RESV_PORTS%%[-,]*}}; \
             if [ -z \"$p\" ]; then echo 'spillway: Slurm reserved no port for this step: set MpiParams=ports=... in slurm.conf or provider.slurm.port_range' >&2; exit 98; fi; \
             SAGEMAKER_BIND_TO_PORT=$p; export SAGEMAKER_BIND_TO_PORT; exec \"$@\"";
        let mut srun_args: Vec<String> = vec![
            format!("--jobid={job_id}"),
            format!("--job-name={job_name}"),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            "--input=none".into(),
            "--export=ALL".into(),
            format!("--chdir={}", dir.display()),
        ];
        if derived.is_none() {
            srun_args.push("--resv-ports=1".into());
        }
        srun_args.extend([
            "/bin/sh".into(),
            "-c".into(),
            node_wrapper.into(),
            "spillway-model".into(),
        ]);
        srun_args.extend(argv.iter().cloned());
        // On spillway's host: srun in its own session (it outlives spillway); when the model
        // step ends for any reason, the allocation goes with it.
        let mut host_wrapper =
            "scancel=$1; job=$2; shift 2; \"$@\"; rc=$?; \"$scancel\" --quiet \"$job\" 2>/dev/null; exit $rc"
                .to_string();
        // srun hands its resource limits to the job (PropagateResourceLimits): the model gets
        // the open-file soft limit spillway was started with, not the one it raised.
        if let Some(n) = super::shim::model_nofile() {
            host_wrapper = format!("ulimit -Sn {n} 2>/dev/null; {host_wrapper}");
        }
        let mut wrapper: Vec<std::ffi::OsString> = vec![
            "/bin/sh".into(),
            "-c".into(),
            host_wrapper.into(),
            "spillway-srun".into(),
            self.program("scancel").into(),
            job_id.to_string().into(),
            self.program("srun").into(),
        ];
        wrapper.extend(srun_args.iter().map(Into::into));
        // With logs, the wrapper runs under a shim that captures what srun forwards.
        let (mut cmd, log_dir) = self.srun_command(wrapper, &req.endpoint_name, &req.variant_name, &req.instance_id)?;
        cmd.envs(req.container.environment.iter().flatten())
            .env(crate::core::model::MODEL_ENV_KEYS, req.container.environment_keys())
            .env("SM_MODEL_DIR", model_dir)
            .env("SPILLWAY_INSTANCE_TYPE", &req.instance_type.name)
            .env("SPILLWAY_INSTANCE_ID", &req.instance_id)
            .env("SPILLWAY_MODEL_NAME", &req.model_name)
            .env("SPILLWAY_ENDPOINT_NAME", &req.endpoint_name)
            .env("SPILLWAY_VARIANT_NAME", &req.variant_name)
            .env("SPILLWAY_DATA_DIR", &self.data_dir)
            .env("SPILLWAY_SLURM_PARTITION", &mapping.partition);
        if let Some(p) = derived {
            cmd.env("SAGEMAKER_BIND_TO_PORT", p.to_string());
        }
        let (stdout, stderr) = if log_dir.is_some() {
            let f = log("shim.log")?;
            let g = f
                .try_clone()
                .map_err(|e| LaunchError::Failed(format!("cannot open shim.log twice: {e}")))?;
            (f, g)
        } else {
            (log("stdout.log")?, log("stderr.log")?)
        };
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| LaunchError::Failed(format!("cannot start srun for Slurm job {job_id}: {e}")))?;
        let srun_pid = child.id().unwrap_or(0);

        let port = match derived {
            Some(p) => p,
            None => {
                // Slurm picks the port when it creates the step; read it back.
                let deadline = Instant::now() + self.timeout();
                loop {
                    let args = vec!["show".into(), "step".into(), format!("{job_id}.0")];
                    if let Ok((true, out, _)) = self.run("scontrol", &args).await {
                        if let Some(p) = resv_port(&out) {
                            break p;
                        }
                        if out.contains("ResvPorts=") && !out.contains("ResvPorts=(null)") {
                            // Present but unparsable: keep polling a little.
                        } else if out.contains("StepId=") {
                            return Err(LaunchError::Failed(format!(
                                "Slurm reserved no port for job {job_id}: set MpiParams=ports=... in slurm.conf or provider.slurm.port_range"
                            )));
                        }
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        // The shim has written srun's last lines before it exited (or, when
                        // the shim itself failed, its own messages to shim.log).
                        let err = match &log_dir {
                            Some(d) => {
                                let tail: Vec<String> =
                                    crate::logs::store::tail(d, 5).into_iter().map(|e| e.message).collect();
                                if tail.is_empty() {
                                    std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
                                } else {
                                    tail.join("\n")
                                }
                            }
                            None => std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                        };
                        return Err(LaunchError::Failed(format!(
                            "srun for Slurm job {job_id} exited ({status}) before its step started: {}",
                            err.trim()
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Err(failed(
                            "model step",
                            SlurmError::Timeout {
                                program: "srun".into(),
                                seconds: self.cfg.command_timeout_seconds,
                            },
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.lock().in_use.insert(
            req.instance_id.clone(),
            Usage {
                instance_type: req.instance_type.name.clone(),
                job_id,
                node: node.clone(),
                port,
                since: Instant::now(),
                watched: true,
            },
        );
        self.ensure_poller();
        // When srun ends, record how the job ended (the controller replaces the instance).
        let me = Arc::downgrade(self);
        let id = req.instance_id.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => format!("srun exited with {s}"),
                Err(e) => format!("srun wait failed: {e}"),
            };
            let Some(me) = me.upgrade() else { return };
            if !me.lock().in_use.contains_key(&id) {
                return;
            }
            // COMPLETING is transient; wait for the final state (CANCELLED, NODE_FAIL...), up to
            // 10 s (a loaded slurmctld takes seconds; the instance is replaced after).
            let mut row = me.job_state(job_id).await;
            for _ in 0..100 {
                if row.as_ref().is_none_or(|r| r.state != "COMPLETING") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                row = me.job_state(job_id).await;
            }
            let why = match row {
                Some(r) if r.state != "RUNNING" => format!("ended: {} ({status})", r.describe()),
                _ => format!("ended: the model step of Slurm job {job_id} is gone ({status})"),
            };
            let mut st = me.lock();
            if st.in_use.contains_key(&id) {
                st.exited.insert(id, why);
            }
        });
        Ok(Launched {
            handle: json!({
                "jobId": job_id,
                "jobName": job_name,
                "node": node,
                "port": port,
                "partition": mapping.partition,
                "srunPid": srun_pid,
                "dir": dir,
            }),
            address: format!("{addr}:{port}"),
        })
    }

    /// Starts a copy as a job step of its host's allocation (see [`copy_step_args`]).
    #[allow(clippy::disallowed_methods)] // Waits on Slurm, an outside system, in real time; usage ages.
    async fn launch_copy(self: &Arc<Self>, req: &CopyLaunchRequest) -> Result<Launched, LaunchError> {
        let host = &req.host_instance_id;
        let unusable =
            |why: String| LaunchError::Failed(format!("cannot start copy {} on instance {host}: {why}", req.copy_id));
        let job_id = job_id_of(&req.host_handle).ok_or_else(|| unusable("its handle has no Slurm job id".into()))?;
        // The positions are checked here against the type's devices; the node maps them.
        let count = req.instance_type.accelerator.as_ref().map_or(0, |a| a.count);
        super::copy_devices(&req.copy_id, &(0..count).collect::<Vec<_>>(), &req.accelerators)?;
        let row = self
            .job_state(job_id)
            .await
            .ok_or_else(|| unusable(format!("Slurm job {job_id} is not known to slurmctld")))?;
        if row.state != "RUNNING" || row.nodes.is_empty() {
            return Err(unusable(row.describe()));
        }
        // Steps go only into this spillway's own job of that instance.
        let ours = self.data_dir.to_string_lossy();
        if parse_comment(&row.comment) != Some((host.as_str(), ours.as_ref())) {
            return Err(unusable(format!(
                "Slurm job {job_id} is not this spillway's job of that instance (comment {:?})",
                row.comment
            )));
        }
        let node = row.nodes.clone();
        let image = req
            .container
            .image
            .as_deref()
            .ok_or_else(|| LaunchError::Failed(format!("copy {}: its container has no Image", req.copy_id)))?;
        let argv = super::local::command_line(image, true)?;
        let dir = self.instance_dir(&req.copy_id);
        let model_dir =
            super::prepare_model_dir(&dir, req.container.model_data_url.as_deref(), "Slurm", req.model_data).await?;
        let addr = self.node_addr(&node).await;
        let step_name = format!("{}{}", self.cfg.job_name_prefix, req.copy_id);
        let derived = match self.ports {
            Some(range) => {
                let mut st = self.lock();
                let used: HashSet<u16> = st
                    .in_use
                    .values()
                    .filter(|u| u.node == node)
                    .map(|u| u.port)
                    .chain(st.copies.values().filter(|c| c.node == node).map(|c| c.port))
                    .collect();
                let port = derived_port(job_id, range, &used).ok_or_else(|| {
                    LaunchError::InsufficientCapacity(format!(
                        "every port of provider.slurm.port_range is used by spillway on node {node}"
                    ))
                })?;
                // Held at once (step id unknown yet), so a concurrent launch picks another.
                st.copies.insert(
                    req.copy_id.clone(),
                    CopyUsage {
                        job_id,
                        step_id: u32::MAX,
                        node: node.clone(),
                        port,
                        since: Instant::now(),
                    },
                );
                Some(port)
            }
            None => None,
        };
        let mut guard = CopyGuard {
            inner: self.clone(),
            copy_id: req.copy_id.clone(),
            job_id,
            step_id: None,
            pgid: None,
            armed: true,
        };
        // srun hands its resource limits to the step: the model gets the open-file soft limit
        // spillway was started with, as an instance's does.
        let mut argv_all: Vec<std::ffi::OsString> = match super::shim::model_nofile() {
            Some(n) => vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("ulimit -Sn {n} 2>/dev/null; exec \"$@\"").into(),
                "spillway-srun".into(),
            ],
            None => vec![],
        };
        argv_all.push(self.program("srun").into());
        argv_all.extend(
            copy_step_args(job_id, &step_name, req.cpus, req.memory_mb, &dir, derived.is_none())
                .into_iter()
                .map(Into::into),
        );
        argv_all.extend([
            "/bin/sh".into(),
            "-c".into(),
            COPY_NODE_WRAPPER.into(),
            "spillway-model".into(),
        ]);
        argv_all.extend(argv.iter().map(Into::into));
        let (mut cmd, log_dir) = self.srun_command(argv_all, &req.endpoint_name, &req.variant_name, &req.copy_id)?;
        let positions: Vec<String> = req.accelerators.iter().map(u32::to_string).collect();
        cmd.envs(req.container.environment.iter().flatten())
            .env(crate::core::model::MODEL_ENV_KEYS, req.container.environment_keys())
            .env("SM_MODEL_DIR", &model_dir)
            .env("SPILLWAY_INSTANCE_TYPE", &req.instance_type.name)
            .env("SPILLWAY_INSTANCE_ID", &req.copy_id)
            .env("SPILLWAY_MODEL_NAME", &req.model_name)
            .env("SPILLWAY_ENDPOINT_NAME", &req.endpoint_name)
            .env("SPILLWAY_VARIANT_NAME", &req.variant_name)
            .env("SPILLWAY_DATA_DIR", &self.data_dir)
            .env("SPILLWAY_COPY_ACCELERATORS", positions.join(","))
            .envs(super::copy_environment(req));
        if let Some(p) = req.host_handle.get("partition").and_then(Value::as_str) {
            cmd.env("SPILLWAY_SLURM_PARTITION", p);
        }
        if let Some(p) = derived {
            cmd.env("SAGEMAKER_BIND_TO_PORT", p.to_string());
        }
        let log = |name: &str| {
            std::fs::File::create(dir.join(name))
                .map_err(|e| LaunchError::Failed(format!("cannot create {name} in {}: {e}", dir.display())))
        };
        let (stdout, stderr) = if log_dir.is_some() {
            let f = log("shim.log")?;
            let g = f
                .try_clone()
                .map_err(|e| LaunchError::Failed(format!("cannot open shim.log twice: {e}")))?;
            (f, g)
        } else {
            (log("stdout.log")?, log("stderr.log")?)
        };
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| LaunchError::Failed(format!("cannot start srun in Slurm job {job_id}: {e}")))?;
        let srun_pid = child.id().unwrap_or(0);
        guard.pgid = i32::try_from(srun_pid).ok().filter(|p| *p > 0);
        // The step's id (by its name), then its reserved port.
        let deadline = Instant::now() + self.timeout();
        let (step_id, port) = loop {
            let args = vec![
                "--noheader".into(),
                "--steps".into(),
                format!("--jobs={job_id}"),
                "--format=%i|%j".into(),
            ];
            let step = match self.run("squeue", &args).await {
                Ok((true, out, _)) => Self::parse_step_ids(&out)
                    .into_iter()
                    .find(|((j, _), n)| *j == job_id && *n == step_name)
                    .map(|((_, s), _)| s),
                _ => None,
            };
            if let Some(step) = step {
                guard.step_id = Some(step);
                match derived {
                    Some(p) => break (step, p),
                    None => {
                        let args = vec!["show".into(), "step".into(), format!("{job_id}.{step}")];
                        if let Ok((true, out, _)) = self.run("scontrol", &args).await {
                            if let Some(p) = resv_port(&out) {
                                break (step, p);
                            }
                            if out.contains("ResvPorts=(null)") {
                                return Err(LaunchError::Failed(format!(
                                    "Slurm reserved no port for copy {} (step {job_id}.{step}): set MpiParams=ports=... in slurm.conf or provider.slurm.port_range",
                                    req.copy_id
                                )));
                            }
                        }
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(dir.join(if log_dir.is_some() { "shim.log" } else { "stderr.log" }))
                    .unwrap_or_default();
                return Err(LaunchError::Failed(format!(
                    "srun for copy {} in Slurm job {job_id} exited ({status}) before its step started: {}",
                    req.copy_id,
                    err.trim()
                )));
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Failed(format!(
                    "Slurm job {job_id}: the step of copy {} did not start within {} s",
                    req.copy_id, self.cfg.command_timeout_seconds
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.lock().copies.insert(
            req.copy_id.clone(),
            CopyUsage {
                job_id,
                step_id,
                node: node.clone(),
                port,
                since: Instant::now(),
            },
        );
        guard.armed = false;
        self.ensure_poller();
        let me = Arc::downgrade(self);
        let id = req.copy_id.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => format!("srun exited with {s}"),
                Err(e) => format!("srun wait failed: {e}"),
            };
            let Some(me) = me.upgrade() else { return };
            let mut st = me.lock();
            if st.copies.contains_key(&id) {
                st.exited.insert(
                    id,
                    format!("ended: the step {job_id}.{step_id} of the copy is gone ({status})"),
                );
            }
        });
        Ok(Launched {
            handle: json!({
                "jobId": job_id,
                "stepId": step_id,
                "stepName": step_name,
                "host": req.host_instance_id,
                "node": node,
                "port": port,
                "partition": req.host_handle.get("partition"),
                "srunPid": srun_pid,
                "dir": dir,
            }),
            address: format!("{addr}:{port}"),
        })
    }

    /// Stops a copy's step: SIGTERM, then a cancel after the grace; the allocation stays.
    async fn terminate_copy(&self, copy_id: &str, job_id: u64, step_id: u32, grace: Duration) {
        let step = format!("{job_id}.{step_id}");
        for (signal, wait) in [(Some("TERM"), grace), (None, RELEASE_WAIT)] {
            let mut args = vec!["--quiet".to_string()];
            if let Some(s) = signal {
                args.push(format!("--signal={s}"));
            }
            args.push(step.clone());
            if let Err(e) = self.run("scancel", &args).await {
                tracing::warn!(copy = %copy_id, step = %step, error = %e, "scancel failed");
            }
            if self.wait_copy_step_gone(job_id, step_id, wait).await {
                break;
            }
        }
        let mut st = self.lock();
        st.copies.remove(copy_id);
        st.exited.remove(copy_id);
    }

    /// Waits until step `job.step` is gone (or `limit` passes); `true` when it is.
    #[allow(clippy::disallowed_methods)] // Waits on Slurm, an outside system, in real time.
    async fn wait_copy_step_gone(&self, job_id: u64, step_id: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let args = vec![
                "--noheader".into(),
                "--steps".into(),
                format!("--jobs={job_id}"),
                "--format=%i|%j".into(),
            ];
            match self.run("squeue", &args).await {
                Ok((true, out, _)) if !Self::parse_step_ids(&out).contains_key(&(job_id, step_id)) => return true,
                Ok((false, _, _)) => return true, // the job itself is gone
                _ => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn copy_liveness(&self, copy_id: &str, job_id: u64, step_id: u32) -> Liveness {
        let st = self.lock();
        if let Some(why) = st.exited.get(copy_id) {
            return Liveness::Exited(why.clone());
        }
        let since = st.copies.get(copy_id).map(|c| c.since);
        let Some(snap) = &st.snapshot else {
            return Liveness::Running;
        };
        if since.is_some_and(|s| snap.taken_at < s) {
            return Liveness::Running;
        }
        match snap.jobs.get(&job_id) {
            None => Liveness::Exited(format!("ended: Slurm job {job_id} is no longer known to slurmctld")),
            Some(r) if r.state == "RUNNING" => {
                let old_enough = since.is_none_or(|s| snap.taken_at.duration_since(s) > STEPLESS_GRACE);
                if old_enough && !snap.steps.contains_key(&(job_id, step_id)) {
                    Liveness::Exited(format!("ended: the step {job_id}.{step_id} of the copy is gone"))
                } else {
                    Liveness::Running
                }
            }
            Some(r) => Liveness::Exited(format!("ended: {}", r.describe())),
        }
    }

    /// Starts the background `squeue` poller once.
    fn ensure_poller(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.poller {
                return;
            }
            st.poller = true;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        let interval = Duration::from_millis(self.cfg.poll_interval_ms);
        let spawned = std::thread::Builder::new().name("slurm-poller".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(me) = weak.upgrade() else { return };
                if me.lock().in_use.is_empty() {
                    continue;
                }
                match me.snapshot_blocking() {
                    Ok(s) => me.lock().snapshot = Some(s),
                    Err(e) => tracing::warn!(error = %e, "cannot poll Slurm job states"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Slurm poller");
            self.lock().poller = false;
        }
    }

    fn run_blocking(&self, name: &str, args: &[String]) -> Result<String, SlurmError> {
        let mut c = std::process::Command::new(self.program(name));
        if let Some(conf) = &self.cfg.slurm_conf {
            c.env("SLURM_CONF", conf);
        }
        let o = c
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SlurmError::Spawn {
                program: name.into(),
                source,
            })?;
        if !o.status.success() {
            return Err(SlurmError::Failed {
                program: name.into(),
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    #[allow(clippy::disallowed_methods)] // Slurm's answers age in real time (the squeue snapshot cache).
    fn snapshot_blocking(&self) -> Result<Snapshot, SlurmError> {
        let taken_at = Instant::now();
        let jobs = self.run_blocking("squeue", &self.job_args())?;
        let steps = self.run_blocking("squeue", &self.step_args())?;
        Ok(Snapshot {
            taken_at,
            jobs: self.parse_jobs(&jobs),
            with_steps: Self::parse_steps(&steps),
            steps: Self::parse_step_ids(&steps),
        })
    }

    fn liveness(&self, instance_id: &str, handle: &Value) -> Liveness {
        let st = self.lock();
        if let Some(why) = st.exited.get(instance_id) {
            return Liveness::Exited(why.clone());
        }
        let Some(job_id) = job_id_of(handle) else {
            return Liveness::Exited("ended: the instance has no Slurm job".into());
        };
        let usage = st.in_use.get(instance_id);
        let since = usage.map(|u| u.since);
        let watched = usage.is_some_and(|u| u.watched);
        let Some(snap) = &st.snapshot else {
            return Liveness::Running;
        };
        // A snapshot older than the launch (or adoption) says nothing about this job.
        if since.is_some_and(|s| snap.taken_at < s) {
            return Liveness::Running;
        }
        match snap.jobs.get(&job_id) {
            None => Liveness::Exited(format!("ended: Slurm job {job_id} is no longer known to slurmctld")),
            Some(r) if r.state == "RUNNING" => {
                let old_enough = since.is_none_or(|s| snap.taken_at.duration_since(s) > STEPLESS_GRACE);
                if old_enough && !snap.with_steps.contains(&job_id) {
                    Liveness::Exited(format!("ended: Slurm job {job_id} has no model step any more"))
                } else {
                    Liveness::Running
                }
            }
            // A job that is ending: the task waiting on its srun records its final state
            // (CANCELLED, NODE_FAIL, ...) as soon as it is known; a verdict now would name only
            // the transient COMPLETING.
            Some(r) if r.state == "COMPLETING" && watched => Liveness::Running,
            Some(r) => Liveness::Exited(format!("ended: {}", r.describe())),
        }
    }

    async fn recover(self: &Arc<Self>, tracked: &[TrackedInstance]) -> Recovery {
        let mut report = Recovery::default();
        let mut snap = None;
        let mut last_err = None;
        for attempt in 0..5 {
            match self.snapshot().await {
                Ok(s) => {
                    snap = Some(s);
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "cannot list Slurm jobs for recovery");
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let Some(snap) = snap else {
            // Slurm is unreachable: trust the store rather than forget jobs that may still run;
            // health checks decide, and terminate cancels by job id.
            tracing::error!(
                error = %last_err.map(|e| e.to_string()).unwrap_or_default(),
                "Slurm unreachable during recovery: keeping every tracked instance; untracked jobs were not swept"
            );
            for t in tracked {
                match (job_id_of(&t.handle), step_id_of(&t.handle)) {
                    (Some(job_id), Some(step_id)) if t.host.is_some() => self.adopt_copy(t, job_id, step_id),
                    (Some(job_id), _) if t.host.is_none() => self.adopt(t, job_id),
                    _ => continue,
                }
                report.alive.push(t.instance_id.clone());
            }
            self.ensure_poller();
            return report;
        };
        let ours = self.data_dir.to_string_lossy().into_owned();
        let mine: Vec<&JobRow> = snap
            .jobs
            .values()
            .filter(|r| r.active() && parse_comment(&r.comment).is_some_and(|(_, d)| d == ours))
            .collect();
        let mut kept = HashSet::new();
        for t in tracked.iter().filter(|t| t.host.is_none()) {
            let Some(job_id) = job_id_of(&t.handle) else { continue };
            let Some(row) = mine.iter().find(|r| r.job_id == job_id) else {
                continue;
            };
            let same = parse_comment(&row.comment).is_some_and(|(id, _)| id == t.instance_id);
            if same && row.state == "RUNNING" && snap.with_steps.contains(&job_id) {
                self.adopt(t, job_id);
                kept.insert(job_id);
                report.alive.push(t.instance_id.clone());
            }
        }
        // Copies: steps of adopted hosts' jobs, named for the copy.
        let mut kept_steps = HashSet::new();
        for t in tracked.iter().filter(|t| t.host.is_some()) {
            let (Some(job_id), Some(step_id)) = (job_id_of(&t.handle), step_id_of(&t.handle)) else {
                continue;
            };
            let name = format!("{}{}", self.cfg.job_name_prefix, t.instance_id);
            if kept.contains(&job_id) && snap.steps.get(&(job_id, step_id)) == Some(&name) {
                self.adopt_copy(t, job_id, step_id);
                kept_steps.insert((job_id, step_id));
                report.alive.push(t.instance_id.clone());
            }
        }
        // Steps of adopted jobs that are neither the host's model step nor an adopted copy.
        let stray: Vec<((u64, u32), String)> = snap
            .steps
            .iter()
            .filter(|((j, s), name)| {
                kept.contains(j)
                    && !kept_steps.contains(&(*j, *s))
                    && name.starts_with(&self.cfg.job_name_prefix)
                    && mine.iter().any(|r| r.job_id == *j && r.name != **name)
            })
            .map(|(k, n)| (*k, n.clone()))
            .collect();
        for ((job_id, step_id), name) in stray {
            let step = format!("{job_id}.{step_id}");
            if let Err(e) = self.run("scancel", &["--quiet".to_string(), step.clone()]).await {
                tracing::warn!(step = %step, error = %e, "cannot cancel an untracked copy step");
            }
            self.wait_copy_step_gone(job_id, step_id, RELEASE_WAIT).await;
            let id = name.strip_prefix(&self.cfg.job_name_prefix).unwrap_or(&name);
            report.stopped_untracked.push(format!("Slurm step {step} (copy {id})"));
        }
        for row in mine {
            if kept.contains(&row.job_id) {
                continue;
            }
            let id = parse_comment(&row.comment).map(|(i, _)| i).unwrap_or("?");
            self.cancel(row.job_id, None).await;
            self.wait_released(row.job_id, RELEASE_WAIT).await;
            report
                .stopped_untracked
                .push(format!("Slurm job {} (instance {id}, {})", row.job_id, row.state));
        }
        self.lock().snapshot = Some(snap);
        self.ensure_poller();
        report
    }

    #[allow(clippy::disallowed_methods)] // Usage ages are real time.
    fn adopt_copy(&self, t: &TrackedInstance, job_id: u64, step_id: u32) {
        let node = t.handle.get("node").and_then(Value::as_str).unwrap_or("").to_string();
        let port = t.handle.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        self.lock().copies.insert(
            t.instance_id.clone(),
            CopyUsage {
                job_id,
                step_id,
                node,
                port,
                since: Instant::now(),
            },
        );
    }

    #[allow(clippy::disallowed_methods)] // Usage ages are real time.
    fn adopt(&self, t: &TrackedInstance, job_id: u64) {
        let node = t.handle.get("node").and_then(Value::as_str).unwrap_or("").to_string();
        let port = t.handle.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        self.lock().in_use.insert(
            t.instance_id.clone(),
            Usage {
                instance_type: t.instance_type.clone(),
                job_id,
                node,
                port,
                since: Instant::now(),
                watched: false,
            },
        );
    }
}

impl SlurmProvider {
    /// A provider for the spillway whose (canonical) data directory is `data_dir`.
    pub fn new(data_dir: &Path, cfg: &SlurmProviderConfig) -> Self {
        let work_dir = cfg.work_dir.clone().unwrap_or_else(|| data_dir.join("slurm"));
        Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                data_dir: data_dir.to_path_buf(),
                work_dir,
                ports: cfg.ports().ok().flatten(),
                uid: current_uid(),
                logs: None,
                spillway: None,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Captures every instance's output (what `srun` forwards of the model's stdout and
    /// stderr) into its log stream (`[logs]`): `srun` then runs under a shim on spillway's host.
    pub fn with_logs(mut self, logs: crate::logs::Settings) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.logs = Some(logs);
        }
        self
    }

    /// Runs shims with this spillway binary rather than the running executable (tests, whose
    /// executable is a test harness).
    pub fn with_spillway_binary(mut self, path: impl Into<PathBuf>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.spillway = Some(path.into());
        }
        self
    }

    /// The job steps of the copies this provider runs now, `(job, step)` by copy id.
    pub fn copy_steps(&self) -> BTreeMap<String, (u64, u32)> {
        self.inner
            .lock()
            .copies
            .iter()
            .map(|(k, c)| (k.clone(), (c.job_id, c.step_id)))
            .collect()
    }

    /// Slurm job ids of the instances this provider runs now, by instance id.
    pub fn jobs(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .in_use
            .iter()
            .map(|(k, u)| (k.clone(), u.job_id))
            .collect()
    }
}

/// The real uid of this process (for `squeue --user`), from `/proc/self/status`.
fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "0".into())
}

impl CapacityProvider for SlurmProvider {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move { self.inner.launch(&req).await })
    }

    fn launch_copy(&self, req: CopyLaunchRequest) -> BoxFuture<'_, Result<Launched, LaunchError>> {
        Box::pin(async move { self.inner.launch_copy(&req).await })
    }

    fn terminate<'a>(&'a self, instance_id: &'a str, handle: &'a Value, grace: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            // A copy: only its step goes; the host's allocation stays.
            if let (Some(job_id), Some(step_id)) = (job_id_of(handle), step_id_of(handle)) {
                inner.terminate_copy(instance_id, job_id, step_id, grace).await;
                let _ = tokio::fs::remove_dir_all(inner.instance_dir(instance_id).join("model")).await;
                return;
            }
            let job_id = job_id_of(handle).or_else(|| inner.lock().in_use.get(instance_id).map(|u| u.job_id));
            if let Some(job_id) = job_id {
                // SIGTERM to the model; the step ends, and with it (through the srun wrapper)
                // the allocation. Then cancel whatever is left after the grace.
                inner.cancel(job_id, Some("TERM")).await;
                inner.wait_step_gone(job_id, grace).await;
                inner.cancel(job_id, None).await;
                if !inner.wait_released(job_id, RELEASE_WAIT).await {
                    tracing::warn!(job_id, "Slurm job still holds resources after scancel");
                }
            }
            inner.release(instance_id);
            let _ = tokio::fs::remove_dir_all(inner.instance_dir(instance_id).join("model")).await;
        })
    }

    fn liveness(&self, instance_id: &str, handle: &Value) -> Liveness {
        match (job_id_of(handle), step_id_of(handle)) {
            (Some(job_id), Some(step_id)) => self.inner.copy_liveness(instance_id, job_id, step_id),
            _ => self.inner.liveness(instance_id, handle),
        }
    }

    fn recover<'a>(&'a self, tracked: &'a [TrackedInstance]) -> BoxFuture<'a, Recovery> {
        Box::pin(async move { self.inner.recover(tracked).await })
    }

    fn capacity(&self) -> Vec<CapacityEntry> {
        let st = self.inner.lock();
        let mut types: Vec<String> = self
            .inner
            .cfg
            .instance_types
            .keys()
            .chain(st.runtime_pins.keys())
            .cloned()
            .chain(st.in_use.values().map(|u| u.instance_type.clone()))
            .collect();
        types.sort();
        types.dedup();
        types
            .into_iter()
            .map(|t| CapacityEntry {
                in_use: st.in_use.values().filter(|u| u.instance_type == t).count() as u32,
                slots: st.runtime_pins.get(&t).copied(),
                pinned_by: st.runtime_pins.contains_key(&t).then_some("runtime"),
                accounted_against: if st.runtime_pins.contains_key(&t) {
                    "slots"
                } else {
                    "partition"
                },
                instance_type: t,
            })
            .collect()
    }

    fn set_slots(&self, instance_type: &str, slots: Option<u32>) {
        let mut st = self.inner.lock();
        match slots {
            Some(s) => st.runtime_pins.insert(instance_type.to_string(), s),
            None => st.runtime_pins.remove(instance_type),
        };
    }

    /// Never: the handle's `srunPid` is the `srun` client on spillway's host, while the model runs
    /// under `slurmstepd` on the compute node (even when that node is this host, the model is
    /// not a descendant of `srun`). Sampling `srun` would report the client's use, not the
    /// model's, so Slurm instances have no utilization metrics (docs/slurm.md).
    fn usage_target(&self, _handle: &Value) -> Option<crate::telemetry::usage::UsageTarget> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slurm's commands as shell scripts in a `bin_dir`: `salloc` grants job 77, `squeue` hangs
    /// (so a launch is stuck after the grant, as one cut off at its deadline is), `scancel`
    /// writes its arguments to `scancel.log`.
    fn fake_slurm(dir: &Path) -> SlurmProvider {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join("scancel.log");
        for (name, body) in [
            ("salloc", "echo 'salloc: Granted job allocation 77' >&2".to_string()),
            ("squeue", "exec sleep 60".to_string()),
            ("scancel", format!("echo \"$*\" >> '{}'", log.display())),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cfg = SlurmProviderConfig {
            bin_dir: Some(bin),
            instance_types: BTreeMap::from([(
                "ml.p5.48xlarge".to_string(),
                SlurmInstanceType {
                    partition: "h100x8".into(),
                    ..SlurmInstanceType::default()
                },
            )]),
            ..SlurmProviderConfig::default()
        };
        SlurmProvider::new(dir, &cfg)
    }

    /// The lines `scancel` was called with, once there are `n`.
    #[allow(clippy::disallowed_methods)] // Waits for a thread in real time.
    fn scancel_calls(dir: &Path, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls: Vec<String> = std::fs::read_to_string(dir.join("scancel.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            if calls.len() >= n || Instant::now() > deadline {
                return calls;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_launch_cut_off_after_salloc_cancels_its_job() {
        let t = tempfile::tempdir().unwrap();
        let p = fake_slurm(t.path());
        let req = LaunchRequest {
            instance_id: "i-cut".into(),
            endpoint_name: "e".into(),
            variant_name: "v".into(),
            instance_type: crate::core::catalog::lookup("ml.p5.48xlarge").unwrap(),
            model_name: "m".into(),
            container: crate::core::model::ContainerDefinition {
                image: Some("sleep 1000".into()),
                ..Default::default()
            },
            model_data: super::super::ModelDataLimits::default(),
        };
        // The controller's provisioning deadline: the launch is dropped while it waits on squeue.
        let cut = tokio::time::timeout(Duration::from_millis(500), p.launch(req)).await;
        assert!(cut.is_err(), "the launch was cut off: {cut:?}");
        assert_eq!(scancel_calls(t.path(), 1), ["--quiet 77"]);
        assert!(p.jobs().is_empty());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // A usage record's age.
    fn a_dropped_launch_guard_frees_the_port_and_cancels_by_id_or_name() {
        let t = tempfile::tempdir().unwrap();
        let p = fake_slurm(t.path());
        let guard = |job_id| LaunchGuard {
            inner: p.inner.clone(),
            instance_id: "i-cut".into(),
            job_name: "spillway-i-cut".into(),
            job_id,
            armed: true,
        };
        // The port of a derived-port launch is held from before srun starts.
        p.inner.lock().in_use.insert(
            "i-cut".into(),
            Usage {
                instance_type: "ml.p5.48xlarge".into(),
                job_id: 78,
                node: "n1".into(),
                port: 30001,
                since: Instant::now(),
                watched: false,
            },
        );
        drop(guard(Some(78)));
        assert!(p.jobs().is_empty(), "the port is free again");
        assert_eq!(scancel_calls(t.path(), 1), ["--quiet 78"]);
        // salloc killed at its timeout: it may have been granted a job it never named.
        drop(guard(None));
        let by_name = format!("--quiet --name=spillway-i-cut --user={}", p.inner.uid);
        assert_eq!(scancel_calls(t.path(), 2), ["--quiet 78".to_string(), by_name]);
        let mut done = guard(Some(79));
        done.armed = false;
        drop(done);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(scancel_calls(t.path(), 0).len(), 2, "a finished launch cancels nothing");
    }

    #[test]
    fn refusals_are_classified() {
        let ice = |s: &str| {
            matches!(
                classify_refusal("ml.p5.48xlarge", "h100x8", s),
                LaunchError::InsufficientCapacity(_)
            )
        };
        assert!(ice(
            "salloc: error: Unable to allocate resources: Requested nodes are busy"
        ));
        assert!(ice(
            "salloc: error: Unable to allocate resources: Immediate execution impossible, insufficient priority"
        ));
        assert!(ice(
            "salloc: error: Unable to allocate resources: Required node not available (down, drained or reserved)"
        ));
        assert!(ice(
            "salloc: error: Job submit/allocate failed: Requested node configuration is not available"
        ));
        assert!(!ice(
            "salloc: error: Job submit/allocate failed: Invalid partition name specified"
        ));
        assert!(!ice(
            "salloc: error: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!ice("salloc: error: Invalid authentication credential"));
        let LaunchError::InsufficientCapacity(m) =
            classify_refusal("t", "p", "salloc: error: Requested nodes are busy")
        else {
            panic!()
        };
        assert!(
            m.contains("Requested nodes are busy") && m.contains("partition p"),
            "{m}"
        );
    }

    #[test]
    fn salloc_and_scontrol_output_is_parsed() {
        assert_eq!(granted_job_id("salloc: Granted job allocation 42\n"), Some(42));
        assert_eq!(granted_job_id("salloc: error: nope"), None);
        assert_eq!(resv_port("StepId=1.0 ...\n   ResvPorts=20001\n"), Some(20001));
        assert_eq!(resv_port("   ResvPorts=20001-20002\n"), Some(20001));
        assert_eq!(resv_port("   ResvPorts=(null)\n"), None);
        let r = JobRow::parse("7|RUNNING|h100-1|None|spillway-i-1|spillway instance=i-1 data_dir=/d|x").unwrap();
        assert_eq!((r.job_id, r.state.as_str(), r.nodes.as_str()), (7, "RUNNING", "h100-1"));
        assert_eq!(parse_comment(&r.comment), Some(("i-1", "/d|x")));
        assert_eq!(parse_comment("(null)"), None);
        assert_eq!(
            parse_comment(&job_comment("i-2", Path::new("/a b/c"))),
            Some(("i-2", "/a b/c"))
        );
    }

    #[test]
    fn slurm_config_is_checked() {
        use crate::config::Config;
        let ok = "[provider]\nkind = \"slurm\"\n[provider.slurm]\nport_range = \"30000-30009\"\n\
                  [provider.slurm.instance_types.\"ml.p5.48xlarge\"]\npartition = \"h100x8\"\ngres = \"gpu:h100:8\"\n";
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.provider.kind, "slurm");
        assert_eq!(c.provider.slurm.ports().unwrap(), Some((30000, 30009)));
        let m = &c.provider.slurm.instance_types["ml.p5.48xlarge"];
        assert_eq!(
            (m.partition.as_str(), m.gres.as_deref()),
            ("h100x8", Some("gpu:h100:8"))
        );
        for bad in [
            "[provider]\nkind = \"k8s\"\n",
            "[provider.slurm.instance_types.\"ml.nope\"]\npartition = \"p\"\n",
            "[provider.slurm.instance_types.\"ml.p5.48xlarge\"]\npartition = \"\"\n",
            "[provider.slurm.instance_types.\"ml.p5.48xlarge\"]\npartition = \"p\"\ngpus = 8\n",
            "[provider.slurm]\nport_range = \"9-1\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    /// Runs the copy's node wrapper with `env` and a command that prints what it got.
    fn node_wrapper(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let o = std::process::Command::new("/bin/sh")
            .args(["-c", COPY_NODE_WRAPPER, "spillway-model", "/bin/sh", "-c"])
            .arg("echo \"$SAGEMAKER_BIND_TO_PORT|$CUDA_VISIBLE_DEVICES\"")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    #[test]
    fn the_copy_wrapper_maps_positions_to_the_steps_devices() {
        let port = ("SLURM_STEP_RESV_PORTS", "20005-20006");
        let got = node_wrapper(&[
            port,
            ("CUDA_VISIBLE_DEVICES", "4,5,6,7"),
            ("SPILLWAY_COPY_ACCELERATORS", "3,1"),
        ]);
        assert_eq!(got.1, "20005|7,5");
        let got = node_wrapper(&[port, ("CUDA_VISIBLE_DEVICES", "4"), ("SPILLWAY_COPY_ACCELERATORS", "0")]);
        assert_eq!(got.1, "20005|4");
        // No GRES: the positions are the devices.
        let got = node_wrapper(&[port, ("SPILLWAY_COPY_ACCELERATORS", "0,2")]);
        assert_eq!(got.1, "20005|0,2");
        // No accelerators: none visible, even when the job has some.
        let got = node_wrapper(&[
            port,
            ("CUDA_VISIBLE_DEVICES", "0,1"),
            ("SPILLWAY_COPY_ACCELERATORS", ""),
        ]);
        assert_eq!(got.1, "20005|");
        let (code, _, err) = node_wrapper(&[
            port,
            ("CUDA_VISIBLE_DEVICES", "0,1"),
            ("SPILLWAY_COPY_ACCELERATORS", "2"),
        ]);
        assert_eq!(code, Some(97));
        assert!(err.contains("position 2 is outside the job's devices (0,1)"), "{err}");
        let (code, _, err) = node_wrapper(&[("SPILLWAY_COPY_ACCELERATORS", "0")]);
        assert_eq!(code, Some(98), "{err}");
        let got = node_wrapper(&[("SAGEMAKER_BIND_TO_PORT", "31000"), ("SPILLWAY_COPY_ACCELERATORS", "1")]);
        assert_eq!(got.1, "31000|1");
    }

    #[test]
    fn copy_steps_are_parsed_and_requested() {
        let steps = Inner::parse_step_ids("12.0|spillway-i-1\n12.3|spillway-c-9\n12.extern|extern\nbad\n");
        assert_eq!(
            steps,
            HashMap::from([
                ((12, 0), "spillway-i-1".to_string()),
                ((12, 3), "spillway-c-9".to_string())
            ])
        );
        assert_eq!(Inner::parse_steps("12.0|x\n13.1|y\n"), HashSet::from([12, 13]));
        let a = copy_step_args(12, "spillway-c-9", 2.5, 512, Path::new("/w/c-9"), true);
        assert_eq!(
            a,
            [
                "--jobid=12",
                "--overlap",
                "--job-name=spillway-c-9",
                "--nodes=1",
                "--ntasks=1",
                "--cpus-per-task=3",
                "--mem=512M",
                "--input=none",
                "--export=ALL",
                "--chdir=/w/c-9",
                "--resv-ports=1"
            ]
        );
        let b = copy_step_args(12, "n", 0.25, 0, Path::new("/w"), false);
        assert!(b.contains(&"--cpus-per-task=1".to_string()) && !b.iter().any(|x| x.starts_with("--mem")));
        assert!(!b.contains(&"--resv-ports=1".to_string()));
    }

    #[test]
    fn derived_ports_avoid_used_ones() {
        let used: HashSet<u16> = [30002].into_iter().collect();
        assert_eq!(derived_port(2, (30000, 30003), &used), Some(30003));
        assert_eq!(derived_port(5, (30000, 30003), &HashSet::new()), Some(30001));
        let all: HashSet<u16> = (30000..=30001).collect();
        assert_eq!(derived_port(0, (30000, 30001), &all), None);
    }
}
