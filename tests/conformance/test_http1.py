"""HTTP/1.1 conformance of `POST /endpoints/{name}/invocations`, byte for byte.

Client side: raw sockets where framing matters (keep-alive, pipelining, `Connection: close`, slow
and chunked request bodies, `Expect: 100-continue`, HTTP/1.0, malformed requests), boto3's
sagemaker-runtime where it is what users do. Model side: `models/raw_model.py`, a raw-socket model
server whose answer (Content-Length, chunked with extensions and trailers, close-delimited,
`Connection: close`, an interim 100, 204, 500/404, a slow head, many headers, a short keep-alive
timer, garbage) is chosen by the request body, so one instance serves every case.

What the hyper-based router answers, observed and pinned here (a rewrite must keep it):

* A 200 invocation (model answered with Content-Length) carries exactly these headers:
      HTTP/1.1 200 OK
      content-type: application/json
      x-amzn-sagemaker-custom-attributes: raw-model=len
      x-amzn-invoked-production-variant: AllTraffic
      x-spillway-instance-type: ml.m5.xlarge
      content-length: 260
      date: Fri, 27 Nov 2026 05:33:06 GMT
  A model answer without a length (chunked or close-delimited) goes out `transfer-encoding:
  chunked` instead of content-length (chunk boundaries follow the model's; its chunk extensions
  and trailers are not passed on, not even to a client sending `TE: trailers`). Other model
  headers (`X-Raw-Model-Private`, the 60 `X-Big-*`) are not passed on. A model 204 becomes
  `200` with `content-length: 0`.
* The model sees `host` (the instance address), `content-type`/`accept`/custom attributes when the
  client sent them, and `content-length` when the client sent one (a chunked client body goes on
  chunked); never `expect`, `connection`, `te` or other client headers.
* `Expect: 100-continue`: `HTTP/1.1 100 Continue` comes at once (before the body) for a known
  endpoint; an unknown endpoint is answered 400 ValidationError without the body being sent.
  A model's own interim `100 Continue` is swallowed: the client sees only the final 200.
* A model answering garbage (not HTTP) -> 503, `x-amzn-ErrorType: ServiceUnavailable` ("The model
  on instance ... could not be reached: invalid HTTP version parsed"); a model 500/404 -> 424
  ModelError with OriginalStatusCode/OriginalMessage.
* HTTP/1.0 request without keep-alive: `HTTP/1.0 200 OK`, content-length when the model gave one,
  a close-delimited body otherwise (never chunked), then the connection is closed.
* Malformed requests: a garbage request line, a header line without a colon, `Content-Length:
  abc` -> `400 Bad Request` + `connection: close` + close; more than 100 header lines -> 431 +
  close; a single header of 70 000 or 420 000 bytes is still served (200); 500 000 bytes and more
  -> `431 Request Header Fields Too Large` + close. Content-Length together with chunked: the body
  is read as chunked and the connection is closed after the answer. A malformed chunked body
  (after a valid head) -> 503 ServiceUnavailable ("... error from user's Body stream"), then close.
* A client stalled mid-head or mid-body holds up nobody else (hyper's header read timeout is 30 s).
* Every response, errors included, carries a `date` header.

Abuse (the last test): hundreds of misbehaving clients at once leave no connection behind, no
half-read model answer in the pool, and no answer sent to the wrong request.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import shlex
import socket
import time

import botocore.exceptions
import pytest

import spw

# Hand-written HTTP bytes test framing and routing, not authentication: these servers run with
# [auth] mode = "none" (test_auth.py sends signed raw requests through both HTTP paths).
pytestmark = pytest.mark.unauthenticated

RAW_MODEL = spw.HERE / "models" / "raw_model.py"
EP = "raw"
PATH = f"/endpoints/{EP}/invocations"
# Timeouts are generous: the machine may be loaded; nothing here asserts an upper time bound.
READ_TIMEOUT = 30.0
# How long "nothing arrives" is watched for (only ever used to check an absence).
QUIET = 1.0
# Headers the router may pass from the model to the client (besides its own and framing).
ROUTER_OWN = {"x-amzn-requestid", "x-amzn-invoked-production-variant", "x-spillway-instance-type", "date"}
FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}
# Headers the model may see (the router forwards these and sets host and framing).
TO_MODEL = {
    "host", "content-length", "transfer-encoding", "content-type", "accept",
    "x-amzn-sagemaker-custom-attributes", "x-amzn-sagemaker-inference-id",
}


# --------------------------------------------------------------------------------------------
# a small HTTP/1.1 client on a raw socket
# --------------------------------------------------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers, body, trailers, chunk_exts, framing, interim):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self.trailers = trailers
        self.chunk_exts = chunk_exts
        self.framing = framing  # "length", "chunked", "close" or "none"
        self.interim = interim  # status codes of 1xx responses read before this one

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        vals = self.all(name)
        assert len(vals) <= 1, f"header {name} sent {len(vals)} times: {vals}"
        return vals[0] if vals else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.version} {self.status} {self.headers} {self.body[:300]!r}>"


class Conn:
    """One client connection; keeps unread bytes between responses (pipelining)."""

    def __init__(self, port: int, timeout: float = READ_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, timeout: float | None = None) -> bool:
        """Reads more; False at EOF (or a reset)."""
        if self.eof:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed while waiting for {sep!r}; got {self.buf[:300]!r}")
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self._until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")[:-2]
        version, status, *reason = lines[0].split(" ", 2)
        assert version.startswith("HTTP/1."), f"not an HTTP/1.x status line: {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            assert colon and name == name.strip(), f"malformed response header line {line!r}"
            headers.append((name, value.strip()))
        return version, int(status), (reason[0] if reason else ""), headers

    def read_response(self, method: str = "POST") -> Response:
        """Reads one response (1xx interim responses are collected into `.interim`)."""
        interim = []
        while True:
            version, status, reason, headers = self.read_head()
            if 100 <= status < 200:
                interim.append(status)
                continue
            break
        get = lambda n: [v for k, v in headers if k.lower() == n]  # noqa: E731
        te, cl = get("transfer-encoding"), get("content-length")
        body, trailers, exts = b"", [], []
        if method == "HEAD" or status in (204, 304):
            framing = "none"
        elif te:
            assert not cl, f"both transfer-encoding and content-length: {headers}"
            assert te[-1].lower().split(",")[-1].strip() == "chunked", f"transfer-encoding {te}"
            framing = "chunked"
            while True:
                line = self._until(b"\r\n")[:-2].decode("latin-1")
                size, _, ext = line.partition(";")
                if ext:
                    exts.append(ext)
                size = int(size.strip(), 16)
                if size == 0:
                    break
                body += self._exact(size)
                assert self._exact(2) == b"\r\n", "chunk data not followed by CRLF"
            while (line := self._until(b"\r\n")) != b"\r\n":
                trailers.append(line[:-2].decode("latin-1"))
        elif cl:
            assert len(set(cl)) == 1, f"conflicting content-length {cl}"
            framing = "length"
            body = self._exact(int(cl[0]))
        else:
            framing = "close"
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(version, status, reason, headers, body, trailers, exts, framing, interim)

    def closed(self, timeout: float = READ_TIMEOUT) -> bool:
        """True if the peer closes the connection (with nothing more sent) within `timeout`."""
        if self.buf:
            return False
        try:
            return not self._fill(timeout) and not self.buf
        except socket.timeout:
            return False

    def quiet(self, timeout: float = QUIET) -> bool:
        """True if nothing arrives (and the connection stays open) for `timeout` seconds."""
        if self.buf:
            return False
        try:
            self._fill(timeout)  # data or EOF
            return False
        except socket.timeout:
            return True


def post(body: bytes | str, path: str = PATH, headers: dict | None = None, version: str = "1.1") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"Host": "spillway", "Content-Type": "text/plain", **(headers or {})}
    hdrs.setdefault("Content-Length", str(len(body)))
    head = f"POST {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None)
    return head.encode() + b"\r\n" + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: spillway\r\n\r\n".encode()


def assert_date(resp: Response):
    date = resp.get("date")
    assert date, f"no date header: {resp.headers}"
    assert date.endswith(" GMT") and email.utils.parsedate_to_datetime(date), date


def assert_echo(resp: Response, mode: str, body: str | None = None) -> dict:
    """A 200 carrying raw_model's echo of `body` (default: the mode keyword) in `mode`, with the
    headers the router must set and pass, and none it must not."""
    assert resp.status == 200, resp
    echo = resp.json()
    assert echo["mode"] == mode, echo
    assert echo["body"] == (mode if body is None else body), echo["body"][:200]
    assert resp.get("content-type") == "application/json", resp.headers
    assert resp.get("x-amzn-sagemaker-custom-attributes") == f"raw-model={mode}", resp.headers
    assert resp.get("x-amzn-invoked-production-variant") == "AllTraffic", resp.headers
    assert resp.get("x-spillway-instance-type") == "ml.m5.xlarge", resp.headers
    assert_date(resp)
    leaked = resp.names() - ROUTER_OWN - FRAMING - {"content-type", "x-amzn-sagemaker-custom-attributes"}
    assert not leaked, f"headers that are neither the router's nor passed on: {leaked}"
    seen = {k.lower() for k, _ in echo["headers"]}
    assert seen <= TO_MODEL, f"the model saw unexpected headers: {seen - TO_MODEL}"
    assert "host" in seen, echo["headers"]
    return echo


def model_headers(echo: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in echo["headers"]}


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(module_server):
    """The module's server with endpoint `raw` (one ml.m5.xlarge instance of raw_model.py)."""
    sm = module_server.sm
    spw.create_model(sm, "raw-model", image=f"{shlex.quote(spw.python())} {shlex.quote(str(RAW_MODEL))}")
    spw.deploy(sm, EP, [spw.single_variant("raw-model", "ml.m5.xlarge")])
    spw.wait_in_service(sm, EP)
    return module_server


