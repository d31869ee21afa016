"""``embed_regions``: the whole run, from the options to the written output.

Under torchrun (WORLD_SIZE > 1) chunk i of the regions is embedded by rank ``i % WORLD_SIZE`` and
rank 0 writes every row in input order (runtime.run_sharded); the other ranks return no rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ... import stopping
from ...choices import DEFAULT_MODEL
from ...errors import CaduceusError
from ...io import check_writable, output_format, provenance, refuse_overwriting_inputs
from ...progress import advise_on_cpu
from ...resume import ResumableOutput
from ...model.loading import resolve_model, trained_length
from ...runtime import Runtime, prefetch, resolve_device, run_sharded, shard_location, torchrun
from .compute import Embedder
from .settings import (DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA, DEFAULT_CENTER_WIDTH, DEFAULT_IO_THREADS,
                       DEFAULT_MAX_LENGTH, DEFAULT_MAX_TOKENS, DEFAULT_POOL, OUTPUT_SUFFIXES, EmbedSettings,
                       check_sizes)
from .sinks import MemorySink, _Sink, embedding_values, open_sink, rows_batch, sidecar_path
from .source import RegionSource

log = logging.getLogger("caduceus")


@dataclass
class EmbedResult:
    """What ``embed_regions`` did. ``table`` holds the rows when no output file was given."""

    output: str | None
    format: str | None
    n_regions: int
    n_skipped: int
    n_padded: int
    n_tiled: int
    bases: int
    seconds: float
    dim: int
    pool: str
    metadata: dict[str, str]
    table: pa.Table | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def embeddings(self) -> np.ndarray | list[np.ndarray]:
        """(n_regions, d) float32 (a list of (L, d) arrays with pool='none'); in-memory results only."""
        if self.table is None:
            raise CaduceusError("embeddings were written to a file; read them from there")
        return embedding_values(self.table.column("embedding").combine_chunks(), self.dim, self.pool)


class _Counter(_Sink):
    """Counts the rows a rank computed (the ranks that write no output)."""

    def _write(self, batch: pa.RecordBatch) -> None:
        pass


def embed_regions(fasta: str | os.PathLike, regions: str | os.PathLike | None = None,
                  output: str | os.PathLike | None = None, *, model=DEFAULT_MODEL, device: str | None = None,
                  dtype: str | None = None, backend: str = "auto", revision: str | None = None,
                  pool: str = DEFAULT_POOL, center_width: int = DEFAULT_CENTER_WIDTH, layer: int | None = None,
                  rc: bool = True, window: int | None = None, tile: bool = False, tile_overlap: int | None = None,
                  max_length: int | None = None, batch_size: int | None = None, max_tokens: int | None = None,
                  context: int | None = None,
                  fmt: str | None = None, skip_invalid: bool = False, io_threads: int = DEFAULT_IO_THREADS,
                  resume: bool = False, progress: Callable[[int], None] | None = None,
                  set_total: Callable[[int], None] | None = None, stdin=None,
                  runtime: Runtime | None = None) -> EmbedResult:
    """Embed every region of ``regions`` (BED; None: every record of ``fasta``) with a Caduceus model.

    ``output``: a .parquet/.npy/.npz/.tsv path, '-' for TSV on stdout, or None to return the rows in
    ``EmbedResult.table`` (``.embeddings`` gives the matrix); ``fmt`` (``--format``) names the
    format when the file name does not. ``model``: 'bundled', a folder, a hub id
    (at ``revision``), or a loaded CaduceusForMaskedLM. Rows keep the input order. ``device``: None
    picks cuda:LOCAL_RANK when CUDA is there. Under torchrun (WORLD_SIZE > 1; or a given ``runtime``)
    each rank embeds its share and rank 0 writes the output (other ranks get ``output=None`` and no
    table). ``resume`` keeps finished chunks beside the output and continues an interrupted run
    from them. ``context``: the model reads that many bases centred on each region (N-padded past
    contig ends) and the region's own positions are pooled (None: the model reads the region).
    ``progress(n)``/``set_total(n)`` report regions done and to do. See docs/embed.md.
    """
    check_sizes(window=window, center_width=center_width, tile_overlap=tile_overlap, max_length=max_length,
                batch_size=batch_size, max_tokens=max_tokens, io_threads=io_threads)
    fmt = None if output is None else output_format(output, fmt, OUTPUT_SUFFIXES, stream="tsv")
    _check_output(output, fmt, fasta, regions)
    if resume and (output is None or str(output) == "-"):
        raise CaduceusError("--resume needs -o FILE: stdout cannot be continued")
    with _runtime(runtime, device) as rt:
        loaded = resolve_model(model, device=device if _is_loaded(model) else rt.device, dtype=dtype,
                               backend=backend, revision=revision)
        started = time.perf_counter()  # rates exclude loading the model
        settings = EmbedSettings(
            pool=pool, center_width=center_width, layer=layer, conjoin=rc, window=window, tile=tile,
            tile_overlap=tile_overlap, max_length=max_length or trained_length(loaded, DEFAULT_MAX_LENGTH),
            batch_size=batch_size or (DEFAULT_BATCH_CUDA if loaded.device.type == "cuda" else DEFAULT_BATCH_CPU),
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS, skip_invalid=skip_invalid, io_threads=io_threads,
            context=context,
        ).validate(loaded.config.n_layer)
        if context is not None and context > settings.max_length:
            log.warning("--context %d is longer than the %d bp this model was trained on: its outputs there are "
                        "untested (give --context %d or less)", context, settings.max_length, settings.max_length)
        if context is not None:
            from ..variants.context import check_cpu_time

            check_cpu_time(loaded, context, 0, 1, explicit=True, unit="region")
        if loaded.config.rcps and not rc:
            log.info("--no-rc has no effect on Caduceus-PS: both strands come from one pass and are averaged")
        if resume and rt.distributed:
            raise CaduceusError("--resume works in one process, not under torchrun")
        metadata = _metadata(loaded, settings, fasta, regions)
        kept = _kept_progress(output, fmt, metadata, settings, fasta, regions, resume)
        source = RegionSource(fasta, regions, settings, stdin=stdin)
        advise_on_cpu(progress, loaded.device)
        try:
            if set_total is not None and not rt.distributed and regions is not None and str(regions) != "-":
                _report_total(source, set_total)
            result = _embed(source, Embedder(loaded, settings), rt, output, fmt, metadata, progress, started, kept)
        except (stopping.Stopped, KeyboardInterrupt):
            if kept is not None:
                kept.note_stopped()
            raise
        finally:
            source.close()
    if kept is not None:
        kept.finish()
    return result


def _is_loaded(model) -> bool:
    import torch.nn as nn

    return isinstance(model, nn.Module)


def _check_output(output, fmt: str | None, fasta, regions) -> None:
    """Refuse, before any work, an output that would replace an input or cannot be written."""
    if output is None or str(output) == "-":
        return
    refuse_overwriting_inputs(output, fasta, regions)
    check_writable(output)
    if fmt in ("npy", "npz"):
        refuse_overwriting_inputs(sidecar_path(output), fasta, regions)
        check_writable(sidecar_path(output))


@contextlib.contextmanager
def _runtime(runtime: Runtime | None, device) -> Iterator[Runtime]:
    """The given runtime, or this process's under torchrun (gloo: ranks exchange only barriers, a
    token and three counts, so NCCL's GPU memory is not needed)."""
    if runtime is not None:
        if runtime.device is None:
            runtime.device = resolve_device(device, runtime.local_rank)
        yield runtime
        return
    with torchrun(device, collectives="gloo") as rt:
        yield rt


