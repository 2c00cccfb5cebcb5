"""Helpers for the spillway black-box conformance suite.

Everything here talks to a real `spillway serve` process over HTTP (boto3, awscli, urllib) and
reads /proc; nothing imports or links spillway code.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterable

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import shapes

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SPILLWAY_BIN", str(REPO / "target" / "debug" / "spillway"))
REGION = "us-east-1"
ACCOUNT = "123456789012"
HERE = pathlib.Path(__file__).resolve().parent
SLOW_ECHO = HERE / "models" / "slow_echo.py"

# Every instance type a test uses is pinned, so nothing depends on the host's GPUs or size.
DEFAULT_CAPACITY = {
    "ml.g6e.2xlarge": 0,
    "ml.g6.2xlarge": 1,
    "ml.m5.xlarge": 4,
    "ml.c5.xlarge": 4,
    "ml.g5.xlarge": 0,
    "ml.t2.medium": 4,
}

DEFAULT_CONFIG: dict[str, Any] = {
    "region": REGION,
    "account_id": ACCOUNT,
    # The host names the raw-socket tests put in `Host` (boto3 and urllib send 127.0.0.1).
    "allowed_hosts": ["x", "y", "spillway"],
    # Tests run model commands of their own (python scripts, sleep); the default allows only
    # builtin:* (test_auth.py checks that default).
    "models": {"allowed_images": ["*"]},
    "provisioning": {
        "deadline_override_seconds": 5,
        "ice_backoff_initial_ms": 200,
        "ice_backoff_max_ms": 1000,
        "termination_grace_seconds": 5,
    },
    "provider": {"kind": "local", "local": {"capacity": dict(DEFAULT_CAPACITY)}},
}


# --------------------------------------------------------------------------------------------
# config file
# --------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(d: dict[str, Any], prefix: str = "") -> str:
    lines = []
    tables = []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        scalars = {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)}
        out += f"\n[{name}]\n" if (scalars or not v) else ""
        out += to_toml(v, name)
    return out


def merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# model processes seen from /proc
# --------------------------------------------------------------------------------------------


def _read_environ(pid: str) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        # state is the field after the parenthesised command name
        state = stat.rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return None
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, _, v = item.partition(b"=")
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def model_processes(data_dir: pathlib.Path | str) -> dict[int, dict[str, str]]:
    """pid -> environment of every live process that is a spillway model instance of this data dir."""
    wanted = {str(data_dir), os.path.realpath(str(data_dir))}
    wanted |= {w.rstrip("/") for w in wanted}
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        env = _read_environ(pid)
        if not env or "SPILLWAY_INSTANCE_ID" not in env:
            continue
        dd = env.get("SPILLWAY_DATA_DIR", "")
        if dd.rstrip("/") in wanted or os.path.realpath(dd) in wanted:
            out[int(pid)] = env
    return out


def instances_by_process(data_dir) -> dict[str, dict[str, Any]]:
    """instance id -> {"pids": [...], "type": ..., "model": ...} for this data dir's model processes."""
    out: dict[str, dict[str, Any]] = {}
    for pid, env in model_processes(data_dir).items():
        iid = env["SPILLWAY_INSTANCE_ID"]
        e = out.setdefault(
            iid,
            {
                "pids": [],
                "type": env.get("SPILLWAY_INSTANCE_TYPE"),
                "model": env.get("SPILLWAY_MODEL_NAME"),
                "env": env,
            },
        )
        e["pids"].append(pid)
    return out


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------
# polling
# --------------------------------------------------------------------------------------------


