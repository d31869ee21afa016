"""BED reader: columns, headers, gzip, stdin, and one-line errors naming the file and line."""

from __future__ import annotations

import gzip
import io

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.bed import BedInterval, BedReader, count_bed_records, parse_bed_line

BED = (
    "track name=test description='header lines are skipped'\n"
    "browser position chrI:1-100\n"
    "# a comment\n"
    "\n"
    "chrI\t10\t20\n"
    "chrII\t0\t5\tgeneA\t0\t-\textra\tcolumns\n"
    "chrIII\t7\t9\tgeneB\t.\t+\n"
    "chrM\t3\t3\tzero\t0\t.\n"
)


def write(tmp_path, text, name="r.bed", gz=False):
    path = tmp_path / name
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_bed3_and_bed6_with_headers_skipped(tmp_path):
    regions = list(BedReader(write(tmp_path, BED)))
    assert [(r.contig, r.start, r.end, r.name, r.strand, r.line) for r in regions] == [
        ("chrI", 10, 20, ".", ".", 5),
        ("chrII", 0, 5, "geneA", "-", 6),
        ("chrIII", 7, 9, "geneB", "+", 7),
        ("chrM", 3, 3, "zero", ".", 8),
    ]
    assert regions[1].length == 5 and regions[3].length == 0


def test_gzip_and_counting(tmp_path):
    path = write(tmp_path, BED, "r.bed.gz", gz=True)
    assert [r.contig for r in BedReader(path)] == ["chrI", "chrII", "chrIII", "chrM"]
    assert count_bed_records(path) == 4


def test_stdin(tmp_path):
    class FakeStdin:
        buffer = io.BufferedReader(io.BytesIO(BED.encode()))

    reader = BedReader("-", stdin=FakeStdin())
    regions = list(reader)
    assert len(regions) == 4 and regions[0].source == "<stdin>"
    assert regions[0].where() == "<stdin>: line 5"


def test_space_separated_is_accepted():
    region = parse_bed_line("chr1 5 10 name 0 +\n", 1, "x.bed")
    assert region == BedInterval("chr1", 5, 10, "name", "+", 1, "x.bed")


@pytest.mark.parametrize("line, message", [
    ("chrI\t200\t100\n", "start 200 > end 100"),
    ("chrI\t-5\t100\n", "start -5 is negative"),
    ("chrI\t5\t-1\n", "end -1 is negative"),
    ("chrI\t1.5\t100\n", "start '1.5' is not an integer"),
    ("chrI\t10\tabc\n", "end 'abc' is not an integer"),
    ("chrI\t10\n", "expected at least 3"),
    ("chrI\t1\t5\tn\t0\t*\n", "strand '*'"),
])
def test_errors_name_file_line_and_value(tmp_path, line, message):
    path = write(tmp_path, "chrI\t0\t10\n# fine\n" + line)
    with pytest.raises(CaduceusError) as info:
        list(BedReader(path))
    text = str(info.value)
    assert text.startswith(f"{path}: line 3: ")
    assert message in text
    assert "\n" not in text


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, "chrI\t0\t10\nchrI\t20\t10\nchrI\tx\t5\nchrII\t1\t2\n")
    reader = BedReader(path, skip_invalid=True)
    regions = list(reader)
    assert [(r.contig, r.line) for r in regions] == [("chrI", 1), ("chrII", 4)]
    assert reader.skipped == 2
    assert "line 2" in reader.first_problems[0] and "line 3" in reader.first_problems[1]


def test_missing_bed_and_folder(tmp_path):
    with pytest.raises(CaduceusError, match="no such BED file"):
        BedReader(tmp_path / "absent.bed")
    with pytest.raises(CaduceusError, match="is a folder"):
        BedReader(tmp_path)


def test_empty_bed_yields_nothing(tmp_path):
    assert list(BedReader(write(tmp_path, "# only a header\n"))) == []
    assert count_bed_records(write(tmp_path, "", "empty.bed")) == 0
