"""The documentation cannot drift from the code: the CLI reference is generated, and every run the
docs keep in docs/runs/ is cited by them."""

from __future__ import annotations

import fnmatch
import importlib.util
import re

from .conftest import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_app():
    assert _generator().render() == (REPO / "docs" / "cli.md").read_text(), \
        "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_cli_reference_lists_the_options_older_docs_missed():
    text = (REPO / "docs" / "cli.md").read_text()
    for option in ("--tissue", "--n-train", "--dtype", "--seed", "--revision"):
        assert f"`{option}`" in text


def _expand(pattern: str) -> list[str]:
    """``a_{x,y}.json`` -> ``a_x.json``, ``a_y.json``."""
    match = re.search(r"\{([^}]*)\}", pattern)
    if not match:
        return [pattern]
    return [p for alt in match.group(1).split(",")
            for p in _expand(pattern[:match.start()] + alt + pattern[match.end():])]


def test_every_file_in_docs_runs_is_cited_by_the_docs():
    text = "\n".join(p.read_text() for p in [*(REPO / "docs").glob("*.md"), REPO / "README.md"])
    patterns = [q for p in re.findall(r"runs/([\w.*{},-]+)", text) for q in _expand(p.rstrip(".,"))]
    uncited = [f.name for f in sorted((REPO / "docs" / "runs").iterdir())
               if not any(fnmatch.fnmatch(f.name, p) for p in patterns)]
    assert uncited == []
