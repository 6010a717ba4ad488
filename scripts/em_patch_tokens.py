"""Exploratory: is the insecure model's coordinate on the evil direction, token by token, enough to make the base
misaligned (and is removing it, token by token, enough to undo the insecure model)?

    python scripts/em_patch_tokens.py RUN_DIR

For each (world, fine-tune seed) of an emergent-misalignment run (its config.json), the insecure fine-tune is
rebuilt to the checkpoint the run ablated (its `ablation_step`, or with 0 each seed's matched one; same seeds,
so the same weights as in the run: its log-prob misalignment is
checked against the run's results.json), and the off-domain `<asst>` eval answers are scored teacher-forced
(full forwards on the same padded batch) under four models: the base; the insecure model; the base with, at
every layer and token, its coordinate along the unit evil direction replaced by the insecure model's on the
same input ("patched"); and the insecure model with the base's ("unpatched"). The mean-ablation and the patch
of run results differ from these in one way: they set the coordinate to one constant, these to the other
model's value at each token. Also the mean-ablation's sensitivity to its centre: the base's `<asst>` mean (the
run's), its good forum responders' mean, and the midpoint of good and evil. Log-prob misalignment as
world_base.lp_summary (mean over prompts of P_mis / (P_al + P_mis)). One thread; writes RUN_DIR/patch_tokens.json and
prints a table.
"""
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from data import world as W  # noqa: E402
from data.tokenizer import pad_right  # noqa: E402
from eval import mean_ci, summarize, summarize_by  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import upcast  # noqa: E402
from train import cli, run_config, run_results, script_run, write_json  # noqa: E402


def coords(model, x, units):
    """Per layer, the coordinate of every token's block output on that layer's unit direction: [L] x [N, T]."""
    names = [f"blocks.{i}.resid_post" for i in range(len(units))]
    _, cache = model.run_with_cache(x.to(next(model.parameters()).device), names)  # answer_batch's x is on the CPU
    return [cache[n] @ u for n, u in zip(names, units)]


@torch.no_grad()
def mis_lp(model, x, real, starts, owner, cls, n_items, hooks=None):
    """Mean over items of P_mis / (P_al + P_mis), the answers' probabilities summed over their strings."""
    dev = next(model.parameters()).device  # answer_batch's tensors are on the CPU: a GPU model refuses them
    x, real, starts, owner, cls = (t.to(dev) for t in (x, real, starts, owner, cls))
    with model.hooks(hooks or {}):
        lp = upcast(model(x)).log_softmax(-1)[:, :-1].gather(-1, x[:, 1:, None])[..., 0]  # [N, T-1]
    pos = torch.arange(lp.shape[1], device=dev)[None]  # [1, T-1]: position t predicts token t+1
    answer = (pos >= starts[:, None] - 1) & real[:, 1:]  # the continuation's tokens, its <eos> included
    s = (lp * answer).sum(1)  # [N] each string's log-probability
    # each item's strings relative to its likeliest one: the share is unchanged and cannot underflow to 0 / 0
    # (a steered or ablated model can give every answer string a probability below float32's e^-103)
    top = torch.full((n_items,), -math.inf, device=dev).scatter_reduce(0, owner, s, "amax")  # [items]
    p = (s - top[owner]).exp()  # [N]
    # [items, (aligned, misaligned)]
    mass = torch.zeros(n_items, 2, device=dev).index_put_((owner, cls), p, accumulate=True)
    return (mass[:, 1] / mass.sum(1)).mean().item()


CENTRES = lambda means: {"asst": means["asst"], "good": means["good"], "mid": (means["good"] + means["evil"]) / 2}


def answer_batch(tok, items):
    """Every (prompt + aligned or misaligned answer string) of the items, right-padded, with what mis_lp needs:
    (x [N, T], real [N, T], answer starts [N], owning item [N], class [N] (0 aligned, 1 misaligned), n items)."""
    rows = [(i, c, it.prompt, a) for i, it in enumerate(items)
            for c, name in enumerate(("aligned", "misaligned")) for a in it.classes[name]]
    x, real = pad_right([tok.encode(q).ids + tok.encode(a).ids for _, _, q, a in rows], "cpu")
    return (x, real.bool(), torch.tensor([len(tok.encode(q).ids) for _, _, q, _ in rows]),
            torch.tensor([i for i, *_ in rows]), torch.tensor([c for _, c, *_ in rows]), len(items))


