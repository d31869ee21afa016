"""score-variants engine: real 1000 Genomes records, RC handling of llr, batching, sharding, outputs."""

import gzip

import numpy as np
import pysam
import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.fasta import Reference
from caduceus_cli.genome.vcf import VcfRecord
from caduceus_cli.model.tokenizer import MASK, VOCAB, encode, reverse_complement_ids
from caduceus_cli.pipelines.inference import embed_tokens
from caduceus_cli.pipelines.variants import VariantScorer, score_variants

from .conftest import DATA as SHARED_DATA
from .conftest import need_data, pretend_rank

DATA = SHARED_DATA / "variants"
VCF = str(DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz")
FA = str(DATA / "1kgp_grch37_chr20_1-2Mb.fa")


@pytest.fixture(scope="module", autouse=True)
def real_variants():
    """Every test here reads the real 1000 Genomes VCF and its reference, or skips saying so."""
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.fa")
W = 48  # small windows: the window size is not the point of these tests


@pytest.fixture(scope="module")
def small_vcf(tmp_path_factory):
    """The real header, the first 120 records and every multi-allelic/symbolic record of the first 300 kb."""
    lines = gzip.open(VCF, "rt").read().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    special = [ln for ln in body[120:] if ("," in ln.split("\t")[4] or "<" in ln.split("\t")[4])
               and int(ln.split("\t")[1]) < 300_000]
    path = tmp_path_factory.mktemp("vcf") / "small.vcf"
    path.write_text("\n".join(header + body[:120] + special) + "\n")
    return path


def records_of(path):
    with pysam.VariantFile(str(path)) as f:
        return [(r.chrom, r.pos, r.ref, r.alts, dict(r.info)) for r in f]


def test_real_vcf_passes_every_record_in_order_with_aligned_number_a(ps, small_vcf, tmp_path):
    out = tmp_path / "out.vcf"
    summary = score_variants(str(small_vcf), FA, str(out), model=ps, window=W, batch_size=16)
    before, after = records_of(small_vcf), records_of(out)  # pysam parses our header and records
    assert len(after) == len(before) == summary["records"]
    for (c0, p0, r0, a0, i0), (c1, p1, r1, a1, i1) in zip(before, after):
        assert (c0, p0, r0, a0) == (c1, p1, r1, a1)
        assert all(i1[k] == v for k, v in i0.items())  # original INFO untouched
        for key in ("CADUCEUS_EMBED_COS", "CADUCEUS_EMBED_L2", "CADUCEUS_LLR", "CADUCEUS_SKIP"):
            if key in i1:
                assert len(i1[key]) == len(a1)
        for k, alt in enumerate(a1):
            if alt.startswith("<"):
                assert i1["CADUCEUS_SKIP"][k] == "symbolic" and i1["CADUCEUS_UNSCORED"]
                assert i1.get("CADUCEUS_EMBED_L2", (None,) * len(a1))[k] is None
            else:
                assert i1["CADUCEUS_EMBED_L2"][k] is not None
                if len(alt) == 1 and len(r1) == 1:
                    assert i1["CADUCEUS_LLR"][k] is not None
                else:
                    assert i1.get("CADUCEUS_LLR", (None,) * len(a1))[k] is None  # llr undefined for indels
    assert summary["skipped"].get("symbolic", 0) > 0 and any(len(a) > 1 for *_, a, _ in before)
    with pysam.VariantFile(str(out)) as f:
        header = str(f.header)
    assert '##INFO=<ID=CADUCEUS_LLR,Number=A,Type=Float' in header
    assert "##caduceus_model_sha256=" + ps.source["sha256"] in header
    assert f"##caduceus_window={W}" in header


def _write_vcf(path, rows, contig="z"):
    head = ["##fileformat=VCFv4.2", f"##contig=<ID={contig}>",
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    path.write_text("\n".join(head + ["\t".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_multiallelic_symbolic_star_and_ref_mismatch(ps, tmp_path):
    ref = Reference(FA)
    base = ref.fetch("z", 999, 1000)[0].upper()
    others = [b for b in "ACGT" if b != base]
    wrong = others[0]
    vcf = _write_vcf(tmp_path / "edge.vcf", [
        ("z", 1000, "m1", base, f"{others[0]},<DEL>,*,{others[1]}", ".", ".", "."),
        ("z", 1000, "m2", wrong, others[1], ".", ".", "."),
        ("z", 2000, "m3", ref.fetch("z", 1999, 2000)[0].upper(), ".", ".", ".", "DP=3"),
    ])
    out = tmp_path / "edge.vcf.out"
    summary = score_variants(str(vcf), FA, str(out), fmt="vcf", model=ps, window=W)
    rows = [ln.split("\t") for ln in out.read_text().splitlines() if not ln.startswith("#")]
    info = [dict(kv.split("=", 1) if "=" in kv else (kv, True) for kv in r[7].split(";")) for r in rows]
    assert info[0]["CADUCEUS_SKIP"] == ".,symbolic,star_allele,."
    llr = info[0]["CADUCEUS_LLR"].split(",")
    assert llr[1] == llr[2] == "." and llr[0] != "." and llr[3] != "."
    assert info[1]["CADUCEUS_SKIP"] == "ref_mismatch" and "CADUCEUS_LLR" not in info[1]
    assert info[2]["CADUCEUS_SKIP"] == "missing_alt" and info[2]["DP"] == "3"
    assert summary["ref_mismatch_records"] == 1
    with pytest.raises(CaduceusError, match=r"line 5: REF .* does not match"):
        score_variants(str(vcf), FA, str(tmp_path / "strict.vcf"), model=ps, window=W, strict_ref=True)
    assert not (tmp_path / "strict.vcf").exists()


def _direct_llr(model, window_ids, centre, ref, alt):
    masked = window_ids.clone()
    masked[centre] = MASK
    with torch.no_grad():
        logp = torch.log_softmax(model(masked[None]).logits[0, centre].double(), -1)
    return float(logp[VOCAB[alt]] - logp[VOCAB[ref]])


def _window(ref, pos, w):
    c = w // 2
    return torch.from_numpy(encode(ref.fetch("z", pos - 1 - c, pos - 1 - c + w)[0]).astype(np.int64)), c


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_llr_equals_average_of_forward_and_reverse_complement_passes(variant, ps, ph):
    model = ps if variant == "ps" else ph
    ref = Reference(FA)
    scorer = VariantScorer(model, ref, ("llr",), window=W, batch_size=4)
    comp = model.config.complement_list()
    complement = {"A": "T", "C": "G", "G": "C", "T": "A"}
    recs, expected = [], []
    for pos in (500, 5_000, 77_777):
        base = ref.fetch("z", pos - 1, pos)[0].upper()
        alt = next(b for b in "ACGT" if b != base)
        recs.append(VcfRecord("z", pos, base, [alt], pos))
        ids, c = _window(ref, pos, W)
        forward = _direct_llr(model, ids, c, base, alt)
        rc_ids = reverse_complement_ids(ids, comp)
        backward = _direct_llr(model, rc_ids, W - 1 - c, complement[base], complement[alt])
        if variant == "ps":  # the equivariant head: both strands already agree
            assert forward == pytest.approx(backward, abs=1e-4)
        expected.append(0.5 * (forward + backward))
    got = [r.scores["llr"][0] for r in scorer.score(recs)]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_scores_deterministic_across_batch_sizes_and_chunks(ps, small_vcf, tmp_path):
    outs = []
    for batch, chunk in ((3, 1024), (5, 7), (64, 50)):  # batches that split the records differently
        out = tmp_path / f"b{batch}.tsv"
        score_variants(str(small_vcf), FA, str(out), model=ps, window=W, batch_size=batch, chunk_size=chunk)
        rows = [ln.split("\t") for ln in out.read_text().splitlines() if not ln.startswith("#")]
        outs.append(rows)
    header = outs[0][0]
    for other in outs[1:]:
        assert len(other) == len(outs[0])
        for a, b in zip(outs[0][1:], other[1:]):
            assert a[:5] == b[:5] and a[-1] == b[-1]
            for x, y in zip(a[5:-1], b[5:-1]):
                assert (x == y == "NA") or float(x) == pytest.approx(float(y), rel=1e-4, abs=1e-5)
    assert header == ["chrom", "pos", "id", "ref", "alt", "llr", "embed_cos", "embed_l2", "status"]


def test_indel_alt_window_is_length_matched_and_contig_ends_padded(ps, tmp_path):
    ref = Reference(FA)
    scorer = VariantScorer(ps, ref, ("embed_l2",), window=W)
    c = W // 2
    ids = encode(ref.fetch("z", 5000 - 1 - c, 5000 - 1 - c + W + 3)[0])
    r = ref.fetch("z", 4999, 5002)[0].upper()
    deletion = scorer._alt_window(ids, r, r[0])
    insertion = scorer._alt_window(ids, r[0], r[0] + "ACGTAC")
    assert len(deletion) == len(insertion) == W
    np.testing.assert_array_equal(deletion[:c + 1], ids[:c + 1])
    np.testing.assert_array_equal(deletion[c + 1:], ids[c + 3:c + 3 + W - c - 1])
    np.testing.assert_array_equal(insertion[c:c + 7], encode(r[0] + "ACGTAC"))
    # a variant at the first base of the contig: the left half of the window is N
    first = ref.fetch("z", 0, 1)[0].upper()
    got, seen = scorer._windows(VcfRecord("z", 1, first, ["T" if first != "T" else "A"], 1), "z")
    assert seen.upper() == first and (got[:c] == VOCAB["N"]).all()
    last = ref.contigs["z"]
    res = scorer.score([VcfRecord("z", last, ref.fetch("z", last - 1, last)[0], ["A"], 2),
                        VcfRecord("z", 1, first, ["A" if first != "A" else "C"], 3)])
    assert all(r.scores["embed_l2"][0] is not None and r.reasons == [None] for r in res)


def test_embed_scores_match_direct_embedding(ps):
    ref = Reference(FA)
    pos = 12_345
    base = ref.fetch("z", pos - 1, pos)[0].upper()
    alt = next(b for b in "ACGT" if b != base)
    res = VariantScorer(ps, ref, ("embed_cos", "embed_l2"), window=W).score([VcfRecord("z", pos, base, [alt], 1)])[0]
    ids, c = _window(ref, pos, W)
    alt_ids = ids.clone()
    alt_ids[c] = VOCAB[alt]
    e = embed_tokens(ps, torch.stack([ids, alt_ids]), pool="mean").double()
    assert res.scores["embed_l2"][0] == pytest.approx(float((e[0] - e[1]).norm()), rel=1e-5)
    cos = 1 - float(torch.nn.functional.cosine_similarity(e[0], e[1], dim=0))
    assert res.scores["embed_cos"][0] == pytest.approx(cos, rel=1e-4, abs=1e-9)


def test_sharded_scoring_merges_to_the_single_process_output(ps, small_vcf, tmp_path):
    single = tmp_path / "single.vcf"
    score_variants(str(small_vcf), FA, str(single), model=ps, window=W, chunk_size=16)
    sharded = tmp_path / "sharded.vcf"
    for rank in (2, 1, 0):  # rank 0 merges once the other shards exist
        score_variants(str(small_vcf), FA, str(sharded), model=ps, window=W, chunk_size=16,
                       runtime=pretend_rank(rank, 3))
    assert sharded.read_text() == single.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.vcf", "single.vcf"]  # no shards left


def test_bgzip_with_tabix_index_and_bcf_outputs(ps, small_vcf, tmp_path):
    gz = tmp_path / "out.vcf.gz"
    score_variants(str(small_vcf), FA, str(gz), model=ps, window=W, scores="llr", write_index=True)
    assert (tmp_path / "out.vcf.gz.tbi").exists()
    with pysam.VariantFile(str(gz)) as f:
        hits = list(f.fetch("z", 0, 500))
    assert hits and all("CADUCEUS_LLR" in r.info or "CADUCEUS_SKIP" in r.info for r in hits)
    bcf = tmp_path / "out.bcf"
    score_variants(str(small_vcf), FA, str(bcf), model=ps, window=W, scores="embed_l2")
    assert [r[:4] for r in records_of(bcf)] == [r[:4] for r in records_of(small_vcf)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bcf", "out.vcf.gz", "out.vcf.gz.tbi"]
