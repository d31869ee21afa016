"""The benchmark registry: suites, tasks, published figures with their sources, metrics equal to
scikit-learn's on whole splits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from caduceus_cli.errors import CaduceusError
from caduceus_cli.pipelines.benchmark import metrics
from caduceus_cli.pipelines.benchmark.registry import SOURCES, SUITES, get_suite, select_tasks


def random_split(n_classes: int, n: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    scores = rng.integers(1, 5, (n, n_classes)).astype(float)  # small integers: many tied scores
    scores[np.arange(n), y] += rng.integers(0, 3, n)  # better than chance
    scores /= scores.sum(1, keepdims=True)
    return y, scores.argmax(1), scores


@pytest.mark.parametrize("n_classes", [2, 3, 9])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_scikit_learn(n_classes, seed):
    y, pred, scores = random_split(n_classes, seed=seed)
    assert metrics.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert metrics.mcc(y, pred) == pytest.approx(skm.matthews_corrcoef(y, pred))
    average = "binary" if n_classes == 2 else "macro"
    assert metrics.f1(y, pred, n_classes) == pytest.approx(skm.f1_score(y, pred, average=average, zero_division=0))
    expected = skm.roc_auc_score(y, scores[:, 1]) if n_classes == 2 else \
        skm.roc_auc_score(y, scores, multi_class="ovr", average="macro")
    assert metrics.auroc(y, scores) == pytest.approx(expected)


def test_metric_edge_cases_match_scikit_learn():
    y = np.array([0, 0, 1, 1, 2])
    constant = np.zeros(5, dtype=int)
    assert metrics.mcc(y, constant) == skm.matthews_corrcoef(y, constant) == 0.0
    never_predicted = np.array([0, 0, 0, 1, 1])
    assert metrics.f1(y, never_predicted, 3) == pytest.approx(
        skm.f1_score(y, never_predicted, average="macro", zero_division=0))
    assert metrics.auroc(np.array([0, 1, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_suites_hold_the_papers_tasks():
    assert len(SUITES["nt-suite"].tasks) == 18 and len(SUITES["genomic-benchmarks"].tasks) == 8
    assert len(SUITES["gue"].tasks) == 28
    nt = SUITES["nt-suite"].tasks
    assert {nt[t].metric for t in ("H3", "H4ac", "enhancers", "enhancers_types")} == {"mcc"}
    assert {nt[t].metric for t in ("promoter_all", "promoter_tata", "splice_sites_acceptors", "splice_sites_donors")} == {"f1"}
    assert nt["splice_sites_all"].metric == "accuracy" and nt["splice_sites_all"].n_classes == 3
    assert {t.metric for t in SUITES["genomic-benchmarks"].tasks.values()} == {"accuracy"}
    assert {t.metric for t in SUITES["gue"].tasks.values()} == {"mcc"}
    assert (SUITES["nt-suite"].finetune_epochs, SUITES["nt-suite"].finetune_seeds) == (20, 10)
    assert (SUITES["genomic-benchmarks"].finetune_epochs, SUITES["genomic-benchmarks"].finetune_seeds) == (10, 5)


def test_every_published_figure_cites_a_known_source():
    for suite in SUITES.values():
        for task in suite.tasks.values():
            for fig in task.published:
                assert fig.source in SOURCES and 0 < fig.value <= 1
    h3 = {(p.model, p.metric): p.value for p in SUITES["nt-suite"].tasks["H3"].published}
    assert h3[("Caduceus-Ph", "mcc")] == 0.815 and h3[("Caduceus-Ph", "auroc")] == 0.929
    assert h3[("DNABERT-2", "mcc")] == 0.785


def test_unknown_suite_or_task_is_one_line():
    with pytest.raises(CaduceusError, match="unknown benchmark suite 'nt'.*nt-suite"):
        get_suite("nt")
    with pytest.raises(CaduceusError, match="H5 is not a task of nt-suite"):
        select_tasks(SUITES["nt-suite"], "H3,H5")
    assert [t.name for t in select_tasks(SUITES["gue"], "tf_1,tf_0,tf_1")] == ["tf_1", "tf_0"]


def test_the_benchmark_engine_never_imports_typer_or_rich():
    import subprocess
    import sys

    code = ("import sys, importlib, pkgutil, caduceus_cli as cc, caduceus_cli.pipelines.benchmark as b\n"
            "assert cc.run_benchmark is b.run_benchmark\n"
            "for m in pkgutil.iter_modules(b.__path__): importlib.import_module(b.__name__ + '.' + m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
