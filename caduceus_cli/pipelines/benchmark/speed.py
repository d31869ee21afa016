"""The speed suite: throughput and peak memory on this machine, per model, length, dtype and backend.

Measures (``SPEED_MEASURES``):
- ``forward``: tokens/s of the embedding forward pass (hidden states, no LM head), the median of
  timed repeats after warm-up (CUDA events on a GPU).
- ``train``: tokens/s of a masked-LM training step (forward, cross-entropy on 15% masked positions,
  backward, AdamW step).

Every measure runs in each compute dtype of ``--dtypes`` (auto, fp32, bf16; ``model.precision``).
- ``embed``: regions/s of the whole ``embed_regions`` pipeline on seeded random regions.
- ``score-variants``: variants/s of the whole ``score_variants`` pipeline on seeded random SNVs.

Models: ``bundled``, a folder or hub id, or ``random:VARIANT:DxL`` (seeded random weights of the
published sizes; speed does not depend on the weights). Peak memory: ``max_memory_allocated`` on
CUDA; on CPU the process's peak resident size so far (a high-water mark that only grows).
The benchmarks/ scripts call the same functions.
"""

from __future__ import annotations

import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from ...choices import DEFAULT_MODEL
from ..._version import __version__
from ...errors import CaduceusError
from ...io import command_line
from ...limits import MAX_BASES, parse_sizes
from .registry import OFFICIAL_BATCH, OFFICIAL_FORWARD, OFFICIAL_TRAIN, SPEED_MEASURES

DTYPES = ("auto", "fp32", "bf16")  # compute dtypes (model.precision)
PIPELINES = ("embed", "score-variants")  # whole pipelines
EXAMPLE_GENOME = Path(__file__).resolve().parents[2] / "data" / "examples" / "synthetic_genome.fa"


def build_model(spec: str, device, dtype: str = "fp32", backend: str = "auto", seed: int = 0):
    """A loaded model: ``random:ps:256x16`` (seeded random weights) or a name/folder/hub id."""
    import torch

    from ...model import CaduceusConfig, CaduceusForMaskedLM
    from ...model.kernels.scan import resolve_backend
    from ...model.loading import resolve_model

    if not spec.startswith("random:"):
        return resolve_model(spec, device=device, backend=backend)
    try:
        _, variant, size = spec.split(":")
        d_model, n_layer = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise CaduceusError(f"--model {spec!r}: a random model is random:VARIANT:DxL, e.g. random:ps:256x16") from None
    torch.manual_seed(seed)
    model = CaduceusForMaskedLM(CaduceusConfig.small(variant, d_model=d_model, n_layer=n_layer)).to(device).eval()
    model.backend = resolve_backend(backend, torch.device(device))
    model.source = {"id": spec, "revision": None, "sha256": None}
    return model


