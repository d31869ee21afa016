"""Model loading is safe with hostile files: no unpickling beyond weights_only, config.json size and
values checked before anything is allocated, hub ids checked before any network call, nothing from a
model repository executed."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import CaduceusConfig, load_model
from caduceus_cli.model.checkpoint import WEIGHT_FILES, resolve_model_dir

from .conftest import REPO


class RunsCode:
    """Unpickling this calls exec(): what a hostile pytorch_model.bin carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def model_folder(ps_dir: Path, tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(ps_dir / "config.json", folder / "config.json")
    return folder


@pytest.mark.parametrize("how", ["torch zip", "torch legacy", "plain pickle"])
def test_pickled_weights_that_run_code_are_refused_and_never_run(ps_dir, tmp_path, how):
    folder = model_folder(ps_dir, tmp_path)
    marker = tmp_path / "pwned"
    payload = {"caduceus.backbone.norm_f.weight": RunsCode(marker)}
    if how == "plain pickle":
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, folder / "pytorch_model.bin", _use_new_zipfile_serialization=how == "torch zip")
    with pytest.raises(CaduceusError, match=r"pytorch_model\.bin: cannot be read as a weights file"):
        load_model(folder)
    assert not marker.exists()


def write_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, key = dotted.split("__")
        for parent in parents:
            node = node[parent]
        node[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json"


@pytest.mark.parametrize("field, value, message", [
    ("d_model", -1, "d_model must be an integer from 1 to 16384, got -1"),
    ("d_model", 10**9, "d_model must be an integer from 1 to 16384"),
    ("d_model", True, "d_model must be an integer"),
    ("n_layer", 100_000, "n_layer must be an integer from 1 to 512"),
    ("vocab_size", 2**40, "vocab_size must be an integer from 1 to 65536"),
    ("pad_vocab_size_multiple", 0, "pad_vocab_size_multiple must be an integer from 1"),
    ("ssm_cfg__d_state", 10**6, "ssm_cfg.d_state must be an integer from 1 to 1024"),
    ("ssm_cfg__expand", float("nan"), "ssm_cfg.expand must be a number from 1 to 16, got nan"),
    ("ssm_cfg__expand", float("inf"), "ssm_cfg.expand must be a number from 1 to 16, got inf"),
    ("ssm_cfg__dt_rank", -3, "ssm_cfg.dt_rank must be 'auto' or an integer"),
    ("ssm_cfg__dt_min", 0, "ssm_cfg.dt_min must be a number above 0 and at most 10, got 0"),
    ("ssm_cfg__dt_init_floor", 10**30, "ssm_cfg.dt_init_floor must be a number from 0 to 10"),
    ("ssm_cfg__dt_scale", None, "ssm_cfg.dt_scale must be a number above 0"),
    ("ssm_cfg__dt_init", "zeros", "ssm_cfg.dt_init must be one of random, constant"),
    ("ssm_cfg", [1, 2], "ssm_cfg must be a JSON object, got list"),
    ("norm_epsilon", -1e-5, "norm_epsilon must be a number between 0 and 1"),
    ("norm_epsilon", 10**400, "norm_epsilon must be a number between 0 and 1"),
    ("rcps", "true", "rcps must be true or false, got 'true'"),
    ("pad_token_id", 99, "pad_token_id must be a token id below 16"),
    ("complement_map", {"7": 99}, "complement_map entry 7->99 is outside the vocabulary of 16"),
    ("complement_map", {"x": 1}, "complement_map entry 'x': 1 must map a token id to a token id"),
    ("complement_map", {"1": 1.5}, "complement_map entry '1': 1.5 must map"),
    ("complement_map", [[7, 10]], "complement_map must be a JSON object, got list"),
    ("initializer_cfg__n_residuals_per_layer", 0, "initializer_cfg.n_residuals_per_layer must be an integer"),
])
def test_out_of_range_config_values_are_refused_in_one_line(ps_dir, tmp_path, field, value, message):
    folder = model_folder(ps_dir, tmp_path)
    path = write_config(folder, **{field: value})
    with pytest.raises(CaduceusError) as error:
        CaduceusConfig.from_json(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_config_asking_for_a_huge_model_is_refused_before_building_it(ps_dir, tmp_path, monkeypatch):
    # Within every range, but 8 layers of this size would need about 1.6 TB.
    from caduceus_cli.model import checkpoint

    def never(*args, **kwargs):
        raise AssertionError("a model was built before its size was compared with the weights")

    monkeypatch.setattr(checkpoint, "CaduceusForMaskedLM", never)
    folder = model_folder(ps_dir, tmp_path)
    write_config(folder, d_model=16384, n_layer=8, ssm_cfg__expand=16, ssm_cfg__d_state=1024)
    (folder / "model.safetensors").symlink_to(ps_dir / "model.safetensors")
    with pytest.raises(CaduceusError, match=r"model\.safetensors: config\.json describes a model of "
                                            r"[\d,]+ values but the weights hold [\d,]+: they do not belong together"):
        load_model(folder)


@pytest.mark.parametrize("rcps, bidirectional, tie, rms_norm, bias, expand", [
    (True, True, True, True, False, 2), (False, True, False, False, True, 1.5), (True, False, True, True, True, 3),
    (False, False, False, True, False, 2),
])
def test_model_size_is_known_before_building(rcps, bidirectional, tie, rms_norm, bias, expand):
    from caduceus_cli.model import CaduceusForMaskedLM
    from caduceus_cli.model.checkpoint import model_numel

    config = CaduceusConfig(d_model=24, n_layer=2, vocab_size=12, rcps=rcps, bidirectional=bidirectional,
                            bidirectional_weight_tie=tie, rms_norm=rms_norm,
                            ssm_cfg={"bias": bias, "conv_bias": not bias, "expand": expand, "d_state": 5, "dt_rank": 3})
    model = CaduceusForMaskedLM(config)
    built = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert model_numel(config) == built


def test_oversized_and_malformed_config_json_is_refused(ps_dir, tmp_path):
    folder = model_folder(ps_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["padding"] = "x" * (1 << 20)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CaduceusError, match="larger than 1 MB: not a model config.json"):
        CaduceusConfig.from_json(folder / "config.json")
    for text, message in [("[" * 100_000, "not a usable JSON file"), ('{"d_model": ' + "9" * 5000 + "}",
                          "not a usable JSON file"), ("\udcff", "not UTF-8"), ("{", "line 1: not valid JSON")]:
        (folder / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(CaduceusError, match=message):
            CaduceusConfig.from_json(folder / "config.json")


def test_published_config_layout_is_still_accepted():
    """The golden checkpoints carry the official config.json (transformers' extra keys, nulls)."""
    for case in ("ps_fused", "ph_fused", "ps_unfused"):
        config = CaduceusConfig.from_json(REPO / "tests" / "data" / "golden" / case / "checkpoint" / "config.json")
        assert config.d_model == 32 and config.extra["transformers_version"]


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"network call for {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.mark.parametrize("name", [
    "owner/..", "../owner", "https://huggingface.co/owner/name", "hf.co/owner/name", "owner/name/extra",
    "owner--x/name", "own er/name", "owner/name\n", "owner/" + "x" * 97, "-owner/name", "owner/name.",
    "/no/such/owner/name",
    "owner/é",
])
def test_invalid_hub_ids_are_refused_before_any_network_call(name, no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaduceusError, match="no such model folder, and not a Hugging Face hub id"):
        resolve_model_dir(name)


@pytest.mark.parametrize("revision", ["../../etc", "main\n", "a b", "/abs", "refs//x", "x" * 300, "-rf"])
def test_invalid_revisions_are_refused_before_any_network_call(revision, no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaduceusError, match="not a branch, tag or commit"):
        resolve_model_dir("kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16", revision)


def test_hub_downloads_fetch_only_config_and_weights(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(tmp_path)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    folder, source = resolve_model_dir("owner/model.v2", "refs/pr/3")
    assert folder == tmp_path and source == {"id": "owner/model.v2", "revision": "refs/pr/3"}
    assert calls == [("owner/model.v2", "refs/pr/3", ["config.json", *WEIGHT_FILES])]


def test_remote_code_named_by_a_model_repository_is_never_imported(ps_dir, tmp_path):
    folder = model_folder(ps_dir, tmp_path)
    write_config(folder, auto_map={"AutoModel": "modeling_hostile.HostileModel"}, trust_remote_code=True)
    (folder / "model.safetensors").symlink_to(ps_dir / "model.safetensors")
    marker = tmp_path / "imported"
    (folder / "modeling_hostile.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    model = load_model(folder)
    assert model.config.extra["auto_map"] == {"AutoModel": "modeling_hostile.HostileModel"}
    assert not marker.exists() and "modeling_hostile" not in sys.modules


def test_the_engine_has_no_path_to_unpickling_or_remote_code():
    risky = ("trust_remote_code", "weights_only=False", "pickle.load", "allow_pickle=True", "auto_map")
    found = []
    for path in sorted((REPO / "caduceus_cli").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            where = f"{path.relative_to(REPO)}:{number}"
            found += [f"{where}: {word}" for word in risky if word in line]
            if "torch.load(" in line and "weights_only=True" not in line:
                found.append(f"{where}: torch.load without weights_only=True")
            if "np.load(" in line and "allow_pickle=False" not in line:
                found.append(f"{where}: np.load without allow_pickle=False")
    assert found == []
