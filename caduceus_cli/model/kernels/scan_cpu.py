"""Selective scan compiled for the CPU with numba: forward and backward.

Same arguments and result as :func:`caduceus_cli.model.scan.selective_scan_torch`. The forward runs
one (sequence, channel) pair per iteration of a parallel loop and walks the sequence once, keeping
the N states in a small local array, with softplus, the D skip and the SiLU gate fused: memory is
O(batch x channels x length), never x N. The backward recomputes the states chunk by chunk (the
state at each chunk start from a first pass, then CHUNK positions at a time) and walks back once,
one (sequence, group) per iteration so that dB and dC are summed without races.

Compiled on first use and cached on disk in the user's cache (``caduceus_cli.cache``: NUMBA_CACHE_DIR,
else ``<cache root>/numba``), never beside this file; without a writable cache it compiles every run.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy as np
import torch

from caduceus_cli.cache import use_numba_cache  # absolute: the same wherever the kernels' folder is

_CACHE = use_numba_cache()  # sets NUMBA_CACHE_DIR, so it must run before numba is imported

import numba  # noqa: E402

if _CACHE and not numba.config.CACHE_DIR:  # numba was imported earlier, before NUMBA_CACHE_DIR was set
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

CHUNK = 64  # positions whose states the backward holds at once
# numba's default 'workqueue' threading layer aborts the process when two threads launch parallel
# work at once; pipelines may run the model from worker threads, so launches take turns.
_LAUNCH_LOCK = threading.Lock()


@contextlib.contextmanager
def launch():
    """One parallel launch at a time, with the thread count of ``runtime.set_threads`` (numba's
    count is per calling thread), capped at the pool numba started with."""
    from ...runtime import cpu_threads

    with _LAUNCH_LOCK:
        wanted = cpu_threads()
        if wanted is not None:
            numba.set_num_threads(min(wanted, numba.config.NUMBA_NUM_THREADS))
        yield


# Safe fast-math: contraction into FMAs, reassociation of the sum over states, fast exp/log; no
# assumption that values are finite, so NaN and inf propagate as in PyTorch.
_FASTMATH = {"contract", "reassoc", "afn", "arcp", "nsz"}


@numba.njit(inline="always", fastmath=_FASTMATH)
def _softplus(x):
    if x > 20.0:
        return x
    return math.log1p(math.exp(x))


@numba.njit(inline="always", fastmath=_FASTMATH)
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


_LOG2E = np.float32(1.4426950408889634)


@numba.njit(inline="always", fastmath=_FASTMATH)
def _exp2_many(y, p, bits, scale):
    """scale[:] <- 2 ** y[:] (y <= 0 here) without calls into libm, so that LLVM vectorises the
    loops (about 16x faster than scalar expf on AVX2). 2^y = 2^k * 2^f, k = round(y), f in
    [-1/2, 1/2], 2^f by Cephes' exp2f polynomial (relative error ~1e-7); 2^k through the exponent
    bits, y clamped at -126 (2^-126 stands for anything smaller: a decay that small is 0 anyway)."""
    for n in range(y.shape[0]):
        v = max(y[n], np.float32(-126.0))
        k = math.floor(v + np.float32(0.5))
        f = v - k
        p[n] = ((((((np.float32(1.535336188319500e-4) * f + np.float32(1.339887440266574e-3)) * f
                    + np.float32(9.618437357674640e-3)) * f + np.float32(5.550332471162809e-2)) * f
                  + np.float32(2.402264791363012e-1)) * f + np.float32(6.931472028550421e-1)) * f
                + np.float32(1.0))
        bits[n] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for n in range(y.shape[0]):
        scale[n] = p[n] * scale[n]


@numba.njit(inline="always", fastmath=_FASTMATH)
def _advance(h, dt, du, bt, a2, yv, p, bits, decay):
    """One state update in place: h = exp2(dt * a2) * h + du * bt (``decay`` views ``bits``)."""
    for n in range(h.shape[0]):
        yv[n] = dt * a2[n]
    _exp2_many(yv, p, bits, decay)
    for n in range(h.shape[0]):
        h[n] = decay[n] * h[n] + du * bt[n]


@numba.njit(parallel=True, cache=_CACHE, fastmath=_FASTMATH)
def _forward(u, delta, z, A, Bt, Ct, D, bias, out, has_z, has_d, has_bias, softplus):
    """u, delta, z, out: (batch, dim, L) fp32; A: (dim, N); Bt, Ct: (batch, groups, L, N); D, bias: (dim,)."""
    batch, dim = u.shape[0], u.shape[1]
    for job in numba.prange(batch * dim):
        _forward_job(job // dim, job % dim, u, delta, z, A, Bt, Ct, D, bias, out, has_z, has_d, has_bias,
                     softplus)


@numba.njit(cache=_CACHE, fastmath=_FASTMATH)
def _forward_job(b, c, u, delta, z, A, Bt, Ct, D, bias, out, has_z, has_d, has_bias, softplus):
    length = u.shape[2]
    groups, n_state = Bt.shape[1], A.shape[1]
    per_group = u.shape[1] // groups
    g = c // per_group
    h = np.zeros(n_state, dtype=np.float32)
    a2 = A[c] * _LOG2E
    yv = np.empty(n_state, dtype=np.float32)
    p = np.empty(n_state, dtype=np.float32)
    bits = np.empty(n_state, dtype=np.int32)
    decay = bits.view(np.float32)
    bias_c = bias[c] if has_bias else np.float32(0.0)
    d_c = D[c] if has_d else np.float32(0.0)
    for t in range(length):
        dt = delta[b, c, t] + bias_c
        if softplus:
            dt = _softplus(dt)
        uu = u[b, c, t]
        du = dt * uu
        bt = Bt[b, g, t]
        ct = Ct[b, g, t]
        for n in range(n_state):
            yv[n] = dt * a2[n]
        _exp2_many(yv, p, bits, decay)
        y = np.float32(0.0)
        for n in range(n_state):
            hn = decay[n] * h[n] + du * bt[n]
            h[n] = hn
            y += hn * ct[n]
        y += d_c * uu
        if has_z:
            zz = z[b, c, t]
            y *= zz * _sigmoid(zz)
        out[b, c, t] = y


@numba.njit(parallel=True, cache=_CACHE, fastmath=_FASTMATH)
def _backward(dout, u, delta, z, A, Bt, Ct, D, bias, has_z, has_d, has_bias, softplus,
              du, ddelta, dz, dA, dBt, dCt, dD, dbias):
    """Gradients of :func:`_forward`; dA, dD, dbias per sequence (summed by the caller)."""
    batch, groups = u.shape[0], Bt.shape[1]
    for job in numba.prange(batch * groups):
        _backward_job(job // groups, job % groups, dout, u, delta, z, A, Bt, Ct, D, bias, has_z, has_d,
                      has_bias, softplus, du, ddelta, dz, dA, dBt, dCt, dD, dbias)


@numba.njit(cache=_CACHE, fastmath=_FASTMATH)
def _backward_job(b, g, dout, u, delta, z, A, Bt, Ct, D, bias, has_z, has_d, has_bias, softplus,
                  du, ddelta, dz, dA, dBt, dCt, dD, dbias):
    """One (sequence, group): kept out of the parallel loop's body so that numba's parfor pass does
    not take the running sums below for reductions across iterations (it did: wrong dz)."""
    dim, length = u.shape[1], u.shape[2]
    groups, n_state = Bt.shape[1], A.shape[1]
    per_group = dim // groups
    n_chunks = (length + CHUNK - 1) // CHUNK
    starts = np.empty((n_chunks, n_state), dtype=np.float32)
    states = np.empty((CHUNK, n_state), dtype=np.float32)
    h = np.empty(n_state, dtype=np.float32)
    dh = np.empty(n_state, dtype=np.float32)
    yv = np.empty(n_state, dtype=np.float32)
    p = np.empty(n_state, dtype=np.float32)
    bits = np.empty(n_state, dtype=np.int32)
    decay = bits.view(np.float32)
    for c in range(g * per_group, (g + 1) * per_group):
        a_c = A[c]
        a2 = a_c * _LOG2E
        bias_c = bias[c] if has_bias else np.float32(0.0)
        d_c = D[c] if has_d else np.float32(0.0)
        # pass 1: the state entering every chunk
        h[:] = 0.0
        for t in range(length):
            if t % CHUNK == 0:
                starts[t // CHUNK] = h
            dt = delta[b, c, t] + bias_c
            if softplus:
                dt = _softplus(dt)
            _advance(h, dt, dt * u[b, c, t], Bt[b, g, t], a2, yv, p, bits, decay)
        # pass 2: chunks from the end, states recomputed, gradients walked back
        dh[:] = 0.0  # dL/dh_t arriving from position t + 1
        da_acc = np.zeros(n_state, dtype=np.float32)
        dd_acc = np.float32(0.0)
        db_acc = np.float32(0.0)
        for k in range(n_chunks - 1, -1, -1):
            t0 = k * CHUNK
            t1 = min(t0 + CHUNK, length)
            h[:] = starts[k]
            for t in range(t0, t1):
                dt = delta[b, c, t] + bias_c
                if softplus:
                    dt = _softplus(dt)
                _advance(h, dt, dt * u[b, c, t], Bt[b, g, t], a2, yv, p, bits, decay)
                states[t - t0] = h
            for t in range(t1 - 1, t0 - 1, -1):
                raw = delta[b, c, t] + bias_c
                dt = _softplus(raw) if softplus else raw
                uu = u[b, c, t]
                bt = Bt[b, g, t]
                ct = Ct[b, g, t]
                hs = states[t - t0]
                go = dout[b, c, t]
                if has_z:
                    zz = z[b, c, t]
                    sz = _sigmoid(zz)
                    dy = go * zz * sz
                else:
                    dy = go
                y = d_c * uu
                ddt = np.float32(0.0)
                duu = dy * d_c
                for n in range(n_state):
                    yv[n] = dt * a2[n]
                _exp2_many(yv, p, bits, decay)
                for n in range(n_state):
                    y += hs[n] * ct[n]
                    gn = dh[n] + dy * ct[n]
                    a = decay[n]
                    if t > t0:
                        hp = states[t - t0 - 1, n]
                    else:
                        hp = starts[k, n]
                    ddt += gn * (a_c[n] * a * hp + uu * bt[n])
                    duu += gn * dt * bt[n]
                    dBt[b, g, t, n] += gn * dt * uu
                    dCt[b, g, t, n] += dy * hs[n]
                    da_acc[n] += gn * dt * a * hp
                    dh[n] = a * gn
                if has_z:
                    dz[b, c, t] = go * y * sz * (1.0 + zz * (1.0 - sz))
                dd_acc += dy * uu
                if softplus:
                    ddt *= _sigmoid(raw)
                db_acc += ddt
                du[b, c, t] = duu
                ddelta[b, c, t] = ddt
        dA[b, c] = da_acc
        dD[b, c] = dd_acc
        dbias[b, c] = db_acc


def _np(x: torch.Tensor | None, like: torch.Tensor) -> np.ndarray:
    """fp32 numpy view (a copy only when the dtype is not fp32)."""
    if x is None:
        return np.zeros((1,) * like.dim(), dtype=np.float32)
    return x.detach().float().numpy()


def _states_last(x: torch.Tensor) -> torch.Tensor:
    """(batch, groups, N, L) -> fp32 (batch, groups, L, N) contiguous: a position's N values adjacent."""
    return x.detach().float().transpose(-1, -2).contiguous()


