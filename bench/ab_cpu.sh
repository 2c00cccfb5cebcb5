#!/usr/bin/env bash
# A/B: proxy CPU per request of two spillway binaries at a fixed rate, in alternating rounds.
#
#   bash bench/ab_cpu.sh A_BIN B_BIN
#
# Starts each binary with `serve --demo` (own data dir and port, minimal environment), waits for
# the demo endpoint, then alternates A, B, A, B, ... runs of bench/loadgen at RATE req/s for DUR
# seconds and prints, per run, the CPU the spillway process used per request (from
# /proc/<pid>/stat, 10 ms resolution) and the latency percentiles. Alternating rounds cancel
# most of a shared host's drift; compare the two columns round by round.
# Environment: RATE (8000), ROUNDS (4), DUR (5). Loopback only; both servers are stopped at exit.
set -euo pipefail
A=$1
B=$2
RATE=${RATE:-8000}
ROUNDS=${ROUNDS:-4}
DUR=${DUR:-5}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
LG="$ROOT/bench/loadgen/target/release/spillway-loadgen"
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; sleep 1; rm -rf "$TMP"' EXIT

start() { # bin name port
    mkdir -p "$TMP/$2"
    env -i PATH=/usr/bin:/bin RUST_LOG=warn "$1" serve --demo --data-dir "$TMP/$2" --listen "127.0.0.1:$3" \
        >"$TMP/$2/log" 2>&1 &
    PIDS+=($!)
}
start "$A" a 7611
start "$B" b 7612
for port in 7611 7612; do
    for _ in $(seq 1 60); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x "http://127.0.0.1:$port/endpoints/demo/invocations" || true)
        [ "$code" = 200 ] && break
        sleep 1
    done
    [ "$code" = 200 ] || { echo "the demo endpoint on port $port did not come up" >&2; exit 1; }
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq 1 "$ROUNDS"); do
    for x in a b; do
        if [ $x = a ]; then pid=${PIDS[0]}; port=7611; else pid=${PIDS[1]}; port=7612; fi
        c0=$(cpu "$pid")
        out=$("$LG" --url "http://127.0.0.1:$port/endpoints/demo/invocations" --rate "$RATE" --duration "$DUR" \
            --warmup 0 --connections 32 2>/dev/null | grep requests=)
        c1=$(cpu "$pid")
        python3 - "$out" "$r" "$x" "$c0" "$c1" <<'PY'
import sys
out, r, x, c0, c1 = sys.argv[1:]
d = dict(kv.split("=") for kv in out.split())
n = int(d["requests"])
print(f"round={r} bin={x} cpu_us_per_req={(int(c1) - int(c0)) * 10000 / n:.1f} p50_us={d['p50_us']} p99_us={d['p99_us']} requests={n} errors={d['errors']}")
PY
    done
done
