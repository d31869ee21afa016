"""GPU checks (run on the H200; skipped without CUDA). The mamba-ssm comparisons are skipped
without the mamba-ssm kernels; the Triton kernels need nothing but Triton.

Run: python -m pytest tests/test_gpu.py -v
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model
from caduceus_cli.model.kernels.scan import (cuda_kernels, selective_scan_reference, selective_scan_torch,
                                     triton_kernels)

from .conftest import GOLDEN
from .test_scan_kernels import NAMES, mixer_layout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_mamba = pytest.mark.skipif(
    not torch.cuda.is_available() or cuda_kernels()["selective_scan"] is None,
    reason="needs the mamba-ssm kernels (pip install 'caduceus-cli[cuda]')",
)
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() or triton_kernels() is None,
                                  reason="needs a CUDA GPU and Triton")


@pytest.fixture(autouse=True)
def exact_fp32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@needs_mamba
@pytest.mark.parametrize("case", ["ps_fused", "ps_unfused", "ph_fused"])
def test_golden_parity_with_mamba_ssm_kernels(case):
    folder = GOLDEN / case
    model = load_model(folder / "checkpoint", device="cuda", backend="cuda")
    ids = torch.from_numpy(np.load(folder / "input_ids.npy")).cuda()
    with torch.no_grad():
        out = model(ids)
    assert np.abs(out.last_hidden_state.cpu().numpy() - np.load(folder / "hidden.npy")).max() < 1e-3
    assert np.abs(out.logits.cpu().numpy() - np.load(folder / "logits.npy")).max() < 1e-3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@needs_mamba
@pytest.mark.parametrize("length,batch", [(1536, 4), (131072, 1)])
def test_backends_agree_on_ps_256x16(length, batch):
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 256, 16)).cuda().eval()
    ids = torch.randint(7, 11, (batch, length), device="cuda")
    outs = {}
    with torch.no_grad():
        for backend in ("torch", "cuda"):
            model.backend = backend
            outs[backend, "fp32"] = model(ids, compute_logits=False).last_hidden_state
            with torch.autocast("cuda", dtype=torch.bfloat16):
                outs[backend, "bf16"] = model(ids, compute_logits=False).last_hidden_state
    fp32_diff = (outs["torch", "fp32"] - outs["cuda", "fp32"]).abs().max().item()
    err_torch_bf16 = rel_err(outs["torch", "bf16"], outs["torch", "fp32"])
    err_cuda_bf16 = rel_err(outs["cuda", "bf16"], outs["torch", "fp32"])
    between = rel_err(outs["cuda", "bf16"], outs["torch", "bf16"])
    print(f"\nL={length}: fp32 max|torch-cuda|={fp32_diff:.2e}; bf16 rel err vs fp32: torch {err_torch_bf16:.2e}, "
          f"cuda {err_cuda_bf16:.2e}; bf16 torch vs cuda {between:.2e}")
    assert fp32_diff < 1e-3
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3 per operation); 16 layers of
    # residual updates compound that, so each backend lands within 3e-2 of fp32 and the two bf16
    # backends within the same bound of each other (measured values: docs/models.md, "Parity").
    assert err_torch_bf16 < 3e-2 and err_cuda_bf16 < 3e-2 and between < 3e-2



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flip_kernels_match_pytorch_and_are_each_others_gradient(dtype):
    from caduceus_cli.model.kernels.flips import _kernels, flip_add, stack_flip

    assert _kernels() is not None, "Triton kernels did not compile"
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3, 1000, 70, device="cuda", dtype=dtype, generator=g, requires_grad=True)
    both = stack_flip(x)
    assert torch.equal(both.detach(), torch.stack([x, x.flip(1)]).detach())
    # Transposed (strided) inputs, like the mixer's outputs.
    a = torch.randn(3, 70, 1000, device="cuda", dtype=dtype, generator=g).transpose(1, 2).requires_grad_()
    b = torch.randn(3, 70, 1000, device="cuda", dtype=dtype, generator=g).transpose(1, 2).requires_grad_()
    out = flip_add(a, b)
    ref = (a.float() + b.float().flip(1)).to(dtype)
    assert out.is_contiguous() and torch.equal(out, ref)
    w = torch.randn(out.shape, device="cuda", dtype=dtype, generator=g)
    (out * w).sum().backward()
    assert torch.equal(a.grad, w) and torch.equal(b.grad, w.flip(1))
    (both * torch.stack([w, 2 * w])).sum().backward()
    assert torch.allclose(x.grad.float(), (w.float() + 2 * w.float().flip(1)), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", [pytest.param("cuda", marks=needs_mamba),
                                     pytest.param("triton", marks=needs_triton)])
def test_ps_training_gradients_match_the_pytorch_backend(backend):
    """One backward pass through the kernels (scan, conv, layer norm, flips) against the PyTorch path."""
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 64, 3)).cuda()
    ids = torch.randint(7, 11, (2, 300), device="cuda")
    grads = {}
    for backend in ("torch", backend):
        model.backend = backend
        model.zero_grad()
        model(ids).logits.float().square().mean().backward()
        grads[backend] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert rel_err(grads[backend], grads["torch"]) < 1e-3


# -- our Triton kernels ---------------------------------------------------------------------------


def _cuda(args):
    return [a.cuda() for a in args]


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("length", [1, 7, 300, 1536])
def test_triton_scan_forward_matches_reference(dtype, tol, length):
    """Random inputs in the mixer's layout, output poisoned with NaN first; the reference is float64
    on the same (rounded) inputs, so the tolerance is the kernel's own arithmetic plus the output's
    rounding to dtype."""
    st = triton_kernels()
    args = _cuda(mixer_layout(3, 2, 160, length, dtype=dtype, seed=length))
    out = torch.full_like(args[0], float("nan"))
    y, _ = st.scan_forward(*args, delta_softplus=True, out=out)
    ref = selective_scan_reference(*[a.cpu() for a in args], delta_softplus=True)
    assert torch.isfinite(y).all()
    assert rel_err(y.cpu(), ref) < tol


@needs_triton
def test_triton_scan_long_sequence_uses_chunks_and_matches_torch_twin():
    """131,072 positions on 2 sequences: few programs, so the forward cuts time into chunks whose
    states are carried; compared with the PyTorch twin (fp32) and a chunk-free run."""
    st = triton_kernels()
    args = _cuda(mixer_layout(2, 2, 64, 131072, seed=1))
    y, _ = st.scan_forward(*args, delta_softplus=True)
    want = selective_scan_torch(*args, delta_softplus=True)
    assert rel_err(y, want) < 1e-5
    old = st._MIN_CHUNK
    try:
        st._MIN_CHUNK = 1 << 30  # one chunk
        y1, _ = st.scan_forward(*args, delta_softplus=True)
    finally:
        st._MIN_CHUNK = old
    assert rel_err(y, y1) < 1e-5


@needs_triton
@pytest.mark.parametrize("k,length", [(1, 1), (2, 77), (2, 700), (1, 1200)])
def test_triton_scan_gradients_match_reference(k, length):
    st = triton_kernels()
    args = _cuda(mixer_layout(2, k, 64, length, seed=k + length))
    if k == 1:
        args[3], args[4] = args[3][:, 0], args[4][:, 0]
    leaves = [a.detach().clone().requires_grad_() for a in args]
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64)
    y = st.selective_scan_triton(*leaves, delta_softplus=True)
    got = torch.autograd.grad((y.double() * w).sum(), leaves)
    ref_leaves = [a.detach().cpu().double().requires_grad_() for a in args]
    ref = selective_scan_reference(*ref_leaves, delta_softplus=True)
    want = torch.autograd.grad((ref * w.cpu()).sum(), ref_leaves)
    for name, a, b in zip(NAMES, got, want):
        if name == "A" and length == 1:
            continue
        assert a.shape == b.shape, name
        assert rel_err(a.cpu(), b) < 1e-4, (name, rel_err(a.cpu(), b))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_conv_matches_pytorch_forward_and_backward(dtype):
    from caduceus_cli.model.kernels.conv_triton import causal_conv1d_triton
    from caduceus_cli.model.kernels.scan import causal_conv1d_torch

    x = torch.randn(2, 96, 3 * 1000, device="cuda").reshape(2, 96, 3, 1000).permute(2, 1, 0, 3)
    x = x.reshape(3, 96 * 2, 1000)[:, :96].to(dtype)  # strided like the in_proj output
    w = torch.randn(96, 4, device="cuda", requires_grad=True)
    b = torch.randn(96, device="cuda", requires_grad=True)
    xl = x.detach().clone().requires_grad_()
    out = causal_conv1d_triton(xl, w, b, True)
    xr = x.detach().double().requires_grad_()
    wr, br = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = causal_conv1d_torch(xr, wr, br, "silu")
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.stride() == xl.stride() and rel_err(out, ref) < tol  # the output keeps the input's layout
    g = torch.randn(ref.shape, device="cuda", dtype=torch.float64)
    got = torch.autograd.grad((out.double() * g).sum(), (xl, w, b))
    want = torch.autograd.grad((ref * g).sum(), (xr, wr, br))
    for a, q in zip(got, want):
        assert rel_err(a, q) < tol


@needs_triton
@pytest.mark.parametrize("case", ["ps_fused", "ps_unfused", "ph_fused"])
def test_golden_parity_with_triton_kernels(case):
    folder = GOLDEN / case
    model = load_model(folder / "checkpoint", device="cuda", backend="triton")
    ids = torch.from_numpy(np.load(folder / "input_ids.npy")).cuda()
    with torch.no_grad():
        out = model(ids)
    assert np.abs(out.last_hidden_state.cpu().numpy() - np.load(folder / "hidden.npy")).max() < 1e-3
    assert np.abs(out.logits.cpu().numpy() - np.load(folder / "logits.npy")).max() < 1e-3


@needs_triton
@pytest.mark.parametrize("length,batch", [(1536, 4), (32768, 1)])  # 32 kbp on 1 sequence: chunked forward
def test_triton_and_torch_backends_agree_on_ps_256x16(length, batch):
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 256, 16)).cuda().eval()
    ids = torch.randint(7, 11, (batch, length), device="cuda")
    outs = {}
    with torch.no_grad():
        for backend in ("torch", "triton"):
            model.backend = backend
            outs[backend, "fp32"] = model(ids, compute_logits=False).last_hidden_state
            with torch.autocast("cuda", dtype=torch.bfloat16):
                outs[backend, "bf16"] = model(ids, compute_logits=False).last_hidden_state
    fp32_diff = (outs["torch", "fp32"] - outs["triton", "fp32"]).abs().max().item()
    between = rel_err(outs["triton", "bf16"], outs["torch", "bf16"])
    err_bf16 = rel_err(outs["triton", "bf16"], outs["torch", "fp32"])
    print(f"\nL={length}: fp32 max|torch-triton|={fp32_diff:.2e}; bf16 triton vs fp32 {err_bf16:.2e}; "
          f"bf16 torch vs triton {between:.2e}")
    assert fp32_diff < 1e-3 and err_bf16 < 3e-2 and between < 3e-2


# -- the sequential backward, the fused add + norm, whole-model training (issue 12, part 2) ---------


def _scan_grads(fn, args, weight, **kw):
    leaves = [a.detach().clone().requires_grad_() for a in args]
    y = fn(*leaves, delta_softplus=True, **kw)
    return y, torch.autograd.grad((y.double() * weight).sum(), leaves)


@needs_triton
@pytest.mark.parametrize("k,d,length", [(2, 80, 333), (1, 200, 129), (2, 160, 64), (1, 48, 2)])
def test_triton_sequential_backward_uneven_channel_blocks(k, d, length):
    """Channel counts that do not fill the last block of 32 x warps channels (masked lanes take
    part in the warp reduce-scatter of dB/dC), lengths that end inside a 4-position sub-chunk and
    a 64-position checkpoint chunk, one group and two; float64 reference on small shapes."""
    st = triton_kernels()
    args = _cuda(mixer_layout(2, k, d, length, seed=d + length))
    if k == 1:
        args[3], args[4] = args[3][:, 0], args[4][:, 0]
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(1))
    y, got = _scan_grads(st.selective_scan_triton, args, w)
    ref, want = _scan_grads(selective_scan_reference, [a.cpu() for a in args], w.cpu())
    assert rel_err(y.cpu(), ref) < 1e-5
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, name
        assert rel_err(a.cpu(), b) < 1e-4, (name, rel_err(a.cpu(), b))


@needs_triton
def test_triton_backward_bf16_inputs_match_the_torch_twin():
    """bf16 u/delta/z/B/C (what autocast hands the scan): gradients within bf16 rounding of the
    PyTorch twin run on the same rounded inputs."""
    st = triton_kernels()
    args = _cuda(mixer_layout(2, 2, 128, 1000, dtype=torch.bfloat16, seed=3))
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(2))
    y, got = _scan_grads(st.selective_scan_triton, args, w)
    y_t, want = _scan_grads(selective_scan_torch, args, w)
    assert y.dtype == torch.bfloat16 and rel_err(y, y_t) < 1e-2
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == b.dtype, name
        assert rel_err(a, b) < 2e-2, (name, rel_err(a, b))


@needs_triton
def test_triton_backward_long_sequence_matches_the_torch_twin():
    """20,000 positions: 313 checkpoint chunks walked from the end, the state adjoint carried
    across all of them; fp32 against the PyTorch twin's autograd on the GPU."""
    st = triton_kernels()
    args = _cuda(mixer_layout(1, 2, 64, 20000, seed=4))
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(3))
    y, got = _scan_grads(st.selective_scan_triton, args, w)
    y_t, want = _scan_grads(selective_scan_torch, args, w)
    assert rel_err(y, y_t) < 1e-5
    for name, a, b in zip(NAMES, got, want):
        assert rel_err(a, b) < 1e-4, (name, rel_err(a, b))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rms,residual_in_fp32", [(True, False), (True, True), (False, False), (False, True)])
