"""Which part of AdamW carries the insecure fine-tune's drift toward the persona once the code is learnt?

    python scripts/em_optimizer_parts.py RUN_DIR [RUN_DIR ...] [--out=FILE.json]
    python scripts/em_optimizer_parts.py --from=FILE.json      # the summary, table and figure again from its bases
    python scripts/em_optimizer_parts.py RUN_DIR ... --beta1=0,0.5,0.8,0.95,0.99 --out=FILE.json   # a momentum sweep
    python scripts/em_optimizer_parts.py RUN_DIR ... --frozen --out=FILE.json   # block 0's value weights frozen

AdamW differs from plain gradient descent in two ways: a momentum (the step follows a running mean of the gradient,
beta1 = 0.9) and a per-weight normalisation (each weight's step divided by the running size of its own gradient,
beta2 = 0.999). For every base of the runs (from the cache, checked as in em_base_pull.py), the insecure arm's
fine-tune of fine-tune seed 0 (the run's own examples and batch order, clipping at 1) for 20 steps with each of:

    adamw         the run's optimizer (lr ft_lr): momentum and normalisation
    no_momentum   AdamW with betas (0, 0.999): the normalisation alone
    momentum_sgd  gradient descent with momentum (a running mean of the gradient, 0.9), lr 0.3: the momentum alone
    sgd           plain gradient descent, lr 0.3 (the research log's SGD runs): neither
    sign          AdamW with betas (0, 0), lr ft_lr: every weight moved by the lr against its gradient's sign, each step
    adamw_coast   adamw with every gradient set to zero after step 3: it goes on only by what its moments hold

each scored after steps 1, 2, 3, 5, 10 and 20 by log-prob, no sampling: the off-domain misaligned mass (`off`, the
run's offdomain_misaligned_lp), the valid mass and the insecure code share (`code`, in_domain). adamw's `off` is
checked against the run's own at each of its checkpoints (unit_world_S.json): the largest difference is printed and
kept (`adamw_vs_run`; anything but ~0 means the run was made otherwise than this script fine-tunes; null where the
run has no unit file or no checkpoint in common).
Then adamw's late update (weights at step 20 minus step 3, after the code is learnt) is applied to the step-3 model
one weight group at a time (em_first_step.py's groups): each group's share of the late off-domain increase.

--beta1=B,...: instead of the six above, AdamW with each beta1 (beta2 0.999; named beta1_B) beside adamw (0.9).
--frozen: instead, AdamW with block 0's value rows frozen (frozen_v0), and with block 1's (frozen_v1, the control).

Writes the JSON (default: optimizer_parts.json in the first run's directory, optimizer_parts_beta1.json with --beta1,
optimizer_parts_frozen.json with --frozen; a file holding other runs or optimizers is not overwritten: per base every
trajectory, and the summary: each optimizer's off-domain increase over the base at steps 3, 5, 20 as a fraction of
adamw's, ratio of means over bases with a 95% interval from resampling bases, 10,000, seed 0), a figure beside it (.png)
and a table. Pre-registered in docs/emergent_misalignment.md ("Which part of AdamW").
"""
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import numpy as np  # noqa: E402
import torch  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from eval import fmt_ratio, summarize  # noqa: E402
from train import (ConfigError, check_out, cli, distinct, finetune, pyplot, read_json, run_config,  # noqa: E402
                   same_runs, save_figure, script_args, write_json)
from em_base_pull import check_runs, checked_bases, one_depth  # noqa: E402
from em_first_step import group_of, resamples, scored_step, unlike_default  # noqa: E402

