"""Seconds-long correctness checks of the Triton kernels' new paths against references, on random
inputs (outputs poisoned with NaN first where the kernel takes ``out``).

    python gpu/quick_check.py --out $OUT                 # on the GPU
    TRITON_INTERPRET=1 python gpu/quick_check.py --smoke  # the same checks, tiny, under the interpreter

Each check prints one line (name, relative error, tolerance, PASS/FAIL) as it finishes and all of
them land in OUT/quick_check.json; the exit status is 1 when any check fails. References: the
float64 step loop (``selective_scan_reference``) on a slice of the batch, or the PyTorch twin
where the length makes the loop too slow; every kernel set is compared with its old version too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model.kernels.scan import (causal_conv1d_torch, selective_scan_reference,  # noqa: E402
                                             selective_scan_torch, triton_kernels)
from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    import numpy as np
    import triton.runtime.interpreter as _ti

    _patch = _ti._patch_lang_tensor

    def _patched(tensor, scope):  # triton 3.6's interpreter calls int() on 1-element arrays (numpy >= 2.4 refuses)
        _patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    _ti._patch_lang_tensor = _patched

RESULTS: list[dict] = []
# The backward's variants timed by gpu/scan_bench.py (and checked here): 8 warps per SM (default,
# 255 registers), per-warp atomics, 12 and 16 warps per SM (decays recomputed, registers capped;
# 16 spills a little), 8-warp programs.
BWD_SETS = ("old", "new", "CADUCEUS_BWD2_WSUM=0", "CADUCEUS_BWD2_KEEP_DECAY=0+CADUCEUS_BWD2_MAXNREG=168",
            "CADUCEUS_BWD2_KEEP_DECAY=0+CADUCEUS_BWD2_MAXNREG=128", "CADUCEUS_BWD2_WARPS=8")
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "bias"]


def rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def record(name: str, err: float, tol: float) -> None:
    ok = err == err and err < tol
    RESULTS.append({"check": name, "rel_err": err, "tol": tol, "ok": ok})
    print(f"{name:<44} {err:10.2e}  < {tol:.0e}  {'PASS' if ok else 'FAIL'}", flush=True)


def inputs(batch, k, d, length, dtype, device, seed):
    """Scan inputs laid out as the mixer makes them (views of (k, d, batch*L) tensors), drawn on
    ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device)

    def act(scale=1.0, shift=0.0):
        t = rand(k, d, batch * length) * scale + shift
        return t.reshape(k * d, batch, length).permute(1, 0, 2)

    u, z, delta = act(), act(), act(0.5, -1.0)
    A = -(torch.rand(k * d, 16, generator=g, device=device) * 4 + 0.05)
    x_dbl = rand(k, 40, batch * length)
    B = x_dbl[:, 8:24].reshape(k, 16, batch, length).permute(2, 0, 1, 3)
    C = x_dbl[:, 24:40].reshape(k, 16, batch, length).permute(2, 0, 1, 3)
    D, bias = rand(k * d), rand(k * d) * 0.5
    return [u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, z.to(dtype), bias]


def flipped(args):
    return [t.flip(-1) if i in (0, 1, 3, 4, 6) else t for i, t in enumerate(args)]


def first_seq(args):
    return [t[:1].cpu() if t.dim() >= 3 else t.cpu() for t in args]


def check_forward(dev, small):
    """bf16 inputs in the model's shapes (multiples of 16: the compiled kernels carry over to the
    benchmarks that follow); fp32 is covered by the backward check's forward."""
    st = triton_kernels()
    L = 96 if small else 1536
    args = inputs(2, 2, 40 if small else 256, L, torch.bfloat16, dev, seed=1)
    for reverse in (False, True):
        y = st.scan_forward(*args, delta_softplus=True, out=torch.full_like(args[0], float("nan")),
                            reverse=reverse)[0]
        ref_in = flipped(first_seq(args)) if reverse else first_seq(args)
        ref = selective_scan_reference(*ref_in, delta_softplus=True)
        record(f"fwd bf16 L={L}{' reverse' if reverse else ''} vs fp64", rel(y[:1], ref.flip(-1) if reverse else ref),
               1e-2)
    # long: time chunks with carried states, forwards and backwards, against the twin on the same
    # bf16 inputs (a wrong carry is an O(1) error) and against the old version
    old_min = st._MIN_CHUNK
    if small:
        st._MIN_CHUNK = 32
    L = 400 if small else 131072
    args = inputs(1, 1, 32 if small else 512, L, torch.bfloat16, dev, seed=2)
    for reverse in (False, True):
        a = flipped(args) if reverse else args
        want = selective_scan_torch(*a, delta_softplus=True)
        want = want.flip(-1) if reverse else want
        ys = {}
        for kernels in ("old", "new") if not reverse else ("new",):
            with using_kernels(kernels):
                ys[kernels] = st.scan_forward(*args, delta_softplus=True, reverse=reverse,
                                              out=torch.full_like(args[0], float("nan")))[0]
            record(f"fwd chunked bf16 L={L}{' reverse' if reverse else ''} {kernels} vs twin", rel(ys[kernels], want),
                   1e-2)
        if "old" in ys:
            record(f"fwd chunked bf16 L={L} new vs old", rel(ys["new"], ys["old"]), 1e-2)
    st._MIN_CHUNK = old_min


def grads(fn, args, w):
    leaves = [a.detach().clone().requires_grad_() for a in args]
    y = fn(*leaves, delta_softplus=True)
    return torch.autograd.grad((y.double() * w).sum(), leaves)


