"""`spillway serve --demo` as a new user runs it: the fallback is narrated, and every command it
prints (with the four exports printed at start, nothing else) works as printed."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import spw


def _wait_for(log: pathlib.Path, text: str, proc, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        if text in out:
            return out
        assert proc.poll() is None, f"spillway exited (rc={proc.returncode}):\n{out[-3000:]}"
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def test_the_demo_narrates_and_its_commands_work_as_printed(tmp_path):
    port = spw.free_port()
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPILLWAY_"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [spw.BIN, "serve", "--demo", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
    try:
        text = _wait_for(log, "Press Ctrl-C to stop", proc, 180)
        assert "InsufficientCapacity" in text, text
        assert re.search(r"InvokeEndpoint -> variant \"AllTraffic\", answered by \"ml\.", text), text
        exports = re.findall(r"^\s+(export AWS_[A-Z_]+=\S+)$", text, re.M)
        assert [e.split("=")[0] for e in exports] == [
            "export AWS_SHARED_CREDENTIALS_FILE",
            "export AWS_PROFILE",
            "export AWS_ENDPOINT_URL",
            "export AWS_DEFAULT_REGION",
        ], text
        tail = text[text.index("Try it yourself"):]
        commands = [line.strip() for line in tail.splitlines() if re.match(r"^  (python3|aws|sw)\b", line)]
        assert len(commands) >= 7, tail
        script = "set -euo pipefail\n" + "\n".join(exports) + "\n" + "\n".join(
            f"echo '>>> {i}'\n{c}" for i, c in enumerate(commands)
        )
        venv_bin = str(pathlib.Path(sys.executable).parent)
        run_env = {k: v for k, v in env.items()}
        run_env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"a printed command failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "ml." in r.stdout and "hi" in r.stdout, r.stdout  # the python line's answer
        assert "CreateEndpoint" in r.stdout, r.stdout  # lookup-events shows the demo's calls
        assert '"pinnedBy":"runtime"' in r.stdout.replace(" ", ""), r.stdout  # the capacity pin
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    left = spw.model_processes(tmp_path / "data")
    assert not left, f"model processes left after Ctrl-C: {left}"
