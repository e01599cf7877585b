#!/usr/bin/env bash
# Stops the one-node Slurm cluster that scripts/slurm-up.sh STATE_DIR started,
# by the pid files it left under STATE_DIR (default /tmp/seqpipe-slurm): slurmd,
# slurmctld, then munged. Idempotent: a daemon already gone is skipped. The
# state directory (config, logs, job state) is kept for post-mortems.
set -euo pipefail

STATE="${1:-/tmp/seqpipe-slurm}"

stop() {
    local pidfile="$STATE/run/$1.pid" pid i
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $1 (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# Jobs still running would outlive slurmd as orphaned slurmstepd processes.
cancel_jobs() {
    local conf="$STATE/slurm.conf" ids
    [ -f "$conf" ] && [ -s "$STATE/run/slurmctld.pid" ] || return 0
    kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null || return 0
    ids="$(SLURM_CONF="$conf" timeout 10 squeue -h -o %i 2>/dev/null || true)"
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086 # one argument per job id
    SLURM_CONF="$conf" timeout 10 scancel $ids 2>/dev/null || true
    sleep 2
}

cancel_jobs
stop slurmd
stop slurmctld
stop munged
