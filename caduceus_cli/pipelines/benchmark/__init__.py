"""`caduceus benchmark`: the paper's evaluations as one command, with reports people can read.

- :mod:`.registry`: suites, tasks, metrics, classes and published figures (with their sources)
- :mod:`.sources` / :mod:`.download`: where the data live; Hugging Face and HTTP downloads
- :mod:`.loaders`: the splits of a task in its source's own layout
- :mod:`.baseline`: the k-mer logistic regression
- :mod:`.run`: :func:`run_benchmark`; :mod:`.eqtl` and :mod:`.speed`: the other two kinds of suite
- :mod:`.report`: results.jsonl, summary.md, summary.png
"""

from .run import run_benchmark

__all__ = ["run_benchmark"]
