"""`caduceus finetune classify` with the paper's protocol on four tasks, within one time budget on a GPU:
MCC mean and min/max over seeds (GUE: --seeds 10, each with its own stratified 90/10 split, best
checkpoint on the test split) or folds (NT yeast H3: only its test split is available offline, so
10-fold CV), beside the published figures; training bases/s and peak GPU memory.

Every task gets a share of --budget seconds as its --max-time: a task that cannot finish all its
runs in that time stops cleanly and reports the runs it completed (the table says how many), so
the whole script fits one device call. Epochs per task are set so that, at about 1 M training
bases/s, every run completes (GUE prom_core_all and tf_0 have 30-40 k training sequences: 2 epochs;
the paper used 10).

    python benchmarks/finetune_gpu.py --json $OUT/finetune_gpu.json            # on the H200
    python benchmarks/finetune_gpu.py --device cpu --budget 30 --tasks mouse_0 --max-train 64 \\
        --model tiny_model_dir                                                 # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# name: (layout, protocol, epochs, share of the budget)
PLAN = {
    "prom_core_all": ("gue", "seeds", 2, 0.27),
    "tf_0": ("gue", "seeds", 2, 0.27),
    "mouse_0": ("gue", "seeds", 5, 0.2),
    "H3": ("yeast", "folds", 10, 0.26),
}
# Fine-tuned MCC, Caduceus paper Table 2 (NT yeast H3; ../shared/data/published_figures.md); frozen-
# embedding AUROC of Caduceus-Ph (Nature Communications 2025; ../shared/data/README.md) for GUE.
PUBLISHED = {
    "H3": {"mcc": {"Caduceus-Ph": 0.815, "Caduceus-PS": 0.799, "HyenaDNA": 0.779, "NT-v2": 0.784,
                   "DNABERT-2": 0.785}},
    "prom_core_all": {"probe_auroc": {"Caduceus-Ph": 0.875}},
    "tf_0": {"probe_auroc": {"Caduceus-Ph": 0.880}},
    "mouse_0": {"probe_auroc": {"Caduceus-Ph": 0.684}},
}


def data_root(given: str | None) -> Path:
    for candidate in ([Path(given)] if given else [REPO.parent / "shared" / "data" / "tasks",
                                                   REPO / "shared" / "data" / "tasks"]):
        if candidate.is_dir():
            return candidate
    sys.exit("no tasks folder: pass --data .../shared/data/tasks")


def run_task(name: str, tasks: Path, args, work: Path) -> dict:
    import shutil

    from caduceus_cli.genome.labeled import read_labeled_sequences
    from caduceus_cli.pipelines.finetune import finetune_classifier

    layout, protocol, epochs, share = PLAN[name]
    shutil.rmtree(work / name, ignore_errors=True)
    if layout == "gue":
        train = read_labeled_sequences(tasks / "gue" / name / "train.csv.gz")
        test = read_labeled_sequences(tasks / "gue" / name / "test.csv.gz")
    else:
        train, test = read_labeled_sequences(tasks / "nt_yeast_histone" / name / "test.fna.gz"), None
    if args.max_train:
        train = train.subset(range(min(args.max_train, len(train))))
        test = None if test is None else test.subset(range(min(args.max_train, len(test))))
    runs = {"seeds": args.runs} if protocol == "seeds" else {"folds": args.runs}
    started = time.perf_counter()
    report = finetune_classifier(train, work / name, model=args.model, test=test, epochs=args.epochs or epochs,
                                 batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, device=args.device,
                                 max_time=args.budget * share, **runs)
    seconds = time.perf_counter() - started
    part = "cv" if protocol == "folds" else "test"
    summary = report["summary"].get(part) or {}
    done = report["runs"]
    speeds = [r["train_bases_per_s"] for r in done if r.get("train_bases_per_s")]
    peaks = [r["peak_memory_gib"] for r in done if r.get("peak_memory_gib") is not None]
    return {"task": name, "protocol": f"{protocol} {args.runs}", "epochs": args.epochs or epochs,
            "runs_completed": len(done), "runs_planned": report["runs_planned"], "status": report["status"],
            "mcc": summary.get("mcc"), "auroc": summary.get("auroc"), "f1": summary.get("f1"),
            "train_records": len(train), "test_records": None if test is None else len(test),
            "train_bases_per_s": sum(speeds) / len(speeds) if speeds else None,
            "peak_memory_gib": max(peaks) if peaks else None, "seconds": round(seconds, 1),
            "published": PUBLISHED.get(name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="the tasks folder (default: ../shared/data/tasks)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--tasks", nargs="*", default=list(PLAN))
    parser.add_argument("--runs", type=int, default=10, help="seeds (GUE) or folds (H3)")
    parser.add_argument("--epochs", type=int, default=None, help="override every task's epochs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=512, help="sequences per validation/test batch")
    parser.add_argument("--budget", type=float, default=250.0, help="seconds for all tasks together")
    parser.add_argument("--max-train", type=int, default=None, help="first N records only (smoke tests)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", default="/tmp/caduceus-finetune-gpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from caduceus_cli.model.kernels.scan import cuda_kernels

    tasks, work = data_root(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "kernels": {k: v is not None for k, v in cuda_kernels().items()}}
    results = []
    for name in args.tasks:
        results.append(run_task(name, tasks, args, work))
        r = results[-1]
        mcc = r["mcc"] or {}
        print(f"{name}\t{r['protocol']}\t{r['runs_completed']}/{r['runs_planned']} runs\tMCC "
              f"{mcc.get('mean', float('nan')):.3f} ({mcc.get('min', float('nan')):.3f}..{mcc.get('max', float('nan')):.3f})"
              f"\t{(r['train_bases_per_s'] or 0):,.0f} bases/s\t{r['peak_memory_gib'] or 0:.2f} GiB\t{r['seconds']:.0f} s",
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"environment": env, "settings": vars(args), "results": results},
                                                  indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
