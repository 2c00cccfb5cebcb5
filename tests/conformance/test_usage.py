"""Per-instance utilization (`CPUUtilization`, `MemoryUtilization`, `GPUUtilization`,
`GPUMemoryUtilization`): sampled from /proc every `[metrics] usage_interval_seconds`, read back through
boto3's CloudWatch client in namespace `/aws/sagemaker/Endpoints` (not `AWS/SageMaker`, as in AWS), and
exposed as per-instance Prometheus gauges that disappear with the instance."""

from __future__ import annotations

import datetime as dt
import threading
import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import spw

INSTANCE_NS = "/aws/sagemaker/Endpoints"
M5 = "ml.m5.xlarge"
GAUGES = (
    "spillway_instance_cpu_utilization_percent",
    "spillway_instance_memory_utilization_percent",
    "spillway_instance_memory_rss_bytes",
)


def dims(endpoint: str, instance_type: str | None = None) -> list[dict]:
    d = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]
    if instance_type:
        d.append({"Name": "InstanceType", "Value": instance_type})
    return d


def scrape(server) -> dict[str, list]:
    status, _, body = server.http("GET", "/metrics")
    assert status == 200
    return {fam.name: fam.samples for fam in text_string_to_metric_families(body.decode())}


def test_cpu_and_memory_utilization_per_instance(start_server):
    server = start_server(config={"metrics": {"usage_interval_seconds": 1}})
    sm = server.sm
    spw.deploy_echo(sm, "hot", "burner", M5)
    (instance,) = server.instances("hot")
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    # One request keeps one core of the instance busy for 8 s (echo's `burn:<ms>`).
    burner_rt = server.client("sagemaker-runtime", read_timeout=30)
    answers = []
    burning = threading.Thread(
        target=lambda: answers.append(burner_rt.invoke_endpoint(EndpointName="hot", Body=b"burn:8000")), daemon=True
    )
    burning.start()

    cw = server.client("cloudwatch")

    def stats(metric: str, namespace: str = INSTANCE_NS, instance_type: str | None = M5, **kw) -> list[dict]:
        end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
        return cw.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=dims("hot", instance_type),
            StartTime=start,
            EndTime=end,
            Period=kw.pop("Period", 60),
            Statistics=kw.pop("Statistics", ["Maximum", "Average", "Minimum", "SampleCount"]),
            **kw,
        )["Datapoints"]

    def busy():
        dps = stats("CPUUtilization")
        return dps if dps and max(d["Maximum"] for d in dps) > 50 else None

    def gauge_busy():
        fams = scrape(server)
        cpu = [s.value for s in fams["spillway_instance_cpu_utilization_percent"] if s.labels.get("endpoint") == "hot"]
        return cpu if cpu and cpu[0] > 50 else None

    # One busy core is 100 (percent of one core); anything above 50 is unmistakably the burn.
    cpu = spw.poll(busy, timeout=20, interval=0.5, what="CPUUtilization > 50 while the model burns a core")
    spw.poll(gauge_busy, timeout=10, interval=0.5, what="the CPU gauge > 50 while the model burns a core")
    burning.join(timeout=30)
    assert answers and answers[0]["ResponseMetadata"]["HTTPStatusCode"] == 200
    for d in cpu:
        assert d["Unit"] == "Percent"
        assert 0 <= d["Minimum"] <= d["Average"] <= d["Maximum"] <= 100 * 2 + 20  # this host's cores, with jitter
        assert d["SampleCount"] >= 1

    memory = stats("MemoryUtilization", Unit="Percent")
    assert memory and all(0 < d["Average"] < 100 and d["Unit"] == "Percent" for d in memory), memory
    # The variant-level series ({EndpointName, VariantName}) has the same samples.
    variant = stats("CPUUtilization", instance_type=None, Period=300)
    assert variant and max(d["Maximum"] for d in variant) > 50
    # An ml.m5 instance has no GPUs: no GPU data points, not zeros.
    assert stats("GPUUtilization") == []
    assert stats("GPUMemoryUtilization") == []
    # The utilization metrics live in /aws/sagemaker/Endpoints only, as in AWS.
    assert stats("CPUUtilization", namespace="AWS/SageMaker") == []
    assert stats("MemoryUtilization", namespace="AWS/SageMaker") == []
    # GetMetricData reads them the same way.
    r = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "cpu",
                "MetricStat": {
                    "Metric": {"Namespace": INSTANCE_NS, "MetricName": "CPUUtilization", "Dimensions": dims("hot", M5)},
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=start,
        EndTime=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5),
    )
    assert max(r["MetricDataResults"][0]["Values"]) > 50

    listed = cw.list_metrics(Namespace=INSTANCE_NS, Dimensions=[{"Name": "EndpointName", "Value": "hot"}])["Metrics"]
    names = {(m["MetricName"], len(m["Dimensions"])) for m in listed}
    assert names == {("CPUUtilization", 2), ("CPUUtilization", 3), ("MemoryUtilization", 2), ("MemoryUtilization", 3)}
    assert all(m["Namespace"] == INSTANCE_NS for m in listed)

    # Prometheus: one gauge per instance, labelled with its id.
    fams = scrape(server)
    for name in GAUGES:
        samples = [s for s in fams[name] if s.labels.get("endpoint") == "hot"]
        assert len(samples) == 1, (name, samples)
        s = samples[0]
        assert s.labels == {
            "endpoint": "hot",
            "variant": "AllTraffic",
            "instance_type": M5,
            "instance": instance["instanceId"],
        }
        assert s.value >= 0 if name.endswith("cpu_utilization_percent") else s.value > 0, (name, s)
    assert not [
        s for s in fams.get("spillway_instance_gpu_utilization_percent", []) if s.labels.get("endpoint") == "hot"
    ]

    # Once the instance is gone, so are its gauges.
    sm.delete_endpoint(EndpointName="hot")

    def gauges_gone():
        fams = scrape(server)
        left = [s for name in GAUGES for s in fams.get(name, []) if s.labels.get("instance") == instance["instanceId"]]
        return not left

    spw.poll(gauges_gone, timeout=30, interval=0.5, what="the instance's utilization gauges to be removed")


