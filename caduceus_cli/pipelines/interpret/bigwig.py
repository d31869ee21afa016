"""Per-base bigWig tracks, written with pyBigWig (imported on first use: a missing install is one
line naming ``pip install pyBigWig``).

A bigWig holds no free text, so what a track is (the score, the statistic, the model and settings,
the command) goes to a provenance file beside it, ``FILE.json``. Both are written under temporary
names and renamed when complete (``io.atomic_file``): an error or an interrupt leaves neither.
Positions without a value (NaN: an N in the reference) are left out of the track.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import CaduceusError
from ...io import atomic_file, check_writable, write_json


def _pybigwig():
    try:
        import pyBigWig
    except ImportError:
        raise CaduceusError("writing bigWig needs pyBigWig, which is not installed: pip install pyBigWig") from None
    return pyBigWig


def check_bigwig_support(path: str | os.PathLike) -> None:
    """Refuse now (before any work) a bigWig that cannot be written: pyBigWig missing, or the path."""
    _pybigwig()
    check_writable(path)
    check_writable(provenance_path(path))


def provenance_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def finite_runs(values: np.ndarray) -> Iterator[tuple[int, int]]:
    """[a, b) of every run of finite values of a 1-D array."""
    finite = np.isfinite(values).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], finite, [0]])))
    return zip(edges[0::2].tolist(), edges[1::2].tolist())


class BigWigWriter:
    """Entries of one track, in the order of ``contigs`` and by position within a contig."""

    def __init__(self, handle):
        self._handle = handle
        self.bases = 0

    def add(self, contig: str, start: int, values: np.ndarray) -> None:
        """One value per base from ``start`` (0-based) on; NaN values are left out."""
        values = np.asarray(values, dtype=np.float64)
        for a, b in finite_runs(values):
            self._handle.addEntries(contig, start + a, values=values[a:b].tolist(), span=1, step=1)
            self.bases += b - a


@contextlib.contextmanager
def bigwig(path: str | os.PathLike, contigs: list[tuple[str, int]], provenance: dict) -> Iterator[BigWigWriter]:
    """A :class:`BigWigWriter` for ``path``, whose header lists ``contigs`` (name, length); the
    track and its provenance file (``provenance`` as JSON) appear when the block ends without error."""
    bw = _pybigwig()
    with atomic_file(path) as tmp:
        handle = bw.open(str(tmp), "w")
        if handle is None:
            raise CaduceusError(f"{path}: pyBigWig cannot create the file")
        try:
            handle.addHeader([(c, int(n)) for c, n in contigs], maxZooms=10)
            writer = BigWigWriter(handle)
            yield writer
        finally:
            handle.close()
        write_json(provenance_path(path), {**provenance, "bases_with_values": writer.bases})
