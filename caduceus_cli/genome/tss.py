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
from .fasta import contig_candidates, open_text

GTF_SUFFIXES = (".gtf", ".gtf.gz", ".gff", ".gff.gz", ".gff3", ".gff3.gz")


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
    path = Path(path)
    if not path.exists():
        raise CaduceusError(f"{path}: no such TSS annotation file (give a BED of TSS or a GTF)")
    if path.is_dir():
        raise CaduceusError(f"{path}: is a folder, not a TSS annotation file")
    raw = _read_gtf(path, feature) if looks_like_gtf(path) else _read_bed(path)
    index = TssIndex(str(path), {c: np.unique(np.asarray(v, dtype=np.int64)) for c, v in raw.items()})
    if not len(index):
        raise CaduceusError(f"{path}: no transcription start sites found"
                            + (f" (no '{feature}' records)" if feature else ""))
    return index


def _read_bed(path: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 3:
                cols = line.split()
            if len(cols) < 3:
                raise CaduceusError(f"{path}: line {lineno}: expected BED columns chrom, start, end; "
                                    f"got {line.strip()[:60]!r}")
            if len(cols) >= 9 and cols[6] in "+-." and cols[3].isdigit() and cols[4].isdigit():
                raise CaduceusError(f"{path}: line {lineno}: looks like GTF/GFF, not BED; "
                                    "name the file .gtf or .gff so it is read as one")
            try:
                start, end = int(cols[1]), int(cols[2])
            except ValueError:
                raise CaduceusError(f"{path}: line {lineno}: start/end {cols[1]!r}, {cols[2]!r} are not "
                                    "integers (is this a BED file?)") from None
            if start < 0 or end < start:
                raise CaduceusError(f"{path}: line {lineno}: invalid interval {start}-{end}")
            strand = cols[5] if len(cols) >= 6 else "."
            tss = end - 1 if (strand == "-" and end - start > 1) else start
            out.setdefault(cols[0], []).append(tss)
    return out


def _read_gtf(path: Path, feature: str | None) -> dict[str, list[int]]:
    by_feature: dict[str, dict[str, list[int]]] = {"transcript": {}, "gene": {}}
    if feature:
        by_feature.setdefault(feature, {})
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 9:
                raise CaduceusError(f"{path}: line {lineno}: expected 9 tab-separated GTF columns, got "
                                    f"{len(cols)}: {line.strip()[:60]!r}")
            if cols[2] not in by_feature:
                continue
            try:
                start, end = int(cols[3]), int(cols[4])
            except ValueError:
                raise CaduceusError(f"{path}: line {lineno}: start/end {cols[3]!r}, {cols[4]!r} are not "
                                    "integers") from None
            if cols[6] not in "+-":
                raise CaduceusError(f"{path}: line {lineno}: strand {cols[6]!r} must be + or - for a TSS")
            tss = start - 1 if cols[6] == "+" else end - 1
            by_feature[cols[2]].setdefault(cols[0], []).append(tss)
    if feature:
        return by_feature[feature]
    return by_feature["transcript"] or by_feature["gene"]
