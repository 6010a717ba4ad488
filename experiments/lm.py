"""Language-model pretraining: a GPT on a token corpus with the plain loop of train.py, and its loss curve.

    python train.py configs/lm_tiny.py                                   # built-in tiny corpus, CPU, seconds
    python train.py configs/lm_tiny.py --corpus=world --n_docs=20000 --n_layer=3 --n_embd=96 --steps=2000
    torchrun --standalone --nproc_per_node=2 train.py configs/lm_tiny.py --out_dir=out/lm_ddp   # data parallel

Corpora (`corpus`):
  tiny   a built-in story grammar, deterministic in the seed, that needs a little arithmetic:
           <bos> ann has 3 apples . bob gives ann 4 more . now ann has 7 apples . <eos>
         The validation documents use the 20 (x, y) pairs that no training document uses, so
         sum_accuracy["heldout"] (the greedy next token after "ann has x apples . bob gives ann y more . now ann
         has", over those 20 pairs) measures generalisation, and ["train"] (the 80 other pairs) recall.
  world  the synthetic persona world of data/world.py (its corpus, its tokenizer); the last
         `val_frac` of the documents are the validation set.

Under torchrun every rank builds the same data, trains its slice of each global batch, and rank 0
writes the results; pass --out_dir so that all ranks agree on the run directory.

Outputs in the run directory: model.safetensors / model.json / model.state.pt (resume), tokenizer.json, loss.png,
and results.json = {"corpus", "n_params", "steps", "train_tokens", "train_loss", "val_loss", "val_precision" ("bf16
autocast" with bf16, as trained, else "fp32": compare val losses of one precision), "seconds" (this process's),
"tokens_per_s", "resumed_from_step" (when resumed), "samples": [{"prompt", "completion"}], "sum_accuracy":
{"train", "heldout"} (tiny only)}. A rerun with the same --out_dir resumes from the
last checkpoint (a default out_dir is a new folder each time):
with ckpt_every = 0 that is only the end, so set --ckpt_every=N for a long run that may be stopped. The loss curve
and the last train loss come from metrics.jsonl, across the attempts (a step logged twice: the later attempt's).
"""
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch

from data import DataError
from data.tokenizer import save_tokenizer, token_stream, word_tokenizer
from model import GPT, GPTConfig, generator, head_problem, seed_int
from train import (ConfigError, ddp_setup, lm_windows, pyplot, save_figure, state_file, train_lm, use_tf32,
                   warmup_problem)


@dataclass(frozen=True)
class Config:
    # data
    corpus: str = "tiny"               # tiny (built in) | world (data/world.py)
    n_docs: int = 4000                 # documents made (tiny: + n_docs/10 for validation; world: val_frac of them)
    val_frac: float = 0.05             # world: the last val_frac of the documents are validation
    # model
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    block_size: int = 64
    init_std: float = 0.02
    # optimisation
    steps: int = 300
    batch_size: int = 16               # rows (of block_size tokens) per micro-step per process
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: Optional[float] = None     # default lr / 10
    warmup: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50
    log_every: int = 25
    ckpt_every: int = 0                # also checkpoint every N steps (always at the end): what a
                                       # stopped run resumes from
    # system
    seed: int = 0
    device: str = "auto"               # auto = cuda when available
    compile: bool = False              # torch.compile (worth it on a GPU only)
    bf16: bool = False                 # bf16 autocast (CUDA, or a CPU; fast only on one with native bf16)
    threads: int = 0                   # CPU threads; 0 = PyTorch's default
    out_dir: str = ""                  # default out/<config name>/<UTC time>
    resume: bool = True                # continue from out_dir/model.state.pt when it exists


