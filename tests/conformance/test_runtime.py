"""InvokeEndpoint: body, headers, errors, TargetVariant, variant weights, and what an instance sees."""

import io
import json
import os
import tarfile

import pytest
from botocore.exceptions import ClientError

import spw

ECHO = "echo-model"


def test_invoke_returns_the_model_body_and_variant_headers(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "inv", [spw.single_variant(ECHO, "ml.m5.xlarge")])
    spw.wait_in_service(sm, "inv")
    payload, headers, resp = spw.invoke(server.rt, "inv", body="hello spillway", content_type="text/plain")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert payload["body"] == "hello spillway"
    assert payload["contentType"] == "text/plain"
    assert payload["modelName"] == ECHO
    assert payload["instanceType"] == "ml.m5.xlarge"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert headers["x-spillway-instance-type"] == "ml.m5.xlarge"
    assert payload["instanceId"] in {i["instanceId"] for i in server.instances("inv")}


def test_invoke_round_trips_json_and_a_large_body(server, sm):
    spw.create_model(sm, ECHO)
    spw.deploy(sm, "big", [spw.single_variant(ECHO, "ml.m5.xlarge")])
    spw.wait_in_service(sm, "big")
    doc = json.dumps({"inputs": "What is an instance pool?", "parameters": {"max_new_tokens": 8}})
    payload, _, _ = spw.invoke(server.rt, "big", body=doc, content_type="application/json", Accept="application/json")
    assert json.loads(payload["body"]) == json.loads(doc)
    assert payload["contentType"] == "application/json"
    large = ("0123456789abcdef" * 4096) * 32  # 2 MiB
    payload, _, _ = spw.invoke(server.rt, "big", body=large)
    assert len(payload["body"]) == len(large) and payload["body"] == large


def test_invoke_unknown_endpoint_is_a_validation_error(server):
    code, msg, status = spw.error_of(server.rt.invoke_endpoint, EndpointName="nowhere", Body=b"x")
    assert (code, status) == ("ValidationError", 400)
    assert msg == "Endpoint nowhere of account 123456789012 not found."


