"""Indexed random access to a reference FASTA (plain or bgzip), with N padding past contig ends.

Index handling, in order: an existing ``.fai`` (and ``.gzi`` for bgzip) next to the file is used;
otherwise one is written next to the file when that folder is writable; otherwise it is built in a
private temporary folder and nothing is written next to the user's file. A plain-gzip FASTA (not
bgzip) cannot be indexed: it is decompressed once into a private temporary file, with a warning.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Iterator

import pysam

from ..errors import CaduceusError
from ..io import quiet_htslib
from .lines import compression, open_text

log = logging.getLogger("caduceus")

_ALIASES = {"chrM": ["MT", "M", "chrMT"], "MT": ["chrM", "M"], "M": ["chrM", "MT"]}
# What a sequence line may hold: letters (bases, IUPAC codes, soft-masked lower case), gaps and stops.
NOT_SEQUENCE = re.compile(r"[^A-Za-z*-]")
NOT_SEQUENCE_BYTES = re.compile(rb"[^A-Za-z*-]")


def contig_candidates(name: str) -> list[str]:
    """Other spellings of a contig name: chr1 <-> 1, chrM <-> MT."""
    out = [name[3:]] if name.startswith("chr") else ["chr" + name]
    return out + _ALIASES.get(name, [])


class Reference:
    """A reference genome: ``fetch(contig, start, end)`` with 0-based half-open coordinates.

    Thread-safe: every thread gets its own pysam handle.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if str(path) == "-":
            raise CaduceusError("the reference FASTA cannot be read from stdin: it needs random access; give a file")
        if not self.path.exists():
            raise CaduceusError(f"{self.path}: no such FASTA file")
        if self.path.is_dir():
            raise CaduceusError(f"{self.path}: is a folder, not a FASTA file")
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._fasta_path, self._fai, self._gzi = self._prepare_index()
        quiet_htslib()  # a read that fails is reported on one line by _read
        self._refuse_stale_index()
        self._local = threading.local()
        handle = self._handle()
        self.contigs: dict[str, int] = dict(zip(handle.references, handle.lengths))
        if not self.contigs:
            raise CaduceusError(f"{self.path}: contains no sequences")
        self._warned: set[str] = set()

    # -- index ---------------------------------------------------------------------------------
    def _private_dir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="caduceus-fasta-")
        return Path(self._tmpdir.name)

    def _prepare_index(self) -> tuple[Path, Path, Path | None]:
        kind = compression(self.path)
        src = self.path
        if kind == "gzip":
            log.warning("%s is gzip-compressed but not bgzip, so it cannot be indexed; decompressing it to a "
                        "temporary file (recompress with `zcat %s | bgzip > x.fa.gz` to avoid this)", src, src.name)
            plain = self._private_dir() / (src.name[:-3] if src.name.endswith(".gz") else src.name + ".fa")
            try:
                with gzip.open(src, "rb") as fin, open(plain, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 22)
            except (OSError, EOFError, zlib.error) as e:
                raise CaduceusError(f"{src}: cannot be decompressed ({e}); re-download or re-compress it") from None
            src, kind = plain, "plain"
        fai = Path(str(src) + ".fai")
        gzi = Path(str(src) + ".gzi") if kind == "bgzip" else None
        if fai.exists() and (gzi is None or gzi.exists()) and fai.stat().st_mtime >= src.stat().st_mtime - 1:
            return src, fai, gzi
        if os.access(src.parent, os.W_OK):
            return src, *self._build_index(src, fai, gzi)
        private = self._private_dir()
        return src, *self._build_index(src, private / fai.name, None if gzi is None else private / gzi.name)

    def _build_index(self, src: Path, fai: Path, gzi: Path | None) -> tuple[Path, Path | None]:
        """Index ``src`` into temporaries renamed to ``fai``/``gzi`` once the FASTA passed (htslib's
        own messages are caught and turned into one line; duplicate names are refused, where
        htslib would keep the first record and say so only in a warning)."""
        from ..io import temporary_file

        with temporary_file(fai) as fai_tmp, temporary_file(gzi or fai, ".gzi") as gzi_tmp:
            args = [str(src), "--fai-idx", str(fai_tmp)] + (["--gzi-idx", str(gzi_tmp)] if gzi else [])
            with htslib_messages() as messages:
                try:
                    pysam.faidx(*args)
                    failed = False
                except pysam.utils.SamtoolsError:
                    failed = True
            if failed:
                raise CaduceusError(f"{self.path}: not a readable FASTA file: {describe_problem(src, messages)}")
            duplicate = re.search(r'Ignoring duplicate sequence "([^"]*)"', "\n".join(messages))
            if duplicate:
                raise CaduceusError(f"{self.path}: the sequence name {duplicate.group(1)!r} appears more than once: "
                                    "a reference needs unique names (rename or remove the second record)")
            os.replace(fai_tmp, fai)
            if gzi is not None:
                os.replace(gzi_tmp, gzi)
        return fai, gzi

    def _refuse_stale_index(self) -> None:
        """A plain FASTA shorter than its .fai says was changed after it was indexed: htslib would
        fail on the first read past its end, so refuse it now, before any work."""
        if self._gzi is not None:
            return
        needed = 0
        try:
            with open(self._fai) as f:
                for line in f:
                    fields = line.split("\t")
                    length, offset, bases, width = (int(v) for v in fields[1:5])
                    full, rest = divmod(length, bases) if bases > 0 else (0, 0)
                    needed = max(needed, offset + full * width + rest)
        except (OSError, ValueError, UnicodeError):
            return  # not a .fai that can be read here: pysam says what is wrong when it opens it
        size = self._fasta_path.stat().st_size
        if size < needed:
            raise CaduceusError(f"{self.path}: the file is shorter ({size:,} bytes) than its index {self._fai.name} says "
                                f"({needed:,}): the index is stale; rebuild it with `samtools faidx {self.path}`")

    def _handle(self) -> pysam.FastaFile:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            try:
                handle = pysam.FastaFile(str(self._fasta_path), filepath_index=str(self._fai),
                                         filepath_index_compressed=None if self._gzi is None else str(self._gzi))
            except (OSError, ValueError) as e:
                raise CaduceusError(f"{self.path}: cannot open as an indexed FASTA ({e})") from None
            self._local.handle = handle
        return handle

    # -- access --------------------------------------------------------------------------------
    def resolve_contig(self, name: str) -> str | None:
        """The reference's spelling of ``name`` (chr1 vs 1, chrM vs MT), or None if absent.

        A reconciled name is announced once per contig on the log.
        """
        if name in self.contigs:
            return name
        for alt in contig_candidates(name):
            if alt in self.contigs:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("contig %r is called %r in %s; using %r", name, alt, self.path.name, alt)
                return alt
        return None

    def fetch(self, contig: str, start: int, end: int) -> tuple[str, int]:
        """Sequence of [start, end) on ``contig`` (already resolved), upper/lower case as stored.

        Positions outside the contig are filled with N; returns (sequence, number of N added).
        """
        length = self.contigs[contig]
        lo, hi = max(start, 0), min(end, length)
        body = self._read(contig, lo, hi) if hi > lo else ""
        left = min(max(0, -start), end - start)
        right = max(0, end - max(length, start))
        pad = left + right
        if pad:
            body = "N" * left + body + "N" * (end - start - left - len(body))
        return body, pad

    def _read(self, contig: str, start: int, end: int) -> str:
        """The bases of [start, end); a byte that is not a sequence letter is refused (htslib stops
        at a NUL and would return a shorter sequence without a word)."""
        try:
            body = self._handle().fetch(contig, start, end)
        except OSError:  # htslib cannot return what faidx indexed (OSError: its errno)
            raise CaduceusError(f"{self.path}: cannot read {contig}:{start + 1}-{end}: the file changed after it was "
                                f"indexed (rebuild the index with `samtools faidx {self.path}`)") from None
        except (ValueError, UnicodeError):  # htslib cannot decode what faidx indexed (a non-ASCII byte)
            body = None
        bad = NOT_SEQUENCE.search(body) if body is not None else None
        if body is None or len(body) != end - start or bad:
            first = None if body is None else start + (bad.start() if bad else len(body))
            raise CaduceusError(f"{self.path}: {self._where(contig, start, end, first)}: a byte that is not a "
                                "sequence letter (a NUL, a control or non-ASCII byte): fix or re-create the FASTA")
        return body

    def _where(self, contig: str, start: int, end: int, first: int | None) -> str:
        """``line N (record 'a', base B)`` of the first bad byte of a record, as exactly as the file allows:
        the line of a plain file, else the line within the record."""
        entry = self._fai_entry(contig)
        if entry is None or entry[1] < 1:  # no index entry, or one htslib could not measure lines in
            return f"record {contig!r}, bases {start + 1}-{end}"
        offset, line_bases, line_width = entry
        if first is None:  # find it: read the region's lines (plain files only)
            first = self._scan(offset, line_bases, line_width, start, end)
            if first is None:
                return f"record {contig!r}, bases {start + 1}-{end}"
        row = first // line_bases
        where = f"record {contig!r}, base {first + 1}"
        if compression(self._fasta_path) != "plain":
            return f"{where}, sequence line {row + 1} of the record"
        before = 0  # lines before the record's first sequence line
        with open(self._fasta_path, "rb") as f:
            while f.tell() < offset and (chunk := f.read(min(1 << 20, offset - f.tell()))):
                before += chunk.count(b"\n")
        return f"line {before + row + 1} ({where})"

    def _fai_entry(self, contig: str) -> tuple[int, int, int] | None:
        """(byte offset, bases per line, bytes per line) of ``contig`` in its .fai."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(self._fai).read_text().splitlines():
                fields = line.split("\t")
                if fields[0] == contig:
                    return int(fields[2]), int(fields[3]), int(fields[4])
        return None

    def _scan(self, offset: int, line_bases: int, line_width: int, start: int, end: int) -> int | None:
        """The position of the first byte in [start, end) that is not a sequence letter (plain files)."""
        if compression(self._fasta_path) != "plain":
            return None
        with open(self._fasta_path, "rb") as f:
            for row in range(start // line_bases, (end - 1) // line_bases + 1):
                f.seek(offset + row * line_width)
                line = f.read(line_bases)
                bad = NOT_SEQUENCE_BYTES.search(line)
                if bad and row * line_bases + bad.start() >= start:
                    return row * line_bases + bad.start()
        return None

    def close(self) -> None:
        handle = getattr(self._local, "handle", None)
        if handle is not None:
            handle.close()
            self._local.handle = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> "Reference":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def htslib_messages() -> Iterator[list[str]]:
    """Catch what htslib writes to file descriptor 2 inside the block (its ``[E::...]`` and
    ``[W::...]`` lines) into the yielded list instead of the user's terminal."""
    sys.stderr.flush()
    messages: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        verbosity = pysam.set_verbosity(3)  # htslib's warnings too, even where it was silenced (quiet_htslib)
        try:
            yield messages
        finally:
            pysam.set_verbosity(verbosity)
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            messages += capture.read().decode("utf-8", "replace").splitlines()


