"""Every row of the "Reliability at scale" table (issue 13), through the real console script: one
line naming the file, line or value, a non-zero exit and nothing left behind; or accepted on
purpose (docs/reliability.md says which).

Rows tested elsewhere, not repeated here:
- `--window 1.5`, missing arguments, unknown options and commands: test_cli.py
  (test_usage_errors_are_one_line_with_exit_status_2); `caduceus` with no arguments:
  test_cli.py (test_a_bare_group_prints_its_help);
- `-o /dev/full`: test_outputs.py (test_full_disk_is_one_line_and_exit_1);
- `| head -1` and SIGTERM during score-variants or embed: test_signals.py
  (test_a_reader_that_goes_away_ends_the_run_with_141, test_sigterm_without_resume_leaves_nothing).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DATA, REPO, console, need_data

VCF = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"
GENOME = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_genome.fa"
REGIONS = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_regions.bed"


@pytest.fixture(scope="module")
def vcf_lines():
    need_data("variants", VCF.name)
    need_data("variants", FA.name)
    lines = gzip.open(VCF, "rt").read().splitlines()
    return [ln for ln in lines if ln.startswith("#")], [ln for ln in lines if not ln.startswith("#")][:600]


@pytest.fixture
def few_vcf(vcf_lines, tmp_path):
    path = tmp_path / "in.vcf"
    path.write_text("\n".join(vcf_lines[0] + vcf_lines[1][:30]) + "\n")
    return path


def score(model, vcf, *extra, **kwargs):
    return console("score-variants", vcf, "-f", FA, "-m", model, "--window", "32", "-q", *extra, **kwargs)


def embed(model, *extra, **kwargs):
    return console("embed", GENOME, *extra, "-m", model, "--window", "64", "-q", **kwargs)


def one_error(result, *needles, code=1):
    """Exit ``code``, nothing on stderr but one `caduceus: error:` line holding every needle."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- output equal to an input ----------------------------------------------------------------------

def test_output_equal_to_an_input_is_refused_for_every_command(small_ps_dir, few_vcf, tmp_path):
    before = few_vcf.read_bytes()
    link = tmp_path / "link.vcf"
    link.symlink_to(few_vcf)
    one_error(score(small_ps_dir, few_vcf, "-o", few_vcf), "would overwrite the input")
    one_error(score(small_ps_dir, few_vcf, "-o", link), "would overwrite the input")  # through a symlink
    bed = tmp_path / "emb.regions.bed"
    shutil.copy(REGIONS, bed)
    one_error(embed(small_ps_dir, bed, "-o", bed, "--format", "tsv"), "would overwrite the input")
    one_error(embed(small_ps_dir, bed, "-o", tmp_path / "emb.npy"), "would overwrite the input")  # the sidecar
    genome = tmp_path / "genome.fa"
    shutil.copy(GENOME, genome)
    one_error(console("pretrain", genome, "-o", genome, "--steps", "1"), "would overwrite the input")
    one_error(console("finetune", "svm", few_vcf, "-f", FA, "--tss", bed, "-o", few_vcf), "would overwrite the input")
    assert few_vcf.read_bytes() == before and REGIONS.read_bytes() == bed.read_bytes()
    assert listing(tmp_path) == ["emb.regions.bed", "genome.fa", "in.vcf", "link.vcf"]


# -- VCF input ---------------------------------------------------------------------------------------

def test_unsorted_vcf_with_write_index_is_refused_at_the_first_record_out_of_order(small_ps_dir, vcf_lines,
                                                                                  tmp_path):
    header, body = vcf_lines
    unsorted = tmp_path / "unsorted.vcf"
    unsorted.write_text("\n".join(header + body[:5] + [body[9]] + body[5:9]) + "\n")
    line = len(header) + 7  # body[5] comes after body[9]
    pos9, pos5 = body[9].split("\t")[1], body[5].split("\t")[1]
    for name in ("out.vcf.gz", "out.bcf"):
        one_error(score(small_ps_dir, unsorted, "--write-index", "-o", tmp_path / name),
                  f"unsorted.vcf: line {line}: z:{pos5} comes after z:{pos9}", "bcftools sort")
    assert listing(tmp_path) == ["unsorted.vcf"]


