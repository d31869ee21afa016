"""Costs of the interpretation commands on real data, with the machine's load recorded.

    python benchmarks/interpret_speed.py dense --n 1000          # score-variants llr: masked vs wt-marginal
    python benchmarks/interpret_speed.py track --bases 100000    # caduceus track on contig z
    python benchmarks/interpret_speed.py ism --bases 100 --methods masked,wt-marginal,embedding
    python benchmarks/interpret_speed.py track --bases 1000000 --device cuda --batch-size 64 --warmup

``dense`` scores the first N records of the 1000 Genomes VCF (``../shared/data/variants``) with the
llr score both ways (same model, window and records), reports variants/s of each, the speed-up and
the Spearman correlation of the two LLRs over the SNVs both scored. ``track`` times ``write_track``
(mean-alt-llr) on the first BASES of contig z; ``ism`` times ``ism`` per method on BASES of contig z
and reports seconds per kb. Prints one JSON line per measurement (with the load average before and
after, the CPU model and torch's thread count).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "variants"
VCF = DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FASTA = DATA / "1kgp_grch37_chr20_1-2Mb.fa"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def context(args) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None
    return {"model": args.model, "window": args.window, "flank": args.flank, "batch_size": args.batch_size,
            "dtype": args.dtype, "device": args.device, "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "cpu": cpu_model(), "cpus": os.cpu_count()}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far: on a shared machine, what a run cost
    independently of the other jobs (wall time on an idle machine lies between it / threads and it)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dense(args, tmp: Path) -> dict:
    from scipy.stats import spearmanr

    from caduceus_cli.pipelines.variants import score_variants

    with gzip.open(args.vcf, "rt") as lines, open(tmp / "in.vcf", "w") as out:
        n = 0
        for line in lines:
            n += not line.startswith("#")
            if n > args.n:
                break
            out.write(line)
    values, seconds = {}, {}
    for method in args.methods.split(","):
        before, cpu = load(), cpu_seconds()
        start = time.perf_counter()
        summary = score_variants(str(tmp / "in.vcf"), str(args.fasta), str(tmp / f"{method}.tsv"), model=args.model,
                                 scores="llr", window=args.window, batch_size=args.batch_size, llr_method=method,
                                 flank=args.flank, device=args.device, dtype=args.dtype)
        seconds[method] = time.perf_counter() - start
        rows = [ln.rstrip("\n").split("\t") for ln in open(tmp / f"{method}.tsv") if not ln.startswith(("#", "chrom"))]
        values[method] = {(r[0], r[1], r[3], r[4]): float(r[5]) for r in rows if r[5] != "NA"}
        print(json.dumps({"measure": "dense", "llr_method": method, "records": summary["records"],
                          "snvs_scored": len(values[method]), "seconds": round(seconds[method], 1),
                          "snvs_per_s": round(len(values[method]) / seconds[method], 3),
                          "cpu_seconds": round(cpu_seconds() - cpu, 1), "load_before": before,
                          "load_after": load(), **context(args)}), flush=True)
    if {"masked", "wt-marginal"} <= set(values):
        both = sorted(set(values["masked"]) & set(values["wt-marginal"]))
        rho = spearmanr([values["masked"][k] for k in both], [values["wt-marginal"][k] for k in both]).statistic
        rate = {m: len(values[m]) / seconds[m] for m in values}
        return {"measure": "dense_comparison", "snvs": len(both), "spearman": round(float(rho), 4),
                "speedup": round(rate["wt-marginal"] / rate["masked"], 2), **context(args)}
    return {}


def track(args, tmp: Path) -> dict:
    from caduceus_cli.pipelines.interpret.track import write_track

    before, cpu = load(), cpu_seconds()
    start = time.perf_counter()
    summary = write_track(str(args.fasta), output=str(tmp / "t.bw"), region=f"z:1-{args.bases}", stats="mean-alt-llr",
                          model=args.model, window=args.window, flank=args.flank, batch_size=args.batch_size,
                          device=args.device, dtype=args.dtype)
    seconds = time.perf_counter() - start
    return {"measure": "track", "bases": summary["bases"], "tiles": summary["tiles"], "seconds": round(seconds, 1),
            "bases_per_s": round(summary["bases"] / seconds, 1),
            "minutes_per_mb": round(seconds / summary["bases"] * 1e6 / 60, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1), "load_before": before,
            "load_after": load(), **context(args)}


def ism(args, tmp: Path) -> dict:
    from caduceus_cli.pipelines.interpret.ism import ism as run_ism

    out = {}
    for method in args.methods.split(","):
        before, cpu = load(), cpu_seconds()
        start = time.perf_counter()
        summary = run_ism(str(args.fasta), region=f"z:100001-{100000 + args.bases}", methods=method, model=args.model,
                          window=args.window, flank=args.flank, batch_size=args.batch_size, device=args.device,
                          dtype=args.dtype)
        seconds = time.perf_counter() - start
        out[method] = round(seconds / summary["positions"] * 1000, 1)
        print(json.dumps({"measure": "ism", "method": method, "positions": summary["positions"],
                          "seconds": round(seconds, 1), "seconds_per_kb": out[method],
                          "cpu_seconds": round(cpu_seconds() - cpu, 1), "load_before": before,
                          "load_after": load(), **context(args)}), flush=True)
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("dense", "track", "ism"))
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--n", type=int, default=1000, help="dense: records of the VCF")
    ap.add_argument("--bases", type=int, default=100_000, help="track/ism: bases of contig z")
    ap.add_argument("--methods", default=None, help="dense: masked,wt-marginal; ism: masked,wt-marginal,embedding")
    ap.add_argument("--window", type=int, default=None, help="default: 1,536 capped at the model's trained length")
    ap.add_argument("--flank", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--warmup", action="store_true",
                    help="run the same measurement once on a small input first, untimed (a GPU compiles its kernels)")
    ap.add_argument("--vcf", default=str(VCF), help="the 1000 Genomes VCF (dense)")
    ap.add_argument("--fasta", default=str(FASTA), help="its reference (contig z)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                    help="compute dtype (auto: bf16 on a CPU with bf16 matrix units, else fp32)")
    args = ap.parse_args()
    args.methods = args.methods or ("masked,wt-marginal" if args.what == "dense" else "masked,wt-marginal,embedding")
    measure = {"dense": dense, "track": track, "ism": ism}[args.what]
    if args.warmup:
        small = argparse.Namespace(**{**vars(args), "n": min(args.n, 50), "bases": min(args.bases, 2000)})
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
            measure(small, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    if result:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
