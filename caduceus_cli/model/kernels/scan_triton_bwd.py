"""The selective scan's backward in Triton, sequential in time like the forward.

One program per (channel block, sequence); each thread owns one channel and keeps its 16 state
adjoints in registers while it walks the sequence from the end. The forward stored the state every
CK positions (``scan_triton.CKPT``); for each such chunk, last first:

1. *phase 1* recomputes the chunk's states forward from the stored one and writes the state
   entering every 4-position sub-chunk to a small scratch row of this thread (CK / 4 states);
2. for each sub-chunk, last first: *phase 2* recomputes its 4 states from the scratch (kept in
   registers), then the *reverse pass* runs the adjoint recurrence over them:
   dh_t = dy_t C_t + a_{t+1} dh_{t+1}, and from dh_t and h_t every input's gradient.

Per state update that is one exp2 in each pass and about 25 other instructions; no
(batch, channels, L, N) tensor exists. dB_t and dC_t are sums over channels: each warp reduces its
32 (channel) x 32 (state, B or C) products with a reduce-scatter of butterfly shuffles (31
shuffles per position instead of the 160 of 32 all-reduces), after which lane j holds the warp's sum
for value j, and adds it with one coalesced fp32 atomic per warp and position into a
(batch, groups, L, 32) buffer. dA, dD and d(delta_bias) are per-thread sums written once per
program. Under the Triton interpreter (no inline PTX) the channel sums use ``tl.sum`` instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import LOG2E, _channel_block, _cols4, _dt1, _exp2, _gate1, _ld, _mask_and, states_last_fp32

LOG2E_INV = tl.constexpr(0.6931471805599453)  # 1 / log2(e): A = A2 * LOG2E_INV


# -- state vectors in a lane-dependent order ------------------------------------------------------
# A thread holds its 16 states as [R, BT, 16] tensors built from four 16-byte vectors (states
# 4v..4v+3); column p = 4e + 2k + j holds element e of vector (2j + k) ^ x, where x (0..3) is a
# per-lane permutation (0 under the interpreter). Every per-state tensor (A, states, B_t, C_t,
# adjoints) uses the same order, so the arithmetic does not see it; the reduce-scatter below does:
# with x = lane bits 4 and 3, its first two steps send the same columns (j = 1, then k = 1) in
# every lane, which saves the selects that lane-dependent choices would cost.


@triton.jit
def _vec_offsets(x):
    """The element offsets of the four vectors in column order (j, k): 4 * ((2j + k) ^ x)."""
    return 4 * (0 ^ x), 4 * (1 ^ x), 4 * (2 ^ x), 4 * (3 ^ x)


@triton.jit
def _join16(q0, q1, q2, q3, R: tl.constexpr, BT: tl.constexpr):
    return tl.reshape(tl.join(tl.join(q0, q1), tl.join(q2, q3)), [R, BT, 16])


@triton.jit
def _load16(row, x, m, R: tl.constexpr, BT: tl.constexpr):
    """16 fp32 of each row (``row``: [R, BT] pointers; x: [R, BT, 1]) in the lane order above."""
    offs = tl.arange(0, 4)[None, None, :]
    o0, o1, o2, o3 = _vec_offsets(x)
    r = row[:, :, None]
    return _join16(tl.load(r + o0 + offs, mask=m, other=0.0), tl.load(r + o1 + offs, mask=m, other=0.0),
                   tl.load(r + o2 + offs, mask=m, other=0.0), tl.load(r + o3 + offs, mask=m, other=0.0), R, BT)


@triton.jit
def _store16(row, x, v, m, R: tl.constexpr, BT: tl.constexpr):
    """Inverse of :func:`_load16`."""
    offs = tl.arange(0, 4)[None, None, :]
    o0, o1, o2, o3 = _vec_offsets(x)
    r = row[:, :, None]
    a, b = tl.split(tl.reshape(v, [R, BT, 4, 2, 2]))
    q0, q1 = tl.split(a)
    q2, q3 = tl.split(b)
    tl.store(r + o0 + offs, q0, mask=m)
    tl.store(r + o1 + offs, q1, mask=m)
    tl.store(r + o2 + offs, q2, mask=m)
    tl.store(r + o3 + offs, q3, mask=m)


@triton.jit
def _bcast16(base, sn, x, ok, MASKED: tl.constexpr, BT: tl.constexpr):
    """base[n * sn] for the 16 states, to every thread in its lane order: [1, BT, 16] fp32."""
    offs = tl.arange(0, 4)[None, None, :]
    o0, o1, o2, o3 = _vec_offsets(x)
    if MASKED:
        okb = _mask_and(ok, o0 + offs)
        q0 = tl.load(base + (o0 + offs) * sn, mask=okb, other=0.0)
        q1 = tl.load(base + (o1 + offs) * sn, mask=okb, other=0.0)
        q2 = tl.load(base + (o2 + offs) * sn, mask=okb, other=0.0)
        q3 = tl.load(base + (o3 + offs) * sn, mask=okb, other=0.0)
    else:
        q0 = tl.load(base + (o0 + offs) * sn)
        q1 = tl.load(base + (o1 + offs) * sn)
        q2 = tl.load(base + (o2 + offs) * sn)
        q3 = tl.load(base + (o3 + offs) * sn)
    return _join16(q0, q1, q2, q3, 1, BT)


# -- reduce-scatter over the 32 lanes of a warp -------------------------------------------------
# _rs_M(keep, send): add lane ^ M's ``send`` to this lane's ``keep`` (same columns in every lane);
# _rsel_M(lo, hi, lane): lanes whose bit M is 0 keep lo and send hi, the others the reverse.
# Five steps (16 + 8 + 4 + 2 + 1 shuffles) leave in each lane one warp sum.


@triton.jit
def _rs16(keep, send):
    return tl.inline_asm_elementwise(
        "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 16, 31, -1; add.f32 $0, $1, r; }",
        "=r,r,r", [keep, send], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rs8(keep, send):
    return tl.inline_asm_elementwise(
        "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 8, 31, -1; add.f32 $0, $1, r; }",
        "=r,r,r", [keep, send], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rsel4(lo, hi, lane):
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 l, s, k, r; and.b32 l, $3, 4; setp.ne.u32 p, l, 0; "
        "selp.b32 s, $1, $2, p; selp.b32 k, $2, $1, p; shfl.sync.bfly.b32 r, s, 4, 31, -1; add.f32 $0, k, r; }",
        "=r,r,r,r", [lo, hi, lane], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rsel2(lo, hi, lane):
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 l, s, k, r; and.b32 l, $3, 2; setp.ne.u32 p, l, 0; "
        "selp.b32 s, $1, $2, p; selp.b32 k, $2, $1, p; shfl.sync.bfly.b32 r, s, 2, 31, -1; add.f32 $0, k, r; }",
        "=r,r,r,r", [lo, hi, lane], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _rsel1(lo, hi, lane):
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 l, s, k, r; and.b32 l, $3, 1; setp.ne.u32 p, l, 0; "
        "selp.b32 s, $1, $2, p; selp.b32 k, $2, $1, p; shfl.sync.bfly.b32 r, s, 1, 31, -1; add.f32 $0, k, r; }",
        "=r,r,r,r", [lo, hi, lane], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _lane_id(x):
    return tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [x], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _halves(x, R: tl.constexpr, BT: tl.constexpr, W: tl.constexpr):
    """[R, BT, 2W] -> its even and odd columns, [R, BT, W] each (register renaming)."""
    return tl.split(tl.reshape(x, [R, BT, W, 2]))


@triton.jit
def _add_channel_sums(dbc_row, vb, vc, ok, lane, R: tl.constexpr, BT: tl.constexpr, RS: tl.constexpr):
    """Add the sums over this program's channels of vb, vc ([R, BT, 16] in the lane order above)
    to dbc_row[0:16] (B) and dbc_row[16:32] (C), natural state order. ``lane``: [R, BT] lane ids.
    RS: the shuffle reduce-scatter (else ``tl.sum``, which needs the lane order x = 0)."""
    if RS:
        ln = lane[:, :, None]
        b0, b1 = _halves(vb, R, BT, 8)  # j = 0 (kept), j = 1 (sent): state bit 3 <-> lane bit 4
        c0, c1 = _halves(vc, R, BT, 8)
        vb = _rs16(b0, b1)
        vc = _rs16(c0, c1)
        b0, b1 = _halves(vb, R, BT, 4)  # k: state bit 2 <-> lane bit 3
        c0, c1 = _halves(vc, R, BT, 4)
        vb = _rs8(b0, b1)
        vc = _rs8(c0, c1)  # [R, BT, 4]: columns e = state bits 0-1
        x = _rsel4(vb, vc, ln)  # B or C <-> lane bit 2
        lo, hi = _halves(x, R, BT, 2)
        x = _rsel1(lo, hi, ln)  # state bit 0 <-> lane bit 0
        lo, hi = tl.split(x)
        x = _rsel2(lo, hi, lane)  # state bit 1 <-> lane bit 1; [R, BT]
        j = ((lane >> 2) & 1) * 16 + ((lane >> 3) & 3) * 4 + (lane & 3)
        tl.atomic_add(dbc_row + j, x, mask=_mask_and(ok, j), sem="relaxed")
    else:
        p = tl.arange(0, 16)
        n = 8 * (p % 2) + 4 * ((p // 2) % 2) + p // 4  # column -> state with x = 0
        sb = tl.sum(tl.sum(vb, axis=1), axis=0)
        sc = tl.sum(tl.sum(vc, axis=1), axis=0)
        okn = _mask_and(ok, p)
        tl.atomic_add(dbc_row + n, sb, mask=okn, sem="relaxed")
        tl.atomic_add(dbc_row + 16 + n, sc, mask=okn, sem="relaxed")


# -- the four-position steps ---------------------------------------------------------------------


@triton.jit
def _load4(row, t0, sl, cm3, t_end, MASKED: tl.constexpr, R: tl.constexpr, BT: tl.constexpr):
    """Positions t0..t0+3 of the rows (``row``: [R, BT] pointers) as 4 fp32 columns [R, BT]; one
    vector load per thread (8 bytes for 16-bit types)."""
    offs = tl.arange(0, 4)[None, None, :]
    x = _ld(row[:, :, None] + (t0 + offs) * sl, cm3 & (t0 + offs < t_end), MASKED)
    return _cols4(x, R, BT)


@triton.jit
def _store4(row, t0, sl, cm3, t_end, c0, c1, c2, c3, MASKED: tl.constexpr, R: tl.constexpr, BT: tl.constexpr):
    offs = tl.arange(0, 4)[None, None, :]
    x = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [R, BT, 4]).to(row.dtype.element_ty)
    if MASKED:
        tl.store(row[:, :, None] + (t0 + offs) * sl, x, mask=cm3 & (t0 + offs < t_end))
    else:
        tl.store(row[:, :, None] + (t0 + offs) * sl, x)


@triton.jit
def _dt4(d_row, t0, sd_l, cm3, t_end, bias, MASKED: tl.constexpr, HAS_BIAS: tl.constexpr,
         SOFTPLUS: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    """dt of 4 positions and its slope d dt / d delta; dt is 0 past t_end."""
    r0, r1, r2, r3 = _load4(d_row, t0, sd_l, cm3, t_end, MASKED, R, BT)
    d0, s0 = _dt1(r0, bias, t0 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d1, s1 = _dt1(r1, bias, t0 + 1 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d2, s2 = _dt1(r2, bias, t0 + 2 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d3, s3 = _dt1(r3, bias, t0 + 3 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    return d0, d1, d2, d3, s0, s1, s2, s3


@triton.jit
def _fwd1(h, A2, dt, du, b_ptr, sB_n, x, ok, MASKED: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    Bt = _bcast16(b_ptr, sB_n, x, ok, MASKED, BT)
    return _exp2(dt[:, :, None] * A2, FAST) * h + du[:, :, None] * Bt


@triton.jit
def _rev1(h, g, dA, A2, dt, u, dy, b_ptr, c_ptr, sB_n, sC_n, x, ok, dbc_row, lane,
          MASKED: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr, RS: tl.constexpr):
    """One position of the reverse pass. h: the state after this position; g: a_{t+1} dh_{t+1}.
    Returns (g for the position before, dA, sum_n h C, sum_n dh B, sum_n A2 dh a h_prev)."""
    Bt = _bcast16(b_ptr, sB_n, x, ok, MASKED, BT)
    Ct = _bcast16(c_ptr, sC_n, x, ok, MASKED, BT)
    dtu = (dt * u)[:, :, None]
    dh = dy[:, :, None] * Ct + g
    ys = tl.sum(h * Ct, axis=2)
    duB = tl.sum(dh * Bt, axis=2)
    q = dh * (h - dtu * Bt)  # dh_t * a_t h_{t-1}
    ddA = tl.sum(q * A2, axis=2)
    dA = dA + dt[:, :, None] * q
    _add_channel_sums(dbc_row, dtu * dh, dy[:, :, None] * h, ok, lane, R, BT, RS)
    g = _exp2(dt[:, :, None] * A2, FAST) * dh
    return g, dA, ys, duB, ddA


@triton.jit
def _phase1_sub(h, A2, bias, u_row, d_row, b_base, x, t0, t_end, su_l, sd_l, sB_n, sB_l, cm3,
                MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    u0, u1, u2, u3 = _load4(u_row, t0, su_l, cm3, t_end, MASKED, R, BT)
    d0, d1, d2, d3, _s0, _s1, _s2, _s3 = _dt4(d_row, t0, sd_l, cm3, t_end, bias, MASKED, HAS_BIAS, SOFTPLUS, R, BT,
                                               FAST)
    h = _fwd1(h, A2, d0, d0 * u0, b_base + t0 * sB_l, sB_n, x, t0 < t_end, MASKED, BT, FAST)
    h = _fwd1(h, A2, d1, d1 * u1, b_base + (t0 + 1) * sB_l, sB_n, x, t0 + 1 < t_end, MASKED, BT, FAST)
    h = _fwd1(h, A2, d2, d2 * u2, b_base + (t0 + 2) * sB_l, sB_n, x, t0 + 2 < t_end, MASKED, BT, FAST)
    h = _fwd1(h, A2, d3, d3 * u3, b_base + (t0 + 3) * sB_l, sB_n, x, t0 + 3 < t_end, MASKED, BT, FAST)
    return h


@triton.jit
def _dy4(dout_row, z_row, t0, so_l, sz_l, cm3, t_end, MASKED: tl.constexpr, HAS_Z: tl.constexpr,
         R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr):
    o0, o1, o2, o3 = _load4(dout_row, t0, so_l, cm3, t_end, MASKED, R, BT)
    if HAS_Z:
        z0, z1, z2, z3 = _load4(z_row, t0, sz_l, cm3, t_end, MASKED, R, BT)
    else:
        z0, z1, z2, z3 = o0, o1, o2, o3
    y0, w0 = _gate1(o0, z0, HAS_Z, FAST)
    y1, w1 = _gate1(o1, z1, HAS_Z, FAST)
    y2, w2 = _gate1(o2, z2, HAS_Z, FAST)
    y3, w3 = _gate1(o3, z3, HAS_Z, FAST)
    return y0, y1, y2, y3, w0, w1, w2, w3


@triton.jit
def _rev_pos(h, g, dA, dD, dbias, A2, Dv, dt, slope, u, dy, w, b_ptr, c_ptr, sB_n, sC_n, x, ok, dbc_row, lane,
             MASKED: tl.constexpr, HAS_D: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr,
             RS: tl.constexpr):
    """The reverse pass at one position and this position's (du, d delta, dz); returns them with
    the carried (g, dA, dD, dbias)."""
    g, dA, ys, duB, ddA = _rev1(h, g, dA, A2, dt, u, dy, b_ptr, c_ptr, sB_n, sC_n, x, ok, dbc_row, lane,
                                MASKED, R, BT, FAST, RS)
    du = dt * duB
    if HAS_D:
        ys += Dv * u
        du += Dv * dy
    dz = ys * w
    ddelta = (u * duB + ddA * LOG2E_INV) * slope
    if MASKED:  # past the end: no contribution to the per-channel sums
        ddelta = tl.where(ok, ddelta, 0.0)
    return g, dA, dD + dy * u, dbias + ddelta, du, ddelta, dz


@triton.jit
def _phase2_sub(hs, g, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                b_base, c_base, dbc_base, lane, x, t0, t_end,
                su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_n, sB_l, sC_n, sC_l, cm3,
                MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
                HAS_Z: tl.constexpr, R: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr, RS: tl.constexpr):
    """Sub-chunk t0..t0+3 from the state entering it (hs): recompute its 4 states, run the reverse
    pass over them, store du, d(delta), dz; returns the carried (g, dA, dD, dbias)."""
    u0, u1, u2, u3 = _load4(u_row, t0, su_l, cm3, t_end, MASKED, R, BT)
    d0, d1, d2, d3, s0, s1, s2, s3 = _dt4(d_row, t0, sd_l, cm3, t_end, bias, MASKED, HAS_BIAS, SOFTPLUS, R, BT,
                                          FAST)
    y0, y1, y2, y3, w0, w1, w2, w3 = _dy4(o_row, z_row, t0, so_l, sz_l, cm3, t_end, MASKED, HAS_Z, R, BT, FAST)
    h0 = _fwd1(hs, A2, d0, d0 * u0, b_base + t0 * sB_l, sB_n, x, t0 < t_end, MASKED, BT, FAST)
    h1 = _fwd1(h0, A2, d1, d1 * u1, b_base + (t0 + 1) * sB_l, sB_n, x, t0 + 1 < t_end, MASKED, BT, FAST)
    h2 = _fwd1(h1, A2, d2, d2 * u2, b_base + (t0 + 2) * sB_l, sB_n, x, t0 + 2 < t_end, MASKED, BT, FAST)
    h3 = _fwd1(h2, A2, d3, d3 * u3, b_base + (t0 + 3) * sB_l, sB_n, x, t0 + 3 < t_end, MASKED, BT, FAST)
    g, dA, dD, dbias, du3, dd3, dz3 = _rev_pos(
        h3, g, dA, dD, dbias, A2, Dv, d3, s3, u3, y3, w3, b_base + (t0 + 3) * sB_l, c_base + (t0 + 3) * sC_l,
        sB_n, sC_n, x, t0 + 3 < t_end, dbc_base + (t0 + 3) * 32, lane, MASKED, HAS_D, R, BT, FAST, RS)
    g, dA, dD, dbias, du2, dd2, dz2 = _rev_pos(
        h2, g, dA, dD, dbias, A2, Dv, d2, s2, u2, y2, w2, b_base + (t0 + 2) * sB_l, c_base + (t0 + 2) * sC_l,
        sB_n, sC_n, x, t0 + 2 < t_end, dbc_base + (t0 + 2) * 32, lane, MASKED, HAS_D, R, BT, FAST, RS)
    g, dA, dD, dbias, du1, dd1, dz1 = _rev_pos(
        h1, g, dA, dD, dbias, A2, Dv, d1, s1, u1, y1, w1, b_base + (t0 + 1) * sB_l, c_base + (t0 + 1) * sC_l,
        sB_n, sC_n, x, t0 + 1 < t_end, dbc_base + (t0 + 1) * 32, lane, MASKED, HAS_D, R, BT, FAST, RS)
    g, dA, dD, dbias, du0, dd0, dz0 = _rev_pos(
        h0, g, dA, dD, dbias, A2, Dv, d0, s0, u0, y0, w0, b_base + t0 * sB_l, c_base + t0 * sC_l,
        sB_n, sC_n, x, t0 < t_end, dbc_base + t0 * 32, lane, MASKED, HAS_D, R, BT, FAST, RS)
    _store4(du_row, t0, sdu_l, cm3, t_end, du0, du1, du2, du3, MASKED, R, BT)
    _store4(dd_row, t0, sdd_l, cm3, t_end, dd0, dd1, dd2, dd3, MASKED, R, BT)
    if HAS_Z:
        _store4(dz_row, t0, sdz_l, cm3, t_end, dz0, dz1, dz2, dz3, MASKED, R, BT)
    return g, dA, dD, dbias


# -- the kernel ------------------------------------------------------------------------------------


@triton.jit
def _scan_bwd_seq_kernel(
    u_ptr, d_ptr, z_ptr, dout_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr, scratch_ptr,
    du_ptr, dd_ptr, dz_ptr, dbc_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, per_group, channels, groups, n_ckpt,
    su_b, su_c, su_l, sd_b, sd_c, sd_l, sz_b, sz_c, sz_l, so_b, so_c, so_l,
    sdu_b, sdu_c, sdu_l, sdd_b, sdd_c, sdd_l, sdz_b, sdz_c, sdz_l,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    BT: tl.constexpr, CK: tl.constexpr, EVEN_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    FAST: tl.constexpr, RS: tl.constexpr,
):
    """Grid (groups * blocks per group, batch). Program (blk, b): BT channels of one group of
    sequence b, walked from the end. dbc: (batch, groups, L, 32) fp32, zeroed, B's then C's
    gradient per position; scratch: (batch, channels, CK // 4, 16) fp32; dA (batch, channels, 16),
    dD and dbias (batch, channels): this program's sums."""
    R: tl.constexpr = 1
    SUB: tl.constexpr = CK // 4
    g, cig, cm, c = _channel_block(per_group, R, BT, EVEN_C)  # c: [R, BT]
    b = tl.program_id(1).to(tl.int64)
    cm3 = cm[:, :, None]
    MC: tl.constexpr = not EVEN_C
    lane = _lane_id(cig.to(tl.int32)) if RS else cig.to(tl.int32) % 32
    x = ((lane >> 3) & 3)[:, :, None] if RS else cm3.to(tl.int32) * 0  # the lane order of state vectors
    A2 = _load16(A2_ptr + c * 16, x, cm3, R, BT)
    bias = tl.load(bias_ptr + c, mask=cm, other=0.0) if HAS_BIAS else None
    Dv = tl.load(D_ptr + c, mask=cm, other=0.0) if HAS_D else None
    u_row = u_ptr + b * su_b + c * su_c
    d_row = d_ptr + b * sd_b + c * sd_c
    z_row = z_ptr + b * sz_b + c * sz_c
    o_row = dout_ptr + b * so_b + c * so_c
    du_row = du_ptr + b * sdu_b + c * sdu_c
    dd_row = dd_ptr + b * sdd_b + c * sdd_c
    dz_row = dz_ptr + b * sdz_b + c * sdz_c
    b_base = B_ptr + b * sB_b + g * sB_g
    c_base = C_ptr + b * sC_b + g * sC_g
    dbc_base = dbc_ptr + (b * groups + g) * L * 32
    scratch_row = (b * channels + c) * SUB  # [R, BT] rows of 16 floats
    gcar = tl.zeros([R, BT, 16], dtype=tl.float32)
    dA = tl.zeros([R, BT, 16], dtype=tl.float32)
    dD = tl.zeros([R, BT], dtype=tl.float32)
    dbias = tl.zeros([R, BT], dtype=tl.float32)
    n_sub_full = L // 4
    for kk in range(0, n_ckpt):
        k = n_ckpt - 1 - kk
        s_lo = k * SUB
        s_hi = tl.minimum(s_lo + SUB, tl.cdiv(L, 4))
        # phase 1: the states entering each sub-chunk of this chunk, into the scratch
        h = _load16(ckpt_ptr + ((b * channels + c) * n_ckpt + k) * 16, x, cm3, R, BT)
        for s in range(s_lo, s_hi):
            _store16(scratch_ptr + (scratch_row + (s - s_lo)) * 16, x, h, cm3, R, BT)
            if s + 1 < s_hi:  # (only the last sub-chunk can be partial; its end state is not needed)
                h = _phase1_sub(h, A2, bias, u_row, d_row, b_base, x, s * 4, L, su_l, sd_l, sB_n, sB_l, cm3,
                                MC, HAS_BIAS, SOFTPLUS, R, BT, FAST)
        # phase 2 and the reverse pass, sub-chunk by sub-chunk from the last
        for ss in range(0, s_hi - s_lo):
            s = s_hi - 1 - ss
            hs = _load16(scratch_ptr + (scratch_row + (s - s_lo)) * 16, x, cm3, R, BT)
            if s < n_sub_full:
                gcar, dA, dD, dbias = _phase2_sub(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_base, c_base, dbc_base, lane, x, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_n, sB_l, sC_n, sC_l, cm3,
                    MC, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, R, BT, FAST, RS)
            else:  # the last, partial sub-chunk
                gcar, dA, dD, dbias = _phase2_sub(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_base, c_base, dbc_base, lane, x, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_n, sB_l, sC_n, sC_l, cm3,
                    True, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, R, BT, FAST, RS)
    _store16(dA_ptr + (b * channels + c) * 16, x, dA, cm3, R, BT)
    tl.store(dD_ptr + b * channels + c, dD, mask=cm)
    tl.store(dbias_ptr + b * channels + c, dbias, mask=cm)


# -- host side -----------------------------------------------------------------------------------


def scan_backward_seq(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck: int,
                      num_warps: int, interpret: bool):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of ``scan_triton.scan_forward``'s y
    from its checkpoints ``ckpt`` (batch, channels, ceil(L / ck), 16), fp32 natural state order."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    B32, C32 = states_last_fp32(B), states_last_fp32(C)
    A2 = (A.float() * LOG2E).contiguous()
    bt = 32 * num_warps
    blocks = groups * triton.cdiv(per_group, bt)
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty_like(u)
    dd = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dbc = torch.zeros(batch, groups, length, 32, **f32)
    scratch = torch.empty(batch, channels, ck // 4, 16, **f32)
    dA = torch.empty(batch, channels, 16, **f32)
    dD = torch.empty(batch, channels, **f32)
    dbias = torch.empty(batch, channels, **f32)
    zz = z if z is not None else u
    dzz = dz if dz is not None else du
    _scan_bwd_seq_kernel[(blocks, batch)](
        u, delta, zz, dout, A2, B32, C32,
        D.float().contiguous() if D is not None else A2,
        delta_bias.float().contiguous() if delta_bias is not None else A2, ckpt, scratch,
        du, dd, dzz, dbc, dA, dD, dbias,
        length, per_group, channels, groups, ckpt.shape[2],
        *u.stride(), *delta.stride(), *zz.stride(), *dout.stride(),
        *du.stride(), *dd.stride(), *dzz.stride(), *B32.stride(), *C32.stride(),
        BT=bt, CK=ck, EVEN_C=per_group % bt == 0,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), HAS_D=D is not None, HAS_Z=z is not None,
        FAST=not interpret, RS=not interpret, num_warps=num_warps,
    )
    dB = dbc[..., :16].transpose(-1, -2)
    dC = dbc[..., 16:].transpose(-1, -2)
    return (du, dd, dA.sum(0), dB, dC, dD.sum(0) if D is not None else None, dz,
            dbias.sum(0) if delta_bias is not None else None)
