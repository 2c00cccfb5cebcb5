"""Fixtures: start the real spillway binary with a generated config, hand out boto3 clients, and on
teardown stop it and check that no model process of its data dir is left behind."""

from __future__ import annotations

import pytest

import shapes
import spw


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class _Servers:
    def __init__(self, base_dir, request=None):
        self.base_dir = base_dir
        self.servers: list[spw.Server] = []
        # Tests marked `unauthenticated` send hand-written HTTP bytes (framing, routing) and run
        # their servers with [auth] mode = "none"; test_auth.py covers signed raw requests.
        self.unauthenticated = bool(request and request.node.get_closest_marker("unauthenticated"))

    def __call__(self, capacity=None, provisioning=None, config=None, name=None, start=True) -> spw.Server:
        cfg = spw.merge(spw.DEFAULT_CONFIG, config)
        if self.unauthenticated:
            cfg = spw.merge(cfg, {"auth": {"mode": "none"}})
        if provisioning:
            cfg["provisioning"].update(provisioning)
        if capacity:
            cfg["provider"]["local"]["capacity"].update(capacity)
        name = name or f"server{len(self.servers)}"
        srv = spw.Server(self.base_dir / name, cfg, name=name)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def finish(self, failed: bool):
        problems = []
        for srv in self.servers:
            if failed:
                print(f"\n[{srv.name}] {srv.log_tail(120)}")
            problems += [f"[{srv.name}] {p}" for p in srv.shutdown_and_check()]
        if problems:
            pytest.fail("teardown found problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def answers_match_botocore_shapes():
    """Every JSON answer a test's boto3 clients received must fit its output shape (shapes.py)."""
    shapes.PROBLEMS.clear()
    yield
    problems, shapes.PROBLEMS[:] = list(dict.fromkeys(shapes.PROBLEMS)), []
    if problems:
        pytest.fail("answers that do not fit botocore's output shapes:\n" + "\n".join(problems[:20]), pytrace=False)


@pytest.fixture
def start_server(tmp_path, request):
    """Factory: start_server(capacity={...}, provisioning={...}, config={...}) -> running spw.Server."""
    servers = _Servers(tmp_path, request)
    yield servers
    rep = getattr(request.node, "rep_call", None)
    servers.finish(failed=bool(rep and rep.failed))


@pytest.fixture
def server(start_server) -> spw.Server:
    return start_server()


@pytest.fixture
def sm(server):
    return server.sm


@pytest.fixture
def rt(server):
    return server.rt


@pytest.fixture(scope="module")
def module_server(tmp_path_factory, request):
    """One server shared by a module's tests (they must use unique resource names)."""
    servers = _Servers(tmp_path_factory.mktemp(request.module.__name__.replace(".", "_")), request)
    srv = servers()
    yield srv
    servers.finish(failed=request.session.testsfailed > 0)
