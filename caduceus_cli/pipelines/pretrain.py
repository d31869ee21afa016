"""Masked-LM pretraining on genomes: window sampler, masking, training loop, checkpoints, DDP.

The pieces, top to bottom:
- ``GenomeSet``: every contig of the given FASTA files laid end to end in one coordinate space;
  held in memory as uint8 token ids (fast numpy sampling) unless the genomes exceed a memory cap,
  in which case windows are fetched from the indexed files.
- ``split_regions``: training and validation intervals (a split BED, held-out contigs, or by
  default the last 1% of every long contig).
- ``WindowSampler``: random windows, region chosen proportionally to its number of window starts,
  start uniform; windows with more than 10% N are rejected and redrawn.
- ``mask_tokens``: the paper's objective (BERT-style 15% / 80-10-10 on real bases only).
- ``make_batch``: a rank's batch for one step is a pure function of (seed, rank, step), so
  prefetching in a thread and resuming need no sampler state.
- ``Trainer``: AdamW, warmup + cosine, clipping, bf16 autocast on CUDA, gradient accumulation, DDP.
- ``pretrain``: the run folder (run.json, metrics.jsonl, checkpoint-STEP/, latest, final/).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._version import __version__
from ..errors import CaduceusError
from ..genome.fasta import Reference
from ..model.caduceus import CaduceusForMaskedLM
from ..model.checkpoint import save_model
from ..model.config import CaduceusConfig
from ..model.tokenizer import A, MASK, N, T, encode
from ..runtime import env_int
from .optim import lr_at, parameter_groups  # noqa: F401 - shared with fine-tuning; tests use them here

log = logging.getLogger("caduceus")

# -- the objective, as in the Caduceus / BERT recipe -------------------------------------------
MASK_PROB = 0.15          # fraction of real-base positions chosen as targets
MASK_TOKEN_FRACTION = 0.8  # of the chosen: replaced by [MASK]
RANDOM_BASE_FRACTION = 0.1  # of the chosen: replaced by a uniformly random base (may equal the original)
MAX_N_FRACTION = 0.10     # windows with more than 10% N are rejected and redrawn
RC_AUGMENT_PROB = 0.5     # Caduceus-Ph only: reverse-complement a window with this probability
IGNORE_INDEX = -100
ADAM_BETAS = (0.95, 0.9)  # the Caduceus pretraining recipe
GRAD_CLIP = 1.0
DEFAULT_VALID_TAIL = 0.01  # default split: the last 1% of every contig >= 100 windows long
# Genomes up to this many bases are read into memory (1 byte per base per process).
DEFAULT_MAX_IN_MEMORY_BASES = 4_000_000_000  # override with CADUCEUS_PRETRAIN_MAX_BASES (e.g. 8G)

_COMPLEMENT_IDS = np.arange(256, dtype=np.uint8)
_COMPLEMENT_IDS[[A, 8, 9, T]] = [T, 9, 8, A]
_VALID_KEY = [7919, 7919, 7919]  # rng key of the validation set: never equal to a (rank, step) key

STATE_FILE = "trainer_state.pt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LATEST_FILE = "latest"
FINAL_DIR = "final"


# -- settings -----------------------------------------------------------------------------------
@dataclass
class PretrainSettings:
    """Everything that defines a run. ``IDENTITY`` fields must match when a run is resumed."""

    genomes: list[str] = field(default_factory=list)
    variant: str = "ps"
    d_model: int = 128
    n_layer: int = 4
    seq_len: int = 1024
    batch_size: int = 256
    steps: int = 10_000
    lr: float = 8e-3
    warmup: int | None = None  # None: 5% of steps
    weight_decay: float = 0.1
    seed: int = 0
    intervals: str | None = None
    valid_contigs: list[str] | None = None
    valid_windows: int = 256
    # Free to change between a run and its resumption:
    micro_batch_size: int | None = None
    checkpoint_every: int = 1000
    valid_every: int = 500
    log_every: int = 50
    keep_checkpoints: int = 2
    max_time: float | None = None
    device: str | None = None
    backend: str = "auto"

    IDENTITY = ("variant", "d_model", "n_layer", "seq_len", "batch_size", "steps", "lr", "warmup",
                "weight_decay", "seed", "valid_windows")

    def resolved_warmup(self) -> int:
        return max(0, round(0.05 * self.steps)) if self.warmup is None else self.warmup

    def validate(self) -> None:
        if self.variant not in ("ps", "ph"):
            raise CaduceusError(f"--variant must be ps or ph, got {self.variant!r}")
        for name in ("d_model", "n_layer", "seq_len", "batch_size", "steps", "valid_windows",
                     "checkpoint_every", "valid_every", "log_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise CaduceusError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise CaduceusError(f"--micro-batch-size must be a positive integer, got {self.micro_batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CaduceusError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise CaduceusError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise CaduceusError(f"--warmup must be between 0 and --steps ({self.steps}), got {self.warmup}")
        if self.seed < 0:
            raise CaduceusError(f"--seed must be >= 0, got {self.seed}")
        if self.max_time is not None and self.max_time <= 0:
            raise CaduceusError(f"--max-time must be positive, got {self.max_time}")
        if self.intervals and self.valid_contigs:
            raise CaduceusError("give either --intervals (a split BED) or --valid-contigs, not both")

    def identity(self) -> dict:
        out = {k: getattr(self, k) for k in self.IDENTITY}
        out["warmup"] = self.resolved_warmup()
        return out


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from '420', '7m', '1h30m', '6m30s', '2.5h'."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise CaduceusError(f"--max-time: cannot read {text!r} as a duration (examples: 420, 7m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# -- genomes ------------------------------------------------------------------------------------
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


# -- the split ----------------------------------------------------------------------------------
SPLITS = ("train", "valid", "test")


def read_split_bed(path: str, genomes: GenomeSet) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) global [start, end) arrays from a BED with a split column (chrom start end split),
    as in the HyenaDNA / Caduceus hg38 ``sequences.bed``. 'test' rows are not used for pretraining."""
    regions: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    p = Path(path)
    if not p.is_file():
        raise CaduceusError(f"{p}: no such BED file")
    with open(p, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if len(cols) < 4:
                raise CaduceusError(f"{p}: line {lineno}: expected 4 columns (chrom start end split), got "
                                    f"{len(cols)}: {line.strip()[:60]!r}")
            chrom, start, end, split = cols[0], cols[1], cols[2], cols[3].strip().lower()
            if lineno == 1 and not start.isdigit():
                continue  # a header line
            if split not in SPLITS:
                raise CaduceusError(f"{p}: line {lineno}: split {cols[3]!r} is not train, valid or test")
            try:
                s, e = int(start), int(end)
            except ValueError:
                raise CaduceusError(f"{p}: line {lineno}: start/end {start!r} {end!r} are not integers") from None
            if s < 0 or e <= s:
                raise CaduceusError(f"{p}: line {lineno}: interval {s}-{e} is empty or negative")
            found = genomes.find(chrom)
            if not found:
                raise CaduceusError(f"{p}: line {lineno}: contig {chrom!r} is in none of the genomes")
            c = found[0]
            if e > c.length:
                raise CaduceusError(f"{p}: line {lineno}: end {e} is past the end of {c.name} ({c.length} bp)")
            regions[split].append((c.offset + s, c.offset + e))
    as_array = lambda r: np.array(r, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(regions["train"]), as_array(regions["valid"])


def split_regions(genomes: GenomeSet, seq_len: int, intervals: str | None = None,
                  valid_contigs: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, valid, description): global [start, end) intervals, each at least ``seq_len`` long.

    Rules: with ``intervals``, the BED's train/valid rows; with ``valid_contigs``, those contigs are
    validation and every other contig is training; otherwise the last 1% of every contig at least
    100 windows long is validation and the rest training (no validation if no contig is that long).
    """
    if intervals:
        train, valid = read_split_bed(intervals, genomes)
        how = f"split BED {Path(intervals).name}"
    elif valid_contigs:
        held: set[int] = set()
        for name in valid_contigs:
            found = genomes.find(name)
            if not found:
                names = ", ".join(c.name for c in genomes.contigs[:8]) + (" ..." if len(genomes.contigs) > 8 else "")
                raise CaduceusError(f"--valid-contigs: contig {name!r} is in none of the genomes (they have {names})")
            held |= {c.offset for c in found}
        train = np.array([(c.offset, c.offset + c.length) for c in genomes.contigs if c.offset not in held],
                         dtype=np.int64).reshape(-1, 2)
        valid = np.array([(c.offset, c.offset + c.length) for c in genomes.contigs if c.offset in held],
                         dtype=np.int64).reshape(-1, 2)
        how = f"held-out contigs {', '.join(valid_contigs)}"
    else:
        train_l, valid_l = [], []
        for c in genomes.contigs:
            tail = math.ceil(c.length * DEFAULT_VALID_TAIL) if c.length >= 100 * seq_len else 0
            train_l.append((c.offset, c.offset + c.length - tail))
            if tail:
                valid_l.append((c.offset + c.length - tail, c.offset + c.length))
        train = np.array(train_l, dtype=np.int64).reshape(-1, 2)
        valid = np.array(valid_l, dtype=np.int64).reshape(-1, 2)
        how = "the last 1% of every contig of at least 100 windows"
    longest = int((train[:, 1] - train[:, 0]).max()) if len(train) else 0
    train = train[train[:, 1] - train[:, 0] >= seq_len]
    if not len(train):
        raise CaduceusError(f"--seq-len {seq_len} is longer than every training region (the longest is "
                            f"{longest:,} bp): use a shorter --seq-len")
    if (intervals or valid_contigs):
        vlongest = int((valid[:, 1] - valid[:, 0]).max()) if len(valid) else 0
        valid = valid[valid[:, 1] - valid[:, 0] >= seq_len]
        if not len(valid):
            raise CaduceusError(f"no validation region holds a {seq_len}-bp window ({how}; the longest is "
                                f"{vlongest:,} bp): hold out longer contigs or use a shorter --seq-len")
    elif not len(valid):
        log.warning("no contig is at least %s bp long, so there is no validation set: pass --valid-contigs",
                    f"{100 * seq_len:,}")
    return train, valid, how


def regions_digest(train: np.ndarray, valid: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(train).tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(valid).tobytes())
    return h.hexdigest()[:16]


# -- sampling and masking -----------------------------------------------------------------------
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
        ids[flip] = _COMPLEMENT_IDS[ids[flip, ::-1]]
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


class BatchPrefetcher:
    """Builds the batches of steps ``first..last-1`` in a background thread (numpy releases the GIL)."""

    def __init__(self, sampler: WindowSampler, seed: int, rank: int, n: int, first: int, last: int,
                 rc_prob: float = 0.0, pin: bool = False, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._args = (sampler, seed, rank, n, rc_prob, pin)
        self._thread = threading.Thread(target=self._run, args=(first, last), daemon=True, name="caduceus-batches")
        self._thread.start()

    def _run(self, first: int, last: int) -> None:
        sampler, seed, rank, n, rc_prob, pin = self._args
        try:
            for step in range(first, last):
                inputs, labels = make_batch(sampler, seed, rank, step, n, rc_prob)
                item = (step, torch.from_numpy(inputs), torch.from_numpy(labels), int((labels != IGNORE_INDEX).sum()))
                if pin:
                    item = (item[0], item[1].pin_memory(), item[2].pin_memory(), item[3])
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._queue.put(e)

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- distributed --------------------------------------------------------------------------------
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False


def setup_distributed(device: str | None) -> Distributed:
    """Read torchrun's environment; ``init_process_group`` (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CaduceusError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if world > 1:
            dev = torch.device("cuda", local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    out = Distributed(rank, world, local_rank, dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        out.initialised = True
    return out


# -- model and optimisation ---------------------------------------------------------------------
def new_model(variant: str, d_model: int, n_layer: int, seq_len: int, seed: int) -> CaduceusForMaskedLM:
    """A freshly initialised model; the same ``seed`` gives the same weights on every rank."""
    config = CaduceusConfig.small(variant, d_model=d_model, n_layer=n_layer)
    config.extra["max_seq_len"] = seq_len
    torch.manual_seed(seed)
    return CaduceusForMaskedLM(config)


# Tokens per forward pass (both strands count for PS) when --micro-batch-size is not given.
MICRO_BATCH_TOKENS = 131072


def default_micro_batch(local_batch: int, seq_len: int, variant: str) -> int:
    """The largest divisor of ``local_batch`` whose forward pass holds at most MICRO_BATCH_TOKENS
    tokens (a PS window counts twice: it runs both strands). On the H200 this was the fastest
    setting for both variants (docs/pretrain.md), and it bounds activation memory on any device."""
    per_window = seq_len * (2 if variant == "ps" else 1)
    cap = max(1, min(local_batch, MICRO_BATCH_TOKENS // per_window))
    return max(d for d in range(1, cap + 1) if local_batch % d == 0)


class _Logits(nn.Module):
    """The masked-LM model returning a plain tensor (what DDP wraps best): the logits at the flat
    positions ``targets`` (indices into B*L) only, since the loss reads nothing else."""

    def __init__(self, model: CaduceusForMaskedLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids, compute_logits=False).last_hidden_state
        return self.model.logits(hidden.flatten(0, 1)[targets])


class Trainer:
    """One optimisation step per call to ``train_step``: gradient accumulation over micro-batches,
    loss averaged over every masked target of the global batch, DDP across ranks."""

    def __init__(self, model: CaduceusForMaskedLM, *, lr: float, warmup: int, steps: int, weight_decay: float,
                 micro_batch_size: int, dist: Distributed | None = None, backend: str = "auto"):
        self.dist = dist or Distributed()
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.model.backend = backend
        self.model.train()
        self.lr, self.warmup, self.steps = lr, warmup, steps
        self.micro_batch_size = micro_batch_size
        self.net: nn.Module = _Logits(self.model)
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, weight_decay), lr=lr, betas=ADAM_BETAS,
                                           eps=1e-8, **fused)
        self.step = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # since the last report
        self.target_count: float | torch.Tensor = 0.0  # targets since the last report, all ranks
        self.last_lr = 0.0

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor, n_targets: int | None = None) -> None:
        """inputs: (n, L) uint8 token ids, labels: (n, L) int64 (IGNORE_INDEX where not a target),
        this rank's share of the global batch; ``n_targets`` is the number of targets in it."""
        lr = lr_at(self.step, self.lr, self.warmup, self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if n_targets is None:
            n_targets = int((labels != IGNORE_INDEX).sum())
        if self.dist.world_size > 1:
            # The loss is a mean over every target of the global batch; the count is reduced on the
            # device without a host sync, so the CPU keeps queueing work ahead of the GPU.
            import torch.distributed as dist

            global_targets = torch.tensor(float(n_targets), dtype=torch.float64, device=self.device)
            dist.all_reduce(global_targets)
            scale = (self.dist.world_size / global_targets.clamp(min=1)).float()  # DDP averages over ranks
        else:
            global_targets = float(n_targets)
            scale = 1.0 / max(1, n_targets)
        # Each micro-batch's target positions and their labels, found on the host (labels arrive
        # there) and copied from pinned memory, so that no step waits for the device.
        pin = self.device.type == "cuda"
        targets = []
        for lab in labels.split(self.micro_batch_size):
            where = torch.nonzero(lab.flatten() != IGNORE_INDEX).squeeze(1)
            pair = (where, lab.flatten()[where])
            targets.append([(t.pin_memory() if pin else t).to(self.device, non_blocking=True) for t in pair])
        inputs = inputs.to(self.device, non_blocking=True)
        chunks = list(zip(inputs.split(self.micro_batch_size), targets))
        for i, (ids, (where, lab)) in enumerate(chunks):
            sync = i == len(chunks) - 1 or self.dist.world_size == 1
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            with ctx:
                with self.autocast():
                    logits = self.net(ids.long(), where)
                loss = F.cross_entropy(logits.float(), lab, reduction="sum")
                (loss * scale).backward()
            self.loss_sum += loss.detach().double()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.target_count += global_targets
        self.last_lr = lr
        self.step += 1

    def take_train_loss(self) -> float:
        """Mean loss per masked target over all ranks since the previous call (syncs the device)."""
        total = self.dist.all_reduce([float(self.loss_sum)])[0]
        count = float(self.target_count)  # already summed over ranks
        mean = total / count if count else float("nan")
        self.loss_sum.zero_()
        self.target_count = 0.0
        return mean

    @torch.no_grad()
    def evaluate(self, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(loss per target, masked accuracy) on a validation set; each rank takes every world_size-th row.
        Accuracy is the argmax over the whole vocabulary at the masked positions."""
        rows = np.arange(self.dist.rank, len(inputs), self.dist.world_size)
        loss_sum = correct = count = 0.0
        self.model.eval()
        for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / self.micro_batch_size))):
            if not len(chunk):
                continue
            ids = torch.from_numpy(inputs[chunk]).to(self.device).long()
            lab = torch.from_numpy(labels[chunk]).to(self.device)
            with self.autocast():
                logits = self.model(ids).logits
            logits = logits.float()
            target = lab != IGNORE_INDEX
            loss_sum += float(F.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=IGNORE_INDEX,
                                              reduction="sum"))
            correct += float(((logits.argmax(-1) == lab) & target).sum())
            count += float(target.sum())
        self.model.train()
        loss_sum, correct, count = self.dist.all_reduce([loss_sum, correct, count])
        return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Optimiser, schedule position, RNG and loss accumulators: tensors, numbers, strings, dicts only."""
        state = {
            "format": "caduceus-cli pretrain trainer state 1",
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": "linear warmup + cosine", "lr": self.lr, "warmup": self.warmup,
                          "steps": self.steps, "next_step": self.step},
            "torch_rng": torch.get_rng_state(),
            "loss_sum": float(self.loss_sum),
            "target_count": float(self.target_count),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.loss_sum.fill_(float(state["loss_sum"]))
        self.target_count = float(state["target_count"])


# -- the run folder -----------------------------------------------------------------------------
def _prepare_out_dir(out: Path) -> None:
    """Create the run folder and prove it is writable, before any work."""
    if out.exists() and not out.is_dir():
        raise CaduceusError(f"{out}: exists and is not a folder; give a folder for -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CaduceusError(f"{out}: the run folder cannot be written ({e.strerror or e})") from None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(m.group(1)) if m and (path / STATE_FILE).is_file() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST_FILE
    if pointer.is_file():
        candidate = run_dir / pointer.read_text().strip()
        if _checkpoint_step(candidate) is not None:
            return candidate
    found = [(s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None]
    return max(found)[1] if found else None


def save_checkpoint(run_dir: Path, model: CaduceusForMaskedLM, trainer_state: dict, keep: int) -> Path:
    """checkpoint-STEP/ (config.json + model.safetensors + trainer_state.pt), written in a temporary
    folder and renamed; then ``latest`` is pointed at it and older checkpoints beyond ``keep`` go."""
    step = trainer_state["step"]
    final = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    torch.save(trainer_state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = run_dir / f".{LATEST_FILE}.{os.getpid()}.tmp"
    pointer_tmp.write_text(final.name + "\n")
    os.replace(pointer_tmp, run_dir / LATEST_FILE)
    old = sorted((s, p) for p in run_dir.glob("checkpoint-*") if (s := _checkpoint_step(p)) is not None)
    for s, p in old[:-keep]:
        if p != final:
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_trainer_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files
        raise CaduceusError(f"{path}: cannot be read as a trainer state ({e.__class__.__name__})") from None
    if not isinstance(state, dict) or "step" not in state or "optimizer" not in state:
        raise CaduceusError(f"{path}: not a caduceus-cli trainer state")
    return state


def save_final(run_dir: Path, model: CaduceusForMaskedLM, training: dict) -> Path:
    """final/: config.json (with max_seq_len and a 'training' record) + model.safetensors, ready to be
    copied as-is into caduceus_cli/data/default_model/."""
    model.config.extra["training"] = training
    final = run_dir / FINAL_DIR
    tmp = run_dir / f".{FINAL_DIR}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    old = run_dir / f".{FINAL_DIR}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _resolve_settings(options: dict, saved: dict | None, run_dir: Path) -> PretrainSettings:
    """Options given now (None = not given) on top of the saved run (when resuming) or the defaults.
    A given identity option that differs from the saved run is refused."""
    defaults = PretrainSettings()
    values = {}
    saved_settings = (saved or {}).get("settings", {})
    for f in fields(PretrainSettings):
        given = options.get(f.name)
        if saved is not None and f.name in PretrainSettings.IDENTITY:
            before = saved_settings.get(f.name)
            if given is not None and before is not None and given != before:
                raise CaduceusError(
                    f"{run_dir}: was trained with --{f.name.replace('_', '-')} {before}, not {given}: a resumed "
                    "run keeps its configuration; start a new run folder to change it")
            values[f.name] = before if given is None else given
        elif given is not None:
            values[f.name] = given
        elif saved is not None and f.name in saved_settings and f.name not in ("device", "max_time"):
            values[f.name] = saved_settings[f.name]
        else:
            values[f.name] = getattr(defaults, f.name)
    settings = PretrainSettings(**values)
    settings.validate()
    return settings


# -- the whole run ------------------------------------------------------------------------------
ProgressFn = Callable[..., None]


def pretrain(genomes: list[str] | None = None, out_dir: str | None = None, *, resume: str | None = None,
             progress: ProgressFn | None = None, set_total: Callable[[int], None] | None = None,
             command: str | None = None, max_in_memory_bases: int | None = None, **options) -> dict:
    """Pretrain a Caduceus masked-LM on ``genomes`` into the run folder ``out_dir`` (or continue the
    run in ``resume``). ``options`` are ``PretrainSettings`` fields; None means "not given".

    Returns the summary (also written to RUN_DIR/summary.json by rank 0).
    """
    started = time.time()
    if resume and out_dir and Path(out_dir).resolve() != Path(resume).resolve():
        raise CaduceusError(f"--resume {resume} and -o {out_dir} name different folders: give one of them")
    if not resume and not out_dir:
        raise CaduceusError("give the run folder with -o RUN_DIR (or --resume RUN_DIR to continue a run)")
    run_dir = Path(resume or out_dir)
    saved = None
    if resume:
        if not (run_dir / RUN_FILE).is_file():
            raise CaduceusError(f"{run_dir}: not a pretraining run folder (no {RUN_FILE}); nothing to resume")
        try:
            saved = json.loads((run_dir / RUN_FILE).read_text())
        except json.JSONDecodeError as e:
            raise CaduceusError(f"{run_dir / RUN_FILE}: line {e.lineno}: not valid JSON ({e.msg})") from None
    elif (run_dir / RUN_FILE).is_file():
        raise CaduceusError(f"{run_dir}: already holds a pretraining run: continue it with --resume {run_dir} "
                            "or choose another -o folder")
    options = {k: v for k, v in options.items() if k != "genomes"}
    if genomes:
        options["genomes"] = [str(Path(g).resolve()) if g != "-" else g for g in genomes]
    if "valid_contigs" in options and options["valid_contigs"] is not None:
        options["valid_contigs"] = list(options["valid_contigs"])
    if saved is not None:
        for key in ("intervals", "valid_contigs"):  # part of the data identity, checked by digest below
            if options.get(key) is None:
                options[key] = saved["settings"].get(key)
        if not genomes:
            options["genomes"] = saved["settings"]["genomes"]
    settings = _resolve_settings(options, saved, run_dir)
    if not settings.genomes:
        raise CaduceusError("give at least one genome FASTA file (GENOME.fa[.gz])")
    _prepare_out_dir(run_dir)

    data = GenomeSet(settings.genomes, max_in_memory_bases)
    try:
        train, valid, split_how = split_regions(data, settings.seq_len, settings.intervals, settings.valid_contigs)
        digest = regions_digest(train, valid)
        if saved is not None:
            if data.fingerprint() != saved["data"]["genomes"]:
                raise CaduceusError(f"{run_dir}: was trained on other genomes "
                                    f"({', '.join(g['file'] for g in saved['data']['genomes'])}): a resumed run "
                                    "keeps its data; start a new run folder")
            if digest != saved["data"]["split_digest"]:
                raise CaduceusError(f"{run_dir}: was trained with another train/validation split "
                                    f"({saved['data']['split']}): a resumed run keeps its data")
        return _run(settings, data, train, valid, split_how, digest, run_dir, saved, started,
                    progress, set_total, command)
    finally:
        data.close()


def _run(settings, data, train, valid, split_how, digest, run_dir, saved, started, progress, set_total, command):
    dist = setup_distributed(settings.device)
    try:
        if settings.batch_size % dist.world_size:
            raise CaduceusError(f"--batch-size {settings.batch_size} is not divisible by the number of "
                                f"processes ({dist.world_size})")
        local_batch = settings.batch_size // dist.world_size
        micro = settings.micro_batch_size or default_micro_batch(local_batch, settings.seq_len, settings.variant)
        if local_batch % micro:
            raise CaduceusError(f"--micro-batch-size {micro} does not divide the per-process batch of {local_batch} "
                                f"(--batch-size {settings.batch_size} over {dist.world_size} process(es))")
        warmup = settings.resolved_warmup()
        model = new_model(settings.variant, settings.d_model, settings.n_layer, settings.seq_len, settings.seed)
        trainer = Trainer(model, lr=settings.lr, warmup=warmup, steps=settings.steps,
                          weight_decay=settings.weight_decay, micro_batch_size=micro, dist=dist,
                          backend=settings.backend)
        resumed_from = None
        if saved is not None:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is not None:
                from ..model.checkpoint import load_state_dict_strict, read_state_dict

                state_dict, path = read_state_dict(ckpt)
                load_state_dict_strict(trainer.model, {k: v.to(dist.device) for k, v in state_dict.items()}, str(path))
                trainer.load_state_dict(load_trainer_state(ckpt))
                resumed_from = ckpt.name
                if trainer.step >= settings.steps:
                    raise CaduceusError(f"{run_dir}: this run already finished its {settings.steps} steps: nothing "
                                        f"to resume (its model is in {run_dir / FINAL_DIR})")
        train_sampler = WindowSampler(data, train, settings.seq_len)
        valid_set = validation_set(WindowSampler(data, valid, settings.seq_len), settings.seed,
                                   settings.valid_windows) if len(valid) else None
        baseline = unigram_baseline(valid_set[1]) if valid_set is not None else (None, None)
        training_record = {
            "tool": "caduceus-cli", "tool_version": __version__, "command": command,
            "genomes": [Path(g).name for g in settings.genomes], "split": split_how,
            "variant": settings.variant, "seq_len": settings.seq_len, "batch_size": settings.batch_size,
            "steps_planned": settings.steps, "lr": settings.lr, "warmup": warmup,
            "weight_decay": settings.weight_decay, "seed": settings.seed, "world_size": dist.world_size,
        }
        model.config.extra["training"] = training_record
        if dist.is_main:
            run_info = {
                "settings": {**asdict(settings), "warmup": warmup},
                "data": {"genomes": data.fingerprint(), "split": split_how, "split_digest": digest,
                         "train_regions": int(len(train)), "valid_regions": int(len(valid)),
                         "train_bases": int((train[:, 1] - train[:, 0]).sum()),
                         "valid_bases": int((valid[:, 1] - valid[:, 0]).sum()) if len(valid) else 0},
                "objective": {"mask_prob": MASK_PROB, "mask_token": MASK_TOKEN_FRACTION,
                              "random_base": RANDOM_BASE_FRACTION, "max_n_fraction": MAX_N_FRACTION,
                              "rc_augment_prob": RC_AUGMENT_PROB if settings.variant == "ph" else 0.0},
                "tool_version": __version__,
                "command": command,
                "world_size": dist.world_size,
                "created": (saved or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _write_json_atomic(run_dir / RUN_FILE, run_info)
            if saved is not None:
                _truncate_metrics(run_dir / METRICS_FILE, trainer.step)
            elif (run_dir / METRICS_FILE).exists():
                (run_dir / METRICS_FILE).unlink()
        return _train_loop(settings, trainer, train_sampler, valid_set, baseline, run_dir, dist, started,
                           progress, set_total, resumed_from, training_record)
    finally:
        dist.close()


def _train_loop(settings, trainer, sampler, valid_set, baseline, run_dir, dist, started, progress, set_total,
                resumed_from, training_record) -> dict:
    model = trainer.model
    local_batch = settings.batch_size // dist.world_size
    tokens_per_step = settings.batch_size * settings.seq_len
    first = trainer.step
    if set_total is not None:
        set_total(settings.steps)
    if progress is not None and first:
        progress(first)
    rc_prob = RC_AUGMENT_PROB if settings.variant == "ph" else 0.0
    prefetch = BatchPrefetcher(sampler, settings.seed, dist.rank, local_batch, first, settings.steps, rc_prob,
                               pin=dist.device.type == "cuda")
    metrics_path = run_dir / METRICS_FILE
    stopped_early = False
    last = {"train_loss": None, "valid_loss": None, "valid_masked_accuracy": None}
    interval_start, interval_steps, excluded = time.time(), 0, 0.0
    speeds: list[float] = []
    fields_shown: dict = {}
    try:
        while trainer.step < settings.steps:
            step_index, inputs, labels, n_targets = prefetch.get()
            trainer.train_step(inputs, labels, n_targets)
            interval_steps += 1
            step = trainer.step
            over_time = False
            if settings.max_time is not None and (dist.world_size == 1 or step % 10 == 0 or step == settings.steps):
                over_time = bool(dist.all_reduce([float(time.time() - started >= settings.max_time)], "max")[0])
            done = step == settings.steps or over_time
            log_now = step % settings.log_every == 0 or step % settings.valid_every == 0 or done
            if log_now:
                train_loss = trainer.take_train_loss()  # syncs the device: the timing below is honest
                elapsed = time.time() - interval_start - excluded
                tok_s = interval_steps * tokens_per_step / elapsed if elapsed > 0 else float("nan")
                speeds.append(tok_s)
                record = {"step": step, "train_loss": train_loss, "valid_loss": None,
                          "valid_masked_accuracy": None, "lr": trainer.last_lr, "tokens_per_s": tok_s,
                          "tokens": step * tokens_per_step}
                if valid_set is not None and (step % settings.valid_every == 0 or done):
                    record["valid_loss"], record["valid_masked_accuracy"] = trainer.evaluate(*valid_set)
                    last["valid_loss"], last["valid_masked_accuracy"] = record["valid_loss"], record["valid_masked_accuracy"]
                last["train_loss"] = train_loss
                if dist.is_main:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                fields_shown = {"loss": f"{train_loss:.4f}", "tok/s": f"{tok_s:,.0f}"}
                interval_start, interval_steps, excluded = time.time(), 0, 0.0
            if step % settings.checkpoint_every == 0 or done:
                t0 = time.time()
                if dist.is_main:
                    model.config.extra["training"] = {**training_record, "steps": step}
                    save_checkpoint(run_dir, model, trainer.state_dict(), settings.keep_checkpoints)
                dist.barrier()
                excluded += time.time() - t0
            if progress is not None:
                progress(1, **fields_shown)
            if over_time and step < settings.steps:
                stopped_early = True
                log.warning("--max-time reached after %d of %d steps: checkpoint saved; continue with --resume %s",
                            step, settings.steps, run_dir)
                break
    finally:
        prefetch.close()
    summary = {
        "run_dir": str(run_dir),
        "variant": "Caduceus-PS" if settings.variant == "ps" else "Caduceus-Ph",
        "d_model": settings.d_model, "n_layer": settings.n_layer, "seq_len": settings.seq_len,
        "steps": trainer.step, "steps_planned": settings.steps, "stopped_early": stopped_early,
        "resumed_from": resumed_from,
        "tokens": trainer.step * tokens_per_step,
        "train_loss": last["train_loss"],
        "valid_loss": last["valid_loss"],
        "valid_masked_accuracy": last["valid_masked_accuracy"],
        "unigram_baseline_base": baseline[0],
        "unigram_baseline_accuracy": baseline[1],
        "tokens_per_s": float(np.median(speeds)) if speeds else None,
        "world_size": dist.world_size,
        "device": str(dist.device),
        "elapsed_s": round(time.time() - started, 1),
    }
    if dist.is_main:
        record = {**training_record, **{k: summary[k] for k in ("steps", "tokens", "train_loss", "valid_loss",
                                                                "valid_masked_accuracy", "unigram_baseline_base",
                                                                "unigram_baseline_accuracy")}}
        summary["final"] = str(save_final(run_dir, model, record))
        _write_json_atomic(run_dir / "summary.json", summary)
    dist.barrier()
    return summary
