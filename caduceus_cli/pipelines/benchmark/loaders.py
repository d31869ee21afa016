"""Reading a task's splits, in the source's own layout, into :class:`LabeledSequences`.

Labels are checked against the registry's classes: a label outside them (a wrong folder, a
different release) stops the run with one line naming the file, the sequence and the label.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CaduceusError
from ...limits import is_ascii_digits
from ...genome.lines import open_text
from .registry import Task
from .sources import TaskFiles



@dataclass
class TaskData:
    """The splits of one task (``valid`` may be None; ``train`` None: test split only, use CV)."""

    task: Task
    files: TaskFiles
    test: object  # LabeledSequences
    train: object | None = None
    valid: object | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cross_validated(self) -> bool:
        return self.train is None

    def splits(self) -> dict[str, object]:
        return {name: s for name, s in (("train", self.train), ("valid", self.valid), ("test", self.test)) if s is not None}

    def digests(self) -> dict[str, str]:
        return {name: s.digest() for name, s in self.splits().items()}

    def sizes(self) -> dict[str, int]:
        return {name: len(s.sequences) for name, s in self.splits().items()}

    def class_indices(self, split) -> np.ndarray:
        """Labels of ``split`` as indices into the registry's class order."""
        index = {c: i for i, c in enumerate(self.task.classes)}
        return np.array([index[label] for label in split.labels], dtype=np.int64)


def load_task(files: TaskFiles, fasta: str | None = None) -> TaskData:
    """Read every split of ``files``; labels normalised to the registry's class values."""
    reader = {"nt-fasta": _read_file, "csv": _read_file, "gb-sequences": _read_gb_folders,
              "gb-coordinates": lambda path, task: _read_gb_coordinates(path, task, fasta)}[files.layout]
    splits = {name: _check_labels(reader(path, files.task), files.task) for name, path in files.splits.items()}
    return TaskData(files.task, files, splits["test"], splits.get("train"), splits.get("valid"))


def subsample(data: TaskData, limit: int, seed: int = 0) -> TaskData:
    """``data`` with every split larger than ``limit`` cut to ``limit`` sequences: a stratified
    random subset (seeded, input order kept), noted in the task's notes."""
    from sklearn.model_selection import train_test_split

    if limit < 2 * data.task.n_classes:
        raise CaduceusError(f"--max-sequences {limit}: too few for {data.task.n_classes} classes "
                            f"(at least {2 * data.task.n_classes})")
    replaced, notes = {}, list(data.notes)
    for name, split in data.splits().items():
        n = len(split.sequences)
        if n <= limit:
            continue
        keep, _ = train_test_split(np.arange(n), train_size=limit, stratify=data.class_indices(split),
                                   random_state=seed)
        replaced[name] = split.subset(np.sort(keep))
        notes.append(f"{name}: {limit} of {n} sequences (stratified subsample, seed {seed})")
    return dataclasses.replace(data, notes=notes, **replaced)


def _labeled(sequences, labels, names, source):
    from ...genome.labeled import LabeledSequences

    return LabeledSequences(sequences=sequences, labels=labels, names=names, source=source)


def _read_file(path: Path, task: Task):
    """A FASTA with '>name|label' headers or a CSV with sequence,label columns (the finetune reader)."""
    from ...genome.labeled import read_labeled_sequences

    return read_labeled_sequences(str(path), task="classification")


