"""CloudWatch alarms over spillway's metrics, and step scaling acting on them: boto3's
`cloudwatch` and `application-autoscaling` clients and the aws CLI against the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from botocore.exceptions import ClientError

import spw

DIM = "sagemaker:variant:DesiredInstanceCount"
FAST = {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3, "target_tracking_period_seconds": 1}
AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def dims(endpoint: str, variant: str = "AllTraffic") -> list[dict]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


def invocations_alarm(cw, name: str, endpoint: str, threshold: float, **extra):
    cw.put_metric_alarm(
        AlarmName=name, Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims(endpoint),
        Statistic="Sum", Period=10, EvaluationPeriods=1, Threshold=threshold,
        ComparisonOperator="GreaterThanThreshold", **extra,
    )


def keep_invoking(server, endpoint: str, stop: threading.Event, pause: float = 0.05):
    rt = server.client("sagemaker-runtime")
    while not stop.is_set():
        rt.invoke_endpoint(EndpointName=endpoint, Body=b"x", ContentType="text/plain")
        time.sleep(pause)


def state(cw, name: str) -> str:
    return cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_an_alarm_goes_from_insufficient_data_to_alarm_and_back_with_its_history(start_server):
    server = start_server(config={"autoscaling": FAST})
    sm, cw = server.sm, server.client("cloudwatch")
    spw.deploy_echo(sm, "watched")
    spw.wait_in_service(sm, "watched")
    invocations_alarm(cw, "busy", "watched", 5, AlarmDescription="more than 5 invocations in 10 s",
                      Tags=[{"Key": "owner", "Value": "team-a"}])
    a = cw.describe_alarms(AlarmNames=["busy"])["MetricAlarms"][0]
    assert a["StateValue"] == "INSUFFICIENT_DATA" and a["StateReason"] == "Unchecked: Initial alarm creation"
    assert a["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:busy"
    assert (a["MetricName"], a["Namespace"], a["Statistic"], a["Period"], a["Threshold"]) == (
        "Invocations", "AWS/SageMaker", "Sum", 10, 5.0)
    assert a["Dimensions"] == dims("watched") and a["ActionsEnabled"] is True
    # No invocations yet: no data point, so the alarm stays INSUFFICIENT_DATA.
    time.sleep(1.5)
    assert state(cw, "busy") == "INSUFFICIENT_DATA"
    stop = threading.Event()
    t = threading.Thread(target=keep_invoking, args=(server, "watched", stop), daemon=True)
    t.start()
    try:
        spw.poll(lambda: state(cw, "busy") == "ALARM", timeout=40, what="the alarm to fire")
    finally:
        stop.set()
        t.join(10)
    a = cw.describe_alarms(StateValue="ALARM")["MetricAlarms"][0]
    assert a["AlarmName"] == "busy" and a["StateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints")
    reason = json.loads(a["StateReasonData"])
    assert reason["threshold"] == 5.0 and reason["recentDatapoints"][0] > 5
    # It shows as an event of the endpoint.
    kinds = [(e["kind"], e.get("result")) for e in server.events("watched")]
    assert ("AlarmStateChanged", "ALARM") in kinds
    # Set by hand, then the next evaluation puts it back.
    cw.set_alarm_state(AlarmName="busy", StateValue="OK", StateReason="testing the pager")
    hist = cw.describe_alarm_history(AlarmName="busy", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    # (the next evaluation may already have put it back in ALARM: find the change by hand)
    by_hand = [h for h in hist if json.loads(h["HistoryData"])["newState"]["stateReason"] == "testing the pager"]
    assert [h["HistorySummary"] for h in by_hand] == ["Alarm updated from ALARM to OK"], hist
    assert [h["HistorySummary"] for h in hist][-1] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    config = cw.describe_alarm_history(AlarmName="busy", HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in config] == ['Alarm "busy" created']
    # For a metric.
    found = cw.describe_alarms_for_metric(MetricName="Invocations", Namespace="AWS/SageMaker", Dimensions=dims("watched"))
    assert [x["AlarmName"] for x in found["MetricAlarms"]] == ["busy"]
    assert cw.describe_alarms_for_metric(MetricName="Invocations", Namespace="AWS/SageMaker",
                                         Dimensions=dims("other"))["MetricAlarms"] == []
    # Disable / enable actions; delete; an unknown name is ResourceNotFound (404).
    cw.disable_alarm_actions(AlarmNames=["busy"])
    assert cw.describe_alarms(AlarmNames=["busy"])["MetricAlarms"][0]["ActionsEnabled"] is False
    cw.enable_alarm_actions(AlarmNames=["busy"])
    assert cw.describe_alarms(AlarmNames=["busy"])["MetricAlarms"][0]["ActionsEnabled"] is True
    # Tags, read back with ListTagsForResource.
    arn = a["AlarmArn"]
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "owner", "Value": "team-a"}]
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "ci"}])
    cw.untag_resource(ResourceARN=arn, TagKeys=["owner"])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "ci"}]
    # DeleteAlarms deletes the names that exist and ignores the others, as AWS documents.
    cw.delete_alarms(AlarmNames=["busy", "nope"])
    assert cw.describe_alarms()["MetricAlarms"] == []
    with pytest.raises(ClientError) as e:
        cw.list_tags_for_resource(ResourceARN=arn)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        cw.set_alarm_state(AlarmName="busy", StateValue="OK", StateReason="x")
    assert e.value.response["Error"]["Code"] == "ResourceNotFound"


def test_alarm_requests_are_checked(server):
    cw = server.client("cloudwatch")
    base = dict(AlarmName="a", Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims("e"),
                Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1.0,
                ComparisonOperator="GreaterThanThreshold")
    for change, words in (
        ({"Period": 7}, "Period"),
        ({"EvaluationPeriods": 2, "DatapointsToAlarm": 3}, "DatapointsToAlarm"),
        ({"EvaluationPeriods": 1441}, "must not exceed 86400"),
        ({"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"}, "ComparisonOperator"),
        ({"TreatMissingData": "sometimes"}, "TreatMissingData"),
        ({"AlarmActions": ["not-an-arn"]}, "arn"),
    ):
        with pytest.raises(ClientError) as e:
            cw.put_metric_alarm(**{**base, **change})
        assert words in e.value.response["Error"]["Message"], (change, e.value.response["Error"])
    with pytest.raises(ClientError) as e:
        cw.describe_alarms(AlarmNames=["a"], AlarmNamePrefix="a")
    assert e.value.response["Error"]["Code"] == "InvalidParameterCombination"
    with pytest.raises(ClientError) as e:
        cw.describe_alarms(NextToken="forged")
    assert e.value.response["Error"]["Code"] == "InvalidNextToken"
    with pytest.raises(ClientError) as e:
        cw.put_metric_alarm(**{**base, "AlarmName": "b"}, Metrics=[])
    assert e.value.response["Error"]["Code"] in ("InvalidParameterCombination", "MissingParameter")
    cw.put_metric_alarm(**base)
    with pytest.raises(ClientError) as e:
        cw.set_alarm_state(AlarmName="a", StateValue="ALARM", StateReason="x", StateReasonData="{not json")
    assert e.value.response["Error"]["Code"] == "InvalidFormat"
    # Pages of MaxRecords.
    for i in range(3):
        cw.put_metric_alarm(**{**base, "AlarmName": f"page-{i}"})
    first = cw.describe_alarms(AlarmNamePrefix="page-", MaxRecords=2)
    rest = cw.describe_alarms(AlarmNamePrefix="page-", MaxRecords=2, NextToken=first["NextToken"])
    assert [a["AlarmName"] for a in first["MetricAlarms"] + rest["MetricAlarms"]] == ["page-0", "page-1", "page-2"]
    assert "NextToken" not in rest


def test_step_scaling_acts_when_its_alarm_fires_and_the_cli_sees_it(start_server):
    """The pattern AWS documents for scaling on an alarm: a StepScaling policy named in an alarm's
    AlarmActions; the alarm fires, the policy adds capacity by its step, within MaxCapacity,
    recorded as a scaling activity and in the alarm's history."""
    server = start_server(config={"autoscaling": FAST})
    sm, cw, aas = server.sm, server.client("cloudwatch"), server.client("application-autoscaling")
    spw.deploy_echo(sm, "stepped")
    spw.wait_in_service(sm, "stepped")
    rid = "endpoint/stepped/variant/AllTraffic"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=2)
    policy = aas.put_scaling_policy(
        PolicyName="add-one", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 0,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    assert policy["Alarms"] == []
    described = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"][0]
    assert described["PolicyType"] == "StepScaling"
    assert described["StepScalingPolicyConfiguration"]["MetricAggregationType"] == "Average"
    # The aws CLI creates the alarm, as a runbook would.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **spw.cli_environment(server),
           "AWS_PAGER": ""}
    subprocess.run(
        [AWS, "cloudwatch", "put-metric-alarm", "--alarm-name", "scale-up", "--namespace", "AWS/SageMaker",
         "--metric-name", "Invocations", "--statistic", "Sum", "--period", "10", "--evaluation-periods", "1",
         "--threshold", "5", "--comparison-operator", "GreaterThanThreshold",
         "--dimensions", "Name=EndpointName,Value=stepped", "Name=VariantName,Value=AllTraffic",
         "--alarm-actions", policy["PolicyARN"]],
        check=True, env=env, capture_output=True, timeout=60,
    )
    stop = threading.Event()
    t = threading.Thread(target=keep_invoking, args=(server, "stepped", stop), daemon=True)
    t.start()
    try:
        spw.poll(lambda: spw.describe(sm, "stepped")["ProductionVariants"][0]["DesiredInstanceCount"] == 2,
                 timeout=60, what="step scaling to add an instance")
    finally:
        stop.set()
        t.join(10)
    spw.wait_in_service(sm, "stepped")
    acts = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingActivities"]
    assert any("monitor alarm scale-up in state ALARM triggered policy add-one" in a["Cause"] for a in acts), acts
    history = subprocess.run(
        [AWS, "cloudwatch", "describe-alarm-history", "--alarm-name", "scale-up", "--history-item-type", "Action",
         "--output", "json"], check=True, env=env, capture_output=True, text=True, timeout=60,
    )
    items = json.loads(history.stdout)["AlarmHistoryItems"]
    assert items and items[-1]["HistorySummary"].startswith(f"Successfully executed action {policy['PolicyARN']}")
    # MaxCapacity holds while the alarm stays in ALARM (the action runs again each period).
    assert spw.describe(sm, "stepped")["ProductionVariants"][0]["DesiredInstanceCount"] == 2
    # An SNS action is kept, and its failure to deliver is in the history.
    cw.put_metric_alarm(AlarmName="pager", Namespace="AWS/SageMaker", MetricName="Invocations",
                        Dimensions=dims("stepped"), Statistic="Sum", Period=10, EvaluationPeriods=1, Threshold=0,
                        ComparisonOperator="GreaterThanOrEqualToThreshold",
                        AlarmActions=["arn:aws:sns:us-east-1:123456789012:pager"])
    cw.set_alarm_state(AlarmName="pager", StateValue="ALARM", StateReason="drill")
    actions = cw.describe_alarm_history(AlarmName="pager", HistoryItemType="Action")["AlarmHistoryItems"]
    assert "spillway delivers no SNS notifications" in actions[0]["HistorySummary"]
    # Deleting the policy leaves the user's alarm; deregistering the target too.
    aas.delete_scaling_policy(PolicyName="add-one", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM)
    assert state(cw, "scale-up")


