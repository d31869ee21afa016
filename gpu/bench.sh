#!/usr/bin/env bash
# GPU measurements, run on the device machine from the repo root. Each section writes JSON/text into
# $OUT (default ./gpu-out). Sections that compare with mamba-ssm or the official code need them
# installed first (bash .gpu/setup.sh or bash gpu/kernels.sh install); without them those rows say so.
#   bash gpu/bench.sh parity scan model compare pretrain profile embed variants
# Environment: BACKEND (default triton) for model/pretrain/profile/embed/variants; OFFICIAL (default
# .official) the folder holding the official caduceus/ package for `compare`.
set -uo pipefail
py=${PYTHON:-python3}
out=${OUT:-gpu-out}; mkdir -p "$out"
backend=${BACKEND:-triton}
official=${OFFICIAL:-.official}
for what in "$@"; do
  case "$what" in
    parity)   $py -m pytest -q tests/test_gpu.py tests/test_scan_kernels.py tests/test_model.py -rs 2>&1 | tail -25 | tee "$out/test_gpu.log" ;;
    scan)     $py benchmarks/scan_speed.py --device cuda --batch 64 --length 1536 --json "$out/scan_speed.json" 2>/dev/null | tee "$out/scan_speed.txt" ;;
    model)    $py benchmarks/model_speed.py --device cuda --dtype bf16 --backend "$backend" --json "$out/model_speed_$backend.json" 2>/dev/null | tee "$out/model_speed_$backend.txt" ;;
    compare)  # the same batch and length for every implementation: 256 x 1,536 bp and 2 x 131,072 bp
              for spec in "1536 256" "131072 2"; do
                set -- $spec
                for impl in triton mamba-ssm official; do
                  if [ "$impl" = official ]; then flag=(--official "$official"); else flag=(--backend "$impl"); fi
                  $py benchmarks/model_speed.py --device cuda --dtype bf16 "${flag[@]}" --configs ps:256x16,ph:256x16 \
                    --lengths "$1" --batch "$2" --repeats 10 --warmup 2 --json "$out/compare_${impl}_$1.json" 2>"$out/compare_${impl}_$1.err" \
                    | tail -n +2 || echo "$impl $1: failed (see compare_${impl}_$1.err)"
                done
              done 2>&1 | tee "$out/compare.txt" ;;
    pretrain) for mb in 128 64; do
                $py benchmarks/pretrain_speed.py --backend "$backend" --micro-batch-size $mb --json "$out/pretrain_${backend}_mb$mb.json" > "$out/pretrain_${backend}_mb$mb.txt"; head -4 "$out/pretrain_${backend}_mb$mb.txt"
              done 2>&1 | tee "$out/pretrain_$backend.txt" ;;
    profile)  { $py gpu/kernel_profile.py ps:256x16 1536 64 forward "$backend"; $py gpu/kernel_profile.py ph:256x16 131072 2 forward "$backend"
                $py gpu/kernel_profile.py ps:128x4 1024 128 train "$backend"; $py gpu/kernel_profile.py ph:128x4 1024 128 train "$backend"; } 2>&1 | tee "$out/profile_$backend.txt" ;;
    embed)    $py benchmarks/embed_speed.py --regions 10000 --device cuda --max-length 1536 --json "$out/embed_bundled.json" 2>&1 | tail -25
              $py benchmarks/embed_speed.py --regions 10000 --device cuda --random-model ps:256x16 --json "$out/embed_ps256x16.json" 2>&1 | tail -25 ;;
    variants) $py benchmarks/variants_speed.py --model random-ps-256x16 --device cuda --n 5000 --batch-size 512 2>&1 | tee "$out/variants_ps256x16.txt" | tail -3
              $py benchmarks/variants_speed.py --model bundled --device cuda --n 20000 --batch-size 512 2>&1 | tee "$out/variants_bundled.txt" | tail -3 ;;
    *) echo "unknown section $what"; exit 2 ;;
  esac
done
