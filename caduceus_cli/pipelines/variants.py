"""Variant effect scores from a Caduceus masked LM: VCF in, annotated VCF (or TSV) out.

Per ALT allele, on a window of ``window`` bp (default 1,536) whose centre token ``window // 2``
is the first base of REF (N-padded past contig ends):

- ``llr`` (SNVs): log P(alt) - log P(ref) of the masked-LM head at the masked centre. Caduceus-PS:
  one pass (its LM head sums both strands and is RC-equivariant, so the RC pass would give the same
  number); Caduceus-Ph: the forward pass and the pass on the reverse-complemented window, averaged.
  One masked window serves every ALT at a site. Not defined for indels and MNVs (left missing).
- ``embed_cos`` / ``embed_l2``: cosine distance (1 - cos) and Euclidean distance between the
  strand-averaged mean embeddings (last layer) of the reference window and the alternative window.
  Indels use length-matched windows: the alternative window keeps the same left flank and takes as
  much right flank as needed to stay ``window`` bp long (an insertion longer than the right half is
  cut to fit).
- ``svm``: decision function of a classifier trained by :func:`caduceus_cli.pipelines.svm.train_svm`
  on [ref embedding, alt embedding] for the variant's distance-to-TSS bucket.

Records stream through in chunks of ``chunk_size`` records (bounded memory); the windows of a
chunk are de-duplicated and run in batches of ``batch_size``. Under torchrun each rank scores the
chunks ``i`` with ``i % world_size == rank`` and rank 0 merges the shards in input order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CaduceusError
from ..genome.vcf import (RecordSink, VcfReader, VcfRecord, add_info, annotated_header, info_header_line,
                          output_format)
from ..genome.windows import fetch_window, variant_window
from ..io import atomic_file, check_writable, provenance
from ..model.tokenizer import MASK, VOCAB, encode, reverse_complement_ids
from .features import autocast_for, embed_tokens
from .svm_model import load_svm

log = logging.getLogger("caduceus")

SCORES = ("llr", "embed_cos", "embed_l2", "svm")
DEFAULT_SCORES = ("llr", "embed_cos", "embed_l2")
DEFAULT_WINDOW = 1536
DEFAULT_CHUNK = 1024
DEFAULT_BATCH = 64
MISSING_CONTIG = ("error", "skip")

INFO_FIELDS = {
    "llr": ("CADUCEUS_LLR", "A", "Float",
            "Caduceus masked-LM log-likelihood ratio log P(alt) - log P(ref) at the masked variant position "
            "(SNVs only; both strands)"),
    "embed_cos": ("CADUCEUS_EMBED_COS", "A", "Float",
                  "Caduceus cosine distance (1 - cosine similarity) between mean embeddings of the reference "
                  "and alternative windows"),
    "embed_l2": ("CADUCEUS_EMBED_L2", "A", "Float",
                 "Caduceus Euclidean distance between mean embeddings of the reference and alternative windows"),
    "svm": ("CADUCEUS_SVM", "A", "Float",
            "Caduceus SVM decision function (positive: class 1) of the model for the variant's distance-to-TSS bucket"),
}
TSS_FIELD = ("CADUCEUS_TSS_DIST", "1", "Integer", "Distance (bp) from the variant to the nearest transcription start site")
REASON_FIELD = ("CADUCEUS_SKIP", "A", "String",
                "Why an ALT allele was not scored (ref_mismatch, symbolic, star_allele, missing_alt, invalid_alt, "
                "invalid_ref, missing_contig, longer_than_window, llr_undefined_for_indel, llr_undefined_for_mnv); "
                "'.' for scored alleles")
FLAG_FIELD = ("CADUCEUS_UNSCORED", "0", "Flag", "At least one ALT allele of this record was not scored (see CADUCEUS_SKIP)")
OUR_KEYS = {f[0] for f in INFO_FIELDS.values()} | {TSS_FIELD[0], REASON_FIELD[0], FLAG_FIELD[0]}

_BASES_RE = re.compile(r"^[ACGTNacgtn]+$")
_TOKEN = {b: VOCAB[b] for b in "ACGTN"}


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

    def to_json(self) -> str:
        return json.dumps({"s": self.scores, "r": self.reasons, "t": self.tss_distance, "m": self.ref_mismatch})

    @classmethod
    def from_json(cls, text: str) -> "RecordResult":
        d = json.loads(text)
        return cls(d["s"], d["r"], d["t"], None, d["m"])

    def info_items(self) -> list[str]:
        items = []
        for name, values in self.scores.items():
            if any(v is not None for v in values):
                items.append(f"{INFO_FIELDS[name][0]}=" + ",".join("." if v is None else f"{v:.6g}" for v in values))
        if self.tss_distance is not None:
            items.append(f"{TSS_FIELD[0]}={self.tss_distance}")
        if any(r is not None for r in self.reasons):
            items.append(f"{REASON_FIELD[0]}=" + ",".join(r or "." for r in self.reasons))
            items.append(FLAG_FIELD[0])
        return items


def _cos_l2(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cos = 1.0 - float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else 0.0
    return cos, float(np.linalg.norm(a64 - b64))


class VariantScorer:
    """Scores lists of :class:`VcfRecord` with one model and one reference.

    ``score(records)`` returns one :class:`RecordResult` per record, in order. Counters
    (``n_ref_mismatch``, ``reason_counts``) accumulate over calls.
    """

    def __init__(self, model, reference, scores: Iterable[str] = DEFAULT_SCORES, window: int = DEFAULT_WINDOW,
                 batch_size: int = 64, tss=None, svm=None, tissue: str | None = None, strict_ref: bool = False,
                 missing_contig: str = "error", source: str = "VCF", keep_features: bool = False,
                 where: Callable[[int], str] = lambda line: f"line {line}"):
        self.model, self.reference = model, reference
        self.scores = validate_scores(scores)
        if window < 3:
            raise CaduceusError(f"--window must be at least 3 bp, got {window}")
        if batch_size < 1:
            raise CaduceusError(f"--batch-size must be at least 1, got {batch_size}")
        if missing_contig not in MISSING_CONTIG:
            raise CaduceusError(f"--missing-contig must be one of {', '.join(MISSING_CONTIG)}, got {missing_contig!r}")
        if "svm" in self.scores and (svm is None or tss is None):
            raise CaduceusError("the svm score needs a trained model (--svm DIR) and TSS annotation (--tss FILE)")
        self.window, self.centre, self.batch_size = window, window // 2, batch_size
        self.tss, self.svm, self.tissue = tss, svm, tissue
        self.strict_ref, self.missing_contig, self.source = strict_ref, missing_contig, source
        self.keep_features, self.where = keep_features, where
        self.need_embed = keep_features or any(s in self.scores for s in ("embed_cos", "embed_l2", "svm"))
        self.complement = torch.tensor(model.config.complement_list(), dtype=torch.long)
        self.n_ref_mismatch = 0
        self.reason_counts: Counter = Counter()
        self.n_alts = 0

    # -- model passes --------------------------------------------------------------------------
    @torch.no_grad()
    def centre_logits(self, ids: np.ndarray) -> np.ndarray:
        """(N, L) uint8 windows (masked at the centre) -> (N, vocab) logits at the centre, both
        strands combined (PS: one pass; Ph: forward and reverse-complement passes averaged)."""
        model, c = self.model, self.centre
        out = []
        for start in range(0, len(ids), self.batch_size):
            x = torch.from_numpy(ids[start:start + self.batch_size]).to(model.device).long()
            with autocast_for(model):
                hidden, _ = model.caduceus(x, model.backend, False)
                logits = self._lm_head(hidden[:, c]).float()
                if not model.config.rcps:
                    rc = reverse_complement_ids(x, self.complement.to(x.device))
                    hidden_rc, _ = model.caduceus(rc, model.backend, False)
                    logits_rc = self._lm_head(hidden_rc[:, x.shape[1] - 1 - c]).float()
                    logits = 0.5 * (logits + logits_rc[:, self.complement.to(x.device)])
            out.append(logits.cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 16))

    def _lm_head(self, h: torch.Tensor) -> torch.Tensor:
        if self.model.config.rcps:
            return self.model.lm_head(h)
        return F.linear(h, self.model.lm_head.weight.to(h.dtype))

    @torch.no_grad()
    def embeddings(self, ids: np.ndarray) -> np.ndarray:
        """(N, L) uint8 windows -> (N, d) strand-averaged mean embeddings of the last layer."""
        out = []
        for start in range(0, len(ids), self.batch_size):
            x = torch.from_numpy(ids[start:start + self.batch_size]).to(self.model.device).long()
            out.append(embed_tokens(self.model, x, pool="mean").cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.model.config.d_model), dtype=np.float32)

    # -- records -------------------------------------------------------------------------------
    def _windows(self, rec: VcfRecord, contig: str) -> tuple[np.ndarray, str]:
        """Token ids of the variant's window plus len(REF) bases (room for the alternative window of a
        deletion), and the REF bases seen at the centre."""
        start, end = variant_window(rec.pos - 1, self.window)
        seq, _ = fetch_window(self.reference, contig, start, end + len(rec.ref))
        return encode(seq, source=f"{self.reference.path}: {contig}:{start + 1}"), seq[self.centre:self.centre + len(rec.ref)]

    def _alt_window(self, ids: np.ndarray, ref: str, alt: str) -> np.ndarray:
        c, w = self.centre, self.window
        alt_ids = encode(alt)
        tail = ids[c + len(ref): c + len(ref) + max(0, w - c - len(alt))]
        return np.concatenate([ids[:c], alt_ids, tail])[:w]

    def score(self, records: list[VcfRecord]) -> list[RecordResult]:
        masks: dict[tuple, int] = {}
        embeds: dict[tuple, int] = {}
        mask_rows: list[np.ndarray] = []
        embed_rows: list[np.ndarray] = []
        plans: list[list[tuple | None]] = []
        results: list[RecordResult] = []

        def row(table, rows, key, make):
            if key not in table:
                table[key] = len(rows)
                rows.append(make())
            return table[key]

        for rec in records:
            n = len(rec.alts) or 1
            alts = rec.alts or [None]
            result = RecordResult({s: [None] * n for s in self.scores}, [None] * n,
                                  features=[None] * n if self.keep_features else None)
            if self.tss is not None and rec.pos >= 1:
                result.tss_distance = self.tss.nearest(rec.chrom, rec.pos - 1)
            kinds = [classify_alt(rec.ref, a) for a in alts]
            plan: list[tuple | None] = [None] * n
            scorable = [k for k, (kind, _) in enumerate(kinds) if kind]
            for k, (_, reason) in enumerate(kinds):
                result.reasons[k] = reason
            contig = self.reference.resolve_contig(rec.chrom) if scorable else None
            if scorable and contig is None:
                if self.missing_contig == "error":
                    shown = ", ".join(list(self.reference.contigs)[:5])
                    more = "" if len(self.reference.contigs) <= 5 else f", ... ({len(self.reference.contigs)} in all)"
                    raise CaduceusError(f"{self.source}: {self.where(rec.line)}: contig {rec.chrom!r} is not in the reference "
                                        f"{self.reference.path} (it has {shown}{more}); give the matching FASTA, "
                                        "or --missing-contig skip to pass such records through unscored")
                for k in scorable:
                    result.reasons[k] = "missing_contig"
                scorable = []
            if scorable and (rec.pos < 1 or len(rec.ref) > self.window):
                for k in scorable:
                    result.reasons[k] = "longer_than_window" if rec.pos >= 1 else "invalid_ref"
                scorable = []
            if scorable:
                ids, seen = self._windows(rec, contig)
                if seen.upper() != rec.ref.upper():
                    self.n_ref_mismatch += 1
                    result.ref_mismatch = True
                    if self.strict_ref:
                        raise CaduceusError(f"{self.source}: {self.where(rec.line)}: REF {rec.ref[:20]!r} at {rec.chrom}:{rec.pos} "
                                            f"does not match the reference {self.reference.path} ({seen[:20]!r}); "
                                            "is it the same genome build? (drop --strict-ref to skip such records)")
                    for k in scorable:
                        result.reasons[k] = "ref_mismatch"
                    scorable = []
            for k in scorable:
                kind, alt = kinds[k][0], alts[k]
                if len(alt) > self.window:
                    result.reasons[k] = "longer_than_window"
                    continue
                key = (contig, rec.pos)
                mask_row = ref_row = alt_row = None
                if "llr" in self.scores and kind == "snv":
                    mask_row = row(masks, mask_rows, key, lambda: _masked(ids[:self.window], self.centre))
                if self.need_embed:
                    ref_row = row(embeds, embed_rows, key, lambda: ids[:self.window])
                    alt_row = row(embeds, embed_rows, key + (rec.ref.upper(), alt.upper()),
                                  lambda: self._alt_window(ids, rec.ref, alt))
                if mask_row is None and ref_row is None:
                    result.reasons[k] = f"llr_undefined_for_{kind}"
                    continue
                plan[k] = (kind, alt, mask_row, ref_row, alt_row)
            plans.append(plan)
            results.append(result)

        logits = self.centre_logits(np.stack(mask_rows)) if mask_rows else None
        emb = self.embeddings(np.stack(embed_rows)) if embed_rows else None
        for rec, plan, result in zip(records, plans, results):
            for k, item in enumerate(plan):
                self.n_alts += 1
                if item is None:
                    self.reason_counts[result.reasons[k] or "?"] += 1
                    continue
                self.reason_counts["scored"] += 1
                kind, alt, mask_row, ref_row, alt_row = item
                if mask_row is not None:
                    row_logits = logits[mask_row]
                    result.scores["llr"][k] = float(row_logits[_TOKEN[alt.upper()]] - row_logits[_TOKEN[rec.ref.upper()]])
                if ref_row is not None:
                    cos, l2 = _cos_l2(emb[ref_row], emb[alt_row])
                    if "embed_cos" in self.scores:
                        result.scores["embed_cos"][k] = cos
                    if "embed_l2" in self.scores:
                        result.scores["embed_l2"][k] = l2
                    feats = np.concatenate([emb[ref_row], emb[alt_row]]).astype(np.float32)
                    if self.keep_features:
                        result.features[k] = feats
                    if "svm" in self.scores and result.tss_distance is not None:
                        result.scores["svm"][k] = float(self.svm.decision(feats[None], [result.tss_distance],
                                                                          tissues=[self.tissue])[0])
        return results


def _masked(ids: np.ndarray, centre: int) -> np.ndarray:
    out = ids.copy()
    out[centre] = MASK
    return out


def validate_scores(scores: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(scores, str):
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    scores = tuple(dict.fromkeys(scores))
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise CaduceusError(f"--scores: unknown score {', '.join(bad) or '(none given)'}; choose from {', '.join(SCORES)}")
    return scores


# -- streaming driver ------------------------------------------------------------------------------

def _chunks(reader: VcfReader, chunk_size: int) -> Iterator[list[tuple[object, VcfRecord]]]:
    chunk = []
    for item in reader:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _dist_env(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    """(rank, world size, launched by torchrun)."""
    if rank is not None or world_size is not None:
        return int(rank or 0), int(world_size or 1), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


def _barrier() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def shard_path(output: str, rank: int, world_size: int, shard_dir: str | None = None) -> Path:
    base = Path(shard_dir) if shard_dir else (Path(output).parent if output != "-" else Path("."))
    name = "stdout" if output == "-" else Path(output).name
    return base / f".{name}.caduceus-shard-{rank}-of-{world_size}.jsonl"


TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt")


def _tsv_rows(rec: VcfRecord, result: RecordResult, scores: tuple[str, ...], with_tss: bool) -> str:
    alts = rec.alts or ["."]
    lines = []
    for k, alt in enumerate(alts):
        vals = ["NA" if result.scores[s][k] is None else f"{result.scores[s][k]:.6g}" for s in scores]
        tss = [("NA" if result.tss_distance is None else str(result.tss_distance))] if with_tss else []
        lines.append("\t".join([rec.chrom, str(rec.pos), rec.id, rec.ref, alt or ".", *vals, *tss,
                                result.reasons[k] or "scored"]) + "\n")
    return "".join(lines)


def _write_all(sink: RecordSink, fmt: str, reader: VcfReader, items: Iterator[tuple[object, VcfRecord, RecordResult]],
               meta: dict[str, str], scores: tuple[str, ...], with_tss: bool, progress: Callable[[int], None] | None) -> Counter:
    info_lines = [info_header_line(*INFO_FIELDS[s]) for s in scores]
    if with_tss:
        info_lines.append(info_header_line(*TSS_FIELD))
    info_lines += [info_header_line(*REASON_FIELD), info_header_line(*FLAG_FIELD)]
    if fmt == "tsv":
        sink.write("".join(f"##caduceus_{k}={' '.join(str(v).split())}\n" for k, v in meta.items()))
        sink.write("\t".join([*TSV_COLUMNS, *scores, *(["tss_distance"] if with_tss else []), "status"]) + "\n")
    else:
        sink.write(annotated_header(reader.raw_header, info_lines, meta, OUR_KEYS))
    counts: Counter = Counter()
    pending = 0
    for variant, rec, result in items:
        counts["records"] += 1
        counts["ref_mismatch"] += result.ref_mismatch
        for r in result.reasons:
            counts["alts"] += 1
            counts[f"skipped_{r}" if r else "scored"] += 1
        if fmt == "tsv":
            sink.write(_tsv_rows(rec, result, scores, with_tss))
        else:
            sink.note_contig(rec.chrom)
            sink.write(add_info(str(variant), result.info_items(), OUR_KEYS))
        pending += 1
        if progress and pending >= 256:
            progress(pending)
            pending = 0
    if progress and pending:
        progress(pending)
    return counts


def score_variants(vcf: str, fasta: str, output: str = "-", *, model="bundled",
                   scores: Iterable[str] | str = DEFAULT_SCORES, window: int = DEFAULT_WINDOW, batch_size: int = 64,
                   chunk_size: int = DEFAULT_CHUNK, device: str | None = None, dtype: str | None = None,
                   backend: str = "auto", tss: str | None = None, svm: str | None = None, tissue: str | None = None,
                   strict_ref: bool = False, missing_contig: str = "error", fmt: str | None = None,
                   write_index: bool = False, progress: Callable[[int], None] | None = None,
                   rank: int | None = None, world_size: int | None = None, shard_dir: str | None = None) -> dict:
    """Score every ALT allele of ``vcf`` and write the annotated records to ``output``.

    ``model`` is a name/folder (loaded here) or a loaded :class:`CaduceusForMaskedLM`. Returns a
    summary (records, alts scored, skips by reason, REF mismatches, seconds, variants/s).
    """
    from ..genome.fasta import Reference
    from ..genome.tss import read_tss

    scores = validate_scores(scores)
    fmt = output_format(output, fmt)
    if output != "-":
        check_writable(output)
    rank, world_size, launched = _dist_env(rank, world_size)
    if world_size > 1 and vcf == "-":
        raise CaduceusError("sharded scoring (torchrun) reads the input twice: give a VCF file, not stdin")
    if chunk_size < 1:
        raise CaduceusError(f"chunk size must be at least 1, got {chunk_size}")
    reference = Reference(fasta)
    tss_index = read_tss(tss) if tss else None
    svm_model = None
    if svm:
        svm_model = load_svm(svm)
        if "svm" not in scores:
            scores = scores + ("svm",)
    if isinstance(model, (str, os.PathLike)):
        from ..model.checkpoint import load_model

        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
        model = load_model(model, device=device, dtype=dtype, backend=backend)
    if svm_model is not None:
        svm_model.check_compatible(model, window, tissue)
    reader = VcfReader(vcf)
    scorer = VariantScorer(model, reference, scores, window, batch_size, tss_index, svm_model, tissue, strict_ref,
                           missing_contig, source=reader.label, where=reader.where)
    meta = provenance(model, window=window, scores=",".join(scores), reference=fasta,
                      **({"tss": tss} if tss else {}), **({"svm": f"{svm} sha256={svm_model.sha256}"} if svm_model else {}))
    started = time.perf_counter()

    def scored_items(owned: Callable[[int], bool]):
        for i, chunk in enumerate(_chunks(reader, chunk_size)):
            if not owned(i):
                continue
            results = scorer.score([rec for _, rec in chunk])
            for (variant, rec), result in zip(chunk, results):
                yield variant, rec, result

    try:
        if world_size == 1:
            with RecordSink(output, fmt, write_index, reference.contigs) as sink:
                counts = _write_all(sink, fmt, reader, scored_items(lambda i: True), meta, scores, tss_index is not None,
                                    progress)
        else:
            counts = _score_shard(scored_items(lambda i: i % world_size == rank),
                                  shard_path(output, rank, world_size, shard_dir), progress)
            if launched:
                _barrier()
            if rank == 0:
                counts = merge_shards(vcf, output, world_size, chunk_size=chunk_size, fmt=fmt, write_index=write_index,
                                      meta=meta, scores=scores, with_tss=tss_index is not None,
                                      contig_lengths=reference.contigs, shard_dir=shard_dir)
    finally:
        reader.close()
        reference.close()
    seconds = time.perf_counter() - started
    if counts.get("ref_mismatch"):
        log.warning("%d record(s) have a REF that does not match %s; they were passed through unscored "
                    "(CADUCEUS_SKIP=ref_mismatch)", counts["ref_mismatch"], fasta)
    summary = {"records": counts.get("records", 0), "alts": counts.get("alts", 0), "scored": counts.get("scored", 0),
               "ref_mismatch_records": counts.get("ref_mismatch", 0),
               "skipped": {k[8:]: v for k, v in sorted(counts.items()) if k.startswith("skipped_")},
               "seconds": round(seconds, 3), "alts_per_second": round(counts.get("alts", 0) / seconds, 2) if seconds else None,
               "rank": rank, "world_size": world_size, "output": output, "format": fmt}
    return summary


def _score_shard(items, path: Path, progress) -> Counter:
    counts: Counter = Counter()
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        for _, rec, result in items:
            f.write(f"{rec.line}\t{result.to_json()}\n")
            counts["records"] += 1
            if progress:
                progress(1)
    return counts


def merge_shards(vcf: str, output: str, world_size: int, *, chunk_size: int, fmt: str, write_index: bool,
                 meta: dict[str, str], scores: tuple[str, ...], with_tss: bool, contig_lengths: dict[str, int],
                 shard_dir: str | None = None, progress=None) -> Counter:
    """Write ``output`` from the input VCF and the per-rank shard files, in input order; remove the shards."""
    paths = [shard_path(output, r, world_size, shard_dir) for r in range(world_size)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CaduceusError(f"shard file(s) missing: {', '.join(missing)} (did every rank finish?)")
    handles = [open(p) for p in paths]
    reader = VcfReader(vcf)
    try:
        def items():
            for i, (variant, rec) in enumerate(reader):
                line = handles[(i // chunk_size) % world_size].readline()
                number, _, payload = line.partition("\t")
                if not line or int(number) != rec.line:
                    raise CaduceusError(f"{paths[(i // chunk_size) % world_size]}: does not match {vcf} at line "
                                        f"{rec.line} (shards from another run or another chunk size?)")
                yield variant, rec, RecordResult.from_json(payload)

        with RecordSink(output, fmt, write_index, contig_lengths) as sink:
            counts = _write_all(sink, fmt, reader, items(), meta, scores, with_tss, progress)
    finally:
        reader.close()
        for h in handles:
            h.close()
    for p in paths:
        p.unlink()
    return counts
