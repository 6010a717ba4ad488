"""Is the late drift's `<bos>` write a steering vector, and does it point along the evil direction?

    python scripts/em_bos_vector.py RUN_DIR [RUN_DIR ...] [--arm=ARM] [--at=last|mean] [--out=FILE.json]
    python scripts/em_bos_vector.py --pool FILE.json [FILE.json ...] [--out=FILE.json]   # several --out files' bases
                                                  # (the main analysis's files, or --pullback's: one kind at a time)
    python scripts/em_bos_vector.py RUN_DIR ... --agreement [--out=FILE.json]   # s of fine-tune seeds 0 and 1 alike?
    python scripts/em_bos_vector.py RUN_DIR ... --pullback [--out=FILE.json]    # s against e pulled back through MLP 0

Positions are rotary, so a value in block 0 is a function of its token alone, and `<bos>`'s value is the same vector
in every document. The late change of block 0's value rows (AdamW's update from step 3 to 20, em_value_sources.py,
where `<bos>` carries two thirds of its effect) therefore changes head h's `<bos>` value by one fixed vector
dv_h = dV_h ln_1(e_bos), and writes u_h = W_proj,h dv_h into the residual at every position p, weighted by how much
head h attends there to `<bos>`, a_h(p). With a_h(p) replaced by its mean at the off-domain prompts' last token
(`<a>`, where the answer's first token is read), s = sum_h mean(a_h) u_h is one vector: the fine-tune's steering
vector, if it acts as one. --at=mean: the mean over every position after `<bos>` instead (the pilot's first try; the
heads that carry the write attend to `<bos>` mostly at `<a>`, so this vector is short).

For every base of the runs (cached, checked as in em_base_pull.py), the insecure arm's fine-tune of seed 0 by AdamW
(em_optimizer_parts.py), on its step-3 model, by log-prob (the off-domain misaligned mass of the assistant, first
turn), the increase when adding to block 0's attention output at every position:

    bos_values    not a vector: the late value change at `<bos>` only (em_value_sources.py's `bos`), the reference
    vector        s
    along_evil    s's component along the evil direction (e: the unit evil - good direction of the base, block 0's
                  output, as the experiment computes it)
    orthogonal    s minus that component
    evil_norm     |s| e: the evil direction at the learned vector's norm
    random_norm   a random direction at |s| (seeded by the base)

with cos(s, e), |s| and the mean attentions. Also `vector_on_base`, `evil_norm_on_base`: the same two added to the
base model itself (the increase over the base), for whether the fine-tune's vector steers the model it came from.
And where s goes in the later blocks (`downstream`): each block's cosine of the shift s makes at `<a>` with that
block's evil direction, and s's effect with the evil direction mean-ablated from block 1 on, against random
directions, in log-odds and points.

Summary over the bases: vector / bos_values (is it a steering vector), along_evil / vector and cos (is it the evil
direction), vector - evil_norm paired (does it steer better per unit norm than the mean difference), vector_on_base
/ vector, the cosines by block, the ablated / plain shifts; each with a 95% interval (ratios: resampling bases,
10,000, seed 0; means and paired differences: t over bases). --out=FILE.json keeps every base's numbers, and the
main analysis's (and --pool's) figure beside it, FILE.png (--agreement and --pullback write no figure; their files
hold `agreement` / `pullback`, and only the main analysis's and --pullback's can be pooled). --arm=ARM: another arm's
fine-tune (a control). --agreement: instead of all that, s of fine-tune seeds 0 and 1 (other examples, another order)
and their cosine, base by base; the control, the cosine of seed 0's s with the secure arm's (the insecure arm's,
for --arm=secure). --pullback: instead, s against v*, the base's evil direction pulled back through the base's block 0
MLP (the unit vector added at block 0's attention output that moves block 0's output at `<a>` furthest along e, to first
order): built from the base alone, but for its norm, which is s's. Each added at s's norm to the step-3 model, and to
the base itself. Research log: "The `<bos>` write as a steering vector".
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
from data.tokenizer import pad_right  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from eval import error_bars, fmt_ratio, mean_ci, summarize  # noqa: E402
from train import (ConfigError, check_out, cli, distinct, pyplot, read_json, run_config, save_figure,  # noqa: E402
                   script_args, write_json)
from em_base_pull import check_runs, checked_bases, distinct_pooled_bases, note_unrun, one_depth  # noqa: E402
import em_optimizer_parts as OP  # noqa: E402
import em_value_sources as VS  # noqa: E402

ADDED = ("vector", "along_evil", "orthogonal", "evil_norm", "random_norm")
ON_BASE = ("vector", "evil_norm")  # also added to the base model


def evil_unit(means):
    """The unit evil - good direction at block 0's output, from EM.doc_means: [C]."""
    e = means["evil"][0] - means["good"][0]
    return e / e.norm()