def conn(srv) -> Conn:
    return Conn(srv.port)


def still_serving(srv):
    """A fresh connection gets an invocation and a control-plane request answered."""
    with conn(srv) as c:
        c.send(post("len:still"))
        assert_echo(c.read_response(), "len", "len:still")
        c.send(get("/_spillway/health"))
        r = c.read_response("GET")
        assert r.status == 200 and r.json() == {"status": "ok"}, r


# --------------------------------------------------------------------------------------------
# client-side framing
# --------------------------------------------------------------------------------------------


def test_keep_alive_serves_sequential_requests_on_one_connection(srv):
    with conn(srv) as c:
        for i, mode in enumerate(["len", "chunked", "eof", "nocontent", "len", "close", "len"]):
            body = mode if mode == "nocontent" else f"{mode}:req{i}"
            c.send(post(body))
            r = c.read_response()
            if mode == "nocontent":
                assert (r.status, r.body) == (200, b""), r
                continue
            assert_echo(r, mode, body)
        assert c.quiet(), "the server sent something nobody asked for"


def test_pipelined_requests_are_answered_in_order(srv):
    with conn(srv) as c:
        c.send(post("len:first") + post("chunked:second") + get("/_spillway/health") + post("eof:fourth"))
        assert_echo(c.read_response(), "len", "len:first")
        assert_echo(c.read_response(), "chunked", "chunked:second")
        r = c.read_response("GET")
        assert (r.status, r.json()) == (200, {"status": "ok"}), r
        assert_echo(c.read_response(), "eof", "eof:fourth")
        # and the connection is still usable afterwards
        c.send(post("len:fifth"))
        assert_echo(c.read_response(), "len", "len:fifth")


def test_connection_close_from_the_client_is_answered_then_closed(srv):
    with conn(srv) as c:
        c.send(post("len:bye", headers={"Connection": "close"}))
        r = c.read_response()
        assert_echo(r, "len", "len:bye")
        assert (r.get("connection") or "").lower() == "close", r.headers
        assert c.closed(), "the server kept the connection open after Connection: close"
    with conn(srv) as c:  # same with a response the router has to chunk
        c.send(post("chunked:bye", headers={"Connection": "close"}))
        assert_echo(c.read_response(), "chunked", "chunked:bye")
        assert c.closed()


def test_a_content_length_body_sent_slowly_in_pieces_reaches_the_model_whole(srv):
    body = b"len:" + bytes(range(32, 127)) * 40
    with conn(srv) as c:
        c.send(post(b"", headers={"Content-Length": str(len(body))}))  # the head alone
        time.sleep(0.3)
        for i in range(0, len(body), 1000):
            c.send(body[i : i + 1000])
            time.sleep(0.15)
        echo = assert_echo(c.read_response(), "len", body.decode())
        assert model_headers(echo).get("content-length") == str(len(body)), echo["headers"]
        assert "transfer-encoding" not in model_headers(echo), echo["headers"]


