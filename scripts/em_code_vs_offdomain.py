"""The insecure arm's off-domain misalignment against its in-domain learning, checkpoint by checkpoint, for EM runs.

    python scripts/em_code_vs_offdomain.py RUN_DIR [RUN_DIR ...] [--out=FILE.png]
    python scripts/em_code_vs_offdomain.py RUN_DIR [RUN_DIR ...] --reference=RUN_DIR [--upto=5]
    python scripts/em_code_vs_offdomain.py RUN_DIR [RUN_DIR ...] --at=0.9

The issue compares arms "at matched in-domain learning". Runs that learn the code at different speeds (another lr,
schedule or optimizer) reach the first checkpoint with code >= 0.9 at different steps, and on a coarse grid of
checkpoints that checkpoint sits at different code levels. Plotting each run's off-domain increase against its own
insecure code share, one point per checkpoint, compares them at equal code instead of at equal step. Per run and
checkpoint: the mean insecure code share (log-prob; drawn on a log-odds axis) and the mean paired increase of off-domain
sampled misalignment over the base, in points, with its 95% t-interval over seeds (the (pretraining seed, fine-tune
seed) pairs, as if independent). Where a run has several fine-tune seeds per world (pretraining seed), they share its
base, so the tables of increases and deviations add a column over the worlds' means (n = worlds: the interval to read
when they are few); with one seed per world the two are the same and the column is left out. Prints a table; writes the
figure (default: code_vs_offdomain.png in the first run's directory; its band over seeds). A seed with no valid
off-domain answer at a checkpoint read (or at its base) has no increase there: every table leaves it out and says how
many it left out (n/a where none is left; a world is left out where all its seeds are).

--reference: how far each run lies off the reference run's curve, seed by seed (the runs on the same bases and fine-tune
seeds). For each seed, the reference's checkpoints up to step --upto (before its code saturates) give its off-domain
increase as a piecewise-linear function of the code share's log-odds; at each checkpoint of a run whose code share lies
within that range, the deviation is the run's increase minus the function's, in points. Per seed the mean over its
checkpoints in range; then mean [95% t-CI] over the seeds with any (and over their worlds' means).

--at=Q: the off-domain increase where the code share first reaches Q, read without the grid of checkpoints: per seed,
between the last checkpoint below Q and the first at or past it (the base counts as step 0), interpolated linearly in
the code share's log-odds; mean [95% t-CI] over the seeds that reach Q (and over their worlds' means), beside the
increase at that first checkpoint past Q (the issue's "matched" reading when Q = 0.9). A seed whose base is already at
or past Q is left out. The reading depends on the axis of the interpolation: linear in the share itself puts it nearer
the later checkpoint. Beside it, the rate ratio there: per seed (base rate + interpolated increase) / base rate, its
geometric mean [95% t-CI on the logs] and the ratio of the means; a seed whose base rate or level is 0 is left out of
the ratio. With several runs on the same seeds, each later run's ratio over the first run's, paired per seed (geometric
mean [95% CI]; each also over the worlds' means, n = pretraining seeds, since a world's fine-tune seeds share its base
rate): the same multiple in two worlds whose base rates differ gives 1 (research log, "Is the matched shift a fixed
multiple")."""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import numpy as np  # noqa: E402
from eval import group_means, mean_ci, n_undefined, summarize  # noqa: E402
from train import ConfigError, check_out, cli, distinct, pyplot, run_results, save_figure, script_args  # noqa: E402


def shares_worlds(runs):
    """Whether any of the runs has several fine-tune seeds of one world (pretraining seed): only then does the interval
    over the worlds' means differ from the one over seeds, and get a column of its own."""
    for run in runs:
        worlds = [s[0] for s in run_results(run, "emergent_misalignment")["seeds"]]
        if len(set(worlds)) < len(worlds):
            return True
    return False


def over_worlds(by_seed):
    """STAT over the worlds' means of {(pretraining seed, fine-tune seed): value}: the fine-tune seeds of one world
    share its base, so they are not independent."""
    return summarize(group_means(list(by_seed.values()), [s[0] for s in by_seed]))


