"""Provisioning through ranked instance pools on the local provider with pinned capacity.

Default pinned capacity (spw.DEFAULT_CAPACITY): ml.g6e.2xlarge 0, ml.g5.xlarge 0, ml.g6.2xlarge 1,
ml.m5.xlarge 4, ml.c5.xlarge 4, ml.t2.medium 4."""

import collections

import pytest
from botocore.exceptions import WaiterError

import spw

ECHO = "echo-model"


def _variant(d, name="AllTraffic"):
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == name]
    return v


def _sequence(events):
    """(instanceType, priority, result) of every launch attempt, in order."""
    return [(e["instanceType"], e["priority"], e["result"]) for e in spw.launch_attempts(events)]


def _invoke_many(rt, endpoint, n):
    seen = []
    for i in range(n):
        payload, headers, _ = spw.invoke(rt, endpoint, body=f"req-{i}")
        assert payload["body"] == f"req-{i}"
        assert payload["instanceType"] == headers["x-spillway-instance-type"]
        seen.append((headers["x-spillway-instance-type"], payload["instanceId"]))
    return seen


def test_falls_back_to_the_second_pool(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "second", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    d = spw.waiter_in_service(sm, "second")
    v = _variant(d)
    assert spw.pool_counts(v) == [("ml.g6e.2xlarge", 0), ("ml.m5.xlarge", 1)]
    assert v["CurrentInstanceCount"] == 1 and v["DesiredInstanceCount"] == 1
    _, headers, _ = spw.invoke(server.rt, "second")
    assert headers["x-spillway-instance-type"] == "ml.m5.xlarge"
    assert _sequence(server.events("second"))[:2] == [
        ("ml.g6e.2xlarge", 1, "InsufficientCapacity"),
        ("ml.m5.xlarge", 2, "Launched"),
    ]


def test_falls_back_to_the_third_pool(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        "third",
        [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2), ("ml.c5.xlarge", 3)))],
    )
    d = spw.wait_in_service(sm, "third")
    assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 0), ("ml.g5.xlarge", 0), ("ml.c5.xlarge", 1)]
    _, headers, _ = spw.invoke(server.rt, "third")
    assert headers["x-spillway-instance-type"] == "ml.c5.xlarge"
    assert _sequence(server.events("third"))[:3] == [
        ("ml.g6e.2xlarge", 1, "InsufficientCapacity"),
        ("ml.g5.xlarge", 2, "InsufficientCapacity"),
        ("ml.c5.xlarge", 3, "Launched"),
    ]
    assert [i["instanceType"] for i in server.instances("third")] == ["ml.c5.xlarge"]


def test_preferred_pool_is_used_when_it_has_capacity(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "preferred", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    d = spw.wait_in_service(sm, "preferred")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]
    assert _sequence(server.events("preferred")) == [("ml.g6.2xlarge", 1, "Launched")]


def test_mixed_fleet_counts_match_the_running_processes(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        "mixed",
        [
            spw.pooled_variant(
                ECHO,
                spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)),
                count=3,
                RoutingConfig={"RoutingStrategy": "RANDOM"},
            )
        ],
    )
    d = spw.wait_in_service(sm, "mixed")
    v = _variant(d)
    assert v["CurrentInstanceCount"] == 3 and v["DesiredInstanceCount"] == 3
    assert spw.pool_counts(v) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]

    admin = server.instances("mixed")
    assert all(i["state"] == "InService" for i in admin), admin
    assert spw.type_counter(admin) == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}
    assert {i["instanceType"]: i["priority"] for i in admin} == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}

    procs = server.processes()
    assert set(procs) == {i["instanceId"] for i in admin}, "processes on the host = instances spillway reports"
    assert collections.Counter(p["type"] for p in procs.values()) == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}
    for i in admin:
        assert i["pid"] in procs[i["instanceId"]]["pids"]
        assert procs[i["instanceId"]]["type"] == i["instanceType"]

    seen = _invoke_many(server.rt, "mixed", 60)
    assert {t for t, _ in seen} == {"ml.g6.2xlarge", "ml.m5.xlarge"}
    assert {iid for _, iid in seen} == set(procs), "every instance answers some requests"

    cap = server.capacity()
    assert cap["ml.g6.2xlarge"]["inUse"] == 1 and cap["ml.m5.xlarge"]["inUse"] == 2


