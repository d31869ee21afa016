"""Sequence logos: per-position, per-base values drawn as stacked letters, written as a PNG.

:func:`plot_logo` draws a (L, K) matrix with logomaker (imported on first use; a missing install is
one error naming ``pip install logomaker``): row i is position ``start + i``, column k the letter
``bases[k]``; positive values stack above zero and negative values below, so a logo of signed
importances shows the bases that push the output up over the axis and those that pull it down
under it. The figure is drawn without pyplot (no global state, no display needed) and the PNG is
written atomically (``io.atomic_file``): an error leaves no file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import CaduceusError
from ...io import atomic_file

MAX_POSITIONS = 1000  # wider logos are unreadable; callers refuse longer sequences before any work


def _logomaker():
    try:
        import logomaker
    except ImportError:
        raise CaduceusError("sequence logos need logomaker, which is not installed: pip install logomaker") from None
    return logomaker


def check_logo_support() -> None:
    """Raise the one-line install hint now (before any work) when logomaker is missing."""
    _logomaker()


def plot_logo(matrix, bases: Sequence[str] | str, title: str, path: str | os.PathLike, *, start: int = 1,
              ylabel: str = "importance", inches_per_base: float = 0.16, height: float = 2.4,
              dpi: int = 150) -> Path:
    """Draw ``matrix`` (L, K) as a sequence logo titled ``title`` and write it to ``path`` (PNG).

    ``bases``: the K letters of the columns (e.g. ``"ACGT"``); ``start``: the position label of row
    0 (1-based positions by default); the figure is ``inches_per_base`` wide per position (at least
    4 inches) and ``height`` inches high. NaN values draw nothing. Returns ``path`` as a Path.
    """
    logomaker = _logomaker()
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    letters = list(bases)
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(letters):
        raise ValueError(f"matrix must be (positions, {len(letters)}) for bases {''.join(letters)}, got {values.shape}")
    if not 1 <= values.shape[0] <= MAX_POSITIONS:
        raise CaduceusError(f"{path}: a logo draws 1 to {MAX_POSITIONS} positions, got {values.shape[0]}")
    frame = pd.DataFrame(np.nan_to_num(values, nan=0.0), columns=letters,
                         index=pd.RangeIndex(start, start + values.shape[0], name="pos"))
    figure = Figure(figsize=(max(4.0, inches_per_base * values.shape[0] + 1.0), height), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    logomaker.Logo(frame, ax=ax, color_scheme="classic", flip_below=False)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel("position", fontsize=8)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")  # genome positions, not an offset
    ax.tick_params(labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    figure.tight_layout()
    with atomic_file(path) as tmp, open(tmp, "wb") as stream:
        figure.savefig(stream, format="png")
    return Path(path)
