"""`caduceus embed` / `embed_regions` on real genomes (../shared/data) with tiny random models.

Every expected embedding is recomputed independently: sequences are read with pysam (or written
by the test) and reverse-complemented here, then passed to `embed_tokens` directly.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
import torch

from caduceus_cli.errors import CaduceusError
from caduceus_cli.model import tokenize
from caduceus_cli.pipelines import embed as embed_mod
from caduceus_cli.genome.windows import central_width, tile_cores, tile_starts
from caduceus_cli.pipelines.embed import embed_regions
from caduceus_cli.pipelines.inference import embed_tokens, strand_features

from .conftest import REPO, need_data, pretend_rank

torch.set_num_threads(1)  # the test machine is shared; the models here are tiny

_COMP = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def revcomp(seq: str) -> str:
    return seq.translate(_COMP)[::-1]


def direct(model, seq: str, pool: str = "mean", conjoin: bool = True, layer=None, center_width: int = 1536):
    return embed_tokens(model, tokenize([seq]), pool=pool, conjoin=conjoin, layer=layer,
                        center_width=center_width)[0].numpy()


def write_bed(path: Path, rows) -> Path:
    path.write_text("".join("\t".join(str(x) for x in row) + "\n" for row in rows))
    return path


def write_fasta(path: Path, records) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records))
    return path


def segments_subset(n_per_contig: int = 1, max_len: int = 200):
    """Short real segments from several chromosomes, in file order (keeps CPU time small)."""
    path = need_data("annotation", "sacCer3.segments.bed")
    rows, seen = [], {}
    for line in path.read_text().splitlines():
        contig, start, end, name = line.split("\t")[:4]
        if int(end) - int(start) <= max_len and seen.get(contig, 0) < n_per_contig:
            seen[contig] = seen.get(contig, 0) + 1
            rows.append((contig, int(start), int(end), name))
    return rows


# ------------------------------------------------------------------------------------------------
# real data: shapes, order, metadata, values
# ------------------------------------------------------------------------------------------------
def test_saccer3_segments_shapes_order_metadata(tmp_path, ps, capsys):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    rows = segments_subset()
    assert len(rows) >= 15
    bed = write_bed(tmp_path / "segments.bed", rows)
    out = tmp_path / "emb.parquet"
    result = embed_regions(fasta, bed, out, model=ps, batch_size=4)
    table = pq.read_table(out)
    assert table.num_rows == len(rows) == result.n_regions
    assert table.column("contig").to_pylist() == [r[0] for r in rows]
    assert table.column("start").to_pylist() == [r[1] for r in rows]
    assert table.column("end").to_pylist() == [r[2] for r in rows]
    assert table.column("name").to_pylist() == [r[3] for r in rows]
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (len(rows), ps.config.d_model) and emb.dtype == np.float32
    emb_type = table.schema.field("embedding").type
    assert emb_type.list_size == ps.config.d_model and emb_type.value_type == pa.float32()
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(out).metadata.items() if k != b"ARROW:schema"}
    assert meta["model_sha256"] == ps.source["sha256"] and len(meta["model_sha256"]) == 64
    assert meta["tool"] == "caduceus-cli" and meta["tool_version"]
    assert meta["pool"] == "mean" and meta["window"] == "region" and meta["n_regions"] == str(len(rows))
    assert meta["n_skipped"] == "0" and meta["embedding_dim"] == str(ps.config.d_model) and "command" in meta
    # values: the same as the model called directly on the sequences read with pysam
    with pysam.FastaFile(str(fasta)) as fa:
        for i in (0, len(rows) // 2, len(rows) - 1):
            contig, start, end, _ = rows[i]
            np.testing.assert_allclose(emb[i], direct(ps, fa.fetch(contig, start, end)), atol=1e-5)
    assert np.abs(emb[0] - emb[1]).max() > 1e-4  # different regions, different embeddings


def test_minus_strand_equals_reverse_complement_given_as_fasta(tmp_path, ph):
    """Ph without post-hoc conjoining is not RC-invariant, so this fails if '-' is not RC'd."""
    fasta = need_data("genomes", "sacCer3.fa.gz")
    spots = [("chrIV", 500_000, 500_180), ("chrXII", 1000, 1250), ("chrM", 40_000, 40_100)]
    bed_minus = write_bed(tmp_path / "minus.bed", [(c, s, e, f"r{i}", 0, "-") for i, (c, s, e) in enumerate(spots)])
    bed_plus = write_bed(tmp_path / "plus.bed", [(c, s, e, f"r{i}", 0, "+") for i, (c, s, e) in enumerate(spots)])
    with pysam.FastaFile(str(fasta)) as fa:
        records = [(f"r{i}", revcomp(fa.fetch(c, s, e))) for i, (c, s, e) in enumerate(spots)]
    rc_fasta = write_fasta(tmp_path / "rc.fa", records)
    for pool in ("mean", "none"):
        minus = embed_regions(fasta, bed_minus, model=ph, rc=False, pool=pool).embeddings
        from_fasta = embed_regions(rc_fasta, None, model=ph, rc=False, pool=pool).embeddings
        plus = embed_regions(fasta, bed_plus, model=ph, rc=False, pool=pool).embeddings
        for m, f, p in zip(minus, from_fasta, plus):
            np.testing.assert_allclose(m, f, atol=1e-5)
            assert np.abs(m - p).max() > 1e-4


