"""Top CUDA kernels of one bf16 forward pass, or of one training step (diagnostics for the benchmarks).

    python gpu/kernel_profile.py ps:256x16 1536 64          # variant:DxL, length, batch
    python gpu/kernel_profile.py ph:256x16 131072 2
    python gpu/kernel_profile.py ps:128x4 1024 128 train    # forward + backward + optimiser step
    python gpu/kernel_profile.py ps:256x16 1536 64 forward mamba-ssm   # 5th argument: the backend

Also prints the wall time of the profiled call and the summed kernel time, which tells whether the
GPU is kept busy (kernel time close to wall time) or waits for the Python side to launch work, and
one line ``SHARES {json}``: the kernel time by kind (scan, matmul, conv, norm, flips, other).
"""
import json
import re
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM

variant, size = (sys.argv[1] if len(sys.argv) > 1 else "ps:256x16").split(":")
length = int(sys.argv[2]) if len(sys.argv) > 2 else 1536
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
mode = sys.argv[4] if len(sys.argv) > 4 else "forward"
backend = sys.argv[5] if len(sys.argv) > 5 else "auto"
d, n = map(int, size.split("x"))
torch.manual_seed(0)
model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d, n)).cuda()
model.backend = backend
ids = torch.randint(7, 11, (batch, length), device="cuda")
targets = torch.randint(0, batch * length, (batch * length * 15 // 100,), device="cuda")
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)


def once():
    if mode == "train":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden = model(ids, compute_logits=False).last_hidden_state
            logits = model.logits(hidden.flatten(0, 1)[targets])
        F.cross_entropy(logits.float(), ids.flatten()[targets]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(ids, compute_logits=False)


once(); once(); torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    t0 = time.perf_counter()
    once()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
kernel_us = sum(e.self_device_time_total for e in prof.key_averages())
print(f"{variant}:{size} L={length} B={batch} {mode} backend={backend}: wall {wall * 1e3:.1f} ms, kernels {kernel_us / 1e3:.1f} ms, "
      f"{batch * length / wall / 1e6:.3f} M tokens/s")
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70))
KINDS = [("scan", r"_scan_|chunk_carry"), ("matmul", r"nvjet|gemm|cutlass|xmma|sm90_|ampere_|cublas"),
         ("conv", r"_conv_"), ("norm", r"norm"), ("flips", r"flip"), ("other", r".")]
shares = {kind: 0.0 for kind, _ in KINDS}
for e in prof.key_averages():
    if e.self_device_time_total > 0:
        kind = next(k for k, pattern in KINDS if re.search(pattern, e.key))
        shares[kind] += e.self_device_time_total / 1e3
print("SHARES " + json.dumps({"config": f"{variant}:{size} L={length} B={batch} {mode}", "wall_ms": round(wall * 1e3, 1),
                              "kernel_ms": round(kernel_us / 1e3, 1), "tokens_per_s": round(batch * length / wall),
                              "ms": {k: round(v, 2) for k, v in shares.items()},
                              "share": {k: round(v / max(kernel_us / 1e3, 1e-9), 3) for k, v in shares.items()}}))
