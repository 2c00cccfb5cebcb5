"""The few HTTP calls bench/run.sh makes to set up and check its targets (curl's role, with only
Python's standard library, so that the benchmark also runs where curl is not installed).

Usage: python3 bench/fetch.py URL [--data BODY] [--header 'Name: value']... [--any]

Prints the response body to stdout. Exits 1 on a connection error or, unless --any is given,
on an HTTP status of 400 or more (like `curl -sf`); with --any any answer counts (readiness
checks). With --data the request is a POST of BODY.
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
    a = ap.parse_args()
    req = urllib.request.Request(a.url, data=None if a.data is None else a.data.encode())
    for h in a.header:
        name, _, value = h.partition(":")
        req.add_header(name.strip(), value.strip())
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
