"""What a model is and what this machine can run: the engine behind `models info` and `doctor`."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from .scan import cuda_kernels, resolve_backend


def rc_mode(config) -> str:
    if config.rcps:
        return "equivariant by parameter sharing (strands averaged after pooling)"
    if config.bidirectional:
        return "post-hoc conjoining (forward and reverse-complement passes averaged)"
    return "none (uni-directional)"


def model_info(name_or_path: str = "bundled", device: str | None = None, revision: str | None = None) -> dict:
    """Variant, sizes, parameter count, RC mode, provenance and the backend that would run."""
    from .checkpoint import DEFAULT_MODEL, load_model

    model = load_model(name_or_path, revision=revision)
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
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
        "backend": "mamba-ssm CUDA kernels" if resolve_backend("auto", device) == "cuda" else "PyTorch (vectorised scan)",
    }


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
        "kernels_usable": {k: v is not None for k, v in kernels.items()},
        "cpu_threads": torch.get_num_threads(),
    }
    fixes = []
    if not torch.cuda.is_available():
        fixes.append("no CUDA GPU visible: everything runs on the CPU with the PyTorch backend "
                     "(install a CUDA build of torch on a GPU machine for speed)")
    else:
        if checks["mamba_ssm"] is None or checks["causal_conv1d"] is None:
            fixes.append("GPU found but the mamba-ssm kernels are missing: pip install 'caduceus-cli[cuda]' "
                         "(compiles mamba-ssm and causal-conv1d; needs nvcc)")
        elif not kernels["selective_scan"]:
            fixes.append("mamba-ssm is installed but its kernels do not import: reinstall it against this "
                         "torch with pip install --no-build-isolation --force-reinstall mamba-ssm")
    checks["fixes"] = fixes
    checks["backend"] = "mamba-ssm CUDA kernels" if kernels["selective_scan"] else "PyTorch (vectorised scan)"
    return checks
