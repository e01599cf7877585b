"""RecBole side of the ML-100K comparison (benches/recbole/README.md).

    recbole_bench.py split --out work/recbole_split.json [--stock-time]
    recbole_bench.py train MODEL --out work/results/MODEL.json [--set key=value ...]
    recbole_bench.py test CHECKPOINT --log STDERR --out work/results/NAME.json

`split` builds RecBole's 5-core leave-one-out split and writes, per user
(original ids), the training sequence and the valid and test targets, so
check_split.py can compare it with seqpipe's `sequences` artifact.
`train` trains one model on that split and writes its valid and test
metrics (full ranking, HR/NDCG/MRR at 5, 10, 20) as JSON. `test` does the
same for a training that was stopped before it ended: it evaluates the
best-validated checkpoint RecBole saved (`work/saved/*.pth`) and reads the
per-epoch validation scores from that run's log.

RecBole 1.2.1 predates numpy 2, torch >= 2.6 and pandas 3; the shims below
keep it running on the project's torch 2.11 / numpy 2.4 without touching
the installed package.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# numpy 2 removed these aliases. RecBole's Config.compatibility_settings
# re-creates np.float, np.long, ... from them (and its MRR metric uses
# np.float), so they must exist before the first Config.
for _alias, _type in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if _alias not in np.__dict__:
        setattr(np, _alias, _type)

import torch  # noqa: E402

# torch >= 2.6 loads with weights_only=True by default; RecBole's checkpoints
# hold its Config object (a trusted local file written by this run).
_torch_load = torch.load


def _load(*args, **kwargs):
    kwargs.setdefault("weights_only", False)
    return _torch_load(*args, **kwargs)


torch.load = _load

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.data.dataset import Dataset  # noqa: E402
from recbole.utils import get_model, get_trainer, init_logger, init_seed  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
# the data folder is ../shared/data/ml-100k from the project root
DATA = (HERE / ".." / ".." / ".." / "shared" / "data").resolve()


def exact_time_patch():
    """Keeps the time field in float64.

    RecBole turns float columns into float32 tensors; a unix time near 8.9e8
    then keeps only multiples of 64 s, and sorting (stable, by time) lets
    the file's row order decide among events up to a minute apart. seqpipe
    orders each user's events by (exact time, file row). With float64 the
    two orders are the same (see check_split.py and README.md).
    """
    original = Dataset._dataframe_to_interaction

    def patched(self, data):
        inter = original(self, data)
        field = self.time_field
        if field is not None and field in data:
            inter.interaction[field] = torch.from_numpy(
                data[field].to_numpy(dtype=np.float64)
            )
        return inter

    Dataset._dataframe_to_interaction = patched


class Budget:
    """Stops RecBole's training once `seconds` have passed (see CappedLoader).

    RecBole has no time limit, so this wraps the early-stopping check that
    its Trainer.fit calls after each validation: past the budget it returns
    "stop", and fit ends as it does on early stopping (the best validated
    epoch's weights are then loaded for the test). Also records how many
    epochs ran and which one validated best.
    """

    def __init__(self, seconds):
        import recbole.trainer.trainer as trainer_module

        self.seconds = seconds
        self.start = time.time()
        self.epochs = 0
        self.best_epoch = None
        self.valid_ndcg10 = []
        original = trainer_module.early_stopping

        def check(value, best, cur_step, max_step, bigger=True):
            best, cur_step, stop, update = original(value, best, cur_step, max_step, bigger)
            self.epochs += 1
            self.valid_ndcg10.append(round(float(value), 6))
            if update:
                self.best_epoch = self.epochs
            if self.spent():
                stop = True
            return best, cur_step, stop, update

        trainer_module.early_stopping = check

    def spent(self):
        return bool(self.seconds) and time.time() - self.start > self.seconds


class CappedLoader:
    """A training loader that stops yielding batches once the budget is spent.

    On a busy CPU one RecBole epoch can outlast any sensible budget (its
    epochs run the network on every prefix of every sequence), so the last
    epoch may end early; then it is validated, and fit stops.
    """

    def __init__(self, loader, budget):
        self._loader = loader
        self._budget = budget
        self.steps = 0
        self.truncated_epoch = None

    def __iter__(self):
        for batch in self._loader:
            if self._budget.spent():
                self.truncated_epoch = self._budget.epochs + 1
                return
            self.steps += 1
            yield batch

    def __len__(self):
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def base_config():
    return {
        "data_path": str(DATA),
        "dataset": "ml-100k",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # ml-100k.yaml shipped with RecBole sets normalize_all: True, which
        # would rescale the timestamps to [0, 1] in float32.
        "normalize_all": False,
        "user_inter_num_interval": "[5,inf)",
        "item_inter_num_interval": "[5,inf)",
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [5, 10, 20],
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "train_neg_sample_args": None,  # CE over the full catalogue
        "use_gpu": False,
        "device": "cpu",
        "seed": 42,
        "reproducibility": True,
        "show_progress": False,
        "checkpoint_dir": str(WORK / "saved"),
        "log_wandb": False,
    }


def parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def make_config(model, overrides):
    cfg = base_config()
    cfg.update(overrides)
    config = Config(model=model, dataset="ml-100k", config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    return config


def original_ids(dataset, field, ids):
    return [int(t) for t in dataset.id2token(field, ids)]


def dump_split(args):
    if not args.stock_time:
        exact_time_patch()
    # The history lists are dense [samples, MAX_ITEM_LIST_LENGTH] tensors, so
    # the full training sequence is rebuilt from the training samples (each
    # user's first history item, then every training target in order).
    overrides = {"MAX_ITEM_LIST_LENGTH": 200}
    if args.stock_time:
        overrides["normalize_all"] = True  # RecBole's ml-100k.yaml default
    config = make_config("SASRec", overrides)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    uid, iid = dataset.uid_field, dataset.iid_field
    users = {}
    inter = train._dataset.inter_feat
    for u, t, h, n in zip(
        original_ids(dataset, uid, inter[uid].numpy()),
        original_ids(dataset, iid, inter[iid].numpy()),
        inter[iid + "_list"][:, 0].numpy(),
        inter["item_length"].numpy(),
    ):
        row = users.setdefault(u, {"train": original_ids(dataset, iid, [h])})
        row["train"].append(t)
    for name, loader in (("valid", valid), ("test", test)):
        inter = loader._dataset.inter_feat
        for u, t, h, n in zip(
            original_ids(dataset, uid, inter[uid].numpy()),
            original_ids(dataset, iid, inter[iid].numpy()),
            inter[iid + "_list"].numpy(),
            inter["item_length"].numpy(),
        ):
            users[u][name] = t
            users[u][name + "_history"] = original_ids(dataset, iid, h[:n])
    out = {
        "users": dataset.user_num - 1,  # index 0 is [PAD]
        "items": dataset.item_num - 1,
        "interactions": len(dataset.inter_feat) + len(users),
        "per_user": {str(u): users[u] for u in sorted(users)},
    }
    Path(args.out).write_text(json.dumps(out))
    print(f"recbole split: {out['users']} users, {out['items']} items, "
          f"{out['interactions']} interactions -> {args.out}")


def train(args):
    exact_time_patch()
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = make_config(args.model, overrides)
    init_logger(config)
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    budget = Budget(args.budget)
    capped = CappedLoader(train_data, budget)
    _best, best_valid = trainer.fit(capped, valid_data, saved=True, show_progress=False)
    fit_s = time.time() - budget.start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    result = {
        "model": args.model,
        "overrides": overrides,
        "budget_seconds": args.budget,
        "epochs_run": budget.epochs,
        "best_epoch": budget.best_epoch,
        "valid_ndcg@10_per_epoch": budget.valid_ndcg10,
        "train_steps_per_epoch": len(train_data),
        "train_steps_run": capped.steps,
        "epoch_cut_short": capped.truncated_epoch,
        "fit_seconds": round(fit_s, 1),
        "valid": {k: float(v) for k, v in best_valid.items()},
        "test": {k: float(v) for k, v in test.items()},
        "params": sum(p.numel() for p in model.parameters()),
        "config": {k: config[k] for k in sorted(config.final_config_dict)
                   if isinstance(config[k], (int, float, str, bool, type(None), list))},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("model", "epochs_run", "best_epoch", "fit_seconds", "test")}))


def test_checkpoint(args):
    """Valid and test metrics of a checkpoint RecBole saved at its best
    validation so far, for a run stopped before early stopping ended it."""
    exact_time_patch()
    checkpoint = torch.load(args.checkpoint, map_location="cpu")
    config = checkpoint["config"]
    # A Config sets numpy's removed aliases when it is built; this one was
    # unpickled, so set them as building it would have.
    config.compatibility_settings()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    valid = trainer.evaluate(valid_data, load_best_model=True, model_file=args.checkpoint,
                             show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, model_file=args.checkpoint,
                            show_progress=False)
    # "epoch 12 evaluating [time: 0.50s, valid_score: 0.066077]"
    curve = [float(line.rsplit("valid_score:", 1)[1].strip(" ]\n"))
             for line in Path(args.log).read_text().splitlines()
             if " evaluating [" in line and "valid_score:" in line]
    result = {
        "model": config["model"],
        "checkpoint": str(args.checkpoint),
        "stopped_by_hand": True,
        "epochs_run": len(curve),
        "best_epoch": checkpoint["epoch"] + 1,
        "valid_ndcg@10_per_epoch": curve,
        "train_steps_per_epoch": len(train_data),
        "train_steps_run": len(curve) * len(train_data),
        "valid": {k: float(v) for k, v in valid.items()},
        "test": {k: float(v) for k, v in test.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("model", "epochs_run", "best_epoch", "test")}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("--out", required=True)
    s.add_argument("--stock-time", action="store_true",
                   help="RecBole's own float32 (normalised) timestamps, to count what they change")
    t = sub.add_parser("train")
    t.add_argument("model")
    t.add_argument("--out", required=True)
    t.add_argument("--set", action="append", default=[], help="config key=value (JSON value)")
    # 1: with 2 threads on a busy 2-core machine, OpenMP waits made SASRec
    # steps ~7x slower than with 1 (measured).
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--budget", type=float, default=0,
                   help="stop training at the first epoch end after this many seconds (0 = no limit)")
    c = sub.add_parser("test")
    c.add_argument("checkpoint")
    c.add_argument("--log", required=True, help="the stopped run's stderr (its epoch lines)")
    c.add_argument("--out", required=True)
    args = parser.parse_args()
    args.out = str(Path(args.out).resolve())
    if args.cmd == "test":
        args.checkpoint = str(Path(args.checkpoint).resolve())
        args.log = str(Path(args.log).resolve())
    WORK.mkdir(exist_ok=True)
    os.chdir(WORK)  # RecBole writes log/ and log_tensorboard/ into the cwd
    {"split": dump_split, "train": train, "test": test_checkpoint}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
