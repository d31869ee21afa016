"""Optimiser pieces shared by pretraining and fine-tuning: AdamW parameter groups and the
warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch.nn as nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: none on norms, biases, embeddings (and the tied LM head),
    A_log, D, or any parameter marked ``_no_weight_decay`` (as the official optimiser groups).
    Frozen parameters (``requires_grad=False``) are left out."""
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False) or id(p) in no_decay_ids:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, lr: float, warmup: int, total: int, final_fraction: float = 0.0) -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``lr`` over ``warmup`` steps, then cosine
    decay to ``final_fraction * lr`` at ``total`` steps (0 for pretraining, 0.1 for fine-tuning)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = lr * final_fraction
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
