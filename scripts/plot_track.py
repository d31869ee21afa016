"""Plot per-base bigWig tracks (from `caduceus track`) over a region, with TSS marks from a BED file.

    python scripts/plot_track.py chr2.logp-ref.bw chr2.entropy.bw --region chr2:250001-290000 \
        --tss ../shared/data/annotation/hg38_refGene_tss.bed.gz --smooth 201 -o docs/img/track_chr2.png

One panel per track: the per-base values in light grey and their running mean over --smooth bases;
TSSs in the region as dashed lines, labelled with the gene name (column 4).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np


def read_tss(path: str, contig: str, start: int, end: int) -> list[tuple[int, str]]:
    opener = gzip.open if path.endswith(".gz") else open
    found = []
    with opener(path, "rt") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if line.startswith(("#", "track")) or len(fields) < 3 or fields[0] != contig:
                continue
            if start <= int(fields[1]) < end:
                found.append((int(fields[1]), fields[3] if len(fields) > 3 else ""))
    return sorted(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tracks", nargs="+", help="bigWig files of `caduceus track`")
    ap.add_argument("--region", required=True, help="chrom:start-end, 1-based inclusive")
    ap.add_argument("--tss", help="BED of TSSs (gzip ok); name in column 4")
    ap.add_argument("--smooth", type=int, default=201, help="running mean over this many bases")
    ap.add_argument("--title", default="")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyBigWig

    contig, _, span = args.region.rpartition(":")
    start, end = (int(x) for x in span.replace(",", "").split("-"))
    start -= 1
    x = np.arange(start, end) + 1
    tss = read_tss(args.tss, contig, start, end) if args.tss else []
    fig, axes = plt.subplots(len(args.tracks), 1, figsize=(11, 2.2 * len(args.tracks) + 0.6), sharex=True,
                             squeeze=False)
    for ax, path in zip(axes[:, 0], args.tracks):
        values = np.array(pyBigWig.open(path).values(contig, start, end), dtype=np.float64)
        meta = json.loads(Path(path + ".json").read_text()) if Path(path + ".json").is_file() else {}
        filled = np.where(np.isnan(values), np.nanmean(values), values)
        kernel = np.ones(args.smooth) / args.smooth
        ax.plot(x, values, color="0.82", linewidth=0.3)
        smooth = np.convolve(filled, kernel, mode="same") / np.convolve(np.ones_like(filled), kernel, mode="same")
        ax.plot(x, smooth, color="tab:blue", linewidth=1.0,
                label=f"running mean, {args.smooth} bp")
        ax.set_ylabel(meta.get("statistic", Path(path).name), fontsize=8)
        for pos, name in tss:
            ax.axvline(pos + 1, color="tab:red", linestyle="--", linewidth=0.6)
        ax.tick_params(labelsize=7)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    top = axes[0, 0]
    labelled = []
    for pos, name in tss:  # one label per gene and 2 kb, so that clustered TSSs stay readable
        if not labelled or name != labelled[-1][1] or pos - labelled[-1][0] > 2000:
            top.annotate(name, (pos + 1, 1.0), xycoords=("data", "axes fraction"), fontsize=6, color="tab:red",
                         rotation=90, va="bottom", ha="center")
            labelled.append((pos, name))
    axes[-1, 0].set_xlabel(f"{contig} position (1-based)", fontsize=8)
    fig.suptitle(args.title, fontsize=8, y=0.995)
    fig.tight_layout()
    fig.savefig(args.output, dpi=140)


if __name__ == "__main__":
    main()