def test_ps_pooled_embeddings_identical_for_sequence_and_reverse_complement(tmp_path, ps, ph):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    with pysam.FastaFile(str(fasta)) as fa:
        seqs = [fa.fetch("chrII", 20_000, 20_257), fa.fetch("chrXV", 777_000, 777_130)]
    records = [(f"s{i}", s) for i, s in enumerate(seqs)] + [(f"rc{i}", revcomp(s)) for i, s in enumerate(seqs)]
    path = write_fasta(tmp_path / "pairs.fa", records)
    for pool in ("mean", "max", "center"):
        emb = embed_regions(path, None, model=ps, pool=pool, center_width=64).embeddings
        np.testing.assert_allclose(emb[0], emb[2], atol=1e-5)
        np.testing.assert_allclose(emb[1], emb[3], atol=1e-5)
    # ... which is a property of the model: Ph without conjoining does not have it
    emb = embed_regions(path, None, model=ph, rc=False).embeddings
    assert np.abs(emb[0] - emb[2]).max() > 1e-4


def test_regions_at_contig_ends_are_padded_not_dropped(tmp_path, ps):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    chrm = 85_779  # length of chrM in sacCer3
    rows = [("chrM", chrm - 100, chrm + 60, "past_end", 0, "+"),
            ("chrI", 0, 40, "window_before_start", 0, "+"),
            ("chrM", 1000, 1100, "inside", 0, "-")]
    bed = write_bed(tmp_path / "ends.bed", rows)
    result = embed_regions(fasta, bed, model=ps, window=160)
    table = result.table
    assert table.num_rows == 3 and result.n_padded == 2
    assert table.column("n_padded").to_pylist() == [60, 60, 0]  # windows of 160 bp around each midpoint
    assert table.column("window_start").to_pylist() == [chrm - 100, -60, 970]
    with pysam.FastaFile(str(fasta)) as fa:
        expect0 = fa.fetch("chrM", chrm - 100, chrm) + "N" * 60
        expect1 = "N" * 60 + fa.fetch("chrI", 0, 100)
    emb = result.embeddings
    np.testing.assert_allclose(emb[0], direct(ps, expect0), atol=1e-5)
    np.testing.assert_allclose(emb[1], direct(ps, expect1), atol=1e-5)


def test_ecoli_plain_gzip_fasta(tmp_path, ps, caplog):
    fasta = need_data("genomes", "ecoli_K12_MG1655.fa.gz")
    rows = [("NC_000913.3", 0, 200, "thrL", 0, "+"), ("NC_000913.3", 4_641_500, 4_641_652, "last", 0, "-")]
    bed = write_bed(tmp_path / "ecoli.bed", rows)
    result = embed_regions(fasta, bed, tmp_path / "ecoli.npy", model=ps)
    assert "not bgzip" in caplog.text  # the plain-gzip FASTA is handled, with a clear note
    emb = np.load(tmp_path / "ecoli.npy")
    assert emb.shape == (2, ps.config.d_model) and result.n_padded == 0
    with gzip.open(fasta, "rt") as f:
        genome = "".join(line.strip() for line in f if not line.startswith(">"))
    np.testing.assert_allclose(emb[0], direct(ps, genome[:200]), atol=1e-5)
    np.testing.assert_allclose(emb[1], direct(ps, revcomp(genome[4_641_500:])), atol=1e-5)


