"""Turns one benches/throughput/run.sh output folder into the Markdown
tables of RESULTS.md (printed to stdout).

    .venv/bin/python benches/throughput/report.py benches/throughput/out/<time>
"""

import glob
import json
import os
import re
import statistics
import sys
from datetime import datetime

import pyarrow.parquet as pq

CLK_TCK = os.sysconf("SC_CLK_TCK")
# A run during which other processes took more than this share of the CPUs
# is flagged as run under load.
LOAD_FLAG = 0.10
# seqpipe -v's epoch line: "<time>Z ... epoch 3 loss 6.7312 lr ... (22.7s + 0.0s, 42 seq/s)".
EPOCH_LINE = re.compile(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z.*?epoch (\d+) loss ([\d.]+).*"
                        r"\(([\d.]+)s \+ ([\d.]+)s, (\d+) seq/s\)")


def read(path):
    with open(path) as f:
        return f.read()


def machine(out):
    facts = dict(line.split("=", 1) for line in read(f"{out}/machine.env").splitlines())
    facts["uptime_before"] = read(f"{out}/uptime.before").strip()
    after = f"{out}/uptime.after"
    facts["uptime_after"] = read(after).strip() if os.path.exists(after) else "(run unfinished)"
    return facts


def load_avg(line):
    """The 1-minute load average of an `uptime` line."""
    return float(line.split("load average:")[1].split(",")[0])


def resources(out, name):
    """Wall seconds, the share of all CPUs other processes used meanwhile,
    and the 1-minute load averages before and after."""
    wall, user, system = map(float, read(f"{out}/{name}.time").split()[-3:])
    busy = [int(x) for x in read(f"{out}/{name}.busy").split()]
    cores = os.cpu_count()
    others = max(0.0, (busy[1] - busy[0]) / CLK_TCK - user - system) / max(wall * cores, 1e-9)
    up = read(f"{out}/{name}.uptime").splitlines()
    return {"wall": wall, "others": others, "load": (load_avg(up[0]), load_avg(up[-1]))}


def stage(show, name):
    return next(s for s in json.load(open(show))["stages"] if s["name"] == name)


def artifact(show, name, port):
    return stage(show, name)["artifacts"][port]["path"]


def train_sequences(out):
    path = artifact(f"{out}/data.show.json", "sequences", "data")
    items = pq.read_table(f"{path}/train.parquet").column("items").to_pylist()
    return sum(1 for s in items if len(s) >= 2)


