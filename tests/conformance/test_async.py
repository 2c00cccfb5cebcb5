"""Asynchronous inference (issue 16): AsyncInferenceConfig, InvokeEndpointAsync, the durable
queue and its workers, output and failure objects, driven with boto3 as users do."""

from __future__ import annotations

import collections
import json
import pathlib
import time

import pytest

import spw
from spw import assert_validation, create_model, error_of, poll, single_variant, wait_in_service

BUCKET = "async-bucket"
OUT = f"s3://{BUCKET}/out"
FAIL = f"s3://{BUCKET}/failures"


def async_config(output=OUT, failure=FAIL, concurrency=None, notification=None) -> dict:
    out = {"S3OutputPath": output}
    if failure:
        out["S3FailurePath"] = failure
    if notification:
        out["NotificationConfig"] = notification
    cfg = {"OutputConfig": out}
    if concurrency:
        cfg["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": concurrency}
    return cfg


def make_bucket(server, bucket: str = BUCKET) -> None:
    try:
        server.s3.create_bucket(Bucket=bucket)
    except server.s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def deploy_async(server, endpoint: str, model: str = "m", env: dict | None = None, count: int = 1, variants=None, **cfg):
    """Creates the bucket, the model, an asynchronous endpoint configuration and the endpoint."""
    make_bucket(server)
    sm = server.sm
    create_model(sm, model, env=env)
    sm.create_endpoint_config(
        EndpointConfigName=endpoint + "-cfg",
        ProductionVariants=variants or [single_variant(model, count=count)],
        AsyncInferenceConfig=async_config(**cfg),
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint + "-cfg")
    return wait_in_service(sm, endpoint)


def put_object(server, uri: str, body: bytes) -> None:
    bucket, key = uri[len("s3://") :].split("/", 1)
    make_bucket(server, bucket)
    server.s3.put_object(Bucket=bucket, Key=key, Body=body)


def get_object(server, uri: str) -> bytes | None:
    bucket, key = uri[len("s3://") :].split("/", 1)
    s3 = server.s3
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def list_keys(server, uri_prefix: str) -> list[str]:
    bucket, prefix = uri_prefix[len("s3://") :].split("/", 1)
    keys = []
    for page in server.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def wait_object(server, uri: str, timeout: float = 30.0) -> bytes:
    return poll(lambda: get_object(server, uri), timeout=timeout, what=f"object {uri}")


def test_async_config_is_accepted_validated_and_described(sm):
    create_model(sm, "m")
    cfg = async_config(concurrency=2, notification={
        "SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok",
        "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:bad",
        "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
    })
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[single_variant("m")], AsyncInferenceConfig=cfg
    )
    assert sm.describe_endpoint_config(EndpointConfigName="c")["AsyncInferenceConfig"] == cfg
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    wait_in_service(sm, "e")
    assert sm.describe_endpoint(EndpointName="e")["AsyncInferenceConfig"] == cfg

    def refused(cfg, *fields):
        code, msg, _ = error_of(
            sm.create_endpoint_config,
            EndpointConfigName="bad",
            ProductionVariants=[single_variant("m")],
            AsyncInferenceConfig=cfg,
        )
        assert_validation(code, msg, *fields)

    refused({"OutputConfig": {"S3FailurePath": FAIL}}, "S3OutputPath")
    refused({"OutputConfig": {"S3OutputPath": "https://example.com/b/out"}}, "S3OutputPath", "s3://")
    refused(async_config(concurrency=1001), "maxConcurrentInvocationsPerInstance")
    refused(
        async_config(notification={"IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"]}),
        "IncludeInferenceResponseIn",
        "ErrorTopic",
    )
    refused(async_config(notification={"SuccessTopic": "not-an-arn"}), "successTopic")


