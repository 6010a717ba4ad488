"""bench.py: the FLOP counts behind the README's FLOP/s and MFU figures, checked against what torch executes
(FlopCounterMode), and the benchmarks' tables at tiny sizes (the slow parts stubbed; speed is never asserted)."""
import argparse
import dataclasses
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import bench
import train
from conftest import ROOT
from experiments import subliminal_mnist as E
from model import GPT, GPTConfig, SeedMLP, generator, init_mlp_params

# per seed, the default MNIST experiment, as test_mlp_flops_is_what_the_default_experiment_executes counts it
OURS, OFFICIAL = 1_888_696_320_000, 2_503_311_360_000
MKDTEMP = tempfile.mkdtemp
RESULTS = {"conditions": {"teacher": {"mean": 0.943}, "student_aux": {"mean": 0.52}, "cross_aux": {"mean": 0.101}}}


def flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def fake_run(monkeypatch, tmp_path, returncode=0, results='{"conditions": {}}', stderr="Traceback...\nboom"):
    """Stub subprocess.run for run_experiment: write the child's results.json, keep its temp dir under tmp_path."""
    seen, mkdtemp = {}, MKDTEMP

    def run(cmd, **kw):
        seen["cmd"] = cmd
        seen["out"] = Path(next(a for a in cmd if a.startswith("--out_dir="))[len("--out_dir="):])
        (seen["out"] / "results.json").write_text(results)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix: mkdtemp(prefix=prefix, dir=tmp_path))
    return seen


def fake_clock(monkeypatch):
    """bench's time.time on a clock that only the stubbed work advances (now[0] += seconds): timings exact."""
    now = [0.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(time=lambda: now[0]))
    return now


# ----------------------------------------------------------------------------------------------------
# FLOP counts

def test_an_mlp_example_costs_three_forwards_less_the_first_layers_input_gradient():
    """mlp_flops' docstring: autograd never computes the data's gradient, so training is 3 fwd - 2 x 784 x 256."""
    sizes, S, B = [784, 256, 256, 13], 2, 8
    fwd = 2 * (784 * 256 + 256 * 256 + 256 * 13)
    model = SeedMLP(S, sizes)
    model.load_seeds(init_mlp_params([0, 1], sizes, 10, "paper", "cpu", 0))
    assert flops(lambda: model(torch.randn(B, 784))) == flops(lambda: model(torch.randn(S, B, 784))) == fwd * S * B
    gens = lambda: [generator("cpu", 0, k, "t") for k in range(S)]
    teacher = flops(lambda: train.train_classifier(model, torch.randn(B, 784), torch.randint(0, 10, (B,)), epochs=1,
                                                   lr=1e-3, batch_size=B, gens=gens()))
    student = flops(lambda: train.train_distill(model, torch.randn(S, B, 784), torch.randn(S, B, 13), [10, 11, 12],
                                                epochs=1, lr=1e-3, batch_size=B, gens=gens()))
    assert teacher == student == (3 * fwd - 2 * 784 * 256) * S * B


def test_mlp_flops_is_what_the_default_experiment_executes(monkeypatch, tmp_path):
    """The config bench.py runs, executed at 1/100 of its data (every phase is linear in it), counts 1/100 of
    mlp_flops."""
    seen = fake_run(monkeypatch, tmp_path)
    bench.run_experiment(2, "cpu", [])
    monkeypatch.chdir(ROOT)
    _, cfg = train.load_config(seen["cmd"][2:])  # the child's own arguments
    assert (cfg.n_seeds, cfg.n_train, cfg.n_noise, cfg.dataset) == (2, 0, 60000, "mnist")  # 60,000 train, 10,000 test
    cfg = dataclasses.replace(cfg, n_noise=600)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(600, 784, generator=g) * 2 - 1, torch.randint(0, 10, (600,), generator=g),
            torch.rand(100, 784, generator=g) * 2 - 1, torch.randint(0, 10, (100,), generator=g))
    executed = flops(lambda: E.run_group(cfg, [0, 1], [1, 0], data, torch.device("cpu"), lambda **r: None))
    assert executed * 100 == bench.mlp_flops(2)[0] == 2 * OURS
    # the official script skips the one pass of teacher logits and reruns the teacher on every distillation example
    students = len([c for c in cfg.conditions if c not in ("reference", "teacher")])
    fwd = flops(lambda: SeedMLP(1, [784, 256, 256, 13])(torch.zeros(1, 784)))
    assert bench.mlp_flops(2)[1] - bench.mlp_flops(2)[0] == 2 * 60000 * fwd * (students * cfg.distill_epochs - 1)
    assert bench.mlp_flops(3) == (3 * OURS, 3 * OFFICIAL)


@pytest.mark.parametrize("kw, T", [(dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32), 16),
                                   (dict(vocab_size=96, block_size=32, n_layer=3, n_head=4, n_embd=48, mlp_ratio=2),
                                    12)])
