"""Cost of `predict --attribute` per sequence: plain prediction, saliency and ISM, wall and CPU time.

    python benchmarks/attribution_cpu.py CLASSIFIER_DIR seqs.csv [--n 100] [--n-ism 10] [--device cpu]

Each method runs through ``predict()`` (the function behind `caduceus predict`) on the first
``--n`` records of the input (``--n-ism`` for ISM, which costs 3 x L passes per sequence), after
one untimed warm-up call (numba compiles its kernels on first use). CPU time is the process's user
plus system time (all threads); prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from caduceus_cli.genome.labeled import iter_records  # noqa: E402
from caduceus_cli.pipelines.finetune import predict  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_records(path: str, n: int, folder: Path) -> Path:
    out = folder / f"first{n}.fa"
    records = itertools.islice(iter_records(path, labels=False), n)
    out.write_text("".join(f">{r.name}\n{r.sequence}\n" for r in records))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classifier")
    parser.add_argument("input")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n-ism", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        inputs = {n: first_records(args.input, n, Path(tmp)) for n in {args.n, args.n_ism}}
        predict(args.classifier, inputs[args.n_ism], attribute="saliency", device=args.device)  # warm-up
        report = {"classifier": args.classifier, "device": args.device, "threads": torch.get_num_threads()}
        for method, n in (("plain", args.n), ("saliency", args.n), ("ism", args.n_ism)):
            cpu, wall = cpu_seconds(), time.time()
            predict(args.classifier, inputs[n], attribute=None if method == "plain" else method, device=args.device)
            report[method] = {"sequences": n, "wall_s_per_sequence": round((time.time() - wall) / n, 3),
                              "cpu_s_per_sequence": round((cpu_seconds() - cpu) / n, 3)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
