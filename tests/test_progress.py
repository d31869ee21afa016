"""Progress a person can trust: one implementation (caduceus_cli/progress.py) for every command, lines
throttled by time (driven here by a fake clock, never by sleeping), records counted as they finish,
an ETA over what will run only, one line before long CPU work, and the messages around it."""

from __future__ import annotations

import io
import subprocess

import pytest

from caduceus_cli.progress import SLOW_SECONDS, Progress, advise_on_cpu, duration

from .conftest import DATA, REPO, console_command, console_env, need_data

GENOME = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_genome.fa"
REGIONS = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_regions.bed"
VCF_FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def progress(unit="records", *, interval=60.0, terminal=False, **kw):
    clock, out = Clock(), io.StringIO()
    return Progress("scoring", unit, stream=out, clock=clock, interval=interval, terminal=terminal, **kw), clock, out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


# -- the implementation, on a fake clock --------------------------------------------------------
def test_first_line_at_the_first_batch_then_one_per_interval():
    p, clock, out = progress(interval=60)
    p.set_total(100)
    assert lines(out) == []  # nothing before any work finished
    clock.t += 90  # a slow first batch (model warm-up, compilation)
    p(8)
    assert lines(out) == ["caduceus: scoring: 8 of 100 records (8.0%)"]  # at once, without a rate yet
    for _ in range(5):
        clock.t += 10
        p(8)
    assert len(lines(out)) == 1  # 50 s since the first line: throttled
    clock.t += 10
    p(8)
    assert lines(out)[-1] == "caduceus: scoring: 56 of 100 records (56.0%), 1.2 s/record, ETA 55s"


def test_the_rate_leaves_out_the_first_batch_and_resumed_work():
    p, clock, out = progress(interval=0)
    p.set_total(1000)
    p(500, resumed=True)  # done by an interrupted run
    clock.t += 30
    p(10)  # the first batch of this run: warm-up
    clock.t += 10
    p(100)
    assert p.rate() == pytest.approx(10.0)
    assert lines(out)[-1].endswith("610 of 1,000 records (61.0%), 10.0 records/s, ETA 39s")


def test_without_a_total_the_eta_says_it_does_not_know():
    p, clock, out = progress(interval=0)
    p(4)
    clock.t += 2
    p(4)
    assert lines(out) == ["caduceus: scoring: 4 records", "caduceus: scoring: 8 records, 2.0 records/s, ETA unknown"]


def test_a_slow_rate_reads_seconds_per_step_never_zero_per_second():
    p, clock, out = progress("steps", interval=0)
    p.set_total(10)
    p(1)
    clock.t += 25
    p(1)
    assert lines(out)[-1] == "caduceus: scoring: 2 of 10 steps (20.0%), 25.0 s/step, ETA 3m20s"
    assert "0.0 steps/s" not in out.getvalue()


def test_long_cpu_work_gets_one_line_with_the_estimate_and_the_faster_way():
    p, clock, out = progress(interval=3600)
    advise_on_cpu(p, "cpu", "a CUDA GPU runs it much faster, or --scores llr")
    p.set_total(100_000)
    p(8)
    clock.t += 1
    p(8)  # one measured batch is not an estimate yet
    assert len(lines(out)) == 1
    clock.t += 5
    p(8)
    advice = [ln for ln in lines(out) if "to go on the CPU" in ln]
    assert advice == [f"caduceus: scoring: about {duration((100_000 - 24) / (16 / 6))} to go on the CPU at this "
                      "rate; a CUDA GPU runs it much faster, or --scores llr"]
    for _ in range(10):
        clock.t += 5
        p(8)
    assert len([ln for ln in lines(out) if "to go on the CPU" in ln]) == 1  # said once


def test_short_cpu_work_and_gpu_work_get_no_such_line():
    short, clock, out = progress(interval=0)
    advise_on_cpu(short, "cpu", "a GPU")
    short.set_total(200)
    for _ in range(5):
        short(8)
        clock.t += 2
    assert (200 - 40) / (32 / 8) < SLOW_SECONDS and "to go on the CPU" not in out.getvalue()
    gpu, clock, out = progress(interval=0)
    advise_on_cpu(gpu, "cuda:0", "a GPU")
    gpu.set_total(10_000_000)
    for _ in range(5):
        gpu(1)
        clock.t += 10
    assert "to go on the CPU" not in out.getvalue()


def test_a_terminal_line_is_rewritten_in_place_and_ended_at_close():
    p, clock, out = progress(interval=1, terminal=True)
    with p:
        p(3)
        clock.t += 2
        p(3)
    assert out.getvalue() == ("\rcaduceus: scoring: 3 records\x1b[K"
                              "\rcaduceus: scoring: 6 records, 1.5 records/s, ETA unknown\x1b[K\n")


def test_quiet_prints_nothing_and_restart_counts_afresh():
    p, clock, out = progress(quiet=True, interval=0)
    p(5)
    p.note("hello")
    assert out.getvalue() == ""
    q, clock, out = progress(interval=0)
    q(5)
    q.restart(10)
    clock.t += 1
    q(2)
    assert lines(out)[-1] == "caduceus: scoring: 2 of 10 records (20.0%)"


def test_downloads_use_the_same_progress_in_megabytes():
    p, clock, out = progress("MB", divisor=1e6, interval=0)
    p.set_total(50_000_000)
    p(10_000_000, resumed=True)  # the .part file of an interrupted download
    clock.t += 1
    p(5_000_000)
    clock.t += 2
    p(5_000_000)
    assert lines(out) == ["caduceus: scoring: 10.0 of 50.0 MB (20.0%)", "caduceus: scoring: 15.0 of 50.0 MB (30.0%)",
                          "caduceus: scoring: 20.0 of 50.0 MB (40.0%), 2.5 MB/s, ETA 12s"]


