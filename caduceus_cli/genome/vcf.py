"""VCF/BCF in (cyvcf2), with errors that name file, line and value; annotated output is written by
:mod:`.vcf_writer`.

The input is opened once, by htslib: records are read from it, the regions of ``-r``/``-R`` are
checked against its contigs (header and index), and the number of records comes from its index
when there is one (for progress). A text file's header lines are counted once, from the file, to
give records their line numbers (htslib may add header lines of its own).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import CaduceusError
from ..io import quiet_htslib
from .regions import RegionQuery, index_of, require_index

log = logging.getLogger("caduceus")

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


@dataclass
class VcfRecord:
    """What the scorer needs of a record. ``line`` is the 1-based line in a text VCF (a record
    number for BCF), for error messages."""

    chrom: str
    pos: int  # 1-based, as in the VCF
    ref: str
    alts: list[str]
    line: int
    id: str = "."


def _file_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(5)
        except (OSError, EOFError, zlib.error):  # corrupt: htslib says so when it reads the file
            return "gzip"
        return "bcf" if inner[:3] == b"BCF" else "vcf.gz"
    return "bcf" if head[:3] == b"BCF" else "vcf"


class VcfReader:
    """Stream records of a VCF, VCF.gz or BCF ('-' for stdin) with cyvcf2.

    Iterating yields ``(variant, VcfRecord)``; a record htslib cannot parse, or a truncated
    compressed file, raises :class:`CaduceusError` naming the file, the line and the text found.
    """

    def __init__(self, path: str | os.PathLike):
        import cyvcf2

        quiet_htslib()
        self.path = str(path)
        self.label = "<stdin>" if self.path == "-" else self.path
        if self.path != "-":
            p = Path(self.path)
            if not p.exists():
                raise CaduceusError(f"{p}: no such VCF/BCF file")
            if p.is_dir():
                raise CaduceusError(f"{p}: is a folder, not a VCF/BCF file")
            if p.stat().st_size == 0:
                raise CaduceusError(f"{p}: empty file, not a VCF/BCF file")
        try:
            self.vcf = cyvcf2.VCF(self.path, lazy=True, threads=None)
        except OSError:
            raise CaduceusError(f"{self.label}: not a VCF/BCF file{self._first_line_hint()} "
                                "(a VCF starts with '##fileformat=VCF' header lines)") from None
        except Exception:  # cyvcf2: a bare Exception('cannot parse VCF header')
            raise CaduceusError(f"{self.label}: the VCF header cannot be parsed: it needs '##' lines and a "
                                "tab-separated '#CHROM POS ID REF ALT QUAL FILTER INFO' line before the records "
                                "(is the header cut short?)") from None
        self.kind = "stdin" if self.path == "-" else _file_kind(Path(self.path))
        self.raw_header = self.vcf.raw_header
        self.regions: list[RegionQuery] | None = None  # see restrict()
        self.contigs = list(self.vcf.seqnames)  # declared in the header, then those of the index

    def restrict(self, regions: list[RegionQuery]) -> None:
        """Read only the records whose POS lies in one of ``regions`` (records are then numbered,
        not given line numbers). Needs an index."""
        require_index(self.path)
        self.regions = regions

    def record_count(self) -> int | None:
        """How many records will be read, from the index (htslib keeps a count per contig); None
        without an index, from stdin, or with regions (an index counts whole contigs only)."""
        if self.regions or self.path == "-" or self.kind == "vcf" or index_of(self.path) is None:
            return None
        try:
            return int(self.vcf.num_records)
        except (ValueError, OSError):
            return None

    def _first_line_hint(self) -> str:
        if self.path == "-":
            return ""
        try:
            opener = gzip.open if _file_kind(Path(self.path)) != "vcf" else open
            with opener(self.path, "rt", errors="replace") as f:
                first = f.readline().strip()
        except (OSError, EOFError, zlib.error):
            return " (unreadable or truncated compressed file)"
        if re.match(r"^\S+\t\d+\t\d+(\t|$)", first):
            return f": its first line {first[:60]!r} looks like BED"
        return f": first line {first[:60]!r}"

    @property
    def n_header_lines(self) -> int | None:
        """Header lines of a text file (its records are given line numbers); None for stdin, BCF and
        regions, whose records are numbered instead."""
        return None if self.regions else self._text_header_lines

    @functools.cached_property
    def _text_header_lines(self) -> int | None:
        return self._count_header_lines()

    def _count_header_lines(self) -> int | None:
        """Header lines as written in a text file (htslib may add some, e.g. FILTER=PASS), counted
        once, when a line number is first needed; None for stdin and BCF."""
        if self.kind not in ("vcf", "vcf.gz"):
            return None
        n = 0
        try:
            opener = gzip.open if self.kind == "vcf.gz" else open
            with opener(self.path, "rt", errors="replace") as f:
                for text in f:
                    if not text.startswith("#"):
                        break
                    n += 1
        except (OSError, EOFError, zlib.error):
            return self.raw_header.count("\n")
        return n

    def line_of(self, index: int) -> int:
        """1-based line number of the record at 0-based ``index`` (text VCF), else its record number."""
        return (self.n_header_lines or 0) + index + 1

    def where(self, line: int) -> str:
        return f"line {line}" if self.n_header_lines is not None else f"record {line}"

    def _bgzf_truncated(self) -> bool:
        """A complete BGZF file ends with the 28-byte empty EOF block."""
        with open(self.path, "rb") as f:
            f.seek(max(0, os.path.getsize(self.path) - 28))
            return f.read() != BGZF_EOF

    def _failed_line(self, index: int) -> str:
        """Why record ``index`` could not be read: its text, or that the file is truncated."""
        if self.path != "-" and self.kind in ("vcf.gz", "bcf") and self._bgzf_truncated():
            return ": the compressed file is truncated or corrupt"
        if self.n_header_lines is None:
            return ""
        target = self.line_of(index)
        try:
            opener = gzip.open if self.kind == "vcf.gz" else open
            with opener(self.path, "rt", errors="replace") as f:
                for n, text in enumerate(f, start=1):
                    if n == target:
                        return f": {text.rstrip()[:80]!r}"
        except (OSError, EOFError, zlib.error):
            return ": the compressed file is truncated or corrupt"
        return ": the compressed file is truncated or corrupt" if self.kind == "vcf.gz" else ""

    def _variants(self) -> Iterator:
        """cyvcf2's records: all of them, or those whose POS lies in one of the regions."""
        if not self.regions:
            yield from self.vcf
            return
        import warnings

        for region in self.regions:
            found = iter(self.vcf(str(region)))
            with warnings.catch_warnings(record=True) as caught:  # cyvcf2 warns of a contig without records
                warnings.simplefilter("always")
                first = next(found, None)
            if caught and first is None:
                log.warning("%s: no records in region %s (is the contig named so in the VCF?)", self.label, region)
            for variant in itertools.chain([first] if first is not None else [], found):
                if region.holds(variant.POS):
                    yield variant

    def __iter__(self) -> Iterator[tuple[object, VcfRecord]]:
        it = self._variants()
        index = 0
        while True:
            try:
                variant = next(it)
            except StopIteration:
                return
            except Exception:  # cyvcf2 raises a bare Exception on a parse failure
                raise self._malformed(index) from None
            yield variant, self._record(variant, index)
            index += 1

    def _record(self, variant, index: int) -> VcfRecord:
        """The VcfRecord of a cyvcf2 variant. htslib still yields a line it could not parse (a blank
        line, POS not a number, a second #CHROM line) as a record spanning no bases, whose REF must
        not be read (cyvcf2 dereferences a missing allele: a segmentation fault), so it is refused
        first; a REF, ALT or ID that is not UTF-8 is refused too."""
        if variant.end <= variant.start:
            raise self._malformed(index)
        try:
            return VcfRecord(variant.CHROM, int(variant.POS), variant.REF or "", list(variant.ALT),
                             self.line_of(index), variant.ID or ".")
        except UnicodeDecodeError as e:
            raise CaduceusError(f"{self.label}: {self.where(self.line_of(index))}: byte {e.object[e.start:e.end]!r} "
                                "in CHROM, ID, REF or ALT is not text (VCF is UTF-8 text; REF and ALT are "
                                "A, C, G, T, N)") from None

    def _malformed(self, index: int) -> CaduceusError:
        where = self.where(self.line_of(index))
        detail = self._failed_line(index)
        if "truncated" in detail:
            return CaduceusError(f"{self.label}: {where}: cannot read further{detail}; re-download or re-compress it")
        return CaduceusError(f"{self.label}: {where}: malformed VCF record{detail} "
                             "(expected tab-separated CHROM POS ID REF ALT QUAL FILTER INFO)")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.vcf.close()
