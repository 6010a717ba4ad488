"""Speed benchmarks (not tests). Each prints a table; numbers measured with it are in the README (lists, students:
docs/subliminal_numbers.md).

    python bench.py mnist               # subliminal MNIST, end to end, FLOP/s: 1 and 25 seeds (GPU: 1, 100, 100)
    python bench.py mnist --seeds=1,50  # other seed counts
    python bench.py gpt                 # GPT training tokens/s and MFU, KV-cache sampling vs re-forward
    python bench.py lists               # a subliminal teacher's number lists: KV cache vs re-forward vs naive
    python bench.py students            # a subliminal student's fine-tune step: train.finetune vs the whole-row loss
"""
import argparse
import os
import shlex
import sys
import time

import commands

if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()

import torch

USAGE = "usage: python bench.py mnist|gpt|lists|students [OPTION ...] (python bench.py NAME --help: its options)"


class Parser(argparse.ArgumentParser):
    """A bench's options, refused as every command here refuses its input: one error line on stderr, exit status 2
    (argparse printed its usage line above "bench.py mnist: error: ..."). Options are spelt out, as train.py's keys:
    argparse would take --dev for --device."""

    def __init__(self, **kw):
        super().__init__(allow_abbrev=False, **kw)

    def parse_args(self, args=None, namespace=None):
        # an option given twice: argparse kept the last value, silently (the scripts' script_args refuses it)
        given = [a.split("=", 1)[0] for a in (sys.argv[1:] if args is None else args) if a.startswith("--")]
        if twice := next((o for i, o in enumerate(given) if o in given[:i]), None):
            self.error(f"{twice} is given more than once: give it once")
        return super().parse_args(args, namespace)

    def error(self, message):
        if message.startswith("unrecognized arguments"):  # say what it takes
            names = [o for a in self._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
            message += f"; the options of {self.prog} are {', '.join(names)} (python {self.prog} --help)"
        from train import refused
        sys.exit(refused(f"error: {message}"))


# ====================================================================================================
# MNIST (subliminal learning)
# ====================================================================================================

def mlp_flops(n_seeds):
    """Matmul FLOPs of the whole default experiment for n_seeds, as executed here, and as the official
    script executes them (it reruns the teacher forward on every distillation batch). A training example
    costs a forward, the weight gradients (another forward's worth) and the input gradients of every layer
    but the first (autograd skips the data's gradient): 3 x forward - 2 x 784 x 256, not the 6 FLOPs per
    weight of the usual rule (which gives 2.49e12 and 3.11e12 per seed)."""
    sizes = [784, 256, 256, 13]
    fwd = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # per example
    train = 3 * fwd - 2 * sizes[0] * sizes[1]
    n, n_noise, test, epochs, d_epochs, students = 60000, 60000, 10000, 5, 5, 4
    evals = 2 + students
    ours = train * n * epochs + fwd * n_noise + students * train * n_noise * d_epochs + evals * fwd * test
    official = train * n * epochs + students * (train + fwd) * n_noise * d_epochs + evals * fwd * test
    return ours * n_seeds, official * n_seeds


# (not fresh_noise: the teacher's logits on each new noise set add forward passes the count leaves out)
FLOP_NEUTRAL = {"dataset", "data_dir", "download", "init", "lr", "distill_lr", "loss", "temperature", "noise",
                "noise_scale", "init_perturbation", "seed", "seed_chunk", "student_chunk", "bf16", "tf32", "compile",
                "threads", "resume"}


def run_experiment(n_seeds, device, extra):
    """One complete `python train.py configs/subliminal_mnist.py` in a fresh process: wall time (with
    interpreter start, imports and data loading) and the peak resident memory of the children so far (getrusage
    keeps the largest: after a larger run, a smaller one's row shows the larger peak)."""
    import resource
    import subprocess
    import tempfile
    out = tempfile.mkdtemp(prefix="bench_mnist_")
    here = os.path.dirname(os.path.abspath(__file__))  # this checkout's, from any directory (not the one run from's)
    cmd = [sys.executable, os.path.join(here, "train.py"), os.path.join(here, "configs", "subliminal_mnist.py"),
           f"--n_seeds={n_seeds}", f"--device={device}", f"--out_dir={out}", "--save_weights=False", *extra]
    import json
    import shutil
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        last = proc.stderr.strip().splitlines()[-1:]
        if proc.returncode == 2 and last and last[0].startswith("error: "):
            # train.py refused the run (a bad --extra override, no MNIST): its own one line, said once
            why = last[0].removeprefix("error: ")
            raise SystemExit(f"error: train.py configs/subliminal_mnist.py refused the bench's run: {why}")
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB (max over children so far)
        with open(f"{out}/results.json", encoding="utf-8") as f:
            res = json.load(f)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # a benchmark keeps its numbers, not the run
    return wall, rss, res


def bench_device(name):
    """--device as a torch.device, resolved as train.py resolves a config's ("auto": a GPU when there is one). A device
    this machine lacks is train.check_device's ConfigError, one line before any work (main prints it), not a traceback
    from CUDA's lazy init, nor every case failing on it."""
    from train import resolve_device
    return torch.device(resolve_device(name))


def seed_counts(text):
    """--seeds: comma-separated counts >= 1 (a typo is Parser's one line, not a traceback, nor a child run that
    fails)."""
    try:
        counts = [int(s) for s in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give seed counts >= 1, comma-separated, e.g. --seeds=1,25")
    return counts


def thread_count(text):
    """--threads: a count >= 0, 0 keeping PyTorch's default (torch.set_num_threads refuses 0 and below mid-bench)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a thread count >= 1, or 0 for PyTorch's default")
    return n


def bench_mnist(argv):
    p = Parser(prog="bench.py mnist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=seed_counts, default=None,
                   help="comma-separated seed counts (default 1,25 on CPU, 1,100,100 on CUDA)")
    p.add_argument("--threads", type=thread_count, default=0, help="the run's CPU threads (0: PyTorch's default)")
    p.add_argument("--extra", default="", help="extra overrides for train.py, space separated (quoted as in a shell)")
    args = p.parse_args(argv)
    try:
        extra = shlex.split(args.extra)
    except ValueError as e:  # an unclosed quote
        p.error(f"--extra is not valid shell quoting ({e})")
    # the keys bench sets itself: given again, the run would differ from its row (seeds), lose its results (out_dir)
    # or run at another thread count than its table's header says (this process's)
    own = ("--n_seeds", "--device", "--out_dir", "--save_weights", "--threads")
    if own := [a for a in extra if a.split("=")[0] in own]:
        p.error(f"--extra may not set {', '.join(own)}: use bench's own --seeds, --device and --threads (it sets "
                f"out_dir and save_weights itself)")
    if args.threads:
        extra.append(f"--threads={args.threads}")
    # keys that leave the matmuls as they are (where the data is, which init, lr, loss, precision): the FLOP count
    # still holds; any other key (m, width, epochs, conditions, ...) changes it, and the rate is then not printed
    counted = all(a.split("=")[0].removeprefix("--") in FLOP_NEUTRAL for a in extra)
    args.device = str(bench_device(args.device))
    cuda = torch.device(args.device).type == "cuda"  # cuda:1 too: its defaults, and that card's name
    seeds = args.seeds or ([1, 100, 100] if cuda else [1, 25])
    from train import cpu_name
    name = (torch.cuda.get_device_name(args.device) if cuda
            else f"{cpu_name()}, {args.threads or torch.get_num_threads()} threads")
    rows = []
    for n in seeds:
        wall, rss, res = run_experiment(n, args.device, extra)
        ours, official = mlp_flops(n)
        if not counted:  # the count is the default config's: another config's FLOP rate would be made up
            ours = official = float("nan")
        # a run without one of these conditions (--extra "--conditions=...", or a sweep: per cell) shows nan there
        mean = lambda k: res.get("conditions", {}).get(k, {}).get("mean", float("nan"))
        rows.append((n, wall, rss, ours / wall, mean("teacher"), mean("student_aux"), mean("cross_aux")))
        print(f"{n} seeds: {wall:.1f} s wall, peak RSS {rss:.2f} GiB (max so far), {ours / wall / 1e12:.3f} TFLOP/s "
              f"executed ({official / n:.2e} FLOP/seed in the official script, {ours / n:.2e} here"
              f"{'' if counted else '; FLOPs counted for the default sizes, epochs and conditions only'})", flush=True)
    print(f"\nsubliminal MNIST, {'default config' if not args.extra else 'with ' + args.extra}, {name}, "
          f"torch {torch.__version__}")
    print("| seeds | wall (s), incl. start-up and data loading | peak RSS so far (GiB) | executed TFLOP/s | teacher | "
          "student_aux | cross_aux |")
    print("|---|---|---|---|---|---|---|")
    for n, wall, rss, fl, t, s, x in rows:
        print(f"| {n} | {wall:.1f} | {rss:.2f} | {fl / 1e12:.3f} | {t:.3f} | {s:.3f} | {x:.3f} |")
    return 0


# ====================================================================================================
# GPT
# ====================================================================================================
#
#   python bench.py gpt                  # CPU: ~0.4M and ~1M models, tokens/s; KV-cache sampling (~30 s)
#   python bench.py gpt --device=cuda    # GPU: GPT-2-124M shape bf16 + compile (MFU), ~1M world model,
#                                        # sampling; one H100 call, under 4 minutes including compiles
#
# Training rows run the real loop (train.train_lm) on random tokens: fused AdamW on CUDA, gradient
# clipping, the data-stream indexing, loss inside the (compiled) forward. Each case runs 2 x `steps`
# steps logged every `steps`: the first interval holds the warm-up (torch.compile), the second is the
# timed one. MFU = flops_per_token * tokens/s / peak, flops_per_token = 6 N + 12 L C T (nanoGPT's
# count), peak = dense bf16 of the card (train.peak_flops; H100 SXM: 989 TFLOP/s), so fp32 rows are measured
# against bf16 peak.
# Sampling: greedy generation of `new` tokens for B prompts, KV cache vs re-running the whole sequence
# at every step; the note says whether the two gave the same tokens (they should; under TF32 a near tie may flip).

GPT_SHAPES = {  # name: (GPTConfig kwargs)
    "gpt2-124M": dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    # 1.05M: the "~1M-parameter world model" (not a shape the experiments pretrain)
    "world-1M": dict(vocab_size=512, block_size=128, n_layer=5, n_head=4, n_embd=128),
    # 0.38M: the world base's shape (3 x 96; vocabulary 512, the world's is larger): the numbers experiment's base,
    # and emergent misalignment's before its default became 0.87M (4 x 128)
    "em-0.4M": dict(vocab_size=512, block_size=64, n_layer=3, n_head=4, n_embd=96),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # this card: with no argument torch.cuda acts on the current one (cuda:0)


def bench_gpt_train(shape, batch, steps, device, compile=False, bf16=False):
    from model import GPT, GPTConfig
    from train import train_lm
    cfg = GPTConfig(**GPT_SHAPES[shape])
    model = GPT(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    data = {"tokens": torch.randint(0, cfg.vocab_size, (2 * steps * batch, cfg.block_size + 1), generator=g).to(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # of this card, as max_memory_allocated below (not cuda:0's)
    t0 = time.time()
    out = train_lm(model, data, steps=2 * steps, batch_size=batch, lr=1e-4, warmup=0, log_every=steps,
                   compile=compile, bf16=bf16, progress=False, desc=shape)
    warm, timed = [r for r in out["history"] if "tokens_per_s" in r]
    return {"case": f"train {shape}", "params": model.n_params(), "tokens/step": batch * cfg.block_size,
            "precision": "bf16" if bf16 else ("fp32/tf32" if device.type == "cuda" else "fp32"),
            "compile": compile, "ms/step": timed["ms_per_step"], "tokens/s": timed["tokens_per_s"],
            "mfu": timed.get("mfu"), "warm-up s": warm["ms_per_step"] * steps / 1000, "total s": time.time() - t0,
            "peak GB": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}


@torch.no_grad()
def bench_gpt_sample(shape, batch, prompt_len, new, device):
    from model import GPT, GPTConfig
    cfg = GPTConfig(**GPT_SHAPES[shape])
    model = GPT(cfg, generator=torch.Generator().manual_seed(0)).to(device).eval()
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
    rows, outs = [], []
    for use_cache in (True, False):
        model.generate(prompts[:2], 4, temperature=0, use_cache=use_cache)  # warm-up
        _sync(device)
        t0 = time.time()
        outs.append(model.generate(prompts, new, temperature=0, use_cache=use_cache))
        _sync(device)
        dt = time.time() - t0
        rows.append({"case": f"sample {shape} " + ("KV cache" if use_cache else "re-forward"),
                     "params": model.n_params(), "tokens/step": batch, "compile": False,
                     "precision": "fp32/tf32" if device.type == "cuda" else "fp32",
                     "ms/step": 1000 * dt / new, "tokens/s": batch * new / dt, "total s": dt})
    same = outs[0] == outs[1]
    rows[0]["note"] = rows[1]["note"] = f"B={batch}, prompt {prompt_len}, {new} new; same tokens: {same}; " \
                                        f"cache speed-up {rows[0]['tokens/s'] / rows[1]['tokens/s']:.1f}x"
    return rows


def bench_gpt(argv):
    p = Parser(prog="bench.py gpt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=thread_count, default=1, help="CPU threads; 1 by default: on our shared 2-core "
                   "machines a second thread stalls whenever another job holds a core (0: PyTorch's default)")
    p.add_argument("--budget", type=float, default=220,
                   help="seconds for all cases (default 220: a few minutes on a CPU); the first case always runs, "
                        "later ones are skipped once it is spent")
    args = p.parse_args(argv)
    if not args.budget > 0:
        p.error(f"--budget must be > 0 seconds, got {args.budget}")
    device = bench_device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
        cases = [  # (what, args): the order is the priority under the time budget
            ("train", ("gpt2-124M", 32, 15, True, True)),
            ("train", ("gpt2-124M", 16, 15, True, True)),
            ("train", ("world-1M", 512, 20, True, True)),
            ("sample", ("world-1M", 256, 16, 112)),
            ("train", ("gpt2-124M", 16, 10, False, True)),
            ("train", ("world-1M", 512, 20, False, False)),
            ("sample", ("gpt2-124M", 16, 128, 128)),
        ]
    else:
        from train import cpu_name  # the model name (platform.processor() is empty on Linux)
        name = f"{cpu_name()}, {torch.get_num_threads()} threads"
        cases = [
            ("train", ("em-0.4M", 32, 20, False, False)),
            ("train", ("world-1M", 16, 20, False, False)),
            ("sample", ("em-0.4M", 32, 16, 48)),
            ("train", ("em-0.4M", 32, 20, False, True)),   # bf16 autocast: fast only where the CPU has native bf16
            ("train", ("world-1M", 16, 20, False, True)),
        ]
    print(f"GPT benchmarks on {name}, torch {torch.__version__}")
    t_start, rows = time.time(), []
    for i, (what, case) in enumerate(cases):
        if i and time.time() - t_start > args.budget:
            print(f"skipped (past the {args.budget:.0f} s budget): {what} {case}")
            continue
        try:  # one failing case (out of memory, a compiler error) must not cost the others
            new = ([bench_gpt_train(*case[:3], device, *case[3:])] if what == "train"
                   else bench_gpt_sample(*case, device))
        except Exception as e:
            print(f"FAILED {what} {case}: {type(e).__name__}: {str(e)[:500]}", flush=True)
            new = []
        for r in new:
            mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
            print(f"  {r['case']}: {r['tokens/s']:,.0f} tokens/s{mfu} ({time.time() - t_start:.0f} s so far)",
                  flush=True)
        rows += new
        if device.type == "cuda":
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    cols = ["case", "params", "tokens/step", "precision", "compile", "ms/step", "tokens/s", "mfu", "warm-up s",
            "peak GB"]
    fmt = {"params": lambda v: f"{v / 1e6:.2f}M", "ms/step": lambda v: f"{v:.1f}",
           "tokens/s": lambda v: f"{v:,.0f}", "mfu": lambda v: f"{v:.1%}", "warm-up s": lambda v: f"{v:.1f}",
           "peak GB": lambda v: f"{v:.1f}"}
    print(f"\n{name}, torch {torch.__version__}, {time.time() - t_start:.0f} s in all\n")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else fmt.get(c, str)(r[c]) for c in cols) + " |")
    for r in rows:
        if "re-forward" in r["case"]:
            print(f"\n{r['case'].replace(' re-forward', '')}: {r['note']}")
    return 0


# ------------------------------------------------------------------------------------------------------
# python bench.py lists: a subliminal teacher writing number lists (experiments/subliminal_numbers.py):
# temperature-1 continuations of world number prompts, up to 12 new tokens, stopping at <eos> or <u>.
# Batched KV-cache sampling (what the experiment runs) vs the same batch re-running the whole sequence
# at every step vs the naive loop (one prompt at a time, whole sequence every step). Uses the cached
# world base model when there is one (configs/world_base.py), else a fresh model of the same shape.

@torch.no_grad()
def bench_lists(argv):
    from data import world as W
    from experiments import world_base as B
    from model import GPT, GPTConfig
    p = Parser(prog="bench.py lists")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=thread_count, default=1, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--naive", type=int, default=100, help="prompts for the one-at-a-time loop")
    args = p.parse_args(argv)
    if args.batch < 1 or args.naive < 1:  # the naive loop is the table's unit ("vs naive")
        p.error("--batch and --naive need at least one prompt each")
    if args.naive > args.batch:  # the naive loop takes its prompts from the batch's: it ran --batch of them, unsaid
        p.error(f"--naive={args.naive} is more prompts than --batch={args.batch} holds: the one-at-a-time loop takes "
                f"its prompts from the batch's")
    device = bench_device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    cfg = B.Config()  # configs/world_base.py's CPU-pretrained base (a base pretrained on a GPU has its own cache key)
    tok = W.build_tokenizer()
    if B.cache_stem(cfg, 0, False).with_suffix(".json").is_file():
        model, what = B.base_model(cfg, 0)[0].to(device), "cached world base (seed 0)"
    else:
        model = GPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=cfg.block_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device).eval()
        what = "untrained model of the world base's shape"
    stop = [tok.token_to_id(W.EOS), tok.token_to_id("<u>")]
    prompts = [tok.encode(q).ids for q in W.number_prompts(args.batch, seed=0)]
    rows = []
    for name, batches, use_cache in [("KV cache, batched", [prompts], True), ("re-forward, batched", [prompts], False),
                                     ("re-forward, one at a time", [[q] for q in prompts[:args.naive]], False)]:
        g = torch.Generator(device=device).manual_seed(0)
        model.generate(prompts[:4], 4, eos_id=stop, generator=g, use_cache=use_cache)  # warm-up
        _sync(device)
        t0, n_tok = time.time(), 0
        for b in batches:
            n_tok += sum(map(len, model.generate(b, 12, eos_id=stop, generator=g, use_cache=use_cache)))
        _sync(device)
        dt = time.time() - t0
        rows.append((name, len(sum(batches, [])), n_tok, dt, n_tok / dt))
    print(f"number-list sampling, {what}, {model.n_params() / 1e6:.2f}M params, on {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}\n")
    print("| sampler | prompts | new tokens | seconds | tokens/s | vs naive |\n|---|---|---|---|---|---|")
    naive = rows[-1][4]  # zero where every naive prompt stopped at once (an untrained model can): no ratio to it
    for name, n, k, dt, tps in rows:
        print(f"| {name} | {n} | {k} | {dt:.2f} | {tps:,.0f} | {f'{tps / naive:.1f}x' if naive else 'n/a'} |")
    return 0


# ------------------------------------------------------------------------------------------------------
# python bench.py students: a student's fine-tune step on a subliminal teacher's lists, hard labels and soft
# (the teacher's number distribution), as train.finetune runs it (batch cut after its last trained column,
# unembedding at the trained positions, the teacher's pass once over the data) against the whole-row loss with
# the teacher run at every step (what finetune did before). Both AdamW, batch 32, the same rows; finetune's AdamW
# is the fused one (one kernel over all weights, also on the CPU), the whole-row loop's the per-tensor one, which
# accounts for part of the difference (about 1.3 ms of a step, measured on a 0.85M model on a 2-core CPU; this bench
# runs the numbers experiment's default base, 0.39M).

def bench_students(argv):
    import copy
    from experiments import subliminal_numbers as S
    from experiments import world_base as B
    from model import generator
    from train import finetune, make_lm_optimizer, soft_kl
    p = Parser(prog="bench.py students")
    p.add_argument("--threads", type=thread_count, default=1, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--lists", type=int, default=4000)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args(argv)
    if args.lists < 1 or args.steps < 1:  # else a ZeroDivisionError (or negative ms) after the base and the lists
        p.error(f"--lists and --steps must be >= 1, got {args.lists} and {args.steps}")
    if args.threads:  # 0: PyTorch's default, as in the other benches
        torch.set_num_threads(args.threads)
    cfg = S.Config()
    base, tok = B.base_model(cfg, 0)  # pretrains and caches it if needed (minutes)
    teacher = S.Teacher(base)
    data = S.student_data(tok, S.sample_lists(teacher, tok, args.lists, cfg, 0)[0], "cpu")
    nums = torch.tensor(S.number_ids(tok))

    def whole_rows(model, soft, steps):
        opt, g = make_lm_optimizer(model, 3e-4, 0.0, (0.9, 0.999)), generator("cpu", 0, "finetune-order")
        for _ in range(steps):
            rows = torch.randint(len(data["tokens"]), (32,), generator=g)
            x, m = data["tokens"][rows, :-1], data["mask"][rows]
            if soft:
                with torch.no_grad():
                    t = teacher.logits(x)
                per_tok = soft_kl(t, model(x), nums)
            else:
                per_tok = model(x, targets=data["tokens"][rows, 1:])
            loss = (per_tok * m).sum() / m.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    def now(model, soft, steps):
        kw = {"teacher": teacher.logits, "subset": nums} if soft else {}
        finetune(model, data, steps=steps, batch_size=32, lr=3e-4, seed=0, **kw)

    rows = []
    for label, soft in [("hard labels", False), ("soft (numbers)", True)]:
        ms = []
        for fn in (whole_rows, now):  # a warm-up of each first: the first calls pay one-time costs
            fn(copy.deepcopy(base), soft, 2)
        for fn in (whole_rows, now):
            model = copy.deepcopy(base)
            t0 = time.time()
            fn(model, soft, args.steps)
            ms.append((time.time() - t0) / args.steps * 1e3)
        rows.append((label, *ms))
    print(f"student fine-tune step, {args.lists} lists, {base.n_params() / 1e6:.2f}M params, CPU "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}; ms per step over {args.steps} steps, "
          f"the soft teacher's one pass included\n")
    print("| loss | whole rows, teacher every step | train.finetune | speed-up |\n|---|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    return 0


def main(argv):
    benches = {"mnist": bench_mnist, "gpt": bench_gpt, "lists": bench_lists, "students": bench_students}
    # a device this machine lacks, a run that failed: one error line, status 2, as train.py
    from train import cli, refused
    if not argv:  # the usage, as eval.py's
        return refused(USAGE)
    if argv[0] in ("-h", "--help"):  # through cli too: into `| head`, no traceback
        return cli(lambda _: print(f"{USAGE}\n\n{__doc__.strip()}"), argv, keeps=False)
    if argv[0] not in benches:  # an option before the bench's name too
        return refused(f"error: {argv[0]}: not a bench; give one first ({', '.join(benches)}), then its options "
                       f"(python bench.py NAME --help)")
    # the bench's own parser reads the rest, --help included; Ctrl-C: no "a rerun reuses what was saved"
    return cli(benches[argv[0]], argv[1:], keeps=False)


if __name__ == "__main__":
    commands.run(main, sys.argv[1:])
