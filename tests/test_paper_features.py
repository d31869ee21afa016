"""The paper's VEP features (kuleshov-group/caduceus vep_embeddings.py + vep_svm.ipynb) against an
independent statement of that computation, written here in plain torch: golden PS and Ph
checkpoints, contexts of a few kbp of real hg38 sequence, variants near both contig ends."""

import numpy as np
import pysam
import pytest
import torch

from caduceus_cli.genome.fasta import Reference
from caduceus_cli.genome.labeled_variants import LabeledVariant
from caduceus_cli.genome.vcf import VcfRecord
from caduceus_cli.model import load_model
from caduceus_cli.pipelines.svm import extract_features
from caduceus_cli.pipelines.variants import VariantScorer

from .conftest import GOLDEN, SHARED, need_data

FA = "genomes/hg38_chr2_1-2333275.fa.gz"
CONTIG_LENGTH = 2_333_275
W = 1536  # the paper's window
TOKEN = {"A": 7, "C": 8, "G": 9, "T": 10, "N": 11}
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def golden(name):
    folder = GOLDEN / name / "checkpoint"
    if not folder.is_dir():
        folder = SHARED / "golden" / name / "checkpoint"
    if not folder.is_dir():
        pytest.skip(f"golden checkpoint {name} is not present")
    return load_model(folder, device="cpu", dtype="fp32")  # exact comparisons with the fp32 statement


@pytest.fixture(scope="module")
def fasta(one_torch_thread):
    return str(need_data(*FA.split("/")))


def context_string(fasta, pos, context):
    """The ``context`` bases with 1-based ``pos`` at index context // 2, N past the contig ends,
    upper case (read with pysam, not with the project's reader)."""
    start = pos - 1 - context // 2
    with pysam.FastaFile(fasta) as f:
        inside = f.fetch("chr2", max(0, start), min(CONTIG_LENGTH, start + context)).upper()
    return "N" * max(0, -start) + inside + "N" * max(0, start + context - CONTIG_LENGTH)


def ids_of(seq):
    return torch.tensor([[TOKEN[b] for b in seq]])


