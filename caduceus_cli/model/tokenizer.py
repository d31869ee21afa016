"""The official Caduceus character vocabulary, as a lookup table.

Token ids: ``[CLS]``=0 ``[SEP]``=1 ``[BOS]``=2 ``[MASK]``=3 ``[PAD]``=4 ``[RESERVED]``=5 ``[UNK]``=6,
A=7 C=8 G=9 T=10 N=11. Lowercase (soft-masked) bases are upper-cased. The other IUPAC ambiguity codes
(R Y S W K M B D H V) become N, because the published models never saw them. Anything else (digits,
gaps, RNA's U) is an error, not a silent N.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import CaduceusError

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
CLS, SEP, BOS, MASK, PAD, RESERVED, UNK = range(7)
A, C, G, T, N = 7, 8, 9, 10, 11
BASES = "ACGT"
VOCAB = {**{t: i for i, t in enumerate(SPECIAL_TOKENS)}, "A": A, "C": C, "G": G, "T": T, "N": N}
ID_TO_CHAR = {A: "A", C: "C", G: "G", T: "T", N: "N"}
IUPAC_AMBIGUOUS = "RYSWKMBDHV"

_INVALID = 255
_LUT = np.full(256, _INVALID, dtype=np.uint8)
for _ch, _id in (("A", A), ("C", C), ("G", G), ("T", T), ("N", N)):
    _LUT[ord(_ch)] = _LUT[ord(_ch.lower())] = _id
for _ch in IUPAC_AMBIGUOUS:
    _LUT[ord(_ch)] = _LUT[ord(_ch.lower())] = N

_COMPLEMENT = str.maketrans("ACGTNacgtnRYSWKMBDHVrykmbdhv", "TGCANtgcanYRSWMKVHDByrmkvhdb")
_ID_COMPLEMENT = np.arange(256, dtype=np.int64)
_ID_COMPLEMENT[[A, C, G, T]] = [T, G, C, A]


def encode(sequence: str | bytes, *, source: str = "sequence") -> np.ndarray:
    """Token ids (uint8 array) of one sequence; raises on a character that is no nucleotide code."""
    raw = sequence.encode("ascii", errors="replace") if isinstance(sequence, str) else bytes(sequence)
    ids = _LUT[np.frombuffer(raw, dtype=np.uint8)]
    if (ids == _INVALID).any():
        pos = int(np.argmax(ids == _INVALID))
        ch = sequence[pos] if isinstance(sequence, str) else chr(raw[pos])
        raise CaduceusError(
            f"{source}: position {pos + 1}: {ch!r} is not a nucleotide code (expected A C G T N or IUPAC)"
        )
    return ids


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


def detokenize(ids: torch.Tensor | np.ndarray | Iterable[int]) -> str:
    """Sequence of a 1-D id array (specials are written as N)."""
    return "".join(ID_TO_CHAR.get(int(i), "N") for i in ids)


def reverse_complement(sequence: str) -> str:
    """Reverse complement of a DNA string; case and IUPAC codes are kept."""
    return sequence.translate(_COMPLEMENT)[::-1]


def reverse_complement_ids(ids: torch.Tensor, complement_map: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Reverse complement of token ids along the last dimension.

    ``complement_map`` maps every id to its complement (defaults to the official vocabulary).
    """
    table = (
        torch.as_tensor(list(complement_map) if not isinstance(complement_map, torch.Tensor) else complement_map)
        if complement_map is not None
        else torch.from_numpy(_ID_COMPLEMENT[:16].copy())
    ).to(ids.device)
    return table[ids.flip(-1)]
