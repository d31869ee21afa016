"""Pretraining throughput (tokens/s) and peak memory of Caduceus-PS and -Ph on the current device.

Runs the very training step `caduceus pretrain` runs (``Trainer.train_step`` fed by the same
background ``batch_stream`` through ``runtime.prefetch``, masking and RC augmentation included), on real genomes when given
(default: ../shared/data/genomes/*.fa.gz if present) or on random bases. Warm-up steps are excluded.

    python benchmarks/pretrain_speed.py                       # PS and Ph, 128 x 4, 1,024 bp, batch 256
    python benchmarks/pretrain_speed.py --variant ps --steps 50 --json out.json
    python benchmarks/pretrain_speed.py --backend mamba-ssm      # the same with mamba-ssm's kernels
    python benchmarks/pretrain_speed.py --kernels old,new        # the Triton kernels' old and new paths
    torchrun --nproc-per-node 2 benchmarks/pretrain_speed.py  # global batch split over 2 GPUs

Prints a table and one JSON document (rank 0 only under torchrun).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model.kernels.scan import BACKENDS, resolve_backend  # noqa: E402
from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402
from caduceus_cli.pipelines.pretrain import (RC_AUGMENT_PROB, GenomeSet, Trainer, WindowSampler,  # noqa: E402
                                             batch_stream, default_micro_batch, new_model, split_regions)
from caduceus_cli.runtime import prefetch, torchrun  # noqa: E402

DEFAULT_GENOMES = sorted(glob.glob(str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" /
                                       "genomes" / "*.fa.gz")))


def bench_variant(variant: str, args, rt, data: GenomeSet, regions: np.ndarray) -> dict:
    local_batch = args.batch_size // rt.world_size
    micro = args.micro_batch_size or default_micro_batch(local_batch, args.seq_len, variant)
    total_steps = args.warmup_steps + args.steps
    model = new_model(variant, args.d_model, args.n_layer, args.seq_len, seed=0)
    trainer = Trainer(model, lr=args.lr, warmup=10, steps=10 * total_steps, weight_decay=0.1,
                      micro_batch_size=micro, runtime=rt, backend=args.backend)
    sampler = WindowSampler(data, regions, args.seq_len)
    cuda = rt.device.type == "cuda"
    batches = prefetch(batch_stream(sampler, 0, rt.rank, local_batch, 0, total_steps,
                                    RC_AUGMENT_PROB if variant == "ph" else 0.0, pin=cuda), depth=4)
    try:
        for _ in range(args.warmup_steps):
            _, inputs, labels, n_targets = next(batches)
            trainer.train_step(inputs, labels, n_targets)
        trainer.take_train_loss()  # syncs the device
        rt.barrier()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(rt.device)
        start = time.perf_counter()
        for _ in range(args.steps):
            _, inputs, labels, n_targets = next(batches)
            trainer.train_step(inputs, labels, n_targets)
        loss = trainer.take_train_loss()
        if cuda:
            torch.cuda.synchronize()
        rt.barrier()
        seconds = time.perf_counter() - start
    finally:
        batches.close()
    tokens = args.steps * args.batch_size * args.seq_len
    peak = torch.cuda.max_memory_allocated(rt.device) / 2**30 if cuda else None
    return {
        "variant": "Caduceus-PS" if variant == "ps" else "Caduceus-Ph",
        "d_model": args.d_model, "n_layer": args.n_layer, "seq_len": args.seq_len,
        "global_batch": args.batch_size, "micro_batch": micro, "processes": rt.world_size,
        "precision": "bf16 autocast" if cuda else "fp32",
        "steps_timed": args.steps, "warmup_steps": args.warmup_steps,
        "seconds": round(seconds, 3),
        "tokens_per_s": tokens / seconds,
        "step_ms": 1000 * seconds / args.steps,
        "peak_memory_gib_per_gpu": None if peak is None else round(peak, 2),
        "train_loss_timed_steps": loss,
        "device": torch.cuda.get_device_name(rt.device) if cuda else "cpu",
        "backend": resolve_backend(args.backend, rt.device),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", default=["ps", "ph"], choices=["ps", "ph"])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256, help="global batch (windows)")
    p.add_argument("--micro-batch-size", type=int, default=None,
                   help="windows per forward pass (default: what `caduceus pretrain` picks)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first")
    p.add_argument("--lr", type=float, default=8e-3)
    p.add_argument("--genome", nargs="*", default=None, help="FASTA files (default: the shared genomes, "
                   "else random bases)")
    p.add_argument("--device", default=None)
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="triton (default on GPU), mamba-ssm (alias cuda), torch, numba (default on CPU)")
    p.add_argument("--kernels", default="new", help="kernel sets to time in turn, separated by commas: old, new "
                   "or VAR=VALUE pairs joined by '+' (see caduceus_cli/model/kernels/versions.py)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the JSON here")
    args = p.parse_args()

    with torchrun(args.device) as rt:
        run(args, rt)


def run(args, rt) -> None:
    genomes = DEFAULT_GENOMES if args.genome is None else args.genome
    if genomes:
        data = GenomeSet(genomes)
        regions = split_regions(data, args.seq_len)[0]
        source = ", ".join(Path(g).name for g in genomes)
    else:
        rng = np.random.default_rng(0)
        data = GenomeSet.from_arrays({"random": rng.integers(7, 11, 10_000_000, dtype=np.uint8)})
        regions = np.array([[0, data.total]], dtype=np.int64)
        source = "random bases"
    try:
        results = []
        for v in args.variant:
            for kernels in args.kernels.split(","):
                with using_kernels(kernels):
                    results.append({**bench_variant(v, args, rt, data, regions), "kernels": kernels})
    finally:
        data.close()
    if rt.rank != 0:
        return
    cols = ["variant", "processes", "global_batch", "micro_batch", "precision", "tokens_per_s", "step_ms",
            "peak_memory_gib_per_gpu", "backend", "kernels"]
    print(f"# data: {source}; device: {results[0]['device']}")
    print("  ".join(f"{c:>22}" for c in cols))
    for r in results:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:>22,.0f}" if c == "tokens_per_s" else f"{v:>22.1f}" if isinstance(v, float)
                         else f"{str(v):>22}")
        print("  ".join(cells))
    doc = {"benchmark": "pretrain_speed", "data": source, "results": results}
    print(json.dumps(doc, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
