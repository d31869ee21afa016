"""Per-position and pooled features of token batches, with the paper's reverse-complement handling.

- Caduceus-PS: one pass; the RC half of the hidden state is flipped back onto the forward strand
  and the two strands are averaged (the official conjoining of an equivariant model).
- Caduceus-Ph: post-hoc conjoining: a second pass on the reverse-complement input, flipped back
  along length, averaged with the forward pass (``conjoin=False`` turns it off).
"""

from __future__ import annotations

import torch

from ..genome.windows import central_slice
from ..model.caduceus import CaduceusForMaskedLM
from ..model.precision import autocast, model_compute_dtype
from ..model.strands import strand_stack
from ..model.tokenizer import reverse_complement_ids
from .embed.settings import POOLS



def autocast_for(model: CaduceusForMaskedLM, dtype: torch.dtype | None = None):
    """Autocast in ``dtype``, else in the model's compute dtype (``--dtype``), else the default
    policy (bf16 on CUDA, fp32 on CPU): see ``model.precision``."""
    return autocast(model.device, dtype or model_compute_dtype(model))


def _hidden(model, input_ids, layer):
    """Hidden state (B, L, H) at ``layer`` (None/-1: last, after the final norm; k: residual
    stream entering layer k, 0 = embeddings)."""
    if layer is None or layer == -1 or layer == model.config.n_layer:
        hidden, _ = model.caduceus(input_ids, model.backend, False)
        return hidden
    if not -model.config.n_layer <= layer <= model.config.n_layer:
        raise ValueError(f"layer must be in 0..{model.config.n_layer}, got {layer}")
    _, streams = model.caduceus(input_ids, model.backend, True)
    return streams[layer]


@torch.no_grad()
def strand_features(model: CaduceusForMaskedLM, input_ids: torch.Tensor, layer: int | None = None,
                    conjoin: bool = True) -> torch.Tensor:
    """(B, L, d, S) features per position and strand, aligned to the forward strand.

    S = 2 for PS, 2 for Ph with ``conjoin``, 1 for Ph without. Computed in the model's compute dtype.
    """
    with autocast_for(model):
        hidden = _hidden(model, input_ids, layer)
        hidden_rc = None
        if not model.config.rcps and conjoin:
            rc_ids = reverse_complement_ids(input_ids, model.config.complement_list())
            hidden_rc = _hidden(model, rc_ids, layer)
        return strand_stack(hidden, model.config.rcps, hidden_rc).float()


def pool_positions(features: torch.Tensor, pool: str, center_width: int = 0) -> torch.Tensor:
    """Pool (B, L, ...) over positions: mean, max, or center (mean over the central ``center_width``
    positions, grown by one when needed to be symmetric, so that both strands pool the same bases)."""
    if pool == "mean":
        return features.mean(1)
    if pool == "max":
        return features.amax(1)
    if pool == "center":
        return features[:, central_slice(features.shape[1], center_width)].mean(1)
    if pool == "none":
        return features
    raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")


@torch.no_grad()
def embed_tokens(model: CaduceusForMaskedLM, input_ids: torch.Tensor, pool: str = "mean",
                 layer: int | None = None, conjoin: bool = True, center_width: int = 0) -> torch.Tensor:
    """Strand-averaged embeddings: (B, d) pooled, or (B, L, d) with pool='none'. float32."""
    feats = strand_features(model, input_ids, layer, conjoin)  # (B, L, d, S)
    return pool_positions(feats, pool, center_width).mean(-1)
