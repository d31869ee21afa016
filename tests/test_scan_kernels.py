"""The selective-scan backends against the float64 step-by-step reference and the PyTorch twin.

CPU: the numba scan (forward and gradients), backend selection, golden parity with every backend
this machine has. Triton: the kernels run under TRITON_INTERPRET=1 on CPU tensors in a subprocess
(skipped, saying so, where Triton is not installed); tests/test_gpu.py runs them on a GPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model
from caduceus_cli.model.kernels.scan import (numba_kernels, resolve_backend, selective_scan, selective_scan_reference,
                                     selective_scan_torch)

from .conftest import GOLDEN, REPO

needs_numba = pytest.mark.skipif(numba_kernels() is None, reason="numba is not installed (pip install numba)")
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def mixer_layout(batch, k, d, length, n=16, dtype=torch.float32, seed=0):
    """Scan inputs laid out as ``mamba_directions`` makes them: u, delta, z (batch, k*d, L) views of
    (k, d, batch*L) tensors, B and C (batch, k, n, L) views of one (k, batch*L, 2n + 8) tensor."""
    g = torch.Generator().manual_seed(seed)

    def act():
        return torch.randn(k, d, batch * length, generator=g).reshape(k * d, batch, length).permute(1, 0, 2)

    u, z = act(), act()
    delta = act() * 0.5 - 1.0
    A = -(torch.rand(k * d, n, generator=g) * 4 + 0.05)
    x_dbl = torch.randn(k, batch * length, 2 * n + 8, generator=g)
    B = x_dbl[:, :, :n].reshape(k, batch, length, n).permute(1, 0, 3, 2)
    C = x_dbl[:, :, n:2 * n].reshape(k, batch, length, n).permute(1, 0, 3, 2)
    D = torch.randn(k * d, generator=g)
    bias = torch.randn(k * d, generator=g) * 0.5
    return [u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, z.to(dtype), bias]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def grads(fn, args, weight):
    args = [a.detach().clone().requires_grad_() for a in args]
    y = fn(*args, delta_softplus=True)
    return y, torch.autograd.grad((y.double() * weight).sum(), args)


@needs_numba
@pytest.mark.parametrize("length", [1, 7, 65, 300])
@pytest.mark.parametrize("k", [1, 2])
def test_numba_matches_reference_forward_and_gradients(length, k):
    from caduceus_cli.model.kernels.scan_cpu import selective_scan_numba

    args = mixer_layout(2, k, 5, length, seed=length * 3 + k)
    if k == 1:  # one group: B, C as (batch, n, L)
        args[3], args[4] = args[3][:, 0], args[4][:, 0]
    w = torch.randn(2, k * 5, length, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, g = grads(selective_scan_numba, args, w)
    ref, g_ref = grads(selective_scan_reference, args, w)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert (y.double() - ref).abs().max() < 1e-4
    for name, a, b in zip(NAMES, g, g_ref):
        if name == "A" and length == 1:
            assert a.abs().max() == 0 and b.abs().max() == 0  # no earlier state for a decay to act on
            continue
        assert a.shape == b.shape, name
        assert rel(a, b) < 1e-4, (name, rel(a, b))


@needs_numba
def test_numba_optional_inputs_and_no_softplus():
    from caduceus_cli.model.kernels.scan_cpu import selective_scan_numba

    u, delta, A, B, C, D, z, bias = mixer_layout(1, 2, 4, 33, seed=5)
    delta = delta.abs()
    for kw in [{}, {"D": D}, {"z": z}, {"delta_bias": bias.abs()}]:
        got = selective_scan_numba(u, delta, A, B, C, **kw)
        want = selective_scan_reference(u, delta, A, B, C, **kw)
        assert (got.double() - want).abs().max() < 1e-4, kw
    # decays far below fp32's range (dt * A down to -900): the vectorised exp2 clamps, still right
    got = selective_scan_numba(u, delta * 60, A, B, C)
    want = selective_scan_reference(u, delta * 60, A, B, C)
    assert torch.isfinite(got).all() and (got.double() - want).abs().max() < 1e-3


@needs_numba
def test_numba_long_sequence_matches_torch_twin():
    from caduceus_cli.model.kernels.scan_cpu import selective_scan_numba

    args = mixer_layout(1, 2, 3, 20_000, seed=7)
    got = selective_scan_numba(*args, delta_softplus=True)
    want = selective_scan_torch(*args, delta_softplus=True)
    assert torch.isfinite(got).all()
    assert rel(got, want) < 1e-5


@needs_numba
def test_numba_bf16_inputs_within_bf16_tolerance():
    """bf16 in, bf16 out: computed in fp32 like the torch twin, so only the final rounding differs."""
    from caduceus_cli.model.kernels.scan_cpu import selective_scan_numba

    args = mixer_layout(2, 2, 6, 100, dtype=torch.bfloat16, seed=9)
    got = selective_scan_numba(*args, delta_softplus=True)
    twin = selective_scan_torch(*args, delta_softplus=True)
    ref = selective_scan_reference(*args, delta_softplus=True)
    assert got.dtype == torch.bfloat16
    assert rel(got, twin) < 1e-2 and rel(got, ref) < 1e-2


@needs_numba
def test_numba_ps_model_matches_torch_backend_forward_and_backward():
    """Both strands stacked on batch and both directions, through the whole model, with gradients."""
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 16, 2))
    ids = torch.randint(7, 11, (2, 150))
    results = {}
    for backend in ("torch", "numba"):
        model.backend = backend
        model.zero_grad()
        out = model(ids)
        out.logits.float().square().mean().backward()
        results[backend] = (out.last_hidden_state.detach(),
                            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (results["numba"][0] - results["torch"][0]).abs().max() < 1e-4
    assert rel(results["numba"][1], results["torch"][1]) < 1e-4


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("case", ["ps_fused", "ps_unfused", "ph_fused"])
def test_golden_parity_with_every_cpu_backend(case, backend):
    if backend == "numba" and numba_kernels() is None:
        pytest.skip("numba is not installed")
    folder = GOLDEN / case
    model = load_model(folder / "checkpoint", backend=backend)
    ids = torch.from_numpy(np.load(folder / "input_ids.npy"))
    with torch.no_grad():
        out = model(ids)
    assert np.abs(out.last_hidden_state.numpy() - np.load(folder / "hidden.npy")).max() < 1e-4
    assert np.abs(out.logits.numpy() - np.load(folder / "logits.npy")).max() < 1e-4


def test_inference_slices_match_the_stacked_training_path(monkeypatch):
    """No-grad runs directions and batch slices separately: the same values as the stacked path."""
    import caduceus_cli.model.mamba as mamba

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 16, 2))
    ids = torch.randint(7, 11, (3, 40))
    monkeypatch.setattr(mamba, "_SLICE_ELEMENTS", {"cpu": 40 * 32})  # one sequence per slice
    with torch.no_grad():
        sliced = model(ids).last_hidden_state
    stacked = model(ids).last_hidden_state.detach()  # grad enabled: the stacked path
    assert (sliced - stacked).abs().max() < 1e-5


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the storages that aten ops create while active: the peak of their bytes alive at
    once and every shape created (a storage is alive while a tensor created on it is)."""

    def __init__(self):
        super().__init__()
        self.refs, self.sizes, self.live, self.peak, self.shapes = {}, {}, 0, 0, []

    def _release(self, key):
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.live -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage().data_ptr()
                if key not in self.refs:
                    self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
                    self.live += self.sizes[key]
                    self.peak = max(self.peak, self.live)
                    self.shapes.append(tuple(t.shape))
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


