"""CreateEndpoint, DescribeEndpoint, UpdateEndpoint, DeleteEndpoint, ListEndpoints,
UpdateEndpointWeightsAndCapacities, AddTags / ListTags / DeleteTags, and both boto3 waiters."""

import datetime as dt
import time

import pytest
from botocore.exceptions import WaiterError

import spw

ECHO = "echo-model"


@pytest.fixture
def slow_server(start_server):
    """A server whose provisioning deadline is long: an endpoint waiting for capacity stays
    Creating/Updating until the test gives capacity back."""
    return start_server(provisioning={"deadline_override_seconds": 90})


def _variant_counts(d, variant="AllTraffic"):
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == variant]
    return v


# ------------------------------------------------------------------------------------------------
# create / describe
# ------------------------------------------------------------------------------------------------


def test_create_endpoint_reaches_in_service_via_boto3_waiter(sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "waited", [spw.single_variant(ECHO, "ml.m5.xlarge")])
    sm.get_waiter("endpoint_in_service").wait(EndpointName="waited", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    assert sm.describe_endpoint(EndpointName="waited")["EndpointStatus"] == "InService"


def test_create_endpoint_returns_lowercased_arn_and_starts_creating(sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="arn-cfg", ProductionVariants=[spw.single_variant(ECHO)])
    resp = sm.create_endpoint(EndpointName="My-Endpoint", EndpointConfigName="arn-cfg")
    assert resp["EndpointArn"] == spw.arn("endpoint", "My-Endpoint")
    d = sm.describe_endpoint(EndpointName="My-Endpoint")
    assert d["EndpointStatus"] in ("Creating", "InService")
    spw.wait_in_service(sm, "My-Endpoint")


def test_describe_in_service_endpoint_fields(sm):
    spw.create_model(sm, ECHO)
    before = spw.utcnow() - dt.timedelta(seconds=5)
    spw.deploy(sm, "fields", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)], config="fields-cfg")
    d = spw.wait_in_service(sm, "fields")
    assert d["EndpointName"] == "fields"
    assert d["EndpointArn"] == spw.arn("endpoint", "fields")
    assert d["EndpointConfigName"] == "fields-cfg"
    assert before <= d["CreationTime"] <= d["LastModifiedTime"] <= spw.utcnow() + dt.timedelta(seconds=5)
    assert "FailureReason" not in d
    assert "PendingDeploymentSummary" not in d
    v = _variant_counts(d)
    assert v["CurrentInstanceCount"] == 2
    assert v["DesiredInstanceCount"] == 2
    assert v["CurrentWeight"] == 1.0
    assert v["DesiredWeight"] == 1.0
    assert "InstancePools" not in v, "single-InstanceType variants carry no InstancePools summary"


