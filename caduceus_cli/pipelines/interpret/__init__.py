"""Interpretation: which bases drive a model's output (mutagenesis, attribution, sequence logos),
per-base tracks and calibrated variant scores.

Modules: ``marginal`` (wild-type marginal logits on a fixed tile grid), ``targets`` (regions of a
reference), ``ism`` (in-silico saturation mutagenesis), ``track`` (per-base bigWig tracks),
``bigwig`` (the bigWig writer), ``calibrate`` (backgrounds of random SNVs). Names load on first use.
"""

from __future__ import annotations

from ...lazy import lazy_getattr

_NAMES = {
    "TileGrid": "marginal", "interval_logits": "marginal", "site_logits": "marginal",
    "ism": "ism", "write_track": "track", "calibrate": "calibrate",
}

__all__ = list(_NAMES)

__getattr__ = lazy_getattr(__name__, _NAMES)