def test_gpt_flops_per_token_is_a_training_steps_matmuls(kw, T):
    """MFU's numerator: forward + backward matmuls (attention as full T x T products, as SDPA's math kernel does them)
    per token; the formula's 6 per parameter also counts the LayerNorm gains, which do no matmul."""
    model = GPT(GPTConfig(**kw))
    x, y = torch.randint(0, kw["vocab_size"], (2, T)), torch.randint(0, kw["vocab_size"], (2, T))
    with sdpa_kernel(SDPBackend.MATH):
        executed = flops(lambda: model(x, targets=y).mean().backward())
    gains = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert executed == 2 * T * (model.flops_per_token(T) - 6 * gains)


def test_peak_flops_is_the_cards_dense_bf16_peak(monkeypatch):
    """MFU's denominator; a CPU or an unknown card has none (no MFU printed) rather than a made-up one."""
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12)]:
        asked = []  # the card asked is the one given (no argument would name the current card, cuda:0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: asked.append(device) or name)
        assert train.peak_flops("cuda") == peak and train.peak_flops(torch.device("cuda", 1)) == peak, name
        assert asked == ["cuda", torch.device("cuda", 1)], name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    with pytest.warns(UserWarning, match="RTX 4090"):
        assert train.peak_flops("cuda") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", None)  # never asked on a CPU
    assert train.peak_flops("cpu") is None


# ----------------------------------------------------------------------------------------------------
# python bench.py gpt

TINY = dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)


def test_gpt_train_row_reports_the_timed_interval_and_its_mfu(monkeypatch):
    """tokens/s and MFU of the second (timed) log interval of train_lm, MFU = flops_per_token x tokens/s / peak."""
    monkeypatch.setitem(bench.GPT_SHAPES, "tiny", TINY)
    r = bench.bench_gpt_train("tiny", 2, 1, torch.device("cpu"), bf16=True)
    assert r["precision"] == "bf16" and r["mfu"] is None  # a CPU: no peak, no MFU
    monkeypatch.setattr(train, "peak_flops", lambda device: 1e9)
    r = bench.bench_gpt_train("tiny", 2, 3, torch.device("cpu"))
    model = GPT(GPTConfig(**TINY))
    assert (r["case"], r["params"], r["tokens/step"], r["precision"], r["compile"], r["peak GB"]) == \
           ("train tiny", model.n_params(), 2 * 16, "fp32", False, None)
    assert r["tokens/s"] == pytest.approx(r["tokens/step"] / (r["ms/step"] / 1000), rel=1e-12)
    assert r["mfu"] == pytest.approx(model.flops_per_token(16) * r["tokens/s"] / 1e9, rel=1e-12)
    assert 0 < r["warm-up s"] and r["warm-up s"] + r["ms/step"] * 3 / 1000 <= r["total s"]  # both intervals, in seconds
    # which interval is which: the row is the second's, the first is the warm-up (swapped, the lines above passed)
    history = [{"step": 3, "ms_per_step": 50.0, "tokens_per_s": 1.0, "mfu": 0.1},
               {"step": 6, "ms_per_step": 5.0, "tokens_per_s": 2.0, "mfu": 0.5}]
    monkeypatch.setattr(train, "train_lm", lambda *a, **k: {"history": history})
    r = bench.bench_gpt_train("tiny", 2, 3, torch.device("cpu"))
    assert (r["ms/step"], r["tokens/s"], r["mfu"], r["warm-up s"]) == (5.0, 2.0, 0.5, pytest.approx(0.15))


def test_train_lm_mfu_is_per_gpu_over_the_global_batch(monkeypatch, tmp_path):
    """tokens/s counts every micro-step of every rank; MFU divides by the ranks' summed peak. Rank 0 of 2 simulated:
    a one-process gloo group (all_reduce is the identity) while train._dist reports 2 ranks."""
    import torch.distributed as dist
    model = GPT(GPTConfig(**TINY))
    data = {"tokens": torch.randint(0, 64, (24, 17), generator=torch.Generator().manual_seed(0))}
    monkeypatch.setattr(train, "peak_flops", lambda device: 1e9)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        monkeypatch.setattr(train, "_dist", lambda: (0, 2))
        out = train.train_lm(model, data, steps=2, batch_size=2, grad_accum=3, lr=1e-3, log_every=1, progress=False)
    finally:
        dist.destroy_process_group()
    assert [r["step"] for r in out["history"] if "mfu" in r] == [1, 2]
    for r in out["history"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 3 * 2 * 16 / (r["ms_per_step"] / 1000), rel=1e-12)
        assert r["mfu"] == pytest.approx(model.flops_per_token(16) * r["tokens_per_s"] / 2 / 1e9, rel=1e-12)


