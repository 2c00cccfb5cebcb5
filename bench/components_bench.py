"""Inference-component routing benchmark (issue 17): what routing `InvokeEndpoint` by
`X-Amzn-SageMaker-Inference-Component` to a component's copies costs on the invocation hot
path, next to plain variant routing, in the same run against the same spillway.

    cargo build --release --bin spillway
    .venv/bin/python bench/components_bench.py [--seconds 10] [--conns 32] [--rounds 3]

One spillway (release build, SigV4 on, the defaults otherwise) on a fresh data dir under /tmp,
loopback ports, `ml.g5.12xlarge` pinned to 4 slots (`PUT /_spillway/capacity/ml.g5.12xlarge`;
a host without GPUs runs it as a simulated instance with 4 logical devices), and two endpoints:

* **(a) variant**: `builtin:echo` as the model of one variant, 1 instance of `ml.g5.12xlarge`;
  wrk sends signed `InvokeEndpoint` requests without the component header.
* **(b) component**: an endpoint on `ml.g5.12xlarge` whose variant names no model
  (`ExecutionRoleArn` set, `InitialInstanceCount` 1), hosting one component of `builtin:echo`,
  1 copy (1 accelerator device, 1024 MB); wrk sends the same requests with
  `X-Amzn-SageMaker-Inference-Component` (signed too, as boto3 signs it).

wrk (`bench/post.lua`, the fixed 64-byte body of bench/run.sh, 2 threads) measures (a) and (b)
alternately, `--rounds` rounds of `--seconds` each (the order flips every round), after a 2 s
warm-up of each. Before each measurement it waits while `pgrep -f pytest` finds a process (a
test suite sharing the machine), and a measurement during which one started is done again.

Loopback only. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import sigv4  # noqa: E402

REGION = "us-east-1"
BODY = b'{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001","pad":"xxxx"}'  # 64 bytes, as in post.lua
TYPE = "ml.g5.12xlarge"
COMPONENT = "echo-ic"
IC_HEADER = "X-Amzn-SageMaker-Inference-Component"
assert len(BODY) == 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str):
    print(f"[components-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Spillway:
    def __init__(self, binary: str, work: pathlib.Path):
        self.binary, self.work = binary, work
        self.data_dir = work / "data"
        self.proc = None

    def start(self):
        self.port = free_port()
        log_path = self.work / "spillway.log"
        self.log = open(log_path, "ab")
        # A minimal environment, as in bench/run.sh: builtin:echo answers with its environment.
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--storage-listen", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.work), "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (self.data_dir / "credentials").exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    pass
            if self.proc.poll() is not None:
                sys.exit(f"spillway exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        else:
            sys.exit("spillway did not start")
        self.keys = sigv4.keys(self.data_dir / "credentials")
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def client(self, service: str):
        return boto3.session.Session().client(
            service, endpoint_url=self.base, region_name=REGION,
            aws_access_key_id=self.keys[0], aws_secret_access_key=self.keys[1],
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def admin(self, method: str, path: str, body: bytes = b""):
        url = self.base + path
        headers = {"Content-Type": "application/json"}
        headers.update(sigv4.sign(method, url, headers, body, *self.keys, "spillway"))
        req = urllib.request.Request(url, data=body if method != "GET" else None, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_until(what: str, probe, timeout=180):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return last
        time.sleep(0.2)
    sys.exit(f"{what}: not ready after {timeout} s: {last}")


def endpoint_in_service(sm, name):
    def probe():
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] == "Failed":
            sys.exit(f"endpoint {name} failed: {d}")
        v = d["ProductionVariants"][0]
        return d["EndpointStatus"] == "InService" and v.get("CurrentInstanceCount") == v.get("DesiredInstanceCount"), d
    return wait_until(f"endpoint {name}", probe)


def component_in_service(sm, name, copies):
    def probe():
        d = sm.describe_inference_component(InferenceComponentName=name)
        if d["InferenceComponentStatus"] == "Failed":
            sys.exit(f"component {name} failed: {d}")
        return (d["InferenceComponentStatus"] == "InService"
                and d["RuntimeConfig"].get("CurrentCopyCount") == copies), d
    return wait_until(f"component {name}", probe)


IGNORE_PYTEST = False


def pytest_running() -> bool:
    if IGNORE_PYTEST:
        return False
    return subprocess.run(["pgrep", "-f", "pytest"], capture_output=True).returncode == 0


def wait_for_quiet():
    if not pytest_running():
        return
    log("a pytest run is on this machine: waiting for it to end before measuring")
    t0 = time.monotonic()
    while pytest_running():
        time.sleep(5)
    log(f"pytest ended after {time.monotonic() - t0:.0f} s of waiting; settling 5 s")
    time.sleep(5)


def wrk(url: str, keys, component: str | None, seconds: int, conns: int) -> dict:
    """One signed wrk run (bench/post.lua); its RESULT line as a dict of numbers."""
    headers = {"Content-Type": "application/json"}
    if component:
        headers[IC_HEADER] = component
    signed = sigv4.sign("POST", url, headers, BODY, *keys, "sagemaker")
    env = {**os.environ, "BENCH_AUTHORIZATION": signed["Authorization"], "BENCH_AMZ_DATE": signed["X-Amz-Date"]}
    env.pop("BENCH_INFERENCE_COMPONENT", None)
    if component:
        env["BENCH_INFERENCE_COMPONENT"] = component
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench/post.lua"), url],
                         capture_output=True, text=True, env=env, check=True).stdout
    m = {k: float(v) for k, v in (kv.split("=") for kv in re.search(r"RESULT (.*)", out).group(1).split())}
    if m["errors"] or m["non2xx"]:
        sys.exit(f"wrk saw errors or non-2xx answers:\n{out}")
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/spillway"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ignore-pytest", action="store_true", help="measure even while pytest runs (smoke tests only)")
    args = ap.parse_args()
    global IGNORE_PYTEST
    IGNORE_PYTEST = args.ignore_pytest
    if not shutil.which("wrk"):
        sys.exit("wrk is not on PATH")
    work = pathlib.Path(tempfile.mkdtemp(prefix="spillway-ic-bench-", dir="/tmp"))
    log(f"work dir {work}")
    sp = Spillway(args.bin, work).start()
    try:
        run(sp, args)
    finally:
        sp.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(sp: Spillway, args):
    sm, rt = sp.client("sagemaker"), sp.client("sagemaker-runtime")
    sp.admin("PUT", f"/_spillway/capacity/{TYPE}", json.dumps({"slots": 4}).encode())

    # (a) plain variant routing.
    sm.create_model(ModelName="echo", PrimaryContainer={"Image": "builtin:echo"})
    sm.create_endpoint_config(
        EndpointConfigName="variant-cfg",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "echo", "InstanceType": TYPE, "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="variant", EndpointConfigName="variant-cfg")
    # (b) an endpoint for components, one component with one copy.
    sm.create_endpoint_config(
        EndpointConfigName="ic-cfg", ExecutionRoleArn="arn:aws:iam::123456789012:role/spillway",
        ProductionVariants=[{"VariantName": "AllTraffic", "InstanceType": TYPE, "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="ic", EndpointConfigName="ic-cfg")
    endpoint_in_service(sm, "variant")
    endpoint_in_service(sm, "ic")
    sm.create_inference_component(
        InferenceComponentName=COMPONENT, EndpointName="ic", VariantName="AllTraffic",
        Specification={"Container": {"Image": "builtin:echo"},
                       "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 1024}},
        RuntimeConfig={"CopyCount": 1})
    component_in_service(sm, COMPONENT, 1)

    # Each path answers, and the component's answer comes from its copy.
    a = rt.invoke_endpoint(EndpointName="variant", ContentType="application/json", Body=BODY)["Body"].read()
    b = rt.invoke_endpoint(EndpointName="ic", InferenceComponentName=COMPONENT, ContentType="application/json", Body=BODY)["Body"].read()
    env_b = json.loads(b).get("env", {})
    assert env_b.get("SPILLWAY_INFERENCE_COMPONENT") == COMPONENT, env_b
    log(f"(a) answers {len(a)} bytes; (b) answers {len(b)} bytes from copy of {env_b['SPILLWAY_INFERENCE_COMPONENT']}")

    targets = {
        "a": (f"{sp.base}/endpoints/variant/invocations", None),
        "b": (f"{sp.base}/endpoints/ic/invocations", COMPONENT),
    }
    wait_for_quiet()
    log("warm-up: 2 s each")
    for url, comp in targets.values():
        wrk(url, sp.keys, comp, 2, args.conns)
    results = {"a": [], "b": []}
    for r in range(args.rounds):
        order = ["a", "b"] if r % 2 == 0 else ["b", "a"]
        for t in order:
            while True:
                wait_for_quiet()
                m = wrk(targets[t][0], sp.keys, targets[t][1], args.seconds, args.conns)
                if not pytest_running():
                    break
                log(f"round {r + 1} ({t}): pytest started during the run, measuring again")
            results[t].append(m)
            log(f"round {r + 1} ({t}): {m['rps']:,.0f} req/s, p50 {m['p50_us'] / 1000:.2f} ms, p99 {m['p99_us'] / 1000:.2f} ms")

    med = {t: {k: statistics.median(x[k] for x in v) for k in ("rps", "p50_us", "p99_us")} for t, v in results.items()}

    def cells(t, k, scale=1.0, fmt="{:,.0f}"):
        return " / ".join(fmt.format(x[k] / scale) for x in results[t])

    print(f"""