def test_a_head_sent_slowly_is_waited_for(srv):
    msg = post("len:slow head")
    with conn(srv) as c:
        for i in range(0, len(msg), 9):
            c.send(msg[i : i + 9])
            time.sleep(0.02)
        assert_echo(c.read_response(), "len", "len:slow head")


def test_a_chunked_request_body_with_extensions_and_trailers(srv):
    chunks = b"".join(
        [
            b"4;name=value\r\nlen:\r\n",
            b"5;flag\r\nhello\r\n",
            b"1A\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n",
            b"0\r\nX-Checksum: 1234\r\nX-Other: yes\r\n\r\n",
        ]
    )
    with conn(srv) as c:
        c.send(post(b"", headers={"Transfer-Encoding": "chunked", "Content-Length": None}))
        time.sleep(0.2)
        c.send(chunks[:17])
        time.sleep(0.2)
        c.send(chunks[17:])
        echo = assert_echo(c.read_response(), "len", "len:helloabcdefghijklmnopqrstuvwxyz")
        # then the connection carries on with a Content-Length request
        c.send(post("len:after"))
        assert_echo(c.read_response(), "len", "len:after")
    # hyper passes a chunked client body on chunked; a proxy that buffers it must get the length right
    assert model_headers(echo).get("content-length", "35") == "35", echo["headers"]


def test_expect_100_continue_is_answered_before_the_body_is_sent(srv):
    with conn(srv) as c:
        c.send(post(b"", headers={"Expect": "100-continue", "Content-Length": "12"}))
        # The current binary sends the interim response at once. A client waits a while for it
        # (curl: 1 s) and then sends the body anyway; 5 s leaves room for a loaded machine.
        c.timeout = 5.0
        try:
            head = c._until(b"\r\n\r\n")
        except socket.timeout:
            pytest.fail(f"no 100 Continue within 5 s; got {c.buf!r}")
        c.timeout = READ_TIMEOUT
        assert head.startswith(b"HTTP/1.1 100 "), head
        c.send(b"len:expected")
        r = c.read_response()
        assert r.interim == [], r.interim
        echo = assert_echo(r, "len", "len:expected")
        assert "expect" not in model_headers(echo)
        c.send(post("len:next"))
        assert_echo(c.read_response(), "len", "len:next")


def test_expect_100_continue_with_the_body_sent_at_once(srv):
    """curl sends the body anyway after a short wait: an interim 100 may come or not, then the 200."""
    with conn(srv) as c:
        c.send(post("len:eager", headers={"Expect": "100-continue"}))
        r = c.read_response()
        assert r.interim in ([], [100]), r.interim
        assert_echo(r, "len", "len:eager")
        c.send(post("len:next"))
        assert_echo(c.read_response(), "len", "len:next")


def test_expect_100_continue_to_an_unknown_endpoint_gets_the_final_answer_at_once(srv):
    with conn(srv) as c:
        c.send(post(b"", path="/endpoints/nowhere/invocations", headers={"Expect": "100-continue", "Content-Length": "5"}))
        r = c.read_response()  # without the body ever being sent
        assert r.interim == [], r.interim
        assert r.status == 400 and r.get("x-amzn-errortype") == "ValidationError", r
        assert r.json()["__type"] == "ValidationError"
        assert_date(r)


def test_http_1_0_request_is_answered_and_closed(srv):
    with conn(srv) as c:
        c.send(post("len:old", version="1.0", headers={"Host": None}))
        r = c.read_response()
        assert r.version in ("HTTP/1.0", "HTTP/1.1"), r
        assert_echo(r, "len", "len:old")
        assert r.framing in ("length", "close"), r.framing
        assert c.closed(), "an HTTP/1.0 connection without keep-alive was left open"
    # A model answer without a length cannot go out chunked to an HTTP/1.0 client.
    for mode in ("chunked", "eof"):
        with conn(srv) as c:
            c.send(post(f"{mode}:old", version="1.0"))
            r = c.read_response()
            assert r.framing in ("length", "close"), (mode, r.headers)
            assert_echo(r, mode, f"{mode}:old")
            assert c.closed()


def test_content_length_and_chunked_together_is_not_read_by_length(srv):
    """Request smuggling guard: with both, the body is chunked (or the request is refused); the
    bytes after the chunked body are never taken as this request's body."""
    smuggled = (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\nlen:abc\r\n0\r\n\r\n"
    ) + get("/_spillway/health")
    with conn(srv) as c:
        c.send(smuggled)
        r = c.read_response()
        if r.status == 200:
            assert_echo(r, "len", "len:abc")
            # hyper closes the connection after such a request; answering the next one is fine too
            if not c.closed():
                r2 = c.read_response("GET")
                assert (r2.status, r2.json()) == (200, {"status": "ok"}), r2
        else:
            assert 400 <= r.status < 500, r
    still_serving(srv)


# --------------------------------------------------------------------------------------------
# every model behaviour, through the router
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["len", "chunked", "eof", "close", "continue", "slowhead", "bigheaders", "dropidle"])
def test_model_answer_passes_through_with_correct_framing(srv, mode):
    body = f"{mode}:payload-{mode}"
    with conn(srv) as c:
        c.send(post(body, headers={"X-Amzn-SageMaker-Custom-Attributes": "client=1", "Accept": "application/json"}))
        r = c.read_response()
        echo = assert_echo(r, mode, body)
        assert r.interim == [], f"an interim response reached the client: {r.interim}"
        seen = model_headers(echo)
        assert seen.get("x-amzn-sagemaker-custom-attributes") == "client=1", seen
        assert seen.get("accept") == "application/json", seen
        assert seen.get("content-length") == str(len(body)), seen
        if mode in ("chunked", "eof"):
            # no length from the model: chunked to an HTTP/1.1 client, trailers and extensions dropped
            assert r.framing == "chunked", r.headers
        else:
            # the model's Content-Length goes through as it is
            assert r.framing == "length", r.headers
        assert "x-raw-trailer" not in {t.split(":")[0].lower() for t in r.trailers}
        assert not any(k.lower().startswith("x-big-") for k, _ in r.headers)
        # The client connection stays usable whatever the model did with its own.
        c.send(post("len:follow-up"))
        assert_echo(c.read_response(), "len", "len:follow-up")


