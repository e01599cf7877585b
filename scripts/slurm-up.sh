#!/usr/bin/env bash
# Brings up a real one-node Slurm cluster (munged + slurmctld + slurmd) on this
# machine, for tests of seqpipe's Slurm client: scripts/slurm-up.sh [STATE_DIR]
#
# Everything it writes (config, munge key and socket, state, spool, logs, pid
# files) lives under STATE_DIR (default /tmp/seqpipe-slurm), so it never touches
# a site's /etc/slurm or a system munged. It is written for a container: root,
# no systemd, no cgroups, so the daemons are started by hand and the config
# uses proctrack/linuxproc and task/none. Idempotent: when the cluster it
# started is already up, it only prints the env line. On success the last line
# on stdout is `export SLURM_CONF=STATE_DIR/slurm.conf`; on failure the reason
# and the daemons' last log lines go to stderr (exit 1). Env knobs:
# SEQPIPE_SLURM_WAIT (seconds to wait, 60), SEQPIPE_SLURM_PORT (slurmctld's
# port, 6817; slurmd takes the next one) to run beside another cluster.
# scripts/slurm-down.sh STATE_DIR stops it.
set -euo pipefail

STATE="${1:-/tmp/seqpipe-slurm}"
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
CONF="$STATE/slurm.conf"
# The daemons live in sbin, which a non-login shell may lack.
PATH="$PATH:/usr/sbin:/sbin"
MUNGE_SOCKET="$STATE/munge/munge.socket"
WAIT_SECS="${SEQPIPE_SLURM_WAIT:-60}"
CTLD_PORT="${SEQPIPE_SLURM_PORT:-6817}"

# Set once daemons start: only then are the logs worth showing.
STARTED=0

die() {
    echo "slurm-up: $*" >&2
    [ "$STARTED" = 1 ] || exit 1
    local log
    for log in "$STATE"/log/*.log; do
        [ -s "$log" ] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
    exit 1
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

already_up() {
    pid_alive "$STATE/run/munged.pid" && pid_alive "$STATE/run/slurmctld.pid" \
        && pid_alive "$STATE/run/slurmd.pid" \
        && SLURM_CONF="$CONF" timeout 10 sinfo -h -o %T >/dev/null 2>&1
}

# Debian's packages; a clean CI machine of the same kind lacks them.
install_if_missing() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sbatch sinfo munged munge; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are not installed and there is no apt-get"
    echo "slurm-up: installing slurm-wlm and munge (log: /tmp/slurm-install.log)" >&2
    local start=$SECONDS
    # The packages' own service scripts may start a system munged; harmless,
    # ours has its own socket. Their slurmctld finds no /etc/slurm/slurm.conf.
    { DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } >/tmp/slurm-install.log 2>&1 \
        || die "apt-get install slurm-wlm munge failed; see /tmp/slurm-install.log"
    echo "install took $((SECONDS - start)) s" >>/tmp/slurm-install.log
}

# RealMemory a bit below MemTotal: slurmd drains a node that reports less
# memory than configured.
node_line() {
    local host cpus mem_kb
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((mem_kb * 95 / 100 / 1024)) State=UNKNOWN"
}

def_mem_per_cpu() {
    local mem_kb
    mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    echo $((mem_kb * 95 / 100 / 1024 / $(nproc)))
}

write_conf() {
    local host
    host="$(hostname -s)"
    cat >"$CONF" <<EOF
# Written by seqpipe scripts/slurm-up.sh: a one-node test cluster.
ClusterName=seqpipe
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroup hierarchy of our own in a container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd, so sacct has nothing to read: finished jobs are kept in the
# controller for an hour, where squeue/scontrol see them, and logged to a file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks no --mem is given the whole node's memory
# and every other job waits behind it.
DefMemPerCPU=$(def_mem_per_cpu)
MpiDefault=none
# No mail server in a container (slurmctld logs an error for the default).
MailProg=/bin/true
SwitchType=switch/none
ReturnToService=2
# The container may report other hardware than nproc/meminfo; trust the config.
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
$(node_line)
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ -S "$MUNGE_SOCKET" ] && munge -S "$MUNGE_SOCKET" -n </dev/null 2>/dev/null \
        | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
        return 0
    fi
    local key="$STATE/munge/munge.key"
    if [ ! -s "$key" ]; then
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chmod 0400 "$key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    # munged refuses to run as root unless forced.
    munged --force --socket="$MUNGE_SOCKET" --key-file="$key" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/log/munged.log" 2>&1 \
        || die "munged did not start"
    munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null \
        || die "munged started but a credential does not round-trip"
}

# Another cluster on our ports would answer our clients with its own munge
# key: fail now with a clear reason instead of timing out on auth errors.
check_ports() {
    local port
    for port in "$CTLD_PORT" $((CTLD_PORT + 1)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use (another slurmctld/slurmd?); stop it or set SEQPIPE_SLURM_PORT"
        fi
    done
}

stop_stale() {
    local name pidfile
    for name in slurmd slurmctld; do
        pidfile="$STATE/run/$name.pid"
        if pid_alive "$pidfile"; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            sleep 1
        fi
        rm -f "$pidfile"
    done
}

wait_idle() {
    local deadline=$((SECONDS + WAIT_SECS)) state=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(SLURM_CONF="$CONF" timeout 10 sinfo -h -o %T 2>/dev/null | head -n1 || true)"
        [ "$state" = idle ] && return 0
        sleep 1
    done
    die "node not idle after ${WAIT_SECS} s (sinfo says '${state:-nothing}')"
}

# A job through the whole path (controller, munge credential, slurmd,
# slurmstepd). Polled with scontrol: `sbatch --wait` sleeps ~10 s between
# checks even for `true`.
smoke_job() {
    local id state="" deadline=$((SECONDS + WAIT_SECS))
    id="$(SLURM_CONF="$CONF" sbatch --parsable --job-name=slurm-up-smoke \
        --output=/dev/null --chdir="$STATE" --wrap true 2>&1)" \
        || die "sbatch of a test job failed: $id"
    id="${id%%;*}"
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(SLURM_CONF="$CONF" scontrol show job -o "$id" 2>/dev/null \
            | grep -o 'JobState=[A-Z_]*' || true)"
        case "$state" in
            JobState=COMPLETED) return 0 ;;
            JobState=PENDING | JobState=CONFIGURING | JobState=RUNNING | JobState=COMPLETING | "") sleep 0.3 ;;
            *) die "test job $id ended as ${state#JobState=}" ;;
        esac
    done
    die "test job $id not done after ${WAIT_SECS} s (${state:-no state})"
}

main() {
    if already_up; then
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    # The daemons run as SlurmUser=root and munged is forced to run as root.
    [ "$(id -u)" = 0 ] || die "needs root to start munged/slurmctld/slurmd (and to apt-get them)"
    install_if_missing
    mkdir -p "$STATE"/{munge,ctld,spool,run,log}
    # munged wants the key private but its socket directory searchable.
    chmod 0755 "$STATE/munge"
    write_conf
    stop_stale
    check_ports
    STARTED=1
    start_munge
    # stdio to the log: a caller reading our stdout must not wait on daemons.
    slurmctld -f "$CONF" </dev/null >>"$STATE/log/slurmctld.log" 2>&1 \
        || die "slurmctld did not start"
    slurmd -f "$CONF" </dev/null >>"$STATE/log/slurmd.log" 2>&1 \
        || die "slurmd did not start"
    wait_idle
    smoke_job
    echo "export SLURM_CONF=$CONF"
}

main
