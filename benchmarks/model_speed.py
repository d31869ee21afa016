"""Forward-pass throughput (tokens/s) and peak memory of Caduceus PS/Ph models.

    python benchmarks/model_speed.py --device cuda --dtype bf16 --backend triton --batch 256 --lengths 1536
    python benchmarks/model_speed.py --device cuda --dtype bf16 --official .official --batch 256 --lengths 1536
    python benchmarks/model_speed.py --device cpu --backend numba --configs ps:128x4 --lengths 1536 --batch 4

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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM  # noqa: E402
from caduceus_cli.model.kernels.scan import BACKENDS, resolve_backend  # noqa: E402
from caduceus_cli.model.kernels.versions import using_kernels  # noqa: E402
from caduceus_cli.pipelines.benchmark.speed import forward_speed  # noqa: E402

DTYPES = ("fp32", "bf16")


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
        result = forward_speed(model, length, batch, args.dtype if device.type == "cuda" else "fp32",
                               args.repeats, args.warmup)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {**row, "error": "out of memory"}
    # CPU: the process's peak RSS so far (rows run in order, so a later row's figure includes earlier ones)
    return {
        **row, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype if device.type == "cuda" else "fp32", "threads": torch.get_num_threads(),
        "seconds": round(result["seconds"], 4), "tokens_per_s": round(batch * length / result["seconds"]),
        "peak_memory_gib": round(result["peak_memory_gib"], 2), "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=DTYPES)
    ap.add_argument("--backend", default="auto", help=f"one of {', '.join(BACKENDS)}, or several separated by commas")
    ap.add_argument("--official", metavar="FOLDER", help="time the official implementation found in FOLDER/caduceus")
    ap.add_argument("--batch", type=int, help="windows per forward pass, the same for every length (default: "
                    "--tokens-per-batch // length)")
    ap.add_argument("--configs", default="ps:256x16,ph:256x16,ps:128x4,ph:128x4")
    ap.add_argument("--lengths", default="1536,131072")
    ap.add_argument("--tokens-per-batch", type=int, default=262144, help="batch = max(1, this // length)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--kernels", default="new", help="kernel sets to time in turn, separated by commas: old, new "
                    "or VAR=VALUE pairs joined by '+' (see caduceus_cli/model/kernels/versions.py)")
    ap.add_argument("--json", help="write rows to this JSON file")
    args = ap.parse_args(argv)
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
            batch = args.batch or max(1, args.tokens_per_batch // length)
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


if __name__ == "__main__":
    main()
