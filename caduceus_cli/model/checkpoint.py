"""Read and write checkpoints in the HuggingFace layout (config.json + model.safetensors).

Loading is name by name with shape checks. Nothing is unpickled except through
``torch.load(weights_only=True)`` for ``pytorch_model.bin``; no remote code is ever run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import CaduceusError
from ..choices import DEFAULT_MODEL
from ..choices import POOLINGS
from ..runtime import env_flag
from .caduceus import CaduceusForMaskedLM, CaduceusForSequenceClassification
from .config import CaduceusConfig

log = logging.getLogger("caduceus")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# A Hugging Face repository id as the hub accepts it: owner/name, each part 1-96 ASCII letters, digits,
# '-', '_' or '.', starting and ending with a letter or digit, without '--' or '..'.
HUB_PART = r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"^{HUB_PART}/{HUB_PART}\Z")
# A branch, tag, commit or 'refs/pr/N': git ref characters only, no '..' (nothing that could leave the
# hub's URL space or the local cache folder).
HUB_REVISION = re.compile(r"^(?!.*\.\.)(?!.*//)[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}\Z")


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
        return path, {"id": DEFAULT_MODEL, "revision": None}
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CaduceusError(f"{path}: not a folder: a model is a folder with config.json and model.safetensors")
        path = run_folder_model(path)
        return path, {"id": str(path.resolve()), "revision": None}
    check_hub_id(name, revision)
    return _download(name, revision), {"id": name, "revision": revision}


def run_folder_model(folder: Path) -> Path:
    """A pretraining run folder (``caduceus pretrain -o RUN``) stands for its final model, RUN/final;
    any other folder is itself. A run without a final model yet is refused, naming what to do."""
    if not (folder / "run.json").is_file() or (folder / "config.json").is_file():
        return folder
    final = folder / "final"
    if (final / "config.json").is_file():
        log.info("%s is a pretraining run folder: loading its final model %s", folder, final)
        return final
    checkpoints = sorted(folder.glob("checkpoint-*/config.json"), key=lambda p: int(p.parent.name.split("-")[-1])
                         if p.parent.name.split("-")[-1].isdigit() else -1)
    latest = f"; its latest checkpoint is {checkpoints[-1].parent}" if checkpoints else ""
    raise CaduceusError(f"{folder}: a pretraining run folder without a final model yet (the run has not "
                        f"finished: continue it with caduceus pretrain --resume {folder}){latest}")


def check_hub_id(name: str, revision: str | None = None) -> None:
    """Refuse, before any network call, a name that is not a Hugging Face hub id or a revision that is
    not a plain git ref (URLs, '..', absolute paths, odd characters, over-long names)."""
    if not HUB_ID.match(name):
        raise CaduceusError(f"{name[:120]}: no such model folder, and not a Hugging Face hub id "
                            "(owner/name: letters, digits, '-', '_', '.', up to 96 characters each)")
    if revision is not None and (not isinstance(revision, str) or not HUB_REVISION.match(revision)
                                 or revision.endswith(("/", ".lock"))):
        raise CaduceusError(f"--revision {str(revision)[:120]!r}: not a branch, tag or commit of a hub repository")


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError as e:  # pragma: no cover - a core dependency
        raise CaduceusError("huggingface_hub is needed to load hub models: pip install huggingface_hub") from e
    offline = env_flag("HF_HUB_OFFLINE")
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
    except pickle.UnpicklingError:  # torch's own text advises loading the file unsafely: never shown
        raise CaduceusError(f"{path}: cannot be read as a weights file: it holds Python objects other than "
                            "tensors, which could run code and are never loaded; use a model.safetensors "
                            "(or a pytorch_model.bin of tensors only) from a source you trust") from None
    except Exception as e:  # noqa: BLE001 - corrupt or hostile files
        raise CaduceusError(f"{path}: cannot be read as a weights file ({e.__class__.__name__}: "
                            f"{_first_line(str(e))}): a truncated or corrupt file?") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CaduceusError(f"{path}: expected a flat dictionary of tensors")
    return state, path


def _first_line(text: str, limit: int = 120) -> str:
    """The first sentence of a library's message, without terminal escapes or control bytes."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).strip()
    first = text.splitlines()[0] if text else ""
    first = "".join(ch if ch.isprintable() else " " for ch in first).split(". ")[0]
    return first[:limit] + ("..." if len(first) > limit else "")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Mismatches up to this many values are left to load_state_dict_strict, which names each tensor.
