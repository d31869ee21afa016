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

from ..errors import CaduceusError

# Official character vocabulary: 7 specials, then A C G T N.
DEFAULT_COMPLEMENT_MAP = {i: i for i in range(16)} | {7: 10, 8: 9, 9: 8, 10: 7}

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

        for name in ("d_model", "n_layer", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{name} must be a positive integer, got {value!r}")
        if self.bidirectional_strategy not in BIDIRECTIONAL_STRATEGIES:
            raise bad(
                f"bidirectional_strategy must be one of {', '.join(BIDIRECTIONAL_STRATEGIES)}, "
                f"got {self.bidirectional_strategy!r}"
            )
        # rcps without bidirectional is allowed, as in the official code: RC equivariance holds per strand.
        unknown = set(self.ssm_cfg) - set(DEFAULT_SSM_CFG) - {"layer_idx"}
        if unknown:
            raise bad(f"ssm_cfg has unknown keys {sorted(unknown)}")
        r = self.ssm_cfg["dt_rank"]
        if r != "auto" and (not isinstance(r, int) or r <= 0):
            raise bad(f"ssm_cfg.dt_rank must be 'auto' or a positive integer, got {r!r}")
        for key in ("d_state", "d_conv", "expand"):
            v = self.ssm_cfg[key]
            if not isinstance(v, (int, float)) or v <= 0:
                raise bad(f"ssm_cfg.{key} must be positive, got {v!r}")
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
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CaduceusError(f"{path}: no config.json in this folder") from None
        except json.JSONDecodeError as e:
            raise CaduceusError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_dict(data, source=str(path))

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
