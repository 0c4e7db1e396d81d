#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests/test_slurm.py and CI (Debian 12, root).
#
#   scripts/slurm_local.sh install   apt-get install slurm-wlm + munge when missing
#   scripts/slurm_local.sh start     install, write the config, start munged/slurmctld/slurmd,
#                                    wait until the node is idle (exit 0: ready)
#   scripts/slurm_local.sh status    exit 0 when this script's cluster answers `sinfo`
#   scripts/slurm_local.sh stop      kill the daemons it started, by PID
#
# Why the config looks as it does (docs/cluster.md, "A local Slurm for the tests"):
# no systemd and partial cgroups (proctrack/linuxproc, task/none); no accounting database, so
# finished jobs must stay visible to squeue (MinJobAge); the Snakemake job step clears SLURM_*,
# so the config must be found at /etc/slurm/slurm.conf (a symlink to $FLOWPROBE_SLURM_DIR);
# a fake GPU (gres on an ordinary file) lets `--gpus=1` submissions run on a CPU machine.
# Environment: FLOWPROBE_SLURM_DIR (default /tmp/flowprobe-slurm), FLOWPROBE_SLURM_GPUS (fake GPUs,
# default 4) and FLOWPROBE_SLURM_CPUS (default twice the cores: a test job is mostly Python start-up,
# so oversubscribing keeps the cores busy while other jobs wait on I/O and status polls).
set -euo pipefail

DIR="${FLOWPROBE_SLURM_DIR:-/tmp/flowprobe-slurm}"
GPUS="${FLOWPROBE_SLURM_GPUS:-4}"
CPUS="${FLOWPROBE_SLURM_CPUS:-$(( 2 * $(nproc) ))}"
ETC=/etc/slurm
HOST="$(hostname -s)"

die() { echo "slurm_local: $*" >&2; exit 1; }

have_slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; }

install() {
    have_slurm && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root: run 'sudo apt-get install slurm-wlm munge'"
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is missing: install slurm-wlm and munge by hand"
    echo "slurm_local: installing slurm-wlm and munge (apt-get, ~30 s)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed; is a package mirror reachable?"
    apt-get install -y -qq slurm-wlm munge >&2 || die "apt-get install slurm-wlm munge failed"
}

write_config() {
    local cpus="$CPUS" mem
    [ "$cpus" -ge 2 ] || cpus=2  # the rules' jobs take up to 2 threads
    # The rules ask for up to 8 GB; slurmd reports these configured values (config_overrides)
    # instead of the machine's, so a small CI machine still accepts every job.
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
    [ "$mem" -ge 16000 ] || mem=16000
    mkdir -p "$DIR/state" "$DIR/spool"
    : > "$DIR/fake-gpu"
    cat > "$DIR/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster, not for production.
ClusterName=flowprobe
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
MinJobAge=600
DefMemPerCPU=1000
ReturnToService=2
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=UNLIMITED State=UP
EOF
    {
        echo "AutoDetect=off"
        for i in $(seq 1 "$GPUS"); do echo "NodeName=$HOST Name=gpu File=$DIR/fake-gpu"; done
    } > "$DIR/gres.conf"
    mkdir -p "$ETC"
    for name in slurm.conf gres.conf; do
        if [ -e "$ETC/$name" ] && [ ! -L "$ETC/$name" ]; then
            die "$ETC/$name exists and is not ours; refusing to replace a real cluster's config"
        fi
        ln -sfn "$DIR/$name" "$ETC/$name"
    done
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing; reinstall munge"
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    echo started > "$DIR/munged.ours"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "munged did not start; see /var/log/munge/munged.log"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

status() { alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && sinfo -h >/dev/null 2>&1; }

start() {
    if status; then echo "slurm_local: already running ($DIR)"; return 0; fi
    install
    [ "$(id -u)" = 0 ] || die "starting slurmctld/slurmd needs root"
    mkdir -p "$DIR"
    write_config
    start_munge
    alive "$DIR/slurmctld.pid" || /usr/sbin/slurmctld -i
    alive "$DIR/slurmd.pid" || /usr/sbin/slurmd
    for _ in $(seq 60); do
        if [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; then
            echo "slurm_local: node $HOST idle ($DIR)"
            return 0
        fi
        sleep 0.5
    done
    tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    die "the node did not become idle within 30 s (sinfo: $(sinfo -h -o '%T %E' 2>&1))"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local pid
    [ -f "$1" ] || return 0
    pid="$(cat "$1")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "slurm_local: stopped $2 ($pid)"
    fi
    rm -f "$1"
}

stop() {
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    if [ -f "$DIR/munged.ours" ]; then
        stop_pid /run/munge/munged.pid munged
        rm -f "$DIR/munged.ours"
    fi
    for name in slurm.conf gres.conf; do
        [ "$(readlink "$ETC/$name" 2>/dev/null)" = "$DIR/$name" ] && rm -f "$ETC/$name"
    done
    return 0
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    status) status ;;
    stop) stop ;;
    *) die "usage: $0 install|start|status|stop" ;;
esac