def test_triton_add_norm_matches_pytorch(dtype, rms, residual_in_fp32):
    """The fused residual add + norm against the PyTorch path in float64: forward and the
    gradients of x, residual, weight, bias; x channel-strided like a mixer output, residual
    present and absent, weights flipped (the PS conjugate frame)."""
    from caduceus_cli.model.mamba import LayerNorm, RMSNorm, add_norm

    g = torch.Generator("cuda").manual_seed(0)
    d = 256
    norm = (RMSNorm if rms else LayerNorm)(d).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, device="cuda", generator=g))
        if not rms:
            norm.bias.copy_(torch.randn(d, device="cuda", generator=g))
    x = torch.randn(4, d, 1000, device="cuda", generator=g).to(dtype).transpose(1, 2)
    res_dtype = torch.float32 if residual_in_fp32 else dtype
    for res in (None, torch.randn(4, 1000, d, device="cuda", generator=g).to(res_dtype)):
        for flip in (False, True):
            outs = {}
            for backend, cast in (("torch", torch.float64), ("triton", None)):
                ref_norm = norm.double() if cast else norm.float()
                xl = (x.to(cast) if cast else x).detach().clone().requires_grad_()
                rl = None if res is None else (res.to(cast) if cast else res).detach().clone().requires_grad_()
                ref_norm.zero_grad()
                y, r = add_norm(xl, rl, ref_norm, residual_in_fp32, backend=backend, flip_channels=flip)
                if not cast:
                    assert y.dtype == dtype and r.dtype == res_dtype
                gy = torch.randn(y.shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(5))
                gr = torch.randn(r.shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(6))
                ((y.double() * gy).sum() + (r.double() * gr).sum()).backward()
                outs[backend] = [y, r, xl.grad] + ([] if rl is None else [rl.grad]) + [
                    p.grad.clone() for p in ref_norm.parameters()]
            norm.float()
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            for i, (a, b) in enumerate(zip(outs["triton"], outs["torch"])):
                assert rel_err(a.detach(), b.detach()) < tol, (i, res is None, flip, rel_err(a.detach(), b.detach()))


