"""`caduceus finetune`: train models on top of Caduceus (`svm`: the paper's variant-effect SVM; `classify`:
full fine-tuning with a classification or regression head; `probe`: a linear probe on frozen embeddings)."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

from ..pipelines.svm_model import CS, DEFAULT_TEST_FRACTION, N_TRAIN, SEEDS
from ..pipelines.variants.settings import DEFAULT_BATCH, DEFAULT_WINDOW
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, RevisionOption, ThreadsOption,
                      duration, report, use_threads)

finetune_app = typer.Typer(help="Fine-tune a classifier (classify), fit a linear probe on frozen embeddings (probe) or the "
                                "variant-effect SVM (svm).\n\n"
                                "Examples:\n\n"
                                "  caduceus finetune classify train.csv --test test.csv -o my_classifier\n\n"
                                "  caduceus finetune probe train.csv --test test.csv -o my_probe\n\n"
                                "  caduceus finetune svm eqtl_labeled.tsv -f GRCh38.fa --tss gencode.gtf.gz -o svm_model",
                           no_args_is_help=True)


def svm_command(
    labeled: str = typer.Argument(..., help="Labeled variants: TSV (chrom, pos, ref, alt, label[, tissue]) or VCF with a label INFO field."),
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA."),
    tss: str = typer.Option(..., "--tss", help="TSS annotation (BED of TSS or GTF) for the distance buckets."),
    output: str = typer.Option(..., "--output", "-o", help="New folder for the fitted models (svm.json, bucket-*.npz, report.json)."),
    test: str = typer.Option(None, "--test", help="Labeled test set (default: the last --test-fraction of positions per contig)."),
    test_fraction: float = typer.Option(DEFAULT_TEST_FRACTION, "--test-fraction", help="Genomic hold-out fraction when --test is not given."),
    label_field: str = typer.Option("label", "--label-field", help="INFO field with the 0/1 label (VCF input)."),
    use_tissue: bool = typer.Option(False, "--use-tissue", help="Add the tissue (6th TSV column) as a feature."),
    n_train: int = typer.Option(N_TRAIN, "--n-train", help="Training subsample per fit (the paper's value is the default)."),
    window: int = typer.Option(DEFAULT_WINDOW, "--window", help="Window (bp) centred on the variant."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", help="Windows per forward pass."),
    device: str = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON (instead of the table)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary on stderr."),
) -> None:
    from ..pipelines.svm import train_svm

    use_threads(threads, dtype)
    with Progress("features", unit="variants", quiet=quiet) as progress:
        fitted = train_svm(labeled, fasta, tss, output, model=model, window=window, test=test,
                           test_fraction=test_fraction, label_field=label_field, use_tissue=use_tissue,
                           n_train=n_train, batch_size=batch_size, device=device, revision=revision, backend=backend,
                           dtype=dtype, progress=progress)
    if as_json:  # the report is the machine's summary: on stdout, as `models info --json`
        json.dump(fitted, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    _print_buckets(fitted)
    report("finetune svm", svm_sentence(fitted, output), fitted, quiet=quiet)


def svm_sentence(fitted: dict, output: str) -> str:
    """``fitted 3 of 4 distance-to-TSS buckets on 1,200 variants in 2m10s -> svm_model``."""
    done = sum("skipped" not in b for b in fitted["buckets"].values())
    return (f"fitted {done} of {len(fitted['buckets'])} distance-to-TSS buckets on {fitted['n_variants']:,} variants "
            f"in {duration(fitted['seconds'])} -> {output}")


def _print_buckets(fitted: dict) -> None:
    sys.stdout.write("bucket\tn_train\tn_test\tbest_C\tauroc_decision\tauroc_hard_labels\n")
    for name, b in fitted["buckets"].items():
        if "skipped" in b:
            sys.stdout.write(f"{name}\t{b['n_train']}\t{b['n_test']}\t-\tskipped: {b['skipped']}\t-\n")
        else:
            sys.stdout.write(f"{name}\t{b['n_train']}\t{b['n_test']}\t{b['best_C']}\t{b['auroc_decision']:.4f}\t"
                             f"{b['auroc_hard_labels']:.4f}\n")


svm_command.__doc__ = (f"Fit the paper's distance-to-TSS bucketed SVMs (StandardScaler + RBF SVC, C in "
                       f"{'/'.join(map(str, CS))}, {len(SEEDS)} seeds).\n\n"
                       "Examples:\n\n"
                       "  caduceus finetune svm eqtl_labeled.tsv -f GRCh38.fa --tss gencode.gtf.gz -o svm_model\n\n"
                       "  caduceus finetune svm labeled.vcf.gz -f GRCh38.fa --tss tss.bed --use-tissue -o svm_tissue\n")
finetune_app.command("svm")(svm_command)


# -- classify / probe: the recipe defaults come from the engine's constants ---------------------
from ..pipelines.finetune import recipe as _R  # noqa: E402 - plain constants, no torch

# Options of both classify and probe
_TaskOption = typer.Option("classification", "--task", help="classification (labels: integers or strings; binary or "
                           "multi-class) or regression (numeric target, MSE loss).")
_FastaOption = typer.Option(None, "--fasta", "-f", help="Reference FASTA for BED inputs.")
_SequenceColumnOption = typer.Option(None, "--sequence-column", help="CSV/TSV: the sequence column's name or 1-based "
                                     "number. (default: sequence/seq, or the column of DNA)")
_LabelColumnOption = typer.Option(None, "--label-column", help="CSV/TSV: the label column's name or 1-based number "
                                  "(default: label/target/y, or the last column); BED: its column number (default: "
                                  "the last column).")
_FoldsOption = typer.Option(None, "--folds", help="Stratified K-fold cross-validation of TRAIN in place of a test set.")
_ReportJsonOption = typer.Option(False, "--json", help="Print the full report as JSON.")
_QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar.")
_CLASSIFY_HELP = (
    "Fine-tune a Caduceus model with a classification (or regression) head, with the paper's recipe: "
    f"AdamW (betas {_R.ADAM_BETAS[0]}, {_R.ADAM_BETAS[1]}), weight decay {_R.WEIGHT_DECAY}, lr {_R.LR:g} with "
    f"{_R.WARMUP_FRACTION:.0%} warmup and cosine decay to {_R.FINAL_LR_FRACTION} x lr, gradient clipping "
    f"{_R.GRAD_CLIP}, batch {_R.BATCH_SIZE}, {_R.EPOCHS} epochs, bf16 autocast on GPU; {_R.POOLING} pooling, "
    "then linear; the best epoch on validation.\n\n"
    "Examples:\n\n"
    "  caduceus finetune classify prom_core_all/train.csv.gz --valid prom_core_all/dev.csv.gz "
    "--test prom_core_all/test.csv.gz -o prom_clf\n\n"
    "  caduceus finetune classify H3/test.fna.gz --folds 10 --seeds 1 -m kuleshov-group/caduceus-ph_seqlen-1k_d_model-256_n_layer-4_lr-8e-3 -o h3_cv\n\n"
    "Many GPUs: torchrun --nproc-per-node N -m caduceus_cli finetune classify ...")


def _print_runs(fitted: dict, as_json: bool) -> None:
    """The report as JSON, or one line per run and the summary as a tab-separated table."""
    if as_json:
        json.dump(fitted, sys.stdout, indent=2, default=float)
        sys.stdout.write("\n")
        return
    names = fitted["metric_names"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    sys.stdout.write("\t".join(["run", "best_epoch", *(f"valid_{n}" for n in names), *(f"test_{n}" for n in names)]) + "\n")
    for r in fitted["runs"]:
        key = f"seed {r['seed']}" + (f" fold {r['fold']}" if r.get("fold") is not None else "")
        valid, test = r.get("valid") or {}, r.get("test") or {}
        sys.stdout.write("\t".join([key, str(r.get("best_epoch") or "-"), *(fmt(valid.get(n)) for n in names),
                                    *(fmt(test.get(n)) for n in names)]) + "\n")
    for part, summary in fitted["summary"].items():
        if summary:
            cells = [f"{n}={s['mean']:.4f} ({s['min']:.4f}..{s['max']:.4f})" for n, s in summary.items()]
            sys.stdout.write(f"# {part} over {len(fitted['runs'])} run(s): " + " ".join(cells) + "\n")
    if fitted.get("status") == "stopped":
        sys.stderr.write(f"caduceus: {fitted['resume']}\n")


def runs_sentence(fitted: dict, output: str | None, seconds: float) -> str:
    """``10 run(s); test mcc 0.6285 (0.6121..0.6344) in 1m57s -> prom_clf``: the selection metric (else
    MCC, else the first) on the test split (the folds' held-out parts with --folds, else validation)."""
    text = f"{len(fitted['runs'])} run(s)"
    part = next((p for p in ("test", "cv", "valid") if fitted["summary"].get(p)), None)
    if part:
        summary = fitted["summary"][part]
        defined = [n for n, stat in summary.items() if stat and stat.get("mean") is not None]
        preferred = [(fitted.get("recipe") or {}).get("select_metric"), "mcc", "mse", *defined]
        name = next((n for n in preferred if n in defined), None)
        if name:
            stat = summary[name]
            text += f"; {part} {name} {stat['mean']:.4f} ({stat['min']:.4f}..{stat['max']:.4f})"
    if fitted.get("status") == "stopped":
        text += ", stopped by --max-time"
    return f"{text} in {duration(seconds)} -> {output}"


@finetune_app.command("classify", help=_CLASSIFY_HELP)
def classify_command(
    train: Optional[str] = typer.Argument(None, help="Labeled training data: CSV/TSV (sequence,label), FASTA with "
                                                     "'>name|label' headers, or BED + --fasta (detected by content)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="New folder for the fine-tuned model (config.json, "
                                         "model.safetensors), report.json and metrics.jsonl."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation data (default: a stratified --valid-fraction "
                                        "of TRAIN, drawn per seed)."),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction", help=f"Fraction of TRAIN held out for "
                                                   f"validation when --valid is not given. (default: {_R.VALID_FRACTION})"),
    test: Optional[str] = typer.Option(None, "--test", help="Test data: every run's best checkpoint is evaluated on it."),
    folds: Optional[int] = _FoldsOption,
    seeds: int = typer.Option(1, "--seeds", help="Repeat with seeds 1..N, each with its own validation split; "
                              "mean and min/max are reported (the paper: 10)."),
    model: str = ModelOption,
    revision: Optional[str] = RevisionOption,
    task: str = _TaskOption,
    fasta: Optional[str] = _FastaOption,
    sequence_column: Optional[str] = _SequenceColumnOption,
    label_column: Optional[str] = _LabelColumnOption,
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Training epochs. (default: {_R.EPOCHS})"),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Peak learning rate of AdamW; {_R.WARMUP_FRACTION:.0%} linear "
                                       f"warmup, cosine decay to {_R.FINAL_LR_FRACTION} x lr. (default: {_R.LR:g})"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help=f"Sequences per step over all processes. "
                                             f"(default: {_R.BATCH_SIZE})"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=f"AdamW weight decay (not on norms, "
                                                 f"biases, embeddings). (default: {_R.WEIGHT_DECAY})"),
    pool: Optional[str] = typer.Option(None, "--pool", help=f"Pooling of each strand before the linear head: mean, max, "
                                       f"center, first or last. (default: {_R.POOLING})"),
    center_width: Optional[int] = typer.Option(None, "--center-width", help="Positions averaged by --pool center. "
                                               "(default: 1, the central base or two)"),
    rc_aug: bool = typer.Option(False, "--rc-aug", help="Caduceus-Ph: reverse-complement each training sequence with "
                                "probability 0.5 (Ph is conjoined at evaluation; PS is strand-invariant anyway)."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train the head alone."),
    select_metric: Optional[str] = typer.Option(None, "--select-metric", help="Validation metric that picks the best "
                                                "epoch and the saved run. (default: mcc; mse for regression)"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Keep the central N bases of longer sequences "
                                             "(counted in the report). (default: no limit)"),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop cleanly after this wall time (420, 7m, "
                                           "1h30m), leaving a folder that --resume continues."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run stopped by --max-time (its folder)."),
    eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size", help="Sequences per evaluation batch "
                                                  "(default: --batch-size)."),
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = _ReportJsonOption,
    quiet: bool = _QuietOption,
) -> None:
    """Full fine-tuning (help text: _CLASSIFY_HELP, built from the engine's recipe constants)."""
    import os

    from ..errors import CaduceusError
    from ..pipelines.finetune import finetune_classifier
    from ..pipelines.pretrain import parse_duration

    started = time.perf_counter()
    use_threads(threads)
    if valid is not None and valid_fraction is not None:
        raise CaduceusError("give --valid FILE or --valid-fraction, not both")
    if output is None and resume is None:
        raise CaduceusError("give the output folder with -o DIR (or --resume DIR to continue a stopped run)")
    options = dict(valid_fraction=valid_fraction, epochs=epochs, lr=lr, batch_size=batch_size,
                   weight_decay=weight_decay, pool=pool, center_width=center_width)
    options = {k: v for k, v in options.items() if v is not None}
    is_main = int(os.environ.get("RANK", "0") or 0) == 0
    with Progress("finetune", unit="steps", quiet=quiet or not is_main) as progress:
        fitted = finetune_classifier(train, output, model=model, revision=revision, valid=valid, test=test,
                                     folds=folds, seeds=seeds, task=task, fasta=fasta, sequence_column=sequence_column,
                                     label_column=label_column, rc_aug=rc_aug, freeze_backbone=freeze_backbone,
                                     select_metric=select_metric, max_length=max_length,
                                     max_time=parse_duration(max_time), resume=resume, eval_batch_size=eval_batch_size,
                                     device=device, backend=backend, progress=progress, **options)
    if is_main:
        _print_runs(fitted, as_json)
        if not as_json:
            report("finetune classify", runs_sentence(fitted, output or resume, time.perf_counter() - started),
                   fitted, quiet=quiet)


_PROBE_HELP = (
    "Linear probe on frozen embeddings (the fast protocol: the model only runs forward, once per sequence): "
    f"StandardScaler + logistic regression (ridge for regression), C in {', '.join(f'{c:g}' for c in _R.PROBE_CS)} "
    f"chosen by {_R.PROBE_CV_FOLDS}-fold CV on TRAIN; features cached per model and data.\n\n"
    "Examples:\n\n"
    "  caduceus finetune probe tf_0/train.csv.gz --test tf_0/test.csv.gz -o tf0_probe\n\n"
    "  caduceus finetune probe H3/test.fna.gz --folds 5 -o h3_probe")


@finetune_app.command("probe", help=_PROBE_HELP)
def probe_command(
    train: str = typer.Argument(..., help="Labeled training data: CSV/TSV, FASTA '>name|label', or BED + --fasta."),
    output: str = typer.Option(..., "--output", "-o", help="New folder for the probe (a classifier folder: config.json, "
                               "model.safetensors), report.json and metrics.jsonl."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation data (default: out-of-fold metrics on TRAIN)."),
    test: Optional[str] = typer.Option(None, "--test", help="Test data."),
    folds: Optional[int] = _FoldsOption,
    seed: int = typer.Option(1, "--seed", help="Seed of the cross-validation splits."),
    model: str = ModelOption,
    revision: Optional[str] = RevisionOption,
    task: str = _TaskOption,
    fasta: Optional[str] = _FastaOption,
    sequence_column: Optional[str] = _SequenceColumnOption,
    label_column: Optional[str] = _LabelColumnOption,
    pool: str = typer.Option(_R.POOLING, "--pool", help="Pooling of each strand: mean, max, center, first or last."),
    center_width: int = typer.Option(1, "--center-width", help="Positions averaged by --pool center."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Keep the central N bases of longer sequences."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Sequences per forward pass (default: "
                                             f"{_R.PROBE_BATCH_SIZE['cpu']} on CPU, {_R.PROBE_BATCH_SIZE['cuda']} on CUDA)."),
    cache: Optional[str] = typer.Option(None, "--cache", help="Folder of cached features (default: "
                                        "$CADUCEUS_CACHE or ~/.cache/caduceus-cli, features/ inside)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached features."),
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = _ReportJsonOption,
    quiet: bool = _QuietOption,
) -> None:
    """Linear probe (help text: _PROBE_HELP, built from the engine's constants)."""
    import os

    from ..errors import CaduceusError
    from ..pipelines.finetune import fit_probe

    started = time.perf_counter()
    use_threads(threads, dtype)
    if cache is not None and no_cache:
        raise CaduceusError("give --cache DIR or --no-cache, not both")
    is_main = int(os.environ.get("RANK", "0") or 0) == 0
    with Progress("features", unit="sequences", quiet=quiet or not is_main) as progress:
        fitted = fit_probe(train, output, model=model, revision=revision, valid=valid, test=test, folds=folds, seed=seed,
                           task=task, fasta=fasta, sequence_column=sequence_column, label_column=label_column, pool=pool,
                           center_width=center_width, max_length=max_length, batch_size=batch_size,
                           cache=False if no_cache else cache, device=device, backend=backend, dtype=dtype,
                           progress=progress)
    if is_main:
        _print_runs(fitted, as_json)
        if not as_json:
            report("finetune probe", runs_sentence(fitted, output, time.perf_counter() - started), fitted,
                   quiet=quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(finetune_app, name="finetune")
