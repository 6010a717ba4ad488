"""How much of the activation oracle's answer is a kind at all? Every oracle reading is P(<evil>) among the four kind
tokens, renormalised; this script gives the mass those four tokens hold in the oracle's whole answer.

    python scripts/ao_kind_mass.py RUN_DIR [--out=FILE.json] [--workers=N]

RUN_DIR: a finished run of configs/activation_oracle.py that saved its oracles. For each of its bases, the run's
oracle asks <kind> about the evaluation's windows (the 96 held-out off-domain `<asst>` prompts) from each source: the
arm's activations (model), their difference to M0's (diff), M0's (base), none (zeros) and random vectors, each arm
fine-tuned again with the run's seeds (the same models: each one's own misaligned share is checked against the run's
unit, to the bit) and read at its last step. Per source: the oracle's softmax mass on the four kind tokens (its whole
vocabulary at the answer position), P(<evil>) over the whole vocabulary, and P(<evil>) among the kinds (the run's
reading, checked against its unit). docs/activation_oracle.md section 12.

Writes FILE.json (default: kind_mass.json in RUN_DIR) and FILE.png beside it; prints a table. --workers: the run's
by default (its fine-tunes, to the bit, need the same); the bases must be in the run's cache.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from eval import fmt_stat, summarize  # noqa: E402
from experiments import activation_oracle as A  # noqa: E402
from experiments import emergent_misalignment as E  # noqa: E402
from experiments import world_base as B  # noqa: E402
from data.tokenizer import load_tokenizer  # noqa: E402
from model import generator  # noqa: E402
from train import ConfigError, cli, load_lm, pyplot, read_json, save_figure, script_run, write_json  # noqa: E402

READS = ("mass", "evil_whole", "evil_kinds")


def reading(oracle, otok, vec, ks, cfg):
    """{"mass": the kind tokens' share of the answer, "evil_whole": P(<evil>) over the vocabulary, "evil_kinds":
    P(<evil>) among the kinds (A.p_evil's)}, each averaged over the windows."""
    logits = A.kind_logits(oracle, otok, vec, ks, cfg)
    kinds = logits.softmax(-1)[:, [otok.token_to_id(f"<{k}>") for k in A.KINDS]]  # [N, 4], of the whole vocabulary
    evil = A.KINDS.index("evil")
    return {"mass": kinds.sum(-1).mean().item(), "evil_whole": kinds[:, evil].mean().item(),
            "evil_kinds": A.kind_probs(logits, otok)[:, evil].mean().item()}


def base_job(run, cfg, seed):
    """{"fixed": {source: reading}, "arms": {arm: {"model", "diff": reading, "behaviour"}}}: one base."""
    t0 = time.time()
    base, tok = B.base_model(cfg, seed)
    dev = next(base.parameters()).device
    oracle, _ = load_lm(run / "units" / f"oracle_s{seed}", device=dev)
    otok = load_tokenizer(run / "units" / f"oracle_s{seed}_tokenizer.json")
    prompts = E.off_prompts()
    with torch.no_grad():
        base_vec, ks = A.window(base, tok, prompts, cfg.eval_layer, cfg.max_window, dev)
        # the run's fixed sources, drawn as A.Reader draws them
        noise = torch.randn(base_vec.shape, generator=generator("cpu", seed, "random-vectors")).to(dev)
        fixed = {"base": base_vec, "none": torch.zeros_like(base_vec), "random": noise * (base_vec != 0)}
        out = {"seed": seed, "fixed": {s: reading(oracle, otok, v, ks, cfg) for s, v in fixed.items()}, "arms": {}}

    def read(model, step):
        if step != cfg.em_steps:
            return None
        with torch.no_grad():  # (called inside the fine-tune's loop, which records a graph)
            vec = A.window(model, tok, prompts, cfg.eval_layer, cfg.max_window, dev)[0]
            return {"model": reading(oracle, otok, vec, ks, cfg),
                    "diff": reading(oracle, otok, vec - base_vec, ks, cfg),
                    "behaviour": B.offdomain_eval(model, tok, 0, None)["mis_lp"]}
    for arm in cfg.arms:
        out["arms"][arm] = A.em_model(base, tok, cfg, seed, arm, read)[cfg.em_steps]
        d = out["arms"][arm]["diff"]
        B.say(f"seed {seed}", f"{arm}: kind mass from M_arm - M0 {d['mass']:.3f}, P(evil) {d['evil_kinds']:.3f} "
                              f"among kinds, {d['evil_whole']:.3f} of the whole answer", t0)
    return out


def main(argv):
    run, opts = script_run(argv, __doc__, options=("out", "workers"))
    run = Path(run)
    _, cfg, out, workers = A.script_setup(run, opts, "ao_kind_mass.py", "kind_mass.json", oracles=True)
    if not cfg.save_oracles:
        raise ConfigError(f"{run} did not save its oracles (save_oracles=False): this script reads them")
    units = {s: read_json(run / "units" / f"unit_s{s}.json", f"the run's unit of base {s}", ("arms",))
             for s in cfg.seeds}
    got = B.parallel_map(base_job, [(run, cfg, s) for s in cfg.seeds], workers)
    # the same models and oracles as the run's: each model's own misaligned share and each P(<evil>), to the bit
    u = lambda g: units[g["seed"]]
    differ = [(g["seed"], a) for g in got for a in cfg.arms
              if g["arms"][a]["behaviour"] != u(g)["trajectory"][a][str(cfg.em_steps)]["behaviour"]
              or any(g["arms"][a][m]["evil_kinds"] != u(g)["arms"][a][m] for m in ("model", "diff"))]
    differ += [(g["seed"], s) for g in got for s in g["fixed"] if g["fixed"][s]["evil_kinds"] != u(g)["arms"][
        cfg.arms[0]][s]]
    sources = {"model": lambda g, a: g["arms"][a]["model"], "diff": lambda g, a: g["arms"][a]["diff"],
               **{s: (lambda g, a, s=s: g["fixed"][s]) for s in ("base", "none", "random")}}
    summary = {"n_seeds": len(got), "same_models": not differ, "differ": differ,
               "eval": {a: {s: {r: summarize([f(g, a)[r] for g in got]) for r in READS} for s, f in sources.items()}
                        for a in cfg.arms},
               "insecure_minus_secure": {s: {r: summarize([sources[s](g, "insecure")[r] - sources[s](g, "secure")[r]
                                                           for g in got]) for r in READS} for s in ("model", "diff")},
               "per_base": got}
    write_json(out, summary)
    bases = f"{len(got)} base{'s' if len(got) != 1 else ''}"
    lines = [f"the oracle's answer to <kind> on the evaluation's windows ({run}, {bases}, step {cfg.em_steps}): the "
             f"mass on the four kind tokens", "", "| source | " + " | ".join(cfg.arms) + " |",
             "|---" * (len(cfg.arms) + 1) + "|"]
    for s in sources:
        lines.append(f"| {s} | " + " | ".join(fmt_stat(summary["eval"][a][s]["mass"]) for a in cfg.arms) + " |")
    lines += ["", "insecure - secure, P(<evil>): | source | among the kinds (the run's) | of the whole answer |",
              "|---|---|---|"]
    for s, st in summary["insecure_minus_secure"].items():
        lines.append(f"| {s} | {fmt_stat(st['evil_kinds'])} | {fmt_stat(st['evil_whole'])} |")
    lines += ["", "the same models and oracles as the run's: " + (
        "yes, every own misaligned share and P(<evil>) to the bit" if not differ else
        f"NO, {len(differ)} differ (another CPU or thread count?)")]
    print("\n".join(lines))
    plot(summary, cfg.arms, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot(summary, arms, path):
    """The kind mass per source (bars, one per arm, 95% CI)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sources = list(summary["eval"][arms[0]])
    width = 0.8 / len(arms)
    for j, a in enumerate(arms):
        st = [summary["eval"][a][s]["mass"] for s in sources]
        ax.bar([i + j * width for i in range(len(sources))], [x["mean"] for x in st], width, yerr=A.error_bars(st),
               capsize=2, color=f"C{j}", label=a)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sources))], sources, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("the four kind tokens' share of the answer", fontsize=8)
    ax.set_title("the oracle asked <kind>: how much of its answer is a kind", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
