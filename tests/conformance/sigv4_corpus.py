"""Writes a corpus of requests signed by botocore, exactly as they went over the wire, for the
Rust differential test `tests/sigv4_botocore.rs` (spillway's SigV4 verifier must accept each, and
refuse each single change to a signed element).

Two sources, both sent through botocore's own HTTP stack (URLLib3Session) to a raw-socket capture
server on loopback, so that the corpus holds the bytes a server receives, not what botocore
thinks it sends:

* generated requests signed with `botocore.auth.SigV4Auth`: random methods, paths of every
  character a path may carry (sub-delims, `:@`, percent-escapes such as `%2F`, dot and empty
  segments), queries with repeated, empty and odd keys and values (botocore's own encoding),
  headers with odd spacing, duplicates and Latin-1 bytes, bodies, session tokens, `Date` instead
  of `X-Amz-Date`, declared and `UNSIGNED-PAYLOAD` payload hashes;
* real boto3 clients of every API spillway serves (SageMaker, sagemaker-runtime with its
  headers, Application Auto Scaling, CloudWatch, CloudTrail, IAM, STS) calling operations with
  odd names and values.

Usage: python sigv4_corpus.py OUT.json [--seed N] [--count N]
"""

from __future__ import annotations

import calendar
import hashlib
import json
import random
import socket
import sys
import threading
import time

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session
from botocore.utils import percent_encode_sequence

REGION = "us-east-1"


