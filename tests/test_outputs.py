"""Outputs of the commands go through io.py: modes from the umask, BGZF for .gz names, symlinks
written through, devices written in place, disk errors on one line."""

from __future__ import annotations

import gzip
import os
import stat

import pytest

from caduceus_cli import io

from .conftest import DATA, console, need_data

VCF = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"


@pytest.fixture(scope="module")
def few_vcf(tmp_path_factory):
    """The real header and the first 12 records."""
    need_data("variants", VCF.name)
    need_data("variants", FA.name)
    lines = gzip.open(VCF, "rt").read().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")][:12]
    path = tmp_path_factory.mktemp("vcf") / "few.vcf"
    path.write_text("\n".join(header + body) + "\n")
    return path


def score(run_cli, model_dir, vcf, output, *extra):
    return run_cli("score-variants", vcf, "--fasta", FA, "-m", model_dir, "--window", "32", "-q", "-o", output, *extra)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_output_modes_follow_the_umask(run_cli, small_ps_dir, few_vcf, tmp_path, monkeypatch):
    """Defect: outputs were 0600 and SVM folders 0700 whatever the umask."""
    monkeypatch.setattr(io, "_UMASK", 0o002)
    for name in ("out.vcf", "out.vcf.gz", "out.bcf", "out.tsv"):
        code, _, err = score(run_cli, small_ps_dir, few_vcf, tmp_path / name)
        assert code == 0, err
        assert _mode(tmp_path / name) == 0o664, name
    examples = io.Path(__file__).resolve().parent.parent / "caduceus_cli" / "data" / "examples"
    for name in ("emb.parquet", "emb.npz", "emb.tsv"):
        code, _, err = run_cli("embed", examples / "synthetic_genome.fa", examples / "synthetic_regions.bed",
                               "-m", small_ps_dir, "--window", "64", "-q", "-o", tmp_path / name)
        assert code == 0, err
        assert _mode(tmp_path / name) == 0o664, name
    assert _mode(tmp_path / "emb.regions.bed") == 0o664


def test_gz_tsv_output_is_bgzf(run_cli, small_ps_dir, few_vcf, tmp_path):
    """Defect: -o scores.tsv.gz wrote plain text under a .gz name."""
    out = tmp_path / "scores.tsv.gz"
    code, _, err = score(run_cli, small_ps_dir, few_vcf, out)
    assert code == 0, err
    raw = out.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x04" and raw[12:14] == b"BC"
    rows = [ln for ln in gzip.decompress(raw).decode().splitlines() if not ln.startswith("##")]
    assert rows[0].startswith("chrom\tpos\tid\tref\talt") and len(rows) > 12  # header + one row per ALT


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", ["score-variants", "embed-tsv", "embed-parquet"])
def test_full_disk_is_one_line_and_exit_1(run_cli, small_ps_dir, few_vcf, command, device):
    """Defect: `score-variants ... -o /dev/full` exited 0 having written nothing (and, as root,
    replaced the device with a regular file)."""
    full = device("full")
    if command == "score-variants":
        code, _, err = score(run_cli, small_ps_dir, few_vcf, full)
    else:
        examples = io.Path(__file__).resolve().parent.parent / "caduceus_cli" / "data" / "examples"
        code, _, err = run_cli("embed", examples / "synthetic_genome.fa", examples / "synthetic_regions.bed",
                               "-m", small_ps_dir, "--window", "64", "-q", "-o", full,
                               "--format", command.split("-")[1])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0] == f"caduceus: error: {full}: cannot write: no space left on device"
    assert stat.S_ISCHR(os.stat(full).st_mode)


def test_output_through_a_symlink_replaces_the_target_and_keeps_the_link(run_cli, small_ps_dir, few_vcf, tmp_path):
    real = tmp_path / "real.vcf.gz"
    real.write_text("old")
    link = tmp_path / "link.vcf.gz"
    link.symlink_to(real)
    code, _, err = score(run_cli, small_ps_dir, few_vcf, link, "--write-index")
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert gzip.decompress(real.read_bytes()).decode().startswith("##fileformat=VCF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.vcf.gz", "link.vcf.gz.tbi", "real.vcf.gz"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can replace a device node")
def test_dev_null_as_root_is_written_not_replaced(run_cli, small_ps_dir, few_vcf, device):
    """Defect: as root, -o /dev/null replaced the device node with a regular file. The real console
    script (and embed in this process) write to a private copy of /dev/null (same device numbers),
    so that a regression cannot break the machine's own /dev/null."""
    null = device("null")
    result = console("score-variants", few_vcf, "--fasta", FA, "-m", small_ps_dir, "--window", "32", "-q", "-o", null)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    code, _, err = run_cli("embed", FA, "--format", "tsv", "-m", small_ps_dir, "--window", "32", "-q", "-o", null)
    assert code == 0, err
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in null.parent.iterdir()) == ["null"]


def test_bcf_declares_the_reference_contigs_and_refuses_keys_the_header_does_not(run_cli, small_ps_dir, few_vcf,
                                                                                   tmp_path):
    """BCF is written by htslib as records arrive, so its header declares the contigs up front (the
    real VCF's records are on 'z', which only the reference names); a key no header line declares
    is refused for BCF (htslib would write a broken file) and passed through in VCF and VCF.gz."""
    import pysam

    code, _, err = score(run_cli, small_ps_dir, few_vcf, tmp_path / "out.bcf", "--write-index")
    assert code == 0, err
    with pysam.VariantFile(str(tmp_path / "out.bcf")) as bcf:
        assert bcf.header.contigs["z"].length == 1_000_000
        assert len(list(bcf.fetch("z", 0, 1_000_000))) == 12
    lines = few_vcf.read_text().splitlines()
    lines[-1] += ";UNDECLARED=1"
    odd = tmp_path / "odd.vcf"
    odd.write_text("\n".join(lines) + "\n")
    code, _, err = score(run_cli, small_ps_dir, odd, tmp_path / "odd.bcf")
    assert code == 1 and err.strip().splitlines() == [
        f"caduceus: error: {odd}: line {len(lines)}: INFO UNDECLARED not declared in the VCF header, and BCF "
        "declares every key before its records: add the ##INFO/##FILTER/##FORMAT lines (`bcftools annotate "
        "--header-lines`), or write .vcf.gz"], err
    for name in ("scored.vcf.gz", "scored.vcf"):
        code, _, err = score(run_cli, small_ps_dir, odd, tmp_path / name)
        assert code == 0, err
        text = (gzip.decompress if name.endswith(".gz") else bytes)((tmp_path / name).read_bytes()).decode()
        assert "UNDECLARED=1" in text.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.vcf", "out.bcf", "out.bcf.csi", "scored.vcf",
                                                              "scored.vcf.gz"]
