"""moto's Application Auto Scaling tests, run against the real spillway binary.

Source: getmoto/moto at 0af643a5dbfc98797f08ee64f5be3ef8002d56ff, tests/test_applicationautoscaling/
test_applicationautoscaling.py, test_validation.py and test_applicationautoscaling_policies.py (the
last one is marked `aws_verified` upstream). Each test keeps moto's name; its docstring says what
was changed. spillway scales only SageMaker endpoint variants (`ServiceNamespace=sagemaker`,
`ResourceId=endpoint/<name>/variant/<variant>`, `ScalableDimension=
sagemaker:variant:DesiredInstanceCount`), so moto's ECS services and DynamoDB tables become
variants of real `builtin:echo` endpoints, and the other namespaces are checked for spillway's
documented refusal. moto-only assumptions are replaced by AWS's documented behaviour:

- RegisterScalableTarget of a new target needs MinCapacity and MaxCapacity ("When you register a
  new scalable target, you must specify values for the minimum and maximum capacity").
- DeleteScalingPolicy and DeregisterScalableTarget of something that does not exist answer
  `ObjectNotFoundException` ("For any operation that deletes or deregisters a resource, this
  exception is thrown if the resource cannot be found"); moto answers ValidationException.
- NextToken is opaque (moto hands out "49").
- A SageMaker target-tracking policy owns two CloudWatch alarms (AlarmHigh, AlarmLow); DynamoDB's
  has four.

Left out:
- test_delete_scheduled_action, test_describe_scheduled_actions, test_put_scheduled_action,
  test_put_scheduled_action__use_update: scheduled actions (PutScheduledAction,
  DescribeScheduledActions, DeleteScheduledAction) are not among the operations spillway
  implements; it answers UnknownOperationException.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

import spw

DEFAULT_REGION = spw.REGION
ACCOUNT_ID = spw.ACCOUNT
DEFAULT_ENDPOINT = "sample-webapp"
DEFAULT_VARIANT = "AllTraffic"
DEFAULT_SERVICE_NAMESPACE = "sagemaker"
DEFAULT_RESOURCE_ID = f"endpoint/{DEFAULT_ENDPOINT}/variant/{DEFAULT_VARIANT}"
DEFAULT_SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
DEFAULT_MIN_CAPACITY = 1
DEFAULT_MAX_CAPACITY = 1
# The service-linked role AWS uses for SageMaker variants (moto passes "test:arn").
DEFAULT_ROLE_ARN = (
    f"arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
DEFAULT_SUSPENDED_STATE = {
    "DynamicScalingInSuspended": True,
    "DynamicScalingOutSuspended": True,
    "ScheduledScalingSuspended": True,
}


def _create_sagemaker_defaults(server, endpoints=(DEFAULT_ENDPOINT,), variants=(DEFAULT_VARIANT,)):
    """moto's _create_ecs_defaults: one builtin:echo endpoint per name, one single-instance variant per
    variant name, all InService."""
    sm = server.sm
    spw.create_model(sm, "m")
    for endpoint in endpoints:
        spw.deploy(sm, endpoint, [spw.single_variant("m", "ml.m5.xlarge", name=v) for v in variants])
    for endpoint in endpoints:
        spw.wait_in_service(sm, endpoint)


def register_scalable_target(client, **kwargs):
    """Build a default scalable target object for use in tests."""
    return client.register_scalable_target(
        ServiceNamespace=kwargs.get("ServiceNamespace", DEFAULT_SERVICE_NAMESPACE),
        ResourceId=kwargs.get("ResourceId", DEFAULT_RESOURCE_ID),
        ScalableDimension=kwargs.get("ScalableDimension", DEFAULT_SCALABLE_DIMENSION),
        MinCapacity=kwargs.get("MinCapacity", DEFAULT_MIN_CAPACITY),
        MaxCapacity=kwargs.get("MaxCapacity", DEFAULT_MAX_CAPACITY),
        RoleARN=kwargs.get("RoleARN", DEFAULT_ROLE_ARN),
        SuspendedState=kwargs.get("SuspendedState", DEFAULT_SUSPENDED_STATE),
    )


# --------------------------------------------------------------------------------------------
# test_applicationautoscaling.py
# --------------------------------------------------------------------------------------------


def test_describe_scalable_targets_one_basic_ecs_success(server):
    """A SageMaker variant instead of an ECS service; registering without MinCapacity/MaxCapacity is refused (AWS needs both for a new target), so they are given."""
    _create_sagemaker_defaults(server)
    client = server.client("application-autoscaling")
    with pytest.raises(client.exceptions.ValidationException):
        client.register_scalable_target(
            ServiceNamespace=DEFAULT_SERVICE_NAMESPACE,
            ResourceId=DEFAULT_RESOURCE_ID,
            ScalableDimension=DEFAULT_SCALABLE_DIMENSION,
        )
    assert client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)["ScalableTargets"] == []
    client.register_scalable_target(
        ServiceNamespace=DEFAULT_SERVICE_NAMESPACE,
        ResourceId=DEFAULT_RESOURCE_ID,
        ScalableDimension=DEFAULT_SCALABLE_DIMENSION,
        MinCapacity=DEFAULT_MIN_CAPACITY,
        MaxCapacity=DEFAULT_MAX_CAPACITY,
    )
    response = client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalableTargets"]) == 1
    t = response["ScalableTargets"][0]
    assert t["ServiceNamespace"] == DEFAULT_SERVICE_NAMESPACE
    assert t["ResourceId"] == DEFAULT_RESOURCE_ID
    assert t["ScalableDimension"] == DEFAULT_SCALABLE_DIMENSION
    assert "CreationTime" in t
    assert t["RoleARN"] == DEFAULT_ROLE_ARN


def test_describe_scalable_targets_one_full_ecs_success(server):
    """A SageMaker variant instead of an ECS service; RoleARN is SageMaker's service-linked role instead of 'test:arn'; all three SuspendedState flags checked."""
    _create_sagemaker_defaults(server)
    client = server.client("application-autoscaling")
    register_scalable_target(client)
    response = client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalableTargets"]) == 1
    t = response["ScalableTargets"][0]
    assert t["ServiceNamespace"] == DEFAULT_SERVICE_NAMESPACE
    assert t["ResourceId"] == DEFAULT_RESOURCE_ID
    assert t["ScalableDimension"] == DEFAULT_SCALABLE_DIMENSION
    assert t["MinCapacity"] == DEFAULT_MIN_CAPACITY
    assert t["MaxCapacity"] == DEFAULT_MAX_CAPACITY
    assert t["RoleARN"] == DEFAULT_ROLE_ARN
    assert "CreationTime" in t
    assert t["SuspendedState"] == DEFAULT_SUSPENDED_STATE


