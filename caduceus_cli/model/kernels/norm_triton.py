"""Residual add + RMSNorm / LayerNorm in Triton, forward and backward (the `triton` backend's
``add_norm``; same values as the PyTorch path in ``mamba.add_norm``).

Forward, one program per block of rows (a row = one position's d_model channels, all in registers):
total = x + residual in fp32, written once as the new residual (fp32 or the input dtype); the
normalised row, scaled (and shifted), written in x's dtype; 1/rms (and the mean for LayerNorm) kept
per row for the backward. Backward, a fixed number of programs each walking many row blocks:
d total = d residual_out + rstd * (g - mean(g) - x_hat * mean(g * x_hat)) with g = d y * w (the mean
of g only for LayerNorm), written once per input that needs it; d w and d b as per-program partial
sums (added up by the caller). Inputs may have any strides along rows and channels as long as the
leading dimensions fold into one row index.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _add_norm_fwd_kernel(x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, res_ptr, rstd_ptr, mean_ptr,
                         M, D, sx_m, sx_d, sr_m, sr_d, eps,
                         HAS_RES: tl.constexpr, IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr,
                         STORE_RES: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    rows1 = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
    rows64 = rows1[:, None]
    cols = tl.arange(0, BD)[None, :]
    rm = rows64 < M
    m = rm & (cols < D)
    x = tl.load(x_ptr + rows64 * sx_m + cols * sx_d, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(r_ptr + rows64 * sr_m + cols * sr_d, mask=m, other=0.0).to(tl.float32)
    if STORE_RES:
        tl.store(res_ptr + rows64 * D + cols, x.to(res_ptr.dtype.element_ty), mask=m)
    if IS_RMS:
        xc = x
    else:
        mean = tl.sum(x, axis=1) / D
        xc = tl.where(m, x - mean[:, None], 0.0)
        tl.store(mean_ptr + rows1, mean, mask=rows1 < M)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    tl.store(rstd_ptr + rows1, rstd, mask=rows1 < M)
    y = xc * rstd[:, None] * tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows64 * D + cols, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _add_norm_bwd_kernel(res_ptr, w_ptr, rstd_ptr, mean_ptr, dy_ptr, dres_ptr, dx_ptr, dr_ptr, dw_ptr, db_ptr,
                         M, D, sdy_m, sdy_d, blocks_per_program,
                         IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DRES: tl.constexpr,
                         STORE_DR: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    """Program p handles row blocks p * blocks_per_program ...; dw/db partials in row p."""
    pid = tl.program_id(0)
    cols1 = tl.arange(0, BD)
    cols = cols1[None, :]
    cm = cols < D
    w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    dw = tl.zeros([BD], dtype=tl.float32)
    db = tl.zeros([BD], dtype=tl.float32)
    for i in range(0, blocks_per_program):
        rows = (pid * blocks_per_program + i) * BM + tl.arange(0, BM)[:, None]
        rm = rows < M
        m = rm & cm
        rows64 = rows.to(tl.int64)
        x = tl.load(res_ptr + rows64 * D + cols, mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows64, mask=rm, other=0.0)
        if IS_RMS:
            xhat = x * rstd
        else:
            xhat = tl.where(m, (x - tl.load(mean_ptr + rows64, mask=rm, other=0.0)) * rstd, 0.0)
        dy = tl.load(dy_ptr + rows64 * sdy_m + cols * sdy_d, mask=m, other=0.0).to(tl.float32)
        g = dy * w
        c1 = tl.sum(g * xhat, axis=1)[:, None] / D
        if IS_RMS:
            dx = (g - xhat * c1) * rstd
        else:
            c2 = tl.sum(g, axis=1)[:, None] / D
            dx = (g - c2 - xhat * c1) * rstd
        if HAS_DRES:
            dx += tl.load(dres_ptr + rows64 * D + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(dx_ptr + rows64 * D + cols, dx.to(dx_ptr.dtype.element_ty), mask=m)
        if STORE_DR:
            tl.store(dr_ptr + rows64 * D + cols, dx.to(dr_ptr.dtype.element_ty), mask=m)
        dw += tl.sum(dy * xhat, axis=0)
        if HAS_BIAS:
            db += tl.sum(dy, axis=0)
    tl.store(dw_ptr + pid * D + cols1, dw, mask=cols1 < D)
    if HAS_BIAS:
        tl.store(db_ptr + pid * D + cols1, db, mask=cols1 < D)


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(tensor, row stride, channel stride) of t (..., D) read as (rows, D): t itself when its
    leading dimensions fold into one row index, else a contiguous copy."""
    if t.dim() == 2:
        return t, t.stride(0), t.stride(1)
    shape, strides = t.shape[:-1], t.stride()[:-1]
    for i in range(len(shape) - 1):
        if shape[i] > 1 and strides[i] != strides[i + 1] * shape[i + 1]:
            t = t.contiguous()
            return t, t.stride(-2), 1
    return t, strides[-1] if len(shape) else 0, t.stride(-1)


