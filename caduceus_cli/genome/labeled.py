"""Labeled sequences for fine-tuning, probing and prediction: CSV/TSV, FASTA, or BED + reference.

The format is recognised by content, not by name (plain or gzip; ``-`` is stdin):

- **FASTA** (first data line starts with ``>``): the label is the text after the last ``|`` of the
  header's first word, as in the Nucleotide Transformer release (``>YDR264C_AKR1_996290|1``); the
  name is what comes before it.
- **BED** (tab-separated, columns 2 and 3 integers; needs ``fasta=``): the sequence of each region
  from the reference (minus-strand regions reverse-complemented when the BED has a strand column
  that is not the label); the label is column ``label_column`` (1-based), by default the last column
  of a BED with at least 4 columns; the name is column 4 when it is not the label, else the region.
- **CSV/TSV** (anything else; tab-separated when the first line has a tab): with a header, the
  columns named ``sequence``/``seq`` and ``label``/``target``/``y`` (or ``sequence_column`` and
  ``label_column``: names or 1-based numbers); without one, the column that holds DNA is the
  sequence and the last other column the label. A ``name``/``id`` column names the rows, else the
  data row number does.

Sequences are upper-cased; IUPAC ambiguity codes read as N (the models' vocabulary); any other
character is refused with the file, line and position. Labels are kept as read: integers when every
label is one, else strings; ``task="regression"`` needs numbers.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from typing import IO, Iterator

from ..dna import reverse_complement
from ..errors import CaduceusError
from ..limits import is_ascii_digits, is_ascii_integer
from .bed import parse_bed_line
from .lines import open_text

TASKS = ("classification", "regression")
SEQUENCE_NAMES = ("sequence", "seq", "sequences", "dna")
LABEL_NAMES = ("label", "labels", "target", "y", "class")
NAME_NAMES = ("name", "id", "region")
_TO_CANONICAL = str.maketrans("acgtnRYSWKMBDHVryswkmbdhv", "ACGTN" + "N" * 20)
_NOT_BASE = re.compile(r"[^ACGTN]")
_DNA_LIKE = re.compile(r"^[ACGTNRYSWKMBDHV]+$", re.IGNORECASE)


@dataclass
class LabeledSequences:
    """One split of a labeled task: sequences (A/C/G/T/N), labels as read, names, and the source."""

    sequences: list[str]
    labels: list
    names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.sequences)

    def digest(self) -> str:
        """sha256 over the sequences and labels in order: the identity of the data in caches and reports."""
        h = hashlib.sha256()
        for seq, label in zip(self.sequences, self.labels):
            h.update(seq.encode("ascii"))
            h.update(b"\t")
            h.update(json.dumps(label).encode())
            h.update(b"\n")
        return h.hexdigest()

    def subset(self, indices) -> "LabeledSequences":
        """The records at ``indices`` (in that order), from the same source."""
        idx = [int(i) for i in indices]
        return LabeledSequences([self.sequences[i] for i in idx], [self.labels[i] for i in idx],
                                [self.names[i] for i in idx], self.source)


@dataclass(frozen=True)
class Record:
    """One input record: its name, canonical sequence, raw label text (None when not read) and where."""

    name: str
    sequence: str
    label: str | None
    where: str


def canonical_sequence(text: str, where: str) -> str:
    """Upper-case A/C/G/T/N (IUPAC ambiguity codes -> N); other characters are refused."""
    seq = text.strip().translate(_TO_CANONICAL).upper()
    bad = _NOT_BASE.search(seq)
    if bad:
        raise CaduceusError(f"{where}: position {bad.start() + 1}: {bad.group()!r} is not a nucleotide code "
                            "(expected A C G T N or an IUPAC ambiguity code)")
    if not seq:
        raise CaduceusError(f"{where}: empty sequence")
    return seq


def read_labeled_sequences(path: str | os.PathLike, *, fasta: str | os.PathLike | None = None,
                           sequence_column: str | int | None = None, label_column: str | int | None = None,
                           task: str = "classification", stdin: IO | None = None) -> LabeledSequences:
    """Every record of a labeled file (see the module docstring for the formats), in file order."""
    if task not in TASKS:
        raise CaduceusError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    names, sequences, raw, places = [], [], [], []
    source = "<stdin>" if str(path) == "-" else str(path)
    for record in iter_records(path, fasta=fasta, sequence_column=sequence_column, label_column=label_column,
                               labels=True, stdin=stdin):
        names.append(record.name)
        sequences.append(record.sequence)
        raw.append(record.label)
        places.append(record.where)
    if not sequences:
        raise CaduceusError(f"{source}: no sequences (the file is empty)")
    labels = typed_labels(raw, places, task)
    return LabeledSequences(sequences, labels, names, source)


def typed_labels(raw: list[str], places: list[str], task: str) -> list:
    """Label texts as numbers for regression, integers when every label is one, else strings."""
    if task == "regression":
        out = []
        for text, where in zip(raw, places):
            try:
                if not text.isascii():  # float() would also read '١٫٥'-style digits
                    raise ValueError(text)
                value = float(text)
            except ValueError:
                raise CaduceusError(f"{where}: target {text!r} is not a number (--task regression needs a "
                                    "numeric label column)") from None
            if not math.isfinite(value):
                raise CaduceusError(f"{where}: target {text!r} is not a finite number")
            out.append(value)
        return out
    if all(is_ascii_integer(text) for text in raw):  # int() would also read '١' as 1
        return [int(text) for text in raw]
    return list(raw)


def iter_records(path: str | os.PathLike, *, fasta: str | os.PathLike | None = None,
                 sequence_column: str | int | None = None, label_column: str | int | None = None,
                 labels: bool = True, stdin: IO | None = None) -> Iterator[Record]:
    """Stream the records of a sequence file in order; with ``labels`` every record must carry one."""
    stream, source, owned = open_text(path, "sequence file", stdin)
    try:
        numbered = ((n, raw.rstrip("\r\n")) for n, raw in enumerate(stream, start=1))
        data = ((n, text) for n, text in numbered if text.strip() and not text.startswith("#"))
        first = next(data, None)
        if first is None:
            return
        lines = itertools.chain([first], data)
        if first[1].startswith(">"):
            yield from _fasta_records(lines, source, labels)
        elif _looks_like_bed(first[1]):
            if fasta is None:
                raise CaduceusError(f"{source}: looks like BED (columns 2-3 are coordinates): give the reference "
                                    "with --fasta REF.fa")
            yield from _bed_records(lines, source, fasta, label_column, labels)
        else:
            yield from _table_records(lines, source, sequence_column, label_column, labels)
    except (OSError, EOFError, UnicodeError, csv.Error) as e:
        raise CaduceusError(f"{source}: read failed ({e})") from None
    finally:
        if owned:
            stream.close()


def _looks_like_bed(text: str) -> bool:
    if text.startswith(("track", "browser")):
        return True
    fields = text.split("\t")
    return len(fields) >= 3 and is_ascii_digits(fields[1].strip()) and is_ascii_digits(fields[2].strip())


# -- FASTA -------------------------------------------------------------------------------------
def _fasta_records(lines, source: str, labels: bool) -> Iterator[Record]:
    header = None
    chunks: list[str] = []
    for number, text in lines:
        if text.startswith(">"):
            if header is not None:
                yield _fasta_record(header, chunks, source, labels)
            header, chunks = (number, text), []
        elif header is None:
            raise CaduceusError(f"{source}: line {number}: sequence before the first '>' header")
        else:
            chunks.append(text.strip())
    if header is not None:
        yield _fasta_record(header, chunks, source, labels)


def _fasta_record(header: tuple[int, str], chunks: list[str], source: str, labels: bool) -> Record:
    number, text = header
    where = f"{source}: line {number}"
    word = (text[1:].split() or [""])[0]
    if not word:
        raise CaduceusError(f"{where}: FASTA header without a name")
    label = None
    if labels:
        name, bar, label = word.rpartition("|")
        if not bar or not name or not label:
            raise CaduceusError(f"{where}: FASTA header {word!r} has no label: expected '>name|label'")
        word = name
    return Record(word, canonical_sequence("".join(chunks), f"{where} ({word})"), label, where)


# -- BED + reference ---------------------------------------------------------------------------
def _column_number(value: str | int | None, what: str) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not is_ascii_digits(text) or int(text) < 1:
        raise CaduceusError(f"--{what}-column {value!r}: a BED column is given by its 1-based number")
    return int(text)


def _bed_records(lines, source: str, fasta, label_column, labels: bool) -> Iterator[Record]:
    from .fasta import Reference

    chosen = _column_number(label_column, "label")
    reference = Reference(fasta)
    try:
        for number, text in lines:
            if text.startswith(("track", "browser")):
                continue
            region = parse_bed_line(text, number, source)
            fields = text.split("\t") if "\t" in text else text.split()
            where = f"{source}: line {number}"
            label_at = chosen or len(fields)
            label = None
            if labels:
                label_at = _bed_label_column(fields, chosen, where)
                label = fields[label_at - 1].strip()
            name = region.name if len(fields) >= 4 and label_at != 4 and region.name != "." else None
            strand = region.strand if len(fields) >= 6 and label_at != 6 else "."
            yield Record(name or _region_text(region.contig, region.start, region.end, strand),
                         _fetch(reference, region, strand, where), label, where)
    finally:
        reference.close()


def _bed_label_column(fields: list[str], chosen: int | None, where: str) -> int:
    if chosen is not None:
        if chosen > len(fields):
            raise CaduceusError(f"{where}: no column {chosen} (the line has {len(fields)}) for --label-column")
        if not fields[chosen - 1].strip():
            raise CaduceusError(f"{where}: empty label in column {chosen}")
        return chosen
    if len(fields) <= 3:
        raise CaduceusError(f"{where}: BED without a label column: add the label as column 4 (or after the BED "
                            "columns) and name it with --label-column N")
    if len(fields) == 6 and fields[5].strip() in ("+", "-", "."):
        raise CaduceusError(f"{where}: the last column is a strand (BED6 without a label column): add the label "
                            "as column 7, or name its column with --label-column N")
    if not fields[-1].strip():
        raise CaduceusError(f"{where}: empty label in column {len(fields)}")
    return len(fields)


def _region_text(contig: str, start: int, end: int, strand: str) -> str:
    return f"{contig}:{start}-{end}" + (f"({strand})" if strand in ("+", "-") else "")


def _fetch(reference, region, strand: str, where: str) -> str:
    contig = reference.resolve_contig(region.contig)
    if contig is None:
        raise CaduceusError(f"{where}: contig {region.contig!r} is not in the reference {reference.path.name}")
    if region.end > reference.contigs[contig]:
        raise CaduceusError(f"{where}: region ends at {region.end:,}, past the end of {contig} "
                            f"({reference.contigs[contig]:,} bp): is the BED for another genome build?")
    if region.end == region.start:
        raise CaduceusError(f"{where}: empty region {region.contig}:{region.start}-{region.end}")
    seq, _ = reference.fetch(contig, region.start, region.end)
    seq = canonical_sequence(seq, where)
    return reverse_complement(seq) if strand == "-" else seq


# -- CSV / TSV ---------------------------------------------------------------------------------
def _table_records(lines, source: str, sequence_column, label_column, labels: bool) -> Iterator[Record]:
    lines = iter(lines)
    number, text = next(lines)
    sep = "\t" if "\t" in text else ","
    split = (lambda t: t.split("\t")) if sep == "\t" else (lambda t: next(csv.reader([t]), []))
    first = [f.strip() for f in split(text)]
    header = _is_header(first, sequence_column, label_column)
    seq_at, label_at, name_at = _table_columns(first if header else None, first, source, number,
                                               sequence_column, label_column, labels)
    rows = lines if header else itertools.chain([(number, text)], lines)
    count = 0
    for number, text in rows:
        fields = split(text)
        where = f"{source}: line {number}"
        if len(fields) != len(first):
            raise CaduceusError(f"{where}: expected {len(first)} {'tab' if sep == chr(9) else 'comma'}-separated "
                                f"columns, got {len(fields)}")
        count += 1
        label = None
        if label_at is not None:
            label = fields[label_at].strip()
            if labels and not label:
                raise CaduceusError(f"{where}: empty label")
        name = fields[name_at].strip() if name_at is not None else str(count)
        yield Record(name, canonical_sequence(fields[seq_at], where), label, where)


def _is_header(first: list[str], sequence_column, label_column) -> bool:
    given = {str(c).lower() for c in (sequence_column, label_column) if c is not None and not is_ascii_digits(str(c))}
    lowered = [f.lower() for f in first]
    if any(f in SEQUENCE_NAMES or f in given for f in lowered):
        return True
    return not any(_DNA_LIKE.match(f) for f in first)


def _table_columns(header, first, source, number, sequence_column, label_column, labels):
    """(sequence, label or None, name or None) column indexes, 0-based."""
    where = f"{source}: line {number}"

    def find(given, defaults, what):
        if given is not None and is_ascii_digits(str(given).strip()):
            index = int(str(given).strip()) - 1
            if not 0 <= index < len(first):
                raise CaduceusError(f"{where}: no column {given} for --{what}-column (the file has {len(first)})")
            return index
        if header is None:
            if given is not None:
                raise CaduceusError(f"{where}: the file has no header, so --{what}-column must be a column number")
            return None
        names = [h.lower() for h in header]
        for candidate in ([str(given).lower()] if given is not None else defaults):
            if candidate in names:
                return names.index(candidate)
        if given is not None:
            raise CaduceusError(f"{where}: no column named {given!r} for --{what}-column (the header has "
                                f"{', '.join(header)})")
        return None

    seq_at = find(sequence_column, SEQUENCE_NAMES, "sequence")
    if seq_at is None:
        dna = [i for i, f in enumerate(first) if _DNA_LIKE.match(f)]
        if header is not None or not dna:
            raise CaduceusError(f"{where}: no sequence column (the header has {', '.join(first)}): name it "
                                "with --sequence-column")
        seq_at = max(dna, key=lambda i: len(first[i]))
    label_at = find(label_column, LABEL_NAMES, "label")
    if label_at is None and header is None and len(first) > 1:
        label_at = max(i for i in range(len(first)) if i != seq_at)
    if labels and label_at is None:
        raise CaduceusError(f"{where}: no label column (the {'header has' if header else 'file has only'} "
                            f"{', '.join(first) if header else 'a sequence column'}): name it with --label-column")
    name_at = find(None, NAME_NAMES, "name") if header is not None else None
    return seq_at, label_at, (None if name_at in (seq_at, label_at) else name_at)