def _normalise(label, classes: tuple):
    """``label`` as the registry spells it (integer classes accept '1' and 1.0), or None."""
    if label in classes:
        return label
    if all(isinstance(c, int) for c in classes):
        try:
            number = float(str(label).strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() and int(number) in classes else None
    text = str(label).strip()
    return text if text in classes else None


def _check_labels(split, task: Task):
    labels = []
    for name, label in zip(split.names, split.labels):
        value = _normalise(label, task.classes)
        if value is None:
            raise CaduceusError(f"{split.source}: sequence {name}: label {label!r} is not a class of "
                                f"{task.suite}/{task.name} (classes: {', '.join(map(str, task.classes))}); "
                                "is this the right task or release?")
        labels.append(value)
    return _labeled(list(split.sequences), labels, list(split.names), split.source)


def _clean(sequence: str, where: str) -> str:
    from ...genome.labeled import canonical_sequence

    return canonical_sequence("".join(sequence.split()), where)


def _natural(path: Path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def _read_gb_folders(split_dir: Path, task: Task):
    """``split_dir/<class>/<id>.txt``, one sequence per file (the Genomic Benchmarks layout)."""
    present = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    extra = [c for c in present if c not in task.classes]
    if extra:
        raise CaduceusError(f"{split_dir}: folder {extra[0]!r}: label {extra[0]!r} is not a class of "
                            f"{task.suite}/{task.name} (classes: {', '.join(task.classes)})")
    sequences, labels, names = [], [], []
    for cls in task.classes:
        folder = split_dir / cls
        if not folder.is_dir():
            raise CaduceusError(f"{split_dir}: no folder for class {cls!r} (the split must hold every class)")
        for path in sorted((p for p in folder.iterdir() if p.is_file()), key=_natural):
            sequences.append(_clean(path.read_text(encoding="ascii", errors="replace"), str(path)))
            labels.append(cls)
            names.append(f"{cls}/{path.stem}")
    return _labeled(sequences, labels, names, str(split_dir))


def _fasta_for(fasta: str | None, cls: str, where: Path) -> str:
    """The genome of class ``cls``: one FASTA for all, or 'class=path,class=path'."""
    if not fasta:
        raise CaduceusError(f"{where}: coordinate files need the genome: give --fasta")
    if "=" not in fasta:
        return fasta
    pairs = dict(item.split("=", 1) for item in fasta.split(",") if "=" in item)
    if cls not in pairs:
        raise CaduceusError(f"--fasta names no genome for class {cls!r} (give {cls}=PATH)")
    return pairs[cls]


def _read_gb_coordinates(split_dir: Path, task: Task, fasta: str | None):
    """``split_dir/<class>.csv.gz`` with id,region,start,end,strand (0-based half-open) + a genome."""
    from ...genome.fasta import Reference
    from ...genome.windows import fetch_window

    sequences, labels, names = [], [], []
    references: dict[str, Reference] = {}
    try:
        for cls in task.classes:
            path = next((p for p in (split_dir / f"{cls}.csv.gz", split_dir / f"{cls}.csv") if p.is_file()), None)
            if path is None:
                raise CaduceusError(f"{split_dir}: no coordinate file for class {cls!r} ({cls}.csv.gz)")
            genome = _fasta_for(fasta, cls, path)
            reference = references.setdefault(genome, Reference(genome))
            for row, line_no in _coordinate_rows(path):
                contig = reference.resolve_contig(row["region"])
                if contig is None:
                    raise CaduceusError(f"{path}: line {line_no}: region {row['region']!r} is not in {genome}")
                sequence, _ = fetch_window(reference, contig, int(row["start"]), int(row["end"]), row["strand"])
                sequences.append(_clean(sequence, f"{path}: line {line_no}"))
                labels.append(cls)
                names.append(f"{cls}/{row['id']}")
    finally:
        for reference in references.values():
            reference.close()
    return _labeled(sequences, labels, names, str(split_dir))


def _coordinate_rows(path: Path):
    stream, _, must_close = open_text(path, "coordinate file")
    try:
        reader = csv.DictReader(stream)
        missing = {"id", "region", "start", "end", "strand"} - set(reader.fieldnames or [])
        if missing:
            raise CaduceusError(f"{path}: line 1: missing column(s) {', '.join(sorted(missing))}")
        for line_no, row in enumerate(reader, start=2):
            if not is_ascii_digits((row["start"] or "").strip()) or not is_ascii_digits((row["end"] or "").strip()):
                raise CaduceusError(f"{path}: line {line_no}: start/end {row['start']!r}/{row['end']!r} are not integers")
            yield row, line_no
    finally:
        if must_close:
            stream.close()
