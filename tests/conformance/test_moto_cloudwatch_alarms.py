"""moto's CloudWatch alarm tests, run against the real spillway binary.

Source: getmoto/moto at 0af643a5dbfc98797f08ee64f5be3ef8002d56ff, tests/test_cloudwatch/
test_cloudwatch_alarms.py (every test) and test_cloudwatch.py (formerly test_cloudwatch_boto3.py:
its five `test_put_metric_alarm*` tests). Each test keeps moto's name; its docstring says what was
changed. moto-only assumptions are replaced by AWS's documented behaviour:

- A new alarm is `INSUFFICIENT_DATA` (PutMetricAlarm: "When this operation creates an alarm, the
  alarm state is immediately set to INSUFFICIENT_DATA. The alarm is then evaluated and its state is
  set appropriately"); moto answers `OK` at once.
- Alarm actions are ARNs of the forms AWS lists as valid (SNS topics in the alarm's region);
  moto's `arn:alarm` and its `$`-mangled topic ARN are not such ARNs.
- Regions are the server's configured region (spillway serves one region per process).
- Features spillway documents as unsupported (percentile statistics, anomaly detection) are
  checked for spillway's documented refusal (`InvalidParameterValue`) instead of being stored.

Tests marked `xfail(strict=True)` are places where spillway differs from AWS's documentation.

Left out:
- test_cloudwatch.py: everything but the alarm tests (PutMetricData, GetMetricStatistics,
  GetMetricData, ListMetrics over PutMetricData's data, S3 metrics, dashboards): PutMetricData is
  not implemented by spillway (`UnknownOperationException`, docs/api-compat.md), and metric reads
  are covered by test_cloudwatch.py.
- test_cloudwatch_tags.py: alarm tags are covered by test_alarms.py (TagResource, UntagResource,
  ListTagsForResource on alarm ARNs); its insight-rule tests need insight rules, which spillway
  does not have.
- test_cloudwatch_dashboards.py, test_cloudwatch_insight_rules.py, test_cloudwatch_expressions.py,
  test_cloudwatch_expression_parser.py, test_cloudwatch_cloudformation.py: no alarms in them, or
  only through PutMetricData/CloudFormation, which spillway does not serve.
"""

from __future__ import annotations

import json
from datetime import datetime
from operator import itemgetter

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import shapes
import spw

ACCOUNT_ID = spw.ACCOUNT
FAST = {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3, "target_tracking_period_seconds": 1}


def cloudwatch_in(server, region: str):
    """A cloudwatch client for a server configured for `region` (spw's clients sign for us-east-1)."""
    keys = server.credentials
    client = boto3.session.Session().client(
        "cloudwatch",
        region_name=region,
        endpoint_url=server.url,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    shapes.watch(client)
    return client


@pytest.mark.parametrize(
    "region,partition",
    [
        ("eu-west-1", "aws"),
        pytest.param(
            "cn-north-1",
            "aws-cn",
            marks=pytest.mark.xfail(
                strict=True,
                reason="spillway: a server configured for cn-north-1 names alarms arn:aws:cloudwatch:cn-north-1:..., "
                "AWS's China regions use the aws-cn partition (arn:aws-cn:cloudwatch:cn-north-1:...)",
            ),
        ),
    ],
)
def test_create_alarm(start_server, region, partition):
    """A server configured for the region; SNS topic ARNs of that partition and region instead of arn:alarm/arn:ok/arn:insufficient; StateValue INSUFFICIENT_DATA checked."""
    server = start_server(config={"region": region})
    cloudwatch = cloudwatch_in(server, region)

    topic = f"arn:{partition}:sns:{region}:{ACCOUNT_ID}"
    name = "tester"
    cloudwatch.put_metric_alarm(
        AlarmActions=[f"{topic}:alarm"],
        AlarmDescription="A test",
        AlarmName=name,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "InstanceId", "Value": "i-0123457"}],
        EvaluationPeriods=5,
        InsufficientDataActions=[f"{topic}:insufficient"],
        Namespace=f"{name}_namespace",
        MetricName=f"{name}_metric",
        OKActions=[f"{topic}:ok"],
        Period=60,
        Statistic="Average",
        Threshold=2,
        Unit="Seconds",
    )

    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["AlarmName"] == "tester"
    assert alarm["Namespace"] == "tester_namespace"
    assert alarm["MetricName"] == "tester_metric"
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 2.0
    assert alarm["Period"] == 60
    assert alarm["EvaluationPeriods"] == 5
    assert alarm["Statistic"] == "Average"
    assert alarm["AlarmDescription"] == "A test"
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123457"}]
    assert alarm["AlarmActions"] == [f"{topic}:alarm"]
    assert alarm["OKActions"] == [f"{topic}:ok"]
    assert alarm["InsufficientDataActions"] == [f"{topic}:insufficient"]
    assert alarm["Unit"] == "Seconds"
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"
    assert alarm["AlarmArn"] == f"arn:{partition}:cloudwatch:{region}:{ACCOUNT_ID}:alarm:{name}"
    # default value should be True
    assert alarm["ActionsEnabled"] is True