def test_describe_scalable_targets_only_return_ecs_targets(server):
    """Two SageMaker variants instead of two ECS services; the EMR instance group is refused by spillway (only sagemaker is served) instead of being registered."""
    _create_sagemaker_defaults(server, endpoints=("test1", "test2"))
    client = server.client("application-autoscaling")
    register_scalable_target(client, ServiceNamespace="sagemaker", ResourceId="endpoint/test1/variant/AllTraffic")
    register_scalable_target(client, ServiceNamespace="sagemaker", ResourceId="endpoint/test2/variant/AllTraffic")
    with pytest.raises(client.exceptions.ValidationException) as e:
        register_scalable_target(
            client,
            ServiceNamespace="elasticmapreduce",
            ResourceId="instancegroup/j-2EEZNYKUA1NTV/ig-1791Y4E1L8YI0",
            ScalableDimension="elasticmapreduce:instancegroup:InstanceCount",
        )
    assert "elasticmapreduce" in e.value.response["Error"]["Message"]
    response = client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalableTargets"]) == 2


def test_describe_scalable_targets_next_token_success(start_server):
    """100 SageMaker variants (10 endpoints of 10) instead of 100 ECS services; the token is opaque and the order unasserted (AWS documents neither), the two pages are the 100 targets once each."""
    server = start_server(capacity={"ml.m5.xlarge": 100})
    endpoints = [f"e{i}" for i in range(10)]
    variants = [f"v{i}" for i in range(10)]
    _create_sagemaker_defaults(server, endpoints=endpoints, variants=variants)
    client = server.client("application-autoscaling")
    registered = []
    for endpoint in endpoints:
        for variant in variants:
            registered.append(f"endpoint/{endpoint}/variant/{variant}")
            register_scalable_target(client, ServiceNamespace="sagemaker", ResourceId=registered[-1])
    response = client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalableTargets"]) == 50
    assert response["NextToken"]
    first = [t["ResourceId"] for t in response["ScalableTargets"]]
    response = client.describe_scalable_targets(
        ServiceNamespace=DEFAULT_SERVICE_NAMESPACE, NextToken=str(response["NextToken"])
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalableTargets"]) == 50
    assert "NextToken" not in response
    second = [t["ResourceId"] for t in response["ScalableTargets"]]
    assert sorted(first + second) == sorted(registered)


def test_register_scalable_target_resource_id_variations(server):
    """Only the SageMaker variation is registered (on a real endpoint MyEndPoint/MyVariant); every other namespace is checked for spillway's documented ValidationException naming it."""
    _create_sagemaker_defaults(server, endpoints=("MyEndPoint",), variants=("MyVariant",))

    # See https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-applicationautoscaling-scalabletarget.html
    resource_id_variations = [
        ("ecs", "service/default/sample-webapp", "ecs:service:DesiredCount"),  # ECS
        (
            "ec2",
            "spot-fleet-request/sfr-73fbd2ce-aa30-494c-8788-1cee4EXAMPLE",
            "ec2:spot-fleet-request:TargetCapacity",
        ),
        (
            "elasticmapreduce",
            "instancegroup/j-2EEZNYKUA1NTV/ig-1791Y4E1L8YI0",
            "elasticmapreduce:instancegroup:InstanceCount",
        ),
        ("appstream", "fleet/sample-fleet", "appstream:fleet:DesiredCapacity"),
        ("dynamodb", "table/my-table", "dynamodb:table:ReadCapacityUnits"),
        (
            "dynamodb",
            "table/my-table/index/my-table-index",
            "dynamodb:index:ReadCapacityUnits",
        ),
        ("rds", "cluster:my-db-cluster", "rds:cluster:ReadReplicaCount"),
        (
            "sagemaker",
            "endpoint/MyEndPoint/variant/MyVariant",
            "sagemaker:variant:DesiredInstanceCount",
        ),
        (
            "comprehend",
            "arn:aws:comprehend:us-west-2:123456789012:document-classifier-endpoint/EXAMPLE",
            "comprehend:document-classifier-endpoint:DesiredInferenceUnits",
        ),
        (
            "lambda",
            "function:my-function:prod",
            "lambda:function:ProvisionedConcurrency",
        ),
        (
            "cassandra",
            "keyspace/mykeyspace/table/mytable",
            "cassandra:table:ReadCapacityUnits",
        ),
        (
            "custom-resource",
            "https://test-endpoint.amazon.com/ScalableDimension/test-resource",
            "custom-resource:ResourceType:Property",
        ),
    ]

    client = server.client("application-autoscaling")
    for namespace, resource_id, scalable_dimension in resource_id_variations:
        if namespace != "sagemaker":
            code, message, status = spw.error_of(
                client.register_scalable_target,
                ServiceNamespace=namespace,
                ResourceId=resource_id,
                ScalableDimension=scalable_dimension,
                MinCapacity=1,
                MaxCapacity=8,
            )
            assert (code, status) == ("ValidationException", 400), (namespace, message)
            assert namespace in message
            continue
        client.register_scalable_target(
            ServiceNamespace=namespace,
            ResourceId=resource_id,
            ScalableDimension=scalable_dimension,
            MinCapacity=1,
            MaxCapacity=8,
        )
        response = client.describe_scalable_targets(ServiceNamespace=namespace)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert len(response["ScalableTargets"]) == 1
        t = response["ScalableTargets"][-1]
        assert t["ServiceNamespace"] == namespace
        assert t["ResourceId"] == resource_id
        assert t["ScalableDimension"] == scalable_dimension
        assert "CreationTime" in t


def test_register_scalable_target_updates_existing_target(server):
    """A SageMaker variant instead of an ECS service; also checks the ARN is kept by the update."""
    _create_sagemaker_defaults(server)
    client = server.client("application-autoscaling")
    original_arn = register_scalable_target(client)["ScalableTargetARN"]

    updated_min_capacity = 3
    updated_max_capacity = 10
    updated_suspended_state = {
        "DynamicScalingInSuspended": False,
        "DynamicScalingOutSuspended": False,
        "ScheduledScalingSuspended": False,
    }

    response = client.register_scalable_target(
        ServiceNamespace=DEFAULT_SERVICE_NAMESPACE,
        ResourceId=DEFAULT_RESOURCE_ID,
        ScalableDimension=DEFAULT_SCALABLE_DIMENSION,
        MinCapacity=updated_min_capacity,
        MaxCapacity=updated_max_capacity,
        SuspendedState=updated_suspended_state,
    )
    expected_arn_prefix = f"arn:aws:application-autoscaling:{DEFAULT_REGION}:{ACCOUNT_ID}:scalable-target/"
    assert response["ScalableTargetARN"].startswith(expected_arn_prefix)
    assert response["ScalableTargetARN"] == original_arn

    response = client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE)

    assert len(response["ScalableTargets"]) == 1
    t = response["ScalableTargets"][0]
    assert t["ScalableTargetARN"].startswith(expected_arn_prefix)
    assert t["MinCapacity"] == updated_min_capacity
    assert t["MaxCapacity"] == updated_max_capacity
    assert t["SuspendedState"]["DynamicScalingInSuspended"] == updated_suspended_state["DynamicScalingInSuspended"]
    assert t["SuspendedState"]["DynamicScalingOutSuspended"] == updated_suspended_state["DynamicScalingOutSuspended"]
    assert t["SuspendedState"]["ScheduledScalingSuspended"] == updated_suspended_state["ScheduledScalingSuspended"]


