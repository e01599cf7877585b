"""A small GRU next-item model, trained by your own PyTorch code as a seqpipe
`command` stage (see pipeline.toml beside this file).

seqpipe hands the script its input and output folders as arguments (and as
SEQPIPE_* environment variables). It reads the `sequences` artifact:

    train.parquet  user int64, items list<int64>             oldest first
    valid.parquet  user int64, history list<int64>, target int64
    test.parquet   user int64, history list<int64>, target int64
    meta.json      num_items, num_users, ...

Items are 1..num_items; 0 is padding. It writes a `tensor` output
(model.safetensors + config.json) and a `metrics` output (metrics.json in
the schema of the built-in `evaluate` stage, so `report` compares them).

It saves a checkpoint into --checkpoint-dir after every epoch; a run that
was killed resumes from there (seqpipe keeps that folder until the stage
succeeds). `SEQPIPE_PROGRESS done/total` lines drive seqpipe's progress bar.
"""

import argparse
import json
import math
import os

import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import nn


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the sequences artifact folder")
    p.add_argument("--model-out", required=True)
    p.add_argument("--metrics-out", required=True)
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def left_pad(seqs, max_len):
    """The last `max_len` items of each sequence, padded with 0 on the left."""
    out = torch.zeros(len(seqs), max_len, dtype=torch.long)
    for row, seq in enumerate(seqs):
        seq = seq[-max_len:]
        if seq:
            out[row, max_len - len(seq):] = torch.tensor(seq)
    return out


class Gru(nn.Module):
    def __init__(self, num_items, dim):
        super().__init__()
        self.embed = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def forward(self, batch):
        """Hidden state at every position: (batch, len, dim)."""
        hidden, _ = self.gru(self.embed(batch))
        return hidden

    def logits(self, hidden):
        # Scores tied to the item embeddings; padding never wins.
        scores = hidden @ self.embed.weight.T
        scores[..., 0] = -math.inf
        return scores


def train_epoch(model, optim, seqs, args, generator):
    model.train()
    order = torch.randperm(len(seqs), generator=generator).tolist()
    total = 0.0
    for start in range(0, len(order), args.batch_size):
        batch = left_pad([seqs[i] for i in order[start:start + args.batch_size]], args.max_len + 1)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model.logits(model(inputs))
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=0)
        optim.zero_grad()
        loss.backward()
        optim.step()
        total += loss.item()
    return total


@torch.no_grad()
def evaluate(model, table, args, ks=(5, 10, 20)):
    """Full ranking: every item is a candidate; ties go to the lower index,
    as in seqpipe's `evaluate`."""
    model.eval()
    histories = table.column("history").to_pylist()
    targets = torch.tensor(table.column("target").to_pylist())
    sums = {f"{m}@{k}": 0.0 for m in ("hr", "ndcg", "mrr") for k in ks}
    sums["mrr"] = 0.0
    for start in range(0, len(histories), 256):
        batch = left_pad(histories[start:start + 256], args.max_len)
        scores = model.logits(model(batch)[:, -1, :])
        target = targets[start:start + 256]
        t_score = scores.gather(1, target[:, None])
        index = torch.arange(scores.shape[1])[None, :]
        ahead = (scores > t_score) | ((scores == t_score) & (index < target[:, None]))
        rank = ahead.sum(1) + 1
        for k in ks:
            hit = (rank <= k).float()
            sums[f"hr@{k}"] += hit.sum().item()
            sums[f"ndcg@{k}"] += (hit / torch.log2(rank.float() + 1)).sum().item()
            sums[f"mrr@{k}"] += (hit / rank.float()).sum().item()
        sums["mrr"] += (1.0 / rank.float()).sum().item()
    n = len(histories)
    metrics = {name: value / n for name, value in sums.items()}
    metrics["examples"] = n
    return metrics


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    meta = json.load(open(os.path.join(args.data, "meta.json")))
    train = pq.read_table(os.path.join(args.data, "train.parquet"))
    seqs = [s for s in train.column("items").to_pylist() if len(s) >= 2]

    model = Gru(meta["num_items"], args.dim)
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    first_epoch = 0
    checkpoint = os.path.join(args.checkpoint_dir, "checkpoint.pt")
    if os.path.exists(checkpoint):
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        generator.set_state(state["generator"])
        first_epoch = state["epoch"]
        print(f"resumed after epoch {first_epoch}", flush=True)

    for epoch in range(first_epoch, args.epochs):
        loss = train_epoch(model, optim, seqs, args, generator)
        # Write then rename, so a kill never leaves half a checkpoint.
        torch.save({"model": model.state_dict(), "optim": optim.state_dict(),
                    "generator": generator.get_state(), "epoch": epoch + 1},
                   checkpoint + ".tmp")
        os.replace(checkpoint + ".tmp", checkpoint)
        print(f"epoch {epoch + 1} loss {loss:.4f}", flush=True)
        print(f"SEQPIPE_PROGRESS {epoch + 1}/{args.epochs}", flush=True)

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.model_out, "model.safetensors"))
    with open(os.path.join(args.model_out, "config.json"), "w") as f:
        json.dump({"model": "python_gru", "num_items": meta["num_items"], "dim": args.dim}, f)
    metrics = {"model": "python_gru"}
    for split in ("valid", "test"):
        metrics[split] = evaluate(model, pq.read_table(os.path.join(args.data, f"{split}.parquet")), args)
    with open(os.path.join(args.metrics_out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
