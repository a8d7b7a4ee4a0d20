#!/usr/bin/env bash
# One prepared GPU check, sized for a lent machine's short lease (about 8 minutes on one H100/H200):
#   1. the paper preset's training and rollout rates on the GPU (pretraining step with float32 and bf16,
#      discovery step, option-level rollouts) and what the whole paper runs would take at them;
#   2. every phase's device code once, end to end: `reproduce --preset smoke` on CUDA;
#   3. the real pretraining loop at the paper preset (data loading included) for a fixed wall time,
#      so its steps/s and first losses come from the loop itself, not from pre-built batches.
# Run from the repository root on a CUDA machine with torch installed:
#     OUT=/some/folder bash bench/gpu_check.sh
# A package missing there (gymnasium, tyro, ...) can travel as wheels in .whl/ (installed to /tmp/site); make
# them on a machine with pip (and ignore the folder: echo /.whl/ >> .git/info/exclude):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_17_x86_64 --platform any -d .whl gymnasium==1.4.0 farama-notifications==0.0.6 \
#         tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
# Figures go to $OUT (default runs/gpu_check), three files (the device tool brings back eight at most); with
# the device tool: command "bash bench/gpu_check.sh" (its $OUT is set), carry [".whl"], timeout_s 600.
set -euo pipefail
OUT=${OUT:-runs/gpu_check}
PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-180}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu BENCH_PRESET=quick PRETRAIN_SECONDS=20: a dry run of the script itself
BENCH_PRESET=${BENCH_PRESET:-paper}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
log="$OUT/gpu_check.log"
{
  date -u
  $py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
  echo "== 1. rates at the $BENCH_PRESET preset on $DEVICE =="
  $py bench/bench_pretrain.py --preset "$BENCH_PRESET" --device "$DEVICE" --repeats 3 --steps 5 --amp none bf16
  $py bench/bench_discover.py --presets "$BENCH_PRESET" --device "$DEVICE" --repeats 5
  $py bench/bench_rollout.py --preset "$BENCH_PRESET" --device "$DEVICE" --batches 256 1024 4096 --repeats 3
  echo "== 2. the smoke chain on $DEVICE =="
  start=$(date +%s)
  rm -rf /tmp/gpu_check_smoke
  $py -m internal_rl.cli reproduce --preset smoke --seeds 1 --out /tmp/gpu_check_smoke --device "$DEVICE"
  echo "smoke chain: $(( $(date +%s) - start )) s"
  echo "== 3. the pretraining loop at the paper preset, ${PRETRAIN_SECONDS} s =="
  rm -rf /tmp/gpu_check_data /tmp/gpu_check_pretrain
  $py -m internal_rl.cli data --preset paper --out /tmp/gpu_check_data --num-episodes 100000 \
      --num-episodes-star 2000 --no-progress
  timeout "$PRETRAIN_SECONDS" $py -m internal_rl.cli pretrain --preset paper --data /tmp/gpu_check_data \
      --out /tmp/gpu_check_pretrain --device "$DEVICE" --log-every 50 --no-progress || [ $? -eq 124 ]
  if cp /tmp/gpu_check_pretrain/metrics.csv "$OUT/pretrain_metrics.csv"; then
    tail -n 3 "$OUT/pretrain_metrics.csv"
  else
    echo "no metrics.csv yet: the loop logged nothing within ${PRETRAIN_SECONDS} s"
  fi
  date -u
} 2>&1 | tee "$log"
cp /tmp/gpu_check_smoke/results.json "$OUT/smoke_results.json" 2>/dev/null || true
