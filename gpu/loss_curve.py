"""Masked-LM loss curves of two backends (or kernel sets) trained from the same weights on the same
batches, and how far apart they are compared with the curve's own step-to-step noise.

    python gpu/loss_curve.py --out $OUT                                  # GPU: PS 128x4, triton vs torch
    python gpu/loss_curve.py --device cpu --smoke --backends numba,torch # CPU-sized, seconds
    python gpu/loss_curve.py --backends triton,triton --kernels new,old  # two kernel sets, one backend

Each run uses the pretraining code itself (``Trainer.train_step``, ``make_batch``: masking, the
learning-rate schedule, clipping), the same initial weights (``new_model`` with one seed) and the
same batch at every step (``make_batch`` is a pure function of seed and step), on a synthetic
genome with something to learn (an order-3 Markov chain with skewed transitions, and earlier
stretches repeated 50-400 bases later, which only context reveals) or ``--genome`` FASTA files. Writes OUT/loss_curve.json with both curves, their moving averages
(``--window`` steps) and ``max_abs_diff_ma``: the largest |difference| of the moving averages;
``noise_ma`` is the standard deviation of one curve around its own moving average divided by
sqrt(window): the size of difference that chance alone gives the averages.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402
from caduceus_cli.pipelines.pretrain import GenomeSet, Trainer, WindowSampler, make_batch, new_model  # noqa: E402
from caduceus_cli.pipelines.pretrain import split_regions  # noqa: E402
from caduceus_cli.runtime import Runtime  # noqa: E402


def synthetic_genome(n: int, seed: int) -> np.ndarray:
    """n token ids (7..10 = A, C, G, T): an order-3 Markov chain (transition rows drawn from a
    Dirichlet(0.3)), a quarter of it overwritten by copies of stretches 50-400 bases earlier."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(4, 0.3), size=64).cumsum(1)
    draws = rng.random(n)
    seq = np.zeros(n, dtype=np.uint8)
    state = 0
    for i in range(n):  # (a few seconds for the default 1 M bases)
        base = int(np.searchsorted(table[state], draws[i]))
        seq[i] = min(base, 3)
        state = (state * 4 + seq[i]) % 64
    for start in rng.integers(500, n - 200, n // 400):
        length, back = int(rng.integers(20, 200)), int(rng.integers(50, 400))
        seq[start:start + length] = seq[start - back:start - back + length]
    return seq + 7


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def compare(a: list[float], b: list[float], window: int) -> dict:
    """The moving averages of two curves, their largest |difference| (from step ``window`` on, where
    both average full windows) and the noise yardstick described in the module docstring."""
    ma_a, ma_b = moving_average(a, window), moving_average(b, window)
    diffs = [abs(x - y) for x, y in zip(ma_a[window - 1:], ma_b[window - 1:])]
    resid = [v - m for v, m in zip(a[window - 1:], ma_a[window - 1:])]
    noise = float(np.std(resid)) / math.sqrt(window) if resid else float("nan")
    return {"ma_a": ma_a, "ma_b": ma_b, "max_abs_diff_ma": max(diffs) if diffs else float("nan"),
            "noise_ma": noise, "final_ma": [ma_a[-1], ma_b[-1]] if a else None}


def train_curve(backend: str, kernels: str, args, device: torch.device, sampler: WindowSampler) -> list[float]:
    rt = Runtime(device=device)
    model = new_model(args.variant, args.d_model, args.n_layer, args.seq_len, seed=args.seed)
    trainer = Trainer(model, lr=args.lr, warmup=args.warmup, steps=args.steps, weight_decay=0.1,
                      micro_batch_size=args.batch, runtime=rt, backend=backend)
    losses = []
    with using_kernels(kernels):
        for step in range(args.steps):
            inputs, labels = make_batch(sampler, args.seed, 0, step, args.batch)
            trainer.train_step(torch.from_numpy(inputs), torch.from_numpy(labels))
            losses.append(trainer.take_train_loss())
    return losses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backends", default="triton,torch", help="two backends, the first is compared with the second")
    ap.add_argument("--kernels", default="new,new", help="the kernel set of each run (old, new, VAR=VALUE+...)")
    ap.add_argument("--variant", default="ps", choices=["ps", "ph"])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--genome", nargs="*", default=[], help="FASTA files (default: random bases)")
    ap.add_argument("--smoke", action="store_true", help="CPU-sized defaults: PS 32x2, 128 bp, batch 4, 40 steps, "
                    "window 10")
    if ap.parse_known_args(argv)[0].smoke:  # CPU-sized defaults; options given explicitly still win
        ap.set_defaults(d_model=32, n_layer=2, seq_len=128, batch=4, steps=40, window=10, warmup=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    backends, kernels = args.backends.split(","), args.kernels.split(",")
    if len(backends) != 2 or len(kernels) != 2:
        raise SystemExit("--backends and --kernels take two entries each")
    if args.genome:
        data = GenomeSet(args.genome)
        regions = split_regions(data, args.seq_len)[0]
    else:
        data = GenomeSet.from_arrays({"synthetic": synthetic_genome(200_000 if args.smoke else 1_000_000, args.seed)})
        regions = np.array([[0, data.total]], dtype=np.int64)
    sampler = WindowSampler(data, regions, args.seq_len)
    curves, seconds = [], []
    for backend, ks in zip(backends, kernels):
        t0 = time.perf_counter()
        curves.append(train_curve(backend, ks, args, device, sampler))
        seconds.append(round(time.perf_counter() - t0, 1))
        print(f"{backend} ({ks}): {args.steps} steps in {seconds[-1]} s, loss {curves[-1][0]:.4f} -> "
              f"{curves[-1][-1]:.4f}", flush=True)
    data.close()
    cmp = compare(curves[0], curves[1], args.window)
    doc = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "runs": [{"backend": b, "kernels": k, "seconds": s, "loss": c}
                    for b, k, s, c in zip(backends, kernels, seconds, curves)],
           "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, **cmp}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "loss_curve.json").write_text(json.dumps(doc, indent=1))
    print(f"loss curves {backends[0]}({kernels[0]}) vs {backends[1]}({kernels[1]}): max |diff| of {args.window}-step "
          f"moving averages {cmp['max_abs_diff_ma']:.4f} (noise of one average {cmp['noise_ma']:.4f}); final "
          f"{cmp['final_ma'][0]:.4f} vs {cmp['final_ma'][1]:.4f}")


if __name__ == "__main__":
    main()
