"""Selective scan and causal depthwise convolution: one dispatcher, several backends.

Both functions take the same arguments as mamba-ssm's ``selective_scan_fn`` and causal-conv1d's
``causal_conv1d_fn``. Backends (``--backend``):

- ``triton``: this package's Triton kernels (``scan_triton.py``, ``scan_triton_bwd.py``,
  ``conv_triton.py``), forward and backward, CUDA only.
  Triton ships with every CUDA build of PyTorch, so nothing needs compiling.
- ``numba``: a compiled CPU scan (``scan_cpu.py``), forward and backward.
- ``torch``: the plain-PyTorch twin below, everywhere (the reference the kernels are tested against).
- ``mamba-ssm`` (alias ``cuda``): mamba-ssm's and causal-conv1d's CUDA kernels, for comparison.
- ``auto``: triton on CUDA, numba on CPU, else torch.

The PyTorch scan is vectorised: the recurrence is solved by recursive pairwise doubling, O(L) work
in O(log L) tensor operations.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ...choices import BACKENDS  # the one list, also read by the command line
from ...runtime import env_flag, env_int
_ALIASES = {"cuda": "mamba-ssm"}
# Elements of one (batch, channels, length, state) block of the PyTorch scan; bounds its memory
# (about eight fp32 tensors of this size are alive at once): 32 MiB each on CPU, 256 MiB on GPU.
_DEFAULT_BLOCK = {"cpu": 1 << 23, "cuda": 1 << 26}


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> dict:
    """The importable mamba-ssm kernels: {'selective_scan': fn|None, 'causal_conv1d': fn|None, 'layer_norm': fn|None}."""
    found: dict = {"selective_scan": None, "causal_conv1d": None, "layer_norm": None}
    if not torch.cuda.is_available():
        return found
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        found["selective_scan"] = selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        pass
    try:
        from causal_conv1d import causal_conv1d_fn

        found["causal_conv1d"] = causal_conv1d_fn
    except Exception:  # noqa: BLE001
        pass
    try:
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn

        found["layer_norm"] = layer_norm_fn
    except Exception:  # noqa: BLE001
        pass
    return found


@functools.lru_cache(maxsize=None)
def triton_kernels():
    """The module of this package's Triton kernels, or None (no CUDA, or Triton does not import)."""
    if not torch.cuda.is_available() and not env_flag("TRITON_INTERPRET"):
        return None
    try:
        from . import scan_triton
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return scan_triton


@functools.lru_cache(maxsize=None)
def numba_kernels():
    """The module of the compiled CPU scan, or None when numba does not import."""
    try:
        from . import scan_cpu
    except Exception:  # noqa: BLE001
        return None
    return scan_cpu


def _error(message: str):
    from ...errors import CaduceusError

    return CaduceusError(message)


def resolve_backend(backend: str, device: torch.device | str | None) -> str:
    """The backend that will run on ``device``: 'triton', 'numba', 'torch' or 'mamba-ssm'.

    'auto' picks triton on CUDA (mamba-ssm when Triton is unusable), numba on CPU, else torch.
    A backend named explicitly that cannot run there is an error saying what to do."""
    if backend not in BACKENDS:
        raise _error(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    name = _ALIASES.get(backend, backend)
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda:
            if triton_kernels() is not None:
                return "triton"
            return "mamba-ssm" if cuda_kernels()["selective_scan"] is not None else "torch"
        return "numba" if device.type == "cpu" and numba_kernels() is not None else "torch"
    if name == "triton" and not (cuda and triton_kernels() is not None):
        raise _error("backend 'triton' needs a CUDA device and Triton (it comes with CUDA builds of torch): "
                     "use --backend auto, or --backend numba / torch on the CPU")
    if name == "numba" and not (device.type == "cpu" and numba_kernels() is not None):
        raise _error("backend 'numba' runs on the CPU and needs numba: `pip install numba`, "
                     "or use --backend auto" if device.type == "cpu" else
                     "backend 'numba' runs on the CPU only: use --backend auto (triton) on a GPU")
    if name == "mamba-ssm" and not (cuda and cuda_kernels()["selective_scan"] is not None):
        raise _error(f"backend {backend!r} needs a CUDA device and the mamba-ssm kernels: "
                     "install them with `pip install 'caduceus-cli[cuda]'` or use --backend auto")
    return name


def use_cuda_kernel(name: str, tensor: torch.Tensor, backend: str) -> bool:
    """Whether mamba-ssm's kernel ``name`` runs for ``tensor`` under ``backend``."""
    if not tensor.is_cuda or _ALIASES.get(backend, backend) in ("torch", "triton", "numba"):
        return False
    if backend == "auto" and triton_kernels() is not None:
        return False  # auto means our own kernels on CUDA
    return cuda_kernels()[name] is not None


# -- causal depthwise convolution -------------------------------------------------------------


def causal_conv1d_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                        activation: str | None = None, reverse: bool = False) -> torch.Tensor:
    """x: (B, D, L), weight: (D, K), bias: (D,) -> (B, D, L); output t sees inputs t-K+1..t.
    ``reverse``: the same on x read from its end (output t sees t..t+K-1, in reverse order)."""
    if reverse:
        return causal_conv1d_torch(x.flip(-1), weight, bias, activation).flip(-1)
    k = weight.shape[-1]
    out = F.conv1d(F.pad(x, (k - 1, 0)), weight.unsqueeze(1).to(x.dtype),
                   None if bias is None else bias.to(x.dtype), groups=x.shape[1])
    return F.silu(out) if activation in ("silu", "swish") else out


