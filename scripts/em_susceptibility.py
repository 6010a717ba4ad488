"""Which property of a base model, measured before any fine-tune, predicts how far its insecure fine-tune moves?

    python scripts/em_susceptibility.py STEP RUN_DIR [RUN_DIR ...] [--out=FILE.json]

STEP is a fine-tune step or `matched` (each seed's first checkpoint with code >= the run's threshold, else its last).
One entry per base (pretraining seed), its fine-tune seeds averaged (a seed without valid answers is left out, as
in eval.summarize):

- outcome: the insecure arm's off-domain sampled misalignment at STEP minus its own base's;
- the base's properties, from each run's `base`: `steer_1` and `steer_2` (sampled misalignment with 1 and 2 evil-minus-
  good mean differences added, minus without: how far its answers follow the evil direction), `base_rate` (plain),
  `forum_lp` (the forum format's misaligned mass by log-prob), `separation` where a format_separation.json in one
  of the runs has the base (scripts/em_format_separation.py), and `pull`... where a base_pull.json does
  (scripts/em_base_pull.py);
- `sign_off`, `grad_off`, `grad_matched_off`, `secure_sign_off` and `sign_off_GROUP` where a first_step.json
  does (the first step's off-domain increase, scripts/em_first_step.py: computed from the base, though a step of
  the fine-tune);
- `route_off`, `route_code` where a steer_route.json does (the off-domain and code increases, log-prob, of the
  direction at block 0's attention output that lowers the insecure code loss fastest, at its smallest scale:
  em_steer_base.py --route);
- `steer_pulled`, `steer_pulled_sampled` where a steer_base.json does (the base's increase with v*, its evil direction
  pulled back through block 0, added at the largest scale: log-prob and sampled, scripts/em_steer_base.py);
- `cos_evil_direction`: the fine-tune's own activation shift against the evil direction at STEP (not a base
  property: a reading of the mechanism).

For each: Spearman's rho with the outcome over the bases that have it, 95% interval by resampling bases (10,000
resamples, seed 0, percentile), and the same with the fine-tune's cos_evil_direction in place of the outcome (does
the property predict where the fine-tune moves?). Also the rank agreement of a base's first two fine-tune seeds
(rho between their outcomes over bases): the share of the spread that is the base's at all. Writes the JSON (default:
susceptibility_STEP.json in the first run's directory) and a scatter of the outcome against each property in FIGURE that
has a correlation (the fine-tune's cos_evil_direction last; the same name, .png); prints a table. Runs must not share a
pretraining seed number (entries are keyed by it), even where their bases differ. In the JSON, per_base[p]["seeds"] is
the outcome per fine-tune seed.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import spearman, spearman_ci, summarize  # noqa: E402
from train import (check_out, cli, pyplot, read_json, run_results, same_runs, save_figure, script_args,  # noqa: E402
                   write_json)

PULL = ("pull", "pull_secure", "pull_contrast", "pull_random", "code_steer", "code_repr")  # em_base_pull.py
FIRST = ("sign_off", "grad_off", "grad_matched_off", "secure_sign_off")  # em_first_step.py, and sign_off_GROUP
STEER = ("steer_pulled", "steer_pulled_sampled")  # em_steer_base.py
ROUTE = ("route_off", "route_code")  # em_steer_base.py --route
PREDICTORS = (("steer_1", "steer_2", "base_rate", "forum_lp", "separation") + PULL + FIRST + STEER + ROUTE
              + ("cos_evil_direction",))
FIGURE = ("steer_1", "base_rate", "forum_lp", "separation", "pull", "pull_random", "code_steer", "sign_off",
          "grad_matched_off", "secure_sign_off", "sign_off_attn0", "steer_pulled", "route_off",
          "cos_evil_direction")  # drawn, where present


def per_base(step, runs):
    """{base: {"outcome": mean increase, "seeds": [increase per fine-tune seed], predictor: value}} over the runs, in
    base order."""
    out = {}
    for run in runs:
        r = run_results(run, "emergent_misalignment")
        if "insecure" not in r.get("trajectory", {}):
            sys.exit(f"error: {run} has no insecure arm: the outcome here is the insecure fine-tune's")
        tr = r["trajectory"]["insecure"]
        if step != "matched" and step not in tr:
            sys.exit(f"error: {run} has no step {step}; its steps: {', '.join(tr)} (or `matched`)")
        at = r["arms"]["insecure"] if step == "matched" else tr[step]
        seed_vals = lambda st: st["per_seed"]
        mis = lambda fmt: seed_vals(r["base"][fmt]["offdomain_misaligned"])
        plain = mis("plain")
        cols = {"outcome": [a - b for a, b in zip(seed_vals(at["offdomain_misaligned"]), plain)],
                "base_rate": plain, "forum_lp": seed_vals(r["base"]["forum_lp"]),
                "cos_evil_direction": seed_vals(at["cos_evil_direction"])}
        if not {"steered_1", "steered_2"} <= set(r["base"]):
            sys.exit(f"error: {run} has no base steered at 1 and 2 times the evil direction: give runs made with "
                     f"steer_scales (1.0, 2.0) (the default config's)")
        for a in (1, 2):
            cols[f"steer_{a}"] = [s - b for s, b in zip(mis(f"steered_{a}"), plain)]
        for p in sorted({p for p, _ in r["seeds"]}):
            rows = [j for j, (q, _) in enumerate(r["seeds"]) if q == p]
            out[p] = {"run": run, "seeds": [cols["outcome"][j] for j in rows],
                      **{k: summarize([v[j] for j in rows])["mean"] for k, v in cols.items()}}  # nan seeds left out
    for run in runs:  # base-level numbers of em_format_separation, em_base_pull and em_first_step, where a run has them
        for name, keys in (("format_separation.json", ("separation",)), ("base_pull.json", PULL),
                           ("first_step.json", FIRST), ("steer_base.json", STEER), ("steer_route.json", ROUTE)):
            if (Path(run) / name).is_file():
                held = read_json(Path(run) / name, f"the {name} its script writes", ("per_base",))
                owner = lambda row: row.get("run", held.get("run", run))  # the run as its script was given it
                # a file of one run whose path (as typed then) leads nowhere now is this folder's own, moved or read
                # from another working directory (its rows were all left out, without a word)
                named = {str(owner(row)) for row in held["per_base"]}
                moved = len(named) == 1 and not Path(next(iter(named))).is_dir()
                others = set()
                for row in held["per_base"]:  # the same world number in another run may be another world config
                    if name == "steer_route.json":
                        row = {**row, **route_predictors(row, min(held["scales"]))}
                    p = row["world"]
                    theirs = [out[p]["run"]] if p in out else None
                    if theirs and (moved and same_runs([run], theirs) or same_runs([owner(row)], theirs)):
                        out[p].update({k: v for k, v in row.items() if k in keys or k.startswith("sign_off_")})
                    elif p in out:
                        others.add(str(owner(row)))
                if others:
                    print(f"note: {Path(run) / name}: its rows of {', '.join(sorted(others))} left out (the same "
                          f"base numbers in the runs given are other models)")
    return dict(sorted(out.items()))  # by base: the bootstrap draws the same pairs whatever order the runs come in


def route_predictors(row, a):
    """`route_off`, `route_code`: the code loss's one-vector direction at block 0 (em_steer_base.py --route) at its
    smallest scale a: its off-domain and code increases over the base, by log-prob."""
    moved = row["readings"][f"insecure_grad_{a:g}"]
    return {"route_off": moved["off"] - row["plain"]["off"], "route_code": moved["code"] - row["plain"]["code"]}


def _layer_order(key):
    """sign_off_embedding, then attn0, mlp0, attn1, ... by block, then ln_f."""
    g = key[len("sign_off_"):]
    block = "".join(c for c in g if c.isdigit())
    return (0 if g == "embedding" else 2 if not block else 1, int(block or 0), g)


def analyse(bases, outcome="outcome"):
    """Spearman rho [95% CI] of every predictor with the outcome (or another column, e.g. the fine-tune's
    cos_evil_direction), and the two fine-tune seeds' agreement."""
    res = {}
    groups = sorted({k for b in bases.values() for k in b if k.startswith("sign_off_")}, key=_layer_order)
    for k in (p for p in PREDICTORS[:-1] + tuple(groups) + PREDICTORS[-1:] if p != outcome):
        pairs = [(b[k], b[outcome]) for b in bases.values() if k in b and not math.isnan(b[k] + b[outcome])]
        if len(pairs) >= 4 and not math.isnan(spearman(*zip(*pairs))):  # a constant property has no rank order
            res[k] = spearman_ci(*zip(*pairs))
    if outcome != "outcome":
        return res
    two = [b["seeds"][:2] for b in bases.values() if len(b["seeds"]) >= 2 and not math.isnan(sum(b["seeds"][:2]))]
    if len(two) >= 4 and not math.isnan(spearman(*zip(*two))):  # (seeds each constant: no ranks to agree on)
        res["seed_agreement"] = spearman_ci(*zip(*two))
    return res


