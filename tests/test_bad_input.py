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
    ("synthetic", ["--seq-len", "1000000"], "--seq-len 1000000 is longer than every training region"),
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


# -- numeric options: one rule for every command ----------------------------------------------------

def test_every_numeric_option_is_checked_as_it_is_parsed():
    """Every integer or real option of every command has a range check (limits.py through
    commands/_common.py), except --layer, whose range is the model's (checked by the engine)."""
    import typing

    from caduceus_cli.cli import build_command

    unchecked = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")
        hints = typing.get_type_hints(command.callback) if command.callback is not None else {}
        for param in command.params:
            if any(t in (int, float) for t in (hints.get(param.name), *typing.get_args(hints.get(param.name)))):
                if param.callback is None and "--layer" not in param.opts:
                    unchecked.append(f"{path} {max(param.opts, key=len)}")

    walk(build_command(), "caduceus")
    assert unchecked == []


@pytest.mark.parametrize("args, needle", [
    (["embed", "g.fa", "r.bed", "-b", "0"], "--batch-size 0 is out of range: give a whole number from 1 to 65,536"),
    (["embed", "g.fa", "r.bed", "-b", "-1"], "--batch-size -1 is out of range"),
    (["embed", "g.fa", "r.bed", "--max-tokens", "0"], "--max-tokens 0 is out of range"),
    (["embed", "g.fa", "r.bed", "--max-length", "0"], "--max-length 0 is out of range"),
    (["predict", "clf", "in.fa", "-b", "0"], "--batch-size 0 is out of range"),
    (["predict", "clf", "in.fa", "-b", "-1"], "--batch-size -1 is out of range"),
    (["finetune", "probe", "t.csv", "-o", "out", "-b", "-1"], "--batch-size -1 is out of range"),
    (["finetune", "classify", "t.csv", "-o", "out", "--eval-batch-size", "-1"], "--eval-batch-size -1 is out of range"),
    (["finetune", "classify", "t.csv", "-o", "out", "--seeds", "0"], "--seeds 0 is out of range: give a whole number "
                                                                     "from 1 to 1,000"),
    (["finetune", "svm", "l.tsv", "-f", "g.fa", "--tss", "t.bed", "-o", "out", "--n-train", "0"],
     "--n-train 0 is out of range"),
    (["benchmark", "gue", "-o", "report", "--max-sequences", "0"], "--max-sequences 0 is out of range"),
    (["benchmark", "gue", "-o", "report", "--seeds", "0"], "--seeds 0 is out of range"),
    (["score-variants", "in.vcf", "-f", "g.fa", "--window", "1099511627776"],
     "--window 1099511627776 is out of range: give a whole number from 3 to 1,048,576"),
    (["pretrain", "g.fa", "-o", "run", "--weight-decay", "nan"], "--weight-decay nan is not a finite number"),
    (["finetune", "classify", "t.csv", "-o", "out", "--lr", "inf"], "--lr inf is not a finite number"),
])
def test_sizes_out_of_range_and_non_finite_numbers_are_usage_errors(tmp_path, args, needle):
    """Defects: negative batch sizes grew to 24 GB (predict, probe, classify's evaluation), zero
    became the default without a word, --window 2^40 was a MemoryError, --n-train 0 scikit-learn's
    ValueError, --weight-decay nan was accepted. Refused as the options are parsed, before any file
    is read or made."""
    one_error(console(*args, cwd=tmp_path), needle, code=2)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("call, needle", [
    (lambda cc: cc.embed_regions(str(GENOME), str(REGIONS), batch_size=0), "--batch-size 0 is out of range"),
    (lambda cc: cc.predict("clf", "in.fa", batch_size=-1), "--batch-size -1 is out of range"),
    (lambda cc: cc.fit_probe("t.csv", batch_size=-1), "--batch-size -1 is out of range"),
    (lambda cc: cc.finetune_classifier("t.csv", eval_batch_size=-1), "--eval-batch-size -1 is out of range"),
    (lambda cc: cc.run_benchmark("gue", max_sequences=0), "--max-sequences 0 is out of range"),
    (lambda cc: cc.score_variants("in.vcf", "g.fa", window=1 << 40), "--window 1099511627776 is out of range"),
    (lambda cc: cc.train_svm("l.tsv", "g.fa", "t.bed", "out", n_train=0), "--n-train 0 is out of range"),
])
def test_the_python_api_checks_the_same_values_in_the_same_words(tmp_path, monkeypatch, call, needle):
    import caduceus_cli as cc
    from caduceus_cli.errors import CaduceusError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaduceusError, match=needle):
        call(cc)
    assert listing(tmp_path) == []


