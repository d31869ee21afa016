"""Inference of a (bi-directional) Mamba mixer on the CPU, channels last, compiled with numba.

The training path (``mamba._directions_stacked``) keeps every activation as (channels, positions),
the layout the GPU kernels want. On the CPU, inference runs instead with every activation as
(positions, channels), the layout ``F.linear`` writes: no transposes, and the selective scan
vectorises across channels (one SIMD lane per channel, the N states in a loop) rather than across
the 16 states, so that every exp, softplus and sigmoid runs in SIMD lanes too.

Two kernels, each compiled for blocks of 64, 32 or 16 channels (the largest that divides d_inner):

- the causal depthwise convolution + bias + SiLU, forward or reversed in time;
- the selective scan with the dt projection, dt bias and softplus fused into its input read and
  the D skip and the SiLU(z) gate into its output, forward or reversed in time, optionally adding
  a previous direction's output.

A reversed direction walks time backwards instead of reading a flipped copy, and the two
directions of a weight-tied bi-directional mixer share one in_proj matmul and one out_proj matmul
(out_proj is linear: W y_fwd + W y_rev = W (y_fwd + y_rev)).

Activations may be fp32 or bf16 (under CPU autocast the matmuls write bf16): bf16 arrays reach
numba as int16 bit patterns, converted in registers; the scan's state and sums stay fp32.
Compiled on first use and cached on disk like ``scan_cpu``.
"""

from __future__ import annotations

import contextlib
import functools
import platform

import numpy as np
import torch
import torch.nn.functional as F

# scan_cpu points numba's cache at the user cache before numba is first imported: import it first.
from .scan_cpu import _CACHE, launch

import numba  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

# No 'afn': exp, log and division are written out below, so nothing is left for it to approximate.
_FASTMATH = {"contract", "reassoc", "arcp", "nsz"}
_LOG2E = np.float32(1.4426950408889634)
LANE_CHOICES = (64, 32, 16)  # channels per block: inner loops of a fixed trip count vectorise fully
# Inference runs a batch in slices of whole sequences of at most this many (positions x d_inner)
# elements, so that the mixer's transient tensors (about six of that size) stay bounded.
SLICE_ELEMENTS = 1 << 24
_ENABLED = [True]  # see channels_first()


# -- scalar helpers that LLVM inlines and vectorises ----------------------------------------


@intrinsic
def _i32_as_f32(typingctx, x):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_as_i32(typingctx, x):
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _bf16_bits_to_f32(typingctx, x):
    """int16 bit pattern of a bf16 -> that value as fp32 (exact)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 16:
        return None
    sig = types.float32(x)

    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], ir.IntType(32))
        return builder.bitcast(builder.shl(wide, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return sig, codegen


def _mxcsr_call(builder, name, ptr):
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(ptr, ir.IntType(8).as_pointer())])


@intrinsic
def _get_mxcsr(typingctx):
    sig = types.int32()

    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", ptr)
        return builder.load(ptr)

    return sig, codegen


@intrinsic
def _set_mxcsr(typingctx, value):
    sig = types.void(types.int32)

    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(args[0], ptr)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", ptr)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit
def _flush_denormals_x86():
    """Set flush-to-zero and denormals-are-zero on this thread; returns the previous MXCSR. States
    that decay below fp32's normal range (1e-38) would otherwise run the slow denormal path."""
    old = _get_mxcsr()
    _set_mxcsr(old | np.int32(0x8040))
    return old


@numba.njit
def _restore_x86(old):
    _set_mxcsr(old)


@numba.njit
def _flush_denormals_other():
    return np.int32(0)


@numba.njit
def _restore_other(old):
    pass


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
_flush_denormals = _flush_denormals_x86 if _X86 else _flush_denormals_other
_restore_denormals = _restore_x86 if _X86 else _restore_other


@numba.njit
def _f32_to_bf16_bits(v):
    """fp32 -> the int16 bits of the nearest bf16 (ties to even; NaN stays a quiet NaN)."""
    bits = _f32_as_i32(v)
    rounded = (bits + np.int32(0x7FFF) + ((bits >> np.int32(16)) & np.int32(1))) >> np.int32(16)
    if v != v:
        rounded = np.int32(0x7FC0)
    return np.int16(rounded)


def _load(a, i, j):
    """a[i, j] as fp32, from an fp32 array or the int16 bits of a bf16 one."""


