#!/usr/bin/env bash
# On the GPU machine (from the repo root): make the mamba-ssm kernels importable without the
# 6-minute build, then install the carried wheels and this project.
#   bash gpu/kernels.sh export   # after .gpu/setup.sh compiled them: pack the installed files into $OUT
#   bash gpu/kernels.sh install  # unpack .gpu/kernels/*.txz (made from an export), wheels, project
# Locally, an export becomes a carry file with:
#   cat kernels.tgz.part-* | tar xz; strip --strip-unneeded *.so; tar cf - selective_scan_cuda*.so mamba_ssm* | xz -9 > .gpu/kernels/mamba_ssm.txz
set -euo pipefail
site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
case "${1:-}" in
  export)
    cd "$site"
    files=$(ls -d mamba_ssm mamba_ssm-*.dist-info causal_conv1d causal_conv1d-*.dist-info selective_scan_cuda*.so causal_conv1d_cuda*.so 2>/dev/null)
    tar czf /tmp/kernels.tgz $files
    split -b 15m /tmp/kernels.tgz "$OUT/kernels.tgz.part-"
    ls -la "$OUT" ;;
  install)
    if ! python3 -c "import mamba_ssm" 2>/dev/null; then
      for f in .gpu/kernels/*.txz; do xz -dc "$f" | tar x -C "$site"; done
    fi
    python3 -m pip install -q --no-deps --no-index .gpu/wheels/*.whl
    python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
    python3 -c "import torch, selective_scan_cuda; from caduceus_cli.model.scan import cuda_kernels; print('torch', torch.__version__, 'kernels', {k: v is not None for k, v in cuda_kernels().items()})" ;;
  *) echo "usage: $0 export|install"; exit 2 ;;
esac
