"""`caduceus models info`: what a checkpoint is and how it will run here."""

from __future__ import annotations

import typer

from typing import Optional

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
    background: Optional[str] = typer.Option(None, "--background", help="Also show the provenance of a background "
                                             "made by `caduceus calibrate`, and whether this model made it."),
    as_json: bool = ReportJsonOption,
) -> None:
    """Variant, sizes, parameters, RC mode and which backend will run.

    Examples:

      caduceus models info

      caduceus models info kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16 --json

      caduceus models info --background background.parquet
    """
    from ..model.info import model_info

    rows = model_info(model, device=device, revision=revision)
    if background is not None:
        from ..pipelines.variants.background import background_info

        rows.update(background_info(background, rows["sha256"]))
    print_table(rows, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
