"""Embeddings of genomic regions (FASTA + BED, or every record of a FASTA) at genome scale.

The flow, for any number of regions with bounded memory::

    BED/FASTA --(reader thread: parse, validate, shard, fetch, reverse-complement, tokenize)-->
    chunks of regions --(main thread: batches of equal length -> embed_tokens)--> rows in input order
    --> sink (Parquet row groups / streamed .npy / .npz / TSV), written to a temporary file and renamed.

Sequences in one batch always have the same length: a bi-directional model sees padding, so mixed
lengths are never padded together. Regions longer than the model's trained length are refused, or
tiled with ``tile=True`` (each position takes its features from the tile where it is most central).
Under torchrun (WORLD_SIZE > 1) region i belongs to rank ``i % WORLD_SIZE``; each rank writes a part
and rank 0 merges the parts in input order into the requested output.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import struct
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CaduceusError
from ..genome.bed import BedReader, Region
from ..genome.windows import central_slice, centred_on, fetch_window, tile_cores, tile_starts
from ..io import atomic_file, check_writable, open_output, provenance, temporary_file

log = logging.getLogger("caduceus")

DEFAULT_MAX_LENGTH = 131072  # the published Caduceus checkpoints were trained on 131,072 bp
DEFAULT_CENTER_WIDTH = 1536  # the paper's VEP features: mean over 1,536 bp around the centre
FORMATS = ("parquet", "npy", "npz", "tsv")
POOLS = ("mean", "max", "center", "none")
REGION_COLUMNS = ("contig", "start", "end", "name", "strand", "window_start", "window_end", "n_padded", "n_tiles")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz", ".tsv": "tsv", ".txt": "tsv"}


# ---------------------------------------------------------------------------------------------
# settings and planning
# ---------------------------------------------------------------------------------------------
@dataclass
class EmbedSettings:
    pool: str = "mean"
    center_width: int = DEFAULT_CENTER_WIDTH
    layer: int | None = None
    conjoin: bool = True
    window: int | None = None
    tile: bool = False
    tile_overlap: int | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = 8
    max_tokens: int = 1 << 17
    skip_invalid: bool = False
    io_threads: int = 2

    @property
    def overlap(self) -> int:
        return self.tile_overlap if self.tile_overlap is not None else self.max_length // 8

    @property
    def chunk_bases(self) -> int:
        """Bases read ahead per chunk: bounds memory (per-position output is d floats per base)."""
        return 1 << 18 if self.pool == "none" else 1 << 24

    @property
    def chunk_regions(self) -> int:
        return max(1024, 8 * self.batch_size)


@dataclass
class Job:
    """One region on its way through the pipeline; ``index`` is its rank in the input order."""

    index: int
    region: Region
    window_start: int
    window_end: int
    contig: str | None = None  # the reference's spelling (None for FASTA-record input)
    ids: np.ndarray | None = None  # uint8 token ids of the strand-oriented window
    n_padded: int = 0
    tile_starts: list[int] = field(default_factory=lambda: [0])

    @property
    def length(self) -> int:
        return self.window_end - self.window_start


def _check_length(job: Job, settings: EmbedSettings) -> None:
    if job.length == 0:
        raise CaduceusError(f"{job.region.where()}: empty region (start == end == {job.region.start}): "
                            "give --window N to embed N bp around it")
    if job.length > settings.max_length and not settings.tile:
        raise CaduceusError(
            f"{job.region.where()}: region of {job.length:,} bp is longer than the model's trained length "
            f"({settings.max_length:,} bp): use --tile to tile it, --window N to embed a fixed window, "
            "or --max-length to raise the limit")
    if job.length > settings.max_length:
        job.tile_starts = tile_starts(job.length, settings.max_length, settings.overlap)


def plan_bed_region(index: int, region: Region, reference, settings: EmbedSettings) -> Job:
    """Validate a BED region against the reference; raises CaduceusError naming the BED line."""
    contig = reference.resolve_contig(region.contig)
    if contig is None:
        names = list(reference.contigs)
        shown = ", ".join(names[:5]) + (f" ... ({len(names)} contigs)" if len(names) > 5 else "")
        raise CaduceusError(f"{region.where()}: contig {region.contig!r} is not in {reference.path.name} "
                            f"(it has {shown}): wrong genome build? --skip-invalid skips such regions")
    size = reference.contigs[contig]
    if region.start >= size and (region.length > 0 or region.start > size):
        raise CaduceusError(f"{region.where()}: region {region.contig}:{region.start}-{region.end} starts past "
                            f"the end of {contig} ({size:,} bp): wrong genome build?")
    ws, we = centred_on(region.start, region.end, settings.window)
    job = Job(index, region, ws, we, contig)
    _check_length(job, settings)
    return job


def _encode(seq: str, job: Job) -> np.ndarray:
    """Token ids of the strand-oriented window sequence ``seq``."""
    from ..model.tokenizer import encode

    r = job.region
    return encode(seq, source=f"{r.where()} ({r.contig}:{r.start}-{r.end})")


# ---------------------------------------------------------------------------------------------
# reading: regions -> validated, sharded, fetched chunks (runs on a background thread)
# ---------------------------------------------------------------------------------------------
class RegionSource:
    """Valid regions in input order, as chunks of fetched Jobs; invalid ones raise or are counted."""

    def __init__(self, fasta: str | os.PathLike, regions: str | os.PathLike | None, settings: EmbedSettings,
                 rank: int = 0, world: int = 1, stdin=None):
        self.fasta, self.regions, self.settings = fasta, regions, settings
        self.rank, self.world, self.stdin = rank, world, stdin
        self.skipped = 0
        self.skipped_fetched = 0
        self.first_problems: list[str] = []
        self.reference = None
        self.bed = None
        if regions is not None:
            from ..genome.fasta import Reference

            self.bed = BedReader(regions, settings.skip_invalid, stdin=stdin)
            self.reference = Reference(fasta)
        elif str(fasta) != "-" and not Path(fasta).exists():
            raise CaduceusError(f"{fasta}: no such FASTA file")

    def _invalid(self, error: CaduceusError, fetched: bool = False) -> None:
        """Raise, or count (``fetched``: found while reading this rank's own sequences, so the
        other ranks do not see it)."""
        if not self.settings.skip_invalid:
            raise error
        self.skipped += 1
        self.skipped_fetched += fetched
        if len(self.first_problems) < 3:
            self.first_problems.append(str(error))

    def _bed_jobs(self) -> Iterator[Job]:
        index = 0
        for region in self.bed:
            try:
                job = plan_bed_region(index, region, self.reference, self.settings)
            except CaduceusError as e:
                self._invalid(e)
                continue
            index += 1
            if job.index % self.world == self.rank:
                yield job

    def _record_jobs(self) -> Iterator[Job]:
        from ..genome.fasta import read_fasta_records

        index = 0
        label = "<stdin>" if str(self.fasta) == "-" else str(self.fasta)
        for recno, (name, seq) in enumerate(read_fasta_records(self.fasta, stdin=self.stdin), start=1):
            region = Region(name, 0, len(seq), name, "+", recno, label, unit="record")
            ws, we = centred_on(0, len(seq), self.settings.window)
            job = Job(index, region, ws, we)
            try:
                _check_length(job, self.settings)
            except CaduceusError as e:
                self._invalid(e)
                continue
            index += 1  # the same on every rank: sharding must not depend on this rank's fetches
            if job.index % self.world != self.rank:
                continue
            left, right = max(0, -ws), max(0, we - len(seq))
            job.n_padded = left + right
            try:
                job.ids = _encode("N" * left + seq[max(ws, 0):min(we, len(seq))] + "N" * right, job)
            except CaduceusError as e:
                self._invalid(e, fetched=True)
                continue
            yield job

    def _fetch(self, job: Job) -> Job | CaduceusError:
        seq, job.n_padded = fetch_window(self.reference, job.contig, job.window_start, job.window_end,
                                         job.region.strand)
        try:
            job.ids = _encode(seq, job)
        except CaduceusError as e:
            return e
        return job

    def chunks(self) -> Iterator[list[Job]]:
        """Lists of fetched jobs, bounded in count and bases."""
        s = self.settings
        jobs = self._bed_jobs() if self.bed is not None else self._record_jobs()
        pool = ThreadPoolExecutor(max(1, s.io_threads), thread_name_prefix="caduceus-fetch") if self.bed else None
        try:
            chunk, bases = [], 0
            for job in jobs:
                chunk.append(job)
                bases += job.length
                if len(chunk) >= s.chunk_regions or bases >= s.chunk_bases:
                    yield self._finish(chunk, pool)
                    chunk, bases = [], 0
            if chunk:
                yield self._finish(chunk, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            if self.bed is not None:
                self.skipped += self.bed.skipped
                self.first_problems += self.bed.first_problems[: max(0, 3 - len(self.first_problems))]

    def _finish(self, chunk: list[Job], pool) -> list[Job]:
        if pool is None:
            return chunk
        out = []
        for item in pool.map(self._fetch, chunk):
            if isinstance(item, CaduceusError):
                self._invalid(item, fetched=True)
            else:
                out.append(item)
        return out

    def close(self) -> None:
        if self.reference is not None:
            self.reference.close()


def prefetch(iterable: Iterable, depth: int = 2) -> Iterator:
    """Run ``iterable`` on a background thread, ``depth`` items ahead; errors are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in iterable:
                if not put(("item", item)):
                    return
            put(("done", done))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("error", e))

    thread = threading.Thread(target=run, name="caduceus-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                break
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


# ---------------------------------------------------------------------------------------------
# the model: batches of equal length, tiles stitched back together
# ---------------------------------------------------------------------------------------------
class _Accumulator:
    """Pooled features of a tiled region, built tile by tile from each tile's core positions.

    Works per strand, as ``embed_tokens`` does (pool each strand, then average the strands), so a
    tiled region is pooled exactly like an untiled one would be."""

    def __init__(self, job: Job, settings: EmbedSettings, tile: int):
        self.pool, self.length = settings.pool, job.length
        self.cores = tile_cores(job.tile_starts, tile, job.length)
        self.remaining = len(job.tile_starts)
        centre = central_slice(self.length, settings.center_width)
        self.center = (centre.start, centre.stop)
        self.value = None
        self.pieces: dict[int, np.ndarray] = {}

    def add(self, k: int, tile_start: int, features) -> None:
        """``features``: (T, d, S) per-position, per-strand features of tile k (a torch tensor)."""
        a, b = self.cores[k]
        if self.pool == "center":
            a, b = max(a, self.center[0]), min(b, self.center[1])
        core = features[a - tile_start:b - tile_start]
        self.remaining -= 1
        if self.pool == "none":
            self.pieces[k] = core.mean(-1).cpu().numpy()
            return
        if b <= a:
            return
        part = (core.amax(0) if self.pool == "max" else core.double().sum(0)).cpu().numpy()
        if self.value is None:
            self.value = part
        else:
            self.value = np.maximum(self.value, part) if self.pool == "max" else self.value + part

    def result(self) -> np.ndarray:
        if self.pool == "none":
            return np.concatenate([self.pieces[k] for k in sorted(self.pieces)]).astype(np.float32)
        if self.pool == "max":
            return self.value.mean(-1).astype(np.float32)
        count = self.center[1] - self.center[0] if self.pool == "center" else self.length
        return (self.value.mean(-1) / count).astype(np.float32)


class Embedder:
    """Runs the model over chunks of jobs: equal-length batches, results back in job order."""

    def __init__(self, model, settings: EmbedSettings):
        self.model, self.settings = model, settings
        self.dim = model.config.d_model

    def _batches(self, items: list[tuple[int, int, np.ndarray]]) -> Iterator[list[tuple[int, int, np.ndarray]]]:
        by_length: dict[int, list] = {}
        for item in items:
            by_length.setdefault(len(item[2]), []).append(item)
        for length in sorted(by_length):
            group = by_length[length]
            rows = max(1, min(self.settings.batch_size, self.settings.max_tokens // max(1, length)))
            for i in range(0, len(group), rows):
                yield group[i:i + rows]

    def embed_chunk(self, jobs: list[Job], progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Embeddings of ``jobs`` in order: (d,) pooled or (L, d) with pool='none', float32."""
        import torch

        from .features import embed_tokens, pool_positions, strand_features

        s, model = self.settings, self.model
        results: list[np.ndarray | None] = [None] * len(jobs)
        accumulators: dict[int, _Accumulator] = {}
        items = []  # (job position, tile number or -1, ids)
        for pos, job in enumerate(jobs):
            if len(job.tile_starts) == 1:
                items.append((pos, -1, job.ids))
                continue
            accumulators[pos] = _Accumulator(job, s, s.max_length)
            for k, t0 in enumerate(job.tile_starts):
                items.append((pos, k, job.ids[t0:t0 + s.max_length]))
        for batch in self._batches(items):
            ids = torch.from_numpy(np.stack([b[2] for b in batch])).to(model.device, non_blocking=True).long()
            done = 0
            if all(k < 0 for _, k, _ in batch):
                out = embed_tokens(model, ids, pool=s.pool, layer=s.layer, conjoin=s.conjoin,
                                   center_width=s.center_width).cpu().numpy()
                for row, (pos, _, _) in enumerate(batch):
                    results[pos] = out[row]
                done = len(batch)
            else:
                feats = strand_features(model, ids, s.layer, s.conjoin)  # (B, T, d, S)
                for row, (pos, k, _) in enumerate(batch):
                    if k < 0:  # a whole region as long as a tile: pooled as embed_tokens does
                        pooled = pool_positions(feats[row:row + 1], s.pool, s.center_width).mean(-1)
                        results[pos] = pooled[0].cpu().numpy()
                        done += 1
                        continue
                    acc = accumulators[pos]
                    acc.add(k, jobs[pos].tile_starts[k], feats[row])
                    if acc.remaining == 0:
                        results[pos] = acc.result()
                        done += 1
            if progress is not None and done:
                progress(done)
        return results


# ---------------------------------------------------------------------------------------------
# rows: pyarrow record batches
# ---------------------------------------------------------------------------------------------
def schema_for(dim: int, pool: str, with_index: bool = False, metadata: dict | None = None) -> pa.Schema:
    inner = pa.list_(pa.float32(), dim)
    emb = pa.list_(inner) if pool == "none" else inner
    fields = ([pa.field("index", pa.int64())] if with_index else []) + [
        pa.field("contig", pa.string()), pa.field("start", pa.int64()), pa.field("end", pa.int64()),
        pa.field("name", pa.string()), pa.field("strand", pa.string()),
        pa.field("window_start", pa.int64()), pa.field("window_end", pa.int64()),
        pa.field("n_padded", pa.int32()), pa.field("n_tiles", pa.int32()),
        pa.field("embedding", emb),
    ]
    return pa.schema(fields, metadata=metadata)


def rows_batch(jobs: list[Job], embeddings: list[np.ndarray], dim: int, pool: str, with_index: bool) -> pa.RecordBatch:
    cols = {
        "contig": pa.array([j.region.contig for j in jobs], pa.string()),
        "start": pa.array([j.region.start for j in jobs], pa.int64()),
        "end": pa.array([j.region.end for j in jobs], pa.int64()),
        "name": pa.array([j.region.name for j in jobs], pa.string()),
        "strand": pa.array([j.region.strand for j in jobs], pa.string()),
        "window_start": pa.array([j.window_start for j in jobs], pa.int64()),
        "window_end": pa.array([j.window_end for j in jobs], pa.int64()),
        "n_padded": pa.array([j.n_padded for j in jobs], pa.int32()),
        "n_tiles": pa.array([len(j.tile_starts) for j in jobs], pa.int32()),
    }
    if pool == "none":
        flat = np.concatenate([e.reshape(-1) for e in embeddings]) if embeddings else np.zeros(0, np.float32)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in embeddings])]).astype(np.int32)
        cols["embedding"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner)
    else:
        flat = np.stack(embeddings).reshape(-1) if embeddings else np.zeros(0, np.float32)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    if with_index:
        cols = {"index": pa.array([j.index for j in jobs], pa.int64()), **cols}
    return pa.RecordBatch.from_pydict(cols, schema=schema_for(dim, pool, with_index))


def embedding_values(column: pa.Array, dim: int, pool: str) -> np.ndarray | list[np.ndarray]:
    """(n, d) float32 for pooled columns; a list of (L, d) arrays for pool='none'."""
    if pool != "none":
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    inner = np.asarray(column.flatten().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    offsets = column.offsets.to_numpy()
    return [inner[offsets[i] - offsets[0]:offsets[i + 1] - offsets[0]] for i in range(len(column))]


# ---------------------------------------------------------------------------------------------
# sinks: one per output format; all write to temporary files renamed on success
# ---------------------------------------------------------------------------------------------
class _Sink:
    def __init__(self, dim: int, pool: str, metadata: dict[str, str]):
        self.dim, self.pool, self.metadata = dim, pool, metadata
        self.rows = 0
        self.padded_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.padded_rows += int(np.count_nonzero(batch.column("n_padded").to_numpy()))
        self._write(batch)

    def _write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def finish(self, extra: dict[str, str]) -> None:
        """Complete the file(s); ``extra`` metadata (counts) is known only now."""

    def discard(self) -> None:
        """Release handles after an error (io.atomic_file removes the temporary files)."""


class MemorySink(_Sink):
    def __init__(self, dim, pool, metadata):
        super().__init__(dim, pool, metadata)
        self.batches: list[pa.RecordBatch] = []

    def _write(self, batch):
        self.batches.append(batch)

    def table(self) -> pa.Table:
        schema = schema_for(self.dim, self.pool, False, self.metadata)
        if not self.batches:
            return schema.empty_table()
        return pa.Table.from_batches(self.batches).cast(schema)


class ParquetSink(_Sink):
    """Row groups streamed with ParquetWriter; provenance in the file's key-value metadata."""

    def __init__(self, path: Path, dim, pool, metadata, with_index: bool = False):
        super().__init__(dim, pool, metadata)
        self.schema = schema_for(dim, pool, with_index, {k: str(v) for k, v in metadata.items()})
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")

    def _write(self, batch):
        self.writer.write_batch(batch.replace_schema_metadata(self.schema.metadata))

    def finish(self, extra):
        self.writer.add_key_value_metadata({k: str(v) for k, v in extra.items()})
        self.writer.close()

    def discard(self):
        with contextlib.suppress(Exception):
            self.writer.close()


def npy_header(shape: tuple[int, ...], size: int = 128) -> bytes:
    """A .npy v1.0 header for float32 C-order data of ``shape``, padded to exactly ``size`` bytes
    (so it can be rewritten in place once the final row count is known)."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    room = size - 10 - 1
    if len(text) > room:
        raise CaduceusError(f"array shape {shape} does not fit a .npy header of {size} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size - 10) + text.ljust(room).encode("latin1") + b"\n"


class NpyStream:
    """A float32 .npy written row block by row block; the header is fixed up on close."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.file.write(npy_header((0,)))
        self.rows, self.row_shape = 0, None

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype="<f4")
        if self.row_shape is None:
            self.row_shape = block.shape[1:]
        elif block.shape[1:] != self.row_shape:
            raise CaduceusError(f"per-position embeddings of different lengths ({self.row_shape[0]} and "
                                f"{block.shape[1]} positions) cannot share one .npy array: use --window N for "
                                "equal lengths, or write Parquet")
        self.file.write(block.tobytes())
        self.rows += len(block)

    def close(self, row_shape: tuple[int, ...]) -> None:
        self.file.seek(0)
        self.file.write(npy_header((self.rows, *(self.row_shape if self.row_shape is not None else row_shape))))
        self.file.close()


def _bed_line(b: dict, i: int) -> str:
    return "\t".join(str(x) for x in (b["contig"][i], b["start"][i], b["end"][i], b["name"][i], 0, b["strand"][i],
                                      b["window_start"][i], b["window_end"][i], b["n_padded"][i], b["n_tiles"][i]))


class NumpySink(_Sink):
    """Embeddings in .npy (or .npz: ``embeddings`` + ``metadata``), regions in a sidecar BED whose
    row i describes embeddings[i]; provenance as ``#`` lines in the BED (and in the .npz)."""

    def __init__(self, path: Path, sidecar: Path, array_path: Path, dim, pool, metadata):
        """``array_path``: where the array is streamed; ``path`` itself for .npy, a scratch file
        packed into the ``path`` zip at the end for .npz."""
        super().__init__(dim, pool, metadata)
        self.path, self.npz = path, array_path != path
        self.array_path = array_path
        self.array = NpyStream(self.array_path)
        self.bed = open(sidecar, "w")
        for k, v in metadata.items():
            self.bed.write(f"#{k}={v}\n")
        self.bed.write("#contig\tstart\tend\tname\tscore\tstrand\twindow_start\twindow_end\tn_padded\tn_tiles\n")

    def _write(self, batch):
        values = embedding_values(batch.column("embedding"), self.dim, self.pool)
        self.array.write(np.stack(values) if self.pool == "none" and values else
                         (np.zeros((0, self.dim), np.float32) if self.pool == "none" else values))
        cols = {c: batch.column(c).to_pylist() for c in REGION_COLUMNS}
        self.bed.write("".join(_bed_line(cols, i) + "\n" for i in range(batch.num_rows)))

    def finish(self, extra):
        row_shape = (self.dim,) if self.pool != "none" else (0, self.dim)
        self.array.close(row_shape)
        self.bed.close()
        if self.npz:
            meta = json.dumps({**self.metadata, **{k: str(v) for k, v in extra.items()}}, sort_keys=True)
            with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.write(self.array_path, "embeddings.npy")
                with zf.open("metadata.npy", "w") as f:
                    np.lib.format.write_array(f, np.array(meta))

    def discard(self):
        for f in (self.array.file, self.bed):
            with contextlib.suppress(Exception):
                f.close()


class TsvSink(_Sink):
    """``##key=value`` provenance lines, a header, then one row per region: region columns and
    e0..e{d-1}. To stdout with '-'."""

    def __init__(self, stream, dim, pool, metadata):
        super().__init__(dim, pool, metadata)
        self.stream = stream
        for k, v in metadata.items():
            stream.write(f"##{k}={' '.join(str(v).split())}\n")
        stream.write("\t".join([*REGION_COLUMNS, *(f"e{i}" for i in range(dim))]) + "\n")

    def _write(self, batch):
        values = embedding_values(batch.column("embedding"), self.dim, self.pool)
        cols = [batch.column(c).to_pylist() for c in REGION_COLUMNS]
        text = io.StringIO()
        np.savetxt(text, values, fmt="%.7g", delimiter="\t")
        lines = text.getvalue().splitlines()
        self.stream.write("".join("\t".join(str(c[i]) for c in cols) + "\t" + lines[i] + "\n"
                                  for i in range(batch.num_rows)))
        self.stream.flush()


def output_format(output: str | os.PathLike | None, fmt: str | None) -> str | None:
    if output is None:
        return None
    if fmt:
        if fmt not in FORMATS:
            raise CaduceusError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    if str(output) == "-":
        return "tsv"
    suffixes = Path(output).suffixes
    if suffixes and suffixes[-1].lower() in _SUFFIXES:
        return _SUFFIXES[suffixes[-1].lower()]
    raise CaduceusError(f"{output}: cannot tell the output format from the file name: end it in .parquet, .npy, "
                        ".npz or .tsv, or give --format")


def sidecar_path(output: str | os.PathLike) -> Path:
    """``out.npy`` -> ``out.regions.bed``: the regions of the rows of a NumPy output."""
    p = Path(output)
    return p.with_name(p.name[: -len(p.suffix)] + ".regions.bed" if p.suffix else p.name + ".regions.bed")


@contextlib.contextmanager
def open_sink(output, fmt: str | None, dim: int, pool: str, metadata: dict, with_index: bool = False):
    """The sink for ``output`` (None: in memory); its files become visible only if the block
    completes (after ``finish``), through io's atomic outputs."""
    if fmt == "tsv" and pool == "none":
        raise CaduceusError("--pool none gives one vector per position, which TSV cannot hold: "
                            "write Parquet (-o out.parquet) or .npy/.npz with --window")
    with contextlib.ExitStack() as stack:
        if output is None:
            sink = MemorySink(dim, pool, metadata)
        elif fmt == "parquet":
            sink = ParquetSink(stack.enter_context(atomic_file(output)), dim, pool, metadata, with_index)
        elif fmt in ("npy", "npz"):
            main = stack.enter_context(atomic_file(output))
            side = stack.enter_context(atomic_file(sidecar_path(output)))
            array = stack.enter_context(temporary_file(output, ".npy")) if fmt == "npz" else main
            sink = NumpySink(main, side, array, dim, pool, metadata)
        else:
            sink = TsvSink(stack.enter_context(open_output(output)), dim, pool, metadata)
        try:
            yield sink
        except BaseException:
            sink.discard()
            raise


# ---------------------------------------------------------------------------------------------
# multi-GPU: shard by rank, parts merged in input order
# ---------------------------------------------------------------------------------------------
@dataclass
class Distributed:
    rank: int
    world: int
    local_rank: int
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "Distributed | None":
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return None
        import datetime

        import torch.distributed as dist

        rank = int(os.environ.get("RANK", "0"))
        owns = False
        if dist.is_initialized() and dist.get_backend() == "nccl":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))  # NCCL object broadcasts need it
        if not dist.is_initialized():
            # gloo: only barriers and one broadcast travel between ranks; no GPU memory for NCCL.
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
            owns = True
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", rank)), owns)

    def broadcast(self, value):
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def part_paths(output, token: str, world: int) -> list[Path]:
    """Where each rank writes its part: hidden files beside the output (a shared folder), or the
    temporary folder for stdout / in-memory output."""
    if output is None or str(output) == "-":
        folder, stem = Path(tempfile.gettempdir()), "caduceus-embed"
    else:
        folder, stem = Path(output).parent, "." + Path(output).name
    return [folder / f"{stem}.{token}.part{r}-of-{world}.parquet" for r in range(world)]


def merge_parts(paths: list[Path], batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Record batches of all parts in ascending ``index`` (each part is sorted by index), without
    the index column; memory is bounded by a few batches per part."""
    iters = [pq.ParquetFile(str(p)).iter_batches(batch_size=batch_rows) for p in paths]
    buffers: list[pa.Table | None] = [None] * len(iters)
    exhausted = [False] * len(iters)
    while True:
        for k, it in enumerate(iters):
            while not exhausted[k] and (buffers[k] is None or buffers[k].num_rows == 0):
                try:
                    buffers[k] = pa.Table.from_batches([next(it)])
                except StopIteration:
                    exhausted[k] = True
        live = [b for b in buffers if b is not None and b.num_rows]
        if not live:
            return
        # Rows up to the smallest "last buffered index" of unfinished parts are safe to emit.
        limits = [b.column("index")[-1].as_py() for k, b in enumerate(buffers)
                  if b is not None and b.num_rows and not exhausted[k]]
        bound = min(limits) if limits else None
        ready = []
        for k, b in enumerate(buffers):
            if b is None or not b.num_rows:
                continue
            idx = b.column("index").to_numpy()
            n = len(idx) if bound is None else int(np.searchsorted(idx, bound, side="right"))
            ready.append(b.slice(0, n))
            buffers[k] = b.slice(n)
        merged = pa.concat_tables(ready).combine_chunks()
        order = np.argsort(merged.column("index").to_numpy(), kind="stable")
        merged = merged.take(pa.array(order)).drop_columns(["index"])
        yield from merged.to_batches()


# ---------------------------------------------------------------------------------------------
# the API
# ---------------------------------------------------------------------------------------------
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


def _settings_from(model, pool, center_width, layer, rc, window, tile, tile_overlap, max_length, batch_size,
                   max_tokens, skip_invalid, io_threads) -> EmbedSettings:
    if pool not in POOLS:
        raise CaduceusError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    n_layer = model.config.n_layer
    if layer is not None and not -n_layer <= layer <= n_layer:
        raise CaduceusError(f"--layer {layer}: this model has {n_layer} layers: give 0 (token embeddings) to "
                            f"{n_layer} (last, after the final norm), or -1 for the last")
    if max_length is None:
        max_length = int(model.config.extra.get("max_seq_len") or model.config.extra.get("max_position_embeddings")
                         or DEFAULT_MAX_LENGTH)
    for name, value, low in (("--window", window, 1), ("--center-width", center_width, 1),
                             ("--max-length", max_length, 1), ("--batch-size", batch_size, 1),
                             ("--max-tokens", max_tokens, 1), ("--tile-overlap", tile_overlap, 0),
                             ("--io-threads", io_threads, 1)):
        if value is not None and value < low:
            raise CaduceusError(f"{name} must be >= {low}, got {value}")
    settings = EmbedSettings(pool=pool, center_width=center_width, layer=layer, conjoin=rc, window=window,
                             tile=tile, tile_overlap=tile_overlap, max_length=max_length,
                             batch_size=batch_size or (64 if model.device.type == "cuda" else 8),
                             max_tokens=max_tokens or (1 << 17), skip_invalid=skip_invalid, io_threads=io_threads)
    if settings.overlap >= max_length:
        raise CaduceusError(f"--tile-overlap {settings.overlap} must be smaller than the tile length {max_length}")
    if window is not None and window > max_length and not tile:
        raise CaduceusError(f"--window {window} is longer than the model's trained length ({max_length:,} bp): "
                            "use --tile, a smaller --window, or --max-length")
    return settings


def _same_file(a, b) -> bool:
    try:
        return a is not None and b is not None and str(a) != "-" and str(b) != "-" and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def embed_regions(fasta: str | os.PathLike, regions: str | os.PathLike | None = None,
                  output: str | os.PathLike | None = None, *, model="bundled", device: str | None = None,
                  dtype: str | None = None, backend: str = "auto", revision: str | None = None,
                  pool: str = "mean", center_width: int = DEFAULT_CENTER_WIDTH, layer: int | None = None,
                  rc: bool = True, window: int | None = None, tile: bool = False, tile_overlap: int | None = None,
                  max_length: int | None = None, batch_size: int | None = None, max_tokens: int | None = None,
                  output_format_: str | None = None, skip_invalid: bool = False, io_threads: int = 2,
                  progress: Callable[[int], None] | None = None, stdin=None) -> EmbedResult:
    """Embed every region of ``regions`` (BED; None: every record of ``fasta``) with a Caduceus model.

    ``output``: a .parquet/.npy/.npz/.tsv path, '-' for TSV on stdout, or None to return the rows in
    ``EmbedResult.table`` (``.embeddings`` gives the matrix). ``model``: 'bundled', a folder, a hub id,
    or a loaded CaduceusForMaskedLM. Rows keep the input order. Under torchrun (WORLD_SIZE > 1) each
    rank embeds its share and rank 0 writes the merged output (other ranks get ``output=None`` and
    no table). See docs/embed.md for every option.
    """
    t0 = time.perf_counter()
    fmt = output_format(output, output_format_)
    for src in (fasta, regions):
        if _same_file(src, output) or (fmt in ("npy", "npz") and _same_file(src, sidecar_path(output))):
            raise CaduceusError(f"{output}: the output would overwrite the input {src}")
    if output is not None and str(output) != "-":
        check_writable(output)
        if fmt in ("npy", "npz"):
            check_writable(sidecar_path(output))
    dist_ctx = Distributed.from_env()
    try:
        if dist_ctx is not None and (device is None or device == "cuda"):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{dist_ctx.local_rank}"
        model = _load(model, device, dtype, backend, revision)
        t0 = time.perf_counter()  # rates exclude loading the model
        settings = _settings_from(model, pool, center_width, layer, rc, window, tile, tile_overlap, max_length,
                                  batch_size, max_tokens, skip_invalid, io_threads)
        if model.config.rcps and not rc:
            log.info("--no-rc has no effect on Caduceus-PS: both strands come from one pass and are averaged")
        metadata = provenance(
            model, pool=settings.pool, center_width=settings.center_width if settings.pool == "center" else "",
            layer="last" if settings.layer in (None, -1) else settings.layer,
            rc_conjoin=("ps-strands-averaged" if model.config.rcps else str(settings.conjoin).lower()),
            window=settings.window or "region", tile=str(settings.tile).lower(),
            tile_overlap=settings.overlap if settings.tile else "", max_length=settings.max_length,
            embedding_dim=model.config.d_model, variant=model.config.variant, batch_size=settings.batch_size,
            fasta=str(fasta), regions=str(regions) if regions is not None else "(every FASTA record)",
        )
        metadata = {k: v for k, v in metadata.items() if v != ""}
        if dist_ctx is None:
            return _run(fasta, regions, output, fmt, model, settings, metadata, progress, stdin, t0)
        return _run_distributed(fasta, regions, output, fmt, model, settings, metadata, progress, stdin, t0, dist_ctx)
    finally:
        if dist_ctx is not None:
            dist_ctx.close()


def _load(model, device, dtype, backend, revision):
    from ..model.caduceus import CaduceusForMaskedLM

    if isinstance(model, CaduceusForMaskedLM):
        if device is not None and str(model.device) != str(device):
            model = model.to(device)
        return model.eval()
    from ..model.checkpoint import load_model

    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(model, device=device, dtype=dtype, revision=revision, backend=backend)


def _embed_into(sink: _Sink, source: RegionSource, embedder: Embedder, with_index: bool, progress) -> tuple[int, int]:
    """Embed all chunks of ``source`` into ``sink``; returns (tiled regions, bases embedded)."""
    s = embedder.settings
    tiled = bases = 0
    for chunk in prefetch(source.chunks()):
        if not chunk:
            continue
        embeddings = embedder.embed_chunk(chunk, progress)
        tiled += sum(len(j.tile_starts) > 1 for j in chunk)
        bases += sum(j.length for j in chunk)
        sink.write(rows_batch(chunk, embeddings, embedder.dim, s.pool, with_index))
    return tiled, bases


def _counts(source: RegionSource, sink: _Sink, tiled: int) -> dict[str, str]:
    return {"n_regions": str(sink.rows), "n_skipped": str(source.skipped), "n_padded": str(sink.padded_rows),
            "n_tiled": str(tiled)}


def _result(output, fmt, sink, source, tiled, bases, t0, metadata, settings, dim) -> EmbedResult:
    if source.skipped:
        log.warning("skipped %d invalid region(s) (--skip-invalid); first: %s", source.skipped,
                    "; ".join(source.first_problems))
    if sink.padded_rows:
        log.warning("%d region(s) reach past a contig end and were padded with N (column n_padded)", sink.padded_rows)
    return EmbedResult(
        output=None if output is None else str(output), format=fmt, n_regions=sink.rows, n_skipped=source.skipped,
        n_padded=sink.padded_rows, n_tiled=tiled, bases=bases, seconds=time.perf_counter() - t0, dim=dim,
        pool=settings.pool, metadata={**metadata, **_counts(source, sink, tiled)},
        table=sink.table() if isinstance(sink, MemorySink) else None, problems=list(source.first_problems))


def _run(fasta, regions, output, fmt, model, settings, metadata, progress, stdin, t0) -> EmbedResult:
    source = RegionSource(fasta, regions, settings, stdin=stdin)
    embedder = Embedder(model, settings)
    try:
        with open_sink(output, fmt, embedder.dim, settings.pool, metadata) as sink:
            tiled, bases = _embed_into(sink, source, embedder, False, progress)
            sink.finish(_counts(source, sink, tiled))
    finally:
        source.close()
    return _result(output, fmt, sink, source, tiled, bases, t0, metadata, settings, embedder.dim)


def _run_distributed(fasta, regions, output, fmt, model, settings, metadata, progress, stdin, t0,
                     ctx: Distributed) -> EmbedResult:
    token = ctx.broadcast(uuid.uuid4().hex[:12] if ctx.rank == 0 else None)
    parts = part_paths(output, token, ctx.world)
    source = RegionSource(fasta, regions, settings, rank=ctx.rank, world=ctx.world, stdin=stdin)
    embedder = Embedder(model, settings)
    try:
        with open_sink(parts[ctx.rank], "parquet", embedder.dim, settings.pool, metadata, with_index=True) as part:
            tiled, bases = _embed_into(part, source, embedder, True, progress)
            part.finish({**_counts(source, part, tiled), "bases": str(bases),
                         "n_skipped_fetched": str(source.skipped_fetched)})
    finally:
        source.close()
    ctx.barrier()  # every part is complete (renamed into place) past this point
    if ctx.rank != 0:
        return _result(None, None, part, source, tiled, bases, t0, metadata, settings, embedder.dim)
    try:
        metas = [pq.read_metadata(str(p)).metadata for p in parts]
        tiled_all = sum(int(m[b"n_tiled"]) for m in metas)
        bases_all = sum(int(m[b"bases"]) for m in metas)
        # Problems found while validating are seen by every rank; those found while reading a
        # rank's own sequences only by that rank.
        source.skipped += sum(int(m[b"n_skipped_fetched"]) for m in metas) - source.skipped_fetched
        with open_sink(output, fmt, embedder.dim, settings.pool, metadata) as sink:
            for batch in merge_parts(parts):
                sink.write(batch)
            sink.finish({**_counts(source, sink, tiled_all), "world_size": str(ctx.world)})
    finally:
        for p in parts:
            with contextlib.suppress(OSError):
                p.unlink()
    return _result(output, fmt, sink, source, tiled_all, bases_all, t0, metadata, settings, embedder.dim)
