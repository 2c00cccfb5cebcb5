#!/usr/bin/env bash
# spillway router benchmark: direct vs nginx vs spillway, against one builtin:echo instance.
#
#   bash bench/run.sh
#
# Environment (all optional):
#   SPILLWAY_BIN   spillway binary to test (default: <repo>/target/release/spillway, built here)
#   LOADGEN_BIN    bench/loadgen binary (default: built here with cargo)
#   BENCH_TOOLS    a folder made by bench/kit.sh: its bin/ (wrk, nginx) goes first on PATH
#   DURATION       seconds per measured run (default 10)
#   REPEATS        runs per configuration (default 2; the report shows each and the median)
#   CONNS          wrk / load generator connections (default 32)
#   WRK_THREADS    wrk threads (default 2)
#   NGINX_WORKERS  nginx worker_processes (default: nproc, like spillway's tokio worker threads)
#   RATE           fixed rate for the latency runs (default: half of the lowest median saturation)
#   OUT            results folder (default <repo>/bench/results)
#   BASELINE_BIN   another spillway binary (e.g. an older commit) measured in the same run as
#                  target "spillway-baseline", for before/after ratios
#   METRICS_OFF    1 (default): also measure spillway with `[metrics] enabled = false`
#                  (target "spillway-nometrics"); 0 skips it
#   VARIANT_TOML   TOML appended to the config of one more spillway (the same binary), measured as
#                  target "spillway-variant", e.g. '[router]\nio_threads = 1'
#   LADDER         space-separated fixed rates (req/s) measured after the half-load phase, e.g.
#                  "1000 2000 4000 8000": added latency as the box fills up (default: none)
#   PIN            1: give the proxy under test a core of its own: spillway and nginx on CPU 1,
#                  the load generators and the model instances on CPU 0 (needs 2 CPUs; nginx
#                  then runs one worker, as spillway runs one I/O thread on one CPU)
#
# Loopback only. Every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
DURATION="${DURATION:-10}"
REPEATS="${REPEATS:-2}"
CONNS="${CONNS:-32}"
WRK_THREADS="${WRK_THREADS:-2}"
PIN="${PIN:-0}"
# Command prefixes that pin (taskset execs its command, so background PIDs stay the real ones).
if [ "$PIN" = 1 ]; then
    LOAD_CPU=0 ON_PROXY=(taskset -c 1) ON_LOAD=(taskset -c 0)
    NGINX_WORKERS="${NGINX_WORKERS:-1}"
else
    LOAD_CPU="" ON_PROXY=() ON_LOAD=()
    NGINX_WORKERS="${NGINX_WORKERS:-$(nproc)}"
fi
OUT="${OUT:-$BENCH/results}"
BODY='{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001","pad":"xxxx"}'   # 64 bytes, as in post.lua
ENDPOINT=bench

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
# A tool kit made by bench/kit.sh (wrk and nginx with their libraries, for a machine without
# apt or network access) goes first on PATH.
[ -z "${BENCH_TOOLS:-}" ] || PATH="$(cd "$BENCH_TOOLS" && pwd)/bin:$PATH"
fetch() { python3 "$BENCH/fetch.py" "$@"; }
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# --- binaries --------------------------------------------------------------------------------
if [ -z "${SPILLWAY_BIN:-}" ]; then
    log "building spillway (release) in $ROOT"
    (cd "$ROOT" && cargo build --release --quiet)
    SPILLWAY_BIN="$ROOT/target/release/spillway"
fi
[ -x "$SPILLWAY_BIN" ] || { echo "SPILLWAY_BIN=$SPILLWAY_BIN is not an executable" >&2; exit 1; }
if [ -z "${LOADGEN_BIN:-}" ]; then
    log "building the load generator (bench/loadgen)"
    cargo build --release --quiet --manifest-path "$BENCH/loadgen/Cargo.toml"
    LOADGEN_BIN="$BENCH/loadgen/target/release/spillway-loadgen"
