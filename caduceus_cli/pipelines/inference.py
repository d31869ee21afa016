"""Running a model for inference: the one place that batches sequences, sets the compute precision,
runs a Caduceus model, conjoins its two strands and pools positions. embed, score-variants (and
the SVM's features), predict, fine-tuning's evaluation and the probe all call it.

Shapes: B sequences, L positions, d = ``d_model``, H the hidden width (2d for Caduceus-PS, whose
hidden state carries both strands side by side; d for Ph), S strands (2 for PS, and for Ph when
conjoined; 1 for Ph read forward only), V the padded vocabulary, N sequences in all.

Strands (the paper's reverse-complement handling):

- Caduceus-PS: one pass. Its hidden state holds the forward strand and the reverse-complement (RC)
  strand, which is flipped back onto the forward strand's positions (the official conjoining).
- Caduceus-Ph: post-hoc conjoining. A second pass reads the RC of the input; its output is
  flipped back along length onto the forward strand (``conjoin=False`` skips it).

Per-position features (:func:`strand_features`) line the strands up on the forward strand,
position by position (``model/strands.strand_stack``). Pooled features of right-padded batches
(:func:`pooled_features`: fine-tuning and the probe) run each strand in its own frame through the
classifier's own code (``model/strands.pooled_strand_features``). Either way the strands are
pooled one by one and then averaged.

Pooling (``choices.POOLINGS``, one vocabulary everywhere): ``mean``, ``max``, ``center`` (the mean
over a symmetric central window), ``first``/``last`` (each strand's own 5'/3' base); ``none``
(``choices.PER_POSITION``) keeps one vector per position, where an output can hold it (embed).

Attribution (``predict --attribute saliency``): :func:`gradient_times_input` runs a classifier with a
gradient from its token embedding (no weight gradient) and adds both strands' terms per base.

Batches hold sequences of one length only: a bi-directional model reads padding too, so a
sequence's result never depends on the other sequences (:func:`equal_length_batches`). Under
torchrun :func:`batched` shares the batches between ranks (``runtime.run_sharded``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .. import stopping
from ..choices import PER_POSITION, check_pooling
from ..model.precision import model_autocast
from ..model.strands import pool_rows, pooled_strand_features, reverse_complement_padded, strand_stack
from ..runtime import Runtime, run_sharded

_OTHER_END = {"first": "last", "last": "first"}


# -- batches -------------------------------------------------------------------------------------
def equal_length_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches of indexes into ``lengths``: one length per batch (never any padding), longest first,
    input order within a length; at most ``batch_size`` sequences, and with ``max_tokens`` at most
    ``max_tokens // length`` of them (one at the least)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    batches, start = [], 0
    while start < len(order):
        length = int(lengths[order[start]])
        rows = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // max(1, length)))
        end = start
        while end < len(order) and end - start < rows and lengths[order[end]] == length:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def to_device(array: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """A numpy array as a tensor on ``device`` (through pinned memory to a GPU); None stays None."""
    if array is None:
        return None
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@torch.no_grad()
def batched(tokens: Sequence[np.ndarray], batch_size: int, compute: Callable[[torch.Tensor], torch.Tensor], *,
            width: int, device: torch.device, runtime: Runtime | None = None,
            progress: Callable[..., None] | None = None) -> np.ndarray:
    """(N, width) float32: ``compute(ids)`` on every equal-length batch of ``tokens`` (token arrays),
    rows in input order. ``ids``: (b, L) int64 on ``device``; ``compute`` returns (b, width).

    A stop request (SIGINT/SIGTERM) is honoured between batches. Under torchrun (``runtime``)
    batch i runs on rank ``i % world`` and every rank receives every row; ``progress(n)`` counts
    the sequences this rank computed.
    """
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    batches = equal_length_batches(lengths, batch_size)

    def work(indexes: np.ndarray) -> np.ndarray:
        stopping.check()
        ids = to_device(np.stack([tokens[i] for i in indexes]).astype(np.int64), device)
        rows = compute(ids).float().cpu().numpy()
        if progress is not None:
            progress(len(indexes))
        return rows

    out = np.zeros((len(tokens), width), dtype=np.float32)
    for indexes, rows in zip(batches, run_sharded(batches, work, runtime)):
        out[indexes] = rows
    return out


# -- hidden states and strands -------------------------------------------------------------------
def hidden_states(model, input_ids: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """(B, L, H) hidden state at ``layer``: None, -1 or n_layer for the last (after the final norm);
    k for the residual stream entering layer k (0: the token embeddings)."""
    n_layer = model.config.n_layer
    if layer is None or layer == -1 or layer == n_layer:
        hidden, _ = model.caduceus(input_ids, model.backend, False)
        return hidden
    if not -n_layer <= layer <= n_layer:
        raise ValueError(f"layer must be in 0..{n_layer}, got {layer}")
    _, streams = model.caduceus(input_ids, model.backend, True)
    return streams[layer]


def _reverse_complement(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids of the reverse complement of every row (rows without padding)."""
    return reverse_complement_padded(input_ids, None, model.backbone.complement_ids, model.config.pad_token_id)