def causal_conv1d(x, weight, bias=None, activation=None, backend: str = "auto", reverse: bool = False):
    """x: (B, D, L) any strides, weight: (D, K), bias: (D,) -> (B, D, L); same signature as
    ``causal_conv1d_fn``. Triton's kernel writes the output with x's strides. ``reverse``: the
    convolution of x read from its end, flip(conv(flip(x))) along L (Triton: without a copy)."""
    if x.is_cuda:
        name = resolve_backend(backend, x.device)
        if name == "triton" and weight.shape[-1] == 4:
            from .conv_triton import causal_conv1d_triton

            return causal_conv1d_triton(x, weight, bias, activation in ("silu", "swish"), reverse=reverse)
        if name == "mamba-ssm" and cuda_kernels()["causal_conv1d"] is not None:
            if reverse:
                return cuda_kernels()["causal_conv1d"](x.flip(-1), weight, bias, activation=activation).flip(-1)
            return cuda_kernels()["causal_conv1d"](x, weight, bias, activation=activation)
    return causal_conv1d_torch(x, weight, bias, activation, reverse)


# -- selective scan -----------------------------------------------------------------------------


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h[t] = a[t] * h[t-1] + b[t] along dim -2 with h[-1] = 0; a, b: (..., L, N).

    Pairs of steps are composed into one step (a1*a0, a1*b0 + b1), the half-length problem is
    solved recursively, and the even positions are filled in from the odd ones. All factors are
    products of decays in (0, 1], so no step divides or overflows.
    """
    length = a.shape[-2]
    if length == 1:
        return b
    if length % 2:
        a = F.pad(a, (0, 0, 0, 1), value=1.0)
        b = F.pad(b, (0, 0, 0, 1))
    a_even, a_odd = a[..., 0::2, :], a[..., 1::2, :]
    b_even, b_odd = b[..., 0::2, :], b[..., 1::2, :]
    h_odd = linear_recurrence(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))
    h_even = torch.cat([b_even[..., :1, :], torch.addcmul(b_even[..., 1:, :], a_even[..., 1:, :], h_odd[..., :-1, :])], dim=-2)
    h = torch.stack([h_even, h_odd], dim=-2).flatten(-3, -2)
    return h[..., :length, :]


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Plain-PyTorch selective scan (Mamba's S6), computed in fp32.

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L) or (batch, groups, N, L) with
    dim divisible by groups (channel c uses group c // (dim // groups)); D, delta_bias: (dim,).
    Returns (batch, dim, L) in u's dtype.
    """
    dtype_out = u.dtype
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, dim, length = u.shape
    groups, n = B.shape[1], A.shape[1]
    per_group = dim // groups
    budget = env_int("CADUCEUS_SCAN_BLOCK", minimum=1) or _DEFAULT_BLOCK.get(u.device.type, 1 << 23)
    block = max(1, min(per_group, budget // max(1, batch * length * n)))
    B_t = B.float().transpose(-1, -2)  # (batch, groups, L, N)
    C_t = C.float().transpose(-1, -2)
    outputs = []
    c0 = 0
    while c0 < dim:  # channel blocks never straddle a group
        g = c0 // per_group
        c1 = min(c0 + block, (g + 1) * per_group)
        d_blk, u_blk = delta[:, c0:c1], u[:, c0:c1]
        decay = torch.exp(d_blk.unsqueeze(-1) * A[c0:c1, None, :])  # (batch, c, L, N)
        drive = (d_blk * u_blk).unsqueeze(-1) * B_t[:, g, None]  # (batch, c, L, N)
        h = linear_recurrence(decay, drive)
        outputs.append(torch.einsum("bcln,bln->bcl", h, C_t[:, g]))
        c0 = c1
    y = torch.cat(outputs, dim=1)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_out)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   backend: str = "auto", out=None, reverse: bool = False):
    """The selective scan on the backend ``backend`` resolves to for u's device (same math on all).

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L) or (batch, groups, N, L);
    D, delta_bias: (dim,). Returns (batch, dim, L) in u's dtype (Triton: with u's strides).
    ``out``: a tensor the Triton backend may write y into when no gradient is needed (z or u
    themselves are allowed); other backends ignore it, so always use the returned tensor.
    ``reverse``: the scan from the last position to the first, i.e. flip(scan(flip(inputs))) along
    L (the Triton forward walks backwards without copies; other backends flip)."""
    name = resolve_backend(backend, u.device)
    if name == "triton" and A.shape[1] == 16:
        return triton_kernels().selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                      out=out, reverse=reverse)
    if reverse:
        flip = [t.flip(-1) if t is not None and i in (0, 1, 3, 4, 6) else t
                for i, t in enumerate((u, delta, A, B, C, D, z, delta_bias))]
        return selective_scan(*flip, delta_softplus=delta_softplus, backend=backend).flip(-1)
    if name == "numba":
        return numba_kernels().selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if name == "mamba-ssm":
        dtype = u.dtype
        return cuda_kernels()["selective_scan"](
            u, delta.to(dtype), A.float(), B.to(dtype), C.to(dtype),
            None if D is None else D.float(), None if z is None else z.to(dtype),
            None if delta_bias is None else delta_bias.float(), delta_softplus,
        )
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Step-by-step loop over positions: slow, obviously right; used only by tests."""
    u, delta, A = u.double(), delta.double(), A.double()
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, dim, length = u.shape
    groups = B.shape[1]
    B = B.double().repeat_interleave(dim // groups, dim=1)  # (batch, dim, N, L)
    C = C.double().repeat_interleave(dim // groups, dim=1)
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, :, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y
