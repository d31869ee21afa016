"""score-variants -r/-R on an indexed VCF (caduceus_cli/genome/regions.py): the records whose POS
lies in a region, as `bcftools view --regions R --regions-overlap pos` selects them, so that the
parts of a scattered run never hold a record twice."""

from __future__ import annotations

import gzip

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.regions import END_OF_CONTIG, RegionQuery, parse_regions

from .conftest import DATA, console, need_data

VCF = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"


def test_region_syntax_is_bcftools():
    assert parse_regions("z:40-,y:5,z:15-30,z:10-20,chr:with:colons:1-2,x") == [  # by contig, merged
        RegionQuery("z", 10, 30), RegionQuery("z", 40, END_OF_CONTIG), RegionQuery("y", 5, 5), RegionQuery("chr:with:colons", 1, 2),
        RegionQuery("x", 1, END_OF_CONTIG)]
    for bad, needle in (("z:20-10", "end 10 is before start 20"), ("z:0-5", "start"), ("z,,y", "empty region")):
        with pytest.raises(CaduceusError, match=needle):
            parse_regions(bad)


@pytest.fixture(scope="module")
def positions():
    need_data("variants", VCF.name)
    need_data("variants", FA.name)
    return [int(ln.split("\t")[1]) for ln in gzip.open(VCF, "rt") if not ln.startswith("#")]


def scored_positions(run_cli, model, *extra) -> list[int]:
    code, out, err = run_cli("score-variants", VCF, "-f", FA, "-m", model, "--window", "32", "--scores", "llr", "-q",
                             "-o", "-", "--format", "tsv", *extra)
    assert code == 0, err
    return [int(ln.split("\t")[1]) for ln in out.splitlines() if not ln.startswith(("#", "chrom\t"))]


def test_regions_read_the_records_whose_pos_is_inside_each_once(run_cli, small_ps_dir, positions, tmp_path):
    first, last = positions[10], positions[40]  # region ends on records: inclusive at both
    inside = [p for p in positions if first <= p <= last]
    assert scored_positions(run_cli, small_ps_dir, "-r", f"z:{first}-{last}") == sorted(inside)
    middle = positions[25]
    parts = scored_positions(run_cli, small_ps_dir, "-r", f"z:{first}-{middle - 1},z:{middle}-{last}")
    assert parts == sorted(inside)  # adjacent regions: every record once
    bed = tmp_path / "r.bed"
    bed.write_text(f"z\t{first - 1}\t{last}\n")  # BED: 0-based, half-open
    assert scored_positions(run_cli, small_ps_dir, "-R", bed) == sorted(inside)
    plain = tmp_path / "r.txt"
    plain.write_text(f"z\t{first}\t{last}\n")
    assert scored_positions(run_cli, small_ps_dir, "-R", plain) == sorted(inside)


def test_regions_need_an_index_and_one_kind(run_cli, small_ps_dir, tmp_path):
    need_data("variants", VCF.name)
    unindexed = tmp_path / "copy.vcf.gz"
    unindexed.write_bytes(VCF.read_bytes())
    code, _, err = run_cli("score-variants", unindexed, "-f", FA, "-m", small_ps_dir, "-r", "z:1-100")
    assert code == 1 and "copy.vcf.gz: -r/-R need an indexed VCF/BCF and there is no" in err and len(
        err.splitlines()) == 1
    bed = tmp_path / "r.bed"
    bed.write_text("z\t0\t10\n")
    code, _, err = run_cli("score-variants", VCF, "-f", FA, "-m", small_ps_dir, "-r", "z", "-R", bed)
    assert code == 1 and err.strip() == "caduceus: error: give -r REGIONS or -R FILE, not both"


def test_a_region_with_a_colon_is_a_range_or_a_contig_of_the_vcf():
    contigs = ["z", "chr:with:colons"]
    assert parse_regions("chr:with:colons,z:5", contigs) == [RegionQuery("chr:with:colons", 1, END_OF_CONTIG),
                                                            RegionQuery("z", 5, 5)]
    with pytest.raises(CaduceusError, match=r"-r: z:abc: 'abc' is not a position or range and 'z:abc' is not a "
                                            r"contig of the VCF"):
        parse_regions("z:5,z:abc", contigs)


def test_a_region_that_does_not_parse_is_refused_before_any_output(small_ps_dir, tmp_path):
    """Defect: `-r z:abc` warned that the region had no records and wrote a header-only VCF, exit 0."""
    need_data("variants", VCF.name)
    out = tmp_path / "out.vcf"
    result = console("score-variants", VCF, "-f", FA, "-m", small_ps_dir, "--window", "32", "-q", "-r", "z:abc",
                     "-o", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("caduceus: error: -r: z:abc: 'abc' is not a position or range"), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_region_without_records_is_said_once(small_ps_dir, tmp_path):
    """Defect: "no records in region" was printed twice (the input was read again to count it)."""
    need_data("variants", VCF.name)
    out = tmp_path / "out.vcf"
    result = console("score-variants", VCF, "-f", FA, "-m", small_ps_dir, "--window", "32", "-q", "-r", "y:1-100",
                     "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"caduceus: warning: {VCF}: no records in region y:1-100 (is the contig named so in the VCF?)"]
    assert not [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]


def test_the_record_count_comes_from_the_index(tmp_path):
    from caduceus_cli.genome.vcf import VcfReader

    need_data("variants", VCF.name)
    reader = VcfReader(VCF)
    assert reader.record_count() == sum(1 for ln in gzip.open(VCF, "rt") if not ln.startswith("#"))
    reader.restrict(parse_regions("z:1-1000"))
    assert reader.record_count() is None  # an index counts whole contigs only
    reader.close()
    copy = tmp_path / "copy.vcf.gz"
    copy.write_bytes(VCF.read_bytes())
    reader = VcfReader(copy)
    assert reader.record_count() is None
    reader.close()