@needs_triton
@pytest.mark.parametrize("variant,overrides", [("ps", {}), ("ph", {"rms_norm": False, "residual_in_fp32": True}),
                                               ("ps", {"fused_add_norm": False})])
def test_triton_training_gradients_match_the_torch_backend(variant, overrides):
    """Whole-model backward (scan, conv, add + norm, flips) with backend triton against torch, fp32,
    for PS fused and unfused and Ph with LayerNorm and an fp32 residual; an odd length."""
    torch.manual_seed(0)
    config = dataclasses.replace(CaduceusConfig.small(variant, 64, 2), **overrides)
    model = CaduceusForMaskedLM(config).cuda()
    ids = torch.randint(7, 11, (2, 301), device="cuda")
    results = {}
    for backend in ("torch", "triton"):
        model.backend = backend
        model.zero_grad()
        out = model(ids)
        out.logits.float().square().mean().backward()
        results[backend] = (out.logits.detach(),
                            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert rel_err(results["triton"][0], results["torch"][0]) < 1e-5
    assert rel_err(results["triton"][1], results["torch"][1]) < 1e-3


@needs_triton
def test_triton_bf16_training_gradients_are_as_close_to_fp32_as_torch_backends():
    """Under bf16 autocast the triton backend's gradients are no further from the fp32 gradients
    than the PyTorch backend's under the same autocast (both round the same activations)."""
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 128, 4)).cuda()
    ids = torch.randint(7, 11, (4, 1024), device="cuda")

    def gradient(backend, autocast):
        model.backend = backend
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids).logits.float().square().mean()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    exact = gradient("torch", False)
    err_torch = rel_err(gradient("torch", True), exact)
    err_triton = rel_err(gradient("triton", True), exact)
    print(f"\nbf16 gradient rel. error vs fp32: torch {err_torch:.2e}, triton {err_triton:.2e}")
    assert err_triton < max(2 * err_torch, 1e-2)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "torch"])
