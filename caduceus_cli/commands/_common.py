"""Options and output helpers shared by the commands (Typer lives only under commands/ and cli.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..backend_names import BACKENDS
from ..runtime import DEFAULT_MODEL

ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help=f"'{DEFAULT_MODEL}' (the default model shipped with "
                           "the tool), a local folder, or a HuggingFace hub id.")
RevisionOption = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of the model.")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu; "
                            "under torchrun each process takes cuda:LOCAL_RANK).")
BackendOption = typer.Option("auto", "--backend", help=f"Selective-scan kernels: {', '.join(BACKENDS)}. auto picks "
                             "triton on a GPU and numba on the CPU (`caduceus doctor` shows which); mamba-ssm (alias "
                             "cuda) needs the optional [cuda] extra; torch is the plain-PyTorch reference.")
DtypeOption = typer.Option(None, "--dtype", help="Cast the weights: float32, bfloat16, float16 (on CUDA the model "
                           "runs under bf16 autocast anyway).")


def print_table(rows: dict[str, Any], as_json: bool) -> None:
    """Key/value report to stdout: aligned text, or JSON with --json."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        if isinstance(value, list):
            value = ", ".join(json.dumps(v, default=str) if isinstance(v, dict) else str(v) for v in value) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        sys.stdout.write(f"{key:<{width}}  {'-' if value is None else value}\n")


class Progress:
    """A rich progress bar on stderr, driven by the engine's ``progress(n)`` and ``set_total(n)``.

    Quiet (no bar) when stderr is not a terminal; shown from the first report only, so that a
    process that never reports (a torchrun rank other than 0) draws nothing.
    """

    def __init__(self, description: str, unit: str = "items", quiet: bool = False):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.enabled = not quiet and self.console.is_terminal
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.enabled, transient=False,
        )
        self.unit = unit
        self._task = self._bar.add_task(description, total=None, rate="")
        self._shown = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._shown:
            self._bar.__exit__(*exc)

    def _show(self) -> None:
        if not self._shown:
            self._bar.start()
            self._shown = True

    def __call__(self, advance: int = 1, **fields) -> None:
        self._show()
        speed = self._bar.tasks[0].speed
        rate = f"{speed:,.1f} {self.unit}/s" if speed else ""
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        self._bar.update(self._task, advance=advance, rate=(rate + " " + extra).strip())

    def set_total(self, total: int | None) -> None:
        self._show()
        self._bar.update(self._task, total=total)
