"""Which attended tokens' values carry the insecure fine-tune's off-domain drift?

    python scripts/em_value_sources.py RUN_DIR [RUN_DIR ...] [--fmt=asst|forum] [--arm=ARM] [--out=FILE.json]
    python scripts/em_value_sources.py --pool FILE.json [FILE.json ...]      # the shares over several --out files

Block 0's value rows (the v third of its `qkv`) carry 0.41 of AdamW's late update's off-domain increase and 0.22 of
the first sign step's (probe_attn0_parts.py). Block 0 reads the token embeddings, so a value there is a function of
its token alone, and a change of the value rows reaches a position only through the tokens it attends to. Here the
change is applied to the values of one kind of token at a time, every other weight as it was:

    bos               the document's first token <bos>
    format            the format's marker, <asst> (or <forum>)
    u                 the user's turn marker <u>
    speaker           the answering speaker's marker, <a> (or the forum responder's <r>)
    question          the question's words (its opener included)
    answer            the answer's own tokens (read by the answer's later tokens)

For every base of the runs (cached, checked as in em_base_pull.py), with the insecure arm's fine-tune of seed 0 by
AdamW (em_optimizer_parts.py): `late`, its update from step 3 to 20 on the step-3 model, and `whole`, its 20 steps on
the base. Scored by log-prob: the off-domain misaligned mass, of the assistant (`<asst> <u> Q <a>`) or, with
--fmt=forum, of a forum responder (`<forum> <u> Q <r>`, first turn). `all` changes every token's value; it must equal
the value rows changed in the weights (`rows`, printed as a check); `update` applies the whole update, every weight
(`from`: the mass it starts from; the update is printed in log-odds too, for formats with other base rates).
`revert`, the converse: AdamW's step-20 model with the late value change taken back from one kind of token at a time
(the increases are then decreases; `all` over `update` is the share of the late drift the value change carries).
--out=FILE.json keeps every base's numbers, and a bar chart of the shares beside it (FILE.png).
--arm=ARM: another arm's fine-tune instead (a control: `secure`, `educational`, ...). Shares: a kind's increase over
`all`'s, ratio of means over the bases with a 95% interval from resampling bases (10,000, seed 0), and how often each
kind is the largest in those resamples. Research log: "Which tokens' values".
"""
import contextlib
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
from eval import error_bars, summarize  # noqa: E402
from train import check_out, cli, pyplot, read_json, save_figure, script_args, write_json  # noqa: E402
from em_base_pull import check_runs, checked_bases, distinct_pooled_bases, note_unrun  # noqa: E402
import em_optimizer_parts as OP  # noqa: E402

MARKERS = {"bos": ("<bos>",), "format": ("<asst>", "<forum>"), "u": ("<u>",), "speaker": ("<a>", "<r>")}
KINDS = (*MARKERS, "question", "answer")
QKV = "blocks.0.attn.qkv.weight"
LABEL = {"late": "added to step 3's model", "whole": "20 steps, added to the base",
         "revert": "taken from step 20's model"}


