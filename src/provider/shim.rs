//! The per-instance supervisor ("shim") of the local provider: `spillway instance-shim [options]
//! -- <model argv>`, the process spillway starts for each instance, which starts the model and
//! makes sure nothing of it outlives the instance.
//!
//! - It is a **child subreaper** (`PR_SET_CHILD_SUBREAPER`): a descendant whose parent dies (a
//!   double fork, `setsid child &`, `env -i ... &`) is reparented to the shim instead of to
//!   init, so it stays findable by `ppid` whatever it does to its environment, session or group.
//! - It starts the model **in its own process group**, with the open-file soft limit spillway
//!   started with (`--nofile`; spillway raises its own to the hard limit, which a model should
//!   not inherit), and forwards `SIGTERM` and `SIGINT` to that group.
//! - When the model exits, or `--grace-seconds` after the first stop signal, or at once on a
//!   second one, it **SIGKILLs the model's group and every process of its own tree** (found by
//!   `ppid` in `/proc`, again and again until none is left: a killed parent's children are
//!   reparented to the shim and found in the next round), reaps them, writes the model's status
//!   to `--status-file` and exits **as the model did**: with its exit code, or killed by the same
//!   signal (without a core dump), so the status spillway reads is the model's.
//!
//! - With `--log-dir` it **captures the model's stdout and stderr** ([`crate::logs::capture`]):
//!   both are one pipe read by a thread of the shim, every line stamped and appended to the
//!   instance's log stream, bounded by `--log-max-bytes` and rotated; a line that cannot be
//!   written in time is dropped and counted, never waited for. Its own messages go to the stream
//!   too. When the model is gone it waits (2 s at most) for the pipe to end, writes what is
//!   left (5 s at most) and marks the stream ended, before it writes the status and exits.
//!
//! It is not in the data path: requests go straight to the model's port. It blocks its signals
//! and waits on a `signalfd`, so it costs nothing between events (its log threads, started after
//! the signals are blocked, sleep on their pipes). It does not ask to die with
//! spillway (no `PR_SET_PDEATHSIG`): instances outlive a crash of spillway and are adopted by the
//! next start, through the shim's pid and environment (the model's, with `SPILLWAY_INSTANCE_ID`).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid};

use crate::logs::capture::{Capture, Notifier};
use crate::telemetry::usage::ProcTable;

/// The hidden subcommand that runs the shim.
pub const SUBCOMMAND: &str = "instance-shim";

/// How long the final sweep keeps killing before it gives up on processes that do not die
/// (stuck in uninterruptible sleep).
const SWEEP_LIMIT: Duration = Duration::from_secs(10);

/// What the shim is told on its command line (`spillway instance-shim --help` lists it; the
/// subcommand is hidden).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ShimOptions {
    /// The open-file soft limit the model starts with (default: the shim's own).
    #[arg(long)]
    pub nofile: Option<u64>,
    /// Where the model's exit status is written when it has exited (read by a later spillway
    /// that adopted the instance and so cannot wait for the shim).
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Seconds the model has between the first stop signal and SIGKILL when nobody sends a
    /// second one (spillway does, after the grace it was handed).
    #[arg(long, default_value_t = 30)]
    pub grace_seconds: u64,
    /// Capture the model's stdout and stderr into the log stream in this directory (see
    /// `crate::logs`); without it the model writes to the shim's own stdout and stderr.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The most bytes the log stream keeps (rotated beyond it).
    #[arg(long, default_value_t = crate::config::DEFAULT_LOG_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Internal: become the model (after unblocking the signals the shim blocks, which a child
    /// inherits) instead of supervising it.
    #[arg(long, hide = true)]
    pub exec: bool,
    /// The model's command line, after `--`.
    #[arg(last = true, required = true)]
    pub argv: Vec<OsString>,
}

