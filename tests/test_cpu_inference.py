"""CPU inference: the channels-last mixer (kernels/mixer_cpu.py) against the channels-first path and
the PyTorch twin, golden parity and RC equivariance in each compute dtype, the compute dtype and
thread options (model/precision.py, runtime.set_threads) and their refusals through the console.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, load_model
from caduceus_cli.model.kernels.scan import numba_kernels, selective_scan_torch
from caduceus_cli.model.mamba import BiMambaWrapper
from caduceus_cli.model.precision import (check_dtype, compute_dtype, cpu_bf16_matrix_units, model_autocast,
                                          model_compute_dtype)
from caduceus_cli.model.strands import rc_hidden
from caduceus_cli.model.tokenizer import reverse_complement_ids

from .conftest import DATA, GOLDEN, REPO, console, need_data

pytestmark = pytest.mark.skipif(numba_kernels() is None, reason="numba is not installed (pip install numba)")

# bf16 against the official fp32 outputs of the golden cases (d_model 32, 2 layers, |hidden| up to 3.6):
# measured max 0.027 / 0.041 / 0.027 and mean 0.0043 / 0.0048 / 0.0041 (ps_fused / ps_unfused /
# ph_fused); fp32 is within 2e-6. The bounds leave a factor 2.5-3.
BF16_GOLDEN_MAX, BF16_GOLDEN_MEAN = 0.1, 0.015


def _mixer_module():
    from caduceus_cli.model.kernels import mixer_cpu

    return mixer_cpu


def _wrapper(d_model, seed, tie=True, strategy="add", d_conv=4, bidirectional=True):
    torch.manual_seed(seed)
    m = BiMambaWrapper(d_model, bidirectional=bidirectional, bidirectional_strategy=strategy,
                       bidirectional_weight_tie=tie, d_conv=d_conv)
    with torch.no_grad():  # random weights everywhere, and dt in the trained range
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize("d_model,tie,strategy,d_conv,bidirectional", [
    (32, True, "add", 4, True),       # 64 lanes, the released configuration
    (16, False, "add", 4, True),      # 32 lanes, untied directions: two out_proj
    (24, True, "ew_multiply", 3, True),  # 16 lanes, product of directions, three taps (generic conv)
    (32, True, "add", 4, False),      # one direction
])
@pytest.mark.parametrize("conjugate", [False, True])
def test_channels_last_mixer_matches_the_channels_first_path(d_model, tie, strategy, d_conv, bidirectional,
                                                              conjugate):
    mixer_cpu = _mixer_module()
    m = _wrapper(d_model, seed=d_model + d_conv, tie=tie, strategy=strategy, d_conv=d_conv,
                 bidirectional=bidirectional)
    hidden = torch.randn(3, 77, d_model, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = m(hidden, backend="numba", conjugate=conjugate)
        with mixer_cpu.channels_first():
            want = m(hidden, backend="numba", conjugate=conjugate)
        twin = m(hidden, backend="torch", conjugate=conjugate)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5
    assert (got - twin).abs().max() < 1e-5


def _scan_channels_last(u, xdbl, z, w_dt, dt_bias, A, D, length, reverse=False):
    """The fused scan kernel on (T, C) activations (fp32 or bf16); returns y (T, C) in u's dtype."""
    mixer_cpu = _mixer_module()
    dim = u.shape[1]
    lanes = mixer_cpu.lanes_for(dim)
    y = torch.empty(u.shape, dtype=u.dtype)
    mixer_cpu._scan_kernel(lanes)(
        mixer_cpu._blocks(u, lanes), mixer_cpu._np2(xdbl), mixer_cpu._blocks(z, lanes), 0,
        w_dt.t().contiguous().reshape(-1, dim // lanes, lanes).numpy(), dt_bias.reshape(-1, lanes).numpy(),
        (A.t() * float(mixer_cpu._LOG2E)).contiguous().reshape(-1, dim // lanes, lanes).numpy(),
        D.reshape(-1, lanes).numpy(), np.zeros((1, 1, lanes), dtype=np.float32), mixer_cpu._blocks(y, lanes),
        length, reverse, False)
    return y


def _scan_inputs(seqs, length, dim=64, n=16, rank=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = seqs * length
    u, z = torch.randn(rows, dim, generator=g), torch.randn(rows, dim, generator=g)
    xdbl = torch.randn(rows, rank + 2 * n, generator=g)
    w_dt = torch.randn(dim, rank, generator=g) * 0.3
    dt_bias = torch.randn(dim, generator=g) * 0.5 - 2.0
    A = -(torch.rand(dim, n, generator=g) * 4 + 0.05)
    D = torch.randn(dim, generator=g)
    return u, xdbl, z, w_dt, dt_bias, A, D


def _twin(u, xdbl, z, w_dt, dt_bias, A, D, length, reverse=False):
    """The PyTorch twin on the same (T, C) inputs, in fp32; time reversed by flipping."""
    seqs, dim, n, rank = u.shape[0] // length, u.shape[1], A.shape[1], w_dt.shape[1]

    def seq_first(t):  # (T, C) -> (seqs, C, L), reversed in time when asked
        t = t.float().reshape(seqs, length, -1).transpose(1, 2)
        return t.flip(-1) if reverse else t

    x = seq_first(xdbl)
    delta = torch.einsum("cr,brl->bcl", w_dt, x[:, :rank])
    y = selective_scan_torch(seq_first(u), delta, A, x[:, rank:rank + n], x[:, rank + n:], D, seq_first(z),
                             dt_bias, delta_softplus=True)
    y = y.flip(-1) if reverse else y
    return y.transpose(1, 2).reshape(-1, dim)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 7, 300])
def test_fused_scan_matches_the_torch_twin_in_fp32(length, reverse):
    args = _scan_inputs(3, length, seed=length)
    got = _scan_channels_last(*args, length, reverse)
    want = _twin(*args, length, reverse)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 1e-4 * max(1.0, want.abs().max().item())


def test_fused_scan_long_sequence_does_not_drift():
    """20,000 steps: the polynomial exp and the series softplus do not accumulate error."""
    args = _scan_inputs(1, 20_000, seed=7)
    got, want = _scan_channels_last(*args, 20_000), _twin(*args, 20_000)
    assert torch.isfinite(got).all()
    assert ((got - want).norm() / want.norm()).item() < 1e-5


def test_fused_scan_with_bf16_inputs_rounds_only_the_output():
    """bf16 in and out, fp32 inside: the twin on the same bf16 inputs, then rounded, agrees within
    one bf16 rounding (2^-8 relative) of the output."""
    u, xdbl, z, w_dt, dt_bias, A, D = _scan_inputs(2, 200, seed=9)
    u, xdbl, z = u.bfloat16(), xdbl.bfloat16(), z.bfloat16()
    got = _scan_channels_last(u, xdbl, z, w_dt, dt_bias, A, D, 200)
    want = _twin(u, xdbl, z, w_dt, dt_bias, A, D, 200)
    assert got.dtype == torch.bfloat16
    err = (got.float() - want).abs() / want.abs().clamp_min(1e-3)
    assert err.max() < 2 ** -7


def test_decays_past_fp32_range_and_denormals_stay_finite():
    u, xdbl, z, w_dt, dt_bias, A, D = _scan_inputs(1, 500, seed=4)
    got = _scan_channels_last(u, xdbl, z, w_dt, dt_bias + 6.0, A * 200, D, 500)
    want = _twin(u, xdbl, z, w_dt, dt_bias + 6.0, A * 200, D, 500)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() < 1e-3


# -- whole models --------------------------------------------------------------------------------

def _golden(case):
    folder = GOLDEN / case
    return folder, torch.from_numpy(np.load(folder / "input_ids.npy"))


@pytest.mark.parametrize("case", ["ps_fused", "ps_unfused", "ph_fused"])
def test_golden_parity_in_fp32_and_bf16(case):
    folder, ids = _golden(case)
    hidden = np.load(folder / "hidden.npy")
    for dtype, max_err, mean_err in (("fp32", 1e-4, 1e-5), ("bf16", BF16_GOLDEN_MAX, BF16_GOLDEN_MEAN)):
        model = load_model(folder / "checkpoint", backend="numba", dtype=dtype)
        with torch.no_grad(), model_autocast(model):
            out = model(ids).last_hidden_state.float().numpy()
        err = np.abs(out - hidden)
        assert err.max() < max_err and err.mean() < mean_err, (dtype, err.max(), err.mean())
        if dtype == "bf16":
            assert err.max() > 1e-4  # bf16 matmuls did run


def test_ps_stays_rc_equivariant_in_bf16():
    """A strand and its reverse complement run as rows of one batch through the same arithmetic,
    so equivariance holds in bf16 too (measured: exactly; bound 1e-5)."""
    torch.manual_seed(5)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", d_model=32, n_layer=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.backend, model.compute_dtype = "numba", "bf16"
    ids = torch.randint(7, 11, (2, 301), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), model_autocast(model):
        out = model(ids).last_hidden_state.float()
        out_rc = model(reverse_complement_ids(ids)).last_hidden_state.float()
    assert (out_rc - rc_hidden(out)).abs().max() < 1e-5


# -- compute dtype and threads --------------------------------------------------------------------

def test_compute_dtype_names_and_auto(monkeypatch):
    import caduceus_cli.model.precision as precision

    assert check_dtype(None) == "auto" and check_dtype("FP32") == "fp32" and check_dtype("bfloat16") == "bf16"
    assert compute_dtype("fp32", "cpu") == torch.float32 and compute_dtype("bf16", "cpu") == torch.bfloat16
    assert compute_dtype("auto", "cuda") == torch.bfloat16
    want = torch.bfloat16 if cpu_bf16_matrix_units() else torch.float32
    assert compute_dtype("auto", "cpu") == want
    monkeypatch.setattr(precision, "cpu_bf16_matrix_units", lambda: None)
    assert compute_dtype("auto", "cpu") == torch.float32  # a laptop without bf16 units keeps fp32
    for bad in ("fp16", "float16", "half", ""):
        with pytest.raises(CaduceusError, match="--dtype must be one of auto, fp32, bf16"):
            check_dtype(bad)


def test_loading_keeps_fp32_weights_and_records_the_compute_dtype():
    model = load_model(GOLDEN / "ps_fused" / "checkpoint", dtype="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.compute_dtype == "bf16" and model_compute_dtype(model) == torch.bfloat16
    assert load_model(GOLDEN / "ps_fused" / "checkpoint").compute_dtype == "auto"


def test_set_threads_sets_torch_and_refuses_nonsense():
    from caduceus_cli.runtime import cpu_threads, set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1 and cpu_threads() == 1
        for bad in (0, -2, 1.5, "2", True):
            with pytest.raises(CaduceusError, match=r"--threads .* (is out of range|is not a whole number)"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


# -- real records: bf16 and fp32 scores agree ---------------------------------------------------

# Measured on 200 records of the 1000 Genomes chr20 slice (docs/performance.md, "CPU precision"),
# bundled model, window 1,024: the largest |bf16 - fp32| was 0.012 (llr, values -3.8..3.3), 6.2e-7
# (embed_cos, values up to 3.3e-5) and 7.3e-4 (embed_l2, values up to 0.049); bounds: 3x that.
SCORE_TOLERANCE = {"llr": 0.036, "embed_cos": 1.9e-6, "embed_l2": 2.2e-3}


def _number(cell: str) -> float:
    return float("nan") if cell == "." else float(cell)  # '.': not defined (llr of an indel)


def test_bf16_and_fp32_scores_agree_on_real_records(tmp_path):
    from caduceus_cli.pipelines.variants import score_variants

    vcf_gz = need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    fasta = need_data("variants", "1kgp_grch37_chr20_1-2Mb.fa")
    lines = gzip.open(vcf_gz, "rt").read().splitlines()
    records = [ln for ln in lines if not ln.startswith("#")][:12]
    (tmp_path / "in.vcf").write_text("\n".join([ln for ln in lines if ln.startswith("#")] + records) + "\n")
    scores = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / f"{dtype}.tsv"
        score_variants(str(tmp_path / "in.vcf"), str(fasta), str(out), window=1024, batch_size=8, dtype=dtype)
        rows = [ln.split("\t") for ln in out.read_text().splitlines() if not ln.startswith("##")]
        header = rows[0]
        scores[dtype] = {c: np.array([_number(r[header.index(c)]) for r in rows[1:]]) for c in SCORE_TOLERANCE}
    for column, tolerance in SCORE_TOLERANCE.items():
        a, b = scores["fp32"][column], scores["bf16"][column]
        assert len(a) == 12 and np.isfinite(a).sum() >= 10
        a, b = a[np.isfinite(a)], b[np.isfinite(a)]
        assert np.abs(a - b).max() < tolerance, (column, np.abs(a - b).max())
        assert np.abs(a - b).max() > 0  # the bf16 run did run in bf16


# -- refusals through the console script ----------------------------------------------------------

def _one_line_error(result, needle):
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), result.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("option,value,needle,commands", [
    ("--dtype", "fp16", "--dtype must be one of auto, fp32, bf16", "all"),
    ("--threads", "0", "--threads 0 is out of range: give a whole number from 1 to 256", "some"),
    ("--threads", "two", "'--threads'", "some"),
])
def test_bad_dtype_and_threads_are_one_line_and_leave_nothing(small_ps_dir, tmp_path, option, value, needle, commands):
    fasta = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"
    genome = REPO / "caduceus_cli" / "data" / "examples" / "synthetic_genome.fa"
    (tmp_path / "in.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    runs = [("score-variants", tmp_path / "in.vcf", "-f", fasta, "-m", small_ps_dir),
            ("predict", small_ps_dir, tmp_path / "x.csv"),
            ("embed", genome, "-m", small_ps_dir, "--window", "64"),
            ("finetune", "probe", tmp_path / "x.csv"),
            ("benchmark", "speed")]
    for args in runs if commands == "all" else runs[:2]:
        out = tmp_path / "out.tsv"
        _one_line_error(console(*args, "-o", out, option, value), needle)
        assert not out.exists()


@pytest.mark.parametrize("command", ["ism", "track", "calibrate"])
def test_interpretation_commands_refuse_bad_threads_and_dtype_in_one_line(command, tmp_path):
    fasta = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"
    need_data("variants", fasta.name)
    args = {"ism": ("ism", "-f", fasta, "-r", "z:5001-5010"), "track": ("track", fasta, "-r", "z:5001-5400"),
            "calibrate": ("calibrate", "-f", fasta)}[command]
    out = tmp_path / ("out.bw" if command == "track" else "out.parquet")
    for option, value, needle in (("--threads", "0", "--threads 0 is out of range: give a whole number from 1 to 256"),
                                  ("--dtype", "fp16", "--dtype must be one of auto, fp32, bf16")):
        _one_line_error(console(*args, "-o", out, option, value), needle)
        assert list(tmp_path.iterdir()) == []
