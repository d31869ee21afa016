"""The paper's variant-effect SVM (Schiff et al. 2024, vep_svm.ipynb), as an engine function.

Features per ALT allele (``features``): ``paper`` (the default) reproduces the official
``vep_embeddings.py`` + ``vep_svm.ipynb`` features (see ``variants/paper.py``: the model reads the
whole context, 1,537 positions around the variant are averaged per strand, REF and ALT
concatenated, forward and RC averaged as the notebook does per model); ``mean``: the mean over the
window of the last-layer embeddings of the reference and alternative contexts, concatenated
(2 x d_model), each averaged over the two strands (PS: its two strands; Ph: post-hoc conjoining).
Either is optionally followed by the tissue (an integer code).
Separate classifiers per distance-to-TSS bucket [0, 30 kbp), [30, 100 kbp), [100 kbp, inf):
StandardScaler + SVC (RBF kernel), C in {1, 5, 10}, seeds 1..5, each fit on a training subsample of
5,000 drawn as the notebook does (``np.random.choice`` after seeding; with replacement when the
bucket has fewer). AUROC on the test set is reported from the decision function and, as the published
notebook computed it, from hard labels. The C with the best mean AUROC (decision function) is kept.

Saved without pickle: ``svm.json`` (feature definition, model id and sha256, buckets, metrics) and
``bucket-<k>.npz`` (per seed: scaler mean/scale, support vectors, dual coefficients, intercept,
gamma); the decision function is recomputed from those arrays, exactly as scikit-learn does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..choices import DEFAULT_MODEL
from ..errors import CaduceusError
from ..genome.labeled_variants import LabeledVariant, read_labeled
from ..io import atomic_folder, provenance, refuse_overwriting_inputs, write_json
from ..limits import check_real, check_size
from ..model.loading import resolve_model
from .svm_model import (BUCKET_NAMES, BUCKETS, CS, DEFAULT_TEST_FRACTION, FEATURE_DEFINITION, FORMAT_VERSION, N_TRAIN,
                        SEEDS, SVM_LIMITS, bucket_of)
from .variants.paper import DEFAULT_FEATURES, PAPER_DEFINITION, PAPER_MAX_N_FRACTION, check_features, conjoin
from .variants.scorer import VariantScorer
from .variants.settings import DEFAULT_WINDOW

log = logging.getLogger("caduceus")


def extract_features(model, reference, variants: Sequence[LabeledVariant], tss, window: int,
                     batch_size: int | None = 64, chunk: int = 512, progress: Callable[[int], None] | None = None,
                     source: str = "labeled", *, context: int | None = None, features: str = "mean",
                     is_test: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, 2d) float32 with NaN rows for unscorable variants, TSS distances (N,) with -1
    where unknown, keep mask (N,) bool).

    ``context``: bases the model reads per variant (default: the window). ``features='paper'``:
    the paper's features, conjoined as ``vep_svm.ipynb`` does for the split of each variant
    (``is_test``; default: every variant is a training variant), and variants whose REF context is
    0.5% N or more left out as the official data preparation does."""
    check_features(features)
    scorer = VariantScorer(model, reference, ("embed_l2",), window, batch_size, tss=tss, keep_features=True,
                           missing_contig="skip", source=source, context=context, features=features)
    d = 2 * model.config.d_model
    feats = np.full((len(variants), d), np.nan, dtype=np.float32)
    dist = np.full(len(variants), -1, dtype=np.int64)
    too_many_n = 0
    for start in range(0, len(variants), chunk):
        part = variants[start:start + chunk]
        for j, result in enumerate(scorer.score([v.record for v in part], progress)):
            i, found = start + j, result.features[0]
            if found is not None and features == "paper":
                if result.context_n >= PAPER_MAX_N_FRACTION * scorer.context:
                    too_many_n += 1
                else:
                    test = bool(is_test[i]) if is_test is not None else False
                    feats[i] = conjoin(found[0], found[1], model.config.rcps, test)
            elif found is not None:
                feats[i] = found
            if result.tss_distance is not None:
                dist[i] = result.tss_distance
    if too_many_n:
        log.warning("%d variant(s) left out: their %d bp REF context is %.1f%% N or more (as the paper's data "
                    "preparation)", too_many_n, scorer.context, 100 * PAPER_MAX_N_FRACTION)
    keep = ~np.isnan(feats).any(1) & (dist >= 0)
    return feats, dist, keep


