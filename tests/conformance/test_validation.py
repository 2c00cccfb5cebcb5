"""Validation the way AWS answers it: every rule of issue 2 gets the right error code, a message
that names the field, and leaves nothing behind.

botocore checks only required members and `min` constraints on the client side, so cases that
botocore itself would refuse (Priority 0, timeout 299, missing members, wrong types, malformed JSON)
are sent as raw awsJson1_1 requests."""

import copy
import datetime as dt
import re

import botocore.session
import pytest
from botocore.exceptions import ClientError

import spw

MODEL = "val-model"
# SageMaker's tag key and value pattern, as its messages print it.
TAG_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"
OVERRIDE = "val-override"
LONG = "a" * 64


@pytest.fixture(scope="module")
def vs(module_server):
    """The module's server with a model, an override model, a config and an InService endpoint."""
    sm = module_server.sm
    spw.create_model(sm, MODEL)
    spw.create_model(sm, OVERRIDE)
    sm.create_endpoint_config(EndpointConfigName="val-cfg", ProductionVariants=[spw.single_variant(MODEL, "ml.t2.medium")])
    sm.create_endpoint(EndpointName="val-ep", EndpointConfigName="val-cfg")
    spw.wait_in_service(sm, "val-ep")
    return module_server


def _snake(op):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


def call(server, op, params, raw=False):
    """Returns (code, message, http status) of an expected failure."""
    if raw:
        status, body = server.sagemaker_raw(op, params)
        assert status >= 400, f"{op} unexpectedly succeeded: {status} {body}"
        code = str(body.get("__type", status)).rsplit("#", 1)[-1].split(":")[0]
        return code, body.get("message") or body.get("Message") or "", status
    try:
        resp = getattr(server.sm, _snake(op))(**params)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", ""), e.response["ResponseMetadata"]["HTTPStatusCode"]
    pytest.fail(f"{op} unexpectedly succeeded: {resp}")


def snapshot(server):
    sm = server.sm
    return (
        sorted(m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"]),
        sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs(MaxResults=100)["EndpointConfigs"]),
        sorted(e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"]),
        sorted(server.processes()),
    )


# ------------------------------------------------------------------------------------------------
# CreateEndpointConfig rules
# ------------------------------------------------------------------------------------------------

P = spw.pools


def variant(**over):
    v = {"VariantName": "AllTraffic", "ModelName": MODEL, "InitialInstanceCount": 1}
    for k, val in over.items():
        if val is None:
            v.pop(k, None)
        else:
            v[k] = val
    return v


SIX = [{"InstanceType": t, "Priority": i + 1} for i, t in enumerate(
    ["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge", "ml.c5.xlarge", "ml.t2.medium", "ml.g5.xlarge"])]
FIVE = SIX[:5]

# (id, ProductionVariants, fields the message must name, any_of, raw)
CONFIG_CASES = [
    ("instance-type-and-pools-both", [variant(InstanceType="ml.m5.xlarge", InstancePools=P(("ml.g6.2xlarge", 1)))],
     ("InstancePools",), False, False),
    ("instance-type-and-pools-neither", [variant()], ("InstanceType", "InstancePools"), True, False),
    ("more-than-5-pools", [variant(InstancePools=SIX)], ("InstancePools",), False, False),
    ("empty-pool-list", [variant(InstancePools=[])], ("InstancePools",), False, True),
    ("priority-above-5", [variant(InstancePools=P(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 6)))], ("Priority",), False, False),
    ("priority-0", [variant(InstancePools=P(("ml.g6.2xlarge", 0), ("ml.m5.xlarge", 1)))], ("Priority",), False, True),
    ("priority-negative", [variant(InstancePools=P(("ml.g6.2xlarge", -1)))], ("Priority",), False, True),
    ("duplicate-priorities", [variant(InstancePools=P(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 1)))], ("Priority",), False, False),
    ("same-instance-type-twice", [variant(InstancePools=P(("ml.m5.xlarge", 1), ("ml.m5.xlarge", 2)))],
     ("InstanceType", "InstancePools"), True, False),
    ("unknown-instance-type-in-pool", [variant(InstancePools=P(("ml.g6.2xlarge", 1), ("ml.foo.2xlarge", 2)))],
     ("InstanceType",), False, False),
    ("unknown-instance-type", [variant(InstanceType="ml.m5.huge")], ("InstanceType",), False, False),
    ("ec2-name-is-not-a-sagemaker-type", [variant(InstanceType="m5.xlarge")], ("InstanceType",), False, False),
    ("timeout-above-3600", [variant(InstancePools=P(("ml.m5.xlarge", 1)), VariantInstanceProvisionTimeoutInSeconds=3601)],
     ("VariantInstanceProvisionTimeoutInSeconds",), False, False),
    ("timeout-4000", [variant(InstancePools=P(("ml.m5.xlarge", 1)), VariantInstanceProvisionTimeoutInSeconds=4000)],
     ("VariantInstanceProvisionTimeoutInSeconds",), False, False),
    ("timeout-below-300", [variant(InstancePools=P(("ml.m5.xlarge", 1)), VariantInstanceProvisionTimeoutInSeconds=299)],
     ("VariantInstanceProvisionTimeoutInSeconds",), False, True),
    ("timeout-60", [variant(InstancePools=P(("ml.m5.xlarge", 1)), VariantInstanceProvisionTimeoutInSeconds=60)],
     ("VariantInstanceProvisionTimeoutInSeconds",), False, True),
    ("variant-name-pattern", [variant(VariantName="All_Traffic", InstanceType="ml.m5.xlarge")], ("VariantName",), False, False),
    ("variant-name-too-long", [variant(VariantName=LONG, InstanceType="ml.m5.xlarge")], ("VariantName",), False, False),
    ("model-name-pattern", [variant(ModelName="bad.model", InstanceType="ml.m5.xlarge")], ("ModelName",), False, False),
    ("model-name-override-pattern", [variant(InstancePools=P(("ml.m5.xlarge", 1, "bad_override")))],
     ("ModelNameOverride",), False, False),
    ("model-name-override-too-long", [variant(InstancePools=P(("ml.m5.xlarge", 1, LONG)))],
     ("ModelNameOverride",), False, False),
    ("initial-instance-count-0", [variant(InstanceType="ml.m5.xlarge", InitialInstanceCount=0)],
     ("InitialInstanceCount",), False, True),
    ("no-production-variants", [], ("ProductionVariants",), False, True),
    ("eleven-production-variants",
     [variant(VariantName=f"v{i}", InstanceType="ml.m5.xlarge") for i in range(11)], ("ProductionVariants",), False, False),
    ("pool-missing-priority", [variant(InstancePools=[{"InstanceType": "ml.m5.xlarge"}])], ("Priority",), False, True),
    ("pool-missing-instance-type", [variant(InstancePools=[{"Priority": 1}])], ("InstanceType",), False, True),
    ("variant-missing-name", [variant(VariantName=None, InstanceType="ml.m5.xlarge")], ("VariantName",), False, True),
    ("duplicate-variant-names", [variant(InstanceType="ml.m5.xlarge"), variant(InstanceType="ml.c5.xlarge")],
     ("VariantName",), False, False),
]


