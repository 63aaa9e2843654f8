#!/usr/bin/env bash
# Start (or stop) a one-node SLURM cluster on this machine, for tests and for trying the
# SLURM examples in README "Running on HPC" without an HPC system.
#
#   sudo bash scripts/slurm/local_cluster.sh start [STATE_DIR]   # default /tmp/slurm-local
#   export SLURM_CONF=/tmp/slurm-local/slurm.conf                # for sbatch/squeue/sinfo
#   sudo bash scripts/slurm/local_cluster.sh stop [STATE_DIR]
#
# SLURMCTLD_PORT / SLURMD_PORT (default 6817 / 6818) choose the daemons' ports, so that a
# second cluster (e.g. one started by the tests) does not collide with a running one.
#
# Needs root and Debian's packages: apt-get install slurm-wlm munge (they provide slurmctld,
# slurmd, sbatch and munged; the munge package creates /etc/munge/munge.key). Nothing is
# written outside STATE_DIR except munged's socket in /run/munge. Jobs run as the submitting
# user on this node; no cgroups, no accounting (proctrack/linuxproc, accounting_storage/none).
set -euo pipefail

ACTION=${1:-start}
STATE=${2:-/tmp/slurm-local}
CONF=$STATE/slurm.conf

stop_cluster() {
    local name pid
    for name in slurmd slurmctld munged; do
        if [ -f "$STATE/$name.pid" ]; then
            pid=$(cat "$STATE/$name.pid")
            kill "$pid" 2>/dev/null || true
            rm -f "$STATE/$name.pid"
        fi
    done
}

case $ACTION in
stop)
    stop_cluster
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 start|stop [STATE_DIR]" >&2
    exit 2
    ;;
esac

for tool in slurmctld slurmd munged sbatch sinfo; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null || { echo "$0: $tool not found; apt-get install slurm-wlm munge" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "$0: run as root (the daemons switch users)" >&2; exit 2; }
[ -s /etc/munge/munge.key ] || { echo "$0: /etc/munge/munge.key missing; reinstall munge" >&2; exit 2; }

NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$STATE/state" "$STATE/spool" "$STATE/log"
cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$NODE CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

stop_cluster
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! munge -n >/dev/null 2>&1 </dev/null; then
    runuser -u munge -- /usr/sbin/munged --force
    sleep 1
    cp /run/munge/munged.pid "$STATE/munged.pid" 2>/dev/null || true
fi
/usr/sbin/slurmctld -f "$CONF" -c
/usr/sbin/slurmd -f "$CONF" -c
export SLURM_CONF=$CONF
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -q -E '^(idle|mix|alloc)'; then
        echo "SLURM cluster up: export SLURM_CONF=$CONF"
        exit 0
    fi
    sleep 0.5
done
echo "$0: the node did not become idle; see $STATE/log/" >&2
sinfo >&2 || true
exit 1
