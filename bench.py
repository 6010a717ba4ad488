"""Speed benchmarks (not tests). Each prints a table; numbers measured with it are in the README.

    python bench.py mnist               # subliminal MNIST: 1 seed and 25 seeds end to end, FLOP/s
    python bench.py mnist --seeds=100   # e.g. on a GPU: the paper-scale run
    python bench.py gpt                 # GPT training tokens/s and MFU, KV-cache sampling vs re-forward
"""
import argparse
import sys
import time

import torch

# ====================================================================================================
# MNIST (subliminal learning)
# ====================================================================================================

def mlp_flops(cfg_overrides, n_seeds):
    """FLOPs of the whole default experiment for n_seeds, as executed here, and as the official script
    counts them (it reruns the teacher forward on every distillation batch)."""
    sizes = [784, 256, 256, 13]
    fwd = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # per example
    n, n_noise, test, epochs, d_epochs, students = 60000, 60000, 10000, 5, 5, 4
    evals = 2 + students
    ours = 3 * fwd * n * epochs + fwd * n_noise + students * 3 * fwd * n_noise * d_epochs + evals * fwd * test
    official = 3 * fwd * n * epochs + students * 4 * fwd * n_noise * d_epochs + evals * fwd * test
    return ours * n_seeds, official * n_seeds


def run_experiment(n_seeds, device, extra):
    """One complete `python train.py configs/subliminal_mnist.py` in a fresh process: wall time (with
    interpreter start, imports and data loading) and the child's peak resident memory."""
    import resource
    import subprocess
    import tempfile
    out = tempfile.mkdtemp(prefix="bench_mnist_")
    cmd = [sys.executable, "train.py", "configs/subliminal_mnist.py", f"--n_seeds={n_seeds}", f"--device={device}",
           f"--out_dir={out}", "--save_weights=False", *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB (max over children so far)
    import json
    res = json.load(open(f"{out}/results.json"))
    return wall, rss, res


def bench_mnist(argv):
    p = argparse.ArgumentParser(prog="bench.py mnist")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", default=None, help="comma-separated seed counts (default 1,25 on CPU, 1,100,100 on CUDA)")
    p.add_argument("--extra", default="", help="extra overrides for train.py, space separated")
    args = p.parse_args(argv)
    seeds = [int(s) for s in (args.seeds or ("1,100,100" if args.device == "cuda" else "1,25")).split(",")]
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = []
    for n in seeds:
        wall, rss, res = run_experiment(n, args.device, args.extra.split())
        ours, official = mlp_flops({}, n)
        c = res["conditions"]
        rows.append((n, wall, rss, ours / wall, c["teacher"]["mean"], c["student_aux"]["mean"], c["cross_aux"]["mean"]))
        print(f"{n} seeds: {wall:.1f} s wall, peak RSS {rss:.2f} GiB (max so far), {ours / wall / 1e12:.2f} TFLOP/s "
              f"executed ({official / n:.2e} FLOP/seed as the official script counts them, {ours / n:.2e} as run here)", flush=True)
    print(f"\nsubliminal MNIST, default config, {name}, torch {torch.__version__}")
    print("| seeds | wall (s), incl. start-up and data loading | peak RSS (GiB) | executed TFLOP/s | teacher | student_aux | cross_aux |")
    print("|---|---|---|---|---|---|---|")
    for n, wall, rss, fl, t, s, x in rows:
        print(f"| {n} | {wall:.1f} | {rss:.2f} | {fl / 1e12:.3f} | {t:.3f} | {s:.3f} | {x:.3f} |")
    return 0


# ====================================================================================================
# GPT
# ====================================================================================================

# (filled below)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["mnist", "gpt"])
    args, rest = p.parse_known_args(argv)
    return {"mnist": bench_mnist, "gpt": bench_gpt}[args.what](rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
