"""The features of a variant's REF and ALT contexts: the project's strand-averaged window mean and
the paper's features (kuleshov-group/caduceus ``vep_embeddings.py`` + ``vep_svm.ipynb``), both
from one pass of the model over each context.

The paper's features, position by position:

- the model runs on the whole context (REF, and ALT), the variant at index ``context // 2``;
- the last layer's outputs at the positions ``centre - 768 .. centre + 768`` (1,537 positions for
  the 1,536 bp window, clamped to the sequence) are averaged, REF then ALT concatenated;
- forward features: the forward strand (PS: channels ``[:d]`` of the output; Ph: the forward pass);
- RC features: PS: channels ``[d:]`` flipped along length and channels, i.e. the RC strand in its
  own reading frame, gathered at the same indices (so, for an even context, its window sits one
  base to the 5' side of the forward strand's); Ph: the pass on the reverse-complemented context,
  flipped back along length;
- the notebook averages forward and RC features where the model's row says so: Caduceus-PS
  ``conjoin_train`` (training and test features both averaged), Caduceus-Ph ``conjoin_test``
  (training features forward only, test features averaged).

The project's own ``mean`` features: the strand-averaged mean of the last layer over the ``window``
positions centred on the variant (both strands aligned position by position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import inference

FEATURES = ("paper", "mean")
DEFAULT_FEATURES = "paper"
PAPER_DEFINITION = ("concat(mean_1537(last_hidden(ref_context)), mean_1537(last_hidden(alt_context))) per strand "
                    "as kuleshov-group/caduceus vep_embeddings.py (PS: channels [d:] flipped along length and "
                    "channels; Ph: RC pass flipped back), forward and RC averaged as vep_svm.ipynb (PS: train and "
                    "test; Ph: test only) [+ tissue code]")
# Contexts with this fraction of N or more are left out of the paper's training and test sets (the
# official data preparation filters them before embedding).
PAPER_MAX_N_FRACTION = 0.005


@dataclass
class ContextFeatures:
    """Per context row: ``mean`` (N, d) strand-averaged window mean; with the paper's features also
    ``paper_fwd`` and ``paper_rc`` (N, d)."""

    mean: np.ndarray
    paper_fwd: np.ndarray | None = None
    paper_rc: np.ndarray | None = None


def paper_strands(strands: torch.Tensor, rcps: bool, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, RC) paper features (B, d) from ``strands`` (B, L, d, 2) as ``strand_stack`` lines
    them up (the RC strand aligned to the forward positions, channels in order).

    PS: the official RC features are channels [d:] flipped along length and channels: the
    channel-ordered RC strand flipped along length, so index p reads aligned position L - 1 - p.
    Ph: the RC pass flipped back along length is the aligned RC strand itself.
    """
    length = strands.shape[1]
    fwd = strands[:, positions, :, 0].mean(1)
    rc_index = (length - 1 - positions) if rcps else positions
    rc = strands[:, rc_index, :, 1].mean(1)
    return fwd, rc


@torch.no_grad()
def context_features(model, ids: torch.Tensor, window: slice, positions: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One pass over (B, L) context ids -> (mean over ``window`` of both strands averaged (B, d),
    paper forward (B, d), paper RC (B, d)); the paper's are None without ``positions``."""
    strands = inference.strand_features(model, ids)  # (B, L, d, 2), float32
    mean = inference.pool_positions(strands[:, window], "mean").mean(-1)
    if positions is None:
        return mean, None, None
    fwd, rc = paper_strands(strands, model.config.rcps, positions.to(strands.device))
    return mean, fwd, rc


def conjoin(fwd: np.ndarray, rc: np.ndarray, rcps: bool, test: bool) -> np.ndarray:
    """The notebook's features of one split: PS averages forward and RC for training and test,
    Ph for the test set only (its training features are the forward strand's)."""
    if rcps or test:
        out = np.array(fwd, dtype=np.float32, copy=True)
        out += np.asarray(rc, dtype=np.float32)
        out /= 2
        return out
    return np.asarray(fwd, dtype=np.float32)


def check_features(features: str) -> str:
    from ...errors import CaduceusError

    if features not in FEATURES:
        raise CaduceusError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
    return features
