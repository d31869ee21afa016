"""The selective scan's backward in Triton, second version: two threads per channel.

Same math, inputs and outputs as :mod:`scan_triton_bwd` (the first version, still selectable with
``CADUCEUS_SCAN_BWD=1``); see there for the two recomputation phases. What changes:

- *Two threads per channel*, each holding 8 of the 16 states (thread row i: channel i // 2, states
  8 (i % 2) .. 8 (i % 2) + 7). The first version held all 16 states of a channel in one thread
  and needed 255 registers plus a 432-byte stack (spills in the inner loop) at 8 warps per SM;
  here a thread's working set is about half, so more warps fit and nothing spills.
  Per-channel sums over the states (y, dh.B, sum q A) add the partner's half with one shuffle.
- *One exp per state update in the reverse pass fewer*: phase 2 keeps the decays a_t it computes
  for the sub-chunk's states and the reverse pass reuses them (g = a_t dh_t, and da_t's term
  q = g h_{t-1}), so each state update costs two exp2 instead of three, and two multiplies fewer.
- dB_t, dC_t (sums over channels) by a reduce-scatter of 15 butterfly shuffles per thread and
  position (16 channels of a warp), then one coalesced fp32 atomic per lane, or (``WSUM``) summed
  over the program's warps first, so that one atomic per output and position leaves the program.

Lane order of the state vectors: a thread's 8 states are four 2-element vectors (states 2v, 2v+1 of
its half); column p = 4e + 2k + j holds element e of vector (2j + k) ^ x with x = lane bits 4, 3
(0 under the interpreter). Every per-state tensor uses the same order; the reduce-scatter's first
two steps then send the same columns in every lane (no selects).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import LOG2E, _dt1, _exp2, _gate1, _ld, _mask_and, states_last_fp32

LOG2E_INV = tl.constexpr(0.6931471805599453)  # 1 / log2(e): A = A2 * LOG2E_INV


# -- butterfly shuffles: PTX on the GPU, emulated with reshapes under the interpreter -------------
# SHFL = 2: shfl.sync.bfly (inline PTX); SHFL = 1: the same exchange built from reshape, permute,
# split and join on the rows of the tensor (rows are threads, row % 32 the lane), so that the
# interpreter runs exactly the lane logic the GPU runs.


@triton.jit
def _bfly_rows(x, M: tl.constexpr, BT: tl.constexpr, K: tl.constexpr):
    """[BT, K] -> row i holds x's row i ^ M (M a power of two below 32)."""
    y = tl.permute(tl.reshape(x, [BT // (2 * M), 2, M, K]), (0, 2, 3, 1))
    a, b = tl.split(y)
    return tl.reshape(tl.permute(tl.join(b, a), (0, 3, 1, 2)), [BT, K])


@triton.jit
def _bfly_add(keep, send, M: tl.constexpr, BT: tl.constexpr, K: tl.constexpr, SHFL: tl.constexpr):
    """keep + (send of lane ^ M); keep, send [BT, K] (K = 0: [BT])."""
    if SHFL == 2:
        if M == 16:
            asm: tl.constexpr = "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 16, 31, -1; add.f32 $0, $1, r; }"
        elif M == 8:
            asm: tl.constexpr = "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 8, 31, -1; add.f32 $0, $1, r; }"
        elif M == 4:
            asm: tl.constexpr = "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 4, 31, -1; add.f32 $0, $1, r; }"
        elif M == 2:
            asm: tl.constexpr = "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 2, 31, -1; add.f32 $0, $1, r; }"
        else:
            asm: tl.constexpr = "{ .reg .b32 r; shfl.sync.bfly.b32 r, $2, 1, 31, -1; add.f32 $0, $1, r; }"
        return tl.inline_asm_elementwise(asm, "=r,r,r", [keep, send], dtype=tl.float32, is_pure=True, pack=1)
    else:
        if K == 0:
            return keep + tl.reshape(_bfly_rows(tl.reshape(send, [BT, 1]), M, BT, 1), [BT])
        else:
            return keep + _bfly_rows(send, M, BT, K)


@triton.jit
def _bfly_sel_add(lo, hi, lane, M: tl.constexpr, BT: tl.constexpr, K: tl.constexpr, SHFL: tl.constexpr):
    """Lanes whose bit M is 0 keep lo and send hi, the others the reverse; returns kept + received."""
    up = (lane & M) != 0
    if K != 0:
        up = up[:, None]
    keep = tl.where(up, hi, lo)
    send = tl.where(up, lo, hi)
    return _bfly_add(keep, send, M, BT, K, SHFL)


@triton.jit
def _pair_sum(x, BT: tl.constexpr, SHFL: tl.constexpr):
    """x [BT] plus the value of the thread holding the channel's other half (row i ^ 1)."""
    return _bfly_add(x, x, 1, BT, 0, SHFL)


@triton.jit
def _lane_of(row, SHFL: tl.constexpr):
    if SHFL == 2:
        return tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [row], dtype=tl.int32, is_pure=True,
                                         pack=1)
    else:
        return row % 32


# -- per-thread state vectors ---------------------------------------------------------------------


@triton.jit
def _slots(hoff, x):
    """Element offsets [BT, 2] of the four 2-element vectors in column order, for the half whose
    first state is ``hoff`` ([BT, 1]); x ([BT, 1]) is the lane's vector permutation."""
    e = tl.arange(0, 2)[None, :]
    return hoff + 2 * (0 ^ x) + e, hoff + 2 * (1 ^ x) + e, hoff + 2 * (2 ^ x) + e, hoff + 2 * (3 ^ x) + e


@triton.jit
def _join8(q0, q1, q2, q3, BT: tl.constexpr):
    return tl.reshape(tl.join(tl.join(q0, q1), tl.join(q2, q3)), [BT, 8])


@triton.jit
def _split8(v, BT: tl.constexpr):
    """Inverse of :func:`_join8`: the four [BT, 2] vectors."""
    a, b = tl.split(tl.reshape(v, [BT, 2, 2, 2]))
    q0, q1 = tl.split(a)
    q2, q3 = tl.split(b)
    return q0, q1, q2, q3


@triton.jit
def _gather8(base, o0, o1, o2, o3, m, MASKED: tl.constexpr, BT: tl.constexpr):
    """base[o] for the offsets of :func:`_slots` as [BT, 8] fp32 (8-byte vector loads)."""
    if MASKED:
        return _join8(tl.load(base + o0, mask=m, other=0.0), tl.load(base + o1, mask=m, other=0.0),
                      tl.load(base + o2, mask=m, other=0.0), tl.load(base + o3, mask=m, other=0.0), BT)
    else:
        return _join8(tl.load(base + o0), tl.load(base + o1), tl.load(base + o2), tl.load(base + o3), BT)


@triton.jit
def _scatter8(base, o0, o1, o2, o3, v, m, BT: tl.constexpr):
    q0, q1, q2, q3 = _split8(v, BT)
    tl.store(base + o0, q0, mask=m)
    tl.store(base + o1, q1, mask=m)
    tl.store(base + o2, q2, mask=m)
    tl.store(base + o3, q3, mask=m)


@triton.jit
def _halves(x, BT: tl.constexpr, W: tl.constexpr):
    """[BT, 2W] -> its even and odd columns, [BT, W] each (register renaming)."""
    return tl.split(tl.reshape(x, [BT, W, 2]))


@triton.jit
def _channel_sums(vb, vc, lane, BT: tl.constexpr, SHFL: tl.constexpr):
    """Reduce-scatter over the 16 channels of a warp: vb, vc [BT, 8] in the lane order -> [BT],
    lane l holding the warp's sum of output :func:`_output_index` (l). 15 shuffles."""
    b0, b1 = _halves(vb, BT, 4)  # j: vector bit 1 <-> lane bit 4 (same columns sent in every lane)
    c0, c1 = _halves(vc, BT, 4)
    vb = _bfly_add(b0, b1, 16, BT, 4, SHFL)
    vc = _bfly_add(c0, c1, 16, BT, 4, SHFL)
    b0, b1 = _halves(vb, BT, 2)  # k: vector bit 0 <-> lane bit 3
    c0, c1 = _halves(vc, BT, 2)
    vb = _bfly_add(b0, b1, 8, BT, 2, SHFL)
    vc = _bfly_add(c0, c1, 8, BT, 2, SHFL)  # [BT, 2]: element e
    v = _bfly_sel_add(vb, vc, lane, 4, BT, 2, SHFL)  # B or C <-> lane bit 2
    lo, hi = tl.split(v)
    return _bfly_sel_add(lo, hi, lane, 2, BT, 0, SHFL)  # element <-> lane bit 1


@triton.jit
def _output_index(lane):
    """Which of the 32 (dB then dC, natural state order) values lane ``lane`` holds after
    :func:`_channel_sums`: half = bit 0, vector = bits 4, 3, B/C = bit 2, element = bit 1."""
    return ((lane >> 2) & 1) * 16 + (lane & 1) * 8 + ((lane >> 3) & 3) * 2 + ((lane >> 1) & 1)


# -- per-position pieces ----------------------------------------------------------------------------


@triton.jit
def _exp2_again(x, FAST: tl.constexpr):
    """exp2(x) computed again: x + 0.0 is the same value (exp2 of -0 and +0 agree) in another
    register, so that the compiler cannot reuse an earlier identical exp2 (recomputing a decay
    costs an exp2 but saves the registers that would hold it)."""
    return _exp2(x + 0.0, FAST)


@triton.jit
def _load4(row, t0, sl, cm, t_end, MASKED: tl.constexpr, BT: tl.constexpr):
    """Positions t0..t0+3 of the rows ([BT] pointers) as 4 fp32 columns [BT]."""
    offs = tl.arange(0, 4)[None, :]
    x = _ld(row[:, None] + (t0 + offs) * sl, cm[:, None] & (t0 + offs < t_end), MASKED)
    e, o = tl.split(tl.reshape(x, [BT, 2, 2]))
    c0, c2 = tl.split(e)
    c1, c3 = tl.split(o)
    return c0, c1, c2, c3


@triton.jit
def _join4(c0, c1, c2, c3, BT: tl.constexpr):
    """Inverse of the column split in :func:`_load4`: [BT, 4] with column p = c_p."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [BT, 4])


@triton.jit
def _store4(row, t0, sl, m, t_end, c0, c1, c2, c3, BT: tl.constexpr):
    offs = tl.arange(0, 4)[None, :]
    x = _join4(c0, c1, c2, c3, BT).to(row.dtype.element_ty)
    tl.store(row[:, None] + (t0 + offs) * sl, x, mask=m[:, None] & (t0 + offs < t_end))


@triton.jit
def _advance(h, A2, dt, du, Bt, FAST: tl.constexpr):
    """One forward step: (a, a h + du B) with a = exp2(dt A2)."""
    a = _exp2(dt[:, None] * A2, FAST)
    return a, a * h + du[:, None] * Bt


@triton.jit
def _reverse(h, hp, a, g, dA, A2, Dv, dt, slope, u, dy, w, Bt, Ct, lane, ok,
             MASKED: tl.constexpr, HAS_D: tl.constexpr, BT: tl.constexpr, SHFL: tl.constexpr,
             KEEP_DECAY: tl.constexpr, FAST: tl.constexpr):
    """The reverse pass at one position t: h = h_t, hp = h_{t-1}, a = a_t, g = a_{t+1} dh_{t+1}.
    Returns (a_t dh_t, dA, du, d delta, dz, this warp's channel sums of dB_t, dC_t (see
    :func:`_channel_sums`))."""
    dh = dy[:, None] * Ct + g
    ys = _pair_sum(tl.sum(h * Ct, axis=1), BT, SHFL)
    duB = _pair_sum(tl.sum(dh * Bt, axis=1), BT, SHFL)
    if not KEEP_DECAY:
        a = _exp2_again(dt[:, None] * A2, FAST)
    g = a * dh
    q = g * hp  # dh_t a_t h_{t-1}: the decay's share
    ddA = _pair_sum(tl.sum(q * A2, axis=1), BT, SHFL)
    dA = dA + dt[:, None] * q
    v = _channel_sums((dt * u)[:, None] * dh, dy[:, None] * h, lane, BT, SHFL)
    du = dt * duB
    if HAS_D:
        ys += Dv * u
        du += Dv * dy
    dz = ys * w
    ddelta = (u * duB + ddA * LOG2E_INV) * slope
    if MASKED:  # past the end: no contribution to the per-channel sums
        ddelta = tl.where(ok, ddelta, 0.0)
    return g, dA, du, ddelta, dz, v


@triton.jit
def _add_sums(dbc_pos, t0, t_end, v0, v1, v2, v3, lane, BT: tl.constexpr, WSUM: tl.constexpr):
    """Add the 4 positions' warp sums (lane l holds output :func:`_output_index` (l)) to dbc:
    one fp32 atomic per lane and position, or (WSUM) summed over the program's warps first, then
    one atomic per output and position."""
    if WSUM:
        v = tl.reshape(_join4(v0, v1, v2, v3, BT), [BT // 32, 32, 4])
        tot = tl.sum(v, axis=0)  # [32, 4]
        j = _output_index(tl.arange(0, 32))[:, None]
        p = tl.arange(0, 4)[None, :]
        tl.atomic_add(dbc_pos + (t0 + p) * 32 + j, tot, mask=(t0 + p < t_end) & (j >= 0), sem="relaxed")
    else:
        j = _output_index(lane)
        tl.atomic_add(dbc_pos + t0 * 32 + j, v0, mask=_mask_and(t0 < t_end, j), sem="relaxed")
        tl.atomic_add(dbc_pos + (t0 + 1) * 32 + j, v1, mask=_mask_and(t0 + 1 < t_end, j), sem="relaxed")
        tl.atomic_add(dbc_pos + (t0 + 2) * 32 + j, v2, mask=_mask_and(t0 + 2 < t_end, j), sem="relaxed")
        tl.atomic_add(dbc_pos + (t0 + 3) * 32 + j, v3, mask=_mask_and(t0 + 3 < t_end, j), sem="relaxed")


@triton.jit
def _sub_reverse(hs, g, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                 b_pos, c_pos, dbc_pos, lane, o0, o1, o2, o3, cm, own, t0, t_end,
                 su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                 MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
                 HAS_Z: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr, SHFL: tl.constexpr,
                 KEEP_DECAY: tl.constexpr, RELOAD_B: tl.constexpr, WSUM: tl.constexpr):
    """Sub-chunk t0..t0+3 from the state entering it (hs): recompute its 4 states and decays, run
    the reverse pass over them, store du, d(delta), dz (``own``: the thread that stores a channel's
    values) and add dB, dC; returns the carried (g, dA, dD, dbias)."""
    u0, u1, u2, u3 = _load4(u_row, t0, su_l, cm, t_end, MASKED, BT)
    r0, r1, r2, r3 = _load4(d_row, t0, sd_l, cm, t_end, MASKED, BT)
    o_0, o_1, o_2, o_3 = _load4(o_row, t0, so_l, cm, t_end, MASKED, BT)
    if HAS_Z:
        z0, z1, z2, z3 = _load4(z_row, t0, sz_l, cm, t_end, MASKED, BT)
    else:
        z0, z1, z2, z3 = o_0, o_1, o_2, o_3
    d0, s0 = _dt1(r0, bias, t0 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d1, s1 = _dt1(r1, bias, t0 + 1 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d2, s2 = _dt1(r2, bias, t0 + 2 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d3, s3 = _dt1(r3, bias, t0 + 3 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    ok0 = _mask_and(t0 < t_end, o0)
    ok1 = _mask_and(t0 + 1 < t_end, o0)
    ok2 = _mask_and(t0 + 2 < t_end, o0)
    ok3 = _mask_and(t0 + 3 < t_end, o0)
    bp0 = b_pos + t0 * sB_l
    cp0 = c_pos + t0 * sC_l
    B0 = _gather8(bp0, o0, o1, o2, o3, ok0, MASKED, BT)
    B1 = _gather8(bp0 + sB_l, o0, o1, o2, o3, ok1, MASKED, BT)
    B2 = _gather8(bp0 + 2 * sB_l, o0, o1, o2, o3, ok2, MASKED, BT)
    B3 = _gather8(bp0 + 3 * sB_l, o0, o1, o2, o3, ok3, MASKED, BT)
    a0, h0 = _advance(hs, A2, d0, d0 * u0, B0, FAST)
    a1, h1 = _advance(h0, A2, d1, d1 * u1, B1, FAST)
    a2, h2 = _advance(h1, A2, d2, d2 * u2, B2, FAST)
    a3, h3 = _advance(h2, A2, d3, d3 * u3, B3, FAST)
    y0, w0 = _gate1(o_0, z0, HAS_Z, FAST)
    y1, w1 = _gate1(o_1, z1, HAS_Z, FAST)
    y2, w2 = _gate1(o_2, z2, HAS_Z, FAST)
    y3, w3 = _gate1(o_3, z3, HAS_Z, FAST)
    C3 = _gather8(cp0 + 3 * sC_l, o0, o1, o2, o3, ok3, MASKED, BT)
    g, dA, du3, dd3, dz3, v3 = _reverse(h3, h2, a3, g, dA, A2, Dv, d3, s3, u3, y3, w3, B3, C3, lane,
                                        t0 + 3 < t_end, MASKED, HAS_D, BT, SHFL, KEEP_DECAY, FAST)
    if RELOAD_B:  # read B_t again (L1) instead of keeping 4 positions of it in registers
        B2 = _gather8(bp0 + 2 * sB_l, o0, o1, o2, o3, ok2, MASKED, BT)
    C2 = _gather8(cp0 + 2 * sC_l, o0, o1, o2, o3, ok2, MASKED, BT)
    g, dA, du2, dd2, dz2, v2 = _reverse(h2, h1, a2, g, dA, A2, Dv, d2, s2, u2, y2, w2, B2, C2, lane,
                                        t0 + 2 < t_end, MASKED, HAS_D, BT, SHFL, KEEP_DECAY, FAST)
    if RELOAD_B:
        B1 = _gather8(bp0 + sB_l, o0, o1, o2, o3, ok1, MASKED, BT)
    C1 = _gather8(cp0 + sC_l, o0, o1, o2, o3, ok1, MASKED, BT)
    g, dA, du1, dd1, dz1, v1 = _reverse(h1, h0, a1, g, dA, A2, Dv, d1, s1, u1, y1, w1, B1, C1, lane,
                                        t0 + 1 < t_end, MASKED, HAS_D, BT, SHFL, KEEP_DECAY, FAST)
    if RELOAD_B:
        B0 = _gather8(bp0, o0, o1, o2, o3, ok0, MASKED, BT)
    C0 = _gather8(cp0, o0, o1, o2, o3, ok0, MASKED, BT)
    g, dA, du0, dd0, dz0, v0 = _reverse(h0, hs, a0, g, dA, A2, Dv, d0, s0, u0, y0, w0, B0, C0, lane,
                                        t0 < t_end, MASKED, HAS_D, BT, SHFL, KEEP_DECAY, FAST)
    _add_sums(dbc_pos, t0, t_end, v0, v1, v2, v3, lane, BT, WSUM)
    dD += (y0 * u0 + y1 * u1) + (y2 * u2 + y3 * u3)
    dbias += (dd0 + dd1) + (dd2 + dd3)
    _store4(du_row, t0, sdu_l, own, t_end, du0, du1, du2, du3, BT)
    _store4(dd_row, t0, sdd_l, own, t_end, dd0, dd1, dd2, dd3, BT)
    if HAS_Z:
        _store4(dz_row, t0, sdz_l, own, t_end, dz0, dz1, dz2, dz3, BT)
    return g, dA, dD, dbias


@triton.jit
def _raw4(row, t0, sl, cm, ok, MASKED: tl.constexpr):
    """Positions t0..t0+3 of the rows as loaded ([BT, 4], input dtype); MASKED: 0 where not
    (cm and ok)."""
    offs = tl.arange(0, 4)[None, :]
    if MASKED:
        return tl.load(row[:, None] + (t0 + offs) * sl, mask=cm[:, None] & _mask_and(ok, offs), other=0.0)
    else:
        return tl.load(row[:, None] + (t0 + offs) * sl)


@triton.jit
def _cols4(x, BT: tl.constexpr):
    """[BT, 4] -> its 4 fp32 columns [BT]."""
    e, o = tl.split(tl.reshape(x.to(tl.float32), [BT, 2, 2]))
    c0, c2 = tl.split(e)
    c1, c3 = tl.split(o)
    return c0, c1, c2, c3


@triton.jit
def _sub_forward(h, A2, bias, ur, dr, B0, B1, B2, B3, BT: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
    """Phase 1: the state after 4 full positions (u, delta as loaded: ur, dr; B rows) from the
    state before them."""
    u0, u1, u2, u3 = _cols4(ur, BT)
    r0, r1, r2, r3 = _cols4(dr, BT)
    d0, _s0 = _dt1(r0, bias, True, False, HAS_BIAS, SOFTPLUS, FAST)
    d1, _s1 = _dt1(r1, bias, True, False, HAS_BIAS, SOFTPLUS, FAST)
    d2, _s2 = _dt1(r2, bias, True, False, HAS_BIAS, SOFTPLUS, FAST)
    d3, _s3 = _dt1(r3, bias, True, False, HAS_BIAS, SOFTPLUS, FAST)
    _a, h = _advance(h, A2, d0, d0 * u0, B0, FAST)
    _a, h = _advance(h, A2, d1, d1 * u1, B1, FAST)
    _a, h = _advance(h, A2, d2, d2 * u2, B2, FAST)
    _a, h = _advance(h, A2, d3, d3 * u3, B3, FAST)
    return h


@triton.jit
def _phase1(h, A2, bias, u_row, d_row, b_pos, scratch_row, o0, o1, o2, o3, cm, cm2, s_lo, s_hi, L,
            su_l, sd_l, sB_l, BT: tl.constexpr, MC: tl.constexpr, HAS_BIAS: tl.constexpr,
            SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
    """Store the states entering sub-chunks s_lo..s_hi-1 (h: the first) in the scratch; software-
    pipelined: the next sub-chunk's u, delta and B are loaded before this one's arithmetic. Only
    full sub-chunks are advanced over (the last sub-chunk's end state is not needed); a prefetch
    past them reads the sequence's last 4 positions instead (loaded, not used)."""
    t = s_lo * 4
    ok = s_lo + 1 < s_hi
    nu = _raw4(u_row, t, su_l, cm, ok, True)
    nd = _raw4(d_row, t, sd_l, cm, ok, True)
    okb = _mask_and(ok, o0)
    nB0 = _gather8(b_pos + t * sB_l, o0, o1, o2, o3, okb, True, BT)
    nB1 = _gather8(b_pos + (t + 1) * sB_l, o0, o1, o2, o3, okb, True, BT)
    nB2 = _gather8(b_pos + (t + 2) * sB_l, o0, o1, o2, o3, okb, True, BT)
    nB3 = _gather8(b_pos + (t + 3) * sB_l, o0, o1, o2, o3, okb, True, BT)
    for s in range(s_lo, s_hi - 1):  # (runs only where L > 4, so that L - 4 > 0)
        _scatter8(scratch_row + (s - s_lo) * 16, o0, o1, o2, o3, h, cm2, BT)
        cu, cd, B0, B1, B2, B3 = nu, nd, nB0, nB1, nB2, nB3
        t = tl.minimum((s + 1) * 4, L - 4)
        nu = _raw4(u_row, t, su_l, cm, True, MC)
        nd = _raw4(d_row, t, sd_l, cm, True, MC)
        nB0 = _gather8(b_pos + t * sB_l, o0, o1, o2, o3, cm2, False, BT)
        nB1 = _gather8(b_pos + (t + 1) * sB_l, o0, o1, o2, o3, cm2, False, BT)
        nB2 = _gather8(b_pos + (t + 2) * sB_l, o0, o1, o2, o3, cm2, False, BT)
        nB3 = _gather8(b_pos + (t + 3) * sB_l, o0, o1, o2, o3, cm2, False, BT)
        h = _sub_forward(h, A2, bias, cu, cd, B0, B1, B2, B3, BT, HAS_BIAS, SOFTPLUS, FAST)
    _scatter8(scratch_row + (s_hi - 1 - s_lo) * 16, o0, o1, o2, o3, h, cm2, BT)


# -- the kernel ------------------------------------------------------------------------------------


@triton.jit
def _scan_bwd2_kernel(
    u_ptr, d_ptr, z_ptr, dout_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr, scratch_ptr,
    du_ptr, dd_ptr, dz_ptr, dbc_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, per_group, channels, groups, n_ckpt,
    su_b, su_c, su_l, sd_b, sd_c, sd_l, sz_b, sz_c, sz_l, so_b, so_c, so_l,
    sdu_b, sdu_c, sdu_l, sdd_b, sdd_c, sdd_l, sdz_b, sdz_c, sdz_l,
    sB_b, sB_g, sB_l, sC_b, sC_g, sC_l,
    BT: tl.constexpr, CK: tl.constexpr, EVEN_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    FAST: tl.constexpr, SHFL: tl.constexpr, KEEP_DECAY: tl.constexpr, RELOAD_B: tl.constexpr,
    WSUM: tl.constexpr,
):
    """Grid (groups * blocks per group, batch). Program (blk, b): BT // 2 channels of one group of
    sequence b, walked from the end, two threads per channel. B, C: fp32 with states contiguous;
    dbc: (batch, groups, L, 32) fp32, zeroed; scratch: (batch, channels, CK // 4, 16) fp32;
    ckpt: (batch, channels, n_ckpt, 16) fp32, the state entering every CK-th position; dA
    (batch, channels, 16), dD and dbias (batch, channels): this program's sums."""
    BC: tl.constexpr = BT // 2
    SUB: tl.constexpr = CK // 4
    blocks_per_group = tl.cdiv(per_group, BC)
    g = tl.program_id(0) // blocks_per_group
    row = tl.arange(0, BT)
    cig = (tl.program_id(0) % blocks_per_group) * BC + row // 2
    if EVEN_C:
        cm = cig >= 0
    else:
        cm = cig < per_group
    c = (g * per_group + cig).to(tl.int64)  # [BT]
    half = row % 2
    own = cm & (half == 0)  # the thread that stores a channel's per-position and per-channel values
    b = tl.program_id(1).to(tl.int64)
    MC: tl.constexpr = not EVEN_C
    lane = _lane_of(row, SHFL)
    x = ((lane >> 3) & 3)[:, None]  # the lane order of state vectors
    o0, o1, o2, o3 = _slots((half * 8)[:, None], x)  # offsets of this thread's states in a row of 16
    cm2 = cm[:, None] & (o0 >= 0)
    A2 = _gather8(A2_ptr + c[:, None] * 16, o0, o1, o2, o3, cm2, True, BT)
    bias = tl.load(bias_ptr + c, mask=cm, other=0.0) if HAS_BIAS else None
    Dv = tl.load(D_ptr + c, mask=cm, other=0.0) if HAS_D else None
    u_row = u_ptr + b * su_b + c * su_c
    d_row = d_ptr + b * sd_b + c * sd_c
    z_row = z_ptr + b * sz_b + c * sz_c
    o_row = dout_ptr + b * so_b + c * so_c
    du_row = du_ptr + b * sdu_b + c * sdu_c
    dd_row = dd_ptr + b * sdd_b + c * sdd_c
    dz_row = dz_ptr + b * sdz_b + c * sdz_c
    b_pos = B_ptr + b * sB_b + g * sB_g
    c_pos = C_ptr + b * sC_b + g * sC_g
    dbc_pos = dbc_ptr + (b * groups + g) * L * 32
    scratch_row = scratch_ptr + ((b * channels + c) * SUB)[:, None] * 16  # this channel's rows of 16
    ckpt_row = ckpt_ptr + ((b * channels + c) * n_ckpt)[:, None] * 16
    gcar = tl.zeros([BT, 8], dtype=tl.float32)
    dA = tl.zeros([BT, 8], dtype=tl.float32)
    dD = tl.zeros([BT], dtype=tl.float32)
    dbias = tl.zeros([BT], dtype=tl.float32)
    n_sub_full = L // 4
    for kk in range(0, n_ckpt):
        k = n_ckpt - 1 - kk
        s_lo = k * SUB
        s_hi = tl.minimum(s_lo + SUB, tl.cdiv(L, 4))
        # phase 1: the states entering each sub-chunk of this chunk, into the scratch
        h = _gather8(ckpt_row + k * 16, o0, o1, o2, o3, cm2, True, BT)
        _phase1(h, A2, bias, u_row, d_row, b_pos, scratch_row, o0, o1, o2, o3, cm, cm2, s_lo, s_hi, L,
                su_l, sd_l, sB_l, BT, MC, HAS_BIAS, SOFTPLUS, FAST)
        # phase 2 and the reverse pass, sub-chunk by sub-chunk from the last
        for ss in range(0, s_hi - s_lo):
            s = s_hi - 1 - ss
            hs = _gather8(scratch_row + (s - s_lo) * 16, o0, o1, o2, o3, cm2, True, BT)
            if s < n_sub_full:
                gcar, dA, dD, dbias = _sub_reverse(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_pos, c_pos, dbc_pos, lane, o0, o1, o2, o3, cm, own, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                    MC, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, BT, FAST, SHFL, KEEP_DECAY, RELOAD_B, WSUM)
            else:  # the last, partial sub-chunk
                gcar, dA, dD, dbias = _sub_reverse(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_pos, c_pos, dbc_pos, lane, o0, o1, o2, o3, cm, own, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                    True, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, BT, FAST, SHFL, KEEP_DECAY, RELOAD_B, WSUM)
    _scatter8(dA_ptr + ((b * channels + c) * 16)[:, None], o0, o1, o2, o3, dA, cm2, BT)
    tl.store(dD_ptr + b * channels + c, dD, mask=own)
    tl.store(dbias_ptr + b * channels + c, dbias, mask=own)


# -- host side -----------------------------------------------------------------------------------

# Tuning knobs of this kernel, each readable from the environment so that one GPU run can time
# them side by side (see gpu/measure.sh); the defaults are the predicted best (gpu/scan_notes.md).
KNOBS = {"warps": ("CADUCEUS_BWD2_WARPS", 4), "keep_decay": ("CADUCEUS_BWD2_KEEP_DECAY", 1),
         "reload_b": ("CADUCEUS_BWD2_RELOAD_B", 0), "wsum": ("CADUCEUS_BWD2_WSUM", 1),
         "maxnreg": ("CADUCEUS_BWD2_MAXNREG", 0)}  # maxnreg 0: the compiler's choice


def knobs() -> dict:
    from ...runtime import env_int

    return {name: env_int(var, default) for name, (var, default) in KNOBS.items()}


def scan_backward_v2(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck: int, interpret: bool):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of ``scan_triton.scan_forward``'s y
    from its checkpoints ``ckpt`` (batch, channels, ceil(L / ck), 16), fp32 natural state order."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    k = knobs()
    num_warps = max(1, min(k["warps"], triton.next_power_of_2(triton.cdiv(per_group, 16))))
    B32, C32 = states_last_fp32(B), states_last_fp32(C)
    A2 = (A.float() * LOG2E).contiguous()
    bt = 32 * num_warps
    blocks = groups * triton.cdiv(per_group, bt // 2)
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
    sB, sC = B32.stride(), C32.stride()
    _scan_bwd2_kernel[(blocks, batch)](
        u, delta, zz, dout, A2, B32, C32,
        D.float().contiguous() if D is not None else A2,
        delta_bias.float().contiguous() if delta_bias is not None else A2, ckpt, scratch,
        du, dd, dzz, dbc, dA, dD, dbias,
        length, per_group, channels, groups, ckpt.shape[2],
        *u.stride(), *delta.stride(), *zz.stride(), *dout.stride(),
        *du.stride(), *dd.stride(), *dzz.stride(), sB[0], sB[1], sB[3], sC[0], sC[1], sC[3],
        BT=bt, CK=ck, EVEN_C=per_group % (bt // 2) == 0,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), HAS_D=D is not None, HAS_Z=z is not None,
        FAST=not interpret, SHFL=1 if interpret else 2, KEEP_DECAY=bool(k["keep_decay"]),
        RELOAD_B=bool(k["reload_b"]), WSUM=bool(k["wsum"]), num_warps=num_warps,
        **({"maxnreg": k["maxnreg"]} if k["maxnreg"] and not interpret else {}),
    )
    dB = dbc[..., :16].transpose(-1, -2)
    dC = dbc[..., 16:].transpose(-1, -2)
    return (du, dd, dA.sum(0), dB, dC, dD.sum(0) if D is not None else None, dz,
            dbias.sum(0) if delta_bias is not None else None)
