"""Model logs as CloudWatch Logs: every instance's stdout and stderr, read back with boto3's `logs`
client, the aws CLI and the SageMaker SDK's wait loop as log group
`/aws/sagemaker/Endpoints/<endpoint>`, stream `<variant>/<instance id>`. Every answer is checked
against botocore's output shape; tokens, bounds, retention, the failure path (a model that dies at
start), permissions and the audit trail are covered too."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import botocore.session
import pytest
from botocore.exceptions import ClientError

import spw

LOG_MODEL = spw.HERE / "models" / "log_model.py"
AWS = pathlib.Path(sys.executable).parent / "aws"


def group(endpoint: str) -> str:
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def image(*args) -> str:
    return " ".join([spw.python(), str(LOG_MODEL), *map(str, args)])


def deploy_logged(server, endpoint: str, *args, count: int = 1, variant: str = "AllTraffic", wait=True):
    """Deploys `endpoint` running log_model.py with `args` on `count` instances."""
    sm = server.sm
    spw.create_model(sm, f"{endpoint}-model", image=image(*args))
    spw.deploy(sm, endpoint, [spw.single_variant(f"{endpoint}-model", "ml.m5.xlarge", count=count, name=variant)])
    return spw.wait_in_service(sm, endpoint) if wait else None


def streams_of(server, endpoint: str) -> list[str]:
    return sorted(f"{i['variantName']}/{i['instanceId']}" for i in server.instances(endpoint))


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# botocore's output shapes


def check_shape(shape, value, path="") -> None:
    """`value` is what botocore parsed for `shape`: every member known, every required member
    there, every scalar of its type and within its modelled constraints."""
    t = shape.type_name
    where = path or shape.name
    if t == "structure":
        assert isinstance(value, dict), f"{where}: {value!r} is not a structure"
        for k, v in value.items():
            if k == "ResponseMetadata" and not path:
                continue
            assert k in shape.members, f"{where}: {k} is not a member of {shape.name}"
            check_shape(shape.members[k], v, f"{where}.{k}")
        for r in shape.required_members:
            assert r in value, f"{where}: required member {r} missing"
    elif t == "list":
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for i, x in enumerate(value):
            check_shape(shape.member, x, f"{where}[{i}]")
    elif t == "string":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        if shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        assert lo is None or len(value) >= lo, f"{where}: {value!r} shorter than {lo}"
        assert hi is None or len(value) <= hi, f"{where}: longer than {hi}"
    elif t in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
        lo = shape.metadata.get("min")
        assert lo is None or value >= lo, f"{where}: {value} below {lo}"
    elif t == "boolean":
        assert isinstance(value, bool), f"{where}: {value!r} is not a boolean"
    elif t == "timestamp":
        assert isinstance(value, dt.datetime), f"{where}: {value!r} is not a timestamp"
    else:
        pytest.fail(f"{where}: no check for shapes of type {t}")


def checked(client, operation: str, **params) -> dict:
    """Calls `operation` (its Python name) and checks the answer against its output shape."""
    resp = getattr(client, operation)(**params)
    op_name = client.meta.method_to_api_mapping[operation]
    check_shape(client.meta.service_model.operation_model(op_name).output_shape, resp)
    return resp


def error(fn, **params) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        fn(**params)
    err = e.value.response["Error"]
    return err["Code"], err["Message"]


def messages(client, endpoint: str, stream: str, **kw) -> list[str]:
    resp = checked(client, "get_log_events", logGroupName=group(endpoint), logStreamName=stream, startFromHead=True, **kw)
    return [e["message"] for e in resp["events"]]


def wait_for_line(client, endpoint: str, stream: str, line: str, timeout: float = 20) -> list[str]:
    return spw.poll(
        lambda: (m := messages(client, endpoint, stream)) and line in m and m,
        timeout=timeout,
        what=f"{line!r} in {stream}",
    )


def aws(server, *args, ok=True):
    """`aws <args> --output json`, configured only by what spillway prints at start."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **spw.cli_environment(server),
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
    }
    p = subprocess.run(
        [sys.executable, str(AWS), *args, "--output", "json"],
        cwd=spw.REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    if ok:
        assert p.returncode == 0, f"aws {' '.join(args)} -> rc={p.returncode}\n{p.stderr}"
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr


# --------------------------------------------------------------------------------------------
# naming, order, timestamps


def test_groups_streams_and_events_read_back_with_boto3(server):
    logs = server.client("logs")
    before = now_ms()
    deploy_logged(server, "web", "serve", count=2)
    deploy_logged(server, "api", "serve", variant="Blue")
    streams = streams_of(server, "web")
    assert len(streams) == 2 and all(s.startswith("AllTraffic/i-") for s in streams)
    for i, body in enumerate(["first call", "second call", "third call"]):
        spw.invoke(server.rt, "web", body)

    # The groups: one per endpoint, as SageMaker names them, ASCII order.
    groups = checked(logs, "describe_log_groups")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group("api"), group("web")]
    web = groups[1]
    assert web["arn"] == f"arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group:{group('web')}:*"
    assert web["logGroupArn"] == web["arn"][:-2]
    assert web["storedBytes"] > 0 and web["logGroupClass"] == "STANDARD"
    assert before - 1000 <= web["creationTime"] <= now_ms()
    assert [g["logGroupName"] for g in checked(logs, "describe_log_groups", logGroupNamePrefix=group("w"))["logGroups"]] == [group("web")]
    pattern = checked(logs, "describe_log_groups", logGroupNamePattern="api")["logGroups"]
    assert [sorted(g) for g in pattern] == [["arn", "creationTime", "logGroupName"]], "a pattern lists three members"
    assert checked(logs, "describe_log_groups", logGroupNamePattern="API")["logGroups"] == [], "case-sensitive"
    paged = logs.get_paginator("describe_log_groups").paginate(PaginationConfig={"PageSize": 1})
    assert [g["logGroupName"] for p in paged for g in p["logGroups"]] == [group("api"), group("web")]

    # The streams: <variant>/<instance id>, one per instance.
    listed = checked(logs, "describe_log_streams", logGroupName=group("web"))["logStreams"]
    assert [s["logStreamName"] for s in listed] == streams
    for s in listed:
        assert s["arn"] == f"arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group:{group('web')}:log-stream:{s['logStreamName']}"
        assert before - 1000 <= s["creationTime"] <= s["firstEventTimestamp"] <= s["lastEventTimestamp"] <= now_ms()
    (blue,) = checked(logs, "describe_log_streams", logGroupIdentifier=f"arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group:{group('api')}:*")["logStreams"]
    assert blue["logStreamName"] == streams_of(server, "api")[0] and blue["logStreamName"].startswith("Blue/i-")
    assert checked(logs, "describe_log_streams", logGroupName=group("web"), logStreamNamePrefix="Other/")["logStreams"] == []
    by_time = checked(logs, "describe_log_streams", logGroupName=group("web"), orderBy="LastEventTime", descending=True)["logStreams"]
    assert [s["lastEventTimestamp"] for s in by_time] == sorted((s["lastEventTimestamp"] for s in by_time), reverse=True)
    one = checked(logs, "describe_log_streams", logGroupName=group("web"), limit=1)
    assert len(one["logStreams"]) == 1 and "nextToken" in one
    rest = checked(logs, "describe_log_streams", logGroupName=group("web"), limit=1, nextToken=one["nextToken"])
    assert [s["logStreamName"] for s in one["logStreams"] + rest["logStreams"]] == streams and "nextToken" not in rest

    # The events: every line, in the order written, stamped in ms, stdout and stderr together.
    for s in streams:
        wait_for_line(logs, "web", s, "ready to serve")

    def invoked() -> list[str]:
        return sorted(m for s in streams for m in messages(logs, "web", s) if m.startswith("invoked: "))

    spw.poll(lambda: len(invoked()) == 3, what="the three invocations' lines")
    assert invoked() == ["invoked: first call", "invoked: second call", "invoked: third call"]
    got = {}
    for s in streams:
        resp = checked(logs, "get_log_events", logGroupName=group("web"), logStreamName=s, startFromHead=True)
        got[s] = resp["events"]
        msgs = [e["message"] for e in resp["events"]]
        iid = s.split("/", 1)[1]
        assert msgs[0].startswith("model starting on port ") and msgs[0].endswith(f"(instance {iid})"), msgs
        assert msgs[1:4] == ["stderr: loading weights from /opt/ml/model", "loaded 3 shards", "ready to serve"], msgs
        times = [e["timestamp"] for e in resp["events"]]
        assert times == sorted(times) and before - 1000 <= times[0] <= times[-1] <= now_ms()
        assert all(e["ingestionTime"] >= e["timestamp"] for e in resp["events"])
    # The invocations' lines come in the order of the invocations, each on the instance that served it.
    ordered = sorted((e for s in streams for e in got[s] if e["message"].startswith("invoked: ")), key=lambda e: e["timestamp"])
    assert [e["message"] for e in ordered] == ["invoked: first call", "invoked: second call", "invoked: third call"]


