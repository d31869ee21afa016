"""`caduceus track`: per-base bigWig tracks of a genome from the wild-type marginal."""

from __future__ import annotations

from typing import Optional

import typer

from ..pipelines.interpret.settings import SIZE_LIMITS, TRACK_CHUNK_TILES, TRACK_STATS
from ..pipelines.variants.settings import DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, QuietOption, ResumeOption,
                      RevisionOption, SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def track_command(
    fasta: str = typer.Argument(..., help="Reference FASTA (plain or bgzip, indexed on first use)."),
    regions: Optional[str] = typer.Argument(None, help="BED regions (gzip ok; overlapping ones are merged); default: "
                                            "every contig of the FASTA."),
    output: str = typer.Option(..., "--output", "-o", help="bigWig file (.bw); with several --stat, one file each: "
                               "out.bw -> out.entropy.bw, ... (provenance in FILE.json beside each)."),
    region: Optional[str] = typer.Option(None, "--region", "-r", help="Regions instead of a BED file: chr or "
                                         "chr:beg-end (1-based, inclusive), comma-separated."),
    stat: str = typer.Option("mean-alt-llr", "--stat", help=f"Comma-separated: {', '.join(TRACK_STATS)}."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    window: Optional[int] = SizeOption(None, "--window", limits=SIZE_LIMITS["window"], help=f"Tile length: the model's input (default "
                                         f"{DEFAULT_WINDOW:,}, or the model's trained length when shorter)."),
    flank: int = SizeOption(DEFAULT_FLANK, "--flank", limits=SIZE_LIMITS["flank"], help="Bases of context, at least, on each side of every base "
                              "(tiles overlap by twice this)."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", limits=SIZE_LIMITS["batch_size"], help=f"Tiles per forward pass (default "
                                             f"{DEFAULT_BATCH} on CUDA, {DEFAULT_BATCH_CPU} on CPU)."),
    chunk_tiles: int = SizeOption(TRACK_CHUNK_TILES, "--chunk-tiles", limits=SIZE_LIMITS["chunk_tiles"], help="Tiles per chunk (the unit of --resume "
                                    "and of torchrun sharding)."),
    resume: bool = ResumeOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    backend: str = BackendOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Per-base tracks (bigWig) of the model's view of a genome: log p(ref), entropy, mean alternative LLR.

    Examples:

      caduceus track GRCh38.fa -r chr2:1-1000000 --stat logp-ref,entropy -o chr2.bw

      torchrun --nproc-per-node 8 -m caduceus_cli track GRCh38.fa -o genome.bw
    """
    from ..pipelines.interpret.track import write_track

    use_threads(threads, dtype)

    with Progress("track", unit="bases", quiet=quiet) as progress:
        summary = write_track(fasta, regions, output, region=region, stats=stat, model=model, window=window,
                              flank=flank, batch_size=batch_size, chunk_tiles=chunk_tiles, resume=resume,
                              device=device, dtype=dtype, backend=backend, revision=revision, progress=progress,
                              set_total=progress.set_total)
    if summary["rank"] != 0:
        return
    report("track", f"{summary['bases']:,} bases in {summary['tiles']:,} tiles of {summary['window']:,} bp (flank "
                    f"{summary['flank']}) in {summary['seconds']:,.1f} s ({summary['bases_per_second'] or 0:,.0f} "
                    f"bases/s) -> {', '.join(summary['outputs'].values())}", summary, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("track")(track_command)
