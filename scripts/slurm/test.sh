#!/usr/bin/env bash
# The Slurm provider's tests on a real multi-node Slurm cluster started on this host:
#   1. installs slurm-wlm and munge from Debian when missing (root; apt-get update first),
#   2. starts munged, slurmctld and three slurmd "nodes" with fake GPUs in a scratch folder,
#   3. runs the provider conformance suite (tests/provider_conformance.rs) against Slurm and the
#      boto3 end-to-end tests (tests/slurm/) against a Slurm-backed spillway,
#   4. stops every daemon it started and removes the scratch folder (also on failure or Ctrl-C).
#
#   bash scripts/slurm/test.sh            # expects target/debug/spillway and .venv (scripts/test.sh makes them)
#   bash scripts/slurm/test.sh -k drain   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=cluster.sh
source scripts/slurm/cluster.sh

slurm_install
dir=$(mktemp -d /tmp/spillway-slurm.XXXXXX)
cleanup() {
  slurm_stop
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t0=$(date +%s)
slurm_start "$dir"

export SPILLWAY_SLURM_TESTS=1
echo "-- provider conformance (local and Slurm)"
cargo test --locked --test provider_conformance -- --include-ignored --nocapture
echo "-- end to end with boto3 on a Slurm-backed server"
export SPILLWAY_BIN="${SPILLWAY_BIN:-$PWD/target/debug/spillway}"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m pytest -c tests/slurm/pytest.ini tests/slurm -p no:cacheprovider "$@"
echo "slurm tests: $(($(date +%s) - t0)) s including cluster start"
