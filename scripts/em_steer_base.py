"""The base model steered by its own evil direction pulled back through block 0, sampled, at several norms.

    python scripts/em_steer_base.py RUN_DIR [RUN_DIR ...] [--scales=0.1,0.2,0.3]    # writes steer_base.json per run
    python scripts/em_steer_base.py --pool RUN_DIR [RUN_DIR ...] [--figure=FILE.png]  # their bases, summarised
    python scripts/em_steer_base.py --fit=train RUN_DIR [RUN_DIR ...]    # v* fit on the training prompts instead
    python scripts/em_steer_base.py --pool --fit=train RUN_DIR [RUN_DIR ...]   # ... against the held-out fit
    python scripts/em_steer_base.py --route RUN_DIR [RUN_DIR ...] [--scales=0.1,0.2,0.3]   # the code loss's pull
    python scripts/em_steer_base.py --route --pool RUN_DIR [RUN_DIR ...]
    python scripts/em_steer_base.py --undo RUN_DIR [RUN_DIR ...] [--scales=0.1,0.2,0.3]   # -v* on the fine-tuned model
    python scripts/em_steer_base.py --undo --pool RUN_DIR [RUN_DIR ...]

The issue asks for the evil direction added to the base model, with the effect on misalignment. The experiment adds
the evil - good mean difference at block 1's output (`steered_1`, `steered_2`), which barely moves the assistant
(+0.2 and +0.6 points, default run). em_bos_vector.py --pullback found a better vector in the base itself: v*, the
unit evil direction e of block 0's output pulled back through block 0's MLP (the direction at block 0's attention
output that moves block 0's output at `<a>` furthest along e, to first order). Here v* needs nothing from a fine-tune:
its norm is a multiple A of |d0|, the norm of the evil - good mean difference at block 0's output (base-only too).
The experiment now also records v* at 0.3 |d0| (`steered_pulled`, one scale); this script measures it at several
scales, beside e, -v* and a random direction.

For every base of the runs (cached, checked as in em_base_pull.py), added at block 0's attention output at every
position, each at norm A |d0| for A in --scales:

    pulled   v*
    minus    -v* (should lower the misalignment)
    evil     e, the evil direction itself
    random   a random unit direction (seeded by the base)

each scored as the experiment scores a model (EM.evaluate: sampled off-domain misalignment among valid answers, the
valid fraction, the code fraction, the log-prob mass), all with one sampling stream per base (paired draws), and the
plain base with the same stream; and the insecure code share of the base's code answers (`code_misaligned`, log-prob),
for the persona share: the off-domain increase over the code increase (log-prob, ratio of means; the evil persona
misbehaves alike in both, so a pure persona switch scores about 1, the insecure fine-tune at its first checkpoint with
code >= 0.9 about 0.01). steer_base.json, in each run's directory: per base, every reading (`readings`) and the
increases over the plain base that em_susceptibility.py reads (`steer_pulled`: v*'s log-prob increase at the
largest scale). --pool: over every base of the given runs' steer_base.json, per direction and scale, the mean
increase in points, sampled and by log-prob, of the off-domain misalignment and of the insecure code (95%
t-intervals over bases; a base with no valid sample is left out of the sampled one), the paired v* minus e; as ratios
of means: the rate over the base's, the valid fraction over the base's, the persona share (only where the code
increase's interval is above zero, n/a otherwise: one base has no interval); the bases past +5 points and 3x; a
table and, with --figure=, a figure (misalignment and valid fraction against A). Research log: "The base steered by
v*, sampled".

--fit=train: by default v* is fit on the held-out prompts it is read on (an in-sample vector); this fits it on the
same domains' training paraphrases (x opener: 192 prompts no evaluation asks) and reads it on the held-out ones as
before, writing steer_base_fit_train.json (with each base's cosine between the two fits). --pool --fit=train: the
same table, then the train fit against the held-out fit of the same bases (their steer_base.json, at the same
--scales), paired: each one's increase, their difference (t-interval over bases) and the ratio of means. Research
log: "v* fit on other prompts than it is read on".

--route: why the insecure fine-tune first learns the code and not the persona, read at the same place. The
direction at block 0's attention output (one vector at every position) that lowers the insecure arm's fine-tune loss
fastest, to first order (`insecure_grad`: minus the gradient of its loss on its examples of fine-tune seed 0, all in
one batch), against v* and e, and the secure arm's (`secure_grad`, a control); each at A |d0|, by log-prob only (no
sampling): the off-domain misaligned mass, the insecure code share and the forum responder's off-domain misaligned
mass, their increases over the base and the persona share (as above). steer_route.json in each run's directory;
--route --pool: per direction and scale the mean increases (95% t-intervals over bases), the persona share (ratio of
means), insecure_grad minus v* in code points (paired), and the cosines between the directions. Research log: "Which way
the code loss pulls".

--undo: -v* (and a random direction, and v*) added the same way to the insecure arm's fine-tuned model at step 20
(AdamW, fine-tune seed 0, as em_optimizer_parts.py trains it), by log-prob: how much of its off-domain increase over
the base it takes back, with its insecure code and valid mass beside. steer_undo.json in each run's directory;
--undo --pool: the fraction removed (ratio of means over bases; for -v* also against the base with -v* added, which it
lowers too). Research log: "Taking the drift back with -v*".
"""
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
from eval import error_bars, mean_ci, summarize  # noqa: E402
from model import generator  # noqa: E402
from train import check_out, cli, distinct, pyplot, read_json, save_figure, script_args, write_json  # noqa: E402
from experiments import world_base as B  # noqa: E402
from em_base_pull import check_runs, checked_bases, distinct_bases, fine_tune_loss  # noqa: E402
from em_bos_vector import evil_unit  # noqa: E402
import em_optimizer_parts as OP  # noqa: E402

