"""CloudWatch reads through boto3's own `cloudwatch` client (awsJson1_0, query-compatible errors):
GetMetricStatistics, GetMetricData (with metric math) and ListMetrics agree with the requests that
were sent to each instance type of a mixed fleet, and bad input raises the modelled exception classes."""

from __future__ import annotations

import collections
import datetime as dt
import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

import spw

NS = "AWS/SageMaker"
G6 = "ml.g6.2xlarge"
M5 = "ml.m5.xlarge"


def dims(endpoint: str, instance_type: str | None = None, variant: str = "AllTraffic") -> list[dict]:
    d = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    if instance_type:
        d.append({"Name": "InstanceType", "Value": instance_type})
    return d


def stat_query(qid: str, endpoint: str, instance_type: str | None, period: int = 60, stat: str = "Sum", **extra):
    q = {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": NS, "MetricName": "Invocations", "Dimensions": dims(endpoint, instance_type)},
            "Period": period,
            "Stat": stat,
        },
    }
    q.update(extra)
    return q


@pytest.fixture
def mixed(start_server):
    """A two-instance endpoint whose first pool is pinned full, so it runs on ml.g6.2xlarge and ml.m5.xlarge;
    returns (server, endpoint, requests sent per type, window start)."""
    server = start_server(
        provisioning={"ice_backoff_initial_ms": 60_000, "ice_backoff_max_ms": 60_000},
        config={"metrics": {"retention_seconds": 7200}},
    )
    sm, rt = server.sm, server.rt
    spw.create_model(sm, "m")
    spw.deploy(
        sm,
        "cw",
        [spw.pooled_variant("m", spw.pools(("ml.g6e.2xlarge", 1), (G6, 2), (M5, 3)), count=2)],
    )
    spw.wait_in_service(sm, "cw")
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    sent = collections.Counter()
    for _ in range(40):
        r = rt.invoke_endpoint(EndpointName="cw", Body=b"x")
        sent[r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"]] += 1
    assert set(sent) == {G6, M5}, sent
    return server, "cw", sent, start


def window(start: dt.datetime) -> dict:
    end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    return {"StartTime": start - dt.timedelta(minutes=5), "EndTime": end}


def test_get_metric_statistics_per_instance_type_matches_requests(mixed):
    server, ep, sent, start = mixed
    cw = server.client("cloudwatch")
    for itype, n in sent.items():
        r = cw.get_metric_statistics(
            Namespace=NS,
            MetricName="Invocations",
            Dimensions=dims(ep, itype),
            Period=60,
            Statistics=["Sum"],
            **window(start),
        )
        assert r["Label"] == "Invocations"
        assert sum(d["Sum"] for d in r["Datapoints"]) == n, (itype, r["Datapoints"])
        for d in r["Datapoints"]:
            assert isinstance(d["Timestamp"], dt.datetime)
            assert d["Timestamp"].timestamp() % 60 == 0  # aligned to the period
            assert d["Unit"] == "None"
    total = cw.get_metric_statistics(
        Namespace=NS,
        MetricName="Invocations",
        Dimensions=dims(ep),
        Period=60,
        Statistics=["Sum", "SampleCount"],
        **window(start),
    )
    assert sum(d["Sum"] for d in total["Datapoints"]) == sum(sent.values())
    assert sum(d["SampleCount"] for d in total["Datapoints"]) == sum(sent.values())

    # One-second periods (the store's resolution) add up to the same totals.
    fine = cw.get_metric_statistics(
        Namespace=NS, MetricName="Invocations", Dimensions=dims(ep, G6), Period=1, Statistics=["Sum"], **window(start)
    )
    assert sum(d["Sum"] for d in fine["Datapoints"]) == sent[G6]
    assert len({d["Timestamp"] for d in fine["Datapoints"]}) == len(fine["Datapoints"])

    # ModelLatency, and OverheadLatency (spillway's own share of each request), per type like
    # every other metric; the model always takes some time, spillway's share may round to 0 µs.
    for metric, smallest in (("ModelLatency", 1), ("OverheadLatency", 0)):
        latency = cw.get_metric_statistics(
            Namespace=NS,
            MetricName=metric,
            Dimensions=dims(ep, M5),
            Period=300,
            Statistics=["Average", "Minimum", "Maximum", "SampleCount"],
            Unit="Microseconds",
            **window(start),
        )
        dps = latency["Datapoints"]
        assert dps and sum(d["SampleCount"] for d in dps) == sent[M5], (metric, dps)
        for d in dps:
            assert smallest <= d["Minimum"] <= d["Average"] <= d["Maximum"], (metric, d)
            assert d["Unit"] == "Microseconds"

    # Metrics CloudWatch would not know: no data, not an error.
    for kw in (
        {"Namespace": "AWS/EC2", "MetricName": "Invocations", "Dimensions": dims(ep)},
        {"Namespace": NS, "MetricName": "Invocations", "Dimensions": dims("no-such-endpoint")},
        {"Namespace": NS, "MetricName": "Invocations", "Dimensions": dims(ep)[:1]},
    ):
        r = cw.get_metric_statistics(Period=60, Statistics=["Sum"], **kw, **window(start))
        assert r["Datapoints"] == []


def test_get_metric_data_per_type_variant_and_metric_math(mixed):
    server, ep, sent, start = mixed
    cw = server.client("cloudwatch")
    r = cw.get_metric_data(
        MetricDataQueries=[
            stat_query("g6", ep, G6, ReturnData=True),
            stat_query("m5", ep, M5, ReturnData=True),
            stat_query("variant", ep, None, Label="all types"),
            {"Id": "both", "Expression": "g6 + m5", "Label": "g6 + m5"},
            {"Id": "share", "Expression": "100 * g6 / (g6 + m5)"},
        ],
        ScanBy="TimestampAscending",
        **window(start),
    )
    res = {x["Id"]: x for x in r["MetricDataResults"]}
    assert set(res) == {"g6", "m5", "variant", "both", "share"}
    for x in res.values():
        assert x["StatusCode"] == "Complete"
        assert len(x["Timestamps"]) == len(x["Values"])
        assert x["Timestamps"] == sorted(x["Timestamps"])
        assert all(isinstance(t, dt.datetime) for t in x["Timestamps"])
    assert sum(res["g6"]["Values"]) == sent[G6]
    assert sum(res["m5"]["Values"]) == sent[M5]
    assert sum(res["variant"]["Values"]) == sum(sent.values())
    assert res["variant"]["Label"] == "all types"
    assert res["g6"]["Label"] == "Invocations"
    # Metric math over the two per-type series equals the variant-level series point by point.
    assert res["both"]["Label"] == "g6 + m5"
    assert dict(zip(res["both"]["Timestamps"], res["both"]["Values"])) == dict(
        zip(res["variant"]["Timestamps"], res["variant"]["Values"])
    )
    for ts, share in zip(res["share"]["Timestamps"], res["share"]["Values"]):
        assert 0 <= share <= 100

    # Paging with MaxDatapoints and NextToken, default (descending) order, one-second periods. A
    # paged answer is cut at the last complete second: let the second of the last request end.
    time.sleep(1.0)
    queries = [stat_query("g6", ep, G6, period=1), stat_query("m5", ep, M5, period=1)]
    got = collections.defaultdict(list)
    kwargs = dict(MetricDataQueries=queries, MaxDatapoints=1, **window(start))
    pages = 0
    while True:
        page = cw.get_metric_data(**kwargs)
        pages += 1
        assert sum(len(x["Values"]) for x in page["MetricDataResults"]) <= 1
        for x in page["MetricDataResults"]:
            got[x["Id"]] += list(zip(x["Timestamps"], x["Values"]))
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert pages > 1
    assert sum(v for _, v in got["g6"]) == sent[G6]
    assert sum(v for _, v in got["m5"]) == sent[M5]
    assert [t for t, _ in got["g6"]] == sorted((t for t, _ in got["g6"]), reverse=True)


def test_list_metrics_lists_both_dimension_sets(mixed):
    server, ep, sent, _ = mixed
    cw = server.client("cloudwatch")
    r = cw.list_metrics(Namespace=NS, MetricName="Invocations", Dimensions=[{"Name": "EndpointName", "Value": ep}])
    sets = {tuple((d["Name"], d["Value"]) for d in m["Dimensions"]) for m in r["Metrics"]}
    base = (("EndpointName", ep), ("VariantName", "AllTraffic"))
    assert sets == {base, base + (("InstanceType", G6),), base + (("InstanceType", M5),)}
    assert all(m["Namespace"] == NS and m["MetricName"] == "Invocations" for m in r["Metrics"])

    everything = [m for page in cw.get_paginator("list_metrics").paginate() for m in page["Metrics"]]
    names = {m["MetricName"] for m in everything}
    assert {"Invocations", "ModelLatency", "InvocationsPerInstance", "ConcurrentRequestsPerModel"} <= names
    typed = cw.list_metrics(Dimensions=[{"Name": "InstanceType", "Value": M5}])["Metrics"]
    assert typed and all({"Name": "InstanceType", "Value": M5} in m["Dimensions"] for m in typed)
    assert cw.list_metrics(Namespace="AWS/EC2")["Metrics"] == []


def test_bad_input_raises_the_modelled_exceptions(server):
    cw = server.client("cloudwatch")
    now = dt.datetime.now(dt.timezone.utc)
    base = dict(
        Namespace=NS,
        MetricName="Invocations",
        Dimensions=dims("e"),
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now,
        Period=60,
    )
    with pytest.raises(cw.exceptions.InvalidParameterValueException) as ei:
        backwards = {**base, "StartTime": now, "EndTime": now - dt.timedelta(minutes=1)}
        cw.get_metric_statistics(**backwards, Statistics=["Sum"])
    assert "StartTime" in str(ei.value)
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.get_metric_statistics(**base, Statistics=["Median"])
    with pytest.raises(cw.exceptions.InvalidParameterValueException) as ei:
        cw.get_metric_statistics(**base, ExtendedStatistics=["p99"])
    assert "not supported by spillway" in str(ei.value)
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException):
        cw.get_metric_statistics(**base, Statistics=["Sum"], ExtendedStatistics=["p99"])
    with pytest.raises(cw.exceptions.MissingRequiredParameterException):
        cw.get_metric_statistics(**base)
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException) as ei:
        cw.get_metric_statistics(**{**base, "Period": 1, "StartTime": now - dt.timedelta(hours=1)}, Statistics=["Sum"])
    assert "1,440" in str(ei.value) or "1440" in str(ei.value)
    err = ei.value.response["Error"]
    assert err["Code"] == "InvalidParameterCombination"
    assert err["QueryErrorCode"] == "InvalidParameterCombinationException"

    window = {"StartTime": base["StartTime"], "EndTime": base["EndTime"]}
    q = stat_query("a", "e", None)
    for bad in (
        [q, {"Id": "b", "Expression": "a +"}],
        [q, {"Id": "b", "Expression": "SUM(METRICS())"}],
        [q, {"Id": "b", "Expression": "a + nope"}],
        [q, q],  # duplicate Id
        [{**q, "Id": "Upper"}],
        [stat_query("a", "e", None, stat="p99")],
    ):
        with pytest.raises(cw.exceptions.InvalidParameterValueException):
            cw.get_metric_data(MetricDataQueries=bad, **window)
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException):
        cw.get_metric_data(MetricDataQueries=[{**q, "Expression": "1"}], **window)
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.get_metric_data(MetricDataQueries=[q], NextToken="not-a-token", **window)
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.list_metrics(NextToken="not-a-token")

    # Operations spillway does not implement say so.
    code, msg, status = spw.error_of(
        cw.put_metric_data, Namespace="Custom", MetricData=[{"MetricName": "x", "Value": 1.0}]
    )
    assert (code, status) == ("UnknownOperationException", 400)
    assert "not supported by spillway" in msg


