"""Output folders and reports of fine-tuning and probing.

A folder is built in a hidden temporary folder beside its target and renamed into place only when
complete (``io.atomic_folder``): an error leaves nothing behind. Continuing a run (``--resume``)
builds the new folder the same way and replaces the old one with it at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

from ...errors import CaduceusError
from ...io import atomic_folder, provenance
from .protocol import summarize
from .recipe import metric_names

REPORT_FILE = "report.json"
METRICS_FILE = "metrics.jsonl"
RESUME_DIR = "resume"


@contextlib.contextmanager
def output_folder(path: str | os.PathLike | None, *, replace: bool = False, enabled: bool = True) -> Iterator[Path | None]:
    """A temporary folder that becomes ``path`` when the block succeeds (None: nothing is written,
    as on torchrun ranks other than 0). With ``replace`` an existing ``path`` is replaced."""
    if path is None or not enabled:
        yield None
        return
    with atomic_folder(path, replace=replace) as tmp:
        yield tmp


def check_new_output(path: str | os.PathLike | None) -> None:
    """Refuse an output folder that already holds something, before any work."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        hint = (f"; continue an interrupted run with --resume {path}" if (target / RESUME_DIR).is_dir() else "")
        raise CaduceusError(f"{path}: already exists; give a new folder name{hint}")


class MetricsLog:
    """metrics.jsonl: one JSON line per epoch (or per fit), appended as the run goes."""

    def __init__(self, folder: Path | None, previous: Path | None = None):
        self.path = None if folder is None else folder / METRICS_FILE
        if self.path is not None:
            self.path.write_text(previous.read_text() if previous is not None and previous.is_file() else "")

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=float) + "\n")


def build_report(*, task: str, protocol: str, label_names, runs: list[dict], folds: int | None, data: dict,
                 recipe: dict, model, extra: dict | None = None, status: str = "finished") -> dict:
    """The report dictionary every protocol returns and writes as report.json."""
    names = list(metric_names(task))
    summary = {"valid": summarize(runs, "valid", names),
               ("cv" if folds else "test"): summarize(runs, "test", names)}
    report = {
        "task": task, "protocol": protocol, "status": status, "metric_names": names,
        "label_names": list(label_names) if label_names is not None else None,
        "runs": runs, "summary": summary, "data": data, "recipe": recipe,
        "provenance": provenance(model, seeds=recipe.get("seeds"), folds=folds),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report.update(extra or {})
    return report


def stamp_head(model, backbone, data: dict) -> None:
    """Record in the classifier's config.json what it was trained from: the base model (id, revision,
    sha256), the tool and command, and the digests of the data."""
    model.config.extra["classifier"]["trained_from"] = {**provenance(backbone), "data": data}


def write_report(folder: Path | None, report: dict) -> None:
    if folder is not None:
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, default=float) + "\n")