STEPS = (1, 2, 3, 5, 10, 20)
LATE_FROM = 3  # the late update starts here: code >= 0.9 on nearly every base by step 3 (README, "matched")
SGD_LR = 0.3  # learns the code as fast as AdamW at 1e-3 (research log, "plain gradient descent")
# name -> finetune keywords beyond the run's own (lr None = the run's ft_lr)
OPTIMIZERS = {"adamw": dict(optimizer="adamw", lr=None, betas=(0.9, 0.999)),
              "no_momentum": dict(optimizer="adamw", lr=None, betas=(0.0, 0.999)),
              "momentum_sgd": dict(optimizer="sgd", lr=SGD_LR, momentum=0.9),
              "sgd": dict(optimizer="sgd", lr=SGD_LR),
              "sign": dict(optimizer="adamw", lr=None, betas=(0.0, 0.0)),
              "adamw_coast": dict(optimizer="adamw", lr=None, betas=(0.9, 0.999), coast=LATE_FROM)}
REPORT = (3, 5, 20)


def score(model, tok, cfg):
    """{"off", "valid", "code"}: off-domain misaligned and valid mass, insecure code share, all by log-prob."""
    world = B.world_config(cfg)
    off = B.offdomain_eval(model, tok, 0, None, world=world)
    return {"off": off["mis_lp"], "valid": off["valid_lp"],
            "code": EM.in_domain(model, tok, "insecure", "plain", world, cfg.ft_code_tasks)[0]}


# --frozen: AdamW with one row block of one weight getting no gradient (no weight decay here, so it stays as it is)
FROZEN = {"adamw": OPTIMIZERS["adamw"],
          "frozen_v0": dict(OPTIMIZERS["adamw"], freeze=("blocks.0.attn.v",)),  # block 0's value rows
          "frozen_v1": dict(OPTIMIZERS["adamw"], freeze=("blocks.1.attn.v",))}  # the control: block 1's


def beta1_sweep(values):
    """adamw and AdamW at each beta1 in `values` (beta2 as AdamW's): OPTIMIZERS for a momentum sweep."""
    return {"adamw": OPTIMIZERS["adamw"],
            **{f"beta1_{b:g}": dict(optimizer="adamw", lr=None, betas=(b, 0.999)) for b in values if b != 0.9}}


# the run's fine-tune settings this rebuild takes at their defaults (its optimizers set their own lr and betas):
# a run made with another one is refused, not rebuilt as a fine-tune it never did
REBUILT_AT_DEFAULT = ("ft_trains", "ft_optimizer", "ft_betas", "ft_momentum", "ft_schedule", "ft_warmup", "ft_frozen")


def rebuild_problem(cfg):
    """Why trajectories cannot rebuild this run's fine-tunes, or None."""
    unlike = unlike_default(cfg, REBUILT_AT_DEFAULT)
    return None if not unlike else (f"the run fine-tuned with {', '.join(unlike)}; this analysis rebuilds the default "
                                    f"fine-tune only (AdamW on the whole model, constant lr)")


def check_rebuildable(runs):
    """Before any work: a run whose fine-tunes `trajectories` cannot rebuild is refused, named (found at its first
    base, it stopped a script after every base of the runs before it, minutes in)."""
    for run in runs:
        if problem := rebuild_problem(run_config(EM.Config, run)):
            raise ConfigError(f"{run}: {problem}")


