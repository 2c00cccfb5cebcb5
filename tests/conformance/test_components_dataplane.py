"""Inference components at the edges helper C owns, driven with boto3 against the real binary:
the `InferenceComponentName` of the runtime on an endpoint that hosts no components, and
Application Auto Scaling's `inference-component/<name>` targets (docs/inference-components.md,
"Routing" and "Autoscaling copies"). Invoking copies needs the controller that places them and
is covered where that is built."""

from __future__ import annotations

import spw

COMPONENT_DIM = "sagemaker:inference-component:DesiredCopyCount"


def test_an_inference_component_named_on_a_plain_endpoint_is_refused(server):
    sm, rt = server.sm, server.client("sagemaker-runtime")
    spw.deploy_echo(sm, "plain")
    spw.wait_in_service(sm, "plain")
    for invoke in (rt.invoke_endpoint, rt.invoke_endpoint_with_response_stream):
        code, msg, status = spw.error_of(
            invoke, EndpointName="plain", InferenceComponentName="ic-1", Body=b"x", ContentType="text/plain"
        )
        assert (code, status) == ("ValidationError", 400), msg
        assert "hosts no inference components" in msg and "ic-1" in msg, msg
        # A name the runtime model's pattern refuses, in AWS's validation wording.
        code, msg, status = spw.error_of(
            invoke, EndpointName="plain", InferenceComponentName="-ic", Body=b"x", ContentType="text/plain"
        )
        assert (code, status) == ("ValidationError", 400), msg
        assert msg.startswith("1 validation error detected: Value '-ic' at 'inferenceComponentName'"), msg
    # Without the header the endpoint answers as before.
    answer = rt.invoke_endpoint(EndpointName="plain", Body=b"x", ContentType="text/plain")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_component_target_needs_the_component_and_its_dimension(server):
    aas = server.client("application-autoscaling")
    code, msg, _ = spw.error_of(
        aas.register_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId="inference-component/nowhere",
        ScalableDimension=COMPONENT_DIM,
        MinCapacity=0,
        MaxCapacity=4,
    )
    assert code == "ValidationException", msg
    assert "Could not find inference component" in msg and "inference-component/nowhere" in msg, msg
    code, msg, _ = spw.error_of(
        aas.register_scalable_target,
        ServiceNamespace="sagemaker",
        ResourceId="inference-component/nowhere",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=1,
        MaxCapacity=4,
    )
    assert code == "ValidationException" and COMPONENT_DIM in msg, msg
    code, msg, _ = spw.error_of(
        aas.put_scaling_policy,
        PolicyName="p",
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/e/variant/v",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"},
        },
    )
    assert code == "ValidationException" and "not on an inference component's" in msg, msg
