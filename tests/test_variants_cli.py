"""`caduceus score-variants` on the command line: stdin to stdout, bad input, interrupted runs."""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from caduceus_cli.cli import main

from .conftest import DATA as SHARED_DATA
from .conftest import console, need_data

DATA = SHARED_DATA / "variants"
VCF = DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = str(DATA / "1kgp_grch37_chr20_1-2Mb.fa")


@pytest.fixture(scope="module", autouse=True)
def real_variants():
    """Every test here reads the real 1000 Genomes VCF and its reference, or skips saying so."""
    need_data("variants", VCF.name)
    need_data("variants", Path(FA).name)


@pytest.fixture(scope="module")
def model_dir(small_ps_dir):
    return str(small_ps_dir)


@pytest.fixture(scope="module")
def vcf_lines():
    lines = gzip.open(VCF, "rt").read().splitlines()
    return [ln for ln in lines if ln.startswith("#")], [ln for ln in lines if not ln.startswith("#")]


def common(model_dir):
    return ["--fasta", FA, "--model", model_dir, "--window", "32", "--quiet"]


def test_stdin_to_stdout(model_dir, vcf_lines):
    """A real process: htslib reads the VCF from file descriptor 0, not from sys.stdin."""
    header, body = vcf_lines
    text = "\n".join(header + body[:40]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "caduceus_cli", "score-variants", "-", *common(model_dir)],
                          input=text, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [ln for ln in proc.stdout.splitlines() if not ln.startswith("#")]
    assert [r.split("\t")[:5] for r in records] == [b.split("\t")[:5] for b in body[:40]]
    assert all("CADUCEUS_EMBED_L2=" in r for r in records)
    assert "##caduceus_command=" in proc.stdout


def _one_line_error(code, err, *needles):
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_malformed_line_is_one_line_error_and_leaves_no_output(model_dir, vcf_lines, tmp_path, run_cli):
    header, body = vcf_lines
    bad = body[:300]
    bad[250] = "z\tabc\t.\tA\tT\t100\tPASS\t."
    vcf = tmp_path / "bad.vcf"
    vcf.write_text("\n".join(header + bad) + "\n")
    out = tmp_path / "out.vcf"
    code, _, err = run_cli("score-variants", str(vcf), "-o", str(out), "--chunk-size", "50", *common(model_dir))
    _one_line_error(code, err, f"bad.vcf: line {len(header) + 251}", "'z\\tabc")
    assert list(tmp_path.iterdir()) == [vcf]  # chunks were written before the error: nothing is left


def test_contig_missing_from_fasta(model_dir, vcf_lines, tmp_path, run_cli):
    header, body = vcf_lines
    vcf = tmp_path / "chr.vcf"
    vcf.write_text("\n".join(header + body[:3] + ["1" + body[3][1:]]) + "\n")
    code, _, err = run_cli("score-variants", str(vcf), "-o", str(tmp_path / "o.vcf"), *common(model_dir))
    _one_line_error(code, err, f"line {len(header) + 4}", "contig '1' is not in the reference", "--missing-contig skip")
    assert not (tmp_path / "o.vcf").exists()
    code, out, err = run_cli("score-variants", str(vcf), "--missing-contig", "skip", *common(model_dir))
    assert code == 0 and "CADUCEUS_SKIP=missing_contig" in out.splitlines()[-1]


