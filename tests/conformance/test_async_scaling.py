"""Asynchronous endpoints scaling to and from zero, as boto3 sees it against the real binary:
MinCapacity 0 accepted for an asynchronous endpoint's variant and refused for a real-time one,
DesiredInstanceCount 0 likewise, an endpoint at zero instances staying InService, the four
backlog metrics (namespace AWS/SageMaker, dimension EndpointName) listed, read and exported to
Prometheus, backlog target tracking scaling the variant in to zero, the HasBacklogWithoutCapacity
alarm's step policy scaling up from zero at Priority 1 (the alarm set by SetAlarmState), and the
aws CLI commands of docs/async.md.

Requests that really wait in the queue come from InvokeEndpointAsync; the paused-clock tests in
tests/controller_clock.rs put them there directly and prove that the metrics trip the alarm and
drive backlog target tracking from zero."""

from __future__ import annotations

import pathlib
import time

import spw

DIM = "sagemaker:variant:DesiredInstanceCount"
FAST = {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3, "target_tracking_period_seconds": 1}
BACKLOG_METRICS = [
    "ApproximateBacklogSize",
    "ApproximateBacklogSizePerInstance",
    "ApproximateAgeOfOldestRequest",
    "HasBacklogWithoutCapacity",
]
ASYNC = {"OutputConfig": {"S3OutputPath": "s3://bucket/out"}}


def rid(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/AllTraffic"


def deploy_async(sm, endpoint: str, itype: str = "ml.m5.xlarge", count: int = 1) -> dict:
    spw.create_model(sm, f"{endpoint}-m")
    spw.deploy(
        sm,
        endpoint,
        [spw.single_variant(f"{endpoint}-m", itype, count=count)],
        AsyncInferenceConfig=ASYNC,
    )
    return spw.wait_in_service(sm, endpoint)


def register(aas, endpoint: str, min_capacity: int, max_capacity: int = 2):
    return aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=rid(endpoint),
        ScalableDimension=DIM,
        MinCapacity=min_capacity,
        MaxCapacity=max_capacity,
    )


def wait_zero(server, sm, endpoint: str, timeout: float = 60.0) -> dict:
    """Waits until the endpoint is InService with no instance (none in its records either)."""

    def at_zero():
        d = sm.describe_endpoint(EndpointName=endpoint)
        v = d["ProductionVariants"][0]
        done = d["EndpointStatus"] == "InService" and v["CurrentInstanceCount"] == 0 and not server.instances(endpoint)
        return d if done else None

    return spw.poll(at_zero, timeout=timeout, what=f"{endpoint} InService at zero instances")


def test_min_capacity_zero_only_for_asynchronous_endpoints(server):
    sm, aas = server.sm, server.client("application-autoscaling")
    deploy_async(sm, "queued")
    spw.create_model(sm, "rt-m")
    spw.deploy(sm, "realtime", [spw.single_variant("rt-m", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "realtime")

    register(aas, "queued", 0)
    t = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid("queued")])["ScalableTargets"]
    assert [(x["MinCapacity"], x["MaxCapacity"]) for x in t] == [(0, 2)]

    code, msg, status = spw.error_of(register, aas, "realtime", 0)
    assert (code, status) == ("ValidationException", 400)
    assert "must be set to at least 1" in msg and rid("realtime") in msg, msg
    assert "asynchronous" in msg, msg
    register(aas, "realtime", 1)

    # DesiredInstanceCount 0: refused for the real-time endpoint, which keeps serving.
    code, msg, _ = spw.error_of(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="realtime",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}],
    )
    assert code == "ValidationException" and "only an asynchronous endpoint" in msg, msg
    assert sm.describe_endpoint(EndpointName="realtime")["EndpointStatus"] == "InService"
    assert len(server.instances("realtime")) == 1


def test_asynchronous_endpoint_at_zero_instances_stays_in_service(server):
    sm = server.sm
    deploy_async(sm, "idle")
    assert len(server.instances("idle")) == 1
    sm.update_endpoint_weights_and_capacities(
        EndpointName="idle",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}],
    )
    d = wait_zero(server, sm, "idle")
    v = d["ProductionVariants"][0]
    assert (v["CurrentInstanceCount"], v["DesiredInstanceCount"]) == (0, 0)
    assert not server.processes(), "a model process is left at zero instances"
    # Still InService a while later, and ListEndpoints agrees.
    time.sleep(2)
    assert sm.describe_endpoint(EndpointName="idle")["EndpointStatus"] == "InService"
    listed = {e["EndpointName"]: e["EndpointStatus"] for e in sm.list_endpoints()["Endpoints"]}
    assert listed["idle"] == "InService"
    # And back to one on request.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="idle",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}],
    )
    spw.poll(
        lambda: sm.describe_endpoint(EndpointName="idle")["ProductionVariants"][0]["CurrentInstanceCount"] == 1,
        timeout=60,
        what="one instance again",
    )