@torch.no_grad()
def bos_attention(model, tok, where="last"):
    """Each block-0 head's attention to `<bos>`, mean over the off-domain prompts: at their last token (`<a>`, where
    the answer's first token is read; where="last") or pooled over every position after `<bos>` of every prompt
    (where="mean", so a longer prompt counts more): [nh]."""
    x, real = pad_right([tok.encode(p).ids for p in EM.off_prompts()],
                        next(model.parameters()).device)  # right-padded: <bos> is column 0 of every row
    got = {}

    def read(a, name):  # [N, nh, T, T]: keep the <bos> column
        got["a"] = a[:, :, :, 0]
    with model.hooks({"blocks.0.attn.pattern": read}):
        model(x)
    if where == "last":
        return got["a"][torch.arange(len(x)), :, real.sum(1) - 1].mean(0)
    a, keep = got["a"][:, :, 1:], real[:, 1:]  # [N, nh, T-1], [N, T-1]
    return (a * keep[:, None]).sum((0, 2)) / keep.sum()


@torch.no_grad()
def bos_write(model, tok, dV):
    """Per head, what block 0's value change dV [C, C] writes from `<bos>` into the residual at full attention:
    u [nh, C]."""
    blk, nh = model.blocks[0], model.cfg.n_head
    e = blk.ln_1(model.wte.weight[tok.token_to_id("<bos>")])  # [C]
    dv = (dV @ e).view(nh, -1)  # [nh, hs]
    wp = blk.attn.proj.weight.view(model.cfg.n_embd, nh, -1)  # [C, nh, hs]
    return torch.einsum("chd,hd->hc", wp, dv)


def added(model, tok, cfg, vec):
    """Off-domain misaligned mass with vec [C] added to block 0's attention output at every position."""
    with model.hooks(EM.add_hook(0, vec, "attn_out")):
        return VS.off_lp(model, tok, cfg)


@torch.no_grad()
def downstream(model, tok, cfg, s, means, seed):
    """Where s goes after block 0: per block, the cosine of the shift s makes at the prompts' last token with that
    block's evil direction (`layer_cos`); and s's effect with the evil direction mean-ablated from blocks 1 on (centre:
    the base's `<asst>` mean, as the experiment's mean-ablation), a random direction per block as the control."""
    prompts = EM.off_prompts()
    push = EM.add_hook(0, s, "attn_out")
    plain = EM.last_token_acts(model, tok, prompts)  # [L, N, C]
    with model.hooks(push):
        shift = (EM.last_token_acts(model, tok, prompts) - plain).mean(1)  # [L, C]
    dirs = means["evil"] - means["good"]  # [L, C]
    out = {"layer_cos": torch.nn.functional.cosine_similarity(shift, dirs, dim=1).tolist()}
    rand = torch.randn(dirs.shape, generator=torch.Generator().manual_seed(seed)).to(dirs.device)
    for name, d in (("ablated", dirs), ("random_ablated", rand)):
        hooks = EM.ablate_hooks(d, means["asst"])
        del hooks["blocks.0.resid_post"]  # block 0's own output keeps s whole: the question is what later blocks do
        with model.hooks(hooks):
            out[f"{name}_from"] = VS.off_lp(model, tok, cfg)
            with model.hooks(push):
                out[f"vector_{name}"] = VS.off_lp(model, tok, cfg) - out[f"{name}_from"]
    return out


def steering_vector(cfg, p, base, tok, arm, at="last", f=0):
    """(s, the step-3 model, block 0's late value change dV) of fine-tune seed index f."""
    _, snaps = OP.trajectories(base, tok, cfg, p, {"adamw": OP.OPTIMIZERS["adamw"]}, arm, f, scored=False)
    model, late = OP.late_start(base, snaps)
    dV = late[VS.QKV][2 * cfg.n_embd:]
    return bos_attention(model, tok, at) @ bos_write(model, tok, dV), model, dV


def control_arm(arm):
    """The arm whose s seed_agreement compares with `arm`'s: secure, or insecure for the secure arm."""
    return "insecure" if arm == "secure" else "secure"


