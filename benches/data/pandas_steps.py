"""The data steps of pipelines/bench-data.toml in pandas, written the way
such preprocessing usually is (T-ECD's own code was not at hand to copy):
read the day partitions into one DataFrame, dropna, drop_duplicates, a
group-size filter, factorize to remap, a stable sort, groupby → lists,
leave-one-out slices.

    python pandas_steps.py --data <synth.tecd dataset folder> --out <folder>

Writes train/valid/test/vocab Parquet files with the same columns as
seqpipe's `sequences` stage (stages/src/seqdata.rs) and prints the counts
as one JSON line. benches/data/run.sh times it; summarize.py compares the
outputs with seqpipe's.
"""

import argparse
import glob
import json
import os

import numpy as np
import pandas as pd

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


def load(data):
    frames = [pd.read_parquet(f, columns=COLUMNS) for f in partitions(data)]
    return pd.concat(frames, ignore_index=True)


def clean(df):
    df = df.dropna(subset=REQUIRED)
    # a null read the id columns as float; they are ids again now
    df = df.astype({c: "int64" for c in REQUIRED})
    return df.drop_duplicates(subset=DEDUP, keep="first")


def sequences(df):
    # Users with MIN_LEN+ events; items numbered 1..n by ascending id over
    # the kept users' events.
    df = df[df.groupby("user_id")["user_id"].transform("size") >= MIN_LEN]
    codes, vocab = pd.factorize(df["item_id"], sort=True)
    df = df.assign(item=codes + 1)
    # A stable sort keeps the log order among events at the same time.
    df = df.sort_values(["user_id", "timestamp"], kind="stable")
    seqs = df.groupby("user_id", sort=True)["item"].agg(list)
    users = seqs.index.to_numpy()
    lists = seqs.tolist()
    train = pd.DataFrame({"user": users, "items": [s[:-2] for s in lists]})
    valid = pd.DataFrame(
        {
            "user": users,
            "history": [s[:-2][-MAX_LEN:] for s in lists],
            "target": [s[-2] for s in lists],
        }
    )
    test = pd.DataFrame(
        {
            "user": users,
            "history": [s[:-1][-MAX_LEN:] for s in lists],
            "target": [s[-1] for s in lists],
        }
    )
    vocab = pd.DataFrame(
        {"index": np.arange(1, len(vocab) + 1), "item_id": np.asarray(vocab)}
    )
    return train, valid, test, vocab, len(df)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    df = load(args.data)
    rows_in = len(df)
    df = clean(df)
    rows_clean = len(df)
    train, valid, test, vocab, interactions = sequences(df)
    os.makedirs(args.out, exist_ok=True)
    for name, frame in [("train", train), ("valid", valid), ("test", test), ("vocab", vocab)]:
        frame.to_parquet(os.path.join(args.out, f"{name}.parquet"), index=False)
    print(
        json.dumps(
            {
                "rows_loaded": rows_in,
                "rows_clean": rows_clean,
                "users": len(train),
                "items": len(vocab),
                "interactions": interactions,
                "train": len(train),
                "valid": len(valid),
                "test": len(test),
            }
        )
    )


if __name__ == "__main__":
    main()
