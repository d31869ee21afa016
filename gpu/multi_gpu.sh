#!/usr/bin/env bash
# Scaling over the GPUs of one host, in one device call on a machine with 2 or more GPUs:
#   bash gpu/multi_gpu.sh                       # 1, 2, 4 ... up to every GPU of the host
#   GPUS=1,2,4 bash gpu/multi_gpu.sh            # these sizes only
#   bash gpu/multi_gpu.sh --only variants-long  # more options go to benchmarks/multi_gpu.py
# Pretraining (PS 128x4, 1,024 bp), score-variants of PS 256x16 at window 1,536 and at context
# 131,072, and embed of 10,000 regions, each on every size, outputs compared with one GPU's
# (benchmarks/multi_gpu.py; about 10 minutes on eight H100s with the defaults).
# Carry .gpu (wheels) and .devdata (the 1000 Genomes VCF + FASTA of ../shared/data/variants).
# Comes back: multi_gpu.md (the table), multi_gpu.json, and one tarball of the logs and probes.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
dest=${OUT:-gpu-out}; work=/tmp/multi_gpu; mkdir -p "$work" "$dest"
py=${PYTHON:-python3}
if [ -d .gpu/wheels ] && ! $py -c "import pysam, pyfaidx, cyvcf2" 2>/dev/null; then
  $py -m pip install -q --no-deps --no-index .gpu/wheels/*.whl > "$work/pip.log" 2>&1 || echo "wheel install failed"
fi
nvidia-smi --query-gpu=index,name,memory.total,clocks.max.sm --format=csv > "$work/gpus.csv" 2>&1; cat "$work/gpus.csv"
timeout "${TIMEOUT:-570}" $py benchmarks/multi_gpu.py --out "$work" ${GPUS:+--gpus "$GPUS"} \
  --vcf .devdata/1kgp_grch37_chr20_1-2Mb.vcf.gz --fasta .devdata/1kgp_grch37_chr20_1-2Mb.fa "$@" \
  > "$work/multi_gpu.log" 2>&1
echo "multi_gpu.py exit $?"; tail -n 40 "$work/multi_gpu.log"
cp "$work/multi_gpu.json" "$work/multi_gpu.md" "$dest/" 2>/dev/null
tar czf "$dest/multi_gpu_logs.tgz" -C "$work" --exclude='*.parquet' --exclude='*.vcf' --exclude=inputs .
ls -la "$dest"