def test_describe_pooled_endpoint_lists_every_pool_in_priority_order(sm):
    spw.create_model(sm, ECHO)
    # pools given out of order on purpose
    spw.deploy(
        sm,
        "ordered",
        [
            spw.pooled_variant(
                ECHO,
                spw.pools(("ml.m5.xlarge", 3), ("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2)),
                count=1,
            )
        ],
    )
    d = spw.wait_in_service(sm, "ordered")
    v = _variant_counts(d)
    assert spw.pool_counts(v) == [("ml.g6e.2xlarge", 0), ("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]
    assert v["CurrentInstanceCount"] == 1


def test_describe_while_creating_shows_pending_deployment_and_variant_status(slow_server):
    sm = slow_server.sm
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm, "pending", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2)))],
        config="pending-cfg",
    )
    # both pools have 0 slots: the endpoint keeps cycling through them
    spw.poll(lambda: len(spw.launch_attempts(slow_server.events("pending"))) >= 2, what="two ICE attempts")
    d = sm.describe_endpoint(EndpointName="pending")
    assert d["EndpointStatus"] == "Creating"
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == "pending-cfg"
    variants = list(d.get("ProductionVariants", [])) + list(d["PendingDeploymentSummary"].get("ProductionVariants", []))
    statuses = [s for v in variants for s in v.get("VariantStatus", [])]
    assert statuses, f"no VariantStatus while provisioning: {d}"
    assert all(s["Status"] in ("Creating", "Updating", "Deleting", "ActivatingTraffic", "Baking") for s in statuses)
    assert any(s.get("StatusMessage") for s in statuses), "VariantStatus carries no StatusMessage"
    for v in variants:
        if "InstancePools" in v:
            assert spw.pool_counts(v) == [("ml.g6e.2xlarge", 0), ("ml.g5.xlarge", 0)]
    # capacity comes back before the deadline: provisioning completes on the preferred pool
    slow_server.set_slots("ml.g6e.2xlarge", 1)
    d = spw.wait_in_service(sm, "pending")
    assert "PendingDeploymentSummary" not in d
    assert spw.pool_counts(_variant_counts(d)) == [("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 0)]


def test_create_duplicate_endpoint_is_rejected(sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "dup-ep", [spw.single_variant(ECHO)])
    code, msg, _ = spw.error_of(sm.create_endpoint, EndpointName="dup-ep", EndpointConfigName="dup-ep-cfg")
    assert code == "ValidationException"
    assert "Cannot create already existing endpoint" in msg
    assert spw.arn("endpoint", "dup-ep") in msg


def test_create_endpoint_with_unknown_config_is_rejected_and_leaves_nothing(sm):
    code, msg, _ = spw.error_of(sm.create_endpoint, EndpointName="orphan", EndpointConfigName="no-such-cfg")
    assert code == "ValidationException"
    assert "Could not find endpoint configuration" in msg
    assert spw.arn("endpoint-config", "no-such-cfg") in msg
    assert sm.list_endpoints()["Endpoints"] == []
    code, _, _ = spw.error_of(sm.describe_endpoint, EndpointName="orphan")
    assert code == "ValidationException"


def test_describe_missing_endpoint(sm):
    code, msg, status = spw.error_of(sm.describe_endpoint, EndpointName="ghost-ep")
    assert (code, status) == ("ValidationException", 400)
    assert msg == f'Could not find endpoint "{spw.arn("endpoint", "ghost-ep")}".'


# ------------------------------------------------------------------------------------------------
# delete
# ------------------------------------------------------------------------------------------------


def test_delete_endpoint_stops_its_processes_and_endpoint_deleted_waiter_succeeds(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "doomed", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)])
    spw.deploy(sm, "keeper", [spw.single_variant(ECHO, "ml.c5.xlarge", count=1)])
    spw.wait_in_service(sm, "doomed")
    spw.wait_in_service(sm, "keeper")
    doomed_ids = {i["instanceId"] for i in server.instances("doomed")}
    assert len(doomed_ids) == 2 and doomed_ids <= set(server.processes())
    sm.delete_endpoint(EndpointName="doomed")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="doomed", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    spw.poll(lambda: not (doomed_ids & set(server.processes())), what="the deleted endpoint's processes to exit")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["keeper"]
    # the other endpoint is untouched and its config can still be reused
    assert len(server.instances("keeper")) == 1
    sm.create_endpoint(EndpointName="doomed", EndpointConfigName="doomed-cfg")
    spw.wait_in_service(sm, "doomed")


def test_delete_missing_endpoint(sm):
    code, msg, _ = spw.error_of(sm.delete_endpoint, EndpointName="never-was")
    assert code == "ValidationException"
    assert f'Could not find endpoint "{spw.arn("endpoint", "never-was")}"' in msg


def test_failed_endpoint_can_be_deleted(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "will-fail", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))])
    spw.wait_status(sm, "will-fail", "Failed", fail_on=())
    sm.delete_endpoint(EndpointName="will-fail")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="will-fail", WaiterConfig={"Delay": 1, "MaxAttempts": 30})


# ------------------------------------------------------------------------------------------------
# update
# ------------------------------------------------------------------------------------------------


