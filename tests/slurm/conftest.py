"""Fixtures for the Slurm end-to-end tests: the real spillway binary with `[provider] kind = "slurm"`
against the cluster that `scripts/slurm/cluster.sh` started (SLURM_CONF in the environment).

Cluster: partitions a100x4 (nodes a100-1, a100-2, 4 x gpu:a100 each) and h100x8 (node h100-1,
8 x gpu:h100). Mapping used here: ml.p5.48xlarge -> one whole h100 node (1 slot), ml.p4d.24xlarge ->
one whole a100 node (2 slots), ml.g5.48xlarge -> 16 a100 GPUs (never fits); other types are unmapped."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "conformance"))

import spw  # noqa: E402

SLURM_TYPES = {
    "ml.p5.48xlarge": {"partition": "h100x8", "gres": "gpu:h100:8"},
    "ml.p4d.24xlarge": {"partition": "a100x4", "gres": "gpu:a100:4"},
    "ml.g5.48xlarge": {"partition": "a100x4", "gres": "gpu:a100:16"},
}

SLURM_CONFIG = {
    "provisioning": {"deadline_override_seconds": 20},
    "provider": {"kind": "slurm", "slurm": {"poll_interval_ms": 200, "instance_types": SLURM_TYPES}},
}


def slurm(*args: str, check: bool = True) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {r.returncode}: {r.stderr}")
    return r.stdout + r.stderr


def jobs(states: str = "RUNNING,PENDING,CONFIGURING,COMPLETING") -> list[dict]:
    out = slurm("squeue", "-h", f"--states={states}", "-o", "%i|%T|%N|%r|%j|%k")
    rows = []
    for line in out.splitlines():
        f = line.split("|", 5)
        if len(f) == 6:
            rows.append(dict(zip(("id", "state", "node", "reason", "name", "comment"), f)))
    return rows


def spillway_jobs(data_dir, states: str = "RUNNING,PENDING,CONFIGURING,COMPLETING") -> dict[str, dict]:
    """instance id -> squeue row for the active jobs of the spillway using data_dir."""
    want = f" data_dir={os.path.realpath(data_dir)}"
    out = {}
    for r in jobs(states):
        c = r["comment"]
        if c.startswith("spillway instance=") and c.endswith(want):
            out[c[len("spillway instance=") : -len(want)]] = r
    return out


def blocker(partition: str, gres: str | None, name: str = "other-user-job", comment: str | None = None) -> str:
    """An allocation that is not spillway's (or pretends to be, with comment)."""
    args = ["salloc", "--immediate=1", "--no-shell", f"--job-name={name}", f"--partition={partition}"]
    if gres:
        args.append(f"--gres={gres}")
    if comment:
        args.append(f"--comment={comment}")
    out = slurm(*args)
    return out.split("Granted job allocation ")[1].split()[0]


def job_state(job_id: str) -> str:
    return slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False).strip()


class _Servers:
    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.servers: list[spw.Server] = []

    def __call__(self, config=None, name=None) -> spw.Server:
        cfg = spw.merge(spw.merge(spw.DEFAULT_CONFIG, SLURM_CONFIG), config)
        name = name or f"server{len(self.servers)}"
        srv = spw.Server(self.base_dir / name, cfg, name=name)
        self.servers.append(srv)
        srv.start()
        return srv

    def finish(self, failed: bool):
        problems = []
        for srv in self.servers:
            if failed:
                print(f"\n[{srv.name}] {srv.log_tail(120)}")
            problems += [f"[{srv.name}] {p}" for p in srv.shutdown_and_check()]
            left = spillway_jobs(srv.data_dir)
            if left:
                problems.append(f"[{srv.name}] Slurm jobs left after the server stopped: {left}")
                for r in left.values():
                    slurm("scancel", r["id"], check=False)
        if problems:
            pytest.fail("teardown found problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def cluster():
    if not os.environ.get("SLURM_CONF"):
        pytest.skip("no Slurm cluster (run: bash scripts/slurm/test.sh)")
    out = slurm("sinfo", "-h", "-N", "-p", "all", "-o", "%N %T")
    assert out.count("idle") == 3, f"cluster not idle:\n{out}"


@pytest.fixture
def start_server(tmp_path, request):
    """Factory: start_server(config={...}) -> a running spillway on the Slurm provider."""
    servers = _Servers(tmp_path)
    yield servers
    rep = getattr(request.node, "rep_call", None)
    servers.finish(failed=bool(rep and rep.failed))
    # Every test leaves the cluster as it found it: all nodes up, no job running.
    leftovers = jobs()
    for r in leftovers:
        slurm("scancel", r["id"], check=False)
    assert not leftovers, f"jobs left on the cluster: {leftovers}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
