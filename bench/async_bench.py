"""Asynchronous inference benchmark (issue 16): what `InvokeEndpointAsync` accepts per second
with every 202 on disk, next to the disk's own limit measured in the same run, and what the
workers finish per second through a fast model.

    cargo build --release --bin spillway --example queue_bench
    .venv/bin/python bench/async_bench.py [--seconds 10] [--conns 64] [--requests 5000]

Phases, one spillway (release build, SigV4 on, the defaults otherwise) on a fresh data dir:

1. **Physical limit** (`target/release/examples/queue_bench DIR SECONDS`, on the data dir's
   disk): SQLite single-row INSERT + fsync'd commit per second, and rows per second in
   1000-row transactions, both WAL with `synchronous=FULL`, the queue's durability.
2. **Accepted durable requests per second**: wrk (`bench/async.lua`) sends signed
   `InvokeEndpointAsync` requests (an `InputLocation`, no body) to an asynchronous endpoint
   scaled to zero instances, so nothing but acceptance runs: each 202 leaves only after its
   request is committed and fsync'd (group commit). p50/p99 from wrk. Then spillway is
   SIGKILLed and the queue file is counted: every 202 wrk saw must be a row.
3. **End to end**: spillway restarts on the same data dir (the accepted requests are still
   queued), the endpoint scales from zero to two `builtin:echo` instances taking 32 requests
   each at a time, and `--requests` of the queued requests are timed from the scale-up to their
   last output object (read from the queue's `done` rows): completions per second, each one an
   input read from the embedded object store, a model call, an output object written (fsync'd)
   and a completion committed.

Loopback only. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import sigv4  # noqa: E402

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spillway:
    def __init__(self, binary: str, data_dir: pathlib.Path):
        self.binary, self.data_dir = binary, data_dir
        self.proc = None

    def start(self):
        self.port = free_port()
        self.log = open(self.data_dir.parent / "spillway.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--storage-listen", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RUST_LOG": "warn,spillway=info"},
        )
        log_path = self.data_dir.parent / "spillway.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.findall(r"storage \(S3 API\) listening on http://[0-9.]+:(\d+)", log_path.read_text(errors="replace"))
            if found and (self.data_dir / "credentials").exists():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    self.storage_port = int(found[-1])
                    break
                except OSError:
                    pass
            if self.proc.poll() is not None:
                sys.exit(f"spillway exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        else:
            sys.exit("spillway did not start")
        self.keys = sigv4.keys(self.data_dir / "credentials")
        return self

    def client(self, service: str):
        url = f"http://127.0.0.1:{self.storage_port if service == 's3' else self.port}"
        return boto3.session.Session().client(
            service, endpoint_url=url, region_name=REGION,
            aws_access_key_id=self.keys[0], aws_secret_access_key=self.keys[1],
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_status(sm, name, want="InService", timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] == want and d["ProductionVariants"][0].get("CurrentInstanceCount") == d["ProductionVariants"][0].get("DesiredInstanceCount"):
            return d
        time.sleep(0.2)
    sys.exit(f"endpoint {name} not {want}: {d}")


def queue_rows(data_dir: pathlib.Path, where: str = "1=1") -> int:
    con = sqlite3.connect(f"file:{data_dir / 'queue.db'}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT COUNT(*) FROM requests WHERE {where}").fetchone()[0]
    finally:
        con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/spillway"))
    ap.add_argument("--queue-bench", default=str(ROOT / "target/release/examples/queue_bench"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="spillway-async-bench-", dir=os.environ.get("BENCH_DIR", str(ROOT / "target"))))
    data = work / "data"
    data.mkdir()
    print(f"work dir {work}", file=sys.stderr)

    # 1. The disk's limit, same durability, same disk.
    qb = subprocess.run([args.queue_bench, str(work), str(min(args.seconds, 5))], capture_output=True, text=True, check=True).stdout
    single = float(re.search(r"single-row INSERT \+ fsync'd commit:\s+([\d.]+)", qb).group(1))
    batched = float(re.search(r"batches, one commit each:\s+([\d.]+)", qb).group(1))
    direct = float(re.search(r"group commit[^:]*:\s+([\d.]+)", qb).group(1))
    print(qb, file=sys.stderr)

    # 2. Acceptance only: an asynchronous endpoint with no instance.
    sp = Spillway(args.bin, data).start()
    sm, s3 = sp.client("sagemaker"), sp.client("s3")
    s3.create_bucket(Bucket="bench")
    s3.put_object(Bucket="bench", Key="in/payload.json", Body=b'{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001"}')
    sm.create_model(ModelName="echo", PrimaryContainer={"Image": "builtin:echo"})
    sm.create_endpoint_config(
        EndpointConfigName="bench-cfg",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "echo", "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://bench/out", "S3FailurePath": "s3://bench/failures"},
                              "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 32}},
    )
    sm.create_endpoint(EndpointName="bench", EndpointConfigName="bench-cfg")
    wait_status(sm, "bench")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="bench", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}])
    wait_status(sm, "bench")
    url = f"http://127.0.0.1:{sp.port}/endpoints/bench/async-invocations"
    location = "s3://bench/in/payload.json"
    headers = sigv4.sign("POST", url, {"X-Amzn-SageMaker-InputLocation": location, "X-Amzn-SageMaker-Content-Type": "application/json"},
                         b"", *sp.keys, "sagemaker")
    env = {**os.environ, "BENCH_INPUT_LOCATION": location, "BENCH_AUTHORIZATION": headers["Authorization"], "BENCH_AMZ_DATE": headers["X-Amz-Date"]}
    before = queue_rows(data)
    out = subprocess.run(["wrk", "-t2", f"-c{args.conns}", f"-d{args.seconds}s", "--latency", "-s", str(ROOT / "bench/async.lua"), url],
                         capture_output=True, text=True, env=env, check=True).stdout
    m = dict(kv.split("=") for kv in re.search(r"RESULT (.*)", out).group(1).split())
    accepted = int(m["requests"]) - int(m["non2xx"]) - int(m["errors"])
    sp.kill()  # a crash: every 202 must be in the file
    rows = queue_rows(data) - before
    print(out, file=sys.stderr)
    assert int(m["non2xx"]) == 0, f"refused requests: {out}"
    assert rows >= accepted, f"{accepted} accepted by 202 but only {rows} rows on disk"

    # 3. End to end: restart, scale from zero, drain --requests of the queue.
    sp.start()
    sm = sp.client("sagemaker")
    wait_status(sm, "bench")
    done_before = queue_rows(data, "state = 'done'")
    target = min(args.requests, rows)
    t0 = time.monotonic()
    sm.update_endpoint_weights_and_capacities(
        EndpointName="bench", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}])
    first = None
    while True:
        done = queue_rows(data, "state = 'done'") - done_before
        if done and first is None:
            first = time.monotonic()
        if done >= target:
            break
        if time.monotonic() - t0 > 600:
            sys.exit(f"only {done} of {target} done in 600 s")
        time.sleep(0.05)
    t1 = time.monotonic()
    failed = queue_rows(data, "state = 'done' AND outcome != 'succeeded'")
    sp.stop()
    e2e = target / (t1 - first)

    rps = float(m["rps"])
    print(f"""
| measurement (this run, {os.cpu_count()} CPUs) | value |
|---|---|
| SQLite single-row INSERT + fsync'd commit (transactions/s) | {single:,.0f} |
| SQLite 1000-row batches, one commit each (rows/s) | {batched:,.0f} |
| queue enqueue direct, 8 producers, group commit (enqueues/s) | {direct:,.0f} |
| **InvokeEndpointAsync accepted, SigV4, every 202 fsync'd ({args.conns} connections, wrk)** | **{rps:,.0f}/s** ({accepted:,} accepted, {rows:,} rows on disk after SIGKILL) |
| its latency p50 / p99 / p99.9 (ms) | {int(m['p50_us'])/1000:.2f} / {int(m['p99_us'])/1000:.2f} / {int(m['p999_us'])/1000:.2f} |
| accepted/s ÷ single-row fsync'd commits/s | {rps/single:.2f}× |
| end to end through builtin:echo, 2 instances × 32 (completions/s) | {e2e:,.0f} ({target:,} requests, {failed} failed; first completion {first - t0:.1f} s after the scale-up from zero) |
""")


if __name__ == "__main__":
    main()
