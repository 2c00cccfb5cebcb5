"""Checks dashboards/spillway-grafana.json: Grafana-importable structure and metric names.

Usage: python3 dashboards/check.py [METRICS_URL_OR_FILE [CREDENTIALS_FILE]] (a URL is signed by the
`spillway` profile of CREDENTIALS_FILE)

- well-formed JSON with the members Grafana's import needs (title, uid, schemaVersion, panels,
  templating with the `endpoint` variable), unique panel ids, panels inside the 24-column grid
  and not overlapping;
- every PromQL expression names only `spillway_*` series that the server exposes (read from a
  running server's `/metrics`, or a saved copy), when one is given;
- with `promtool` on PATH (Debian: prometheus), every expression parses, after substituting
  Grafana's variables.
Exits non-zero on the first kind of problem found, printing each.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
dash = json.load(open(os.path.join(HERE, "spillway-grafana.json")))
problems = []

for key in ("title", "uid", "schemaVersion", "panels", "templating"):
    if key not in dash:
        problems.append(f"missing top-level {key}")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
if "endpoint" not in variables:
    problems.append("no templating variable 'endpoint'")
if variables.get("datasource", {}).get("type") != "datasource":
    problems.append("no datasource variable")

ids, cells, exprs = set(), {}, []
for p in dash["panels"]:
    if p["id"] in ids:
        problems.append(f"duplicate panel id {p['id']}")
    ids.add(p["id"])
    g = p["gridPos"]
    if g["x"] < 0 or g["x"] + g["w"] > 24 or g["w"] <= 0 or g["h"] <= 0:
        problems.append(f"panel {p['title']!r} outside the grid: {g}")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                problems.append(f"panel {p['title']!r} overlaps {cells[(x, y)]!r}")
                break
            cells[(x, y)] = p["title"]
        else:
            continue
        break
    if p["type"] != "row":
        if not p.get("targets"):
            problems.append(f"panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))

if len(sys.argv) > 1:
    src = sys.argv[1]
    if src.startswith("http"):
        req = urllib.request.Request(src)
        if len(sys.argv) > 2:  # signed by the `spillway` profile of this credentials file
            import os

            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
            import sigv4

            for k, v in sigv4.sign("GET", src, {}, b"", *sigv4.keys(sys.argv[2]), "spillway").items():
                req.add_header(k, v)
        text = urllib.request.urlopen(req).read().decode()
    else:
        text = open(src).read()
    exposed = set(re.findall(r"^(spillway_[a-z_]+)", text, re.M))
    # Families that legitimately have no sample: GPU gauges exist only on hosts with GPUs.
    exposed |= {"spillway_instance_gpu_utilization_percent", "spillway_instance_gpu_memory_utilization_percent"}
    for title, e in exprs:
        for name in set(re.findall(r"\b(spillway_[a-z_]+)", e)):
            if name not in exposed:
                problems.append(f"panel {title!r}: {name} is not exposed at /metrics")

promtool = shutil.which("promtool")
if promtool:
    subst = {"$__rate_interval": "1m", "$endpoint": ".*", "$instance_type": ".*"}
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        rules["groups"][0]["rules"].append({"record": f"dashboard:expr{i}", "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        problems.append("promtool: " + (r.stdout + r.stderr).strip())

for p in problems:
    print("dashboard:", p)
print(
    f"dashboard: {len(dash['panels'])} panels, {len(exprs)} queries, variables {sorted(variables)}, "
    f"promtool {'checked' if promtool else 'not installed (syntax not checked)'}: "
    + ("OK" if not problems else f"{len(problems)} problem(s)")
)
sys.exit(1 if problems else 0)