def limited_user(server, name: str, statements: list[dict]):
    iam = server.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return server.client("cloudwatch", keys=(key["AccessKeyId"], key["SecretAccessKey"]))


def test_alarm_operations_are_authorized_on_every_alarm_they_name_and_on_tags(server):
    """A review found DeleteAlarms and Enable/DisableAlarmActions authorized on `*`: a Deny on
    some alarms did not protect them; and tag condition keys were not set for CloudWatch."""
    cw = server.client("cloudwatch")
    for name in ("free-1", "prot-1"):
        invocations_alarm(cw, name, "e", 5)
    arn = f"arn:aws:cloudwatch:us-east-1:{spw.ACCOUNT}:alarm:"
    user = limited_user(server, "alarm-user", [
        {"Effect": "Allow", "Action": "cloudwatch:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["cloudwatch:DeleteAlarms", "cloudwatch:DisableAlarmActions"],
         "Resource": arn + "prot-*"},
        {"Effect": "Deny", "Action": "cloudwatch:TagResource", "Resource": "*",
         "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner"]}}},
    ])
    spw.poll(lambda: user.describe_alarms(AlarmNames=["free-1"]), what="the new key to be known")
    for call in (user.delete_alarms, user.disable_alarm_actions):
        with pytest.raises(ClientError) as e:
            call(AlarmNames=["free-1", "prot-1"])
        assert e.value.response["Error"]["Code"] == "AccessDeniedException", e.value.response
        assert "alarm:prot-1" in e.value.response["Error"]["Message"]
    assert {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]} == {"free-1", "prot-1"}
    user.disable_alarm_actions(AlarmNames=["free-1"])
    with pytest.raises(ClientError) as e:
        user.tag_resource(ResourceARN=arn + "free-1", Tags=[{"Key": "owner", "Value": "me"}])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    user.tag_resource(ResourceARN=arn + "free-1", Tags=[{"Key": "env", "Value": "ci"}])
    user.delete_alarms(AlarmNames=["free-1"])


