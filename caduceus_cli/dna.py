"""The DNA alphabet of the Caduceus models: characters, token ids and their complements.

Token ids (the official character vocabulary): ``[CLS]``=0 ``[SEP]``=1 ``[BOS]``=2 ``[MASK]``=3
``[PAD]``=4 ``[RESERVED]``=5 ``[UNK]``=6, A=7 C=8 G=9 T=10 N=11. Lowercase (soft-masked) bases are
upper-cased. The other IUPAC ambiguity codes (R Y S W K M B D H V) become N, because the published
models never saw them. Anything else (digits, gaps, RNA's U) is an error, not a silent N.

The complement of a token id swaps A<->T and C<->G; every other id is its own complement.

No torch here (genome readers import this module); numpy is imported when token arrays are made.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .errors import CaduceusError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
CLS, SEP, BOS, MASK, PAD, RESERVED, UNK = range(7)
A, C, G, T, N = 7, 8, 9, 10, 11
BASES = "ACGT"
VOCAB = {**{t: i for i, t in enumerate(SPECIAL_TOKENS)}, "A": A, "C": C, "G": G, "T": T, "N": N}
IUPAC_AMBIGUOUS = "RYSWKMBDHV"
COMPLEMENT = {A: T, C: G, G: C, T: A}  # token id -> its complement (ids not listed: themselves)

_CHAR_COMPLEMENT = str.maketrans("ACGTNacgtnRYSWKMBDHVrykmbdhv", "TGCANtgcanYRSWMKVHDByrmkvhdb")
_INVALID = 255


def complement_ids(size: int) -> list[int]:
    """The complement of every token id ``0 .. size - 1`` (a model's padded vocabulary)."""
    return [COMPLEMENT.get(i, i) for i in range(size)]


@functools.cache
def _tables() -> tuple["np.ndarray", "np.ndarray"]:
    """(byte -> token id, with 255 for a byte that is no nucleotide code; token id -> complement),
    both uint8 lookup tables of 256 entries."""
    import numpy as np

    lut = np.full(256, _INVALID, dtype=np.uint8)
    for ch, token in (("A", A), ("C", C), ("G", G), ("T", T), ("N", N)):
        lut[ord(ch)] = lut[ord(ch.lower())] = token
    for ch in IUPAC_AMBIGUOUS:
        lut[ord(ch)] = lut[ord(ch.lower())] = N
    complement = np.array(complement_ids(256), dtype=np.uint8)
    lut.setflags(write=False)
    complement.setflags(write=False)
    return lut, complement


def encode(sequence: str | bytes, *, source: str = "sequence") -> "np.ndarray":
    """Token ids (uint8 array) of one sequence; raises on a character that is no nucleotide code."""
    import numpy as np

    raw = sequence.encode("ascii", errors="replace") if isinstance(sequence, str) else bytes(sequence)
    ids = _tables()[0][np.frombuffer(raw, dtype=np.uint8)]
    if (ids == _INVALID).any():
        pos = int(np.argmax(ids == _INVALID))
        ch = sequence[pos] if isinstance(sequence, str) else chr(raw[pos])
        raise CaduceusError(
            f"{source}: position {pos + 1}: {ch!r} is not a nucleotide code (expected A C G T N or IUPAC)"
        )
    return ids


def reverse_complement(sequence: str) -> str:
    """Reverse complement of a DNA string; case and IUPAC codes are kept."""
    return sequence.translate(_CHAR_COMPLEMENT)[::-1]


def reverse_complement_tokens(ids: "np.ndarray") -> "np.ndarray":
    """Reverse complement of uint8 token arrays along the last axis: (..., L) -> (..., L)."""
    return _tables()[1][ids[..., ::-1]]
