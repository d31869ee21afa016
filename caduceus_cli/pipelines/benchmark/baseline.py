"""The k-mer baseline: what a model adds over sequence composition.

Features: the frequencies of every k-mer for k = 1..6 (5,460 columns; k-mers with N are skipped;
each k is normalised by the number of k-mers counted in the sequence). Classifier: scikit-learn's
logistic regression on the standardised features, its C chosen by stratified 3-fold CV (log-loss)
on the training split from a fixed grid. Deterministic for a seed: the folds are seeded and lbfgs
has no randomness.
"""

from __future__ import annotations

import numpy as np

from .metrics import all_metrics

K_MAX = 6
C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[ord(chr(_b).lower())] = _i

RECIPE = {"features": f"k-mer frequencies, k = 1..{K_MAX} (N skipped)", "classifier":
          "StandardScaler + LogisticRegression (lbfgs), C by stratified 3-fold CV (log-loss) on train",
          "C_grid": list(C_GRID)}


def kmer_features(sequences: list[str], k_max: int = K_MAX):
    """(n, sum 4^k) sparse CSR matrix of k-mer frequencies, k = 1..k_max."""
    from scipy import sparse

    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    codes = _CODE[np.frombuffer("".join(sequences).encode("ascii", "replace"), dtype=np.uint8)]
    row_of = np.repeat(np.arange(len(sequences)), lengths)
    offset_in_row = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    blocks, column = [], 0
    for k in range(1, k_max + 1):
        n = len(codes) - k + 1
        if n <= 0:
            blocks.append(sparse.csr_matrix((len(sequences), 4 ** k)))
            column += 4 ** k
            continue
        index = np.zeros(n, dtype=np.int64)
        valid = np.ones(n, dtype=bool)
        for j in range(k):
            part = codes[j:j + n]
            valid &= part < 4
            index = index * 4 + np.minimum(part, 3)
        valid &= offset_in_row[:n] + k <= lengths[row_of[:n]]  # the k-mer stays inside its sequence
        rows, cols = row_of[:n][valid], index[valid]
        counts = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                   shape=(len(sequences), 4 ** k))
        counts.sum_duplicates()
        totals = np.asarray(counts.sum(1)).ravel()
        blocks.append(sparse.diags(1.0 / np.maximum(totals, 1.0)).dot(counts).astype(np.float32))
        column += 4 ** k
    return sparse.hstack(blocks, format="csr")


def _fit(X, y: np.ndarray, seed: int) -> tuple:
    """(model, C): standardise, choose C by stratified 3-fold CV (mean log-loss), refit on all of ``X``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(C: float):
        return make_pipeline(StandardScaler(with_mean=False), LogisticRegression(C=C, max_iter=2000))

    from threadpoolctl import threadpool_limits

    labels = np.unique(y)
    n_folds = min(3, int(np.bincount(y).min()))
    losses = {}
    # lbfgs steps are small vector operations: BLAS threads only add overhead (3x slower measured)
    with threadpool_limits(limits=1, user_api="blas"):
        if n_folds >= 2:
            folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
            for C in C_GRID:
                losses[C] = np.mean([log_loss(y[te], model(C).fit(X[tr], y[tr]).predict_proba(X[te]), labels=labels)
                                     for tr, te in folds])
        best = min(losses, key=losses.get) if losses else 1.0
        return model(best).fit(X, y), best


def fit_and_score(train_sequences: list[str], y_train: np.ndarray, test_sequences: list[str], y_test: np.ndarray,
                  n_classes: int, seed: int = 1) -> dict:
    """Fit on the training split, score the test split: metrics over the whole test split."""
    X_train, X_test = kmer_features(train_sequences), kmer_features(test_sequences)
    model, C = _fit(X_train, np.asarray(y_train), seed)
    scores = _class_scores(model, X_test, n_classes)
    return {"test": all_metrics(y_test, scores.argmax(1), scores, n_classes), "C": C}


def _class_scores(model, X, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities, with a zero column for classes absent from training."""
    proba = model.predict_proba(X)
    out = np.zeros((X.shape[0], n_classes))
    out[:, model[-1].classes_] = proba
    return out


def cross_validate(sequences: list[str], y: np.ndarray, n_classes: int, folds: list[tuple[np.ndarray, np.ndarray]],
                   seed: int = 1) -> list[dict]:
    """Fit and score on each (train index, test index) fold; the caller passes the very folds the
    model's protocol used, so both see the same splits."""
    X, y = kmer_features(sequences), np.asarray(y)
    results = []
    for train_index, test_index in folds:
        model, C = _fit(X[train_index], y[train_index], seed)
        scores = _class_scores(model, X[test_index], n_classes)
        results.append({"test": all_metrics(y[test_index], scores.argmax(1), scores, n_classes),
                        "C": C})
    return results