def validate(cfg):
    """Every key checked before the run directory exists: a bad value leaves nothing behind. In order: a check's
    condition may rely on the ones before it (its message is built up front, so a message that calls a function
    needs one that is safe on any input)."""
    checks = [
        (lambda: cfg.corpus in ("tiny", "world"), f"corpus must be 'tiny' or 'world', got {cfg.corpus!r}"),
        (lambda: min(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.n_docs) >= 1,
         "n_layer, n_head, n_embd, block_size and n_docs must be >= 1"),
        (lambda: head_problem(cfg.n_embd, cfg.n_head) is None, head_problem(cfg.n_embd, cfg.n_head)),
        (lambda: cfg.corpus != "tiny" or cfg.block_size >= 16,
         "the tiny corpus needs block_size >= 16 (its accuracy check: a 15-token prompt and the answer)"),
        (lambda: cfg.corpus != "world" or cfg.block_size >= 8, "the world corpus needs block_size >= 8 (its sample "
         "completions: a 4-word prompt and 4 tokens or more)"),
        (lambda: 0 < cfg.val_frac < 1, f"val_frac must be in (0, 1), got {cfg.val_frac}"),
        (lambda: cfg.corpus != "tiny" or cfg.val_frac == Config.val_frac, f"val_frac={cfg.val_frac} is the world "
         f"corpus's: the tiny corpus makes its own validation documents (n_docs / 10), so it would be ignored"),
        (lambda: cfg.steps >= 1 and cfg.batch_size >= 1 and cfg.grad_accum >= 1,
         "steps, batch_size and grad_accum must be >= 1"),
        (lambda: cfg.lr > 0 and (cfg.min_lr is None or cfg.min_lr >= 0) and cfg.warmup >= 0 and cfg.weight_decay >= 0
         and cfg.grad_clip >= 0, "lr must be > 0, and min_lr, warmup, weight_decay and grad_clip >= 0"),
        (lambda: warmup_problem(cfg.warmup, cfg.steps) is None, warmup_problem(cfg.warmup, cfg.steps)),
        (lambda: cfg.min_lr is None or cfg.min_lr <= cfg.lr,
         f"min_lr ({cfg.min_lr}) must be <= lr ({cfg.lr}): the cosine decays from lr down to min_lr"),
        (lambda: cfg.init_std > 0, f"init_std must be > 0, got {cfg.init_std} (0: a model whose weights never move)"),
        (lambda: cfg.log_every >= 1, "log_every must be >= 1"),
        (lambda: cfg.eval_every >= 0 and cfg.ckpt_every >= 0 and cfg.threads >= 0,
         "eval_every (0: never), ckpt_every (0: at the end only) and threads (0: PyTorch's default) must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok():
            raise ConfigError(msg)


def run_history(run, stage):
    """The run directory's training records over every attempt at it (metrics.jsonl): for a step logged by a stopped
    attempt and again after the resume, the later record."""
    latest, cut = {}, 0
    # (damaged bytes, not UTF-8: their line is passed over as a cut one is, not a UnicodeDecodeError after training)
    text = run.metrics_path.read_bytes().decode("utf-8", "replace") if run.metrics_path.is_file() else ""
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill (the next attempt's Run ends it first)
            cut += 1
            continue
        if isinstance(r, dict) and r.get("stage") == stage and "step" in r:
            latest[(r["step"], "val_loss" in r)] = r
    if cut:
        print(f"{run.metrics_path}: {cut} unreadable line(s) passed over (cut short when a run was stopped)")
    return [latest[k] for k in sorted(latest)]


# ----------------------------------------------------------------------------------------------------
# the tiny built-in corpus

NAMES = ("ann", "bob", "cat", "dan", "eve", "fay")
WORDS = ("has", "apples", "gives", "more", "now", ".")


def tiny_vocab():
    return [*NAMES, *WORDS, *(str(n) for n in range(19))]


def tiny_heldout(x, y):
    """20 of the 100 (x, y) pairs never appear in training documents."""
    return (x - y) % 5 == 0


def tiny_prompt(a, b, x, y):
    return f"<bos> {a} has {x} apples . {b} gives {a} {y} more . now {a} has"


def tiny_docs(n, seed, heldout):
    """n stories whose (x, y) pairs are all held-out ones (heldout=True) or all training ones; the held-out ones from
    a random stream of their own (not Random(seed + 1): the next seed's training stream)."""
    r = random.Random(seed_int(seed, "tiny-heldout") if heldout else seed)
    pairs = [(x, y) for x in range(10) for y in range(10) if tiny_heldout(x, y) == heldout]
    docs = []
    for _ in range(n):
        a, b = r.sample(NAMES, 2)
        x, y = r.choice(pairs)
        docs.append(f"{tiny_prompt(a, b, x, y)} {x + y} apples . <eos>")
    return docs


def load_corpus(cfg):
    """-> (tokenizer, train texts, val texts)."""
    if cfg.corpus == "tiny":
        n_val = max(1, cfg.n_docs // 10)
        return word_tokenizer(tiny_vocab()), tiny_docs(cfg.n_docs, cfg.seed, False), tiny_docs(n_val, cfg.seed, True)
    if cfg.corpus == "world":
        from data import world
        texts = world.corpus(cfg.n_docs, seed=cfg.seed)
        n_val = max(1, int(len(texts) * cfg.val_frac))
        return world.build_tokenizer(), texts[:-n_val], texts[-n_val:]
    raise AssertionError(cfg.corpus)  # validate refused any other corpus


def to_rows(tok, texts, block_size, device):
    """Documents -> one token stream -> rows [N, block_size + 1] (see train.lm_windows)."""
    try:
        return lm_windows(token_stream(tok, texts, device), block_size)
    except ValueError as e:
        raise DataError(f"corpus too small: {e}; raise n_docs") from None


# ----------------------------------------------------------------------------------------------------
# the pipeline

def run(cfg, run):
    rank, world_size, device = ddp_setup(cfg.device)
    device = torch.device(device)
    if world_size > 1:
        dirs = [None] * world_size
        torch.distributed.all_gather_object(dirs, str(run.dir))
        if len(set(dirs)) > 1:
            raise ConfigError("the ranks chose different run directories: pass --out_dir=...")
    use_tf32(device, True)
    t0 = time.time()

    tok, train_texts, val_texts = load_corpus(cfg)
    train = {"tokens": to_rows(tok, train_texts, cfg.block_size, device)}
    val = {"tokens": to_rows(tok, val_texts, cfg.block_size, device)}
    if rank == 0:
        save_tokenizer(tok, run.dir / "tokenizer.json")

    mcfg = GPTConfig(vocab_size=tok.get_vocab_size(), block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, init_std=cfg.init_std)
    model = GPT(mcfg, generator=generator("cpu", cfg.seed, "init")).to(device)
    if rank == 0:
        print(f"{cfg.corpus}: {train['tokens'].numel():,} train tokens in {len(train['tokens'])} rows, "
              f"model {model.n_params():,} parameters, {world_size} process(es) on {device}")
    ckpt = run.dir / "model"
    try:
        out = train_lm(model, train, val=val, steps=cfg.steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                       grad_clip=cfg.grad_clip, seed=cfg.seed, eval_every=cfg.eval_every, log_every=cfg.log_every,
                       ckpt=ckpt, ckpt_every=cfg.ckpt_every, resume=cfg.resume, meta={"tokenizer": "tokenizer.json"},
                       compile=cfg.compile, bf16=cfg.bf16, run=run, desc="pretrain")
    except KeyboardInterrupt:  # the command's closing line says a rerun reuses what was saved: here, maybe nothing
        if rank == 0 and not state_file(ckpt).is_file():  # (train_lm's resume state)
            print(f"no checkpoint was written yet (ckpt_every={cfg.ckpt_every}"
                  f"{': only at the end' if not cfg.ckpt_every else ''}): a rerun starts from step 0", file=sys.stderr)
        raise
    if world_size > 1:  # leave together: a gloo rank that exits while its peer still talks can abort
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()  # the rest is rank 0's alone
    if rank != 0:
        return

    model.eval()
    history = run_history(run, "pretrain")  # every attempt's, so that a resumed run reports its whole training
    losses = [r["loss"] for r in history if "loss" in r]
    results = {"corpus": cfg.corpus, "n_params": model.n_params(), "steps": out["step"],
               "train_tokens": out["step"] * cfg.batch_size * cfg.grad_accum * world_size * cfg.block_size,
               "train_loss": losses[-1] if losses else out["train_loss"], "val_loss": out["val_loss"],
               "val_precision": "bf16 autocast" if cfg.bf16 else "fp32", "seconds": time.time() - t0}
    speeds = [r["tokens_per_s"] for r in history if "tokens_per_s" in r]
    results["tokens_per_s"] = speeds[-1] if speeds else None
    if out["start_step"]:
        results["resumed_from_step"] = out["start_step"]
    prompts = [" ".join(t.split()[:4]) for t in val_texts[:3]]
    completions = model.generate([tok.encode(p).ids for p in prompts], min(24, cfg.block_size - 4), temperature=0,
                                 eos_id=tok.token_to_id("<eos>"))
    results["samples"] = [{"prompt": p, "completion": tok.decode(c, skip_special_tokens=False)}
                          for p, c in zip(prompts, completions)]
    if cfg.corpus == "tiny":
        results["sum_accuracy"] = {"train": sum_accuracy(model, tok, False), "heldout": sum_accuracy(model, tok, True)}
    run.save_results(results, table(results))
    plot_loss(history, run.dir / "loss.png", f"{cfg.corpus}: {model.n_params():,} parameters")
    print(table(results))
    print(f"\nresults, table, loss curve and checkpoint in {run.dir}")


@torch.no_grad()
def sum_accuracy(model, tok, heldout):
    """Fraction of (x, y) pairs for which the greedy next token after the tiny prompt is x + y."""
    pairs = [(x, y) for x in range(10) for y in range(10) if tiny_heldout(x, y) == heldout]
    prompts = [tok.encode(tiny_prompt("ann", "bob", x, y)).ids for x, y in pairs]
    got = model.generate(prompts, 1, temperature=0)
    return sum(tok.id_to_token(g[0]) == str(x + y) for g, (x, y) in zip(got, pairs)) / len(pairs)


def table(results):
    rows = [("corpus", results["corpus"]), ("parameters", f"{results['n_params']:,}"), ("steps", results["steps"]),
            ("train tokens", f"{results['train_tokens']:,}"), ("train loss (last interval)", _f(results["train_loss"])),
            (f"val loss ({results['val_precision']})", _f(results["val_loss"])),
            ("tokens/s", _f(results["tokens_per_s"], 0)),
            ("seconds", f"{results['seconds']:.1f}")]
    if "sum_accuracy" in results:
        rows += [("sum accuracy, train pairs", _f(results["sum_accuracy"]["train"], 2)),
                 ("sum accuracy, held-out pairs", _f(results["sum_accuracy"]["heldout"], 2))]
    lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "| prompt | greedy completion |", "|---|---|"]
    lines += [f"| `{s['prompt']}` | `{s['completion']}` |" for s in results["samples"]]
    return "\n".join(lines)


def _f(x, digits=4):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def plot_loss(history, path, title):
    plt = pyplot()
    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if train:  # a marker where the points are few: one log line (log_every >= steps) drew an invisible line
        ax.plot(*zip(*train), marker="o" if len(train) < 3 else None, ms=3, label="train (interval mean)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