def test_update_endpoint_moves_a_single_type_endpoint_onto_instance_pools(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "migrate", [spw.single_variant(ECHO, "ml.c5.xlarge")], config="migrate-v1")
    spw.wait_in_service(sm, "migrate")
    old_ids = {i["instanceId"] for i in server.instances("migrate")}
    sm.create_endpoint_config(
        EndpointConfigName="migrate-v2",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2)))],
    )
    resp = sm.update_endpoint(EndpointName="migrate", EndpointConfigName="migrate-v2")
    assert resp["EndpointArn"] == spw.arn("endpoint", "migrate")
    spw.poll(
        lambda: sm.describe_endpoint(EndpointName="migrate")["EndpointConfigName"] == "migrate-v2",
        what="EndpointConfigName to switch",
    )
    d = spw.wait_in_service(sm, "migrate")
    assert d["EndpointConfigName"] == "migrate-v2"
    assert spw.pool_counts(_variant_counts(d)) == [("ml.g6e.2xlarge", 0), ("ml.g6.2xlarge", 1)]
    payload, headers, _ = spw.invoke(server.rt, "migrate")
    assert headers["x-spillway-instance-type"] == "ml.g6.2xlarge"
    spw.poll(lambda: not (old_ids & set(server.processes())), what="the old fleet to stop")
    spw.poll(
        lambda: {i["instanceType"] for i in server.instances("migrate")} == {"ml.g6.2xlarge"},
        what="the admin API to forget the old fleet",
    )


def test_update_endpoint_is_updating_while_the_new_fleet_waits_and_the_old_fleet_serves(slow_server):
    srv, sm = slow_server, slow_server.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "bluegreen", [spw.single_variant(ECHO, "ml.c5.xlarge")], config="blue")
    spw.wait_in_service(sm, "bluegreen")
    sm.create_endpoint_config(
        EndpointConfigName="green", ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))]
    )
    sm.update_endpoint(EndpointName="bluegreen", EndpointConfigName="green")
    d = sm.describe_endpoint(EndpointName="bluegreen")
    assert d["EndpointStatus"] == "Updating"
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == "green"
    spw.poll(
        lambda: any(e.get("result") == "InsufficientCapacity" for e in spw.launch_attempts(srv.events("bluegreen"))),
        what="an ICE on the green fleet",
    )
    _, headers, _ = spw.invoke(srv.rt, "bluegreen")
    assert headers["x-spillway-instance-type"] == "ml.c5.xlarge", "the old fleet keeps serving while Updating"
    srv.set_slots("ml.g6e.2xlarge", 1)
    d = spw.wait_in_service(sm, "bluegreen")
    assert d["EndpointConfigName"] == "green"
    assert "PendingDeploymentSummary" not in d
    _, headers, _ = spw.invoke(srv.rt, "bluegreen")
    assert headers["x-spillway-instance-type"] == "ml.g6e.2xlarge"
    spw.poll(
        lambda: {i["type"] for i in srv.processes().values()} == {"ml.g6e.2xlarge"},
        what="only the green fleet to be running",
    )


def test_update_missing_endpoint(sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="some-cfg", ProductionVariants=[spw.single_variant(ECHO)])
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="ghost", EndpointConfigName="some-cfg")
    assert code == "ValidationException"
    assert f'Could not find endpoint "{spw.arn("endpoint", "ghost")}"' in msg


def test_update_endpoint_to_unknown_config_is_rejected_and_keeps_serving(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "steady", [spw.single_variant(ECHO)], config="steady-cfg")
    spw.wait_in_service(sm, "steady")
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="steady", EndpointConfigName="no-such")
    assert code == "ValidationException"
    assert "Could not find endpoint configuration" in msg
    d = sm.describe_endpoint(EndpointName="steady")
    assert (d["EndpointStatus"], d["EndpointConfigName"]) == ("InService", "steady-cfg")
    spw.invoke(server.rt, "steady")


