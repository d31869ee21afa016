"""One fine-tuning run: the paper's optimiser and schedule, epochs of length-bucketed batches,
validation after every epoch on the whole split, the best epoch kept, DDP under torchrun, and a
state that a stopped run (``--max-time``) continues from exactly.

Everything random is a pure function of the run's seed, fold, epoch and batch number (batch
order, RC augmentation, the head's initial weights), so a continued run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...dna import reverse_complement_tokens
from ..optim import lr_at, parameter_groups
from .data import LabelSpace, TokenSplit, batches_per_epoch, collate, train_batches
from ...model.precision import autocast
from ..inference import predict_logits, to_device
from .metrics import is_better, outputs_from_logits, split_metrics
from .recipe import ADAM_BETAS, FINAL_LR_FRACTION, GRAD_CLIP, WARMUP_FRACTION

log = logging.getLogger("caduceus")


@dataclass
class TrainSettings:
    """The optimisation settings of every run of a job."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    rc_aug: bool
    select_metric: str
    eval_batch_size: int
    micro_batch: int | None = None  # sequences per forward/backward pass (None: the whole batch)


@dataclass
class RunState:
    """Where a run stands: position, running loss, best epoch so far, time and bases trained on."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: float = 0.0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_valid: dict | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    bases: int = 0
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def init_head(model, seed: int, fold: int | None) -> None:
    """The head's initial weights: normal(0, 0.02), zero bias, from the run's own generator."""
    generator = torch.Generator().manual_seed(seed * 1009 + (fold or 0))
    with torch.no_grad():
        weight = torch.randn(model.score.weight.shape, generator=generator) * 0.02
        model.score.weight.copy_(weight)
        if model.score.bias is not None:
            model.score.bias.zero_()


def reverse_complement_some(tokens: list[np.ndarray], flip: np.ndarray) -> list[np.ndarray]:
    return [reverse_complement_tokens(t) if f else t for t, f in zip(tokens, flip)]


class RunTrainer:
    """Trains ``model`` on one run's split; ``fit`` returns False when stopped by the deadline."""

    def __init__(self, model, settings: TrainSettings, space: LabelSpace, train: TokenSplit, valid: TokenSplit,
                 runtime, *, seed: int, fold: int | None, log_metrics: Callable[[dict], None],
                 progress: Callable[..., None] | None = None, should_stop: Callable[[], bool] | None = None):
        self.model, self.settings, self.space = model, settings, space
        self.train, self.valid, self.runtime = train, valid, runtime
        self.seed, self.fold = seed, fold
        self.log_metrics, self.progress = log_metrics, progress
        self.should_stop = should_stop or (lambda: False)
        self.device = next(model.parameters()).device
        self.net = model
        if runtime.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr,
                                           betas=ADAM_BETAS, eps=1e-8, **fused)
        self.steps_per_epoch = self._usable_batches(len(train.tokens))
        self.total_steps = settings.epochs * self.steps_per_epoch
        self.warmup = max(1, round(WARMUP_FRACTION * self.total_steps))
        self.best_state: dict | None = None
        self.rc_aug = settings.rc_aug and not model.config.rcps  # PS sees both strands anyway
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # no host sync per step

    def _usable_batches(self, n: int) -> int:
        """Batches per epoch; under torchrun a last batch smaller than the number of processes is
        dropped (every process needs at least one sequence)."""
        count = batches_per_epoch(n, self.settings.batch_size)
        last = n - (count - 1) * self.settings.batch_size
        return count - (1 if self.runtime.world_size > 1 and last < self.runtime.world_size else 0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, (self.fold or 0) + 1, epoch, 1])
        batches = train_batches(self.train.lengths, self.settings.batch_size, rng)
        return [b for b in batches if len(b) >= self.runtime.world_size]

    # -- one step ----------------------------------------------------------------------------
    def _loss(self, ids: np.ndarray, lengths: np.ndarray | None, y: np.ndarray) -> torch.Tensor:
        """Summed loss of one pass over (b, L) padded ids."""
        target = torch.from_numpy(y).to(self.device)
        with autocast(self.device):
            logits = self.net(to_device(ids, self.device), to_device(lengths, self.device))
        logits = logits.float()
        if self.space.task == "regression":
            scaled = (target.float() - self.space.mean) / self.space.std
            return F.mse_loss(logits[:, 0], scaled, reduction="sum")
        return F.cross_entropy(logits, target, reduction="sum")

    def _backward(self, idx: np.ndarray, epoch: int, batch: int, global_count: int) -> tuple[torch.Tensor, int]:
        """Forward and backward passes of this process's share of a batch: (scaled loss, bases).

        With ``micro_batch`` the share runs in passes of that many sequences, all padded to the
        share's width (each sequence sees what it would in one pass); their gradients add up to
        the share's, and under DDP only the last pass synchronises them."""
        local = idx[self.runtime.rank::self.runtime.world_size]
        tokens = [self.train.tokens[i] for i in local]
        if self.rc_aug:
            flip = np.random.default_rng([self.seed, (self.fold or 0) + 1, epoch, batch, 2]).random(len(local)) < 0.5
            tokens = reverse_complement_some(tokens, flip)
        ids, lengths = collate(tokens, range(len(tokens)))
        y = self.train.y[local]
        per = self.settings.micro_batch or len(local)
        # DDP averages gradients over processes: scale so the step sees the global batch mean.
        scale = self.runtime.world_size / global_count
        total = None
        for start in range(0, len(local), per):
            end = start + per
            hold = end < len(local) and self.runtime.distributed
            with self.net.no_sync() if hold else contextlib.nullcontext():
                loss = self._loss(ids[start:end], None if lengths is None else lengths[start:end], y[start:end]) * scale
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total, int(sum(len(t) for t in tokens))

    def _step(self, state: RunState, idx: np.ndarray, epoch: int, batch: int) -> None:
        lr = lr_at(state.step, self.settings.lr, self.warmup, self.total_steps, FINAL_LR_FRACTION)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        scaled, bases = self._backward(idx, epoch, batch, len(idx))
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._loss_sum += scaled.detach().double() * (len(idx) / self.runtime.world_size)
        state.loss_count += len(idx) / self.runtime.world_size
        state.bases += bases
        state.step += 1
        state.batch += 1

    # -- epochs ------------------------------------------------------------------------------
    def fit(self, state: RunState) -> bool:
        """Train from ``state`` to the last epoch (True), or until ``should_stop`` (False)."""
        self.model.train()
        started = time.time()
        while state.epoch < self.settings.epochs:
            batches = self._epoch_batches(state.epoch)
            tick = time.time()
            for idx in batches[state.batch:]:
                self._step(state, idx, state.epoch, state.batch)
                if self.progress is not None:
                    self.progress(1)
                if self.should_stop():
                    self._take_loss(state)
                    state.train_seconds += time.time() - tick
                    state.seconds += time.time() - started
                    return False
            self._take_loss(state)  # syncs the device: the training time below is honest
            state.train_seconds += time.time() - tick
            self._end_epoch(state)
        state.seconds += time.time() - started
        return True

    def _take_loss(self, state: RunState) -> None:
        state.loss_sum += float(self._loss_sum)
        self._loss_sum.zero_()

    def _end_epoch(self, state: RunState) -> None:
        loss_sum, count = self.runtime.all_reduce([state.loss_sum, state.loss_count])
        valid = self.evaluate(self.valid)
        metric = valid.get("loss") if self.settings.select_metric == "loss" else valid.get(self.settings.select_metric)
        if is_better(self.settings.select_metric, metric, state.best_metric):
            state.best_metric, state.best_epoch, state.best_valid = metric, state.epoch + 1, valid
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        record = {"seed": self.seed, "fold": self.fold, "epoch": state.epoch + 1, "step": state.step,
                  "train_loss": loss_sum / count if count else None,
                  "lr": lr_at(state.step - 1, self.settings.lr, self.warmup, self.total_steps, FINAL_LR_FRACTION),
                  "valid": valid, "best_epoch": state.best_epoch,
                  "train_bases_per_s": state.bases / state.train_seconds if state.train_seconds else None}
        state.history.append({"epoch": state.epoch + 1, "train_loss": record["train_loss"], "valid": valid})
        self.log_metrics(record)
        log.info("seed %s%s epoch %d: train loss %.4f, valid %s %.4f", self.seed,
                 "" if self.fold is None else f" fold {self.fold}", state.epoch + 1, record["train_loss"] or math.nan,
                 self.settings.select_metric, metric if metric is not None else math.nan)
        state.epoch += 1
        state.batch = 0
        state.loss_sum = state.loss_count = 0.0

    def evaluate(self, split: TokenSplit) -> dict:
        """Metrics of a whole split (and its loss) with the model as it is now."""
        logits = predict_logits(self.model, split.tokens, self.settings.eval_batch_size, self.runtime)
        outputs = outputs_from_logits(self.space.task, logits, self.space.mean, self.space.std)
        metrics = split_metrics(self.space.task, split.y, outputs)
        metrics["loss"] = split_loss(self.space, logits, split.y)
        return metrics


def split_loss(space: LabelSpace, logits: np.ndarray, y: np.ndarray) -> float:
    """Mean training loss over a split: cross-entropy, or MSE of standardised targets."""
    z = torch.from_numpy(logits).double()
    if space.task == "regression":
        return float(F.mse_loss(z[:, 0], (torch.from_numpy(y).double() - space.mean) / space.std))
    return float(F.cross_entropy(z, torch.from_numpy(y)))
