"""Options and output helpers shared by the commands (Typer lives only under commands/ and cli.py)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from ..choices import BACKENDS, DEFAULT_MODEL
from ..errors import CaduceusError
from ..limits import MAX_COUNT, check_real, check_size


def click_exceptions():
    """The exception module of the click that the installed Typer raises from: Typer 0.2x vendors
    click as ``typer._click`` (and no longer depends on click); older Typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _option_name(param) -> str:
    """The long name of an option (``--batch-size`` for ``-b/--batch-size``)."""
    return max(param.opts, key=len) if getattr(param, "opts", None) else f"--{param.name.replace('_', '-')}"


def _checked(check, **limits):
    """A Typer callback that applies the engine's ``check`` (limits.check_size / check_real) to the
    value as it is parsed: a value out of range is a usage error, in the engine's words."""
    def callback(ctx: typer.Context, param: typer.CallbackParam, value):
        if ctx.resilient_parsing:
            return value
        try:
            return check(_option_name(param), value, **limits)
        except CaduceusError as e:
            raise click_exceptions().UsageError(str(e), ctx) from None

    return callback


def SizeOption(default, *names: str, help: str, minimum: int = 1, maximum: int = MAX_COUNT,  # noqa: N802
               limits: tuple[int, int] | None = None):
    """An option that takes a size, count or length: a whole number from ``minimum`` to ``maximum``
    (or ``limits``, an engine's (minimum, maximum)), checked by limits.check_size as it is parsed.
    Zero is refused unless the minimum is 0."""
    minimum, maximum = limits or (minimum, maximum)
    return typer.Option(default, *names, help=help, callback=_checked(check_size, minimum=minimum, maximum=maximum))


def RealOption(default, *names: str, help: str, **limits):  # noqa: N802
    """An option that takes a real number: finite and in range (limits.check_real: minimum, maximum,
    above, below), checked as it is parsed."""
    return typer.Option(default, *names, help=help, callback=_checked(check_real, **limits))

ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help=f"'{DEFAULT_MODEL}' (the default model shipped with "
                           "the tool), a local folder, or a HuggingFace hub id.")
RevisionOption = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of the model.")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu; "
                            "under torchrun each process takes cuda:LOCAL_RANK).")
BACKEND_HELP = (f"Selective-scan kernels: {', '.join(BACKENDS)}. auto picks triton on a GPU and numba on the CPU "
                "(`caduceus doctor` shows which); mamba-ssm (alias cuda) needs the optional [cuda] extra; torch is "
                "the plain-PyTorch reference.")
BackendOption = typer.Option("auto", "--backend", help=BACKEND_HELP)
DtypeOption = typer.Option(None, "--dtype", help="Cast the weights: float32, bfloat16, float16 (on CUDA the model "
                           "runs under bf16 autocast anyway).")
# Sequences read by content (CSV/TSV, FASTA, or BED + FASTA): finetune classify/probe and predict
LabeledFastaOption = typer.Option(None, "--fasta", "-f", help="Reference FASTA for BED input.")
SequenceColumnOption = typer.Option(None, "--sequence-column", help="CSV/TSV: the sequence column's name or 1-based "
                                    "number (default: sequence/seq, or the column that holds DNA).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress and no summary on stderr.")
SummaryJsonOption = typer.Option(False, "--json", help="The summary on stderr as one JSON line.")
ReportJsonOption = typer.Option(False, "--json", help="Print the full report as JSON instead of a table.")


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
        from ..runtime import env_float

        return env_float("CADUCEUS_PROGRESS_SECONDS", 60.0)

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
