"""How reliable one oracle's reading of one base is: runs of configs/activation_oracle.py that differ only in the
oracle's draw (`--oracle_draw`), read together (research log docs/activation_oracle.md, section 14).

    python scripts/ao_draws.py RUN_DIR RUN_DIR [RUN_DIR ...] [--out=FILE.json]

Each run's readings at its report step (results.json's per_model): insecure - secure P(`<evil>`) per base, from the
fine-tuned models' differences to the base (`diff`) and from their raw activations (`model`). The runs must read the
same bases' same fine-tuned models (each model's own shift equal to the bit) and differ in no config key but
`oracle_draw`. Prints and writes (default: draws.json in the first run's directory), for each reading: each draw's
mean over the bases [95% t-interval] and per-base values; the draws' mean per base, with its interval; r1, the
reliability of one oracle's per-base reading, ICC(1) = (MSB - MSW) / (MSB + (k - 1) MSW) over the k draws (one-way,
the bases as groups; a point estimate); k80, how many oracles' mean reaches a reliability of 0.8 (Spearman-Brown:
0.8 (1 - r1) / (0.2 r1), rounded up; none if r1 <= 0); and, within the insecure arm, the Spearman of each draw's
reading (and of the draws' mean) with the models' own shift.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, as train.py's
    commands.starting()
from eval import mean_ci, spearman, summarize  # noqa: E402
from train import check_out, cli, configs_differ, distinct, run_results, script_args, write_json  # noqa: E402

READINGS = ("diff", "model")  # from the differences to the base, from the raw activations


def icc1(x):
    """ICC(1) of x [bases][draws] -> (r1, MSB, MSW): the share of a single draw's variance that is the base's."""
    n, k = len(x), len(x[0])
    grand = sum(map(sum, x)) / (n * k)
    means = [sum(row) / k for row in x]
    msb = k * sum((m - grand) ** 2 for m in means) / (n - 1)
    msw = sum((v - m) ** 2 for row, m in zip(x, means) for v in row) / (n * (k - 1))
    total = msb + (k - 1) * msw
    return ((msb - msw) / total if total > 0 else float("nan")), msb, msw


def oracles_for(r1, target=0.8):
    """Spearman-Brown: how many draws' mean reaches reliability `target`, at least one (None: r1 <= 0, or undefined)."""
    return max(1, math.ceil(target * (1 - r1) / ((1 - target) * r1) - 1e-9)) if r1 > 0 else None


def per_model(run):
    """{(seed, arm): row} of a finished oracle run, and its seeds in order."""
    res = run_results(run, "activation_oracle")
    if not isinstance(res.get("per_model"), list):
        sys.exit(f"{run}: its results.json has no per_model readings (a run of an older version): rerun it")
    rows = {(r["seed"], r["arm"]): r for r in res["per_model"]}
    return rows, sorted({s for s, _ in rows})


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("out",))
    if not runs:
        sys.exit(__doc__)
    if len(runs) < 2:
        sys.exit(f"error: at least two runs (draws), not {len(runs)}: python scripts/ao_draws.py RUN_DIR RUN_DIR ...")
    distinct(runs)
    out = opts.get("out") or str(Path(runs[0]) / "draws.json")
    check_out(out)
    if other := [k for k in configs_differ(runs) if k != "oracle_draw"]:
        sys.exit(f"the runs differ in {', '.join(other)}, not only in oracle_draw: they are not draws of one oracle")
    read = [per_model(r) for r in runs]
    seeds = read[0][1]
    for run, (rows, s) in zip(runs, read):
        if s != seeds or any((p, a) not in rows for p in s for a in ("insecure", "secure")):
            sys.exit(f"{run}: bases {s} (insecure and secure read on each) against {runs[0]}'s {seeds}")
        if any(rows[k]["shift"] != read[0][0][k]["shift"] for k in rows if k in read[0][0]):
            sys.exit(f"{run}: its fine-tuned models are not {runs[0]}'s (their shifts differ): other bases or recipes")
    shift = [read[0][0][(p, "insecure")]["shift"] for p in seeds]
    report = {"runs": list(runs), "seeds": seeds}
    lines = [f"{len(runs)} oracle draws x {len(seeds)} bases; insecure - secure P(<evil>), per base"]
    for src in READINGS:
        x = [[rows[(p, "insecure")][src] - rows[(p, "secure")][src] for rows, _ in read] for p in seeds]
        r1, msb, msw = icc1(x)
        k80 = oracles_for(r1)
        draws = [summarize([row[j] for row in x]) for j in range(len(runs))]
        mean = summarize([sum(row) / len(row) for row in x])
        within = [spearman([rows[(p, "insecure")][src] for p in seeds], shift) for rows, _ in read]
        within_mean = spearman([sum(rows[(p, "insecure")][src] for rows, _ in read) / len(read) for p in seeds], shift)
        report[src] = {"draws": draws, "mean_of_draws": mean, "r1": r1, "msb": msb, "msw": msw, "k80": k80,
                       "within_insecure_spearman": within, "within_insecure_spearman_mean": within_mean}
        lines.append(f"\n[{'from the differences' if src == 'diff' else 'from the raw activations'}]")
        for run, st in zip(runs, draws):
            lines.append(f"{run}: {mean_ci(st)}; per base " + ", ".join(f"{v:.2f}" for v in st["per_seed"]))
        lines.append(f"the draws' mean: {mean_ci(mean)}; per base " + ", ".join(f"{v:.2f}" for v in mean["per_seed"]))
        lines.append(f"r1 = {r1:.3f} (MSB {msb:.4f}, MSW {msw:.4f}); k80 = {k80 if k80 is not None else 'none'}")
        lines.append("within the insecure arm, Spearman with the models' own shift: " +
                     ", ".join(f"{w:+.2f}" for w in within) + f"; the draws' mean {within_mean:+.2f}")
    print("\n".join(lines))
    write_json(out, report)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
