"""``calibrate``: a background of random SNVs scored by a model, for calibrated (percentile) scores.

Sites are drawn uniformly over the bases of the reference (or of BED regions), with a seeded
``numpy.random.default_rng``: positions whose base is not A, C, G or T are drawn again, and so are
repeats. Every drawn site gives three SNVs (the three other bases), scored by score-variants' own
scorer with the same settings a later ``score-variants --background`` must use (model, window,
context, LLR method and flank), which the Parquet's metadata records with the reference's
identity (``variants/background.py``). The output has one row per SNV: chrom, pos (1-based), ref,
alt and one column per score.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa

from ...choices import DEFAULT_MODEL
from ...errors import CaduceusError
from ...genome.vcf import VcfRecord
from ...io import atomic_file, check_writable, provenance, refuse_overwriting_inputs
from ..variants.context import choose_context
from ..variants.background import BACKGROUND_KEY, FORMAT_VERSION, PERCENTILE_SCORES, background_identity
from ..variants.scorer import VariantScorer
from ..variants.settings import DEFAULT_BATCH, DEFAULT_BATCH_CPU, DEFAULT_FLANK, DEFAULT_WINDOW, ScoreSettings
from .ism_methods import alternatives
from .settings import CALIBRATION_SCORES, CALIBRATION_SITES, check_sizes
from .targets import Target, read_targets

_CHUNK = 128  # sites scored together
_ROUNDS = 64  # draws of 2n candidates before giving up on a reference that is mostly N


def draw_sites(reference, targets: list[Target], n: int, seed: int) -> list[tuple[str, int, str]]:
    """``n`` distinct (contig, 1-based position, base) with base A, C, G or T, uniform over the bases of
    ``targets``, in reference order."""
    rng = np.random.default_rng(seed)
    lengths = np.array([t.length for t in targets], dtype=np.int64)
    ends = np.cumsum(lengths)
    chosen: dict[tuple[str, int], str] = {}
    for _ in range(_ROUNDS):
        for draw in rng.integers(0, int(ends[-1]), size=2 * n):
            k = int(np.searchsorted(ends, draw, side="right"))
            target = targets[k]
            pos0 = target.start + int(draw - (ends[k] - lengths[k]))
            if (target.contig, pos0 + 1) in chosen:
                continue
            base = reference.fetch(target.contig, pos0, pos0 + 1)[0].upper()
            if base in "ACGT" and base:
                chosen[(target.contig, pos0 + 1)] = base
                if len(chosen) == n:
                    order = {c: i for i, c in enumerate(reference.contigs)}
                    return [(c, p, b) for (c, p), b in sorted(chosen.items(), key=lambda kv: (order[kv[0][0]],
                                                                                             kv[0][1]))]
    raise CaduceusError(f"{reference.path}: found only {len(chosen):,} distinct A/C/G/T sites in "
                        f"{_ROUNDS * 2 * n:,} draws; give fewer sites (--n) or regions with sequence")


def calibrate(fasta: str, output: str, *, regions_file: str | None = None, n: int = CALIBRATION_SITES, seed: int = 0,
              scores=CALIBRATION_SCORES, model=DEFAULT_MODEL, window: int | None = None, context: int | None = None,
              llr_method: str = "masked",
              flank: int = DEFAULT_FLANK, batch_size: int | None = None, device: str | None = None,
              dtype: str | None = None, backend: str = "auto", revision: str | None = None,
              progress: Callable[..., None] | None = None, set_total: Callable[[int], None] | None = None) -> dict:
    """Score ``n`` random sites (all three SNVs each) of ``fasta`` (or of the BED ``regions_file``)
    and write the background to ``output`` (.parquet). ``scores``: llr, embed_cos, embed_l2;
    ``window``, ``context``, ``llr_method``, ``flank``: as score-variants', with its defaults.
    Returns a summary (sites, SNVs, seconds, output)."""
    from ...genome.fasta import Reference
    from ...model.loading import resolve_model, trained_length

    if not str(output).lower().endswith(".parquet"):
        raise CaduceusError(f"{output}: a background is Parquet: end the output name in .parquet")
    check_sizes(n=n, seed=seed)
    settings = ScoreSettings(scores, window, batch_size, context=context, llr_method=llr_method, flank=flank).validate()
    bad = [s for s in settings.scores if s not in PERCENTILE_SCORES]
    if bad:
        raise CaduceusError(f"--scores: {', '.join(bad)} cannot be calibrated; choose from {', '.join(PERCENTILE_SCORES)}")
    refuse_overwriting_inputs(output, fasta, regions_file)
    check_writable(output)
    started = time.perf_counter()
    with Reference(fasta) as reference:
        targets = read_targets(reference, regions_file, None, whole=True)
        loaded = resolve_model(model, device=device, dtype=dtype, backend=backend, revision=revision)
        settings.window = settings.window or min(DEFAULT_WINDOW, trained_length(loaded))
        settings.context = choose_context(settings.context, settings.window, loaded)  # as score-variants
        settings.batch_size = settings.batch_size or (DEFAULT_BATCH if loaded.device.type == "cuda"
                                                      else DEFAULT_BATCH_CPU)
        scorer = VariantScorer(loaded, reference, settings.scores, settings.window, settings.batch_size,
                               context=settings.context, llr_method=settings.llr_method, flank=settings.flank)
        sites = draw_sites(reference, targets, n, seed)
        if set_total is not None:
            set_total(len(sites))
        columns = _score(scorer, sites, progress)
        metadata = {**provenance(loaded, regions=regions_file, seed=seed, sites=len(sites), snvs=3 * len(sites),
                                 scores=",".join(settings.scores)),
                    **background_identity(loaded, settings, reference), BACKGROUND_KEY: FORMAT_VERSION}
    table = pa.table(columns).replace_schema_metadata(metadata)
    import pyarrow.parquet as pq

    with atomic_file(output) as tmp:
        pq.write_table(table, str(tmp))
    seconds = time.perf_counter() - started
    return {"sites": len(sites), "snvs": table.num_rows, "scores": list(settings.scores), "window": settings.window,
            "context": settings.context,
            "llr_method": settings.llr_method, "seconds": round(seconds, 3), "output": str(output)}


def _score(scorer: VariantScorer, sites: list[tuple[str, int, str]], progress) -> dict[str, list]:
    columns: dict[str, list] = {"chrom": [], "pos": [], "ref": [], "alt": [], **{s: [] for s in scorer.scores}}
    for first in range(0, len(sites), _CHUNK):
        chunk = sites[first:first + _CHUNK]
        records = [VcfRecord(c, p, b, alternatives(b), first + i + 1) for i, (c, p, b) in enumerate(chunk)]
        for rec, result in zip(records, scorer.score(records)):
            for k, alt in enumerate(rec.alts):
                columns["chrom"].append(rec.chrom)
                columns["pos"].append(rec.pos)
                columns["ref"].append(rec.ref)
                columns["alt"].append(alt)
                for s in scorer.scores:
                    value = result.scores[s][k]
                    columns[s].append(float("nan") if value is None else value)
        if progress is not None:
            progress(len(chunk))
    return columns
