"""The paper's TSS-bucketed SVM: features against a direct computation, pickle-free save/load,
an end-to-end fit on a labeled set built from the real 1000 Genomes records, and --svm scoring."""

import gzip
import json
import re
import stat

import numpy as np
import pytest
import torch

from caduceus_cli import io as caduceus_io
from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.fasta import Reference
from caduceus_cli.genome.tss import read_tss
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model
from caduceus_cli.model.tokenizer import encode
from caduceus_cli.pipelines.inference import embed_tokens
from caduceus_cli.genome.labeled_variants import LabeledVariant, read_labeled
from caduceus_cli.pipelines.svm import _export, _fit_one, extract_features, train_svm
from caduceus_cli.pipelines.svm_model import bucket_of, load_svm, rbf_decision
from caduceus_cli.genome.vcf import VcfRecord
from caduceus_cli.pipelines.variants import score_variants

from .conftest import DATA as SHARED_DATA
from .conftest import need_data

DATA = SHARED_DATA
VCF = DATA / "variants/1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = str(DATA / "variants/1kgp_grch37_chr20_1-2Mb.fa")
TSS_HG38 = DATA / "annotation/hg38_refGene_tss.bed.gz"
# contig z position p (0-based) is GRCh37 chr20:999,999 + p (0-based); hg38 = GRCh37 + 19,350 on this
# stretch of chr20 (the offset at which refGene TSSs best coincide with CpG-rich sequence), so
# z = hg38 - 1,019,349.
HG38_TO_Z = 1_019_349
W = 32