def test_delete_alarm(server):
    """SNS topic ARNs instead of arn:alarm/arn:ok/arn:insufficient; the server's region (us-east-1) instead of eu-central-1."""
    cloudwatch = server.client("cloudwatch")

    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert len(alarms) == 0

    topic = f"arn:aws:sns:{spw.REGION}:{ACCOUNT_ID}"
    name = "tester"
    cloudwatch.put_metric_alarm(
        AlarmActions=[f"{topic}:alarm"],
        AlarmDescription="A test",
        AlarmName=name,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "InstanceId", "Value": "i-0123457"}],
        EvaluationPeriods=5,
        InsufficientDataActions=[f"{topic}:insufficient"],
        Namespace=f"{name}_namespace",
        MetricName=f"{name}_metric",
        OKActions=[f"{topic}:ok"],
        Period=60,
        Statistic="Average",
        Threshold=2,
        Unit="Seconds",
    )

    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert len(alarms) == 1

    cloudwatch.delete_alarms(AlarmNames=[name])

    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert len(alarms) == 0


def test_delete_alarms_without_error(server):
    """Also names an existing alarm next to the missing one, which AWS documents is still deleted."""
    cloudwatch = server.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="exists", ComparisonOperator="GreaterThanThreshold", EvaluationPeriods=1,
        Namespace="blah", MetricName="cpu", Period=60, Statistic="Average", Threshold=2,
    )

    # when/then
    cloudwatch.delete_alarms(AlarmNames=["not-exists"])
    cloudwatch.delete_alarms(AlarmNames=["exists", "not-exists"])
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []


def test_enable_disable_alarm_actions(server):
    """An SNS topic ARN instead of arn:alarm."""
    cloudwatch = server.client("cloudwatch")

    name = "tester"
    cloudwatch.put_metric_alarm(
        AlarmActions=[f"arn:aws:sns:{spw.REGION}:{ACCOUNT_ID}:alarm"],
        AlarmDescription="A test",
        AlarmName=name,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        EvaluationPeriods=5,
        Namespace=f"{name}_namespace",
        MetricName=f"{name}_metric",
        Period=60,
        Statistic="Average",
        Threshold=2,
        ActionsEnabled=True,
    )

    cloudwatch.disable_alarm_actions(AlarmNames=[name])
    alarm = cloudwatch.describe_alarms()["MetricAlarms"][0]
    assert alarm["ActionsEnabled"] is False

    cloudwatch.enable_alarm_actions(AlarmNames=[name])
    alarm = cloudwatch.describe_alarms()["MetricAlarms"][0]
    assert alarm["ActionsEnabled"] is True


def test_enable_disable_alarm_actions_without_error(server):
    """Unchanged but for the client (AWS documents no errors of its own for either operation)."""
    cloudwatch = server.client("cloudwatch")

    cloudwatch.disable_alarm_actions(AlarmNames=["not-exists"])
    cloudwatch.enable_alarm_actions(AlarmNames=["not-exists"])


def test_describe_alarms_for_metric(server):
    """Unchanged but for the client; also checks the ARN is the alarm's full ARN in the server's region."""
    conn = server.client("cloudwatch")
    conn.put_metric_alarm(
        AlarmName="testalarm1",
        MetricName="cpu",
        Namespace="blah",
        Period=10,
        EvaluationPeriods=5,
        Statistic="Average",
        Threshold=2,
        ComparisonOperator="GreaterThanThreshold",
        ActionsEnabled=True,
    )
    alarms = conn.describe_alarms_for_metric(MetricName="cpu", Namespace="blah")
    assert len(alarms.get("MetricAlarms")) == 1
    alarm = alarms.get("MetricAlarms")[0]
    assert "testalarm1" in alarm.get("AlarmArn")
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:{spw.REGION}:{ACCOUNT_ID}:alarm:testalarm1"
    assert alarm["ActionsEnabled"] is True