def describe_problem(path: Path, messages: list[str]) -> str:
    """What is wrong with a FASTA that faidx could not index, from its first lines and htslib's words."""
    try:
        with open_text(path, "FASTA file")[0] as f:
            first = [line.rstrip("\r\n") for _, line in zip(range(3), f)]
    except (CaduceusError, OSError, EOFError, zlib.error):
        first = None
    if first == []:
        return "the file is empty"
    if first and not first[0].startswith(">"):
        return f"line 1 {first[0][:40]!r} is not a '>' header"
    if first and all(line.startswith(">") or not line.strip() for line in first) and len(first) < 3:
        return f"record {first[0][1:].split()[0] if first[0][1:].split() else first[0]!r} has no sequence"
    errors = [m.split("] ", 1)[-1] for m in messages if m.startswith("[E::")]
    if any("BGZF" in m or "bgzf" in m for m in errors):
        return f"the compressed file is truncated or corrupt (htslib: {errors[0]}); re-download or re-compress it"
    return "; ".join(errors) or "htslib could not index it (a truncated or corrupt file?)"


def read_fasta_records(path: str | os.PathLike, stdin=None):
    """Stream (name, sequence) of every record of a FASTA (plain, gzip or bgzip; '-' for stdin).

    The name is the header up to the first whitespace. Raises on a file that is not FASTA.
    """
    stream, label, owned = open_text(path, "FASTA file", stdin)
    name, chunks, lineno = None, [], 0
    try:
        for lineno, line in enumerate(stream, start=1):
            line = line.rstrip("\r\n")
            if line.startswith(">"):
                if name is not None:
                    yield name, "".join(chunks)
                name, chunks = (line[1:].split() or [""])[0], []
                if not name:
                    raise CaduceusError(f"{label}: line {lineno}: FASTA header without a name")
            elif line.strip():
                if name is None:
                    raise CaduceusError(f"{label}: line {lineno}: sequence before the first '>' header: "
                                        f"{line[:40]!r} (is this a FASTA file?)")
                chunk = line.strip()
                bad = NOT_SEQUENCE.search(chunk)
                if bad:
                    raise CaduceusError(f"{label}: line {lineno}: {bad.group()!r} in record {name!r} is not a sequence "
                                        "letter (a NUL, a control or non-ASCII byte?): fix or re-create the FASTA")
                chunks.append(chunk)
        if name is not None:
            yield name, "".join(chunks)
    except (OSError, EOFError, zlib.error, UnicodeError) as e:
        raise CaduceusError(f"{label}: line {lineno + 1}: read failed ({e})") from None
    finally:
        if owned:
            stream.close()
