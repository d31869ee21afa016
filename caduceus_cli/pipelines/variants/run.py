"""``score_variants``: VCF in, annotated VCF/BCF/TSV out.

Records stream through in chunks (bounded memory). Under torchrun (WORLD_SIZE > 1) chunk i is
scored by rank ``i % WORLD_SIZE`` and rank 0 writes every record in input order
(runtime.run_sharded); the device of each rank is cuda:LOCAL_RANK unless told otherwise. With
``resume`` the finished chunks are kept beside the output (resume.py) until it is complete.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from typing import Callable, Iterable, Iterator

from ... import stopping
from ...choices import DEFAULT_MODEL
from ...errors import CaduceusError
from ...genome.regions import parse_regions, read_regions_file
from ...genome.vcf import VcfReader
from ...genome.vcf_writer import RecordSink, SortedCheck, check_output, contig_lines, variant_output_format
from ...io import provenance, refuse_overwriting_inputs
from ...progress import advise_on_cpu
from ...resume import ResumableOutput, kept_then_new
from ...model.loading import resolve_model, trained_length
from ...runtime import Runtime, run_sharded, shard_location, torchrun
from ..svm_model import load_svm
from .background import background_identity, percentile_description, read_background
from .context import batch_for_budget, check_cpu_time, choose_context, memory_budget, peak_memory
from .outputs import chunk_batch, header, info_key, summary, write_batches
from .scorer import EMBEDDING_SCORES, VariantScorer
from .settings import (DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_CHUNK, DEFAULT_FLANK, DEFAULT_SCORES, DEFAULT_WINDOW,
                       ScoreSettings)

log = logging.getLogger("caduceus")


def score_variants(vcf: str, fasta: str, output: str = "-", *, model=DEFAULT_MODEL,
                   scores: Iterable[str] | str = DEFAULT_SCORES, window: int | None = None, context: int | None = None,
                   batch_size: int | None = None, chunk_size: int = DEFAULT_CHUNK, device: str | None = None,
                   dtype: str | None = None, backend: str = "auto", revision: str | None = None,
                   tss: str | None = None, svm: str | None = None, tissue: str | None = None,
                   strict_ref: bool = False, missing_contig: str = "error", fmt: str | None = None,
                   write_index: bool = False, regions: str | None = None, regions_file: str | None = None,
                   resume: bool = False, llr_method: str = "masked", flank: int = DEFAULT_FLANK,
                   background: str | None = None, progress: Callable[[int], None] | None = None,
                   set_total: Callable[[int], None] | None = None, runtime: Runtime | None = None) -> dict:
    """Score every ALT allele of ``vcf`` and write the annotated records to ``output``.

    ``model`` is a name, folder or hub id (loaded here, at ``revision``) or a loaded
    :class:`CaduceusForMaskedLM`; ``device`` None picks cuda:LOCAL_RANK when CUDA is there.
    ``window`` None: 1,536 bp (the paper's), or the model's trained length when shorter, or the
    SVM's window. ``context`` (bases the model reads around each variant) None: the SVM's, else the
    model's declared trained length (see ``context.choose_context``), never shorter than the window;
    on a CPU a default context that would take more than a minute per variant is refused.
    ``batch_size`` None: up to 64 contexts per pass on CUDA, 8 on CPU, within the memory budget. ``svm`` (a folder from
    ``caduceus finetune svm``) adds the svm score. ``llr_method`` 'wt-marginal' reads the LLR from
    unmasked tiles of ``context`` bp (each SNV at least ``flank`` bp from a tile's edge; one pass per
    tile) instead of one masked context per site. ``background`` (a file from ``caduceus calibrate``
    made with the same model, window, context, LLR method and reference) adds percentiles. ``regions`` ('chr:beg-end,...') or
    ``regions_file`` read only those regions of an indexed input; ``resume`` continues an
    interrupted run (and keeps this one's progress if it is interrupted). Returns a summary
    (records, alts scored, skips by reason, REF mismatches, seconds, variants/s, rank, world size).
    """
    settings = ScoreSettings(scores, window, batch_size, chunk_size, strict_ref, missing_contig, tissue,
                             context=context, llr_method=llr_method, flank=flank).validate()
    if tissue is not None and not svm:
        raise CaduceusError(f"--tissue {tissue} is the tissue of the svm score: give --svm DIR too (a folder from "
                            "`caduceus finetune svm --use-tissue`)")
    fmt = variant_output_format(output, fmt)
    if regions and regions_file:
        raise CaduceusError("give -r REGIONS or -R FILE, not both")
    refuse_overwriting_inputs(output, vcf, fasta, tss, regions_file, background)
    if output == "-" and resume:
        raise CaduceusError("--resume needs -o FILE: stdout cannot be continued")
    check_output(output, fmt, write_index)
    with contextlib.ExitStack() as stack:
        reader = _open_vcf(stack, vcf, regions, regions_file)
        rt = runtime or stack.enter_context(torchrun(device, collectives="gloo"))
        if rt.distributed and (vcf == "-" or resume):
            raise CaduceusError("under torchrun every process reads the VCF: give a file, not stdin"
                                if vcf == "-" else "--resume works in one process, not under torchrun")
        scorer, meta = _prepare(stack, rt, reader, fasta, model, settings, device=device, dtype=dtype,
                                backend=backend, revision=revision, tss=tss, svm=svm, background=background)
        advise_on_cpu(progress, scorer.model.device, _faster_way(settings))
        identity = {k: v for k, v in meta.items() if k != "command"}  # the same run, typed in another order
        progress_kept = ResumableOutput(output, {"command": "score-variants", **identity, "format": fmt,
                                                 **_identity(settings, regions, regions_file)},
                                        {"vcf": vcf, "fasta": fasta, "tss": tss, "regions_file": regions_file,
                                         "background": background},
                                        enabled=resume) if output != "-" else None
        total = reader.record_count() if set_total is not None and rt.is_main else None
        if total is not None:  # else progress counts without a total (no index, stdin or regions)
            set_total(total)
        started = time.perf_counter()
        try:
            counts = _run(rt, scorer, reader, settings, fmt, output, write_index, meta, progress_kept, progress)
        except (stopping.Stopped, KeyboardInterrupt):
            if progress_kept is not None:
                progress_kept.note_stopped()
            raise
    if progress_kept is not None:
        progress_kept.finish()
    _warn_skipped(counts, fasta)
    return summary(counts, time.perf_counter() - started, rank=rt.rank, world_size=rt.world_size, output=output,
                   format=fmt, window=settings.window, context=settings.context, batch_size=settings.batch_size,
                   **peak_memory(scorer.model.device))


def _faster_way(settings: ScoreSettings) -> str:
    """What to say when scoring on the CPU will be slow."""
    gpu = "a CUDA GPU runs it much faster"
    scores = settings.scores
    if "llr" in scores and any(s in scores for s in EMBEDDING_SCORES):
        return f"{gpu}, and --scores llr alone needs a third of the model passes (no embedding windows)"
    if scores == ("llr",) and settings.llr_method == "masked":
        return f"{gpu}, and --llr-method wt-marginal scores every SNV of a tile in one pass"
    return gpu


def _open_vcf(stack: contextlib.ExitStack, vcf: str, regions: str | None, regions_file: str | None) -> VcfReader:
    """The input, opened once; with -r/-R restricted to those regions (a -r region is checked
    against the input's contigs: 'z:abc' is refused unless the input has a contig of that name)."""
    wanted = read_regions_file(regions_file) if regions_file else None
    reader = VcfReader(vcf)
    stack.callback(reader.close)
    if regions:
        wanted = parse_regions(regions, reader.contigs)
    if wanted is not None:
        reader.restrict(wanted)
    return reader


def _identity(settings: ScoreSettings, regions, regions_file) -> dict:
    """What the output depends on beyond provenance (for --resume): everything but the device."""
    return {"chunk_size": settings.chunk_size, "batch_size": settings.batch_size, "strict_ref": settings.strict_ref,
            "missing_contig": settings.missing_contig, "tissue": settings.tissue, "regions": regions}


def _run(rt: Runtime, scorer: VariantScorer, reader: VcfReader, settings: ScoreSettings, fmt: str, output: str,
         write_index: bool, meta: dict, kept: ResumableOutput | None, progress) -> Counter:
    """Score the chunks not done yet and write every record (the kept ones first) in input order."""
    done = kept.chunks if kept is not None else 0
    scored_here: Counter = Counter()

    def work(chunk):
        scored_here["records"] += len(chunk)
        results = scorer.score([rec for _, rec in chunk], progress)
        return chunk_batch(chunk, results, fmt, scorer.output_scores, scorer.tss is not None)

    chunks = itertools.islice(_chunks(reader, settings.chunk_size), done, None)
    batches = run_sharded(chunks, work, rt, *shard_location(output, "caduceus-scores"))
    if not rt.is_main:
        for _ in batches:  # scores this rank's chunks; rank 0 writes them
            pass
        return scored_here
    if kept is not None and kept.records and progress is not None:
        progress(kept.records, resumed=True)
    check = SortedCheck(reader.label, reader.where) if write_index else None
    contigs = contig_lines(reader.raw_header, reader.contigs, scorer.reference.contigs) if fmt == "bcf" else None
    descriptions = ({f"{s}_pct": percentile_description(s, info_key(s), scorer.background)
                     for s in scorer.percentile_scores} if scorer.background is not None else None)
    head = header(fmt, reader.raw_header, meta, scorer.output_scores, scorer.tss is not None, contigs, descriptions)
    with RecordSink(output, fmt, head, write_index=write_index, source=reader.label, where=reader.where) as sink:
        return write_batches(sink, kept_then_new(kept, batches), check)


def _prepare(stack: contextlib.ExitStack, rt: Runtime, reader: VcfReader, fasta, model, settings: ScoreSettings, *,
             device, dtype, backend, revision, tss, svm, background=None) -> tuple[VariantScorer, dict[str, str]]:
    """The scorer (inputs opened, model loaded, window and batch chosen, SVM checked) and the
    provenance."""
    from ...genome.fasta import Reference
    from ...genome.tss import read_tss

    reference = stack.enter_context(Reference(fasta))
    tss_index = read_tss(tss) if tss else None
    svm_model = load_svm(svm) if svm else None
    if svm_model is not None and "svm" not in settings.scores:
        settings.scores += ("svm",)
    loaded = resolve_model(model, device=rt.device if _by_name(model) else device, dtype=dtype, backend=backend,
                           revision=revision)
    _choose_window_and_batch(settings, loaded, svm_model)
    if svm_model is not None:
        svm_model.check_compatible(loaded, settings.window, settings.tissue, settings.context)
    scorer = VariantScorer(loaded, reference, settings.scores, settings.window, settings.batch_size, tss=tss_index,
                           svm=svm_model, tissue=settings.tissue, strict_ref=settings.strict_ref,
                           missing_contig=settings.missing_contig, source=reader.label, where=reader.where,
                           context=settings.context, llr_method=settings.llr_method, flank=settings.flank)
    marginal = settings.llr_method == "wt-marginal"
    bg = None
    if background is not None:
        bg = read_background(background)
        scorer.use_background(bg, background_identity(loaded, settings, reference))
    meta = provenance(loaded, window=settings.window, context=settings.context, scores=",".join(settings.scores),
                      reference=fasta, llr_method=settings.llr_method if "llr" in settings.scores else None,
                      flank=settings.flank if marginal and "llr" in settings.scores else None,
                      tss=tss, svm=f"{svm} sha256={svm_model.sha256}" if svm_model else None,
                      background=f"{background} sha256={bg.sha256} snvs={max(len(v) for v in bg.values.values())}"
                      if bg is not None else None)
    return scorer, meta


def _choose_window_and_batch(settings: ScoreSettings, model, svm_model) -> None:
    """Window: the SVM's, else 1,536 bp capped at the model's trained length; a longer window
    asked for is run with a warning. Context: see ``context.choose_context`` (an SVM's own context
    by default). Batch: up to 64 contexts per pass on CUDA, 8 on CPU, within the memory budget."""
    trained = trained_length(model)
    if settings.window is None:
        settings.window = int(svm_model.meta["window"]) if svm_model is not None else min(DEFAULT_WINDOW, trained)
    elif settings.window > trained:
        log.warning("--window %d is longer than the %d bp this model was trained on: its scores there are "
                    "untested (give --window %d or less)", settings.window, trained, trained)
    explicit = settings.context is not None
    if not explicit and svm_model is not None:
        settings.context = svm_model.context
    settings.context = choose_context(settings.context, settings.window, model)
    passes = ("llr" in settings.scores) + 2 * any(s in settings.scores for s in ("embed_cos", "embed_l2", "svm"))
    check_cpu_time(model, settings.context, settings.window, max(1, passes), explicit=explicit)
    if settings.batch_size is None:
        cap = DEFAULT_BATCH if model.device.type == "cuda" else DEFAULT_BATCH_CPU
        settings.batch_size = batch_for_budget(model.config, settings.context, memory_budget(model.device),
                                               device_type=model.device.type, cap=cap)


def _warn_skipped(counts: Counter, fasta: str) -> None:
    if counts.get("ref_mismatch"):
        log.warning("%d record(s) have a REF that does not match %s; they were passed through unscored "
                    "(CADUCEUS_SKIP=ref_mismatch)", counts["ref_mismatch"], fasta)
    if counts.get("skipped_pos_outside_contig"):
        log.warning("%d ALT allele(s) have a POS outside their contig in %s (POS 0 or past the contig's end); "
                    "they were passed through unscored (CADUCEUS_SKIP=pos_outside_contig)",
                    counts["skipped_pos_outside_contig"], fasta)


def _by_name(model) -> bool:
    return isinstance(model, (str, os.PathLike))


def _chunks(reader: VcfReader, chunk_size: int) -> Iterator[list[tuple[object, object]]]:
    chunk = []
    for item in reader:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