def test_hg38_chr2_alias_softmask_and_n_run(tmp_path, ph, caplog):
    fasta = need_data("genomes", "hg38_chr2_1-2333275.fa.gz")
    rows = [("2", 0, 120, "leading_N"), ("chr2", 1_000_000, 1_000_200, "body"), ("2", 2_333_200, 2_333_275, "end")]
    bed = write_bed(tmp_path / "hg38.bed", rows)
    result = embed_regions(fasta, bed, model=ph)
    assert "called 'chr2'" in caplog.text  # 2 -> chr2 reconciled with a warning
    assert result.table.column("contig").to_pylist() == ["2", "chr2", "2"]  # as the user wrote them
    emb = result.embeddings
    with pysam.FastaFile(str(fasta)) as fa:
        body = fa.fetch("chr2", 1_000_000, 1_000_200)
    assert body != body.upper()  # soft-masked bases exist here and are embedded as their upper case
    np.testing.assert_allclose(emb[1], direct(ph, body.upper()), atol=1e-5)
    np.testing.assert_allclose(emb[0], direct(ph, "N" * 120), atol=1e-5)
    assert np.isfinite(emb).all()


def test_hg38_tss_gzip_bed_windows_and_skip_invalid(tmp_path, ps):
    """The real refGene TSS file: gzip, a '#' header, 1-bp regions, mostly contigs this FASTA lacks."""
    fasta = need_data("genomes", "hg38_chr2_1-2333275.fa.gz")
    tss = need_data("annotation", "hg38_refGene_tss.bed.gz")
    with gzip.open(tss, "rt") as f:
        data = [line.split("\t") for line in f if not line.startswith("#")]
    inside = [(c, int(s)) for c, s, *_ in data if c == "chr2" and int(s) < 2_333_275]
    assert inside
    result = embed_regions(fasta, tss, model=ps, window=64, skip_invalid=True)
    assert result.n_regions == len(inside)
    assert result.n_skipped == len(data) - len(inside)
    assert result.table.column("start").to_pylist() == [s for _, s in inside]
    assert set(result.table.column("window_end").to_numpy() - result.table.column("window_start").to_numpy()) == {64}


# ------------------------------------------------------------------------------------------------
# options and formats
# ------------------------------------------------------------------------------------------------
def test_output_formats_agree(tmp_path, ps):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = write_bed(tmp_path / "r.bed", [("chrI", 1000, 1100, "a", 0, "+"), ("chrV", 5000, 5150, "b", 0, "-"),
                                         ("chrM", 85_700, 85_800, "c", 0, "+")])
    ref = embed_regions(fasta, bed, tmp_path / "e.parquet", model=ps)
    assert ref.table is None
    emb = np.stack(pq.read_table(tmp_path / "e.parquet").column("embedding").to_numpy(zero_copy_only=False))
    embed_regions(fasta, bed, tmp_path / "e.npy", model=ps)
    embed_regions(fasta, bed, tmp_path / "e.npz", model=ps)
    embed_regions(fasta, bed, tmp_path / "e.tsv", model=ps)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), emb)
    with np.load(tmp_path / "e.npz") as z:
        np.testing.assert_array_equal(z["embeddings"], emb)
        meta = json.loads(str(z["metadata"]))
    assert meta["model_sha256"] == ps.source["sha256"] and meta["n_regions"] == "3"
    side = (tmp_path / "e.regions.bed").read_text().splitlines()
    assert any(line.startswith("#model_sha256=") for line in side)
    body = [line.split("\t") for line in side if not line.startswith("#")]
    assert [(b[0], b[1], b[2], b[3], b[5], b[8]) for b in body] == [
        ("chrI", "1000", "1100", "a", "+", "0"), ("chrV", "5000", "5150", "b", "-", "0"),
        ("chrM", "85700", "85800", "c", "+", "21")]
    tsv = [line for line in (tmp_path / "e.tsv").read_text().splitlines() if not line.startswith("##")]
    header = tsv[0].split("\t")
    assert header[:3] == ["contig", "start", "end"] and header[-1] == f"e{ps.config.d_model - 1}"
    values = np.array([[float(x) for x in row.split("\t")[len(header) - ps.config.d_model:]] for row in tsv[1:]])
    np.testing.assert_allclose(values, emb, rtol=1e-6, atol=1e-7)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_pool_none_layer_and_center(tmp_path, ps):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = write_bed(tmp_path / "r.bed", [("chrIII", 100, 180, "a", 0, "+"), ("chrIII", 300, 420, "b", 0, "-")])
    with pysam.FastaFile(str(fasta)) as fa:
        seqs = [fa.fetch("chrIII", 100, 180), revcomp(fa.fetch("chrIII", 300, 420))]
    none = embed_regions(fasta, bed, tmp_path / "none.parquet", model=ps, pool="none")
    table = pq.read_table(tmp_path / "none.parquet")
    per_pos = embed_mod.embedding_values(table.column("embedding").combine_chunks(), ps.config.d_model, "none")
    assert [p.shape for p in per_pos] == [(80, 16), (120, 16)] and none.n_regions == 2
    for got, seq in zip(per_pos, seqs):
        np.testing.assert_allclose(got, direct(ps, seq, pool="none"), atol=1e-5)
    layer0 = embed_regions(fasta, bed, model=ps, layer=0).embeddings
    last = embed_regions(fasta, bed, model=ps).embeddings
    np.testing.assert_allclose(layer0[0], direct(ps, seqs[0], layer=0), atol=1e-5)
    assert np.abs(layer0 - last).max() > 1e-3
    center = embed_regions(fasta, bed, model=ps, pool="center", center_width=20).embeddings
    np.testing.assert_allclose(center[1], per_pos[1][50:70].mean(0), atol=1e-5)
    with pytest.raises(CaduceusError, match="--layer 7"):
        embed_regions(fasta, bed, model=ps, layer=7)


