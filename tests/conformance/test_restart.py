"""Durability: SIGKILL the server at awkward moments, start it again on the same data dir, and check
that everything converges with no model process left that spillway does not track."""

import collections
import signal

import pytest

import spw

ECHO = "echo-model"


def _variant(d, name="AllTraffic"):
    (v,) = [v for v in d["ProductionVariants"] if v["VariantName"] == name]
    return v


def _tags(sm, arn):
    return sorted((t["Key"], t["Value"]) for t in sm.list_tags(ResourceArn=arn)["Tags"])


def _converged(srv, endpoints: dict[str, int]):
    """True when every endpoint is InService with its count, and the model processes on the host are
    exactly the instances the admin API reports (same ids, same pids, nothing else)."""
    admin = []
    for name, count in endpoints.items():
        d = srv.sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] != "InService":
            return False
        if sum(v.get("CurrentInstanceCount", 0) for v in d["ProductionVariants"]) != count:
            return False
        inst = srv.instances(name)
        if len(inst) != count or any(i["state"] != "InService" for i in inst):
            return False
        admin += inst
    procs = srv.processes()
    if set(procs) != {i["instanceId"] for i in admin}:
        return False
    return all(i["pid"] in procs[i["instanceId"]]["pids"] for i in admin)


def _assert_converged(srv, endpoints, timeout=90):
    def check():
        return _converged(srv, endpoints)

    try:
        spw.poll(check, timeout=timeout, interval=0.3, what="convergence after restart")
    except BaseException:
        procs = {k: (v["pids"], v["type"]) for k, v in srv.processes().items()}
        admin = {n: srv.instances(n) for n in endpoints}
        print(f"processes: {procs}\nadmin: {admin}")
        raise


def test_sigkill_while_in_service_then_restart_keeps_everything(start_server):
    srv = start_server()
    sm = srv.sm
    model_arn = spw.create_model(sm, ECHO, env={"K": "v"}, Tags=[{"Key": "kind", "Value": "model"}])["ModelArn"]
    cfg_arn = sm.create_endpoint_config(
        EndpointConfigName="durable-cfg",
        ProductionVariants=[spw.pooled_variant(ECHO, spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)],
        Tags=[{"Key": "kind", "Value": "config"}],
    )["EndpointConfigArn"]
    ep_arn = sm.create_endpoint(
        EndpointName="durable", EndpointConfigName="durable-cfg", Tags=[{"Key": "kind", "Value": "endpoint"}]
    )["EndpointArn"]
    d0 = spw.wait_in_service(sm, "durable")
    m0 = sm.describe_model(ModelName=ECHO)
    c0 = sm.describe_endpoint_config(EndpointConfigName="durable-cfg")
    _assert_converged(srv, {"durable": 2})

    srv.sigkill()
    srv.restart()
    sm = srv.sm

    m1 = sm.describe_model(ModelName=ECHO)
    assert {k: m1[k] for k in ("ModelName", "ModelArn", "CreationTime", "PrimaryContainer")} == {
        k: m0[k] for k in ("ModelName", "ModelArn", "CreationTime", "PrimaryContainer")
    }
    c1 = sm.describe_endpoint_config(EndpointConfigName="durable-cfg")
    assert c1["ProductionVariants"] == c0["ProductionVariants"] and c1["CreationTime"] == c0["CreationTime"]
    d1 = spw.wait_in_service(sm, "durable")
    assert d1["EndpointArn"] == d0["EndpointArn"] and d1["CreationTime"] == d0["CreationTime"]
    assert _tags(sm, model_arn) == [("kind", "model")]
    assert _tags(sm, cfg_arn) == [("kind", "config")]
    assert _tags(sm, ep_arn) == [("kind", "endpoint")]

    _assert_converged(srv, {"durable": 2})
    d = sm.describe_endpoint(EndpointName="durable")
    assert spw.pool_counts(_variant(d)) == [("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 1)]
    payload, headers, _ = spw.invoke(srv.rt, "durable", body="after the crash")
    assert payload["body"] == "after the crash"
    cap = srv.capacity()
    assert cap["ml.g6.2xlarge"]["inUse"] == 1 and cap["ml.m5.xlarge"]["inUse"] == 1, cap


def test_sigkill_while_creating_then_restart_converges(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, "slow", image=f"{spw.python()} {spw.SLOW_ECHO} 4")
    spw.deploy(
        sm, "slowpoke", [spw.pooled_variant("slow", spw.pools(("ml.g6.2xlarge", 1), ("ml.m5.xlarge", 2)), count=3)]
    )
    spw.poll(lambda: len(srv.processes()) >= 1, what="the first model process")
    assert sm.describe_endpoint(EndpointName="slowpoke")["EndpointStatus"] == "Creating"
    srv.sigkill()
    srv.restart()
    spw.wait_in_service(srv.sm, "slowpoke", timeout=90)
    _assert_converged(srv, {"slowpoke": 3})
    assert collections.Counter(p["type"] for p in srv.processes().values()) == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 2}
    payload, _, _ = spw.invoke(srv.rt, "slowpoke")
    assert payload["server"] == "slow_echo"


def test_sigkill_while_waiting_for_capacity_then_restart_resumes(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 90})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "waiting", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))], config="waiting-cfg")
    spw.poll(lambda: spw.launch_attempts(srv.events("waiting")), what="an ICE")
    srv.sigkill()
    srv.restart()
    d = srv.sm.describe_endpoint(EndpointName="waiting")
    assert d["EndpointStatus"] == "Creating"
    assert d["PendingDeploymentSummary"]["EndpointConfigName"] == "waiting-cfg"
    srv.set_slots("ml.g6e.2xlarge", 1)
    spw.wait_in_service(srv.sm, "waiting", timeout=60)
    _assert_converged(srv, {"waiting": 1})


