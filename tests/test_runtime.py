"""The shared runtime: environment settings, the device rule, torchrun context, prefetch, sharding."""

from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa
import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.runtime import (Runtime, env_flag, env_float, env_int, env_str, prefetch, resolve_device, run_sharded,
                                  torchrun)

from .conftest import console


@pytest.mark.parametrize("text, value", [("1048576", 1 << 20), ("1_000", 1000), ("32M", 32 << 20), ("32m", 32 << 20),
                                         ("4G", 4 << 30), ("8k", 8 << 10), ("2MiB", 2 << 20), (" 7 ", 7)])
def test_env_int_reads_sizes(monkeypatch, text, value):
    monkeypatch.setenv("CADUCEUS_TEST_SIZE", text)
    assert env_int("CADUCEUS_TEST_SIZE") == value


@pytest.mark.parametrize("text", ["32X", "1.5G", "-3", "lots"])
def test_env_int_names_the_bad_variable(monkeypatch, text):
    monkeypatch.setenv("CADUCEUS_TEST_SIZE", text)
    with pytest.raises(CaduceusError, match=r"CADUCEUS_TEST_SIZE=.*is not a whole number"):
        env_int("CADUCEUS_TEST_SIZE")


def test_env_int_default_when_unset(monkeypatch):
    monkeypatch.delenv("CADUCEUS_TEST_SIZE", raising=False)
    assert env_int("CADUCEUS_TEST_SIZE", 5) == 5


@pytest.mark.parametrize("text, value", [("1", True), ("TRUE", True), ("yes", True), (" on ", True), ("0", False),
                                         ("false", False), ("No", False), ("off", False), ("", False)])
def test_env_flag_reads_yes_and_no(monkeypatch, text, value):
    monkeypatch.setenv("CADUCEUS_TEST_FLAG", text)
    assert env_flag("CADUCEUS_TEST_FLAG") is value


def test_every_reader_refuses_a_bad_value_in_one_line_naming_the_variable(monkeypatch):
    """One policy: whatever the setting, a value that cannot be used is an error naming it."""
    for reader, text in ((env_flag, "maybe"), (env_float, "soon"), (env_float, "nan"), (env_float, "-1"),
                         (env_int, "lots")):
        monkeypatch.setenv("CADUCEUS_TEST_VALUE", text)
        with pytest.raises(CaduceusError) as info:
            reader("CADUCEUS_TEST_VALUE", *(() if reader is env_flag else (1,)))
        message = str(info.value)
        assert f"environment variable CADUCEUS_TEST_VALUE={text!r}" in message and "fix or unset it" in message
        assert "\n" not in message


def test_env_defaults_when_unset_or_blank(monkeypatch):
    monkeypatch.delenv("CADUCEUS_TEST_VALUE", raising=False)
    assert (env_flag("CADUCEUS_TEST_VALUE", True), env_float("CADUCEUS_TEST_VALUE", 2.5),
            env_str("CADUCEUS_TEST_VALUE", "x")) == (True, 2.5, "x")
    monkeypatch.setenv("CADUCEUS_TEST_VALUE", "  ")
    assert env_str("CADUCEUS_TEST_VALUE") is None and env_float("CADUCEUS_TEST_VALUE", 3.0) == 3.0
    monkeypatch.setenv("CADUCEUS_TEST_VALUE", " 0.5 ")
    assert env_float("CADUCEUS_TEST_VALUE", 3.0) == 0.5 and env_str("CADUCEUS_TEST_VALUE") == "0.5"


@pytest.mark.parametrize("name, value, args", [
    ("CADUCEUS_VERBOSE", "maybe", ("doctor",)),
    ("CADUCEUS_STOP_GRACE", "soon", ("doctor",)),
    ("CADUCEUS_PROGRESS_SECONDS", "-5", ("embed", "-", "-o", "{out}")),
    ("HF_HUB_OFFLINE", "perhaps", ("models", "info", "someone/some-model")),
])
def test_bad_settings_are_one_line_through_the_console_script(tmp_path, name, value, args):
    """Defect: CADUCEUS_STOP_GRACE and CADUCEUS_PROGRESS_SECONDS fell back to their defaults without a
    word, CADUCEUS_VERBOSE=0 turned verbose output on and HF_HUB_OFFLINE=perhaps meant 'online'."""
    out = tmp_path / "out.parquet"
    result = console(*(a.format(out=out) for a in args), env={name: value}, input=">a\nACGT\n", timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"caduceus: error: environment variable {name}={value!r}"), lines
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_size_suffixes_in_the_environment_do_not_break_import():
    """Defect: CADUCEUS_SCAN_BLOCK=32M / CADUCEUS_PRETRAIN_MAX_BASES=4G crashed at import."""
    code = ("import torch, caduceus_cli.pipelines.pretrain, caduceus_cli.model.kernels.scan as s;"
            "x = torch.randn(1, 4, 9); A = -torch.rand(4, 2); B = torch.randn(1, 2, 9);"
            "print(s.selective_scan_torch(x, x.abs(), A, B, B).shape)")
    env = {"CADUCEUS_SCAN_BLOCK": "32M", "CADUCEUS_PRETRAIN_MAX_BASES": "4G", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 4, 9])" in out.stdout


