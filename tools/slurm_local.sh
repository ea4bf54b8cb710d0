#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests and for trying the Slurm launcher
# on a laptop: munged, slurmctld and slurmd from Debian's packages (munge, slurmctld, slurmd,
# slurm-client), run as root, with their config, state and logs in one folder.
#
#   tools/slurm_local.sh start [DIR]   # writes DIR/slurm.conf, starts the daemons, waits
#   tools/slurm_local.sh stop  [DIR]   # stops exactly the daemons it started (by pid)
#   tools/slurm_local.sh env   [DIR]   # prints: export SLURM_CONF=DIR/slurm.conf
#
# DIR defaults to $ECHO_VLSM_SLURM_DIR or /tmp/echo-vlsm-slurm. Slurm commands find the
# cluster through SLURM_CONF; munge through the socket in DIR.
set -euo pipefail

cmd=${1:-}
dir=${2:-${ECHO_VLSM_SLURM_DIR:-/tmp/echo-vlsm-slurm}}
conf="$dir/slurm.conf"
socket="$dir/munge/munge.socket"

need() { command -v "$1" >/dev/null || { echo "slurm_local: $1 not found (apt-get install munge slurmctld slurmd slurm-client)" >&2; exit 3; }; }

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 512 ))
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    chmod 700 "$dir/munge"
    cat > "$conf" <<EOF
ClusterName=echo-vlsm-local
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${ECHO_VLSM_SLURMCTLD_PORT:-6917}
SlurmdPort=${ECHO_VLSM_SLURMD_PORT:-6918}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    need munged; need slurmctld; need slurmd; need sinfo
    if alive "$dir/slurmctld.pid"; then echo "slurm_local: already running in $dir"; return 0; fi
    write_conf
    if [[ ! -f "$dir/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
    fi
    munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    slurmctld -f "$conf"
    slurmd -f "$conf"
    export SLURM_CONF="$conf"
    for _ in $(seq 1 60); do
        state=$(sinfo -h -o %t 2>/dev/null | head -1 || true)
        if [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then
            echo "slurm_local: up ($state) in $dir; export SLURM_CONF=$conf"
            return 0
        fi
        if [[ "$state" == down* || "$state" == drain* ]]; then
            scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    echo "slurm_local: the node did not come up; logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
}

stop() {
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    echo "slurm_local: stopped ($dir)"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