def _tissue_column(variants, vocab: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    return np.array([index.get(v.tissue, -1) for v in variants], dtype=np.float32)[:, None]


def _split(variants: Sequence[LabeledVariant], test_fraction: float) -> np.ndarray:
    """Test mask: per contig, the variants at the last ``test_fraction`` of positions (a genomic
    hold-out, as the paper's chromosome split, not a random one)."""
    is_test = np.zeros(len(variants), dtype=bool)
    by_contig: dict[str, list[int]] = {}
    for i, v in enumerate(variants):
        by_contig.setdefault(v.record.chrom, []).append(i)
    for idx in by_contig.values():
        pos = np.array([variants[i].record.pos for i in idx])
        cut = np.quantile(pos, 1 - test_fraction)
        is_test[np.array(idx)[pos >= cut]] = True
    return is_test


def _fit_one(X, y, C, seed, n_train):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    np.random.seed(seed)  # the notebook's subsampling, bit for bit
    mask = np.random.choice(len(X), size=n_train, replace=n_train > len(X))
    clf = make_pipeline(StandardScaler(), SVC(C=C, random_state=seed))
    clf.fit(X[mask], y[mask])
    return clf


def _auroc(y, score) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def fit_bucket_models(X_train, y_train, X_test, y_test, Cs=CS, seeds=SEEDS, n_train=N_TRAIN):
    """All (C, seed) fits of one bucket -> (metrics per C, fitted pipelines of the best C)."""
    per_c = {}
    fitted = {}
    for C in Cs:
        rows = []
        for seed in seeds:
            clf = _fit_one(X_train, y_train, C, seed, n_train)
            rows.append({"seed": seed, "auroc_decision": _auroc(y_test, clf.decision_function(X_test)),
                         "auroc_hard_labels": _auroc(y_test, clf.predict(X_test))})
            fitted.setdefault(C, []).append(clf)
        dec = [r["auroc_decision"] for r in rows]
        hard = [r["auroc_hard_labels"] for r in rows]
        per_c[C] = {"auroc_decision_mean": float(np.mean(dec)), "auroc_decision_std": float(np.std(dec)),
                    "auroc_hard_labels_mean": float(np.mean(hard)), "auroc_hard_labels_std": float(np.std(hard)),
                    "per_seed": rows}
    best = max(Cs, key=lambda c: per_c[c]["auroc_decision_mean"])
    return per_c, best, fitted[best]


def _export(pipelines) -> dict[str, np.ndarray]:
    arrays = {}
    for i, clf in enumerate(pipelines):
        scaler, svc = clf.steps[0][1], clf.steps[1][1]
        arrays[f"s{i}_mean"] = scaler.mean_.astype(np.float64)
        arrays[f"s{i}_scale"] = scaler.scale_.astype(np.float64)
        arrays[f"s{i}_support_vectors"] = svc.support_vectors_.astype(np.float64)
        arrays[f"s{i}_dual_coef"] = svc.dual_coef_[0].astype(np.float64)
        arrays[f"s{i}_intercept"] = np.asarray(svc.intercept_, dtype=np.float64)
        arrays[f"s{i}_gamma"] = np.asarray([svc._gamma], dtype=np.float64)
        arrays[f"s{i}_classes"] = np.asarray(svc.classes_, dtype=np.int64)
    return arrays


@dataclass
class Dataset:
    """Features and labels of every labeled variant, with the train/test split and the buckets."""

    X: np.ndarray  # (N, 2d [+1]) float32; NaN rows for unscorable variants
    y: np.ndarray  # (N,) 0/1
    bucket: np.ndarray  # (N,) distance-to-TSS bucket, -1 where unknown or unscorable
    is_test: np.ndarray  # (N,) bool
    tissues: list[str]

    def rows(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) masks of bucket ``k``."""
        in_bucket = self.bucket == k
        return in_bucket & ~self.is_test, in_bucket & self.is_test


def build_dataset(model, reference, tss_index, train_set: list[LabeledVariant], test_set: list[LabeledVariant] | None,
                  *, window: int, batch_size: int | None, test_fraction: float, use_tissue: bool, source: str,
                  progress: Callable[[int], None] | None = None, context: int | None = None,
                  features: str = "mean") -> Dataset:
    variants = train_set + (test_set or [])
    if test_set:
        is_test = np.arange(len(variants)) >= len(train_set)
    else:
        is_test = _split(train_set, test_fraction)
    X, dist, keep = extract_features(model, reference, variants, tss_index, window, batch_size, progress=progress,
                                     source=source, context=context, features=features, is_test=is_test)
    tissues = sorted({v.tissue for v in variants if v.tissue}) if use_tissue else []
    if use_tissue:
        X = np.concatenate([X, _tissue_column(variants, tissues)], axis=1)
    bucket = np.array([-1 if not k or bucket_of(int(d)) is None else bucket_of(int(d)) for d, k in zip(dist, keep)])
    return Dataset(X, np.array([v.label for v in variants], dtype=np.int64), bucket, is_test, tissues)


def fit_buckets(data: Dataset, Cs: Sequence[float], seeds: Sequence[int], n_train: int
                ) -> tuple[dict[str, dict], dict[int, dict[str, np.ndarray]]]:
    """(report entry per bucket name, exported arrays per fitted bucket); a bucket without both
    classes in training and test sets is reported as skipped."""
    entries, arrays = {}, {}
    for k, name in enumerate(BUCKET_NAMES):
        tr, te = data.rows(k)
        y = data.y
        entry = {"range_bp": list(BUCKETS[k]), "n_train": int(tr.sum()), "n_test": int(te.sum()),
                 "train_positives": int(y[tr].sum()), "test_positives": int(y[te].sum())}
        if len(np.unique(y[tr])) < 2:
            entry["skipped"] = "training set has fewer than two classes"
        elif len(np.unique(y[te])) < 2:
            entry["skipped"] = "test set has fewer than two classes"
        else:
            per_c, best, fitted = fit_bucket_models(data.X[tr], y[tr], data.X[te], y[te], Cs, seeds, n_train)
            entry.update({"best_C": best, "auroc_decision": per_c[best]["auroc_decision_mean"],
                          "auroc_hard_labels": per_c[best]["auroc_hard_labels_mean"],
                          "per_C": {str(c): v for c, v in per_c.items()}})
            arrays[k] = _export(fitted)
        entries[name] = entry
    return entries, arrays


def _save(folder: Path, model, data: Dataset, report: dict, arrays: dict[int, dict[str, np.ndarray]], *,
          window: int, context: int, features: str, use_tissue: bool, Cs, seeds, n_train: int) -> None:
    """svm.json, report.json and bucket-<k>.npz into ``folder``."""
    meta_buckets = {}
    for k, name in enumerate(BUCKET_NAMES):
        entry = report["buckets"][name]
        if k in arrays:
            np.savez(folder / f"bucket-{k}.npz", **arrays[k])
            meta_buckets[str(k)] = {"name": name, "file": f"bucket-{k}.npz", "C": entry["best_C"]}
        else:
            meta_buckets[str(k)] = {"name": name, "file": None, "skipped": entry["skipped"]}
    source = model.source or {}
    meta = {"format": "caduceus-svm", "format_version": FORMAT_VERSION,
            "features": PAPER_DEFINITION if features == "paper" else FEATURE_DEFINITION, "feature_set": features,
            "n_features": int(data.X.shape[1]), "window": window, "context": context,
            "pool": "paper-1537" if features == "paper" else "mean", "layer": "last",
            "use_tissue": use_tissue, "tissues": data.tissues, "Cs": list(Cs), "seeds": list(seeds),
            "n_train": n_train, "buckets": meta_buckets, "bucket_ranges_bp": [list(b) for b in BUCKETS],
            "model": source.get("id"), "model_sha256": source.get("sha256"),
            "provenance": provenance(model, window=window, context=context, features=features), "report": report}
    write_json(folder / "svm.json", meta)
    write_json(folder / "report.json", report)


def _read_sets(labeled: str, test: str | None, label_field: str, use_tissue: bool):
    train_set = read_labeled(labeled, label_field)
    test_set = read_labeled(test, label_field) if test else None
    if use_tissue and any(v.tissue is None for v in train_set + (test_set or [])):
        raise CaduceusError(f"{labeled}: --use-tissue needs a tissue column (6th) for every variant")
    return train_set, test_set


def train_svm(labeled: str, fasta: str, tss: str, output_dir: str, *, model=DEFAULT_MODEL, window: int = DEFAULT_WINDOW,
              context: int | None = None, features: str = DEFAULT_FEATURES,
              test: str | None = None, test_fraction: float = DEFAULT_TEST_FRACTION, label_field: str = "label",
              use_tissue: bool = False, Cs: Sequence[float] = CS, seeds: Sequence[int] = SEEDS, n_train: int = N_TRAIN,
              batch_size: int | None = None, device: str | None = None, backend: str = "auto",
              revision: str | None = None, progress: Callable[[int], None] | None = None, dtype=None) -> dict:
    """Fit the paper's TSS-bucketed SVMs on ``labeled`` variants and save them to ``output_dir``;
    ``dtype``: the compute dtype of the embedding passes (auto, fp32, bf16; None: auto).

    Test set: ``test`` (a second labeled file) or, without it, the last ``test_fraction`` of
    positions of each contig. ``model``: a name, folder or hub id (at ``revision``) or a loaded
    model. ``features``: 'paper' (the official features) or 'mean'; ``context``: bases the model
    reads per variant (default: the model's declared trained length, at least the window; see
    ``variants.context.choose_context``). ``batch_size`` None: by the memory budget. Returns the
    report (also written to ``output_dir/report.json``).
    """
    from ..genome.fasta import Reference
    from ..genome.tss import read_tss
    from .variants.context import check_cpu_time, choose_context

    check_real("--test-fraction", test_fraction, above=0, below=1)
    check_features(features)
    for name, value in (("n_train", n_train), ("window", window), ("context", context), ("batch_size", batch_size)):
        check_size("--" + name.replace("_", "-"), value, minimum=SVM_LIMITS[name][0], maximum=SVM_LIMITS[name][1])
    refuse_overwriting_inputs(output_dir, labeled, fasta, tss, test)
    with atomic_folder(output_dir) as folder:
        train_set, test_set = _read_sets(labeled, test, label_field, use_tissue)
        tss_index = read_tss(tss)
        model = resolve_model(model, device=device, backend=backend, revision=revision, dtype=dtype)
        explicit = context is not None
        context = choose_context(context, window, model)
        check_cpu_time(model, context, window, 2, explicit=explicit)
        started = time.perf_counter()
        with Reference(fasta) as reference:
            data = build_dataset(model, reference, tss_index, train_set, test_set, window=window,
                                 batch_size=batch_size, test_fraction=test_fraction, use_tissue=use_tissue,
                                 source=labeled, progress=progress, context=context, features=features)
        buckets, arrays = fit_buckets(data, Cs, seeds, n_train)
        if not arrays:
            raise CaduceusError(f"{labeled}: no distance-to-TSS bucket has both classes in training and test sets; "
                                "nothing to fit")
        report = {"labeled": labeled, "test": test or f"last {test_fraction:g} of positions per contig",
                  "window": window, "context": context, "features": features,
                  "n_variants": len(data.y), "n_unscorable_dropped": int((data.bucket < 0).sum()),
                  "buckets": buckets, "seconds": round(time.perf_counter() - started, 2)}
        _save(folder, model, data, report, arrays, window=window, context=context, features=features,
              use_tissue=use_tissue, Cs=Cs, seeds=seeds, n_train=n_train)
    return report
