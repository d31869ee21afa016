"""Speed of `caduceus embed`: regions/s, tokens/s and peak memory for N regions of 1,536 bp.

The whole pipeline is timed (BED parsing, FASTA reads on the reader thread, tokenisation, model,
Parquet writing), after a short warm-up run that is not counted. Regions are drawn uniformly from
the genome with a seed, so runs are comparable across machines.

    # CPU, the bundled model (or a random PS 128 x 4 model when the bundled one is absent)
    python benchmarks/embed_speed.py --regions 200 --device cpu
    # H200, the published Caduceus-PS size (d_model 256, 16 layers) with random weights
    python benchmarks/embed_speed.py --regions 10000 --device cuda --random-model ps:256x16
    # two GPUs: the same command under torchrun (rank 0 reports)
    torchrun --standalone --nproc-per-node 2 benchmarks/embed_speed.py --regions 10000 --random-model ps:256x16
    # are two outputs the same embeddings, row for row?
    python benchmarks/embed_speed.py --compare single.parquet multi.parquet

tokens/s counts input bases (one token per base); Caduceus-Ph with post-hoc conjoining runs two
passes per token, Caduceus-PS one. The region sampling is shared with `caduceus benchmark speed`
(`caduceus_cli.pipelines.benchmark.speed`), which also measures embed regions/s on one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GENOME = REPO.parent / "shared" / "data" / "genomes" / "sacCer3.fa.gz"


def build_model(args):
    """A loaded model: --random-model variant:DxL (seeded random weights), else --model."""
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model
    from caduceus_cli.model.checkpoint import DTYPES, bundled_model_dir

    spec = args.random_model
    if spec is None and args.model == "bundled" and not (bundled_model_dir() / "config.json").is_file():
        spec = "ps:128x4"
        print("the bundled model is not installed yet: using a random PS 128 x 4 model", file=sys.stderr)
    if spec is None:
        return load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend), args.model
    variant, size = spec.split(":")
    d_model, n_layer = (int(x) for x in size.lower().split("x"))
    torch.manual_seed(args.seed)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d_model=d_model, n_layer=n_layer)).eval()
    model.backend = args.backend
    model.to(device=args.device, dtype=DTYPES[args.dtype] if args.dtype else None)
    model.source = {"id": f"random-{variant}-{d_model}x{n_layer}-seed{args.seed}", "revision": None, "sha256": None}
    return model, model.source["id"]


def peak_memory(device: str) -> dict:
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def run(args) -> dict:
    import torch

    from caduceus_cli.pipelines.benchmark.speed import sample_regions
    from caduceus_cli.pipelines.embed import embed_regions

    from caduceus_cli.runtime import resolve_device

    rank = int(os.environ.get("RANK", "0") or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    args.device = str(resolve_device(args.device))  # cuda:LOCAL_RANK under torchrun
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch.distributed as dist

    if world > 1:
        # One process group for the warm-up and the timed run (embed_regions reuses it).
        dist.init_process_group("gloo")
    model, model_id = build_model(args)
    regions = sample_regions(Path(args.genome), args.regions + args.warmup, args.length, args.seed)
    # Under torchrun every rank must see the same BED and write its part beside the same output:
    # rank 0 makes the folder and tells the others where it is.
    tmp = tempfile.mkdtemp(prefix="caduceus-embed-speed-", dir=args.tmpdir) if rank == 0 else None
    if world > 1:
        box = [tmp]
        dist.broadcast_object_list(box, src=0)
        tmp = box[0]
    warm_bed, bed = Path(tmp) / "warmup.bed", Path(tmp) / "regions.bed"
    if rank == 0:
        warm_bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions[:args.warmup]))
        bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in regions[args.warmup:]))
    if world > 1:
        dist.barrier()
    try:
        out = Path(args.output) if args.output else Path(tmp) / "embeddings.parquet"
        opts = dict(model=model, batch_size=args.batch_size, pool=args.pool, rc=not args.no_rc,
                    max_length=args.max_length, context=args.context)
        if args.warmup:
            embed_regions(args.genome, warm_bed, Path(tmp) / "warmup.parquet", **opts)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        result = embed_regions(args.genome, bed, out, **opts)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        if world > 1:
            dist.barrier()
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
    n = args.regions
    return {
        "model": model_id, "variant": model.config.variant, "d_model": model.config.d_model,
        "n_layer": model.config.n_layer, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "world_size": world, "torch_threads": torch.get_num_threads(), "dtype": args.dtype or "float32",
        "autocast": "bf16" if args.device.startswith("cuda") else "none", "backend": args.backend,
        "pool": args.pool, "regions": n, "region_bp": args.length, "batch_size": int(result.metadata["batch_size"]),
        "seconds": round(seconds, 3), "regions_per_s": round(n / seconds, 2), "tokens_per_s": round(n * args.length / seconds, 1),
        **peak_memory(args.device), "rows_written": result.n_regions if rank == 0 else None,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }


def compare(a: str, b: str, atol: float) -> int:
    import numpy as np
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.num_rows != tb.num_rows:
        print(f"different row counts: {ta.num_rows} vs {tb.num_rows}")
        return 1
    for col in ("contig", "start", "end", "name", "strand", "n_padded"):
        if ta.column(col).to_pylist() != tb.column(col).to_pylist():
            print(f"column {col} differs")
            return 1
    ea = np.stack(ta.column("embedding").to_numpy(zero_copy_only=False))
    eb = np.stack(tb.column("embedding").to_numpy(zero_copy_only=False))
    diff = float(np.abs(ea - eb).max()) if len(ea) else 0.0
    scale = float(np.abs(ea).max()) if len(ea) else 0.0
    print(f"{ta.num_rows} rows, same regions in the same order; max |difference| {diff:.3g} (max |value| {scale:.3g})")
    return 0 if diff <= atol else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=200, help="regions timed (default 200)")
    parser.add_argument("--length", type=int, default=1536, help="bp per region (default 1536)")
    parser.add_argument("--warmup", type=int, default=16, help="regions embedded first, not timed")
    parser.add_argument("--genome", default=str(DEFAULT_GENOME), help="FASTA to sample from (default sacCer3)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--random-model", help="variant:DxL with random weights, e.g. ps:256x16 (the published size)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="cast weights: float32 (default), bfloat16")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--pool", default="mean")
    parser.add_argument("--no-rc", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="keep the embeddings here (default: a temporary file)")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--max-length", type=int, default=None,
                        help="embed regions up to this length without tiling (default: the model's trained length)")
    parser.add_argument("--context", type=int, default=None, help="the model reads this many bp around each "
                        "region (embed --context); tokens/s still counts region bases")
    parser.add_argument("--json", default="embed_speed.json", help="write the results here")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two Parquet outputs and exit")
    parser.add_argument("--atol", type=float, default=2e-2, help="--compare tolerance (bf16 on GPU: 2e-2)")
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare, args.atol))
    result = run(args)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
