#!/usr/bin/env bash
# GPU measurements, run on the device machine from the repo root after gpu/kernels.sh install.
# Each section writes its JSON/text into $OUT (default ./gpu-out):
#   bash gpu/bench.sh parity model pretrain profile embed variants
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
for what in "$@"; do
  case "$what" in
    parity)   python -m pytest -q tests/test_gpu.py -rs 2>&1 | tail -15 | tee "$out/test_gpu.log" ;;
    model)    python benchmarks/model_speed.py --device cuda --dtype bf16 --backend cuda --json "$out/model_speed.json" 2>/dev/null | tee "$out/model_speed.txt" ;;
    pretrain) for mb in 128 64; do
                python benchmarks/pretrain_speed.py --micro-batch-size $mb --json "$out/pretrain_mb$mb.json" > "$out/pretrain_mb$mb.txt"; head -4 "$out/pretrain_mb$mb.txt"
              done 2>&1 | tee "$out/pretrain.txt" ;;
    profile)  { python gpu/kernel_profile.py ps:256x16 1536 64; python gpu/kernel_profile.py ph:256x16 131072 2
                python gpu/kernel_profile.py ps:128x4 1024 128 train; python gpu/kernel_profile.py ph:128x4 1024 128 train; } 2>&1 | tee "$out/profile.txt" ;;
    embed)    python benchmarks/embed_speed.py --regions 10000 --device cuda --max-length 1536 --json "$out/embed_bundled.json" 2>&1 | tail -25
              python benchmarks/embed_speed.py --regions 10000 --device cuda --random-model ps:256x16 --json "$out/embed_ps256x16.json" 2>&1 | tail -25 ;;
    variants) python benchmarks/variants_speed.py --model random-ps-256x16 --device cuda --n 5000 --batch-size 512 2>&1 | tee "$out/variants_ps256x16.txt" | tail -3
              python benchmarks/variants_speed.py --model bundled --device cuda --n 20000 --batch-size 512 2>&1 | tee "$out/variants_bundled.txt" | tail -3 ;;
    *) echo "unknown section $what"; exit 2 ;;
  esac
done