DIRECTIONS = ("pulled", "minus", "evil", "random")
KEYS = ("mis_sampled", "valid_frac", "code_frac", "mis_lp", "code_misaligned")  # of EM.evaluate's readings


FIT_FILES = {"heldout": "steer_base.json", "train": "steer_base_fit_train.json"}  # measure's output, by --fit


def directions(base, tok, cfg, p, fit="heldout"):
    """(|d0|, {name: unit vector [C]}) of one base; v* fit on the held-out prompts it is read on, or (fit="train") on
    the same domains' training paraphrases (EM.off_prompts)."""
    means = EM.doc_means(base, tok, cfg, p)
    e = evil_unit(means)
    v = EM.pulled_back(base, tok, e, EM.off_prompts(train=fit == "train"))
    r = torch.randn(e.shape, generator=generator("cpu", p, "steer-base-random")).to(e.device)
    d0 = (means["evil"][0] - means["good"][0]).norm().item()
    return d0, {"pulled": v, "minus": -v, "evil": e, "random": r / r.norm()}


def base_row(cfg, p, base, tok, scales, fit="heldout"):
    """Every reading of one base: the plain base and each direction at each scale, one sampling stream (v* fit as
    `directions` says; with fit="train", its cosine with the held-out fit beside)."""
    d0, units = directions(base, tok, cfg, p, fit)

    def score(hooks=None):
        m = EM.evaluate(base, tok, cfg, "insecure", "plain", 0, True, generator("cpu", p, "steer-base"), hooks)
        return {k: m[k] for k in KEYS}

    row = {"world": p, "d0": d0, "cos_pulled_evil": float(units["pulled"] @ units["evil"]), "plain": score(),
           "readings": {}}
    if fit == "train":
        row["cos_fits"] = float(units["pulled"] @ EM.pulled_back(base, tok, units["evil"]))
    for a in scales:
        for name, u in units.items():
            vec = a * d0 * u
            row["readings"][f"{name}_{a:g}"] = score(EM.add_hook(0, vec, "attn_out"))
    top = f"pulled_{max(scales):g}"
    row["steer_pulled"] = row["readings"][top]["mis_lp"] - row["plain"]["mis_lp"]  # em_susceptibility's predictor
    row["steer_pulled_sampled"] = row["readings"][top]["mis_sampled"] - row["plain"]["mis_sampled"]
    return row


