"""`caduceus --version`, `models info`, `doctor`, and their error lines (in this process; the hub
tests run a process of their own because huggingface_hub reads its cache location at import)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from caduceus_cli.model.info import backend_description

from .conftest import GOLDEN


@pytest.fixture
def run(run_cli):
    def in_process(*args):
        code, out, err = run_cli(*args)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return in_process


def run_process(*args, env=None):
    return subprocess.run([sys.executable, "-m", "caduceus_cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("caduceus: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version(run):
    from caduceus_cli import __version__

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"caduceus-cli {__version__}"


def test_models_info_reports_variant_sizes_and_backend(run):
    result = run("models", "info", str(GOLDEN / "ps_fused" / "checkpoint"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["variant"] == "Caduceus-PS" and info["d_model"] == 32 and info["n_layer"] == 2
    assert info["hidden_size"] == 64 and info["rc_mode"].startswith("equivariant")
    assert info["backend"] == backend_description("auto", info["device"]) and len(info["sha256"]) == 64
    ph = json.loads(run("models", "info", str(GOLDEN / "ph_fused" / "checkpoint"), "--json").stdout)
    assert ph["variant"] == "Caduceus-Ph" and ph["rc_mode"].startswith("post-hoc")
    assert ph["parameters"] < info["parameters"] + 1000


def test_doctor_names_what_is_missing(run):
    result = run("doctor", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["torch"] == torch.__version__
    if not torch.cuda.is_available():
        assert report["backend"] == backend_description("auto", "cpu") and report["fixes"]
        assert report["backend"].startswith("numba" if report["kernels_usable"]["numba_scan"] else "PyTorch")


def test_missing_folder(run):
    assert_one_line_error(run("models", "info", "./no/such/model"), "./no/such/model", "no such model folder")


def test_config_without_required_fields(tmp_path, run):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "ps_fused" / "checkpoint", folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["d_model"]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run("models", "info", str(folder)), "config.json", "d_model")


def test_config_that_is_not_json(tmp_path, run):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "ps_fused" / "checkpoint", folder)
    (folder / "config.json").write_text('{"d_model": 32,\n oops}')
    assert_one_line_error(run("models", "info", str(folder)), "config.json", "line 2")


def test_state_dict_with_a_wrong_shape(tmp_path, run):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "ps_fused" / "checkpoint", folder)
    state = load_file(str(folder / "model.safetensors"))
    key = "caduceus.backbone.layers.0.mixer.submodule.mamba_fwd.x_proj.weight"
    state[key] = torch.zeros(3, 3)
    save_file(state, str(folder / "model.safetensors"))
    assert_one_line_error(run("models", "info", str(folder)), key, "(3, 3)", "wrong shape")


def test_state_dict_with_missing_and_unexpected_keys(tmp_path, run):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "ph_fused" / "checkpoint", folder)
    state = load_file(str(folder / "model.safetensors"))
    state["surprise.weight"] = state.pop("caduceus.backbone.norm_f.weight")
    save_file(state, str(folder / "model.safetensors"))
    assert_one_line_error(run("models", "info", str(folder)), "caduceus.backbone.norm_f.weight", "surprise.weight")


def test_hub_id_while_offline(tmp_path):
    result = run_process("models", "info", "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16",
                 env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert_one_line_error(result, "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16", "HF_HUB_OFFLINE")


def test_hub_id_from_local_cache_offline(tmp_path):
    """The real download path: a snapshot already in the HF cache loads with HF_HUB_OFFLINE=1."""
    repo = "someone/tiny-caduceus"
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snap = cache / "snapshots" / commit
    shutil.copytree(GOLDEN / "ph_fused" / "checkpoint", snap)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    result = run_process("models", "info", repo, "--json", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["model"] == repo and info["revision"] == commit and info["variant"] == "Caduceus-Ph"
