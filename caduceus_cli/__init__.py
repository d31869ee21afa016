"""caduceus-cli: the Caduceus DNA language models for bioinformaticians.

The Python API mirrors the command line; heavy modules (torch) load on first use::

    import caduceus_cli as cc
    model = cc.load_model("bundled")           # or a folder, or a HuggingFace hub id
    out = model(cc.tokenize(["ACGTN" * 100]))  # .last_hidden_state, .logits
"""

from ._version import __version__
from .errors import CaduceusError
from .lazy import lazy_getattr

_LAZY = {
    "load_model": "model.checkpoint",
    "save_model": "model.checkpoint",
    "tokenize": "model.tokenizer",
    "reverse_complement": "dna",
    "CaduceusConfig": "model.config",
    "CaduceusForMaskedLM": "model.caduceus",
    "CaduceusForSequenceClassification": "model.caduceus",
    "model_info": "model.info",
    "doctor_report": "model.info",
    "score_variants": "pipelines.variants",
    "train_svm": "pipelines.svm",
    "load_svm": "pipelines.svm_model",
    "read_tss": "genome.tss",
    "embed_regions": "pipelines.embed",
    "finetune_classifier": "pipelines.finetune.classify",
    "fit_probe": "pipelines.finetune.probe",
    "predict": "pipelines.finetune.predict",
    "plot_logo": "pipelines.interpret.logo",
    "read_labeled_sequences": "genome.labeled",
    "LabeledSequences": "genome.labeled",
    "load_classifier": "model.checkpoint",
    "run_benchmark": "pipelines.benchmark",
    "ism": "pipelines.interpret.ism",
    "write_track": "pipelines.interpret.track",
    "calibrate": "pipelines.interpret.calibrate",
}

__all__ = ["__version__", "CaduceusError", *_LAZY]

__getattr__ = lazy_getattr(__name__, _LAZY)