def test_benchmark_speed_lengths_that_are_not_numbers_are_one_line(tmp_path):
    one_error(console("benchmark", "speed", "-o", "report", "--lengths", "1024,abc", cwd=tmp_path),
              "--lengths: 'abc' is not a whole number")
    assert listing(tmp_path) == []


# -- devices and torchrun ---------------------------------------------------------------------------

@pytest.mark.parametrize("device, needle", [("bogus", "--device 'bogus' is not a device"), ("cuda:7", "cuda:7")])
def test_models_info_refuses_a_device_as_every_command_does(small_ps_dir, device, needle):
    import torch

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has cuda:7")
    one_error(console("models", "info", small_ps_dir, "--device", device), needle)


def test_world_size_without_torchrun_says_to_launch_with_torchrun(small_ps_dir, tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "", "MASTER_PORT": ""}
    one_error(embed(small_ps_dir, REGIONS, "-o", tmp_path / "e.parquet", env=env), "WORLD_SIZE=2",
              "MASTER_ADDR and MASTER_PORT are not set", "launch many processes with torchrun")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("command", [["predict", "clf", "in.fa", "-o", "p.tsv"], ["finetune", "probe", "t.csv", "-o", "out"]])
def test_a_rank_that_is_not_a_number_is_one_line(tmp_path, command):
    one_error(console(*command, cwd=tmp_path, env={"RANK": "abc"}), "environment variable RANK='abc' is not an integer")
    assert listing(tmp_path) == []


# -- FASTA with bytes that are not sequence ----------------------------------------------------------

@pytest.fixture
def nul_fasta(tmp_path):
    """Record 'a' of 290 bp in lines of 10; its 4th sequence line (line 5 of the file, bases 31-40)
    is ten NUL bytes."""
    bases = random.Random(1).choices("ACGT", k=290)
    lines = ["".join(bases[k:k + 10]) for k in range(0, 290, 10)]
    lines[3] = "\0" * 10
    path = tmp_path / "g.fa"
    path.write_bytes((">a\n" + "\n".join(lines) + "\n").encode())
    return path


def test_a_nul_line_under_a_region_is_refused_naming_the_line(small_ps_dir, nul_fasta, tmp_path):
    """Defects: a region over the NUL line gave `cannot reshape tensor of 0 elements`; with --window
    embed wrote a 10 bp embedding for a 100 bp region (n_padded 0)."""
    before = nul_fasta.read_bytes()
    bed = tmp_path / "r.bed"
    bed.write_text("a\t0\t100\n")
    needle = "g.fa: line 5 (record 'a', base 31): a byte that is not a sequence letter"
    one_error(console("embed", nul_fasta, bed, "-m", small_ps_dir, "-q", "-o", tmp_path / "e.parquet"), needle)
    bed.write_text("a\t20\t60\n")
    one_error(console("embed", nul_fasta, bed, "-m", small_ps_dir, "-q", "--window", "100", "-o",
                      tmp_path / "e.parquet"), needle)
    one_error(console("embed", nul_fasta, "-m", small_ps_dir, "-q", "-o", tmp_path / "e.parquet"),
              "g.fa: line 5: '\\x00' in record 'a' is not a sequence letter")  # every record, no BED
    assert nul_fasta.read_bytes() == before
    assert listing(tmp_path) == ["g.fa", "g.fa.fai", "r.bed"]  # the index faidx built, no output


