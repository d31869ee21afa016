"""Selective scan in Triton: the forward kernel, its host side and the autograd function.

Same math and arguments as :func:`caduceus_cli.model.kernels.scan.selective_scan_torch`; imported only
when Triton is (``scan.triton_kernels``). Written for the layout ``mamba_directions`` produces:
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

import torch
import triton
import triton.language as tl

from .jit import (INTERPRET, LOG2E, _channel_block, _cols4, _exp2, _ld, _mask_and, _sigmoid, _softplus, num_warps_for,
                  sm_count, states_last_fp32, vec_width)
from .scan_triton_bwd import scan_backward_seq
from .scan_triton_bwd2 import scan_backward_v2

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
def _raw8(row, t0, sl, cm3, t_end, MASKED: tl.constexpr, VEC: tl.constexpr, L, REV: tl.constexpr):
    """Positions t0..t0+7 of the rows as loaded (input dtype), in one or two 16-byte pieces: a
    pair (lo, hi); for VEC == 8 both are the whole tile. Kept raw so that a prefetched tile costs
    few registers. REV: the positions count from the end (t is stored at L - 1 - t), and the tile
    is the mirrored block L - 8 - t0 .. L - 1 - t0, loaded in memory order (:func:`_cols8`
    reverses it)."""
    offs = tl.arange(0, VEC)[None, None, :]
    if REV:  # element p of memory holds t = L - 1 - p: t < t_end where p >= L - t_end
        p0 = L - 8 - t0
        ok_lo = p0 + offs >= L - t_end
        ok_hi = p0 + 4 + offs >= L - t_end
    else:
        p0 = t0
        ok_lo = t0 + offs < t_end
        ok_hi = t0 + 4 + offs < t_end
    if VEC == 8:
        if MASKED:
            x = tl.load(row[:, :, None] + (p0 + offs) * sl, mask=cm3 & ok_lo, other=0.0)
        else:
            x = tl.load(row[:, :, None] + (p0 + offs) * sl)
        return x, x
    else:
        if MASKED:
            lo = tl.load(row[:, :, None] + (p0 + offs) * sl, mask=cm3 & ok_lo, other=0.0)
            hi = tl.load(row[:, :, None] + (p0 + 4 + offs) * sl, mask=cm3 & ok_hi, other=0.0)
        else:
            lo = tl.load(row[:, :, None] + (p0 + offs) * sl)
            hi = tl.load(row[:, :, None] + (p0 + 4 + offs) * sl)
        return lo, hi


@triton.jit
def _cols8(lo, hi, VEC: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, REV: tl.constexpr):
    """A tile from :func:`_raw8` as 8 fp32 columns [R, BT] in time order."""
    if VEC == 8:
        e, o = tl.split(tl.reshape(lo.to(tl.float32), [R, BT, 4, 2]))
        c0, c2, c4, c6 = _cols4(e, R, BT)
        c1, c3, c5, c7 = _cols4(o, R, BT)
    else:
        c0, c1, c2, c3 = _cols4(lo.to(tl.float32), R, BT)
        c4, c5, c6, c7 = _cols4(hi.to(tl.float32), R, BT)
    if REV:
        return c7, c6, c5, c4, c3, c2, c1, c0
    else:
        return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _store_cols8(row, t0, sl, cm3, t_end, c0, c1, c2, c3, c4, c5, c6, c7, MASKED: tl.constexpr,
                 VEC: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, L, REV: tl.constexpr):
    """Inverse of :func:`_raw8` + :func:`_cols8`."""
    offs = tl.arange(0, VEC)[None, None, :]
    ty = row.dtype.element_ty
    if REV:
        p0 = L - 8 - t0
        ok_lo = p0 + offs >= L - t_end
        ok_hi = p0 + 4 + offs >= L - t_end
        c0, c1, c2, c3, c4, c5, c6, c7 = c7, c6, c5, c4, c3, c2, c1, c0
    else:
        p0 = t0
        ok_lo = t0 + offs < t_end
        ok_hi = t0 + 4 + offs < t_end
    if VEC == 8:
        e = tl.reshape(tl.join(tl.join(c0, c4), tl.join(c2, c6)), [R, BT, 4])
        o = tl.reshape(tl.join(tl.join(c1, c5), tl.join(c3, c7)), [R, BT, 4])
        x = tl.reshape(tl.join(e, o), [R, BT, 8]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (p0 + offs) * sl, x, mask=cm3 & ok_lo)
        else:
            tl.store(row[:, :, None] + (p0 + offs) * sl, x)
    else:
        lo = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [R, BT, 4]).to(ty)
        hi = tl.reshape(tl.join(tl.join(c4, c6), tl.join(c5, c7)), [R, BT, 4]).to(ty)
        if MASKED:
            tl.store(row[:, :, None] + (p0 + offs) * sl, lo, mask=cm3 & ok_lo)
            tl.store(row[:, :, None] + (p0 + 4 + offs) * sl, hi, mask=cm3 & ok_hi)
        else:
            tl.store(row[:, :, None] + (p0 + offs) * sl, lo)
            tl.store(row[:, :, None] + (p0 + 4 + offs) * sl, hi)


@triton.jit
def _load_states(base, sn, ok, MASKED: tl.constexpr, VEC: tl.constexpr, BT: tl.constexpr):
    """base[n * sn] for the 16 states n, broadcast to every thread: [1, BT, 16] fp32 (each thread
    holds all 16). Column p holds state ``state_order(VEC)[p]`` (the order the joins produce)."""
    offs = tl.arange(0, VEC)[None, None, :]
    zero = tl.zeros([1, BT, 1], dtype=tl.int32)
    ok = _mask_and(ok, zero + offs)
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
def _tpos(t, L, REV: tl.constexpr):
    """Where position t is stored: t, or L - 1 - t for a scan run from the end (REV)."""
    if REV:
        return L - 1 - t
    else:
        return t


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
          VEC_B: tl.constexpr, FAST: tl.constexpr, L, REV: tl.constexpr):
    """Eight time steps t0..t0+7 of one channel block, from their u, delta, z tiles as loaded by
    :func:`_raw8`; returns (h, sum of dt over them)."""
    cm3 = cm[:, :, None]
    u0, u1, u2, u3, u4, u5, u6, u7 = _cols8(ul, uh, VEC_U, R, BT, REV)
    d0, d1, d2, d3, d4, d5, d6, d7 = _cols8(dl, dh, VEC_D, R, BT, REV)
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
    h, y0 = _step(h, A2, d0, d0 * u0, b_base, c_base, _tpos(t0, L, REV) * sB_l, sB_n, sC_n, t0 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y1 = _step(h, A2, d1, d1 * u1, b_base, c_base, _tpos(t0 + 1, L, REV) * sB_l, sB_n, sC_n, t0 + 1 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y2 = _step(h, A2, d2, d2 * u2, b_base, c_base, _tpos(t0 + 2, L, REV) * sB_l, sB_n, sC_n, t0 + 2 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y3 = _step(h, A2, d3, d3 * u3, b_base, c_base, _tpos(t0 + 3, L, REV) * sB_l, sB_n, sC_n, t0 + 3 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y4 = _step(h, A2, d4, d4 * u4, b_base, c_base, _tpos(t0 + 4, L, REV) * sB_l, sB_n, sC_n, t0 + 4 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y5 = _step(h, A2, d5, d5 * u5, b_base, c_base, _tpos(t0 + 5, L, REV) * sB_l, sB_n, sC_n, t0 + 5 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y6 = _step(h, A2, d6, d6 * u6, b_base, c_base, _tpos(t0 + 6, L, REV) * sB_l, sB_n, sC_n, t0 + 6 < t_end, MASKED, WY, VEC_B, BT, FAST)
    h, y7 = _step(h, A2, d7, d7 * u7, b_base, c_base, _tpos(t0 + 7, L, REV) * sB_l, sB_n, sC_n, t0 + 7 < t_end, MASKED, WY, VEC_B, BT, FAST)
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
            z0, z1, z2, z3, z4, z5, z6, z7 = _cols8(zl, zh, VEC_Z, R, BT, REV)
            y0 *= z0 * _sigmoid(z0)
            y1 *= z1 * _sigmoid(z1)
            y2 *= z2 * _sigmoid(z2)
            y3 *= z3 * _sigmoid(z3)
            y4 *= z4 * _sigmoid(z4)
            y5 *= z5 * _sigmoid(z5)
            y6 *= z6 * _sigmoid(z6)
            y7 *= z7 * _sigmoid(z7)
        _store_cols8(y_row, t0, sy_l, cm3, t_end, y0, y1, y2, y3, y4, y5, y6, y7, MASKED, VEC_Y, R, BT, L, REV)
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
    REV: tl.constexpr,
):
    """Grid (groups * blocks per group, batch, time chunks); a block is R * BT channels of one group.

    A2_ptr: (channels, 16) fp32, A * log2(e), its columns permuted so that :func:`_load_rows16`
    returns them in ``state_order(VEC_B)``; hend/ckpt hold states in that same private order."""
    g, cig, cm, c = _channel_block(per_group, R, BT, EVEN_C)  # c: [R, BT]
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
    if CARRY == 2:  # the state entering chunk j, from _chunk_carry_kernel (over the end states)
        h = _load_rows16(hend_ptr + (state_row + j) * 16, cm3, R, BT)
    elif CARRY == 1:
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
        nul, nuh = _raw8(u_row, t_start, su_l, cm3, t_end, not EVEN_C, VEC_U, L, REV)
        ndl, ndh = _raw8(d_row, t_start, sd_l, cm3, t_end, not EVEN_C, VEC_D, L, REV)
        if HAS_Z and not STATE_ONLY:
            nzl, nzh = _raw8(z_row, t_start, sz_l, cm3, t_end, not EVEN_C, VEC_Z, L, REV)
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
            nul, nuh = _raw8(u_row, tn, su_l, cm3, t_end, not EVEN_C, VEC_U, L, REV)
            ndl, ndh = _raw8(d_row, tn, sd_l, cm3, t_end, not EVEN_C, VEC_D, L, REV)
            if HAS_Z and not STATE_ONLY:
                nzl, nzh = _raw8(z_row, tn, sz_l, cm3, t_end, not EVEN_C, VEC_Z, L, REV)
            if PREFETCH_BC:  # (the 8 rows of 16 of the next tile: 128 floats from its first row)
                junk += tl.load(b_base + _tpos(tn + 7 * REV, L, REV) * sB_l + lane)
                if not STATE_ONLY:
                    junk += tl.load(c_base + _tpos(tn + 7 * REV, L, REV) * sC_l + lane)
            if STORE_CKPT:
                if t0 % CKPT == 0:
                    _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
            h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                          sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                          R, BT, not EVEN_C, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                          VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST, L, REV)
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
                    ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, not EVEN_C, VEC_U, L, REV)
                    dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, not EVEN_C, VEC_D, L, REV)
                    if HAS_Z and not STATE_ONLY:
                        zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, not EVEN_C, VEC_Z, L, REV)
                    else:
                        zl, zh = ul, uh
                    h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                                  sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                                  R, BT, not EVEN_C, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                                  VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST, L, REV)
                else:
                    ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, True, VEC_U, L, REV)
                    dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, True, VEC_D, L, REV)
                    if HAS_Z and not STATE_ONLY:
                        zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, True, VEC_Z, L, REV)
                    else:
                        zl, zh = ul, uh
                    h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                                  sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                                  R, BT, True, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                                  VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST, L, REV)
                dsum += ds
    t0 = t_start + n_full * 8
    if PIPELINE and t0 < t_end:
        if STORE_CKPT:
            if t0 % CKPT == 0:
                _store_rows16(ckpt_ptr + (ckpt_row + t0 // CKPT) * 16, h, cm3, R, BT)
        ul, uh = _raw8(u_row, t0, su_l, cm3, t_end, True, VEC_U, L, REV)
        dl, dh = _raw8(d_row, t0, sd_l, cm3, t_end, True, VEC_D, L, REV)
        if HAS_Z and not STATE_ONLY:
            zl, zh = _raw8(z_row, t0, sz_l, cm3, t_end, True, VEC_Z, L, REV)
        else:
            zl, zh = ul, uh
        h, ds = _tile(h, A2, bias, Dv, ul, uh, dl, dh, zl, zh, y_row, b_base, c_base, t0, t_end,
                      sB_n, sB_l, sC_n, sC_l, sy_l, cm,
                      R, BT, True, STATE_ONLY, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z,
                      VEC_U, VEC_D, VEC_Z, VEC_Y, VEC_B, FAST, L, REV)
        dsum += ds
    if STATE_ONLY:
        _store_rows16(hend_ptr + (state_row + j) * 16, h, cm3, R, BT)
        tl.store(dtsum_ptr + state_row + j, dsum, mask=cm)




@triton.jit
def _chunk_carry_kernel(hend_ptr, dtsum_ptr, A2_ptr, L, n_chunks, channels, BC: tl.constexpr, FAST: tl.constexpr):
    """Grid (channel blocks, batch). In place over hend (batch, channels, n_chunks, 16): the end
    state of chunk j computed from zero becomes the true state entering chunk j,
    h_0 = 0, h_{j+1} = exp2(dtsum_j A2) h_j + hend_j (natural state order, fp32)."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    b = tl.program_id(1).to(tl.int64)
    n = tl.arange(0, 16)[None, :]
    m = (c < channels)[:, None] & (n >= 0)
    A2 = tl.load(A2_ptr + c[:, None] * 16 + n, mask=m, other=0.0)
    row = (b * channels + c.to(tl.int64)) * n_chunks
    h = tl.zeros([BC, 16], dtype=tl.float32)
    for j in range(0, n_chunks):
        ptr = hend_ptr + (row + j)[:, None] * 16 + n
        he = tl.load(ptr, mask=m & _mask_and(j + 1 < n_chunks, n), other=0.0)
        ds = tl.load(dtsum_ptr + row + j, mask=(c < channels) & _mask_and(j + 1 < n_chunks, c), other=0.0)
        tl.store(ptr, h, mask=m)
        h = _exp2(ds[:, None] * A2, FAST) * h + he


