"""Root command. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ._version import __version__
from .errors import CaduceusError

# Subcommand modules under caduceus_cli/commands, each with register(app).
COMMAND_MODULES = ["models", "doctor", "pretrain", "score_variants", "finetune", "embed"]

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


def _click_exceptions():
    """The exception module of the click that the installed Typer raises from: Typer 0.2x vendors
    click as ``typer._click`` (and no longer depends on click); older Typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


_CLICK = _click_exceptions()


def usage_line(error) -> str:
    """One line for a usage error: the command, what is wrong, and where the help is."""
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "caduceus"
    subcommand = path.partition(" ")[2]
    message = " ".join(error.format_message().split()).rstrip(".")
    return error_line(f"{subcommand + ': ' if subcommand else ''}{message} (see '{path} --help')")


def _show_usage_error(error) -> int:
    no_args = getattr(_CLICK, "NoArgsIsHelpError", None)
    if no_args is not None and isinstance(error, no_args):
        # A group without its subcommand: the help (Typer's rich help is printed while it is built).
        text = error.format_message().rstrip("\n")
        if text:
            sys.stderr.write(text + "\n")
    else:
        sys.stderr.write(usage_line(error) + "\n")
    return error.exit_code


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="caduceus", standalone_mode=False)
    except CaduceusError as e:
        sys.stderr.write(error_line(str(e)) + "\n")
        sys.exit(e.exit_code)
    except typer.Abort:  # click's Abort in every Typer version
        sys.stderr.write("caduceus: interrupted\n")
        sys.exit(130)
    except _CLICK.UsageError as e:
        sys.exit(_show_usage_error(e))
    except _CLICK.ClickException as e:
        sys.stderr.write(error_line(e.format_message()) + "\n")
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