@overload(_load, inline="always", fastmath=_FASTMATH)
def _load_impl(a, i, j):
    if isinstance(a.dtype, types.Integer):
        return lambda a, i, j: _bf16_bits_to_f32(a[i, j])
    return lambda a, i, j: np.float32(a[i, j])


def _load3(a, i, k, j):
    """a[i, k, j] as fp32, from an fp32 array or the int16 bits of a bf16 one."""


@overload(_load3, inline="always", fastmath=_FASTMATH)
def _load3_impl(a, i, k, j):
    if isinstance(a.dtype, types.Integer):
        return lambda a, i, k, j: _bf16_bits_to_f32(a[i, k, j])
    return lambda a, i, k, j: np.float32(a[i, k, j])


def _store3(a, i, k, j, v):
    """a[i, k, j] = v (fp32), rounded to nearest even when a holds bf16 bits."""


@overload(_store3, inline="always", fastmath=_FASTMATH)
def _store3_impl(a, i, k, j, v):
    if isinstance(a.dtype, types.Integer):
        def store_bf16(a, i, k, j, v):
            a[i, k, j] = _f32_to_bf16_bits(v)
        return store_bf16

    def store_f32(a, i, k, j, v):
        a[i, k, j] = v
    return store_f32


@numba.njit(inline="always", fastmath=_FASTMATH)
def _exp2(y):
    """2 ** y in fp32 without libm (so that loops vectorise): 2^k * 2^f, k = round(y), f in
    [-1/2, 1/2], 2^f by Cephes' exp2f polynomial (relative error ~1e-7); y clamped to [-126, 127]
    (2^-126 stands for anything smaller, 2^127 for anything larger: the decays, sigmoid and
    softplus only need the limits)."""
    v = min(max(y, np.float32(-126.0)), np.float32(127.0))
    k = np.float32(np.floor(v + np.float32(0.5)))
    f = v - k
    p = ((((((np.float32(1.535336188319500e-4) * f + np.float32(1.339887440266574e-3)) * f
              + np.float32(9.618437357674640e-3)) * f + np.float32(5.550332471162809e-2)) * f
            + np.float32(2.402264791363012e-1)) * f + np.float32(6.931472028550421e-1)) * f + np.float32(1.0))
    return p * _i32_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@numba.njit(inline="always", fastmath=_FASTMATH)