def test_bad_scan_block_is_one_line_error_when_used(monkeypatch):
    from caduceus_cli.model.kernels.scan import selective_scan_torch

    monkeypatch.setenv("CADUCEUS_SCAN_BLOCK", "lots")
    x = torch.randn(1, 4, 9)
    with pytest.raises(CaduceusError, match="CADUCEUS_SCAN_BLOCK"):
        selective_scan_torch(x, x.abs(), -torch.rand(4, 2), torch.randn(1, 2, 9), torch.randn(1, 2, 9))


def test_default_device_is_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device, message", [("bogus", "is not a device"), ("cuda:x", "is not a device")])
def test_bad_device_names_are_refused(device, message):
    with pytest.raises(CaduceusError, match=message):
        resolve_device(device)


def test_cuda_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CaduceusError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(CaduceusError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_torchrun_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with torchrun("cpu") as rt:
        assert (rt.rank, rt.world_size, rt.distributed, rt.is_main) == (0, 1, False, True)
        assert rt.all_reduce([1.0, 2.0]) == [1.0, 2.0] and rt.broadcast(7) == 7
    assert not torch.distributed.is_initialized()


def test_torchrun_environment_is_validated(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CaduceusError, match="WORLD_SIZE='two' is not an integer"):
        with torchrun("cpu"):
            pass
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(CaduceusError, match="RANK=2 must be smaller than WORLD_SIZE=2"):
        with torchrun("cpu"):
            pass


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_leaves():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    for item in prefetch(endless(), depth=2):
        if item == 3:
            break
    assert threading.active_count() == before
    assert len(produced) < 10


class _Rank(Runtime):
    """A rank of a pretend two-process run: no process group, a fixed token."""

    def barrier(self) -> None:
        pass

    def broadcast(self, value):
        return "tok"


def _batch(values: list[int]) -> pa.RecordBatch:
    return pa.record_batch({"value": pa.array(values, type=pa.int64())})


@pytest.mark.parametrize("n_chunks", [0, 1, 2, 5, 6])
def test_run_sharded_merges_parts_in_input_order(tmp_path, n_chunks):
    chunks = [list(range(10 * i, 10 * i + (i % 3))) for i in range(n_chunks)]  # some chunks are empty
    done = {0: [], 1: []}

    def work_on(rank):
        def work(chunk):
            done[rank].append(chunk)
            return _batch(chunk)
        return work

    assert list(run_sharded(chunks, work_on(1), _Rank(1, 2), tmp_path, "out")) == []  # rank 1: part only
    merged = list(run_sharded(chunks, work_on(0), _Rank(0, 2), tmp_path, "out"))
    assert done[0] == chunks[0::2] and done[1] == chunks[1::2]
    assert [b.column("value").to_pylist() for b in merged] == chunks
    assert list(tmp_path.iterdir()) == []  # parts removed


def test_run_sharded_single_process_streams(tmp_path):
    out = list(run_sharded([[1], [2, 3]], _batch, Runtime(), tmp_path, "out"))
    assert [b.column("value").to_pylist() for b in out] == [[1], [2, 3]]


def test_run_sharded_in_memory_gives_every_rank_every_result_in_input_order():
    """Without a folder the results travel in memory (all_gather) and every rank gets all of them."""
    chunks = [[i] * (i % 3) for i in range(7)]
    work = lambda chunk: sum(chunk) + 100  # noqa: E731
    other = [(i, work(c)) for i, c in enumerate(chunks) if i % 2 == 1]  # what rank 1 computes
    computed = []

    class Rank0(_Rank):
        def all_gather(self, value):
            return [value, other]

    def counted(chunk):
        computed.append(chunk)
        return work(chunk)

    assert list(run_sharded(chunks, counted, Rank0(0, 2))) == [work(c) for c in chunks]
    assert computed == chunks[0::2]
    assert list(run_sharded(chunks, work, None)) == [work(c) for c in chunks]