def test_describe_alarms(server):
    """A single-metric alarm's Metrics may be absent or empty (AWS's JSON protocol leaves empty lists out); both alarms INSUFFICIENT_DATA."""
    conn = server.client("cloudwatch")
    conn.put_metric_alarm(
        AlarmName="testalarm1",
        MetricName="cpu",
        Namespace="blah",
        Period=10,
        EvaluationPeriods=5,
        Statistic="Average",
        Threshold=2,
        ComparisonOperator="GreaterThanThreshold",
        ActionsEnabled=False,
    )
    metric_data_queries = [
        {
            "Id": "metricA",
            "Expression": "metricB + metricC",
            "Label": "metricA",
            "ReturnData": True,
        },
        {
            "Id": "metricB",
            "MetricStat": {
                "Metric": {
                    "Namespace": "ns",
                    "MetricName": "metricB",
                    "Dimensions": [{"Name": "Name", "Value": "B"}],
                },
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": False,
        },
        {
            "Id": "metricC",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/Lambda",
                    "MetricName": "metricC",
                    "Dimensions": [{"Name": "Name", "Value": "C"}],
                },
                "Period": 60,
                "Stat": "Sum",
                "Unit": "Seconds",
            },
            "ReturnData": False,
        },
    ]
    conn.put_metric_alarm(
        AlarmName="testalarm2",
        EvaluationPeriods=1,
        DatapointsToAlarm=1,
        Metrics=metric_data_queries,
        ComparisonOperator="GreaterThanThreshold",
        Threshold=1.0,
    )
    alarms = conn.describe_alarms()
    metric_alarms = alarms.get("MetricAlarms")
    assert len(metric_alarms) == 2
    single_metric_alarm = [alarm for alarm in metric_alarms if alarm["AlarmName"] == "testalarm1"][0]
    multiple_metric_alarm = [alarm for alarm in metric_alarms if alarm["AlarmName"] == "testalarm2"][0]

    assert single_metric_alarm["MetricName"] == "cpu"
    assert single_metric_alarm.get("Metrics", []) == []
    assert single_metric_alarm["Namespace"] == "blah"
    assert single_metric_alarm["Period"] == 10
    assert single_metric_alarm["EvaluationPeriods"] == 5
    assert single_metric_alarm["Statistic"] == "Average"
    assert single_metric_alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert single_metric_alarm["Threshold"] == 2
    assert single_metric_alarm["ActionsEnabled"] is False
    assert single_metric_alarm["StateValue"] == "INSUFFICIENT_DATA"

    assert "MetricName" not in multiple_metric_alarm
    assert multiple_metric_alarm["EvaluationPeriods"] == 1
    assert multiple_metric_alarm["DatapointsToAlarm"] == 1
    assert multiple_metric_alarm["Metrics"] == metric_data_queries
    assert multiple_metric_alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert multiple_metric_alarm["Threshold"] == 1.0
    assert multiple_metric_alarm["ActionsEnabled"] is True
    assert multiple_metric_alarm["StateValue"] == "INSUFFICIENT_DATA"


def test_alarm_state(start_server):
    """The untouched alarm is INSUFFICIENT_DATA (AWS's state for a new alarm), not OK; evaluations an hour apart so the state set by hand is read before one."""
    server = start_server(config={"autoscaling": {"evaluation_interval_seconds": 3600}})
    client = server.client("cloudwatch")

    client.put_metric_alarm(
        AlarmName="testalarm1",
        MetricName="cpu",
        Namespace="blah",
        Period=10,
        EvaluationPeriods=5,
        Statistic="Average",
        Threshold=2,
        ComparisonOperator="GreaterThanThreshold",
        ActionsEnabled=True,
    )
    client.put_metric_alarm(
        AlarmName="testalarm2",
        MetricName="cpu",
        Namespace="blah",
        Period=10,
        EvaluationPeriods=5,
        Statistic="Average",
        Threshold=2,
        ComparisonOperator="GreaterThanThreshold",
    )

    # This is tested implicitly as if it doesnt work the rest will die
    client.set_alarm_state(
        AlarmName="testalarm1",
        StateValue="ALARM",
        StateReason="testreason",
        StateReasonData='{"some": "json_data"}',
    )

    resp = client.describe_alarms(StateValue="ALARM")
    assert len(resp["MetricAlarms"]) == 1
    assert resp["MetricAlarms"][0]["AlarmName"] == "testalarm1"
    assert resp["MetricAlarms"][0]["StateValue"] == "ALARM"
    assert resp["MetricAlarms"][0]["StateReason"] == "testreason"
    assert resp["MetricAlarms"][0]["StateReasonData"] == '{"some": "json_data"}'
    assert resp["MetricAlarms"][0]["ActionsEnabled"] is True

    resp = client.describe_alarms(StateValue="INSUFFICIENT_DATA")
    assert len(resp["MetricAlarms"]) == 1
    assert resp["MetricAlarms"][0]["AlarmName"] == "testalarm2"
    assert resp["MetricAlarms"][0]["StateValue"] == "INSUFFICIENT_DATA"
    assert resp["MetricAlarms"][0]["ActionsEnabled"] is True

    assert client.describe_alarms(StateValue="OK")["MetricAlarms"] == []

    # Just for sanity
    resp = client.describe_alarms()
    assert len(resp["MetricAlarms"]) == 2


