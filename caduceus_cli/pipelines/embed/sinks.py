"""Rows of embeddings (pyarrow record batches) and the sinks that write them: Parquet, .npy/.npz with
a sidecar BED, TSV (or stdout), or memory. File outputs go through io's atomic outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import CaduceusError
from ...io import atomic_file, open_output, temporary_file
from .source import Job

REGION_COLUMNS = ("contig", "start", "end", "name", "strand", "window_start", "window_end", "n_padded", "n_tiles")


def schema_for(dim: int, pool: str, metadata: dict | None = None) -> pa.Schema:
    """Region columns, then ``embedding``: fixed-size lists of d float32 (a list of them per row with
    pool='none')."""
    inner = pa.list_(pa.float32(), dim)
    emb = pa.list_(inner) if pool == "none" else inner
    fields = [
        pa.field("contig", pa.string()), pa.field("start", pa.int64()), pa.field("end", pa.int64()),
        pa.field("name", pa.string()), pa.field("strand", pa.string()),
        pa.field("window_start", pa.int64()), pa.field("window_end", pa.int64()),
        pa.field("n_padded", pa.int32()), pa.field("n_tiles", pa.int32()),
        pa.field("embedding", emb),
    ]
    return pa.schema(fields, metadata=metadata)


def rows_batch(jobs: list[Job], embeddings: list[np.ndarray], dim: int, pool: str) -> pa.RecordBatch:
    """One record batch: a row per job, in the jobs' order."""
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
    return pa.RecordBatch.from_pydict(cols, schema=schema_for(dim, pool))


def embedding_values(column: pa.Array, dim: int, pool: str) -> np.ndarray | list[np.ndarray]:
    """(n, d) float32 for pooled columns; a list of (L, d) arrays for pool='none'."""
    if pool != "none":
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    inner = np.asarray(column.flatten().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    offsets = column.offsets.to_numpy()
    return [inner[offsets[i] - offsets[0]:offsets[i + 1] - offsets[0]] for i in range(len(column))]


class _Sink:
    """Rows in, one output format out; counts what it wrote (rows, padded and tiled regions, bases)."""

    def __init__(self, dim: int, pool: str, metadata: dict[str, str]):
        self.dim, self.pool, self.metadata = dim, pool, metadata
        self.rows = self.padded_rows = self.tiled_rows = self.bases = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.padded_rows += int(np.count_nonzero(batch.column("n_padded").to_numpy()))
        self.tiled_rows += int(np.count_nonzero(batch.column("n_tiles").to_numpy() > 1))
        window = batch.column("window_end").to_numpy() - batch.column("window_start").to_numpy()
        self.bases += int(window.sum())
        self._write(batch)

    def counts(self) -> dict[str, str]:
        return {"n_regions": str(self.rows), "n_padded": str(self.padded_rows), "n_tiled": str(self.tiled_rows)}

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
        schema = schema_for(self.dim, self.pool, self.metadata)
        if not self.batches:
            return schema.empty_table()
        return pa.Table.from_batches(self.batches).cast(schema)


class ParquetSink(_Sink):
    """Row groups streamed with ParquetWriter; provenance in the file's key-value metadata."""

    def __init__(self, path: Path, dim, pool, metadata):
        super().__init__(dim, pool, metadata)
        self.schema = schema_for(dim, pool, {k: str(v) for k, v in metadata.items()})
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

    def write(self, rows: np.ndarray | list[np.ndarray]) -> None:
        """A block of rows: an (n, ...) array, or a list of per-position (L, d) arrays."""
        for row in rows[:1] if isinstance(rows, np.ndarray) else rows:
            self._check_shape(row.shape)
        block = np.ascontiguousarray(np.stack(rows) if isinstance(rows, list) else rows, dtype="<f4")
        self.file.write(block.tobytes())
        self.rows += len(block)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.row_shape is None:
            self.row_shape = shape
        elif shape != self.row_shape:
            raise CaduceusError(f"per-position embeddings of different lengths ({self.row_shape[0]} and "
                                f"{shape[0]} positions) cannot share one .npy array: use --window N for "
                                "equal lengths, or write Parquet")

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
        if self.pool != "none" or values:
            self.array.write(values)
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


def sidecar_path(output: str | os.PathLike) -> Path:
    """``out.npy`` -> ``out.regions.bed``: the regions of the rows of a NumPy output."""
    p = Path(output)
    return p.with_name(p.name[: -len(p.suffix)] + ".regions.bed" if p.suffix else p.name + ".regions.bed")


@contextlib.contextmanager
def open_sink(output, fmt: str | None, dim: int, pool: str, metadata: dict):
    """The sink for ``output`` (None: in memory); its files become visible only if the block
    completes (after ``finish``), through io's atomic outputs."""
    if fmt == "tsv" and pool == "none":
        raise CaduceusError("--pool none gives one vector per position, which TSV cannot hold: "
                            "write Parquet (-o out.parquet) or .npy/.npz with --window")
    with contextlib.ExitStack() as stack:
        if output is None:
            sink = MemorySink(dim, pool, metadata)
        elif fmt == "parquet":
            sink = ParquetSink(stack.enter_context(atomic_file(output)), dim, pool, metadata)
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
