"""Fleet lifecycle scenarios (issue 3) against the real binary with boto3: scaling through the pools,
fallback-first scale-in, partial scale-out, ICE back-off and its admin view, returning to preferred
hardware (surge first), replacement of a killed instance, blue/green updates with rollback, and
deletion that drains.

Default pinned capacity (spw.DEFAULT_CAPACITY): ml.g6e.2xlarge 0, ml.g5.xlarge 0, ml.g6.2xlarge 1,
ml.m5.xlarge 4, ml.c5.xlarge 4, ml.t2.medium 4."""

from __future__ import annotations

import os
import pathlib
import signal
import textwrap
import threading
import time

import pytest
from botocore.exceptions import ClientError

import spw

ECHO = "echo-model"
VARIANT = "AllTraffic"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _variant(d: dict, name: str = VARIANT) -> dict:
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == name]
    return v


def _kinds(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def _in_service(instances: list[dict]) -> list[dict]:
    return [i for i in instances if i["state"] == "InService"]


def _scale(sm, endpoint: str, count: int, variant: str = VARIANT):
    return sm.update_endpoint_weights_and_capacities(
        EndpointName=endpoint,
        DesiredWeightsAndCapacities=[{"VariantName": variant, "DesiredInstanceCount": count}],
    )


def _settle(sm, endpoint: str, pred, what: str, timeout: float = 60.0, seen: list | None = None) -> dict:
    """Poll DescribeEndpoint until the endpoint is InService and pred(describe) holds. Every status
    observed on the way is appended to `seen`; a Failed endpoint ends the wait at once."""

    def ok():
        d = sm.describe_endpoint(EndpointName=endpoint)
        if seen is not None:
            seen.append(d["EndpointStatus"])
        if d["EndpointStatus"] == "Failed":
            pytest.fail(f"{endpoint} went Failed while waiting for {what}: {d.get('FailureReason')!r}")
        return d if d["EndpointStatus"] == "InService" and pred(d) else None

    return spw.poll(ok, timeout=timeout, interval=0.1, what=what)


def _counts_are(count: int):
    return lambda d: _variant(d)["CurrentInstanceCount"] == count


def _fleet_is(srv: spw.Server, endpoint: str, counter: dict, timeout: float = 30.0) -> list[dict]:
    """Poll the admin view until the endpoint's tracked instances are exactly `counter` (type -> n),
    every one InService; returns them."""

    def ok():
        insts = srv.instances(endpoint)
        if all(i["state"] == "InService" for i in insts) and spw.type_counter(insts) == counter:
            return insts
        return None

    return spw.poll(ok, timeout=timeout, what=f"{endpoint} fleet to be {counter}")


def _processes_are(srv: spw.Server, ids: set[str], timeout: float = 30.0):
    spw.poll(
        lambda: set(srv.processes()) == ids,
        timeout=timeout,
        what=f"model processes to be exactly {sorted(ids)}",
    )


class _Invoker(threading.Thread):
    """Invokes an endpoint in a loop until stopped; records answers and errors."""

    def __init__(self, rt, endpoint: str):
        super().__init__(daemon=True)
        self.rt = rt
        self.endpoint = endpoint
        self.stop_flag = threading.Event()
        self.answers: list[dict] = []
        self.errors: list[str] = []

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            i += 1
            try:
                payload, _, _ = spw.invoke(self.rt, self.endpoint, body=f"req-{i}")
                if not isinstance(payload, dict) or payload.get("body") != f"req-{i}":
                    self.errors.append(f"req-{i}: unexpected answer {payload!r}")
                else:
                    self.answers.append(payload)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"req-{i}: {type(e).__name__}: {e}")
            time.sleep(0.02)

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=60)