def test_vcf_without_chrom_line_is_one_line(small_ps_dir, vcf_lines, tmp_path):
    header, body = vcf_lines
    path = tmp_path / "nochrom.vcf"
    path.write_text("\n".join([h for h in header if not h.startswith("#CHROM")] + body) + "\n")
    one_error(score(small_ps_dir, path, "-o", tmp_path / "out.vcf"), "nochrom.vcf: the VCF header cannot be parsed",
              "#CHROM")
    assert listing(tmp_path) == ["nochrom.vcf"]


def test_vcf_ending_with_a_blank_line_is_one_line_not_a_crash(small_ps_dir, vcf_lines, tmp_path):
    """Defect found by fuzzing: cyvcf2 yields the blank line as a record whose REF segfaults."""
    header, body = vcf_lines
    path = tmp_path / "blank.vcf"
    path.write_text("\n".join(header + body[:3]) + "\n\n")
    one_error(score(small_ps_dir, path, "-o", tmp_path / "out.vcf"), f"blank.vcf: line {len(header) + 4}: malformed")
    assert listing(tmp_path) == ["blank.vcf"]


@pytest.mark.parametrize("device, needle", [("bogus", "--device 'bogus' is not a device"),
                                            ("cuda", "CUDA is not available"), ("cuda:7", "cuda:7")])
def test_unusable_device_is_one_line(small_ps_dir, few_vcf, device, needle):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and (device == "cuda" or torch.cuda.device_count() > 7):
        pytest.skip("this machine has that CUDA device")
    one_error(score(small_ps_dir, few_vcf, "--device", device), needle)


def test_unknown_output_extension_is_refused_before_work(small_ps_dir, few_vcf, tmp_path):
    one_error(score(small_ps_dir, few_vcf, "-o", tmp_path / "x.txt"), "x.txt: cannot tell the output format",
              ".vcf.gz", "--format")
    one_error(embed(small_ps_dir, REGIONS, "-o", tmp_path / "x.txt"), "x.txt: cannot tell the output format")
    assert listing(tmp_path) == ["in.vcf"]
    result = score(small_ps_dir, few_vcf, "-o", tmp_path / "x.txt", "--format", "tsv")
    assert result.returncode == 0 and (tmp_path / "x.txt").read_text().count("\tscored\n") > 20


def test_pos_zero_and_past_the_contig_end_say_so(small_ps_dir, vcf_lines, tmp_path):
    header, body = vcf_lines
    cols = body[0].split("\t")
    zero = "\t".join([cols[0], "0", *cols[2:]])
    past = "\t".join([cols[0], "5000000", *cols[2:]])
    path = tmp_path / "pos.vcf"
    path.write_text("\n".join(header + [zero, past]) + "\n")
    result = score(small_ps_dir, path)
    assert result.returncode == 0, result.stderr
    records = [ln for ln in result.stdout.splitlines() if not ln.startswith("#")]
    assert all("CADUCEUS_SKIP=pos_outside_contig" in r for r in records)
    assert "POS outside their contig" in result.stderr and "ref_mismatch" not in result.stderr
    one_error(score(small_ps_dir, path, "--strict-ref"), f"pos.vcf: line {len(header) + 1}: POS 0 is outside z")


