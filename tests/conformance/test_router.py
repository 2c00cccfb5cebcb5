"""The data plane, driven with boto3's sagemaker-runtime client: response streaming, routing
strategies, and every failure mode with the code and status the spec gives."""

from __future__ import annotations

import collections
import http.client
import json
import concurrent.futures
import os
import re
import signal
import time

import pytest

import spw


def slow_and_fast_endpoint(server, name: str, strategy: str):
    sm = server.sm
    spw.create_model(sm, f"{name}-fast")
    spw.create_model(sm, f"{name}-slow", env={"ECHO_INVOCATION_DELAY_MS": "150"})
    spw.deploy(
        sm,
        name,
        [
            spw.pooled_variant(
                f"{name}-fast",
                spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2, f"{name}-slow")),
                count=2,
                RoutingConfig={"RoutingStrategy": strategy},
            )
        ],
    )
    spw.wait_in_service(sm, name)


def spread(server, name: str, threads: int = 4, total: int = 80) -> collections.Counter:
    rt = server.client("sagemaker-runtime", retries=1)

    def one(_):
        r = rt.invoke_endpoint(EndpointName=name, Body=b"x")
        return r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return collections.Counter(pool.map(one, range(total)))


def test_least_outstanding_requests_favours_the_faster_instance(start_server):
    server = start_server()
    slow_and_fast_endpoint(server, "lor", "LEAST_OUTSTANDING_REQUESTS")
    seen = spread(server, "lor")
    assert seen["ml.g6.2xlarge"] > 2 * seen["ml.m5.xlarge"], seen


def test_random_spreads_evenly_regardless_of_speed(start_server):
    server = start_server()
    slow_and_fast_endpoint(server, "rnd", "RANDOM")
    seen = spread(server, "rnd", threads=2, total=60)
    # Uniform choice: the slow instance still gets a fair share (binomial, p=0.5, n=60).
    assert 15 <= seen["ml.m5.xlarge"] <= 45, seen


def big_slow_and_small_fast_endpoint(server, name: str):
    """CAPACITY_AWARE over an ml.g6.2xlarge (24 GiB of GPU memory in the catalog: 6x an
    ml.m5.xlarge's 4 vCPUs) whose model answers in 100 ms, and an ml.m5.xlarge answering at once."""
    sm = server.sm
    spw.create_model(sm, f"{name}-fast")
    spw.create_model(sm, f"{name}-slow", env={"ECHO_INVOCATION_DELAY_MS": "100"})
    pools = spw.pools(("ml.g6.2xlarge", 1, f"{name}-slow"), ("ml.m5.xlarge", 2))
    variant = spw.pooled_variant(f"{name}-fast", pools, count=2, RoutingConfig={"RoutingStrategy": "CAPACITY_AWARE"})
    spw.deploy(sm, name, [variant])
    spw.wait_in_service(sm, name)


def test_capacity_aware_routing_learns_what_each_type_carries(start_server):
    """Measured (the default): the catalog says the g6 carries six times more, the first requests
    follow it; once the fleet sampler has measured both types, the fast small instance takes
    most of the traffic."""
    server = start_server()
    big_slow_and_small_fast_endpoint(server, "cam")
    first = spread(server, "cam", threads=4, total=40)
    assert first["ml.g6.2xlarge"] > 0, first
    deadline = time.monotonic() + 30
    while True:
        time.sleep(1.5)  # the sampler measures once a second
        seen = spread(server, "cam", threads=4, total=80)
        if seen["ml.m5.xlarge"] > 4 * seen["ml.g6.2xlarge"] or time.monotonic() > deadline:
            break
    assert seen["ml.m5.xlarge"] > 4 * seen["ml.g6.2xlarge"], (first, seen)


def test_capacity_aware_routing_from_the_catalog_only(start_server):
    """`[router] capacity_source = "catalog"`: the g6 is weighted six times an m5, whatever it
    answers, so it keeps most of the traffic."""
    server = start_server(config={"router": {"capacity_source": "catalog"}})
    big_slow_and_small_fast_endpoint(server, "cac")
    spread(server, "cac", threads=4, total=20)
    time.sleep(2)
    seen = spread(server, "cac", threads=4, total=60)
    assert seen["ml.g6.2xlarge"] > 2 * seen["ml.m5.xlarge"], seen


def test_response_stream_is_read_by_boto3_chunk_by_chunk(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "stream", "tokens", env={"ECHO_STREAM_INTERVAL_MS": "200"})
    resp = server.rt.invoke_endpoint_with_response_stream(EndpointName="stream", Body=b"stream:5")
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    parts, arrivals = [], []
    for event in resp["Body"]:
        parts.append(event["PayloadPart"]["Bytes"])
        arrivals.append(time.monotonic())
    assert b"".join(parts) == b"token-0 token-1 token-2 token-3 token-4 "
    assert len(parts) == 5
    # Streamed as produced (one token every 200 ms), not buffered until the end.
    assert arrivals[-1] - arrivals[0] > 0.4


