"""The vep-eqtl suite: the paper's causal-eQTL SVM through the existing engine (``train_svm``).

The table (``All_Tissues.csv`` of the long-range benchmark: CHROM, POS, [REF,] ALT, label, tissue,
...; column names in any case) is split as the paper did: chromosomes 9 and 10 are the test set,
every other chromosome trains. ``train_svm`` then fits StandardScaler + RBF SVC per
distance-to-TSS bucket (C in 1/5/10, seeds 1..5, 5,000 training variants per fit, the tissue as a
feature as in the published notebook) and reports AUROC from the decision function and from hard
labels. One row per bucket and seed, for the C the engine kept.

As the paper ran it by default: the paper's features (``vep_embeddings.py``), a 1,536 bp window,
and the model's trained length as the context (131,072 bp for the 131k checkpoints); every row
records its context, window and features.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
import uuid
from pathlib import Path

from ..._version import __version__
from ...errors import CaduceusError
from ...genome.lines import check_input, open_text
from ...io import command_line
from ...limits import is_ascii_digits
from .sources import TaskFiles

TEST_CHROMOSOMES = {"9", "10"}
REQUIRED = ("chrom", "pos", "alt", "label")


def _chromosome(name: str) -> str:
    return name[3:] if name.lower().startswith("chr") else name


def read_eqtl_table(path: Path) -> list[dict]:
    """Rows of the eQTL table as {chrom, pos, ref (may be ''), alt, label, tissue}."""
    stream, label, must_close = open_text(path, "eQTL table")
    try:
        reader = csv.DictReader(stream)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise CaduceusError(f"{label}: line 1: missing column(s) {', '.join(missing)} "
                                f"(expected CHROM, POS, ALT, label, tissue)")
        rows = []
        for line_no, record in enumerate(reader, start=2):
            value = {c: (record.get(columns[c]) or "").strip() for c in columns}
            if not is_ascii_digits(value["pos"]):
                raise CaduceusError(f"{label}: line {line_no}: POS {value['pos']!r} is not a positive integer")
            if value["label"] not in ("0", "1"):
                raise CaduceusError(f"{label}: line {line_no}: label {value['label']!r} is not a class of "
                                    "vep-eqtl (classes: 0, 1)")
            rows.append({"chrom": value["chrom"], "pos": int(value["pos"]), "ref": value.get("ref", ""),
                         "alt": value["alt"], "label": value["label"], "tissue": value.get("tissue") or "."})
    finally:
        if must_close:
            stream.close()
    if not rows:
        raise CaduceusError(f"{label}: no variants")
    return rows


def _fill_ref(rows: list[dict], fasta: str) -> None:
    """REF from the genome where the table has none (the published table gives ALT only)."""
    from ...genome.fasta import Reference

    with Reference(fasta) as reference:
        for row in rows:
            if not row["ref"]:
                contig = reference.resolve_contig(row["chrom"])
                row["ref"] = reference.fetch(contig, row["pos"] - 1, row["pos"])[0].upper() if contig else "N"


def _write_tsv(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("chrom\tpos\tref\talt\tlabel\ttissue\n")
        for r in rows:
            f.write(f"{r['chrom']}\t{r['pos']}\t{r['ref']}\t{r['alt']}\t{r['label']}\t{r['tissue']}\n")


def check_inputs(fasta: str | None, tss: str | None) -> None:
    """The genome and TSS annotation the suite needs (given by the user: neither is downloaded)."""
    missing = [what for what, given in (("the hg38 genome (--fasta)", fasta), ("a TSS annotation (--tss)", tss))
               if not given]
    if missing:
        raise CaduceusError(f"vep-eqtl needs {' and '.join(missing)}: give {'them' if len(missing) > 1 else 'it'} "
                            "(neither is downloaded)")
    for path in (fasta, tss):
        check_input(path)


def run_eqtl(files: TaskFiles, plan, fasta: str | None, tss: str | None, folder: Path | None) -> list[dict]:
    """Fit the bucketed SVMs and return one row per bucket and seed."""
    from ... import train_svm  # the engine's public entry point (stable across its refactoring)

    check_inputs(fasta, tss)
    table = files.splits["all"]
    rows = read_eqtl_table(table)
    _fill_ref(rows, fasta)
    test = [r for r in rows if _chromosome(r["chrom"]) in TEST_CHROMOSOMES]
    train = [r for r in rows if _chromosome(r["chrom"]) not in TEST_CHROMOSOMES]
    if not test or not train:
        raise CaduceusError(f"{table}: the split needs variants on chromosomes 9/10 (test) and elsewhere (train); "
                            f"found {len(train)} train and {len(test)} test")
    options = {k: plan.engine_options[k] for k in ("window", "context", "features", "n_train", "Cs", "backend")
               if k in plan.engine_options}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".caduceus-eqtl-", dir=folder) as tmp:
        _write_tsv(train, Path(tmp) / "train.tsv")
        _write_tsv(test, Path(tmp) / "test.tsv")
        result = train_svm(str(Path(tmp) / "train.tsv"), fasta, tss, str(Path(tmp) / "svm"), model=plan.model,
                           test=str(Path(tmp) / "test.tsv"), use_tissue=True, seeds=plan.seeds,
                           batch_size=plan.batch_size, device=plan.device, progress=plan.progress, **options)
        svm_meta = (Path(tmp) / "svm" / "svm.json").read_text()
    return _rows(files, result, svm_meta, len(train), len(test), time.perf_counter() - started, plan)


def _rows(files: TaskFiles, result: dict, svm_meta: str, n_train: int, n_test: int, seconds: float, plan) -> list[dict]:
    from ...runtime import device_name

    meta = json.loads(svm_meta)
    common = {"suite": "vep-eqtl", "protocol": "svm", "metric": "auroc", "model": meta.get("model"),
              "model_sha256": meta.get("model_sha256"), "model_revision": None,
              "evaluation": "test: chromosomes 9 and 10; train: all others", "n": {"train": n_train, "test": n_test},
              "data_origin": files.origin, "tool_version": __version__, "command": command_line(),
              "device": device_name(plan.device), "task_wall_seconds": round(seconds, 2), "run_id": uuid.uuid4().hex[:12],
              "context": meta.get("context") or meta.get("window"), "window": meta.get("window"),
              "features": meta.get("feature_set", "mean"),
              "recipe": {"window": meta.get("window"), "use_tissue": True, "Cs": meta.get("Cs"),
                         "n_train": meta.get("n_train"), "features": meta.get("features")},
              "dropped_unscorable": result.get("n_unscorable_dropped")}
    out = []
    for name, bucket in result["buckets"].items():
        base = {**common, "task": f"eqtl_{name}", "bucket_sizes": {"train": bucket["n_train"], "test": bucket["n_test"]}}
        if "skipped" in bucket:
            out.append({**base, "seed": None, "metrics": {}, "value": None, "skipped": bucket["skipped"]})
            continue
        best = bucket["per_C"][str(bucket["best_C"])]
        for seed_row in best["per_seed"]:
            metrics = {"auroc": seed_row["auroc_decision"], "auroc_hard_labels": seed_row["auroc_hard_labels"]}
            out.append({**base, "seed": seed_row["seed"], "C": bucket["best_C"], "metrics": metrics,
                        "value": metrics["auroc"]})
    return out
