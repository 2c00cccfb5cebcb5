"""End to end on a real Slurm cluster: boto3 against a spillway whose instances are Slurm jobs.

Every test checks the cluster itself (squeue) as well as the API: spillway's jobs are exactly the
instances DescribeEndpoint counts, and other jobs are never touched."""

import collections
import os
import signal
import time

from conftest import blocker, job_state, slurm, spillway_jobs

import spw

A, B = "model-a", "model-b"


def _variant(d, name="AllTraffic"):
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == name]
    return v


def _attempts(srv, endpoint):
    return [(e["instanceType"], e["result"], e["message"]) for e in spw.launch_attempts(srv.events(endpoint))]


def _count(sm, endpoint, n, timeout=60):
    def ok():
        d = sm.describe_endpoint(EndpointName=endpoint)
        v = _variant(d)
        return d if d["EndpointStatus"] == "InService" and v["CurrentInstanceCount"] == n else None

    return spw.poll(ok, timeout=timeout, interval=0.2, what=f"{endpoint} InService with {n} instance(s)")


def _matches_cluster(srv, endpoint):
    """squeue shows exactly the instances the API reports, each on the node its type maps to."""
    d = srv.sm.describe_endpoint(EndpointName=endpoint)
    count = sum(v.get("CurrentInstanceCount", 0) for v in d["ProductionVariants"])
    admin = {i["instanceId"]: i for i in srv.instances(endpoint)}
    ours = spillway_jobs(srv.data_dir)
    if set(ours) != set(admin) or len(ours) != count:
        return False
    for iid, row in ours.items():
        if row["state"] != "RUNNING":
            return False
        want = "h100" if admin[iid]["instanceType"] == "ml.p5.48xlarge" else "a100"
        if not row["node"].startswith(want):
            return False
    return ours


def _assert_matches_cluster(srv, endpoint, timeout=30):
    return spw.poll(lambda: _matches_cluster(srv, endpoint), timeout=timeout, what="squeue == DescribeEndpoint")


