"""``score_variants``: VCF in, annotated VCF/BCF/TSV out.

Records stream through in chunks (bounded memory). Under torchrun (WORLD_SIZE > 1) chunk i is
scored by rank ``i % WORLD_SIZE`` and rank 0 writes every record in input order
(runtime.run_sharded); the device of each rank is cuda:LOCAL_RANK unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from typing import Callable, Iterable, Iterator

from ...errors import CaduceusError
from ...genome.vcf import RecordSink, VcfReader, output_format
from ...io import check_writable, provenance, refuse_overwriting_inputs
from ...runtime import Runtime, resolve_model, run_sharded, shard_location, torchrun
from ..svm_model import load_svm
from .outputs import chunk_batch, header, summary, write_batches
from .scorer import VariantScorer
from .settings import DEFAULT_BATCH, DEFAULT_CHUNK, DEFAULT_SCORES, DEFAULT_WINDOW, ScoreSettings

log = logging.getLogger("caduceus")


def score_variants(vcf: str, fasta: str, output: str = "-", *, model="bundled",
                   scores: Iterable[str] | str = DEFAULT_SCORES, window: int = DEFAULT_WINDOW,
                   batch_size: int = DEFAULT_BATCH, chunk_size: int = DEFAULT_CHUNK, device: str | None = None,
                   dtype: str | None = None, backend: str = "auto", revision: str | None = None,
                   tss: str | None = None, svm: str | None = None, tissue: str | None = None,
                   strict_ref: bool = False, missing_contig: str = "error", fmt: str | None = None,
                   write_index: bool = False, progress: Callable[[int], None] | None = None,
                   runtime: Runtime | None = None) -> dict:
    """Score every ALT allele of ``vcf`` and write the annotated records to ``output``.

    ``model`` is a name, folder or hub id (loaded here, at ``revision``) or a loaded
    :class:`CaduceusForMaskedLM`; ``device`` None picks cuda:LOCAL_RANK when CUDA is there. ``svm``
    (a folder from ``caduceus finetune svm``) adds the svm score. Returns a summary (records, alts
    scored, skips by reason, REF mismatches, seconds, variants/s, rank, world size).
    """
    settings = ScoreSettings(scores, window, batch_size, chunk_size, strict_ref, missing_contig, tissue).validate()
    fmt = output_format(output, fmt)
    if output != "-":
        refuse_overwriting_inputs(output, vcf, fasta)
        check_writable(output)
    with contextlib.ExitStack() as stack:
        rt = runtime or stack.enter_context(torchrun(device, collectives="gloo"))
        if rt.distributed and vcf == "-":
            raise CaduceusError("under torchrun every process reads the VCF: give a file, not stdin")
        scorer, reader, meta = _prepare(stack, rt, vcf, fasta, model, settings, device=device, dtype=dtype,
                                        backend=backend, revision=revision, tss=tss, svm=svm)
        started = time.perf_counter()
        scored_here: Counter = Counter()

        def work(chunk):
            scored_here["records"] += len(chunk)
            results = scorer.score([rec for _, rec in chunk])
            if progress is not None:
                progress(len(chunk))
            return chunk_batch(chunk, results, fmt, scorer.scores, scorer.tss is not None)

        batches = run_sharded(_chunks(reader, settings.chunk_size), work, rt, *shard_location(output, "caduceus-scores"))
        if rt.is_main:
            with RecordSink(output, fmt, write_index, scorer.reference.contigs) as sink:
                counts = write_batches(sink, header(fmt, reader.raw_header, meta, scorer.scores, scorer.tss is not None),
                                       batches)
        else:
            for _ in batches:  # scores this rank's chunks; rank 0 writes them
                pass
            counts = scored_here
    if counts.get("ref_mismatch"):
        log.warning("%d record(s) have a REF that does not match %s; they were passed through unscored "
                    "(CADUCEUS_SKIP=ref_mismatch)", counts["ref_mismatch"], fasta)
    return summary(counts, time.perf_counter() - started, rank=rt.rank, world_size=rt.world_size, output=output,
                   format=fmt)


def _prepare(stack: contextlib.ExitStack, rt: Runtime, vcf, fasta, model, settings: ScoreSettings, *, device, dtype,
             backend, revision, tss, svm) -> tuple[VariantScorer, VcfReader, dict[str, str]]:
    """The scorer (inputs opened, model loaded, SVM checked), the VCF reader and the provenance."""
    from ...genome.fasta import Reference
    from ...genome.tss import read_tss

    reference = stack.enter_context(Reference(fasta))
    tss_index = read_tss(tss) if tss else None
    svm_model = load_svm(svm) if svm else None
    if svm_model is not None and "svm" not in settings.scores:
        settings.scores += ("svm",)
    loaded = resolve_model(model, device=rt.device if _by_name(model) else device, dtype=dtype, backend=backend,
                           revision=revision)
    if svm_model is not None:
        svm_model.check_compatible(loaded, settings.window, settings.tissue)
    reader = VcfReader(vcf)
    stack.callback(reader.close)
    scorer = VariantScorer(loaded, reference, settings.scores, settings.window, settings.batch_size, tss=tss_index,
                           svm=svm_model, tissue=settings.tissue, strict_ref=settings.strict_ref,
                           missing_contig=settings.missing_contig, source=reader.label, where=reader.where)
    meta = provenance(loaded, window=settings.window, scores=",".join(settings.scores), reference=fasta,
                      tss=tss, svm=f"{svm} sha256={svm_model.sha256}" if svm_model else None)
    return scorer, reader, meta


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