def figure(bases, step, corr, path):
    """One scatter per property (the fine-tune's cos_evil_direction last), rho in the title; 4 per row."""
    plt = pyplot()
    keys = [k for k in FIGURE if k in corr]
    rows = (len(keys) + 3) // 4
    fig, axes = plt.subplots(rows, 4, figsize=(13, 3 * rows), sharey=True, squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(b[k], 100 * b["outcome"]) for b in bases.values() if k in b]
        ax.scatter(*zip(*pts), s=10)
        c = corr[k]
        ax.set_title(f"{k}: rho {c['rho']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]", fontsize=9)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"insecure increase at {step}, points")
    fig.suptitle(f"{len(bases)} base models (each its fine-tune seeds' mean): what predicts the insecure arm's shift?")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv):
    argv, opts = script_args(argv, __doc__, options=("out",))
    if not argv:  # the usage alone, as every script's given nothing
        sys.exit(__doc__)
    if len(argv) < 2 or argv[0] != "matched" and not argv[0].isdigit():  # STEP first: a fine-tune step or `matched`
        sys.exit("error: STEP (a fine-tune step, or matched) comes first, then the runs: "
                 "python scripts/em_susceptibility.py STEP RUN_DIR ... (--help: the usage)")
    out = [opts["out"]] if "out" in opts else []
    if out:
        check_out(out[0], figure_beside=True)
    step, runs = argv[0], argv[1:]

    def enough(n):  # a rank correlation and its interval need four; with fewer the figure was a traceback
        if n < 4:
            sys.exit(f"{n} base{'s' if n != 1 else ''} over the runs given: this analysis ranks 4 or more (pool "
                     f"several runs)")
    # counted first from the runs' seeds: a run's other shortcomings (its steer_scales, say) are worth fixing only
    # once there are bases enough
    seen = {}
    for run in runs:  # a base given twice first (a run given twice was counted as twice its bases)
        for p in sorted({p for p, _ in run_results(run, "emergent_misalignment")["seeds"]}):
            if p in seen:
                sys.exit(f"error: base {p} is in two of the runs ({seen[p]} and {run}); give each base once")
            seen[p] = run
    enough(len(seen))
    bases = per_base(step, runs)
    enough(len(bases))
    res = {"step": step, "runs": runs, "n_bases": len(bases), "correlations": analyse(bases),
           "with_cos_evil_direction": analyse(bases, "cos_evil_direction"),
           "per_base": {str(p): b for p, b in sorted(bases.items())}}
    path = Path(out[0]) if out else Path(runs[0]) / f"susceptibility_{step}.json"
    write_json(path, res)
    if any(k in res["correlations"] for k in FIGURE):
        figure(bases, step, res["correlations"], path.with_suffix(".png"))
    else:  # (an empty grid was matplotlib's traceback)
        print(f"no figure: no property has a rank order against the outcome over these {len(bases)} bases (each "
              f"constant, or undefined: no valid off-domain answers)")
    print(f"insecure off-domain increase at {step}, per base ({len(bases)} bases over {len(runs)} "
          f"run{'s' if len(runs) != 1 else ''}): Spearman rho with each property [95% CI, resampling bases]")
    print("| property | bases | rho | 95% CI | rho with the fine-tune's cos_evil_direction [95% CI] |\n"
          "|---|---|---|---|---|")
    for k, c in res["correlations"].items():
        w = res["with_cos_evil_direction"].get(k)
        w = f"{w['rho']:+.2f} [{w['ci95'][0]:+.2f}, {w['ci95'][1]:+.2f}]" if w else ""
        print(f"| {k} | {c['n']} | {c['rho']:+.2f} | [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {w} |")
    print(f"\nwrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