def _metadata(model, settings: EmbedSettings, fasta, regions) -> dict[str, str]:
    metadata = provenance(
        model, pool=settings.pool, center_width=settings.center_width if settings.pool == "center" else "",
        layer="last" if settings.layer in (None, -1) else settings.layer,
        rc_conjoin=("ps-strands-averaged" if model.config.rcps else str(settings.conjoin).lower()),
        window=settings.window or "region", context=settings.context or "", tile=str(settings.tile).lower(),
        tile_overlap=settings.overlap if settings.tile else "", max_length=settings.max_length,
        embedding_dim=model.config.d_model, variant=model.config.variant, batch_size=settings.batch_size,
        fasta=str(fasta), regions=str(regions) if regions is not None else "(every FASTA record)",
    )
    return {k: v for k, v in metadata.items() if v != ""}


def _report_total(source: RegionSource, set_total: Callable[[int], None]) -> None:
    """The regions that will be embedded: every BED record, or with --skip-invalid those that pass
    the checks against the reference (a skipped region must not count in the ETA)."""
    if source.settings.skip_invalid:
        total = source.count_valid()
    else:
        from ...genome.bed import count_bed_records

        total = count_bed_records(source.regions)
    if total is not None:
        set_total(total)


def _kept_progress(output, fmt, metadata: dict[str, str], settings: EmbedSettings, fasta, regions,
                   resume: bool) -> ResumableOutput | None:
    """The progress of this run beside a file output (kept only with --resume)."""
    if output is None or str(output) == "-":
        return None
    identity = {"command": "embed", **{k: v for k, v in metadata.items() if k != "command"}, "format": fmt,
                "max_tokens": settings.max_tokens, "skip_invalid": settings.skip_invalid}
    return ResumableOutput(output, identity, {"fasta": str(fasta), "regions": None if regions is None else str(regions)},
                           enabled=resume)


