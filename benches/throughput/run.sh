#!/usr/bin/env bash
# Throughput benchmark (issue #4): seqpipe's `train` against a plain PyTorch
# loop on the same sequences, and `evaluate`'s full-ranking scoring rate.
# Not part of the test suite; see docs/benchmarks.md.
#
#   benches/throughput/run.sh                 # 3 epochs per training, once
#   EPOCHS=5 REPEATS=2 benches/throughput/run.sh
#   THREADS=1 benches/throughput/run.sh       # both sides on 1 torch thread
#   MALLOC_VARIANT=1 benches/throughput/run.sh  # + seqpipe with malloc tuned
#
# THREADS unset: the worker keeps LibTorch's default thread count and the
# PyTorch loop is given the same number (read from the run manifest's
# `torch_threads` note). THREADS=N exports OMP_NUM_THREADS=N, which the
# worker's LibTorch reads at start-up, and passes --threads N to Python.
#
# Needs the release binaries (scripts/quickstart.sh or `cargo build
# --release`) and .venv (torch, pyarrow). Writes raw logs under
# benches/throughput/out/<time>/, the tables to stdout and at the top of
# benches/throughput/RESULTS.md (which keeps earlier runs below). Uses its
# own cache, benches/.cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
. scripts/env.sh

EPOCHS="${EPOCHS:-3}"
REPEATS="${REPEATS:-1}"
THREADS="${THREADS:-}"
MALLOC_VARIANT="${MALLOC_VARIANT:-}"
MALLOC_TUNABLES="glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
if [ -n "$THREADS" ]; then
    export OMP_NUM_THREADS="$THREADS"
fi
MODELS="${MODELS:-sasrec gru4rec}"
SEQPIPE="$ROOT/target/release/seqpipe"
PYTHON="$ROOT/.venv/bin/python"
CACHE="$ROOT/benches/.cache"
SPEC="benches/throughput/bench.toml"
EVAL_SPEC="benches/throughput/eval.toml"
OUT="$HERE/out/$(date -u +%Y%m%dT%H%M%SZ)"

for f in "$SEQPIPE" "$ROOT/target/release/seqpipe-torch" "$PYTHON"; do
    [ -x "$f" ] || { echo "run.sh: $f is missing (run scripts/quickstart.sh first)" >&2; exit 2; }
done
mkdir -p "$OUT"

sp() { "$SEQPIPE" --cache "$CACHE" "$@"; }

# The busy jiffies of all CPUs (everything but idle and iowait).
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# measure NAME CMD... (a program, not a shell function): runs CMD with its
# output in NAME.log, and records its wall and CPU seconds (NAME.time), the
# machine's busy jiffies around it (NAME.busy), from which report.py tells
# how much of the CPU others took, and the CPU ticks of its seqpipe-torch
# worker over time (NAME.cpu, see cpu_poll.py).
measure() {
    local name="$1"
    shift
    busy_jiffies >"$OUT/$name.busy"
    uptime >"$OUT/$name.uptime"
    /usr/bin/time -f '%e %U %S' -o "$OUT/$name.time" "$@" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    "$PYTHON" "$HERE/cpu_poll.py" "$pid" >"$OUT/$name.cpu" &
    local poller=$! rc=0
    wait "$pid" || rc=$?
    wait "$poller" || true # it ends with the command
    busy_jiffies >>"$OUT/$name.busy"
    uptime >>"$OUT/$name.uptime"
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$OUT/$name.log" >&2
        echo "run.sh: $name failed (log: $OUT/$name.log)" >&2
        exit 1
    fi
}

# The JSON of the last run of SPEC (with artifact paths).
show() { sp show "$1" --json; }

facts() {
    {
        echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src stages || echo '+dirty')"
        echo "cores=$(nproc --all)"
        echo "cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
        echo "kernel=$(uname -r)"
        echo "torch=$("$PYTHON" -c 'import torch; print(torch.__version__)')"
        echo "epochs=$EPOCHS"
        echo "repeats=$REPEATS"
        echo "threads=${THREADS:-default}"
        echo "malloc_variant=${MALLOC_VARIANT:-no}"
    } >"$OUT/machine.env"
}

facts
uptime | tee "$OUT/uptime.before"

