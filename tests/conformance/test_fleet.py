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
        # Between probes the status is the back-off summary ("4 of 5 instances ..."); right
        # after a refused probe it is that probe's answer for a moment: wait for the summary.
        lambda: (lambda d: d if "needs 4 vCPUs" in _status_message(d) and "4 of 5 instances" in _status_message(d) else None)(
            sm.describe_endpoint(EndpointName="cpu-last")
        ),
        timeout=30,
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
    assert cap["ml.g6.2xlarge"]["accountedAgainst"] == "slots"
    assert cap["ml.m5.xlarge"]["accountedAgainst"] == "cpuAllowance"
    allowance = srv.admin_get("capacity")["cpuAllowance"]
    assert allowance["vcpus"] == pytest.approx(8) and allowance["vcpusPromised"] == 8, allowance
    assert sorted(h["instanceId"] for h in allowance["holders"]) == m5, allowance
    assert {h["instanceType"] for h in allowance["holders"]} == {"ml.m5.xlarge"}


def test_pin_refusals_say_what_they_mean(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "words", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    spw.wait_in_service(sm, "words")
    (ice,) = [e for e in spw.launch_attempts(srv.events("words")) if e["result"] == "InsufficientCapacity"]
    assert ice["message"].startswith("ml.g6e.2xlarge has no capacity here: pinned to 0 slots;"), ice
    assert "all 0" not in ice["message"]


# ------------------------------------------------------------------------------------------------
# events that explain the fleet
# ------------------------------------------------------------------------------------------------


def test_a_pin_change_is_an_event_on_every_endpoint_that_lists_the_type(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "lists-g6e", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    spw.deploy(sm, "cpu-only", [spw.single_variant(ECHO, "ml.c5.xlarge")], config="cpu-only-config")
    spw.wait_in_service(sm, "lists-g6e")
    spw.wait_in_service(sm, "cpu-only")
    srv.set_slots("ml.g6e.2xlarge", 1)
    (ev,) = _kinds(srv.events("lists-g6e"), "CapacityPinChanged")
    assert ev["instanceType"] == "ml.g6e.2xlarge"
    assert ev["message"] == (
        "capacity of ml.g6e.2xlarge changed by arn:aws:iam::123456789012:user/admin: "
        "0 slots (config pin) -> 1 slot (runtime pin)"
    ), ev
    assert not _kinds(srv.events("cpu-only"), "CapacityPinChanged")
    status, _ = srv.admin("DELETE", "capacity/ml.g6e.2xlarge")
    assert status == 200
    last = _kinds(srv.events("lists-g6e"), "CapacityPinChanged")[-1]
    assert last["message"].endswith("1 slot (runtime pin) -> 0 slots (config pin)"), last


def test_a_restart_says_what_it_adopted_and_what_it_relaunches(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "again", [spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)])
    spw.wait_in_service(sm, "again")
    insts = sorted(srv.instances("again"), key=lambda i: i["instanceId"])
    srv.sigkill()
    victim = insts[0]
    spw.kill_pids([victim["pid"]])
    time.sleep(0.5)
    srv.restart()
    sm = srv.sm  # the restarted server listens on a new port
    spw.wait_in_service(sm, "again")
    (ev,) = _kinds(srv.events("again"), "ServerStarted")
    m = ev["message"]
    assert f"adopted 1 running instance ({insts[1]['instanceId']}) without restarting it" in m, m
    assert f"1 instance was gone ({victim['instanceId']})" in m, m
    assert "1 of the 2 desired instances is launched through the pools" in m, m
    spw.poll(lambda: len([i for i in srv.instances("again") if i["state"] == "InService"]) == 2, what="replacement")


def test_autoscaling_scale_out_is_an_event_with_its_cause(start_server):
    srv = start_server(config={"autoscaling": {"evaluation_interval_seconds": 0.5, "metric_window_seconds": 3,
                                                "target_tracking_period_seconds": 1}})
    sm, cw, aas = srv.sm, srv.client("cloudwatch"), srv.client("application-autoscaling")
    spw.deploy_echo(sm, "grows")
    spw.wait_in_service(sm, "grows")
    rid = "endpoint/grows/variant/AllTraffic"
    dim = "sagemaker:variant:DesiredInstanceCount"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=dim,
                                 MinCapacity=1, MaxCapacity=2)
    policy = aas.put_scaling_policy(
        PolicyName="add-one", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=dim,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 0,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    cw.put_metric_alarm(AlarmName="busy", Namespace="AWS/SageMaker", MetricName="Invocations",
                        Dimensions=[{"Name": "EndpointName", "Value": "grows"},
                                    {"Name": "VariantName", "Value": "AllTraffic"}],
                        Statistic="Sum", Period=10, EvaluationPeriods=1, Threshold=5,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy["PolicyARN"]])
    cw.set_alarm_state(AlarmName="busy", StateValue="ALARM", StateReason="drill")
    (ev,) = spw.poll(lambda: _kinds(srv.events("grows"), "ScaleOut"), timeout=20, what="a ScaleOut event")
    assert ev["variantName"] == "AllTraffic" and ev["result"] == "AutoScaling"
    assert ev["message"].startswith("autoscaling: desired instance count 1 -> 2; "), ev
    assert "monitor alarm busy in state ALARM triggered policy add-one" in ev["message"], ev
    spw.poll(lambda: _variant(spw.describe(sm, "grows"))["CurrentInstanceCount"] == 2, what="two instances")