@contextlib.contextmanager
def values_changed(model, tok, dW, kinds):
    """Block 0's value rows changed by dW [C, C] for the tokens of `kinds` only. The scoring runs each prompt once
    and its answers on the prompt's KV cache (world_base.score_shared_prompts): a pass with an empty cache is the
    prompt's, a later one the answers'; the cache keeps the prompt's changed values for the answers' pass."""
    dev = next(model.parameters()).device  # torch.isin on a GPU refuses CPU ids
    C, ids = model.cfg.n_embd, {k: torch.tensor([tok.token_to_id(t) for t in ts], device=dev)
                                for k, ts in MARKERS.items()}
    keep = {}

    def which(module, args, kwargs):  # the tokens whose values change in this pass
        idx, cache = args[0], kwargs.get("cache")
        if cache is None:
            raise ValueError("values_changed tells prompt from answer by the KV cache: score with score_shared_prompts")
        k = torch.zeros_like(idx, dtype=torch.bool)
        if cache.pos == 0:
            marker = torch.zeros_like(k)
            for kind, i in ids.items():
                hit = torch.isin(idx, i)
                marker |= hit
                k |= hit & (kind in kinds)
            k |= ~marker & ("question" in kinds)  # left padding too: masked keys, never read
        else:
            k |= "answer" in kinds
        keep["mask"] = k

    def add(module, args, out):
        out = out.clone()
        out[..., 2 * C:] += (args[0] @ dW.T) * keep["mask"][..., None]  # [B, T, C]
        return out

    handles = [model.register_forward_pre_hook(which, with_kwargs=True),
               model.blocks[0].attn.qkv.register_forward_hook(add)]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def off_lp(model, tok, cfg, fmt="asst"):
    """Off-domain misaligned mass by log-prob, first turn, in the prompt format `fmt`."""
    return B.offdomain_eval(model, tok, 0, None, fmt=fmt, world=B.world_config(cfg))["mis_lp"]


def increases(model, tok, cfg, dW, fmt="asst"):
    """{kind: off-domain increase with dW applied to that kind's values}, "all" kinds together, and "rows": dW
    added to the weights themselves (the check: equals "all")."""
    off = lambda: off_lp(model, tok, cfg, fmt)
    off0, C = off(), model.cfg.n_embd
    out = {}
    for kind in ("all", *KINDS):
        with values_changed(model, tok, dW, KINDS if kind == "all" else (kind,)):
            out[kind] = off() - off0
    w = dict(model.named_parameters())[QKV]
    saved = w.detach().clone()
    with torch.no_grad():
        w[2 * C:] += dW
        out["rows"] = off() - off0
        w.copy_(saved)  # exactly (subtracting dW again would leave a rounding error)
    return out


def with_ci(values):
    """'mean [lo, hi]' (95% t-interval over the bases); one base has no interval."""
    st = summarize(values)
    return f"{st['mean']:+.2f}" + ("" if st["ci95"] is None else " [{:+.2f}, {:+.2f}]".format(*st["ci95"]))


def shares(rows, n_boot=10_000, seed=0):
    """{kind: {"ratio", "ci95", "p_largest", "of_update"}}: a kind's increase over all's, ratio of means over the
    bases; p_largest: the fraction of resamples in which it is the largest of the kinds; of_update (rows that keep
    the whole update): the same ratio against the whole update instead of all's, for "all" too."""
    a = np.array([r["all"] for r in rows])
    idx = OP.resamples(len(rows), n_boot, seed)
    # a share of all's change, of its sign (revert's are decreases); where all's sum is 0, or changes sign in some
    # resamples, no ratio or no interval (ends of -0.17 and 2.25 were printed), as OP.ratio_of_means
    sign = -1.0 if a.sum() < 0 else 1.0
    col = lambda kind: np.array([r[kind] for r in rows])
    out = {kind: OP.ratio_of_means(sign * col(kind), sign * a, idx) for kind in (*KINDS, "rows")}
    with np.errstate(divide="ignore", invalid="ignore"):  # (a resample summing to 0: its p_largest is not kept)
        boots = {kind: col(kind)[idx].sum(1) / a[idx].sum(1) for kind in KINDS}
    out["all"] = {"ratio": 1.0}
    top = np.argmax(np.stack([boots[k] for k in KINDS]), 0)  # the largest kind in each resample
    for i, kind in enumerate(KINDS):  # (undefined with the interval: a resample's ratio flips sign)
        out[kind]["p_largest"] = float((top == i).mean()) if out[kind]["ci95"] is not None else None
    if all("update" in r for r in rows):  # each as a share of the whole update (every weight) instead
        u = np.array([r["update"] for r in rows])
        for kind in ("all", *KINDS):
            out[kind]["of_update"] = OP.ratio_of_means(col(kind), u, idx)
    return out


