"""`caduceus benchmark SUITE`: the paper's evaluations (and ours) as one command, with a report folder."""

from __future__ import annotations

import sys

import typer

from ..choices import BACKENDS, DEFAULT_MODEL
from ..limits import MAX_BASES, MAX_BATCH, MAX_REPEATS
from ._common import DeviceOption, Progress, QuietOption, SizeOption, ThreadsOption, use_threads


class TaskProgress(Progress):
    """One progress reused by every task: each engine call that announces its total starts afresh."""

    def set_total(self, total: int | None) -> None:
        self.restart(total)


def progress_unit(suite: str, protocol: str) -> str:
    """What the engine counts: fine-tuning steps, the eQTL SVM's variants, else probed sequences."""
    return "steps" if protocol == "finetune" and suite != "vep-eqtl" else "variants" if suite == "vep-eqtl" \
        else "sequences"


def benchmark_command(
    suite: str = typer.Argument(..., help="nt-suite, genomic-benchmarks, gue, vep-eqtl or speed."),
    output: str = typer.Option(..., "--output", "-o", help="Report folder: results.jsonl, summary.md, summary.png."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="'bundled', a folder or a hub id (speed: a comma-separated "
                              "list, random:ps:256x16 for random weights of a size)."),
    protocol: str = typer.Option("probe", "--protocol", help="probe (frozen embeddings + logistic regression) or "
                                 "finetune (the paper's recipe: 10 epochs / 5 seeds Genomic Benchmarks and GUE, "
                                 "20 epochs / 10 seeds NT)."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated tasks (default: all; with --data, those it holds)."),
    data: str = typer.Option(None, "--data", help="Local copy of the suite's data in the source's own layout "
                             "(nothing is downloaded)."),
    cache: str = typer.Option(None, "--cache", help="Download cache (default: $CADUCEUS_CACHE/benchmark or "
                              "~/.cache/caduceus/benchmark; Hugging Face files use the Hugging Face cache)."),
    baseline: str = typer.Option(None, "--baseline", help="kmer: add a k-mer logistic regression on the same splits."),
    resume: bool = typer.Option(False, "--resume", help="Continue the report in -o: skip tasks that have rows."),
    fasta: str = typer.Option(None, "--fasta", "-f", help="Genome: hg38 for vep-eqtl; for Genomic Benchmarks "
                              "coordinate files (one FASTA, or class=PATH,class=PATH)."),
    tss: str = typer.Option(None, "--tss", help="TSS annotation (BED or GTF) for vep-eqtl's distance buckets."),
    seeds: int = SizeOption(None, "--seeds", maximum=MAX_REPEATS, help="Seeds (default: probe 1; finetune the paper's 5 or 10; "
                              "vep-eqtl 5)."),
    epochs: int = SizeOption(None, "--epochs", help="Fine-tuning epochs (default: the suite's, as in the paper)."),
    folds: int = SizeOption(None, "--folds", minimum=2, maximum=MAX_REPEATS, help="Folds of the stratified CV used where a task has only a test "
                              "split (default: NT 10, others 5)."),
    max_sequences: int = SizeOption(None, "--max-sequences", help="Cap every split at N sequences (stratified, "
                                      "seeded subsample; the report says so). For quick runs."),
    batch_size: int = SizeOption(None, "--batch-size", maximum=MAX_BATCH, help="Sequences per batch (default: the engine's)."),
    lengths: str = typer.Option(None, "--lengths", help="speed: comma-separated lengths (default: GPU 1536,131072; "
                                "CPU 1024)."),
    dtypes: str = typer.Option(None, "--dtypes", help="speed: compute dtypes auto, fp32 and/or bf16 (default: auto)."),
    backends: str = typer.Option(None, "--backends", help=f"speed: comma-separated selective-scan backends ({', '.join(BACKENDS)}; default auto)."),
    window: int = SizeOption(None, "--window", minimum=3, maximum=MAX_BASES, help="vep-eqtl: positions (bp) around "
                             "the variant averaged into its features (default 1536)."),
    context: int = SizeOption(None, "--context", minimum=3, maximum=MAX_BASES, help="vep-eqtl: bases the model reads "
                              "around each variant (default: the model's trained length, 131,072 for the 131k "
                              "checkpoints)."),
    features: str = typer.Option(None, "--features", help="vep-eqtl: paper (default; the official "
                                 "vep_embeddings.py features) or mean (strand-averaged window mean)."),
    device: str = DeviceOption,
    dtype: str = typer.Option("auto", "--dtype", help="Compute dtype of the probe protocol's feature passes: auto, "
                              "fp32 or bf16 (see `caduceus embed --help`; speed: use --dtypes)."),
    threads: int = ThreadsOption,
    quiet: bool = QuietOption,
) -> None:
    """Run a benchmark suite and write a report folder (results.jsonl, summary.md, summary.png).

    Examples:

      caduceus benchmark gue --data GUE --protocol probe --baseline kmer -o gue_report

      caduceus benchmark speed --model bundled,random:ps:256x16 --lengths 1536 -o speed_report
    """
    from ..pipelines.benchmark import run_benchmark

    use_threads(threads, dtype)

    def note(message: str) -> None:
        if not quiet:
            sys.stderr.write(f"caduceus: benchmark: {message}\n")

    options = {k: v for k, v in (("lengths", lengths), ("dtypes", dtypes), ("backends", backends),
                                 ("window", window), ("context", context), ("features", features)) if v is not None}
    if dtype != "auto":
        options["dtype"] = dtype
    with TaskProgress("benchmark", unit=progress_unit(suite, protocol), quiet=quiet) as progress:
        rows = run_benchmark(suite, output, model=model, protocol=protocol, tasks=tasks, data=data, cache=cache,
                             baseline=baseline, resume=resume, fasta=fasta, tss=tss, seeds=seeds, epochs=epochs,
                             folds=folds, max_sequences=max_sequences, batch_size=batch_size, device=device,
                             note=note, progress=progress, **options)
    note(f"{len(rows)} rows in {output}/results.jsonl; summary in {output}/summary.md")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_command)