def test_invoke_async_round_trip_with_output_object(server):
    sm, rt = server.sm, server.rt
    deploy_async(server, "e")
    put_object(server, f"s3://{BUCKET}/in/one.json", b'{"x": 1}')
    r = rt.invoke_endpoint_async(
        EndpointName="e", InputLocation=f"s3://{BUCKET}/in/one.json", ContentType="application/json",
        InferenceId="my-id-1",
    )
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert r["InferenceId"] == "my-id-1"
    out, failure = r["OutputLocation"], r["FailureLocation"]
    assert out.startswith(OUT + "/") and out.endswith(".out"), out
    assert failure.startswith(FAIL + "/") and failure.endswith("-error.out"), failure
    assert out[len(OUT) + 1 : -len(".out")] == failure[len(FAIL) + 1 : -len("-error.out")]
    answer = json.loads(wait_object(server, out))
    assert (answer["body"], answer["contentType"]) == ('{"x": 1}', "application/json")
    assert answer["instanceType"] == "ml.m5.xlarge"
    assert get_object(server, failure) is None
    # Inline body, extension and file name.
    r = rt.invoke_endpoint_async(
        EndpointName="e", Body=b"inline payload", ContentType="text/plain",
        S3OutputPathExtension="run-7", Filename="answer.txt",
    )
    assert r["OutputLocation"] == f"{OUT}/run-7/answer.txt"
    assert json.loads(wait_object(server, r["OutputLocation"]))["body"] == "inline payload"


def test_invoke_async_refusals_name_the_field(server):
    sm, rt = server.sm, server.rt
    deploy_async(server, "e")
    rt_raw = server.client("sagemaker-runtime", validate=False)

    def refused(*fields, **kw):
        kw.setdefault("EndpointName", "e")
        code, msg, status = error_of(rt_raw.invoke_endpoint_async, **kw)
        assert status == 400 and code == "ValidationError", (code, msg)
        low = msg.lower()
        assert all(f.lower() in low for f in fields), msg

    loc = f"s3://{BUCKET}/in/x"
    refused("requestTTLSeconds", InputLocation=loc, RequestTTLSeconds=59)
    refused("requestTTLSeconds", InputLocation=loc, RequestTTLSeconds=21601)
    refused("invocationTimeoutSeconds", InputLocation=loc, InvocationTimeoutSeconds=3601)
    refused("InputLocation", InputLocation="https://bucket.s3.amazonaws.com/key")
    refused("InputLocation", InputLocation=f"s3://{BUCKET}")
    refused("InputLocation", InputLocation=loc, Body=b"both")
    refused("InputLocation")
    refused("filename", InputLocation=loc, Filename="a.b.c")
    refused("s3OutputPathExtension", InputLocation=loc, S3OutputPathExtension="../up")
    refused("body", Body=b"x" * 128_001)
    refused("not found", EndpointName="nope", InputLocation=loc)
    # A real-time endpoint refuses the asynchronous call, and the other way round.
    spw.deploy_echo(sm, "rt", model="rtm")
    wait_in_service(sm, "rt")
    refused("asynchronous", EndpointName="rt", InputLocation=loc)
    code, msg, status = error_of(rt.invoke_endpoint, EndpointName="e", Body=b"x")
    assert (code, status) == ("ValidationError", 400) and "InvokeEndpointAsync" in msg, msg


def failure_of(server, r: dict, timeout: float = 30.0) -> str:
    """The failure object of an accepted request, once written; its output must not exist."""
    text = wait_object(server, r["FailureLocation"], timeout=timeout).decode()
    assert get_object(server, r["OutputLocation"]) is None
    return text


def test_each_failure_kind_writes_its_failure_object(server):
    sm, rt = server.sm, server.rt
    deploy_async(server, "e500", model="m500", env={"ECHO_INVOCATION_STATUS": "500"})
    deploy_async(server, "slow", model="slow", env={"ECHO_INVOCATION_DELAY_MS": "4000"}, failure=None)
    # The model answers an error: its status and message, as a ModelError says them.
    r = rt.invoke_endpoint_async(EndpointName="e500", Body=b"x")
    text = failure_of(server, r)
    assert "Received server error (500)" in text, text
    # The model takes longer than InvocationTimeoutSeconds. Without an S3FailurePath the
    # failure goes under the output path.
    r = rt.invoke_endpoint_async(EndpointName="slow", Body=b"x", InvocationTimeoutSeconds=1)
    assert r["FailureLocation"].startswith(OUT + "/") and r["FailureLocation"].endswith("-error.out")
    text = failure_of(server, r)
    assert "timed out" in text and "InvocationTimeoutSeconds (1 s)" in text, text
    # The input does not exist.
    r = rt.invoke_endpoint_async(EndpointName="e500", InputLocation=f"s3://{BUCKET}/in/missing.json")
    text = failure_of(server, r)
    assert "does not exist" in text and "missing.json" in text, text


