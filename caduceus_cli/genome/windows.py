"""Windows on a genome: centred windows, tiles, padding at contig ends, strand.

Small pure functions (coordinates 0-based half-open) plus :func:`fetch_window`, which reads a
window from a :class:`~caduceus_cli.genome.fasta.Reference` with N past the contig ends and
reverse-complements minus-strand windows. Used by embed, score-variants, the SVM features and
fine-tuning/predict on BED input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dna import reverse_complement

if TYPE_CHECKING:  # pragma: no cover
    from .fasta import Reference

STRANDS = ("+", "-", ".")


def centred_on(start: int, end: int, window: int | None) -> tuple[int, int]:
    """[start, end) itself (``window`` None), or ``window`` bp centred on its midpoint.

    The result may reach past the contig ends; :func:`fetch_window` pads it with N.
    """
    if window is None:
        return start, end
    left = start + (end - start) // 2 - window // 2
    return left, left + window


def variant_window(pos0: int, window: int) -> tuple[int, int]:
    """The ``window`` bp with the base at 0-based ``pos0`` at index ``window // 2`` (SNP-centred)."""
    start = pos0 - window // 2
    return start, start + window


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` bp covering [0, length), consecutive tiles overlapping by at
    least ``overlap``; the last tile ends exactly at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def tile_cores(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the positions [a, b) it contributes: those for which it is the most central
    tile (boundaries halfway between consecutive tile centres). The cores partition [0, length)."""
    bounds = [0] + [(starts[k] + starts[k + 1] + tile) // 2 for k in range(len(starts) - 1)] + [length]
    return [(bounds[k], bounds[k + 1]) for k in range(len(starts))]


def central_width(length: int, width: int) -> int:
    """Width of the central window of a ``length`` bp sequence: ``width``, plus one when the two
    differ in parity, so that the window is symmetric and a sequence and its reverse complement
    cover the same positions (Caduceus-PS stays exactly RC-invariant under centre pooling)."""
    width = min(max(1, width), length)
    return width + 1 if (length - width) % 2 else width


def central_slice(length: int, width: int) -> slice:
    """The positions of the symmetric central window (see :func:`central_width`)."""
    w = central_width(length, width)
    start = (length - w) // 2
    return slice(start, start + w)


def oriented(sequence: str, strand: str) -> str:
    """``sequence`` as read on ``strand``: reverse-complemented for '-', unchanged for '+' or '.'."""
    if strand == "-":
        return reverse_complement(sequence)
    return sequence


def fetch_window(reference: "Reference", contig: str, start: int, end: int, strand: str = "+") -> tuple[str, int]:
    """(sequence of [start, end) on ``contig`` read on ``strand``, number of N added past the ends).

    ``contig`` must already be the reference's spelling (``reference.resolve_contig``).
    """
    sequence, padded = reference.fetch(contig, start, end)
    return oriented(sequence, strand), padded
