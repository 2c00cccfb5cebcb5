"""Application Auto Scaling, driven with boto3's application-autoscaling client against the real
binary: the API surface, and target tracking that scales a pooled variant out and in under a
generated load, with every decision readable in DescribeScalingActivities."""

from __future__ import annotations

import threading
import time

import pytest

import spw

DIM = "sagemaker:variant:DesiredInstanceCount"
FAST = {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3, "target_tracking_period_seconds": 1}


def rid(endpoint: str, variant: str = "AllTraffic") -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def aas(server):
    return server.client("application-autoscaling")


def error_code(fn, *a, **kw) -> tuple[str, str]:
    code, msg, _ = spw.error_of(fn, *a, **kw)
    return code, msg


class Load:
    """Invokes an endpoint from `threads` threads until stopped; counts outcomes."""

    def __init__(self, server, endpoint: str, threads: int, pause: float = 0.0):
        self.server, self.endpoint, self.threads, self.pause = server, endpoint, threads, pause
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        rt = self.server.client("sagemaker-runtime", retries=1)
        deadline = time.monotonic() + 120  # bounded, whatever happens
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            try:
                rt.invoke_endpoint(EndpointName=self.endpoint, Body=b"x", ContentType="text/plain")
                with self.lock:
                    self.ok += 1
                if self.pause:
                    time.sleep(self.pause)
            except Exception as e:  # noqa: BLE001 - counted and asserted on
                with self.lock:
                    self.errors.append(repr(e))

    def __enter__(self):
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for w in self.workers:
            w.join(timeout=30)


def desired(sm, endpoint: str) -> int:
    return spw.describe(sm, endpoint)["ProductionVariants"][0]["DesiredInstanceCount"]


