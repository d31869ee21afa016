"""vep-eqtl: a small eQTL table in the published format (CHROM, POS, ALT, label, tissue; no REF) on a
slice of real hg38 sequence, through the existing SVM engine, into a report folder."""

from __future__ import annotations

import json

import pytest

from caduceus_cli.errors import CaduceusError
from caduceus_cli.pipelines.benchmark import run_benchmark
from caduceus_cli.pipelines.benchmark.eqtl import read_eqtl_table

from .conftest import need_data

SLICE = 400_000
TSS = 10_000
OFFSETS = [1_000, 5_000, 12_000, 20_000, 45_000, 60_000, 75_000, 90_000, 150_000, 200_000, 300_000, 380_000]


@pytest.fixture(scope="module")
def eqtl_data(tmp_path_factory):
    """chr2 and chr9 of a small genome cut from real hg38 chr2; variants at every distance bucket."""
    from caduceus_cli.genome.fasta import Reference

    source = need_data("genomes", "hg38_chr2_1-2333275.fa.gz")
    root = tmp_path_factory.mktemp("eqtl")
    with Reference(source) as ref:
        chr2 = ref.fetch("chr2", 100_000, 100_000 + SLICE)[0].upper()
        chr9 = ref.fetch("chr2", 600_000, 600_000 + SLICE)[0].upper()
    (root / "genome.fa").write_text(f">chr2\n{chr2}\n>chr9\n{chr9}\n")
    (root / "tss.bed").write_text(f"chr2\t{TSS}\t{TSS + 1}\tG1\nchr9\t{TSS}\t{TSS + 1}\tG2\n")
    rows = ["CHROM,POS,ALT,label,tissue,split"]
    for chrom, sequence in (("chr2", chr2), ("chr9", chr9)):
        for k, offset in enumerate(OFFSETS):
            for j in range(4):
                pos = TSS + offset + 97 * j  # 1-based
                ref_base = sequence[pos - 1]
                alt = "A" if ref_base != "A" else "C"
                rows.append(f"{chrom},{pos},{alt},{(k + j) % 2},{'Whole_Blood' if j % 2 else 'Lung'},"
                            f"{'test' if chrom == 'chr9' else 'train'}")
    (root / "All_Tissues.csv").write_text("\n".join(rows) + "\n")
    return root


def test_eqtl_table_reader(eqtl_data):
    rows = read_eqtl_table(eqtl_data / "All_Tissues.csv")
    assert len(rows) == 2 * 4 * len(OFFSETS) and rows[0]["ref"] == "" and rows[0]["tissue"] == "Lung"


def test_vep_eqtl_suite_reports_auroc_per_bucket_and_seed(eqtl_data, small_ps_dir, tmp_path):
    out = tmp_path / "report"
    rows = run_benchmark("vep-eqtl", out, model=str(small_ps_dir), data=eqtl_data, fasta=str(eqtl_data / "genome.fa"),
                         tss=str(eqtl_data / "tss.bed"), seeds=2, window=32, n_train=40, Cs=(1,), device="cpu")
    assert sorted({r["task"] for r in rows}) == ["eqtl_0-30kbp", "eqtl_30-100kbp", "eqtl_>100kbp"]
    assert len(rows) == 6 and {r["seed"] for r in rows} == {1, 2}
    for row in rows:
        assert 0 <= row["metrics"]["auroc"] <= 1 and 0 <= row["metrics"]["auroc_hard_labels"] <= 1
        assert row["value"] == row["metrics"]["auroc"] and row["n"] == {"train": 48, "test": 48}
        assert row["evaluation"].startswith("test: chromosomes 9 and 10") and row["recipe"]["use_tissue"]
        assert len(row["model_sha256"]) == 64
        assert (row["context"], row["window"], row["features"]) == (32, 32, "paper")  # a model without a trained length
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == json.loads(json.dumps(rows))
    summary = (out / "summary.md").read_text()
    assert "| eqtl_0-30kbp | AUROC |" in summary and "0.673" in summary and "ZJ4433MR" in summary
    assert "context shorter than the paper's 131,072 bp around the variant: eqtl_0-30kbp, eqtl_30-100kbp" in summary
    assert (out / "summary.png").stat().st_size > 0
    again = run_benchmark("vep-eqtl", out, model=str(small_ps_dir), data=eqtl_data, resume=True,
                          fasta=str(eqtl_data / "genome.fa"), tss=str(eqtl_data / "tss.bed"), seeds=2, window=32,
                          n_train=40, Cs=(1,), device="cpu")
    assert again == json.loads(json.dumps(rows)) and (out / "results.jsonl").read_text().splitlines() == lines


def test_vep_eqtl_needs_a_genome_and_tss(eqtl_data, tmp_path):
    with pytest.raises(CaduceusError, match="--fasta.*--tss"):
        run_benchmark("vep-eqtl", tmp_path / "r", data=eqtl_data)