def _embed(source: RegionSource, embedder: Embedder, rt: Runtime, output, fmt, metadata: dict[str, str],
           progress, started: float, kept: ResumableOutput | None = None) -> EmbedResult:
    settings, mine = embedder.settings, _Counter(embedder.dim, embedder.settings.pool, metadata)
    failed = {"last": 0}

    def work(chunk):
        batch = rows_batch(chunk, embedder.embed_chunk(chunk, progress), embedder.dim, settings.pool)
        mine.write(batch)
        failed["last"] = getattr(chunk, "failed", 0)
        return batch

    done = kept.chunks if kept is not None else 0
    batches = run_sharded(prefetch(source.chunks(rt, first=done)), work, rt, *shard_location(output, "caduceus-embed"))
    if not rt.is_main:
        for _ in batches:  # computes and writes this rank's part
            pass
        skipped = _skipped_everywhere(source, rt)
        return _result(None, None, mine, skipped, source, started, metadata)
    with open_sink(output, fmt, embedder.dim, settings.pool, metadata) as sink:
        if kept is not None:
            _replay(kept, sink, source, progress)
        for batch in batches:
            sink.write(batch)
            if kept is not None:
                kept.add(batch, batch.num_rows, failed=failed["last"])
        skipped = _skipped_everywhere(source, rt)
        sink.finish({**sink.counts(), "n_skipped": str(skipped),
                     **({"world_size": str(rt.world_size)} if rt.distributed else {})})
    _warn(source, sink, skipped)
    return _result(output, fmt, sink, skipped, source, started, metadata)


def _replay(kept: ResumableOutput, sink: _Sink, source: RegionSource, progress) -> None:
    """The chunks an interrupted run finished, written again in order (and counted)."""
    for batch in kept.replay():
        sink.write(batch)
    source.note_replayed(kept.counters.get("failed", 0))
    if kept.records and progress is not None:
        progress(kept.records, resumed=True)


def _skipped_everywhere(source: RegionSource, rt: Runtime) -> int:
    """Regions skipped by every rank: problems found while validating are seen by all ranks, those
    found while reading a rank's own sequences only by that rank."""
    found_while_reading = int(rt.all_reduce([float(source.skipped_fetched)])[0])
    return source.skipped - source.skipped_fetched + found_while_reading


def _warn(source: RegionSource, sink: _Sink, skipped: int) -> None:
    if skipped:
        shown = source.first_problems
        first = f"; the first {len(shown)}:" if len(shown) < skipped else ":"
        log.warning("skipped %d invalid region(s)%s%s", skipped, first, "".join(f"\n  {p}" for p in shown))
    if sink.padded_rows:
        log.warning("%d region(s) reach past a contig end and were padded with N (column n_padded)", sink.padded_rows)


def _result(output, fmt, sink: _Sink, skipped: int, source: RegionSource, started: float,
            metadata: dict[str, str]) -> EmbedResult:
    return EmbedResult(
        output=None if output is None else str(output), format=fmt, n_regions=sink.rows, n_skipped=skipped,
        n_padded=sink.padded_rows, n_tiled=sink.tiled_rows, bases=sink.bases, seconds=time.perf_counter() - started,
        dim=sink.dim, pool=sink.pool, metadata={**metadata, **sink.counts(), "n_skipped": str(skipped)},
        table=sink.table() if isinstance(sink, MemorySink) else None, problems=list(source.first_problems))
