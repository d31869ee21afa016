"""`caduceus models info`: what a checkpoint is and how it will run here."""

from __future__ import annotations

import typer

from ..choices import DEFAULT_MODEL
from ._common import ReportJsonOption, RevisionOption, print_table

models_app = typer.Typer(help="Inspect models: the bundled default, local folders, HuggingFace hub ids.\n\n"
                              "Examples:\n\n  caduceus models info\n\n  caduceus models info run/final --json",
                         no_args_is_help=True)


@models_app.command("info")
def info(
    model: str = typer.Argument(DEFAULT_MODEL, help=f"'{DEFAULT_MODEL}', a local folder, or a HuggingFace hub id."),
    revision: str = RevisionOption,
    device: str = typer.Option(None, "--device", help="Device to report the backend for."),
    as_json: bool = ReportJsonOption,
) -> None:
    """Variant, sizes, parameters, RC mode and which backend will run.

    Examples:

      caduceus models info

      caduceus models info kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16 --json
    """
    from ..model.info import model_info

    print_table(model_info(model, device=device, revision=revision), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
