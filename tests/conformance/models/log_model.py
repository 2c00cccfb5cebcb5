"""A SageMaker-contract model server for the model-logs tests: it writes to stdout and stderr.

Usage (as a model's PrimaryContainer.Image): "<python> log_model.py MODE [ARG]"

- serve [N]: prints a few start-up lines (stdout and stderr) and N numbered ones
  ("startup line 0000", ...), then answers GET /ping and POST /invocations (a JSON echo) and
  prints "invoked: <body>" to stdout for each invocation.
- crash: prints start-up lines, a traceback-like block to stderr ending in
  "RuntimeError: CUDA out of memory", and exits 3 without ever listening.
- chatty [BYTES]: serves like `serve`, and a thread prints numbered lines of about BYTES bytes
  (default 200) to stdout as fast as it can, forever.

Every write is flushed at once (as a container with PYTHONUNBUFFERED=1 does).
"""

import http.server
import json
import os
import sys
import threading

mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
instance = os.environ.get("SPILLWAY_INSTANCE_ID", "?")


def out(line):
    print(line, flush=True)


def err(line):
    print(line, file=sys.stderr, flush=True)


out(f"model starting on port {port} (instance {instance})")
err("stderr: loading weights from /opt/ml/model")
out("loaded 3 shards")

if mode == "serve" and len(sys.argv) > 2:
    for i in range(int(sys.argv[2])):
        (out if i % 2 == 0 else err)(f"startup line {i:04d}")

if mode == "crash":
    err("Traceback (most recent call last):")
    err('  File "/opt/program/serve.py", line 12, in <module>')
    err("    model = load()")
    err("RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB")
    sys.exit(3)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, code, body=b"", ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200 if self.path == "/ping" else 404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path != "/invocations":
            self._send(404)
            return
        text = body.decode(errors="replace")
        out(f"invoked: {text}")
        self._send(200, json.dumps({"body": text, "instance": instance}).encode())


if mode == "chatty":
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 200

    def chatter():
        i = 0
        pad = "x" * max(0, size - 20)
        while True:
            sys.stdout.write(f"chatter {i:09d} {pad}\n")
            if i % 64 == 0:
                sys.stdout.flush()
            i += 1

    threading.Thread(target=chatter, daemon=True).start()

out("ready to serve")
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
