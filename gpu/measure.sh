#!/usr/bin/env bash
# One device call: the Triton backend's new kernels against the old ones, same process, same inputs.
# Run from the repo root on the GPU machine:
#     OUT=$OUT bash gpu/measure.sh                      # every part, in this order:
#     OUT=$OUT bash gpu/measure.sh check pretrain scan forward loss profile
#   check     gpu/quick_check.py: each new kernel and path against references (~1 min with compiles)
#   pretrain  masked-LM training tokens/s, PS and Ph 128x4, 1,024 bp, batch 256: kernel sets old, new
#             and new with the backward's 12-warp variant (KEEP_DECAY=0, MAXNREG=168)
#   scan      the scan alone: backward variants (CADUCEUS_BWD2_* knobs), the long and short forward,
#             the training step's skinny projections in cuBLAS
#   forward   forward tokens/s, PS and Ph 256x16, 256 x 1,536 and 2 x 131,072 bp, bf16, old,new
#   loss      300-step loss curves of PS 128x4 (batch 8): triton vs torch backend, same weights/batches
#   profile   per-kernel profiles with the new kernels (the four configurations of the baseline + Ph train)
# Every part writes its output to its own file in $OUT as it runs (OUT/NAME.log, the JSON beside it)
# and shows its last lines; a short table comes last (gpu/summary.py, also OUT/summary.txt). A part
# starts only while 20 s of BUDGET (default 510 s) are left and is stopped when the budget is spent,
# so one call stays under 9 minutes; on a cold machine (Triton compiles every kernel once, ~5 s each)
# two calls fit everything:  bash gpu/measure.sh check pretrain scan forward;  bash gpu/measure.sh loss profile
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
out=${OUT:-gpu-out}; mkdir -p "$out"
py=${PYTHON:-python3}
budget=${BUDGET:-510}
start=$(date +%s)
parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(check pretrain scan forward loss profile)

if [ -d .gpu/wheels ] && ! $py -c "import pysam, pyfaidx" 2>/dev/null; then
  $py -m pip install -q --no-deps --no-index .gpu/wheels/*.whl > "$out/pip.log" 2>&1 || echo "wheel install failed (see pip.log)"
fi
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
  $py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  git log --oneline -1 2>/dev/null; } 2>&1 | tee "$out/env.txt"

left() { echo $(( budget - ($(date +%s) - start) )); }
run() {  # run NAME SECONDS CMD...: skipped when the budget is spent; output to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  if [ "$remaining" -lt 20 ]; then echo "== $name: skipped (budget spent)" | tee "$out/$name.log"; return; fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "== $name ($(( $(date +%s) - start )) s in, limit ${limit} s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  [ $rc -ne 0 ] && echo "== $name: exit status $rc"
}

for part in "${parts[@]}"; do
  case "$part" in
    check)    run quick_check 240 $py gpu/quick_check.py --out "$out" ;;
    pretrain) run pretrain 200 $py benchmarks/pretrain_speed.py --variant ps ph --steps 15 --warmup-steps 3 \
                --kernels old,new,CADUCEUS_BWD2_KEEP_DECAY=0+CADUCEUS_BWD2_MAXNREG=168 --json "$out/pretrain.json" ;;
    forward)  for spec in "1536 256 200" "131072 2 150"; do
                set -- $spec
                run "forward_$1" "$3" $py benchmarks/model_speed.py --device cuda --dtype bf16 --backend triton \
                  --configs ps:256x16,ph:256x16 --lengths "$1" --batch "$2" --repeats 5 --warmup 2 \
                  --kernels old,new --json "$out/forward_$1.json"
              done ;;
    loss)     run loss_curve 150 $py gpu/loss_curve.py --out "$out" --backends triton,torch --batch 8 --steps 300 ;;
    profile)  for cfg in "ps:256x16 1536 256 forward" "ps:256x16 131072 2 forward" "ph:256x16 131072 2 forward" \
                         "ps:128x4 1024 256 train" "ph:128x4 1024 256 train"; do
                set -- $cfg
                run "profile_${1/:/_}_$2_$4" 60 $py gpu/kernel_profile.py $cfg triton
                cp "$out/profile_${1/:/_}_$2_$4.log" "$out/profile_${1/:/_}_$2_$4.txt" 2>/dev/null
              done ;;
    scan)     run scan_bench 150 $py gpu/scan_bench.py --out "$out" ;;
    *) echo "unknown part $part (check pretrain scan forward loss profile)"; exit 2 ;;
  esac
done
echo "== total $(( $(date +%s) - start )) s"
$py gpu/summary.py "$out" | tee "$out/summary.txt"
