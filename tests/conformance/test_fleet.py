"""The fleet an operator can explain: capacity accounting on the local provider, what a stuck
variant says, the events that explain the fleet, the fit check and the cost ceiling (issue 15)."""

import os
import time

import pytest

import spw

ECHO = "echo-model"


def _variant(d, name="AllTraffic"):
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == name]
    return v


def _kinds(events, kind):
    return [e for e in events if e["kind"] == kind]


def _gpu_pins_only_server(start_server, pins, **provisioning):
    """A server whose only pins are `pins` (the CPU last resort is fitted to the allowance), with
    a CPU allowance of exactly 8 vCPUs whatever this host's CPU count, and memory to spare."""
    srv = start_server(start=False, provisioning=provisioning or None)
    local = srv.config["provider"]["local"]
    local["capacity"] = dict(pins)
    local["cpu_overcommit"] = 8.0 / os.cpu_count()
    local["memory_overcommit"] = 64.0
    srv.config_path.write_text(spw.to_toml(srv.config))
    return srv.start()


def _status_message(d):
    return " ".join(s.get("StatusMessage", "") for s in _variant(d).get("VariantStatus", []))


def test_cpu_last_resort_is_not_eaten_by_pinned_gpu_types(start_server):
    """Issue 15, item 3: two GPU types given slots, then a scale-out to 4. The pinned (simulated)
    GPU instances used to consume the CPU allowance, so ml.m5.xlarge was refused with `needs 4
    vCPUs; 24 of 16 ... are promised` and the endpoint stuck in Updating at 3/4."""
    srv = _gpu_pins_only_server(
        start_server, {"ml.g6e.2xlarge": 1, "ml.g6.2xlarge": 1}, deadline_override_seconds=60
    )
    sm = srv.sm
    spw.create_model(sm, ECHO)
    pools = spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3))
    spw.deploy(sm, "cpu-last", [spw.pooled_variant(ECHO, pools, count=1)])
    spw.wait_in_service(sm, "cpu-last")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="cpu-last",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 4}],
    )
    d = spw.poll(
        lambda: (lambda d: d if d["EndpointStatus"] == "InService" and _variant(d)["CurrentInstanceCount"] == 4 else None)(
            sm.describe_endpoint(EndpointName="cpu-last")
        ),
        timeout=40,
        what="cpu-last InService with 4 instances",
    )
    assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)]
    refused = [
        e for e in spw.launch_attempts(srv.events("cpu-last"))
        if e["instanceType"] == "ml.m5.xlarge" and e["result"] == "InsufficientCapacity"
    ]
    assert not refused, refused

    # The allowance (8 vCPUs = two ml.m5.xlarge) is now full: a fifth instance cannot start, and
    # the variant's status says exactly why, naming the instances that hold the allowance.
    m5 = sorted(i["instanceId"] for i in srv.instances("cpu-last") if i["instanceType"] == "ml.m5.xlarge")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="cpu-last",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 5}],
    )
    d = spw.poll(
        lambda: (lambda d: d if "needs 4 vCPUs" in _status_message(d) else None)(
            sm.describe_endpoint(EndpointName="cpu-last")
        ),
        timeout=20,
        what="a VariantStatus that says why the fifth instance cannot start",
    )
    msg = _status_message(d)
    assert d["EndpointStatus"] == "Updating"
    assert "4 of 5 instances" in msg, msg
    assert "ml.g6e.2xlarge has no free slot: pinned to 1 slot, used by" in msg, msg
    assert "8 of 8 vCPUs of the CPU allowance" in msg, msg
    assert f"by 2 unpinned CPU instances: ml.m5.xlarge x2 ({m5[0]}, {m5[1]})" in msg, msg
    assert "Next probe in" in msg and "gives up in" in msg, msg
    cap = srv.capacity()
    assert "pinned to 1 slot," in cap["ml.g6.2xlarge"]["reason"], cap


def test_pin_refusals_say_what_they_mean(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "words", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    spw.wait_in_service(sm, "words")
    (ice,) = [e for e in spw.launch_attempts(srv.events("words")) if e["result"] == "InsufficientCapacity"]
    assert ice["message"].startswith("ml.g6e.2xlarge has no capacity here: pinned to 0 slots;"), ice
    assert "all 0" not in ice["message"]
