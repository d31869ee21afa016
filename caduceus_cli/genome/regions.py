"""Regions of an indexed VCF/BCF to read (``-r``/``-R`` of score-variants, as in bcftools).

- ``-r chr``, ``chr:pos``, ``chr:beg-end``, ``chr:beg-`` (1-based, inclusive), several separated by
  commas;
- ``-R FILE``: ``chrom pos`` or ``chrom beg end`` per line (1-based, inclusive), or a BED file
  (``.bed``/``.bed.gz``: 0-based, half-open).

A record is read when its POS lies in a region (bcftools ``--regions-overlap pos``), so that
adjacent regions of a scattered run never read a record twice. Regions are kept contig by contig
in the order they are first named, sorted and merged within a contig. Regions need an index: an
unindexed input is refused with the command that makes one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from ..errors import CaduceusError
from .lines import parse_int, read_lines

_RANGE = re.compile(r"^(?P<beg>[0-9]+)(?:(?P<dash>-)(?P<end>[0-9]*))?$")  # ASCII digits only
END_OF_CONTIG = (1 << 31) - 1  # htslib's largest position in a region string


@dataclass(frozen=True)
class RegionQuery:
    """A region of an indexed file to read: ``contig`` from ``beg`` to ``end``, 1-based inclusive
    (as ``-r chr:beg-end``; BED intervals, 0-based half-open, are :class:`genome.bed.BedInterval`)."""

    contig: str
    beg: int
    end: int

    def __str__(self) -> str:
        return self.contig if (self.beg, self.end) == (1, END_OF_CONTIG) else f"{self.contig}:{self.beg}-{self.end}"

    def holds(self, pos: int) -> bool:
        return self.beg <= pos <= self.end


def parse_region(text: str, where: str = "-r", contigs: Collection[str] | None = None) -> RegionQuery:
    """One ``chr``, ``chr:pos``, ``chr:beg-end`` or ``chr:beg-`` (the last colon separates the
    contig from the range, so contig names may hold colons). Given the input's ``contigs``, text
    with a colon is a whole contig name only when the input has that contig, as in htslib."""
    text = text.strip()
    contig, colon, span = text.rpartition(":")
    match = _RANGE.match(span) if colon else None
    if not match:
        if not text:
            raise CaduceusError(f"{where}: empty region (give chr, chr:pos or chr:beg-end, comma-separated)")
        if colon and contigs is not None and text not in contigs:
            raise CaduceusError(f"{where}: {text}: {span!r} is not a position or range and {text!r} is not a contig "
                                "of the VCF (give chr, chr:pos or chr:beg-end, 1-based, comma-separated)")
        return RegionQuery(text, 1, END_OF_CONTIG)
    beg = parse_int(match["beg"], "start", f"{where}: {text}", minimum=1)
    end_text = match["end"] or ""
    end = beg if not match["dash"] else (parse_int(end_text, "end", f"{where}: {text}") if end_text else END_OF_CONTIG)
    if end < beg:
        raise CaduceusError(f"{where}: {text}: end {end} is before start {beg} (regions are 1-based, inclusive)")
    return RegionQuery(contig, beg, end)


def parse_regions(text: str, contigs: Collection[str] | None = None) -> list[RegionQuery]:
    """The regions of a ``-r`` value (comma-separated); see :func:`parse_region` for ``contigs``."""
    contigs = None if contigs is None else set(contigs)
    return merge([parse_region(p, contigs=contigs) for p in text.split(",")])


def read_regions_file(path: str | os.PathLike) -> list[RegionQuery]:
    """Regions from ``-R FILE``: ``chrom pos``/``chrom beg end`` (1-based) or BED (0-based, by name)."""
    bed = str(path).lower().endswith((".bed", ".bed.gz", ".bed.bgz"))
    regions = []
    for line in read_lines(path, what="regions file", skip_track=bed):
        fields = line.fields
        if len(fields) < 2:
            raise CaduceusError(f"{line.where}: expected chrom and pos (or chrom beg end), got {line.text[:60]!r}")
        first = parse_int(fields[1], "start" if bed else "pos", line.where, minimum=0 if bed else 1)
        last = parse_int(fields[2], "end", line.where) if len(fields) > 2 else first + bed
        beg, end = (first + 1, last) if bed else (first, last)
        if end < beg:
            raise CaduceusError(f"{line.where}: end {last} is before start {first}")
        regions.append(RegionQuery(fields[0], beg, end))
    if not regions:
        raise CaduceusError(f"{path}: no regions")
    return merge(regions)


def merge(regions: list[RegionQuery]) -> list[RegionQuery]:
    """Contig by contig in the order first named; sorted and overlapping or adjacent ones merged."""
    by_contig: dict[str, list[RegionQuery]] = {}
    for region in regions:
        by_contig.setdefault(region.contig, []).append(region)
    merged = []
    for contig, items in by_contig.items():
        items.sort(key=lambda r: r.beg)
        current = items[0]
        for r in items[1:]:
            if r.beg <= current.end + 1:
                current = RegionQuery(contig, current.beg, max(current.end, r.end))
            else:
                merged.append(current)
                current = r
        merged.append(current)
    return merged


def index_of(path: str | os.PathLike) -> Path | None:
    """The .tbi or .csi index beside a bgzip VCF or a BCF, if there is one."""
    for suffix in (".tbi", ".csi"):
        candidate = Path(str(path) + suffix)
        if candidate.is_file():
            return candidate
    return None


def require_index(path: str | os.PathLike) -> None:
    """Refuse ``-r``/``-R`` on input that has no index (or cannot have one: stdin, plain text)."""
    if str(path) == "-":
        raise CaduceusError("-r/-R need an indexed VCF/BCF file, not stdin")
    if index_of(path) is not None:
        return
    name = Path(path).name
    if name.lower().endswith(".bcf"):
        hint = f"index it with `bcftools index {path}`"
    elif name.lower().endswith((".gz", ".bgz")):
        hint = f"index it with `tabix -p vcf {path}` (or `bcftools index -t {path}`)"
    else:
        hint = f"compress and index it: `bgzip {path} && tabix -p vcf {path}.gz`"
    raise CaduceusError(f"{path}: -r/-R need an indexed VCF/BCF and there is no {name}.tbi or {name}.csi: {hint}")
