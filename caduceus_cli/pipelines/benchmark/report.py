"""The report folder: ``results.jsonl`` (one row per task, seed and protocol), ``summary.md`` (ours
beside the published figures, sources cited) and ``summary.png``.

``results.jsonl`` is rewritten whole, atomically, after each task: a task interrupted half-way
leaves no rows, and ``--resume`` trusts every row it finds.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

from ...errors import CaduceusError
from ...io import atomic_file, open_output
from .registry import COLUMNS, SOURCES, Suite

log = logging.getLogger("caduceus")

RESULTS = "results.jsonl"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "summary.png"
BASELINE = "kmer"
METRIC_LABELS = {"accuracy": "accuracy", "mcc": "MCC", "f1": "F1", "auroc": "AUROC", "auprc": "AUPRC",
                 "auroc_hard_labels": "AUROC (hard labels)"}


def read_rows(folder: Path) -> list[dict]:
    path = Path(folder) / RESULTS
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CaduceusError(f"{path}: line {number}: not a JSON row ({e.msg}); "
                                    "was it edited? remove the line or start a new report folder") from None
    return rows


def append_rows(folder: Path, rows: list[dict]) -> None:
    """Add ``rows`` to results.jsonl: the whole file is rewritten and renamed into place at once."""
    existing = read_rows(folder)
    with open_output(Path(folder) / RESULTS, "w", compress=False) as out:
        for row in existing + rows:
            out.write(json.dumps(row, sort_keys=False, default=str) + "\n")


def done(rows: list[dict], task: str, protocol: str) -> bool:
    return any(r["task"] == task and r["protocol"] == protocol for r in rows)


# -- the summary table --------------------------------------------------------------------------
def _spread(values: list[float], over: str = "seeds") -> dict:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return {"mean": None, "min": None, "max": None, "n": 0, "over": over}
    return {"mean": sum(clean) / len(clean), "min": min(clean), "max": max(clean), "n": len(clean), "over": over}


def aggregate(rows: list[dict]) -> dict:
    """{(task, protocol): {metric: {mean, min, max, n, over}}}: the spread over the seeds of each task
    and protocol; over the folds when a cross-validated task ran with one seed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["protocol"])].append(row)
    out = {}
    for key, members in groups.items():
        names = {m for row in members for m in row.get("metrics", {})}
        folds = members[0].get("folds") if len(members) == 1 else None
        if folds:
            out[key] = {m: {**_spread([f.get(m) for f in folds], "folds"), "mean": members[0]["metrics"].get(m)}
                        for m in names}
        else:
            out[key] = {m: _spread([row["metrics"].get(m) for row in members]) for m in names}
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ours(stats: dict | None) -> str:
    if not stats or stats["mean"] is None:
        return "-"
    if stats["n"] == 1:
        return _fmt(stats["mean"])
    return f"{_fmt(stats['mean'])} [{_fmt(stats['min'])}, {_fmt(stats['max'])}] ({stats['n']} {stats['over']})"


def _published_cell(task, model: str, metric: str, marks: dict[str, str]) -> str:
    for fig in task.published:
        if fig.model == model and fig.metric == metric:
            marks.setdefault(fig.source, str(len(marks) + 1))
            spread = f" +-{fig.spread:.3f}" if fig.spread is not None else ""
            return f"{fig.value:.3f}{spread} [{marks[fig.source]}]"
    return "-"


def _metrics_shown(task) -> list[str]:
    """The task's own metric first, then every other metric with a published figure."""
    shown = [task.metric] + (["auroc_hard_labels"] if task.suite == "vep-eqtl" else [])
    return shown + sorted({f.metric for f in task.published} - set(shown))


