r"""The figure of the code-direction measurements: what restoring each direction removes, and the clamped fine-tune.

    python scripts/em_mechanism_figure.py [--out=FILE.png] DIR_RUN ... [-- CLAMP_RUN ...]
        (default --out: code_direction.png in the current directory)

    python scripts/em_mechanism_figure.py --out=figures/emergent_misalignment_code_direction.png \
        out/em_tasks7_lessons_7982 out/em_tasks7_nolessons_prereg -- out/em_tasks7_lessons_7982 out/em_tasks7_8390

Runs before `--` give their code_direction.json (scripts/em_code_direction.py): per run, bars of the share of the
unseen task's and of the off-domain increase that restoring each direction removes, at the matched checkpoint.
Runs after it give their clamp_finetune.json (scripts/em_clamp_finetune.py), pooled per seed: seen-task code and
off-domain sampled misalignment along the fine-tune, unclamped / clamped / random clamp, mean and 95% CI.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
from eval import summarize  # noqa: E402
from train import (ConfigError, check_out, cli, distinct, pyplot, read_json, run_config, save_figure,  # noqa: E402
                   script_args)
from experiments import emergent_misalignment as EM  # noqa: E402

DIRS = ("code", "evil", "random", "context", "lesson")
ARMS = {"unclamped": "black", "clamped": "tab:red", "random_clamped": "tab:gray"}


def removed_shares(s):
    """One run's bars from its code_direction.json summary at the matched checkpoint: {"unseen": [...],
    "offdomain": [...]}, per direction in DIRS the share of the insecure arm's increase over the base that
    restoring that direction removes."""
    gain = lambda name: s[f"{name}_insecure"]["mean"] - s[f"{name}_base"]["mean"]
    removed = lambda name, v: ((s[f"{name}_insecure"]["mean"] - s[f"{name}_{v}_restored"]["mean"]) / gain(name)
                               if gain(name) > 1e-9 else math.nan)  # no increase (or a fall): no share of it
    return {name: [removed(name, v) for v in DIRS] for name in ("unseen", "offdomain")}


def read(run, name, script):
    """RUN/NAME as JSON, or a one-line error naming the script that writes it."""
    path = Path(run) / name
    if not Path(run).is_dir():
        what = "is a file, not a run's directory" if Path(run).exists() else "no such directory"
        raise ConfigError(f"{run}: {what}")
    if not path.is_file():
        try:  # a run those scripts refuse (no unseen coding task): pointing the user to them would lead nowhere
            cfg = run_config(EM.Config, run)
            unseen = cfg.code_tasks > 1 and 0 < cfg.ft_code_tasks < cfg.code_tasks
        except ConfigError:  # no readable EM config: the plain message
            unseen = True
        if not unseen:
            raise ConfigError(f"{path} not found, and scripts/{script} measures only runs with an unseen coding task "
                              f"(code_tasks > 1 and 0 < ft_code_tasks < code_tasks); {run} has code_tasks="
                              f"{cfg.code_tasks}, ft_code_tasks={cfg.ft_code_tasks}: give a seven-task run")
        raise ConfigError(f"{path} not found: {run} needs {name}, which scripts/{script} writes in a run's directory")
    return read_json(path, f"the {name} that scripts/{script} writes")


def main(argv):
    """Draws the figure; returns the plotted bars, {direction run: removed_shares(...)}."""
    rest, opts = script_args(argv, __doc__, options=("out",), words=("--",))
    out = Path(opts.get("out", "code_direction.png"))
    split = rest.index("--") if "--" in rest else len(rest)
    direction_runs, clamp_runs = rest[:split], rest[split + 1:]
    if not direction_runs and not clamp_runs:
        sys.exit(__doc__)  # nothing to draw
    if "--" in clamp_runs:  # (it printed the usage alone, as for no arguments)
        raise ConfigError("-- is given more than once: DIR_RUN ... -- CLAMP_RUN ..., one -- between the two lists")
    distinct(direction_runs)  # a run given twice: the same panel drawn twice, as if two runs agreed
    check_out(str(out), figure=True)
    # every file read and checked before the figure is made: a refusal leaves no figure open in the caller's pyplot
    direction = {run: read(run, "code_direction.json", "em_code_direction.py") for run in direction_runs}
    # each run once (its seeds would count twice), and all read at the same steps
    rows = [r for run in distinct(clamp_runs)
            for r in read(run, "clamp_finetune.json", "em_clamp_finetune.py")["per_seed"]]
    if rows:
        steps = sorted(rows[0]["unclamped"], key=int)
        if other := next((r for r in rows if any(sorted(r[arm], key=int) != steps for arm in ARMS)), None):
            raise ConfigError(f"the clamp runs {', '.join(map(str, clamp_runs))} were read at different steps "
                              f"({', '.join(steps)} and {', '.join(sorted(other['unclamped'], key=int))}): pool runs "
                              f"of one eval_steps")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(direction_runs) + 2, figsize=(4.2 * (len(direction_runs) + 2), 3.6))
    bars = {}
    for ax, (run, d) in zip(axes, direction.items()):
        bars[run] = shares = removed_shares(d["summary"]["matched"])
        x = range(len(DIRS))
        ax.bar([i - 0.2 for i in x], shares["unseen"], 0.4, label="unseen task's insecure code")
        ax.bar([i + 0.2 for i in x], shares["offdomain"], 0.4, label="off-domain misalignment (log-prob)")
        ax.set_xticks(list(x), DIRS)
        ax.axhline(0, color="black", lw=0.5)
        drawn = [v for v in shares["unseen"] + shares["offdomain"] if math.isfinite(v)]
        ax.set_ylim(min(-0.2, *drawn), max(1.05, *drawn))  # (a share past 0..1 on few seeds was clipped, unseen)
        ax.set_ylabel("share of the increase removed")
        ax.set_title(f"{Path(run).name} (n = {len(d['per_seed'])}), matched step:\n"
                     "restoring the base's coordinate along", fontsize=8)
        ax.legend(fontsize=7)
    if rows:
        for ax, metric, label in ((axes[-2], "code_misaligned", "seen-task code misaligned"),
                                  (axes[-1], "offdomain_misaligned", "off-domain misaligned (sampled)")):
            for arm, colour in ARMS.items():
                stats = [summarize([r[arm][s][metric] for r in rows]) for s in steps]
                xs = [int(s) for s in steps]
                ax.plot(xs, [t["mean"] for t in stats], "o-", ms=3, color=colour, label=arm.replace("_", " "))
                band = [t["ci95"] or (t["mean"], t["mean"]) for t in stats]  # one seed: no interval, no band
                ax.fill_between(xs, [b[0] for b in band], [b[1] for b in band], color=colour, alpha=0.15)
            ax.set_xscale("log")
            ax.set_xlim(xs[0] / 1.2, xs[-1] * 1.2)  # the steps, drawn or not: lines all nan set no limits to log-scale
            ax.set_xlabel("fine-tune step")
            ax.set_title(f"{label}, code direction clamped\n(n = {len(rows)} seeds, "
                         f"{' + '.join(Path(r).name for r in clamp_runs)})",
                         fontsize=8)
        axes[-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)
    print(f"wrote {out}")
    return bars


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
