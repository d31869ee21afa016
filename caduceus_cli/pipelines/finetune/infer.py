"""Batched inference of a classifier over token arrays: equal-length batches, bf16 autocast on CUDA,
work shared between torchrun processes and gathered back in input order."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...model.precision import model_autocast
from .data import collate, eval_batches


def to_device(array: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    if array is None:
        return None
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@torch.no_grad()
def batched_rows(tokens: list[np.ndarray], batch_size: int, width: int, compute: Callable, runtime=None,
                 progress: Callable[..., None] | None = None) -> np.ndarray:
    """(N, width) float32: ``compute(ids, lens)`` (a tensor of one row per sequence) over equal-length
    batches (no padding), under bf16 autocast on CUDA; under torchrun batch i runs on rank
    ``i % world`` and every rank receives all rows, in input order. ``ids``/``lens`` are on the
    device of ``compute``'s model, which the caller closes over."""
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    world, rank = (runtime.world_size, runtime.rank) if runtime is not None else (1, 0)
    mine = []
    for i, idx in enumerate(eval_batches(lengths, batch_size)):
        if i % world != rank:
            continue
        mine.append((idx, compute(*collate(tokens, idx)).float().cpu().numpy()))
        if progress is not None:
            progress(len(idx))
    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        mine = [pair for part in gathered for pair in part]
    out = np.zeros((len(tokens), width), dtype=np.float32)
    for idx, rows in mine:
        out[idx] = rows
    return out


@torch.no_grad()
def predict_logits(model, tokens: list[np.ndarray], batch_size: int, runtime=None,
                   progress: Callable[..., None] | None = None) -> np.ndarray:
    """(N, num_outputs) float32 logits of every sequence, in input order, in eval mode (see
    :func:`batched_rows` for batching and torchrun)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def logits(ids, lens):
        with model_autocast(model):
            return model(to_device(ids, device), to_device(lens, device))

    out = batched_rows(tokens, batch_size, model.num_labels, logits, runtime, progress)
    model.train(was_training)
    return out


def outputs_from_logits(task: str, logits: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Class probabilities (N, K) (softmax in float64) or regression values (N,) (``logits * std + mean``)."""
    if task == "regression":
        return logits[:, 0].astype(np.float64) * std + mean
    z = logits.astype(np.float64)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