def official_features(model, ref_seq, alt_seq, window=W):
    """Forward and RC features (each [ref, alt], 2d) as vep_embeddings.py computes them: the last
    hidden state of the whole sequence; PS: channels split in half, the second half flipped along
    length and channels; Ph: the RC sequence run separately, its output flipped along length; then
    the mean of the gathered positions arange(-w // 2, w // 2 + 1) + L // 2, clamped."""
    with torch.no_grad():
        out_ref = model(ids_of(ref_seq)).last_hidden_state
        out_alt = model(ids_of(alt_seq)).last_hidden_state
        if model.config.rcps:
            channels = out_ref.size(-1)
            rc_ref = out_ref[..., channels // 2:].contiguous().flip(dims=[1, 2])
            rc_alt = out_alt[..., channels // 2:].contiguous().flip(dims=[1, 2])
            out_ref, out_alt = out_ref[..., :channels // 2], out_alt[..., :channels // 2]
        else:
            def rc(seq):
                return "".join(COMPLEMENT[b] for b in reversed(seq))
            rc_ref = model(ids_of(rc(ref_seq))).last_hidden_state.contiguous().flip(dims=[1])
            rc_alt = model(ids_of(rc(alt_seq))).last_hidden_state.contiguous().flip(dims=[1])
    length = out_ref.size(1)
    index = torch.arange(-window // 2, window // 2 + 1) + length // 2
    index = torch.clamp(index, 0, length - 1)

    def gathered(item):
        return torch.gather(item, 1, index[None, :, None].expand(1, -1, item.size(2))).mean(dim=1)

    fwd = torch.cat([gathered(out_ref), gathered(out_alt)], dim=-1)[0].numpy()
    rc = torch.cat([gathered(rc_ref), gathered(rc_alt)], dim=-1)[0].numpy()
    return fwd, rc


def notebook_conjoin(fwd, rc, rcps, test):
    conjoin_train, conjoin_test = (True, False) if rcps else (False, True)
    if (conjoin_train or conjoin_test) if test else conjoin_train:
        x = np.array(fwd)
        x += np.array(rc)
        x /= 2
        return x
    return np.array(fwd)


# SNVs near the start (context reaching before position 1, through the N run), in the middle, and
# near the end of the contig (context reaching past its end); two ALTs at one site and a repeated
# record share their REF pass.
POSITIONS = (500, 10_500, 1_200_000, 1_200_000, 1_200_000, 2_333_100)


def variants_at(fasta):
    out = []
    with pysam.FastaFile(fasta) as f:
        for k, pos in enumerate(POSITIONS):
            base = f.fetch("chr2", pos - 1, pos).upper()
            alts = [b for b in "ACGT" if b != base]
            out.append(VcfRecord("chr2", pos, base, [alts[{3: 1, 4: 1}.get(k, 0)]], k + 1))
    return out


@pytest.mark.parametrize("context", [W, 3001, 4096])  # W: the clamped gather; odd and even lengths
@pytest.mark.parametrize("name", ["ps_fused", "ph_fused"])
def test_paper_features_equal_the_official_computation(name, context, fasta):
    model = golden(name)
    records = variants_at(fasta)
    with Reference(fasta) as reference:
        scorer = VariantScorer(model, reference, ("embed_l2",), W, batch_size=4, keep_features=True,
                               context=context, features="paper")
        results = scorer.score(records)
    for rec, result in zip(records, results):
        ref_seq = context_string(fasta, rec.pos, context)
        assert ref_seq[context // 2] == rec.ref
        alt_seq = ref_seq[:context // 2] + rec.alts[0] + ref_seq[context // 2 + 1:]
        fwd, rc = official_features(model, ref_seq, alt_seq)
        ours = result.features[0]
        assert ours.shape == (2, 2 * model.config.d_model)
        np.testing.assert_allclose(ours[0], fwd, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours[1], rc, rtol=1e-5, atol=1e-5)
        assert result.context_n == ref_seq.count("N")
    past_end = context - context // 2 - (CONTIG_LENGTH - POSITIONS[-1] + 1)
    assert past_end > 0 and context_string(fasta, POSITIONS[-1], context).endswith("N" * past_end)
    assert POSITIONS[0] - 1 - context // 2 < 0  # the first context starts before the contig


@pytest.mark.parametrize("name", ["ps_fused", "ph_fused"])
def test_svm_features_conjoin_per_split_as_the_notebook(name, fasta):
    """extract_features: forward and RC averaged as vep_svm.ipynb does for the model's row (PS: train
    and test; Ph: test only); contexts with 0.5% N or more are left out as the official data were."""
    model = golden(name)
    context = 2048
    records = variants_at(fasta)
    variants = [LabeledVariant(r, k % 2) for k, r in enumerate(records)]
    is_test = np.array([k % 2 == 1 for k in range(len(variants))])
    with Reference(fasta) as reference:
        X, _, _ = extract_features(model, reference, variants, None, W, batch_size=3, context=context,
                                   features="paper", is_test=is_test)
    for k, rec in enumerate(records):
        ref_seq = context_string(fasta, rec.pos, context)
        if ref_seq.count("N") >= 0.005 * context:  # the official filter: near the contig's start and end
            assert np.isnan(X[k]).all()
            continue
        alt_seq = ref_seq[:context // 2] + rec.alts[0] + ref_seq[context // 2 + 1:]
        fwd, rc = official_features(model, ref_seq, alt_seq)
        expected = notebook_conjoin(fwd, rc, model.config.rcps, bool(is_test[k]))
        np.testing.assert_allclose(X[k], expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(X[0]).all() and np.isnan(X[-1]).all() and not np.isnan(X[2]).any()
