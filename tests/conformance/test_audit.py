"""The audit trail, read as CloudTrail: SageMaker calls made with boto3 come back from boto3's
`cloudtrail` client (`LookupEvents`), as CloudTrail records; `spillway audit verify` checks the
hash chain and finds an edit; `spillway audit export` writes JSON lines."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess

import spw


def lookup_all(ct, **kw) -> list[dict]:
    pages = ct.get_paginator("lookup_events").paginate(**kw)
    return [e for p in pages for e in p["Events"]]


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([spw.BIN, "audit", *args], capture_output=True, text=True, timeout=60)


def test_sagemaker_calls_come_back_from_lookup_events_and_the_chain_verifies(server):
    sm, ct = server.sm, server.client("cloudtrail")
    before = spw.utcnow() - dt.timedelta(seconds=2)
    spw.create_model(sm, "AuditModel", env={"API_TOKEN": "do-not-log-me"})
    sm.describe_model(ModelName="AuditModel")
    code, _, _ = spw.error_of(sm.describe_model, ModelName="NoSuchModel")
    assert code == "ValidationException"
    sm.delete_model(ModelName="AuditModel")

    events = lookup_all(ct, StartTime=before)
    names = [e["EventName"] for e in events]
    # Newest first; LookupEvents itself is a read the trail records too.
    assert names[:4] == ["DeleteModel", "DescribeModel", "DescribeModel", "CreateModel"], names

    create = next(e for e in events if e["EventName"] == "CreateModel")
    assert create["ReadOnly"] == "false"
    assert create["EventSource"] == "sagemaker.amazonaws.com"
    assert isinstance(create["EventTime"], dt.datetime)
    assert create["Resources"] == [
        {"ResourceType": "AWS::SageMaker::Model", "ResourceName": spw.arn("model", "AuditModel")}
    ]
    record = json.loads(create["CloudTrailEvent"])
    assert record["eventVersion"] == "1.09"
    assert record["eventName"] == "CreateModel"
    assert record["eventID"] == create["EventId"]
    assert record["awsRegion"] == spw.REGION and record["recipientAccountId"] == spw.ACCOUNT
    assert record["eventTime"].endswith("Z") and len(record["eventTime"]) == 20
    assert record["requestParameters"]["modelName"] == "AuditModel"
    env = record["requestParameters"]["primaryContainer"]["environment"]
    assert env == {"API_TOKEN": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    assert "do-not-log-me" not in create["CloudTrailEvent"]
    assert record["responseElements"]["modelArn"] == spw.arn("model", "AuditModel")
    assert "Boto3" in record["userAgent"] or "botocore" in record["userAgent"]

    described = [json.loads(e["CloudTrailEvent"]) for e in events if e["EventName"] == "DescribeModel"]
    assert [r["readOnly"] for r in described] == [True, True]
    assert [r.get("errorCode") for r in described] == ["ValidationException", None]  # newest first
    assert "nosuchmodel" in described[0]["errorMessage"]
    assert described[1]["responseElements"] is None, "CloudTrail records no answer of a read"

    # One lookup attribute at a time; each finds exactly its events.
    by_name = lookup_all(ct, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateModel"}])
    assert [e["EventId"] for e in by_name] == [create["EventId"]]
    by_resource = lookup_all(
        ct, LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": "AuditModel"}]
    )
    assert [e["EventName"] for e in by_resource] == ["DeleteModel", "DescribeModel", "CreateModel"]
    writes = lookup_all(
        ct, StartTime=before, LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "false"}]
    )
    assert [e["EventName"] for e in writes] == ["DeleteModel", "CreateModel"]
    assert lookup_all(ct, EndTime=before) == []

    # Pages of one, chained by NextToken, give the same events in the same order.
    sagemaker = [{"AttributeKey": "EventSource", "AttributeValue": "sagemaker.amazonaws.com"}]
    whole = lookup_all(ct, LookupAttributes=sagemaker)
    paged = lookup_all(ct, LookupAttributes=sagemaker, PaginationConfig={"PageSize": 1})
    assert [e["EventId"] for e in paged] == [e["EventId"] for e in whole]
    assert len(whole) == 4

    # Refusals, with CloudTrail's codes.
    two = [
        {"AttributeKey": "EventName", "AttributeValue": "CreateModel"},
        {"AttributeKey": "Username", "AttributeValue": "x"},
    ]
    for kwargs, want in [
        ({"LookupAttributes": two}, "InvalidLookupAttributesException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"NextToken": "forged"}, "InvalidNextTokenException"),
        ({"StartTime": spw.utcnow(), "EndTime": before}, "InvalidTimeRangeException"),
    ]:
        code, message, status = spw.error_of(ct.lookup_events, **kwargs)
        assert (code, status) == (want, 400), (kwargs, code, message)
        assert message

    # The chain verifies, and the export is the records, one per line.
    out = audit_cli("verify", "--data-dir", str(server.data_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "intact" in out.stdout
    out = audit_cli("export", "--data-dir", str(server.data_dir))
    assert out.returncode == 0, out.stderr
    exported = [json.loads(line) for line in out.stdout.splitlines()]
    assert create["EventId"] in [r["eventID"] for r in exported]
    assert all(r["eventVersion"] == "1.09" for r in exported)

    # An edited record is found, by sequence number.
    server.terminate()
    db = sqlite3.connect(server.data_dir / "audit.db")
    seq = db.execute("SELECT seq FROM records WHERE event_name = 'CreateModel'").fetchone()[0]
    db.execute("UPDATE records SET record = replace(record, 'AuditModel', 'OtherModel') WHERE seq = ?", (seq,))
    db.commit()
    db.close()
    out = audit_cli("verify", "--data-dir", str(server.data_dir))
    assert out.returncode != 0
    assert f"seq {seq}" in out.stdout, out.stdout


def test_every_mutating_operation_of_every_api_is_in_lookup_events(server):
    """Each change, by every API (SageMaker, Application Auto Scaling, IAM, the admin API), made
    as a client makes it, comes back from LookupEvents with ReadOnly=false, its caller and its
    resource."""
    sm, aas, iam, ct = server.sm, server.client("application-autoscaling"), server.client("iam"), server.client("cloudtrail")
    before = spw.utcnow() - dt.timedelta(seconds=2)
    spw.create_model(sm, "mut-m")
    sm.create_endpoint_config(EndpointConfigName="mut-c", ProductionVariants=[spw.single_variant("mut-m")])
    sm.create_endpoint(EndpointName="mut-e", EndpointConfigName="mut-c")
    spw.wait_in_service(sm, "mut-e")
    arn = spw.arn("endpoint", "mut-e")
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "owner", "Value": "me"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["owner"])
    sm.update_endpoint_weights_and_capacities(EndpointName="mut-e", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredWeight": 1.0}])
    spw.wait_in_service(sm, "mut-e")
    sm.create_endpoint_config(EndpointConfigName="mut-c2", ProductionVariants=[spw.single_variant("mut-m")])
    sm.update_endpoint(EndpointName="mut-e", EndpointConfigName="mut-c2")
    spw.wait_in_service(sm, "mut-e", timeout=120)
    rid = "endpoint/mut-e/variant/AllTraffic"
    target = dict(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    aas.register_scalable_target(MinCapacity=1, MaxCapacity=2, **target)
    aas.put_scaling_policy(PolicyName="p", PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
        "TargetValue": 100.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}},
        **target)
    aas.delete_scaling_policy(PolicyName="p", **target)
    aas.deregister_scalable_target(**target)
    server.set_slots("ml.g6e.2xlarge", 0)
    assert server.http("DELETE", "/_spillway/capacity/ml.g6e.2xlarge")[0] == 200
    iam.create_user(UserName="mut-u")
    iam.tag_user(UserName="mut-u", Tags=[{"Key": "team", "Value": "a"}])
    iam.untag_user(UserName="mut-u", TagKeys=["team"])
    iam.put_user_policy(UserName="mut-u", PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="mut-u")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="mut-u", AccessKeyId=key, Status="Inactive")
    iam.delete_access_key(UserName="mut-u", AccessKeyId=key)
    iam.create_group(GroupName="mut-g")
    iam.put_group_policy(GroupName="mut-g", PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]}))
    iam.add_user_to_group(GroupName="mut-g", UserName="mut-u")
    iam.remove_user_from_group(GroupName="mut-g", UserName="mut-u")
    iam.delete_group_policy(GroupName="mut-g", PolicyName="p")
    iam.delete_group(GroupName="mut-g")
    iam.delete_user_policy(UserName="mut-u", PolicyName="p")
    iam.delete_user(UserName="mut-u")
    sm.delete_endpoint(EndpointName="mut-e")
    sm.delete_endpoint_config(EndpointConfigName="mut-c")
    sm.delete_endpoint_config(EndpointConfigName="mut-c2")
    sm.delete_model(ModelName="mut-m")

    changes = lookup_all(ct, StartTime=before, LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "false"}])
    seen = {(e["EventSource"], e["EventName"]) for e in changes}
    want = {("sagemaker.amazonaws.com", n) for n in (
        "CreateModel", "CreateEndpointConfig", "CreateEndpoint", "AddTags", "DeleteTags",
        "UpdateEndpointWeightsAndCapacities", "UpdateEndpoint", "DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel")}
    want |= {("application-autoscaling.amazonaws.com", n) for n in (
        "RegisterScalableTarget", "PutScalingPolicy", "DeleteScalingPolicy", "DeregisterScalableTarget")}
    want |= {("spillway.amazonaws.com", n) for n in ("PutCapacity", "DeleteCapacity")}
    want |= {("iam.amazonaws.com", n) for n in (
        "CreateUser", "TagUser", "UntagUser", "PutUserPolicy", "CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey",
        "CreateGroup", "PutGroupPolicy", "AddUserToGroup", "RemoveUserFromGroup", "DeleteGroupPolicy", "DeleteGroup",
        "DeleteUserPolicy", "DeleteUser")}
    assert want <= seen, sorted(want - seen)
    assert all(e.get("Username") == "admin" for e in changes), [e for e in changes if e.get("Username") != "admin"][:2]
    create = next(json.loads(e["CloudTrailEvent"]) for e in changes if e["EventName"] == "CreateEndpoint")
    assert create["resources"][0]["ARN"] == arn and create["userIdentity"]["type"] == "IAMUser"
    assert audit_cli("verify", "--data-dir", str(server.data_dir)).returncode == 0
