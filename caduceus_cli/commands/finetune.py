"""`caduceus finetune`: train models on top of Caduceus (`svm`: the paper's variant-effect SVM)."""

from __future__ import annotations

import json
import sys

import typer

from ._common import BackendOption, DeviceOption, ModelOption, Progress

finetune_app = typer.Typer(help="Fine-tune or fit classifiers on Caduceus features.", no_args_is_help=True)


@finetune_app.command("svm")
def svm_command(
    labeled: str = typer.Argument(..., help="Labeled variants: TSV (chrom, pos, ref, alt, label[, tissue]) or VCF with a label INFO field."),
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA."),
    tss: str = typer.Option(..., "--tss", help="TSS annotation (BED of TSS or GTF) for the distance buckets."),
    output: str = typer.Option(..., "--output", "-o", help="New folder for the fitted models (svm.json, bucket-*.npz, report.json)."),
    test: str = typer.Option(None, "--test", help="Labeled test set (default: the last --test-fraction of positions per contig)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Genomic hold-out fraction when --test is not given."),
    label_field: str = typer.Option("label", "--label-field", help="INFO field with the 0/1 label (VCF input)."),
    use_tissue: bool = typer.Option(False, "--use-tissue", help="Add the tissue (6th TSV column) as a feature."),
    n_train: int = typer.Option(5000, "--n-train", help="Training subsample per fit (the paper: 5,000)."),
    window: int = typer.Option(1536, "--window", help="Window (bp) centred on the variant."),
    model: str = ModelOption,
    revision: str = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of --model."),
    batch_size: int = typer.Option(64, "--batch-size", help="Windows per forward pass."),
    device: str = DeviceOption,
    backend: str = BackendOption,
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fit the paper's distance-to-TSS bucketed SVMs (StandardScaler + RBF SVC, C in 1/5/10, 5 seeds)."""
    from ..pipelines.svm import train_svm

    with Progress("features", unit="variants", quiet=quiet) as progress:
        report = train_svm(labeled, fasta, tss, output, model=model, window=window, test=test,
                           test_fraction=test_fraction, label_field=label_field, use_tissue=use_tissue,
                           n_train=n_train, batch_size=batch_size, device=device, revision=revision, backend=backend,
                           progress=progress)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    sys.stdout.write("bucket\tn_train\tn_test\tbest_C\tauroc_decision\tauroc_hard_labels\n")
    for name, b in report["buckets"].items():
        if "skipped" in b:
            sys.stdout.write(f"{name}\t{b['n_train']}\t{b['n_test']}\t-\tskipped: {b['skipped']}\t-\n")
        else:
            sys.stdout.write(f"{name}\t{b['n_train']}\t{b['n_test']}\t{b['best_C']}\t{b['auroc_decision']:.4f}\t"
                             f"{b['auroc_hard_labels']:.4f}\n")


def register(app: typer.Typer) -> None:
    app.add_typer(finetune_app, name="finetune")
