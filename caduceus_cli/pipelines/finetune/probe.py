"""`fit_probe`: a linear probe on frozen embeddings, the fast protocol of the 2025 DNA-foundation-
model benchmarks (minutes on a laptop CPU).

Features: the pooled last hidden state of both strands (PS: its two strands; Ph: conjoined), each
strand read in its own frame, averaged; cached per model hash, sequences digest and feature
settings. Classifier: scikit-learn StandardScaler + LogisticRegression (lbfgs), C chosen by
stratified 5-fold CV on TRAIN (log loss); regression: StandardScaler + Ridge, alpha chosen the same
way (MSE). The fitted scaler and model are folded into one linear layer (logits = W f + b) and saved
as the head of a classifier folder, so the probe reloads without pickle and `predict` runs it like
any fine-tuned model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ...cache import cache_dir as cache_folder
from ...choices import DEFAULT_MODEL, check_pooling
from ...errors import CaduceusError
from ...io import atomic_file, refuse_overwriting_inputs
from ...progress import advise_on_cpu
from ...model.checkpoint import new_classifier, save_model
from ...model.loading import resolve_model
from ...runtime import torchrun
from . import recipe as R
from .data import LabelSpace, TokenSplit, load_split, tokenize_split
from ...model.precision import dtype_name, model_compute_dtype
from ..inference import embed_sequences
from .metrics import split_metrics
from .protocol import check_protocol, plan_runs
from .report import MetricsLog, build_report, check_new_output, output_folder, stamp_head, write_report

log = logging.getLogger("caduceus")
FEATURES_VERSION = 1


def default_cache_dir() -> Path:
    """``features/`` of the tool's cache (``caduceus_cli.cache``)."""
    return cache_folder("features")


def features_key(model, tokens: list[np.ndarray], settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"model": model.source.get("sha256"), "version": FEATURES_VERSION, **settings},
                                  sort_keys=True).encode())
    for t in tokens:
        h.update(t.tobytes())
        h.update(b"\n")
    return h.hexdigest()


def cached_features(model, split: TokenSplit, cache: Path | None, settings: dict, batch_size: int, runtime,
                    progress) -> tuple[np.ndarray, bool]:
    """Features of a split from the cache, or computed (and stored when ``cache``). ``settings``
    (pooling, center_width, max_length, precision) are part of the cache key."""
    path = None if cache is None else cache / f"{features_key(model, split.tokens, settings)}.npy"
    if path is not None and path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (len(split.tokens), model.config.d_model):
                if progress is not None:
                    progress(len(split.tokens))
                return feats, True
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache entry is recomputed and replaced
    feats = embed_sequences(model, split.tokens, pooling=settings["pooling"], center_width=settings["center_width"],
                           batch_size=batch_size, runtime=runtime, progress=progress)
    if path is not None and (runtime is None or runtime.is_main):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp, open(tmp, "wb") as f:
                np.save(f, feats)
        except (OSError, CaduceusError) as e:
            log.warning("feature cache %s not written (%s); continuing without it", path.parent, e)
    return feats, False