def test_a_nul_line_is_not_a_ref_mismatch(small_ps_dir, nul_fasta, tmp_path):
    """Defect: score-variants marked a correct REF near the NUL line as ref_mismatch, exit 0."""
    ref = nul_fasta.read_bytes().split(b"\n")[6][:1].decode()  # base 51, on line 7
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=a,length=290>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\t"
                   f"INFO\na\t51\t.\t{ref}\t{'C' if ref != 'C' else 'G'}\t.\t.\t.\n")
    one_error(console("score-variants", vcf, "-f", nul_fasta, "-m", small_ps_dir, "--window", "64", "-q", "-o",
                      tmp_path / "out.vcf"), "g.fa: line 5 (record 'a', base 31)")
    assert listing(tmp_path) == ["g.fa", "g.fa.fai", "v.vcf"]


# -- numbers in text inputs are ASCII digits ------------------------------------------------------------

def test_arabic_indic_digits_are_not_coordinates(small_ps_dir, few_vcf, tmp_path):
    """Defect: int() reads '١٢' as 12, so a BED start in Arabic-Indic digits was embedded as 12."""
    bed = tmp_path / "r.bed"
    bed.write_text("chrA\t\u0661\u0662\t100\n")
    one_error(console("embed", GENOME, bed, "-m", small_ps_dir, "-q", "-o", tmp_path / "e.parquet"),
              "r.bed: line 1: start '\u0661\u0662' is not an integer written in digits 0-9")
    regions = tmp_path / "regions.txt"
    regions.write_text("z\t\u0661\u0660\u0660\u0660\u0660\u0660\u0660\n")
    one_error(score(small_ps_dir, few_vcf, "-R", regions, "-o", tmp_path / "o.vcf"),
              "regions.txt: line 1: pos '\u0661\u0660\u0660\u0660\u0660\u0660\u0660' is not an integer")
    labeled = tmp_path / "l.tsv"
    labeled.write_text("z\t\u0661\u0662\u0663\tA\tC\t1\n")
    one_error(console("finetune", "svm", labeled, "-f", FA, "--tss", bed, "-o", tmp_path / "svm"),
              "l.tsv: line 1: pos '\u0661\u0662\u0663' is not a positive integer")
    assert listing(tmp_path) == ["in.vcf", "l.tsv", "r.bed", "regions.txt"]


# -- options that were ignored or accepted silently ---------------------------------------------------

def test_tissue_without_svm_is_refused(small_ps_dir, few_vcf, tmp_path):
    one_error(score(small_ps_dir, few_vcf, "--tissue", "Liver", "-o", tmp_path / "o.vcf"),
              "--tissue Liver is the tissue of the svm score: give --svm DIR too")
    assert listing(tmp_path) == ["in.vcf"]


def test_pretrain_into_a_folder_that_holds_files_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    one_error(console("pretrain", GENOME, "-o", tmp_path / "run", "--d-model", "16", "--n-layer", "1", "--steps", "1",
                      "-q"), "run: already exists and is not empty: a new run needs a new (or empty) -o folder")
    assert listing(tmp_path / "run") == ["notes.txt"]


def test_vep_eqtl_says_what_is_missing_before_any_download(tmp_path):
    """Defect: without --fasta it retried a download for 25 s before saying what was missing."""
    result = console("benchmark", "vep-eqtl", "-o", "report", cwd=tmp_path, timeout=20,
                     env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    one_error(result, "vep-eqtl needs the hg38 genome (--fasta) and a TSS annotation (--tss)")
    assert listing(tmp_path) == []


def test_a_pickled_checkpoint_is_refused_in_our_own_words(small_ps_dir, tmp_path):
    """Defect: the refusal repeated torch's text, with a terminal escape and its advice to load the
    file with weights_only=False."""
    import fractions

    import torch

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(small_ps_dir / "config.json", folder / "config.json")
    torch.save({"w": fractions.Fraction(1, 3)}, folder / "pytorch_model.bin")  # a Python object, not a tensor
    line = one_error(console("models", "info", folder), "pytorch_model.bin: cannot be read as a weights file",
                     "Python objects other than tensors")
    assert "weights_only" not in line and "\x1b" not in line


# -- the output format of predict -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory, small_ps_dir):
    """A probe of the small model on 48 synthetic sequences (32 bp, label: GC-rich or not), and 400
    sequences to predict."""
    from caduceus_cli.pipelines.finetune import fit_probe

    folder = tmp_path_factory.mktemp("classifier")
    rng = random.Random(2)
    rows = []
    for k in range(48):
        bases = rng.choices("GC" if k % 2 else "AT", k=12) + rng.choices("ACGT", k=20)
        rows.append(("".join(bases), k % 2))
    (folder / "train.csv").write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in rows))
    fit_probe(str(folder / "train.csv"), folder / "clf", model=str(small_ps_dir), device="cpu", grid=(1.0,),
              cv_folds=2, cache=False)
    (folder / "many.fa").write_text("".join(f">s{k}\n{''.join(rng.choices('ACGT', k=32))}\n" for k in range(400)))
    return folder