@needs_numba
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_numba_forward_and_backward_never_hold_a_state_per_position(variant):
    """No tensor of (sequences x channels x length x d_state) elements is ever made, and a no-grad
    forward keeps at most 16 residual streams' worth of fp32 alive (one state tensor per layer
    would be 32 of them: 2 x d_model channels x 16 states)."""
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 32, 2))
    model.backend = "numba"
    ids = torch.randint(7, 11, (2, 301))
    sequences = 4 if variant == "ps" else 2
    state_elements = sequences * 2 * 64 * 301 * 16  # both directions' d_inner channels
    with torch.no_grad():
        model(ids)  # compile outside the count
        inference = _LiveTensorBytes()
        with inference:
            model(ids, compute_logits=False)
    training = _LiveTensorBytes()
    with training:
        model(ids).logits.square().mean().backward()
    for shape in inference.shapes + training.shapes:
        assert math.prod(shape) < state_elements / 4, shape
    stream_bytes = sequences * 301 * 32 * 4
    assert inference.peak < 16 * stream_bytes, inference.peak / stream_bytes


@pytest.mark.parametrize("variant,overrides", [("ps", {}), ("ph", {"rms_norm": False, "residual_in_fp32": True}),
                                               ("ps", {"fused_add_norm": False})])
def test_inference_reusing_buffers_gives_the_same_values(variant, overrides, monkeypatch):
    """A no-grad forward writes residuals and norms over their inputs and adds the reverse
    direction into the forward one slice by slice: bit for bit what the forward computes when
    intermediate streams are requested (nothing reused) and what the stacked path computes."""
    import dataclasses

    import caduceus_cli.model.mamba as mamba

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(dataclasses.replace(CaduceusConfig.small(variant, 32, 3), **overrides))
    model.backend = "torch"
    ids = torch.randint(7, 11, (3, 57))
    monkeypatch.setattr(mamba, "_SLICE_ELEMENTS", {"cpu": 57 * 64})  # one sequence per slice
    with torch.no_grad():
        reused = model(ids)
        kept = model(ids, output_hidden_states=True)
    assert torch.equal(reused.last_hidden_state, kept.last_hidden_state)
    assert torch.equal(reused.logits, kept.logits)
    stacked = model(ids)  # gradients enabled: no slices, no reuse
    assert (stacked.last_hidden_state.detach() - reused.last_hidden_state).abs().max() < 1e-5


