"""ism, track, calibrate and score-variants' wt-marginal LLR and percentiles, on the real 1000
Genomes reference (contig z: GRCh37 chr20:1,000,001-2,000,000) and tiny random checkpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from caduceus_cli.dna import VOCAB, encode, reverse_complement
from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.fasta import Reference
from caduceus_cli.pipelines import inference
from caduceus_cli.pipelines.interpret.calibrate import calibrate
from caduceus_cli.pipelines.interpret.ism import ism
from caduceus_cli.pipelines.interpret.marginal import TileGrid, base_log_probs, interval_logits
from caduceus_cli.pipelines.interpret.track import track_values, write_track
from caduceus_cli.pipelines.variants import score_variants
from caduceus_cli.pipelines.variants.background import read_background

from .conftest import DATA, REPO, console, need_data

FA = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa"
W, FLANK = 33, 8  # small windows: each test takes seconds


@pytest.fixture(scope="module", autouse=True)
def real_reference(one_torch_thread):
    need_data("variants", FA.name)


def table(path) -> dict:
    return pq.read_table(str(path)).to_pydict()


def snv_vcf(path: Path, positions: list[int], reference_path=FA, contig: str = "z") -> Path:
    """One multi-allelic record per position, its ALTs the three other bases (shuffled order)."""
    with Reference(reference_path) as ref:
        lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
        for pos in positions:
            base = ref.fetch(contig, pos - 1, pos)[0].upper()
            alts = [b for b in "TGCA" if b != base]
            lines.append(f"{contig}\t{pos}\t.\t{base}\t{','.join(alts)}\t.\t.\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


def tsv_scores(path: Path, column: str) -> dict[tuple[int, str], float]:
    rows = [ln.rstrip("\n").split("\t") for ln in open(path) if not ln.startswith("##")]
    head, body = rows[0], rows[1:]
    at = head.index(column)
    return {(int(r[1]), r[4]): float(r[at]) for r in body if r[at] != "NA"}


def test_masked_and_embedding_ism_equal_score_variants_at_the_same_positions(ps, tmp_path):
    positions = list(range(2001, 2011))
    result = ism(str(FA), region="z:2001-2010", methods="masked,embedding", model=ps, window=W)
    rows = result["table"].to_pydict()
    assert len(rows["pos"]) == 30 and rows["pos"][:3] == [2001] * 3
    score_variants(str(snv_vcf(tmp_path / "v.vcf", positions)), str(FA), str(tmp_path / "s.tsv"), model=ps,
                   scores="llr,embed_cos", window=W, context=W)
    llr, cos = tsv_scores(tmp_path / "s.tsv", "llr"), tsv_scores(tmp_path / "s.tsv", "embed_cos")
    assert len(llr) == 30
    for pos, alt, masked, embedding in zip(rows["pos"], rows["alt"], rows["masked"], rows["embedding"]):
        assert masked == pytest.approx(llr[(pos, alt)], abs=1e-5)
        assert embedding == pytest.approx(cos[(pos, alt)], rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_wt_marginal_of_one_tile_is_the_logits_of_one_forward_pass(variant, request, tmp_path):
    model = request.getfixturevalue(variant)
    grid = TileGrid(64, FLANK)
    k = 40  # tile 40 of contig z: input [k * core - flank, ... + 64)
    start, end = grid.input_bounds(k)
    with Reference(FA) as ref:
        ids = torch.from_numpy(encode(ref.fetch("z", start, end)[0]).astype(np.int64))[None]
        logits = interval_logits(model, ref, "z", grid.core_start(k), grid.core_start(k + 1), grid, 4)
    with torch.no_grad():
        forward = model(ids).logits[0].float()
        if variant == "ph":  # post-hoc conjoining: the reverse-complement pass, flipped back, averaged
            rc_ids = torch.from_numpy(encode(reverse_complement(ref_text(start, end))).astype(np.int64))[None]
            rc = model(rc_ids).logits[0].float().flip(0)[:, model.backbone.complement_ids]
            forward = 0.5 * (forward + rc)
    expected = forward[FLANK:FLANK + grid.core, VOCAB["A"]:VOCAB["N"] + 1].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # ism's wt-marginal column is log p(alt) - log p(ref) of that pass
    first = grid.core_start(k) + 1
    rows = ism(str(FA), region=f"z:{first}-{first + 9}", methods="wt-marginal", model=model, window=64,
               flank=FLANK)["table"].to_pydict()
    for pos, ref_base, alt, value in zip(rows["pos"], rows["ref"], rows["alt"], rows["wt_marginal"]):
        row = expected[pos - first]
        assert value == pytest.approx(row["ACGTN".index(alt)] - row["ACGTN".index(ref_base)], abs=1e-5)


def ref_text(start: int, end: int) -> str:
    with Reference(FA) as ref:
        return ref.fetch("z", start, end)[0]


def test_ps_ism_of_a_region_and_its_reverse_complement_are_complementary(ps, tmp_path):
    body = ref_text(5000, 5200).upper()
    fasta = tmp_path / "strands.fa"
    fasta.write_text(f">fwd\n{body}\n>rev\n{reverse_complement(body)}\n")
    fwd = ism(str(fasta), region="fwd:81-100", methods="masked,embedding", model=ps, window=W)["table"].to_pydict()
    rev = ism(str(fasta), region="rev:101-120", methods="masked,embedding", model=ps, window=W)["table"].to_pydict()
    complement = dict(zip("ACGT", "TGCA"))
    mirrored = {(201 - p, complement[a]): (m, e) for p, a, m, e in zip(rev["pos"], rev["alt"], rev["masked"],
                                                                         rev["embedding"])}
    assert len(mirrored) == 60
    for p, a, m, e in zip(fwd["pos"], fwd["alt"], fwd["masked"], fwd["embedding"]):
        assert m == pytest.approx(mirrored[(p, a)][0], abs=1e-4)
        assert e == pytest.approx(mirrored[(p, a)][1], rel=1e-3, abs=1e-6)


def test_ism_bigwig_and_track_read_back_with_the_values_written(ps, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    out, bw = tmp_path / "ism.parquet", tmp_path / "ism.bw"
    ism(str(FA), region="z:3001-3012,z:3101-3104", output=str(out), methods="wt-marginal,masked", model=ps,
        window=W, flank=FLANK, bigwig=str(bw), bigwig_stat="min")
    rows = table(out)
    per_base = np.array(rows["wt_marginal"]).reshape(-1, 3).min(1)
    handle = pyBigWig.open(str(bw))
    assert handle.chroms() == {"z": 1_000_000}
    written = np.concatenate([handle.values("z", 3000, 3012), handle.values("z", 3100, 3104)])
    np.testing.assert_allclose(written, per_base, rtol=1e-6)
    assert np.isnan(handle.values("z", 3012, 3013)[0])  # between the regions: no value
    provenance = json.loads((tmp_path / "ism.bw.json").read_text())
    assert provenance["method"] == "wt-marginal" and provenance["statistic"] == "min"
    # the track's mean-alt-llr is the mean wt-marginal LLR of ism on the same grid
    write_track(str(FA), output=str(tmp_path / "t.bw"), region="z:3001-3012", stats="mean-alt-llr,entropy",
                model=ps, window=W, flank=FLANK)
    track = pyBigWig.open(str(tmp_path / "t.mean-alt-llr.bw"))
    mean_alt = np.array(rows["wt_marginal"]).reshape(-1, 3)[:12].mean(1)
    np.testing.assert_allclose(track.values("z", 3000, 3012), mean_alt, rtol=1e-5, atol=1e-6)
    entropy = np.array(pyBigWig.open(str(tmp_path / "t.entropy.bw")).values("z", 3000, 3012))
    assert ((entropy > 0) & (entropy <= 2)).all()


def test_track_statistics_from_the_distribution():
    logits = np.array([[0.0, 0.0, 0.0, 0.0, 5.0], [3.0, 1.0, 0.0, -1.0, 0.0], [1.0, 2.0, 3.0, 4.0, 0.0]])
    ref = np.array([VOCAB["A"], VOCAB["A"], VOCAB["N"]], dtype=np.uint8)
    values = track_values(logits, ref, ("logp-ref", "entropy", "mean-alt-llr"))
    assert values["logp-ref"][0] == pytest.approx(np.log(0.25))  # N's logit does not count
    assert values["entropy"][0] == pytest.approx(2.0)
    lp = base_log_probs(logits[1])
    assert values["mean-alt-llr"][1] == pytest.approx((lp[1:] - lp[0]).mean(), rel=1e-5)
    assert all(np.isnan(values[s][2]) for s in values)  # an N base has no value


def test_wt_marginal_llr_does_not_depend_on_order_or_chunks_and_matches_ism(ps, tmp_path):
    positions = [7001, 7002, 7040, 9000, 7003, 12050]
    vcf = snv_vcf(tmp_path / "v.vcf", positions)
    common = dict(model=ps, scores="llr", window=W, context=W, llr_method="wt-marginal", flank=FLANK)
    score_variants(str(vcf), str(FA), str(tmp_path / "a.tsv"), chunk_size=1024, **common)
    score_variants(str(vcf), str(FA), str(tmp_path / "b.tsv"), chunk_size=2, **common)
    a, b = tsv_scores(tmp_path / "a.tsv", "llr"), tsv_scores(tmp_path / "b.tsv", "llr")
    assert len(a) == 18 and a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-5)
    rows = ism(str(FA), region="z:7001-7003", methods="wt-marginal", model=ps, window=W,
               flank=FLANK)["table"].to_pydict()
    for pos, alt, value in zip(rows["pos"], rows["alt"], rows["wt_marginal"]):
        assert value == pytest.approx(a[(pos, alt)], abs=1e-5)


def test_percentiles_are_within_0_and_100_and_monotone_in_the_score(ps, tmp_path):
    background = tmp_path / "bg.parquet"
    summary = calibrate(str(FA), str(background), n=12, seed=3, model=ps, window=W)
    assert summary["snvs"] == 36
    bg = read_background(background)
    assert bg.metadata["window"] == str(W) and bg.metadata["llr_method"] == "masked"
    assert bg.metadata["seed"] == "3" and len(bg.values["llr"]) == 36
    values = np.concatenate([bg.values["llr"], np.linspace(-50, 50, 101)])
    pct = bg.percentiles("llr", values)
    assert ((pct >= 0) & (pct <= 100)).all() and pct.min() == 0 and pct.max() == 100
    assert (np.diff(pct[np.argsort(values, kind="stable")]) >= 0).all()
    assert bg.percentiles("llr", [bg.values["llr"][0]])[0] == pytest.approx(100 / 36)  # at or below
    # through score-variants: INFO field declared, values in range and ordered like the LLR
    positions = list(range(20001, 20031, 3))
    out = tmp_path / "s.tsv"
    score_variants(str(snv_vcf(tmp_path / "v.vcf", positions)), str(FA), str(out), model=ps, scores="llr",
                   window=W, background=str(background))
    llr, pct = tsv_scores(out, "llr"), tsv_scores(out, "llr_pct")
    keys = sorted(llr, key=llr.get)
    assert all(0 <= pct[k] <= 100 for k in keys)
    assert all(pct[a] <= pct[b] for a, b in zip(keys, keys[1:]))
    vcf_out = tmp_path / "s.vcf"
    score_variants(str(tmp_path / "v.vcf"), str(FA), str(vcf_out), model=ps, scores="llr", window=W,
                   background=str(background))
    text = vcf_out.read_text()
    assert '##INFO=<ID=CADUCEUS_LLR_PCT,Number=A,Type=Float,Description="Percentile (0-100) of CADUCEUS_LLR among 36' in text
    assert "CADUCEUS_LLR_PCT=" in text.splitlines()[-1]


def test_calibration_draw_is_seeded_and_refused_with_other_settings(ps, ph, tmp_path):
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    calibrate(str(FA), str(one), n=5, seed=7, model=ps, window=W)
    calibrate(str(FA), str(two), n=5, seed=7, model=ps, window=W)
    assert table(one) == table(two)
    vcf = snv_vcf(tmp_path / "v.vcf", [30001])
    with pytest.raises(CaduceusError, match="made with model"):
        score_variants(str(vcf), str(FA), str(tmp_path / "x.tsv"), model=ph, scores="llr", window=W,
                       background=str(one))
    with pytest.raises(CaduceusError, match="made with LLR method masked"):
        score_variants(str(vcf), str(FA), str(tmp_path / "x.tsv"), model=ps, scores="llr", window=W,
                       llr_method="wt-marginal", flank=FLANK, background=str(one))
    assert not (tmp_path / "x.tsv").exists()


def test_a_background_of_another_window_context_flank_or_reference_is_refused(ps, tmp_path):
    masked, marginal = tmp_path / "masked.parquet", tmp_path / "marginal.parquet"
    calibrate(str(FA), str(masked), n=3, seed=1, model=ps, window=W)
    calibrate(str(FA), str(marginal), n=3, seed=1, model=ps, window=W, llr_method="wt-marginal", flank=FLANK)
    with Reference(FA) as ref:
        z = ref.fetch("z", 0, 40_000)[0]
    other = tmp_path / "z40k.fa"
    other.write_text(">z\n" + "\n".join(z[i:i + 60] for i in range(0, len(z), 60)) + "\n")
    vcf = snv_vcf(tmp_path / "v.vcf", [30001])
    out = tmp_path / "x.tsv"
    for fasta, background, settings, needle in [
            (FA, masked, {"window": W + 2}, f"made with window {W}, this run uses {W + 2}"),
            (FA, masked, {"window": W, "context": 2 * W}, f"made with context {W}, this run uses {2 * W}"),
            (FA, marginal, {"window": W, "llr_method": "wt-marginal", "flank": FLANK + 2},
             f"made with flank {FLANK}, this run uses {FLANK + 2}"),
            (other, masked, {"window": W}, "made with reference 1kgp_grch37_chr20_1-2Mb.fa")]:
        with pytest.raises(CaduceusError, match=re.escape(needle)):
            score_variants(str(vcf), str(fasta), str(out), model=ps, scores="llr", background=str(background),
                           **settings)
        assert not out.exists()


def test_background_of_another_model_is_refused_on_the_command_line(ps_dir, ph_dir, tmp_path):
    background = tmp_path / "bg.parquet"
    made = console("calibrate", "-f", FA, "-o", background, "--n", "3", "--model", ps_dir, "--window", W, "-q")
    assert made.returncode == 0, made.stderr
    vcf = snv_vcf(tmp_path / "v.vcf", [30001, 30002])
    out = tmp_path / "out.vcf"
    proc = console("score-variants", vcf, "-f", FA, "--model", ph_dir, "--window", W, "--scores", "llr",
                   "--background", background, "-o", out, "-q")
    one_line_error(proc, "made with model", str(ps_dir))
    assert not out.exists()
    info = console("models", "info", ps_dir, "--background", background, "--json")
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert shown["background_matches_model"] is True and shown["background_sites"] == "3"
    assert shown["background_window"] == str(W) and shown["background_llr_snvs"] == 9


def one_line_error(proc, *needles) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("caduceus: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needle", [
    (["ism", "-f", FA, "-r", "chr5:1-10", "-o", "out.parquet"], "contig 'chr5' is not in"),
    (["ism", "-f", FA, "-r", "z:1-900", "--plot", "out.png"], "a logo is readable up to 500 bp"),
    (["ism", "-f", FA, "-r", "z:1-10", "-o", "out.parquet", "--method", "masked,saliency"], "unknown method saliency"),
    (["ism", "-f", FA, "-r", "z:1-10", "-o", "out.tsv"], "end the output name in .parquet"),
    (["ism", "overlap.bed", "-f", FA, "--bigwig", "out.bw"], "overlap"),
    (["ism", "-f", FA, "-r", "z:1-10"], "nothing to write"),
    (["track", FA, "-r", "z:1-100", "-o", "out.wig"], "end the output name in .bw"),
    (["track", FA, "-r", "z:1-100", "-o", "out.bw", "--stat", "gc"], "unknown statistic gc"),
    (["track", FA, "-r", "z:1-100", "-o", "out.bw", "--window", "33", "--flank", "20"], "leaves no position"),
    (["calibrate", "-f", FA, "-o", "out.tsv"], "end the output name in .parquet"),
    (["score-variants", "in.vcf", "-f", FA, "--llr-method", "marginal", "-o", "out.vcf"], "--llr-method must be"),
    (["score-variants", "in.vcf", "-f", FA, "--background", "nope.parquet", "-o", "out.vcf"], "no such file"),
])
def test_bad_input_is_one_line_and_leaves_nothing(args, needle, small_ps_dir, tmp_path):
    snv_vcf(tmp_path / "in.vcf", [40001])
    (tmp_path / "overlap.bed").write_text("z\t0\t10\ta\nz\t5\t20\tb\n")
    before = set(tmp_path.iterdir())
    proc = console(*args, "--model", small_ps_dir, "-q", cwd=tmp_path)
    one_line_error(proc, needle)
    assert set(tmp_path.iterdir()) == before


def interrupt_after(chunks: int):
    """A progress callback that stops the run (as Ctrl-C would) once ``chunks`` chunks are done."""
    seen = []

    def progress(n, resumed=False, **_):
        if not resumed:
            seen.append(n)
            if len(seen) == chunks:
                raise KeyboardInterrupt

    return progress


def test_resumed_ism_and_track_equal_the_uninterrupted_outputs(ps, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    whole, part = tmp_path / "whole.parquet", tmp_path / "part.parquet"
    args = dict(region="z:50001-50030", methods="masked,wt-marginal,embedding", model=ps, window=W, flank=FLANK, chunk_size=5)
    ism(str(FA), output=str(whole), **args)
    with pytest.raises(KeyboardInterrupt):
        ism(str(FA), output=str(part), resume=True, progress=interrupt_after(2), **args)
    assert not part.exists() and any(p.name.endswith(".resume") for p in tmp_path.iterdir())
    with pytest.raises(CaduceusError, match="continue it with --resume"):
        ism(str(FA), output=str(part), **args)
    ism(str(FA), output=str(part), resume=True, **args)
    assert table(part) == table(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.parquet", "whole.parquet"]

    targs = dict(region="z:60001-60400", stats="logp-ref", model=ps, window=W, flank=FLANK, chunk_tiles=2)
    write_track(str(FA), output=str(tmp_path / "whole.bw"), **targs)
    with pytest.raises(KeyboardInterrupt):
        write_track(str(FA), output=str(tmp_path / "part.bw"), resume=True, progress=interrupt_after(3), **targs)
    assert not (tmp_path / "part.bw").exists()
    write_track(str(FA), output=str(tmp_path / "part.bw"), resume=True, **targs)
    a = pyBigWig.open(str(tmp_path / "whole.bw")).values("z", 60000, 60400)
    b = pyBigWig.open(str(tmp_path / "part.bw")).values("z", 60000, 60400)
    assert a == b and not any(np.isnan(a))


def test_classifier_ism_is_the_change_of_the_class_probability(tmp_path):
    from caduceus_cli.model import CaduceusConfig
    from caduceus_cli.model.checkpoint import load_classifier, new_classifier, save_model
    from caduceus_cli.pipelines.finetune.metrics import outputs_from_logits

    torch.manual_seed(5)
    save_model(new_classifier(CaduceusConfig.small("ps", d_model=16, n_layer=1), task="classification",
                              label_names=["neg", "pos"], max_length=40), tmp_path / "clf")
    rows = ism(str(FA), region="z:8001-8024", model=str(tmp_path / "clf"), class_label="pos")["table"].to_pydict()
    assert rows["class"][0] == "pos" and len(rows["classifier"]) == 72
    model = load_classifier(tmp_path / "clf")
    sequence = ref_text(8000, 8024).upper()

    def p_pos(seq: str) -> float:
        return float(outputs_from_logits("classification", inference.predict_logits(model, [encode(seq)], 1))[0, 1])

    for i in (0, 17, 71):
        offset, alt = rows["pos"][i] - 8001, rows["alt"][i]
        mutated = sequence[:offset] + alt + sequence[offset + 1:]
        assert rows["classifier"][i] == pytest.approx(p_pos(mutated) - p_pos(sequence), abs=1e-6)
    with pytest.raises(CaduceusError, match="longer than the 40 bp"):
        ism(str(FA), region="z:8001-8100", model=str(tmp_path / "clf"))
    with pytest.raises(CaduceusError, match="its method is classifier"):
        ism(str(FA), region="z:8001-8010", model=str(tmp_path / "clf"), methods="masked")


def test_ism_plot_draws_a_logo(ps, tmp_path):
    pytest.importorskip("logomaker")
    png = tmp_path / "logo.png"
    ism(str(FA), region="z:9001-9030", methods="wt-marginal", model=ps, window=W, flank=FLANK, plot=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_track_under_torchrun_equals_one_process(ps_dir, tmp_path):
    """Two ranks (gloo on the CPU) share the chunks of tiles and rank 0 writes the bigWigs: the
    values equal a single-process run's at every base."""
    pyBigWig = pytest.importorskip("pyBigWig")
    common = [str(FA), "-r", "z:20001-21500,z:30001-30400", "--stat", "logp-ref,entropy", "-m", str(ps_dir),
              "--window", str(W), "--flank", str(FLANK), "--chunk-tiles", "8", "--device", "cpu", "--dtype", "fp32",
              "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "caduceus_cli", "track", *common, "-o", str(tmp_path / "one.bw")],
                            env=env, timeout=300, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "caduceus_cli", "track", *common, "-o", str(tmp_path / "two.bw")],
                           env=env, timeout=300, capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    for stat in ("logp-ref", "entropy"):
        a, b = pyBigWig.open(str(tmp_path / f"one.{stat}.bw")), pyBigWig.open(str(tmp_path / f"two.{stat}.bw"))
        for start, end in ((20000, 21500), (30000, 30400)):
            va, vb = np.array(a.values("z", start, end)), np.array(b.values("z", start, end))
            assert not np.isnan(va).any()
            np.testing.assert_allclose(vb, va, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == [
        "one.entropy.bw", "one.logp-ref.bw", "two.entropy.bw", "two.logp-ref.bw"]


def test_ism_over_a_bed_file_equals_ism_over_the_same_regions_given_with_r(ps, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text("z\t4000\t4012\tfirst\nz\t4100\t4106\tsecond\n")  # 0-based, half-open
    from_bed = ism(str(FA), str(bed), methods="masked,wt-marginal", model=ps, window=W, flank=FLANK)["table"]
    from_r = ism(str(FA), region="z:4001-4012,z:4101-4106", methods="masked,wt-marginal", model=ps, window=W,
                 flank=FLANK)["table"]
    rows = from_bed.to_pydict()
    assert len(rows["pos"]) == 3 * 18 and rows["pos"][0] == 4001 and rows["pos"][-1] == 4106
    assert rows["region"] == ["first"] * 36 + ["second"] * 18  # the BED's names; -r names regions by themselves
    same = [c for c in from_r.column_names if c != "region"]
    assert from_bed.select(same).to_pydict() == from_r.select(same).to_pydict()


def test_interpret_speed_script_prints_one_json_line_per_measurement(small_ps_dir):
    script = REPO / "benchmarks" / "interpret_speed.py"
    for what, extra in (("dense", ["--n", "40"]), ("track", ["--bases", "3000"]),
                        ("ism", ["--bases", "4", "--methods", "masked,wt-marginal"])):
        done = subprocess.run([sys.executable, script, what, "--model", str(small_ps_dir), "--window", str(W),
                               "--flank", str(FLANK), "--warmup", *extra], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [json.loads(line) for line in done.stdout.splitlines()]  # stdout holds the JSON lines alone
        assert rows and all(r["device"] == "cpu" and r["window"] == W for r in rows)
        measures = {r["measure"] for r in rows}
        assert measures == {"dense": {"dense", "dense_comparison"}, "track": {"track"}, "ism": {"ism"}}[what]
        if what == "dense":
            assert -1 <= rows[-1]["spearman"] <= 1 and rows[-1]["snvs"] > 0