def test_a_rebalance_waiting_out_min_runtime_is_one_event(start_server):
    srv = start_server(config={"rebalance": {"enabled": True, "min_runtime_seconds": 30}})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "home", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)))])
    spw.wait_in_service(sm, "home")
    (m5,) = srv.instances("home")
    srv.set_slots("ml.g6e.2xlarge", 1)
    (ev,) = spw.poll(lambda: _kinds(srv.events("home"), "RebalanceWaiting"), timeout=10, what="RebalanceWaiting")
    assert ev["instanceId"] == m5["instanceId"] and ev["instanceType"] == "ml.g6e.2xlarge" and ev["priority"] == 1
    assert f"{m5['instanceId']} (priority 2) moves to ml.g6e.2xlarge (priority 1) at " in ev["message"], ev
    assert "min_runtime_seconds = 30" in ev["message"], ev
    time.sleep(2)  # eight controller ticks and more: still one event for one wait
    assert len(_kinds(srv.events("home"), "RebalanceWaiting")) == 1


# ------------------------------------------------------------------------------------------------
# the fit check
# ------------------------------------------------------------------------------------------------


def test_the_fit_check_refuses_every_pool_that_cannot_hold_the_model(server, sm):
    spw.create_model(sm, "llm-70b", env={"SPILLWAY_MIN_ACCELERATORS": "1", "SPILLWAY_MIN_ACCELERATOR_MEMORY_GB": "40"})
    spw.create_model(sm, "llm-int4", env={"SPILLWAY_MIN_ACCELERATORS": "1"})
    spw.create_model(sm, "anywhere")
    variant = spw.pooled_variant(
        "llm-70b",
        spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3, "llm-int4")),
        name="Big",
    )
    code, msg, status = spw.error_of(
        sm.create_endpoint_config, EndpointConfigName="too-small", ProductionVariants=[variant]
    )
    spw.assert_validation(code, msg)
    assert status == 400
    assert msg == (
        "The fit check refused 2 instance pools: "
        "production variant Big: instance pool priority 2 (ml.g6.2xlarge) cannot hold model llm-70b: it needs at "
        "least 40 GiB of memory per accelerator device (SPILLWAY_MIN_ACCELERATOR_MEMORY_GB=40); ml.g6.2xlarge has "
        "1 x L4 with 24 GiB each; "
        "production variant Big: instance pool priority 3 (ml.m5.xlarge) cannot hold model llm-int4: it needs at "
        "least 1 accelerator device (SPILLWAY_MIN_ACCELERATORS=1); ml.m5.xlarge has no accelerators. "
        "Remove the pool or change the model's declaration (docs/api-compat.md, \"Fit check\")."
    ), msg
    assert not sm.list_endpoint_configs(NameContains="too-small")["EndpointConfigs"]
    # A single InstanceType is a pool too.
    code, msg, _ = spw.error_of(
        sm.create_endpoint_config, EndpointConfigName="cpu",
        ProductionVariants=[spw.single_variant("llm-int4", "ml.c5.xlarge")],
    )
    spw.assert_validation(code, msg, "InstanceType ml.c5.xlarge cannot hold model llm-int4")
    # Pools that hold it, and models that declare nothing, are accepted.
    ok = spw.pooled_variant("llm-70b", spw.pools(("ml.g6e.2xlarge", 1), ("ml.p4d.24xlarge", 2)), name="Big")
    sm.create_endpoint_config(EndpointConfigName="fits", ProductionVariants=[ok])
    sm.create_endpoint_config(EndpointConfigName="any", ProductionVariants=[spw.single_variant("anywhere")])