def peak_memory_gib(device) -> float:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def _reset_peak(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _autocast(device, dtype: str):

    from ...model.precision import autocast, compute_dtype

    return autocast(device, compute_dtype(dtype, device))


def timed(step: Callable[[], None], device, repeats: int, warmup: int) -> float:
    """Median seconds of ``step`` over ``repeats`` runs after ``warmup`` untimed ones."""
    import torch

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if str(device).startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_speed(model, length: int, batch: int, dtype: str = "fp32", repeats: int = 5, warmup: int = 2) -> dict:
    """Tokens/s and peak memory of the embedding forward pass on random bases."""
    import torch

    ids = torch.randint(7, 11, (batch, length), device=model.device)

    def step():
        with torch.no_grad(), _autocast(model.device, dtype):
            model(ids, compute_logits=False)

    _reset_peak(model.device)
    seconds = timed(step, model.device, repeats, warmup)
    return {"seconds": seconds, "value": batch * length / seconds, "unit": "tokens/s",
            "peak_memory_gib": peak_memory_gib(model.device)}


def train_speed(model, length: int, batch: int, dtype: str = "fp32", repeats: int = 5, warmup: int = 2) -> dict:
    """Tokens/s and peak memory of a masked-LM training step (15% of positions masked)."""
    import torch
    import torch.nn.functional as F

    from ...dna import MASK

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 11, (batch, length), generator=generator)
    targets = torch.rand(batch, length, generator=generator) < 0.15
    inputs = ids.masked_fill(targets, MASK).to(model.device)
    labels = ids.masked_fill(~targets, -100).to(model.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step():
        with _autocast(model.device, dtype):
            logits = model(inputs).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    _reset_peak(model.device)
    try:
        seconds = timed(step, model.device, repeats, warmup)
    finally:
        model.eval()
    return {"seconds": seconds, "value": batch * length / seconds, "unit": "tokens/s",
            "peak_memory_gib": peak_memory_gib(model.device)}


def sample_regions(fasta, n: int, length: int, seed: int) -> list[tuple[str, int, int]]:
    """``n`` regions of ``length`` bp, contigs drawn in proportion to their length."""
    from ...genome.fasta import Reference

    with Reference(fasta) as ref:
        contigs = {name: size for name, size in ref.contigs.items() if size > length}
    if not contigs:
        raise CaduceusError(f"{fasta}: no contig is longer than {length} bp")
    rng = random.Random(seed)
    names, weights = list(contigs), [contigs[c] - length for c in contigs]
    out = []
    for _ in range(n):
        contig = rng.choices(names, weights)[0]
        start = rng.randrange(0, contigs[contig] - length)
        out.append((contig, start, start + length))
    return out


def embed_speed(model, fasta, n_regions: int, length: int, batch_size: int | None = None, seed: int = 0) -> dict:
    """Regions/s of ``embed_regions`` (BED parsing, FASTA reads, model, output) after a warm-up."""
    from ..embed import embed_regions

    regions = sample_regions(fasta, n_regions + 4, length, seed)
    with tempfile.TemporaryDirectory(prefix="caduceus-speed-") as tmp:
        for name, chunk in (("warm", regions[:4]), ("timed", regions[4:])):
            (Path(tmp) / f"{name}.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in chunk))
        options = dict(model=model, batch_size=batch_size, max_length=max(length, 1))
        embed_regions(str(fasta), str(Path(tmp) / "warm.bed"), str(Path(tmp) / "warm.parquet"), **options)
        _reset_peak(model.device)
        seconds = timed(lambda: embed_regions(str(fasta), str(Path(tmp) / "timed.bed"), str(Path(tmp) / "out.parquet"),
                                              **options), model.device, 1, 0)
    return {"seconds": seconds, "value": n_regions / seconds, "unit": "regions/s",
            "tokens_per_s": n_regions * length / seconds, "peak_memory_gib": peak_memory_gib(model.device)}


def variants_speed(model, fasta, n_variants: int, window: int, batch_size: int = 64, seed: int = 0) -> dict:
    """Variants/s of ``score_variants`` (all zero-shot scores) on seeded random SNVs of ``fasta``."""
    from ...genome.fasta import Reference
    from ..variants import score_variants

    sites = sample_regions(fasta, n_variants + 8, 1, seed)
    rng = random.Random(seed)
    with Reference(fasta) as ref, tempfile.TemporaryDirectory(prefix="caduceus-speed-") as tmp:
        records = []
        for contig, start, _ in sorted(sites):
            base = ref.fetch(contig, start, start + 1)[0].upper()
            alt = rng.choice([b for b in "ACGT" if b != base])
            records.append(f"{contig}\t{start + 1}\t.\t{base}\t{alt}\t.\t.\t.\n")
        header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={n}>\n" for c, n in ref.contigs.items())
        header += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        for name, chunk in (("warm", records[:8]), ("timed", records[8:])):
            (Path(tmp) / f"{name}.vcf").write_text(header + "".join(chunk))
        options = dict(model=model, window=window, batch_size=batch_size)
        score_variants(str(Path(tmp) / "warm.vcf"), str(fasta), str(Path(tmp) / "warm.out.vcf"), **options)
        _reset_peak(model.device)
        seconds = timed(lambda: score_variants(str(Path(tmp) / "timed.vcf"), str(fasta), str(Path(tmp) / "out.vcf"),
                                               **options), model.device, 1, 0)
    return {"seconds": seconds, "value": n_variants / seconds, "unit": "variants/s",
            "peak_memory_gib": peak_memory_gib(model.device)}


def _official(measure: str, model, length: int) -> dict | None:
    config = model.config
    key = ("ps" if config.rcps else "ph", config.d_model, config.n_layer, length)
    if measure == "forward" and key in OFFICIAL_FORWARD:
        return {"value": OFFICIAL_FORWARD[key], "unit": "tokens/s", "source": "gpu-readme"}
    if measure == "train" and key in OFFICIAL_TRAIN:
        value, peak = OFFICIAL_TRAIN[key]
        return {"value": value, "unit": "tokens/s", "peak_memory_gb": peak, "batch": 256, "source": "gpu-readme"}
    return None


def row_batch(measure: str, model, length: int, budget: int, tokens_per_batch: int | None) -> int:
    """Windows per timed pass: the official figure's batch where the row sits beside one (so that the
    two are timed at the same batch and length), else ``budget // length``; --tokens-per-batch wins."""
    if tokens_per_batch is None and _official(measure, model, length):
        return OFFICIAL_BATCH[length]
    return max(1, budget // length)


def _as_list(value, default: list) -> list:
    if value is None:
        return default
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def run_speed(models=DEFAULT_MODEL, measures=None, *, device=None, lengths=None, dtypes=None, backends=None,
              tokens_per_batch: int | None = None, repeats: int | None = None, regions: int = 64, variants: int = 64,
              fasta: str | None = None, note: Callable[[str], None] = print, **_ignored) -> list[dict]:
    """One row per measure, model, length, dtype and backend (see the module docstring)."""
    from ...runtime import resolve_device

    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    measures = _as_list(measures, list(SPEED_MEASURES))
    unknown = [m for m in measures if m not in SPEED_MEASURES]
    if unknown:
        raise CaduceusError(f"--tasks: {', '.join(unknown)} is not a speed measure ({', '.join(SPEED_MEASURES)})")
    lengths = parse_sizes("--lengths", lengths if lengths is not None else ([1536, 131072] if gpu else [1024]),
                          maximum=MAX_BASES)
    dtypes = _as_list(dtypes, ["auto"])
    if any(d not in DTYPES for d in dtypes):
        raise CaduceusError(f"--dtypes: choose from {', '.join(DTYPES)}")
    budget = tokens_per_batch or (262_144 if gpu else 8_192)
    repeats = repeats or (10 if gpu else 3)
    genome = fasta or str(EXAMPLE_GENOME)
    rows = []
    for spec in _as_list(models, [DEFAULT_MODEL]):
        for backend in _as_list(backends, ["auto"]):
            model = build_model(spec, dev, backend=backend)
            for dtype in dtypes:
                model.compute_dtype = dtype  # what the pipelines run in
                for length in lengths:
                    for measure in measures:
                        scale = max(1, length // 1536)  # long windows: fewer regions/variants, similar tokens
                        batch = row_batch(measure, model, length, budget, tokens_per_batch)
                        rows.append(_measure(measure, model, spec, length, batch, dtype, repeats,
                                             max(4, regions // scale), max(4, variants // scale), genome, note))
            del model
    return rows


def _measure(measure, model, spec, length, batch, dtype, repeats, regions, variants, genome, note) -> dict:
    import torch

    from ...model.precision import compute_dtype, dtype_name

    row = {"suite": "speed", "task": measure, "protocol": "speed", "model": spec, "variant": model.config.variant,
           "d_model": model.config.d_model, "n_layer": model.config.n_layer, "length": length,
           "batch": None if measure in PIPELINES else batch,
           "dtype": dtype_name(compute_dtype(dtype, model.device)),
           "backend": model.backend,
           "device": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu",
           "torch_threads": torch.get_num_threads(), "tool_version": __version__, "command": command_line(),
           "official": _official(measure, model, length)}
    try:
        if measure == "forward":
            result = forward_speed(model, length, batch, dtype, repeats)
        elif measure == "train":
            result = train_speed(model, length, batch, dtype, repeats)
        elif measure == "embed":
            result = embed_speed(model, genome, regions, length)
        else:
            result = variants_speed(model, genome, variants, length)
    except torch.OutOfMemoryError:
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        result = {"value": None, "unit": None, "error": "out of memory"}
    note(f"speed {measure} {spec} {length} bp {dtype}: "
         + (f"{result['value']:,.1f} {result['unit']}" if result.get("value") else result.get("error", "")))
    return {**row, **result, "metrics": {}}
