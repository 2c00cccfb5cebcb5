"""`spillway serve --demo` as a new user runs it: the fallback is narrated, every command it
prints (with the four exports printed at start, nothing else) works as printed, twice in a row
in the same data directory, and Ctrl-C stops every model process even when the output goes
through a pipe whose reader dies with the same Ctrl-C."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

import spw

# Everything the demo prints that a user pastes: the lines of "Try it yourself" and the
# autoscaling pointer's first command.
COMMAND = re.compile(r"^  (python3|aws|sw|/\S*/spillway)\b")  # the operator's CLI is printed as the binary's own path


def _wait_for(log: pathlib.Path, text: str, proc, timeout: float, start: int = 0) -> str:
    """The log from byte `start` on, once it contains `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_bytes()[start:].decode(errors="replace")
        if text in out:
            return out
        assert proc.poll() is None, f"spillway exited (rc={proc.returncode}):\n{out[-3000:]}"
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{log.read_bytes()[start:][-3000:]!r}")


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPILLWAY_"))}


def _start(tmp_path, port: int, log: pathlib.Path):
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            [spw.BIN, "serve", "--demo", "--listen", f"127.0.0.1:{port}", "--storage-listen", "127.0.0.1:0",
             "--data-dir", str(tmp_path / "data")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=_clean_env(),
            start_new_session=True,
        )
    finally:
        out.close()


def _stop(proc, data_dir) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=90)
    left = spw.model_processes(data_dir)
    assert not left, f"model processes left after Ctrl-C: {left}"


def _run_printed_commands(text: str, cwd) -> subprocess.CompletedProcess:
    """Runs, in a new bash with only the printed exports, every command the demo printed."""
    # the five lines printed at start, and again at the top of "Try it yourself"
    exports = re.findall(r"^\s+(export AWS_[A-Z_0-9]+=\S+)$", text, re.M)
    assert exports[:5] == exports[5:], text
    exports = exports[5:]
    assert [e.split("=")[0] for e in exports] == [
        "export AWS_SHARED_CREDENTIALS_FILE",
        "export AWS_PROFILE",
        "export AWS_ENDPOINT_URL",
        "export AWS_ENDPOINT_URL_S3",
        "export AWS_DEFAULT_REGION",
    ], text
    tail = text[text.index("Try it yourself"):]
    commands = [line.strip() for line in tail.splitlines() if COMMAND.match(line)]
    assert len(commands) >= 9, tail
    script = "set -euo pipefail\n" + "\n".join(exports) + "\n" + "\n".join(
        f"echo '>>> {i}'\n{c}" for i, c in enumerate(commands)
    )
    env = _clean_env()
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    r = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"a printed command failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _check_run(text: str) -> None:
    """What every run must show: the fallback, a fleet that serves, an answer from a model."""
    assert "InsufficientCapacity" in text, text
    assert "ml.g6e.2xlarge = 0 slots" in text, text
    assert re.search(r"variant \"AllTraffic\": 2 of 2 instances in service", text), text
    assert re.search(r"InvokeEndpoint -> variant \"AllTraffic\", answered by \"ml\.", text), text
    assert 'variant ""' not in text and 'answered by ""' not in text, text
    assert "demo failed" not in text, text


def test_the_demo_works_twice_and_its_commands_work_as_printed(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "demo.log"
    port = spw.free_port()
    proc = _start(tmp_path, port, log)
    try:
        first = _wait_for(log, "Press Ctrl-C to stop", proc, 180)
        _check_run(first)
        assert "Starting fresh" not in first, first  # nothing to reset on a new data dir
        r = _run_printed_commands(first, tmp_path)
        assert "ml." in r.stdout and "hi" in r.stdout, r.stdout  # the python line's answer
        assert "CreateEndpoint" in r.stdout, r.stdout  # lookup-events shows the demo's calls
        assert '"pinnedBy":"runtime"' in r.stdout.replace(" ", ""), r.stdout  # the capacity pin
        assert '"spillway:ListEvents"' in r.stdout, r.stdout  # the admin API's index
    finally:
        _stop(proc, data)

    # Second run, same data dir: the pin the first run's commands set, the models and configs
    # they created, and the scalable target they registered are reset, and said so; only this
    # run's events are shown; the fallback happens again.
    start = log.stat().st_size
    proc = _start(tmp_path, port, log)
    try:
        second = _wait_for(log, "Press Ctrl-C to stop", proc, 240, start)
        _check_run(second)
        reset = second[second.index("Starting fresh"):second.index("CreateEndpoint demo")]
        for what in (
            "deregistered the scalable target endpoint/demo/variant/AllTraffic",
            "deleted endpoint demo",
            "deleted endpoint config demo-pools",
            "deleted model demo-echo",
            "deleted model demo-llm-model",
            "deleted endpoint config demo-llm-config",
            "removed the run-time capacity pin ml.g6e.2xlarge = 2 slot(s)",
        ):
            assert what in reset, reset
        events = second[second.index("CreateEndpoint demo"):second.index("DescribeEndpoint:")]
        launches = re.findall(r"^  LaunchAttempt +(\S+) +(\S+)", events, re.M)
        # this run's launches only: two instances, the first try of each type in priority order
        assert launches[0] == ("ml.g6e.2xlarge", "InsufficientCapacity"), events
        assert [t for t, result in launches if result == "Launched"] == ["ml.g6.2xlarge", "ml.m5.xlarge"], events
        assert "EndpointDeleted" not in events and "EndpointDeleting" not in events, events
        _run_printed_commands(second, tmp_path)
    finally:
        _stop(proc, data)


@pytest.mark.parametrize("pipe", ["2>&1 |", "|"])
def test_ctrl_c_stops_every_model_process_when_the_output_pipe_dies_too(tmp_path, pipe):
    """`spillway serve --demo 2>&1 | tee log` (or `| tee log`), then Ctrl-C: the terminal's SIGINT
    reaches the whole pipeline, tee exits first, and spillway's writes fail (EPIPE); it must still
    stop every model."""
    data = tmp_path / "data"
    log = tmp_path / "tee.log"
    port = spw.free_port()
    cmd = f"'{spw.BIN}' serve --demo --listen 127.0.0.1:{port} --data-dir '{data}' {pipe} tee '{log}' > /dev/null"
    shell = subprocess.Popen(
        ["bash", "-c", cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=_clean_env(),
        start_new_session=True,  # the pipeline is one process group, as a terminal's job is
    )
    try:
        deadline = time.monotonic() + 180
        while not (log.exists() and "Press Ctrl-C to stop" in log.read_text(errors="replace")):
            assert shell.poll() is None, log.read_text(errors="replace") if log.exists() else "no log"
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
        assert spw.model_processes(data), "the demo started no model process"
    except BaseException:
        os.killpg(shell.pid, signal.SIGTERM)
        raise
    os.killpg(shell.pid, signal.SIGINT)
    shell.wait(timeout=90)
    # spillway itself may outlive the shell by its shutdown; it is in the same group
    deadline = time.monotonic() + 60
    while spw.model_processes(data) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = spw.model_processes(data)
    if left:
        spw.kill_pids(left)
    assert not left, f"model processes left after Ctrl-C through a dying pipe: {left}"
