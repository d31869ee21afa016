"""Training data: genomes in one coordinate space, the train/validation split, random windows,
the masked-LM corruption and the batches of each step.

- ``GenomeSet``: every contig of the given FASTA files laid end to end in one coordinate space;
  held in memory as uint8 token ids (fast numpy sampling) unless the genomes exceed a memory cap,
  in which case windows are fetched from the indexed files.
- ``split_regions``: training and validation intervals (a split BED, held-out contigs, or by
  default the last 1% of every long contig).
- ``WindowSampler``: random windows, region chosen proportionally to its number of window starts,
  start uniform; windows with more than 10% N are rejected and redrawn.
- ``mask_tokens``: the paper's objective (BERT-style 15% / 80-10-10 on real bases only).
- ``make_batch``: a rank's batch for one step is a pure function of (seed, rank, step), so
  building batches ahead on a thread and resuming need no sampler state.
"""

from __future__ import annotations

import hashlib
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...errors import CaduceusError
from ...genome.fasta import Reference
from ...genome.split_bed import read_split_bed
from ...dna import A, MASK, N, T, encode, reverse_complement_tokens
from ...runtime import env_int
from .settings import (DEFAULT_MAX_IN_MEMORY_BASES, DEFAULT_VALID_TAIL, IGNORE_INDEX, MASK_PROB, MASK_TOKEN_FRACTION,
                       MAX_N_FRACTION, RANDOM_BASE_FRACTION)

log = logging.getLogger("caduceus")

_VALID_KEY = [7919, 7919, 7919]  # rng key of the validation set: never equal to a (rank, step) key


@dataclass
class ContigEntry:
    genome: int
    name: str
    length: int
    offset: int  # start in the concatenated coordinate space


