//! Per-instance resource utilization: the `CPUUtilization`, `MemoryUtilization`,
//! `GPUUtilization` and `GPUMemoryUtilization` that SageMaker publishes per instance in the
//! CloudWatch namespace `/aws/sagemaker/Endpoints`.
//!
//! A [`Sampler`] is handed, every `[metrics] usage_interval_seconds`, the instances whose
//! provider can say where they run on this host ([`UsageTarget`]: the root pid of the model's
//! process tree and the GPU indices assigned to it). One round reads `/proc` once and calls
//! `nvidia-smi` at most once, whatever the number of instances:
//!
//! - **CPU**: the instance's process tree is the root pid plus every descendant (found through
//!   the `ppid` of `/proc/<pid>/stat`). Its CPU time is Σ `utime + stime + cutime + cstime` over
//!   the tree (the children's times keep the sum steady when a child that a member waited for
//!   exits). `CPUUtilization` is the growth of that sum between two rounds divided by the wall
//!   time between them, ×100 per core: one busy core is 100, two are 200, as SageMaker reports
//!   0–100 × vCPUs. The first round of an instance has no CPU value yet.
//! - **Memory**: Σ `VmRSS` of `/proc/<pid>/status` over the tree. `MemoryUtilization` is that
//!   RSS against the host's `MemTotal` (`/proc/meminfo`) ×100: a local instance has no memory
//!   limit of its own (the instance type's memory is only used to decide whether it fits), so the
//!   host's memory is what it can run out of.
//! - **GPU**: one `nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total` per
//!   round, only when some instance has GPUs and `nvidia-smi` exists. `GPUUtilization` is the sum
//!   of `utilization.gpu` over the instance's GPUs (0–100 × GPUs) and `GPUMemoryUtilization` the
//!   sum of `memory.used / memory.total ×100`. An instance without GPUs has no GPU values.
//!
//! Parsing is pure (file contents in, numbers out) and never panics on odd `/proc` content: a
//! process whose files cannot be read or parsed is left out, as if it had just exited.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::telemetry::metrics::{UsageSample, UsageSeries};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`). Linux fixes it at 100
/// for user space on every architecture (the kernel's own `HZ` may differ; `USER_HZ` does not).
pub const USER_HZ: f64 = 100.0;

/// The `nvidia-smi` arguments of one GPU sample.
pub const NVIDIA_SMI_QUERY: &[&str] = &[
    "--query-gpu=index,utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
];

/// Where one instance's resource use can be measured on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTarget {
    /// The root of the instance's process tree (the model's process, or its wrapper).
    pub pid: i32,
    /// The GPUs the instance was given (`nvidia-smi` indices, as in `CUDA_VISIBLE_DEVICES`).
    pub gpus: Vec<u32>,
}

/// Why a `/proc/<pid>/stat` line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatError {
    /// The pid before the command name is missing or not a number.
    #[error("no pid at the start of the stat line")]
    Pid,
    /// No command name in parentheses.
    #[error("no command name in parentheses")]
    Comm,
    /// A numeric field after the command name is missing or not a number.
    #[error("field {0} is missing or not a number")]
    Field(&'static str),
}

