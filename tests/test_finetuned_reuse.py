"""A fine-tuned classifier or probe folder is a model too: `models info`, `embed -m` and `load_model`
take it, for both variants (PS, the default model's, and Ph), through the console script; and the
fine-tuning progress on the way never reads "0.0 steps/s"."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import console_command, console_env, need_data, save_tiny


def caduceus(*args, cwd):
    return subprocess.run(console_command(*args), cwd=cwd, capture_output=True, text=True,
                          env=console_env({"NUMBA_NUM_THREADS": "1", "CADUCEUS_PROGRESS_SECONDS": "0"}))


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    """24 records of GUE prom_core_all's training split (70 bp, both labels)."""
    import gzip

    with gzip.open(need_data("tasks", "gue", "prom_core_all", "train.csv.gz"), "rt") as f:
        header, *rows = [next(f) for _ in range(400)]
    ones = [r for r in rows if r.rstrip().endswith(",1")][:12]
    zeros = [r for r in rows if r.rstrip().endswith(",0")][:12]
    path = tmp_path_factory.mktemp("prom") / "train.csv"
    path.write_text(header + "".join(ones + zeros))
    return path


def _reuse(folder, variant, tmp_path):
    info = caduceus("models", "info", folder, "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["variant"].lower().endswith(variant)
    emb = tmp_path / f"{variant}.parquet"
    fasta = tmp_path / "two.fa"
    fasta.write_text(">a\nACGTACGTACGTTTGACA\n>b\nGGGCCCAATTACGT\n")
    embedded = caduceus("embed", fasta, "-m", folder, "-o", emb, "--device", "cpu", "-q", cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr
    assert emb.is_file()
    from caduceus_cli import load_model

    assert load_model(folder).config.rcps == (variant == "ps")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_a_classify_folder_is_reused_as_a_model(variant, train_csv, tmp_path):
    model = "bundled" if variant == "ps" else save_tiny(tmp_path / "ph", "ph", 2)
    trained = caduceus("finetune", "classify", train_csv, "-o", tmp_path / "clf", "-m", model, "--epochs", "1",
                       "--batch-size", "8", "--device", "cpu", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    steps = [ln for ln in trained.stderr.splitlines() if ln.startswith("caduceus: finetune: ") and " steps (" in ln]
    assert steps, trained.stderr
    assert not re.search(r"\b0\.\d+ steps/s", trained.stderr)  # below 1 step/s it reads "12.5 s/step"
    _reuse(tmp_path / "clf", variant, tmp_path)


@pytest.mark.slow
def test_a_probe_folder_of_a_ps_model_is_reused_as_a_model(train_csv, tmp_path):
    model = save_tiny(tmp_path / "ps", "ps", 1)
    probed = caduceus("finetune", "probe", train_csv, "-o", tmp_path / "probe", "-m", model, "--folds", "3", "--no-cache",
                      "--device", "cpu", "-q", cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    _reuse(tmp_path / "probe", "ps", tmp_path)
