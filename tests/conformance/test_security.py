"""Safe defaults at the edge (issue 12): spillway does not authenticate requests yet, so it
refuses to listen beyond loopback unless told, in so many words, to accept the risk."""

import os
import subprocess
import time
import urllib.request

import spw


def _serve(tmp_path, *extra):
    port = spw.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SPILLWAY_LISTEN", "SPILLWAY_DATA_DIR", "SPILLWAY_CONFIG")}
    env["RUST_LOG"] = "info"
    proc = subprocess.Popen(
        [spw.BIN, "serve", "--listen", f"0.0.0.0:{port}", "--data-dir", str(tmp_path / "data"), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    return port, proc


def test_a_non_loopback_listener_is_refused_without_the_flag(tmp_path):
    port, proc = _serve(tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"refusing to listen on 0.0.0.0:{port}" in out
    assert "--i-know-this-is-unauthenticated" in out and "127.0.0.1" in out
    assert not (tmp_path / "data").exists(), "nothing started"


def test_the_flag_starts_it_and_it_warns(tmp_path):
    port, proc = _serve(tmp_path, "--i-know-this-is-unauthenticated")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_spillway/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "WITHOUT authentication" in out