def cpu_at(samples, t):
    """The worker's CPU seconds at unix time `t`, interpolated."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
    return samples[0][1] if t < samples[0][0] else samples[-1][1]


def epoch_cpu(out, name, lines):
    """Each epoch's CPU seconds in the worker: its CPU time between the
    epoch's start (the log line's time minus the epoch's and the
    validation's seconds; the line comes after the checkpoint is written,
    a few milliseconds) and its end."""
    path = f"{out}/{name}.cpu"
    if not os.path.exists(path):
        return None
    samples = [(float(t), int(c) / CLK_TCK)
               for t, c in (line.split() for line in read(path).splitlines())]
    if len(samples) < 2:
        return None
    cpu = []
    for m in lines:
        end = datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
        start = end - float(m.group(4)) - float(m.group(5))
        cpu.append(cpu_at(samples, end) - cpu_at(samples, start))
    return cpu


# Row labels of the run names.
FRAMEWORKS = {"seqpipe": "seqpipe", "seqpipemalloc": "seqpipe, malloc tuned",
              "pytorch": "pytorch"}


def seqpipe_run(out, model, rep, sequences, variant):
    name = f"{variant}_{model}_{rep}"
    train = stage(f"{out}/{name}.show.json", f"train_{model}")
    lines = list(EPOCH_LINE.finditer(read(f"{out}/{name}.log")))
    seconds = [float(m.group(4)) for m in lines]
    curve = json.load(open(os.path.join(train["artifacts"]["model"]["path"], "training.json")))
    metrics = json.load(open(os.path.join(
        artifact(f"{out}/{name}.eval.json", f"eval_{model}", "metrics"), "metrics.json")))
    return {
        "framework": FRAMEWORKS[variant],
        # The manifest's total is exact; the log's per-epoch seconds are rounded.
        "train_seconds": float(train["notes"]["train_seconds"]),
        "epoch_seconds": seconds,
        "epoch_cpu": epoch_cpu(out, name, lines),
        "threads": train["notes"].get("torch_threads", "?"),
        "loss": curve["epochs"][-1]["train_loss"],
        "hr": metrics["test"]["hr@10"],
        "ndcg": metrics["test"]["ndcg@10"],
        "sequences": sequences,
        "revision": json.load(open(f"{out}/{name}.show.json"))["seqpipe"]["git_revision"],
        **resources(out, name),
    }


def pytorch_run(out, model, rep):
    name = f"pytorch_{model}_{rep}"
    r = json.load(open(f"{out}/{name}.json"))
    seconds = [e["seconds"] for e in r["epochs"]]
    return {
        "framework": "pytorch",
        "train_seconds": sum(seconds),
        "epoch_seconds": seconds,
        "epoch_cpu": [e["cpu_seconds"] for e in r["epochs"]] if "cpu_seconds" in r["epochs"][0]
        else None,
        "threads": r["threads"],
        "loss": r["epochs"][-1]["train_loss"],
        "hr": r["test"]["hr@10"],
        "ndcg": r["test"]["ndcg@10"],
        "sequences": r["sequences"],
        **resources(out, name),
    }


def flag(r):
    return " ⚠" if r["others"] > LOAD_FLAG else ""


def training_tables(out, lines):
    sequences = train_sequences(out)
    runs = {}
    for path in sorted(glob.glob(f"{out}/*_*_*.time")):
        m = re.match(r"(seqpipe|seqpipemalloc|pytorch)_(\w+?)_(\d+)\.time$",
                     os.path.basename(path))
        if not m:
            continue
        fw, model, rep = m.groups()
        if fw == "pytorch":
            r = pytorch_run(out, model, rep)
        else:
            r = seqpipe_run(out, model, rep, sequences, fw)
        r.update(model=model, rep=int(rep), epochs=len(r["epoch_seconds"]))
        runs.setdefault(model, []).append(r)
    lines += [
        "| model | framework | run | epochs | threads | seq/s | s/epoch | fastest epoch s "
        "| CPU s/epoch | final train loss | test HR@10 | test NDCG@10 | others' CPU "
        "| load avg start → end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rs in runs.items():
        order = list(FRAMEWORKS.values())
        for r in sorted(rs, key=lambda r: (r["rep"], order.index(r["framework"]))):
            per_epoch = mean_epoch(r)
            lines.append(
                f"| {model} | {r['framework']} | {r['rep']} | {r['epochs']} | {r['threads']} "
                f"| {r['sequences'] / per_epoch:.1f} | {per_epoch:.2f} | {fastest_epoch(r):.2f} "
                f"| {fmt(cpu_epoch(r))} | {r['loss']:.4f} | {r['hr']:.4f} | {r['ndcg']:.4f} "
                f"| {100 * r['others']:.0f} %{flag(r)} | {r['load'][0]:.2f} → {r['load'][1]:.2f} |")
    lines += ["", "seqpipe ÷ PyTorch throughput (PyTorch's median epoch time over "
              "seqpipe's, over repeats; > 1: seqpipe faster; target ≥ 1.3):", "",
              "| model | seqpipe run | by mean epoch | by fastest epoch | by CPU s/epoch |",
              "|---|---|---|---|---|"]
    for model, rs in runs.items():
        for fw in FRAMEWORKS.values():
            if fw == "pytorch" or not any(r["framework"] == fw for r in rs):
                continue
            cells = [ratio(rs, key, fw) for key in (mean_epoch, fastest_epoch, cpu_epoch)]
            lines.append(f"| {model} | {fw} | " + " | ".join(cells) + " |")
    return runs


def mean_epoch(r):
    return r["train_seconds"] / r["epochs"]


def fastest_epoch(r):
    return min(r["epoch_seconds"])


def cpu_epoch(r):
    """Mean CPU seconds per epoch (all threads), or None when not recorded."""
    return statistics.mean(r["epoch_cpu"]) if r.get("epoch_cpu") else None


def fmt(x):
    return "–" if x is None else f"{x:.2f}"


def ratio(rs, key, framework):
    """PyTorch's median of `key` over `framework`'s, as "1.05×"."""
    med = {}
    for fw in (framework, "pytorch"):
        vals = [key(r) for r in rs if r["framework"] == fw]
        med[fw] = statistics.median(vals) if vals and None not in vals else None
    if None in med.values():
        return "–"
    return f"{med['pytorch'] / med[framework]:.2f}×"


def eval_tables(out, lines):
    rows = {}
    for name in ("eval_test", "eval_both", "eval_default"):
        show = f"{out}/{name}.show.json"
        if not os.path.exists(show):
            continue
        st = stage(show, name)
        metrics = json.load(open(os.path.join(st["artifacts"]["metrics"]["path"], "metrics.json")))
        examples = sum(metrics[s]["examples"] for s in ("valid", "test") if s in metrics)
        scored = examples * metrics["num_items"]
        rows[name] = {"examples": examples, "items": metrics["num_items"], "rows": scored,
                      "seconds": st["seconds"], **resources(out, name)}
    if not rows:
        return
    lines += ["| stage | examples | catalogue items | rows scored | stage s | rows/s | others' CPU |",
              "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['examples']} | {r['items']} | {r['rows']:,} | {r['seconds']:.2f} "
                     f"| {r['rows'] / r['seconds']:,.0f} | {100 * r['others']:.0f} %{flag(r)} |")
    lines += ["", "rows = examples × catalogue items, each scored and ranked (HR/NDCG/MRR/"
              "precision@5/10/20, coverage, popularity, breakdowns); stage s is the whole stage "
              "as the run manifest records it: worker start, LibTorch loading, reading the data "
              "and the model, scoring, metrics, bootstrap (eval_default only) and writing "
              "ranks.parquet. Target: ≥ 1,000,000 rows/s on CPU."]


def main():
    out = sys.argv[1].rstrip("/")
    f = machine(out)
    lines = [
        f"# Throughput benchmark results ({f['date']})",
        "",
        f"- commit {f['commit']}; {f['cores']} cores ({f['cpu']}), kernel {f['kernel']}, "
        f"torch {f['torch']}",
        f"- `uptime` before: `{f['uptime_before']}`",
        f"- `uptime` after: `{f['uptime_after']}`",
        f"- raw logs: `{os.path.relpath(out)}`",
        "",
        "## Training (ML-100K, 5-core: 943 sequences, 1349 items; "
        "benches/throughput/bench.toml)",
        "",
    ]
    runs = training_tables(out, lines)
    revisions = {r["revision"] for rs in runs.values() for r in rs if "revision" in r}
    lines += ["", f"seqpipe binary built from {', '.join(sorted(revisions))}. "
              "seq/s = training sequences ÷ mean epoch seconds (training only: no validation, "
              "no checkpoint writing, no start-up). CPU s/epoch: user + system seconds of all "
              "the process's threads during the epochs (seqpipe: its worker, sampled every "
              "0.2 s); less sensitive to other processes than wall time, but it counts "
              "OpenMP threads spinning at barriers as work. \"others' CPU\": share of all "
              f"cores used by other processes during the run (⚠ above {100 * LOAD_FLAG:.0f} %).",
              "",
              "## Evaluation scoring rate (synthetic, benches/throughput/eval.toml)", ""]
    eval_tables(out, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
