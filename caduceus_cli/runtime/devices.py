"""Devices and CPU threads: the one default-device rule and ``--threads``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeVar

from ..errors import CaduceusError
from ..limits import MAX_THREADS, check_size
from .settings import _env_rank, env_int

if TYPE_CHECKING:  # pragma: no cover
    import torch

T = TypeVar("T")

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


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_THREADS: list[int] = []  # the count set by set_threads, for the numba launches (see cpu_threads)


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads for torch and the numba kernels; None: all cores this process
    may use, or OMP_NUM_THREADS when that is set. Returns the count."""
    import torch

    if threads is None:
        threads = env_int("OMP_NUM_THREADS", minimum=1) or available_cores()
    threads = check_size("--threads", threads, maximum=MAX_THREADS)
    torch.set_num_threads(threads)
    _THREADS[:] = [threads]
    return threads


def cpu_threads() -> int | None:
    """The count set by :func:`set_threads`, None when it was never called. numba's count is per
    calling thread, so the CPU kernels apply it at each launch (pipelines run models from worker
    threads too)."""
    return _THREADS[0] if _THREADS else None


def device_name(device: "str | torch.device | None") -> str:
    """The device a run uses, as people know it (cpu, or the GPU's name)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)
