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

from .jit import LOG2E, _exp2, _ld, _sigmoid_f, _softplus_f, states_last_fp32
from .scan_triton_bwd import _lane_id, _rs8, _rs16, _rsel2, _rsel4

LOG2E_INV = tl.constexpr(0.6931471805599453)  # 1 / log2(e): A = A2 * LOG2E_INV


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
def _pair_sum(x, BT: tl.constexpr, RS: tl.constexpr):
    """x [BT] plus the value of the thread holding the channel's other half (row i ^ 1)."""
    if RS:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 r; shfl.sync.bfly.b32 r, $1, 1, 31, -1; add.f32 $0, $1, r; }",
            "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        p = tl.sum(tl.reshape(x, [BT // 2, 2]), axis=1)
        return tl.reshape(tl.join(p, p), [BT])


@triton.jit
def _halves(x, BT: tl.constexpr, W: tl.constexpr):
    """[BT, 2W] -> its even and odd columns, [BT, W] each (register renaming)."""
    return tl.split(tl.reshape(x, [BT, W, 2]))


@triton.jit
def _channel_sums(vb, vc, lane, BT: tl.constexpr):
    """Reduce-scatter over the 16 channels of a warp: vb, vc [BT, 8] in the lane order -> [BT],
    lane l holding the warp's sum of output :func:`_output_index` (l)."""
    b0, b1 = _halves(vb, BT, 4)  # j: vector bit 1 <-> lane bit 4
    c0, c1 = _halves(vc, BT, 4)
    vb = _rs16(b0, b1)
    vc = _rs16(c0, c1)
    b0, b1 = _halves(vb, BT, 2)  # k: vector bit 0 <-> lane bit 3
    c0, c1 = _halves(vc, BT, 2)
    vb = _rs8(b0, b1)
    vc = _rs8(c0, c1)  # [BT, 2]: element e
    v = _rsel4(vb, vc, lane[:, None])  # B or C <-> lane bit 2
    lo, hi = tl.split(v)
    return _rsel2(lo, hi, lane)  # element <-> lane bit 1


@triton.jit
def _output_index(lane):
    """Which of the 32 (dB then dC, natural state order) values lane ``lane`` holds after
    :func:`_channel_sums`: half = bit 0, vector = bits 4, 3, B/C = bit 2, element = bit 1."""
    return ((lane >> 2) & 1) * 16 + (lane & 1) * 8 + ((lane >> 3) & 3) * 2 + ((lane >> 1) & 1)


