"""A SageMaker-contract model server written on raw sockets, for byte-level HTTP/1.1 tests.

GET /ping answers 200. POST /invocations picks a behaviour from the request body: a body that is
one of the keywords below, or starts with `<keyword>:`, selects it; any other body is `len`.
Every 200 answer carries the same JSON echo: {"mode", "body" (latin-1), "method", "target",
"version", "headers": [[name, value], ...] as received, "trailers", "peer", "conn" (serial number
of the connection), "seq" (request number on that connection)}.

  len         200, Content-Length, keep-alive
  chunked     200, Transfer-Encoding: chunked in three chunks (one with a chunk extension) and a
              trailer section, keep-alive
  eof         200 with neither Content-Length nor chunked: the body ends when the connection closes
  close       200, Content-Length and `Connection: close`, then close
  continue    an interim `100 Continue` response, then the 200
  nocontent   204 without a body, keep-alive
  err500      500 with a text body (`err404`: 404)
  slowhead    the status line, ~1 s of silence, then the rest
  bigheaders  200 with 60 extra headers of ~100 bytes each
  dropidle    200 as `len`, then the connection is closed after 0.2 s idle (a short keep-alive
              timer), without `Connection: close`
  garbage     a line that is not HTTP, then close
  cut         200 chunked: the first chunk of the echo, then the connection closes mid-body
  drip        200 chunked: the echo in six chunks, 30 ms apart
  hang        no answer: waits until the router closes the connection, then appends
              "closed <body>" to the file $RAW_MODEL_NOTES (when set)
  trickle     200 chunked: the first chunk of the echo, then as hang
  flood       200 chunked: 64 KiB chunks, up to 256 MiB; if the router closes the connection
              first, appends "closed <body>" to $RAW_MODEL_NOTES

When $RAW_MODEL_RECORD names a file, every `POST /invocations` is appended to it as one JSON
line {"body" (latin-1), "headers"} before it is answered (for tests that check which requests
reached the model).

Every response also carries `X-Amzn-SageMaker-Custom-Attributes: raw-model=<mode>` and
`X-Raw-Model-Private: 1` (a header a router has no reason to pass on).

Usage (as a model's PrimaryContainer.Image): "<python> raw_model.py"; listens on
SAGEMAKER_BIND_TO_PORT.
"""

import itertools
import json
import os
import socket
import sys
import threading
import time

MODES = {"len", "chunked", "eof", "close", "continue", "nocontent", "err500", "err404",
         "slowhead", "bigheaders", "dropidle", "garbage", "cut", "drip", "hang", "trickle",
         "flood"}
conn_serials = itertools.count(1)


def note(text):
    """Appends a line to the file $RAW_MODEL_NOTES (when set), for tests to read."""
    if path := os.environ.get("RAW_MODEL_NOTES"):
        with open(path, "a") as f:
            f.write(text + "\n")


class Closed(Exception):
    pass


