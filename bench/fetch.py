"""The few HTTP calls bench/run.sh makes to set up and check its targets (curl's role, with only
Python's standard library, so that the benchmark also runs where curl is not installed).

Usage: python3 bench/fetch.py URL [--data BODY] [--header 'Name: value']... [--any] [--sign CREDENTIALS]

Prints the response body to stdout. Exits 1 on a connection error or, unless --any is given,
on an HTTP status of 400 or more (like `curl -sf`); with --any any answer counts (readiness
checks). With --data the request is a POST of BODY. With --sign the request is signed (SigV4,
bench/sigv4.py) by the `spillway` profile of that shared-credentials file.
"""

import argparse
import sys
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--data")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--any", action="store_true")
    ap.add_argument("--sign")
    a = ap.parse_args()
    data = None if a.data is None else a.data.encode()
    req = urllib.request.Request(a.url, data=data)
    headers = {}
    for h in a.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    import os

    if a.sign and os.path.exists(a.sign):

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import sigv4

        method = "GET" if data is None else "POST"
        headers.update(sigv4.sign(method, a.url, headers, data or b"", *sigv4.keys(a.sign), sigv4.service_of(a.url, headers)))
    for name, value in headers.items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        if not a.any:
            return 1
        body = e.read()
    except OSError:
        return 1
    sys.stdout.buffer.write(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
