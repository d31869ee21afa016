"""``write_track``: genome-scale per-base bigWig tracks from the wild-type marginal.

Unmasked tiles of ``window`` bp on the fixed grid of ``marginal.py`` (each base at least ``flank``
bases from a tile's edge) give the model's distribution over A, C, G, T at every base, renormalised
over the four bases; the statistics (one bigWig each):

- ``logp-ref``: log p(reference base), natural log (nats; 0 = certain, -1.39 = uniform);
- ``entropy``: entropy of the distribution in bits (0 = one base certain, 2 = uniform);
- ``mean-alt-llr``: mean over the three other bases of log p(alt) - log p(ref) (nats), the mean
  ``wt-marginal`` LLR of the three SNVs of the base (negative: the reference base is favoured).

Bases that are N in the reference get no value. Tiles are grouped in chunks; under torchrun chunk
i runs on rank ``i % world`` and rank 0 writes them in order (``runtime.run_sharded``); with
``resume`` the finished chunks are kept beside the (first) output until every track is complete.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ... import stopping
from ...choices import DEFAULT_MODEL
from ...dna import A, T, encode
from ...errors import CaduceusError
from ...io import provenance, refuse_overwriting_inputs
from ...progress import advise_on_cpu
from ...resume import ResumableOutput, kept_then_new
from ...runtime import Runtime, run_sharded, shard_location, torchrun
from ..variants.settings import DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW
from .bigwig import bigwig, check_bigwig_support
from .marginal import TileGrid, base_log_probs, tile_logits
from .settings import TRACK_CHUNK_TILES, TRACK_STATS, check_sizes
from .targets import Target, merged, read_targets

UNITS = {"logp-ref": "log p(reference base), natural log (nats), over A, C, G, T",
         "entropy": "entropy of p(A, C, G, T) in bits",
         "mean-alt-llr": "mean of log p(alt) - log p(ref) over the 3 other bases (nats)"}
_SUFFIXES = (".bw", ".bigwig")


def validate_stats(stats) -> tuple[str, ...]:
    if isinstance(stats, str):
        stats = [s.strip() for s in stats.split(",") if s.strip()]
    stats = tuple(dict.fromkeys(stats))
    bad = [s for s in stats if s not in TRACK_STATS]
    if bad or not stats:
        raise CaduceusError(f"--stat: unknown statistic {', '.join(bad) or '(none given)'}; choose from "
                            f"{', '.join(TRACK_STATS)}")
    return stats


def track_paths(output: str, stats: tuple[str, ...]) -> dict[str, str]:
    """The file of each statistic: ``output`` itself for one; ``out.bw`` -> ``out.entropy.bw`` ... for several."""
    if not str(output).lower().endswith(_SUFFIXES):
        raise CaduceusError(f"{output}: tracks are bigWig files: end the output name in .bw or .bigWig")
    if len(stats) == 1:
        return {stats[0]: str(output)}
    stem, dot, suffix = str(output).rpartition(".")
    return {s: f"{stem}.{s}{dot}{suffix}" for s in stats}


def track_values(logits: np.ndarray, ref_ids: np.ndarray, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    """(n,) float32 per statistic from (n, 5) logits of A, C, G, T, N and the (n,) reference token
    ids; NaN where the reference base is not A, C, G or T."""
    log_p = base_log_probs(logits).astype(np.float64)
    is_base = (ref_ids >= A) & (ref_ids <= T)
    index = np.where(is_base, ref_ids.astype(np.int64) - A, 0)
    ref = np.take_along_axis(log_p, index[:, None], axis=1)[:, 0]
    values = {"logp-ref": ref,
              "entropy": -(np.exp(log_p) * log_p).sum(1) / math.log(2),
              "mean-alt-llr": (log_p.sum(1) - 4 * ref) / 3}
    return {s: np.where(is_base, values[s], np.nan).astype(np.float32) for s in stats}


def write_track(fasta: str, regions: str | None = None, output: str = "track.bw", *, region: str | None = None,
                stats=("mean-alt-llr",), model=DEFAULT_MODEL, window: int | None = None, flank: int = DEFAULT_FLANK,
                batch_size: int | None = None, chunk_tiles: int = TRACK_CHUNK_TILES, resume: bool = False,
                device: str | None = None, dtype: str | None = None, backend: str = "auto",
                revision: str | None = None, progress: Callable[..., None] | None = None,
                set_total: Callable[[int], None] | None = None, runtime: Runtime | None = None) -> dict:
    """Write per-base bigWig tracks (``stats``) of every contig of ``fasta``, or of BED ``regions``
    or ``region`` (``-r`` text; overlapping regions are merged). ``window``: the tile length
    (default 1,536 bp capped at the model's trained length); ``flank``: the least context on each
    side of a base. Returns a summary (bases, seconds, bases/s, the files)."""
    stats = validate_stats(stats)
    paths = track_paths(output, stats)
    check_sizes(window=window, flank=flank, batch_size=batch_size, chunk_tiles=chunk_tiles)
    for path in paths.values():
        refuse_overwriting_inputs(path, fasta, regions)
        check_bigwig_support(path)
    from ...genome.fasta import Reference
    from ...model.loading import resolve_model, trained_length

    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(Reference(fasta))
        targets = merged(read_targets(reference, regions, region, whole=True), reference.contigs)
        rt = runtime or stack.enter_context(torchrun(device, collectives="gloo"))
        if rt.distributed and resume:
            raise CaduceusError("--resume works in one process, not under torchrun")
        loaded = resolve_model(model, device=rt.device if isinstance(model, str) else device, dtype=dtype,
                               backend=backend, revision=revision)
        window = window or min(DEFAULT_WINDOW, trained_length(loaded))
        grid = TileGrid(window, flank)
        advise_on_cpu(progress, loaded.device, "a CUDA GPU runs it much faster; under torchrun the tiles are shared "
                                                "between processes")
        batch = batch_size or (DEFAULT_BATCH if loaded.device.type == "cuda" else DEFAULT_BATCH_CPU)
        meta = provenance(loaded, window=window, flank=flank, reference=fasta, regions=regions or region)
        kept = ResumableOutput(paths[stats[0]], {"command": "track", **{k: v for k, v in meta.items() if k != "command"},
                                                 "stats": list(stats), "chunk_tiles": chunk_tiles},
                               {"fasta": fasta, "regions": regions}, enabled=resume)
        chunks = list(_chunks(targets, grid, chunk_tiles))
        total = sum(t.length for t in targets)
        if set_total is not None and rt.is_main:
            set_total(total)
        started = time.perf_counter()
        try:
            _run(rt, loaded, reference, grid, batch, chunks, stats, paths, meta, targets, kept, progress)
        except (stopping.Stopped, KeyboardInterrupt):
            kept.note_stopped()
            raise
        seconds = time.perf_counter() - started
    kept.finish()
    return {"bases": total, "regions": len(targets), "tiles": sum(k1 - k0 for _, k0, k1 in chunks),
            "window": window, "flank": flank, "seconds": round(seconds, 3),
            "bases_per_second": round(total / seconds, 1) if seconds else None, "outputs": paths,
            "rank": rt.rank, "world_size": rt.world_size}


def _chunks(targets: list[Target], grid: TileGrid, chunk_tiles: int) -> Iterator[tuple[Target, int, int]]:
    """(target, first tile, last tile + 1) of every chunk: ``chunk_tiles`` tiles of the grid."""
    for target in targets:
        tiles = grid.tiles_over(target.start, target.end)
        for k0 in range(tiles.start, tiles.stop, chunk_tiles):
            yield target, k0, min(k0 + chunk_tiles, tiles.stop)


def _schema(stats: tuple[str, ...]) -> pa.Schema:
    return pa.schema([pa.field("contig", pa.string()), pa.field("start", pa.int64())]
                     + [pa.field(s, pa.list_(pa.float32())) for s in stats])


def _run(rt: Runtime, model, reference, grid: TileGrid, batch_size: int, chunks: list, stats: tuple[str, ...],
         paths: dict[str, str], meta: dict[str, str], targets: list[Target], kept: ResumableOutput, progress) -> None:
    schema = _schema(stats)

    def work(chunk) -> pa.RecordBatch:
        target, k0, k1 = chunk
        a, b = max(target.start, grid.core_start(k0)), min(target.end, grid.core_start(k1))
        logits = tile_logits(model, reference, target.contig, range(k0, k1), grid, batch_size)
        logits = logits.reshape(-1, logits.shape[-1])[a - grid.core_start(k0):b - grid.core_start(k0)]
        sequence, _ = reference.fetch(target.contig, a, b)
        values = track_values(logits, encode(sequence, source=f"{reference.path}: {target.contig}:{a + 1}"), stats)
        if progress is not None:
            progress(b - a)
        return pa.RecordBatch.from_pydict({"contig": [target.contig], "start": [a],
                                           **{s: [values[s]] for s in stats}}, schema=schema)

    folder, stem = shard_location(paths[stats[0]], "caduceus-track")
    batches = run_sharded(itertools.islice(chunks, kept.chunks, None), work, rt, folder, stem)
    if not rt.is_main:
        for _ in batches:
            pass
        return
    if kept.chunks and progress is not None:
        progress(kept.records, resumed=True)
    order = {c: i for i, c in enumerate(reference.contigs)}
    used = sorted({t.contig for t in targets}, key=order.get)
    header = [(c, reference.contigs[c]) for c in used]
    with contextlib.ExitStack() as stack:
        writers = {s: stack.enter_context(bigwig(paths[s], header, {**meta, "track": s, "units": UNITS[s],
                                                                    "statistic": s})) for s in stats}
        for batch in kept_then_new(kept, batches, _chunk_bases):
            contig, start = batch.column("contig")[0].as_py(), batch.column("start")[0].as_py()
            for s in stats:
                writers[s].add(contig, start, batch.column(s)[0].values.to_numpy(zero_copy_only=False))


def _chunk_bases(batch: pa.RecordBatch) -> int:
    """The bases of a track chunk (column 2: the first statistic's values)."""
    return len(batch.column(2)[0].values)
