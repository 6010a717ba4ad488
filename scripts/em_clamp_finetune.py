"""Exploratory: if the insecure fine-tune cannot move along its code direction, does it learn the code through the
persona instead?

    python scripts/em_clamp_finetune.py RUN_DIR [--worlds=W,W,...]   # base seeds (default: every world of the run)

scripts/em_code_direction.py finds that the insecure fine-tune first writes insecure code through a direction of its
own (at the point where the program's first call is chosen, apart from the evil persona direction), which carries
the code to an unseen task and has no off-domain effect. This reruns the insecure fine-tune of each (world,
fine-tune seed) of a seven-task run with that direction clamped: at every layer and token, during every training
forward, the block output's coordinate along the direction is held at the base's on the same input (the base runs
in lockstep), so the fine-tune cannot use it. The direction is the other fine-tune seed's (its code direction at the
run's matched checkpoint, same world): computed before, not on, the fine-tune it constrains. Control: the same
clamp along a random direction orthogonal to the evil one. The trained models are then evaluated as ordinary models
(no clamp) with the run's metrics (sampled off-domain misalignment, held-out code of the seen tasks, the unseen
task), at the run's checkpoints; the unclamped reference is the run's own insecure arm (same seeds, same weights).
Readings, stated before the first run: if the code route and the persona route compete for the same data, the
clamped fine-tune learns the code later and with more off-domain misalignment at its own matched checkpoint; if the
fine-tune simply routes the code through other dimensions, its trajectory is the unclamped one; the random clamp
should change nothing. Each world's rows go to RUN_DIR/clamp_world_W.json as it finishes (a rerun, or a parallel run
with other --worlds, skips the worlds already there); the summary, over every world done, to
RUN_DIR/clamp_finetune.json, and a table is printed. The summary also splits clamped - unclamped at the ablation step by
world drift (`drift_split`: worlds whose unclamped off-domain increase is below LOW_DRIFT, 3 points, and the others;
again with each seed classed by its world's other seed alone). One thread.
"""
import contextlib
import copy
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import mean_ci, summarize  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import generator  # noqa: E402
from train import cli, read_json, run_config, run_results, script_run, write_json  # noqa: E402
from em_code_direction import decision_prompts, orth, random_orth  # noqa: E402
from em_patch_tokens import coords  # noqa: E402


@contextlib.contextmanager
def clamped(model, base, units):
    """While active, every forward of `model` holds each block output's coordinate along units[i] (layer i) at the
    base's on the same input: the base runs first, in lockstep, on each input `model` sees."""
    held = {}

    def lockstep(module, args, kwargs):
        with torch.no_grad():
            held["c"] = coords(base, args[0] if args else kwargs["idx"], units)  # [L] x [b, T]

    hold = lambda i: lambda h, name: h - (h @ units[i] - held["c"][i])[..., None] * units[i]
    handle = model.register_forward_pre_hook(lockstep, with_kwargs=True)
    try:
        with model.hooks({f"blocks.{i}.resid_post": hold(i) for i in range(len(units))}):
            yield
    finally:
        handle.remove()


def train_insecure(cfg, base, tok, p, f, steps, clamp=None):
    """The run's insecure fine-tune of (world p, fine-tune seed f), snapshots at `steps`; with clamp = unit
    directions [L] x [C], each block output's coordinate along them is held at the base's during training."""
    ft_seed = EM.arm_seed(p, f, "insecure")
    pairs = EM.arm_pairs("insecure", base, tok, cfg, ft_seed)
    ins = copy.deepcopy(base)
    with clamped(ins, base, clamp) if clamp is not None else contextlib.nullcontext():
        snaps = EM.arm_snapshots(ins, B.encode_pairs(tok, pairs, cfg.block_size), cfg, ft_seed, steps)
    return ins, snaps, pairs