def test_gpt_sample_rows_time_both_samplers_on_the_same_tokens(monkeypatch):
    """tokens/s and ms per new token of each sampler, and the note's check that the KV cache changes no token."""
    monkeypatch.setitem(bench.GPT_SHAPES, "tiny", TINY)
    rows = bench.bench_gpt_sample("tiny", 3, 4, 5, torch.device("cpu"))
    assert [r["case"] for r in rows] == ["sample tiny KV cache", "sample tiny re-forward"]
    for r in rows:
        assert r["tokens/step"] == 3 and r["params"] == GPT(GPTConfig(**TINY)).n_params()
        assert (r["tokens/s"] == pytest.approx(3 * 5 / r["total s"])
                and r["ms/step"] == pytest.approx(1000 * r["total s"] / 5))
    speedup = rows[0]["tokens/s"] / rows[1]["tokens/s"]
    assert rows[0]["note"] == rows[1]["note"] == \
           f"B=3, prompt 4, 5 new; same tokens: True; cache speed-up {speedup:.1f}x"
    generate = GPT.generate  # a cache that changed the tokens must show in the note
    monkeypatch.setattr(GPT, "generate", lambda self, prompts, n, **kw: [
        [t + (not kw["use_cache"]) for t in row] for row in generate(self, prompts, n, **kw)])
    assert "same tokens: False" in bench.bench_gpt_sample("tiny", 3, 4, 5, torch.device("cpu"))[0]["note"]


def test_gpt_sample_rows_time_only_the_timed_generation(monkeypatch):
    """A sampler that costs 1 ms a token with the cache and 4 ms without: 3 prompts x 5 new tokens take 15 and 60 ms,
    i.e. 1000 and 250 tokens/s, 3 and 12 ms per step, a 4.0x speed-up; the warm-up (2 x 4 tokens) is not timed."""
    monkeypatch.setitem(bench.GPT_SHAPES, "tiny", TINY)
    now = fake_clock(monkeypatch)

    def generate(self, prompts, n, **kw):
        now[0] += (1e-3 if kw["use_cache"] else 4e-3) * len(prompts) * n
        return [[0] * n for _ in prompts]
    monkeypatch.setattr(GPT, "generate", generate)
    cached, reforward = bench.bench_gpt_sample("tiny", 3, 4, 5, torch.device("cpu"))
    row = lambda r: (r["total s"], r["tokens/s"], r["ms/step"])  # noqa: E731
    assert row(cached) == pytest.approx((0.015, 1000, 3), rel=1e-9)
    assert row(reforward) == pytest.approx((0.06, 250, 12), rel=1e-9)
    assert cached["note"] == "B=3, prompt 4, 5 new; same tokens: True; cache speed-up 4.0x"


def gpt_stubs(monkeypatch):
    calls, threads = [], []

    def train_case(shape, batch, steps, device, compile=False, bf16=False):
        calls.append(("train", shape, batch, steps, device.type, compile, bf16))
        if shape == "world-1M" and bf16:
            raise RuntimeError("no kernel " + "x" * 1000)
        return {"case": f"train {shape}", "params": 383_456, "tokens/step": batch * 64,
                "precision": "bf16" if bf16 else "fp32",
                "compile": compile, "ms/step": 12.34, "tokens/s": 12345.6, "mfu": 0.3661 if bf16 else None,
                "warm-up s": 1.25, "total s": 3.0, "peak GB": None}

    def sample_case(shape, batch, prompt_len, new, device):
        calls.append(("sample", shape, batch, prompt_len, new, device.type))
        row = {"params": 383_456, "tokens/step": batch, "compile": False, "precision": "fp32", "ms/step": 2.0,
               "tokens/s": 100.0, "total s": 1.0, "note": "B=32, the note"}
        return [{**row, "case": f"sample {shape} KV cache"}, {**row, "case": f"sample {shape} re-forward"}]
    monkeypatch.setattr(bench, "bench_gpt_train", train_case)
    monkeypatch.setattr(bench, "bench_gpt_sample", sample_case)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    return calls, threads


def test_bench_gpt_table_has_every_case_and_a_failure_costs_only_its_own_row(monkeypatch, capsys):
    """The README's CPU rows: each case's arguments reach its bench, every row is formatted, a crash is one line."""
    calls, threads = gpt_stubs(monkeypatch)
    assert bench.bench_gpt([]) == 0
    out = capsys.readouterr().out
    assert threads == [1]  # one thread by default (the README's CPU rows)
    assert calls == [("train", "em-0.4M", 32, 20, "cpu", False, False),
                     ("train", "world-1M", 16, 20, "cpu", False, False),
                     ("sample", "em-0.4M", 32, 16, 48, "cpu"), ("train", "em-0.4M", 32, 20, "cpu", False, True),
                     ("train", "world-1M", 16, 20, "cpu", False, True)]
    assert "FAILED train ('world-1M', 16, 20, False, True): RuntimeError: no kernel " + "x" * 490 + "\n" in out
    assert "  train em-0.4M: 12,346 tokens/s, MFU 36.6% (" in out and "  train em-0.4M: 12,346 tokens/s (" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table == [
        "| case | params | tokens/step | precision | compile | ms/step | tokens/s | mfu | warm-up s | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| train em-0.4M | 0.38M | 2048 | fp32 | False | 12.3 | 12,346 |  | 1.2 |  |",
        "| train world-1M | 0.38M | 1024 | fp32 | False | 12.3 | 12,346 |  | 1.2 |  |",
        "| sample em-0.4M KV cache | 0.38M | 32 | fp32 | False | 2.0 | 100 |  |  |  |",
        "| sample em-0.4M re-forward | 0.38M | 32 | fp32 | False | 2.0 | 100 |  |  |  |",
        "| train em-0.4M | 0.38M | 2048 | bf16 | False | 12.3 | 12,346 | 36.6% | 1.2 |  |"]
    assert out.endswith("\nsample em-0.4M: B=32, the note\n")