# The data: ML-100K → 5-core sequences (cached after the first run).
sp run "$SPEC" --only load -q
sp run "$SPEC" --only sequences -q
show "$SPEC" >"$OUT/data.show.json"
DATA="$("$PYTHON" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(s for s in m["stages"] if s["name"]=="sequences")["artifacts"]["data"]["path"])' "$OUT/data.show.json")"

# seqpipe_train MODEL REP [VARIANT]: VARIANT `seqpipe` (the default) or
# `seqpipemalloc`, the same run with glibc's malloc told to keep freed memory
# (GLIBC_TUNABLES, inherited by the worker) instead of handing big blocks
# back to the kernel, which then zeroes fresh pages for the next ones.
seqpipe_train() {
    local m="$1" r="$2" name="${3:-seqpipe}"
    local env=(env)
    if [ "$name" = seqpipemalloc ]; then
        env+=("GLIBC_TUNABLES=$MALLOC_TUNABLES")
    fi
    echo "$name train_$m ($EPOCHS epochs, repeat $r)" >&2
    measure "${name}_${m}_$r" "${env[@]}" "$SEQPIPE" --cache "$CACHE" -v run "$SPEC" \
        --only "train_$m" --force "train_$m" --set "train_$m.epochs=$EPOCHS"
    show "$SPEC" >"$OUT/${name}_${m}_$r.show.json"
    # The test metric of the model just trained (evaluate is cached when the
    # training reproduced the same bytes, as it does on CPU at the same
    # thread count).
    sp run "$SPEC" --only "eval_$m" --set "train_$m.epochs=$EPOCHS" -q
    show "$SPEC" >"$OUT/${name}_${m}_$r.eval.json"
}

# The worker's torch threads, from the manifest of its first training.
threads() {
    if [ -n "$THREADS" ]; then
        echo "$THREADS"
        return
    fi
    "$PYTHON" -c 'import json,sys,glob
for f in sorted(glob.glob(sys.argv[1] + "/seqpipe_*.show.json")):
    for s in json.load(open(f))["stages"]:
        if s["name"].startswith("train_") and "torch_threads" in s["notes"]:
            print(s["notes"]["torch_threads"]); sys.exit()
sys.exit("no torch_threads note")' "$OUT"
}

pytorch_train() { # MODEL REP
    local m="$1" r="$2"
    echo "pytorch $m ($EPOCHS epochs, repeat $r, $(threads) threads)" >&2
    measure "pytorch_${m}_$r" "$PYTHON" "$HERE/pytorch_loop.py" --spec "$SPEC" --stage "train_$m" \
        --data "$DATA" --epochs "$EPOCHS" --threads "$(threads)" --json-out "$OUT/pytorch_${m}_$r.json"
}

# One heavy process at a time; the order alternates between repeats so
# that a load change favours neither side.
for r in $(seq 1 "$REPEATS"); do
    for m in $MODELS; do
        if [ $((r % 2)) -eq 1 ]; then
            seqpipe_train "$m" "$r"
            pytorch_train "$m" "$r"
        else
            pytorch_train "$m" "$r"
            seqpipe_train "$m" "$r"
        fi
        if [ -n "$MALLOC_VARIANT" ]; then
            seqpipe_train "$m" "$r" seqpipemalloc
        fi
    done
done

# Evaluation scoring rate on a ~10,000-item catalogue.
echo "evaluate: synthetic data, gru4rec 1 epoch, full ranking" >&2
sp run "$EVAL_SPEC" --only synth -q
sp run "$EVAL_SPEC" --only sequences -q
sp run "$EVAL_SPEC" --only train_gru4rec -q
for stage in eval_test eval_both eval_default; do
    measure "$stage" "$SEQPIPE" --cache "$CACHE" run "$EVAL_SPEC" --only "$stage" --force "$stage"
    show "$EVAL_SPEC" >"$OUT/$stage.show.json"
done

uptime | tee "$OUT/uptime.after"
# RESULTS.md keeps every run, newest first.
"$PYTHON" "$HERE/report.py" "$OUT" | tee "$OUT/RESULTS.md"
if [ -f "$HERE/RESULTS.md" ]; then
    printf '\n---\n\n' >>"$OUT/RESULTS.md"
    cat "$HERE/RESULTS.md" >>"$OUT/RESULTS.md"
fi
cp "$OUT/RESULTS.md" "$HERE/RESULTS.md"