def poll(fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Call fn until it returns a truthy value; return that value. Fails the test on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# the server under test
# --------------------------------------------------------------------------------------------


class Server:
    def __init__(self, workdir: pathlib.Path, config: dict[str, Any], name: str = "server"):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.name = name
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "spillway.toml"
        self.config_path.write_text(to_toml(config))
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        # The embedded object store's S3 API port (None: [storage] backend = "s3").
        self.storage_port: int | None = None
        self.log_paths: list[pathlib.Path] = []
        self._clients: dict[tuple, Any] = {}
        self.starts = 0
        # The administrator key spillway wrote on its first start (None: [auth] mode = "none").
        self.credentials: tuple[str, str] | None = None
        # RLIMIT_NOFILE the server runs under: one number for soft and hard, or (soft, hard);
        # None: this process's.
        self.nofile: int | tuple[int, int] | None = None

    def _limits(self):
        import resource

        limits = self.nofile if isinstance(self.nofile, tuple) else (self.nofile, self.nofile)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Server":
        if not os.path.exists(BIN):
            pytest.fail(f"spillway binary not found at {BIN} (run `cargo build` or set SPILLWAY_BIN)")
        for attempt in range(3):
            self.port = free_port()
            self.starts += 1
            log = self.workdir / f"{self.name}-{self.starts}.log"
            self.log_paths.append(log)
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "info")
            env.pop("SPILLWAY_DATA_DIR", None)
            with open(log, "wb") as logf:
                self.proc = subprocess.Popen(
                    [
                        BIN,
                        "serve",
                        "--config",
                        str(self.config_path),
                        "--listen",
                        f"127.0.0.1:{self.port}",
                        "--data-dir",
                        str(self.data_dir),
                        # Any free port: parallel servers never collide on the default 7475.
                        "--storage-listen",
                        "127.0.0.1:0",
                    ],
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=str(self.workdir),
                    env=env,
                    start_new_session=True,
                    preexec_fn=self._limits if self.nofile else None,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(self.url + "/_spillway/health", timeout=2) as r:
                        if r.status == 200:
                            self._clients.clear()
                            self.credentials = read_credentials(self.data_dir / "credentials")
                            self.storage_port = self._storage_port(log)
                            return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"spillway did not answer /_spillway/health within {timeout}s\n{self.log_tail()}")
            if "in use" not in self.log_tail().lower():
                break  # not a port race: report it
        pytest.fail(f"spillway exited during startup (rc={self.proc.returncode})\n{self.log_tail()}")

    @staticmethod
    def _storage_port(log: pathlib.Path) -> int | None:
        """The port `serve` printed for the object store's S3 API (it prints it before the main
        listener answers), or None when it serves none."""
        found = re.findall(r"spillway storage \(S3 API\) listening on http://[0-9.]+:(\d+)",
                           log.read_text(errors="replace"))
        return int(found[-1]) if found else None

    @property
    def storage_url(self) -> str:
        assert self.storage_port, "this server serves no embedded object store"
        return f"http://127.0.0.1:{self.storage_port}"

    def log_tail(self, n: int = 60) -> str:
        if not self.log_paths:
            return ""
        try:
            lines = self.log_paths[-1].read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "--- server log tail ---\n" + "\n".join(lines[-n:])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def sigkill(self) -> None:
        """Crash the server (only the server process; its model processes are left as they are)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._clients.clear()

    def terminate(self, timeout: float = 30.0) -> int:
        """Graceful stop with SIGTERM; returns the exit code (SIGKILLs and fails if it hangs)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"spillway did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")
        self._clients.clear()
        return self.proc.returncode

    def restart(self) -> "Server":
        return self.start()

    # -- clients ------------------------------------------------------------------------------
    def client(
        self,
        service: str,
        retries: int = 1,
        read_timeout: float = 60,
        keys: tuple[str, str] | None = None,
        validate: bool = True,
    ):
        """A boto3 client signing with `keys` (default: the administrator's). `validate=False`
        turns off botocore's own parameter checks, so requests it would refuse (a missing member,
        a string under its `min` length) reach the server."""
        keys = keys or self.credentials or ("x", "x")
        key = (service, retries, read_timeout, self.port, keys, validate)
        if key not in self._clients:
            self._clients[key] = boto3.session.Session().client(
                service,
                # S3 calls go to the embedded object store's own listener, path-style.
                endpoint_url=self.storage_url if service == "s3" else self.url,
                region_name=REGION,
                aws_access_key_id=keys[0],
                aws_secret_access_key=keys[1],
                config=Config(
                    retries={"max_attempts": retries, "mode": "standard"},
                    read_timeout=read_timeout,
                    connect_timeout=5,
                    parameter_validation=validate,
                    s3={"addressing_style": "path"},
                ),
            )
            shapes.watch(self._clients[key])
        return self._clients[key]

    @property
    def s3(self):
        """boto3's `s3` client on the embedded object store's listener, as the administrator."""
        return self.client("s3")

    @property
    def sm(self):
        return self.client("sagemaker")

    @property
    def rt(self):
        return self.client("sagemaker-runtime")

    # -- raw HTTP -----------------------------------------------------------------------------
    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        sign: bool = True,
        keys: tuple[str, str] | None = None,
    ):
        """Returns (status, headers, body-bytes). Signed with SigV4 (botocore's signer) by
        `keys` (default: the administrator's) unless `sign` is false or auth is off."""
        headers = dict(headers or {})
        keys = keys or self.credentials
        if sign and keys:
            headers = signed_headers(self.url, method, path, body, headers, keys)
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def admin(self, method: str, path: str, body: Any = None):
        """Admin API call; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        status, _, raw = self.http(method, "/_spillway/" + path.lstrip("/"), data, hdrs)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"_raw": raw.decode(errors="replace")}
        return status, parsed

    def admin_get(self, path: str):
        status, body = self.admin("GET", path)
        assert status == 200, f"GET /_spillway/{path} -> {status} {body}"
        return body

    def sagemaker_raw(self, operation: str, payload: bytes | str | dict):
        """POST / with an awsJson1_1 body exactly as given; returns (status, parsed body)."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        status, _, raw = self.http(
            "POST",
            "/",
            payload,
            {
                "X-Amz-Target": f"SageMaker.{operation}",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"_raw": raw.decode(errors="replace")}
        return status, parsed

    # -- admin views --------------------------------------------------------------------------
    def events(self, endpoint: str) -> list[dict]:
        return self.admin_get(f"endpoints/{endpoint}/events")["events"]

    def instances(self, endpoint: str) -> list[dict]:
        return self.admin_get(f"endpoints/{endpoint}/instances")["instances"]

    def capacity(self) -> dict[str, dict]:
        return {e["instanceType"]: e for e in self.admin_get("capacity")["instanceTypes"]}

    def set_slots(self, itype: str, slots: int):
        status, body = self.admin("PUT", f"capacity/{itype}", {"slots": slots})
        assert status == 200, f"PUT capacity/{itype} -> {status} {body}"
        return body

    def processes(self):
        return instances_by_process(self.data_dir)

    # -- teardown -----------------------------------------------------------------------------
    def shutdown_and_check(self) -> list[str]:
        """SIGTERM the server, then make sure no model process of this data dir survives.

        Returns a list of problems (empty when clean). Leftover processes are killed either way."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("server did not exit within 30s of SIGTERM")
        deadline = time.monotonic() + 10
        left = model_processes(self.data_dir)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = model_processes(self.data_dir)
        if left:
            problems.append(
                "model processes left after the server stopped: "
                + ", ".join(f"{p} ({e.get('SPILLWAY_INSTANCE_TYPE')})" for p, e in left.items())
            )
            kill_pids(left)
        return problems


# --------------------------------------------------------------------------------------------
# credentials and signing
# --------------------------------------------------------------------------------------------


def read_credentials(path: pathlib.Path) -> tuple[str, str] | None:
    """The `spillway` profile of a shared-credentials file spillway wrote; None if absent."""
    import configparser

    if not path.exists():
        return None
    cp = configparser.ConfigParser()
    cp.read(path)
    sec = cp["spillway"]
    return sec["aws_access_key_id"], sec["aws_secret_access_key"]


def use_only_the_printed_profile(server, monkeypatch) -> None:
    """The environment a user has after pasting the lines spillway printed, and nothing else."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    for k, v in cli_environment(server).items():
        monkeypatch.setenv(k, v)


