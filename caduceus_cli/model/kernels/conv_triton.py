"""Causal depthwise convolution of width 4 in Triton, with optional SiLU: forward and backward.

Same math as :func:`caduceus_cli.model.kernels.scan.causal_conv1d_torch`; x (B, D, L) with any
strides, the output written with x's strides.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit import _sigmoid

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
        out = torch.empty_like(x)
        _conv_fwd_kernel[_conv_grid(x)](x, w, bias if bias is not None else w, out, x.shape[2], x.shape[1],
                                        *x.stride(), *out.stride(), HAS_BIAS=bias is not None, SILU=bool(silu),
                                        BC=_CONV_BC, BLT=_CONV_BLT, REV=True, num_warps=4)
        return out
    return CausalConvTriton.apply(x, weight, bias, bool(silu))
