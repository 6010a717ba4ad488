"""Compare one arm's effect across two finished animal runs of subliminal_numbers, paired per seed.

    python scripts/sn_compare.py out/sn_lora_trait:trait out/sn_lora_within:shuffled_within
    python scripts/sn_compare.py out/sn_lora_trait16k:trait out/sn_lora_trait:trait@750   # a checkpoint (step)
    python scripts/sn_compare.py --transfer out/sn_stoptrain_s70:soft out/sn_stopheld_s70:soft

Each side is RUN:ARM, optionally @STEP for the arm (and its baseline) at that checkpoint of their trajectory
instead of the final one. The effect is the arm minus its baseline as the run computes it (`control`;
`cross_control` for the arms on the other base, `icl_control`, `code_control`), per seed; the two runs must have the
same seeds (pretraining seed x student seed; paired by seed, in any order). Prints, per target animal: each side's
effect and its final students' animal mass, the paired difference of the effects (mean, 95% t-CI over seeds, and where
a base has several student seeds over the bases' means: its students share the base and teacher), and whether the
two baselines are the same students (identical rates: the difference is the arms' own) or other ones: by how much, and
why (other baseline arms or checkpoints, or the config keys in which the runs differ).
--transfer divides each seed's effect by its teacher's shift, the teacher's rate of its animal minus its base's: the
share of the teacher's trait that reached the student, to compare runs whose teachers differ in strength.
"""
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import group_means, summarize  # noqa: E402
from experiments.subliminal_numbers import BASELINE, mode_results  # noqa: E402
from train import cli, configs_differ, run_and_rest, script_args  # noqa: E402


def side(spec):
    run, arm = run_and_rest(spec)
    arm, at, step = arm.partition("@")
    if not arm or at and not step:  # (RUN:ARM@ was read as the final students, silently)
        sys.exit(f"{spec!r}: expected RUN:ARM[@STEP] with RUN a finished run folder (holding results.json)")
    res = mode_results(run, "animals", "sn_compare.py")
    if arm not in res.get("arms", {}) or BASELINE.get(arm, "control") not in res["arms"]:
        sys.exit(f"{run} has no arm {arm!r} with its baseline (arms: {', '.join(res.get('arms', {}))})")
    if arm in set(BASELINE.values()) - {"control"}:  # its "effect" over control would be a gap between baselines
        of = ", ".join(a for a, b in BASELINE.items() if b == arm)
        sys.exit(f"{spec}: {arm} is the baseline of {of}, with no effect of its own in the run: compare those arms")
    # a run's last checkpoint is its final students (evals' last is the end): RUN:ARM@LAST is RUN:ARM, and the two
    # compared were "other checkpoints" with a difference of exactly 0
    # (the arm's and its baseline's rates there the final ones: a fake run's lone checkpoint is not the end)
    final = lambda name: all(step in t and step == max(t, key=int) and t[step]["per_seed"] ==
                             res["arms"][name]["by_animal"][a]["target_rate"]["per_seed"]
                             for a, t in res.get("trajectory", {}).get(name, {"": {}}).items())
    if step and final(arm) and final(BASELINE.get(arm, "control")):
        step = ""
    return run, arm, step, res


def rates(res, arm, a, step, run=""):
    """{seed: rate of animal a} for the arm's students trained on teacher a (or the shared control)."""
    if not step:
        v = res["arms"][arm]["by_animal"][a]["target_rate"]["per_seed"]
    else:
        traj = res.get("trajectory", {}).get(arm, {}).get(a, {})
        if step not in traj:  # which run's: the two sides may be two runs
            sys.exit(f"{run}: no checkpoint {step} for {arm} (has: {', '.join(traj) or 'none'}): give RUN:ARM@STEP "
                     f"with one of those, or RUN:ARM for the final students")
        v = traj[step]["per_seed"]
    return dict(zip(map(tuple, res["seeds"]), v))


def teacher_shift(res, animal, seeds, run):
    """[the teacher's rate of `animal` minus its base's, per seed in `seeds`]: what --transfer divides by."""
    t, base = res.get("teachers", {}).get(animal, {}).get("rate"), res.get("base", {}).get(animal)
    if t is None or base is None:
        sys.exit(f"{run}: results.json has no teacher and base rates of {animal}: --transfer needs them")
    shift = {tuple(k): x - y for k, x, y in zip(res["seeds"], t["per_seed"], base["per_seed"])}
    if bad := [k for k in seeds if not shift[k] > 0]:  # a share of nothing, or of a move the other way
        sys.exit(f"{run}: the {animal} teacher is not above its base on seeds {bad}: no share of its shift to read")
    return [shift[k] for k in seeds]


