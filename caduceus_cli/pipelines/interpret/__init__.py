"""Interpretation: which bases drive a model's output (mutagenesis, attribution, sequence logos)."""