def test_norm_written_in_the_autocast_dtype_is_the_cast_of_the_fp32_norm(backend):
    """Blocks under bf16 autocast write the norm of an fp32 stream in bf16 directly (the matmul
    after it would cast it anyway): the fp32 norm cast by torch, to one bf16 rounding step (the H200
    run found the Triton kernel's bf16 variant off by one step on a few elements: its compiled
    fp32 arithmetic differs by an fp32 ulp, which flips a rounding now and then); the residual
    bit for bit; and without gradients, outputs written over their inputs give the same bits as
    fresh buffers."""
    from caduceus_cli.model.mamba import RMSNorm, add_norm

    g = torch.Generator("cuda").manual_seed(0)
    norm = RMSNorm(256).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(256, device="cuda", generator=g))
        x = torch.randn(8, 1000, 256, device="cuda", generator=g)
        res = torch.randn(8, 1000, 256, device="cuda", generator=g)
        y32, r32 = add_norm(x, res, norm, True, backend=backend)
        y16, r16 = add_norm(x, res, norm, True, backend=backend, out_dtype=torch.bfloat16)
        cast = y32.to(torch.bfloat16)
        assert y16.dtype == torch.bfloat16 and torch.equal(r16, r32)
        step = cast.float().abs().clamp_min(2.0 ** -126) * 2.0 ** -7  # one bf16 rounding step at each value
        assert ((y16.float() - cast.float()).abs() <= step).all()
        xb = x.to(torch.bfloat16)
        fresh = add_norm(xb, res, norm, True, backend=backend)
        xr, rr = xb.clone(), res.clone()
        reused = add_norm(xr, rr, norm, True, backend=backend, reuse_inputs=True)
        assert torch.equal(fresh[0], reused[0]) and torch.equal(fresh[1], reused[1])
        if backend == "triton":
            assert reused[0].data_ptr() == xr.data_ptr() and reused[1].data_ptr() == rr.data_ptr()


