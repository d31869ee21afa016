"""Causal depthwise convolution of width 4 in Triton, with optional SiLU: forward and backward.

Same math as :func:`caduceus_cli.model.kernels.scan.causal_conv1d_torch`; x (B, D, L) with any
strides, the output written with x's strides.

Two versions (``CADUCEUS_CONV``): 1 (default), tiles of (16 channels x positions) whose four shifted
reads of x are 2-byte loads; 2, like the scan:
one thread per channel walks its row in tiles of 8 positions (one 16-byte load per tile for bf16),
keeping the 3 previous inputs (forward) or the 3 next pre-activation gradients (backward, walked
from the end) in registers, so each element is read once; long rows are cut into time chunks
whose programs recompute the 3-position halo. Version 1 is the default because it measured faster
in the model on an H100 (PS 256x16 forward at 256 x 1,536 bp: 1.765 M tokens/s with version 1 against
1.230 M with version 2; PS 128x4 training: 2.10 against 1.94 M tokens/s; gpu/scan_notes.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import INTERPRET, _mask_and, _sigmoid, _sigmoid_f, sm_count

@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, o_ptr, L, D,
                     sx_b, sx_c, sx_l, so_b, so_c, so_l,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BC: tl.constexpr, BLT: tl.constexpr,
                     REV: tl.constexpr = False):
    """out[b, c, t] = act(bias[c] + sum_j w[c, j] x[b, c, t - 3 + j]); grid (D / BC, batch, L / BLT).
    REV: the convolution of the sequence read from its end, x[b, c, t + 3 - j] (anti-causal)."""
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
        if REV:
            tj = t + 3 - j
        else:
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


# -- second version: a thread per channel, tiles of 8 positions -----------------------------------


@triton.jit
def _tile_cols(x, BT: tl.constexpr):
    """[BT, 8] -> its 8 columns [BT] (register renaming)."""
    e, o = tl.split(tl.reshape(x, [BT, 4, 2]))  # positions 0 2 4 6 | 1 3 5 7
    e0, e1 = tl.split(tl.reshape(e, [BT, 2, 2]))  # 0 4 | 2 6
    o0, o1 = tl.split(tl.reshape(o, [BT, 2, 2]))  # 1 5 | 3 7
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _tile_join(c0, c1, c2, c3, c4, c5, c6, c7, BT: tl.constexpr):
    """Inverse of :func:`_tile_cols`."""
    e = tl.reshape(tl.join(tl.reshape(tl.join(c0, c4), [BT, 2]), tl.reshape(tl.join(c2, c6), [BT, 2])), [BT, 4])
    o = tl.reshape(tl.join(tl.reshape(tl.join(c1, c5), [BT, 2]), tl.reshape(tl.join(c3, c7), [BT, 2])), [BT, 4])
    return tl.reshape(tl.join(e, o), [BT, 8])


@triton.jit
def _load_tile(row, t0, sl, cm, L, REV: tl.constexpr, BT: tl.constexpr):
    """Positions t0..t0+7 of the rows as 8 fp32 columns (0 outside 0..L-1); REV: position t is
    stored at L - 1 - t (the mirrored block is loaded in memory order and reversed)."""
    offs = tl.arange(0, 8)[None, :]
    if REV:  # (the mask in memory positions p = L - 1 - t, so that it is constant over aligned vectors)
        p = L - 8 - t0 + offs
        x = tl.load(row[:, None] + p * sl, mask=cm[:, None] & (p >= 0) & (p < L), other=0.0)
        c0, c1, c2, c3, c4, c5, c6, c7 = _tile_cols(x.to(tl.float32), BT)
        return c7, c6, c5, c4, c3, c2, c1, c0
    else:
        t = t0 + offs
        x = tl.load(row[:, None] + t * sl, mask=cm[:, None] & (t >= 0) & (t < L), other=0.0)
        return _tile_cols(x.to(tl.float32), BT)


@triton.jit
def _store_tile(row, t0, sl, cm, t_end, L, c0, c1, c2, c3, c4, c5, c6, c7, REV: tl.constexpr, BT: tl.constexpr):
    offs = tl.arange(0, 8)[None, :]
    if REV:
        x = _tile_join(c7, c6, c5, c4, c3, c2, c1, c0, BT).to(row.dtype.element_ty)
        p = L - 8 - t0 + offs  # t < t_end where p >= L - t_end
        tl.store(row[:, None] + p * sl, x, mask=cm[:, None] & (p >= L - t_end))
    else:
        x = _tile_join(c0, c1, c2, c3, c4, c5, c6, c7, BT).to(row.dtype.element_ty)
        tl.store(row[:, None] + (t0 + offs) * sl, x, mask=cm[:, None] & (t0 + offs < t_end))


@triton.jit
def _load_at(row, t, sl, cm, L, REV: tl.constexpr):
    """One position t of the rows (0 outside 0..L-1)."""
    p = L - 1 - t if REV else t
    return tl.load(row + p * sl, mask=cm & _mask_and((t >= 0) & (t < L), cm.to(tl.int32)), other=0.0).to(tl.float32)


@triton.jit
def _act(pre, SILU: tl.constexpr, FAST: tl.constexpr):
    if SILU:
        return pre * _sigmoid_f(pre, FAST)
    else:
        return pre


@triton.jit
def _conv2_fwd_kernel(x_ptr, w_ptr, b_ptr, o_ptr, L, D, chunk_len, sx_b, sx_c, sx_l, so_b, so_c, so_l,
                      HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BT: tl.constexpr, REV: tl.constexpr,
                      FAST: tl.constexpr):
    """Grid (channel blocks of BT, batch, time chunks): out[t] = act(bias + sum_j w_j x[t - 3 + j])."""
    c = tl.program_id(0) * BT + tl.arange(0, BT)
    cm = c < D
    b = tl.program_id(1).to(tl.int64)
    t_start = tl.program_id(2) * chunk_len
    t_end = tl.minimum(t_start + chunk_len, L)
    c64 = c.to(tl.int64)
    w0 = tl.load(w_ptr + c * 4, mask=cm, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + c * 4 + 1, mask=cm, other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + c * 4 + 2, mask=cm, other=0.0).to(tl.float32)
    w3 = tl.load(w_ptr + c * 4 + 3, mask=cm, other=0.0).to(tl.float32)
    bias = tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32) if HAS_BIAS else w0 * 0.0
    row = x_ptr + b * sx_b + c64 * sx_c
    orow = o_ptr + b * so_b + c64 * so_c
    xm3 = _load_at(row, t_start - 3, sx_l, cm, L, REV)
    xm2 = _load_at(row, t_start - 2, sx_l, cm, L, REV)
    xm1 = _load_at(row, t_start - 1, sx_l, cm, L, REV)
    for k in range(0, tl.cdiv(t_end - t_start, 8)):
        t0 = t_start + k * 8
        x0, x1, x2, x3, x4, x5, x6, x7 = _load_tile(row, t0, sx_l, cm, L, REV, BT)
        o0 = _act(bias + w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0, SILU, FAST)
        o1 = _act(bias + w0 * xm2 + w1 * xm1 + w2 * x0 + w3 * x1, SILU, FAST)
        o2 = _act(bias + w0 * xm1 + w1 * x0 + w2 * x1 + w3 * x2, SILU, FAST)
        o3 = _act(bias + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3, SILU, FAST)
        o4 = _act(bias + w0 * x1 + w1 * x2 + w2 * x3 + w3 * x4, SILU, FAST)
        o5 = _act(bias + w0 * x2 + w1 * x3 + w2 * x4 + w3 * x5, SILU, FAST)
        o6 = _act(bias + w0 * x3 + w1 * x4 + w2 * x5 + w3 * x6, SILU, FAST)
        o7 = _act(bias + w0 * x4 + w1 * x5 + w2 * x6 + w3 * x7, SILU, FAST)
        _store_tile(orow, t0, so_l, cm, t_end, L, o0, o1, o2, o3, o4, o5, o6, o7, REV, BT)
        xm3, xm2, xm1 = x5, x6, x7


@triton.jit
def _gpre(g, pre, SILU: tl.constexpr, FAST: tl.constexpr):
    """The gradient at the pre-activation: g act'(pre)."""
    if SILU:
        s = _sigmoid_f(pre, FAST)
        return g * s * (1.0 + pre * (1.0 - s))
    else:
        return g


