"""`caduceus finetune`: train models on top of Caduceus (`svm`: the paper's variant-effect SVM)."""

from __future__ import annotations

import json
import sys

import typer

from ..pipelines.svm_model import CS, DEFAULT_TEST_FRACTION, N_TRAIN, SEEDS
from ..pipelines.variants.settings import DEFAULT_BATCH, DEFAULT_WINDOW
from ._common import BackendOption, DeviceOption, ModelOption, Progress, RevisionOption, duration, report

finetune_app = typer.Typer(help="Fine-tune or fit classifiers on Caduceus features.\n\n"
                                "Examples:\n\n"
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
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON (instead of the table)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary on stderr."),
) -> None:
    from ..pipelines.svm import train_svm

    with Progress("features", unit="variants", quiet=quiet) as progress:
        fitted = train_svm(labeled, fasta, tss, output, model=model, window=window, test=test,
                           test_fraction=test_fraction, label_field=label_field, use_tissue=use_tissue,
                           n_train=n_train, batch_size=batch_size, device=device, revision=revision, backend=backend,
                           progress=progress)
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


def register(app: typer.Typer) -> None:
    app.add_typer(finetune_app, name="finetune")
