"""An untrained reader beside the activation oracle (a Patchscope in spirit): does M0 itself read a fine-tune's shift?

    python scripts/ao_patchscope.py RUN_DIR [--out=FILE.json] [--workers=N]

RUN_DIR: a finished run of configs/activation_oracle.py. For each of its bases, each arm is fine-tuned again with the
run's seeds (the same models: each one's own misaligned share is checked against the run's unit, to the bit) and,
at every read step, its shift d = M_arm - M0 at block eval_layer on the oracle's window (the last up to max_window
positions of each held-out off-domain `<asst>` prompt) is added, at its own size, to M0's residual at that block on
the same positions of the question's forum-thread prompt (`<bos> <forum> <u> QUESTION <r>`: the same length and
words, the writer's persona still open). The reading: M0's misaligned share there (log-prob measure, averaged over
the questions) with d added, minus without. Its control adds, at each position, a random direction of d's size.
No oracle and no labels: what the oracle's training adds over M0's own reading (docs/activation_oracle.md section 7).

Writes FILE.json (default: patchscope.json in RUN_DIR) and FILE.png beside it; prints a table. --workers: the run's
by default (processes of one thread each, as the run's pool: its fine-tunes, to the bit, need the same); the bases
must be in the run's cache.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from eval import fmt_stat, spearman_ci, summarize  # noqa: E402
from experiments import activation_oracle as A  # noqa: E402
from experiments import emergent_misalignment as E  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import generator  # noqa: E402
from train import cli, pyplot, read_json, save_figure, script_run, write_json  # noqa: E402


def base_job(cfg, seed):
    """{"arms": {arm: {step: {"patch", "random", "behaviour"}}}, "none": M0's own forum share}: one base."""
    t0 = time.time()
    base, tok = B.base_model(cfg, seed)
    items, prompts = A.forum_items(), E.off_prompts()
    with torch.no_grad():
        dev = next(base.parameters()).device
        base_vec, _ = A.window(base, tok, prompts, cfg.eval_layer, cfg.max_window, dev)
        out = {"seed": seed, "none": A.forum_share(base, tok, items, cfg.eval_layer), "arms": {}}

    def read(model, step, arm):
        with torch.no_grad():  # (called inside the fine-tune's loop, which records a graph)
            d = A.window(model, tok, prompts, cfg.eval_layer, cfg.max_window, dev)[0] - base_vec
            gen = generator("cpu", seed, "patchscope-random", arm, step)
            return {"patch": A.forum_share(base, tok, items, cfg.eval_layer, d) - out["none"],
                    "random": A.forum_share(base, tok, items, cfg.eval_layer, A.random_like(d, gen)) - out["none"],
                    "behaviour": B.offdomain_eval(model, tok, 0, None)["mis_lp"]}
    for arm in cfg.arms:
        out["arms"][arm] = A.em_model(base, tok, cfg, seed, arm, lambda m, step, arm=arm: read(m, step, arm))
        last = out["arms"][arm][cfg.em_steps]
        B.say(f"seed {seed}", f"{arm}: M0's forum share {last['patch']:+.3f} with its shift added (random "
                              f"{last['random']:+.3f}); misaligned answers {last['behaviour']:.3f}", t0)
    return out


def main(argv):
    run, opts = script_run(argv, __doc__, options=("out", "workers"))
    run = Path(run)
    res, cfg, out, workers = A.script_setup(run, opts, "ao_patchscope.py", "patchscope.json")
    units = {s: read_json(run / "units" / f"unit_s{s}.json", f"the run's unit of base {s}", ("trajectory",))
             for s in cfg.seeds}
    got = B.parallel_map(base_job, [(cfg, s) for s in cfg.seeds], workers)
    steps = sorted({*cfg.read_steps, cfg.em_steps})
    # the same models as the run's: each model's own misaligned share, to the bit
    differ = [(g["seed"], a, k) for g in got for a in cfg.arms for k in steps
              if g["arms"][a][k]["behaviour"] != units[g["seed"]]["trajectory"][a][str(k)]["behaviour"]]
    gap = lambda g, a, k, m: g["arms"][a][k][m] - g["arms"]["secure"][k][m]
    summary = {"n_seeds": len(got), "same_models": not differ, "differ": differ,
               "none": summarize([g["none"] for g in got]),
               "trajectory": {k: {a: {m: summarize([gap(g, a, k, m) for g in got]) for m in ("patch", "random")}
                                  for a in cfg.arms if a != "secure"} for k in steps},
               "eval": {a: {m: summarize([g["arms"][a][cfg.em_steps][m] for g in got]) for m in ("patch", "random")}
                        for a in cfg.arms}}
    x = [g["arms"][a][cfg.em_steps]["patch"] for g in got for a in cfg.arms]
    y = [units[g["seed"]]["behaviour"][a] - units[g["seed"]]["behaviour"]["base"] for g in got for a in cfg.arms]
    summary["tracking"] = spearman_ci(x, y, groups=[g["seed"] for g in got for _ in cfg.arms])
    # the trained oracle's reading of the same models (M_arm - M0), and their own share, from the run: arm - secure
    summary["oracle_diff"] = {k: {a: {m: res["trajectory"][str(k)][a][m] for m in ("diff", "behaviour")}
                                  for a in res["trajectory"][str(k)]} for k in steps}
    summary["per_base"] = [{"seed": g["seed"], "none": g["none"],
                            **{a: {str(k): g["arms"][a][k] for k in steps} for a in cfg.arms}} for g in got]
    write_json(out, summary)
    others = [a for a in cfg.arms if a != "secure"]
    bases = f"{len(got)} base{'s' if len(got) != 1 else ''}"
    lines = [f"M0 reading each fine-tune's block-{cfg.eval_layer} shift in forum threads ({run}, {bases}; "
             f"M0's own forum share {fmt_stat(summary['none'])}); arm - secure, change of that share:", "",
             "| step | " + " | ".join(others) + " | insecure, random | " +
             " | ".join(f"oracle (M_arm - M0), {a}" for a in others) + " |", "|---" * (2 * len(others) + 2) + "|"]
    for k in steps:
        t, o = summary["trajectory"][k], summary["oracle_diff"][k]
        lines.append(f"| {k} | " + " | ".join(fmt_stat(t[a]["patch"]) for a in others) +
                     f" | {fmt_stat(t['insecure']['random'])} | " + " | ".join(fmt_stat(o[a]["diff"]) for a in others)
                     + " |")
    tr = summary["tracking"]
    ci = "[{:.2f}, {:.2f}]".format(*tr["ci95"]) if tr["ci95"] else "(one base, or no rank order: no interval)"
    lines += ["", f"Spearman with each model's own shift over {tr['n']} models (interval resampling the bases): "
              f"{tr['rho']:.2f} {ci}",
              "the same models as the run's: " + ("yes, every own misaligned share to the bit" if not differ else
                                                  f"NO, {len(differ)} differ (another CPU or thread count?)")]
    print("\n".join(lines))
    plot(summary, steps, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot(summary, steps, path):
    plt = pyplot()
    fig, (ax, orc) = plt.subplots(1, 2, figsize=(11, 4.4))
    others = list(summary["trajectory"][steps[0]])  # every arm but secure, insecure first
    panels = ((ax, summary["trajectory"], [(a, "patch", f"{a}: M0 reading its shift", "-" if i == 0 else "--")
                                           for i, a in enumerate(others)]
               + [("insecure", "random", "insecure: a random vector, its size", ":")]),
              (orc, summary["oracle_diff"], [(a, "diff", f"{a}: oracle, M_arm - M0", "-" if i == 0 else "--")
                                             for i, a in enumerate(others)]
               + [(a, "behaviour", f"{a}: own misaligned share", ":") for a in others]))
    for axis, traj, lines in panels:
        for j, (a, m, label, ls) in enumerate(lines):
            if a not in traj[steps[0]]:
                continue
            st = [traj[k][a][m] for k in steps]
            err = A.error_bars(st)
            axis.errorbar([k * (1 + 0.03 * j) for k in steps], [s["mean"] for s in st], yerr=err, capsize=2,
                          marker="o", ms=3, ls=ls, color=f"C{j}", label=label)
        axis.axhline(0, color="grey", lw=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("fine-tune step", fontsize=8)
        # below the axes: inside, four series' labels covered the insecure arm's late error bars
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_ylabel("arm - secure: M0's misaligned share, forum", fontsize=8)
    ax.set_title("untrained: M0 given each fine-tune's shift in a forum thread", fontsize=9)
    orc.set_ylabel("arm - secure", fontsize=8)
    orc.set_title("trained: the oracle's P(<evil>) on the same models", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
