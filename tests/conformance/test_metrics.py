"""`/metrics`: OpenMetrics text, parsed with the official Python client's OpenMetrics parser, agrees with the
requests that were sent to each instance type and shows the capacity back-off state."""

from __future__ import annotations

import collections
import datetime as dt

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import spw


def scrape(server) -> dict[str, list]:
    status, headers, body = server.http("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    fams = {}
    for fam in text_string_to_metric_families(body.decode()):
        fams[fam.name] = fam.samples
    return fams


def test_prometheus_counters_match_requests_per_instance_type(start_server):
    server = start_server(provisioning={"ice_backoff_initial_ms": 60_000, "ice_backoff_max_ms": 60_000})
    sm, rt = server.sm, server.rt
    spw.create_model(sm, "m")
    spw.deploy(
        sm,
        "prom",
        [spw.pooled_variant("m", spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3)), count=2)],
    )
    spw.wait_in_service(sm, "prom")
    sent = collections.Counter()
    for _ in range(40):
        r = rt.invoke_endpoint(EndpointName="prom", Body=b"x")
        sent[r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"]] += 1
    assert set(sent) == {"ml.g6.2xlarge", "ml.m5.xlarge"}

    fams = scrape(server)
    counted = {
        s.labels["instance_type"]: s.value
        for s in fams["spillway_invocations"]
        if s.name == "spillway_invocations_total" and s.labels["endpoint"] == "prom"
    }
    assert counted == {t: float(n) for t, n in sent.items()}
    # Successful invocations are not errors.
    assert not [
        s for s in fams.get("spillway_invocation_errors", []) if s.labels.get("endpoint") == "prom" and s.value > 0
    ]
    latency_counts = {
        s.labels["instance_type"]: s.value
        for s in fams["spillway_model_latency_seconds"]
        if s.name == "spillway_model_latency_seconds_count"
    }
    assert latency_counts == counted
    serving = {
        s.labels["instance_type"]: s.value
        for s in fams["spillway_instances"]
        if s.labels["endpoint"] == "prom" and s.labels["state"] == "InService"
    }
    assert serving == {"ml.g6.2xlarge": 1.0, "ml.m5.xlarge": 1.0}
    available = {s.labels["instance_type"]: s.value for s in fams["spillway_instance_type_available"]}
    assert available["ml.g6e.2xlarge"] == 0.0
    assert available["ml.m5.xlarge"] == 1.0
    backoff = {s.labels["instance_type"]: s.value for s in fams["spillway_instance_type_backoff_seconds"]}
    assert 0 < backoff["ml.g6e.2xlarge"] <= 60
    launches = {
        (s.labels["instance_type"], s.labels["result"]): s.value
        for s in fams["spillway_launch_attempts"]
        if s.name == "spillway_launch_attempts_total"
    }
    assert launches[("ml.g6e.2xlarge", "InsufficientCapacity")] == 1.0
    assert launches[("ml.g6.2xlarge", "Launched")] == 1.0


def test_model_errors_are_counted_by_kind(start_server):
    server = start_server()
    sm, rt = server.sm, server.rt
    spw.create_model(sm, "bad", env={"ECHO_INVOCATION_STATUS": "503"})
    spw.deploy(sm, "errs", [spw.single_variant("bad", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "errs")
    for _ in range(3):
        code, msg, status = spw.error_of(rt.invoke_endpoint, EndpointName="errs", Body=b"x")
        assert (code, status) == ("ModelError", 424)
        assert "(503)" in msg
    errors = {
        s.labels["kind"]: s.value
        for s in scrape(server)["spillway_invocation_errors"]
        if s.name == "spillway_invocation_errors_total" and s.labels["endpoint"] == "errs"
    }
    # Every kind starts at 0 with the series (so rate() sees the first increment); the model's 503s
    # are model errors of the 5xx class.
    assert errors == {"model_5xx": 3.0, "model_4xx": 0.0, "model_other": 0.0, "4xx": 0.0, "5xx": 0.0, "client_closed": 0.0}
    # CloudWatch counts them as SageMaker does: 5XX by the model's status, and as model errors.
    cw = server.client("cloudwatch")
    now = dt.datetime.now(dt.timezone.utc)
    sums = {}
    for metric in ("Invocation5XXErrors", "Invocation4XXErrors", "InvocationModelErrors", "Invocations"):
        r = cw.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName=metric,
            Dimensions=[{"Name": "EndpointName", "Value": "errs"}, {"Name": "VariantName", "Value": "AllTraffic"}],
            StartTime=now - dt.timedelta(minutes=5),
            EndTime=now + dt.timedelta(minutes=1),
            Period=60,
            Statistics=["Sum"],
        )
        sums[metric] = sum(d["Sum"] for d in r["Datapoints"])
    assert sums == {"Invocation5XXErrors": 3, "Invocation4XXErrors": 0, "InvocationModelErrors": 3, "Invocations": 3}


def test_api_requests_are_counted_per_operation_and_answer(server):
    """`spillway_api_requests_total{operation, code}` and the latency histogram count every
    control-plane and admin request by its typed operation; unknown operations are `unknown`,
    never the client's string."""
    sm = server.sm
    spw.create_model(sm, "counted")
    for _ in range(2):
        sm.describe_model(ModelName="counted")
    try:
        sm.describe_model(ModelName="missing")
    except sm.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException"
    status, _ = server.sagemaker_raw("NoSuchOperation-" + "x" * 40, {})
    assert status == 400
    server.admin_get("capacity")

    samples = scrape(server)["spillway_api_requests"]
    counts = {(s.labels["operation"], s.labels["code"]): s.value for s in samples if s.name.endswith("_total")}
    assert counts[("CreateModel", "ok")] == 1
    assert counts[("DescribeModel", "ok")] == 2
    assert counts[("DescribeModel", "ValidationException")] == 1
    assert counts[("unknown", "UnknownOperationException")] == 1
    assert counts[("ListCapacity", "ok")] == 1
    assert not any("NoSuchOperation" in op for op, _ in counts)
    hist = scrape(server)["spillway_api_request_duration_seconds"]
    described = [s for s in hist if s.name.endswith("_count") and s.labels["operation"] == "DescribeModel"]
    assert described and described[0].value == 3
