//! Provider conformance: the same assertions against every capacity provider.
//!
//! - launch → the instance answers `/ping` 200 → a second launch of a full type is
//!   *insufficient capacity* → terminate frees the capacity (the port closes, the next launch
//!   succeeds);
//! - insufficient capacity is distinct from failure (an unavailable type is a capacity answer, a
//!   broken command line is a failure);
//! - after a "restart" (a fresh provider on the same data dir), `recover` adopts the tracked
//!   instance and stops the untracked one.
//!
//! - copies of inference components: a host runs the `builtin:host` agent, two copies on it get
//!   disjoint devices and their own environment, terminating one leaves the other and the host
//!   serving, and recovery adopts the tracked copy and stops an untracked one.
//!
//! The local provider always runs. The Slurm test is `#[ignore]`d, so a plain `cargo test` or
//! `cargo nextest run` reports it as skipped; `scripts/slurm/test.sh` starts a cluster (it
//! exports `SLURM_CONF`) and runs it with `--include-ignored`, and without a cluster it fails.

#![allow(clippy::disallowed_methods)] // Real processes and Slurm jobs start and stop in real time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spillway::config::{LocalProviderConfig, SlurmInstanceType, SlurmProviderConfig};
use spillway::core::catalog;
use spillway::core::model::ContainerDefinition;
use spillway::provider::local::{Host, LocalProvider};
use spillway::provider::slurm::SlurmProvider;
use spillway::provider::{
    CapacityProvider, CopyLaunchRequest, LaunchError, LaunchRequest, Launched, Liveness, ModelDataLimits,
    TrackedInstance,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The instance types a provider under test offers.
struct Case {
    /// A type with exactly one slot.
    one_slot: &'static str,
    /// A type with exactly two slots.
    two_slots: &'static str,
    /// A type that is never available.
    unavailable: &'static str,
}

fn echo_image() -> String {
    format!("{} builtin-model echo", env!("CARGO_BIN_EXE_spillway"))
}

fn request(id: &str, itype: &str, image: &str) -> LaunchRequest {
    LaunchRequest {
        instance_id: id.to_string(),
        endpoint_name: "conformance".into(),
        variant_name: "AllTraffic".into(),
        instance_type: catalog::lookup(itype).expect("catalog type"),
        model_name: "echo".into(),
        container: ContainerDefinition {
            image: Some(image.to_string()),
            ..ContainerDefinition::default()
        },
        model_data: ModelDataLimits::default(),
    }
}

/// `GET /ping` status, or `None` when nothing answers.
async fn ping(address: &str) -> Option<u16> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(address).await.ok()?;
        s.write_all(format!("GET /ping HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

async fn wait_ping(address: &str, want_up: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ping(address).await;
        if (status == Some(200)) == want_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {address} /ping is {status:?}, wanted {}",
            if want_up { "200" } else { "closed" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn launch_ok(p: &dyn CapacityProvider, id: &str, itype: &str) -> Launched {
    match p.launch(request(id, itype, &echo_image())).await {
        Ok(l) => l,
        Err(e) => panic!("[{}] launch {id} of {itype}: {e:?}", p.kind()),
    }
}

fn tracked(id: &str, itype: &str, l: &Launched) -> TrackedInstance {
    TrackedInstance {
        instance_id: id.into(),
        instance_type: itype.into(),
        handle: l.handle.clone(),
        host: None,
    }
}

const GRACE: Duration = Duration::from_secs(5);

/// Launch, ping, full type is ICE, terminate frees capacity.
async fn launch_ping_terminate(p: &dyn CapacityProvider, case: &Case) {
    let kind = p.kind();
    let a = launch_ok(p, "i-conf-a", case.one_slot).await;
    wait_ping(&a.address, true, &format!("[{kind}] first instance")).await;
    let full = p.launch(request("i-conf-b", case.one_slot, &echo_image())).await;
    assert!(
        matches!(full, Err(LaunchError::InsufficientCapacity(_))),
        "[{kind}] a second {} must be insufficient capacity: {full:?}",
        case.one_slot
    );
    let t = Instant::now();
    p.terminate("i-conf-a", &a.handle, GRACE).await;
    assert!(
        t.elapsed() < GRACE + Duration::from_secs(3),
        "[{kind}] terminate took {:?}",
        t.elapsed()
    );
    wait_ping(&a.address, false, &format!("[{kind}] terminated instance")).await;
    let b = launch_ok(p, "i-conf-b", case.one_slot).await;
    wait_ping(&b.address, true, &format!("[{kind}] instance on the freed capacity")).await;
    p.terminate("i-conf-b", &b.handle, GRACE).await;
}

/// Capacity answers and failures are different errors.
async fn ice_is_not_failure(p: &dyn CapacityProvider, case: &Case) {
    let kind = p.kind();
    let t = Instant::now();
    let ice = p.launch(request("i-conf-c", case.unavailable, &echo_image())).await;
    assert!(
        matches!(&ice, Err(LaunchError::InsufficientCapacity(m)) if m.contains(case.unavailable)),
        "[{kind}] {}: {ice:?}",
        case.unavailable
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "[{kind}] ICE took {:?}",
        t.elapsed()
    );
    let broken = p
        .launch(request("i-conf-d", case.two_slots, "python3 'unbalanced"))
        .await;
    assert!(
        matches!(broken, Err(LaunchError::Failed(_))),
        "[{kind}] a broken command line is a failure: {broken:?}"
    );
    // The failure reserved nothing: both slots are still there.
    let x = launch_ok(p, "i-conf-x", case.two_slots).await;
    let y = launch_ok(p, "i-conf-y", case.two_slots).await;
    p.terminate("i-conf-x", &x.handle, GRACE).await;
    p.terminate("i-conf-y", &y.handle, GRACE).await;
}

/// A fresh provider (a restarted spillway) adopts what is tracked and stops the rest.
async fn recover_adopts_and_stops(p: &dyn CapacityProvider, again: &dyn CapacityProvider, case: &Case) {
    let kind = p.kind();
    let a = launch_ok(p, "i-conf-keep", case.two_slots).await;
    let b = launch_ok(p, "i-conf-stray", case.two_slots).await;
    wait_ping(&a.address, true, &format!("[{kind}] tracked")).await;
    wait_ping(&b.address, true, &format!("[{kind}] untracked")).await;
    let rec = again.recover(&[tracked("i-conf-keep", case.two_slots, &a)]).await;
    assert_eq!(rec.alive, vec!["i-conf-keep".to_string()], "[{kind}] {rec:?}");
    assert_eq!(rec.stopped_untracked.len(), 1, "[{kind}] {rec:?}");
    assert!(rec.stopped_untracked[0].contains("i-conf-stray"), "[{kind}] {rec:?}");
    wait_ping(&b.address, false, &format!("[{kind}] stopped untracked instance")).await;
    assert_eq!(
        ping(&a.address).await,
        Some(200),
        "[{kind}] adopted instance keeps serving"
    );
    let used: u32 = again
        .capacity()
        .iter()
        .filter(|e| e.instance_type == case.two_slots)
        .map(|e| e.in_use)
        .sum();
    assert_eq!(used, 1, "[{kind}] the adopted instance is counted");
    // The untracked instance's slot is free again; the adopted one still holds its own.
    let c = launch_ok(again, "i-conf-new", case.two_slots).await;
    let full = again.launch(request("i-conf-z", case.two_slots, &echo_image())).await;
    assert!(
        matches!(full, Err(LaunchError::InsufficientCapacity(_))),
        "[{kind}] {full:?}"
    );
    again.terminate("i-conf-keep", &a.handle, GRACE).await;
    again.terminate("i-conf-new", &c.handle, GRACE).await;
    wait_ping(&a.address, false, &format!("[{kind}] adopted instance after terminate")).await;
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let p = std::fs::canonicalize(t.path()).expect("canonical");
    (t, p)
}

fn local(dir: &Path) -> LocalProvider {
    let cfg = LocalProviderConfig {
        capacity: BTreeMap::from([
            ("ml.m5.xlarge".to_string(), 1),
            ("ml.c5.xlarge".to_string(), 2),
            ("ml.g6e.2xlarge".to_string(), 0),
            ("ml.g5.12xlarge".to_string(), 1),
        ]),
        ..LocalProviderConfig::default()
    };
    let host = Host {
        cpus: 2.0,
        memory_gib: 8.0,
        gpus: vec![],
    };
    LocalProvider::new(dir, &cfg, host).with_spillway_binary(env!("CARGO_BIN_EXE_spillway"))
}

const LOCAL: Case = Case {
    one_slot: "ml.m5.xlarge",
    two_slots: "ml.c5.xlarge",
    unavailable: "ml.g6e.2xlarge",
};

/// A copy of component `component` on `host` at accelerator `positions`, running echo.
fn copy_request(copy_id: &str, host: &str, host_type: &str, l: &Launched, positions: &[u32]) -> CopyLaunchRequest {
    CopyLaunchRequest {
        copy_id: copy_id.into(),
        endpoint_name: "conformance".into(),
        variant_name: "AllTraffic".into(),
        component: format!("ic-{copy_id}"),
        host_instance_id: host.into(),
        host_handle: l.handle.clone(),
        instance_type: catalog::lookup(host_type).expect("catalog type"),
        accelerators: positions.to_vec(),
        cpus: 0.5,
        memory_mb: 100,
        model_name: "echo".into(),
        container: ContainerDefinition {
            image: Some(echo_image()),
            ..ContainerDefinition::default()
        },
        model_data: ModelDataLimits::default(),
    }
}

/// `POST /invocations` answer: (status, body).
async fn invoke(address: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(address).await.expect("connect");
    let req = format!(
        "POST /invocations HTTP/1.1\r\nHost: {address}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![];
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

async fn copy_ok(p: &dyn CapacityProvider, id: &str, host_type: &str, h: &Launched, positions: &[u32]) -> Launched {
    match p.launch_copy(copy_request(id, "i-host", host_type, h, positions)).await {
        Ok(l) => l,
        Err(e) => panic!("[{}] copy {id}: {e:?}", p.kind()),
    }
}

/// Copies of inference components on a host: `devices` is what `CUDA_VISIBLE_DEVICES` the
/// copies at positions `[2]` and `[0, 3]` of a 4-device host must see.
async fn copies_share_their_host(
    p: &dyn CapacityProvider,
    again: &dyn CapacityProvider,
    host_type: &str,
    devices: [&str; 2],
) {
    let kind = p.kind();
    let host_image = format!("{} builtin-model host", env!("CARGO_BIN_EXE_spillway"));
    let h = match p.launch(request("i-host", host_type, &host_image)).await {
        Ok(l) => l,
        Err(e) => panic!("[{kind}] host launch: {e:?}"),
    };
    wait_ping(&h.address, true, &format!("[{kind}] host agent")).await;
    let (status, body) = invoke(&h.address).await;
    assert_eq!(status, 400, "[{kind}] the host agent refuses invocations: {body}");
    assert!(body.contains("InferenceComponentName"), "[{kind}] {body}");

    let a = copy_ok(p, "c-a", host_type, &h, &[2]).await;
    let b = copy_ok(p, "c-b", host_type, &h, &[0, 3]).await;
    for (id, l, dev) in [("c-a", &a, devices[0]), ("c-b", &b, devices[1])] {
        wait_ping(&l.address, true, &format!("[{kind}] copy {id}")).await;
        let env = invoke_env(&l.address).await;
        for (k, want) in [
            ("SPILLWAY_INSTANCE_ID", id),
            ("SPILLWAY_HOST_INSTANCE_ID", "i-host"),
            ("SPILLWAY_INFERENCE_COMPONENT", &format!("ic-{id}")),
            ("SPILLWAY_INSTANCE_TYPE", host_type),
            ("SPILLWAY_COPY_CPUS", "0.5"),
            ("SPILLWAY_COPY_MEMORY_MB", "100"),
            ("SPILLWAY_MODEL_NAME", "echo"),
            ("CUDA_VISIBLE_DEVICES", dev),
        ] {
            assert_eq!(env[k].as_str(), Some(want), "[{kind}] {k} of {id} in {env}");
        }
    }
    assert_ne!(a.address, b.address, "[{kind}] each copy has its own port");
    // A position outside the host's devices is a failure, not a capacity answer.
    let devices_of_type = catalog::lookup(host_type)
        .and_then(|t| t.accelerator.as_ref())
        .map_or(0, |a| a.count);
    let bad = p
        .launch_copy(copy_request("c-bad", "i-host", host_type, &h, &[devices_of_type]))
        .await;
    let outside = format!("position {devices_of_type} is outside");
    assert!(
        matches!(&bad, Err(LaunchError::Failed(m)) if m.contains(&outside)),
        "[{kind}] {bad:?}"
    );
    // Copies hold no capacity of their own: the host is the one instance of its type.
    let used = |q: &dyn CapacityProvider| -> u32 {
        q.capacity()
            .iter()
            .filter(|e| e.instance_type == host_type)
            .map(|e| e.in_use)
            .sum()
    };
    assert_eq!(used(p), 1, "[{kind}] copies are not instances");
    // A host handle that names no process or job of that instance is unusable.
    let stale = Launched {
        handle: serde_json::json!({"pid": std::process::id(), "jobId": 999_999, "port": 1}),
        address: h.address.clone(),
    };
    let r = p
        .launch_copy(copy_request("c-stale", "i-host", host_type, &stale, &[0]))
        .await;
    assert!(
        matches!(&r, Err(LaunchError::Failed(m)) if m.contains("i-host")),
        "[{kind}] {r:?}"
    );

    p.terminate("c-a", &a.handle, GRACE).await;
    wait_ping(&a.address, false, &format!("[{kind}] terminated copy")).await;
    assert_eq!(ping(&b.address).await, Some(200), "[{kind}] the other copy serves on");
    assert_eq!(ping(&h.address).await, Some(200), "[{kind}] the host serves on");
    assert_eq!(p.liveness("c-b", &b.handle), Liveness::Running, "[{kind}]");
    // The terminated copy is reported gone (Slurm: by the next poll).
    wait_exited(p, "c-a", &a).await;

    // A restarted spillway adopts the host and its tracked copy, stops an untracked copy.
    let c = copy_ok(p, "c-stray", host_type, &h, &[1]).await;
    wait_ping(&c.address, true, &format!("[{kind}] untracked copy")).await;
    let copy_tracked = TrackedInstance {
        host: Some("i-host".into()),
        ..tracked("c-b", host_type, &b)
    };
    let rec = again.recover(&[tracked("i-host", host_type, &h), copy_tracked]).await;
    let mut alive = rec.alive.clone();
    alive.sort();
    assert_eq!(alive, ["c-b", "i-host"], "[{kind}] {rec:?}");
    assert_eq!(rec.stopped_untracked.len(), 1, "[{kind}] {rec:?}");
    assert!(rec.stopped_untracked[0].contains("c-stray"), "[{kind}] {rec:?}");
    wait_ping(&c.address, false, &format!("[{kind}] stopped untracked copy")).await;
    assert_eq!(ping(&b.address).await, Some(200), "[{kind}] the adopted copy serves on");
    assert_eq!(used(again), 1, "[{kind}] the adopted copy reserved no capacity");
    assert_eq!(again.liveness("c-b", &b.handle), Liveness::Running, "[{kind}]");
    again.terminate("c-b", &b.handle, GRACE).await;
    wait_ping(&b.address, false, &format!("[{kind}] adopted copy after terminate")).await;
    again.terminate("i-host", &h.handle, GRACE).await;
    wait_ping(&h.address, false, &format!("[{kind}] host after terminate")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_copies_share_their_host() {
    let (_t, dir) = data_dir();
    // A pinned 4-GPU type on a host without GPUs: the copies count logical devices.
    copies_share_their_host(&local(&dir), &local(&dir), "ml.g5.12xlarge", ["2", "0,3"]).await;
}

/// The bound on each stream of [`output_is_captured`].
const LOG_BOUND: u64 = 64 * 1024;

fn log_settings(dir: &Path) -> spillway::logs::Settings {
    spillway::logs::Settings {
        root: spillway::logs::root(dir),
        max_bytes_per_instance: LOG_BOUND,
    }
}

/// The instance's output is captured into its log stream under `dir` (see [`log_settings`]):
/// stdout and stderr, the last lines included and the stream marked ended with the model's
/// status by the time the provider says the instance exited; a chatty model's stream stays
/// within its bound and keeps the latest lines.
async fn output_is_captured(p: &dyn CapacityProvider, case: &Case, dir: &Path) {
    use spillway::logs::format::{Position, segment_file, segments};
    use spillway::logs::store::Cursor;
    let kind = p.kind();
    let lines = |id: &str| -> Vec<String> {
        let stream = spillway::logs::root(dir).join("conformance").join(id);
        Cursor::open(&stream, Position::ORIGIN).map(|e| e.message).collect()
    };
    // It waits a second before it speaks: on Slurm a model that exits at once can end before
    // srun reports its step started, which is a launch failure (a different path, not this one).
    let image = "sh -c 'sleep 1; echo first; echo second >&2; echo third; echo last words >&2; exit 3'";
    let a = match p.launch(request("i-conf-logs", case.two_slots, image)).await {
        Ok(l) => l,
        Err(e) => panic!("[{kind}] launch: {e:?}"),
    };
    let status = wait_exited(p, "i-conf-logs", &a).await;
    assert!(status.contains("exit"), "[{kind}] {status}");
    let got = lines("i-conf-logs");
    let model: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|l| ["first", "second", "third", "last words"].contains(l))
        .collect();
    if kind == "local" {
        // One pipe for both: the model's own order.
        assert_eq!(model, ["first", "second", "third", "last words"], "{got:?}");
    } else {
        // srun forwards stdout and stderr separately.
        assert_eq!(model.len(), 4, "[{kind}] {got:?}");
    }
    let stream = spillway::logs::root(dir).join("conformance").join("i-conf-logs");
    let ended = std::fs::read_to_string(stream.join("ended")).expect("the stream is marked ended");
    assert!(ended.contains('3'), "[{kind}] ended: {ended}");
    p.terminate("i-conf-logs", &a.handle, GRACE).await;

    let chatty = "sh -c 'yes 0123456789abcdef0123456789abcdef | head -n 50000; echo done'";
    let b = p
        .launch(request("i-conf-chatty", case.two_slots, chatty))
        .await
        .expect("launch");
    wait_exited(p, "i-conf-chatty", &b).await;
    let stream = spillway::logs::root(dir).join("conformance").join("i-conf-chatty");
    let on_disk: u64 = segments(&stream)
        .expect("segments")
        .iter()
        .map(|s| std::fs::metadata(stream.join(segment_file(*s))).expect("segment").len())
        .sum();
    assert!(on_disk <= LOG_BOUND, "[{kind}] {on_disk} bytes on disk");
    let got = lines("i-conf-chatty");
    assert_eq!(got.last().map(String::as_str), Some("done"), "[{kind}]");
    assert!(
        got.len() > 100 && got.len() < 50_000,
        "[{kind}] {} lines kept",
        got.len()
    );
    p.terminate("i-conf-chatty", &b.handle, GRACE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_output_is_captured_into_the_log_stream() {
    let (_t, dir) = data_dir();
    output_is_captured(&local(&dir).with_logs(log_settings(&dir)), &LOCAL, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_provider_conforms() {
    let (_t, dir) = data_dir();
    let p = local(&dir);
    launch_ping_terminate(&p, &LOCAL).await;
    ice_is_not_failure(&p, &LOCAL).await;
    recover_adopts_and_stops(&p, &local(&dir), &LOCAL).await;
}

/// Recovery stops what spillway started and no record tracks, never a process that merely
/// inherited `SPILLWAY_DATA_DIR` without an instance id (an operator's tool next to the server).
#[tokio::test]
async fn local_recovery_leaves_processes_without_an_instance_id_alone() {
    let (_t, dir) = data_dir();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env("SPILLWAY_DATA_DIR", &dir)
        .env_remove("SPILLWAY_INSTANCE_ID")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let r = local(&dir).recover(&[]).await;
    assert!(
        running(pid),
        "a process without SPILLWAY_INSTANCE_ID was stopped: {:?}",
        r.stopped_untracked
    );
    assert!(r.stopped_untracked.is_empty(), "{:?}", r.stopped_untracked);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The cluster of `scripts/slurm/cluster.sh`: a100x4 (2 nodes x 4 GPUs), h100x8 (1 node x 8).
/// Whether a process runs (exists and is not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

/// A pid a model wrote into its instance directory (its working directory).
async fn pid_file(dir: &Path, id: &str, name: &str) -> i32 {
    let path = dir.join("instances").join(id).join(name);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(pid: i32, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while running(pid) {
        assert!(Instant::now() < deadline, "{what}: pid {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A model that clears its environment and double-forks: the child has no `SPILLWAY_*`
/// variable to be found by, its own session, and init (not the model) as its parent's parent.
fn escaping_image(then: &str) -> String {
    format!("sh -c 'env -i setsid sh -c \"sleep 3001 & echo \\$! > escaped.pid\"; {then}'")
}

/// Issue 12: a descendant that cleared its environment before a double fork survived
/// DeleteEndpoint (it was found only by its environment). The shim reaps it as a subreaper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_descendants_that_clear_their_environment_are_stopped() {
    let (_t, dir) = data_dir();
    let p = local(&dir);
    let image = escaping_image(&format!("exec {}", echo_image()));
    let a = p
        .launch(request("i-esc-a", "ml.c5.xlarge", &image))
        .await
        .expect("launch");
    wait_ping(&a.address, true, "escaping model").await;
    let escaped = pid_file(&dir, "i-esc-a", "escaped.pid").await;
    assert!(running(escaped), "the escaped child runs");
    let environ = std::fs::read(format!("/proc/{escaped}/environ")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&environ).contains("SPILLWAY_INSTANCE_ID"),
        "the escaped child has no identity in its environment"
    );
    p.terminate("i-esc-a", &a.handle, GRACE).await;
    wait_gone(escaped, Duration::from_secs(5), "after terminate").await;

    // A model that exits by itself takes what it left behind with it, and its status is the
    // model's: an exit code, or the signal that killed it.
    let b = p
        .launch(request("i-esc-b", "ml.c5.xlarge", &escaping_image("sleep 0.3; exit 3")))
        .await
        .expect("launch");
    let escaped = pid_file(&dir, "i-esc-b", "escaped.pid").await;
    wait_gone(escaped, Duration::from_secs(10), "after the model exited").await;
    let status = wait_exited(&p, "i-esc-b", &b).await;
    assert_eq!(status, "process exited with exit status: 3");
    // A later spillway that adopted the instance cannot wait for it; the shim left the status.
    assert_eq!(
        local(&dir).liveness("i-esc-b", &b.handle),
        Liveness::Exited("process exited with exit status: 3".into())
    );
    p.terminate("i-esc-b", &b.handle, GRACE).await;

    let c = p
        .launch(request("i-esc-c", "ml.c5.xlarge", "sh -c 'sleep 0.3; kill -KILL $$'"))
        .await
        .expect("launch");
    let status = wait_exited(&p, "i-esc-c", &c).await;
    assert_eq!(status, "process exited with signal: 9 (SIGKILL)");
    p.terminate("i-esc-c", &c.handle, GRACE).await;
}

async fn wait_exited(p: &dyn CapacityProvider, id: &str, l: &Launched) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Liveness::Exited(s) = p.liveness(id, &l.handle) {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A model that ignores SIGTERM is killed after the grace, with what it left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_models_that_ignore_sigterm_are_killed_after_the_grace() {
    let (_t, dir) = data_dir();
    let p = local(&dir);
    let image = escaping_image("trap \"\" TERM; echo $$ > model.pid; while :; do sleep 0.05; done");
    let a = p
        .launch(request("i-stubborn", "ml.c5.xlarge", &image))
        .await
        .expect("launch");
    let escaped = pid_file(&dir, "i-stubborn", "escaped.pid").await;
    let model = pid_file(&dir, "i-stubborn", "model.pid").await;
    let t = Instant::now();
    let grace = Duration::from_secs(1);
    p.terminate("i-stubborn", &a.handle, grace).await;
    assert!(t.elapsed() >= grace, "the model had its grace: {:?}", t.elapsed());
    assert!(
        t.elapsed() < grace + Duration::from_secs(3),
        "terminate took {:?}",
        t.elapsed()
    );
    wait_gone(model, Duration::from_secs(2), "the model after terminate").await;
    wait_gone(escaped, Duration::from_secs(2), "its escaped child after terminate").await;
}

/// spillway raises its open-file soft limit to the hard limit; models start with the one it
/// was given. Returns the model's (soft, hard) limits.
async fn models_start_with_the_original_open_file_limit(p: &dyn CapacityProvider, case: &Case) -> (u64, String) {
    use nix::sys::resource::{Resource, getrlimit};
    let kind = p.kind();
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(soft > 64, "this test needs an open-file limit above 64 (it is {soft})");
    // The first call counts (a test binary run by `cargo test` shares one process).
    spillway::provider::shim::set_model_nofile(soft / 2);
    let original = spillway::provider::shim::model_nofile().unwrap();
    assert!(original < soft);
    let image = format!(
        "sh -c 'ulimit -Sn > nofile.txt; ulimit -Hn >> nofile.txt; exec {}'",
        echo_image()
    );
    let a = match p.launch(request("i-conf-nofile", case.one_slot, &image)).await {
        Ok(l) => l,
        Err(e) => panic!("[{kind}] launch: {e:?}"),
    };
    wait_ping(&a.address, true, &format!("[{kind}] model")).await;
    let dir = PathBuf::from(
        a.handle["dir"]
            .as_str()
            .expect("the handle names the instance directory"),
    );
    let got = std::fs::read_to_string(dir.join("nofile.txt")).expect("nofile.txt");
    p.terminate("i-conf-nofile", &a.handle, GRACE).await;
    let (s, h) = got.trim().split_once('\n').expect("two lines");
    assert_eq!(
        s.parse::<u64>().ok(),
        Some(original),
        "[{kind}] the soft limit spillway was given"
    );
    (original, h.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_models_start_with_the_original_open_file_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let (_t, dir) = data_dir();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let (_, model_hard) = models_start_with_the_original_open_file_limit(&local(&dir), &LOCAL).await;
    let hard = if hard == RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    assert_eq!(model_hard, hard, "the hard limit is kept");
}

fn slurm_config() -> SlurmProviderConfig {
    let map = |partition: &str, gres: &str| SlurmInstanceType {
        partition: partition.into(),
        gres: Some(gres.into()),
        ..SlurmInstanceType::default()
    };
    SlurmProviderConfig {
        instance_types: BTreeMap::from([
            ("ml.p5.48xlarge".to_string(), map("h100x8", "gpu:h100:8")),
            ("ml.p4d.24xlarge".to_string(), map("a100x4", "gpu:a100:4")),
            ("ml.g5.48xlarge".to_string(), map("a100x4", "gpu:a100:16")),
        ]),
        poll_interval_ms: 200,
        ..SlurmProviderConfig::default()
    }
}

const SLURM: Case = Case {
    one_slot: "ml.p5.48xlarge",
    two_slots: "ml.p4d.24xlarge",
    unavailable: "ml.g6.2xlarge",
};

/// Fails unless a Slurm cluster answers: the Slurm test is `#[ignore]`d, so it runs only when
/// asked for (`scripts/slurm/test.sh` starts a cluster and runs it with `--include-ignored`),
/// and then it must not pass without a cluster.
fn require_slurm_cluster() {
    let up = std::env::var_os("SLURM_CONF").is_some()
        && std::process::Command::new("sinfo")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        up,
        "no Slurm cluster answers (SLURM_CONF, sinfo): run scripts/slurm/test.sh, which starts one"
    );
}

/// Where a program is in `PATH` (or `/usr/sbin`).
fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

/// Issue 12: a launch cut off at its deadline (the controller drops the launch future) left its
/// `salloc` allocation and model step running until they ended by themselves. Here `scontrol
/// show step` never answers, so the launch hangs after Slurm granted the job and `srun` started
/// the model; the launch is dropped, and the job must go (the one-slot type takes a whole node,
/// so a leaked job would also make the next launch insufficient capacity).
/// Part of [`slurm_provider_conforms`]: the tests share the cluster's one-slot node.
async fn slurm_a_launch_cut_off_leaves_no_job() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = data_dir();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dir.join("step-asked");
    for name in ["salloc", "srun", "squeue", "sinfo", "scancel", "scontrol"] {
        let real = which(name);
        let hang = if name == "scontrol" {
            format!(
                "[ \"$1 $2\" = \"show step\" ] && {{ touch '{}'; exec sleep 60; }}\n",
                marker.display()
            )
        } else {
            String::new()
        };
        let script = bin.join(name);
        std::fs::write(&script, format!("#!/bin/sh\n{hang}exec '{}' \"$@\"\n", real.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cfg = SlurmProviderConfig {
        bin_dir: Some(bin),
        ..slurm_config()
    };
    let p = SlurmProvider::new(&dir, &cfg);
    let job_name = format!("{}i-conf-cut", cfg.job_name_prefix);
    let launch = p.launch(request("i-conf-cut", SLURM.one_slot, &echo_image()));
    let cut = tokio::time::timeout(Duration::from_secs(10), launch).await;
    assert!(cut.is_err(), "the launch hangs on scontrol: {cut:?}");
    assert!(marker.exists(), "the launch was cut off after its job and step started");
    assert!(p.jobs().is_empty(), "{:?}", p.jobs());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("squeue")
            .args(["--noheader", &format!("--name={job_name}"), "--format=%i %T"])
            .output()
            .expect("squeue");
        let active = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job of the cut-off launch is still there: {active}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = SlurmProvider::new(&dir, &slurm_config());
    let l = launch_ok(&again, "i-conf-after", SLURM.one_slot).await;
    again.terminate("i-conf-after", &l.handle, GRACE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Slurm cluster: scripts/slurm/test.sh starts one and runs this test"]
async fn slurm_provider_conforms() {
    require_slurm_cluster();
    let (_t, dir) = data_dir();
    let cfg = slurm_config();
    let p = SlurmProvider::new(&dir, &cfg);
    launch_ping_terminate(&p, &SLURM).await;
    ice_is_not_failure(&p, &SLURM).await;
    recover_adopts_and_stops(&p, &SlurmProvider::new(&dir, &cfg), &SLURM).await;
    // Ports derived from the job id instead of reserved by Slurm.
    let ranged = SlurmProviderConfig {
        port_range: Some("31000-31009".into()),
        ..slurm_config()
    };
    launch_ping_terminate(&SlurmProvider::new(&dir, &ranged), &SLURM).await;
    let (_t, ranged_dir) = data_dir();
    copies_share_their_host(
        &SlurmProvider::new(&ranged_dir, &ranged),
        &SlurmProvider::new(&ranged_dir, &ranged),
        "ml.p4d.24xlarge",
        ["2", "0,3"],
    )
    .await;
    // One test function: the cases share one cluster and must not overlap.
    slurm_capacity_answers_and_failures().await;
    // Copies: job steps in the host's allocation; Slurm gave the job GPUs 0,1,2,3.
    let (_t, copies_dir) = data_dir();
    copies_share_their_host(
        &SlurmProvider::new(&copies_dir, &cfg),
        &SlurmProvider::new(&copies_dir, &cfg),
        "ml.p4d.24xlarge",
        ["2", "0,3"],
    )
    .await;
    models_start_with_the_original_open_file_limit(&p, &SLURM).await;
    slurm_a_launch_cut_off_leaves_no_job().await;
    let (_t, logs_dir) = data_dir();
    let logged = SlurmProvider::new(&logs_dir, &cfg)
        .with_logs(log_settings(&logs_dir))
        .with_spillway_binary(env!("CARGO_BIN_EXE_spillway"));
    output_is_captured(&logged, &SLURM, &logs_dir).await;
}

/// Slurm specifics: never-fits, the instance environment, authentication failure.
async fn slurm_capacity_answers_and_failures() {
    let (_t, dir) = data_dir();
    let p = SlurmProvider::new(&dir, &slurm_config());
    // A request no node of the partition can ever satisfy is a capacity answer, with Slurm's reason.
    let t = Instant::now();
    let never = p.launch(request("i-never", "ml.g5.48xlarge", &echo_image())).await;
    assert!(
        matches!(&never, Err(LaunchError::InsufficientCapacity(m)) if m.contains("Requested node configuration is not available")),
        "{never:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    // The environment of the local provider, with CUDA_VISIBLE_DEVICES from Slurm.
    let l = launch_ok(&p, "i-env", "ml.p4d.24xlarge").await;
    wait_ping(&l.address, true, "env instance").await;
    let env = invoke_env(&l.address).await;
    for (k, want) in [
        ("SPILLWAY_INSTANCE_ID", "i-env"),
        ("SPILLWAY_INSTANCE_TYPE", "ml.p4d.24xlarge"),
        ("SPILLWAY_MODEL_NAME", "echo"),
        ("CUDA_VISIBLE_DEVICES", "0,1,2,3"),
    ] {
        assert_eq!(env[k].as_str(), Some(want), "{k} in {env}");
    }
    assert_eq!(env["SPILLWAY_DATA_DIR"].as_str(), Some(dir.to_str().unwrap()));
    assert_eq!(
        env["SAGEMAKER_BIND_TO_PORT"].as_str(),
        l.address.rsplit(':').next(),
        "the model listens on the address spillway routes to"
    );
    assert!(env["SM_MODEL_DIR"].as_str().is_some_and(|d| Path::new(d).is_dir()));
    p.terminate("i-env", &l.handle, GRACE).await;
    // Authentication failure: a provider failure, not a capacity answer.
    let conf = PathBuf::from(std::env::var_os("SLURM_CONF").unwrap());
    let bad_dir = dir.join("badconf");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    let bad: String = text
        .lines()
        .map(|l| {
            if l.starts_with("AuthInfo=") {
                "AuthInfo=socket=/nonexistent/munge.sock".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(bad_dir.join("slurm.conf"), bad).unwrap();
    std::fs::copy(conf.with_file_name("gres.conf"), bad_dir.join("gres.conf")).unwrap();
    let cfg = SlurmProviderConfig {
        slurm_conf: Some(bad_dir.join("slurm.conf")),
        command_timeout_seconds: 5,
        ..slurm_config()
    };
    let broken = SlurmProvider::new(&dir, &cfg);
    let r = broken.launch(request("i-auth", "ml.p4d.24xlarge", &echo_image())).await;
    assert!(
        matches!(&r, Err(LaunchError::Failed(m)) if m.to_lowercase().contains("authentication")),
        "{r:?}"
    );
}

/// The environment the echo model reports from inside the instance.
async fn invoke_env(address: &str) -> serde_json::Value {
    let mut s = tokio::net::TcpStream::connect(address).await.expect("connect");
    let req = format!(
        "POST /invocations HTTP/1.1\r\nHost: {address}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![];
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["env"].clone()
}
