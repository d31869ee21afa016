"""The one rule for numeric options and numbers read from text.

- A size, count or length (``--batch-size``, ``--window``, ``--seeds``, ...) is a whole number from
  its minimum (1 unless 0 has a meaning, as for ``--tile-overlap``) to a stated maximum: zero is
  never quietly replaced by a default, a negative value never reaches an allocation.
- A real number (``--lr``, ``--weight-decay``, ``--test-fraction``, ...) is finite and in its range.
- Integers in text inputs (BED coordinates, region strings, column numbers, durations) are ASCII
  digits only: Python's ``int()`` also reads Arabic-Indic or full-width digits and ``1_000``.

The commands check their options with these functions as they are parsed (commands/_common.py) and
the engine's API functions check the same values again, so a value is refused in the same words
from the shell and from Python. Light on purpose: no numpy, no torch.
"""

from __future__ import annotations

import math
import numbers
import re

from .errors import CaduceusError

MAX_BASES = 1 << 20  # windows, contexts, sequence lengths: 1,048,576 bp (8x the published 131,072)
MAX_BATCH = 1 << 16  # sequences, windows or regions held at once (per forward pass, per step)
MAX_TOKENS = 1 << 30  # bases per batch
MAX_THREADS = 256
MAX_REPEATS = 1000  # seeds and folds: the runs of a protocol
MAX_COUNT = (1 << 31) - 1  # seeds, folds, epochs, steps, records per chunk, ...

ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


def is_ascii_digits(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits (``str.isdigit`` also takes ``'٣'`` and ``'²'``)."""
    return text.isascii() and text.isdigit()


def is_ascii_integer(text: str) -> bool:
    """Whether ``text`` (stripped) is an optional sign and ASCII digits, nothing else."""
    return ASCII_INTEGER.fullmatch(text.strip()) is not None


def check_size(option: str, value, *, minimum: int = 1, maximum: int = MAX_COUNT):
    """``value`` (None passes: the default applies) if it is a whole number in [minimum, maximum],
    else a CaduceusError: ``--batch-size -1 is out of range: give a whole number from 1 to 65,536``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CaduceusError(f"{option} {value!r} is not a whole number: give one from {minimum:,} to {maximum:,}")
    if not minimum <= value <= maximum:
        raise CaduceusError(f"{option} {value} is out of range: give a whole number from {minimum:,} to {maximum:,}")
    return int(value)


def check_real(option: str, value, *, minimum: float | None = None, maximum: float | None = None,
               above: float | None = None, below: float | None = None):
    """``value`` (None passes) if it is a finite number, >= ``minimum`` / > ``above`` and <= ``maximum``
    / < ``below`` where given, else a CaduceusError naming the option and the range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CaduceusError(f"{option} {value!r} is not a finite number: give one {_range(minimum, maximum, above, below)}")
    if ((minimum is not None and value < minimum) or (above is not None and value <= above)
            or (maximum is not None and value > maximum) or (below is not None and value >= below)):
        raise CaduceusError(f"{option} {value:g} is out of range: give a number {_range(minimum, maximum, above, below)}")
    return float(value)


def _range(minimum, maximum, above, below) -> str:
    low = f">= {minimum:g}" if minimum is not None else f"> {above:g}" if above is not None else None
    high = f"<= {maximum:g}" if maximum is not None else f"< {below:g}" if below is not None else None
    return " and ".join(p for p in (low, high) if p) or "(finite)"


def parse_sizes(option: str, text, *, minimum: int = 1, maximum: int = MAX_COUNT) -> list[int]:
    """A comma-separated list of sizes (``--lengths 1024,131072``), each checked as :func:`check_size`."""
    parts = [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else list(text)
    if not parts:
        raise CaduceusError(f"{option}: no value given (a comma-separated list of whole numbers)")
    values = []
    for part in parts:
        if isinstance(part, str):
            if not is_ascii_integer(part):
                raise CaduceusError(f"{option}: {part!r} is not a whole number (give a comma-separated list, "
                                    f"each from {minimum:,} to {maximum:,})")
            part = int(part)
        values.append(check_size(option, part, minimum=minimum, maximum=maximum))
    return values