def test_model_error_carries_the_models_status_and_message(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "me", "teapot", env={"ECHO_INVOCATION_STATUS": "418"})
    try:
        server.rt.invoke_endpoint(EndpointName="me", Body=b"x")
        raise AssertionError("expected ModelError")
    except server.rt.exceptions.ModelError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert e.response["OriginalStatusCode"] == 418
        assert '"body": "x"' in e.response["OriginalMessage"] or '"body":"x"' in e.response["OriginalMessage"]


def test_model_timeout_is_a_model_error(start_server):
    server = start_server(config={"router": {"model_timeout_seconds": 1}})
    spw.deploy_echo(server.sm, "to", "sleepy", env={"ECHO_INVOCATION_DELAY_MS": "4000"})
    code, msg, status = spw.error_of(server.rt.invoke_endpoint, EndpointName="to", Body=b"x")
    assert (code, status) == ("ModelError", 424)
    assert "timed out" in msg


def test_payload_over_6_mb_is_rejected(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "big")
    code, msg, status = spw.error_of(server.rt.invoke_endpoint, EndpointName="big", Body=b"x" * (6 * 1024 * 1024 + 1))
    assert (code, status) == ("ValidationError", 400)
    assert "6291456" in msg
    # The endpoint keeps serving, up to exactly 6 MB (the limit is inclusive).
    r = server.rt.invoke_endpoint(EndpointName="big", Body=b"x" * 1024)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    r = server.rt.invoke_endpoint(EndpointName="big", Body=b"y" * (6 * 1024 * 1024))
    assert len(json.loads(r["Body"].read())["body"]) == 6 * 1024 * 1024
    # And the server still stops promptly on SIGTERM (the fixture's teardown fails the test if not).
    assert server.terminate(timeout=20) == 0


def test_concurrency_limit_queues_briefly_then_throttles(start_server):
    server = start_server(config={"router": {"max_concurrent_requests_per_instance": 1, "queue_timeout_ms": 300}})
    spw.deploy_echo(server.sm, "lim", "slow", env={"ECHO_INVOCATION_DELAY_MS": "1500"})
    # No retries: botocore retries a ThrottlingException, and the retry may find the slot free.
    rt = server.client("sagemaker-runtime", retries=0)
    rt.invoke_endpoint(EndpointName="lim", Body=b"warm-up")  # the client's first call is slow

    def call():
        try:
            rt.invoke_endpoint(EndpointName="lim", Body=b"x")
            return "ok"
        except rt.exceptions.ClientError as e:
            return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(call)
        time.sleep(0.4)  # the first request now holds the only slot for another ~1.1 s
        started = time.monotonic()
        second = call()
        waited = time.monotonic() - started
        assert first.result(timeout=30) == "ok"
    # Throttled, not served once the first finished: it queued for queue_timeout_ms, then gave up.
    assert second == ("ThrottlingException", 429), second
    assert waited >= 0.25, waited


def test_queued_requests_are_served_when_an_instance_frees_up(start_server):
    server = start_server(config={"router": {"max_concurrent_requests_per_instance": 1, "queue_timeout_ms": 5000}})
    spw.deploy_echo(server.sm, "q", "slowish", env={"ECHO_INVOCATION_DELAY_MS": "300"})
    rt = server.client("sagemaker-runtime", retries=1)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda _: rt.invoke_endpoint(EndpointName="q", Body=b"x")["ResponseMetadata"]["HTTPStatusCode"], range(3)))
    assert codes == [200, 200, 200]