def test_tiling_refused_without_tile_and_stitched_with_it(tmp_path, ps):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = write_bed(tmp_path / "long.bed", [("chrI", 0, 10, "short", 0, "+"), ("chrX", 2000, 2150, "long", 0, "-")])
    with pytest.raises(CaduceusError, match=r"long\.bed: line 2: region of 150 bp is longer .* \(64 bp\)"):
        embed_regions(fasta, bed, model=ps, max_length=64)
    result = embed_regions(fasta, bed, model=ps, max_length=64, tile=True, tile_overlap=16, pool="none")
    assert result.n_tiled == 1 and result.table.column("n_tiles").to_pylist() == [1, 3]
    with pysam.FastaFile(str(fasta)) as fa:
        seq = revcomp(fa.fetch("chrX", 2000, 2150))
    starts = tile_starts(150, 64, 16)
    expected = np.zeros((150, ps.config.d_model), np.float32)
    for (a, b), t0 in zip(tile_cores(starts, 64, 150), starts):
        expected[a:b] = direct(ps, seq[t0:t0 + 64], pool="none")[a - t0:b - t0]
    np.testing.assert_allclose(result.embeddings[1], expected, atol=1e-5)
    for pool in ("mean", "center", "max"):
        pooled = embed_regions(fasta, bed, model=ps, max_length=64, tile=True, tile_overlap=16, pool=pool,
                               center_width=30).embeddings[1]
        if pool == "mean":
            np.testing.assert_allclose(pooled, expected.mean(0), atol=1e-5)
        elif pool == "center":
            np.testing.assert_allclose(pooled, expected[60:90].mean(0), atol=1e-5)
        else:  # per strand, as embed_tokens pools: each strand's max over positions, then averaged
            feats = [strand_features(ps, tokenize([seq[t0:t0 + 64]]))[0] for t0 in starts]
            cores = [f[a - t0:b - t0] for f, (a, b), t0 in zip(feats, tile_cores(starts, 64, 150), starts)]
            np.testing.assert_allclose(pooled, torch.cat(cores).amax(0).mean(-1).numpy(), atol=1e-5)


