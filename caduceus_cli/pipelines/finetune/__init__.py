"""Fine-tuning, probing and prediction: adapt a Caduceus model to a labeled task and apply it.

Python API (the commands `caduceus finetune classify`, `caduceus finetune probe` and
`caduceus predict` call exactly these; heavy modules load on first use)::

    from caduceus_cli.pipelines.finetune import finetune_classifier, fit_probe, predict

    report = finetune_classifier("train.csv", "clf/", test="test.csv", seeds=10)
    report = fit_probe("train.csv", "probe/", test="test.csv")
    result = predict("clf/", "new.fa", "predictions.tsv")   # result.rows: one dict per input

Contract (the benchmark suite codes against it):

- ``train``/``valid``/``test``: a path, read with
  :func:`caduceus_cli.genome.labeled.read_labeled_sequences` (CSV/TSV, FASTA ``>name|label``, BED
  + ``fasta=``; detected by content), or a :class:`~caduceus_cli.genome.labeled.LabeledSequences`.
- ``finetune_classifier(train, output_dir=None, *, model="bundled", valid=None, valid_fraction=0.1,
  test=None, fasta=None, task="classification", seeds=1, folds=None, epochs=10, lr=1e-3,
  batch_size=128, weight_decay=0.1, pool="mean", rc_aug=False, freeze_backbone=False, device=None,
  max_length=None, max_time=None, resume=None, progress=None, **kw) -> dict``
- ``fit_probe(train, output_dir=None, *, model="bundled", valid=None, test=None, fasta=None,
  task="classification", pool="mean", folds=None, seed=1, device=None, batch_size=None, cache=None,
  progress=None, **kw) -> dict``
- ``predict(model_dir, input, output=None, *, fasta=None, device=None, batch_size=None,
  progress=None, attribute=None, plot=None, plot_top=None, **kw)`` -> a
  :class:`~caduceus_cli.pipelines.finetune.predict.PredictResult` whose ``.rows`` hold one dict per
  input record, in input order; with ``attribute="ism"|"saliency"`` one dict per input base
  (``attribute.py``), and ``.logos`` the PNGs ``plot`` drew.
- The report (returned, and written as ``report.json`` when ``output_dir`` is given)::

    {"task": "classification"|"regression", "protocol": "probe"|"finetune", "status": "finished"|"stopped",
     "metric_names": [...], "label_names": [...] | None,
     "runs": [{"seed": s, "fold": k | None, "valid": {metric: value} | None, "test": {metric: value} | None,
               "best_epoch": e | None, "seconds": t, ...}],
     "summary": {"valid": {...}, "test" (or "cv" with folds): {metric: {"mean": m, "min": a, "max": b, "runs": n}}},
     "data": {"train": sha256, "valid": sha256 | None, "test": sha256 | None},
     "recipe": {...}, "provenance": {...}, "splits": {...}, "saved_run": "seed 1" ...}

  Metric names: accuracy, mcc, f1, auroc, auprc (classification; f1 of class 1 when binary, macro
  otherwise; AUROC/AUPRC macro one-vs-rest for multi-class) and mse, pearson, spearman, r2
  (regression), each computed once over a whole split; an undefined metric is None. ``valid`` of a
  probe without a validation split holds the cross-validated (out-of-fold) metrics on TRAIN.
- ``folds=K`` (no test set): stratified K-fold CV; each fold's held-out part is its "test". With
  ``folds`` and ``seeds`` both given, each seed repeats the whole CV with its own fold assignment.
  ``seeds=N``: seeds 1..N, each with its own stratified ``valid_fraction`` validation split of
  TRAIN when no ``valid`` is given. The best epoch of every run is chosen on validation; the folder
  holds the run with the best validation metric.

Modules: data (splits, labels, training batches), train (one run), classify (the fine-tuning job),
probe, predict, metrics, protocol (seeds and folds), report (folders, reports), resume (the state
of a stopped job), recipe (the paper's defaults); the model runs through ``pipelines/inference.py``.
"""

from __future__ import annotations

from ...lazy import lazy_getattr

_LAZY = {"finetune_classifier": "classify", "fit_probe": "probe", "predict": "predict"}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
