#!/usr/bin/env bash
# Where does the 100-seed MNIST run spend its time on a GPU? Start-up, phases, bf16, and a profile.
set -uo pipefail
export PYTHONUNBUFFERED=1
DATA=${DATA_DIR:-data}
python - <<'PY'
import time; t = time.time()
import torch; a = time.time()
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); b = time.time()
x = torch.randn(100, 1024, 784, device="cuda"); w = torch.randn(100, 784, 256, device="cuda")
torch.bmm(x, w); torch.cuda.synchronize(); c = time.time()
print(f"import torch {a - t:.2f}s, CUDA init {b - a:.2f}s, first bmm {c - b:.2f}s")
g = [torch.Generator(device="cuda") for _ in range(2000)]; torch.cuda.synchronize(); d = time.time()
print(f"2000 CUDA generators {d - c:.3f}s")
PY
for extra in "" "--bf16=True"; do
  /usr/bin/time -f "wall %e s, max RSS %M KB" python train.py configs/subliminal_mnist.py --device=cuda --data_dir=$DATA \
      --n_seeds=100 --save_weights=False --out_dir=out/speed$extra $extra 2>&1 | grep -E "seeds 0|wall"
  grep -E '"phases"|load_data' out/speed$extra/metrics.jsonl
done
python -m cProfile -s tottime train.py configs/subliminal_mnist.py --device=cuda --data_dir=$DATA --n_seeds=100 \
    --save_weights=False --out_dir=out/prof 2>&1 | grep -A 28 "Ordered by"
