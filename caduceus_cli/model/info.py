"""What a model is and what this machine can run: the engine behind `models info` and `doctor`."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from ..choices import DEFAULT_MODEL
from .kernels.scan import cuda_kernels, numba_kernels, resolve_backend, triton_kernels
from .precision import compute_dtype, cpu_bf16_matrix_units, dtype_name

BACKEND_NAMES = {
    "triton": "triton (this package's Triton kernels)",
    "numba": "numba (compiled CPU scan)",
    "torch": "PyTorch (vectorised scan)",
    "mamba-ssm": "mamba-ssm CUDA kernels",
}


def backend_description(backend: str = "auto", device: str | None = None) -> str:
    """What ``--backend backend`` runs on ``device``, in words (e.g. 'numba (compiled CPU scan)')."""
    return BACKEND_NAMES[resolve_backend(backend, device)]


def rc_mode(config) -> str:
    if config.rcps:
        return "equivariant by parameter sharing (strands averaged after pooling)"
    if config.bidirectional:
        return "post-hoc conjoining (forward and reverse-complement passes averaged)"
    return "none (uni-directional)"


def model_info(name_or_path: str = DEFAULT_MODEL, device: str | None = None, revision: str | None = None) -> dict:
    """Variant, sizes, parameter count, RC mode, provenance and the backend that would run."""
    from ..runtime import resolve_device
    from .loading import resolve_model

    device = str(resolve_device(device))  # a device that cannot run here is refused, as by every command
    model = resolve_model(name_or_path, device="cpu", revision=revision)
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    return {
        "model": model.source["id"],
        "default": model.source["id"] == DEFAULT_MODEL,
        "folder": model.source["folder"],
        "sha256": model.source["sha256"],
        "revision": model.source["revision"],
        "variant": cfg.variant,
        "d_model": cfg.d_model,
        "n_layer": cfg.n_layer,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.padded_vocab_size,
        "d_state": cfg.ssm_cfg["d_state"],
        "d_inner": cfg.d_inner,
        "parameters": n_params,
        "rc_mode": rc_mode(cfg),
        "fused_add_norm": cfg.fused_add_norm,
        "norm": "RMSNorm" if cfg.rms_norm else "LayerNorm",
        "bidirectional_strategy": cfg.bidirectional_strategy if cfg.bidirectional else None,
        "trained_length": cfg.extra.get("max_seq_len") or cfg.extra.get("seq_len"),
        "head": describe_head(cfg),
        "device": device,
        "backend": backend_description("auto", device),
        "compute_dtype": compute_description(device),
    }


def compute_description(device: str) -> str:
    """What ``--dtype auto`` runs in on ``device``, and why (e.g. 'bf16 (CPU has avx512_bf16)')."""
    chosen = dtype_name(compute_dtype("auto", device))
    if torch.device(device).type == "cuda":
        return f"{chosen} (autocast on the GPU)"
    units = cpu_bf16_matrix_units()
    return f"{chosen} (CPU has {units})" if units else f"{chosen} (no bf16 matrix units on this CPU)"


def describe_head(config) -> str:
    """The head of a checkpoint in words: the masked-LM head, or a classifier's task, labels,
    pooling and RC handling."""
    from .checkpoint import head_settings, is_classifier

    if not is_classifier(config):
        return "masked LM"
    head = head_settings(config)
    if head["task"] == "regression":
        what = "regression (1 output)"
    else:
        names = ", ".join(str(n) for n in head["label_names"])
        what = f"classification ({len(head['label_names'])} labels: {names})"
    if config.rcps:
        rc = "both strands averaged (PS)"
    elif head["conjoin_eval"]:
        rc = "conjoined at evaluation" + (" and in training" if head["conjoin_train"] else "")
    else:
        rc = "forward strand only"
    protocol = f", {head['protocol']}" if head.get("protocol") else ""
    return f"{what}, {head['pooling']} pooling, RC: {rc}{protocol}"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def doctor_report() -> dict:
    """Versions, GPUs and optional kernels, with the command that fixes each missing piece."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    kernels = cuda_kernels()
    checks = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "mamba_ssm": _version("mamba-ssm") or _version("mamba_ssm"),
        "causal_conv1d": _version("causal-conv1d") or _version("causal_conv1d"),
        "triton": _version("triton"),
        "numba": _version("numba"),
        "kernels_usable": {"triton_scan": torch.cuda.is_available() and triton_kernels() is not None,
                           "numba_scan": numba_kernels() is not None,
                           **{f"mamba_ssm_{k}": v is not None for k, v in kernels.items()}},
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16_matrix_units": cpu_bf16_matrix_units(),
        "cpu_compute_dtype": compute_description("cpu"),
    }
    fixes = []
    if not torch.cuda.is_available():
        fixes.append("no CUDA GPU visible: everything runs on the CPU "
                     "(install a CUDA build of torch on a GPU machine for speed)")
        if numba_kernels() is None:
            fixes.append("numba is missing, so the CPU runs the slow PyTorch scan: pip install numba")
    elif triton_kernels() is None:
        fixes.append("GPU found but Triton does not import, so the GPU runs the slow PyTorch scan: "
                     "install the CUDA build of torch, which brings Triton")
    elif kernels["selective_scan"] is None:
        checks["note"] = ("the mamba-ssm kernels are not needed (--backend triton is the default); "
                          "pip install 'caduceus-cli[cuda]' only to compare with --backend mamba-ssm")
    checks["fixes"] = fixes
    checks["backend"] = backend_description("auto", "cuda" if torch.cuda.is_available() else "cpu")
    return checks
