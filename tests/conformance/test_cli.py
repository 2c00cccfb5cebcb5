"""The seed's aws CLI commands, run with the real awscli against spillway."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

import spw

AWS = pathlib.Path(sys.executable).parent / "aws"
EXAMPLE = "file://examples/variant-with-instance-pools.json"


def aws(server, *args, ok=True):
    """Runs `aws <args>` from the repo root, configured only by the three variables (and the
    region) spillway prints at start: no flags. Returns (rc, parsed stdout or text, stderr)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **spw.cli_environment(server),
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
    }
    cmd = [sys.executable, str(AWS), *args]
    p = subprocess.run(cmd, cwd=spw.REPO, env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, f"{' '.join(args)} -> rc={p.returncode}\n{p.stderr}"
    out = p.stdout
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        pass
    return p.returncode, out, p.stderr


def _cli_describe_until(server, name, pred, timeout=90):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        _, last, _ = aws(server, "sagemaker", "describe-endpoint", "--endpoint-name", name, "--output", "json")
        if pred(last):
            return last
        if last["EndpointStatus"] == "Failed":
            pytest.fail(f"endpoint failed: {last.get('FailureReason')}")
        time.sleep(0.3)
    pytest.fail(f"timed out; last describe-endpoint: {last}")


def test_example_file_is_the_documented_variant():
    (v,) = json.loads((spw.REPO / "examples" / "variant-with-instance-pools.json").read_text())
    assert v["VariantName"] == "AllTraffic" and v["ModelName"] == "llm-model"
    assert v["InitialInstanceCount"] == 2
    assert v["VariantInstanceProvisionTimeoutInSeconds"] == 600
    assert v["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert [(p["InstanceType"], p["Priority"]) for p in v["InstancePools"]] == [
        ("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3)]


def test_seed_cli_commands_move_an_endpoint_onto_instance_pools(server, tmp_path):
    _, out, _ = aws(
        server, "sagemaker", "create-model", "--model-name", "llm-model",
        "--primary-container", '{"Image": "builtin:echo"}', "--output", "json",
    )
    assert out["ModelArn"] == spw.arn("model", "llm-model")
    aws(
        server, "sagemaker", "create-endpoint-config", "--endpoint-config-name", "llm-prod-v1",
        "--production-variants", "VariantName=AllTraffic,ModelName=llm-model,InitialInstanceCount=1,InstanceType=ml.c5.xlarge",
    )
    _, out, _ = aws(
        server, "sagemaker", "create-endpoint", "--endpoint-name", "llm-endpoint",
        "--endpoint-config-name", "llm-prod-v1", "--output", "json",
    )
    assert out["EndpointArn"] == spw.arn("endpoint", "llm-endpoint")
    _cli_describe_until(server, "llm-endpoint", lambda d: d["EndpointStatus"] == "InService")

    # the seed's command, verbatim apart from the URL
    _, out, _ = aws(
        server, "sagemaker", "create-endpoint-config", "--endpoint-config-name", "llm-prod-v2",
        "--production-variants", EXAMPLE, "--output", "json",
    )
    assert out["EndpointConfigArn"] == spw.arn("endpoint-config", "llm-prod-v2")
    _, cfg, _ = aws(server, "sagemaker", "describe-endpoint-config", "--endpoint-config-name", "llm-prod-v2", "--output", "json")
    (v,) = cfg["ProductionVariants"]
    assert v["VariantInstanceProvisionTimeoutInSeconds"] == 600
    assert sorted((p["InstanceType"], p["Priority"]) for p in v["InstancePools"]) == [
        ("ml.g6.2xlarge", 2), ("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 3)]

    _, out, _ = aws(
        server, "sagemaker", "update-endpoint", "--endpoint-name", "llm-endpoint",
        "--endpoint-config-name", "llm-prod-v2", "--output", "json",
    )
    assert out["EndpointArn"] == spw.arn("endpoint", "llm-endpoint")
    d = _cli_describe_until(
        server, "llm-endpoint",
        lambda d: d["EndpointStatus"] == "InService" and d.get("EndpointConfigName") == "llm-prod-v2",
    )
    (pv,) = d["ProductionVariants"]
    # pinned capacity: g6e 0 slots, g6 1 slot, m5 plenty -> 1 x g6 + 1 x m5
    assert pv["InstancePools"] == [
        {"InstanceType": "ml.g6e.2xlarge", "CurrentInstanceCount": 0},
        {"InstanceType": "ml.g6.2xlarge", "CurrentInstanceCount": 1},
        {"InstanceType": "ml.m5.xlarge", "CurrentInstanceCount": 1},
    ]
    assert pv["CurrentInstanceCount"] == 2 and pv["DesiredInstanceCount"] == 2
    assert pv["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    spw.poll(
        lambda: sorted(p["type"] for p in server.processes().values()) == ["ml.g6.2xlarge", "ml.m5.xlarge"],
        what="only the pooled fleet to be running",
    )

    outfile = tmp_path / "out.json"
    aws(
        server, "sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "llm-endpoint",
        "--body", "hello from the cli", "--content-type", "text/plain", str(outfile),
    )
    answer = json.loads(outfile.read_text())
    assert answer["body"] == "hello from the cli"
    assert answer["instanceType"] in ("ml.g6.2xlarge", "ml.m5.xlarge")


def test_cli_text_and_table_outputs_and_list(server):
    spw.create_model(server.sm, "llm-model")
    aws(server, "sagemaker", "create-endpoint-config", "--endpoint-config-name", "llm-prod-v2", "--production-variants", EXAMPLE)
    aws(server, "sagemaker", "create-endpoint", "--endpoint-name", "llm-direct", "--endpoint-config-name", "llm-prod-v2")
    spw.wait_in_service(server.sm, "llm-direct")
    _, out, _ = aws(
        server, "sagemaker", "describe-endpoint", "--endpoint-name", "llm-direct",
        "--query", "ProductionVariants[0].InstancePools[?CurrentInstanceCount > `0`].InstanceType", "--output", "text",
    )
    assert sorted(out.split()) == ["ml.g6.2xlarge", "ml.m5.xlarge"]
    _, out, _ = aws(server, "sagemaker", "list-endpoints", "--output", "json")
    assert [e["EndpointName"] for e in out["Endpoints"]] == ["llm-direct"]


def test_cli_reports_a_missing_endpoint(server):
    rc, _, err = aws(server, "sagemaker", "describe-endpoint", "--endpoint-name", "nope", ok=False)
    assert rc != 0
    assert "ValidationException" in err
    assert "Could not find endpoint" in err


def test_a_taken_port_says_which_address_and_what_to_do(server, tmp_path):
    """A second `spillway serve` on a taken address names it and says how to choose another."""
    addr = server.url.removeprefix("http://")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPILLWAY_", "RUST_"))}
    for args, extra in (
        (["--listen", addr], {}),
        ([], {"SPILLWAY_LISTEN": addr}),  # the environment variable the README documents
    ):
        p = subprocess.run(
            [spw.BIN, "serve", *args, "--data-dir", str(tmp_path / "second")],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode != 0, p.stderr
        err = p.stderr
        assert f"cannot listen on {addr}" in err, err
        assert "already" in err and "--listen" in err and "SPILLWAY_LISTEN" in err and "--data-dir" in err, err
        assert "panicked" not in err and "backtrace" not in err.lower(), err
