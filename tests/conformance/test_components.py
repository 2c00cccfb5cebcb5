"""Inference components on pooled endpoints (docs/inference-components.md), driven with boto3 and
the aws CLI as users do: per-type specifications, placement per instance type, managed instance
scaling through the pools (fallback on insufficient capacity and back), routing by
InferenceComponentName, the fit check, updates with rollback, and a SIGKILL mid-placement.

The GPU types here are pinned (spw.start_server(capacity=...)), so they run on this CPU-only host
as simulated instances: each has its type's accelerator count as logical devices 0..N-1, and a
copy's CUDA_VISIBLE_DEVICES is a subset of them."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

import pytest

import spw

# 8 accelerators, 4, 4; the preferred type has no capacity.
P1, P2, P3 = "ml.p4d.24xlarge", "ml.g5.12xlarge", "ml.g6.12xlarge"
CAPACITY = {P1: 0, P2: 1, P3: 2}


def _ic_endpoint(sm, name, count=1, min_count=1, max_count=4, managed=True):
    variant = {
        "VariantName": "AllTraffic",
        "InitialInstanceCount": count,
        "InstancePools": spw.pools((P1, 1), (P2, 2), (P3, 3)),
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
        "VariantInstanceProvisionTimeoutInSeconds": 600,
    }
    if managed:
        variant["ManagedInstanceScaling"] = {
            "Status": "ENABLED",
            "MinInstanceCount": min_count,
            "MaxInstanceCount": max_count,
        }
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-cfg",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/spillway",
        ProductionVariants=[variant],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    return spw.wait_in_service(sm, name, timeout=90)


def _spec(itype, build, accel, image_env=None, cpus=2, mem=4096):
    env = {"MODEL_BUILD": build}
    env.update(image_env or {})
    return {
        "InstanceType": itype,
        "Container": {"Image": "builtin:echo", "Environment": env},
        "ComputeResourceRequirements": {
            "NumberOfAcceleratorDevicesRequired": accel,
            "NumberOfCpuCoresRequired": cpus,
            "MinMemoryRequiredInMb": mem,
        },
    }


def _llm_specs():
    # The TP8 build on the 8-device type, TP4 builds on the 4-device types.
    return [_spec(P1, "llm-tp8", 8), _spec(P2, "llm-tp4-a10g", 4), _spec(P3, "llm-tp4-l4", 4)]


def _small_specs():
    return [_spec(P1, "small-p4d", 1), _spec(P2, "small-a10g", 1), _spec(P3, "small-l4", 1)]


def _describe(sm, name):
    return sm.describe_inference_component(InferenceComponentName=name)


def _placement(d):
    return {p["InstanceType"]: p["CurrentCopyCount"] for p in d["RuntimeConfig"].get("PlacementStatus", [])}


def _wait_component(sm, name, copies, status="InService", timeout=90, placement=None):
    def ok():
        d = _describe(sm, name)
        assert d["InferenceComponentStatus"] != "Failed", d.get("FailureReason")
        rc = d["RuntimeConfig"]
        done = d["InferenceComponentStatus"] == status and rc["CurrentCopyCount"] == copies
        if placement is not None:
            done = done and _placement(d) == placement
        return d if done else None

    return spw.poll(ok, timeout=timeout, what=f"{name} {status} with {copies} copies {placement or ''}")


def _pools(sm, endpoint):
    (v,) = spw.describe(sm, endpoint)["ProductionVariants"]
    return {p["InstanceType"]: p["CurrentInstanceCount"] for p in v.get("InstancePools", []) if p["CurrentInstanceCount"]}


def _wait_pools(sm, endpoint, want, timeout=90):
    return spw.poll(lambda: _pools(sm, endpoint) == want or None, timeout=timeout, what=f"fleet {want}")


def _invoke(rt, endpoint, component, body="hi"):
    payload, headers, _ = spw.invoke(rt, endpoint, body=body, InferenceComponentName=component)
    return payload


def _copy_processes(server):
    """Model processes of inference-component copies, by copy id: their environment."""
    return {
        env["SPILLWAY_INSTANCE_ID"]: env
        for env in spw.model_processes(server.data_dir).values()
        if env.get("SPILLWAY_INFERENCE_COMPONENT")
    }


def test_per_type_builds_fall_back_scale_and_return(start_server):
    """The walk-through of docs/inference-components.md: two components with a build per type on
    three pools whose preferred type has no capacity; copies scale up until managed instance
    scaling falls back to the third pool, and down until the fleet is back on the second."""
    server = start_server(capacity=CAPACITY)
    sm, rt = server.sm, server.rt
    _ic_endpoint(sm, "ic", count=1, min_count=1, max_count=4)
    assert _pools(sm, "ic") == {P2: 1}, "P1 has no capacity: the first instance falls back to P2"

    sm.create_inference_component(
        InferenceComponentName="llm",
        EndpointName="ic",
        VariantName="AllTraffic",
        Specifications=_llm_specs(),
        RuntimeConfig={"CopyCount": 1},
    )
    d = _wait_component(sm, "llm", 1, placement={P2: 1})
    assert [s["InstanceType"] for s in d["Specifications"]] == [P1, P2, P3]
    assert "Specification" not in d
    assert d["Specifications"][1]["Container"]["Environment"]["MODEL_BUILD"] == "llm-tp4-a10g"

    # The llm copy fills the P2 instance's 4 devices: two small copies need another instance,
    # which P2 (1 slot) cannot give, so managed instance scaling falls back to P3.
    sm.create_inference_component(
        InferenceComponentName="small",
        EndpointName="ic",
        Specifications=_small_specs(),
        RuntimeConfig={"CopyCount": 2},
    )
    _wait_component(sm, "small", 2, placement={P3: 2})
    assert _pools(sm, "ic") == {P2: 1, P3: 1}

    # Each invocation reaches only its component's copies, each running its type's build with its
    # own devices.
    seen = collections.defaultdict(set)
    for i in range(12):
        for comp in ("llm", "small"):
            p = _invoke(rt, "ic", comp, body=f"{comp}-{i}")
            env = p["env"]
            assert env["SPILLWAY_INFERENCE_COMPONENT"] == comp
            seen[comp].add((env["MODEL_BUILD"], env["CUDA_VISIBLE_DEVICES"], p["instanceId"]))
    assert {b for b, _, _ in seen["llm"]} == {"llm-tp4-a10g"}
    assert {d for _, d, _ in seen["llm"]} == {"0,1,2,3"}
    assert {b for b, _, _ in seen["small"]} == {"small-l4"}
    small_devices = {d for _, d, _ in seen["small"]}
    assert len(small_devices) == 2 and all(len(d.split(",")) == 1 for d in small_devices), small_devices

    # Scale llm up: a second TP4 copy needs a whole 4-device instance; P3 gives its second slot.
    sm.update_inference_component_runtime_config(InferenceComponentName="llm", DesiredRuntimeConfig={"CopyCount": 2})
    _wait_component(sm, "llm", 2, placement={P2: 1, P3: 1})
    _wait_pools(sm, "ic", {P2: 1, P3: 2})
    events = server.events("ic")
    assert any(e["kind"] == "ManagedScaleOut" for e in events)
    ice = [e for e in spw.launch_attempts(events) if e["result"] == "InsufficientCapacity"]
    assert {e["instanceType"] for e in ice} >= {P1, P2}, "the fallback is in the event history"

    # Down again: the fallback copy goes first, then its idle instance.
    sm.update_inference_component_runtime_config(InferenceComponentName="llm", DesiredRuntimeConfig={"CopyCount": 1})
    _wait_component(sm, "llm", 1, placement={P2: 1})
    sm.update_inference_component_runtime_config(InferenceComponentName="small", DesiredRuntimeConfig={"CopyCount": 0})
    _wait_component(sm, "small", 0)
    _wait_pools(sm, "ic", {P2: 1})
    assert any(e["kind"] == "ManagedScaleIn" for e in server.events("ic"))
    # Every model process left is a copy Describe counts or a host: nothing orphaned.
    copies = _copy_processes(server)
    assert sorted(e["SPILLWAY_INFERENCE_COMPONENT"] for e in copies.values()) == ["llm"]

    listed = sm.list_inference_components(EndpointNameEquals="ic", SortBy="Name", SortOrder="Ascending")
    assert [c["InferenceComponentName"] for c in listed["InferenceComponents"]] == ["llm", "small"]

    for comp in ("llm", "small"):
        sm.delete_inference_component(InferenceComponentName=comp)
    spw.poll(
        lambda: not sm.list_inference_components(EndpointNameEquals="ic")["InferenceComponents"],
        timeout=60,
        what="components deleted",
    )
    spw.poll(lambda: not _copy_processes(server), timeout=30, what="copies stopped")


def test_singular_specification_and_the_fit_check(start_server):
    server = start_server(capacity=CAPACITY)
    sm = server.sm
    _ic_endpoint(sm, "fit", count=1)
    too_big = {
        "Container": {"Image": "builtin:echo"},
        "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 16, "MinMemoryRequiredInMb": 1024},
    }
    code, msg, status = spw.error_of(
        sm.create_inference_component,
        InferenceComponentName="huge",
        EndpointName="fit",
        Specification=too_big,
        RuntimeConfig={"CopyCount": 1},
    )
    assert (code, status) == ("ValidationException", 400)
    for t in (P1, P2, P3):
        assert t in msg, msg
    assert "16" in msg and "8" in msg, msg

    # The singular form runs the same model everywhere and is described singular.
    sm.create_inference_component(
        InferenceComponentName="one",
        EndpointName="fit",
        Specification={
            "Container": {"Image": "builtin:echo", "Environment": {"MODEL_BUILD": "same"}},
            "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 2, "MinMemoryRequiredInMb": 1024},
        },
        RuntimeConfig={"CopyCount": 2},
    )
    d = _wait_component(sm, "one", 2, placement={P2: 2})
    assert "Specifications" not in d and "InstanceType" not in d["Specification"]
    devices = set()
    for _ in range(8):
        p = _invoke(server.rt, "fit", "one")
        devices.add(p["env"]["CUDA_VISIBLE_DEVICES"])
    assert devices == {"0,1", "2,3"}, "two copies share the 4 devices without overlap"

    # Refusals name the field and the rule.
    code, msg, _ = spw.error_of(
        sm.create_inference_component,
        InferenceComponentName="both",
        EndpointName="fit",
        Specification=too_big,
        Specifications=_llm_specs(),
        RuntimeConfig={"CopyCount": 1},
    )
    assert code == "ValidationException" and "Specification" in msg
    code, msg, _ = spw.error_of(
        sm.create_inference_component,
        InferenceComponentName="typed",
        EndpointName="fit",
        Specification=_spec(P2, "x", 1),
        RuntimeConfig={"CopyCount": 1},
    )
    assert code == "ValidationException" and "InstanceType" in msg
    code, msg, _ = spw.error_of(
        sm.create_inference_component,
        InferenceComponentName="elsewhere",
        EndpointName="fit",
        Specifications=[_spec("ml.g5.48xlarge", "x", 1)],
        RuntimeConfig={"CopyCount": 1},
    )
    assert code == "ValidationException" and "ml.g5.48xlarge" in msg
    code, msg, _ = spw.error_of(sm.describe_inference_component, InferenceComponentName="nope")
    assert code == "ValidationException" and "Could not find inference component" in msg
    code, msg, _ = spw.error_of(sm.delete_endpoint, EndpointName="fit")
    assert code == "ValidationException" and "one" in msg, "an endpoint with components is not deleted"

    # Invocations must name a component, and a known one.
    code, msg, status = spw.error_of(server.rt.invoke_endpoint, EndpointName="fit", Body=b"x", ContentType="text/plain")
    assert status == 400 and "Inference Component Name header is required" in msg, msg
    code, msg, status = spw.error_of(
        server.rt.invoke_endpoint, EndpointName="fit", Body=b"x", ContentType="text/plain", InferenceComponentName="nope"
    )
    assert status in (400, 404) and "nope" in msg, msg


def test_update_rolls_out_and_rolls_back(start_server):
    # A copy that never passes /ping fails after 5 s instead of its startup window.
    server = start_server(capacity=CAPACITY, provisioning={"health_check_timeout_override_seconds": 5})
    sm, rt = server.sm, server.rt
    _ic_endpoint(sm, "upd", count=1, max_count=2)
    spec = {
        "Container": {"Image": "builtin:echo", "Environment": {"MODEL_BUILD": "v1"}},
        "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 1024},
    }
    sm.create_inference_component(
        InferenceComponentName="svc", EndpointName="upd", Specification=spec, RuntimeConfig={"CopyCount": 2}
    )
    _wait_component(sm, "svc", 2)
    rolling = {"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1}, "WaitIntervalInSeconds": 0}}
    v2 = json.loads(json.dumps(spec))
    v2["Container"]["Environment"]["MODEL_BUILD"] = "v2"
    sm.update_inference_component(InferenceComponentName="svc", Specification=v2, DeploymentConfig=rolling)
    assert _describe(sm, "svc")["InferenceComponentStatus"] == "Updating"
    d = _wait_component(sm, "svc", 2)
    assert d["Specification"]["Container"]["Environment"]["MODEL_BUILD"] == "v2"
    assert d["LastDeploymentConfig"]["RollingUpdatePolicy"]["MaximumBatchSize"]["Value"] == 1
    assert {_invoke(rt, "upd", "svc")["env"]["MODEL_BUILD"] for _ in range(6)} == {"v2"}

    # A build that never passes its health check rolls back to v2, which kept serving.
    bad = json.loads(json.dumps(v2))
    bad["Container"]["Environment"].update({"MODEL_BUILD": "v3", "ECHO_PING_STATUS": "500"})
    bad["StartupParameters"] = {"ContainerStartupHealthCheckTimeoutInSeconds": 60}
    sm.update_inference_component(InferenceComponentName="svc", Specification=bad, DeploymentConfig=rolling)
    served = []

    def rolled_back():
        # The old version serves throughout the failing rollout.
        served.append(_invoke(rt, "upd", "svc")["env"]["MODEL_BUILD"])
        return "rolled back" in (_describe(sm, "svc").get("FailureReason") or "").lower() or None

    spw.poll(rolled_back, timeout=120, interval=0.5, what="rollback")
    assert set(served) == {"v2"} and len(served) > 5, served
    d = _wait_component(sm, "svc", 2)
    assert d["Specification"]["Container"]["Environment"]["MODEL_BUILD"] == "v2"
    assert {_invoke(rt, "upd", "svc")["env"]["MODEL_BUILD"] for _ in range(6)} == {"v2"}


def test_sigkill_mid_placement_converges_without_orphans(start_server):
    server = start_server(capacity=CAPACITY)
    sm = server.sm
    _ic_endpoint(sm, "crash", count=1, max_count=3)
    sm.create_inference_component(
        InferenceComponentName="slow",
        EndpointName="crash",
        Specifications=[
            _spec(t, f"slow-{t}", 1, image_env={"ECHO_STARTUP_DELAY_MS": "1500"}) for t in (P1, P2, P3)
        ],
        RuntimeConfig={"CopyCount": 6},
    )
    # Kill spillway while copies are being placed and started.
    spw.poll(lambda: len(_copy_processes(server)) >= 2 or None, timeout=60, what="copies starting")
    server.sigkill()
    server.restart()
    sm = server.sm  # the restarted server listens on a new port
    d = _wait_component(sm, "slow", 6, timeout=120)
    assert sum(_placement(d).values()) == 6
    # Exactly the copies Describe counts run, each once, each on a live instance: no orphan.
    def settled():
        procs = _copy_processes(server)
        return procs if len(procs) == 6 else None

    procs = spw.poll(settled, timeout=30, what="exactly 6 copy processes")
    hosts = {i["instanceId"] for i in server.instances("crash")}
    assert {e["SPILLWAY_HOST_INSTANCE_ID"] for e in procs.values()} <= hosts
    kinds = [e["kind"] for e in server.events("crash")]
    assert "ServerStarted" in kinds


def test_aws_cli_lists_and_describes(start_server):
    server = start_server(capacity=CAPACITY)
    sm = server.sm
    _ic_endpoint(sm, "cli", count=1)
    sm.create_inference_component(
        InferenceComponentName="c1",
        EndpointName="cli",
        Specifications=_small_specs(),
        RuntimeConfig={"CopyCount": 1},
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    _wait_component(sm, "c1", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(spw.cli_environment(server))
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    out = subprocess.run(
        [aws, "sagemaker", "describe-inference-component", "--inference-component-name", "c1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    d = json.loads(out.stdout)
    assert d["RuntimeConfig"]["PlacementStatus"] == [{"InstanceType": P2, "CurrentCopyCount": 1}]
    out = subprocess.run(
        [aws, "sagemaker", "list-inference-components", "--status-equals", "InService"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [c["InferenceComponentName"] for c in json.loads(out.stdout)["InferenceComponents"]] == ["c1"]
    arn = d["InferenceComponentArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.delete_inference_component(InferenceComponentName="c1")
    spw.poll(lambda: not sm.list_inference_components()["InferenceComponents"], timeout=60, what="deleted")
    time.sleep(0.5)
    code, _, _ = spw.error_of(sm.describe_inference_component, InferenceComponentName="c1")
    assert code == "ValidationException"
