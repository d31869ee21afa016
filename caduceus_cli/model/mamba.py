"""Mamba mixer, bi-directional wrapper, and the residual add + norm used between blocks.

Parameter names follow mamba-ssm / the official Caduceus code so checkpoints load name by name.
The bi-directional forward runs both directions as one wider scan: the two directions' channels
are concatenated (the kernels treat them as two groups of B/C), so one conv, one scan and one
batched matmul per projection serve both directions, tied or not.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels.flips import flip_add, flip_add_, stack_flip
from .kernels.scan import causal_conv1d, cuda_kernels, resolve_backend, selective_scan, use_cuda_kernel


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.register_parameter("bias", None)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))


def add_norm(x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm | LayerNorm,
             residual_in_fp32: bool, backend: str = "auto",
             flip_channels: bool = False, out_dtype: torch.dtype | None = None,
             reuse_inputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x + residual), x + residual): the pre-norm residual step, computed in fp32.

    x, residual: (..., D). The normalised output has ``out_dtype`` (default x's dtype); the residual
    is fp32 when ``residual_in_fp32`` (or when the incoming residual already is), else x's dtype.
    ``flip_channels`` applies the norm with its weight and bias reversed, which equals flipping the
    channels of x before a normal norm and back after (the statistics ignore channel order).
    ``reuse_inputs`` (no gradients only): the caller will not read x or residual again, so the
    outputs may be written over them (same values, less memory alive at once).
    """
    is_rms = isinstance(norm, RMSNorm)
    weight, bias = norm.weight, norm.bias
    if flip_channels:
        weight = weight.flip(0)
        bias = None if bias is None else bias.flip(0)
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else x.dtype)
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if x.is_cuda and resolve_backend(backend, x.device) == "triton":
        from .kernels.norm_triton import add_norm_triton

        return add_norm_triton(x, residual, weight, bias, norm.eps, is_rms, res_dtype, out_dtype,
                               reuse_inputs=reuse_inputs)
    if use_cuda_kernel("layer_norm", x, backend):
        normed, total = cuda_kernels()["layer_norm"](
            x, weight, bias, residual=residual, eps=norm.eps, prenorm=True,
            residual_in_fp32=residual_in_fp32, is_rms_norm=is_rms,
        )
        return normed.to(out_dtype), total
    if residual is None:
        total = x.float()
    elif (reuse_inputs and residual.dtype == torch.float32 and res_dtype == torch.float32
          and not (torch.is_grad_enabled() and (x.requires_grad or residual.requires_grad))):
        total = residual.add_(x)  # the same fp32 sum as below, without a new buffer
    else:
        total = x.float() + residual.float()
    if is_rms:
        normed = total * torch.rsqrt(total.square().mean(-1, keepdim=True) + norm.eps) * weight.float()
    else:
        normed = F.layer_norm(total, total.shape[-1:], weight.float(), bias.float(), norm.eps)
    return normed.to(out_dtype), total.to(res_dtype)


