"""`caduceus doctor`: what this machine has and what is missing."""

from __future__ import annotations

import typer

from ._common import ReportJsonOption, print_table


def doctor(as_json: bool = ReportJsonOption) -> None:
    """Report torch, CUDA, GPUs and the mamba-ssm/causal-conv1d kernels, with the command to fix what is missing.

    Examples:

      caduceus doctor

      caduceus doctor --json
    """
    from ..model.info import doctor_report

    print_table(doctor_report(), as_json)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
