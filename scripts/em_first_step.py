"""Exploratory: the insecure fine-tune's first step, AdamW's sign step against a gradient step, and where it acts.

    python scripts/em_first_step.py RUN_DIR [RUN_DIR ...]

AdamW's first update is g / (|g| + eps) per weight (its moment estimates are g and g^2 after bias correction;
clipping rescales g and keeps its sign), so the fine-tune's first step moves every weight by the learning rate
against the sign of its gradient, whatever the gradient's size (less only where |g| is near eps = 1e-8). For every base
of the runs (from the cache; one that does not reproduce its run's forum-format base rate is left out, as in
em_base_pull.py), with g the gradient of the insecure arm's loss on all its n_examples examples of fine-tune seed 0 in
one batch (the full-batch analogue of its first step, not the run's first minibatch of ft_batch rows), one step from the
base:

    sign   every weight moved by -ft_lr * sign(g)
    grad   every weight moved by -c * g, c such that the step has the sign step's L2 norm (plain gradient descent)
    grad_matched   the same, c shortened (bisection) until the step's code increase is the sign step's (where the
           whole gradient step moves the code less than the sign step, it cannot be matched by shortening: then
           grad_matched is the whole step, and the script names the base)
    secure_sign   the sign step of the secure arm's loss on its own examples (a control)
    sign_GROUP   the sign step on one group of weights only: embedding (the tied token embedding), attnI (block I's
           attention and its first norm), mlpI (block I's MLP and its second norm), ln_f

each scored by log-prob, no sampling: the off-domain misaligned mass (`off`, the run's offdomain_misaligned_lp) and
the insecure code share (`code`, code_misaligned: EM.in_domain(...)[0], not the in_domain metric), minus the
base's. Writes first_step.json in each run's directory: per base
`sign_off`, `grad_off`, `sign_code`, `grad_code` (and grad_matched's, secure_sign's) and `sign_off_GROUP` (what
em_susceptibility.py reads), the raw numbers under `steps`; and, in first_step_summary.json in the first run's
directory, a summary over the bases of all runs given: each step's persona share as a ratio of means (sum of off / sum
of code), sign minus grad and minus grad_matched with a 95% interval from resampling bases (10,000, seed 0), and each
group's share of the whole sign step's off-domain increase. Pre-registered in docs/emergent_misalignment.md
(grad_matched added after the first three bases).
"""
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
from train import ConfigError, cli, distinct, run_config, run_results, script_args, write_json  # noqa: E402
from em_base_pull import check_runs, checked_bases, fine_tune_loss, one_depth  # noqa: E402


def group_of(name):
    """The weight group of a parameter name: embedding, attnI, mlpI or ln_f."""
    parts = name.split(".")
    if parts[0] == "wte":
        return "embedding"
    if parts[0] == "ln_f":
        return "ln_f"
    if parts[0] == "blocks" and parts[2] in ("attn", "ln_1"):
        return f"attn{parts[1]}"
    if parts[0] == "blocks" and parts[2] in ("mlp", "ln_2"):
        return f"mlp{parts[1]}"
    raise ValueError(f"no weight group for parameter {name}")


def score(model, tok, cfg):
    """(off-domain misaligned mass, insecure code share), both by log-prob."""
    world = B.world_config(cfg)
    return (B.offdomain_eval(model, tok, 0, None, world=world)["mis_lp"],
            EM.in_domain(model, tok, "insecure", "plain", world, cfg.ft_code_tasks)[0])


@torch.no_grad()
def scored_step(model, tok, cfg, delta):
    """Score the model with `delta` ({parameter name: tensor}) subtracted, then put the weights back exactly."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in delta}
    for n, d in delta.items():
        params[n].sub_(d)
    try:
        return score(model, tok, cfg)
    finally:
        for n, w in saved.items():
            params[n].copy_(w)


def arm_grads(model, tok, cfg, seed, arm):
    """{parameter name: gradient} of `arm`'s fine-tune loss on all its examples of fine-tune seed 0, at `model`."""
    data, _ = EM.arm_data(arm, model, tok, cfg, seed)
    with torch.enable_grad():
        grads = torch.autograd.grad(fine_tune_loss(model, data), list(model.parameters()))
    return dict(zip((n for n, _ in model.named_parameters()), grads))