class Mamba(nn.Module):
    """One Mamba (S6) mixer with mamba-ssm's parameters; ``forward`` runs one direction."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank="auto", dt_min=0.001, dt_max=0.1, dt_init="random", dt_scale=1.0,
                 dt_init_floor=1e-4, conv_bias=True, bias=False, use_fast_path=True,
                 layer_idx=None, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **kw)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **kw)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **kw)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)
        # S4D-real initialisation of A and the dt bias, as mamba-ssm does.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, dt_init_std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
            dt = torch.exp(torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def forward(self, hidden: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """hidden: (B, L, d_model) -> (B, L, d_model), causal along L."""
        return mamba_directions(hidden, [(self, False)], backend)[0]


def _stacked(mixers: list[Mamba], name: str) -> torch.Tensor:
    """One weight of every direction, stacked on a leading dimension: (k, ...)."""
    mods = name.split(".")
    tensors = []
    for m in mixers:
        t = m
        for attr in mods:
            t = getattr(t, attr)
        tensors.append(t)
    return torch.stack(tensors)


def _directions_stacked(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]], backend: str = "auto",
                        conjugate: bool = False, inference: bool = False) -> list[torch.Tensor]:
    """Run one mixer per direction over ``hidden`` as a single scan of k * d_inner channels.

    hidden: (B, L, d_model). ``directions``: (mixer, reversed) pairs; a reversed mixer reads
    ``hidden`` flipped along L. Returns each mixer's output (B, L, d_model) in the order it read
    its input (a reversed mixer's output is still reversed), as a strided view. ``conjugate`` runs every mixer with its d_model channels reversed, i.e. computes
    ``flip_C(m(flip_C(x)))`` by reversing in_proj's input columns and out_proj's output rows: this is
    how a Caduceus-PS block works on a strand held in the flipped frame (see caduceus.py).

    Directions live on a leading stack dimension and every activation is produced by a batched
    matmul directly in the (k, channels, B*L) layout the kernels read, so nothing wide is ever
    transposed or flipped: only the d_model-wide input and output of a reversed direction are.
    """
    mixers = [m for m, _ in directions]
    k, first = len(mixers), mixers[0]
    di, r, n = first.d_inner, first.dt_rank, first.d_state
    b, length, _ = hidden.shape
    reversed_ = [rev for _, rev in directions]
    if reversed_ == [False, True]:
        stacked_in = stack_flip(hidden, backend)
    elif len(set(reversed_)) == 1:
        stacked_in = (hidden.flip(1) if reversed_[0] else hidden).unsqueeze(0).expand(k, -1, -1, -1)
    else:
        raise ValueError(f"directions must all read the same way, or forward then reversed; got {reversed_}")
    tokens = stacked_in.reshape(k, b * length, -1).transpose(1, 2)  # (k, d_model, B*L)
    del stacked_in
    w_in = _stacked(mixers, "in_proj.weight")  # (k, 2*di, d_model)
    if conjugate:
        w_in = w_in.flip(2)
    x = torch.bmm(w_in[:, :di], tokens)  # (k, di, B*L)
    if first.in_proj.bias is not None:
        bias_in = _stacked(mixers, "in_proj.bias")
        x = x + bias_in[:, :di, None]

    def channels_view(t: torch.Tensor) -> torch.Tensor:  # (k, di, B*L) -> (B, k*di, L), no copy
        return t.reshape(k * di, b, length).permute(1, 0, 2)

    def stack_view(t: torch.Tensor) -> torch.Tensor:  # (B, k*di, L) -> (k, di, B*L)
        return t.permute(1, 0, 2).reshape(k, di, b * length)

    conv_w = torch.cat([m.conv1d.weight.squeeze(1) for m in mixers])
    conv_b = None if first.conv1d.bias is None else torch.cat([m.conv1d.bias for m in mixers])
    u = causal_conv1d(channels_view(x), conv_w, conv_b, activation="silu", backend=backend)
    del x  # inference: its memory takes delta below
    x_dbl = torch.bmm(_stacked(mixers, "x_proj.weight"), stack_view(u))  # (k, r + 2n, B*L)
    delta = torch.bmm(_stacked(mixers, "dt_proj.weight"), x_dbl[:, :r])  # (k, di, B*L)
    Bm = x_dbl[:, r:r + n].reshape(k, n, b, length).permute(2, 0, 1, 3)  # (B, k, n, L)
    Cm = x_dbl[:, r + n:].reshape(k, n, b, length).permute(2, 0, 1, 3)
    if k == 1:
        Bm, Cm = Bm[:, 0], Cm[:, 0]
    A = -torch.exp(torch.cat([m.A_log for m in mixers]).float())
    D = torch.cat([m.D for m in mixers]).float()
    delta_bias = torch.cat([m.dt_proj.bias for m in mixers]).float()
    del x_dbl
    # z only now, so that it is not alive during the convolution
    z = torch.bmm(w_in[:, di:], tokens)
    if first.in_proj.bias is not None:
        z = z + bias_in[:, di:, None]
    del tokens
    z = channels_view(z)
    # In inference the Triton scan writes y over z (each position's z is read before y is written).
    y = selective_scan(u, channels_view(delta), A, Bm, Cm, D, z, delta_bias, delta_softplus=True,
                       backend=backend, out=z if inference else None)
    del u, delta, z
    w_out = _stacked(mixers, "out_proj.weight")  # (k, d_model, di)
    if conjugate:
        w_out = w_out.flip(1)
    # (k, d_model, B*L): the gradient this hands the scan is then contiguous along L, as its
    # backward kernel needs; the (B, L, d_model) outputs are transposed views of it.
    out = torch.bmm(w_out, stack_view(y))
    if first.out_proj.bias is not None:
        b_out = _stacked(mixers, "out_proj.bias")
        out = out + (b_out.flip(1) if conjugate else b_out)[:, :, None]
    return list(out.transpose(1, 2).reshape(k, b, length, -1).unbind(0))




def inference_version() -> int:
    """How a bi-directional layer runs without gradients on the Triton backend: ``CADUCEUS_INFER=1``
    flips the input and output of the reverse direction (:func:`mamba_flip_sum`, also what every
    other backend runs: their reverse scans would flip more), 2 (default) reads the sequence from
    its end instead (:func:`mamba_bidirectional_sum`)."""
    from ..runtime import env_int

    return env_int("CADUCEUS_INFER", 2, minimum=1)


def _inference(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]]) -> bool:
    return not torch.is_grad_enabled() or not (
        hidden.requires_grad or any(p.requires_grad for m, _ in directions for p in m.parameters()))


# Inference runs the directions one at a time over slices of the batch of at most this many
# (sequences x length x d_inner) elements, so that the mixer's transient tensors (about four of
# that size) stay under the official implementation's, which runs one direction and one strand at
# a time; big slices keep the kernels as efficient as one launch.
_SLICE_ELEMENTS = {"cuda": 1 << 27, "cpu": 1 << 24}


def _slice_size(hidden: torch.Tensor, d_inner: int) -> int:
    """Sequences per inference slice: equal slices under the device's element budget."""
    b, length, _ = hidden.shape
    budget = _SLICE_ELEMENTS.get(hidden.device.type, 1 << 24)
    per = max(1, min(b, budget // max(1, length * d_inner)))
    return -(-b // -(-b // per))  # equal slices: ceil(b / number of slices)


def _direction_pieces(hidden: torch.Tensor, mixer: Mamba, reversed_: bool, backend: str, conjugate: bool):
    """Inference: one direction over slices of the batch; yields (first row, output rows)."""
    b = hidden.shape[0]
    per = _slice_size(hidden, mixer.d_inner)
    for s0 in range(0, b, per):
        piece = hidden if per >= b else hidden[s0:s0 + per]
        yield s0, _directions_stacked(piece, [(mixer, reversed_)], backend, conjugate, inference=True)[0]


def mamba_directions(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]], backend: str = "auto",
                     conjugate: bool = False) -> list[torch.Tensor]:
    """Run one mixer per direction over ``hidden``.

    hidden: (B, L, d_model). ``directions``: (mixer, reversed) pairs; a reversed mixer reads
    ``hidden`` flipped along L. Returns each mixer's output (B, L, d_model) in the order it read
    its input (a reversed mixer's output is still reversed). ``conjugate`` runs every mixer with its
    d_model channels reversed, i.e. computes ``flip_C(m(flip_C(x)))`` by reversing in_proj's input
    columns and out_proj's output rows: this is how a Caduceus-PS block works on a strand held in
    the flipped frame (see caduceus.py).

    Training runs all directions as one scan of k * d_inner channels (:func:`_directions_stacked`:
    one conv, one scan and one batched matmul per projection). Inference (no gradient) runs them
    one direction and one slice of the batch at a time, which computes the same values with far
    less memory alive at once.
    """
    if not _inference(hidden, directions):
        return _directions_stacked(hidden, directions, backend, conjugate)
    b, length, _ = hidden.shape
    outs = []
    for mixer, rev in directions:
        out = None
        for s0, piece in _direction_pieces(hidden, mixer, rev, backend, conjugate):
            if piece.shape[0] == b:
                out = piece
                break
            if out is None:
                out = hidden.new_empty((b, length, piece.shape[-1]), dtype=piece.dtype)
            out[s0:s0 + piece.shape[0]] = piece
            del piece
        outs.append(out)
    return outs


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of x runs in (the autocast dtype where autocast is on)."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _direction_rows(mixer: Mamba, x: torch.Tensor, z: torch.Tensor, tokens_shape: tuple[int, int],
                    reverse: bool, backend: str, conjugate: bool, out: torch.Tensor, accumulate: bool) -> None:
    """Inference: one direction of a mixer from its in_proj outputs x, z (d_inner, B*L), read from
    the last position when ``reverse``; writes (or with ``accumulate`` adds) its output rows
    (B*L, d_model) into ``out`` in the input's position order. x and z are only read."""
    b, length = tokens_shape
    di, r, n = mixer.d_inner, mixer.dt_rank, mixer.d_state
    dtype = out.dtype
    u = causal_conv1d(x.view(di, b, length).permute(1, 0, 2), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias,
                      activation="silu", backend=backend, reverse=reverse)  # (B, di, L), x's strides
    u_rows = u.permute(1, 0, 2).reshape(di, b * length)
    x_dbl = torch.mm(mixer.x_proj.weight.to(dtype), u_rows)  # (r + 2n, B*L)
    delta = torch.mm(mixer.dt_proj.weight.to(dtype), x_dbl[:r]).view(di, b, length).permute(1, 0, 2)
    Bm = x_dbl[r:r + n].view(n, b, length).permute(1, 0, 2)
    Cm = x_dbl[r + n:].view(n, b, length).permute(1, 0, 2)
    zv = z.view(di, b, length).permute(1, 0, 2)
    y = selective_scan(u, delta, -torch.exp(mixer.A_log.float()), Bm, Cm, mixer.D.float(), zv,
                       mixer.dt_proj.bias.float(), delta_softplus=True, backend=backend, out=u, reverse=reverse)
    del u, delta, x_dbl
    w_out = mixer.out_proj.weight.to(dtype)
    if conjugate:
        w_out = w_out.flip(0)
    y_rows = y.permute(1, 0, 2).reshape(di, b * length)
    if accumulate:
        out.addmm_(y_rows.t(), w_out.t())
    else:
        torch.mm(y_rows.t(), w_out.t(), out=out)
    if mixer.out_proj.bias is not None:
        out += (mixer.out_proj.bias.flip(0) if conjugate else mixer.out_proj.bias).to(dtype)


def _in_proj(mixer: Mamba, tokens: torch.Tensor, conjugate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, z) = in_proj(tokens) as two (d_inner, B*L) tensors; tokens (B*L, d_model)."""
    w = mixer.in_proj.weight.to(tokens.dtype)
    if conjugate:
        w = w.flip(1)
    di = mixer.d_inner
    x, z = torch.mm(w[:di], tokens.t()), torch.mm(w[di:], tokens.t())
    if mixer.in_proj.bias is not None:
        bias = mixer.in_proj.bias.to(tokens.dtype)
        x, z = x + bias[:di, None], z + bias[di:, None]
    return x, z


def mamba_bidirectional_sum(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]], backend: str = "auto",
                            conjugate: bool = False) -> torch.Tensor:
    """Inference only: what :func:`mamba_flip_sum` computes, without flipping anything: the
    reverse-reading direction runs its convolution and scan from the last position of the
    unflipped sequence (so its output rows come out in the input's order), each direction's
    out_proj writes (B*L, d_model) rows directly, the second adding into the first's (the sum in
    the matmul), and with tied in_proj weights the in_proj runs once for both directions."""
    (first, rev0), (second, rev1) = directions
    b, length, d = hidden.shape
    dtype = _matmul_dtype(hidden)
    total = torch.empty(b, length, d, device=hidden.device, dtype=dtype)
    shared = (first.in_proj.weight is second.in_proj.weight and first.in_proj.bias is second.in_proj.bias
              and first.d_inner == second.d_inner)
    per = _slice_size(hidden, first.d_inner)
    for s0 in range(0, b, per):
        piece = hidden[s0:s0 + per]
        bs = piece.shape[0]
        tokens = piece.reshape(bs * length, d).to(dtype)
        rows = total[s0:s0 + bs].view(bs * length, d)
        x, z = _in_proj(first, tokens, conjugate)
        if shared:  # the same input, unflipped: the same x and z
            x2, z2 = x, z
        else:
            x2, z2 = _in_proj(second, tokens, conjugate)
        del tokens
        _direction_rows(first, x, z, (bs, length), rev0, backend, conjugate, rows, accumulate=False)
        del x, z
        _direction_rows(second, x2, z2, (bs, length), rev1, backend, conjugate, rows, accumulate=True)
        del x2, z2
    return total


def mamba_flip_sum(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]], backend: str = "auto",
                   conjugate: bool = False) -> torch.Tensor:
    """Inference only: ``outs[0] + outs[1].flip(1)`` for ``outs = mamba_directions(...)`` with a
    forward-reading and a reverse-reading direction, the same values, with the second direction's
    slices added into one (B, L, d_model) buffer as they come (two such tensors fewer alive)."""
    (first, rev0), (second, rev1) = directions
    b, length, _ = hidden.shape
    total = None
    for s0, piece in _direction_pieces(hidden, first, rev0, backend, conjugate):
        if total is None:
            total = hidden.new_empty((b, length, piece.shape[-1]), dtype=piece.dtype)
        total[s0:s0 + piece.shape[0]] = piece
        del piece
    for s0, piece in _direction_pieces(hidden, second, rev1, backend, conjugate):
        flip_add_(total[s0:s0 + piece.shape[0]], piece, backend)
        del piece
    return total


def _cpu_channels_last(hidden: torch.Tensor, directions: list[tuple[Mamba, bool]], backend: str) -> bool:
    """Whether this pass runs as CPU inference with the numba kernels in the channels-last layout
    (``kernels/mixer_cpu.py``): no gradient, on the CPU, backend numba, d_inner a multiple of 16."""
    if hidden.device.type != "cpu" or not _inference(hidden, directions):
        return False
    if resolve_backend(backend, hidden.device) != "numba":
        return False
    from .kernels.mixer_cpu import supports

    return supports([m for m, _ in directions])


class BiMambaWrapper(nn.Module):
    """Forward Mamba plus a Mamba over the reversed sequence, combined by add or ew_multiply."""

    def __init__(self, d_model: int, bidirectional: bool = True, bidirectional_strategy: str = "add",
                 bidirectional_weight_tie: bool = True, **mamba_kwargs):
        super().__init__()
        self.bidirectional = bidirectional
        self.bidirectional_strategy = bidirectional_strategy
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = None
        if bidirectional:
            self.mamba_rev = Mamba(d_model, **mamba_kwargs)
            if bidirectional_weight_tie:
                self.mamba_rev.in_proj.weight = self.mamba_fwd.in_proj.weight
                self.mamba_rev.in_proj.bias = self.mamba_fwd.in_proj.bias
                self.mamba_rev.out_proj.weight = self.mamba_fwd.out_proj.weight
                self.mamba_rev.out_proj.bias = self.mamba_fwd.out_proj.bias

    def forward(self, hidden: torch.Tensor, backend: str = "auto", conjugate: bool = False) -> torch.Tensor:
        """hidden: (B, L, d_model) -> (B, L, d_model).

        ``conjugate`` computes ``rc(self(rc(hidden)))`` (rc: flip length and channels) without
        flipping anything wide: reversing the sequence turns the forward mixer into a reverse-
        direction one and vice versa, and the channel flip moves into in_proj/out_proj.
        """
        fwd, rev = self.mamba_fwd, self.mamba_rev
        if conjugate:
            directions = [(fwd, True)] if rev is None else [(rev, False), (fwd, True)]
        else:
            directions = [(fwd, False)] if rev is None else [(fwd, False), (rev, True)]
        if _cpu_channels_last(hidden, directions, backend):
            from .kernels.mixer_cpu import mixer_inference

            return mixer_inference(hidden, directions, conjugate, self.bidirectional_strategy)
        if (len(directions) == 2 and self.bidirectional_strategy == "add" and directions[1][1]
                and not directions[0][1] and _inference(hidden, directions)):
            if inference_version() == 2 and hidden.is_cuda and resolve_backend(backend, hidden.device) == "triton":
                return mamba_bidirectional_sum(hidden, directions, backend, conjugate)
            return mamba_flip_sum(hidden, directions, backend, conjugate)
        outs = mamba_directions(hidden, directions, backend, conjugate=conjugate)
        if len(outs) == 1:
            return outs[0].flip(1) if directions[0][1] else outs[0]
        if self.bidirectional_strategy == "add":
            return flip_add(outs[0], outs[1], backend)  # the second direction read the sequence reversed
        return outs[0] * outs[1].flip(1)