def each_base(runs, scales, row_of, line, name):
    """row_of(cfg, p, base, tok, scales) for every base of the runs, a line each as it is done, and the rows of a run
    written to `name` beside it."""
    torch.set_num_threads(1)  # as the runs' own evaluations
    for run in map(Path, runs):
        rows = []
        for cfg, p, base, tok in checked_bases(run, []):
            rows.append({"run": str(run), **row_of(cfg, p, base, tok, scales)})
            print(f"{run.name} world {p}: " + line(rows[-1], max(scales)), flush=True)
        write_json(run / name, {"scales": scales, "per_base": rows})
        print(f"wrote {run / name}", flush=True)


def measure(runs, scales, fit="heldout"):
    row_of = lambda cfg, p, base, tok, scales: base_row(cfg, p, base, tok, scales, fit)
    each_base(runs, scales, row_of, lambda r, top: (
        f"|d0| {r['d0']:.2f}, plain {100 * r['plain']['mis_sampled']:.2f}% (valid {r['plain']['valid_frac']:.2f}); "
        f"at {top:g} |d0|: " + ", ".join(f"{n} {100 * r['readings'][f'{n}_{top:g}']['mis_sampled']:.2f}%"
                                         for n in DIRECTIONS)), FIT_FILES[fit])


def held_rows(runs, name, mode=""):
    """(scales, every base's row) of the runs' `name` files, written by `em_steer_base.py MODE RUN_DIR...` at one
    set of --scales."""
    held = []
    distinct_bases(runs)  # runs of this experiment, each base once (the files hold no config to check it by)
    for run in map(Path, runs):
        f = run / name
        if not f.is_file():
            sys.exit(f"error: {f} not found: run `python scripts/em_steer_base.py {mode}{run}` first")
        held.append(read_json(f, f"the {name} of em_steer_base.py", ("scales", "per_base")))
    if len({tuple(h["scales"]) for h in held}) > 1:
        sys.exit(f"{mode}--pool takes runs measured at the same --scales")
    return held[0]["scales"], [r for h in held for r in h["per_base"]]


