"""Turns a bench/run.sh raw results file into the Markdown tables of BENCHMARKS.md.

Usage: python3 bench/report.py bench/results/raw-<stamp>.txt
"""

import statistics
import sys



def parse(path):
    header, rows = [], []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("#"):
            header.append(line[2:])
            continue
        parts = line.split()
        if len(parts) < 3:
            continue
        kv = {}
        for p in parts[3:]:
            if "=" in p:
                k, v = p.split("=", 1)
                try:
                    kv[k] = float(v)
                except ValueError:
                    kv[k] = v
        rows.append((parts[0], parts[1], int(parts[2]), kv))
    return header, rows


def med(rows, key):
    vals = [kv[key] for kv in rows if key in kv]
    return statistics.median(vals) if vals else float("nan")


def runs(rows, key, fmt="{:.0f}"):
    return " / ".join(fmt.format(kv[key]) for kv in rows)


def main():
    header, rows = parse(sys.argv[1])
    by = {}
    targets = []
    for phase, t, _rep, kv in rows:
        by.setdefault((phase, t), []).append(kv)
        if phase in ("sat", "fixed") and t not in targets:
            targets.append(t)
    spillways = [t for t in targets if t.startswith("spillway")]
    out = []
    w = out.append
    for h in header:
        w(f"- {h}")
    w("")

    w("### Saturation (wrk, closed loop)")
    w("")
    w("| path | req/s per run | median req/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | of which user | model CPU µs/req | errors |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    sat = {}
    for t in targets:
        r = by.get(("sat", t), [])
        if not r:
            continue
        sat[t] = med(r, "rps")
        cpu = statistics.median(kv["proxy_cpu_s"] / kv["requests"] * 1e6 for kv in r)
        user = [kv["proxy_user_s"] / kv["requests"] * 1e6 for kv in r if "proxy_user_s" in kv]
        user = f"{statistics.median(user):.1f}" if user and t != "direct" else "—"
        mcpu = statistics.median(kv["model_cpu_s"] / kv["requests"] * 1e6 for kv in r)
        errs = sum(kv.get("errors", 0) + kv.get("non2xx", 0) for kv in r)
        w(
            f"| {t} | {runs(r, 'rps')} | **{sat[t]:.0f}** | {med(r, 'p50_us'):.0f} | {med(r, 'p99_us'):.0f} "
            f"| {med(r, 'p999_us'):.0f} | {'—' if t == 'direct' else f'{cpu:.1f}'} | {user} | {mcpu:.1f} | {errs:.0f} |"
        )
    w("")
    if {"direct", "nginx"} <= sat.keys():
        reps = {}
        for phase, t, rep, kv in rows:
            if phase == "sat":
                reps.setdefault(rep, {})[t] = kv["rps"]
        w(f"Throughput ratios (medians; per repetition in brackets), nginx/direct = {sat['nginx'] / sat['direct']:.2f}:")
        w("")
        for t in spillways:
            if t not in sat:
                continue
            per_d = " / ".join(f"{r[t] / r['direct']:.2f}" for r in reps.values() if {t, "direct"} <= r.keys())
            per_n = " / ".join(f"{r[t] / r['nginx']:.2f}" for r in reps.values() if {t, "nginx"} <= r.keys())
            w(
                f"- {t}: /direct = **{sat[t] / sat['direct']:.2f}** ({per_d}), "
                f"/nginx = **{sat[t] / sat['nginx']:.2f}** ({per_n})"
            )
        if {"spillway", "spillway-baseline"} <= sat.keys():
            w(f"- spillway/spillway-baseline = **{sat['spillway'] / sat['spillway-baseline']:.2f}**")
        if {"spillway", "spillway-nometrics"} <= sat.keys():
            w(f"- spillway (metrics on) / spillway-nometrics = **{sat['spillway'] / sat['spillway-nometrics']:.2f}**")
        w("")

    w("### Fixed rate (bench/loadgen, open loop, latency from the intended send time)")
    w("")
    w("| path | target req/s | achieved | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p50 per run | p99 per run | service p50/p99 µs | generator lag p99 µs | errors |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fx = {}
    for t in targets:
        r = by.get(("fixed", t), [])
        if not r:
            continue
        fx[t] = {k: med(r, k) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}
        errs = sum(kv.get("errors", 0) + kv.get("non2xx", 0) for kv in r)
        w(
            f"| {t} | {med(r, 'target_rps'):.0f} | {med(r, 'achieved_rps'):.0f} | **{fx[t]['p50_us']:.0f}** "
            f"| {fx[t]['p90_us']:.0f} | **{fx[t]['p99_us']:.0f}** | {fx[t]['p999_us']:.0f} | {fx[t]['max_us']:.0f} "
            f"| {runs(r, 'p50_us')} | {runs(r, 'p99_us')} | {med(r, 'svc_p50_us'):.0f} / {med(r, 'svc_p99_us'):.0f} "
            f"| {med(r, 'lag_p99_us'):.0f} | {errs:.0f} |"
        )
    w("")
    if "direct" in fx:
        for t in ["nginx", *spillways]:
            if t in fx:
                d = {k: fx[t][k] - fx["direct"][k] for k in fx[t]}
                w(
                    f"Added latency over direct, {t}: p50 **{d['p50_us']:+.0f} µs**, p99 **{d['p99_us']:+.0f} µs**, "
                    f"p99.9 {d['p999_us']:+.0f} µs."
                )
        w("")

    ladder = {}
    for phase, t, _rep, kv in rows:
        if phase == "ladder":
            ladder.setdefault(kv["target_rps"], {}).setdefault(t, []).append(kv)
    if ladder:
        w("### Latency ladder (the same open-loop measurement at lower fixed rates)")
        w("")
        w("Added latency over direct (medians of the repetitions), p50 / p99 µs; direct's own p50 / p99 in the first column.")
        w("")
        shown = [t for t in targets if t != "direct"]
        w("| req/s | direct p50 / p99 µs | " + " | ".join(f"{t} added p50 / p99 µs" for t in shown) + " |")
        w("|---" * (2 + len(shown)) + "|")
        for rate in sorted(ladder):
            at = ladder[rate]
            if "direct" not in at:
                continue
            d50, d99 = med(at["direct"], "p50_us"), med(at["direct"], "p99_us")
            cells = []
            for t in shown:
                r = at.get(t)
                cells.append(f"{med(r, 'p50_us') - d50:+.0f} / {med(r, 'p99_us') - d99:+.0f}" if r else "—")
            w(f"| {rate:.0f} | {d50:.0f} / {d99:.0f} | " + " | ".join(cells) + " |")
        w("")

    if sat and fx and {"direct", "nginx", "spillway"} <= sat.keys() and "spillway" in fx:
        add50 = fx["spillway"]["p50_us"] - fx["direct"]["p50_us"]
        add99 = fx["spillway"]["p99_us"] - fx["direct"]["p99_us"]
        ok = lambda b: "met" if b else "**not met**"  # noqa: E731
        w("### Goals (issue 4)")
        w("")
        w(f"- throughput ≥ nginx: spillway/nginx = {sat['spillway'] / sat['nginx']:.2f} → {ok(sat['spillway'] >= sat['nginx'])}")
        w(f"- added p50 latency over direct at half load < 100 µs: {add50:+.0f} µs → {ok(add50 < 100)}")
        w(f"- added p99 latency over direct at half load < 1 ms: {add99:+.0f} µs → {ok(add99 < 1000)}")
        w("")

    mem = [(t, kv) for (p, t), rs in by.items() if p == "mem" for kv in rs]
    if mem:
        w("### Memory per 1,000 idle keep-alive connections")
        w("")
        w("| server | RSS before KiB | +1,000 connected KiB | +1,000 after one request each KiB | unanswered |")
        w("|---|---|---|---|---|")
        for t, kv in mem:
            w(
                f"| {t} | {kv['rss_before_kib']:.0f} | {kv['per_1000_connected_kib']:.0f} | {kv['per_1000_kib']:.0f} "
                f"| {kv['unanswered']:.0f} |"
            )
        w("")
    for (p, t), rs in by.items():
        if p == "metrics":
            kv = rs[0]
            rps = kv.get("scrape_rps_1conn", 0) or 0
            w(
                f"Metrics: `/metrics` is {kv['bytes']:.0f} bytes; one connection scrapes it {rps:.0f} times/s "
                f"(≈ {1e6 / rps if rps else float('nan'):.0f} µs per scrape, end to end)."
            )
            w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