def _ice_violations(events: list[dict], initial_s: float, max_s: float, until: float | None = None) -> list[str]:
    """Every launch attempt (LaunchAttempt or MigrationLaunch) on a type that happened strictly inside
    the back-off interval that an earlier insufficient-capacity answer for that type started. The
    interval after the n-th consecutive answer is min(initial * 2^(n-1), max). Attempts at or after
    `until` are not looked at (an operator's PUT /_spillway/capacity forgets the back-off)."""
    attempts = sorted(
        (
            e
            for e in events
            if e["kind"] in ("LaunchAttempt", "MigrationLaunch")
            and e.get("instanceType")
            and (until is None or e["time"] < until)
        ),
        key=lambda e: e["time"],
    )
    streak: dict[str, int] = {}
    blocked_until: dict[str, tuple[float, dict]] = {}
    out = []
    for e in attempts:
        t = e["instanceType"]
        if t in blocked_until and e["time"] < blocked_until[t][0] - 1e-3:
            until, cause = blocked_until[t]
            out.append(
                f"{e['kind']} on {t} at {e['time']:.3f} (result {e.get('result')}) is inside the back-off "
                f"until {until:.3f} started by the ICE at {cause['time']:.3f}"
            )
        if e.get("result") == "InsufficientCapacity":
            streak[t] = streak.get(t, 0) + 1
            interval = min(initial_s * 2 ** (streak[t] - 1), max_s)
            blocked_until[t] = (e["time"] + interval, e)
        elif e.get("result") == "Launched":
            streak.pop(t, None)
            blocked_until.pop(t, None)
    return out


# ------------------------------------------------------------------------------------------------
# 1. scale-out landing on a fallback type
# ------------------------------------------------------------------------------------------------


def test_scale_out_lands_on_the_fallback_pool_when_the_preferred_one_is_full(start_server):
    srv = start_server(capacity={"ml.g6.2xlarge": 1, "ml.m5.xlarge": 4})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "grow", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=1)])
    d = spw.wait_in_service(sm, "grow")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 0)]
    (first,) = srv.instances("grow")
    events_before = len(srv.events("grow"))

    _scale(sm, "grow", 3)
    d = _settle(sm, "grow", _counts_are(3), "grow InService with 3 instances")
    v = _variant(d)
    assert v["DesiredInstanceCount"] == 3
    assert spw.pool_counts(v) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]

    insts = _fleet_is(srv, "grow", {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2})
    assert first["instanceId"] in {i["instanceId"] for i in insts}, "scale-out keeps the instance it had"
    assert {i["instanceType"]: i["priority"] for i in insts} == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}
    # DescribeEndpoint's per-pool counts and the admin view agree, and so do the host's processes
    by_type = spw.type_counter(_in_service(insts))
    assert {t: n for t, n in spw.pool_counts(v)} == {t: by_type.get(t, 0) for t, _ in spw.pool_counts(v)}
    procs = srv.processes()
    assert set(procs) == {i["instanceId"] for i in insts}
    assert sorted(p["type"] for p in procs.values()) == ["ml.g6.2xlarge", "ml.m5.xlarge", "ml.m5.xlarge"]

    new = [e for e in srv.events("grow")[events_before:] if e["kind"] == "LaunchAttempt"]
    assert [(e["instanceType"], e["result"]) for e in new if e["result"] == "Launched"] == [
        ("ml.m5.xlarge", "Launched"),
        ("ml.m5.xlarge", "Launched"),
    ], new
    ice = [e for e in new if e["result"] == "InsufficientCapacity"]
    assert ice and all(e["instanceType"] == "ml.g6.2xlarge" and e["priority"] == 1 for e in ice), new
    assert new[0]["instanceType"] == "ml.g6.2xlarge", "scale-out tries priority 1 first"


# ------------------------------------------------------------------------------------------------
# 2. fallback-first scale-in
# ------------------------------------------------------------------------------------------------


