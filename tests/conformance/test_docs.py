"""The walk-throughs in docs/ run as written: each `sh` block of docs/autoscaling.md and of
docs/inference-components.md, in order, in one bash with only the four exports a demo server
printed (and the spillway binary on PATH), against `spillway serve --demo`."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import spw

DOC = spw.REPO / "docs" / "autoscaling.md"
COMPONENTS_DOC = spw.REPO / "docs" / "inference-components.md"


def _blocks(doc: str) -> list[str]:
    """The page's runnable blocks: every ```sh block but the ones that start the server or
    stand for the exports it prints (the test uses the real ones)."""
    blocks = re.findall(r"```sh\n(.*?)```", doc, re.S)
    return [b for b in blocks if "spillway serve --demo" not in b and "export AWS_" not in b]


def _run_walkthrough(path: pathlib.Path, tmp_path) -> tuple[str, list[str]]:
    """Runs the page's blocks against a fresh demo; returns their output and the blocks."""
    doc = path.read_text()
    blocks = _blocks(doc)
    assert len(blocks) >= 6, blocks
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPILLWAY_"))}
    log = tmp_path / "demo.log"
    data = tmp_path / "data"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [spw.BIN, "serve", "--demo", "--listen", f"127.0.0.1:{spw.free_port()}", "--storage-listen", "127.0.0.1:0",
             "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C to stop" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        exports = re.findall(r"^\s+(export AWS_[A-Z_]+=\S+)$", text, re.M)
        assert len(exports) == 8 and exports[:4] == exports[4:], text  # at start and before "Try it yourself"
        exports = exports[:4]
        script = "set -euo pipefail\n" + "\n".join(exports) + "\n" + "\n".join(
            f"echo '>>> block {i}'\n{b}" for i, b in enumerate(blocks)
        )
        run_env = dict(env)
        # `spillway` on PATH is the binary under test, whatever its file name.
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "spillway").symlink_to(pathlib.Path(spw.BIN).resolve())
        run_env["PATH"] = os.pathsep.join(
            [str(pathlib.Path(sys.executable).parent), str(bindir), env.get("PATH", "/usr/bin:/bin")]
        )
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, f"a block of {path.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
        out = r.stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    assert not spw.model_processes(data)
    return out, blocks


def test_the_autoscaling_walkthrough_runs_as_written(tmp_path):
    out, blocks = _run_walkthrough(DOC, tmp_path)
    # what the page says happens, happens
    assert "endpoint/demo/variant/AllTraffic\t1\t3" in out, out  # registered
    assert "desired instance count 2 -> 3" in out, out  # the drill's step scaling acted
    assert re.search(r"TargetTracking-endpoint/demo/variant/AllTraffic-AlarmHigh-\S+\t\w+\t5.0\t3", out), out
    assert "Invocations" in out and "ml.m5.xlarge" in out, out  # list-metrics by instance type
    # the clean-up left no alarm behind (deregistering deleted the target-tracking ones)
    last = out.split(f">>> block {len(blocks) - 1}\n")[1]
    assert "demo-5xx" not in last and "TargetTracking" not in last, last


def test_the_inference_components_walkthrough_runs_as_written(tmp_path):
    out, _ = _run_walkthrough(COMPONENTS_DOC, tmp_path)
    lines = out.splitlines()
    # the first instance fell back past the type without capacity
    assert "ml.g5.12xlarge\t1" in lines, out
    # placement per type, as the page says
    assert "llm\nml.g5.12xlarge\t1\n" in out and "small\nml.g6.12xlarge\t2\n" in out, out
    # each invocation reached its component's build, with its own devices
    assert "llm llm-tp4-a10g 0,1,2,3" in lines, out
    assert sum(1 for l in lines if l.startswith("small small-l4 ")) == 2, out
    assert "ManagedScaleOut" in out and "ManagedScaleIn" in out, out
