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

# (filled below)

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