def _block(d: int) -> tuple[int, int, int]:
    """(rows per block, padded channels, warps): about 4096 fp32 values per program."""
    bd = triton.next_power_of_2(d)
    bm = max(1, min(64, 4096 // bd))
    return bm, bd, 4 if bd <= 1024 else 8


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count if torch.cuda.is_available() else 4


def _forward(x, residual, weight, bias, eps, is_rms, res_dtype, out_dtype, y=None, res=None, store_res=True):
    """Run the forward kernel: (y, res, rstd, mean). ``y`` / ``res``: buffers to write into (None:
    new ones; x and residual themselves are allowed, every element is read before it is written);
    without ``store_res`` nothing is written as the residual (the caller reuses x)."""
    d = x.shape[-1]
    x2, sx_m, sx_d = _rows(x)
    r2, sr_m, sr_d = _rows(residual) if residual is not None else (x2, 0, 0)
    rows = x.numel() // d
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device) if y is None else y
    if store_res and res is None:
        res = torch.empty(x.shape, dtype=res_dtype, device=x.device)
    rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
    mean = torch.empty(rows if not is_rms else 1, dtype=torch.float32, device=x.device)
    bm, bd, warps = _block(d)
    _add_norm_fwd_kernel[(max(1, triton.cdiv(rows, bm)),)](
        x2, r2, weight, bias if bias is not None else weight, y, res if store_res else y, rstd, mean,
        rows, d, sx_m, sx_d, sr_m, sr_d, eps,
        HAS_RES=residual is not None, IS_RMS=is_rms, HAS_BIAS=bias is not None, STORE_RES=store_res,
        BM=bm, BD=bd, num_warps=warps)
    return y, res, rstd, mean


class AddNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, is_rms, res_dtype, out_dtype):
        y, res, rstd, mean = _forward(x, residual, weight, bias, eps, is_rms, res_dtype, out_dtype)
        ctx.save_for_backward(res, weight, rstd, mean)
        ctx.has_bias, ctx.is_rms = bias is not None, is_rms
        ctx.dtypes = (x.dtype, None if residual is None else residual.dtype)
        return y, res

    @staticmethod
    def backward(ctx, dy, dres):
        res, weight, rstd, mean = ctx.saved_tensors
        d = res.shape[-1]
        rows = res.numel() // d
        x_dtype, r_dtype = ctx.dtypes
        if dy is None:
            dy = torch.zeros_like(res, dtype=x_dtype)
        dy2, sdy_m, sdy_d = _rows(dy)
        dres = dres.contiguous() if dres is not None else None
        bm, bd, warps = _block(d)
        n_blocks = max(1, triton.cdiv(rows, bm))
        programs = min(n_blocks, 4 * _sm_count(res.device.index or 0))
        per = triton.cdiv(n_blocks, programs)
        programs = triton.cdiv(n_blocks, per)
        dx = torch.empty(res.shape, dtype=x_dtype, device=res.device)
        store_dr = r_dtype is not None and r_dtype != x_dtype
        dr = torch.empty(res.shape, dtype=r_dtype, device=res.device) if store_dr else dx
        dw = torch.empty(programs, d, dtype=torch.float32, device=res.device)
        db = torch.empty(programs, d, dtype=torch.float32, device=res.device) if ctx.has_bias else dw
        _add_norm_bwd_kernel[(programs,)](
            res, weight, rstd, mean, dy2, dres if dres is not None else res, dx, dr, dw, db,
            rows, d, sdy_m, sdy_d, per,
            IS_RMS=ctx.is_rms, HAS_BIAS=ctx.has_bias, HAS_DRES=dres is not None, STORE_DR=store_dr,
            BM=bm, BD=bd, num_warps=warps)
        dweight = dw.sum(0).to(weight.dtype)
        dbias = db.sum(0).to(weight.dtype) if ctx.has_bias else None
        return dx, (dr if r_dtype is not None else None), dweight, dbias, None, None, None, None


def _dense(t: torch.Tensor | None) -> bool:
    return t is not None and t.is_contiguous()


def add_norm_triton(x, residual, weight, bias, eps: float, is_rms: bool, res_dtype: torch.dtype,
                    out_dtype: torch.dtype | None = None, reuse_inputs: bool = False):
    """(norm(x + residual) in out_dtype (default x's), x + residual in res_dtype), the sum and
    statistics in fp32.

    x, residual: (..., D) any strides; weight, bias: (D,) (bias None for RMSNorm).
    Without gradients, ``reuse_inputs`` lets the outputs take the inputs' memory where dtype and
    layout allow (the residual over ``residual``, the normalised output over ``x``): the caller
    promises not to read them again. With no residual and res_dtype x's, the residual returned is
    x itself (the same values) instead of a copy."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, residual, weight, bias))
    if needs_grad:
        return AddNormTriton.apply(x, residual, weight, bias, float(eps), bool(is_rms), res_dtype, out_dtype)
    reuse_x = residual is None and res_dtype == x.dtype
    res = residual if (reuse_inputs and _dense(residual) and residual.dtype == res_dtype) else None
    y = x if (reuse_inputs and not reuse_x and _dense(x) and x.dtype == out_dtype) else None
    y, res, _, _ = _forward(x, residual, weight, bias, float(eps), bool(is_rms), res_dtype, out_dtype,
                            y=y, res=res, store_res=not reuse_x)
    return y, (x if reuse_x else res)
