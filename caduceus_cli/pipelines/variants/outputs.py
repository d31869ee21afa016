"""Annotated output of score-variants: VCF INFO fields or TSV rows, as text per record.

A chunk's records become one record batch (``chunk_batch``: chromosome, output text, skip reasons)
so that the ranks of a sharded run hand rank 0 finished text; ``write_batches`` hands the records to
the writer (genome.vcf_writer) and counts what was scored.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

import pyarrow as pa

from ...genome.vcf import VcfRecord
from ...genome.vcf_writer import RecordSink, add_info, annotated_header, info_header_line
from .scorer import RecordResult

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
                "invalid_ref, missing_contig, pos_outside_contig, longer_than_window, llr_undefined_for_indel, "
                "llr_undefined_for_mnv); "
                "'.' for scored alleles")
FLAG_FIELD = ("CADUCEUS_UNSCORED", "0", "Flag", "At least one ALT allele of this record was not scored (see CADUCEUS_SKIP)")
PCT = "_pct"  # a score's percentile among a background's SNVs (--background): CADUCEUS_<SCORE>_PCT
OUR_KEYS = ({f[0] for f in INFO_FIELDS.values()} | {f[0] + PCT.upper() for f in INFO_FIELDS.values()}
            | {TSS_FIELD[0], REASON_FIELD[0], FLAG_FIELD[0]})


def info_key(name: str) -> str:
    """The INFO key of a score (``llr`` -> CADUCEUS_LLR) or of its percentile (``llr_pct`` -> CADUCEUS_LLR_PCT)."""
    if name.endswith(PCT):
        return INFO_FIELDS[name[:-len(PCT)]][0] + PCT.upper()
    return INFO_FIELDS[name][0]
TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt")
BATCH_SCHEMA = pa.schema([pa.field("chrom", pa.string()), pa.field("pos", pa.int64()), pa.field("line", pa.int64()),
                          pa.field("text", pa.string()), pa.field("ref_mismatch", pa.bool_()),
                          pa.field("reasons", pa.list_(pa.string()))])


def info_items(result: RecordResult) -> list[str]:
    """The INFO items of a record's scores, TSS distance and skip reasons."""
    items = []
    for name, values in result.scores.items():
        if any(v is not None for v in values):
            items.append(f"{info_key(name)}=" + ",".join("." if v is None else f"{v:.6g}" for v in values))
    if result.tss_distance is not None:
        items.append(f"{TSS_FIELD[0]}={result.tss_distance}")
    if any(r is not None for r in result.reasons):
        items.append(f"{REASON_FIELD[0]}=" + ",".join(r or "." for r in result.reasons))
        items.append(FLAG_FIELD[0])
    return items


def tsv_rows(rec: VcfRecord, result: RecordResult, scores: tuple[str, ...], with_tss: bool) -> str:
    """One TSV row per ALT allele: the variant, its scores ('NA' when not computed), the TSS
    distance and the status (``scored`` or the skip reason)."""
    lines = []
    for k, alt in enumerate(rec.alts or ["."]):
        values = ["NA" if result.scores[s][k] is None else f"{result.scores[s][k]:.6g}" for s in scores]
        tss = [("NA" if result.tss_distance is None else str(result.tss_distance))] if with_tss else []
        lines.append("\t".join([rec.chrom, str(rec.pos), rec.id, rec.ref, alt or ".", *values, *tss,
                                result.reasons[k] or "scored"]) + "\n")
    return "".join(lines)


def header(fmt: str, raw_header: str, meta: dict[str, str], scores: tuple[str, ...], with_tss: bool,
           contigs: list[str] | None = None, descriptions: dict[str, str] | None = None) -> str:
    """The output's header: provenance and column names (TSV), or the input header with our INFO
    definitions, provenance and ``contigs`` lines added (VCF/BCF). ``descriptions``: the INFO
    Description of each percentile score (``llr_pct`` ...)."""
    if fmt == "tsv":
        return ("".join(f"##caduceus_{k}={' '.join(str(v).split())}\n" for k, v in meta.items())
                + "\t".join([*TSV_COLUMNS, *scores, *(["tss_distance"] if with_tss else []), "status"]) + "\n")
    descriptions = descriptions or {}
    info_lines = [info_header_line(*INFO_FIELDS[s]) if s in INFO_FIELDS
                  else info_header_line(info_key(s), "A", "Float", descriptions[s]) for s in scores]
    if with_tss:
        info_lines.append(info_header_line(*TSS_FIELD))
    info_lines += [info_header_line(*REASON_FIELD), info_header_line(*FLAG_FIELD)]
    return annotated_header(raw_header, info_lines, meta, OUR_KEYS, contigs)


def chunk_batch(chunk: list[tuple[object, VcfRecord]], results: list[RecordResult], fmt: str,
                scores: tuple[str, ...], with_tss: bool) -> pa.RecordBatch:
    """The output text of a chunk's records (one row per record), with what the counts need."""
    if fmt == "tsv":
        texts = [tsv_rows(rec, result, scores, with_tss) for (_, rec), result in zip(chunk, results)]
    else:
        texts = [add_info(str(variant), info_items(result), OUR_KEYS) for (variant, _), result in zip(chunk, results)]
    return pa.RecordBatch.from_pydict({
        "chrom": [rec.chrom for _, rec in chunk], "pos": [rec.pos for _, rec in chunk],
        "line": [rec.line for _, rec in chunk], "text": texts,
        "ref_mismatch": [r.ref_mismatch for r in results],
        "reasons": [[reason or "" for reason in r.reasons] for r in results],
    }, schema=BATCH_SCHEMA)


def write_batches(sink: RecordSink, batches: Iterable[pa.RecordBatch],
                  check_order: Callable[[str, int, int], None] | None = None) -> Counter:
    """Write the records of ``batches``; count records, ALTs, scored ALTs, skips by reason and REF
    mismatches. ``check_order(chrom, pos, line)`` sees every record first."""
    counts: Counter = Counter()
    for batch in batches:
        columns = batch.to_pydict()
        for chrom, pos, line, text, mismatch, reasons in zip(columns["chrom"], columns["pos"], columns["line"],
                                                             columns["text"], columns["ref_mismatch"],
                                                             columns["reasons"]):
            if check_order is not None:
                check_order(chrom, pos, line)
            sink.write(chrom, text, line)
            counts["records"] += 1
            counts["ref_mismatch"] += mismatch
            for reason in reasons:
                counts["alts"] += 1
                counts[f"skipped_{reason}" if reason else "scored"] += 1
    return counts


def summary(counts: Counter, seconds: float, **extra) -> dict:
    """What ``score_variants`` returns (and the command prints)."""
    alts = counts.get("alts", 0)
    return {"records": counts.get("records", 0), "alts": alts, "scored": counts.get("scored", 0),
            "ref_mismatch_records": counts.get("ref_mismatch", 0),
            "skipped": {k[8:]: v for k, v in sorted(counts.items()) if k.startswith("skipped_")},
            "seconds": round(seconds, 3), "alts_per_second": round(alts / seconds, 2) if seconds else None, **extra}