def derived_tss_bed(path):
    lines = ["# hg38 refGene TSS of chr20 moved onto contig z (hg38 - 1,019,349)"]
    for ln in gzip.open(TSS_HG38, "rt"):
        cols = ln.split("\t")
        if cols[0] == "chr20" and int(cols[1]) >= HG38_TO_Z:
            z = int(cols[1]) - HG38_TO_Z
            lines.append(f"z\t{z}\t{z + 1}\t{cols[3].strip()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def labeled_snvs(path, n_per_class):
    """label 1: rare SNVs (AF < 0.001), label 0: common SNVs (AF >= 0.05), from the real VCF."""
    rare, common = [], []
    for ln in gzip.open(VCF, "rt"):
        if ln.startswith("#"):
            continue
        c = ln.split("\t")
        if len(c[3]) != 1 or len(c[4]) != 1 or c[4] not in "ACGT":
            continue
        af = float(dict(kv.split("=", 1) for kv in c[7].split(";") if "=" in kv)["AF"])
        (rare if af < 0.001 else common if af >= 0.05 else []).append((c[0], c[1], c[3], c[4]))
    def spread(items):  # evenly spaced along the contig, so both classes reach the held-out end
        return [items[i] for i in np.linspace(0, len(items) - 1, min(n_per_class, len(items))).astype(int)]

    rows = [(*r, 1) for r in spread(rare)] + [(*r, 0) for r in spread(common)]
    rows.sort(key=lambda r: int(r[1]))
    path.write_text("chrom\tpos\tref\talt\tlabel\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model(small_ps_dir):
    return load_model(small_ps_dir, dtype="fp32")  # compared with direct fp32 passes


def test_bucket_boundaries():
    assert [bucket_of(d) for d in (0, 29_999, 30_000, 99_999, 100_000, 10**7)] == [0, 0, 1, 1, 2, 2]
    assert bucket_of(None) is None


def test_features_equal_direct_embedding_of_ref_and_alt_windows(model, tmp_path):
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.fa")
    ref = Reference(FA)
    tss = read_tss(derived_tss_bed(tmp_path / "tss.bed"))
    variants = []
    for pos in (1_000, 250_000, 600_001):
        base = ref.fetch("z", pos - 1, pos)[0].upper()
        variants.append(LabeledVariant(VcfRecord("z", pos, base, [next(b for b in "ACGT" if b != base)], pos), 1))
    deletion_ref = ref.fetch("z", 4_999, 5_002)[0].upper()
    variants.append(LabeledVariant(VcfRecord("z", 5_000, deletion_ref, [deletion_ref[0]], 5_000), 0))
    X, dist, keep = extract_features(model, ref, variants, tss, W, batch_size=3)
    assert keep.all() and X.shape == (4, 2 * model.config.d_model)
    c = W // 2
    for row, v in zip(X, variants):
        r = v.record
        seq = ref.fetch("z", r.pos - 1 - c, r.pos - 1 - c + W + len(r.ref))[0].upper()
        alt_seq = (seq[:c] + r.alts[0] + seq[c + len(r.ref):])[:W]
        ids = torch.tensor(np.stack([encode(seq[:W]), encode(alt_seq)]).astype(np.int64))
        with torch.no_grad():
            # strand-averaged means: PS forward half and the RC half flipped back, averaged over positions
            hidden = model(ids).last_hidden_state
            d = model.config.d_model
            direct = 0.5 * (hidden[..., :d] + hidden[..., d:].flip(-1)).mean(1)
        np.testing.assert_allclose(row, direct.reshape(-1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row, embed_tokens(model, ids).reshape(-1).numpy(), rtol=1e-5, atol=1e-6)
        assert dist[variants.index(v)] == tss.nearest("z", r.pos - 1)


def test_saved_arrays_reproduce_sklearn_decision_function():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    clf = _fit_one(X, y, C=5, seed=3, n_train=200)
    arrays = _export([clf])
    np.testing.assert_allclose(rbf_decision(arrays, 0, X), clf.decision_function(X), rtol=1e-8, atol=1e-8)


def test_read_labeled_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("chrom\tpos\tref\talt\tlabel\nz\t10\tA\tT\tmaybe\n")
    with pytest.raises(CaduceusError, match=r"bad.tsv: line 2: label 'maybe'"):
        read_labeled(str(bad))


def test_train_svm_end_to_end_and_score_with_it(model, tmp_path, monkeypatch):
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    monkeypatch.setattr(caduceus_io, "_UMASK", 0o002)  # the folder's mode follows the umask (was mkdtemp's 0700)
    need_data("annotation", "hg38_refGene_tss.bed.gz")
    tss = derived_tss_bed(tmp_path / "z_tss.bed")
    labeled = labeled_snvs(tmp_path / "labeled.tsv", 60)
    out = tmp_path / "svm"
    report = train_svm(str(labeled), FA, str(tss), str(out), model=model, window=W, n_train=80, batch_size=32,
                       features="mean")
    fitted = {k: b for k, b in report["buckets"].items() if "skipped" not in b}
    assert "0-30kbp" in fitted
    for b in fitted.values():
        assert set(b["per_C"]) == {"1", "5", "10"} and len(b["per_C"]["1"]["per_seed"]) == 5
    assert_reported_aurocs_are_those_of_the_saved_models(model, labeled, tss, out, report)
    assert stat.S_IMODE(out.stat().st_mode) == 0o775
    meta = json.loads((out / "svm.json").read_text())
    assert meta["model_sha256"] == model.source["sha256"] and meta["window"] == W
    for f in out.glob("*.npz"):
        np.load(f, allow_pickle=False)  # plain arrays: no pickle needed to read
    # score-variants --svm: the SVM score equals the saved model's decision on the variant's features
    svm = load_svm(out)
    vcf = tmp_path / "few.vcf"
    rows = [ln.split("\t") for ln in labeled.read_text().splitlines()[1:6]]
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"z\t{r[1]}\t.\t{r[2]}\t{r[3]}\t.\t.\t.\n" for r in rows))
    scored = tmp_path / "scored.tsv"
    score_variants(str(vcf), FA, str(scored), model=model, window=W, scores="embed_l2", svm=str(out), tss=str(tss))
    table = [ln.split("\t") for ln in scored.read_text().splitlines() if not ln.startswith("##")]
    assert table[0] == ["chrom", "pos", "id", "ref", "alt", "embed_l2", "svm", "tss_distance", "status"]
    variants = [LabeledVariant(VcfRecord("z", int(r[1]), r[2], [r[3]], 0), 0) for r in rows]
    X, dist, _ = extract_features(model, Reference(FA), variants, read_tss(tss), W)
    expected = svm.decision(X, dist)
    np.testing.assert_allclose([float(t[6]) for t in table[1:]], expected, rtol=1e-4, atol=1e-5)
    assert [int(t[7]) for t in table[1:]] == list(dist)
    # refuses a model other than the one it was trained on
    other = CaduceusForMaskedLM(CaduceusConfig.small("ps", 16, 1))
    other.source = {"id": "other", "sha256": "0" * 64}
    with pytest.raises(CaduceusError, match="trained on features of model"):
        score_variants(str(vcf), FA, str(tmp_path / "x.vcf"), model=other, window=W, svm=str(out), tss=str(tss))
    with pytest.raises(CaduceusError, match="exists and is not an empty folder"):
        train_svm(str(labeled), FA, str(tss), str(out), model=model, window=W)


def assert_reported_aurocs_are_those_of_the_saved_models(model, labeled, tss, folder, report):
    """The report's AUROCs (mean over seeds, from the decision function and from hard labels) are
    recomputed from the saved arrays on the held-out variants of each fitted bucket."""
    from sklearn.metrics import roc_auc_score

    from caduceus_cli.pipelines.svm import _split

    variants = read_labeled(str(labeled))
    X, dist, keep = extract_features(model, Reference(FA), variants, read_tss(tss), W)
    y = np.array([v.label for v in variants])
    is_test = _split(variants, 0.2)
    svm = load_svm(folder)
    for k, arrays in svm.buckets.items():
        rows = keep & is_test & np.array([bucket_of(int(d)) == k for d in dist])
        entry = report["buckets"][svm.meta["buckets"][str(k)]["name"]]
        decisions = [rbf_decision(arrays, i, X[rows]) for i in range(svm.n_seeds)]
        assert entry["n_test"] == int(rows.sum())
        assert entry["auroc_decision"] == pytest.approx(np.mean([roc_auc_score(y[rows], d) for d in decisions]))
        assert entry["auroc_hard_labels"] == pytest.approx(np.mean([roc_auc_score(y[rows], d > 0) for d in decisions]))


def test_fitted_buckets_separate_separable_classes():
    """Two classes a few standard deviations apart: every C and seed reaches an AUROC near 1, and
    the decision function ranks better than chance on the test half."""
    from caduceus_cli.pipelines.svm import fit_bucket_models

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    X = rng.normal(size=(400, 8)) + 4.0 * y[:, None] * np.eye(8)[0]
    order = rng.permutation(400)
    train, test = order[:300], order[300:]
    per_c, best, fitted = fit_bucket_models(X[train], y[train], X[test], y[test], n_train=300)
    assert all(per_c[c]["auroc_decision_mean"] > 0.95 for c in per_c)
    assert per_c[best]["auroc_hard_labels_mean"] > 0.9 and len(fitted) == 5
    shuffled = rng.permutation(y[train])  # labels unrelated to the features: nothing to learn
    per_c, _, _ = fit_bucket_models(X[train], shuffled, X[test], y[test], n_train=300)
    assert all(per_c[c]["auroc_decision_mean"] < 0.8 for c in per_c)


def test_read_labeled_detects_gzip_by_content_not_name(tmp_path):
    import gzip

    text = "chrom\tpos\tref\talt\tlabel\nz\t100\tA\tG\t1\nz\t200\tC\tT\t0\n"
    plain, packed = tmp_path / "labels.tsv", tmp_path / "labels_gzipped.tsv"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert read_labeled(str(packed)) == read_labeled(str(plain))
    assert [v.label for v in read_labeled(str(plain))] == [1, 0]


def test_svm_command_prints_its_table_and_one_summary_sentence(small_ps_dir, tmp_path, run_cli):
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    need_data("annotation", "hg38_refGene_tss.bed.gz")
    tss = derived_tss_bed(tmp_path / "z_tss.bed")
    labeled = labeled_snvs(tmp_path / "labeled.tsv", 40)
    args = ["finetune", "svm", labeled, "-f", FA, "--tss", tss, "-m", small_ps_dir, "--window", W, "--n-train", 60]
    code, out, err = run_cli(*args, "-o", tmp_path / "svm")
    assert code == 0, err
    table = out.splitlines()
    assert table[0].startswith("bucket\tn_train") and len(table) == 1 + len(json.loads(
        (tmp_path / "svm" / "report.json").read_text())["buckets"])
    last = err.splitlines()[-1]
    assert re.fullmatch(rf"caduceus: finetune svm: fitted [1-9] of {len(table) - 1} distance-to-TSS buckets on 80 "
                        rf"variants in \d+s -> {re.escape(str(tmp_path / 'svm'))}", last), last
    code, out, err = run_cli(*args, "-o", tmp_path / "svm2", "--json")
    assert code == 0 and json.loads(out)["n_variants"] == 80 and "finetune svm:" not in err  # the report is the summary