def test_put_metric_alarm(start_server):
    """A well-formed SNS topic ARN (moto's f-string puts '$' in it); created INSUFFICIENT_DATA, then OK once evaluated (notBreaching, no data), read from the state and its history."""
    # given
    server = start_server(config={"autoscaling": FAST})
    region_name = spw.REGION
    client = server.client("cloudwatch")
    alarm_name = "test-alarm"
    sns_topic_arn = f"arn:aws:sns:{region_name}:{ACCOUNT_ID}:test-topic"

    # when
    client.put_metric_alarm(
        AlarmName=alarm_name,
        AlarmDescription="test alarm",
        ActionsEnabled=True,
        OKActions=[sns_topic_arn],
        AlarmActions=[sns_topic_arn],
        InsufficientDataActions=[sns_topic_arn],
        MetricName="5XXError",
        Namespace="AWS/ApiGateway",
        Statistic="Sum",
        Dimensions=[
            {"Name": "ApiName", "Value": "test-api"},
            {"Name": "Stage", "Value": "default"},
        ],
        Period=60,
        Unit="Seconds",
        EvaluationPeriods=1,
        DatapointsToAlarm=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
        Tags=[{"Key": "key-1", "Value": "value-1"}],
    )

    # then
    alarms = client.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
    assert len(alarms) == 1

    alarm = alarms[0]
    assert alarm["AlarmName"] == alarm_name
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:{region_name}:{ACCOUNT_ID}:alarm:{alarm_name}"
    assert alarm["AlarmDescription"] == "test alarm"
    assert isinstance(alarm["AlarmConfigurationUpdatedTimestamp"], datetime)
    assert alarm["ActionsEnabled"] is True
    assert alarm["OKActions"] == [sns_topic_arn]
    assert alarm["AlarmActions"] == [sns_topic_arn]
    assert alarm["InsufficientDataActions"] == [sns_topic_arn]
    assert alarm["StateValue"] in ("INSUFFICIENT_DATA", "OK")
    assert isinstance(alarm["StateUpdatedTimestamp"], datetime)
    assert alarm["MetricName"] == "5XXError"
    assert alarm["Namespace"] == "AWS/ApiGateway"
    assert alarm["Statistic"] == "Sum"
    assert sorted(alarm["Dimensions"], key=itemgetter("Name")) == [
        {"Name": "ApiName", "Value": "test-api"},
        {"Name": "Stage", "Value": "default"},
    ]
    assert alarm["Period"] == 60
    assert alarm["Unit"] == "Seconds"
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["DatapointsToAlarm"] == 1
    assert alarm["Threshold"] == 1.0
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"

    # Created INSUFFICIENT_DATA; its first evaluation finds no data, which notBreaching counts as good.
    spw.poll(
        lambda: client.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["StateValue"] == "OK",
        timeout=10,
        what="the first evaluation to set OK",
    )
    history = client.describe_alarm_history(AlarmName=alarm_name, HistoryItemType="StateUpdate")
    first = json.loads(history["AlarmHistoryItems"][-1]["HistoryData"])
    assert first["oldState"] == {"stateValue": "INSUFFICIENT_DATA", "stateReason": "Unchecked: Initial alarm creation"}
    assert first["newState"]["stateValue"] == "OK"


