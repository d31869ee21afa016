"""A saved variant-effect SVM (see :mod:`caduceus_cli.pipelines.svm` for the training): its folder,
its distance-to-TSS buckets and its decision function, recomputed from plain arrays without pickle.

Used by score-variants (``--svm``) and written by ``caduceus finetune svm``; it imports nothing
from either, so the scorer and the trainer do not import each other.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import CaduceusError
from ..limits import MAX_BASES, MAX_BATCH

if TYPE_CHECKING:  # pragma: no cover  (numpy is imported where used: the command line reads the
    import numpy as np  # constants below at start-up and should not pay for it)

BUCKETS = ((0, 30_000), (30_000, 100_000), (100_000, None))
BUCKET_NAMES = ("0-30kbp", "30-100kbp", ">100kbp")
CS = (1, 5, 10)
SEEDS = (1, 2, 3, 4, 5)
N_TRAIN = 5000  # training subsample per fit, as the paper's notebook
DEFAULT_TEST_FRACTION = 0.2  # genomic hold-out when no --test set is given
FEATURE_DEFINITION = ("concat(mean_L(strand_avg(last_hidden(ref_window))), mean_L(strand_avg(last_hidden(alt_window))))"
                      " [+ tissue code]; window centred on the variant (centre token = first REF base), indels "
                      "length-matched")
FORMAT_VERSION = 1
# (minimum, maximum) of the size options of `finetune svm` (limits.check_size)
SVM_LIMITS = {"n_train": (1, MAX_BATCH), "window": (3, MAX_BASES), "context": (3, MAX_BASES),
              "batch_size": (1, MAX_BATCH)}


def bucket_of(distance: int | None) -> int | None:
    if distance is None or distance < 0:
        return None
    for k, (lo, hi) in enumerate(BUCKETS):
        if distance >= lo and (hi is None or distance < hi):
            return k
    return None


def rbf_decision(arrays: dict[str, np.ndarray], i: int, X: np.ndarray) -> np.ndarray:
    """scikit-learn's binary SVC decision function, recomputed from the saved arrays of model ``i``."""
    import numpy as np

    Z = (np.asarray(X, dtype=np.float64) - arrays[f"s{i}_mean"]) / arrays[f"s{i}_scale"]
    sv = arrays[f"s{i}_support_vectors"]
    sq = (Z ** 2).sum(1)[:, None] + (sv ** 2).sum(1)[None, :] - 2.0 * Z @ sv.T
    K = np.exp(-arrays[f"s{i}_gamma"][0] * np.maximum(sq, 0.0))
    return K @ arrays[f"s{i}_dual_coef"] + arrays[f"s{i}_intercept"][0]


class SvmModel:
    """A saved SVM folder: ``decision(X, distances, tissues)`` averages the seeds' decision functions
    of the bucket of each variant (NaN where the bucket has no model)."""

    def __init__(self, folder: str | os.PathLike):
        import numpy as np

        self.folder = Path(folder)
        meta_path = self.folder / "svm.json"
        if not meta_path.is_file():
            raise CaduceusError(f"{self.folder}: not a caduceus SVM folder (no svm.json); train one with "
                                "`caduceus finetune svm`")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise CaduceusError(f"{meta_path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if self.meta.get("format") != "caduceus-svm" or self.meta.get("format_version") != FORMAT_VERSION:
            raise CaduceusError(f"{meta_path}: format {self.meta.get('format')!r} version {self.meta.get('format_version')!r} "
                                f"is not caduceus-svm version {FORMAT_VERSION}")
        digest = hashlib.sha256(meta_path.read_bytes())
        self.buckets: dict[int, dict[str, np.ndarray]] = {}
        for k_str, info in sorted(self.meta["buckets"].items()):
            if info.get("file"):
                path = self.folder / info["file"]
                if not path.is_file():
                    raise CaduceusError(f"{path}: missing (listed in {meta_path})")
                digest.update(path.read_bytes())
                with np.load(path, allow_pickle=False) as z:
                    self.buckets[int(k_str)] = {k: z[k] for k in z.files}
        self.sha256 = digest.hexdigest()

    @property
    def n_seeds(self) -> int:
        return len(self.meta["seeds"])

    @property
    def features(self) -> str:
        """'paper' or 'mean' (folders written before the paper's features existed: 'mean')."""
        return self.meta.get("feature_set", "mean")

    @property
    def context(self) -> int:
        """Bases the model read around each variant (older folders: the window)."""
        return int(self.meta.get("context") or self.meta["window"])

    def check_compatible(self, model, window: int, tissue: str | None, context: int | None = None) -> None:
        want = self.meta["model_sha256"]
        have = (getattr(model, "source", {}) or {}).get("sha256")
        if want != have:
            raise CaduceusError(f"{self.folder}: this SVM was trained on features of model {self.meta['model']} "
                                f"(sha256 {str(want)[:12]}...), not of the model given ({(model.source or {}).get('id')}, "
                                f"sha256 {str(have)[:12]}...); use --model {self.meta['model']} or retrain")
        if window != self.meta["window"]:
            raise CaduceusError(f"{self.folder}: trained with --window {self.meta['window']}, not {window}")
        if context is not None and context != self.context:
            raise CaduceusError(f"{self.folder}: trained with --context {self.context}, not {context}")
        if self.meta["use_tissue"] and tissue is None:
            raise CaduceusError(f"{self.folder}: trained with the tissue as a feature: give --tissue "
                                f"(one of {', '.join(self.meta['tissues'])})")
        if self.meta["use_tissue"] and tissue not in self.meta["tissues"]:
            raise CaduceusError(f"--tissue {tissue!r} was not in the training set ({', '.join(self.meta['tissues'])})")

    def decision(self, X: np.ndarray, distances: Sequence[int], tissues: Sequence[str | None] | None = None) -> np.ndarray:
        import numpy as np

        X = np.asarray(X, dtype=np.float64)
        if self.meta["use_tissue"]:
            index = {t: i for i, t in enumerate(self.meta["tissues"])}
            X = np.concatenate([X, np.array([[index.get(t, -1)] for t in tissues], dtype=np.float64)], axis=1)
        out = np.full(len(X), np.nan)
        buckets = np.array([-1 if bucket_of(d) is None else bucket_of(d) for d in distances])
        for k, arrays in self.buckets.items():
            sel = buckets == k
            if sel.any():
                out[sel] = np.mean([rbf_decision(arrays, i, X[sel]) for i in range(self.n_seeds)], axis=0)
        return out


def load_svm(folder: str | os.PathLike) -> SvmModel:
    """The SVM saved in ``folder`` by ``caduceus finetune svm``."""
    return SvmModel(folder)


