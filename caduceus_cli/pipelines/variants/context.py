"""Context and window: how many bases the model reads around a variant or region (``context``) and
which of its output positions are pooled (``window``); how many contexts fit in one batch; whether
a CPU runs them in reasonable time.

The model reads ``context`` bases with the variant's first REF base at index ``context // 2``
(N-padded past contig ends); the embedding scores and the SVM features pool the ``window``
positions starting at ``context // 2 - window // 2``, so ``context == window`` pools every position
the model read (the scores of a model that sees only the window).
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TYPE_CHECKING

from ...errors import CaduceusError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("caduceus")

PAPER_CONTEXT = 131072  # the published checkpoints' trained length: the paper's VEP context
PAPER_WINDOW = 1536  # positions averaged around the variant by the paper's VEP features
# The default context is refused on a CPU whose measured speed puts one variant above this.
CPU_SECONDS_PER_VARIANT = 60.0
_CALIBRATION = (4, 512)  # sequences x tokens: batched as the CPU runs them (one short sequence
# alone measured 2-2.5x slower per token than the pipeline's batches of 8 on a loaded 2-core CPU)
_SEQLEN = re.compile(r"seqlen[-_=]?(\d+)(k?)(?![a-z])", re.IGNORECASE)


def declared_length(model) -> int | None:
    """The length ``model`` says it was trained on: ``max_seq_len`` (or ``max_position_embeddings``)
    in its config, else ``seqlen-131k`` / ``seqlen-1k`` in its hub id (131k = 131,072), else None."""
    extra = model.config.extra
    value = extra.get("max_seq_len") or extra.get("max_position_embeddings")
    if value:
        return int(value)
    found = _SEQLEN.search(str((getattr(model, "source", None) or {}).get("id") or ""))
    if not found:
        return None
    n = int(found.group(1))
    if not found.group(2):
        return n
    power = 2 ** round(math.log2(n * 1000))  # '131k' is 2**17 bp, '1k' is 1,024
    return power if abs(power - n * 1000) <= 0.05 * power else n * 1000


def choose_context(requested: int | None, window: int, model) -> int:
    """The context for ``window``: ``requested`` (at least the window; a warning past the model's
    trained length), else the model's declared trained length (at least the window), else the
    window itself (a model that declares no length reads only what it pools)."""
    from ...model.loading import trained_length

    if requested is None:
        declared = declared_length(model)
        return max(window, declared) if declared else window
    if requested < window:
        raise CaduceusError(f"--context {requested} is shorter than --window {window}: the model must read every "
                            f"position it pools (give --context {window} or more, or a smaller --window)")
    trained = trained_length(model)
    if requested > trained:
        log.warning("--context %d is longer than the %d bp this model was trained on: its outputs there are "
                    "untested (give --context %d or less)", requested, trained, trained)
    return requested


def check_positive(name: str, value: int | None, low: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise CaduceusError(f"{name} must be an integer >= {low}, got {value!r}")


def pooled_slice(context: int, window: int) -> slice:
    """Positions of a ``context``-long pass pooled by a ``window`` centred like the variant."""
    start = context // 2 - window // 2
    return slice(start, start + window)


def paper_positions(context: int, window: int = PAPER_WINDOW, centre: int | None = None) -> list[int]:
    """The paper's gather (``vep_embeddings.py``): offsets ``-window // 2 .. window // 2`` inclusive
    around ``centre`` (default ``context // 2``), i.e. 1,537 positions for 1,536, clamped to the
    sequence (positions past an end repeat the end position)."""
    centre = context // 2 if centre is None else centre
    return [min(max(centre + k, 0), context - 1) for k in range((-window) // 2, window // 2 + 1)]


# -- memory ----------------------------------------------------------------------------------
def _bytes(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def peak_activation_bytes(config, batch: int, length: int, *, compute_dtype=None, device_type: str = "cpu",
                          training: bool = False, checkpoint: bool = False) -> int:
    """Estimated peak of the activation memory of one pass of ``batch`` sequences of ``length``
    (weights, gradients and optimizer state not included).

    ``compute_dtype``: the autocast dtype (None: bf16 on CUDA, fp32 on the CPU). Inference: the
    residual stream of every row (PS runs two rows per sequence, both strands), one slice of the
    mixer's transients (see ``mamba._SLICE_ELEMENTS``), and the output with its strand stack.
    Training: what every block saves for the backward pass (with ``checkpoint``: only the blocks'
    inputs, plus one block recomputed for the whole batch).
    """
    import torch

    from ...model.mamba import _SLICE_ELEMENTS

    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    act, f32 = _bytes(compute_dtype), 4
    d = config.d_model
    di = int(config.ssm_cfg.get("expand", 2) * d)
    n = int(config.ssm_cfg.get("d_state", 16))
    rank = config.ssm_cfg.get("dt_rank", "auto")
    r = math.ceil(d / 16) if rank == "auto" else int(rank)
    rows = 2 if config.rcps else 1  # Ph's second (RC) pass runs after the first: its rows replace them
    tokens = batch * length * rows
    residual = f32 if config.residual_in_fp32 or device_type != "cuda" else act
    stream = tokens * d * (act + residual)
    output = batch * length * rows * d * (act + 2 * f32) * (1 if config.rcps else 2)
    if not training:
        slice_rows = max(1, min(batch * rows, _SLICE_ELEMENTS.get(device_type, 1 << 24) // max(1, length * di)))
        transient = slice_rows * length * ((3 * di + r + 2 * n + 2 * d) * act + di * f32)
        return int(stream + output + transient)
    k = 2 if config.bidirectional else 1
    # saved per block and row token (counted with saved_tensors_hooks on the CPU): the stacked input,
    # x, the padded conv input, u, x_dbl, delta, z, y and the scan's own copies (k directions), the
    # fp32 sum, the normed input and the mixer output of the block
    block = tokens * (k * (d + 7 * di + r + 2 * n) * act + d * (f32 + 2 * act))
    stream = tokens * d * (act + f32)  # in training the residual stays fp32 (the embedding's dtype)
    grads = tokens * d * 2 * f32
    if checkpoint:
        return int(config.n_layer * stream + block + grads + output)
    return int(config.n_layer * block + stream + grads + output)


def training_micro_batch(config, length: int, batch: int, budget: int, *, checkpoint: bool) -> int:
    """Sequences of ``length`` per training pass (at most ``batch``, at least 1) whose estimated
    activation memory under bf16 autocast on a GPU fits ``budget`` bytes."""
    per = max(1, batch)
    while per > 1 and peak_activation_bytes(config, per, length, device_type="cuda", training=True,
                                            checkpoint=checkpoint) > budget:
        per = (per + 1) // 2
    return per


def memory_budget(device: "torch.device") -> int:
    """Bytes one batch of contexts may use: 60% of the free GPU memory; on the CPU 40% of the
    memory available (at most 16 GiB, at least 1 GiB)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.6 * free)
    available = 8 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return int(min(16 << 30, max(1 << 30, 0.4 * available)))