def test_full_preferred_partition_falls_back_with_model_override(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, A)
    spw.create_model(sm, B, env={"WHICH": "b"})
    other = blocker("h100x8", "gpu:h100:1")  # someone else's job holds part of the h100 node
    try:
        t = time.monotonic()
        spw.deploy(sm, "fallback", [spw.pooled_variant(A, spw.pools(("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 2, B)))])
        d = spw.wait_in_service(sm, "fallback", timeout=60)
        took = time.monotonic() - t
        assert spw.pool_counts(_variant(d)) == [("ml.p5.48xlarge", 0), ("ml.p4d.24xlarge", 1)]
        attempts = _attempts(srv, "fallback")
        assert attempts[0][:2] == ("ml.p5.48xlarge", "InsufficientCapacity")
        assert "Requested nodes are busy" in attempts[0][2], attempts
        assert attempts[1][:2] == ("ml.p4d.24xlarge", "Launched")
        payload, headers, _ = spw.invoke(srv.rt, "fallback")
        assert headers["x-spillway-instance-type"] == "ml.p4d.24xlarge"
        assert payload["modelName"] == B and payload["env"]["WHICH"] == "b"
        assert payload["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
        assert payload["env"]["SLURM_JOB_ID"] in {r["id"] for r in spillway_jobs(srv.data_dir).values()}
        _assert_matches_cluster(srv, "fallback")
        print(f"fallback endpoint InService in {took:.2f}s")
        assert job_state(other) == "RUNNING", "spillway must not touch other jobs"
    finally:
        slurm("scancel", other, check=False)


def test_scale_out_and_in_through_slurm_fallback_first(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, A)
    spw.deploy(sm, "elastic", [spw.pooled_variant(A, spw.pools(("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 2)))])
    d = spw.wait_in_service(sm, "elastic", timeout=60)
    assert spw.pool_counts(_variant(d)) == [("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 0)]
    sm.update_endpoint_weights_and_capacities(
        EndpointName="elastic", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
    )
    d = _count(sm, "elastic", 3)
    assert spw.pool_counts(_variant(d)) == [("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 2)]
    ours = _assert_matches_cluster(srv, "elastic")
    assert sorted(r["node"] for r in ours.values()) == ["a100-1", "a100-2", "h100-1"]
    # The cluster is full now: one more is a shortfall, never a pending job.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="elastic", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}]
    )
    d = _count(sm, "elastic", 1)
    assert spw.pool_counts(_variant(d)) == [("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 0)]
    ours = _assert_matches_cluster(srv, "elastic")
    assert [r["node"] for r in ours.values()] == ["h100-1"]
    # The a100 GPUs went back to the pool.
    spw.poll(
        lambda: slurm("sinfo", "-h", "-N", "-p", "a100x4", "-o", "%T").split() == ["idle", "idle"],
        timeout=15,
        what="a100 nodes idle",
    )
    kinds = collections.Counter(e["kind"] for e in srv.events("elastic"))
    assert kinds["ScaleIn"] == 2 and kinds["InstanceTerminated"] == 2, kinds


def test_drained_node_type_is_skipped(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, A)
    slurm("scontrol", "update", "nodename=h100-1", "state=drain", "reason=spillway-test")
    try:
        spw.deploy(sm, "drained", [spw.pooled_variant(A, spw.pools(("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 2)))])
        d = spw.wait_in_service(sm, "drained", timeout=60)
        assert spw.pool_counts(_variant(d)) == [("ml.p5.48xlarge", 0), ("ml.p4d.24xlarge", 1)]
        first = _attempts(srv, "drained")[0]
        assert first[:2] == ("ml.p5.48xlarge", "InsufficientCapacity")
        assert "Required node not available (down, drained or reserved)" in first[2], first
        _assert_matches_cluster(srv, "drained")
    finally:
        slurm("scontrol", "update", "nodename=h100-1", "state=resume", check=False)


def test_lost_node_and_cancelled_job_are_replaced(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, A)
    spw.deploy(sm, "lossy", [spw.pooled_variant(A, spw.pools(("ml.p4d.24xlarge", 1), ("ml.p5.48xlarge", 2)), count=2)])
    spw.wait_in_service(sm, "lossy", timeout=60)
    before = _assert_matches_cluster(srv, "lossy")
    assert sorted(r["node"] for r in before.values()) == ["a100-1", "a100-2"]
    # A node goes down: Slurm kills its job (NODE_FAIL); spillway replaces the instance.
    (lost,) = [iid for iid, r in before.items() if r["node"] == "a100-1"]
    slurm("scontrol", "update", "nodename=a100-1", "state=down", "reason=spillway-test-node-lost")
    try:

        def replaced():
            ours = _matches_cluster(srv, "lossy")
            return ours if ours and lost not in ours and len(ours) == 2 else None

        after = spw.poll(replaced, timeout=60, what="replacement of the lost node's instance")
    finally:
        slurm("scontrol", "update", "nodename=a100-1", "state=resume", check=False)
    exited = [e for e in srv.events("lossy") if e["kind"] == "InstanceExited" and e["instanceId"] == lost]
    assert exited and "NODE_FAIL" in exited[0]["message"], srv.events("lossy")
    # A job cancelled behind spillway's back is replaced too.
    victim, row = next(iter(after.items()))
    slurm("scancel", row["id"])

    def replaced_again():
        ours = _matches_cluster(srv, "lossy")
        return ours if ours and victim not in ours and len(ours) == 2 else None

    spw.poll(replaced_again, timeout=60, what="replacement of the cancelled job")
    exited = [e for e in srv.events("lossy") if e["kind"] == "InstanceExited" and e["instanceId"] == victim]
    assert exited and "CANCELLED" in exited[0]["message"], exited
    spw.invoke(srv.rt, "lossy")


def test_sigkill_and_restart_adopts_jobs_and_orphans_none(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, A)
    spw.deploy(sm, "durable", [spw.pooled_variant(A, spw.pools(("ml.p5.48xlarge", 1), ("ml.p4d.24xlarge", 2)), count=3)])
    spw.wait_in_service(sm, "durable", timeout=60)
    before = _assert_matches_cluster(srv, "durable")
    srv.sigkill()
    # The jobs outlive spillway.
    assert {k: r["id"] for k, r in spillway_jobs(srv.data_dir).items()} == {k: r["id"] for k, r in before.items()}
    # While it is down: one of its jobs is cancelled behind its back (freeing a100 capacity), a job
    # carrying its marker that it never recorded appears (as if launched just before the kill), and
    # another spillway's job runs on the cluster.
    lost, lost_row = next((k, r) for k, r in before.items() if r["node"].startswith("a100"))
    slurm("scancel", lost_row["id"])
    spw.poll(lambda: job_state(lost_row["id"]) in ("CANCELLED", ""), timeout=15, what="cancelled job released")
    dd = os.path.realpath(srv.data_dir)
    orphan = blocker("a100x4", None, "spillway-i-orphan", f"spillway instance=i-orphan data_dir={dd}")
    foreign = blocker("a100x4", None, "spillway-i-foreign", "spillway instance=i-foreign data_dir=/elsewhere")
    try:
        t = time.monotonic()
        srv.restart()
        sm = srv.sm
        d = _count(sm, "durable", 3, timeout=60)
        print(f"restart -> InService with 3 in {time.monotonic() - t:.2f}s")
        after = _assert_matches_cluster(srv, "durable")
        kept = {k: r["id"] for k, r in before.items() if k != lost}
        assert {k: after[k]["id"] for k in kept} == kept, "surviving jobs are adopted, not relaunched"
        assert lost not in after and len(after) == 3
        assert job_state(orphan) in ("CANCELLED", "COMPLETED", ""), "an untracked job of this spillway is stopped"
        assert job_state(foreign) == "RUNNING", "another spillway's job is left alone"
        assert _variant(d)["CurrentInstanceCount"] == 3
        kinds = collections.Counter(e["kind"] for e in srv.events("durable"))
        assert kinds["InstanceLost"] == 1, kinds
        for _ in range(5):
            spw.invoke(srv.rt, "durable")
    finally:
        slurm("scancel", orphan, foreign, check=False)
    # Graceful stop (fixture) cancels every job; the fixture checks squeue is empty.
    assert srv.terminate() == 0
    spw.poll(lambda: not spillway_jobs(srv.data_dir), timeout=20, what="no job left after a graceful stop")


def test_model_logs_come_back_through_srun(start_server):
    """srun forwards the model's output to spillway's host, where the instance's shim captures it:
    the stream has the model's lines, and a model that dies at start has its last ones quoted."""
    srv = start_server()
    sm, logs = srv.sm, srv.client("logs")
    model = spw.HERE / "models" / "log_model.py"
    spw.create_model(sm, "talker", image=f"{spw.python()} {model} serve")
    spw.deploy(sm, "talk", [spw.single_variant("talker", "ml.p4d.24xlarge")])
    spw.wait_in_service(sm, "talk", timeout=60)
    spw.invoke(srv.rt, "talk", b"through slurm")
    (inst,) = srv.instances("talk")
    stream = f"AllTraffic/{inst['instanceId']}"

    def lines():
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/Endpoints/talk", logStreamName=stream, startFromHead=True)["events"]
        return [e["message"] for e in events]

    spw.poll(lambda: "invoked: through slurm" in lines(), what="the invocation's line through srun")
    assert {"loaded 3 shards", "ready to serve"} <= set(lines())

    spw.create_model(sm, "crasher", image=f"{spw.python()} {model} crash")
    spw.deploy(sm, "crash", [spw.single_variant("crasher", "ml.p4d.24xlarge")])
    d = spw.wait_status(sm, "crash", "Failed", fail_on=("InService",), timeout=60)
    assert "RuntimeError: CUDA out of memory" in d["FailureReason"], d["FailureReason"]
    assert "in log group /aws/sagemaker/Endpoints/crash" in d["FailureReason"]