@torch.no_grad()
def strand_features(model, input_ids: torch.Tensor, layer: int | None = None, conjoin: bool = True) -> torch.Tensor:
    """(B, L, d, S) float32 features of every position and strand, aligned to the forward strand:
    ``[..., 0]`` the forward strand, ``[..., 1]`` the RC strand at the same base (S = 2: PS, or Ph
    with ``conjoin``; S = 1: Ph without). ``input_ids``: (B, L) without padding."""
    with model_autocast(model):
        hidden = hidden_states(model, input_ids, layer)
        hidden_rc = None
        if not model.config.rcps and conjoin:
            hidden_rc = hidden_states(model, _reverse_complement(model, input_ids), layer)
        return strand_stack(hidden, model.config.rcps, hidden_rc).float()


def pool_positions(features: torch.Tensor, how: str, center_width: int = 1) -> torch.Tensor:
    """Pool (B, L, d, S) strand features (from :func:`strand_features`) over positions -> (B, d, S),
    each strand as read 5'->3' on itself: ``first`` takes the forward strand's first position and
    the RC strand's last (its own first base). ``none`` returns ``features`` as they are.

    ``center`` averages ``center_width`` positions, grown by one when needed to be symmetric, so
    that a sequence and its reverse complement pool the same bases (``model/strands.pool_rows``).
    """
    if how == PER_POSITION:
        return features
    check_pooling(how)
    if how in _OTHER_END and features.shape[-1] == 2:
        forward = pool_rows(features[..., 0], how, center_width=center_width)
        reverse = pool_rows(features[..., 1], _OTHER_END[how], center_width=center_width)
        return torch.stack([forward, reverse], dim=-1)
    return pool_rows(features, how, center_width=center_width)


@torch.no_grad()
def embed_tokens(model, input_ids: torch.Tensor, pool: str = "mean", layer: int | None = None, conjoin: bool = True,
                 center_width: int = 1) -> torch.Tensor:
    """Strand-averaged embeddings of (B, L) ids without padding: (B, d) pooled, (B, L, d) with
    ``pool='none'``; float32."""
    return pool_positions(strand_features(model, input_ids, layer, conjoin), pool, center_width).mean(-1)


@torch.no_grad()
def centre_logits(model, input_ids: torch.Tensor, centre: int) -> torch.Tensor:
    """(B, V) float32 masked-LM logits at position ``centre`` of (B, L) ids, both strands combined:
    PS in one pass (its LM head is RC-equivariant); Ph as the mean of the forward pass and the RC
    pass, whose logits are read at the mirrored position and mapped back to the complementary bases."""
    complement = model.backbone.complement_ids
    with model_autocast(model):
        hidden, _ = model.caduceus(input_ids, model.backend, False)
        logits = model.logits(hidden[:, centre]).float()
        if not model.config.rcps:
            hidden_rc, _ = model.caduceus(_reverse_complement(model, input_ids), model.backend, False)
            logits_rc = model.logits(hidden_rc[:, input_ids.shape[1] - 1 - centre]).float()
            logits = 0.5 * (logits + logits_rc[:, complement])
    return logits


