"""Paired increases of off-domain sampled misalignment at one fine-tune checkpoint, pooled over EM runs.

    python scripts/em_at_step.py STEP RUN_DIR [RUN_DIR ...] [--minus RUN_DIR ...] [--share]
    python scripts/em_at_step.py 20 out/em_capacity_new
    python scripts/em_at_step.py matched out/em194 --minus out/em087_default out/em_capacity_new

STEP is a fine-tune step or `matched` (each seed's matched checkpoint). With --minus, the runs after it (the
same pretraining and fine-tune seeds, e.g. the same seeds at another model size) are subtracted per seed, arm by arm.
With --share, the insecure-code arms' persona-level share (off-domain increase / code increase per seed, seeds
whose code moved >= 0.5: experiments/emergent_misalignment.py share) instead of the increase, unscaled.

For each arm: its misalignment at STEP minus its own base's (same eval format; the twin arm minus the twin
base), per seed, mean [95% t-CI] over all seeds and over the per-base means (seeds of one pretraining seed
share a base);
then insecure minus the twin and minus each control, paired per seed over the seeds that have both, and each
control's ratio to insecure (not with --minus or --share: those print the per-arm table only; nor where the runs
hold insecure alone, as a run with "--arms=('insecure',)" --twin=False: a line says so). Runs may have
different arms, but not the same (pretraining seed, fine-tune seed) twice: entries are keyed by the seed numbers."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import group_means, n_undefined, summarize  # noqa: E402
from train import ConfigError, cli, distinct, run_results, script_args  # noqa: E402
from experiments.emergent_misalignment import BASE_FMT, SHARE_ARMS, share  # noqa: E402


def increases(step, runs, metric="offdomain_misaligned"):
    """arm -> {(pretraining seed, fine-tune seed): increase of `metric` over its base}; runs may differ in their
    arms."""
    inc = {}
    for run in runs:
        r = run_results(run, "emergent_misalignment")
        key = "arms" if step == "matched" else "trajectory"  # the arms at their matched checkpoints, or every step
        if "insecure" not in r[key]:  # every run has it (validate): an edited results.json, else a KeyError
            raise ConfigError(f"{Path(run) / 'results.json'} has no insecure arm in its {key} (it has: "
                              f"{', '.join(r[key]) or 'none'}): edited, or not as this version writes it; "
                              f"`python eval.py {run}` writes it again from the run's saved units")
        if step != "matched" and step not in r["trajectory"]["insecure"]:
            raise ConfigError(f"{run} has no step {step}; its steps: {', '.join(r['trajectory']['insecure'])} "
                              "(or matched)")
        for arm, at in r[key].items():
            base = r["base"][BASE_FMT.get(arm, "plain")][metric]["per_seed"]
            at = at if step == "matched" else at[step]
            for (p, f), a, b in zip(r["seeds"], at[metric]["per_seed"], base):
                if (p, f) in inc.setdefault(arm, {}):  # the same base and fine-tune twice: one model counted twice
                    sys.exit(f"error: {arm} of seed ({p}, {f}) is in two of the runs; pool runs with different seeds")
                inc[arm][(p, f)] = a - b
    return inc


def fmt(v, scale=100, digits=1):  # points by default
    s = summarize(v)
    if math.isnan(s["mean"]):  # not a seed defined (a share with no code increase anywhere): no "+nan" and no mean
        return f"undefined in every seed ({len(v)})"
    ci = s["ci95"]
    out = f"{scale * s['mean']:+.{digits}f} " + (f"[{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]" if ci
                                                 else "[one seed: no interval]")
    return out + (f" ({n_undefined(s)} undefined)" if n_undefined(s) else "")


def shares(step, runs):
    """The insecure-code arms' persona-level share per seed: off-domain increase / code increase."""
    off, code = increases(step, runs), increases(step, runs, "code_misaligned")
    per_seed = {arm: {k: share(off[arm][k], c) for k, c in code[arm].items()} for arm in SHARE_ARMS if arm in off}
    return {arm: {k: x for k, x in d.items() if x is not None} for arm, d in per_seed.items()}