def test_in_progress_endpoint_cannot_be_updated_or_deleted(slow_server):
    sm = slow_server.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "busy", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))])
    sm.create_endpoint_config(EndpointConfigName="busy-v2", ProductionVariants=[spw.single_variant(ECHO)])
    assert sm.describe_endpoint(EndpointName="busy")["EndpointStatus"] == "Creating"
    expected = f'Cannot update in-progress endpoint "{spw.arn("endpoint", "busy")}"'
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="busy", EndpointConfigName="busy-v2")
    assert code == "ValidationException" and expected in msg
    code, msg, _ = spw.error_of(sm.delete_endpoint, EndpointName="busy")
    assert code == "ValidationException" and expected in msg
    code, msg, _ = spw.error_of(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="busy",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
    )
    assert code == "ValidationException" and expected in msg
    assert sm.describe_endpoint(EndpointName="busy")["EndpointStatus"] == "Creating"


def test_updating_endpoint_cannot_be_updated_again(slow_server):
    sm = slow_server.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "twice", [spw.single_variant(ECHO, "ml.c5.xlarge")], config="twice-v1")
    spw.wait_in_service(sm, "twice")
    sm.create_endpoint_config(
        EndpointConfigName="twice-v2", ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))]
    )
    sm.update_endpoint(EndpointName="twice", EndpointConfigName="twice-v2")
    assert sm.describe_endpoint(EndpointName="twice")["EndpointStatus"] == "Updating"
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="twice", EndpointConfigName="twice-v1")
    assert code == "ValidationException"
    assert f'Cannot update in-progress endpoint "{spw.arn("endpoint", "twice")}"' in msg
    code, msg, _ = spw.error_of(sm.delete_endpoint, EndpointName="twice")
    assert code == "ValidationException" and "Cannot update in-progress endpoint" in msg


# ------------------------------------------------------------------------------------------------
# UpdateEndpointWeightsAndCapacities
# ------------------------------------------------------------------------------------------------


def _wait_count(sm, name, count, variant="AllTraffic", timeout=60):
    def ok():
        d = sm.describe_endpoint(EndpointName=name)
        v = _variant_counts(d, variant)
        return d if d["EndpointStatus"] == "InService" and v.get("CurrentInstanceCount") == count else None

    return spw.poll(ok, timeout=timeout, what=f"{name} InService with {count} instances")


def test_scale_out_falls_back_and_scale_in_drops_lowest_priority_first(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm, "elastic", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=1)]
    )
    d = spw.wait_in_service(sm, "elastic")
    assert spw.pool_counts(_variant_counts(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]
    resp = sm.update_endpoint_weights_and_capacities(
        EndpointName="elastic", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
    )
    assert resp["EndpointArn"] == spw.arn("endpoint", "elastic")
    assert sm.describe_endpoint(EndpointName="elastic")["EndpointStatus"] in ("Updating", "InService")
    d = _wait_count(sm, "elastic", 3)
    v = _variant_counts(d)
    assert v["DesiredInstanceCount"] == 3
    assert spw.pool_counts(v) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]
    assert spw.type_counter(server.instances("elastic")) == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}

    sm.update_endpoint_weights_and_capacities(
        EndpointName="elastic", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}]
    )
    d = _wait_count(sm, "elastic", 1)
    assert spw.pool_counts(_variant_counts(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]
    spw.poll(
        lambda: sorted(i["type"] for i in server.processes().values()) == ["ml.g6.2xlarge"],
        what="the fallback instances to be stopped",
    )


def test_update_weights_changes_current_and_desired_weight(sm):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        "weighted",
        [
            spw.single_variant(ECHO, "ml.m5.xlarge", name="A", InitialVariantWeight=1.0),
            spw.single_variant(ECHO, "ml.c5.xlarge", name="B", InitialVariantWeight=1.0),
        ],
    )
    spw.wait_in_service(sm, "weighted")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="weighted", DesiredWeightsAndCapacities=[{"VariantName": "B", "DesiredWeight": 0.25}]
    )
    d = spw.wait_in_service(sm, "weighted")
    b = _variant_counts(d, "B")
    assert b["DesiredWeight"] == 0.25 and b["CurrentWeight"] == 0.25
    a = _variant_counts(d, "A")
    assert a["CurrentWeight"] == 1.0


