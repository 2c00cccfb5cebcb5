"""CreateEndpointConfig, DescribeEndpointConfig, DeleteEndpointConfig, ListEndpointConfigs."""

import datetime as dt
import time

import spw


def _pooled(model="cfg-model"):
    return spw.pooled_variant(
        model,
        [
            {"InstanceType": "ml.g6e.2xlarge", "Priority": 1},
            {"InstanceType": "ml.g6.2xlarge", "Priority": 2, "ModelNameOverride": "cfg-model-small"},
            {"InstanceType": "ml.m5.xlarge", "Priority": 3},
        ],
        count=2,
        VariantInstanceProvisionTimeoutInSeconds=900,
        RoutingConfig={"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
        InitialVariantWeight=1.0,
    )


def test_create_endpoint_config_returns_lowercased_arn(sm):
    spw.create_model(sm, "cfg-model")
    resp = sm.create_endpoint_config(
        EndpointConfigName="My-Config", ProductionVariants=[spw.single_variant("cfg-model")]
    )
    assert resp["EndpointConfigArn"] == spw.arn("endpoint-config", "My-Config")
    assert resp["EndpointConfigArn"].endswith(":endpoint-config/my-config")


def test_describe_endpoint_config_echoes_instance_pools_and_timeout(sm):
    spw.create_model(sm, "cfg-model")
    spw.create_model(sm, "cfg-model-small")
    sm.create_endpoint_config(EndpointConfigName="pooled", ProductionVariants=[_pooled()])
    d = sm.describe_endpoint_config(EndpointConfigName="pooled")
    assert d["EndpointConfigName"] == "pooled"
    assert d["EndpointConfigArn"] == spw.arn("endpoint-config", "pooled")
    assert isinstance(d["CreationTime"], dt.datetime)
    (v,) = d["ProductionVariants"]
    assert v["VariantName"] == "AllTraffic"
    assert v["ModelName"] == "cfg-model"
    assert v["InitialInstanceCount"] == 2
    assert v["VariantInstanceProvisionTimeoutInSeconds"] == 900
    assert v["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert v["InitialVariantWeight"] == 1.0
    assert "InstanceType" not in v
    got = sorted(v["InstancePools"], key=lambda p: p["Priority"])
    assert got == [
        {"InstanceType": "ml.g6e.2xlarge", "Priority": 1},
        {"InstanceType": "ml.g6.2xlarge", "Priority": 2, "ModelNameOverride": "cfg-model-small"},
        {"InstanceType": "ml.m5.xlarge", "Priority": 3},
    ]


def test_describe_single_type_config_has_instance_type_and_no_pools(sm):
    spw.create_model(sm, "cfg-model")
    sm.create_endpoint_config(
        EndpointConfigName="single",
        ProductionVariants=[spw.single_variant("cfg-model", "ml.c5.xlarge", count=3, InitialVariantWeight=0.5)],
    )
    (v,) = sm.describe_endpoint_config(EndpointConfigName="single")["ProductionVariants"]
    assert v["InstanceType"] == "ml.c5.xlarge"
    assert v["InitialInstanceCount"] == 3
    assert v["InitialVariantWeight"] == 0.5
    assert "InstancePools" not in v


def test_describe_endpoint_config_keeps_variant_order_and_config_role(sm):
    spw.create_model(sm, "cfg-model")
    sm.create_endpoint_config(
        EndpointConfigName="two-variants",
        ProductionVariants=[
            spw.single_variant("cfg-model", "ml.m5.xlarge", name="Zeta"),
            spw.single_variant("cfg-model", "ml.c5.xlarge", name="Alpha"),
        ],
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
    )
    d = sm.describe_endpoint_config(EndpointConfigName="two-variants")
    assert [v["VariantName"] for v in d["ProductionVariants"]] == ["Zeta", "Alpha"]
    assert d["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/SageMakerRole"


def test_describe_missing_endpoint_config(sm):
    code, msg, _ = spw.error_of(sm.describe_endpoint_config, EndpointConfigName="ghost-config")
    assert code == "ValidationException"
    assert "Could not find endpoint configuration" in msg
    assert spw.arn("endpoint-config", "ghost-config") in msg


def test_create_duplicate_endpoint_config_is_rejected(sm):
    spw.create_model(sm, "cfg-model")
    sm.create_endpoint_config(EndpointConfigName="dup", ProductionVariants=[spw.single_variant("cfg-model")])
    code, msg, _ = spw.error_of(
        sm.create_endpoint_config,
        EndpointConfigName="dup",
        ProductionVariants=[spw.single_variant("cfg-model", "ml.c5.xlarge")],
    )
    assert code == "ValidationException"
    assert "Cannot create already existing endpoint configuration" in msg
    assert spw.arn("endpoint-config", "dup") in msg
    (v,) = sm.describe_endpoint_config(EndpointConfigName="dup")["ProductionVariants"]
    assert v["InstanceType"] == "ml.m5.xlarge"


def test_delete_endpoint_config(sm):
    spw.create_model(sm, "cfg-model")
    sm.create_endpoint_config(EndpointConfigName="gone", ProductionVariants=[spw.single_variant("cfg-model")])
    sm.delete_endpoint_config(EndpointConfigName="gone")
    code, msg, _ = spw.error_of(sm.describe_endpoint_config, EndpointConfigName="gone")
    assert code == "ValidationException" and "Could not find endpoint configuration" in msg
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_delete_missing_endpoint_config(sm):
    code, msg, _ = spw.error_of(sm.delete_endpoint_config, EndpointConfigName="never-was")
    assert code == "ValidationException"
    assert "Could not find endpoint configuration" in msg


def _names(resp):
    return [c["EndpointConfigName"] for c in resp["EndpointConfigs"]]


def test_list_endpoint_configs_fields_and_default_order(sm):
    spw.create_model(sm, "cfg-model")
    for n in ["c-one", "c-two", "c-three"]:
        sm.create_endpoint_config(EndpointConfigName=n, ProductionVariants=[spw.single_variant("cfg-model")])
    resp = sm.list_endpoint_configs()
    assert _names(resp) == ["c-three", "c-two", "c-one"]
    first = resp["EndpointConfigs"][0]
    assert first["EndpointConfigArn"] == spw.arn("endpoint-config", "c-three")
    assert isinstance(first["CreationTime"], dt.datetime)


def test_list_endpoint_configs_sort_paginate_and_filter(sm):
    spw.create_model(sm, "cfg-model")
    names = ["blue-b", "green-a", "blue-c", "red-d", "blue-a"]
    for n in names:
        sm.create_endpoint_config(EndpointConfigName=n, ProductionVariants=[spw.single_variant("cfg-model")])
    assert _names(sm.list_endpoint_configs(SortBy="Name", SortOrder="Ascending")) == sorted(names)
    assert _names(sm.list_endpoint_configs(SortBy="Name", SortOrder="Descending")) == sorted(names, reverse=True)
    assert _names(sm.list_endpoint_configs(SortBy="CreationTime", SortOrder="Ascending")) == names
    # manual pages
    seen, token, sizes = [], None, []
    while True:
        kw = dict(SortBy="Name", SortOrder="Ascending", MaxResults=2)
        if token:
            kw["NextToken"] = token
        r = sm.list_endpoint_configs(**kw)
        sizes.append(len(r["EndpointConfigs"]))
        seen += _names(r)
        token = r.get("NextToken")
        if not token:
            break
    assert sizes == [2, 2, 1] and seen == sorted(names)
    # paginator + filter together
    pages = sm.get_paginator("list_endpoint_configs").paginate(
        NameContains="blue", SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 1}
    )
    assert [c["EndpointConfigName"] for p in pages for c in p["EndpointConfigs"]] == ["blue-a", "blue-b", "blue-c"]


def test_list_endpoint_configs_creation_time_after(sm):
    spw.create_model(sm, "cfg-model")
    sm.create_endpoint_config(EndpointConfigName="old", ProductionVariants=[spw.single_variant("cfg-model")])
    t_old = spw.to_epoch(sm.describe_endpoint_config(EndpointConfigName="old")["CreationTime"])
    while time.time() < t_old + 1.05:
        time.sleep(0.05)
    sm.create_endpoint_config(EndpointConfigName="new", ProductionVariants=[spw.single_variant("cfg-model")])
    boundary = dt.datetime.fromtimestamp(t_old + 0.5, dt.timezone.utc)
    assert _names(sm.list_endpoint_configs(CreationTimeAfter=boundary)) == ["new"]
    assert _names(sm.list_endpoint_configs(CreationTimeBefore=boundary)) == ["old"]


def test_endpoint_config_tags_given_at_creation_are_listed(sm):
    spw.create_model(sm, "cfg-model")
    resp = sm.create_endpoint_config(
        EndpointConfigName="tagged",
        ProductionVariants=[spw.single_variant("cfg-model")],
        Tags=[{"Key": "team", "Value": "ml"}, {"Key": "env", "Value": "prod"}],
    )
    tags = sm.list_tags(ResourceArn=resp["EndpointConfigArn"])["Tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "prod"), ("team", "ml")]
