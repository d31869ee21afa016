"""Scaling over the GPUs of one host: pretraining, score-variants (short window and long context)
and embed on 1, 2, 4 ... GPUs, with the outputs of every multi-GPU run compared with one GPU's.

    python benchmarks/multi_gpu.py --out multi_gpu                 # 1, 2, 4 ... up to every GPU here
    python benchmarks/multi_gpu.py --out multi_gpu --gpus 1,2,4 --only variants,embed
    python benchmarks/multi_gpu.py --out smoke --smoke             # CPU, gloo, 1 and 2 processes, tiny

Jobs (the same model, data and per-GPU batch on every size):

- ``pretrain``: ``benchmarks/pretrain_speed.py`` under torchrun, Caduceus-PS 128 x 4 at 1,024 bp,
  128 windows per GPU per step (the global batch grows with the GPUs) in the micro-batch
  ``caduceus pretrain`` picks; tokens/s after warm-up steps. Each size draws its own windows (a
  batch is a function of seed, rank and step), so its output is not compared; the loss is reported.
- ``variants``: ``caduceus score-variants`` (all zero-shot scores, window 1,536 bp) of the first
  records of the VCF; ``variants-long``: the same at ``--context 131072 --window 1536``.
- ``embed``: ``caduceus embed`` of 10,000 regions of 1,536 bp drawn from the FASTA with a seed.

The inference jobs run the real command line under ``python -m torch.distributed.run --standalone
--nproc-per-node N`` with one random-weights Caduceus-PS 256 x 16 saved once (so every run loads the
same weights), after one untimed single-GPU run on a few records (compiles the Triton kernels into
their cache). They go through this script's ``probe`` entry, which runs ``caduceus_cli.cli.main``
unchanged and records, per rank, when it wrote its part of the output and when rank 0 finished the
merge in input order. Throughput is the pipeline's own (its JSON summary: from after the model is
loaded to the last output row), beside the wall clock of the whole command. Speed-up is over the
one-GPU row and efficiency is speed-up / GPUs; for each multi-GPU row the time lost against a
perfect split is put down to load imbalance (the slowest rank against the mean), per-rank overhead
(the mean rank against one GPU's time / N: every rank reads all input, contention) and the merge.

Writes OUT/multi_gpu.json and OUT/multi_gpu.md (a table for docs/performance.md) after every run,
and OUT/logs/. ``--budget-s`` bounds each job (its sizes run smallest first; a size that does
not fit is recorded as skipped); the defaults fit about 10 minutes on eight H100s.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "variants"
JOBS = ("pretrain", "variants", "variants-long", "embed")
UNITS = {"pretrain": "tokens/s", "variants": "variants/s", "variants-long": "variants/s", "embed": "regions/s"}
FULL = {
    "model": "random:ps:256x16", "device": None, "backend": None,
    "pretrain": {"d_model": 128, "n_layer": 4, "seq_len": 1024, "batch_per_gpu": 128, "steps": 30, "warmup": 3},
    "variants": {"records": 3072, "chunk": 192, "batch": 64, "window": 1536, "context": None, "warmup": 64},
    "variants-long": {"records": 64, "chunk": 8, "batch": 32, "window": 1536, "context": 131072, "warmup": 8},
    "embed": {"regions": 10000, "length": 1536, "batch": 64, "warmup": 64},
}
SMOKE = {
    "model": "random:ps:16x2", "device": "cpu", "backend": "torch",  # no numba compiling per process
    "pretrain": {"d_model": 16, "n_layer": 1, "seq_len": 128, "batch_per_gpu": 4, "steps": 2, "warmup": 1},
    "variants": {"records": 24, "chunk": 6, "batch": 8, "window": 128, "context": None, "warmup": 0},
    "variants-long": {"records": 8, "chunk": 2, "batch": 4, "window": 128, "context": 512, "warmup": 0},
    "embed": {"regions": 128, "length": 128, "batch": 8, "warmup": 0},  # embed chunks hold 64 regions here
}
# Header lines that name the run rather than the result: the command line, dates, tool versions.
PROVENANCE_LINE = re.compile(r"^##[^=]*(command|date|version)[^=]*=", re.IGNORECASE)
FIELD_SPLIT = re.compile(r"([\t;=,|:])")


# ---- comparing outputs ---------------------------------------------------------------------------
def compare_outputs(a: str | Path, b: str | Path) -> dict:
    """Whether two outputs are equal but for provenance (VCF/TSV ``##`` lines naming the command,
    a date or a version; Parquet metadata), and the largest absolute difference of their numbers."""
    a, b = Path(a), Path(b)
    if a.suffix == ".parquet":
        return _compare_parquet(a, b)
    return _compare_text(a, b)


def _text_lines(path: Path) -> list[str]:
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        return [ln.rstrip("\n") for ln in f if not PROVENANCE_LINE.match(ln)]


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _compare_text(a: Path, b: Path) -> dict:
    la, lb = _text_lines(a), _text_lines(b)
    if len(la) != len(lb):
        return {"equal": False, "max_abs_diff": None, "detail": f"{len(la)} lines against {len(lb)}"}
    diff, detail = 0.0, None
    for n, (x, y) in enumerate(zip(la, lb), 1):
        if x == y:
            continue
        detail = detail or f"line {n} differs"
        tx, ty = FIELD_SPLIT.split(x), FIELD_SPLIT.split(y)
        if len(tx) != len(ty):
            return {"equal": False, "max_abs_diff": None, "detail": f"line {n}: other fields"}
        for u, v in zip(tx, ty):
            if u != v:
                nu, nv = _number(u), _number(v)
                if nu is None or nv is None:
                    return {"equal": False, "max_abs_diff": None, "detail": f"line {n}: {u!r} against {v!r}"}
                diff = max(diff, abs(nu - nv))
    return {"equal": detail is None, "max_abs_diff": diff, "detail": detail or f"{len(la)} lines"}


def _compare_parquet(a: Path, b: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.column_names != tb.column_names or ta.num_rows != tb.num_rows:
        return {"equal": False, "max_abs_diff": None, "detail": f"columns {ta.column_names} x {ta.num_rows} rows "
                f"against {tb.column_names} x {tb.num_rows}"}
    diff, detail = 0.0, None
    for name in ta.column_names:
        ca, cb = ta.column(name), tb.column(name)
        kind = ca.type
        while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            kind = kind.value_type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            if ca.to_pylist() != cb.to_pylist():
                return {"equal": False, "max_abs_diff": None, "detail": f"column {name} differs"}
            continue
        xa, xb = (np.asarray(c.to_pylist(), dtype=np.float64) for c in (ca, cb))
        if xa.shape != xb.shape or not np.array_equal(np.isnan(xa), np.isnan(xb)):
            return {"equal": False, "max_abs_diff": None, "detail": f"column {name}: other shapes or missing values"}
        d = float(np.nanmax(np.abs(xa - xb))) if xa.size else 0.0
        if d > 0:
            detail = detail or f"column {name} differs"
        diff = max(diff, d)
    return {"equal": detail is None, "max_abs_diff": diff, "detail": detail or f"{ta.num_rows} rows"}


# ---- the probe: one torchrun process of the real command line, timed ----------------------------
def probe(folder: str, argv: list[str]) -> None:
    """Run ``caduceus ARGV`` as ``python -m caduceus_cli`` does, and write when this rank wrote its
    part of a sharded output and passed each barrier to FOLDER/rankR.json (clock: time.time)."""
    record = {"rank": int(os.environ.get("RANK", "0") or 0), "start": time.time(), "parts": [], "barriers": []}
    from caduceus_cli.runtime import processes, work

    write_part, barrier = work._write_part, processes.Runtime.barrier

    def timed_write_part(path, batches):
        started = time.time()
        try:
            write_part(path, batches)
        finally:
            record["parts"].append([started, time.time()])

    def timed_barrier(self):
        started = time.time()
        barrier(self)
        record["barriers"].append([started, time.time()])

    work._write_part, processes.Runtime.barrier = timed_write_part, timed_barrier
    from caduceus_cli.cli import main

    sys.argv = ["caduceus", *argv]
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    finally:
        record["end"] = time.time()
        Path(folder, f"rank{record['rank']}.json").write_text(json.dumps(record) + "\n")
    sys.exit(code)


def phases(folder: Path, world: int, launched: float) -> dict | None:
    """Per-rank work (writing its part), the wait at the barrier after it, and rank 0's merge."""
    ranks = sorted((json.loads(p.read_text()) for p in folder.glob("rank*.json")), key=lambda r: r["rank"])
    if world < 2 or len(ranks) != world or not all(r["parts"] for r in ranks):
        return None
    out = {"work_s": [], "wait_s": [], "launch_s": min(r["parts"][-1][0] for r in ranks) - launched}
    for r in ranks:
        start, end = r["parts"][-1]
        after = [b for b in r["barriers"] if b[0] >= end - 1e-3]
        out["work_s"].append(round(end - start, 3))
        out["wait_s"].append(round(after[0][1] - after[0][0], 3) if after else None)
        if r["rank"] == 0:
            out["merge_s"] = round(r["end"] - (after[0][1] if after else end), 3)
    starts = [r["parts"][-1][0] for r in ranks]
    out["start_skew_s"] = round(max(starts) - min(starts), 3)
    out["launch_s"] = round(out["launch_s"], 3)
    return out


