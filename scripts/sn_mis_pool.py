"""Pool finished misalignment-through-numbers runs (one student per base) into one table over all their bases.

    python scripts/sn_mis_pool.py out/sn_mis087 out/sn_mis087_rep                 # 4k lists: soft and sampled
    python scripts/sn_mis_pool.py --lists=16000 out/sn_mis_dose16k out/sn_mis_dose64k
    python scripts/sn_mis_pool.py out/sn_mis_blocks --minus out/sn_mis_blocks_all   # paired across two runs
    python scripts/sn_mis_pool.py --bases=30-41 out/sn_mis_more18                   # a subset of the bases
    python scripts/sn_mis_pool.py --log --figure=f.png out/sn_mis_fresh16           # geometric means, a figure

Without --lists it reads each run's final students (`arms`); with it, the students after that many lists (`dose`,
runs made with --evals > 1). Runs must not share a base: pooled seeds are then independent. Prints the
students' off-domain misalignment (unpaired 95% t-CIs, the issue's "CIs separated"), their valid fractions, and
the insecure teacher's students minus the control's and the secure and educational teachers' students of the same
channel (sampled against sampled, soft against soft), paired per base. With --minus (not with --log or --figure=),
instead: each student
of the runs before it minus the same student of the runs after it (the same bases, e.g. the same teachers with
another student setting), paired per base; a student on one side only is named and left out, and sides whose
students are all the same (every difference exactly 0: runs that differ only in arms) are refused.
--bases=A-B,C,... keeps only those pretraining seeds (a descriptive split, e.g. old and new bases of one run).
--log reads the misaligned fractions on the log scale: t-intervals of each base's log fraction (a fraction of 0
counts as half a sample of that student's valid samples), shown as geometric means, and paired differences as
ratios; rates that differ by factors between bases (the student's gain scales with its teacher's misalignment) are
skewed on the plain scale. --figure=PATH draws every base's students with the means and intervals on that scale,
and each teacher's students against the teacher's own misalignment.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import mean_ci, summarize  # noqa: E402
from experiments.subliminal_numbers import mode_results  # noqa: E402
from train import (NOT_MODELS, check_out, cli, configs_differ, distinct, pyplot, read_json, save_figure,  # noqa: E402
                   script_args)


METRICS = ("offdomain_misaligned", "valid_fraction")
LP = ("offdomain_misaligned_lp",)  # final students only (the dose points keep none)


def log_rate(rate, valid, n_samples):
    """ln of a misaligned fraction among valid samples; 0 becomes half a sample over the valid ones (valid: the
    valid fraction of n_samples draws). NaN (no valid sample) stays NaN."""
    if rate != rate:
        return rate
    return math.log(max(rate, 0.5 / max(valid * n_samples, 1)))


def students(res, lists, run="this run"):
    """{student: {"offdomain_misaligned": per_seed, "valid_fraction": per_seed}} of one run, and its seeds."""
    if lists is None:  # (and the log-prob reading, where kept: whether two runs' students are the same ones)
        src = {k: {m: v[m]["per_seed"] for m in METRICS + tuple(m for m in LP if m in v)}
               for k, v in res["arms"].items()}
    else:
        if str(lists) not in res.get("dose", {}):  # which run: the others may have it
            sys.exit(f"no students after {lists} lists in {run} (has: {sorted(res.get('dose', {}), key=int)}): give "
                     f"--lists= one of those, or leave it out for the final students")
        d = res["dose"][str(lists)]
        src = {k: {m: d[m][k]["per_seed"] for m in METRICS} for k in d["offdomain_misaligned"]}
    return src, [tuple(s) for s in res["seeds"]]


def parse_bases(spec):
    """"24-29,31" -> [(24, 29), (31, 31)], inclusive ranges (not the set of their seeds: --bases=0-99999999999 was
    a set of 1e11 ints, out of memory)"""
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdecimal() or (hi and not hi.isdecimal()) or int(hi or lo) < int(lo):
            sys.exit(f"--bases={spec!r}: expected comma-separated seeds or increasing ranges, e.g. --bases=24-29,31")
        out.append((int(lo), int(hi or lo)))
    return out


def main(argv):
    # options anywhere, in any order: a --figure= after the runs was once read as a run directory
    argv, opts = script_args(argv, __doc__, options=("bases", "lists", "figure"), flags=("log",), words=("--minus",))
    log, figure = opts.get("log", False), opts.get("figure")
    if figure:
        check_out(figure, "--figure", figure=True)
    keep = parse_bases(opts["bases"]) if "bases" in opts else None
    if "lists" in opts and not opts["lists"].isdecimal():
        sys.exit(f"--lists={opts['lists']}: expected a number of lists, e.g. --lists=16000")
    lists = int(opts["lists"]) if "lists" in opts else None
    if not argv:
        sys.exit(__doc__)
    distinct([a for a in argv if a != "--minus"])  # a run on both sides of --minus, too
    if "--minus" in argv:
        if log or figure:  # (a --figure= here was parsed, then nothing was drawn)
            sys.exit(f"{'--log' if log else '--figure='} with --minus is not supported: it is for one pooled set of "
                     f"students")
        i = argv.index("--minus")
        if not argv[:i] or not argv[i + 1:]:  # (it said "pooling needs at least two bases;  hold none")
            sys.exit("--minus needs runs on both sides: RUN_DIR ... --minus RUN_DIR ...")
        if "--minus" in argv[i + 1:]:  # (the second was read as a run: "--minus: no such directory")
            sys.exit("--minus is given once, its runs after it: RUN_DIR ... --minus RUN_DIR ...")
        return minus(pool(argv[:i], lists, keep), pool(argv[i + 1:], lists, keep))
    pooled, teachers, bases, base_valid = pool(argv, lists, keep, log)
    n = len(bases)  # (pool refuses fewer than two)
    print(f"n = {n} bases {sorted(bases)}; " + (f"after {lists} lists" if lists else "final students")
          + ("; log scale: geometric means, paired ratios" if log else ""))
    show = math.exp if log else (lambda x: x)  # a log-scale mean or CI end, shown back on the fraction scale
    half = summarize(base_valid)["mean"] / 2
    print(f"base valid fraction {2 * half:.3f}; a student below {half:.3f} (half of it) is not readable")
    print(f"{'student':22s} {'off-domain misaligned [95% CI]':34s} {'valid fraction':14s}")
    if log:
        print("(geometric means over the bases)")
    mis = {k: summarize(v["offdomain_misaligned"]) for k, v in pooled.items()}  # unpaired, per student
    for k, v in pooled.items():
        st = mis[k]
        valid = summarize(v["valid_fraction"])["mean"]
        print(f"{k:22s} {mean_ci(st, show=lambda x: f'{show(x):.4f}'):34s} "
              f"{valid:.3f}{'  (below half the base: not readable)' if valid < half else ''}")
    for channel in ("", "_soft"):  # sampled, soft: each against the control and the same channel's students
        ins = "insecure" + channel
        if ins not in pooled:
            continue
        others = ["control"] + [t + channel for t in ("secure", "educational") if t + channel in pooled]
        for o in others:
            d = summarize([a - b for a, b in zip(pooled[ins]["offdomain_misaligned"],
                                                 pooled[o]["offdomain_misaligned"])])
            # a difference of logs is the log of a ratio
            paired = mean_ci(d, show=lambda x: f"x{math.exp(x):.2f}") if log else mean_ci(d, 1, 100) + " points"
            if mis[ins]["ci95"] is None or mis[o]["ci95"] is None:  # a student defined on one base only
                unpaired = "undefined"
            else:
                lo, hi = mis[ins]["ci95"][0], mis[o]["ci95"][1]
                unpaired = f"{'separated' if lo > hi else 'overlap'} ({show(lo):.5f} vs {show(hi):.5f})"
            print(f"{ins} {'/' if log else '-'} {o}: paired {paired}; unpaired CIs {unpaired}")
    if figure and not any(math.isfinite(x) for v in pooled.values() for x in v["offdomain_misaligned"]):
        print(f"no figure: no student has a valid sample on any base ({figure} not written)")
    elif figure:
        plot(pooled, teachers, mis, bases, log, lists, figure)


def plot(pooled, teachers, mis, bases, log, lists, path):
    """Left: every base's students (dots) with the mean and 95% CI; right: each teacher's students against the
    teacher's own off-domain misalignment, one dot per base (teachers: what the runs recorded)."""
    plt = pyplot()
    show = math.exp if log else (lambda x: x)
    names = list(pooled)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for i, k in enumerate(names):
        xs = pooled[k]["offdomain_misaligned"]
        ax.scatter([i + 0.25 * ((j % 5) - 2) / 2 for j in range(len(xs))], [show(x) for x in xs], s=10, alpha=0.6,
                   color=f"C{i}")
        st = mis[k]
        ci = st["ci95"]  # one defined base: the mean alone, no bar (one of zero length would read as exact)
        ax.errorbar([i], [show(st["mean"])], fmt="s", color="k", capsize=4,
                    yerr=[[show(st["mean"]) - show(ci[0])], [show(ci[1]) - show(st["mean"])]] if ci else None)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel("off-domain misaligned among valid")
    ax.set_title(f"n = {len(bases)} bases; {'geometric mean' if log else 'mean'} and 95% t-CI"
                 + (f", after {lists} lists" if lists else ""), fontsize=9)
    if log:
        ax.set_yscale("log")
    for i, k in enumerate(names):
        t = k.removesuffix("_soft")
        if t in teachers:
            tx, sx = teachers[t]["offdomain_misaligned"], pooled[k]["offdomain_misaligned"]
            bx.scatter([show(x) for x in tx], [show(x) for x in sx], s=14, color=f"C{i}", label=f"{k} (its teacher)")
    if log:  # (a panel of undefined rates alone draws on it too: matplotlib 3.7 and 3.11)
        bx.set_xscale("log")
        bx.set_yscale("log")
    if bx.collections:  # runs without teachers' rates leave this panel empty
        bx.axline((0.01, 0.01), (0.1, 0.1), color="grey", ls="--", lw=0.8, label="student = teacher")
        bx.legend(fontsize=7)
    bx.set_xlabel("the teacher's off-domain misaligned")
    bx.set_ylabel("its student's")
    bx.set_title("student against teacher, per base", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    print(f"wrote {path}")


def pool(runs, lists, keep=None, log=False):
    """The students of several runs (no base twice) that every run has: ({student: {metric: per_base}}, the same for
    the teachers' own rates (for the figure), bases, the bases' valid fractions); with `keep`, only the bases
    (pretraining seeds) in it; with `log`, the misaligned fractions as log_rate."""
    pooled, teachers, bases, base_valid, every = {}, {}, [], [], set()
    differ = configs_differ(runs, NOT_MODELS + ("seeds",)) if len(runs) > 1 else []  # pooled as one run: said
    if differ:  # where they were trained otherwise
        print(f"note: the runs pooled differ in {', '.join(differ)}")
    for run in runs:
        res = mode_results(run, "misalignment", "sn_mis_pool.py")
        src, seeds = students(res, lists, run)
        tsrc = {t: {m: v[m]["per_seed"] for m in METRICS} for t, v in res.get("teachers", {}).items()
                if all(m in v for m in METRICS)}
        every |= {p for p, _ in seeds}
        rows = [i for i, (p, _) in enumerate(seeds) if keep is None or any(lo <= p <= hi for lo, hi in keep)]
        pick = lambda xs: [xs[i] for i in rows]
        n_samples = n_offdomain_samples(run) if log else None
        for group, into in ((src, pooled), (tsrc, teachers)):  # students and teachers: the same bases, same scale
            for k, v in group.items():
                v = {m: pick(xs) for m, xs in v.items()}
                if log:
                    v["offdomain_misaligned"] = [log_rate(r, f, n_samples) for r, f in
                                                 zip(v["offdomain_misaligned"], v["valid_fraction"])]
                for m, xs in v.items():
                    into.setdefault(k, {}).setdefault(m, []).extend(xs)
        seeds = pick(seeds)
        base_valid += pick(res["base"]["valid_fraction"]["per_seed"])
        if len({p for p, _ in seeds}) != len(seeds):
            sys.exit(f"{run} has several students per base: pool runs with one student per base")
        bases += [p for p, _ in seeds]
    # an entry of --bases that names no base of the runs (a typo: 40 for 4) was dropped without a word
    if keep is not None and bases and (none := [(lo, hi) for lo, hi in keep if not any(lo <= p <= hi for p in every)]):
        sys.exit(f"--bases: {', '.join(str(lo) if lo == hi else f'{lo}-{hi}' for lo, hi in none)} names no base of "
                 f"the runs (theirs: {sorted(every)})")
    if len(bases) < 2:  # every number below is a mean with its interval over the bases
        sys.exit(f"pooling needs at least two bases; {', '.join(map(str, runs))} hold{'s' if len(runs) == 1 else ''} "
                 f"{len(bases) or 'none'}{' of those --bases asks for' if keep is not None else ''}")
    if len(set(bases)) != len(bases):
        sys.exit(f"the runs share bases {sorted({p for p in bases if bases.count(p) > 1})}: "
                 "pooled seeds would not be independent")
    # a student missing from some run has fewer values than bases: pairing it by position would mix bases
    complete = lambda d: {k: v for k, v in d.items() if all(len(xs) == len(bases) for xs in v.values())}
    ok = complete(pooled)
    if len(ok) < len(pooled):
        print(f"left out (not in every run): {sorted(set(pooled) - set(ok))}")
    return ok, complete(teachers), bases, base_valid


def n_offdomain_samples(run):
    """How many off-domain samples a run drew per model: its `samples` per prompt times the world's prompts."""
    from data import world as W
    # (a config.json without "samples", another experiment's, was a bare KeyError)
    cfg = read_json(os.path.join(run, "config.json"), "a subliminal-numbers run's config (--log needs its samples "
                    "per prompt)", keys=("samples",))
    return cfg["samples"] * len(W.eval_items(W.OFF_DOMAINS))


def minus(a, b):
    """Each student present in both sets of runs: a minus b, paired per base (the bases must be the same)."""
    (pa, _, ba, _), (pb, _, bb, _) = a, b
    if sorted(ba) != sorted(bb):
        sys.exit(f"--minus needs the same bases on both sides; got {sorted(ba)} and {sorted(bb)}")
    order = [bb.index(p) for p in ba]  # b's rows in a's base order
    both, one_side = [k for k in pa if k in pb], sorted(set(pa) ^ set(pb))
    if not both:
        sys.exit(f"--minus: no student is on both sides ({', '.join(pa)} before it, {', '.join(pb)} after it)")
    # runs that differ only in which students they train (arms, mis_sampled) share the others bit for bit: each
    # difference is exactly 0 (NaN on both sides: no valid answer on either)
    # (the sampled rates are counts, which few samples can tie: the log-prob reading too, where both sides keep it)
    read = lambda k: METRICS + tuple(m for m in LP if m in pa[k] and m in pb[k])
    same = {k: all(x == y or x != x and y != y for m in read(k) for x, y in zip(pa[k][m], (pb[k][m][j] for j in order)))
            for k in both}
    if all(same.values()):
        sys.exit(f"--minus: {', '.join(both)} are the same students on both sides (every difference exactly 0 on every "
                 f"base)" + (f", and {', '.join(one_side)} on one side only" if one_side else "") + ": the runs "
                 "trained them alike (they differ at most in which students they train, e.g. arms); compare runs "
                 "that train them differently (e.g. student_trains), or pool one run without --minus to set its "
                 "students against each other")
    print(f"n = {len(ba)} bases {sorted(ba)}; paired per base, the runs before --minus minus those after it")
    if one_side:
        print(f"left out (on one side of --minus only): {one_side}")
    for k in both:
        if same[k]:
            print(f"{k:22s} the same students on both sides: every difference exactly 0")
            continue
        for m in METRICS:
            d = summarize([x - pb[k][m][j] for x, j in zip(pa[k][m], order)])
            print(f"{k:22s} {m:20s} {mean_ci(d, 1, 100)} points")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
