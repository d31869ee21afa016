"""Caduceus configuration, read from and written to the HuggingFace ``config.json`` layout.

Every switch the official implementation honours is a field here; fields this code does not use
(``transformers_version``, ``id2label``, ...) are kept in ``extra`` so a saved config.json round-trips.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..dna import complement_ids
from ..errors import CaduceusError

# The official character vocabulary (dna.py), padded to 16 ids.
DEFAULT_COMPLEMENT_MAP = dict(enumerate(complement_ids(16)))

DEFAULT_SSM_CFG: dict[str, Any] = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init": "random",
    "dt_scale": 1.0,
    "dt_init_floor": 1e-4,
    "conv_bias": True,
    "bias": False,
    "use_fast_path": True,
}

DEFAULT_INITIALIZER_CFG: dict[str, Any] = {
    "initializer_range": 0.02,
    "rescale_prenorm_residual": True,
    "n_residuals_per_layer": 1,
}

REQUIRED_FIELDS = ("d_model", "n_layer", "vocab_size")
BIDIRECTIONAL_STRATEGIES = ("add", "ew_multiply")

# What a config.json may ask for: far beyond the published Caduceus checkpoints (d_model 256, 16 layers)
# and Mamba-2.8b's sizes (d_model 2560, 64 layers), narrow enough that a corrupt or hostile file is
# refused in one line before anything is built. A config.json is a few kilobytes; 1 MB is far beyond any real one.
MAX_CONFIG_BYTES = 1 << 20
INT_RANGES = {"d_model": (1, 16384), "n_layer": (1, 512), "vocab_size": (1, 65536),
              "pad_vocab_size_multiple": (1, 1024)}
SSM_INT_RANGES = {"d_state": (1, 1024), "d_conv": (1, 64)}
SSM_NUMBER_RANGES = {"dt_min": (0, 10), "dt_max": (0, 10), "dt_scale": (0, 100)}  # exclusive of 0
BOOL_FIELDS = ("rms_norm", "residual_in_fp32", "fused_add_norm", "bidirectional", "bidirectional_weight_tie", "rcps")
SSM_BOOLS = ("conv_bias", "bias", "use_fast_path")
DT_INITS = ("random", "constant")


@dataclass
class CaduceusConfig:
    d_model: int
    n_layer: int
    vocab_size: int = 12
    ssm_cfg: dict = field(default_factory=lambda: dict(DEFAULT_SSM_CFG))
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = True
    pad_vocab_size_multiple: int = 8
    norm_epsilon: float = 1e-5
    initializer_cfg: dict = field(default_factory=lambda: dict(DEFAULT_INITIALIZER_CFG))
    bidirectional: bool = True
    bidirectional_strategy: str = "add"
    bidirectional_weight_tie: bool = True
    rcps: bool = False
    complement_map: dict | None = None
    pad_token_id: int = 4
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_structure(self)
        self.ssm_cfg = {**DEFAULT_SSM_CFG, **(self.ssm_cfg or {})}
        self.initializer_cfg = {**DEFAULT_INITIALIZER_CFG, **(self.initializer_cfg or {})}
        if self.complement_map is None:
            self.complement_map = dict(DEFAULT_COMPLEMENT_MAP)
        self.complement_map = {int(k): int(v) for k, v in self.complement_map.items()}
        self.validate()

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def padded_vocab_size(self) -> int:
        """Vocabulary rounded up to ``pad_vocab_size_multiple``, as the official model does."""
        m = self.pad_vocab_size_multiple
        return self.vocab_size if self.vocab_size % m == 0 else self.vocab_size + m - self.vocab_size % m

    @property
    def d_inner(self) -> int:
        return int(self.ssm_cfg["expand"] * self.d_model)

    @property
    def dt_rank(self) -> int:
        r = self.ssm_cfg["dt_rank"]
        return math.ceil(self.d_model / 16) if r == "auto" else int(r)

    @property
    def hidden_size(self) -> int:
        """Width of ``last_hidden_state``: PS carries both strands side by side."""
        return 2 * self.d_model if self.rcps else self.d_model

    @property
    def variant(self) -> str:
        return "Caduceus-PS" if self.rcps else ("Caduceus-Ph" if self.bidirectional else "Mamba (uni-directional)")

    def complement_list(self) -> list[int]:
        """Complement of every token id of the padded vocabulary (identity where unmapped)."""
        return [self.complement_map.get(i, i) for i in range(self.padded_vocab_size)]

    # -- validation ----------------------------------------------------------------------------
    def validate(self, source: str = "config") -> None:
        def bad(msg: str) -> CaduceusError:
            return CaduceusError(f"{source}: {msg}")

        problem = range_problem(self)
        if problem:
            raise bad(problem)
        if self.bidirectional_strategy not in BIDIRECTIONAL_STRATEGIES:
            raise bad(
                f"bidirectional_strategy must be one of {', '.join(BIDIRECTIONAL_STRATEGIES)}, "
                f"got {self.bidirectional_strategy!r}"
            )
        # rcps without bidirectional is allowed, as in the official code: RC equivariance holds per strand.
        unknown = set(self.ssm_cfg) - set(DEFAULT_SSM_CFG) - {"layer_idx"}
        if unknown:
            raise bad(f"ssm_cfg has unknown keys {sorted(unknown)}")
        cmap = self.complement_map
        for k, v in cmap.items():
            if not (0 <= k < self.padded_vocab_size and 0 <= v < self.padded_vocab_size):
                raise bad(f"complement_map entry {k}->{v} is outside the vocabulary of {self.padded_vocab_size}")
            if cmap.get(v, v) != k:
                raise bad(f"complement_map is not an involution: {k}->{v} but {v}->{cmap.get(v, v)}")

    # -- (de)serialisation ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "CaduceusConfig":
        if not isinstance(data, dict):
            raise CaduceusError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        if missing:
            raise CaduceusError(f"{source}: missing required field(s) {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except CaduceusError as e:
            raise CaduceusError(str(e).replace("config:", f"{source}:", 1)) from None
        except (TypeError, ValueError) as e:
            raise CaduceusError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "CaduceusConfig":
        path = Path(path)
        return cls.from_dict(read_config_json(path), source=str(path))

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            out[f.name] = copy.deepcopy(getattr(self, f.name))
        out["complement_map"] = {str(k): v for k, v in sorted(self.complement_map.items())}
        out["model_type"] = "caduceus"
        out.setdefault("architectures", ["CaduceusForMaskedLM"])
        return dict(sorted(out.items()))

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def small(cls, variant: str = "ps", d_model: int = 128, n_layer: int = 4, **overrides) -> "CaduceusConfig":
        """A configuration with the published checkpoints' switches at any size."""
        if variant not in ("ps", "ph"):
            raise CaduceusError(f"variant must be 'ps' or 'ph', got {variant!r}")
        return cls(
            d_model=d_model,
            n_layer=n_layer,
            vocab_size=12,
            rcps=variant == "ps",
            fused_add_norm=True,
            residual_in_fp32=False,
            rms_norm=True,
            **overrides,
        )


