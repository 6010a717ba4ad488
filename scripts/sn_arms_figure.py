r"""One figure for arms that come from several finished animal runs of subliminal_numbers (same seeds).

    python scripts/sn_arms_figure.py out/sn_lora_trait:trait out/sn_lora_shuffled:shuffled \
        out/sn_lora_within:shuffled_within --out=figures/subliminal_numbers_lora_order.png

Each argument is RUN:ARM[=LABEL] (LABEL names it in the figure; default ARM, or FOLDER:ARM, FOLDER the run's folder
name, when several runs give that arm without a LABEL); --out=FILE is required.
Left: each arm's final effect (the arm minus its baseline in its own run, paired per seed:
experiments/subliminal_numbers.py BASELINE, `control`, `cross_control` for the arms on the other base, `code_control`
for code; an arm without a trajectory, e.g. icl, is refused), per target animal, mean and 95% t-CI (over the bases'
means where a base has several student seeds: they share the base and its teacher). Right, one panel per
animal: the rate of the teacher's animal along each arm's training from its base, and each run's baseline students
(drawn once when they are the same students).
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import error_bars, group_means, summarize  # noqa: E402
from experiments.subliminal_numbers import BASELINE, ON_B, mode_results  # noqa: E402
from train import check_out, cli, pyplot, run_and_rest, save_figure, script_args  # noqa: E402


def main(argv):
    specs, opts = script_args(argv, __doc__, options=("out",))
    if not specs:
        sys.exit(__doc__)
    if "out" not in opts:
        sys.exit("error: --out=FILE is required: where the figure goes (e.g. --out=figures/arms.png)")
    out = opts["out"]
    check_out(out, figure=True)
    sides, seen = [], {}
    for spec in specs:
        run, arm = run_and_rest(spec)
        arm, _, label = arm.partition("=")
        if not run or not arm:  # (a run without its arm was "no arm ''")
            sys.exit(f"{spec!r}: expected RUN:ARM[=LABEL], e.g. out/sn_lora_trait:trait")
        # the same arm of the same run twice: two identical bars, drawn silently
        if (key := (os.path.realpath(run), arm)) in seen:
            sys.exit(f"{seen[key]} and {spec} are the same arm of the same run: give each RUN:ARM once")
        seen[key] = spec
        res = mode_results(run, "animals", "sn_arms_figure.py")
        drawable = lambda a: (res["arms"][a].get("by_animal") and a in res.get("trajectory", {})
                              and all("effect" in v for v in res["arms"][a]["by_animal"].values()))
        if arm not in res["arms"] or not drawable(arm):  # the list: only those it draws (a baseline has no effect)
            sys.exit(f"{run}: no arm {arm!r} with an effect and a trajectory (those with both: "
                     f"{', '.join(a for a in res['arms'] if drawable(a)) or 'none'})")
        if BASELINE.get(arm, "control") not in res["trajectory"]:
            sys.exit(f"{run}: no trajectory of {arm}'s baseline {BASELINE.get(arm, 'control')}")
        sides.append((run, arm, res, label))
    # the same arm of several runs, unlabelled, drew bars of one name: each is named by its run folder too
    unlabelled = [arm for _, arm, _, label in sides if not label]
    sides = [(run, arm, res, label or (f"{Path(run).name}:{arm}" if unlabelled.count(arm) > 1 else arm))
             for run, arm, res, label in sides]
    if len(names := [name for *_, name in sides]) > len(set(names)):
        sys.exit(f"two bars would have one name ({', '.join(names)}): give each its own, RUN:ARM=LABEL")
    # each effect is within its run: the same seeds in another order compare, other seeds or animals do not
    if len({tuple(sorted(map(tuple, r["seeds"]))) for _, _, r, _ in sides}) > 1:
        sys.exit("the runs have different seeds: " + "; ".join(f"{run}: {sorted(map(tuple, r['seeds']))}"
                                                                for run, _, r, _ in sides))
    if len({tuple(r["animals"]) for _, _, r, _ in sides}) > 1:
        sys.exit(f"the runs have different animals: {', '.join(str(r['animals']) for _, _, r, _ in sides)}")
    plt = pyplot()
    animals = sides[0][2]["animals"]
    fig, axes = plt.subplots(1, 1 + len(animals), figsize=(5 + 4.5 * len(animals), 4))
    w = 0.8 / len(animals)
    bases = [p for p, _ in sides[0][2]["seeds"]]
    shared_bases = len(set(bases)) < len(bases)
    for j, a in enumerate(animals):
        # the students of one base share it and its teacher: the interval over the bases' means where a base has
        # several (the experiment's effect_per_base), over seeds otherwise
        st = [summarize(group_means(r["arms"][arm]["by_animal"][a]["effect"]["per_seed"], [p for p, _ in r["seeds"]])
                        if shared_bases else r["arms"][arm]["by_animal"][a]["effect"]["per_seed"])
              for _, arm, r, _ in sides]
        m = [100 * s["mean"] for s in st]
        axes[0].bar([k + (j - (len(animals) - 1) / 2) * w for k in range(len(sides))], m, w, yerr=error_bars(st, 100),
                    capsize=3,
                    label=f"{a} teacher")
        ax, controls = axes[1 + j], []
        # each arm beside its own baseline, from its own base (the arms on base B start from B, beside cross_control)
        ctl = lambda arm: BASELINE.get(arm, "control")
        start = lambda r, arm: (r.get("base_B", r["base"]) if arm in ON_B else r["base"])[a]["mean"]
        shared = len({json.dumps(r["trajectory"][ctl(arm)][a]) for _, arm, r, _ in sides}) == 1
        for k, (run, arm, r, label) in enumerate(sides):
            c = r["trajectory"][ctl(arm)][a]
            if c not in controls:  # runs with the same baseline students: one line
                controls.append(c)
                ax.plot([0] + [int(s) for s in c], [start(r, arm)] + [v["mean"] for v in c.values()],
                        "--", color="k" if shared else f"C{k}", lw=1,
                        label=ctl(arm) if shared else f"{ctl(arm)} ({label})")
            t = r["trajectory"][arm][a]
            ax.plot([0] + [int(s) for s in t], [start(r, arm)] + [v["mean"] for v in t.values()], "o-", ms=3,
                    color=f"C{k}", label=label)
        ax.set(xlabel="student step", ylabel=f"P({a}) (mean over seeds)", title=f"{a} teacher's students")
        ax.legend(fontsize=8)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(range(len(sides)), [label for *_, label in sides], fontsize=8)
    axes[0].set(ylabel="effect on the teacher's animal, points\n(arm - its baseline, paired)",
                title=(f"n = {len(bases)} seeds over {len(set(bases))} bases, 95% CI over the bases' means"
                       if shared_bases and len(set(bases)) > 1 else "one base: no interval" if shared_bases else
                       f"n = {len(bases)} seeds, 95% CI" if len(bases) > 1 else "one seed: no interval"))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
