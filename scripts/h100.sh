#!/usr/bin/env bash
# The device check, as one prepared script for a lent GPU (see README, "Speed" and "The transformer"). The
# checks still open come first: the 100-seed MNIST run as a fresh process (twice: cold and warm file cache),
# the emergent-misalignment default config from an empty base cache, the GPT benchmark (the GPT-2 shape at
# batch 32 and 16 first), then the quick EM config with the analysis scripts on it, the MNIST benchmark and the
# follow-up sweeps while time is left.
# Each stage has its own time limit; logs and run folders come back as $OUT/runs.tgz.
#   DATA_DIR=.devdata OUT=/tmp/h100 bash scripts/h100.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/h100}; DATA=${DATA_DIR:-data}; BUDGET=${BUDGET:-540}
L=out/gpu/logs; mkdir -p "$OUT" "$L"
pack() { tar czf "$OUT/runs.tgz" out/gpu 2>/dev/null; }
left() { echo $((BUDGET - SECONDS)); }
stage() {  # stage NAME LIMIT CMD...: run CMD with at most LIMIT seconds (less if the budget is nearly spent)
    local name=$1 lim=$2; shift 2
    local l=$(left); [ "$l" -lt 20 ] && { echo "## $name skipped (budget)"; return; }
    [ "$lim" -gt "$l" ] && lim=$l
    echo "## $name (limit ${lim}s, ${SECONDS}s elapsed)"
    timeout "$lim" bash -c '"$@"' _ "$@" > "$L/$name.log" 2>&1; echo "## $name rc=$? at ${SECONDS}s"
    tail -25 "$L/$name.log"; pack
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$L/gpu.txt"
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$L/gpu.txt"
# T: an MNIST run; E: an EM run; both print the fresh process's wall time (start-up included)
T() { local t=$(date +%s.%N); python train.py "configs/$1.py" --device=cuda --data_dir="$DATA" --save_weights=False --out_dir="out/gpu/$1" "${@:2}"
      echo "wall $(python -c "print(f'{$(date +%s.%N) - $t:.2f}')") s"; }
E() { local t=$SECONDS; python train.py "configs/$1.py" --device=cuda --out_dir="out/gpu/$1" "${@:2}"; echo "wall $((SECONDS - t)) s"; }
export -f T E; export DATA
stage main100 60 T subliminal_mnist --n_seeds=100
stage main100_again 60 T subliminal_mnist --n_seeds=100 --out_dir=out/gpu/main100_again
# the four students as one 400-model batch (the default on CUDA) against one condition at a time
stage main100_chunk1 60 T subliminal_mnist --n_seeds=100 --student_chunk=1 --out_dir=out/gpu/main100_chunk1
# 1000 seeds at once need 184 GiB (noise sets, logits, models): refused in seconds, naming a --seed_chunk (rc 2)
stage memory_refused 30 T subliminal_mnist --n_seeds=1000 --out_dir=out/gpu/memory_refused
# issue 4's GPU goal (default EM config from scratch <= 3 min): a fresh cache, one process per base model
stage em_default 240 E emergent_misalignment --workers=6
stage bench_gpt 180 python bench.py gpt --device=cuda --budget=110  # its first row: the GPT-2 shape at batch 32
stage em_quick 120 E emergent_misalignment_quick
# the analysis scripts on a run made with device=cuda (their bases on the GPU; they once fed it CPU batches)
stage em_scripts 150 bash -c 'R=out/gpu/emergent_misalignment_quick; set -e
    for s in em_base_pull em_first_step em_steer_base em_bos_vector em_value_sources em_patch_tokens em_code_context
    do python scripts/$s.py $R; done; python scripts/em_steer_base.py --route $R'
stage bench_mnist 90 python bench.py mnist --device=cuda --seeds=1,100 --extra="--data_dir=$DATA"
stage cross_head100 60 T subliminal_mnist --n_seeds=100 --out_dir=out/gpu/cross_head \
    --conditions="['reference','teacher','student_aux','cross_head_aux','cross_head_all']"
stage cross_init 120 T subliminal_mnist_cross_init
for c in aux_sweep width perturb inputs epochs noise_scale temperature; do stage "$c" 60 T "subliminal_mnist_$c"; done
echo "## done at ${SECONDS}s"