def test_scale_in_removes_the_lowest_priority_instances_first(start_server):
    srv = start_server(capacity={"ml.g6.2xlarge": 1, "ml.c5.xlarge": 1, "ml.m5.xlarge": 4})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        "shrink",
        [
            spw.pooled_variant(
                ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.c5.xlarge", 2), ("ml.m5.xlarge", 3)), count=4
            )
        ],
    )
    d = spw.wait_in_service(sm, "shrink")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.c5.xlarge", 1), ("ml.m5.xlarge", 2)]
    fleet = _fleet_is(srv, "shrink", {"ml.g6.2xlarge": 1, "ml.c5.xlarge": 1, "ml.m5.xlarge": 2})
    by_type: dict[str, list[dict]] = {}
    for i in fleet:
        by_type.setdefault(i["instanceType"], []).append(i)
    m5_old, m5_new = sorted(by_type["ml.m5.xlarge"], key=lambda i: i["launchedAt"])
    (c5,) = by_type["ml.c5.xlarge"]
    (g6,) = by_type["ml.g6.2xlarge"]

    # 4 -> 3: one of the priority-3 pool goes, the most recently launched one
    _scale(sm, "shrink", 3)
    d = _settle(sm, "shrink", _counts_are(3), "shrink InService with 3 instances")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.c5.xlarge", 1), ("ml.m5.xlarge", 1)]
    _processes_are(srv, {g6["instanceId"], c5["instanceId"], m5_old["instanceId"]})
    assert {i["instanceId"] for i in srv.instances("shrink")} == {
        g6["instanceId"],
        c5["instanceId"],
        m5_old["instanceId"],
    }

    # 3 -> 1: the remaining priority-3 instance and then the priority-2 one; priority 1 stays
    _scale(sm, "shrink", 1)
    d = _settle(sm, "shrink", _counts_are(1), "shrink InService with 1 instance")
    v = _variant(d)
    assert v["DesiredInstanceCount"] == 1
    assert spw.pool_counts(v) == [("ml.g6.2xlarge", 1), ("ml.c5.xlarge", 0), ("ml.m5.xlarge", 0)]
    _processes_are(srv, {g6["instanceId"]})
    assert [i["instanceId"] for i in srv.instances("shrink")] == [g6["instanceId"]]
    _, headers, _ = spw.invoke(srv.rt, "shrink")
    assert headers["x-spillway-instance-type"] == "ml.g6.2xlarge"

    events = srv.events("shrink")
    scale_in = _kinds(events, "ScaleIn")
    # 4 -> 3 removed the newest priority-3 instance; 3 -> 1 removed the other two in one step
    assert [e["instanceId"] for e in scale_in][:1] == [m5_new["instanceId"]], scale_in
    assert sorted(e["instanceId"] for e in scale_in[1:]) == sorted([m5_old["instanceId"], c5["instanceId"]]), scale_in
    assert {e["instanceType"] for e in scale_in} == {"ml.m5.xlarge", "ml.c5.xlarge"}
    assert g6["instanceId"] not in {e.get("instanceId") for e in _kinds(events, "InstanceTerminated")}
    cap = srv.capacity()
    assert cap["ml.m5.xlarge"]["inUse"] == 0 and cap["ml.c5.xlarge"]["inUse"] == 0
    assert cap["ml.g6.2xlarge"]["inUse"] == 1


# ------------------------------------------------------------------------------------------------
# 3. partial scale-out
# ------------------------------------------------------------------------------------------------


def test_partial_scale_out_keeps_what_it_got_and_returns_to_in_service(start_server):
    srv = start_server(
        capacity={"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2},
        provisioning={"deadline_override_seconds": 3},
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "short", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=1)])
    spw.wait_in_service(sm, "short")

    _scale(sm, "short", 5)
    seen: list[str] = []
    # capacity exists for 2 of the 4 extra instances; the operation ends at its deadline
    d = _settle(
        sm,
        "short",
        lambda d: _variant(d)["CurrentInstanceCount"] == 3 and any(
            e["kind"] == "ScaleOutShortfall" for e in srv.events("short")
        ),
        "short back InService after the shortfall",
        seen=seen,
    )
    assert "Failed" not in seen, seen
    v = _variant(d)
    assert v["CurrentInstanceCount"] == 3
    assert v["DesiredInstanceCount"] == 5, "the requested count stays desired"
    assert spw.pool_counts(v) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]
    insts = _fleet_is(srv, "short", {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2})
    assert len(srv.processes()) == 3
    assert {i["instanceId"] for i in insts} == set(srv.processes())

    events = srv.events("short")
    (shortfall,) = _kinds(events, "ScaleOutShortfall")
    assert "ml.g6.2xlarge" in shortfall["message"] and "ml.m5.xlarge" in shortfall["message"], shortfall
    assert not _kinds(events, "EndpointFailed")
    # still serving, and a later status stays InService
    payload, _, _ = spw.invoke(srv.rt, "short")
    assert payload["instanceType"] in ("ml.g6.2xlarge", "ml.m5.xlarge")
    assert sm.describe_endpoint(EndpointName="short")["EndpointStatus"] == "InService"


# ------------------------------------------------------------------------------------------------
# 4. ICE back-off and its admin view
# ------------------------------------------------------------------------------------------------


