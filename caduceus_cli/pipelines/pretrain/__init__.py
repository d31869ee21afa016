"""Masked-LM pretraining on genomes: window sampler, masking, training loop, checkpoints, torchrun.

Modules: ``settings`` (the objective's constants, PretrainSettings), ``data`` (genomes, split,
windows, masking, batches), ``trainer`` (model, optimiser, schedule, DDP), ``checkpoints`` (the run
folder), ``run`` (``pretrain``: the run folder is run.json, metrics.jsonl, checkpoint-STEP/,
latest, final/). Names load on first use, so that the command line reads the settings without
numpy or torch.
"""

from __future__ import annotations

from ...lazy import lazy_getattr

_NAMES = {
    "pretrain": "run",
    "PretrainSettings": "settings", "parse_duration": "settings", "IGNORE_INDEX": "settings",
    "MASK_PROB": "settings", "RC_AUGMENT_PROB": "settings", "MAX_N_FRACTION": "settings",
    "GenomeSet": "data", "WindowSampler": "data", "split_regions": "data", "mask_tokens": "data",
    "make_batch": "data", "reverse_complement_rows": "data", "validation_set": "data",
    "unigram_baseline": "data", "batch_stream": "data",
    "Trainer": "trainer", "new_model": "trainer", "parameter_groups": "trainer", "lr_at": "trainer",
    "default_micro_batch": "trainer", "MICRO_BATCH_TOKENS": "settings",
    "latest_checkpoint": "checkpoints", "save_checkpoint": "checkpoints", "save_final": "checkpoints",
}

__all__ = list(_NAMES)

__getattr__ = lazy_getattr(__name__, _NAMES)
