"""`predict --attribute`: which bases drive a classifier's call, one row per input base.

Methods (``choices.ATTRIBUTIONS``), both for the class the model predicts for the input sequence:

- ``ism``: exact in-silico mutagenesis. Every position is changed to each base other than its own
  (to each of the four at an N); the mutants run through the classifier like any input
  (``inference.predict_logits``: equal-length batches, the strands conjoined as in prediction).
  ``ism_A`` .. ``ism_T``: the predicted class's probability of the mutant minus the input's (for
  regression: the predicted value's change); 0 for the base itself. ``ism``: their mean over the
  other bases. A base that supports the call has negative values. 3 x L passes per sequence.
- ``saliency``: gradient x input through the token embedding (``inference.gradient_times_input``):
  the gradient of the predicted class's logit minus the mean logit (half the log-odds for two
  classes; the value for regression) with respect to the embedding of each strand, dotted with the
  embedding of the base read there, both strands added. Positive values support the call. One
  forward and one backward pass per sequence; a probe backpropagates through its frozen backbone
  and its logistic regression, which are one model.

Rows, in input order: ``name``, ``position`` (1-based), ``base``, ``prediction`` (the predicted
label, or value), ``probability`` (of the predicted label; classification only), then the method's
columns. A sequence longer than the model's max length is read as its central crop (as predict
does); the bases outside it cannot change the output, and their scores are 0.

Logos (``--plot``): the input base at each position, drawn with the height of its importance
(``-ism`` or ``saliency``: up supports the call), for the top sequences by predicted probability
(by value for regression), through ``pipelines/interpret/logo.py``.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...choices import ATTRIBUTIONS, PLOT_MAX_BASES, PLOT_TOP_MAX
from ...dna import BASES, VOCAB, encode
from ...errors import CaduceusError
from ...limits import check_size
from ..inference import predict_logits, saliency_sequences
from .data import tokenize_split
from .metrics import outputs_from_logits

CHUNK_SIZE = 64  # records per chunk when attributing (the unit of progress and of torchrun sharding)
BASE_IDS = np.array([VOCAB[b] for b in BASES], dtype=np.uint8)
_LETTERS = np.array(list("ACGTN"), dtype=object)  # token id - 7 -> letter
DESCRIPTIONS = {
    "ism": "ism_X: probability of the predicted label with the base changed to X minus the input's "
           "(regression: change of the predicted value); ism: mean over the other bases",
    "saliency": "gradient of the predicted label's logit minus the mean logit (regression: the value) with "
                "respect to the token embedding, dotted with the base's embedding, both strands added",
}


def check_method(method: str) -> str:
    if method not in ATTRIBUTIONS:
        raise CaduceusError(f"--attribute must be one of {', '.join(ATTRIBUTIONS)}, got {method!r}")
    return method


def score_columns(method: str) -> list[str]:
    return ["ism", *(f"ism_{b}" for b in BASES)] if method == "ism" else ["saliency"]


def attribution_schema(head: dict, method: str, prediction: pa.DataType, metadata: dict) -> pa.Schema:
    fields = [pa.field("name", pa.string()), pa.field("position", pa.int64()), pa.field("base", pa.string()),
              pa.field("prediction", prediction)]
    if head["task"] != "regression":
        fields.append(pa.field("probability", pa.float64()))
    fields += [pa.field(c, pa.float64()) for c in score_columns(method)]
    meta = {**metadata, "attribution": method, "attribution_scores": DESCRIPTIONS[method]}
    return pa.schema(fields, metadata={k: str(v) for k, v in meta.items()})


class Mutants(Sequence):
    """Every single-base substitution of each token array, built when asked for: mutant j changes
    position ``position[j]`` of array ``sequence[j]`` to ``BASES[base[j]]``; ordered by array,
    position, base."""

    def __init__(self, tokens: Sequence[np.ndarray]):
        self.tokens = tokens
        parts = [(np.zeros(0, dtype=np.int64),) * 3]
        for k, t in enumerate(tokens):
            position, base = np.nonzero(np.asarray(t)[:, None] != BASE_IDS[None, :])
            parts.append((np.full(len(position), k), position, base))
        self.sequence, self.position, self.base = (np.concatenate(column) for column in zip(*parts))

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, j: int) -> np.ndarray:
        mutant = np.array(self.tokens[self.sequence[j]], copy=True)
        mutant[self.position[j]] = BASE_IDS[self.base[j]]
        return mutant


def ism_scores(model, tokens: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits (N, K) of the inputs, [(L, 4) changes per base, 0 at each input base]) for every
    token array: the predicted class's probability (or the regression value) of each mutant minus
    the input's."""
    task = model.head["task"]
    logits = predict_logits(model, tokens, batch_size)
    outputs = outputs_from_logits(task, logits)
    mutants = Mutants(tokens)
    mutated = outputs_from_logits(task, predict_logits(model, mutants, batch_size)) if len(mutants) else None
    if task == "regression":
        reference = outputs
        changes_all = None if mutated is None else mutated - reference[mutants.sequence]
    else:
        predicted = outputs.argmax(1)
        reference = outputs[np.arange(len(tokens)), predicted]
        changes_all = None if mutated is None else (mutated[np.arange(len(mutants)), predicted[mutants.sequence]]
                                                    - reference[mutants.sequence])
    changes = [np.zeros((len(t), len(BASES))) for t in tokens]
    if changes_all is not None:
        for k, matrix in enumerate(changes):
            mine = mutants.sequence == k
            matrix[mutants.position[mine], mutants.base[mine]] = changes_all[mine]
    return logits, changes


