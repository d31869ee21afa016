"""Kernel versions that one GPU run can time side by side.

Each faster path of the Triton backend is chosen by an environment variable read when the kernel
runs (through ``runtime.env_int``), so a benchmark can switch between versions in one process:

- ``CADUCEUS_SCAN_FWD``: 1 the long-sequence forward that folds the chunks' states in every
  program with the unpipelined loop; 2 (default) the pipelined loop and one carry kernel;
- ``CADUCEUS_SCAN_BWD``: 1 the backward with one thread per channel; 2 (default) two threads per
  channel (tuning knobs ``CADUCEUS_BWD2_WARPS``, ``_KEEP_DECAY``, ``_RELOAD_B``, ``_WSUM``, ``_CKPT``);
- ``CADUCEUS_INFER``: 1 a bi-directional layer's reverse direction on flipped copies in
  inference; 2 (default) read from the sequence's end;
- ``CADUCEUS_CONV``: 1 (default, measured faster in the model) the causal convolution in
  (channels x positions) tiles; 2 a thread per channel walking tiles of 8 positions.

A *set* is named ``old`` (every variable 1), ``new`` (every variable at its default), or given as
``VAR=VALUE`` pairs joined by ``+`` applied on top of ``new`` (``CADUCEUS_BWD2_WSUM=0``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

VARIABLES = ("CADUCEUS_SCAN_FWD", "CADUCEUS_SCAN_BWD", "CADUCEUS_INFER", "CADUCEUS_CONV")
KNOB_PREFIXES = ("CADUCEUS_BWD2_",)


def kernel_set(name: str) -> dict[str, str | None]:
    """The environment of set ``name``: variable -> value, None where the variable is unset."""
    env: dict[str, str | None] = {v: None for v in VARIABLES}
    if name == "old":
        return {v: "1" for v in VARIABLES}
    if name == "new":
        return env
    for pair in name.split("+"):
        var, sep, value = pair.partition("=")
        if not sep or not (var in VARIABLES or var.startswith(KNOB_PREFIXES)):
            raise ValueError(f"kernel set {name!r}: expected old, new or VAR=VALUE pairs joined by '+' "
                             f"(VAR one of {', '.join(VARIABLES)} or CADUCEUS_BWD2_*)")
        env[var] = value
    return env


@contextlib.contextmanager
def using_kernels(name: str) -> Iterator[None]:
    """Run the body with kernel set ``name``; the environment is restored afterwards."""
    env = kernel_set(name)
    saved = {v: os.environ.get(v) for v in env}
    try:
        for var, value in env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
