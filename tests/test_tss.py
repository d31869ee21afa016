"""TSS reader: real refGene BED, GTF strands, nearest-TSS distances against brute force."""

import gzip
import re

import numpy as np
import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.tss import read_tss

from .conftest import DATA as SHARED_DATA
from .conftest import need_data

TSS_BED = str(SHARED_DATA / "annotation" / "hg38_refGene_tss.bed.gz")


def test_real_refgene_bed_reads_every_site_including_alt_contigs():
    need_data("annotation", "hg38_refGene_tss.bed.gz")
    index = read_tss(TSS_BED)
    rows = [ln.split("\t") for ln in gzip.open(TSS_BED, "rt") if not ln.startswith("#")]
    assert len(index) == len({(r[0], int(r[1])) for r in rows})
    assert any("_alt" in c for c in index.positions)
    chr2 = index.positions["chr2"]
    assert np.all(np.diff(chr2) > 0)


def test_nearest_matches_brute_force_and_reconciles_chr_prefix():
    need_data("annotation", "hg38_refGene_tss.bed.gz")
    index = read_tss(TSS_BED)
    sites = index.positions["chr2"]
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, 2_400_000, 200):
        assert index.nearest("chr2", int(pos)) == int(np.abs(sites - pos).min())
        assert index.nearest("2", int(pos)) == index.nearest("chr2", int(pos))
    many = index.nearest_many("chr2", np.array([0, 1_000_000]))
    assert list(many) == [index.nearest("chr2", 0), index.nearest("chr2", 1_000_000)]
    assert index.nearest("no_such_contig", 5) is None


def test_gtf_transcript_starts_follow_strand(tmp_path):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        '#!genome-build test\n'
        'chr1\tHAVANA\tgene\t1000\t5000\t.\t+\t.\tgene_id "G1";\n'
        'chr1\tHAVANA\ttranscript\t1200\t5000\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n'
        'chr1\tHAVANA\ttranscript\t8000\t9000\t.\t-\t.\tgene_id "G2"; transcript_id "T2";\n'
        'chr1\tHAVANA\texon\t8000\t8100\t.\t-\t.\tgene_id "G2";\n')
    assert list(read_tss(gtf).positions["chr1"]) == [1199, 8999]
    assert list(read_tss(gtf, feature="gene").positions["chr1"]) == [999]


def test_bed_interval_strand_and_errors(tmp_path):
    bed = tmp_path / "genes.bed"
    bed.write_text("track name=x\nchr1\t100\t200\tA\t0\t+\nchr1\t300\t400\tB\t0\t-\nchr1\t500\t501\n")
    assert list(read_tss(bed).positions["chr1"]) == [100, 399, 500]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t100\t200\nchr1\tten\t20\n")
    with pytest.raises(CaduceusError, match=r"bad.bed: line 2: .*'ten'"):
        read_tss(bad)
    with pytest.raises(CaduceusError, match="no such TSS"):
        read_tss(tmp_path / "absent.bed")


@pytest.mark.parametrize("strand", ["", "+-", "-+", "."])
def test_gtf_strand_must_be_plus_or_minus(tmp_path, strand):
    """Defect: the strand was tested with `in "+-"`, so '' and '+-' passed and '' was read as minus."""
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(f'chr1\tHAVANA\ttranscript\t1200\t5000\t.\t{strand}\t.\tgene_id "G1";\n')
    with pytest.raises(CaduceusError, match=rf"genes.gtf: line 1: strand '{re.escape(strand)}' must be \+ or -"):
        read_tss(gtf)


def test_bed_strand_outside_plus_minus_dot_is_refused(tmp_path):
    bed = tmp_path / "tss.bed"
    bed.write_text("chr1\t100\t200\tA\t0\t+-\n")
    with pytest.raises(CaduceusError, match=r"tss.bed: line 1: strand '\+-' must be"):
        read_tss(bed)


def test_bed_line_with_an_empty_seventh_column_is_not_taken_for_gtf(tmp_path):
    bed = tmp_path / "tss.bed"
    bed.write_text("chr1\t100\t200\t7\t0\t-\t\t.\t0\n")
    assert list(read_tss(bed).positions["chr1"]) == [199]