@pytest.mark.parametrize(
    "key,value",
    [
        ("SPILLWAY_MIN_ACCELERATORS", "0"),
        ("SPILLWAY_MIN_ACCELERATORS", "two"),
        ("SPILLWAY_MIN_ACCELERATORS", "1.5"),
        ("SPILLWAY_MIN_ACCELERATOR_MEMORY_GB", "-40"),
        ("SPILLWAY_MIN_ACCELERATOR_MEMORY_GB", "40GB"),
        ("SPILLWAY_MIN_ACCELERATOR_MEMORY_GB", "nan"),
    ],
)
def test_a_malformed_fit_declaration_is_refused_naming_the_key(module_server, key, value):
    sm = module_server.sm
    code, msg, _ = spw.error_of(spw.create_model, sm, f"bad-{abs(hash((key, value)))}", env={key: value})
    spw.assert_validation(code, msg, f"PrimaryContainer.Environment {key} must be a positive", repr(value).replace("'", '"'))


# ------------------------------------------------------------------------------------------------
# the cost ceiling
# ------------------------------------------------------------------------------------------------


def test_the_cost_ceiling_makes_the_planner_fall_back_and_says_so_once(start_server):
    # g6e $2.8026/h, g6 $1.222/h, m5.xlarge $0.23/h (the catalog's on-demand prices)
    srv = start_server(capacity={"ml.g6e.2xlarge": 3, "ml.g6.2xlarge": 3}, provisioning={"deadline_override_seconds": 6})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    pools = spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3))
    sm.create_endpoint_config(EndpointConfigName="capped", ProductionVariants=[spw.pooled_variant(ECHO, pools, count=2)])
    sm.create_endpoint(EndpointName="capped", EndpointConfigName="capped",
                       Tags=[{"Key": "spillway:max-hourly-cost", "Value": "3.1"}])
    d = spw.wait_in_service(sm, "capped")
    assert spw.pool_counts(_variant(d)) == [("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 0), ("ml.m5.xlarge", 1)]
    events = _kinds(srv.events("capped"), "CostCeilingReached")
    assert [(e["instanceType"], e["priority"], e["result"]) for e in events] == [
        ("ml.g6e.2xlarge", 1, "Skipped"), ("ml.g6.2xlarge", 2, "Skipped")
    ], events
    assert events[0]["message"] == (
        "ml.g6e.2xlarge costs $2.8026 per hour: the endpoint would go from $2.8026 to $5.6052 per hour, over its "
        "ceiling of $3.1 (spillway:max-hourly-cost); falling back to ml.m5.xlarge (priority 3)"
    ), events[0]
    assert not [e for e in spw.launch_attempts(srv.events("capped")) if e["result"] == "InsufficientCapacity"]

    # Every pool over the ceiling: the variant waits, says why, and the event comes once per type.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="capped",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    d = spw.poll(
        lambda: (lambda d: d if "no instance pool can launch now" in _status_message(d) else None)(
            sm.describe_endpoint(EndpointName="capped")
        ),
        timeout=10,
        what="a VariantStatus naming the ceiling",
    )
    msg = _status_message(d)
    assert "priority 3 ml.m5.xlarge: ml.m5.xlarge costs $0.23 per hour: the endpoint would go from $3.0326 to $3.2626" in msg, msg
    (shortfall,) = spw.poll(lambda: _kinds(srv.events("capped"), "ScaleOutShortfall"), timeout=20,
                            what="the shortfall at the deadline")
    assert "Last answers: priority 1 ml.g6e.2xlarge: ml.g6e.2xlarge costs $2.8026 per hour" in shortfall["message"], shortfall
    later = _kinds(srv.events("capped"), "CostCeilingReached")[2:]
    assert sorted(e["instanceType"] for e in later) == ["ml.g6.2xlarge", "ml.g6e.2xlarge", "ml.m5.xlarge"], later
    assert all(e["message"].endswith("the variant waits") for e in later), later
    assert len(srv.instances("capped")) == 2


def test_an_invalid_cost_ceiling_is_refused_naming_the_tag(server, sm):
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[spw.single_variant(ECHO)])
    for value in ["lots", "0", "-2", "1e3", "1.2.3"]:
        code, msg, _ = spw.error_of(
            sm.create_endpoint, EndpointName="e", EndpointConfigName="c",
            Tags=[{"Key": "spillway:max-hourly-cost", "Value": value}],
        )
        spw.assert_validation(code, msg, "Tags.1.Value: tag spillway:max-hourly-cost", "positive decimal number")
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    arn = sm.describe_endpoint(EndpointName="e")["EndpointArn"]
    code, msg, _ = spw.error_of(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "spillway:max-hourly-cost", "Value": "cheap"}])
    spw.assert_validation(code, msg, "spillway:max-hourly-cost", '"cheap"')
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "spillway:max-hourly-cost", "Value": "12.5"}])