def test_put_metric_alarm_with_percentile(server):
    """spillway documents percentiles as unsupported: the p90 alarm is refused with InvalidParameterValue naming spillway, and nothing is stored."""
    # given
    client = server.client("cloudwatch")
    alarm_name = "test-alarm"

    # when
    with pytest.raises(ClientError) as e:
        client.put_metric_alarm(
            AlarmName=alarm_name,
            AlarmDescription="test alarm",
            ActionsEnabled=True,
            MetricName="5XXError",
            Namespace="AWS/ApiGateway",
            ExtendedStatistic="p90",
            Dimensions=[
                {"Name": "ApiName", "Value": "test-api"},
                {"Name": "Stage", "Value": "default"},
            ],
            Period=60,
            Unit="Seconds",
            EvaluationPeriods=1,
            DatapointsToAlarm=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="notBreaching",
            EvaluateLowSampleCountPercentile="ignore",
        )

    # then
    ex = e.value
    assert ex.operation_name == "PutMetricAlarm"
    assert ex.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ex.response["Error"]["Code"] == "InvalidParameterValue"
    assert "p90" in ex.response["Error"]["Message"]
    assert "not supported by spillway" in ex.response["Error"]["Message"]
    assert client.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"] == []


def test_put_metric_alarm_with_anomaly_detection(server):
    """spillway documents anomaly detection as unsupported: the alarm is refused with InvalidParameterValue naming ThresholdMetricId, and nothing is stored."""
    # given
    client = server.client("cloudwatch")
    alarm_name = "test-alarm"
    metrics = [
        {
            "Id": "m1",
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "MetricName": "CPUUtilization",
                    "Namespace": "AWS/EC2",
                    "Dimensions": [{"Name": "instanceId", "Value": "i-1234567890abcdef0"}],
                },
                "Stat": "Average",
                "Period": 60,
            },
        },
        {
            "Id": "t1",
            "ReturnData": False,
            "Expression": "ANOMALY_DETECTION_BAND(m1, 3)",
        },
    ]

    # when
    with pytest.raises(ClientError) as e:
        client.put_metric_alarm(
            AlarmName=alarm_name,
            ActionsEnabled=True,
            Metrics=metrics,
            EvaluationPeriods=2,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            ThresholdMetricId="t1",
        )

    # then
    ex = e.value
    assert ex.operation_name == "PutMetricAlarm"
    assert ex.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ex.response["Error"]["Code"] == "InvalidParameterValue"
    assert "ThresholdMetricId" in ex.response["Error"]["Message"]
    assert client.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"] == []


def test_put_metric_alarm_error_extended_statistic(server):
    """Code and status as moto's; the message is checked to name ExtendedStatistic and the value, not word for word."""
    # given
    client = server.client("cloudwatch")
    alarm_name = "test-alarm"

    # when
    with pytest.raises(ClientError) as e:
        client.put_metric_alarm(
            AlarmName=alarm_name,
            ActionsEnabled=True,
            MetricName="5XXError",
            Namespace="AWS/ApiGateway",
            ExtendedStatistic="90",
            Dimensions=[
                {"Name": "ApiName", "Value": "test-api"},
                {"Name": "Stage", "Value": "default"},
            ],
            Period=60,
            Unit="Seconds",
            EvaluationPeriods=1,
            DatapointsToAlarm=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="notBreaching",
        )

    # then
    ex = e.value
    assert ex.operation_name == "PutMetricAlarm"
    assert ex.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ex.response["Error"]["Code"] == "InvalidParameterValue"
    assert "ExtendedStatistic" in ex.response["Error"]["Message"]
    assert "90" in ex.response["Error"]["Message"]


def test_put_metric_alarm_error_evaluate_low_sample_count_percentile(server):
    """Statistic=Sum instead of ExtendedStatistic=p90 (spillway refuses percentiles first), so the answer is about EvaluateLowSampleCountPercentile alone."""
    # given
    client = server.client("cloudwatch")
    alarm_name = "test-alarm"

    # when
    with pytest.raises(ClientError) as e:
        client.put_metric_alarm(
            AlarmName=alarm_name,
            ActionsEnabled=True,
            MetricName="5XXError",
            Namespace="AWS/ApiGateway",
            Statistic="Sum",
            Dimensions=[
                {"Name": "ApiName", "Value": "test-api"},
                {"Name": "Stage", "Value": "default"},
            ],
            Period=60,
            Unit="Seconds",
            EvaluationPeriods=1,
            DatapointsToAlarm=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="notBreaching",
            EvaluateLowSampleCountPercentile="unknown",
        )

    # then
    ex = e.value
    assert ex.operation_name == "PutMetricAlarm"
    assert ex.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    err = ex.response["Error"]
    assert err["Code"] == "ValidationError"
    assert err["Message"] == (
        "Option unknown is not supported. "
        "Supported options for parameter EvaluateLowSampleCountPercentile are evaluate and ignore."
    )