# ---- running the jobs ------------------------------------------------------------------------------
def run_command(cmd: list[str], log: Path, timeout: float, env: dict) -> tuple[int, float]:
    """(exit status, wall seconds); the command and everything it started are ended at ``timeout``
    (status 124)."""
    started = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            code = 124
    return code, time.perf_counter() - started


def last_json(log: Path) -> dict | None:
    """The last line of the log that is a JSON object (a pipeline's --json summary)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


class Driver:
    def __init__(self, args, settings: dict):
        self.args, self.s = args, settings
        self.out = Path(args.out).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if args.smoke:
            self.env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        self.placement = ["--device", settings["device"]] if settings["device"] else []
        self.placement += ["--backend", settings["backend"]] if settings["backend"] else []
        self.rows: list[dict] = []
        self.meta = environment(args)

    def torchrun(self, n: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]

    def prepare(self, jobs: list[str]) -> None:
        """The model folder, the VCF subsets and the BED, made once."""
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from long_range_gpu import first_records

        from caduceus_cli.model import save_model
        from caduceus_cli.pipelines.benchmark.speed import build_model, sample_regions

        data = self.out / "inputs"
        data.mkdir(exist_ok=True)
        self.model_dir = data / "model"
        if {"variants", "variants-long", "embed"} & set(jobs):
            save_model(build_model(self.s["model"], "cpu"), self.model_dir)  # seed 0: the same weights every time
        for job in ("variants", "variants-long"):
            if job in jobs:
                c = self.s[job]
                first_records(self.args.vcf, c["records"], 0, data / f"{job}.vcf")
                first_records(self.args.vcf, c["warmup"], c["records"], data / f"{job}.warmup.vcf")
        if "embed" in jobs:
            c = self.s["embed"]
            regions = sample_regions(self.args.fasta, c["regions"] + c["warmup"], c["length"], 0)
            for name, part in (("embed", regions[:c["regions"]]), ("embed.warmup", regions[c["regions"]:])):
                (data / f"{name}.bed").write_text("".join(f"{r[0]}\t{r[1]}\t{r[2]}\n" for r in part))

    def inference(self, job: str, inputs: Path, output: Path) -> list[str]:
        c = self.s[job]
        if job == "embed":
            return ["embed", self.args.fasta, inputs, "-m", self.model_dir, "-o", output, "--batch-size", c["batch"],
                    "-q", "--json", *self.placement]
        return ["score-variants", inputs, "-f", self.args.fasta, "-m", self.model_dir, "-o", output,
                "--window", c["window"], *(["--context", c["context"]] if c["context"] else []), "--batch-size", c["batch"],
                "--chunk-size", c["chunk"], "-q", "--json", *self.placement]

    def run_job(self, job: str, sizes: list[int]) -> None:
        """Every size of one job, smallest first, within --budget-s (the warm-up included)."""
        began = time.perf_counter()
        left = lambda: self.args.budget_s - (time.perf_counter() - began)  # noqa: E731
        if job != "pretrain" and self.s[job]["warmup"] and not self.args.no_warmup:
            warm = self.out / "inputs" / f"{job}.warmup{self.input_suffix(job)}"
            output = self.out / f"{job}.warmup{self.output_suffix(job)}"
            code, wall = run_command([*self.torchrun(1), "-m", "caduceus_cli", *self.inference(job, warm, output)],
                                     self.logs / f"{job}.warmup.log", left(), self.env)
            print(f"{job}: warm-up exit {code}, {wall:.1f} s", file=sys.stderr)
            output.unlink(missing_ok=True)
        for n in sizes:
            row = {"job": job, "gpus": n, "unit": UNITS[job]}
            if left() < 5:
                self.add(row | {"status": "skipped: out of --budget-s"})
                continue
            log = self.logs / f"{job}_{n}.log"
            code, wall = (self.pretrain(n, log, left(), row) if job == "pretrain" else
                          self.sharded(job, n, sizes[0], log, left(), row))
            status = "ok" if code == 0 and row.get("items_per_s") else "timed out" if code == 124 else f"failed (exit {code})"
            self.add(row | {"status": status, "wall_s": round(wall, 2), "log": str(log.relative_to(self.out))})
            print(f"{job} on {n}: {status}, {wall:.1f} s", file=sys.stderr)

    @staticmethod
    def input_suffix(job: str) -> str:
        return ".bed" if job == "embed" else ".vcf"

    @staticmethod
    def output_suffix(job: str) -> str:
        return ".parquet" if job == "embed" else ".vcf"

    def pretrain(self, n: int, log: Path, timeout: float, row: dict) -> tuple[int, float]:
        output = self.out / f"pretrain_{n}.json"
        output.unlink(missing_ok=True)
        code, wall = run_command(self.pretrain_command(n, output), log, timeout, self.env)
        if code == 0 and output.is_file():
            row |= self.pretrain_row(output)
        return code, wall

    def sharded(self, job: str, n: int, first: int, log: Path, timeout: float, row: dict) -> tuple[int, float]:
        """One run of an inference job on ``n`` GPUs through the probe; its output against size ``first``'s."""
        suffix = self.output_suffix(job)
        output, probes = self.out / f"{job}_{n}{suffix}", self.logs / f"{job}_{n}.probe"
        output.unlink(missing_ok=True)
        probes.mkdir(exist_ok=True)
        for old in probes.glob("rank*.json"):
            old.unlink()
        inputs = self.out / "inputs" / f"{job}{self.input_suffix(job)}"
        launched = time.time()
        code, wall = run_command([*self.torchrun(n), __file__, "probe", probes, *self.inference(job, inputs, output)],
                                 log, timeout, self.env)
        summary = last_json(log) if code == 0 else None
        if summary and summary.get("seconds"):
            items = summary["regions"] if job == "embed" else summary["alts"]
            row |= {"items": items, "seconds": summary["seconds"], "items_per_s": items / summary["seconds"],
                    "phases": phases(probes, n, launched), "summary": summary}
        reference = self.out / f"{job}_{first}{suffix}"
        if code == 0 and n != first and output.is_file() and reference.is_file():
            row["compare"] = compare_outputs(reference, output)
            row["outputs_equal"] = row["compare"]["equal"]
            if not self.args.keep_outputs:
                output.unlink()
        return code, wall

    def pretrain_command(self, n: int, output: Path) -> list[str]:
        from caduceus_cli.pipelines.pretrain import default_micro_batch

        c = self.s["pretrain"]
        micro = default_micro_batch(c["batch_per_gpu"], c["seq_len"], "ps")
        return [*self.torchrun(n), ROOT / "benchmarks" / "pretrain_speed.py", "--variant", "ps",
                "--d-model", c["d_model"], "--n-layer", c["n_layer"], "--seq-len", c["seq_len"],
                "--batch-size", c["batch_per_gpu"] * n, "--micro-batch-size", micro, "--steps", c["steps"],
                "--warmup-steps", c["warmup"], "--genome", self.args.fasta, "--json", output, *self.placement]

    def pretrain_row(self, output: Path) -> dict:
        (r,) = json.loads(output.read_text())["results"]
        tokens = r["steps_timed"] * r["global_batch"] * r["seq_len"]
        return {"items": tokens, "seconds": r["seconds"], "items_per_s": r["tokens_per_s"],
                "train_loss": r["train_loss_timed_steps"], "micro_batch": r["micro_batch"],
                "peak_memory_gib_per_gpu": r["peak_memory_gib_per_gpu"], "backend": r["backend"],
                "outputs_equal": None, "compare": {"equal": None, "max_abs_diff": None, "detail": "not compared: "
                "each size draws its own windows (seed, rank, step); the loss of the timed steps is reported"}}

    def add(self, row: dict) -> None:
        self.rows.append(row)
        scale(self.rows)
        self.write()

    def write(self) -> None:
        doc = {**self.meta, "settings": self.s, "rows": self.rows}
        (self.out / "multi_gpu.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (self.out / "multi_gpu.md").write_text(markdown(doc))


def scale(rows: list[dict]) -> None:
    """Speed-up over the job's smallest size that ran, efficiency, and where the time went."""
    for row in rows:
        base = next((r for r in rows if r["job"] == row["job"] and r.get("items_per_s")), None)
        if not row.get("items_per_s") or base is None:
            continue
        ratio = base["gpus"]
        row["speedup"] = row["items_per_s"] / base["items_per_s"]
        row["efficiency"] = row["speedup"] * ratio / row["gpus"]
        row["wall_speedup"] = base["wall_s"] / row["wall_s"] if row.get("wall_s") else None
        ph = row.get("phases")
        if ph and row is not base:
            ideal = base["seconds"] * ratio / row["gpus"]
            mean = sum(ph["work_s"]) / len(ph["work_s"])
            row["lost_s"] = {"total": round(row["seconds"] - ideal, 3), "imbalance": round(max(ph["work_s"]) - mean, 3),
                             "per_rank_overhead": round(mean - ideal, 3), "merge": ph.get("merge_s")}


def label(job: str, s: dict) -> str:
    """What a job runs, from its settings: 'score-variants PS 256x16, context 131,072, window 1,536'."""
    model = s["model"].split(":", 1)[-1].replace(":", " ").upper().replace("X", "x")
    c = s[job]
    if job == "pretrain":
        return f"pretrain PS {c['d_model']}x{c['n_layer']}, {c['seq_len']:,} bp, {c['batch_per_gpu']} windows/GPU"
    if job == "embed":
        return f"embed {model}, {c['regions']:,} x {c['length']:,} bp"
    context = f"context {c['context']:,}, " if c["context"] else ""
    return f"score-variants {model}, {context}window {c['window']:,}, {c['records']:,} records"


def markdown(doc: dict) -> str:
    lines = [f"Measured on {doc['date']} on {doc['device']}, torch {doc['torch']}, commit {doc['commit'] or '?'}:",
             f"`{doc['command']}`", "",
             "| job | GPUs | items/s | speed-up | efficiency | wall s | per-rank work s | merge s | outputs equal |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in doc["rows"]:
        name = label(r["job"], doc["settings"])
        if "items_per_s" not in r:
            lines.append(f"| {name} | {r['gpus']} | {r['status']} | | | | | | |")
            continue
        ph, cmp_ = r.get("phases") or {}, r.get("compare") or {}
        work = f"{min(ph['work_s']):.2f}-{max(ph['work_s']):.2f}" if ph else ""
        equal = {True: "yes", False: "**no**", None: "n/a"}[cmp_.get("equal")] if cmp_ else ""
        if cmp_.get("max_abs_diff"):
            equal += f" (max diff {cmp_['max_abs_diff']:.3g})"
        lines.append(f"| {name} | {r['gpus']} | {r['items_per_s']:,.1f} {r['unit']} | {r.get('speedup', 1):.2f}x | "
                     f"{r.get('efficiency', 1):.2f} | {r['wall_s']:.1f} | {work} | {ph.get('merge_s', '')} | {equal} |")
    lost = [f"- {label(r['job'], doc['settings'])} on {r['gpus']} GPUs: efficiency {r['efficiency']:.2f}; "
            f"{r['lost_s']['total']:.2f} s more than a perfect split: imbalance {r['lost_s']['imbalance']:.2f} s, "
            f"per-rank overhead {r['lost_s']['per_rank_overhead']:.2f} s, merge {r['lost_s']['merge']} s"
            for r in doc["rows"] if r.get("lost_s") and r.get("efficiency", 1) < 0.9]
    return "\n".join(lines + (["", "Below 0.9 per added GPU:", *lost] if lost else [])) + "\n"


def gpu_names() -> list[str]:
    """The GPUs of this host, from nvidia-smi (this process leaves CUDA alone: no memory taken)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in done.stdout.splitlines() if ln.strip()] if done.returncode == 0 else []


def environment(args) -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    names = [] if args.smoke else gpu_names()
    if names:
        device = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores), gloo"
    return {"benchmark": "multi_gpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device, "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "command": " ".join(["python", *sys.argv]), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "budget_s": args.budget_s}


def default_sizes(smoke: bool) -> list[int]:
    if smoke:
        return [1, 2]
    import torch

    count = torch.cuda.device_count()
    return [2 ** k for k in range(int(math.log2(count)) + 1)] if count else [1]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        return probe(argv[1], argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for multi_gpu.json, multi_gpu.md, logs and outputs")
    p.add_argument("--gpus", default=None, help="sizes, e.g. 1,2,4 (default: 1 to every GPU here, powers of two)")
    p.add_argument("--only", default=",".join(JOBS), help=f"jobs, comma-separated: {', '.join(JOBS)}")
    p.add_argument("--vcf", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.vcf.gz"))
    p.add_argument("--fasta", default=str(DATA / "1kgp_grch37_chr20_1-2Mb.fa"))
    p.add_argument("--budget-s", type=float, default=130.0, help="seconds for each job, all its sizes (default 130)")
    p.add_argument("--variants", type=int, default=None, help="records of the short-window job (default 3,072)")
    p.add_argument("--variants-long", type=int, default=None, help="records of the long-context job (default 64)")
    p.add_argument("--regions", type=int, default=None, help="regions of the embed job (default 10,000)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed single-GPU run before each job")
    p.add_argument("--keep-outputs", action="store_true", help="keep every size's output (default: the first's)")
    p.add_argument("--smoke", action="store_true", help="CPU, gloo, 1 and 2 processes, a tiny model and inputs")
    args = p.parse_args(argv)
    settings = json.loads(json.dumps(SMOKE if args.smoke else FULL))
    for key, job, field in (("variants", "variants", "records"), ("variants_long", "variants-long", "records"),
                            ("regions", "embed", "regions")):
        if getattr(args, key) is not None:
            settings[job][field] = getattr(args, key)
    jobs = [j.strip() for j in args.only.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        p.error(f"--only: unknown job {', '.join(unknown)}; choose from {', '.join(JOBS)}")
    sizes = sorted({int(x) for x in args.gpus.split(",")}) if args.gpus else default_sizes(args.smoke)
    driver = Driver(args, settings)
    driver.prepare(jobs)
    for job in jobs:
        driver.run_job(job, sizes)
    print((driver.out / "multi_gpu.md").read_text())


if __name__ == "__main__":
    main()