@pytest.mark.parametrize(
    "variants,fields,any_of,raw", [pytest.param(*c[1:], id=c[0]) for c in CONFIG_CASES]
)
def test_create_endpoint_config_rule(vs, request, variants, fields, any_of, raw):
    name = "cfg-" + re.sub(r"[^a-zA-Z0-9]", "-", request.node.callspec.id)[:50]
    before = snapshot(vs)
    code, msg, status = call(vs, "CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": variants}, raw)
    spw.assert_validation(code, msg, *fields, any_of=any_of)
    assert status == 400
    assert snapshot(vs) == before
    code, msg, _ = spw.error_of(vs.sm.describe_endpoint_config, EndpointConfigName=name)
    assert code == "ValidationException" and "Could not find endpoint configuration" in msg


@pytest.mark.parametrize(
    "name,field",
    [
        pytest.param("bad_config", "EndpointConfigName", id="underscore"),
        pytest.param("-leading-dash", "EndpointConfigName", id="leading-dash"),
        pytest.param("trailing-dash-", "EndpointConfigName", id="trailing-dash"),
        pytest.param(LONG, "EndpointConfigName", id="64-chars"),
        pytest.param("", "EndpointConfigName", id="empty"),
    ],
)
def test_create_endpoint_config_name_rule(vs, name, field):
    before = snapshot(vs)
    code, msg, _ = call(
        vs, "CreateEndpointConfig",
        {"EndpointConfigName": name, "ProductionVariants": [variant(InstanceType="ml.m5.xlarge")]}, raw=(name == ""),
    )
    spw.assert_validation(code, msg, field)
    assert snapshot(vs) == before


@pytest.mark.parametrize(
    "model_field,missing",
    [pytest.param("ModelName", "no-such-model", id="model-name"), pytest.param("ModelNameOverride", "no-such-override", id="override")],
)
def test_create_endpoint_config_with_missing_model(vs, model_field, missing):
    if model_field == "ModelName":
        v = variant(ModelName=missing, InstancePools=P(("ml.m5.xlarge", 1)))
    else:
        v = variant(InstancePools=P(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2, missing)))
    before = snapshot(vs)
    code, msg, _ = call(vs, "CreateEndpointConfig", {"EndpointConfigName": f"missing-{model_field.lower()}", "ProductionVariants": [v]})
    assert code == "ValidationException"
    assert "Could not find model" in msg and missing in msg
    assert snapshot(vs) == before


@pytest.mark.parametrize(
    "pool_list,extra",
    [
        pytest.param(FIVE, {}, id="five-pools"),
        pytest.param(P(("ml.m5.xlarge", 1)), {}, id="one-pool"),
        pytest.param(P(("ml.m5.xlarge", 1)), {"VariantInstanceProvisionTimeoutInSeconds": 300}, id="timeout-300"),
        pytest.param(P(("ml.m5.xlarge", 1)), {"VariantInstanceProvisionTimeoutInSeconds": 3600}, id="timeout-3600"),
        pytest.param(P(("ml.m5.xlarge", 5), ("ml.g6.2xlarge", 1, OVERRIDE)), {}, id="override-and-unordered"),
    ],
)
def test_valid_edge_values_are_accepted(vs, request, pool_list, extra):
    name = "ok-" + request.node.callspec.id
    v = variant(InstancePools=copy.deepcopy(pool_list), **extra)
    vs.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[v])
    (got,) = vs.sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"]
    assert sorted(got["InstancePools"], key=lambda p: p["Priority"]) == sorted(pool_list, key=lambda p: p["Priority"])


