"""BED reader: BED3 or BED6+ (name and strand used), 0-based half-open, streamed line by line.

``track``, ``browser`` and ``#`` lines and blank lines are skipped; gzip/bgzip is read transparently;
``-`` is stdin. Every problem names the file, the line number and the offending value. With
``skip_invalid`` a bad line is skipped and counted instead (see :class:`BedReader`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Iterator

from ..errors import CaduceusError
from .lines import Line, check_input, parse_int, read_lines, split_fields
from .windows import STRANDS

BED_SKIPPED = ("#", "track", "browser")
WHAT = "BED file"


@dataclass(frozen=True)
class BedInterval:
    """One region of a BED file (or a whole FASTA record): ``contig`` as written in the input,
    0-based half-open ``[start, end)`` (1-based ``-r`` regions are :class:`genome.regions.RegionQuery`).

    ``line`` is the 1-based line number in ``source`` (the record number for FASTA input).
    """

    contig: str
    start: int
    end: int
    name: str = "."
    strand: str = "."
    line: int = 0
    source: str = ""
    unit: str = "line"  # "record" for regions that are FASTA records

    @property
    def length(self) -> int:
        return self.end - self.start

    def where(self) -> str:
        """``file: line N`` (or ``file: record N``) for error messages."""
        return f"{self.source}: {self.unit} {self.line}"


def _coordinate(text: str, what: str, where: str) -> int:
    value = parse_int(text, what, where, hint=" (BED columns 2-3 are 0-based integer coordinates)")
    if value < 0:
        raise CaduceusError(f"{where}: {what} {value} is negative (BED coordinates are 0-based, >= 0)")
    return value


def region_of(line: Line) -> BedInterval:
    """The region of one BED data line; raises CaduceusError naming the file, line and value."""
    fields, where = line.fields, line.where
    if len(fields) < 3:
        raise CaduceusError(f"{where}: expected at least 3 tab-separated columns (contig, start, end), "
                            f"got {len(fields)}: {line.text[:60]!r}")
    contig = fields[0].strip()
    if not contig:
        raise CaduceusError(f"{where}: empty contig name")
    start = _coordinate(fields[1], "start", where)
    end = _coordinate(fields[2], "end", where)
    if start > end:
        raise CaduceusError(f"{where}: start {start} > end {end} (BED is 0-based half-open: start <= end)")
    name = fields[3].strip() if len(fields) > 3 and fields[3].strip() else "."
    strand = fields[5].strip() if len(fields) > 5 and fields[5].strip() else "."
    if strand not in STRANDS:
        raise CaduceusError(f"{where}: strand {strand!r} must be '+', '-' or '.' (BED column 6)")
    return BedInterval(contig, start, end, name, strand, line.number, line.source)


def parse_bed_line(line: str, lineno: int, source: str) -> BedInterval | None:
    """The region of one BED line, None for a header/comment/blank line; raises CaduceusError."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.startswith(BED_SKIPPED):
        return None
    return region_of(Line(source, lineno, split_fields(text, None), text))


class BedReader:
    """Iterate the regions of a BED file in input order.

    With ``skip_invalid`` a line that fails to parse is skipped; ``skipped`` counts them and
    ``first_problems`` keeps the first few messages for a summary warning.
    """

    def __init__(self, path: str | os.PathLike, skip_invalid: bool = False, stdin: IO | None = None):
        self.path = path
        self.skip_invalid = skip_invalid
        self.stdin = stdin
        self.skipped = 0
        self.first_problems: list[str] = []
        self.label = "<stdin>" if str(path) == "-" else str(path)
        if str(path) != "-":
            check_input(path, WHAT)  # fail now on a missing file, before any work

    def note_invalid(self, message: str) -> None:
        """Count a skipped record (also used for problems found later, e.g. unknown contigs)."""
        self.skipped += 1
        if len(self.first_problems) < 3:
            self.first_problems.append(message)

    def __iter__(self) -> Iterator[BedInterval]:
        for line in read_lines(self.path, what=WHAT, skip_track=True, stdin=self.stdin):
            self.label = line.source
            try:
                yield region_of(line)
            except CaduceusError as e:
                if not self.skip_invalid:
                    raise
                self.note_invalid(str(e))


def count_bed_records(path: str | os.PathLike) -> int | None:
    """Number of data lines (for the progress total); None if the file cannot be read."""
    try:
        return sum(1 for _ in read_lines(path, what=WHAT, skip_track=True))
    except CaduceusError:
        return None
