#!/usr/bin/env bash
# A throwaway multi-node Slurm cluster on this one host, for spillway's Slurm tests.
#
# Several slurmd "nodes" run on this host (slurmd -N <name>, one port each), with fake GPUs
# (character devices made with mknod, so Slurm sets CUDA_VISIBLE_DEVICES), one partition per
# instance type, a private munged, and no systemd. Every file lives under the scratch folder.
#
#   source scripts/slurm/cluster.sh
#   slurm_install            # apt-get install slurm-wlm munge when missing (needs root)
#   slurm_start "$dir"       # exports SLURM_CONF; daemons are children of this shell
#   slurm_stop               # stops every daemon slurm_start started (by pid)
#
#   bash scripts/slurm/cluster.sh run CMD...   # start a cluster, run CMD with SLURM_CONF set, stop it
#
# Nodes: a100-1, a100-2 (4 x gpu:a100 each), h100-1 (8 x gpu:h100). Partitions: a100x4 (the
# a100 nodes), h100x8 (h100-1), all. Ports: slurmctld $SLURM_CTLD_PORT (16817), slurmd
# $SLURM_NODE_PORT_BASE+1.. (17001..17003); reserved step ports (MpiParams) 20000-20999.

SLURM_PIDS=()

slurm_install() {
  local missing=()
  for b in slurmctld slurmd salloc srun squeue sinfo scancel scontrol; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
  done
  command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || missing+=(munged)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "slurm harness: installing slurm-wlm and munge (missing: ${missing[*]})"
  if [ "$(id -u)" != 0 ]; then
    echo "slurm harness: need root to apt-get install slurm-wlm munge" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

slurm_start() {
  local B=$1
  local host ctld_port=${SLURM_CTLD_PORT:-16817} nbase=${SLURM_NODE_PORT_BASE:-17000}
  host=$(hostname -s)
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$B"
  B=$(cd "$B" && pwd)
  chmod 0755 "$B" # munged runs as user munge and must reach its folder
  export SLURM_CONF=$B/etc/slurm.conf
  rm -rf "$B/state" "$B/spool" "$B/log" "$B/run"
  mkdir -p "$B/etc" "$B/state" "$B/log" "$B/run" "$B/fakegpu" "$B/munge"
  for i in 0 1 2 3 4 5 6 7; do [ -c "$B/fakegpu/nvidia$i" ] || mknod "$B/fakegpu/nvidia$i" c 1 3; done
  # A private munged: its own key and socket (the socket folder must be 0755).
  chown munge:munge "$B/munge"
  chmod 0755 "$B/munge"
  [ -f "$B/munge/munge.key" ] || runuser -u munge -- mungekey --create --keyfile="$B/munge/munge.key"
  runuser -u munge -- /usr/sbin/munged -F --socket="$B/munge/munge.sock" --key-file="$B/munge/munge.key" \
    --log-file="$B/munge/munged.log" --pid-file="$B/munge/munged.pid" --seed-file="$B/munge/munged.seed" \
    >"$B/log/munged.out" 2>&1 &
  SLURM_PIDS+=($!)
  for _ in $(seq 100); do [ -S "$B/munge/munge.sock" ] && break; sleep 0.05; done
  local nodes="a100-1 a100-2 h100-1"
  for n in $nodes; do mkdir -p "$B/spool/$n"; done
  cat >"$B/etc/slurm.conf" <<CONF
ClusterName=spillwaytest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$B/munge/munge.sock
SlurmctldPort=$ctld_port
StateSaveLocation=$B/state
SlurmdSpoolDir=$B/spool/%n
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd-%n.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MpiParams=ports=20000-20999
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=256
GresTypes=gpu
ReturnToService=2
SlurmdTimeout=5
MinJobAge=30
KillWait=5
InactiveLimit=0
NodeName=a100-[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$((nbase + 1))-$((nbase + 2))] CPUs=8 RealMemory=8000 Gres=gpu:a100:4 Feature=a100 State=UNKNOWN
NodeName=h100-1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((nbase + 3)) CPUs=8 RealMemory=8000 Gres=gpu:h100:8 Feature=h100 State=UNKNOWN
PartitionName=a100x4 Nodes=a100-[1-2] Default=YES MaxTime=INFINITE State=UP
PartitionName=h100x8 Nodes=h100-1 MaxTime=INFINITE State=UP
PartitionName=all Nodes=a100-[1-2],h100-1 MaxTime=INFINITE State=UP
CONF
  cat >"$B/etc/gres.conf" <<CONF
AutoDetect=off
NodeName=a100-[1-2] Name=gpu Type=a100 File=$B/fakegpu/nvidia[0-3]
NodeName=h100-1 Name=gpu Type=h100 File=$B/fakegpu/nvidia[0-7]
CONF
  /usr/sbin/slurmctld -D -i >"$B/log/slurmctld.out" 2>&1 &
  SLURM_PIDS+=($!)
  for n in $nodes; do
    /usr/sbin/slurmd -D -N "$n" >"$B/log/slurmd-$n.out" 2>&1 &
    SLURM_PIDS+=($!)
  done
  for _ in $(seq 400); do
    [ "$(sinfo -h -N -p all -o %T 2>/dev/null | grep -c '^idle')" = 3 ] && break
    sleep 0.05
  done
  if [ "$(sinfo -h -N -p all -o %T 2>/dev/null | grep -c '^idle')" != 3 ]; then
    echo "slurm harness: nodes did not become idle" >&2
    sinfo -N >&2 || true
    tail -n 20 "$B"/log/*.log >&2 || true
    return 1
  fi
  echo "slurm harness: cluster up in $B (pids ${SLURM_PIDS[*]})"
}

# The pid of a slurmd "node" this harness started (tests kill it to simulate a lost node).
slurm_node_pid() {
  cat "$(dirname "$SLURM_CONF")/../run/slurmd-$1.pid"
}

slurm_stop() {
  [ ${#SLURM_PIDS[@]} -eq 0 ] && return 0
  # Cancel whatever jobs are left so no model process survives the cluster.
  scancel --full --quiet --state=RUNNING,PENDING 2>/dev/null || true
  local p
  for p in "${SLURM_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 40); do
    local alive=0
    for p in "${SLURM_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  # slurmd ignores SIGTERM while it cannot reach the controller.
  for p in "${SLURM_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${SLURM_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "slurm harness: stopped ${#SLURM_PIDS[@]} daemons"
  SLURM_PIDS=()
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    run)
      shift
      slurm_install
      dir=$(mktemp -d /tmp/spillway-slurm.XXXXXX)
      trap 'slurm_stop; rm -rf "$dir"' EXIT
      trap 'exit 130' INT TERM
      slurm_start "$dir"
      "$@"
      ;;
    *)
      echo "usage: bash $0 run CMD..." >&2
      exit 2
      ;;
  esac
fi