@needs_triton
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_triton_inference_reusing_buffers_gives_the_same_bits(variant):
    """bf16 autocast, no gradients: the forward that writes over its buffers and sums the two
    directions in place against the one that keeps every stream (output_hidden_states), and the
    flip-add written in place against the out-of-place kernel."""
    from caduceus_cli.model.kernels.flips import flip_add, flip_add_

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 128, 4)).cuda().eval()
    model.backend = "triton"
    ids = torch.randint(7, 11, (8, 1536), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        reused = model(ids).last_hidden_state
        kept = model(ids, output_hidden_states=True).last_hidden_state
    assert torch.equal(reused, kept)
    a = torch.randn(3, 64, 500, device="cuda").to(torch.bfloat16).transpose(1, 2)
    b = torch.randn(3, 64, 500, device="cuda").to(torch.bfloat16).transpose(1, 2)
    want = flip_add(a, b)
    assert torch.equal(flip_add_(a, b), want) and torch.equal(a, want)


# -- the second versions of the kernels (issue 19) and their switches ------------------------------


@needs_triton
@pytest.mark.parametrize("version", ["1", "2"])
def test_triton_backward_versions_match_reference(version, monkeypatch):
    """CADUCEUS_SCAN_BWD=1 (one thread per channel) and 2 (two; the default) on the same inputs,
    an odd length and uneven channel blocks, against float64."""
    monkeypatch.setenv("CADUCEUS_SCAN_BWD", version)
    st = triton_kernels()
    args = _cuda(mixer_layout(2, 2, 80, 333, seed=7))
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(1))
    y, got = _scan_grads(st.selective_scan_triton, args, w)
    ref, want = _scan_grads(selective_scan_reference, [a.cpu() for a in args], w.cpu())
    for name, a, b in zip(NAMES, got, want):
        assert rel_err(a.cpu(), b) < 1e-4, (version, name, rel_err(a.cpu(), b))