# -- model windows and memory ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_trained_model(tmp_path_factory, small_ps_dir):
    """The small model, saying it was trained on 64 bp."""
    folder = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(small_ps_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_seq_len": 64}))
    return folder


def test_window_defaults_to_the_trained_length_and_longer_ones_warn(short_trained_model, few_vcf):
    result = console("score-variants", few_vcf, "-f", FA, "-m", short_trained_model, "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["window"] == 64  # 1,536 bp capped at the trained 64 bp
    assert summary["batch_size"] == 8  # on CPU: 64 windows per pass needed ~9 GB with the bundled model
    assert "##caduceus_window=64" in result.stdout and "warning" not in result.stderr
    result = console("score-variants", few_vcf, "-f", FA, "-m", short_trained_model, "--window", "128", "-q")
    assert result.returncode == 0
    assert result.stderr.strip() == ("caduceus: warning: --window 128 is longer than the 64 bp this model was "
                                     "trained on: its scores there are untested (give --window 64 or less)")


# -- full disks ---------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs at tmp_path/disk (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Take every byte left on ``disk`` but ``leave``."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_stdout_to_a_full_disk_is_one_line(small_ps_dir, few_vcf, small_disk):
    fill(small_disk)
    for command in ("score-variants", "embed"):
        with open(small_disk / "out", "w") as stdout:
            result = (score(small_ps_dir, few_vcf, stdout=stdout) if command == "score-variants"
                      else embed(small_ps_dir, REGIONS, stdout=stdout))
        one_error(result, "stdout: cannot write: no space left on device")


@pytest.mark.parametrize("name", ["out.vcf", "out.vcf.gz", "emb.parquet"])
def test_output_on_a_full_disk_is_one_line_and_leaves_nothing(small_ps_dir, vcf_lines, tmp_path, small_disk, name):
    header, body = vcf_lines
    big = tmp_path / "big.vcf"
    big.write_text("\n".join(header + body) + "\n")  # more than the disk holds, in any format
    fill(small_disk, leave=8192)  # compressed, the records would fit the empty disk
    out = small_disk / name
    if name.startswith("emb"):
        regions = tmp_path / "many.bed"
        regions.write_text("".join(f"chrA\t{100 * k}\t{100 * k + 64}\n" for k in range(100)))
        result = embed(small_ps_dir, regions, "-o", out, "--pool", "none")
    else:
        result = score(small_ps_dir, big, "-o", out, "--scores", "llr", *(["--write-index"] if "gz" in name else []))
    one_error(result, f"{out}", "no space left on device")
    assert listing(small_disk) == ["filler"]


def test_pretrain_checkpoint_on_a_full_disk_is_one_line(small_disk):
    result = console("pretrain", GENOME, "-o", small_disk / "run", "--d-model", "32", "--n-layer", "2",
                     "--seq-len", "64", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1", "-q",
                     "--device", "cpu")
    one_error(result, "run/checkpoint-1", "no space left on device")
    assert listing(small_disk) == []  # the run failed before its first checkpoint: no run folder is left


# -- pretrain errors found after the start ---------------------------------------------------------------

@pytest.mark.parametrize("genome, extra, needle", [
    ("synthetic", ["--seq-len", "10000000"], "--seq-len 10000000 is longer than every training region"),
    ("all-n", ["--seq-len", "32"], "every base is N"),
    ("synthetic", ["--seq-len", "64", "--valid-contigs", "nosuch"], "--valid-contigs: contig 'nosuch'"),
    ("empty", ["--seq-len", "64"], "empty.fa: not a readable FASTA file: the file is empty"),
])
def test_pretrain_errors_after_the_start_leave_no_run_folder(tmp_path, genome, extra, needle):
    path = {"synthetic": GENOME, "all-n": tmp_path / "alln.fa", "empty": tmp_path / "empty.fa"}[genome]
    (tmp_path / "alln.fa").write_text(">a\n" + "N" * 200 + "\n")
    (tmp_path / "empty.fa").write_text("")
    result = console("pretrain", path, "-o", tmp_path / "run", "--d-model", "16", "--n-layer", "1", "--steps", "2",
                     "--batch-size", "2", "-q", *extra)
    one_error(result, needle)
    assert not (tmp_path / "run").exists()


# -- FASTA -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    (b"", "empty.fa: not a readable FASTA file: the file is empty"),
    (b">z\n", "empty.fa: not a readable FASTA file: record 'z' has no sequence"),
    (b">a\nACGTACGT\n>a\nGGGG\n", "the sequence name 'a' appears more than once"),
])
def test_broken_fasta_is_one_line_without_htslib_messages(small_ps_dir, tmp_path, content, needle):
    fasta = tmp_path / "empty.fa"
    fasta.write_bytes(content)
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t4\n")
    one_error(console("embed", fasta, bed, "-m", small_ps_dir, "-o", tmp_path / "o.parquet"), needle)
    assert listing(tmp_path) == ["empty.fa", "r.bed"]  # no .fai of a refused FASTA either


def test_truncated_bgzip_fasta_is_one_line(small_ps_dir, tmp_path):
    import pysam

    plain = tmp_path / "g.fa"
    bases = random.Random(0).choices("ACGT", k=200_000)  # random: a repeat compresses into 3 KB whole
    plain.write_text(">a\n" + "".join(bases) + "\n")
    pysam.tabix_compress(str(plain), str(tmp_path / "whole.fa.gz"))
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes((tmp_path / "whole.fa.gz").read_bytes()[:3000])
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t8\n")
    one_error(console("embed", cut, bed, "-m", small_ps_dir, "-o", tmp_path / "o.parquet"),
              "cut.fa.gz: not a readable FASTA file: the compressed file is truncated or corrupt")