def test_model_name_override_runs_the_override_model_on_that_pool(server, sm):
    spw.create_model(sm, "llm-tp", env={"MODEL_FLAVOR": "tensor-parallel"})
    spw.create_model(sm, "llm-int4", env={"MODEL_FLAVOR": "int4"})
    spw.deploy(
        sm,
        "override",
        [
            spw.pooled_variant(
                "llm-tp",
                spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3, "llm-int4")),
                count=2,
                RoutingConfig={"RoutingStrategy": "RANDOM"},
            )
        ],
    )
    spw.wait_in_service(sm, "override")
    admin = {i["instanceType"]: i for i in server.instances("override")}
    assert admin["ml.g6.2xlarge"]["modelName"] == "llm-tp"
    assert admin["ml.m5.xlarge"]["modelName"] == "llm-int4"

    by_type = {}
    for _ in range(60):
        payload, headers, _ = spw.invoke(server.rt, "override")
        by_type[headers["x-spillway-instance-type"]] = payload
        if len(by_type) == 2:
            break
    assert set(by_type) == {"ml.g6.2xlarge", "ml.m5.xlarge"}
    base, override = by_type["ml.g6.2xlarge"], by_type["ml.m5.xlarge"]
    assert base["modelName"] == "llm-tp"
    assert base["env"]["SPILLWAY_MODEL_NAME"] == "llm-tp"
    assert base["env"]["MODEL_FLAVOR"] == "tensor-parallel"
    assert override["modelName"] == "llm-int4"
    assert override["env"]["SPILLWAY_MODEL_NAME"] == "llm-int4"
    assert override["env"]["MODEL_FLAVOR"] == "int4"
    assert override["env"]["SPILLWAY_INSTANCE_TYPE"] == "ml.m5.xlarge"

    procs = {p["type"]: p for p in server.processes().values()}
    assert procs["ml.m5.xlarge"]["env"]["MODEL_FLAVOR"] == "int4"
    assert procs["ml.g6.2xlarge"]["env"]["MODEL_FLAVOR"] == "tensor-parallel"


def test_every_pool_exhausted_fails_the_endpoint_naming_the_types(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "exhausted", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2)))])
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="exhausted", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    d = sm.describe_endpoint(EndpointName="exhausted")
    assert d["EndpointStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith(
        "CapacityError: Unable to provision requested ML compute capacity. "
        "Please retry using a different ML instance type. Production variant AllTraffic has 0 of 1 instances"
    ), reason
    assert "ml.g6e.2xlarge" in reason and "ml.g5.xlarge" in reason, reason
    assert len(reason) <= 1024
    events = srv.events("exhausted")
    seq = _sequence(events)
    assert seq and all(r == "InsufficientCapacity" for _, _, r in seq)
    prios = [p for _, p, _ in seq]
    assert prios.count(1) >= 2 and prios.count(2) >= 2, f"pools are cycled until the deadline: {seq}"
    assert any(e["kind"] == "EndpointFailed" for e in events)
    assert srv.instances("exhausted") == []
    assert srv.processes() == {}


def test_partially_filled_fleet_at_the_deadline_fails_and_releases_its_instances(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2}, capacity={"ml.m5.xlarge": 1})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "partial", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=3)])
    d = spw.wait_status(sm, "partial", "Failed", fail_on=("InService",))
    assert "ml.g6.2xlarge" in d["FailureReason"] and "ml.m5.xlarge" in d["FailureReason"]
    spw.poll(lambda: srv.processes() == {}, what="the partial fleet to be stopped")
    cap = srv.capacity()
    assert cap["ml.g6.2xlarge"]["inUse"] == 0 and cap["ml.m5.xlarge"]["inUse"] == 0


