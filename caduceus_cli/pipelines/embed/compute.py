"""The model over chunks of regions: batches of equal length, tiles stitched back together.

Sequences in one batch always have the same length (``inference.equal_length_batches``): a
bi-directional model sees padding, so mixed lengths are never padded together.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ... import stopping
from ...genome.windows import central_slice, tile_cores
from ..inference import embed_tokens, equal_length_batches, pool_positions, strand_features, to_device
from .settings import EmbedSettings
from .source import Job


class _Accumulator:
    """Pooled features of a tiled region, built tile by tile from each tile's core positions.

    Works per strand, as ``embed_tokens`` does (pool each strand, then average the strands), so a
    tiled region is pooled like an untiled one: ``first``/``last`` take each strand's own first or
    last base (the forward strand's first position, the reverse strand's last) from its tile."""

    def __init__(self, job: Job, settings: EmbedSettings, tile: int):
        self.pool, self.length = settings.pool, job.length
        self.cores = tile_cores(job.tile_starts, tile, job.length)
        self.remaining = len(job.tile_starts)
        centre = central_slice(self.length, settings.center_width)
        self.center = (centre.start, centre.stop)
        self.value = None
        self.pieces: dict[int, np.ndarray] = {}

    def add(self, k: int, tile_start: int, features) -> None:
        """``features``: (T, d, S) per-position, per-strand features of tile k (a torch tensor)."""
        a, b = self.cores[k]
        if self.pool == "center":
            a, b = max(a, self.center[0]), min(b, self.center[1])
        core = features[a - tile_start:b - tile_start]
        self.remaining -= 1
        if self.pool in ("first", "last"):
            self._pick(a, b, tile_start, features)
            return
        if self.pool == "none":
            self.pieces[k] = core.mean(-1).cpu().numpy()
            return
        if b <= a:
            return
        part = (core.amax(0) if self.pool == "max" else core.double().sum(0)).cpu().numpy()
        if self.value is None:
            self.value = part
        else:
            self.value = np.maximum(self.value, part) if self.pool == "max" else self.value + part

    def _pick(self, a: int, b: int, tile_start: int, features) -> None:
        """Keep each strand's end base that lies in this tile's core [a, b)."""
        if self.value is None:
            self.value = np.zeros(tuple(features.shape[1:]), dtype=np.float32)  # (d, S)
        for strand in range(features.shape[-1]):
            at = 0 if (self.pool == "first") == (strand == 0) else self.length - 1
            if a <= at < b:
                self.value[:, strand] = features[at - tile_start, :, strand].cpu().numpy()

    def result(self) -> np.ndarray:
        if self.pool == "none":
            return np.concatenate([self.pieces[k] for k in sorted(self.pieces)]).astype(np.float32)
        if self.pool in ("max", "first", "last"):
            return self.value.mean(-1).astype(np.float32)
        count = self.center[1] - self.center[0] if self.pool == "center" else self.length
        return (self.value.mean(-1) / count).astype(np.float32)


class Embedder:
    """Runs the model over chunks of jobs: equal-length batches, results back in job order."""

    def __init__(self, model, settings: EmbedSettings):
        self.model, self.settings = model, settings
        self.dim = model.config.d_model

    def _batches(self, items: list[tuple[int, int, np.ndarray]]) -> Iterator[list[tuple[int, int, np.ndarray]]]:
        lengths = np.fromiter((len(item[2]) for item in items), dtype=np.int64, count=len(items))
        for indexes in equal_length_batches(lengths, self.settings.batch_size, self.settings.max_tokens):
            yield [items[i] for i in indexes]

    def embed_chunk(self, jobs: list[Job], progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Embeddings of ``jobs`` in order: (d,) pooled or (L, d) with pool='none', float32."""
        results: list[np.ndarray | None] = [None] * len(jobs)
        items, accumulators = self._work_items(jobs)
        for batch in self._batches(items):
            stopping.check()
            done = self._embed_batch(batch, jobs, accumulators, results)
            if progress is not None and done:
                progress(done)
        return results

    def _work_items(self, jobs: list[Job]) -> tuple[list[tuple[int, int, np.ndarray]], dict[int, _Accumulator]]:
        """(job position, tile number or -1 for a whole region, token ids) for every sequence the
        model must see, and an accumulator for every tiled region."""
        s = self.settings
        items, accumulators = [], {}
        for pos, job in enumerate(jobs):
            if len(job.tile_starts) == 1:
                items.append((pos, -1, job.ids))
                continue
            accumulators[pos] = _Accumulator(job, s, s.max_length)
            for k, t0 in enumerate(job.tile_starts):
                items.append((pos, k, job.ids[t0:t0 + s.max_length]))
        return items, accumulators

    def _embed_batch(self, batch, jobs: list[Job], accumulators: dict[int, _Accumulator],
                     results: list[np.ndarray | None]) -> int:
        """Run one batch; fills ``results`` for the regions it completes and returns their number."""
        s, model = self.settings, self.model
        ids = to_device(np.stack([b[2] for b in batch]).astype(np.int64), model.device)
        if s.context is not None:  # the model reads the context; each row pools its window's positions
            feats = strand_features(model, ids, s.layer, s.conjoin)  # (B, C, d, S)
            for row, (pos, _, _) in enumerate(batch):
                a, b = jobs[pos].pooled
                results[pos] = pool_positions(feats[row:row + 1, a:b], s.pool, s.center_width).mean(-1)[0].cpu().numpy()
            return len(batch)
        if all(k < 0 for _, k, _ in batch):
            out = embed_tokens(model, ids, pool=s.pool, layer=s.layer, conjoin=s.conjoin,
                               center_width=s.center_width).cpu().numpy()
            for row, (pos, _, _) in enumerate(batch):
                results[pos] = out[row]
            return len(batch)
        done = 0
        feats = strand_features(model, ids, s.layer, s.conjoin)  # (B, T, d, S)
        for row, (pos, k, _) in enumerate(batch):
            if k < 0:  # a whole region as long as a tile: pooled as embed_tokens does
                results[pos] = pool_positions(feats[row:row + 1], s.pool, s.center_width).mean(-1)[0].cpu().numpy()
                done += 1
                continue
            acc = accumulators[pos]
            acc.add(k, jobs[pos].tile_starts[k], feats[row])
            if acc.remaining == 0:
                results[pos] = acc.result()
                done += 1
        return done
