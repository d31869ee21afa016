"""The one line-oriented reader and the window helpers in genome/."""

from __future__ import annotations

import gzip
import io

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.lines import parse_int, read_lines
from caduceus_cli.genome.windows import central_slice, centred_on, tile_cores, tile_starts, variant_window


def test_read_lines_skips_comments_track_lines_and_crlf(tmp_path):
    path = tmp_path / "a.bed"
    path.write_bytes(b"track name=x\r\n# comment\r\n\r\nchr1\t5\t9\r\nchr2 1 3\r\n")
    lines = list(read_lines(path, what="BED file", skip_track=True))
    assert [(ln.number, ln.fields) for ln in lines] == [(4, ["chr1", "5", "9"]), (5, ["chr2", "1", "3"])]
    assert lines[0].where == f"{path}: line 4"


def test_read_lines_by_content_gzip_and_stdin(tmp_path):
    path = tmp_path / "labels.csv"  # gzip content under a plain name
    path.write_bytes(gzip.compress(b'sequence,label\n"ACGT",1\n'))
    assert [ln.fields for ln in read_lines(path, sep=",")] == [["sequence", "label"], ["ACGT", "1"]]
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(gzip.compress(b"x\t1\n"))))
    assert [ln.fields for ln in read_lines("-", stdin=stdin)] == [["x", "1"]]


def test_read_lines_missing_and_folder(tmp_path):
    with pytest.raises(CaduceusError, match="no such BED file"):
        list(read_lines(tmp_path / "nope.bed", what="BED file"))
    with pytest.raises(CaduceusError, match="is a folder, not a BED file"):
        list(read_lines(tmp_path, what="BED file"))


def test_parse_int_names_where_and_value():
    assert parse_int(" 12 ", "start", "f: line 3") == 12
    with pytest.raises(CaduceusError, match=r"f: line 3: start '1\.5' is not an integer"):
        parse_int("1.5", "start", "f: line 3")
    with pytest.raises(CaduceusError, match=r"f: line 3: end -1 must be at least 0"):
        parse_int("-1", "end", "f: line 3", minimum=0)


def test_windows():
    assert centred_on(100, 110, None) == (100, 110)
    assert centred_on(100, 110, 4) == (103, 107)
    start, end = variant_window(1000, 1536)
    assert end - start == 1536 and 1000 - start == 768
    starts = tile_starts(100, 40, 10)
    assert starts[0] == 0 and starts[-1] == 60
    cores = tile_cores(starts, 40, 100)
    assert cores[0][0] == 0 and cores[-1][1] == 100
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    for length in (9, 10):
        for width in (3, 4):
            s = central_slice(length, width)
            assert s.start == length - s.stop  # symmetric: a sequence and its reverse complement agree
