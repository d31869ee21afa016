"""`caduceus finetune probe` of one model on the 12 labeled tasks in ../shared/data/tasks: wall time
and AUROC per task, beside the published frozen-embedding AUROC of Caduceus-Ph.

GUE tasks: probe fit on the train split (C by 5-fold CV), AUROC on the test split. NT yeast tasks
(only the test split is available offline): 10-fold stratified cross-validation of that split.
Splits larger than --max-train / --max-test / --max-yeast records are subsampled (stratified, seed 0)
so that the run takes minutes per task on a laptop CPU; the sizes used are in the output.

    python benchmarks/finetune_probe_tasks.py --json docs/runs/finetune_probe_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GUE = ("prom_core_all", "prom_core_notata", "prom_core_tata", "tf_0", "tf_1", "mouse_0", "mouse_2")
YEAST = ("H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2")
# Frozen embeddings, mean pooling, AUROC: Caduceus-Ph (human-pretrained), Nature Communications 2025,
# "Benchmarking DNA foundation models for genomic and genetic tasks" (quoted in ../shared/data/README.md).
PUBLISHED_PH_AUROC = {"prom_core_all": 0.875, "prom_core_notata": 0.896, "prom_core_tata": 0.810, "tf_0": 0.880,
                      "tf_1": 0.869, "mouse_0": 0.684, "mouse_2": 0.947, "H3": 0.929, "H3K14ac": 0.730,
                      "H3K36me3": 0.766, "H3K4me1": 0.707, "H3K4me2": 0.690}


def subsample(data, limit: int | None, seed: int = 0):
    """At most ``limit`` records, the same fraction of every label, in file order."""
    if limit is None or len(data) <= limit:
        return data
    labels = np.array([str(x) for x in data.labels])
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(rng.choice(members, max(1, round(limit * len(members) / len(data))), replace=False))
    return data.subset(np.sort(np.concatenate(keep)))


def run_task(name: str, tasks: Path, args, work: Path) -> dict:
    from caduceus_cli.genome.labeled import read_labeled_sequences
    from caduceus_cli.pipelines.finetune import fit_probe

    started, cpu = time.perf_counter(), time.process_time()
    if name in GUE:
        folder = tasks / "gue" / name
        train = read_labeled_sequences(folder / "train.csv.gz")
        test = read_labeled_sequences(folder / "test.csv.gz")
        sizes = {"train_total": len(train), "test_total": len(test)}
        train, test = subsample(train, args.max_train), subsample(test, args.max_test)
        report = fit_probe(train, work / name, model=args.model, test=test, device=args.device,
                           batch_size=args.batch_size, cache=False)
        auroc = report["summary"]["test"]["auroc"]["mean"]
        protocol = "train -> test"
    else:
        data = read_labeled_sequences(tasks / "nt_yeast_histone" / name / "test.fna.gz")
        sizes = {"train_total": len(data), "test_total": None}
        train, test = subsample(data, args.max_yeast), None
        report = fit_probe(train, work / name, model=args.model, folds=args.folds, device=args.device,
                           batch_size=args.batch_size, cache=False)
        auroc = report["summary"]["cv"]["auroc"]["mean"]
        protocol = f"{args.folds}-fold CV of the test split"
    return {"task": name, "protocol": protocol, "auroc": auroc, "published_ph_auroc": PUBLISHED_PH_AUROC[name],
            "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "feature_seconds": report["features"]["seconds"], "load_average_1m": os.getloadavg()[0],
            "train_used": len(train), "test_used": None if test is None else len(test), **sizes,
            "length": len(train.sequences[0]), "C": [r["C"] for r in report["runs"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tasks"))
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--tasks", nargs="*", default=[*GUE, *YEAST])
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--max-yeast", type=int, default=400)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work", default="/tmp/caduceus-probe-tasks", help="where the probe folders go (replaced)")
    parser.add_argument("--json", help="write the results here (tasks already in it are skipped: resumable)")
    args = parser.parse_args()
    import shutil

    import torch

    tasks, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.json and Path(args.json).is_file():
        done = {r["task"]: r for r in json.loads(Path(args.json).read_text())["results"]}
    for name in args.tasks:
        if name in done:
            continue
        shutil.rmtree(work / name, ignore_errors=True)
        done[name] = run_task(name, tasks, args, work)
        r = done[name]
        print(f"{name}\t{r['auroc']:.3f}\t{r['published_ph_auroc']:.3f}\t{r['seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU)\t"
              f"train {r['train_used']}/{r['train_total']}", flush=True)
        if args.json:
            results = [done[t] for t in args.tasks if t in done]
            Path(args.json).write_text(json.dumps({"model": args.model, "device": args.device,
                                                   "torch_threads": torch.get_num_threads(),
                                                   "settings": vars(args), "results": results},
                                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