def test_a_request_waiting_past_its_ttl_fails_as_expired(server):
    """One instance that works on one request at a time, busy for longer than the second
    request's RequestTTLSeconds (60, the least the API takes): the second expires unrun."""
    sm, rt = server.sm, server.rt
    deploy_async(server, "busy", model="busy", env={"ECHO_INVOCATION_DELAY_MS": "75000"}, concurrency=1)
    first = rt.invoke_endpoint_async(EndpointName="busy", Body=b"first", InvocationTimeoutSeconds=120)
    second = rt.invoke_endpoint_async(EndpointName="busy", Body=b"second", RequestTTLSeconds=60)
    text = failure_of(server, second, timeout=90)
    assert "expired" in text and "RequestTTLSeconds (60 s)" in text, text
    # The first, which held the instance all along, still ends with its output.
    assert json.loads(wait_object(server, first["OutputLocation"], timeout=60))["body"] == "first"


def test_work_is_shared_by_every_instance_across_types_within_the_concurrency_limit(start_server):
    server = start_server(capacity={"ml.m5.xlarge": 1})
    sm, rt = server.sm, server.rt
    variant = spw.pooled_variant("shared", spw.pools(("ml.m5.xlarge", 1), ("ml.c5.xlarge", 2)), count=2)
    deploy_async(server, "shared", model="shared", env={"ECHO_INVOCATION_DELAY_MS": "1000"}, variants=[variant], concurrency=2)
    started = time.monotonic()
    accepted = [rt.invoke_endpoint_async(EndpointName="shared", Body=f"r{i}".encode()) for i in range(8)]
    answers = [json.loads(wait_object(server, a["OutputLocation"])) for a in accepted]
    elapsed = time.monotonic() - started
    assert sorted(a["body"] for a in answers) == sorted(f"r{i}" for i in range(8))
    assert {a["instanceType"] for a in answers} == {"ml.m5.xlarge", "ml.c5.xlarge"}
    # 8 one-second requests on 2 instances taking 2 at a time cannot finish in under 2 s; without
    # the limit they would all run at once.
    assert elapsed >= 1.9, elapsed
    # Counted as real-time invocations are, per instance type.
    import datetime as dt

    cw, now = server.client("cloudwatch"), spw.utcnow()
    per_type = {}
    for itype in ("ml.m5.xlarge", "ml.c5.xlarge"):
        dims = [{"Name": "EndpointName", "Value": "shared"}, {"Name": "VariantName", "Value": "AllTraffic"},
                {"Name": "InstanceType", "Value": itype}]
        r = cw.get_metric_statistics(Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims,
                                     StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1),
                                     Period=60, Statistics=["Sum"])
        per_type[itype] = sum(d["Sum"] for d in r["Datapoints"])
    served = collections.Counter(a["instanceType"] for a in answers)
    assert per_type == {t: served[t] for t in per_type}, (per_type, served)


def test_sigkill_under_load_loses_and_duplicates_nothing(server):
    """Senders keep submitting while spillway is SIGKILLed; after the restart every request that
    got its 202 ends in exactly one output object with its own answer, and no output exists
    twice or for a request nobody sent."""
    import threading

    sm = server.sm
    deploy_async(server, "load", model="load", env={"ECHO_INVOCATION_DELAY_MS": "20"}, concurrency=4)
    accepted: dict[str, str] = {}  # body -> output location
    sent: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(t: int):
        rt = server.client("sagemaker-runtime", retries=1, read_timeout=10)
        i = 0
        while not stop.is_set():
            body = f"t{t}-{i}"
            i += 1
            with lock:
                sent.add(body)
            try:
                r = rt.invoke_endpoint_async(EndpointName="load", Body=body.encode())
            except Exception:
                return  # the server is gone
            with lock:
                accepted[body] = r["OutputLocation"]

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    poll(lambda: len(accepted) >= 150, timeout=60, what="150 accepted requests")
    # Some are done by now, some running, most queued: kill it in the middle.
    done_before = len(list_keys(server, OUT + "/"))
    server.sigkill()
    stop.set()
    for th in threads:
        th.join(timeout=30)
    print(f"accepted {len(accepted)}, done before the kill {done_before}")
    assert done_before < len(accepted), "everything was done before the kill: nothing was tested"
    server.restart()
    want = dict(accepted)

    def all_written():
        keys = set(list_keys(server, OUT + "/"))
        return all(loc.split("/", 3)[3] in keys for loc in want.values()) and keys

    keys = poll(all_written, timeout=120, what=f"outputs of all {len(want)} accepted requests")
    by_key = {loc.split("/", 3)[3]: body for body, loc in want.items()}
    for key in keys:
        answer = json.loads(get_object(server, f"s3://{BUCKET}/{key}"))
        if key in by_key:
            assert answer["body"] == by_key[key], key
        else:
            # Accepted as the server died, its 202 lost on the way: it was sent, and runs once.
            assert answer["body"] in sent and answer["body"] not in want, answer["body"]
    # Each sender can lose at most the one answer it was waiting for.
    assert len(keys) - len(by_key) <= len(threads), (len(keys), len(by_key))
    assert len({json.loads(get_object(server, f"s3://{BUCKET}/{k}"))["body"] for k in keys}) == len(keys)
    assert not list_keys(server, FAIL + "/")