def test_one_progress_implementation():
    """Every command and the downloader use caduceus_cli.progress: no other progress class."""
    import re

    found = [str(p.relative_to(REPO)) for p in (REPO / "caduceus_cli").rglob("*.py")
             if re.search(r"^class \w*Progress\b", p.read_text(), re.M) and p.name != "progress.py"]
    assert found == ["caduceus_cli/commands/benchmark.py"]  # TaskProgress: a subclass that restarts per task
    assert "rich.progress" not in "".join(p.read_text() for p in (REPO / "caduceus_cli").rglob("*.py"))


# -- through the console script ---------------------------------------------------------------
def caduceus(*args, env=None, cwd=None):
    return subprocess.run(console_command(*args), capture_output=True, text=True, cwd=cwd,
                          env=console_env({"CADUCEUS_PROGRESS_SECONDS": "0", "NUMBA_NUM_THREADS": "1", **(env or {})}))


def counts(stderr: str, prefix: str) -> list[int]:
    return [int(ln[len(prefix):].split()[0].replace(",", "")) for ln in stderr.splitlines()
            if ln.startswith(prefix) and ln[len(prefix):][:1].isdigit()]


@pytest.fixture
def twenty_vcf(tmp_path):
    import gzip

    with gzip.open(need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz"), "rt") as f:
        text = f.read(4_000_000).splitlines()
    header = [ln for ln in text if ln.startswith("#")]
    path = tmp_path / "in.vcf"
    path.write_text("\n".join(header + [ln for ln in text if not ln.startswith("#")][:20]) + "\n")
    return path


def test_score_variants_counts_records_as_they_finish_not_per_chunk(small_ps_dir, twenty_vcf, tmp_path):
    result = caduceus("score-variants", twenty_vcf, "-f", VCF_FA, "-m", small_ps_dir, "--window", "32",
                      "--batch-size", "4", "--device", "cpu", "-o", tmp_path / "out.vcf")
    assert result.returncode == 0, result.stderr
    assert counts(result.stderr, "caduceus: scoring: ") == [4, 8, 12, 16, 20]  # one chunk of 1,024 records


def test_score_variants_on_a_slow_cpu_says_so_once_with_the_faster_ways(small_ps_dir, twenty_vcf, tmp_path):
    from caduceus_cli.pipelines.variants import score_variants

    clock, out = Clock(), io.StringIO()

    def slow_clock():  # every look at the clock finds another 100 s gone: a very slow CPU
        clock.t += 100
        return clock.t

    p = Progress("scoring", "records", stream=out, clock=slow_clock, interval=0)
    p.set_total(20)
    score_variants(str(twenty_vcf), str(VCF_FA), str(tmp_path / "out.vcf"), model=str(small_ps_dir), window=32,
                   batch_size=2, device="cpu", progress=p)
    advice = [ln for ln in lines(out) if "to go on the CPU" in ln]
    assert len(advice) == 1 and "a CUDA GPU" in advice[0] and "--scores llr alone" in advice[0]


def test_embed_skip_invalid_counts_only_what_will_run_and_warns_plainly(small_ps_dir, tmp_path):
    bed = tmp_path / "mixed.bed"
    valid = [ln for ln in REGIONS.read_text().splitlines() if ln and not ln.startswith("#")][:4]
    bed.write_text("\n".join(valid + [f"chrZ\t{i}\t{i + 50}" for i in range(200)]) + "\n")
    result = caduceus("embed", GENOME, bed, "-m", small_ps_dir, "--window", "64", "--skip-invalid",
                      "-o", tmp_path / "e.parquet")
    assert result.returncode == 0, result.stderr
    shown = [ln for ln in result.stderr.splitlines() if ln.startswith("caduceus: embed: ") and " of " in ln]
    assert shown and all(" of 4 regions" in ln for ln in shown), result.stderr
    warning = result.stderr[result.stderr.index("caduceus: warning: skipped"):].splitlines()
    assert warning[0] == "caduceus: warning: skipped 200 invalid region(s); the first 3:"
    assert all(ln.startswith(f"  {bed}: line ") and "chrZ" in ln for ln in warning[1:4])
    assert "--skip-invalid" not in result.stderr  # it is on: no advice to turn it on


def test_benchmark_progress_names_the_command_and_what_it_counts(small_ps_dir, tmp_path):
    data = need_data("tasks", "nt_yeast_histone")
    result = caduceus("benchmark", "nt-suite", "--data", data, "--tasks", "H3K36me3", "--max-sequences", "20",
                      "--folds", "2", "--model", small_ps_dir, "--device", "cpu", "-o", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    shown = [ln for ln in result.stderr.splitlines() if " of " in ln and "%" in ln]
    assert shown and all(ln.startswith("caduceus: benchmark: ") and " sequences (" in ln for ln in shown), \
        result.stderr
    assert "items" not in result.stderr and "caduceus: sequences:" not in result.stderr


def test_predict_counts_sequences_batch_by_batch(small_ps_dir, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("sequence,label\n" + "".join(f"{'ACGT' * (3 + i % 5)},{i % 2}\n" for i in range(24)))
    fitted = caduceus("finetune", "probe", train, "-m", small_ps_dir, "--folds", "2", "--no-cache", "--device",
                      "cpu", "-q", "-o", tmp_path / "probe")
    assert fitted.returncode == 0, fitted.stderr
    result = caduceus("predict", tmp_path / "probe", train, "-b", "4", "--device", "cpu", "-o", tmp_path / "p.tsv")
    assert result.returncode == 0, result.stderr
    done = counts(result.stderr, "caduceus: predict: ")
    assert len(done) > 1 and done[-1] == 24 and done == sorted(done), result.stderr  # per batch, not per chunk