/// The members of `/proc/<pid>/stat` the sampler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// User and system time of the process plus its waited-for children, in [`USER_HZ`] ticks.
    pub cpu_ticks: u64,
    /// Start time after boot in ticks: tells a reused pid from the process seen before.
    pub start_time: u64,
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so the fields after it are located from the *last* `)`.
pub fn parse_stat(contents: &str) -> Result<ProcStat, StatError> {
    let open = contents.find('(').ok_or(StatError::Comm)?;
    let close = contents.rfind(')').filter(|c| *c > open).ok_or(StatError::Comm)?;
    let pid = contents[..open].trim().parse().map_err(|_| StatError::Pid)?;
    // Field 3 (state) is rest[0]; field n is rest[n - 3].
    let rest: Vec<&str> = contents[close + 1..].split_whitespace().collect();
    let state = rest
        .first()
        .and_then(|s| s.chars().next())
        .ok_or(StatError::Field("state"))?;
    let field = |n: usize, name: &'static str| -> Result<i64, StatError> {
        rest.get(n - 3)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(StatError::Field(name))
    };
    let ticks = |n, name| field(n, name).map(|v| v.max(0) as u64);
    Ok(ProcStat {
        pid,
        ppid: field(4, "ppid")? as i32,
        state,
        cpu_ticks: ticks(14, "utime")?
            .saturating_add(ticks(15, "stime")?)
            .saturating_add(ticks(16, "cutime")?)
            .saturating_add(ticks(17, "cstime")?),
        start_time: ticks(22, "starttime")?,
    })
}

/// `VmRSS` of a `/proc/<pid>/status`, in bytes. `None` when absent (kernel threads, zombies).
pub fn parse_status_rss(contents: &str) -> Option<u64> {
    kib_field(contents, "VmRSS:")
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(contents: &str) -> Option<u64> {
    kib_field(contents, "MemTotal:")
}

/// A `Key:   1234 kB` line, in bytes.
fn kib_field(contents: &str, key: &str) -> Option<u64> {
    let line = contents.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// CPU utilization in percent of one core (×100 per busy core) from two readings of a process
/// tree's CPU ticks `elapsed_s` seconds apart. A shrinking sum (a member exited without being
/// waited for by another member) counts as no use. `None` when no time passed.
pub fn cpu_percent(prev_ticks: u64, ticks: u64, elapsed_s: f64) -> Option<f64> {
    (elapsed_s.is_finite() && elapsed_s > 0.0)
        .then(|| ticks.saturating_sub(prev_ticks) as f64 / USER_HZ / elapsed_s * 100.0)
}

/// Every process of a `/proc` scan, with the parent → children relation.
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<i32, ProcStat>,
    children: HashMap<i32, Vec<i32>>,
}

impl ProcTable {
    /// A table of the given processes.
    pub fn new(stats: impl IntoIterator<Item = ProcStat>) -> Self {
        let mut t = Self::default();
        for s in stats {
            t.children.entry(s.ppid).or_default().push(s.pid);
            t.procs.insert(s.pid, s);
        }
        t
    }

    /// Reads `<proc_root>/<pid>/stat` of every process; unreadable or unparsable ones (a process
    /// that exited during the scan) are left out.
    pub fn read(proc_root: &Path) -> Self {
        let Ok(entries) = std::fs::read_dir(proc_root) else {
            return Self::default();
        };
        Self::new(entries.flatten().filter_map(|e| {
            e.file_name().to_str()?.parse::<u32>().ok()?;
            parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?).ok()
        }))
    }

    /// A process by pid.
    pub fn get(&self, pid: i32) -> Option<&ProcStat> {
        self.procs.get(&pid)
    }

    /// `root` and all its descendants, root first; empty when `root` is not running (absent or
    /// a zombie).
    pub fn tree(&self, root: i32) -> Vec<i32> {
        if self.procs.get(&root).is_none_or(|p| matches!(p.state, 'Z' | 'X')) {
            return vec![];
        }
        let mut seen = HashSet::from([root]);
        let mut out = vec![root];
        let mut queue = VecDeque::from([root]);
        while let Some(p) = queue.pop_front() {
            for c in self.children.get(&p).into_iter().flatten() {
                // `seen` guards against a cycle in inconsistent input (pid 0 as its own parent).
                if seen.insert(*c) {
                    out.push(*c);
                    queue.push_back(*c);
                }
            }
        }
        out
    }

    /// Σ CPU ticks over `pids`.
    pub fn cpu_ticks(&self, pids: &[i32]) -> u64 {
        pids.iter()
            .filter_map(|p| self.procs.get(p))
            .fold(0u64, |s, p| s.saturating_add(p.cpu_ticks))
    }
}

