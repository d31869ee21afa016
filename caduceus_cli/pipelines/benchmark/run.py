"""``run_benchmark``: every task of a suite through one protocol (and the k-mer baseline), one report.

Per task: locate (or download) its data, read the splits, run the protocol through the finetune
engine (``fit_probe`` or ``finetune_classifier``), run the baseline on the very same splits, and
append the task's rows to ``results.jsonl`` at once; the summary is rewritten after every task.
Tasks with only a test split are evaluated by stratified K-fold cross-validation on it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...choices import DEFAULT_MODEL
from ..._version import __version__
from ...errors import CaduceusError
from ...io import command_line, refuse_overwriting_inputs
from ...limits import MAX_BASES, MAX_BATCH, MAX_COUNT, MAX_REPEATS, check_size
from ...runtime import device_name
from . import baseline as kmer
from . import report
from .loaders import TaskData, load_task, subsample
from .registry import Suite, Task, get_suite, select_tasks
from .sources import default_cache, locate, tasks_present

log = logging.getLogger("caduceus")

PROTOCOLS = ("probe", "finetune")
BASELINES = ("kmer",)


@dataclass
class Plan:
    """Everything a task needs to know about this run."""

    suite: Suite
    protocol: str
    model: object = DEFAULT_MODEL
    seeds: list[int] = field(default_factory=lambda: [1])
    epochs: int | None = None
    folds: int = 5
    baseline: str | None = None
    device: str | None = None
    batch_size: int | None = None
    max_sequences: int | None = None
    embedding_cache: Path | None = None
    engine_options: dict = field(default_factory=dict)
    seeds_given: bool = False
    note: Callable[[str], None] = log.info
    progress: Callable | None = None


def cv_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified K-fold split of a test-only task, drawn as the finetune engine draws it
    (scikit-learn's StratifiedKFold, shuffled with ``seed``, classes in sorted order), so that the
    model and the baseline see the same folds (a test checks it)."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(labels).min())
    if smallest < k:
        raise CaduceusError(f"{k}-fold cross-validation needs at least {k} sequences of every class; the smallest "
                            f"class has {smallest} (use --folds {max(2, smallest)})")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def _evaluation(data: TaskData, plan: Plan) -> str:
    if data.cross_validated:
        return f"{plan.folds}-fold CV on the test split"
    return "test split" + (" (valid: dev split)" if data.valid is not None else "")


# -- the model protocol -------------------------------------------------------------------------
def _engine_report(data: TaskData, plan: Plan, seed: int | None = None) -> dict:
    from ..finetune import finetune_classifier, fit_probe

    train = data.train if data.train is not None else data.test
    options = dict(model=plan.model, valid=data.valid, test=None if data.cross_validated else data.test,
                   task="classification", folds=plan.folds if data.cross_validated else None, device=plan.device,
                   progress=plan.progress)
    if plan.protocol == "probe":
        from threadpoolctl import threadpool_limits

        # the probe's lbfgs fits are small vector operations: OpenBLAS threads only spin (3x slower
        # measured on 2 cores); torch's own threads are not affected
        with threadpool_limits(limits=1, user_api="blas"):
            return fit_probe(train, seed=seed or 1, batch_size=plan.batch_size, cache=plan.embedding_cache,
                             **options, **plan.engine_options)
    return finetune_classifier(train, seeds=len(_seeds_for(data, plan)),
                               epochs=plan.epochs or plan.suite.finetune_epochs,
                               **({"batch_size": plan.batch_size} if plan.batch_size else {}), **options,
                               **plan.engine_options)


def _seeds_for(data: TaskData, plan: Plan) -> list[int]:
    """The seeds of a task: a cross-validated task runs one seed unless --seeds was given (its K
    folds already are K runs, as the paper's seeds are on a train/test task)."""
    return plan.seeds if not data.cross_validated or plan.seeds_given else plan.seeds[:1]


def _mean_metrics(runs: list[dict]) -> dict:
    """Metrics of a seed: its test metrics, or the mean over its CV folds of the held-out metrics
    (a metric undefined on some fold, None, is averaged over the folds that define it)."""
    held_out = [r.get("test") or r.get("valid") or {} for r in runs]
    out = {}
    for name in dict.fromkeys(m for h in held_out for m in h):
        values = [h[name] for h in held_out if h.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def _model_rows(data: TaskData, plan: Plan) -> list[dict]:
    reports = [_engine_report(data, plan, seed) for seed in _seeds_for(data, plan)] if plan.protocol == "probe" \
        else [_engine_report(data, plan)]
    rows = []
    for rep in reports:
        provenance = rep.get("provenance", {})
        by_seed: dict[int, list[dict]] = {}
        for run in rep["runs"]:
            by_seed.setdefault(run["seed"], []).append(run)
        for seed, runs in by_seed.items():
            # a probe report is one seed: its whole call (features and fits); fine-tuning: the seed's runs
            seconds = rep.get("seconds") if plan.protocol == "probe" else sum(r.get("seconds") or 0.0 for r in runs)
            row = {"protocol": plan.protocol, "seed": seed, "metrics": _mean_metrics(runs),
                   "model": provenance.get("model", str(plan.model)), "model_sha256": provenance.get("model_sha256"),
                   "model_revision": provenance.get("model_revision"), "recipe": rep.get("recipe"),
                   "wall_seconds": round(seconds or 0.0, 2), "best_epoch": [r.get("best_epoch") for r in runs]}
            if data.cross_validated:
                row["folds"] = [r.get("test") or r.get("valid") for r in runs]
            rows.append(row)
    return rows


# -- the k-mer baseline -------------------------------------------------------------------------
def _baseline_rows(data: TaskData, plan: Plan) -> list[dict]:
    n_classes = data.task.n_classes
    rows = []
    if data.cross_validated:
        labels = data.class_indices(data.test)
        for seed in _seeds_for(data, plan):
            started = time.perf_counter()
            # the engine's folds: fine-tuning draws them per seed, the probe always with seed 1
            fold_seed = seed if plan.protocol == "finetune" else 1
            folds = kmer.cross_validate(list(data.test.sequences), labels, n_classes,
                                        cv_folds(labels, plan.folds, fold_seed), seed)
            rows.append({"protocol": report.BASELINE, "seed": seed, "metrics": _mean_metrics(folds),
                         "folds": [f["test"] for f in folds], "C": [f["C"] for f in folds],
                         "wall_seconds": round(time.perf_counter() - started, 2)})
        return rows
    started = time.perf_counter()
    result = kmer.fit_and_score(list(data.train.sequences), data.class_indices(data.train),
                                list(data.test.sequences), data.class_indices(data.test), n_classes, seed=1)
    return [{"protocol": report.BASELINE, "seed": 1, "metrics": result["test"], "C": result["C"],
             "wall_seconds": round(time.perf_counter() - started, 2)}]


def _baseline_common() -> dict:
    return {"model": "kmer-logreg", "model_sha256": None, "model_revision": None, "recipe": kmer.RECIPE}


# -- one task -----------------------------------------------------------------------------------
def run_task(task: Task, data: TaskData, plan: Plan, pending: list[str]) -> list[dict]:
    """Rows of every pending protocol of one task (model protocol and/or baseline)."""
    started = time.perf_counter()
    rows = _model_rows(data, plan) if plan.protocol in pending else []
    if report.BASELINE in pending:
        rows += [{**_baseline_common(), **r} for r in _baseline_rows(data, plan)]
    common = {"suite": task.suite, "task": task.name, "metric": task.metric, "evaluation": _evaluation(data, plan),
              "n": data.sizes(), "data": data.digests(), "data_origin": data.files.origin, "notes": data.notes,
              "tool_version": __version__, "command": command_line(), "device": device_name(plan.device),
              "task_wall_seconds": round(time.perf_counter() - started, 2), "run_id": uuid.uuid4().hex[:12]}
    return [{**common, **row, "value": row["metrics"].get(task.metric)} for row in rows]


# -- the suite ----------------------------------------------------------------------------------
def _tasks_to_run(suite: Suite, names, data_dir: Path | None, note) -> list[Task]:
    chosen = select_tasks(suite, names)
    if chosen is not None:
        return chosen
    if data_dir is None:
        return list(suite.tasks.values())
    present = tasks_present(suite, data_dir)
    if not present:
        raise CaduceusError(f"--data {data_dir}: holds no task of {suite.name} in its layout "
                            f"(tasks: {', '.join(list(suite.tasks)[:6])}, ...)")
    missing = [t.name for t in suite.tasks.values() if t not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        note(f"{len(present)} of {len(suite.tasks)} {suite.name} tasks are in {data_dir} (not there: {shown})")
    return present


def _open_report(folder: Path, resume: bool, suite: Suite) -> list[dict]:
    if folder.exists() and not folder.is_dir():
        raise CaduceusError(f"{folder}: exists and is not a folder; give a new report folder with -o")
    if folder.is_dir() and any(folder.iterdir()) and not resume:
        raise CaduceusError(f"{folder}: already exists; add --resume to continue that report, or choose a new -o")
    if not folder.parent.is_dir():
        raise CaduceusError(f"{folder}: folder {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)
    rows = report.read_rows(folder)
    other = {r["suite"] for r in rows} - {suite.name}
    if other:
        raise CaduceusError(f"{folder}: holds results of {', '.join(sorted(other))}, not {suite.name}; "
                            "choose another report folder")
    return rows


def _check_same_model(rows: list[dict], new_rows: list[dict], folder: Path) -> None:
    def shas(rs):
        return {r.get("model_sha256") for r in rs if r["protocol"] in PROTOCOLS and r.get("model_sha256")}

    before, now = shas(rows), shas(new_rows)
    if before and now and before != now:
        raise CaduceusError(f"{folder}: its rows were made with another model (sha256 {sorted(before)[0][:12]}...); "
                            "resume with the same --model, or choose a new -o")


def run_benchmark(suite: str, output_dir: str | Path | None = None, *, model=DEFAULT_MODEL, protocol: str = "probe",
                  tasks=None, data: str | Path | None = None, cache: str | Path | None = None,
                  baseline: str | None = None, resume: bool = False, fasta: str | None = None, tss: str | None = None,
                  seeds: int | None = None, epochs: int | None = None, folds: int | None = None,
                  device: str | None = None, batch_size: int | None = None, max_sequences: int | None = None,
                  note: Callable[[str], None] | None = None, progress: Callable | None = None, **options) -> list[dict]:
    """Run ``suite`` and return every row of its report (earlier rows of a resumed report included).

    With ``output_dir`` the rows go to ``results.jsonl`` (appended per task, atomically) and the
    summary to ``summary.md``/``summary.png``; ``resume`` skips tasks that already have rows.
    """
    the_suite = get_suite(suite)
    _check_options(the_suite, options)
    for name, value, low, high in (("--seeds", seeds, 1, MAX_REPEATS), ("--epochs", epochs, 1, MAX_COUNT),
                                   ("--folds", folds, 2, MAX_REPEATS), ("--max-sequences", max_sequences, 1, MAX_COUNT),
                                   ("--batch-size", batch_size, 1, MAX_BATCH),
                                   ("--window", options.get("window"), 3, MAX_BASES)):
        check_size(name, value, minimum=low, maximum=high)
    if "dtype" in options and (the_suite.kind != "sequences" or protocol != "probe"):
        raise CaduceusError("--dtype applies to the probe protocol of sequence suites (speed: --dtypes)")
    if protocol not in PROTOCOLS:
        raise CaduceusError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if baseline is not None and baseline not in BASELINES:
        raise CaduceusError(f"--baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if baseline and the_suite.kind != "sequences":
        raise CaduceusError(f"--baseline {baseline} applies to sequence-classification suites, not {suite}")
    note = note or log.info
    refuse_overwriting_inputs(output_dir, fasta, tss)
    folder = Path(output_dir) if output_dir is not None else None
    with _report_folder(folder, resume, the_suite) as rows:
        if the_suite.kind == "speed":
            from .speed import run_speed

            return _finish(folder, the_suite, rows, run_speed(model, tasks, device=device, note=note, **options),
                           "speed", {"tool": f"caduceus-cli {__version__}", "command": f"`{command_line()}`"})
        data_dir = Path(data) if data is not None else None
        cache_dir = Path(cache) if cache is not None else default_cache()
        plan = Plan(the_suite, protocol, model, list(range(1, (seeds or _default_seeds(the_suite, protocol)) + 1)),
                    epochs, folds or the_suite.cv_folds, baseline, device, batch_size, max_sequences,
                    Path(cache) / "features" if cache is not None else None, options, seeds is not None, note,
                    progress)
        header = _header(plan, data_dir)
        if the_suite.kind == "variants":
            return _run_variants(plan, rows, folder, data_dir, cache_dir, fasta, tss, header)
        chosen = _tasks_to_run(the_suite, tasks, data_dir, note)
        return _run_sequences(plan, chosen, rows, folder, data_dir, cache_dir, fasta, header)


@contextlib.contextmanager
def _report_folder(folder: Path | None, resume: bool, suite: Suite):
    """The rows already in ``folder`` (opened or created); a folder this run created is removed
    again when the run fails before writing anything into it."""
    if folder is None:
        yield []
        return
    created = not folder.exists()
    rows = _open_report(folder, resume, suite)
    try:
        yield rows
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _run_variants(plan: Plan, rows, folder, data_dir, cache_dir, fasta, tss, header) -> list[dict]:
    from .eqtl import check_inputs, run_eqtl

    check_inputs(fasta, tss)  # before a download that would be of no use

    first = next(iter(plan.suite.tasks.values()))
    if report.done(rows, first.name, "svm"):
        plan.note(f"{plan.suite.name}: already in {folder}; nothing to do")
        return rows
    new_rows = run_eqtl(locate(first, data_dir, cache_dir), plan, fasta, tss, folder)
    return _finish(folder, plan.suite, rows, new_rows, "svm", header)


def _run_sequences(plan: Plan, chosen: list[Task], rows, folder, data_dir, cache_dir, fasta, header) -> list[dict]:
    """Each task in turn; its rows are appended (and the summary rewritten) as soon as it is done."""
    if data_dir is not None:  # a local copy: find a missing split before hours of work, not after
        for task in chosen:
            locate(task, data_dir, cache_dir, fasta)
    wanted = [plan.protocol] + ([report.BASELINE] if plan.baseline else [])
    for k, task in enumerate(chosen, start=1):
        pending = [p for p in wanted if not report.done(rows, task.name, p)]
        if not pending:
            plan.note(f"{task.name}: already in the report; skipped (--resume)")
            continue
        plan.note(f"{task.name} ({k}/{len(chosen)}): {' + '.join(pending)}")
        task_data = load_task(locate(task, data_dir, cache_dir, fasta), fasta)
        if plan.max_sequences:
            task_data = subsample(task_data, plan.max_sequences)
        new_rows = run_task(task, task_data, plan, pending)
        if folder is not None:
            _check_same_model(rows, new_rows, folder)
            report.append_rows(folder, new_rows)
            report.write_summary(folder, plan.suite, rows + new_rows, plan.protocol, header)
        rows = rows + new_rows
    if folder is not None and rows:
        report.write_summary(folder, plan.suite, rows, plan.protocol, header)
    return rows


SPEED_OPTIONS = {"lengths", "dtypes", "backends", "tokens_per_batch", "repeats", "regions", "variants"}
VEP_OPTIONS = {"window", "context", "features", "n_train", "Cs", "backend"}


def _check_options(suite: Suite, options: dict) -> None:
    """Options of one kind of suite are refused by the others (sequence suites pass the rest on to
    the finetune engine, e.g. lr, pool, max_length)."""
    own = {"speed": SPEED_OPTIONS, "variants": VEP_OPTIONS}.get(suite.kind)
    foreign = (SPEED_OPTIONS | VEP_OPTIONS) - (own or set())
    misplaced = sorted(k for k in options if k in foreign or (own is not None and k not in own))
    if misplaced:
        name = misplaced[0].replace("_", "-")
        raise CaduceusError(f"--{name} does not apply to {suite.name}")
    if suite.kind == "variants":
        from ..variants.paper import check_features

        check_features(options.get("features", "paper"))
        for name in ("window", "context"):
            if options.get(name) is not None and options[name] < 3:
                raise CaduceusError(f"--{name} must be at least 3 bp, got {options[name]}")
        if options.get("context") and options.get("window") and options["context"] < options["window"]:
            raise CaduceusError(f"--context {options['context']} is shorter than --window {options['window']}: the "
                                "model must read every position it pools")


def _default_seeds(suite: Suite, protocol: str) -> int:
    """The paper's seeds for fine-tuning and for the eQTL SVMs; one seed for the (deterministic) probe."""
    return suite.finetune_seeds if protocol == "finetune" or suite.kind == "variants" else 1


def _header(plan: Plan, data_dir: Path | None) -> dict:
    if plan.suite.kind == "variants":
        features = plan.engine_options.get("features", "paper")
        recipe = ("the paper's SVM through `train_svm`: StandardScaler + RBF SVC per distance-to-TSS bucket on "
                  + ("the paper's [ref, alt] features (vep_embeddings.py, conjoined as vep_svm.ipynb)"
                     if features == "paper" else "[ref, alt] strand-averaged window means")
                  + " + tissue, C in 1/5/10 kept by mean AUROC of the decision function, "
                  f"seeds {plan.seeds}, 5,000 training variants per fit")
    elif plan.protocol == "probe":
        recipe = f"frozen embeddings + logistic regression (finetune engine's fit_probe), seeds {plan.seeds}"
    else:
        recipe = (f"full fine-tuning (finetune engine), {plan.epochs or plan.suite.finetune_epochs} epochs, "
                  f"{len(plan.seeds)} seed(s)" + ("" if plan.seeds_given else
                                                  " (one seed of K-fold CV where a task has only a test split)"))
    return {"model": f"`{plan.model}`", "protocol": recipe,
            "cross-validation": f"{plan.folds} stratified folds where a task has only a test split"
            if plan.suite.kind == "sequences" else None,
            "baseline": "k-mer frequencies (k = 1..6) + logistic regression on the same splits" if plan.baseline else None,
            "subsample": f"at most {plan.max_sequences} sequences per split (stratified, seeded)" if plan.max_sequences else None,
            "data": str(data_dir) if data_dir else "downloaded / cached copies of the published data",
            "tool": f"caduceus-cli {__version__}", "command": f"`{command_line()}`"}


def _finish(folder: Path | None, suite: Suite, rows: list[dict], new_rows: list[dict], protocol: str,
            header: dict) -> list[dict]:
    """Append ``new_rows`` to the report and rewrite its summary; every row of the report."""
    if folder is not None:
        report.append_rows(folder, new_rows)
        report.write_summary(folder, suite, rows + new_rows, protocol, header)
    return rows + new_rows
