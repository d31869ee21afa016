"""benchmarks/multi_gpu.py on the CPU: its smoke run (gloo, one and two processes of the real
command line) and the comparison that decides whether a multi-GPU output equals one GPU's."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, need_data

SCRIPT = REPO / "benchmarks" / "multi_gpu.py"


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("multi_gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_run_has_every_job_on_one_and_two_processes_with_equal_outputs(tmp_path, driver):
    need_data("variants", "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    out = tmp_path / "smoke"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=400, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "multi_gpu.json").read_text())
    rows = {(r["job"], r["gpus"]): r for r in doc["rows"]}
    assert sorted(rows) == sorted((job, n) for job in driver.JOBS for n in (1, 2))
    assert all(r["status"] == "ok" and r["items_per_s"] > 0 and r["wall_s"] > 0 for r in rows.values())
    for job in ("variants", "variants-long", "embed"):
        one, two = rows[(job, 1)], rows[(job, 2)]
        assert two["outputs_equal"] is True, two["compare"]
        assert two["compare"]["max_abs_diff"] == 0.0
        assert one["items"] == two["items"] > 0  # every record or region, on both sizes
        assert len(two["phases"]["work_s"]) == 2 and two["phases"]["merge_s"] >= 0  # each rank wrote its part
        assert two["speedup"] == pytest.approx(two["items_per_s"] / one["items_per_s"])
        assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
        assert set(two["lost_s"]) == {"total", "imbalance", "per_rank_overhead", "merge"}
    smoke = driver.SMOKE["pretrain"]
    for n in (1, 2):
        row = rows[("pretrain", n)]
        assert row["items"] == smoke["steps"] * smoke["batch_per_gpu"] * n * smoke["seq_len"]  # per-GPU batch fixed
        assert row["outputs_equal"] is None and 0 < row["train_loss"] < 10
    table = [ln for ln in (out / "multi_gpu.md").read_text().splitlines() if ln.startswith("| ") and "GPUs" not in ln]
    assert len(table) == 8
    # the one-process outputs are kept as the reference, the others removed once compared; no part file is left
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "embed_1.parquet", "multi_gpu.json", "multi_gpu.md", "pretrain_1.json", "pretrain_2.json",
        "variants-long_1.vcf", "variants_1.vcf"]


VCF = """##fileformat=VCFv4.2
##caduceus_tool_version=0.1.0
##caduceus_command=caduceus score-variants in.vcf -o {name}
##INFO=<ID=CADUCEUS_LLR,Number=A,Type=Float,Description="LLR">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
20\t1000\t.\tA\tG\t.\tPASS\tAC=1;CADUCEUS_LLR={llr};CADUCEUS_EMBED_COS=0.0125
20\t1010\t.\tC\t{alt}\t.\tPASS\tAC=2;CADUCEUS_LLR=-0.5,0.25;CADUCEUS_EMBED_COS=0.5,1e-3
"""


def write_vcf(path, llr="-1.25", alt="T,G"):
    path.write_text(VCF.format(name=path.name, llr=llr, alt=alt))
    return path


def test_outputs_that_differ_only_in_provenance_are_equal_and_others_are_not(tmp_path, driver):
    single = write_vcf(tmp_path / "single.vcf")
    same = write_vcf(tmp_path / "multi.vcf")  # another command line, the same records
    assert driver.compare_outputs(single, same) == {"equal": True, "max_abs_diff": 0.0, "detail": "5 lines"}
    score = driver.compare_outputs(single, write_vcf(tmp_path / "score.vcf", llr="-1.5"))
    assert score["equal"] is False and score["max_abs_diff"] == pytest.approx(0.25) and "line 4" in score["detail"]
    allele = driver.compare_outputs(single, write_vcf(tmp_path / "allele.vcf", alt="T,A"))
    assert allele["equal"] is False and allele["max_abs_diff"] is None
    shorter = tmp_path / "shorter.vcf"
    shorter.write_text("\n".join(single.read_text().splitlines()[:-1]) + "\n")
    assert driver.compare_outputs(single, shorter)["equal"] is False


def test_parquet_outputs_compare_columns_not_metadata(tmp_path, driver):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(name, embedding, names=("a", "b"), command="caduceus embed"):
        table = pa.table({"name": list(names), "start": [0, 10], "embedding": embedding})
        pq.write_table(table.replace_schema_metadata({"command": command}), tmp_path / name)
        return tmp_path / name

    single = write("single.parquet", [[0.5, 1.0], [2.0, -1.0]])
    assert driver.compare_outputs(single, write("meta.parquet", [[0.5, 1.0], [2.0, -1.0]], command="torchrun"))["equal"]
    moved = driver.compare_outputs(single, write("moved.parquet", [[0.5, 1.0], [2.0, -0.5]]))
    assert moved == {"equal": False, "max_abs_diff": 0.5, "detail": "column embedding differs"}
    renamed = driver.compare_outputs(single, write("renamed.parquet", [[0.5, 1.0], [2.0, -1.0]], names=("a", "c")))
    assert renamed["equal"] is False and renamed["detail"] == "column name differs"