# -- what a config.json may contain ------------------------------------------------------------------

def read_config_json(path: Path) -> Any:
    """The parsed JSON of a config.json no larger than MAX_CONFIG_BYTES (read no further than that)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CaduceusError(f"{path}: no config.json in this folder") from None
    except OSError as e:
        raise CaduceusError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise CaduceusError(f"{path}: larger than {MAX_CONFIG_BYTES // (1 << 20)} MB: not a model config.json "
                            "(a real one is a few kilobytes)")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CaduceusError(f"{path}: not UTF-8 text (byte {e.start}): not a model config.json") from None
    except json.JSONDecodeError as e:
        raise CaduceusError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except (RecursionError, ValueError) as e:  # nesting too deep; integers with thousands of digits
        raise CaduceusError(f"{path}: not a usable JSON file ({str(e).split(';')[0]})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A JSON number that is not NaN or infinite (any integer is: math.isfinite would overflow on 10**400)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def check_structure(config: CaduceusConfig) -> None:
    """The nested fields are JSON objects of the right kind, before they are merged or converted."""
    for name in ("ssm_cfg", "initializer_cfg", "complement_map"):
        value = getattr(config, name)
        if value is not None and not isinstance(value, dict):
            raise CaduceusError(f"config: {name} must be a JSON object, got {type(value).__name__} {value!r:.40}")
    for key, value in (config.complement_map or {}).items():
        if not (_is_int(key) or (isinstance(key, str) and key.strip().isdecimal() and key.isascii())) \
                or not _is_int(value):
            raise CaduceusError(f"config: complement_map entry {key!r}: {value!r} must map a token id to a token id")


def range_problem(config: CaduceusConfig) -> str | None:
    """What is out of range in ``config`` (one message), or None. Run before any module is built."""
    for name, (low, high) in INT_RANGES.items():
        value = getattr(config, name)
        if not _is_int(value) or not low <= value <= high:
            return f"{name} must be an integer from {low} to {high}, got {value!r}"
    for name in BOOL_FIELDS:
        if not isinstance(getattr(config, name), bool):
            return f"{name} must be true or false, got {getattr(config, name)!r}"
    if not _is_finite(config.norm_epsilon) or not 0 < config.norm_epsilon < 1:
        return f"norm_epsilon must be a number between 0 and 1, got {config.norm_epsilon!r}"
    if config.pad_token_id is not None and (not _is_int(config.pad_token_id)
                                            or not 0 <= config.pad_token_id < config.padded_vocab_size):
        return f"pad_token_id must be a token id below {config.padded_vocab_size}, got {config.pad_token_id!r}"
    return _ssm_problem(config.ssm_cfg) or _initializer_problem(config.initializer_cfg)


def _ssm_problem(ssm: dict) -> str | None:
    for key, (low, high) in SSM_INT_RANGES.items():
        if not _is_int(ssm[key]) or not low <= ssm[key] <= high:
            return f"ssm_cfg.{key} must be an integer from {low} to {high}, got {ssm[key]!r}"
    if not _is_finite(ssm["expand"]) or not 1 <= ssm["expand"] <= 16:
        return f"ssm_cfg.expand must be a number from 1 to 16, got {ssm['expand']!r}"
    if ssm["dt_rank"] != "auto" and (not _is_int(ssm["dt_rank"]) or not 1 <= ssm["dt_rank"] <= 16384):
        return f"ssm_cfg.dt_rank must be 'auto' or an integer from 1 to 16384, got {ssm['dt_rank']!r}"
    for key, (low, high) in SSM_NUMBER_RANGES.items():
        if not _is_finite(ssm[key]) or not low < ssm[key] <= high:
            return f"ssm_cfg.{key} must be a number above {low} and at most {high}, got {ssm[key]!r}"
    if ssm["dt_min"] > ssm["dt_max"]:
        return f"ssm_cfg.dt_min {ssm['dt_min']!r} is larger than dt_max {ssm['dt_max']!r}"
    if not _is_finite(ssm["dt_init_floor"]) or not 0 <= ssm["dt_init_floor"] <= 10:
        return f"ssm_cfg.dt_init_floor must be a number from 0 to 10, got {ssm['dt_init_floor']!r}"
    if ssm["dt_init"] not in DT_INITS:
        return f"ssm_cfg.dt_init must be one of {', '.join(DT_INITS)}, got {ssm['dt_init']!r}"
    for key in SSM_BOOLS:
        if not isinstance(ssm[key], bool):
            return f"ssm_cfg.{key} must be true or false, got {ssm[key]!r}"
    return None


def _initializer_problem(init: dict) -> str | None:
    if not _is_finite(init["initializer_range"]) or not 0 <= init["initializer_range"] <= 10:
        return f"initializer_cfg.initializer_range must be a number from 0 to 10, got {init['initializer_range']!r}"
    if not _is_int(init["n_residuals_per_layer"]) or not 1 <= init["n_residuals_per_layer"] <= 16:
        return ("initializer_cfg.n_residuals_per_layer must be an integer from 1 to 16, "
                f"got {init['n_residuals_per_layer']!r}")
    if not isinstance(init["rescale_prenorm_residual"], bool):
        return ("initializer_cfg.rescale_prenorm_residual must be true or false, "
                f"got {init['rescale_prenorm_residual']!r}")
    return None