fi
[ -x "$LOADGEN_BIN" ] || { echo "LOADGEN_BIN=$LOADGEN_BIN is not an executable" >&2; exit 1; }
LOADGEN="$LOADGEN_BIN"

# --- scratch, clean-up -----------------------------------------------------------------------
TMP="$(mktemp -d /tmp/spillway-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NGX_PORT="$(free_port)"

# --- spillway and the endpoint ---------------------------------------------------------------
sm() {  # sm BASE_URL Operation JSON, signed by the administrator of the spillway being set up
    fetch "$1/" --header "X-Amz-Target: SageMaker.$2" \
        --header 'Content-Type: application/x-amz-json-1.1' --data "$3" --sign "$CREDS"
}
# Every request to spillway is signed (SigV4, verified by the spillway under test); direct and
# nginx get the same bytes and ignore the signature. A signature is valid for 5 minutes:
# `signed URL METHOD CMD...` signs METHOD URL (with BODY for POST) just before running CMD, and
# exports the headers for bench/post.lua and bench/get.lua (wrk) and LOADGEN_AUTH (loadgen).
declare -A SP_CREDS
signed() {
    local url=$1 method=$2 lines
    shift 2
    printf '%s' "$BODY" >"$TMP/body"
    [ "$method" = GET ] && : >"$TMP/body"
    local creds="$CREDS_UNDER_TEST" l
    for l in "${!SP_URLS[@]}"; do
        [[ "$url" == "${SP_URLS[$l]}"/* ]] && creds="${SP_CREDS[$l]}"
    done
    lines="$(python3 "$BENCH/sigv4.py" "$creds" "$method" "$url" 'Content-Type: application/json' "$TMP/body")"
    BENCH_AUTHORIZATION="$(sed -n 's/^Authorization: //p' <<<"$lines")" \
        BENCH_AMZ_DATE="$(sed -n 's/^X-Amz-Date: //p' <<<"$lines")" "$@"
}
declare -A URL PROXY_PIDS MODEL_PIDS SP_PIDS SP_URLS
# start_spillway LABEL BINARY EXTRA_TOML: starts a spillway with its own data dir and the bench
# endpoint (one builtin:echo instance); sets URL/PROXY_PIDS/MODEL_PIDS for LABEL, and
# UP_PORT/UP_PID to its model instance.
start_spillway() {
    local label=$1 bin=$2 extra=$3 port dir base status pid
    port="$(free_port)"
    dir="$TMP/$label"
    base="http://127.0.0.1:$port"
    mkdir -p "$dir"
    printf '[provider]\nkind = "local"\n\n[provider.local.capacity]\n"ml.m5.xlarge" = 1\n%b\n' "$extra" >"$dir/spillway.toml"
    # A minimal environment: builtin:echo answers with its environment, keep that answer small.
    "${ON_PROXY[@]}" env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$dir" RUST_LOG=warn \
        "$bin" serve --config "$dir/spillway.toml" --listen "127.0.0.1:$port" --data-dir "$dir/data" \
        >"$dir/spillway.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do fetch "$base/_spillway/health" >/dev/null && break; sleep 0.1; done
    fetch "$base/_spillway/health" >/dev/null || { cat "$dir/spillway.log" >&2; exit 1; }
    CREDS="$dir/data/credentials"
    SP_CREDS[$label]="$CREDS"
    sm "$base" CreateModel '{"ModelName":"bench-model","PrimaryContainer":{"Image":"builtin:echo"}}' >/dev/null
    sm "$base" CreateEndpointConfig '{"EndpointConfigName":"bench-config","ProductionVariants":[{"VariantName":"AllTraffic","ModelName":"bench-model","InitialInstanceCount":1,"InstanceType":"ml.m5.xlarge"}]}' >/dev/null
    sm "$base" CreateEndpoint "{\"EndpointName\":\"$ENDPOINT\",\"EndpointConfigName\":\"bench-config\"}" >/dev/null
    status=""
    for _ in $(seq 300); do
        status="$(sm "$base" DescribeEndpoint "{\"EndpointName\":\"$ENDPOINT\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["EndpointStatus"])')"
        [ "$status" = InService ] && break
        [ "$status" = Failed ] && break
        sleep 0.2
    done
    [ "$status" = InService ] || { echo "$label: endpoint is $status" >&2; cat "$dir/spillway.log" >&2; exit 1; }
    read -r UP_PORT UP_PID < <(fetch "$base/_spillway/endpoints/$ENDPOINT/instances" --sign "$CREDS" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("instances",d) if isinstance(d,dict) else d; i=d[0]; print(i["port"], i["pid"])')
    # The model instance inherited spillway's CPU: move all its threads to the load's CPU.
    [ -z "$LOAD_CPU" ] || taskset -a -p -c "$LOAD_CPU" "$UP_PID" >/dev/null
    URL[$label]="$base/endpoints/$ENDPOINT/invocations"
    PROXY_PIDS[$label]="$pid"
    MODEL_PIDS[$label]="$UP_PID"
    SP_PIDS[$label]="$pid"
    SP_URLS[$label]="$base"
    log "$label: $bin, pid $pid on :$port; echo instance pid $UP_PID on :$UP_PORT"
}

TARGETS=(direct nginx)
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || { echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2; exit 1; }
    start_spillway spillway-baseline "$BASELINE_BIN" ""
    TARGETS+=(spillway-baseline)
fi
if [ -n "${VARIANT_TOML:-}" ]; then
    start_spillway spillway-variant "$SPILLWAY_BIN" "\n$VARIANT_TOML"
    TARGETS+=(spillway-variant)
fi
if [ "${METRICS_OFF:-1}" = 1 ]; then
    start_spillway spillway-nometrics "$SPILLWAY_BIN" "\n[metrics]\nenabled = false"
    TARGETS+=(spillway-nometrics)
fi
# The spillway under test last: direct and nginx use its model instance.
start_spillway spillway "$SPILLWAY_BIN" ""
TARGETS+=(spillway)
SP_PID="${SP_PIDS[spillway]}"
SP="${SP_URLS[spillway]}"
CREDS_UNDER_TEST="${SP_CREDS[spillway]}"
SP_PORT="${SP##*:}"

# --- nginx -----------------------------------------------------------------------------------
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream model { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"${ON_PROXY[@]}" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx/stderr.log" &
NGX_PID=$!
PIDS+=("$NGX_PID")
for _ in $(seq 50); do fetch "http://127.0.0.1:$NGX_PORT/ping" --any >/dev/null && break; sleep 0.1; done
# nginx's workers: the master's children (read from /proc: procps need not be installed).
NGX_WORKER_PIDS="$(python3 - "$NGX_PID" <<'EOF'
import os, sys
kids = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    if stat.rsplit(")", 1)[1].split()[1] == sys.argv[1]:  # field 4: the parent's pid
        kids.append(pid)
print(" ".join(kids))
EOF
)"
[ -n "$NGX_WORKER_PIDS" ] || { echo "nginx started no worker" >&2; cat "$TMP/nginx/stderr.log" >&2; exit 1; }

URL[direct]="http://127.0.0.1:$UP_PORT/invocations"
URL[nginx]="http://127.0.0.1:$NGX_PORT/invocations"
# The processes whose CPU each path adds on top of the model server (direct and nginx use the
# model instance of the spillway under test).
PROXY_PIDS[direct]=""
PROXY_PIDS[nginx]="$NGX_WORKER_PIDS"
MODEL_PIDS[direct]="$UP_PID"
MODEL_PIDS[nginx]="$UP_PID"

for t in "${TARGETS[@]}"; do
    n="$(fetch "${URL[$t]}" --header 'Content-Type: application/json' --data "$BODY" --sign "$CREDS_UNDER_TEST" | wc -c)"
    [ "$n" -gt 0 ] || { echo "$t: no answer from ${URL[$t]}" >&2; exit 1; }
    log "$t: ${URL[$t]} answers $n bytes"
done
RESP_BYTES="$n"

cpu_ticks() {  # summed utime+stime (clock ticks) of the given pids
    local total=0 pid f
    for pid in "$@"; do
        f=($(sed 's/.*) //' "/proc/$pid/stat"))
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
user_ticks() {  # summed utime (clock ticks) of the given pids
    local total=0 pid f
    for pid in "$@"; do
        f=($(sed 's/.*) //' "/proc/$pid/stat"))
        total=$((total + f[11]))
    done
    echo "$total"
}
HZ="$(getconf CLK_TCK)"

mkdir -p "$OUT"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/raw-$STAMP.txt"
{
    echo "# spillway bench $STAMP"
    echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "# machine: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\" mem=\"$(grep MemTotal /proc/meminfo | awk '{print $2" kB"}')\" kernel=$(uname -r)"
    echo "# spillway: $SPILLWAY_BIN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "# tools: $(wrk -v 2>&1 | head -1 | cut -c1-40); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') workers=$NGINX_WORKERS"
    [ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] &&
        echo "# guest halt polling: $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns) ns (cpuidle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'))"
    echo "# params: duration=${DURATION}s repeats=$REPEATS conns=$CONNS wrk_threads=$WRK_THREADS body=64B response=${RESP_BYTES}B pin=$PIN"
} >"$RAW"

measure() {  # measure PHASE TARGET REP CMD...: runs CMD, appends its RESULT line with CPU use
    local phase=$1 t=$2 rep=$3; shift 3
    local pp=${PROXY_PIDS[$t]} c0 u0 c1 u1 line
    c0=$(cpu_ticks $pp); s0=$(user_ticks $pp); u0=$(cpu_ticks "${MODEL_PIDS[$t]}")
    line="$("${ON_LOAD[@]}" "$@" | grep '^RESULT\|^target_rps' | sed 's/^RESULT //')"
    c1=$(cpu_ticks $pp); s1=$(user_ticks $pp); u1=$(cpu_ticks "${MODEL_PIDS[$t]}")
    echo "$phase $t $rep $line proxy_cpu_s=$(python3 -c "print(($c1-$c0)/$HZ)") proxy_user_s=$(python3 -c "print(($s1-$s0)/$HZ)") model_cpu_s=$(python3 -c "print(($u1-$u0)/$HZ)")" | tee -a "$RAW" >&2
}

# --- 1. saturation (closed loop, wrk) --------------------------------------------------------
log "warm-up"
for t in "${TARGETS[@]}"; do
    signed "${URL[$t]}" POST wrk -t"$WRK_THREADS" -c"$CONNS" -d2s -s "$BENCH/post.lua" "${URL[$t]}" >/dev/null
done
log "saturation: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency -s bench/post.lua URL"
for rep in $(seq "$REPEATS"); do
    for t in "${TARGETS[@]}"; do
        signed "${URL[$t]}" POST measure sat "$t" "$rep" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$BENCH/post.lua" "${URL[$t]}"
    done
done

# --- 2. fixed rate (open loop, bench/loadgen) ------------------------------------------------
if [ -z "${RATE:-}" ]; then
    RATE="$(python3 - "$RAW" <<'EOF'
import re, statistics, sys
rps = {}
for line in open(sys.argv[1]):
    if line.startswith("sat "):
        t = line.split()[1]
        if t.startswith("spillway-"):  # the baseline and metrics-off variants do not set the rate
            continue
        rps.setdefault(t, []).append(float(re.search(r"rps=([\d.]+)", line).group(1)))
print(int(min(statistics.median(v) for v in rps.values()) / 2))
EOF
)"
fi
fixed_rate() {  # fixed_rate PHASE RATE: every repetition of every target at RATE req/s
    local rep t
    for rep in $(seq "$REPEATS"); do
        for t in "${TARGETS[@]}"; do
            signed "${URL[$t]}" POST measure "$1" "$t" "$rep" "$LOADGEN" --url "${URL[$t]}" --rate "$2" --duration "$DURATION" \
                --warmup 2 --connections "$CONNS" --body "$BODY"
        done
    done
}
echo "# fixed rate: $RATE req/s for every path" >>"$RAW"
log "fixed rate $RATE req/s: spillway-loadgen --rate $RATE --duration $DURATION --warmup 2 --connections $CONNS"
fixed_rate fixed "$RATE"

# --- 2b. latency ladder (optional): the same open-loop measurement at lower rates ------------
for rate in ${LADDER:-}; do
    log "ladder: fixed rate $rate req/s"
    fixed_rate ladder "$rate"
done

# --- 3. memory per 1,000 idle keep-alive connections -----------------------------------------
log "idle connections"
ulimit -n 8192 2>/dev/null || true
echo "mem spillway 1 $(python3 "$BENCH/idle_conns.py" "$SP_PORT" 1000 "/endpoints/$ENDPOINT/invocations" "$SP_PID" | sed 's/^RESULT //')" | tee -a "$RAW" >&2
if [ -n "${SP_PIDS[spillway-baseline]:-}" ]; then
    b="${SP_URLS[spillway-baseline]}"
    echo "mem spillway-baseline 1 $(python3 "$BENCH/idle_conns.py" "${b##*:}" 1000 "/endpoints/$ENDPOINT/invocations" "${SP_PIDS[spillway-baseline]}" | sed 's/^RESULT //')" | tee -a "$RAW" >&2
fi
echo "mem nginx 1 $(python3 "$BENCH/idle_conns.py" "$NGX_PORT" 1000 /invocations $NGX_WORKER_PIDS | sed 's/^RESULT //')" | tee -a "$RAW" >&2

# --- 4. metrics ------------------------------------------------------------------------------
# There is no switch to turn metrics collection off; measure what a scrape costs instead.
log "metrics scrape cost"
METRICS_BYTES="$(fetch "$SP/metrics" --sign "$CREDS_UNDER_TEST" | wc -c)"
line="$(signed "$SP/metrics" GET wrk -t1 -c1 -d3s -s "$BENCH/get.lua" "$SP/metrics" | awk '/Requests\/sec/ {print $2}')"
echo "metrics spillway 1 bytes=$METRICS_BYTES scrape_rps_1conn=$line" | tee -a "$RAW" >&2
if [ -f "$ROOT/dashboards/check.py" ]; then
    python3 "$ROOT/dashboards/check.py" "$SP/metrics" "$CREDS_UNDER_TEST" >&2 || log "the Grafana dashboard check failed (above)"
fi

# --- 5. profile (optional: PROFILE=0 skips; needs perf) ---------------------------------------
if [ "${PROFILE:-1}" != 0 ] && command -v perf >/dev/null; then
    log "profile: perf record -e cpu-clock on spillway during a ${DURATION}s saturation run"
    PROF="$OUT/profile-$STAMP.txt"
    CG=()
    [ -n "${PERF_CALLGRAPH:-}" ] && CG=(--call-graph "$PERF_CALLGRAPH")
    perf record -q -e cpu-clock -F 1999 "${CG[@]}" -p "$SP_PID" -o "$TMP/perf.data" -- sleep "$DURATION" 2>/dev/null &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
    signed "${URL[spillway]}" POST wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" -s "$BENCH/post.lua" "${URL[spillway]}" >/dev/null
    wait "$PERF_PID" || true
    {
        echo "# perf report --sort sym (self time, spillway process, saturation run) $STAMP"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort sym --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        echo "# perf report --sort dso"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo
        echo "# self time grouped by crate / area"
        perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,sym 2>/dev/null | python3 "$BENCH/profile_groups.py"
        if [ ${#CG[@]} -gt 0 ]; then
            echo
            echo "# inclusive time (children) of spillway's own functions, call graph: $PERF_CALLGRAPH"
            perf report -i "$TMP/perf.data" --stdio --children --sort sym -g none 2>/dev/null |
                grep -E 'spillway::|prometheus_client|std::sys::sync|futex' | head -40
        fi
    } >"$PROF"
    log "profile: $PROF"
fi

log "raw results: $RAW"
python3 "$BENCH/report.py" "$RAW"
