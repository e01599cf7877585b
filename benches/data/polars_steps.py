"""The data steps of pipelines/bench-data.toml in polars, lazy and
idiomatic: scan the day partitions, drop_nulls, unique, a window count for
the user filter, a dense rank for the item remapping, then group_by/agg
into lists and list slices for leave-one-out.

    python polars_steps.py --data <synth.tecd dataset folder> --out <folder>

Writes train/valid/test/vocab Parquet files with the same columns as
seqpipe's `sequences` stage (stages/src/seqdata.rs) and prints the counts
as one JSON line. benches/data/run.sh times it; summarize.py compares the
outputs with seqpipe's.
"""

import argparse
import glob
import json
import os

import polars as pl

COLUMNS = ["user_id", "item_id", "timestamp", "event_type"]
REQUIRED = ["user_id", "item_id", "timestamp"]
DEDUP = ["user_id", "item_id", "timestamp", "event_type"]
MIN_LEN = 5
MAX_LEN = 50


def partitions(data):
    # Retail and marketplace days, sorted by relative path: the order
    # seqpipe's load.parquet reads them in, so "first" means the same row.
    files = []
    for domain in ("retail", "marketplace"):
        files += glob.glob(os.path.join(data, "events", domain, "*.parquet"))
    return sorted(files, key=lambda f: os.path.relpath(f, data))


def events(data):
    """The cleaned events of users with MIN_LEN+ events, items remapped."""
    return (
        pl.scan_parquet(partitions(data))
        .select(COLUMNS)
        .drop_nulls(REQUIRED)
        .unique(subset=DEDUP, keep="first", maintain_order=True)
        .filter(pl.len().over("user_id") >= MIN_LEN)
        # ascending item ids → 1..n
        .with_columns(item=pl.col("item_id").rank("dense").cast(pl.Int64))
    )


def sequences(ev):
    # maintain_order: events at the same time keep the log order
    seqs = (
        ev.sort(["user_id", "timestamp"], maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item"))
        .rename({"user_id": "user"})
    )
    s = pl.col("item")
    train = seqs.select("user", items=s.list.head(s.list.len() - 2))
    valid = seqs.select(
        "user",
        history=s.list.head(s.list.len() - 2).list.tail(MAX_LEN),
        target=s.list.get(-2),
    )
    test = seqs.select(
        "user",
        history=s.list.head(s.list.len() - 1).list.tail(MAX_LEN),
        target=s.list.get(-1),
    )
    return train, valid, test


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # Collected once: the vocabulary and the sequences both start here
    # (as two lazy plans, polars would scan and deduplicate twice).
    ev = events(args.data).collect()
    vocab = ev.select("item", "item_id").unique().sort("item").rename({"item": "index"})
    seqs = sequences(ev.lazy().select("user_id", "timestamp", "item"))
    frames = [*pl.collect_all(seqs), vocab]
    os.makedirs(args.out, exist_ok=True)
    for name, frame in zip(["train", "valid", "test", "vocab"], frames):
        frame.write_parquet(os.path.join(args.out, f"{name}.parquet"))
    train, valid, test, vocab = frames
    print(
        json.dumps(
            {
                "users": train.height,
                "items": vocab.height,
                "interactions": int(train["items"].list.len().sum()) + 2 * train.height,
                "train": train.height,
                "valid": valid.height,
                "test": test.height,
            }
        )
    )


if __name__ == "__main__":
    main()