def test_update_weights_for_unknown_endpoint(sm):
    code, msg, _ = spw.error_of(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="ghost",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 1.0}],
    )
    assert code == "ValidationException" and "Could not find endpoint" in msg


# ------------------------------------------------------------------------------------------------
# ListEndpoints
# ------------------------------------------------------------------------------------------------


def _names(resp):
    return [e["EndpointName"] for e in resp["Endpoints"]]


def test_list_endpoints_fields_sorting_and_pagination(sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="shared", ProductionVariants=[spw.single_variant(ECHO, "ml.t2.medium")])
    names = ["ep-c", "ep-a", "ep-d", "ep-b"]
    for n in names:
        sm.create_endpoint(EndpointName=n, EndpointConfigName="shared")
    for n in names:
        spw.wait_in_service(sm, n)
    resp = sm.list_endpoints()
    assert _names(resp) == list(reversed(names)), "default order is CreationTime Descending"
    e = resp["Endpoints"][0]
    assert e["EndpointArn"] == spw.arn("endpoint", "ep-b")
    assert e["EndpointStatus"] == "InService"
    assert isinstance(e["CreationTime"], dt.datetime) and isinstance(e["LastModifiedTime"], dt.datetime)
    assert _names(sm.list_endpoints(SortBy="Name", SortOrder="Ascending")) == sorted(names)
    assert _names(sm.list_endpoints(SortBy="Name", SortOrder="Descending")) == sorted(names, reverse=True)
    assert _names(sm.list_endpoints(SortBy="CreationTime", SortOrder="Ascending")) == names
    first = sm.list_endpoints(SortBy="Name", SortOrder="Ascending", MaxResults=3)
    assert _names(first) == ["ep-a", "ep-b", "ep-c"] and first.get("NextToken")
    second = sm.list_endpoints(SortBy="Name", SortOrder="Ascending", MaxResults=3, NextToken=first["NextToken"])
    assert _names(second) == ["ep-d"] and not second.get("NextToken")
    pages = sm.get_paginator("list_endpoints").paginate(
        SortBy="Name", SortOrder="Descending", PaginationConfig={"PageSize": 1}
    )
    assert [x for p in pages for x in _names(p)] == sorted(names, reverse=True)


def test_list_endpoints_name_contains_status_equals_and_sort_by_status(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="good", ProductionVariants=[spw.single_variant(ECHO, "ml.t2.medium")])
    sm.create_endpoint_config(
        EndpointConfigName="bad", ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))]
    )
    sm.create_endpoint(EndpointName="prod-chat", EndpointConfigName="good")
    sm.create_endpoint(EndpointName="prod-embed", EndpointConfigName="bad")
    sm.create_endpoint(EndpointName="dev-chat", EndpointConfigName="good")
    spw.wait_in_service(sm, "prod-chat")
    spw.wait_in_service(sm, "dev-chat")
    spw.wait_status(sm, "prod-embed", "Failed", fail_on=())
    assert sorted(_names(sm.list_endpoints(NameContains="chat"))) == ["dev-chat", "prod-chat"]
    assert sorted(_names(sm.list_endpoints(NameContains="prod"))) == ["prod-chat", "prod-embed"]
    assert _names(sm.list_endpoints(StatusEquals="Failed")) == ["prod-embed"]
    assert sorted(_names(sm.list_endpoints(StatusEquals="InService"))) == ["dev-chat", "prod-chat"]
    assert _names(sm.list_endpoints(StatusEquals="Creating")) == []
    assert _names(sm.list_endpoints(NameContains="prod", StatusEquals="InService")) == ["prod-chat"]
    by_status = [e["EndpointStatus"] for e in sm.list_endpoints(SortBy="Status", SortOrder="Ascending")["Endpoints"]]
    assert by_status == sorted(by_status)
    by_status = [e["EndpointStatus"] for e in sm.list_endpoints(SortBy="Status", SortOrder="Descending")["Endpoints"]]
    assert by_status == sorted(by_status, reverse=True)