def _with_provenance(header: dict, rows: list[dict]) -> dict:
    """The header, with the model's sha256, the device and the commands that made the rows (a
    resumed report was made by several)."""
    out = dict(header)
    shas = sorted({r["model_sha256"] for r in rows if r.get("model_sha256") and r["protocol"] != BASELINE})
    devices = sorted({str(r["device"]) for r in rows if r.get("device")})
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    if shas:
        out["model"] = f"{header.get('model', '')} (weights sha256 {', '.join(s[:16] + '...' for s in shas)})"
    if devices:
        out["device"] = ", ".join(devices)
    if commands:
        out["command"] = "; ".join(f"`{c}`" for c in commands)
    return out


def summary_markdown(suite: Suite, rows: list[dict], protocol: str, header: dict) -> str:
    stats = aggregate(rows)
    tasks = [t for t in suite.tasks.values() if any(r["task"] == t.name for r in rows)]
    marks: dict[str, str] = {}
    evaluation = {r["task"]: r.get("evaluation", "") for r in rows if r["protocol"] == protocol}
    lines = [f"# caduceus benchmark {suite.name}", "", suite.description + ".", ""]
    lines += [f"- {key}: {value}" for key, value in _with_provenance(header, rows).items() if value not in (None, "")]
    lines += ["", f"| task | metric | evaluation | ours ({protocol}) mean [min, max] | k-mer baseline | "
              + " | ".join(COLUMNS) + " |", "|" + "---|" * (5 + len(COLUMNS))]
    for task in tasks:
        for metric in _metrics_shown(task):
            ours = stats.get((task.name, protocol), {}).get(metric)
            kmer = stats.get((task.name, BASELINE), {}).get(metric)
            published = [_published_cell(task, model, metric, marks) for model in COLUMNS]
            lines.append(f"| {task.name} | {METRIC_LABELS.get(metric, metric)} | {evaluation.get(task.name, '')} | "
                         f"{_ours(ours)} | {_ours(kmer)} | " + " | ".join(published) + " |")
    lines += ["", "Sources of the published figures (their protocols differ from ours where noted):", ""]
    lines += [f"[{mark}] {SOURCES[source]}" for source, mark in marks.items()]
    lines += ["", "Metrics are computed over whole splits (never averaged over batches). "
              "`[min, max]` spans the seeds, or the folds of a cross-validated task run with one seed. "
              "Tasks whose only split is a test split "
              "are evaluated by stratified K-fold cross-validation on it (evaluation column), so their figures "
              "are not directly comparable with the papers' train/test figures.", ""]
    lines += _context_note(rows)
    lines += _wall_times(rows)
    return "\n".join(lines) + "\n"


def _context_note(rows: list[dict]) -> list[str]:
    """Which rows ran with a context shorter than the paper's (131,072 bp), for reports whose rows
    record one (vep-eqtl)."""
    from ..variants.context import PAPER_CONTEXT

    with_context = [r for r in rows if r.get("context")]
    if not with_context:
        return []
    shorter: dict[tuple, list[str]] = {}
    for r in with_context:
        if int(r["context"]) < PAPER_CONTEXT:
            names = shorter.setdefault((int(r["context"]), r.get("window"), r.get("features")), [])
            if r["task"] not in names:
                names.append(r["task"])
    if not shorter:
        return [f"Context: every row ran with the paper's {PAPER_CONTEXT:,} bp context around the variant.", ""]
    parts = [f"{', '.join(tasks)}: {context:,} bp (window {window:,} bp, {features} features)"
             for (context, window, features), tasks in shorter.items()]
    return [f"Context: rows that ran with a context shorter than the paper's {PAPER_CONTEXT:,} bp around the "
            f"variant: {'; '.join(parts)}.", ""]


def _wall_times(rows: list[dict]) -> list[str]:
    """Wall time of each run (one task, or the buckets of one SVM run), and the total."""
    runs: dict[str, dict] = {}
    for row in rows:
        run = runs.setdefault(row.get("run_id") or row["task"], {"tasks": [], "seconds": 0.0})
        if row["task"] not in run["tasks"]:
            run["tasks"].append(row["task"])
        run["seconds"] = max(run["seconds"], row.get("task_wall_seconds") or 0.0)
    total = sum(run["seconds"] for run in runs.values())
    cells = "; ".join(f"{', '.join(run['tasks'])} {run['seconds']:,.0f} s" for run in runs.values())
    return [f"Wall time (everything: data, embeddings or training, baseline): {cells}; "
            f"total {total:,.0f} s ({total / 60:,.1f} min).", ""]


