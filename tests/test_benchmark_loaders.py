"""Each suite's loader on data in the source's own layout: NT FASTA folders, GUE CSV (flat and the
archive's layout), Genomic Benchmarks class folders and coordinate files built from real yeast
sequence, and the eQTL table; bad data stops with one line."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model.tokenizer import reverse_complement
from caduceus_cli.pipelines.benchmark.loaders import load_task, subsample
from caduceus_cli.pipelines.benchmark.registry import SUITES
from caduceus_cli.pipelines.benchmark.sources import locate, tasks_present

from .conftest import need_data

NT = SUITES["nt-suite"]
GUE = SUITES["gue"]
GB = SUITES["genomic-benchmarks"]


def load(suite, task, data_dir, fasta=None):
    return load_task(locate(suite.tasks[task], Path(data_dir), Path("/nonexistent-cache"), fasta), fasta)


def test_nt_folder_with_only_a_test_split_is_cross_validated():
    root = need_data("tasks", "nt_yeast_histone")
    assert [t.name for t in tasks_present(NT, root)] == ["H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2"]
    data = load(NT, "H3", root)
    assert data.cross_validated and data.train is None and len(data.test) == 1497  # the published test size
    assert set(data.test.labels) == {0, 1} and max(len(s) for s in data.test.sequences) == 500
    assert data.test.names[0] == "iYMR122W-A_513047"
    assert len(data.digests()["test"]) == 64


def test_nt_hugging_face_layout_with_train_and_test(tmp_path):
    root = need_data("tasks", "nt_yeast_histone")
    lines = gzip.open(root / "H3" / "test.fna.gz", "rt").read().splitlines()
    (tmp_path / "H3").mkdir()
    (tmp_path / "H3" / "train.fna").write_text("\n".join(lines[:200]) + "\n")
    (tmp_path / "H3" / "test.fna").write_text("\n".join(lines[200:300]) + "\n")
    data = load(NT, "H3", tmp_path)
    assert not data.cross_validated and (len(data.train), len(data.test)) == (100, 50)


def test_gue_flat_layout_has_train_dev_test():
    root = need_data("tasks", "gue")
    assert len(tasks_present(GUE, root)) == 7
    data = load(GUE, "prom_core_tata", root)
    assert (len(data.train), len(data.valid), len(data.test)) == (4904, 613, 613)
    assert {len(s) for s in data.test.sequences} == {70}


def test_gue_archive_layout(tmp_path):
    folder = tmp_path / "GUE" / "tf" / "0"
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.csv").write_text("sequence,label\nACGTACGTAC,1\nTTTTGGGGCC,0\nACGTTTGGAA,1\n")
    data = load(GUE, "tf_0", tmp_path)
    assert data.test.labels == [1, 0, 1] and data.valid is not None


def yeast_windows(n: int, length: int, seed: int):
    from caduceus_cli.genome.fasta import Reference
    from caduceus_cli.pipelines.benchmark.speed import sample_regions

    genome = need_data("genomes", "sacCer3.fa.gz")
    regions = sample_regions(genome, n, length, seed)
    with Reference(genome) as ref:
        return genome, [(c, s, e, ref.fetch(c, s, e)[0].upper()) for c, s, e in regions]


def write_gb_sequences(root: Path, task: str, classes, n: int = 6) -> dict:
    """The Genomic Benchmarks sequence layout, <task>/<split>/<class>/<id>.txt, of real yeast windows."""
    _, windows = yeast_windows(2 * n * len(classes), 200, seed=1)
    expected = {}
    k = 0
    for split in ("train", "test"):
        for cls in classes:
            folder = root / task / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.txt").write_text(windows[k][3])
                expected[(split, cls, str(i))] = windows[k][3]
                k += 1
    return expected


def test_genomic_benchmarks_class_folders(tmp_path):
    task = GB.tasks["human_ensembl_regulatory"]
    expected = write_gb_sequences(tmp_path, task.name, task.classes)
    data = load(GB, task.name, tmp_path)
    assert len(data.train) == len(data.test) == 18
    assert data.test.labels[:6] == ["enhancer"] * 6 and data.test.labels[-1] == "promoter"
    assert data.test.sequences[0] == expected[("test", "enhancer", "0")]
    assert list(data.class_indices(data.test)[::6]) == [0, 1, 2]


def test_genomic_benchmarks_coordinates_with_a_genome(tmp_path):
    genome, windows = yeast_windows(16, 150, seed=2)
    task = GB.tasks["human_nontata_promoters"]
    k = 0
    for split in ("train", "test"):
        (tmp_path / task.name / split).mkdir(parents=True)
        for cls in task.classes:
            rows = ["id,region,start,end,strand"]
            for i in range(4):
                contig, start, end, _ = windows[k]
                rows.append(f"{cls}{i},{contig},{start},{end},{'-' if i % 2 else '+'}")
                k += 1
            with gzip.open(tmp_path / task.name / split / f"{cls}.csv.gz", "wt") as f:
                f.write("\n".join(rows) + "\n")
    data = load(GB, task.name, tmp_path, fasta=str(genome))
    assert data.files.layout == "gb-coordinates" and len(data.train) == 8
    assert data.train.sequences[0] == windows[0][3]
    assert data.train.sequences[1] == reverse_complement(windows[1][3])  # minus strand
    with pytest.raises(CaduceusError, match="give the genome with --fasta"):
        load(GB, task.name, tmp_path)


def test_subsample_is_stratified_seeded_and_noted():
    root = need_data("tasks", "gue")
    data = load(GUE, "prom_core_tata", root)
    small = subsample(data, 100)
    assert len(small.train) == len(small.valid) == len(small.test) == 100
    assert sum(small.train.labels) in (49, 50, 51)  # the classes are balanced in this task
    assert subsample(data, 100).train.digest() == small.train.digest()
    assert any("100 of 4904" in note for note in small.notes)


# -- bad data --------------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "caduceus_cli", "benchmark", "--quiet", *args],
                          capture_output=True, text=True)


def assert_one_line(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_data_is_one_line_and_a_nonzero_exit(tmp_path):
    """Missing split, unknown task, a label outside the registry's classes; nothing half-written."""
    (tmp_path / "gue" / "tf_0").mkdir(parents=True)
    (tmp_path / "gue" / "tf_0" / "train.csv").write_text("sequence,label\nACGT,1\nTTTT,0\n")
    assert_one_line(run_cli("gue", "--data", str(tmp_path / "gue"), "-o", str(tmp_path / "r1")),
                    "no test split", "tf_0")
    assert_one_line(run_cli("nt-suite", "--tasks", "H5", "--data", str(tmp_path), "-o", str(tmp_path / "r2")),
                    "H5 is not a task of nt-suite")
    (tmp_path / "nt" / "H3").mkdir(parents=True)
    (tmp_path / "nt" / "H3" / "test.fna").write_text(">a|0\nACGT\n>b|1\nTTTT\n>c|2\nGGGG\n")
    assert_one_line(run_cli("nt-suite", "--data", str(tmp_path / "nt"), "-o", str(tmp_path / "r3")),
                    "label 2 is not a class of nt-suite/H3", "test.fna")
    task = GB.tasks["human_nontata_promoters"]
    write_gb_sequences(tmp_path / "gb", task.name, task.classes, n=2)
    shutil.copytree(tmp_path / "gb" / task.name / "test" / "positive", tmp_path / "gb" / task.name / "test" / "maybe")
    assert_one_line(run_cli("genomic-benchmarks", "--data", str(tmp_path / "gb"), "-o", str(tmp_path / "r4")),
                    "'maybe' is not a class of genomic-benchmarks/human_nontata_promoters")
    for name in ("r1", "r2", "r3", "r4"):
        assert not (tmp_path / name).exists()  # nothing left behind
