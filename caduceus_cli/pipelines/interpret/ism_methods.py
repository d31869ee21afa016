"""The scores of in-silico saturation mutagenesis: every position of a stretch, each of the three
other bases, by one or several methods.

Language-model methods reuse score-variants' scorer (``variants.scorer.VariantScorer``) on one
record per position whose ALTs are the three other bases, so that a position scores exactly as the
same SNV scores in ``score-variants`` with the same window:

- ``masked``: log p(alt) - log p(ref) at the masked centre of a ``window`` bp window centred on the
  position (score-variants' ``llr``), one masked pass per position shared by its three ALTs;
- ``wt-marginal``: the same ratio read from unmasked tiles on a fixed grid (``marginal.py``; the
  ``llr`` of ``score-variants --llr-method wt-marginal``), one pass per tile of positions;
- ``embedding``: 1 - cosine similarity between the strand-averaged mean embeddings of the window
  centred on the position and of the same window carrying the ALT (score-variants' ``embed_cos``):
  three mutated windows and one reference window per position.

``classifier`` (a fine-tuned classifier or probe): the region is the classifier's input, as
``predict`` reads a BED region; each base is mutated in turn and the score is the change of the
probability of one class (the reference's predicted class unless one is named): p(mutated) -
p(reference); for a regression head, the change of the predicted value.
"""

from __future__ import annotations

import numpy as np

from ...dna import VOCAB, encode
from ...errors import CaduceusError
from ...genome.vcf import VcfRecord
from ..inference import predict_logits
from ..variants.scorer import VariantScorer
from .settings import CLASSIFIER, ISM_METHODS
from .targets import Target

METHODS = ISM_METHODS
BASES = "ACGT"
_SCORE_OF = {"masked": "llr", "wt-marginal": "llr", "embedding": "embed_cos"}


def column(method: str) -> str:
    """The output column of a method (``wt-marginal`` -> ``wt_marginal``)."""
    return method.replace("-", "_")


def validate_methods(methods, classifier: bool) -> tuple[str, ...]:
    """The methods asked for (comma-separated text or a list), without repeats; ``classifier`` is the
    only method of a classifier model and not one of a language model."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(dict.fromkeys(methods or ([CLASSIFIER] if classifier else ["masked"])))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise CaduceusError(f"--method: unknown method {', '.join(bad) or '(none given)'}; choose from "
                            f"{', '.join(METHODS)}")
    if classifier and methods != (CLASSIFIER,):
        raise CaduceusError(f"--model is a fine-tuned classifier: its method is {CLASSIFIER} (give a language model "
                            f"for {', '.join(m for m in methods if m != CLASSIFIER)})")
    if not classifier and CLASSIFIER in methods:
        raise CaduceusError("--method classifier needs --model DIR of a fine-tuned classifier or probe "
                            "(caduceus finetune classify/probe)")
    return methods


def substitutions(reference, target: Target, start: int, end: int) -> tuple[list[int], list[str]]:
    """(1-based positions, reference bases) of [start, end) whose base is A, C, G or T (upper-cased;
    N and other codes have no three alternatives and are left out)."""
    sequence, _ = reference.fetch(target.contig, start, end)
    keep = [(start + i + 1, b) for i, b in enumerate(sequence.upper()) if b in BASES]
    return [p for p, _ in keep], [b for _, b in keep]


def alternatives(ref: str) -> list[str]:
    return [b for b in BASES if b != ref]


class LanguageModelIsm:
    """The scores of the language-model methods for positions of a target."""

    def __init__(self, model, reference, methods: tuple[str, ...], window: int, flank: int, batch_size: int):
        self.methods = methods
        self.scorers = {m: VariantScorer(model, reference, (_SCORE_OF[m],), window, batch_size, context=window,
                                         flank=flank, llr_method="wt-marginal" if m == "wt-marginal" else "masked")
                        for m in methods}

    def scores(self, target: Target, positions: list[int], refs: list[str]) -> dict[str, np.ndarray]:
        """{method: (len(positions), 3)} scores, ALTs in ACGT order without the reference base."""
        records = [VcfRecord(target.contig, p, r, alternatives(r), p) for p, r in zip(positions, refs)]
        out = {}
        for method, scorer in self.scorers.items():
            results = scorer.score(records)
            name = _SCORE_OF[method]
            out[method] = np.array([[np.nan if v is None else v for v in r.scores[name]] for r in results],
                                   dtype=np.float64).reshape(len(records), 3)
        return out


class ClassifierIsm:
    """The change of a classifier's output when each base of a target (its input) is mutated."""

    def __init__(self, model, reference, batch_size: int, class_label: str | None = None):
        self.model, self.reference, self.batch_size = model, reference, batch_size
        self.head = model.head
        self.class_label = class_label
        if class_label is not None and self.head["task"] != "regression":
            names = [str(n) for n in self.head["label_names"]]
            if str(class_label) not in names:
                raise CaduceusError(f"--class {class_label}: not a class of this classifier ({', '.join(names)})")
        self._reference: dict[Target, tuple[np.ndarray, int | None, float]] = {}

    def check(self, target: Target) -> None:
        limit = self.head.get("max_length")
        if limit and target.length > int(limit):
            raise CaduceusError(f"{target.name}: {target.length:,} bp is longer than the {int(limit):,} bp this "
                                "classifier reads; give regions of its input length")

    def _outputs(self, tokens: list[np.ndarray]) -> np.ndarray:
        from ..finetune.metrics import outputs_from_logits

        return outputs_from_logits(self.head["task"], predict_logits(self.model, tokens, self.batch_size))

    def reference_output(self, target: Target) -> tuple[np.ndarray, int | None, float]:
        """(token ids of the target, the class scored (None: regression), the reference's value)."""
        if target not in self._reference:
            sequence, _ = self.reference.fetch(target.contig, target.start, target.end)
            ids = encode(sequence, source=f"{self.reference.path}: {target.name}")
            out = self._outputs([ids])[0]
            if self.head["task"] == "regression":
                self._reference[target] = (ids, None, float(out))
            else:
                names = [str(n) for n in self.head["label_names"]]
                k = names.index(str(self.class_label)) if self.class_label is not None else int(np.argmax(out))
                self._reference[target] = (ids, k, float(out[k]))
        return self._reference[target]

    def class_name(self, target: Target) -> str | None:
        k = self.reference_output(target)[1]
        return None if k is None else str(self.head["label_names"][k])

    def scores(self, target: Target, positions: list[int], refs: list[str]) -> dict[str, np.ndarray]:
        ids, k, before = self.reference_output(target)
        mutated = []
        for p, r in zip(positions, refs):
            for alt in alternatives(r):
                row = ids.copy()
                row[p - 1 - target.start] = VOCAB[alt]
                mutated.append(row)
        if not mutated:
            return {CLASSIFIER: np.zeros((0, 3))}
        out = self._outputs(mutated)
        after = out if k is None else out[:, k]
        return {CLASSIFIER: (after.astype(np.float64) - before).reshape(len(positions), 3)}
