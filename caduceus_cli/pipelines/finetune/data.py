"""Data for fine-tuning and probing: splits as token arrays, label spaces, batches by length, splits.

Batching is where a bi-directional model meets padding: it reads a right-padded sequence's pads
from the far end, so pads change its hidden states. Hence:

- evaluation and prediction batches hold sequences of one length only (never any padding), so a
  sequence's prediction never depends on the other inputs (``pipelines/inference.py``);
- training batches come from a shuffled window of ``SHUFFLE_WINDOW`` batches sorted by length: a
  data set of one length gets plain shuffled batches without padding, a mixed one gets batches of
  (nearly) equal lengths, right-padded to the longest, with pooling that skips the pads and the
  reverse strand built from each unpadded sequence (strand invariance stays exact).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...dna import encode
from ...errors import CaduceusError
from ...genome.labeled import TASKS, LabeledSequences, canonical_sequence, read_labeled_sequences
from .recipe import SHUFFLE_WINDOW

PAD_ID = 4


def load_split(data, what: str, *, fasta=None, task: str = "classification", sequence_column=None,
               label_column=None) -> LabeledSequences | None:
    """A split from a path (read by content) or a LabeledSequences object (checked); None stays None."""
    if data is None:
        return None
    if isinstance(data, LabeledSequences):
        if not len(data):
            raise CaduceusError(f"{data.source}: the {what} split holds no sequences")
        if len({len(data.sequences), len(data.labels), len(data.names)}) != 1:
            raise CaduceusError(f"{data.source}: sequences, labels and names of the {what} split differ in number")
        sequences = [canonical_sequence(s, f"{data.source}: {what} record {i + 1}") for i, s in enumerate(data.sequences)]
        labels = [v.item() if hasattr(v, "item") else v for v in data.labels]  # numpy scalars -> Python
        return LabeledSequences(sequences, labels, [str(n) for n in data.names], data.source)
    if not isinstance(data, (str, os.PathLike)):
        raise CaduceusError(f"the {what} split must be a file path or LabeledSequences, not {type(data).__name__}")
    return read_labeled_sequences(data, fasta=fasta, sequence_column=sequence_column, label_column=label_column,
                                  task=task)


@dataclass
class LabelSpace:
    """What the head predicts: class names (typed as read) for classification; for regression the
    training targets' mean and standard deviation (the head learns standardised targets)."""

    task: str
    names: list | None = None
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def from_train(cls, train: LabeledSequences, task: str) -> "LabelSpace":
        if task not in TASKS:
            raise CaduceusError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "regression":
            y = cls(task).encode(train, "train")
            std = float(y.std())
            return cls(task, None, float(y.mean()), std if std > 0 else 1.0)
        names = sorted(set(train.labels), key=lambda v: (isinstance(v, str), v))
        if len(names) < 2:
            raise CaduceusError(f"{train.source}: every label is {names[0]!r}: a classifier needs at least two "
                                "classes (or use --task regression for a numeric target)")
        return cls(task, names)

    @property
    def num_outputs(self) -> int:
        return len(self.names) if self.task == "classification" else 1

    def encode(self, data: LabeledSequences, what: str) -> np.ndarray:
        """Class indexes (int64) or targets (float64) of a split; unknown classes are refused."""
        if self.task == "regression":
            try:
                return np.array([float(v) for v in data.labels], dtype=np.float64)
            except (TypeError, ValueError):
                bad = next(v for v in data.labels if not _is_number(v))
                raise CaduceusError(f"{data.source}: target {bad!r} is not a number (--task regression needs "
                                    "numeric labels)") from None
        index = {name: i for i, name in enumerate(self.names)}
        out = np.empty(len(data), dtype=np.int64)
        for i, label in enumerate(data.labels):
            if label not in index:
                raise CaduceusError(f"{data.source}: record {i + 1} ({data.names[i]}): label {label!r} is not among "
                                    f"the training labels ({', '.join(map(str, self.names))})")
            out[i] = index[label]
        return out

    def stratify(self, y: np.ndarray) -> np.ndarray | None:
        return y if self.task == "classification" else None


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


@dataclass
class TokenSplit:
    """A split as uint8 token arrays (centre-cropped to ``max_length``), targets, and which were cropped."""

    tokens: list[np.ndarray]
    y: np.ndarray
    cropped: np.ndarray  # bool per record

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.tokens), dtype=np.int64, count=len(self.tokens))

    @property
    def truncated(self) -> int:
        return int(self.cropped.sum())

    def subset(self, indices: np.ndarray) -> "TokenSplit":
        return TokenSplit([self.tokens[i] for i in indices], self.y[indices], self.cropped[indices])


def tokenize_split(sequences: list[str], y: np.ndarray, max_length: int | None) -> TokenSplit:
    """Token ids of every sequence; one longer than ``max_length`` keeps its central ``max_length``
    bases (the crop of its reverse complement is the reverse complement of its crop when the excess
    is even; one base off otherwise)."""
    tokens, cropped = [], np.zeros(len(sequences), dtype=bool)
    for i, seq in enumerate(sequences):
        if max_length is not None and len(seq) > max_length:
            start = (len(seq) - max_length) // 2
            seq = seq[start:start + max_length]
            cropped[i] = True
        tokens.append(encode(seq))
    return TokenSplit(tokens, y, cropped)


def collate(tokens: list[np.ndarray], indices) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids (B, L) int64 right-padded with [PAD], lengths (B,) or None when all are equal)."""
    rows = [tokens[i] for i in indices]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for row, r in zip(ids, rows):
        row[:len(r)] = r
    return ids, (None if (lengths == width).all() else lengths)


def train_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                  window: int = SHUFFLE_WINDOW) -> list[np.ndarray]:
    """One epoch of training batches: shuffled, then sorted by length inside windows of ``window``
    batches (stable, so equal lengths keep their shuffled order), cut into ``batch_size`` pieces,
    and the batches shuffled. ``ceil(n / batch_size)`` batches whatever the lengths."""
    order = rng.permutation(len(lengths))
    span = window * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def stratified_split(n: int, strata: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) indexes: ``fraction`` of every class (of all records for regression) held out
    at random, at least one record per class where a class has two or more."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    valid = []
    for members in groups:
        members = rng.permutation(members)
        take = int(round(fraction * len(members)))
        take = min(max(take, 1 if len(members) > 1 else 0), len(members) - 1)
        valid.append(members[:take])
    valid_idx = np.sort(np.concatenate(valid)) if valid else np.empty(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), valid_idx)
    return train_idx, valid_idx


def kfold_splits(n: int, strata: np.ndarray | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) indexes of each of ``folds`` folds: stratified by class (plain K-fold for
    regression), shuffled with ``seed``."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if strata is None:
        splitter = KFold(folds, shuffle=True, random_state=seed)
        return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(n))]
    smallest = int(np.unique(strata, return_counts=True)[1].min())
    if smallest < folds:
        raise CaduceusError(f"--folds {folds}: the rarest class has only {smallest} record(s); use fewer folds")
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(n), strata)]