def test_list_endpoints_creation_time_after(sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="shared", ProductionVariants=[spw.single_variant(ECHO, "ml.t2.medium")])
    sm.create_endpoint(EndpointName="older", EndpointConfigName="shared")
    t_old = spw.to_epoch(sm.describe_endpoint(EndpointName="older")["CreationTime"])
    while time.time() < t_old + 1.05:
        time.sleep(0.05)
    sm.create_endpoint(EndpointName="newer", EndpointConfigName="shared")
    boundary = dt.datetime.fromtimestamp(t_old + 0.5, dt.timezone.utc)
    assert _names(sm.list_endpoints(CreationTimeAfter=boundary)) == ["newer"]
    assert _names(sm.list_endpoints(CreationTimeBefore=boundary)) == ["older"]
    spw.wait_in_service(sm, "older")
    spw.wait_in_service(sm, "newer")


# ------------------------------------------------------------------------------------------------
# waiters
# ------------------------------------------------------------------------------------------------


def test_endpoint_in_service_waiter_stops_early_on_failed(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "no-capacity", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))])
    t0 = time.monotonic()
    with pytest.raises(WaiterError) as ei:
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="no-capacity", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    assert "terminal failure state" in str(ei.value)
    assert time.monotonic() - t0 < 50, "the waiter should stop on Failed, not run out of attempts"


def test_endpoint_in_service_waiter_fails_on_missing_endpoint(sm):
    with pytest.raises(WaiterError) as ei:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="nope", WaiterConfig={"Delay": 1, "MaxAttempts": 3})
    assert "ValidationException" in str(ei.value) or "terminal failure" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# tags
# ------------------------------------------------------------------------------------------------


def _tags(sm, arn):
    return sorted((t["Key"], t["Value"]) for t in sm.list_tags(ResourceArn=arn)["Tags"])


def test_add_list_delete_tags_on_an_endpoint(sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="tag-cfg", ProductionVariants=[spw.single_variant(ECHO)])
    ep_arn = sm.create_endpoint(
        EndpointName="tagged", EndpointConfigName="tag-cfg", Tags=[{"Key": "owner", "Value": "ml-platform"}]
    )["EndpointArn"]
    assert _tags(sm, ep_arn) == [("owner", "ml-platform")]
    resp = sm.add_tags(ResourceArn=ep_arn, Tags=[{"Key": "cost-center", "Value": "42"}, {"Key": "owner", "Value": "sre"}])
    assert sorted((t["Key"], t["Value"]) for t in resp["Tags"]) == [("cost-center", "42"), ("owner", "sre")]
    assert _tags(sm, ep_arn) == [("cost-center", "42"), ("owner", "sre")], "AddTags overwrites an existing key"
    sm.delete_tags(ResourceArn=ep_arn, TagKeys=["owner"])
    assert _tags(sm, ep_arn) == [("cost-center", "42")]
    sm.delete_tags(ResourceArn=ep_arn, TagKeys=["cost-center", "not-there"])
    assert _tags(sm, ep_arn) == []
    spw.wait_in_service(sm, "tagged")


def test_tags_on_models_and_configs_are_separate(sm):
    m_arn = spw.create_model(sm, ECHO, Tags=[{"Key": "kind", "Value": "model"}])["ModelArn"]
    c_arn = sm.create_endpoint_config(
        EndpointConfigName="tcfg", ProductionVariants=[spw.single_variant(ECHO)], Tags=[{"Key": "kind", "Value": "config"}]
    )["EndpointConfigArn"]
    sm.add_tags(ResourceArn=m_arn, Tags=[{"Key": "extra", "Value": "1"}])
    assert _tags(sm, m_arn) == [("extra", "1"), ("kind", "model")]
    assert _tags(sm, c_arn) == [("kind", "config")]


