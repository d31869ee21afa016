"""`caduceus predict`: apply a fine-tuned classifier or probe to sequences."""

from __future__ import annotations

from typing import Optional

import typer

from ..choices import ATTRIBUTIONS, PLOT_MAX_BASES, PLOT_TOP, PLOT_TOP_MAX
from ..limits import MAX_BATCH
from ._common import (BackendOption, DeviceOption, DtypeOption, LabeledFastaOption, Progress, QuietOption,
                      SequenceColumnOption, SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def predict_command(
    model_dir: str = typer.Argument(..., help="A classifier folder from `caduceus finetune classify` or `probe`."),
    input: str = typer.Argument(..., help="Sequences: FASTA, CSV/TSV with a sequence column, or BED + --fasta "
                                          "(detected by content; gzip ok; '-' for stdin)."),
    output: str = typer.Option("-", "--output", "-o", help="out.tsv (.gz: bgzip) or out.parquet; '-' writes TSV to "
                                                          "stdout."),
    fmt: Optional[str] = typer.Option(None, "--format", help="tsv or parquet (default: from the -o name; stdout: tsv)."),
    fasta: Optional[str] = LabeledFastaOption,
    sequence_column: Optional[str] = SequenceColumnOption,
    batch_size: Optional[int] = SizeOption(None, "--batch-size", "-b", maximum=MAX_BATCH, help="Sequences per "
                                           "forward pass (default: 64 on CPU, 512 on CUDA)."),
    attribute: Optional[str] = typer.Option(
        None, "--attribute", help=f"Per-base importances for the predicted label instead of one row per sequence: "
        f"one of {', '.join(ATTRIBUTIONS)} (ism: each base changed to the 3 others, the change of the "
        "predicted label's probability; saliency: gradient x input through the token embedding). One row per "
        "input base; use -o out.parquet."),
    plot: Optional[str] = typer.Option(None, "--plot", help="With --attribute: sequence-logo PNGs of the top "
                                       "sequences by predicted probability, as DIR/RANK_NAME.png (a folder: "
                                       "ends in / or exists) or PREFIX_RANK_NAME.png; sequences of up to "
                                       f"{PLOT_MAX_BASES} bases."),
    plot_top: Optional[int] = SizeOption(None, "--plot-top", maximum=PLOT_TOP_MAX, help=f"How many logos --plot "
                                         f"draws (default {PLOT_TOP})."),
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Apply a fine-tuned classifier or probe: one row per input sequence, in input order.

    Columns: name, prediction (the most probable label, or the regression value), prob_<label> per
    class. With --attribute: name, position (1-based), base, prediction, probability, then the
    method's scores (ism, ism_A..ism_T; or saliency), one row per input base. Many GPUs:
    torchrun --nproc-per-node N -m caduceus_cli predict ...

    Examples:

      caduceus predict prom_clf test.csv.gz -o predictions.tsv

      caduceus predict prom_clf regions.bed -f genome.fa -o - | head

      caduceus predict prom_clf test.csv.gz --attribute ism -o attributions.parquet --plot logos/
    """
    from ..pipelines.finetune import predict
    from ..runtime import env_rank

    use_threads(threads, dtype)
    is_main = env_rank() == 0
    with Progress("predict", unit="sequences", quiet=quiet or not is_main) as progress:
        result = predict(model_dir, input, output, fasta=fasta, sequence_column=sequence_column,
                         batch_size=batch_size, device=device, backend=backend, dtype=dtype, progress=progress,
                         fmt=fmt, attribute=attribute, plot=plot, plot_top=plot_top)
    if is_main:
        where = "stdout" if result.output == "-" else result.output
        summary = {"records": result.n_records, "cropped": result.truncated, "seconds": round(result.seconds, 3),
                   "output": where}
        what = f"predicted {result.n_records:,} sequences"
        if attribute:
            what = f"attributed ({attribute}) every base of {result.n_records:,} sequences"
            summary["attribution"] = attribute
        if result.logos is not None:
            summary["logos"] = result.logos
            where += f"; {len(result.logos)} logo{'s' * (len(result.logos) != 1)} -> {plot}"
        report("predict", f"{what} ({result.truncated:,} cropped to the model's max length) in "
               f"{result.seconds:.1f} s -> {where}", summary, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
