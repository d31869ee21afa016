"""`caduceus pretrain`: masked-LM pretraining on genomes (one GPU, CPU, or many GPUs through torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..pipelines.pretrain.settings import (DEFAULT_VALID_TAIL, MICRO_BATCH_TOKENS, REAL_LIMITS, SIZE_LIMITS,
                                           WARMUP_FRACTION, PretrainSettings)
from ._common import (BACKEND_HELP, DeviceOption, Progress, QuietOption, RealOption, SizeOption, SummaryJsonOption,
                      ThreadsOption, duration, report, use_threads)


_DEFAULTS = PretrainSettings()


def _default(name: str) -> str:
    return f" (default: {getattr(_DEFAULTS, name)})"


def _size(name: str, help: str, default: bool = True):
    """The option of a size setting, in its range (SIZE_LIMITS), its default stated in the help."""
    return SizeOption(None, "--" + name.replace("_", "-"), limits=SIZE_LIMITS[name],
                      help=help + (_default(name) if default else ""))


def _real(name: str, help: str):
    return RealOption(None, "--" + name.replace("_", "-"), **REAL_LIMITS[name], help=help + _default(name))


def pretrain_command(
    genomes: Optional[List[Path]] = typer.Argument(None, help="Genome FASTA files (plain, bgzip or gzip). "
                                                   "May be left out with --resume."),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--output", help="Run folder: checkpoints, metrics.jsonl, final/."),
    variant: Optional[str] = typer.Option(None, "--variant", help="ps (RC-equivariant, parameter sharing) or ph "
                                          "(trained with RC augmentation)." + _default("variant")),
    d_model: Optional[int] = _size("d_model", "Model width."),
    n_layer: Optional[int] = _size("n_layer", "Number of Caduceus blocks."),
    seq_len: Optional[int] = _size("seq_len", "Window length in bp."),
    batch_size: Optional[int] = _size("batch_size", "Global batch, in windows, over all processes."),
    micro_batch_size: Optional[int] = _size("micro_batch_size", "Windows per forward pass and process (gradient "
                                            "accumulation). (default: the largest divisor of the per-process batch "
                                            f"with at most {MICRO_BATCH_TOKENS:,} tokens per pass, a PS window "
                                            "counting twice)", default=False),
    steps: Optional[int] = _size("steps", "Optimiser steps."),
    lr: Optional[float] = _real("lr", "Peak learning rate."),
    warmup: Optional[int] = _size("warmup", f"Linear warmup steps, then cosine decay. (default: {WARMUP_FRACTION:.0%} "
                                  "of --steps)", default=False),
    weight_decay: Optional[float] = _real("weight_decay", "AdamW weight decay (not on norms, biases, embeddings, "
                                          "A_log, D)."),
    seed: Optional[int] = _size("seed", "Seed of the weights and of the data."),
    intervals: Optional[Path] = typer.Option(None, "--intervals", help="BED with a split column (chrom start end "
                                             "train|valid|test), as the HyenaDNA hg38 bed."),
    valid_contigs: Optional[str] = typer.Option(None, "--valid-contigs", help="Comma-separated contigs held out "
                                                f"for validation (default: the last {DEFAULT_VALID_TAIL:.0%} of "
                                                "every long contig)."),
    valid_windows: Optional[int] = _size("valid_windows", "Validation windows."),
    checkpoint_every: Optional[int] = _size("checkpoint_every", "Steps between checkpoints."),
    valid_every: Optional[int] = _size("valid_every", "Steps between validations."),
    log_every: Optional[int] = _size("log_every", "Steps between metric lines."),
    keep_checkpoints: Optional[int] = _size("keep_checkpoints", "Checkpoints kept."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop cleanly (checkpoint + final model) once "
                                           "this wall time has passed: 420, 7m, 1h30m."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder (same "
                                          "configuration; a different one is refused)."),
    device: Optional[str] = DeviceOption,
    backend: Optional[str] = typer.Option(None, "--backend", help=BACKEND_HELP + _default("backend")),
    threads: Optional[int] = ThreadsOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Masked-LM pretraining of a Caduceus model on random windows of genomes.

    15% of real bases are targets (80% [MASK], 10% random base, 10% unchanged); Ph trains with RC
    augmentation. Many GPUs: torchrun --nproc-per-node N -m caduceus_cli pretrain ...

    Examples:

      caduceus pretrain sacCer3.fa.gz -o run --d-model 128 --n-layer 4 --seq-len 1024 --max-time 2h

      caduceus pretrain --resume run
    """
    from ..pipelines.pretrain import pretrain

    use_threads(threads)
    contigs = [c.strip() for c in valid_contigs.split(",") if c.strip()] if valid_contigs else None
    options = dict(variant=variant, d_model=d_model, n_layer=n_layer, seq_len=seq_len, batch_size=batch_size,
                   micro_batch_size=micro_batch_size, steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay,
                   seed=seed, intervals=str(intervals) if intervals else None, valid_contigs=contigs,
                   valid_windows=valid_windows, checkpoint_every=checkpoint_every, valid_every=valid_every,
                   log_every=log_every, keep_checkpoints=keep_checkpoints, max_time=max_time, device=device,
                   backend=backend)
    with Progress("pretrain", unit="steps", quiet=quiet) as bar:
        summary = pretrain([str(g) for g in genomes or []], str(out_dir) if out_dir else None,
                           resume=str(resume) if resume else None, progress=bar, set_total=bar.set_total, **options)
    if summary["rank"] == 0:
        report("pretrain", sentence(summary), summary, as_json=as_json, quiet=quiet)


def sentence(summary: dict) -> str:
    """``trained 400 of 400 steps (0.4 M tokens; train loss 1.213, valid loss 1.224) in 7m05s -> run/final``."""
    losses = "; ".join(f"{name} loss {summary[key]:.3f}" for name, key in (("train", "train_loss"), ("valid", "valid_loss"))
                       if summary.get(key) is not None)
    stopped = " (stopped by --max-time; continue with --resume)" if summary["stopped_early"] else ""
    return (f"trained {summary['steps']:,} of {summary['steps_planned']:,} steps ({summary['tokens'] / 1e6:,.1f} M tokens"
            f"{'; ' + losses if losses else ''}) in {duration(summary['elapsed_s'])}{stopped} -> {summary.get('final')}")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_command)