def test_ice_back_off_spaces_launch_attempts_and_is_visible_in_the_capacity_view(start_server):
    # Back-off doubling and the probe at its end are covered on a paused clock with real intervals
    # (tests/controller_clock.rs); here the intervals are short, the assertions the same.
    initial_ms, max_ms = 500, 1000
    srv = start_server(
        provisioning={
            "deadline_override_seconds": 60,
            "ice_backoff_initial_ms": initial_ms,
            "ice_backoff_max_ms": max_ms,
        }
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "ice", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2)))])

    # the preferred type is backing off after its first answer
    row = spw.poll(
        lambda: (r := srv.capacity().get("ml.g6e.2xlarge")) and r.get("availability") == "BackingOff" and r,
        timeout=20,
        what="ml.g6e.2xlarge BackingOff in GET /_spillway/capacity",
    )
    for k in ("reason", "firstSeen", "lastSeen", "consecutiveFailures", "nextProbe"):
        assert k in row, f"capacity row lacks {k}: {row}"
    assert "ml.g6e.2xlarge" in row["reason"]
    assert row["consecutiveFailures"] >= 1
    assert row["firstSeen"] <= row["lastSeen"] < row["nextProbe"]
    expected = min(initial_ms * 2 ** (row["consecutiveFailures"] - 1), max_ms) / 1000
    assert row["nextProbe"] - row["lastSeen"] == pytest.approx(expected, abs=0.05), row

    # wait for three attempts on the preferred type: initial interval, then doubled (capped)
    def three_attempts():
        ev = [e for e in spw.launch_attempts(srv.events("ice")) if e["instanceType"] == "ml.g6e.2xlarge"]
        return ev if len(ev) >= 3 else None

    attempts = spw.poll(three_attempts, timeout=30, what="three launch attempts on ml.g6e.2xlarge")
    assert all(e["result"] == "InsufficientCapacity" for e in attempts), attempts
    times = [e["time"] for e in attempts]
    assert times[1] - times[0] >= initial_ms / 1000 - 1e-3, times
    assert times[2] - times[1] >= min(2 * initial_ms, max_ms) / 1000 - 1e-3, times
    events = srv.events("ice")
    assert _ice_violations(events, initial_ms / 1000, max_ms / 1000) == []

    row = srv.capacity()["ml.g6e.2xlarge"]
    assert row["availability"] in ("BackingOff", "ProbeDue"), row
    assert row["consecutiveFailures"] >= 3, row
    assert row["firstSeen"] == pytest.approx(attempts[0]["time"], abs=0.05), (row, attempts[0])
    assert row["lastSeen"] >= attempts[2]["time"] - 0.05

    # capacity given back: the type is Available at once and the endpoint lands on it
    put_at = time.time()
    srv.set_slots("ml.g6e.2xlarge", 1)
    row = srv.capacity()["ml.g6e.2xlarge"]
    assert row["availability"] == "Available", row
    for k in ("reason", "nextProbe", "consecutiveFailures"):
        assert k not in row, row
    assert srv.capacity()["ml.g5.xlarge"]["availability"] in ("BackingOff", "ProbeDue"), "only the given-back type is forgotten"
    d = spw.wait_in_service(sm, "ice", timeout=30)
    assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 0)]
    assert spw.type_counter(srv.instances("ice")) == {"ml.g6e.2xlarge": 1}
    events = srv.events("ice")
    assert _ice_violations(events, initial_ms / 1000, max_ms / 1000, until=put_at) == []
    (launched,) = [e for e in spw.launch_attempts(events) if e["result"] == "Launched"]
    assert launched["instanceType"] == "ml.g6e.2xlarge" and launched["time"] >= put_at

    # with nothing left to provision, nobody probes ml.g5.xlarge: once its interval ends it is ProbeDue
    row = spw.poll(
        lambda: (r := srv.capacity()["ml.g5.xlarge"]) and r["availability"] == "ProbeDue" and r,
        timeout=max_ms / 1000 + 10,
        what="ml.g5.xlarge ProbeDue",
    )
    assert row["nextProbe"] <= time.time() + 0.5


# ------------------------------------------------------------------------------------------------
# 5. returning to preferred hardware
# ------------------------------------------------------------------------------------------------


