"""Compute precision: the one place that decides which dtype a model's matmuls run in.

Every pipeline (inference, fine-tuning, pretraining, benchmarks) enters :func:`autocast` around its
model passes. ``dtype`` is the compute dtype a command asked for: None (the default policy) runs
bf16 autocast on CUDA and fp32 on the CPU; ``torch.float32`` runs fp32 everywhere;
``torch.bfloat16`` runs bf16 autocast on either device.
"""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str, dtype: torch.dtype | None = None):
    """The autocast context for passes on ``device`` in compute dtype ``dtype`` (see the module)."""
    kind = torch.device(device).type
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if kind == "cuda":
        return torch.autocast("cuda", dtype=dtype or torch.bfloat16)
    if kind == "cpu" and dtype == torch.bfloat16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
