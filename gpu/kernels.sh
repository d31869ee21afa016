#!/usr/bin/env bash
# On the GPU machine: make mamba-ssm + causal-conv1d importable, fast.
#   bash gpu/kernels.sh export   # after .gpu/setup.sh compiled them: pack the installed files into $OUT
#   bash gpu/kernels.sh install  # unpack a previous export carried in .gpu/kernels/ (skips the 6-min build)
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
    if python3 -c "import mamba_ssm, causal_conv1d" 2>/dev/null; then exit 0; fi
    cat .gpu/kernels/kernels.tgz.part-* | tar xz -C "$site"
    python3 -c "import selective_scan_cuda, causal_conv1d_cuda; print('kernels installed from carried build')" ;;
  *) echo "usage: $0 export|install"; exit 2 ;;
esac
