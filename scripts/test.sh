#!/usr/bin/env bash
# Runs every test spillway has, the way CI does: formatting, lints, the Rust unit and
# property tests, then the black-box conformance suite (pytest driving the real binary with
# boto3 and the aws CLI). Installs what it needs (a Python venv under .venv) on first use.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k pools        # extra arguments go to pytest
#   SPILLWAY_SKIP_SLURM=1 bash scripts/test.sh   # everything but the Slurm step, which needs root
#
# The last step (scripts/slurm/test.sh) installs slurm-wlm and munge with apt-get when they are
# missing and starts a small Slurm cluster on this host: it needs root and Debian/Ubuntu.
# SPILLWAY_SKIP_SLURM=1 skips it and says so loudly; CI (.ci/run) never sets it, and refuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

step "rustfmt"
cargo fmt --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --locked

# Before the Rust tests: src/objects/remote.rs tests the S3 backend against moto_server from it.
step "Python test environment"
stamp=.venv/.requirements.sha
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

step "Rust unit and property tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked
else
  cargo test --locked
fi

step "headless Chromium for the console tests (test_console.py)"
# Debian's chromium and chromium-driver (installed when missing; needs root).
# test_console.py fails, never skips, without them.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "need root to apt-get install chromium chromium-driver (or install them yourself)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromium --version

step "conformance suite (real binary, boto3 and aws CLI)"
export SPILLWAY_BIN="$PWD/target/debug/spillway"
.venv/bin/python -m pytest tests/conformance "$@"

step "Slurm provider on a real Slurm cluster (scripts/slurm/test.sh)"
if [ "${SPILLWAY_SKIP_SLURM:-0}" = 1 ]; then
  if [ -n "${SPILLWAY_CI:-}" ]; then
    echo "SPILLWAY_SKIP_SLURM=1 is not allowed in CI: the Slurm provider must be tested" >&2
    exit 1
  fi
  {
    echo "################################################################################"
    echo "# SKIPPED: the Slurm provider's tests (tests/provider_conformance.rs against"
    echo "# Slurm, tests/slurm/) did NOT run, because SPILLWAY_SKIP_SLURM=1."
    echo "# They need root (apt-get install slurm-wlm munge; a local cluster). Run them"
    echo "# with: sudo bash scripts/slurm/test.sh   (CI always runs them)"
    echo "################################################################################"
  } >&2
else
  bash scripts/slurm/test.sh
fi
