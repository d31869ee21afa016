"""Scores of VCF records from a Caduceus masked LM: LLR at the masked centre, embedding distances,
SVM decisions, per ALT allele, with the contexts of a chunk de-duplicated and run in batches.

The model reads ``context`` bases around each variant (default: the window); LLR is read at the
masked centre of that context, the embeddings pool its central ``window`` positions. LLR and
embeddings come from ``pipelines/inference.py``: the masked-LM logits at the centre with both
strands combined (``centre_logits``) and the strand features of each context, from which one pass
gives the strand-averaged window mean and, for the SVM, the paper's features (``paper.py``). With
``llr_method='wt-marginal'`` the LLR is read instead from unmasked tiles of ``context`` bp on a
fixed grid (``pipelines/interpret/marginal.py``): one pass per tile scores every SNV in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ...errors import CaduceusError
from ...genome.vcf import VcfRecord
from ...genome.windows import fetch_window, variant_window
from ...dna import MASK, VOCAB, encode
from .. import inference
from ..interpret.marginal import BASE_COLUMNS, TileCache, TileGrid, site_logits
from .context import PAPER_WINDOW, paper_positions, pooled_slice
from .paper import check_features, conjoin, context_features
from .settings import DEFAULT_BATCH, DEFAULT_FLANK, DEFAULT_SCORES, DEFAULT_WINDOW, ScoreSettings

_BASES_RE = re.compile(r"^[ACGTNacgtn]+$")
_TOKEN = {b: VOCAB[b] for b in "ACGTN"}
EMBEDDING_SCORES = ("embed_cos", "embed_l2", "svm")


def classify_alt(ref: str, alt: str | None) -> tuple[str | None, str | None]:
    """(kind, reason): kind is 'snv', 'mnv' or 'indel'; reason says why an allele cannot be scored."""
    if alt is None or alt in ("", "."):
        return None, "missing_alt"
    if alt == "*":
        return None, "star_allele"
    if alt.startswith("<") or "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return None, "symbolic"
    if not _BASES_RE.match(alt):
        return None, "invalid_alt"
    if not ref or not _BASES_RE.match(ref):
        return None, "invalid_ref"
    if len(ref) == len(alt):
        return ("snv" if len(ref) == 1 else "mnv"), None
    return "indel", None


@dataclass
class RecordResult:
    """Scores of one record: ``scores[name][k]`` for ALT k (None: not computed)."""

    scores: dict[str, list[float | None]]
    reasons: list[str | None]
    tss_distance: int | None = None
    features: list[np.ndarray | None] | None = None
    ref_mismatch: bool = False
    context_n: int | None = None  # N bases in the REF context (padding past contig ends included)


@dataclass
class _Planned:
    """What one scorable ALT allele needs: rows of the masked and embedding windows of the chunk."""

    kind: str
    alt: str
    mask_row: int | None
    ref_row: int | None
    alt_row: int | None


@dataclass
class _Windows:
    """The distinct windows of a chunk: masked windows (or, for wt-marginal, sites) for LLR, plain
    ones for embeddings."""

    masked: list = field(default_factory=list)
    plain: list[np.ndarray] = field(default_factory=list)
    _masked_at: dict[tuple, int] = field(default_factory=dict)
    _plain_at: dict[tuple, int] = field(default_factory=dict)

    def masked_row(self, key: tuple, make: Callable[[], object]) -> int:
        return self._row(self._masked_at, self.masked, key, make)

    def plain_row(self, key: tuple, make: Callable[[], np.ndarray]) -> int:
        return self._row(self._plain_at, self.plain, key, make)

    @staticmethod
    def _row(index: dict, rows: list, key: tuple, make) -> int:
        if key not in index:
            index[key] = len(rows)
            rows.append(make())
        return index[key]


def _cos_l2(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cos = 1.0 - float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else 0.0
    return cos, float(np.linalg.norm(a64 - b64))


def _site(rec: VcfRecord) -> tuple:
    return rec.chrom, rec.pos


def _masked(ids: np.ndarray, centre: int) -> np.ndarray:
    out = ids.copy()
    out[centre] = MASK
    return out


class VariantScorer:
    """Scores lists of :class:`VcfRecord` with one model and one reference.

    ``score(records)`` returns one :class:`RecordResult` per record, in order. ``tss`` (a TssIndex)
    adds the distance to the nearest TSS; ``svm`` (a saved SVM) the svm score; ``keep_features``
    keeps each ALT's SVM features: [ref, alt] window means (``features='mean'``), or with
    ``features='paper'`` a (2, 2d) array of the paper's forward and RC features (see ``paper.py``).
    ``context`` (default: the window) is the number of bases the model reads around each variant;
    ``batch_size`` None: as many contexts per pass as the memory budget allows (at most 64).
    """

    def __init__(self, model, reference, scores: Iterable[str] = DEFAULT_SCORES, window: int = DEFAULT_WINDOW,
                 batch_size: int | None = DEFAULT_BATCH, *, tss=None, svm=None, tissue: str | None = None,
                 strict_ref: bool = False, missing_contig: str = "error", source: str = "VCF",
                 keep_features: bool = False, where: Callable[[int], str] = lambda line: f"line {line}",
                 context: int | None = None, features: str = "mean", llr_method: str = "masked",
                 flank: int = DEFAULT_FLANK):
        self.settings = ScoreSettings(tuple(scores), window, batch_size, strict_ref=strict_ref,
                                      missing_contig=missing_contig, tissue=tissue, context=context,
                                      llr_method=llr_method, flank=flank).validate()
        if "svm" in self.settings.scores and (svm is None or tss is None):
            raise CaduceusError("the svm score needs a trained model (--svm DIR) and TSS annotation (--tss FILE)")
        self.model, self.reference, self.tss, self.svm = model, reference, tss, svm
        self.source, self.where, self.keep_features = source, where, keep_features
        self.scores, self.window, self.centre = self.settings.scores, window, self.settings.centre
        self.context = self.settings.span
        self.features = check_features(svm.features if svm is not None else features)
        self.need_embed = keep_features or any(s in self.scores for s in EMBEDDING_SCORES)
        self.pooled = pooled_slice(self.context, window)
        self.positions = (torch.tensor(paper_positions(self.context, self._paper_window()))
                          if self.features == "paper" else None)
        if self.settings.batch_size is None:
            from .context import batch_for_budget, memory_budget

            self.settings.batch_size = batch_for_budget(model.config, self.context, memory_budget(model.device),
                                                        device_type=model.device.type, cap=DEFAULT_BATCH)
        self.marginal = TileGrid(self.context, flank) if llr_method == "wt-marginal" else None
        # the column of a base in the LLR logits: token ids (masked centre) or A..N (wt-marginal)
        self._llr_column = ({b: i for i, b in enumerate(BASE_COLUMNS)} if self.marginal is not None else _TOKEN)
        self.background, self.percentile_scores = None, ()
        self._tiles = TileCache()  # wt-marginal: the last tiles read, for the groups that share them

    def _paper_window(self) -> int:
        """The paper's gather width: the window (1,536 in the paper)."""
        return self.window or PAPER_WINDOW

    @property
    def output_scores(self) -> tuple[str, ...]:
        """The scores written: those computed, then the percentiles of those the background holds."""
        return self.scores + tuple(f"{s}_pct" for s in self.percentile_scores)

    def use_background(self, background, identity: dict[str, str]) -> None:
        """Add percentiles among ``background`` (a variants.background.Background), refused unless
        it was made with the settings in ``identity``."""
        self.percentile_scores = background.check(identity, self.scores)
        self.background = background

    # -- model passes --------------------------------------------------------------------------
    def centre_logits(self, ids) -> np.ndarray:
        """(N, L) uint8 contexts (masked at the centre) -> (N, vocab) float64 logits at the centre,
        both strands combined (``inference.centre_logits``)."""
        model = self.model
        logits = inference.batched(ids, self.settings.batch_size,
                                   lambda x: inference.centre_logits(model, x, self.centre),
                                   width=model.config.padded_vocab_size, device=model.device)
        return logits.astype(np.float64)

    def embeddings(self, ids) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(N, L) uint8 contexts -> (N, d) float32 strand-averaged means of the last layer over the
        window, and with the paper's features (N, d) forward and (N, d) RC features (else None); one
        model pass per context serves all three."""
        model, d = self.model, self.model.config.d_model
        parts = 1 if self.positions is None else 3

        def features(x):
            return torch.cat([f for f in context_features(model, x, self.pooled, self.positions) if f is not None], -1)

        rows = inference.batched(ids, self.settings.batch_size, features, width=parts * d, device=model.device)
        if parts == 1:
            return rows, None, None
        return rows[:, :d], rows[:, d:2 * d], rows[:, 2 * d:]

    # -- windows -------------------------------------------------------------------------------
    def _windows(self, rec: VcfRecord, contig: str) -> tuple[np.ndarray, str]:
        """Token ids of the variant's context plus len(REF) bases (room for the alternative context
        of a deletion), and the REF bases seen at the centre."""
        start, end = variant_window(rec.pos - 1, self.context)
        seq, _ = fetch_window(self.reference, contig, start, end + len(rec.ref))
        return encode(seq, source=f"{self.reference.path}: {contig}:{start + 1}"), seq[self.centre:self.centre + len(rec.ref)]

    def _alt_window(self, ids: np.ndarray, ref: str, alt: str) -> np.ndarray:
        """The alternative context: the same left flank, ALT, then as much right flank as keeps it
        ``context`` bp long (length-matched for indels; a long insertion is cut to fit)."""
        c, w = self.centre, self.context
        tail = ids[c + len(ref): c + len(ref) + max(0, w - c - len(alt))]
        return np.concatenate([ids[:c], encode(alt), tail])[:w]

    # -- records -------------------------------------------------------------------------------
    def score(self, records: list[VcfRecord], progress: Callable[[int], None] | None = None) -> list[RecordResult]:
        """One result per record, in order. Records go through in groups of ``batch_size`` (a
        forward batch or two of windows each), grown so that records of one site (split
        multi-allelic records, repeats) share a group and so its REF passes; with wt-marginal, the
        records of ``batch_size`` tiles. ``progress(n)`` hears of each group as it finishes."""
        results: list[RecordResult] = []
        for group in self._groups(records):
            results += self._score_group(group)
            if progress is not None:
                progress(len(group))
        return results

    def _groups(self, records: list[VcfRecord]):
        size = self.settings.batch_size
        if self.marginal is None:
            start = 0
            while start < len(records):
                end = min(start + size, len(records))
                while end < len(records) and _site(records[end]) == _site(records[end - 1]):
                    end += 1
                yield records[start:end]
                start = end
            return
        group: list[VcfRecord] = []
        tiles: set[tuple[str, int]] = set()
        for rec in records:
            tile = (rec.chrom, self.marginal.tile_of(max(rec.pos - 1, 0)))
            if tile not in tiles and len(tiles) == size:
                yield group
                group, tiles = [], set()
            group.append(rec)
            tiles.add(tile)
        if group:
            yield group

    def _score_group(self, records: list[VcfRecord]) -> list[RecordResult]:
        windows = _Windows()
        results, plans = [], []
        for rec in records:
            result, plan = self._plan(rec, windows)
            results.append(result)
            plans.append(plan)
        logits = None
        if windows.masked and self.marginal is not None:
            logits = site_logits(self.model, self.reference, windows.masked, self.marginal, self.settings.batch_size,
                                 self._tiles)
        elif windows.masked:
            logits = self.centre_logits(windows.masked)
        emb = self.embeddings(windows.plain) if windows.plain else None
        for rec, result, plan in zip(records, results, plans):
            for k, item in enumerate(plan):
                if item is not None:
                    self._fill(rec, result, k, item, logits, emb)
            for name in self.percentile_scores:
                values = [np.nan if v is None else v for v in result.scores[name]]
                result.scores[f"{name}_pct"] = [None if np.isnan(p) else float(p)
                                                for p in self.background.percentiles(name, values)]
        return results

    def _plan(self, rec: VcfRecord, windows: _Windows) -> tuple[RecordResult, list[_Planned | None]]:
        """The record's result, with the reasons of the ALTs that cannot be scored, and the windows
        each scorable ALT needs (added to ``windows``)."""
        alts = rec.alts or [None]
        n = len(alts)
        result = RecordResult({s: [None] * n for s in self.scores}, [None] * n,
                              features=[None] * n if self.keep_features else None)
        if self.tss is not None and rec.pos >= 1:
            result.tss_distance = self.tss.nearest(rec.chrom, rec.pos - 1)
        kinds = [classify_alt(rec.ref, a) for a in alts]
        result.reasons = [reason for _, reason in kinds]
        scorable = [k for k, (kind, _) in enumerate(kinds) if kind]
        found = self._reference_window(rec, result, scorable) if scorable else None
        plan: list[_Planned | None] = [None] * n
        if found is None:
            return result, plan
        contig, ids = found
        for k in scorable:
            plan[k] = self._plan_alt(rec, result, k, kinds[k][0], alts[k], contig, ids, windows)
        return result, plan

    def _reference_window(self, rec: VcfRecord, result: RecordResult, scorable: list[int]
                          ) -> tuple[str, np.ndarray] | None:
        """(contig, window ids) of a record, or None with the scorable ALTs' reasons set (missing
        contig, REF too long, REF not matching the reference)."""
        contig = self.reference.resolve_contig(rec.chrom)
        reason = None
        if contig is None:
            if self.settings.missing_contig == "error":
                self._refuse_missing_contig(rec)
            reason = "missing_contig"
        elif not 1 <= rec.pos <= self.reference.contigs[contig]:
            self._refuse_if_strict(rec, f"POS {rec.pos} is outside {contig} (1..{self.reference.contigs[contig]:,}) "
                                        f"in the reference {self.reference.path}")
            reason = "pos_outside_contig"
        elif len(rec.ref) > self.window:
            reason = "longer_than_window"
        else:
            ids, seen = self._windows(rec, contig)
            if seen.upper() == rec.ref.upper():
                result.context_n = int(np.count_nonzero(ids[:self.context] == _TOKEN["N"]))
                return contig, ids
            result.ref_mismatch = True
            self._refuse_if_strict(rec, f"REF {rec.ref[:20]!r} at {rec.chrom}:{rec.pos} does not match the "
                                        f"reference {self.reference.path} ({seen[:20]!r})")
            reason = "ref_mismatch"
        for k in scorable:
            result.reasons[k] = reason
        return None

    def _refuse_if_strict(self, rec: VcfRecord, problem: str) -> None:
        if self.settings.strict_ref:
            raise CaduceusError(f"{self.source}: {self.where(rec.line)}: {problem}; is it the same genome build? "
                                "(drop --strict-ref to skip such records)")

    def _refuse_missing_contig(self, rec: VcfRecord) -> None:
        names = list(self.reference.contigs)
        shown = ", ".join(names[:5]) + ("" if len(names) <= 5 else f", ... ({len(names)} in all)")
        raise CaduceusError(f"{self.source}: {self.where(rec.line)}: contig {rec.chrom!r} is not in the reference "
                            f"{self.reference.path} (it has {shown}); give the matching FASTA, "
                            "or --missing-contig skip to pass such records through unscored")

    def _plan_alt(self, rec: VcfRecord, result: RecordResult, k: int, kind: str, alt: str, contig: str,
                  ids: np.ndarray, windows: _Windows) -> _Planned | None:
        if len(alt) > self.window:
            result.reasons[k] = "longer_than_window"
            return None
        key = (contig, rec.pos)
        mask_row = ref_row = alt_row = None
        if "llr" in self.scores and kind == "snv" and self.marginal is not None:
            mask_row = windows.masked_row(key, lambda: (contig, rec.pos - 1))
        elif "llr" in self.scores and kind == "snv":
            mask_row = windows.masked_row(key, lambda: _masked(ids[:self.context], self.centre))
        if self.need_embed:
            ref_row = windows.plain_row(key, lambda: ids[:self.context])
            alt_row = windows.plain_row(key + (rec.ref.upper(), alt.upper()),
                                        lambda: self._alt_window(ids, rec.ref, alt))
        if mask_row is None and ref_row is None:
            result.reasons[k] = f"llr_undefined_for_{kind}"
            return None
        return _Planned(kind, alt, mask_row, ref_row, alt_row)

    def _fill(self, rec: VcfRecord, result: RecordResult, k: int, item: _Planned, logits, emb) -> None:
        """The scores of ALT ``k`` from the model outputs of the chunk."""
        if item.mask_row is not None:
            row = logits[item.mask_row]
            column = self._llr_column
            result.scores["llr"][k] = float(row[column[item.alt.upper()]] - row[column[rec.ref.upper()]])
        if item.ref_row is None:
            return
        mean, fwd, rc = emb
        cos, l2 = _cos_l2(mean[item.ref_row], mean[item.alt_row])
        if "embed_cos" in self.scores:
            result.scores["embed_cos"][k] = cos
        if "embed_l2" in self.scores:
            result.scores["embed_l2"][k] = l2
        rows = [item.ref_row, item.alt_row]
        if self.features == "paper":
            features = np.stack([fwd[rows].reshape(-1), rc[rows].reshape(-1)]).astype(np.float32)  # (2, 2d)
            svm_features = conjoin(features[0], features[1], self.model.config.rcps, test=True)
        else:
            features = svm_features = mean[rows].reshape(-1).astype(np.float32)
        if self.keep_features:
            result.features[k] = features
        if "svm" in self.scores and result.tss_distance is not None:
            result.scores["svm"][k] = float(self.svm.decision(svm_features[None], [result.tss_distance],
                                                              tissues=[self.settings.tissue])[0])
