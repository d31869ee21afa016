"""`caduceus predict --attribute ism|saliency` and the sequence logos, with tiny classifiers trained
on GUE prom_core_all: a row for every input base, ISM equal to predictions of the mutants made
one by one, saliency equal to autograd through a one-hot input (and to a finite difference),
mirrored attributions for a sequence and its reverse complement, logos that are PNGs, and
one-line refusals through the console script with nothing left behind."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.labeled import read_labeled_sequences
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, reverse_complement, save_model
from caduceus_cli.model.checkpoint import load_classifier
from caduceus_cli.pipelines.finetune import finetune_classifier, fit_probe, predict
from caduceus_cli.pipelines.inference import gradient_times_input
from caduceus_cli.pipelines.interpret.logo import plot_logo

from .conftest import console, need_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def write_fasta(path: Path, names, sequences) -> Path:
    path.write_text("".join(f">{n}\n{s}\n" for n, s in zip(names, sequences)))
    return path


@pytest.fixture(scope="module")
def gue(tmp_path_factory):
    """160 training records of GUE prom_core_all (70 bp) as CSV, and 6 test records."""
    folder = tmp_path_factory.mktemp("gue")
    dev = read_labeled_sequences(need_data("tasks", "gue", "prom_core_all", "dev.csv.gz")).subset(range(160))
    test = read_labeled_sequences(need_data("tasks", "gue", "prom_core_all", "test.csv.gz")).subset(range(6))
    train = folder / "train.csv"
    train.write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in zip(dev.sequences, dev.labels)))
    return train, test


@pytest.fixture(scope="module")
def classifiers(gue, tmp_path_factory):
    """Tiny fine-tuned PS (2 layers) and Ph (1 layer, conjoined at prediction) classifiers and a PS probe."""
    root = tmp_path_factory.mktemp("classifiers")
    out = {}
    for variant, layers in (("ps", 2), ("ph", 1)):
        torch.manual_seed(0)
        backbone = save_model(CaduceusForMaskedLM(CaduceusConfig.small(variant, 16, layers)), root / f"{variant}_lm")
        out[f"{variant}_lm"] = backbone
        out[variant] = root / variant
        finetune_classifier(str(gue[0]), out[variant], model=backbone, epochs=1, batch_size=32, device="cpu")
    out["probe"] = root / "probe"
    fit_probe(str(gue[0]), out["probe"], model=out["ps_lm"], grid=(1.0,), cv_folds=2, device="cpu", cache=False)
    return out


@pytest.fixture(scope="module")
def inputs(gue, tmp_path_factory):
    """The 6 test sequences, one with an N, and one of 40 bases (two lengths in one file)."""
    test = gue[1]
    seqs = list(test.sequences)
    seqs[1] = seqs[1][:30] + "N" + seqs[1][31:]
    seqs.append(test.sequences[0][15:55])
    names = [f"t{i}" for i in range(len(seqs))]
    return names, seqs, write_fasta(tmp_path_factory.mktemp("inputs") / "t.fa", names, seqs)


def by_sequence(table) -> dict[str, dict[str, np.ndarray]]:
    rows = table if isinstance(table, list) else table.to_pylist()
    out: dict[str, dict[str, list]] = {}
    for row in rows:
        for key, value in row.items():
            out.setdefault(row["name"], {}).setdefault(key, []).append(value)
    return {name: {k: np.array(v) for k, v in cols.items()} for name, cols in out.items()}


# -- rows ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ism", "saliency"])
def test_attribution_rows_cover_every_input_base(method, classifiers, inputs, tmp_path):
    names, seqs, fasta = inputs
    out = tmp_path / "a.parquet"
    result = predict(classifiers["ps"], fasta, out, attribute=method, device="cpu", dtype="fp32", batch_size=16)
    table = pq.read_table(out)
    assert result.n_records == len(seqs) and table.num_rows == sum(map(len, seqs))
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["attribution"] == method and "model" in json.dumps(meta)
    plain = {r["name"]: r for r in predict(classifiers["ps"], fasta, device="cpu", dtype="fp32").rows}
    got = by_sequence(table)
    assert list(got) == names  # input order
    for name, seq in zip(names, seqs):
        cols = got[name]
        assert cols["position"].tolist() == list(range(1, len(seq) + 1))
        assert "".join(cols["base"]) == seq
        assert set(cols["prediction"].tolist()) == {plain[name]["prediction"]}
        assert cols["probability"] == pytest.approx(plain[name][f"prob_{plain[name]['prediction']}"], abs=1e-6)
        assert np.isfinite(cols[method]).all() and np.abs(cols[method]).max() > 0
    if method == "ism":
        n_row = got["t1"]
        at_n = n_row["position"] == 31
        assert n_row["base"][at_n][0] == "N"  # an N: the mean over all four bases
        four = np.array([n_row[f"ism_{b}"][at_n][0] for b in "ACGT"])
        assert n_row["ism"][at_n][0] == pytest.approx(four.mean()) and (four != 0).all()


def test_bases_outside_the_crop_score_zero_and_still_get_rows(classifiers, inputs, tmp_path):
    names, seqs, fasta = inputs
    folder = tmp_path / "cropped"
    shutil.copytree(classifiers["ps"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["classifier"]["max_length"] = 60
    (folder / "config.json").write_text(json.dumps(config))
    result = predict(folder, fasta, attribute="saliency", device="cpu", dtype="fp32")
    assert result.truncated == 6 and len(result.rows) == sum(map(len, seqs))
    scores = by_sequence(result.rows)["t0"]["saliency"]
    assert (scores[:5] == 0).all() and (scores[65:] == 0).all() and (scores[5:65] != 0).all()


# -- ISM: the mutants one by one -----------------------------------------------------------------
def test_ism_equals_a_direct_recomputation(classifiers, inputs, tmp_path):
    names, seqs, fasta = inputs
    got = by_sequence(predict(classifiers["ps"], fasta, attribute="ism", device="cpu", dtype="fp32").rows)["t0"]
    seq, position = seqs[0], 23  # 1-based
    ref = seq[position - 1]
    mutants = [seq[:position - 1] + b + seq[position:] for b in "ACGT" if b != ref]
    direct = predict(classifiers["ps"], write_fasta(tmp_path / "m.fa", ["ref", "a", "b", "c"], [seq, *mutants]),
                     device="cpu", dtype="fp32").rows
    label = direct[0]["prediction"]
    changes = [r[f"prob_{label}"] - direct[0][f"prob_{label}"] for r in direct[1:]]
    alts = [b for b in "ACGT" if b != ref]
    i = position - 1
    for alt, change in zip(alts, changes):
        assert got[f"ism_{alt}"][i] == pytest.approx(change, abs=1e-6)
    assert got[f"ism_{ref}"][i] == 0.0 and got["ism"][i] == pytest.approx(np.mean(changes), abs=1e-6)


# -- saliency: autograd through a one-hot input; a finite difference -----------------------------
def one_hot_target(model, seq: str):
    """(target, one-hot input X (L, V) requiring a gradient): the model run on X @ W, each strand
    embedded from X (the RC strand from X read backwards with complemented columns)."""
    ids = torch.tensor([[7 + "ACGTN".index(c) for c in seq]])
    weight = model.backbone.embeddings.word_embeddings.weight.detach()
    x = torch.nn.functional.one_hot(ids[0], weight.shape[0]).float().requires_grad_(True)
    complement = model.backbone.complement_ids

    def from_one_hot(module, args, output):
        return torch.cat([(x @ weight)[None], (x.flip(0)[:, complement] @ weight)[None]])

    handle = model.backbone.embeddings.register_forward_hook(from_one_hot)
    try:
        logits = model(ids)[0]
    finally:
        handle.remove()
    return logits[logits.argmax()] - logits.mean(), x, ids


@pytest.mark.parametrize("kind", ["ps", "probe"])
def test_saliency_equals_autograd_through_a_one_hot_input(kind, classifiers, inputs):
    names, seqs, _ = inputs
    model = load_classifier(classifiers[kind], device="cpu", dtype="fp32")
    target, x, ids = one_hot_target(model, seqs[0])
    (grad,) = torch.autograd.grad(target, x)
    expected = grad[torch.arange(len(seqs[0])), ids[0]]  # one-hot x gradient: the entry of the base read
    logits, scores = gradient_times_input(model, ids)
    assert torch.allclose(scores[0], expected, rtol=1e-4, atol=1e-7 * float(expected.abs().max()))
    assert float(expected.abs().max()) > 0  # a probe's binary head is [0, z]: its class-0 logit alone has no gradient
    got = by_sequence(predict(classifiers[kind], inputs[2], attribute="saliency", device="cpu", dtype="fp32").rows)["t0"]
    assert np.allclose(got["saliency"], scores[0].numpy(), rtol=1e-4, atol=1e-7)


def test_saliency_sums_to_the_finite_difference_along_the_input(classifiers, inputs):
    """Gradient x input summed over positions is the derivative of the target when every embedding
    is scaled by (1 + t): compared with a central difference."""
    names, seqs, _ = inputs
    model = load_classifier(classifiers["ps"], device="cpu", dtype="fp32")
    ids = torch.tensor([[7 + "ACGTN".index(c) for c in seqs[0]]])
    _, scores = gradient_times_input(model, ids)

    def target(scale: float) -> float:
        handle = model.backbone.embeddings.register_forward_hook(lambda m, a, out: out * scale)
        try:
            with torch.no_grad():
                logits = model(ids)[0].double()
        finally:
            handle.remove()
        return float(logits.max() - logits.mean())

    step = 1e-2
    difference = (target(1 + step) - target(1 - step)) / (2 * step)
    assert float(scores.sum()) == pytest.approx(difference, rel=2e-2, abs=1e-6)


# -- strands -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ps", "ph"])
def test_a_sequence_and_its_reverse_complement_get_mirrored_attributions(kind, classifiers, inputs, tmp_path):
    names, seqs, _ = inputs
    fwd = write_fasta(tmp_path / "f.fa", names, seqs)
    rev = write_fasta(tmp_path / "r.fa", names, [reverse_complement(s) for s in seqs])
    for method in ("saliency", "ism"):
        a = by_sequence(predict(classifiers[kind], fwd, attribute=method, device="cpu", dtype="fp32").rows)
        b = by_sequence(predict(classifiers[kind], rev, attribute=method, device="cpu", dtype="fp32").rows)
        for name in names:
            scale = float(np.abs(a[name][method]).max())
            assert scale > 0
            assert np.allclose(b[name][method][::-1], a[name][method], atol=1e-4 * scale), (kind, method, name)
            if method == "ism":  # base X on one strand is its complement on the other
                for base in "ACGT":
                    mirrored = b[name][f"ism_{base.translate(COMPLEMENT)}"][::-1]
                    assert np.allclose(mirrored, a[name][f"ism_{base}"], atol=1e-4 * scale)


# -- logos ---------------------------------------------------------------------------------------
def test_plot_logo_writes_a_png(tmp_path):
    matrix = np.zeros((12, 4))
    matrix[np.arange(12), np.arange(12) % 4] = np.linspace(-1, 1, 12)
    path = plot_logo(matrix, "ACGT", "a test", tmp_path / "logo.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["logo.png"]  # no temporary left


def test_a_missing_logomaker_is_one_error_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "logomaker", None)
    with pytest.raises(CaduceusError, match="pip install logomaker"):
        plot_logo(np.ones((3, 4)), "ACGT", "x", tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


def test_predict_plots_the_top_sequences_by_probability(classifiers, inputs, tmp_path):
    names, seqs, fasta = inputs
    result = predict(classifiers["ps"], fasta, tmp_path / "a.parquet", attribute="saliency",
                     plot=f"{tmp_path / 'logos'}/", plot_top=3, device="cpu", dtype="fp32")
    probability = {r["name"]: r["probability"] for r in pq.read_table(tmp_path / "a.parquet").to_pylist()}
    best = sorted(names, key=lambda n: -probability[n])[:3]
    assert result.logos == [str(tmp_path / "logos" / f"{rank}_{name}.png") for rank, name in enumerate(best, 1)]
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in result.logos)
    prefixed = predict(classifiers["ps"], fasta, attribute="ism", plot=tmp_path / "run", plot_top=1, device="cpu",
                       dtype="fp32")
    assert prefixed.logos == [str(tmp_path / f"run_1_{best[0]}.png")]


# -- refusals through the console script ---------------------------------------------------------
def one_error(result, *needles):
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_attribution_requests_are_one_line_and_leave_nothing(classifiers, inputs, tmp_path):
    names, seqs, fasta = inputs
    work = tmp_path / "work"
    work.mkdir()
    out = work / "a.parquet"
    clf = classifiers["ps"]
    one_error(console("predict", clf, fasta, "--attribute", "lime", "-o", out), "--attribute must be one of ism, "
                                                                              "saliency", "'lime'")
    one_error(console("predict", classifiers["ps_lm"], fasta, "--attribute", "ism", "-o", out), "not a classifier")
    one_error(console("predict", clf, fasta, "--plot", work / "logos", "-o", out), "--plot", "--attribute")
    one_error(console("predict", clf, fasta, "--attribute", "ism", "--plot-top", "3", "-o", out), "--plot-top",
              "--plot")
    one_error(console("predict", clf, fasta, "--attribute", "ism", "-o", tmp_path / "missing" / "a.parquet"),
              "does not exist")
    for plot in (f"{tmp_path / 'missing' / 'x'}/", tmp_path / "missing" / "x"):  # a folder, a prefix
        one_error(console("predict", clf, fasta, "--attribute", "ism", "--plot", plot, "-o", out), "--plot",
                  "does not exist")
    long_fasta = write_fasta(tmp_path / "long.fa", ["short", "long"], [seqs[0], (seqs[0] * 8)[:560]])
    one_error(console("predict", clf, long_fasta, "--attribute", "saliency", "--plot", f"{work / 'logos'}/",
                      "-o", out, "-q"), "'long'", "560 bases", "500", "Parquet")
    assert not any(work.iterdir())
    assert not (tmp_path / "missing").exists()
