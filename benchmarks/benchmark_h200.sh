#!/usr/bin/env bash
# `caduceus benchmark` on one H200 in ONE device call of about 6 minutes (run from the project root):
#
#   bash ../shared/gpu/prepare.sh .gpu matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow  # here
#   bash benchmarks/benchmark_h200.sh                                                              # there
#
# Steps, each bounded by `timeout` and written with --resume, so that whatever finishes is kept (rows
# are appended per task, atomically) and a second call continues where the first stopped:
#   1. set-up: the carried wheels and the project (seconds); the mamba-ssm/causal-conv1d build of
#      .gpu/setup.sh only with KERNELS=1 (about 6 minutes the first time on a fresh machine: it does
#      not fit in the same call; without it the selective scan runs on the PyTorch backend);
#   2. `benchmark speed` (~70 s): forward tokens/s of the published sizes at 1,536 and 131,072 bp
#      (beside the official implementation's H200 figures), masked-LM training of 128x4 at 1,024 bp
#      and batch 256 (the official figure's setting), embed and score-variants with the bundled model;
#   3. `benchmark nt-suite --protocol finetune` on the five yeast histone tasks (~130 s): the paper's
#      recipe (AdamW, lr 1e-3, batch 128, cosine, best epoch on validation) but 4 epochs and 5-fold CV
#      on the test split with 1 seed, not 20 epochs x 10 seeds (about 2.5% of the paper's compute);
#   4. `benchmark gue --protocol finetune` on the seven GUE tasks (~110 s): full train/dev/test
#      splits, 2 epochs and 1 seed, not 10 epochs x 5 seeds.
# Reports land in $OUT/{speed,nt-finetune,gue-finetune}/ (results.jsonl, summary.md, summary.png
# when matplotlib is installed; otherwise regenerate the PNG anywhere with the same command and
# --resume, which runs nothing and rewrites the summary).
set -u
DATA=${DATA:-../shared/data}
[ -d "$DATA/tasks" ] || DATA=shared/data
OUT=${OUT:-runs/benchmark-h200}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.log"; }

log "set-up"
if [ "${KERNELS:-0}" = 1 ]; then
  bash .gpu/setup.sh
else
  python3 -m pip install -q --no-deps --no-index .gpu/wheels/*.whl && python3 -m pip install -q --no-deps -e .
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/steps.log"
caduceus doctor | tee "$OUT/doctor.txt"

log "speed"
timeout 40 caduceus benchmark speed --resume -o "$OUT/speed" --tasks forward \
  --model random:ps:256x16,random:ph:256x16 --lengths 1536,131072
timeout 15 caduceus benchmark speed --resume -o "$OUT/speed" --tasks train \
  --model random:ps:128x4,random:ph:128x4 --lengths 1024
timeout 20 caduceus benchmark speed --resume -o "$OUT/speed" --tasks embed,score-variants \
  --model bundled --lengths 1024

log "nt-suite finetune"
timeout 130 caduceus benchmark nt-suite --resume -o "$OUT/nt-finetune" --data "$DATA/tasks/nt_yeast_histone" \
  --protocol finetune --epochs 4 --seeds 1 --folds 5

log "gue finetune"
timeout 110 caduceus benchmark gue --resume -o "$OUT/gue-finetune" --data "$DATA/tasks/gue" \
  --protocol finetune --epochs 2 --seeds 1

log "done"
tail -n +1 "$OUT"/*/summary.md