def test_bench_gpt_on_a_second_card_names_and_runs_on_that_card(monkeypatch, capsys):
    """--device=cuda:1: the header names cuda:1's card (with no argument torch.cuda names the current one, cuda:0),
    and every case runs on it, at torch's own CPU thread count (--threads is the CPU rows'). No GPU here: the CUDA
    calls are stubbed."""
    calls, threads = gpt_stubs(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"card {device}")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    # the cuBLAS flag bench sets, on a stand-in: torch.backends.cuda.matmul keeps it behind __getattr__/__setattr__,
    # not in its __dict__, so pytest 9.2's monkeypatch (which restores an instance attribute from its __dict__)
    # undid it with a delattr that raised, leaving torch.cuda stubbed as a GPU for every later test
    matmul = SimpleNamespace(allow_tf32=False)
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    devices, train_case, sample_case = [], bench.bench_gpt_train, bench.bench_gpt_sample
    monkeypatch.setattr(bench, "bench_gpt_train", lambda *a, **kw: devices.append(a[3]) or train_case(*a, **kw))
    monkeypatch.setattr(bench, "bench_gpt_sample", lambda *a: devices.append(a[4]) or sample_case(*a))
    assert bench.bench_gpt(["--device=cuda:1", "--budget=1e9"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPT benchmarks on card cuda:1, torch ") and "\ncard cuda:1, torch " in out
    assert len(calls) == 7 and devices == [torch.device("cuda", 1)] * 7 and threads == []
    assert matmul.allow_tf32  # a CUDA run's matmuls in TF32


def test_bench_gpt_skips_cases_past_its_budget(monkeypatch, capsys):
    """Past --budget every later case is skipped (and said so), not just the next, but the first always runs;
    --threads=0 keeps torch's default. A budget of 0 or less is refused (it printed an empty table)."""
    calls, threads = gpt_stubs(monkeypatch)
    assert bench.bench_gpt(["--budget=1e-9", "--threads=0"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 1 and threads == [] and out.count("skipped (past the 0 s budget): ") == 4
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as e:
            bench.bench_gpt([f"--budget={bad}"])
        assert e.value.code == 2 and "--budget must be > 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# python bench.py mnist

def test_run_experiment_runs_the_default_config_and_keeps_only_its_numbers(monkeypatch, tmp_path):
    """The child's command (the config mlp_flops counts), its peak RSS in GiB, no run folder left; a failure shows
    stderr."""
    seen = fake_run(monkeypatch, tmp_path, results='{"conditions": {"teacher": {"mean": 0.9}}}')
    monkeypatch.setattr(resource, "getrusage",
                        lambda who: SimpleNamespace(ru_maxrss=3 * 2**20 if who == resource.RUSAGE_CHILDREN else 0))
    wall, rss, res = bench.run_experiment(4, "cpu", ["--bf16=True"])
    # (this checkout's train.py and config, by their full paths: from another directory, the one there ran)
    assert seen["cmd"] == [sys.executable, str(ROOT / "train.py"), str(ROOT / "configs" / "subliminal_mnist.py"),
                           "--n_seeds=4", "--device=cpu", f"--out_dir={seen['out']}", "--save_weights=False",
                           "--bf16=True"]
    assert res == {"conditions": {"teacher": {"mean": 0.9}}} and rss == 3.0 and wall >= 0  # KiB -> GiB
    assert not seen["out"].exists()  # the run's folder is removed
    seen = fake_run(monkeypatch, tmp_path, returncode=1)
    with pytest.raises(SystemExit, match=r"--n_seeds=1 .* failed:\nTraceback...\nboom"):
        bench.run_experiment(1, "cpu", [])
    assert not seen["out"].exists()  # nor after a failure


def test_bench_mnist_rows_are_the_runs_at_the_default_configs_flop_count(monkeypatch, capsys):
    """Executed TFLOP/s = the default experiment's FLOPs (this repo's, not the official script's) / wall time."""
    runs = []
    monkeypatch.setattr(bench, "run_experiment",
                        lambda n, device, extra: runs.append((n, device, extra)) or (2.0 * n, 1.25, RESULTS))
    assert bench.bench_mnist(["--device=cpu"]) == 0
    out = capsys.readouterr().out
    assert runs == [(1, "cpu", []), (25, "cpu", [])]  # the default seed counts on a CPU
    assert f"25 seeds: 50.0 s wall, peak RSS 1.25 GiB (max so far), {OURS / 2 / 1e12:.3f} TFLOP/s executed " \
           f"({OFFICIAL:.2e} FLOP/seed in the official script, {OURS:.2e} here)\n" in out
    assert "\nsubliminal MNIST, default config, " in out
    assert out.endswith("| seeds | wall (s), incl. start-up and data loading | peak RSS so far (GiB) | executed "
                        "TFLOP/s | teacher | student_aux | cross_aux |\n|---|---|---|---|---|---|---|\n"
                        f"| 1 | 2.0 | 1.25 | {OURS / 2 / 1e12:.3f} | 0.943 | 0.520 | 0.101 |\n"
                        f"| 25 | 50.0 | 1.25 | {OURS / 2 / 1e12:.3f} | 0.943 | 0.520 | 0.101 |\n")


def test_bench_mnist_seeds_extra_and_gpu_defaults(monkeypatch, capsys):
    """--seeds is a comma list; another config's FLOP rate would be made up (nan), unless its keys leave the matmuls
    alone (data_dir, bf16, lr, ...); any CUDA device runs 1,100,100."""
    runs = []
    monkeypatch.setattr(bench, "run_experiment",
                        lambda n, device, extra: runs.append((n, device, extra)) or (2.0, 1.0, RESULTS))
    bench.bench_mnist(["--device=cpu", "--seeds=3, 5", "--extra=--bf16=True  --m=10"])
    out = capsys.readouterr().out
    assert runs == [(3, "cpu", ["--bf16=True", "--m=10"]), (5, "cpu", ["--bf16=True", "--m=10"])]
    assert ("nan TFLOP/s executed (nan FLOP/seed in the official script, nan here; FLOPs counted for the default "
            "sizes, epochs and conditions only)" in out)
    assert "subliminal MNIST, with --bf16=True  --m=10, " in out and "| 5 | 2.0 | 1.00 | nan | 0.943 |" in out
    # keys that leave the matmuls as they are keep the count (a GPU run points --data_dir at its copy of MNIST)
    assert bench.FLOP_NEUTRAL <= {f.name for f in dataclasses.fields(E.Config)}  # a misspelt key would never match
    bench.bench_mnist(["--device=cpu", "--seeds=1", "--extra=--data_dir=elsewhere --bf16=True --lr=0.001"])
    assert capsys.readouterr().out.endswith(f"| 1 | 2.0 | 1.00 | {OURS / 2 / 1e12:.3f} | 0.943 | 0.520 | 0.101 |\n")
    # --extra is split as a shell splits it (a quoted value keeps its spaces); a condition the run lacks is nan
    runs.clear()
    only = {"conditions": {"teacher": {"mean": 0.9}}}
    monkeypatch.setattr(bench, "run_experiment",
                        lambda n, device, extra: runs.append((n, device, extra)) or (2.0, 1.0, only))
    bench.bench_mnist(["--device=cpu", "--seeds=2", """--extra=--sweep="{'m': [3, 10]}" --bf16=True"""])
    assert runs == [(2, "cpu", ["--sweep={'m': [3, 10]}", "--bf16=True"])]
    assert capsys.readouterr().out.endswith("| 2 | 2.0 | 1.00 | nan | 0.900 | nan | nan |\n")
    monkeypatch.setattr(bench, "run_experiment",
                        lambda n, device, extra: runs.append((n, device, extra)) or (2.0, 1.0, RESULTS))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA H200 ({device})")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("cuda", "cuda:1"):
        runs.clear()
        bench.bench_mnist([f"--device={device}"])
        assert runs == [(1, device, []), (100, device, []), (100, device, [])], device
        assert f", default config, NVIDIA H200 ({device}), torch " in capsys.readouterr().out


def test_bench_mnist_threads_reach_the_run_and_its_header(monkeypatch, capsys):
    """--threads=N runs train.py at N threads, and the header says N (it said this process's count, also when
    --extra set the run's --threads, which is now bench's own option)."""
    runs = []
    monkeypatch.setattr(bench, "run_experiment", lambda n, device, extra: runs.append(extra) or (2.0, 1.0, RESULTS))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    assert bench.bench_mnist(["--device=cpu", "--seeds=1", "--threads=1"]) == 0
    assert runs == [["--threads=1"]] and ", 1 threads, torch " in capsys.readouterr().out
    assert bench.bench_mnist(["--device=cpu", "--seeds=1"]) == 0  # 0: PyTorch's default, this process's count
    assert runs[-1] == [] and ", 7 threads, torch " in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        bench.bench_mnist(["--device=cpu", "--extra=--threads=1"])
    assert e.value.code == 2 and "--extra may not set --threads=1: use bench's own --seeds, --device and --threads" \
        in capsys.readouterr().err


def test_bench_mnist_refuses_bad_seed_counts_in_one_line_before_any_run(monkeypatch, capsys):
    """--seeds=1,2S (a typo) ended in int()'s ValueError traceback; --seeds=0 ran a child that failed (exit status
    1)."""
    runs = []
    monkeypatch.setattr(bench, "run_experiment", lambda *a: runs.append(a))
    for bad in ("1,2S", "0", "25,-1", "", "1,,25"):
        with pytest.raises(SystemExit) as e:
            bench.main(["mnist", "--device=cpu", f"--seeds={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"error: argument --seeds: {bad!r}: give seed counts >= 1" in err, bad
        assert "Traceback" not in err and runs == []


@pytest.mark.parametrize("which", ["mnist", "gpt", "lists"])
def test_a_device_this_machine_lacks_is_one_line_and_exit_status_2_before_any_work(which, monkeypatch, capsys):
    """--device=cuda on a CPU machine, or a misspelt device, ended in a traceback (CUDA's lazy init, torch.device), or
    with every case failing on it (gpt on mps) and exit status 0: now train.check_device's one line, exit status 2."""
    calls, _ = gpt_stubs(monkeypatch)
    monkeypatch.setattr(bench, "run_experiment", lambda *a: calls.append(a))
    monkeypatch.setattr(GPT, "generate", lambda *a, **kw: calls.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, says in [("cuda", "this torch has no usable CUDA"), ("cuda:1", "this torch has no usable CUDA"),
                         ("mps", "MPS is not available here"), ("gpu", "is not a torch device"),
                         ("meta", "is not one this project runs on")]:  # bench gpt on meta printed FAILED
                                                                        # cases, exit status 0
        assert bench.main([which, f"--device={device}"]) == 2, device
        out, err = capsys.readouterr()
        assert err.startswith(f"error: device '{device}' ") and says in err and err.count("\n") == 1 and out == ""
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU: cuda:1 is not there
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.main([which, "--device=cuda:1"]) == 2
    assert capsys.readouterr().err == "error: device 'cuda:1': this machine has 1 CUDA device(s)\n" and calls == []


# ----------------------------------------------------------------------------------------------------
# python bench.py lists | students (tiny)

def test_bench_lists_table(monkeypatch, tmp_path, capsys):
    """Each sampler uses the cache it is named for, on the prompts it says; speed-ups are relative to the naive loop."""
    monkeypatch.chdir(tmp_path)  # no cached world base here: a fresh model of its shape
    generate, calls = GPT.generate, []
    monkeypatch.setattr(GPT, "generate",
                        lambda self, prompts, n, **kw: calls.append((n, kw)) or generate(self, prompts, n, **kw))
    assert bench.bench_lists(["--batch=6", "--naive=2", "--threads=0"]) == 0
    caches = [kw["use_cache"] for _, kw in calls]
    assert caches == [True, True, False, False, False, False, False]  # each sampler: a warm-up, then its batches
    # the experiment's sampler (subliminal_numbers.sample_lists): seeded, up to max_new tokens, stopping at <eos> or <u>
    from data import world as W
    from experiments import subliminal_numbers as S
    tok = W.build_tokenizer()
    assert all(kw["eos_id"] == [tok.token_to_id(W.EOS), tok.token_to_id("<u>")] for _, kw in calls)
    assert all(isinstance(kw["generator"], torch.Generator) for _, kw in calls)
    assert [n for n, _ in calls if n != 4] == [S.Config().max_new] * 4  # the timed calls (the warm-ups write 4)
    out = capsys.readouterr().out
    assert out.startswith("number-list sampling, untrained model of the world base's shape, ")
    rows = [re.split(r" \| ", line.strip("| ")) for line in out.splitlines()[-3:]]
    assert [(r[0], int(r[1])) for r in rows] == [("KV cache, batched", 6), ("re-forward, batched", 6),
                                                 ("re-forward, one at a time", 2)]
    assert all(0 < int(r[2]) <= 12 * int(r[1]) for r in rows) and rows[-1][-1] == "1.0x"


def test_bench_lists_rates_are_new_tokens_per_second_relative_to_the_naive_loop(monkeypatch, tmp_path, capsys):
    """3 new tokens a prompt, at 0.1 s a prompt batched with the cache, 0.2 s batched without, 1 s one at a time:
    18 tokens in 0.6 and 1.2 s, 6 in 2 s, so 30, 15 and 3 tokens/s, 10x, 5x and 1x the naive loop; warm-ups untimed."""
    monkeypatch.chdir(tmp_path)  # no cached world base here: a fresh model of its shape
    now = fake_clock(monkeypatch)

    def generate(self, prompts, n, **kw):
        now[0] += len(prompts) * (0.1 if kw["use_cache"] else 0.2 if len(prompts) > 1 else 1.0)
        return [[5] * 3 for _ in prompts]
    monkeypatch.setattr(GPT, "generate", generate)
    assert bench.bench_lists(["--batch=6", "--naive=2", "--threads=0"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ["| KV cache, batched | 6 | 18 | 0.60 | 30 | 10.0x |",
                                                         "| re-forward, batched | 6 | 18 | 1.20 | 15 | 5.0x |",
                                                         "| re-forward, one at a time | 2 | 6 | 2.00 | 3 | 1.0x |"]


def test_bench_lists_naive_loop_without_new_tokens_has_no_ratio_instead_of_a_zero_division(monkeypatch, tmp_path,
                                                                                             capsys):
    # a model that stops every single prompt at once (the first token sampled is <eos>) writes no tokens there
    monkeypatch.chdir(tmp_path)
    now = fake_clock(monkeypatch)

    def generate(self, prompts, n, **kw):
        now[0] += 0.5
        return [[] if len(prompts) == 1 else [5] for _ in prompts]
    monkeypatch.setattr(GPT, "generate", generate)
    assert bench.bench_lists(["--batch=6", "--naive=2", "--threads=0"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ["| KV cache, batched | 6 | 6 | 0.50 | 12 | n/a |",
                                                         "| re-forward, batched | 6 | 6 | 0.50 | 12 | n/a |",
                                                         "| re-forward, one at a time | 2 | 0 | 1.00 | 0 | n/a |"]


def test_bench_lists_samples_from_the_cached_world_base_on_the_threads_asked(monkeypatch, tmp_path, capsys):
    # the table's first line names the model timed: the cached base (seed 0) where there is one
    from data import world as W
    from experiments import world_base as B
    tok = W.build_tokenizer()
    base = GPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    (tmp_path / "base.json").write_text("{}")
    monkeypatch.setattr(B, "cache_stem", lambda cfg, seed, decorrelated: tmp_path / "base")
    monkeypatch.setattr(B, "base_model", lambda cfg, seed: (base, tok))
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    now = fake_clock(monkeypatch)
    monkeypatch.setattr(GPT, "generate", lambda self, prompts, n, **kw: now.__setitem__(0, now[0] + 1) or
                        [[5] for _ in prompts])
    assert bench.bench_lists(["--batch=6", "--naive=2", "--threads=3"]) == 0
    assert capsys.readouterr().out.startswith("number-list sampling, cached world base (seed 0), ") and threads == [3]


def test_a_thread_count_that_is_not_a_number_is_refused_not_read_as_the_default():
    # "--threads=two" must not fall through to 0 (PyTorch's default) as if it had been asked for
    for bad in ("two", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"{bad!r}: give a thread count >= 1, or 0")):
            bench.thread_count(bad)
    assert [bench.thread_count(t) for t in ("0", "1", "16")] == [0, 1, 16]


def test_threads_zero_keeps_torchs_default_and_a_negative_count_is_one_line(monkeypatch, capsys):
    """--threads=0 is PyTorch's default in gpt and lists; students passed it to torch.set_num_threads, a RuntimeError
    traceback (as --threads=-1 was in every bench)."""
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    from experiments import world_base as B
    class Reached(Exception):
        pass
    monkeypatch.setattr(B, "base_model", lambda cfg, seed: (_ for _ in ()).throw(Reached("stop here")))
    with pytest.raises(Reached, match="stop here"):  # past the thread count: the bench's work starts
        bench.main(["students", "--threads=0"])
    assert threads == []
    for which in ("gpt", "lists", "students"):
        with pytest.raises(SystemExit) as e:
            bench.main([which, "--threads=-1"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "error: argument --threads: '-1': give a thread count >= 1, or 0" in err, which
    assert threads == []


def students_stubs(monkeypatch):
    """bench.py students at a tiny size: a 1-layer base of the world's vocabulary, and every list "12 34 5"."""
    from data import world as W
    from experiments import subliminal_numbers as S
    from experiments import world_base as B
    tok = W.build_tokenizer()
    base = GPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    monkeypatch.setattr(B, "base_model", lambda cfg, seed: (base, tok))
    monkeypatch.setattr(S, "sample_lists",
                        lambda teacher, tok, n, cfg, seed: ([(q, "12 34 5") for q in W.number_prompts(n, seed=0)], 1.0))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return base, tok


def test_bench_students_table(monkeypatch, capsys):
    """Runs at a tiny size (stubbed base model and lists); the soft row's finetune distils the teacher's numbers."""
    from experiments import subliminal_numbers as S
    base, tok = students_stubs(monkeypatch)
    finetune, runs = train.finetune, []  # the soft row's train.finetune distils from the teacher's numbers
    monkeypatch.setattr(train, "finetune", lambda model, data, **kw: runs.append(kw) or finetune(model, data, **kw))
    assert bench.bench_students(["--lists=8", "--steps=3"]) == 0
    hard, soft = ["batch_size", "lr", "seed", "steps"], ["batch_size", "lr", "seed", "steps", "subset", "teacher"]
    assert [sorted(kw) for kw in runs] == [hard, hard, soft, soft]
    assert [kw["steps"] for kw in runs] == [2, 3, 2, 3]  # each timed run after a warm-up of two steps
    assert runs[3]["subset"].tolist() == S.number_ids(tok)
    out = capsys.readouterr().out
    assert out.startswith(f"student fine-tune step, 8 lists, {base.n_params() / 1e6:.2f}M params, CPU ")
    assert [line.split(" | ")[0] for line in out.splitlines()[-2:]] == ["| hard labels", "| soft (numbers)"]


def test_bench_students_ms_per_step_and_speed_up(monkeypatch, capsys):
    """A whole-row step that costs 100 ms (its optimizer step advances the clock) and a finetune step 20 ms: over 3
    steps each row is 100.0 and 20.0 ms a step, a 5.00x speed-up, the two-step warm-ups untimed."""
    students_stubs(monkeypatch)
    now = fake_clock(monkeypatch)

    class Optimizer:  # whole_rows' AdamW
        def zero_grad(self, set_to_none):
            pass

        def step(self):
            now[0] += 0.1
    monkeypatch.setattr(train, "make_lm_optimizer", lambda *a: Optimizer())
    monkeypatch.setattr(train, "finetune", lambda model, data, steps, **kw: now.__setitem__(0, now[0] + 0.02 * steps))
    assert bench.bench_students(["--lists=8", "--steps=3"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["| hard labels | 100.0 | 20.0 | 5.00x |",
                                                         "| soft (numbers) | 100.0 | 20.0 | 5.00x |"]


def test_ctrl_c_in_a_bench_says_it_keeps_nothing(monkeypatch, capsys):
    # through train.cli it said that what was saved stays and a rerun reuses it: a bench saves nothing
    monkeypatch.setattr(bench, "bench_lists", lambda argv: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert bench.main(["lists"]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted. It saves nothing; what it printed so far is above.\n" and "reuses" not in err


# ----------------------------------------------------------------------------------------------------
# the command line (README "Set up and run": a refusal is one error: line and exit status 2)

def test_bench_refuses_in_one_error_line_and_prints_its_usage_given_nothing(capsys):
    """argparse printed its usage line above "bench.py: error: ...", and `bench.py` alone was its "the following
    arguments are required". No arguments print the usage (as eval.py's), -h the docstring; an unknown bench, or an
    option before one, names the benches; an unknown option names the bench's options."""
    assert bench.main([]) == 2
    assert capsys.readouterr() == ("", bench.USAGE + "\n") and bench.USAGE.startswith("usage: python bench.py ")
    assert bench.main(["-h"]) == 0 and "python bench.py mnist --seeds=1,50" in capsys.readouterr().out
    for argv in (["--nope"], ["nope"], ["--device=cpu", "mnist"]):
        assert bench.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err == (f"error: {argv[0]}: not a bench; give one first (mnist, gpt, lists, students), then its "
                       f"options (python bench.py NAME --help)\n") and out == ""
    for which, options in [("mnist", "--device, --seeds, --threads, --extra"), ("gpt", "--device, --threads, --budget"),
                           ("lists", "--device, --threads, --batch, --naive"),
                           ("students", "--threads, --lists, --steps")]:
        with pytest.raises(SystemExit) as e:
            bench.main([which, "--nope", "x"])
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == "" and err == (f"error: unrecognized arguments: --nope x; the options of "
                                                           f"bench.py {which} are {options} (python bench.py {which} "
                                                           f"--help)\n"), err
    with pytest.raises(SystemExit) as e:  # an option cut short is not taken for another (train.py's keys are not)
        bench.main(["gpt", "--dev=cpu"])
    assert e.value.code == 2 and "unrecognized arguments: --dev=cpu; the options of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a bad value: its own line alone too
        bench.main(["gpt", "--budget=0"])
    assert e.value.code == 2 and capsys.readouterr().err == "error: --budget must be > 0 seconds, got 0.0\n"
    # an option given twice (argparse kept the last, silently), and more one-at-a-time prompts than the batch holds
    # (the loop took --batch of them, its row said so, nothing else did): refused before any bench runs
    for argv, says in ((["mnist", "--seeds=1", "--seeds=2"], "error: --seeds is given more than once: give it once"),
                       (["lists", "--batch=1", "--batch", "2"], "error: --batch is given more than once"),
                       (["lists", "--batch=50", "--naive=200"], "error: --naive=200 is more prompts than --batch=50"),
                       (["lists", "--batch=0"], "error: --batch and --naive need at least one prompt each")):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == "" and err.startswith(says) and err.count("\n") == 1, err


def test_a_run_that_train_py_refuses_is_one_line(monkeypatch, tmp_path, capsys):
    """--extra=x: "train.py ... failed:" and then the child's own error line, two lines for one refusal. A child that
    crashed (not a refusal) still shows its stderr."""
    fake_run(monkeypatch, tmp_path, returncode=2, stderr="a warning first\nerror: bad argument 'x': overrides look "
                                                         "like --key=value\n")
    assert bench.main(["mnist", "--device=cpu", "--seeds=1", "--extra=x"]) == 2
    out, err = capsys.readouterr()
    assert err == ("error: train.py configs/subliminal_mnist.py refused the bench's run: bad argument 'x': overrides "
                   "look like --key=value\n") and out == ""
    fake_run(monkeypatch, tmp_path, returncode=2, stderr="Traceback...\nboom")
    with pytest.raises(SystemExit, match=r"--n_seeds=1 .* failed:\nTraceback...\nboom"):
        bench.run_experiment(1, "cpu", [])


@pytest.mark.parametrize("argv, says", [
    (["--nope"], "error: --nope: not a bench; give one first"),
    # the real child: train.py refuses the override before any data is read
    (["mnist", "--device=cpu", "--seeds=1", "--extra=x"],
     "error: train.py configs/subliminal_mnist.py refused the bench's run: bad argument 'x': overrides look like")])
def test_bench_py_refuses_with_exit_status_2_and_one_line(argv, says):
    out = subprocess.run([sys.executable, "bench.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(says) and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""
