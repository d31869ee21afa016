"""One device call's worth of checks and timings of the Triton backend (no mamba-ssm needed).

    python gpu/kernel_check.py --out $OUT            # correctness, scan timings, model and training speed

1. correctness, on random inputs with outputs poisoned first: the scan forward (bf16 and fp32, the
   mixer's strided layout) against the float64 reference; the chunked long-sequence forward against
   the PyTorch twin; the scan backward and the convolution (forward and backward) against float64;
2. the scan alone on one PS 256x16 layer at 1,536 bp, batch 64 (benchmarks/scan_speed.py), with the
   memory and exp2 floors measured on this GPU;
3. model forward tokens/s and peak memory, bf16 autocast, PS/Ph 256x16 at 256 x 1,536 bp and
   2 x 131,072 bp (benchmarks/model_speed.py's timing);
4. one masked-LM training step (forward, backward, AdamW) of PS/Ph 128x4 at 256 x 1,024 bp.

Each part is timed; a short table comes last; everything is also written to OUT/kernel_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM  # noqa: E402
from caduceus_cli.model.kernels.scan import (causal_conv1d_torch, selective_scan_reference,  # noqa: E402
                                     selective_scan_torch, triton_kernels)

REPORT: dict = {}


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def part(name):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                REPORT[name] = fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - report and go on to the next part
                traceback.print_exc()
                REPORT[name] = {"error": repr(e)[:500]}
            REPORT.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
            print(name, json.dumps(REPORT[name])[:2000], flush=True)
        return run
    return wrap


@part("correctness")
def correctness():
    from scan_speed import layer_inputs

    st = triton_kernels()
    out = {}
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        args = layer_inputs(4, 512, 1536, dtype, torch.device("cuda"), seed=3)
        y = torch.full_like(args[0], float("nan"))
        st.scan_forward(*args, delta_softplus=True, out=y)
        sub = [a[:1] if a.dim() >= 3 else a for a in args]
        ref = selective_scan_reference(*[a.cpu() for a in sub], delta_softplus=True)
        out[f"scan_fwd_{name}"] = rel(y[:1], ref) if torch.isfinite(y).all() else "NaN/unwritten"
    args = layer_inputs(2, 512, 131072, torch.float32, torch.device("cuda"), seed=4)
    y, _ = st.scan_forward(*args, delta_softplus=True)
    out["scan_fwd_chunked_131k_vs_twin"] = rel(y, selective_scan_torch(*args, delta_softplus=True))
    args = layer_inputs(2, 96, 700, torch.float32, torch.device("cuda"), seed=5)
    leaves = [a.detach().clone().requires_grad_() for a in args]
    w = torch.randn(args[0].shape, device="cuda", dtype=torch.float64)
    got = torch.autograd.grad((st.selective_scan_triton(*leaves, delta_softplus=True).double() * w).sum(), leaves)
    ref_leaves = [a.detach().cpu().double().requires_grad_() for a in args]
    want = torch.autograd.grad((selective_scan_reference(*ref_leaves, delta_softplus=True) * w.cpu()).sum(),
                               ref_leaves)
    for n, a, b in zip("u delta A B C D z bias".split(), got, want):
        out[f"scan_bwd_d{n}"] = rel(a, b)
    x = layer_inputs(2, 256, 3000, torch.bfloat16, torch.device("cuda"), seed=6)[0].detach().requires_grad_()
    wc = torch.randn(x.shape[1], 4, device="cuda", requires_grad=True)
    bc = torch.randn(x.shape[1], device="cuda", requires_grad=True)
    from caduceus_cli.model.kernels.conv_triton import causal_conv1d_triton

    o = causal_conv1d_triton(x, wc, bc, True)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, wc, bc))
    r = causal_conv1d_torch(xr, wr, br, "silu")
    out["conv_fwd_bf16"] = rel(o, r)
    g = torch.randn(r.shape, device="cuda", dtype=torch.float64)
    for n, a, b in zip("xwb", torch.autograd.grad((o.double() * g).sum(), (x, wc, bc)),
                       torch.autograd.grad((r * g).sum(), (xr, wr, br))):
        out[f"conv_bwd_d{n}"] = rel(a, b)
    return out


@part("scan_speed")
def scan_speed():
    import scan_speed as ss

    return ss.gpu(argparse.Namespace(length=1536, batch=64, dtype="bf16"))


@part("bwd_variants")
def bwd_variants():
    """fwd and fwd+bwd of the scan on the scan_speed shape."""
    from triton.testing import do_bench

    from scan_speed import layer_inputs

    st = triton_kernels()
    args = [a.detach().requires_grad_() if a.is_floating_point() else a
            for a in layer_inputs(128, 512, 1536, torch.bfloat16, torch.device("cuda"))]
    g = torch.randn(args[0].shape, device="cuda", dtype=torch.bfloat16)
    out = {}

    def fb():
        torch.autograd.grad(st.selective_scan_triton(*args, delta_softplus=True), args, g)
    out["fwd_bwd_ms"] = do_bench(fb, warmup=5, rep=40, return_mode="median")
    out["fwd_ms"] = do_bench(lambda: st.selective_scan_triton(*args, delta_softplus=True), return_mode="median")
    return out


@part("model_forward")
def model_forward():
    from model_speed import time_forward

    rows = []
    for variant in ("ps", "ph"):
        torch.manual_seed(0)
        model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 256, 16)).cuda().eval()
        model.backend = "triton"
        for length, batch in ((1536, 256), (131072, 2)):
            ids = torch.randint(7, 11, (batch, length), device="cuda")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                s = time_forward(model, ids, torch.bfloat16, repeats=5, warmup=2)
                rows.append({"model": f"{variant.upper()} 256x16", "length": length, "batch": batch,
                             "Mtok_s": batch * length / s / 1e6,
                             "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
            except Exception as e:  # noqa: BLE001
                rows.append({"model": f"{variant.upper()} 256x16", "length": length, "batch": batch, "error": repr(e)[:300]})
            print(rows[-1], flush=True)
        del model
    return rows


@part("train_step")
def train_step():
    rows = []
    for variant in ("ps", "ph"):
        torch.manual_seed(0)
        model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 128, 4)).cuda()
        model.backend = "triton"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        ids = torch.randint(7, 11, (256, 1024), device="cuda")
        targets = torch.randint(0, ids.numel(), (ids.numel() * 15 // 100,), device="cuda")
        losses = []

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                hidden = model(ids, compute_logits=False).last_hidden_state
                logits = model.logits(hidden.flatten(0, 1)[targets])
            loss = F.cross_entropy(logits.float(), ids.flatten()[targets])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        n = 10
        for _ in range(n):
            step()
        torch.cuda.synchronize()
        s = (time.perf_counter() - t0) / n
        rows.append({"model": f"{variant.upper()} 128x4", "batch": 256, "length": 1024, "step_ms": s * 1e3,
                     "Mtok_s": ids.numel() / s / 1e6, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                     "loss_first_last": [losses[0].item(), losses[-1].item()]})
        model = opt = None  # free the GPU memory before the next variant (step() closes over both)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu-out")
    ap.add_argument("--parts", default="correctness,scan_speed,bwd_variants,model_forward,train_step")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    REPORT["device"] = torch.cuda.get_device_name()
    for name in args.parts.split(","):
        globals()[name]()
        Path(args.out, "kernel_check.json").write_text(json.dumps(REPORT, indent=1, default=str))
    print("\n== summary ==")
    print("seconds per part:", REPORT.get("seconds"))
    for k, v in (REPORT.get("correctness") or {}).items():
        print(f"  {k:<32} {v}")
    for r in (REPORT.get("scan_speed") or {}).get("rows", []):
        print(f"  scan {r['impl']:<16} fwd {r['ms']:.3f} ms  fwd+bwd {r.get('fwd_bwd_ms', float('nan')):.3f} ms  "
              f"err {r['rel_err_vs_fp64']:.1e}")
    ss = REPORT.get("scan_speed") or {}
    print(f"  floors: memory {ss.get('floor_memory_ms', float('nan')):.3f} ms, exp2 {ss.get('floor_exp2_ms', float('nan')):.3f} ms")
    print("  bwd variants", REPORT.get("bwd_variants"))
    for r in REPORT.get("model_forward") or []:
        print("  forward", r)
    for r in REPORT.get("train_step") or []:
        print("  train", r)


if __name__ == "__main__":
    main()
