"""Where each suite's data live and how to get them: a local copy (``--data DIR``, in the source's
own layout), the cache (``--cache``, default ``~/.cache/caduceus/benchmark``), or a download.

Nothing is downloaded when the files are already there. Layouts understood:

- nt-suite: ``<task>/train.fna`` and ``<task>/test.fna`` (the Hugging Face dataset's files; ``.gz``
  too, as ``../shared/data/tasks/nt_yeast_histone``).
- gue: ``<task>/{train,dev,test}.csv[.gz]`` (flat, as ``../shared/data/tasks/gue``) or the GUE
  archive's own ``GUE/<group>/<name>/{train,dev,test}.csv``.
- genomic-benchmarks: ``<task>/{train,test}/<class>/<id>.txt`` (the package's sequence folders, as
  ``~/.genomic_benchmarks``), or its coordinate files ``<task>/{train,test}/<class>.csv.gz`` with a
  genome given by ``--fasta``.
- vep-eqtl: ``All_Tissues.csv`` (or ``variant_effect_causal_eqtl/All_Tissues.csv``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ...cache import cache_dir as cache_folder
from ...errors import CaduceusError
from . import download
from .registry import Suite, Task

log = logging.getLogger("caduceus")

NT_REPO = "InstaDeepAI/nucleotide_transformer_downstream_tasks"
EQTL_REPO = "InstaDeepAI/genomics-long-range-benchmark"
EQTL_FILE = "variant_effect_causal_eqtl/All_Tissues.csv"
# GUE as released by DNABERT-2 (one zip on Google Drive; no checksum published: the first download's
# sha256 is recorded beside it in the cache and checked on every later use).
GUE_URL = "https://drive.usercontent.google.com/download?id=1uOrwlf07qGQuruXqGXWMpPn8avBoW7T-&export=download&confirm=t"
# Genomic Benchmarks: sequence archives on Zenodo (md5 from the record's API), coordinate files in
# the project's repository at a pinned commit (sha256 below, computed from that commit).
GB_RECORD = "https://zenodo.org/records/16605299"
GB_RECORD_API = "https://zenodo.org/api/records/16605299"
GB_COMMIT = "605d8539830e16c85abe7826990958303ffc5e1c"
GB_COORDINATES = f"https://raw.githubusercontent.com/ML-Bioinfo-CEITEC/genomic_benchmarks/{GB_COMMIT}/datasets"
GB_COORDINATE_SHA256 = {
    "dummy_mouse_enhancers_ensembl/test/negative": "dd1a9f785a8ee28b574c4323a0ff4b22ce4b51497e62d8b6efa933884aaa3f67",
    "dummy_mouse_enhancers_ensembl/test/positive": "8e994651cb1d212ea098b1990e0d131b2648588ad5b9c3d79aab820dba311394",
    "dummy_mouse_enhancers_ensembl/train/negative": "e37f47dff8e70e98a16c607ee4428e5b2314970fc8c3f94563865e3349cf7e50",
    "dummy_mouse_enhancers_ensembl/train/positive": "f8fc8d280584eba5e942d775f33a5ef5818200415469fa9487d3a2552894caf0",
    "demo_coding_vs_intergenomic_seqs/test/coding_seqs": "a691325db74c7a60667ec554180a4a0abae6698163590b3738076157ec8795e6",
    "demo_coding_vs_intergenomic_seqs/test/intergenomic_seqs": "d6c8adff76b78650c28272789539878a7b449fd810244e0e356095f5efe146f2",
    "demo_coding_vs_intergenomic_seqs/train/coding_seqs": "ad92694e4e4fedb8d7c65f40acc09846c813ab888306708716904768138199b5",
    "demo_coding_vs_intergenomic_seqs/train/intergenomic_seqs": "5fab0e675ed84de90891e76c7dbb62c0d5818dae6102dfed5f702d5727b1c70f",
    "demo_human_or_worm/test/human": "212ae29139f907d0e4a09eec70f68baf60247cd4cea70a169a9071c310b9b440",
    "demo_human_or_worm/test/worm": "d84e82e217db4cf5928e956e22497358b344d1a6e44a937113b6ec48990bf06b",
    "demo_human_or_worm/train/human": "22f68cbbdff80656bd40a07efed301a8a916ef10d071279c6723454eede3b5d4",
    "demo_human_or_worm/train/worm": "0a96e43816ca0c4c79d261655c482904f79a0221d1ee3ea5eb7074b40ccff1c0",
    "human_enhancers_cohn/test/negative": "f42d72a8453f1fedd155d6c3a62acf245b54da930c9e15a504527f295d3831d1",
    "human_enhancers_cohn/test/positive": "4ac66408838e3a049dcb3a5c2e78160237af6d03f46eacc2082a85693ca254c8",
    "human_enhancers_cohn/train/negative": "3c0bebb5754b4789c77a9f6c7acccdc9a0e69d5a7bcc5a8f45f7c848fa9dcfba",
    "human_enhancers_cohn/train/positive": "c878a094f035eeea2d0a353c0e6fd21fe9791f1d61f52f9d45d051c5017e1b64",
    "human_enhancers_ensembl/test/negative": "aa64649b6e9c758896d0a3c51ea4e1908fad978e26092032633abb88d11012cd",
    "human_enhancers_ensembl/test/positive": "c642664f6e2b4874ae5ccb4c1cfb5ae79c53b09bbb3ab017f23063e780bc21f0",
    "human_enhancers_ensembl/train/negative": "5f941efbebaf8fb655b61b39692340a579c562bcdcc6146d6e476cb98a1c3546",
    "human_enhancers_ensembl/train/positive": "849037a959214342195d4e6f7f9540ea15d7131a367bfe177a4f4217c0d35d58",
    "human_ensembl_regulatory/test/enhancer": "9fda6ef997fe70a358a46c4ad0933d7539a9c96701731f1a8f99fe6d72c991e6",
    "human_ensembl_regulatory/test/ocr": "8e2edd5e93048706e4b3c3abaec46c08dd2ca88d9214c70f27ae150cd6c8901a",
    "human_ensembl_regulatory/test/promoter": "386e73cb4f02e9e77b1d28ae4a8a96f8277a08d6c4f990c0b0fb77e810530940",
    "human_ensembl_regulatory/train/enhancer": "c73d99042ad888721a222876b9d6ac1eb9ed31e4cadd60ecd770c69e065f247f",
    "human_ensembl_regulatory/train/ocr": "4b920e2dc8abc50ecf2c7cb44f6addc3e4704943b8579adfab54c42d7af421ee",
    "human_ensembl_regulatory/train/promoter": "688c883b91c297314c8d14f316d50926a70ae04f7c0f7501cffbe2e8e4455f0e",
    "human_ocr_ensembl/test/negative": "496fbac5d9d20517ca77d693d196ce5cea26bf2c685f29bfc5dc53efe074636b",
    "human_ocr_ensembl/test/positive": "133a59bb3af0633fb79ba84cbd37bae2c2fac7ab0981c10e89cdf7c5cc1252db",
    "human_ocr_ensembl/train/negative": "fab89f7eb09e77c3914f686647c56b1da14afba9c9fb19bc974c3756dab31139",
    "human_ocr_ensembl/train/positive": "498b7b696b0782e493ce470399c79f8f90455823bcf10d86da433e9653e9cd98",
    "human_nontata_promoters/test/negative": "3dd480a549f5e4b12770038e4ecc7f55cbec8101aa89b146fa9c4546ff7fad84",
    "human_nontata_promoters/test/positive": "062277be939aea6538fe5e8a84792916835707e303e833d5ac1e6263c7416894",
    "human_nontata_promoters/train/negative": "44b93cc1eb1273645d4123078809d9012bed3933605f4da906723a971b5a730e",
    "human_nontata_promoters/train/positive": "8d8824518233a49cd02d9854a28154078bc69f3509719855dd4127a9024a44c9",
}

SPLIT_FILES = {"train": ("train",), "valid": ("dev", "valid"), "test": ("test",)}


@dataclass
class TaskFiles:
    """The files of one task: ``splits`` maps train/valid/test to a file (or, for Genomic
    Benchmarks, a folder of class folders or of coordinate files); ``layout`` says which."""

    task: Task
    layout: str  # "nt-fasta", "csv", "gb-sequences", "gb-coordinates", "eqtl-csv"
    splits: dict[str, Path] = field(default_factory=dict)
    origin: str = ""

    def describe(self) -> dict[str, str]:
        return {"origin": self.origin, **{split: str(path) for split, path in self.splits.items()}}


def default_cache() -> Path:
    """``benchmark/`` of the tool's cache (``caduceus_cli.cache``), beside the probe's features."""
    return cache_folder("benchmark")


def _first(folder: Path, stems: tuple[str, ...], suffixes: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def _split_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found = {split: _first(folder, stems, suffixes) for split, stems in SPLIT_FILES.items()}
    return {split: path for split, path in found.items() if path is not None}


# -- where a task sits inside a local copy ----------------------------------------------------------
def _nt_folder(root: Path, task: Task) -> Path | None:
    folder = root / task.name
    return folder if folder.is_dir() else None


def _gue_folder(root: Path, task: Task) -> Path | None:
    for folder in (root / task.name, root / "GUE" / task.path, root / task.path):
        if folder.is_dir():
            return folder
    return None


def _gb_folder(root: Path, task: Task) -> Path | None:
    folder = root / task.name
    return folder if (folder / "train").is_dir() or (folder / "test").is_dir() else None


def _eqtl_file(root: Path) -> Path | None:
    for path in (root / "All_Tissues.csv", root / EQTL_FILE):
        if path.is_file():
            return path
    return None


def tasks_present(suite: Suite, data_dir: Path) -> list[Task]:
    """The tasks of ``suite`` that a local copy holds, in registry order."""
    if suite.name == "vep-eqtl":
        return list(suite.tasks.values()) if _eqtl_file(data_dir) else []
    finder = {"nt-suite": _nt_folder, "gue": _gue_folder, "genomic-benchmarks": _gb_folder}[suite.name]
    return [task for task in suite.tasks.values() if finder(data_dir, task) is not None]


# -- locating (and fetching) one task ------------------------------------------------------------
def locate(task: Task, data_dir: Path | None, cache: Path, fasta: str | None = None) -> TaskFiles:
    """The files of ``task``: from ``data_dir`` when given, else the cache, downloading what is missing."""
    if data_dir is not None and not data_dir.is_dir():
        raise CaduceusError(f"--data {data_dir}: no such folder")
    locator = {"nt-suite": _locate_nt, "gue": _locate_gue, "genomic-benchmarks": _locate_gb,
               "vep-eqtl": _locate_eqtl}[task.suite]
    files = locator(task, data_dir, cache, fasta)
    if "test" not in files.splits and files.layout != "eqtl-csv":
        raise CaduceusError(f"{task.suite}/{task.name}: no test split in {files.origin} "
                            f"(found: {', '.join(files.splits) or 'nothing'}); every task needs one")
    return files


def _missing(task: Task, data_dir: Path, layout: str) -> CaduceusError:
    return CaduceusError(f"--data {data_dir}: no task {task.name} there (expected {layout}); "
                         "drop --tasks to run the tasks the folder holds")


def _locate_nt(task: Task, data_dir: Path | None, cache: Path, fasta: str | None) -> TaskFiles:
    if data_dir is not None:
        folder = _nt_folder(data_dir, task)
        if folder is None:
            raise _missing(task, data_dir, f"{task.name}/test.fna[.gz]")
        return TaskFiles(task, "nt-fasta", _split_files(folder, (".fna", ".fna.gz", ".fa", ".fa.gz")), str(folder))
    splits = {split: download.hf_dataset_file(NT_REPO, f"{task.name}/{split}.fna") for split in ("train", "test")}
    revision = download.snapshot_revision(splits["test"])
    return TaskFiles(task, "nt-fasta", splits, f"hf://datasets/{NT_REPO}@{revision or 'main'}")


def _locate_gue(task: Task, data_dir: Path | None, cache: Path, fasta: str | None) -> TaskFiles:
    origin = "--data"
    if data_dir is None:
        data_dir = _gue_archive(cache)
        origin = f"GUE.zip from {GUE_URL}"
    folder = _gue_folder(data_dir, task)
    if folder is None:
        raise _missing(task, data_dir, f"{task.name}/ or GUE/{task.path}/ with train/dev/test.csv")
    return TaskFiles(task, "csv", _split_files(folder, (".csv", ".csv.gz")), f"{folder} ({origin})")


def _gue_archive(cache: Path) -> Path:
    """The unpacked GUE archive in the cache (downloaded and unpacked once)."""
    root = cache / "gue"
    unpacked = root / "unpacked"
    archive = root / "GUE.zip"
    recorded = root / "GUE.zip.sha256"
    if unpacked.is_dir():
        return unpacked
    checksum = f"sha256:{recorded.read_text().split()[0]}" if recorded.is_file() else None
    download.http_download(GUE_URL, archive, checksum=checksum)
    if checksum is None:  # nothing published to check against: record what we got, check it from now on
        digest = download.file_digest(archive)
        recorded.write_text(f"{digest}  GUE.zip\n")
        log.warning("GUE.zip has no published checksum; recorded its sha256 %s in %s", digest, recorded)
    return download.extract_archive(archive, unpacked)


def _locate_gb(task: Task, data_dir: Path | None, cache: Path, fasta: str | None) -> TaskFiles:
    if data_dir is not None:
        folder = _gb_folder(data_dir, task)
        if folder is None:
            raise _missing(task, data_dir, f"{task.name}/train|test/<class>/ or <class>.csv.gz")
        splits = {s: folder / s for s in ("train", "test") if (folder / s).is_dir()}
        coordinates = any(p.name.endswith(".csv.gz") or p.name.endswith(".csv")
                          for s in splits.values() for p in s.iterdir() if p.is_file())
        if coordinates and not fasta:
            raise CaduceusError(f"{folder}: holds Genomic Benchmarks coordinate files; give the genome with --fasta")
        return TaskFiles(task, "gb-coordinates" if coordinates else "gb-sequences", splits, str(folder))
    if fasta:
        return TaskFiles(task, "gb-coordinates", _gb_coordinates(task, cache), f"coordinates of {GB_COORDINATES} + {fasta}")
    unpacked = _gb_sequences(task, cache) / task.name
    splits = {s: unpacked / s for s in ("train", "test") if (unpacked / s).is_dir()}
    return TaskFiles(task, "gb-sequences", splits, f"{GB_RECORD}/files/{task.name}_v0.zip")


def _gb_coordinates(task: Task, cache: Path) -> dict[str, Path]:
    root = cache / "genomic-benchmarks" / "coordinates" / task.name
    for split in ("train", "test"):
        for cls in task.classes:
            key = f"{task.name}/{split}/{cls}"
            download.http_download(f"{GB_COORDINATES}/{key}.csv.gz", root / split / f"{cls}.csv.gz",
                                   checksum=f"sha256:{GB_COORDINATE_SHA256[key]}")
    return {split: root / split for split in ("train", "test")}


def _gb_sequences(task: Task, cache: Path) -> Path:
    root = cache / "genomic-benchmarks" / "sequences"
    unpacked = root / f"{task.name}_v0"
    if unpacked.is_dir():
        return unpacked
    name = f"{task.name}_v0.zip"
    checksum = download.zenodo_checksum(GB_RECORD_API, name)
    archive = download.http_download(f"{GB_RECORD}/files/{name}?download=1", root / name, checksum=checksum)
    return download.extract_archive(archive, unpacked)


def _locate_eqtl(task: Task, data_dir: Path | None, cache: Path, fasta: str | None) -> TaskFiles:
    if data_dir is not None:
        path = _eqtl_file(data_dir)
        if path is None:
            raise CaduceusError(f"--data {data_dir}: no All_Tissues.csv (or {EQTL_FILE}) there")
        return TaskFiles(task, "eqtl-csv", {"all": path}, str(path))
    path = download.hf_dataset_file(EQTL_REPO, EQTL_FILE)
    revision = download.snapshot_revision(path)
    return TaskFiles(task, "eqtl-csv", {"all": path}, f"hf://datasets/{EQTL_REPO}@{revision or 'main'}")
