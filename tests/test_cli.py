"""The root command through the real console script: usage errors are one line with exit status 2."""

from __future__ import annotations

import pytest

from .conftest import console

@pytest.mark.parametrize("args, fragments", [
    (["nosuch"], ["No such command 'nosuch'", "caduceus --help"]),
    (["embed", "--bogus-flag"], ["embed: No such option: --bogus-flag", "caduceus embed --help"]),
    (["embed"], ["embed: Missing argument 'FASTA'"]),
    (["score-variants", "in.vcf"], ["score-variants: Missing option '--fasta'"]),
    (["embed", "g.fa", "--window", "1.5"], ["embed: Invalid value for '--window'"]),
    (["finetune", "svm", "x.tsv", "--n-train", "many"], ["finetune svm: Invalid value for '--n-train'"]),
    (["models", "info", "--bogus"], ["models info: No such option: --bogus"]),
])
def test_usage_errors_are_one_line_with_exit_status_2(args, fragments):
    """Defect: with Typer 0.29 (click vendored as typer._click) these printed a traceback."""
    result = console(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args", [[], ["finetune"], ["models"]])
def test_a_bare_group_prints_its_help(args):
    result = console(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "Usage:" in result.stderr + result.stdout  # rich help goes to stdout, plain click help to stderr
