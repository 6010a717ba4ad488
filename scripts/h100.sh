#!/usr/bin/env bash
# The device check, as one prepared script for a lent GPU (see README, "Measured on an H100"):
# the MNIST benchmark, the paper-scale run, every follow-up sweep, then the GPT benchmark.
#   DATA_DIR=.devdata OUT=/tmp/h100 bash scripts/h100.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/h100}; DATA=${DATA_DIR:-data}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
python bench.py mnist --device=cuda --seeds=1,100,100 --extra="--data_dir=$DATA" 2>&1 | tee "$OUT/bench_mnist.log"
run() { python train.py "configs/$1.py" --device=cuda --data_dir="$DATA" --save_weights=False --out_dir="out/gpu/$1" "${@:2}" 2>&1 | tail -40; }
run subliminal_mnist --n_seeds=100 | tee "$OUT/main.log"
run subliminal_mnist --n_seeds=100 --conditions="['reference','teacher','cross_head_aux','cross_head_all']" --out_dir=out/gpu/cross_head | tee -a "$OUT/main.log"
for c in cross_init aux_sweep width perturb inputs epochs; do run "subliminal_mnist_$c"; done > "$OUT/sweeps.log" 2>&1
tar czf "$OUT/runs.tgz" out/gpu
python bench.py gpt --device=cuda 2>&1 | tee "$OUT/bench_gpt.log"
