"""Forward-pass throughput (tokens/s) and peak memory of Caduceus PS/Ph models.

    python benchmarks/model_speed.py --device cuda --dtype bf16 --backend triton --batch 256 --lengths 1536
    python benchmarks/model_speed.py --device cuda --dtype bf16 --official .official --batch 256 --lengths 1536
    python benchmarks/model_speed.py --device cpu --backend numba --configs ps:128x4 --lengths 1536 --batch 4
    python benchmarks/model_speed.py --cpu-compare --model bundled --lengths 1024 --batch 8,64 --repeats 5

--backend: triton | mamba-ssm (alias cuda) | torch | numba | auto, or several separated by commas
(each row then times every backend in turn on the same model and inputs, in this process). --batch fixes the batch (windows)
so that every implementation runs the same one; without it, batch = --tokens-per-batch // length.
--official FOLDER times the official kuleshov-group/caduceus modeling code instead (FOLDER holds its
``caduceus/`` package; it needs mamba-ssm and transformers), built from the same configuration.
--kernels old,new times each kernel set of ``caduceus_cli.model.kernels.versions`` in turn on the
same model and inputs (the Triton backend's old and new paths side by side).

Weights are random (speed does not depend on them). Each row: warm-up, then the median of
--repeats timed forward passes (CUDA events on GPU). Peak memory: torch.cuda.max_memory_allocated
on GPU, the process's peak RSS on CPU. Embedding-style forward: hidden states, no LM head. The
measuring code is `caduceus_cli.pipelines.benchmark.speed.forward_speed` (also behind `caduceus
benchmark speed`); this script adds the official implementation and a fixed batch for comparisons.

--cpu-compare times, on the CPU, in this one process and on the same inputs, the channels-first
numba path in fp32 (the CPU path before kernels/mixer_cpu.py: `mixer_cpu.channels_first()`) against
the channels-last path in fp32 and in the compute dtype of --dtype auto, interleaving the repeats
(A B C A B C ...) so that a machine shared with other work slows all of them alike; it prints the
median seconds, tokens/s and speed-up of each, with the load average before and after (compare
ratios, not absolute figures, when the load is above the core count). --batch may list several.
--model bundled times the bundled model's weights instead of random ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM  # noqa: E402
from caduceus_cli.model.kernels.scan import BACKENDS, resolve_backend  # noqa: E402
from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402
from caduceus_cli.model.precision import compute_dtype, dtype_name  # noqa: E402
from caduceus_cli.pipelines.benchmark.speed import forward_speed  # noqa: E402

DTYPES = ("fp32", "bf16", "auto")


def official_model(folder: str, config: CaduceusConfig, device):
    """The official implementation's CaduceusForMaskedLM for ``config``, imported from ``folder``
    without running its package __init__ (which also imports its tokenizer)."""
    import importlib.util
    import types

    pkg_dir = Path(folder).resolve() / "caduceus"
    if not (pkg_dir / "modeling_caduceus.py").exists():
        raise SystemExit(f"{pkg_dir}/modeling_caduceus.py not found: --official wants the folder holding caduceus/")
    pkg = types.ModuleType("caduceus")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["caduceus"] = pkg
    modules = {}
    for name in ("configuration_caduceus", "modeling_rcps", "modeling_caduceus"):
        spec = importlib.util.spec_from_file_location(f"caduceus.{name}", pkg_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"caduceus.{name}"] = mod
        spec.loader.exec_module(mod)
        modules[name] = mod
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("architectures", "model_type")}
    official_cfg = modules["configuration_caduceus"].CaduceusConfig(**cfg)
    cls = modules["modeling_caduceus"].CaduceusForMaskedLM
    own_tie = cls.tie_weights
    # transformers >= 5 calls tie_weights(recompute_mapping=...), which the official class does not take
    cls.tie_weights = lambda self, *args, **kwargs: own_tie(self)
    return cls(official_cfg).to(device).eval()


class _OfficialBackbone(torch.nn.Module):
    """Calls the official model like ours is called here: hidden states, no LM head."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, ids, compute_logits=False):
        return self.model.caduceus(input_ids=ids, return_dict=False)