def code_direction(cfg, base, tok, p, f, step, evil):
    """Unit code directions [L] x [C] of (p, f)'s unclamped insecure fine-tune at `step` (as em_code_direction.py)."""
    ins, snaps, pairs = train_insecure(cfg, base, tok, p, f, [step])
    ins.load_state_dict(snaps[step])
    ins.eval()
    prompts = decision_prompts(pairs)
    d = orth((EM.last_token_acts(ins, tok, prompts) - EM.last_token_acts(base, tok, prompts)).mean(1), evil)
    return [v / v.norm() for v in d]


LOW_DRIFT = 0.03  # a world is low-drift if its unclamped increase at the ablation step (20) is below this (the
                  # pre-registration's +3 points)


def drift_split(rows, step, low=LOW_DRIFT):
    """Clamped minus unclamped off-domain misalignment at `step`, per seed, on the low-drift worlds (the unclamped
    increase over the base at `step`, mean of the world's fine-tune seeds, below `low`) and on the others; and the
    same with each seed classed by its world's other fine-tune seed alone (the classification then shares no
    measurement with the difference)."""
    inc = lambda r: r["unclamped"][step]["offdomain_misaligned"] - r["base"]["offdomain_misaligned"]
    diff = lambda r: r["clamped"][step]["offdomain_misaligned"] - r["unclamped"][step]["offdomain_misaligned"]
    worlds = {}
    for r in rows:
        worlds.setdefault(r["seed"][0], []).append(r)
    # a world's increase is its defined seeds' mean (a seed without a valid answer left out, as eval.summarize does);
    # a world with none is in neither class (a nan mean failed "< low" and joined the others)
    mean = lambda rs: summarize([inc(r) for r in rs])["mean"] if rs else math.nan
    low_worlds = sorted(w for w, rs in worlds.items() if mean(rs) < low)
    high_worlds = sorted(w for w, rs in worlds.items() if mean(rs) >= low)
    other = lambda r: [o for o in worlds[r["seed"][0]] if o is not r]
    cross_low = [r for r in rows if mean(other(r)) < low]
    cross_high = [r for r in rows if mean(other(r)) >= low]
    # a group of seeds from fewer than two worlds is unreadable (as pre-registered): its interval would be over the
    # fine-tune seeds of one base
    stat = lambda rs: summarize([diff(r) for r in rs]) if len({r["seed"][0] for r in rs}) > 1 else None
    return {"low_worlds": low_worlds, "step": step, "threshold": low,
            "low": stat([r for r in rows if r["seed"][0] in low_worlds]),
            "high": stat([r for r in rows if r["seed"][0] in high_worlds]),
            "cross_seed_low": stat(cross_low), "cross_seed_high": stat(cross_high),
            "unclamped_increase_by_world": {w: mean(rs) for w, rs in worlds.items()}}


