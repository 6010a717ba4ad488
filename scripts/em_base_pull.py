"""Exploratory: does a base model's own gradient on the insecure code point along its evil persona direction?

    python scripts/em_base_pull.py RUN_DIR [RUN_DIR ...]

For every base of the runs (each run's config.json and seeds; the bases must be in the cache), no fine-tune, with
the insecure arm's examples of fine-tune seed 0 (and secure answers to the same prompts, drawn with that arm's seed:
not the run's secure arm, whose prompts are its own draw; em_first_step's secure_sign uses that arm) and the run's evil
direction at `direction_layer` (evil - good forum threads, experiments/emergent_misalignment.doc_means):

    pull          cos(evil, -dLoss/dh), Loss the fine-tune's (mean cross-entropy on the response tokens, all
                  examples in one batch), h that layer's block output, the gradient summed over every position
    pull_secure   the same on the secure answers to those prompts; pull_contrast: on insecure minus secure gradients
    pull_random   cos(random direction of the layer, -dLoss/dh) on the insecure examples: a control
    code_steer    the base's code_misaligned (the insecure share of the class log-prob mass on held-out code
                  prompts: EM.in_domain(...)[0], not the in_domain metric) with one evil direction added at the
                  layer, minus without: does moving toward the persona pay off in the code?
    code_repr     the mean block output at the positions that predict the response, insecure minus secure answers,
                  along the evil direction in units of the good -> evil gap

A base must reproduce its run's forum-format base rate (`forum_lp`) to 1e-5, else it was rebuilt since (another
machine) and is left out, named in `excluded`. Writes base_pull.json in each run's directory
(scripts/em_susceptibility.py reads it) and prints each base's line as it is measured. Its check_runs, checked_bases,
cached_base, distinct_bases and fine_tune_loss are imported by the other em_* and probe_* scripts that read bases.
Pre-registered in docs/emergent_misalignment.md ("Why some bases barely move").
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import generator  # noqa: E402
from train import ConfigError, cli, distinct, run_config, run_results, script_args, write_json  # noqa: E402


def fine_tune_loss(model, data):
    """The fine-tune's loss (train.finetune) on pack_pairs data: mean cross-entropy at the masked targets, every row
    in one batch."""
    dev = next(model.parameters()).device  # pack_pairs' tensors are on the CPU: a GPU model refuses them
    tokens, m = data["tokens"].to(dev), data["mask"].to(dev)
    x, y = tokens[:, :-1], tokens[:, 1:]
    return torch.nn.functional.cross_entropy(model(x)[m], y[m])


def response_loss_grad(model, data, layer):
    """(dLoss/dh [N, T, C] at block `layer`'s output, h itself detached), Loss = fine_tune_loss."""
    cache = {}
    with torch.enable_grad(), model.hooks({f"blocks.{layer}.resid_post": lambda h, name: cache.setdefault(name, h)}):
        loss = fine_tune_loss(model, data)
        (grad,) = torch.autograd.grad(loss, cache[f"blocks.{layer}.resid_post"])
    return grad, cache[f"blocks.{layer}.resid_post"].detach()


def cached_base(cfg, run, p):
    """(model, tokenizer) of base seed p from the cache; a base not there is refused in one line (the analysis
    scripts do not pretrain)."""
    B.check_cached(cfg, [p], who=f"this analysis of {run}")
    return B.base_model(cfg, p, False)


def check_runs(runs):
    """Every run a finished emergent-misalignment run whose bases are in the cache, before any work: a mistyped or
    uncached last one stopped a script after every base of the first (minutes). A run given twice is refused: its
    bases would count twice, and so would a base two runs share (distinct_bases)."""
    for run in distinct(list(runs)):
        run_results(run, "emergent_misalignment")
        cfg = run_config(EM.Config, run)
        B.check_cached(cfg, cfg.seeds, who=f"this analysis of {run}")
    distinct_bases(runs)


def one_depth(configs):
    """{run: its EM Config} of runs whose per-block numbers are pooled: one n_layer, or a ConfigError before the work
    (a KeyError after it, or a deeper run's last blocks left out without a word)."""
    depths = {}
    for run, cfg in configs.items():
        depths.setdefault(cfg.n_layer, run)
    if len(depths) > 1:
        raise ConfigError(f"the runs have {' and '.join(f'{n} blocks ({r})' for n, r in depths.items())}: pool runs "
                          f"of one n_layer (the numbers are per block)")


def distinct_bases(runs):
    """Runs of emergent_misalignment (their config.json read, a run of another experiment refused) none of whose
    bases another of them also has: the same pretraining config and seed is one base model (one cache entry), and
    pooled twice it would count twice among the bases."""
    owner = {}  # a base's cache entry -> the run that brought it
    for run in distinct(list(runs)):
        cfg = run_config(EM.Config, run)
        for p in cfg.seeds:
            entry = B.cache_stem(cfg, p, False).parent.name  # (the folder's name: a cache moved elsewhere is the same)
            if entry in owner:
                raise ConfigError(f"{owner[entry]} and {run} share base seed {p} (one base model, {entry}): it would "
                                  f"count twice among the bases; give each base once (leave one of the runs out)")
            owner[entry] = run


def distinct_pooled_bases(bases):
    """(run, world) of each base in --pool files, each once, or a ConfigError: a file given twice, or one run in two
    files (written as out/a in one, /abs/out/a in the other), would count its bases twice (narrower intervals, nothing
    new), and so would files of two runs on one base (another out_dir, or another fine-tune setting on the same
    pretraining seeds: distinct_bases). A run no longer on disk gets only the first check."""
    seen = set()
    for run, p in bases:
        key = (str(Path(run).resolve()), p)
        if key in seen:
            raise ConfigError(f"--pool: a base appears twice (world {p} of {run}): each base counts once; give each "
                              f"file once, and each run's bases in one file")
        seen.add(key)
    distinct_bases(sorted({r for r, _ in seen if Path(r).is_dir()}))


def note_unrun(run, cfg, arms, ft_seeds=1):
    """A note (stderr) when the fine-tunes rebuilt for `run` (of config `cfg`) need an arm or a fine-tune seed it
    never trained: they are built as the run's config would have made them, with no run's number to check them by."""
    unrun = [f"{a} arm" for a in dict.fromkeys(arms) if a not in cfg.arms]
    unrun += ["fine-tune seed 1"] if cfg.ft_seeds < ft_seeds else []
    if unrun:
        print(f"note: {run} has no {', '.join(unrun)}: built here as the run's config would have made it",
              file=sys.stderr)


def checked_bases(run, excluded):
    """(cfg, base seed, model, tokenizer) for each base of a run, from the cache, if it reproduces the run's
    forum-format base rate to 1e-5 (else it was rebuilt since, on another machine: appended to `excluded`)."""
    cfg = run_config(EM.Config, run)
    res = run_results(run, "emergent_misalignment")  # a run not finished: one line
    forum = dict(zip((p for p, _ in res["seeds"]), res["base"]["forum_lp"]["per_seed"]))
    kept = 0
    for p in cfg.seeds:
        base, tok = cached_base(cfg, run, p)
        now = B.offdomain_eval(base, tok, 0, None, fmt="forum")["mis_lp"]
        if abs(now - forum[p]) > 1e-5:
            excluded.append({"world": p, "forum_lp_run": forum[p], "forum_lp_now": now})
            print(f"{run.name} world {p}: left out, forum_lp {now:.6f} here, {forum[p]:.6f} in the run", flush=True)
            continue
        kept += 1
        yield cfg, p, base, tok
    if not kept:  # (the callers' tables and figures would fail on an empty list, with a traceback)
        raise ConfigError(f"every base of {run} was left out: the cached bases are not the run's (pretrained again "
                          f"since, on another kind of CPU?); analyse the run on the machine kind that made it")


def cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, 0).item()