# -- scikit-learn fits ---------------------------------------------------------------------------
def _estimator(task: str, value: float, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "regression":
        return make_pipeline(StandardScaler(), Ridge(alpha=value))
    return make_pipeline(StandardScaler(), LogisticRegression(C=value, max_iter=R.PROBE_MAX_ITER, random_state=seed))


def _cv(task: str, y: np.ndarray, seed: int, folds: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "regression":
        return KFold(folds, shuffle=True, random_state=seed)
    return StratifiedKFold(min(folds, int(np.unique(y, return_counts=True)[1].min())), shuffle=True, random_state=seed)


def fit_linear(task: str, X: np.ndarray, y: np.ndarray, seed: int, oof: bool, grid=None,
               cv_folds: int = R.PROBE_CV_FOLDS) -> tuple[object, float, np.ndarray | None]:
    """(fitted pipeline, chosen C or alpha, out-of-fold outputs on X or None). ``grid``: the Cs
    (alphas for regression) tried, by default the recipe's."""
    from sklearn.model_selection import GridSearchCV, cross_val_predict

    if task == "classification" and np.unique(y, return_counts=True)[1].min() < 2:
        raise CaduceusError("a class has a single training record: the probe's cross-validation needs two per class")
    grid = grid or (R.PROBE_ALPHAS if task == "regression" else R.PROBE_CS)
    key = "ridge__alpha" if task == "regression" else "logisticregression__C"
    scoring = "neg_mean_squared_error" if task == "regression" else "neg_log_loss"
    cv = _cv(task, y, seed, cv_folds)
    search = GridSearchCV(_estimator(task, 1.0, seed), {key: list(grid)}, scoring=scoring, cv=cv, refit=True)
    search.fit(X, y)
    chosen = float(search.best_params_[key])
    held_out = None
    if oof:
        method = "predict" if task == "regression" else "predict_proba"
        held_out = cross_val_predict(_estimator(task, chosen, seed), X, y, cv=cv, method=method)
    return search.best_estimator_, chosen, held_out


def linear_head(task: str, pipeline, num_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted scaler + linear model as one layer on raw features: (weight (K, d), bias (K,))."""
    scaler, fitted = pipeline[0], pipeline[-1]
    coef = np.atleast_2d(fitted.coef_).astype(np.float64) / scaler.scale_
    bias = np.atleast_1d(fitted.intercept_).astype(np.float64) - coef @ scaler.mean_
    if task == "classification" and num_outputs == 2:  # binary: softmax([0, z]) is sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        bias = np.concatenate([[0.0], bias])
    return coef, bias


def pipeline_outputs(task: str, pipeline, X: np.ndarray) -> np.ndarray:
    return pipeline.predict(X) if task == "regression" else pipeline.predict_proba(X)


# -- the protocol --------------------------------------------------------------------------------
def fit_probe(train, output_dir=None, *, model=DEFAULT_MODEL, valid=None, test=None, fasta=None, task="classification",
              pool="mean", folds=None, seed=1, device=None, batch_size=None, cache=None, progress=None,
              sequence_column=None, label_column=None, center_width=1, max_length=None, backend="auto",
              revision=None, grid=None, cv_folds=R.PROBE_CV_FOLDS, dtype=None) -> dict:
    """Fit a linear probe on frozen features of ``model``; returns the report (also DIR/report.json).
    ``grid``: the Cs (ridge alphas for regression) tried by ``cv_folds``-fold CV on TRAIN; ``dtype``:
    the compute dtype of the feature passes (auto, fp32, bf16; None: auto)."""
    started = time.time()
    refuse_overwriting_inputs(output_dir, train, valid, test, fasta)
    R.check_options(folds=folds, seed=seed, batch_size=batch_size, center_width=center_width, max_length=max_length)
    check_new_output(output_dir)
    check_pooling(pool)
    check_protocol(seeds=1, folds=folds, valid_fraction=None, has_valid=valid is not None, has_test=test is not None)
    read = dict(fasta=fasta, task=task, sequence_column=sequence_column, label_column=label_column)
    splits = {"train": load_split(train, "train", **read), "valid": load_split(valid, "valid", **read),
              "test": load_split(test, "test", **read)}
    space = LabelSpace.from_train(splits["train"], task)
    tokens = {k: tokenize_split(v.sequences, space.encode(v, k), max_length) for k, v in splits.items() if v is not None}
    cache_dir = None if cache is False else Path(cache) if cache not in (None, True) else default_cache_dir()
    with torchrun(device) as runtime:
        backbone = resolve_model(model, device=runtime.device, backend=backend, revision=revision, dtype=dtype)
        advise_on_cpu(progress, runtime.device)
        settings = {"pooling": pool, "center_width": center_width, "max_length": max_length,
                    "precision": dtype_name(model_compute_dtype(backbone))}
        size = batch_size or R.PROBE_BATCH_SIZE.get(runtime.device.type, 64)
        if progress is not None and hasattr(progress, "set_total"):
            progress.set_total(sum(len(t.tokens) for t in tokens.values()))
        tick = time.time()
        feats, hits = {}, {}
        for key, split in tokens.items():
            feats[key], hits[key] = cached_features(backbone, split, cache_dir, settings, size, runtime,
                                                    progress if runtime.is_main else None)
        feature_seconds = time.time() - tick
        with output_folder(output_dir, enabled=runtime.is_main) as folder:
            search = {"grid": tuple(grid or (R.PROBE_ALPHAS if task == "regression" else R.PROBE_CS)),
                      "cv_folds": cv_folds}
            report = _fit_and_report(folder, splits, tokens, feats, space, backbone, folds=folds, seed=seed, pool=pool,
                                     center_width=center_width, max_length=max_length, search=search)
            report["features"] = {"seconds": round(feature_seconds, 2), "cached": hits, "batch_size": size,
                                  "cache": None if cache_dir is None else str(cache_dir), **settings}
            report["seconds"] = round(time.time() - started, 2)
            write_report(folder, report)
        runtime.barrier()
    return report


def _fit_and_report(folder, splits, tokens, feats, space: LabelSpace, backbone, *, folds, seed, pool, center_width,
                    max_length, search: dict) -> dict:
    task = space.task
    X, y = feats["train"], tokens["train"].y
    metrics_log = MetricsLog(folder)
    runs = []
    plans = plan_runs(len(y), space.stratify(y), seeds=1, folds=folds, has_valid=True, valid_fraction=None) \
        if folds else None
    for plan in plans or [None]:
        tick = time.time()
        train_idx = plan.train if plan else np.arange(len(y))
        pipeline, chosen, oof = fit_linear(task, X[train_idx], y[train_idx], seed, oof="valid" not in feats, **search)
        valid = (split_metrics(task, tokens["valid"].y, pipeline_outputs(task, pipeline, feats["valid"]))
                 if "valid" in feats else split_metrics(task, y[train_idx], oof))
        test_X, test_y = (X[plan.test], y[plan.test]) if plan else (feats.get("test"), tokens["test"].y if "test" in tokens else None)
        test_metrics = split_metrics(task, test_y, pipeline_outputs(task, pipeline, test_X)) if test_X is not None else None
        run = {"seed": seed, "fold": plan.fold if plan else None, "valid": valid, "test": test_metrics,
               "best_epoch": None, "seconds": round(time.time() - tick, 2), "train_records": int(len(train_idx)),
               "test_records": None if test_X is None else int(len(test_X)),
               "valid_source": "valid split" if "valid" in feats else "out-of-fold on train",
               ("alpha" if task == "regression" else "C"): chosen}
        runs.append(run)
        metrics_log.write(run)
    final = pipeline if plans is None else fit_linear(task, X, y, seed, oof=False, **search)[0]
    if folder is not None:
        _save_probe(folder, backbone, space, final, pool=pool, center_width=center_width, max_length=max_length,
                    data={k: v.digest() if v is not None else None for k, v in splits.items()})
    recipe = {"protocol": "frozen embeddings + linear model", "features": f"{pool} pooling of the last hidden "
              "state, both strands averaged", "model": "StandardScaler + " + ("Ridge" if task == "regression" else
              "LogisticRegression (lbfgs)"), ("alphas" if task == "regression" else "Cs"):
              list(search["grid"]), "cv_folds": search["cv_folds"],
              "scoring": "neg_mean_squared_error" if task == "regression" else "neg_log_loss", "seed": seed,
              "folds": folds, "pooling": pool, "center_width": center_width, "max_length": max_length}
    data = {k: v.digest() if v is not None else None for k, v in splits.items()}
    sizes = {k: {"source": v.source, "records": len(v), "truncated": tokens[k].truncated}
             for k, v in splits.items() if v is not None}
    return build_report(task=task, protocol="probe", label_names=space.names, runs=runs, folds=folds, data=data,
                        recipe=recipe, model=backbone, extra={"splits": sizes, "saved_run": "all of train"})


def _save_probe(folder: Path, backbone, space: LabelSpace, pipeline, *, pool: str, center_width: int,
                max_length: int | None, data: dict) -> None:
    weight, bias = linear_head(space.task, pipeline, space.num_outputs)
    model = new_classifier(backbone.config, task=space.task, label_names=space.names, conjoin_eval=True,
                           protocol="probe", pooling=pool, center_width=center_width, max_length=max_length)
    model.caduceus.load_state_dict({k: v.cpu() for k, v in backbone.caduceus.state_dict().items()})
    with torch.no_grad():
        model.score.weight.copy_(torch.from_numpy(weight))
        model.score.bias.copy_(torch.from_numpy(bias))
    stamp_head(model, backbone, data)
    save_model(model, folder)
