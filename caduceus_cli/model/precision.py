"""Compute precision: the one place that decides which dtype a model's matmuls run in.

Every pipeline (inference, fine-tuning, pretraining, benchmarks) enters :func:`autocast` around its
model passes; inference passes enter :func:`model_autocast`, which reads the compute dtype a model
was loaded with (``--dtype``, kept as ``model.compute_dtype`` and resolved for the model's device by
:func:`compute_dtype`).

Compute dtypes (``--dtype``): ``fp32`` runs everything in fp32; ``bf16`` runs the matmuls under
bf16 autocast (on the CPU the numba scan still keeps its state and sums in fp32); ``auto`` is bf16
on CUDA, and on the CPU bf16 where the CPU has bf16 matrix instructions (:func:`cpu_bf16_matrix_units`:
AMX or AVX512-BF16, which run bf16 matmuls several times faster than fp32 ones), fp32 elsewhere.
Weights stay in the dtype they were loaded in (fp32).

``autocast(device, None)`` is the training policy: bf16 autocast on CUDA, fp32 on the CPU.
"""

from __future__ import annotations

import contextlib
import functools

import torch

COMPUTE_DTYPES = ("auto", "fp32", "bf16")
_BY_NAME = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
# CPU flags (Linux /proc/cpuinfo) of instructions that multiply bf16 matrices with fp32 sums
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=None)
def cpu_bf16_matrix_units() -> str | None:
    """The CPU's bf16 matrix instructions ('amx_bf16' or 'avx512_bf16'), or None (none, not x86
    Linux, or a torch without oneDNN, which is what runs bf16 matmuls fast on the CPU)."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)
    except OSError:
        return None
    return None


def check_dtype(dtype: str | torch.dtype | None) -> str:
    """The compute dtype asked for as one of :data:`COMPUTE_DTYPES` (None means 'auto'); anything
    else is refused with a message that lists the choices."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise _error(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype}")
        return dtype_name(dtype)
    name = "auto" if dtype is None else str(dtype).strip().lower()
    if name != "auto" and name not in _BY_NAME:
        raise _error(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
    return name if name == "auto" else dtype_name(_BY_NAME[name])


def compute_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """The compute dtype that ``--dtype dtype`` means on ``device`` (None means 'auto').

    'auto': bf16 on CUDA; on the CPU bf16 where it has bf16 matrix units, else fp32."""
    name = check_dtype(dtype)
    if name == "auto":
        kind = torch.device(device).type
        if kind == "cuda" or (kind == "cpu" and cpu_bf16_matrix_units()):
            return torch.bfloat16
        return torch.float32
    return _BY_NAME[name]


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """'fp32' / 'bf16' for a compute dtype (None for None)."""
    return None if dtype is None else {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def _error(message: str):
    from ..errors import CaduceusError

    return CaduceusError(message)


def autocast(device: torch.device | str, dtype: torch.dtype | None = None):
    """The autocast context for passes on ``device`` in compute dtype ``dtype`` (see the module)."""
    kind = torch.device(device).type
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if kind == "cuda":
        return torch.autocast("cuda", dtype=dtype or torch.bfloat16)
    if kind == "cpu" and dtype == torch.bfloat16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_compute_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The compute dtype of ``model``'s inference passes on its device: from the ``dtype`` it was
    loaded with (``model.compute_dtype``: 'auto', 'fp32' or 'bf16'), None when it has none."""
    asked = getattr(model, "compute_dtype", None)
    return None if asked is None else compute_dtype(asked, next(model.parameters()).device)


def model_autocast(model: torch.nn.Module):
    """The autocast context of an inference pass of ``model``: its compute dtype (see
    :func:`model_compute_dtype`), else the training policy of :func:`autocast`."""
    return autocast(next(model.parameters()).device, model_compute_dtype(model))
