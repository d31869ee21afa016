"""Long-range measurements in one run: score-variants at the paper's context beside the bare forward,
and a long fine-tuning step with and without whole-block gradient checkpointing. Writes one JSON.

    python benchmarks/long_range_gpu.py --out long_range_h100.json                 # one GPU, the real run
    python benchmarks/long_range_gpu.py --smoke --device cpu --out smoke.json      # tiny sizes, any CPU

The real run (defaults): a random-weights Caduceus-PS 256 x 16 (the published size; speed does not
depend on the weights) scores the first ``--n`` records of the real 1000 Genomes VCF
(``../shared/data/variants``) with all zero-shot scores at context 131,072 and window 1,536, after
an untimed warm-up; then the bare forward (``caduceus benchmark speed``'s) at the pipeline's batch
and length; then one fine-tuning step (classification head, AdamW, bf16 autocast) on 131,072 bp
sequences at batch 1 and 8, with and without ``--checkpoint-blocks``, and at batch 8 with
checkpointing in the micro-batches ``finetune classify`` picks by default (gradients of the
micro-batches added up), each out-of-memory caught and reported. Each measurement records its peak memory (``torch.cuda.max_memory_allocated``; on a CPU
the process's peak resident size, a high-water mark) beside the activation estimate of
``caduceus_cli.pipelines.variants.context.peak_activation_bytes``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "variants"
OFFICIAL_VARIANTS_PER_SECOND = 3.6  # official pipeline, PS 256x16 on an H200: 0.938 M tokens/s / (2 x 131,072)
SMOKE = {"model": "random:ps:16x2", "n": 4, "warmup": 1, "context": 2048, "window": 128, "train_length": 1024,
         "train_batches": "1,2", "repeats": 1}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (runs in seconds on a CPU)")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--model", default="random:ps:256x16")
    ap.add_argument("--n", type=int, default=64, help="records of the real VCF scored (timed)")
    ap.add_argument("--warmup", type=int, default=2, help="records scored first, untimed")
    ap.add_argument("--context", type=int, default=131072)
    ap.add_argument("--window", type=int, default=1536)
    ap.add_argument("--scores", default=None, help="comma-separated scores (default: score-variants' own)")
    ap.add_argument("--skip-finetune", action="store_true", help="only the score-variants and forward rows")
    ap.add_argument("--train-length", type=int, default=131072)
    ap.add_argument("--train-batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the forward and the training step")
    ap.add_argument("--vcf", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"))
    ap.add_argument("--fasta", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.fa"))
    args = ap.parse_args(argv)
    if args.smoke:
        given = {a[2:].split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])
                 if a.startswith("--")}
        for key, value in SMOKE.items():
            if key not in given:
                setattr(args, key, value)
    return args


def first_records(vcf: str, n: int, skip: int, path: Path) -> int:
    """The header and records skip+1 .. skip+n of ``vcf`` into ``path``; returns the records written."""
    written = seen = 0
    with gzip.open(vcf, "rt") as f, open(path, "w") as out:
        for line in f:
            if line.startswith("#"):
                out.write(line)
                continue
            seen += 1
            if seen <= skip:
                continue
            if written == n:
                break
            out.write(line)
            written += 1
    return written


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def gib(n: float) -> float:
    return round(n / 2**30, 3)


def score_variants_run(model, args, tmp: Path) -> dict:
    """variants/s and tokens/s of score_variants at the context, peak memory, its batch."""
    import torch

    from caduceus_cli.pipelines.benchmark.speed import peak_memory_gib
    from caduceus_cli.pipelines.variants import score_variants
    from caduceus_cli.pipelines.variants.context import peak_activation_bytes

    tokens = {"n": 0}
    hook = model.caduceus.register_forward_pre_hook(lambda _module, inputs: tokens.__setitem__(
        "n", tokens["n"] + inputs[0].numel()))
    options = dict(model=model, context=args.context, window=args.window, fmt="tsv")
    if args.scores:
        options["scores"] = args.scores.split(",")
    first_records(args.vcf, args.warmup, 0, tmp / "warmup.vcf")
    score_variants(str(tmp / "warmup.vcf"), args.fasta, str(tmp / "warmup.tsv"), **options)
    records = first_records(args.vcf, args.n, args.warmup, tmp / "timed.vcf")
    reset_peak(model.device)
    tokens["n"] = 0
    started = time.perf_counter()
    summary = score_variants(str(tmp / "timed.vcf"), args.fasta, str(tmp / "timed.tsv"), **options)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    seconds = time.perf_counter() - started
    hook.remove()
    batch = summary["batch_size"]
    return {"records": records, "alts": summary["alts"], "scored": summary["scored"], "seconds": round(seconds, 3),
            "variants_per_second": summary["scored"] / seconds, "model_tokens": tokens["n"],
            "tokens_per_second": tokens["n"] / seconds, "batch_size": batch,
            "peak_memory_gib": round(peak_memory_gib(model.device), 3),
            "estimated_activation_gib": gib(peak_activation_bytes(model.config, batch, args.context,
                                                                  device_type=model.device.type))}


def forward_run(model, length: int, batch: int, repeats: int) -> dict:
    from caduceus_cli.pipelines.benchmark.speed import forward_speed
    from caduceus_cli.pipelines.variants.context import peak_activation_bytes

    reset_peak(model.device)
    dtype = "bf16" if model.device.type == "cuda" else "fp32"
    result = forward_speed(model, length, batch, dtype, repeats=repeats, warmup=1)
    return {"batch": batch, "length": length, "dtype": dtype, "seconds": round(result["seconds"], 4),
            "tokens_per_second": result["value"], "peak_memory_gib": round(result["peak_memory_gib"], 3),
            "estimated_activation_gib": gib(peak_activation_bytes(model.config, batch, length,
                                                                  device_type=model.device.type))}


def default_micro_batch(config, device, length: int, batch: int) -> int:
    """The micro-batch ``finetune classify`` picks on this GPU with checkpointing (the whole batch on a CPU)."""
    import torch

    from caduceus_cli.pipelines.variants.context import training_micro_batch

    if device.type != "cuda":
        return max(1, batch // 2)
    total = torch.cuda.get_device_properties(device).total_memory
    state = 16 * (config.n_layer * 12 * config.d_model ** 2)  # weights, gradients, AdamW (about)
    return training_micro_batch(config, length, batch, int(0.85 * total) - state, checkpoint=True)


def train_step_run(config, device, length: int, batch: int, checkpoint: bool, repeats: int,
                   micro: int | None = None) -> dict:
    """Seconds and peak memory of one fine-tuning step (forward, cross-entropy, backward, AdamW),
    in passes of ``micro`` sequences whose gradients add up (None: the whole batch at once)."""
    import torch
    import torch.nn.functional as F

    from caduceus_cli.model.caduceus import CaduceusForSequenceClassification
    from caduceus_cli.model.kernels.scan import resolve_backend
    from caduceus_cli.model.precision import autocast
    from caduceus_cli.pipelines.benchmark.speed import peak_memory_gib, timed
    from caduceus_cli.pipelines.variants.context import peak_activation_bytes

    per = micro or batch
    row = {"length": length, "batch": batch, "checkpoint_blocks": checkpoint, "micro_batch": per,
           "estimated_activation_gib": gib(peak_activation_bytes(config, per, length, device_type=device.type,
                                                                 training=True, checkpoint=checkpoint))}
    model = optimizer = None
    try:
        torch.manual_seed(0)
        model = CaduceusForSequenceClassification(config, conjoin_train=True).to(device).train()
        model.backend = resolve_backend("auto", device)
        model.backbone.checkpoint_blocks = checkpoint
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
        ids = torch.randint(7, 11, (batch, length), device=device)
        labels = torch.randint(0, 2, (batch,), device=device)

        def step():
            for start in range(0, batch, per):
                with autocast(device):
                    logits = model(ids[start:start + per])
                F.cross_entropy(logits.float(), labels[start:start + per], reduction="sum").div(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        reset_peak(device)
        row["seconds_per_step"] = round(timed(step, device, repeats, 1), 4)
        row["tokens_per_second"] = batch * length / row["seconds_per_step"]
        row["peak_memory_gib"] = round(peak_memory_gib(device), 3)
        row["oom"] = False
    except torch.cuda.OutOfMemoryError as e:
        row.update(oom=True, error=str(e).splitlines()[0][:300])
    finally:
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from caduceus_cli import __version__
    from caduceus_cli.pipelines.benchmark.speed import build_model
    from caduceus_cli.runtime import device_name, resolve_device

    device = resolve_device(args.device)
    model = build_model(args.model, device)
    result = {"tool_version": __version__, "command": " ".join(["python", *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
              "smoke": args.smoke, "model": args.model, "context": args.context, "window": args.window,
              "backend": model.backend, "scores": args.scores or "default"}
    with tempfile.TemporaryDirectory(prefix="caduceus-long-range-") as tmp:
        result["score_variants"] = score_variants_run(model, args, Path(tmp))
    batch = result["score_variants"]["batch_size"]
    result["forward"] = forward_run(model, args.context, batch, args.repeats)
    sv = result["score_variants"]
    result["pipeline_over_forward_tokens"] = sv["tokens_per_second"] / result["forward"]["tokens_per_second"]
    result["official_variants_per_second_h200"] = OFFICIAL_VARIANTS_PER_SECOND
    result["over_official"] = sv["variants_per_second"] / OFFICIAL_VARIANTS_PER_SECOND
    config = model.config
    del model
    if args.skip_finetune:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return result
    result["finetune"] = [train_step_run(config, device, args.train_length, int(b), checkpoint, args.repeats)
                          for b in args.train_batches.split(",") for checkpoint in (False, True)]
    largest = max(int(b) for b in args.train_batches.split(","))
    if largest > 1:
        micro = default_micro_batch(config, device, args.train_length, largest)
        result["finetune"].append(train_step_run(config, device, args.train_length, largest, True, args.repeats,
                                                 micro))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
