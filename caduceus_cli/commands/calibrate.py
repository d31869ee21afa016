"""`caduceus calibrate`: a background of random SNVs, for percentiles of variant scores."""

from __future__ import annotations

from typing import Optional

import typer

from ..pipelines.interpret.settings import CALIBRATION_SCORES, CALIBRATION_SITES, SIZE_LIMITS
from ..pipelines.variants.settings import (DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW, LLR_METHODS,
                                           PERCENTILE_SCORES)
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, QuietOption, RevisionOption,
                      SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def calibrate_command(
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA (plain or bgzip, indexed on first use)."),
    output: str = typer.Option(..., "--output", "-o", help="The background (.parquet): one row per SNV, the settings "
                               "in its metadata."),
    regions_file: Optional[str] = typer.Option(None, "--regions-file", "-R", help="Draw sites only in these BED "
                                               "regions (default: the whole reference)."),
    n: int = SizeOption(CALIBRATION_SITES, "--n", limits=SIZE_LIMITS["n"], help="Random sites; each gives 3 SNVs (the other bases)."),
    seed: int = SizeOption(0, "--seed", limits=SIZE_LIMITS["seed"], help="Seed of the draw."),
    scores: str = typer.Option(",".join(CALIBRATION_SCORES), "--scores", help=f"Comma-separated: "
                               f"{', '.join(PERCENTILE_SCORES)}."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    window: Optional[int] = SizeOption(None, "--window", limits=SIZE_LIMITS["window"], help=f"As score-variants' --window (default "
                                         f"{DEFAULT_WINDOW:,}, or the model's trained length when shorter)."),
    context: Optional[int] = SizeOption(None, "--context", limits=SIZE_LIMITS["window"], help="As score-variants' "
                                        "--context (default: the model's trained length, at least the window)."),
    llr_method: str = typer.Option(LLR_METHODS[0], "--llr-method", help=f"As score-variants': "
                                   f"{', '.join(LLR_METHODS)}."),
    flank: int = SizeOption(DEFAULT_FLANK, "--flank", limits=SIZE_LIMITS["flank"], help="wt-marginal: as score-variants' --flank."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", limits=SIZE_LIMITS["batch_size"], help=f"Windows per forward pass (default "
                                             f"{DEFAULT_BATCH} on CUDA, {DEFAULT_BATCH_CPU} on CPU)."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    backend: str = BackendOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Score a seeded random background of SNVs, for score-variants --background (percentiles).

    Examples:

      caduceus calibrate -f GRCh38.fa -o background.parquet --n 2000

      caduceus calibrate -f GRCh38.fa -R promoters.bed --llr-method wt-marginal -o background_wt.parquet
    """
    from ..pipelines.interpret.calibrate import calibrate

    use_threads(threads, dtype)

    with Progress("calibrate", unit="sites", quiet=quiet) as progress:
        summary = calibrate(fasta, output, regions_file=regions_file, n=n, seed=seed, scores=scores, model=model,
                            window=window, context=context, llr_method=llr_method, flank=flank,
                            batch_size=batch_size, device=device, dtype=dtype, backend=backend, revision=revision,
                            progress=progress, set_total=progress.set_total)
    report("calibrate", f"scored {summary['snvs']:,} SNVs at {summary['sites']:,} random sites "
                        f"({', '.join(summary['scores'])}, {summary['llr_method']}, window {summary['window']:,} bp, context "
                        f"{summary['context']:,} bp) in "
                        f"{summary['seconds']:,.1f} s -> {summary['output']}", summary, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
