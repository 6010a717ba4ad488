#!/usr/bin/env bash
# Where does the 100-seed MNIST run spend its time on a GPU? Start-up (imports, CUDA), phases, bf16, a profile;
# then the benchmarks' rows: bench.py mnist at 100 seeds (executed FLOP/s) and the GPT-2 shape (both batches).
#   DATA_DIR=.devdata bash scripts/h100_speed.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA_DIR:-data}
for i in 1 2; do python - <<'PY'
import time; t = time.time()
import torch; a = time.time()
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); b = time.time()
x = torch.randn(100, 1024, 784, device="cuda"); w = torch.randn(100, 784, 256, device="cuda")
torch.bmm(x, w); torch.cuda.synchronize(); c = time.time()
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot; d = time.time()
print(f"import torch {a - t:.2f}s, CUDA init {b - a:.2f}s, first bmm {c - b:.2f}s, import pyplot {d - c:.2f}s")
PY
done
python -X importtime -c "import train, model, experiments.subliminal_mnist" 2>&1 | sort -t'|' -k2 -n | tail -8
for extra in "" "--bf16=True" "--student_chunk=1"; do
  t=$(date +%s.%N)
  python train.py configs/subliminal_mnist.py --device=cuda --data_dir=$DATA \
      --n_seeds=100 --save_weights=False --out_dir=out/speed$extra $extra 2>&1 | grep -E "seeds 0"
  echo "wall $(python -c "print(f'{$(date +%s.%N) - $t:.2f}')") s"
  grep -E '"phases"|load_data' out/speed$extra/metrics.jsonl
done
python -m cProfile -s cumtime train.py configs/subliminal_mnist.py --device=cuda --data_dir=$DATA --n_seeds=100 \
    --save_weights=False --out_dir=out/prof 2>&1 | grep -A 30 "Ordered by"
python bench.py mnist --device=cuda --seeds=100 --extra="--data_dir=$DATA" 2>&1 | tail -4
timeout 150 python bench.py gpt --device=cuda --budget=40 2>&1 | grep -v "^\[" | tail -12
