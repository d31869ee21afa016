"""`caduceus pretrain`: masking statistics, window sampler, training on a real genome, checkpoints,
bit-identical resume, torchrun DDP on CPU, --max-time, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import load_model
from caduceus_cli.model.tokenizer import A, MASK, N, T
from caduceus_cli.pipelines import pretrain as pt

from .conftest import REPO, need_data

TINY = dict(variant="ph", d_model=16, n_layer=1, seq_len=128, batch_size=4, lr=1e-2, warmup=2,
            valid_windows=8, valid_contigs=["chrXVI"])


def write_fasta(path: Path, records: dict[str, str], gz: bool = False) -> Path:
    text = "".join(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n"
                   for name, seq in records.items())
    if gz:
        with gzip.open(path, "wt") as f:  # plain gzip, not bgzip
            f.write(text)
    else:
        path.write_text(text)
    return path


def random_dna(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("caduceus: error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- masking and sampling -----------------------------------------------------------------------
def test_masking_statistics_match_15_percent_and_80_10_10():
    rng = np.random.default_rng(1)
    ids = rng.integers(A, T + 1, size=(2000, 1000), dtype=np.uint8)
    ids[:, :50] = N  # N positions must never be targets nor be changed
    inputs, labels = pt.mask_tokens(ids, np.random.default_rng(2))
    chosen = labels != pt.IGNORE_INDEX
    bases = ids != N
    assert not chosen[~bases].any() and (inputs[~bases] == N).all()
    assert abs(chosen[bases].mean() - 0.15) < 0.002
    assert (labels[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()
    n = chosen.sum()
    masked = (inputs == MASK) & chosen
    changed = chosen & (inputs != MASK) & (inputs != ids)
    same = chosen & (inputs == ids)
    assert abs(masked.sum() / n - 0.80) < 0.004
    # 10% get a uniformly random base, a quarter of which is the original base.
    assert abs(changed.sum() / n - 0.075) < 0.003
    assert abs(same.sum() / n - 0.125) < 0.003
    replaced = inputs[changed]
    assert set(np.unique(replaced)) == {A, A + 1, A + 2, T}
    assert not (inputs == MASK)[~chosen].any()


def test_sampler_skips_n_rich_windows_and_weights_regions_by_length():
    contigs = {"short": np.full(1000, A, np.uint8), "long": np.full(3000, T, np.uint8),
               "gappy": np.concatenate([np.full(500, N, np.uint8), np.full(500, 8, np.uint8)])}
    genome = pt.GenomeSet.from_arrays(contigs)
    sampler = pt.WindowSampler(genome, np.array([[0, 1000], [1000, 4000]]), 100)
    w = sampler.sample(np.random.default_rng(0), 20000)
    assert w.shape == (20000, 100) and w.dtype == np.uint8
    assert (w == A).all(1).sum() + (w == T).all(1).sum() == 20000  # no window crosses a contig end
    assert abs((w[:, 0] == A).mean() - 901 / (901 + 2901)) < 0.01
    gappy = pt.WindowSampler(genome, np.array([[4000, 5000]]), 100).sample(np.random.default_rng(0), 2000)
    n_frac = (gappy == N).mean(1)
    assert n_frac.max() <= 0.10 and (n_frac > 0).any()  # up to 10 N of 100 allowed, more redrawn
    all_n = pt.GenomeSet.from_arrays({"n": np.full(1000, N, np.uint8)})
    with pytest.raises(CaduceusError, match="all N"):
        pt.WindowSampler(all_n, np.array([[0, 1000]]), 100).sample(np.random.default_rng(0), 4)


def test_batches_depend_only_on_seed_rank_and_step_and_ph_augments(tmp_path):
    genome = pt.GenomeSet.from_arrays({"c": np.random.default_rng(0).integers(A, T + 1, 50_000, dtype=np.uint8)})
    sampler = pt.WindowSampler(genome, np.array([[0, 50_000]]), 64)
    a = pt.make_batch(sampler, 3, 0, 5, 8)
    b = pt.make_batch(sampler, 3, 0, 5, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other_rank = pt.make_batch(sampler, 3, 1, 5, 8)
    other_step = pt.make_batch(sampler, 3, 0, 6, 8)
    assert not np.array_equal(a[1], other_rank[1]) and not np.array_equal(a[1], other_step[1])
    rng = np.random.default_rng(0)
    ids = sampler.sample(rng, 4000)
    rc = pt.reverse_complement_rows(ids, np.random.default_rng(1), 0.5)
    flipped = (rc != ids).any(1)
    assert 0.45 < flipped.mean() < 0.55
    row = int(np.argmax(flipped))
    assert np.array_equal(rc[row], (A + T) - ids[row, ::-1])  # A<->T, C<->G on the official ids


def test_fetch_path_equals_in_memory_and_plain_gzip_and_lowercase(tmp_path):
    seq = random_dna(5000, 0)
    seq = seq[:1000].lower() + seq[1000:]
    path = write_fasta(tmp_path / "g.fa.gz", {"c1": seq, "c2": random_dna(3000, 1)}, gz=True)
    memory = pt.GenomeSet([str(path)])
    files = pt.GenomeSet([str(path)], max_in_memory_bases=0)
    assert files.tokens is None and memory.tokens is not None
    regions = np.array([[0, 5000], [5000, 8000]])
    a = pt.WindowSampler(memory, regions, 200).sample(np.random.default_rng(4), 64)
    b = pt.WindowSampler(files, regions, 200).sample(np.random.default_rng(4), 64)
    assert np.array_equal(a, b)
    assert set(np.unique(memory.tokens[:1000])) <= {A, A + 1, A + 2, T}  # lowercase kept as bases
    memory.close(), files.close()


def test_split_bed_and_valid_contigs(tmp_path):
    path = write_fasta(tmp_path / "g.fa", {"chr1": random_dna(4000, 0), "chr2": random_dna(2000, 1)})
    genome = pt.GenomeSet([str(path)])
    bed = tmp_path / "split.bed"
    bed.write_text("chrom\tstart\tend\tsplit\nchr1\t0\t3000\ttrain\nchr1\t3000\t4000\tvalid\nchr2\t0\t2000\ttest\n")
    train, valid, _ = pt.split_regions(genome, 500, intervals=str(bed))
    assert train.tolist() == [[0, 3000]] and valid.tolist() == [[3000, 4000]]
    train, valid, _ = pt.split_regions(genome, 500, valid_contigs=["2"])  # chr2 spelled 2
    assert train.tolist() == [[0, 4000]] and valid.tolist() == [[4000, 6000]]
    bed.write_text("chr1\t0\t3000\ttraining\n")
    with pytest.raises(CaduceusError, match=r"line 1: split 'training'"):
        pt.split_regions(genome, 500, intervals=str(bed))
    bed.write_text("chr1\t0\t3000\ttrain\nchrX\t0\t10\tvalid\n")
    with pytest.raises(CaduceusError, match=r"line 2: contig 'chrX'"):
        pt.split_regions(genome, 500, intervals=str(bed))
    genome.close()


def test_weight_decay_groups_and_schedule():
    model = pt.new_model("ps", 16, 2, 128, 0)
    decay, no_decay = pt.parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert any(n.endswith("A_log") for n in no_decay_names) and any(n.endswith(".D") for n in no_decay_names)
    assert any("norm" in n for n in no_decay_names) and any("embedding" in n for n in no_decay_names)
    assert all(not n.endswith(("A_log", ".D", "bias")) and "norm" not in n for n in decay_names)
    assert any(n.endswith("in_proj.weight") for n in decay_names)
    lrs = [pt.lr_at(s, 1.0, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01


def test_parse_duration():
    assert pt.parse_duration("7m") == 420 and pt.parse_duration("1h30m") == 5400 and pt.parse_duration("90") == 90
    with pytest.raises(CaduceusError, match="--max-time"):
        pt.parse_duration("soon")


# -- training on a real genome ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    """A tiny PS model, 24 steps on sacCer3 with chrXVI held out (shared by several tests)."""
    genome = need_data("genomes", "sacCer3.fa.gz")
    run = tmp_path_factory.mktemp("pretrain") / "run"
    summary = pt.pretrain([str(genome)], str(run), variant="ps", d_model=32, n_layer=2, seq_len=256, batch_size=4,
                          steps=24, lr=1e-2, warmup=3, log_every=4, valid_every=8, checkpoint_every=8,
                          valid_windows=16, valid_contigs=["chrXVI"], device="cpu", command="test")
    return run, summary


@pytest.mark.slow
def test_loss_decreases_on_sacCer3_and_metrics_are_logged(sac_run):
    run, summary = sac_run
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 12, 16, 20, 24]
    for r in lines:
        assert {"step", "train_loss", "valid_loss", "valid_masked_accuracy", "lr", "tokens_per_s"} <= set(r)
    # Random init predicts 16 tokens (ln 16 = 2.77); a few dozen steps learn at least the base composition.
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] - 0.5
    assert lines[-1]["train_loss"] < 1.45
    valid = [r for r in lines if r["valid_loss"] is not None]
    assert [r["step"] for r in valid] == [8, 16, 24]
    assert valid[-1]["valid_loss"] <= valid[0]["valid_loss"] + 0.02
    assert summary["steps"] == 24 and summary["tokens"] == 24 * 4 * 256
    # sacCer3 is AT-rich: the unigram baseline is A or T, ~0.3 of the targets.
    assert summary["unigram_baseline_base"] in "AT" and 0.25 < summary["unigram_baseline_accuracy"] < 0.4
    assert 0 <= summary["valid_masked_accuracy"] <= 1
    assert json.loads((run / "summary.json").read_text())["steps"] == 24


def test_checkpoints_load_with_load_model_and_final_is_bundle_ready(sac_run):
    run, _ = sac_run
    assert (run / "latest").read_text().strip() == "checkpoint-24"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-24"]  # keep 2
    model = load_model(run / "checkpoint-24")
    final = load_model(run / "final")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), final.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert final.config.rcps and final.config.d_model == 32 and final.config.extra["max_seq_len"] == 256
    training = final.config.extra["training"]
    assert training["steps"] == 24 and training["genomes"] == ["sacCer3.fa.gz"] and "valid_loss" in training
    assert sorted(p.name for p in (run / "final").iterdir()) == ["config.json", "model.safetensors"]
    state = torch.load(run / "checkpoint-24" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 24 and state["optimizer"]["state"]
    assert not list(run.glob(".*tmp"))  # no temporary leftovers


def test_resume_refuses_a_different_configuration(sac_run, run_cli):
    run, _ = sac_run
    code, _, err = run_cli("pretrain", "--resume", str(run), "--d-model", "64")
    assert_one_line_error(code, err, "--d-model 32, not 64", "new run folder")
    code, _, err = run_cli("pretrain", "--resume", str(run), "--valid-contigs", "chrI")
    assert_one_line_error(code, err, "another train/validation split")
    code, _, err = run_cli("pretrain", "--resume", str(run))
    assert_one_line_error(code, err, "already finished its 24 steps")
    code, _, err = run_cli("pretrain", str(need_data("genomes", "sacCer3.fa.gz")), "-o", str(run))
    assert_one_line_error(code, err, "already holds a pretraining run", "--resume")


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    genome = str(need_data("genomes", "sacCer3.fa.gz"))
    # Checkpoint-3 falls between metric lines (2, 4, 5, 6): the loss accumulator must be restored too.
    opts = dict(TINY, steps=6, log_every=2, valid_every=5, checkpoint_every=3, keep_checkpoints=3, device="cpu")
    whole = pt.pretrain([genome], str(tmp_path / "whole"), **opts)

    def interrupt(n=1, **fields):
        interrupt.calls += n
        if interrupt.calls == 4:  # after step 4: checkpoint-3 is the latest, metric line 4 must be dropped
            raise KeyboardInterrupt
    interrupt.calls = 0
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain([genome], str(tmp_path / "split"), progress=interrupt, **opts)
    assert (tmp_path / "split" / "latest").read_text().strip() == "checkpoint-3"
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = pt.pretrain([], None, resume=str(tmp_path / "split"), device="cpu")
    assert resumed["resumed_from"] == "checkpoint-3" and resumed["steps"] == 6

    a, b = _weights(tmp_path / "whole" / "final"), _weights(tmp_path / "split" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "whole" / "checkpoint-6" / "trainer_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "split" / "checkpoint-6" / "trainer_state.pt", weights_only=True)
    for key, st in sa["optimizer"]["state"].items():
        assert all(torch.equal(st[k], sb["optimizer"]["state"][key][k]) for k in st)

    def metrics(run):
        keep = ("step", "train_loss", "valid_loss", "valid_masked_accuracy", "lr", "tokens")
        return [{k: r[k] for k in keep} for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert metrics(tmp_path / "whole") == metrics(tmp_path / "split")
    assert [r["step"] for r in metrics(tmp_path / "whole")] == [2, 4, 5, 6]
    for key in ("train_loss", "valid_loss", "valid_masked_accuracy"):
        assert whole[key] == resumed[key]


def test_max_time_stops_cleanly_with_a_checkpoint_and_final_model(tmp_path):
    genome = str(need_data("genomes", "sacCer3.fa.gz"))
    summary = pt.pretrain([genome], str(tmp_path / "run"), **dict(TINY, steps=50, max_time=1e-3, device="cpu"))
    assert summary["stopped_early"] and summary["steps"] == 1
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-1"
    assert load_model(tmp_path / "run" / "final").config.extra["training"]["steps"] == 1


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    genome = str(need_data("genomes", "sacCer3.fa.gz"))
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "caduceus_cli", "pretrain", genome, "-o", str(run), "--variant", "ph", "--d-model", "16",
           "--n-layer", "1", "--seq-len", "128", "--batch-size", "4", "--steps", "3", "--log-every", "1",
           "--valid-windows", "4", "--valid-contigs", "chrXVI", "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 alone reports, on stderr
    summary = summaries[0]
    assert summary["world_size"] == 2 and summary["steps"] == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]  # written once, by rank 0
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    load_model(run / "final")


# -- bad input: one line, non-zero exit ---------------------------------------------------------
def test_bad_inputs_are_one_line_errors(tmp_path, run_cli):
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    no_bases = write_fasta(tmp_path / "nobases.fa", {"c": ""})
    all_n = write_fasta(tmp_path / "alln.fa", {"c1": "N" * 5000, "c2": "n" * 3000})
    small = write_fasta(tmp_path / "small.fa", {"c1": random_dna(3000, 0), "c2": random_dna(2000, 1)})
    for fasta, fragment in ((empty, "empty.fa"), (no_bases, "nobases.fa"), (all_n, "every base is N")):
        code, _, err = run_cli("pretrain", str(fasta), "-o", str(tmp_path / "o"), "--device", "cpu")
        assert_one_line_error(code, err, fragment)
    code, _, err = run_cli("pretrain", str(small), "-o", str(tmp_path / "o"), "--seq-len", "4096")
    assert_one_line_error(code, err, "--seq-len 4096 is longer than every training region", "3,000 bp")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli("pretrain", str(small), "-o", str(blocker / "run"))
    assert_one_line_error(code, err, "cannot be written")
    code, _, err = run_cli("pretrain", "--resume", str(tmp_path / "nothing-here"))
    assert_one_line_error(code, err, "not a pretraining run folder")


def test_unwritable_output_folder_exits_non_zero_from_the_shell(tmp_path):
    """The real process: one line on stderr and exit status 1 (not a traceback)."""
    small = write_fasta(tmp_path / "small.fa", {"c1": random_dna(3000, 0)})
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, "-m", "caduceus_cli", "pretrain", str(small), "-o",
                             str(blocker / "run")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot be written" in result.stderr


@pytest.mark.slow
def test_benchmark_runs_the_engine_step_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "pretrain_speed.py"), "--variant", "ph",
                    "--d-model", "16", "--n-layer", "1", "--seq-len", "64", "--batch-size", "4", "--steps", "2",
                    "--warmup-steps", "1", "--genome", "--json", str(out), "--device", "cpu"],
                   check=True, capture_output=True, text=True, cwd=tmp_path,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert r["variant"] == "Caduceus-Ph" and r["tokens_per_s"] > 0 and doc["data"] == "random bases"


def test_default_micro_batch_holds_at_most_128k_tokens_per_pass_and_divides_the_batch():
    from caduceus_cli.pipelines.pretrain import default_micro_batch

    assert default_micro_batch(256, 1024, "ps") == 64  # both strands: 64 x 1,024 x 2 = 131,072
    assert default_micro_batch(256, 1024, "ph") == 128
    assert default_micro_batch(100, 1024, "ps") == 50  # the largest divisor of 100 not above 64
    assert default_micro_batch(3, 200_000, "ph") == 1  # a window longer than the budget runs alone
    assert default_micro_batch(8, 128, "ph") == 8  # small batches are not split
