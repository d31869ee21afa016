"""Peak resident memory of `score-variants` and `embed` as the input grows (not a speed benchmark).

    python benchmarks/memory_scaling.py --records 10000,100000,1000000 --regions 10000,100000 --json mem.json

Each run is a fresh `python -m caduceus_cli` process on the CPU with a tiny random model (Caduceus-PS,
d_model 16, 1 layer: the model is not what is measured), on synthetic input over a real reference
(default: sacCer3, 12 Mb in 17 contigs, ../shared/data/genomes): SNVs at random positions with the reference's
own REF base, sorted, written as VCF; BED regions of --region-length bp. The peak RSS of each process comes from
wait4(); the RSS is also sampled every second to show it is flat while the records stream through.
The defaults keep the model's share of the time small (one 16 bp window per SNV, 32 bp regions,
1,024 windows per pass): what grows with the input is the number of records, not their cost.
A run still going after --max-seconds is stopped with SIGTERM (it stops cleanly at a batch boundary)
and reported as such, with the records it had done and its rate from its last progress line
(CADUCEUS_PROGRESS_SECONDS=10 here). Prints a table and, with --json, writes every figure and the
command line (after each run, so that a benchmark cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT.parent / "shared" / "data" / "genomes" / "sacCer3.fa.gz"


def tiny_model(folder: Path) -> Path:
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model

    torch.manual_seed(0)
    return save_model(CaduceusForMaskedLM(CaduceusConfig.small("ps", d_model=16, n_layer=1)), folder)


def contigs(reference: Path) -> dict[str, int]:
    from caduceus_cli.genome.fasta import Reference

    with Reference(reference) as ref:
        return dict(ref.contigs)


def write_vcf(path: Path, reference: Path, n: int, seed: int = 0) -> None:
    """``n`` SNVs at distinct random positions (sorted), REF read from the reference."""
    from caduceus_cli.genome.fasta import Reference

    rng = random.Random(seed)
    sizes = contigs(reference)
    total = sum(sizes.values())
    picks = sorted(rng.sample(range(total), min(n, total)))
    with Reference(reference) as ref, open(path, "w") as out:
        out.write("##fileformat=VCFv4.2\n")
        out.writelines(f"##contig=<ID={c},length={size}>\n" for c, size in sizes.items())
        out.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        offset = 0
        for contig, size in sizes.items():
            here = [p - offset for p in picks if offset <= p < offset + size]
            offset += size
            seq = ref.fetch(contig, 0, size)[0].upper()
            for pos0 in here:
                ref_base = seq[pos0] if seq[pos0] in "ACGT" else "A"
                alt = rng.choice([b for b in "ACGT" if b != ref_base])
                out.write(f"{contig}\t{pos0 + 1}\t.\t{ref_base}\t{alt}\t.\tPASS\t.\n")
    if n > total:
        raise SystemExit(f"--records {n} is more than the {total:,} positions of {reference}")


def write_bed(path: Path, reference: Path, n: int, length: int = 64, seed: int = 0) -> None:
    rng = random.Random(seed)
    sizes = [(c, s) for c, s in contigs(reference).items() if s > length]
    with open(path, "w") as out:
        for i in range(n):
            contig, size = rng.choice(sizes)
            start = rng.randrange(0, size - length)
            out.write(f"{contig}\t{start}\t{start + length}\tr{i}\t0\t{'+-'[i % 2]}\n")


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


PROGRESS = re.compile(r"^caduceus: \w+: ([\d,]+) (?:of [\d,]+ )?\w+.*?, ([\d,.]+) \w+/s", re.M)


def measure(args: list[str], max_seconds: float) -> dict:
    """Run ``python -m caduceus_cli ARGS``; peak RSS (wait4) and RSS sampled every second; SIGTERM
    after ``max_seconds``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CADUCEUS_PROGRESS_SECONDS": "10"}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "caduceus_cli", *args], env=env, stderr=subprocess.PIPE,
                            text=True)
    samples: list[int] = []
    stopped = threading.Event()

    def sample() -> None:
        while proc.poll() is None:
            value = rss_kib(proc.pid)
            if value:
                samples.append(value)
            if time.time() - started > max_seconds and not stopped.is_set():
                stopped.set()
                proc.send_signal(signal.SIGTERM)
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.stderr.read()  # until the process closes it (read here: a full pipe would block it)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join(timeout=5)
    if proc.returncode != 0 and not (stopped.is_set() and proc.returncode == 143):
        raise SystemExit(f"caduceus {' '.join(args)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    quarters = [samples[min(len(samples) - 1, int(q * len(samples)))] // 1024 for q in (0.25, 0.5, 0.75)] if samples else []
    row = {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "rss_mib_at_25_50_75_percent_of_time": quarters,
           "seconds": round(time.time() - started, 1), "summary": stderr.strip().splitlines()[-1:]}
    if proc.returncode == 143:
        done = PROGRESS.findall(stderr)
        row["stopped_after_seconds"] = max_seconds
        if done:
            row["done_at_last_progress_line"] = int(done[-1][0].replace(",", ""))
            row["rate_per_second_at_last_progress_line"] = float(done[-1][1].replace(",", ""))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default="10000,100000,1000000", help="VCF sizes for score-variants")
    ap.add_argument("--regions", default="10000,100000", help="BED sizes for embed")
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--scores", default="llr")
    ap.add_argument("--region-length", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=3600, help="stop a run (SIGTERM) after this long")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="caduceus-mem-") as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "model")
        for n in [int(x) for x in args.records.split(",") if x]:
            vcf = tmp / f"synthetic_{n}.vcf"
            write_vcf(vcf, args.reference, n)
            row = measure(["score-variants", str(vcf), "-f", str(args.reference), "-m", str(model), "--window",
                           str(args.window), "--batch-size", str(args.batch_size), "--scores", args.scores,
                           "--device", "cpu", "-o", str(tmp / "scored.vcf.gz")], args.max_seconds)
            results.append({"command": "score-variants", "records": n, **row})
            report(results, args.json)
            vcf.unlink()
        for n in [int(x) for x in args.regions.split(",") if x]:
            bed = tmp / f"synthetic_{n}.bed"
            write_bed(bed, args.reference, n, args.region_length)
            row = measure(["embed", str(args.reference), str(bed), "-m", str(model), "--batch-size",
                           str(args.batch_size), "--device", "cpu", "-o", str(tmp / "emb.parquet")], args.max_seconds)
            results.append({"command": "embed", "regions": n, **row})
            report(results, args.json)
    print(f"\n{'command':<15} {'input':>20} {'peak RSS (MiB)':>15} {'seconds':>9}  note")
    for r in results:
        size = f"{r.get('records', r.get('regions')):,} {'records' if 'records' in r else 'regions'}"
        note = (f"stopped: {r.get('done_at_last_progress_line', 0):,} done, "
                f"{r.get('rate_per_second_at_last_progress_line', 0):,.1f}/s" if "stopped_after_seconds" in r else "")
        print(f"{r['command']:<15} {size:>20} {r['peak_rss_mib']:>15,.1f} {r['seconds']:>9,.1f}  {note}")


def report(results: list[dict], path: Path | None) -> None:
    print(json.dumps(results[-1]), flush=True)
    if path is not None:
        path.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
