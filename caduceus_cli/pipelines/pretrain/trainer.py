"""The model and its optimisation: a fresh model, AdamW with the official parameter groups, linear
warmup + cosine decay, gradient accumulation over micro-batches, bf16 autocast on CUDA, DDP across
the ranks of a :class:`~caduceus_cli.runtime.Runtime`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...model.caduceus import CaduceusForMaskedLM
from ...model.config import CaduceusConfig
from ...model.precision import autocast
from ...runtime import Runtime
from ..optim import lr_at, parameter_groups
from .settings import ADAM_BETAS, GRAD_CLIP, IGNORE_INDEX, MICRO_BATCH_TOKENS


def new_model(variant: str, d_model: int, n_layer: int, seq_len: int, seed: int) -> CaduceusForMaskedLM:
    """A freshly initialised model; the same ``seed`` gives the same weights on every rank."""
    config = CaduceusConfig.small(variant, d_model=d_model, n_layer=n_layer)
    config.extra["max_seq_len"] = seq_len
    torch.manual_seed(seed)
    return CaduceusForMaskedLM(config)


def default_micro_batch(local_batch: int, seq_len: int, variant: str) -> int:
    """The largest divisor of ``local_batch`` whose forward pass holds at most MICRO_BATCH_TOKENS
    tokens (a PS window counts twice: it runs both strands). On the H200 this was the fastest
    setting for both variants (docs/pretrain.md), and it bounds activation memory on any device."""
    per_window = seq_len * (2 if variant == "ps" else 1)
    cap = max(1, min(local_batch, MICRO_BATCH_TOKENS // per_window))
    return max(d for d in range(1, cap + 1) if local_batch % d == 0)


class _Logits(nn.Module):
    """The masked-LM model returning a plain tensor (what DDP wraps best): the logits at the flat
    positions ``targets`` (indices into B*L) only, since the loss reads nothing else."""

    def __init__(self, model: CaduceusForMaskedLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids, compute_logits=False).last_hidden_state
        return self.model.logits(hidden.flatten(0, 1)[targets])


class Trainer:
    """One optimisation step per call to ``train_step``: gradient accumulation over micro-batches,
    loss averaged over every masked target of the global batch, DDP across ranks."""

    def __init__(self, model: CaduceusForMaskedLM, *, lr: float, warmup: int, steps: int, weight_decay: float,
                 micro_batch_size: int, runtime: Runtime | None = None, backend: str = "auto"):
        self.runtime = runtime or Runtime(device=torch.device("cpu"))
        self.device = self.runtime.device
        self.model = model.to(self.device)
        self.model.backend = backend
        self.model.train()
        self.lr, self.warmup, self.steps = lr, warmup, steps
        self.micro_batch_size = micro_batch_size
        self.net: nn.Module = _Logits(self.model)
        if self.runtime.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, weight_decay), lr=lr, betas=ADAM_BETAS,
                                           eps=1e-8, **fused)
        self.step = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # since the last report
        self.target_count: float | torch.Tensor = 0.0  # targets since the last report, all ranks
        self.last_lr = 0.0

    def autocast(self):
        return autocast(self.device)

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor, n_targets: int | None = None) -> None:
        """inputs: (n, L) uint8 token ids, labels: (n, L) int64 (IGNORE_INDEX where not a target),
        this rank's share of the global batch; ``n_targets`` is the number of targets in it."""
        lr = lr_at(self.step, self.lr, self.warmup, self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if n_targets is None:
            n_targets = int((labels != IGNORE_INDEX).sum())
        if self.runtime.distributed:
            # The loss is a mean over every target of the global batch; the count is reduced on the
            # device without a host sync, so the CPU keeps queueing work ahead of the GPU.
            import torch.distributed as dist

            global_targets = torch.tensor(float(n_targets), dtype=torch.float64, device=self.device)
            dist.all_reduce(global_targets)
            scale = (self.runtime.world_size / global_targets.clamp(min=1)).float()  # DDP averages over ranks
        else:
            global_targets = float(n_targets)
            scale = 1.0 / max(1, n_targets)
        # Each micro-batch's target positions and their labels, found on the host (labels arrive
        # there) and copied from pinned memory, so that no step waits for the device.
        pin = self.device.type == "cuda"
        targets = []
        for lab in labels.split(self.micro_batch_size):
            where = torch.nonzero(lab.flatten() != IGNORE_INDEX).squeeze(1)
            pair = (where, lab.flatten()[where])
            targets.append([(t.pin_memory() if pin else t).to(self.device, non_blocking=True) for t in pair])
        inputs = inputs.to(self.device, non_blocking=True)
        chunks = list(zip(inputs.split(self.micro_batch_size), targets))
        for i, (ids, (where, lab)) in enumerate(chunks):
            sync = i == len(chunks) - 1 or not self.runtime.distributed
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            with ctx:
                with self.autocast():
                    logits = self.net(ids.long(), where)
                loss = F.cross_entropy(logits.float(), lab, reduction="sum")
                (loss * scale).backward()
            self.loss_sum += loss.detach().double()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.target_count += global_targets
        self.last_lr = lr
        self.step += 1

    def take_train_loss(self) -> float:
        """Mean loss per masked target over all ranks since the previous call (syncs the device)."""
        total = self.runtime.all_reduce([float(self.loss_sum)])[0]
        count = float(self.target_count)  # already summed over ranks
        mean = total / count if count else float("nan")
        self.loss_sum.zero_()
        self.target_count = 0.0
        return mean

    @torch.no_grad()
    def evaluate(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(loss per target, masked accuracy) on a validation set; each rank takes every world_size-th row.
        Accuracy is the argmax over the whole vocabulary at the masked positions."""
        rows = np.arange(self.runtime.rank, len(inputs), self.runtime.world_size)
        loss_sum = correct = count = 0.0
        self.model.eval()
        for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / self.micro_batch_size))):
            if not len(chunk):
                continue
            ids = torch.from_numpy(inputs[chunk]).to(self.device).long()
            lab = torch.from_numpy(labels[chunk]).to(self.device)
            with self.autocast():
                logits = self.model(ids).logits
            logits = logits.float()
            target = lab != IGNORE_INDEX
            loss_sum += float(F.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=IGNORE_INDEX,
                                              reduction="sum"))
            correct += float(((logits.argmax(-1) == lab) & target).sum())
            count += float(target.sum())
        self.model.train()
        loss_sum, correct, count = self.runtime.all_reduce([loss_sum, correct, count])
        return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Optimiser, schedule position, RNG and loss accumulators: tensors, numbers, strings, dicts only."""
        state = {
            "format": "caduceus-cli pretrain trainer state 1",
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": "linear warmup + cosine", "lr": self.lr, "warmup": self.warmup,
                          "steps": self.steps, "next_step": self.step},
            "torch_rng": torch.get_rng_state(),
            "loss_sum": float(self.loss_sum),
            "target_count": float(self.target_count),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.loss_sum.fill_(float(state["loss_sum"]))
        self.target_count = float(state["target_count"])