def baselines(animal, side_a, side_b, seeds, mass):
    """Whether the two effects are over the same baseline students (identical rates: the difference is the arms'
    own), or over other students: on how many seeds, by how much, and why (other baseline arms, checkpoints or
    configs)."""
    (ra, base_a, step_a, a), (rb, base_b, step_b, b) = side_a, side_b
    ctl_a, ctl_b = rates(a, base_a, animal, step_a, ra), rates(b, base_b, animal, step_b, rb)
    names = f"{ra}:{base_a}{'@' + step_a if step_a else ''} and {rb}:{base_b}{'@' + step_b if step_b else ''}"
    if (base_a, step_a) == (base_b, step_b) and ctl_a == ctl_b:  # (other arms or checkpoints are other students)
        return f"baselines {names}: the same students (identical rates on every seed; {mass}): the difference is the " \
               f"arms' own"
    why = []
    if base_a != base_b:
        why.append(f"other baseline arms, {base_a} and {base_b}")
    if step_a != step_b:
        why.append(f"other checkpoints, {step_a or 'the end'} and {step_b or 'the end'}")
    if Path(ra).resolve() != Path(rb).resolve():
        keys = configs_differ([ra, rb])
        agree = "the runs' configs agree in every key that shapes a student"
        why.append(f"the runs' configs differ in {', '.join(keys)}" if keys else
                   agree if why else f"{agree}, so other machines or code versions")  # (with why: the reason given)
    d = 100 * summarize([ctl_a[k] - ctl_b[k] for k in seeds])["mean"]
    return (f"baselines {names}: other students ({'; '.join(why)}), the first's rate {d:+.1f} points over the "
            f"second's on average, unequal on {sum(ctl_a[k] != ctl_b[k] for k in seeds)}/{len(seeds)} seeds ({mass}); "
            f"each effect is over its own baseline, so the difference is the arms' rates' difference less the "
            f"baselines' {d:+.1f}: a difference of effects. For the arms' rates alone compare arms over the same "
            f"baseline students (one run, or runs that differ only in arms)")


def main(argv):
    argv, opts = script_args(argv, __doc__, flags=("transfer",))
    if not argv:
        sys.exit(__doc__)
    if len(argv) != 2:  # one error line, as every script's (the usage alone is for no arguments)
        sys.exit(f"error: two sides, not {len(argv)}: python scripts/sn_compare.py RUN:ARM[@STEP] RUN:ARM[@STEP]")
    (ra, arm_a, step_a, a), (rb, arm_b, step_b, b) = side(argv[0]), side(argv[1])
    if (Path(ra).resolve(), arm_a, step_a) == (Path(rb).resolve(), arm_b, step_b):  # a difference of exactly zero
        sys.exit(f"both sides are {argv[0]}: compare two arms, runs or checkpoints")
    seeds = sorted(map(tuple, a["seeds"]))
    if seeds != sorted(map(tuple, b["seeds"])):
        sys.exit(f"the runs have different seeds ({a['seeds']} vs {b['seeds']}): no pairing")
    # the arms on base B against B's control, icl and code against theirs: A's control would add the bases' gap
    base_a, base_b = BASELINE.get(arm_a, "control"), BASELINE.get(arm_b, "control")
    shared = [x for x in a["animals"] if x in b["animals"]]
    if not shared:  # nothing to compare: the table would be its header alone
        sys.exit(f"the two sides measure no animal in common ({', '.join(a['animals'])} vs {', '.join(b['animals'])})")
    # printed once every number is read: a checkpoint a side lacks is refused before the header, not after it
    transfer = opts.get("transfer", False)
    scale, digits = (1, 3) if transfer else (100, 1)  # a share, or points
    show = lambda v: f"{scale * v:+.{digits}f}"
    lines = [f"n = {len(seeds)} seeds; effect = arm - {base_a if base_a == base_b else 'its baseline'}, paired per "
             f"seed; " + ("transfer: each effect over its teacher's shift above its base (a share)" if transfer
                          else "points")]
    if left := [x for x in a["animals"] + b["animals"] if x not in shared]:
        lines.append(f"(measured on one side only, left out: {', '.join(left)})")
    for animal in shared:
        eff = []
        for run, res, arm, step, base in ((ra, a, arm_a, step_a, base_a), (rb, b, arm_b, step_b, base_b)):
            arm_r, ctl = rates(res, arm, animal, step, run), rates(res, base, animal, step, run)
            eff.append([arm_r[k] - ctl[k] for k in seeds])
            if transfer:
                eff[-1] = [e / t for e, t in zip(eff[-1], teacher_shift(res, animal, seeds, run))]
        diff = summarize([x - y for x, y in zip(*eff)])
        final = lambda step: "final students' " if step else ""  # the mass is kept for the final students only
        def mass(res, arm):  # icl has none (its students are prompts, not fine-tunes)
            m = res["arms"][arm]["by_animal"][animal].get("animal_mass", {}).get("mean", float("nan"))
            return "n/a" if math.isnan(m) else f"{m:.2f}"
        ea, eb = summarize(eff[0]), summarize(eff[1])
        ci = ("[one seed: no interval]" if diff["ci95"] is None
              else "[{}, {}]".format(*map(show, diff["ci95"])))
        # the students of one base share it and its teacher: not independent, so the interval over the bases' means
        # beside the one over seeds (the experiment's effect_per_base)
        bases = [p for p, _ in seeds]
        per_base = summarize(group_means(diff["per_seed"], bases))
        over_bases = ("" if len(set(bases)) == len(bases) else "; one base: no interval over bases"
                      if per_base["ci95"] is None else "; over the {} bases' means [{}, {}]".format(
                          len(set(bases)), *map(show, per_base["ci95"])))
        lines.append(f"{animal}: {ra}:{arm_a}{'@' + step_a if step_a else ''} {show(ea['mean'])} "
                     f"({final(step_a)}animal mass {mass(a, arm_a)}) minus "
                     f"{rb}:{arm_b}{'@' + step_b if step_b else ''} "
                     f"{show(eb['mean'])} ({final(step_b)}mass {mass(b, arm_b)}) = {show(diff['mean'])} "
                     f"{ci}; {sum(d > 0 for d in diff['per_seed'])}/{len(diff['per_seed'])} seeds positive{over_bases}")
        lines.append("  " + baselines(animal, (ra, base_a, step_a, a), (rb, base_b, step_b, b), seeds,
                                      f"{final(step_a or step_b)}mass {mass(a, base_a)} / {mass(b, base_b)}"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
