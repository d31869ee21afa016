"""Options and output helpers shared by the commands (Typer lives only under commands/ and cli.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..choices import BACKENDS, DEFAULT_MODEL
from ..errors import CaduceusError
from ..limits import MAX_COUNT, MAX_THREADS, check_real, check_size
from ..progress import Progress as Progress, duration as duration  # the one progress, for every command


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
ResumeOption = typer.Option(False, "--resume", help="Keep finished chunks beside -o while running, and continue "
                            "an interrupted run from them (same command; another input or option is refused).")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu; "
                            "under torchrun each process takes cuda:LOCAL_RANK).")
BACKEND_HELP = (f"Selective-scan kernels: {', '.join(BACKENDS)}. auto picks triton on a GPU and numba on the CPU "
                "(`caduceus doctor` shows which); mamba-ssm (alias cuda) needs the optional [cuda] extra; torch is "
                "the plain-PyTorch reference.")
BackendOption = typer.Option("auto", "--backend", help=BACKEND_HELP)
DtypeOption = typer.Option("auto", "--dtype", help="Compute dtype of the model's matmuls: auto, fp32 or bf16. auto: "
                           "bf16 on a GPU; on the CPU bf16 where it has bf16 matrix units (AMX or AVX512-BF16, see "
                           "`caduceus doctor`), else fp32. The weights stay fp32.")
# Sequences read by content (CSV/TSV, FASTA, or BED + FASTA): finetune classify/probe and predict
LabeledFastaOption = typer.Option(None, "--fasta", "-f", help="Reference FASTA for BED input.")
SequenceColumnOption = typer.Option(None, "--sequence-column", help="CSV/TSV: the sequence column's name or 1-based "
                                    "number (default: sequence/seq, or the column that holds DNA).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress and no summary on stderr.")
SummaryJsonOption = typer.Option(False, "--json", help="The summary on stderr as one JSON line.")
ReportJsonOption = typer.Option(False, "--json", help="Print the full report as JSON instead of a table.")
ThreadsOption = SizeOption(None, "--threads", maximum=MAX_THREADS, help="CPU threads for torch and the numba kernels "
                           "(default: all cores, or OMP_NUM_THREADS when set).")


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