# -- host side -----------------------------------------------------------------------------------

CKPT = 64  # positions between stored states (the backward's chunk): 64 B of fp32 state per 64 positions
_MIN_CHUNK = 1024  # shortest time chunk the forward cuts a long sequence into


def scan_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 keep_states: bool = False, out: torch.Tensor | None = None, ck: int | None = None,
                 reverse: bool = False):
    """The selective scan's forward. u, delta, z: (batch, channels, L), any batch/channel strides;
    A: (channels, 16); B, C: (batch, groups, 16, L); D, delta_bias: (channels,).

    Returns (y, checkpoints): y like u (same strides and dtype), or ``out`` (which may be z or u
    themselves: every position is read before it is written); checkpoints (batch, channels,
    ceil(L / CKPT), 16) fp32, the states entering every CKPT-th position, when ``keep_states``.
    B, C may also be (batch, 16, L): one group. ``reverse``: the scan runs from the last position
    to the first (the same as flipping every input and y along L), inference only."""
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, channels, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    if n != 16:
        raise ValueError(f"the Triton scan is written for d_state 16, got {n}")
    per_group = channels // groups
    B32, C32 = states_last_fp32(B), states_last_fp32(C)
    A2 = (A.float() * LOG2E).contiguous()
    y = torch.empty_like(u) if out is None else out
    num_warps = num_warps_for(per_group)
    bt = 32 * num_warps
    blocks = groups * triton.cdiv(per_group, bt)
    ck = ck or CKPT
    n_ckpt = triton.cdiv(length, ck)
    ckpt = (torch.empty(batch, channels, n_ckpt, 16, device=u.device, dtype=torch.float32) if keep_states
            else torch.empty(1, device=u.device, dtype=torch.float32))
    # Enough programs to keep every multiprocessor busy; otherwise cut the sequence into chunks.
    want = 8 * sm_count(u.device.index or 0)
    n_chunks = 1
    if blocks * batch < want and length >= 2 * _MIN_CHUNK:
        n_chunks = min(triton.cdiv(want, blocks * batch), length // _MIN_CHUNK)
    chunk_len = triton.cdiv(triton.cdiv(length, n_chunks), CKPT) * CKPT
    n_chunks = triton.cdiv(length, chunk_len)
    dummy = A2
    common = dict(
        R=1, BT=bt, EVEN_C=per_group % bt == 0, CKPT=ck,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), HAS_D=D is not None, HAS_Z=z is not None,
        VEC_U=vec_width(u), VEC_D=vec_width(delta), VEC_Z=vec_width(z) if z is not None else 4, VEC_Y=vec_width(y), VEC_B=4,
        FAST=not INTERPRET, num_warps=num_warps, REV=bool(reverse),
        # touching a tile's B, C rows ahead needs rows of >= 16 floats (true of _states_last_fp32's)
        PREFETCH_BC=not INTERPRET and B32.stride(-1) >= 16 and C32.stride(-1) >= 16,
    )
    zz = z if z is not None else u
    bias = delta_bias.float().contiguous() if delta_bias is not None else dummy
    Dv = D.float().contiguous() if D is not None else dummy
    strides = (*u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *B32.stride(), *C32.stride())
    new = fwd_version() != 1
    if n_chunks > 1:
        hend = torch.empty(batch, channels, n_chunks, 16, device=u.device, dtype=torch.float32)
        dtsum = torch.empty(batch, channels, n_chunks, device=u.device, dtype=torch.float32)
        _scan_fwd_kernel[(blocks, batch, n_chunks - 1)](
            u, delta, zz, y, A2, B32, C32, Dv, bias, hend, dtsum, ckpt,
            length, chunk_len, n_chunks, per_group, channels, n_ckpt, *strides,
            STATE_ONLY=True, CARRY=0, STORE_CKPT=False, PIPELINE=new, **common)
        if new:  # the states entering the chunks, once, by a small sequential kernel
            _chunk_carry_kernel[(triton.cdiv(channels, 128), batch)](
                hend, dtsum, A2, length, n_chunks, channels, BC=128, FAST=not INTERPRET, num_warps=4)
    else:
        hend = dtsum = dummy
    _scan_fwd_kernel[(blocks, batch, n_chunks)](
        u, delta, zz, y, A2, B32, C32, Dv, bias, hend, dtsum, ckpt,
        length, chunk_len, n_chunks, per_group, channels, n_ckpt, *strides,
        STATE_ONLY=False, CARRY=0 if n_chunks == 1 else 2 if new else 1, STORE_CKPT=keep_states,
        PIPELINE=new or n_chunks == 1, **common)
    return y, (ckpt if keep_states else None)