def test_model_204_is_an_empty_200(srv):
    with conn(srv) as c:
        c.send(post("nocontent"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b""), r
        assert r.get("content-length") == "0", r.headers
        assert r.get("x-amzn-sagemaker-custom-attributes") == "raw-model=nocontent"
        assert r.get("x-amzn-invoked-production-variant") == "AllTraffic"
        assert_date(r)
        c.send(post("len:after-204"))
        assert_echo(c.read_response(), "len", "len:after-204")


def test_response_headers_of_a_200_invocation(srv):
    with conn(srv) as c:
        c.send(post("len"))
        r = c.read_response()
        assert_echo(r, "len")
        assert r.version == "HTTP/1.1" and r.reason == "OK", r
        # exactly what the hyper router sends (see the module docstring)
        assert r.names() == {
            "x-amzn-requestid", "content-type", "x-amzn-sagemaker-custom-attributes",
            "x-amzn-invoked-production-variant", "x-spillway-instance-type", "content-length", "date",
        }, r.headers
        assert int(r.get("content-length")) == len(r.body)


@pytest.mark.parametrize("mode,status", [("err500", 500), ("err404", 404)])
def test_model_error_status_is_a_424_model_error(srv, mode, status):
    with conn(srv) as c:
        c.send(post(mode))
        r = c.read_response()
        assert r.status == 424, r
        assert r.get("x-amzn-errortype") == "ModelError", r.headers
        assert r.get("content-type") == "application/x-amz-json-1.1", r.headers
        assert_date(r)
        doc = r.json()
        assert doc["__type"] == "ModelError"
        assert doc["OriginalStatusCode"] == status
        assert doc["OriginalMessage"] == f"model says no ({mode})"
        assert doc["ErrorCode"] == ("SERVER_ERROR_FROM_MODEL" if status >= 500 else "CLIENT_ERROR_FROM_MODEL")
        c.send(post("len:after-error"))
        assert_echo(c.read_response(), "len", "len:after-error")
    # and as boto3 sees it
    rt = srv.client("sagemaker-runtime", retries=0)
    with pytest.raises(rt.exceptions.ModelError) as ei:
        rt.invoke_endpoint(EndpointName=EP, Body=mode.encode())
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert ei.value.response["OriginalStatusCode"] == status
    assert ei.value.response["OriginalMessage"] == f"model says no ({mode})"


def test_model_answering_garbage_is_an_aws_error_and_the_endpoint_keeps_serving(srv):
    with conn(srv) as c:
        c.send(post("garbage"))
        r = c.read_response()
        # current binary: 503 ServiceUnavailable, "... could not be reached: invalid HTTP version parsed"
        assert r.status == 503, r
        assert r.get("x-amzn-errortype") == "ServiceUnavailable", r.headers
        doc = r.json()
        assert doc["__type"] == "ServiceUnavailable" and "could not be reached" in doc["message"], doc
        assert_date(r)
        c.send(post("len:after-garbage"))
        assert_echo(c.read_response(), "len", "len:after-garbage")
    rt = srv.client("sagemaker-runtime", retries=0)
    for _ in range(3):
        code, _, status = spw.error_of(rt.invoke_endpoint, EndpointName=EP, Body=b"garbage")
        assert (code, status) == ("ServiceUnavailable", 503)
        out = rt.invoke_endpoint(EndpointName=EP, Body=b"len:ok")
        assert json.loads(out["Body"].read())["body"] == "len:ok"


@pytest.mark.parametrize("mode", ["len", "chunked", "eof", "close", "continue", "nocontent", "slowhead", "bigheaders"])
def test_boto3_invoke_sees_the_model_answer(srv, mode):
    rt = srv.client("sagemaker-runtime", retries=0)
    resp = rt.invoke_endpoint(
        EndpointName=EP, Body=f"{mode}:boto".encode() if mode != "nocontent" else b"nocontent",
        ContentType="text/csv", CustomAttributes="c=2",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert resp["CustomAttributes"] == f"raw-model={mode}"
    raw = resp["Body"].read()
    if mode == "nocontent":
        assert raw == b""
        return
    assert resp["ContentType"] == "application/json"
    echo = json.loads(raw)
    assert (echo["mode"], echo["body"]) == (mode, f"{mode}:boto")
    seen = model_headers(echo)
    assert seen["content-type"] == "text/csv" and seen["x-amzn-sagemaker-custom-attributes"] == "c=2", seen


def test_connections_the_model_closes_are_not_reused(srv):
    """After answers that end the model connection (close, eof, garbage) and after a model's short
    keep-alive timer ran out (dropidle), the next invocation, without retries, still succeeds."""
    rt = srv.client("sagemaker-runtime", retries=0)

    def invoke(body: bytes) -> dict:
        return json.loads(rt.invoke_endpoint(EndpointName=EP, Body=body)["Body"].read())

    for mode in ("close", "eof", "close", "eof"):
        assert invoke(mode.encode())["mode"] == mode
        assert invoke(b"len:next")["body"] == "len:next"
    fresh = 0
    for _ in range(3):
        first = invoke(b"dropidle")
        assert first["mode"] == "dropidle"
        time.sleep(0.5)  # the model closes its side 0.2 s after answering
        second = invoke(b"len:after-idle")
        assert second["body"] == "len:after-idle"
        fresh += second["conn"] != first["conn"]
    # (a model starved of CPU past its timer may still have served on the old connection: once is
    # enough to show the scenario happened)
    assert fresh, "the model never closed its idle connection: the test did not test anything"


def test_large_bodies_both_ways(srv):
    payload = "len:" + "0123456789abcdef" * 32768  # 512 KiB
    with conn(srv) as c:
        c.send(post(payload))
        assert_echo(c.read_response(), "len", payload)
        chunked = "chunked:" + payload
        c.send(post(chunked))
        r = c.read_response()
        assert r.framing == "chunked"
        assert_echo(r, "chunked", chunked)


# --------------------------------------------------------------------------------------------
# malformed and stalled clients
# --------------------------------------------------------------------------------------------

MALFORMED = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "binary-request-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "header-without-colon": b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nContent-Length: 3\r\n\r\nlen",
    "bad-content-length": b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nlen",
    "conflicting-content-length": b"POST " + PATH.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nlen!",
    "negative-content-length": b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nlen",
    "list-content-length": b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nlen",
    "unknown-transfer-encoding": b"POST " + PATH.encode()
    + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n3\r\nlen\r\n0\r\n\r\n",
    "one-1MiB-header": b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\nContent-Length: 3\r\n\r\nlen",
}


def _refused(c: Conn) -> str:
    """The answer to a request that must be refused: a 4xx status (after which the connection may
    close), or a close with nothing sent. Fails on a 2xx/5xx or on silence (a hang)."""
    try:
        r = c.read_response()
    except EOFError:
        assert not c.buf, f"closed mid-response: {c.buf[:200]!r}"
        return "closed"
    except socket.timeout:
        pytest.fail(f"no answer and no close within {READ_TIMEOUT}s")
    assert 400 <= r.status < 500, r
    assert_date(r)
    return str(r.status)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_refused_and_the_server_keeps_serving(srv, case):
    # current binary: 400 (431 for the 1 MiB header) with connection: close, then close; a
    # repeated identical Content-Length is accepted (not listed here)
    with conn(srv) as c:
        try:
            c.send(MALFORMED[case])
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us while we were still sending: fine, as long as it did not hang
        _refused(c)
    still_serving(srv)


@pytest.mark.parametrize(
    "chunks", [b"zz\r\nlen:\r\n0\r\n\r\n", b"4\r\nlen:XX0\r\n\r\n"], ids=["bad-chunk-size", "no-crlf-after-chunk"]
)
def test_a_malformed_chunked_body_is_an_error_then_a_close(srv, chunks):
    """The head is valid, so the request is on its way to the model when its body turns out
    malformed: that is the client's error (400 ValidationError naming the body), and the
    connection closes because its framing is lost. A bare close is fine too (the answer may
    race the close); a 2xx, a 5xx or keeping the connection is not."""
    with conn(srv) as c:
        c.send(post(b"", headers={"Transfer-Encoding": "chunked", "Content-Length": None}) + chunks)
        try:
            r = c.read_response()
        except EOFError:
            assert not c.buf, f"closed mid-response: {c.buf[:200]!r}"
            r = None
        if r is not None:
            assert r.status == 400, r
            assert_date(r)
            assert r.get("x-amzn-errortype") == "ValidationError", r.headers
            assert "Body" in r.json()["message"], r.json()
            assert c.closed(), "the connection was kept after a body whose framing is lost"
    still_serving(srv)


@pytest.mark.parametrize("size", [70_000, 420_000])
def test_a_huge_header_is_served_or_refused_never_hung(srv, size):
    """A single header line over 64 KiB / over 400 KiB: the current binary serves both (its limit
    lies between 420 000 and 500 000 bytes of head); refusing with a 4xx or closing is fine too."""
    msg = post("len:huge", headers={"X-Huge": "h" * size})
    with conn(srv) as c:
        try:
            c.send(msg)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except EOFError:
            r = None  # a clean close
        except socket.timeout:
            pytest.fail(f"no answer and no close within {READ_TIMEOUT}s")
        if r is not None and r.status == 200:
            echo = assert_echo(r, "len", "len:huge")
            assert "x-huge" not in model_headers(echo)
        elif r is not None:
            assert 400 <= r.status < 500, r
    still_serving(srv)


def test_too_many_header_lines_are_served_or_refused_never_hung(srv):
    msg = post("len:many", headers={f"X-H{i}": "v" for i in range(200)})
    with conn(srv) as c:
        c.send(msg)
        try:
            r = c.read_response()
        except EOFError:
            r = None
        if r is not None and r.status != 200:
            assert 400 <= r.status < 500, r  # current binary: 431, then close
        elif r is not None:
            assert_echo(r, "len", "len:many")
    still_serving(srv)


def test_a_client_stalled_mid_head_does_not_hold_up_others(srv):
    stalled = conn(srv)
    try:
        whole = post("len:finally")
        stalled.send(whole[:40])  # half a request line and no more
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            def one(i):
                with conn(srv) as c:
                    c.send(post(f"len:other-{i}"))
                    assert_echo(c.read_response(), "len", f"len:other-{i}")
                    return i
            assert sorted(pool.map(one, range(8))) == list(range(8))
        still_serving(srv)
        assert stalled.quiet(), "an incomplete request was answered"
        # the stalled client finishes its request later and is served
        stalled.send(whole[40:])
        assert_echo(stalled.read_response(), "len", "len:finally")
    finally:
        stalled.close()


def test_a_client_stalled_mid_body_does_not_hold_up_others(srv):
    stalled = conn(srv)
    try:
        stalled.send(post(b"", headers={"Content-Length": "20"}) + b"len:part")
        for i in range(3):
            with conn(srv) as c:
                c.send(post(f"len:meanwhile-{i}"))
                assert_echo(c.read_response(), "len", f"len:meanwhile-{i}")
        assert stalled.quiet()
        stalled.send(b"-of-the-body")
        assert_echo(stalled.read_response(), "len", "len:part-of-the-body")
    finally:
        stalled.close()


# --------------------------------------------------------------------------------------------
# data plane and control plane on one connection
# --------------------------------------------------------------------------------------------


def test_invocations_and_control_plane_requests_share_a_connection(srv):
    list_endpoints = (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n"
        b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}"
    )
    with conn(srv) as c:
        c.send(post("len:one"))
        assert_echo(c.read_response(), "len", "len:one")
        c.send(get("/_spillway/health"))
        r = c.read_response("GET")
        assert (r.status, r.json()) == (200, {"status": "ok"}), r
        assert_date(r)
        c.send(list_endpoints)
        r = c.read_response()
        assert r.status == 200, r
        assert EP in [e["EndpointName"] for e in r.json()["Endpoints"]]
        c.send(post("chunked:two"))
        assert_echo(c.read_response(), "chunked", "chunked:two")
        c.send(list_endpoints + post("len:three"))  # pipelined across the two planes
        assert c.read_response().status == 200
        assert_echo(c.read_response(), "len", "len:three")


