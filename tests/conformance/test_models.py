"""CreateModel, DescribeModel, DeleteModel, ListModels (with pagination, sorting and filters)."""

import datetime as dt
import time

import spw


def test_create_model_returns_lowercased_arn(sm):
    resp = spw.create_model(sm, "Echo-Model-1")
    assert resp["ModelArn"] == spw.arn("model", "Echo-Model-1")
    assert resp["ModelArn"].endswith(":model/echo-model-1")


def test_describe_model_echoes_what_was_created(sm, tmp_path):
    (tmp_path / "weights").mkdir()
    before = spw.utcnow() - dt.timedelta(seconds=5)
    sm.create_model(
        ModelName="described",
        PrimaryContainer={
            "Image": "builtin:echo",
            "ModelDataUrl": f"file://{tmp_path / 'weights'}",
            "Environment": {"FLAVOR": "int4", "THREADS": "2"},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
    )
    d = sm.describe_model(ModelName="described")
    assert d["ModelName"] == "described"
    assert d["ModelArn"] == spw.arn("model", "described")
    assert d["PrimaryContainer"]["Image"] == "builtin:echo"
    assert d["PrimaryContainer"]["ModelDataUrl"] == f"file://{tmp_path / 'weights'}"
    assert d["PrimaryContainer"]["Environment"] == {"FLAVOR": "int4", "THREADS": "2"}
    assert d["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/SageMakerRole"
    assert isinstance(d["CreationTime"], dt.datetime)
    assert before <= d["CreationTime"] <= spw.utcnow() + dt.timedelta(seconds=5)


def test_create_model_without_execution_role_is_accepted(sm):
    resp = spw.create_model(sm, "no-role")
    assert resp["ModelArn"] == spw.arn("model", "no-role")
    assert sm.describe_model(ModelName="no-role")["ModelName"] == "no-role"


def test_describe_missing_model_is_validation_exception(sm):
    code, msg, status = spw.error_of(sm.describe_model, ModelName="ghost")
    assert code == "ValidationException"
    assert status == 400
    assert "Could not find model" in msg
    assert spw.arn("model", "ghost") in msg


def test_create_duplicate_model_is_rejected(sm):
    spw.create_model(sm, "twice", env={"V": "1"})
    code, msg, _ = spw.error_of(spw.create_model, sm, "twice", env={"V": "2"})
    assert code == "ValidationException"
    assert "Cannot create already existing model" in msg
    assert spw.arn("model", "twice") in msg
    # the first definition is untouched
    assert sm.describe_model(ModelName="twice")["PrimaryContainer"]["Environment"] == {"V": "1"}


def test_delete_model_removes_it(sm):
    spw.create_model(sm, "short-lived")
    sm.delete_model(ModelName="short-lived")
    code, msg, _ = spw.error_of(sm.describe_model, ModelName="short-lived")
    assert code == "ValidationException" and "Could not find model" in msg
    assert "short-lived" not in [m["ModelName"] for m in sm.list_models()["Models"]]


def test_delete_missing_model_is_validation_exception(sm):
    code, msg, _ = spw.error_of(sm.delete_model, ModelName="never-was")
    assert code == "ValidationException"
    assert "Could not find model" in msg


def _names(resp, key="Models", field="ModelName"):
    return [m[field] for m in resp[key]]


def test_list_models_summary_fields(sm):
    spw.create_model(sm, "Listed-One")
    (m,) = sm.list_models()["Models"]
    assert m["ModelName"] == "Listed-One"
    assert m["ModelArn"] == spw.arn("model", "Listed-One")
    assert isinstance(m["CreationTime"], dt.datetime)


def test_list_models_default_order_is_newest_first(sm):
    for n in ["m-a", "m-b", "m-c"]:
        spw.create_model(sm, n)
    assert _names(sm.list_models()) == ["m-c", "m-b", "m-a"]


def test_list_models_sort_by_name_and_creation_time(sm):
    for n in ["zeta", "alpha", "mid"]:
        spw.create_model(sm, n)
    assert _names(sm.list_models(SortBy="Name", SortOrder="Ascending")) == ["alpha", "mid", "zeta"]
    assert _names(sm.list_models(SortBy="Name", SortOrder="Descending")) == ["zeta", "mid", "alpha"]
    assert _names(sm.list_models(SortBy="CreationTime", SortOrder="Ascending")) == ["zeta", "alpha", "mid"]
    assert _names(sm.list_models(SortBy="CreationTime", SortOrder="Descending")) == ["mid", "alpha", "zeta"]


def test_list_models_paginates_with_max_results_and_next_token(sm):
    names = [f"page-{i}" for i in range(5)]
    for n in names:
        spw.create_model(sm, n)
    seen, token, pages = [], None, []
    while True:
        kw = {"MaxResults": 2, "SortBy": "Name", "SortOrder": "Ascending"}
        if token:
            kw["NextToken"] = token
        resp = sm.list_models(**kw)
        pages.append(len(resp["Models"]))
        seen += _names(resp)
        token = resp.get("NextToken")
        if not token:
            break
    assert pages == [2, 2, 1]
    assert seen == names


def test_list_models_boto3_paginator(sm):
    names = [f"pg-{i:02d}" for i in range(7)]
    for n in names:
        spw.create_model(sm, n)
    pager = sm.get_paginator("list_models")
    pages = list(pager.paginate(SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 3}))
    assert [len(p["Models"]) for p in pages] == [3, 3, 1]
    assert [m["ModelName"] for p in pages for m in p["Models"]] == names
    # MaxItems across pages with a resume token
    first = pager.paginate(
        SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 2, "MaxItems": 3}
    ).build_full_result()
    assert _names(first) == names[:3]
    rest = pager.paginate(
        SortBy="Name",
        SortOrder="Ascending",
        PaginationConfig={"PageSize": 2, "StartingToken": first["NextToken"]},
    ).build_full_result()
    assert _names(rest) == names[3:]


def test_list_models_name_contains(sm):
    for n in ["llama-8b", "llama-70b", "mistral-7b"]:
        spw.create_model(sm, n)
    assert sorted(_names(sm.list_models(NameContains="llama"))) == ["llama-70b", "llama-8b"]
    assert _names(sm.list_models(NameContains="mistral")) == ["mistral-7b"]
    assert _names(sm.list_models(NameContains="nothing-matches")) == []


def test_list_models_creation_time_filters(sm):
    spw.create_model(sm, "early-1")
    spw.create_model(sm, "early-2")
    t_last_early = spw.to_epoch(sm.describe_model(ModelName="early-2")["CreationTime"])
    # timestamps may be stored at second precision: let a whole second pass before the next group
    while time.time() < t_last_early + 1.05:
        time.sleep(0.05)
    spw.create_model(sm, "late-1")
    spw.create_model(sm, "late-2")
    boundary = dt.datetime.fromtimestamp(t_last_early + 0.5, dt.timezone.utc)
    assert sorted(_names(sm.list_models(CreationTimeAfter=boundary))) == ["late-1", "late-2"]
    assert sorted(_names(sm.list_models(CreationTimeBefore=boundary))) == ["early-1", "early-2"]