def test_success_and_error_notifications_reach_the_subscriber(start_server):
    """`NotificationConfig` topics mapped to a local subscriber: one SNS notification per request
    in AWS's message shape, the response included where `IncludeInferenceResponseIn` says."""
    from test_notifications import Receiver

    ok_topic = "arn:aws:sns:us-east-1:123456789012:async-ok"
    err_topic = "arn:aws:sns:us-east-1:123456789012:async-err"
    hook = Receiver()
    try:
        server = start_server(config={"notifications": {"topics": {ok_topic: hook.url, err_topic: hook.url}}})
        sm, rt = server.sm, server.rt
        notification = {"SuccessTopic": ok_topic, "ErrorTopic": err_topic,
                        "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"]}
        deploy_async(server, "n", model="n", notification=notification)
        deploy_async(server, "n500", model="n500", env={"ECHO_INVOCATION_STATUS": "500"}, notification=notification)
        good = rt.invoke_endpoint_async(EndpointName="n", Body=b"notify me", ContentType="text/plain",
                                        InferenceId="good-1", CustomAttributes="k=v")
        bad = rt.invoke_endpoint_async(EndpointName="n500", Body=b"x", InferenceId="bad-1")
        # A client may reuse an InferenceId: each request is still notified.
        again = rt.invoke_endpoint_async(EndpointName="n", Body=b"again", InferenceId="good-1")
        posts = poll(lambda: len(hook.posts()) >= 3 and hook.posts(), timeout=30, what="three notifications")
        messages = [json.loads(json.loads(p["body"])["Message"]) for p in posts]
        outs = sorted(m["responseParameters"].get("outputLocation", "") for m in messages if m["invocationStatus"] == "Completed")
        assert outs == sorted([good["OutputLocation"], again["OutputLocation"]]), messages
        by_topic = {p["headers"]["x-amz-sns-topic-arn"]: json.loads(json.loads(p["body"])["Message"])
                    for p in posts if json.loads(json.loads(p["body"])["Message"])["responseParameters"].get("outputLocation") != again["OutputLocation"]}
        ok, err = by_topic[ok_topic], by_topic[err_topic]
        assert ok["invocationStatus"] == "Completed" and ok["inferenceId"] == "good-1"
        assert ok["responseParameters"]["outputLocation"] == good["OutputLocation"]
        assert ok["requestParameters"]["endpointName"] == "n"
        assert ok["requestParameters"]["contentType"] == "text/plain"
        import base64
        assert json.loads(base64.b64decode(ok["responseBody"]["content"]))["body"] == "notify me"
        assert err["invocationStatus"] == "Failed" and err["inferenceId"] == "bad-1"
        assert "Received server error (500)" in err["failureReason"]
        assert err["responseParameters"]["failureLocation"] == bad["FailureLocation"]
        assert "responseBody" not in err, "the error topic is not named in IncludeInferenceResponseIn"
        kinds = [e["kind"] for e in server.events("n")]
        assert "NotificationDelivered" in kinds, kinds
    finally:
        hook.close()


