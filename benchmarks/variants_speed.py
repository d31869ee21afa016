"""Variants per second of `score-variants` (all zero-shot scores) on real 1000 Genomes SNVs/indels.

    python benchmarks/variants_speed.py --model random-ps-256x16 --device cuda --n 20000 --batch-size 256
    python benchmarks/variants_speed.py --model bundled --device cpu --n 200
    python benchmarks/variants_speed.py --model bundled --device cpu --n 64 --cpu-compare --repeats 3

`--model random-ps-256x16` builds a randomly initialised Caduceus-PS with d_model 256 and 16 layers
(the published configuration; speed does not depend on the weights), with the model builder of
`caduceus benchmark speed` (`caduceus_cli.pipelines.benchmark.speed`). Prints a table and JSON.
--window defaults to the pipeline's (1,536 bp, or the model's trained length when shorter: 1,024
for the bundled model). --dtype is the compute dtype (auto, fp32, bf16).

--cpu-compare scores the same records in this one process on the CPU with the channels-first
numba path in fp32 (the CPU path before kernels/mixer_cpu.py) and with the channels-last path in
the compute dtype of --dtype (default auto), alternating the two --repeats times (A B A B ...)
so that other work on a shared machine slows both alike, and prints the median variants/s of each,
the speed-up, and the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "variants"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="bundled, a folder, a hub id, or random-ps-256x16 / random-ph-DxL")
    ap.add_argument("--device", default=None)
    ap.add_argument("--n", type=int, default=1000, help="records of the real VCF to score")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--dtype", default="auto", help="compute dtype: auto, fp32 or bf16")
    ap.add_argument("--threads", type=int, help="CPU threads (torch and numba; default: all cores)")
    ap.add_argument("--cpu-compare", action="store_true", help="CPU: channels-first fp32 against the new path, "
                    "interleaved (see above)")
    ap.add_argument("--repeats", type=int, default=3, help="--cpu-compare: timed runs of each path")
    ap.add_argument("--scores", default="llr,embed_cos,embed_l2")
    ap.add_argument("--warmup", type=int, default=64, help="records scored first, untimed")
    ap.add_argument("--vcf", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"))
    ap.add_argument("--fasta", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.fa"))
    args = ap.parse_args()

    import torch

    from caduceus_cli.model.precision import dtype_name, model_compute_dtype
    from caduceus_cli.pipelines.benchmark.speed import build_model
    from caduceus_cli.pipelines.variants import score_variants
    from caduceus_cli.runtime import resolve_device

    device = str(resolve_device(args.device))
    if device == "cpu" or args.threads is not None:
        from caduceus_cli.runtime import set_threads

        set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = "random:" + ":".join(args.model.split("-")[1:3]) if args.model.startswith("random-") else args.model
        model = build_model(spec, device)
        model.compute_dtype = args.dtype
        lines = gzip.open(args.vcf, "rt")
        with open(tmp / "in.vcf", "w") as f:
            n = 0
            for ln in lines:
                if not ln.startswith("#"):
                    n += 1
                    if n > args.n:
                        break
                f.write(ln)
        n_header = sum(1 for ln in open(tmp / "in.vcf") if ln.startswith("#"))
        # warm-up (kernels, allocator) on a few records, not timed
        with open(tmp / "warm.vcf", "w") as f:
            f.writelines(ln for i, ln in enumerate(open(tmp / "in.vcf")) if ln.startswith("#") or i < n_header + args.warmup)
        score_variants(str(tmp / "warm.vcf"), args.fasta, str(tmp / "warm.out.vcf"), model=model, scores=args.scores,
                       window=args.window, batch_size=args.batch_size, chunk_size=args.chunk_size)
        if args.cpu_compare:
            return cpu_compare(args, model, tmp)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        summary = score_variants(str(tmp / "in.vcf"), args.fasta, str(tmp / "out.vcf"), model=model,
                                 scores=args.scores, window=args.window, batch_size=args.batch_size,
                                 chunk_size=args.chunk_size)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    cfg = model.config
    result = {
        "model": args.model, "variant": cfg.variant, "d_model": cfg.d_model, "n_layer": cfg.n_layer,
        "device": device, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "scores": args.scores, "records": summary["records"], "alts": summary["alts"], "scored": summary["scored"],
        "window": summary["window"], "compute_dtype": dtype_name(model_compute_dtype(model)),
        "seconds": round(seconds, 3), "records_per_s": round(summary["records"] / seconds, 2),
        "alts_per_s": round(summary["alts"] / seconds, 2), "backend": model.backend,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))


def cpu_compare(args, model, tmp: Path) -> None:
    """Channels-first fp32 ('today') and the channels-last path in --dtype, alternated."""
    import statistics

    from caduceus_cli.model.kernels.mixer_cpu import channels_first
    from caduceus_cli.model.precision import dtype_name, model_compute_dtype
    from caduceus_cli.pipelines.variants import score_variants

    load_before = [round(x, 2) for x in os.getloadavg()]
    new_dtype = model.compute_dtype
    times = {"today": [], "new": []}
    summary = None
    for _ in range(args.repeats):
        for name in ("today", "new"):
            model.compute_dtype = "fp32" if name == "today" else new_dtype
            with channels_first() if name == "today" else contextlib.nullcontext():
                start = time.perf_counter()
                summary = score_variants(str(tmp / "in.vcf"), args.fasta, str(tmp / f"{name}.vcf"), model=model,
                                         scores=args.scores, window=args.window, batch_size=args.batch_size,
                                         chunk_size=args.chunk_size)
                times[name].append(time.perf_counter() - start)
    model.compute_dtype = new_dtype
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model": args.model, "records": summary["records"], "alts": summary["alts"], "window": summary["window"],
        "batch_size": args.batch_size, "scores": args.scores, "threads": torch_threads(),
        "new_dtype": dtype_name(model_compute_dtype(model)),
        "today_records_per_s": round(summary["records"] / median["today"], 2),
        "new_records_per_s": round(summary["records"] / median["new"], 2),
        "speedup": round(median["today"] / median["new"], 2),
        "seconds": {name: [round(x, 2) for x in t] for name, t in times.items()},
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
