"""The one folder where caduceus keeps what it can compute again: compiled CPU kernels (``numba/``),
probe features (``features/``) and benchmark downloads (``benchmark/``).

``$CADUCEUS_CACHE`` when set, else ``caduceus`` in the user's cache folder (``$XDG_CACHE_HOME``,
else ``~/.cache``). Nothing is ever written inside the installed package: it may be read-only,
and pip removes only the files it installed, so a file left there breaks the next install.

No torch, no numba here: the numba kernels read :func:`use_numba_cache` before numba is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .runtime import env_str

NAME = "caduceus"


def cache_root() -> Path:
    """``$CADUCEUS_CACHE``, else ``$XDG_CACHE_HOME/caduceus``, else ``~/.cache/caduceus`` (not created)."""
    explicit = env_str("CADUCEUS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = env_str("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / NAME


def cache_dir(*parts: str) -> Path:
    """A folder of the cache, e.g. ``cache_dir("features")`` (not created)."""
    return cache_root().joinpath(*parts)


def use_numba_cache() -> bool:
    """Point numba's on-disk cache at ``<cache root>/numba`` unless NUMBA_CACHE_DIR is already set
    (numba reads it when it is first imported, so call this before); True when that folder can be
    written. When it cannot, the kernels must not ask numba to cache (``cache=False``): numba would
    fall back to a ``__pycache__`` beside the package's own files."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir("numba")))
    folder = Path(os.environ["NUMBA_CACHE_DIR"]).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True
