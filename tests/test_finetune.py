"""`caduceus finetune classify / probe` and `caduceus predict` on real tasks (GUE CSV, NT yeast FASTA,
BED + sacCer3), with tiny models: strand invariance, whole-split metrics equal to scikit-learn's,
deterministic seeds/folds, resume == uninterrupted, reload == in-training evaluation, input order,
multi-class string labels, regression, torchrun on CPU, and one-line errors for bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.labeled import LabeledSequences, read_labeled_sequences
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model, reverse_complement, save_model
from caduceus_cli.model.checkpoint import load_classifier
from caduceus_cli.pipelines.finetune import classify as classify_module
from caduceus_cli.pipelines.finetune import finetune_classifier, fit_probe, predict
from caduceus_cli.pipelines.finetune.data import stratified_split, train_batches
from caduceus_cli.pipelines.inference import equal_length_batches
from caduceus_cli.pipelines.finetune.metrics import classification_metrics
from caduceus_cli.pipelines.optim import lr_at

from .conftest import REPO, need_data

FAST = dict(epochs=1, batch_size=32, device="cpu")
QUICK_PROBE = dict(grid=(0.1, 1.0), cv_folds=3, device="cpu", dtype="fp32")  # a small C grid: a fast CPU suite
# Numbers are compared across runs and batch sizes: fp32 everywhere (--dtype auto is bf16 on CPUs with
# bf16 matrix units, where a sequence's result may move with its batch by bf16 rounding).


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Random tiny Ph (1 layer) and PS (2 layers) models, d_model 16."""
    out = {}
    for variant, layers in (("ph", 1), ("ps", 2)):
        torch.manual_seed(0)
        out[variant] = save_model(CaduceusForMaskedLM(CaduceusConfig.small(variant, 16, layers)),
                                  tmp_path_factory.mktemp(variant) / "model")
    return out


def write_csv(path: Path, data: LabeledSequences) -> Path:
    path.write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in zip(data.sequences, data.labels)))
    return path


def write_fasta(path: Path, names, sequences, labels=None) -> Path:
    tail = [f"|{y}" for y in labels] if labels is not None else [""] * len(names)
    path.write_text("".join(f">{n}{t}\n{s}\n" for n, s, t in zip(names, sequences, tail)))
    return path


@pytest.fixture(scope="module")
def gue(tmp_path_factory):
    """160 training and 60 test records of GUE prom_core_all (70 bp), in GUE's own CSV layout."""
    folder = tmp_path_factory.mktemp("gue")
    dev = read_labeled_sequences(need_data("tasks", "gue", "prom_core_all", "dev.csv.gz"))
    test = read_labeled_sequences(need_data("tasks", "gue", "prom_core_all", "test.csv.gz"))
    return write_csv(folder / "train.csv", dev.subset(range(160))), write_csv(folder / "test.csv", test.subset(range(60)))


@pytest.fixture(scope="module")
def ph_run(gue, models, tmp_path_factory):
    train, test = gue
    out = tmp_path_factory.mktemp("ph_run") / "clf"
    return out, finetune_classifier(str(train), out, model=models["ph"], test=str(test), **FAST)


def gc_fraction(seq: str) -> float:
    return (seq.count("G") + seq.count("C")) / len(seq)


# -- strand invariance, reload, order ---------------------------------------------------------
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_predictions_are_strand_invariant(variant, gue, models, ph_run, tmp_path):
    train, test = gue
    folder = ph_run[0] if variant == "ph" else tmp_path / "clf"
    if variant == "ps":
        finetune_classifier(str(train), folder, model=models["ps"], **FAST)
    data = read_labeled_sequences(test)
    fwd = write_fasta(tmp_path / "fwd.fa", data.names, data.sequences)
    rev = write_fasta(tmp_path / "rev.fa", data.names, [reverse_complement(s) for s in data.sequences])
    a, b = predict(folder, fwd, device="cpu", dtype="fp32"), predict(folder, rev, device="cpu", dtype="fp32")
    pa = np.array([[r["prob_0"], r["prob_1"]] for r in a.rows])
    pb = np.array([[r["prob_0"], r["prob_1"]] for r in b.rows])
    assert np.abs(pa - pb).max() <= 1e-5 and np.ptp(pa[:, 1]) > 1e-4  # invariant, and not constant
    if variant == "ph":  # the forward pass alone is not invariant: the test can fail
        model = load_classifier(folder)
        model.conjoin = False
        ids = torch.tensor([[7 + "ACGT".index(c) for c in data.sequences[0]]])
        rc_ids = torch.tensor([[7 + "ACGT".index(c) for c in reverse_complement(data.sequences[0])]])
        with torch.no_grad():
            assert not torch.allclose(model(ids), model(rc_ids), atol=1e-5)