# ------------------------------------------------------------------------------------------------
# names and required members of the other create operations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,fields,raw",
    [
        pytest.param({"ModelName": "bad_model", "PrimaryContainer": {"Image": "builtin:echo"}}, ("ModelName",), False, id="pattern"),
        pytest.param({"ModelName": "bad-", "PrimaryContainer": {"Image": "builtin:echo"}}, ("ModelName",), False, id="trailing-dash"),
        pytest.param({"ModelName": LONG, "PrimaryContainer": {"Image": "builtin:echo"}}, ("ModelName",), False, id="64-chars"),
        pytest.param({"PrimaryContainer": {"Image": "builtin:echo"}}, ("ModelName",), True, id="missing-name"),
    ],
)
def test_create_model_rule(vs, params, fields, raw):
    before = snapshot(vs)
    code, msg, _ = call(vs, "CreateModel", params, raw)
    spw.assert_validation(code, msg, *fields)
    assert snapshot(vs) == before


@pytest.mark.parametrize(
    "params,fields,raw",
    [
        pytest.param({"EndpointName": "bad_endpoint", "EndpointConfigName": "val-cfg"}, ("EndpointName",), False, id="pattern"),
        pytest.param({"EndpointName": "-dash", "EndpointConfigName": "val-cfg"}, ("EndpointName",), False, id="leading-dash"),
        pytest.param({"EndpointName": LONG, "EndpointConfigName": "val-cfg"}, ("EndpointName",), False, id="64-chars"),
        pytest.param({"EndpointConfigName": "val-cfg"}, ("EndpointName",), True, id="missing-name"),
        pytest.param({"EndpointName": "no-config"}, ("EndpointConfigName",), True, id="missing-config-name"),
        pytest.param({"EndpointName": "bad-config-name", "EndpointConfigName": "bad_cfg"}, ("EndpointConfigName",), False,
                     id="config-name-pattern"),
    ],
)
def test_create_endpoint_rule(vs, params, fields, raw):
    before = snapshot(vs)
    code, msg, _ = call(vs, "CreateEndpoint", params, raw)
    spw.assert_validation(code, msg, *fields)
    assert snapshot(vs) == before


# ------------------------------------------------------------------------------------------------
# not found / already exists
# ------------------------------------------------------------------------------------------------


def _ep(n):
    return spw.arn("endpoint", n)


NOT_FOUND = [
    ("DescribeEndpoint", {"EndpointName": "ghost"}, f'Could not find endpoint "{_ep("ghost")}"'),
    ("DeleteEndpoint", {"EndpointName": "ghost"}, f'Could not find endpoint "{_ep("ghost")}"'),
    ("UpdateEndpoint", {"EndpointName": "ghost", "EndpointConfigName": "val-cfg"}, f'Could not find endpoint "{_ep("ghost")}"'),
    ("UpdateEndpointWeightsAndCapacities",
     {"EndpointName": "ghost", "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic", "DesiredWeight": 1.0}]},
     f'Could not find endpoint "{_ep("ghost")}"'),
    ("UpdateEndpoint", {"EndpointName": "val-ep", "EndpointConfigName": "ghost-cfg"},
     f'Could not find endpoint configuration "{spw.arn("endpoint-config", "ghost-cfg")}"'),
    ("CreateEndpoint", {"EndpointName": "new-ep", "EndpointConfigName": "ghost-cfg"},
     f'Could not find endpoint configuration "{spw.arn("endpoint-config", "ghost-cfg")}"'),
    ("DescribeEndpointConfig", {"EndpointConfigName": "ghost-cfg"},
     f'Could not find endpoint configuration "{spw.arn("endpoint-config", "ghost-cfg")}"'),
    ("DeleteEndpointConfig", {"EndpointConfigName": "ghost-cfg"},
     f'Could not find endpoint configuration "{spw.arn("endpoint-config", "ghost-cfg")}"'),
    ("DescribeModel", {"ModelName": "ghost-model"}, f'Could not find model "{spw.arn("model", "ghost-model")}"'),
    ("DeleteModel", {"ModelName": "ghost-model"}, f'Could not find model "{spw.arn("model", "ghost-model")}"'),
]


@pytest.mark.parametrize("op,params,text", [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(NOT_FOUND)])
def test_not_found_is_a_validation_exception_with_the_aws_text(vs, op, params, text):
    before = snapshot(vs)
    code, msg, status = call(vs, op, params)
    assert (code, status) == ("ValidationException", 400), msg
    assert text in msg
    assert snapshot(vs) == before
    assert vs.sm.describe_endpoint(EndpointName="val-ep")["EndpointStatus"] == "InService"


