"""Read and write checkpoints in the HuggingFace layout (config.json + model.safetensors).

Loading is name by name with shape checks. Nothing is unpickled except through
``torch.load(weights_only=True)`` for ``pytorch_model.bin``; no remote code is ever run.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from ..errors import CaduceusError
from ..runtime import DEFAULT_MODEL
from .caduceus import CaduceusForMaskedLM
from .config import CaduceusConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def bundled_model_dir() -> Path:
    """The small model shipped inside the package (see docs/model-card.md)."""
    return Path(__file__).resolve().parent.parent / "data" / "default_model"




def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[Path, dict]:
    """Local folder for a model name: 'bundled', a local folder, or a HuggingFace hub id.

    Returns (folder, source) where source records {'id', 'revision'} for provenance.
    """
    name = str(name_or_path)
    if name in (DEFAULT_MODEL, "default"):
        path = bundled_model_dir()
        if not (path / "config.json").is_file():
            raise CaduceusError(f"the bundled model is missing from this installation ({path}); reinstall caduceus-cli")
        return path, {"id": "bundled", "revision": None}
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CaduceusError(f"{path}: not a folder: a model is a folder with config.json and model.safetensors")
        return path, {"id": str(path.resolve()), "revision": None}
    looks_local = name.startswith((".", "/", "~")) or name.count("/") != 1 or not HUB_ID.match(name)
    if looks_local:
        raise CaduceusError(f"{name}: no such model folder (and not a Hugging Face hub id of the form owner/name)")
    return _download(name, revision), {"id": name, "revision": revision}


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError as e:  # pragma: no cover - a core dependency
        raise CaduceusError("huggingface_hub is needed to load hub models: pip install huggingface_hub") from e
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=["config.json", *WEIGHT_FILES],
            local_files_only=offline,
        )
    except HfHubHTTPError as e:
        raise CaduceusError(f"{repo_id}: the Hugging Face hub refused the download ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - offline cache misses, network errors, bad ids
        hint = ("HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache: "
                f"download it where there is network (`huggingface-cli download {repo_id}`) "
                "or pass a local folder") if offline else (
                "it could not be downloaded (no network?): pass a local folder, "
                "or set HF_HUB_OFFLINE=1 to use the local cache only")
        raise CaduceusError(f"{repo_id}: {hint} [{e.__class__.__name__}]") from None
    return Path(folder)


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for fname in WEIGHT_FILES:
        path = folder / fname
        if path.is_file():
            break
    else:
        raise CaduceusError(f"{folder}: no model.safetensors or pytorch_model.bin in this folder")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path)), path
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CaduceusError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or hostile files
        raise CaduceusError(f"{path}: cannot be read as a weights file ({e.__class__.__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CaduceusError(f"{path}: expected a flat dictionary of tensors")
    return state, path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict_strict(model: CaduceusForMaskedLM, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` name by name; every mismatch is reported, by name."""
    expected = model.state_dict()
    tied = model.tied_parameter_names()
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (model expects {tuple(expected[k].shape)})"
              for k in state if k in expected and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
    if shapes:
        problems.append(f"wrong shape: {'; '.join(shapes[:5])}")
    if problems:
        raise CaduceusError(f"{source}: does not match its config.json: {'; '.join(problems)}")
    for k, v in state.items():
        if k.endswith("complement_map") and not torch.equal(v.long().cpu(), expected[k].cpu()):
            raise CaduceusError(f"{source}: {k} disagrees with complement_map in config.json")
    # Tied parameters appear under several names; all copies in the file must agree.
    params = dict(model.named_parameters(remove_duplicate=False))
    by_tensor: dict[int, list[str]] = {}
    for name, p in params.items():
        by_tensor.setdefault(id(p), []).append(name)
    for names in by_tensor.values():
        present = [n for n in names if n in state]
        for other in present[1:]:
            if not torch.equal(state[present[0]], state[other]):
                raise CaduceusError(f"{source}: tied tensors {present[0]} and {other} differ")
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in state:
                tensor.copy_(state[name].to(tensor.dtype))


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, revision: str | None = None,
               backend: str = "auto") -> CaduceusForMaskedLM:
    """Load a Caduceus masked-LM: 'bundled', a local folder, or a HuggingFace hub id.

    ``device`` defaults to CPU; ``dtype`` (float32, bfloat16, float16) casts the weights;
    ``backend`` picks the selective-scan kernels (``scan.BACKENDS``): 'auto' (triton on CUDA, numba
    on CPU), 'triton', 'numba', 'torch' (plain PyTorch, everywhere) or 'mamba-ssm' (alias 'cuda';
    needs the optional ``[cuda]`` extra).
    """
    from .scan import resolve_backend

    folder, source = resolve_model_dir(name_or_path, revision)
    config = CaduceusConfig.from_json(folder / "config.json")
    state, weights_path = read_state_dict(folder)
    model = CaduceusForMaskedLM(config)
    load_state_dict_strict(model, state, str(weights_path))
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise CaduceusError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    device = torch.device(device) if device is not None else torch.device("cpu")
    model.to(device=device, dtype=dtype)
    model.backend = backend
    resolve_backend(backend, device)  # refuse 'cuda' where it cannot run, before any work
    model.source = {
        **source,
        "folder": str(folder),
        "sha256": file_sha256(weights_path),
        "weights": weights_path.name,
        "revision": source["revision"] or _hub_commit(folder),
    }
    model.eval()
    return model


def _hub_commit(folder: Path) -> str | None:
    """The commit hash of a HuggingFace cache snapshot folder (…/snapshots/<hash>), else None."""
    parts = folder.resolve().parts
    if len(parts) >= 2 and parts[-2] == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parts[-1]):
        return parts[-1]
    return None


def save_model(model: CaduceusForMaskedLM, folder: str | os.PathLike) -> Path:
    """Write config.json + model.safetensors (tied LM head omitted, as released checkpoints do).

    Each file is written to a temporary name and renamed (io.atomic_file), so a crash never leaves
    a half-written weights file; use io.atomic_folder around this for a whole new checkpoint.
    """
    from safetensors.torch import save_file

    from ..io import atomic_file, writing

    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    tied = model.tied_parameter_names()
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if k not in tied}
    with atomic_file(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_file(folder / "config.json") as tmp:
        model.config.to_json(tmp)
    return folder
