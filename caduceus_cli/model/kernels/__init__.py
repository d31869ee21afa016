"""The model's compute kernels, apart from the model's modules.

- ``scan``: the dispatcher (``selective_scan``, ``causal_conv1d``, ``resolve_backend``) and the
  plain-PyTorch twin every kernel is tested against.
- ``scan_cpu``: the selective scan compiled for the CPU with numba.
- ``scan_triton``, ``scan_triton_bwd`` / ``scan_triton_bwd2`` (the backward, two versions),
  ``conv_triton``, ``norm_triton``, ``flips``: Triton kernels for CUDA (forward and backward), with
  ``jit`` holding the helpers they share.
- ``versions``: the environment variables that choose between kernel versions, and named sets of
  them for benchmarks that time old and new side by side.

Nothing here imports Triton until a GPU kernel is asked for.
"""