def speed_markdown(rows: list[dict], header: dict) -> str:
    lines = ["# caduceus benchmark speed", ""] + [f"- {k}: {v}" for k, v in header.items() if v not in (None, "")]
    lines += ["", "| measure | model | length | batch | dtype | backend | device | throughput | peak memory (GiB) | "
              "official implementation (H200) |", "|" + "---|" * 10]
    for r in rows:
        official = r.get("official")
        official_text = "-" if not official else f"{official['value']:,.0f} {official['unit']} [1]"
        throughput = "-" if r.get("value") is None else f"{r['value']:,.1f} {r['unit']}"
        lines.append(f"| {r['task']} | {r['model']} | {r.get('length') or '-'} | {r.get('batch') or '-'} | {r.get('dtype')} | "
                     f"{r.get('backend')} | {r.get('device')} | {throughput} | {_fmt(r.get('peak_memory_gib'), 2)} | "
                     f"{official_text} |")
    lines += ["", f"[1] {SOURCES['gpu-readme']}; shown where the same model size, length and measure were "
              "recorded. Compare only with rows measured on the same GPU.", ""]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, suite: Suite, rows: list[dict], protocol: str, header: dict) -> None:
    text = speed_markdown(rows, header) if suite.kind == "speed" else summary_markdown(suite, rows, protocol, header)
    with open_output(Path(folder) / SUMMARY_MD, "w", compress=False) as out:
        out.write(text)
    if suite.kind != "speed":
        write_plot(Path(folder) / SUMMARY_PNG, suite, rows, protocol)


def write_plot(path: Path, suite: Suite, rows: list[dict], protocol: str) -> None:
    """Dots per task: ours (mean, bar from min to max), the k-mer baseline, the published figures."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: %s not written (pip install matplotlib)", path.name)
        return
    stats = aggregate(rows)
    tasks = [t for t in suite.tasks.values() if any(r["task"] == t.name for r in rows)]
    metrics = list(dict.fromkeys(m for t in tasks for m in _metrics_shown(t)
                                 if (t.name, protocol) in stats and m in stats[(t.name, protocol)]))
    if not tasks or not metrics:
        return
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 1.1 * len(tasks) + 2), 3.6 * len(metrics)),
                             squeeze=False)
    markers = dict(zip(COLUMNS, "^vDsP"))
    for ax, metric in zip(axes[:, 0], metrics):
        shown = [t for t in tasks if metric in _metrics_shown(t)]
        for x, task in enumerate(shown):
            ours = stats.get((task.name, protocol), {}).get(metric)
            if ours and ours["mean"] is not None:
                ax.errorbar([x], [ours["mean"]], yerr=[[ours["mean"] - ours["min"]], [ours["max"] - ours["mean"]]],
                            fmt="o", color="black", capsize=3, label=f"ours ({protocol})" if x == 0 else None, zorder=3)
            kmer = stats.get((task.name, BASELINE), {}).get(metric)
            if kmer and kmer["mean"] is not None:
                ax.plot([x + 0.15], [kmer["mean"]], "s", color="grey", label="k-mer baseline" if x == 0 else None)
            for k, model in enumerate(COLUMNS):
                for figure in task.published:
                    if figure.model == model and figure.metric == metric:
                        ax.plot([x - 0.3 + 0.08 * k], [figure.value], markers[model], color=f"C{k}", alpha=0.8,
                                label=f"{model} ({figure.protocol})")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([t.name for t in shown], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(f"caduceus benchmark {suite.name}: ours vs published")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