def test_backlog_metrics_listed_read_and_exported(server):
    sm, cw = server.sm, server.client("cloudwatch")
    deploy_async(sm, "metered")

    def listed():
        got = cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=[{"Name": "EndpointName", "Value": "metered"}])
        return sorted(
            m["MetricName"]
            for m in got["Metrics"]
            if m["Dimensions"] == [{"Name": "EndpointName", "Value": "metered"}]
        )

    assert spw.poll(lambda: listed() == sorted(BACKLOG_METRICS), timeout=15, what="the backlog metrics listed")
    end = spw.utcnow()
    for metric in BACKLOG_METRICS:
        points = cw.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName=metric,
            Dimensions=[{"Name": "EndpointName", "Value": "metered"}],
            StartTime=end.timestamp() - 120,
            EndTime=end.timestamp() + 1,
            Period=60,
            Statistics=["Maximum", "SampleCount"],
        )["Datapoints"]
        assert points, metric
        # An empty queue with an instance in service: every one of them is 0.
        assert all(p["Maximum"] == 0.0 for p in points), (metric, points)
        assert sum(p["SampleCount"] for p in points) >= 1
        assert points[0]["Unit"] == ("Seconds" if metric == "ApproximateAgeOfOldestRequest" else "Count")
    # A VariantName dimension names no series of these metrics.
    none = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="ApproximateBacklogSize",
        Dimensions=[{"Name": "EndpointName", "Value": "metered"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=end.timestamp() - 120,
        EndTime=end.timestamp() + 1,
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert none == []
    # GetMetricData reads the same series.
    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "flag",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "HasBacklogWithoutCapacity",
                        "Dimensions": [{"Name": "EndpointName", "Value": "metered"}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=end.timestamp() - 120,
        EndTime=end.timestamp() + 1,
    )["MetricDataResults"]
    assert data[0]["Values"] and set(data[0]["Values"]) == {0.0}
    status, _, body = server.http("GET", "/metrics")
    assert status == 200
    text = body.decode()
    for family in ("async_backlog_size", "async_backlog_size_per_instance", "async_oldest_request_age_seconds",
                   "async_backlog_without_capacity"):
        assert f'spillway_{family}{{endpoint="metered"}} 0' in text, family
    # A real-time endpoint publishes none of them.
    assert 'endpoint="metered"' in text
    spw.create_model(sm, "rt-m")
    spw.deploy(sm, "realtime", [spw.single_variant("rt-m", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "realtime")
    time.sleep(1.5)
    assert not cw.list_metrics(
        MetricName="HasBacklogWithoutCapacity", Dimensions=[{"Name": "EndpointName", "Value": "realtime"}]
    )["Metrics"]


def test_backlog_target_tracking_scales_an_idle_queue_to_zero(start_server):
    server = start_server(config={"autoscaling": FAST})
    sm, aas, cw = server.sm, server.client("application-autoscaling"), server.client("cloudwatch")
    deploy_async(sm, "tracked")
    register(aas, "tracked", 0, 2)
    aas.put_scaling_policy(
        PolicyName="backlog-per-instance",
        ServiceNamespace="sagemaker",
        ResourceId=rid("tracked"),
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": "tracked"}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 1,
            "ScaleOutCooldown": 1,
        },
    )
    # Its alarms watch the endpoint's metric, as AWS's would.
    alarms = cw.describe_alarms(AlarmNamePrefix=f"TargetTracking-{rid('tracked')}")["MetricAlarms"]
    assert len(alarms) == 2
    assert all(a["Dimensions"] == [{"Name": "EndpointName", "Value": "tracked"}] for a in alarms), alarms
    # No backlog: AlarmLow (15 periods of 1 s below 4.5) scales the variant in to zero.
    wait_zero(server, sm, "tracked", timeout=90)
    acts = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid("tracked"))["ScalingActivities"]
    assert any(a["Description"] == "Setting desired instance count to 0." for a in acts), acts
    # It stays there: an empty queue asks for nothing.
    time.sleep(3)
    d = sm.describe_endpoint(EndpointName="tracked")
    assert d["EndpointStatus"] == "InService" and d["ProductionVariants"][0]["CurrentInstanceCount"] == 0


def test_the_docs_commands_run_as_written(server, tmp_path):
    """The aws CLI blocks of docs/async.md's "Scaling to and from zero", in order, in one bash,
    against an asynchronous endpoint named as the page names it."""
    import os
    import re
    import subprocess
    import sys

    deploy_async(server.sm, "my-async-endpoint")
    doc = (spw.REPO / "docs" / "async.md").read_text()
    section = doc.split("## Scaling to and from zero", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 3, blocks
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **spw.cli_environment(server),
           "AWS_PAGER": ""}
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    script = "set -euo pipefail\n" + "\n".join(blocks)
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    aas, cw = server.client("application-autoscaling"), server.client("cloudwatch")
    t = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid("my-async-endpoint")])
    assert t["ScalableTargets"][0]["MinCapacity"] == 0
    alarm = cw.describe_alarms(AlarmNames=["my-async-endpoint-scale-from-zero"])["MetricAlarms"][0]
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid("my-async-endpoint"))
    assert alarm["AlarmActions"] == [p["PolicyARN"] for p in policy["ScalingPolicies"]]
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "my-async-endpoint"}]