def test_health_check_failure_fails_the_endpoint_without_falling_back(start_server):
    srv = start_server(
        provisioning={"deadline_override_seconds": 30, "health_check_timeout_override_seconds": 1}
    )
    sm = srv.sm
    spw.create_model(sm, "sleeper", image="sleep 600")
    spw.deploy(
        sm,
        "unhealthy",
        [
            spw.pooled_variant(
                "sleeper",
                spw.pools(("ml.m5.xlarge", 1), ("ml.c5.xlarge", 2)),
                ContainerStartupHealthCheckTimeoutInSeconds=60,
            )
        ],
    )
    spw.poll(lambda: srv.processes(), what="the sleep process to start")
    d = spw.wait_status(sm, "unhealthy", "Failed", fail_on=("InService",), timeout=60)
    assert "health" in d["FailureReason"].lower(), d["FailureReason"]
    events = srv.events("unhealthy")
    kinds = [e["kind"] for e in events]
    assert "HealthCheckFailed" in kinds
    hc = next(e for e in events if e["kind"] == "HealthCheckFailed")
    assert hc["instanceType"] == "ml.m5.xlarge" and hc["priority"] == 1
    attempts = _sequence(events)
    assert attempts[0] == ("ml.m5.xlarge", 1, "Launched")
    assert not [a for a in attempts if a[0] == "ml.c5.xlarge"], f"a health-check failure is not an ICE: {attempts}"
    spw.poll(lambda: srv.processes() == {}, what="the unhealthy process to be stopped")