class Attributor:
    """The work on one chunk of records: attributions of every base -> one record batch."""

    def __init__(self, model, method: str, batch_size: int, schema: pa.Schema, progress=None):
        self.model, self.head, self.method = model, model.head, method
        self.batch_size, self.schema, self.progress = batch_size, schema, progress
        self.truncated = 0

    def __call__(self, chunk: list) -> pa.RecordBatch:
        split = tokenize_split([r.sequence for r in chunk], np.zeros(len(chunk)), self.head["max_length"])
        self.truncated += split.truncated
        if self.method == "ism":
            logits, changes = ism_scores(self.model, split.tokens, self.batch_size)
            per_base = [np.column_stack([_mean_over_others(m, t), m]) for m, t in zip(changes, split.tokens)]
        else:
            pairs = saliency_sequences(self.model, split.tokens, self.batch_size)
            logits = np.stack([p[0] for p in pairs])
            per_base = [p[1][:, None].astype(np.float64) for p in pairs]
        batch = self._rows(chunk, logits, per_base)
        if self.progress is not None:
            self.progress(len(chunk))
        return batch

    def _rows(self, chunk: list, logits: np.ndarray, per_base: list[np.ndarray]) -> pa.RecordBatch:
        outputs = outputs_from_logits(self.head["task"], logits)
        names, positions, bases, predictions, probabilities, scores = [], [], [], [], [], []
        for k, record in enumerate(chunk):
            full = encode(record.sequence)
            length, read = len(full), per_base[k].shape[0]
            start = (length - read) // 2  # the central crop predict reads (0 when not cropped)
            padded = np.zeros((length, per_base[k].shape[1]))
            padded[start:start + read] = per_base[k]
            names += [record.name] * length
            positions.append(np.arange(1, length + 1))
            bases.append(_LETTERS[full.astype(np.int64) - VOCAB["A"]])
            scores.append(padded)
            if self.head["task"] == "regression":
                predictions += [float(outputs[k])] * length
            else:
                best = int(outputs[k].argmax())
                predictions += [self.head["label_names"][best]] * length
                probabilities.append(np.full(length, outputs[k, best]))
        columns = {"name": names, "position": np.concatenate(positions), "base": np.concatenate(bases).tolist(),
                   "prediction": predictions}
        if probabilities:
            columns["probability"] = np.concatenate(probabilities)
        matrix = np.concatenate(scores)
        for j, column in enumerate(score_columns(self.method)):
            columns[column] = matrix[:, j]
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)


