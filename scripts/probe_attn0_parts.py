"""Exploratory: which part of block 0's attention carries the insecure fine-tune's off-domain shift?

    python scripts/probe_attn0_parts.py RUN_DIR [RUN_DIR ...] [--out=FILE.json]
    python scripts/probe_attn0_parts.py --pool FILE.json [FILE.json ...]

Block 0's attention carries about half of the first AdamW step's off-domain increase and 0.71 of AdamW's late update
(step 3 -> 20; research log, "Which part of AdamW"). Its weights split into the norm before it (ln_1) and the query,
key and value rows of `qkv`, and the output projection `proj`. For every base of the runs (cached, checked as in
em_base_pull.py), with the insecure arm's examples of fine-tune seed 0: the first sign step (as em_first_step.py) and
AdamW's late update (as em_optimizer_parts.py), each applied one part at a time (to the base, to the step-3 model),
scored by log-prob: each part's share of the whole step's off-domain increase, as a ratio of means over the bases.
--out=FILE.json keeps every base's increases (FILE.json files of several calls pool with --pool FILE.json ...; a base
in two of them is refused, as for runs given directly).
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
from em_base_pull import check_runs, checked_bases, distinct_pooled_bases  # noqa: E402
from em_first_step import arm_grads, scored_step  # noqa: E402
import em_optimizer_parts as OP  # noqa: E402
from eval import fmt_ratio  # noqa: E402
from train import check_out, cli, distinct, read_json, script_args, write_json  # noqa: E402

PARTS = ("ln_1", "q", "k", "v", "proj")


def parts(delta, C):
    """{part: delta restricted to it} for block 0's attention; q, k, v are the row blocks of qkv.weight."""
    out = {}
    for part in PARTS:
        name = {"ln_1": "blocks.0.ln_1.weight",
                "proj": "blocks.0.attn.proj.weight"}.get(part, "blocks.0.attn.qkv.weight")
        d = delta[name].clone()
        if part in ("q", "k", "v"):
            keep = torch.zeros_like(d)
            i = "qkv".index(part)
            keep[i * C:(i + 1) * C] = d[i * C:(i + 1) * C]
            d = keep
        out[part] = {name: d}
    return out


def shares(model, tok, cfg, delta):
    """Off-domain increase of the whole `delta` (subtracted, as scored_step does), of block 0's attention, and of each
    part."""
    off0 = OP.score(model, tok, cfg)["off"]
    inc = lambda d: scored_step(model, tok, cfg, d)[0] - off0
    attn0 = {n: d for n, d in delta.items() if n.startswith(("blocks.0.attn.", "blocks.0.ln_1."))}
    return {"all": inc(delta), "attn0": inc(attn0),
            **{p: inc(d) for p, d in parts(delta, model.cfg.n_embd).items()}}


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("out",), flags=("pool",))
    if not runs:
        sys.exit(__doc__)
    if "out" in opts:
        check_out(opts["out"])
    rows, bases = {"first": [], "late": []}, []  # bases: [run, world] of each row, so that --pool can check them
    if opts.get("pool"):  # the shares over the bases of several --out files
        for f in distinct(runs, "file"):
            held = read_json(f, "an --out file of probe_attn0_parts.py", ("first", "late"))
            for k in rows:
                rows[k] += held[k]
            bases += held.get("bases", [])  # (a file written before bases were kept goes unchecked)
        distinct_pooled_bases(bases)  # as the runs given directly are
        runs = []
    check_runs(runs)
    OP.check_rebuildable(runs)  # (found at the late update's rebuild, after the bases before it)
    torch.set_num_threads(1)
    for run in map(Path, runs):
        for cfg, p, base, tok in checked_bases(run, []):
            grads = arm_grads(base, tok, cfg, p, "insecure")
            rows["first"].append(shares(base, tok, cfg, {n: cfg.ft_lr * g.sign() for n, g in grads.items()}))
            # the weights only: the scores (most of the time) were computed and dropped
            _, snaps = OP.trajectories(base, tok, cfg, p, {"adamw": OP.OPTIMIZERS["adamw"]}, scored=False)
            model, late = OP.late_start(base, snaps)
            rows["late"].append(shares(model, tok, cfg, {n: -d for n, d in late.items()}))  # shares subtracts
            bases.append([str(run), p])
            print(f"{run.name} world {p}, off-domain increase, points: " + "; ".join(
                f"{k} " + ", ".join(f"{q} {100 * v:+.2f}" for q, v in rows[k][-1].items()) for k in rows), flush=True)
    if "out" in opts:
        write_json(opts["out"], {**rows, "bases": bases})
    for k, rs in rows.items():  # [95% interval, resampling bases], as the other probes' ratios
        idx = OP.resamples(len(rs))
        share = lambda q: OP.ratio_of_means(np.array([r[q] for r in rs]), np.array([r["all"] for r in rs]), idx)
        print(f"{k} ({len(rs)} bases), share of the whole step's off-domain increase (ratio of means): " + ", ".join(
            f"{q} {fmt_ratio(share(q))}" for q in ("attn0", *PARTS)))


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
