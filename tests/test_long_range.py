"""Long range: the context the model reads (--context) apart from the positions pooled (--window) in
score-variants, finetune svm and embed; context defaults and the CPU refusal; batches within a
memory budget and the activation estimate; whole-block gradient checkpointing; the GPU script's
smoke mode; bad values through the console script."""

from __future__ import annotations

import gzip
import importlib.util
import json
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from caduceus_cli.errors import CaduceusError
from caduceus_cli.genome.fasta import Reference
from caduceus_cli.genome.vcf import VcfRecord
from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model
from caduceus_cli.model.caduceus import CaduceusForSequenceClassification
from caduceus_cli.dna import MASK, VOCAB, encode
from caduceus_cli.pipelines.inference import embed_tokens
from caduceus_cli.pipelines.variants import VariantScorer, score_variants
from caduceus_cli.pipelines.variants import context as ctx

from .conftest import DATA, REPO, console, need_data

VCF = DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz"
FA = str(DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa")
Z_LENGTH = 1_000_000
W = 32


@pytest.fixture(scope="module", autouse=True)
def real_data(one_torch_thread):
    need_data("variants", VCF.name)
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.fa")


def _records(n=14):
    """SNVs, an indel and a multi-allelic record from the real VCF, plus SNVs whose context reaches
    past both ends of contig z."""
    recs = []
    for line in gzip.open(VCF, "rt"):
        if line.startswith("#"):
            continue
        c = line.split("\t")
        if "<" in c[4]:
            continue
        recs.append(VcfRecord(c[0], int(c[1]), c[3], c[4].split(","), len(recs) + 1))
        if len(recs) == n:
            break
    with Reference(FA) as ref:
        for pos in (20, Z_LENGTH - 15):
            base = ref.fetch("z", pos - 1, pos)[0].upper()
            recs.append(VcfRecord("z", pos, base, [next(b for b in "ACGT" if b != base)], len(recs) + 1))
    return recs


def _context_ids(ref, pos, length):
    start = pos - 1 - length // 2
    seq, _ = ref.fetch("z", start, start + length)
    return torch.from_numpy(encode(seq).astype(np.int64))


def _strand_mean(model, ids, window_slice):
    """Strand-averaged mean over the window's positions, written out per variant (no project code
    beyond the model's forward): PS halves aligned, Ph forward and RC-flipped-back passes."""
    with torch.no_grad():
        hidden = model(ids[None]).last_hidden_state[0]
        if model.config.rcps:
            d = model.config.d_model
            both = 0.5 * (hidden[:, :d] + hidden[:, d:].flip(-1))
        else:
            rc = torch.tensor(model.config.complement_list())[ids.flip(0)]
            both = 0.5 * (hidden + model(rc[None]).last_hidden_state[0].flip(0))
    return both[window_slice].mean(0).double()


def _llr(model, ids, centre, ref_base, alt_base):
    masked = ids.clone()
    masked[centre] = MASK
    comp = torch.tensor(model.config.complement_list())
    with torch.no_grad():
        logits = model(masked[None]).logits[0, centre].double()
        if not model.config.rcps:
            rc = model(comp[masked.flip(0)][None]).logits[0, len(ids) - 1 - centre].double()
            logits = 0.5 * (logits + rc[comp])
    return float(logits[VOCAB[alt_base]] - logits[VOCAB[ref_base]])


def _scores(model, context, recs=None, window=W):
    with Reference(FA) as ref:
        scorer = VariantScorer(model, ref, ("llr", "embed_cos", "embed_l2"), window, batch_size=5, context=context)
        return [r.scores for r in scorer.score(recs or _records())]


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_context_equal_to_window_gives_todays_scores(variant, ps, ph):
    model = ps if variant == "ps" else ph
    recs = _records()
    today = _scores(model, None, recs)
    assert _scores(model, W, recs) == today  # --context == --window: the same numbers, bit for bit
    with Reference(FA) as ref:
        for rec, scores in zip(recs, today):
            if len(rec.ref) != 1 or len(rec.alts[0]) != 1:
                continue
            ids = _context_ids(ref, rec.pos, W)
            alt = ids.clone()
            alt[W // 2] = VOCAB[rec.alts[0].upper()]
            emb = embed_tokens(model, torch.stack([ids, alt])).double()  # today's definition: window means
            assert scores["embed_l2"][0] == pytest.approx(float((emb[0] - emb[1]).norm()), rel=1e-5, abs=1e-7)
            expected = _llr(model, ids, W // 2, rec.ref.upper(), rec.alts[0].upper())
            assert scores["llr"][0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_longer_context_is_read_and_changes_the_scores(variant, ps, ph):
    model = ps if variant == "ps" else ph
    context = 4 * W + 6
    recs = _records()
    short, long = _scores(model, W, recs), _scores(model, context, recs)
    pooled = ctx.pooled_slice(context, W)
    changed = []
    with Reference(FA) as ref:
        for rec, s, g in zip(recs, short, long):
            if len(rec.ref) != 1 or len(rec.alts[0]) != 1:
                continue
            assert g["llr"][0] != s["llr"][0] and g["embed_l2"][0] != s["embed_l2"][0]
            changed.append(abs(g["embed_l2"][0] / s["embed_l2"][0] - 1))
            ids = _context_ids(ref, rec.pos, context)  # N past the contig ends (first and last records)
            alt = ids.clone()
            alt[context // 2] = VOCAB[rec.alts[0].upper()]
            a, b = _strand_mean(model, ids, pooled), _strand_mean(model, alt, pooled)
            assert g["embed_l2"][0] == pytest.approx(float((a - b).norm()), rel=1e-4, abs=1e-6)
            cos = 1 - float(a @ b / (a.norm() * b.norm()))
            assert g["embed_cos"][0] == pytest.approx(cos, rel=1e-3, abs=1e-6)
            expected = _llr(model, ids, context // 2, rec.ref.upper(), rec.alts[0].upper())
            assert g["llr"][0] == pytest.approx(expected, abs=1e-5)
    assert (ids == VOCAB["N"]).sum() > 0  # the last context reaches past the end of z
    assert max(changed) > 1e-3 and len(changed) >= 10


def test_ref_passes_are_shared_by_the_alts_of_a_site_and_repeated_records(ps):
    """Three records of one site (as split multi-allelics arrive) and a repeat, one context per
    batch: one masked and one REF pass serve them all, beside one ALT pass per distinct ALT."""
    with Reference(FA) as ref:
        base = ref.fetch("z", 4_999, 5_000)[0].upper()
        alts = [b for b in "ACGT" if b != base]
        recs = [VcfRecord("z", 5_000, base, [a], k + 1) for k, a in enumerate(alts)]
        recs.append(VcfRecord("z", 5_000, base, [alts[0]], 4))
        rows = []
        hook = ps.caduceus.register_forward_pre_hook(lambda _m, inputs: rows.append(inputs[0].shape[0]))
        try:
            scorer = VariantScorer(ps, ref, ("llr", "embed_l2"), W, batch_size=1, context=4 * W)
            results = scorer.score(recs)
        finally:
            hook.remove()
    assert sum(rows) == 1 + 1 + 3  # masked REF, REF, three distinct ALTs
    assert results[3].scores == results[0].scores and all(r.scores["llr"][0] is not None for r in results)


def test_context_defaults_to_the_declared_trained_length(ps):
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 8, 1))
    assert ctx.declared_length(model) is None and ctx.choose_context(None, 64, model) == 64
    for hub_id, length in (("kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16", 131072),
                           ("kuleshov-group/caduceus-ph_seqlen-1k_d_model-256_n_layer-4_lr-8e-3", 1024)):
        model.source = {"id": hub_id}
        assert ctx.declared_length(model) == length == ctx.choose_context(None, 64, model)
    model.config.extra["max_seq_len"] = 2048
    assert ctx.choose_context(None, 1536, model) == 2048 and ctx.choose_context(None, 4096, model) == 4096
    with pytest.raises(CaduceusError, match="--context 100 is shorter than --window 128"):
        ctx.choose_context(100, 128, model)
    assert ctx.paper_positions(1536)[:2] == [0, 1] and ctx.paper_positions(1536)[-2:] == [1535, 1535]
    assert len(ctx.paper_positions(131072)) == 1537 and ctx.paper_positions(131072)[768] == 65536


def test_cpu_refuses_a_default_context_it_cannot_run_in_time(tmp_path, monkeypatch, caplog):
    torch.manual_seed(3)
    model = CaduceusForMaskedLM(CaduceusConfig.small("ps", 8, 1, ))
    model.config.extra["max_seq_len"] = 1024
    folder = save_model(model, tmp_path / "declares_1k")
    vcf = tmp_path / "in.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"z\t{r.pos}\t.\t{r.ref}\t{r.alts[0]}\t.\t.\t.\n" for r in _records(3)))
    monkeypatch.setattr(ctx, "measured_tokens_per_second", lambda model: 20.0)  # a very slow CPU
    out = tmp_path / "out.tsv"
    with pytest.raises(CaduceusError, match=r"default context of this model is 1,024 bp: about \d+ min per variant "
                                            r"on this CPU .*GPU.*shorter --context"):
        score_variants(str(vcf), FA, str(out), model=str(folder), window=W, device="cpu")
    assert not out.exists()
    summary = score_variants(str(vcf), FA, str(out), model=str(folder), window=W, context=1024, device="cpu")
    assert summary["context"] == 1024 and summary["scored"] == 5 and "peak_rss_gib" in summary
    assert "--context 1024 on this CPU: about" in caplog.text
    assert "##caduceus_context=1024" in out.read_text()


class LiveTensorBytes(TorchDispatchMode):
    """The peak of the bytes of tensor storages alive at once while the mode is on: every op's
    outputs are tracked until no tensor on their storage is left (a tracemalloc for tensors, which
    the resident set cannot be on a shared machine: pages get evicted under memory pressure)."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, list] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.storages.setdefault(storage.data_ptr(), [storage.nbytes(), []])[1].append(weakref.ref(t))
        live = 0
        for ptr, (nbytes, refs) in list(self.storages.items()):
            refs[:] = [r for r in refs if r() is not None]
            if refs:
                live += nbytes
            else:
                del self.storages[ptr]
        self.peak = max(self.peak, live)
        return out


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_memory_estimate_matches_the_measured_peak_on_cpu(variant):
    from caduceus_cli.pipelines.inference import strand_features

    torch.manual_seed(0)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, 32, 2)).eval()
    ids = torch.randint(7, 11, (2, 16384))
    with LiveTensorBytes() as measured:
        strand_features(model, ids)
    estimate = ctx.peak_activation_bytes(model.config, 2, 16384)
    assert 0.7 <= measured.peak / estimate <= 1.2, (measured.peak, estimate)


def test_batches_fit_the_memory_budget():
    config = CaduceusConfig.small("ps", 256, 16)
    one = ctx.peak_activation_bytes(config, 1, 131072, device_type="cuda")
    four, eight = (ctx.peak_activation_bytes(config, b, 131072, device_type="cuda") for b in (4, 8))
    assert one < four < eight and eight - four > four - one  # the mixer's slice is bounded, the streams are not
    for budget in (one // 2, 3 * one, 40 * one):
        batch = ctx.batch_for_budget(config, 131072, budget, device_type="cuda", cap=64)
        assert 1 <= batch <= 64
        assert batch == 1 or ctx.peak_activation_bytes(config, batch, 131072, device_type="cuda") <= budget
    assert ctx.batch_for_budget(config, 1536, 1 << 40, device_type="cuda", cap=64) == 64
    training = ctx.peak_activation_bytes(config, 8, 131072, device_type="cuda", training=True)
    checkpointed = ctx.peak_activation_bytes(config, 8, 131072, device_type="cuda", training=True, checkpoint=True)
    assert checkpointed < training / 4


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_gradient_checkpointing_gives_the_same_gradients_with_less_saved(variant):
    torch.manual_seed(0)
    model = CaduceusForSequenceClassification(CaduceusConfig.small(variant, 16, 3), conjoin_train=True).train()
    ids = torch.randint(7, 12, (3, 300))
    lengths, labels = torch.tensor([300, 250, 120]), torch.tensor([0, 1, 1])

    def run(checkpoint):
        model.zero_grad(set_to_none=True)
        model.backbone.checkpoint_blocks = checkpoint
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved)

    plain, saved_plain = run(False)
    checked, saved_checked = run(True)
    assert plain.keys() == checked.keys() and len(plain) > 20
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], rtol=1e-6, atol=1e-6)
    assert saved_checked < saved_plain / 3


def test_finetune_classify_turns_checkpointing_on_for_long_sequences(ps_dir, tmp_path, monkeypatch):
    from caduceus_cli.pipelines.finetune import finetune_classifier
    from caduceus_cli.pipelines.finetune import recipe

    rng = np.random.default_rng(0)
    rows = ["sequence,label"] + [f"{''.join(rng.choice(list('ACGT'), 96))},{k % 2}" for k in range(24)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(recipe, "CHECKPOINT_BLOCKS_ABOVE", 64)
    report = finetune_classifier(str(tmp_path / "train.csv"), str(tmp_path / "on"), model=str(ps_dir), epochs=1,
                                 batch_size=8, device="cpu")
    assert report["recipe"]["checkpoint_blocks"] is True
    report = finetune_classifier(str(tmp_path / "train.csv"), str(tmp_path / "off"), model=str(ps_dir), epochs=1,
                                 batch_size=8, device="cpu", max_length=64)
    assert report["recipe"]["checkpoint_blocks"] is False and report["recipe"]["max_length"] == 64


def test_micro_batches_take_the_step_of_the_whole_batch(ps_dir, tmp_path):
    """Passes of 3 sequences (padded to the batch's width) add up to the gradients of one pass of
    8: the trained weights agree; mixed lengths, so padding is involved."""
    from safetensors.torch import load_file

    from caduceus_cli.pipelines.finetune import finetune_classifier

    rng = np.random.default_rng(1)
    rows = ["sequence,label"] + [f"{''.join(rng.choice(list('ACGT'), 70 + k % 9))},{k % 2}" for k in range(32)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    weights = {}
    for micro in (None, 3):
        out = tmp_path / f"micro{micro}"
        report = finetune_classifier(str(tmp_path / "train.csv"), str(out), model=str(ps_dir), epochs=1, batch_size=8,
                                     device="cpu", micro_batch_size=micro)
        assert report["recipe"]["micro_batch_size"] == micro
        weights[micro] = load_file(out / "model.safetensors")
    before = load_file(ps_dir / "model.safetensors")
    moved = 0
    for name, value in weights[None].items():
        torch.testing.assert_close(weights[3][name], value, rtol=1e-5, atol=1e-6)
        if name in before:
            moved += int(not torch.equal(before[name], value))
    assert moved > 10  # the backbone was trained, not only the head


# -- embed --context -----------------------------------------------------------------------------
def _embed(model, bed, **options):
    from caduceus_cli.pipelines.embed import embed_regions

    return embed_regions(FA, bed, model=model, device="cpu", **options)


@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_embed_context_reads_around_the_region_and_pools_its_positions(variant, ps, ph, tmp_path):
    model = ps if variant == "ps" else ph
    bed = tmp_path / "r.bed"
    bed.write_text("z\t1000\t1040\tplus\t0\t+\nz\t1000\t1040\tminus\t0\t-\nz\t5\t45\tedge\t0\t+\n"
                   f"z\t{Z_LENGTH - 30}\t{Z_LENGTH - 2}\tend\t0\t+\n")
    alone = _embed(model, bed).embeddings
    same = _embed(model, bed, context=40)
    assert np.array_equal(same.embeddings[:3], alone[:3])  # a context as long as the region: the region itself
    context = 200
    got = _embed(model, bed, context=context)
    assert list(got.table.column("n_padded").to_pylist()[2:]) == [75, 84]
    with Reference(FA) as ref:
        for row, (start, end) in zip(got.embeddings[[0, 2, 3]], ((1000, 1040), (5, 45), (Z_LENGTH - 30, Z_LENGTH - 2))):
            left = start + (end - start) // 2 - context // 2
            ids = torch.from_numpy(encode(ref.fetch("z", left, left + context)[0]).astype(np.int64))
            expected = _strand_mean(model, ids, slice(start - left, end - left))
            np.testing.assert_allclose(row, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got.embeddings[0], alone[0], atol=1e-4)
    # RC handling: a minus-strand region reads the reverse complement of the same context and pools
    # the same bases, so with both strands averaged it equals the plus-strand region
    np.testing.assert_allclose(got.embeddings[1], got.embeddings[0], rtol=1e-5, atol=1e-6)
    assert got.metadata["context"] == "200"


# -- the SVM with the paper's features and a context ----------------------------------------------
def test_svm_keeps_its_context_and_features_and_score_variants_uses_them(ps, tmp_path):
    from caduceus_cli.genome.labeled_variants import LabeledVariant
    from caduceus_cli.genome.tss import read_tss
    from caduceus_cli.pipelines.svm import extract_features, train_svm
    from caduceus_cli.pipelines.svm_model import load_svm

    from .test_svm import derived_tss_bed, labeled_snvs

    need_data("annotation", "hg38_refGene_tss.bed.gz")
    tss, labeled = derived_tss_bed(tmp_path / "tss.bed"), labeled_snvs(tmp_path / "labeled.tsv", 40)
    out = tmp_path / "svm"
    report = train_svm(str(labeled), FA, str(tss), str(out), model=ps, window=W, context=96, n_train=60, Cs=(1,),
                       seeds=(1, 2))
    meta = json.loads((out / "svm.json").read_text())
    assert meta["feature_set"] == "paper" and meta["context"] == 96 and meta["window"] == W
    assert report["context"] == 96 and report["features"] == "paper"
    rows = [ln.split("\t") for ln in labeled.read_text().splitlines()[1:5]]
    vcf = tmp_path / "few.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"z\t{r[1]}\t.\t{r[2]}\t{r[3]}\t.\t.\t.\n" for r in rows))
    scored = tmp_path / "scored.tsv"
    summary = score_variants(str(vcf), FA, str(scored), model=ps, window=W, scores="embed_l2", svm=str(out),
                             tss=str(tss))
    assert summary["context"] == 96
    variants = [LabeledVariant(VcfRecord("z", int(r[1]), r[2], [r[3]], 0), 0) for r in rows]
    X, dist, _ = extract_features(ps, Reference(FA), variants, read_tss(tss), W, context=96, features="paper",
                                  is_test=np.ones(len(variants), dtype=bool))
    table = [ln.split("\t") for ln in scored.read_text().splitlines() if not ln.startswith("#")][1:]
    np.testing.assert_allclose([float(t[6]) for t in table], load_svm(out).decision(X, dist), rtol=1e-4, atol=1e-5)
    # the SVM's features come from the embedding scores' own passes: no model pass more than embed_l2 alone
    calls = []  # sequences through the backbone
    hook = ps.caduceus.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        score_variants(str(vcf), FA, str(tmp_path / "alone.tsv"), model=ps, window=W, context=96, scores="embed_l2")
        alone, calls[:] = sum(calls), []
        score_variants(str(vcf), FA, str(tmp_path / "with_svm.tsv"), model=ps, window=W, scores="embed_l2",
                       svm=str(out), tss=str(tss))
    finally:
        hook.remove()
    assert alone > 0 and sum(calls) == alone
    with pytest.raises(CaduceusError, match="trained with --context 96, not 128"):
        score_variants(str(vcf), FA, str(tmp_path / "x.tsv"), model=ps, window=W, context=128, svm=str(out),
                       tss=str(tss))


# -- the GPU script, in its CPU smoke mode ----------------------------------------------------------
def test_long_range_gpu_script_smoke_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("long_range_gpu", REPO / "benchmarks" / "long_range_gpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "smoke.json"
    result = script.main(["--smoke", "--device", "cpu", "--n", "2", "--train-batches", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    sv = result["score_variants"]
    assert result["context"] == 2048 and result["window"] == 128 and sv["scored"] >= 2
    assert sv["model_tokens"] >= 2 * 2 * 2048 and sv["variants_per_second"] > 0 and sv["peak_memory_gib"] > 0
    assert result["forward"]["batch"] == sv["batch_size"] and result["forward"]["length"] == 2048
    assert [(r["batch"], r["checkpoint_blocks"], r["oom"]) for r in result["finetune"]] == [(1, False, False),
                                                                                         (1, True, False)]


# -- bad values, through the console script ---------------------------------------------------------
def _one_line_error(result, needle):
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error:") and needle in lines[0], result.stderr


@pytest.mark.parametrize("args, needle", [
    (["--context", "0"], "--context 0 is out of range"),
    (["--context", "16"], "--context 16 is shorter than --window 32"),
    (["--context", "-5"], "--context -5 is out of range"),
])
def test_score_variants_refuses_bad_contexts(args, needle, small_ps_dir, tmp_path):
    vcf = tmp_path / "in.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nz\t1000\t.\tA\tC\t.\t.\t.\n")
    out = tmp_path / "out.vcf"
    _one_line_error(console("score-variants", vcf, "-f", FA, "-m", small_ps_dir, "--window", W, "-o", out, *args),
                    needle)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--features", "bogus"], "--features must be one of paper, mean"),
    (["--context", "2"], "--context 2 is out of range"),
    (["--context", "16"], "--context 16 is shorter than --window 32"),
])
def test_finetune_svm_refuses_bad_values(args, needle, small_ps_dir, tmp_path):
    labeled = tmp_path / "l.tsv"
    labeled.write_text("chrom\tpos\tref\talt\tlabel\nz\t1000\tA\tC\t1\n")
    tss = tmp_path / "t.bed"
    tss.write_text("z\t10\t11\tG\n")
    out = tmp_path / "svm"
    _one_line_error(console("finetune", "svm", labeled, "-f", FA, "--tss", tss, "-m", small_ps_dir, "--window", W,
                            "-o", out, *args), needle)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--context", "0"], "--context 0 is out of range"),
    (["--context", "64", "--tile"], "--context and --tile cannot be combined"),
    (["--context", "20"], "is longer than --context 20"),
])
def test_embed_refuses_bad_contexts(args, needle, small_ps_dir, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("z\t1000\t1040\n")
    out = tmp_path / "e.parquet"
    _one_line_error(console("embed", FA, bed, "-m", small_ps_dir, "-o", out, *args), needle)
    assert not out.exists()


def test_benchmark_and_classify_refuse_bad_values(small_ps_dir, tmp_path):
    out = tmp_path / "report"
    _one_line_error(console("benchmark", "vep-eqtl", "-o", out, "--features", "x"), "--features must be one of")
    _one_line_error(console("benchmark", "vep-eqtl", "-o", out, "--context", "1"), "--context 1 is out of range")
    assert not out.exists()
    train = tmp_path / "t.csv"
    train.write_text("sequence,label\nACGTACGT,0\nACGTACGA,1\n")
    _one_line_error(console("finetune", "classify", train, "-o", tmp_path / "clf", "-m", small_ps_dir,
                            "--context", "0"), "--max-length 0 is out of range")
    _one_line_error(console("finetune", "classify", train, "-o", tmp_path / "clf", "-m", small_ps_dir,
                            "--micro-batch-size", "0"), "--micro-batch-size 0 is out of range")
    assert not (tmp_path / "clf").exists()


def test_a_context_longer_than_the_trained_length_runs_with_one_warning(tmp_path):
    """The bundled model declares 1,024 bp: --context 2048 runs (the user asked for it) and says
    once, on stderr, that the model was not trained on such lengths."""
    vcf = tmp_path / "in.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nz\t5000\t.\tA\tC\t.\t.\t.\n")
    out = tmp_path / "out.tsv"
    done = console("score-variants", vcf, "-f", FA, "--window", "1024", "--context", "2048", "--scores", "llr",
                   "--dtype", "fp32", "--threads", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "--context 2048 is longer than the 1024 bp" in ln]
    assert len(warnings) == 1, done.stderr
    assert out.exists() and len([ln for ln in out.read_text().splitlines() if not ln.startswith("#")]) == 2