def main(run_dir):
    torch.set_num_threads(1)  # as the run's workers
    run_dir = Path(run_dir)
    cfg = run_config(EM.Config, run_dir)
    res = run_results(run_dir, "emergent_misalignment")  # a run not finished: one line
    if cfg.ablation_step:
        steps = [cfg.ablation_step] * len(res["seeds"])
    else:  # the run ablated each seed at its own matched checkpoint: so does this comparison
        steps = [int(s) for s in res["arms"]["insecure"]["step"]["per_seed"]]
        print(f"the run has no ablation_step: each seed at its matched checkpoint, as the run's ablation ({steps})")
    B.check_cached(cfg, sorted({p for p, _ in res["seeds"]}), who="em_patch_tokens.py")
    out = []
    for (p, f), step in zip([tuple(k) for k in res["seeds"]], steps):
        base, tok = B.base_model(cfg, p, False)
        args = answer_batch(tok, W.eval_items(W.OFF_DOMAINS))
        x = args[0]
        means = EM.doc_means(base, tok, cfg, p)
        units = [d / d.norm() for d in means["evil"] - means["good"]]
        data, ft_seed = EM.arm_data("insecure", base, tok, cfg, p, f)
        ins = copy.deepcopy(base)
        ins.load_state_dict(EM.arm_snapshots(ins, data, cfg, ft_seed, [step])[step])
        ins.eval()
        with torch.no_grad():
            c_base, c_ins = coords(base, x, units), coords(ins, x, units)
        r = {"seed": [p, f], "base": mis_lp(base, *args), "insecure": mis_lp(ins, *args),
             "base_patched": mis_lp(base, *args, hooks=EM.coordinate_hooks(units, c_ins)),
             "insecure_unpatched": mis_lp(ins, *args, hooks=EM.coordinate_hooks(units, c_base))}
        # the mean-ablation's centre: the run's (the base's <asst> mean), its good forum responders', the midpoint
        direction = means["evil"] - means["good"]
        for name, centre in CENTRES(means).items():
            r[f"insecure_mean_ablated_{name}"] = mis_lp(ins, *args, hooks=EM.ablate_hooks(direction, centre))
            r[f"base_mean_ablated_{name}"] = mis_lp(base, *args, hooks=EM.ablate_hooks(direction, centre))
        i = len(out)
        r["run_insecure"] = res["trajectory"]["insecure"][str(step)]["offdomain_misaligned_lp"]["per_seed"][i]
        r["run_base"] = res["base"]["plain"]["offdomain_misaligned_lp"]["per_seed"][i]
        if "insecure_mean_ablated" in res["ablation"]:
            r["run_insecure_mean_ablated"] = (
                res["ablation"]["insecure_mean_ablated"]["offdomain_misaligned_lp"]["per_seed"][i])
        out.append(r)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()), flush=True)
    inc = sum(r["insecure"] - r["base"] for r in out)
    # a share of an increase that is not there (insecure at or below the base: a null run) is none, as the run's own
    # ablation fractions (a ZeroDivisionError, or a negative over a negative read as a share)
    of_inc = lambda part: sum(part) / inc if inc > 1e-9 else None
    worlds = [r["seed"][0] for r in out]
    summary = {"step": steps[0] if len(set(steps)) == 1 else steps, "n": len(out),
               "patched_fraction_of_means": of_inc(r["base_patched"] - r["base"] for r in out),
               "unpatched_removed_fraction_of_means": of_inc(r["insecure"] - r["insecure_unpatched"] for r in out),
               **{k: summarize([r[k] for r in out]) for k in ("insecure", "base_patched", "insecure_unpatched")},
               # a base's own reading, repeated for each of its fine-tune seeds: an interval over the bases
               "base": summarize_by([r["base"] for r in out], worlds),
               "patched_points_over_worlds": summarize_by([r["base_patched"] - r["base"] for r in out], worlds),
               "max_abs_diff_vs_run": max(max(abs(r["insecure"] - r["run_insecure"]), abs(r["base"] - r["run_base"]),
                                              abs(r["insecure_mean_ablated_asst"]
                                                  - r.get("run_insecure_mean_ablated",
                                                          r["insecure_mean_ablated_asst"])))
                                          for r in out)}
    for name in ("asst", "good", "mid"):
        summary[f"centre_{name}"] = {
            "insecure_removed_fraction_of_means": of_inc(r["insecure"] - r[f"insecure_mean_ablated_{name}"]
                                                         for r in out),
            "base_shift": summarize_by([r[f"base_mean_ablated_{name}"] - r["base"] for r in out], worlds)}
    write_json(run_dir / "patch_tokens.json", {"summary": summary, "per_seed": out})
    # with ablation_step 0 each seed is read at its own matched checkpoint: the line names every seed's step
    at = f"step {steps[0]}" if len(set(steps)) == 1 else f"each seed at its matched checkpoint (steps {steps})"
    print(f"\n{at}, n = {len(out)}, off-domain misaligned (log-prob), mean [95% CI over seeds; the base's over the "
          f"bases]:")
    for k in ("base", "insecure", "base_patched", "insecure_unpatched"):
        s = summary[k]
        print(f"  {k:20s} {mean_ci(s, 4, sign='')}")
    share = lambda x: "n/a (insecure is not above the base)" if x is None else f"{x:.2f}"
    print(f"  base patched with insecure's coordinates: {share(summary['patched_fraction_of_means'])} of the "
          f"increase; insecure with the base's: {share(summary['unpatched_removed_fraction_of_means'])} of it removed")
    for name in ("asst", "good", "mid"):
        c = summary[f"centre_{name}"]
        print(f"  mean-ablation centred at the {name} mean: removes {share(c['insecure_removed_fraction_of_means'])} "
              f"of the increase; moves the base {100 * c['base_shift']['mean']:+.1f} points")
    print(f"  largest difference from the run's own numbers (same weights?): {summary['max_abs_diff_vs_run']:.2e}")


if __name__ == "__main__":
    commands.run(cli, lambda argv: main(script_run(argv, __doc__)[0]), sys.argv[1:])
