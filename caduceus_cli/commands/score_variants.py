"""`caduceus score-variants`: VCF in, annotated VCF (or TSV) out."""

from __future__ import annotations

from typing import Optional

import typer

from ..genome.vcf_writer import FORMATS
from ..pipelines.variants.settings import (DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_CHUNK, DEFAULT_SCORES,
                                           DEFAULT_FLANK, DEFAULT_WINDOW, LLR_METHODS, MISSING_CONTIG, SCORES,
                                           SIZE_LIMITS)
from ._common import (BackendOption, DeviceOption, DtypeOption, ModelOption, Progress, QuietOption, ResumeOption, RevisionOption,
                      SizeOption, SummaryJsonOption, ThreadsOption, report, use_threads)


def score_variants_command(
    vcf: str = typer.Argument(..., help="VCF, VCF.gz or BCF ('-' for stdin); unsorted input is fine."),
    fasta: str = typer.Option(..., "--fasta", "-f", help="Reference FASTA (plain or bgzip, indexed on first use)."),
    output: str = typer.Option("-", "--output", "-o", help="Output: '-' (stdout, VCF), .vcf, .vcf.gz, .bcf, .tsv "
                                                          "or .tsv.gz (BGZF)."),
    fmt: str = typer.Option(None, "--format", help=f"{', '.join(FORMATS)} (default: from the -o name; stdout: vcf)."),
    scores: str = typer.Option(",".join(DEFAULT_SCORES), "--scores", help=f"Comma-separated: {', '.join(SCORES)}."),
    model: str = ModelOption,
    revision: str = RevisionOption,
    window: Optional[int] = SizeOption(None, "--window", limits=SIZE_LIMITS["window"], help=f"Positions (bp) around "
                                       f"the variant pooled by the embedding scores, at most "
                                       f"{SIZE_LIMITS['window'][1]:,} (default: {DEFAULT_WINDOW:,}, or the model's "
                                       "trained length when shorter, or the --svm classifier's window)."),
    context: Optional[int] = SizeOption(None, "--context", limits=SIZE_LIMITS["context"], help="Bases the model reads "
                                        "around each variant, centred on it, N-padded past contig ends (default: the "
                                        "--svm classifier's, else the model's trained length when it declares one, "
                                        "else the window; never shorter than --window). LLR is read at its masked "
                                        "centre, the embeddings pool its central --window positions."),
    batch_size: Optional[int] = SizeOption(None, "--batch-size", limits=SIZE_LIMITS["batch_size"], help=f"Contexts "
                                           f"per forward pass (default {DEFAULT_BATCH} on CUDA, {DEFAULT_BATCH_CPU} "
                                           "on CPU, fewer when they do not fit the memory budget)."),
    chunk_size: int = SizeOption(DEFAULT_CHUNK, "--chunk-size", limits=SIZE_LIMITS["chunk_size"],
                                 help="Records read and scored together (bounds memory)."),
    tss: str = typer.Option(None, "--tss", help="TSS annotation (BED of TSS, or GENCODE/Ensembl GTF): adds CADUCEUS_TSS_DIST."),
    svm: str = typer.Option(None, "--svm", help="Folder of a classifier trained by `caduceus finetune svm` (needs --tss)."),
    tissue: str = typer.Option(None, "--tissue", help="Tissue of every variant, for an SVM trained with tissues "
                               "(needs --svm)."),
    strict_ref: bool = typer.Option(False, "--strict-ref", help="Stop at the first REF that does not match the FASTA."),
    missing_contig: str = typer.Option(MISSING_CONTIG[0], "--missing-contig",
                                       help=f"A contig absent from the FASTA: {' or '.join(MISSING_CONTIG)}."),
    write_index: bool = typer.Option(False, "--write-index", help="Write a .tbi (vcf.gz) or .csi (bcf) index "
                                     "(records must be sorted by contig and position)."),
    regions: Optional[str] = typer.Option(None, "--regions", "-r", help="Only these regions of an indexed VCF/BCF, as "
                                          "bcftools: chr, chr:pos, chr:beg-end (1-based, inclusive), comma-separated; "
                                          "a record is read when its POS is inside."),
    regions_file: Optional[str] = typer.Option(None, "--regions-file", "-R", help="Regions from a file: chrom pos or "
                                               "chrom beg end (1-based, inclusive), or BED (.bed, 0-based)."),
    llr_method: str = typer.Option(LLR_METHODS[0], "--llr-method", help="llr: masked (one masked context per site, "
                                   "exact) or wt-marginal (unmasked tiles of --context bp: one pass scores every SNV "
                                   "of a tile; each SNV at least --flank bp from a tile's edge)."),
    flank: int = SizeOption(DEFAULT_FLANK, "--flank", limits=SIZE_LIMITS["flank"], help="wt-marginal: bases of "
                            "context, at least, on each side of every SNV."),
    background: Optional[str] = typer.Option(None, "--background", help="A background from `caduceus calibrate` (same "
                                             "model, window, context, LLR method and reference): adds "
                                             "CADUCEUS_<SCORE>_PCT, the percentile among its random SNVs."),
    resume: bool = ResumeOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    backend: str = BackendOption,
    threads: Optional[int] = ThreadsOption,
    quiet: bool = QuietOption,
    as_json: bool = SummaryJsonOption,
) -> None:
    """Score variants with a Caduceus model: masked-LM log-likelihood ratio, embedding distances, SVM.

    Examples:

      caduceus score-variants calls.vcf.gz -f GRCh38.fa -o scored.vcf.gz --write-index

      caduceus score-variants calls.vcf.gz -f GRCh38.fa -r chr20 --resume -o chr20.vcf.gz
    """
    from ..pipelines.variants import score_variants

    use_threads(threads, dtype)
    with Progress("scoring", unit="records", quiet=quiet) as progress:
        summary = score_variants(
            vcf, fasta, output, model=model, scores=scores, window=window, context=context, batch_size=batch_size,
            chunk_size=chunk_size, device=device, dtype=dtype, backend=backend, revision=revision, tss=tss, svm=svm,
            tissue=tissue, strict_ref=strict_ref, missing_contig=missing_contig, fmt=fmt, write_index=write_index,
            regions=regions, regions_file=regions_file, resume=resume, llr_method=llr_method, flank=flank,
            background=background, progress=progress,
            set_total=progress.set_total)
    if summary["rank"] == 0:
        report("score-variants", sentence(summary), summary, as_json=as_json, quiet=quiet)


def sentence(summary: dict) -> str:
    """``scored 2,345 of 2,400 ALT alleles in 1,200 records in 12.3 s (194.9/s) -> out.vcf.gz; skipped
    40 ref_mismatch, 15 symbolic``."""
    where = "stdout" if summary["output"] == "-" else summary["output"]
    text = (f"scored {summary['scored']:,} of {summary['alts']:,} ALT alleles in {summary['records']:,} records "
            f"in {summary['seconds']:,.1f} s ({summary['alts_per_second'] or 0:,.1f}/s, window "
            f"{summary['window']:,} bp, context {summary.get('context') or summary['window']:,} bp) -> {where}")
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in summary["skipped"].items())
    return text + (f"; skipped {skipped}" if skipped else "")


def register(app: typer.Typer) -> None:
    app.command("score-variants")(score_variants_command)
