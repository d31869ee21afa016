"""`predict`: apply a fine-tuned classifier or probe to sequences; one row per input, in input order.

Input: FASTA, CSV/TSV with a sequence column, or BED + ``fasta=`` (read by content, ``-`` = stdin);
labels are not needed and not read. It is streamed in chunks of ``chunk_size`` records; under
torchrun chunk i runs on rank ``i % world`` and rank 0 writes every chunk back in input order
(``runtime.run_sharded``). Sequences longer than the model's ``max_length`` are centre-cropped as
in training, and counted.

Output columns: ``name``, ``prediction`` (the label with the highest probability, or the regression
value), then ``prob_<label>`` per class (classification). TSV (``##key=value`` provenance lines, a
header; ``-`` = stdout; ``.gz`` = BGZF) or Parquet (provenance in the schema metadata), by ``fmt`` or
the file name (another name is refused); without ``output`` the rows are returned in memory.

With ``attribute`` (``ism`` or ``saliency``) the output holds per-base importances instead, one row
per input base, and ``plot`` draws sequence logos of the ``plot_top`` sequences predicted with the
highest probability (``attribute.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ...choices import PLOT_TOP
from ...errors import CaduceusError
from ...genome.labeled import iter_records
from ...io import check_writable, is_special, open_output, parquet_sink, provenance, refuse_overwriting_inputs
from ...limits import MAX_BATCH, check_size
from ...progress import advise_on_cpu
from ...runtime import env_int, run_sharded, torchrun
from .data import tokenize_split
from ..inference import predict_logits
from .metrics import outputs_from_logits

CHUNK_SIZE = 4096  # records per chunk (the unit of torchrun sharding); CADUCEUS_PREDICT_CHUNK overrides
DEFAULT_BATCH = {"cpu": 64, "cuda": 512}
FORMATS = ("tsv", "parquet")


@dataclass
class PredictResult:
    """What ``predict`` did: ``rows`` (one dict per input, in order) when no output file was given."""

    rows: list[dict] | None
    columns: list[str]
    output: str | None
    n_records: int
    truncated: int
    seconds: float
    logos: list[str] | None = None


def output_columns(head: dict) -> list[str]:
    if head["task"] == "regression":
        return ["name", "prediction"]
    return ["name", "prediction", *(f"prob_{name}" for name in head["label_names"])]


def _schema(head: dict, metadata: dict) -> pa.Schema:
    if head["task"] == "regression":
        prediction = pa.float64()
    else:
        prediction = pa.int64() if all(isinstance(n, int) for n in head["label_names"]) else pa.string()
    fields = [pa.field("name", pa.string()), pa.field("prediction", prediction)]
    fields += [pa.field(c, pa.float64()) for c in output_columns(head)[2:]]
    return pa.schema(fields, metadata={k: str(v) for k, v in metadata.items()})


def _chunks(records: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


class _Predictor:
    def __init__(self, model, batch_size: int, schema: pa.Schema, progress):
        self.model, self.head, self.batch_size = model, model.head, batch_size
        self.schema, self.progress = schema, progress
        self.truncated = 0

    def __call__(self, chunk: list) -> pa.RecordBatch:
        tokens = tokenize_split([r.sequence for r in chunk], np.zeros(len(chunk)), self.head["max_length"])
        self.truncated += tokens.truncated
        logits = predict_logits(self.model, tokens.tokens, self.batch_size, progress=self.progress)
        outputs = outputs_from_logits(self.head["task"], logits)
        columns = {"name": [r.name for r in chunk]}
        if self.head["task"] == "regression":
            columns["prediction"] = outputs.tolist()
        else:
            names = self.head["label_names"]
            columns["prediction"] = [names[i] for i in outputs.argmax(1)]
            for k, name in enumerate(names):
                columns[f"prob_{name}"] = outputs[:, k].tolist()
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)


def predict_format(output, fmt: str | None) -> str | None:
    """``fmt`` (tsv or parquet), else the format the name of ``output`` says; None without an output."""
    if output is None:
        return None
    if fmt is not None:
        if fmt not in FORMATS:
            raise CaduceusError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    name = str(output).lower()
    if name == "-" or is_special(output) or name.endswith((".tsv", ".tsv.gz", ".tsv.bgz")):
        return "tsv"
    if name.endswith(".parquet"):
        return "parquet"
    raise CaduceusError(f"{output}: cannot tell the output format from the file name: end it in .tsv, .tsv.gz or "
                        ".parquet, or give --format")


@contextlib.contextmanager
def _sink(output, fmt: str, schema: pa.Schema) -> Iterator:
    """A function that writes one record batch, as TSV or Parquet, committed at the end."""
    if fmt == "parquet":
        with parquet_sink(output, schema) as write:
            yield write
        return
    with open_output(output) as stream:
        for key, value in (schema.metadata or {}).items():
            stream.write(f"##{key.decode()}={' '.join(value.decode().split())}\n")
        stream.write("\t".join(schema.names) + "\n")

        def write(batch: pa.RecordBatch) -> None:
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            stream.write("".join("\t".join(_cell(c[i]) for c in cols) + "\n" for i in range(batch.num_rows)))

        yield write


def _cell(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def predict(model_dir, input, output=None, *, fasta=None, device=None, batch_size=None, progress=None,
            sequence_column=None, backend="auto", chunk_size: int | None = None, fmt: str | None = None,
            attribute: str | None = None, plot=None, plot_top: int | None = None, dtype=None) -> PredictResult:
    """Predict every record of ``input`` with the classifier in ``model_dir`` (with ``attribute``:
    per-base importances, and logos with ``plot``); see the module docstring. ``dtype``: the compute
    dtype (auto, fp32, bf16; None: auto)."""
    from ...model.checkpoint import load_classifier
    from . import attribute as attribution

    started = time.time()
    check_size("--batch-size", batch_size, maximum=MAX_BATCH)
    fmt = predict_format(output, fmt)
    if attribute is not None:
        attribution.check_method(attribute)
    if plot is not None:
        if attribute is None:
            raise CaduceusError("--plot draws the attributions of --attribute: add --attribute ism or saliency")
        plot_top = PLOT_TOP if plot_top is None else plot_top
        attribution.check_plot(plot, plot_top)
    elif plot_top is not None:
        raise CaduceusError("--plot-top chooses how many logos --plot draws: add --plot DIR")
    default_chunk = attribution.CHUNK_SIZE if attribute else CHUNK_SIZE
    chunk_size = check_size("chunk_size", chunk_size) or env_int("CADUCEUS_PREDICT_CHUNK", default_chunk, minimum=1)
    if output is not None and str(output) != "-":
        check_writable(output)
        refuse_overwriting_inputs(output, input, fasta)
    with torchrun(device) as runtime:
        model = load_classifier(model_dir, device=runtime.device, backend=backend, dtype=dtype)
        size = batch_size or DEFAULT_BATCH.get(runtime.device.type, 64)
        meta = provenance(model, input=input, task=model.head["task"])
        shown = progress if runtime.is_main else None
        if attribute is None:
            schema = _schema(model.head, meta)
            worker = _Predictor(model, size, schema, shown)
        else:
            prediction_type = _schema(model.head, {}).field("prediction").type
            schema = attribution.attribution_schema(model.head, attribute, prediction_type, meta)
            worker = attribution.Attributor(model, attribute, size, schema, shown)
        advise_on_cpu(progress, runtime.device)
        records = iter_records(input, fasta=fasta, sequence_column=sequence_column, labels=False)
        first = next(records, None)
        if first is None:  # before any output exists
            raise CaduceusError(f"{'<stdin>' if str(input) == '-' else input}: no sequences to predict (the file is empty)")
        records = itertools.chain([first], records)
        if plot is not None:
            records = attribution.refuse_long_for_plot(records)
        top = attribution.TopSequences(plot_top, attribute) if plot is not None else None
        folder = Path(output).resolve().parent if output is not None and str(output) != "-" else Path(tempfile.gettempdir())
        batches = run_sharded(_chunks(records, chunk_size), worker, runtime, folder, "predict")
        rows, count, logos = ([] if output is None else None), 0, None
        if output is None or runtime.is_main:
            with (_sink(output, fmt, schema) if output is not None else contextlib.nullcontext(rows.extend)) as write:
                for batch in batches:
                    write(batch.to_pylist() if output is None else batch)
                    count += batch.num_rows if attribute is None else attribution.sequences_in(batch)
                    if top is not None:
                        top.add(batch)
                if top is not None:  # before the output is committed: a failure leaves neither
                    logos = top.write(plot, model.head["task"])
        else:
            for _ in batches:  # this rank's share, written to its part file
                pass
        truncated = int(runtime.all_reduce([float(worker.truncated)])[0])
        runtime.barrier()
    columns = schema.names if attribute else output_columns(model.head)
    return PredictResult(rows, columns, None if output is None else str(output), count, truncated,
                         round(time.time() - started, 2), logos)
