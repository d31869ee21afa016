"""Stopping and continuing, through the real console script on real data (caduceus_cli/stopping.py,
caduceus_cli/resume.py).

SIGTERM (what cluster schedulers send) and SIGINT stop a run at a batch boundary with exit 143 or
130, leaving no temporary file and nothing under the output's name; with --resume the finished
chunks stay in `.OUTPUT.resume/` and the same command continues from them, writing the output an
uninterrupted run writes (only the `command` provenance line differs: it holds --resume). A reader
of stdout that goes away (`| head -1`) ends the run at once with exit 141. pretrain saves a
checkpoint of the steps done when a signal stops it, and --resume continues from there.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DATA, console, console_command, console_env, need_data

VCF = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"
YEAST = DATA / "genomes" / "sacCer3.fa.gz"
SEGMENTS = DATA / "annotation" / "sacCer3.segments.bed"
FIRST_CHUNK = "chunk-00000000.arrow"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """120 real records (six chunks of 20) and 320 real yeast segments (five chunks of 64 at
    --batch-size 8), in a folder of their own."""
    for path in (VCF, FA, YEAST, SEGMENTS):
        need_data(path.parent.name, path.name)
    folder = tmp_path_factory.mktemp("inputs")
    lines = gzip.open(VCF, "rt").read().splitlines()
    header, body = [ln for ln in lines if ln.startswith("#")], [ln for ln in lines if not ln.startswith("#")]
    (folder / "in.vcf").write_text("\n".join(header + body[:120]) + "\n")
    segments = [ln for ln in SEGMENTS.read_text().splitlines() if ln.startswith("chrII\t")][:320]
    (folder / "in.bed").write_text("\n".join(segments) + "\n")
    return folder


def score_args(model, inputs, output="out.vcf.gz"):
    index = ["--write-index"] if output.endswith(".gz") else []
    return ["score-variants", inputs / "in.vcf", "-f", FA, "-m", model, "--window", "32", "--scores",
            "llr,embed_cos", "--chunk-size", "20", *index, "-q", "-o", output]


def embed_args(model, inputs, output="out.parquet"):
    return ["embed", YEAST, inputs / "in.bed", "-m", model, "--window", "64", "--batch-size", "8", "-q", "-o", output]


def args_of(command, model, inputs, output):
    return (score_args if command == "score-variants" else embed_args)(model, inputs, output)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def interrupt_after_first_chunk(args, folder: Path, output: str, signum: int) -> subprocess.CompletedProcess:
    """Run ``caduceus ARGS --resume`` in ``folder``; once its first chunk is stored, send ``signum``."""
    folder.mkdir()
    stored = folder / f".{output}.resume" / FIRST_CHUNK
    proc = subprocess.Popen(console_command(*args, "--resume"), cwd=folder, env=console_env(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not stored.exists() and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def check_stopped(result, folder: Path, output: str, signum: int, chunks: int) -> None:
    """Exit 128 + signum, the progress kept (some chunks, not all), nothing else left in ``folder``."""
    assert result.returncode == 128 + signum, result.stderr
    assert f"caduceus: {'terminated' if signum == signal.SIGTERM else 'interrupted'}" in result.stderr
    assert "run the same command with --resume to continue" in result.stderr
    assert listing(folder) == [f".{output}.resume"]  # no temporary, nothing under the output's name
    state = json.loads((folder / f".{output}.resume" / "state.json").read_text())
    assert 1 <= state["chunks"] < chunks, state  # stopped after the first chunk, before the last


def without_command(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not ln.startswith(("##caduceus_command=", "command\t"))]


@pytest.mark.slow
def test_score_variants_stopped_by_sigterm_resumes_to_the_uninterrupted_output(small_ps_dir, inputs, tmp_path):
    args = score_args(small_ps_dir, inputs)
    stopped = interrupt_after_first_chunk(args, tmp_path / "resumed", "out.vcf.gz", signal.SIGTERM)
    check_stopped(stopped, tmp_path / "resumed", "out.vcf.gz", signal.SIGTERM, chunks=6)

    changed = console(*args, "--resume", "--window", "64", cwd=tmp_path / "resumed")
    assert changed.returncode == 1 and "had context=32, this one has 64" in changed.stderr
    forgotten = console(*args, cwd=tmp_path / "resumed")  # without --resume: progress is not thrown away
    assert forgotten.returncode == 1 and "continue it with --resume" in forgotten.stderr

    resumed = console(*args, "--resume", "--json", cwd=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stderr.splitlines()[-1])["records"] == 120
    (tmp_path / "whole").mkdir()
    assert console(*args, cwd=tmp_path / "whole").returncode == 0
    for folder in ("resumed", "whole"):
        assert listing(tmp_path / folder) == ["out.vcf.gz", "out.vcf.gz.tbi"]
    texts = [gzip.open(tmp_path / folder / "out.vcf.gz", "rt").read().splitlines() for folder in ("resumed", "whole")]
    assert without_command(texts[0]) == without_command(texts[1])
    assert sum(not ln.startswith("#") for ln in texts[0]) == 120


@pytest.mark.slow
def test_embed_stopped_by_sigint_resumes_to_the_uninterrupted_output(small_ps_dir, inputs, tmp_path):
    import pyarrow.parquet as pq

    args = embed_args(small_ps_dir, inputs)
    stopped = interrupt_after_first_chunk(args, tmp_path / "resumed", "out.parquet", signal.SIGINT)
    check_stopped(stopped, tmp_path / "resumed", "out.parquet", signal.SIGINT, chunks=5)

    resumed = console(*args, "--resume", cwd=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr
    (tmp_path / "whole").mkdir()
    assert console(*args, cwd=tmp_path / "whole").returncode == 0
    tables = [pq.read_table(tmp_path / folder / "out.parquet") for folder in ("resumed", "whole")]
    assert tables[0].num_rows == 320 and tables[0].equals(tables[1])
    metadata = [{k: v for k, v in t.schema.metadata.items() if k != b"command"} for t in tables]
    assert metadata[0] == metadata[1]
    for folder in ("resumed", "whole"):
        assert listing(tmp_path / folder) == ["out.parquet"]


@pytest.mark.parametrize("command, output", [("score-variants", "out.vcf.gz"), ("embed", "out.npz")])
def test_sigterm_without_resume_leaves_nothing(small_ps_dir, inputs, tmp_path, command, output):
    """Defect: SIGTERM killed the run and left `.out.vcf.gz.*.tmp` or `.out.npz.*.tmp.npy.tmp`."""
    proc = subprocess.Popen(console_command(*args_of(command, small_ps_dir, inputs, output), "--json"), cwd=tmp_path, env=console_env(),
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not [p for p in tmp_path.iterdir() if p.name.startswith(f".{output}")] and proc.poll() is None:
            time.sleep(0.005)  # writing has started
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "caduceus: terminated"
    assert listing(tmp_path) == []


@pytest.mark.parametrize("command", ["score-variants", "embed"])
def test_a_reader_that_goes_away_ends_the_run_with_141(small_ps_dir, inputs, tmp_path, command):
    """Defect: `... | head -1` exited 1 silently, and score-variants went on computing for minutes."""
    proc = subprocess.Popen(console_command(*args_of(command, small_ps_dir, inputs, "-"), "--json"), cwd=tmp_path, env=console_env(),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert first.startswith(("##fileformat=VCF", "##"))
    assert proc.returncode == 141, err
    assert err == ""  # no summary (the run did not finish), no traceback, no message
    assert listing(tmp_path) == []


@pytest.mark.slow
def test_pretrain_stopped_by_sigterm_checkpoints_the_steps_done_and_resumes(tmp_path):
    from .conftest import REPO

    genome = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_genome.fa"
    args = ["pretrain", genome, "-o", "run", "--d-model", "16", "--n-layer", "1", "--seq-len", "64", "--batch-size",
            "2", "--steps", "100000", "--checkpoint-every", "50000", "--device", "cpu"]
    proc = subprocess.Popen(console_command(*args), cwd=tmp_path, env=console_env({"CADUCEUS_PROGRESS_SECONDS": "0"}),
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for line in proc.stderr:
            if " of 100,000 steps" in line:  # a step is done
                proc.send_signal(signal.SIGTERM)
                break
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    checkpoints = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))]
    assert len(checkpoints) == 1 and checkpoints[0].startswith("checkpoint-"), checkpoints  # no temporary left
    step = int(checkpoints[0].split("-")[1])
    assert f"stopped after step {step} of 100000: checkpoint saved; continue with --resume run" in err
    assert err.splitlines()[-1] == "caduceus: terminated"
    resumed = console("pretrain", "--resume", "run", "--max-time", "1", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stderr.splitlines()[-1])["steps"] > step
