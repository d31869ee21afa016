#!/usr/bin/env bash
# The device run behind docs/performance.md's GPU rows, in two calls on one warm machine:
#   bash gpu/final.sh kernels     # quick checks, training and forward tokens/s (old vs new kernels), long range
#   bash gpu/final.sh more        # loss curves (triton vs torch), per-kernel profiles, the scan alone
#   bash gpu/final.sh figures     # the default kernels beside the old ones (forward, training), score-variants
#                                 # at 131,072 bp with the embedding scores alone and with all, embed --context
# Carry .gpu (wheels) and .devdata (the 1000 Genomes VCF + FASTA of ../shared/data/variants).
# Everything goes to a scratch folder and comes back as one tarball plus the summary (the device
# returns at most 8 files).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
dest=${OUT:-gpu-out}; work=/tmp/gout; mkdir -p "$work" "$dest"
py=${PYTHON:-python3}
case "${1:-kernels}" in
  kernels)
    OUT=$work BUDGET=${BUDGET:-420} bash gpu/measure.sh check pretrain forward
    echo "== long range"
    timeout 150 $py benchmarks/long_range_gpu.py --out "$work/long_range.json" \
      --vcf .devdata/1kgp_grch37_chr20_1-2Mb.vcf.gz --fasta .devdata/1kgp_grch37_chr20_1-2Mb.fa \
      > "$work/long_range.log" 2>&1; echo "long range exit $?"; tail -n 30 "$work/long_range.log" ;;
  more)
    OUT=$work BUDGET=${BUDGET:-330} bash gpu/measure.sh loss profile scan ;;
  figures)
    for spec in "1536 256" "131072 2"; do
      set -- $spec
      timeout 120 $py benchmarks/model_speed.py --device cuda --dtype bf16 --backend triton --configs ps:256x16,ph:256x16 \
        --lengths "$1" --batch "$2" --repeats 5 --warmup 2 --kernels old,new --json "$work/forward_$1.json" \
        > "$work/forward_$1.log" 2>&1; tail -n 6 "$work/forward_$1.log"
    done
    timeout 120 $py benchmarks/pretrain_speed.py --variant ps ph --steps 15 --warmup-steps 3 --kernels old,new \
      --json "$work/pretrain.json" > "$work/pretrain.log" 2>&1; grep -E '"(variant|kernels|tokens_per_s)"' "$work/pretrain.json"
    for scores in embed_cos,embed_l2 llr,embed_cos,embed_l2; do
      timeout 120 $py benchmarks/long_range_gpu.py --out "$work/long_range_$scores.json" --scores "$scores" --skip-finetune \
        --vcf .devdata/1kgp_grch37_chr20_1-2Mb.vcf.gz --fasta .devdata/1kgp_grch37_chr20_1-2Mb.fa \
        > "$work/long_range_$scores.log" 2>&1; grep -E '"(variants_per_second|tokens_per_second|pipeline_over_forward_tokens)"' "$work/long_range_$scores.json"
    done
    timeout 120 $py benchmarks/embed_speed.py --regions 200 --device cuda --random-model ps:256x16 --context 131072 \
      --json "$work/embed_context.json" > "$work/embed_context.log" 2>&1; tail -n 8 "$work/embed_context.log"
    $py - "$work" <<'PY' | tee "$work/summary.txt"
import json, sys, pathlib
w = pathlib.Path(sys.argv[1])
for f in sorted(w.glob("forward_*.json")):
    for r in json.loads(f.read_text()):
        print(f"forward {r['model']:10} {r['length']:>7} x {r['batch']:<4} {r['kernels']:4} {r['tokens_per_s'] / 1e6:.3f} M tok/s {r['peak_memory_gib']} GiB")
PY
    ;;
esac
cp "$work/summary.txt" "$dest/summary_$1.txt" 2>/dev/null
[ -f "$work/long_range.json" ] && cp "$work/long_range.json" "$dest/"
tar czf "$dest/results_${1:-kernels}.tgz" -C "$work" .
ls -la "$dest"
