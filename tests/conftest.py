"""Shared fixtures. Real data is read in place from ../shared (CI always has it)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
GOLDEN = REPO / "tests" / "data" / "golden"  # copied from ../shared/golden (generated for this project)


def need_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is not present (CI provides ../shared/data)")
    return path


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A random PS model (d_model 16, 2 layers) saved in the HuggingFace layout."""
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", d_model=16, n_layer=2))
    return save_model(model, tmp_path / "tiny_ps")


@pytest.fixture(scope="module")
def small_ps_dir(tmp_path_factory):
    """A random PS model (d_model 16, 1 layer, seed 0) saved once per test module."""
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save_model(CaduceusForMaskedLM(CaduceusConfig.small("ps", 16, 1)), folder)
    return folder