/// One GPU of an `nvidia-smi` sample. `None` for a value the driver reports as `[N/A]` or
/// `[Not Supported]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// `nvidia-smi` index.
    pub index: u32,
    /// `utilization.gpu`, percent.
    pub utilization: Option<f64>,
    /// `memory.used`, MiB.
    pub memory_used: Option<f64>,
    /// `memory.total`, MiB.
    pub memory_total: Option<f64>,
}

/// Parses the output of `nvidia-smi` with [`NVIDIA_SMI_QUERY`] (one `index, util, used, total`
/// line per GPU). Lines without a numeric index are skipped.
pub fn parse_nvidia_smi(out: &str) -> Vec<GpuReading> {
    let value = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GpuReading {
                index: f[0].trim().parse().ok()?,
                utilization: value(f[1]),
                memory_used: value(f[2]),
                memory_total: value(f[3]),
            })
        })
        .collect()
}

/// `(GPUUtilization, GPUMemoryUtilization)` of an instance with the GPUs `gpus`: sums over its
/// GPUs of their utilization and of used / total memory ×100. Either is `None` when none of its
/// GPUs reported that value.
pub fn gpu_usage(readings: &[GpuReading], gpus: &[u32]) -> (Option<f64>, Option<f64>) {
    let mine = || readings.iter().filter(|r| gpus.contains(&r.index));
    let sum = |vals: Vec<f64>| (!vals.is_empty()).then(|| vals.iter().sum());
    let util = sum(mine().filter_map(|r| r.utilization).collect());
    let mem = sum(mine()
        .filter_map(|r| match (r.memory_used, r.memory_total) {
            (Some(u), Some(t)) if t > 0.0 => Some(u / t * 100.0),
            _ => None,
        })
        .collect());
    (util, mem)
}

/// One instance to sample: the labels its numbers are recorded under and where it runs.
#[derive(Debug, Clone)]
pub struct InstanceTarget {
    /// Endpoint, variant, instance type and instance id.
    pub series: UsageSeries,
    /// Its process tree and GPUs.
    pub target: UsageTarget,
    /// The process trees and GPUs of the inference-component copies it hosts: an instance's
    /// utilization is its own and its copies' together, as on one machine.
    pub copies: Vec<UsageTarget>,
}

impl InstanceTarget {
    /// Every GPU of the instance and its copies.
    fn gpus(&self) -> Vec<u32> {
        let mut g: Vec<u32> = self
            .target
            .gpus
            .iter()
            .chain(self.copies.iter().flat_map(|c| &c.gpus))
            .copied()
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }
}

/// What one round found.
#[derive(Debug, Default)]
pub struct Round {
    /// One sample per instance whose process tree is running.
    pub samples: Vec<(UsageSeries, UsageSample)>,
    /// Instances sampled before that are gone (no longer handed in, or their process ended):
    /// their gauges should be removed.
    pub gone: Vec<UsageSeries>,
}

/// The previous reading of one instance.
#[derive(Debug, Clone)]
struct Previous {
    series: UsageSeries,
    pid: i32,
    start_time: u64,
    /// The copies' tree roots (pid, start time) counted with it: a CPU delta is taken only over
    /// the same set, never across a copy that came or went.
    copies: Vec<(i32, u64)>,
    ticks: u64,
    at: Instant,
}

/// Whether `nvidia-smi` is worth calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuProbe {
    /// Not called yet, or it answered last time.
    Usable,
    /// It failed last time (warned once).
    Failing,
    /// It is not installed: never called again.
    Missing,
}

/// Keeps what is needed between rounds: the previous CPU reading of each instance.
#[derive(Debug)]
pub struct Sampler {
    proc_root: PathBuf,
    previous: HashMap<String, Previous>,
    gpu: GpuProbe,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new(Path::new("/proc"))
    }
}