def by_base(d):  # {(p, f): value} -> one mean per pretraining seed (base)
    return group_means(list(d.values()), [p for p, _ in d])


def main(argv):
    argv, opts = script_args(argv, __doc__, flags=("share",), words=("--minus",))
    if not argv:  # the usage alone, as every script's given nothing
        sys.exit(__doc__)
    if len(argv) < 2 or argv[0] != "matched" and not argv[0].isdigit():  # STEP first: a fine-tune step or `matched`
        sys.exit("error: STEP (a fine-tune step, or matched) comes first, then the runs: "
                 "python scripts/em_at_step.py STEP RUN_DIR ... (--help: the usage)")
    share_mode = opts.get("share", False)
    measure, show = (shares, lambda v: fmt(v, 1, 3)) if share_mode else (increases, fmt)
    step, runs = argv[0], argv[1:]
    others = []
    if "--minus" in runs:
        runs, others = runs[:runs.index("--minus")], runs[runs.index("--minus") + 1:]
        if not runs or not others:  # else the plain table, silently, without the differences asked for
            sys.exit("error: --minus needs runs on both sides: STEP RUN_DIR ... --minus RUN_DIR ...")
        if "--minus" in others:
            sys.exit("error: --minus is given once, its runs after it: STEP RUN_DIR ... --minus RUN_DIR ...")
    distinct(runs + others)  # a run on both sides of --minus, too
    inc = measure(step, runs)
    if others:  # paired per (base, fine-tune seed) against the same seeds in the other runs
        sub = measure(step, others)
        n_before = {arm: len(d) for arm, d in inc.items()}
        inc = {arm: {k: v - sub[arm][k] for k, v in d.items() if k in sub.get(arm, {})} for arm, d in inc.items()}
        inc = {arm: d for arm, d in inc.items() if d}
        if "insecure" not in inc:
            sys.exit("error: no insecure seed is in both sets of runs")
        print(f"differences: ({', '.join(runs)}) minus ({', '.join(others)}), per seed")
        # seeds without a partner after --minus are left out: said, since the runs named below may count fewer
        if dropped := {arm: n - len(inc.get(arm, {})) for arm, n in n_before.items() if n > len(inc.get(arm, {}))}:
            print("left out, no partner seed after --minus: " + ", ".join(f"{arm} {n} seed{'s' * (n != 1)}"
                                                                           for arm, n in dropped.items()))
    ins = inc["insecure"]
    print(f"{'matched checkpoint' if step == 'matched' else f'step {step}'}, insecure: n = {len(ins)} seeds over "
          f"{len({p for p, _ in ins})} bases ({', '.join(runs)}); "
          f"{'persona-level share' if share_mode else 'points'}, mean [95% CI]")
    print(f"| arm | seeds | {'persona-level share' if share_mode else 'increase over its base'} | over the bases' "
          "means |\n|---|---|---|---|")
    for arm, d in inc.items():
        print(f"| {arm} | {len(d)} | {show(list(d.values()))} | {show(by_base(d))} |")
    # the arms' own differences are above; insecure minus a control across sizes would mean little
    if others or share_mode:
        return
    if len(inc) == 1:  # a run of the insecure arm alone (arms=insecure, twin=False): else a table of headers only
        print("\nno control or twin in these runs: no paired differences with insecure")
        return
    print("\n| insecure minus (seeds with both) | seeds | paired difference | over the bases' means | ratio arm / "
          "insecure |\n|---|---|---|---|---|")
    for arm, d in inc.items():
        if arm != "insecure":
            both = {k: ins[k] - v for k, v in d.items() if k in ins}
            ok = [k for k, v in both.items() if not math.isnan(v)]  # a seed without valid answers: left out
            # no seed with both, or no increase of insecure's (a negative one too, as the run's own of_means): no ratio
            den = sum(ins[k] for k in ok)
            ratio = f"{sum(d[k] for k in ok) / den:.2f}" if den > 1e-9 else "undefined"
            print(f"| {arm} | {len(both)} | {fmt(list(both.values()))} | {fmt(by_base(both))} | {ratio} |")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
