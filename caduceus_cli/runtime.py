"""Where and how a pipeline runs: settings from the environment, the device, torchrun processes,
the model, background reading and sharded work merged back in input order.

Every pipeline and command uses these; nothing here imports Typer or Rich.

- :func:`env_int`, :func:`env_float`, :func:`env_flag` and :func:`env_str` are the one reader of
  settings from the environment (``CADUCEUS_*`` and the few of other libraries that this package
  honours): a value is read when it is used, never at import, and a value that cannot be used is
  refused with one line naming the variable, whatever the setting.
- :func:`resolve_device` is the one default-device rule: ``cuda:LOCAL_RANK`` when CUDA is there
  (``cuda:0`` outside torchrun), else ``cpu``; a device that cannot run here is refused.
- :func:`torchrun` is the one reader of torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK;
  :func:`env_rank` for a command that needs its rank before the run). It sets up the process
  group once and always destroys what it created.
- :func:`prefetch` runs an iterator on a background thread.
- :func:`run_sharded` is the one way work is shared between torchrun processes: chunk i runs on
  rank ``i % world`` and the results come back in input order, to rank 0 through part files
  (whole outputs) or to every rank in memory (small results such as features).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import queue
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from .errors import CaduceusError
from .limits import is_ascii_integer

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import torch

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# settings from the environment
# ---------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*([0-9]+(?:_[0-9]+)*)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bad_env(name: str, text: str, problem: str) -> CaduceusError:
    return CaduceusError(f"environment variable {name}={text!r} {problem}; fix or unset it")


def env_str(name: str, default: str | None = None) -> str | None:
    """The text of environment variable ``name``, stripped (``default`` when unset or blank)."""
    text = os.environ.get(name, "").strip()
    return text or default


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off in any case (``default`` when unset or blank)."""
    text = env_str(name)
    if text is None:
        return default
    if text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    raise _bad_env(name, text, "is not a yes/no setting (1, true, yes, on or 0, false, no, off)")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A finite number of at least ``minimum`` (``default`` when unset or blank), such as seconds."""
    text = env_str(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise _bad_env(name, text, "is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise _bad_env(name, text, f"must be a finite number of at least {minimum:g}")
    return value


def env_int(name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    """The integer in environment variable ``name`` (``default`` when unset or empty).

    Accepts ``1048576``, ``1_048_576`` and binary suffixes ``32k``, ``32M``, ``4G``, ``1T`` (``MiB``
    and ``MB`` read the same: powers of 1,024). Anything else raises a CaduceusError naming the
    variable, when the value is used rather than at import.
    """
    text = env_str(name)
    if text is None:
        return default
    match = _SIZE.match(text)
    if not match:
        raise _bad_env(name, text, "is not a whole number (examples: 1048576, 32M, 4G)")
    value = int(match.group(1).replace("_", "")) * _SCALE[(match.group(2) or "")[:1].lower()]
    if value < minimum:
        raise _bad_env(name, text, f"must be at least {minimum}")
    return value


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------
def resolve_device(device: "str | torch.device | None" = None, local_rank: int | None = None) -> "torch.device":
    """The device to run on; raises CaduceusError for one that does not exist or cannot run here.

    ``None``/``auto``: ``cuda:LOCAL_RANK`` when CUDA is available (``cuda:0`` outside torchrun),
    else ``cpu``. A plain ``cuda`` under torchrun also becomes ``cuda:LOCAL_RANK`` so that ranks
    never share a GPU by accident; an explicit ``cuda:N`` is kept.
    """
    import torch

    if local_rank is None:
        local_rank = _env_rank("LOCAL_RANK", 0)
    if device is None or str(device).strip().lower() in ("", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise CaduceusError(f"--device {str(device)!r} is not a device: use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CaduceusError(f"--device {device}: CUDA is not available on this machine "
                                "(see `caduceus doctor`); use --device cpu")
        index = local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise CaduceusError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return dev
    raise CaduceusError(f"--device {device}: not supported here; use cpu, cuda or cuda:N")


def device_name(device: "str | torch.device | None") -> str:
    """The device a run uses, as people know it (cpu, or the GPU's name)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


# ---------------------------------------------------------------------------------------------
# torchrun processes
# ---------------------------------------------------------------------------------------------
def _env_rank(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    if not is_ascii_integer(text):
        raise CaduceusError(f"environment variable {name}={text!r} is not an integer (set by torchrun)")
    value = int(text)
    if value < 0:
        raise CaduceusError(f"environment variable {name}={text!r} must be >= 0")
    return value


def env_rank() -> int:
    """This process's RANK under torchrun, 0 outside it (read and checked as :func:`torchrun` does)."""
    return _env_rank("RANK", 0)


def _check_launcher(world: int) -> None:
    """WORLD_SIZE > 1 needs the rendezvous that torchrun sets up (MASTER_ADDR, MASTER_PORT)."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:
        raise CaduceusError(f"environment variable WORLD_SIZE={world} asks for {world} processes, but "
                            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: launch many "
                            "processes with torchrun (torchrun --nproc-per-node N -m caduceus_cli ...), or unset "
                            "WORLD_SIZE and RANK for one process")


@dataclass
class Runtime:
    """This process's place in a (possibly single-process) run, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None  # torch.device
    group_owned: bool = False  # this runtime created the process group and destroys it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T) -> T:
        """``value`` of rank 0 on every rank (any picklable object the ranks create themselves)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum (or max) of ``values`` over ranks."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        device = self.device if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def token(self) -> str:
        """A random name shared by all ranks (for part files of one run)."""
        return self.broadcast(uuid.uuid4().hex[:12] if self.is_main else None)


@contextlib.contextmanager
def torchrun(device: "str | torch.device | None" = None, *, collectives: str | None = None) -> Iterator[Runtime]:
    """This process's :class:`Runtime`; under torchrun (WORLD_SIZE > 1) with a process group.

    ``collectives``: the process-group backend; default ``nccl`` on CUDA, ``gloo`` on CPU (use
    ``gloo`` where only barriers and small objects travel). A group that already exists (someone
    else set it up) is used as it is and left alone; one created here is destroyed on exit, also
    after an error. The timeout is long (12 h): rank 0 may merge outputs while the others wait.
    """
    world = _env_rank("WORLD_SIZE", 1) or 1
    rank = _env_rank("RANK", 0)
    local_rank = _env_rank("LOCAL_RANK", rank if world > 1 else 0)
    if rank >= world:
        raise CaduceusError(f"environment variable RANK={rank} must be smaller than WORLD_SIZE={world}")
    if world > 1:
        _check_launcher(world)
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        import torch

        torch.cuda.set_device(dev)
    runtime = Runtime(rank, world, local_rank, dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = collectives or ("nccl" if dev.type == "cuda" else "gloo")
            dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
            runtime.group_owned = True
    try:
        yield runtime
    finally:
        if runtime.group_owned:
            import torch.distributed as dist

            with contextlib.suppress(Exception):  # destroying must not hide the error that got us here
                dist.destroy_process_group()
            runtime.group_owned = False


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

    from .io import atomic_file

    with atomic_file(path) as tmp:
        writer = None
        with open(tmp, "wb") as f:
            for batch in batches:
                if writer is None:
                    writer = pa.ipc.new_stream(f, batch.schema)
                writer.write_batch(batch)
            if writer is not None:
                writer.close()
