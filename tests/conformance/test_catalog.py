"""The instance-type catalog and operations spillway does not support."""

import json

import botocore.session
import pytest

import spw


@pytest.fixture(scope="module")
def catalog(module_server):
    body = module_server.admin_get("instance-types")
    return {t["instanceType"]: t for t in body["instanceTypes"]}


def test_catalog_covers_every_botocore_instance_type(catalog):
    enum = botocore.session.get_session().get_service_model("sagemaker").shape_for("ProductionVariantInstanceType").enum
    assert len(enum) >= 277
    missing = sorted(set(enum) - set(catalog))
    assert not missing, f"{len(missing)} types missing from the catalog, e.g. {missing[:10]}"


def test_catalog_entries_are_well_formed(catalog):
    for name, t in catalog.items():
        assert name.startswith("ml."), name
        assert isinstance(t["vcpus"], int) and t["vcpus"] > 0, t
        assert isinstance(t["memoryGib"], (int, float)) and t["memoryGib"] > 0, t
        acc = t["accelerator"]
        if acc is not None:
            assert acc["count"] >= 1 and acc["kind"] and acc["model"], t
        price = t.get("priceUsdPerHour")
        assert price is None or price > 0, t


@pytest.mark.parametrize(
    "name,vcpus,mem,acc_model,acc_count,acc_mem",
    [
        ("ml.m5.xlarge", 4, 16, None, 0, None),
        ("ml.c5.xlarge", 4, 8, None, 0, None),
        ("ml.t2.medium", 2, 4, None, 0, None),
        ("ml.g4dn.xlarge", 4, 16, "t4", 1, 16),
        ("ml.g5.xlarge", 4, 16, "a10g", 1, 24),
        ("ml.g5.48xlarge", 192, 768, "a10g", 8, 24),
        ("ml.g6.2xlarge", 8, 32, "l4", 1, 24),
        ("ml.g6e.2xlarge", 8, 64, "l40s", 1, 48),
        ("ml.g6e.48xlarge", 192, 1536, "l40s", 8, 48),
        ("ml.p4d.24xlarge", 96, 1152, "a100", 8, 40),
        ("ml.p4de.24xlarge", 96, 1152, "a100", 8, 80),
        ("ml.p5.48xlarge", 192, 2048, "h100", 8, 80),
        ("ml.p5e.48xlarge", 192, 2048, "h200", 8, 141),
        ("ml.p5en.48xlarge", 192, 2048, "h200", 8, 141),
        ("ml.inf2.xlarge", 4, 16, "inferentia2", 1, 32),
        ("ml.trn1.32xlarge", 128, 512, "trainium", 16, 32),
    ],
)
def test_catalog_specs_of_common_inference_types(catalog, name, vcpus, mem, acc_model, acc_count, acc_mem):
    t = catalog[name]
    assert t["vcpus"] == vcpus
    assert t["memoryGib"] == mem
    if acc_model is None:
        assert t["accelerator"] is None
    else:
        acc = t["accelerator"]
        assert acc_model in acc["model"].lower().replace(" ", ""), acc
        assert acc["count"] == acc_count
        assert acc["memoryGibPerDevice"] == acc_mem


@pytest.mark.parametrize("family", ["g4dn", "g5", "g6", "g6e", "p4d", "p5", "inf2", "trn1"])
def test_accelerated_families_have_accelerators(catalog, family):
    members = [t for n, t in catalog.items() if n.split(".")[1] == family]
    assert members
    assert all(t["accelerator"] for t in members), [t["instanceType"] for t in members if not t["accelerator"]]


@pytest.mark.parametrize("family", ["t2", "m5", "m6i", "m7i", "c5", "c6i", "c7i", "r5", "r6i"])
def test_cpu_families_have_no_accelerator(catalog, family):
    members = [t for n, t in catalog.items() if n.split(".")[1] == family]
    assert members
    assert all(t["accelerator"] is None for t in members)


def test_unsupported_operation_names_itself(module_server):
    sm = module_server.sm
    code, msg, status = spw.error_of(
        sm.create_training_job,
        TrainingJobName="tj",
        AlgorithmSpecification={"TrainingInputMode": "File", "TrainingImage": "x"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        OutputDataConfig={"S3OutputPath": "s3://b/p"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    assert code == "UnknownOperationException"
    assert "not supported by spillway" in msg and "CreateTrainingJob" in msg
    assert status == 400


@pytest.mark.parametrize("op", ["ListTrainingJobs", "ListCompilationJobs", "DescribeNotebookInstance"])
def test_other_unsupported_operations_are_never_404_or_500(module_server, op):
    status, body = module_server.sagemaker_raw(op, {})
    assert status == 400, (status, body)
    assert str(body.get("__type", "")).rsplit("#", 1)[-1] == "UnknownOperationException"
    assert op in (body.get("message") or body.get("Message") or "")


@pytest.mark.parametrize("path", ["/_spillway/", "/_spillway"])
def test_the_admin_api_has_an_index(module_server, path):
    status, _, raw = module_server.http("GET", path)
    assert status == 200, raw
    body = json.loads(raw)
    rows = {(a["method"], a["path"]): a for a in body["apis"]}
    assert rows[("GET", "/_spillway/instance-types")]["action"] == "spillway:ListInstanceTypes"
    assert rows[("PUT", "/_spillway/capacity/{instanceType}")]["action"] == "spillway:PutCapacity"
    assert rows[("GET", "/_spillway/")]["action"] == "spillway:ListApis"
    assert all(a["description"] and "\n" not in a["description"] for a in body["apis"])
    # one API per line, for curl
    assert all(line.count('"method"') <= 1 for line in raw.decode().splitlines())
    assert "spillway" in body["signing"]
    # every GET of the index answers (placeholders filled in with something that exists)
    for a in body["apis"]:
        if a["method"] == "GET" and "{" not in a["path"]:
            st, _, r = module_server.http("GET", a["path"])
            assert st == 200, (a, r[:300])


def test_the_index_is_authenticated_authorized_and_audited(module_server):
    # unsigned: refused like the rest of the admin API
    status, _, raw = module_server.http("GET", "/_spillway/", sign=False)
    assert status == 400 and b"MissingAuthenticationToken" in raw, raw
    # a caller whose policies do not allow spillway:ListApis
    iam = module_server.client("iam")
    iam.create_user(UserName="no-index")
    iam.put_user_policy(
        UserName="no-index",
        PolicyName="all-but-the-index",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "spillway:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "spillway:ListApis", "Resource": "*"},
        ]}),
    )
    key = iam.create_access_key(UserName="no-index")["AccessKey"]
    keys = (key["AccessKeyId"], key["SecretAccessKey"])
    status, _, raw = spw.poll(
        lambda: (lambda r: r if r[0] == 403 else None)(module_server.http("GET", "/_spillway/", keys=keys)),
        what="the new key to be denied the index",
    )
    assert b"spillway:ListApis" in raw, raw
    st, _, _ = module_server.http("GET", "/_spillway/capacity", keys=keys)
    assert st == 200
    # the trail records it, as a read
    events = module_server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ListApis"}]
    )["Events"]
    assert events and all(e["ReadOnly"] == "true" for e in events), events
