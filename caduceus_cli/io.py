"""Output files that never look finished unless they are, and provenance for every output."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ._version import __version__
from .errors import CaduceusError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any work) if ``path`` cannot be created."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise CaduceusError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CaduceusError(f"{path}: folder {folder} is not writable")
    if path.is_dir():
        raise CaduceusError(f"{path}: is a folder; give a file name")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target folder; rename it to ``path`` only on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed and the target
    is left untouched.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A writable stream for ``path`` ('-' is stdout, written directly) committed atomically."""
    if str(path) == "-":
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def command_line() -> str:
    """The command line as the user typed it (for provenance)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "cli.py")):
        argv[0] = "caduceus"
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def provenance(model=None, **extra) -> dict[str, str]:
    """Model id/revision/hash, tool version and command line, plus any extra settings (as strings)."""
    out = {"tool": "caduceus-cli", "tool_version": __version__, "command": command_line()}
    if model is not None:
        src = getattr(model, "source", {}) or {}
        out.update({"model": str(src.get("id")), "model_revision": str(src.get("revision")),
                    "model_sha256": str(src.get("sha256"))})
    out.update({k: str(v) for k, v in extra.items()})
    return out
