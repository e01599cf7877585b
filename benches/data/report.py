"""Table rows for one benches/data/run.sh run: per tool the wall time, CPU
time, peak RSS, what others took of the machine, and the output counts;
then seqpipe's per-stage times; then whether pandas and polars made the
same sequences as seqpipe (exit 1 when not).

    python report.py benches/data/out/<time>-<events>
"""

import json
import os
import sys

TOOLS = ["seqpipe", "seqpipe_sql", "pandas", "polars"]
LABELS = {"seqpipe_sql": "seqpipe, clean_sql"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count()


def time_v(path):
    """Wall s, CPU s and peak RSS MiB from a `/usr/bin/time -v` file."""
    fields = {}
    for line in open(path):
        key, _, value = line.strip().rpartition(": ")
        fields[key] = value
    h_m_s = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    wall = sum(float(x) * 60**i for i, x in enumerate(reversed(h_m_s)))
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    rss = int(fields["Maximum resident set size (kbytes)"]) / 1024
    return wall, cpu, rss


def others_share(out, tool, wall, cpu):
    """The share of the machine's cores that other processes kept busy."""
    before, after = (int(x) for x in open(f"{out}/{tool}.busy").read().split())
    others = (after - before) / CLK_TCK - cpu
    return max(0.0, others) / (CORES * wall)


def main(out):
    env = dict(line.strip().split("=", 1) for line in open(f"{out}/machine.env"))
    events = int(env["events"])
    summaries = {t: json.load(open(f"{out}/{t}.summary.json")) for t in TOOLS}
    print(
        "| events | tool | wall s | CPU s | peak RSS MiB | others' CPU share | load 1 min "
        "| users | items | train/valid/test | same as seqpipe |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    walls = {}
    for tool in TOOLS:
        wall, cpu, rss = time_v(f"{out}/{tool}.time")
        walls[tool] = (wall, rss)
        load = "→".join(open(f"{out}/{tool}.load").read().split())
        s = summaries[tool]
        same = "—" if tool == "seqpipe" else ("yes" if s == summaries["seqpipe"] else "**no**")
        print(
            f"| {events / 1e6:g}M | {LABELS.get(tool, tool)} | {wall:.1f} | {cpu:.1f} | {rss:.0f} "
            f"| {others_share(out, tool, wall, cpu):.0%} | {load} | {s['users']} "
            f"| {s['items']} | {s['users']}/{s['valid']}/{s['test']} | {same} |"
        )
    print()
    for run in ("seqpipe", "seqpipe_sql"):
        show = json.load(open(f"{out}/{run}.show.json"))
        stages = ", ".join(
            f"{s['name']} {s['seconds']:.1f} s"
            for s in show["stages"]
            if s["outcome"] == "ran"
        )
        print(f"{LABELS.get(run, run)} per stage: {stages}; run {show['seconds']:.1f} s.")
    for run in ("seqpipe", "seqpipe_sql"):
        sp_wall, sp_rss = walls[run]
        for tool in ("pandas", "polars"):
            wall, rss = walls[tool]
            print(
                f"{tool}: {wall / sp_wall:.2f}× the wall time of {LABELS.get(run, run)}, "
                f"{rss / sp_rss:.2f}× its peak RSS."
            )
    rev = json.load(open(f"{out}/seqpipe.show.json"))["seqpipe"]["git_revision"]
    print(f"seqpipe binary built from {rev}; tree at {env['commit']}; {env['python']}.")
    s = summaries["seqpipe"]
    print(
        f"seqpipe output: {s['users']} users, {s['items']} items, "
        f"{s['interactions']} interactions, digest {s['digest']}."
    )
    differ = [t for t in TOOLS if summaries[t] != summaries["seqpipe"]]
    if differ:
        for t in differ:
            print(f"**{t} differs**: {json.dumps(summaries[t], sort_keys=True)}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
