"""The evaluation protocol: which runs to make (seeds, folds, validation splits) and their summary.

- ``seeds=N``: runs with seeds 1..N. Without a validation file each seed draws its own stratified
  ``valid_fraction`` validation split from TRAIN; with one, every seed uses it.
- ``folds=K`` (no test file): stratified K-fold cross-validation of TRAIN; fold k's held-out part
  is that run's test set, and its validation split comes from the other K-1 parts as above. With
  ``seeds`` too, each seed repeats the whole cross-validation with its own fold assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CaduceusError
from .data import kfold_splits, stratified_split
from .recipe import check_options


@dataclass
class RunPlan:
    """One run: its seed, fold (None without CV) and indexes into TRAIN for each part it draws
    from TRAIN (``valid``/``test`` None when that part is a file of its own, or absent)."""

    seed: int
    fold: int | None
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray | None

    @property
    def key(self) -> str:
        return f"seed {self.seed}" + (f", fold {self.fold}" if self.fold is not None else "")


def check_protocol(*, seeds: int, folds: int | None, valid_fraction: float | None, has_valid: bool,
                   has_test: bool) -> None:
    check_options(seeds=seeds, folds=folds, valid_fraction=None if has_valid else valid_fraction)
    if folds is not None and has_test:
        raise CaduceusError("--folds cross-validates in place of a test set: give --test or --folds, not both")


def plan_runs(n: int, strata: np.ndarray | None, *, seeds: int = 1, folds: int | None = None,
              has_valid: bool = False, valid_fraction: float | None = 0.1) -> list[RunPlan]:
    """Every run of the protocol, in order (seed-major, then fold)."""
    plans = []
    everything = np.arange(n)
    for seed in range(1, seeds + 1):
        parts = kfold_splits(n, strata, folds, seed) if folds else [(everything, None)]
        for fold, (train, held_out) in enumerate(parts):
            valid = None
            if not has_valid and valid_fraction is not None:
                sub = None if strata is None else strata[train]
                kept, chosen = stratified_split(len(train), sub, valid_fraction, [seed, fold])
                train, valid = train[kept], train[chosen]
                if not len(valid) or not len(train):
                    raise CaduceusError(f"--valid-fraction {valid_fraction} leaves an empty training or validation "
                                        f"split of {n} records; give --valid FILE or more data")
            plans.append(RunPlan(seed, fold if folds else None, train, valid, held_out))
    return plans


def summarize(runs: list[dict], part: str, names) -> dict | None:
    """{metric: {mean, min, max}} of ``part`` ('valid' or 'test') over the runs that have it."""
    out = {}
    for name in names:
        values = [r[part][name] for r in runs if r.get(part) and r[part].get(name) is not None]
        if values:
            out[name] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
                         "runs": len(values)}
    return out or None