def test_predict_refuses_an_output_name_it_cannot_tell(classifier, tmp_path):
    """Defect: `predict -o out.txt` wrote TSV into a name of another format."""
    one_error(console("predict", classifier / "clf", classifier / "many.fa", "-o", tmp_path / "out.txt"),
              "out.txt: cannot tell the output format from the file name", "--format")
    assert listing(tmp_path) == []
    result = console("predict", classifier / "clf", classifier / "many.fa", "-o", tmp_path / "out.txt",
                     "--format", "tsv", "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text().splitlines()[-1].startswith("s399\t")


# -- signals ----------------------------------------------------------------------------------------------

def terminate_after(args, cwd: Path, started: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``caduceus ARGS`` in ``cwd`` with progress lines on; SIGTERM once stderr holds ``started``."""
    import signal

    from .conftest import console_command, console_env

    proc = subprocess.Popen(console_command(*args), cwd=cwd, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=console_env({"CADUCEUS_PROGRESS_SECONDS": "0", **(env or {})}))
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if started in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stderr.read().splitlines(keepends=True)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(lines))


def test_sigterm_stops_predict_after_the_current_batch_and_leaves_nothing(classifier, tmp_path):
    """Defect: predict said `stopping after the current batch`, then ran to the end with exit 0."""
    args = ["predict", classifier / "clf", classifier / "many.fa", "-o", "p.tsv", "-b", "2", "--device", "cpu"]
    result = terminate_after(args, tmp_path, "caduceus: predict: ", env={"CADUCEUS_PREDICT_CHUNK": "8"})
    assert result.returncode == 143, result.stderr
    assert result.stderr.splitlines()[-1] == "caduceus: terminated"
    assert listing(tmp_path) == []


def test_sigterm_stops_finetune_classify_in_a_folder_that_resume_continues(classifier, small_ps_dir, tmp_path):
    """Defect: classify said `stopping after the current batch`, then trained to the end with exit 0.
    Now it keeps what --max-time keeps (the folder and its resume/ state) and exits 143; nothing is
    left in TMPDIR either (torch's import made an empty torchinductor_USER folder there)."""
    (tmp_path / "tmp").mkdir()
    args = ["finetune", "classify", classifier / "train.csv", "-o", "clf", "-m", small_ps_dir, "--epochs", "2",
            "-b", "4", "--device", "cpu"]
    result = terminate_after(args, tmp_path, " steps", env={"TMPDIR": str(tmp_path / "tmp")})
    assert result.returncode == 143, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "caduceus: terminated"
    assert "stopped by SIGTERM in run 1 of 1" in lines[-2] and "continue with --resume clf" in lines[-2]
    report = json.loads((tmp_path / "clf" / "report.json").read_text())
    assert report["status"] == "stopped" and (tmp_path / "clf" / "resume").is_dir()
    assert listing(tmp_path) == ["clf", "tmp"] and listing(tmp_path / "tmp") == []
    resumed = console("finetune", "classify", "--resume", "clf", "--device", "cpu", "-q", cwd=tmp_path,
                      env={"TMPDIR": str(tmp_path / "tmp")})
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "clf" / "report.json").read_text())["status"] == "finished"
    assert not (tmp_path / "clf" / "resume").exists() and listing(tmp_path / "tmp") == []


def test_pretrain_leaves_nothing_in_tmpdir(tmp_path):
    (tmp_path / "tmp").mkdir()
    result = console("pretrain", GENOME, "-o", tmp_path / "run", "--d-model", "16", "--n-layer", "1", "--seq-len", "64",
                     "--steps", "1", "--batch-size", "2", "-q", "--device", "cpu", env={"TMPDIR": str(tmp_path / "tmp")})
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path / "tmp") == []