def fwd_version() -> int:
    """The long-sequence forward in use: ``CADUCEUS_SCAN_FWD=1`` the first (the states entering the
    time chunks folded inside every output program, the unpipelined loop), 2 (default) the
    pipelined loop in both passes and the entering states computed once by
    ``_chunk_carry_kernel``."""
    from ...runtime import env_int

    return env_int("CADUCEUS_SCAN_FWD", 2, minimum=1)


def bwd_version() -> int:
    """The backward kernel in use: ``CADUCEUS_SCAN_BWD=1`` the first (one thread per channel,
    ``scan_triton_bwd``), 2 (default) two threads per channel (``scan_triton_bwd2``)."""
    from ...runtime import env_int

    return env_int("CADUCEUS_SCAN_BWD", 2, minimum=1)


def checkpoint_spacing(version: int) -> int:
    """Positions between the states the forward stores for backward ``version``: CKPT for the
    first; half that for the second (``CADUCEUS_BWD2_CKPT``, a multiple of 8), whose per-channel
    scratch (CK / 4 states) then stays in L1."""
    if version == 1:
        return CKPT
    from ...runtime import env_int

    ck = env_int("CADUCEUS_BWD2_CKPT", max(8, CKPT // 2), minimum=8)
    return ck - ck % 8


def scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck: int, version: int):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of :func:`scan_forward`'s y, from
    the states it stored every ``ck`` positions."""
    per_group = u.shape[1] // B.shape[1]
    if version == 1:
        return scan_backward_seq(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck,
                                 num_warps_for(per_group), INTERPRET)
    return scan_backward_v2(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck, INTERPRET)



class SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        train = any(ctx.needs_input_grad)
        ctx.version = bwd_version()
        ctx.ck = checkpoint_spacing(ctx.version)
        y, ckpt = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep_states=train, ck=ctx.ck)
        if train:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        du, dd, dA, dB, dC, dD, dz, dbias = scan_backward(dout, u, delta, A, B, C, D, z, delta_bias,
                                                          ctx.delta_softplus, ckpt, ctx.ck, ctx.version)
        return (du, dd, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                None if D is None else dD.to(D.dtype), dz,
                None if delta_bias is None else dbias.to(delta_bias.dtype), None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, out=None,
                          reverse=False):
    """Same arguments and result as :func:`caduceus_cli.model.scan.selective_scan_torch`.

    ``out`` (inference only; ignored when a gradient is needed): write y there, e.g. over z.
    ``reverse``: scan from the last position to the first (flip(scan(flip(inputs))) along L);
    without gradients the kernel walks the positions backwards, with them the inputs are flipped."""
    if B.dim() == 3:  # one group
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if reverse and needs_grad:
        flip = [t.flip(-1) if t is not None and i in (0, 1, 3, 4, 6) else t for i, t in enumerate(tensors)]
        return SelectiveScanTriton.apply(*flip, delta_softplus).flip(-1)
    if not needs_grad and (out is not None or reverse):
        return scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out=out, reverse=reverse)[0]
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
