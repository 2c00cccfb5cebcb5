"""Inference components on a Slurm-backed spillway (docs/inference-components.md, "Copies on
providers"): an instance is a Slurm allocation, each copy a job step inside it. Checked against
the cluster (squeue) as well as the API."""

import time

from conftest import blocker, job_state, slurm, spillway_jobs

import spw

# The catalog's device counts match the jobs' GPUs: 8 H100 on the h100 node, 4 A10G-class devices
# on an a100 node (the suite's default mapping gives ml.p4d.24xlarge, 8 devices in the catalog,
# only 4, so copies would be placed on devices its job does not have).
P5, G4 = "ml.p5.48xlarge", "ml.g5.12xlarge"
TYPES = {"provider": {"slurm": {"instance_types": {G4: {"partition": "a100x4", "gres": "gpu:a100:4"}}}}}


def _spec(itype, build, devices):
    return {
        "InstanceType": itype,
        "Container": {"Image": "builtin:echo", "Environment": {"MODEL_BUILD": build}},
        "ComputeResourceRequirements": {
            "NumberOfAcceleratorDevicesRequired": devices,
            "NumberOfCpuCoresRequired": 1,
            "MinMemoryRequiredInMb": 256,
        },
    }


def _placement(sm, name):
    d = sm.describe_inference_component(InferenceComponentName=name)
    return d["InferenceComponentStatus"], {
        p["InstanceType"]: p["CurrentCopyCount"] for p in d["RuntimeConfig"].get("PlacementStatus", [])
    }


def _wait(sm, name, placement, timeout=90):
    return spw.poll(
        lambda: _placement(sm, name) == ("InService", placement) or None,
        timeout=timeout,
        interval=0.3,
        what=f"{name} InService with {placement}",
    )


def _hosts(sm, endpoint):
    (v,) = sm.describe_endpoint(EndpointName=endpoint)["ProductionVariants"]
    return {p["InstanceType"]: p["CurrentInstanceCount"] for p in v["InstancePools"] if p["CurrentInstanceCount"]}


def test_copies_are_steps_of_the_instances_allocation_and_fall_back(start_server):
    srv = start_server(config=TYPES)
    sm, rt = srv.sm, srv.rt
    other = blocker("h100x8", "gpu:h100:1")  # the preferred type has no capacity
    try:
        sm.create_endpoint_config(
            EndpointConfigName="ic-cfg",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/spillway",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "InitialInstanceCount": 1,
                    "InstancePools": spw.pools((P5, 1), (G4, 2)),
                    "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 3},
                    "VariantInstanceProvisionTimeoutInSeconds": 600,
                }
            ],
        )
        sm.create_endpoint(EndpointName="ic", EndpointConfigName="ic-cfg")
        spw.wait_in_service(sm, "ic", timeout=60)
        assert _hosts(sm, "ic") == {G4: 1}
        sm.create_inference_component(
            InferenceComponentName="llm",
            EndpointName="ic",
            Specifications=[_spec(P5, "tp8", 8), _spec(G4, "tp4", 4)],
            RuntimeConfig={"CopyCount": 2},
        )
        # One TP4 copy fills an a100 node: the second needs another instance, from G4 again.
        _wait(sm, "llm", {G4: 2})
        assert _hosts(sm, "ic") == {G4: 2}
        jobs = spillway_jobs(srv.data_dir)
        seen = {}
        for _ in range(12):
            payload, _, _ = spw.invoke(rt, "ic", InferenceComponentName="llm")
            env = payload["env"]
            assert env["MODEL_BUILD"] == "tp4" and env["SPILLWAY_INFERENCE_COMPONENT"] == "llm"
            assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
            # The copy runs inside its instance's allocation.
            host = env["SPILLWAY_HOST_INSTANCE_ID"]
            assert env["SLURM_JOB_ID"] == jobs[host]["id"], (env, jobs)
            seen[payload["instanceId"]] = host
        assert len(set(seen.values())) == 2, "both copies, on two instances, served"
        steps = slurm("squeue", "-h", "-s", "-o", "%i %j")
        for host in set(seen.values()):
            assert any(line.startswith(jobs[host]["id"] + ".") for line in steps.splitlines()), steps

        # Capacity comes back on the preferred type; copies scaled out go there first, and
        # scaling in removes fallback copies, then their idle instances.
        slurm("scancel", other)
        spw.poll(lambda: job_state(other) in ("", "CANCELLED", "COMPLETED") or None, timeout=30, what="blocker gone")
        sm.update_inference_component_runtime_config(InferenceComponentName="llm", DesiredRuntimeConfig={"CopyCount": 3})
        _wait(sm, "llm", {G4: 2, P5: 1}, timeout=120)
        payloads = [spw.invoke(rt, "ic", InferenceComponentName="llm")[0]["env"] for _ in range(12)]
        assert {"tp8", "tp4"} <= {e["MODEL_BUILD"] for e in payloads}
        assert any(e["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" for e in payloads if e["MODEL_BUILD"] == "tp8")
        sm.update_inference_component_runtime_config(InferenceComponentName="llm", DesiredRuntimeConfig={"CopyCount": 1})
        _wait(sm, "llm", {P5: 1}, timeout=120)
        spw.poll(lambda: _hosts(sm, "ic") == {P5: 1} or None, timeout=90, what="fleet back on the preferred type")
        spw.poll(lambda: len(spillway_jobs(srv.data_dir)) == 1 or None, timeout=60, what="one allocation left")

        sm.delete_inference_component(InferenceComponentName="llm")
        spw.poll(lambda: not sm.list_inference_components()["InferenceComponents"], timeout=60, what="deleted")
        # No copy process is left (the cluster's nodes run on this host).
        spw.poll(
            lambda: not [e for e in spw.model_processes(srv.data_dir).values() if e.get("SPILLWAY_INFERENCE_COMPONENT")]
            or None,
            timeout=30,
            what="copy processes gone",
        )
    finally:
        slurm("scancel", other, check=False)