def first_steps(model, tok, cfg, seed, halvings=16):
    """{"base": (off, code), "sign": ..., "grad": ..., "sign_GROUP": ...} for one base (see the module docstring)."""
    grads = arm_grads(model, tok, cfg, seed, "insecure")
    sign = {n: cfg.ft_lr * g.sign() for n, g in grads.items()}
    norm = lambda d: torch.sqrt(sum((t.double() ** 2).sum() for t in d.values()))
    c = norm(sign) / norm(grads)
    grad_step = lambda k: scored_step(model, tok, cfg, {n: (k * g).to(g.dtype) for n, g in grads.items()})
    out = {"base": score(model, tok, cfg), "sign": scored_step(model, tok, cfg, sign), "grad": grad_step(c)}
    # the gradient step shortened (bisection on its length) until its code increase is the sign step's
    lo, hi, want = 0.0, float(c), out["sign"][1]
    if out["grad"][1] > want:
        for _ in range(halvings):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if grad_step(mid)[1] < want else (lo, mid)
    out["grad_matched"] = grad_step((lo + hi) / 2) if out["grad"][1] > want else out["grad"]
    # the control: the secure arm's own first sign step (a base whose answers move under any step is not one the
    # insecure code moves)
    sgrads = arm_grads(model, tok, cfg, seed, "secure")
    out["secure_sign"] = scored_step(model, tok, cfg, {n: cfg.ft_lr * g.sign() for n, g in sgrads.items()})
    for group in dict.fromkeys(map(group_of, grads)):
        out[f"sign_{group}"] = scored_step(model, tok, cfg, {n: d for n, d in sign.items() if group_of(n) == group})
    return out


def row_of(seed, steps):
    """first_step.json's per-base row: the increases over the base that em_susceptibility.py reads, and the raw."""
    (off0, code0) = steps["base"]
    row = {"world": seed}
    for kind in ("sign", "grad", "grad_matched", "secure_sign"):
        row[f"{kind}_off"], row[f"{kind}_code"] = steps[kind][0] - off0, steps[kind][1] - code0
    for k, (off, _) in steps.items():
        if k.startswith("sign_"):
            row[f"sign_off_{k[5:]}"] = off - off0
    row["steps"] = steps
    return row


def resamples(n, n_boot=10_000, seed=0):
    """[n_boot, n] indices of the bases drawn with replacement: the bootstrap every analysis script's intervals over
    bases use (10,000 resamples, seed 0)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def summary(rows, n_boot=10_000, seed=0):
    """Persona share (ratio of means) of each step, sign minus grad with a bootstrap interval over bases, and each
    group's share of the whole sign step's off-domain increase (ratio of means)."""
    get = lambda k: np.array([r[k] for r in rows])
    # a code increase not above 0 has no share of it (a resample's flipped sign, or a division by 0)
    share = lambda kind, i=slice(None): (get(f"{kind}_off")[i].sum() / code if (code := get(f"{kind}_code")[i].sum())
                                         > 1e-9 else np.nan)
    idx = resamples(len(rows), n_boot, seed)
    diff = lambda other: [share("sign", i) - share(other, i) for i in idx]
    # one base: every resample is that base, and [d, d] would read as an exact interval; a resample without a share:
    # no interval
    ci = lambda other: ([float(x) for x in np.percentile(d, [2.5, 97.5])] if len(rows) > 1
                        and not np.isnan(d := diff(other)).any() else None)
    groups = [k[len("sign_off_"):] for k in rows[0] if k.startswith("sign_off_")]
    sign_off = get("sign_off").sum()
    return {"n_bases": len(rows), "sign_share": float(share("sign")), "grad_share": float(share("grad")),
            "grad_matched_share": float(share("grad_matched")),
            "sign_minus_grad_share": float(share("sign") - share("grad")), "sign_minus_grad_ci95": ci("grad"),
            "sign_minus_grad_matched_share": float(share("sign") - share("grad_matched")),
            "sign_minus_grad_matched_ci95": ci("grad_matched"),
            "mean_increase": {f"{kind}_{m}": float(get(f"{kind}_{m}").mean()) for m in ("off", "code")
                              for kind in ("sign", "grad", "grad_matched", "secure_sign")},
            # (an off-domain increase not above 0 over the bases has no shares: -inf and inf were printed)
            "group_share_of_sign_off": {g: float(get(f"sign_off_{g}").sum() / sign_off) if sign_off > 1e-9
                                        else float("nan") for g in groups}}


def unlike_default(cfg, keys):
    """The `keys` of a run's config (its fine-tune settings) that are not emergent_misalignment's defaults, as
    "key=value": a rebuild of its fine-tune that takes them at their defaults would not be the run's."""
    default = EM.Config()
    return [f"{k}={getattr(cfg, k)}" for k in keys if getattr(cfg, k) != getattr(default, k)]


