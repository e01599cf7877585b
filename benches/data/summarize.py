"""Counts and a content digest of a sequences folder (train/valid/test/vocab
Parquet, as seqpipe's `sequences` stage and pandas_steps.py /
polars_steps.py write it), so run.sh can check the three tools made the
same thing — not only the same numbers of users and examples, but the same
items in the same order (the digest covers every value, not the bytes of
the files, which differ by writer).

    python summarize.py FOLDER            # one JSON line
"""

import hashlib
import json
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def ints(array):
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)


def lists(column):
    """Flattened values and lengths of a list<int64> column."""
    column = column.combine_chunks()
    return ints(pc.list_flatten(column)), ints(pc.list_value_length(column))


def summarize(folder):
    digest = hashlib.blake2b(digest_size=16)
    out = {}

    def add(name, values):
        digest.update(name.encode())
        digest.update(values.tobytes())

    train = pq.read_table(f"{folder}/train.parquet")
    flat, lengths = lists(train["items"])
    out["users"] = train.num_rows
    out["train_items"] = int(lengths.sum())
    add("train.user", ints(train["user"]))
    add("train.items", flat)
    add("train.len", lengths)
    for split in ("valid", "test"):
        t = pq.read_table(f"{folder}/{split}.parquet")
        flat, lengths = lists(t["history"])
        out[split] = t.num_rows
        out[f"{split}_history_items"] = int(lengths.sum())
        add(f"{split}.user", ints(t["user"]))
        add(f"{split}.history", flat)
        add(f"{split}.len", lengths)
        add(f"{split}.target", ints(t["target"]))
    vocab = pq.read_table(f"{folder}/vocab.parquet")
    out["items"] = vocab.num_rows
    add("vocab.index", ints(vocab["index"]))
    add("vocab.item_id", ints(vocab["item_id"]))
    out["interactions"] = out["train_items"] + out["valid"] + out["test"]
    out["digest"] = digest.hexdigest()
    return out


if __name__ == "__main__":
    print(json.dumps(summarize(sys.argv[1]), sort_keys=True))
