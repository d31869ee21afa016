"""Transcription start sites: read a BED of TSS or a GENCODE/Ensembl GTF, ask for the nearest one.

Coordinates are converted once, here: every TSS is a 0-based position.
- BED (0-based half-open): a 1-bp record is its own TSS; a longer interval is a gene or transcript
  whose TSS is ``start`` on the + strand (or without a strand column) and ``end - 1`` on the - strand.
- GTF (1-based closed): ``transcript`` records (or ``gene`` records when the file has no
  transcripts, or whatever ``feature`` says): TSS = start - 1 on +, end - 1 on -.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CaduceusError
from ..limits import is_ascii_digits
from .bed import region_of
from .fasta import contig_candidates
from .lines import check_input, parse_int, read_lines
from .windows import STRANDS

GTF_SUFFIXES = (".gtf", ".gtf.gz", ".gff", ".gff.gz", ".gff3", ".gff3.gz")
WHAT = "TSS annotation file"


@dataclass
class TssIndex:
    """Sorted TSS positions per contig; ``nearest(contig, pos)`` -> distance in bp or None."""

    path: str
    positions: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(sum(len(v) for v in self.positions.values()))

    def resolve(self, contig: str) -> str | None:
        if contig in self.positions:
            return contig
        return next((c for c in contig_candidates(contig) if c in self.positions), None)

    def nearest(self, contig: str, pos0: int) -> int | None:
        """Distance (bp) from the 0-based position ``pos0`` to the nearest TSS on ``contig``;
        None when the annotation has no TSS on that contig."""
        name = self.resolve(contig)
        if name is None:
            return None
        sites = self.positions[name]
        i = int(np.searchsorted(sites, pos0))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(sites):
                d = abs(int(sites[j]) - pos0)
                best = d if best is None or d < best else best
        return best

    def nearest_many(self, contig: str, pos0: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`nearest`; -1 where the contig has no TSS."""
        pos0 = np.asarray(pos0, dtype=np.int64)
        name = self.resolve(contig)
        if name is None:
            return np.full(pos0.shape, -1, dtype=np.int64)
        sites = self.positions[name]
        i = np.searchsorted(sites, pos0)
        left = sites[np.clip(i - 1, 0, len(sites) - 1)]
        right = sites[np.clip(i, 0, len(sites) - 1)]
        return np.minimum(np.abs(pos0 - left), np.abs(right - pos0))


def looks_like_gtf(path: Path) -> bool:
    return str(path).lower().endswith(GTF_SUFFIXES)


def read_tss(path: str | os.PathLike, feature: str | None = None) -> TssIndex:
    """Read TSSs from a BED or a GTF (plain or gzip); the format is taken from the name
    (``.gtf``/``.gff`` -> GTF) and confirmed by the content."""
    path = check_input(path, WHAT)
    raw = _read_gtf(path, feature) if looks_like_gtf(path) else _read_bed(path)
    index = TssIndex(str(path), {c: np.unique(np.asarray(v, dtype=np.int64)) for c, v in raw.items()})
    if not len(index):
        raise CaduceusError(f"{path}: no transcription start sites found"
                            + (f" (no '{feature}' records)" if feature else ""))
    return index


def _looks_like_gtf_line(fields: list[str]) -> bool:
    return len(fields) >= 9 and fields[6] in STRANDS and is_ascii_digits(fields[3]) and is_ascii_digits(fields[4])


def _read_bed(path: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in read_lines(path, what=WHAT, skip_track=True):
        if _looks_like_gtf_line(line.fields):
            raise CaduceusError(f"{line.where}: looks like GTF/GFF, not BED; "
                                "name the file .gtf or .gff so it is read as one")
        region = region_of(line)
        tss = region.end - 1 if (region.strand == "-" and region.length > 1) else region.start
        out.setdefault(region.contig, []).append(tss)
    return out


def _read_gtf(path: Path, feature: str | None) -> dict[str, list[int]]:
    by_feature: dict[str, dict[str, list[int]]] = {"transcript": {}, "gene": {}}
    if feature:
        by_feature.setdefault(feature, {})
    for line in read_lines(path, what=WHAT, sep="\t"):
        cols = line.fields
        if len(cols) < 9:
            raise CaduceusError(f"{line.where}: expected 9 tab-separated GTF columns, got "
                                f"{len(cols)}: {line.text[:60]!r}")
        if cols[2] not in by_feature:
            continue
        start = parse_int(cols[3], "start", line.where)
        end = parse_int(cols[4], "end", line.where)
        if cols[6] not in ("+", "-"):
            raise CaduceusError(f"{line.where}: strand {cols[6]!r} must be + or - for a TSS")
        tss = start - 1 if cols[6] == "+" else end - 1
        by_feature[cols[2]].setdefault(cols[0], []).append(tss)
    if feature:
        return by_feature[feature]
    return by_feature["transcript"] or by_feature["gene"]
