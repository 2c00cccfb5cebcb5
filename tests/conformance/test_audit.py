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
