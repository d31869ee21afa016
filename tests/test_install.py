"""An installed package is never written to: compiled kernels and other caches go to one user cache."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, console_command

EXAMPLES = REPO / "caduceus_cli" / "data" / "examples"


def test_cache_root_is_caduceus_cache_else_xdg_else_home(monkeypatch, tmp_path):
    from caduceus_cli.cache import cache_dir, cache_root

    monkeypatch.setenv("CADUCEUS_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.setenv("CADUCEUS_CACHE", "")
    assert cache_root() == tmp_path / "xdg" / "caduceus"
    monkeypatch.delenv("CADUCEUS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "caduceus"
    assert cache_dir("numba") == cache_root() / "numba"


def test_feature_and_benchmark_caches_share_the_one_root(monkeypatch, tmp_path):
    from caduceus_cli.pipelines.benchmark.sources import default_cache
    from caduceus_cli.pipelines.finetune.probe import default_cache_dir

    monkeypatch.delenv("CADUCEUS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "caduceus" / "features"
    assert default_cache() == tmp_path / "caduceus" / "benchmark"


def test_benchmark_cache_default_is_the_same_in_help_docs_and_code(monkeypatch):
    from caduceus_cli.pipelines.benchmark.sources import default_cache

    monkeypatch.delenv("CADUCEUS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache() == Path.home() / ".cache" / "caduceus" / "benchmark"
    shown = subprocess.run(console_command("benchmark", "--help"), capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "400", "TERM": "dumb"})
    assert shown.returncode == 0 and "~/.cache/caduceus/benchmark" in shown.stdout
    for page in ("docs/benchmarks.md", "docs/cli.md", "docs/finetune.md"):
        text = (REPO / page).read_text()
        assert "caduceus-cli/" not in text and ".cache/caduceus-cli" not in text, page
    assert "~/.cache/caduceus/benchmark" in (REPO / "docs" / "benchmarks.md").read_text()


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _install_copy(tmp_path: Path) -> Path:
    """``pip install --target`` of a copy of the sources (the checkout gets no build/ or egg-info)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "caduceus_cli", source / "caduceus_cli", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)]
    offline = subprocess.run(pip + ["--no-build-isolation", "--no-index"], capture_output=True, text=True)
    if offline.returncode != 0:  # no setuptools in this environment: let pip fetch the build backend
        subprocess.run(pip, check=True, capture_output=True)
    return target


def _embed_with(target: Path, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "CADUCEUS_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}
    env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run([str(target / "bin" / "caduceus"), "embed", EXAMPLES / "synthetic_genome.fa",
                           EXAMPLES / "synthetic_regions.bed", "-o", cwd / "emb.parquet", "--device", "cpu"],
                          cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_embed_writes_nothing_inside_the_installed_package_even_read_only(tmp_path):
    target = _install_copy(tmp_path)
    package = target / "caduceus_cli"
    where = subprocess.run([sys.executable, "-c", "import caduceus_cli; print(caduceus_cli.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert where.stdout.strip() == str(package / "__init__.py")  # the copy runs, not the checkout
    installed = _listing(package)

    first = _embed_with(target, tmp_path / "cache", tmp_path)
    assert first.returncode == 0, first.stderr
    assert _listing(package) == installed  # numba compiled into the user cache, not the package
    assert list((tmp_path / "cache" / "numba").rglob("*.nbi")), "numba's cache is not in <cache root>/numba"

    os.remove(tmp_path / "emb.parquet")
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:  # a read-only install and a cache that cannot be written: compiled in memory, nothing left
        second = _embed_with(target, not_a_folder, tmp_path)
        assert second.returncode == 0, second.stderr
        assert (tmp_path / "emb.parquet").is_file()
        assert _listing(package) == installed
    finally:
        for path in [target, *target.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
