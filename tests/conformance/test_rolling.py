"""UpdateEndpoint with DeploymentConfig.RollingUpdatePolicy: the new fleet grows batch by batch
through its pools while the old one shrinks, traffic is served throughout, and a batch that
cannot be provisioned rolls the endpoint back to its old fleet at full size."""

from __future__ import annotations

import threading
import time

import spw


def rolling(batch: int, wait: int = 1, kind: str = "INSTANCE_COUNT") -> dict:
    return {"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": kind, "Value": batch}, "WaitIntervalInSeconds": wait}}


def invoke_loop(server, endpoint: str, stop: threading.Event, seen: list, errors: list):
    rt = server.client("sagemaker-runtime", retries=1)
    deadline = time.monotonic() + 90
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            r = rt.invoke_endpoint(EndpointName=endpoint, Body=b"x", ContentType="text/plain")
            seen.append((time.time(), r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"]))
        except Exception as e:  # noqa: BLE001 - asserted on
            errors.append(repr(e))
        time.sleep(0.02)


def test_rolling_update_moves_batch_by_batch_and_keeps_serving(start_server):
    server = start_server()
    sm = server.sm
    spw.create_model(sm, "m")
    spw.deploy(sm, "roll", [spw.single_variant("m", "ml.m5.xlarge", count=3)], config="roll-a")
    spw.wait_in_service(sm, "roll")
    old_ids = {i["instanceId"] for i in server.instances("roll")}
    sm.create_endpoint_config(
        EndpointConfigName="roll-b",
        ProductionVariants=[spw.pooled_variant("m", spw.pools(("ml.g5.xlarge", 1), ("ml.c5.xlarge", 2)), count=3)],
    )
    stop, seen, errors = threading.Event(), [], []
    t = threading.Thread(target=invoke_loop, args=(server, "roll", stop, seen, errors), daemon=True)
    t.start()
    try:
        sm.update_endpoint(EndpointName="roll", EndpointConfigName="roll-b", DeploymentConfig=rolling(batch=1, wait=1))
        during = spw.describe(sm, "roll")
        assert during["EndpointStatus"] == "Updating"
        assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "roll-b"
        # Mid-way, both fleets serve: never more than one batch of surge over the desired count.
        max_total = 0

        def done():
            nonlocal max_total
            live = [i for i in server.instances("roll") if i["state"] != "Terminating"]
            max_total = max(max_total, len(live))
            return spw.describe(sm, "roll")["EndpointStatus"] == "InService"

        spw.poll(done, timeout=90, interval=0.1, what="rolling update to finish")
    finally:
        stop.set()
        t.join(timeout=30)
    assert errors == [], errors[:3]
    assert max_total <= 4, f"{max_total} instances at once; batch size 1 allows 3 + 1"
    d = spw.describe(sm, "roll")
    assert d["EndpointConfigName"] == "roll-b"
    assert spw.pool_counts(d["ProductionVariants"][0]) == [("ml.g5.xlarge", 0), ("ml.c5.xlarge", 3)]
    final = server.instances("roll")
    assert not old_ids & {i["instanceId"] for i in final}
    kinds = [e["kind"] for e in server.events("roll")]
    assert kinds.count("RollingBatch") == 2, kinds  # batches 2 and 3 after the first
    # While rolling (before the deployment completed), the old and the new hardware both served.
    completed = next(e["time"] for e in server.events("roll") if e["kind"] == "DeploymentComplete")
    types_before = {ty for t, ty in seen if t < completed}
    assert types_before == {"ml.m5.xlarge", "ml.c5.xlarge"}, types_before


def test_rolling_update_that_cannot_get_capacity_rolls_back_to_the_full_old_fleet(start_server):
    server = start_server(capacity={"ml.c5.xlarge": 1}, provisioning={"deadline_override_seconds": 2})
    sm = server.sm
    spw.create_model(sm, "m")
    spw.deploy(sm, "rb", [spw.single_variant("m", "ml.m5.xlarge", count=2)], config="rb-a")
    spw.wait_in_service(sm, "rb")
    sm.create_endpoint_config(
        EndpointConfigName="rb-b",
        ProductionVariants=[spw.pooled_variant("m", spw.pools(("ml.g5.xlarge", 1), ("ml.c5.xlarge", 2)), count=2)],
    )
    sm.update_endpoint(EndpointName="rb", EndpointConfigName="rb-b", DeploymentConfig=rolling(batch=50, wait=0, kind="CAPACITY_PERCENT"))
    spw.poll(
        lambda: (d := spw.describe(sm, "rb"))["EndpointStatus"] == "InService" and "FailureReason" in d,
        timeout=60,
        what="rollback",
    )
    d = spw.describe(sm, "rb")
    assert d["EndpointConfigName"] == "rb-a"
    assert "rolled back" in d["FailureReason"] and "ml.c5.xlarge" in d["FailureReason"]
    v = d["ProductionVariants"][0]
    assert v["DesiredInstanceCount"] == 2
    spw.poll(
        lambda: spw.describe(sm, "rb")["ProductionVariants"][0]["CurrentInstanceCount"] == 2,
        timeout=30,
        what="old fleet back at full size",
    )
    live = [i for i in server.instances("rb") if i["state"] != "Terminating"]
    assert {i["instanceType"] for i in live} == {"ml.m5.xlarge"}
    assert "UpdateRolledBack" in [e["kind"] for e in server.events("rb")]


def test_rolling_policy_is_validated(start_server):
    server = start_server()
    sm = server.sm
    spw.create_model(sm, "m")
    spw.deploy(sm, "rv", [spw.single_variant("m", "ml.m5.xlarge", count=1)], config="rv-a")
    spw.wait_in_service(sm, "rv")
    sm.create_endpoint_config(EndpointConfigName="rv-b", ProductionVariants=[spw.single_variant("m", "ml.c5.xlarge", name="Other")])
    sm.create_endpoint_config(EndpointConfigName="rv-c", ProductionVariants=[spw.single_variant("m", "ml.c5.xlarge")])
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="rv", EndpointConfigName="rv-b", DeploymentConfig=rolling(1))
    assert code == "ValidationException" and "RollingUpdatePolicy" in msg and "variant names" in msg
    bad = {"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 150}, "WaitIntervalInSeconds": 0}}
    code, msg, _ = spw.error_of(sm.update_endpoint, EndpointName="rv", EndpointConfigName="rv-c", DeploymentConfig=bad)
    assert code == "ValidationException" and "MaximumBatchSize.Value" in msg
    # Nothing changed.
    d = spw.describe(sm, "rv")
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "rv-a"