def test_wire_format(server):
    """The raw exchange: JSON 1.0 content type, epoch-second timestamps, the query-error header."""
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "GraniteServiceVersion20100801.GetMetricStatistics",
        "x-amzn-query-mode": "true",
    }
    body = {"Namespace": NS, "MetricName": "Invocations", "StartTime": 1700000000, "EndTime": 1700000060, "Period": 60}
    status, h, raw = server.http("POST", "/", json.dumps({**body, "Statistics": ["Sum"]}).encode(), headers)
    h = {k.lower(): v for k, v in h.items()}
    assert status == 200, raw
    assert h["content-type"] == "application/x-amz-json-1.0"
    assert json.loads(raw) == {"Label": "Invocations", "Datapoints": []}
    status, h, raw = server.http("POST", "/", json.dumps({**body, "Statistics": ["Nope"]}).encode(), headers)
    h = {k.lower(): v for k, v in h.items()}
    assert status == 400
    assert h["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    assert json.loads(raw)["__type"] == "InvalidParameterValueException"
    assert h["content-type"] == "application/x-amz-json-1.0"
    assert h["x-amzn-requestid"]


def test_unknown_service_error_is_parsed(server):
    cw = server.client("cloudwatch")
    with pytest.raises(ClientError) as ei:
        cw.put_dashboard(DashboardName="d", DashboardBody="{}")
    assert ei.value.response["Error"]["Code"] == "UnknownOperationException"


def test_metrics_can_be_switched_off(start_server):
    """`[metrics] enabled = false`: invocations are served but not recorded; fleet samples stay."""
    server = start_server(config={"metrics": {"enabled": False}})
    sm, rt = server.sm, server.rt
    spw.deploy_echo(sm, "quiet", itype=M5)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    for _ in range(5):
        assert rt.invoke_endpoint(EndpointName="quiet", Body=b"x")["ResponseMetadata"]["HTTPStatusCode"] == 200
    cw = server.client("cloudwatch")
    r = cw.get_metric_statistics(
        Namespace=NS, MetricName="Invocations", Dimensions=dims("quiet"), Period=60, Statistics=["Sum"], **window(start)
    )
    # Fleet samples may open a bucket in the window (Sum 0), but no invocation is counted.
    assert sum(d["Sum"] for d in r["Datapoints"]) == 0, r["Datapoints"]
    status, _, raw = server.http("GET", "/metrics")
    assert status == 200
    text = raw.decode()
    assert 'spillway_invocations_total{' not in text
    assert 'endpoint="quiet"' in text  # the fleet gauges are still there
    # The fleet is sampled once a second.
    deadline = time.monotonic() + 10
    while True:
        count = cw.get_metric_statistics(
            Namespace=NS, MetricName="InstanceCount", Dimensions=dims("quiet"), Period=60, Statistics=["Maximum"], **window(start)
        )
        if count["Datapoints"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert count["Datapoints"] and max(d["Maximum"] for d in count["Datapoints"]) == 1


def test_the_shape_checker_catches_what_botocore_would_drop():
    """conftest checks every JSON answer of every test against its output shape (shapes.py):
    the checker must see the faults botocore's parser hides."""
    import botocore.session

    import shapes

    model = botocore.session.get_session().get_service_model("cloudwatch").operation_model("DescribeAlarms")
    bad = json.dumps({"MetricAlarms": [{"AlarmName": 1, "Bogus": 2, "StateValue": "WEIRD", "Period": "60"}]})
    problems = shapes.check(model, bad.encode())
    assert any("Bogus: not a member of MetricAlarm" in p for p in problems), problems
    assert any("AlarmName: expected a string" in p for p in problems), problems
    assert any("'WEIRD' is not in StateValue's enum" in p for p in problems), problems
    assert any("Period: expected an integer" in p for p in problems), problems
    assert shapes.check(model, json.dumps({"MetricAlarms": [], "CompositeAlarms": []}).encode()) == []
