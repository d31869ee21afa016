"""Root command. The only place that turns errors into messages and exit codes."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import typing
from pathlib import Path

import typer

from . import stopping
from ._version import __version__
from .commands._common import click_exceptions
from .errors import CaduceusError
from .runtime import env_flag

# Subcommand modules under caduceus_cli/commands, each with register(app).
COMMAND_MODULES = ["models", "doctor", "pretrain", "score_variants", "finetune", "embed", "predict",
                   "benchmark", "ism", "track", "calibrate"]

app = typer.Typer(
    name="caduceus",
    help="Caduceus DNA language models for genomics: pretrain, fine-tune, embed regions, score variants.\n\n"
         "Examples:\n\n"
         "  caduceus embed GRCh38.fa peaks.bed -o peaks.parquet\n\n"
         "  caduceus score-variants calls.vcf.gz -f GRCh38.fa -o scored.vcf.gz --write-index",
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
    logger.setLevel(logging.INFO if env_flag("CADUCEUS_VERBOSE") else logging.WARNING)
    logger.propagate = False
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.INFO, "info")


_CLICK = click_exceptions()


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


_TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def _value_name(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    while args and typing.get_origin(annotation) is not None:  # Optional[int], List[Path]
        annotation = args[0]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _TYPE_NAMES.get(annotation, "TEXT")


def plain_metavars(command) -> None:
    """Flags shown as flags and values as TEXT/INTEGER/FLOAT/PATH, under every Typer version
    (Typer 0.29 writes '<bool>' after every flag and '<int>' after values)."""
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    hints = typing.get_type_hints(command.callback) if command.callback is not None else {}
    for param in command.params:
        if param.metavar is not None:
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
            if hasattr(param, "display_type_rich"):  # Typer 0.29: no '<str>' type column beside the name
                param.display_type_rich = lambda ctx: None
        elif getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.name in hints:
            param.metavar = _value_name(hints[param.name])
    make_help_option = command.get_help_option

    def help_option_as_a_flag(ctx):  # click builds --help when the help is asked for
        option = make_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option_as_a_flag


def build_command():
    """The click command of the app, as the help shows it."""
    command = typer.main.get_command(app)
    plain_metavars(command)
    return command


def _invoke(argv: list[str] | None) -> int:
    """Parse and run the command ourselves: Typer's own main turns a broken pipe into exit 1 and
    Ctrl-C into a silent 130; here they reach ``main`` as they are."""
    command = build_command()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with command.make_context("caduceus", args) as ctx:
            code = command.invoke(ctx)
    except typer.Exit as e:  # --help, --version (click's Exit in every Typer version)
        return e.exit_code
    return code if isinstance(code, int) else 0


def _flush_stdout() -> None:
    """Flush what is buffered for stdout now, so that a failure is ours to report (not an
    'Exception ignored' at interpreter exit)."""
    if sys.stdout is not None:
        sys.stdout.flush()


def _quiet_stdout() -> None:
    """After a broken pipe or a failed write, send whatever is still buffered to /dev/null so
    that the interpreter's last flush cannot print its own error."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _torch_cache_folder() -> str:
    """Where torch puts its compile cache when TORCHINDUCTOR_CACHE_DIR is not set (as
    torch._inductor.runtime.cache_dir_utils.default_cache_dir names it)."""
    import getpass
    import re
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    return os.path.abspath(os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user)))


@contextlib.contextmanager
def _no_stray_torch_cache():
    """Importing torch._dynamo (every torch optimizer does) creates an empty TMPDIR/torchinductor_USER.
    Nothing here compiles with torch: remove that folder again if this run created it and left it empty."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        yield
        return
    folder = _torch_cache_folder()
    existed = os.path.lexists(folder)
    try:
        yield
    finally:
        made = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # torch sets it to the folder it created
        if not existed and made and os.path.abspath(made) == folder:
            with contextlib.suppress(OSError):
                for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
                    os.rmdir(root)  # empty folders only: a folder with a file in it stays


def main(argv: list[str] | None = None) -> None:
    try:
        _setup_logging()
        with _no_stray_torch_cache(), stopping.watch():
            code = _invoke(argv)
            _flush_stdout()
    except CaduceusError as e:
        sys.stderr.write(error_line(str(e)) + "\n")
        sys.exit(e.exit_code)
    except stopping.Stopped as e:
        sys.stderr.write(stopping.message(e.signum))
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # click's Abort in every Typer version; Ctrl-C outside a run
        sys.stderr.write(stopping.message(signal.SIGINT))
        sys.exit(130)
    except _CLICK.UsageError as e:
        sys.exit(_show_usage_error(e))
    except _CLICK.ClickException as e:
        sys.stderr.write(error_line(e.format_message()) + "\n")
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours; the status is
        # the one a shell gives a tool killed by SIGPIPE.
        _quiet_stdout()
        sys.exit(stopping.BROKEN_PIPE_STATUS)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        sys.stderr.write(error_line(f"{e.filename}: {e.strerror}") + "\n")
        sys.exit(1)
    except OSError as e:  # writing stdout or stderr: a full disk, an I/O error
        from .io import write_error

        _quiet_stdout()
        sys.stderr.write(error_line(str(write_error(e.filename or "stdout", e))) + "\n")
        sys.exit(1)
    sys.exit(code)
