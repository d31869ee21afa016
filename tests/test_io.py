"""One way to write outputs: atomic files and folders, permissions, devices, FIFOs, symlinks, disk errors."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.io import atomic_file, atomic_folder, open_output, refuse_overwriting_inputs, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_file_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_keeps_the_old_file_until_done(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                           (0o077, 0o600, 0o700)])
def test_permissions_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    """Defect: outputs were 0600 and SVM folders 0700 whatever the umask."""
    code = ("import os, sys; from caduceus_cli.io import write_json, atomic_folder;"
            "write_json(sys.argv[1], {'a': 1});"
            "ctx = atomic_folder(sys.argv[2]); d = ctx.__enter__(); (d / 'x').write_text('1'); ctx.__exit__(None, None, None)")
    proc = subprocess.run(["sh", "-c", f"umask {umask:03o}; exec \"$0\" -c \"$1\" \"$2\" \"$3\"", sys.executable, code,
                           str(tmp_path / "f.json"), str(tmp_path / "folder")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "f.json") == file_mode
    assert _mode(tmp_path / "folder") == folder_mode


def test_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("{}")
    os.chmod(target, 0o640)
    write_json(target, {"b": 2})
    assert _mode(target) == 0o640 and json.loads(target.read_text()) == {"b": 2}


def test_devices_are_written_in_place_not_replaced(device):
    """Defect: as root, -o /dev/null replaced the device node with a regular file."""
    null = device("null")
    before = os.stat(null)
    with atomic_file(null) as tmp:
        assert str(tmp) == str(null)
        tmp.write_text("discarded")
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_is_one_error_naming_the_path(device):
    """Defect: writing to a full disk succeeded silently."""
    full = device("full")
    with pytest.raises(CaduceusError, match=rf"{full}: cannot write: no space left on device"):
        with open_output(full) as f:
            f.write("x" * 100_000)
    assert stat.S_ISCHR(os.stat(full).st_mode)


def test_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    with open_output(fifo) as f:
        f.write("through the pipe\n")
    reader.join(10)
    assert got == ["through the pipe\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with open_output(link) as f:
        f.write("new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_gz_name_writes_bgzf(tmp_path):
    """Defect: -o scores.tsv.gz wrote plain text under a .gz name."""
    out = tmp_path / "scores.tsv.gz"
    with open_output(out) as f:
        for i in range(30000):
            f.write(f"row\t{i}\n")
    raw = out.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x04" and raw[12:14] == b"BC"  # BGZF block header
    assert raw.endswith(bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000"))
    lines = gzip.decompress(raw).decode().splitlines()
    assert len(lines) == 30000 and lines[-1] == "row\t29999"


def test_atomic_folder_refuses_existing_content_and_cleans_up(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(CaduceusError, match="already exists"):
        with atomic_folder(tmp_path / "full"):
            pass
    with pytest.raises(ValueError):
        with atomic_folder(tmp_path / "new") as d:
            (d / "part").write_text("1")
            raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    with atomic_folder(tmp_path / "new") as d:
        (d / "part").write_text("1")
    assert (tmp_path / "new" / "part").read_text() == "1"


def test_output_equal_to_an_input_is_refused_through_symlinks(tmp_path):
    src = tmp_path / "in.vcf"
    src.write_text("x")
    (tmp_path / "alias.vcf").symlink_to(src)
    with pytest.raises(CaduceusError, match="would overwrite the input"):
        refuse_overwriting_inputs(tmp_path / "alias.vcf", None, src)
    refuse_overwriting_inputs(tmp_path / "other.vcf", src)
    refuse_overwriting_inputs("-", src)