def test_tagged_endpoint_returns_to_preferred_hardware_surge_first(start_server):
    srv = start_server(
        capacity={"ml.g6e.2xlarge": 0, "ml.m5.xlarge": 4},
        config={"rebalance": {"enabled": False, "min_runtime_seconds": 1, "max_in_flight": 1}},
        provisioning={"deadline_override_seconds": 30, "health_check_timeout_override_seconds": 10},
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    variant = spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)
    sm.create_endpoint_config(EndpointConfigName="back-cfg", ProductionVariants=[variant])
    sm.create_endpoint(
        EndpointName="back",
        EndpointConfigName="back-cfg",
        Tags=[{"Key": "spillway:rebalance", "Value": "enabled"}],
    )
    sm.create_endpoint(EndpointName="stay", EndpointConfigName="back-cfg")
    for name in ("back", "stay"):
        d = spw.wait_in_service(sm, name)
        assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 0), ("ml.m5.xlarge", 2)]
    stay_ids = {i["instanceId"] for i in _fleet_is(srv, "stay", {"ml.m5.xlarge": 2})}
    back_old = {i["instanceId"] for i in _fleet_is(srv, "back", {"ml.m5.xlarge": 2})}
    # both fleets are older than min_runtime_seconds before the capacity comes back
    spw.poll(
        lambda: all(time.time() - i["launchedAt"] > 1.5 for n in ("back", "stay") for i in srv.instances(n)),
        what="instances older than min_runtime_seconds",
    )

    put_at = time.time()
    srv.set_slots("ml.g6e.2xlarge", 4)

    # while it moves: never fewer than 2 instances in service (admin view and DescribeEndpoint)
    low_admin: list = []
    low_describe: list = []
    statuses: set[str] = set()
    deadline = time.monotonic() + 60
    while True:
        insts = srv.instances("back")
        serving = _in_service(insts)
        if len(serving) < 2:
            low_admin.append(insts)
        d = sm.describe_endpoint(EndpointName="back")
        statuses.add(d["EndpointStatus"])
        if _variant(d)["CurrentInstanceCount"] < 2:
            low_describe.append(_variant(d))
        if (
            len(insts) == 2
            and all(i["state"] == "InService" and i["instanceType"] == "ml.g6e.2xlarge" for i in insts)
            and _variant(d)["CurrentInstanceCount"] == 2
        ):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"fleet of 'back' did not move to ml.g6e.2xlarge within 60s; last: {insts}")
        time.sleep(0.05)
    assert low_admin == [], f"fewer than 2 instances InService while moving: {low_admin[:3]}"
    assert low_describe == [], f"DescribeEndpoint CurrentInstanceCount < 2 while moving: {low_describe[:3]}"
    assert statuses <= {"InService", "Updating"}, statuses

    d = sm.describe_endpoint(EndpointName="back")
    assert d["EndpointStatus"] == "InService"
    assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 2), ("ml.m5.xlarge", 0)]
    events = srv.events("back")
    # before the capacity came back, the rebalancer may only probe ml.g6e.2xlarge once per back-off
    # interval (DEFAULT_CONFIG: 200 ms doubling to 1 s); those probes answer insufficient capacity
    probes = [e for e in _kinds(events, "MigrationLaunch") if e["result"] != "Launched"]
    assert all(e["result"] == "InsufficientCapacity" and e["time"] < put_at for e in probes), probes
    assert _ice_violations(events, 0.2, 1.0, until=put_at) == []
    launches = [e for e in _kinds(events, "MigrationLaunch") if e["result"] == "Launched"]
    shifts = _kinds(events, "MigrationShift")
    assert [e["instanceType"] for e in launches] == ["ml.g6e.2xlarge"] * 2, launches
    assert len(shifts) == 2, shifts
    # surge first: each shift comes after its surge launch, and the second surge starts only after
    # the first shift (max_in_flight = 1)
    assert launches[0]["time"] <= shifts[0]["time"] <= launches[1]["time"] <= shifts[1]["time"], (launches, shifts)
    retired = {e["instanceId"] for e in _kinds(events, "InstanceTerminated")}
    assert back_old <= retired, (back_old, retired)
    spw.poll(
        lambda: sorted(p["type"] for p in srv.processes().values())
        == ["ml.g6e.2xlarge", "ml.g6e.2xlarge", "ml.m5.xlarge", "ml.m5.xlarge"],
        what="the old ml.m5.xlarge instances of 'back' to stop",
    )
    _, headers, _ = spw.invoke(srv.rt, "back")
    assert headers["x-spillway-instance-type"] == "ml.g6e.2xlarge"

    # the untagged endpoint does not move (observed for a few controller rounds)
    until = time.monotonic() + 3
    while time.monotonic() < until:
        insts = srv.instances("stay")
        assert {i["instanceId"] for i in insts} == stay_ids, insts
        assert spw.type_counter(insts) == {"ml.m5.xlarge": 2}
        time.sleep(0.2)
    assert not _kinds(srv.events("stay"), "MigrationLaunch")

    # tagging it later (AddTags) turns rebalancing on for it
    sm.add_tags(
        ResourceArn=spw.arn("endpoint", "stay"), Tags=[{"Key": "spillway:rebalance", "Value": "enabled"}]
    )
    _fleet_is(srv, "stay", {"ml.g6e.2xlarge": 2}, timeout=60)
    assert len(_kinds(srv.events("stay"), "MigrationShift")) == 2


