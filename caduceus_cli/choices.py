"""Names the command line offers, in a light module (no torch), so that help texts and defaults are
generated from the same constants the engine checks against."""

BACKENDS = ("auto", "triton", "numba", "torch", "mamba-ssm", "cuda")  # checked in model/kernels/scan.py
DEFAULT_MODEL = "bundled"  # the small model shipped inside the package (model/checkpoint.py finds it)
POOLINGS = ("mean", "max", "center", "first", "last")  # positions pooled into one vector (model/strands.py)