def check_backward(dev, small, variants):
    st = triton_kernels()
    L = 77 if small else 700
    args = inputs(2, 2, 40 if small else 96, L, torch.float32, dev, seed=3)
    w = torch.randn(args[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(dev)
    ref_leaves = [a.detach().cpu().double().requires_grad_() for a in args]
    want = torch.autograd.grad((selective_scan_reference(*ref_leaves, delta_softplus=True) * w.cpu()).sum(), ref_leaves)
    got = grads(st.selective_scan_triton, args, w)
    worst = max(range(8), key=lambda i: rel(got[i], want[i]))
    record(f"bwd fp32 L={L} new vs fp64 (d{NAMES[worst]})", rel(got[worst], want[worst]), 1e-4)
    # bf16 (what autocast hands the scan), the training shape's multiples of 16: every variant that
    # gpu/scan_bench.py times, against the twin
    args = inputs(2, 2, 64 if small else 256, 128 if small else 1024, torch.bfloat16, dev, seed=5)
    w = torch.randn(args[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(dev)
    want = grads(selective_scan_torch, args, w)
    for kernels in variants:
        with using_kernels(kernels):
            got = grads(st.selective_scan_triton, args, w)
        worst = max(range(8), key=lambda i: rel(got[i], want[i]))
        record(f"bwd bf16 {kernels} vs twin (d{NAMES[worst]})", rel(got[worst], want[worst]), 2e-2)


def check_conv(dev, small):
    from caduceus_cli.model.kernels.conv_triton import causal_conv1d_triton

    x = inputs(2, 2, 32 if small else 256, 96 if small else 1536, torch.bfloat16, dev, seed=7)[0]
    wc, bc = torch.randn(x.shape[1], 4, device=dev), torch.randn(x.shape[1], device=dev)
    with torch.no_grad():
        for reverse in (False, True):
            o = causal_conv1d_triton(x, wc, bc, True, reverse=reverse)
            r = causal_conv1d_torch(x.double(), wc.double(), bc.double(), "silu", reverse=reverse)
            record(f"conv bf16{' reverse' if reverse else ''} vs fp64", rel(o, r), 1e-2)
    xl, wl, bl = (t.detach().requires_grad_() for t in (x, wc, bc))
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, wc, bc))
    g = torch.randn(x.shape, device=dev, dtype=torch.float64)
    got = torch.autograd.grad((causal_conv1d_triton(xl, wl, bl, True).double() * g).sum(), (xl, wl, bl))
    want = torch.autograd.grad((causal_conv1d_torch(xr, wr, br, "silu") * g).sum(), (xr, wr, br))
    record("conv bf16 backward vs fp64 (worst of dx, dw, db)", max(rel(a, b) for a, b in zip(got, want)), 1e-2)


def check_model(dev, small):
    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM

    d, n, L, b = (32, 2, 64, 2) if small else (64, 2, 512, 2)
    for variant in ("ps", "ph"):
        torch.manual_seed(0)
        model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d, n)).to(dev)
        ids = torch.randint(7, 11, (b, L), device=dev)
        flat = []
        for backend in ("torch", "triton"):  # fp32 training gradients, new kernels vs the PyTorch path
            model.backend = backend
            model.zero_grad()
            model(ids).logits.float().square().mean().backward()
            flat.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        record(f"model {variant} {d}x{n} train grads triton vs torch", rel(flat[1], flat[0]), 1e-3)
        model.eval()
        outs = {}
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            for kernels in ("old", "new"):
                with using_kernels(kernels):
                    outs[kernels] = model(ids, compute_logits=False).last_hidden_state.float()
            model.backend = "torch"
            outs["torch"] = model(ids, compute_logits=False).last_hidden_state.float()
        record(f"model {variant} inference new vs old kernels", rel(outs["new"], outs["old"]), 2e-2)
        record(f"model {variant} inference new vs torch backend", rel(outs["new"], outs["torch"]), 3e-2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for the interpreter on the CPU)")
    ap.add_argument("--variants", default=",".join(s for s in BWD_SETS if s != "old"),
                    help="backward kernel sets checked in bf16 (those gpu/scan_bench.py times)")
    ap.add_argument("--parts", default=None, help="default: forward,backward,conv,model (no model under the "
                    "interpreter: the triton backend needs CUDA)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise SystemExit("no GPU: run with TRITON_INTERPRET=1 (and --smoke)")
    small = args.smoke or dev.type == "cpu"
    args.parts = args.parts or ("forward,backward,conv" if dev.type == "cpu" else "forward,backward,conv,model")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    parts = {"forward": lambda: check_forward(dev, small),
             "backward": lambda: check_backward(dev, small, args.variants.split(",")),
             "conv": lambda: check_conv(dev, small), "model": lambda: check_model(dev, small)}
    for name in args.parts.split(","):
        try:
            parts[name]()
        except Exception as e:  # noqa: BLE001 - one failing part must not hide the others
            traceback.print_exc()
            RESULTS.append({"check": name, "error": repr(e)[:500], "ok": False})
    doc = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (interpreter)",
           "seconds": round(time.perf_counter() - t0, 1), "results": RESULTS}
    Path(args.out, "quick_check.json").write_text(json.dumps(doc, indent=1))
    bad = [r["check"] for r in RESULTS if not r["ok"]]
    print(f"quick_check: {len(RESULTS) - len(bad)}/{len(RESULTS)} passed in {doc['seconds']} s"
          + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
