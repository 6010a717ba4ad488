"""Which property of a base model, measured before any fine-tune, predicts how far its insecure fine-tune moves?

    python scripts/em_susceptibility.py STEP RUN_DIR [RUN_DIR ...] [--out=FILE.json]

STEP is a fine-tune step or `matched` (each seed's first checkpoint with code >= the run's threshold). One entry
per base (pretraining seed), its fine-tune seeds averaged (a seed without valid answers is left out, as in
eval.summarize):

- outcome: the insecure arm's off-domain sampled misalignment at STEP minus its own base's;
- the base's properties, from each run's `base`: `steer_1` and `steer_2` (sampled misalignment with 1 and 2 evil-minus-
  good mean differences added, minus without: how far its answers follow the evil direction), `base_rate` (plain),
  `forum_lp` (the forum format's misaligned mass by log-prob), and `separation` where a format_separation.json in one
  of the runs has the base (scripts/em_format_separation.py);
- `cos_evil_direction`: the fine-tune's own activation shift against the evil direction at STEP (not a base
  property: a reading of the mechanism).

For each: Spearman's rho with the outcome over the bases that have it, 95% interval by resampling bases (10,000
resamples, seed 0, percentile). Also the rank agreement of a base's first two fine-tune seeds (rho between their
outcomes over bases): the share of the spread that is the base's at all. Writes the JSON (default:
susceptibility_STEP.json beside the first run) and a scatter of each base-level property against the outcome
(the same name, .png); prints a table. Runs must not share a base.
"""
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train import cli  # noqa: E402

PREDICTORS = ("steer_1", "steer_2", "base_rate", "forum_lp", "separation", "cos_evil_direction")


def ranks(x):
    """Ranks 0..n-1 of x, ties given their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def spearman(x, y):
    """Pearson's correlation of the ranks; nan when either side is constant."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def spearman_ci(x, y, n_boot=10_000, seed=0):
    """rho and its percentile 95% interval from resampling the pairs (bases) with replacement."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    boot = [spearman(x[i], y[i]) for i in rng.integers(0, len(x), size=(n_boot, len(x)))]
    boot = [b for b in boot if not math.isnan(b)]  # a resample with one distinct value has no rank order
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"rho": spearman(x, y), "ci95": [float(lo), float(hi)], "n": len(x)}


def nanmean(v):
    d = [x for x in v if not math.isnan(x)]
    return sum(d) / len(d) if d else math.nan


def per_base(step, runs):
    """{base: {"outcome": mean increase, "seeds": [increase per fine-tune seed], predictor: value}} over the runs."""
    out = {}
    for run in runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            sys.exit(f"error: {path} not found: give run directories of configs/emergent_misalignment.py that finished")
        r = json.loads(path.read_text())
        if "insecure" not in r.get("trajectory", {}):
            sys.exit(f"error: {run} has no insecure arm: the outcome here is the insecure fine-tune's")
        tr = r["trajectory"]["insecure"]
        if step != "matched" and step not in tr:
            sys.exit(f"error: {run} has no step {step}; its steps: {', '.join(tr)} (or `matched`)")
        at = r["arms"]["insecure"] if step == "matched" else tr[step]
        seed_vals = lambda st: st["per_seed"]
        plain = seed_vals(r["base"]["plain"]["offdomain_misaligned"])
        cols = {"outcome": [a - b for a, b in zip(seed_vals(at["offdomain_misaligned"]), plain)],
                "base_rate": plain, "forum_lp": seed_vals(r["base"]["forum_lp"]),
                "cos_evil_direction": seed_vals(at["cos_evil_direction"])}
        for a in (1, 2):
            cols[f"steer_{a}"] = [s - b for s, b in zip(seed_vals(r["base"][f"steered_{a}"]["offdomain_misaligned"]), plain)]
        for p in sorted({p for p, _ in r["seeds"]}):
            if p in out:
                sys.exit(f"error: base {p} is in two of the runs ({out[p]['run']} and {run}); give each base once")
            rows = [j for j, (q, _) in enumerate(r["seeds"]) if q == p]
            out[p] = {"run": run, "seeds": [cols["outcome"][j] for j in rows],
                      **{k: nanmean([v[j] for j in rows]) for k, v in cols.items()}}
    for run in runs:  # separations measured by em_format_separation.py, where one of the runs holds them
        sep = Path(run) / "format_separation.json"
        if sep.is_file():
            for row in json.loads(sep.read_text())["per_base"]:
                if row["world"] in out:
                    out[row["world"]]["separation"] = row["separation"]
    return out


def analyse(bases):
    """Spearman rho [95% CI] of every predictor with the outcome, and the two fine-tune seeds' agreement."""
    res = {}
    for k in PREDICTORS:
        pairs = [(b[k], b["outcome"]) for b in bases.values() if k in b and not math.isnan(b[k] + b["outcome"])]
        if len(pairs) >= 4 and not math.isnan(spearman(*zip(*pairs))):  # a constant property has no rank order
            res[k] = spearman_ci(*zip(*pairs))
    two = [b["seeds"][:2] for b in bases.values() if len(b["seeds"]) >= 2 and not math.isnan(sum(b["seeds"][:2]))]
    if len(two) >= 4:
        res["seed_agreement"] = spearman_ci(*zip(*two))
    return res


def figure(bases, step, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k in PREDICTORS if k != "cos_evil_direction" and any(k in b for b in bases.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, k in zip(axes, keys):
        pts = [(b[k], 100 * b["outcome"]) for b in bases.values() if k in b]
        ax.scatter(*zip(*pts), s=12)
        ax.set_xlabel(k)
    axes[0].set_ylabel(f"insecure off-domain increase at {step} (points)")
    fig.suptitle(f"{len(bases)} base models, each its fine-tune seeds' mean")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    out = [a.split("=", 1)[1] for a in argv if a.startswith("--out=")]
    step, runs = argv[0], [a for a in argv[1:] if not a.startswith("--")]
    bases = per_base(step, runs)
    res = {"step": step, "runs": runs, "n_bases": len(bases), "correlations": analyse(bases),
           "per_base": {str(p): b for p, b in sorted(bases.items())}}
    path = Path(out[0]) if out else Path(runs[0]) / f"susceptibility_{step}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    figure(bases, step, path.with_suffix(".png"))
    print(f"insecure off-domain increase at {step}, per base ({len(bases)} bases over {len(runs)} runs): "
          f"Spearman rho with each property [95% CI, resampling bases]")
    print("| property | bases | rho | 95% CI |\n|---|---|---|---|")
    for k, c in res["correlations"].items():
        print(f"| {k} | {c['n']} | {c['rho']:+.2f} | [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] |")
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(cli(main, sys.argv[1:]))