def test_api_shapes_and_errors(start_server):
    server = start_server(config={"autoscaling": FAST})
    sm, client = server.sm, aas(server)
    spw.create_model(sm, "m")
    spw.deploy(sm, "scaled", [spw.single_variant("m", "ml.m5.xlarge", count=1)])
    spw.wait_in_service(sm, "scaled")

    # A policy needs a registered target.
    code, msg = error_code(
        client.put_scaling_policy,
        PolicyName="p",
        ServiceNamespace="sagemaker",
        ResourceId=rid("scaled"),
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 10.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )
    assert code == "ObjectNotFoundException" and rid("scaled") in msg

    # Bad resource ids and unknown endpoints are validation errors naming the field.
    code, msg = error_code(
        client.register_scalable_target,
        ServiceNamespace="sagemaker", ResourceId="endpoint/scaled", ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2,
    )
    assert code == "ValidationException" and "ResourceId" in msg
    code, msg = error_code(
        client.register_scalable_target,
        ServiceNamespace="sagemaker", ResourceId=rid("nope"), ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2,
    )
    assert code == "ValidationException" and "nope" in msg
    code, msg = error_code(
        client.register_scalable_target,
        ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM, MinCapacity=3, MaxCapacity=2,
    )
    assert code == "ValidationException" and "MinCapacity" in msg

    arn = client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM, MinCapacity=1, MaxCapacity=3
    )["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/")
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid("scaled")])["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"], t["ScalableTargetARN"]) for t in targets] == [
        (rid("scaled"), 1, 3, arn)
    ]
    # Registering again updates in place and keeps the ARN.
    again = client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM, MaxCapacity=4
    )["ScalableTargetARN"]
    assert again == arn
    assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]["MaxCapacity"] == 4

    code, msg = error_code(
        client.put_scaling_policy,
        PolicyName="step", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM,
        PolicyType="StepScaling", StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity"},
    )
    assert code == "ValidationException" and "StepAdjustments" in msg, msg
    code, msg = error_code(
        client.put_scaling_policy,
        PolicyName="step", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM,
        PolicyType="StepScaling", StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
                                {"MetricIntervalLowerBound": 5, "ScalingAdjustment": 2}]},
    )
    assert code == "ValidationException" and "overlap" in msg, msg
    code, msg = error_code(
        client.put_scaling_policy,
        PolicyName="bad-math", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 1.0,
            "CustomizedMetricSpecification": {
                "Metrics": [
                    {"Id": "a", "MetricStat": {"Metric": {"MetricName": "Invocations", "Namespace": "AWS/SageMaker"}, "Stat": "Sum"}, "ReturnData": False},
                    {"Id": "e", "Expression": "a * missing", "ReturnData": True},
                ]
            },
        },
    )
    assert code == "ValidationException" and "Expression" in msg

    policy = client.put_scaling_policy(
        PolicyName="ipi", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 600, "ScaleOutCooldown": 60,
        },
    )
    assert policy["PolicyARN"].endswith(f"resource/sagemaker/{rid('scaled')}:policyName/ipi")
    # Target tracking owns two CloudWatch alarms, as on AWS, named in the answer.
    names = sorted(a["AlarmName"] for a in policy["Alarms"])
    assert len(names) == 2 and names[0].startswith(f"TargetTracking-{rid('scaled')}-AlarmHigh-")
    assert names[1].startswith(f"TargetTracking-{rid('scaled')}-AlarmLow-")
    listed = client.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid("scaled"))["ScalingPolicies"]
    assert [p["PolicyName"] for p in listed] == ["ipi"]
    assert listed[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 100.0
    assert listed[0]["Alarms"] == policy["Alarms"]
    cw = server.client("cloudwatch")
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="TargetTracking-")["MetricAlarms"]}
    assert sorted(alarms) == names
    high = alarms[names[0]]
    assert (high["Threshold"], high["ComparisonOperator"], high["EvaluationPeriods"], high["Period"]) == (
        100.0, "GreaterThanThreshold", 3, 1)
    assert high["MetricName"] == "InvocationsPerInstance" and high["Statistic"] == "Sum"
    assert high["AlarmActions"] == [policy["PolicyARN"]] and high["StateValue"] == "INSUFFICIENT_DATA"
    low = alarms[names[1]]
    assert (low["Threshold"], low["ComparisonOperator"], low["EvaluationPeriods"]) == (90.0, "LessThanThreshold", 15)

    client.delete_scaling_policy(PolicyName="ipi", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM)
    # Its alarms go with it.
    assert cw.describe_alarms(AlarmNamePrefix="TargetTracking-")["MetricAlarms"] == []
    code, _ = error_code(
        client.delete_scaling_policy, PolicyName="ipi", ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM
    )
    assert code == "ObjectNotFoundException"
    client.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid("scaled"), ScalableDimension=DIM)
    assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_min_capacity_is_enforced_on_registration(start_server):
    server = start_server(config={"autoscaling": FAST})
    sm, client = server.sm, aas(server)
    spw.create_model(sm, "m")
    spw.deploy(sm, "floor", [spw.single_variant("m", "ml.m5.xlarge", count=1)])
    spw.wait_in_service(sm, "floor")
    client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid("floor"), ScalableDimension=DIM, MinCapacity=2, MaxCapacity=3
    )
    spw.poll(lambda: desired(sm, "floor") == 2, timeout=30, what="desired raised to MinCapacity")
    spw.wait_in_service(sm, "floor")
    acts = client.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid("floor"))["ScalingActivities"]
    assert acts and "MinCapacity" in acts[0]["Cause"]
    assert acts[0]["Description"] == "Setting desired instance count to 2."