def _vec(x: torch.Tensor | None) -> np.ndarray:
    return np.zeros(1, dtype=np.float32) if x is None else x.detach().float().contiguous().numpy()


class SelectiveScanNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        Bt, Ct = _states_last(B), _states_last(C)
        out = torch.empty(u.shape, dtype=torch.float32)
        with launch():
            _forward(_np(u, u), _np(delta, u), _np(z, u), A.detach().float().contiguous().numpy(), Bt.numpy(),
                     Ct.numpy(), _vec(D), _vec(delta_bias), out.numpy(), z is not None, D is not None,
                     delta_bias is not None, bool(delta_softplus))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        batch, dim, length = u.shape
        groups, n_state = B.shape[1], A.shape[1]
        f32 = dict(dtype=torch.float32)
        du, ddelta = torch.empty(u.shape, **f32), torch.empty(u.shape, **f32)
        dz = torch.empty(u.shape, **f32) if z is not None else torch.empty((1, 1, 1), **f32)
        dA = torch.empty(batch, dim, n_state, **f32)
        dBt = torch.zeros(batch, groups, length, n_state, **f32)
        dCt = torch.zeros(batch, groups, length, n_state, **f32)
        dD, dbias = torch.empty(batch, dim, **f32), torch.empty(batch, dim, **f32)
        with launch():
            _backward(_np(dout, u), _np(u, u), _np(delta, u), _np(z, u), A.detach().float().contiguous().numpy(),
                      _states_last(B).numpy(), _states_last(C).numpy(), _vec(D), _vec(delta_bias),
                      z is not None, D is not None, delta_bias is not None, bool(ctx.delta_softplus),
                      du.numpy(), ddelta.numpy(), dz.numpy(), dA.numpy(), dBt.numpy(), dCt.numpy(),
                      dD.numpy(), dbias.numpy())
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype),
                dBt.transpose(-1, -2).to(B.dtype), dCt.transpose(-1, -2).to(C.dtype),
                None if D is None else dD.sum(0).to(D.dtype), None if z is None else dz.to(z.dtype),
                None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype), None)


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same arguments and result as :func:`caduceus_cli.model.scan.selective_scan_torch` (CPU tensors)."""
    if B.dim() == 3:  # one group
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    return SelectiveScanNumba.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
