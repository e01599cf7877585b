#!/usr/bin/env bash
# Data benchmark (issue #3): load → clean → sequences on synth.tecd
# partitions, in seqpipe (pipelines/bench-data.toml), pandas and polars,
# each timed with /usr/bin/time -v (wall, CPU, peak RSS). Not part of the
# test suite; results and how to read them: docs/bench-data.md.
#
#   benches/data/run.sh 6000000          # events (default 60000000)
#   SEQPIPE=/path/to/seqpipe benches/data/run.sh 20000000
#   KEEP=1 benches/data/run.sh 6000000   # keep the pandas/polars outputs
#
# Needs the release binary (cargo build --release) and benches/data/.venv
# (python3 -m venv benches/data/.venv && benches/data/.venv/bin/pip install
# pandas pyarrow polars). Uses its own cache, benches/data/.cache (the
# synth.tecd dataset at 60M events is 0.9 GB there, each table stage's
# output 0.55 GB; ~6 GB for 6M, 20M and 60M together); raw logs go to
# benches/data/out/<time>-<events>/,
# the table rows to stdout and to that folder's rows.md.
#
# seqpipe's timing: the dataset is generated (or found) first by
# `--only data`, and one untimed run computes whatever else is not cached
# yet. Then `run --force events --force clean --force sequences`
# recomputes exactly those three stages in one seqpipe process: the synth
# stage and the SQL variant are cache hits (a lookup each, milliseconds;
# `events` gives the same bytes again, so the variant's key stays). The
# variant is timed the same way: `--force events --force clean_sql
# --force sequences_sql`. The pandas and polars scripts read the same
# partition files from the cached dataset folder. Every tool's output is
# summarised (counts and a digest of every value) and compared with
# seqpipe's: exit 1 when they differ.
#
# Others share this machine: before each timed command the script waits
# (up to MAX_WAIT s, default 900) until the 1-minute load is under
# MAX_LOAD (default 3) and MIN_FREE_GIB (default 12) GiB are available;
# the table records the load and the share of the CPUs others took.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

EVENTS="${1:-60000000}"
SEQPIPE="${SEQPIPE:-$ROOT/target/release/seqpipe}"
PYTHON="$HERE/.venv/bin/python"
CACHE="$HERE/.cache"
SPEC="pipelines/bench-data.toml"
OUT="$HERE/out/$(date -u +%Y%m%dT%H%M%SZ)-$EVENTS"
TIME=/usr/bin/time

for f in "$SEQPIPE" "$PYTHON" "$TIME"; do
    [ -x "$f" ] || { echo "run.sh: $f is missing (see the header of $0)" >&2; exit 2; }
done
mkdir -p "$OUT"

sp() { "$SEQPIPE" --cache "$CACHE" "$@"; }

# The busy jiffies of all CPUs (everything but idle and iowait): with the
# tool's own CPU time they tell how much of the 2 cores others took.
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# Waits until the machine is quiet enough to time something (see above).
quiet() {
    local waited=0
    while true; do
        local load free
        load="$(cut -d' ' -f1 /proc/loadavg)"
        free="$(awk '/^MemAvailable:/{print int($2 / 1048576)}' /proc/meminfo)"
        if awk -v l="$load" -v m="${MAX_LOAD:-3}" 'BEGIN{exit !(l < m)}' \
            && [ "$free" -ge "${MIN_FREE_GIB:-12}" ]; then
            return
        fi
        if [ "$waited" -ge "${MAX_WAIT:-900}" ]; then
            echo "run.sh: still load $load, $free GiB free after ${waited}s; timing anyway" >&2
            return
        fi
        echo "run.sh: load $load, $free GiB available: waiting" >&2
        sleep 30
        waited=$((waited + 30))
    done
}

# measure NAME CMD...: NAME.log (output), NAME.time (time -v), NAME.busy,
# NAME.load (loadavg before and after).
measure() {
    local name="$1"
    shift
    [ "$name" = synth ] || quiet
    echo "run.sh: $name ($(cut -d' ' -f1-3 /proc/loadavg) load)" >&2
    busy_jiffies >"$OUT/$name.busy"
    cut -d' ' -f1 /proc/loadavg >"$OUT/$name.load"
    "$TIME" -v -o "$OUT/$name.time" "$@" >"$OUT/$name.log" 2>&1 || {
        echo "run.sh: $name failed; the end of $OUT/$name.log:" >&2
        tail -20 "$OUT/$name.log" >&2
        exit 1
    }
    busy_jiffies >>"$OUT/$name.busy"
    cut -d' ' -f1 /proc/loadavg >>"$OUT/$name.load"
}

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "events=$EVENTS"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src stages || echo '+dirty')"
    echo "cores=$(nproc)"
    echo "cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "memory=$(free -g | awk '/^Mem:/{print $2}') GiB"
    echo "python=$("$PYTHON" -c 'import sys, pandas, polars, pyarrow; print(sys.version.split()[0], "pandas", pandas.__version__, "polars", polars.__version__, "pyarrow", pyarrow.__version__)')"
} >"$OUT/machine.env"
free -m >"$OUT/free.before"

# The dataset (cached after the first run at this size).
echo "run.sh: synth.tecd with $EVENTS events" >&2
measure synth "$SEQPIPE" --cache "$CACHE" run "$SPEC" --set "data.events=$EVENTS" --only data
DATASET="$(sp show "$SPEC" --json | "$PYTHON" -c 'import json, sys
m = json.load(sys.stdin)
print(next(s for s in m["stages"] if s["name"] == "data")["artifacts"]["dataset"]["path"])')"
case "$DATASET" in /*) ;; *) DATASET="$ROOT/$DATASET" ;; esac
# Read the partitions once so that no tool pays for the disk.
cat "$DATASET"/events/retail/*.parquet "$DATASET"/events/marketplace/*.parquet >/dev/null

echo "run.sh: computing what is not cached yet (untimed)" >&2
sp run "$SPEC" --set "data.events=$EVENTS" -q --jobs 1  # one at a time: memory

# seqpipe_timed NAME CLEAN SEQUENCES: load → CLEAN → SEQUENCES, timed.
seqpipe_timed() {
    local name="$1" clean="$2" sequences="$3"
    measure "$name" "$SEQPIPE" --cache "$CACHE" run "$SPEC" --set "data.events=$EVENTS" \
        --force events --force "$clean" --force "$sequences"
    sp show "$SPEC" --json >"$OUT/$name.show.json"
    local path
    path="$("$PYTHON" -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(next(s for s in m["stages"] if s["name"] == sys.argv[2])["artifacts"]["data"]["path"])' \
        "$OUT/$name.show.json" "$sequences")"
    case "$path" in /*) ;; *) path="$ROOT/$path" ;; esac
    "$PYTHON" "$HERE/summarize.py" "$path" >"$OUT/$name.summary.json"
}
seqpipe_timed seqpipe clean sequences
seqpipe_timed seqpipe_sql clean_sql sequences_sql

for tool in pandas polars; do
    measure "$tool" "$PYTHON" "$HERE/${tool}_steps.py" --data "$DATASET" --out "$OUT/$tool"
    "$PYTHON" "$HERE/summarize.py" "$OUT/$tool" >"$OUT/$tool.summary.json"
    [ -n "${KEEP:-}" ] || rm -rf "${OUT:?}/$tool"
done

"$PYTHON" "$HERE/report.py" "$OUT" | tee "$OUT/rows.md"
