"""The instance-type catalog and operations spillway does not support."""

import botocore.session
import pytest

import spw


@pytest.fixture(scope="module")
def catalog(module_server):
    body = module_server.admin_get("instance-types")
    return {t["name"]: t for t in body["instanceTypes"]}


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
    assert all(t["accelerator"] for t in members), [t["name"] for t in members if not t["accelerator"]]


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


@pytest.mark.parametrize("op", ["ListTrainingJobs", "ListInferenceComponents", "DescribeNotebookInstance"])
def test_other_unsupported_operations_are_never_404_or_500(module_server, op):
    status, body = module_server.sagemaker_raw(op, {})
    assert status == 400, (status, body)
    assert str(body.get("__type", "")).rsplit("#", 1)[-1] == "UnknownOperationException"
    assert op in (body.get("message") or body.get("Message") or "")
