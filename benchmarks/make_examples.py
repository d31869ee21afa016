"""Write the small synthetic example inputs of `caduceus embed` (caduceus_cli/data/examples/).

The sequences are random (seeded), NOT a real genome: they exist so that the README's first command
runs on a fresh machine without downloads. Re-running this script reproduces the files byte for byte.

    python benchmarks/make_examples.py [--out caduceus_cli/data/examples] [--seed 4]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

CONTIGS = {"chrA": 18_000, "chrB": 9_000}


def random_contig(rng: random.Random, length: int) -> str:
    """Random ACGT with a soft-masked (lowercase) stretch and a run of N, like a real assembly."""
    seq = [rng.choice("ACGT") for _ in range(length)]
    lo = rng.randrange(length // 4, length // 2)
    for i in range(lo, lo + 600):
        seq[i] = seq[i].lower()
    n0 = rng.randrange(length // 2, 3 * length // 4)
    seq[n0:n0 + 150] = ["N"] * 150
    return "".join(seq)


def regions(rng: random.Random) -> list[tuple[str, int, int, str, str]]:
    out = []
    for k in range(36):
        contig = "chrA" if k % 3 else "chrB"
        length = rng.choice([200, 256, 300, 512, 1000, 1024])  # the bundled model is trained at 1,024 bp
        start = rng.randrange(0, CONTIGS[contig] - length)
        out.append((contig, start, start + length, f"region{k + 1}", rng.choice("+-")))
    # one region that runs past the end of its contig: embedded with N padding, and counted
    out.append(("chrB", CONTIGS["chrB"] - 120, CONTIGS["chrB"] + 80, "past_contig_end", "+"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "caduceus_cli" / "data" / "examples"))
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "synthetic_genome.fa", "w") as f:
        for name, length in CONTIGS.items():
            seq = random_contig(rng, length)
            f.write(f">{name} synthetic random sequence (seed {args.seed}), not a real genome\n")
            f.writelines(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60))
    with open(out / "synthetic_regions.bed", "w") as f:
        f.write(f"# synthetic example regions for `caduceus embed` (benchmarks/make_examples.py, seed {args.seed})\n")
        for contig, start, end, name, strand in regions(rng):
            f.write(f"{contig}\t{start}\t{end}\t{name}\t0\t{strand}\n")
    import pysam

    pysam.faidx(str(out / "synthetic_genome.fa"))  # shipped, so nothing is written into the install
    print(f"wrote {out / 'synthetic_genome.fa'} (+ .fai) and {out / 'synthetic_regions.bed'}")


if __name__ == "__main__":
    main()
