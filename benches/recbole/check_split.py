"""Checks that RecBole's split equals seqpipe's `sequences` artifact.

    check_split.py SEQUENCES_DIR RECBOLE_SPLIT_JSON [--report FILE]

SEQUENCES_DIR is seqpipe's `sequences.data` folder (train/valid/test/vocab
Parquet + meta.json, see stages/src/seqdata.rs); the JSON comes from
`recbole_bench.py split`. Compares, in original ids: the numbers of users,
items and interactions, and per user the training sequence (order
included), the valid target, the test target and the test history (the
last 200 items, seqpipe's max_len). Exits 1 on any difference, printing
the first few.
"""

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def load_seqpipe(folder):
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    vocab = pq.read_table(folder / "vocab.parquet").to_pydict()
    item = dict(zip(vocab["index"], vocab["item_id"]))
    users = {}
    train = pq.read_table(folder / "train.parquet").to_pydict()
    for u, items in zip(train["user"], train["items"]):
        users[u] = {"train": [item[i] for i in items]}
    for split in ("valid", "test"):
        t = pq.read_table(folder / f"{split}.parquet").to_pydict()
        for u, hist, target in zip(t["user"], t["history"], t["target"]):
            users[u][split] = item[target]
            users[u][split + "_history"] = [item[i] for i in hist]
    return meta, users


def compare(meta, sp, rb):
    problems = []
    counts = {
        "users": (meta["num_users"], rb["users"]),
        "items": (meta["num_items"], rb["items"]),
        "interactions": (meta["interactions"], rb["interactions"]),
    }
    for name, (a, b) in counts.items():
        if a != b:
            problems.append(f"{name}: seqpipe {a}, recbole {b}")
    rb_users = {int(u): row for u, row in rb["per_user"].items()}
    if set(sp) != set(rb_users):
        problems.append(f"user sets differ: {len(set(sp) ^ set(rb_users))} users in one only")
    diffs = {k: 0 for k in ("train", "valid", "test", "test_history", "valid_history")}
    for u in sorted(set(sp) & set(rb_users)):
        for key in diffs:
            if sp[u][key] != rb_users[u][key]:
                diffs[key] += 1
                if diffs[key] <= 3:
                    problems.append(f"user {u} {key}: seqpipe {sp[u][key][:8] if isinstance(sp[u][key], list) else sp[u][key]}"
                                    f" recbole {rb_users[u][key][:8] if isinstance(rb_users[u][key], list) else rb_users[u][key]}")
    return counts, diffs, problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sequences")
    parser.add_argument("recbole")
    parser.add_argument("--report")
    args = parser.parse_args()
    meta, sp = load_seqpipe(args.sequences)
    rb = json.loads(Path(args.recbole).read_text())
    counts, diffs, problems = compare(meta, sp, rb)
    summary = {
        "counts": {k: {"seqpipe": a, "recbole": b} for k, (a, b) in counts.items()},
        "users_differing": diffs,
        "equal": not problems,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    for p in problems[:20]:
        print("  " + p)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