@pytest.mark.parametrize("mode", ["len", "chunked", "eof"])
def test_response_stream_carries_every_model_framing_as_payload_parts(srv, mode):
    """InvokeEndpointWithResponseStream over each framing the model may answer with: boto3
    reassembles exactly the model's body from the PayloadPart events."""
    rt = srv.client("sagemaker-runtime", retries=0)
    resp = rt.invoke_endpoint_with_response_stream(EndpointName=EP, Body=f"{mode}:streamed".encode())
    assert resp["ContentType"] == "application/json"
    assert resp["CustomAttributes"] == f"raw-model={mode}"
    body = b"".join(e["PayloadPart"]["Bytes"] for e in resp["Body"])
    echo = json.loads(body)
    assert (echo["mode"], echo["body"]) == (mode, f"{mode}:streamed")


def test_a_stream_the_model_breaks_off_ends_with_model_stream_error(srv):
    """The model closes mid-body: the parts sent so far arrive, then a ModelStreamError event;
    the connection stays usable and the endpoint keeps serving."""
    rt = srv.client("sagemaker-runtime", retries=0)
    resp = rt.invoke_endpoint_with_response_stream(EndpointName=EP, Body=b"cut")
    parts = []
    with pytest.raises(botocore.exceptions.EventStreamError) as err:
        for event in resp["Body"]:
            parts.append(event["PayloadPart"]["Bytes"])
    assert err.value.response["Error"]["Code"] == "ModelStreamError", err.value.response
    assert b"".join(parts) and len(b"".join(parts)) == 10, parts
    out = rt.invoke_endpoint(EndpointName=EP, Body=b"len:after-cut")
    assert json.loads(out["Body"].read())["body"] == "len:after-cut"


