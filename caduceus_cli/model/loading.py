"""A model ready to run: a name, folder or hub id (with ``revision``), or a model already loaded,
on the device the runtime resolves; and what a loaded model says about itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..choices import DEFAULT_MODEL
from ..errors import CaduceusError
from ..runtime import resolve_device
from .checkpoint import load_model

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_model(model: Any = DEFAULT_MODEL, *, device: "str | torch.device | None" = None, dtype: str | None = None,
                  backend: str = "auto", revision: str | None = None, train: bool = False):
    """A loaded model on ``device``: ``model`` is 'bundled', a folder, a hub id (at ``revision``) or
    an already loaded module (moved to ``device`` when one is given; ``revision`` must then be None).
    ``dtype``: the compute dtype of its inference passes, 'auto' (None), 'fp32' or 'bf16', kept as
    ``model.compute_dtype`` (see ``precision.compute_dtype``); an already loaded module keeps its
    own unless ``dtype`` is given.

    The model is returned in eval mode unless ``train``.
    """
    import torch.nn as nn

    if isinstance(model, nn.Module):
        if revision is not None:
            raise CaduceusError("--revision applies to a model name or hub id, not to a model that is already loaded")
        if device is not None:
            dev = resolve_device(device)
            if next(model.parameters()).device != dev:
                model = model.to(dev)
        if dtype is not None or not hasattr(model, "compute_dtype"):
            from .precision import check_dtype

            model.compute_dtype = check_dtype(dtype)
        if backend != "auto" and hasattr(model, "backend"):
            from .kernels.scan import resolve_backend

            model.backend = resolve_backend(backend, next(model.parameters()).device)
        return model.train(train)
    loaded = load_model(model, device=resolve_device(device), dtype=dtype, revision=revision, backend=backend)
    return loaded.train(train)


def trained_length(model, default: int = 131072) -> int:
    """The sequence length ``model`` was trained on (its config's max_seq_len), else ``default``
    (the published Caduceus checkpoints were trained on 131,072 bp)."""
    extra = model.config.extra
    return int(extra.get("max_seq_len") or extra.get("max_position_embeddings") or default)
