"""BED reader: BED3 or BED6+ (name and strand used), 0-based half-open, streamed line by line.

``track``, ``browser`` and ``#`` lines and blank lines are skipped; gzip/bgzip is read transparently;
``-`` is stdin. Every problem names the file, the line number and the offending value. With
``skip_invalid`` a bad line is skipped and counted instead (see :class:`BedReader`).
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from ..errors import CaduceusError
from .fasta import open_text

STRANDS = ("+", "-", ".")


@dataclass(frozen=True)
class Region:
    """One region: ``contig`` as written in the input, 0-based half-open ``[start, end)``.

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


def _open_text(path: str | os.PathLike, stdin: IO | None = None) -> tuple[IO[str], str, bool]:
    """(text stream, label for messages, whether we own the stream)."""
    if str(path) == "-":
        raw = stdin or sys.stdin
        binary = getattr(raw, "buffer", None)
        if binary is not None:
            head = binary.peek(2)[:2] if hasattr(binary, "peek") else b""
            if head == b"\x1f\x8b":
                return io.TextIOWrapper(gzip.GzipFile(fileobj=binary), encoding="utf-8", errors="replace"), "<stdin>", True
            return io.TextIOWrapper(binary, encoding="utf-8", errors="replace"), "<stdin>", False
        return raw, "<stdin>", False
    p = Path(path)
    if not p.exists():
        raise CaduceusError(f"{p}: no such BED file")
    if p.is_dir():
        raise CaduceusError(f"{p}: is a folder, not a BED file")
    return open_text(p), str(p), True


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CaduceusError(f"{where}: {what} {text!r} is not an integer (BED columns 2-3 are 0-based "
                            "integer coordinates)") from None
    if value < 0:
        raise CaduceusError(f"{where}: {what} {value} is negative (BED coordinates are 0-based, >= 0)")
    return value


def parse_bed_line(line: str, lineno: int, source: str) -> Region | None:
    """The region of one BED line, None for a header/comment/blank line; raises CaduceusError."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.startswith(("#", "track", "browser")):
        return None
    where = f"{source}: line {lineno}"
    fields = text.split("\t") if "\t" in text else text.split()
    if len(fields) < 3:
        raise CaduceusError(f"{where}: expected at least 3 tab-separated columns (contig, start, end), "
                            f"got {len(fields)}: {text[:60]!r}")
    contig = fields[0].strip()
    if not contig:
        raise CaduceusError(f"{where}: empty contig name")
    start = _parse_int(fields[1].strip(), "start", where)
    end = _parse_int(fields[2].strip(), "end", where)
    if start > end:
        raise CaduceusError(f"{where}: start {start} > end {end} (BED is 0-based half-open: start <= end)")
    name = fields[3].strip() if len(fields) > 3 and fields[3].strip() else "."
    strand = fields[5].strip() if len(fields) > 5 and fields[5].strip() else "."
    if strand not in STRANDS:
        raise CaduceusError(f"{where}: strand {strand!r} must be '+', '-' or '.' (BED column 6)")
    return Region(contig, start, end, name, strand, lineno, source)


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
            _open_text(path)[0].close()  # fail now on a missing file, before any work

    def note_invalid(self, message: str) -> None:
        """Count a skipped record (also used for problems found later, e.g. unknown contigs)."""
        self.skipped += 1
        if len(self.first_problems) < 3:
            self.first_problems.append(message)

    def __iter__(self) -> Iterator[Region]:
        stream, label, owned = _open_text(self.path, self.stdin)
        self.label = label
        lineno = 0
        try:
            for lineno, line in enumerate(stream, start=1):
                try:
                    region = parse_bed_line(line, lineno, label)
                except CaduceusError as e:
                    if not self.skip_invalid:
                        raise
                    self.note_invalid(str(e))
                    continue
                if region is not None:
                    yield region
        except (OSError, EOFError, UnicodeError) as e:
            raise CaduceusError(f"{label}: line {lineno + 1}: read failed ({e})") from None
        finally:
            if owned:
                stream.close()


def read_bed(path: str | os.PathLike, skip_invalid: bool = False) -> Iterator[Region]:
    """Stream the regions of a BED file (see :class:`BedReader`)."""
    return iter(BedReader(path, skip_invalid))


def count_bed_records(path: str | os.PathLike) -> int | None:
    """Number of data lines (for a progress bar); None if the file cannot be read cheaply."""
    try:
        stream, _, _ = _open_text(path)
    except CaduceusError:
        return None
    try:
        return sum(1 for line in stream if line.strip() and not line.startswith(("#", "track", "browser")))
    except (OSError, EOFError, UnicodeError):
        return None
    finally:
        stream.close()