def test_get_log_events_pages_both_ways_until_the_token_comes_back(server):
    logs = server.client("logs")
    deploy_logged(server, "pages", "serve", 120)
    (stream,) = streams_of(server, "pages")
    everything = wait_for_line(logs, "pages", stream, "ready to serve")
    assert [m for m in everything if m.startswith("startup line")] == [f"startup line {i:04d}" for i in range(120)]
    kw = dict(logGroupName=group("pages"), logStreamName=stream, limit=7)

    # Forward from the head, page by page, until the same token comes back.
    forward, token, pages = [], None, 0
    while True:
        resp = checked(logs, "get_log_events", startFromHead=True, **kw, **({"nextToken": token} if token else {}))
        forward += resp["events"]
        pages += 1
        assert len(resp["events"]) <= 7
        if resp["nextForwardToken"] == token:
            assert resp["events"] == []
            break
        token = resp["nextForwardToken"]
    assert [e["message"] for e in forward] == everything and pages == -(-len(everything) // 7) + 1
    end_token = token

    # Backward from the end (the default), until the same backward token comes back.
    resp = checked(logs, "get_log_events", **kw)
    assert [e["message"] for e in resp["events"]] == everything[-7:], "the latest events first"
    backward = resp["events"]
    forward_from_latest = resp["nextForwardToken"]
    token = resp["nextBackwardToken"]
    while True:
        resp = checked(logs, "get_log_events", nextToken=token, **kw)
        if resp["nextBackwardToken"] == token:
            assert resp["events"] == []
            break
        backward = resp["events"] + backward
        token = resp["nextBackwardToken"]
    assert [e["message"] for e in backward] == everything

    # Both forward tokens at the end see what comes next, and only that.
    spw.invoke(server.rt, "pages", "later")
    wait_for_line(logs, "pages", stream, "invoked: later")
    for t in (end_token, forward_from_latest):
        resp = checked(logs, "get_log_events", nextToken=t, **kw)
        assert [e["message"] for e in resp["events"]] == ["invoked: later"]

    # startTime is inclusive, endTime exclusive.
    stamps = [e["timestamp"] for e in forward]
    mid = stamps[len(stamps) // 2]
    inside = checked(logs, "get_log_events", startFromHead=True, startTime=mid, endTime=mid + 1,
                     logGroupName=group("pages"), logStreamName=stream)["events"]
    assert [e["message"] for e in inside] == [e["message"] for e in forward if e["timestamp"] == mid]
    assert checked(logs, "get_log_events", startTime=mid, endTime=mid, logGroupName=group("pages"), logStreamName=stream)["events"] == []

    # Missing streams and groups, and conflicting parameters.
    assert error(logs.get_log_events, logGroupName=group("pages"), logStreamName="AllTraffic/i-0000")[0] == "ResourceNotFoundException"
    code, msg = error(logs.get_log_events, logGroupName=group("nope"), logStreamName=stream)
    assert (code, msg) == ("ResourceNotFoundException", "The specified log group does not exist.")
    assert error(logs.get_log_events, logGroupName=group("pages"),
                 logGroupIdentifier=group("pages"), logStreamName=stream)[0] == "InvalidParameterException"
    assert error(logs.describe_log_streams, logGroupName=group("pages"), orderBy="LastEventTime",
                 logStreamNamePrefix="All") == ("InvalidParameterException", "Cannot order by LastEventTime with a logStreamNamePrefix.")


def test_filter_log_events_terms_phrases_alternatives_and_pages(server):
    logs = server.client("logs")
    deploy_logged(server, "filt", "serve", count=2)
    streams = streams_of(server, "filt")
    bodies = [
        "ERROR disk full",
        "WARN slow request",
        "INFO all good",
        "ERROR out of memory, retrying",
        "error lower case",
        "WARN out of memory soon",
    ]
    for b in bodies:
        spw.invoke(server.rt, "filt", b)
        time.sleep(0.01)
    spw.poll(lambda: len([e for e in checked(logs, "filter_log_events", logGroupName=group("filt"), filterPattern="invoked")["events"]]) == len(bodies),
             what="every invocation line")

    def found(**kw) -> list[str]:
        resp = checked(logs, "filter_log_events", logGroupName=group("filt"), **kw)
        assert resp["searchedLogStreams"] == []
        return [e["message"].removeprefix("invoked: ") for e in resp["events"] if e["message"].startswith("invoked: ")]

    assert found(filterPattern="ERROR") == ["ERROR disk full", "ERROR out of memory, retrying"], "case-sensitive terms"
    assert found(filterPattern="ERROR memory") == ["ERROR out of memory, retrying"], "every term"
    assert found(filterPattern='"out of memory"') == ["ERROR out of memory, retrying", "WARN out of memory soon"]
    assert found(filterPattern='"memory, retrying"') == ["ERROR out of memory, retrying"]
    assert found(filterPattern="?ERROR ?WARN") == [b for b in bodies if b.startswith(("ERROR", "WARN"))]
    assert found(filterPattern="?disk ?soon") == ["ERROR disk full", "WARN out of memory soon"]
    assert found(filterPattern="ERROR -retrying") == ["ERROR disk full"]
    assert found(filterPattern="") == bodies
    assert found(interleaved=True) == bodies, "interleaved across both instances' streams by time"

    # Both streams were searched, interleaved by timestamp; events name their stream and are unique.
    events = checked(logs, "filter_log_events", logGroupName=group("filt"))["events"]
    assert {e["logStreamName"] for e in events} == set(streams)
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    assert len({e["eventId"] for e in events}) == len(events)
    one = streams[0]
    only = checked(logs, "filter_log_events", logGroupName=group("filt"), logStreamNames=[one])["events"]
    assert only and {e["logStreamName"] for e in only} == {one}
    assert {e["logStreamName"] for e in checked(logs, "filter_log_events", logGroupName=group("filt"), logStreamNamePrefix="AllTraffic/")["events"]} == set(streams)
    assert checked(logs, "filter_log_events", logGroupName=group("filt"), logStreamNamePrefix="Blue/")["events"] == []
    t0 = events[0]["timestamp"]
    assert all(e["timestamp"] == t0 for e in checked(logs, "filter_log_events", logGroupName=group("filt"), startTime=t0, endTime=t0)["events"])

    # Pages of 2 through botocore's paginator (and by hand) give the same events in the same order.
    pages = list(logs.get_paginator("filter_log_events").paginate(logGroupName=group("filt"), PaginationConfig={"PageSize": 2}))
    assert [e["eventId"] for p in pages for e in p["events"]] == [e["eventId"] for e in events]
    assert all(len(p["events"]) <= 2 for p in pages) and "nextToken" not in pages[-1]
    latest = checked(logs, "filter_log_events", logGroupName=group("filt"), startFromHead=False,
                     startTime=1_704_067_200_000, limit=3)
    assert [e["eventId"] for e in latest["events"]] == [e["eventId"] for e in reversed(events)][:3]
    more = checked(logs, "filter_log_events", logGroupName=group("filt"), startTime=1_704_067_200_000, limit=3,
                   nextToken=latest["nextToken"])
    assert [e["eventId"] for e in more["events"]] == [e["eventId"] for e in reversed(events)][3:6], "the token keeps the direction"

    # What spillway does not take is refused, never silently matched.
    for bad in ['{ $.level = "error" }', "[ip, user]", '"unclosed', "%ERR%"]:
        code, msg = error(logs.filter_log_events, logGroupName=group("filt"), filterPattern=bad)
        assert code == "InvalidParameterException", (bad, code, msg)
    assert error(logs.filter_log_events, logGroupName=group("filt"), logStreamNames=[one], logStreamNamePrefix="A")[0] == "InvalidParameterException"
    assert error(logs.filter_log_events, logGroupName=group("filt"), startFromHead=False, startTime=0)[0] == "InvalidParameterException"
    assert error(logs.filter_log_events, logGroupName=group("gone"))[0] == "ResourceNotFoundException"


def test_the_aws_cli_reads_the_logs(server):
    deploy_logged(server, "cli", "serve")
    (stream,) = streams_of(server, "cli")
    spw.invoke(server.rt, "cli", "ERROR from the cli test")
    spw.poll(lambda: "invoked: ERROR from the cli test" in messages(server.client("logs"), "cli", stream), what="the line")
    _, out, _ = aws(server, "logs", "describe-log-groups", "--log-group-name-prefix", "/aws/sagemaker/Endpoints/")
    assert [g["logGroupName"] for g in out["logGroups"]] == [group("cli")]
    _, out, _ = aws(server, "logs", "describe-log-streams", "--log-group-name", group("cli"))
    assert [s["logStreamName"] for s in out["logStreams"]] == [stream]
    _, out, _ = aws(server, "logs", "get-log-events", "--log-group-name", group("cli"), "--log-stream-name", stream, "--start-from-head")
    assert "ready to serve" in [e["message"] for e in out["events"]]
    assert out["nextForwardToken"].startswith("f/") and out["nextBackwardToken"].startswith("b/")
    _, out, _ = aws(server, "logs", "filter-log-events", "--log-group-name", group("cli"), "--filter-pattern", "ERROR")
    assert [e["message"] for e in out["events"]] == ["invoked: ERROR from the cli test"]
    assert out["events"][0]["logStreamName"] == stream
    _, out, _ = aws(server, "logs", "filter-log-events", "--log-group-name", group("cli"), "--filter-pattern", '"ready to serve"',
                    "--log-stream-name-prefix", "AllTraffic/")
    assert [e["message"] for e in out["events"]] == ["ready to serve"]
    rc, _, err = aws(server, "logs", "filter-log-events", "--log-group-name", group("nope"), ok=False)
    assert rc != 0 and "ResourceNotFoundException" in err


def test_the_sdks_log_helpers_read_every_stream(server, monkeypatch):
    """The SageMaker SDK's own readers: `sagemaker.logs.multi_stream_iter` (behind the
    `Session().logs_for_*` helpers: GetLogEvents from the head with tokens until a page is empty)
    and sagemaker-core's `MultiLogStreamHandler` (DescribeLogStreams by prefix, then
    GetLogEvents with each stream's forward token, again and again)."""
    import types

    import sagemaker.logs
    from sagemaker_core.main import logs as core_logs

    logs = server.client("logs")
    deploy_logged(server, "helpers", "serve", 30, count=2)
    streams = streams_of(server, "helpers")
    whole = {s: wait_for_line(logs, "helpers", s, "ready to serve") for s in streams}
    got = list(sagemaker.logs.multi_stream_iter(logs, group("helpers"), streams))
    assert {s: [e["message"] for i, e in got if streams[i] == s] for s in streams} == whole
    stamps = [e["timestamp"] for _, e in got]
    assert stamps == sorted(stamps), "interleaved by timestamp"

    monkeypatch.setattr(core_logs, "CloudWatchLogsClient", lambda: types.SimpleNamespace(client=logs))
    handler = core_logs.MultiLogStreamHandler(group("helpers"), "AllTraffic", expected_stream_count=2)
    assert handler.ready()
    first = list(handler.get_latest_log_events())
    assert {s: [e["message"] for n, e in first if n == s] for s in streams} == whole
    spw.invoke(server.rt, "helpers", "one more")
    spw.poll(lambda: any("invoked: one more" in messages(logs, "helpers", s) for s in streams), what="the new line")
    assert [e["message"] for _, e in handler.get_latest_log_events()] == ["invoked: one more"]


# --------------------------------------------------------------------------------------------
# the failure path


def test_a_model_that_dies_at_start_leaves_its_last_lines_in_the_stream_the_event_and_the_failure_reason(start_server):
    server = start_server()
    logs, sm = server.client("logs"), server.sm
    deploy_logged(server, "dies", "crash", wait=False)
    d = spw.wait_status(sm, "dies", "Failed", fail_on=("InService",), timeout=60)
    reason = d["FailureReason"]
    assert len(reason) <= 1024
    (hc,) = [e for e in server.events("dies") if e["kind"] == "HealthCheckFailed"]
    stream = f"AllTraffic/{hc['instanceId']}"
    place = f"log stream {stream} in log group {group('dies')}"
    last = '"RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"'
    for text in (reason, hc["message"]):
        assert "exit status: 3" in text, text
        assert place in text, text
        assert text.rstrip().endswith(last), text
        assert '"    model = load()"' in text, text
    failed = next(e for e in server.events("dies") if e["kind"] == "EndpointFailed")
    assert last in failed["message"]
    # The stream holds every line, the traceback last, after the endpoint failed and its instance went.
    spw.poll(lambda: server.instances("dies") == [], what="the failed instance to be stopped")
    msgs = messages(logs, "dies", stream)
    assert msgs[-4:] == [
        "Traceback (most recent call last):",
        '  File "/opt/program/serve.py", line 12, in <module>',
        "    model = load()",
        "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB",
    ]
    assert "loaded 3 shards" in msgs
    found = checked(logs, "filter_log_events", logGroupName=group("dies"), filterPattern='"out of memory"')["events"]
    assert [e["message"] for e in found] == [msgs[-1]]


def test_the_sagemaker_sdk_waits_with_live_logging_and_reports_a_crash(server, monkeypatch, caplog):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in spw.cli_environment(server).items():
        monkeypatch.setenv(k, v)
    import sagemaker
    import sagemaker.session
    from sagemaker.model import Model

    # The SDK polls every 10 s; its loop is the same at 1 s.
    monkeypatch.setattr(sagemaker.session, "EP_LOGGER_POLL", 1)
    session = sagemaker.Session()
    role = f"arn:aws:iam::{spw.ACCOUNT}:role/unused"
    caplog.set_level(logging.INFO, logger="sagemaker")
    ok = Model(image_uri=image("serve", 40), role=role, sagemaker_session=session, name="sdk-logs-model")
    ok.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="sdk-logs",
              endpoint_logging=True, wait=True)
    assert session.sagemaker_client.describe_endpoint(EndpointName="sdk-logs")["EndpointStatus"] == "InService"
    # The wait loop printed the model's lines it paged through (it prints pages that have a token).
    printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("startup line")]
    assert printed[:10] == [f"startup line {i:04d}" for i in range(10)], printed

    crash = Model(image_uri=image("crash"), role=role, sagemaker_session=session, name="sdk-crash-model")
    with pytest.raises(sagemaker.exceptions.UnexpectedStatusException) as e:
        crash.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="sdk-crash",
                     endpoint_logging=True, wait=True)
    assert "RuntimeError: CUDA out of memory" in str(e.value)
    assert group("sdk-crash") in str(e.value)

    # What the SDK called: FilterLogEvents on the endpoint's group, with the printed profile.
    ct = server.client("cloudtrail")
    calls = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "FilterLogEvents"}])["Events"]
    groups = {json.loads(c["CloudTrailEvent"])["requestParameters"]["logGroupName"] for c in calls}
    assert groups == {group("sdk-logs"), group("sdk-crash")}


