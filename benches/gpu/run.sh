#!/usr/bin/env bash
# On a GPU machine (the device tool): unpack the binaries built here and
# carried as target/gpu/*.xz, point them at that machine's torch (same
# 2.11.0, CUDA build), run benches/gpu/cuda.toml on CUDA and then on CPU, and
# print what proves CUDA ran: the device notes, epoch times, GPU memory.
#   TORCH_LIB=/opt/torch/.venv/lib/python3.X/site-packages/torch/lib benches/gpu/run.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benches/gpu/out}"
mkdir -p "$OUT" target/gpu/bin
for b in seqpipe seqpipe-torch; do
    xz -dc "target/gpu/$b.xz" > "target/gpu/bin/$b"
    chmod +x "target/gpu/bin/$b"
done
TORCH_LIB="${TORCH_LIB:-$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib | head -n1)}"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SEQ="$ROOT/target/gpu/bin/seqpipe"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# GPU memory in use, sampled every 0.2 s while the pipeline runs.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpu_mem.txt" &
SMI=$!
/usr/bin/time -v "$SEQ" --cache "$OUT/cache" run benches/gpu/cuda.toml --quiet 2> "$OUT/time_cuda.txt"
kill $SMI || true
"$SEQ" --cache "$OUT/cache" show benches/gpu/cuda.toml --json > "$OUT/show_cuda.json"
echo "peak GPU memory used (MiB): $(sort -n "$OUT/gpu_mem.txt" | tail -n1)"
# The same trainings on this machine's CPU, for the ratio (a copy of the
# spec with device = "cpu", in a cache of its own).
sed 's/^device = "cuda"/device = "cpu"/' benches/gpu/cuda.toml > benches/gpu/cpu.toml
if [ "${SKIP_CPU:-0}" != 1 ]; then
    /usr/bin/time -v "$SEQ" --cache "$OUT/cache_cpu" run benches/gpu/cpu.toml --quiet \
        2> "$OUT/time_cpu.txt" || echo "(cpu run failed: see $OUT/time_cpu.txt)"
    "$SEQ" --cache "$OUT/cache_cpu" show benches/gpu/cpu.toml --json > "$OUT/show_cpu.json" || true
fi
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for run in ["cuda", "cpu"]:
    p = out / f"show_{run}.json"
    if not p.exists():
        continue
    for s in json.loads(p.read_text())["stages"]:
        if not s["name"].startswith(("train", "eval", "embed")):
            continue
        notes = s.get("notes", {})
        line = f"{run:4} {s['name']:14} {s['outcome']:6} {s.get('seconds', 0):8.1f} s  device={notes.get('device', '?')}"
        model = s.get("artifacts", {}).get("model")
        if model:
            t = pathlib.Path(model["path"]) / "training.json"
            if t.exists():
                j = json.loads(t.read_text())
                epochs = j.get("epochs", [])
                secs = [e.get("seconds") for e in epochs if e.get("seconds") is not None]
                rate = [e.get("samples_per_sec") for e in epochs if e.get("samples_per_sec")]
                if secs:
                    line += f"  epoch s: {', '.join(f'{x:.2f}' for x in secs)}"
                if rate:
                    line += f"  samples/s (last epoch): {rate[-1]:.0f}"
        print(line)
PY
