"""Forward-pass throughput (tokens/s) and peak memory of Caduceus PS/Ph models.

    python benchmarks/model_speed.py --device cuda --dtype bf16 --backend cuda
    python benchmarks/model_speed.py --device cpu --backend torch --configs ps:128x4 --lengths 1536

Weights are random (speed does not depend on them). Each row: warm-up, then the median of
--repeats timed forward passes (CUDA events on GPU). Peak memory: torch.cuda.max_memory_allocated
on GPU, the process's peak RSS on CPU. Embedding-style forward: hidden states, no LM head. The
measuring code is `caduceus_cli.pipelines.benchmark.speed` (also behind `caduceus benchmark speed`).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from caduceus_cli.pipelines.benchmark.speed import build_model, forward_speed

DTYPES = ("fp32", "bf16")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=DTYPES)
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "cuda"])
    ap.add_argument("--configs", default="ps:256x16,ph:256x16,ps:128x4,ph:128x4")
    ap.add_argument("--lengths", default="1536,131072")
    ap.add_argument("--tokens-per-batch", type=int, default=262144, help="batch = max(1, this // length)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="write rows to this JSON file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for spec in args.configs.split(","):
        variant, size = spec.split(":")
        d_model, n_layer = map(int, size.split("x"))
        model = build_model(f"random:{variant}:{size}", device, backend=args.backend)
        dtype = args.dtype if device.type == "cuda" else "fp32"
        for length in map(int, args.lengths.split(",")):
            batch = max(1, args.tokens_per_batch // length)
            name = f"{variant.upper()} {d_model}x{n_layer}"
            try:
                result = forward_speed(model, length, batch, dtype, args.repeats, args.warmup)
            except torch.OutOfMemoryError:
                rows.append({"model": name, "length": length, "batch": batch, "error": "out of memory"})
                continue
            rows.append({
                "model": name, "length": length, "batch": batch,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "dtype": dtype, "backend": model.backend, "seconds": round(result["seconds"], 4),
                "tokens_per_s": round(result["value"]), "peak_memory_gib": round(result["peak_memory_gib"], 2),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        del model
    print(f"{'model':<12}{'length':>8}{'batch':>7}{'backend':>8}{'dtype':>6}{'Mtok/s':>9}{'peak GiB':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<12}{r['length']:>8}{r['batch']:>7}  {r['error']}")
        else:
            print(f"{r['model']:<12}{r['length']:>8}{r['batch']:>7}{r['backend']:>8}{r['dtype']:>6}"
                  f"{r['tokens_per_s'] / 1e6:>9.3f}{r['peak_memory_gib']:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
