"""`caduceus score-variants`: VCF in, annotated VCF (or TSV) out."""

from __future__ import annotations

import json
import sys

import typer

from ..genome.vcf import FORMATS
from ..pipelines.variants.settings import (DEFAULT_BATCH, DEFAULT_CHUNK, DEFAULT_SCORES, DEFAULT_WINDOW, MISSING_CONTIG,
                                           SCORES)
from ._common import BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, RevisionOption


def score_variants_command(
    vcf: str = typer.Argument(..., help="VCF, VCF.gz or BCF ('-' for stdin); unsorted input is fine."),
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA (plain or bgzip, indexed on first use)."),
    output: str = typer.Option("-", "--output", "-o", help="Output: '-' (stdout, VCF), .vcf, .vcf.gz, .bcf, .tsv "
                                                          "or .tsv.gz (BGZF)."),
    fmt: str = typer.Option(None, "--format", help=f"{', '.join(FORMATS)} (default: from the -o name; stdout: vcf)."),
    scores: str = typer.Option(",".join(DEFAULT_SCORES), "--scores", help=f"Comma-separated: {', '.join(SCORES)}."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    window: int = typer.Option(DEFAULT_WINDOW, "--window", help="Window (bp) centred on the variant."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", help="Windows per forward pass."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, "--chunk-size", help="Records read and scored together (bounds memory)."),
    tss: str = typer.Option(None, "--tss", help="TSS annotation (BED of TSS, or GENCODE/Ensembl GTF): adds CADUCEUS_TSS_DIST."),
    svm: str = typer.Option(None, "--svm", help="Folder of a classifier trained by `caduceus finetune svm` (needs --tss)."),
    tissue: str = typer.Option(None, "--tissue", help="Tissue of every variant, for an SVM trained with tissues."),
    strict_ref: bool = typer.Option(False, "--strict-ref", help="Stop at the first REF that does not match the FASTA."),
    missing_contig: str = typer.Option(MISSING_CONTIG[0], "--missing-contig",
                                       help=f"A contig absent from the FASTA: {' or '.join(MISSING_CONTIG)}."),
    write_index: bool = typer.Option(False, "--write-index", help="Write a .tbi (vcf.gz) or .csi (bcf) index."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    backend: str = BackendOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary on stderr."),
) -> None:
    """Score variants with a Caduceus model: masked-LM log-likelihood ratio, embedding distances, SVM."""
    from ..pipelines.variants import score_variants

    with Progress("scoring", unit="records", quiet=quiet) as progress:
        summary = score_variants(
            vcf, fasta, output, model=model, scores=scores, window=window, batch_size=batch_size,
            chunk_size=chunk_size, device=device, dtype=dtype, backend=backend, revision=revision, tss=tss, svm=svm,
            tissue=tissue, strict_ref=strict_ref, missing_contig=missing_contig, fmt=fmt, write_index=write_index,
            progress=progress)
    if not quiet and summary["rank"] == 0:
        sys.stderr.write("caduceus: score-variants: " + json.dumps(summary) + "\n")


def register(app: typer.Typer) -> None:
    app.command("score-variants")(score_variants_command)