# ------------------------------------------------------------------------------------------------
# 6. replacement of a killed instance
# ------------------------------------------------------------------------------------------------


def test_killed_instance_is_replaced_while_the_endpoint_keeps_serving(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 30, "health_check_timeout_override_seconds": 10})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "phoenix", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)])
    spw.wait_in_service(sm, "phoenix")
    before = _fleet_is(srv, "phoenix", {"ml.m5.xlarge": 2})
    victim = before[0]
    survivor = before[1]
    assert victim["pid"] in srv.processes()[victim["instanceId"]]["pids"]

    os.kill(victim["pid"], signal.SIGKILL)

    errors = []
    statuses = set()

    def replaced():
        try:
            spw.invoke(srv.rt, "phoenix")
        except ClientError as e:
            errors.append(str(e))
        statuses.add(sm.describe_endpoint(EndpointName="phoenix")["EndpointStatus"])
        insts = srv.instances("phoenix")
        ids = {i["instanceId"] for i in _in_service(insts)}
        return insts if len(ids) == 2 and victim["instanceId"] not in ids else None

    after = spw.poll(replaced, timeout=60, interval=0.05, what="a replacement instance in service")
    assert statuses == {"InService"}, f"the endpoint left InService while one instance still served: {statuses}"
    assert errors == [], f"invocations failed while one instance still served: {errors[:5]}"
    new_ids = {i["instanceId"] for i in after} - {survivor["instanceId"]}
    assert len(new_ids) == 1 and victim["instanceId"] not in new_ids
    assert survivor["instanceId"] in {i["instanceId"] for i in after}

    events = srv.events("phoenix")
    exited = _kinds(events, "InstanceExited")
    assert [e["instanceId"] for e in exited] == [victim["instanceId"]], exited
    relaunch = [e for e in spw.launch_attempts(events) if e.get("instanceId") in new_ids]
    assert relaunch and relaunch[0]["result"] == "Launched" and relaunch[0]["time"] >= exited[0]["time"]
    _processes_are(srv, {i["instanceId"] for i in after})
    seen = set()
    for i in range(20):
        payload, _, _ = spw.invoke(srv.rt, "phoenix", body=f"after-{i}")
        assert payload["body"] == f"after-{i}"
        seen.add(payload["instanceId"])
    assert victim["instanceId"] not in seen
    d = sm.describe_endpoint(EndpointName="phoenix")
    assert d["EndpointStatus"] == "InService" and _variant(d)["CurrentInstanceCount"] == 2


# ------------------------------------------------------------------------------------------------
# 7. blue/green update rolled back
# ------------------------------------------------------------------------------------------------


def test_update_to_unavailable_pools_rolls_back_to_the_old_config(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 3, "health_check_timeout_override_seconds": 10})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "rb", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)], config="rb-old")
    spw.wait_in_service(sm, "rb")
    old = _fleet_is(srv, "rb", {"ml.m5.xlarge": 2})
    old_ids = {i["instanceId"]: i["pid"] for i in old}
    sm.create_endpoint_config(
        EndpointConfigName="rb-new",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.g5.xlarge", 2)), count=2)],
    )

    inv = _Invoker(srv.rt, "rb")
    inv.start()
    try:
        sm.update_endpoint(EndpointName="rb", EndpointConfigName="rb-new")
        assert sm.describe_endpoint(EndpointName="rb")["EndpointStatus"] == "Updating"
        seen: list[str] = []
        d = _settle(sm, "rb", lambda d: True, "rb back InService after the rollback", seen=seen)
    finally:
        inv.stop()
    assert "Failed" not in seen
    assert d["EndpointConfigName"] == "rb-old"
    assert d.get("FailureReason"), d
    assert "ml.g6e.2xlarge" in d["FailureReason"] or "ml.g5.xlarge" in d["FailureReason"], d["FailureReason"]
    assert "PendingDeploymentSummary" not in d
    v = _variant(d)
    assert v["CurrentInstanceCount"] == 2 and v["DesiredInstanceCount"] == 2

    insts = srv.instances("rb")
    assert {i["instanceId"]: i["pid"] for i in insts} == old_ids, "the old instances are still the fleet"
    assert all(i["state"] == "InService" for i in insts)
    _processes_are(srv, set(old_ids))
    assert inv.errors == [], f"invocations failed during the rolled-back update: {inv.errors[:5]}"
    assert {a["instanceId"] for a in inv.answers} <= set(old_ids)

    events = srv.events("rb")
    assert len(_kinds(events, "UpdateRolledBack")) == 1
    attempts = [e for e in spw.launch_attempts(events) if e["instanceType"] in ("ml.g6e.2xlarge", "ml.g5.xlarge")]
    assert attempts and all(e["result"] == "InsufficientCapacity" for e in attempts)
    payload, _, _ = spw.invoke(srv.rt, "rb")
    assert payload["instanceId"] in old_ids


