"""The stretches of a reference that ism, track and calibrate work on: BED regions, ``-r`` regions
or every contig, checked against the reference before any work (one line naming the file, line
and value for a region that cannot be read)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import CaduceusError
from ...genome.bed import BedReader
from ...genome.regions import END_OF_CONTIG, parse_regions


@dataclass(frozen=True)
class Target:
    """``[start, end)`` (0-based) of ``contig`` (the reference's spelling); ``name``: the BED name,
    or ``contig:start-end`` (1-based) when it has none."""

    contig: str
    start: int
    end: int
    name: str

    @property
    def length(self) -> int:
        return self.end - self.start


def _contig(reference, name: str, where: str) -> str:
    contig = reference.resolve_contig(name)
    if contig is None:
        names = list(reference.contigs)
        shown = ", ".join(names[:5]) + (f" ... ({len(names)} contigs)" if len(names) > 5 else "")
        raise CaduceusError(f"{where}: contig {name!r} is not in {reference.path.name} (it has {shown}): "
                            "wrong genome build?")
    return contig


def _named(contig: str, start: int, end: int, name: str | None = None) -> Target:
    return Target(contig, start, end, name if name and name != "." else f"{contig}:{start + 1}-{end}")


def read_targets(reference, bed: str | os.PathLike | None = None, region: str | None = None,
                 whole: bool = False) -> list[Target]:
    """The targets of ``bed`` (a BED file, in file order) or ``region`` (``-r`` text: chr,
    chr:beg-end, 1-based inclusive, comma-separated), or with ``whole`` every contig of ``reference``.
    An end past the contig is cut at it; an empty region, or one starting past its contig, is refused."""
    if bed is not None and region is not None:
        raise CaduceusError("give BED regions or -r REGION, not both")
    if bed is None and region is None:
        if whole:
            return [_named(c, 0, n, c) for c, n in reference.contigs.items()]
        raise CaduceusError("no regions: give a BED file or -r chrom:start-end")
    targets = []
    if region is not None:
        for query in parse_regions(region):
            contig = _contig(reference, query.contig, f"-r {query}")
            size = reference.contigs[contig]
            if query.beg > size:
                raise CaduceusError(f"-r {query}: starts past the end of {contig} ({size:,} bp)")
            end = size if query.end == END_OF_CONTIG else min(query.end, size)
            targets.append(_named(contig, query.beg - 1, end, None if query.end != END_OF_CONTIG else contig))
        return targets
    reader = BedReader(bed)
    for interval in reader:
        contig = _contig(reference, interval.contig, interval.where())
        size = reference.contigs[contig]
        if interval.length == 0:
            raise CaduceusError(f"{interval.where()}: empty region (start == end == {interval.start})")
        if interval.start >= size:
            raise CaduceusError(f"{interval.where()}: region {interval.contig}:{interval.start}-{interval.end} starts "
                                f"past the end of {contig} ({size:,} bp): wrong genome build?")
        targets.append(_named(contig, interval.start, min(interval.end, size), interval.name))
    if not targets:
        raise CaduceusError(f"{reader.label}: no regions")
    return targets


def merged(targets: list[Target], contigs: dict[str, int]) -> list[Target]:
    """``targets`` in the reference's contig order, sorted, overlapping ones merged (a track has one
    value per base)."""
    order = {c: i for i, c in enumerate(contigs)}
    out: list[Target] = []
    for t in sorted(targets, key=lambda t: (order[t.contig], t.start, t.end)):
        if out and out[-1].contig == t.contig and t.start <= out[-1].end:
            last = out.pop()
            t = _named(t.contig, last.start, max(last.end, t.end))
        out.append(t)
    return out


def overlapping(targets: list[Target]) -> tuple[Target, Target] | None:
    """Two targets that share a base, if any."""
    by_contig: dict[str, list[Target]] = {}
    for t in targets:
        by_contig.setdefault(t.contig, []).append(t)
    for items in by_contig.values():
        items.sort(key=lambda t: t.start)
        for a, b in zip(items, items[1:]):
            if b.start < a.end:
                return a, b
    return None