def test_backend_names_and_devices():
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cpu") == ("numba" if numba_kernels() is not None else "torch")
    with pytest.raises(CaduceusError, match="backend must be one of"):
        resolve_backend("fast", "cpu")
    with pytest.raises(CaduceusError, match="triton.*CUDA"):
        resolve_backend("triton", "cpu")
    for alias in ("mamba-ssm", "cuda"):
        with pytest.raises(CaduceusError, match="mamba-ssm"):
            resolve_backend(alias, "cpu")
    if numba_kernels() is not None:
        assert resolve_backend("numba", "cpu") == "numba"
    with pytest.raises(CaduceusError, match="triton"):
        selective_scan(*mixer_layout(1, 1, 2, 3), backend="triton")


_INTERPRETER_PRELUDE = r"""
import itertools, json, sys
import numpy as np, torch
import triton.runtime.interpreter as ti
_patch = ti._patch_lang_tensor
def _patched(tensor, scope):  # triton 3.6's interpreter calls int() on 1-element arrays (numpy >= 2.4 refuses)
    _patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))
ti._patch_lang_tensor = _patched
sys.path.insert(0, sys.argv[1])
"""

_INTERPRETER_CHECK = _INTERPRETER_PRELUDE + r"""
from caduceus_cli.model.kernels import scan_triton as st
from caduceus_cli.model.kernels.conv_triton import causal_conv1d_triton
from caduceus_cli.model.kernels.scan import causal_conv1d_torch, selective_scan_reference
from tests.test_scan_kernels import NAMES, grads, mixer_layout, rel
from caduceus_cli.model.kernels import conv_triton
st._MIN_CHUNK, st.CKPT = 16, 8  # several time chunks and backward chunks at a small length
conv_triton._CONV2_MIN_CHUNK = 16  # the second convolution: time chunks with their halos
report = {}
for length, seed, k in ((70, 1, 2), (5, 2, 2), (1, 3, 1), (37, 4, 1)):
    args = mixer_layout(1, k, 6, length, seed=seed)
    if k == 1:  # one group: B, C as (batch, n, L)
        args[3], args[4] = args[3][:, 0], args[4][:, 0]
    poisoned = torch.full_like(args[0], float("nan"))
    y, _ = st.scan_forward(*args, delta_softplus=True, out=poisoned)
    ref = selective_scan_reference(*args, delta_softplus=True)
    report[f"fwd_{length}"] = float((y.double() - ref).abs().max())
    w = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, g = grads(st.selective_scan_triton, args, w)
    _, g_ref = grads(selective_scan_reference, args, w)
    report.update({f"d{n}_{length}": rel(a, b) for n, a, b in zip(NAMES, g, g_ref) if not (n == "A" and length < 2)})
for length, seed, k, dtype in ((70, 5, 2, torch.float32), (37, 6, 1, torch.bfloat16)):  # scans from the end
    args = mixer_layout(1, k, 6, length, dtype=dtype, seed=seed)
    y = st.selective_scan_triton(*args, delta_softplus=True, reverse=True)
    flipped = [a.flip(-1) if i in (0, 1, 3, 4, 6) else a for i, a in enumerate(args)]
    report[f"rev_{length}_{str(dtype)[6:]}"] = rel(y, selective_scan_reference(*flipped, delta_softplus=True).flip(-1))
x = torch.randn(2, 6, 300, dtype=torch.float64).transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
wt = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
bs = torch.randn(6, dtype=torch.float64, requires_grad=True)
out = causal_conv1d_triton(x.float(), wt.float(), bs.float(), True)
want = causal_conv1d_torch(x, wt, bs, "silu")
report["conv_fwd"] = float((out.double() - want).abs().max())
report["conv_strides_kept"] = out.stride() == x.stride()
gw = torch.randn(want.shape, dtype=torch.float64)
for n, a, b in zip("x w b".split(), torch.autograd.grad((out.double() * gw).sum(), (x, wt, bs)),
                   torch.autograd.grad((want * gw).sum(), (x, wt, bs))):
    report[f"conv_d{n}"] = rel(a, b)
with torch.no_grad():
    out = causal_conv1d_triton(x.float(), wt.float(), bs.float(), True, reverse=True)
    report["conv_rev"] = rel(out, causal_conv1d_torch(x.flip(-1), wt, bs, "silu").flip(-1))
print(json.dumps(report))
"""


