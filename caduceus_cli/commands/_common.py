"""Options and output helpers shared by the commands (Typer lives only under commands/ and cli.py)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from ..choices import BACKENDS, DEFAULT_MODEL

ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help=f"'{DEFAULT_MODEL}' (the default model shipped with "
                           "the tool), a local folder, or a HuggingFace hub id.")
RevisionOption = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of the model.")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu; "
                            "under torchrun each process takes cuda:LOCAL_RANK).")
BackendOption = typer.Option("auto", "--backend", help=f"Selective-scan kernels: {', '.join(BACKENDS)}. auto picks "
                             "triton on a GPU and numba on the CPU (`caduceus doctor` shows which); mamba-ssm (alias "
                             "cuda) needs the optional [cuda] extra; torch is the plain-PyTorch reference.")
DtypeOption = typer.Option("auto", "--dtype", help="Compute dtype of the model's matmuls: auto, fp32 or bf16. auto: "
                           "bf16 on a GPU; on the CPU bf16 where it has bf16 matrix units (AMX or AVX512-BF16, see "
                           "`caduceus doctor`), else fp32. The weights stay fp32.")
ThreadsOption = typer.Option(None, "--threads", help="CPU threads for torch and the numba kernels (default: all "
                             "cores, or OMP_NUM_THREADS when set).")


def use_threads(threads: int | None, dtype: str | None = None) -> None:
    """Apply --threads and check --dtype before any work (the engine says what is wrong)."""
    from ..runtime import set_threads

    set_threads(threads)
    if dtype is not None:
        from ..model.precision import check_dtype

        check_dtype(dtype)


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


def report(command: str, sentence: str, summary: dict, *, as_json: bool = False, quiet: bool = False) -> None:
    """A command's one summary, on stderr (stdout may be carrying the data): ``caduceus: COMMAND:
    sentence``, or with --json the summary as one JSON line (even with --quiet: a machine asked)."""
    if as_json:
        sys.stderr.write(json.dumps(summary, default=str) + "\n")
    elif not quiet:
        sys.stderr.write(f"caduceus: {command}: {sentence}\n")


def duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress on stderr, driven by the engine's ``progress(n, **fields)`` and ``set_total(n)``:
    done so far, rate and ETA (when the total is known).

    On a terminal: a rich progress bar. Otherwise (a log file, a cluster job): one line every
    ``CADUCEUS_PROGRESS_SECONDS`` seconds (default 60; the first at the first report). Nothing with
    ``quiet``. Shown from the first report only, so that a process that never reports (a torchrun
    rank other than 0) prints nothing.
    """

    def __init__(self, description: str, unit: str = "items", quiet: bool = False):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.enabled = not quiet and self.console.is_terminal
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.enabled, transient=False,
        )
        self.description, self.unit = description, unit
        self._task = self._bar.add_task(description, total=None, rate="")
        self._shown = False
        self.done, self.resumed, self.total = 0, 0, None
        self._started = self._last_line = None
        self._interval = self._line_interval()

    @staticmethod
    def _line_interval() -> float:
        import os

        try:
            return max(0.0, float(os.environ.get("CADUCEUS_PROGRESS_SECONDS", "60")))
        except ValueError:
            return 60.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._shown and self.enabled:
            self._bar.__exit__(*exc)

    def _show(self) -> None:
        if not self._shown:
            self._started = time.monotonic()
            if self.enabled:
                self._bar.start()
            self._shown = True

    def __call__(self, advance: int = 1, resumed: bool = False, **fields) -> None:
        """``advance`` more done; ``resumed``: done by an earlier, interrupted run (not in the rate)."""
        self._show()
        self.done += advance
        if resumed:
            self.resumed += advance
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        if self.enabled:
            speed = self._bar.tasks[0].speed
            rate = f"{speed:,.1f} {self.unit}/s" if speed else ""
            self._bar.update(self._task, advance=advance, rate=(rate + " " + extra).strip())
        elif not self.quiet:
            self._line(extra)

    def set_total(self, total: int | None) -> None:
        self.total = total
        self._show()
        if self.enabled:
            self._bar.update(self._task, total=total)

    def _line(self, extra: str) -> None:
        """``caduceus: scoring: 12,288 of 1,000,000 records (1.2%), 45.1 records/s, ETA 6h05m``."""
        now = time.monotonic()
        if self._last_line is not None and now - self._last_line < self._interval:
            return
        self._last_line = now
        elapsed = now - self._started
        rate = (self.done - self.resumed) / elapsed if elapsed >= 1 else 0.0  # none yet after a fraction of a second
        text = f"{self.done:,}"
        if self.total:
            text += f" of {self.total:,} {self.unit} ({100 * self.done / self.total:.1f}%)"
            eta = f", ETA {duration((self.total - self.done) / rate)}" if rate > 0 else ""
        else:
            text += f" {self.unit}"
            eta = ""
        rate_text = f", {rate:,.1f} {self.unit}/s" if rate > 0 else ""
        sys.stderr.write(f"caduceus: {self.description}: {text}{rate_text}{eta}{'; ' + extra if extra else ''}\n")
        sys.stderr.flush()
