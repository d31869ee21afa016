"""What `caduceus embed` can be asked to do, its defaults, and their validation.

Light on purpose (no numpy, no torch): the command line builds its help text from these constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...choices import PER_POSITION, check_pooling
from ...errors import CaduceusError
from ...limits import MAX_BASES, MAX_BATCH, MAX_THREADS, MAX_TOKENS, check_size

DEFAULT_MAX_LENGTH = 131072  # the published Caduceus checkpoints were trained on 131,072 bp
DEFAULT_CENTER_WIDTH = 1536  # the paper's VEP features: mean over 1,536 bp around the centre
DEFAULT_BATCH_CUDA = 64
DEFAULT_BATCH_CPU = 8
DEFAULT_MAX_TOKENS = 1 << 17  # bases per batch
DEFAULT_IO_THREADS = 2
DEFAULT_POOL = "mean"  # choices.POOLINGS, or choices.PER_POSITION ('none': one vector per position)
FORMATS = ("parquet", "npy", "npz", "tsv")
OUTPUT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz", ".tsv": "tsv"}
# (minimum, maximum) of every size option (limits.check_size)
SIZE_LIMITS = {"window": (1, MAX_BASES), "center_width": (1, MAX_BASES), "tile_overlap": (0, MAX_BASES),
               "max_length": (1, MAX_BASES), "batch_size": (1, MAX_BATCH), "max_tokens": (1, MAX_TOKENS),
               "io_threads": (1, MAX_THREADS), "context": (1, MAX_BASES)}


def check_sizes(**values: int | None) -> None:
    """Refuse a size option out of its range (None: not given, the default applies)."""
    for name, value in values.items():
        low, high = SIZE_LIMITS[name]
        check_size("--" + name.replace("_", "-"), value, minimum=low, maximum=high)


@dataclass
class EmbedSettings:
    pool: str = DEFAULT_POOL
    center_width: int = DEFAULT_CENTER_WIDTH
    layer: int | None = None
    conjoin: bool = True
    window: int | None = None
    tile: bool = False
    tile_overlap: int | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = DEFAULT_BATCH_CPU
    max_tokens: int = DEFAULT_MAX_TOKENS
    skip_invalid: bool = False
    io_threads: int = DEFAULT_IO_THREADS
    context: int | None = None  # bases the model reads around each region (None: the region itself)

    @property
    def overlap(self) -> int:
        """Overlap of consecutive tiles: ``tile_overlap``, by default an eighth of the tile."""
        return self.tile_overlap if self.tile_overlap is not None else self.max_length // 8

    @property
    def chunk_bases(self) -> int:
        """Bases read ahead per chunk: bounds memory (per-position output is d floats per base)."""
        return 1 << 18 if self.pool == PER_POSITION else 1 << 24

    @property
    def chunk_regions(self) -> int:
        """Regions per chunk: eight batches, so that under torchrun (chunk i on rank i % world)
        the ranks share even a small BED."""
        return max(64, 8 * self.batch_size)

    def validate(self, n_layer: int) -> "EmbedSettings":
        """Raise a CaduceusError naming the option for any value that cannot work with a model of
        ``n_layer`` layers; returns self."""
        check_pooling(self.pool, per_position=True)
        if self.layer is not None and not -n_layer <= self.layer <= n_layer:
            raise CaduceusError(f"--layer {self.layer}: this model has {n_layer} layers: give 0 (token embeddings) "
                                f"to {n_layer} (last, after the final norm), or -1 for the last")
        check_sizes(window=self.window, center_width=self.center_width, max_length=self.max_length,
                    batch_size=self.batch_size, max_tokens=self.max_tokens, tile_overlap=self.tile_overlap,
                    io_threads=self.io_threads, context=self.context)
        if self.overlap >= self.max_length:
            raise CaduceusError(f"--tile-overlap {self.overlap} must be smaller than the tile length {self.max_length}")
        if self.context is not None and self.tile:
            raise CaduceusError("--context and --tile cannot be combined: with --context the model reads one "
                                "sequence of --context bases around each region (give one of them)")
        if self.context is not None and self.window is not None and self.window > self.context:
            raise CaduceusError(f"--window {self.window} is longer than --context {self.context}: the model must "
                                "read every position it pools (give --context at least the window)")
        if self.window is not None and self.window > self.max_length and not self.tile and self.context is None:
            raise CaduceusError(f"--window {self.window} is longer than the model's trained length "
                                f"({self.max_length:,} bp): use --tile, a smaller --window, or --max-length")
        return self
