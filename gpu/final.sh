#!/usr/bin/env bash
# The device run behind docs/performance.md's GPU rows, in two calls on one warm machine:
#   bash gpu/final.sh kernels     # quick checks, training and forward tokens/s (old vs new kernels), long range
#   bash gpu/final.sh more        # loss curves (triton vs torch), per-kernel profiles, the scan alone
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
esac
cp "$work/summary.txt" "$dest/summary_$1.txt" 2>/dev/null
[ -f "$work/long_range.json" ] && cp "$work/long_range.json" "$dest/"
tar czf "$dest/results_${1:-kernels}.tgz" -C "$work" .
ls -la "$dest"