impl ShimOptions {
    /// The arguments of `spillway instance-shim` for these options (after the subcommand).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![];
        if let Some(n) = self.nofile {
            a.push("--nofile".into());
            a.push(n.to_string().into());
        }
        if let Some(f) = &self.status_file {
            a.push("--status-file".into());
            a.push(f.into());
        }
        a.push("--grace-seconds".into());
        a.push(self.grace_seconds.to_string().into());
        if let Some(d) = &self.log_dir {
            a.push("--log-dir".into());
            a.push(d.into());
        }
        a.push("--log-max-bytes".into());
        a.push(self.log_max_bytes.to_string().into());
        if self.exec {
            a.push("--exec".into());
        }
        a.push("--".into());
        a.extend(self.argv.iter().cloned());
        a
    }
}

static MODEL_NOFILE: OnceLock<u64> = OnceLock::new();

/// Records the open-file soft limit spillway started with, before it raises its own: model
/// processes get this one back. Only the first call counts.
pub fn set_model_nofile(soft: u64) {
    let _ = MODEL_NOFILE.set(soft);
}

/// The open-file soft limit model processes start with: the one recorded by
/// [`set_model_nofile`], else this process's current one.
pub fn model_nofile() -> Option<u64> {
    MODEL_NOFILE
        .get()
        .copied()
        .or_else(|| getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft))
}

/// Runs the shim; returns the exit code when it does not end by re-raising the model's signal.
pub fn run(opts: &ShimOptions) -> i32 {
    if opts.exec {
        return become_model(&opts.argv);
    }
    match Shim::start(opts) {
        Ok(mut shim) => {
            shim.supervise(Duration::from_secs(opts.grace_seconds));
            shim.sweep();
            if let Some(capture) = shim.capture.take() {
                let status = shim
                    .exit_status()
                    .map_or_else(|| "the model's status is unknown".to_string(), |s| s.to_string());
                capture.finish(LOG_DRAIN, &status);
            }
            shim.finish(opts.status_file.as_deref())
        }
        Err(code) => code,
    }
}

/// How long the shim waits, once the model is gone, for its output pipe to end (a process that
/// survived SIGKILL may hold it open); the writer then has up to
/// [`crate::logs::capture::WRITE_WAIT`] for the last lines.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Where the shim's own messages also go: the instance's log stream, when it captures one.
static NOTES: OnceLock<Notifier> = OnceLock::new();

fn say(msg: std::fmt::Arguments<'_>) {
    let line = format!("spillway instance-shim[{}]: {msg}", std::process::id());
    eprintln!("{line}");
    if let Some(n) = NOTES.get() {
        n.note(&line);
    }
}

struct Shim {
    signals: SignalFd,
    model: Pid,
    status: Option<WaitStatus>,
    capture: Option<Capture>,
}

