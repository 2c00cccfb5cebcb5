"""AWS Signature Version 4 for the benchmark's requests, with only Python's standard library
(the benchmark also runs where botocore is not installed). The conformance suite signs with
botocore itself; this is the same algorithm for the simple requests the benchmark sends (no
query string, a path of unreserved characters).

As a command: prints `Authorization` and `X-Amz-Date` header lines for one request, e.g. for
wrk (a signature stays valid for 5 minutes; the benchmark signs again before each run):

    python3 bench/sigv4.py CREDENTIALS_FILE POST http://127.0.0.1:7474/endpoints/e/invocations \\
        'Content-Type: application/json' BODY_FILE
"""

import configparser
import datetime
import hashlib
import hmac
import sys
import urllib.parse

REGION = "us-east-1"


def keys(credentials_file):
    cp = configparser.ConfigParser()
    cp.read(credentials_file)
    return cp["spillway"]["aws_access_key_id"], cp["spillway"]["aws_secret_access_key"]


def sign(method, url, headers, body, key_id, secret, service, region=REGION, now=None):
    """The headers to add (`Authorization`, `X-Amz-Date`)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    u = urllib.parse.urlsplit(url)
    all_headers = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    all_headers["host"] = u.netloc
    all_headers["x-amz-date"] = amz_date
    names = sorted(all_headers)
    canonical = "\n".join([
        method,
        urllib.parse.quote(u.path or "/", safe="/-_.~"),
        u.query,
        "".join(f"{n}:{all_headers[n]}\n" for n in names),
        ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}",
        "X-Amz-Date": amz_date,
    }


def service_of(url, headers):
    path = urllib.parse.urlsplit(url).path
    if path.startswith("/_spillway") or path == "/metrics":
        return "spillway"
    return "sagemaker"


if __name__ == "__main__":
    cred, method, url, header, body_file = sys.argv[1:6]
    import os

    if not os.path.exists(cred):  # a spillway that does not authenticate (an older baseline)
        sys.exit(0)
    name, _, value = header.partition(":")
    body = open(body_file, "rb").read()
    for k, v in sign(method, url, {name.strip(): value.strip()}, body, *keys(cred), service_of(url, {})).items():
        print(f"{k}: {v}")
