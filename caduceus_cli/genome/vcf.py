"""VCF/BCF in (cyvcf2), annotated VCF/BCF/TSV out, with errors that name file, line and value.

Records are passed through as htslib formats them (``str(variant)``); new INFO items are appended
to the INFO column as text, so every original field survives unchanged. Output formats:
- ``vcf``: text, to a file or stdout;
- ``vcf.gz``: BGZF (tabix-indexable, ``.tbi`` with ``write_index``);
- ``bcf``: written as text to a temporary file and converted by htslib at the end (contigs used by
  the records but not declared in the header are declared then, with lengths from the reference);
- ``tsv``: one row per ALT allele.
Every file output goes to a temporary name in the target folder and is renamed when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import itertools
import logging
import os
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import CaduceusError
from ..io import (atomic_file, check_writable, open_file, open_output, reported_os_error,
                  temporary_file, write_error)

log = logging.getLogger("caduceus")

FORMATS = ("vcf", "vcf.gz", "bcf", "tsv")
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def quiet_htslib() -> None:
    """Silence htslib's own stderr messages (cyvcf2 bundles htslib): we report errors ourselves,
    on one line. Warnings such as 'contig not defined in the header' are expected and harmless."""
    try:
        import cyvcf2.cyvcf2 as ext

        ctypes.c_int.in_dll(ctypes.CDLL(ext.__file__), "hts_verbose").value = 0
    except (OSError, ValueError, ImportError):  # pragma: no cover - a different build of cyvcf2
        pass
    try:
        import pysam

        pysam.set_verbosity(0)
    except (ImportError, AttributeError):  # pragma: no cover
        pass


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

    def __init__(self, path: str | os.PathLike, regions: list | None = None):
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
        self.regions = regions  # genome.regions.RegionQuery list: read only records whose POS lies in one
        self.n_header_lines = None if regions else self._count_header_lines()  # records are numbered then
        self.contigs = set(self.vcf.seqnames)

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

    def _count_header_lines(self) -> int | None:
        """Header lines as written in a text file (htslib may add some, e.g. FILTER=PASS); None for
        stdin and BCF, whose records are then numbered instead."""
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


# -- header and record text ------------------------------------------------------------------------

def info_header_line(key: str, number: str, type_: str, description: str) -> str:
    description = description.replace('"', "'")
    return f'##INFO=<ID={key},Number={number},Type={type_},Description="{description}">'


def annotated_header(raw_header: str, info_lines: list[str], meta: dict[str, str], drop_info: set[str],
                     extra_contigs: list[str] | None = None) -> str:
    """The input header with our INFO declarations and ``##caduceus_*`` lines before ``#CHROM``.

    INFO lines for keys in ``drop_info`` and earlier ``##caduceus_`` lines are removed, so that
    re-scoring an annotated file does not declare a field twice.
    """
    lines = [ln for ln in raw_header.rstrip("\n").split("\n") if ln]
    body, chrom = [], None
    for ln in lines:
        if ln.startswith("#CHROM"):
            chrom = ln
            continue
        m = re.match(r"##INFO=<ID=([^,>]+)", ln)
        if (m and m.group(1) in drop_info) or ln.startswith("##caduceus_"):
            continue
        body.append(ln)
    if chrom is None:
        raise CaduceusError("the VCF header has no #CHROM line")
    if extra_contigs:
        last_contig = max((i for i, ln in enumerate(body) if ln.startswith("##contig=")), default=len(body) - 1)
        body[last_contig + 1:last_contig + 1] = extra_contigs
    meta_lines = [f"##caduceus_{k}={' '.join(str(v).split())}" for k, v in meta.items()]
    return "\n".join(body + info_lines + meta_lines + [chrom]) + "\n"


def add_info(line: str, items: list[str], drop_info: set[str]) -> str:
    """Append ``items`` (``KEY=value`` or ``FLAG``) to the INFO column of a VCF text record."""
    cols = line.rstrip("\n").split("\t")
    if len(cols) < 8:
        cols += ["."] * (8 - len(cols))
    old = [] if cols[7] in (".", "") else cols[7].split(";")
    if drop_info:
        old = [kv for kv in old if kv.split("=", 1)[0] not in drop_info]
    new = old + items
    cols[7] = ";".join(new) if new else "."
    return "\t".join(cols) + "\n"


# -- writers ---------------------------------------------------------------------------------------

OUTPUT_SUFFIXES = {".vcf": "vcf", ".vcf.gz": "vcf.gz", ".vcf.bgz": "vcf.gz", ".bcf": "bcf", ".tsv": "tsv",
                   ".tsv.gz": "tsv", ".tsv.bgz": "tsv"}  # file name ending -> format (io.output_format)


class SortedCheck:
    """For ``--write-index``: refuses, at the first record out of order, input that tabix or
    bcftools could not index (records of a contig together, positions not decreasing)."""

    def __init__(self, source: str, where):
        self.source, self.where = source, where
        self.last: tuple[str, int] | None = None
        self.finished: set[str] = set()

    def __call__(self, chrom: str, pos: int, line: int) -> None:
        last = self.last
        if last is not None and (pos < last[1] if chrom == last[0] else chrom in self.finished):
            raise CaduceusError(f"{self.source}: {self.where(line)}: {chrom}:{pos} comes after {last[0]}:{last[1]}: "
                                "--write-index needs records sorted by contig and position; sort the input "
                                "(`bcftools sort`) or leave out --write-index")
        if last is not None and chrom != last[0]:
            self.finished.add(last[0])
        self.last = (chrom, pos)


class RecordSink:
    """Where annotated text goes: ``write(text)``; leaving the ``with`` block finishes the output
    (BCF conversion, index) and commits it through io's atomic outputs.

    Leaving it with an exception leaves no output and no temporary file. ``vcf.gz``, and TSV under
    a ``.gz`` name, are BGZF; '-' is stdout.
    """

    def __init__(self, path: str, fmt: str, write_index: bool = False, contig_lengths: dict[str, int] | None = None):
        self.path, self.fmt, self.write_index = str(path), fmt, write_index
        self.contig_lengths = contig_lengths or {}
        self.seen_contigs: dict[str, None] = {}
        if write_index and fmt not in ("vcf.gz", "bcf"):
            raise CaduceusError("--write-index needs a .vcf.gz or .bcf output (-o FILE)")
        if self.path != "-":
            check_writable(self.path)
        self._outputs = contextlib.ExitStack()  # the output and its temporaries
        self._streams = contextlib.ExitStack()  # the text stream, closed before the output is finished

    @property
    def index_path(self) -> str:
        return self.path + (".csi" if self.fmt == "bcf" else ".tbi")

    def __enter__(self) -> "RecordSink":
        if self.path == "-":
            self._stream = self._outputs.enter_context(open_output("-"))
            return self
        if self.write_index:  # committed right after the output (exit callbacks run last-in, first-out)
            self._index_tmp = self._outputs.enter_context(temporary_file(self.index_path))
            self._outputs.push(self._commit_index)
        self._tmp = self._outputs.enter_context(atomic_file(self.path))
        self._text = self._outputs.enter_context(temporary_file(self.path, ".vcf")) if self.fmt == "bcf" else self._tmp
        compress = self.fmt == "vcf.gz" or (self.fmt == "tsv" and self.path.lower().endswith((".gz", ".bgz")))
        self._stream = self._streams.enter_context(open_file(self._text, "w", compress=compress))
        return self

    def write(self, text: str) -> None:
        self._stream.write(text)

    def note_contig(self, chrom: str) -> None:
        self.seen_contigs.setdefault(chrom)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._streams.__exit__(exc_type, exc, tb)
            if exc_type is None and self.path != "-":
                if self.fmt == "bcf":
                    self._convert_to_bcf()
                if self.write_index:
                    self._index()
        except BaseException:
            if not self._outputs.__exit__(*sys.exc_info()):
                raise
            return
        self._outputs.__exit__(exc_type, exc, tb)  # commits the output, or removes it with the temporaries

    def _commit_index(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with atomic_file(self.index_path) as tmp:
                os.replace(self._index_tmp, tmp)

    def _convert_to_bcf(self) -> None:
        import cyvcf2

        reader = cyvcf2.VCF(str(self._text), lazy=True)
        declared = set(reader.seqnames)
        for chrom in self.seen_contigs:
            if chrom not in declared:
                length = self.contig_lengths.get(chrom)
                reader.add_to_header(f"##contig=<ID={chrom}" + (f",length={length}>" if length else ">"))
        writer = cyvcf2.Writer(str(self._tmp), reader, mode="wb")
        try:
            for variant in reader:
                writer.write_record(variant)
        finally:
            writer.close()
            reader.close()

    def _index(self) -> None:
        """The .tbi (vcf.gz) or .csi (bcf) of the finished temporary output, into its own temporary."""
        if self.fmt == "vcf.gz":
            import pysam

            try:
                pysam.tabix_index(str(self._tmp), preset="vcf", force=True, keep_original=True,
                                  index=str(self._index_tmp))
            except OSError as e:  # pysam says only 'building of index for <temporary> failed'
                raise self._index_failed(e) from None
            return
        import cyvcf2.cyvcf2 as ext

        lib = ctypes.CDLL(ext.__file__)
        lib.bcf_index_build3.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        if lib.bcf_index_build3(str(self._tmp).encode(), str(self._index_tmp).encode(), 14, 0) != 0:
            raise self._index_failed(OSError("bcf_index_build3 failed"))

    def _index_failed(self, error: OSError) -> CaduceusError:
        """Records were checked to be sorted as they were written: a full disk is the likely cause."""
        found = reported_os_error(RuntimeError(str(error)), self.index_path)  # looks at the disk itself
        if found is not None:
            return write_error(self.index_path, found)
        return CaduceusError(f"{self.index_path}: could not build the index of {self.path} (is its folder writable "
                             "and is there space left?)")
