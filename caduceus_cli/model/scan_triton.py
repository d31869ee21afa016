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
def _load_cols8(row, t0, sl, m, MASKED: tl.constexpr, VEC: tl.constexpr, R: tl.constexpr, BT: tl.constexpr):
    """Positions t0..t0+7 of the rows ``row`` ([R, BT] pointers) as 8 fp32 columns [R, BT].

    Loaded as VEC-wide pieces (16 bytes per thread: VEC = 8 for 16-bit types, 4 for fp32)."""
    offs = tl.arange(0, VEC)[None, None, :]
    if VEC == 8:
        x = _ld(row[:, :, None] + (t0 + offs) * sl, m, MASKED)
        e, o = tl.split(tl.reshape(x, [R, BT, 4, 2]))
        c0, c2, c4, c6 = _cols4(e, R, BT)
        c1, c3, c5, c7 = _cols4(o, R, BT)
    else:
        lo = _ld(row[:, :, None] + (t0 + offs) * sl, m, MASKED)
        hi = _ld(row[:, :, None] + (t0 + 4 + offs) * sl, m, MASKED)
        c0, c1, c2, c3 = _cols4(lo, R, BT)
        c4, c5, c6, c7 = _cols4(hi, R, BT)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _store_cols8(row, t0, sl, m, c0, c1, c2, c3, c4, c5, c6, c7, MASKED: tl.constexpr, VEC: tl.constexpr,
                 R: tl.constexpr, BT: tl.constexpr):
    """Inverse of :func:`_load_cols8`."""
    offs = tl.arange(0, VEC)[None, None, :]
    ty = row.dtype.element_ty
    if VEC == 8:
        e = tl.reshape(tl.join(tl.join(c0, c4), tl.join(c2, c6)), [R, BT, 4])
        o = tl.reshape(tl.join(tl.join(c1, c5), tl.join(c3, c7)), [R, BT, 4])
        x = tl.reshape(tl.join(e, o), [R, BT, 8]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (t0 + offs) * sl, x, mask=m)
        else:
            tl.store(row[:, :, None] + (t0 + offs) * sl, x)
    else:
        lo = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [R, BT, 4]).to(ty)
        hi = tl.reshape(tl.join(tl.join(c4, c6), tl.join(c5, c7)), [R, BT, 4]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (t0 + offs) * sl, lo, mask=m)
            tl.store(row[:, :, None] + (t0 + 4 + offs) * sl, hi, mask=m)
        else:
            tl.store(row[:, :, None] + (t0 + offs) * sl, lo)
            tl.store(row[:, :, None] + (t0 + 4 + offs) * sl, hi)


@triton.jit
def _load_states(base, sn, ok, MASKED: tl.constexpr, VEC: tl.constexpr, BT: tl.constexpr):
    """base[n * sn] for the 16 states n, broadcast to every thread: [1, BT, 16] fp32 (each thread
    holds all 16). Column p holds state ``state_order(VEC)[p]`` (the order the joins produce)."""
    offs = tl.arange(0, VEC)[None, None, :]
    zero = tl.zeros([1, BT, 1], dtype=tl.int32)
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
def _tile(h, A2, bias, Dv, u_row, d_row, z_row, y_row, b_base, c_base, t0, t_end, sB_n, sB_l, sC_n, sC_l,
          su_l, sd_l, sz_l, sy_l, cm,
          R: tl.constexpr, BT: tl.constexpr, MASKED: tl.constexpr, STATE_ONLY: tl.constexpr,
          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
          VEC_U: tl.constexpr, VEC_D: tl.constexpr, VEC_Z: tl.constexpr, VEC_Y: tl.constexpr,
          VEC_B: tl.constexpr, FAST: tl.constexpr):
    """Eight time steps t0..t0+7 of one channel block; returns (h, sum of dt over them)."""
    cm3 = cm[:, :, None]
    if MASKED:
        mu = cm3 & ((t0 + tl.arange(0, VEC_U))[None, None, :] < t_end)
        md = cm3 & ((t0 + tl.arange(0, VEC_D))[None, None, :] < t_end)
    else:
        mu = cm3
        md = cm3
    u0, u1, u2, u3, u4, u5, u6, u7 = _load_cols8(u_row, t0, su_l, mu, MASKED, VEC_U, R, BT)
    d0, d1, d2, d3, d4, d5, d6, d7 = _load_cols8(d_row, t0, sd_l, md, MASKED, VEC_D, R, BT)
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
        if MASKED:
            mz = cm3 & ((t0 + tl.arange(0, VEC_Z))[None, None, :] < t_end)
            my = cm3 & ((t0 + tl.arange(0, VEC_Y))[None, None, :] < t_end)
        else:
            mz = cm3
            my = cm3
        if HAS_Z:
            z0, z1, z2, z3, z4, z5, z6, z7 = _load_cols8(z_row, t0, sz_l, mz, MASKED, VEC_Z, R, BT)
            y0 *= z0 * _sigmoid(z0)
            y1 *= z1 * _sigmoid(z1)
            y2 *= z2 * _sigmoid(z2)
            y3 *= z3 * _sigmoid(z3)
            y4 *= z4 * _sigmoid(z4)
            y5 *= z5 * _sigmoid(z5)
            y6 *= z6 * _sigmoid(z6)
            y7 *= z7 * _sigmoid(z7)
        _store_cols8(y_row, t0, sy_l, my, y0, y1, y2, y3, y4, y5, y6, y7, MASKED, VEC_Y, R, BT)
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
    VEC_B: tl.constexpr, FAST: tl.constexpr,
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
    t_end = tl.minimum(t_start + chunk_len, L)
    h = tl.zeros([R, BT, 16], dtype=tl.float32)
    state_row = (b * channels + c) * n_chunks
    if CARRY:
        # the state entering chunk j: fold the end states of chunks 0..j-1 (each from zero) in order
        for i in range(0, j):
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
    n_full = (t_end - t_start) // 8
    for k in range(0, n_full):
        t0 = t_start + k * 8
        if STORE_CKPT:
            if t0 % CKPT == 0:
                _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
        h, ds = _tile(h, A2, bias, Dv, u_row, d_row, z_row, y_row, b_base, c_base, t0, t_end,
                      sB_n, sB_l, sC_n, sC_l, su_l, sd_l, sz_l, sy_l, cm,
                      R, BT, not EVEN_C, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                      VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
        dsum += ds
    t0 = t_start + n_full * 8
    if t0 < t_end:
        if STORE_CKPT:
            if t0 % CKPT == 0:
                _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
        h, ds = _tile(h, A2, bias, Dv, u_row, d_row, z_row, y_row, b_base, c_base, t0, t_end,
                      sB_n, sB_l, sC_n, sC_l, su_l, sd_l, sz_l, sy_l, cm,
                      R, BT, True, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                      VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST)
        dsum += ds
    if STATE_ONLY:
        _store_rows16(hend_ptr + (state_row + j) * 16, h, cm3, R, BT)
        tl.store(dtsum_ptr + state_row + j, dsum, mask=cm)