def _mean_over_others(changes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(L,) mean change over the bases other than the input's (all four at an N)."""
    others = np.asarray(tokens)[:, None] != BASE_IDS[None, :]
    return (changes * others).sum(1) / np.maximum(others.sum(1), 1)


def sequences_in(batch: pa.RecordBatch) -> int:
    """The number of sequences whose rows a record batch holds (each starts at position 1)."""
    return int(np.count_nonzero(batch.column("position").to_numpy() == 1))


# -- logos of the top sequences ------------------------------------------------------------------
def check_plot(plot: str | os.PathLike, top: int) -> None:
    """Refuse, before any work, a --plot target that cannot be written and a --plot-top below 1.
    A target ending in '/' or naming a folder gets DIR/RANK_NAME.png (the folder is made when
    missing); any other is a prefix: PREFIX_RANK_NAME.png."""
    from ..interpret.logo import check_logo_support

    check_size("--plot-top", top, maximum=PLOT_TOP_MAX)
    folder = Path(plot) if _is_folder(plot) else Path(plot).parent
    if folder.exists() and not folder.is_dir():
        raise CaduceusError(f"--plot {plot}: {folder} is not a folder")
    made_here = _is_folder(plot) and not folder.exists()  # a folder target is made; its parent must exist
    existing = folder.parent if made_here else folder
    if not existing.is_dir():
        raise CaduceusError(f"--plot {plot}: folder {existing} does not exist")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CaduceusError(f"--plot {plot}: folder {existing} is not writable")
    check_logo_support()


def _is_folder(plot) -> bool:
    return str(plot).endswith(("/", os.sep)) or Path(plot).is_dir()


def logo_path(plot: str | os.PathLike, rank: int, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "sequence"
    if _is_folder(plot):
        return Path(plot) / f"{rank}_{safe}.png"
    return Path(f"{plot}_{rank}_{safe}.png")


def refuse_long_for_plot(records, limit: int = PLOT_MAX_BASES):
    """``records``, refusing (before its attributions are computed) one too long for a logo."""
    for record in records:
        if len(record.sequence) > limit:
            raise CaduceusError(f"{record.where}: sequence {record.name!r} has {len(record.sequence):,} bases, over "
                                f"the {limit} that --plot draws: drop --plot and read its attributions from the "
                                f"Parquet output (-o out.parquet)")
        yield record


class TopSequences:
    """The ``n`` sequences with the highest predicted probability (regression: value) among the
    record batches given to :meth:`add`, earlier inputs first among equals."""

    def __init__(self, n: int, method: str):
        self.n, self.method, self.seen, self.heap = n, method, 0, []

    def add(self, batch: pa.RecordBatch) -> None:
        data = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
        starts = np.flatnonzero(data["position"] == 1).tolist() + [batch.num_rows]
        key = data.get("probability", data["prediction"])
        for a, b in zip(starts[:-1], starts[1:]):
            values = data["ism"][a:b] * -1.0 if self.method == "ism" else data["saliency"][a:b]
            entry = (float(key[a]), -self.seen, str(data["name"][a]), data["prediction"][a],
                     "".join(data["base"][a:b]), values)
            self.seen += 1
            if len(self.heap) < self.n:
                heapq.heappush(self.heap, entry)
            else:
                heapq.heappushpop(self.heap, entry)

    def write(self, plot: str | os.PathLike, task: str) -> list[str]:
        """One logo per kept sequence, best first; the paths written (none left on an error)."""
        made = _is_folder(plot) and not Path(plot).exists()
        if made:
            Path(plot).mkdir()
        paths: list[str] = []
        try:
            self._write_all(plot, task, paths)
        except BaseException:
            for path in paths:
                Path(path).unlink(missing_ok=True)
            if made:
                with contextlib.suppress(OSError):
                    Path(plot).rmdir()
            raise
        return paths

    def _write_all(self, plot, task: str, paths: list[str]) -> None:
        from ..interpret.logo import plot_logo

        ylabel = "-ISM: drop in P(call)" if self.method == "ism" else "gradient x input"
        if task == "regression":
            ylabel = "-ISM: drop in value" if self.method == "ism" else ylabel
        for rank, (key, _, name, prediction, bases, values) in enumerate(sorted(self.heap, reverse=True), start=1):
            matrix = np.zeros((len(bases), len(BASES)))
            for i, base in enumerate(bases):
                if base in BASES:
                    matrix[i, BASES.index(base)] = values[i]
            call = f"{prediction:.4g}" if task == "regression" else f"{prediction} (p = {key:.3f})"
            path = logo_path(plot, rank, name)
            plot_logo(matrix, BASES, f"{name}: {call}, {self.method}", path, ylabel=ylabel)
            paths.append(str(path))