impl Shim {
    fn start(opts: &ShimOptions) -> Result<Self, i32> {
        let Some(program) = opts.argv.first() else {
            say(format_args!("no model command line after --"));
            return Err(2);
        };
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            // Without it, escaped descendants go to init; spillway's /proc scan is the only net.
            say(format_args!("cannot become a child subreaper: {e}"));
        }
        let mut set = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
            set.add(s);
        }
        let signals = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .and_then(|()| SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK))
            .map_err(|e| {
                say(format_args!("cannot take its signals: {e}"));
                125
            })?;
        if let Some(soft) = opts.nofile
            && let Ok((cur, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
            && soft != cur
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)
        {
            say(format_args!("cannot set the open-file soft limit to {soft}: {e}"));
        }
        // A child inherits the blocked signals, and std does not unblock them: the model is
        // started through this binary again (`--exec`), which unblocks them and becomes the model
        // (same pid, the new process group). /proc/self/exe is this binary even if the file was
        // replaced since.
        let trampoline = ShimOptions {
            nofile: None,
            status_file: None,
            grace_seconds: 0,
            log_dir: None,
            log_max_bytes: opts.log_max_bytes,
            exec: true,
            argv: opts.argv.clone(),
        };
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg(SUBCOMMAND).args(trampoline.to_args()).process_group(0);
        // The log threads start now that the signals are blocked (they inherit the mask).
        let capture = opts.log_dir.as_deref().and_then(|dir| {
            let mut capture = Capture::start(dir, opts.log_max_bytes);
            // One pipe for both, so the lines keep the order the model wrote them in.
            match capture.pipe().and_then(|out| Ok((out.try_clone()?, out))) {
                Ok((err, out)) => {
                    cmd.stdout(out).stderr(err);
                    let _ = NOTES.set(capture.notifier());
                    Some(capture)
                }
                Err(e) => {
                    say(format_args!(
                        "cannot capture the model's output into {}: {e}; it goes to the shim's own",
                        dir.display()
                    ));
                    capture.finish(Duration::ZERO, "not captured");
                    None
                }
            }
        });
        // `cmd` holds the pipes' write ends: dropped with it once the model has them.
        let child = cmd.spawn();
        drop(cmd);
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                say(format_args!("cannot start {program:?}: {e}"));
                if let Some(c) = capture {
                    c.finish(LOG_DRAIN, "the shim could not start the model");
                }
                return Err(126);
            }
        };
        let model = Pid::from_raw(child.id() as i32);
        // Reaped with waitpid below, never through `child`.
        drop(child);
        Ok(Self {
            signals,
            model,
            status: None,
            capture,
        })
    }

    /// How the model ended, once it has.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let raw = match self.status {
            Some(WaitStatus::Exited(_, code)) => (code & 0xff) << 8,
            Some(WaitStatus::Signaled(_, sig, core)) => sig as i32 | if core { 0x80 } else { 0 },
            _ => return None,
        };
        Some(std::process::ExitStatus::from_raw(raw))
    }

    /// Reaps every exited child, keeping the model's status.
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(ws) => {
                    if ws.pid() == Some(self.model) && matches!(ws, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        self.status = Some(ws);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    say(format_args!("waitpid: {e}"));
                    return;
                }
            }
        }
    }

    /// Sends `sig` to the model's process group (or to the model, when it left the group).
    fn signal_model(&self, sig: Signal) {
        if getpgid(Some(self.model)) == Ok(self.model) {
            let _ = killpg(self.model, sig);
        } else {
            let _ = kill(self.model, sig);
            let _ = killpg(self.model, sig);
        }
    }

    /// Waits until the model exits or a stop runs out of time (`grace` after the first stop
    /// signal, at once on the second).
    fn supervise(&mut self, grace: Duration) {
        let mut deadline: Option<Instant> = None;
        loop {
            self.reap();
            if self.status.is_some() {
                return;
            }
            #[allow(clippy::disallowed_methods)] // A stop's grace is real time.
            let now = Instant::now();
            let timeout = match deadline {
                Some(d) if d <= now => {
                    say(format_args!(
                        "the model did not exit within the grace period; killing it"
                    ));
                    return;
                }
                // Rounded up: a poll that wakes a little early only loops once more.
                Some(d) => PollTimeout::try_from((d - now).as_millis() + 1).unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            match poll(&mut [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)], timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    say(format_args!("poll: {e}; stopping the model"));
                    return;
                }
            }
            while let Ok(Some(info)) = self.signals.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if sig == Signal::SIGCHLD {
                    continue;
                }
                if deadline.is_some() {
                    say(format_args!("{sig} again: killing the model now"));
                    return;
                }
                self.signal_model(sig);
                #[allow(clippy::disallowed_methods)] // A stop's grace is real time.
                let now = Instant::now();
                deadline = Some(now + grace);
            }
        }
    }

    /// SIGKILLs the model's group and every process of the shim's tree until none is left.
    fn sweep(&mut self) {
        let _ = killpg(self.model, Signal::SIGKILL);
        let me = std::process::id() as i32;
        #[allow(clippy::disallowed_methods)] // Real time: processes dying.
        let started = Instant::now();
        let mut killed = std::collections::HashSet::new();
        loop {
            self.reap();
            let left = live_descendants(me);
            if left.is_empty() {
                break;
            }
            if started.elapsed() > SWEEP_LIMIT {
                say(format_args!("processes {left:?} survive SIGKILL; leaving them"));
                break;
            }
            for p in &left {
                if kill(Pid::from_raw(*p), Signal::SIGKILL).is_ok() && *p != self.model.as_raw() {
                    killed.insert(*p);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap();
        if !killed.is_empty() {
            let mut killed: Vec<i32> = killed.into_iter().collect();
            killed.sort_unstable();
            say(format_args!("killed processes the model left behind: {killed:?}"));
        }
    }

    /// Writes the status and exits as the model did.
    fn finish(self, status_file: Option<&Path>) -> i32 {
        let Some(status) = self.exit_status() else {
            say(format_args!("the model's status is unknown"));
            return 125;
        };
        if let Some(f) = status_file {
            let _ = std::fs::write(f, format!("{status}\n"));
        }
        match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => {
                if let Ok(sig) = Signal::try_from(sig) {
                    // No core file of the shim; then die by the model's signal, which is no
                    // longer blocked and has its default action (std ignores SIGPIPE: that one
                    // ends in the exit code below).
                    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                    let mut one = SigSet::empty();
                    one.add(sig);
                    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
                    let _ = nix::sys::signal::raise(sig);
                }
                128 + sig
            }
            (None, None) => 125,
        }
    }
}

/// The model's side of `--exec`: unblocks every signal and replaces this process with the model
/// (std resets `SIGPIPE`, which it ignores, to its default); returns only when that fails.
fn become_model(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return 2;
    };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let e = std::process::Command::new(program).args(args).exec();
    say(format_args!("cannot start {program:?}: {e}"));
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Every live (not zombie) descendant of `root`.
fn live_descendants(root: i32) -> Vec<i32> {
    let table = ProcTable::read(Path::new("/proc"));
    table
        .tree(root)
        .into_iter()
        .filter(|p| *p != root)
        .filter(|p| table.get(*p).is_some_and(|s| !matches!(s.state, 'Z' | 'X')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        shim: ShimOptions,
    }

    fn parse(args: Vec<OsString>) -> Result<ShimOptions, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once(OsString::from("instance-shim")).chain(args)).map(|c| c.shim)
    }

    proptest::proptest! {
        /// Whatever the model's command line (flags of its own, `--`, odd bytes), the shim reads
        /// back exactly the options spillway wrote.
        #[test]
        fn options_round_trip_through_the_command_line(
            argv in proptest::collection::vec("[ -~]{0,12}", 1..6),
            nofile in proptest::option::of(0u64..1 << 20),
            status in proptest::option::of("/[a-z/]{1,20}"),
            grace in 0u64..100_000,
            exec in proptest::bool::ANY,
            log_dir in proptest::option::of("/[a-z/]{1,20}"),
            log_max_bytes in 0u64..1 << 40,
        ) {
            let opts = ShimOptions {
                nofile,
                status_file: status.map(PathBuf::from),
                grace_seconds: grace,
                log_dir: log_dir.map(PathBuf::from),
                log_max_bytes,
                exec,
                argv: argv.iter().map(OsString::from).collect(),
            };
            proptest::prop_assert_eq!(parse(opts.to_args()).unwrap(), opts);
        }
    }

    #[test]
    fn a_missing_model_command_line_is_refused() {
        assert!(parse(vec!["--nofile".into(), "5".into()]).is_err());
        assert!(parse(vec!["--".into()]).is_err());
        assert!(parse(vec!["--grace-seconds".into(), "x".into(), "--".into(), "m".into()]).is_err());
    }
}