def sdk_sts_at_server(server, monkeypatch) -> None:
    """The SageMaker SDK asks STS for the account id (`Session.default_bucket()`) at
    `https://sts.<region>.amazonaws.com` whatever AWS_ENDPOINT_URL says
    (`sagemaker.utils.sts_regional_endpoint`); point that one call at spillway (docs/async.md,
    "The SageMaker SDK")."""
    import sagemaker.session

    monkeypatch.setattr(sagemaker.session, "sts_regional_endpoint", lambda region: server.url)


def cli_environment(server) -> dict[str, str]:
    """What spillway prints for boto3 and the aws CLI: the generated profile, the endpoint, the
    region; and nothing else of the caller's AWS configuration."""
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(server.data_dir / "credentials"),
        "AWS_PROFILE": "spillway",
        "AWS_ENDPOINT_URL": server.url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    }
    if server.storage_port:  # S3 calls go to the embedded object store's listener
        env["AWS_ENDPOINT_URL_S3"] = server.storage_url
    if server.credentials is None:  # [auth] mode = "none": any key signs
        env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
        env.pop("AWS_PROFILE")
    return env


def service_of(path: str, headers: dict, body: bytes | None = None) -> str:
    """The SigV4 service name a request to spillway is signed for, as the SDKs choose it."""
    target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not target and ctype.startswith("application/x-www-form-urlencoded"):
        return "sts" if b"Version=2011-06-15" in (body or b"") else "iam"
    if path.startswith("/_spillway") or path.startswith("/metrics"):
        return "spillway"
    if target.startswith("AnyScaleFrontendService."):
        return "application-autoscaling"
    if target.startswith("GraniteServiceVersion20100801."):
        return "monitoring"
    if target.startswith("com.amazonaws.cloudtrail"):
        return "cloudtrail"
    if target.startswith("Logs_20140328."):
        return "logs"
    return "sagemaker"