def test_requests_wait_at_zero_and_the_backlog_alarm_scales_up_from_priority_one(start_server):
    """The whole AWS pattern with real requests: an endpoint at zero instances accepts and holds
    them, `HasBacklogWithoutCapacity` goes to 1, its alarm runs a step policy, the fleet comes
    back from Priority 1 (one slot) and falls back to Priority 2 for the rest, and every request
    ends with its output, served by both types."""
    server = start_server(config={"autoscaling": {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3}})
    sm, rt, aas, cw = server.sm, server.rt, server.client("application-autoscaling"), server.client("cloudwatch")
    server.set_slots("ml.g6.2xlarge", 1)
    variant = spw.pooled_variant("zm", spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=1)
    deploy_async(server, "zero", model="zm", env={"ECHO_INVOCATION_DELAY_MS": "300"}, variants=[variant])
    sm.update_endpoint_weights_and_capacities(
        EndpointName="zero", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}])
    poll(lambda: not server.instances("zero") and sm.describe_endpoint(EndpointName="zero")["EndpointStatus"] == "InService",
         timeout=60, what="zero instances")
    accepted = [rt.invoke_endpoint_async(EndpointName="zero", Body=f"z{i}".encode()) for i in range(6)]
    rid = "endpoint/zero/variant/AllTraffic"
    dim = "sagemaker:variant:DesiredInstanceCount"

    def has_backlog_without_capacity():
        pts = cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="HasBacklogWithoutCapacity",
            Dimensions=[{"Name": "EndpointName", "Value": "zero"}],
            StartTime=spw.utcnow() - __import__("datetime").timedelta(minutes=2), EndTime=spw.utcnow(),
            Period=60, Statistics=["Maximum"])["Datapoints"]
        return any(p["Maximum"] == 1 for p in pts)

    poll(has_backlog_without_capacity, timeout=30, what="HasBacklogWithoutCapacity = 1")
    assert all(get_object(server, a["OutputLocation"]) is None for a in accepted), "nothing runs at zero"
    # `spillway explain` (the admin API it reads) says what waits, and where scaling up starts.
    e = server.admin_get("endpoints/zero/explain")
    assert e["backlog"]["size"] == 6 and e["backlog"]["oldestAgeSeconds"] > 0, e["backlog"]
    summary = " ".join(e["summary"])
    assert "It is asynchronous: 6 requests queued or running" in summary, summary
    assert "scaling up starts again at priority 1 (ml.g6.2xlarge)" in summary, summary
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=dim,
                                 MinCapacity=0, MaxCapacity=2)
    policy = aas.put_scaling_policy(
        PolicyName="from-zero", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=dim,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 300,
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 2}]},
    )["PolicyARN"]
    cw.put_metric_alarm(
        AlarmName="zero-backlog", MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker",
        Statistic="Maximum", EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "EndpointName", "Value": "zero"}], Period=10, AlarmActions=[policy],
    )
    answers = [json.loads(wait_object(server, a["OutputLocation"], timeout=90)) for a in accepted]
    assert sorted(a["body"] for a in answers) == sorted(f"z{i}" for i in range(6))
    assert {a["instanceType"] for a in answers} == {"ml.g6.2xlarge", "ml.m5.xlarge"}
    launches = [(a["instanceType"], a["result"]) for a in spw.launch_attempts(server.events("zero"))]
    assert launches[-3:] == [("ml.g6.2xlarge", "Launched"), ("ml.g6.2xlarge", "InsufficientCapacity"),
                             ("ml.m5.xlarge", "Launched")], launches


