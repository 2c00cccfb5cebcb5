"""Asynchronous inference (issue 16): AsyncInferenceConfig, InvokeEndpointAsync, the durable
queue and its workers, output and failure objects, driven with boto3 as users do."""

from __future__ import annotations

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


def deploy_async(sm, endpoint: str, model: str = "m", env: dict | None = None, count: int = 1, variants=None, **cfg):
    create_model(sm, model, env=env)
    sm.create_endpoint_config(
        EndpointConfigName=endpoint + "-cfg",
        ProductionVariants=variants or [single_variant(model, count=count)],
        AsyncInferenceConfig=async_config(**cfg),
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint + "-cfg")
    return wait_in_service(sm, endpoint)


def objects_dir(server) -> pathlib.Path:
    return server.data_dir / "objects"


def put_object(server, uri: str, body: bytes) -> None:
    bucket, key = uri[len("s3://") :].split("/", 1)
    if not hasattr(server, "s3"):  # TEMPORARY until the embedded S3 API is merged
        p = objects_dir(server) / bucket / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        return
    s3 = server.s3
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def get_object(server, uri: str) -> bytes | None:
    bucket, key = uri[len("s3://") :].split("/", 1)
    if not hasattr(server, "s3"):  # TEMPORARY until the embedded S3 API is merged
        p = objects_dir(server) / bucket / key
        return p.read_bytes() if p.exists() else None
    s3 = server.s3
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


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
    deploy_async(sm, "e")
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
    deploy_async(sm, "e")
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