def signed_headers(url: str, method: str, path: str, body: bytes | None, headers: dict, keys, service: str | None = None) -> dict:
    """`headers` plus botocore's SigV4 headers for the request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url + path, data=body or b"", headers=dict(headers))
    SigV4Auth(Credentials(*keys), service or service_of(path, headers, body), REGION).add_auth(req)
    return dict(req.headers.items())


# --------------------------------------------------------------------------------------------
# request builders
# --------------------------------------------------------------------------------------------


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def create_model(sm, name: str, image: str = "builtin:echo", env: dict | None = None, **extra):
    container: dict[str, Any] = {"Image": image}
    if env:
        container["Environment"] = env
    for k in ("ModelDataUrl",):
        if k in extra:
            container[k] = extra.pop(k)
    return sm.create_model(ModelName=name, PrimaryContainer=container, **extra)


def pools(*specs) -> list[dict]:
    """pools(("ml.g6e.2xlarge", 1), ("ml.m5.xlarge", 2, "override-model"))"""
    out = []
    for spec in specs:
        p = {"InstanceType": spec[0], "Priority": spec[1]}
        if len(spec) > 2 and spec[2]:
            p["ModelNameOverride"] = spec[2]
        out.append(p)
    return out


def pooled_variant(model: str, pool_list: list[dict], count: int = 1, name: str = "AllTraffic", **extra):
    v = {
        "VariantName": name,
        "ModelName": model,
        "InitialInstanceCount": count,
        "InstancePools": pool_list,
        "VariantInstanceProvisionTimeoutInSeconds": 600,
    }
    v.update(extra)
    return v


def single_variant(model: str, itype: str = "ml.m5.xlarge", count: int = 1, name: str = "AllTraffic", **extra):
    v = {"VariantName": name, "ModelName": model, "InitialInstanceCount": count, "InstanceType": itype}
    v.update(extra)
    return v


def deploy_echo(sm, endpoint: str, model: str = "m", itype: str = "ml.m5.xlarge", env: dict | None = None, **variant):
    """Deploys `endpoint` as one variant of builtin:echo (with `env`) on `itype` and waits until it
    is InService; `variant` goes to single_variant (count, RoutingConfig, ...)."""
    create_model(sm, model, env=env)
    deploy(sm, endpoint, [single_variant(model, itype, **variant)])
    return wait_in_service(sm, endpoint)


def deploy(sm, endpoint: str, variants: list[dict], config: str | None = None, **config_extra) -> str:
    config = config or f"{endpoint}-cfg"
    sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=variants, **config_extra)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    return config


def describe(sm, endpoint: str) -> dict:
    return sm.describe_endpoint(EndpointName=endpoint)


def wait_status(sm, endpoint: str, want=("InService",), timeout: float = 60.0, fail_on=("Failed",)) -> dict:
    """Poll DescribeEndpoint until EndpointStatus is in `want`. A status in fail_on ends the wait with a
    failed test (its FailureReason shown)."""
    want = set([want] if isinstance(want, str) else want)
    fail_on = set(fail_on) - want
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = sm.describe_endpoint(EndpointName=endpoint)
        st = last["EndpointStatus"]
        if st in want:
            return last
        if st in fail_on:
            pytest.fail(
                f"endpoint {endpoint} went {st} while waiting for {sorted(want)}: "
                f"FailureReason={last.get('FailureReason')!r}"
            )
        time.sleep(0.2)
    pytest.fail(
        f"endpoint {endpoint} not {sorted(want)} after {timeout}s; last: "
        f"{last and last.get('EndpointStatus')} {last and last.get('FailureReason')!r}"
    )


def wait_in_service(sm, endpoint: str, timeout: float = 60.0) -> dict:
    return wait_status(sm, endpoint, ("InService",), timeout)


def waiter_in_service(sm, endpoint: str) -> dict:
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    return sm.describe_endpoint(EndpointName=endpoint)


def error_of(fn: Callable, *args, **kwargs) -> tuple[str, str, int]:
    """Call fn expecting a ClientError; returns (code, message, http status)."""
    with pytest.raises(ClientError) as ei:
        fn(*args, **kwargs)
    err = ei.value.response.get("Error", {})
    status = ei.value.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return err.get("Code", ""), err.get("Message", ""), status


def assert_validation(code: str, message: str, *fields: str, any_of: bool = False):
    assert code == "ValidationException", f"expected ValidationException, got {code}: {message}"
    low = message.lower()
    hits = [f for f in fields if f.lower() in low]
    if any_of:
        assert hits, f"message does not name any of {fields}: {message!r}"
    else:
        missing = [f for f in fields if f.lower() not in low]
        assert not missing, f"message does not name {missing}: {message!r}"


def invoke(rt, endpoint: str, body: bytes | str = b"hello", content_type: str = "text/plain", **kw):
    """Invoke; returns (echo payload as dict (or raw bytes if not JSON), lower-cased headers, response)."""
    resp = rt.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type, **kw)
    raw = resp["Body"].read()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = raw
    headers = {k.lower(): v for k, v in resp["ResponseMetadata"]["HTTPHeaders"].items()}
    return payload, headers, resp


def launch_attempts(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("kind") == "LaunchAttempt"]


def pool_counts(variant_summary: dict) -> list[tuple[str, int]]:
    return [(p["InstanceType"], p["CurrentInstanceCount"]) for p in variant_summary.get("InstancePools", [])]


def type_counter(instances: Iterable[dict], key: str = "instanceType") -> collections.Counter:
    return collections.Counter(i[key] for i in instances)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def to_epoch(t) -> float:
    return t.timestamp() if isinstance(t, dt.datetime) else float(t)


def python() -> str:
    return sys.executable