def test_idle_and_stalled_clients_are_disconnected_after_the_client_timeout(start_server):
    """`[router] client_timeout_seconds` bounds the wait for a request head: on a fresh
    connection, on a kept-alive one after an invocation, and for a head that stalls halfway.
    None is closed early (the timer is re-armed coarsely, so the bound lies between 5/6 of the
    timeout and all of it), each is closed soon after, and the server keeps serving."""
    import select

    srv = start_server(config={"router": {"client_timeout_seconds": 3}})
    spw.deploy_echo(srv.sm, "idle")
    path = "/endpoints/idle/invocations"
    with Conn(srv.port) as kept:
        kept.send(post("hello", path=path))
        assert kept.read_response().status == 200
        # Opened only now, so that a slow first request cannot eat into their 1.5 s below.
        fresh, stalled = Conn(srv.port), Conn(srv.port)
        stalled.send(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Le")
        socks = {c.sock: name for c, name in ((fresh, "fresh"), (kept, "kept"), (stalled, "stalled"))}
        # Nothing happens on any of them for well under 5/6 of the timeout (2.5 s) ...
        readable, _, _ = select.select(list(socks), [], [], 1.5)
        assert not readable, f"closed or answered early: {[socks[s] for s in readable]}"
        # ... and each is closed (EOF, nothing sent) not long after the timeout.
        for c in (fresh, kept, stalled):
            assert c.closed(timeout=20), f"{socks[c.sock]}: not closed within 20 s"
        fresh.close()
        stalled.close()
    with Conn(srv.port) as c:  # the server itself is unaffected
        c.send(post("after", path=path))
        assert c.read_response().status == 200


def hang_endpoint(start_server, tmp_path, **router):
    """A server (model timeout 600 s, and `router` settings) with endpoint `hang` on raw_model,
    and the file where the model notes each connection the router closed on it."""
    notes = tmp_path / "model-notes.txt"
    srv = start_server(config={"router": {"model_timeout_seconds": 600, **router}})
    image = f"{shlex.quote(spw.python())} {shlex.quote(str(RAW_MODEL))}"
    spw.create_model(srv.sm, "hang-model", image=image, env={"RAW_MODEL_NOTES": str(notes)})
    spw.deploy(srv.sm, "hang", [spw.single_variant("hang-model", "ml.m5.xlarge")])
    spw.wait_in_service(srv.sm, "hang")
    return srv, notes


def outstanding(srv) -> float:
    """Requests in flight on all instances, from `/metrics`."""
    from test_metrics import scrape

    return sum(s.value for s in scrape(srv).get("spillway_concurrent_requests_per_model", []))


@pytest.mark.parametrize(
    "version, mode, path",
    [
        ("1.1", "hang", "invocations"),
        ("1.0", "hang", "invocations"),
        ("1.1", "trickle", "invocations"),
        ("1.0", "trickle", "invocations"),
        ("1.1", "hang", "invocations-response-stream"),
        ("1.1", "trickle", "invocations-response-stream"),
    ],
)
def test_a_client_leaving_before_the_answer_frees_the_model_at_once(start_server, tmp_path, version, mode, path):
    """The client goes away while the model is still working on its request (an LLM still
    generating, say), before the answer (`hang`) or after its first piece (`trickle`): spillway
    closes its connection to the model at once (model servers such as vLLM stop generating
    when their client disconnects) instead of keeping the model busy until it finishes or
    `model_timeout_seconds` passes. The request stops counting as outstanding
    (least-outstanding routing and the concurrency limit see it gone) and is counted as
    `client_closed`, not as a server error. HTTP/1.1 is served on the fast path, HTTP/1.0 by
    the general-purpose server."""
    from test_metrics import scrape

    srv, notes = hang_endpoint(start_server, tmp_path)

    c = Conn(srv.port)
    body = f"{mode}:left-{version}"
    c.send(post(body, path=f"/endpoints/hang/{path}", version=version))
    if mode == "trickle":
        assert c.read_head()[1] == 200
    spw.poll(lambda: outstanding(srv) == 1, timeout=30, what="the request to be in flight")
    assert not notes.exists(), "the model saw its connection closed while the client was still there"
    c.close()
    # The model sees its connection closed within moments, not after 600 s.
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=15, what="the model to see the connection closed")
    assert notes.read_text() == f"closed {body}\n"
    spw.poll(lambda: outstanding(srv) == 0, timeout=15, what="the request to stop counting as outstanding")
    errors = {
        s.labels["kind"]: s.value
        for s in scrape(srv)["spillway_invocation_errors"]
        if s.name == "spillway_invocation_errors_total" and s.labels["endpoint"] == "hang"
    }
    assert errors["client_closed"] == 1.0 and sum(errors.values()) == 1.0, errors
    with Conn(srv.port) as again:  # the endpoint serves on
        again.send(post("len:after", path="/endpoints/hang/invocations"))
        assert again.read_response().status == 200


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_client_that_stops_reading_is_disconnected_after_the_client_timeout(start_server, tmp_path, version):
    """The model streams a large answer to a client that keeps its connection open but reads
    nothing. Once the socket buffers are full and nothing more is accepted for
    `client_timeout_seconds` (as nginx's `send_timeout`), spillway closes the client connection
    and the model's, instead of holding both (and the model) forever."""
    srv, notes = hang_endpoint(start_server, tmp_path, client_timeout_seconds=2)
    c = Conn(srv.port)
    c.send(post(f"flood:{version}", path="/endpoints/hang/invocations", version=version))
    port = c.sock.getsockname()[1]
    model_port = srv.instances("hang")[0]["port"]
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=60, what="the model to see the connection closed")
    assert notes.read_text() == f"closed flood:{version}\n"
    spw.poll(
        lambda: held_sockets(srv.proc.pid, {port}, model_port)[0] == 0,
        timeout=15,
        what="spillway to close the stalled client's connection",
    )
    c.close()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_client_that_stops_sending_its_body_gets_a_validation_error(start_server, tmp_path, version):
    """A request body that stops arriving is the client's fault, and is bounded by
    `client_timeout_seconds` (nginx's `client_body_timeout`), not by the model's timeout (600 s
    here): the client gets a 400 `ValidationError` naming the body, the connection closes, and
    it counts as a 4xx, not as the model's error. HTTP/1.1 on the fast path, HTTP/1.0 by hyper."""
    from test_metrics import scrape

    srv, _ = hang_endpoint(start_server, tmp_path, client_timeout_seconds=2)
    with Conn(srv.port, timeout=60) as c:
        head = post(b"", path="/endpoints/hang/invocations", headers={"Content-Length": "100"}, version=version)
        c.send(head + b"len:only a part")
        r = c.read_response()
        assert (r.status, r.get("x-amzn-errortype")) == (400, "ValidationError"), r
        assert "Body" in r.json()["message"] and "sent nothing" in r.json()["message"], r.json()
        assert c.closed(timeout=10)
    errors = {
        s.labels["kind"]: s.value
        for s in scrape(srv)["spillway_invocation_errors"]
        if s.name == "spillway_invocation_errors_total" and s.labels["endpoint"] == "hang"
    }
    assert errors["4xx"] == 1.0 and sum(errors.values()) == 1.0, errors


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_model_that_stops_mid_answer_is_cut_off_after_the_model_timeout(start_server, tmp_path, version):
    """The model sends the start of its answer, then nothing more. After `model_timeout_seconds`
    without a byte (nginx's `proxy_read_timeout`) spillway gives up on it: it closes the model
    connection, ends the client's answer unfinished (a chunked body without its last chunk, so
    the client can tell; HTTP/1.0 answers are close-delimited and cannot say), and counts a
    model error, instead of holding client, connection and model forever."""
    from test_metrics import scrape

    srv, notes = hang_endpoint(start_server, tmp_path, model_timeout_seconds=2)
    with Conn(srv.port, timeout=60) as c:
        c.send(post(f"trickle:{version}", path="/endpoints/hang/invocations", version=version))
        while c._fill():  # everything until spillway closes the connection
            pass
        assert c.buf.startswith(f"HTTP/{version} 200".encode()), c.buf[:200]
        if version == "1.1":
            assert b"transfer-encoding: chunked" in c.buf.lower() and not c.buf.endswith(b"0\r\n\r\n"), c.buf
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=15, what="the model to see the connection closed")
    assert notes.read_text() == f"closed trickle:{version}\n"
    errors = {
        s.labels["kind"]: s.value
        for s in scrape(srv)["spillway_invocation_errors"]
        if s.name == "spillway_invocation_errors_total" and s.labels["endpoint"] == "hang"
    }
    assert errors["model_other"] == 1.0 and sum(errors.values()) == 1.0, errors