def base_pull(model, tok, cfg, seed, direction):
    """Every number of the module docstring for one base; direction [C] is the evil - good direction at the layer."""
    L = cfg.direction_layer
    ft_seed = EM.arm_seed(seed, 0, "insecure")
    pairs = {arm: EM.arm_pairs(arm, model, tok, cfg, ft_seed) for arm in ("insecure", "secure")}
    if [p for p, _ in pairs["insecure"]] != [p for p, _ in pairs["secure"]]:
        raise AssertionError("the insecure and secure arms of one seed should share their prompts")
    grads, reprs = {}, {}
    for arm, ps in pairs.items():
        data = B.encode_pairs(tok, ps, cfg.block_size)
        g, h = response_loss_grad(model, data, L)
        grads[arm] = -g.sum((0, 1))  # [C]: the direction in which the loss falls, over every position
        reprs[arm] = h[data["mask"]].mean(0)  # [C]: mean over the positions that predict the response
    rand = torch.randn(direction.shape, generator=generator("cpu", seed, "pull-random")).to(direction)
    world = B.world_config(cfg)
    plain = EM.in_domain(model, tok, "insecure", "plain", world, cfg.ft_code_tasks)[0]
    with model.hooks(EM.add_hook(L, direction)):
        steered = EM.in_domain(model, tok, "insecure", "plain", world, cfg.ft_code_tasks)[0]
    return {"pull": cos(direction, grads["insecure"]), "pull_secure": cos(direction, grads["secure"]),
            "pull_contrast": cos(direction, grads["insecure"] - grads["secure"]),
            "pull_random": cos(rand, grads["insecure"]), "code_steer": steered - plain,
            "code_repr": ((reprs["insecure"] - reprs["secure"]) @ direction / direction.norm() ** 2).item()}


def main(argv):
    argv, _ = script_args(argv, __doc__)
    if not argv:
        sys.exit(__doc__)
    check_runs(argv)
    for run in map(Path, argv):
        rows, excluded = [], []
        for cfg, p, base, tok in checked_bases(run, excluded):
            means = EM.doc_means(base, tok, cfg, p)
            direction = (means["evil"] - means["good"])[cfg.direction_layer]
            rows.append({"world": p, **base_pull(base, tok, cfg, p, direction)})
            print(f"{run.name} world {p}: " + ", ".join(f"{k} {v:+.4f}" for k, v in rows[-1].items() if k != "world"),
                  flush=True)
        out = run / "base_pull.json"
        write_json(out, {"run": str(run), "per_base": rows, "excluded": excluded})
        print(f"wrote {out}")


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
