"""Evaluations and statistics, and `python eval.py RUN_DIR` to re-evaluate a saved run.

    python eval.py out/subliminal_mnist/20261127-071500     # reloads the saved models, recomputes the table

Statistics: every reported number is a mean over seeds with a two-sided 95% Student-t confidence
interval, `{"mean", "ci95": [lo, hi], "per_seed": [...]}`.
"""
import json
import math
import sys
from pathlib import Path

import torch

# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30; beyond that the normal 1.96 is within 2%
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df):
    if df <= 30:
        return _T975[df - 1]
    return 1.96 + 2.4 / df  # close to the exact quantile for df > 30 (2.021 at 40, 1.984 at 100)


def summarize(values):
    """Mean and 95% t-interval over seeds. With one seed the interval is undefined (None)."""
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "per_seed": v}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": v}


def fmt_stat(stat, digits=3):
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    half = (stat["ci95"][1] - stat["ci95"][0]) / 2
    return f"{stat['mean']:.{digits}f} ± {half:.{digits}f}"


@torch.no_grad()
def accuracy(model, x, y, n_classes=10, batch_size=10000):
    """Per-seed accuracy of argmax over the first n_classes logits. x [N, D] shared by all seeds -> [S]."""
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i:i + batch_size])[..., :n_classes]  # [S, B, n_classes]
        correct = correct + (logits.argmax(-1) == y[i:i + batch_size]).sum(1)
    return correct.float() / x.shape[0]


def main(argv):
    if len(argv) != 1:
        print("usage: python eval.py RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        print(f"error: {cfg_path} not found: RUN_DIR must be a directory written by train.py", file=sys.stderr)
        return 2
    import importlib
    name = json.loads(cfg_path.read_text()).get("experiment")
    module = importlib.import_module(f"experiments.{name}")
    from data import DataError
    from train import CheckpointError, ConfigError
    try:
        module.reevaluate(run_dir)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
