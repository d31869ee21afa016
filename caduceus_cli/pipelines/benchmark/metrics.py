"""Classification metrics over a whole split, as the papers define them.

Computed from all predictions of a split at once: never averaged over batches (the official
Caduceus code averaged MCC and F1 over batches, kuleshov-group/caduceus#38 and #48, which misstates
test figures). Each function takes integer class indices ``y_true`` and ``y_pred`` (or ``scores``:
``(n,)`` for the positive class of a binary task, ``(n, k)`` class scores otherwise).
"""

from __future__ import annotations

import numpy as np


def _confusion(y_true, y_pred) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the label (top-1 accuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def mcc(y_true, y_pred) -> float:
    """Matthews correlation coefficient; the multi-class form (Gorodkin's R_K) for more than two
    classes. 0 when every prediction (or every label) is one class, as scikit-learn defines it."""
    c = _confusion(y_true, y_pred)
    n = c.sum()
    correct = np.trace(c)
    predicted, actual = c.sum(0), c.sum(1)
    cov_ytyp = correct * n - predicted @ actual
    cov_ypyp = n * n - predicted @ predicted
    cov_ytyt = n * n - actual @ actual
    if cov_ypyp == 0 or cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def f1(y_true, y_pred, n_classes: int = 2) -> float:
    """F1 of class 1 for a binary task; the unweighted mean of per-class F1 (macro) otherwise.
    A class that is never predicted nor present scores 0, as scikit-learn's zero_division=0."""
    c = _confusion(y_true, y_pred)
    k = max(n_classes, len(c))
    if len(c) < k:
        c = np.pad(c, ((0, k - len(c)), (0, k - len(c))))
    tp = np.diag(c)
    denominator = c.sum(0) + c.sum(1)
    per_class = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(per_class[1] if k == 2 else per_class.mean())


def _binary_auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), with tied scores counted as half (the ROC trapezoid)."""
    positives = y_true == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # average rank (1-based) of every run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(score)]
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true, scores) -> float:
    """Area under the ROC curve: binary from the positive-class score; for more classes the
    unweighted mean of one-vs-rest AUROCs (scikit-learn's ``multi_class='ovr', average='macro'``)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return _binary_auroc(y_true, scores)
    if scores.shape[1] == 2:
        return _binary_auroc(y_true, scores[:, 1])
    return float(np.mean([_binary_auroc((y_true == k).astype(np.int64), scores[:, k]) for k in range(scores.shape[1])]))


LABEL_METRICS = {"accuracy": accuracy, "mcc": mcc, "f1": f1}
SCORE_METRICS = {"auroc": auroc}
METRIC_NAMES = ("accuracy", "mcc", "f1", "auroc")


def all_metrics(y_true, y_pred, scores, n_classes: int) -> dict[str, float]:
    """Every metric the reports carry, over one whole split."""
    return {"accuracy": accuracy(y_true, y_pred), "mcc": mcc(y_true, y_pred),
            "f1": f1(y_true, y_pred, n_classes), "auroc": auroc(y_true, scores)}