class Conn:
    def __init__(self, sock, peer):
        self.sock, self.peer, self.buf = sock, peer, b""
        self.serial = next(conn_serials)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed
        self.buf += data

    def read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_request(self):
        """(method, target, version, headers, body, trailers); raises Closed at EOF."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")[:-2]
        method, target, version = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        get = {k.lower(): v for k, v in headers}.get
        body, trailers = b"", []
        if "chunked" in get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    break
                body += self.read_exact(size)
                self.read_exact(2)
            while (line := self.read_until(b"\r\n")) != b"\r\n":
                trailers.append(line.decode("latin-1").strip())
        else:
            body = self.read_exact(int(get("content-length", "0")))
        return method, target, version, headers, body, trailers


def head(status, extra=(), mode="len"):
    lines = [f"HTTP/1.1 {status}", f"X-Amzn-SageMaker-Custom-Attributes: raw-model={mode}",
             "X-Raw-Model-Private: 1", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def serve(sock, peer):
    """One connection: requests until the client or a behaviour closes it. Returns when done."""
    c = Conn(sock, peer)
    seq = 0
    idle_timeout = None
    while True:
        sock.settimeout(idle_timeout)
        try:
            if not c.buf:
                c._fill()  # the keep-alive timer runs only while nothing has arrived
            sock.settimeout(None)
            method, target, version, headers, body, trailers = c.read_request()
        except (Closed, socket.timeout, ConnectionError):
            return
        seq += 1
        if method == "GET" and target == "/ping":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            continue
        if method != "POST" or target != "/invocations":
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            continue
        if record := os.environ.get("RAW_MODEL_RECORD"):
            with open(record, "a") as f:
                f.write(json.dumps({"body": body.decode("latin-1"), "headers": headers}) + "\n")
        word = body.split(b":", 1)[0].decode("latin-1")
        mode = word if word in MODES else "len"
        echo = json.dumps({
            "mode": mode, "body": body.decode("latin-1"), "method": method, "target": target,
            "version": version, "headers": headers, "trailers": trailers,
            "peer": f"{peer[0]}:{peer[1]}", "conn": c.serial, "seq": seq,
        }).encode()
        ctype = "Content-Type: application/json"
        length = f"Content-Length: {len(echo)}"
        if mode in ("len", "dropidle"):
            sock.sendall(head("200 OK", [ctype, length], mode) + echo)
            if mode == "dropidle":
                idle_timeout = 0.2
        elif mode == "chunked":
            a, b = echo[:10], echo[10:20]
            rest = echo[20:]
            sock.sendall(head("200 OK", [ctype, "Transfer-Encoding: chunked", "Trailer: X-Raw-Trailer"], mode))
            sock.sendall(b"%x;raw-ext=yes\r\n%s\r\n" % (len(a), a))
            time.sleep(0.05)
            sock.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n" % (len(b), b, len(rest), rest))
            sock.sendall(b"0\r\nX-Raw-Trailer: done\r\n\r\n")
        elif mode == "eof":
            sock.sendall(head("200 OK", [ctype], mode) + echo[:7])
            time.sleep(0.05)
            sock.sendall(echo[7:])
            return
        elif mode == "close":
            sock.sendall(head("200 OK", [ctype, length, "Connection: close"], mode) + echo)
            return
        elif mode == "continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.05)
            sock.sendall(head("200 OK", [ctype, length], mode) + echo)
        elif mode == "nocontent":
            sock.sendall(head("204 No Content", [], mode))
        elif mode in ("err500", "err404"):
            text = f"model says no ({mode})".encode()
            status = "500 Internal Server Error" if mode == "err500" else "404 Not Found"
            sock.sendall(head(status, ["Content-Type: text/plain", f"Content-Length: {len(text)}"], mode) + text)
        elif mode == "slowhead":
            whole = head("200 OK", [ctype, length], mode) + echo
            first = whole.index(b"\r\n") + 2
            sock.sendall(whole[:first])
            time.sleep(1.0)
            sock.sendall(whole[first:])
        elif mode == "bigheaders":
            big = [f"X-Big-{i:02d}: {'v' * 100}" for i in range(60)]
            sock.sendall(head("200 OK", [ctype, length, *big], mode) + echo)
        elif mode == "garbage":
            sock.sendall(b"SPLAT this is not an HTTP response\r\n")
            return
        elif mode == "drip":
            sock.sendall(head("200 OK", [ctype, "Transfer-Encoding: chunked"], mode))
            step = len(echo) // 6 + 1
            for at in range(0, len(echo), step):
                sock.sendall(b"%x\r\n%s\r\n" % (len(echo[at:at + step]), echo[at:at + step]))
                time.sleep(0.03)
            sock.sendall(b"0\r\n\r\n")
        elif mode in ("hang", "trickle"):
            if mode == "trickle":
                sock.sendall(head("200 OK", [ctype, "Transfer-Encoding: chunked"], mode))
                sock.sendall(b"%x\r\n%s\r\n" % (len(echo[:10]), echo[:10]))
            while sock.recv(65536):
                pass
            note(f"closed {body.decode('latin-1')}")
            return
        elif mode == "flood":
            sock.sendall(head("200 OK", [ctype, "Transfer-Encoding: chunked"], mode))
            piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            try:
                for _ in range(4096):
                    sock.sendall(piece)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                note(f"closed {body.decode('latin-1')}")
            return
        elif mode == "cut":
            sock.sendall(head("200 OK", [ctype, "Transfer-Encoding: chunked"], mode))
            sock.sendall(b"%x\r\n%s\r\n" % (len(echo[:10]), echo[:10]))
            time.sleep(0.05)
            return


def handle(sock, peer):
    try:
        serve(sock, peer)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def main():
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print(f"raw_model listening on {port}", file=sys.stderr, flush=True)
    while True:
        sock, peer = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(sock, peer), daemon=True).start()


if __name__ == "__main__":
    main()
