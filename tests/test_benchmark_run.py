"""run_benchmark end to end on real task data (subsampled) with a tiny model: the report folder,
--resume, interrupted tasks, the baseline's folds, the CLI and the speed suite."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.pipelines.benchmark import baseline, run_benchmark
from caduceus_cli.pipelines.benchmark.registry import SUITES
from caduceus_cli.pipelines.benchmark.run import cv_folds

from .conftest import need_data


@pytest.fixture(scope="module")
def gue_report(tmp_path_factory, small_ps_dir):
    """A GUE task (train/dev/test), probe + k-mer baseline, 40 sequences per split."""
    data = need_data("tasks", "gue")
    out = tmp_path_factory.mktemp("gue") / "report"
    rows = run_benchmark("gue", out, model=str(small_ps_dir), data=data, tasks="prom_core_tata", baseline="kmer",
                         max_sequences=40, device="cpu")
    return out, rows, data


def test_rows_carry_metrics_provenance_and_data_digests(gue_report):
    out, rows, _ = gue_report
    assert [(r["task"], r["protocol"]) for r in rows] == [("prom_core_tata", "probe"), ("prom_core_tata", "kmer")]
    for row in rows:
        assert row["suite"] == "gue" and row["metric"] == "mcc" and row["value"] == row["metrics"]["mcc"]
        assert set(row["metrics"]) >= {"accuracy", "mcc", "f1", "auroc"} and -1 <= row["value"] <= 1
        assert set(row["data"]) == {"train", "valid", "test"} and all(len(d) == 64 for d in row["data"].values())
        assert row["n"] == {"train": 40, "valid": 40, "test": 40} and row["evaluation"].startswith("test split")
        assert row["tool_version"] and row["wall_seconds"] >= 0 and row["task_wall_seconds"] >= row["wall_seconds"]
        assert any("40 of" in note for note in row["notes"])
    probe = rows[0]
    assert len(probe["model_sha256"]) == 64 and probe["recipe"]["protocol"].startswith("frozen embeddings")
    assert rows[1]["model"] == "kmer-logreg" and rows[1]["data"] == probe["data"]  # the same splits
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == json.loads(json.dumps(rows))


def test_summary_puts_ours_beside_the_published_figures(gue_report):
    out, rows, _ = gue_report
    summary = (out / "summary.md").read_text()
    assert "| prom_core_tata | MCC | test split (valid: dev split) |" in summary
    auroc = next(line for line in summary.splitlines() if line.startswith("| prom_core_tata | AUROC"))
    assert "0.810 [1]" in auroc and f"{rows[0]['metrics']['auroc']:.3f}" in auroc
    assert "[1] Benchmarking DNA foundation models" in summary and "k-mer" in summary
    assert "at most 40 sequences per split" in summary
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_finished_tasks_and_a_second_run_needs_it(gue_report, small_ps_dir):
    out, rows, data = gue_report
    before = (out / "results.jsonl").read_bytes()
    again = run_benchmark("gue", out, model=str(small_ps_dir), data=data, tasks="prom_core_tata", baseline="kmer",
                          max_sequences=40, device="cpu", resume=True)
    assert again == json.loads(json.dumps(rows)) and (out / "results.jsonl").read_bytes() == before
    with pytest.raises(CaduceusError, match="already exists; add --resume"):
        run_benchmark("gue", out, model=str(small_ps_dir), data=data, tasks="mouse_2", device="cpu")


def test_an_interrupted_task_leaves_no_rows_and_resume_finishes(tmp_path, small_ps_dir, monkeypatch):
    data = need_data("tasks", "nt_yeast_histone")
    out = tmp_path / "report"
    options = dict(model=str(small_ps_dir), data=data, tasks="H3,H3K4me1", baseline="kmer", max_sequences=24,
                   folds=2, device="cpu")
    calls = []
    real = baseline.cross_validate

    def interrupted_on_the_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(baseline, "cross_validate", interrupted_on_the_second_task)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("nt-suite", out, **options)
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in first} == {"H3"} and {r["protocol"] for r in first} == {"probe", "kmer"}
    assert first[0]["evaluation"] == "2-fold CV on the test split" and len(first[0]["folds"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl", "summary.md", "summary.png"]
    monkeypatch.setattr(baseline, "cross_validate", real)
    rows = run_benchmark("nt-suite", out, resume=True, **options)
    assert [r["task"] for r in rows] == ["H3", "H3", "H3K4me1", "H3K4me1"] and rows[:2] == first
    mcc = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| H3K4me1 | MCC"))
    assert "(2 folds)" in mcc  # one seed of CV: the spread is over the folds


def test_baseline_folds_are_the_engines(tmp_path):
    from caduceus_cli.pipelines.finetune.data import kfold_splits

    labels = np.random.default_rng(0).integers(0, 3, 200)
    for seed in (1, 2):
        ours = cv_folds(labels, 5, seed)
        theirs = kfold_splits(len(labels), labels, 5, seed)
        assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(ours, theirs))
    for suite in SUITES.values():  # class indices follow the registry; the engine sorts labels
        for task in suite.tasks.values():
            assert list(task.classes) == sorted(task.classes), task.name


def test_cli_writes_the_report(tmp_path, small_ps_dir):
    data = need_data("tasks", "nt_yeast_histone")
    result = subprocess.run([sys.executable, "-m", "caduceus_cli", "benchmark", "nt-suite", "--data", str(data),
                             "--tasks", "H3K36me3", "--max-sequences", "20", "--folds", "2", "--model",
                             str(small_ps_dir), "--device", "cpu", "-o", str(tmp_path / "r")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert [r["protocol"] for r in rows] == ["probe"] and rows[0]["evaluation"] == "2-fold CV on the test split"
    assert rows[0]["command"].startswith("caduceus benchmark nt-suite") and rows[0]["device"] == "cpu"
    assert "H3K36me3" in (tmp_path / "r" / "summary.md").read_text()


def test_speed_suite_rows(tmp_path):
    rows = run_benchmark("speed", tmp_path / "speed", model="random:ps:8x1", tasks="forward,train,embed",
                         lengths="32", device="cpu", repeats=1, regions=4, note=lambda message: None)
    assert [r["task"] for r in rows] == ["forward", "train", "embed"]
    for row in rows:
        assert row["value"] > 0 and row["peak_memory_gib"] > 0 and row["device"] == "cpu"
        assert row["unit"] == ("regions/s" if row["task"] == "embed" else "tokens/s")
    summary = (tmp_path / "speed" / "summary.md").read_text()
    assert "| forward | random:ps:8x1 | 32 |" in summary and "H200" in summary


def test_official_figures_are_shown_for_the_published_sizes():
    from caduceus_cli.pipelines.benchmark.speed import _official, build_model

    model = build_model("random:ph:256x16", "cpu")
    assert _official("forward", model, 131072)["value"] == 2.14e6
    assert _official("forward", model, 4096) is None and _official("embed", model, 1536) is None


def test_options_of_another_kind_of_suite_are_refused(tmp_path):
    with pytest.raises(CaduceusError, match="--window does not apply to gue"):
        run_benchmark("gue", tmp_path / "r", window=1536)
    with pytest.raises(CaduceusError, match="--lengths does not apply to vep-eqtl"):
        run_benchmark("vep-eqtl", tmp_path / "r", lengths="1024")
    with pytest.raises(CaduceusError, match="--baseline kmer applies to sequence-classification suites"):
        run_benchmark("speed", tmp_path / "r", baseline="kmer")
    assert not (tmp_path / "r").exists()


def test_speed_rows_beside_an_official_figure_run_its_batch():
    """A row shown beside the official H200 figure runs that figure's batch (256 windows at 1,536 bp,
    2 at 131,072 bp, 256 for training at 1,024 bp); other rows fill the token budget; an explicit
    --tokens-per-batch always wins."""
    from types import SimpleNamespace

    from caduceus_cli.pipelines.benchmark.speed import row_batch

    def model(variant, d, n):
        return SimpleNamespace(config=SimpleNamespace(rcps=variant == "ps", d_model=d, n_layer=n))

    ps256, ph256, ps128 = model("ps", 256, 16), model("ph", 256, 16), model("ps", 128, 4)
    assert row_batch("forward", ps256, 1536, 262_144, None) == 256
    assert row_batch("forward", ph256, 131_072, 262_144, None) == 2
    assert row_batch("train", ps128, 1024, 262_144, None) == 256
    assert row_batch("forward", ps128, 1536, 262_144, None) == 170  # no official figure: the budget
    assert row_batch("forward", ps256, 1536, 1536 * 8, 1536 * 8) == 8
