"""Root command. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from ._version import __version__
from .errors import CaduceusError

# Subcommand modules under caduceus_cli/commands, each with register(app).
COMMAND_MODULES = ["models", "doctor", "pretrain", "score_variants", "finetune", "embed", "predict",
                   "benchmark"]

app = typer.Typer(
    name="caduceus",
    help="Caduceus DNA language models for genomics: pretrain, fine-tune, embed regions, score variants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"caduceus-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Caduceus DNA language models for genomics."""


for _name in COMMAND_MODULES:
    importlib.import_module(f".commands.{_name}", __package__).register(app)


def error_line(message: str) -> str:
    """One line on stderr: tracebacks are for bugs, not for user mistakes."""
    return "caduceus: error: " + " ".join(str(message).split())


def _setup_logging() -> None:
    """Warnings and progress notes go to stderr as `caduceus: warning: ...`."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("caduceus: %(levelname)s: %(message)s"))
    logger = logging.getLogger("caduceus")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if os.environ.get("CADUCEUS_VERBOSE") else logging.WARNING)
    logger.propagate = False
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.INFO, "info")


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="caduceus", standalone_mode=False)
    except CaduceusError as e:
        sys.stderr.write(error_line(str(e)) + "\n")
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("caduceus: interrupted\n")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("caduceus: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        sys.stderr.write(error_line(f"{e.filename}: {e.strerror}") + "\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