def test_usage_sampling_can_be_switched_off(start_server):
    server = start_server(config={"metrics": {"usage_interval_seconds": 0}})
    sm = server.sm
    spw.deploy_echo(sm, "cold", itype=M5)
    time.sleep(2)
    fams = scrape(server)
    assert not [s for name in GAUGES for s in fams.get(name, []) if s.labels.get("endpoint") == "cold"]
    assert server.client("cloudwatch").list_metrics(Namespace=INSTANCE_NS)["Metrics"] == []


def test_an_instance_that_hosts_components_counts_its_copies_use(start_server):
    """A copy of an inference component is the instance's work: its CPU shows in the hosting
    instance's CPUUtilization (the host agent alone is idle)."""
    g5 = "ml.g5.12xlarge"
    server = start_server(capacity={g5: 1}, config={"metrics": {"usage_interval_seconds": 1}})
    sm, cw = server.sm, server.client("cloudwatch")
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    sm.create_endpoint_config(
        EndpointConfigName="icu-cfg",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/spillway",
        ProductionVariants=[{"VariantName": "AllTraffic", "InitialInstanceCount": 1, "InstanceType": g5}],
    )
    sm.create_endpoint(EndpointName="icu", EndpointConfigName="icu-cfg")
    spw.wait_in_service(sm, "icu", timeout=60)
    sm.create_inference_component(
        InferenceComponentName="burner",
        EndpointName="icu",
        Specification={
            "Container": {"Image": "builtin:echo"},
            "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 1024},
        },
        RuntimeConfig={"CopyCount": 1},
    )
    spw.poll(
        lambda: sm.describe_inference_component(InferenceComponentName="burner")["RuntimeConfig"]["CurrentCopyCount"] == 1
        or None,
        timeout=60,
        what="the copy in service",
    )
    burner_rt = server.client("sagemaker-runtime", read_timeout=30)
    answers = []
    burning = threading.Thread(
        target=lambda: answers.append(
            burner_rt.invoke_endpoint(EndpointName="icu", InferenceComponentName="burner", Body=b"burn:8000")
        ),
        daemon=True,
    )
    burning.start()

    def busy():
        dps = cw.get_metric_statistics(
            Namespace=INSTANCE_NS,
            MetricName="CPUUtilization",
            Dimensions=[*dims("icu", g5)],
            StartTime=start,
            EndTime=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        return dps if dps and max(d["Maximum"] for d in dps) > 50 else None

    spw.poll(busy, timeout=20, interval=0.5, what="the hosting instance's CPUUtilization > 50 while its copy burns a core")
    burning.join(timeout=30)
    assert answers and answers[0]["ResponseMetadata"]["HTTPStatusCode"] == 200