def test_truncated_bgzip(model_dir, tmp_path, run_cli):
    data = VCF.read_bytes()
    trunc = tmp_path / "trunc.vcf.gz"
    trunc.write_bytes(data[: len(data) // 40])
    code, _, err = run_cli("score-variants", str(trunc), "-o", str(tmp_path / "o.vcf"), *common(model_dir))
    _one_line_error(code, err, "trunc.vcf.gz: line", "truncated or corrupt")
    assert not (tmp_path / "o.vcf").exists()


def test_bed_given_as_vcf(model_dir, tmp_path, run_cli):
    bed = tmp_path / "regions.bed"
    bed.write_text("z\t100\t200\tpeak1\nz\t300\t400\tpeak2\n")
    code, _, err = run_cli("score-variants", str(bed), *common(model_dir))
    _one_line_error(code, err, "regions.bed: not a VCF/BCF file", "looks like BED")


def test_interrupted_run_leaves_no_output(model_dir, vcf_lines, tmp_path, run_cli, monkeypatch):
    from caduceus_cli.pipelines import variants

    header, body = vcf_lines
    vcf = tmp_path / "in.vcf"
    vcf.write_text("\n".join(header + body[:120]) + "\n")
    calls = {"n": 0}
    original = variants.VariantScorer.score

    def interrupted(self, records, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, records, progress)

    monkeypatch.setattr(variants.VariantScorer, "score", interrupted)
    out = tmp_path / "out.vcf.gz"
    code, _, err = run_cli("score-variants", str(vcf), "-o", str(out), "--write-index", "--chunk-size", "40",
                        *common(model_dir))
    assert code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.vcf"]


def test_bad_options_fail_before_work(model_dir, tmp_path, run_cli):
    code, _, err = run_cli("score-variants", str(VCF), "--scores", "llr,foo", *common(model_dir))
    _one_line_error(code, err, "unknown score foo")
    code, _, err = run_cli("score-variants", str(VCF), "--scores", "svm", *common(model_dir))
    _one_line_error(code, err, "--svm DIR")


class _Loaded(Exception):
    """Raised by a stand-in for resolve_model, carrying the device the engine chose."""


@pytest.mark.parametrize("command", ["score-variants", "embed"])
def test_under_torchrun_each_rank_takes_cuda_local_rank(model_dir, monkeypatch, command):
    """Defect: score-variants resolved the device in the command, so every torchrun rank ran on
    cuda:0; the engine now picks cuda:LOCAL_RANK (checked without a GPU: CUDA is pretended)."""
    import torch

    from caduceus_cli.pipelines.embed import run as embed_run
    from caduceus_cli.pipelines.variants import run as variants_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)

    def stand_in(model, device=None, **options):
        raise _Loaded(device)

    monkeypatch.setattr(variants_run, "resolve_model", stand_in)
    monkeypatch.setattr(embed_run, "resolve_model", stand_in)
    args = ([command, str(VCF), "--fasta", FA, "-m", model_dir] if command == "score-variants"
            else [command, FA, "-m", model_dir, "--format", "tsv"])
    with pytest.raises(_Loaded) as loaded:
        main(args)
    assert loaded.value.args[0] == torch.device("cuda", 1)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process(model_dir, vcf_lines, tmp_path):
    header, body = vcf_lines
    vcf = tmp_path / "in.vcf"
    vcf.write_text("\n".join(header + body[:150]) + "\n")
    args = [str(vcf), *common(model_dir), "--chunk-size", "16", "--device", "cpu"]
    single, multi = tmp_path / "single.vcf", tmp_path / "multi.vcf"
    subprocess.run([sys.executable, "-m", "caduceus_cli", "score-variants", *args, "-o", str(single)],
                   check=True, timeout=300, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "caduceus_cli", "score-variants", *args, "-o", str(multi)],
                          timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    def without_command(path):  # the provenance line holds each run's own -o
        return [ln for ln in path.read_text().splitlines() if not ln.startswith("##caduceus_command=")]

    assert without_command(multi) == without_command(single)
    assert sum(not ln.startswith("#") for ln in without_command(single)) == 150
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.vcf", "multi.vcf", "single.vcf"]


# -- outputs and inputs, through the real console script ------------------------------------------

def score_console(model_dir, vcf, *extra, fasta=FA, env=None):
    return console("score-variants", vcf, "--fasta", fasta, "--model", model_dir, "--window", "32", *extra, env=env)


def _console_error(result, *needles):
    _one_line_error(result.returncode, result.stderr, *needles)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def few_vcf(vcf_lines, tmp_path):
    header, body = vcf_lines
    path = tmp_path / "in.vcf"
    path.write_text("\n".join(header + body[:5]) + "\n")
    return path


@pytest.mark.parametrize("name, index", [("out.vcf.gz", "out.vcf.gz.tbi"), ("out.bcf", "out.bcf.csi")])
def test_a_folder_in_the_way_of_the_index_is_refused_before_any_work(model_dir, few_vcf, tmp_path, name, index):
    """Defect: with a folder at out.vcf.gz.tbi, --write-index exited 1 having written out.vcf.gz
    without its index."""
    (tmp_path / index).mkdir()
    result = score_console(model_dir, few_vcf, "-q", "-o", tmp_path / name, "--write-index")
    _console_error(result, f"{tmp_path / index}: a folder is in the way of the index of {tmp_path / name}")
    assert listing(tmp_path) == ["in.vcf", index] and not any((tmp_path / index).iterdir())


@pytest.mark.parametrize("failure", ["build", "put in place"])
def test_an_index_that_fails_at_the_end_leaves_neither_file(model_dir, few_vcf, tmp_path, run_cli, monkeypatch,
                                                             failure):
    import pysam.utils
    from pysam import bcftools

    from caduceus_cli.genome.vcf_writer import RecordSink

    out = tmp_path / "out.vcf.gz"
    if failure == "build":
        def index(*args):
            raise pysam.utils.SamtoolsError("bcftools returned with error 1: stdout=, stderr=[E::hts_idx_push] "
                                            "Unsorted positions on sequence #1\n")

        monkeypatch.setattr(bcftools, "index", index)
        needle = f"{out}.tbi: could not build the index of {out}: [E::hts_idx_push] Unsorted positions"
    else:
        original = RecordSink._build_index

        def build_then_block(self):
            original(self)
            (tmp_path / "out.vcf.gz.tbi").mkdir()  # a folder appears while the run finishes

        monkeypatch.setattr(RecordSink, "_build_index", build_then_block)
        needle = f"{out}.tbi: is a folder"
    code, _, err = run_cli("score-variants", few_vcf, "-o", out, "--write-index", *common(model_dir))
    _one_line_error(code, err, needle)
    assert listing(tmp_path) == (["in.vcf"] if failure == "build" else ["in.vcf", "out.vcf.gz.tbi"])


@pytest.mark.parametrize("companion", ["ref.fa.fai", "in.vcf.gz.tbi"])
def test_an_output_over_an_input_index_is_refused_for_every_command(model_dir, few_vcf, tmp_path, companion):
    """Defect: `score-variants --format tsv -o ref.fa.fai` overwrote the input FASTA's index."""
    fasta = tmp_path / "ref.fa"
    shutil.copy(FA, fasta)
    shutil.copy(FA + ".fai", tmp_path / "ref.fa.fai")
    vcf = Path(pysam.tabix_index(str(few_vcf), preset="vcf"))  # in.vcf.gz and in.vcf.gz.tbi
    target = tmp_path / companion
    before = target.read_bytes()
    _console_error(score_console(model_dir, vcf, "-q", "--format", "tsv", "-o", target, fasta=fasta),
                   f"{target}: the output would overwrite {target}, the index of the input")
    if companion.startswith("ref"):
        _console_error(console("embed", fasta, "-m", model_dir, "--window", "32", "-q", "--format", "tsv",
                               "-o", target), "the index of the input")
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["in.vcf.gz", "in.vcf.gz.tbi", "ref.fa", "ref.fa.fai"]


def test_a_stale_fasta_index_is_one_line_naming_the_fasta(model_dir, vcf_lines, tmp_path):
    """Defect: a FASTA shorter than its .fai leaked htslib's [E::fai_retrieve] and blamed the output
    ('cannot write: Resource temporarily unavailable')."""
    fasta = tmp_path / "ref.fa"
    fasta.write_bytes(Path(FA).read_bytes()[:600_000])  # cut short after it was indexed
    shutil.copy(FA + ".fai", tmp_path / "ref.fa.fai")  # newer than the FASTA, so it is used as it is
    header, body = vcf_lines
    vcf = tmp_path / "in.vcf"
    vcf.write_text("\n".join(header + [ln for ln in body if int(ln.split("\t")[1]) > 700_000][:3]) + "\n")
    result = score_console(model_dir, vcf, "-q", "-o", tmp_path / "out.vcf", fasta=fasta)
    _console_error(result, f"{fasta}: the file is shorter", "stale", f"`samtools faidx {fasta}`")
    assert "[E::" not in result.stderr
    assert listing(tmp_path) == ["in.vcf", "ref.fa", "ref.fa.fai"]


def test_progress_total_comes_from_the_index_or_is_not_given(model_dir, few_vcf, tmp_path):
    plain = tmp_path / "plain.vcf"
    shutil.copy(few_vcf, plain)
    indexed = pysam.tabix_index(str(few_vcf), preset="vcf")
    every_line = {"CADUCEUS_PROGRESS_SECONDS": "0"}
    for vcf, counted in ((indexed, "scoring: 5 of 5 records (100.0%)"), (plain, "scoring: 5 records")):
        result = score_console(model_dir, vcf, "-o", tmp_path / "out.vcf", env=every_line)
        assert result.returncode == 0, result.stderr
        assert any(ln.startswith(f"caduceus: {counted}") for ln in result.stderr.splitlines()), result.stderr
