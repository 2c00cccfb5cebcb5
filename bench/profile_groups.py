"""Groups `perf report --no-children --sort dso,sym --stdio` lines (stdin) by crate or area."""

import re
import sys

RULES = [
    ("spillway::metrics (metrics recording)", r"spillway::metrics|prometheus_client"),
    ("spillway::api::runtime / routes (router logic)", r"spillway::"),
    ("hyper / hyper-util / h1 codec", r"hyper|httparse|http::"),
    ("axum / tower (routing, extractors)", r"axum|tower|matchit"),
    ("tokio (scheduler, IO driver, timers)", r"tokio|mio"),
    ("allocator (malloc/free)", r"malloc|free|realloc|calloc|_int_|tcache"),
    ("memcpy/memmove", r"mem(cpy|move|set)"),
    ("uuid / serde_json / fmt", r"uuid|serde|core::fmt|alloc::fmt"),
    ("futex / mutex / thread park (user)", r"futex|pthread|std::sys::sync|parking|Mutex"),
    ("kernel: scheduler & wakeups", r"\[k\].*(task_switch|schedule|spin_unlock|wake|futex|irqentry|enqueue|dequeue|select_task|update_curr|pick_next)"),
    ("kernel: TCP / socket / epoll / syscalls", r"\[k\]"),
]

totals, other = {}, 0.0
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    text = f"{dso} {sym}"
    for name, pat in RULES:
        if re.search(pat, text):
            totals[name] = totals.get(name, 0.0) + pct
            break
    else:
        other += pct
for name, _ in RULES:
    print(f"{totals.get(name, 0.0):6.2f}%  {name}")
print(f"{other:6.2f}%  other")
