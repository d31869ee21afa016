"""Work around the model: reading ahead on a thread, and work shared between torchrun processes,
merged back in input order."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from ..errors import CaduceusError
from .processes import Runtime

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# background reading
# ---------------------------------------------------------------------------------------------
def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run ``iterable`` on a background thread, up to ``depth`` items ahead.

    Errors raised by the iterable are re-raised here, in the consumer; leaving the loop early
    (break, an exception, a closed generator) stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

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
            put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("error", e))

    thread = threading.Thread(target=run, name="caduceus-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


# ---------------------------------------------------------------------------------------------
# sharded work, merged in input order
# ---------------------------------------------------------------------------------------------
def part_paths(folder: str | os.PathLike, stem: str, token: str, world: int) -> list[Path]:
    """Where each rank writes its part of a run: hidden files ``.{stem}.{token}.partR-of-W.arrow``."""
    return [Path(folder) / f".{stem}.{token}.part{r}-of-{world}.arrow" for r in range(world)]


def shard_location(output: str | os.PathLike | None, stem: str) -> tuple[Path, str]:
    """(folder, stem) for the parts of a sharded run writing ``output``: beside it (a folder every
    rank sees, as torchrun runs on one machine or a shared file system), or the temporary folder
    for stdout ('-') and in-memory results (None), with ``stem``."""
    if output is None or str(output) == "-":
        import tempfile

        return Path(tempfile.gettempdir()), stem
    return Path(output).parent, Path(output).name


def owns(chunk_index: int, runtime: Runtime) -> bool:
    """Whether this rank computes chunk ``chunk_index`` (chunk i belongs to rank ``i % world``)."""
    return chunk_index % runtime.world_size == runtime.rank


def run_sharded(chunks: Iterable[T], work: Callable[[T], Any], runtime: Runtime | None,
                folder: str | os.PathLike | None = None, stem: str = "shard") -> Iterator[Any]:
    """``work(chunk)`` for every chunk, one result per chunk, in input order.

    Single process (``runtime`` None or not distributed): the results are yielded as they are
    computed. Under torchrun every rank reads all chunks (keep ``chunks`` cheap: fetch the data
    inside ``work``) and computes its own, chunk i on rank ``i % world``; then

    - with ``folder`` (results are pyarrow record batches of one schema, possibly without rows, as
      for a whole output): each rank writes its results to a part file in ``folder``; after a
      barrier rank 0 yields every chunk's batch in input order, reading the parts round-robin, and
      removes them; other ranks yield nothing;
    - without ``folder`` (small picklable results): the results are exchanged in memory and every
      rank yields every chunk's result in input order.
    """
    if runtime is None or not runtime.distributed:
        for chunk in chunks:
            yield work(chunk)
        return
    if folder is None:
        mine = [(i, work(c)) for i, c in enumerate(chunks) if owns(i, runtime)]
        for _, result in sorted((pair for part in runtime.all_gather(mine) for pair in part), key=lambda p: p[0]):
            yield result
        return
    import pyarrow as pa

    paths = part_paths(folder, stem, runtime.token(), runtime.world_size)
    mine = paths[runtime.rank]
    try:
        _write_part(mine, (work(c) for i, c in enumerate(chunks) if owns(i, runtime)))
        runtime.barrier()  # every part is complete past this point
        if not runtime.is_main:
            return
        readers = [pa.ipc.open_stream(pa.OSFile(str(p), "rb")) if p.stat().st_size else None for p in paths]
        index = 0
        while True:
            reader = readers[index % runtime.world_size]
            try:
                batch = reader.read_next_batch() if reader is not None else None
            except StopIteration:
                batch = None
            if batch is None:
                break
            yield batch
            index += 1
        for k, reader in enumerate(readers):  # the parts end together, or a rank lost chunks
            if reader is None:
                continue
            with contextlib.suppress(StopIteration):
                reader.read_next_batch()
                raise CaduceusError(f"{paths[k]}: holds chunks after chunk {index} (parts of another run?)")
    finally:
        if runtime.is_main or not runtime.distributed:
            for p in paths:
                with contextlib.suppress(OSError):
                    p.unlink()


def _write_part(path: Path, batches: Iterator["pa.RecordBatch"]) -> None:
    """Write a rank's batches as one Arrow IPC stream (an empty file when the rank owns no chunk)."""
    import pyarrow as pa

    from ..io import atomic_file

    with atomic_file(path) as tmp:
        writer = None
        with open(tmp, "wb") as f:
            for batch in batches:
                if writer is None:
                    writer = pa.ipc.new_stream(f, batch.schema)
                writer.write_batch(batch)
            if writer is not None:
                writer.close()
