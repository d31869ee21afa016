"""`caduceus finetune`: train models on top of Caduceus (`svm`: the paper's variant-effect SVM; `classify`:
full fine-tuning with a classification or regression head; `probe`: a linear probe on frozen embeddings)."""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer

from ..choices import POOLINGS
from ..pipelines.svm_model import CS, DEFAULT_TEST_FRACTION, N_TRAIN, SEEDS, SVM_LIMITS
from ..pipelines.variants.settings import DEFAULT_WINDOW
from ._common import (BackendOption, DeviceOption, DtypeOption, LabeledFastaOption, ModelOption, Progress,
                      QuietOption, RealOption, ReportJsonOption, RevisionOption, SequenceColumnOption, SizeOption,
                      ThreadsOption, duration, report, use_threads)

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
    test_fraction: float = RealOption(DEFAULT_TEST_FRACTION, "--test-fraction", above=0, below=1,
                                      help="Genomic hold-out fraction when --test is not given."),
    label_field: str = typer.Option("label", "--label-field", help="INFO field with the 0/1 label (VCF input)."),
    use_tissue: bool = typer.Option(False, "--use-tissue", help="Add the tissue (6th TSV column) as a feature."),
    n_train: int = SizeOption(N_TRAIN, "--n-train", limits=SVM_LIMITS["n_train"],
                              help="Training subsample per fit (the paper's value is the default)."),
    window: int = SizeOption(DEFAULT_WINDOW, "--window", limits=SVM_LIMITS["window"],
                             help="Positions (bp) around the variant whose outputs are averaged into its features."),
    context: Optional[int] = SizeOption(None, "--context", limits=SVM_LIMITS["context"], help="Bases the model reads "
                                        "around each variant, centred on it (default: the model's trained length "
                                        "when it declares one, else the window; N-padded past contig ends)."),
    features: str = typer.Option("paper", "--features", help="paper: the official vep_embeddings.py + vep_svm.ipynb "
                                 "features (1,537 positions per strand, conjoined per model as the notebook); mean: the "
                                 "strand-averaged mean over the window."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    batch_size: Optional[int] = SizeOption(None, "--batch-size", limits=SVM_LIMITS["batch_size"],
                                           help="Contexts per forward pass (default: as many as fit the memory budget, "
                                           "at most 64)."),
    device: str = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = ReportJsonOption,
    quiet: bool = QuietOption,
) -> None:
    from ..pipelines.svm import train_svm

    use_threads(threads, dtype)
    with Progress("features", unit="variants", quiet=quiet) as progress:
        fitted = train_svm(labeled, fasta, tss, output, model=model, window=window, context=context, features=features,
                           test=test,
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
_LabelColumnOption = typer.Option(None, "--label-column", help="CSV/TSV: the label column's name or 1-based number "
                                  "(default: label/target/y, or the last column); BED: its column number (default: "
                                  "the last column).")
_SIZES, _REALS = _R.SIZE_LIMITS, _R.REAL_LIMITS
_FoldsOption = SizeOption(None, "--folds", limits=_SIZES["folds"], help="Stratified K-fold cross-validation of TRAIN "
                          "in place of a test set.")
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


def _fit_and_report(name: str, fit, output: str | None, is_main: bool, *, as_json: bool, quiet: bool) -> None:
    """``fit(progress)`` (classify or probe) under its progress bar; then, on the main process, the
    runs on stdout (or the report as JSON) and the summary sentence on stderr."""
    started = time.perf_counter()
    description, unit = ("finetune", "steps") if name == "classify" else ("features", "sequences")
    with Progress(description, unit=unit, quiet=quiet or not is_main) as progress:
        fitted = fit(progress)
    if is_main:
        _print_runs(fitted, as_json)
        if not as_json:
            report(f"finetune {name}", runs_sentence(fitted, output, time.perf_counter() - started), fitted,
                   quiet=quiet)


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
    valid_fraction: Optional[float] = RealOption(None, "--valid-fraction", **_REALS["valid_fraction"], help=f"Fraction "
                                                 f"of TRAIN held out for validation when --valid is not given. "
                                                 f"(default: {_R.VALID_FRACTION})"),
    test: Optional[str] = typer.Option(None, "--test", help="Test data: every run's best checkpoint is evaluated on it."),
    folds: Optional[int] = _FoldsOption,
    seeds: int = SizeOption(1, "--seeds", limits=_SIZES["seeds"], help="Repeat with seeds 1..N, each with its own "
                            "validation split; mean and min/max are reported (the paper: 10)."),
    model: str = ModelOption,
    revision: Optional[str] = RevisionOption,
    task: str = _TaskOption,
    fasta: Optional[str] = LabeledFastaOption,
    sequence_column: Optional[str] = SequenceColumnOption,
    label_column: Optional[str] = _LabelColumnOption,
    epochs: Optional[int] = SizeOption(None, "--epochs", limits=_SIZES["epochs"], help=f"Training epochs. "
                                       f"(default: {_R.EPOCHS})"),
    lr: Optional[float] = RealOption(None, "--lr", **_REALS["lr"], help=f"Peak learning rate of AdamW; "
                                     f"{_R.WARMUP_FRACTION:.0%} linear warmup, cosine decay to {_R.FINAL_LR_FRACTION} "
                                     f"x lr. (default: {_R.LR:g})"),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", "-b", limits=_SIZES["batch_size"], help=f"Sequences "
                                           f"per step over all processes. (default: {_R.BATCH_SIZE})"),
    weight_decay: Optional[float] = RealOption(None, "--weight-decay", **_REALS["weight_decay"], help=f"AdamW weight "
                                               f"decay (not on norms, biases, embeddings). (default: {_R.WEIGHT_DECAY})"),
    pool: Optional[str] = typer.Option(None, "--pool", help=f"Pooling of each strand before the linear head: "
                                       f"{', '.join(POOLINGS)}. (default: {_R.POOLING})"),
    center_width: Optional[int] = SizeOption(None, "--center-width", limits=_SIZES["center_width"], help="Positions "
                                             "averaged by --pool center. (default: 1, the central base or two)"),
    rc_aug: bool = typer.Option(False, "--rc-aug", help="Caduceus-Ph: reverse-complement each training sequence with "
                                "probability 0.5 (Ph is conjoined at evaluation; PS is strand-invariant anyway)."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train the head alone."),
    select_metric: Optional[str] = typer.Option(None, "--select-metric", help="Validation metric that picks the best "
                                                "epoch and the saved run. (default: mcc; mse for regression)"),
    max_length: Optional[int] = SizeOption(None, "--max-length", "--context", limits=_SIZES["max_length"],
                                           help="Keep the central N bases of longer sequences (counted in the report); "
                                           "up to the model's trained length (131,072 for the published "
                                           "checkpoints). (default: no limit)"),
    checkpoint_blocks: Optional[bool] = typer.Option(None, "--checkpoint-blocks/--no-checkpoint-blocks",
                                                     help="Recompute each block in the backward pass instead of "
                                                     "keeping its activations: the same gradients in far less memory, "
                                                     "one more forward per step. (default: on when the longest training "
                                                     f"sequence is over {_R.CHECKPOINT_BLOCKS_ABOVE:,} bp)"),
    micro_batch_size: Optional[int] = SizeOption(None, "--micro-batch-size", limits=_SIZES["micro_batch_size"],
                                                 help="Sequences per forward and backward pass; their gradients add up "
                                                 "to the batch's (the same step in less memory). (default: on a GPU as "
                                                 "many as fit, by the activation estimate; the whole batch on a CPU)"),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop cleanly after this wall time (420, 7m, "
                                           "1h30m), leaving a folder that --resume continues."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run stopped by --max-time or a signal (its folder)."),
    eval_batch_size: Optional[int] = SizeOption(None, "--eval-batch-size", limits=_SIZES["eval_batch_size"],
                                                help="Sequences per evaluation batch (default: --batch-size)."),
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = ReportJsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Full fine-tuning (help text: _CLASSIFY_HELP, built from the engine's recipe constants)."""
    from ..errors import CaduceusError
    from ..pipelines.finetune import finetune_classifier
    from ..pipelines.pretrain import parse_duration
    from ..runtime import env_rank

    use_threads(threads)
    if valid is not None and valid_fraction is not None:
        raise CaduceusError("give --valid FILE or --valid-fraction, not both")
    if output is None and resume is None:
        raise CaduceusError("give the output folder with -o DIR (or --resume DIR to continue a stopped run)")
    options = dict(valid_fraction=valid_fraction, epochs=epochs, lr=lr, batch_size=batch_size,
                   weight_decay=weight_decay, pool=pool, center_width=center_width)
    options = {k: v for k, v in options.items() if v is not None}
    is_main = env_rank() == 0
    _fit_and_report("classify", lambda progress: finetune_classifier(
        train, output, model=model, revision=revision, valid=valid, test=test, folds=folds, seeds=seeds, task=task,
        fasta=fasta, sequence_column=sequence_column, label_column=label_column, rc_aug=rc_aug,
        freeze_backbone=freeze_backbone, select_metric=select_metric, max_length=max_length,
        max_time=parse_duration(max_time), resume=resume, eval_batch_size=eval_batch_size, device=device,
        backend=backend, progress=progress, checkpoint_blocks=checkpoint_blocks, micro_batch_size=micro_batch_size,
        **options), output or resume,
        is_main, as_json=as_json, quiet=quiet)


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
    seed: int = SizeOption(1, "--seed", limits=_SIZES["seed"], help="Seed of the cross-validation splits."),
    model: str = ModelOption,
    revision: Optional[str] = RevisionOption,
    task: str = _TaskOption,
    fasta: Optional[str] = LabeledFastaOption,
    sequence_column: Optional[str] = SequenceColumnOption,
    label_column: Optional[str] = _LabelColumnOption,
    pool: str = typer.Option(_R.POOLING, "--pool", help=f"Pooling of each strand: {', '.join(POOLINGS)}."),
    center_width: int = SizeOption(1, "--center-width", limits=_SIZES["center_width"],
                                   help="Positions averaged by --pool center."),
    max_length: Optional[int] = SizeOption(None, "--max-length", limits=_SIZES["max_length"],
                                           help="Keep the central N bases of longer sequences."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", "-b", limits=_SIZES["batch_size"], help="Sequences "
                                           f"per forward pass (default: {_R.PROBE_BATCH_SIZE['cpu']} on CPU, "
                                           f"{_R.PROBE_BATCH_SIZE['cuda']} on CUDA)."),
    cache: Optional[str] = typer.Option(None, "--cache", help="Folder of cached features (default: "
                                        "$CADUCEUS_CACHE/features or ~/.cache/caduceus/features)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write cached features."),
    device: Optional[str] = DeviceOption,
    backend: str = BackendOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    as_json: bool = ReportJsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Linear probe (help text: _PROBE_HELP, built from the engine's constants)."""
    from ..errors import CaduceusError
    from ..pipelines.finetune import fit_probe
    from ..runtime import env_rank

    use_threads(threads, dtype)
    if cache is not None and no_cache:
        raise CaduceusError("give --cache DIR or --no-cache, not both")
    is_main = env_rank() == 0
    _fit_and_report("probe", lambda progress: fit_probe(
        train, output, model=model, revision=revision, valid=valid, test=test, folds=folds, seed=seed, task=task,
        fasta=fasta, sequence_column=sequence_column, label_column=label_column, pool=pool, center_width=center_width,
        max_length=max_length, batch_size=batch_size, cache=False if no_cache else cache, device=device,
        backend=backend, dtype=dtype, progress=progress), output, is_main, as_json=as_json, quiet=quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(finetune_app, name="finetune")