def test_instance_environment_follows_the_container_contract(server, sm, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "weights.txt").write_text("w=42")
    spw.create_model(sm, "env-model", env={"HF_TASK": "text-generation"}, ModelDataUrl=f"file://{weights}")
    spw.deploy(sm, "env", [spw.single_variant("env-model", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "env")
    payload, _, _ = spw.invoke(server.rt, "env")
    env = payload["env"]
    (inst,) = server.instances("env")
    assert env["SAGEMAKER_BIND_TO_PORT"] == str(inst["port"])
    assert env["SPILLWAY_INSTANCE_ID"] == inst["instanceId"] == payload["instanceId"]
    assert env["SPILLWAY_INSTANCE_TYPE"] == "ml.m5.xlarge"
    assert env["SPILLWAY_MODEL_NAME"] == "env-model"
    assert "CUDA_VISIBLE_DEVICES" in env
    assert env["HF_TASK"] == "text-generation"
    assert os.path.realpath(env["SPILLWAY_DATA_DIR"]) == os.path.realpath(server.data_dir)
    assert (open(os.path.join(env["SM_MODEL_DIR"], "weights.txt")).read()) == "w=42"
    assert inst["pid"] in server.processes()[inst["instanceId"]]["pids"]


def test_model_data_tarball_is_unpacked_into_sm_model_dir(server, sm, tmp_path):
    tar_path = tmp_path / "model.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for name, data in {"config.json": b'{"layers": 2}', "tokenizer/vocab.txt": b"a\nb\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    spw.create_model(sm, "tar-model", ModelDataUrl=f"file://{tar_path}")
    spw.deploy(sm, "tar", [spw.single_variant("tar-model", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "tar")
    payload, _, _ = spw.invoke(server.rt, "tar")
    model_dir = payload["env"]["SM_MODEL_DIR"]
    assert open(os.path.join(model_dir, "config.json")).read() == '{"layers": 2}'
    assert open(os.path.join(model_dir, "tokenizer", "vocab.txt")).read() == "a\nb\n"


def _two_variants(sm, name, wa, wb):
    spw.create_model(sm, ECHO)
    spw.deploy(
        sm,
        name,
        [
            spw.single_variant(ECHO, "ml.m5.xlarge", name="A", InitialVariantWeight=wa),
            spw.single_variant(ECHO, "ml.c5.xlarge", name="B", InitialVariantWeight=wb),
        ],
    )
    spw.wait_in_service(sm, name)


def _variants_hit(rt, name, n, **kw):
    hits = []
    for _ in range(n):
        payload, headers, _ = spw.invoke(rt, name, **kw)
        hits.append((headers["x-amzn-invoked-production-variant"], headers["x-spillway-instance-type"]))
    return hits


def test_zero_weight_variant_gets_no_traffic_unless_targeted(server, sm):
    _two_variants(sm, "weights", 1.0, 0.0)
    assert set(_variants_hit(server.rt, "weights", 30)) == {("A", "ml.m5.xlarge")}
    assert set(_variants_hit(server.rt, "weights", 10, TargetVariant="B")) == {("B", "ml.c5.xlarge")}
    assert set(_variants_hit(server.rt, "weights", 10, TargetVariant="A")) == {("A", "ml.m5.xlarge")}


def test_equal_weights_send_traffic_to_both_variants(server, sm):
    _two_variants(sm, "split", 1.0, 1.0)
    hits = _variants_hit(server.rt, "split", 50)
    assert {v for v, _ in hits} == {"A", "B"}


def test_updated_weights_move_the_traffic(server, sm):
    _two_variants(sm, "shift", 1.0, 0.0)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="shift",
        DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "B", "DesiredWeight": 1.0}],
    )
    spw.wait_in_service(sm, "shift")
    assert {v for v, _ in _variants_hit(server.rt, "shift", 30)} == {"B"}


def test_unknown_target_variant_is_a_validation_error(server, sm):
    _two_variants(sm, "targets", 1.0, 1.0)
    code, msg, status = spw.error_of(
        server.rt.invoke_endpoint, EndpointName="targets", Body=b"x", TargetVariant="C"
    )
    assert (code, status) == ("ValidationError", 400), msg


def test_model_processes_start_with_a_clean_environment(start_server, monkeypatch):
    """Issue 12, finding 3: spillway's own secrets never reach a model process, and
    builtin:echo never hands back more than the variables spillway gave it."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-me")
    monkeypatch.setenv("GITHUB_TOKEN", "leak-me-too")
    monkeypatch.setenv("HOME", "/root-of-spillway")
    monkeypatch.setenv("PASSED_FOR_MODEL", "for-the-model")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    server = start_server(config={"provider": {"local": {"pass_env": ["PASSED_FOR_MODEL"]}}})
    sm = server.sm
    spw.create_model(sm, "clean", env={"MODEL_SETTING": "x"})
    spw.deploy(sm, "clean", [spw.single_variant("clean", "ml.m5.xlarge")])
    spw.wait_in_service(sm, "clean")
    (inst,) = server.instances("clean")

    # What the process really has, from /proc/<pid>/environ.
    env = spw.model_processes(server.data_dir)[inst["pid"]]
    for leaked in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HOME", "RUST_LOG"):
        assert leaked not in env, f"{leaked} reached the model process"
    assert env["PATH"] == os.environ["PATH"] and env["LC_TIME"] == "C.UTF-8"
    assert env["PASSED_FOR_MODEL"] == "for-the-model", "pass_env hands a variable through"
    assert env["MODEL_SETTING"] == "x" and env["SAGEMAKER_BIND_TO_PORT"] == str(inst["port"])

    # What builtin:echo tells any caller: spillway's variables and the model's, nothing else.
    payload, _, _ = spw.invoke(server.rt, "clean")
    echoed = payload["env"]
    assert echoed["MODEL_SETTING"] == "x" and echoed["SPILLWAY_INSTANCE_ID"] == inst["instanceId"]
    for hidden in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HOME", "PATH", "PASSED_FOR_MODEL"):
        assert hidden not in echoed, f"builtin:echo handed back {hidden}"


@pytest.mark.unauthenticated
@pytest.mark.parametrize("fast_path", [True, False])
def test_custom_attributes_over_1024_characters_are_refused_on_both_paths(start_server, fast_path):
    """Issue 12, finding 6: CustomAttributes is at most 1,024 printable ASCII characters."""
    server = start_server(config={"router": {"fast_path": fast_path}})
    spw.create_model(server.sm, "attrs")
    spw.deploy(server.sm, "attrs", [spw.single_variant("attrs", "ml.m5.xlarge")])
    spw.wait_in_service(server.sm, "attrs")
    ok = server.rt.invoke_endpoint(EndpointName="attrs", Body=b"x", CustomAttributes="a" * 1024)
    assert json.loads(ok["Body"].read())["customAttributes"] == "a" * 1024
    with pytest.raises(ClientError) as ei:
        server.rt.invoke_endpoint(EndpointName="attrs", Body=b"x", CustomAttributes="a" * 1025)
    err = ei.value.response["Error"]
    assert err["Code"] == "ValidationError" and "customAttributes" in err["Message"]
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Not ASCII (boto3 cannot send it; a raw client can): refused the same way.
    import socket

    head = (
        b"POST /endpoints/attrs/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        b"X-Amzn-SageMaker-Custom-Attributes: caf\xc3\xa9\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert b"ValidationError" in raw and b"ASCII" in raw


@pytest.mark.parametrize("fast_path", [True, False])
def test_every_invocation_answer_carries_a_request_id_that_the_trail_and_logs_know(start_server, fast_path, monkeypatch):
    """Issue 14, difference 2: `x-amzn-RequestId` on every runtime answer, success or error, plain
    or streamed, on both HTTP paths; unique per request; the same id in the data event and in
    spillway's log line for a failed invocation."""
    monkeypatch.setenv("RUST_LOG", "info,spillway::dataplane=debug")
    server = start_server(config={"router": {"fast_path": fast_path}})
    sm, rt = server.sm, server.rt
    spw.create_model(sm, ECHO)
    sm.create_endpoint_config(EndpointConfigName="ids", ProductionVariants=[spw.single_variant(ECHO)])
    sm.create_endpoint(EndpointName="ids", EndpointConfigName="ids",
                       Tags=[{"Key": "spillway:audit-invocations", "Value": "enabled"}])
    spw.wait_in_service(sm, "ids")
    ids = []
    for _ in range(3):
        r = rt.invoke_endpoint(EndpointName="ids", Body=b"x", ContentType="text/plain")
        ids.append(r["ResponseMetadata"]["RequestId"])
        assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == ids[-1]
    stream = rt.invoke_endpoint_with_response_stream(EndpointName="ids", Body=b"y", ContentType="text/plain")
    ids.append(stream["ResponseMetadata"]["RequestId"])
    list(stream["Body"])
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="ids", Body=b"z", TargetVariant="nope")
    failed = e.value.response["ResponseMetadata"]["RequestId"]
    ids.append(failed)
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="nowhere", Body=b"z")
    ids.append(e.value.response["ResponseMetadata"]["RequestId"])
    import uuid

    assert all(uuid.UUID(i).version == 4 for i in ids), ids
    assert len(set(ids)) == len(ids), ids
    # 405 on an invocation path (hyper answers it on both settings).
    status, headers, _ = server.http("GET", "/endpoints/ids/invocations", None, {}, sign=True)
    assert status == 405 and uuid.UUID({k.lower(): v for k, v in headers.items()}["x-amzn-requestid"])
    # The data events carry the ids the client saw.
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": "ids"}])["Events"]
    recorded = {json.loads(ev["CloudTrailEvent"])["requestID"] for ev in events
                if ev["EventName"].startswith("InvokeEndpoint")}
    assert set(ids[:5]) <= recorded, (ids, recorded)
    # The log line of the failed invocation names its id.
    spw.poll(lambda: failed in server.log_tail(400), what="the failed invocation's id in the log")