def _run_under_the_interpreter(code: str, **env_vars: str) -> dict:
    pytest.importorskip("triton", reason="Triton is not installed (the CPU build of torch has none; .ci/run installs it to run these)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO), **env_vars}
    result = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("bwd", ["1", "2"])
def test_triton_kernels_under_the_interpreter(bwd):  # bwd: the version of every kernel, "1" or "2"
    """Forward (several time chunks, states carried by either version, CADUCEUS_SCAN_FWD; output
    poisoned first; also run from the last position), the sequential backward of both versions
    (CADUCEUS_SCAN_BWD; several checkpoint chunks and sub-chunks, odd lengths, length 1, one and
    two groups; the first version's channel sums by tl.sum, the second's by its butterfly
    reduce-scatter emulated with reshapes) and the causal convolution of either version
    (CADUCEUS_CONV; also anti-causal; the second in time chunks), each against float64 references."""
    report = _run_under_the_interpreter(_INTERPRETER_CHECK, CADUCEUS_SCAN_BWD=bwd, CADUCEUS_SCAN_FWD=bwd,
                                        CADUCEUS_CONV=bwd)
    for key, value in report.items():
        if key == "conv_strides_kept":
            assert value
        else:  # bf16: the output's rounding (2^-9 relative)
            assert value < (1e-2 if "bfloat16" in key else 1e-4), (key, value)


_ADD_NORM_CHECK = _INTERPRETER_PRELUDE + r"""
from caduceus_cli.model.mamba import LayerNorm, RMSNorm, add_norm
from caduceus_cli.model.kernels.norm_triton import add_norm_triton
from tests.test_scan_kernels import rel
report = {}
g = torch.Generator().manual_seed(0)
for rms, has_res, fp32res, dtype, flip, strided in itertools.product(
        (True, False), (True, False), (True, False), (torch.float32, torch.bfloat16), (False, True), (False, True)):
    d = 24
    norm = (RMSNorm if rms else LayerNorm)(d)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, generator=g))
        if not rms:
            norm.bias.copy_(torch.randn(d, generator=g))
    x = torch.randn(3, d, 7, generator=g).to(dtype).transpose(1, 2)  # channels strided, like a mixer output
    x = x if strided else x.contiguous()
    res = torch.randn(3, 7, d, generator=g).to(torch.float32 if fp32res else dtype) if has_res else None
    outs = {}
    for impl in ("reference", "triton"):
        xl = x.detach().clone().double().requires_grad_()
        rl = res.detach().clone().double().requires_grad_() if res is not None else None
        norm.zero_grad()
        if impl == "reference":  # the PyTorch path in float64
            y, r = add_norm(xl, rl, norm.double(), fp32res, backend="torch", flip_channels=flip)
            norm.float()
        else:
            xl = x.detach().clone().requires_grad_()
            rl = res.detach().clone().requires_grad_() if res is not None else None
            w, b = norm.weight, norm.bias
            if flip:
                w, b = w.flip(0), (None if b is None else b.flip(0))
            y, r = add_norm_triton(xl, rl, w, b, norm.eps, rms, torch.float32 if fp32res else (rl if rl is not None else xl).dtype)
            assert y.dtype == x.dtype and r.dtype == (torch.float32 if fp32res else (res if res is not None else x).dtype)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        gr = torch.randn(r.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        ((y.double() * gy).sum() + (r.double() * gr).sum()).backward()
        outs[impl] = [y.detach(), r.detach(), xl.grad] + ([rl.grad] if rl is not None else []) + [
            p.grad.clone() for p in norm.parameters()]
    key = f"{'rms' if rms else 'ln'}_res{int(has_res)}_fp32res{int(fp32res)}_{str(dtype)[6:]}_flip{int(flip)}_strided{int(strided)}"
    report[key] = max(rel(a, b) for a, b in zip(outs["triton"], outs["reference"]))
# no gradients: outputs written over the inputs give the same bits as fresh buffers
norm = RMSNorm(24)
with torch.no_grad():
    norm.weight.copy_(torch.randn(24, generator=g))
    x = torch.randn(3, 7, 24, generator=g).to(torch.bfloat16)
    res = torch.randn(3, 7, 24, generator=g)
    y1, r1 = add_norm_triton(x, res, norm.weight, None, 1e-5, True, torch.float32)
    x2, res2 = x.clone(), res.clone()
    y2, r2 = add_norm_triton(x2, res2, norm.weight, None, 1e-5, True, torch.float32, reuse_inputs=True)
    report["reuse_same_bits"] = bool(torch.equal(y1, y2) and torch.equal(r1, r2))
    report["reuse_aliases"] = y2.data_ptr() == x2.data_ptr() and r2.data_ptr() == res2.data_ptr()
    x32 = torch.randn(3, 7, 24, generator=g)
    y3, r3 = add_norm_triton(x32, None, norm.weight, None, 1e-5, True, torch.float32, out_dtype=torch.bfloat16)
    # (bf16 rounding: the interpreter truncates where compiled Triton rounds to nearest even, so the
    # bits are compared with torch's cast on the GPU, tests/test_gpu.py)
    report["bf16_out"] = y3.dtype == torch.bfloat16
    report["no_residual_is_x"] = r3 is x32
print(json.dumps(report))
"""


@pytest.mark.slow
def test_triton_add_norm_under_the_interpreter():
    """The fused residual add + RMSNorm/LayerNorm against the PyTorch path in float64, forward and
    every gradient (x, residual, weight, bias): with and without a residual, residual in fp32 or not,
    fp32 and bf16, weights flipped (the PS conjugate frame), channel-strided input; without
    gradients, outputs written over the inputs give the same bits."""
    report = _run_under_the_interpreter(_ADD_NORM_CHECK)
    flags = ("reuse_same_bits", "reuse_aliases", "bf16_out", "no_residual_is_x")
    assert all(report.pop(flag) is True for flag in flags), report
    assert len(report) == 64
    for key, value in report.items():
        # fp32: rounding only; bf16: the output and gradients are rounded to bf16 (2^-9 relative)
        assert value < (1e-5 if "float32" in key else 1e-2), (key, value)


_BWD2_CHECK = _INTERPRETER_PRELUDE + r"""
import os
from caduceus_cli.model.kernels import scan_triton as st
from caduceus_cli.model.kernels.scan import selective_scan_reference, selective_scan_torch
from tests.test_scan_kernels import NAMES, grads, mixer_layout, rel
st._MIN_CHUNK, st.CKPT = 16, 16  # backward v2: checkpoints every 8 positions, 2 sub-chunks each
report = {}
cases = (  # (knobs, batch, groups, channels per group, length, dtype)
    ({}, 2, 2, 40, 45, torch.float32),  # 4 warps: 64 channels per program, 40 of them used
    ({}, 1, 1, 70, 19, torch.float32),  # two programs per group, the second partly masked
    ({"WSUM": "0"}, 2, 2, 40, 45, torch.float32),  # one atomic per lane and position
    ({"KEEP_DECAY": "0", "RELOAD_B": "1"}, 1, 2, 16, 33, torch.float32),
    ({"WARPS": "1"}, 1, 2, 40, 13, torch.float32),  # 16 channels per program
    ({}, 2, 2, 24, 30, torch.bfloat16),
)
for i, (knobs, batch, k, d, length, dtype) in enumerate(cases):
    for key in ("WSUM", "KEEP_DECAY", "RELOAD_B", "WARPS"):
        os.environ.pop("CADUCEUS_BWD2_" + key, None)
    os.environ.update({"CADUCEUS_BWD2_" + key: v for key, v in knobs.items()})
    args = mixer_layout(batch, k, d, length, dtype=dtype, seed=10 + i)
    w = torch.randn(batch, k * d, length, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
    y, g = grads(st.selective_scan_triton, args, w)
    if dtype == torch.float32:
        ref, g_ref = grads(selective_scan_reference, args, w)
    else:  # bf16 in and out: against the PyTorch twin on the same rounded inputs
        ref, g_ref = grads(selective_scan_torch, args, w)
    tag = f"case{i}_{'bf16' if dtype != torch.float32 else 'fp32'}"
    report[f"{tag}_y"] = rel(y, ref)
    report.update({f"{tag}_d{n}": rel(a, b) for n, a, b in zip(NAMES, g, g_ref)})
print(json.dumps(report))
"""


@pytest.mark.slow
def test_triton_backward_v2_variants_under_the_interpreter():
    """The second backward's tuning knobs (per-program or per-warp atomics, decays kept or
    recomputed, B re-read, 1 or 4 warps), channel blocks that do not fill a program, one and two
    groups, fp32 against float64 and bf16 against the PyTorch twin."""
    report = _run_under_the_interpreter(_BWD2_CHECK, CADUCEUS_SCAN_BWD="2")
    assert len(report) == 6 * 9
    for key, value in report.items():
        assert value < (2e-2 if "bf16" in key else 1e-4), (key, value, report)


@pytest.mark.parametrize("variant,tie", [("ps", True), ("ph", True), ("ph", False)])
def test_bidirectional_sum_without_flips_matches_the_flipping_path(variant, tie, monkeypatch):
    """Inference's second way through a bi-directional layer (the reverse direction's convolution
    and scan read the sequence from its end, out_proj rows summed in the matmul, in_proj shared
    when tied) against the first (flip in, flip back and add), both frames, batch slices."""
    import dataclasses

    import caduceus_cli.model.mamba as mamba

    torch.manual_seed(0)
    config = dataclasses.replace(CaduceusConfig.small(variant, 16, 1), bidirectional_weight_tie=tie)
    wrapper = next(m for m in CaduceusForMaskedLM(config).modules() if isinstance(m, mamba.BiMambaWrapper))
    monkeypatch.setattr(mamba, "_SLICE_ELEMENTS", {"cpu": 37 * 32})  # one sequence per slice
    hidden = torch.randn(3, 37, 16)
    with torch.no_grad():
        for conjugate in (False, True):
            fwd, rev = wrapper.mamba_fwd, wrapper.mamba_rev
            directions = [(rev, False), (fwd, True)] if conjugate else [(fwd, False), (rev, True)]
            want = mamba.mamba_flip_sum(hidden, directions, "torch", conjugate)
            got = mamba.mamba_bidirectional_sum(hidden, directions, "torch", conjugate)
            assert (got - want).abs().max() < 1e-5


def test_kernel_sets_switch_and_restore_the_environment(monkeypatch):
    from caduceus_cli.model.kernels.versions import VARIABLES, kernel_set, using_kernels

    monkeypatch.setenv("CADUCEUS_SCAN_BWD", "7")
    monkeypatch.delenv("CADUCEUS_BWD2_WSUM", raising=False)
    with using_kernels("old"):
        assert all(os.environ[v] == "1" for v in VARIABLES)
    with using_kernels("new"):
        assert not any(v in os.environ for v in VARIABLES)
    with using_kernels("CADUCEUS_BWD2_WSUM=0+CADUCEUS_SCAN_FWD=1"):
        assert os.environ["CADUCEUS_BWD2_WSUM"] == "0" and os.environ["CADUCEUS_SCAN_FWD"] == "1"
        assert "CADUCEUS_SCAN_BWD" not in os.environ  # on top of "new"
    assert os.environ["CADUCEUS_SCAN_BWD"] == "7" and "CADUCEUS_BWD2_WSUM" not in os.environ
    with pytest.raises(ValueError, match="kernel set"):
        kernel_set("PATH=/tmp")


def test_loss_curve_comparison_measures_the_gap_and_the_noise():
    sys.path.insert(0, str(REPO / "gpu"))
    try:
        from loss_curve import compare, moving_average
    finally:
        sys.path.pop(0)
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    rng = np.random.default_rng(0)
    a = list(2.0 - np.linspace(0, 1, 200) + rng.normal(0, 0.05, 200))
    same = compare(a, a, 20)
    assert same["max_abs_diff_ma"] == 0 and 0.005 < same["noise_ma"] < 0.02
    shifted = compare(a, [x + 0.1 for x in a], 20)
    assert abs(shifted["max_abs_diff_ma"] - 0.1) < 1e-9


@pytest.mark.slow
def test_loss_curves_of_two_cpu_backends_agree():
    """gpu/loss_curve.py at CPU size: the pretraining step with the numba and the torch backends
    from the same weights on the same batches gives the same curve (the GPU run compares triton
    with torch the same way)."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        backends = "numba,torch" if numba_kernels() is not None else "torch,torch"
        result = subprocess.run([sys.executable, str(REPO / "gpu" / "loss_curve.py"), "--device", "cpu", "--smoke",
                                 "--backends", backends, "--steps", "30", "--out", out],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        doc = json.loads((Path(out) / "loss_curve.json").read_text())
    assert len(doc["runs"][0]["loss"]) == 30 and doc["runs"][0]["loss"][-1] < doc["runs"][0]["loss"][0]
    assert doc["max_abs_diff_ma"] < max(1e-3, doc["noise_ma"])
