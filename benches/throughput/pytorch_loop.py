"""Plain PyTorch training of SASRec or GRU4Rec, as seqpipe's `train` stage
trains them, for benches/throughput/run.sh to compare epoch times with.

What is the same as seqpipe (stages/torch/src/models/{sasrec,gru4rec,
layers,trainer,optim}.rs):

- data: the `sequences` artifact's train.parquet; every sequence with at
  least two items contributes its last `max_len + 1` items (a "window"):
  inputs are all but the last, targets all but the first;
- batches: `batch_size` windows in a random order per epoch, padded to the
  longest window of the batch (not to `max_len`); SASRec reads LEFT-padded
  rows, the GRU RIGHT-padded ones (seqpipe rotates left-padded rows to the
  right before its GRU: the same arithmetic);
- loss: full-softmax cross-entropy over all items at every real input
  position (mean over positions), hidden states gathered at those positions
  before the item logits, so no logits are computed for padding;
- models: SASRec with pre-LN blocks (attention via
  F.scaled_dot_product_attention with a causal-and-key-is-real mask, GELU
  feed-forward), learnable positions anchored at the end of the row,
  embeddings N(0, 0.02) scaled by sqrt(dim), item table tied to the output;
  GRU4Rec with an N(0, 1) item table, nn.GRU, dropout on the embeddings and
  on the GRU output, scores tied to the item table when hidden == dim;
- optimiser: AdamW (betas 0.9/0.98, eps 1e-8, decoupled decay on matrices
  only) after global gradient-norm clipping;
- evaluation: full ranking of the test target among all items, ties to the
  lower item index, seen items kept (as `evaluate` with its defaults).

What differs: the batch order and the random draws (torch.randperm and
torch's generator instead of seqpipe's ChaCha streams), so losses and
metrics agree statistically, not bit for bit.

Prints one line per epoch and, with --json-out, writes the per-epoch
seconds (wall, and CPU of all threads), losses and the test metrics as JSON.
"""

import argparse
import json
import math
import os
import time

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn


# The `train` params this loop implements (each the flag of the same name,
# `_` as `-`); any other param in the spec must be at seqpipe's default.
SPEC_PARAMS = ["model", "dim", "layers", "heads", "ffn_dim", "hidden", "dropout", "max_len",
               "epochs", "batch_size", "lr", "weight_decay", "clip_norm"]
# Params that only change validation, which this loop does not do.
IGNORED = {"valid_every"}
# Params whose non-default values this loop does not implement.
UNSUPPORTED_DEFAULTS = {"pre_norm": True, "schedule": "constant", "early_stopping": 0}


def spec_defaults(spec, stage):
    """Flag defaults from `[stages.<stage>]` of a seqpipe spec (and its
    pipeline seed), so that the loop trains with exactly the stage's params."""
    import tomllib

    with open(spec, "rb") as f:
        doc = tomllib.load(f)
    try:
        params = doc["stages"][stage].get("params", {})
    except KeyError:
        raise SystemExit(f"{spec}: no stage `{stage}`")
    out = {"seed": doc.get("pipeline", {}).get("seed", 0)}
    for key, value in params.items():
        if key in SPEC_PARAMS:
            out[key] = value
        elif key in UNSUPPORTED_DEFAULTS and value != UNSUPPORTED_DEFAULTS[key]:
            raise SystemExit(f"{spec}: {stage}.{key} = {value!r} is not implemented here")
        elif key not in IGNORED and key not in UNSUPPORTED_DEFAULTS:
            raise SystemExit(f"{spec}: {stage}.{key} is not implemented here")
    return out


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", help="take the defaults of every flag below from this seqpipe spec")
    p.add_argument("--stage", help="... from this `train` stage of --spec")
    p.add_argument("--model", choices=["sasrec", "gru4rec"])
    p.add_argument("--data", required=True, help="the sequences artifact folder")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--ffn-dim", type=int, default=0, help="0 = dim")
    p.add_argument("--hidden", type=int, default=0, help="GRU size, 0 = dim")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.98)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default")
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--json-out", help="write the results here as JSON")
    first, _ = p.parse_known_args()
    if first.spec:
        if not first.stage:
            p.error("--spec needs --stage")
        p.set_defaults(**spec_defaults(first.spec, first.stage))
    args = p.parse_args()
    if args.model not in ("sasrec", "gru4rec"):
        p.error(f"--model must be sasrec or gru4rec, not {args.model!r}")
    return args