def test_list_tags_paginator(sm):
    m_arn = spw.create_model(sm, ECHO)["ModelArn"]
    sm.add_tags(ResourceArn=m_arn, Tags=[{"Key": f"k{i:02d}", "Value": str(i)} for i in range(50)])
    tags = [t for p in sm.get_paginator("list_tags").paginate(ResourceArn=m_arn) for t in p["Tags"]]
    assert sorted(t["Key"] for t in tags) == [f"k{i:02d}" for i in range(50)]


def test_tags_on_a_missing_resource_are_rejected(sm):
    code, _, status = spw.error_of(
        sm.add_tags, ResourceArn=spw.arn("endpoint", "ghost"), Tags=[{"Key": "a", "Value": "b"}]
    )
    assert code == "ValidationException" and status == 400
    code, _, _ = spw.error_of(sm.list_tags, ResourceArn=spw.arn("model", "ghost"))
    assert code == "ValidationException"


# ------------------------------------------------------------------------------------------------
# deployments that cannot get capacity
# ------------------------------------------------------------------------------------------------


def test_scale_out_without_capacity_reports_updating_then_keeps_serving(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 3})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "stuck", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1)), count=1)])
    spw.wait_in_service(sm, "stuck")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="stuck", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}]
    )
    d = sm.describe_endpoint(EndpointName="stuck")
    assert d["EndpointStatus"] == "Updating"
    v = _variant_counts(d)
    assert v["DesiredInstanceCount"] == 2 and v["CurrentInstanceCount"] == 1
    spw.poll(lambda: spw.launch_attempts(srv.events("stuck"))[1:], what="the scale-out's ICE")
    d = sm.describe_endpoint(EndpointName="stuck")
    assert d["EndpointStatus"] == "Updating"
    v = _variant_counts(d)
    assert [s["Status"] for s in v.get("VariantStatus", [])] == ["Updating"], v.get("VariantStatus")
    assert v["VariantStatus"][0].get("StatusMessage")
    _, headers, _ = spw.invoke(srv.rt, "stuck")
    assert headers["x-spillway-instance-type"] == "ml.g6.2xlarge"
    # the deadline passes: the endpoint keeps the instance it has and serves again as InService
    d = spw.wait_status(sm, "stuck", "InService", fail_on=("Failed",), timeout=60)
    assert _variant_counts(d)["CurrentInstanceCount"] == 1
    spw.invoke(srv.rt, "stuck")
    assert len(srv.processes()) == 1


def test_update_that_cannot_get_capacity_rolls_back_to_the_old_fleet(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 3})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "rollback", [spw.single_variant(ECHO, "ml.c5.xlarge")], config="rollback-v1")
    spw.wait_in_service(sm, "rollback")
    old = set(srv.processes())
    sm.create_endpoint_config(
        EndpointConfigName="rollback-v2",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2)))],
    )
    sm.update_endpoint(EndpointName="rollback", EndpointConfigName="rollback-v2")
    assert sm.describe_endpoint(EndpointName="rollback")["EndpointStatus"] == "Updating"
    d = spw.wait_status(sm, "rollback", "InService", fail_on=("Failed",), timeout=60)
    assert d["EndpointConfigName"] == "rollback-v1"
    assert "PendingDeploymentSummary" not in d
    _, headers, _ = spw.invoke(srv.rt, "rollback")
    assert headers["x-spillway-instance-type"] == "ml.c5.xlarge"
    assert set(srv.processes()) == old


def test_tags_do_not_outlive_their_resource(sm):
    arn = spw.create_model(sm, ECHO, Tags=[{"Key": "old", "Value": "1"}])["ModelArn"]
    sm.delete_model(ModelName=ECHO)
    assert spw.create_model(sm, ECHO)["ModelArn"] == arn
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []
