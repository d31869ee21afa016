"""The two sequence flips of a bi-directional layer, each as one pass over memory.

A bi-directional Mamba layer feeds the reverse-direction mixer its input flipped along length and
flips that mixer's output back before adding it to the forward one. With plain PyTorch that is a
flip (one copy) plus a stack (another copy) on the way in, and a flip plus an add on the way out.
On CUDA, when Triton is importable (CUDA builds of torch bring it), each side is one kernel instead:

- ``stack_flip(x)``: (B, L, D) -> (2, B, L, D) holding ``x`` and ``x.flip(1)``;
- ``flip_add(a, b)``: ``a + b.flip(1)``, for inputs of any strides (the mixer's outputs are
  transposed views), written contiguous.

Each is the other's adjoint, so each one's backward is the other kernel. Elsewhere (CPU, the
'torch' backend, no Triton) the same functions run as PyTorch ops.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def _kernels():
    """(stack_flip_kernel, flip_add_kernel) compiled with Triton, or None without Triton or CUDA."""
    if not torch.cuda.is_available():
        return None
    try:
        import triton
        import triton.language as tl
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None

    @triton.jit
    def stack_flip_kernel(x_ptr, out_ptr, n_rows, length, width, sx_b, sx_l, sx_d,
                          BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        pos = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)[:, None]
        ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
        b = tl.program_id(2).to(tl.int64)
        mask = (pos < length) & (ch < width)
        v = tl.load(x_ptr + b * sx_b + pos * sx_l + ch * sx_d, mask=mask)
        row = b * length
        tl.store(out_ptr + (row + pos) * width + ch, v, mask=mask)
        tl.store(out_ptr + (n_rows + row + length - 1 - pos) * width + ch, v, mask=mask)

    @triton.jit
    def flip_add_kernel(a_ptr, b_ptr, out_ptr, length, width, sa_b, sa_l, sa_d, sb_b, sb_l, sb_d,
                        so_b, so_l, so_d, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        pos = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)[:, None]
        ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
        b = tl.program_id(2).to(tl.int64)
        mask = (pos < length) & (ch < width)
        x = tl.load(a_ptr + b * sa_b + pos * sa_l + ch * sa_d, mask=mask).to(tl.float32)
        y = tl.load(b_ptr + b * sb_b + (length - 1 - pos) * sb_l + ch * sb_d, mask=mask).to(tl.float32)
        tl.store(out_ptr + b * so_b + pos * so_l + ch * so_d, (x + y).to(out_ptr.dtype.element_ty), mask=mask)

    return stack_flip_kernel, flip_add_kernel


_BLOCK_L, _BLOCK_D = 64, 64


def _grid(shape):
    b, length, width = shape
    return ((length + _BLOCK_L - 1) // _BLOCK_L, (width + _BLOCK_D - 1) // _BLOCK_D, b)


def _stack_flip_kernel(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty((2, *x.shape), dtype=x.dtype, device=x.device)
    b, length, width = x.shape
    _kernels()[0][_grid(x.shape)](x, out, b * length, length, width, *x.stride(),
                                  BLOCK_L=_BLOCK_L, BLOCK_D=_BLOCK_D)
    return out


def _flip_add_kernel(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out`` may be ``a`` itself (each element is read before it is written), not ``b``."""
    if out is None:
        out = torch.empty(a.shape, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    length, width = a.shape[1:]
    _kernels()[1][_grid(a.shape)](a, b, out, length, width, *a.stride(), *b.stride(), *out.stride(),
                                  BLOCK_L=_BLOCK_L, BLOCK_D=_BLOCK_D)
    return out


class _StackFlip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _stack_flip_kernel(x)

    @staticmethod
    def backward(ctx, grad):
        return _flip_add_kernel(grad[0], grad[1])


class _FlipAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        return _flip_add_kernel(a, b)

    @staticmethod
    def backward(ctx, grad):
        both = _stack_flip_kernel(grad)
        return both[0], both[1]


def _use_kernel(*tensors: torch.Tensor, backend: str) -> bool:
    return (backend != "torch" and all(t.is_cuda and t.dim() == 3 for t in tensors)
            and _kernels() is not None)


def stack_flip(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """x: (B, L, D) -> (2, B, L, D): ``x`` and ``x`` reversed along L."""
    if _use_kernel(x, backend=backend):
        return _StackFlip.apply(x)
    return torch.stack([x, x.flip(1)])


def flip_add(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """a, b: (B, L, D), any strides -> ``a + b.flip(1)``, contiguous."""
    if _use_kernel(a, b, backend=backend) and a.dtype == b.dtype:
        return _FlipAdd.apply(a, b)
    return a + b.flip(1)


def flip_add_(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``a += b.flip(1)`` in place (no gradient), the same values as :func:`flip_add`; returns a."""
    if _use_kernel(a, b, backend=backend) and a.dtype == b.dtype:
        return _flip_add_kernel(a, b, out=a)
    return a.add_(b.flip(1))
