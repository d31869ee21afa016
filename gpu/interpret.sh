#!/usr/bin/env bash
# The interpretation costs on one GPU, in one device call (carry .gpu and .devdata):
#   bash gpu/interpret.sh                 # the bundled model; MODEL=FOLDER or a hub id for another
# .gpu needs the pyBigWig wheel beside the others: bash ../shared/gpu/prepare.sh .gpu pyBigWig
# Dense LLR (masked against wt-marginal) on the whole 1000 Genomes VCF, a 1 Mb track, and ism per method,
# each after an untimed warm-up on a small input; one JSON line per measurement into $OUT/interpret_gpu.jsonl.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
dest=${OUT:-gpu-out}; mkdir -p "$dest"
py=${PYTHON:-python3}
model=${MODEL:-bundled}
if [ -d .gpu/wheels ] && ! $py -c "import pysam, pyfaidx, cyvcf2, pyBigWig" 2>/dev/null; then
  $py -m pip install -q --no-deps --no-index .gpu/wheels/*.whl > "$dest/pip.log" 2>&1 || echo "wheel install failed"
fi
data=(--vcf .devdata/1kgp_grch37_chr20_1-2Mb.vcf.gz --fasta .devdata/1kgp_grch37_chr20_1-2Mb.fa)
common=(--model "$model" --device cuda --batch-size 64 --window 1024 --flank 128 --warmup "${data[@]}")
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$dest/gpu.csv"
timeout 240 $py benchmarks/interpret_speed.py dense --n 29000 "${common[@]}" >> "$dest/interpret_gpu.jsonl" 2>> "$dest/interpret_gpu.log"
echo "dense exit $?"
timeout 120 $py benchmarks/interpret_speed.py track --bases 1000000 "${common[@]}" >> "$dest/interpret_gpu.jsonl" 2>> "$dest/interpret_gpu.log"
echo "track exit $?"
timeout 180 $py benchmarks/interpret_speed.py ism --bases 1000 --methods masked,wt-marginal,embedding "${common[@]}" \
  >> "$dest/interpret_gpu.jsonl" 2>> "$dest/interpret_gpu.log"
echo "ism exit $?"
cat "$dest/interpret_gpu.jsonl"
