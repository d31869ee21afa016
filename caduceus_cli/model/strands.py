"""The two strands of a Caduceus hidden state, and pooling over positions.

- PS hidden states carry both strands side by side (forward channels, then the reverse-complement
  strand flipped along length and channels); Ph models see the reverse complement in a second pass.
- :func:`strand_stack` lines the strands up per position; :func:`pool_rows` pools each row over its
  valid positions with one vocabulary of poolings (``choices.POOLINGS``).

The classifier head uses these functions; so does ``pipelines/inference.py`` for every pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..choices import POOLINGS

if TYPE_CHECKING:  # pragma: no cover
    from .caduceus import CaduceusBackbone


def rc_hidden(x: torch.Tensor) -> torch.Tensor:
    """Reverse complement of a PS hidden tensor (..., L, C): flip length and channels."""
    return x.flip(-2, -1)


def split_strands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[-1] // 2
    return x[..., :d], x[..., d:]



def strand_stack(hidden: torch.Tensor, rcps: bool, hidden_rc: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, d, 2): the forward-strand features and the RC-strand features aligned to them.

    PS: the two halves of ``hidden``; the RC half is stored position-aligned with the input but
    channel-reversed, so only its channels are flipped. (The official classifier flips length too,
    which puts the RC strand in the RC frame: the same for mean/max pooling, but position i would
    then meet position L-1-i, which is wrong for first/last/centre pooling and per-position output.)
    Ph with post-hoc conjoining: ``hidden`` and the hidden state of the RC input flipped along length.
    """
    if rcps:
        fwd, rc = split_strands(hidden)
        return torch.stack([fwd, rc.flip(-1)], dim=-1)
    if hidden_rc is None:
        return hidden.unsqueeze(-1)
    return torch.stack([hidden, hidden_rc.flip(-2)], dim=-1)


def reverse_complement_padded(input_ids: torch.Tensor, lengths: torch.Tensor | None, complement_map: torch.Tensor,
                              pad_id: int) -> torch.Tensor:
    """(B, L) ids -> the reverse complement of each row's first ``lengths[b]`` ids, right-padded with
    ``pad_id`` as the input is (plain reverse complement of every row when ``lengths`` is None)."""
    if lengths is None:
        return complement_map[input_ids.flip(-1)]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    source = (lengths[:, None] - 1 - positions).clamp(min=0)
    out = complement_map[input_ids.gather(1, source)]
    return out.masked_fill(positions >= lengths[:, None], pad_id)


def pooling_window(length: torch.Tensor, how: str, center_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset, width) of the positions pooled in a valid span of ``length`` positions.

    ``center`` keeps ``center_width`` positions (at least one, at most the span), grown by one when
    its parity differs from the span's, so that the window is symmetric and a strand and its reverse
    complement pool the same bases (``genome.windows.central_slice`` for one length);
    ``first``/``last`` take one position, ``mean``/``max`` the whole span.
    """
    center_width = max(1, center_width)
    if how in ("mean", "max"):
        return torch.zeros_like(length), length
    if how == "first":
        return torch.zeros_like(length), torch.ones_like(length)
    if how == "last":
        return length - 1, torch.ones_like(length)
    if how == "center":
        width = torch.minimum(length, center_width + (length - center_width) % 2)
        return (length - width) // 2, width
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {how!r}")


def pool_rows(rows: torch.Tensor, how: str, lengths: torch.Tensor | None = None, mirrored: bool = False,
              center_width: int = 1) -> torch.Tensor:
    """Pool (R, L, ...) rows over positions -> (R, ...), counting only each row's valid positions.

    Row r holds ``lengths[r]`` valid positions (all L when None): the first ones, or with
    ``mirrored`` the last ones (a right-padded row read in the opposite direction). Pads never
    enter the result. Rows with ``lengths`` are (R, L, d).
    """
    width_all = rows.shape[1]
    if lengths is None:  # one window for every row: a slice
        offset, width = pooling_window(torch.tensor([width_all]), how, center_width)
        a, w = int(offset[0]), int(width[0])
        return rows[:, a:a + w].amax(1) if how == "max" else rows[:, a:a + w].mean(1)
    length = lengths.to(rows.device)
    offset, width = pooling_window(length, how, center_width)
    start = (width_all - length if mirrored else torch.zeros_like(length)) + offset
    positions = torch.arange(width_all, device=rows.device)
    inside = (positions >= start[:, None]) & (positions < (start + width)[:, None])  # (R, L)
    if how == "max":
        return rows.masked_fill(~inside[..., None], float("-inf")).amax(1)
    weights = inside.to(rows.dtype) / width[:, None].to(rows.dtype)
    return torch.einsum("rl,rld->rd", weights, rows)


def pooled_strand_features(backbone: "CaduceusBackbone", input_ids: torch.Tensor, lengths: torch.Tensor | None = None,
                           *, pooling: str = "mean", center_width: int = 1, conjoin: bool = True,
                           backend: str = "auto") -> torch.Tensor:
    """(B, S, d): pooled last hidden state of each strand of each sequence, every strand read
    5'->3' in its own frame (S = 2: PS, or Ph with ``conjoin``; S = 1: Ph forward only).

    ``input_ids`` (B, L) right-padded with [PAD] beyond ``lengths``; the reverse strand is the
    reverse complement of each unpadded sequence, padded the same way, so a sequence and its
    reverse complement give the same strands and features that do not depend on the strand.
    """
    config = backbone.config
    two_strands = config.rcps or conjoin
    rc_ids = None
    if two_strands:
        rc_ids = reverse_complement_padded(input_ids, lengths, backbone.complement_ids, config.pad_token_id)
    rows, mirrored = backbone.strand_states(input_ids, rc_ids, backend)
    row_lengths = None if lengths is None else lengths.repeat(rows.shape[0] // input_ids.shape[0])
    pooled = pool_rows(rows, pooling, row_lengths, mirrored, center_width)  # (S*B, d)
    return pooled.view(-1, input_ids.shape[0], pooled.shape[-1]).transpose(0, 1)