class AttentionBlock(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.heads, self.dropout = heads, dropout

    def forward(self, x, mask):
        b, l, d = x.shape
        h = self.norm(x)

        def split(t):
            return t.view(b, l, self.heads, d // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(
            split(self.q(h)), split(self.k(h)), split(self.v(h)), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        ctx = ctx.transpose(1, 2).reshape(b, l, d)
        return x + F.dropout(self.out(ctx), self.dropout, self.training)


class FeedForwardBlock(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x):
        h = F.dropout(F.gelu(self.fc1(self.norm(x))), self.dropout, self.training)
        return x + F.dropout(self.fc2(h), self.dropout, self.training)


class SasRec(nn.Module):
    """Reads LEFT-padded rows [B, L]; returns hidden states [B, L, D]."""

    left_padded = True

    def __init__(self, num_items, a):
        super().__init__()
        self.dim, self.max_len, self.dropout = a.dim, a.max_len, a.dropout
        self.item_emb = nn.Parameter(torch.randn(num_items + 1, a.dim) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(a.max_len, a.dim) * 0.02)
        ffn = a.ffn_dim or a.dim
        self.attn = nn.ModuleList(AttentionBlock(a.dim, a.heads, a.dropout) for _ in range(a.layers))
        self.ffn = nn.ModuleList(FeedForwardBlock(a.dim, ffn, a.dropout) for _ in range(a.layers))
        self.last_norm = nn.LayerNorm(a.dim)

    def forward(self, seqs):
        l = seqs.shape[1]
        valid = seqs > 0
        keep = valid.unsqueeze(-1).to(self.item_emb.dtype)
        x = F.embedding(seqs, self.item_emb, padding_idx=0) * math.sqrt(self.dim)
        x = F.dropout(x + self.pos_emb[self.max_len - l:], self.dropout, self.training) * keep
        # Causal and key-is-real; the diagonal keeps padded query rows from
        # being fully masked (they are zeroed by `keep`).
        causal = torch.ones(l, l, dtype=torch.bool).tril()
        mask = (causal & valid[:, None, None, :]) | torch.eye(l, dtype=torch.bool)
        for attn, ffn in zip(self.attn, self.ffn):
            x = attn(x, mask) * keep
            x = ffn(x) * keep
        return self.last_norm(x) * keep

    def logits(self, hidden):
        """Scores of items 1..N (column k = item k + 1)."""
        return hidden @ self.item_emb[1:].T


class Gru4Rec(nn.Module):
    """Reads RIGHT-padded rows [B, L]; returns hidden states [B, L, H]."""

    left_padded = False

    def __init__(self, num_items, a):
        super().__init__()
        hidden = a.hidden or a.dim
        self.dropout = a.dropout
        self.item_emb = nn.Parameter(torch.randn(num_items + 1, a.dim))
        self.gru = nn.GRU(a.dim, hidden, a.layers, batch_first=True,
                          dropout=a.dropout if a.layers > 1 else 0.0)
        self.out = nn.Linear(hidden, num_items) if hidden != a.dim else None

    def forward(self, seqs):
        x = F.dropout(F.embedding(seqs, self.item_emb, padding_idx=0), self.dropout, self.training)
        h, _ = self.gru(x)
        return F.dropout(h, self.dropout, self.training)

    def logits(self, hidden):
        if self.out is not None:
            return self.out(hidden)
        return hidden @ self.item_emb[1:].T


def padded(seqs, width, left):
    """Rows of the last `width` items of each sequence, padded with 0."""
    out = torch.zeros(len(seqs), width, dtype=torch.long)
    lengths = torch.zeros(len(seqs), dtype=torch.long)
    for r, s in enumerate(seqs):
        s = s[-width:]
        if s:
            if left:
                out[r, width - len(s):] = torch.tensor(s)
            else:
                out[r, :len(s)] = torch.tensor(s)
        lengths[r] = len(s)
    return out, lengths


def train_epoch(model, opt, params, windows, lengths, a, generator):
    """One pass in a random order; returns the mean loss per position."""
    model.train()
    order = torch.randperm(len(windows), generator=generator)
    loss_sum, positions = 0.0, 0
    for start in range(0, len(order), a.batch_size):
        idx = order[start:start + a.batch_size]
        width = int(lengths[idx].max())
        rows = windows[idx]
        rows = rows[:, rows.shape[1] - width:] if model.left_padded else rows[:, :width]
        inputs, targets = rows[:, :-1], rows[:, 1:]
        real = (inputs > 0) & (targets > 0)
        hidden = model(inputs)[real]  # [T, D]: real positions only
        loss = F.cross_entropy(model.logits(hidden), targets[real] - 1)
        opt.zero_grad()
        loss.backward()
        if a.clip_norm > 0:
            nn.utils.clip_grad_norm_(params, a.clip_norm)
        opt.step()
        count = int(real.sum())
        loss_sum += loss.item() * count
        positions += count
    return loss_sum / positions


@torch.no_grad()
def test_metrics(model, table, a):
    """Full-ranking HR@10 / NDCG@10 on `table` (history → target)."""
    model.eval()
    histories = table.column("history").to_pylist()
    targets = torch.tensor(table.column("target").to_pylist())
    hr = ndcg = 0.0
    for start in range(0, len(histories), a.eval_batch_size):
        chunk = histories[start:start + a.eval_batch_size]
        width = max(1, max(min(len(h), a.max_len) for h in chunk))
        rows, lengths = padded(chunk, width, model.left_padded)
        hidden = model(rows)
        last = hidden[:, -1] if model.left_padded else hidden[torch.arange(len(chunk)), lengths - 1]
        logits = model.logits(last)  # [B, N]; column 0 below is padding
        scores = torch.cat([torch.full((len(chunk), 1), -math.inf), logits], 1)
        target = targets[start:start + a.eval_batch_size]
        t = scores.gather(1, target[:, None])
        index = torch.arange(scores.shape[1])[None, :]
        rank = ((scores > t) | ((scores == t) & (index < target[:, None]))).sum(1) + 1
        hit = (rank <= 10).double()
        hr += float(hit.sum())
        ndcg += float((hit / torch.log2(rank.double() + 1)).sum())
    return {"hr@10": hr / len(histories), "ndcg@10": ndcg / len(histories),
            "examples": len(histories)}


def main():
    a = parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    meta = json.load(open(os.path.join(a.data, "meta.json")))
    num_items = meta["num_items"]
    seqs = [s for s in pq.read_table(os.path.join(a.data, "train.parquet")).column("items").to_pylist()
            if len(s) >= 2]
    model = (SasRec if a.model == "sasrec" else Gru4Rec)(num_items, a)
    windows, lengths = padded(seqs, a.max_len + 1, model.left_padded)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": a.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    generator = torch.Generator().manual_seed(a.seed)
    epochs = []
    for epoch in range(a.epochs):
        start, cpu = time.perf_counter(), time.process_time()
        loss = train_epoch(model, opt, params, windows, lengths, a, generator)
        seconds = time.perf_counter() - start
        epochs.append({"epoch": epoch + 1, "train_loss": loss, "seconds": seconds,
                       "cpu_seconds": time.process_time() - cpu,
                       "samples_per_sec": len(seqs) / seconds})
        print(f"{a.model}: epoch {epoch + 1} loss {loss:.4f} ({seconds:.1f}s, "
              f"{len(seqs) / seconds:.0f} seq/s)", flush=True)
    start = time.perf_counter()
    test = test_metrics(model, pq.read_table(os.path.join(a.data, "test.parquet")), a)
    eval_seconds = time.perf_counter() - start
    print(f"{a.model}: test hr@10 {test['hr@10']:.4f} ndcg@10 {test['ndcg@10']:.4f} "
          f"({eval_seconds:.2f}s)", flush=True)
    result = {"model": a.model, "framework": "pytorch", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "sequences": len(seqs),
              "num_items": num_items, "epochs": epochs, "test": test,
              "eval_seconds": eval_seconds, "args": vars(a)}
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
