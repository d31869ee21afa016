"""Variants per second of `score-variants` (all zero-shot scores) on real 1000 Genomes SNVs/indels.

    python benchmarks/variants_speed.py --model random-ps-256x16 --device cuda --n 20000 --batch-size 256
    python benchmarks/variants_speed.py --model bundled --device cpu --n 200

`--model random-ps-256x16` builds a randomly initialised Caduceus-PS with d_model 256 and 16 layers
(the published configuration; speed does not depend on the weights), with the model builder of
`caduceus benchmark speed` (`caduceus_cli.pipelines.benchmark.speed`). Prints a table and JSON.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--window", type=int, default=1536)
    ap.add_argument("--scores", default="llr,embed_cos,embed_l2")
    ap.add_argument("--warmup", type=int, default=64, help="records scored first, untimed")
    ap.add_argument("--vcf", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"))
    ap.add_argument("--fasta", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.fa"))
    args = ap.parse_args()

    import torch

    from caduceus_cli.pipelines.benchmark.speed import build_model
    from caduceus_cli.pipelines.variants import score_variants
    from caduceus_cli.runtime import resolve_device

    device = str(resolve_device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = "random:" + ":".join(args.model.split("-")[1:3]) if args.model.startswith("random-") else args.model
        model = build_model(spec, device)
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
        "torch_threads": torch.get_num_threads(), "window": args.window, "batch_size": args.batch_size,
        "scores": args.scores, "records": summary["records"], "alts": summary["alts"], "scored": summary["scored"],
        "seconds": round(seconds, 3), "records_per_s": round(summary["records"] / seconds, 2),
        "alts_per_s": round(summary["alts"] / seconds, 2), "backend": model.backend,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