class Capture:
    """A loopback HTTP/1.1 server that records each request's raw head and body and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append((head, body))
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                )
        finally:
            conn.close()

    def take(self):
        with self.lock:
            out, self.requests = self.requests, []
        return out


def parse(head: bytes, body: bytes, service: str, secret: str) -> dict:
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].decode("ascii").split(" ")
    path, _, query = target.partition("?")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        # What an HTTP parser hands the application: optional whitespace around the value gone.
        headers.append([name.decode("ascii"), value.strip(b" \t").hex()])
    date = next((bytes.fromhex(v).decode() for n, v in headers if n.lower() == "x-amz-date"), None)
    if date:
        now = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    else:
        http_date = next(bytes.fromhex(v).decode() for n, v in headers if n.lower() == "date")
        now = calendar.timegm(time.strptime(http_date[:25], "%a, %d %b %Y %H:%M:%S"))
    return {
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body.hex(),
        "now": now,
        "region": REGION,
        "service": service,
        "secret": secret,
    }


# ------------------------------------------------------------------------------------------------
# Generated requests, signed with SigV4Auth
# ------------------------------------------------------------------------------------------------

# No `;`: botocore sends the path of `urlparse`, which cuts `;params` off the last segment after
# the whole path was signed (such a request fails against AWS too).
PCHARS = "abcXYZ019-._~!$&'()*+,=:@"
ODD = "ab Z9-_.~/+=&?%#é☃\u00a0\t!*'()"


def rand_path(rng: random.Random) -> str:
    segs = []
    for _ in range(rng.randint(0, 5)):
        kind = rng.random()
        if kind < 0.1:
            segs.append(rng.choice([".", "..", ""]))
        elif kind < 0.3:
            segs.append("".join(f"%{rng.randint(0, 255):02X}" for _ in range(rng.randint(1, 3))))
        else:
            segs.append("".join(rng.choice(PCHARS) for _ in range(rng.randint(1, 8))))
    path = "/" + "/".join(segs)
    if rng.random() < 0.3 and not path.endswith("/"):
        path += "/"
    return path


def rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ODD) for _ in range(rng.randint(0, n)))


def rand_query(rng: random.Random) -> str:
    pairs = []
    for _ in range(rng.randint(0, 5)):
        key = rand_text(rng, 6) or "k"
        pairs.append((key, rand_text(rng, 6)))
        if rng.random() < 0.3:
            pairs.append((key, rand_text(rng, 4)))  # a repeated key
    return percent_encode_sequence(pairs)


def rand_header_value(rng: random.Random) -> str:
    words = ["".join(rng.choice("abcXYZ019!#$%&'*+-.^_`|~\"/:;<=>?@[]{}é\u00e0") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
    seps = [rng.choice([" ", "  ", "\t", " \t  ", "\u00a0", " \u0085 "]) for _ in words]
    out = "".join(w + s for w, s in zip(words, seps)).rstrip(" \t")
    return out


class _RecordingSigV4Auth(SigV4Auth):
    """Keeps the canonical request botocore signed, for the failure messages of the Rust test."""

    recorded = ""

    def canonical_request(self, request):
        self.recorded = super().canonical_request(request)
        return self.recorded


def generated(rng: random.Random, capture: Capture, session: URLLib3Session, count: int) -> list[dict]:
    corpus = []
    for i in range(count):
        ak = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        secret = "".join(rng.choice("abcdefABCDEF0123456789/+") for _ in range(40))
        token = None
        if rng.random() < 0.3:
            token = "".join(rng.choice("abcXYZ019/+=") for _ in range(rng.randint(20, 120)))
        service = rng.choice(["sagemaker", "iam", "sts", "monitoring", "application-autoscaling"])
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
        url = f"http://127.0.0.1:{capture.port}{rand_path(rng)}"
        query = rand_query(rng)
        if query:
            url += "?" + query
        body = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200))) if rng.random() < 0.7 else b""
        req = AWSRequest(method=method, url=url, data=body)
        for _ in range(rng.randint(0, 5)):
            name = rng.choice(["X-Custom", "x-custom", "X-Amz-Target", "Content-Type", "X-Amz-Meta-Dup", "Accept"])
            req.headers[name] = rand_header_value(rng)  # HTTPHeaders appends: duplicates stay
        payload = rng.random()
        if payload < 0.15:
            req.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        elif payload < 0.3:
            req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        if rng.random() < 0.15:
            req.headers["Date"] = "placeholder"  # botocore then signs with Date, not X-Amz-Date
        signer = _RecordingSigV4Auth(Credentials(ak, secret, token), service, REGION)
        signer.add_auth(req)
        names = [n.lower() for n in req.headers.keys()]
        if len(names) == len(set(names)):
            session.send(req.prepare())
            ((head, got_body),) = capture.take()
        else:
            # botocore signs every value of a repeated header, but its HTTP stack sends only the
            # last one; a client that sends them all puts this on the wire.
            prepared = req.prepare()
            target = prepared.url.split(str(capture.port), 1)[1]
            lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: 127.0.0.1:{capture.port}".encode()]
            lines += [f"{n}: {v}".encode("latin-1") for n, v in req.headers.items()]
            head, got_body = b"\r\n".join(lines), body
        case = parse(head, got_body, service, secret)
        case |= {"source": f"generated #{i}", "botocore_canonical_request": signer.recorded}
        corpus.append(case)
    return corpus


# ------------------------------------------------------------------------------------------------
# Real clients
# ------------------------------------------------------------------------------------------------


def clients(capture: Capture) -> list[dict]:
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    endpoint = f"http://127.0.0.1:{capture.port}"
    calls = {
        ("sagemaker", "sagemaker"): [
            ("list_endpoints", {}),
            ("describe_endpoint", {"EndpointName": "my-endpoint-1"}),
            ("create_model", {"ModelName": "m-1", "PrimaryContainer": {"Image": "builtin:echo --x 'a  b' é"}, "Tags": [{"Key": "owner", "Value": "team a/b+c"}]}),
        ],
        ("sagemaker-runtime", "sagemaker"): [
            ("invoke_endpoint", {"EndpointName": "my-endpoint-1", "Body": b"\x00\x01{\"x\": 1}", "ContentType": "application/json"}),
            ("invoke_endpoint", {"EndpointName": "E-2", "Body": b"a" * 3000, "ContentType": "text/csv", "Accept": "application/json,  text/plain", "CustomAttributes": "  odd   spacing\tvalue  ", "TargetVariant": "v 1", "InferenceComponentName": "ic-1"}),
            ("invoke_endpoint", {"EndpointName": "a-b", "Body": b"", "ContentType": "application/x-npy"}),
            # Not a valid name, but botocore quotes it into the path label: `/` as %2F, `%` as %25.
            ("invoke_endpoint", {"EndpointName": "odd name/with%slash+plus:colon", "Body": b"x"}),
            ("invoke_endpoint_with_response_stream", {"EndpointName": "stream-1", "Body": b"{}", "ContentType": "application/json"}),
            ("invoke_endpoint_async", {"EndpointName": "async-1", "InputLocation": "s3://bucket/key with space+plus", "ContentType": "application/json"}),
        ],
        ("application-autoscaling", "application-autoscaling"): [
            ("describe_scalable_targets", {"ServiceNamespace": "sagemaker", "ResourceIds": ["endpoint/my-endpoint-1/variant/AllTraffic"]}),
        ],
        ("cloudwatch", "monitoring"): [
            ("get_metric_statistics", {"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": [{"Name": "EndpointName", "Value": "e 1/é"}], "StartTime": 0, "EndTime": 60, "Period": 60, "Statistics": ["Sum"]}),
            ("list_metrics", {"Namespace": "AWS/SageMaker"}),
        ],
        ("cloudtrail", "cloudtrail"): [
            ("lookup_events", {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateEndpoint"}], "MaxResults": 5}),
        ],
        ("iam", "iam"): [
            ("list_users", {}),
            ("create_user", {"UserName": "alice+ops=x,y@z", "Tags": [{"Key": "team", "Value": "a b/c é"}]}),
            ("put_user_policy", {"UserName": "alice", "PolicyName": "p", "PolicyDocument": json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}]})}),
        ],
        ("sts", "sts"): [("get_caller_identity", {})],
    }
    corpus = []
    for (client_name, service), ops in calls.items():
        for token in (None, "FwoGZXIvYXdzEXAMPLE//////////wEaDH+tok=="):
            client = boto3.client(
                client_name,
                region_name=REGION,
                endpoint_url=endpoint,
                aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                aws_secret_access_key=secret,
                aws_session_token=token,
                config=cfg,
            )
            for op, params in ops:
                try:
                    getattr(client, op)(**params)
                except Exception:  # noqa: BLE001 - the capture server's answer need not parse
                    pass
                for head, body in capture.take():
                    corpus.append(parse(head, body, service, secret) | {"source": f"{client_name}.{op}"})
    return corpus


def main():
    out = sys.argv[1]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else random.randrange(1 << 30)
    count = int(sys.argv[sys.argv.index("--count") + 1]) if "--count" in sys.argv else 300
    rng = random.Random(seed)
    capture = Capture()
    session = URLLib3Session()
    corpus = generated(rng, capture, session, count) + clients(capture)
    with open(out, "w") as f:
        json.dump({"seed": seed, "cases": corpus}, f)
    print(f"wrote {len(corpus)} botocore-signed requests (seed {seed}) to {out}")


if __name__ == "__main__":
    main()