def test_numbers_beyond_awss_32_bit_integers_are_refused(start_server):
    """A review found ScalingAdjustment = 2**63 - 1 accepted, then overflowing when the alarm fired."""
    server = start_server()
    spw.deploy_echo(server.sm, "big")
    spw.wait_in_service(server.sm, "big")
    aas = server.client("application-autoscaling", validate=False)
    rid = "endpoint/big/variant/AllTraffic"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=2)
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(
            PolicyName="huge", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 2**63 - 1}]},
        )
    assert e.value.response["Error"]["Code"] in ("SerializationException", "ValidationException"), e.value.response
    cw = server.client("cloudwatch", validate=False)
    with pytest.raises(ClientError):
        invocations_alarm(cw, "many", "big", 1, DatapointsToAlarm=2**32 + 1)


def test_a_deleted_target_tracking_alarm_is_made_again(start_server):
    """A review found that deleting a policy's AlarmHigh switched the policy off for good."""
    server = start_server(config={"autoscaling": FAST})
    spw.deploy_echo(server.sm, "tt")
    spw.wait_in_service(server.sm, "tt")
    aas, cw = server.client("application-autoscaling"), server.client("cloudwatch")
    rid = "endpoint/tt/variant/AllTraffic"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=2)
    alarms = aas.put_scaling_policy(
        PolicyName="tt", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}},
    )["Alarms"]
    cw.delete_alarms(AlarmNames=[a["AlarmName"] for a in alarms])
    spw.poll(lambda: len(cw.describe_alarms(AlarmNamePrefix="TargetTracking-")["MetricAlarms"]) == 2,
             timeout=30, what="the policy's alarms to be made again")
    listed = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"][0]
    assert sorted(a["AlarmName"] for a in listed["Alarms"]) == sorted(
        a["AlarmName"] for a in cw.describe_alarms(AlarmNamePrefix="TargetTracking-")["MetricAlarms"])


def test_the_alarm_quota_is_enforced(start_server):
    """[autoscaling] max_alarms (AWS's default quota: 5,000): a new alarm beyond it is
    LimitExceeded; updating an existing one is not."""
    server = start_server(config={"autoscaling": {"max_alarms": 2}})
    cw = server.client("cloudwatch")
    invocations_alarm(cw, "a1", "e", 1)
    invocations_alarm(cw, "a2", "e", 1)
    with pytest.raises(ClientError) as e:
        invocations_alarm(cw, "a3", "e", 1)
    assert e.value.response["Error"]["Code"] == "LimitExceeded", e.value.response
    assert "max_alarms" in e.value.response["Error"]["Message"]
    invocations_alarm(cw, "a2", "e", 2)  # an update
    cw.delete_alarms(AlarmNames=["a1"])
    invocations_alarm(cw, "a3", "e", 1)
