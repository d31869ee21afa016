"""The selective scan alone: our Triton kernel vs mamba-ssm's selective_scan_fn vs the PyTorch twin
(GPU), and the numba scan vs the PyTorch twin (CPU), on the shapes the model runs.

    python benchmarks/scan_speed.py --device cuda --json out.json     # PS 256x16 layer, 1,536 bp, batch 64
    python benchmarks/scan_speed.py --device cpu                      # bundled model's layer, 1,536 bp

GPU shapes: one Caduceus-PS d_model 256 layer at --length, --batch windows: both strands and both
directions in one call, u/delta/z (2 * batch, 2 * 512, L) bf16 as views of (2, 512, 2 * batch * L)
tensors, B/C (2 * batch, 2, 16, L) views of the x_proj output, exactly as ``mamba_directions``
hands them over. Before timing, each implementation's output is checked (poisoned first, on random
inputs) against the float64 reference on a few sequences. Timings: triton.testing.do_bench, median
(ms) of forward calls; 'fwd+bwd' adds one backward. Also: the causal convolution, and the two
floors (bytes over a measured copy bandwidth; exp2s over a measured exp2 rate).

CPU shapes: the bundled model (PS, d_model 128, d_inner 256) at --length, batch --cpu-batch; median
of --repeats calls in this process, torch twin and numba on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model.kernels.scan import (causal_conv1d_torch, cuda_kernels, numba_kernels,  # noqa: E402
                                     selective_scan_reference, selective_scan_torch, triton_kernels)


def layer_inputs(batch, channels_per_dir, length, dtype, device, seed=0, k=2, n=16, dt_rank=16):
    """Scan inputs in the layout mamba_directions produces (see the module docstring)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def act(scale=1.0, shift=0.0):
        t = torch.randn(k, channels_per_dir, batch * length, device=device, generator=g, dtype=dtype)
        return (t * scale + shift).reshape(k * channels_per_dir, batch, length).permute(1, 0, 2)

    u, z = act(), act()
    delta = act(0.5, -2.0)  # softplus(delta + bias) around 0.1, as trained models have
    A = -torch.arange(1, n + 1, device=device, dtype=torch.float32).repeat(k * channels_per_dir, 1)
    A = A * (0.5 + torch.rand(A.shape, device=device, generator=g))
    x_dbl = torch.randn(k, dt_rank + 2 * n, batch * length, device=device, generator=g, dtype=dtype)
    B = x_dbl[:, dt_rank:dt_rank + n].reshape(k, n, batch, length).permute(2, 0, 1, 3)
    C = x_dbl[:, dt_rank + n:].reshape(k, n, batch, length).permute(2, 0, 1, 3)
    D = torch.randn(k * channels_per_dir, device=device, generator=g)
    bias = torch.randn(k * channels_per_dir, device=device, generator=g) * 0.1
    return u, delta, A, B, C, D, z, bias


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def check(fn, args, n_seq=2):
    """Max relative error of fn on the first n_seq sequences vs the float64 reference (output
    poisoned first where fn writes into a given buffer; NaN anywhere fails)."""
    u, delta, A, B, C, D, z, bias = args
    sub = [u[:n_seq], delta[:n_seq], A, B[:n_seq], C[:n_seq], D, z[:n_seq], bias]
    y = fn(*sub)
    ref = selective_scan_reference(*[t.cpu() if t is not None else None for t in sub], delta_softplus=True)
    if not torch.isfinite(y).all():
        return float("nan")
    return rel_err(y.cpu(), ref)