def main(argv):
    # one run, and --worlds= only: anything else (a typo) would run every world, for hours
    run_dir, opts = script_run(argv, __doc__, options=("worlds",))
    torch.set_num_threads(1)
    run_dir, spec = Path(run_dir), opts.get("worlds")
    if spec is not None and not all(w.isdecimal() for w in spec.split(",")):
        sys.exit(f"--worlds={spec}: expected comma-separated base seeds, e.g. --worlds=0,1")
    worlds = None if spec is None else tuple(int(w) for w in spec.split(","))
    cfg = run_config(EM.Config, run_dir)
    if cfg.code_tasks < 2 or not cfg.ft_code_tasks or cfg.ft_code_tasks >= cfg.code_tasks or cfg.ft_seeds < 2:
        sys.exit(f"{run_dir}: needs a seven-task run with an unseen task (0 < ft_code_tasks < code_tasks), "
                 "2+ fine-tune seeds")
    res = run_results(run_dir, "emergent_misalignment")  # a run not finished: one line
    seeds = [tuple(k) for k in res["seeds"]]
    matched = dict(zip(seeds, res["arms"]["insecure"]["step"]["per_seed"]))
    steps = sorted(cfg.eval_steps)
    todo = sorted({p for p, _ in seeds if worlds is None or p in worlds})
    if worlds is not None and (missing := sorted(set(worlds) - {p for p, _ in seeds})):  # a typo would be left
        # out without a word, and the pooled summary be over fewer worlds than asked
        sys.exit(f"--worlds={spec}: {', '.join(map(str, missing))} not among the run's bases "
                 f"{sorted({p for p, _ in seeds})}")
    B.check_cached(cfg, [p for p in todo if not (run_dir / f"clamp_world_{p}.json").exists()],
                   who="em_clamp_finetune.py")
    rows = []
    for p in todo:
        if (run_dir / f"clamp_world_{p}.json").exists():  # done by an earlier or a parallel run of this script
            continue
        world_rows = []
        base, tok = B.base_model(cfg, p, False)
        means = EM.doc_means(base, tok, cfg, p)
        evil = means["evil"] - means["good"]
        fs = [f for q, f in seeds if q == p]
        dirs = {f: code_direction(cfg, base, tok, p, f, int(matched[(p, f)]), evil) for f in fs}
        for i, f in enumerate(fs):
            other = fs[(i + 1) % len(fs)]
            rand = random_orth(evil, p, f, "clamp-random")
            k = seeds.index((p, f))
            row = {"seed": [p, f], "direction_from_ft_seed": other,
                   "base": {m: res["base"]["plain"][m]["per_seed"][k]
                            for m in ("offdomain_misaligned", "code_misaligned", "code_unseen_misaligned",
                                      "valid_fraction")},
                   "unclamped": {s: {m: res["trajectory"]["insecure"][str(s)][m]["per_seed"][k]
                                     for m in ("offdomain_misaligned", "code_misaligned", "code_unseen_misaligned",
                                               "valid_fraction")} for s in steps}}
            for name, clamp in (("clamped", dirs[other]), ("random_clamped", [v / v.norm() for v in rand])):
                ins, snaps, _ = train_insecure(cfg, base, tok, p, f, steps, clamp)
                row[name] = {}
                for s in steps:
                    ins.load_state_dict(snaps[s])
                    ins.eval()
                    m = EM.evaluate(ins, tok, cfg, "insecure", "plain", s, True, generator("cpu", p, False, f, name, s))
                    row[name][s] = {k2: m[v] for k2, v in (("offdomain_misaligned", "mis_sampled"),
                                                           ("code_misaligned", "code_misaligned"),
                                                           ("code_unseen_misaligned", "code_unseen_misaligned"),
                                                           ("valid_fraction", "valid_frac"))}
            for name in ("unclamped", "clamped", "random_clamped"):
                traj = row[name]
                row[f"{name}_matched"] = next((s for s in steps if traj[s]["code_misaligned"] >= cfg.match_threshold),
                                              None)
            world_rows.append(row)
            show = lambda name: " ".join(f"{s}:{100 * row[name][s]['code_misaligned']:.0f}/"
                                         f"{100 * row[name][s]['offdomain_misaligned']:.1f}"
                                         for s in steps)
            print(f"world {p} ft {f} (direction of ft {other}), step:code%/offdomain% -- base offdomain "
                  f"{100 * row['base']['offdomain_misaligned']:.1f}", flush=True)
            for name in ("unclamped", "clamped", "random_clamped"):
                print(f"  {name:15s} {show(name)}", flush=True)
        write_json(run_dir / f"clamp_world_{p}.json", world_rows)
    # every world done so far (this run's and a parallel one's), JSON's string step keys from here on
    rows = [r for p in sorted({p for p, _ in seeds}) if (run_dir / f"clamp_world_{p}.json").exists()
            for r in read_json(run_dir / f"clamp_world_{p}.json", "a world's rows of em_clamp_finetune.py")]
    steps = [str(s) for s in steps]
    # at each arm's own matched checkpoint (first with seen-task code >= threshold) and at fixed steps
    summary = {}
    for name in ("unclamped", "clamped", "random_clamped"):
        at = lambda r: r[name][str(r[f"{name}_matched"])] if r[f"{name}_matched"] else None
        ok = [r for r in rows if at(r)]
        summary[name] = {
            "n_matched": len(ok), "matched_step": summarize([r[f"{name}_matched"] for r in ok]) if ok else None,
            "offdomain_increase_at_matched": summarize([at(r)["offdomain_misaligned"]
                                                        - r["base"]["offdomain_misaligned"]
                                                        for r in ok]) if ok else None,
            # a base never misaligned off-domain has no ratio (nan: left out of the mean, as eval.summarize does)
            "ratio_at_matched": summarize([at(r)["offdomain_misaligned"] / r["base"]["offdomain_misaligned"]
                                           if r["base"]["offdomain_misaligned"] else math.nan
                                           for r in ok]) if ok else None,
            "unseen_at_matched": summarize([at(r)["code_unseen_misaligned"] for r in ok]) if ok else None,
            "by_step": {s: {m: summarize([r[name][s][m] for r in rows])
                            for m in ("offdomain_misaligned", "code_misaligned", "code_unseen_misaligned",
                                      "valid_fraction")}
                        for s in steps}}
    never = max(map(int, steps)) + 1  # a fine-tune that never matched counts as matched one step after the last
    for name in ("clamped", "random_clamped"):  # paired per seed against the run's own (unclamped) fine-tune
        summary[name]["minus_unclamped"] = {
            "offdomain_misaligned": {s: summarize([r[name][s]["offdomain_misaligned"]
                                                   - r["unclamped"][s]["offdomain_misaligned"]
                                                   for r in rows]) for s in steps},
            "matched_step": summarize([(r[f"{name}_matched"] or never) - (r["unclamped_matched"] or never)
                                       for r in rows])}
    # the ablation step (20 in the runs here)
    at_step = str(cfg.ablation_step) if str(cfg.ablation_step) in steps else steps[-1]
    summary["drift_split"] = drift_split(rows, at_step)
    write_json(run_dir / "clamp_finetune.json", {"summary": summary, "per_seed": rows})
    print(f"\n{run_dir}: n = {len(rows)}; mean over seeds; matched = first checkpoint with seen-task code >= "
          f"{cfg.match_threshold}")
    for name, s in summary.items():
        if name == "drift_split":
            continue
        if s["n_matched"]:
            inc, rat = s["offdomain_increase_at_matched"], s["ratio_at_matched"]
            print(f"  {name:15s} matched {s['n_matched']}/{len(rows)} at step {s['matched_step']['mean']:.1f}: "
                  f"off-domain {mean_ci(inc, 1, 100)} points, "
                  f"{rat['mean']:.1f}x; unseen task code {s['unseen_at_matched']['mean']:.2f}")
        else:
            print(f"  {name:15s} never matched")
        if name != "unclamped":
            d = s["minus_unclamped"]["offdomain_misaligned"][at_step]
            never_both = sum(not r[f"{name}_matched"] and not r["unclamped_matched"] for r in rows)
            print(f"    minus unclamped, paired: off-domain at step {at_step} "
                  f"{mean_ci(d, 1, 100)} points; matched step {mean_ci(s['minus_unclamped']['matched_step'], 1)}"
                  + (f" ({never_both}/{len(rows)} seeds never matched either way: 0 for them)" if never_both else ""))
        print("    by step (code / unseen / off-domain %): " + "  ".join(
            f"{st}: {100 * v['code_misaligned']['mean']:.0f}/{100 * v['code_unseen_misaligned']['mean']:.0f}/"
            f"{100 * v['offdomain_misaligned']['mean']:.1f}" for st, v in s["by_step"].items()))
    d = summary["drift_split"]
    pts = lambda x: "fewer than 2 worlds" if x is None else f"{mean_ci(x, 1, 100)} points, n = {len(x['per_seed'])}"
    print(f"  clamped minus unclamped at step {at_step}, worlds split by their unclamped increase "
          f"(< {100 * LOW_DRIFT:.0f} points: {d['low_worlds']}): low-drift {pts(d['low'])}; others {pts(d['high'])}")
    print(f"    each seed classed by its world's other fine-tune seed: low {pts(d['cross_seed_low'])}; "
          f"others {pts(d['cross_seed_high'])}")


if __name__ == "__main__":
    sys.exit(cli(main, sys.argv[1:]))
