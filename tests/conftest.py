"""Shared fixtures. Real data is read in place from ../shared (CI always has it)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

# Tiny models on a shared 2-core machine run far faster on one thread (no OpenMP threads spinning
# against other processes); set before torch is imported, and inherited by the subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker per core this process may use, at most 4. Each
    test runs on one thread, so two cores run the suite in about 60% of the time of one process."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
GOLDEN = REPO / "tests" / "data" / "golden"  # copied from ../shared/golden (generated for this project)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (tiny models on a shared 2-core machine run far faster; in
    case torch was imported before OMP_NUM_THREADS took effect)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def need_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is not present (CI provides ../shared/data)")
    return path


def save_tiny(folder: Path, variant: str, seed: int, d_model: int = 16, n_layer: int = 2) -> Path:
    """A random Caduceus model (``variant`` ps or ph) saved in the HuggingFace layout."""
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model

    torch.manual_seed(seed)
    return save_model(CaduceusForMaskedLM(CaduceusConfig.small(variant, d_model=d_model, n_layer=n_layer)), folder)


@pytest.fixture(scope="session")
def ps_dir(tmp_path_factory):
    """A random PS model (d_model 16, 2 layers, seed 1), saved once for the whole run."""
    return save_tiny(tmp_path_factory.mktemp("models") / "ps", "ps", 1)


@pytest.fixture(scope="session")
def ph_dir(tmp_path_factory):
    """A random Ph model (d_model 16, 2 layers, seed 2), saved once for the whole run."""
    return save_tiny(tmp_path_factory.mktemp("models") / "ph", "ph", 2)


@pytest.fixture(scope="session")
def ps(ps_dir):
    from caduceus_cli.model import load_model

    return load_model(ps_dir, device="cpu", dtype="fp32")  # exact comparisons with direct fp32 passes


@pytest.fixture(scope="session")
def ph(ph_dir):
    from caduceus_cli.model import load_model

    return load_model(ph_dir, device="cpu", dtype="fp32")  # exact comparisons with direct fp32 passes


@pytest.fixture(scope="session")
def small_ps_dir(tmp_path_factory):
    """A random PS model (d_model 16, 1 layer, seed 0): the fastest one, for command-line tests."""
    return save_tiny(tmp_path_factory.mktemp("models") / "small_ps", "ps", 0, n_layer=1)


@pytest.fixture(autouse=True)
def caduceus_logger():
    """cli.main() sends the 'caduceus' logger to stderr without propagation; put it back after each
    test so that caplog sees the engine's warnings whatever ran before."""
    import logging

    logger = logging.getLogger("caduceus")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture
def run_cli(capsys):
    """Run the command line in this process: ``run_cli("embed", ...)`` -> (exit code, stdout, stderr)."""
    from caduceus_cli.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return info.value.code, out, err

    return run


def console_command(*args) -> list[str]:
    script = shutil.which("caduceus")
    if script is None:
        pytest.skip("the caduceus console script is not installed (pip install -e .)")
    return [script, *map(str, args)]


def console_env(env: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}


def console(*args, timeout: float = 300, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The installed `caduceus` console script running this checkout's code (PYTHONPATH wins over the
    installed package), for what only a real process shows: usage errors, devices, signals. stdout
    and stderr are captured unless given; ``env`` adds to the environment."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(console_command(*args), text=True, env=console_env(env), timeout=timeout, **kwargs)


DEVICES = {"null": (1, 3), "full": (1, 7)}


@pytest.fixture
def device(tmp_path):
    """``device("full")``: a private copy of /dev/full (or /dev/null) in tmp_path, so that a test of
    writing to devices as root can never replace the machine's own node; the real one where this
    process may not create device nodes (and so, not being root, cannot replace them either)."""
    def make(name: str) -> Path:
        path = tmp_path / name
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[name]))
        except OSError:
            if os.geteuid() == 0:
                pytest.skip("root without CAP_MKNOD: not writing to the machine's own device nodes")
            return Path("/dev") / name
        return path

    return make


def pretend_rank(rank: int, world: int):
    """A Runtime for rank ``rank`` of ``world`` without a process group, for running the ranks of a
    sharded run one after the other in one process: barriers pass, the part-file token is fixed and
    sums are this rank's own (so counts that need other ranks are not checked with it)."""
    from caduceus_cli.runtime import Runtime

    class PretendRank(Runtime):
        def barrier(self) -> None:
            pass

        def broadcast(self, value):
            return "pretend"

        def all_reduce(self, values, op="sum"):
            return list(values)

    return PretendRank(rank, world, 0)