def gpu(args):
    from triton.testing import do_bench

    device = torch.device("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    bt = 2 * args.batch  # both strands stacked on batch
    inputs = layer_inputs(bt, 512, args.length, dtype, device)
    u, delta, A, B, C, D, z, bias = inputs
    rows, results = [], {"device": torch.cuda.get_device_name(), "shape": list(u.shape), "dtype": args.dtype,
                         "batch_windows": args.batch, "length": args.length}
    elements = u.numel()
    state_updates = elements * 16
    # floors: one copy-bandwidth measurement, one exp2-rate measurement
    big = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    big2 = torch.empty_like(big)
    copy_ms = do_bench(lambda: big2.copy_(big), return_mode="median")
    bandwidth = 2 * big.numel() / (copy_ms * 1e-3)
    big = big2 = None  # free the two GiB before the timings
    io_bytes = 4 * elements * u.element_size() + 2 * B.numel() * B.element_size()
    results["floor_memory_ms"] = io_bytes / bandwidth * 1e3
    results["copy_bandwidth_TBps"] = bandwidth / 1e12
    st = triton_kernels()
    if st is not None:
        results["floor_exp2_ms"] = _exp2_floor_ms(state_updates, device)
    impls = {}
    if st is not None:
        impls["triton"] = lambda *a: st.selective_scan_triton(*a, delta_softplus=True)
    mamba = cuda_kernels()["selective_scan"]
    if mamba is not None:
        impls["mamba-ssm"] = lambda u_, d_, A_, B_, C_, D_, z_, b_: mamba(
            u_, d_, A_, B_, C_, D_, z_, b_, True)
    impls["torch"] = lambda *a: selective_scan_torch(*a, delta_softplus=True)
    for name, fn in impls.items():
        err = check(fn, inputs)
        torch.cuda.synchronize()
        reps = 3 if name == "torch" else 50
        try:
            ms = do_bench(lambda: fn(*inputs), warmup=1 if name == "torch" else 25, rep=reps if name != "torch" else 1,
                          return_mode="median")
        except torch.OutOfMemoryError:
            ms = float("nan")
        row = {"impl": name, "ms": ms, "rel_err_vs_fp64": err}
        if name != "torch":
            leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in inputs]
            out = fn(*leaves)
            grad = torch.randn_like(out)

            def fwd_bwd():
                o = fn(*leaves)
                torch.autograd.grad(o, leaves, grad)

            row["fwd_bwd_ms"] = do_bench(fwd_bwd, warmup=10, rep=50, return_mode="median")
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    # the causal convolution on the in_proj output layout (bf16, width 4, SiLU)
    x = u.detach()
    w = torch.randn(x.shape[1], 4, device=device)
    cb = torch.randn(x.shape[1], device=device)
    conv = {"torch": lambda: causal_conv1d_torch(x, w, cb, "silu")}
    if st is not None:
        from caduceus_cli.model.kernels import conv_triton

        conv["triton"] = lambda: conv_triton.causal_conv1d_triton(x, w, cb, True)
    if cuda_kernels()["causal_conv1d"] is not None:
        conv["causal-conv1d"] = lambda: cuda_kernels()["causal_conv1d"](x, w, cb, activation="silu")
    want = causal_conv1d_torch(x[:2].double(), w.double(), cb.double(), "silu")
    for name, fn in conv.items():
        out = fn()
        rows.append({"impl": f"conv {name}", "ms": do_bench(fn, return_mode="median"),
                     "rel_err_vs_fp64": rel_err(out[:2], want)})
    results["rows"] = rows
    mamba_ms = next((r["ms"] for r in rows if r["impl"] == "mamba-ssm"), None)
    print(f"\nscan on {tuple(u.shape)} {args.dtype} ({args.batch} windows x {args.length} bp, PS 256x16 layer), "
          f"{results['device']}")
    print(f"floors: memory {results['floor_memory_ms']:.3f} ms (copy {results['copy_bandwidth_TBps']:.2f} TB/s)"
          + (f", exp2 {results['floor_exp2_ms']:.3f} ms" if "floor_exp2_ms" in results else ""))
    print(f"{'impl':<20}{'fwd ms':>10}{'fwd+bwd ms':>12}{'rel err':>10}{'vs mamba-ssm':>14}")
    for r in rows:
        speed = f"{mamba_ms / r['ms']:.2f}x" if mamba_ms and not r["impl"].startswith("conv") else ""
        print(f"{r['impl']:<20}{r['ms']:>10.3f}{r.get('fwd_bwd_ms', float('nan')):>12.3f}"
              f"{r['rel_err_vs_fp64']:>10.1e}{speed:>14}")
    return results


def _exp2_floor_ms(count, device):
    """Time of `count` MUFU exp2s, measured with a Triton kernel doing nothing else that matters."""
    import triton
    import triton.language as tl
    from triton.testing import do_bench

    @triton.jit
    def exp2_kernel(x_ptr, out_ptr, iters, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(iters):
            x = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * -0.5], dtype=tl.float32,
                                          is_pure=False, pack=1)
            acc += x
        tl.store(out_ptr + offs, acc)

    n_threads = 132 * 2048 * 4
    x = torch.rand(n_threads, device=device)
    out = torch.empty_like(x)
    iters = 256
    ms = do_bench(lambda: exp2_kernel[(n_threads // 256,)](x, out, iters, BLOCK=256), return_mode="median")
    return ms * count / (n_threads * iters)


def cpu(args):
    torch.manual_seed(0)
    if numba_kernels() is None:
        raise SystemExit("numba is not installed")
    from caduceus_cli.model.kernels.scan_cpu import selective_scan_numba

    rows = []
    for k, label in ((2, "training (both directions stacked)"), (1, "inference (one direction)")):
        inputs = layer_inputs(2 * args.cpu_batch, 256, args.length, torch.float32, torch.device("cpu"), k=k, dt_rank=8)
        if k == 1:
            inputs = (*inputs[:3], inputs[3][:, 0], inputs[4][:, 0], *inputs[5:])
        err = check(lambda *a: selective_scan_numba(*a, delta_softplus=True), inputs, n_seq=1)
        selective_scan_numba(*inputs, delta_softplus=True)  # compile (or load the cache)
        times = {}
        for name, fn in (("torch", selective_scan_torch), ("numba", selective_scan_numba)):
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn(*inputs, delta_softplus=True)
                ts.append(time.perf_counter() - t0)
            times[name] = statistics.median(ts)
        rows.append({"shape": list(inputs[0].shape), "what": label, "torch_s": times["torch"],
                     "numba_s": times["numba"], "speedup": times["torch"] / times["numba"], "numba_rel_err": err,
                     "threads": torch.get_num_threads(), "loadavg": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nbundled model layer (PS d_model 128, d_inner 256), {args.cpu_batch} windows x {args.length} bp, CPU")
    print(f"{'shape':<22}{'what':<38}{'torch s':>9}{'numba s':>9}{'speedup':>9}")
    for r in rows:
        print(f"{str(tuple(r['shape'])):<22}{r['what']:<38}{r['torch_s']:>9.3f}{r['numba_s']:>9.3f}{r['speedup']:>8.1f}x")
    return {"rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--length", type=int, default=1536)
    ap.add_argument("--batch", type=int, default=64, help="GPU: windows (both strands run: 2x sequences)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--cpu-batch", type=int, default=4, help="CPU: windows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    result = gpu(args) if args.device == "cuda" else cpu(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