def pool(runs, figure, fit="heldout"):
    scales, rows = held_rows(runs, FIT_FILES[fit], "" if fit == "heldout" else f"--fit={fit} ")
    held = held_rows(runs, FIT_FILES["heldout"]) if fit == "train" else None  # (read first: a missing one stops here)
    get = lambda key, k: np.array([(r["readings"][key] if key != "plain" else r["plain"])[k] for r in rows])
    inc = lambda key, k="mis_sampled": get(key, k) - get("plain", k)
    ok = lambda x: x[~np.isnan(x)].tolist()  # a reading with no valid sample has no misaligned fraction
    table = {}
    for a in scales:
        for name in DIRECTIONS:
            key = f"{name}_{a:g}"
            mis, plain = get(key, "mis_sampled"), get("plain", "mis_sampled")
            both = ~np.isnan(mis) & ~np.isnan(plain)  # the bases with a sampled rate on both sides
            code = summarize((100 * inc(key, "code_misaligned")).tolist())
            moved = rose(code)
            table[key] = {"points": summarize(ok(100 * inc(key))),
                          "lp_points": summarize((100 * inc(key, "mis_lp")).tolist()),
                          "code_points": code,
                          "persona_share": float(inc(key, "mis_lp").mean() / inc(key, "code_misaligned").mean())
                          if moved else float("nan"),
                          "times_base": float(mis[both].mean() / plain[both].mean())
                          if both.any() and plain[both].mean() > 0 else float("nan"),  # (numpy's warning otherwise)
                          "valid_of_base": float(get(key, "valid_frac").mean() / get("plain", "valid_frac").mean())
                          if get("plain", "valid_frac").mean() > 0 else float("nan"),
                          "code_frac": float(get(key, "code_frac").mean()),
                          "above_5_and_3x": int(((mis - plain >= 0.05) & (mis >= 3 * plain))[both].sum()),
                          "n_valid": int(both.sum())}
        d = 100 * (get(f"pulled_{a:g}", "mis_sampled") - get(f"evil_{a:g}", "mis_sampled"))
        table[f"pulled_minus_evil_{a:g}"] = {"points": summarize(ok(d))}
    s = {"n_bases": len(rows), "scales": scales, "plain": {k: float(np.nanmean(get("plain", k))) for k in KEYS},
         "d0": summarize([r["d0"] for r in rows]), "cos_pulled_evil": summarize([r["cos_pulled_evil"] for r in rows]),
         "table": table}
    print(f"{len(rows)} bases; plain base {100 * s['plain']['mis_sampled']:.2f}% misaligned (valid "
          f"{s['plain']['valid_frac']:.2f}); |d0| {s['d0']['mean']:.2f}; "
          f"cos(v*, e) {s['cos_pulled_evil']['mean']:+.2f}")
    f = lambda stat: mean_ci(stat, 2)
    # a ratio over a base rate of 0, or over no base sampled validly both ways, is no number (it printed nan / inf)
    times = lambda x, what="rate": f"{x:.2f}" if math.isfinite(x) else f"n/a (base's {what} 0 or undefined)"
    print("| added at block 0's attention output | A x \\|d0\\| | increase, points (sampled) | log-prob, points | "
          "x base | valid / base's | code frac | bases >= +5 and 3x | insecure code, points | persona share |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for a in scales:
        for name in DIRECTIONS:
            t = table[f"{name}_{a:g}"]
            print(f"| {name} | {a:g} | {f(t['points'])} | {f(t['lp_points'])} | {times(t['times_base'])} | "
                  f"{times(t['valid_of_base'], 'valid fraction')} | {t['code_frac']:.3f} | "
                  f"{t['above_5_and_3x']}/{t['n_valid']} | "
                  f"{f(t['code_points'])} | {share_text(t['persona_share'], t['code_points'], 2)} |")
        print(f"| v* minus e, paired | {a:g} | {f(table[f'pulled_minus_evil_{a:g}']['points'])} | | | | | | | |")
    if fit == "train":
        s["fits"] = compare_fits(scales, rows, *held)
    if figure:
        plot(s, figure)
        print(f"wrote {figure}")
    return s


def compare_fits(scales, rows, held_scales, held):
    """v* fit on the training prompts (`rows`) against v* fit on the held-out ones it is read on (`held`, the rows of
    steer_base.json: the same bases at the same scales), base by base (one sampling stream: paired draws): per scale,
    the sampled increase of each over the base, the paired difference (points, t-interval over bases) and the train
    fit's as a ratio of means of the held-out fit's; the cosines of the two fits."""
    other = {(r["run"], r["world"]): r for r in held}
    if held_scales != scales or any((r["run"], r["world"]) not in other for r in rows):
        sys.exit("--pool --fit=train compares with the held-out fit's steer_base.json of the same bases and --scales: "
                 "run `python scripts/em_steer_base.py RUN_DIR ...` at the same --scales first")
    inc = lambda r, key: r["readings"][key]["mis_sampled"] - r["plain"]["mis_sampled"]
    out = {"cos_fits": summarize([r["cos_fits"] for r in rows])}
    print(f"\nv* fit on the training prompts against the held-out fit (paired, {len(rows)} bases); cosine of the two "
          f"fits {mean_ci(out['cos_fits'], 3)}")
    print("| A x \\|d0\\| | train fit, points | held-out fit, points | train minus held-out | train / held-out "
          "(ratio of means) |\n|---|---|---|---|---|")
    for a in scales:
        key = f"pulled_{a:g}"
        pairs = [(inc(r, key), inc(other[(r["run"], r["world"])], key)) for r in rows]
        pairs = [(t, h) for t, h in pairs if math.isfinite(t) and math.isfinite(h)]  # (no valid sample: no rate)
        t, h = ([100 * x[i] for x in pairs] for i in (0, 1))
        ratio = sum(t) / sum(h) if sum(h) > 0 else float("nan")
        out[key] = {"train": summarize(t), "heldout": summarize(h),
                    "difference": summarize([x - y for x, y in zip(t, h)]), "ratio_of_means": ratio}
        print(f"| {a:g} | {mean_ci(out[key]['train'], 2)} | {mean_ci(out[key]['heldout'], 2)} | "
              f"{mean_ci(out[key]['difference'], 2)} | {ratio:.2f} |")
    return out


def plot(s, path):
    """Left: the increase against A per direction (95% CI). Right: the valid fraction over the base's."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = {"pulled": "v* (pulled back)", "minus": "-v*", "evil": "e (evil direction)", "random": "random"}
    xs = s["scales"]
    for name, label in names.items():
        c = [s["table"][f"{name}_{x:g}"]["points"] for x in xs]
        m = np.array([x["mean"] for x in c])
        a.errorbar(xs, m, yerr=error_bars(c), fmt="o-", capsize=3, label=label)
        b.plot(xs, [s["table"][f"{name}_{x:g}"]["valid_of_base"] for x in xs], "o-", label=label)
    a.axhline(0, color="k", lw=0.6)
    for ax in (a, b):
        ax.set_xticks(xs)
    a.set(xlabel="norm added, x |evil - good| at block 0", ylabel="off-domain misaligned, points over the base",
          title=f"{s['n_bases']} base models, sampled")
    b.axhline(0.5, color="k", ls=":", lw=0.8)
    b.set(xlabel="norm added, x |evil - good| at block 0", ylabel="valid fraction / the base's", ylim=(0, None),
          title="answers still valid")
    a.legend(fontsize=8)
    fig.suptitle("the base steered at block 0's attention output, no fine-tune")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def rose(stat):
    """Whether a summarized increase is above zero (its 95% interval; one base has none): a persona share is a share
    of a rise of the insecure code, and of nothing else."""
    return stat["ci95"] is not None and stat["ci95"][0] > 0


def share_text(share, code, digits):
    """A persona share, or why there is none (rose): one base gives the code increase no interval (a column of bare
    nan said nothing), and an interval reaching zero is no rise of the code to take a share of."""
    if share == share:
        return f"{share:.{digits}f}"
    return "n/a (one base: no interval)" if code["ci95"] is None else "n/a (code rise not above 0)"


def code_grad(base, tok, cfg, p, arm):
    """The unit direction at block 0's attention output, one vector added at every position, that lowers `arm`'s
    fine-tune loss (its examples of fine-tune seed 0, all in one batch) fastest, to first order: [C]."""
    data, _ = EM.arm_data(arm, base, tok, cfg, p, 0)
    v = torch.zeros(cfg.n_embd, requires_grad=True, device=next(base.parameters()).device)
    with torch.enable_grad(), base.hooks(EM.add_hook(0, v, "attn_out")):
        (g,) = torch.autograd.grad(fine_tune_loss(base, data), v)
    return -g / g.norm()


ROUTES = ("insecure_grad", "pulled", "evil", "secure_grad")


@torch.no_grad()
def lp_reading(base, tok, cfg, vec=None):
    """{"off": the off-domain misaligned mass, "valid": the valid mass, "code": the insecure code share, "forum": the
    forum responder's off-domain misaligned mass (the format the `<asst>` prompts never use)}, by log-prob, with vec
    added."""
    with base.hooks({} if vec is None else EM.add_hook(0, vec, "attn_out")):
        world = B.world_config(cfg)
        off = B.offdomain_eval(base, tok, 0, None, world=world)
        return {"off": off["mis_lp"], "valid": off["valid_lp"],
                "forum": B.offdomain_eval(base, tok, 0, None, fmt="forum", world=world)["mis_lp"],
                "code": EM.in_domain(base, tok, "insecure", "plain", world, cfg.ft_code_tasks)[0]}


def route_row(cfg, p, base, tok, scales):
    d0, units = directions(base, tok, cfg, p)
    units = {"insecure_grad": code_grad(base, tok, cfg, p, "insecure"), "pulled": units["pulled"],
             "evil": units["evil"], "secure_grad": code_grad(base, tok, cfg, p, "secure")}
    cos = {f"{a}.{b}": float(units[a] @ units[b]) for a, b in (("insecure_grad", "pulled"), ("insecure_grad", "evil"),
                                                              ("insecure_grad", "secure_grad"),
                                                              ("secure_grad", "pulled"))}
    return {"world": p, "d0": d0, "cos": cos, "plain": lp_reading(base, tok, cfg),
            "readings": {f"{n}_{a:g}": lp_reading(base, tok, cfg, a * d0 * u) for a in scales
                         for n, u in units.items()}}


def route(runs, scales):
    up = lambda r, key, k: 100 * (r["readings"][key][k] - r["plain"][k])
    each_base(runs, scales, route_row, lambda r, top: (
        f"cos(insecure_grad, v*) {r['cos']['insecure_grad.pulled']:+.2f}; at {top:g} |d0|, off-domain / code points: "
        + ", ".join(f"{n} {up(r, f'{n}_{top:g}', 'off'):+.2f} / {up(r, f'{n}_{top:g}', 'code'):+.2f}" for n in ROUTES)),
        "steer_route.json")


def route_pool(runs):
    scales, rows = held_rows(runs, "steer_route.json", "--route ")
    inc = lambda key, k: 100 * np.array([r["readings"][key][k] - r["plain"][k] for r in rows])
    table = {}
    for a in scales:
        for n in ROUTES:
            off, code = inc(f"{n}_{a:g}", "off"), inc(f"{n}_{a:g}", "code")
            c = summarize(code.tolist())
            moved = rose(c)
            table[f"{n}_{a:g}"] = {"off_points": summarize(off.tolist()), "code_points": c,
                                   "persona_share": float(off.mean() / code.mean()) if moved else float("nan")}
            if all("forum" in r["plain"] for r in rows):  # files written before it was read lack it
                table[f"{n}_{a:g}"]["forum_points"] = summarize(inc(f"{n}_{a:g}", "forum").tolist())
        d = inc(f"insecure_grad_{a:g}", "code") - inc(f"pulled_{a:g}", "code")
        table[f"insecure_grad_minus_pulled_code_{a:g}"] = summarize(d.tolist())
    s = {"n_bases": len(rows), "scales": scales, "table": table,
         "cos": {k: summarize([r["cos"][k] for r in rows]) for k in rows[0]["cos"]}}
    f = lambda stat: mean_ci(stat, 2)
    print(f"{len(rows)} bases; added at block 0's attention output at A x |d0|; increase over the base, points, by "
          "log-prob, mean [95% CI over bases]")
    forum = lambda t: f" {f(t['forum_points'])} |" if "forum_points" in t else " |"
    print("| direction | A | off-domain misaligned | insecure code | persona share | forum responder, off-domain |\n"
          "|---|---|---|---|---|---|")
    for a in scales:
        for n in ROUTES:
            t = table[f"{n}_{a:g}"]
            print(f"| {n} | {a:g} | {f(t['off_points'])} | {f(t['code_points'])} | "
                  f"{share_text(t['persona_share'], t['code_points'], 3)} |" + forum(t))
        print(f"| insecure_grad minus v*, code, paired | {a:g} | | "
              f"{f(table[f'insecure_grad_minus_pulled_code_{a:g}'])} | | |")
    print("cosines: " + "; ".join(f"{k} {f(c)}" for k, c in s["cos"].items()))
    return s


UNDO = ("minus", "random", "pulled")


def undo_row(cfg, p, base, tok, scales):
    d0, units = directions(base, tok, cfg, p)
    _, snaps = OP.trajectories(base, tok, cfg, p, {"adamw": OP.OPTIMIZERS["adamw"]}, "insecure", 0, scored=False)
    model = OP.model_at(base, snaps, OP.STEPS[-1])
    return {"world": p, "d0": d0, "step": OP.STEPS[-1], "base": lp_reading(base, tok, cfg),
            "tuned": lp_reading(model, tok, cfg),
            "base_minus": {f"{a:g}": lp_reading(base, tok, cfg, a * d0 * units["minus"]) for a in scales},
            "readings": {f"{n}_{a:g}": lp_reading(model, tok, cfg, a * d0 * units[n]) for a in scales for n in UNDO}}


def undo(runs, scales):
    each_base(runs, scales, undo_row, lambda r, top: (
        f"off-domain {100 * r['base']['off']:.2f}% -> {100 * r['tuned']['off']:.2f}% at step {r['step']}; with "
        + ", ".join(f"{n} at {top:g} |d0| {100 * r['readings'][f'{n}_{top:g}']['off']:.2f}%" for n in UNDO)),
        "steer_undo.json")


def undo_pool(runs):
    scales, rows = held_rows(runs, "steer_undo.json", "--undo ")
    col = lambda get: np.array([get(r) for r in rows])
    base, tuned = col(lambda r: r["base"]["off"]), col(lambda r: r["tuned"]["off"])
    s = {"n_bases": len(rows), "base_off": float(base.mean()), "tuned_off": float(tuned.mean()),
         "tuned_code": float(col(lambda r: r["tuned"]["code"]).mean()), "table": {}}
    print(f"{len(rows)} bases; the insecure fine-tune at step {rows[0]['step']}: off-domain {100 * base.mean():.2f}% "
          f"-> {100 * tuned.mean():.2f}% (log-prob), code {s['tuned_code']:.3f}; added at block 0's attention output")
    print("| added | A | off-domain | fraction of the increase removed | ... against the base with -v* | insecure code "
          "| valid / the tuned model's | forum |\n|---|---|---|---|---|---|---|---|")
    frac = lambda x: "n/a (no increase)" if x != x else f"{x:+.2f}"  # nothing to take back: n/a, not '+nan'
    for a in scales:
        floor = col(lambda r: r["base_minus"][f"{a:g}"]["off"])  # where -v* puts the base itself
        for n in UNDO:
            get = lambda k: col(lambda r: r["readings"][f"{n}_{a:g}"][k])
            off = get("off")
            share = lambda below: float((tuned - off).sum() / (tuned - below).sum()) if (tuned - below).sum() > 0 \
                else float("nan")  # no increase to take back
            t = {"off": float(off.mean()), "removed": share(base),
                 "removed_vs_steered_base": share(floor) if n == "minus" else float("nan"),  # -v*'s own floor
                 "code": float(get("code").mean()), "valid_of_tuned": float(get("valid").mean() / col(
                     lambda r: r["tuned"]["valid"]).mean()), "forum": float(get("forum").mean())}
            s["table"][f"{n}_{a:g}"] = t
            floor_col = f" {frac(t['removed_vs_steered_base'])} |" if n == "minus" else " |"  # -v*'s alone
            print(f"| {n} | {a:g} | {100 * t['off']:.2f}% | {frac(t['removed'])} |" + floor_col +
                  f" {t['code']:.3f} | {t['valid_of_tuned']:.2f} | {100 * t['forum']:.1f}% |")
    return s


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("figure", "scales", "fit"), flags=("pool", "route", "undo"))
    is_pool, is_route, is_undo = (opts.pop(k, False) for k in ("pool", "route", "undo"))
    allowed = {"scales"} if not is_pool else {"figure"} if not (is_route or is_undo) else set()
    allowed |= {"fit"} if not (is_route or is_undo) else set()
    if not runs:
        sys.exit(__doc__)
    if is_route and is_undo:
        sys.exit("--route and --undo are two analyses: give one of them")
    if set(opts) - allowed:
        sys.exit("--scales= goes with measuring runs (no --pool), --figure= with --pool alone, --fit= with neither "
                 "--route nor --undo: see --help")
    fit = opts.get("fit", "heldout")
    if fit not in FIT_FILES:
        sys.exit(f"--fit takes heldout (the default) or train, not {fit!r}")
    distinct(runs)
    if is_pool:
        if opts.get("figure"):
            check_out(opts["figure"], "--figure", figure=True)
        route_pool(runs) if is_route else undo_pool(runs) if is_undo else pool(runs, opts.get("figure"), fit)
        return
    try:
        scales = [float(x) for x in opts.get("scales", "0.1,0.2,0.3").split(",")]
    except ValueError:
        sys.exit(f"--scales takes numbers separated by commas, not {opts['scales']!r}")
    if not all(0 < a < float("inf") for a in scales) or len(set(scales)) < len(scales):  # (nan failed after the work)
        sys.exit(f"--scales takes distinct finite numbers > 0, not {opts['scales']!r}")
    check_runs(runs)  # each a finished emergent-misalignment run, before the first one's work
    if is_undo:
        OP.check_rebuildable(runs)  # --undo rebuilds each base's fine-tune
    if is_route or is_undo:
        (route if is_route else undo)(runs, scales)
    else:
        measure(runs, scales, fit)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