SIZE_SLACK = 1 << 24


def check_size_fits(config: CaduceusConfig, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse, before the model is built, a config.json that describes a model far larger than its
    weights: a corrupt or hostile config must not make us allocate what the file does not hold."""
    needed, held = model_numel(config), sum(t.numel() for t in state.values())
    if needed > held + SIZE_SLACK:
        raise CaduceusError(f"{source}: config.json describes a model of {needed:,} values but the weights hold "
                            f"{held:,}: they do not belong together")


def model_numel(config: CaduceusConfig) -> int:
    """Values of ``CaduceusForMaskedLM(config)``, tied parameters counted once, buffers included, from
    the module shapes alone (tests/test_security.py compares it with built models)."""
    d, di, r, ssm = config.d_model, config.d_inner, config.dt_rank, config.ssm_cfg
    n, k = ssm["d_state"], ssm["d_conv"]
    projections = d * 2 * di + di * d + (2 * di + d) * bool(ssm["bias"])  # in_proj, out_proj: tied across directions
    own = di * k + di * bool(ssm["conv_bias"]) + di * (r + 2 * n) + r * di + di + di * n + di
    directions = 1 + config.bidirectional
    mixer = own * directions + projections * (1 if config.bidirectional_weight_tie else directions)
    norm = d if config.rms_norm else 2 * d
    vocab = config.padded_vocab_size
    complement_maps = 2 * vocab if config.rcps else 0  # buffers of the PS embedding and LM head
    complement_ids = vocab  # the backbone's complement of every token id (a buffer of every model)
    return vocab * d + config.n_layer * (mixer + norm) + norm + complement_maps + complement_ids


def load_state_dict_strict(model: CaduceusForMaskedLM, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` name by name; every mismatch is reported, by name."""
    expected = model.state_dict()
    tied = model.tied_parameter_names()
    # complement maps are built from config.json, not learned: a file may omit them (a classifier
    # saved from a PS model has no LM head, so no lm_head.complement_map); present, they must agree
    derived = {k for k, _ in model.named_buffers() if k.rsplit(".", 1)[-1] == "complement_map"}
    missing = [k for k in expected if k not in state and k not in tied and k not in derived]
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

    ``device`` defaults to CPU; ``dtype`` is the compute dtype of its inference passes (auto, fp32,
    bf16; None means auto: see ``precision.compute_dtype``), kept as ``model.compute_dtype``
    (the weights stay fp32);
    ``backend`` picks the selective-scan kernels (``scan.BACKENDS``): 'auto' (triton on CUDA, numba
    on CPU), 'triton', 'numba', 'torch' (plain PyTorch, everywhere) or 'mamba-ssm' (alias 'cuda';
    needs the optional ``[cuda]`` extra).
    A classifier folder gives its backbone (the masked-LM head is tied to the embedding).
    """
    folder, source = resolve_model_dir(name_or_path, revision)
    config = CaduceusConfig.from_json(folder / "config.json")
    state, weights_path = read_state_dict(folder)
    if is_classifier(config):  # a fine-tuned classifier: its backbone (the LM head is tied to it)
        state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_HEAD_PREFIX)}
    check_size_fits(config, state, str(weights_path))
    model = CaduceusForMaskedLM(config)
    load_state_dict_strict(model, state, str(weights_path))
    return _place(model, folder, source, weights_path, device, dtype, backend)


def _place(model, folder: Path, source: dict, weights_path: Path, device, dtype, backend: str):
    """Move a loaded model, set its compute dtype and backend, record where it came from; eval mode."""
    from .kernels.scan import resolve_backend
    from .precision import check_dtype

    device = torch.device(device) if device is not None else torch.device("cpu")
    model.compute_dtype = check_dtype(dtype)
    model.to(device=device)
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


# -- sequence classifiers (fine-tuned models and probes) ---------------------------------------
CLASSIFIER_ARCHITECTURE = "CaduceusForSequenceClassification"
CLASSIFIER_HEAD_PREFIX = "score."
HEAD_FORMAT_VERSION = 1
TASKS = ("classification", "regression")


def is_classifier(config: CaduceusConfig) -> bool:
    """Whether a config.json describes a sequence classifier (ours or the official HF class)."""
    return CLASSIFIER_ARCHITECTURE in (config.extra.get("architectures") or [])


def head_settings(config: CaduceusConfig, source: str = "config") -> dict:
    """The classifier head of a config: task, label names, pooling, RC handling, bias, max length.

    Our classifiers write them under ``classifier``; a classifier saved by the official HF code
    has only ``num_labels``/``id2label``, read with the official defaults (mean pooling, no bias,
    no conjoining).
    """
    extra = config.extra
    head = dict(extra.get("classifier") or {})
    if head.get("format_version", HEAD_FORMAT_VERSION) != HEAD_FORMAT_VERSION:
        raise CaduceusError(f"{source}: classifier format version {head.get('format_version')!r} is not "
                            f"{HEAD_FORMAT_VERSION}; upgrade caduceus-cli")
    task = head.get("task") or ("regression" if extra.get("problem_type") == "regression" else "classification")
    if task not in TASKS:
        raise CaduceusError(f"{source}: classifier task {task!r} is not one of {', '.join(TASKS)}")
    names = head.get("label_names")
    if names is None and task == "classification":
        id2label = extra.get("id2label") or {}
        count = int(extra.get("num_labels") or len(id2label) or 2)
        names = [id2label.get(str(i), i) for i in range(count)]
    pooling = head.get("pooling", extra.get("pooling_strategy", "mean"))
    if pooling not in POOLINGS:
        raise CaduceusError(f"{source}: classifier pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    return {
        "task": task, "label_names": names if task == "classification" else None,
        "num_outputs": len(names) if task == "classification" else 1,
        "pooling": pooling, "center_width": int(head.get("center_width", 1)),
        "conjoin_train": bool(head.get("conjoin_train", extra.get("conjoin_train", False))),
        "conjoin_eval": bool(head.get("conjoin_eval", extra.get("conjoin_eval", False))),
        "bias": bool(head.get("bias", False)), "max_length": head.get("max_length"),
        "protocol": head.get("protocol"),
    }


def new_classifier(backbone_config: CaduceusConfig, *, task: str, label_names: list | None, pooling: str = "mean",
                   center_width: int = 1, conjoin_train: bool = False, conjoin_eval: bool = True,
                   protocol: str = "finetune", max_length: int | None = None) -> CaduceusForSequenceClassification:
    """A classifier with a new head over a copy of ``backbone_config`` (weights to be loaded), its
    head described in the config so that the saved folder reloads as it was."""
    import copy

    config = copy.deepcopy(backbone_config)
    head = {"format_version": HEAD_FORMAT_VERSION, "task": task, "protocol": protocol,
            "label_names": list(label_names) if task == "classification" else None, "pooling": pooling,
            "center_width": center_width, "conjoin_train": conjoin_train, "conjoin_eval": conjoin_eval,
            "bias": True, "max_length": max_length}
    config.extra["architectures"] = [CLASSIFIER_ARCHITECTURE]
    config.extra["classifier"] = head
    if task == "classification":
        config.extra["num_labels"] = len(label_names)
        config.extra["id2label"] = {str(i): str(name) for i, name in enumerate(label_names)}
        config.extra["label2id"] = {str(name): i for i, name in enumerate(label_names)}
        config.extra["problem_type"] = "single_label_classification"
    else:
        config.extra["num_labels"] = 1
        config.extra["problem_type"] = "regression"
        for key in ("id2label", "label2id"):
            config.extra.pop(key, None)
    return _classifier_from(config, "config")


def _classifier_from(config: CaduceusConfig, source: str) -> CaduceusForSequenceClassification:
    head = head_settings(config, source)
    model = CaduceusForSequenceClassification(config, head["num_outputs"], head["pooling"], head["conjoin_eval"],
                                              conjoin_train=head["conjoin_train"],
                                              center_width=head["center_width"], bias=head["bias"])
    model.head = head
    return model


def load_classifier(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, revision: str | None = None,
                    backend: str = "auto") -> CaduceusForSequenceClassification:
    """Load a sequence classifier (``caduceus finetune classify`` or ``probe`` output) in eval mode;
    ``model.head`` holds its task, label names, pooling and RC handling."""
    folder, source = resolve_model_dir(name_or_path, revision)
    config = CaduceusConfig.from_json(folder / "config.json")
    if not is_classifier(config):
        raise CaduceusError(f"{folder}: is a language model, not a classifier; fine-tune one with "
                            "`caduceus finetune classify` or `caduceus finetune probe`")
    state, weights_path = read_state_dict(folder)
    check_size_fits(config, state, str(weights_path))
    model = _classifier_from(config, str(folder / "config.json"))
    load_state_dict_strict(model, state, str(weights_path))
    return _place(model, folder, source, weights_path, device, dtype, backend)


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
