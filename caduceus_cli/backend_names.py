"""The names ``--backend`` accepts: a light module (no torch), so that the command line's help text
is generated from the same constant the engine checks against (``model/scan.py``)."""

BACKENDS = ("auto", "triton", "numba", "torch", "mamba-ssm", "cuda")
