"""Options and output helpers shared by the commands (Typer lives only under commands/ and cli.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..backend_names import BACKENDS
from ..progress import Progress as Progress, duration as duration  # the one progress, for every command
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


def report(command: str, sentence: str, summary: dict, *, as_json: bool = False, quiet: bool = False) -> None:
    """A command's one summary, on stderr (stdout may be carrying the data): ``caduceus: COMMAND:
    sentence``, or with --json the summary as one JSON line (even with --quiet: a machine asked)."""
    if as_json:
        sys.stderr.write(json.dumps(summary, default=str) + "\n")
    elif not quiet:
        sys.stderr.write(f"caduceus: {command}: {sentence}\n")
