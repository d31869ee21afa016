"""Model parity with the official implementation, RC equivariance, backends, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caduceus_cli.model import (CaduceusConfig, CaduceusForMaskedLM, CaduceusForSequenceClassification,
                                load_model, rc_hidden, reverse_complement_ids, save_model, tokenize)
from caduceus_cli.model.kernels.scan import selective_scan_reference, selective_scan_torch
from caduceus_cli.pipelines.inference import embed_tokens

from .conftest import GOLDEN

CASES = ["ps_fused", "ps_unfused", "ph_fused"]


@pytest.mark.parametrize("case", CASES)
def test_golden_parity_cpu_fp32(case):
    folder = GOLDEN / case
    model = load_model(folder / "checkpoint", backend="torch")
    ids = torch.from_numpy(np.load(folder / "input_ids.npy"))
    with torch.no_grad():
        out = model(ids)
    hidden, logits = np.load(folder / "hidden.npy"), np.load(folder / "logits.npy")
    assert out.last_hidden_state.shape == hidden.shape
    assert out.logits.shape == logits.shape
    assert np.abs(out.last_hidden_state.numpy() - hidden).max() < 1e-4
    assert np.abs(out.logits.numpy() - logits).max() < 1e-4


def test_golden_ps_fused_reproduces_the_official_half_swap():
    """Treating the fused PS block like the unfused one would still load but miss by O(1)."""
    folder = GOLDEN / "ps_fused"
    cfg = json.loads((folder / "checkpoint" / "config.json").read_text())
    model = load_model(folder / "checkpoint")
    model.backbone.config.fused_add_norm = False  # blocks then read channels [:d] as forward: no swap
    ids = torch.from_numpy(np.load(folder / "input_ids.npy"))
    with torch.no_grad():
        wrong = model(ids).last_hidden_state.numpy()
    assert cfg["fused_add_norm"] is True
    assert np.abs(wrong - np.load(folder / "hidden.npy")).max() > 1e-2


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 129])
def test_torch_scan_matches_stepwise_reference(groups, length, monkeypatch):
    monkeypatch.setenv("CADUCEUS_SCAN_BLOCK", "50")  # force several channel blocks
    g = torch.Generator().manual_seed(length * 10 + groups)
    b, d, n = 2, 6, 4
    u, delta, z = (torch.randn(b, d, length, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g) * 4
    B, C = (torch.randn(b, groups, n, length, generator=g) for _ in range(2))
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    got = selective_scan_torch(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    want = selective_scan_reference(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    assert (got.double() - want).abs().max() < 1e-5


def _rand_ids(rng, batch, length):
    return torch.from_numpy(rng.integers(7, 12, size=(batch, length)))  # A C G T N


ps_configs = st.fixed_dictionaries({
    "d_model": st.sampled_from([8, 16]),
    "n_layer": st.integers(1, 4),
    "fused_add_norm": st.booleans(),
    "rms_norm": st.booleans(),
    "residual_in_fp32": st.booleans(),
    "bidirectional_strategy": st.sampled_from(["add", "ew_multiply"]),
    "bidirectional_weight_tie": st.booleans(),
    "length": st.integers(1, 70),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ps_configs)
def test_ps_is_rc_equivariant(params):
    """model(rc(x)) == rc(model(x)) for hidden states and (complement-permuted) logits."""
    length, seed = params.pop("length"), params.pop("seed")
    torch.manual_seed(seed)
    cfg = CaduceusConfig(vocab_size=12, rcps=True, **params)
    model = CaduceusForMaskedLM(cfg).eval()
    # Random weights everywhere (norms too), so no symmetry comes from the initialisation.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ids = _rand_ids(np.random.default_rng(seed), 2, length)
    rc_ids = reverse_complement_ids(ids)
    with torch.no_grad():
        out, out_rc = model(ids), model(rc_ids)
    assert torch.allclose(out_rc.last_hidden_state, rc_hidden(out.last_hidden_state), atol=1e-5, rtol=0)
    comp = torch.tensor(cfg.complement_list())
    assert torch.allclose(out_rc.logits, out.logits.flip(1)[..., comp], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_pooled_outputs_are_strand_invariant(variant):
    torch.manual_seed(1)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d_model=16, n_layer=3)).eval()
    ids = _rand_ids(np.random.default_rng(2), 3, 50)
    rc_ids = reverse_complement_ids(ids)
    for pool in ("mean", "max", "center"):
        a = embed_tokens(model, ids, pool, center_width=10)
        b = embed_tokens(model, rc_ids, pool, center_width=10)
        assert torch.allclose(a, b, atol=1e-6)
    # Per position, the features of rc(x) are those of x read from the other end.
    per_pos, per_pos_rc = embed_tokens(model, ids, "none"), embed_tokens(model, rc_ids, "none")
    assert per_pos.shape == (3, 50, 16)
    assert torch.allclose(per_pos_rc.flip(1), per_pos, atol=1e-6)
    if variant == "ph":  # without conjoining, Ph is not strand-invariant
        a = embed_tokens(model, ids, "mean", conjoin=False)
        b = embed_tokens(model, rc_ids, "mean", conjoin=False)
        assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("length, width", [(50, 9), (51, 10), (51, 9), (8, 30)])
def test_centre_pooling_is_strand_invariant_for_any_parity(length, width):
    """Defect: the shared centre pooling took an off-centre window when length and width differ in
    parity, so PS centre-pooled features of x and rc(x) differed (only embed corrected it)."""
    torch.manual_seed(5)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", d_model=16, n_layer=2)).eval()
    ids = _rand_ids(np.random.default_rng(6), 2, length)
    a = embed_tokens(model, ids, "center", center_width=width)
    b = embed_tokens(model, reverse_complement_ids(ids), "center", center_width=width)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("variant", ["ps", "ph"])
@pytest.mark.parametrize("pooling", ["mean", "max", "center", "first", "last"])
def test_classifier_is_strand_invariant(variant, pooling):
    """Each strand is pooled in its own 5'->3' frame, so every pooling gives the same logits on both
    strands (first: the 5' base of each strand), with or without right padding."""
    torch.manual_seed(3)
    model = CaduceusForSequenceClassification(CaduceusConfig.small(variant, 16, 2), num_labels=3,
                                              pooling=pooling, center_width=4).eval()
    ids = _rand_ids(np.random.default_rng(4), 2, 33)
    lengths = torch.tensor([33, 26])
    padded = ids.clone()
    padded[1, 26:] = 4
    rc_padded = reverse_complement_ids(padded)
    rc_padded[1] = torch.cat([reverse_complement_ids(padded[1, :26]), torch.full((7,), 4)])
    with torch.no_grad():
        a, b = model(ids), model(reverse_complement_ids(ids))
        c, d = model(padded, lengths), model(rc_padded, lengths)
    assert a.shape == (2, 3)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(c, d, atol=1e-5)
    assert torch.allclose(a[0], c[0], atol=1e-5)  # a full-length row is unchanged by the lengths argument


def test_intermediate_layers_are_equivariant_and_last_is_final_hidden():
    model = load_model(GOLDEN / "ps_fused" / "checkpoint")
    ids = _rand_ids(np.random.default_rng(5), 1, 40)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        out_rc = model(reverse_complement_ids(ids), output_hidden_states=True)
    assert len(out.hidden_states) == model.config.n_layer + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    for h, h_rc in zip(out.hidden_states, out_rc.hidden_states):
        assert torch.allclose(h_rc, rc_hidden(h), atol=1e-5)


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_save_and_reload_is_bit_identical(tmp_path, variant):
    torch.manual_seed(5)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 16, 2)).eval()
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    from safetensors.numpy import load_file

    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any(k.startswith("lm_head") and k.endswith("weight") for k in stored)  # tied head omitted
    ids = _rand_ids(np.random.default_rng(0), 2, 20)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_loads_pytorch_model_bin_and_tied_head_when_present(tmp_path):
    src = GOLDEN / "ph_fused" / "checkpoint"
    model = load_model(src)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # includes the tied lm_head.weight
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((src / "config.json").read_text())
    again = load_model(tmp_path / "bin")
    assert again.source["weights"] == "pytorch_model.bin"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_tokenizer_vocabulary_and_rc():
    ids = tokenize(["ACGTN", "acgtn", "RYKMN"])
    assert ids.tolist() == [[7, 8, 9, 10, 11], [7, 8, 9, 10, 11], [11, 11, 11, 11, 11]]
    assert ids.dtype == torch.int64
    assert reverse_complement_ids(tokenize("AACGN")).tolist() == tokenize("NCGTT").tolist()
    from caduceus_cli.model.tokenizer import reverse_complement

    assert reverse_complement("AAcgN") == "NcgTT"
    from caduceus_cli.errors import CaduceusError

    with pytest.raises(CaduceusError, match="position 3: '1'"):
        tokenize("AC1T")
    with pytest.raises(CaduceusError, match="different lengths"):
        tokenize(["AC", "ACG"])
    assert tokenize(["AC", "ACG"], pad=True).tolist() == [[7, 8, 4], [7, 8, 9]]