def _softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|); log1p(v) = 2 atanh(s), s = v / (2 + v) in
    (0, 1/3], by its odd series to s^15 (relative error < 1e-7 everywhere)."""
    v = _exp2(-abs(x) * _LOG2E)
    s = v / (np.float32(2.0) + v)
    s2 = s * s
    series = (((((((np.float32(1.0 / 15) * s2 + np.float32(1.0 / 13)) * s2 + np.float32(1.0 / 11)) * s2
                  + np.float32(1.0 / 9)) * s2 + np.float32(1.0 / 7)) * s2 + np.float32(1.0 / 5)) * s2
               + np.float32(1.0 / 3)) * s2 + np.float32(1.0))
    return max(x, np.float32(0.0)) + np.float32(2.0) * s * series


@numba.njit(inline="always", fastmath=_FASTMATH)
def _silu(x):
    return x / (np.float32(1.0) + _exp2(-x * _LOG2E))


# -- kernels, one compiled copy per block width ------------------------------------------------


@functools.lru_cache(maxsize=None)
def _conv_kernel(lanes: int, taps: int):
    """The causal depthwise convolution (``taps`` wide) + bias + SiLU for blocks of ``lanes`` channels."""

    @numba.njit(parallel=True, cache=_CACHE, fastmath=_FASTMATH)
    def conv_silu(x, x_blk0, weight, bias, out, length, reverse):
        """out[t] = silu(bias + sum_k weight[k] * x[t - K + 1 + k]) within each sequence of
        ``length`` rows (zeros before its start); ``reverse``: in reversed time, x[t + K - 1 - k].
        x: (T, >= x_blk0 + C/lanes, lanes), channel block k at x_blk0 + k; weight: (K, C/lanes, lanes)
        fp32; bias: (C/lanes, lanes) fp32; out: (T, C/lanes, lanes). Taps that fall outside the
        sequence read a row inside it with weight 0, so that the inner loop has no branch."""
        rows, n_blocks = out.shape[0], out.shape[1]
        n_seq = rows // length
        step = 64
        n_steps = (length + step - 1) // step
        for job in numba.prange(n_seq * n_steps):
            s, part = job // n_steps, job % n_steps
            src = np.empty(taps, dtype=np.int64)
            keep = np.empty(taps, dtype=np.float32)
            acc = np.empty(lanes, dtype=np.float32)
            for t in range(part * step, min(part * step + step, length)):
                row = s * length + t
                for k in range(taps):
                    pos = t + taps - 1 - k if reverse else t - taps + 1 + k
                    inside = 0 <= pos < length
                    src[k] = s * length + (pos if inside else t)
                    keep[k] = np.float32(1.0) if inside else np.float32(0.0)
                for blk in range(n_blocks):
                    xb = x_blk0 + blk
                    if taps == 4:  # the Mamba default, written out: one pass, sums in registers
                        r0, r1, r2, r3 = src[0], src[1], src[2], src[3]
                        k0, k1, k2, k3 = keep[0], keep[1], keep[2], keep[3]
                        for j in range(lanes):
                            a = (bias[blk, j] + (k0 * weight[0, blk, j]) * _load3(x, r0, xb, j)
                                 + (k1 * weight[1, blk, j]) * _load3(x, r1, xb, j)
                                 + (k2 * weight[2, blk, j]) * _load3(x, r2, xb, j)
                                 + (k3 * weight[3, blk, j]) * _load3(x, r3, xb, j))
                            _store3(out, row, blk, j, _silu(a))
                    else:
                        for j in range(lanes):
                            acc[j] = bias[blk, j]
                        for k in range(taps):
                            rk, kk = src[k], keep[k]
                            for j in range(lanes):
                                acc[j] += (kk * weight[k, blk, j]) * _load3(x, rk, xb, j)
                        for j in range(lanes):
                            _store3(out, row, blk, j, _silu(acc[j]))

    return conv_silu


@functools.lru_cache(maxsize=None)
def _scan_kernel(lanes: int):
    """The fused selective scan for blocks of ``lanes`` channels."""

    @numba.njit(parallel=True, cache=_CACHE, fastmath=_FASTMATH)
    def scan(u, xdbl, z, z_blk0, w_dt, dt_bias, a2, d_skip, acc, out, length, reverse, has_acc):
        """y = (scan(u, dt, A, B, C) + D u) * silu(z) (+ acc), per sequence of ``length`` rows.

        Channels come in blocks of ``lanes``: u, out: (T, C/lanes, lanes); acc (fp32): the same
        shape, added to y when ``has_acc``; z: (T, >= z_blk0 + C/lanes, lanes), channel block k of z
        at z_blk0 + k; xdbl: (T, R + 2N), its columns [0, R) the dt projection's input, then B and
        C; w_dt: (R, C/lanes, lanes); dt_bias, d_skip: (C/lanes, lanes); a2: (N, C/lanes, lanes) =
        A.T * log2(e). dt = softplus(w_dt.T @ xdbl[:R] + dt_bias).

        One job is one sequence and one block of channels. Every inner loop runs over the lanes of
        a block with its own counter as the last index and a fixed trip count, so that it compiles
        to straight SIMD instructions (an index such as c0 + j would bring numba's negative-index
        wraparound into the loop and defeat vectorisation). States and dt ranks go four at a time,
        so that the running sums wait on memory four times fewer.
        """
        rows, n_blocks = out.shape[0], out.shape[1]
        rank, n_state = w_dt.shape[0], a2.shape[0]
        n_seq = rows // length
        n4, r4 = n_state - n_state % 4, rank - rank % 4
        for job in numba.prange(n_seq * n_blocks):
            s, blk = job // n_blocks, job % n_blocks
            mxcsr = _flush_denormals()
            zb = z_blk0 + blk
            h = np.zeros((n_state, lanes), dtype=np.float32)
            dt = np.empty(lanes, dtype=np.float32)
            du = np.empty(lanes, dtype=np.float32)
            y = np.empty(lanes, dtype=np.float32)
            for step in range(length):
                t = length - 1 - step if reverse else step
                row = s * length + t
                for j in range(lanes):
                    dt[j] = dt_bias[blk, j]
                for r in range(0, r4, 4):
                    x0, x1 = _load(xdbl, row, r), _load(xdbl, row, r + 1)
                    x2, x3 = _load(xdbl, row, r + 2), _load(xdbl, row, r + 3)
                    for j in range(lanes):
                        dt[j] += (x0 * w_dt[r, blk, j] + x1 * w_dt[r + 1, blk, j]) + (
                            x2 * w_dt[r + 2, blk, j] + x3 * w_dt[r + 3, blk, j])
                for r in range(r4, rank):
                    xr = _load(xdbl, row, r)
                    for j in range(lanes):
                        dt[j] += xr * w_dt[r, blk, j]
                for j in range(lanes):
                    d = _softplus(dt[j])
                    uj = _load3(u, row, blk, j)
                    dt[j] = d
                    du[j] = d * uj
                    y[j] = d_skip[blk, j] * uj
                for n in range(0, n4, 4):
                    b0, b1 = _load(xdbl, row, rank + n), _load(xdbl, row, rank + n + 1)
                    b2, b3 = _load(xdbl, row, rank + n + 2), _load(xdbl, row, rank + n + 3)
                    q0, q1 = _load(xdbl, row, rank + n_state + n), _load(xdbl, row, rank + n_state + n + 1)
                    q2, q3 = _load(xdbl, row, rank + n_state + n + 2), _load(xdbl, row, rank + n_state + n + 3)
                    for j in range(lanes):
                        d, x = dt[j], du[j]
                        v0 = _exp2(d * a2[n, blk, j]) * h[n, j] + x * b0
                        v1 = _exp2(d * a2[n + 1, blk, j]) * h[n + 1, j] + x * b1
                        v2 = _exp2(d * a2[n + 2, blk, j]) * h[n + 2, j] + x * b2
                        v3 = _exp2(d * a2[n + 3, blk, j]) * h[n + 3, j] + x * b3
                        h[n, j], h[n + 1, j], h[n + 2, j], h[n + 3, j] = v0, v1, v2, v3
                        y[j] += (v0 * q0 + v1 * q1) + (v2 * q2 + v3 * q3)
                for n in range(n4, n_state):
                    bn, cn = _load(xdbl, row, rank + n), _load(xdbl, row, rank + n_state + n)
                    for j in range(lanes):
                        v = _exp2(dt[j] * a2[n, blk, j]) * h[n, j] + du[j] * bn
                        h[n, j] = v
                        y[j] += v * cn
                if has_acc:
                    for j in range(lanes):
                        _store3(out, row, blk, j, y[j] * _silu(_load3(z, row, zb, j)) + acc[row, blk, j])
                else:
                    for j in range(lanes):
                        _store3(out, row, blk, j, y[j] * _silu(_load3(z, row, zb, j)))
            _restore_denormals(mxcsr)

    return scan


# -- tensors in, tensors out -------------------------------------------------------------------


def lanes_for(d_inner: int) -> int | None:
    """Channels per block for a mixer of ``d_inner`` channels, or None (not a multiple of 16)."""
    return next((lanes for lanes in LANE_CHOICES if d_inner % lanes == 0), None)


def _blocks(t: torch.Tensor, lanes: int) -> np.ndarray:
    """(T, C) contiguous fp32 or bf16 tensor -> numpy (T, C/lanes, lanes) view (bf16 as int16 bits);
    another dtype gives an fp32 copy (inputs only)."""
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype != torch.float32:
        t = t.float()
    return t.reshape(t.shape[0], -1, lanes).numpy()


def _np2(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    return t.float().numpy()


def _weights(mixer, lanes: int) -> dict:
    """A mixer's per-channel weights in the kernels' block layout, fp32."""
    di = mixer.d_inner
    f32 = dict(dtype=torch.float32)
    a2 = -torch.exp(mixer.A_log.detach().float()) * float(_LOG2E)  # (di, N)
    conv_b = mixer.conv1d.bias
    def per_channel_rows(t: torch.Tensor) -> np.ndarray:  # (di, K) -> (K, di/lanes, lanes)
        return t.detach().to(**f32).t().contiguous().reshape(-1, di // lanes, lanes).numpy()

    return {
        "conv_w": per_channel_rows(mixer.conv1d.weight.reshape(di, -1)),
        "conv_b": (torch.zeros(di, **f32) if conv_b is None else conv_b.detach().to(**f32)).reshape(-1, lanes).numpy(),
        "w_dt": per_channel_rows(mixer.dt_proj.weight),
        "dt_bias": mixer.dt_proj.bias.detach().to(**f32).reshape(-1, lanes).numpy(),
        "a2": per_channel_rows(a2),
        "d_skip": mixer.D.detach().to(**f32).reshape(-1, lanes).numpy(),
    }


def supports(mixers) -> bool:
    """Whether these mixers run here (d_inner a multiple of 16) rather than on the channels-first path."""
    return _ENABLED[0] and all(lanes_for(m.d_inner) is not None for m in mixers)


@contextlib.contextmanager
def channels_first():
    """Inside: CPU inference takes the channels-first path that training uses (the kernels of
    ``scan_cpu``), as it did before this module existed: for speed and accuracy comparisons."""
    before = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = before


def _slice_sequences(batch: int, length: int, d_inner: int) -> int:
    per = max(1, min(batch, SLICE_ELEMENTS // max(1, length * d_inner)))
    return -(-batch // -(-batch // per))  # equal slices


@torch.no_grad()
def mixer_inference(hidden: torch.Tensor, directions, conjugate: bool = False,
                    strategy: str = "add") -> torch.Tensor:
    """The sum ('add') or product ('ew_multiply') of one mixer per direction over ``hidden``,
    every output in the input's order. hidden: (B, L, d_model) on the CPU -> (B, L, d_model).

    ``directions``: (mixer, reversed) pairs; a reversed mixer reads the sequence backwards.
    ``conjugate``: every mixer with its d_model channels reversed (see ``mamba._directions_stacked``).
    Matmuls run as ``F.linear``, so under CPU autocast they run in bf16 and write bf16.
    """
    b, length, _ = hidden.shape
    per = _slice_sequences(b, length, directions[0][0].d_inner)
    if per >= b:
        return _mixer_slice(hidden, directions, conjugate, strategy)
    pieces = [_mixer_slice(hidden[s:s + per], directions, conjugate, strategy) for s in range(0, b, per)]
    return torch.cat(pieces)


def _mixer_slice(hidden, directions, conjugate, strategy):
    b, length, d_model = hidden.shape
    rows = hidden.reshape(b * length, d_model)
    first = directions[0][0]
    di, lanes = first.d_inner, lanes_for(first.d_inner)
    nb = di // lanes
    # one out_proj for the sum of the directions' y when they share it (bi-directional 'add', tied)
    shared_out = (strategy == "add" and len(directions) > 1
                  and all(m.out_proj.weight is first.out_proj.weight for m, _ in directions))
    xz_of: dict[int, torch.Tensor] = {}
    acc = None
    outs = []
    for i, (mixer, reverse) in enumerate(directions):
        w_in = mixer.in_proj.weight
        key = id(w_in)
        if key not in xz_of:
            b_in = mixer.in_proj.bias
            xz_of[key] = F.linear(rows, w_in.flip(1) if conjugate else w_in, b_in).contiguous()  # (T, 2 di)
        xz = xz_of[key]
        act = torch.bfloat16 if xz.dtype == torch.bfloat16 else torch.float32  # what the kernels write
        w = _weights(mixer, lanes)
        u = torch.empty(b * length, di, dtype=act)
        with launch():
            _conv_kernel(lanes, w["conv_w"].shape[0])(_blocks(xz, lanes), 0, w["conv_w"], w["conv_b"],
                                                      _blocks(u, lanes), length, reverse)
        xdbl = F.linear(u, mixer.x_proj.weight).contiguous()  # (T, R + 2N)
        last = i == len(directions) - 1
        y = torch.empty(b * length, di, dtype=torch.float32 if shared_out and not last else act)
        has_acc = shared_out and acc is not None
        acc_np = _blocks(acc, lanes) if has_acc else np.zeros((1, 1, lanes), dtype=np.float32)
        with launch():
            _scan_kernel(lanes)(_blocks(u, lanes), _np2(xdbl), _blocks(xz, lanes), nb, w["w_dt"], w["dt_bias"],
                                w["a2"], w["d_skip"], acc_np, _blocks(y, lanes), length, reverse, has_acc)
        del u, xdbl
        if shared_out and not last:
            acc = y
            continue
        outs.append(_out_proj(y, mixer, conjugate, 1 + (i if shared_out else 0)))
    out = outs[0]
    for other in outs[1:]:
        out = out + other if strategy == "add" else out * other
    return out.reshape(b, length, d_model)


def _out_proj(y: torch.Tensor, mixer, conjugate: bool, copies: int) -> torch.Tensor:
    """out_proj of y; ``copies``: how many directions' outputs y sums (each brings the bias)."""
    w, bias = mixer.out_proj.weight, mixer.out_proj.bias
    if conjugate:
        w = w.flip(0)
        bias = None if bias is None else bias.flip(0)
    if bias is not None and copies > 1:
        bias = bias * copies
    return F.linear(y, w, bias)