# ------------------------------------------------------------------------------------------------
# 8. blue/green update that succeeds
# ------------------------------------------------------------------------------------------------


def test_blue_green_update_switches_without_failed_invocations(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 30, "health_check_timeout_override_seconds": 10})
    sm = srv.sm
    spw.create_model(sm, "blue", env={"COLOR": "blue"})
    spw.create_model(sm, "green", env={"COLOR": "green"})
    spw.deploy(sm, "bg", [spw.single_variant("blue", "ml.m5.xlarge", count=2)], config="bg-blue")
    spw.wait_in_service(sm, "bg")
    blue_ids = {i["instanceId"] for i in _fleet_is(srv, "bg", {"ml.m5.xlarge": 2})}
    sm.create_endpoint_config(
        EndpointConfigName="bg-green",
        ProductionVariants=[spw.pooled_variant("green", spw.pools(("ml.g6e.2xlarge", 1), ("ml.c5.xlarge", 2)), count=2)],
    )

    inv = _Invoker(srv.rt, "bg")
    inv.start()
    try:
        spw.poll(lambda: len(inv.answers) >= 5, what="invocations before the update")
        sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-green")
        seen: list[str] = []
        d = _settle(sm, "bg", lambda d: d["EndpointConfigName"] == "bg-green", "bg InService on bg-green", seen=seen)
        n = len(inv.answers)
        spw.poll(lambda: len(inv.answers) >= n + 5, what="invocations after the update")
    finally:
        inv.stop()
    assert "Failed" not in seen, seen
    assert inv.errors == [], f"{len(inv.errors)} invocations failed during the update: {inv.errors[:5]}"
    colors = [a["env"].get("COLOR") for a in inv.answers]
    assert colors[0] == "blue" and colors[-1] == "green", colors
    # traffic switches once: no blue answer after the first green one
    first_green = colors.index("green")
    assert "blue" not in colors[first_green:], colors

    assert "FailureReason" not in d or not d["FailureReason"]
    v = _variant(d)
    assert spw.pool_counts(v) == [("ml.g6e.2xlarge", 0), ("ml.c5.xlarge", 2)]
    green = _fleet_is(srv, "bg", {"ml.c5.xlarge": 2})
    assert not ({i["instanceId"] for i in green} & blue_ids)
    assert {i["modelName"] for i in green} == {"green"}
    _processes_are(srv, {i["instanceId"] for i in green})
    events = srv.events("bg")
    assert len(_kinds(events, "DeploymentComplete")) == 1
    assert blue_ids <= {e["instanceId"] for e in _kinds(events, "InstanceTerminated")}
    for _ in range(5):
        payload, _, _ = spw.invoke(srv.rt, "bg")
        assert payload["modelName"] == "green" and payload["instanceType"] == "ml.c5.xlarge"


# ------------------------------------------------------------------------------------------------
# 9. delete drains
# ------------------------------------------------------------------------------------------------

