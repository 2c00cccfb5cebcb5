"""A SageMaker-contract model server for tests: waits DELAY seconds before it listens, then answers
GET /ping with 200 and POST /invocations with a JSON echo shaped like spillway's builtin:echo.

Usage (as a model's PrimaryContainer.Image): "<python> slow_echo.py [DELAY_SECONDS]"
"""

import http.server
import json
import os
import sys
import time

delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
time.sleep(delay)
port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))


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
        if self.path == "/ping":
            self._send(200)
        else:
            self._send(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path != "/invocations":
            self._send(404)
            return
        out = {
            "body": body.decode("utf-8", errors="replace"),
            "contentType": self.headers.get("Content-Type"),
            "instanceId": os.environ.get("SPILLWAY_INSTANCE_ID"),
            "instanceType": os.environ.get("SPILLWAY_INSTANCE_TYPE"),
            "modelName": os.environ.get("SPILLWAY_MODEL_NAME"),
            "env": dict(os.environ),
            "server": "slow_echo",
        }
        self._send(200, json.dumps(out).encode())


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
