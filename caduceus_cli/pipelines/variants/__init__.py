"""Variant effect scores from a Caduceus masked LM: VCF in, annotated VCF (or TSV) out.

Per ALT allele, on a window of ``window`` bp (default 1,536) whose centre token ``window // 2``
is the first base of REF (N-padded past contig ends):

- ``llr`` (SNVs): log P(alt) - log P(ref) of the masked-LM head at the masked centre. Caduceus-PS:
  one pass (its LM head sums both strands and is RC-equivariant, so the RC pass would give the same
  number); Caduceus-Ph: the forward pass and the pass on the reverse-complemented window, averaged.
  One masked window serves every ALT at a site. Not defined for indels and MNVs (left missing).
- ``embed_cos`` / ``embed_l2``: cosine distance (1 - cos) and Euclidean distance between the
  strand-averaged mean embeddings (last layer) of the reference window and the alternative window.
  Indels use length-matched windows: the alternative window keeps the same left flank and takes as
  much right flank as needed to stay ``window`` bp long (an insertion longer than the right half is
  cut to fit).
- ``svm``: decision function of a classifier trained by :func:`caduceus_cli.pipelines.svm.train_svm`
  on [ref embedding, alt embedding] for the variant's distance-to-TSS bucket.

Modules: ``settings`` (options, defaults), ``scorer`` (records -> scores), ``outputs`` (INFO
fields, TSV rows, headers), ``run`` (``score_variants``). Names load on first use, so that the
command line reads the settings without numpy or torch.
"""

from __future__ import annotations

from ...lazy import lazy_getattr

_NAMES = {
    "score_variants": "run",
    "VariantScorer": "scorer", "RecordResult": "scorer", "classify_alt": "scorer",
    "ScoreSettings": "settings", "validate_scores": "settings", "SCORES": "settings", "DEFAULT_SCORES": "settings",
    "DEFAULT_WINDOW": "settings", "DEFAULT_CHUNK": "settings", "DEFAULT_BATCH": "settings",
    "MISSING_CONTIG": "settings",
    "INFO_FIELDS": "outputs", "OUR_KEYS": "outputs",
}

__all__ = list(_NAMES)

__getattr__ = lazy_getattr(__name__, _NAMES)