# --------------------------------------------------------------------------------------------
# bounds and retention


def test_a_chatty_model_stays_within_its_bound_and_never_slows_invocations(start_server):
    bound = 64 * 1024
    server = start_server(config={"logs": {"max_bytes_per_instance": bound}})
    logs = server.client("logs")
    deploy_logged(server, "chatty", "chatty", 300)
    (stream,) = streams_of(server, "chatty")
    stream_dir = server.data_dir / "logs" / "chatty" / stream.split("/")[1]
    # It writes megabytes a second; every invocation still answers, quickly.
    took = []
    for i in range(40):
        t = time.monotonic()
        payload, _, _ = spw.invoke(server.rt, "chatty", f"call {i}")
        took.append(time.monotonic() - t)
        assert payload["body"] == f"call {i}"
    took.sort()
    assert took[len(took) // 2] < 0.5, f"median invocation {took[len(took) // 2]:.3f}s while the model chatters"

    def on_disk() -> tuple[int, int]:
        sizes = []
        for f in stream_dir.glob("*.log"):
            try:
                sizes.append(f.stat().st_size)
            except FileNotFoundError:  # rotated out between the listing and the stat
                pass
        return len(sizes), sum(sizes)

    for _ in range(20):
        files, size = on_disk()
        assert size <= bound, f"{size} bytes on disk, over the bound of {bound}"
        assert files <= 4, f"{files} segments"
        time.sleep(0.15)
    g = checked(logs, "describe_log_groups", logGroupNamePrefix=group("chatty"))["logGroups"][0]
    assert 0 < g["storedBytes"] <= bound
    # What is kept is the latest: the start-up lines were rotated out, the chatter goes on.
    latest = checked(logs, "get_log_events", logGroupName=group("chatty"), logStreamName=stream)["events"]
    assert latest and all(e["message"].startswith(("chatter ", "invoked: ", "[spillway]")) for e in latest)
    first = checked(logs, "get_log_events", logGroupName=group("chatty"), logStreamName=stream, startFromHead=True, limit=1)["events"]
    assert not first[0]["message"].startswith("model starting"), "the oldest lines were rotated out"


def test_logs_outlive_the_endpoint_until_their_retention(start_server):
    server = start_server(config={"logs": {"retention_seconds": 3}})
    logs, sm = server.client("logs"), server.sm
    deploy_logged(server, "brief", "serve")
    deploy_logged(server, "stays", "serve")
    (stream,) = streams_of(server, "brief")
    (staying,) = streams_of(server, "stays")
    wait_for_line(logs, "brief", stream, "ready to serve")
    sm.delete_endpoint(EndpointName="brief")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="brief", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    # Still there right after the endpoint and its instance are gone.
    assert "ready to serve" in messages(logs, "brief", stream)
    assert [s["logStreamName"] for s in checked(logs, "describe_log_streams", logGroupName=group("brief"))["logStreams"]] == [stream]
    # Gone once the retention has passed (the sweep runs every second at this retention).
    spw.poll(lambda: group("brief") not in [g["logGroupName"] for g in checked(logs, "describe_log_groups")["logGroups"]],
             timeout=20, what="the deleted endpoint's logs to expire")
    assert error(logs.get_log_events, logGroupName=group("brief"), logStreamName=stream)[0] == "ResourceNotFoundException"
    assert not (server.data_dir / "logs" / "brief").exists()
    # A running instance's stream is kept however old it is.
    time.sleep(4)
    assert "ready to serve" in messages(logs, "stays", staying)


def test_an_adopted_instance_keeps_its_stream_across_a_crash_of_spillway(start_server):
    server = start_server()
    deploy_logged(server, "kept", "serve")
    (stream,) = streams_of(server, "kept")
    wait_for_line(server.client("logs"), "kept", stream, "ready to serve")
    spw.invoke(server.rt, "kept", "before the crash")
    wait_for_line(server.client("logs"), "kept", stream, "invoked: before the crash")
    server.sigkill()  # the instance's shim and model go on, and so does its capture
    server.restart()
    spw.wait_in_service(server.sm, "kept")
    assert streams_of(server, "kept") == [stream], "the instance was adopted, not replaced"
    spw.invoke(server.rt, "kept", "after the restart")
    msgs = wait_for_line(server.client("logs"), "kept", stream, "invoked: after the restart")
    assert msgs.index("invoked: before the crash") < msgs.index("invoked: after the restart")
    assert msgs.count("ready to serve") == 1


# --------------------------------------------------------------------------------------------
# tokens, permissions, audit


def test_tokens_that_were_not_handed_out_are_refused(server):
    logs = server.client("logs")
    deploy_logged(server, "tok", "serve", count=2)
    a, b = streams_of(server, "tok")
    wait_for_line(logs, "tok", a, "ready to serve")
    first = checked(logs, "get_log_events", logGroupName=group("tok"), logStreamName=a, startFromHead=True, limit=1)
    token = first["nextForwardToken"]
    forged = token[:2] + ("0" if token[2] != "0" else "1") + token[3:]
    bad = ["f/", "garbage", "f/zz", token + "00", forged, "b/" + token[2:], token.replace("f/", "x/")]
    for t in bad:
        code, msg = error(logs.get_log_events, logGroupName=group("tok"), logStreamName=a, nextToken=t)
        assert (code, msg) == ("InvalidParameterException", "The specified nextToken is invalid."), t
    # A token is the stream's, and a filter's token is that filter's.
    assert error(logs.get_log_events, logGroupName=group("tok"), logStreamName=b, nextToken=token)[0] == "InvalidParameterException"
    page = checked(logs, "filter_log_events", logGroupName=group("tok"), limit=1)
    assert error(logs.filter_log_events, logGroupName=group("tok"), limit=1, filterPattern="ready", nextToken=page["nextToken"])[0] == "InvalidParameterException"
    assert error(logs.filter_log_events, logGroupName=group("tok"), nextToken=token)[0] == "InvalidParameterException"
    assert error(logs.describe_log_streams, logGroupName=group("tok"), nextToken=token)[0] == "InvalidParameterException"
    assert error(logs.describe_log_groups, nextToken="nonsense")[0] == "InvalidParameterException"
    # Out-of-range values the SDK would refuse itself, sent as raw requests.
    for op, body in [
        ("GetLogEvents", {"logGroupName": group("tok"), "logStreamName": a, "limit": 0}),
        ("GetLogEvents", {"logGroupName": group("tok"), "logStreamName": a, "limit": 10001}),
        ("DescribeLogStreams", {"logGroupName": group("tok"), "limit": 51}),
        ("GetLogEvents", {"logGroupName": group("tok")}),
        ("FilterLogEvents", {"logGroupName": group("tok"), "startTime": -1}),
        ("DescribeLogStreams", {"logGroupName": "no spaces allowed"}),
    ]:
        status, _, raw = server.http("POST", "/", json.dumps(body).encode(), {
            "X-Amz-Target": f"Logs_20140328.{op}", "Content-Type": "application/x-amz-json-1.1"})
        err = json.loads(raw)
        assert (status, err["__type"]) == (400, "InvalidParameterException"), (op, body, err)


def make_user(server, name, policy):
    iam = server.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_every_logs_call_needs_logs_permissions_and_is_in_the_audit_trail(server):
    admin = server.client("logs")
    deploy_logged(server, "guarded", "serve")
    deploy_logged(server, "other", "serve")
    (stream,) = streams_of(server, "guarded")
    wait_for_line(admin, "guarded", stream, "ready to serve")
    before = spw.utcnow() - dt.timedelta(seconds=1)

    # SageMaker rights are not logs rights.
    sm_only = server.client("logs", keys=make_user(server, "sm-only", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}],
    }))
    calls = [
        (sm_only.describe_log_groups, {}),
        (sm_only.describe_log_streams, {"logGroupName": group("guarded")}),
        (sm_only.get_log_events, {"logGroupName": group("guarded"), "logStreamName": stream}),
        (sm_only.filter_log_events, {"logGroupName": group("guarded")}),
    ]
    for fn, kw in calls:
        code, msg = error(fn, **kw)
        assert code == "AccessDeniedException" and "logs:" in msg, msg
    code, msg = error(sm_only.get_log_events, logGroupName=group("guarded"), logStreamName=stream)
    assert msg.startswith(f"User: arn:aws:iam::{spw.ACCOUNT}:user/sm-only is not authorized to perform: logs:GetLogEvents on resource: "
                          f"arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group:{group('guarded')}:log-stream:{stream}"), msg

    # A reader of one endpoint's group reads it, and nothing else.
    reader = server.client("logs", keys=make_user(server, "reader", {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents"],
            "Resource": f"arn:aws:logs:*:*:log-group:{group('guarded')}*",
        }],
    }))
    assert [s["logStreamName"] for s in reader.describe_log_streams(logGroupName=group("guarded"))["logStreams"]] == [stream]
    assert "ready to serve" in [e["message"] for e in reader.get_log_events(logGroupName=group("guarded"), logStreamName=stream)["events"]]
    assert reader.filter_log_events(logGroupName=group("guarded"), filterPattern="ready")["events"]
    assert error(reader.filter_log_events, logGroupName=group("other"))[0] == "AccessDeniedException"
    # Listing groups is authorized on the ARN AWS names for it: a policy on some groups does not
    # allow it, one on every group does.
    code, msg = error(reader.describe_log_groups)
    assert code == "AccessDeniedException"
    assert f"on resource: arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group::log-stream: " in msg, msg
    lister = server.client("logs", keys=make_user(server, "lister", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "arn:aws:logs:*:*:log-group:*"}],
    }))
    assert [g["logGroupName"] for g in lister.describe_log_groups()["logGroups"]] == [group("guarded"), group("other")]

    # Every call, allowed or refused, is a read-only record of logs.amazonaws.com.
    ct = server.client("cloudtrail")
    pages = ct.get_paginator("lookup_events").paginate(
        StartTime=before, LookupAttributes=[{"AttributeKey": "EventSource", "AttributeValue": "logs.amazonaws.com"}])
    records = [json.loads(e["CloudTrailEvent"]) for p in pages for e in p["Events"]]
    seen = {(r["userIdentity"].get("userName"), r["eventName"], r.get("errorCode")) for r in records}
    for op in ("DescribeLogGroups", "DescribeLogStreams", "GetLogEvents", "FilterLogEvents"):
        assert ("sm-only", op, "AccessDeniedException") in seen, (op, seen)
    for op in ("DescribeLogStreams", "GetLogEvents", "FilterLogEvents"):
        assert ("reader", op, None) in seen, (op, seen)
    assert ("lister", "DescribeLogGroups", None) in seen
    assert all(r["readOnly"] is True and r["eventSource"] == "logs.amazonaws.com" for r in records)
    get = next(r for r in records if r["eventName"] == "GetLogEvents" and r.get("errorCode") is None)
    assert get["requestParameters"]["logStreamName"] == stream
    assert get["resources"] == [{
        "ARN": f"arn:aws:logs:{spw.REGION}:{spw.ACCOUNT}:log-group:{group('guarded')}:log-stream:{stream}",
        "accountId": spw.ACCOUNT,
        "type": "AWS::Logs::LogGroup",
    }]
    assert get["responseElements"] is None, "CloudTrail records no answer of a read"
