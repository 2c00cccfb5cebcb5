"""The operator's CLI (`spillway status|explain|events|capacity|cost|gameday|runbook`), run as
an operator runs it: the real binary, in a shell environment holding only the lines
`spillway serve` printed, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import spw

# Rebalancing fast enough for a test; the fleet ledger samples every second.
FAST = {
    "rebalance": {"enabled": False, "min_runtime_seconds": 1, "max_in_flight": 1},
    "cost": {"sample_seconds": 1},
}
POOLS = spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2), ("ml.m5.xlarge", 3))


def cli(server, *args, env_extra=None, cwd=None, timeout=180):
    """Runs `spillway <args>` with only the printed environment. Returns (rc, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(spw.cli_environment(server))
    env.update(env_extra or {})
    p = subprocess.run(
        [spw.BIN, *args], env=env, cwd=cwd or server.workdir, capture_output=True, text=True, timeout=timeout
    )
    return p.returncode, p.stdout, p.stderr


def cli_json(server, *args, **kw):
    rc, out, err = cli(server, *args, "--output", "json", **kw)
    assert rc == 0, f"spillway {' '.join(args)} -> rc={rc}\n{err}"
    return json.loads(out)


def fallback_endpoint(server, name="ep", count=2):
    spw.create_model(server.sm, f"{name}-m")
    spw.deploy(server.sm, name, [spw.pooled_variant(f"{name}-m", POOLS, count=count)])
    return spw.wait_in_service(server.sm, name)


def test_status_and_explain_answer_why_it_runs_there(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    rc, out, err = cli(server, "status")
    assert rc == 0, err
    line = next(l for l in out.splitlines() if l.startswith("ep "))
    assert "InService" in line and "2/2" in line, out
    assert "ml.g6.2xlarge×1*" in line and "ml.m5.xlarge×1*" in line, out

    rc, out, err = cli(server, "explain", "ep")
    assert rc == 0, err
    # In plain sentences: where, what the preferred type answered, why it stays on fallback.
    assert "1 on ml.g6.2xlarge (priority 2), 1 on ml.m5.xlarge (priority 3)" in out, out
    assert "ml.g6e.2xlarge (priority 1): last tried" in out and "answered InsufficientCapacity" in out, out
    assert "pinned to 0 slots" in out, out
    assert "rebalancing is off" in out, out
    assert "$/h now" in out or "/h now" in out, out
    # Then the evidence, with the catalog's hardware and the events.
    assert "Evidence" in out and "LaunchAttempt" in out, out

    e = cli_json(server, "explain", "ep")
    pools = {p["instanceType"]: p for p in e["variants"][0]["pools"]}
    assert [p["priority"] for p in e["variants"][0]["pools"]] == [1, 2, 3]
    assert pools["ml.g6e.2xlarge"]["current"] == 0 and pools["ml.g6e.2xlarge"]["slots"] == 0
    assert pools["ml.g6e.2xlarge"]["lastAttempt"]["result"] == "InsufficientCapacity"
    assert pools["ml.g6.2xlarge"]["current"] == 1 and pools["ml.m5.xlarge"]["current"] == 1
    # The hourly cost is the catalog's prices of what runs.
    catalog = {t.get("instanceType", t.get("name")): t for t in server.admin_get("instance-types")["instanceTypes"]}
    want = catalog["ml.g6.2xlarge"]["priceUsdPerHour"] + catalog["ml.m5.xlarge"]["priceUsdPerHour"]
    assert abs(e["cost"]["hourlyCostUsd"] - want) < 1e-6, e["cost"]
    assert abs(e["cost"]["allPreferredHourlyCostUsd"] - 2 * catalog["ml.g6e.2xlarge"]["priceUsdPerHour"]) < 1e-6
    assert any("InsufficientCapacity" in s for s in e["summary"])

    st = cli_json(server, "status")
    assert [x["endpointName"] for x in st["endpoints"]] == ["ep"]


def test_exit_codes_scripts_can_trust(start_server, tmp_path):
    server = start_server()
    rc, _, err = cli(server, "explain", "nope")
    assert rc == 5 and "not found" in err, err
    rc, _, err = cli(server, "cost", "--since", "7 parsecs")
    assert rc == 6 and "--since" in err, err
    rc, _, err = cli(server, "capacity", "set", "ml.nope.large", "1")
    assert rc == 6 and "ml.nope.large" in err, err
    # A server that is not there.
    rc, _, err = cli(server, "status", env_extra={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{spw.free_port()}"})
    assert rc == 3 and "cannot reach" in err, err
    # No credentials anywhere (not in the environment, no .spillway here): refused, with a hint.
    env = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_PROFILE": "", "HOME": str(tmp_path)}
    rc, _, err = cli(server, "status", env_extra=env, cwd=tmp_path)
    assert rc == 4 and "no credentials found" in err, err
    # A wrong secret: refused, naming where the key came from.
    creds = tmp_path / "creds"
    creds.write_text("[spillway]\naws_access_key_id = AKIAWRONGWRONGWRONG1\naws_secret_access_key = x\n")
    rc, _, err = cli(server, "status", env_extra={"AWS_SHARED_CREDENTIALS_FILE": str(creds)})
    assert rc == 4 and str(creds) in err, err
    # Usage errors are clap's.
    rc, _, _ = cli(server, "gameday", "ep")
    assert rc == 2


def test_the_data_dir_credentials_are_found_without_exports(start_server):
    server = start_server()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = server.url
    env["HOME"] = str(server.workdir)  # no ~/.aws
    p = subprocess.run(
        [spw.BIN, "status", "--data-dir", str(server.data_dir)], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "No endpoints" in p.stdout


def test_capacity_set_clear_and_events_follow(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    follower = subprocess.Popen(
        [spw.BIN, "events", "ep", "--follow", "--output", "json"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **spw.cli_environment(server)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rc, out, err = cli(server, "capacity", "set", "ml.g6e.2xlarge", "2")
        assert rc == 0 and "pinned to 2" in out, err
        caps = {r["instanceType"]: r for r in cli_json(server, "capacity")["instanceTypes"]}
        assert caps["ml.g6e.2xlarge"]["slots"] == 2 and caps["ml.g6e.2xlarge"]["pinnedBy"] == "runtime"
        # Opt in to rebalancing: the fleet moves to the preferred type; --follow shows it live.
        server.sm.add_tags(ResourceArn=spw.arn("endpoint", "ep"), Tags=[{"Key": "spillway:rebalance", "Value": "enabled"}])
        spw.poll(
            lambda: spw.type_counter(server.instances("ep"))["ml.g6e.2xlarge"] == 2
            and len(server.instances("ep")) == 2,
            timeout=90,
            what="the fleet back on ml.g6e.2xlarge",
        )
        rc, out, err = cli(server, "capacity", "clear", "ml.g6e.2xlarge")
        assert rc == 0 and "0 slot(s) from the config file" in out, (out, err)
        time.sleep(1.5)
    finally:
        follower.terminate()
        out, _ = follower.communicate(timeout=10)
    followed = [json.loads(l) for l in out.splitlines() if l.strip()]
    kinds = [e["kind"] for e in followed]
    assert "LaunchAttempt" in kinds, kinds  # the history first
    assert any(e["kind"] in ("MigrationLaunch", "MigrationShift") and e.get("instanceType") == "ml.g6e.2xlarge" for e in followed), kinds
    # Every line printed once: the follow does not repeat events.
    assert len({json.dumps(e, sort_keys=True) for e in followed}) == len(followed)


def test_cost_accounts_instance_hours_per_type(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    time.sleep(4)
    c = cli_json(server, "cost", "ep", "--since", "1h")
    (e,) = c["endpoints"]
    types = {t["instanceType"]: t for t in e["types"]}
    assert set(types) == {"ml.g6.2xlarge", "ml.m5.xlarge"}, types
    for t in types.values():
        # At least a few one-second samples of one instance each, and never more than the
        # time the test has run.
        assert 2 / 3600 <= t["instanceHours"] <= 120 / 3600, t
        assert abs(t["costUsd"] - t["instanceHours"] * t["priceUsdPerHour"]) < 1e-9
        assert t["current"] == 1
    assert abs(e["costUsd"] - sum(t["costUsd"] for t in types.values())) < 1e-9
    # The same hours on the preferred type (ml.g6e.2xlarge), and the difference.
    assert e["allPreferredCostUsd"] > e["costUsd"]
    assert abs(e["fallbackCostUsd"] - (e["costUsd"] - e["allPreferredCostUsd"])) < 1e-9
    rc, out, err = cli(server, "cost", "--since", "1h")
    assert rc == 0 and "fallback cost -$" in out and "ml.m5.xlarge" in out, (out, err)
    # A tag sets the ceiling the cost report shows.
    server.sm.add_tags(ResourceArn=spw.arn("endpoint", "ep"), Tags=[{"Key": "spillway:max-hourly-cost", "Value": "9.5"}])
    assert cli_json(server, "cost", "ep")["endpoints"][0]["maxHourlyCostUsd"] == 9.5
    # The ledger is durable: a restart keeps the hours already counted.
    before = sum(t["instanceHours"] for t in types.values())
    server.terminate()
    server.restart()
    after = cli_json(server, "cost", "ep", "--since", "1h")["endpoints"][0]["instanceHours"]
    assert after >= before


def test_gameday_falls_back_returns_and_reports(start_server, tmp_path):
    server = start_server(config=FAST, capacity={"ml.g6e.2xlarge": 2})
    fallback_endpoint(server)
    assert spw.type_counter(server.instances("ep")) == {"ml.g6e.2xlarge": 2}
    server.sm.add_tags(ResourceArn=spw.arn("endpoint", "ep"), Tags=[{"Key": "spillway:rebalance", "Value": "enabled"}])
    report = tmp_path / "gd.md"
    rc, out, err = cli(
        server, "gameday", "ep", "--take", "ml.g6e.2xlarge", "--for", "2s", "--timeout", "2m",
        "--max-error-rate", "1", "--report", str(report), "--output", "json",
    )
    r = json.loads(out)
    assert rc == 0, (r, err)
    assert r["result"] == "PASS"
    assert r["fleetBefore"] == {"ml.g6e.2xlarge": 2}
    # Without the preferred type, the pools gave ml.g6.2xlarge (1 slot) and ml.m5.xlarge.
    assert r["fallbackFleet"] == {"ml.g6.2xlarge": 1, "ml.m5.xlarge": 1}, r
    phases = {p["phase"]: p for p in r["phases"]}
    assert phases["fall back"]["seconds"] is not None and phases["return"]["seconds"] is not None, phases
    assert r["invocations"]["ok"] > 0
    assert "ml.m5.xlarge" in r["invocations"]["byInstanceType"] or "ml.g6.2xlarge" in r["invocations"]["byInstanceType"]
    text = report.read_text()
    assert "**PASS**" in text and "| fall back |" in text and "| return |" in text
    # The pin was given back and the fleet is home.
    assert "ml.g6e.2xlarge" not in {k for k, v in server.capacity().items() if v.get("pinnedBy") == "runtime"}
    assert spw.type_counter(server.instances("ep")) == {"ml.g6e.2xlarge": 2}
    # The evidence: the reclaim is in the events; the result is on the endpoint's tags.
    kinds = [e["kind"] for e in server.events("ep")]
    assert kinds.count("CapacityReclaimed") == 2, kinds
    tags = {t["Key"]: t["Value"] for t in server.sm.list_tags(ResourceArn=spw.arn("endpoint", "ep"))["Tags"]}
    assert tags["spillway:last-gameday"].startswith("PASS ")
    # The runbook shows it.
    rc, out, _ = cli(server, "runbook", "ep")
    assert rc == 0 and "Last result: **PASS" in out


def test_gameday_fails_when_the_fleet_cannot_fall_back(start_server, tmp_path):
    # Only one pool: taking it away leaves nowhere to go; the game day must say FAIL, exit 1,
    # and give the type back.
    server = start_server(config=FAST)
    spw.create_model(server.sm, "m")
    spw.deploy(server.sm, "solo", [spw.single_variant("m", "ml.c5.xlarge", count=1)])
    spw.wait_in_service(server.sm, "solo")
    report = tmp_path / "fail.md"
    rc, out, err = cli(server, "gameday", "solo", "--take", "ml.c5.xlarge", "--for", "0s", "--timeout", "5s", "--report", str(report))
    assert rc == 1, (out, err)
    assert "FAILED" in err and "did not fall back" in err, err
    assert "**FAIL**" in report.read_text()
    caps = server.capacity()
    assert caps["ml.c5.xlarge"].get("pinnedBy") != "runtime", caps["ml.c5.xlarge"]
    tags = {t["Key"]: t["Value"] for t in server.sm.list_tags(ResourceArn=spw.arn("endpoint", "solo"))["Tags"]}
    assert tags["spillway:last-gameday"].startswith("FAIL ")
    # A type that is not a pool of the endpoint is refused before anything is touched.
    rc, _, err = cli(server, "gameday", "solo", "--take", "ml.m5.xlarge")
    assert rc == 6 and "not a pool" in err, err


def test_runbook_covers_the_checklist(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    arn = spw.arn("endpoint", "ep")
    server.sm.add_tags(
        ResourceArn=arn,
        Tags=[
            {"Key": "owner", "Value": "team-inference pager @inference-oncall"},
            {"Key": "spillway:review-date", "Value": "2020-01-31"},
            {"Key": "spillway:exception:cpu-fallback", "Value": "2099-01-01 CPU tier accepted until the H200s land"},
            {"Key": "spillway:exception:old", "Value": "2021-06-01 expired one"},
        ],
    )
    rc, out, err = cli(server, "runbook", "ep")
    assert rc == 0, err
    for heading in ("## Owner", "## Now", "## Rollback", "## Cost", "## What to watch", "## Negative test", "## Open exceptions", "## Review"):
        assert heading in out, heading
    assert "team-inference pager @inference-oncall" in out
    assert "aws sagemaker update-endpoint --endpoint-name ep --endpoint-config-name ep-cfg" in out, out
    assert "spillway gameday ep --take ml.g6e.2xlarge" in out
    assert "never run" in out
    assert "`cpu-fallback`" in out and "(open)" in out and "**EXPIRED**" in out
    assert "**Overdue**" in out
    assert "fallback pools" in out
    # After an update, the previous configuration is the rollback target.
    server.sm.create_endpoint_config(
        EndpointConfigName="ep-v2", ProductionVariants=[spw.pooled_variant("ep-m", POOLS, count=1)]
    )
    server.sm.update_endpoint(EndpointName="ep", EndpointConfigName="ep-v2")
    spw.wait_status(server.sm, "ep", want=("InService",), timeout=90)
    spw.poll(lambda: any(e["kind"] == "DeploymentComplete" for e in server.events("ep")), what="DeploymentComplete")
    facts = cli_json(server, "runbook", "ep")
    assert facts["endpointConfigName"] == "ep-v2" and facts["previousEndpointConfigName"] == "ep-cfg"
    assert facts["owner"].startswith("team-inference")


def test_explain_shows_autoscaling_and_its_alarms(start_server):
    server = start_server(config={**FAST, "autoscaling": {"target_tracking_period_seconds": 1}})
    fallback_endpoint(server, count=1)
    aas = server.client("application-autoscaling")
    rid = "endpoint/ep/variant/AllTraffic"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=3,
    )
    aas.put_scaling_policy(
        PolicyName="per-instance", ServiceNamespace="sagemaker", ResourceId=rid,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )
    e = cli_json(server, "explain", "ep")
    sc = e["variants"][0]["scaling"]
    assert (sc["minCapacity"], sc["maxCapacity"]) == (1, 3)
    (p,) = sc["policies"]
    assert p["policyName"] == "per-instance" and p["policyType"] == "TargetTrackingScaling"
    names = sorted(a["alarmName"] for a in p["alarms"])
    assert len(names) == 2 and "AlarmHigh" in names[0] + names[1], names
    rc, out, _ = cli(server, "explain", "ep")
    assert rc == 0 and "Autoscaling keeps it between 1 and 3 instances: per-instance (TargetTrackingScaling;" in out, out


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_gameday_gives_the_type_back(start_server, sig):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    p = subprocess.Popen(
        [spw.BIN, "gameday", "ep", "--take", "ml.g6.2xlarge", "--for", "10m", "--report", str(server.workdir / "r.md")],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **spw.cli_environment(server)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in p.stderr:
            lines.append(line)
            if "fell back" in line:
                break
        assert any("fell back" in l for l in lines), lines
        assert server.capacity()["ml.g6.2xlarge"]["slots"] == 0
        p.send_signal(getattr(subprocess.signal, sig))
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 130, (rc, p.stderr.read())
    # The run-time pin is gone: the config file's pin (1 slot) applies again.
    cap = server.capacity()["ml.g6.2xlarge"]
    assert cap["slots"] == 1 and cap.get("pinnedBy") == "config", cap


def test_explain_shows_the_fit_and_a_ceiling_that_bites(start_server):
    server = start_server(config=FAST, capacity={"ml.g6e.2xlarge": 1})
    spw.create_model(server.sm, "big", env={"SPILLWAY_MIN_ACCELERATORS": "1", "SPILLWAY_MIN_ACCELERATOR_MEMORY_GB": "20"})
    server.sm.create_endpoint_config(
        EndpointConfigName="fit-cfg",
        ProductionVariants=[spw.pooled_variant("big", spw.pools(("ml.g6e.2xlarge", 1), ("ml.g6.2xlarge", 2)), count=2)],
    )
    # A ceiling that holds one ml.g6e.2xlarge but not a second instance of any type.
    catalog = {t.get("instanceType", t.get("name")): t for t in server.admin_get("instance-types")["instanceTypes"]}
    ceiling = catalog["ml.g6e.2xlarge"]["priceUsdPerHour"] + 0.5
    server.sm.create_endpoint(
        EndpointName="fit", EndpointConfigName="fit-cfg", Tags=[{"Key": "spillway:max-hourly-cost", "Value": f"{ceiling:.2f}"}]
    )
    spw.poll(lambda: any(e["kind"] == "CostCeilingReached" for e in server.events("fit")), timeout=60, what="CostCeilingReached")
    e = cli_json(server, "explain", "fit")
    pools = {p["instanceType"]: p for p in e["variants"][0]["pools"]}
    assert "needs at least 1 accelerator(s) with 20 GiB on each" in pools["ml.g6e.2xlarge"]["fit"], pools
    assert e["cost"]["maxHourlyCostUsd"] == float(f"{ceiling:.2f}")
    assert pools["ml.g6.2xlarge"]["lastAttempt"]["result"] == "Skipped", pools["ml.g6.2xlarge"]
    rc, out, _ = cli(server, "explain", "fit")
    assert rc == 0 and "Fit: big needs" in out and "ceiling $" in out, out


def test_cost_and_reclaim_are_authorized_per_endpoint_and_audited(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server, name="ep")
    fallback_endpoint(server, name="other", count=1)
    iam = server.client("iam")
    iam.create_user(UserName="finops")
    iam.put_user_policy(
        UserName="finops",
        PolicyName="ep-only",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": ["spillway:GetCost", "spillway:ReclaimCapacity"],
                "Resource": spw.arn("endpoint", "ep"),
            }],
        }),
    )
    key = iam.create_access_key(UserName="finops")["AccessKey"]
    as_finops = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_PROFILE": "",
    }
    # Its own endpoint's cost: allowed. Every endpoint's (resource *): refused.
    rc, out, err = cli(server, "cost", "ep", "--output", "json", env_extra=as_finops)
    assert rc == 0, err
    assert [e["endpointName"] for e in json.loads(out)["endpoints"]] == ["ep"]
    rc, _, err = cli(server, "cost", env_extra=as_finops)
    assert rc == 4 and "AccessDenied" in err, err
    rc, _, err = cli(server, "cost", "other", env_extra=as_finops)
    assert rc == 4, err
    # Reclaiming on its endpoint only: allowed, and only that endpoint's instances go.
    rc, _, err = cli(server, "capacity", "reclaim", "ml.m5.xlarge", "--endpoint", "other", env_extra=as_finops)
    assert rc == 4, err
    rc, out, err = cli(server, "capacity", "reclaim", "ml.m5.xlarge", "--endpoint", "ep", "--output", "json", env_extra=as_finops)
    assert rc == 0 and json.loads(out)["reclaimed"] == 1, (out, err)
    assert not [e for e in server.events("other") if e["kind"] == "CapacityReclaimed"]
    assert [e["instanceType"] for e in server.events("ep") if e["kind"] == "CapacityReclaimed"] == ["ml.m5.xlarge"]
    # An unknown parameter is refused, after authorization.
    status, body = server.admin("GET", "cost?endpoint=ep&sinse=1h")
    assert status == 400 and "sinse" in json.dumps(body), body
    # Both mutations and refusals are in the audit trail, with who and what.
    ct = server.client("cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ReclaimCapacity"}])["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    ok = [r for r in records if not r.get("errorCode")]
    assert len(ok) == 1 and ok[0]["requestParameters"] == {"instanceType": "ml.m5.xlarge", "endpointName": "ep"}, records
    assert ok[0]["userIdentity"]["userName"] == "finops"
    assert any(r.get("errorCode") for r in records), records


def test_a_gameday_does_not_take_a_shared_type_from_other_endpoints_unasked(start_server):
    server = start_server(config=FAST)
    fallback_endpoint(server, name="ep")
    fallback_endpoint(server, name="other", count=1)
    before = spw.type_counter(server.instances("other"))
    rc, _, err = cli(server, "gameday", "ep", "--take", "ml.m5.xlarge", "--for", "0s")
    assert rc == 6 and "other" in err and "--force" in err, err
    assert server.capacity()["ml.m5.xlarge"].get("pinnedBy") != "runtime"
    # With --force: only ep's instances are reclaimed.
    rc, out, err = cli(server, "gameday", "ep", "--take", "ml.g6.2xlarge", "--for", "0s", "--force", "--timeout", "60s",
                       "--report", str(server.workdir / "r.md"))
    assert not [e for e in server.events("other") if e["kind"] == "CapacityReclaimed"]
    assert spw.type_counter(server.instances("other")) == before


def test_the_cli_behaves_in_pipes_and_against_a_stranger(start_server, tmp_path):
    server = start_server(config=FAST)
    fallback_endpoint(server)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **spw.cli_environment(server)}
    # `| head -1`: the reader goes away early; the CLI stops quietly (141, as SIGPIPE), no panic.
    p = subprocess.run(
        f"'{spw.BIN}' explain ep | head -1; echo \"rc=${{PIPESTATUS[0]}}\" >&2",
        shell=True, executable="/bin/bash", env=env, capture_output=True, text=True, timeout=60,
    )
    assert p.stdout.startswith("Endpoint ep is InService"), p.stdout
    assert "panicked" not in p.stderr and "rc=141" in p.stderr, p.stderr
    # A game day on a type the endpoint does not run on would prove nothing: refused.
    rc, _, err = cli(server, "gameday", "ep", "--take", "ml.g6e.2xlarge")
    assert rc == 6 and "would test nothing" in err, err
    # Something that is not spillway answers at the URL: said so, exit 7 (not "not found").
    stranger = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port := spw.free_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        spw.poll(lambda: subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/"], capture_output=True).returncode == 0,
                 what="the stranger listening")
        rc, _, err = cli(server, "explain", "ep", env_extra={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        assert rc == 7 and "without an AWS error" in err and "is spillway listening there" in err, (rc, err)
    finally:
        stranger.kill()
        stranger.wait()
    # No credentials: the message names the profile it looked for.
    rc, _, err = cli(server, "status", env_extra={"AWS_PROFILE": "nosuch", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}, cwd=tmp_path)
    assert rc == 4 and 'profile "nosuch"' in err, err