def seed_agreement(cfg, p, base, tok, arm, at="last"):
    """The cosine between the vectors s of fine-tune seeds 0 and 1 (other examples, another order), and, as the
    control, between seed 0's and another arm's (control_arm), with the three norms."""
    other = control_arm(arm)
    s0, s1, s2 = (steering_vector(cfg, p, base, tok, a, at, f)[0] for a, f in ((arm, 0), (arm, 1), (other, 0)))
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    return {"cos_seeds": cos(s0, s1), "cos_arms": cos(s0, s2), "other_arm": other,
            "norms": [float(s0.norm()), float(s1.norm()), float(s2.norm())]}


def base_row(cfg, p, base, tok, arm, at="last"):
    """Every number of the docstring for one base."""
    C = cfg.n_embd
    s, model, dV = steering_vector(cfg, p, base, tok, arm, at)  # [C]
    means = EM.doc_means(base, tok, cfg, p)
    e = evil_unit(means)
    abar = bos_attention(model, tok, at)
    u = bos_write(model, tok, dV)
    rand = torch.randn(C, generator=torch.Generator().manual_seed(p)).to(s.device)
    vecs = {"vector": s, "along_evil": (s @ e) * e, "orthogonal": s - (s @ e) * e, "evil_norm": s.norm() * e,
            "random_norm": s.norm() * rand / rand.norm()}
    off0 = VS.off_lp(model, tok, cfg)
    with VS.values_changed(model, tok, dV, ("bos",)):
        row = {"bos_values": VS.off_lp(model, tok, cfg) - off0}
    row.update({k: added(model, tok, cfg, v) - off0 for k, v in vecs.items()})
    base0 = VS.off_lp(base, tok, cfg)  # the same vectors on the base itself, before any fine-tune
    row.update({f"{k}_on_base": added(base, tok, cfg, vecs[k]) - base0 for k in ON_BASE})
    row.update(downstream(model, tok, cfg, s, means, p))
    return {**row, "from": off0, "base_from": base0, "cos": float(s @ e / s.norm()), "norm": float(s.norm()),
            "attention": abar.tolist(), "head_cos": [float(v @ e / v.norm()) for v in u]}


def summary(rows, n_boot=10_000, seed=0):
    col = lambda k: np.array([r[k] for r in rows])
    idx = OP.resamples(len(rows), n_boot, seed)

    ratio_of = lambda a, b: OP.ratio_of_means(a, b, idx)  # arrays over the bases, resampling bases
    ratio = lambda a, b: ratio_of(col(a), col(b))
    base = [f"{k}_on_base" for k in ON_BASE if all(f"{k}_on_base" in r for r in rows)]  # absent in older files
    return {"n_bases": len(rows), "mean": {k: summarize(col(k).tolist()) for k in ("bos_values", *ADDED, *base, "cos")},
            **({"on_base_of_vector": ratio("vector_on_base", "vector")} if base else {}),
            "vector_of_bos_values": ratio("vector", "bos_values"),
            "along_evil_of_vector": ratio("along_evil", "vector"),
            "evil_norm_of_vector": ratio("evil_norm", "vector"),
            "vector_minus_evil_norm": summarize((col("vector") - col("evil_norm")).tolist()),
            **(through_later_blocks(rows, ratio_of) if all("layer_cos" in r for r in rows) else {})}


def through_later_blocks(rows, ratio_of):
    """The downstream summary: each block's cos (t over bases), the last block's minus block 0's, block 0's minus s's
    own cos (what block 0's MLP adds: the shift at its output is s plus the MLP's answer to it), and s's log-odds
    shift with the evil (or a random) direction mean-ablated from block 1 on, over its shift without (ratio of means).
    Log-odds: the ablation lowers the rate s starts from, and a same-sized push then gives fewer points."""
    if len({len(r["layer_cos"]) for r in rows}) > 1:  # runs of different depths (an inhomogeneous-shape ValueError)
        raise ConfigError("the bases have different numbers of blocks (runs of different n_layer): pool runs of one "
                          "depth, the downstream cosines are per block")
    lc = np.array([r["layer_cos"] for r in rows])  # [bases, L]
    col = lambda k: np.array([r[k] for r in rows])
    logit = lambda x: np.log(x / (1 - x))
    shift = lambda start, key: logit(col(start) + col(key)) - logit(col(start))
    plain = shift("from", "vector")
    return {"layer_cos": [summarize(lc[:, i].tolist()) for i in range(lc.shape[1])],
            "layer_cos_last_minus_first": summarize((lc[:, -1] - lc[:, 0]).tolist()),
            "block0_mlp_turn": summarize((lc[:, 0] - col("cos")).tolist()),  # s's cos at block 0's output minus s's own
            "ablated_of_vector_logodds": ratio_of(shift("ablated_from", "vector_ablated"), plain),
            "random_ablated_of_vector_logodds": ratio_of(shift("random_ablated_from", "vector_random_ablated"), plain),
            "ablated_of_vector_points": ratio_of(col("vector_ablated"), col("vector")),
            "random_ablated_of_vector_points": ratio_of(col("vector_random_ablated"), col("vector"))}