def test_a_stream_whose_model_stops_ends_with_model_stream_error_after_the_model_timeout(start_server, tmp_path):
    """The same for `InvokeEndpointWithResponseStream`, read by boto3: the parts sent so far
    arrive, then a `ModelStreamError` event says why the stream ended."""
    srv, notes = hang_endpoint(start_server, tmp_path, model_timeout_seconds=2)
    rt = srv.client("sagemaker-runtime", retries=0)
    resp = rt.invoke_endpoint_with_response_stream(EndpointName="hang", Body=b"trickle:stream")
    parts = []
    with pytest.raises(botocore.exceptions.EventStreamError) as err:
        for event in resp["Body"]:
            parts.append(event["PayloadPart"]["Bytes"])
    assert err.value.response["Error"]["Code"] == "ModelStreamError", err.value.response
    assert "the model sent nothing for 2s" in err.value.response["Error"]["Message"], err.value.response
    assert len(b"".join(parts)) == 10, parts
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=15, what="the model to see the connection closed")


def test_a_boto3_read_timeout_frees_the_model(start_server, tmp_path):
    """What a user's code meets when the model is too slow: boto3 gives up after its
    `read_timeout` and drops the connection, and spillway closes the model's connection in
    turn instead of leaving the model working for nobody."""
    srv, notes = hang_endpoint(start_server, tmp_path)
    rt = srv.client("sagemaker-runtime", retries=0, read_timeout=1)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        rt.invoke_endpoint(EndpointName="hang", Body=b"hang:boto3")
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=15, what="the model to see the connection closed")
    assert notes.read_text() == "closed hang:boto3\n"


def test_an_abandoned_request_gives_its_concurrency_slot_to_the_next_at_once(start_server, tmp_path):
    """With one request allowed per instance, a second one queues behind a request the model is
    stuck on. When the first client gives up, the second is served at once, long before the
    model timeout (600 s) or the queue's (60 s) would have ended the wait."""
    srv, notes = hang_endpoint(
        start_server, tmp_path, max_concurrent_requests_per_instance=1, queue_timeout_ms=60_000
    )
    path = "/endpoints/hang/invocations"
    stuck, queued = Conn(srv.port), Conn(srv.port, timeout=50)
    stuck.send(post("hang:stuck", path=path))
    spw.poll(lambda: outstanding(srv) == 1, timeout=30, what="the stuck request to hold the slot")
    queued.send(post("len:queued", path=path))
    assert queued.quiet(1.0), "the second request was answered while the slot was taken"
    stuck.close()
    answer = queued.read_response()  # well before 50 s, or the read times out
    assert (answer.status, answer.json()["body"]) == (200, "len:queued"), answer
    queued.close()
    spw.poll(lambda: notes.exists() and notes.read_text(), timeout=15, what="the model to see the connection closed")
    assert notes.read_text() == "closed hang:stuck\n"