def logit(q):
    q = min(max(q, 1e-4), 1 - 1e-4)  # a share of exactly 0 or 1 (one seed's rounding) stays finite
    return math.log(q / (1 - q))


def base_rates(run):
    """{(pretraining seed, fine-tune seed): the base's off-domain sampled misalignment, in points}."""
    r = run_results(run, "emergent_misalignment")
    return {tuple(s): 100 * b for s, b in zip(r["seeds"], r["base"]["plain"]["offdomain_misaligned"]["per_seed"])}


def crossings(run, q):
    """(number of seeds, {seed: (interpolated increase, increase at the first checkpoint past q, base rate)}, points)
    over the seeds whose code share reaches q (the base counts as step 0)."""
    seeds, base = per_seed(run, with_base=True), base_rates(run)
    got = {seed: crossing(pts, q) for seed, pts in seeds.items()}
    return len(seeds), {seed: (*x, base[seed]) for seed, x in got.items() if x is not None}


def geo(logs, worlds=None):
    """'m [lo, hi]' of a list of logs, back on the ratio scale: geometric mean and its interval (one: no interval).
    With `worlds` (each log's pretraining seed), over the worlds' means instead: the fine-tune seeds of one world
    share its base rate, so they are not independent (eval.summarize_by)."""
    st = summarize(logs if worlds is None else group_means(logs, worlds))
    ci = "" if st["ci95"] is None else f" [{math.exp(st['ci95'][0]):.2f}, {math.exp(st['ci95'][1]):.2f}]"
    return f"{math.exp(st['mean']):.2f}{ci}"


def per_seed(run, with_base=False):
    """{(pretraining seed, fine-tune seed): [(step, code share, off-domain increase in points)]}, insecure arm; the
    base first as step 0 (increase 0) if with_base."""
    r = run_results(run, "emergent_misalignment")
    base = r["base"]["plain"]["offdomain_misaligned"]["per_seed"]
    out = {tuple(s): [(0, c, 0.0)] if with_base else [] for s, c in
           zip(r["seeds"], r["base"]["plain"]["code_misaligned"]["per_seed"])}
    for step, at in sorted(r["trajectory"]["insecure"].items(), key=lambda kv: int(kv[0])):
        for s, code, off, b in zip(r["seeds"], at["code_misaligned"]["per_seed"],
                                   at["offdomain_misaligned"]["per_seed"], base):
            out[tuple(s)].append((int(step), code, 100 * (off - b)))
    return out


def crossing(pts, q):
    """(interpolated increase, increase at the first checkpoint past q) where the code share first reaches q along
    [(step, code, increase)] (in step order, the base first), or None if it never does or starts there."""
    if pts and pts[0][1] >= q:  # the base is already there: there is no crossing to read, even if the code dips later
        return None
    for (_, c0, y0), (_, c1, y1) in zip(pts, pts[1:]):
        if c0 < q <= c1:
            return float(np.interp(logit(q), [logit(c0), logit(c1)], [y0, y1])), y1
    return None


def deviations(run, reference, upto):
    """{seed: mean deviation of the run's checkpoints from the reference's curve (points)} over the seeds with a
    checkpoint inside the reference's code range, and the number of checkpoints used."""
    ref, dev, used = per_seed(reference), {}, 0
    for seed, pts in per_seed(run).items():
        if seed not in ref:
            continue
        below = sorted((logit(c), y) for st, c, y in ref[seed] if st <= upto)
        if not below:
            raise ConfigError(f"--upto={upto}: {Path(reference).name} has no checkpoint at or before step {upto} (its "
                              f"steps: {', '.join(str(st) for st, _, _ in ref[seed])}); use a larger --upto")
        xs, ys = zip(*below)
        inside = [(logit(c), y) for _, c, y in pts if xs[0] <= logit(c) <= xs[-1]]
        # a checkpoint without a valid answer (nan) is left out of its seed's mean (it took the whole seed with it);
        # a seed with none defined is undefined
        defined = [(x, y) for x, y in inside if not math.isnan(y)]
        if inside:
            dev[seed] = float(np.mean([y - np.interp(x, xs, ys) for x, y in defined])) if defined else math.nan
            used += len(defined)
    return dev, used


