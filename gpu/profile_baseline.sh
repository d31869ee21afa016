#!/usr/bin/env bash
# Where the forward's time goes at 1,536 bp and 131,072 bp, and the GPU tests, on the current code.
#   bash gpu/profile_baseline.sh      (on the device machine, from the repo root, .gpu carried)
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-gpu-out}; mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$py -m pip install -q --no-deps --no-index .gpu/wheels/*.whl 2>&1 | tail -2
$py -m pip install -q --no-deps -e . 2>&1 | tail -2
$py -m pytest -q -x tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -6 | tee "$out/test_gpu.log"
{
  $py gpu/kernel_profile.py ps:256x16 1536 256 forward triton
  $py gpu/kernel_profile.py ps:256x16 131072 2 forward triton
  $py gpu/kernel_profile.py ph:256x16 1536 256 forward triton
  $py gpu/kernel_profile.py ph:256x16 131072 2 forward triton
  $py gpu/kernel_profile.py ps:128x4 1024 256 train triton
} 2>&1 | tee "$out/profile.txt" | grep -E "tokens/s|Error"
