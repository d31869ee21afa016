"""The state a stopped fine-tuning job leaves in DIR/resume/ and reads back to continue.

settings.json (the job's options, data paths and digests), state.pt (run position, optimiser,
finished runs: tensors, numbers, strings and containers only, read with ``weights_only=True``), and
the weights as safetensors: the current run's current and best weights, and the best finished run's.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from ...errors import CaduceusError
from .report import RESUME_DIR

STATE_FORMAT = "caduceus-cli finetune state 1"


def save_resume(folder: Path, *, options: dict, data_paths: dict, digests: dict, run_index: int, run_state: dict,
                optimizer: dict, completed: list, chosen_index, chosen_metric, weights: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"options": options, "data_paths": data_paths,
                                                      "digests": digests}, indent=2) + "\n")
    torch.save({"format": STATE_FORMAT, "run_index": run_index, "run_state": run_state, "optimizer": optimizer,
                "completed": json.dumps(completed), "chosen_index": chosen_index, "chosen_metric": chosen_metric},
               folder / "state.pt")
    for name, state in weights.items():
        if state is not None:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / f"{name}.safetensors"))


def load_resume(run_dir) -> dict:
    """The saved job of a stopped folder: options, data paths, digests and the state."""
    folder = Path(run_dir) / RESUME_DIR
    if not folder.is_dir():
        hint = " (it finished; nothing to continue)" if (Path(run_dir) / "report.json").is_file() else ""
        raise CaduceusError(f"{run_dir}: no {RESUME_DIR}/ folder: not a stopped fine-tuning run{hint}")
    try:
        settings = json.loads((folder / "settings.json").read_text())
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise CaduceusError(f"{folder}: cannot be read ({e.__class__.__name__}): the run cannot be continued") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CaduceusError(f"{folder}/state.pt: not a caduceus-cli fine-tuning state")
    state["completed"] = json.loads(state["completed"])
    return {**settings, **state}


def load_weights(run_dir: Path | None, name: str) -> dict | None:
    if run_dir is None:
        return None
    path = Path(run_dir) / RESUME_DIR / f"{name}.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))