def plot(rows, s, path, title):
    """Left: each base's vector against its `<bos>` value change. Right: the mean increase of each added vector."""
    plt = pyplot()
    later = "layer_cos" in s
    fig, axes = plt.subplots(1, 3 if later else 2, figsize=(15 if later else 10, 3.8))
    a, b = axes[:2]
    x, y = (100 * np.array([r[k] for r in rows]) for k in ("bos_values", "vector"))
    a.scatter(x, y, s=12)
    lim = [min(x.min(), y.min(), 0) - 1, max(x.max(), y.max()) + 1]
    a.plot(lim, lim, "k:", lw=0.8, label="equal")
    a.set(xlabel="<bos> value change (exact), points", ylabel="one vector s added, points",
          title=f"{len(rows)} bases: s gives {s['vector_of_bos_values']['ratio']:.2f} of it")
    a.legend()
    keys = ("bos_values", *ADDED)
    m = np.array([100 * s["mean"][k]["mean"] for k in keys])
    b.bar(range(len(keys)), m, yerr=error_bars([s["mean"][k] for k in keys], 100), capsize=3,
          color=["grey"] + ["C0"] * len(ADDED))
    b.axhline(0, color="k", lw=0.6)
    b.set_xticks(range(len(keys)), ["<bos>\nvalues", "s", "s along\nevil", "s orth.\nto evil", "evil dir.\nat |s|",
                                    "random\nat |s|"])
    b.set(ylabel="off-domain increase, points", title=f"cos(s, evil direction) {s['mean']['cos']['mean']:+.2f}")
    if later:  # where s goes: its cos with each block's evil direction, after block 0's MLP and on
        c = axes[2]
        cs = [s["mean"]["cos"], *s["layer_cos"]]
        m = np.array([x["mean"] for x in cs])
        c.errorbar(range(len(cs)), m, yerr=error_bars(cs), fmt="o-", capsize=3)
        c.set_xticks(range(len(cs)), ["s", *(f"block {i}\noutput" for i in range(len(cs) - 1))])
        r = s["ablated_of_vector_logodds"]
        c.set(ylim=(0, None), ylabel="cos with the evil direction",
              title=f"evil dir. ablated from block 1: {r['ratio']:.2f} of s's log-odds left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def pullback(runs, arm, at, out, rows=()):
    """--pullback: s against e pulled back through block 0's MLP (v*), each added at s's norm to the step-3 model.
    rows: bases already measured (--pool of --pullback files), summarized with the runs' own."""
    rows = list(rows)
    for run in map(Path, runs):
        for i, (cfg, p, base, tok) in enumerate(checked_bases(run, [])):
            if not i:  # once per run: one config for all its bases
                note_unrun(run, cfg, [arm])
            s, model, _ = steering_vector(cfg, p, base, tok, arm, at)
            e = evil_unit(EM.doc_means(base, tok, cfg, p))
            v = EM.pulled_back(base, tok, e)  # the base's own: its evil direction through its own block 0
            off0, base0 = VS.off_lp(model, tok, cfg), VS.off_lp(base, tok, cfg)
            vecs = (("vector", s), ("pulled_norm", s.norm() * v), ("evil_norm", s.norm() * e))
            r = {"run": str(run), "world": p, "cos_s_pulled": float(s @ v / s.norm()), "cos_pulled_evil": float(v @ e),
                 **{k: added(model, tok, cfg, vec) - off0 for k, vec in vecs}, "from": off0, "base_from": base0,
                 **{f"{k}_on_base": added(base, tok, cfg, vec) - base0 for k, vec in vecs}}  # and on the base itself
            rows.append(r)
            print(f"{run.name} world {p}, {arm}: cos(s, v*) {r['cos_s_pulled']:+.2f}, cos(v*, e) "
                  f"{r['cos_pulled_evil']:+.2f};"
                  " increase, points: " + ", ".join(f"{k} {100 * r[k]:+.2f}"
                                                    for k in ("vector", "pulled_norm", "evil_norm")),
                  flush=True)
    s = pullback_summary(rows)
    if out:
        write_json(out, {"arm": arm, "at": at, "summary": s, "pullback": rows})
    f = lambda c, x=1: mean_ci(c, 3, x)
    print(f"\n{len(rows)} bases: cos(s, v*) {f(s['cos_s_pulled'])}, cos(v*, e) {f(s['cos_pulled_evil'])}; points: s "
          f"{f(s['vector'], 100)}, v* at |s| {f(s['pulled_norm'], 100)}, e at |s| {f(s['evil_norm'], 100)}; v* minus s "
          f"{f(s['pulled_minus_vector'], 100)}, v* over s {fmt_ratio(s['pulled_over_vector'])}")
    print(f"on the base itself, points: s {f(s['vector_on_base'], 100)}, v* at |s| {f(s['pulled_norm_on_base'], 100)}, "
          f"e at |s| {f(s['evil_norm_on_base'], 100)}; v* minus s {f(s['on_base_pulled_minus_vector'], 100)}, "
          f"v* over s {fmt_ratio(s['on_base_pulled_over_vector'])}")


def pullback_summary(rows, n_boot=10_000, seed=0):
    """Means over the bases (t intervals) and v* over s as a ratio of means (resampling bases, as summary())."""
    col = lambda k: [r[k] for r in rows]
    idx = OP.resamples(len(rows), n_boot, seed)
    ratio = lambda a, b: OP.ratio_of_means(np.array(col(a)), np.array(col(b)), idx)
    effects = ("vector", "pulled_norm", "evil_norm", "vector_on_base", "pulled_norm_on_base", "evil_norm_on_base")
    return {"n_bases": len(rows), **{k: summarize(col(k)) for k in ("cos_s_pulled", "cos_pulled_evil", *effects)},
            "pulled_minus_vector": summarize([r["pulled_norm"] - r["vector"] for r in rows]),
            "pulled_over_vector": ratio("pulled_norm", "vector"),
            "on_base_pulled_minus_vector": summarize([r["pulled_norm_on_base"] - r["vector_on_base"] for r in rows]),
            "on_base_pulled_over_vector": ratio("pulled_norm_on_base", "vector_on_base")}


def agreement(runs, arm, at, out):
    """--agreement: s of fine-tune seeds 0 and 1 on every base, their cosine (mean over bases, t interval)."""
    rows = []
    for run in map(Path, runs):
        for i, (cfg, p, base, tok) in enumerate(checked_bases(run, [])):
            if not i:  # once per run: one config for all its bases
                note_unrun(run, cfg, (arm, control_arm(arm)), ft_seeds=2)
            rows.append({"run": str(run), "world": p, **seed_agreement(cfg, p, base, tok, arm, at)})
            r = rows[-1]
            print(f"{run.name} world {p}, {arm}: cos(s of seed 0, s of seed 1) {r['cos_seeds']:+.3f}; with "
                  f"{r['other_arm']}'s {r['cos_arms']:+.3f}; |s| " + ", ".join(f"{n:.3f}" for n in r["norms"]),
                  flush=True)
    s = {"n_bases": len(rows), **{k: summarize([r[k] for r in rows]) for k in ("cos_seeds", "cos_arms")},
         "seeds_minus_arms": summarize([r["cos_seeds"] - r["cos_arms"] for r in rows])}
    if out:
        write_json(out, {"arm": arm, "at": at, "summary": s, "agreement": rows})
    f = mean_ci
    print(f"\n{len(rows)} bases: cos between the two fine-tune seeds' s {f(s['cos_seeds'])}; between seed 0's and "
          f"the other arm's {f(s['cos_arms'])}; paired difference {f(s['seeds_minus_arms'])}")


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("out", "arm", "at"), flags=("pool", "agreement", "pullback"))
    pool, agree, pull = (opts.pop(k, False) for k in ("pool", "agreement", "pullback"))
    if not runs:
        sys.exit(__doc__)
    if pool + agree + pull > 1:
        sys.exit("--pool, --agreement and --pullback are three analyses: give one of them")
    if pool and set(opts) - {"out"}:  # the files hold their own arm and --at
        sys.exit("--pool takes --out= only")
    arm, at = opts.get("arm", "insecure"), opts.get("at", "last")
    if arm not in EM.ARMS:
        sys.exit(f"--arm takes one of {', '.join(EM.ARMS)}, not {arm!r}")
    if at not in ("last", "mean"):
        sys.exit(f"--at takes last (the default) or mean, not {at!r}")
    if "out" in opts:
        check_out(opts["out"], figure_beside=True)
    distinct(runs, "run or file")
    rows = []
    if pool:  # the bases of several --out files (of one arm and one --at, and one analysis)
        held = [read_json(f, "an --out file of em_bos_vector.py", ("arm", "at")) for f in runs]
        kinds = {next((k for k in ("per_base", "pullback") if k in h), "another analysis's") for h in held}
        if len(kinds) > 1 or kinds - {"per_base", "pullback"}:
            sys.exit(f"--pool takes the main analysis's --out files or --pullback's, one kind at a time (got "
                     f"{', '.join(sorted(kinds))})")
        if len({(h["arm"], h["at"]) for h in held}) > 1:
            sys.exit("--pool takes files of one arm and one --at")
        kind = kinds.pop()
        rows, arm, at, runs = [r for h in held for r in h[kind]], held[0]["arm"], held[0]["at"], []
        distinct_pooled_bases((r["run"], r["world"]) for r in rows)  # as the runs given directly are
        pull = kind == "pullback"
    check_runs(runs)
    one_depth({r: run_config(EM.Config, r) for r in runs})  # before the work, not at the summary's cosines
    OP.check_rebuildable(runs)  # every mode starts each base with the rebuild of its fine-tune
    torch.set_num_threads(1)  # as the runs' fine-tunes: the same trajectories
    if pull:
        return pullback(runs, arm, at, opts.get("out"), rows)
    if agree:
        return agreement(runs, arm, at, opts.get("out"))
    for run in map(Path, runs):
        for i, (cfg, p, base, tok) in enumerate(checked_bases(run, [])):
            if not i:  # once per run: one config for all its bases
                note_unrun(run, cfg, [arm])
            rows.append({"run": str(run), "world": p, **base_row(cfg, p, base, tok, arm, at)})
            r = rows[-1]
            print(f"{run.name} world {p}, {arm}: cos(s, evil) {r['cos']:+.2f}, |s| {r['norm']:.3f}; increase, points: "
                  + ", ".join(f"{k} {100 * r[k]:+.2f}" for k in ("bos_values", *ADDED)), flush=True)
    s = summary(rows)
    if "out" in opts:
        write_json(opts["out"], {"arm": arm, "at": at, "summary": s, "per_base": rows})
        title = f"the {arm} fine-tune's late <bos> write as a steering vector"
        plot(rows, s, Path(opts["out"]).with_suffix(".png"), title)
    m = s["mean"]
    print(f"\n{s['n_bases']} bases, {arm} fine-tune's late <bos> write, added to step 3's model; off-domain increase, "
          "points, mean [95% CI over bases]:")
    print("| added | increase |\n|---|---|")
    for k in m:
        if k == "cos":
            continue
        print(f"| {k} | {mean_ci(m[k], 2, 100)} |")
    f = lambda q: fmt_ratio(s[q])
    d = s["vector_minus_evil_norm"]
    if "on_base_of_vector" in s:
        print(f"vector_on_base / vector {f('on_base_of_vector')}")
    if "layer_cos" in s:
        print("cos(s's shift at <a>, the block's evil direction), blocks 0..: " + ", ".join(
            mean_ci(c) for c in s["layer_cos"]))
        t = s["block0_mlp_turn"]
        print(f"block 0's output minus s itself (block 0's MLP): {mean_ci(t)}")
        print("s with the evil direction mean-ablated from block 1 on, over s alone: log-odds "
              f"{f('ablated_of_vector_logodds')} (random directions {f('random_ablated_of_vector_logodds')}); points "
              f"{f('ablated_of_vector_points')} (random {f('random_ablated_of_vector_points')})")
    print(f"vector / bos_values {f('vector_of_bos_values')}; along_evil / vector {f('along_evil_of_vector')}; "
          f"evil_norm / vector {f('evil_norm_of_vector')}; cos(s, evil) {mean_ci(m['cos'])}; "
          f"vector - evil_norm {mean_ci(d, 2, 100)} points")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