def test_a_refused_connection_is_retried_on_another_instance(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "retry", count=2, RoutingConfig={"RoutingStrategy": "RANDOM"})
    victim = server.instances("retry")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    rt = server.client("sagemaker-runtime", retries=1)
    # Right after the kill, before the controller notices, half the picks hit the dead port.
    for _ in range(30):
        assert rt.invoke_endpoint(EndpointName="retry", Body=b"x")["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_load_with_an_instance_killed_mid_run_loses_only_its_in_flight_requests(start_server):
    """Bounded loopback load (4 clients, ~4 s) against 3 instances; one is SIGKILLed mid-run.
    Only requests in flight on it may fail (at most one per client), the router keeps serving
    without a restart, and the instance is replaced."""
    server = start_server()
    sm = server.sm
    spw.deploy_echo(
        sm,
        "load",
        "work",
        env={"ECHO_INVOCATION_DELAY_MS": "20"},
        count=3,
        RoutingConfig={"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    )
    victim = server.instances("load")[0]
    rt = server.client("sagemaker-runtime", retries=1)
    results: list[tuple[float, str]] = []
    killed_at: list[float] = []
    stop_at = time.monotonic() + 4.0

    def client(_):
        out = []
        while time.monotonic() < stop_at:
            try:
                rt.invoke_endpoint(EndpointName="load", Body=b"x")
                out.append((time.monotonic(), "ok"))
            except Exception as e:  # noqa: BLE001 - counted below
                out.append((time.monotonic(), repr(e)))
        return out

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(client, i) for i in range(4)]
        time.sleep(1.5)
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at.append(time.monotonic())
        for f in futures:
            results.extend(f.result())
    errors = [r for r in results if r[1] != "ok"]
    oks_after = [r for r in results if r[1] == "ok" and r[0] > killed_at[0] + 0.5]
    assert len(results) > 100, len(results)
    assert len(errors) <= 4, errors
    assert oks_after, "the router did not recover"
    spw.poll(
        lambda: spw.describe(sm, "load")["ProductionVariants"][0]["CurrentInstanceCount"] == 3
        and victim["instanceId"] not in {i["instanceId"] for i in server.instances("load")},
        timeout=30,
        what="replacement of the killed instance",
    )
    assert "InstanceExited" in [e["kind"] for e in server.events("load")]


def test_connections_to_the_model_are_pooled_and_reused(start_server):
    """Sequential invocations over one client connection reuse one model connection: the echo
    model reports the peer address of the connection each request arrived on."""
    server = start_server(config={"router": {"io_threads": 2}})
    spw.deploy_echo(server.sm, "pooled")
    rt = server.client("sagemaker-runtime", retries=1)
    peers = {json.loads(rt.invoke_endpoint(EndpointName="pooled", Body=b"x")["Body"].read())["peer"] for _ in range(40)}
    assert len(peers) == 1, peers
    # Concurrent clients need more than one connection, but never one per request.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        more = set(
            pool.map(
                lambda _: json.loads(rt.invoke_endpoint(EndpointName="pooled", Body=b"x")["Body"].read())["peer"],
                range(80),
            )
        )
    assert 1 <= len(more) <= 8, more


def _raw_post(server, path: str, chunks, headers: dict[str, str]):
    """POST with a chunked (length-less) body, as a streaming client sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", path)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for c in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(c), c))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


@pytest.mark.unauthenticated
def test_a_chunked_request_body_is_streamed_to_the_model(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "chunked")
    chunks = [b"a" * 100_000, b"b" * 200_000, b"c" * 7]
    status, headers, body = _raw_post(
        server, "/endpoints/chunked/invocations", chunks, {"Content-Type": "text/plain"}
    )
    assert status == 200, body[:500]
    echoed = json.loads(body)
    assert echoed["body"] == "".join(c.decode() for c in chunks)
    assert echoed["contentType"] == "text/plain"


@pytest.mark.unauthenticated
def test_a_chunked_request_body_over_6_mb_is_rejected_and_the_endpoint_keeps_serving(start_server):
    server = start_server()
    spw.deploy_echo(server.sm, "chunkbig")
    chunks = [b"x" * (1024 * 1024)] * 7  # 7 MiB, no Content-Length to check up front
    status, headers, body = _raw_post(server, "/endpoints/chunkbig/invocations", chunks, {})
    assert status == 400, body[:500]
    assert headers.get("x-amzn-errortype", "").startswith("ValidationError"), headers
    assert b"6291456" in body
    r = server.rt.invoke_endpoint(EndpointName="chunkbig", Body=b"small")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_an_in_flight_invocation_finishes_when_the_server_is_stopped(start_server):
    """SIGTERM stops accepting new work but lets the running request answer before exiting."""
    server = start_server()
    spw.deploy_echo(server.sm, "drain", "slow", env={"ECHO_INVOCATION_DELAY_MS": "1500"})
    rt = server.client("sagemaker-runtime", retries=0)

    def in_flight():
        _, _, body = server.http("GET", "/metrics")
        return re.search(rb'^spillway_concurrent_requests_per_model\{[^}]*endpoint="drain"[^}]*\} [1-9]', body, re.M)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: rt.invoke_endpoint(EndpointName="drain", Body=b"x"))
        # Stop once the request has reached the model (it takes 1.5 s there).
        spw.poll(in_flight, timeout=10, interval=0.05, what="the invocation to be in flight")
        server.proc.send_signal(signal.SIGTERM)
        r = pending.result(timeout=30)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert server.proc.wait(timeout=30) == 0
