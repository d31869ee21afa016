"""pipelines/inference.py: equal-length batches, strand conjoining against the official outputs of
the golden checkpoints, one pooling vocabulary, and the torch-free DNA alphabet."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from caduceus_cli.choices import PER_POSITION, POOLINGS, check_pooling
from caduceus_cli.dna import complement_ids, encode, reverse_complement, reverse_complement_tokens
from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import CaduceusConfig, load_model, reverse_complement_ids, tokenize
from caduceus_cli.pipelines.inference import (batched, centre_logits, embed_tokens, equal_length_batches,
                                              pool_positions, pooled_features, strand_features)

from .conftest import GOLDEN, REPO

torch.set_num_threads(1)


def golden(case: str):
    folder = GOLDEN / case
    model = load_model(folder / "checkpoint", device="cpu", backend="torch", dtype="fp32")  # exact comparisons
    return (model, torch.from_numpy(np.load(folder / "input_ids.npy")), np.load(folder / "hidden.npy"),
            np.load(folder / "logits.npy"))


# -- batches -------------------------------------------------------------------------------------
def test_equal_length_batches_one_length_longest_first_in_input_order():
    lengths = np.array([5, 3, 5, 9, 3, 5, 5, 3])
    batches = equal_length_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[3], [0, 2], [5, 6], [1, 4], [7]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    # max_tokens bounds the rows of a batch by its length (one row at the least)
    assert [b.tolist() for b in equal_length_batches(lengths, 8, max_tokens=10)] == [[3], [0, 2], [5, 6], [1, 4, 7]]
    assert [len(b) for b in equal_length_batches(np.array([50, 50]), 8, max_tokens=10)] == [1, 1]
    assert equal_length_batches(np.array([], dtype=np.int64), 4) == []


def test_batched_returns_rows_in_input_order_and_counts_progress():
    rng = np.random.default_rng(0)
    tokens = [rng.integers(7, 11, size=n).astype(np.uint8) for n in (4, 7, 4, 2, 7, 7)]
    seen, done = [], []

    def compute(ids):
        seen.append(tuple(ids.shape))
        assert ids.dtype == torch.int64
        return torch.stack([ids.float().sum(1), torch.full((len(ids),), float(ids.shape[1]))], 1)

    out = batched(tokens, 2, compute, width=2, device=torch.device("cpu"), progress=done.append)
    np.testing.assert_array_equal(out, [[t.sum(), len(t)] for t in tokens])
    assert seen == [(2, 7), (1, 7), (2, 4), (1, 2)] and sum(done) == len(tokens)
    assert batched([], 2, compute, width=3, device=torch.device("cpu")).shape == (0, 3)


# -- strands, against the official implementation ------------------------------------------------
@pytest.mark.parametrize("case", ["ps_fused", "ps_unfused"])
def test_ps_strands_are_the_two_halves_of_the_official_hidden_state(case):
    model, ids, hidden, _ = golden(case)
    d = model.config.d_model
    feats = strand_features(model, ids).numpy()  # (B, L, d, 2)
    assert feats.shape == (*ids.shape, d, 2)
    np.testing.assert_allclose(feats[..., 0], hidden[..., :d], atol=1e-4)
    np.testing.assert_allclose(feats[..., 1], hidden[..., d:][..., ::-1], atol=1e-4)  # RC strand, channels back


def test_ph_conjoining_is_the_official_pass_on_the_reverse_complement():
    model, ids, hidden, _ = golden("ph_fused")
    assert torch.equal(ids[1], reverse_complement_ids(ids[:1])[0])  # row 1 of the case is rc(row 0)
    feats = strand_features(model, ids[:1]).numpy()[0]  # (L, d, 2)
    np.testing.assert_allclose(feats[..., 0], hidden[0], atol=1e-4)
    np.testing.assert_allclose(feats[..., 1], hidden[1][::-1], atol=1e-4)  # flipped back onto the forward strand
    assert strand_features(model, ids[:1], conjoin=False).shape[-1] == 1


@pytest.mark.parametrize("case", ["ps_fused", "ph_fused"])
def test_centre_logits_combine_the_strands_as_the_official_logits_do(case):
    model, ids, _, logits = golden(case)
    centre = ids.shape[1] // 2 + 3
    got = centre_logits(model, ids[:1], centre).numpy()[0]
    if model.config.rcps:  # one pass: the equivariant LM head already holds both strands
        expected = logits[0, centre]
    else:
        complement = model.config.complement_list()
        expected = 0.5 * (logits[0, centre] + logits[1, ids.shape[1] - 1 - centre][complement])
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("case", ["ps_fused", "ph_fused"])
def test_pooled_features_of_the_classifier_path_agree_with_per_position_pooling(case):
    model, ids, _, _ = golden(case)
    for pool in POOLINGS:
        per_position = embed_tokens(model, ids, pool, center_width=7)
        classifier = pooled_features(model, ids, pooling=pool, center_width=7)
        torch.testing.assert_close(per_position, classifier, atol=1e-5, rtol=1e-4)


# -- pooling -------------------------------------------------------------------------------------
def test_one_pooling_vocabulary():
    for pool in POOLINGS:
        assert check_pooling(pool) == pool
    assert check_pooling(PER_POSITION, per_position=True) == "none"
    with pytest.raises(CaduceusError, match=r"--pool must be one of mean, max, center, first, last, got 'none'"):
        check_pooling("none")
    with pytest.raises(CaduceusError, match=r"mean, max, center, first, last, none, got 'avg'"):
        check_pooling("avg", per_position=True)


def test_first_and_last_take_each_strands_own_end():
    features = torch.arange(2 * 5 * 3 * 2, dtype=torch.float32).reshape(2, 5, 3, 2)  # (B, L, d, S)
    first, last = pool_positions(features, "first"), pool_positions(features, "last")
    torch.testing.assert_close(first[..., 0], features[:, 0, :, 0])
    torch.testing.assert_close(first[..., 1], features[:, -1, :, 1])  # the RC strand's own first base
    torch.testing.assert_close(last[..., 0], features[:, -1, :, 0])
    torch.testing.assert_close(last[..., 1], features[:, 0, :, 1])
    assert pool_positions(features, "none") is features
    torch.testing.assert_close(pool_positions(features, "center", 1), features[:, 2])  # odd length: one base
    torch.testing.assert_close(pool_positions(features, "center", 2), features[:, 1:4].mean(1))  # grown to 3


@pytest.mark.parametrize("pool", POOLINGS)
def test_ps_pooled_embeddings_do_not_depend_on_the_strand(pool):
    model, ids, _, _ = golden("ps_fused")
    a = embed_tokens(model, ids[:1], pool, center_width=10)
    b = embed_tokens(model, reverse_complement_ids(ids[:1]), pool, center_width=10)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# -- the DNA alphabet ----------------------------------------------------------------------------
def test_dna_alphabet_imports_without_torch():
    code = ("import sys\n"
            "import caduceus_cli.dna as dna, caduceus_cli.genome.windows, caduceus_cli.genome.labeled\n"
            "assert dna.reverse_complement('AACgN') == 'NcGTT'\n"
            "assert dna.encode('ACGTn').tolist() == [7, 8, 9, 10, 11]\n"
            "print([m for m in ('torch', 'caduceus_cli.model') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_one_complement_for_strings_token_arrays_tensors_and_the_model():
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGTNacgtRY"), size=200))
    ids = encode(seq)
    np.testing.assert_array_equal(reverse_complement_tokens(ids), encode(reverse_complement(seq)))
    rows = np.stack([ids, ids[::-1]])
    np.testing.assert_array_equal(reverse_complement_tokens(rows)[1], reverse_complement_tokens(ids[::-1]))
    assert reverse_complement_ids(tokenize(seq.upper()))[0].tolist() == reverse_complement_tokens(ids).tolist()
    assert CaduceusConfig(d_model=8, n_layer=1).complement_list() == complement_ids(16)
    assert complement_ids(12)[7:11] == [10, 9, 8, 7]