@triton.jit
def _conv2_bwd_kernel(x_ptr, w_ptr, b_ptr, g_ptr, dx_ptr, dw_ptr, db_ptr, L, D, batch, chunk_len,
                      sx_b, sx_c, sx_l, sg_b, sg_c, sg_l, sdx_b, sdx_c, sdx_l,
                      HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    """Grid (channel blocks, batch, time chunks), each chunk walked from its end: gp = g act'(pre)
    (pre recomputed), dx[t] = sum_s w_{3-s} gp[t + s]; this program's sums of gp x[t - 3 + j] and
    gp into dw_ptr (chunk, batch, D, 4) and db_ptr (chunk, batch, D)."""
    c = tl.program_id(0) * BT + tl.arange(0, BT)
    cm = c < D
    b = tl.program_id(1).to(tl.int64)
    j = tl.program_id(2)
    t_start = j * chunk_len
    t_end = tl.minimum(t_start + chunk_len, L)
    c64 = c.to(tl.int64)
    w0 = tl.load(w_ptr + c * 4, mask=cm, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + c * 4 + 1, mask=cm, other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + c * 4 + 2, mask=cm, other=0.0).to(tl.float32)
    w3 = tl.load(w_ptr + c * 4 + 3, mask=cm, other=0.0).to(tl.float32)
    bias = tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32) if HAS_BIAS else w0 * 0.0
    row = x_ptr + b * sx_b + c64 * sx_c
    grow = g_ptr + b * sg_b + c64 * sg_c
    dxrow = dx_ptr + b * sdx_b + c64 * sdx_c
    # the pre-activation gradients at t_end .. t_end + 2 (the next chunk's first three; 0 past L)
    e0 = _load_at(row, t_end - 3, sx_l, cm, L, False)
    e1 = _load_at(row, t_end - 2, sx_l, cm, L, False)
    e2 = _load_at(row, t_end - 1, sx_l, cm, L, False)
    e3 = _load_at(row, t_end, sx_l, cm, L, False)
    e4 = _load_at(row, t_end + 1, sx_l, cm, L, False)
    e5 = _load_at(row, t_end + 2, sx_l, cm, L, False)
    gn0 = _gpre(_load_at(grow, t_end, sg_l, cm, L, False), bias + w0 * e0 + w1 * e1 + w2 * e2 + w3 * e3, SILU, FAST)
    gn1 = _gpre(_load_at(grow, t_end + 1, sg_l, cm, L, False), bias + w0 * e1 + w1 * e2 + w2 * e3 + w3 * e4,
                SILU, FAST)
    gn2 = _gpre(_load_at(grow, t_end + 2, sg_l, cm, L, False), bias + w0 * e2 + w1 * e3 + w2 * e4 + w3 * e5,
                SILU, FAST)
    n_tiles = tl.cdiv(t_end - t_start, 8)
    x0, x1, x2, x3, x4, x5, x6, x7 = _load_tile(row, t_start + (n_tiles - 1) * 8, sx_l, cm, L, False, BT)
    dw0 = w0 * 0.0
    dw1 = w0 * 0.0
    dw2 = w0 * 0.0
    dw3 = w0 * 0.0
    db = w0 * 0.0
    for kk in range(0, n_tiles):
        t0 = t_start + (n_tiles - 1 - kk) * 8
        p0, p1, p2, p3, p4, xm3, xm2, xm1 = _prev_tile(row, t0, sx_l, cm, L, BT)
        q0, q1, q2, q3, q4, q5, q6, q7 = _load_tile(grow, t0, sg_l, cm, t_end, False, BT)  # (0 from t_end on)
        g0 = _gpre(q0, bias + w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0, SILU, FAST)
        g1 = _gpre(q1, bias + w0 * xm2 + w1 * xm1 + w2 * x0 + w3 * x1, SILU, FAST)
        g2 = _gpre(q2, bias + w0 * xm1 + w1 * x0 + w2 * x1 + w3 * x2, SILU, FAST)
        g3 = _gpre(q3, bias + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3, SILU, FAST)
        g4 = _gpre(q4, bias + w0 * x1 + w1 * x2 + w2 * x3 + w3 * x4, SILU, FAST)
        g5 = _gpre(q5, bias + w0 * x2 + w1 * x3 + w2 * x4 + w3 * x5, SILU, FAST)
        g6 = _gpre(q6, bias + w0 * x3 + w1 * x4 + w2 * x5 + w3 * x6, SILU, FAST)
        g7 = _gpre(q7, bias + w0 * x4 + w1 * x5 + w2 * x6 + w3 * x7, SILU, FAST)
        _store_tile(dxrow, t0, sdx_l, cm, t_end, L,
                    w3 * g0 + w2 * g1 + w1 * g2 + w0 * g3, w3 * g1 + w2 * g2 + w1 * g3 + w0 * g4,
                    w3 * g2 + w2 * g3 + w1 * g4 + w0 * g5, w3 * g3 + w2 * g4 + w1 * g5 + w0 * g6,
                    w3 * g4 + w2 * g5 + w1 * g6 + w0 * g7, w3 * g5 + w2 * g6 + w1 * g7 + w0 * gn0,
                    w3 * g6 + w2 * g7 + w1 * gn0 + w0 * gn1, w3 * g7 + w2 * gn0 + w1 * gn1 + w0 * gn2, False, BT)
        dw0 += (g0 * xm3 + g1 * xm2 + g2 * xm1 + g3 * x0) + (g4 * x1 + g5 * x2 + g6 * x3 + g7 * x4)
        dw1 += (g0 * xm2 + g1 * xm1 + g2 * x0 + g3 * x1) + (g4 * x2 + g5 * x3 + g6 * x4 + g7 * x5)
        dw2 += (g0 * xm1 + g1 * x0 + g2 * x1 + g3 * x2) + (g4 * x3 + g5 * x4 + g6 * x5 + g7 * x6)
        dw3 += (g0 * x0 + g1 * x1 + g2 * x2 + g3 * x3) + (g4 * x4 + g5 * x5 + g6 * x6 + g7 * x7)
        db += (g0 + g1 + g2 + g3) + (g4 + g5 + g6 + g7)
        gn0, gn1, gn2 = g0, g1, g2
        x0, x1, x2, x3, x4, x5, x6, x7 = p0, p1, p2, p3, p4, xm3, xm2, xm1
    part = (j * batch + b) * D + c64
    tl.store(dw_ptr + part * 4, dw0, mask=cm)
    tl.store(dw_ptr + part * 4 + 1, dw1, mask=cm)
    tl.store(dw_ptr + part * 4 + 2, dw2, mask=cm)
    tl.store(dw_ptr + part * 4 + 3, dw3, mask=cm)
    tl.store(db_ptr + part, db, mask=cm)