def test_events_list_every_attempt_with_priority_and_result(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        "evidence",
        [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3)), count=2)],
    )
    spw.wait_in_service(sm, "evidence")
    events = server.events("evidence")
    for e in events:
        assert e["endpointName"] == "evidence"
        assert isinstance(e["time"], (int, float))
    times = [e["time"] for e in events]
    assert times == sorted(times)
    attempts = spw.launch_attempts(events)
    for a in attempts:
        assert a["variantName"] == "AllTraffic"
        assert a["result"] in ("Launched", "InsufficientCapacity")
        assert (a["instanceType"], a["priority"]) in {("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3)}
    seq = _sequence(events)
    assert sorted(x for x in seq if x[2] == "Launched") == [("ml.g6.2xlarge", 2, "Launched"), ("ml.m5.xlarge", 3, "Launched")]
    assert all(r == "InsufficientCapacity" for t, _, r in seq if t == "ml.g6e.2xlarge")
    assert seq[0] == ("ml.g6e.2xlarge", 1, "InsufficientCapacity"), "provisioning starts at Priority 1"
    assert ("ml.g6.2xlarge", 2, "InsufficientCapacity") in seq, "the second instance found P2 full"

    ids = {i["instanceId"] for i in server.instances("evidence")}
    launched_ids = {a["instanceId"] for a in attempts if a["result"] == "Launched"}
    healthy_ids = {e["instanceId"] for e in events if e["kind"] == "InstanceHealthy"}
    assert launched_ids == ids == healthy_ids
    in_service = [e for e in events if e["kind"] == "EndpointInService"]
    assert len(in_service) == 1 and in_service[0]["time"] >= max(a["time"] for a in attempts)


def test_capacity_admin_api_changes_where_new_endpoints_land(server, sm):
    cap = server.capacity()
    assert cap["ml.m5.xlarge"]["slots"] == 4 and cap["ml.m5.xlarge"]["inUse"] == 0
    assert cap["ml.g6e.2xlarge"]["slots"] == 0
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(
        EndpointConfigName="m5-first",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.m5.xlarge", 1), ("ml.c5.xlarge", 2)))],
    )
    sm.create_endpoint(EndpointName="a", EndpointConfigName="m5-first")
    spw.wait_in_service(sm, "a")
    assert server.capacity()["ml.m5.xlarge"]["inUse"] == 1

    # take the preferred type away
    entry = server.set_slots("ml.m5.xlarge", 1)
    assert entry["instanceType"] == "ml.m5.xlarge" and entry["slots"] == 1
    assert server.capacity()["ml.m5.xlarge"]["slots"] == 1
    sm.create_endpoint(EndpointName="b", EndpointConfigName="m5-first")
    d = spw.wait_in_service(sm, "b")
    assert spw.pool_counts(_variant(d)) == [("ml.m5.xlarge", 0), ("ml.c5.xlarge", 1)]
    # an existing instance is not evicted by shrinking the slots
    assert [i["instanceType"] for i in server.instances("a")] == ["ml.m5.xlarge"]

    # give it back
    server.set_slots("ml.m5.xlarge", 4)
    sm.create_endpoint(EndpointName="c", EndpointConfigName="m5-first")
    d = spw.wait_in_service(sm, "c")
    assert spw.pool_counts(_variant(d)) == [("ml.m5.xlarge", 1), ("ml.c5.xlarge", 0)]
    cap = server.capacity()
    assert cap["ml.m5.xlarge"]["inUse"] == 2 and cap["ml.c5.xlarge"]["inUse"] == 1


def test_capacity_admin_api_rejects_unknown_types_and_bad_bodies(server):
    status, body = server.admin("PUT", "capacity/ml.foo.xlarge", {"slots": 1})
    assert status == 400
    assert "ValidationException" in str(body.get("__type", body.get("code", body)))
    status, _ = server.admin("PUT", "capacity/ml.m5.xlarge", {"slots": -1})
    assert 400 <= status < 500
    assert server.capacity()["ml.m5.xlarge"]["slots"] == 4


def test_pinning_a_new_type_via_the_admin_api(server, sm):
    server.set_slots("ml.r5.large", 1)
    assert server.capacity()["ml.r5.large"]["slots"] == 1
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "r5", [spw.pooled_variant(ECHO, spw.pools(("ml.r5.large", 1), ("ml.m5.xlarge", 2)), count=2)])
    d = spw.wait_in_service(sm, "r5")
    assert spw.pool_counts(_variant(d)) == [("ml.r5.large", 1), ("ml.m5.xlarge", 1)]


def test_capacity_freed_by_a_deleted_endpoint_is_reused(server, sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(
        EndpointConfigName="g6-first",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)))],
    )
    sm.create_endpoint(EndpointName="first", EndpointConfigName="g6-first")
    spw.wait_in_service(sm, "first")
    sm.create_endpoint(EndpointName="second", EndpointConfigName="g6-first")
    d = spw.wait_in_service(sm, "second")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 0), ("ml.m5.xlarge", 1)]
    sm.delete_endpoint(EndpointName="first")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="first", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    spw.poll(lambda: server.capacity()["ml.g6.2xlarge"]["inUse"] == 0, what="the g6 slot to be released")
    sm.create_endpoint(EndpointName="third", EndpointConfigName="g6-first")
    d = spw.wait_in_service(sm, "third")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]


def test_single_instance_type_variant_is_a_pool_of_one(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "single-ok", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)])
    spw.deploy(sm, "single-ice", [spw.single_variant(ECHO, "ml.g6e.2xlarge")])
    d = spw.wait_in_service(sm, "single-ok")
    assert _variant(d)["CurrentInstanceCount"] == 2
    assert {i["instanceType"] for i in srv.instances("single-ok")} == {"ml.m5.xlarge"}
    d = spw.wait_status(sm, "single-ice", "Failed", fail_on=("InService",))
    assert "ml.g6e.2xlarge" in d["FailureReason"]
    assert {a["priority"] for a in spw.launch_attempts(srv.events("single-ice"))} == {1}


def test_a_command_that_cannot_start_fails_the_endpoint_without_waiting_for_the_deadline(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 60})
    sm = srv.sm
    spw.create_model(sm, "broken", image="/no/such/model-server --port 1")
    spw.deploy(sm, "broken", [spw.pooled_variant("broken", spw.pools(("ml.m5.xlarge", 1), ("ml.c5.xlarge", 2)))])
    d = spw.wait_status(sm, "broken", "Failed", fail_on=("InService",), timeout=30)
    assert "/no/such/model-server" in d["FailureReason"]
    assert not [a for a in spw.launch_attempts(srv.events("broken")) if a["instanceType"] == "ml.c5.xlarge"]
