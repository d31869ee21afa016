"""``ism``: in-silico saturation mutagenesis of BED regions or ``-r`` regions of a reference.

Every position whose base is A, C, G or T gets three rows, one per other base, with one score
column per method (``ism_methods.py``). Positions are scored in chunks aligned to the genome (to
the wt-marginal tile grid when that method runs, so that no tile is read twice); under torchrun
chunk i runs on rank ``i % world`` and rank 0 writes them in order (``runtime.run_sharded``);
with ``resume`` the finished chunks are kept beside the output (``resume.py``) until it is complete.

Outputs: Parquet rows (``output``: region, chrom, pos 1-based, ref, alt, one column per method;
provenance in the schema metadata), a per-base bigWig of one method (``bigwig``: the mean, min or
max of the three ALT scores at each position, named in the provenance file beside it), and a
sequence logo of one region (``plot``, ``ism_outputs.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Callable, Iterator

import pyarrow as pa

from ... import stopping
from ...choices import DEFAULT_MODEL
from ...errors import CaduceusError
from ...io import parquet_sink, provenance, refuse_overwriting_inputs
from ...progress import advise_on_cpu
from ...resume import ResumableOutput, kept_then_new
from ...runtime import Runtime, run_sharded, shard_location, torchrun
from ..variants.settings import DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW
from . import ism_outputs
from .ism_methods import CLASSIFIER, ClassifierIsm, LanguageModelIsm, column, substitutions, validate_methods
from .marginal import TileGrid
from .settings import ISM_CHUNK, check_sizes
from .targets import Target, read_targets



def ism(fasta: str, regions: str | None = None, output: str | None = None, *, region: str | None = None,
        methods=None, model=DEFAULT_MODEL, window: int | None = None, flank: int = DEFAULT_FLANK,
        batch_size: int | None = None, chunk_size: int = ISM_CHUNK, class_label: str | None = None,
        bigwig: str | None = None, bigwig_stat: str = "mean", plot: str | None = None, resume: bool = False,
        device: str | None = None, dtype: str | None = None, backend: str = "auto", revision: str | None = None,
        progress: Callable[..., None] | None = None, set_total: Callable[[int], None] | None = None,
        runtime: Runtime | None = None) -> dict:
    """Score every SNV of the regions (``regions``: a BED file, or ``region``: ``-r`` text) of
    ``fasta`` by ``methods`` (masked, wt-marginal, embedding; classifier for a fine-tuned
    ``model``) and write ``output`` (.parquet), ``bigwig`` and ``plot`` (PNG). ``window``: the
    model's input around each position (default: 1,536 bp capped at the model's trained length, as
    in score-variants); ``flank``: the wt-marginal tiles' least context. Returns a summary; without
    ``output`` it holds the rows as a pyarrow Table under ``table``."""
    if output is not None and not str(output).lower().endswith(".parquet"):
        raise CaduceusError(f"{output}: ism writes Parquet: end the output name in .parquet")
    if resume and output is None:
        raise CaduceusError("--resume needs -o FILE.parquet")
    check_sizes(window=window, flank=flank, batch_size=batch_size, chunk_size=chunk_size)
    ism_outputs.check_outputs(output, bigwig, bigwig_stat, plot)
    for path in (output, bigwig, plot):
        refuse_overwriting_inputs(path, fasta, regions)
    from ...genome.fasta import Reference

    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(Reference(fasta))
        targets = read_targets(reference, regions, region)
        ism_outputs.check_targets(targets, bigwig, plot)
        rt = runtime or stack.enter_context(torchrun(device, collectives="gloo"))
        if rt.distributed and resume:
            raise CaduceusError("--resume works in one process, not under torchrun")
        loaded, is_classifier = _load(model, rt, device, dtype, backend, revision)
        methods = validate_methods(methods, is_classifier)
        window = _window(loaded, window, is_classifier)
        batch = batch_size or (DEFAULT_BATCH if loaded.device.type == "cuda" else DEFAULT_BATCH_CPU)
        if is_classifier:
            scorer = ClassifierIsm(loaded, reference, batch, class_label)
            for t in targets:
                scorer.check(t)
        else:
            scorer = LanguageModelIsm(loaded, reference, methods, window, flank, batch)
        step = _chunk_step(methods, window, flank, chunk_size)
        faster = ("a CUDA GPU runs it much faster" + (", and --method wt-marginal reads a whole tile per pass"
                                                     if set(methods) & {"masked", "embedding"} else ""))
        advise_on_cpu(progress, loaded.device, faster)
        meta = provenance(loaded, methods=",".join(methods), window=window if not is_classifier else None,
                          flank=flank if "wt-marginal" in methods else None, reference=fasta, regions=regions or region,
                          class_label=class_label)
        kept = ResumableOutput(output, {"command": "ism", **{k: v for k, v in meta.items() if k != "command"},
                                        "chunk": step}, {"fasta": fasta, "regions": regions},
                               enabled=resume) if output is not None else None
        chunks = list(_chunks(targets, step))
        if set_total is not None and rt.is_main:
            set_total(sum(t.length for t in targets))
        schema = ism_outputs.schema(methods, meta)
        started = time.perf_counter()
        try:
            table, n_rows = _run(rt, scorer, reference, chunks, schema, methods, output, kept, progress,
                         keep_rows=output is None or bigwig is not None or plot is not None)
        except (stopping.Stopped, KeyboardInterrupt):
            if kept is not None:
                kept.note_stopped()
            raise
        seconds = time.perf_counter() - started
        if rt.is_main and table is not None:
            if bigwig is not None:
                ism_outputs.write_bigwig(bigwig, table, targets, reference.contigs, methods[0], bigwig_stat, meta)
            if plot is not None:
                ism_outputs.write_plot(plot, table, targets[0], methods[0], loaded)
    if kept is not None:
        kept.finish()
    positions = sum(t.length for t in targets)
    result = {"regions": len(targets), "positions": positions, "rows": n_rows,
              "methods": list(methods), "window": window, "seconds": round(seconds, 3),
              "positions_per_second": round(positions / seconds, 3) if seconds else None, "output": output,
              "bigwig": bigwig, "plot": plot, "rank": rt.rank, "world_size": rt.world_size}
    if output is None:
        result["table"] = table
    return result


def _load(model, rt: Runtime, device, dtype, backend, revision):
    """(the model on this rank's device, whether it is a fine-tuned classifier)."""
    import os

    from ...model.checkpoint import CaduceusConfig, is_classifier, load_classifier, resolve_model_dir
    from ...model.loading import resolve_model

    if not isinstance(model, (str, os.PathLike)):
        return resolve_model(model, device=device, dtype=dtype, backend=backend), hasattr(model, "head")
    folder, _ = resolve_model_dir(model, revision)
    if is_classifier(CaduceusConfig.from_json(folder / "config.json")):
        return load_classifier(model, device=rt.device, dtype=dtype, revision=revision, backend=backend), True
    return resolve_model(model, device=rt.device, dtype=dtype, backend=backend, revision=revision), False


def _window(model, window: int | None, is_classifier: bool) -> int:
    from ...model.loading import trained_length

    if is_classifier:
        if window is not None:
            raise CaduceusError("--window does not apply to a classifier: it reads each region whole (give regions "
                                "of its input length)")
        return 0
    trained = trained_length(model)
    if window is None:
        return min(DEFAULT_WINDOW, trained)
    return window


def _chunk_step(methods: tuple[str, ...], window: int, flank: int, chunk_size: int) -> int:
    """Positions per chunk: ``chunk_size``, rounded up to whole wt-marginal tile cores when that
    method runs (so that every tile is read once)."""
    if "wt-marginal" not in methods:
        return chunk_size
    core = TileGrid(window, flank).core
    return core * math.ceil(chunk_size / core)


def _chunks(targets: list[Target], step: int) -> Iterator[tuple[Target, int, int]]:
    """(target, start, end) of every chunk, cut at multiples of ``step`` on the genome."""
    for target in targets:
        start = target.start
        while start < target.end:
            end = min(target.end, (start // step + 1) * step)
            yield target, start, end
            start = end


def _run(rt: Runtime, scorer, reference, chunks: list, schema: pa.Schema, methods: tuple[str, ...], output,
         kept: ResumableOutput | None, progress, keep_rows: bool) -> tuple[pa.Table | None, int]:
    """Score the chunks not done yet; write every chunk (the kept ones first) in order; return the
    rows when they are needed (bigWig, plot, or no output file) and their number."""
    done = kept.chunks if kept is not None else 0

    def work(chunk) -> pa.RecordBatch:
        target, start, end = chunk
        positions, refs = substitutions(reference, target, start, end)
        scores = scorer.scores(target, positions, refs) if positions else {}
        if progress is not None:
            progress(end - start)
        extra = {"class": scorer.class_name(target)} if CLASSIFIER in methods else {}
        return ism_outputs.rows(target, positions, refs, {column(m): scores.get(m) for m in methods}, schema, extra)

    batches = run_sharded(itertools.islice(chunks, done, None), work, rt, *shard_location(output, "caduceus-ism"))
    if not rt.is_main:
        for _ in batches:
            pass
        return None, 0
    if kept is not None and kept.chunks and progress is not None:
        progress(sum(end - start for _, start, end in chunks[:done]), resumed=True)
    collected: list[pa.RecordBatch] = []
    count = 0
    with parquet_sink(output, schema) as write:
        for batch in kept_then_new(kept, batches):
            write(batch)
            count += batch.num_rows
            if keep_rows:
                collected.append(batch)
    return (pa.Table.from_batches(collected, schema=schema) if keep_rows else None), count
