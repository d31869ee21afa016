"""Embeddings of genomic regions (FASTA + BED, or every record of a FASTA) at genome scale.

The flow, for any number of regions with bounded memory::

    BED/FASTA --(source: parse, validate, chunk; a reader thread fetches, reverse-complements and
    tokenises the chunks this rank computes)--> compute: batches of equal length -> embeddings
    --> sinks: rows in input order to Parquet / .npy / .npz / TSV / memory, written atomically.

Modules: ``settings`` (options, defaults, validation), ``source`` (regions -> chunks of jobs),
``compute`` (the model, tiles), ``sinks`` (rows and output formats), ``run`` (``embed_regions``).
Names are loaded on first use, so that the command line reads the settings without numpy or torch.
"""

from __future__ import annotations

from ...lazy import lazy_getattr

_NAMES = {
    "embed_regions": "run", "EmbedResult": "run",
    "EmbedSettings": "settings", "DEFAULT_CENTER_WIDTH": "settings", "DEFAULT_MAX_LENGTH": "settings",
    "FORMATS": "settings", "OUTPUT_SUFFIXES": "settings",
    "Job": "source", "RegionSource": "source", "plan_bed_region": "source",
    "Embedder": "compute",
    "embedding_values": "sinks", "rows_batch": "sinks", "schema_for": "sinks",
    "sidecar_path": "sinks", "open_sink": "sinks",
}

__all__ = list(_NAMES)

__getattr__ = lazy_getattr(__name__, _NAMES)
