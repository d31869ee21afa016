"""`--model RUN`: a pretraining run folder stands for its final model, RUN/final (and says so)."""

from __future__ import annotations

import json
import shutil
import subprocess

from .conftest import console_command, console_env


def test_a_finished_run_folder_loads_its_final_model(small_ps_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    shutil.copytree(small_ps_dir, run / "final")
    fasta = tmp_path / "one.fa"
    fasta.write_text(">a\nACGTACGTTTGACA\n")
    result = subprocess.run(console_command("embed", fasta, "-m", run, "-o", tmp_path / "e.parquet", "-q"),
                            capture_output=True, text=True, env=console_env({"CADUCEUS_VERBOSE": "1"}))
    assert result.returncode == 0, result.stderr
    assert f"caduceus: info: {run} is a pretraining run folder: loading its final model {run / 'final'}" \
        in result.stderr.splitlines()
    info = subprocess.run(console_command("models", "info", run, "--json"), capture_output=True, text=True,
                          env=console_env())
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model"] == str((run / "final").resolve())

    from caduceus_cli import load_model

    assert load_model(run).source["folder"] == str(run / "final")
