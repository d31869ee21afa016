"""The selective scan alone, old and new kernels side by side (medians of triton.testing.do_bench).

    python gpu/scan_bench.py --out $OUT
    python gpu/scan_bench.py --bwd-sets old,new,CADUCEUS_BWD2_WSUM=0 --batch 128
    TRITON_INTERPRET=1 python gpu/scan_bench.py --smoke   # tiny shapes on the CPU: the script's logic only

Shapes are the model's: the backward of one PS 128x4 training layer (both directions as one scan of
2 x 256 channels, 1,024 bp; ``--batch`` sequences, both strands counted), the forward of one
PS 256x16 inference call at 2 x 131,072 bp (512 channels, 2 sequences: a time-chunked scan) and at
1,536 bp (128 sequences), each forwards and (new kernels only) from the sequence's end. Writes
OUT/scan_bench.json; each row: milliseconds, nanoseconds per (channel, position) pair, and the
ratio to the exp2 floor (one MUFU.EX2 per state update at ``--exp-rate`` per second; 2 per update
for a backward, which recomputes the states).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from caduceus_cli.model.kernels.scan import triton_kernels  # noqa: E402
from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402
from quick_check import BWD_SETS, inputs  # noqa: E402  (also patches the interpreter where it runs)


SMOKE = False


def bench(fn) -> float:
    if SMOKE:  # the interpreter: one call, host clock
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=150, return_mode="median")


def row(name, kernels, ms, pairs, exps_per_update, exp_rate):
    floor = pairs * 16 * exps_per_update / exp_rate * 1e3
    r = {"case": name, "kernels": kernels, "ms": round(ms, 3), "ns_per_pair": round(ms * 1e6 / pairs, 4),
         "x_exp_floor": round(ms / floor, 2)}
    print(f"{name:<34} {kernels:<52} {ms:9.3f} ms {r['ns_per_pair']:8.4f} ns/pair {r['x_exp_floor']:6.2f} x floor",
          flush=True)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    ap.add_argument("--batch", type=int, default=128, help="sequences of the backward case (PS: 2 per window)")
    ap.add_argument("--bwd-sets", default=",".join(BWD_SETS))
    ap.add_argument("--exp-rate", type=float, default=3.7e12, help="MUFU.EX2 per second (H200, gpu/scan_notes.md)")
    ap.add_argument("--parts", default="bwd,fwd_long,fwd_short,gemm")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes under TRITON_INTERPRET=1 (no timing value)")
    args = ap.parse_args(argv)
    global SMOKE
    SMOKE = args.smoke
    st = triton_kernels()
    dev = torch.device("cpu" if args.smoke else "cuda")
    # shapes: (batch, channels per direction, length) of the backward case, the long and short forwards
    shapes = ((2, 32, 40), (1, 64, 300), (2, 64, 24)) if args.smoke else ((args.batch, 256, 1024), (2, 512, 131072),
                                                                          (128, 512, 1536))
    rows = []

    def safe(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            traceback.print_exc()
            rows.append({"error": repr(e)[:400]})

    def bwd():
        b, d, length = shapes[0]
        a = [t.requires_grad_() for t in inputs(b, 2, d, length, torch.bfloat16, dev, seed=0)]
        g = torch.randn(a[0].shape, device=dev, dtype=torch.bfloat16)
        pairs = b * 2 * d * length
        for ks in args.bwd_sets.split(","):
            with using_kernels(ks):
                y = st.selective_scan_triton(*a, delta_softplus=True)
                fwd_ms = bench(lambda: st.selective_scan_triton(*a, delta_softplus=True))
                both = bench(lambda: torch.autograd.grad(st.selective_scan_triton(*a, delta_softplus=True), a, g))
                del y
            rows.append(row("train fwd (states kept)", ks, fwd_ms, pairs, 1, args.exp_rate))
            rows.append(row("train bwd (fwd+bwd - fwd)", ks, both - fwd_ms, pairs, 2, args.exp_rate))

    def fwd(name, shape, sets):
        batch, d, length = shape
        a = inputs(batch, 1, d, length, torch.bfloat16, dev, seed=1)
        pairs = batch * d * length
        for ks, reverse in sets:
            with using_kernels(ks), torch.no_grad():
                ms = bench(lambda: st.scan_forward(*a, delta_softplus=True, reverse=reverse))
            rows.append(row(f"{name}{' reverse' if reverse else ''}", ks, ms, pairs, 1, args.exp_rate))

    def gemm():
        """The PS 128x4 training step's skinny projections (k = 2 directions, N = 512 x 1,024
        positions) as the mixer runs them and in the transposed layout (positions as rows), for
        the next round (the baseline profile shows ~0.7 ms small-tile cuBLAS kernels for them)."""
        k, n = 2, (512 if not args.smoke else 4) * 1024
        bf = dict(device=dev, dtype=torch.bfloat16)
        u, wx = torch.randn(k, 256, n, **bf), torch.randn(k, 40, 256, **bf)
        xd, wdt, dd = torch.randn(k, 40, n, **bf), torch.randn(k, 256, 8, **bf), torch.randn(k, 256, n, **bf)
        cases = {
            "x_proj  W(40x256) @ u(256xN)": lambda: torch.bmm(wx, u),
            "x_proj  u^T(Nx256) @ W^T (rows)": lambda: torch.bmm(u.transpose(1, 2), wx.transpose(1, 2)),
            "dt_proj W(256x8) @ xdbl(8xN)": lambda: torch.bmm(wdt, xd[:, :8]),
            "dW_x    dxdbl(40xN) @ u^T": lambda: torch.bmm(xd, u.transpose(1, 2)),
            "du      W^T(256x40) @ dxdbl(40xN)": lambda: torch.bmm(wx.transpose(1, 2), xd),
            "dW_dt   ddelta(256xN) @ xdbl8^T": lambda: torch.bmm(dd, xd[:, :8].transpose(1, 2)),
            "dxdbl8  W^T(8x256) @ ddelta(256xN)": lambda: torch.bmm(wdt.transpose(1, 2), dd),
        }
        for name, fn in cases.items():
            ms = bench(fn)
            rows.append({"case": f"gemm {name}", "kernels": "cuBLAS", "ms": round(ms, 3)})
            print(f"gemm {name:<36} {ms:9.3f} ms", flush=True)

    parts = {"bwd": bwd, "gemm": gemm,
             "fwd_long": lambda: fwd("infer fwd 2 x 131072", shapes[1], [("old", False), ("new", False), ("new", True)]),
             "fwd_short": lambda: fwd("infer fwd 128 x 1536", shapes[2], [("new", False), ("new", True)])}
    for name in args.parts.split(","):
        safe(parts[name])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        device = "cpu (interpreter)" if args.smoke else torch.cuda.get_device_name()
        Path(args.out, "scan_bench.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