def test_report_metrics_equal_scikit_learn_over_the_whole_split(ph_run, gue):
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                                 roc_auc_score)

    folder, report = ph_run
    y = np.array(read_labeled_sequences(gue[1]).labels)
    rows = predict(folder, gue[1], device="cpu", dtype="fp32").rows  # the saved model, reloaded, in the
    # report's precision (the report is computed in training's: fp32 on the CPU)
    p1 = np.array([r["prob_1"] for r in rows])
    pred = np.array([r["prediction"] for r in rows])
    expected = {"accuracy": accuracy_score(y, pred), "mcc": matthews_corrcoef(y, pred), "f1": f1_score(y, pred),
                "auroc": roc_auc_score(y, p1), "auprc": average_precision_score(y, p1)}
    got = report["runs"][0]["test"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert report["summary"]["test"]["mcc"]["mean"] == pytest.approx(expected["mcc"], abs=1e-12)


def test_multiclass_metrics_equal_scikit_learn_and_batch_means_would_not():
    from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = classification_metrics(y, probs)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(y, probs.argmax(1)))
    assert got["f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert got["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert got["auprc"] == pytest.approx(average_precision_score(np.eye(3)[y], probs, average="macro"))
    per_batch = np.mean([matthews_corrcoef(y[i:i + 16], probs[i:i + 16].argmax(1)) for i in range(0, 200, 16)])
    assert abs(per_batch - got["mcc"]) > 1e-3  # the official per-batch average is another number
    assert classification_metrics(np.zeros(5, dtype=int), np.full((5, 2), 0.5))["auroc"] is None


def test_predict_keeps_input_order_and_a_sequence_never_depends_on_its_batch(ph_run, gue, tmp_path):
    folder = ph_run[0]
    data = read_labeled_sequences(gue[1]).subset(range(12))
    cut = [s[: 70 - 13 * (i % 4)] for i, s in enumerate(data.sequences)]  # four lengths, interleaved
    names = [f"r{i}" for i in range(12)]
    fasta = write_fasta(tmp_path / "mixed.fa", names, cut)
    result = predict(folder, fasta, device="cpu", dtype="fp32", batch_size=3)
    assert [r["name"] for r in result.rows] == names and result.columns == ["name", "prediction", "prob_0", "prob_1"]
    for i in (0, 5, 11):
        alone = predict(folder, write_fasta(tmp_path / f"one{i}.fa", [names[i]], [cut[i]]), device="cpu", dtype="fp32").rows[0]
        assert alone["prob_1"] == pytest.approx(result.rows[i]["prob_1"], abs=1e-6)
    tsv, parquet = tmp_path / "p.tsv", tmp_path / "p.parquet"
    predict(folder, fasta, tsv, device="cpu", dtype="fp32")
    predict(folder, fasta, parquet, device="cpu", dtype="fp32")
    lines = [line for line in tsv.read_text().splitlines() if not line.startswith("##")]
    assert lines[0] == "name\tprediction\tprob_0\tprob_1" and [x.split("\t")[0] for x in lines[1:]] == names
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.column("name").to_pylist() == names and b"model_sha256" in table.schema.metadata


# -- protocol: seeds, folds, determinism, resume ------------------------------------------------
def _runs(report):
    return [{k: v for k, v in r.items() if k not in ("seconds", "train_bases_per_s")} for r in report["runs"]]


def test_seeds_and_folds_are_deterministic_for_a_seed(models, gue, tmp_path):
    data = read_labeled_sequences(gue[0]).subset(range(64))
    kw = dict(model=models["ph"], folds=2, seeds=2, epochs=1, batch_size=16, device="cpu")
    a = finetune_classifier(data, tmp_path / "a", **kw)
    b = finetune_classifier(data, tmp_path / "b", **kw)
    assert _runs(a) == _runs(b) and [(r["seed"], r["fold"]) for r in a["runs"]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["test_records"] == 32 for r in a["runs"]) and set(a["summary"]) == {"valid", "cv"}
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["data"] == {"train": data.digest(), "valid": None, "test": None}
    c = finetune_classifier(data, tmp_path / "c", **dict(kw, seeds=1, folds=None))
    assert c["runs"][0]["valid_records"] == 6 and c["summary"]["test"] is None  # stratified 10% of 64


def test_resume_continues_to_the_same_result_as_an_uninterrupted_run(models, gue, tmp_path, monkeypatch):
    data = read_labeled_sequences(gue[0]).subset(range(96))
    kw = dict(model=models["ph"], test=read_labeled_sequences(gue[1]), seeds=2, epochs=2, batch_size=32, device="cpu")
    whole = finetune_classifier(data, tmp_path / "whole", **kw)
    calls = {"n": 0}

    def stop_at(step):
        def should_stop(self):
            calls["n"] += 1
            return calls["n"] == step
        return should_stop

    monkeypatch.setattr(classify_module._Job, "should_stop", stop_at(2))  # run 1, epoch 1, step 2
    first = finetune_classifier(data, tmp_path / "run", **kw)
    assert first["status"] == "stopped" and (tmp_path / "run" / "resume").is_dir() and not first["runs"]
    calls["n"] = 0
    monkeypatch.setattr(classify_module._Job, "should_stop", stop_at(6))  # in run 2: run 1 is kept
    second = finetune_classifier(data, resume=tmp_path / "run", test=kw["test"])
    assert second["status"] == "stopped" and len(second["runs"]) == 1
    monkeypatch.undo()
    with pytest.raises(CaduceusError, match="was started with epochs=2, not 3"):
        finetune_classifier(data, resume=tmp_path / "run", epochs=3)
    final = finetune_classifier(data, resume=tmp_path / "run", test=kw["test"])
    assert final["status"] == "finished" and not (tmp_path / "run" / "resume").exists()
    assert _runs(final) == _runs(whole)
    wa, wb = load_file(tmp_path / "run" / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = lambda p: [json.loads(x)["valid"] for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines(tmp_path / "run") == lines(tmp_path / "whole")
    with pytest.raises(CaduceusError, match="it finished; nothing to continue"):
        finetune_classifier(data, resume=tmp_path / "whole")


# -- tasks: multi-class string labels, regression, every input format --------------------------
def test_multiclass_string_labels_probe_and_finetune(models, gue, tmp_path):
    data = read_labeled_sequences(gue[0])
    gc = np.array([gc_fraction(s) for s in data.sequences])
    cuts = np.quantile(gc, [1 / 3, 2 / 3])
    labels = ["low" if g < cuts[0] else "mid" if g < cuts[1] else "high" for g in gc]
    tasks = LabeledSequences(data.sequences, labels, data.names, "gc-classes")
    train, test = tasks.subset(range(120)), tasks.subset(range(120, 160))
    probe = fit_probe(train, tmp_path / "probe", model=models["ph"], test=test, cache=False, **QUICK_PROBE)
    assert probe["label_names"] == ["high", "low", "mid"] and probe["runs"][0]["test"]["auroc"] > 0.6
    rows = predict(tmp_path / "probe", write_fasta(tmp_path / "t.fa", test.names, test.sequences), device="cpu", dtype="fp32").rows
    assert {r["prediction"] for r in rows} <= {"high", "low", "mid"}
    assert all(abs(r["prob_high"] + r["prob_low"] + r["prob_mid"] - 1) < 1e-9 for r in rows)
    folded = classification_metrics(np.array([["high", "low", "mid"].index(x) for x in test.labels]),
                                     np.array([[r["prob_high"], r["prob_low"], r["prob_mid"]] for r in rows]))
    for name, value in probe["runs"][0]["test"].items():  # the folded head == scikit-learn's predict_proba
        assert folded[name] == pytest.approx(value, abs=1e-6), name
    clf = finetune_classifier(train, tmp_path / "clf", model=models["ps"], test=test, **FAST)
    assert clf["label_names"] == ["high", "low", "mid"] and clf["runs"][0]["test"]["f1"] is not None
    assert load_classifier(tmp_path / "clf").head["label_names"] == ["high", "low", "mid"]


def test_regression_on_a_synthetic_numeric_target(models, gue, tmp_path):
    data = read_labeled_sequences(gue[0])
    noise = np.random.default_rng(0).normal(0, 0.02, len(data))
    target = LabeledSequences(data.sequences, [float(gc_fraction(s) + e) for s, e in zip(data.sequences, noise)],
                              data.names, "gc")
    train, test = target.subset(range(120)), target.subset(range(120, 160))
    probe = fit_probe(train, tmp_path / "probe", model=models["ph"], test=test, task="regression", cache=False,
                      **dict(QUICK_PROBE, grid=(1.0, 10.0)))
    assert probe["metric_names"] == ["mse", "pearson", "spearman", "r2"] and probe["runs"][0]["test"]["pearson"] > 0.5
    fasta = write_fasta(tmp_path / "t.fa", test.names, test.sequences)
    values = np.array([r["prediction"] for r in predict(tmp_path / "probe", fasta, device="cpu", dtype="fp32").rows])
    assert float(np.mean((values - np.array(test.labels)) ** 2)) == pytest.approx(probe["runs"][0]["test"]["mse"],
                                                                                   rel=1e-5)
    clf = finetune_classifier(train, tmp_path / "clf", model=models["ph"], test=test, task="regression", **FAST)
    rows = predict(tmp_path / "clf", fasta, device="cpu", dtype="fp32").rows
    mse = float(np.mean((np.array([r["prediction"] for r in rows]) - np.array(test.labels)) ** 2))
    assert clf["runs"][0]["test"]["mse"] == pytest.approx(mse, rel=1e-6)  # the saved head folds the scaling in
    assert clf["label_names"] is None and clf["recipe"]["select_metric"] == "mse"


def test_probe_on_fasta_with_folds_bed_and_cached_features(models, tmp_path):
    yeast = read_labeled_sequences(need_data("tasks", "nt_yeast_histone", "H3", "test.fna.gz")).subset(range(0, 1497, 25))
    fasta = write_fasta(tmp_path / "h3.fa", yeast.names, yeast.sequences, yeast.labels)
    kw = dict(model=models["ps"], cache=tmp_path / "cache", **QUICK_PROBE)
    first = fit_probe(str(fasta), tmp_path / "p1", folds=3, **kw)
    assert [r["fold"] for r in first["runs"]] == [0, 1, 2] and sum(r["test_records"] for r in first["runs"]) == 60
    assert first["summary"]["cv"]["auroc"]["runs"] == 3 and first["features"]["cached"] == {"train": False}
    again = fit_probe(str(fasta), tmp_path / "p2", folds=3, **kw)
    assert again["features"]["cached"] == {"train": True} and _runs(again) == _runs(first)
    genome = need_data("genomes", "sacCer3.fa.gz")
    starts = np.random.default_rng(1).integers(0, 200_000, 40)
    bed = tmp_path / "r.bed"
    bed.write_text("".join(f"chrI\t{s}\t{s + 80}\tr{i}\t0\t{'+-'[i % 2]}\t{i % 2}\n" for i, s in enumerate(starts)))
    report = fit_probe(str(bed), tmp_path / "p3", fasta=str(genome), **kw)
    assert report["splits"]["train"]["records"] == 40 and report["runs"][0]["valid_source"] == "out-of-fold on train"
    rows = predict(tmp_path / "p3", bed, fasta=genome, device="cpu", dtype="fp32").rows
    assert [r["name"] for r in rows] == [f"r{i}" for i in range(40)]


def test_max_length_crops_and_counts(models, gue, tmp_path):
    report = finetune_classifier(str(gue[0]), tmp_path / "clf", model=models["ph"], test=str(gue[1]), max_length=50,
                                 **FAST)
    assert report["splits"]["train"]["truncated"] == 160 and report["splits"]["test"]["truncated"] == 60
    assert load_classifier(tmp_path / "clf").head["max_length"] == 50
    assert predict(tmp_path / "clf", gue[1], device="cpu", dtype="fp32").truncated == 60


# -- the folder in the HF layout, the CLI, bad input ---------------------------------------------
def cli(*args, capsys):
    from caduceus_cli.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_classifier_folder_loads_as_backbone_shows_its_head_and_embeds(ph_run, gue, capsys, tmp_path):
    folder = ph_run[0]
    backbone = load_model(folder)
    clf = load_classifier(folder)
    assert torch.equal(backbone.backbone.norm_f.weight, clf.backbone.norm_f.weight)
    code, out, _ = cli("models", "info", folder, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["head"].startswith("classification (2 labels: 0, 1), mean pooling")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["CaduceusForSequenceClassification"] and config["num_labels"] == 2
    assert config["classifier"]["trained_from"]["data"]["train"] == ph_run[1]["data"]["train"]
    fasta = write_fasta(tmp_path / "s.fa", ["a", "b"], ["ACGTACGTAC", "GGGCCCAATT"])
    code, out, _ = cli("embed", fasta, "-m", folder, "-o", "-", "-q", capsys=capsys)
    assert code == 0 and len([x for x in out.splitlines() if not x.startswith("#")]) == 3
    with pytest.raises(CaduceusError, match="is a language model, not a classifier"):
        load_classifier(load_model("bundled").source["folder"])


def test_classify_and_predict_through_the_cli(gue, models, capsys, tmp_path, monkeypatch):
    out = tmp_path / "clf"
    code, stdout, err = cli("finetune", "classify", gue[0], "-o", out, "--test", gue[1], "-m", models["ph"], "--epochs",
                            1, "--batch-size", 32, "--device", "cpu", capsys=capsys)
    assert code == 0 and stdout.startswith("run\tbest_epoch") and "# test over 1 run(s): accuracy=" in stdout
    last = err.strip().splitlines()[-1]  # the one summary sentence, in every data command's style
    assert last.startswith("caduceus: finetune classify: 1 run(s); test ") and last.endswith(f"-> {out}"), err
    code, stdout, err = cli("predict", out, gue[1], "--device", "cpu", capsys=capsys)
    assert code == 0 and len([x for x in stdout.splitlines() if not x.startswith("##")]) == 61
    assert err.strip().splitlines()[-1].startswith("caduceus: predict: predicted 60 sequences"), err
    code, _, err = cli("predict", out, gue[1], "--device", "cpu", "--json", "-o", tmp_path / "p.tsv", capsys=capsys)
    assert code == 0 and json.loads(err.strip().splitlines()[-1])["records"] == 60
    monkeypatch.setattr(sys, "stdin", io.StringIO(">x\nACGTACGTAA\n>y\nTTGCA\n"))  # '-' is stdin
    code, stdout, _ = cli("predict", out, "-", "-o", "-", "--device", "cpu", "-q", capsys=capsys)
    rows = [x.split("\t")[0] for x in stdout.splitlines() if not x.startswith("##")]
    assert code == 0 and rows == ["name", "x", "y"]


BAD = {
    "nolabel.csv": ("sequence,foo\nACGTACGT,1\nACGAACGA,0\n", [], "no label column"),
    "oneclass.csv": ("sequence,label\nACGTACGT,1\nACGAACGA,1\n", [], "every label is 1"),
    "badchar.csv": ("sequence,label\nACGTACGT,1\nACXAACGA,0\n", [], "'X' is not a nucleotide code"),
    "empty.csv": ("", [], "no sequences (the file is empty)"),
    "nolab.fa": (">a|1\nACGTACGT\n>b\nACGAACGA\n", [], "FASTA header 'b' has no label"),
    "nolab.bed": ("chrI\t10\t20\nchrI\t30\t40\n", ["--fasta", "GENOME"], "BED without a label column"),
    "frac.csv": ("sequence,label\nACGTACGT,1\nACGAACGA,0\n", ["--valid-fraction", "0"], "--valid-fraction 0 is out of range"),
    "reg.csv": ("sequence,label\nACGTACGT,1.5\nACGAACGA,high\n", ["--task", "regression"], "'high' is not a number"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_leaves_no_folder(name, models, capsys, tmp_path):
    text, extra, fragment = BAD[name]
    (tmp_path / name).write_text(text)
    extra = [str(need_data("genomes", "sacCer3.fa.gz")) if x == "GENOME" else x for x in extra]
    code, _, err = cli("finetune", "classify", tmp_path / name, "-o", tmp_path / "out", "-m", models["ph"], *extra,
                       "--device", "cpu", capsys=capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("caduceus: error: ") and fragment in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output folder, not even a hidden one


def test_bad_input_through_the_console_script(tmp_path):
    script = shutil.which("caduceus")
    if script is None:
        pytest.skip("the caduceus console script is not installed (pip install -e .)")
    (tmp_path / "empty.csv").write_text("")
    result = subprocess.run([script, "finetune", "probe", "empty.csv", "-o", "out"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "empty.csv: no sequences" in result.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(gue, models, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CADUCEUS_PREDICT_CHUNK": "16"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "caduceus_cli"]
    run = lambda *a: subprocess.run([*torchrun, *map(str, a)], capture_output=True, text=True, timeout=300,  # noqa: E731
                                    env=env, cwd=tmp_path)
    result = run("finetune", "classify", gue[0], "-o", tmp_path / "ddp", "--test", gue[1], "-m", models["ph"],
                 "--epochs", 1, "--batch-size", 32, "--device", "cpu", "--json", "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # rank 0 alone prints
    assert report["recipe"]["world_size"] == 2 and report["runs"][0]["test"]["auroc"] is not None
    result = run("predict", tmp_path / "ddp", gue[1], "-o", tmp_path / "ddp.tsv", "--device", "cpu", "--dtype", "fp32",
                 "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    single = predict(tmp_path / "ddp", gue[1], tmp_path / "one.tsv", device="cpu", dtype="fp32")
    body = lambda p: [x for x in p.read_text().splitlines() if not x.startswith("##")]  # noqa: E731
    assert single.n_records == 60 and body(tmp_path / "ddp.tsv") == body(tmp_path / "one.tsv")


# -- pieces ---------------------------------------------------------------------------------------
def test_schedule_batches_and_splits():
    lrs = [lr_at(s, 1.0, 2, 100, 0.1) for s in range(101)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == pytest.approx(0.1) and min(lrs) >= 0.1 - 1e-12
    rng = np.random.default_rng(0)
    same = train_batches(np.full(300, 70), 32, rng)
    assert len(same) == 10 and sorted(np.concatenate(same).tolist()) == list(range(300))
    mixed = np.array([70, 50] * 150)
    assert sum(len(np.unique(mixed[b])) > 1 for b in train_batches(mixed, 32, rng)) <= 1  # one straddling batch
    assert all(len(np.unique(mixed[b])) == 1 for b in equal_length_batches(mixed, 32))
    y = np.array([0] * 90 + [1] * 10)
    train, valid = stratified_split(100, y, 0.1, [1, 0])
    assert len(valid) == 10 and (y[valid] == 1).sum() == 1 and len(np.intersect1d(train, valid)) == 0


def test_engine_does_not_import_typer_or_rich():
    code = ("import sys, caduceus_cli.pipelines.finetune.classify, caduceus_cli.pipelines.finetune.probe, "
            "caduceus_cli.pipelines.finetune.predict, caduceus_cli.genome.labeled; "
            "bad = [m for m in ('typer', 'rich', 'click') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_gpu_benchmark_script_runs_on_cpu_with_tiny_settings(models, tmp_path):
    need_data("tasks", "gue", "mouse_0", "train.csv.gz")
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "finetune_gpu.py"), "--device", "cpu", "--tasks",
                    "mouse_0", "H3", "--max-train", "40", "--runs", "2", "--epochs", "1", "--budget", "600",
                    "--model", str(models["ph"]), "--work", str(tmp_path / "work"), "--json", str(out)],
                   check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    results = {r["task"]: r for r in json.loads(out.read_text())["results"]}
    assert results["mouse_0"]["runs_completed"] == 2 and results["mouse_0"]["mcc"]["runs"] == 2
    assert results["H3"]["protocol"] == "folds 2" and results["H3"]["status"] == "finished"
