"""Safe defaults at the edge (issues 12 and 13): requests are authenticated unless the listener
is loopback and the operator turned authentication off."""

import os
import subprocess
import time
import urllib.error
import urllib.request

import spw


def _serve(tmp_path, *extra):
    port = spw.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SPILLWAY_LISTEN", "SPILLWAY_DATA_DIR", "SPILLWAY_CONFIG")}
    env["RUST_LOG"] = "info"
    proc = subprocess.Popen(
        [spw.BIN, "serve", "--listen", f"0.0.0.0:{port}", "--storage-listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    return port, proc


def test_no_authentication_is_refused_beyond_loopback(tmp_path):
    """`[auth] mode = "none"` only on loopback: anyone who reaches another address could run
    commands on the host."""
    cfg = tmp_path / "none.toml"
    cfg.write_text('[auth]\nmode = "none"\n')
    port, proc = _serve(tmp_path, "--config", str(cfg))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"refusing to listen on 0.0.0.0:{port}" in out
    assert 'mode = \\"none\\"' in out or 'mode = "none"' in out, out
    assert "127.0.0.1" in out
    assert not (tmp_path / "data").exists(), "nothing started"


def test_beyond_loopback_requests_are_authenticated(tmp_path):
    """With authentication on (the default) any address may be used, and an unsigned request
    for anything but the health probe is refused."""
    port, proc = _serve(tmp_path)
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
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_spillway/capacity", timeout=5)
            raise AssertionError("an unsigned admin request was served")
        except urllib.error.HTTPError as e:
            assert e.code in (400, 403), e.code
            assert "MissingAuthenticationToken" in e.headers.get("x-amzn-errortype", "")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "AWS_SHARED_CREDENTIALS_FILE=" in out and "AWS_PROFILE=spillway" in out, out


def _session_and_group(pid: int) -> tuple[int, int]:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[3]), int(fields[4])  # pgrp, session


def test_descendants_that_leave_the_process_group_are_stopped_too(start_server):
    """Issue 12, finding 5: a model that starts `setsid child &` (its own session and process
    group) used to leave the child running after DeleteEndpoint."""
    server = start_server()
    sm = server.sm
    image = f"sh -c 'setsid sleep 3000 & (setsid sh -c \"sleep 3000\" &) ; exec {spw.BIN} builtin-model echo'"
    spw.create_model(sm, "forker", image=image)
    spw.deploy(sm, "forker", [spw.single_variant("forker", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "forker")
    (inst,) = server.instances("forker")
    procs = spw.poll(
        lambda: (p := spw.model_processes(server.data_dir)) and len(p) >= 3 and p,
        what="the model and its two escaped children",
    )
    leader = _session_and_group(inst["pid"])
    escaped = [pid for pid in procs if pid != inst["pid"] and _session_and_group(pid) != leader]
    assert len(escaped) >= 2, f"the children left the group: {procs.keys()}"

    sm.delete_endpoint(EndpointName="forker")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="forker", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    spw.poll(lambda: not spw.model_processes(server.data_dir), timeout=20, what="every process of the instance gone")
    for pid in escaped:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_descendants_that_clear_their_environment_are_stopped_too(start_server):
    """Issue 12: a model that clears its environment before a double fork
    (`env -i setsid sh -c 'sleep &'`) left nothing spillway could find it by (the /proc scan
    looks for SPILLWAY_INSTANCE_ID), so it survived DeleteEndpoint. The instance's shim is a
    child subreaper: the orphan is reparented to it, and it goes with the instance."""
    server = start_server()
    sm = server.sm
    image = f"sh -c 'env -i setsid sh -c \"sleep 3002 & echo \\$! > escaped.pid\"; exec {spw.BIN} builtin-model echo'"
    spw.create_model(sm, "vanisher", image=image)
    spw.deploy(sm, "vanisher", [spw.single_variant("vanisher", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "vanisher")
    (inst,) = server.instances("vanisher")
    pid_file = server.data_dir / "instances" / inst["instanceId"] / "escaped.pid"
    escaped = spw.poll(lambda: pid_file.exists() and pid_file.read_text().strip() and int(pid_file.read_text()), what="the escaped child's pid")
    assert _alive(escaped)
    assert "SPILLWAY_INSTANCE_ID" not in spw._read_environ(str(escaped)), "the child cleared its environment"
    assert escaped not in spw.model_processes(server.data_dir), "the /proc scan cannot see it"
    assert _session_and_group(escaped) != _session_and_group(inst["pid"]), "it left the session"

    sm.delete_endpoint(EndpointName="vanisher")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="vanisher", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    spw.poll(lambda: not _alive(escaped), timeout=20, what="the env-clearing, double-forked child gone")
    assert not spw.model_processes(server.data_dir)


def _soft_nofile(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def test_model_processes_start_with_the_open_file_limit_spillway_was_given(start_server):
    """Issue 12: spillway raises its soft RLIMIT_NOFILE to the hard limit (it holds connections);
    model processes inherited the raised limit. They get the one spillway was started with."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert hard > 300, f"this test needs a hard open-file limit above 300 (it is {hard})"
    server = start_server(start=False)
    server.nofile = (300, hard)
    server.start()
    assert _soft_nofile(server.proc.pid) == hard, "spillway raised its own soft limit"
    sm = server.sm
    image = f"sh -c 'sh -c \"sleep 3003\" & exec {spw.BIN} builtin-model echo'"
    spw.create_model(sm, "limited", image=image)
    spw.deploy(sm, "limited", [spw.single_variant("limited", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "limited")
    procs = spw.poll(lambda: (p := spw.model_processes(server.data_dir)) and len(p) >= 3 and p, what="the shim, the model and its child")
    limits = {pid: _soft_nofile(pid) for pid in procs}
    assert set(limits.values()) == {300}, limits


def test_a_flood_of_idle_connections_leaves_healthy_instances_alone(start_server):
    """Issue 12, finding 2: at RLIMIT_NOFILE 512, 700 idle connections used to exhaust spillway's
    descriptors; it then read /proc as "the model exited", killed a healthy instance and marked
    the endpoint crash-looping. Now connections beyond the budget are shed at the door."""
    import socket

    server = start_server(start=False)
    server.nofile = 512
    server.start()
    sm = server.sm
    spw.create_model(sm, "steady")
    spw.deploy(sm, "steady", [spw.single_variant("steady", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "steady")
    (before,) = server.instances("steady")
    events_before = len(server.events("steady"))

    flood = []
    try:
        for _ in range(700):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            flood.append(s)
        time.sleep(3)  # several health-check rounds while the flood holds
        assert server.running(), "spillway survived the flood"
    finally:
        for s in flood:
            s.close()

    spw.poll(lambda: server.admin("GET", "health")[0] == 200, what="the control plane answers again")
    (after,) = server.instances("steady")
    assert after["instanceId"] == before["instanceId"], "the healthy instance was not replaced"
    kinds = [e["kind"] for e in server.events("steady")[events_before:]]
    for bad in ("InstanceExited", "InstanceUnhealthy", "HealthCheckFailed", "CrashLoop", "InstanceLost"):
        assert bad not in kinds, f"{bad} during the flood: {kinds}"
    _, _, metrics = server.http("GET", "/metrics")
    shed = [l for l in metrics.decode().splitlines() if l.startswith("spillway_connections_shed_total")]
    assert shed and float(shed[0].split()[-1]) > 0, shed

    # New instances launch once the flood is over.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="steady", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}]
    )
    spw.wait_in_service(sm, "steady")
    assert len(server.instances("steady")) == 2


def _failure_reason(sm, endpoint):
    def failed():
        d = sm.describe_endpoint(EndpointName=endpoint)
        return d if d["EndpointStatus"] == "Failed" else None

    return spw.poll(failed, timeout=60, what=f"{endpoint} Failed")["FailureReason"]


def test_model_data_that_never_arrives_or_explodes_fails_the_endpoint(start_server, tmp_path):
    """Issue 12, finding 4: a FIFO as ModelDataUrl left an endpoint Creating forever (and
    undeletable); a .tar.gz could unpack to any size. Both now fail the endpoint with a reason,
    an event, and nothing left behind."""
    import gzip
    import io
    import tarfile

    server = start_server(provisioning={"model_data_max_bytes": 1 << 20, "deadline_override_seconds": 30})
    sm = server.sm
    fifo = tmp_path / "weights.tar.gz"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    bomb.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    assert bomb.stat().st_size < 1 << 20

    for name, url, says in [
        ("fifo", f"file://{fifo}", "not a directory or a regular file"),
        ("bomb", f"file://{bomb}", "model_data_max_bytes"),
    ]:
        spw.create_model(sm, name, ModelDataUrl=url)
        spw.deploy(sm, name, [spw.single_variant(name, "ml.m5.xlarge")])
        reason = _failure_reason(sm, name)
        assert says in reason, reason
        attempts = [e for e in server.events(name) if e["kind"] == "LaunchAttempt"]
        assert attempts and attempts[-1]["result"] == "Failed" and says in attempts[-1]["message"]
        sm.delete_endpoint(EndpointName=name)
    assert not spw.model_processes(server.data_dir)
    unpacked = list((server.data_dir / "instances").glob("*/model/zeros.bin"))
    assert not unpacked, "nothing of the bomb was written"


import json  # noqa: E402
import pytest  # noqa: E402


def _raw(server, method, path, headers, body=b""):
    """One HTTP/1.1 request with exactly these headers; returns (status, parsed JSON or None)."""
    import socket

    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head.encode() + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status = int(raw.split(b" ", 2)[1])
    payload = raw.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


@pytest.mark.unauthenticated
@pytest.mark.parametrize("fast_path", [True, False])
def test_dns_rebinding_and_cross_origin_requests_are_refused(start_server, fast_path):
    """Issue 12: a web page in the operator's browser can reach a loopback server through a
    name it rebinds to 127.0.0.1, or post to it cross-origin. Requests naming a host the
    server does not answer for, and browser mutations from another origin, are refused."""
    server = start_server(config={"router": {"fast_path": fast_path}, "allowed_hosts": ["proxy.example"]})
    spw.create_model(server.sm, "m")
    spw.deploy(server.sm, "e", [spw.single_variant("m", "ml.m5.xlarge")])
    spw.wait_in_service(server.sm, "e")
    me = f"127.0.0.1:{server.port}"
    list_endpoints = {"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"}
    invoke = "/endpoints/e/invocations"

    for host in (me, "localhost", f"proxy.example:{server.port}", "[::1]"):
        assert _raw(server, "POST", "/", {"Host": host, **list_endpoints}, b"{}")[0] == 200, host
        assert _raw(server, "POST", invoke, {"Host": host, "Content-Type": "text/plain"}, b"hi")[0] == 200, host
    for host in ("evil.example", f"rebound.evil.example:{server.port}"):
        status, body = _raw(server, "POST", "/", {"Host": host, **list_endpoints}, b"{}")
        assert (status, body["__type"]) == (403, "AccessDeniedException"), host
        status, body = _raw(server, "POST", invoke, {"Host": host, "Content-Type": "text/plain"}, b"hi")
        assert (status, body["__type"]) == (403, "AccessDeniedException"), host
        assert _raw(server, "GET", "/_spillway/capacity", {"Host": host})[0] == 403

    evil = {"Host": me, "Origin": "http://evil.example"}
    status, body = _raw(server, "POST", "/", {**evil, **list_endpoints}, b"{}")
    assert (status, body["__type"]) == (403, "AccessDeniedException")
    assert "Cross-origin" in body["message"]
    status, body = _raw(server, "POST", invoke, {**evil, "Content-Type": "text/plain"}, b"hi")
    assert (status, body["__type"]) == (403, "AccessDeniedException")
    status, _ = _raw(server, "PUT", "/_spillway/capacity/ml.m5.xlarge", {**evil, "Content-Type": "application/json"}, b'{"slots": 9}')
    assert status == 403
    assert server.capacity()["ml.m5.xlarge"]["slots"] == 4, "the refused pin changed nothing"
    assert _raw(server, "GET", "/_spillway/capacity", evil)[0] == 200, "reads are not mutations"
    own = {"Host": me, "Origin": f"http://{me}"}
    assert _raw(server, "POST", invoke, {**own, "Content-Type": "text/plain"}, b"hi")[0] == 200
