#!/usr/bin/env bash
# The GPU checks, ready in one script (at most 10.5 minutes on one H100/H200), for a session that
# is lent a GPU. Each benchmark writes its own section of benchmarks/RESULTS.md, with the
# card's name:
#   1. the training step, study recipe against project recipe, both models, paper size;
#   2. one epoch of the training data pipeline (CLIPSeg and CRIS, paper size);
#   3. the SDM's samplers (DDPM 1000 vs DDIM vs DPM-Solver++);
#   4. the paper profile rehearsed on the stand-ins with --fast-dev-run on cuda;
#   5. a frozen-encoder epoch with the frozen cache against without it, both models, paper size;
#   6. image batching (an image's three structures in one encoder pass) against the study's
#      sample order, trained encoders, both models, paper size (the GPU ratio `plan` lacks).
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine (device: cuda)
#   bash benchmarks/gpu_check.sh --cpu    # the same steps at tiny size on the CPU (the test)
#
# A step that fails is reported and the others still run; the exit status says whether all
# passed. Timings per step go to benchmarks/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
mode=gpu
[[ "${1:-}" == "--cpu" ]] && mode=cpu
log=benchmarks/gpu_check.log
: > "$log"
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name: $*" | tee -a "$log"
    if timeout "$limit" "$@" >> "$log" 2>&1; then
        echo "   ok in $((SECONDS - t0)) s" | tee -a "$log"
    else
        echo "   FAILED (status $?) after $((SECONDS - t0)) s; see $log" | tee -a "$log"
        failed=1
    fi
}

if [[ $mode == gpu ]]; then
    "$PY" -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))" \
        | tee -a "$log" || { echo "no CUDA device: use --cpu" >&2; exit 2; }
    step train_step 150 "$PY" benchmarks/train_step.py --size paper --device cuda
    step epoch_clipseg 60 "$PY" benchmarks/epoch.py --model clipseg --size paper --device cuda
    step epoch_cris 60 "$PY" benchmarks/epoch.py --model cris --size paper --device cuda
    step sdm 90 "$PY" benchmarks/sdm.py --device cuda --no-demo
    step rehearsal 120 "$PY" -m echo_vlsm.cli rehearse --quick --fast-dev-run 2
    step frozen_cache 90 "$PY" benchmarks/frozen_cache.py --device cuda --sizes paper \
        --paper-batch 32 --repeat 2
    step image_batching 60 "$PY" benchmarks/image_batching.py --device cuda --sizes paper \
        --paper-batch 24 --paper-steps 6
else
    step train_step 300 "$PY" benchmarks/train_step.py --quick --device cpu --no-compile --no-write \
        --steps 1 --warmup 1
    step epoch 300 "$PY" benchmarks/epoch.py --model clipseg --size tiny --device cpu --images 16 \
        --workers 0 --no-write
    step sdm 300 "$PY" benchmarks/sdm.py --device cpu --no-demo --images 2 --no-write \
        --ddpm-steps 20
fi
echo "gpu_check ($mode): $([[ $failed == 0 ]] && echo all passed || echo some FAILED)" | tee -a "$log"
exit $failed
