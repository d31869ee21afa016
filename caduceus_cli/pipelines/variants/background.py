"""Calibrated scores: where a variant's score falls among the scores of random SNVs of the genome.

A background is the Parquet file ``caduceus calibrate`` writes: one row per SNV (chrom, pos, ref,
alt and one column per score) drawn at random from a reference, all three alternatives of every
drawn site. Its schema metadata records what made it: the model (id and sha256 of its weights),
window, context, LLR method (and flank for wt-marginal) and the reference (file name and the sha256
of its contig names and lengths, the first two columns of its .fai), the seed and the number of
sites. Scores are comparable only under the same settings, so a background made otherwise is
refused (:meth:`Background.check`).

Percentile of a score x (``CADUCEUS_<SCORE>_PCT``): 100 * (background SNVs scoring at or below x)
/ (background SNVs with that score), in [0, 100] and non-decreasing in x. For the LLR a low
percentile is a variant the model finds less likely than most random SNVs; for the embedding
distances a high percentile is a larger change than most random SNVs make.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import CaduceusError
from .settings import PERCENTILE_SCORES

BACKGROUND_KEY = "caduceus_background"  # schema metadata key marking a background (its format version)
FORMAT_VERSION = "1"
PCT_SUFFIX = "_pct"
# what a background must share with the run that uses it (metadata keys), and how to name them
MATCHED = {"model_sha256": "model", "window": "window", "context": "context", "llr_method": "LLR method",
           "flank": "flank", "reference_sha256": "reference"}


def reference_sha256(contigs: dict[str, int]) -> str:
    """sha256 of a reference's contig names and lengths, one ``name<TAB>length`` line each, in
    order (the first two columns of its .fai): the same genome in another file or line width matches."""
    digest = hashlib.sha256()
    for name, length in contigs.items():
        digest.update(f"{name}\t{length}\n".encode())
    return digest.hexdigest()


def background_identity(model, settings, reference) -> dict[str, str]:
    """The settings of a run that its scores depend on (the keys of :data:`MATCHED`, plus the model
    id and the reference's file name, which are shown but not compared)."""
    source = getattr(model, "source", {}) or {}
    marginal = settings.llr_method == "wt-marginal"
    return {"model": str(source.get("id")), "model_sha256": str(source.get("sha256")),
            "window": str(settings.window), "context": str(settings.span),
            "llr_method": settings.llr_method, "flank": str(settings.flank) if marginal else "-",
            "reference": Path(str(reference.path)).name, "reference_sha256": reference_sha256(reference.contigs)}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Background:
    """A background read from ``path``: its metadata and the sorted values of each score."""

    path: str
    metadata: dict[str, str]
    values: dict[str, np.ndarray]
    sha256: str

    @property
    def scores(self) -> tuple[str, ...]:
        return tuple(self.values)

    def check(self, identity: dict[str, str], scores: tuple[str, ...]) -> tuple[str, ...]:
        """The scores of ``scores`` that get percentiles; refuses (one line) a background made with
        other settings than ``identity``, or holding none of ``scores``."""
        for key, what in MATCHED.items():
            made, now = self.metadata.get(key), identity.get(key)
            if made != now:
                shown = {"model_sha256": (f"{self.metadata.get('model')} (sha256 {str(made)[:12]})",
                                          f"{identity.get('model')} (sha256 {str(now)[:12]})"),
                         "reference_sha256": (f"{self.metadata.get('reference')} (contigs sha256 {str(made)[:12]})",
                                              f"{identity.get('reference')} (contigs sha256 {str(now)[:12]})")}
                before, after = shown.get(key, (made, now))
                raise CaduceusError(f"--background {self.path}: made with {what} {before}, this run uses {after}: "
                                    "percentiles need a background scored the same way; make one with "
                                    "`caduceus calibrate` and the same model, window, context, LLR method and reference")
        common = tuple(s for s in scores if s in self.values)
        if not common:
            raise CaduceusError(f"--background {self.path}: holds {', '.join(self.scores) or 'no scores'}, none of the "
                                f"scores of this run ({', '.join(scores)}); calibrate with --scores {','.join(scores)}")
        return common

    def percentiles(self, score: str, values) -> np.ndarray:
        """100 * (background values <= x) / n for every x of ``values`` (NaN stays NaN)."""
        x = np.asarray(values, dtype=np.float64)
        ranked = self.values[score]
        out = 100.0 * np.searchsorted(ranked, x, side="right") / len(ranked)
        return np.where(np.isnan(x), np.nan, out)


def read_background(path: str | os.PathLike) -> Background:
    """The background in ``path``; one line for a file that is missing, unreadable or not a background."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise CaduceusError(f"--background {path}: no such file (make one with `caduceus calibrate`)")
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as e:
        raise CaduceusError(f"--background {path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if metadata.get(BACKGROUND_KEY) != FORMAT_VERSION:
        raise CaduceusError(f"--background {path}: not a background made by `caduceus calibrate` (no "
                            f"{BACKGROUND_KEY}={FORMAT_VERSION} in its metadata)")
    values = {}
    for score in PERCENTILE_SCORES:
        if score in table.column_names:
            column = table.column(score).to_numpy(zero_copy_only=False).astype(np.float64)
            column = np.sort(column[~np.isnan(column)])
            if len(column):
                values[score] = column
    return Background(str(path), metadata, values, file_sha256(path))


def background_info(path: str | os.PathLike, model_sha256: str | None = None) -> dict:
    """What a background is, for ``models info --background``: its provenance, the SNVs per score
    and, given a model's sha256, whether that model made it."""
    background = read_background(path)
    info = {"background": str(path), "background_sha256": background.sha256}
    info.update({f"background_{k}": v for k, v in background.metadata.items() if k != BACKGROUND_KEY})
    for score, values in background.values.items():
        info[f"background_{score}_snvs"] = len(values)
        info[f"background_{score}_median"] = round(float(np.median(values)), 6)
    if model_sha256 is not None:
        info["background_matches_model"] = background.metadata.get("model_sha256") == model_sha256
    return info


def percentile_description(score: str, key: str, background: Background) -> str:
    """The ##INFO Description of a percentile field, saying how it is computed and from what."""
    n = len(background.values[score])
    return (f"Percentile (0-100) of {key} among {n:,} background SNVs scored the same way (random sites of "
            f"{background.metadata.get('reference')}, all three alternatives): the share of background SNVs "
            f"scoring at or below this value (--background {Path(background.path).name})")