def test_first_and_last_pool_each_strands_own_end_base_tiled_or_not(tmp_path, ps, ph):
    """--pool first/last (the classifier's and the probe's poolings): the forward strand's first base
    and the reverse strand's first base (the region's last position), averaged; a tiled region takes
    them from the tiles that hold them."""
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = write_bed(tmp_path / "r.bed", [("chrX", 2000, 2150, "long", 0, "-"), ("chrI", 300, 340, "short", 0, "+")])
    with pysam.FastaFile(str(fasta)) as fa:
        seqs = [revcomp(fa.fetch("chrX", 2000, 2150)), fa.fetch("chrI", 300, 340)]
    for model in (ps, ph):
        for pool, (fwd_at, rc_at) in (("first", (0, -1)), ("last", (-1, 0))):
            whole = embed_regions(fasta, bed, model=model, pool=pool).embeddings
            tiled = embed_regions(fasta, bed, model=model, pool=pool, max_length=64, tile=True,
                                  tile_overlap=16).embeddings
            for k, seq in enumerate(seqs):
                feats = strand_features(model, tokenize([seq]))[0]  # (L, d, 2)
                expected = ((feats[fwd_at, :, 0] + feats[rc_at, :, 1]) / 2).numpy()
                np.testing.assert_allclose(whole[k], expected, atol=1e-5)
            starts = tile_starts(150, 64, 16)
            first_tile, last_tile = (strand_features(model, tokenize([seqs[0][t:t + 64]]))[0] for t in (0, starts[-1]))
            ends = {"first": (first_tile[0, :, 0], last_tile[-1, :, 1]),
                    "last": (last_tile[-1, :, 0], first_tile[0, :, 1])}
            np.testing.assert_allclose(tiled[0], ((ends[pool][0] + ends[pool][1]) / 2).numpy(), atol=1e-5)
    first, last = (embed_regions(fasta, bed, model=ps, pool=pool).embeddings for pool in ("first", "last"))
    assert np.abs(first - last).max() > 1e-3


def test_central_window_is_symmetric():
    for length in range(1, 60):
        for width in range(1, 70):
            w = central_width(length, width)
            assert w <= length and (length - w) % 2 == 0 and abs(w - min(width, length)) <= 1


def test_tiles_cover_every_position_once():
    for length in (65, 100, 128, 129, 1000, 4097):
        for tile, overlap in ((64, 0), (64, 16), (64, 63), (128, 32)):
            starts = tile_starts(length, tile, overlap)
            if length <= tile:
                assert starts == [0]
                continue
            assert starts[0] == 0 and starts[-1] == length - tile
            assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
            cores = tile_cores(starts, tile, length)
            assert cores[0][0] == 0 and cores[-1][1] == length
            assert all(c[1] == d[0] for c, d in zip(cores, cores[1:]))
            assert all(t <= a < b <= t + tile for (a, b), t in zip(cores, starts))


