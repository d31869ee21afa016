"""What defines a pretraining run: the objective's constants, the options and their defaults.

Light on purpose (no numpy, no torch): the command line builds its help text from these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import CaduceusError
from ...limits import MAX_BASES, MAX_BATCH, MAX_COUNT, check_real, check_size

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
WARMUP_FRACTION = 0.05  # default warmup: 5% of the steps
# Tokens per forward pass (both strands count for PS) when --micro-batch-size is not given.
MICRO_BATCH_TOKENS = 131072
# Genomes up to this many bases are read into memory (1 byte per base per process).
DEFAULT_MAX_IN_MEMORY_BASES = 4_000_000_000  # override with CADUCEUS_PRETRAIN_MAX_BASES (e.g. 8G)

STATE_FILE = "trainer_state.pt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LATEST_FILE = "latest"
FINAL_DIR = "final"


# The ranges of the numeric options (limits.check_size / check_real); d_model and n_layer as a
# config.json may hold them (model/config.py).
SIZE_LIMITS = {"d_model": (1, 16384), "n_layer": (1, 512), "seq_len": (1, MAX_BASES), "batch_size": (1, MAX_BATCH),
               "micro_batch_size": (1, MAX_BATCH), "steps": (1, MAX_COUNT), "warmup": (0, MAX_COUNT),
               "seed": (0, MAX_COUNT), "valid_windows": (1, MAX_BATCH), "checkpoint_every": (1, MAX_COUNT),
               "valid_every": (1, MAX_COUNT), "log_every": (1, MAX_COUNT), "keep_checkpoints": (1, MAX_COUNT)}
REAL_LIMITS = {"lr": {"above": 0.0}, "weight_decay": {"minimum": 0.0}}


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
    warmup: int | None = None  # None: WARMUP_FRACTION of the steps
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
        return max(0, round(WARMUP_FRACTION * self.steps)) if self.warmup is None else self.warmup

    def validate(self) -> None:
        if self.variant not in ("ps", "ph"):
            raise CaduceusError(f"--variant must be ps or ph, got {self.variant!r}")
        for name, (low, high) in SIZE_LIMITS.items():
            check_size("--" + name.replace("_", "-"), getattr(self, name), minimum=low, maximum=high)
        for name, limits in REAL_LIMITS.items():
            check_real("--" + name.replace("_", "-"), getattr(self, name), **limits)
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise CaduceusError(f"--warmup must be between 0 and --steps ({self.steps}), got {self.warmup}")
        check_real("--max-time", self.max_time, above=0.0)
        if self.intervals and self.valid_contigs:
            raise CaduceusError("give either --intervals (a split BED) or --valid-contigs, not both")



def parse_duration(text: str | float | None) -> float | None:
    """Seconds from '420', '7m', '1h30m', '6m30s', '2.5h'."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", s):
        return float(s)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise CaduceusError(f"--max-time: cannot read {text!r} as a duration (examples: 420, 7m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