@pytest.fixture
def moto_s3(tmp_path):
    """A real S3-compatible server the test starts itself: moto's server mode, from the venv."""
    import subprocess
    import sys
    import urllib.request

    exe = pathlib.Path(sys.executable).parent / "moto_server"
    assert exe.exists(), f"{exe} missing: scripts/test.sh installs moto[server] from tests/requirements.txt"
    port = spw.free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return True
        except Exception:
            return proc.poll() is not None and pytest.fail("moto_server exited")

    poll(up, timeout=60, what="moto_server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_round_trip_through_an_s3_compatible_server(start_server, moto_s3, monkeypatch):
    """`[storage] backend = "s3"`: inputs and outputs live on another S3-compatible server (moto),
    reached with credentials from the usual AWS environment; boto3 talks to that server for the
    objects and to spillway for the rest."""
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto-secret"}.items():
        monkeypatch.setenv(k, v)
    storage = {"backend": "s3", "s3_endpoint": moto_s3, "region": "us-east-1", "allow_http": True}
    server = start_server(config={"storage": storage})
    assert server.storage_port is None, "backend = s3 serves no S3 API of its own"
    s3 = boto3.session.Session().client("s3", endpoint_url=moto_s3, region_name="us-east-1",
                      aws_access_key_id="moto", aws_secret_access_key="moto-secret")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="in/remote.json", Body=b'{"remote": true}')
    sm, rt = server.sm, server.rt
    create_model(sm, "rm")
    sm.create_endpoint_config(EndpointConfigName="rc", ProductionVariants=[single_variant("rm")],
                              AsyncInferenceConfig=async_config())
    sm.create_endpoint(EndpointName="remote", EndpointConfigName="rc")
    wait_in_service(sm, "remote")
    ok = rt.invoke_endpoint_async(EndpointName="remote", InputLocation=f"s3://{BUCKET}/in/remote.json",
                                  ContentType="application/json")
    missing = rt.invoke_endpoint_async(EndpointName="remote", InputLocation=f"s3://{BUCKET}/in/nope.json")

    def read(uri):
        bucket, key = uri[len("s3://"):].split("/", 1)
        try:
            return s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return None

    out = poll(lambda: read(ok["OutputLocation"]), timeout=30, what="the output on moto")
    assert out["ContentType"] == "application/json"
    assert json.loads(out["Body"].read())["body"] == '{"remote": true}'
    failure = poll(lambda: read(missing["FailureLocation"]), timeout=30, what="the failure on moto")
    assert "does not exist" in failure["Body"].read().decode()


def test_the_caller_must_be_allowed_to_read_the_input(server):
    """The workers read `InputLocation` with spillway's rights, so `InvokeEndpointAsync` asks
    the caller's policies for `s3:GetObject` on it: a caller may not have the model read what
    the caller could not."""
    from test_auth import make_user

    deploy_async(server, "guarded")
    put_object(server, f"s3://{BUCKET}/public/in.json", b"ok")
    put_object(server, f"s3://{BUCKET}/secret/in.json", b"secret")
    keys = make_user(server, "invoker", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:InvokeEndpointAsync", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/public/*"},
    ]})
    rt = server.client("sagemaker-runtime", keys=keys)
    ok = rt.invoke_endpoint_async(EndpointName="guarded", InputLocation=f"s3://{BUCKET}/public/in.json")
    assert json.loads(wait_object(server, ok["OutputLocation"]))["body"] == "ok"
    code, msg, status = error_of(rt.invoke_endpoint_async, EndpointName="guarded",
                                 InputLocation=f"s3://{BUCKET}/secret/in.json")
    assert (code, status) == ("AccessDeniedException", 403) and "s3:GetObject" in msg, (code, msg)
    assert f"arn:aws:s3:::{BUCKET}/secret/in.json" in msg, msg


def test_a_model_that_dies_with_a_backlog_fails_no_request(server):
    """A model process killed while requests are queued and running: the requests it held and
    those handed to it before the health check took it out go back to the queue, and every one
    ends with its output once the fleet is whole again; none becomes a failure."""
    deploy_async(server, "fragile", model="fragile", env={"ECHO_INVOCATION_DELAY_MS": "200"}, count=2, concurrency=2)
    rt = server.rt
    accepted = [rt.invoke_endpoint_async(EndpointName="fragile", Body=f"f{i}".encode()) for i in range(40)]
    poll(lambda: len(list_keys(server, OUT + "/")) >= 3, timeout=30, what="the first outputs")
    victim = sorted(server.processes().items())[0][1]
    spw.kill_pids(victim["pids"])
    answers = [json.loads(wait_object(server, a["OutputLocation"], timeout=120)) for a in accepted]
    assert sorted(a["body"] for a in answers) == sorted(f"f{i}" for i in range(40))
    assert not list_keys(server, FAIL + "/"), "a request failed because its instance died"


def test_a_graceful_stop_fails_no_running_request(server):
    """SIGTERM while a request runs: spillway stops its models under it, and the request is not
    turned into a failure; after the restart it runs again and ends with its output."""
    deploy_async(server, "longrun", model="longrun", env={"ECHO_INVOCATION_DELAY_MS": "3000"})
    r = server.rt.invoke_endpoint_async(EndpointName="longrun", Body=b"survive")
    time.sleep(1.0)  # it is running on the model now (3 s)
    assert server.terminate() == 0
    server.restart()
    assert json.loads(wait_object(server, r["OutputLocation"], timeout=60))["body"] == "survive"
    assert get_object(server, r["FailureLocation"]) is None