@torch.no_grad()
def position_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L, V) float32 masked-LM logits at every position of (B, L) ids without padding, read
    unmasked (the wild-type marginal), both strands combined as in :func:`centre_logits`: PS in one
    pass; Ph as the mean of the forward pass and the RC pass flipped back along length, with its
    logits mapped to the complementary bases."""
    complement = model.backbone.complement_ids
    with model_autocast(model):
        hidden, _ = model.caduceus(input_ids, model.backend, False)
        logits = model.logits(hidden).float()
        if not model.config.rcps:
            hidden_rc, _ = model.caduceus(_reverse_complement(model, input_ids), model.backend, False)
            logits_rc = model.logits(hidden_rc).float().flip(1)
            logits = 0.5 * (logits + logits_rc[..., complement])
    return logits


@torch.no_grad()
def pooled_features(model, input_ids: torch.Tensor, lengths: torch.Tensor | None = None, *, pooling: str = "mean",
                    center_width: int = 1, conjoin: bool = True) -> torch.Tensor:
    """(B, d) float32: the last hidden state pooled per strand, each strand in its own frame, and
    averaged over the strands; ``input_ids`` (B, L) may be right-padded beyond ``lengths`` (B,)."""
    check_pooling(pooling)
    with model_autocast(model):
        strands = pooled_strand_features(model.backbone, input_ids, lengths, pooling=pooling,
                                         center_width=center_width, conjoin=conjoin, backend=model.backend)
    return strands.float().mean(1)


# -- whole sets of sequences ---------------------------------------------------------------------
def embed_sequences(model, tokens: Sequence[np.ndarray], *, pooling: str, center_width: int, batch_size: int,
                    runtime: Runtime | None = None, progress=None) -> np.ndarray:
    """(N, d) float32 :func:`pooled_features` of every token array (both strands), in input order."""
    def features(ids: torch.Tensor) -> torch.Tensor:
        return pooled_features(model, ids, pooling=pooling, center_width=center_width, conjoin=True)

    return batched(tokens, batch_size, features, width=model.config.d_model, device=model.device, runtime=runtime,
                   progress=progress)


@torch.no_grad()
def predict_logits(model, tokens: Sequence[np.ndarray], batch_size: int, runtime: Runtime | None = None,
                   progress: Callable[..., None] | None = None) -> np.ndarray:
    """(N, num_labels) float32 logits of a classifier for every token array, in input order, in
    eval mode (the mode it was in is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def logits(ids: torch.Tensor) -> torch.Tensor:
        with model_autocast(model):
            return model(ids)

    try:
        return batched(tokens, batch_size, logits, width=model.num_labels, device=device, runtime=runtime,
                       progress=progress)
    finally:
        model.train(was_training)


# -- gradients through the token embedding (attribution) -----------------------------------------
def _attribution_target(logits: torch.Tensor) -> torch.Tensor:
    """(B,) the output an attribution explains: for a classifier the predicted class's logit minus
    the mean logit (the part of the logits softmax depends on; half the log-odds for two classes,
    and defined for a probe, whose binary head is [0, z]); for regression (one output) the value."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits.gather(1, logits.argmax(1, keepdim=True))[:, 0] - logits.mean(1)


@contextlib.contextmanager
def _embedding_leaf(model) -> Iterator[dict]:
    """Inside: the backbone's token-embedding output is a leaf that requires a gradient (in
    ``captured["embedding"]``: (S*B, L, d), rows [:B] the forward strand, rows [B:] the RC strand in
    its own frame) and no parameter does (no weight gradient is computed); restored after."""
    captured: dict = {}
    frozen = [(p, p.requires_grad) for p in model.parameters()]

    def hook(module, inputs, output):
        captured["embedding"] = output.detach().requires_grad_(True)
        return captured["embedding"]

    handle = model.backbone.embeddings.register_forward_hook(hook)
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        yield captured
    finally:
        handle.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)


def gradient_times_input(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, K), scores (B, L)) float32 of a classifier on (B, L) ids without padding, in
    the model's current mode.

    ``scores[b, i]``: gradient x input of base i, the gradient of the attribution target (see
    :func:`_attribution_target`) with respect to the token embedding's output, dotted with that
    output (the embedding of the base read there): the one-hot formulation, in which a base's
    one-hot input feeds the embedding of each strand. Both strands count: the RC strand's row is
    flipped back onto the forward positions and added, so a sequence and its reverse complement
    get mirrored scores when the model is strand-invariant (PS, or Ph conjoined).
    """
    with _embedding_leaf(model) as captured, torch.enable_grad(), model_autocast(model):
        logits = model(input_ids)
        (grad,) = torch.autograd.grad(_attribution_target(logits.float()).sum(), captured["embedding"])
        rows = (grad.float() * captured["embedding"].float()).sum(-1)  # (S*B, L)
    batch = input_ids.shape[0]
    scores = rows[:batch] + rows[batch:].flip(-1) if rows.shape[0] == 2 * batch else rows
    return logits.detach().float(), scores.detach()


def saliency_sequences(model, tokens: Sequence[np.ndarray], batch_size: int,
                       progress: Callable[..., None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(logits (K,), gradient x input (L,))] of a classifier for every token array, in input order,
    in eval mode (restored after); batched by length (:func:`gradient_times_input`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list = [None] * len(tokens)
    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(tokens):
        by_length.setdefault(len(t), []).append(i)
    try:
        for length, indexes in by_length.items():
            def compute(ids: torch.Tensor) -> torch.Tensor:
                logits, scores = gradient_times_input(model, ids)
                return torch.cat([logits, scores], dim=1)

            rows = batched([tokens[i] for i in indexes], batch_size, compute, width=model.num_labels + length,
                           device=device, progress=progress)
            for i, row in zip(indexes, rows):
                out[i] = (row[:model.num_labels], row[model.num_labels:])
    finally:
        model.train(was_training)
    return out