def test_plain_gzip_fasta_is_accepted_with_a_warning(small_ps_dir, tmp_path):
    need_data("genomes", "ecoli_K12_MG1655.fa.gz")
    bed = tmp_path / "r.bed"
    bed.write_text("NC_000913.3\t1000\t1064\n")
    result = console("embed", DATA / "genomes" / "ecoli_K12_MG1655.fa.gz", bed, "-m", small_ps_dir, "-q",
                     "-o", tmp_path / "o.tsv")
    assert result.returncode == 0, result.stderr
    assert "gzip-compressed but not bgzip" in result.stderr and (tmp_path / "o.tsv").exists()


# -- BED ----------------------------------------------------------------------------------------------

def test_crlf_space_separated_and_mixed_bed_lines_read_as_tab_separated_ones(small_ps_dir, tmp_path):
    """Accepted on purpose (docs/reliability.md): Windows line ends, columns split on runs of spaces
    in a line without tabs, and BED3 lines among BED6 ones (their strand is '.')."""
    rows = [line.split("\t") for line in REGIONS.read_text().splitlines() if not line.startswith("#")][:4]
    clean = tmp_path / "clean.bed"
    clean.write_text("".join("\t".join(r[:3] if k == 3 else r) + "\n" for k, r in enumerate(rows)))
    odd = tmp_path / "odd.bed"  # CRLF, spaces, tabs, and a BED3 line
    odd.write_bytes(("\t".join(rows[0]) + "\r\n" + " ".join(rows[1]) + "\r\n" + "  ".join(rows[2]) + "\n"
                     + "\t".join(rows[3][:3]) + "\r\n").encode())

    def embedding(bed: Path) -> list[str]:
        result = console("embed", GENOME, bed, "-m", small_ps_dir, "-q", "-o", "-")
        assert result.returncode == 0, result.stderr
        return [ln for ln in result.stdout.splitlines() if not ln.startswith("##")]

    assert embedding(odd) == embedding(clean)


def test_per_position_npy_of_unequal_lengths_is_one_line(small_ps_dir, tmp_path):
    result = console("embed", GENOME, REGIONS, "-m", small_ps_dir, "--pool", "none", "-q", "-o", tmp_path / "x.npy")
    one_error(result, "per-position embeddings of different lengths", "--window")
    assert listing(tmp_path) == []


# -- models and provenance ---------------------------------------------------------------------------

def test_models_info_on_a_pretraining_run_points_to_final(small_ps_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    one_error(console("models", "info", run), "a pretraining run folder without a final model yet",
              f"--resume {run}")
    shutil.copytree(small_ps_dir, run / "final")
    assert console("models", "info", run).returncode == 0  # a finished run stands for its final model
    assert console("models", "info", run / "final").returncode == 0


def test_model_revision_is_never_the_string_none(small_ps_dir, few_vcf, tmp_path):
    result = score(small_ps_dir, few_vcf, "-o", tmp_path / "out.vcf")
    assert result.returncode == 0
    header = [ln for ln in (tmp_path / "out.vcf").read_text().splitlines() if ln.startswith("##caduceus_")]
    assert header and not [ln for ln in header if ln.endswith("=None")]
    assert not [ln for ln in header if ln.startswith("##caduceus_model_revision=")]  # a folder has no revision
    assert embed(small_ps_dir, REGIONS, "-o", tmp_path / "emb.parquet").returncode == 0
    import pyarrow.parquet as pq

    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(tmp_path / "emb.parquet").metadata.items()}
    assert metadata["model_sha256"] and "None" not in metadata.values() and "model_revision" not in metadata
    table = console("models", "info", small_ps_dir)
    assert table.returncode == 0 and "revision " in table.stdout and "None" not in table.stdout
    assert json.loads(console("models", "info", small_ps_dir, "--json").stdout)["revision"] is None


def test_pretrain_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    env = {**os.environ, "CADUCEUS_PROGRESS_SECONDS": "0"}
    result = console("pretrain", GENOME, "-o", tmp_path / "run", "--d-model", "16", "--n-layer", "1", "--seq-len",
                     "64", "--steps", "3", "--batch-size", "2", "--log-every", "1", "--device", "cpu", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    progress = [ln for ln in lines[:-1] if ln.startswith("caduceus: pretrain: ") and " of 3 steps" in ln]
    assert [ln.split(": ")[2].split(" of")[0] for ln in progress] == ["1", "2", "3"]
    assert "loss=" in progress[-1]
    assert lines[-1].startswith("caduceus: pretrain: trained 3 of 3 steps") and lines[-1].endswith(f"{tmp_path}/run/final")
