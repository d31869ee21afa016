"""The run folder: run.json, metrics.jsonl, checkpoint-STEP/ (with the trainer state), latest,
final/; every file and folder written through io's atomic outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from ...errors import CaduceusError
from ...io import atomic_file, atomic_folder
from ...model.caduceus import CaduceusForMaskedLM
from ...model.checkpoint import save_model
from .settings import FINAL_DIR, LATEST_FILE, STATE_FILE


def prepare_run_folder(out: Path) -> bool:
    """Create the run folder and check that it is writable, before any work; True if it was created."""
    created = not out.exists()
    if out.exists() and not out.is_dir():
        raise CaduceusError(f"{out}: exists and is not a folder; give a folder for -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CaduceusError(f"{out}: the run folder cannot be written ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CaduceusError(f"{out}: the run folder cannot be written (permission denied)")
    return created


def remove_unstarted_run(out: Path) -> None:
    """Remove a run folder this run created when it failed before its first checkpoint (nothing in
    it could be resumed), so that no empty or half-begun run is left behind."""
    if latest_checkpoint(out) is None:
        shutil.rmtree(out, ignore_errors=True)


def _checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(m.group(1)) if m and (path / STATE_FILE).is_file() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST_FILE
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if _checkpoint_step(candidate) is not None:
            return candidate
    found = [(s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None]
    return max(found)[1] if found else None


def save_checkpoint(run_dir: Path, model: CaduceusForMaskedLM, trainer_state: dict, keep: int) -> Path:
    """checkpoint-STEP/ (config.json + model.safetensors + trainer_state.pt), written as one atomic
    folder; then ``latest`` is pointed at it and older checkpoints beyond ``keep`` go."""
    final = run_dir / f"checkpoint-{trainer_state['step']}"
    with atomic_folder(final, replace=True) as tmp:
        save_model(model, tmp)
        torch.save(trainer_state, tmp / STATE_FILE)
    with atomic_file(run_dir / LATEST_FILE) as tmp:
        tmp.write_text(final.name + "\n")
    old = sorted((s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None)
    for s, p in old[:-keep]:
        if p != final:
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_trainer_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files
        raise CaduceusError(f"{path}: cannot be read as a trainer state ({e.__class__.__name__})") from None
    if not isinstance(state, dict) or "step" not in state or "optimizer" not in state:
        raise CaduceusError(f"{path}: not a caduceus-cli trainer state")
    return state


def save_final(run_dir: Path, model: CaduceusForMaskedLM, training: dict) -> Path:
    """final/: config.json (with max_seq_len and a 'training' record) + model.safetensors, ready to be
    copied as-is into caduceus_cli/data/default_model/."""
    model.config.extra["training"] = training
    final = run_dir / FINAL_DIR
    with atomic_folder(final, replace=True) as tmp:
        save_model(model, tmp)
    return final


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))