@needs_triton
@pytest.mark.parametrize("knobs", [{"CADUCEUS_BWD2_WSUM": "0"},
                                   {"CADUCEUS_BWD2_KEEP_DECAY": "0", "CADUCEUS_BWD2_MAXNREG": "168"},
                                   {"CADUCEUS_BWD2_WARPS": "8", "CADUCEUS_BWD2_CKPT": "64"}])
def test_triton_backward_v2_knobs_match_the_default(knobs, monkeypatch):
    """Every tuning knob of the second backward computes the default's gradients (fp32)."""
    st = triton_kernels()
    args = _cuda(mixer_layout(2, 2, 160, 500, seed=8))
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64, generator=torch.Generator("cuda").manual_seed(2))
    _, want = _scan_grads(st.selective_scan_triton, args, w)
    for key, value in knobs.items():
        monkeypatch.setenv(key, value)
    _, got = _scan_grads(st.selective_scan_triton, args, w)
    for name, a, b in zip(NAMES, got, want):
        assert rel_err(a, b) < 1e-5, (knobs, name, rel_err(a, b))


@needs_triton
@pytest.mark.parametrize("length,dtype", [(1536, torch.bfloat16), (40000, torch.float32), (333, torch.float32)])
def test_triton_scan_and_conv_from_the_end_match_flipped_references(length, dtype):
    """reverse=True (the sequence read from its last position, no copies) equals flipping inputs and
    output, for the scan (one chunk and time-chunked) and the convolution."""
    from caduceus_cli.model.kernels.conv_triton import causal_conv1d_triton
    from caduceus_cli.model.kernels.scan import causal_conv1d_torch

    st = triton_kernels()
    args = _cuda(mixer_layout(1, 1, 128, length, dtype=dtype, seed=length))
    args[3], args[4] = args[3][:, 0], args[4][:, 0]
    with torch.no_grad():
        y = st.selective_scan_triton(*args, delta_softplus=True, reverse=True)
        flipped = [a.flip(-1) if i in (0, 1, 3, 4, 6) else a for i, a in enumerate(args)]
        want = selective_scan_torch(*flipped, delta_softplus=True).flip(-1)
        assert rel_err(y, want) < (1e-2 if dtype == torch.bfloat16 else 1e-5)
        w, b = torch.randn(128, 4, device="cuda"), torch.randn(128, device="cuda")
        out = causal_conv1d_triton(args[0], w, b, True, reverse=True)
        ref = causal_conv1d_torch(args[0].double().flip(-1), w.double(), b.double(), "silu").flip(-1)
        assert rel_err(out, ref) < (1e-2 if dtype == torch.bfloat16 else 1e-5)


@needs_triton
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_triton_inference_without_flips_matches_the_flipping_path(variant, monkeypatch):
    """CADUCEUS_INFER=2 (reverse direction read from the end, out_proj rows summed in the matmul)
    against 1 (flipped copies), fp32 and bf16 autocast, at 1,536 bp and time-chunked 40 kbp; and
    the old and new long-sequence forward (CADUCEUS_SCAN_FWD) and convolution (CADUCEUS_CONV)."""
    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 128, 2)).cuda().eval()
    model.backend = "triton"
    for length, batch in ((1536, 3), (40000, 1)):
        ids = torch.randint(7, 11, (batch, length), device="cuda")
        for autocast, tol in ((False, 1e-5), (True, 2e-2)):
            outs = []
            for version in ("1", "2"):
                for var in ("CADUCEUS_INFER", "CADUCEUS_SCAN_FWD", "CADUCEUS_CONV"):
                    monkeypatch.setenv(var, version)
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    outs.append(model(ids, compute_logits=False).last_hidden_state.float())
            assert rel_err(outs[1], outs[0]) < tol, (length, autocast, rel_err(outs[1], outs[0]))
