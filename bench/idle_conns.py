"""Memory per idle keep-alive connection.

Usage: python3 idle_conns.py PORT N PATH PID [PID...]

Opens N TCP connections to 127.0.0.1:PORT, sends one keep-alive `GET PATH` on each (a `POST`
with a 64-byte JSON body when PATH ends in `invocations`, so a proxy's invocation path is what
gets measured) and reads
the answer (so the server has fully set the connection up, buffers included), holds them idle,
and reports the summed VmRSS of PIDs before, after connecting, and after the request, in KiB.
Prints one `RESULT ...` line.
"""

import resource
import select
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    pids = [int(p) for p in sys.argv[4:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 256)), hard))
    time.sleep(0.5)
    before = rss_kib(pids)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    time.sleep(1.0)
    connected = rss_kib(pids)
    if path.endswith("invocations"):
        body = b'{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001","pad":"xxxx"}'
        req = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    else:
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for s in socks:
        s.sendall(req)
    pending = set(socks)
    deadline = time.time() + 20
    while pending and time.time() < deadline:
        ready, _, _ = select.select(list(pending)[:500], [], [], 1.0)
        for s in ready:
            if s.recv(65536):
                pending.discard(s)
    time.sleep(1.0)
    used = rss_kib(pids)
    print(
        f"RESULT conns={n} unanswered={len(pending)} rss_before_kib={before} rss_connected_kib={connected} "
        f"rss_after_request_kib={used} per_1000_connected_kib={(connected - before) * 1000 // n} "
        f"per_1000_kib={(used - before) * 1000 // n}"
    )
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
