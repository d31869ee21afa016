"""Caduceus models: configuration, modules, selective-scan backends, checkpoints."""

from .caduceus import CaduceusForMaskedLM, CaduceusForSequenceClassification, CaduceusOutput
from .checkpoint import load_model, save_model
from .config import CaduceusConfig
from .strands import rc_hidden, strand_stack
from .tokenizer import reverse_complement, reverse_complement_ids, tokenize

__all__ = ["CaduceusConfig", "CaduceusForMaskedLM", "CaduceusForSequenceClassification", "CaduceusOutput",
           "load_model", "save_model", "tokenize", "reverse_complement", "reverse_complement_ids",
           "rc_hidden", "strand_stack"]
