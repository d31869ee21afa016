"""torchrun processes: the one reader of torchrun's environment and the process group's life."""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

from ..errors import CaduceusError
from .devices import resolve_device
from .settings import _env_rank

if TYPE_CHECKING:  # pragma: no cover
    import torch

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# torchrun processes
# ---------------------------------------------------------------------------------------------
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
