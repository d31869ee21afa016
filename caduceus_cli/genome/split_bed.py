"""BED files with a split column (chrom start end train|valid|test), as the HyenaDNA / Caduceus hg38
``sequences.bed`` that chooses pretraining and validation intervals."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import CaduceusError
from ..limits import is_ascii_digits
from .lines import parse_int, read_lines

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitInterval:
    """One row: ``contig`` as written, 0-based half-open [start, end), its split, and where it was read."""

    contig: str
    start: int
    end: int
    split: str
    where: str


def read_split_bed(path: str | os.PathLike) -> list[SplitInterval]:
    """The intervals of a split BED in file order; a first line whose start is not a number is a header."""
    out = []
    for line in read_lines(path, what="BED file", skip_track=True):
        cols = line.fields
        if len(cols) < 4:
            raise CaduceusError(f"{line.where}: expected 4 columns (chrom start end split), got "
                                f"{len(cols)}: {line.text.strip()[:60]!r}")
        if line.number == 1 and not is_ascii_digits(cols[1].strip()):
            continue  # a header line
        split = cols[3].strip().lower()
        if split not in SPLITS:
            raise CaduceusError(f"{line.where}: split {cols[3]!r} is not train, valid or test")
        start = parse_int(cols[1], "start", line.where)
        end = parse_int(cols[2], "end", line.where)
        if start < 0 or end <= start:
            raise CaduceusError(f"{line.where}: interval {start}-{end} is empty or negative")
        out.append(SplitInterval(cols[0], start, end, split, line.where))
    return out
