"""Readers fuzzed: random and mutated BED, VCF, FASTA, TSS, labeled TSV/VCF, CSV and config.json bytes
reach the public readers, and the only exception that may escape is CaduceusError.

CI runs a small, derandomized number of examples per reader. A long local campaign (not in CI):

    CADUCEUS_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -k property -x

Every input a campaign found is kept in tests/fuzz_corpus/<reader>/ and replayed by
test_corpus_input_is_answered_cleanly; inputs that still fail in readers this branch may not edit
are listed in OPEN_BUGS (strict xfail: the test fails once the bug is fixed, so the entry goes).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis: pip install -e '.[test]'")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from . import fuzzing as fz  # noqa: E402
from .conftest import DATA, REPO  # noqa: E402

CORPUS = REPO / "tests" / "fuzz_corpus"
CAMPAIGN = "CADUCEUS_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(
    max_examples=int(os.environ.get("CADUCEUS_FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize=not CAMPAIGN,  # CI: the same examples every run; a campaign explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

TARGETS = {t.name: t for t in (
    fz.Target("bed", "regions.bed", fz.consume_bed),
    fz.Target("bed_stdin", "regions.bed", fz.consume_bed_stdin),
    fz.Target("vcf", "calls.vcf", fz.consume_vcf, native=True),
    fz.Target("reference", "genome.fa", fz.consume_reference, native=True),
    fz.Target("fasta_records", "genome.fa", fz.consume_fasta_records),
    fz.Target("tss_bed", "tss.bed", fz.consume_tss),
    fz.Target("tss_gtf", "genes.gtf", fz.consume_tss),
    fz.Target("lines_tsv", "table.tsv", fz.consume_lines(None)),
    fz.Target("lines_csv", "table.csv", fz.consume_lines(",")),
    fz.Target("labeled_tsv", "labeled.tsv", fz.consume_labeled),
    fz.Target("labeled_vcf", "labeled.vcf", fz.consume_labeled, native=True),
    fz.Target("config", "config.json", fz.consume_config),
)}


def seeds_strategy(name: str) -> st.SearchStrategy[bytes]:
    """Mutated real seeds for a reader, with some plain random bytes."""
    seeds = {
        "bed": fz.bed_seeds, "bed_stdin": fz.bed_seeds, "tss_bed": fz.bed_seeds, "lines_tsv": fz.bed_seeds,
        "vcf": lambda: [fz.vcf_seed()], "labeled_vcf": lambda: [fz.labeled_vcf_seed()],
        "reference": fz.fasta_seeds, "fasta_records": fz.fasta_seeds, "tss_gtf": lambda: [fz.gtf_seed()],
        "lines_csv": lambda: [fz.csv_seed()], "labeled_tsv": lambda: [fz.labeled_tsv_seed()],
    }
    if name in ("config", "checkpoint"):
        seed = fz.config_seed() if name == "config" else fz.tiny_config_seed()
        import json

        return st.one_of(fz.mutated_config(seed), fz.mutated([json.dumps(seed).encode()]), st.binary(max_size=256))
    return st.one_of(fz.packed(fz.mutated(seeds[name]())), st.binary(max_size=512))


@pytest.fixture(scope="module")
def real_seeds():
    if not (DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz").exists():
        pytest.skip(f"real data {DATA} is not present (CI provides ../shared/data): the fuzz seeds come from it")


@pytest.mark.parametrize("name", list(TARGETS))
def test_property_reader_lets_only_its_own_error_escape(name, real_seeds):
    target, known = TARGETS[name], tuple(bug for bug in fz.OPEN_BUGS if name in bug.targets)

    @FUZZ
    @given(data=seeds_strategy(name))
    def check(data: bytes) -> None:
        fz.run_reader(target, data, known)

    check()


def test_property_load_model_refuses_fuzzed_config_before_building(real_seeds, tiny_weights):
    target = fz.Target("checkpoint", "config.json", fz.consume_checkpoint(tiny_weights))
    known = tuple(bug for bug in fz.OPEN_BUGS if "checkpoint" in bug.targets)

    @FUZZ
    @given(data=seeds_strategy("checkpoint"))
    def check(data: bytes) -> None:
        fz.run_reader(target, data, known)

    check()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return fz.tiny_checkpoint(tmp_path_factory.mktemp("tiny")) / "model.safetensors"


def corpus_cases() -> list:
    cases = []
    for path in fz.corpus_files(CORPUS):
        rel = path.relative_to(CORPUS).as_posix()
        bug = next((b for b in fz.OPEN_BUGS if rel in b.corpus), None)
        marks = [pytest.mark.xfail(strict=True, raises=bug.exceptions, reason=bug.summary)] if bug else []
        cases.append(pytest.param(path, id=rel, marks=marks))
    return cases


@pytest.mark.parametrize("path", corpus_cases())
def test_corpus_input_is_answered_cleanly(path: Path, tmp_path_factory):
    name = path.parent.name
    if name == "checkpoint":
        weights = fz.tiny_checkpoint(tmp_path_factory.mktemp("tiny")) / "model.safetensors"
        target = fz.Target(name, "config.json", fz.consume_checkpoint(weights))
    else:
        target = TARGETS[name]
    fz.run_reader(target, path.read_bytes())


def test_every_open_bug_has_its_corpus_input():
    files = {p.relative_to(CORPUS).as_posix() for p in fz.corpus_files(CORPUS)}
    assert [path for bug in fz.OPEN_BUGS for path in bug.corpus if path not in files] == []
