"""`caduceus ism`: in-silico saturation mutagenesis of genomic regions."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import CaduceusError
from ..pipelines.interpret.settings import BIGWIG_STATS, ISM_CHUNK, ISM_METHODS, MAX_PLOT_BASES, SIZE_LIMITS
from ..pipelines.variants.settings import DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, QuietOption, ResumeOption,
                      RevisionOption, SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def ism_command(
    regions: Optional[str] = typer.Argument(None, help="BED regions (gzip ok); or give -r."),
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA (plain or bgzip, indexed on first use)."),
    region: Optional[str] = typer.Option(None, "--region", "-r", help="Regions instead of a BED file: chr:beg-end "
                                         "(1-based, inclusive), comma-separated."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Parquet: region, chrom, pos (1-based), ref, "
                                         "alt, one column per method."),
    method: Optional[str] = typer.Option(None, "--method", help=f"Comma-separated: {', '.join(ISM_METHODS[:-1])} "
                                         "(default masked); a fine-tuned classifier as --model scores classifier."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    window: Optional[int] = SizeOption(None, "--window", limits=SIZE_LIMITS["window"], help=f"The model's input around each position (default "
                                         f"{DEFAULT_WINDOW:,}, or the model's trained length when shorter); "
                                         "wt-marginal: the tile length."),
    flank: int = SizeOption(DEFAULT_FLANK, "--flank", limits=SIZE_LIMITS["flank"], help="wt-marginal: bases of context, at least, on each side "
                              "of every position."),
    class_label: Optional[str] = typer.Option(None, "--class", help="classifier: the class whose probability change "
                                              "is scored (default: the class predicted for the region)."),
    bigwig: Optional[str] = typer.Option(None, "--bigwig", help="A per-base bigWig of the first method (regions must "
                                         "not overlap), with its provenance in FILE.json."),
    bigwig_stat: str = typer.Option(BIGWIG_STATS[0], "--bigwig-stat", help=f"{', '.join(BIGWIG_STATS)} of the three "
                                    "alternative scores at each base."),
    plot: Optional[str] = typer.Option(None, "--plot", help=f"A sequence logo (PNG) of the first method, for one "
                                       f"region of at most {MAX_PLOT_BASES} bp."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", limits=SIZE_LIMITS["batch_size"], help=f"Windows per forward pass (default "
                                             f"{DEFAULT_BATCH} on CUDA, {DEFAULT_BATCH_CPU} on CPU)."),
    chunk_size: int = SizeOption(ISM_CHUNK, "--chunk-size", limits=SIZE_LIMITS["chunk_size"], help="Positions scored together (the unit of --resume; "
                                   "rounded up to whole wt-marginal tiles)."),
    resume: bool = ResumeOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    backend: str = BackendOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """In-silico saturation mutagenesis: every position of the regions, each of the three other bases.

    Examples:

      caduceus ism -f GRCh38.fa -r chr2:1000001-1000200 -o ism.parquet --plot ism.png

      caduceus ism peaks.bed -f GRCh38.fa --method masked,wt-marginal -o ism.parquet --bigwig ism.bw

      caduceus ism promoters.bed -f GRCh38.fa --model clf_dir/ -o clf_ism.parquet
    """
    from ..pipelines.interpret.ism import ism

    use_threads(threads, dtype)

    if output is None and bigwig is None and plot is None:
        raise CaduceusError("nothing to write: give -o FILE.parquet, --bigwig FILE.bw or --plot FILE.png")
    with Progress("ism", unit="bases", quiet=quiet) as progress:
        summary = ism(fasta, regions, output, region=region, methods=method, model=model, window=window, flank=flank,
                      batch_size=batch_size, chunk_size=chunk_size, class_label=class_label, bigwig=bigwig,
                      bigwig_stat=bigwig_stat, plot=plot, resume=resume, device=device, dtype=dtype, backend=backend,
                      revision=revision, progress=progress, set_total=progress.set_total)
    if summary["rank"] != 0:
        return
    written = ", ".join(p for p in (output, bigwig, plot) if p)
    report("ism", f"scored {summary['rows']:,} substitutions at {summary['positions']:,} positions of "
                  f"{summary['regions']:,} region(s) by {', '.join(summary['methods'])} in {summary['seconds']:,.1f} s "
                  f"-> {written}", summary, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("ism")(ism_command)
