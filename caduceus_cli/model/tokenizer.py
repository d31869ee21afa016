"""Token ids as torch tensors: batches of sequences, and the reverse complement of id tensors.

The alphabet itself (characters, ids, complements, ``encode``) lives in :mod:`caduceus_cli.dna`,
which has no torch; its names are importable from here too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..dna import (A, BASES, BOS, C, CLS, G, IUPAC_AMBIGUOUS, MASK, N, PAD, RESERVED, SEP, SPECIAL_TOKENS, T, UNK,
                   VOCAB, complement_ids, encode, reverse_complement)
from ..errors import CaduceusError

__all__ = ["A", "BASES", "BOS", "C", "CLS", "G", "IUPAC_AMBIGUOUS", "MASK", "N", "PAD", "RESERVED", "SEP",
           "SPECIAL_TOKENS", "T", "UNK", "VOCAB", "encode", "reverse_complement", "reverse_complement_ids", "tokenize"]


def tokenize(sequences: str | Sequence[str], *, pad: bool = False) -> torch.Tensor:
    """Token ids of a batch of sequences as a (B, L) int64 tensor.

    Sequences must have equal length unless ``pad=True``, which right-pads with ``[PAD]``.
    (Padding changes what a bi-directional model sees; prefer equal-length windows.)
    """
    if isinstance(sequences, (str, bytes)):
        sequences = [sequences]
    arrays = [encode(s, source=f"sequence {i + 1}") for i, s in enumerate(sequences)]
    if not arrays:
        return torch.empty((0, 0), dtype=torch.int64)
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1 and not pad:
        raise CaduceusError(
            f"sequences have different lengths ({min(lengths)}..{max(lengths)} bp): "
            "pass pad=True or cut them to one length"
        )
    out = np.full((len(arrays), max(lengths)), PAD, dtype=np.int64)
    for row, a in zip(out, arrays):
        row[: len(a)] = a
    return torch.from_numpy(out)


def reverse_complement_ids(ids: torch.Tensor, complement_map: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Reverse complement of token ids along the last dimension.

    ``complement_map`` maps every id to its complement (defaults to the official vocabulary).
    """
    if complement_map is None:
        complement_map = complement_ids(16)
    table = torch.as_tensor(list(complement_map) if not isinstance(complement_map, torch.Tensor) else complement_map)
    return table.to(ids.device)[ids.flip(-1)]