@triton.jit
def _prev_tile(row, t0, sl, cm, L, BT: tl.constexpr):
    """The 8 positions before t0 as columns (0 before position 0)."""
    return _load_tile(row, t0 - 8, sl, cm, L, False, BT)


def conv_version() -> int:
    """``CADUCEUS_CONV``: 1 (default) the tiled kernels, 2 a thread per channel (module docstring)."""
    from ...runtime import env_int

    return env_int("CADUCEUS_CONV", 1, minimum=1)


def _conv2_chunks(x) -> tuple[int, int]:
    """(chunk length, chunks): whole rows where channel blocks x sequences fill the GPU, else time
    chunks of at least 256 positions (a multiple of 16)."""
    batch, dim, length = x.shape
    programs = triton.cdiv(dim, _CONV2_BT) * batch
    want = 8 * sm_count(x.device.index or 0)
    n = max(1, min(triton.cdiv(want, programs), length // _CONV2_MIN_CHUNK))
    chunk = triton.cdiv(triton.cdiv(length, n), 16) * 16
    return chunk, triton.cdiv(length, chunk)


def _conv2_forward(x, w, bias, silu, reverse=False):
    out = torch.empty_like(x)
    chunk, n = _conv2_chunks(x)
    _conv2_fwd_kernel[(triton.cdiv(x.shape[1], _CONV2_BT), x.shape[0], n)](
        x, w, bias if bias is not None else w, out, x.shape[2], x.shape[1], chunk, *x.stride(), *out.stride(),
        HAS_BIAS=bias is not None, SILU=silu, BT=_CONV2_BT, REV=reverse, FAST=not INTERPRET, num_warps=_CONV2_BT // 32)
    return out


def _conv2_backward(x, w, bias, g, silu):
    batch, dim, length = x.shape
    chunk, n = _conv2_chunks(x)
    dx = torch.empty_like(x)
    dw = torch.empty(n, batch, dim, 4, device=x.device, dtype=torch.float32)
    db = torch.empty(n, batch, dim, device=x.device, dtype=torch.float32)
    _conv2_bwd_kernel[(triton.cdiv(dim, _CONV2_BT), batch, n)](
        x, w, bias if bias is not None else w, g, dx, dw, db, length, dim, batch, chunk,
        *x.stride(), *g.stride(), *dx.stride(), HAS_BIAS=bias is not None, SILU=silu, BT=_CONV2_BT,
        FAST=not INTERPRET, num_warps=_CONV2_BT // 32)
    return dx, dw, db


_CONV2_BT = 128  # channels (threads) per program of the second version
_CONV2_MIN_CHUNK = 256  # shortest time chunk
_CONV_BC, _CONV_BLT, _CONV_BLT_BWD = 16, 256, 64  # the backward holds more tiles: 64 positions keep it in registers


def _conv_grid(x, blt=_CONV_BLT):
    batch, dim, length = x.shape
    return (triton.cdiv(dim, _CONV_BC), batch, triton.cdiv(length, blt))


class CausalConvTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        w = weight.reshape(weight.shape[0], -1).contiguous()
        ctx.version = conv_version()
        if ctx.version != 1:
            out = _conv2_forward(x, w, bias, silu)
        else:
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
        if ctx.version != 1:
            dx, dw, db = _conv2_backward(x, w, bias, g, ctx.silu)
            dweight = dw.sum((0, 1)).reshape(ctx.wshape).to(w.dtype)
            dbias = db.sum((0, 1)).to(bias.dtype) if bias is not None else None
            return dx, dweight, dbias, None
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


def causal_conv1d_triton(x, weight, bias=None, silu=False, reverse=False):
    """x: (B, D, L) any strides, weight (D, 4) or (D, 1, 4), bias (D,) -> act(causal conv), x's strides.

    ``reverse``: the convolution of x read from its end, flip(conv(flip(x))) along L; without
    gradients one kernel reads x anti-causally, with them x is flipped."""
    if weight.shape[-1] != 4:
        raise ValueError("the Triton causal convolution is written for width 4")
    if reverse:
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return CausalConvTriton.apply(x.flip(-1), weight, bias, bool(silu)).flip(-1)
        w = weight.reshape(weight.shape[0], -1).contiguous()
        if conv_version() != 1:
            return _conv2_forward(x, w, bias, bool(silu), reverse=True)
        out = torch.empty_like(x)
        _conv_fwd_kernel[_conv_grid(x)](x, w, bias if bias is not None else w, out, x.shape[2], x.shape[1],
                                        *x.stride(), *out.stride(), HAS_BIAS=bias is not None, SILU=bool(silu),
                                        BC=_CONV_BC, BLT=_CONV_BLT, REV=True, num_warps=4)
        return out
    return CausalConvTriton.apply(x, weight, bias, bool(silu))