def test_restart_replaces_an_instance_that_died_while_the_server_was_down(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "healing", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)])
    spw.wait_in_service(sm, "healing")
    _assert_converged(srv, {"healing": 2})
    srv.sigkill()
    victim_id, victim = sorted(srv.processes().items())[0]
    spw.kill_pids(victim["pids"])
    spw.poll(lambda: victim_id not in srv.processes(), what="the victim to die")
    srv.restart()
    _assert_converged(srv, {"healing": 2})
    assert victim_id not in {i["instanceId"] for i in srv.instances("healing")}
    spw.invoke(srv.rt, "healing")


def test_sigterm_stops_every_model_process(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "one", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)])
    spw.deploy(sm, "two", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1), ("ml.c5.xlarge", 2)))])
    spw.wait_in_service(sm, "one")
    spw.wait_in_service(sm, "two")
    assert len(srv.processes()) == 3
    assert srv.terminate() == 0
    spw.poll(lambda: srv.processes() == {}, timeout=10, what="every model process to exit")


def test_graceful_restart_brings_endpoints_back(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "phoenix", [spw.single_variant(ECHO, "ml.m5.xlarge", count=2)])
    spw.wait_in_service(sm, "phoenix")
    srv.signal(signal.SIGTERM)
    srv.proc.wait(timeout=30)
    spw.poll(lambda: srv.processes() == {}, timeout=10, what="every model process to exit")
    srv.restart()
    spw.wait_in_service(srv.sm, "phoenix", timeout=60)
    _assert_converged(srv, {"phoenix": 2})
    spw.invoke(srv.rt, "phoenix")


def test_failed_endpoint_stays_failed_across_a_restart(start_server):
    srv = start_server(provisioning={"deadline_override_seconds": 2})
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "broken", [spw.pooled_variant(ECHO, spw.pools(("ml.g6e.2xlarge", 1)))])
    d0 = spw.wait_status(sm, "broken", "Failed", fail_on=())
    srv.sigkill()
    srv.restart()
    d1 = srv.sm.describe_endpoint(EndpointName="broken")
    assert d1["EndpointStatus"] == "Failed"
    assert d1["FailureReason"] == d0["FailureReason"]
    assert srv.processes() == {}


def test_sigkill_while_updating_then_restart_converges(start_server):
    srv = start_server()
    sm = srv.sm
    spw.create_model(sm, ECHO)
    spw.create_model(sm, "slow", image=f"{spw.python()} {spw.SLOW_ECHO} 4")
    spw.deploy(sm, "moving", [spw.single_variant(ECHO, "ml.c5.xlarge", count=2)], config="moving-v1")
    spw.wait_in_service(sm, "moving")
    sm.create_endpoint_config(
        EndpointConfigName="moving-v2",
        ProductionVariants=[spw.pooled_variant("slow", spw.pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2)), count=2)],
    )
    sm.update_endpoint(EndpointName="moving", EndpointConfigName="moving-v2")
    spw.poll(lambda: any(p["type"] == "ml.m5.xlarge" for p in srv.processes().values()), what="a green instance")
    assert sm.describe_endpoint(EndpointName="moving")["EndpointStatus"] == "Updating"
    srv.sigkill()
    srv.restart()
    d = spw.wait_in_service(srv.sm, "moving", timeout=90)
    _assert_converged(srv, {"moving": 2})
    d = srv.sm.describe_endpoint(EndpointName="moving")
    expected = {"moving-v1": "ml.c5.xlarge", "moving-v2": "ml.m5.xlarge"}[d["EndpointConfigName"]]
    assert {p["type"] for p in srv.processes().values()} == {expected}, "the fleet matches the reported config"
    _, headers, _ = spw.invoke(srv.rt, "moving")
    assert headers["x-spillway-instance-type"] == expected


def test_a_second_server_on_the_same_data_dir_refuses_to_start(start_server):
    """Two servers on one data directory would both manage its instances: the second one exits
    at once, naming the first one's pid; after the first stops (even by SIGKILL), it starts."""
    first = start_server()
    spw.create_model(first.sm, "lock")
    spw.deploy(first.sm, "lock", [spw.single_variant("lock")])
    spw.wait_in_service(first.sm, "lock")
    second = spw.Server(first.workdir, first.config, name="second")
    with pytest.raises(pytest.fail.Exception):
        second.start(timeout=15)
    message = second.log_paths[-1].read_text()
    assert "another spillway" in message and str(first.proc.pid) in message, message
    assert len(first.instances("lock")) == 1
    first.sigkill()
    second.start()
    try:
        spw.wait_in_service(second.sm, "lock")
    finally:
        assert second.shutdown_and_check() == []