def test_batch_size_and_chunking_do_not_change_results(tmp_path, ps, monkeypatch):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    rows = [("chrVI", 1000 + 150 * i, 1000 + 150 * i + (60 if i % 2 else 90), f"r{i}", 0, "+-"[i % 2])
            for i in range(9)]
    bed = write_bed(tmp_path / "r.bed", rows)
    one = embed_regions(fasta, bed, model=ps, batch_size=1)
    monkeypatch.setattr(embed_mod.EmbedSettings, "chunk_regions", property(lambda self: 2))
    many = embed_regions(fasta, bed, model=ps, batch_size=8, io_threads=3)
    assert many.table.column("name").to_pylist() == [r[3] for r in rows]
    np.testing.assert_allclose(one.embeddings, many.embeddings, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# command line: errors are one line, name the BED line, exit non-zero and leave no output
# ------------------------------------------------------------------------------------------------
GOOD = "chrI\t100\t160\ta\t0\t+\n"


@pytest.mark.parametrize("bad_line, message", [
    ("chrI\t500\t400\tx\t0\t+\n", "line 3: start 500 > end 400"),
    ("chrI\t-1\t400\n", "line 3: start -1 is negative"),
    ("chrI\t10\t4e2\n", "line 3: end '4e2' is not an integer"),
    ("chrNope\t10\t40\n", "line 3: contig 'chrNope' is not in sacCer3.fa.gz"),
    ("chrI\t10\t4000\n", "line 3: region of 3,990 bp is longer than the model's trained length (1,000 bp)"),
])
@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_cli_bad_regions_fail_on_one_line_without_output(tmp_path, run_cli, ps_dir, bad_line, message, suffix):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = tmp_path / "bad.bed"
    bed.write_text(GOOD + "# comment\n" + bad_line + GOOD)
    out = tmp_path / f"out{suffix}"
    code, stdout, err = run_cli("embed", fasta, bed, "-m", ps_dir, "-o", out, "--max-length", "1000", "-q")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: ")
    assert f"{bed}: {message}" in lines[0]
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bed"]  # no output, no temporary file


def test_cli_error_after_rows_were_written_leaves_no_file(tmp_path, run_cli, ps_dir, monkeypatch):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    monkeypatch.setattr(embed_mod.EmbedSettings, "chunk_regions", property(lambda self: 2))
    bed = tmp_path / "late.bed"
    bed.write_text(GOOD * 6 + "chrI\t9\t3\n")
    code, _, err = run_cli("embed", fasta, bed, "-m", ps_dir, "-o", tmp_path / "out.parquet", "-q")
    assert code != 0 and f"{bed}: line 7: start 9 > end 3" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.bed"]


def test_cli_missing_fasta_and_unknown_format(tmp_path, run_cli, ps_dir):
    bed = write_bed(tmp_path / "r.bed", [("chrI", 0, 10)])
    code, _, err = run_cli("embed", tmp_path / "absent.fa", bed, "-m", ps_dir, "-o", tmp_path / "o.parquet")
    assert code != 0 and err.count("\n") == 1 and "absent.fa: no such FASTA file" in err
    code, _, err = run_cli("embed", tmp_path / "absent.fa", "-m", ps_dir, "-o", tmp_path / "o.parquet")
    assert code != 0 and "absent.fa: no such FASTA file" in err
    code, _, err = run_cli("embed", tmp_path / "absent.fa", bed, "-m", ps_dir, "-o", tmp_path / "o.h5")
    assert code != 0 and "cannot tell the output format" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bed"]


def test_cli_skip_invalid_counts_and_keeps_order(tmp_path, run_cli, ps_dir):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = tmp_path / "mixed.bed"
    bed.write_text("chrI\t100\t160\tfirst\nchrNope\t1\t50\nchrI\t9\t3\nchrII\t100\t150\tsecond\n")
    out = tmp_path / "o.parquet"
    code, _, err = run_cli("embed", fasta, bed, "-m", ps_dir, "-o", out, "--skip-invalid")
    assert code == 0
    assert "skipped 2 invalid region(s)" in err and "line 2" in err and "line 3" in err
    table = pq.read_table(out)
    assert table.column("name").to_pylist() == ["first", "second"]
    assert pq.read_metadata(out).metadata[b"n_skipped"] == b"2"


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".tsv"])
def test_cli_empty_bed_gives_empty_valid_output(tmp_path, run_cli, ps_dir, suffix):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    bed = tmp_path / "empty.bed"
    bed.write_text("track name=nothing\n# no regions\n")
    out = tmp_path / f"o{suffix}"
    code, _, _ = run_cli("embed", fasta, bed, "-m", ps_dir, "-o", out, "-q")
    assert code == 0 and out.exists()
    if suffix == ".parquet":
        table = pq.read_table(out)
        assert table.num_rows == 0 and table.schema.field("embedding").type.list_size == 16
        assert pq.read_metadata(out).metadata[b"n_regions"] == b"0"
    elif suffix == ".npy":
        assert np.load(out).shape == (0, 16)
        assert (tmp_path / "o.regions.bed").exists()
    else:
        lines = [line for line in out.read_text().splitlines() if not line.startswith("##")]
        assert len(lines) == 1 and lines[0].startswith("contig\tstart\tend")


def test_cli_tsv_on_stdout_with_bed_on_stdin(tmp_path, run_cli, ps_dir, monkeypatch):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"chrI\t100\t160\tx\t0\t-\nchrII\t0\t30\n")))
    code, out, err = run_cli("embed", fasta, "-", "-m", ps_dir, "-o", "-", "--device", "cpu")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines() if not line.startswith("##")]
    assert rows[0][:5] == ["contig", "start", "end", "name", "strand"] and len(rows) == 3
    assert rows[1][:5] == ["chrI", "100", "160", "x", "-"] and len(rows[1]) == 9 + 16
    assert "embedded 2 regions" in err
    assert list(tmp_path.iterdir()) == []


