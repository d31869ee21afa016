"""What `caduceus score-variants` can compute, its defaults and their validation.

Light on purpose (no numpy, no torch): the command line builds its help text from these constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ...errors import CaduceusError
from ...limits import MAX_BASES, MAX_BATCH, MAX_COUNT, check_size

SCORES = ("llr", "embed_cos", "embed_l2", "svm")
DEFAULT_SCORES = ("llr", "embed_cos", "embed_l2")
DEFAULT_WINDOW = 1536  # the paper's VEP window, centred on the variant (capped at the model's trained length)
DEFAULT_CHUNK = 1024  # records read and scored together
DEFAULT_BATCH = 64  # windows per forward pass on CUDA
DEFAULT_BATCH_CPU = 8  # on CPU: the plain-PyTorch scan keeps ~90 KB per token of the bundled model alive
MISSING_CONTIG = ("error", "skip")
# How the llr score is computed: one masked window per site (exact), or the wild-type marginal of
# unmasked tiles on a fixed grid (one pass per tile scores every SNV in it; pipelines/interpret/marginal.py)
LLR_METHODS = ("masked", "wt-marginal")
DEFAULT_FLANK = 128  # wt-marginal: bases of context, at least, on each side of every scored position
PERCENTILE_SCORES = ("llr", "embed_cos", "embed_l2")  # scores a background (caduceus calibrate) can hold
# (minimum, maximum) of every size option (limits.check_size); a window holds the REF base and one on each side
SIZE_LIMITS = {"window": (3, MAX_BASES), "context": (3, MAX_BASES), "batch_size": (1, MAX_BATCH),
               "chunk_size": (1, MAX_COUNT), "flank": (0, MAX_BASES)}


def validate_scores(scores: Iterable[str] | str) -> tuple[str, ...]:
    """The scores asked for, without repeats; a comma-separated string is accepted."""
    if isinstance(scores, str):
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    scores = tuple(dict.fromkeys(scores))
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise CaduceusError(f"--scores: unknown score {', '.join(bad) or '(none given)'}; choose from {', '.join(SCORES)}")
    return scores


@dataclass
class ScoreSettings:
    """How records are scored; ``validate`` names the option of any value that cannot work."""

    scores: tuple[str, ...] = DEFAULT_SCORES
    window: int | None = DEFAULT_WINDOW  # None: chosen once the model is known (see run.py)
    batch_size: int | None = DEFAULT_BATCH  # None: by device
    chunk_size: int = DEFAULT_CHUNK
    strict_ref: bool = False
    missing_contig: str = "error"
    tissue: str | None = None
    llr_method: str = "masked"
    flank: int = DEFAULT_FLANK
    context: int | None = None  # bases the model reads; None: the window (see context.choose_context)

    @property
    def span(self) -> int:
        """Bases the model reads per pass: the context, or the window when no context is set."""
        return self.context or self.window

    @property
    def centre(self) -> int:
        """Index of the variant's first REF base in the sequence the model reads."""
        return self.span // 2

    def validate(self) -> "ScoreSettings":
        self.scores = validate_scores(self.scores)
        for name in SIZE_LIMITS:
            low, high = SIZE_LIMITS[name]
            check_size("--" + name.replace("_", "-"), getattr(self, name), minimum=low, maximum=high)
        if self.llr_method not in LLR_METHODS:
            raise CaduceusError(f"--llr-method must be one of {', '.join(LLR_METHODS)}, got {self.llr_method!r}")
        if self.window is not None and self.llr_method == "wt-marginal" and 2 * self.flank >= self.span:
            raise CaduceusError(f"--flank {self.flank} leaves no position to score in a tile of {self.span} bp (the "
                                f"context the model reads): give a flank below {(self.span + 1) // 2}")
        if self.context is not None and self.window is not None and self.context < self.window:
            raise CaduceusError(f"--context {self.context} is shorter than --window {self.window}: the model must "
                                f"read every position it pools (give --context {self.window} or more)")
        if self.missing_contig not in MISSING_CONTIG:
            raise CaduceusError(f"--missing-contig must be one of {', '.join(MISSING_CONTIG)}, "
                                f"got {self.missing_contig!r}")
        return self
