"""Annotated VCF, BCF or TSV out, committed atomically, with its index built as it is finished.

Records arrive as text: a VCF line as htslib formats it, with our INFO items appended (the lines
cross torchrun ranks and ``--resume`` files as text), or the TSV rows of a record.

- ``vcf``: the lines as they are, to a file or stdout;
- ``vcf.gz``: the lines through htslib's BGZF writer (pysam), as bgzip writes them;
- ``bcf``: cyvcf2's Writer: htslib parses each line against the output header, in memory, and
  encodes it. cyvcf2 rather than pysam's VariantFile, because pysam cannot make a record from a VCF
  line (each INFO and sample value would have to be rebuilt as Python objects), while cyvcf2 reads
  the input and hands htslib the line it formatted. A BCF header must declare every contig before
  the first record, so the contigs of the input (header and index) and of the reference are
  declared up front;
- ``tsv``: the rows (BGZF under a .gz or .bgz name).

With ``write_index`` the ``.tbi`` (vcf.gz) or ``.csi`` (bcf) is built by htslib (pysam's bcftools)
when the finished file is closed, into a temporary renamed just before the output: an index that
cannot be built or put in place leaves neither file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from pathlib import Path
from typing import Callable

from ..errors import CaduceusError
from ..io import (atomic_file, check_writable, final_path, is_special, open_file, open_output, output_format,
                  quiet_htslib, reported_os_error, temporary_file, write_error)
from .vcf import BGZF_EOF

FORMATS = ("vcf", "vcf.gz", "bcf", "tsv")
INDEXED = {"vcf.gz": ".tbi", "bcf": ".csi"}

OUTPUT_SUFFIXES = {".vcf": "vcf", ".vcf.gz": "vcf.gz", ".vcf.bgz": "vcf.gz", ".bcf": "bcf", ".tsv": "tsv",
                   ".tsv.gz": "tsv", ".tsv.bgz": "tsv"}  # file name ending -> format (io.output_format)


def variant_output_format(path: str, fmt: str | None) -> str:
    """The format of score-variants' output (io.output_format; stdout, a device or a pipe: vcf
    unless told tsv); compressed formats need a file."""
    fmt = output_format(path, fmt, OUTPUT_SUFFIXES, stream="vcf")
    if str(path) == "-" and fmt in ("vcf.gz", "bcf"):
        raise CaduceusError(f"--format {fmt} needs -o FILE; for stdout pipe plain VCF into bgzip or bcftools")
    return fmt


def index_path(path: str, fmt: str) -> str:
    return str(path) + INDEXED.get(fmt, ".tbi")


def check_output(path: str, fmt: str, write_index: bool) -> None:
    """Refuse, before any work, an output that cannot be written or whose index could not be put
    beside it (a folder in the way)."""
    if write_index and (fmt not in INDEXED or path == "-" or is_special(path)):
        raise CaduceusError("--write-index needs a .vcf.gz or .bcf output file (-o FILE)")
    if path == "-":
        return
    check_writable(path)
    if write_index:
        index = index_path(path, fmt)
        if final_path(index).is_dir():
            raise CaduceusError(f"{index}: a folder is in the way of the index of {path}; move it away, or leave "
                                "out --write-index")
        check_writable(index)


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


def contig_lines(raw_header: str, vcf_contigs: list[str], reference: dict[str, int]) -> list[str]:
    """The ``##contig`` lines a BCF header needs beyond the input's: the contigs the input names
    (its header and index), then those of the reference that it names under no spelling; lengths
    from the reference."""
    from .fasta import contig_candidates

    declared = set(_declared(raw_header)["contig"])
    named = set(vcf_contigs)
    more = [c for c in reference if c not in named and not any(alt in named for alt in contig_candidates(c))]
    lines = []
    for name in [*vcf_contigs, *more]:
        if name in declared:
            continue
        declared.add(name)
        length = reference.get(name) or next((reference[a] for a in contig_candidates(name) if a in reference), None)
        lines.append(f"##contig=<ID={name}" + (f",length={length}>" if length else ">"))
    return lines


def _declared(header: str) -> dict[str, set[str]]:
    """The IDs a header declares, by kind (contig, INFO, FILTER, FORMAT)."""
    found: dict[str, set[str]] = {"contig": set(), "INFO": set(), "FILTER": {"PASS"}, "FORMAT": set()}
    for kind, key in re.findall(r"^##(contig|INFO|FILTER|FORMAT)=<ID=([^,>]+)", header, re.M):
        found[kind].add(key)
    return found


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
    """Where the output goes: ``header`` first, then ``write(chrom, text, line)`` per record;
    leaving the ``with`` block finishes the output (and its index) and commits it through io's
    atomic outputs. Leaving it with an exception leaves no output, no index and no temporary file.
    ``source`` and ``where(line)`` name the input record in errors."""

    def __init__(self, path: str, fmt: str, header: str, *, write_index: bool = False, source: str = "<input>",
                 where: Callable[[int], str] = lambda line: f"line {line}"):
        self.path, self.fmt, self.header, self.write_index = str(path), fmt, header, write_index
        self.source, self.where = source, where
        check_output(self.path, fmt, write_index)
        self._outputs = contextlib.ExitStack()  # the output, its index and their temporaries
        self._streams = contextlib.ExitStack()  # the writer, closed before the output is finished
        self._bcf: _BcfWriter | None = None

    @property
    def index_path(self) -> str:
        return index_path(self.path, self.fmt)

    def __enter__(self) -> "RecordSink":
        try:
            self._open()
        except BaseException:  # a full disk at the header: as an error inside the block
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _open(self) -> None:
        if self.path == "-":
            self._stream = self._outputs.enter_context(open_output("-"))
            self._stream.write(self.header)
            return
        self._tmp = self._outputs.enter_context(atomic_file(self.path))
        if self.write_index:  # put in place before the output (exit callbacks run last-in, first-out)
            self._index_tmp = self._outputs.enter_context(temporary_file(self.index_path))
            self._outputs.push(self._commit_index)
        if self.fmt == "bcf":
            self._bcf = _BcfWriter(self._tmp, self.header, self.path, self.source)
            self._streams.push(lambda exc_type, exc, tb: self._bcf.close(complete=exc_type is None))
            return
        compress = self.fmt == "vcf.gz" or (self.fmt == "tsv" and self.path.lower().endswith((".gz", ".bgz")))
        self._stream = self._streams.enter_context(open_file(self._tmp, "w", compress=compress))
        self._stream.write(self.header)

    def write(self, chrom: str, text: str, line: int) -> None:
        if self._bcf is not None:
            self._bcf.write(chrom, text, lambda: f"{self.source}: {self.where(line)}")
        else:
            self._stream.write(text)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._streams.__exit__(exc_type, exc, tb)
            if exc_type is None and self.write_index:
                self._build_index()
        except BaseException:
            if not self._outputs.__exit__(*sys.exc_info()):
                raise
            return
        self._outputs.__exit__(exc_type, exc, tb)  # commits the index and the output, or removes them

    def _commit_index(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with atomic_file(self.index_path) as tmp:
                os.replace(self._index_tmp, tmp)

    def _build_index(self) -> None:
        """The .tbi (vcf.gz) or .csi (bcf) of the finished temporary output, into its own temporary."""
        import pysam.utils
        from pysam import bcftools

        kind = "--csi" if self.fmt == "bcf" else "--tbi"
        try:
            bcftools.index(kind, "--force", "--output", str(self._index_tmp), str(self._tmp))
        except pysam.utils.SamtoolsError as e:
            found = reported_os_error(RuntimeError(str(e)), self.index_path)  # a full disk is recognised by looking
            if found is not None:
                raise write_error(self.index_path, found) from None
            raise CaduceusError(f"{self.index_path}: could not build the index of {self.path}: "
                                f"{_last_words(str(e))}") from None


def _last_words(message: str) -> str:
    """The gist of what bcftools said (its stderr is kept in the exception's text)."""
    said = message.split("stderr=", 1)[-1].strip().strip("'\"").replace("\\n", "\n")
    lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "bcftools index failed"


class _BcfWriter:
    """cyvcf2's Writer in BCF mode. It returns bcf_write's status but not hts_close's, so a finished
    file is recognised by its BGZF end-of-file block; a record on a contig, or with an INFO, FILTER
    or FORMAT key, that the header does not declare is refused (htslib would write a broken file)."""

    def __init__(self, tmp: Path, header: str, label: str, source: str):
        import cyvcf2

        quiet_htslib()
        self.tmp, self.label = tmp, label
        self.declared = _declared(header)
        try:
            self.writer = cyvcf2.Writer.from_string(str(tmp), header, "wb")
        except Exception:  # cyvcf2 raises a bare Exception naming the whole header
            raise CaduceusError(f"{source}: htslib cannot write its header as BCF; write .vcf.gz instead") from None

    def write(self, chrom: str, text: str, where: Callable[[], str]) -> None:
        if chrom not in self.declared["contig"]:
            raise CaduceusError(f"{where()}: contig {chrom!r} is declared neither in the VCF header nor in the "
                                "reference, and BCF declares every contig before its records: add a ##contig line "
                                "(or index the input), or write .vcf.gz")
        try:
            variant = self.writer.variant_from_string(text.rstrip("\n"))
            status = self.writer.write_record(variant)
        except Exception:  # cyvcf2: an error code of htslib's parser, as a bare Exception
            raise CaduceusError(f"{where()}: {self._undeclared(text)} not declared in the VCF header, and BCF "
                                "declares every key before its records: add the ##INFO/##FILTER/##FORMAT lines "
                                "(`bcftools annotate --header-lines`), or write .vcf.gz") from None
        if status is not None and status < 0:
            raise self._failed()

    def _undeclared(self, text: str) -> str:
        cols = text.rstrip("\n").split("\t")
        keys = {"INFO": [kv.split("=", 1)[0] for kv in cols[7].split(";")] if len(cols) > 7 else [],
                "FILTER": cols[6].split(";") if len(cols) > 6 else [],
                "FORMAT": cols[8].split(":") if len(cols) > 8 else []}
        missing = [f"{kind} {key}" for kind, found in keys.items() for key in found
                   if key not in (".", "") and key not in self.declared[kind]]
        return ", ".join(missing) or "a key"

    def close(self, complete: bool) -> None:
        self.writer.close()
        if complete and not is_special(self.tmp) and not _ends_with_bgzf_eof(self.tmp):
            raise self._failed()

    def _failed(self) -> CaduceusError:
        found = reported_os_error(RuntimeError("bcf_write failed"), self.tmp)
        return write_error(self.label, found or OSError(errno.EIO, "htslib could not write the BCF"))


def _ends_with_bgzf_eof(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - len(BGZF_EOF)))
            return f.read() == BGZF_EOF
    except OSError:
        return False
