"""`caduceus embed`: embeddings of genomic regions (FASTA + BED, or every FASTA record)."""

from __future__ import annotations

from typing import Optional

import typer

from ..choices import PER_POSITION, POOLINGS
from ..pipelines.embed.settings import (DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA, DEFAULT_CENTER_WIDTH, DEFAULT_IO_THREADS,
                                        DEFAULT_MAX_LENGTH, DEFAULT_MAX_TOKENS, DEFAULT_POOL, FORMATS)
from ..limits import MAX_BASES, MAX_BATCH, MAX_THREADS, MAX_TOKENS
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, QuietOption, ResumeOption, RevisionOption,
                      SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def embed(
    fasta: str = typer.Argument(..., help="Reference FASTA (plain or bgzip; plain gzip is decompressed to a temporary file). "
                                          "Without REGIONS: a FASTA of sequences, every record embedded ('-' for stdin)."),
    regions: Optional[str] = typer.Argument(None, help="BED3 or BED6+ regions (gzip ok, '-' for stdin). Name and strand "
                                                       "are used; minus-strand regions are reverse-complemented."),
    output: str = typer.Option("-", "--output", "-o", help="Output: .parquet (the recommended format), .npy/.npz "
                                                          "(+ a sidecar .regions.bed), .tsv; '-' writes TSV to stdout."),
    model: str = ModelOption,
    revision: Optional[str] = RevisionOption,
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    pool: str = typer.Option(DEFAULT_POOL, "--pool", help=f"{', '.join(POOLINGS)} (center: the mean over the central "
                             "--center-width bp; first/last: each strand's own first/last base), or "
                             f"{PER_POSITION} (one vector per position; Parquet or .npy/.npz)."),
    center_width: int = SizeOption(DEFAULT_CENTER_WIDTH, "--center-width", maximum=MAX_BASES,
                                   help="Width of the central window for --pool center (the paper's VEP features "
                                        "average 1,536 bp)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Hidden layer: 0 = token embeddings ... n_layer = last "
                                                              "(default; after the final norm); -1 = last."),
    no_rc: bool = typer.Option(False, "--no-rc", help="Caduceus-Ph: skip the reverse-complement pass (post-hoc "
                                                      "conjoining is on by default). No effect on Caduceus-PS."),
    window: Optional[int] = SizeOption(None, "--window", maximum=MAX_BASES, help="Embed N bp centred on each region "
                                       "instead of the region itself (padded with N past contig ends)."),
    context: Optional[int] = SizeOption(None, "--context", maximum=MAX_BASES, help="The model reads N bases centred "
                                        "on each region (N-padded past contig ends) and the region's own positions "
                                        "(or --window's) are pooled (default: the model reads the region itself)."),
    tile: bool = typer.Option(False, "--tile", help="Tile regions longer than --max-length (overlapping tiles, "
                                                    "stitched); without it such regions are refused."),
    tile_overlap: Optional[int] = SizeOption(None, "--tile-overlap", minimum=0, maximum=MAX_BASES,
                                             help="Overlap of consecutive tiles in bp (default: max length / 8)."),
    max_length: Optional[int] = SizeOption(None, "--max-length", maximum=MAX_BASES, help="Longest sequence given to "
                                           "the model (default: the model's trained length, "
                                           f"{DEFAULT_MAX_LENGTH} if its config does not say)."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", "-b", maximum=MAX_BATCH, help=f"Sequences per batch "
                                           f"(default {DEFAULT_BATCH_CUDA} on CUDA, {DEFAULT_BATCH_CPU} on CPU)."),
    max_tokens: Optional[int] = SizeOption(None, "--max-tokens", maximum=MAX_TOKENS, help=f"At most this many bases "
                                           f"per batch (default {DEFAULT_MAX_TOKENS})."),
    fmt: Optional[str] = typer.Option(None, "--format", help=f"{', '.join(FORMATS)} (default: from the output "
                                                             "file name)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip (and count) bad regions instead of "
                                                                    "stopping: bad lines, unknown contigs, too long."),
    io_threads: int = SizeOption(DEFAULT_IO_THREADS, "--io-threads", maximum=MAX_THREADS,
                                 help="Threads reading sequences from the FASTA."),
    resume: bool = ResumeOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Embed genomic regions with a Caduceus model: FASTA + BED -> Parquet, .npy/.npz or TSV.

    Examples:

      caduceus embed GRCh38.fa peaks.bed -o peaks.parquet --window 1024

      caduceus embed GRCh38.fa promoters.bed.gz --pool center --resume -o promoters.npz
    """
    from ..pipelines.embed import embed_regions

    use_threads(threads, dtype)
    with Progress("embed", unit="regions", quiet=quiet) as progress:
        result = embed_regions(
            fasta, regions, output, model=model, device=device, dtype=dtype, backend=backend, revision=revision,
            pool=pool, center_width=center_width, layer=layer, rc=not no_rc, window=window, tile=tile,
            tile_overlap=tile_overlap, max_length=max_length, batch_size=batch_size, max_tokens=max_tokens,
            context=context,
            fmt=fmt, skip_invalid=skip_invalid, io_threads=io_threads, resume=resume,
            progress=progress, set_total=progress.set_total,
        )
    if result.output is None:  # a torchrun rank other than 0: rank 0 reports
        return
    rate = result.n_regions / result.seconds if result.seconds else 0.0
    where = "stdout" if result.output == "-" else result.output
    summary = {"regions": result.n_regions, "bases": result.bases, "skipped": result.n_skipped,
               "padded": result.n_padded, "tiled": result.n_tiled, "seconds": round(result.seconds, 3),
               "regions_per_second": round(rate, 2), "output": result.output, "format": result.format,
               "dim": result.dim, "pool": result.pool}
    report("embed", f"embedded {result.n_regions:,} regions ({result.bases:,} bp) in {result.seconds:,.1f} s "
                    f"({rate:,.1f} regions/s) -> {where}; skipped {result.n_skipped:,}, padded {result.n_padded:,}, "
                    f"tiled {result.n_tiled:,}", summary, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
