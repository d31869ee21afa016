"""caduceus-cli: the Caduceus DNA language models for bioinformaticians.

The Python API mirrors the command line; heavy modules (torch) load on first use::

    import caduceus_cli as cc
    model = cc.load_model("bundled")           # or a folder, or a HuggingFace hub id
    out = model(cc.tokenize(["ACGTN" * 100]))  # .last_hidden_state, .logits
"""

from ._version import __version__
from .errors import CaduceusError

_LAZY = {
    "load_model": ("model.checkpoint", "load_model"),
    "save_model": ("model.checkpoint", "save_model"),
    "tokenize": ("model.tokenizer", "tokenize"),
    "reverse_complement": ("model.tokenizer", "reverse_complement"),
    "CaduceusConfig": ("model.config", "CaduceusConfig"),
    "CaduceusForMaskedLM": ("model.caduceus", "CaduceusForMaskedLM"),
    "CaduceusForSequenceClassification": ("model.caduceus", "CaduceusForSequenceClassification"),
    "model_info": ("model.info", "model_info"),
    "doctor_report": ("model.info", "doctor_report"),
    "score_variants": ("pipelines.variants", "score_variants"),
    "train_svm": ("pipelines.svm", "train_svm"),
    "load_svm": ("pipelines.svm_model", "load_svm"),
    "read_tss": ("genome.tss", "read_tss"),
    "embed_regions": ("pipelines.embed", "embed_regions"),
    "finetune_classifier": ("pipelines.finetune.classify", "finetune_classifier"),
    "fit_probe": ("pipelines.finetune.probe", "fit_probe"),
    "predict": ("pipelines.finetune.predict", "predict"),
    "read_labeled_sequences": ("genome.labeled", "read_labeled_sequences"),
    "LabeledSequences": ("genome.labeled", "LabeledSequences"),
    "load_classifier": ("model.checkpoint", "load_classifier"),
    "run_benchmark": ("pipelines.benchmark", "run_benchmark"),
}

__all__ = ["__version__", "CaduceusError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'caduceus_cli' has no attribute {name!r}")
