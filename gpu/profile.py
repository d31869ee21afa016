"""Top CUDA kernels of one bf16 forward pass (diagnostics for benchmarks/model_speed.py)."""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM

variant, size = (sys.argv[1] if len(sys.argv) > 1 else "ps:256x16").split(":")
d, n = map(int, size.split("x"))
model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d, n)).cuda().eval()
ids = torch.randint(7, 11, (64, 1536), device="cuda")


def forward():
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(ids, compute_logits=False)


forward(); forward(); torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    forward(); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=60))
