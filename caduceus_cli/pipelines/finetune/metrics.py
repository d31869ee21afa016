"""Metrics over a whole split, computed with scikit-learn from every prediction at once.

The official pipeline averaged MCC and F1 over batches, which misstates them (kuleshov-group/caduceus
#38, #48); here a split's predictions are gathered first (from every process under torchrun) and
each metric is computed once. A metric that is undefined on the split (AUROC with one class
present) is None.

Classification: accuracy, MCC, F1 (of class 1 when binary, macro over classes otherwise), AUROC and
AUPRC (average precision) from the predicted probabilities (macro one-vs-rest for multi-class).
Regression: MSE, Pearson and Spearman correlation, R2.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .recipe import LOWER_IS_BETTER, metric_names


def _defined(fn, *args, **kwargs) -> float | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(*args, **kwargs))
    except ValueError:  # e.g. one class present: AUROC undefined
        return None
    return value if math.isfinite(value) else None


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """y: (N,) class indexes; probs: (N, K) class probabilities."""
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                                 roc_auc_score)

    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(1)
    out = {"accuracy": _defined(accuracy_score, y, pred), "mcc": _defined(matthews_corrcoef, y, pred)}
    if k == 2:
        out["f1"] = _defined(f1_score, y, pred, pos_label=1, average="binary", zero_division=0)
        present = len(np.unique(y)) == 2
        out["auroc"] = _defined(roc_auc_score, y, probs[:, 1]) if present else None
        out["auprc"] = _defined(average_precision_score, y, probs[:, 1]) if present else None
        return out
    out["f1"] = _defined(f1_score, y, pred, labels=np.arange(k), average="macro", zero_division=0)
    out["auroc"] = _defined(roc_auc_score, y, probs, multi_class="ovr", average="macro", labels=np.arange(k))
    onehot = (y[:, None] == np.arange(k)[None, :]).astype(int)
    out["auprc"] = _defined(average_precision_score, onehot, probs, average="macro")
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_squared_error, r2_score

    constant = np.ptp(y) == 0 or np.ptp(pred) == 0
    return {"mse": _defined(mean_squared_error, y, pred),
            "pearson": None if constant else _defined(lambda a, b: pearsonr(a, b)[0], y, pred),
            "spearman": None if constant else _defined(lambda a, b: spearmanr(a, b)[0], y, pred),
            "r2": _defined(r2_score, y, pred) if len(y) > 1 else None}


def split_metrics(task: str, y: np.ndarray, outputs: np.ndarray) -> dict[str, float | None]:
    """Metrics of a split from the model's outputs: probabilities (N, K) or values (N,)."""
    if task == "regression":
        return regression_metrics(y, outputs.reshape(-1))
    return classification_metrics(y, outputs)


def is_better(metric: str, value: float | None, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` (None never wins; the first value always does)."""
    if value is None:
        return False
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def check_metric(task: str, metric: str) -> str:
    from ...errors import CaduceusError

    names = metric_names(task)
    if metric not in names and metric != "loss":
        raise CaduceusError(f"--select-metric {metric!r} is not a {task} metric ({', '.join(names)}, loss)")
    return metric


def outputs_from_logits(task: str, logits: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Class probabilities (N, K) (softmax in float64) or regression values (N,) (``logits * std + mean``)."""
    if task == "regression":
        return logits[:, 0].astype(np.float64) * std + mean
    z = logits.astype(np.float64)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