impl Sampler {
    /// A sampler reading the `/proc` at `proc_root`.
    pub fn new(proc_root: &Path) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            previous: HashMap::new(),
            gpu: GpuProbe::Usable,
        }
    }

    /// Whether a round has anything to do (instances to sample or state to drop).
    pub fn idle(&self, targets: &[InstanceTarget]) -> bool {
        targets.is_empty() && self.previous.is_empty()
    }

    /// One round: reads `/proc` and, when an instance has GPUs, `nvidia-smi`. Blocking: call it
    /// off the async worker threads.
    pub fn sample(&mut self, targets: &[InstanceTarget], now: Instant) -> Round {
        let table = ProcTable::read(&self.proc_root);
        let mem_total = std::fs::read_to_string(self.proc_root.join("meminfo"))
            .ok()
            .and_then(|s| parse_mem_total(&s));
        let gpus = if targets.iter().any(|t| !t.gpus().is_empty()) {
            self.read_gpus()
        } else {
            None
        };
        let root = self.proc_root.clone();
        let rss = |pid: i32| {
            std::fs::read_to_string(root.join(pid.to_string()).join("status"))
                .ok()
                .and_then(|s| parse_status_rss(&s))
        };
        self.sample_with(targets, &table, rss, mem_total, gpus.as_deref(), now)
    }

    /// The round's logic over readings already taken: `rss` answers a pid's resident bytes,
    /// `mem_total` is the host's memory in bytes, `gpus` the `nvidia-smi` readings if any.
    pub fn sample_with(
        &mut self,
        targets: &[InstanceTarget],
        table: &ProcTable,
        rss: impl Fn(i32) -> Option<u64>,
        mem_total: Option<u64>,
        gpus: Option<&[GpuReading]>,
        now: Instant,
    ) -> Round {
        let mut round = Round::default();
        let mut current: HashMap<String, Previous> = HashMap::with_capacity(targets.len());
        for t in targets {
            let id = &t.series.instance;
            let mut tree = table.tree(t.target.pid);
            let Some(root) = table.get(t.target.pid).filter(|_| !tree.is_empty()) else {
                continue;
            };
            let mut copies = vec![];
            for c in &t.copies {
                let sub = table.tree(c.pid);
                if let Some(r) = table.get(c.pid).filter(|_| !sub.is_empty()) {
                    copies.push((r.pid, r.start_time));
                    tree.extend(sub);
                }
            }
            tree.sort_unstable();
            tree.dedup();
            copies.sort_unstable();
            let ticks = table.cpu_ticks(&tree);
            let cpu = self
                .previous
                .get(id)
                .filter(|p| p.pid == root.pid && p.start_time == root.start_time && p.copies == copies)
                .and_then(|p| cpu_percent(p.ticks, ticks, now.saturating_duration_since(p.at).as_secs_f64()));
            let rss_bytes = tree.iter().filter_map(|p| rss(*p)).fold(0u64, u64::saturating_add);
            let memory = mem_total
                .filter(|m| *m > 0)
                .map(|m| rss_bytes as f64 / m as f64 * 100.0);
            let all_gpus = t.gpus();
            let (gpu, gpu_memory) = match gpus {
                Some(r) if !all_gpus.is_empty() => gpu_usage(r, &all_gpus),
                _ => (None, None),
            };
            round.samples.push((
                t.series.clone(),
                UsageSample {
                    cpu_percent: cpu,
                    memory_percent: memory,
                    rss_bytes: Some(rss_bytes),
                    gpu_percent: gpu,
                    gpu_memory_percent: gpu_memory,
                },
            ));
            current.insert(
                id.clone(),
                Previous {
                    series: t.series.clone(),
                    pid: root.pid,
                    start_time: root.start_time,
                    copies,
                    ticks,
                    at: now,
                },
            );
        }
        for (id, p) in self.previous.drain() {
            if !current.contains_key(&id) {
                round.gone.push(p.series);
            }
        }
        self.previous = current;
        round
    }

    fn read_gpus(&mut self) -> Option<Vec<GpuReading>> {
        if self.gpu == GpuProbe::Missing {
            return None;
        }
        match run_nvidia_smi(NVIDIA_SMI_QUERY) {
            Ok(out) => {
                if self.gpu == GpuProbe::Failing {
                    tracing::info!("nvidia-smi answers again; GPU utilization is sampled");
                }
                self.gpu = GpuProbe::Usable;
                Some(parse_nvidia_smi(&out))
            }
            Err(NvidiaSmiError::NotFound) => {
                tracing::info!("nvidia-smi is not installed: no GPU utilization metrics");
                self.gpu = GpuProbe::Missing;
                None
            }
            Err(e) => {
                if self.gpu != GpuProbe::Failing {
                    tracing::warn!(error = %e, "nvidia-smi failed: no GPU utilization metrics until it answers");
                }
                self.gpu = GpuProbe::Failing;
                None
            }
        }
    }
}