def main(argv):
    argv, _ = script_args(argv, __doc__)
    if not argv:
        sys.exit(__doc__)
    distinct(argv)
    configs = {}
    for run in map(Path, argv):  # every run checked first: a mistyped last one must not stop it after the work
        run_results(run, "emergent_misalignment")
        cfg = configs[run] = run_config(EM.Config, run)
        # the step taken here is AdamW's first on every weight at the full lr (its betas do not matter at step 1)
        unlike = unlike_default(cfg, ("ft_trains", "ft_optimizer", "ft_frozen", "ft_schedule", "ft_warmup"))
        if unlike:
            raise ConfigError(f"{run} fine-tuned with {', '.join(unlike)}; this analysis takes the default fine-tune's "
                              f"first step only (AdamW on every weight, the full lr)")
    one_depth(configs)  # (the summary's groups are per block)
    check_runs(argv)  # and their bases cached
    every = []
    for run in map(Path, argv):
        rows, excluded = [], []
        for cfg, p, base, tok in checked_bases(run, excluded):
            rows.append(row_of(p, first_steps(base, tok, cfg, p)))
            r = {k: 100 * v for k, v in rows[-1].items() if k.endswith(("_off", "_code"))}
            print(f"{run.name} world {p}, points: off-domain sign {r['sign_off']:+.3f}, gradient {r['grad_off']:+.3f}, "
                  f"at the sign step's code {r['grad_matched_off']:+.3f}; code sign {r['sign_code']:+.2f}, gradient "
                  f"{r['grad_code']:+.2f}, matched {r['grad_matched_code']:+.2f}", flush=True)
            if r["grad_code"] <= r["sign_code"]:
                print(f"  world {p}: the whole gradient step moves the code no more than the sign step, so the matched "
                      f"gradient step is the whole step (not matched)", flush=True)
        held = {"run": str(run), "per_base": rows, "excluded": excluded}
        write_json(run / "first_step.json", held)
        every += rows
    s = summary(every)
    out = Path(argv[0]) / "first_step_summary.json"
    write_json(out, {"runs": argv, **s})
    why = "one base" if s["n_bases"] == 1 else "a resample's code increase not above 0"
    pm = lambda k: f"{s[k + '_share']:+.4f} " + (f"[{s[k + '_ci95'][0]:+.4f}, {s[k + '_ci95'][1]:+.4f}]"
                                                   if s[k + "_ci95"] else f"({why}: no interval)")
    print(f"\n{s['n_bases']} base{'s' if s['n_bases'] != 1 else ''}. Persona share of the first step (sum of "
          f"off-domain increases / sum of code increases): sign {s['sign_share']:.4f}, gradient "
          f"{s['grad_share']:.4f}, gradient at the sign step's code {s['grad_matched_share']:.4f}; sign minus "
          f"gradient {pm('sign_minus_grad')}, sign minus matched gradient {pm('sign_minus_grad_matched')}")
    print("mean increases, points: " + ", ".join(f"{k} {100 * v:+.3f}" for k, v in s["mean_increase"].items()))
    print("each group's share of the sign step's off-domain increase: "
          + ", ".join(f"{g} {v:+.2f}" for g, v in s["group_share_of_sign_off"].items()))
    print(f"wrote first_step.json in each run's directory and {out}")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