@triton.jit
def _add_sums(dbc_row, vb, vc, lane, ok, BT: tl.constexpr, RS: tl.constexpr):
    """Add the sums over this warp's (RS) or program's channels of vb, vc to dbc_row[0:32]."""
    if RS:
        v = _channel_sums(vb, vc, lane, BT)
        j = _output_index(lane)
        tl.atomic_add(dbc_row + j, v, mask=ok & (j >= 0), sem="relaxed")
    else:  # the interpreter: lane order x = 0, tl.sum over the channels of each half
        p = tl.arange(0, 8)
        n = tl.arange(0, 2)[:, None] * 8 + (2 * (2 * (p % 2) + (p // 2) % 2) + p // 4)[None, :]
        sb = tl.sum(tl.reshape(vb, [BT // 2, 2, 8]), axis=0)
        sc = tl.sum(tl.reshape(vc, [BT // 2, 2, 8]), axis=0)
        okn = ok & (n >= 0)
        tl.atomic_add(dbc_row + n, sb, mask=okn, sem="relaxed")
        tl.atomic_add(dbc_row + 16 + n, sc, mask=okn, sem="relaxed")


# -- per-position pieces ----------------------------------------------------------------------------


@triton.jit
def _exp2_again(x, FAST: tl.constexpr):
    """exp2 as :func:`jit._exp2` computes it, written so that the compiler does not merge it with an
    earlier identical one (recomputing a decay costs an exp2 but saves the registers holding it)."""
    if FAST:
        return tl.inline_asm_elementwise("{ ex2.approx.ftz.f32 $0, $1; }", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


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
def _store4(row, t0, sl, m, t_end, c0, c1, c2, c3, MASKED: tl.constexpr, BT: tl.constexpr):
    offs = tl.arange(0, 4)[None, :]
    x = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [BT, 4]).to(row.dtype.element_ty)
    tl.store(row[:, None] + (t0 + offs) * sl, x, mask=m[:, None] & (t0 + offs < t_end))


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
    """(dy, dz / y) of one position."""
    if HAS_Z:
        zs = _sigmoid_f(z, FAST)
        return o * z * zs, o * zs * (1.0 + z * (1.0 - zs))
    else:
        return o, o


@triton.jit
def _advance(h, A2, dt, du, Bt, FAST: tl.constexpr):
    """One forward step: (a, a h + du B) with a = exp2(dt A2)."""
    a = _exp2(dt[:, None] * A2, FAST)
    return a, a * h + du[:, None] * Bt


@triton.jit
def _reverse(h, hp, a, g, dA, A2, Dv, dt, slope, u, dy, w, Bt, Ct, dbc_row, lane, ok,
             MASKED: tl.constexpr, HAS_D: tl.constexpr, BT: tl.constexpr, RS: tl.constexpr,
             KEEP_DECAY: tl.constexpr, FAST: tl.constexpr):
    """The reverse pass at one position t: h = h_t, hp = h_{t-1}, a = a_t, g = a_{t+1} dh_{t+1}.
    Returns (a_t dh_t, dA, du, d delta, dz, dy u, d delta before masking)."""
    dh = dy[:, None] * Ct + g
    ys = _pair_sum(tl.sum(h * Ct, axis=1), BT, RS)
    duB = _pair_sum(tl.sum(dh * Bt, axis=1), BT, RS)
    if not KEEP_DECAY:
        a = _exp2_again(dt[:, None] * A2, FAST)
    g = a * dh
    q = g * hp  # dh_t a_t h_{t-1}: the decay's share
    ddA = _pair_sum(tl.sum(q * A2, axis=1), BT, RS)
    dA = dA + dt[:, None] * q
    _add_sums(dbc_row, (dt * u)[:, None] * dh, dy[:, None] * h, lane, ok, BT, RS)
    du = dt * duB
    if HAS_D:
        ys += Dv * u
        du += Dv * dy
    dz = ys * w
    ddelta = (u * duB + ddA * LOG2E_INV) * slope
    if MASKED:  # past the end: no contribution to the per-channel sums
        ddelta = tl.where(ok, ddelta, 0.0)
    return g, dA, du, ddelta, dz


@triton.jit
def _sub_reverse(hs, g, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                 b_pos, c_pos, dbc_base, lane, o0, o1, o2, o3, cm, own, t0, t_end,
                 su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                 MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr,
                 HAS_Z: tl.constexpr, BT: tl.constexpr, FAST: tl.constexpr, RS: tl.constexpr,
                 KEEP_DECAY: tl.constexpr, RELOAD_B: tl.constexpr):
    """Sub-chunk t0..t0+3 from the state entering it (hs): recompute its 4 states and decays, run
    the reverse pass over them, store du, d(delta), dz (``own``: the thread that stores a channel's
    values); returns the carried (g, dA, dD, dbias)."""
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
    ok0 = (t0 < t_end) & (o0 >= 0)  # block masks (the interpreter does not broadcast scalar masks)
    ok1 = (t0 + 1 < t_end) & (o0 >= 0)
    ok2 = (t0 + 2 < t_end) & (o0 >= 0)
    ok3 = (t0 + 3 < t_end) & (o0 >= 0)
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
    g, dA, du3, dd3, dz3 = _reverse(h3, h2, a3, g, dA, A2, Dv, d3, s3, u3, y3, w3, B3, C3,
                                    dbc_base + (t0 + 3) * 32, lane, t0 + 3 < t_end,
                                    MASKED, HAS_D, BT, RS, KEEP_DECAY, FAST)
    C2 = _gather8(cp0 + 2 * sC_l, o0, o1, o2, o3, ok2, MASKED, BT)
    if RELOAD_B:
        B2 = _gather8(bp0 + 2 * sB_l, o0, o1, o2, o3, ok2, MASKED, BT)
    g, dA, du2, dd2, dz2 = _reverse(h2, h1, a2, g, dA, A2, Dv, d2, s2, u2, y2, w2, B2, C2,
                                    dbc_base + (t0 + 2) * 32, lane, t0 + 2 < t_end,
                                    MASKED, HAS_D, BT, RS, KEEP_DECAY, FAST)
    C1 = _gather8(cp0 + sC_l, o0, o1, o2, o3, ok1, MASKED, BT)
    if RELOAD_B:
        B1 = _gather8(bp0 + sB_l, o0, o1, o2, o3, ok1, MASKED, BT)
    g, dA, du1, dd1, dz1 = _reverse(h1, h0, a1, g, dA, A2, Dv, d1, s1, u1, y1, w1, B1, C1,
                                    dbc_base + (t0 + 1) * 32, lane, t0 + 1 < t_end,
                                    MASKED, HAS_D, BT, RS, KEEP_DECAY, FAST)
    C0 = _gather8(cp0, o0, o1, o2, o3, ok0, MASKED, BT)
    if RELOAD_B:
        B0 = _gather8(bp0, o0, o1, o2, o3, ok0, MASKED, BT)
    g, dA, du0, dd0, dz0 = _reverse(h0, hs, a0, g, dA, A2, Dv, d0, s0, u0, y0, w0, B0, C0,
                                    dbc_base + t0 * 32, lane, t0 < t_end, MASKED, HAS_D, BT, RS, KEEP_DECAY, FAST)
    dD += (y0 * u0 + y1 * u1) + (y2 * u2 + y3 * u3)
    dbias += (dd0 + dd1) + (dd2 + dd3)
    _store4(du_row, t0, sdu_l, own, t_end, du0, du1, du2, du3, MASKED, BT)
    _store4(dd_row, t0, sdd_l, own, t_end, dd0, dd1, dd2, dd3, MASKED, BT)
    if HAS_Z:
        _store4(dz_row, t0, sdz_l, own, t_end, dz0, dz1, dz2, dz3, MASKED, BT)
    return g, dA, dD, dbias


@triton.jit
def _sub_forward(h, A2, bias, u_row, d_row, b_pos, o0, o1, o2, o3, cm, t0, t_end, su_l, sd_l, sB_l,
                 MASKED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 BT: tl.constexpr, FAST: tl.constexpr):
    """Phase 1: the state after positions t0..t0+3 from the state before them."""
    u0, u1, u2, u3 = _load4(u_row, t0, su_l, cm, t_end, MASKED, BT)
    r0, r1, r2, r3 = _load4(d_row, t0, sd_l, cm, t_end, MASKED, BT)
    d0, _s0 = _dt1(r0, bias, t0 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d1, _s1 = _dt1(r1, bias, t0 + 1 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d2, _s2 = _dt1(r2, bias, t0 + 2 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    d3, _s3 = _dt1(r3, bias, t0 + 3 < t_end, MASKED, HAS_BIAS, SOFTPLUS, FAST)
    bp0 = b_pos + t0 * sB_l
    _a, h = _advance(h, A2, d0, d0 * u0, _gather8(bp0, o0, o1, o2, o3, (t0 < t_end) & (o0 >= 0), MASKED, BT), FAST)
    _a, h = _advance(h, A2, d1, d1 * u1, _gather8(bp0 + sB_l, o0, o1, o2, o3, (t0 + 1 < t_end) & (o0 >= 0),
                                                   MASKED, BT), FAST)
    _a, h = _advance(h, A2, d2, d2 * u2, _gather8(bp0 + 2 * sB_l, o0, o1, o2, o3, (t0 + 2 < t_end) & (o0 >= 0),
                                                   MASKED, BT), FAST)
    _a, h = _advance(h, A2, d3, d3 * u3, _gather8(bp0 + 3 * sB_l, o0, o1, o2, o3, (t0 + 3 < t_end) & (o0 >= 0),
                                                   MASKED, BT), FAST)
    return h


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
    FAST: tl.constexpr, RS: tl.constexpr, KEEP_DECAY: tl.constexpr, RELOAD_B: tl.constexpr,
):
    """Grid (groups * blocks per group, batch). Program (blk, b): BT // 2 channels of one group of
    sequence b, walked from the end, two threads per channel. B, C: fp32 with states contiguous;
    dbc: (batch, groups, L, 32) fp32, zeroed; scratch: (batch, channels, CK // 4, 16) fp32;
    ckpt: (batch, channels, n_ckpt, 16) fp32; dA (batch, channels, 16), dD and dbias (batch,
    channels): this program's sums."""
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
    lane = _lane_id(row) if RS else row % 32
    x = ((lane >> 3) & 3)[:, None] if RS else row[:, None] * 0  # the lane order of state vectors
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
    dbc_base = dbc_ptr + (b * groups + g) * L * 32
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
        for s in range(s_lo, s_hi):
            _scatter8(scratch_row + (s - s_lo) * 16, o0, o1, o2, o3, h, cm2, BT)
            if s + 1 < s_hi:  # (only the last sub-chunk can be partial; its end state is not needed)
                h = _sub_forward(h, A2, bias, u_row, d_row, b_pos, o0, o1, o2, o3, cm, s * 4, L, su_l, sd_l, sB_l,
                                 MC, HAS_BIAS, SOFTPLUS, BT, FAST)
        # phase 2 and the reverse pass, sub-chunk by sub-chunk from the last
        for ss in range(0, s_hi - s_lo):
            s = s_hi - 1 - ss
            hs = _gather8(scratch_row + (s - s_lo) * 16, o0, o1, o2, o3, cm2, True, BT)
            if s < n_sub_full:
                gcar, dA, dD, dbias = _sub_reverse(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_pos, c_pos, dbc_base, lane, o0, o1, o2, o3, cm, own, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                    MC, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, BT, FAST, RS, KEEP_DECAY, RELOAD_B)
            else:  # the last, partial sub-chunk
                gcar, dA, dD, dbias = _sub_reverse(
                    hs, gcar, dA, dD, dbias, A2, bias, Dv, u_row, d_row, z_row, o_row, du_row, dd_row, dz_row,
                    b_pos, c_pos, dbc_base, lane, o0, o1, o2, o3, cm, own, s * 4, L,
                    su_l, sd_l, sz_l, so_l, sdu_l, sdd_l, sdz_l, sB_l, sC_l,
                    True, HAS_BIAS, SOFTPLUS, HAS_D, HAS_Z, BT, FAST, RS, KEEP_DECAY, RELOAD_B)
    _scatter8(dA_ptr + ((b * channels + c) * 16)[:, None], o0, o1, o2, o3, dA, cm2, BT)
    tl.store(dD_ptr + b * channels + c, dD, mask=own)
    tl.store(dbias_ptr + b * channels + c, dbias, mask=own)


# -- host side -----------------------------------------------------------------------------------


def scan_backward_v2(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, ck: int,
                     num_warps: int, interpret: bool, keep_decay: bool = True,
                     reload_b: bool = False):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) of ``scan_triton.scan_forward``'s y
    from its checkpoints ``ckpt`` (batch, channels, ceil(L / ck), 16), fp32 natural state order."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
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
        FAST=not interpret, RS=not interpret, KEEP_DECAY=keep_decay, RELOAD_B=reload_b, num_warps=num_warps,
    )
    dB = dbc[..., :16].transpose(-1, -2)
    dC = dbc[..., 16:].transpose(-1, -2)
    return (du, dd, dA.sum(0), dB, dC, dD.sum(0) if D is not None else None, dz,
            dbias.sum(0) if delta_bias is not None else None)