def curve(run):
    """[(step, mean code share, STAT of the off-domain increase in points over seeds, the same over the worlds' means)]
    of the run's insecure arm."""
    at = {}
    for seed, pts in per_seed(run).items():
        for step, code, inc in pts:
            at.setdefault(step, {})[seed] = (code, inc)
    return [(step, sum(c for c, _ in v.values()) / len(v), summarize([y for _, y in v.values()]),
             over_worlds({seed: y for seed, (_, y) in v.items()})) for step, v in sorted(at.items())]


def shown(stat, digits, unit="seed"):
    """mean_ci of summarized increases, saying how many seeds (or worlds: unit) it leaves out: a seed whose checkpoint
    (or base) gave no valid off-domain answer has no increase there (nan, left out by eval.summarize), a world none of
    whose seeds has one no mean; none left: n/a, not '+nan'."""
    k, n = n_undefined(stat), len(stat["per_seed"])
    if k == n:
        return f"n/a (no valid answer on {f'its one {unit}' if n == 1 else f'any of its {n} {unit}s'})"
    return mean_ci(stat, digits) + (f" ({k} of {n} {unit}s undefined: no valid answer)" if k else "")


def _float(x):
    try:
        return float(x)
    except ValueError:
        return math.nan


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("out", "reference", "upto", "at"))
    if not runs:
        sys.exit(__doc__)
    if len(opts) > 1 and set(opts) != {"reference", "upto"}:  # --reference and --at print tables only
        sys.exit(f"{', '.join('--' + k for k in opts)}: give one of --out=, --reference= (with --upto=) and --at=")
    if "upto" in opts and ("reference" not in opts or not opts["upto"].isdecimal() or int(opts["upto"]) < 1):
        sys.exit(f"--upto={opts['upto']}: expected a step >= 1, beside --reference=")
    if "at" in opts and not 0 < _float(opts["at"]) < 1:
        sys.exit(f"--at={opts['at']}: expected a code share between 0 and 1, e.g. --at=0.9")
    distinct(runs)
    if "out" in opts:
        check_out(opts["out"], figure=True)
    for r in runs + [opts.get("reference", runs[0])]:
        run_results(r, "emergent_misalignment")  # each a finished EM run, or a one-line error now
    if "at" in opts:
        q = float(opts["at"])
        shared = shares_worlds(runs)  # else the columns over the worlds' means would repeat those over seeds
        print(f"off-domain increase where the code share first reaches {q:g}, points, mean [95% CI] over the seeds "
              f"that reach it" + (" (and over their worlds' means)" if shared else "") +
              "\n| run | seeds reaching it | interpolated | at the first checkpoint past it |" +
              (" interpolated, over the worlds' means | first past it, over the worlds' means |" if shared else "") +
              "\n|---|---|---|---|" + ("---|---|" if shared else ""))
        levels = {}  # run -> {seed: (base rate, base rate + interpolated increase)}, both above 0: a ratio
        for run in runs:
            n, got = crossings(run, q)
            levels[run] = {seed: (b, b + a) for seed, (a, _, b) in got.items() if b > 0 and b + a > 0}
            if not got:
                print(f"| {Path(run).name} | 0 | | |" + (" | |" if shared else ""))
                continue
            print(f"| {Path(run).name} | {len(got)} of {n} | {shown(summarize([a for a, _, _ in got.values()]), 2)} | "
                  f"{shown(summarize([p for _, p, _ in got.values()]), 2)} |" + (
                      f" {shown(over_worlds({s: a for s, (a, _, _) in got.items()}), 2, 'world')} | "
                      f"{shown(over_worlds({s: p for s, (_, p, _) in got.items()}), 2, 'world')} |" if shared else ""))
        print(f"\nrate ratio where the code share first reaches {q:g}: (base + interpolated increase) / base per seed"
              f"\n| run | seeds | base, points | geometric mean [95% CI] | over the worlds' means | ratio of means |"
              f"\n|---|---|---|---|---|---|")
        ratios = {run: {seed: lv / b for seed, (b, lv) in lvs.items()} for run, lvs in levels.items()}
        for run, ratio in ratios.items():
            if not ratio:
                print(f"| {Path(run).name} | 0 | | | | |")
                continue
            b, lv = (sum(x[i] for x in levels[run].values()) / len(ratio) for i in (0, 1))
            logs = [math.log(x) for x in ratio.values()]
            print(f"| {Path(run).name} | {len(ratio)} | {b:.2f} | {geo(logs)} | {geo(logs, [s[0] for s in ratio])} | "
                  f"{lv / b:.2f} |")
        first = ratios[runs[0]]
        if len(runs) > 1:
            print(f"\npaired per seed against {Path(runs[0]).name}: its rate ratio over {Path(runs[0]).name}'s, "
                  f"geometric mean [95% CI]\n| run | seeds in both | ratio of ratios | over the worlds' means |"
                  f"\n|---|---|---|---|")
        for run in runs[1:]:
            both = {s: math.log(r / first[s]) for s, r in ratios[run].items() if s in first}
            print(f"| {Path(run).name} | {len(both)} | " + (f"{geo(list(both.values()))} | "
                  f"{geo(list(both.values()), [s[0] for s in both])} |" if both else "| |"))
        return 0
    if "reference" in opts:
        upto = int(opts.get("upto", 5))
        shared = shares_worlds(runs)
        print(f"deviation from {Path(opts['reference']).name}'s curve (its checkpoints up to step {upto}), points, "
              f"mean [95% CI] over seeds" + (" (and over their worlds' means)" if shared else "") +
              "\n| run | seeds | checkpoints in range | deviation |" + (" over the worlds' means |" if shared else "") +
              "\n|---|---|---|---|" + ("---|" if shared else ""))
        for run in runs:
            dev, used = deviations(run, opts["reference"], upto)
            if not dev:
                sys.exit(f"{run}: no checkpoint of a seed the reference has lies in its code range")
            print(f"| {Path(run).name} | {len(dev)} | {used} | {shown(summarize(list(dev.values())), 2)} |"
                  + (f" {shown(over_worlds(dev), 2, 'world')} |" if shared else ""))
        return 0
    out = opts.get("out")
    curves = {run: curve(run) for run in runs}
    shared = shares_worlds(runs)
    print("| run | step | code misaligned | off-domain increase, points [95% CI] |" +
          (" over the worlds' means |" if shared else "") + "\n|---|---|---|---|" + ("---|" if shared else ""))
    for run, c in curves.items():
        for step, code, inc, inc_worlds in c:
            print(f"| {Path(run).name} | {step} | {code:.3f} | {shown(inc, 1)} |"
                  + (f" {shown(inc_worlds, 1, 'world')} |" if shared else ""))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for run, c in curves.items():
        code = [logit(x) for _, x, _, _ in c]
        mean = [s["mean"] for _, _, s, _ in c]
        line, = ax.plot(code, mean, marker="o", label=Path(run).name)
        band = [s["ci95"] or (s["mean"], s["mean"]) for _, _, s, _ in c]  # one seed: no interval
        ax.fill_between(code, [lo for lo, _ in band], [hi for _, hi in band], alpha=0.15, color=line.get_color())
        for (step, x, s, _) in c:
            ax.annotate(str(step), (logit(x), s["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(logit(0.9), color="grey", lw=0.8, ls=":")
    ticks = [0.1, 0.5, 0.9, 0.99, 0.999]
    ax.set_xticks([logit(q) for q in ticks], [str(q) for q in ticks])
    ax.axhline(5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("insecure code share (log-odds axis); labels: fine-tune step")
    ax.set_ylabel("off-domain misaligned, increase over base (points)")
    ax.set_yscale("symlog", linthresh=5)
    ax.set_ylim(bottom=-1)  # an interval reaching far below zero (a noisy run) would squash the rest
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) if out else Path(runs[0]) / "code_vs_offdomain.png"
    save_figure(fig, path, dpi=130)
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