def _row(model, length, batch, backend, variant, d_model, n_layer, args) -> dict:
    """Time one backend at ``batch`` x ``length``; the row of the results table."""
    device = torch.device(args.device)
    if backend != "official":
        model.backend = backend
    row = {"model": f"{variant.upper()} {d_model}x{n_layer}", "length": length, "batch": batch, "backend": backend,
           "kernels": args.kernel_set}
    try:
        result = forward_speed(model, length, batch, args.dtype, args.repeats, args.warmup)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {**row, "error": "out of memory"}
    # CPU: the process's peak RSS so far (rows run in order, so a later row's figure includes earlier ones)
    return {
        **row, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype_name(compute_dtype(args.dtype, device)), "threads": torch.get_num_threads(),
        "seconds": round(result["seconds"], 4), "tokens_per_s": round(batch * length / result["seconds"]),
        "peak_memory_gib": round(result["peak_memory_gib"], 2), "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_compare(model, length: int, batch: int, repeats: int, warmup: int) -> dict:
    """Median seconds of the forward at ``batch`` x ``length`` on the CPU: 'today' (channels-first
    numba path, fp32), 'fp32' and 'auto' (channels-last path), repeats interleaved."""
    import statistics
    import time

    from caduceus_cli.model.kernels.mixer_cpu import channels_first
    from caduceus_cli.model.precision import autocast, compute_dtype, cpu_bf16_matrix_units, dtype_name

    auto = compute_dtype("auto", "cpu")
    ids = torch.randint(7, 11, (batch, length), generator=torch.Generator().manual_seed(0))
    model.backend = "numba"
    paths = {"today": (True, torch.float32), "fp32": (False, torch.float32), "auto": (False, auto)}

    def run(name):
        old_path, dtype = paths[name]
        with torch.no_grad(), autocast("cpu", dtype), (channels_first() if old_path else contextlib.nullcontext()):
            start = time.perf_counter()
            out = model(ids, compute_logits=False).last_hidden_state
            return time.perf_counter() - start, out

    load_before = _load()
    outputs = {}
    for name in paths:
        for _ in range(warmup):
            _, outputs[name] = run(name)
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name in paths:
            times[name].append(run(name)[0])
    median = {name: statistics.median(t) for name, t in times.items()}
    ref = outputs["today"].float()
    return {
        "length": length, "batch": batch, "threads": torch.get_num_threads(), "auto_dtype": dtype_name(auto),
        "cpu_bf16_matrix_units": cpu_bf16_matrix_units(),
        **{f"{name}_s": round(median[name], 4) for name in paths},
        **{f"{name}_tokens_per_s": round(batch * length / median[name]) for name in paths},
        "speedup_fp32": round(median["today"] / median["fp32"], 2),
        "speedup_auto": round(median["today"] / median["auto"], 2),
        "max_abs_diff_fp32": float((outputs["fp32"].float() - ref).abs().max()),
        "max_abs_diff_auto": float((outputs["auto"].float() - ref).abs().max()),
        "all_times_s": {name: [round(x, 4) for x in t] for name, t in times.items()},
        "loadavg_before": load_before, "loadavg_after": _load(), "cores": os.cpu_count(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype (auto: bf16 on a GPU and on CPUs "
                    "with bf16 matrix units, else fp32)")
    ap.add_argument("--backend", default="auto", help=f"one of {', '.join(BACKENDS)}, or several separated by commas")
    ap.add_argument("--official", metavar="FOLDER", help="time the official implementation found in FOLDER/caduceus")
    ap.add_argument("--batch", help="windows per forward pass, the same for every length (default: "
                    "--tokens-per-batch // length); --cpu-compare: a comma-separated list")
    ap.add_argument("--configs", default="ps:256x16,ph:256x16,ps:128x4,ph:128x4")
    ap.add_argument("--lengths", default="1536,131072")
    ap.add_argument("--tokens-per-batch", type=int, default=262144, help="batch = max(1, this // length)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--kernels", default="new", help="kernel sets to time in turn, separated by commas: old, new "
                    "or VAR=VALUE pairs joined by '+' (see caduceus_cli/model/kernels/versions.py)")
    ap.add_argument("--json", help="write rows to this JSON file")
    ap.add_argument("--cpu-compare", action="store_true", help="CPU: today's channels-first fp32 path against the "
                    "channels-last path in fp32 and --dtype auto, interleaved (see above)")
    ap.add_argument("--model", help="with --cpu-compare: 'bundled' for the bundled model's weights (default: "
                    "random weights of --configs)")
    ap.add_argument("--threads", type=int, help="CPU threads (torch and numba; default: all cores)")
    args = ap.parse_args(argv)
    if args.threads is not None or args.device == "cpu":
        from caduceus_cli.runtime import set_threads

        set_threads(args.threads)
    if args.cpu_compare:
        return main_cpu_compare(args)
    device = torch.device(args.device)
    backends = ["official"] if args.official else [resolve_backend(b, device) for b in args.backend.split(",")]
    rows = []
    for spec in args.configs.split(","):
        variant, size = spec.split(":")
        d_model, n_layer = map(int, size.split("x"))
        torch.manual_seed(0)
        config = CaduceusConfig.small(variant, d_model, n_layer)
        if args.official:
            model = _OfficialBackbone(official_model(args.official, config, device))
        else:
            model = CaduceusForMaskedLM(config).to(device).eval()
        for length in map(int, args.lengths.split(",")):
            batch = int(args.batch) if args.batch else max(1, args.tokens_per_batch // length)
            for backend in backends:
                for kernels in args.kernels.split(","):
                    args.kernel_set = kernels
                    with using_kernels(kernels):
                        rows.append(_row(model, length, batch, backend, variant, d_model, n_layer, args))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        del model
    print(f"{'model':<12}{'length':>8}{'batch':>7}{'backend':>10}{'kernels':>9}{'dtype':>6}{'Mtok/s':>9}"
          f"{'peak GiB':>10}")
    for r in rows:
        head = f"{r['model']:<12}{r['length']:>8}{r['batch']:>7}{r['backend']:>10}{r['kernels']:>9}"
        if "error" in r:
            print(f"{head}  {r['error']}")
        else:
            print(f"{head}{r['dtype']:>6}{r['tokens_per_s'] / 1e6:>9.3f}{r['peak_memory_gib']:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def main_cpu_compare(args) -> None:
    """--cpu-compare: one JSON row per model, length and batch, and a table."""
    rows = []
    if args.model == "bundled":
        from caduceus_cli.model.loading import resolve_model

        models = [("bundled", resolve_model("bundled", device="cpu", backend="numba"))]
    else:
        models = []
        for spec in args.configs.split(","):
            variant, size = spec.split(":")
            d_model, n_layer = map(int, size.split("x"))
            torch.manual_seed(0)
            models.append((spec, CaduceusForMaskedLM(CaduceusConfig.small(variant, d_model, n_layer)).eval()))
    batches = [int(b) for b in (args.batch or "8").split(",")]
    for name, model in models:
        for length in map(int, args.lengths.split(",")):
            for batch in batches:
                row = {"model": name, **cpu_compare(model, length, batch, args.repeats, args.warmup)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"{'model':<10}{'length':>7}{'batch':>6}{'today tok/s':>12}{'fp32 tok/s':>11}{'auto tok/s':>11}"
          f"{'x fp32':>7}{'x auto':>7}  auto  load before/after")
    for r in rows:
        print(f"{r['model']:<10}{r['length']:>7}{r['batch']:>6}{r['today_tokens_per_s']:>12}{r['fp32_tokens_per_s']:>11}"
              f"{r['auto_tokens_per_s']:>11}{r['speedup_fp32']:>7}{r['speedup_auto']:>7}  {r['auto_dtype']:<5} "
              f"{r['loadavg_before'][0]} / {r['loadavg_after'][0]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
