"""Settings from the environment: one reader, one error policy (a value that cannot be used is
refused in one line naming the variable), read when used, never at import."""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, TypeVar

from ..errors import CaduceusError
from ..limits import is_ascii_integer

if TYPE_CHECKING:  # pragma: no cover
    pass

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# settings from the environment
# ---------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*([0-9]+(?:_[0-9]+)*)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bad_env(name: str, text: str, problem: str) -> CaduceusError:
    return CaduceusError(f"environment variable {name}={text!r} {problem}; fix or unset it")


def env_str(name: str, default: str | None = None) -> str | None:
    """The text of environment variable ``name``, stripped (``default`` when unset or blank)."""
    text = os.environ.get(name, "").strip()
    return text or default


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off in any case (``default`` when unset or blank)."""
    text = env_str(name)
    if text is None:
        return default
    if text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    raise _bad_env(name, text, "is not a yes/no setting (1, true, yes, on or 0, false, no, off)")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A finite number of at least ``minimum`` (``default`` when unset or blank), such as seconds."""
    text = env_str(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise _bad_env(name, text, "is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise _bad_env(name, text, f"must be a finite number of at least {minimum:g}")
    return value


def env_int(name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    """The integer in environment variable ``name`` (``default`` when unset or empty).

    Accepts ``1048576``, ``1_048_576`` and binary suffixes ``32k``, ``32M``, ``4G``, ``1T`` (``MiB``
    and ``MB`` read the same: powers of 1,024). Anything else raises a CaduceusError naming the
    variable, when the value is used rather than at import.
    """
    text = env_str(name)
    if text is None:
        return default
    match = _SIZE.match(text)
    if not match:
        raise _bad_env(name, text, "is not a whole number (examples: 1048576, 32M, 4G)")
    value = int(match.group(1).replace("_", "")) * _SCALE[(match.group(2) or "")[:1].lower()]
    if value < minimum:
        raise _bad_env(name, text, f"must be at least {minimum}")
    return value



def _env_rank(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    if not is_ascii_integer(text):
        raise CaduceusError(f"environment variable {name}={text!r} is not an integer (set by torchrun)")
    value = int(text)
    if value < 0:
        raise CaduceusError(f"environment variable {name}={text!r} must be >= 0")
    return value


def env_rank() -> int:
    """This process's RANK under torchrun, 0 outside it (read and checked as :func:`torchrun` does)."""
    return _env_rank("RANK", 0)