@pytest.mark.parametrize(
    "op,params,text",
    [
        pytest.param("CreateModel", {"ModelName": MODEL, "PrimaryContainer": {"Image": "sleep 1"}},
                     f'Cannot create already existing model "{spw.arn("model", MODEL)}"', id="model"),
        pytest.param("CreateEndpointConfig",
                     {"EndpointConfigName": "val-cfg", "ProductionVariants": [variant(InstanceType="ml.c5.xlarge")]},
                     f'Cannot create already existing endpoint configuration "{spw.arn("endpoint-config", "val-cfg")}"',
                     id="endpoint-config"),
        pytest.param("CreateEndpoint", {"EndpointName": "val-ep", "EndpointConfigName": "val-cfg"},
                     f'Cannot create already existing endpoint "{_ep("val-ep")}"', id="endpoint"),
    ],
)
def test_already_exists_is_a_validation_exception_with_the_aws_text(vs, op, params, text):
    before = snapshot(vs)
    code, msg, _ = call(vs, op, params)
    assert code == "ValidationException"
    assert text in msg
    assert snapshot(vs) == before
    assert vs.sm.describe_model(ModelName=MODEL)["PrimaryContainer"]["Image"] == "builtin:echo"


def test_names_are_unique_regardless_of_case_and_arns_are_lower_case(vs):
    """`Val-Model` next to `val-model` would share its ARN, and so its tags and policies."""
    assert vs.sm.describe_model(ModelName=MODEL)["ModelArn"] == spw.arn("model", MODEL.lower())
    code, msg, _ = spw.error_of(spw.create_model, vs.sm, MODEL.swapcase())
    assert code == "ValidationException" and "already existing model" in msg
    spw.create_model(vs.sm, "Val-Other")
    assert vs.sm.describe_model(ModelName="Val-Other")["ModelArn"] == spw.arn("model", "val-other")


# ------------------------------------------------------------------------------------------------
# in-progress endpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,params",
    [
        pytest.param("UpdateEndpoint", {"EndpointName": "creating", "EndpointConfigName": "alt-cfg"}, id="update"),
        pytest.param("DeleteEndpoint", {"EndpointName": "creating"}, id="delete"),
        pytest.param("UpdateEndpointWeightsAndCapacities",
                     {"EndpointName": "creating",
                      "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}]},
                     id="update-weights"),
    ],
)
def test_in_progress_endpoint_rule(start_server, op, params):
    srv = start_server(provisioning={"deadline_override_seconds": 90})
    sm = srv.sm
    spw.create_model(sm, MODEL)
    sm.create_endpoint_config(EndpointConfigName="alt-cfg", ProductionVariants=[variant(InstanceType="ml.m5.xlarge")])
    spw.deploy(sm, "creating", [variant(InstancePools=P(("ml.g6e.2xlarge", 1)))])
    assert sm.describe_endpoint(EndpointName="creating")["EndpointStatus"] == "Creating"
    code, msg, _ = call(srv, op, params)
    assert code == "ValidationException"
    assert f'Cannot update in-progress endpoint "{_ep("creating")}"' in msg
    d = sm.describe_endpoint(EndpointName="creating")
    assert d["EndpointStatus"] == "Creating"
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == "creating-cfg"


# ------------------------------------------------------------------------------------------------
# wire-level errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,field",
    [
        pytest.param('{"EndpointConfigName": "x", ', None, id="truncated-json"),
        pytest.param("not json at all", None, id="not-json"),
        pytest.param('["EndpointConfigName"]', None, id="array-instead-of-object"),
        pytest.param('{"EndpointConfigName": 42, "ProductionVariants": []}', "EndpointConfigName", id="name-is-a-number"),
        pytest.param('{"EndpointConfigName": "x", "ProductionVariants": {"VariantName": "a"}}', "ProductionVariants",
                     id="variants-is-an-object"),
        pytest.param('{"EndpointConfigName": "x", "ProductionVariants": [{"VariantName": "a", "ModelName": "val-model", '
                     '"InitialInstanceCount": "two", "InstanceType": "ml.m5.xlarge"}]}', "InitialInstanceCount",
                     id="count-is-a-string"),
        pytest.param('{"EndpointConfigName": "x", "ProductionVariants": [{"VariantName": "a", "ModelName": "val-model", '
                     '"InitialInstanceCount": 1, "InstancePools": [{"InstanceType": "ml.m5.xlarge", "Priority": "1"}]}]}',
                     "Priority", id="priority-is-a-string"),
        pytest.param('{"EndpointConfigName": "x", "ProductionVariants": [{"VariantName": "a", "ModelName": "val-model", '
                     '"InitialInstanceCount": 1, "InstancePools": {"InstanceType": "ml.m5.xlarge", "Priority": 1}}]}',
                     "InstancePools", id="pools-is-an-object"),
    ],
)
def test_malformed_or_mistyped_request_is_a_serialization_exception(vs, body, field):
    before = snapshot(vs)
    status, resp = vs.sagemaker_raw("CreateEndpointConfig", body)
    code = str(resp.get("__type", "")).rsplit("#", 1)[-1].split(":")[0]
    msg = resp.get("message") or resp.get("Message") or ""
    assert status == 400, (status, resp)
    assert code == "SerializationException", resp
    if field:
        assert field.lower() in msg.lower(), f"message does not name {field}: {msg!r}"
    assert snapshot(vs) == before


def test_error_bodies_parse_in_botocore_as_modelled(vs):
    """The code reaches botocore through the body's __type (the header alone would give '400')."""
    status, resp = vs.sagemaker_raw("DescribeEndpoint", {"EndpointName": "ghost"})
    assert status == 400
    assert str(resp["__type"]).rsplit("#", 1)[-1] == "ValidationException"
    assert "message" in resp or "Message" in resp


