"""The SageMaker Python SDK (v2), configured only by the four lines spillway prints at start:
deploy, predict and delete as a user's notebook does, signed with the generated profile."""

from __future__ import annotations

import pytest

import spw


def sdk_model(session, name: str):
    from sagemaker.model import Model

    return Model(image_uri="builtin:echo", role=f"arn:aws:iam::{spw.ACCOUNT}:role/unused",
                 sagemaker_session=session, name=name)


def test_the_sagemaker_sdk_works_with_the_generated_profile(server, monkeypatch):
    spw.use_only_the_printed_profile(server, monkeypatch)
    import sagemaker
    from sagemaker.predictor import Predictor

    session = sagemaker.Session()
    assert session.boto_session.client("sts").get_caller_identity()["Arn"].endswith(":user/admin")
    model = sdk_model(session, "sdk-model")
    model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="sdk-ep", wait=True)
    predictor = Predictor("sdk-ep", sagemaker_session=session)
    assert b"hello from the sdk" in predictor.predict(b"hello from the sdk")
    predictor.delete_endpoint()
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateEndpoint"}])["Events"]
    assert events and events[0]["Username"] == "admin"


def test_the_sdk_raises_capacity_error_when_every_pool_is_exhausted(start_server, monkeypatch):
    """Issue 14, difference 1: `Model.deploy()` to a type with no capacity raises the SDK's
    `CapacityError` (it looks for `CapacityError` in `FailureReason`), and the reason keeps
    spillway's detail of what was tried."""
    server = start_server(provisioning={"deadline_override_seconds": 2})
    spw.use_only_the_printed_profile(server, monkeypatch)
    import sagemaker
    from sagemaker.exceptions import CapacityError

    model = sdk_model(sagemaker.Session(), "sdk-ice")
    with pytest.raises(CapacityError) as e:
        model.deploy(initial_instance_count=1, instance_type="ml.g6e.2xlarge", endpoint_name="sdk-ice", wait=True)
    assert "ml.g6e.2xlarge" in str(e.value) and "InsufficientInstanceCapacity" in str(e.value), str(e.value)


def test_the_sdk_async_predictor_round_trip_against_the_embedded_store(server, monkeypatch):
    """Issue 16: `Model.deploy(async_inference_config=...)` returns an `AsyncPredictor`;
    `predict_async` uploads the payload to the session's default bucket in the embedded object
    store, invokes asynchronously, and `get_result` polls the output object; a model error comes
    back as the SDK's `AsyncInferenceModelError` from the failure object."""
    spw.use_only_the_printed_profile(server, monkeypatch)
    spw.sdk_sts_at_server(server, monkeypatch)
    import sagemaker
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.serializers import IdentitySerializer

    session = sagemaker.Session()
    bucket = session.default_bucket()
    assert bucket == f"sagemaker-{spw.REGION}-{spw.ACCOUNT}"
    from sagemaker.predictor import Predictor

    model = sdk_model(session, "sdk-async")
    model.predictor_cls = Predictor
    predictor = model.deploy(
        initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="sdk-async", wait=True,
        serializer=IdentitySerializer(content_type="text/plain"),
        async_inference_config=AsyncInferenceConfig(
            output_path=f"s3://{bucket}/async-out", failure_path=f"s3://{bucket}/async-failures"),
    )
    assert type(predictor).__name__ == "AsyncPredictor"
    response = predictor.predict_async(data=b"hello from the async sdk")
    assert response.output_path.startswith(f"s3://{bucket}/async-out/")
    result = response.get_result(WaiterConfig(max_attempts=60, delay=1))
    assert b"hello from the async sdk" in result
    # `predict` waits too, and reads the input the SDK uploaded under its default bucket.
    assert b"second" in predictor.predict(data=b"second", waiter_config=WaiterConfig(max_attempts=60, delay=1))
    predictor.delete_endpoint()

    failing = sdk_model(session, "sdk-async-500")
    failing.predictor_cls = Predictor
    failing.env = {"ECHO_INVOCATION_STATUS": "500"}
    predictor = failing.deploy(
        initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="sdk-async-500", wait=True,
        serializer=IdentitySerializer(content_type="text/plain"),
        async_inference_config=AsyncInferenceConfig(
            output_path=f"s3://{bucket}/async-out", failure_path=f"s3://{bucket}/async-failures"),
    )
    with pytest.raises(AsyncInferenceModelError) as e:
        predictor.predict_async(data=b"boom").get_result(WaiterConfig(max_attempts=60, delay=1))
    assert "Received server error (500)" in str(e.value), str(e.value)