class GenomeSet:
    """All contigs of several FASTA files, end to end in one coordinate space.

    ``windows(starts, L)`` returns (k, L) uint8 token ids. In memory when the total fits
    ``max_in_memory_bases``; otherwise every window is read from the indexed files.
    """

    def __init__(self, paths: list[str], max_in_memory_bases: int | None = None):
        if not paths:
            raise CaduceusError("give at least one genome FASTA file (GENOME.fa[.gz])")
        if max_in_memory_bases is None:
            max_in_memory_bases = env_int("CADUCEUS_PRETRAIN_MAX_BASES", DEFAULT_MAX_IN_MEMORY_BASES)
        self.paths = [str(p) for p in paths]
        self.refs = [Reference(p) for p in self.paths]
        self.contigs: list[ContigEntry] = []
        offset = 0
        for g, ref in enumerate(self.refs):
            if sum(ref.contigs.values()) == 0:
                raise CaduceusError(f"{ref.path}: contains no bases (every sequence is empty)")
            for name, length in ref.contigs.items():
                self.contigs.append(ContigEntry(g, name, length, offset))
                offset += length
        self.total = offset
        self.offsets = np.array([c.offset for c in self.contigs], dtype=np.int64)
        self.tokens: np.ndarray | None = None
        self._pool: ThreadPoolExecutor | None = None
        if self.total <= max_in_memory_bases:
            self._load()
        else:
            log.warning("genomes hold %s bases, more than the in-memory cap of %s: windows are read from "
                        "the files (slower; raise CADUCEUS_PRETRAIN_MAX_BASES if memory allows)",
                        f"{self.total:,}", f"{max_in_memory_bases:,}")

    @classmethod
    def from_arrays(cls, contigs: dict[str, np.ndarray], label: str = "<memory>") -> "GenomeSet":
        """An in-memory genome from token-id arrays (benchmarks, tests)."""
        self = cls.__new__(cls)
        self.paths, self.refs, self.contigs, self._pool = [label], [], [], None
        offset = 0
        for name, ids in contigs.items():
            self.contigs.append(ContigEntry(0, name, len(ids), offset))
            offset += len(ids)
        self.total = offset
        self.offsets = np.array([c.offset for c in self.contigs], dtype=np.int64)
        self.tokens = np.concatenate([np.asarray(a, dtype=np.uint8) for a in contigs.values()])
        return self

    def _load(self) -> None:
        self.tokens = np.empty(self.total, dtype=np.uint8)
        for c in self.contigs:
            seq, _ = self.refs[c.genome].fetch(c.name, 0, c.length)
            self.tokens[c.offset:c.offset + c.length] = encode(seq, source=f"{self.paths[c.genome]}: {c.name}")
        for g, path in enumerate(self.paths):
            lo = min(c.offset for c in self.contigs if c.genome == g)
            hi = max(c.offset + c.length for c in self.contigs if c.genome == g)
            if not np.any(self.tokens[lo:hi] != N):
                raise CaduceusError(f"{path}: every base is N: nothing to train on")

    def _fetch_one(self, start: int, length: int) -> np.ndarray:
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        c = self.contigs[i]
        seq, _ = self.refs[c.genome].fetch(c.name, start - c.offset, start - c.offset + length)
        return encode(seq, source=f"{self.paths[c.genome]}: {c.name}")

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(k,) global starts -> (k, length) uint8 ids. A window never crosses a contig end."""
        if self.tokens is not None:
            return self.tokens[starts[:, None] + np.arange(length, dtype=np.int64)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8)
        rows = list(self._pool.map(lambda s: self._fetch_one(int(s), length), starts))
        return np.stack(rows) if rows else np.empty((0, length), dtype=np.uint8)

    def find(self, name: str) -> list[ContigEntry]:
        """Contigs called ``name`` (or chr1/1, chrM/MT spellings) in any of the genomes."""
        out = []
        for g, ref in enumerate(self.refs):
            real = ref.resolve_contig(name)
            if real is not None:
                out += [c for c in self.contigs if c.genome == g and c.name == real]
        if not self.refs:
            out = [c for c in self.contigs if c.name == name]
        return out

    def fingerprint(self) -> list[dict]:
        """File names and contig lengths: identifies the data without hashing gigabytes."""
        return [{"file": Path(p).name, "contigs": {c.name: c.length for c in self.contigs if c.genome == g}}
                for g, p in enumerate(self.paths)]

    def close(self) -> None:
        for ref in self.refs:
            ref.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def split_bed_regions(path: str, genomes: GenomeSet) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) global [start, end) arrays from a split BED; 'test' rows are not used for pretraining."""
    regions: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    for interval in read_split_bed(path):
        found = genomes.find(interval.contig)
        if not found:
            raise CaduceusError(f"{interval.where}: contig {interval.contig!r} is in none of the genomes")
        c = found[0]
        if interval.end > c.length:
            raise CaduceusError(f"{interval.where}: end {interval.end} is past the end of {c.name} ({c.length} bp)")
        regions[interval.split].append((c.offset + interval.start, c.offset + interval.end))
    as_array = lambda r: np.array(r, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(regions["train"]), as_array(regions["valid"])


def _intervals(pairs) -> np.ndarray:
    return np.array(list(pairs), dtype=np.int64).reshape(-1, 2)


def _held_out_contigs(genomes: GenomeSet, valid_contigs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    held: set[int] = set()
    for name in valid_contigs:
        found = genomes.find(name)
        if not found:
            names = ", ".join(c.name for c in genomes.contigs[:8]) + (" ..." if len(genomes.contigs) > 8 else "")
            raise CaduceusError(f"--valid-contigs: contig {name!r} is in none of the genomes (they have {names})")
        held |= {c.offset for c in found}
    whole = [(c.offset, c.offset + c.length, c.offset in held) for c in genomes.contigs]
    return _intervals((a, b) for a, b, h in whole if not h), _intervals((a, b) for a, b, h in whole if h)


def _contig_tails(genomes: GenomeSet, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The last DEFAULT_VALID_TAIL of every contig at least 100 windows long for validation."""
    train, valid = [], []
    for c in genomes.contigs:
        tail = math.ceil(c.length * DEFAULT_VALID_TAIL) if c.length >= 100 * seq_len else 0
        train.append((c.offset, c.offset + c.length - tail))
        if tail:
            valid.append((c.offset + c.length - tail, c.offset + c.length))
    return _intervals(train), _intervals(valid)


def _longest(regions: np.ndarray) -> int:
    return int((regions[:, 1] - regions[:, 0]).max()) if len(regions) else 0


def split_regions(genomes: GenomeSet, seq_len: int, intervals: str | None = None,
                  valid_contigs: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, valid, description): global [start, end) intervals, each at least ``seq_len`` long.

    Rules: with ``intervals``, the BED's train/valid rows; with ``valid_contigs``, those contigs are
    validation and every other contig is training; otherwise the last 1% of every contig at least
    100 windows long is validation and the rest training (no validation if no contig is that long).
    """
    if intervals:
        (train, valid), how = split_bed_regions(intervals, genomes), f"split BED {Path(intervals).name}"
    elif valid_contigs:
        (train, valid), how = _held_out_contigs(genomes, valid_contigs), f"held-out contigs {', '.join(valid_contigs)}"
    else:
        (train, valid), how = _contig_tails(genomes, seq_len), "the last 1% of every contig of at least 100 windows"
    longest, train = _longest(train), train[train[:, 1] - train[:, 0] >= seq_len]
    if not len(train):
        raise CaduceusError(f"--seq-len {seq_len} is longer than every training region (the longest is "
                            f"{longest:,} bp): use a shorter --seq-len")
    if intervals or valid_contigs:
        longest, valid = _longest(valid), valid[valid[:, 1] - valid[:, 0] >= seq_len]
        if not len(valid):
            raise CaduceusError(f"no validation region holds a {seq_len}-bp window ({how}; the longest is "
                                f"{longest:,} bp): hold out longer contigs or use a shorter --seq-len")
    elif not len(valid):
        log.warning("no contig is at least %s bp long, so there is no validation set: pass --valid-contigs",
                    f"{100 * seq_len:,}")
    return train, valid, how


def regions_digest(train: np.ndarray, valid: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(train).tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(valid).tobytes())
    return h.hexdigest()[:16]


class WindowSampler:
    """Random ``seq_len`` windows inside ``regions``: a region is chosen with probability
    proportional to its number of window starts (so every start in the data is equally likely),
    the start uniformly; windows with more than ``max_n_fraction`` N are redrawn."""

    def __init__(self, genomes: GenomeSet, regions: np.ndarray, seq_len: int,
                 max_n_fraction: float = MAX_N_FRACTION):
        self.genomes, self.seq_len = genomes, seq_len
        self.starts = regions[:, 0].astype(np.int64)
        self.counts = (regions[:, 1] - regions[:, 0] - seq_len + 1).astype(np.int64)
        if not len(self.counts) or self.counts.min() <= 0:
            raise ValueError("every region must hold at least one window")
        self.cdf = np.cumsum(self.counts) / self.counts.sum()
        self.max_n = int(math.floor(max_n_fraction * seq_len))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, seq_len) uint8 token ids."""
        kept, have, drawn = [], 0, 0
        while have < n:
            k = (n - have) + (n - have) // 4 + 4
            region = np.minimum(np.searchsorted(self.cdf, rng.random(k), side="right"), len(self.cdf) - 1)
            starts = self.starts[region] + (rng.random(k) * self.counts[region]).astype(np.int64)
            w = self.genomes.windows(starts, self.seq_len)
            ok = np.count_nonzero(w == N, axis=1) <= self.max_n
            kept.append(w[ok])
            have += int(ok.sum())
            drawn += k
            if have < n and drawn > 1000 * n + 10_000:
                raise CaduceusError(
                    f"fewer than 0.1% of random {self.seq_len}-bp windows have at most "
                    f"{MAX_N_FRACTION:.0%} N: the data is (almost) all N")
        return np.concatenate(kept)[:n]


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, mask_prob: float = MASK_PROB) -> tuple[np.ndarray, np.ndarray]:
    """The masked-LM corruption: (inputs uint8 (B, L), labels int64 (B, L)).

    Each real base (A/C/G/T; never N) is chosen with probability ``mask_prob``; a chosen position
    becomes [MASK] with p 0.8, a uniformly random base with p 0.1 (possibly its own), and stays
    unchanged with p 0.1. Labels hold the original base at chosen positions, IGNORE_INDEX elsewhere.
    """
    is_base = (ids >= A) & (ids <= T)
    chosen = (rng.random(ids.shape, dtype=np.float32) < mask_prob) & is_base
    action = rng.random(ids.shape, dtype=np.float32)
    inputs = ids.copy()
    inputs[chosen & (action < MASK_TOKEN_FRACTION)] = MASK
    to_random = chosen & (action >= MASK_TOKEN_FRACTION) & (action < MASK_TOKEN_FRACTION + RANDOM_BASE_FRACTION)
    inputs[to_random] = rng.integers(A, T + 1, size=int(to_random.sum()), dtype=np.uint8)
    labels = np.where(chosen, ids.astype(np.int64), IGNORE_INDEX)
    return inputs, labels


def reverse_complement_rows(ids: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Reverse-complement each row with probability ``prob`` (RC augmentation)."""
    flip = rng.random(len(ids)) < prob
    if flip.any():
        ids = ids.copy()
        ids[flip] = reverse_complement_tokens(ids[flip])
    return ids


def make_batch(sampler: WindowSampler, seed: int, rank: int, step: int, n: int,
               rc_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rank ``rank``'s ``n`` masked windows for ``step``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, rank, step])
    ids = sampler.sample(rng, n)
    if rc_prob:
        ids = reverse_complement_rows(ids, rng, rc_prob)
    return mask_tokens(ids, rng)


def validation_set(sampler: WindowSampler, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed set of ``n`` masked validation windows (no RC augmentation)."""
    rng = np.random.default_rng([seed, *_VALID_KEY])
    return mask_tokens(sampler.sample(rng, n), rng)


def unigram_baseline(labels: np.ndarray) -> tuple[str, float]:
    """(base, accuracy) of always predicting the most frequent base among the masked targets."""
    counts = np.array([np.count_nonzero(labels == b) for b in range(A, T + 1)])
    total = counts.sum()
    best = int(counts.argmax())
    return "ACGT"[best], float(counts[best] / total) if total else float("nan")


def batch_stream(sampler: WindowSampler, seed: int, rank: int, n: int, first: int, last: int,
                 rc_prob: float = 0.0, pin: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, int]]:
    """(step, inputs, labels, number of targets) for steps ``first..last-1``; run it on a background
    thread with runtime.prefetch (numpy releases the GIL). ``pin``: page-locked tensors for CUDA."""
    for step in range(first, last):
        inputs, labels = make_batch(sampler, seed, rank, step, n, rc_prob)
        inputs, labels = torch.from_numpy(inputs), torch.from_numpy(labels)
        if pin:
            inputs, labels = inputs.pin_memory(), labels.pin_memory()
        yield step, inputs, labels, int((labels != IGNORE_INDEX).sum())