def batch_for_budget(config, length: int, budget: int, *, device_type: str, cap: int, compute_dtype=None) -> int:
    """The most sequences of ``length`` (at most ``cap``, at least 1) whose estimated peak
    activation memory fits ``budget`` bytes."""
    batch = max(1, cap)
    while batch > 1 and peak_activation_bytes(config, batch, length, compute_dtype=compute_dtype,
                                              device_type=device_type) > budget:
        batch = max(1, batch // 2) if batch > 8 else batch - 1
    return batch


def peak_memory(device: "torch.device") -> dict:
    """Peak memory of this process so far: GPU allocated (GiB) on CUDA, and the resident set (GiB)."""
    import resource

    import torch

    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device.type == "cuda":
        out["peak_gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


# -- time on a CPU -----------------------------------------------------------------------------
def measured_tokens_per_second(model) -> float:
    """Tokens per second of ``model``'s forward on its device, measured on a small batch of short
    sequences after a warm-up pass (so compilation is not counted); a little below the speed of the
    pipeline's batches of long contexts, so estimates from it err on the slow side."""
    import torch

    from ...model.precision import model_autocast

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 11, _CALIBRATION, generator=generator).to(model.device)
    with torch.no_grad(), model_autocast(model):
        model.caduceus(ids[:, :64], model.backend, False)
        started = time.perf_counter()
        model.caduceus(ids, model.backend, False)
        seconds = time.perf_counter() - started
    return ids.numel() / max(seconds, 1e-9)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def check_cpu_time(model, context: int, window: int, passes: int, *, explicit: bool,
                   tokens_per_second: float | None = None, unit: str = "variant") -> float | None:
    """On a CPU, when the context is longer than the window: the estimated seconds per variant from
    a measured speed (``passes`` model passes of ``context`` tokens each). The default context is
    refused above ``CPU_SECONDS_PER_VARIANT``; a context given explicitly runs with a warning."""
    if model.device.type != "cpu" or context <= window:
        return None
    speed = tokens_per_second or measured_tokens_per_second(model)
    per_variant = passes * context * (1 if model.config.rcps else 2) / speed
    if per_variant <= CPU_SECONDS_PER_VARIANT:
        return per_variant
    shorter = max(window, int(CPU_SECONDS_PER_VARIANT * speed / (passes * (1 if model.config.rcps else 2))))
    advice = (f"run it on a GPU (--device cuda), or give a shorter --context (about {shorter:,} bp fits "
              f"{CPU_SECONDS_PER_VARIANT:.0f} s per {unit} here" + (f"; --context {window:,} reads only the window)"
                                                                   if window else ")"))
    if not explicit:
        raise CaduceusError(f"the default context of this model is {context:,} bp: about {_duration(per_variant)} per "
                            f"{unit} on this CPU (measured {speed:,.0f} tokens/s); {advice}")
    log.warning("--context %d on this CPU: about %s per %s (measured %.0f tokens/s); %s", context,
                _duration(per_variant), unit, speed, advice)
    return per_variant
