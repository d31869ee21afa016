"""Package attributes imported on first use, so that the command line starts without numpy or torch."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_getattr(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """The module-level ``__getattr__`` of ``package``: ``names`` maps each attribute to the module
    (relative to ``package``) that defines it under the same name. The first access imports that
    module and caches the value in the package, so later accesses do not come back here."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{names[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
