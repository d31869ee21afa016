"""Selective scan and causal depthwise convolution in Triton: forward and backward.

Same math and arguments as :func:`caduceus_cli.model.scan.selective_scan_torch`; imported only when
Triton is (``scan.triton_available``). Written for the layout ``mamba_directions`` produces:
u, delta, z (batch, channels, L) with L contiguous and any batch/channel strides (they are views of
(k, d_inner, batch*L) tensors), B, C (batch, groups, N, L) with any strides. Nothing is copied,
transposed or flipped on the way in; y is written with u's strides.

Forward (``_scan_fwd_kernel``): one program per (channel block, sequence, time chunk); each thread
owns whole channels and keeps their N states in registers, looping over time. A time tile of BT
positions is loaded coalesced (one 16-byte vector per channel for bf16), unpacked into BT columns in
registers, and each step costs per state one exp2 (A pre-scaled by log2(e)) and three multiply-adds.
Short sequences (many channels x sequences) run one time chunk per program; long ones with few
sequences are cut into chunks whose end states are computed first (``STATE_ONLY`` pass) and carried
into the output pass, so the grid still fills the GPU.

Backward (``_scan_bwd_kernel``): one program per (channel block, sequence) walks the sequence from
the end in chunks of CHUNK positions, recomputing each chunk's states from the checkpoint the
forward stored at the chunk's start (no (batch, channels, L, N) tensor ever exists), with
``tl.associative_scan`` forward over the states and in reverse over their gradients.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

LOG2E = math.log2(math.e)
# Under TRITON_INTERPRET=1 (CPU tests) inline PTX is not available: use tl.exp2 there.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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
def _ld(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.load(ptrs).to(tl.float32)


@triton.jit
def _load_cols8(row, t0, sl, cm3, t_end, MASKED: tl.constexpr, VEC: tl.constexpr, R: tl.constexpr,
                BT: tl.constexpr):
    """Positions t0..t0+7 (those < t_end when MASKED) of the rows ``row`` ([R, BT] pointers, rows
    off where cm3 [R, BT, 1] is false) as 8 fp32 columns [R, BT].

    Loaded as VEC-wide pieces (16 bytes per thread: VEC = 8 for 16-bit types, 4 for fp32)."""
    offs = tl.arange(0, VEC)[None, None, :]
    if VEC == 8:
        x = _ld(row[:, :, None] + (t0 + offs) * sl, cm3 & (t0 + offs < t_end), MASKED)
        e, o = tl.split(tl.reshape(x, [R, BT, 4, 2]))
        c0, c2, c4, c6 = _cols4(e, R, BT)
        c1, c3, c5, c7 = _cols4(o, R, BT)
    else:
        lo = _ld(row[:, :, None] + (t0 + offs) * sl, cm3 & (t0 + offs < t_end), MASKED)
        hi = _ld(row[:, :, None] + (t0 + 4 + offs) * sl, cm3 & (t0 + 4 + offs < t_end), MASKED)
        c0, c1, c2, c3 = _cols4(lo, R, BT)
        c4, c5, c6, c7 = _cols4(hi, R, BT)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _raw8(row, t0, sl, cm3, t_end, MASKED: tl.constexpr, VEC: tl.constexpr):
    """Positions t0..t0+7 of the rows as loaded (input dtype), in one or two 16-byte pieces: a
    pair (lo, hi); for VEC == 8 both are the whole tile. Kept raw so that a prefetched tile costs
    few registers."""
    offs = tl.arange(0, VEC)[None, None, :]
    if VEC == 8:
        if MASKED:
            x = tl.load(row[:, :, None] + (t0 + offs) * sl, mask=cm3 & (t0 + offs < t_end), other=0.0)
        else:
            x = tl.load(row[:, :, None] + (t0 + offs) * sl)
        return x, x
    else:
        if MASKED:
            lo = tl.load(row[:, :, None] + (t0 + offs) * sl, mask=cm3 & (t0 + offs < t_end), other=0.0)
            hi = tl.load(row[:, :, None] + (t0 + 4 + offs) * sl, mask=cm3 & (t0 + 4 + offs < t_end), other=0.0)
        else:
            lo = tl.load(row[:, :, None] + (t0 + offs) * sl)
            hi = tl.load(row[:, :, None] + (t0 + 4 + offs) * sl)
        return lo, hi


@triton.jit
def _cols8(lo, hi, VEC: tl.constexpr, R: tl.constexpr, BT: tl.constexpr):
    """A tile from :func:`_raw8` as 8 fp32 columns [R, BT] in time order."""
    if VEC == 8:
        e, o = tl.split(tl.reshape(lo.to(tl.float32), [R, BT, 4, 2]))
        c0, c2, c4, c6 = _cols4(e, R, BT)
        c1, c3, c5, c7 = _cols4(o, R, BT)
    else:
        c0, c1, c2, c3 = _cols4(lo.to(tl.float32), R, BT)
        c4, c5, c6, c7 = _cols4(hi.to(tl.float32), R, BT)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _store_cols8(row, t0, sl, cm3, t_end, c0, c1, c2, c3, c4, c5, c6, c7, MASKED: tl.constexpr,
                 VEC: tl.constexpr, R: tl.constexpr, BT: tl.constexpr):
    """Inverse of :func:`_load_cols8`."""
    offs = tl.arange(0, VEC)[None, None, :]
    ty = row.dtype.element_ty
    if VEC == 8:
        e = tl.reshape(tl.join(tl.join(c0, c4), tl.join(c2, c6)), [R, BT, 4])
        o = tl.reshape(tl.join(tl.join(c1, c5), tl.join(c3, c7)), [R, BT, 4])
        x = tl.reshape(tl.join(e, o), [R, BT, 8]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (t0 + offs) * sl, x, mask=cm3 & (t0 + offs < t_end))
        else:
            tl.store(row[:, :, None] + (t0 + offs) * sl, x)
    else:
        lo = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [R, BT, 4]).to(ty)
        hi = tl.reshape(tl.join(tl.join(c4, c6), tl.join(c5, c7)), [R, BT, 4]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (t0 + offs) * sl, lo, mask=cm3 & (t0 + offs < t_end))
            tl.store(row[:, :, None] + (t0 + 4 + offs) * sl, hi, mask=cm3 & (t0 + 4 + offs < t_end))
        else:
            tl.store(row[:, :, None] + (t0 + offs) * sl, lo)
            tl.store(row[:, :, None] + (t0 + 4 + offs) * sl, hi)


@triton.jit
def _load_states(base, sn, ok, MASKED: tl.constexpr, VEC: tl.constexpr, BT: tl.constexpr):
    """base[n * sn] for the 16 states n, broadcast to every thread: [1, BT, 16] fp32 (each thread
    holds all 16). Column p holds state ``state_order(VEC)[p]`` (the order the joins produce)."""
    offs = tl.arange(0, VEC)[None, None, :]
    zero = tl.zeros([1, BT, 1], dtype=tl.int32)
    ok = ok & ((zero + offs) >= 0)  # a block mask (the interpreter does not broadcast scalar masks)
    if VEC == 8:
        lo = _ld(base + (zero + offs) * sn, ok, MASKED)
        hi = _ld(base + (zero + 8 + offs) * sn, ok, MASKED)
        return tl.reshape(tl.join(lo, hi), [1, BT, 16])
    else:
        q0 = _ld(base + (zero + offs) * sn, ok, MASKED)
        q1 = _ld(base + (zero + 4 + offs) * sn, ok, MASKED)
        q2 = _ld(base + (zero + 8 + offs) * sn, ok, MASKED)
        q3 = _ld(base + (zero + 12 + offs) * sn, ok, MASKED)
        return tl.reshape(tl.join(tl.join(q0, q1), tl.join(q2, q3)), [1, BT, 16])


@triton.jit
def _load_rows16(row, m, R: tl.constexpr, BT: tl.constexpr):
    """16 consecutive fp32 of each row (``row``: [R, BT] pointers) as [R, BT, 16], a row in one
    thread; column p holds element ``state_order(4)[p]`` of the row."""
    offs = tl.arange(0, 4)[None, None, :]
    q0 = tl.load(row[:, :, None] + offs, mask=m, other=0.0)
    q1 = tl.load(row[:, :, None] + 4 + offs, mask=m, other=0.0)
    q2 = tl.load(row[:, :, None] + 8 + offs, mask=m, other=0.0)
    q3 = tl.load(row[:, :, None] + 12 + offs, mask=m, other=0.0)
    return tl.reshape(tl.join(tl.join(q0, q1), tl.join(q2, q3)), [R, BT, 16])


@triton.jit
def _store_rows16(row, x, m, R: tl.constexpr, BT: tl.constexpr):
    """Inverse of :func:`_load_rows16`."""
    offs = tl.arange(0, 4)[None, None, :]
    a, b = tl.split(tl.reshape(x, [R, BT, 4, 2, 2]))
    q0, q1 = tl.split(a)
    q2, q3 = tl.split(b)
    tl.store(row[:, :, None] + offs, q0, mask=m)
    tl.store(row[:, :, None] + 4 + offs, q1, mask=m)
    tl.store(row[:, :, None] + 8 + offs, q2, mask=m)
    tl.store(row[:, :, None] + 12 + offs, q3, mask=m)


def state_order(vec: int) -> list[int]:
    """Which state n sits in column p of :func:`_load_states`'s result, for loads VEC wide."""
    if vec == 8:  # reshape(join(lo, hi)): p = 2 i + j holds n = 8 j + i
        return [8 * (p % 2) + p // 2 for p in range(16)]
    # reshape(join(join(q0, q1), join(q2, q3))): p = 4 i + 2 j + k holds q_{2k+j}[i], n = 8 k + 4 j + i
    return [8 * (p % 2) + 4 * ((p // 2) % 2) + p // 4 for p in range(16)]


@triton.jit
def _dt(d, bias, t, t_end, MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    if HAS_BIAS:
        d = d + bias
    if SOFTPLUS:
        # the IEEE version: with _softplus_f this kernel (249 registers) spills
        d = _softplus(d)
    if MASKED:
        d = tl.where(t < t_end, d, 0.0)  # past the end: no decay, no input
    return d


@triton.jit
def _step(h, A2, dt, du, b_base, c_base, t, sB_n, sC_n, ok, MASKED: tl.constexpr, WITH_Y: tl.constexpr,
          VEC_B: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    """One time step: h [R, BT, 16] <- exp2(dt * A2) * h + du * B_t; y_t = sum_n h * C_t."""
    Bt = _load_states(b_base + t, sB_n, ok, MASKED, VEC_B, BT)
    h = _exp2(dt[:, :, None] * A2, FAST) * h + du[:, :, None] * Bt
    if WITH_Y:
        Ct = _load_states(c_base + t, sC_n, ok, MASKED, VEC_B, BT)
        y = tl.sum(h * Ct, axis=2)
    else:
        y = dt
    return h, y


@triton.jit
def _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end, sB_n, sB_l, sC_n, sC_l,
          sy_l, cm,
          R: tl.constexpr, BT: tl.constexpr, MASKED: tl.constexpr, STATE_ONLY: tl.constexpr,
          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
          VEC_U: tl.constexpr, VEC_D: tl.constexpr, VEC_Z: tl.constexpr, VEC_Y: tl.constexpr,
          VEC_B: tl.constexpr, FAST: tl.constexpr):
    """Eight time steps t0..t0+7 of one channel block, from their u, delta, z tiles as loaded by
    :func:`_raw8`; returns (h, sum of dt over them)."""
    cm3 = cm[:, :, None]
    u0, u1, u2, u3, u4, u5, u6, u7 = _cols8(ul, uh, VEC_U, R, BT)
    d0, d1, d2, d3, d4, d5, d6, d7 = _cols8(dl, dh, VEC_D, R, BT)
    d0 = _dt(d0, bias, t0, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d1 = _dt(d1, bias, t0 + 1, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d2 = _dt(d2, bias, t0 + 2, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d3 = _dt(d3, bias, t0 + 3, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d4 = _dt(d4, bias, t0 + 4, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d5 = _dt(d5, bias, t0 + 5, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d6 = _dt(d6, bias, t0 + 6, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    d7 = _dt(d7, bias, t0 + 7, t_end, MASKED, HAS_BIAS, SOFTPLUS)
    ds = ((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7))
    WY: tl.constexpr = not STATE_ONLY
    h, y0 = _step(h, A2, d0, d0 * u0, b_base, c_base, t0 * sB_l, sB_n, sC_n, t0 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y1 = _step(h, A2, d1, d1 * u1, b_base, c_base, (t0 + 1) * sB_l, sB_n, sC_n, t0 + 1 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y2 = _step(h, A2, d2, d2 * u2, b_base, c_base, (t0 + 2) * sB_l, sB_n, sC_n, t0 + 2 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y3 = _step(h, A2, d3, d3 * u3, b_base, c_base, (t0 + 3) * sB_l, sB_n, sC_n, t0 + 3 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y4 = _step(h, A2, d4, d4 * u4, b_base, c_base, (t0 + 4) * sB_l, sB_n, sC_n, t0 + 4 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y5 = _step(h, A2, d5, d5 * u5, b_base, c_base, (t0 + 5) * sB_l, sB_n, sC_n, t0 + 5 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y6 = _step(h, A2, d6, d6 * u6, b_base, c_base, (t0 + 6) * sB_l, sB_n, sC_n, t0 + 6 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y7 = _step(h, A2, d7, d7 * u7, b_base, c_base, (t0 + 7) * sB_l, sB_n, sC_n, t0 + 7 < t_end, MASKED, WY, VEC_B, BT, FAST)
    if not STATE_ONLY:
        if HAS_D:
            y0 += Dv * u0
            y1 += Dv * u1
            y2 += Dv * u2
            y3 += Dv * u3
            y4 += Dv * u4
            y5 += Dv * u5
            y6 += Dv * u6
            y7 += Dv * u7
        if HAS_Z:
            z0, z1, z2, z3, z4, z5, z6, z7 = _cols8(zl, zh, VEC_Z, R, BT)
            y0 *= z0 * _sigmoid(z0)
            y1 *= z1 * _sigmoid(z1)
            y2 *= z2 * _sigmoid(z2)
            y3 *= z3 * _sigmoid(z3)
            y4 *= z4 * _sigmoid(z4)
            y5 *= z5 * _sigmoid(z5)
            y6 *= z6 * _sigmoid(z6)
            y7 *= z7 * _sigmoid(z7)
        _store_cols8(y_row, t0, sy_l, cm3, t_end, y0, y1, y2, y3, y4, y5, y6, y7, MASKED, VEC_Y, R, BT)
    return h, ds



@triton.jit
def _scan_fwd_kernel(
    u_ptr, d_ptr, z_ptr, y_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
    hend_ptr, dtsum_ptr, ckpt_ptr,
    L, chunk_len, n_chunks, per_group, channels, n_ckpt,
    su_b, su_c, su_l, sd_b, sd_c, sd_l, sz_b, sz_c, sz_l, sy_b, sy_c, sy_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    R: tl.constexpr, BT: tl.constexpr, EVEN_C: tl.constexpr, CKPT: tl.constexpr,
    STATE_ONLY: tl.constexpr, CARRY: tl.constexpr, STORE_CKPT: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    VEC_U: tl.constexpr, VEC_D: tl.constexpr, VEC_Z: tl.constexpr, VEC_Y: tl.constexpr,
    VEC_B: tl.constexpr, FAST: tl.constexpr, PREFETCH_BC: tl.constexpr, PIPELINE: tl.constexpr,
):
    """Grid (groups * blocks per group, batch, time chunks); a block is R * BT channels of one group.

    A2_ptr: (channels, 16) fp32, A * log2(e), its columns permuted so that :func:`_load_rows16`
    returns them in ``state_order(VEC_B)``; hend/ckpt hold states in that same private order."""
    BD: tl.constexpr = R * BT
    blocks_per_group = tl.cdiv(per_group, BD)
    g = tl.program_id(0) // blocks_per_group
    cig = (tl.program_id(0) % blocks_per_group) * BD + tl.arange(0, R)[:, None] * BT + tl.arange(0, BT)[None, :]
    if EVEN_C:
        cm = cig >= 0
    else:
        cm = cig < per_group
    c = (g * per_group + cig).to(tl.int64)  # [R, BT]
    b = tl.program_id(1).to(tl.int64)
    j = tl.program_id(2)
    cm3 = cm[:, :, None]
    A2 = _load_rows16(A2_ptr + c * 16, cm3, R, BT)
    bias = tl.load(bias_ptr + c, mask=cm, other=0.0) if HAS_BIAS else None
    Dv = tl.load(D_ptr + c, mask=cm, other=0.0) if HAS_D else None
    t_start = j * chunk_len
    t_end = t_start + chunk_len
    if t_end > L:
        t_end = L
    h = tl.zeros([R, BT, 16], dtype=tl.float32)
    state_row = (b * channels + c) * n_chunks
    if CARRY:
        # the state entering chunk j: fold the end states of chunks 0..j-1 (each from zero) in order
        for i in range(0, n_chunks - 1):  # (bounds from arguments only: the interpreter needs that)
            if i < j:
                he = _load_rows16(hend_ptr + (state_row + i) * 16, cm3, R, BT)
                ds = tl.load(dtsum_ptr + state_row + i, mask=cm, other=0.0)
                h = _exp2(ds[:, :, None] * A2, FAST) * h + he
    u_row = u_ptr + b * su_b + c * su_c
    d_row = d_ptr + b * sd_b + c * sd_c
    z_row = z_ptr + b * sz_b + c * sz_c
    y_row = y_ptr + b * sy_b + c * sy_c
    b_base = B_ptr + b * sB_b + g * sB_g
    c_base = C_ptr + b * sC_b + g * sC_g
    ckpt_row = (b * channels + c) * n_ckpt
    dsum = tl.zeros([R, BT], dtype=tl.float32)
    if PIPELINE:
        n_full = (t_end - t_start) // 8
        # Full tiles, software-pipelined: the next tile's u, delta, z are loaded before this tile's
        # arithmetic, and the next tile's B and C rows are touched so that the per-step loads of them
        # hit L1 (their values are only kept alive by `junk`, stored under a condition that is false).
        nul, nuh = _raw8(u_row, t_start, su_l, cm3, t_end, not EVEN_C, VEC_U)
        ndl, ndh = _raw8(d_row, t_start, sd_l, cm3, t_end, not EVEN_C, VEC_D)
        if HAS_Z and not STATE_ONLY:
            nzl, nzh = _raw8(z_row, t_start, sz_l, cm3, t_end, not EVEN_C, VEC_Z)
        else:
            nzl, nzh = nul, nuh
        lane = tl.arange(0, BT)
        junk = tl.zeros([BT], dtype=tl.float32)
        for k in range(0, n_full):
            t0 = t_start + k * 8
            ul, uh, dl, dh, zl, zh = nul, nuh, ndl, ndh, nzl, nzh
            tn = t0 + 8
            if k + 1 == n_full:
                tn = t0  # nothing left to prefetch: reload this tile (cheap, in cache)
            nul, nuh = _raw8(u_row, tn, su_l, cm3, t_end, not EVEN_C, VEC_U)
            ndl, ndh = _raw8(d_row, tn, sd_l, cm3, t_end, not EVEN_C, VEC_D)
            if HAS_Z and not STATE_ONLY:
                nzl, nzh = _raw8(z_row, tn, sz_l, cm3, t_end, not EVEN_C, VEC_Z)
            if PREFETCH_BC:
                junk += tl.load(b_base + tn * sB_l + lane)
                if not STATE_ONLY:
                    junk += tl.load(c_base + tn * sC_l + lane)
            if STORE_CKPT:
                if t0 % CKPT == 0:
                    _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
            h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                          sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                          R, BT, not EVEN_C, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                          VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
            dsum += ds
        if PREFETCH_BC:
            if L < 0:  # never: keeps the prefetching loads
                tl.store(dtsum_ptr + lane, junk)
    else:
        # The first version's loop (every chunk the same trip count, the tail inside it), kept as
        # measured: faster than the pipelined loop for the chunked launches of long sequences
        # (H200, PS 256x16 at 2 x 131 kbp: 0.83 against 0.46 M tokens/s for the whole model).
        n_full = 0  # no separate tail below
        for k in range(0, chunk_len // 8):
            t0 = t_start + k * 8
            if t0 < t_end:
                if STORE_CKPT:
                    if t0 % CKPT == 0:
                        _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
                if t0 + 8 <= t_end:
                    ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, not EVEN_C, VEC_U)
                    dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, not EVEN_C, VEC_D)
                    if HAS_Z and not STATE_ONLY:
                        zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, not EVEN_C, VEC_Z)
                    else:
                        zl, zh = ul, uh
                    h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                                  sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                                  R, BT, not EVEN_C, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                                  VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
                else:
                    ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, True, VEC_U)
                    dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, True, VEC_D)
                    if HAS_Z and not STATE_ONLY:
                        zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, True, VEC_Z)
                    else:
                        zl, zh = ul, uh
                    h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                                  sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                                  R, BT, True, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                                  VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
                dsum += ds
    t0 = t_start + n_full * 8
    if PIPELINE and t0 < t_end:
        if STORE_CKPT:
            if t0 % CKPT == 0:
                _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
        ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, True, VEC_U)
        dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, True, VEC_D)
        if HAS_Z and not STATE_ONLY:
            zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, True, VEC_Z)
        else:
            zl, zh = ul, uh
        h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                      sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                      R, BT, True, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                      VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
        dsum += ds
    if STATE_ONLY:
        _store_rows16(hend_ptr + (state_row + j) * 16, h, cm3, R, BT)
        tl.store(dtsum_ptr + state_row + j, dsum, mask=cm)


# -- backward ------------------------------------------------------------------------------------


@triton.jit
def _combine(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2) for h -> a h + b."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_bwd_kernel(
    u_ptr, d_ptr, z_ptr, dout_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr,
    du_ptr, dd_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, carry_ptr,
    L, per_group, channels, n_ckpt, n_split, groups, batch,
    su_b, su_c, su_l, sd_b, sd_c, sd_l, sz_b, sz_c, sz_l, so_b, so_c, so_l,
    sdu_b, sdu_c, sdu_l, sdd_b, sdd_c, sdd_l, sdz_b, sdz_c, sdz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    BD: tl.constexpr, CK: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    FAST: tl.constexpr, NSTAGE: tl.constexpr,
):
    """Grid (groups, batch, n_split). Program (g, b, s) walks the sequence from its end in chunks of
    CK positions (the forward's checkpoint interval) over channel blocks s, s + n_split, ... of
    group g. Per chunk and block it recomputes the states from the checkpoint with a forward scan,
    their gradients with a reverse scan, and accumulates every input's gradient; dB and dC of the
    chunk are summed over the program's channels in registers and written once (a partial per s).

    dA, dD, dbias: per-(b, channel) partials (summed over batch by the caller); carry: per-(b,
    channel, state) scratch holding a_t0 * dh_t0 of the chunk just done (the gradient the state
    entering it receives)."""
    g = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2)
    n_blocks = tl.cdiv(per_group, BD)
    ci = tl.arange(0, BD)
    ti = tl.arange(0, CK)
    ni = tl.arange(0, 16)
    LOG2E_: tl.constexpr = 1.4426950408889634
    for kk in range(0, n_ckpt):
        k = n_ckpt - 1 - kk
        t0 = k * CK
        tt = t0 + ti
        tm = tt < L
        nx_ok = (tt + 1 < L) & (ti + 1 < CK)  # a_{t+1} inside this chunk; 1 at its last position
        dB_acc = tl.zeros([16, CK], dtype=tl.float32)
        dC_acc = tl.zeros([16, CK], dtype=tl.float32)
        for blk0 in range(0, n_blocks, n_split):
            cig = (blk0 + s) * BD + ci
            cmask = cig < per_group
            c = (g * per_group + cig).to(tl.int64)
            m = cmask[:, None] & tm[None, :]
            mnx = cmask[:, None] & nx_ok[None, :]
            u = tl.load(u_ptr + b * su_b + c[:, None] * su_c + tt[None, :] * su_l, mask=m, other=0.0).to(tl.float32)
            draw = tl.load(d_ptr + b * sd_b + c[:, None] * sd_c + tt[None, :] * sd_l, mask=m, other=0.0).to(tl.float32)
            dnx = tl.load(d_ptr + b * sd_b + c[:, None] * sd_c + (tt + 1)[None, :] * sd_l, mask=mnx, other=0.0).to(tl.float32)
            dout = tl.load(dout_ptr + b * so_b + c[:, None] * so_c + tt[None, :] * so_l, mask=m, other=0.0).to(tl.float32)
            if HAS_BIAS:
                bias = tl.load(bias_ptr + c, mask=cmask, other=0.0)
                draw = draw + bias[:, None]
                dnx = dnx + bias[:, None]
            if SOFTPLUS:
                dt = _softplus(draw)
                dtn = _softplus(dnx)
            else:
                dt = draw
                dtn = dnx
            dt = tl.where(m, dt, 0.0)
            dtn = tl.where(mnx, dtn, 0.0)
            if HAS_Z:
                z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + tt[None, :] * sz_l, mask=m, other=0.0).to(tl.float32)
                zs = _sigmoid(z)
                dy = dout * (z * zs)
            else:
                dy = dout
            if HAS_D:
                Dv = tl.load(D_ptr + c, mask=cmask, other=0.0)
                du = dy * Dv[:, None]
                y = u * Dv[:, None]
            else:
                du = tl.zeros([BD, CK], dtype=tl.float32)
                y = tl.zeros([BD, CK], dtype=tl.float32)
            ddt = tl.zeros([BD, CK], dtype=tl.float32)
            dtu = dt * u
            srow = (b * channels + c) * 16  # [BD] rows of the (batch, channels, 16) scratch
            for n in tl.range(0, 16, num_stages=NSTAGE):  # pipelined: the next state's loads in flight
                A2n = tl.load(A2_ptr + c * 16 + n, mask=cmask, other=0.0)
                Bn = tl.load(B_ptr + b * sB_b + g * sB_g + n * sB_n + tt * sB_l, mask=tm, other=0.0).to(tl.float32)
                Cn = tl.load(C_ptr + b * sC_b + g * sC_g + n * sC_n + tt * sC_l, mask=tm, other=0.0).to(tl.float32)
                h0 = tl.load(ckpt_ptr + ((b * channels + c) * n_ckpt + k) * 16 + n, mask=cmask, other=0.0)
                a = _exp2(dt * A2n[:, None], FAST)
                bb = dtu * Bn[None, :]
                pa, pb = tl.associative_scan((a, bb), 1, _combine)
                h = pb + pa * h0[:, None]
                y += h * Cn[None, :]
                an = _exp2(dtn * A2n[:, None], FAST)
                beta = dy * Cn[None, :]
                ra, rb = tl.associative_scan((an, beta), 1, _combine, reverse=True)
                e = tl.load(carry_ptr + srow + n, mask=cmask & (kk > 0), other=0.0)
                dh = rb + ra * e[:, None]
                dh = tl.where(m, dh, 0.0)
                hprev_a = h - bb  # a_t * h_{t-1}
                du += dh * (dt * Bn[None, :])
                ddt += dh * (u * Bn[None, :] + (A2n[:, None] / LOG2E_) * hprev_a)
                dAn = tl.sum(dh * dt * hprev_a, axis=1)
                da_prev = tl.load(dA_ptr + srow + n, mask=cmask, other=0.0)
                tl.store(dA_ptr + srow + n, da_prev + dAn, mask=cmask)
                e_new = tl.sum(tl.where(ti[None, :] == 0, a * dh, 0.0), axis=1)
                tl.store(carry_ptr + srow + n, e_new, mask=cmask)
                dBn = tl.sum(dh * dtu, axis=0)  # [CK]
                dCn = tl.sum(tl.where(m, dy * h, 0.0), axis=0)
                sel = (ni == n)[:, None]
                dB_acc += tl.where(sel, dBn[None, :], 0.0)
                dC_acc += tl.where(sel, dCn[None, :], 0.0)
            if HAS_Z:
                dz = dout * y * (zs * (1.0 + z * (1.0 - zs)))
                tl.store(dz_ptr + b * sdz_b + c[:, None] * sdz_c + tt[None, :] * sdz_l,
                         dz.to(dz_ptr.dtype.element_ty), mask=m)
            if HAS_D:
                dD_prev = tl.load(dD_ptr + b * channels + c, mask=cmask, other=0.0)
                tl.store(dD_ptr + b * channels + c, dD_prev + tl.sum(tl.where(m, dy * u, 0.0), axis=1), mask=cmask)
            if SOFTPLUS:
                ddt = ddt * _sigmoid(draw)
            ddt = tl.where(m, ddt, 0.0)
            if HAS_BIAS:
                db_prev = tl.load(dbias_ptr + b * channels + c, mask=cmask, other=0.0)
                tl.store(dbias_ptr + b * channels + c, db_prev + tl.sum(ddt, axis=1), mask=cmask)
            tl.store(du_ptr + b * sdu_b + c[:, None] * sdu_c + tt[None, :] * sdu_l,
                     du.to(du_ptr.dtype.element_ty), mask=m)
            tl.store(dd_ptr + b * sdd_b + c[:, None] * sdd_c + tt[None, :] * sdd_l,
                     ddt.to(dd_ptr.dtype.element_ty), mask=m)
        part = ((s * batch + b) * groups + g) * 16  # rows of the (n_split, batch, groups, 16, L) partials
        tl.store(dB_ptr + (part + ni[:, None]) * L + tt[None, :], dB_acc, mask=tm[None, :])
        tl.store(dC_ptr + (part + ni[:, None]) * L + tt[None, :], dC_acc, mask=tm[None, :])


# -- host side -----------------------------------------------------------------------------------

BWD_STAGES = int(os.environ.get("CADUCEUS_SCAN_BWD_STAGES", "2"))  # 1: no pipelining of the state loop
CKPT = 64  # positions between stored states (the backward's chunk): 64 B of fp32 state per 64 positions
_MIN_CHUNK = 1024  # shortest time chunk the forward cuts a long sequence into


def _vec(t: torch.Tensor) -> int:
    return 8 if t.element_size() == 2 else 4


def _states_last_fp32(x: torch.Tensor) -> torch.Tensor:
    """(batch, groups, N, L) any dtype/strides -> the same values as fp32 with N contiguous (a view
    of a (batch, groups, L, N) tensor), so one thread loads a position's 16 values as 4 vectors."""
    if x.dtype == torch.float32 and x.stride(-2) == 1 and x.stride(-1) % 16 == 0 and x.data_ptr() % 16 == 0:
        return x
    out = torch.empty(x.shape[0], x.shape[1], x.shape[3], x.shape[2], device=x.device, dtype=torch.float32)
    out.copy_(x.transpose(-1, -2))
    return out.transpose(-1, -2)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    if not torch.cuda.is_available():  # the interpreter on CPU tensors
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_warps(per_group: int) -> int:
    return 4 if per_group >= 128 else 2 if per_group >= 64 else 1


def scan_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 keep_states: bool = False, out: torch.Tensor | None = None):
    """The selective scan's forward. u, delta, z: (batch, channels, L), any batch/channel strides;
    A: (channels, 16); B, C: (batch, groups, 16, L); D, delta_bias: (channels,).

    Returns (y, checkpoints): y like u (same strides and dtype), or ``out`` (which may be z or u
    themselves: every position is read before it is written); checkpoints (batch, channels,
    ceil(L / CKPT), 16) fp32, the states entering every CKPT-th position, when ``keep_states``.
    B, C may also be (batch, 16, L): one group."""
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, channels, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    if n != 16:
        raise ValueError(f"the Triton scan is written for d_state 16, got {n}")
    per_group = channels // groups
    B32, C32 = _states_last_fp32(B), _states_last_fp32(C)
    A2 = (A.float() * LOG2E).contiguous()
    y = torch.empty_like(u) if out is None else out
    num_warps = _num_warps(per_group)
    bt = 32 * num_warps
    blocks = groups * triton.cdiv(per_group, bt)
    n_ckpt = triton.cdiv(length, CKPT)
    ckpt = (torch.empty(batch, channels, n_ckpt, 16, device=u.device, dtype=torch.float32) if keep_states
            else torch.empty(1, device=u.device, dtype=torch.float32))
    # Enough programs to keep every multiprocessor busy; otherwise cut the sequence into chunks.
    want = 8 * _sm_count(u.device.index or 0)
    n_chunks = 1
    if blocks * batch < want and length >= 2 * _MIN_CHUNK:
        n_chunks = min(triton.cdiv(want, blocks * batch), length // _MIN_CHUNK)
    chunk_len = triton.cdiv(triton.cdiv(length, n_chunks), CKPT) * CKPT
    n_chunks = triton.cdiv(length, chunk_len)
    dummy = A2
    common = dict(
        R=1, BT=bt, EVEN_C=per_group % bt == 0, CKPT=CKPT,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), HAS_D=D is not None, HAS_Z=z is not None,
        VEC_U=_vec(u), VEC_D=_vec(delta), VEC_Z=_vec(z) if z is not None else 4, VEC_Y=_vec(y), VEC_B=4,
        FAST=not _INTERPRET, num_warps=num_warps,
        # touching a tile's B, C rows ahead needs rows of >= 16 floats (true of _states_last_fp32's)
        PREFETCH_BC=not _INTERPRET and B32.stride(-1) >= 16 and C32.stride(-1) >= 16,
    )
    zz = z if z is not None else u
    bias = delta_bias.float().contiguous() if delta_bias is not None else dummy
    Dv = D.float().contiguous() if D is not None else dummy
    strides = (*u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *B32.stride(), *C32.stride())
    if n_chunks > 1:
        hend = torch.empty(batch, channels, n_chunks, 16, device=u.device, dtype=torch.float32)
        dtsum = torch.empty(batch, channels, n_chunks, device=u.device, dtype=torch.float32)
        _scan_fwd_kernel[(blocks, batch, n_chunks - 1)](
            u, delta, zz, y, A2, B32, C32, Dv, bias, hend, dtsum, ckpt,
            length, chunk_len, n_chunks, per_group, channels, n_ckpt, *strides,
            STATE_ONLY=True, CARRY=False, STORE_CKPT=False, PIPELINE=False, **common)
    else:
        hend = dtsum = dummy
    _scan_fwd_kernel[(blocks, batch, n_chunks)](
        u, delta, zz, y, A2, B32, C32, Dv, bias, hend, dtsum, ckpt,
        length, chunk_len, n_chunks, per_group, channels, n_ckpt, *strides,
        STATE_ONLY=False, CARRY=n_chunks > 1, STORE_CKPT=keep_states, PIPELINE=n_chunks == 1, **common)
    return y, (ckpt if keep_states else None)


# 'seq' (scan_triton_bwd, channel sums by shuffles), 'seq-sum' (the same with tl.sum), 'tile' (the first version)
BWD = os.environ.get("CADUCEUS_SCAN_BWD", "seq")


def scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of :func:`scan_forward`'s y."""
    if BWD == "tile":
        return scan_backward_tile(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt)
    from .scan_triton_bwd import scan_backward_seq

    per_group = u.shape[1] // B.shape[1]
    return scan_backward_seq(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, CKPT,
                             _num_warps(per_group), _INTERPRET, reduce_scatter=BWD != "seq-sum")


def scan_backward_tile(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt):
    """The first backward: 64-position tiles with associative scans (kept for comparison)."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    B32, C32 = _states_last_fp32(B), _states_last_fp32(C)
    A2 = (A.float() * LOG2E).contiguous()
    bd = 32
    n_blocks = triton.cdiv(per_group, bd)
    want = 4 * _sm_count(u.device.index or 0)
    n_split = max(1, min(n_blocks, triton.cdiv(want, batch * groups)))
    n_ckpt = ckpt.shape[2]
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty_like(u)
    dd = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dB = torch.empty(n_split, batch, groups, 16, length, **f32)
    dC = torch.empty(n_split, batch, groups, 16, length, **f32)
    dA = torch.zeros(batch, channels, 16, **f32)
    dD = torch.zeros(batch, channels, **f32)
    dbias = torch.zeros(batch, channels, **f32)
    carry = torch.empty(batch, channels, 16, **f32)
    zz = z if z is not None else u
    dzz = dz if dz is not None else du
    dummy = A2
    _scan_bwd_kernel[(groups, batch, n_split)](
        u, delta, zz, dout, A2, B32, C32,
        D.float().contiguous() if D is not None else dummy,
        delta_bias.float().contiguous() if delta_bias is not None else dummy, ckpt,
        du, dd, dzz, dB, dC, dA, dD, dbias, carry,
        length, per_group, channels, n_ckpt, n_split, groups, batch,
        *u.stride(), *delta.stride(), *zz.stride(), *dout.stride(),
        *du.stride(), *dd.stride(), *dzz.stride(), *B32.stride(), *C32.stride(),
        BD=bd, CK=CKPT, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        HAS_D=D is not None, HAS_Z=z is not None, FAST=not _INTERPRET, num_warps=8,  # 8: few spills
        NSTAGE=BWD_STAGES,
    )
    dB = dB.sum(0) if n_split > 1 else dB[0]
    dC = dC.sum(0) if n_split > 1 else dC[0]
    return (du, dd, dA.sum(0), dB, dC, dD.sum(0) if D is not None else None, dz,
            dbias.sum(0) if delta_bias is not None else None)


class SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        train = any(ctx.needs_input_grad)
        y, ckpt = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_states=train)
        if train:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        du, dd, dA, dB, dC, dD, dz, dbias = scan_backward(dout, u, delta, A, B, C, D, z, delta_bias,
                                                          ctx.delta_softplus, ckpt)
        return (du, dd, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                None if D is None else dD.to(D.dtype), dz,
                None if delta_bias is None else dbias.to(delta_bias.dtype), None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, out=None):
    """Same arguments and result as :func:`caduceus_cli.model.scan.selective_scan_torch`.

    ``out`` (inference only; ignored when a gradient is needed): write y there, e.g. over z."""
    if B.dim() == 3:  # one group
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if out is not None and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
        return scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out=out)[0]
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


# -- causal depthwise convolution, width 4, optional SiLU -----------------------------------------


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, o_ptr, L, D,
                     sx_b, sx_c, sx_l, so_b, so_c, so_l,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BC: tl.constexpr, BLT: tl.constexpr):
    """out[b, c, t] = act(bias[c] + sum_j w[c, j] x[b, c, t - 3 + j]); grid (D / BC, batch, L / BLT)."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    b = tl.program_id(1).to(tl.int64)
    t = tl.program_id(2) * BLT + tl.arange(0, BLT)
    cm = c < D
    c64 = c.to(tl.int64)
    row = x_ptr + b * sx_b + c64[:, None] * sx_c
    acc = tl.zeros([BC, BLT], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32)[:, None]
    for j in tl.static_range(4):
        tj = t - 3 + j
        xj = tl.load(row + tj[None, :] * sx_l, mask=cm[:, None] & (tj >= 0)[None, :] & (tj < L)[None, :],
                     other=0.0).to(tl.float32)
        acc += tl.load(w_ptr + c * 4 + j, mask=cm, other=0.0).to(tl.float32)[:, None] * xj
    if SILU:
        acc = acc * _sigmoid(acc)
    tl.store(o_ptr + b * so_b + c64[:, None] * so_c + t[None, :] * so_l, acc.to(o_ptr.dtype.element_ty),
             mask=cm[:, None] & (t < L)[None, :])


@triton.jit
def _conv_pre(row, sl, t, s: tl.constexpr, L, cm, w0, w1, w2, w3, bias):
    """The pre-activation at positions t + s (0 where t + s is past the end)."""
    acc = bias
    for j in tl.static_range(4):
        tj = t + s - 3 + j
        xj = tl.load(row + tj[None, :] * sl, mask=cm[:, None] & (tj >= 0)[None, :] & (tj < L)[None, :],
                     other=0.0).to(tl.float32)
        if j == 0:
            acc = acc + w0 * xj
        elif j == 1:
            acc = acc + w1 * xj
        elif j == 2:
            acc = acc + w2 * xj
        else:
            acc = acc + w3 * xj
    return acc


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, g_ptr, dx_ptr, dw_ptr, db_ptr, L, D, batch,
                     sx_b, sx_c, sx_l, sg_b, sg_c, sg_l, sdx_b, sdx_c, sdx_l,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BC: tl.constexpr, BLT: tl.constexpr):
    """dx[t] = sum_s w[3 - s] * gpre[t + s], gpre = dout * act'(pre) recomputed; per-program partial
    sums of dw (.., 4) and dbias into dw_ptr / db_ptr, rows (time block, batch, channel)."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    b = tl.program_id(1).to(tl.int64)
    tb = tl.program_id(2)
    t = tb * BLT + tl.arange(0, BLT)
    cm = c < D
    c64 = c.to(tl.int64)
    row = x_ptr + b * sx_b + c64[:, None] * sx_c
    grow = g_ptr + b * sg_b + c64[:, None] * sg_c
    w0 = tl.load(w_ptr + c * 4 + 0, mask=cm, other=0.0).to(tl.float32)[:, None]
    w1 = tl.load(w_ptr + c * 4 + 1, mask=cm, other=0.0).to(tl.float32)[:, None]
    w2 = tl.load(w_ptr + c * 4 + 2, mask=cm, other=0.0).to(tl.float32)[:, None]
    w3 = tl.load(w_ptr + c * 4 + 3, mask=cm, other=0.0).to(tl.float32)[:, None]
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32)[:, None]
    else:
        bias = tl.zeros([BC, 1], dtype=tl.float32)
    dx = tl.zeros([BC, BLT], dtype=tl.float32)
    gp0 = tl.zeros([BC, BLT], dtype=tl.float32)
    for s in tl.static_range(4):
        ts = t + s
        g = tl.load(grow + ts[None, :] * sg_l, mask=cm[:, None] & (ts < L)[None, :], other=0.0).to(tl.float32)
        if SILU:
            pre = _conv_pre(row, sx_l, t, s, L, cm, w0, w1, w2, w3, bias)
            sg = _sigmoid(pre)
            g = g * sg * (1.0 + pre * (1.0 - sg))
        if s == 0:
            gp0 = g
            dx += w3 * g
        elif s == 1:
            dx += w2 * g
        elif s == 2:
            dx += w1 * g
        else:
            dx += w0 * g
    tl.store(dx_ptr + b * sdx_b + c64[:, None] * sdx_c + t[None, :] * sdx_l, dx.to(dx_ptr.dtype.element_ty),
             mask=cm[:, None] & (t < L)[None, :])
    part = (tb * batch + b) * D + c64
    for j in tl.static_range(4):
        tj = t - 3 + j
        xj = tl.load(row + tj[None, :] * sx_l, mask=cm[:, None] & (tj >= 0)[None, :] & (tj < L)[None, :],
                     other=0.0).to(tl.float32)
        tl.store(dw_ptr + part * 4 + j, tl.sum(gp0 * xj, axis=1), mask=cm)
    tl.store(db_ptr + part, tl.sum(gp0, axis=1), mask=cm)


_CONV_BC, _CONV_BLT, _CONV_BLT_BWD = 16, 256, 64  # the backward holds more tiles: 64 positions keep it in registers


def _conv_grid(x, blt=_CONV_BLT):
    batch, dim, length = x.shape
    return (triton.cdiv(dim, _CONV_BC), batch, triton.cdiv(length, blt))


class CausalConvTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        w = weight.reshape(weight.shape[0], -1).contiguous()
        out = torch.empty_like(x)
        _conv_fwd_kernel[_conv_grid(x)](x, w, bias if bias is not None else w, out, x.shape[2], x.shape[1],
                                        *x.stride(), *out.stride(), HAS_BIAS=bias is not None, SILU=silu,
                                        BC=_CONV_BC, BLT=_CONV_BLT, num_warps=4)
        ctx.save_for_backward(x, w, bias)
        ctx.silu, ctx.wshape = silu, weight.shape
        return out

    @staticmethod
    def backward(ctx, g):
        x, w, bias = ctx.saved_tensors
        batch, dim, length = x.shape
        grid = _conv_grid(x, _CONV_BLT_BWD)
        dx = torch.empty_like(x)
        dw = torch.empty(grid[2], batch, dim, 4, device=x.device, dtype=torch.float32)
        db = torch.empty(grid[2], batch, dim, device=x.device, dtype=torch.float32)
        _conv_bwd_kernel[grid](x, w, bias if bias is not None else w, g, dx, dw, db, length, dim, batch,
                               *x.stride(), *g.stride(), *dx.stride(), HAS_BIAS=bias is not None, SILU=ctx.silu,
                               BC=_CONV_BC, BLT=_CONV_BLT_BWD, num_warps=4)
        dweight = dw.sum((0, 1)).reshape(ctx.wshape).to(w.dtype)
        dbias = db.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dweight, dbias, None


def causal_conv1d_triton(x, weight, bias=None, silu=False):
    """x: (B, D, L) any strides, weight (D, 4) or (D, 1, 4), bias (D,) -> act(causal conv), x's strides."""
    if weight.shape[-1] != 4:
        raise ValueError("the Triton causal convolution is written for width 4")
    return CausalConvTriton.apply(x, weight, bias, bool(silu))
