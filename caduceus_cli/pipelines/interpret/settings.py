"""Choices and defaults of ism, track and calibrate, in a light module (no numpy, no torch): the
command line builds its help text from these constants."""

from __future__ import annotations

from ...limits import MAX_BASES, MAX_BATCH, MAX_COUNT, check_size

LM_METHODS = ("masked", "wt-marginal", "embedding")
CLASSIFIER = "classifier"
ISM_METHODS = LM_METHODS + (CLASSIFIER,)
ISM_CHUNK = 64  # positions per chunk (the unit of resuming and sharding)
BIGWIG_STATS = ("mean", "min", "max")
MAX_PLOT_BASES = 500  # a logo wider than this is unreadable

TRACK_STATS = ("logp-ref", "entropy", "mean-alt-llr")
TRACK_CHUNK_TILES = 16  # tiles per chunk of a track (the unit of resuming and sharding)

CALIBRATION_SITES = 200  # default --n of calibrate: ~600 SNVs, a few minutes with the bundled model on a CPU
CALIBRATION_SCORES = ("llr",)

# (minimum, maximum) of every size option of ism, track and calibrate (limits.check_size)
SIZE_LIMITS = {"window": (3, MAX_BASES), "flank": (0, MAX_BASES), "batch_size": (1, MAX_BATCH),
               "chunk_size": (1, MAX_COUNT), "chunk_tiles": (1, MAX_COUNT), "n": (1, 10_000_000),
               "seed": (0, 2**32 - 1)}


def check_sizes(**values) -> None:
    """Refuse (one line naming the option) a size outside :data:`SIZE_LIMITS`; None passes."""
    for name, value in values.items():
        low, high = SIZE_LIMITS[name]
        check_size("--" + name.replace("_", "-"), value, minimum=low, maximum=high)