def test_the_scale_from_zero_alarm_provisions_from_priority_one(server):
    """The alarm + step policy pattern from zero, with boto3: `SetAlarmState` stands in for the
    first requests (it runs the alarm's actions as a breach would; the queue itself is filled
    by InvokeEndpointAsync, and the paused-clock tests fill it directly). The variant had fallen
    back to Priority 2 before it went to zero; scaling up starts at Priority 1 again, and falls
    back when Priority 1 runs out."""
    sm, aas, cw = server.sm, server.client("application-autoscaling"), server.client("cloudwatch")
    spw.create_model(sm, "pooled-m")
    # ml.g6.2xlarge has one slot (spw.DEFAULT_CAPACITY): the second instance falls back.
    variant = spw.pooled_variant("pooled-m", spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)
    spw.deploy(sm, "pooled", [variant], AsyncInferenceConfig=ASYNC)
    spw.wait_in_service(sm, "pooled")
    first = [(a["instanceType"], a["priority"], a["result"]) for a in spw.launch_attempts(server.events("pooled"))]
    assert ("ml.m5.xlarge", 2, "Launched") in first, first
    sm.update_endpoint_weights_and_capacities(
        EndpointName="pooled", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]
    )
    wait_zero(server, sm, "pooled")
    time.sleep(1.5)  # past the ICE back-off of the test config (ice_backoff_max_ms = 1000)
    seen = len(spw.launch_attempts(server.events("pooled")))

    register(aas, "pooled", 0, 2)
    policy = aas.put_scaling_policy(
        PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId=rid("pooled"),
        ScalableDimension=DIM,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 2}],
        },
    )["PolicyARN"]
    cw.put_metric_alarm(
        AlarmName="pooled-scale-from-zero",
        MetricName="HasBacklogWithoutCapacity",
        Namespace="AWS/SageMaker",
        Statistic="Average",
        EvaluationPeriods=2,
        DatapointsToAlarm=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        Dimensions=[{"Name": "EndpointName", "Value": "pooled"}],
        Period=60,
        AlarmActions=[policy],
    )
    cw.set_alarm_state(AlarmName="pooled-scale-from-zero", StateValue="ALARM", StateReason="first requests queued")

    def two_serving():
        d = sm.describe_endpoint(EndpointName="pooled")
        v = d["ProductionVariants"][0]
        return d if d["EndpointStatus"] == "InService" and v["CurrentInstanceCount"] == 2 else None

    d = spw.poll(two_serving, timeout=60, what="two instances after the alarm")
    after = [(a["instanceType"], a["priority"], a["result"]) for a in spw.launch_attempts(server.events("pooled"))[seen:]]
    assert after == [
        ("ml.g6.2xlarge", 1, "Launched"),
        ("ml.g6.2xlarge", 1, "InsufficientCapacity"),
        ("ml.m5.xlarge", 2, "Launched"),
    ], after
    assert spw.pool_counts(d["ProductionVariants"][0]) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 1)]
    history = cw.describe_alarm_history(AlarmName="pooled-scale-from-zero", HistoryItemType="Action")
    assert any("Successfully executed action" in h["HistorySummary"] for h in history["AlarmHistoryItems"]), history
    acts = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid("pooled"))["ScalingActivities"]
    assert any(
        a["Description"] == "Setting desired instance count to 2." and "pooled-scale-from-zero" in a["Cause"]
        for a in acts
    ), acts
