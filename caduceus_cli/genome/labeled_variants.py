"""Labeled variants (0/1 per ALT allele) for the variant-effect SVM: a TSV or a VCF with a label INFO field."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import CaduceusError
from ..limits import is_ascii_digits
from .lines import check_input, parse_int, read_lines
from .vcf import VcfReader, VcfRecord

VCF_SUFFIXES = (".vcf", ".vcf.gz", ".bcf", ".vcf.bgz")
TSV_COLUMNS = "chrom, pos, ref, alt, label[, tissue]"


@dataclass
class LabeledVariant:
    record: VcfRecord  # one ALT
    label: int
    tissue: str | None = None


def parse_label(value, where: str) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes", "pos", "positive"):
        return 1
    if text in ("0", "0.0", "false", "no", "neg", "negative"):
        return 0
    raise CaduceusError(f"{where}: label {value!r} is not 0/1 (or true/false)")


def read_labeled(path: str | os.PathLike, label_field: str = "label") -> list[LabeledVariant]:
    """Labeled variants from a TSV (chrom, pos, ref, alt, label[, tissue]; header optional) or a VCF
    whose INFO field ``label_field`` holds 0/1 (Number=1, or Number=A for one label per ALT)."""
    p = check_input(path, "labeled-variant file")
    out = _read_labeled_vcf(p, label_field) if p.name.lower().endswith(VCF_SUFFIXES) else _read_labeled_tsv(p)
    if not out:
        raise CaduceusError(f"{p}: no labeled variants")
    return out


def _read_labeled_tsv(path) -> list[LabeledVariant]:
    out: list[LabeledVariant] = []
    for line in read_lines(path, what="labeled-variant file", sep="\t"):
        cols = line.fields
        if len(cols) < 5:
            raise CaduceusError(f"{line.where}: expected tab-separated {TSV_COLUMNS}; got {line.text.strip()[:60]!r}")
        pos = cols[1].strip()
        if not out and not is_ascii_digits(pos):
            if pos.lower() != "pos":
                raise CaduceusError(f"{line.where}: pos {cols[1]!r} is not a positive integer")
            continue  # header
        value = parse_int(pos, "pos", line.where, minimum=1, hint=" (VCF positions are 1-based)")
        rec = VcfRecord(cols[0], value, cols[2].strip(), [cols[3].strip()], line.number)
        tissue = cols[5].strip() if len(cols) > 5 and cols[5].strip() else None
        out.append(LabeledVariant(rec, parse_label(cols[4], line.where), tissue))
    return out


def _read_labeled_vcf(path, label_field: str) -> list[LabeledVariant]:
    reader = VcfReader(path)
    out = []
    try:
        for variant, rec in reader:
            value = variant.INFO.get(label_field)
            if value is None:
                raise CaduceusError(f"{path}: line {rec.line}: no INFO field {label_field!r} (give --label-field)")
            values = list(value) if isinstance(value, (tuple, list)) else [value] * len(rec.alts)
            if len(values) != len(rec.alts):
                raise CaduceusError(f"{path}: line {rec.line}: {len(values)} labels for {len(rec.alts)} ALT alleles")
            for alt, v in zip(rec.alts, values):
                out.append(LabeledVariant(VcfRecord(rec.chrom, rec.pos, rec.ref, [alt], rec.line, rec.id),
                                          parse_label(v, f"{path}: line {rec.line}")))
    finally:
        reader.close()
    return out
