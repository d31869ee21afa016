"""Choices and defaults of ism, track and calibrate, in a light module (no numpy, no torch): the
command line builds its help text from these constants."""

from __future__ import annotations

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
