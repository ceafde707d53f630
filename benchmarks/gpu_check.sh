#!/usr/bin/env bash
# GPU check (<= 8 minutes on one GPU): install the project with transformers, run the CUDA tests, then
# bench_step.py ours vs transformers at BASE, batch 8 x 15 s, bf16 autocast (and one torch.compile case).
# Usage, from anywhere:  bash benchmarks/gpu_check.sh      (PYTHON=... picks the interpreter)
# Everything it prints is also written under benchmarks/results/ (or $RESULTS).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
STAMP=$(date +%Y%m%d-%H%M%S)
LOG="$RESULTS/gpu-check-$STAMP.log"
mkdir -p "$RESULTS"
exec > >(tee "$LOG") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {  # step SECONDS NAME COMMAND...: run with a time limit, remember a failure, carry on
    local limit=$1 name=$2; shift 2
    echo "== $name ($(date +%T), limit ${limit}s)"
    timeout "$limit" "$@" || { echo "== $name FAILED (exit $?)"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || status=1
# The machine's CUDA torch satisfies the torch requirement, so pip leaves it in place; without a package
# index (an offline GPU machine) the project runs from PYTHONPATH and transformers must already be there.
step 90 install "$PY" -m pip install -q -e ".[bench]" pytest
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
IMPLS=(ours hf)
"$PY" -c "import transformers; print('transformers', transformers.__version__)" || { IMPLS=(ours); status=1; }
step 90 cuda-tests "$PY" -m pytest -q -p no:cacheprovider tests/models/test_cuda.py tests/test_devices.py \
    tests/models/test_speed_options.py tests/models/test_fairseq_parity.py
BENCH=(benchmarks/bench_step.py --device cuda --dtype bf16 --size base --batch 8 --seconds 15 --threads 8
       --warmup 2 --steps 5 --matmul-n 8192 --impls "${IMPLS[@]}")
for task in ctc pretrain; do  # one file each, so a time-out loses one half only
    step 100 "bench-bf16-$task" "$PY" "${BENCH[@]}" --tasks $task --output "$RESULTS/step-base-cuda-bf16-$task-$STAMP.json"
done
step 90 bench-bf16-compile "$PY" "${BENCH[@]}" --tasks ctc --batches uniform --compile --warmup 3 \
    --output "$RESULTS/step-base-cuda-bf16-compile-$STAMP.json"
echo "== done ($(date +%T)), status $status; log: $LOG"
exit $status