SLOW_INVOKE_MODEL = textwrap.dedent(
    """
    import http.server, json, os, signal, sys, time, pathlib
    marker = pathlib.Path(sys.argv[1])

    def on_term(*_):
        pathlib.Path(str(marker) + ".sigterm").write_text(repr(time.time()))
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200 if self.path == "/ping" else 404)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode()
            marker.write_text(body)
            time.sleep(float(body))
            self._send(200, json.dumps({"slept": float(body),
                                        "instanceId": os.environ.get("SPILLWAY_INSTANCE_ID")}).encode())

    port = int(os.environ["SAGEMAKER_BIND_TO_PORT"])
    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def test_delete_drains_in_flight_requests_then_removes_the_endpoint(start_server, tmp_path):
    srv = start_server(provisioning={"termination_grace_seconds": 20, "health_check_timeout_override_seconds": 10})
    sm = srv.sm
    script = tmp_path / "slow_invoke.py"
    script.write_text(SLOW_INVOKE_MODEL)
    marker = tmp_path / "in-flight"
    spw.create_model(sm, "slow", image=f"{spw.python()} {script} {marker}")
    spw.deploy(sm, "bye", [spw.single_variant("slow", "ml.m5.xlarge", count=1)])
    spw.wait_in_service(sm, "bye")
    (inst,) = srv.instances("bye")
    assert set(srv.processes()) == {inst["instanceId"]}

    result: dict = {}

    def slow_call():
        try:
            rt = srv.client("sagemaker-runtime", retries=0)  # the first answer, not a retry's
            resp = rt.invoke_endpoint(EndpointName="bye", Body=b"3", ContentType="text/plain")
            result["status"] = resp["ResponseMetadata"]["HTTPStatusCode"]
            result["body"] = resp["Body"].read()
            result["done"] = time.time()
        except Exception as e:  # noqa: BLE001
            result["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=slow_call, daemon=True)
    t.start()
    spw.poll(marker.exists, what="the slow request to reach the instance")

    resp = sm.delete_endpoint(EndpointName="bye")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200

    def status():
        try:
            return sm.describe_endpoint(EndpointName="bye")["EndpointStatus"]
        except ClientError as e:
            return e.response["Error"]["Code"]

    # the request still runs on the instance for ~3 s, so the endpoint is visibly Deleting meanwhile
    described = status()
    listed = [e["EndpointStatus"] for e in sm.list_endpoints(NameContains="bye")["Endpoints"]]

    sm.get_waiter("endpoint_deleted").wait(EndpointName="bye", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    gone_at = time.time()
    t.join(timeout=30)
    sigterm = pathlib.Path(str(marker) + ".sigterm")
    assert "error" not in result, (
        f"the in-flight request was not drained: {result['error']}; the instance got SIGTERM at "
        f"{sigterm.read_text() if sigterm.exists() else '?'}"
    )
    assert result["status"] == 200 and b'"slept": 3.0' in result["body"], result
    assert result["done"] <= gone_at + 0.5, "the endpoint disappeared before its in-flight request finished"
    assert float(sigterm.read_text()) >= result["done"] - 0.5, "SIGTERM came before the request finished"
    assert described == "Deleting", described
    assert listed == ["Deleting"], listed

    with pytest.raises(ClientError) as ei:
        sm.describe_endpoint(EndpointName="bye")
    assert ei.value.response["Error"]["Code"] == "ValidationException"
    assert sm.list_endpoints(NameContains="bye")["Endpoints"] == []
    assert srv.processes() == {}
    assert srv.capacity()["ml.m5.xlarge"]["inUse"] == 0
    events = srv.events("bye")
    assert [e["instanceId"] for e in _kinds(events, "InstanceTerminated")] == [inst["instanceId"]]
    assert len(_kinds(events, "EndpointDeleted")) == 1
    assert _kinds(events, "InstanceTerminated")[0]["time"] <= _kinds(events, "EndpointDeleted")[0]["time"]


def test_instances_launch_after_the_binary_is_replaced_in_place(tmp_path, monkeypatch):
    """An upgrade (or a rebuild) replaces spillway's file while it runs: new instances (the
    per-instance shim and builtin models are spillway itself) must still start."""
    import shutil

    copy = tmp_path / "spillway-copy"
    shutil.copy2(spw.BIN, copy)
    monkeypatch.setattr(spw, "BIN", str(copy))
    server = spw.Server(tmp_path / "srv", spw.merge(spw.DEFAULT_CONFIG, {}))
    server.start()
    try:
        copy.unlink()  # as `mv new-build spillway` or a package upgrade leaves it
        spw.deploy_echo(server.sm, "after-upgrade")
        spw.wait_in_service(server.sm, "after-upgrade")
        assert spw.invoke(server.rt, "after-upgrade", b"still here")[0]["body"] == "still here"
    finally:
        assert not server.shutdown_and_check()
