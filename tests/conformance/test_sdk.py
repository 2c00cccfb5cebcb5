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