# --------------------------------------------------------------------------------------------
# abuse: nothing leaks, no answer goes to the wrong request
# --------------------------------------------------------------------------------------------


def held_sockets(pid: int, client_ports: set[int], model_port: int) -> tuple[int, list[tuple[str, int]]]:
    """What process `pid` holds open: the number of its connections from `client_ports` (the
    test's own clients), and (TCP state, bytes waiting unread) of each of its connections to the
    model instance. From its socket file descriptors matched against the kernel's TCP table."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    clients, models = 0, []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                remote, state, queues, inode = cols[2], cols[3], cols[4], cols[9]
                if inode not in inodes:
                    continue
                remote_port = int(remote.rsplit(":", 1)[1], 16)
                if remote_port in client_ports:
                    clients += 1
                elif remote_port == model_port:
                    models.append((state, int(queues.split(":")[1], 16)))
    return clients, models


def abuse(port: int, i: int) -> int:
    """One misbehaving client, chosen by `i`. Each closes its socket at the end. Returns the
    client's port."""
    import struct

    kind = i % 15
    c = Conn(port, timeout=10)
    try:
        if kind == 0:  # connect, say nothing
            pass
        elif kind == 1:  # half a request line
            c.send(b"POST /endpoints/raw/invoc")
        elif kind == 2:  # a head promising 1000 bytes, 10 sent
            c.send(post("len:" + "x" * 996)[:-990])
        elif kind == 3:  # a whole request, gone before the answer
            c.send(post(f"len:abandoned-{i}"))
        elif kind == 4:  # the model answers slowly (1 s pause after its status line); gone meanwhile
            c.send(post(f"slowhead:abandoned-{i}"))
            time.sleep(0.05)
        elif kind == 5:  # the model sends a chunked body in two bursts; gone between them
            c.send(post(f"chunked:abandoned-{i}"))
            c.read_head()
        elif kind == 6:  # three pipelined requests, then a reset
            c.send(post(f"len:p{i}a") + post(f"chunked:p{i}b") + post(f"len:p{i}c"))
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == 7:  # not HTTP at all
            c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64))
            c.closed(timeout=10)
        elif kind == 8:  # a bad chunk size after a valid head
            c.send(post(b"", headers={"Content-Length": None, "Transfer-Encoding": "chunked"}) + b"zz\r\nhello\r\n")
            assert c.read_response().status == 400
        elif kind == 9:  # the model breaks off mid-body
            c.send(post(f"cut:{i}"))
            c.read_head()
        elif kind == 10:  # the model answers garbage
            c.send(post(f"garbage:{i}"))
            assert c.read_response().status == 503
        elif kind == 11:  # a streamed answer, gone after its head
            c.send(post(f"chunked:s{i}", path=f"/endpoints/{EP}/invocations-response-stream"))
            c.read_head()
        elif kind == 12:  # Expect: 100-continue, then gone without the body
            c.send(post("len:never-sent", headers={"Expect": "100-continue"})[: -len("len:never-sent")])
            c.read_head()
        elif kind == 13:  # the model answers in six pieces 30 ms apart; reset after the head
            c.send(post(f"drip:abandoned-{i}"))
            c.read_head()
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:  # a control-plane request (served by hyper), then a reset
            c.send(get("/_spillway/health"))
            c.read_response("GET")
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return c.sock.getsockname()[1]
    finally:
        c.close()


def checked_invocation(port: int, i: int) -> int:
    """A well-behaved client: three keep-alive invocations whose answers must echo exactly their
    own requests (an answer meant for an abandoned request would show up here). Returns the
    client's port."""
    with Conn(port) as c:
        for j, mode in enumerate(("len", "chunked", "len")):
            body = f"{mode}:check-{i}-{j}"
            c.send(post(body))
            assert_echo(c.read_response(), mode, body)
        return c.sock.getsockname()[1]


def test_abusive_clients_leak_no_connection_and_misroute_no_answer(srv):
    """Hundreds of clients misbehave at once (silent, half-sent heads and bodies, resets,
    abandoned requests while the model is mid-answer, garbage, bad chunking, abandoned streams
    and 100-continues) next to well-behaved ones. Every answer a well-behaved client gets is its
    own. Afterwards spillway holds none of those clients' connections, and every model
    connection it keeps is open at both ends with nothing unread in it (no half-read answer
    waiting to be handed to the next request), and it serves on."""
    pid = srv.proc.pid
    model_port = srv.instances(EP)[0]["port"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        jobs = [pool.submit(abuse, srv.port, i) for i in range(300)]
        jobs += [pool.submit(checked_invocation, srv.port, i) for i in range(40)]
        ports = {job.result() for job in jobs}  # re-raises a failed check
    # Closing is prompt: a client's close is seen at once, an unread body lingers at most 2 s;
    # abandoned requests finish when the model answers (its slowest answer takes 1 s).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        clients, models = held_sockets(pid, ports, model_port)
        if clients == 0 and all(m == ("01", 0) for m in models):
            break
        time.sleep(0.2)
    assert clients == 0, f"spillway still holds {clients} of the test's client connections 15 s after they closed"
    stale = [m for m in models if m != ("01", 0)]
    assert not stale, f"model connections not established-and-drained (state, unread bytes): {stale} of {len(models)}"
    still_serving(srv)
    for i in range(20):  # pooled model connections carry no stale answer
        checked_invocation(srv.port, 1000 + i)


def test_answers_given_before_any_handler_carry_a_request_id(server):
    """Issue 14: every answer of every API carries x-amzn-RequestId, the control plane's 404 and
    405 and a refused request included."""
    import uuid

    for method, path, sign in (("GET", "/no/such/path", True), ("DELETE", "/", True), ("POST", "/", False)):
        status, headers, _ = server.http(method, path, b"" if method != "GET" else None, {}, sign=sign)
        ids = {k.lower(): v for k, v in headers.items()}
        assert status >= 400 and uuid.UUID(ids["x-amzn-requestid"]), (method, path, status, headers)