| {args.rounds} rounds × {args.seconds} s, {args.conns} connections, wrk -t2 ({os.cpu_count()} CPUs) | req/s (each round) | median req/s | p50 ms (median) | p99 ms (median) |
|---|---|---|---|---|
| (a) variant routing (`builtin:echo`, 1 instance) | {cells('a', 'rps')} | {med['a']['rps']:,.0f} | {med['a']['p50_us'] / 1000:.2f} | {med['a']['p99_us'] / 1000:.2f} |
| (b) routed to an inference component (1 copy) | {cells('b', 'rps')} | {med['b']['rps']:,.0f} | {med['b']['p50_us'] / 1000:.2f} | {med['b']['p99_us'] / 1000:.2f} |
| **(b) / (a)** | | **{med['b']['rps'] / med['a']['rps']:.3f}** | {med['b']['p50_us'] / med['a']['p50_us']:.3f} | {med['b']['p99_us'] / med['a']['p99_us']:.3f} |

p50 ms each round: (a) {cells('a', 'p50_us', 1000, '{:.2f}')}; (b) {cells('b', 'p50_us', 1000, '{:.2f}')}.
p99 ms each round: (a) {cells('a', 'p99_us', 1000, '{:.2f}')}; (b) {cells('b', 'p99_us', 1000, '{:.2f}')}.
Answers: (a) {len(a)} bytes, (b) {len(b)} bytes (builtin:echo returns its environment; a copy's has the component's variables).
""")


if __name__ == "__main__":
    main()
