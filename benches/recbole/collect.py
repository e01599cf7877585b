"""Side-by-side table of seqpipe's and RecBole's test metrics.

    collect.py SHOW_JSON RECBOLE_RESULTS_DIR [--out table.md]

SHOW_JSON is `seqpipe show benches/recbole/ml100k_bench.toml --json`; each
`eval_*` stage's metrics.json holds per split `hr@10`, `ndcg@10`, `mrr@10`.
RECBOLE_RESULTS_DIR holds recbole_bench.py's MODEL.json files.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# (row label, seqpipe evaluate stage or None, RecBole model or None).
# `*_ranked` stages leave the items a user rated among the candidates, as
# RecBole does for its sequential models; the others (ml100k.toml's own
# evaluations) exclude them, as RecBole does for Pop and ItemKNN.
ROWS = [
    ("Pop, history items ranked", "eval_pop_ranked", None),
    ("Pop, history items excluded", "eval_pop", "Pop"),
    ("Pop, history items excluded (RecBole: batch 1, exact counts)", None, "Pop_batch1"),
    ("Markov (order 1), history items ranked", "eval_markov_ranked", None),
    ("Markov (order 1), history items excluded", "eval_markov", None),
    ("ItemKNN, history items ranked", "eval_itemknn_ranked", None),
    ("ItemKNN, history items excluded", "eval_itemknn", "ItemKNN"),
    ("SASRec (CE), history items ranked", "eval_sasrec_ranked", "SASRec"),
    ("SASRec (CE), history items excluded (seqpipe only)", "eval_sasrec", None),
    ("SASRec (CE) with RecBole's settings, history items ranked", "eval_sasrec_recbole_ranked", "SASRec"),
    ("SASRec (CE) with RecBole's settings, history items excluded (seqpipe only)", "eval_sasrec_recbole", None),
    ("GRU4Rec (CE), history items ranked", "eval_gru4rec_ranked", "GRU4Rec"),
    ("GRU4Rec (CE), history items excluded (seqpipe only)", "eval_gru4rec", None),
    ("Caser, history items ranked", "eval_caser_ranked", "Caser"),
    ("Caser, history items excluded (seqpipe only)", "eval_caser", None),
    ("BERT4Rec, history items ranked", "eval_bert4rec_ranked", "BERT4Rec"),
    ("BERT4Rec, history items excluded (seqpipe only)", "eval_bert4rec", None),
    ("GSRec, history items ranked (seqpipe only)", "eval_gsrec_ranked", None),
    ("GSRec, history items excluded (seqpipe only)", "eval_gsrec", None),
]
METRICS = [("hr@10", "hit@10"), ("ndcg@10", "ndcg@10"), ("mrr@10", "mrr@10")]


def seqpipe_metrics(show):
    out = {}
    for stage in show["stages"]:
        artifact = stage.get("artifacts", {}).get("metrics")
        if not stage["name"].startswith("eval_") or not artifact:
            continue
        # show prints cache paths relative to where it ran: the project root
        folder = Path(artifact["path"])
        if not folder.is_absolute():
            folder = ROOT / folder
        metrics = json.loads((folder / "metrics.json").read_text())
        out[stage["name"]] = metrics
    return out


def fmt(value):
    return "—" if value is None else f"{value:.4f}"


def table(sp, rb):
    head = ("| model | seqpipe HR@10 | seqpipe NDCG@10 | seqpipe MRR@10 "
            "| RecBole HR@10 | RecBole NDCG@10 | RecBole MRR@10 | RecBole epochs trained (best validated) |")
    lines = [head, "|" + "---|" * 8]
    for label, stage, model in ROWS:
        s = sp.get(stage, {}).get("test", {}) if stage else {}
        r = rb.get(model, {}) if model else {}
        cells = [fmt(s.get(a)) if stage else "—" for a, _ in METRICS]
        cells += [fmt(r.get("test", {}).get(b)) if r else "—" for _, b in METRICS]
        epochs = "—"
        if r:
            done = r.get("train_steps_run", 0) / max(r.get("train_steps_per_epoch", 1), 1)
            # Pop and ItemKNN "train" in one pass; the neural models report
            # epochs run (fractional when a time budget cut one short).
            epochs = f"{done:.2f} ({r['best_epoch']})" if r.get("best_epoch") is not None else "1"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("show")
    parser.add_argument("recbole")
    parser.add_argument("--out")
    args = parser.parse_args()
    sp = seqpipe_metrics(json.loads(Path(args.show).read_text()))
    rb = {p.stem: json.loads(p.read_text()) for p in Path(args.recbole).glob("*.json")}
    text = table(sp, rb)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
