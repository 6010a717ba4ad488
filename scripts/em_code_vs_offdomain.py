"""The insecure arm's off-domain misalignment against its in-domain learning, checkpoint by checkpoint, for EM runs.

    python scripts/em_code_vs_offdomain.py RUN_DIR [RUN_DIR ...] [--out=FILE.png]

The issue compares arms "at matched in-domain learning". Runs that learn the code at different speeds (another lr,
schedule or optimizer) reach the first checkpoint with code >= 0.9 at different steps, and on a coarse grid of
checkpoints that checkpoint sits at different code levels. Plotting each run's off-domain increase against its own
insecure code share, one point per checkpoint, compares them at equal code instead of at equal step. Per run and
checkpoint: the mean insecure code share (log-prob; drawn on a log-odds axis) and the mean paired increase of off-domain sampled misalignment
over the base, in points, with its 95% t-interval over seeds. Prints a table; writes the figure (default: beside
the first run, code_vs_offdomain.png)."""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval import summarize  # noqa: E402


def curve(run):
    """[(step, mean code share, STAT of the off-domain increase in points)] of the run's insecure arm."""
    r = json.loads((Path(run) / "results.json").read_text())
    base = r["base"]["plain"]["offdomain_misaligned"]["per_seed"]
    out = []
    for step, at in sorted(r["trajectory"]["insecure"].items(), key=lambda kv: int(kv[0])):
        code = at["code_misaligned"]["per_seed"]
        inc = [100 * (a - b) for a, b in zip(at["offdomain_misaligned"]["per_seed"], base)]
        out.append((int(step), sum(code) / len(code), summarize(inc)))
    return out


def main(argv):
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("--out=")), None)
    runs = [a for a in argv if not a.startswith("--")]
    if not runs or len(runs) + (out is not None) != len(argv):
        sys.exit(__doc__)
    missing = [r for r in runs if not (Path(r) / "results.json").is_file()]
    if missing:
        sys.exit(f"no results.json in {', '.join(missing)}: give finished EM run directories")
    curves = {run: curve(run) for run in runs}
    print("| run | step | code misaligned | off-domain increase, points [95% CI] |\n|---|---|---|---|")
    for run, c in curves.items():
        for step, code, inc in c:
            print(f"| {Path(run).name} | {step} | {code:.3f} | {inc['mean']:+.1f} [{inc['ci95'][0]:+.1f}, "
                  f"{inc['ci95'][1]:+.1f}] |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    logit = lambda q: math.log(min(q, 1 - 1e-4) / max(1 - q, 1e-4))  # spreads out the code shares near 1
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for run, c in curves.items():
        code = [logit(x) for _, x, _ in c]
        mean = [s["mean"] for *_, s in c]
        line, = ax.plot(code, mean, marker="o", label=Path(run).name)
        ax.fill_between(code, [s["ci95"][0] for *_, s in c], [s["ci95"][1] for *_, s in c], alpha=0.15,
                        color=line.get_color())
        for (step, x, s) in c:
            ax.annotate(str(step), (logit(x), s["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(logit(0.9), color="grey", lw=0.8, ls=":")
    ticks = [0.1, 0.5, 0.9, 0.99, 0.999]
    ax.set_xticks([logit(q) for q in ticks], [str(q) for q in ticks])
    ax.axhline(5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("insecure code share (log-odds axis); labels: fine-tune step")
    ax.set_ylabel("off-domain misaligned, increase over base (points)")
    ax.set_yscale("symlog", linthresh=5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) if out else Path(runs[0]) / "code_vs_offdomain.png"
    fig.savefig(path, dpi=130)
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