def test_describe_scaling_policies(server):
    """The endpoint MyEndPoint/MyVariant exists (spillway checks it, as AWS does)."""
    _create_sagemaker_defaults(server, endpoints=("MyEndPoint",), variants=("MyVariant",))
    client = server.client("application-autoscaling")
    namespace = "sagemaker"
    resource_id = "endpoint/MyEndPoint/variant/MyVariant"
    scalable_dimension = "sagemaker:variant:DesiredInstanceCount"

    client.register_scalable_target(
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        MinCapacity=1,
        MaxCapacity=8,
    )

    policy_name = "MyPolicy"
    policy_type = "TargetTrackingScaling"
    policy_body = {
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
    }

    response = client.put_scaling_policy(
        PolicyName=policy_name,
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        PolicyType=policy_type,
        TargetTrackingScalingPolicyConfiguration=policy_body,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200

    response = client.describe_scaling_policies(
        PolicyNames=[policy_name],
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    policy = response["ScalingPolicies"][0]
    assert policy["PolicyName"] == policy_name
    assert policy["ServiceNamespace"] == namespace
    assert policy["ResourceId"] == resource_id
    assert policy["ScalableDimension"] == scalable_dimension
    assert policy["PolicyType"] == policy_type
    assert policy["TargetTrackingScalingPolicyConfiguration"] == policy_body
    assert (
        re.match(
            pattern=rf"arn:aws:autoscaling:{DEFAULT_REGION}:{ACCOUNT_ID}:scalingPolicy:.*:resource/{namespace}/{resource_id}:policyName/{policy_name}",
            string=policy["PolicyARN"],
        )
        is not None
    )
    assert "CreationTime" in policy


def test_delete_scaling_policies(server):
    """A missing policy is ObjectNotFoundException (AWS's documented error for deleting what does not exist), not ValidationException; the endpoint exists."""
    _create_sagemaker_defaults(server, endpoints=("MyEndPoint",), variants=("MyVariant",))
    client = server.client("application-autoscaling")
    namespace = "sagemaker"
    resource_id = "endpoint/MyEndPoint/variant/MyVariant"
    scalable_dimension = "sagemaker:variant:DesiredInstanceCount"

    client.register_scalable_target(
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        MinCapacity=1,
        MaxCapacity=8,
    )

    policy_name = "MyPolicy"
    policy_type = "TargetTrackingScaling"
    policy_body = {
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
    }

    with pytest.raises(client.exceptions.ObjectNotFoundException) as e:
        client.delete_scaling_policy(
            PolicyName=policy_name,
            ServiceNamespace=namespace,
            ResourceId=resource_id,
            ScalableDimension=scalable_dimension,
        )
    assert "No scaling policy found" in e.value.response["Error"]["Message"]

    response = client.put_scaling_policy(
        PolicyName=policy_name,
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        PolicyType=policy_type,
        TargetTrackingScalingPolicyConfiguration=policy_body,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200

    response = client.delete_scaling_policy(
        PolicyName=policy_name,
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200

    response = client.describe_scaling_policies(
        PolicyNames=[policy_name],
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(response["ScalingPolicies"]) == 0


def test_deregister_scalable_target(server):
    """Deregistering twice is ObjectNotFoundException (AWS's documented error), not ValidationException; the endpoint exists."""
    _create_sagemaker_defaults(server, endpoints=("MyEndPoint",), variants=("MyVariant",))
    client = server.client("application-autoscaling")
    namespace = "sagemaker"
    resource_id = "endpoint/MyEndPoint/variant/MyVariant"
    scalable_dimension = "sagemaker:variant:DesiredInstanceCount"

    client.register_scalable_target(
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        MinCapacity=1,
        MaxCapacity=8,
    )

    response = client.describe_scalable_targets(ServiceNamespace=namespace)
    assert len(response["ScalableTargets"]) == 1

    client.deregister_scalable_target(
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )

    response = client.describe_scalable_targets(ServiceNamespace=namespace)
    assert len(response["ScalableTargets"]) == 0

    with pytest.raises(client.exceptions.ObjectNotFoundException) as e:
        client.deregister_scalable_target(
            ServiceNamespace=namespace,
            ResourceId=resource_id,
            ScalableDimension=scalable_dimension,
        )
    assert "No scalable target" in e.value.response["Error"]["Message"]


# --------------------------------------------------------------------------------------------
# test_validation.py
# --------------------------------------------------------------------------------------------


def test_describe_scalable_targets_with_invalid_scalable_dimension_should_return_validation_exception(server):
    """ServiceNamespace sagemaker instead of ecs; the message also names the member."""
    client = server.client("application-autoscaling")

    with pytest.raises(ClientError) as ex:
        client.describe_scalable_targets(ServiceNamespace=DEFAULT_SERVICE_NAMESPACE, ScalableDimension="foo")
    err = ex.value.response
    assert err["Error"]["Code"] == "ValidationException"
    assert "1 validation error detected" in err["Error"]["Message"]
    assert "Value 'foo' at 'scalableDimension'" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_describe_scalable_targets_with_invalid_service_namespace_should_return_validation_exception(server):
    """The sagemaker dimension instead of ECS's; the message also names the member."""
    client = server.client("application-autoscaling")

    with pytest.raises(ClientError) as ex:
        client.describe_scalable_targets(ServiceNamespace="foo", ScalableDimension=DEFAULT_SCALABLE_DIMENSION)
    err = ex.value.response
    assert err["Error"]["Code"] == "ValidationException"
    assert "1 validation error detected" in err["Error"]["Message"]
    assert "Value 'foo' at 'serviceNamespace'" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_describe_scalable_targets_with_multiple_invalid_parameters_should_return_validation_exception(server):
    """Unchanged but for the client; the message also names both members."""
    client = server.client("application-autoscaling")

    with pytest.raises(ClientError) as ex:
        client.describe_scalable_targets(ServiceNamespace="foo", ScalableDimension="bar")
    err = ex.value.response
    assert err["Error"]["Code"] == "ValidationException"
    assert "2 validation errors detected" in err["Error"]["Message"]
    assert "'serviceNamespace'" in err["Error"]["Message"] and "'scalableDimension'" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_register_scalable_target_ecs_with_non_existent_service_should_return_clusternotfound_exception(server):
    """A variant of an endpoint that does not exist instead of an ECS service: a ValidationException naming the endpoint instead of ECS's ClusterNotFoundException."""
    client = server.client("application-autoscaling")
    resource_id = "endpoint/foo/variant/AllTraffic"

    with pytest.raises(ClientError) as ex:
        register_scalable_target(client, ServiceNamespace="sagemaker", ResourceId=resource_id)
    err = ex.value.response
    assert err["Error"]["Code"] == "ValidationException"
    assert "foo" in err["Error"]["Message"]
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


@pytest.mark.parametrize(
    "namespace,r_id,dimension,expected",
    [
        ("sagemaker", "endpoint/test-svc/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", True),
        ("sagemaker", "banana/test-svc/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", False),
        ("rds", "endpoint/test-svc/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", False),
    ],
)
def test_target_params_are_valid_success(server, namespace, r_id, dimension, expected):
    """Through RegisterScalableTarget on a live endpoint instead of moto's internal _target_params_are_valid; SageMaker ids instead of ECS's."""
    _create_sagemaker_defaults(server, endpoints=("test-svc",))
    client = server.client("application-autoscaling")
    if expected is True:
        register_scalable_target(client, ServiceNamespace=namespace, ResourceId=r_id, ScalableDimension=dimension)
        assert [t["ResourceId"] for t in client.describe_scalable_targets(ServiceNamespace=namespace)["ScalableTargets"]] == [r_id]
    else:
        with pytest.raises(client.exceptions.ValidationException):
            register_scalable_target(client, ServiceNamespace=namespace, ResourceId=r_id, ScalableDimension=dimension)
        assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


# --------------------------------------------------------------------------------------------
# test_applicationautoscaling_policies.py (aws_verified upstream)
# --------------------------------------------------------------------------------------------

target_tracking_config = {
    "TargetTrackingScalingPolicyConfiguration": {
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
    }
}
step_scaling_config = {
    "StepScalingPolicyConfiguration": {
        "AdjustmentType": "ChangeInCapacity",
        "StepAdjustments": [{"ScalingAdjustment": 10}],
        "MinAdjustmentMagnitude": 2,
    }
}


@pytest.fixture
def sagemaker_target(server):
    """moto's application_autoscaling_aws_verified: a registered target (a SageMaker variant instead of
    a DynamoDB table), deregistered afterwards."""
    _create_sagemaker_defaults(server)
    client = server.client("application-autoscaling")
    client.register_scalable_target(
        ServiceNamespace=DEFAULT_SERVICE_NAMESPACE,
        ResourceId=DEFAULT_RESOURCE_ID,
        ScalableDimension=DEFAULT_SCALABLE_DIMENSION,
        MinCapacity=1,
        MaxCapacity=4,
    )
    yield client, DEFAULT_SERVICE_NAMESPACE, DEFAULT_RESOURCE_ID, DEFAULT_SCALABLE_DIMENSION
    client.deregister_scalable_target(
        ServiceNamespace=DEFAULT_SERVICE_NAMESPACE,
        ResourceId=DEFAULT_RESOURCE_ID,
        ScalableDimension=DEFAULT_SCALABLE_DIMENSION,
    )


@pytest.mark.parametrize(
    ["policy_type", "policy_body_kwargs"],
    [
        ["TargetTrackingScaling", target_tracking_config],
        ["TargetTrackingScaling", step_scaling_config],
    ],
)
def test_put_scaling_policy_with_unknown_policytype(server, sagemaker_target, policy_type, policy_body_kwargs):
    """A SageMaker target and metric instead of DynamoDB's; the enum's members are compared as a set (spillway documents printing them in the model's order, AWS's order is not stable)."""
    client, namespace, resource_id, scalable_dimension = sagemaker_target
    with pytest.raises(client.exceptions.ValidationException) as exc:
        client.put_scaling_policy(
            PolicyName="MyPolicy",
            ServiceNamespace=namespace,
            ResourceId=resource_id,
            ScalableDimension=scalable_dimension,
            PolicyType="ABCDEFG",
            **policy_body_kwargs,
        )
    err = exc.value.response["Error"]
    assert err["Code"] == "ValidationException"
    prefix = (
        "1 validation error detected: Value 'ABCDEFG' at 'policyType' failed to satisfy constraint: "
        "Member must satisfy enum value set: ["
    )
    assert err["Message"].startswith(prefix) and err["Message"].endswith("]"), err["Message"]
    members = err["Message"][len(prefix) : -1].split(", ")
    assert sorted(members) == ["PredictiveScaling", "StepScaling", "TargetTrackingScaling"]


@pytest.mark.parametrize(
    ["policy_type", "policy_body_kwargs"],
    [["TargetTrackingScaling", target_tracking_config]],
)
def test_describe_scaling_policy_alarms(server, sagemaker_target, policy_type, policy_body_kwargs):
    """A SageMaker variant's policy owns 2 alarms (AlarmHigh, AlarmLow) where DynamoDB's owns 4."""
    client, namespace, resource_id, scalable_dimension = sagemaker_target
    policy_name = "MyPolicy"

    response = client.put_scaling_policy(
        PolicyName=policy_name,
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        PolicyType=policy_type,
        **policy_body_kwargs,
    )
    assert len(response["Alarms"]) == 2

    alarms = client.describe_scaling_policies(
        PolicyNames=[policy_name],
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )["ScalingPolicies"][0]["Alarms"]
    assert len(alarms) == 2

    cloudwatch = server.client("cloudwatch")
    for alarm in alarms:
        cw_alarm = cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"][0]
        assert cw_alarm["AlarmName"] == alarm["AlarmName"]
        assert cw_alarm["AlarmArn"] == alarm["AlarmARN"]

    client.delete_scaling_policy(
        PolicyName=policy_name,
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
    )

    for alarm in response["Alarms"]:
        assert cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"] == []


def test_describe_scaling_policy_with_ecs_alarms(server):
    """A SageMaker variant and SageMakerVariantInvocationsPerInstance instead of an ECS service and its memory metric; the alarms carry the EndpointName dimension instead of ClusterName."""
    policy_name = "MyPolicy"

    _create_sagemaker_defaults(server, endpoints=("test",), variants=("servicename",))

    namespace = "sagemaker"
    resource_id = "endpoint/test/variant/servicename"
    scalable_dimension = "sagemaker:variant:DesiredInstanceCount"

    client = server.client("application-autoscaling")

    client.register_scalable_target(
        ServiceNamespace=namespace,
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        MinCapacity=1,
        MaxCapacity=4,
    )

    client.put_scaling_policy(
        PolicyName=policy_name,
        PolicyType="TargetTrackingScaling",
        ResourceId=resource_id,
        ScalableDimension=scalable_dimension,
        ServiceNamespace=namespace,
        TargetTrackingScalingPolicyConfiguration={
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance",
            },
            "ScaleInCooldown": 2,
            "ScaleOutCooldown": 12,
            "TargetValue": 6,
        },
    )

    alarms = client.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)["ScalingPolicies"][0]["Alarms"]

    assert len(alarms) == 2

    cloudwatch = server.client("cloudwatch")
    for alarm in alarms:
        cw_alarm = cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"][0]
        assert f"TargetTracking-{resource_id}" in cw_alarm["AlarmName"]
        assert {"Name": "EndpointName", "Value": "test"} in cw_alarm["Dimensions"]
        assert {"Name": "VariantName", "Value": "servicename"} in cw_alarm["Dimensions"]
