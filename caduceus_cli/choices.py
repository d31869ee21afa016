"""Names the command line offers, in a light module (no torch), so that help texts and defaults are
generated from the same constants the engine checks against."""

from .errors import CaduceusError

BACKENDS = ("auto", "triton", "numba", "torch", "mamba-ssm", "cuda")  # checked in model/kernels/scan.py
DEFAULT_MODEL = "bundled"  # the small model shipped inside the package (model/checkpoint.py finds it)

# Pooling: how the positions of a sequence become one vector, the same words in every command and
# in the API (pipelines/inference.py, model/strands.py). Each strand is pooled as read 5'->3' on
# itself, then the strands are averaged: mean, max, center (the mean over a symmetric central
# window), first/last (each strand's own first/last base).
POOLINGS = ("mean", "max", "center", "first", "last")
# No pooling: one vector per position, where an output can hold it (embed's --pool none).
PER_POSITION = "none"


def check_pooling(pool: str, *, per_position: bool = False) -> str:
    """``pool`` if it is one of :data:`POOLINGS` (or :data:`PER_POSITION` where ``per_position``);
    else a CaduceusError naming the choices."""
    choices = POOLINGS + ((PER_POSITION,) if per_position else ())
    if pool not in choices:
        raise CaduceusError(f"--pool must be one of {', '.join(choices)}, got {pool!r}")
    return pool


# Attribution methods of `predict --attribute` (pipelines/finetune/attribute.py), and its logos:
# how many (--plot-top) and the longest sequence drawn (a wider logo is unreadable).
ATTRIBUTIONS = ("ism", "saliency")
PLOT_TOP = 5
PLOT_TOP_MAX = 1000
PLOT_MAX_BASES = 500