def test_names_of_63_characters_are_accepted(vs):
    name = "n" * 62 + "9"
    sm = vs.sm
    spw.create_model(sm, name)
    sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[variant(ModelName=name, VariantName=name, InstanceType="ml.t2.medium")]
    )
    assert sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"][0]["VariantName"] == name
    assert sm.describe_model(ModelName=name)["ModelArn"] == spw.arn("model", name)


@pytest.mark.parametrize(
    "op,params,field",
    [
        pytest.param("ListEndpoints", {"MaxResults": 101}, "MaxResults", id="list-endpoints-max-results"),
        pytest.param("ListModels", {"MaxResults": 101}, "MaxResults", id="list-models-max-results"),
        pytest.param("ListModels", {"NextToken": "not-a-token"}, "NextToken", id="list-models-next-token"),
        pytest.param("ListEndpointConfigs", {"NextToken": "not-a-token"}, "NextToken", id="list-configs-next-token"),
        pytest.param("UpdateEndpointWeightsAndCapacities",
                     {"EndpointName": "val-ep", "DesiredWeightsAndCapacities": [{"VariantName": "Nope", "DesiredWeight": 1.0}]},
                     "VariantName", id="update-weights-unknown-variant"),
    ],
)
def test_list_and_update_parameter_rule(vs, op, params, field):
    before = snapshot(vs)
    code, msg, _ = call(vs, op, params)
    spw.assert_validation(code, msg, field)
    assert snapshot(vs) == before
    assert vs.sm.describe_endpoint(EndpointName="val-ep")["EndpointStatus"] == "InService"


# Refusals a client can parse (issue 12, finding 6) ----------------------------------------------


def test_a_body_over_the_limit_is_an_aws_error_boto3_can_read(vs):
    """A control-plane body over 2 MiB used to answer a plain-text 413 that boto3 could not parse."""
    status, body = vs.sagemaker_raw("CreateModel", '{"ModelName": "big", "x": "' + "a" * (3 << 20) + '"}')
    assert status == 413
    assert body.get("__type") == "RequestEntityTooLargeException" and "2097152 bytes" in body["message"]
    with pytest.raises(ClientError) as ei:
        vs.sm.create_model(
            ModelName="big", PrimaryContainer={"Image": "builtin:echo"}, ExecutionRoleArn="r" * (3 << 20)
        )
    assert ei.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    with pytest.raises(ClientError):
        vs.sm.describe_model(ModelName="big")
    status, _, raw = vs.http("PUT", "/_spillway/capacity/ml.m5.xlarge", b"{" + b" " * (3 << 20) + b"}")
    assert status == 413 and b"RequestEntityTooLargeException" in raw


@pytest.mark.parametrize("method,path,status", [("GET", "/nowhere", 404), ("DELETE", "/_spillway/health", 405), ("PUT", "/", 405)])
def test_unknown_paths_and_methods_are_aws_errors(vs, method, path, status):
    got, headers, raw = vs.http(method, path)
    assert got == status
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert path in __import__("json").loads(raw)["message"]


@pytest.mark.parametrize("key,value,member", [
    ("team\n", "ml", "Key"),
    ("team", "ml\x00", "Value"),
    ("tab\tkey", "v", "Key"),
    ("team", "a\x7fb", "Value"),
    ("bad#key", "v", "Key"),
])
def test_tags_with_control_or_unlisted_characters_are_refused(vs, key, value, member):
    arn = spw.arn("model", MODEL)
    with pytest.raises(ClientError) as ei:
        vs.sm.add_tags(ResourceArn=arn, Tags=[{"Key": key, "Value": value}])
    err = ei.value.response["Error"]
    assert err["Code"] == "ValidationException"
    value_of = {"Key": key, "Value": value}[member]
    assert err["Message"] == (
        f"1 validation error detected: Value '{value_of}' at 'tags.1.member.{member.lower()}' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {TAG_PATTERN}"
    )
    assert all(t["Key"] != key for t in vs.sm.list_tags(ResourceArn=arn)["Tags"])


def test_tags_with_the_characters_aws_allows_are_accepted(vs):
    arn = spw.arn("model", MODEL)
    tags = [{"Key": "team name/é_1.2:x=y+z-w@q", "Value": "Ünïcode ok 42"}]
    vs.sm.add_tags(ResourceArn=arn, Tags=tags)
    assert tags[0] in vs.sm.list_tags(ResourceArn=arn)["Tags"]


@pytest.mark.parametrize("key", ["X,HF_TOKEN", "1ABC", "A-B", "A B", ""])
def test_environment_keys_follow_the_aws_pattern(vs, key):
    """A key is a shell variable name ([a-zA-Z_][a-zA-Z0-9_]*): nothing a model server or
    SPILLWAY_MODEL_ENV_KEYS could misread."""
    code, msg, _ = call(
        vs, "CreateModel", {"ModelName": "envkey", "PrimaryContainer": {"Image": "builtin:echo", "Environment": {key: "v"}}}, raw=True
    )
    assert code == "ValidationException"
    assert msg == detected(v(
        "{" + key + "=v}", "primaryContainer.environment",
        "Map keys must satisfy constraint: [Member must have length less than or equal to 1024, "
        "Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: "
        "[a-zA-Z_][a-zA-Z0-9_]*]",
    ))
    with pytest.raises(ClientError):
        vs.sm.describe_model(ModelName="envkey")