@pytest.mark.slow
def test_target_tracking_scales_out_through_pools_and_back_in(start_server):
    """Predefined SageMakerVariantInvocationsPerInstance: load drives the variant out onto the
    fallback pool through the policy's AlarmHigh; light load brings AlarmLow and scale-in,
    fallback instances first. (No load at all would leave AlarmLow without data, as on AWS.)"""
    server = start_server(config={"autoscaling": FAST})
    sm, client = server.sm, aas(server)
    spw.create_model(sm, "m")
    spw.deploy(
        sm,
        "auto",
        [spw.pooled_variant("m", spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=1)],
    )
    spw.wait_in_service(sm, "auto")
    client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid("auto"), ScalableDimension=DIM, MinCapacity=1, MaxCapacity=3
    )
    client.put_scaling_policy(
        PolicyName="ipi", ServiceNamespace="sagemaker", ResourceId=rid("auto"), ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 600.0,  # ten invocations per second per instance
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
        },
    )
    with Load(server, "auto", threads=2) as load:
        spw.poll(lambda: desired(sm, "auto") == 3, timeout=60, what="scale-out to MaxCapacity")
        spw.wait_in_service(sm, "auto")
    assert load.errors == [], load.errors[:3]
    assert load.ok > 0
    pools = spw.pool_counts(spw.describe(sm, "auto")["ProductionVariants"][0])
    assert pools == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]

    # Light load (a few invocations a second, far below 90 % of the target on three
    # instances): AlarmLow goes to ALARM after 15 periods and the variant scales back to
    # MinCapacity, keeping the preferred type.
    # Two threads, so that one client's stall does not leave a 1-s period without invocations.
    with Load(server, "auto", threads=2, pause=0.5) as light:
        spw.poll(lambda: desired(sm, "auto") == 1, timeout=90, what="scale-in to MinCapacity")
        spw.wait_in_service(sm, "auto")
    assert light.errors == [], light.errors[:3]
    spw.poll(
        lambda: spw.pool_counts(spw.describe(sm, "auto")["ProductionVariants"][0]) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)],
        timeout=30,
        what="fallback instances removed first",
    )
    def completed():
        acts = client.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid("auto"))["ScalingActivities"]
        done = [a for a in acts if a["StatusCode"] != "InProgress"]
        has_out = any("AlarmHigh" in a["Cause"] for a in done)
        has_in = any("AlarmLow" in a["Cause"] for a in done)
        return acts if has_out and has_in and len(done) == len(acts) else None

    acts = spw.poll(completed, timeout=30, what="completed scale-out and scale-in activities")
    outs = [a for a in acts if "AlarmHigh" in a["Cause"]]
    ins = [a for a in acts if "AlarmLow" in a["Cause"]]
    assert outs and ins, acts
    assert all("triggered policy ipi" in a["Cause"] for a in outs + ins)
    assert outs[-1]["StatusCode"] == "Successful", outs[-1]
    assert any(a["Description"] == "Setting desired instance count to 3." for a in outs)
    assert any(a["Description"] == "Setting desired instance count to 1." for a in ins)
    # Newest first, as the service returns them.
    starts = [a["StartTime"] for a in acts]
    assert starts == sorted(starts, reverse=True)


@pytest.mark.slow
def test_weighted_per_instance_type_metric_math_scales_out(start_server):
    """CustomizedMetricSpecification with metric math over ConcurrentRequestsPerModel per
    InstanceType (the form AWS shows for mixed fleets), and DisableScaleIn honoured."""
    server = start_server(config={"autoscaling": FAST})
    sm, client = server.sm, aas(server)
    spw.create_model(sm, "slow", env={"ECHO_INVOCATION_DELAY_MS": "200"})
    spw.deploy(
        sm,
        "mixed",
        [spw.pooled_variant("slow", spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2,
                            RoutingConfig={"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"})],
    )
    spw.wait_in_service(sm, "mixed")
    assert spw.pool_counts(spw.describe(sm, "mixed")["ProductionVariants"][0]) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 1)]

    def stat(itype):
        return {
            "Metric": {
                "MetricName": "ConcurrentRequestsPerModel",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [
                    {"Name": "EndpointName", "Value": "mixed"},
                    {"Name": "VariantName", "Value": "AllTraffic"},
                    {"Name": "InstanceType", "Value": itype},
                ],
            },
            "Stat": "Average",
        }

    client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid("mixed"), ScalableDimension=DIM, MinCapacity=1, MaxCapacity=3
    )
    client.put_scaling_policy(
        PolicyName="weighted-concurrency", ServiceNamespace="sagemaker", ResourceId=rid("mixed"), ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 1.0,
            "CustomizedMetricSpecification": {
                "Metrics": [
                    {"Id": "cr_g6", "MetricStat": stat("ml.g6.2xlarge"), "ReturnData": False},
                    {"Id": "cr_m5", "MetricStat": stat("ml.m5.xlarge"), "ReturnData": False},
                    {"Id": "e1", "Expression": "0.5*cr_g6 + 0.5*cr_m5", "Label": "weighted", "ReturnData": True},
                ]
            },
            "ScaleOutCooldown": 0, "ScaleInCooldown": 0, "DisableScaleIn": True,
        },
    )
    with Load(server, "mixed", threads=8) as load:
        spw.poll(lambda: desired(sm, "mixed") == 3, timeout=60, what="scale-out on weighted concurrency")
        spw.wait_in_service(sm, "mixed")
    assert load.errors == [], load.errors[:3]
    # DisableScaleIn: with no load for a few evaluation windows the count stays.
    time.sleep(5)
    assert desired(sm, "mixed") == 3
    acts = client.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid("mixed"))["ScalingActivities"]
    assert acts and all("AlarmLow" not in a["Cause"] for a in acts)
    assert any("triggered policy weighted-concurrency" in a["Cause"] for a in acts)