/// How long one `nvidia-smi` call may take (a wedged driver can make it hang).
pub const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `nvidia-smi` gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum NvidiaSmiError {
    /// It is not installed (not on `PATH`).
    #[error("nvidia-smi is not installed")]
    NotFound,
    /// It could not be started.
    #[error("cannot run nvidia-smi: {0}")]
    Spawn(std::io::Error),
    /// It exited unsuccessfully.
    #[error("nvidia-smi exited with {0}")]
    Exit(std::process::ExitStatus),
    /// It did not answer within [`NVIDIA_SMI_TIMEOUT`] and was killed.
    #[error("nvidia-smi did not answer within {} s", NVIDIA_SMI_TIMEOUT.as_secs())]
    Timeout,
}

/// Runs `nvidia-smi` with `args` and returns its standard output; killed after
/// [`NVIDIA_SMI_TIMEOUT`]. Blocking: GPU detection at start-up and the usage sampler (on a
/// blocking thread) both use it.
#[allow(clippy::disallowed_methods)] // A blocking child-process timeout on a plain thread, in real time.
pub fn run_nvidia_smi(args: &[&str]) -> Result<String, NvidiaSmiError> {
    use std::io::Read;
    let mut child = std::process::Command::new("nvidia-smi")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NvidiaSmiError::NotFound,
            _ => NvidiaSmiError::Spawn(e),
        })?;
    // Read on a thread so that a large answer cannot fill the pipe and stall the child.
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    let deadline = std::time::Instant::now() + NVIDIA_SMI_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(reader.join().unwrap_or_default()),
            Ok(Some(status)) => return Err(NvidiaSmiError::Exit(status)),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NvidiaSmiError::Timeout);
            }
            Err(e) => return Err(NvidiaSmiError::Spawn(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A stat line as the kernel writes it: 52 fields, `comm` in parentheses.
    fn stat_line(pid: i32, comm: &str, state: char, ppid: i32, utime: u64, stime: u64, start: u64) -> String {
        let mut f: Vec<String> = vec![
            pid.to_string(),
            format!("({comm})"),
            state.to_string(),
            ppid.to_string(),
        ];
        // Fields 5..=13: pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt.
        f.extend(["1", "1", "0", "-1", "4194560", "100", "0", "0", "0"].map(String::from));
        f.extend([utime, stime].map(|v| v.to_string()));
        // 16..=21: cutime cstime priority nice num_threads itrealvalue.
        f.extend(["3", "2", "20", "0", "4", "0"].map(String::from));
        f.push(start.to_string());
        // 23..=52.
        f.extend(std::iter::repeat_n("0".to_string(), 30));
        f.join(" ") + "\n"
    }

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let s = parse_stat(&stat_line(42, "python3", 'S', 1, 150, 50, 9000)).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 42,
                ppid: 1,
                state: 'S',
                cpu_ticks: 150 + 50 + 3 + 2,
                start_time: 9000
            }
        );
        for comm in ["my server", "a) b (c", "((x))", ") R 7 ", ""] {
            let s = parse_stat(&stat_line(7, comm, 'R', 3, 10, 0, 1)).unwrap();
            assert_eq!(
                (s.pid, s.ppid, s.state, s.cpu_ticks, s.start_time),
                (7, 3, 'R', 15, 1),
                "{comm:?}"
            );
        }
        // Real kernel output (a Ray worker with a space and parentheses in its name).
        let real = "2351 (ray::IDLE (x)) S 2302 2302 2302 0 -1 4194560 64536 0 0 0 412 97 0 0 20 0 26 0 \
                    4467 6263767040 76214 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 17 1 0 0 \
                    0 0 0 0 0 0 0 0 0 0 0";
        let s = parse_stat(real).unwrap();
        assert_eq!((s.pid, s.ppid, s.cpu_ticks, s.start_time), (2351, 2302, 509, 4467));
    }

    #[test]
    fn bad_stat_lines_are_errors_not_panics() {
        assert_eq!(parse_stat(""), Err(StatError::Comm));
        assert_eq!(parse_stat("12 no parens S 1"), Err(StatError::Comm));
        assert_eq!(parse_stat("x (a) S 1"), Err(StatError::Pid));
        assert_eq!(parse_stat("12 (a)"), Err(StatError::Field("state")));
        assert_eq!(parse_stat("12 (a) S"), Err(StatError::Field("ppid")));
        assert_eq!(parse_stat("12 (a) S 1 2 3"), Err(StatError::Field("utime")));
        assert_eq!(parse_stat(")12 ( S 1"), Err(StatError::Comm));
        let mut bad = stat_line(1, "a", 'S', 0, 5, 5, 1);
        bad = bad.replace(" 5 5 ", " 5 x ");
        assert_eq!(parse_stat(&bad), Err(StatError::Field("stime")));
        // Negative child times (never written by Linux) count as zero.
        let neg = stat_line(1, "a", 'S', 0, 5, 5, 1).replace(" 3 2 20 ", " -3 2 20 ");
        assert_eq!(parse_stat(&neg).unwrap().cpu_ticks, 12);
    }

    #[test]
    fn status_and_meminfo() {
        let status = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  123456 kB\n\
                      VmRSS:\t   20480 kB\nRssAnon:\t   10000 kB\n";
        assert_eq!(parse_status_rss(status), Some(20480 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\nState:\tS (sleeping)\n"), None);
        assert_eq!(parse_status_rss("VmRSS:\tlots kB\n"), None);
        let meminfo = "MemTotal:       16303428 kB\nMemFree:         1210340 kB\nMemAvailable:    9876543 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(16_303_428 * 1024));
        assert_eq!(parse_mem_total(""), None);
    }

    #[test]
    fn cpu_percent_is_per_core() {
        // 200 ticks (2 s of CPU) in 1 s: two busy cores.
        assert_eq!(cpu_percent(1000, 1200, 1.0), Some(200.0));
        assert_eq!(cpu_percent(1000, 1050, 5.0), Some(10.0));
        assert_eq!(cpu_percent(1000, 900, 1.0), Some(0.0));
        assert_eq!(cpu_percent(0, 100, 0.0), None);
        assert_eq!(cpu_percent(0, 100, f64::NAN), None);
    }

    fn proc(pid: i32, ppid: i32, ticks: u64) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            state: 'S',
            cpu_ticks: ticks,
            start_time: 100,
        }
    }

    #[test]
    fn process_trees_include_every_descendant() {
        let t = ProcTable::new([
            proc(1, 0, 0),
            proc(10, 1, 5),
            proc(11, 10, 7),
            proc(12, 11, 11),
            proc(13, 10, 13),
            proc(20, 1, 1000),
            ProcStat {
                state: 'Z',
                ..proc(30, 1, 1)
            },
        ]);
        let mut tree = t.tree(10);
        assert_eq!(tree[0], 10);
        tree.sort();
        assert_eq!(tree, vec![10, 11, 12, 13]);
        assert_eq!(t.cpu_ticks(&tree), 36);
        assert!(t.tree(99).is_empty());
        assert!(t.tree(30).is_empty(), "a zombie is not running");
        // Pid 0 listed as its own parent does not loop.
        let odd = ProcTable::new([proc(0, 0, 1), proc(5, 0, 1)]);
        assert_eq!(odd.tree(0).len(), 2);
    }

    #[test]
    fn the_real_proc_holds_this_process() {
        let t = ProcTable::read(Path::new("/proc"));
        let me = std::process::id() as i32;
        assert_eq!(t.tree(me).first(), Some(&me));
        assert!(ProcTable::read(Path::new("/nonexistent")).tree(me).is_empty());
    }

    #[test]
    fn nvidia_smi_output_parses_with_missing_values() {
        let out = "0, 87, 40536, 81559\n\
                   1, [N/A], 1, 81559\n\
                   2, 5, [Not Supported], [Not Supported]\n\
                   3, 100, 81000, 0\n\
                   garbage line\n\
                   , 1, 2, 3\n\n";
        let r = parse_nvidia_smi(out);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            GpuReading {
                index: 0,
                utilization: Some(87.0),
                memory_used: Some(40536.0),
                memory_total: Some(81559.0)
            }
        );
        assert_eq!(r[1].utilization, None);
        assert_eq!((r[2].memory_used, r[2].memory_total), (None, None));

        let (util, mem) = gpu_usage(&r, &[0, 1]);
        assert_eq!(util, Some(87.0));
        let want = 40536.0 / 81559.0 * 100.0 + 1.0 / 81559.0 * 100.0;
        assert!((mem.unwrap() - want).abs() < 1e-9);
        // A GPU without a memory reading, one with total 0, one absent from the output.
        assert_eq!(gpu_usage(&r, &[2]), (Some(5.0), None));
        assert_eq!(gpu_usage(&r, &[3]), (Some(100.0), None));
        assert_eq!(gpu_usage(&r, &[7]), (None, None));
        assert_eq!(gpu_usage(&r, &[]), (None, None));
        assert!(parse_nvidia_smi("").is_empty());
    }

    fn target(id: &str, pid: i32, gpus: Vec<u32>) -> InstanceTarget {
        InstanceTarget {
            series: UsageSeries {
                endpoint: "e".into(),
                variant: "v".into(),
                instance_type: "ml.g6.2xlarge".into(),
                instance: id.into(),
            },
            target: UsageTarget { pid, gpus },
            copies: vec![],
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // The sampler is fed real instants.
    fn an_instance_counts_the_copies_it_hosts_and_no_delta_spans_a_copy_that_came() {
        let mut s = Sampler::new(Path::new("/nonexistent"));
        let t0 = Instant::now();
        let rss = |pid: i32| Some(pid as u64);
        let mut host = target("h", 10, vec![]);
        host.copies = vec![UsageTarget { pid: 30, gpus: vec![1] }];
        let gpus = parse_nvidia_smi("0, 10, 1, 2\n1, 80, 4, 8\n");
        // The host agent (10) and a copy (30, with a child 31), which is not the host's child.
        let first = ProcTable::new([proc(10, 1, 10), proc(30, 1, 100), proc(31, 30, 100)]);
        let r = s.sample_with(std::slice::from_ref(&host), &first, rss, None, Some(&gpus), t0);
        assert_eq!(r.samples[0].1.rss_bytes, Some(10 + 30 + 31));
        assert_eq!(
            r.samples[0].1.gpu_percent,
            Some(80.0),
            "the copy's GPU is the instance's"
        );
        let second = ProcTable::new([proc(10, 1, 10), proc(30, 1, 200), proc(31, 30, 200)]);
        let r = s.sample_with(
            std::slice::from_ref(&host),
            &second,
            rss,
            None,
            None,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            r.samples[0].1.cpu_percent,
            Some(200.0),
            "the copy's CPU is the instance's"
        );
        // A second copy arrives with its whole lifetime of ticks: no delta this round.
        host.copies.push(UsageTarget { pid: 40, gpus: vec![] });
        let third = ProcTable::new([proc(10, 1, 10), proc(30, 1, 300), proc(31, 30, 300), proc(40, 1, 5000)]);
        let r = s.sample_with(
            std::slice::from_ref(&host),
            &third,
            rss,
            None,
            None,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(r.samples[0].1.cpu_percent, None);
        let fourth = ProcTable::new([proc(10, 1, 10), proc(30, 1, 300), proc(31, 30, 300), proc(40, 1, 5100)]);
        let r = s.sample_with(
            std::slice::from_ref(&host),
            &fourth,
            rss,
            None,
            None,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(r.samples[0].1.cpu_percent, Some(100.0));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // The sampler is fed real instants.
    fn rounds_compute_deltas_and_forget_instances_that_went_away() {
        let mut s = Sampler::new(Path::new("/nonexistent"));
        let t0 = Instant::now();
        let gib = 1024 * 1024 * 1024;
        let rss = |pid: i32| Some(pid as u64 * 1024 * 1024);
        let targets = vec![target("a", 10, vec![0]), target("b", 20, vec![])];
        let gpus = parse_nvidia_smi("0, 50, 8000, 16000\n1, 90, 1, 2\n");

        let first = ProcTable::new([proc(10, 1, 100), proc(11, 10, 100), proc(20, 1, 0)]);
        let r = s.sample_with(&targets, &first, rss, Some(2 * gib), Some(&gpus), t0);
        assert!(r.gone.is_empty());
        let a = &r.samples[0].1;
        assert_eq!(a.cpu_percent, None, "the first round has no delta");
        assert_eq!(a.rss_bytes, Some(21 * 1024 * 1024));
        assert!((a.memory_percent.unwrap() - 21.0 / 2048.0 * 100.0).abs() < 1e-9);
        assert_eq!((a.gpu_percent, a.gpu_memory_percent), (Some(50.0), Some(50.0)));
        let b = &r.samples[1].1;
        assert_eq!((b.gpu_percent, b.gpu_memory_percent), (None, None));

        // 2 s later: a's tree used 300 ticks (3 s of CPU: 150 %), and a child appeared.
        let second = ProcTable::new([proc(10, 1, 250), proc(11, 10, 200), proc(12, 11, 50), proc(20, 1, 20)]);
        let r = s.sample_with(&targets, &second, rss, None, None, t0 + Duration::from_secs(2));
        assert_eq!(r.samples[0].1.cpu_percent, Some(150.0));
        assert_eq!(r.samples[0].1.memory_percent, None, "no MemTotal, no percentage");
        assert_eq!(r.samples[0].1.rss_bytes, Some(33 * 1024 * 1024));
        assert_eq!(r.samples[1].1.cpu_percent, Some(10.0));

        // b's pid is reused by another process (new start time): no delta across it. a is no
        // longer handed in: gone.
        let third = ProcTable::new([ProcStat {
            start_time: 999,
            ..proc(20, 1, 5000)
        }]);
        let r = s.sample_with(&targets[1..], &third, rss, None, None, t0 + Duration::from_secs(3));
        assert_eq!(r.samples.len(), 1);
        assert_eq!(r.samples[0].1.cpu_percent, None);
        assert_eq!(r.gone.iter().map(|g| g.instance.as_str()).collect::<Vec<_>>(), ["a"]);

        // b's process ended: gone, and nothing left to do.
        let r = s.sample_with(
            &targets[1..],
            &ProcTable::default(),
            rss,
            None,
            None,
            t0 + Duration::from_secs(4),
        );
        assert!(r.samples.is_empty());
        assert_eq!(r.gone.len(), 1);
        assert!(s.idle(&[]));
    }
}
