"""The cluster example examples/snakemake runs end to end on a slice of the real 1000 Genomes data
with the bundled model: scatter into parts, score each with `caduceus score-variants`, gather."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, need_data

pytest.importorskip("snakemake", reason="the workflow tests need snakemake: pip install -e '.[test]'")
pysam = pytest.importorskip("pysam")

SNAKEFILE = REPO / "examples" / "snakemake" / "Snakefile"
REGIONS = ["z:1-450", "z:451-1000"]  # two jobs: both run at once on a 2-core CI machine


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> tuple[Path, Path]:
    """(bgzip VCF of the 30 records of z:1-1000 with its index, the reference FASTA)."""
    source = need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    fasta = need_data("variants", "1kgp_grch37_chr20_1-2Mb.fa")
    import pysam.bcftools

    vcf = tmp_path_factory.mktemp("input") / "slice.vcf.gz"
    pysam.bcftools.view("--regions", "z:1-1000", "--output-type", "z", "--output", str(vcf), str(source),
                        catch_stdout=False)
    pysam.bcftools.index("--tbi", str(vcf), catch_stdout=False)
    return vcf, fasta


def snakemake(folder: Path, config: dict, *options: str) -> subprocess.CompletedProcess:
    lines = [f"{key}: {value!r}" if not isinstance(value, list) else f"{key}: {value}" for key, value in config.items()]
    (folder / "config.yaml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", "config.yaml",
                           "--cores", "2", *options], cwd=folder, env=env, capture_output=True, text=True)


def records(path: Path) -> list[tuple]:
    with pysam.VariantFile(str(path)) as vcf:
        return [(r.chrom, r.pos, r.id, r.ref, r.alts) for r in vcf]


@pytest.mark.slow
def test_snakemake_scatters_scores_and_gathers_every_record_in_order(real_slice, tmp_path):
    vcf, fasta = real_slice
    config = {"vcf": str(vcf), "fasta": str(fasta), "outdir": "out", "regions": REGIONS,
              "scores": "llr,embed_cos", "window": 128, "caduceus": f"{sys.executable} -m caduceus_cli"}
    run = snakemake(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]

    gathered = tmp_path / "out" / "scored.vcf.gz"
    expected = records(vcf)
    assert 20 <= len(expected) <= 40 and records(gathered) == expected
    with pysam.VariantFile(str(gathered)) as out:
        header = str(out.header)
        assert {"CADUCEUS_LLR", "CADUCEUS_EMBED_COS"} <= set(out.header.info)
        assert all("CADUCEUS_EMBED_COS" in r.info for r in out)
        # The index was written for the gathered file: a region query returns that region's records.
        assert len(list(out.fetch("z", 300, 700))) == sum(1 for r in expected if 300 < r[1] <= 700)
    assert header.startswith("##fileformat=VCF") and "##caduceus_model_sha256=" in header
    logs = sorted((tmp_path / "out" / "logs").iterdir())
    assert [p.name for p in logs] == ["part0001.log", "part0002.log"]
    # Parts are temporary: only the gathered file, its index and the logs are left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["logs", "scored.vcf.gz", "scored.vcf.gz.tbi"]


def test_snakemake_without_regions_makes_one_part_per_contig_with_records(real_slice, tmp_path):
    vcf, fasta = real_slice
    run = snakemake(tmp_path, {"vcf": str(vcf), "fasta": str(fasta)}, "--dry-run")
    assert run.returncode == 0, run.stderr[-3000:]
    counts = dict(re.findall(r"^(split|score|gather)\s+(\d+)$", run.stdout + run.stderr, re.M))
    assert counts == {"split": "1", "score": "1", "gather": "1"}  # the slice has records on contig z only


def test_snakemake_refuses_an_input_without_index(real_slice, tmp_path):
    vcf, fasta = real_slice
    unindexed = tmp_path / "unindexed.vcf.gz"
    unindexed.write_bytes(vcf.read_bytes())
    run = snakemake(tmp_path, {"vcf": str(unindexed), "fasta": str(fasta)}, "--dry-run")
    assert run.returncode != 0 and "no .tbi/.csi index" in run.stdout + run.stderr
