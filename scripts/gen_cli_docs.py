"""Write docs/cli.md, the command-line reference, from the Typer app itself.

    python scripts/gen_cli_docs.py            # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check    # exit 1 if docs/cli.md is not what the app says

Every command, argument and option with its help text and default, in the order the app
registers them; types come from the commands' annotations (the same under every Typer version).
tests/test_docs.py fails when docs/cli.md is stale.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "cli.md"
TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "FLAG"}

HEADER = """# Command-line reference

Generated from the Typer app by `python scripts/gen_cli_docs.py`; do not edit by hand
(`tests/test_docs.py` fails when this file and the app disagree). The pages on each command
(embed.md, score-variants.md, pretrain.md, models.md) explain what the options do.

Every command exits with status 0 on success, 1 on an error in the input or the run (one line on
stderr: `caduceus: error: ...`), 2 on a usage error (an unknown command or option, a missing or
malformed value), 130 after SIGINT (Ctrl-C), 143 after SIGTERM and 141 when the reader of stdout
went away (`caduceus ... | head`); see reliability.md.
"""


def _type_name(annotation) -> str:
    """INTEGER, FLOAT, TEXT, PATH or FLAG for an annotation such as Optional[int] or List[Path]."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    while args and typing.get_origin(annotation) is not None:
        annotation = args[0]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param, type_name: str) -> str:
    if getattr(param, "required", False):
        return "required"
    default = param.default
    if type_name == "FLAG":
        return "off" if not default else "on"
    if default is None or default == ():
        return ""
    return f"`{default}`"


def _usage(path: str, command) -> str:
    pieces = [path]
    if any(not _is_argument(p) for p in command.params):
        pieces.append("[OPTIONS]")
    if hasattr(command, "commands"):
        pieces.append("COMMAND")
    for p in command.params:
        if _is_argument(p):
            name = p.name.upper() + ("..." if p.nargs == -1 else "")
            pieces.append(name if p.required else f"[{name}]")
    return " ".join(pieces)


def _is_argument(param) -> bool:
    return type(param).__name__.endswith("Argument")


def _command_section(path: str, command) -> list[str]:
    hints = typing.get_type_hints(command.callback) if command.callback is not None else {}
    out = [f"## {path}", ""]
    if command.help:
        out += [inspect.cleandoc(command.help), ""]
    out += [f"Usage: `{_usage(path, command)}`", ""]
    arguments = [p for p in command.params if _is_argument(p)]
    options = [p for p in command.params if not _is_argument(p) and not getattr(p, "hidden", False)]
    if arguments:
        out += ["| argument | type | default | help |", "| --- | --- | --- | --- |"]
        for p in arguments:
            kind = _type_name(hints.get(p.name, str))
            out.append(f"| `{p.name.upper()}` | {kind} | {_default(p, kind)} | {_cell(p.help or '')} |")
        out.append("")
    out += ["| option | type | default | help |", "| --- | --- | --- | --- |"]
    for p in options:
        kind = _type_name(hints.get(p.name, bool if getattr(p, "is_flag", False) else str))
        flags = ", ".join(f"`{o}`" for o in sorted(p.opts + p.secondary_opts, key=lambda o: (o.startswith("--"), o)))
        out.append(f"| {flags} | {kind} | {_default(p, kind)} | {_cell(p.help or '')} |")
    out.append("| `-h`, `--help` | FLAG | off | Show the help and exit. |")
    return out + [""]


def _walk(path: str, command):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(f"{path} {name}", sub)


def render() -> str:
    """The text of docs/cli.md for the app as it is now."""
    import typer

    from caduceus_cli.cli import app

    root = typer.main.get_command(app)
    sections, contents = [], []
    for path, command in _walk("caduceus", root):
        if hasattr(command, "commands") and path != "caduceus":
            sections += [f"## {path}", "", inspect.cleandoc(command.help or ""), "",
                         f"Subcommands: {', '.join(f'`{path} {n}`' for n in command.commands)}.", ""]
            continue
        contents.append(f"- [{path}](#{path.replace(' ', '-')})")
        sections += _command_section(path, command)
    return "\n".join([HEADER, *contents, "", *sections]).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            sys.exit(f"{OUTPUT} is stale: run python scripts/gen_cli_docs.py")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
