"""What Terraform's AWS provider sends, replayed with boto3 against the real binary.

Terraform cannot run here: its AWS provider is downloaded from registry.terraform.io, which
this machine cannot reach. So these tests replay, call by call, what the provider's source
(hashicorp/terraform-provider-aws, v6) sends for its usual resources, with the parameters it
sends and the fields it reads back, and the errors it tolerates. The sequences were read from
`internal/service/{iam,sagemaker,appautoscaling}/*.go` and `internal/conns/config.go`; each test
names its resource. A call the provider makes that spillway does not answer makes
`terraform apply` or `destroy` fail, so every call of each sequence must succeed here (or fail
exactly as the provider tolerates).
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

import spw

DIM = "sagemaker:variant:DesiredInstanceCount"


def no_such_entity(call, *args, **kwargs) -> str:
    """A call the provider tolerates only as `NoSuchEntity` (`errs.IsA[*NoSuchEntityException]`)."""
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    assert e.value.response["Error"]["Code"] == "NoSuchEntity", e.value.response
    return e.value.response["Error"]["Message"]


def test_provider_configuration_and_caller_identity(server):
    # provider start (aws-sdk-go-base GetAwsAccountIDAndPartition): one sts:GetCallerIdentity,
    # whose Arn is parsed for the account and partition; data "aws_caller_identity" reads the same.
    ident = server.client("sts").get_caller_identity()
    parts = ident["Arn"].split(":")
    assert parts[0] == "arn" and parts[1] == "aws" and parts[2] == "iam"
    assert parts[4] == ident["Account"] and ident["UserId"]


def test_iam_user_with_force_destroy(server):
    iam = server.client("iam")
    # Create: CreateUser with Path (always sent) and tags; then Read = GetUser.
    iam.create_user(UserName="tf-user", Path="/", Tags=[{"Key": "owner", "Value": "team-a"}])
    u = iam.get_user(UserName="tf-user")["User"]
    assert {"Arn", "UserName", "Path", "UserId"} <= u.keys()
    assert u["Tags"] == [{"Key": "owner", "Value": "team-a"}]
    # Update of tags_all: UntagUser, TagUser.
    iam.untag_user(UserName="tf-user", TagKeys=["owner"])
    iam.tag_user(UserName="tf-user", Tags=[{"Key": "owner", "Value": "team-b"}])
    assert iam.get_user(UserName="tf-user")["User"]["Tags"] == [{"Key": "owner", "Value": "team-b"}]
    # Things force_destroy has to clean up.
    iam.create_group(GroupName="tf-group", Path="/")
    iam.add_user_to_group(GroupName="tf-group", UserName="tf-user")
    iam.put_user_policy(
        UserName="tf-user", PolicyName="p", PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}'
    )
    iam.create_access_key(UserName="tf-user")

    # Delete (resourceUserDelete): groups, then with force_destroy every credential kind, then
    # DeleteUser. Each step tolerates only NoSuchEntity.
    for g in iam.list_groups_for_user(UserName="tf-user")["Groups"]:
        iam.remove_user_from_group(GroupName=g["GroupName"], UserName="tf-user")
    for name in iam.list_user_policies(UserName="tf-user")["PolicyNames"]:
        iam.delete_user_policy(UserName="tf-user", PolicyName=name)
    attached = iam.list_attached_user_policies(UserName="tf-user")
    assert attached["AttachedPolicies"] == [] and attached["IsTruncated"] is False
    for k in iam.list_access_keys(UserName="tf-user")["AccessKeyMetadata"]:
        iam.delete_access_key(UserName="tf-user", AccessKeyId=k["AccessKeyId"])
    assert iam.list_ssh_public_keys(UserName="tf-user")["SSHPublicKeys"] == []
    assert iam.list_virtual_mfa_devices()["VirtualMFADevices"] == []
    assert iam.list_mfa_devices(UserName="tf-user")["MFADevices"] == []
    message = no_such_entity(iam.delete_login_profile, UserName="tf-user")
    assert message == "Login Profile for User tf-user cannot be found."
    assert iam.list_signing_certificates(UserName="tf-user")["Certificates"] == []
    assert iam.list_service_specific_credentials(UserName="tf-user")["ServiceSpecificCredentials"] == []
    iam.delete_user(UserName="tf-user")
    # Refresh after destroy: GetUser's NoSuchEntity removes it from the state.
    no_such_entity(iam.get_user, UserName="tf-user")
    # The cleanup listings of a user that is gone are NoSuchEntity too, as in IAM.
    no_such_entity(iam.list_attached_user_policies, UserName="tf-user")
    no_such_entity(iam.list_mfa_devices, UserName="tf-user")
    iam.delete_group(GroupName="tf-group")


def test_unheld_listings_need_permission_like_any_iam_call(server):
    iam = server.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="only-get-user",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"*"}]}',
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    reader = server.client("iam", keys=(key["AccessKeyId"], key["SecretAccessKey"]))
    spw.poll(lambda: reader.get_user(UserName="reader"), what="the new key to be known")
    with pytest.raises(ClientError) as e:
        reader.list_attached_user_policies(UserName="reader")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert "iam:ListAttachedUserPolicies" in e.value.response["Error"]["Message"]


def test_iam_access_key_and_its_last_use(server):
    iam = server.client("iam")
    iam.create_user(UserName="tf-key-user")
    # Create: CreateAccessKey (the provider requires SecretAccessKey), then UpdateAccessKey when
    # status = "Inactive"; Read: ListAccessKeys, matched by id.
    k = iam.create_access_key(UserName="tf-key-user")["AccessKey"]
    assert {"AccessKeyId", "SecretAccessKey", "CreateDate", "Status", "UserName"} <= k.keys()
    kid = k["AccessKeyId"]
    # Import: GetAccessKeyLastUsed. A key never used answers N/A, as IAM does.
    last = iam.get_access_key_last_used(AccessKeyId=kid)
    assert last["UserName"] == "tf-key-user"
    assert last["AccessKeyLastUsed"] == {"ServiceName": "N/A", "Region": "N/A"}
    # Used once (an STS call signed with it), it names the service, region and time.
    iam.put_user_policy(
        UserName="tf-key-user",
        PolicyName="p",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sagemaker:ListModels","Resource":"*"}]}',
    )
    user_sm = server.client("sagemaker", keys=(kid, k["SecretAccessKey"]))
    spw.poll(lambda: user_sm.list_models(), what="the new key to be known")
    used = iam.get_access_key_last_used(AccessKeyId=kid)["AccessKeyLastUsed"]
    assert used["ServiceName"] == "sagemaker" and used["Region"] == "us-east-1", used
    assert abs(used["LastUsedDate"].timestamp() - spw.utcnow().timestamp()) < 120
    iam.update_access_key(UserName="tf-key-user", AccessKeyId=kid, Status="Inactive")
    keys = iam.list_access_keys(UserName="tf-key-user")["AccessKeyMetadata"]
    assert [(m["AccessKeyId"], m["Status"]) for m in keys] == [(kid, "Inactive")]
    iam.delete_access_key(UserName="tf-key-user", AccessKeyId=kid)
    with pytest.raises(ClientError) as e:
        iam.get_access_key_last_used(AccessKeyId=kid)
    assert e.value.response["Error"]["Code"] == "NoSuchEntity"


def test_iam_group_membership_and_policies(server):
    iam = server.client("iam")
    iam.create_user(UserName="tf-member")
    # aws_iam_group: CreateGroup, then GetGroup (Arn, GroupName, Path, GroupId).
    g = iam.create_group(GroupName="tf-team", Path="/")["Group"]
    got = iam.get_group(GroupName="tf-team")["Group"]
    assert {k: got[k] for k in ("Arn", "GroupName", "Path", "GroupId")} == {
        k: g[k] for k in ("Arn", "GroupName", "Path", "GroupId")
    }
    assert iam.list_attached_group_policies(GroupName="tf-team")["AttachedPolicies"] == []
    # aws_iam_group_membership: AddUserToGroup per user; Read: paginated GetGroup.
    iam.add_user_to_group(GroupName="tf-team", UserName="tf-member")
    pages = iam.get_paginator("get_group").paginate(GroupName="tf-team", PaginationConfig={"PageSize": 1})
    assert [u["UserName"] for p in pages for u in p["Users"]] == ["tf-member"]
    # aws_iam_user_group_membership: Read = ListGroupsForUser.
    assert [x["GroupName"] for x in iam.list_groups_for_user(UserName="tf-member")["Groups"]] == ["tf-team"]
    # aws_iam_group_policy: Put, then Get until found; the provider url-unescapes the document.
    doc = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sagemaker:Describe*","Resource":"*"}]}'
    iam.put_group_policy(GroupName="tf-team", PolicyName="describe", PolicyDocument=doc)
    assert iam.get_group_policy(GroupName="tf-team", PolicyName="describe")["PolicyDocument"]["Statement"]
    iam.delete_group_policy(GroupName="tf-team", PolicyName="describe")
    iam.remove_user_from_group(GroupName="tf-team", UserName="tf-member")
    iam.delete_group(GroupName="tf-team")
    no_such_entity(iam.get_group, GroupName="tf-team")
    no_such_entity(iam.list_attached_group_policies, GroupName="tf-team")
    assert iam.list_roles()["Roles"] == []


def test_sagemaker_model_config_endpoint(server):
    sm = server.sm
    role = "arn:aws:iam::123456789012:role/tf-sagemaker"
    # aws_sagemaker_model: CreateModel (Mode=SingleModel always sent), DescribeModel, ListTags.
    sm.create_model(
        ModelName="tf-model",
        PrimaryContainer={"Image": "builtin:echo", "Mode": "SingleModel", "Environment": {}},
        ExecutionRoleArn=role,
        Tags=[{"Key": "owner", "Value": "team-a"}],
    )
    m = sm.describe_model(ModelName="tf-model")
    assert m["ExecutionRoleArn"] == role and m["PrimaryContainer"]["Image"] == "builtin:echo"
    assert sm.list_tags(ResourceArn=m["ModelArn"])["Tags"] == [{"Key": "owner", "Value": "team-a"}]
    # aws_sagemaker_endpoint_configuration: InitialVariantWeight = 1 (schema default),
    # EnableSSMAccess = false whenever model_name is set.
    sm.create_endpoint_config(
        EndpointConfigName="tf-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "tf-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "InitialVariantWeight": 1.0,
                "EnableSSMAccess": False,
            }
        ],
    )
    c = sm.describe_endpoint_config(EndpointConfigName="tf-config")
    assert sm.list_tags(ResourceArn=c["EndpointConfigArn"])["Tags"] == []
    # aws_sagemaker_endpoint: CreateEndpoint, poll DescribeEndpoint until InService, ListTags.
    sm.create_endpoint(EndpointName="tf-endpoint", EndpointConfigName="tf-config")
    e = spw.wait_in_service(sm, "tf-endpoint")
    assert sm.list_tags(ResourceArn=e["EndpointArn"])["Tags"] == []

    # aws_appautoscaling_target: RegisterScalableTarget with Tags; DescribeScalableTargets
    # gives the ARN; every Read lists its tags with ListTagsForResource.
    aas = server.client("application-autoscaling")
    rid = "endpoint/tf-endpoint/variant/AllTraffic"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIM,
        MinCapacity=1,
        MaxCapacity=2,
        Tags={"owner": "team-a"},
    )
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid], ScalableDimension=DIM)
    tarn = targets["ScalableTargets"][0]["ScalableTargetARN"]
    assert aas.list_tags_for_resource(ResourceARN=tarn)["Tags"] == {"owner": "team-a"}
    # A change of tags: UntagResource, TagResource.
    aas.untag_resource(ResourceARN=tarn, TagKeys=["owner"])
    aas.tag_resource(ResourceARN=tarn, Tags={"owner": "team-b", "env": "ci"})
    assert aas.list_tags_for_resource(ResourceARN=tarn)["Tags"] == {"owner": "team-b", "env": "ci"}
    # Registering again (an update) keeps the tags, and ignores Tags, as AWS does.
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM, MaxCapacity=3, Tags={"x": "y"}
    )
    assert aas.list_tags_for_resource(ResourceARN=tarn)["Tags"] == {"owner": "team-b", "env": "ci"}
    # aws_appautoscaling_policy: what the provider always sends.
    aas.put_scaling_policy(
        PolicyName="tf-policy",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "DisableScaleIn": False,
            "ScaleInCooldown": 0,
            "ScaleOutCooldown": 0,
        },
    )
    policies = aas.describe_scaling_policies(
        PolicyNames=["tf-policy"], ResourceId=rid, ScalableDimension=DIM, ServiceNamespace="sagemaker"
    )["ScalingPolicies"]
    assert [p["PolicyName"] for p in policies] == ["tf-policy"]
    aas.delete_scaling_policy(PolicyName="tf-policy", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM)
    # Destroy: DeregisterScalableTarget, then DescribeScalableTargets until empty; the tags go too.
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])["ScalableTargets"] == []
    with pytest.raises(ClientError) as err:
        aas.list_tags_for_resource(ResourceARN=tarn)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # Destroy the endpoint: DeleteEndpoint, then DescribeEndpoint until "Could not find endpoint".
    sm.delete_endpoint(EndpointName="tf-endpoint")

    def gone():
        try:
            sm.describe_endpoint(EndpointName="tf-endpoint")
            return False
        except ClientError as ex:
            assert ex.response["Error"]["Code"] == "ValidationException"
            return "Could not find endpoint" in ex.response["Error"]["Message"]

    spw.poll(gone, timeout=60, what="the endpoint to be gone")
    sm.delete_endpoint_config(EndpointConfigName="tf-config")
    sm.delete_model(ModelName="tf-model")
    # What the provider tolerates on a second delete.
    for call, kw, words in (
        (sm.delete_endpoint_config, {"EndpointConfigName": "tf-config"}, "Could not find endpoint configuration"),
        (sm.delete_model, {"ModelName": "tf-model"}, "Could not find model"),
    ):
        with pytest.raises(ClientError) as ex:
            call(**kw)
        assert words in ex.value.response["Error"]["Message"]


def test_tagging_a_scalable_target_is_checked(server):
    aas = server.client("application-autoscaling")
    missing = "arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/0123456789abcdef0123456789abcdef"
    for call, kw in (
        (aas.list_tags_for_resource, {}),
        (aas.tag_resource, {"Tags": {"a": "b"}}),
        (aas.untag_resource, {"TagKeys": ["a"]}),
    ):
        with pytest.raises(ClientError) as e:
            call(ResourceARN=missing, **kw)
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException", e.value.response
        assert missing in e.value.response["Error"]["Message"]
    spw.deploy_echo(server.sm, "tags")
    spw.wait_in_service(server.sm, "tags")
    rid = "endpoint/tags/variant/AllTraffic"
    arn = aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2
    )["ScalableTargetARN"]
    with pytest.raises(ClientError) as e:
        aas.tag_resource(ResourceARN=arn, Tags={f"k{i}": "v" for i in range(51)})
    assert e.value.response["Error"]["Code"] == "TooManyTagsException"
    with pytest.raises(ClientError) as e:
        aas.tag_resource(ResourceARN=arn, Tags={"k" * 129: "v"})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {}
    # Tags survive a restart.
    aas.tag_resource(ResourceARN=arn, Tags={"owner": "team-a"})
    server.terminate()
    server.restart()
    aas = server.client("application-autoscaling")
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"owner": "team-a"}