def plot(rows, path, title):
    """Each kind's share of the value change (late update, whole fine-tune and revert), with its 95% interval."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x, w = np.arange(len(KINDS)), 0.8 / len(rows)
    for i, (k, rs) in enumerate(rows.items()):
        s = shares(rs)
        # no interval (one base, or a denominator that crosses 0): no error bar, rather than one of zero width
        err = error_bars([{"mean": s[q]["ratio"], "ci95": s[q]["ci95"]} for q in KINDS])
        ax.bar(x + (i - (len(rows) - 1) / 2) * w, [s[q]["ratio"] for q in KINDS], w, yerr=err, capsize=3,
               label=f"{k} ({LABEL[k]}), {len(rs)} base{'s' * (len(rs) != 1)}"
                     + ("" if all(s[q]["ci95"] for q in KINDS) else ", bars without an interval have none"))
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, ["<bos>", "format\nmarker", "<u>", "speaker\nmarker", "question\nwords", "answer"])
    ax.set(ylabel="share of the value change's\neffect off-domain", title=title)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv):
    runs, opts = script_args(argv, __doc__, options=("out", "fmt", "arm"), flags=("pool",))
    pool = opts.pop("pool", False)
    if not runs:
        sys.exit(__doc__)
    if pool and opts:  # the files hold their own arm and format
        sys.exit("--pool takes no other option")
    fmt, arm = opts.get("fmt", "asst"), opts.get("arm", "insecure")
    if fmt not in ("asst", "forum"):
        sys.exit(f"--fmt takes asst (the default) or forum, not {fmt!r}")
    if arm not in EM.ARMS:
        sys.exit(f"--arm takes one of {', '.join(EM.ARMS)}, not {arm!r}")
    if "out" in opts:
        check_out(opts["out"], figure_beside=True)  # FILE.json, its figure FILE.png beside it
    rows = {"late": [], "whole": [], "revert": []}
    if pool:  # the shares over the bases of several --out files, of one arm and format, each base once
        held = [read_json(f, "an --out file of em_value_sources.py", ("late", "whole")) for f in runs]
        kinds = {(h["arm"], h["fmt"]) for h in held if "arm" in h}  # (files written before 2026-12-03 have none)
        if len(kinds) > 1:
            sys.exit(f"the files hold different fine-tunes or formats {sorted(kinds)}: "
                     "pool one arm and --fmt at a time")
        for h in held:
            for k in rows:
                rows[k].extend(h.get(k, []))
        distinct_pooled_bases((r["run"], r["world"]) for r in rows["late"])  # as the runs given directly are
        if kinds:  # the table below does not say which fine-tune it pooled: this line does
            arm, fmt = kinds.pop()
            print(f"pooled: the {arm} fine-tune, off-domain increase in the {fmt} format")
        rows = {k: rs for k, rs in rows.items() if rs}  # "revert" is missing from files written before it existed
        runs = []
    check_runs(runs)
    OP.check_rebuildable(runs)  # each base's work starts with the rebuild of its fine-tune
    torch.set_num_threads(1)  # as the runs' fine-tunes: the same trajectories
    for run in map(Path, runs):
        for i, (cfg, p, base, tok) in enumerate(checked_bases(run, [])):
            if not i:  # once per run: one config for all its bases
                note_unrun(run, cfg, [arm])
            _, snaps = OP.trajectories(base, tok, cfg, p, {"adamw": OP.OPTIMIZERS["adamw"]}, arm)
            C = cfg.n_embd
            model, late = OP.late_start(base, snaps)
            at = {0: off_lp(base, tok, cfg, fmt), OP.LATE_FROM: off_lp(model, tok, cfg, fmt)}
            end = OP.model_at(base, snaps, OP.STEPS[-1])
            at[OP.STEPS[-1]] = off_lp(end, tok, cfg, fmt)
            rows["late"].append({"run": str(run), "world": p, "update": at[OP.STEPS[-1]] - at[OP.LATE_FROM],
                                 "from": at[OP.LATE_FROM], **increases(model, tok, cfg, late[QKV][2 * C:], fmt)})
            whole = snaps[OP.STEPS[-1]][QKV][2 * C:] - dict(base.named_parameters())[QKV][2 * C:].detach()
            rows["whole"].append({"run": str(run), "world": p, "update": at[OP.STEPS[-1]] - at[0], "from": at[0],
                                  **increases(base, tok, cfg, whole, fmt)})
            # the converse: the step-20 model with the late value change taken back from one kind of token at a time
            rows["revert"].append({"run": str(run), "world": p, "update": at[OP.STEPS[-1]] - at[OP.LATE_FROM],
                                   "from": at[OP.LATE_FROM], **increases(end, tok, cfg, -late[QKV][2 * C:], fmt)})
            print(f"{run.name} world {p}, {arm} fine-tune, off-domain increase ({fmt}), points: " + "; ".join(
                f"{k} " + ", ".join(f"{q} {100 * rs[-1][q]:+.2f}" for q in ("update", "all", "rows", *KINDS))
                for k, rs in rows.items()), flush=True)
    if "out" in opts:
        write_json(opts["out"], {"arm": arm, "fmt": fmt, **rows})
        plot(rows, Path(opts["out"]).with_suffix(".png"),
             f"which tokens' values carry the {arm} fine-tune's drift ({fmt})")
    for k, rs in rows.items():
        s = shares(rs)
        worst = max(abs(r["rows"] - r["all"]) for r in rs)
        upd = [r["update"] for r in rs if "update" in r]
        print(f"\n{k} ({len(rs)} bases): value change on every token, off-domain increase "
              f"{100 * np.mean([r['all'] for r in rs]):+.2f} points (mean; the whole update, every weight: "
              + (with_ci([100 * u for u in upd]) if upd else "not kept")
              + f"); the value rows changed in the weights instead: largest difference {100 * worst:.2g} points")
        if all("from" in r for r in rs):  # the same update in log-odds: formats with other base rates compare so
            lo = lambda q: np.log(q / (1 - q))
            shift = [float(lo(r["from"] + r["update"]) - lo(r["from"])) for r in rs]
            print(f"the whole update in log-odds of the misaligned mass: {with_ci(shift)} (from "
                  f"{np.mean([r['from'] for r in rs]):.3f} on average)")
        one = len(rs) == 1  # one base: a ratio, with no interval and no ranking across resamples
        ci = lambda v: f"{v['ratio']:+.2f}" + ("" if one else f" [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}]"
                                                  if v["ci95"] else f" (no interval: {v.get('why', '')})")
        # revert's increases are decreases: its last column is the share of the late drift taken away, so the
        # research log's (it printed the negative)
        sign = -1 if k == "revert" else 1
        flip = lambda v: {**v, "ratio": sign * v["ratio"], "ci95": v["ci95"] and sorted(sign * e for e in v["ci95"])}
        of = lambda kind: ci(flip(s[kind]["of_update"])) if "of_update" in s[kind] else "-"
        print("| tokens whose values change | share of the value change's increase [95% CI] | largest in | "
              + ("share of the late update removed" if k == "revert" else "share of the whole update's")
              + " |\n|---|---|---|---|")
        print(f"| all | 1 | | {of('all')} |")
        for kind in KINDS:
            largest = "-" if one or s[kind]["p_largest"] is None else f"{100 * s[kind]['p_largest']:.1f}%"
            print(f"| {kind} | {ci(s[kind])} | {largest} | {of(kind)} |")
        print(f"| sum of the kinds alone | {sum(s[kind]['ratio'] for kind in KINDS):+.2f} | | |")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])  # a run directory that is not one: a one-line error
