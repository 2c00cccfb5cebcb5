#!/usr/bin/env bash
# Packs what bench/run.sh needs into one folder, for a machine that can run the benchmark but
# cannot build or install anything (no cargo, no apt, no network): a larger host with idle
# cores, such as the device machine some tasks are lent (see BENCHMARKS.md, "On another
# machine").
#
#   bash bench/kit.sh [DIR]        # default DIR: <repo>/.benchkit (ignored by git)
#
# DIR/bin holds spillway (release), spillway-loadgen, and wrappers for wrk and nginx that run
# the Debian binaries in DIR/libexec with their shared libraries from DIR/lib (everything but
# glibc itself, which the target machine's own loader provides; it must be glibc 2.36 or newer,
# as Debian 12's binaries need). On the target machine, with python3 and coreutils there:
#
#   SPILLWAY_BIN=DIR/bin/spillway LOADGEN_BIN=DIR/bin/spillway-loadgen BENCH_TOOLS=DIR bash bench/run.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.benchkit}"

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx >/dev/null
        break
    }
done
(cd "$ROOT" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$ROOT/bench/loadgen/Cargo.toml"

rm -rf "$DIR"
mkdir -p "$DIR/bin" "$DIR/libexec" "$DIR/lib"
cp "$ROOT/target/release/spillway" "$ROOT/bench/loadgen/target/release/spillway-loadgen" "$DIR/bin/"
for tool in wrk nginx; do
    path="$(command -v "$tool" || echo "/usr/sbin/$tool")"
    cp "$path" "$DIR/libexec/$tool"
    # Every shared library the binary loads, except glibc's own (libc, libm, libpthread, libdl,
    # librt, the loader): those must come from the machine that runs it.
    ldd "$path" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) ;;
            *) cp -L "$lib" "$DIR/lib/" ;;
        esac
    done
    cat >"$DIR/bin/$tool" <<EOF
#!/bin/sh
# bench/kit.sh: the Debian $tool with the libraries packed beside it.
kit="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$kit/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$kit/libexec/$tool" "\$@"
EOF
    chmod +x "$DIR/bin/$tool"
done
"$DIR/bin/wrk" -v 2>&1 | head -1 || true  # wrk -v exits 1
"$DIR/bin/nginx" -v
du -sh "$DIR"
echo "kit ready: $DIR (spillway $(cd "$ROOT" && git rev-parse --short HEAD))"
