"""Triton helpers shared by the scan's forward and backward kernels and the convolution.

Imported only when Triton is (see ``scan.triton_kernels``). ``INTERPRET`` is true under
``TRITON_INTERPRET=1`` (the CPU tests), where inline PTX is not available and the ``FAST`` paths
fall back to ``tl.exp2`` and friends.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ...runtime import env_flag

LOG2E = math.log2(math.e)
INTERPRET = env_flag("TRITON_INTERPRET")

# -- small helpers -------------------------------------------------------------------------------


@triton.jit
def _exp2(x, FAST: tl.constexpr):
    if FAST:
        # MUFU.EX2 with flush-to-zero: no denormal fix-up around it (decays that small are 0 anyway)
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) as torch computes it (x itself above 20), with log1p accuracy for x << 0."""
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _mufu(x, OP: tl.constexpr):
    """One special-function-unit instruction, flushing denormals: OP 0 ex2, 1 lg2, 2 rcp (approx)."""
    if OP == 0:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
    elif OP == 1:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _softplus_f(x, FAST: tl.constexpr):
    """:func:`_softplus` from three approximate MUFU instructions (relative error ~1e-7) where
    FAST; the IEEE exp/log/division versions cost about three times the instructions."""
    if FAST:
        e = _mufu(tl.minimum(x, 20.0) * 1.4426950408889634, 0)
        w = 1.0 + e
        lp = tl.where(w == 1.0, e, (_mufu(w, 1) * 0.6931471805599453) * (e * _mufu(w - 1.0, 2)))
        return tl.where(x > 20.0, x, lp)
    else:
        return _softplus(x)


@triton.jit
def _sigmoid_f(x, FAST: tl.constexpr):
    if FAST:
        return _mufu(1.0 + _mufu(x * -1.4426950408889634, 0), 2)
    else:
        return _sigmoid(x)


# Tensors of a channel block are [R, BT, ...]: BT = 32 * num_warps channels across the threads, R
# channels per thread (rows r * BT + i). Each thread keeps its channels' 16 states and time tiles in
# registers; the loads below put whole rows (16 bytes) into one thread so that splitting a tile into
# time columns, or broadcasting B_t / C_t to every channel, is register renaming, not a shuffle.


@triton.jit
def _cols4(x, R: tl.constexpr, BT: tl.constexpr):
    """[R, BT, 4] -> its 4 columns [R, BT] in order."""
    e, o = tl.split(tl.reshape(x, [R, BT, 2, 2]))  # columns 0,2 and 1,3
    c0, c2 = tl.split(e)
    c1, c3 = tl.split(o)
    return c0, c1, c2, c3


@triton.jit
def _mask_and(ok, idx):
    """``ok`` (one flag: a scalar tensor, or a Python bool where the interpreter folded the
    comparison) and ``idx >= 0``, as a boolean block of idx's shape: the interpreter broadcasts no
    scalar mask and takes no integer one."""
    return ((idx * 0 + ok) != 0) & (idx >= 0)


@triton.jit
def _ld(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.load(ptrs).to(tl.float32)


@triton.jit
def _dt1(r, bias, ok, MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
    """(dt, d dt / d delta) of one position from the raw delta; dt is 0 where not ok."""
    if HAS_BIAS:
        r += bias
    if SOFTPLUS:
        d = _softplus_f(r, FAST)
        slope = _sigmoid_f(r, FAST)
    else:
        d = r
        slope = r * 0.0 + 1.0
    if MASKED:
        d = tl.where(ok, d, 0.0)
    return d, slope


@triton.jit
def _gate1(o, z, HAS_Z: tl.constexpr, FAST: tl.constexpr):
    """(dy, dz / y) of one position: the gradient reaching the scan's output, and the factor that
    turns the ungated output y into dz."""
    if HAS_Z:
        zs = _sigmoid_f(z, FAST)
        return o * z * zs, o * zs * (1.0 + z * (1.0 - zs))
    else:
        return o, o


@triton.jit
def _channel_block(per_group, R: tl.constexpr, BT: tl.constexpr, EVEN_C: tl.constexpr):
    """The R x BT channels of one group that this program (grid axis 0: groups * blocks per group)
    takes: (group, index in the group [R, BT], mask, channel as int64)."""
    blocks_per_group = tl.cdiv(per_group, R * BT)
    g = tl.program_id(0) // blocks_per_group
    cig = (tl.program_id(0) % blocks_per_group) * (R * BT) + tl.arange(0, R)[:, None] * BT + tl.arange(0, BT)[None, :]
    if EVEN_C:
        cm = cig >= 0
    else:
        cm = cig < per_group
    return g, cig, cm, (g * per_group + cig).to(tl.int64)


# -- host side -----------------------------------------------------------------------------------


def vec_width(t: torch.Tensor) -> int:
    return 8 if t.element_size() == 2 else 4


def states_last_fp32(x: torch.Tensor) -> torch.Tensor:
    """(batch, groups, N, L) any dtype/strides -> the same values as fp32 with N contiguous (a view
    of a (batch, groups, L, N) tensor), so one thread loads a position's 16 values as 4 vectors."""
    if x.dtype == torch.float32 and x.stride(-2) == 1 and x.stride(-1) % 16 == 0 and x.data_ptr() % 16 == 0:
        return x
    out = torch.empty(x.shape[0], x.shape[1], x.shape[3], x.shape[2], device=x.device, dtype=torch.float32)
    out.copy_(x.transpose(-1, -2))
    return out.transpose(-1, -2)


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    if not torch.cuda.is_available():  # the interpreter on CPU tensors
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_warps_for(per_group: int) -> int:
    return 4 if per_group >= 128 else 2 if per_group >= 64 else 1