def test_bundled_examples_run_with_a_tiny_model(tmp_path, run_cli, ps_dir):
    examples = REPO / "caduceus_cli" / "data" / "examples"
    out = tmp_path / "examples.parquet"
    code, _, err = run_cli("embed", examples / "synthetic_genome.fa", examples / "synthetic_regions.bed",
                           "-m", ps_dir, "-o", out, "--window", "128")
    assert code == 0, err
    table = pq.read_table(out)
    assert table.num_rows == 37 and table.column("name").to_pylist()[-1] == "past_contig_end"
    assert table.column("n_padded").to_pylist()[-1] > 0


# ------------------------------------------------------------------------------------------------
# multi-GPU path: sharding by rank and merging in input order (exercised on CPU with gloo)
# ------------------------------------------------------------------------------------------------
def test_ranks_merge_their_chunks_in_input_order(tmp_path, ps, monkeypatch):
    """Two pretend ranks (no process group) run one after the other: rank 1 leaves its part, rank 0
    computes its own and writes every row in input order, equal to a single-process run."""
    fasta = need_data("genomes", "sacCer3.fa.gz")
    rows = [("chrVI", 1000 + 90 * i, 1000 + 90 * i + 60 + 10 * (i % 3), f"r{i}", 0, "+-"[i % 2]) for i in range(11)]
    bed = write_bed(tmp_path / "r.bed", rows)
    monkeypatch.setattr(embed_mod.EmbedSettings, "chunk_regions", property(lambda self: 2))  # 6 chunks
    single = embed_regions(fasta, bed, tmp_path / "single.parquet", model=ps)
    out = tmp_path / "sharded.parquet"
    assert embed_regions(fasta, bed, out, model=ps, runtime=pretend_rank(1, 2)).output is None
    sharded = embed_regions(fasta, bed, out, model=ps, runtime=pretend_rank(0, 2))
    assert single.n_regions == sharded.n_regions == len(rows)
    a, b = pq.read_table(tmp_path / "single.parquet"), pq.read_table(out)
    assert b.column("name").to_pylist() == [r[3] for r in rows]
    np.testing.assert_allclose(np.stack(a.column("embedding").to_numpy(zero_copy_only=False)),
                               np.stack(b.column("embedding").to_numpy(zero_copy_only=False)), atol=1e-6)
    assert pq.read_metadata(out).metadata[b"world_size"] == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.bed", "sharded.parquet", "single.parquet"]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process(tmp_path, ps_dir):
    fasta = need_data("genomes", "sacCer3.fa.gz")
    sites = [("chrI", 500), ("chrII", 900), ("chrM", 85_740), ("chrIV", 10), ("chrV", 77), ("chrVI", 5000),
             ("chrXVI", 12_345)]
    shift = {c: (-200 if c == "chrM" else 200) for c, _ in sites}  # chrM's first region reaches past its end
    rows = [(c, s + shift[c] * k, s + shift[c] * k + 70 + 10 * (i % 3), f"r{k}_{i}", 0, "+-"[i % 2])
            for k in range(10) for i, (c, s) in enumerate(sites)]  # 70 regions: two chunks of up to 64
    bed = write_bed(tmp_path / "r.bed", rows + [("chrNope", 0, 10, "bad", 0, "+")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(fasta), str(bed), "-m", str(ps_dir), "--device", "cpu", "-q", "--skip-invalid", "-b", "4"]
    single = tmp_path / "single.parquet"
    subprocess.run([sys.executable, "-m", "caduceus_cli", "embed", *common, "-o", str(single)],
                   check=True, env=env, timeout=120, capture_output=True)
    multi = tmp_path / "multi.parquet"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "caduceus_cli", "embed", *common, "-o", str(multi)],
                          env=env, timeout=180, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = pq.read_table(single), pq.read_table(multi)
    assert a.num_rows == b.num_rows == len(rows)
    for col in ("contig", "start", "end", "name", "strand", "n_padded"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist()
    ea = np.stack(a.column("embedding").to_numpy(zero_copy_only=False))
    eb = np.stack(b.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    meta = pq.read_metadata(multi).metadata
    assert meta[b"world_size"] == b"2" and meta[b"n_skipped"] == b"1" and meta[b"n_regions"] == str(len(rows)).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.parquet", "r.bed", "single.parquet"]


def test_python_api_is_exported_lazily():
    import caduceus_cli

    assert caduceus_cli.embed_regions is embed_regions
