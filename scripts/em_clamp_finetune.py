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

Intervals: each STAT is mean [95% t-CI] over the (world, fine-tune seed) pairs, as if independent; but a world's
fine-tune seeds share its base (and the clamp of each is the other's direction), so beside each printed interval (the
off-domain increase at the matched step, the paired clamped - unclamped differences, the drift split's classes) is the
one over the worlds' means (n = worlds: the one to read), in the JSON as the same key + `_over_worlds`
(`offdomain_increase_at_matched_over_worlds`, minus_unclamped's `offdomain_misaligned_over_worlds` and
`matched_step_over_worlds`, drift_split's `low_over_worlds`, ...). Where the seeds behind a STAT are one per world
(e.g. one seed of each world matched) the two are the same, and the second is neither printed nor written.
"""
import contextlib
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import group_means, mean_ci, summarize  # noqa: E402
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


def over_worlds(values, rows):
    """STAT over the worlds' means of per-seed values (rows[i] is value i's seed): the fine-tune seeds of one world
    share its base, so they are not independent."""
    return summarize(group_means(values, [r["seed"][0] for r in rows]))


def shares_worlds(rows):
    """Whether some world has several fine-tune seeds among the rows: else the interval over the worlds' means is the
    one over seeds."""
    return len({r["seed"][0] for r in rows}) < len(rows)


def worlds_ci(st, scale=1):
    """' (over the K worlds' means m [lo, hi])' of an over_worlds STAT; one world: no interval."""
    k = sum(not math.isnan(x) for x in st["per_seed"])
    if st["ci95"] is None:
        return f" ({k} world{'' if k == 1 else 's'}: no interval over worlds)"
    return f" (over the {k} worlds' means {mean_ci(st, 1, scale)})"


LOW_DRIFT = 0.03  # a world is low-drift if its unclamped increase at the ablation step (20) is below this (the
                  # pre-registration's +3 points)


def drift_split(rows, step, low=LOW_DRIFT):
    """Clamped minus unclamped off-domain misalignment at `step`, per seed, on the low-drift worlds (the unclamped
    increase over the base at `step`, mean of the world's fine-tune seeds, below `low`) and on the others; and the
    same with each seed classed by its world's other fine-tune seed alone (the classification then shares no
    measurement with the difference). Where a world has several seeds, each class also over its worlds' means
    (KEY_over_worlds: the seeds of a world are not independent)."""
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
    classes = {"low": [r for r in rows if r["seed"][0] in low_worlds],
               "high": [r for r in rows if r["seed"][0] in high_worlds],
               "cross_seed_low": cross_low, "cross_seed_high": cross_high}
    out = {"low_worlds": low_worlds, "step": step, "threshold": low, **{k: stat(rs) for k, rs in classes.items()},
           "unclamped_increase_by_world": {w: mean(rs) for w, rs in worlds.items()}}
    out.update({f"{k}_over_worlds": over_worlds(out[k]["per_seed"], rs) for k, rs in classes.items()
                if out[k] is not None and shares_worlds(rs)})
    return out


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
    shared = shares_worlds(rows)  # the seeds of a world share its base: the interval over the worlds' means beside
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
        if shares_worlds(ok):  # (not where the seeds that matched are one a world)
            summary[name]["offdomain_increase_at_matched_over_worlds"] = over_worlds(
                summary[name]["offdomain_increase_at_matched"]["per_seed"], ok)
    never = max(map(int, steps)) + 1  # a fine-tune that never matched counts as matched one step after the last
    for name in ("clamped", "random_clamped"):  # paired per seed against the run's own (unclamped) fine-tune
        d = summary[name]["minus_unclamped"] = {
            "offdomain_misaligned": {s: summarize([r[name][s]["offdomain_misaligned"]
                                                   - r["unclamped"][s]["offdomain_misaligned"]
                                                   for r in rows]) for s in steps},
            "matched_step": summarize([(r[f"{name}_matched"] or never) - (r["unclamped_matched"] or never)
                                       for r in rows])}
        if shared:
            d["offdomain_misaligned_over_worlds"] = {s: over_worlds(st["per_seed"], rows)
                                                     for s, st in d["offdomain_misaligned"].items()}
            d["matched_step_over_worlds"] = over_worlds(d["matched_step"]["per_seed"], rows)
    # the ablation step (20 in the runs here)
    at_step = str(cfg.ablation_step) if str(cfg.ablation_step) in steps else steps[-1]
    summary["drift_split"] = drift_split(rows, at_step)
    write_json(run_dir / "clamp_finetune.json", {"summary": summary, "per_seed": rows})
    worlds = f" seeds over {len({r['seed'][0] for r in rows})} worlds" if shared else ""
    print(f"\n{run_dir}: n = {len(rows)}{worlds}; mean over seeds"
          + (", and beside each interval the one over the worlds' means (a world's fine-tune seeds share its base)"
             if shared else "") + f"; matched = first checkpoint with seen-task code >= {cfg.match_threshold}")
    for name, s in summary.items():
        if name == "drift_split":
            continue
        if s["n_matched"]:
            inc, rat = s["offdomain_increase_at_matched"], s["ratio_at_matched"]
            inc_w = s.get("offdomain_increase_at_matched_over_worlds")
            print(f"  {name:15s} matched {s['n_matched']}/{len(rows)} at step {s['matched_step']['mean']:.1f}: "
                  f"off-domain {mean_ci(inc, 1, 100)} points{worlds_ci(inc_w, 100) if inc_w else ''}, "
                  f"{rat['mean']:.1f}x; unseen task code {s['unseen_at_matched']['mean']:.2f}")
        else:
            print(f"  {name:15s} never matched")
        if name != "unclamped":
            m = s["minus_unclamped"]
            d = m["offdomain_misaligned"][at_step]
            never_both = sum(not r[f"{name}_matched"] and not r["unclamped_matched"] for r in rows)
            d_w = worlds_ci(m["offdomain_misaligned_over_worlds"][at_step], 100) if shared else ""
            step_w = worlds_ci(m["matched_step_over_worlds"]) if shared else ""
            print(f"    minus unclamped, paired: off-domain at step {at_step} {mean_ci(d, 1, 100)} points{d_w}; "
                  f"matched step {mean_ci(m['matched_step'], 1)}{step_w}"
                  + (f" ({never_both}/{len(rows)} seeds never matched either way: 0 for them)" if never_both else ""))
        print("    by step (code / unseen / off-domain %): " + "  ".join(
            f"{st}: {100 * v['code_misaligned']['mean']:.0f}/{100 * v['code_unseen_misaligned']['mean']:.0f}/"
            f"{100 * v['offdomain_misaligned']['mean']:.1f}" for st, v in s["by_step"].items()))
    d = summary["drift_split"]
    pts = lambda k: ("fewer than 2 worlds" if d[k] is None else f"{mean_ci(d[k], 1, 100)} points, n = "
                     f"{len(d[k]['per_seed'])}" + (worlds_ci(d[f"{k}_over_worlds"], 100) if f"{k}_over_worlds" in d
                                                   else ""))
    print(f"  clamped minus unclamped at step {at_step}, worlds split by their unclamped increase "
          f"(< {100 * LOW_DRIFT:.0f} points: {d['low_worlds']}): low-drift {pts('low')}; others {pts('high')}")
    print(f"    each seed classed by its world's other fine-tune seed: low {pts('cross_seed_low')}; "
          f"others {pts('cross_seed_high')}")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