# ------------------------------------------------------------------------------------------------
# Validation fidelity (issue 14): every violation of the model at once, in AWS's words; spillway's
# own rules after; AWS's page sizes; tokens nobody can forge
# ------------------------------------------------------------------------------------------------

NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
ROLE_PATTERN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$"


def enum_of(service: str, shape: str) -> str:
    """An enum of botocore's model (not spillway's copy), as AWS lists it."""
    values = botocore.session.get_session().get_service_model(service).shape_for(shape).enum
    return "[" + ", ".join(values) + "]"


def v(value, path: str, rule: str) -> str:
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {rule}"


def detected(*violations: str) -> str:
    n = len(violations)
    return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(violations)


def test_the_constraint_table_is_botocores_model():
    """src/core/validate/botocore.json is what scripts/gen_validation_model.py makes of the
    installed botocore's models: the checks cannot drift from the model."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(spw.REPO / "scripts" / "gen_validation_model.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_violation_of_a_sagemaker_request_is_reported_at_once(vs):
    sm = vs.client("sagemaker", validate=False)
    long = "v" * 64
    before = snapshot(vs)
    code, msg, status = spw.error_of(
        sm.create_endpoint_config,
        EndpointConfigName="bad_cfg",
        ProductionVariants=[
            {"VariantName": long, "ModelName": MODEL, "InitialInstanceCount": 0, "InstanceType": "ml.nope"},
            {"ModelName": MODEL, "InitialInstanceCount": 1, "InstancePools": [{"InstanceType": "ml.m5.xlarge", "Priority": 6}],
             "RoutingConfig": {"RoutingStrategy": "FASTEST"}},
        ],
        Tags=[{"Key": "", "Value": "v"}],
        KmsKeyId="alias with spaces",
        ExecutionRoleArn="arn:aws:iam::123:role/r",
    )
    routing = enum_of("sagemaker", "RoutingStrategy")[:-1] + ", CAPACITY_AWARE]"  # spillway's extension
    assert (code, status) == ("ValidationException", 400)
    assert msg == detected(
        v("bad_cfg", "endpointConfigName", f"Member must satisfy regular expression pattern: {NAME_PATTERN}"),
        v(long, "productionVariants.1.member.variantName", "Member must have length less than or equal to 63"),
        v(long, "productionVariants.1.member.variantName", f"Member must satisfy regular expression pattern: {NAME_PATTERN}"),
        v(0, "productionVariants.1.member.initialInstanceCount", "Member must have value greater than or equal to 1"),
        v("ml.nope", "productionVariants.1.member.instanceType",
          "Member must satisfy enum value set: " + enum_of("sagemaker", "ProductionVariantInstanceType")),
        v(None, "productionVariants.2.member.variantName", "Member must not be null"),
        v(6, "productionVariants.2.member.instancePools.1.member.priority", "Member must have value less than or equal to 5"),
        v("FASTEST", "productionVariants.2.member.routingConfig.routingStrategy", f"Member must satisfy enum value set: {routing}"),
        v("", "tags.1.member.key", "Member must have length greater than or equal to 1"),
        v("alias with spaces", "kmsKeyId", "Member must satisfy regular expression pattern: [a-zA-Z0-9:/_-]*"),
        v("arn:aws:iam::123:role/r", "executionRoleArn", f"Member must satisfy regular expression pattern: {ROLE_PATTERN}"),
    )
    assert snapshot(vs) == before


def test_every_violation_of_an_autoscaling_request_is_reported_at_once(vs):
    aas = vs.client("application-autoscaling", validate=False)
    target = {"ResourceId": "endpoint/val-ep/variant/AllTraffic", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    code, msg, _ = spw.error_of(aas.put_scaling_policy, PolicyName="p" * 257, ServiceNamespace="nope", PolicyType="Nope", **target)
    assert code == "ValidationException"
    assert msg == detected(
        v("p" * 257, "policyName", "Member must have length less than or equal to 256"),
        v("nope", "serviceNamespace", "Member must satisfy enum value set: " + enum_of("application-autoscaling", "ServiceNamespace")),
        v("Nope", "policyType", "Member must satisfy enum value set: " + enum_of("application-autoscaling", "PolicyType")),
    )
    # One violation is "1 validation error".
    code, msg, _ = spw.error_of(aas.put_scaling_policy, PolicyName="p", ServiceNamespace="sagemaker", PolicyType="Nope", **target)
    assert msg == detected(
        v("Nope", "policyType", "Member must satisfy enum value set: " + enum_of("application-autoscaling", "PolicyType")))
    # The model's RoleARN is any XML-safe text (no ARN pattern in Application Auto Scaling).
    code, msg, _ = spw.error_of(aas.register_scalable_target, ServiceNamespace="sagemaker", RoleARN="arn\x01",
                                MinCapacity=1, MaxCapacity=2, **target)
    assert msg == detected(v("arn\x01", "roleARN", "Member must satisfy regular expression pattern: "
                                                  r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\r\n\t]*"))
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_every_violation_of_a_cloudwatch_request_is_reported_at_once(vs):
    cw = vs.client("cloudwatch", validate=False)
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.raises(cw.exceptions.ValidationException) as ei:
        cw.get_metric_statistics(Namespace=":x", MetricName="", StartTime=now - dt.timedelta(minutes=5), EndTime=now,
                                 Period=0, Statistics=["Sum"])
    err = ei.value.response["Error"]
    assert err["Code"] == "ValidationError"  # CloudWatch's query code
    assert err["Message"] == detected(
        v(":x", "namespace", "Member must satisfy regular expression pattern: [^:].*"),
        v("", "metricName", "Member must have length greater than or equal to 1"),
        v(0, "period", "Member must have value greater than or equal to 1"),
    )
    # Values outside an enum are CloudWatch's own InvalidParameterValue, as before.
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.get_metric_statistics(Namespace="AWS/SageMaker", MetricName="Invocations", StartTime=now - dt.timedelta(minutes=5),
                                 EndTime=now, Period=60, Statistics=["Median"])


def test_the_models_constraints_come_before_spillways_rules(vs):
    """AWS reports the syntactic violations first, all of them; spillway's rules (here: both
    InstanceType and InstancePools) only run on a request that has none."""
    both = {"InstanceType": "ml.m5.xlarge", "InstancePools": P(("ml.m5.xlarge", 1))}
    code, msg, _ = call(vs, "CreateEndpointConfig",
                        {"EndpointConfigName": "order", "ProductionVariants": [variant(VariantName="bad_name", **both)]})
    assert msg == detected(v("bad_name", "productionVariants.1.member.variantName",
                             f"Member must satisfy regular expression pattern: {NAME_PATTERN}"))
    code, msg, _ = call(vs, "CreateEndpointConfig", {"EndpointConfigName": "order", "ProductionVariants": [variant(**both)]})
    assert code == "ValidationException" and "mutually exclusive" in msg and "validation error" not in msg


@pytest.mark.parametrize(
    "op,params,path,pattern",
    [
        pytest.param("CreateModel", {"ModelName": "arn-model", "PrimaryContainer": {"Image": "builtin:echo"},
                                     "ExecutionRoleArn": "arn:aws:iam::123456789012:user/bob"},
                     "executionRoleArn", ROLE_PATTERN, id="model-execution-role-is-a-user"),
        pytest.param("CreateEndpointConfig", {"EndpointConfigName": "arn-cfg", "ProductionVariants": [variant(InstanceType="ml.m5.xlarge")],
                                              "ExecutionRoleArn": "arn:aws:iam::12345678901x:role/r"},
                     "executionRoleArn", ROLE_PATTERN, id="config-execution-role-account"),
        pytest.param("AddTags", {"ResourceArn": "arn:aws:s3:::some-bucket", "Tags": [{"Key": "k", "Value": "v"}]},
                     "resourceArn", "arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:[0-9]{12}:.+", id="tags-on-a-non-sagemaker-arn"),
        pytest.param("CreateEndpointConfig", {"EndpointConfigName": "kms-cfg", "ProductionVariants": [variant(InstanceType="ml.m5.xlarge")],
                                              "KmsKeyId": "alias/my key"},
                     "kmsKeyId", "[a-zA-Z0-9:/_-]*", id="kms-key-id"),
    ],
)
def test_arns_are_checked_against_their_patterns(vs, op, params, path, pattern):
    before = snapshot(vs)
    code, msg, _ = call(vs, op, params)
    value = params.get("ExecutionRoleArn") or params.get("ResourceArn") or params.get("KmsKeyId")
    assert code == "ValidationException"
    assert msg == detected(v(value, path, f"Member must satisfy regular expression pattern: {pattern}"))
    assert snapshot(vs) == before


def test_a_valid_execution_role_is_accepted(vs):
    vs.sm.create_model(ModelName="role-ok", PrimaryContainer={"Image": "builtin:echo"},
                       ExecutionRoleArn="arn:aws-us-gov:iam::123456789012:role/service-role/SageMaker_Role+1")


def test_duplicate_variant_names_in_desired_weights_are_refused(vs):
    """The last one used to win; AWS refuses the request, and nothing changes."""
    before = vs.sm.describe_endpoint(EndpointName="val-ep")
    code, msg, _ = call(vs, "UpdateEndpointWeightsAndCapacities", {
        "EndpointName": "val-ep",
        "DesiredWeightsAndCapacities": [
            {"VariantName": "AllTraffic", "DesiredWeight": 1.0},
            {"VariantName": "AllTraffic", "DesiredWeight": 5.0, "DesiredInstanceCount": 2},
        ],
    })
    assert code == "ValidationException"
    assert msg.startswith("DesiredWeightsAndCapacities.2.VariantName: the variant 'AllTraffic' is named more than once"), msg
    after = vs.sm.describe_endpoint(EndpointName="val-ep")
    assert after["EndpointStatus"] == "InService"
    assert after["ProductionVariants"][0]["DesiredWeight"] == before["ProductionVariants"][0]["DesiredWeight"]
    assert after["ProductionVariants"][0]["DesiredInstanceCount"] == before["ProductionVariants"][0]["DesiredInstanceCount"]


@pytest.mark.parametrize("op,params", [
    pytest.param("AddTags", {"ResourceArn": spw.arn("model", MODEL), "Tags": [{"Key": "team", "Value": "a"}, {"Key": "team", "Value": "b"}]},
                 id="add-tags"),
    pytest.param("CreateModel", {"ModelName": "dup-tags", "PrimaryContainer": {"Image": "builtin:echo"},
                                 "Tags": [{"Key": "team", "Value": "a"}, {"Key": "team", "Value": "b"}]}, id="create-model"),
])
def test_a_tag_key_given_twice_is_refused(vs, op, params):
    before = snapshot(vs)
    code, msg, _ = call(vs, op, params)
    assert code == "ValidationException" and "Tags.2.Key" in msg and "'team'" in msg, msg
    assert snapshot(vs) == before
    assert all(t["Key"] != "team" for t in vs.sm.list_tags(ResourceArn=spw.arn("model", MODEL))["Tags"])


def _token_variants(token: str) -> list[str]:
    position, tag = token.rsplit(".", 1)
    flipped = tag[:-1] + ("0" if tag[-1] != "0" else "1")
    return ["not-a-token", f"{position}.{flipped}", f"0.{tag}", position]


def test_sagemaker_lists_default_to_pages_of_ten(start_server):
    srv = start_server()
    sm = srv.sm
    for i in range(12):
        spw.create_model(sm, f"pg-{i:02d}")
    first = sm.list_models(SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in first["Models"]] == [f"pg-{i:02d}" for i in range(10)]
    second = sm.list_models(SortBy="Name", SortOrder="Ascending", NextToken=first["NextToken"])
    assert [m["ModelName"] for m in second["Models"]] == ["pg-10", "pg-11"] and "NextToken" not in second
    assert len([m for page in sm.get_paginator("list_models").paginate() for m in page["Models"]]) == 12

    for i in range(11):
        sm.create_endpoint_config(EndpointConfigName=f"pc-{i:02d}",
                                  ProductionVariants=[spw.single_variant("pg-00", "ml.g6e.2xlarge")])
    configs = sm.list_endpoint_configs()
    assert len(configs["EndpointConfigs"]) == 10 and configs["NextToken"]
    assert len(sm.list_endpoint_configs(NextToken=configs["NextToken"])["EndpointConfigs"]) == 1
    # ml.g6e.2xlarge has no capacity here: the endpoints fail without starting anything.
    for i in range(11):
        sm.create_endpoint(EndpointName=f"pe-{i:02d}", EndpointConfigName=f"pc-{i:02d}")
    endpoints = sm.list_endpoints()
    assert len(endpoints["Endpoints"]) == 10 and endpoints["NextToken"]
    assert len(sm.list_endpoints(NextToken=endpoints["NextToken"])["Endpoints"]) == 1

    # A token is taken back only unchanged and only by the operation that handed it out.
    for bad in _token_variants(first["NextToken"]) + [configs["NextToken"]]:
        code, msg, status = spw.error_of(sm.list_models, NextToken=bad)
        assert (code, status) == ("ValidationException", 400), (bad, msg)
        assert "Invalid pagination token" in msg and "ListModels" in msg
    code, msg, _ = spw.error_of(srv.client("sagemaker", validate=False).list_models, MaxResults=0)
    assert msg == detected(v(0, "maxResults", "Member must have value greater than or equal to 1"))


def test_autoscaling_lists_page_as_aws_does(start_server):
    srv = start_server()
    sm = srv.sm
    spw.deploy_echo(sm, "pages", itype="ml.t2.medium")
    aas = srv.client("application-autoscaling")
    target = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/pages/variant/AllTraffic",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aas.register_scalable_target(MinCapacity=1, MaxCapacity=2, **target)
    config = {"TargetValue": 1000.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}
    for i in range(11):
        aas.put_scaling_policy(PolicyName=f"p{i:02d}", PolicyType="TargetTrackingScaling",
                               TargetTrackingScalingPolicyConfiguration=config, **target)
    first = aas.describe_scaling_policies(ServiceNamespace="sagemaker")
    assert len(first["ScalingPolicies"]) == 10 and first["NextToken"]  # AWS's default: 10
    rest = aas.describe_scaling_policies(ServiceNamespace="sagemaker", NextToken=first["NextToken"])
    assert len(rest["ScalingPolicies"]) == 1 and "NextToken" not in rest
    names = {p["PolicyName"] for page in aas.get_paginator("describe_scaling_policies").paginate(ServiceNamespace="sagemaker")
             for p in page["ScalingPolicies"]}
    assert names == {f"p{i:02d}" for i in range(11)}

    for op, limit in [(aas.describe_scaling_policies, 10), (aas.describe_scalable_targets, 50), (aas.describe_scaling_activities, 50)]:
        code, msg, _ = spw.error_of(op, ServiceNamespace="sagemaker", MaxResults=limit + 1)
        assert (code, msg) == ("ValidationException", detected(
            v(limit + 1, "maxResults", f"Member must have value less than or equal to {limit}")))
    for bad in _token_variants(first["NextToken"]):
        code, msg, _ = spw.error_of(aas.describe_scaling_policies, ServiceNamespace="sagemaker", NextToken=bad)
        assert code == "InvalidNextTokenException", (bad, msg)
    code, _, _ = spw.error_of(aas.describe_scalable_targets, ServiceNamespace="sagemaker", NextToken=first["NextToken"])
    assert code == "InvalidNextTokenException"
