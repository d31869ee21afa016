"""The one reader of line-oriented text inputs (BED, TSS BED, GTF, split BED, labeled TSV/CSV).

- Opened by content, not by name: plain, gzip or bgzip; ``-`` is stdin (gzip there too).
- Blank lines, ``#`` comments and, for BED-like files, ``track``/``browser`` lines are skipped;
  Windows line ends (CRLF) read as plain ones.
- Columns split on tabs, or on runs of whitespace when a line has no tab (``sep=None``), or on a
  given separator (``,`` is read with the csv module, so quoted fields work).
- Every problem names the file, the line number and the value: ``file: line 12: ...``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from ..errors import CaduceusError
from ..limits import is_ascii_integer

GZIP_MAGIC = b"\x1f\x8b"


def compression(path: str | os.PathLike) -> str:
    """'bgzip', 'gzip' or 'plain', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != GZIP_MAGIC:
        return "plain"
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":  # BGZF: FEXTRA with a 'BC' subfield
        return "bgzip"
    return "gzip"


def check_input(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path, after checking that it is a readable file (not a folder)."""
    p = Path(path)
    if not p.exists():
        raise CaduceusError(f"{p}: no such {what}")
    if p.is_dir():
        raise CaduceusError(f"{p}: is a folder, not a {what}")
    if not os.access(p, os.R_OK):
        raise CaduceusError(f"{p}: not readable (permission denied)")
    return p


def open_text(path: str | os.PathLike, what: str = "file", stdin: IO | None = None) -> tuple[IO[str], str, bool]:
    """(text stream, label for messages, whether the caller must close it) for a path or '-'."""
    if str(path) == "-":
        raw = stdin or sys.stdin
        binary = getattr(raw, "buffer", None)
        if binary is None:  # an in-memory text stream (tests, notebooks)
            return raw, "<stdin>", False
        head = binary.peek(2)[:2] if hasattr(binary, "peek") else b""
        if head == GZIP_MAGIC:
            return io.TextIOWrapper(gzip.GzipFile(fileobj=binary), encoding="utf-8", errors="replace"), "<stdin>", True
        return io.TextIOWrapper(binary, encoding="utf-8", errors="replace"), "<stdin>", False
    p = check_input(path, what)
    if compression(p) != "plain":
        return gzip.open(p, "rt", encoding="utf-8", errors="replace"), str(p), True
    return open(p, encoding="utf-8", errors="replace"), str(p), True


@dataclass(frozen=True)
class Line:
    """One data line: 1-based ``number``, its ``fields`` and the ``text`` without the line end."""

    source: str
    number: int
    fields: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.source}: line {self.number}"


def split_fields(text: str, sep: str | None) -> list[str]:
    if sep is None:
        return text.split("\t") if "\t" in text else text.split()
    if sep == ",":
        return next(csv.reader([text]), [])
    return text.split(sep)


def read_lines(path: str | os.PathLike, *, what: str = "file", sep: str | None = None,
               comments: tuple[str, ...] = ("#",), skip_track: bool = False, stdin: IO | None = None) -> Iterator[Line]:
    """The data lines of a text file, in order (see the module docstring for what is skipped)."""
    stream, label, owned = open_text(path, what, stdin)
    skipped = comments + (("track", "browser") if skip_track else ())
    number = 0
    try:
        for number, raw in enumerate(stream, start=1):
            text = raw.rstrip("\r\n")
            if not text.strip() or (skipped and text.startswith(skipped)):
                continue
            yield Line(label, number, split_fields(text, sep), text)
    except (OSError, EOFError, UnicodeError, csv.Error, zlib.error) as e:  # zlib: corrupt gzip data
        raise CaduceusError(f"{label}: line {number + 1}: read failed ({e})") from None
    finally:
        if owned:
            stream.close()


MAX_INT = (1 << 62) - 1  # far beyond any genome; keeps positions and sums within int64


def parse_int(text: str, what: str, where: str, *, minimum: int | None = None, hint: str = "") -> int:
    """``int(text)`` of a sign and ASCII digits, or a CaduceusError such as ``file: line 3: start '1.5'
    is not an integer``.

    Values beyond :data:`MAX_INT` are refused (they could not be stored as int64 positions)."""
    text = text.strip()
    if len(text.lstrip("+-")) > 19:  # also spares int() Python's limit on digits
        raise CaduceusError(f"{where}: {what} {text[:24]!r}... is out of range{hint}")
    if not is_ascii_integer(text):  # int() would also read '١٢', '１２' and '1_2'
        raise CaduceusError(f"{where}: {what} {text!r} is not an integer written in digits 0-9{hint}")
    value = int(text)
    if abs(value) > MAX_INT:
        raise CaduceusError(f"{where}: {what} {value} is out of range (at most {MAX_INT}){hint}")
    if minimum is not None and value < minimum:
        raise CaduceusError(f"{where}: {what} {value} must be at least {minimum}{hint}")
    return value
