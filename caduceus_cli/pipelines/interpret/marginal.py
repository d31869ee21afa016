"""The wild-type marginal: the masked-LM's logits at every position of unmasked tiles of a genome.

One pass over a tile gives the model's distribution over the bases at each of its positions, i.e.
a score for every possible SNV in it (Meier et al. 2021, ESM-1v: log p(alt) - log p(ref) read
without masking). Tiles lie on a fixed grid per contig, so that a position's value depends only on
the position, the window and the flank, never on which other positions are scored with it:

    core = window - 2 * flank
    tile k reads [k * core - flank, k * core - flank + window) and scores [k * core, (k + 1) * core)

Every scored position has at least ``flank`` bases of context on each side (N past contig ends,
as in every window of this package). ``ism --method wt-marginal``, ``track`` and
``score-variants --llr-method wt-marginal`` all read the same grid, so they give one position the
same value. Strands: both, through ``inference.position_logits`` (PS one pass, Ph forward and
reverse-complement passes averaged).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...dna import A, N, encode
from ...errors import CaduceusError
from ...genome.windows import fetch_window
from .. import inference

BASE_COLUMNS = "ACGTN"  # the columns of the logits returned here: token ids A..N (7..11)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``window`` bp whose central ``core`` positions partition a contig."""

    window: int
    flank: int

    def __post_init__(self):
        if self.flank < 0 or self.window - 2 * self.flank < 1:
            raise CaduceusError(f"--flank {self.flank} leaves no position to score in a window of {self.window} bp: "
                                f"give a flank below {(self.window + 1) // 2}")

    @property
    def core(self) -> int:
        return self.window - 2 * self.flank

    def tile_of(self, pos0: int) -> int:
        return pos0 // self.core

    def tiles_over(self, start: int, end: int) -> range:
        """The tiles whose cores cover [start, end) (0-based, half-open; empty for an empty range)."""
        if end <= start:
            return range(0)
        return range(start // self.core, (end - 1) // self.core + 1)

    def input_bounds(self, k: int) -> tuple[int, int]:
        start = k * self.core - self.flank
        return start, start + self.window

    def core_start(self, k: int) -> int:
        return k * self.core


def tile_logits(model, reference, contig: str, tiles: Sequence[int], grid: TileGrid, batch_size: int, *,
                runtime=None, progress: Callable[..., None] | None = None) -> np.ndarray:
    """(n, core, 5) float32 logits of A, C, G, T, N at the core positions of tiles ``tiles`` of
    ``contig`` (the reference's spelling), both strands combined, in the order given."""
    import torch

    first, last = grid.flank, grid.flank + grid.core
    ids = []
    for k in tiles:
        start, end = grid.input_bounds(k)
        sequence, _ = fetch_window(reference, contig, start, end)
        ids.append(encode(sequence, source=f"{reference.path}: {contig}:{max(start, 0) + 1}"))

    def compute(x: torch.Tensor) -> torch.Tensor:
        logits = inference.position_logits(model, x)[:, first:last, A:N + 1]
        return logits.reshape(len(x), -1)

    if not ids:
        return np.zeros((0, grid.core, len(BASE_COLUMNS)), dtype=np.float32)
    out = inference.batched(ids, batch_size, compute, width=grid.core * len(BASE_COLUMNS), device=model.device,
                            runtime=runtime, progress=progress)
    return out.reshape(len(ids), grid.core, len(BASE_COLUMNS))


def interval_logits(model, reference, contig: str, start: int, end: int, grid: TileGrid, batch_size: int,
                    **kwargs) -> np.ndarray:
    """(end - start, 5) float32 logits of A, C, G, T, N at every position of [start, end) of ``contig``."""
    tiles = grid.tiles_over(start, end)
    if not tiles:
        return np.zeros((0, len(BASE_COLUMNS)), dtype=np.float32)
    logits = tile_logits(model, reference, contig, list(tiles), grid, batch_size, **kwargs)
    offset = start - grid.core_start(tiles[0])
    return logits.reshape(-1, len(BASE_COLUMNS))[offset:offset + end - start]


class TileCache(OrderedDict):
    """The logits of the last ``size`` tiles read, by (contig, tile): records scored in groups share
    the tiles at the groups' edges (and repeated sites of unsorted input) without a second pass."""

    def __init__(self, size: int = 64):
        super().__init__()
        self.size = size

    def keep(self, key: tuple[str, int], logits: np.ndarray) -> None:
        self[key] = logits
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def site_logits(model, reference, sites: Sequence[tuple[str, int]], grid: TileGrid, batch_size: int,
                cache: TileCache | None = None) -> np.ndarray:
    """(n, 5) float32 logits of A, C, G, T, N at each (contig, 0-based position) of ``sites``, in the
    order given: one pass per tile that holds at least one site (sites may come in any order), none
    for a tile ``cache`` holds (the tiles read here are added to it)."""
    out = np.zeros((len(sites), len(BASE_COLUMNS)), dtype=np.float32)
    by_contig: dict[str, dict[int, list[int]]] = {}
    for row, (contig, pos0) in enumerate(sites):
        by_contig.setdefault(contig, {}).setdefault(grid.tile_of(pos0), []).append(row)
    cache = TileCache() if cache is None else cache
    for contig, tiles in by_contig.items():
        got = {k: cache[(contig, k)] for k in tiles if (contig, k) in cache}
        missing = sorted(k for k in tiles if k not in got)
        for k, logits in zip(missing, tile_logits(model, reference, contig, missing, grid, batch_size)):
            got[k] = logits
            cache.keep((contig, k), logits)
        for k, rows in tiles.items():
            offsets = np.array([sites[r][1] for r in rows]) - grid.core_start(k)
            out[rows] = got[k][offsets]
    return out


def base_log_probs(logits: np.ndarray) -> np.ndarray:
    """(..., 4) log-probabilities of A, C, G, T (natural log), renormalised over the four bases, from
    (..., 5) logits of A, C, G, T, N."""
    acgt = logits[..., :4].astype(np.float64)
    top = acgt.max(-1, keepdims=True)
    return (acgt - top - np.log(np.exp(acgt - top).sum(-1, keepdims=True))).astype(np.float32)