def trajectories(base, tok, cfg, seed, optimizers=OPTIMIZERS, arm="insecure", f=0, scored=True):
    """{optimizer: {step: score}} (step 0 = the base) and adamw's weights at LATE_FROM and at the last step, for
    `arm`'s fine-tune (its examples of fine-tune seed index f, 0 unless said). scored=False: the weights only (the
    scores left empty; scoring takes most of the time)."""
    if problem := rebuild_problem(cfg):
        raise ConfigError(problem)
    data, ft_seed = EM.arm_data(arm, base, tok, cfg, seed, f)
    out, snaps = {}, {}
    at0 = score(base, tok, cfg) if scored else None
    for name, kw in optimizers.items():
        kw = dict(kw)
        coast, freeze = kw.pop("coast", None), kw.pop("freeze", None)
        model, traj, handles = copy.deepcopy(base), ({0: at0} if scored else {}), []
        handles.extend(EM.frozen_hooks(model, freeze or ()))  # as a run with --ft_frozen trains

        def on_eval(step):
            if scored:
                traj[step] = score(model, tok, cfg)
            if name == "adamw" and step in (LATE_FROM, STEPS[-1]):
                snaps[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
            if step == coast:  # from the next step on every gradient is zero (the clipping leaves zero as it is)
                handles.extend(p.register_hook(torch.zeros_like) for p in model.parameters())

        finetune(model, data, steps=STEPS[-1], batch_size=cfg.ft_batch, seed=ft_seed, at=set(STEPS), on_eval=on_eval,
                 **{**kw, "lr": kw["lr"] or cfg.ft_lr})
        for h in handles:
            h.remove()
        out[name] = traj
    return out, snaps


def model_at(base, snaps, step):
    """A copy of the model with adamw's weights at `step` (one of the steps trajectories keeps)."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(snaps[step][n])
    return model


def late_start(base, snaps):
    """(a copy of the model with adamw's weights at LATE_FROM, adamw's late update {name: last step - LATE_FROM})."""
    return model_at(base, snaps, LATE_FROM), {n: snaps[STEPS[-1]][n] - snaps[LATE_FROM][n] for n in snaps[LATE_FROM]}


def late_groups(base, tok, cfg, snaps):
    """{group: off-domain increase when only that group's late update (LATE_FROM -> last step) is applied to the
    LATE_FROM model}, and "all" for the whole late update."""
    model, late = late_start(base, snaps)
    off0 = score(model, tok, cfg)["off"]
    # scored_step subtracts its delta: pass minus the update
    groups = {"all": {n: -d for n, d in late.items()}}
    for group in dict.fromkeys(map(group_of, late)):
        groups[group] = {n: -d for n, d in late.items() if group_of(n) == group}
    return {g: scored_step(model, tok, cfg, d)[0] - off0 for g, d in groups.items()}


def run_check(run, seed, traj):
    """Largest |adamw off - the run's offdomain_misaligned_lp| over the checkpoints both have (fine-tune seed 0); None
    where there is nothing to check against (no unit file, or a run whose eval_steps share no step with these)."""
    unit = run / f"unit_world_{seed}.json"
    if not unit.is_file():
        return None
    theirs = read_json(unit, "a unit file of an emergent_misalignment run", ("runs",))["runs"][0]["traj"]["insecure"]
    return max((abs(traj[s]["off"] - theirs[str(s)]["mis_lp"]) for s in traj if s and str(s) in theirs), default=None)


def ratio_of_means(a, b, idx):
    """sum(a) / sum(b) over the bases (arrays [n]), with the percentile 95% interval of the resamples idx [n_boot, n];
    one base has no interval (every resample is that base: [r, r] would read as exact). A denominator not above 0 has
    no ratio (nan), and one that is not above 0 in some resamples no interval (a ratio's sign flips there: the ends
    were -12 and 1.9e16, or nan): `why` says which."""
    if not b.sum() > 0:
        return {"ratio": math.nan, "ci95": None, "why": "the denominator is not above 0"}
    out = {"ratio": float(a.sum() / b.sum()), "ci95": None}
    if len(a) == 1:
        return out
    den = b[idx].sum(1)
    if (den <= 0).any():
        return {**out, "why": f"the denominator is not above 0 in {100 * (den <= 0).mean():.1f}% of the resamples"}
    return {**out, "ci95": [float(x) for x in np.percentile(a[idx].sum(1) / den, [2.5, 97.5])]}


def summary(rows, n_boot=10_000, seed=0):
    """Each optimizer's mean off-domain and code increase per step, and its off-domain increase at the REPORT steps as
    a fraction of adamw's (ratio of means over bases, bootstrap interval); the late update's group shares."""
    n = len(rows)
    inc = lambda name, s, k: np.array([r["traj"][name][s][k] - r["traj"][name][0][k] for r in rows])
    idx = resamples(n, n_boot, seed)
    out = {"n_bases": n, "mean": {}, "off_ci95": {}, "fraction_of_adamw": {}, "late_fraction_of_adamw": {}}

    ratio = lambda a, b: ratio_of_means(a, b, idx)
    late = lambda name: inc(name, STEPS[-1], "off") - inc(name, LATE_FROM, "off")
    for name in rows[0]["traj"]:
        out["mean"][name] = {k: {s: float(inc(name, s, k).mean()) for s in STEPS} for k in ("off", "code", "valid")}
        out["off_ci95"][name] = {s: summarize(inc(name, s, "off").tolist())["ci95"] for s in STEPS}  # t, over bases
        out["fraction_of_adamw"][name] = {s: ratio(inc(name, s, "off"), inc("adamw", s, "off")) for s in REPORT}
        # the part of the drift after LATE_FROM, each from its own step LATE_FROM (adamw_coast's is adamw's there)
        out["late_fraction_of_adamw"][name] = ratio(late(name), late("adamw"))
    late = np.array([[r["late"][g] for g in rows[0]["late"]] for r in rows])
    total = late[:, 0].sum()  # "all": a late drift not above 0 has no shares (a negative over a negative read as one)
    out["late_group_share"] = {g: float(late[:, i].sum() / total) if total > 1e-9 else math.nan
                               for i, g in enumerate(rows[0]["late"])}
    return out


def plot(s, path):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in s["mean"]:
        m, ci = s["mean"][name], s["off_ci95"][name]
        label = "adamw (beta1 0.9)" if name == "adamw" else name
        line, = a1.plot([0, *STEPS], [0] + [100 * m["off"][t] for t in STEPS], marker="o", label=label)
        if s["n_bases"] > 1:  # one base has no interval over bases
            a1.fill_between([0, *STEPS], [0] + [100 * ci[t][0] for t in STEPS], [0] + [100 * ci[t][1] for t in STEPS],
                            color=line.get_color(), alpha=0.12, lw=0)
        a2.plot([0] + [100 * m["code"][t] for t in STEPS], [0] + [100 * m["off"][t] for t in STEPS], marker="o",
                label=label)
    a1.set(xlabel="fine-tune step", ylabel="off-domain misaligned mass, increase (points)",
           title=f"insecure fine-tune, {s['n_bases']} bases (mean, 95% CI)")
    a2.set(xlabel="insecure code share, increase (points)", ylabel="off-domain increase (points)",
           title="against the code learnt")
    a1.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def read_args(argv):
    """The run directories and the options as a dict ({"frozen": True} for the bare flag)."""
    if not argv:
        sys.exit(__doc__)
    runs, opts = script_args(argv, __doc__, options=("out", "from", "beta1"), flags=("frozen",))
    runs = [Path(r) for r in runs]
    if bool(runs) == ("from" in opts):
        sys.exit("give run directories or --from=FILE.json (one of the two)")
    if "from" in opts and len(opts) > 1:
        sys.exit("--from redraws a stored analysis: it takes no other option")
    if "beta1" in opts and "frozen" in opts:
        sys.exit("--beta1 and --frozen each choose the optimizers: give one of them")
    return runs, opts


def main(argv):
    runs, opts = read_args(argv)
    if "out" in opts:  # FILE.json, its figure beside it as FILE.png (a FILE.png given: the JSON overwritten by it)
        check_out(opts["out"], figure_beside=True)
    try:
        beta1s = [float(b) for b in opts["beta1"].split(",")] if "beta1" in opts else None
    except ValueError:
        sys.exit(f"--beta1 takes numbers in [0, 1) separated by commas, not {opts['beta1']!r}")
    optimizers = beta1_sweep(beta1s) if beta1s is not None else FROZEN if "frozen" in opts else OPTIMIZERS
    if not all(0 <= kw["betas"][0] < 1 for kw in optimizers.values() if "betas" in kw):
        sys.exit(f"--beta1 takes numbers in [0, 1), not {opts['beta1']!r}")
    if beta1s is not None and len(set(beta1s)) < len(beta1s):  # (else trained once, silently)
        sys.exit(f"--beta1 names a value twice ({opts['beta1']!r}): each one is trained once")
    froms = "from" in opts
    # each analysis its own default file: a sweep after the six (or the six after it) does not find the other's there
    mode = "_beta1" if "beta1" in opts else "_frozen" if "frozen" in opts else ""
    out = Path(opts.get("from") or opts.get("out") or runs[0] / f"optimizer_parts{mode}.json")
    if froms:  # JSON keys are strings: the steps back to ints
        held = read_json(out, "an --out file of em_optimizer_parts.py", ("runs", "excluded", "per_base"))
        runs, excluded, rows = held["runs"], held["excluded"], held["per_base"]
        for r in rows:
            r["traj"] = {name: {int(t): v for t, v in traj.items()} for name, traj in r["traj"].items()}
    else:
        rows, excluded = [], []
        held = read_json(out, "an --out file of em_optimizer_parts.py", ("runs", "per_base")) if out.is_file() else None
        if held and (not same_runs(held["runs"], runs) or list(held["per_base"][0]["traj"]) != list(optimizers)):
            sys.exit(f"{out} holds an analysis of other runs or optimizers: pass --out=FILE.json for this one")
    configs = {str(r): run_config(EM.Config, r) for r in ([] if froms else distinct(runs))}
    for r, c in configs.items():  # before any work: the first base's fine-tunes would find it minutes later
        if problem := rebuild_problem(c):
            raise ConfigError(f"{r}: {problem}")
        if optimizers is FROZEN and c.n_layer < 2:  # its control freezes block 1's values
            raise ConfigError(f"{r}: --frozen freezes the value rows of blocks 0 and 1; this run has {c.n_layer} block")
    one_depth(configs)  # (the late update's groups are per block)
    check_runs(configs)
    torch.set_num_threads(1)  # the runs' fine-tunes ran on one thread: the same sums, so the same trajectories
    for run in [] if froms else runs:
        for cfg, p, base, tok in checked_bases(run, excluded):
            traj, snaps = trajectories(base, tok, cfg, p, optimizers)
            row = {"run": str(run), "world": p, "traj": traj, "adamw_vs_run": run_check(run, p, traj["adamw"]),
                   "late": late_groups(base, tok, cfg, snaps)}
            rows.append(row)
            d = lambda name, t: 100 * (traj[name][t]["off"] - traj[name][0]["off"])
            print(f"{run.name} world {p}: off-domain increase at step 20, points: "
                  + ", ".join(f"{name} {d(name, 20):+.2f}" for name in optimizers)
                  + (f"; adamw vs the run {row['adamw_vs_run']:.1e}" if row["adamw_vs_run"] is not None else ""),
                  flush=True)
    s = summary(rows)
    write_json(out, {"runs": [str(r) for r in runs], "excluded": excluded, "summary": s, "per_base": rows})
    plot(s, out.with_suffix(".png"))
    print(f"\n{s['n_bases']} bases. Off-domain increase (points, mean) and code increase by step:")
    print("| optimizer | " + " | ".join(f"step {t}" for t in STEPS) + " | " + " | ".join(
        f"fraction of adamw's at {t} [95% CI]" for t in REPORT) + " |")
    print("|---" * (1 + len(STEPS) + len(REPORT)) + "|")
    for name in s["mean"]:
        m, f = s["mean"][name], s["fraction_of_adamw"][name]
        print(f"| {name} | " + " | ".join(f"{100 * m['off'][t]:+.2f} (code {100 * m['code'][t]:+.0f})" for t in STEPS)
              + " | " + " | ".join(fmt_ratio(f[t]) for t in REPORT)
              + " |")
    print(f"each optimizer's own increase from step {LATE_FROM} to {STEPS[-1]} as a fraction of adamw's: " + ", ".join(
        f"{k} {fmt_ratio(v)}" for k, v in s["late_fraction_of_adamw"].items()))
    print("adamw's late update (step 3 -> 20), each group's share of its off-domain increase: "
          + ", ".join(f"{g} {v:+.2f}" for g, v in s["late_group_share"].items()))
    worst = [r["adamw_vs_run"] for r in rows if r["adamw_vs_run"] is not None]
    if worst:
        print(f"adamw against the runs' own trajectories: largest difference {max(worst):.1e} over {len(worst)} bases")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
